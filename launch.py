"""albert-jax entry point: `python launch.py --gin_file=... [--gin.NAME=VALUE ...] [--describe]`."""

from __future__ import annotations

import sys

from albert_jax.jobs.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
