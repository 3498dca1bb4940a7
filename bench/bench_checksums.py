"""Cost of the checkpoint checksums (`albert_jax.integrity`) on a model's full train state, next to orbax's save.

    python bench/bench_checksums.py [--gin_file=demo.gin] [--repeats 5]

Builds the gin-configured model's train state (parameters + LAMB moments + counters) on this machine's mesh,
then times (after one warm-up call that compiles) the checksums of the whole state as computed at save time and
again at restore time (`integrity.checksums`, the same function), one orbax save of the state to a temporary
directory (synchronous, to compare) and one restore. Prints bytes, seconds and bytes/s; the docs extrapolate
the bytes/s to albert_xxlarge (docs/RELIABILITY.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import jax
import orbax.checkpoint as ocp

from albert_jax import gin_setup, integrity, optim, partitioning
from albert_jax import train_step as steps
from albert_jax.config import AlbertConfig
from albert_jax.model import abstract_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gin_file", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    gin_setup.import_configurables()
    gin_setup.parse(args.gin_file or ["demo.gin"], [])
    config = AlbertConfig()
    mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
    tx = optim.make_optimizer(abstract_params(config))
    state = steps.create_state(config, tx, mesh, rules, 0)
    size = integrity.array_bytes(state)
    integrity.checksums(state)  # compile
    start = time.perf_counter()
    for _ in range(args.repeats):
        integrity.checksums(state)
    per_call = (time.perf_counter() - start) / args.repeats
    with tempfile.TemporaryDirectory() as directory:
        with ocp.StandardCheckpointer() as checkpointer:
            start = time.perf_counter()
            checkpointer.save(f"{directory}/state", state)
            checkpointer.wait_until_finished()
            save_seconds = time.perf_counter() - start
            start = time.perf_counter()
            restored = checkpointer.restore(f"{directory}/state", jax.tree.map(ocp.utils.to_shape_dtype_struct, state))
            jax.block_until_ready(restored)
            restore_seconds = time.perf_counter() - start
    print(json.dumps({"devices": jax.device_count(), "state_bytes": size, "arrays": len(jax.tree.leaves(state)),
                      "checksum_seconds": per_call, "checksum_bytes_per_s": size / per_call,
                      "orbax_save_seconds": save_seconds, "orbax_restore_seconds": restore_seconds}, indent=2))


if __name__ == "__main__":
    main()
