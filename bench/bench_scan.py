"""Compile time of the scanned ALBERT encoder versus an unrolled one, and the CPU step time of ALBERT-base.

What is measured
----------------
1. Compile time of one training step's forward + backward: `jax.jit(jax.value_and_grad(loss))` where `loss` is
   `pretraining_loss` over `AlbertForPreTraining.apply`, lowered (trace + StableHLO) and compiled (XLA) for
   L = 12, 24, 48 layers, once with the library's `nn.scan` encoder and once with an unrolled encoder. Lowering
   uses shape-only parameters, so nothing big is allocated. Wall and process-CPU seconds are reported; CPU
   seconds are the steadier number on a shared machine.
2. Steady-state time of the same forward + backward for the ALBERT-base preset (experiments/models/albert_base.gin)
   at batch 8 x 128 with 20 masked positions per sequence: warmup steps, then the median of timed steps, with
   model FLOPs per step (reference section 6 formula), against the reference's 2-core fp32 peak (157 GFLOP/s)
   and against a peak calibrated on the machine itself (a large matmul's FLOPs per CPU second, times the cores).
   Process-CPU seconds per step are printed too: when other jobs share the cores, wall time overstates the cost.

How the unrolled variant is built, and why this way
---------------------------------------------------
The unrolled encoder is `UnrolledEncoder` below: the library's own `SharedLayer` module instance applied L times
in a Python loop, with the layer index as a constant. Flax shares one module instance's parameters across calls,
so the parameter tree is exactly the scanned model's (checked), the per-layer copy pick is the same code, and the
resulting program is what a straightforward non-scan implementation traces: L copies of the layer. It is swapped
into the stock model with `unittest.mock.patch.object(albert_jax.model, "Encoder", ...)` while tracing, so the
library is unchanged and everything else (embeddings, heads, loss) is the real code.

`nn.scan(..., unroll=L)` was considered: on jax 0.10.2 it also yields a loop-free program (no `stablehlo.while`;
the body is emitted once as a private function called L times, which XLA inlines), but using it would mean
changing the library's `Encoder` (its `nn.scan` arguments are fixed) and it would not measure the Python-side
cost of tracing L layers, which is part of what scan saves. The benchmark asserts that the scanned program has
a `while` loop and the unrolled one has none, and, for the smallest L, that both give the same loss.

Run: `.venv/bin/python bench/bench_scan.py` (add `--quick` for L = 12, 24 at width 256 and a
3-step timing).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import unittest.mock
from typing import Any, Callable

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

import albert_jax.model as model_lib
from albert_jax.config import AlbertConfig
from albert_jax.losses import pretraining_loss
from albert_jax.model import AlbertForPreTraining, SharedLayer, param_shapes

REFERENCE_PEAK_FLOPS = 157e9  # reference section 6: "fp32 peak of these 2 cores" (AVX2 FMA at 2.45 GHz)
ALBERT_BASE_GIN = os.path.join(os.path.dirname(__file__), "..", "experiments", "models", "albert_base.gin")


class UnrolledEncoder(model_lib.Encoder):
    """The library's Encoder with the scan replaced by a Python loop over one shared `SharedLayer` instance."""

    @nn.compact
    def __call__(self, embedded: jax.Array, attention_mask: jax.Array, deterministic: bool = True) -> jax.Array:
        cfg = self.config
        hidden = embedded
        if cfg.has_embedding_projection:
            hidden = model_lib.dense(cfg.hidden_size, ("embed", "hidden"), cfg, "embedding_projection")(hidden)
        layer_cls: Any = SharedLayer
        if cfg.remat_policy != "none":
            layer_cls = nn.remat(SharedLayer, policy=model_lib.REMAT_POLICIES[cfg.remat_policy], prevent_cse=False)
        layer = layer_cls(cfg, deterministic, name="shared_layer")
        for index in range(cfg.num_hidden_layers):
            hidden, _ = layer(hidden, jnp.asarray(index, jnp.int32), attention_mask)
        return hidden


