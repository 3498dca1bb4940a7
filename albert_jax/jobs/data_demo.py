"""Fetches and prepares the demo corpus: the Python 3.11 documentation (Debian package python3.11-doc) as
English prose, a SentencePiece vocabulary trained on it, and train/eval ArrayRecord files. Each step is skipped
when its output is already in the cache directory (`albert_jax.input.demo_corpus` has the steps;
data/README.md the sizes and the license). `albert-jax train` (the demo) runs this itself when needed."""

from __future__ import annotations

import argparse
import os
import sys

from albert_jax.input.demo_corpus import ensure_demo_corpus
from albert_jax.jobs import flags

if __name__ == "__main__":  # one entry for every job: the CLI
    from albert_jax.jobs import cli

    sys.exit(cli.main(["data", "demo", *sys.argv[1:]]))

EPILOG = flags.examples("albert-jax data demo", "albert-jax data demo --cache_dir cache/demo --vocab_size 8000")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache_dir", default="cache/demo", help="where the package, text, vocabulary and corpus go")
    add_build_arguments(parser)


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """The vocabulary and preparation flags of a packaged corpus (this one, the Wikipedia introductions)."""
    parser.add_argument("--vocab_size", type=int, default=8000, help="pieces in the vocabulary")
    parser.add_argument("--eval_fraction", type=float, default=0.05, help="share of documents held out for eval")
    parser.add_argument("--workers", type=int, default=1, help="tokenizing processes")


def run(args: argparse.Namespace) -> int:
    """Builds what is missing, then prints where everything is and how big it is."""
    result = ensure_demo_corpus(args.cache_dir, args.vocab_size, args.eval_fraction, args.workers)
    info, stats = result["info"], result["info"]["stats"]
    size = sum(os.path.getsize(os.path.join(result["corpus"], f)) for f in os.listdir(result["corpus"]))
    print(f"demo corpus ready in {result['seconds']:.1f} s {result['timings'] or '(all cached)'}\n"
          f"  text:   {result['text']} ({os.path.getsize(result['text']) / 1e6:.1f} MB)\n"
          f"  vocab:  {result['vocab']} ({info['vocab']['vocab_size']} pieces)\n"
          f"  corpus: {result['corpus']} ({size / 1e6:.1f} MB): {info['splits']['train']['documents']} train and "
          f"{info['splits']['eval']['documents']} eval documents, {stats['sentences']} sentences, "
          f"{stats['tokens']} tokens")
    return 0
