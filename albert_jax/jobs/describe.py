"""Prints the gin-configured model's parameter counts (encoder + pooler, as the paper counts them, and with the
pretraining heads), its components and its training FLOPs per token, as JSON. Nothing is allocated, so any
size (xxlarge included) describes on a laptop."""

from __future__ import annotations

import argparse
import json

from albert_jax import describe
from albert_jax.jobs import flags

EPILOG = flags.examples(
    "albert-jax describe                                        # the demo model (experiments/demo.gin)",
    "albert-jax describe --gin_file=models/albert_base.gin      # ALBERT-base: 11.7M parameters",
    "albert-jax describe --gin_file=models/albert_xxlarge.gin --gin.AlbertConfig.sharing=\"'none'\"")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_gin(parser, default_files=("demo.gin",))
    flags.add_dry_run(parser)


def run(args: argparse.Namespace) -> int:
    """Gin is already applied (by the CLI); describing allocates nothing, so a dry run only skips the print."""
    report = describe.describe()
    if not args.dry_run:
        print(json.dumps(report, indent=2))
    return 0
