"""Training-step throughput of albert-jax versus transformers' PyTorch AlbertForPreTraining, in one run.

Both do the same step on the same shapes (ALBERT-base by default, batch 8 x 128 on CPU): forward, MLM loss at
the masked positions plus the sentence-order loss, backward, optimizer update. albert-jax runs its jitted
`train_step` (reference LAMB, clipping); PyTorch runs AlbertForPreTraining with AdamW (its usual recipe; the
optimizer is a negligible share of the step at this size). Each side is warmed up, then the two take turns, one
timed step each; the median step time gives tokens/s and achieved GFLOP/s from the analytic FLOPs of `describe`.
Like the train job under the CPU recipes (scale/demo.gin), the benchmark first tunes glibc's allocator for
XLA:CPU (albert_jax/jobs/host_allocator.py; `--default_allocator` keeps glibc's defaults); it is process-wide,
so both sides run under the same allocator either way.

Every run also times each library's best plain square matmul on the same threads (the machine's GEMM ceiling)
and prints each step's achieved GFLOP/s as a share of it, and the speed-up over PyTorch that a step running
entirely at that ceiling would have: the bound any CPU speed-up claim lives under.

`--sides jax,jax_autodiff` times albert-jax's step under the CPU weight-gradient plan against autodiff's own
(albert_jax/gemm.py), the same way. `--sides jax,torch,jax_gemms,torch_gemms` adds each library's encoder GEMMs
alone (every dense product of the step's forward and backward, chained, nothing else), which splits each step
into its GEMMs and the rest, and bounds the speed-up that work outside the GEMMs could still buy.

  python bench/bench_train.py [--steps 5] [--batch 8] [--seq 128] [--threads 2] [--dtypes float32,bfloat16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np


def synthetic_batch(batch: int, seq: int, predictions: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    positions = np.sort(np.stack([rng.choice(np.arange(1, seq - 1), predictions, replace=False)
                                  for _ in range(batch)]), axis=1).astype(np.int32)
    return {
        "input_ids": rng.integers(5, vocab, (batch, seq)).astype(np.int32),
        "input_mask": np.ones((batch, seq), np.int32),
        "segment_ids": (np.arange(seq)[None] >= seq // 2).astype(np.int32).repeat(batch, 0),
        "masked_lm_positions": positions,
        "masked_lm_ids": rng.integers(5, vocab, (batch, predictions)).astype(np.int32),
        "masked_lm_weights": np.ones((batch, predictions), np.float32),
        "sentence_labels": rng.integers(0, 2, (batch,)).astype(np.int32),
    }


Step = Callable[[], None]  # runs one training step to completion


def jax_step(config, batch: dict[str, np.ndarray]) -> Step:
    """albert-jax's jitted train step, data-parallel over this process's devices (one unless `--cpu_devices`
    split the cores), as a closure over its (donated) state."""
    import jax

    from albert_jax import optim, partitioning
    from albert_jax import train_step as train_steps
    from albert_jax.model import init_params

    mesh = partitioning.make_mesh(partitioning.MeshConfig(data=-1))  # over jax.devices()
    rules = partitioning.DEFAULT_RULES
    boxed = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    schedule = optim.make_schedule(peak_learning_rate=1e-4, warmup_steps=10, num_train_steps=1000)
    tx = optim.make_optimizer(boxed, optimizer="lamb", learning_rate=schedule)
    _, shardings = train_steps.state_shardings(config, tx, mesh, rules)
    state = [train_steps.create_state(config, tx, mesh, rules, seed=0, shardings=shardings)]
    step = train_steps.jit_train_step(train_steps.make_train_step(config, tx, schedule), shardings, mesh)
    device_batch = jax.device_put(batch, partitioning.batch_sharding(mesh))

    def run() -> None:
        with jax.set_mesh(mesh):
            state[0], metrics = step(state[0], device_batch)
            jax.block_until_ready(metrics["loss"])

    return run


def torch_step(config, batch: dict[str, np.ndarray]) -> Step:
    """transformers' AlbertForPreTraining with AdamW and clipping, on the same shapes and batch."""
    import torch
    import transformers

    hf_config = transformers.AlbertConfig(
        vocab_size=config.vocab_size, embedding_size=config.embedding_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size, hidden_act="gelu_new", hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0, max_position_embeddings=512)
    torch.manual_seed(0)
    model = transformers.AlbertForPreTraining(hf_config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ids = torch.from_numpy(batch["input_ids"]).long()
    mask = torch.from_numpy(batch["input_mask"]).long()
    segments = torch.from_numpy(batch["segment_ids"]).long()
    positions = torch.from_numpy(batch["masked_lm_positions"]).long()
    targets = torch.from_numpy(batch["masked_lm_ids"]).long()
    labels = torch.from_numpy(batch["sentence_labels"]).long()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.dtype == "bfloat16")

    def run() -> None:
        with autocast:
            out = model(input_ids=ids, attention_mask=mask, token_type_ids=segments)
            logits = out.prediction_logits.gather(1, positions[..., None].expand(-1, -1, hf_config.vocab_size))
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, hf_config.vocab_size).float(),
                                                     targets.reshape(-1))
            loss = loss + torch.nn.functional.cross_entropy(out.sop_logits.float(), labels)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return run


