"""`albert-jax compile`: the trainer's step compiled for a TPU slice on this CPU (libtpu), figures vs analytic."""

from __future__ import annotations

import json
import math

import pytest

from albert_jax import describe, hardware
from albert_jax.config import AlbertConfig
from albert_jax.jobs import cli

TINY = ["--gin_file=models/tiny.gin", "--gin_file=scale/tiny.gin", "--gin_file=optim/lamb.gin",
        "--gin_file=mesh/fsdp.gin", "--gin.train.global_batch_size=32"]


def test_slice_names_follow_cloud_tpu() -> None:
    assert hardware.parse_slice("v5p-64").topology_name == "v5:2x4x4"  # 64 TensorCores = 32 chips
    assert hardware.parse_slice("v5p-64").num_chips == 32
    assert hardware.parse_slice("v4-32").topology_name == "v4:2x2x4"
    assert hardware.parse_slice("v5e-16").topology_name == "v5e:4x4"
    assert hardware.parse_slice("v6e-8").topology_name == "v6e:2x4"
    assert hardware.parse_slice("v5e-8").num_chips == 8
    with pytest.raises(ValueError, match="not a TPU slice name"):
        hardware.parse_slice("v7x-8")
    with pytest.raises(ValueError, match="power-of-two"):
        hardware.parse_slice("v5p-6")
    assert hardware.chip_for_device_kind("TPU v5 lite").name == "v5e"
    assert hardware.chip_for_device_kind("TPU v5").name == "v5p"


