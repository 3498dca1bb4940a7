"""`checkpoints verify --workdir RUN`: every checkpoint step of a run, OK / damaged / incomplete, and why.

Each finished step is read back whole (train state as host arrays, config, data-iterator state) and the state is
compared with the per-array checksums recorded when it was saved; a save that never finished (orbax's
temporary directory) is listed as incomplete, and steps that training set aside (checkpoints/damaged/,
checkpoints/superseded/) are listed as such. The exit code is 1 when the newest finished step, the one a resume
or an evaluation would take, is not OK (0 otherwise), so it can guard a copy or an upload. Reads only.

Runs as `albert-jax checkpoints verify --workdir RUN` (or `python -m albert_jax checkpoints verify ...`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from albert_jax import checkpoint, integrity
from albert_jax.jobs import flags


def check_step(workdir: str, step: int) -> tuple[str, str]:
    """(status, why) of one finished step: 'OK', 'damaged' or 'incomplete'."""
    directory = checkpoint.step_dir(workdir, step)
    missing = [part for part in (checkpoint.STATE, checkpoint.CONFIG)
               if not os.path.isdir(os.path.join(directory, part))]
    if missing:
        return "incomplete", f"no {' or '.join(missing)}/ (a copy or upload that did not finish?)"
    try:
        checkpoint.read_config(workdir, step)
        recorded = checkpoint.read_checksums(workdir, step)
    except checkpoint.CheckpointDamaged as error:
        return "damaged", f"{checkpoint.PARTS[error.part]}: {error.reason}"
    try:
        state = checkpoint.restore_numpy(os.path.join(directory, checkpoint.STATE))
    except Exception as error:  # noqa: BLE001 - any read or decode error is the finding
        return "damaged", f"{checkpoint.PARTS[checkpoint.STATE]}: {checkpoint.error_summary(error)}"
    data_dir = os.path.join(directory, checkpoint.DATA)
    for name in sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else []:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(data_dir, name)) as f:
                json.load(f)
        except (OSError, ValueError) as error:
            return "damaged", f"{checkpoint.PARTS[checkpoint.DATA]} {name}: {type(error).__name__}: {error}"
    if recorded is None:
        return "OK", "reads back; no checksums recorded (saved before they were), so its values are unchecked"
    found = integrity.checksums(state)
    bad = [name for name, value in recorded.items() if found.get(name) != value]
    if bad:
        return "damaged", (f"{checkpoint.PARTS[checkpoint.STATE]}: checksum mismatch in {len(bad)} array(s) "
                           f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): the bytes read are not those "
                           f"saved")
    return "OK", f"{len(recorded)} arrays, {integrity.array_bytes(state):,} bytes match their checksums"


def verify(workdir: str) -> tuple[list[tuple[str, str, str]], bool]:
    """([(step label, status, why)], whether the newest finished step is OK)."""
    if not checkpoint.is_run_dir(workdir):
        raise FileNotFoundError(f"{workdir} has no checkpoints/ directory: pass the --workdir of a training run.")
    rows: dict[int, tuple[str, str, str]] = {}
    finished = checkpoint.finished_steps(workdir)
    for step in finished:
        rows[step] = (str(step), *check_step(workdir, step))
    for step, path in checkpoint.unfinished_saves(workdir).items():
        if step not in rows:
            rows[step] = (str(step), "incomplete",
                          f"the save never finished ({os.path.basename(path)}): never taken for a checkpoint")
    ordered = [rows[step] for step in sorted(rows)]
    for why in (checkpoint.DAMAGED, checkpoint.SUPERSEDED):
        aside = os.path.join(checkpoint.checkpoints_dir(workdir), why)
        for name in sorted(os.listdir(aside)) if os.path.isdir(aside) else []:
            ordered.append((f"{why}/{name}", f"set aside ({why})", "moved out of the run by training; not deleted"))
    latest_ok = bool(finished) and rows[finished[-1]][1] == "OK"
    return ordered, latest_ok


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `checkpoints` command's flags: an action and the run directory."""
    parser.add_argument("action", choices=["verify"], help="verify: check every checkpoint step of the run")
    flags.add_workdir(parser, "run directory (holds checkpoints/)", required=True)


def run(args: argparse.Namespace) -> int:
    """Prints one line per step; 0 when the newest finished step is OK, 1 otherwise."""
    try:
        rows, latest_ok = verify(args.workdir)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not rows:
        print(f"{args.workdir}: no checkpoints yet.")
        return 1
    width = max(len(label) for label, _, _ in rows)
    for label, status, why in rows:
        print(f"{label:>{width}}  {status:<10}  {why}")
    if not latest_ok:
        print(f"The newest finished step of {args.workdir} is not OK: training falls back to the newest OK step "
              f"(or pass --restore_step=N); evaluation to the newest that restores.", file=sys.stderr)
    return 0 if latest_ok else 1


if __name__ == "__main__":  # one entry for every job: the CLI
    from albert_jax.jobs import cli

    sys.exit(cli.main(["checkpoints", *sys.argv[1:]]))
