"""Prepares a corpus for pretraining: documents -> sentences -> token ids -> train/eval ArrayRecord files.

Examples:
  PYTHONPATH=. python data/prepare.py --input 'corpus/*.txt' --vocab cache/vocab/spm30k.model \
      --output_dir cache/corpus --eval_fraction 0.01 --workers 2
  PYTHONPATH=. python data/prepare.py --tfds_name wikipedia/20230601.en --tfds_data_dir ~/tensorflow_datasets \
      --vocab cache/vocab/spm30k.model --output_dir cache/wiki
Output: <output_dir>/corpus.json and {train,eval}-NNNNN.array_record, one tokenized document per record (see
albert_jax/input/corpus.py). A summary of what was read and repaired is printed at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from albert_jax.input.corpus import (CorpusStats, EmptyCorpusError, add_source_arguments, prepare_corpus,
                                     source_from_arguments)
from albert_jax.input.tokenizer import VocabError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(parser)
    parser.add_argument("--vocab", required=True, help="SentencePiece .model made by data/train_vocab.py")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--eval_fraction", type=float, default=0.01, help="share of documents held out for eval")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tokenizing processes")
    parser.add_argument("--max_sentence_chars", type=int, default=2000, help="longer sentences are split")
    parser.add_argument("--shard_mb", type=int, default=256, help="approximate size of one output file")
    parser.add_argument("--overwrite", action="store_true", help="replace a corpus already in --output_dir")
    args = parser.parse_args()
    source = source_from_arguments(args)
    start = time.perf_counter()
    try:
        info = prepare_corpus(source, args.vocab, args.output_dir, eval_fraction=args.eval_fraction,
                              workers=args.workers, max_sentence_chars=args.max_sentence_chars,
                              shard_bytes=args.shard_mb << 20, overwrite=args.overwrite)
    except (VocabError, EmptyCorpusError, FileExistsError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    stats = CorpusStats(**info["stats"])
    print(f"prepared {args.output_dir} in {time.perf_counter() - start:.1f} s\n{stats.report()}")


if __name__ == "__main__":
    main()
