"""Checksums of a train state that do not depend on how it is sharded: recorded at save, compared at restore.

Each array's checksum is two 32-bit sums, over its elements, of the element's bit pattern times a weight drawn
from the element's global position. Each device sums its own shard where it lives (on the host that owns it:
only two scalars per array cross hosts, in the all-reduce that finishes the sum); integer sums are exact and
order-free, so the result is the same whatever mesh, device count or process count the state is laid out on,
and a checkpoint saved on one topology is verified after restoring onto another. Any change of a single
element changes both sums (the weights are odd, so a non-zero difference times a weight is non-zero mod 2**32),
including a flipped bit in a compressed chunk that still decodes, which orbax restores without complaint.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Two odd multipliers / offsets (golden-ratio and murmur constants): two independent 32-bit sums per array.
_MULTIPLIERS = (0x9E3779B1, 0x85EBCA77)
_OFFSETS = (0x7F4A7C15, 0xC2B2AE3D)


def _bits(x: jax.Array) -> jax.Array:
    """The array's bit patterns as uint32 (narrower types widened, booleans as 0/1)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    width = jnp.dtype(x.dtype).itemsize
    if width == 4:
        return lax.bitcast_convert_type(x, jnp.uint32)
    if width in (1, 2):
        unsigned = {1: jnp.uint8, 2: jnp.uint16}[width]
        return lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    raise TypeError(f"no checksum for dtype {x.dtype} (64-bit arrays need jax_enable_x64)")


def _array_sums(x: jax.Array) -> jax.Array:
    """[2] uint32: the position-weighted sums of one array."""
    bits = _bits(x)
    position = jnp.zeros(x.shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(x.ndim)):
        position = position + lax.broadcasted_iota(jnp.uint32, x.shape, axis) * jnp.uint32(stride % 2**32)
        stride *= x.shape[axis]
    rotated = (bits << 13) | (bits >> 19)
    sums = []
    for multiplier, offset, value in zip(_MULTIPLIERS, _OFFSETS, (bits, rotated)):
        weight = (position * jnp.uint32(multiplier) + jnp.uint32(offset)) | jnp.uint32(1)
        sums.append(jnp.sum(value * weight, dtype=jnp.uint32))
    return jnp.stack(sums)


@jax.jit
def _tree_sums(tree: Any) -> Any:
    return jax.tree.map(_array_sums, tree)


def leaf_names(tree: Any) -> list[str]:
    """'a/b/c' names of a tree's leaves, in `jax.tree.leaves` order."""
    return ["/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _host_value(x: jax.Array) -> np.ndarray:
    """A replicated result as numpy, also where it is not fully addressable (several processes)."""
    return np.asarray(x if x.is_fully_addressable else x.addressable_shards[0].data)


def checksums(tree: Any, prefix: str = "") -> dict[str, str]:
    """{leaf name: 16 hex digits} of a tree of arrays (global jax arrays on any mesh, or host numpy arrays).

    Every process must call it with the same tree (the final sum is a collective); every process gets the same
    result."""
    sums = jax.tree.map(_host_value, _tree_sums(tree))
    return {prefix + name: f"{int(s[0]):08x}{int(s[1]):08x}"
            for name, s in zip(leaf_names(tree), jax.tree.leaves(sums))}


def mismatches(recorded: dict[str, str], tree: Any, prefix: str = "") -> list[str]:
    """Names of the leaves of `tree` whose checksum differs from `recorded` (leaves not recorded are skipped)."""
    found = checksums(tree, prefix)
    return [name for name, value in found.items() if name in recorded and recorded[name] != value]


def array_bytes(tree: Any) -> int:
    """Total bytes of a tree's arrays (for the cost figures)."""
    return int(sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))
