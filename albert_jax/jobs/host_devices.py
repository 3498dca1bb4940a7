"""XLA:CPU devices per host: the CPU recipes' split of the cores into data-parallel devices, set before JAX starts.

By default XLA:CPU is one device whose operations spread over the cores. At the demo's small shapes (hidden 128,
batch 64 x 64) many operations are too small to keep two cores busy, so the step leaves part of them idle (1.84
of 2 cores used, against PyTorch's 1.98). Two devices, each taking half the batch under the recipe's data-parallel
mesh, run two independent halves of the step side by side and keep both cores busy; the gradients meet in one
all-reduce. The model, the batch and the update are the same; only the order in which the per-example
gradients are summed changes (docs/PERF.md has the timings and the demo's held-out numbers under it).

It is a choice of the recipe (`host_devices.count` in scale/demo.gin), not a default: at ALBERT-base's shapes one
device already keeps the cores busy and the split gains nothing. It uses JAX's own switch (`jax_num_cpu_devices`),
which must be set before JAX starts its CPU client. Left alone: accelerator hosts (the switch is for XLA:CPU's
devices only), a process whose user chose the count (`JAX_NUM_CPU_DEVICES`, or XLA's
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
