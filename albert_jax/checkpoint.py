"""The run directory: checkpoints of a run (train state, data-iterator state, config, checksums) and its run info.

Layout (this module is its only owner; everything else calls the functions here):
  WORKDIR/run.json                       run info: vocabulary, num_train_steps, data shape (`write_run_info`)
  WORKDIR/checkpoints/<step>/state       orbax arrays of the train state
                            /data        grain iterator state, one file per process
                            /config      the model config and operative gin text (JSON)
                            /integrity   per-array checksums of the state (`albert_jax.integrity`)
  WORKDIR/checkpoints/damaged/<step>     a step that failed to restore, set aside by training, never deleted
  WORKDIR/checkpoints/superseded/<step>  steps newer than an explicit --restore_step, set aside likewise
Saves are asynchronous and atomic (orbax writes a temporary `<step>.orbax-checkpoint-tmp-*` directory and renames
it when every process has finished, so a half-written step is never listed); the manager keeps the last
`keep`. Restoring takes an abstract state whose leaves carry the target shardings, so a checkpoint saved on
one mesh restores onto any other mesh or device count. Every restore is checked against the checksums; a step
that does not restore raises `CheckpointDamaged` naming the step, the part and why, and `restore_newest_good`
falls back to the newest step that does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import gin
import grain.checkpoint
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from albert_jax import integrity

STATE, DATA, CONFIG, INTEGRITY = "state", "data", "config", "integrity"
PARTS = {STATE: "train state (parameters and optimizer)", DATA: "data-iterator state", CONFIG: "config",
         INTEGRITY: "checksum record"}
CHECKPOINTS, RUN_INFO = "checkpoints", "run.json"
DAMAGED, SUPERSEDED = "damaged", "superseded"
TMP_MARK = ".orbax-checkpoint-tmp"


class CheckpointDamaged(RuntimeError):
    """A checkpoint step that cannot be restored: `step`, `part` (a key of PARTS) and `reason`."""

    def __init__(self, directory: str, step: int, part: str, reason: str, hint: str = "") -> None:
        self.directory, self.step, self.part, self.reason = directory, step, part, reason
        super().__init__(f"Checkpoint step {step} ({directory}/{step}) is damaged or incompatible with this model: "
                         f"its {PARTS[part]} did not restore ({reason}).{hint}")


class SaveFailed(RuntimeError):
    """A save that did not complete; earlier checkpoints are untouched."""


# ----------------------------------------------------------------------------------------------- run directory

def checkpoints_dir(workdir: str | os.PathLike) -> str:
    return os.path.join(os.path.abspath(workdir), CHECKPOINTS)


def step_dir(workdir: str | os.PathLike, step: int) -> str:
    return os.path.join(checkpoints_dir(workdir), str(step))


def is_run_dir(path: str | os.PathLike) -> bool:
    return os.path.isdir(checkpoints_dir(path))


def finished_steps(workdir: str | os.PathLike) -> list[int]:
    """The steps whose save completed on every process (orbax renamed them), in order."""
    root = checkpoints_dir(workdir)
    if not os.path.isdir(root):
        return []
    return sorted(int(name) for name in os.listdir(root) if name.isdigit() and os.path.isdir(os.path.join(root, name)))


def unfinished_saves(workdir: str | os.PathLike) -> dict[int, str]:
    """{step: directory} of saves that never completed (a crash, a kill or a failed write mid-save)."""
    root = checkpoints_dir(workdir)
    found = {}
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        head = name.split(TMP_MARK)[0]
        if TMP_MARK in name and head.isdigit():
            found[int(head)] = os.path.join(root, name)
    return found


def write_run_info(workdir: str | os.PathLike, info: dict[str, Any]) -> None:
    """WORKDIR/run.json (process 0): what a later job needs to know about the run without parsing gin."""
    if jax.process_index() != 0:
        return
    path = os.path.join(workdir, RUN_INFO)
    with open(path + ".tmp", "w") as f:
        json.dump(info, f, indent=2)
    os.replace(path + ".tmp", path)


def read_run_info(workdir: str | os.PathLike) -> dict[str, Any] | None:
    """The run info, or None for a run trained before run.json was written."""
    path = os.path.join(workdir, RUN_INFO)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_vocab(workdir: str | os.PathLike) -> str | None:
    """The SentencePiece model the run trained on, from its run info; None when not recorded or gone."""
    info = read_run_info(workdir) or {}
    path = info.get("vocab_path")
    return path if path and os.path.isfile(path) else None


def read_config(workdir: str | os.PathLike, step: int) -> dict[str, Any]:
    """The config item of a step (model config dict under "model", operative gin under "gin")."""
    try:
        with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
            return checkpointer.restore(os.path.join(step_dir(workdir, step), CONFIG))
    except Exception as error:  # noqa: BLE001 - any read or decode error is damage, named as such
        raise CheckpointDamaged(checkpoints_dir(workdir), step, CONFIG, error_summary(error)) from error


def read_checksums(workdir: str | os.PathLike, step: int) -> dict[str, str] | None:
    """The per-array checksums recorded with a step; None for a step saved before they were recorded."""
    path = os.path.join(step_dir(workdir, step), INTEGRITY)
    if not os.path.isdir(path):
        return None
    try:
        with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
            return checkpointer.restore(path)["arrays"]
    except Exception as error:  # noqa: BLE001
        raise CheckpointDamaged(checkpoints_dir(workdir), step, INTEGRITY, error_summary(error)) from error


def set_aside(workdir: str | os.PathLike, steps: list[int], why: str) -> list[str]:
    """Moves steps to checkpoints/<why>/<step> (process 0; never deletes): out of the way of the keep-K policy
    and of new saves at the same step, kept for inspection. Returns the new paths."""
    moved = []
    for step in steps:
        target = os.path.join(checkpoints_dir(workdir), why, f"{step}")
        if os.path.exists(target):
            target += f"-{int(time.time())}"
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.rename(step_dir(workdir, step), target)
        moved.append(target)
    _barrier("albert_jax: checkpoints set aside")
    return moved


# ------------------------------------------------------------------------------------------------ save / restore

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
                CONFIG: ocp.JsonCheckpointHandler(), INTEGRITY: ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(checkpoints_dir(workdir), options=options, item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, state: Any, iterator_state: Any | None,
         config: dict[str, Any], force: bool = False) -> bool:
    """Saves (if due, or if `force`) state, iterator state, config and the state's checksums at `step`; returns
    whether it saved. An error of an earlier asynchronous save is raised here (see `Saver`)."""
    if not force and not manager.should_save(step):
        return False
    items = {STATE: ocp.args.StandardSave(state), CONFIG: ocp.args.JsonSave(config),
             INTEGRITY: ocp.args.JsonSave({"version": 1, "arrays": integrity.checksums(state)})}
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


def error_summary(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if len(first) > 320:  # TensorStore puts the path first and the cause (e.g. "File too large") last
        first = f"{first[:180]} ... {first[-120:]}"
    return f"{type(error).__name__}: {first}"


def _all_processes(ok: bool) -> bool:
    """Whether `ok` holds on every process (one agreed answer, so that all take the same path)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.asarray([ok]))))


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _read_parts(manager: ocp.CheckpointManager, abstract_state: Any, step: int,
                with_iterator: bool) -> dict[str, Any]:
    """Each part of a step read on its own, so that a failure names the part. Local reads only (no collective)."""
    directory = str(manager.directory)
    parts: dict[str, Any] = {}
    sink = _IteratorStateSink()
    wanted = {STATE: ocp.args.StandardRestore(abstract_state), CONFIG: ocp.args.JsonRestore()}
    if with_iterator and os.path.isdir(os.path.join(directory, str(step), DATA)):
        wanted[DATA] = grain.checkpoint.CheckpointRestore(sink)
    if os.path.isdir(os.path.join(directory, str(step), INTEGRITY)):
        wanted[INTEGRITY] = ocp.args.JsonRestore()
    for name, args in wanted.items():
        try:
            parts[name] = manager.restore(step, args=ocp.args.Composite(**{name: args}))[name]
            if name == DATA:
                parts[name] = json.loads(sink.state) if sink.state is not None else None
        except Exception as error:  # noqa: BLE001 - any read, decode, shape, dtype or metadata error is damage
            raise CheckpointDamaged(directory, step, name, error_summary(error)) from error
    return parts


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None,
            with_iterator: bool = True) -> tuple[int, Any, Any | None, dict[str, Any]]:
    """Restores (step, state, iterator state or None, config) from `step` or the latest checkpoint, verified
    against its checksums; `CheckpointDamaged` (naming the step and the part) when it does not restore.

    `abstract_state` is a tree of jax.ShapeDtypeStruct with `sharding` set: the restored arrays land there.
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"No checkpoint in {manager.directory}.")
    if step not in manager.all_steps():
        raise FileNotFoundError(f"No checkpoint for step {step} in {manager.directory}; "
                                f"available steps: {sorted(manager.all_steps())}.")
    older = [s for s in manager.all_steps() if s < step]
    hint = (f" Restore an older one with --step={max(older)} (eval) or --restore_step={max(older)} (train), or let "
            f"training fall back to the newest good step; if the model config changed, use the config.gin saved in "
            f"the workdir.") if older else " If the model config changed, use the config.gin saved in the workdir."
    failure: CheckpointDamaged | None = None
    try:
        parts = _read_parts(manager, abstract_state, step, with_iterator)
    except CheckpointDamaged as error:
        failure = CheckpointDamaged(error.directory, step, error.part, error.reason, hint)
        failure.__cause__ = error.__cause__
    if not _all_processes(failure is None):
        raise failure or CheckpointDamaged(str(manager.directory), step, STATE,
                                           "another process could not read its part of it", hint)
    recorded = parts.get(INTEGRITY, {}).get("arrays") if INTEGRITY in parts else None
    if recorded is not None:
        bad = integrity.mismatches(recorded, parts[STATE])
        if bad:
            raise CheckpointDamaged(str(manager.directory), step, STATE, _mismatch_reason(bad), hint)
    return step, parts[STATE], parts.get(DATA), parts[CONFIG]


def _mismatch_reason(bad: list[str]) -> str:
    return (f"checksum mismatch in {len(bad)} array{'s' if len(bad) > 1 else ''} ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}): the bytes read are not those saved")


def restore_newest_good(manager: ocp.CheckpointManager, abstract_state: Any, workdir: str,
                        restore_step: int | None = None, fallback: bool = True
                        ) -> tuple[int, Any, Any | None, dict[str, Any]] | None:
    """Resumes training: (step, state, iterator state, config) of `restore_step`, else of the newest step that
    restores, or None when the run has no checkpoint yet.

    A newer step that does not restore is reported (which part, why) and set aside under checkpoints/damaged/ so
    that neither new saves nor the keep-K policy meet it; with `fallback=False` it is an error instead. With an
    explicit `restore_step`, newer steps are set aside under checkpoints/superseded/ (training goes on from N).
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if restore_step is not None:
        restored = restore(manager, abstract_state, restore_step)
        newer = [s for s in steps if s > restore_step]
        if newer:
            moved = set_aside(workdir, newer, SUPERSEDED)
            print(f"Restoring step {restore_step} as asked: newer steps {sorted(newer)} moved to "
                  f"{os.path.dirname(moved[0])}/ (not deleted).", flush=True)
            manager.reload()
        return restored
    skipped: list[CheckpointDamaged] = []
    for step in steps:
        try:
            restored = restore(manager, abstract_state, step)
        except CheckpointDamaged as error:
            if not fallback:
                raise
            print(f"warning: {error}", flush=True)
            skipped.append(error)
            continue
        if skipped:
            moved = set_aside(workdir, [e.step for e in skipped], DAMAGED)
            print(f"warning: skipped damaged step{'s' if len(skipped) > 1 else ''} "
                  f"{', '.join(str(e.step) for e in skipped)} (moved to {os.path.dirname(moved[0])}/ for "
                  f"inspection, not deleted); resuming from step {step}, the newest checkpoint that restores.",
                  flush=True)
            manager.reload()
        return restored
    if skipped:
        raise RuntimeError(f"No checkpoint of {manager.directory} restores (tried steps "
                           f"{', '.join(str(e.step) for e in skipped)}; the newest failed with: {skipped[0].reason}). "
                           f"If the model config changed, train with the config.gin saved in the workdir; otherwise "
                           f"check them with `python -m albert_jax.jobs.checkpoints verify --workdir {workdir}`.")
    return None


