"""Orbax checkpoints: restore onto other meshes, iterator state round trip, half-written checkpoints ignored."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from albert_jax import checkpoint, optim, partitioning
from albert_jax import train_step as steps
from albert_jax.config import AlbertConfig
from albert_jax.model import init_params

CONFIG = AlbertConfig(vocab_size=64, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=64, max_position_embeddings=16)


def state_on(mesh_shape):
    data, fsdp, tensor = mesh_shape
    devices = jax.devices()[: data * fsdp * tensor]
    mesh = partitioning.make_mesh(partitioning.MeshConfig(data=data, fsdp=fsdp, tensor=tensor), devices)
    boxed = jax.eval_shape(lambda: init_params(CONFIG, jax.random.PRNGKey(0)))
    tx = optim.make_optimizer(boxed, learning_rate=1e-3)
    abstract, shardings = steps.state_shardings(CONFIG, tx, mesh, partitioning.DEFAULT_RULES)
    return mesh, tx, abstract, shardings


def test_restore_on_other_meshes(tmp_path):
    mesh, tx, _, _ = state_on((2, 2, 2))
    state = steps.create_state(CONFIG, tx, mesh, partitioning.DEFAULT_RULES, seed=3)
    manager = checkpoint.make_manager(str(tmp_path), save_every_steps=1)
    iterator_state = {"next_index": 17, "epoch": 2}
    assert checkpoint.save(manager, 5, state, iterator_state, {"note": "x"}, force=True)
    manager.wait_until_finished()
    want = jax.device_get(state)
    for shape in [(1, 1, 1), (4, 1, 1), (1, 2, 2)]:
        _, _, abstract, shardings = state_on(shape)
        target = checkpoint.abstract_with_shardings(abstract, shardings)
        step, restored, restored_iterator, info = checkpoint.restore(checkpoint.make_manager(str(tmp_path)), target)
        assert step == 5 and restored_iterator == iterator_state and info == {"note": "x"}
        for got, expected in zip(jax.tree.leaves(restored), jax.tree.leaves(want)):
            np.testing.assert_array_equal(np.asarray(got), expected)
        leaf = restored.params["albert"]["encoder"]["shared_layer"]["ffn"]["kernel"]
        assert len(leaf.sharding.device_set) == int(np.prod(shape))


def test_parameter_restores_read_the_state_item_without_warnings(tmp_path, caplog):
    """Fine-tuning and eval read only the params of `<step>/state`; orbax must not warn that the item directory
    lacks the step-level `_CHECKPOINT_METADATA` (it lives one level up, the manager's)."""
    mesh, tx, _, shardings = state_on((2, 2, 2))
    state = steps.create_state(CONFIG, tx, mesh, partitioning.DEFAULT_RULES, seed=3)
    manager = checkpoint.make_manager(str(tmp_path), save_every_steps=1)
    assert checkpoint.save(manager, 5, state, {"next_index": 0}, {}, force=True)
    manager.wait_until_finished()
    want = jax.device_get(state.params)
    caplog.set_level("WARNING")
    on_host = checkpoint.restore_params(str(tmp_path), 5)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), want)
    on_mesh = checkpoint.restore_params_on_mesh(str(tmp_path), 5, abstract, shardings.params)
    for restored in (on_host, on_mesh):
        for got, expected in zip(jax.tree.leaves(restored), jax.tree.leaves(want)):
            np.testing.assert_array_equal(np.asarray(got), expected)
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "orbax" in (r.pathname or "")], [
        r.getMessage() for r in caplog.records]


