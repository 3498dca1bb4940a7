"""The plan table of docs/PERF.md: compile the paper recipe for TPU slices, then tabulate the reports.

`--compile` runs `albert-jax compile --json` for every model x slice of the grid below (mesh data 1 x fsdp = all
chips x tensor 1, remat `dots_with_no_batch_dims_saveable`), one process at a time, starting from the row's
microbatch count, halving it while the plan fits and doubling it while it does not (the compile job's exit code 3), so the
fewest microbatches that fit are found; each report goes to
`OUT/MODEL_TOPOLOGY_mbN.json` and an existing report is not compiled again. Without `--compile` it prints the
Markdown table from the reports in OUT: per model and slice, the fewest microbatches that fit, with the counts
that did not. Every figure is a compile-time estimate (the roofline of `albert-jax compile`), not a measurement.

    python bench/plan_table.py --compile --out=docs/plans
    python bench/plan_table.py --out=docs/plans
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from albert_jax import hardware
from albert_jax.jobs.compile import EXIT_OK, EXIT_OOM

MODELS = ("albert_base", "albert_large", "albert_xlarge", "albert_xxlarge", "bert_large")
SLICES = ("v4-64", "v5e-64", "v5p-64", "v6e-64")  # chips from hardware.parse_slice (v4/v5p names count cores)
# First microbatch count tried per model and slice: the activations scale with sequences per chip (4096 / chips)
# and with width; 16-GiB v5e and 32-GiB v4/v6e chips need more microbatches than 95-GiB v5p ones.
START_MICROBATCHES = {
    "v4-64": {"albert_base": 1, "albert_large": 2, "albert_xlarge": 4, "albert_xxlarge": 8, "bert_large": 2},
    "v5e-64": {"albert_base": 1, "albert_large": 2, "albert_xlarge": 4, "albert_xxlarge": 8, "bert_large": 2},
    "v5p-64": {"albert_base": 1, "albert_large": 1, "albert_xlarge": 2, "albert_xxlarge": 2, "bert_large": 1},
    "v6e-64": {"albert_base": 1, "albert_large": 1, "albert_xlarge": 2, "albert_xxlarge": 4, "bert_large": 1},
}
REMAT = "dots_with_no_batch_dims_saveable"
_NAME = re.compile(r"(?P<model>.+)_(?P<topology>v[0-9a-z]+-\d+)_mb(?P<mb>\d+)\.json$")
COLUMNS = ("model", "slice (chips)", "mesh d x f x t", "remat", "microbatches", "fits", "HBM peak / capacity GiB",
           "step s", "tokens/s", "MFU", "125k steps", "bound", "compile")


def compile_row(model: str, topology: str, out: Path, max_microbatches: int = 32) -> None:
    """Compile one model on one slice and find the fewest microbatches that fit: from the row's starting count,
    halve while the plan fits, double while it does not."""
    fits = {}
    microbatches = START_MICROBATCHES[topology][model]
    while 1 <= microbatches <= max_microbatches and microbatches not in fits:
        fits[microbatches] = _compiled_fits(model, topology, microbatches, out)
        if fits[microbatches] and (microbatches == 1 or fits.get(microbatches // 2) is False):
            return
        if not fits[microbatches] and fits.get(microbatches * 2):
            return
        microbatches = microbatches // 2 if fits[microbatches] else microbatches * 2


def _compiled_fits(model: str, topology: str, microbatches: int, out: Path) -> bool:
    """Whether the plan fits, from its report in `out` or from a new compile that writes the report."""
    path = out / f"{model}_{topology}_mb{microbatches}.json"
    if path.exists() and path.read_text().strip():
        return bool(json.loads(path.read_text()).get("fits"))
    command = [sys.executable, "-m", "albert_jax", "compile", f"--gin_file=paper/{model}.gin",
               f"--topology={topology}", "--gin.MeshConfig.data=1",
               f"--gin.MeshConfig.fsdp={hardware.parse_slice(topology).num_chips}",
               f"--gin.AlbertConfig.remat_policy='{REMAT}'", f"--gin.train.num_microbatches={microbatches}", "--json"]
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode not in (EXIT_OK, EXIT_OOM):
        sys.exit(f"compile of {model} on {topology} with {microbatches} microbatches failed "
                 f"(exit {done.returncode}):\n{done.stderr[-3000:]}")
    path.write_text(done.stdout)
    fits = done.returncode == EXIT_OK
    print(f"{model} {topology} microbatches {microbatches}: {'fits' if fits else 'does not fit'} "
          f"({time.time() - start:.0f} s)", flush=True)
    return fits


def load(out: Path) -> dict[tuple[str, str], list[dict]]:
    """(model, topology) -> its reports, fewest microbatches first."""
    plans: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(out.glob("*.json")):
        match = _NAME.search(path.name)
        text = path.read_text(encoding="utf-8").strip()
        if match and text:
            report = json.loads(text)
            report.setdefault("num_microbatches", int(match["mb"]))
            plans.setdefault((match["model"], match["topology"]), []).append(report)
    for reports in plans.values():
        reports.sort(key=lambda r: r["num_microbatches"])
    return plans


def row(model: str, reports: list[dict]) -> str:
    """One Markdown row: the fewest microbatches that fit (or the most tried, if none fits)."""
    fitting = [r for r in reports if r.get("fits")]
    r = fitting[0] if fitting else reports[-1]
    failed = [str(x["num_microbatches"]) for x in reports if not x.get("fits")]
    mesh = r["mesh"]
    microbatches = str(r["num_microbatches"]) + (f" ({', '.join(failed)}: no)" if failed and fitting else "")
    cells = [model, f"{r['topology']} ({r['num_chips']})", f"{mesh['data']}x{mesh['fsdp']}x{mesh['tensor']}",
             r["remat_policy"], microbatches, "yes" if r.get("fits") else "no",
             f"{r['hbm_peak_bytes'] / 2**30:.1f} / {r['hbm_capacity_bytes'] / 2**30:.0f}"]
    if r.get("fits"):
        hours = r["wall_clock_seconds_for_steps"]["125000"] / 3600
        cells += [f"{r['predicted_step_seconds']:.3f}", f"{r['predicted_tokens_per_second']:,.0f}",
                  f"{r['predicted_mfu']:.1%}", f"{hours:.0f} h", r["bound"]]
    else:
        cells += [""] * 5
    cells.append(f"{r['compile_seconds']:.0f} s" if "compile_seconds" in r else "")
    return "| " + " | ".join(cells) + " |"


def table(plans: dict[tuple[str, str], list[dict]]) -> str:
    order = {m: i for i, m in enumerate(MODELS)}
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for (model, topology), reports in sorted(plans.items(), key=lambda kv: (kv[0][1], order.get(kv[0][0], 99))):
        lines.append(row(model, reports))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/plans", help="directory of the JSON reports")
    parser.add_argument("--compile", action="store_true", help="compile the grid's missing reports first")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated paper/ configs")
    parser.add_argument("--slices", default=",".join(SLICES), help="comma-separated topologies")
    args = parser.parse_args()
    out = Path(args.out)
    if args.compile:
        out.mkdir(parents=True, exist_ok=True)
        for topology in args.slices.split(","):
            for model in args.models.split(","):
                compile_row(model, topology, out)
    print(table(load(out)))


if __name__ == "__main__":
    main()
