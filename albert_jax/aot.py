"""Ahead-of-time plans: compile the trainer's exact step for a TPU slice from a CPU machine and read its cost.

`jax.experimental.topologies` (with libtpu installed) gives the devices of a slice that is not attached; the
train step the trainer builds (`jobs/train.build_step`: same function, shardings, microbatching, dtypes and
donated state) is lowered on a mesh of them and compiled by the real TPU compiler. Its `memory_analysis()` says
what one chip holds, and an out-of-memory plan fails here exactly as it would on the hardware. FLOPs are
counted on the traced step (`program_flops`: every dot_general, loops times their length, recomputation under
remat included) because XLA's `cost_analysis()` counts a while-loop body once; collectives and HBM traffic come
from the optimized HLO with loop trip counts applied (`hlo_stats`); HBM bytes are XLA's bytes accessed scaled by
the same loop undercount (traced FLOPs / XLA FLOPs), an approximation. The roofline step time is an estimate:
max(FLOPs / peak, HBM bytes / bandwidth) per chip plus collective bytes over the ICI (and DCN) bandwidth.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax.experimental import topologies

from albert_jax import hlo_stats, partitioning
from albert_jax.hardware import Chip, Slice

BATCH_DTYPES = {"input_ids": jnp.int32, "input_mask": jnp.int32, "segment_ids": jnp.int32,
                "masked_lm_positions": jnp.int32, "masked_lm_ids": jnp.int32, "masked_lm_weights": jnp.float32,
                "sentence_labels": jnp.int32, "example_weights": jnp.float32}


class OutOfMemory(Exception):
    """The plan does not fit in HBM: the compiler's own message, and its used / available bytes if given."""

    def __init__(self, message: str, used: float | None, available: float | None) -> None:
        super().__init__(message)
        self.used, self.available = used, available


def slice_devices(slice_: Slice, num_slices: int = 1) -> list[Any]:
    """The devices of `num_slices` copies of the slice, for compiling only (nothing is attached)."""
    topology = topologies.get_topology_desc(
        platform="tpu", topology_name=slice_.topology_name, chip_config_name=slice_.chip_config_name,
        chips_per_host_bounds=slice_.chips_per_host_bounds, num_slices=num_slices)
    return list(topology.devices)


def batch_specs(global_batch: int, seq_length: int, max_predictions: int, mesh: Any) -> dict[str, Any]:
    """Abstract global batch with the trainer's batch sharding (the loader's keys, shapes and dtypes)."""
    sharding = partitioning.batch_sharding(mesh)
    shapes = {"input_ids": (global_batch, seq_length), "input_mask": (global_batch, seq_length),
              "segment_ids": (global_batch, seq_length), "masked_lm_positions": (global_batch, max_predictions),
              "masked_lm_ids": (global_batch, max_predictions), "masked_lm_weights": (global_batch, max_predictions),
              "sentence_labels": (global_batch,), "example_weights": (global_batch,)}
    return {k: jax.ShapeDtypeStruct(shapes[k], BATCH_DTYPES[k], sharding=sharding) for k in shapes}