def test_tiny_plan_on_v5e_4_matches_the_analytic_counts(capsys: pytest.CaptureFixture) -> None:
    code = cli.main(["compile", *TINY, "--gin.train.num_microbatches=2", "--topology=v5e-4", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["fits"] is True
    assert report["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1} and report["num_chips"] == 4
    config = AlbertConfig(vocab_size=8000, embedding_size=64, hidden_size=128, num_hidden_layers=4,
                          num_attention_heads=2, intermediate_size=512, max_position_embeddings=128)
    tokens = 32 * 64
    analytic = describe.train_flops_per_token(config, 64, 10) * tokens
    assert report["analytic_flops_per_step"] == pytest.approx(analytic, rel=1e-9)
    # The traced step's matmuls are the analytic count (no remat): within 1%.
    assert report["flops_per_step"] == pytest.approx(analytic, rel=0.01)
    # XLA's cost analysis counts the 4-layer loop body once: well under the per-chip share.
    assert report["xla_cost_flops_per_chip"] < 0.6 * analytic / 4
    # Parameters fsdp-sharded over 4 chips in float32; LAMB keeps two moments of the same shape.
    counts = describe.component_counts(config)
    params = sum(counts.values())
    assert report["hbm_params_bytes"] == pytest.approx(params * 4 / 4, rel=0.05)
    assert report["hbm_optimizer_state_bytes"] == pytest.approx(2 * report["hbm_params_bytes"], rel=0.05)
    assert report["hbm_capacity_bytes"] == 16 * 2**30
    assert report["hbm_peak_bytes"] > report["hbm_params_bytes"] + report["hbm_optimizer_state_bytes"]
    # One gather of the parameters and one gradient reduction per step: no collective inside the layer loop or
    # the microbatch loop, and the gathers bring in about the parameters once (bf16 kernels, f32 elsewhere).
    assert report["gathers_hoisted"] is True and report["collective_runs_in_loops"] == {}
    assert all(row["runs_in_loops"] == 0 for row in report["collectives"].values())
    gathered = report["collectives"]["all-gather"]["bytes_per_step"]
    assert 0.3 * params * 4 * 3 / 4 < gathered + report["collectives"].get("all-reduce", {}).get(
        "bytes_per_step", 0) < 4 * params * 4
    assert report["shared_layer_gather_bytes_once"] == pytest.approx(
        (counts["attention"] + counts["ffn"]) * 4, rel=1e-6)
    chip = hardware.CHIPS["v5e"]
    step = max(report["compute_seconds"], report["hbm_seconds"]) + report["collective_seconds"]
    assert report["predicted_step_seconds"] == pytest.approx(step)
    assert report["compute_seconds"] == pytest.approx(report["flops_per_step"] / 4 / chip.peak_bf16_flops)
    assert report["predicted_mfu"] == pytest.approx(analytic / (step * 4 * chip.peak_bf16_flops))
    assert report["predicted_tokens_per_second"] == pytest.approx(tokens / step)
    assert math.isfinite(report["compile_seconds"])


def test_a_plan_that_cannot_fit_exits_3_with_the_reason(capsys: pytest.CaptureFixture) -> None:
    code = cli.main(["compile", *TINY, "--gin.train.global_batch_size=131072", "--gin.MeshConfig.fsdp=1",
                             "--gin.MeshConfig.data=-1", "--topology=v5e-1", "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 3 and report["fits"] is False
    assert "Does not fit" in report["advice"] and "microbatches" in report["advice"]
    assert "Traceback" not in captured.err


def test_unknown_topology_is_a_user_error(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["compile", *TINY, "--topology=v9-8"]) == 1
    assert "not a TPU slice name" in capsys.readouterr().err


def test_search_ranks_plans_and_writes_the_best_as_gin(tmp_path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "plan.gin"
    code = cli.main(["compile", *TINY, "--topology=v5e-4", "--search", "--search_meshes=1x4x1,4x1x1",
                     "--search_remat=none", "--search_dtypes=bfloat16", "--max_candidates=2",
                     f"--plan_out={out}", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    ranked = result["candidates"]
    assert len(ranked) == 2 and all(r["fits"] for r in ranked)
    steps = [r["predicted_step_seconds"] for r in ranked]
    assert steps == sorted(steps) and result["best"] == ranked[0]
    assert {(r["mesh"]["data"], r["compute_dtype"]) for r in ranked} == {(1, "bfloat16"), (4, "bfloat16")}
    best = result["best"]
    text = out.read_text()
    assert f"MeshConfig.fsdp = {best['mesh']['fsdp']}  #" in text
    assert f"AlbertConfig.dtype = '{best['compute_dtype']}'  #" in text
    assert "train.num_microbatches = 1  #" in text
    from albert_jax.jobs import compile as compile_job
    compile_job.parse_gin([t.split("=", 1)[1] for t in TINY if t.startswith("--gin_file")] + [str(out)], [])
    import gin
    assert gin.query_parameter("MeshConfig.data") == best["mesh"]["data"]


def test_search_candidates_cover_meshes_remat_and_dtypes() -> None:
    from albert_jax.jobs import compile_plan

    found = compile_plan.candidates(8, heads=4, intermediate=64, dtypes=("bfloat16", "float32"))
    meshes = {(c["data"], c["fsdp"], c["tensor"]) for c in found}
    assert all(d * f * t == 8 for d, f, t in meshes) and {(8, 1, 1), (1, 8, 1), (1, 2, 4), (1, 4, 2)} <= meshes
    assert [c["dtype"] for c in found].index("float32") == len(found) // 2  # bf16 plans are tried first
    assert {c["remat_policy"] for c in found} == set(compile_plan.REMAT_ORDER)


def test_bad_search_mesh_is_a_user_error(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["compile", *TINY, "--topology=v5e-4", "--search", "--search_meshes=2x4x1"]) == 1
    assert "uses 8 chips; the slice has 4" in capsys.readouterr().err


def test_libtpu_lock_is_explained_in_one_paragraph(monkeypatch, capsys: pytest.CaptureFixture) -> None:
    from albert_jax.jobs import compile_plan

    def locked(*args, **kwargs):
        raise RuntimeError('ABORTED: Internal error when accessing libtpu multi-process lockfile. Run "$ sudo rm '
                           '/tmp/libtpu_lockfile".')

    monkeypatch.setattr(compile_plan, "plan", locked)
    monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "0")
    assert cli.main(["compile", *TINY, "--topology=v5e-4"]) == 1
    err = capsys.readouterr().err
    assert "another process on this machine holds libtpu" in err and "ALLOW_MULTIPLE_LIBTPU_LOAD='0'" in err
    assert "Traceback" not in err and err.count("\n") == 1
