"""The work behind `albert-jax compile`: one plan for the gin config in force, or a search over plans.

A plan is the gin config plus (mesh, remat policy, microbatches, compute dtype). Each is compiled for the slice
with the trainer's own step (`train.build_step`) and analyzed by `aot.analyze`; an out-of-memory compile is a
plan that does not fit, with the compiler's reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import os
import sys
import time
from typing import Any

EXIT_OK, EXIT_OOM = 0, 3
REMAT_ORDER = ("none", "dots_with_no_batch_dims_saveable", "dots_saveable", "full")


def _setting(selector: str, parameter: str) -> Any:
    """A gin-bound parameter of the train job, else the function's own default."""
    import gin

    from albert_jax.jobs import train

    functions = {"train": train.train}
    try:
        return gin.query_parameter(f"{selector}.{parameter}")
    except ValueError:
        return inspect.signature(functions[selector]).parameters[parameter].default


def plan(topology: str, num_slices: int = 1, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compiles the gin-configured train step for `topology` and returns the per-chip report.

    `overrides`: AlbertConfig fields (remat_policy, dtype), MeshConfig (data, fsdp, tensor) and
    num_microbatches to try instead of the gin values (what --search varies).
    """
    from albert_jax import aot, describe, hardware, partitioning
    from albert_jax.config import AlbertConfig
    from albert_jax.input import loader as input_loader
    from albert_jax.input.instances import InstanceConfig
    from albert_jax.input.masking import MaskingConfig
    from albert_jax.jobs import train
    from albert_jax.model import abstract_params

    overrides = dict(overrides or {})
    slice_ = hardware.parse_slice(topology)
    if num_slices < 1:
        raise ValueError(f"--num_slices={num_slices} must be >= 1.")
    config = AlbertConfig().replace(**{k: overrides.pop(k) for k in ("remat_policy", "dtype") if k in overrides})
    mesh_config = partitioning.MeshConfig()
    mesh_fields = {k: overrides.pop(k) for k in ("data", "fsdp", "tensor") if k in overrides}
    if num_slices > 1 and mesh_config.dcn_data == 1:
        mesh_fields["dcn_data"] = num_slices
    mesh_config = dataclasses.replace(mesh_config, **mesh_fields)
    num_microbatches = int(overrides.pop("num_microbatches", _setting("train", "num_microbatches")))
    global_batch = int(_setting("train", "global_batch_size"))
    seq_length = InstanceConfig().max_seq_length
    max_predictions = MaskingConfig().max_predictions_per_seq
    devices = aot.slice_devices(slice_, num_slices)
    mesh = partitioning.make_mesh(mesh_config, devices)
    rules = partitioning.logical_rules()
    train.check_batch(global_batch, mesh, 1, num_microbatches)
    weight = input_loader.sentence_loss_weight(config=input_loader.InputConfig(train_dir=""))
    built = train.build_step(config, mesh, rules, weight, num_microbatches)
    state = aot.with_shardings(built.abstract_state, built.state_sharding)
    batch = aot.batch_specs(global_batch, seq_length, max_predictions, mesh)
    flops_per_token = describe.train_flops_per_token(config, seq_length, max_predictions)
    tokens = global_batch * seq_length
    head = {
        "topology": slice_.name, "libtpu_topology": slice_.topology_name, "chip": slice_.chip.name,
        "num_chips": len(devices), "num_slices": num_slices, "mesh": dict(mesh.shape),
        "remat_policy": config.remat_policy, "compute_dtype": config.dtype, "param_dtype": config.param_dtype,
        "num_microbatches": num_microbatches, "global_batch_size": global_batch, "seq_length": seq_length,
        "max_predictions_per_seq": max_predictions, "tokens_per_step": tokens,
        "hbm_capacity_bytes": int(slice_.chip.hbm_bytes), "estimate": True,
        "hardware_source": slice_.chip.source,
    }
    try:
        compiled = aot.compile_step(built.step_fn, built.raw_step, state, batch, mesh, rules)
    except aot.OutOfMemory as oom:
        head.update(fits=False, compiler_message=str(oom), hbm_peak_bytes=oom.used,
                    hbm_params_bytes=aot.bytes_per_device(state.params),
                    hbm_optimizer_state_bytes=aot.bytes_per_device(state.opt_state),
                    analytic_flops_per_step=flops_per_token * tokens, flops_per_step=None,
                    predicted_step_seconds=None, predicted_mfu=None, predicted_tokens_per_second=None)
        head["advice"] = advice(head, config)
        return head
    shared = aot.shared_stack_bytes(abstract_params(config), config.num_hidden_layers)
    head.update(aot.analyze(compiled, slice_.chip, len(devices), num_slices, state, batch, tokens,
                            flops_per_token * tokens, shared))
    head["wall_clock_seconds_for_steps"] = {str(n): n * head["predicted_step_seconds"] for n in (125000,)}
    if not head["fits"]:
        head["advice"] = advice(head, config)
    return head


def advice(report: dict[str, Any], config: Any) -> str:
    """One paragraph: why the plan does not fit and what to try, from where the bytes go."""
    gib = 2**30
    cap = report["hbm_capacity_bytes"]
    state = (report.get("hbm_params_bytes") or 0) + (report.get("hbm_optimizer_state_bytes") or 0)
    used = report.get("hbm_peak_bytes")
    mesh = report["mesh"]
    tips = []
    if state > 0.1 * cap and mesh.get("fsdp", 1) * mesh.get("tensor", 1) < report["num_chips"]:
        tips.append("shard parameters and optimizer state over more chips (--gin_file=mesh/fsdp.gin, or "
                    "--gin.MeshConfig.fsdp=-1 --gin.MeshConfig.data=1)")
    if config.remat_policy in ("none", "dots_with_no_batch_dims_saveable"):
        tips.append("recompute activations in the backward pass (--gin.AlbertConfig.remat_policy='dots_saveable' "
                    "or 'full')")
    # Activations scale with the microbatch: the count that would bring them under what the state leaves free.
    free = cap - state
    needed = 2 * report["num_microbatches"]
    if used and free > 0 and used > state:
        needed = max(needed, report["num_microbatches"] * 2 ** math.ceil(math.log2((used - state) / free)))
    tips.append(f"split the batch into more microbatches (--gin.train.num_microbatches={needed} would bring "
                f"activations under the free HBM if they scale with the microbatch)")
    if config.dtype == "float32":
        tips.append("compute in bfloat16 (--gin.AlbertConfig.dtype='bfloat16')")
    used_text = f"needs {used / gib:.1f} GiB" if used else "needs more than it has"
    return (f"Does not fit: one {report['chip']} chip has {cap / gib:.1f} GiB of HBM and this plan {used_text} "
            f"(parameters and optimizer state {state / gib:.2f} GiB per chip on mesh {mesh}; the rest is "
            f"activations and temporaries of batch {report['global_batch_size']} x {report['seq_length']} over "
            f"{report['num_microbatches']} microbatch(es), remat '{config.remat_policy}'). Compiler: "
            f"{report.get('compiler_message', 'peak above capacity').rstrip('.')}. Try: " + "; ".join(tips) +
            ". Or run `albert-jax compile --search` with the same flags.")


def format_report(r: dict[str, Any]) -> str:
    """The readable table."""
    gib = 2**30

    def b(key: str) -> str:
        value = r.get(key)
        return f"{value / gib:8.2f} GiB" if isinstance(value, (int, float)) else "       n/a"

    lines = [f"{r['topology']} ({r['libtpu_topology']}, {r['num_chips']} chips, {r['num_slices']} slice(s)), mesh "
             f"{r['mesh']}, remat {r['remat_policy']}, compute {r['compute_dtype']} / params {r['param_dtype']}, "
             f"{r['num_microbatches']} microbatch(es), batch {r['global_batch_size']} x {r['seq_length']}",
             "HBM per chip (compile-time):",
             f"  parameters        {b('hbm_params_bytes')}", f"  optimizer state   {b('hbm_optimizer_state_bytes')}",
             f"  batch             {b('hbm_batch_bytes')}", f"  temporaries       {b('hbm_temporaries_bytes')}",
             f"  generated code    {b('hbm_code_bytes')}", f"  peak              {b('hbm_peak_bytes')}",
             f"  capacity          {b('hbm_capacity_bytes')}",
             f"  fits              {r['fits']}" + (f" (margin {r['hbm_margin_bytes'] / gib:.2f} GiB)"
                                                    if r.get("hbm_margin_bytes") is not None else "")]
    if r.get("flops_per_step"):
        coll = ", ".join(f"{k} {v['bytes_per_step'] / 2**20:.1f} MiB in {v['runs_per_step']} runs "
                         f"({v['runs_in_loops']} inside loops)" for k, v in r["collectives"].items())
        lines += [
            "Compute per step (estimates):",
            f"  FLOPs (traced step, all chips)  {r['flops_per_step']:.4g}  analytic {r['analytic_flops_per_step']:.4g}"
            f"  (ratio {r['flops_vs_analytic']:.3f})",
            f"  XLA cost_analysis per chip      {r['xla_cost_flops_per_chip']:.4g} FLOPs, "
            f"{r['xla_cost_bytes_accessed_per_chip']:.4g} bytes (counts each loop body once)",
            f"  HBM bytes per chip (XLA's, scaled by the loop undercount)  {r['hbm_bytes_accessed_per_chip']:.4g}",
            f"  collectives per chip  {coll or 'none'}",
            f"  shared layer, one gather per step would be  {r['shared_layer_gather_bytes_once'] / 2**20:.1f} MiB; "
            f"parameter gathers and gradient reductions outside every loop: "
            f"{'yes' if r['gathers_hoisted'] else 'no ' + str(r['collective_runs_in_loops'])}",
            f"  roofline: compute {r['compute_seconds'] * 1e3:.1f} ms, HBM {r['hbm_seconds'] * 1e3:.1f} ms "
            f"({r['bound']}-bound), collectives {r['collective_seconds'] * 1e3:.1f} ms",
            f"  predicted step {r['predicted_step_seconds'] * 1e3:.1f} ms, "
            f"{r['predicted_tokens_per_second']:,.0f} tokens/s, MFU {r['predicted_mfu']:.1%}; 125k steps "
            f"{r['wall_clock_seconds_for_steps']['125000'] / 3600:.1f} h",
            f"  compile {r['compile_seconds']:.1f} s (lowering {r['lower_seconds']:.1f} s) on this CPU"]
    return "\n".join(lines)


def parse_meshes(text: str, num_chips: int) -> list[dict[str, int]]:
    """`1x32x1,2x16x1` -> mesh dicts; each must multiply to the slice's chip count."""
    meshes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        sizes = item.lower().split("x")
        if len(sizes) != 3 or not all(size.isdigit() and int(size) > 0 for size in sizes):
            raise ValueError(f"--search_meshes entry {item!r} is not DATAxFSDPxTENSOR (three positive integers).")
        data, fsdp, tensor = map(int, sizes)
        if data * fsdp * tensor != num_chips:
            raise ValueError(f"--search_meshes entry {item!r} uses {data * fsdp * tensor} chips; the slice has "
                             f"{num_chips}.")
        meshes.append({"data": data, "fsdp": fsdp, "tensor": tensor})
    return meshes


def candidates(num_chips: int, heads: int, intermediate: int, dtypes: tuple[str, ...],
               meshes: list[dict[str, int]] | None = None,
               remats: tuple[str, ...] = REMAT_ORDER) -> list[dict[str, Any]]:
    """Meshes (data x fsdp x tensor, tensor a power of two dividing the heads) x remat x dtype, cheapest first.

    `meshes` / `remats` restrict the search (the defaults: every such mesh, every remat policy)."""
    meshes = meshes or default_meshes(num_chips, heads, intermediate)
    return [{**mesh, "remat_policy": remat, "dtype": dtype} for dtype in dtypes for remat in remats
            for mesh in meshes]


def default_meshes(num_chips: int, heads: int, intermediate: int) -> list[dict[str, int]]:
    """fsdp over all, half or none of the chips left by tensor = 1, 2, 4, 8 (dividing heads and FFN width)."""
    meshes = []
    for tensor in (1, 2, 4, 8):
        if num_chips % tensor or heads % tensor or intermediate % tensor:
            continue
        rest = num_chips // tensor
        for fsdp in sorted({1, rest} | ({rest // 2} if rest >= 4 else set())):
            meshes.append({"data": rest // fsdp, "fsdp": fsdp, "tensor": tensor})
    return meshes


def search(args: argparse.Namespace, bindings: list[str]) -> int:
    """Tries plans (each at the fewest microbatches that fit, up to 8), prints them best first, writes the best."""
    import json

    from albert_jax.config import AlbertConfig

    from albert_jax import hardware

    config = AlbertConfig()
    dtypes = tuple(_names(args.search_dtypes)) or (
        ("bfloat16",) if config.dtype == "bfloat16" else ("bfloat16", config.dtype))
    remats = tuple(_names(args.search_remat)) or REMAT_ORDER
    unknown = [r for r in remats if r not in REMAT_ORDER]
    if unknown:
        raise ValueError(f"--search_remat: unknown policy {unknown}; choose from {', '.join(REMAT_ORDER)}.")
    chips_per_slice = hardware.parse_slice(args.topology).num_chips
    meshes = parse_meshes(args.search_meshes, chips_per_slice)
    tried: list[dict[str, Any]] = []
    fitted_meshes: set[tuple] = set()
    started = time.perf_counter()
    for candidate in candidates(chips_per_slice, config.num_attention_heads, config.intermediate_size,
                                dtypes, meshes, remats):
        key = (candidate["data"], candidate["fsdp"], candidate["tensor"], candidate["dtype"])
        if key in fitted_meshes:
            continue  # a cheaper remat policy already fits on this mesh
        microbatches = 1
        while len(tried) < args.max_candidates and microbatches <= args.max_microbatches:
            try:
                report = plan(args.topology, args.num_slices, {**candidate, "num_microbatches": microbatches})
            except ValueError as error:  # batch does not split over this mesh / microbatch count
                report = {**candidate, "num_microbatches": microbatches, "fits": False, "error": str(error)}
            tried.append(report)
            print(_row(report), file=sys.stderr, flush=True)
            if report.get("fits"):
                fitted_meshes.add(key)
                break
            if report.get("error"):
                break
            microbatches *= 2
        if len(tried) >= args.max_candidates:
            break
    ranked = sorted(tried, key=lambda r: (not r.get("fits"), r.get("predicted_step_seconds") or math.inf))
    best = ranked[0] if ranked and ranked[0].get("fits") else None
    out_path = args.plan_out or f"plan_{args.topology}.gin"
    if best:
        with open(out_path, "w") as f:
            f.write(snippet(best, args.gin_file))
    result = {"topology": args.topology, "candidates": ranked, "best": best,
              "plan_gin": os.path.abspath(out_path) if best else None,
              "search_seconds": time.perf_counter() - started}
    if args.json:
        print(json.dumps(result, indent=2, default=float))
    else:
        print("fits  mesh (data x fsdp x tensor)  remat                             dtype     mb  peak GiB  "
              "step ms   MFU")
        for r in ranked:
            print(_row(r))
        print(f"best plan written to {out_path}: include it after your gin files (--gin_file={out_path})"
              if best else "no plan fits; see the candidates' advice")
    return EXIT_OK if best else EXIT_OOM


def _names(text: str) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _row(r: dict[str, Any]) -> str:
    mesh = r.get("mesh") or {k: r.get(k) for k in ("data", "fsdp", "tensor")}
    peak = r.get("hbm_peak_bytes")
    step = r.get("predicted_step_seconds")
    mfu = r.get("predicted_mfu")
    return (f"{'yes ' if r.get('fits') else 'no  '}  {mesh.get('data')} x {mesh.get('fsdp')} x {mesh.get('tensor'):<14}"
            f"  {r.get('remat_policy', ''):<33} {r.get('compute_dtype', r.get('dtype', '')):<9} "
            f"{r.get('num_microbatches', ''):>2}  {peak / 2**30 if peak else float('nan'):8.2f}  "
            f"{step * 1e3 if step else float('nan'):7.1f}  {mfu if mfu else float('nan'):5.1%}")


def snippet(best: dict[str, Any], gin_files: list[str]) -> str:
    """The best plan as gin bindings to include after the config's own files."""
    mesh = best["mesh"]
    return "\n".join([
        f"# Plan found by `albert-jax compile --search` for {' '.join(gin_files)} on {best['topology']}: compile-time",
        f"# estimate {best['predicted_step_seconds'] * 1e3:.1f} ms/step, MFU {best['predicted_mfu']:.1%}, "
        f"HBM peak {best['hbm_peak_bytes'] / 2**30:.2f} of {best['hbm_capacity_bytes'] / 2**30:.1f} GiB per chip.",
        f"MeshConfig.data = {mesh['data']}  # pure data-parallel ways",
        f"MeshConfig.fsdp = {mesh['fsdp']}  # parameter-sharded data-parallel ways",
        f"MeshConfig.tensor = {mesh['tensor']}  # tensor-parallel ways",
        f"AlbertConfig.remat_policy = '{best['remat_policy']}'  # activation recomputation in the backward pass",
        f"AlbertConfig.dtype = '{best['compute_dtype']}'  # compute dtype (parameters stay {best['param_dtype']})",
        f"train.num_microbatches = {best['num_microbatches']}  # gradient accumulation slices per update",
        ""])

