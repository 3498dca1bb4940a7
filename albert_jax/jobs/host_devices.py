"""XLA:CPU devices per host: a CPU recipe's split of the cores into data-parallel devices, set before JAX starts.

By default XLA:CPU is one device whose operations spread over the cores. At small shapes many operations are too
small to keep every core busy. Split into N devices under a data-parallel mesh, each device takes 1/N of the
batch and the N parts of the step run side by side, the gradients meeting in one all-reduce. The model, the batch
and the update are the same; only the order in which the per-example gradients are summed changes.

It is a recipe's choice (`host_devices.count`), off by default. On the 2-core demo machine it took 4-8% off the
demo-shape step while the encoder ran as a rolled scan, and 0-3% (within the noise) once the demo recipe unrolled
its two layers, which keeps the cores as busy by itself; so no recipe switches it on today (docs/PERF.md,
`bench/bench_cpu_devices.py` measures it). It uses JAX's own switch (`jax_num_cpu_devices`), which must be set
before JAX starts its CPU client; the train job applies it first thing. Left alone: accelerator hosts (the
switch is for XLA:CPU's devices only), a process whose user chose the count (`JAX_NUM_CPU_DEVICES`, or XLA's
`--xla_force_host_platform_device_count` in XLA_FLAGS), and a process whose JAX already started (another job
ran first in it, as in tests), which keeps the devices it has and says so.
"""

from __future__ import annotations

import os

import gin
import jax

from albert_jax.jobs.host_allocator import runs_on_cpu

XLA_FLAG = "--xla_force_host_platform_device_count"
ENV_VAR = "JAX_NUM_CPU_DEVICES"


def user_chose(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Whether the process was started with a CPU device count of the user's own (which wins)."""
    return ENV_VAR in environ or XLA_FLAG in environ.get("XLA_FLAGS", "")


def split_cpu_into_devices(count: int, environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """Makes XLA:CPU `count` devices if wanted and still possible; returns a line saying what was done, or None
    when there was nothing to do (count 1, or JAX is not going to run on the CPU)."""
    from jax._src import xla_bridge  # no public "has a backend started?" in jaxlib 0.10.2 (as host_allocator)

    if count < 1:
        raise ValueError(f"host_devices.count must be at least 1, got {count}: it is how many XLA:CPU devices "
                         "to split this host's cores into (1 = XLA's single CPU device).")
    if count == 1 or not runs_on_cpu(environ):
        return None
    if user_chose(environ):
        return (f"host devices: the recipe's {count} XLA:CPU devices not applied: the environment already sets "
                f"the count ({ENV_VAR} or {XLA_FLAG} in XLA_FLAGS), which wins")
    if xla_bridge.backends_are_initialized():
        return (f"host devices: the recipe's {count} XLA:CPU devices not applied: JAX already started in this "
                f"process with {jax.local_device_count()} (same training, only the speed differs)")
    jax.config.update("jax_num_cpu_devices", count)
    return f"host devices: XLA:CPU split into {count} data-parallel devices over {os.cpu_count()} cores"


@gin.configurable
def host_devices(count: int = 1) -> str | None:
    """The recipe's switch (`host_devices.count`: XLA:CPU devices to split the host's cores into)."""
    return split_cpu_into_devices(count)
