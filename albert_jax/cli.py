"""Command-line dispatch behind launch.py: parse flags and gin, then run the chosen mode."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from albert_jax import describe as describe_lib
from albert_jax import gin_setup
from albert_jax.config import AlbertConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch.py", description="ALBERT pretraining in JAX. Gin bindings: --gin.NAME=VALUE (repeatable).")
    parser.add_argument("--gin_file", action="append", default=[],
                        help="gin file (repeatable, applied in order; relative to experiments/ if not found)")
    parser.add_argument("--describe", action="store_true",
                        help="print parameter counts and FLOPs of the configured model as JSON, then exit")
    return parser


def main(argv: Sequence[str]) -> int:
    try:
        bindings, rest = gin_setup.split_argv(argv)
        args = build_parser().parse_args(rest)
        gin_files = args.gin_file or ["models/tiny.gin"]
        gin_setup.parse(gin_files, bindings)
        AlbertConfig()  # validate the model config now, before any work starts
    except ValueError as error:  # GinConfigError included: the message names the binding and the fix
        print(f"error: {str(error).split(chr(10) + '  In call to configurable')[0]}", file=sys.stderr)
        return 2
    if args.describe:
        print(json.dumps(describe_lib.describe(), indent=2))
        return 0
    print(json.dumps(describe_lib.describe(), indent=2))
    return 0
