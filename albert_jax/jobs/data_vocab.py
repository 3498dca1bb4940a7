"""Trains an ALBERT SentencePiece vocabulary (unigram, original recipe and id layout) on a corpus source.

Example:
  PYTHONPATH=. python data/train_vocab.py --input 'corpus/*.txt' --model_prefix cache/vocab/spm30k \
      --vocab_size 30000
The text is normalized the way the tokenizer normalizes it (lowercase, collapsed whitespace, accents stripped)
and the trainer samples --input_sentence_size sentences uniformly from the whole stream.
"""

from __future__ import annotations

import argparse
import sys

from albert_jax.input.corpus import CorpusStats
from albert_jax.input.tokenizer import Tokenizer, train_vocab
from albert_jax.jobs.data_prepare import add_source_arguments, source_from_arguments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(parser)
    parser.add_argument("--model_prefix", required=True, help="writes <prefix>.model and <prefix>.vocab")
    parser.add_argument("--vocab_size", type=int, default=30000)
    parser.add_argument("--input_sentence_size", type=int, default=2_000_000,
                        help="sentences sampled for training (the original used 10M with a much larger machine)")
    parser.add_argument("--character_coverage", type=float, default=0.99995)
    parser.add_argument("--num_threads", type=int, default=None)
    args = parser.parse_args()
    stats = CorpusStats()
    try:
        source = source_from_arguments(args)
        sentences = (s for document in source.documents(stats) for s in document.sentences())
        summary = train_vocab(sentences, args.model_prefix, args.vocab_size,
                              input_sentence_size=args.input_sentence_size,
                              character_coverage=args.character_coverage, num_threads=args.num_threads)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    tokenizer = Tokenizer(summary["model"])
    learned = [tokenizer.id_to_piece(i) for i in range(13, min(33, tokenizer.vocab_size))]
    print(f"vocabulary {summary['model']}: {tokenizer.vocab_size} pieces, trained in {summary['seconds']:.1f} s on "
          f"{summary['sampled_sentences']} of {summary['sentences']} sentences ({summary['characters']} characters)\n"
          f"files read: {stats.files}; lines with invalid UTF-8 (decoded with U+FFFD): {stats.invalid_utf8}\n"
          f"first learned pieces: {' '.join(learned)}")


if __name__ == "__main__":
    main()
