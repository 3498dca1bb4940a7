"""XLA:CPU compiler flags the project sets when, and only when, it runs on the CPU.

`configure()` appends `CPU_FLAGS` to the `XLA_FLAGS` environment variable. It must run before jax starts its
backend (XLA reads the variable once, when the first client is created), so the command line calls it first
thing. It changes nothing when

  - an accelerator is in use or may be: `JAX_PLATFORMS` names anything but `cpu`, or (with `JAX_PLATFORMS`
    unset) a TPU or GPU device node is present (`/dev/accel*`, `/dev/vfio/[0-9]*`, `/dev/nvidia[0-9]*`);
  - `ALBERT_JAX_CPU_FLAGS=0` is set (the escape hatch, e.g. to measure XLA's defaults);
  - the user already set a flag of the same name in `XLA_FLAGS`: theirs wins, flag by flag.

All flags are `xla_cpu_*`: only XLA's CPU compiler reads them. Why each one is there, and what it bought, is
measured in docs/PERF.md ("Training step").
"""

from __future__ import annotations

import glob
import os
from typing import MutableMapping

# Flag -> why. Measured on the 2-core AVX-512 CI machine class; see docs/PERF.md.
CPU_FLAGS: dict[str, str] = {}

ACCELERATOR_DEVICES = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*")


def on_cpu_only(environ: MutableMapping[str, str] = os.environ) -> bool:
    """True when jax will run on the CPU backend only (decided without starting jax)."""
    platforms = environ.get("JAX_PLATFORMS", environ.get("JAX_PLATFORM_NAME", "")).strip().lower()
    if platforms:
        return platforms == "cpu"
    return not any(glob.glob(pattern) for pattern in ACCELERATOR_DEVICES)


def _flag_name(flag: str) -> str:
    return flag.lstrip("-").split("=", 1)[0]


def configure(environ: MutableMapping[str, str] = os.environ,
              flags: MutableMapping[str, str] | None = None) -> list[str]:
    """Adds the CPU flags the user has not set to `environ['XLA_FLAGS']`; returns the flags it added.

    A no-op (returns []) off the CPU, with `ALBERT_JAX_CPU_FLAGS=0`, or when every flag is already set.
    """
    flags = CPU_FLAGS if flags is None else flags
    if environ.get("ALBERT_JAX_CPU_FLAGS", "1") == "0" or not on_cpu_only(environ):
        return []
    existing = environ.get("XLA_FLAGS", "").split()
    taken = {_flag_name(flag) for flag in existing}
    added = [flag for flag in flags if _flag_name(flag) not in taken]
    if added:
        environ["XLA_FLAGS"] = " ".join(existing + added)
    return added
