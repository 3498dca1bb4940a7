"""Runs launch.py with one fault: process KILL_PROCESS SIGKILLs itself right after starting the save of step
KILL_AT_STEP, while that save is still in flight (its arrays written in orbax's background thread, the step not
yet committed by process 0). Used by test_reliability to kill one of two processes mid-save.

Usage: python tests/kill_mid_save.py launch.py ARGS...   (with KILL_AT_STEP and KILL_PROCESS in the environment)
"""

from __future__ import annotations

import os
import runpy
import signal
import sys

import jax
import orbax.checkpoint as ocp

_original_save = ocp.CheckpointManager.save


def _save_then_die(self, step, *args, **kwargs):
    started = _original_save(self, step, *args, **kwargs)
    if started and step == int(os.environ["KILL_AT_STEP"]) and jax.process_index() == int(os.environ["KILL_PROCESS"]):
        print(f"kill_mid_save: process {jax.process_index()} killed while saving step {step}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return started


ocp.CheckpointManager.save = _save_then_die

if __name__ == "__main__":
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
