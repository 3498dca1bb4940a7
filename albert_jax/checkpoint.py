"""Orbax checkpoints of a run: train state, data-iterator state (one file per process), and the config.

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames it when complete, so a
half-written checkpoint is never listed); the manager keeps the last `max_to_keep`. Restoring takes an
abstract state whose leaves carry the target shardings, so a checkpoint saved on one mesh restores onto any
other mesh or device count.
"""

from __future__ import annotations

import json
import os
from typing import Any

import gin
import grain.checkpoint
import jax
import numpy as np
import orbax.checkpoint as ocp

STATE, DATA, CONFIG = "state", "data", "config"


class FrozenIteratorState:
    """The iterator state captured at save time; grain's handler calls `get_state()` possibly later (async)."""

    def __init__(self, state: Any) -> None:
        self._state = state if isinstance(state, bytes) else json.dumps(state).encode()

    def get_state(self) -> bytes:
        return self._state


@gin.configurable
def make_manager(workdir: str, save_every_steps: int = 1000, keep: int = 3,
                 async_save: bool = True) -> ocp.CheckpointManager:
    """A CheckpointManager under WORKDIR/checkpoints.

    Args:
      save_every_steps: periodic save interval (a final save happens at the end regardless).
      keep: how many of the most recent checkpoints to keep.
      async_save: write in a background thread while training continues.
    """
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=save_every_steps,
                                           enable_async_checkpointing=async_save, create=True)
    handlers = {STATE: ocp.StandardCheckpointHandler(), DATA: grain.checkpoint.CheckpointHandler(),
                CONFIG: ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")), options=options,
                                 item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, state: Any, iterator_state: Any | None,
         config: dict[str, Any], force: bool = False) -> bool:
    """Saves (if due, or if `force`) state, iterator state and config at `step`; returns whether it saved."""
    items = {STATE: ocp.args.StandardSave(state), CONFIG: ocp.args.JsonSave(config)}
    if iterator_state is not None:
        items[DATA] = grain.checkpoint.CheckpointSave(FrozenIteratorState(iterator_state))
    return manager.save(step, args=ocp.args.Composite(**items), force=force)


class _IteratorStateSink:
    """Receives the restored iterator state from grain's handler."""

    state: bytes | None = None

    def set_state(self, state: bytes) -> None:
        self.state = state

    def start_prefetch(self) -> None:
        pass

    def get_state(self) -> bytes:
        return self.state or b"{}"


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None,
            with_iterator: bool = True) -> tuple[int, Any, Any | None, dict[str, Any]]:
    """Restores (step, state, iterator state or None, config) from `step` or the latest checkpoint.

    `abstract_state` is a tree of jax.ShapeDtypeStruct with `sharding` set: the restored arrays land there.
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"No checkpoint in {manager.directory}.")
    if step not in manager.all_steps():
        raise FileNotFoundError(f"No checkpoint for step {step} in {manager.directory}; "
                                f"available steps: {sorted(manager.all_steps())}.")
    items = {STATE: ocp.args.StandardRestore(abstract_state), CONFIG: ocp.args.JsonRestore()}
    sink = _IteratorStateSink()
    data_dir = os.path.join(str(manager.directory), str(step), DATA)
    if with_iterator and os.path.isdir(data_dir):
        items[DATA] = grain.checkpoint.CheckpointRestore(sink)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**items))
    except (OSError, ValueError, KeyError) as error:
        older = [s for s in manager.all_steps() if s < step]
        hint = f" or restore an older one with --step={max(older)}" if older else ""
        raise RuntimeError(
            f"Checkpoint {manager.directory}/{step} is damaged or incompatible with this model "
            f"({type(error).__name__}: {str(error).splitlines()[0][:300]}). Delete that directory{hint}; "
            f"if the model config changed, restore with the config.gin saved in the workdir.") from error
    iterator_state = json.loads(sink.state) if sink.state is not None else None
    return step, restored[STATE], iterator_state, restored[CONFIG]


def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
    """Attaches target shardings to an abstract state (what `restore` needs)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def restore_numpy(directory: str | os.PathLike, subtree: str | None = None) -> Any:
    """An orbax pytree checkpoint (or only its `subtree` entry) as host numpy arrays, whatever the device count
    or mesh it was saved from (a restore without a target refuses a different topology)."""
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(directory).item_metadata.tree
        item = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), tree if subtree is None else
                            {subtree: tree[subtree]})
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
        restored = checkpointer.restore(directory, args=ocp.args.PyTreeRestore(
            item=item, restore_args=restore_args, partial_restore=subtree is not None))
    return restored if subtree is None else restored[subtree]