def example_batch(config: AlbertConfig, batch_size: int, seq_length: int, predictions: int) -> dict[str, Any]:
    """A random pretraining batch (all tokens real) with the loader's feature names."""
    rng = np.random.default_rng(0)
    return {
        "input_ids": rng.integers(5, config.vocab_size, (batch_size, seq_length)).astype(np.int32),
        "input_mask": np.ones((batch_size, seq_length), np.int32),
        "segment_ids": (np.arange(seq_length)[None] >= seq_length // 2).repeat(batch_size, 0).astype(np.int32),
        "masked_lm_positions": np.sort(rng.choice(np.arange(1, seq_length), (batch_size, predictions)), -1)
        .astype(np.int32),
        "masked_lm_ids": rng.integers(5, config.vocab_size, (batch_size, predictions)).astype(np.int32),
        "masked_lm_weights": np.ones((batch_size, predictions), np.float32),
        "sentence_labels": rng.integers(0, 2, (batch_size,)).astype(np.int32),
    }


def train_step_grad(config: AlbertConfig) -> Callable[[Any, dict[str, Any]], Any]:
    """value_and_grad of the pretraining loss w.r.t. the parameters: the forward + backward of a train step."""
    model = AlbertForPreTraining(config)

    def loss(params: Any, batch: dict[str, Any]) -> jax.Array:
        mlm, sentence = model.apply({"params": params}, batch["input_ids"], batch["input_mask"],
                                    batch["segment_ids"], batch["masked_lm_positions"], True)
        return pretraining_loss(mlm, sentence, batch)[0]

    return jax.value_and_grad(loss)


def random_params(shapes: Any, seed: int = 0) -> Any:
    """Small random parameters of the given shapes (std 0.02, LayerNorm scales 1), drawn with NumPy."""
    rng = np.random.default_rng(seed)

    def draw(path: tuple[Any, ...], leaf: Any) -> jax.Array:
        if getattr(path[-1], "key", None) == "scale":
            return jnp.ones(leaf.shape, leaf.dtype)
        return jnp.asarray(0.02 * rng.standard_normal(leaf.shape, np.float32), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def timed_compile(config: AlbertConfig, batch: dict[str, Any], unrolled: bool) -> dict[str, Any]:
    """Lower and compile the train-step gradient; returns seconds, the executable and whether HLO has a loop."""
    shapes = param_shapes(config)
    patch = (unittest.mock.patch.object(model_lib, "Encoder", UnrolledEncoder) if unrolled
             else contextlib.nullcontext())
    with patch:
        if unrolled:  # same parameter tree, so the same parameters feed both programs
            assert (jax.tree_util.tree_map(lambda leaf: leaf.shape, param_shapes(config))
                    == jax.tree_util.tree_map(lambda leaf: leaf.shape, shapes))
        wall0, cpu0 = time.perf_counter(), time.process_time()
        lowered = jax.jit(train_step_grad(config)).lower(shapes, batch)
        wall1, _cpu1 = time.perf_counter(), time.process_time()
        compiled = lowered.compile()
        wall2, cpu2 = time.perf_counter(), time.process_time()
    return {
        "lower_s": wall1 - wall0, "compile_s": wall2 - wall1, "total_s": wall2 - wall0, "cpu_s": cpu2 - cpu0,
        "compiled": compiled, "has_while": " while(" in compiled.as_text(),
        "hlo_lines": compiled.as_text().count("\n"),
    }


def compile_table(hidden: int, layers: list[int], batch_size: int, seq_length: int) -> None:
    """Scanned vs unrolled compile times for each depth, printed as one markdown table."""
    heads = max(hidden // 64, 1)
    base = AlbertConfig(hidden_size=hidden, num_attention_heads=heads, intermediate_size=4 * hidden)
    batch = example_batch(base, batch_size, seq_length, predictions=20)
    print(f"\n## Compile: value_and_grad(pretraining_loss) of AlbertForPreTraining, H={hidden}, heads={heads}, "
          f"FFN={4 * hidden}, E=128, V=30000, sharing=all, batch {batch_size}x{seq_length}, 20 predictions\n")
    print("| L | scan lower s | scan compile s | scan total s (cpu s) | unrolled lower s | unrolled compile s "
          "| unrolled total s (cpu s) | unrolled/scan total | unrolled/scan cpu | HLO lines scan/unrolled |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for unrolled in (False, True):  # discarded: pay one-time costs (jax/XLA caches, heads, loss) before timing
        timed_compile(base.replace(num_hidden_layers=1), batch, unrolled)
    for index, depth in enumerate(layers):
        config = base.replace(num_hidden_layers=depth)
        scan = timed_compile(config, batch, unrolled=False)
        loop = timed_compile(config, batch, unrolled=True)
        assert scan["has_while"] and not loop["has_while"], "expected a loop only in the scanned program"
        if index == 0:
            params = random_params(param_shapes(config))
            scan_loss = float(scan["compiled"](params, batch)[0])
            loop_loss = float(loop["compiled"](params, batch)[0])
            assert abs(scan_loss - loop_loss) <= 1e-4 * abs(scan_loss), (scan_loss, loop_loss)
        print(f"| {depth} | {scan['lower_s']:.2f} | {scan['compile_s']:.2f} | {scan['total_s']:.2f} "
              f"({scan['cpu_s']:.2f}) | {loop['lower_s']:.2f} | {loop['compile_s']:.2f} | {loop['total_s']:.2f} "
              f"({loop['cpu_s']:.2f}) | {loop['total_s'] / scan['total_s']:.1f}x | "
              f"{loop['cpu_s'] / scan['cpu_s']:.1f}x | {scan['hlo_lines']}/{loop['hlo_lines']} |", flush=True)


def model_flops_per_step(config: AlbertConfig, batch_size: int, seq_length: int, predictions: int) -> float:
    """Training FLOPs (forward + backward = 3 x forward) of one step, reference section 6 plus the heads.

    Encoder: 6 L (4 H^2 + 2 H FFN) per token, attention scores/context 12 L S H per token, the E->H projection
    6 E H per token; MLM head 6 (H E + E V) per predicted position; pooler and sentence head are negligible.
    """
    c = config
    tokens = batch_size * seq_length
    per_token = (6 * c.num_hidden_layers * (4 * c.hidden_size ** 2 + 2 * c.hidden_size * c.intermediate_size)
                 + 12 * c.num_hidden_layers * seq_length * c.hidden_size
                 + (6 * c.embedding_size * c.hidden_size if c.has_embedding_projection else 0))
    mlm = 6 * (c.hidden_size * c.embedding_size + c.embedding_size * c.vocab_size) * batch_size * predictions
    return float(per_token * tokens + mlm)


def matmul_flops_per_cpu_second(size: int = 2048, repeats: int = 8) -> float:
    """Calibration: fp32 FLOPs of a large jitted matmul per process-CPU second (best of `repeats`).

    Times the number of cores this approximates the attainable peak of the machine, independent of other jobs'
    load; the reference's 157 GFLOP/s assumes AVX2, and machines with AVX-512 reach about twice that.
    """
    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size), np.float32))
    matmul = jax.jit(lambda x: x @ x)
    jax.block_until_ready(matmul(a))
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        jax.block_until_ready(matmul(a))
        best = min(best, time.process_time() - start)
    return 2 * size ** 3 / best


def step_time(batch_size: int, seq_length: int, predictions: int, warmup: int, steps: int) -> None:
    """Steady-state forward + backward time of the ALBERT-base preset on CPU."""
    gin.clear_config()
    gin.parse_config_file(ALBERT_BASE_GIN)
    config = AlbertConfig()
    gin.clear_config()
    batch = example_batch(config, batch_size, seq_length, predictions)
    params = random_params(param_shapes(config))
    step = jax.jit(train_step_grad(config))
    wall0 = time.perf_counter()
    compiled = step.lower(params, batch).compile()
    compile_s = time.perf_counter() - wall0
    for _ in range(warmup):
        jax.block_until_ready(compiled(params, batch))
    times, cpu_times = [], []
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(params, batch))
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    median = statistics.median(times)
    cpu_median = statistics.median(cpu_times)
    cores = os.cpu_count() or 1
    calibrated_peak = matmul_flops_per_cpu_second() * cores
    flops = model_flops_per_step(config, batch_size, seq_length, predictions)
    tokens = batch_size * seq_length
    print(f"\n## Step: ALBERT-base (albert_base.gin) forward+backward, batch {batch_size}x{seq_length}, "
          f"{predictions} predictions/seq, fp32, {jax.device_count()} {jax.default_backend()} device\n")
    print("| compile s | warmup | steps | median s | min s | max s | median cpu s | tokens/s (median) "
          "| model GFLOP/step | GFLOP/s (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {compile_s:.1f} | {warmup} | {steps} | {median:.2f} | {min(times):.2f} | {max(times):.2f} "
          f"| {cpu_median:.2f} | {tokens / median:.0f} | {flops / 1e9:.0f} | {flops / median / 1e9:.0f} |")
    dedicated = cpu_median / cores
    print(f"\nmedian cpu s / {cores} cores = {dedicated:.2f} s: the wall time of this step with the cores to itself "
          f"(if it keeps all busy) -> {tokens / dedicated:.0f} tokens/s, {flops / dedicated / 1e9:.0f} GFLOP/s")
    print(f"peak: reference {REFERENCE_PEAK_FLOPS / 1e9:.0f} GFLOP/s; calibrated here (2048^2 matmul FLOPs per "
          f"cpu-second x {cores} cores) {calibrated_peak / 1e9:.0f} GFLOP/s")
    print(f"utilization at the median wall time: {flops / median / REFERENCE_PEAK_FLOPS:.0%} of the reference peak, "
          f"{flops / median / calibrated_peak:.0%} of the calibrated peak; with dedicated cores: "
          f"{flops / dedicated / REFERENCE_PEAK_FLOPS:.0%} / {flops / dedicated / calibrated_peak:.0%}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="L=12,24 at H=256 and a 1+3 step timing")
    parser.add_argument("--hidden", type=int, default=None, help="width of the compile benchmark (default 768)")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="depths (default 12 24 48)")
    parser.add_argument("--compile-batch", type=int, nargs=2, default=(2, 128), metavar=("B", "S"))
    parser.add_argument("--step-batch", type=int, nargs=2, default=(8, 128), metavar=("B", "S"))
    parser.add_argument("--predictions", type=int, default=20, help="masked positions per sequence")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--skip-step", action="store_true", help="only the compile table")
    args = parser.parse_args()
    hidden = args.hidden or (256 if args.quick else 768)
    layers = args.layers or ([12, 24] if args.quick else [12, 24, 48])
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    steps = args.steps if args.steps is not None else (3 if args.quick else 5)

    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs, "
          f"load average at start {os.getloadavg()[0]:.1f}")
    compile_table(hidden, layers, *args.compile_batch)
    if not args.skip_step:
        step_time(*args.step_batch, args.predictions, warmup, steps)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