@gin.configurable
class Saver:
    """Saves on schedule and applies the policy for saves that fail (no space, permission, an I/O error in the
    asynchronous writer): orbax never renames a failed save into a step, so earlier checkpoints stay intact.

    Args:
      on_failure: 'retry' reports the failure and keeps training, saving again at the next interval (stopping
        after `max_failed_saves` failures in a row); 'stop' ends the run at the first failed save.
      max_failed_saves: consecutive failed saves tolerated by 'retry'.
    """

    def __init__(self, manager: ocp.CheckpointManager, on_failure: str = "retry", max_failed_saves: int = 3) -> None:
        if on_failure not in ("retry", "stop"):
            raise ValueError(f"Saver.on_failure={on_failure!r}: use 'retry' or 'stop'.")
        self.manager, self.on_failure, self.max_failed_saves = manager, on_failure, max_failed_saves
        self.failures, self._pending = 0, None

    def last_good_step(self, exclude: int | None = None) -> int | None:
        steps = [s for s in self.manager.all_steps() if s != exclude]
        return max(steps) if steps else None

    def save(self, step: int, state: Any, iterator_state: Any, config: dict[str, Any], force: bool = False) -> bool:
        """`checkpoint.save` under the failure policy; returns whether a save started."""
        if not force and not self.manager.should_save(step):
            return False
        self._guard(self.manager.wait_until_finished)  # the previous save's failure is named by its own step
        self._pending = step
        ok, started = self._guard(lambda: save(self.manager, step, state, iterator_state, config, force=force))
        if ok and not started:
            self._pending = None
        return bool(started)

    def wait(self) -> None:
        """Waits for the pending save; a failure is reported and raised (the run ends without a good last save)."""
        self._guard(self.manager.wait_until_finished, final=True)

    def _guard(self, action: Any, final: bool = False) -> tuple[bool, Any]:
        error: BaseException | None = None
        try:
            result = action()
        except Exception as caught:  # noqa: BLE001 - whatever the writer raised is reported by the policy
            error, result = caught, None
        if _all_processes(error is None):
            if self._pending is not None and action == self.manager.wait_until_finished:
                self.failures, self._pending = 0, None  # the pending save completed
            return True, result
        failed, self._pending = self._pending, None
        self.failures += 1
        last = self.last_good_step(exclude=failed)
        why = error_summary(error) if error else "on another process"
        message = (f"Saving checkpoint step {failed} failed ({why}); earlier checkpoints are intact and no partial "
                   f"step {failed} is listed; the last good step is {last}.")
        if self.on_failure == "stop" or final or self.failures >= self.max_failed_saves:
            raise SaveFailed(message + (f" {self.failures} saves failed in a row." if self.failures > 1 else "")
                             + " Free space or fix the checkpoint directory, then run the same command again to "
                             "resume from it.") from error
        print(f"warning: {message} Training goes on and saves again at the next interval (Saver.on_failure='retry', "
              f"{self.max_failed_saves - self.failures} more failure(s) in a row allowed).", flush=True)
        return False, None


