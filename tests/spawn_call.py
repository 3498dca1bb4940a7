"""Runs a function of a `*_reference` module by name, for a spawned worker process (imports nothing heavy)."""

from __future__ import annotations

import importlib
from typing import Any


def call(module: str, function: str, *args: Any) -> Any:
    """`module.function(*args)`, the module imported in this (worker) process."""
    return getattr(importlib.import_module(module), function)(*args)
