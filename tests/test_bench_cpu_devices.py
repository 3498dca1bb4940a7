"""bench/bench_cpu_devices.py: splits that take turns across worker processes, through the script."""

from __future__ import annotations

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    return subprocess.run([sys.executable, "bench/bench_cpu_devices.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_two_splits_take_turns_and_print_their_ratio():
    done = _script("--counts", "1,2", "--rounds", "3", "--batch", "4", "--seq", "16", "--predictions", "2",
                   "--binding", "AlbertConfig.num_hidden_layers=2")
    assert done.returncode == 0, done.stderr[-2000:]
    one = re.search(r"^1 XLA:CPU device: ([\d.]+) ms/step .* 1\.000x the time of 1$", done.stdout, re.M)
    two = re.search(r"^2 XLA:CPU devices: ([\d.]+) ms/step .* (\d+\.\d{3})x the time of 1$", done.stdout, re.M)
    assert one and two, done.stdout
    assert abs(float(two.group(2)) - float(two.group(1)) / float(one.group(1))) < 0.01, done.stdout


def test_a_count_that_does_not_divide_the_batch_is_refused():
    done = _script("--counts", "1,3", "--batch", "4")
    assert done.returncode == 2 and "must be positive and divide --batch 4" in done.stderr, done.stderr[-1000:]
