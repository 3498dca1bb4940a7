"""Statistics of the examples a gin-configured input pipeline yields, next to what its configuration implies:
real tokens per example, padding, the masked fraction against its budget, masked span lengths against the
n-gram distribution, the [MASK] / kept / random split and the sentence labels (`albert_jax.input.stats`).
The data is prepared first when missing, as the train job would."""

from __future__ import annotations

import argparse
import sys

from albert_jax.input import prepare, stats
from albert_jax.jobs import flags

if __name__ == "__main__":  # one entry for every job: the CLI
    from albert_jax.jobs import cli

    sys.exit(cli.main(["data", "stats", *sys.argv[1:]]))

EPILOG = flags.examples("albert-jax data stats --gin_file=demo.gin -n 5000",
                        "albert-jax data stats --gin_file=demo.gin --gin_file=masking/token.gin --split=eval")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_gin(parser, default_files=("demo.gin",))
    parser.add_argument("-n", type=int, default=10000, help="examples to read")
    parser.add_argument("--split", default="train", choices=("train", "eval"), help="which split to read")
    parser.add_argument("--batch_size", type=int, default=256, help="examples per loader batch")
    parser.add_argument("--seed", type=int, default=0, help="the loader's (masking and order) seed")


def run(args: argparse.Namespace) -> int:
    """Gin is already applied (by the CLI); prepares the data if needed, reads, prints the statistics."""
    result = stats.pipeline_statistics(args.n, args.split, args.batch_size, args.seed, prepare.prepare_data())
    print(stats.format_statistics(result))
    return 0
