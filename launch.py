"""The project's original entry point, an alias of `albert-jax train / eval / describe` with its own flags:

    python launch.py --gin_file=... [--gin.NAME=VALUE ...] [--workdir=DIR]          # albert-jax train
    python launch.py --mode=eval --workdir=RUN [--step=N] [--continuous]            # albert-jax eval
    python launch.py --mode=eval --init=MODEL --gin_file=corpus/... --workdir=OUT   # albert-jax eval --model=MODEL
    python launch.py --describe --gin_file=...                                      # albert-jax describe
    python launch.py --mode=compile --gin_file=... --topology=v5p-64                # albert-jax compile
"""

from __future__ import annotations

import sys

from albert_jax.jobs.cli import launch

if __name__ == "__main__":
    sys.exit(launch(sys.argv[1:]))
