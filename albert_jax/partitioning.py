"""The device mesh and the logical-axis rules that map the model's axis names onto it.

Mesh axes: `data` (pure data parallelism), `fsdp` (data parallelism with parameters and optimizer state
sharded), `tensor` (Megatron-style splitting of heads, FFN and vocab). The model names every parameter and
main activation with logical axes (batch, length, embed, hidden, mlp, heads, kv, vocab, layers); the rules
below say which mesh axis each logical name lands on, so changing the parallelism never touches the model.
Flax applies rules in order and skips a rule whose mesh axis a tensor already uses: activations
[batch, length, hidden] put batch on (data, fsdp) and leave hidden unsharded, while a kernel [hidden, mlp]
puts hidden on fsdp and mlp on tensor.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
DATA_AXES = ("data", "fsdp")  # the axes that split the batch

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("hidden", "fsdp"),
    ("embed", "fsdp"),
    ("kv", None),
    ("length", None),
    ("layers", None),
)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh shape per slice (-1 = all remaining devices) and, for multi-slice pods, slices per axis."""

    data: int = -1  # pure data-parallel ways within a slice
    fsdp: int = 1  # parameter-sharded data-parallel ways within a slice
    tensor: int = 1  # tensor-parallel ways within a slice
    dcn_data: int = 1  # slices stacked along `data` over the data-center network (hybrid mesh)

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        """Per-slice (data, fsdp, tensor) sizes with -1 filled in; a clear error if they cannot fit."""
        per_slice, rem = divmod(num_devices, self.dcn_data)
        if rem:
            raise ValueError(f"MeshConfig.dcn_data={self.dcn_data} does not divide the {num_devices} devices.")
        sizes = [self.data, self.fsdp, self.tensor]
        unknown = [i for i, s in enumerate(sizes) if s == -1]
        if len(unknown) > 1:
            raise ValueError("At most one of MeshConfig.data/fsdp/tensor may be -1.")
        known = math.prod(s for s in sizes if s != -1)
        if any(s == 0 or s < -1 for s in sizes):
            raise ValueError(f"Mesh sizes must be positive or -1, got data={self.data}, fsdp={self.fsdp}, "
                             f"tensor={self.tensor}.")
        if unknown:
            if per_slice % known:
                raise ValueError(f"Mesh (data={self.data}, fsdp={self.fsdp}, tensor={self.tensor}) does not fit "
                                 f"{per_slice} devices per slice: {known} does not divide {per_slice}.")
            sizes[unknown[0]] = per_slice // known
        if math.prod(sizes) != per_slice:
            raise ValueError(f"Mesh (data={sizes[0]}, fsdp={sizes[1]}, tensor={sizes[2]}) needs "
                             f"{math.prod(sizes)} devices per slice but there are {per_slice}. Set one axis to -1 "
                             f"or change the sizes (--gin.MeshConfig.data=...).")
        return sizes[0], sizes[1], sizes[2]


def make_mesh(config: MeshConfig | None = None, devices: Sequence[Any] | None = None) -> Mesh:
    """Builds the (data, fsdp, tensor) mesh; a hybrid ICI x DCN mesh when `dcn_data > 1`."""
    config = config or MeshConfig()
    devices = list(devices if devices is not None else jax.devices())
    shape = config.resolve(len(devices))
    if config.dcn_data > 1:
        array = mesh_utils.create_hybrid_device_mesh(shape, (config.dcn_data, 1, 1), devices)
    else:
        try:
            array = mesh_utils.create_device_mesh(shape, devices)
        except (AssertionError, NotImplementedError, ValueError):
            array = np.asarray(devices).reshape(shape)  # CPU / uncommon topologies: plain order is fine
    return Mesh(array, MESH_AXES)


@gin.configurable
def logical_rules(overrides: Sequence[tuple[str, Any]] = ()) -> tuple[tuple[str, Any], ...]:
    """The rules in force: `overrides` (gin) first, then the defaults."""
    return tuple(tuple(rule) for rule in overrides) + DEFAULT_RULES


def logical_to_sharding(logical_specs: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> Any:
    """A tree of logical PartitionSpecs -> a tree of NamedShardings on `mesh`."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, list(rules))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Examples split over every data-parallel axis (data and fsdp), replicated over tensor."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def _axes(entry: Any) -> tuple[str, ...]:
    return () if entry is None else tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def manual_axes_spec(mesh_spec: Sequence[Any], ndim: int, manual: Sequence[str]) -> PartitionSpec:
    """A parameter's mesh PartitionSpec with only the `manual` axes kept (padded to `ndim` dimensions)."""
    entries = list(mesh_spec) + [None] * (ndim - len(mesh_spec))
    out = []
    for entry in entries:
        kept = tuple(a for a in _axes(entry) if a in manual)
        out.append(None if not kept else kept[0] if len(kept) == 1 else kept)
    return PartitionSpec(*out)


def without_mesh_axes(rules: Sequence[tuple[str, Any]], axes: Sequence[str]) -> tuple[tuple[str, Any], ...]:
    """The logical rules with `axes` removed from every target (inside a shard_map that makes them manual)."""
    out = []
    for name, target in rules:
        kept = tuple(a for a in _axes(target) if a not in axes)
        out.append((name, None if not kept else kept[0] if len(kept) == 1 else kept))
    return tuple(out)


def gather_dims(local: jax.Array, spec: PartitionSpec) -> jax.Array:
    """Inside a shard_map: all-gather (tiled) every dimension that `spec` shards over manual axes."""
    for dim, entry in enumerate(spec):
        if entry is not None:
            local = jax.lax.all_gather(local, entry, axis=dim, tiled=True)
    return local


def reduce_dims(local: jax.Array, spec: PartitionSpec, manual: Sequence[str]) -> jax.Array:
    """Inside a shard_map: sum device-local partial values over the `manual` axes, leaving them laid out as
    `spec` (reduce-scatter along the dimensions it shards, all-reduce over the axes it does not use)."""
    used: list[str] = []
    for dim, entry in enumerate(spec):
        if entry is not None:
            local = jax.lax.psum_scatter(local, entry, scatter_dimension=dim, tiled=True)
            used.extend(_axes(entry))
    rest = tuple(a for a in manual if a not in used)
    return jax.lax.psum(local, rest) if rest else local
