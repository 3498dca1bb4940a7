"""Runs a function of a `*_reference` module by name, for a spawned worker process (imports nothing heavy)."""

from __future__ import annotations

import importlib
import sys
from typing import Any


def call(module: str, function: str, *args: Any) -> Any:
    """`module.function(*args)`, the module imported in this (worker) process, which must stay free of TensorFlow."""
    result = getattr(importlib.import_module(module), function)(*args)
    if "tensorflow" in sys.modules:
        raise RuntimeError(f"{module}.{function} imported TensorFlow into the torch worker; TensorFlow and triton "
                           "crash in one process, so reference modules import torch/transformers only")
    return result
