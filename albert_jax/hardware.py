"""Accelerator chips and TPU slice names: the one table of peak FLOP/s, HBM and interconnect bandwidths.

Every figure is per chip (a v4 / v5p chip runs its two TensorCores as one "megacore" JAX device, so one JAX
device is one chip on every generation listed), dense (no sparsity) bf16, from the vendor's spec page named in
`source`. Bandwidths are bytes/s: HBM per chip; ICI the per-chip bidirectional inter-chip total; DCN the
per-chip share of the host's data-center network. Slice names follow Cloud TPU's accelerator types: `v4-N` and
`v5p-N` count TensorCores (N / 2 chips), `v5e-N` and `v6e-N` count chips.
"""

from __future__ import annotations

import dataclasses
import math
import re

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator chip generation."""

    name: str
    device_kinds: tuple[str, ...]  # jax `device.device_kind` strings of this chip
    peak_bf16_flops: float  # dense bf16 FLOP/s
    hbm_bytes: float
    hbm_bandwidth: float  # bytes/s
    ici_bandwidth: float  # bytes/s, bidirectional, per chip (NVLink for GPUs)
    dcn_bandwidth: float  # bytes/s per chip across slices / hosts
    topology_prefix: str = ""  # libtpu topology name prefix ("v5" for v5p); "" = not a TPU
    cores_per_chip: int = 1  # TensorCores per chip (slice names of v4 / v5p count cores)
    dims: int = 2  # torus dimensions of a slice
    source: str = ""


CHIPS: dict[str, Chip] = {
    "v4": Chip("v4", ("TPU v4",), 275e12, 32 * GIB, 1200e9, 6 * 50e9, 50e9 / 8, "v4", 2, 3,
               "cloud.google.com/tpu/docs/v4 (275 TFLOP/s, 32 GiB, 1200 GB/s); ICI: 6 links per chip (TPU v4 "
               "paper, Jouppi et al. 2023) at ~50 GB/s each, approximate; DCN not published, v5p's assumed"),
    "v5e": Chip("v5e", ("TPU v5 lite", "TPU v5e"), 197e12, 16 * GIB, 819e9, 400e9, 200e9 / 8 / 8, "v5e", 1, 2,
                "cloud.google.com/tpu/docs/v5e (197 TFLOP/s, 16 GB, 819 GB/s, ICI 400 GB/s bidirectional; "
                "DCN 2 x 100 Gb/s NICs per 8-chip host)"),
    "v5p": Chip("v5p", ("TPU v5", "TPU v5p"), 459e12, 95 * GIB, 2765e9, 1200e9, 50e9 / 8, "v5", 2, 3,
                "cloud.google.com/tpu/docs/v5p (459 TFLOP/s, 95 GiB, 2765 GB/s, ICI 1200 GB/s bidirectional, "
                "DCN 50 Gb/s per chip)"),
    "v6e": Chip("v6e", ("TPU v6 lite", "TPU v6e"), 918e12, 32 * GIB, 1638e9, 800e9, 50e9 / 8, "v6e", 1, 2,
                "cloud.google.com/tpu/docs/v6e (918 TFLOP/s, 32 GB, 1638 GB/s, ICI 800 GB/s bidirectional); "
                "DCN per chip not published, v5p's 50 Gb/s assumed"),
    "a100": Chip("a100", ("NVIDIA A100",), 312e12, 80e9, 2039e9, 600e9, 25e9,  # DCN: 200 Gb/s IB per GPU
                 source="NVIDIA A100 datasheet (SXM 80 GB: 312 TFLOP/s bf16 dense, 2039 GB/s, NVLink 600 GB/s)"),
    "h100": Chip("h100", ("NVIDIA H100",), 989e12, 80e9, 3350e9, 900e9, 50e9,  # DCN: 400 Gb/s IB per GPU
                 source="NVIDIA H100 datasheet (SXM: 989 TFLOP/s bf16 dense, 3.35 TB/s, NVLink 900 GB/s)"),
    "h200": Chip("h200", ("NVIDIA H200",), 989e12, 141e9, 4800e9, 900e9, 50e9,  # DCN: 400 Gb/s IB per GPU
                 source="NVIDIA H200 datasheet (SXM: 1979 TFLOP/s bf16 with sparsity = 989 dense, 141 GB HBM3e, "
                        "4.8 TB/s, NVLink 900 GB/s)"),
}


def chip_for_device_kind(device_kind: str) -> Chip | None:
    """The chip whose device kind is the longest prefix of `device_kind` ("TPU v5 lite" before "TPU v5")."""
    best: tuple[int, Chip] | None = None
    for chip in CHIPS.values():
        for kind in chip.device_kinds:
            if device_kind.startswith(kind) and (best is None or len(kind) > best[0]):
                best = (len(kind), chip)
    return best[1] if best else None


@dataclasses.dataclass(frozen=True)
class Slice:
    """A TPU slice: its chip, libtpu topology name and chip count."""

    name: str  # as the user wrote it ("v5p-64")
    chip: Chip
    topology_name: str  # libtpu's ("v5:2x4x4")
    num_chips: int

    @property
    def chip_config_name(self) -> str:
        return "megacore" if self.chip.cores_per_chip == 2 else "default"

    @property
    def chips_per_host_bounds(self) -> tuple[int, int, int]:
        dims = [int(d) for d in self.topology_name.split(":")[1].split("x")] + [1]
        return (min(dims[0], 2), min(dims[1], 2), 1)


def _torus_shape(chips: int, dims: int) -> list[int]:
    """Slice shape of `chips` (a power of two) as Cloud TPU names it: 2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, ... in
    3-D; 2x2, 2x4, 4x4, 4x8, ... in 2-D."""
    shape = [1] * dims
    i = 0
    while math.prod(shape) < chips:
        shape[i % dims] *= 2
        i += 1
    return sorted(shape) if math.prod(shape) > 4 or dims == 2 else sorted(shape, reverse=True)


def parse_slice(name: str) -> Slice:
    """`v5p-64` (cores for v4 / v5p, chips for v5e / v6e) or a raw libtpu name such as `v5:2x4x4` -> Slice."""
    known = ", ".join(k for k, c in CHIPS.items() if c.topology_prefix)
    match = re.fullmatch(r"(v4|v5p|v5e|v6e)-(\d+)", name.strip().lower())
    if match:
        chip = CHIPS[match.group(1)]
        count = int(match.group(2))
        chips, rem = divmod(count, chip.cores_per_chip)
        if rem or chips < 1 or chips & (chips - 1):
            raise ValueError(f"--topology={name}: {chip.name}-N takes N = {chip.cores_per_chip} x a power-of-two "
                             f"number of chips (e.g. {chip.name}-{8 * chip.cores_per_chip}).")
        shape = _torus_shape(chips, chip.dims)
        return Slice(name, chip, f"{chip.topology_prefix}:{'x'.join(map(str, shape))}", chips)
    match = re.fullmatch(r"(v4|v5|v5e|v6e):(\d+(?:x\d+){1,2})", name.strip().lower())
    if match:
        prefix = {"v4": "v4", "v5": "v5p", "v5e": "v5e", "v6e": "v6e"}[match.group(1)]
        shape = [int(d) for d in match.group(2).split("x")]
        return Slice(name, CHIPS[prefix], name.strip().lower(), math.prod(shape))
    raise ValueError(f"--topology={name!r} is not a TPU slice name: write GENERATION-N with GENERATION one of "
                     f"{known} (v4-32, v5p-64, v5e-16, v6e-8) or a libtpu topology such as v5:2x4x4.")