# ------------------------------------------------------------------------------------------- params-only restore

def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
    """Attaches target shardings to an abstract state (what `restore` needs)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


@contextlib.contextmanager
def _pytree_reader() -> Iterator[ocp.PyTreeCheckpointHandler]:
    """orbax's pytree handler, used directly on an item directory (`<step>/state`): the step's
    `_CHECKPOINT_METADATA` is one level up, the manager's, so a `Checkpointer` would warn that the item has none."""
    handler = ocp.PyTreeCheckpointHandler()
    try:
        yield handler
    finally:
        handler.close()


def restore_numpy(directory: str | os.PathLike, subtree: str | None = None) -> Any:
    """An orbax pytree checkpoint (or only its `subtree` entry) as host numpy arrays, whatever the device count
    or mesh it was saved from (a restore without a target refuses a different topology)."""
    directory = Path(directory)
    with _pytree_reader() as reader:
        tree = reader.metadata(directory).tree
        item = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), tree if subtree is None else
                            {subtree: tree[subtree]})
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
        restored = reader.restore(directory, args=ocp.args.PyTreeRestore(
            item=item, restore_args=restore_args, partial_restore=subtree is not None))
    return restored if subtree is None else restored[subtree]


def _verified(workdir: str | os.PathLike, step: int, tree: Any, prefix: str) -> Any:
    recorded = read_checksums(workdir, step)
    if recorded is not None:
        bad = integrity.mismatches(recorded, tree, prefix)
        if bad:
            raise CheckpointDamaged(checkpoints_dir(workdir), step, STATE, _mismatch_reason(bad))
    return tree