def encoder_gemms(config, tokens: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every dense-layer GEMM of one step's encoder: forward, input gradient, weight gradient."""
    hidden, inner = config.hidden_size, config.intermediate_size
    shapes = []
    for fan_in, fan_out in ((hidden, 3 * hidden), (hidden, hidden), (hidden, inner), (inner, hidden)):
        shapes += [(tokens, fan_in, fan_out), (tokens, fan_out, fan_in), (fan_in, tokens, fan_out)]
    return shapes * config.num_hidden_layers


def jax_gemms(config, batch: dict[str, np.ndarray]) -> Step:
    """The encoder's GEMMs alone on XLA:CPU, as one jitted program; each waits for the one before it."""
    import jax
    import jax.numpy as jnp

    shapes = encoder_gemms(config, batch["input_ids"].size)
    rng = np.random.default_rng(0)
    operands = {shape: (jnp.asarray(rng.normal(size=shape[:2]), config.compute_dtype),
                        jnp.asarray(rng.normal(size=shape[1:]) * 1e-3, config.compute_dtype))
                for shape in set(shapes)}

    @jax.jit
    def chain(operands):
        link = jnp.zeros((), config.compute_dtype)
        for shape in shapes:  # the scalar link keeps XLA from running products side by side or merging them
            a, b = operands[shape]
            link = ((a + link * 1e-30) @ b)[0, 0]
        return link

    def run() -> None:
        jax.block_until_ready(chain(operands))

    return run


def torch_gemms(config, batch: dict[str, np.ndarray]) -> Step:
    """The same GEMMs with `torch.matmul`, one after another (eager PyTorch runs them in order anyway)."""
    import torch

    shapes = encoder_gemms(config, batch["input_ids"].size)
    dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
    generator = torch.Generator().manual_seed(0)
    operands = {shape: (torch.randn(shape[:2], generator=generator, dtype=dtype),
                        torch.randn(shape[1:], generator=generator, dtype=dtype) * 1e-3) for shape in set(shapes)}

    def run() -> None:
        for shape in shapes:
            a, b = operands[shape]
            torch.matmul(a, b)

    return run


CEILING_SIZE = 1024  # the plain n x n x n matmul whose best rate stands for the machine's GEMM ceiling


def gemm_ceiling(libraries: Sequence[str], dtype: str, repeats: int = 20) -> dict[str, float]:
    """The best GFLOP/s each library ("jax", "torch") reaches on one plain square matmul, over `repeats` runs.

    No training step can beat the rate its own library's best GEMM reaches on the same cores, so the larger of
    the two is the practical ceiling a step's achieved GFLOP/s is read against (on this project's 2-core AMD
    EPYC it is ~205 fp32 GFLOP/s, not the ~330 that two full-width AVX-512 FMA units would give: Zen 4 runs
    AVX-512 on 256-bit units, docs/PERF.md). Wall clock, so read it on an idle machine; bench_scan.py's
    `matmul_flops_per_cpu_second` is the load-tolerant estimate for shared machines (per CPU second, times
    the cores, which assumes the matmul keeps every core busy).
    """
    n = CEILING_SIZE
    flops = 2 * n ** 3
    rates = {}
    if "jax" in libraries:
        import jax
        import jax.numpy as jnp

        a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), dtype)
        product = jax.jit(lambda x, y: x @ y)
        jax.block_until_ready(product(a, a))
        best = min(_timed(lambda: jax.block_until_ready(product(a, a))) for _ in range(repeats))
        rates["jax"] = flops / best / 1e9
    if "torch" in libraries:
        import torch

        a = torch.randn((n, n), generator=torch.Generator().manual_seed(0), dtype=getattr(torch, dtype))
        torch.matmul(a, a)
        best = min(_timed(lambda: torch.matmul(a, a)) for _ in range(repeats))
        rates["torch"] = flops / best / 1e9
    return rates


