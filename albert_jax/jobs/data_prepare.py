"""Prepares a corpus for pretraining: documents -> sentences -> token ids -> train/eval ArrayRecord files.

Output: <output_dir>/corpus.json and {train,eval}-NNNNN.array_record, one tokenized document per record (see
albert_jax/input/corpus.py). A summary of what was read and repaired is printed at the end.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

from albert_jax.input.corpus import CorpusStats, TextFiles, TfdsCorpus, prepare_corpus
from albert_jax.jobs import flags

if __name__ == "__main__":  # one entry for every job: the CLI
    from albert_jax.jobs import cli

    sys.exit(cli.main(["data", "prepare", *sys.argv[1:]]))

EPILOG = flags.examples(
    "albert-jax data prepare --input 'corpus/*.txt' --vocab cache/vocab/spm30k.model --output_dir cache/corpus \\",
    "    --eval_fraction 0.01 --workers 2",
    "albert-jax data prepare --tfds_name wikipedia/20230601.en --tfds_data_dir ~/tensorflow_datasets \\",
    "    --vocab cache/vocab/spm30k.model --output_dir cache/wiki")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options that choose a source: local text files or a prepared TFDS dataset."""
    group = parser.add_argument_group("corpus source (give --input or --tfds_name)")
    group.add_argument("--input", nargs="+", default=[], help="text files or glob patterns")
    group.add_argument("--input_format", default="sentences", choices=["sentences", "documents"],
                       help="sentences: one per line, blank line between documents; documents: one per line")
    group.add_argument("--max_line_bytes", type=int, default=1 << 20, help="longer input lines are split")
    group.add_argument("--tfds_name", help="TFDS dataset, e.g. wikipedia/20230601.en, c4/en, albert_text/sentences")
    group.add_argument("--tfds_data_dir", help="TFDS data dir holding the prepared dataset")
    group.add_argument("--tfds_split", default="train")
    group.add_argument("--text_feature", default="text", help="name of the dataset's text feature")
    group.add_argument("--tfds_sentences", default="rule", choices=["rule", "lines"],
                       help="rule: split each line of the text into sentences; lines: each line is a sentence "
                            "(use for albert_text)")


def source_from_arguments(args: argparse.Namespace) -> TextFiles | TfdsCorpus:
    """The source that `add_source_arguments` options describe; globs are expanded and sorted."""
    if bool(args.input) == bool(args.tfds_name):
        raise ValueError("give either --input (text files) or --tfds_name (a prepared TFDS dataset), not both")
    if args.tfds_name:
        return TfdsCorpus(args.tfds_name, args.tfds_data_dir, args.tfds_split, args.text_feature, args.tfds_sentences)
    paths = [path for pattern in args.input for path in (sorted(glob.glob(pattern)) or [pattern])]
    return TextFiles(tuple(paths), args.input_format, args.max_line_bytes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("--vocab", required=True, help="SentencePiece .model (made by `albert-jax data vocab`)")
    parser.add_argument("--output_dir", required=True, help="receives corpus.json and {train,eval}-*.array_record")
    parser.add_argument("--eval_fraction", type=float, default=0.01, help="share of documents held out for eval")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tokenizing processes")
    parser.add_argument("--max_sentence_chars", type=int, default=2000, help="longer sentences are split")
    parser.add_argument("--shard_mb", type=int, default=256, help="approximate size of one output file")
    parser.add_argument("--overwrite", action="store_true", help="replace a corpus already in --output_dir")


def run(args: argparse.Namespace) -> int:
    """`albert-jax data prepare`: vocabulary, corpus and existing-output errors are user errors (ValueError)."""
    start = time.perf_counter()
    info = prepare_corpus(source_from_arguments(args), args.vocab, args.output_dir, eval_fraction=args.eval_fraction,
                          workers=args.workers, max_sentence_chars=args.max_sentence_chars,
                          shard_bytes=args.shard_mb << 20, overwrite=args.overwrite)
    stats = CorpusStats(**info["stats"])
    print(f"prepared {args.output_dir} in {time.perf_counter() - start:.1f} s\n{stats.report()}")
    return 0
