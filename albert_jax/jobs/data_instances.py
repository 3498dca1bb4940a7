"""Writes pretraining instances from a prepared corpus (or document ArrayRecord files): `dynamic` stores the
unmasked sentence pairs (masked afresh by the loader each epoch), `static` stores --dupe_factor masked copies,
as the original create_pretraining_data did. InstanceConfig (length, sentence objective) and MaskingConfig come
from gin (`--gin_file=objective/sop.gin`, `--gin.InstanceConfig.max_seq_length=512`)."""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

from albert_jax.input.corpus import corpus_files, load_corpus_info
from albert_jax.input.instances import InstanceConfig
from albert_jax.input.masking import MaskingConfig
from albert_jax.input.tokenizer import Tokenizer
from albert_jax.input.write_instances import FORMATS, write_instances
from albert_jax.jobs import flags

if __name__ == "__main__":  # one entry for every job: the CLI
    from albert_jax.jobs import cli

    sys.exit(cli.main(["data", "instances", *sys.argv[1:]]))

EPILOG = flags.examples(
    "albert-jax data instances --corpus_dir=cache/wiki --split=train --output_dir=cache/wiki_sop/train \\",
    "    --gin_file=objective/sop.gin --gin.InstanceConfig.max_seq_length=512",
    "albert-jax data instances --corpus_dir=cache/wiki --split=eval --output_dir=cache/wiki_static/eval \\",
    "    --mode=static --dupe_factor=40")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus_dir", help="prepared corpus (corpus.json); its files of --split are read")
    parser.add_argument("--split", default="train", help="corpus split to read (train or eval)")
    parser.add_argument("--input", nargs="*", help="document ArrayRecord files or globs (instead of --corpus_dir)")
    parser.add_argument("--output_dir", required=True, help="receives meta.json and the ArrayRecord shards")
    parser.add_argument("--mode", choices=tuple(FORMATS), default="dynamic",
                        help="dynamic: unmasked instances, masked afresh each epoch; static: masked copies")
    flags.add_vocab(parser, "SentencePiece model (default: the corpus' vocabulary)")
    parser.add_argument("--word_start", help="a saved word-start table (.npy) instead of --vocab")
    parser.add_argument("--dupe_factor", type=int, default=1, help="copies of the corpus (the original used 40)")
    parser.add_argument("--seed", type=int, default=12345, help="documents, copies and masks derive from it")
    parser.add_argument("--num_shards", type=int, default=0, help="output files (default: --num_workers)")
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1, help="writing processes")
    parser.add_argument("--writer_options", default="group_size:1",
                        help="ArrayRecord writer options (e.g. group_size:1,uncompressed)")
    flags.add_gin(parser, help="gin file binding InstanceConfig / MaskingConfig (repeatable; looked up as given, "
                               "then under experiments/)")


def vocabulary(args: argparse.Namespace) -> tuple[int, np.ndarray | None, dict]:
    """vocab_size, word_start table and provenance from --vocab, --word_start or the corpus' corpus.json."""
    if args.word_start:
        table = np.load(args.word_start).astype(bool)
        return table.size, table, {"word_start_source": os.path.abspath(args.word_start)}
    vocab = args.vocab
    if vocab is None and args.corpus_dir:
        vocab = load_corpus_info(args.corpus_dir)["vocab"]["path"]
    if vocab is None:
        raise ValueError("need a vocabulary: --vocab MODEL, --word_start TABLE.npy, or --corpus_dir with corpus.json")
    tokenizer = Tokenizer(vocab)
    return tokenizer.vocab_size, tokenizer.word_start_table(), {"vocab": {"path": os.path.abspath(vocab),
                                                                         "sha256": tokenizer.sha256()}}


def input_paths(args: argparse.Namespace) -> list[str]:
    """The document files: --input globs, else the corpus split's files."""
    if args.input:
        paths = sorted(p for pattern in args.input for p in glob.glob(pattern))
        if not paths:
            raise FileNotFoundError(f"--input {args.input} matches no file")
        return paths
    if not args.corpus_dir:
        raise ValueError("need --input FILES or --corpus_dir DIR (with --split)")
    return corpus_files(args.corpus_dir, args.split)


def run(args: argparse.Namespace) -> int:
    """Gin is already applied (by the CLI); writes, then prints the counts to stderr."""
    vocab_size, word_start, provenance = vocabulary(args)
    paths = input_paths(args)
    meta = write_instances(paths, args.output_dir, mode=args.mode, instance_config=InstanceConfig(),
                           masking_config=MaskingConfig(), vocab_size=vocab_size, word_start=word_start,
                           seed=args.seed, dupe_factor=args.dupe_factor,
                           num_shards=args.num_shards or args.num_workers, num_workers=args.num_workers,
                           writer_options=args.writer_options,
                           extra_meta={"inputs": [os.path.abspath(p) for p in paths], **provenance})
    print(f"wrote {meta['num_records']} {args.mode} records to {args.output_dir}", file=sys.stderr)
    print(json.dumps(meta["counts"], indent=1), file=sys.stderr)
    return 0