def with_shardings(abstract: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def bytes_per_device(tree: Any) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
    return int(total)


def program_flops(fn: Callable, *args: Any) -> float:
    """Matmul FLOPs of one call of `fn`, from its jaxpr: 2 x output size x contracted size per dot_general,
    scans times their length, shard_map bodies times their manual devices, remat recomputation included, the
    larger branch of a cond."""

    def count(jaxpr: Any) -> float:
        total = 0.0
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            if name == "dot_general":
                (contract, _), _ = eqn.params["dimension_numbers"]
                lhs = eqn.invars[0].aval.shape
                out = eqn.outvars[0].aval.shape
                total += 2.0 * math.prod(out) * math.prod(lhs[d] for d in contract)
                continue
            if name == "cond":
                total += max(count(b.jaxpr) for b in eqn.params["branches"])
                continue
            inner = 0.0
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        inner += count(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        inner += count(sub)
            if name == "shard_map":  # the body sees one device's share of the manual axes
                inner *= math.prod(eqn.params["mesh"].shape[a] for a in eqn.params.get("newly_manual_axes", ()))
            total += inner * (eqn.params.get("length", 1) if name == "scan" else 1)
        return total

    return count(jax.make_jaxpr(fn)(*args).jaxpr)


def _oom(error: Exception) -> OutOfMemory | None:
    text = str(error)
    if "RESOURCE_EXHAUSTED" not in text and "out of memory" not in text.lower():
        return None
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    found = (re.search(r"Used ([\d.]+)([KMGT])? of ([\d.]+)([KMGT])? hbm", text)
             or re.search(r"\(([\d.]+)([KMGT])?\) exceeds available HBM \(([\d.]+)([KMGT])?\)", text))
    used = avail = None
    if found:
        used = float(found.group(1)) * units.get(found.group(2) or "", 1)
        avail = float(found.group(3)) * units.get(found.group(4) or "", 1)
    first = next((line.strip() for line in text.splitlines() if "memory" in line.lower()), text.splitlines()[0])
    return OutOfMemory(first, used, avail)


@dataclasses.dataclass
class CompiledStep:
    compiled: Any
    lower_seconds: float
    compile_seconds: float
    program_flops: float  # whole step, all chips


def compile_step(step_fn: Callable, raw_step: Callable, state: Any, batch: dict[str, Any], mesh: Any,
                 rules: Any) -> CompiledStep:
    """Lowers and compiles the jitted step (under the trainer's mesh and rules); raises OutOfMemory."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):
        started = time.perf_counter()
        lowered = step_fn.lower(state, batch)
        lowered_at = time.perf_counter()
        flops = program_flops(raw_step, state, batch)
        try:
            compiled = lowered.compile()
        except Exception as error:  # the compiler raises a runtime error whose text says RESOURCE_EXHAUSTED
            oom = _oom(error)
            if oom is None:
                raise
            raise oom from error
    return CompiledStep(compiled, lowered_at - started, time.perf_counter() - lowered_at, flops)


def analyze(step: CompiledStep, chip: Chip, num_chips: int, num_slices: int, state: Any, batch: dict[str, Any],
            tokens_per_step: int, analytic_flops: float, shared_layer_bytes: float) -> dict[str, Any]:
    """Per-chip memory, FLOPs, bytes, collectives and the roofline estimate of one compiled step."""
    memory = step.compiled.memory_analysis()
    cost = step.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    hbm_stats = hlo_stats.ModuleStats(step.compiled.as_text())
    collectives = hlo_stats.summarize(hbm_stats.collectives())
    peak = int(memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
               + memory.temp_size_in_bytes + memory.generated_code_size_in_bytes)
    params = bytes_per_device(state.params)
    opt_state = bytes_per_device(state.opt_state)
    batch_bytes = bytes_per_device(batch)
    per_chip_flops = step.program_flops / num_chips
    # XLA's bytes accessed counts loop bodies once, like its FLOPs: scaled by the traced/XLA FLOP ratio.
    xla_flops = float(cost.get("flops", 0.0))
    loop_scale = per_chip_flops / xla_flops if xla_flops else 1.0
    hbm_traffic = float(cost.get("bytes accessed", 0.0)) * max(loop_scale, 1.0)
    ici_bytes = sum(row["bytes_per_step"] for row in collectives.values())
    in_loops = {kind: row["runs_in_loops"] for kind, row in collectives.items() if row["runs_in_loops"]}
    # Across slices only the data-parallel gradient all-reduce travels (params are sharded within a slice).
    dcn_bytes = 2.0 * (num_slices - 1) / num_slices * params if num_slices > 1 else 0.0
    compute_s = per_chip_flops / chip.peak_bf16_flops
    memory_s = hbm_traffic / chip.hbm_bandwidth
    collective_s = ici_bytes / chip.ici_bandwidth + dcn_bytes / chip.dcn_bandwidth
    step_s = max(compute_s, memory_s) + collective_s
    return {
        "hbm_params_bytes": params, "hbm_optimizer_state_bytes": opt_state, "hbm_batch_bytes": batch_bytes,
        "hbm_temporaries_bytes": int(memory.temp_size_in_bytes),
        "hbm_code_bytes": int(memory.generated_code_size_in_bytes),
        "hbm_arguments_bytes": int(memory.argument_size_in_bytes),
        "hbm_peak_bytes": peak, "hbm_capacity_bytes": int(chip.hbm_bytes), "fits": peak <= chip.hbm_bytes,
        "hbm_margin_bytes": int(chip.hbm_bytes - peak),
        "flops_per_step": step.program_flops, "analytic_flops_per_step": analytic_flops,
        "flops_vs_analytic": step.program_flops / analytic_flops if analytic_flops else None,
        "xla_cost_flops_per_chip": float(cost.get("flops", 0.0)),
        "xla_cost_bytes_accessed_per_chip": float(cost.get("bytes accessed", 0.0)),
        "xla_cost_optimal_seconds": cost.get("optimal_seconds"),
        "hbm_bytes_accessed_per_chip": hbm_traffic,
        "collectives": collectives, "collective_bytes_per_step_per_chip": ici_bytes,
        "collective_runs_in_loops": in_loops,
        "gathers_hoisted": not any(k in in_loops for k in ("all-gather", "all-reduce", "reduce-scatter")),
        "dcn_bytes_per_step_per_chip": dcn_bytes, "shared_layer_gather_bytes_once": shared_layer_bytes,
        "compute_seconds": compute_s, "hbm_seconds": memory_s, "collective_seconds": collective_s,
        "bound": "compute" if compute_s >= memory_s else "memory",
        "predicted_step_seconds": step_s, "predicted_tokens_per_second": tokens_per_step / step_s,
        "predicted_mfu": analytic_flops / (step_s * num_chips * chip.peak_bf16_flops),
        "lower_seconds": step.lower_seconds, "compile_seconds": step.compile_seconds,
    }


def shared_stack_bytes(abstract_params: Any, num_layers: int) -> float:
    """Bytes of the weight stacks several layers share (what one all-gather per step has to bring in)."""
    encoder = abstract_params["albert"]["encoder"]["shared_layer"]
    leaves = [leaf for leaf in jax.tree.leaves(encoder) if leaf.shape[0] < num_layers]
    return float(sum(np.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize for leaf in leaves))
