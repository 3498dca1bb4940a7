"""Trains an ALBERT SentencePiece vocabulary (unigram, original recipe and id layout) on a corpus source.

The text is normalized the way the tokenizer normalizes it (lowercase, collapsed whitespace, accents stripped)
and the trainer samples --input_sentence_size sentences uniformly from the whole stream.
"""

from __future__ import annotations

import argparse
import sys

from albert_jax.input.corpus import CorpusStats
from albert_jax.input.tokenizer import Tokenizer, train_vocab
from albert_jax.jobs import flags
from albert_jax.jobs.data_prepare import add_source_arguments, source_from_arguments

if __name__ == "__main__":  # one entry for every job: the CLI
    from albert_jax.jobs import cli

    sys.exit(cli.main(["data", "vocab", *sys.argv[1:]]))

EPILOG = flags.examples(
    "albert-jax data vocab --input 'corpus/*.txt' --model_prefix cache/vocab/spm30k --vocab_size 30000",
    "albert-jax data vocab --tfds_name wikipedia/20230601.en --model_prefix cache/vocab/wiki30k")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("--model_prefix", required=True, help="writes <prefix>.model and <prefix>.vocab")
    parser.add_argument("--vocab_size", type=int, default=30000, help="pieces in the vocabulary")
    parser.add_argument("--input_sentence_size", type=int, default=2_000_000,
                        help="sentences sampled for training (the original used 10M with a much larger machine)")
    parser.add_argument("--character_coverage", type=float, default=0.99995, help="share of characters covered")
    parser.add_argument("--num_threads", type=int, default=None, help="trainer threads (default: all cores)")


def run(args: argparse.Namespace) -> int:
    """`albert-jax data vocab`: trains, then prints the vocabulary's size and first learned pieces."""
    stats = CorpusStats()
    source = source_from_arguments(args)
    sentences = (s for document in source.documents(stats) for s in document.sentences())
    summary = train_vocab(sentences, args.model_prefix, args.vocab_size, input_sentence_size=args.input_sentence_size,
                          character_coverage=args.character_coverage, num_threads=args.num_threads)
    tokenizer = Tokenizer(summary["model"])
    learned = [tokenizer.id_to_piece(i) for i in range(13, min(33, tokenizer.vocab_size))]
    print(f"vocabulary {summary['model']}: {tokenizer.vocab_size} pieces, trained in {summary['seconds']:.1f} s on "
          f"{summary['sampled_sentences']} of {summary['sentences']} sentences ({summary['characters']} characters)\n"
          f"files read: {stats.files}; lines with invalid UTF-8 (decoded with U+FFFD): {stats.invalid_utf8}\n"
          f"first learned pieces: {' '.join(learned)}")
    return 0
