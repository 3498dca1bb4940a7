"""The sharded train step: different meshes over 8 simulated devices train exactly like one device."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

from albert_jax import hlo_stats, losses, optim, partitioning
from albert_jax import train_step as steps
from albert_jax.config import AlbertConfig
from albert_jax.model import AlbertForPreTraining, init_params

CONFIG = AlbertConfig(vocab_size=128, embedding_size=16, hidden_size=32, num_hidden_layers=3,
                      num_attention_heads=4, intermediate_size=64, max_position_embeddings=32, sharing="attention")
BATCH, SEQ, PRED = 8, 16, 4


def make_batches(count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(count):
        mask = np.ones((BATCH, SEQ), np.int32)
        mask[::2, SEQ - 5:] = 0
        batches.append({
            "input_ids": rng.integers(5, CONFIG.vocab_size, (BATCH, SEQ)).astype(np.int32) * mask,
            "input_mask": mask,
            "segment_ids": (np.arange(SEQ)[None, :] >= SEQ // 2).astype(np.int32).repeat(BATCH, 0) * mask,
            "masked_lm_positions": np.sort(rng.choice(np.arange(1, SEQ - 5), (BATCH, PRED))).astype(np.int32),
            "masked_lm_ids": rng.integers(5, CONFIG.vocab_size, (BATCH, PRED)).astype(np.int32),
            "masked_lm_weights": (rng.random((BATCH, PRED)) < 0.8).astype(np.float32),
            "sentence_labels": rng.integers(0, 2, (BATCH,)).astype(np.int32),
        })
    return batches


def setup(mesh_shape: tuple[int, int, int], microbatches: int = 1, config: AlbertConfig = CONFIG,
          local: bool = True):
    """(mesh, rules, state, jitted step) for `config` on the first devices; `local=False`: the step without
    `local_accumulate_gradients` (gradients accumulated by the SPMD partitioner alone), for comparison."""
    data, fsdp, tensor = mesh_shape
    devices = jax.devices()[: data * fsdp * tensor]
    mesh = partitioning.make_mesh(partitioning.MeshConfig(data=data, fsdp=fsdp, tensor=tensor), devices)
    rules = partitioning.DEFAULT_RULES
    boxed = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    schedule = optim.make_schedule(peak_learning_rate=1e-3, warmup_steps=1, num_train_steps=10)
    tx = optim.make_optimizer(boxed, optimizer="lamb", learning_rate=schedule)
    _, shardings = steps.state_shardings(config, tx, mesh, rules)
    state = steps.create_state(config, tx, mesh, rules, seed=0, shardings=shardings)
    if local:
        raw_step = steps.make_train_step(config, tx, schedule, num_microbatches=microbatches)
    else:
        loss_fn = losses.pretraining_loss_fn(AlbertForPreTraining(config))
        raw_step = steps.make_update_step(loss_fn, tx, schedule, microbatches)
    return mesh, rules, state, steps.jit_train_step(raw_step, shardings, mesh)


def run(mesh_shape: tuple[int, int, int], batches: list[dict[str, np.ndarray]], microbatches: int = 1,
        config: AlbertConfig = CONFIG):
    mesh, rules, state, step = setup(mesh_shape, microbatches, config)
    losses = []
    with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):
        for batch in batches:
            batch = jax.device_put(batch, partitioning.batch_sharding(mesh))
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params), state


@pytest.fixture(scope="module")
def reference():
    return run((1, 1, 1), make_batches(3))


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 2, 2), (1, 8, 1), (1, 2, 4)])
def test_meshes_match_single_device(reference, mesh_shape):
    losses, params, _ = run(mesh_shape, make_batches(3))
    np.testing.assert_allclose(losses, reference[0], rtol=2e-5)
    for (path, got), want in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(reference[1])):
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4, err_msg=jax.tree_util.keystr(path))


def test_state_is_created_sharded():
    _, _, state = run((1, 8, 1), make_batches(1))
    layer = state.params["albert"]["encoder"]["shared_layer"]
    ffn_kernel = layer["ffn"]["kernel"]  # [copies, hidden, mlp]: hidden on fsdp, mlp on tensor (size 1 here)
    assert ffn_kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    assert len({s.device for s in ffn_kernel.addressable_shards}) == 8
    assert ffn_kernel.addressable_shards[0].data.shape == (CONFIG.num_ffn_copies, CONFIG.hidden_size // 8, 64)


@pytest.mark.parametrize("mesh_shape", [(2, 1, 1), (2, 2, 2), (1, 4, 2)])
def test_microbatches_match_full_batch(reference, mesh_shape):
    losses, params, _ = run(mesh_shape, make_batches(3), microbatches=2)
    np.testing.assert_allclose(losses, reference[0], rtol=2e-5)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(reference[1])):
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


def test_nonfinite_update_is_skipped():
    batches = make_batches(2)
    batches[1]["masked_lm_weights"] = batches[1]["masked_lm_weights"] * np.float32("nan")
    losses, params, state = run((1, 1, 1), batches)
    _, params_one, _ = run((1, 1, 1), batches[:1])
    assert np.isfinite(losses[0]) and not np.isfinite(losses[1])
    assert int(state.nonfinite_streak) == 1 and int(state.nonfinite_total) == 1
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(params_one)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("config, devices, want", [
    (partitioning.MeshConfig(data=-1), 8, (8, 1, 1)),
    (partitioning.MeshConfig(data=2, fsdp=-1, tensor=2), 8, (2, 2, 2)),
    (partitioning.MeshConfig(data=1, fsdp=-1, dcn_data=2), 8, (1, 4, 1)),
])
def test_mesh_sizes_resolve(config, devices, want):
    assert config.resolve(devices) == want


@pytest.mark.parametrize("config, message", [
    (partitioning.MeshConfig(data=3), "needs 3 devices per slice but there are 8"),
    (partitioning.MeshConfig(data=-1, fsdp=-1), "At most one"),
    (partitioning.MeshConfig(data=-1, tensor=3), "does not fit"),
    (partitioning.MeshConfig(dcn_data=3), "does not divide"),
])
def test_impossible_meshes_are_explained(config, message):
    with pytest.raises(ValueError, match=message):
        config.resolve(8)


def test_logical_rules_put_activations_and_kernels_where_expected():
    mesh = partitioning.make_mesh(partitioning.MeshConfig(data=2, fsdp=2, tensor=2))
    rules = partitioning.logical_rules()
    shard = lambda *names: partitioning.logical_to_sharding(jax.sharding.PartitionSpec(*names), mesh, rules).spec  # noqa: E731
    assert shard("batch", "length", "hidden") == jax.sharding.PartitionSpec(("data", "fsdp"), None, None)
    assert shard("hidden", "mlp") == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert shard("layers", "hidden", "heads", "kv") == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    assert shard("vocab", "embed") == jax.sharding.PartitionSpec("tensor", "fsdp")


def collectives_of(mesh_shape, microbatches, config=CONFIG, local=True):
    mesh, rules, state, step = setup(mesh_shape, microbatches, config, local)
    rows = make_batches(4)  # 32 rows: 4 per device, one per microbatch
    batch = jax.device_put({k: np.concatenate([b[k] for b in rows]) for k in rows[0]},
                           partitioning.batch_sharding(mesh))
    with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):
        text = step.lower(state, batch).compile().as_text()
    return hlo_stats.summarize(hlo_stats.ModuleStats(text).collectives()), len(jax.tree.leaves(state.params))


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_fsdp_gathers_once_and_reduces_once_per_step(dropout):
    """With fsdp and 4 microbatches of a 3-layer shared stack: every collective runs outside the layer and
    microbatch loops, at most one all-gather per parameter and one reduction per gradient (plus a few scalar
    all-reduces of the metrics); the partitioner alone puts them inside the loops."""
    config = CONFIG.replace(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    table, leaves = collectives_of((2, 4, 1), 4, config)
    assert all(row["runs_in_loops"] == 0 for row in table.values()), table
    assert table["all-gather"]["runs_per_step"] <= leaves
    reductions = table.get("reduce-scatter", {}).get("runs_per_step", 0) + table["all-reduce"]["runs_per_step"]
    assert reductions <= leaves + 8
    if dropout:
        return
    baseline, _ = collectives_of((2, 4, 1), 4, config, local=False)
    assert sum(row["runs_in_loops"] for row in baseline.values()) >= 3 * 4


def test_dropout_draws_per_device_masks_reproducibly():
    """Dropout through the data-parallel shard_map: every device folds its index into the key (a run repeats
    bit for bit on the same mesh; masks differ from the single-device run's, so the loss differs a little)."""
    config = CONFIG.replace(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    first, _, _ = run((2, 2, 1), make_batches(2), microbatches=2, config=config)
    again, _, _ = run((2, 2, 1), make_batches(2), microbatches=2, config=config)
    single, _, _ = run((1, 1, 1), make_batches(2), microbatches=2, config=config)
    assert first == again and np.all(np.isfinite(first))
    assert first != single
    np.testing.assert_allclose(first, single, rtol=0.1)
