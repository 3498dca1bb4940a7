"""The flag vocabulary every `albert-jax` subcommand shares, so one name means one thing everywhere (SHARED
lists it). The command line (`cli`) splits off the `--gin.NAME=VALUE` arguments before argparse sees the rest
and, for a subcommand that declared `add_gin`, applies the files and bindings before calling its `run`.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Mapping

SHARED = """shared flags (where a subcommand takes them):
  --gin_file=FILE     gin file, repeatable, applied in order; looked up as given, then under experiments/
  --gin.NAME=VALUE    one gin binding, repeatable, applied after the files (later wins)
  --workdir=DIR       the directory a job writes (a run, an evaluation, a fine-tuning)
  --model=DIR         a model directory the job reads (a run, a converted folder, transformers, a TF release)
  --step=N            a checkpoint step of a run (default: its latest)
  --dry_run           parse the flags and the gin config, check them, and exit without running

exit codes: 0 done, 1 a user error (one paragraph; ALBERT_JAX_DEBUG=1 shows the traceback), 2 a usage error"""

GIN_HELP = ("gin bindings: --gin.NAME=VALUE, repeatable, applied after the gin files in order (later wins),\n"
            "  e.g. --gin.AlbertConfig.hidden_size=256 --gin.TEXT_FILES=\"['corpus.txt']\"")


def add_gin(parser: argparse.ArgumentParser, default_files: tuple[str, ...] = (), apply: bool = True,
            help: str | None = None) -> None:
    """--gin_file (repeatable); `apply=False` for a job that hands its gin on (a sweep) instead of parsing it."""
    default = f" (default: {' '.join(default_files)})" if default_files else ""
    parser.add_argument("--gin_file", action="append", default=[], metavar="FILE",
                        help=(help or "gin file, repeatable, applied in order; looked up as given, then under "
                              "experiments/") + default)
    parser.set_defaults(gin_apply=apply, gin_default_files=tuple(default_files), gin_bindings=[])
    parser.epilog = GIN_HELP + (f"\n\n{parser.epilog}" if parser.epilog else "")


def gin_files(args: argparse.Namespace) -> list[str]:
    """The files a job reads: the ones given, else its default."""
    return list(args.gin_file or args.gin_default_files)


def add_workdir(parser: argparse.ArgumentParser, help: str, required: bool = False) -> None:
    parser.add_argument("--workdir", required=required, default=None, metavar="DIR", help=help)


def add_model(parser: argparse.ArgumentParser, help: str | None = None, required: bool = True) -> None:
    parser.add_argument("--model", required=required, default=None, metavar="DIR", help=help or (
        "model directory: a pretraining run, a converted folder (albert_config.json + params/), a transformers "
        "directory or an original TF release"))


def add_step(parser: argparse.ArgumentParser, help: str = "checkpoint step of a run (default: its latest)") -> None:
    parser.add_argument("--step", type=int, default=None, metavar="N", help=help)


def add_vocab(parser: argparse.ArgumentParser,
              help: str = "SentencePiece .model (default: the one found with the model)") -> None:
    parser.add_argument("--vocab", default=None, metavar="PATH", help=help)


def add_no_fallback(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no_fallback", action="store_true",
                        help="a damaged checkpoint is an error instead of falling back to the newest good one")


def add_dry_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry_run", action="store_true",
                        help="parse the flags and the gin config, check them, print what would run, and exit")


def add_distributed(parser: argparse.ArgumentParser) -> None:
    """Multi-process start-up flags (GPU clusters, local multi-process tests); TPU pods need none."""
    group = parser.add_argument_group("multi-process (GPU clusters; TPU pods are detected automatically)")
    group.add_argument("--coordinator_address", default=None, metavar="HOST:PORT", help="address of process 0")
    group.add_argument("--num_processes", type=int, default=None, metavar="N", help="total process count")
    group.add_argument("--process_id", type=int, default=None, metavar="I", help="this process's index")


def init_distributed(args: argparse.Namespace) -> None:
    """jax.distributed.initialize: explicit flags (GPU clusters, local tests) or automatic on TPU pods."""
    import jax

    if args.coordinator_address or args.num_processes:
        if None in (args.coordinator_address, args.num_processes, args.process_id):
            raise ValueError("--coordinator_address, --num_processes and --process_id must be given together.")
        jax.distributed.initialize(coordinator_address=args.coordinator_address, num_processes=args.num_processes,
                                   process_id=args.process_id)
    elif on_multihost_tpu_pod(os.environ):
        jax.distributed.initialize()  # TPU VM pods: topology comes from the environment


def on_multihost_tpu_pod(environ: Mapping[str, str]) -> bool:
    """Whether the environment describes a TPU pod slice of several hosts (what `jax.distributed.initialize()`
    detects by itself). A single host needs no initialization. libtpu, loaded on a machine that is no TPU VM
    (e.g. to compile for a topology), writes its warning text into TPU_WORKER_HOSTNAMES of its own process,
    which child processes inherit; such a value is no host list and must not start a distributed run."""
    for name in ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES"):
        hosts = [h.strip() for h in environ.get(name, "").split(",") if h.strip()]
        if hosts and all(_HOST.fullmatch(h) for h in hosts):
            return len(hosts) > 1
    return False


_HOST = re.compile(r"[A-Za-z0-9._\-]+(:[0-9]+)?")


def default_workdir(args: argparse.Namespace) -> str:
    """--workdir, else the gin macro WORKDIR of the experiment (demo.gin sets it), else runs/default."""
    if args.workdir:
        return args.workdir
    import gin

    try:
        return gin.query_parameter("%WORKDIR")
    except ValueError:
        return os.path.join("runs", "default")


def examples(*lines: str) -> str:
    """An argparse epilog listing example command lines."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)
