"""Registers every gin configurable, so that any experiment file parses whichever job reads it.

A run's config.gin binds the train loop, the evaluator, the data and the model together, and the eval job
reads it back; so gin must know all of them, not only the running job's. The library never imports the jobs,
so this list lives here, on the jobs side, and only the command line (`cli`) and tests import it.
"""

from __future__ import annotations


def register_all() -> None:
    """Imports each module that defines gin configurables (importing registers them, once per module)."""
    from albert_jax import checkpoint, config, describe, optim, partitioning  # noqa: F401
    from albert_jax.downstream import tasks  # noqa: F401
    from albert_jax.input import instances, loader, masking, prepare  # noqa: F401
    from albert_jax.jobs import evaluate, finetune, host_allocator, host_devices, train  # noqa: F401
