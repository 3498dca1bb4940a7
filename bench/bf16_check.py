"""Does a bfloat16-compute run track the float32 run? Two short demo-scale runs, same seed and data, compared.

Runs `launch.py --gin_file=demo.gin` twice (float32 compute, then numerics/bf16.gin: bfloat16 compute with float32
parameters, LAMB moments and LayerNorm statistics) for --steps steps, reads both metrics.jsonl files and prints
the per-step loss gap. Passes when the largest gap after warm-up stays under --tolerance nats (relative to the
fp32 loss). CPU: bfloat16 matmuls are emulated, so the bf16 run is slower here; that says nothing about TPUs.

    python bench/bf16_check.py --steps=120 --workdir=/tmp/bf16_check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(workdir: str, steps: int, extra: list[str]) -> list[dict]:
    command = [sys.executable, os.path.join(ROOT, "launch.py"), "--gin_file=demo.gin", *extra,
               f"--workdir={workdir}", f"--gin.NUM_TRAIN_STEPS={steps}", "--gin.train.log_every=10",
               "--gin.train.eval_every=0", "--gin.train.final_report=False", f"--gin.make_schedule.warmup_steps={steps // 4}"]
    subprocess.run(command, check=True, cwd=ROOT)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--workdir", default="/tmp/albert_bf16_check")
    parser.add_argument("--tolerance", type=float, default=0.05, help="max relative loss gap after warm-up")
    args = parser.parse_args()
    fp32 = run(os.path.join(args.workdir, "fp32"), args.steps, [])
    bf16 = run(os.path.join(args.workdir, "bf16"), args.steps, ["--gin_file=numerics/bf16.gin"])
    rows = []
    for a, b in zip(fp32, bf16):
        rows.append({"step": a["step"], "loss_fp32": a["loss"], "loss_bf16": b["loss"],
                     "relative_gap": abs(b["loss"] - a["loss"]) / a["loss"]})
    late = [r for r in rows if r["step"] > args.steps // 4] or rows
    worst = max(r["relative_gap"] for r in late)
    result = {"steps": args.steps, "tolerance": args.tolerance, "max_relative_gap_after_warmup": worst,
              "final_loss_fp32": rows[-1]["loss_fp32"], "final_loss_bf16": rows[-1]["loss_bf16"],
              "passes": worst <= args.tolerance, "curve": rows}
    print(json.dumps(result, indent=2))
    return 0 if result["passes"] else 1


if __name__ == "__main__":
    sys.exit(main())
