"""`albert-jax`: the one command line. Each subcommand is a module of albert_jax/jobs with
`add_arguments(parser)` and `run(args) -> int`, imported only when it runs (so `--help` is fast).

Exit codes: 0 done; 1 the job failed on its input (missing file, damaged checkpoint, non-finite loss); 2 a usage
or configuration error (unknown subcommand or flag, bad gin binding or sweep grid); 3 `compile`: the plan does
not fit. Errors are printed as one paragraph without a traceback (ALBERT_JAX_DEBUG=1 re-raises them).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType
from typing import Mapping, Sequence

from albert_jax import gin_setup
from albert_jax.jobs import flags

# subcommand -> (module, one-line help). A module with its own COMMANDS table is a group of subcommands.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("albert_jax.jobs.train", "pretrain the model and data the gin files name"),
    "eval": ("albert_jax.jobs.evaluate", "held-out evaluation of a run or any model directory"),
    "describe": ("albert_jax.jobs.describe", "parameter counts and FLOPs of a gin config"),
    "finetune": ("albert_jax.jobs.finetune", "fine-tune a model directory on a GLUE-style task"),
    "fill-mask": ("albert_jax.jobs.fill_mask", "predict the [MASK] tokens of a sentence"),
    "convert": ("albert_jax.jobs.convert", "TF releases / transformers in, transformers out"),
    "sweep": ("albert_jax.jobs.sweep", "run a grid of variants (the ablations), tabulate"),
    "data": ("albert_jax.jobs.data", "demo corpus, vocabulary, preparation, instances, stats"),
    "checkpoints": ("albert_jax.jobs.checkpoints", "verify a run's checkpoints: OK / damaged / incomplete"),
    "compile": ("albert_jax.jobs.compile", "compile the train step for a TPU slice from CPU: HBM, FLOPs, time"),
}
# Errors the project raises with a message that names the problem and the fix: shown without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, FloatingPointError, RuntimeError)
PROG = "albert-jax"
EXIT_ERROR = 1  # the job failed on its input (missing file, damaged checkpoint, non-finite loss...)
EXIT_CONFIG = 2  # the configuration is wrong (a bad gin binding or grid), as argparse exits on a bad flag
EPILOG = flags.examples(
    "albert-jax train                                   # the demo: experiments/demo.gin into runs/demo",
    "albert-jax train --gin_file=paper/albert_base.gin --workdir=runs/base",
    "albert-jax eval --workdir=runs/demo --step=800",
    "albert-jax describe --gin_file=models/albert_xxlarge.gin",
    "albert-jax fill-mask --model=runs/demo --text='the [MASK] is a list.'",
    "albert-jax SUBCOMMAND --help                       # the flags of one subcommand",
) + "\n\n" + flags.SHARED


def _formatter(prog: str) -> argparse.HelpFormatter:
    """Descriptions and examples as written (line breaks kept); help texts at a readable width."""
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30, width=110)


def _description(module: ModuleType) -> str:
    return (module.__doc__ or "").strip()


def _chosen(argv: Sequence[str]) -> str | None:
    """The first word that is not a flag: the subcommand (no flag of a group takes a value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _attach(parser: argparse.ArgumentParser, table: Mapping[str, tuple[str, str]], argv: Sequence[str],
            dest: str) -> None:
    """Adds the subcommands of `table`; imports and fills in only the one named in `argv`."""
    subparsers = parser.add_subparsers(dest=dest, metavar="<subcommand>", required=True,
                                       title="subcommands", help="one of:")
    name = _chosen(argv)
    for command, (module_name, help_text) in table.items():
        if command != name:
            subparsers.add_parser(command, help=help_text)
            continue
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(command, help=help_text, description=_description(module),
                                    formatter_class=_formatter,
                                    epilog=getattr(module, "EPILOG", None))
        rest = list(argv[list(argv).index(name) + 1:])
        if hasattr(module, "COMMANDS"):
            _attach(sub, module.COMMANDS, rest, dest=f"{dest}_{command}")
        else:
            module.add_arguments(sub)
            sub.set_defaults(job=module)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser with the subcommand named in `argv` filled in (the others listed by name and help)."""
    parser = argparse.ArgumentParser(prog=PROG, description="ALBERT pretraining, evaluation, fine-tuning and "
                                     "conversion in JAX.", epilog=EPILOG, formatter_class=_formatter)
    _attach(parser, COMMANDS, argv, dest="command")
    return parser


def _apply_gin(args: argparse.Namespace) -> None:
    """Registers every configurable and applies the job's gin files and bindings."""
    from albert_jax.jobs import configurables

    configurables.register_all()
    files = args.job.gin_files(args) if hasattr(args.job, "gin_files") else flags.gin_files(args)
    gin_setup.parse(files, args.gin_bindings)


def user_error(error: BaseException) -> str:
    """One paragraph: the message (gin's call-site addendum dropped) and how to see the traceback."""
    message = str(error).split("\n  In call to configurable")[0].strip() or type(error).__name__
    return f"error ({type(error).__name__}): {message}\n(set ALBERT_JAX_DEBUG=1 for the traceback)"


def main(argv: Sequence[str]) -> int:
    """Parses `argv` (without the program name), applies gin where the subcommand takes it, runs it."""
    argv = list(argv)
    try:
        bindings, rest = gin_setup.split_argv(argv)
    except gin_setup.GinConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    parser = build_parser(rest)
    try:
        args = parser.parse_args(rest)
    except SystemExit as exit_:  # argparse: 0 after --help, 2 on a usage error (already printed)
        return int(exit_.code or 0)
    if bindings and not hasattr(args, "gin_apply"):
        print(f"{PROG}: error: {args.command} takes no --gin.NAME=VALUE bindings (got {bindings[0]!r}).",
              file=sys.stderr)
        return 2
    try:
        if hasattr(args, "gin_apply"):
            args.gin_bindings = bindings
            if args.gin_apply:
                _apply_gin(args)
        return int(args.job.run(args) or 0)
    except USER_ERRORS as error:
        if os.environ.get("ALBERT_JAX_DEBUG"):
            raise
        print(user_error(error), file=sys.stderr)
        return EXIT_CONFIG if isinstance(error, gin_setup.GinConfigError) else EXIT_ERROR


def entry() -> None:
    """The console script `albert-jax`."""
    sys.exit(main(sys.argv[1:]))


def launch_argv(argv: Sequence[str]) -> tuple[str, list[str]]:
    """launch.py's flags (`--mode=train|eval|describe|compile`, `--describe`, `--init=MODEL`) as `albert-jax`
    words: `--mode=eval --init=M ...` is `albert-jax eval --model=M ...`; everything else passes through.
    Returns (subcommand, the `albert-jax` argv); a bad --mode exits as argparse does (code 2)."""
    alias = argparse.ArgumentParser(prog="launch.py", add_help=False, allow_abbrev=False)
    alias.add_argument("--mode", choices=("train", "eval", "describe", "compile"), default="train")
    alias.add_argument("--describe", action="store_true")
    alias.add_argument("--init", default=None)
    known, rest = alias.parse_known_args(list(argv))
    mode = "describe" if known.describe else known.mode
    return mode, [mode, *rest, *(["--model", known.init] if known.init else [])]


def launch(argv: Sequence[str]) -> int:
    """`python launch.py ...`: the original entry point, run as the `albert-jax` subcommand it names."""
    try:
        mode, translated = launch_argv(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if "-h" in argv or "--help" in argv:
        print(f"launch.py is an alias of `albert-jax {mode}` (--mode=train|eval|describe|compile or --describe "
              f"picks the subcommand; --init is --model). The flags of `albert-jax {mode}`:\n")
    return main(translated)
