"""One-GPU check: albert-jax versus transformers' PyTorch ALBERT, bf16, length 512, largest batch that fits.

For albert base / large / xxlarge (experiments/models/*.gin), the JAX side runs the trainer's own step
(`train_step.make_train_step`, LAMB, bfloat16 compute with float32 parameters) on one device at the largest
batch that fits: a probe compile at a small batch gives the bytes per row from `memory_analysis()`, the batch is
sized to 90% of the device's memory and halved on an out-of-memory error. Attention goes through
`jax.nn.dot_product_attention` with `implementation='cudnn'` (cuDNN's fused attention) where it compiles, else
XLA's; the compiled HLO says which ran. The PyTorch side is `AlbertForPreTraining` (SDPA attention, bf16
autocast, AdamW fused where torch offers it) on the same shapes. Each measurement runs in its own child process
(JAX and torch never share a GPU's memory, and this parent imports neither). Prints one JSON line per
measurement: step time, tokens/s, MFU against the chip table's dense bf16 peak (`albert_jax/hardware.py`), peak
memory, and the JAX/PyTorch throughput ratio. MFU counts the model's matmul FLOPs (`describe`), so PyTorch's
MLM head, which projects every position rather than the masked ones, gets no credit for its extra work.
Budget: about 8 minutes on one H200. `--tiny` runs tiny shapes on CPU (a check that the script works).

    python bench/gpu_check.py
    python bench/gpu_check.py --tiny
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("albert_base", "albert_large", "albert_xxlarge")
TINY = {"vocab_size": 128, "embedding_size": 16, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64}
MAX_PREDICTIONS = 20  # the paper recipe's masked positions per sequence at length 512


def model_config(name: str, tiny: bool) -> dict[str, Any]:
    """The AlbertConfig fields of experiments/models/NAME.gin (or the tiny shape), bf16 compute."""
    import gin

    from albert_jax.config import AlbertConfig

    if tiny:
        fields = dict(TINY)
    else:
        gin.clear_config()
        gin.parse_config_files_and_bindings([os.path.join(ROOT, "experiments", "models", f"{name}.gin")], [])
        config = AlbertConfig()
        gin.clear_config()
        fields = {k: getattr(config, k) for k in ("vocab_size", "embedding_size", "hidden_size",
                                                 "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                                 "max_position_embeddings", "num_hidden_groups", "sharing",
                                                 "hidden_act")}
    return {**fields, "dtype": "bfloat16", "param_dtype": "float32"}


def make_batch(batch: int, seq: int, vocab: int, predictions: int) -> dict[str, Any]:
    """A synthetic full-length pretraining batch (numpy), the same rows for both frameworks."""
    import numpy as np

    rng = np.random.default_rng(0)
    positions = np.sort(np.stack([rng.choice(np.arange(1, seq), predictions, replace=False)
                                  for _ in range(batch)]), axis=1)
    return {"input_ids": rng.integers(5, vocab, (batch, seq)).astype(np.int32),
            "input_mask": np.ones((batch, seq), np.int32),
            "segment_ids": (np.arange(seq)[None] >= seq // 2).astype(np.int32).repeat(batch, 0),
            "masked_lm_positions": positions.astype(np.int32),
            "masked_lm_ids": rng.integers(5, vocab, (batch, predictions)).astype(np.int32),
            "masked_lm_weights": np.ones((batch, predictions), np.float32),
            "sentence_labels": rng.integers(0, 2, (batch,)).astype(np.int32)}


def peak_flops() -> tuple[str, float]:
    """(chip name, dense bf16 FLOP/s) of device 0 from the chip table; the H200's when not a known device."""
    import jax

    from albert_jax import hardware

    chip = hardware.chip_for_device_kind(jax.devices()[0].device_kind) or hardware.CHIPS["h200"]
    return chip.name, chip.peak_bf16_flops


def use_cudnn_attention() -> dict[str, str]:
    """Route the model's `jax.nn.dot_product_attention` calls to cuDNN when it accepts them, else XLA."""
    import jax

    plain = jax.nn.dot_product_attention
    chosen = {"requested": "cudnn" if jax.devices()[0].platform == "gpu" else "xla"}

    def attention(*args: Any, **kwargs: Any) -> Any:
        if chosen["requested"] == "cudnn" and "implementation" not in kwargs:
            try:
                return plain(*args, implementation="cudnn", **kwargs)
            except Exception as error:  # unsupported shape / dtype / mask: XLA's attention instead
                chosen["fallback_reason"] = f"{type(error).__name__}: {str(error)[:200]}"
        return plain(*args, **kwargs)

    jax.nn.dot_product_attention = attention
    return chosen


