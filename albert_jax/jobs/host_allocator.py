"""glibc's allocator tuned for XLA:CPU, set by the train job before JAX starts when the recipe asks and JAX runs on the CPU.

Every XLA:CPU execution allocates its temporary buffers as one block (108 MiB for the demo's train step) on one
of the runtime's worker threads and frees it at the end. glibc serves a block that large from a fresh `mmap`
(a worker thread's arena cannot hold it: non-main arenas are capped at 64 MiB), so each step the kernel maps,
zero-fills and unmaps it again: ~30,000 page faults and ~60 ms of system time per demo step, a quarter of the
step (docs/PERF.md). With one arena (the main one, which grows without a cap), a 1 GiB mmap threshold and a
1 GiB trim threshold the block is taken from the heap once and reused every step. The price is that freed
memory up to 1 GiB stays with the process, which is fine for a training job.

It is a choice of the recipe, not a default: one arena costs a few seconds of compile-time allocator contention
(a 12-step tiny run took ~20% longer), which a long CPU run earns back many times and a short one does not. The
demo recipe switches it on (`tune_host_allocator.enabled = True` in scale/demo.gin); the train job applies it
before JAX starts its CPU client, which it must: a thread keeps the arena it first allocated from.

No library sets this (it is process-wide C-allocator state, not an XLA option), hence these few lines.
Accelerator hosts are left alone (their step buffers live on the device); so is a process whose user set
glibc's own malloc variables, and any C library without `mallopt`.
"""

from __future__ import annotations

import ctypes
import glob
import os

import gin

M_TRIM_THRESHOLD = -1  # glibc <malloc.h> parameter numbers
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
THRESHOLD_BYTES = 1 << 30
USER_SETTINGS = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")  # and glibc.malloc.* tunables
ACCELERATOR_NODES = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*", "/dev/kfd")  # TPU, TPU, GPU, ROCm
OPT_OUT = "ALBERT_JAX_DEFAULT_ALLOCATOR"  # set (to anything) to keep glibc's defaults whatever the recipe says


def runs_on_cpu(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Whether JAX will pick the CPU: JAX_PLATFORMS names only 'cpu', or it is unset and the machine has no
    TPU or GPU device node. Decided before JAX starts (starting it to ask would be too late, see above)."""
    platforms = [p.strip() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms:
        return all(platform == "cpu" for platform in platforms)
    return not any(glob.glob(pattern) for pattern in ACCELERATOR_NODES)


def user_chose(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Whether the process was started with glibc malloc settings of the user's own (which win)."""
    return any(name in environ for name in USER_SETTINGS) or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")


def tune_for_xla_cpu(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Applies the settings above when they are wanted and possible; returns whether they were applied."""
    # JAX has no public "has a backend started?" (jaxlib 0.10.2); importing it starts nothing, nor does asking.
    from jax._src import xla_bridge

    if environ.get(OPT_OUT) or user_chose(environ) or not runs_on_cpu(environ):
        return False
    if xla_bridge.backends_are_initialized():
        return False  # too late: the runtime's threads have their arenas (this process's other jobs ran first)
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(parameter, value) == 1 for parameter, value in
               ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, THRESHOLD_BYTES), (M_TRIM_THRESHOLD, THRESHOLD_BYTES)))


@gin.configurable
def tune_host_allocator(enabled: bool = False) -> bool:
    """The recipe's switch (`tune_host_allocator.enabled`); returns whether the tuning is now in force."""
    return enabled and tune_for_xla_cpu()
