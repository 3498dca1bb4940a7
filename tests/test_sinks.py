"""Throughput accounting: the peak table behind MFU, and the console line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import tb_events
from albert_jax.jobs import sinks


@pytest.mark.parametrize("kind, peak", [
    ("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("TPU v5p", 459e12), ("TPU v6 lite", 918e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12),
])
def test_peak_table_matches_vendor_bf16_dense_peaks(kind, peak):
    assert sinks.peak_flops_per_device(kind) == peak


def test_cpu_has_no_peak_so_gflops_are_reported():
    assert sinks.peak_flops_per_device("cpu") is None
    line = sinks.console_line(10, 100, {"loss": 1.0, "masked_lm_accuracy": 0.5, "sentence_order_accuracy": 0.6,
                                          "learning_rate": 1e-3, "grad_norm": 0.5, "steps_per_s": 2.0,
                                          "tokens_per_s": 1000.0, "gflops_per_s": 12.5, "eta_s": 45.0})
    assert "12.5 GFLOP/s" in line and "MFU" not in line and "ETA 0m45s" in line


def test_mfu_is_model_flops_over_peak(monkeypatch):
    monkeypatch.setattr(sinks, "peak_flops_per_device", lambda kind=None: 100e12)  # as on a 100-TFLOP/s chip
    throughput = sinks.Throughput(tokens_per_step=1000, flops_per_token=1e9, total_steps=10, start_step=0)
    throughput._last_time -= 2.0  # 4 steps in (just over) 2 seconds
    out = throughput.mark(4)
    assert out["steps_per_s"] == pytest.approx(2.0, rel=1e-2)
    assert out["mfu"] == pytest.approx(2.0 * 1000 * 1e9 / (100e12 * throughput.num_devices), rel=1e-2)
    assert out["eta_s"] == pytest.approx(3.0, rel=1e-2)  # 6 steps left at 2 steps/s


def test_metrics_writer_leaves_torch_unimported_and_writes_readable_events(tmp_path):
    """The TensorBoard writer must not pull PyTorch into a job's process (tensorboardX imports it when installed):
    checked in a fresh interpreter where torch is installed, and the event file read back with TensorFlow's proto."""
    code = ("import sys; from albert_jax.jobs import sinks; w = sinks.MetricsWriter(sys.argv[1]); "
            "w.write(7, {'loss': 2.5}); w.close(); import importlib.util; "
            "assert importlib.util.find_spec('torch') is not None, 'torch is not installed: nothing is tested'; "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"
    assert (tmp_path / "metrics.jsonl").read_text().strip() == '{"step": 7, "loss": 2.5}'
    assert tb_events.scalars(tmp_path / "tensorboard") == {(7, "loss"): 2.5}