def _timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(config: Any, batch: dict[str, np.ndarray], steps: int, sides: Sequence[str]) -> list[tuple]:
    """(side name, median wall s, median process-CPU s) per side, each timed on `config`'s compute dtype.

    The sides take turns, one step each, after two untimed steps of each (compile, first allocations): a load
    that comes and goes on a shared machine then slows both alike instead of whichever side ran during it.
    """
    label = "" if config.dtype == "float32" else f" {config.dtype}"
    makers = {"jax": ("albert-jax (jit, LAMB)", jax_step), "torch": ("transformers PyTorch (AdamW)", torch_step),
              "jax_autodiff": ("albert-jax, autodiff weight gradients",
                               lambda c, b: jax_step(c.replace(weight_gradient_gemm="autodiff"), b)),
              "jax_gemms": ("encoder GEMMs alone, XLA:CPU", jax_gemms),
              "torch_gemms": ("encoder GEMMs alone, PyTorch", torch_gemms)}
    runs = {side: makers[side][1](config, batch) for side in sides}
    times: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
    for index in range(steps + 2):
        for side in sides:
            start, cpu = time.perf_counter(), time.process_time()
            runs[side]()
            if index >= 2:
                times[side].append((time.perf_counter() - start, time.process_time() - cpu))
    return [(makers[side][0] + label, statistics.median(t[0] for t in times[side]),
             statistics.median(t[1] for t in times[side])) for side in sides]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gin_file", default="models/albert_base.gin")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--predictions", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--dtypes", default="float32",
                        help="comma-separated compute dtypes, one pair of rows each (float32, bfloat16); "
                             "bfloat16 runs PyTorch under CPU autocast")
    parser.add_argument("--sides", default="jax,torch",
                        help="which sides to run: jax, torch, jax_autodiff (albert-jax with autodiff's own "
                             "weight-gradient plan instead of the CPU one, albert_jax/gemm.py), jax_gemms and "
                             "torch_gemms (each library's encoder GEMMs alone)")
    parser.add_argument("--binding", action="append", default=[],
                        help="a gin binding applied after --gin_file, e.g. \"AlbertConfig.remat_policy='dots_saveable'\" "
                             "(scale/demo.gin's choice, the fastest on CPU); repeatable")
    parser.add_argument("--default_allocator", action="store_true",
                        help="keep glibc's allocator defaults instead of the tuning the CPU recipes apply "
                             "(albert_jax/jobs/host_allocator.py); either way both sides share the process")
    parser.add_argument("--cpu_devices", type=int, default=1,
                        help="split the cores into this many XLA:CPU devices, albert-jax's step data-parallel over "
                             "them, as a recipe's host_devices.count does (albert_jax/jobs/host_devices.py); "
                             "PyTorch keeps its --threads intra-op threads")
    args = parser.parse_args()
    from albert_jax.jobs import host_allocator, host_devices

    tuned = not args.default_allocator and host_allocator.tune_for_xla_cpu()  # before JAX or torch start threads
    split = host_devices.split_cpu_into_devices(args.cpu_devices)  # before JAX starts its CPU client
    sides = [side for side in args.sides.split(",") if side]
    known = ("jax", "torch", "jax_autodiff", "jax_gemms", "torch_gemms")
    if not sides or any(side not in known for side in sides):
        parser.error(f"--sides takes some of {', '.join(known)}, got {args.sides!r}")

    import jax
    import torch

    torch.set_num_threads(args.threads)
    from albert_jax import describe, gin_setup
    from albert_jax.config import AlbertConfig
    from albert_jax.jobs import configurables

    configurables.register_all()  # gin locks its registry when it parses: every configurable imported first
    gin_setup.parse([args.gin_file], args.binding)
    base = AlbertConfig()
    flops_per_token = describe.train_flops_per_token(base, args.seq, args.predictions)
    batch = synthetic_batch(args.batch, args.seq, args.predictions, base.vocab_size)
    tokens = args.batch * args.seq
    print(f"{args.gin_file} {' '.join(args.binding)} (remat {base.remat_policy}): batch {args.batch} x {args.seq}, {args.predictions} predictions, "
          f"{flops_per_token / 1e6:.1f} MFLOP/token, {args.steps} timed steps, {args.threads} threads; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; host allocator {'tuned' if tuned else 'glibc defaults'}; "
          f"{split or f'XLA:CPU devices: {jax.local_device_count()}'}; "
          f"load average before: {os.getloadavg()[0]:.2f}",
          flush=True)
    print(f"{'':40s} {'s/step':>8s} {'CPU s':>8s} {'tokens/s':>10s} {'GFLOP/s':>8s}")
    def step_gflops(seconds: float) -> float:
        return tokens * flops_per_token / seconds / 1e9

    for dtype in args.dtypes.split(","):
        rows = dict(zip(sides, measure(base.replace(dtype=dtype), batch, args.steps, sides)))
        for side, (name, wall, cpu) in rows.items():
            if side.endswith("_gemms"):  # not a training step: its rate is on the line below the table
                print(f"{name:40s} {wall:8.3f} {cpu:8.3f} {'-':>10s} {'-':>8s}")
                continue
            print(f"{name:40s} {wall:8.3f} {cpu:8.3f} {tokens / wall:10.1f} {step_gflops(wall):8.1f}")
        suffix = "" if dtype == "float32" else f" ({dtype})"
        if "jax" in rows and "torch" in rows:
            print(f"speed-up of albert-jax over PyTorch{suffix}: {rows['torch'][1] / rows['jax'][1]:.2f}x "
                  f"(in process-CPU seconds: {rows['torch'][2] / rows['jax'][2]:.2f}x)", flush=True)
        gemm_flops = sum(2 * m * k * n for m, k, n in encoder_gemms(base, tokens))
        for step_side, gemm_side, who in (("jax", "jax_gemms", "albert-jax"), ("torch", "torch_gemms", "PyTorch")):
            if gemm_side in rows:
                gemms = rows[gemm_side][1]
                line = f"{who}'s encoder GEMMs alone{suffix}: {gemms:.3f} s, {gemm_flops / gemms / 1e9:.1f} GFLOP/s"
                if step_side in rows:
                    rest = rows[step_side][1] - gemms
                    line += f"; the rest of its step: {rest:.3f} s ({rest / rows[step_side][1]:.0%})"
                print(line, flush=True)
        if "torch" in rows and "jax_gemms" in rows:
            print(f"speed-up over PyTorch if albert-jax's step were its GEMMs alone{suffix}: "
                  f"{rows['torch'][1] / rows['jax_gemms'][1]:.2f}x", flush=True)
        libraries = sorted({side.split("_")[0] for side in rows})
        ceiling = gemm_ceiling(libraries, dtype)
        best = max(ceiling.values())
        names = {"jax": "XLA:CPU", "torch": "PyTorch"}
        print(f"GEMM ceiling{suffix}, the best of 20 plain {CEILING_SIZE}^3 matmuls: "
              + ", ".join(f"{names[library]} {rate:.1f} GFLOP/s" for library, rate in ceiling.items()), flush=True)
        steps = [(side, who) for side, who in (("jax", "albert-jax"), ("torch", "PyTorch")) if side in rows]
        if steps:
            print(f"each step's share of that ceiling ({best:.1f}){suffix}: " + ", ".join(
                f"{who} {step_gflops(rows[side][1]) / best:.0%}" for side, who in steps),
                flush=True)
        if "torch" in rows:
            print(f"most speed-up over PyTorch a step at the GEMM ceiling could have{suffix}: "
                  f"{best / step_gflops(rows['torch'][1]):.2f}x", flush=True)
        if "jax" in rows and "jax_autodiff" in rows:
            print(f"speed-up of the CPU weight-gradient plan over autodiff's{suffix}: "
                  f"{rows['jax_autodiff'][1] / rows['jax'][1]:.2f}x", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
