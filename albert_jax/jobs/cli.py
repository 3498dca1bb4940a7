"""Command-line dispatch behind launch.py: flags and gin, multi-host start-up, then the chosen mode."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from albert_jax import gin_setup
from albert_jax.config import AlbertConfig

MODES = ("train", "eval", "describe")
# Errors the project raises with a message that names the problem and the fix: shown without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, FloatingPointError, RuntimeError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch.py",
        description="ALBERT pretraining in JAX. Gin bindings: --gin.NAME=VALUE (repeatable; applied after the "
                    "files, in order; later wins).")
    parser.add_argument("--gin_file", action="append", default=[],
                        help="gin file (repeatable, applied in order; relative to experiments/ if not found)")
    parser.add_argument("--workdir", default=None, help="run directory: checkpoints, logs, config.gin")
    parser.add_argument("--mode", choices=MODES, default="train")
    parser.add_argument("--describe", action="store_true", help="same as --mode=describe")
    parser.add_argument("--step", type=int, default=None, help="eval: checkpoint step (default: latest)")
    parser.add_argument("--restore_step", type=int, default=None,
                        help="train: resume from this checkpoint step (newer steps are set aside, not deleted)")
    parser.add_argument("--no_fallback", action="store_true",
                        help="train/eval: a damaged latest checkpoint is an error instead of falling back to the "
                             "newest good one")
    parser.add_argument("--continuous", action="store_true",
                        help="eval: keep evaluating each new checkpoint of a running job")
    parser.add_argument("--init", default=None,
                        help="eval: a model directory to evaluate instead of a run's checkpoints (converted, "
                             "workdir, transformers or TF release); results go to --workdir/eval")
    parser.add_argument("--vocab", default=None,
                        help="eval with --init: SentencePiece .model (default: the one found with the model)")
    parser.add_argument("--coordinator_address", default=None,
                        help="multi-process (GPU clusters): host:port of process 0")
    parser.add_argument("--num_processes", type=int, default=None, help="multi-process: total process count")
    parser.add_argument("--process_id", type=int, default=None, help="multi-process: this process's index")
    return parser


def init_distributed(args: argparse.Namespace) -> None:
    """jax.distributed.initialize: explicit flags (GPU clusters, local tests) or automatic on TPU pods."""
    import jax

    if args.coordinator_address or args.num_processes:
        if None in (args.coordinator_address, args.num_processes, args.process_id):
            raise ValueError("--coordinator_address, --num_processes and --process_id must be given together.")
        jax.distributed.initialize(coordinator_address=args.coordinator_address, num_processes=args.num_processes,
                                   process_id=args.process_id)
    elif os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID"):
        jax.distributed.initialize()  # TPU VM pods: topology comes from the environment


def default_gin_files() -> list[str]:
    return ["demo.gin"]


def main(argv: Sequence[str]) -> int:
    try:
        bindings, rest = gin_setup.split_argv(argv)
        args = build_parser().parse_args(rest)
        mode = "describe" if args.describe else args.mode
        gin_files = args.gin_file or default_gin_files()
        saved_config = os.path.join(args.workdir or "", "config.gin")
        if mode == "eval" and (args.init or args.vocab):
            _check_init_flags(args)
        if mode == "eval" and not args.init and not args.gin_file and args.workdir and os.path.exists(saved_config):
            gin_files = [saved_config]  # evaluate a run with the config it was trained with
        gin_setup.import_configurables()
        gin_setup.parse(gin_files, bindings)
        AlbertConfig()  # validate the model config now, before any work starts
    except ValueError as error:  # GinConfigError included: the message names the binding and the fix
        print(f"error: {str(error).split(chr(10) + '  In call to configurable')[0]}", file=sys.stderr)
        return 2
    if mode == "describe":
        from albert_jax import describe

        print(json.dumps(describe.describe(), indent=2))
        return 0
    workdir = args.workdir or _default_workdir()
    try:
        init_distributed(args)
        if mode == "train":
            from albert_jax.jobs import train

            train.train(workdir, restore_step=args.restore_step, fallback=not args.no_fallback)
        else:
            from albert_jax.jobs import evaluate

            if args.init:
                evaluate.evaluate_pretrained(args.init, workdir, step=args.step, vocab=args.vocab)
            else:
                evaluate.evaluate_checkpoints(workdir, step=args.step, continuous=args.continuous,
                                              fallback=not args.no_fallback)
    except USER_ERRORS as error:
        if os.environ.get("ALBERT_JAX_DEBUG"):
            raise
        message = str(error).split("\n  In call to configurable")[0]
        print(f"error ({type(error).__name__}): {message}\n(set ALBERT_JAX_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
    return 0


def _check_init_flags(args: argparse.Namespace) -> None:
    """--init evaluates one model directory into an explicit --workdir; --vocab only makes sense with it."""
    if not args.init:
        raise ValueError("--vocab is only used with --init (a run's checkpoints use the run's data).")
    if not args.workdir:
        raise ValueError("--mode=eval --init=MODEL_DIR needs --workdir=OUT: the directory that receives eval/.")
    if args.continuous:
        raise ValueError("--continuous follows a run's checkpoints (--workdir=RUN); it does not apply to --init.")


def _default_workdir() -> str:
    import gin

    try:
        return gin.query_parameter("%WORKDIR")
    except ValueError:
        return os.path.join("runs", "default")