def jax_part(name: str, seq: int, batch: int, steps: int, tiny: bool) -> dict[str, Any]:
    """Measure the albert-jax train step; `batch` 0 = find the largest that fits."""
    import flax.linen as nn
    import jax

    from albert_jax import describe, optim, partitioning
    from albert_jax import train_step as train_steps
    from albert_jax.config import AlbertConfig
    from albert_jax.model import init_params

    attention = use_cudnn_attention()
    config = AlbertConfig(**model_config(name, tiny))
    mesh = partitioning.make_mesh(partitioning.MeshConfig(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    rules = partitioning.DEFAULT_RULES
    boxed = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    schedule = optim.make_schedule(peak_learning_rate=1e-4, warmup_steps=10, num_train_steps=1000)
    tx = optim.make_optimizer(boxed, optimizer="lamb", learning_rate=schedule)
    _, shardings = train_steps.state_shardings(config, tx, mesh, rules)
    step = train_steps.jit_train_step(train_steps.make_train_step(config, tx, schedule), shardings, mesh)
    predictions = min(MAX_PREDICTIONS, seq - 1)
    device = jax.devices()[0]
    limit = (device.memory_stats() or {}).get("bytes_limit")
    state = train_steps.create_state(config, tx, mesh, rules, seed=0, shardings=shardings)
    with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):

        def compiled_for(rows: int) -> Any:
            host = make_batch(rows, seq, config.vocab_size, predictions)
            batch_arrays = jax.device_put(host, partitioning.batch_sharding(mesh))
            return step.lower(state, batch_arrays).compile(), batch_arrays

        if not batch:
            probe = 8
            compiled, _ = compiled_for(probe)
            memory = compiled.memory_analysis()
            if limit and memory is not None:
                per_row = memory.temp_size_in_bytes / probe
                fixed = memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
                batch = max(8, int((0.9 * limit - fixed) / per_row) // 8 * 8)
            else:
                batch = probe
        while True:
            try:
                compiled, batch_arrays = compiled_for(batch)
                text = compiled.as_text()
                for _ in range(2):  # warm-up
                    state, metrics = compiled(state, batch_arrays)
                jax.block_until_ready(metrics)
                started = time.perf_counter()
                for _ in range(steps):
                    state, metrics = compiled(state, batch_arrays)
                jax.block_until_ready(metrics)
                seconds = (time.perf_counter() - started) / steps
                break
            except Exception as error:  # XLA raises RESOURCE_EXHAUSTED as a runtime error
                if "RESOURCE_EXHAUSTED" not in str(error) or batch <= 1:
                    raise
                batch //= 2
    flops = describe.train_flops_per_token(config, seq, predictions) * batch * seq
    chip, peak = peak_flops()
    implementation = "cudnn" if "cudnn$fmha" in text or "__cudnn" in text else "xla"
    stats = device.memory_stats() or {}
    return {"framework": "jax", "model": name, "batch": batch, "seq": seq, "step_seconds": seconds,
            "tokens_per_second": batch * seq / seconds, "mfu": flops / seconds / peak, "chip": chip,
            "peak_memory_bytes": stats.get("peak_bytes_in_use"), "attention": implementation,
            "attention_fallback": attention.get("fallback_reason"), "loss": float(metrics["loss"]),
            "device": device.device_kind}


def torch_part(name: str, seq: int, batch: int, steps: int, tiny: bool) -> dict[str, Any]:
    """Measure transformers' AlbertForPreTraining on the same shapes (halving the batch on OOM)."""
    import torch
    import transformers

    fields = model_config(name, tiny)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    hf = transformers.AlbertConfig(
        vocab_size=fields["vocab_size"], embedding_size=fields["embedding_size"],
        hidden_size=fields["hidden_size"], num_hidden_layers=fields["num_hidden_layers"],
        num_attention_heads=fields["num_attention_heads"], intermediate_size=fields["intermediate_size"],
        max_position_embeddings=fields["max_position_embeddings"], hidden_act="gelu_new",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0,
        attn_implementation="sdpa")
    model = transformers.AlbertForPreTraining(hf).to(device)
    fused = {"fused": True} if cuda else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, **fused)
    predictions = min(MAX_PREDICTIONS, seq - 1)
    while True:
        try:
            host = make_batch(batch, seq, fields["vocab_size"], predictions)
            ids = torch.from_numpy(host["input_ids"]).long().to(device)
            labels = torch.full_like(ids, -100)
            rows = torch.arange(batch)[:, None]
            positions = torch.from_numpy(host["masked_lm_positions"]).long()
            labels[rows, positions] = torch.from_numpy(host["masked_lm_ids"]).long().to(device)
            inputs = {"input_ids": ids, "attention_mask": torch.from_numpy(host["input_mask"]).long().to(device),
                      "token_type_ids": torch.from_numpy(host["segment_ids"]).long().to(device), "labels": labels,
                      "sentence_order_label": torch.from_numpy(host["sentence_labels"]).long().to(device)}

            def one_step() -> Any:
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = model(**inputs).loss
                loss.backward()
                optimizer.step()
                return loss

            for _ in range(2):
                loss = one_step()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            for _ in range(steps):
                loss = one_step()
            if cuda:
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - started) / steps
            break
        except torch.OutOfMemoryError:
            if batch <= 1:
                raise
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            batch //= 2
    from albert_jax import describe, hardware
    from albert_jax.config import AlbertConfig

    flops = describe.train_flops_per_token(AlbertConfig(**fields), seq, predictions) * batch * seq

    chip = hardware.chip_for_device_kind(torch.cuda.get_device_name() if cuda else "") or hardware.CHIPS["h200"]
    return {"framework": "torch", "model": name, "batch": batch, "seq": seq, "step_seconds": seconds,
            "tokens_per_second": batch * seq / seconds, "mfu": flops / seconds / chip.peak_bf16_flops,
            "chip": chip.name, "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None,
            "attention": "sdpa", "fused_adamw": bool(fused), "loss": float(loss), "torch": torch.__version__}


