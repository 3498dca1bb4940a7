"""bench/gpu_check.py's CPU path (tiny shapes), run as a subprocess: this process never imports torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_run_measures_both_frameworks_and_the_ratio():
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one device per child is enough
    done = subprocess.run([sys.executable, os.path.join(REPO, "bench", "gpu_check.py"), "--tiny",
                           "--models=albert_base", "--child_timeout=200"],
                          capture_output=True, text=True, env=env, timeout=420, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    ours, theirs, ratio = rows
    assert ours["framework"] == "jax" and theirs["framework"] == "torch"
    for row in (ours, theirs):
        assert row["batch"] == 4 and row["seq"] == 32 and row["step_seconds"] > 0
        assert row["tokens_per_second"] == row["batch"] * row["seq"] / row["step_seconds"]
        assert 0 < row["mfu"] < 1 and row["chip"] == "h200"
        assert 3.0 < row["loss"] < 8.0  # ln(128) = 4.85 MLM + ln(2) sentence loss, near initialization
    assert ours["attention"] == "xla" and theirs["attention"] == "sdpa"  # no cuDNN on CPU
    assert ratio["jax_over_torch_tokens_per_second"] == ours["tokens_per_second"] / theirs["tokens_per_second"]
