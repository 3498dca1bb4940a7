"""`albert-jax compile`: will this gin config fit, and how fast will it run, on a TPU slice we do not have?

Compiles the trainer's exact step (`train.build_step`) for `--topology` (v4-32, v5p-64, v5e-16, v6e-8, ... or
a libtpu name such as v5:2x4x4; `--num_slices` for multislice) on this machine's CPU with libtpu, and prints
per chip: HBM (parameters, optimizer state, batch, temporaries, code, peak, capacity, margin), FLOPs (the traced
step's and the analytic count), bytes, collectives, a roofline step time, tokens/s and MFU (estimates, not
measurements). `--search` tries meshes, remat policies, microbatch counts and compute dtypes and writes the best
as a gin file to include. Exit codes: 0 fits, 3 does not fit (the reason and what to try, no traceback), 1 a
user error, 2 usage.

    albert-jax compile --gin_file=paper/albert_xxlarge.gin --topology=v5p-64 --json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any, Sequence

from albert_jax.jobs import flags

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_OOM = 0, 1, 2, 3
DATA_MACROS = ("TRAIN_DIR", "EVAL_DIR")  # compiling reads no data: bound to '' when a file requires them
LIBTPU_LOCK = "libtpu multi-process lockfile"
LIBTPU_LOCK_HELP = (
    "error: another process on this machine holds libtpu (its lock /tmp/libtpu_lockfile): a TPU job, or a JAX "
    "process that loaded libtpu without ALLOW_MULTIPLE_LIBTPU_LOAD=1. libtpu lets one process at a time use it "
    "unless that variable is 1; compiling touches no chip, so `albert-jax compile` sets "
    "ALLOW_MULTIPLE_LIBTPU_LOAD=1 for itself unless it is already set (here "
    "ALLOW_MULTIPLE_LIBTPU_LOAD={value!r}). Set it to 1 (or unset it), or wait for the other process to end "
    "(`lsof /tmp/libtpu_lockfile` names it); remove /tmp/libtpu_lockfile only when no process holds it.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_gin(parser, default_files=("demo.gin",), apply=False)  # parsed here: data macros may stay unset
    parser.add_argument("--topology", required=True,
                        help="TPU slice: v4-N / v5p-N (N TensorCores), v5e-N / v6e-N (N chips), or v5:2x4x4")
    parser.add_argument("--num_slices", type=int, default=1,
                        help="slices over DCN (multislice); MeshConfig.dcn_data defaults to this")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--search", action="store_true",
                        help="try meshes x remat policies x microbatches x dtypes; print them best first")
    parser.add_argument("--max_candidates", type=int, default=12, help="--search: compiles at most this many")
    parser.add_argument("--search_meshes", default="",
                        help="--search: only these meshes, comma-separated DATAxFSDPxTENSOR (e.g. 1x32x1,2x16x1)")
    parser.add_argument("--search_remat", default="",
                        help="--search: only these remat policies, comma-separated (default: all, cheapest first)")
    parser.add_argument("--search_dtypes", default="",
                        help="--search: compute dtypes, comma-separated (default bfloat16, plus the config's own)")
    parser.add_argument("--max_microbatches", type=int, default=8,
                        help="--search: microbatch counts tried per plan double from 1 up to this")
    parser.add_argument("--plan_out", default=None,
                        help="--search: gin file for the best plan (default plan_<topology>.gin here)")


def run(args: argparse.Namespace) -> int:
    # Compiling touches no chip, so libtpu's one-process lock (taken by any JAX process that loads libtpu, even
    # one running on CPU) is waived for this process, before anything loads libtpu.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from albert_jax import gin_setup
    from albert_jax.jobs import compile_plan

    try:
        bindings = list(getattr(args, "gin_bindings", []) or [])
        parse_gin(flags.gin_files(args), bindings)
        if args.search:
            return compile_plan.search(args, bindings)
        result = compile_plan.plan(args.topology, args.num_slices)
    except (ValueError, gin_setup.GinConfigError) as error:
        print(f"error: {str(error).split(chr(10) + '  In call to configurable')[0]}", file=sys.stderr)
        return EXIT_USER
    except RuntimeError as error:  # jaxlib's JaxRuntimeError is one
        if LIBTPU_LOCK not in str(error):
            raise
        print(LIBTPU_LOCK_HELP.format(value=os.environ.get('ALLOW_MULTIPLE_LIBTPU_LOAD')), file=sys.stderr)
        return EXIT_USER
    print(json.dumps(result, indent=2, default=float) if args.json else compile_plan.format_report(result))
    if not result["fits"]:
        if not args.json:
            print("\n" + result["advice"], file=sys.stderr)
        return EXIT_OOM
    return EXIT_OK


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str]) -> None:
    """gin_setup.parse, with the data-directory macros a paper file requires bound to '' if left unset."""
    from albert_jax import gin_setup
    from albert_jax.jobs import configurables

    configurables.register_all()
    extra: list[str] = []
    while True:
        try:
            gin_setup.parse(list(gin_files), [*extra, *bindings])
            return
        except gin_setup.GinConfigError as error:
            missing = (re.search(r"No bindings specified for '(\w+)/gin.macro'", str(error))
                       or re.search(r"the gin files need (\w+) \(declared %gin.REQUIRED\)", str(error)))
            if not missing or missing.group(1) not in DATA_MACROS or len(extra) >= len(DATA_MACROS):
                raise
            extra.append(f"{missing.group(1)} = ''")


if __name__ == "__main__":  # one entry for every job: the CLI
    from albert_jax.jobs import cli

    sys.exit(cli.main(["compile", *sys.argv[1:]]))
