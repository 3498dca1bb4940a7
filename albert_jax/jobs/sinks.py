"""Metric sinks (TensorBoard, JSONL, console) and throughput accounting (tokens/s, MFU, ETA).

Only process 0 writes files; every process may print. MFU uses the analytic FLOPs of `describe` over the
chip's dense bf16 peak (`hardware.CHIPS`); on CPU there is no meaningful peak, so achieved GFLOP/s is reported instead.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np

def peak_flops_per_device(device_kind: str | None = None) -> float | None:
    """Dense bf16 peak FLOP/s of one device of this kind from the chip table (`hardware.CHIPS`), or None when
    unknown (CPU included)."""
    from albert_jax import hardware

    chip = hardware.chip_for_device_kind(device_kind if device_kind is not None else jax.devices()[0].device_kind)
    return chip.peak_bf16_flops if chip else None


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Throughput:
    """Steps/s, tokens/s, FLOP/s, MFU and ETA over the interval since the last report."""

    def __init__(self, tokens_per_step: int, flops_per_token: float, total_steps: int, start_step: int) -> None:
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.total_steps = total_steps
        self.peak = peak_flops_per_device()
        self.num_devices = jax.device_count()
        self._last_time = time.perf_counter()
        self._last_step = start_step

    def mark(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        elapsed = max(now - self._last_time, 1e-9)
        steps = step - self._last_step
        self._last_time, self._last_step = now, step
        steps_per_s = steps / elapsed
        flops = steps_per_s * self.tokens_per_step * self.flops_per_token
        out = {"steps_per_s": steps_per_s, "tokens_per_s": steps_per_s * self.tokens_per_step,
               "gflops_per_s": flops / 1e9,
               "eta_s": (self.total_steps - step) / steps_per_s if steps_per_s > 0 else float("inf")}
        if self.peak:
            out["mfu"] = flops / (self.peak * self.num_devices)
        return out


def _summary_writer_class() -> type:
    """tensorboardX's SummaryWriter, imported without PyTorch.

    tensorboardX imports torch at module load when it is installed (the test extra installs it), only to accept
    torch tensors; we log Python floats. Importing it would cost every job seconds and a few hundred MB, and put
    torch into processes that hold TensorFlow (TensorFlow and triton crash together). tensorboardX guards that
    import with `except ImportError`, so torch is masked (a None entry in sys.modules makes `import torch` raise
    ImportError) for the duration of the import, and the entry restored after.
    """
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter
        return SummaryWriter
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class MetricsWriter:
    """TensorBoard event files under WORKDIR/<subdir> and a JSONL file; no-ops on processes other than 0."""

    def __init__(self, workdir: str, subdir: str = "tensorboard", jsonl_name: str = "metrics.jsonl") -> None:
        self.enabled = jax.process_index() == 0
        self._tb = None
        self._jsonl = None
        if self.enabled:
            SummaryWriter = _summary_writer_class()
            os.makedirs(workdir, exist_ok=True)
            self._tb = SummaryWriter(os.path.join(workdir, subdir))
            self._jsonl = open(os.path.join(workdir, jsonl_name), "a", buffering=1)

    def write(self, step: int, scalars: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: float(np.asarray(v)) for k, v in scalars.items()}
        for name, value in clean.items():
            self._tb.add_scalar(name, value, step)
        self._jsonl.write(json.dumps({"step": step, **clean}) + "\n")

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()


def console_line(step: int, total: int, metrics: Mapping[str, float]) -> str:
    """One progress line: step, loss, accuracies, lr, grad norm, speed, MFU or GFLOP/s, ETA."""
    parts = [f"step {step}/{total}", f"loss {metrics['loss']:.4f}",
             f"mlm_acc {metrics['masked_lm_accuracy']:.3f}", f"sop_acc {metrics['sentence_order_accuracy']:.3f}",
             f"lr {metrics['learning_rate']:.2e}", f"gnorm {metrics['grad_norm']:.3f}",
             f"{metrics['steps_per_s']:.2f} steps/s", f"{metrics['tokens_per_s']:,.0f} tok/s"]
    if "mfu" in metrics:
        parts.append(f"MFU {100 * metrics['mfu']:.1f}%")
    else:
        parts.append(f"{metrics['gflops_per_s']:.1f} GFLOP/s")
    if metrics.get("skipped_total", 0):
        parts.append(f"skipped {int(metrics['skipped_total'])}")
    parts.append(f"ETA {format_duration(metrics['eta_s'])}")
    return " | ".join(parts)