def restore_params(workdir: str | os.PathLike, step: int) -> Any:
    """The parameters (only: the optimizer state stays on disk) of a step as host numpy arrays, verified."""
    try:
        params = restore_numpy(Path(step_dir(workdir, step)) / STATE, "params")
    except Exception as error:  # noqa: BLE001
        raise CheckpointDamaged(checkpoints_dir(workdir), step, STATE, error_summary(error)) from error
    return _verified(workdir, step, params, "params/")


def restore_params_on_mesh(workdir: str | os.PathLike, step: int, abstract: Any, shardings: Any) -> Any:
    """The parameters of a step restored straight onto `shardings` (any mesh or device count), verified."""
    args = jax.tree.map(lambda a, s: ocp.ArrayRestoreArgs(sharding=s, global_shape=a.shape, dtype=a.dtype),
                        abstract, shardings)
    failure: CheckpointDamaged | None = None
    try:
        with _pytree_reader() as reader:
            params = reader.restore(Path(step_dir(workdir, step)) / STATE, args=ocp.args.PyTreeRestore(
                item={"params": abstract}, restore_args={"params": args}, partial_restore=True))["params"]
    except Exception as error:  # noqa: BLE001
        failure = CheckpointDamaged(checkpoints_dir(workdir), step, STATE, error_summary(error))
    if not _all_processes(failure is None):
        raise failure or CheckpointDamaged(checkpoints_dir(workdir), step, STATE, "another process could not read it")
    return _verified(workdir, step, params, "params/")