def test_half_written_checkpoint_is_ignored(tmp_path):
    mesh, tx, abstract, shardings = state_on((1, 1, 1))
    state = steps.create_state(CONFIG, tx, mesh, partitioning.DEFAULT_RULES, seed=0)
    manager = checkpoint.make_manager(str(tmp_path), save_every_steps=1)
    checkpoint.save(manager, 1, state, None, {}, force=True)
    manager.wait_until_finished()
    # What a crash mid-save leaves behind: orbax's temporary directory for step 2, never renamed.
    os.makedirs(tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1234" / "state")
    fresh = checkpoint.make_manager(str(tmp_path))
    assert fresh.latest_step() == 1
    step, _, iterator_state, _ = checkpoint.restore(fresh, checkpoint.abstract_with_shardings(abstract, shardings))
    assert step == 1 and iterator_state is None


def test_missing_step_is_a_clear_error(tmp_path):
    _, _, abstract, shardings = state_on((1, 1, 1))
    manager = checkpoint.make_manager(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        checkpoint.restore(manager, checkpoint.abstract_with_shardings(abstract, shardings))


def test_damaged_checkpoint_names_the_fix(tmp_path):
    mesh, tx, abstract, shardings = state_on((1, 1, 1))
    state = steps.create_state(CONFIG, tx, mesh, partitioning.DEFAULT_RULES, seed=0)
    manager = checkpoint.make_manager(str(tmp_path), save_every_steps=1)
    for step in (1, 2):
        checkpoint.save(manager, step, state, None, {}, force=True)
    manager.wait_until_finished()
    state_dir = tmp_path / "checkpoints" / "2" / "state"
    for root, _, files in os.walk(state_dir):
        for name in files:
            if name != "_CHECKPOINT_METADATA":
                os.remove(os.path.join(root, name))
    with pytest.raises(RuntimeError, match=r"damaged.*--step=1"):
        checkpoint.restore(checkpoint.make_manager(str(tmp_path)),
                           checkpoint.abstract_with_shardings(abstract, shardings))


def test_each_damaged_part_is_named_and_the_newest_good_step_is_used(tmp_path):
    mesh, tx, abstract, shardings = state_on((1, 1, 1))
    target = checkpoint.abstract_with_shardings(abstract, shardings)
    manager = checkpoint.make_manager(str(tmp_path), save_every_steps=1)
    states = {}
    for step in (1, 2, 3):
        states[step] = steps.create_state(CONFIG, tx, mesh, partitioning.DEFAULT_RULES, seed=step)
        checkpoint.save(manager, step, states[step], {"next_index": step}, {"note": step}, force=True)
    manager.wait_until_finished()
    root = tmp_path / "checkpoints"
    for path in (root / "3" / "config").iterdir():  # a truncated copy of the config
        path.write_text(path.read_text()[:5])
    for path in (root / "2" / "data").iterdir():  # a data-iterator file overwritten with garbage
        path.write_bytes(b"\x00\xff garbage")
    fresh = checkpoint.make_manager(str(tmp_path))
    with pytest.raises(checkpoint.CheckpointDamaged, match=r"step 3 .* its config did not restore") as error:
        checkpoint.restore(fresh, target, 3)
    assert error.value.part == checkpoint.CONFIG
    with pytest.raises(checkpoint.CheckpointDamaged, match=r"step 2 .* its data-iterator state did not restore"):
        checkpoint.restore(fresh, target, 2)
    with pytest.raises(checkpoint.CheckpointDamaged, match="step 3"):
        checkpoint.restore_newest_good(fresh, target, str(tmp_path), fallback=False)
    assert checkpoint.finished_steps(tmp_path) == [1, 2, 3]  # --no_fallback moves nothing

    step, state, iterator_state, info = checkpoint.restore_newest_good(fresh, target, str(tmp_path))
    assert (step, iterator_state, info) == (1, {"next_index": 1}, {"note": 1})
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(jax.device_get(states[1]))):
        np.testing.assert_array_equal(np.asarray(got), want)
    assert checkpoint.finished_steps(tmp_path) == [1]
    assert sorted(os.listdir(root / "damaged")) == ["2", "3"]  # set aside for inspection, not deleted
    assert fresh.latest_step() == 1


def test_explicit_restore_step_sets_newer_steps_aside(tmp_path):
    mesh, tx, abstract, shardings = state_on((1, 1, 1))
    target = checkpoint.abstract_with_shardings(abstract, shardings)
    manager = checkpoint.make_manager(str(tmp_path), save_every_steps=1)
    for step in (1, 2, 3):
        state = steps.create_state(CONFIG, tx, mesh, partitioning.DEFAULT_RULES, seed=step)
        checkpoint.save(manager, step, state, {"next_index": step}, {"note": step}, force=True)
    manager.wait_until_finished()
    step, _, iterator_state, _ = checkpoint.restore_newest_good(manager, target, str(tmp_path), restore_step=2)
    assert (step, iterator_state) == (2, {"next_index": 2})
    assert checkpoint.finished_steps(tmp_path) == [1, 2] and manager.latest_step() == 2
    assert os.listdir(tmp_path / "checkpoints" / "superseded") == ["3"]