def child(args: argparse.Namespace, part: str, model: str, batch: int) -> dict[str, Any]:
    """Runs one measurement in a fresh process; returns its JSON (or the error)."""
    command = [sys.executable, os.path.abspath(__file__), f"--part={part}", f"--model={model}",
               f"--batch={batch}", f"--seq={args.seq}", f"--steps={args.steps}"] + (["--tiny"] if args.tiny else [])
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if part == "torch":
        env["JAX_PLATFORMS"] = "cpu"  # the torch child uses jax only for the chip table
    if args.tiny:
        env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.child_timeout)
    except subprocess.TimeoutExpired:
        return {"framework": part, "model": model, "error": f"timed out after {args.child_timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"framework": part, "model": model, "error": done.stderr.strip().splitlines()[-1:] or "no output"}
    return json.loads(lines[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU: checks the script itself")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated experiments/models names")
    parser.add_argument("--seq", type=int, default=None, help="sequence length (512; 32 with --tiny)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps after 2 warm-up steps (10; 2 tiny)")
    parser.add_argument("--batch", type=int, default=0, help="0: the largest that fits (4 with --tiny)")
    parser.add_argument("--child_timeout", type=int, default=240, help="seconds per measurement process")
    parser.add_argument("--part", choices=("jax", "torch"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.seq = args.seq or (32 if args.tiny else 512)
    args.steps = args.steps or (2 if args.tiny else 10)
    batch = args.batch or (4 if args.tiny else 0)
    if args.part:  # a child: one measurement
        measure = jax_part if args.part == "jax" else torch_part
        print(json.dumps(measure(args.model, args.seq, batch, args.steps, args.tiny)), flush=True)
        return 0
    failed = False
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        ours = child(args, "jax", model, batch)
        print(json.dumps(ours), flush=True)
        theirs = child(args, "torch", model, ours.get("batch") or batch or 8)
        print(json.dumps(theirs), flush=True)
        if "error" in ours or "error" in theirs:
            failed = True
            continue
        print(json.dumps({"model": model, "batch_jax": ours["batch"], "batch_torch": theirs["batch"],
                          "jax_over_torch_tokens_per_second": ours["tokens_per_second"]
                          / theirs["tokens_per_second"]}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
