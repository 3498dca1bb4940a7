"""bench/bench_cpu_devices.py: variants (device counts, bindings) that take turns across worker processes, through the script."""

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


def test_variants_take_turns_and_print_their_ratio():
    # A device count and an unrolled scan on two devices: each worker applies its own process-start switch.
    done = _script("--variant", "host_devices.count=1", "--variant", "host_devices.count=2 AlbertConfig.scan_unroll=2",
                   "--rounds", "3", "--batch", "4", "--seq", "16", "--predictions", "2",
                   "--binding", "AlbertConfig.num_hidden_layers=2")
    assert done.returncode == 0, done.stderr[-2000:]
    first = re.search(r"^host_devices.count=1: ([\d.]+) ms/step .* 1\.000x the time of host_devices.count=1$",
                      done.stdout, re.M)
    second = re.search(r"^host_devices.count=2 AlbertConfig.scan_unroll=2: ([\d.]+) ms/step .* (\d+\.\d{3})x the time "
                       r"of host_devices.count=1$", done.stdout, re.M)
    assert first and second, done.stdout
    assert abs(float(second.group(2)) - float(second.group(1)) / float(first.group(1))) < 0.01, done.stdout


def test_a_count_that_does_not_divide_the_batch_is_refused():
    done = _script("--counts", "1,3", "--batch", "4")
    assert done.returncode == 2 and "must be positive and divide --batch 4" in done.stderr, done.stderr[-1000:]
