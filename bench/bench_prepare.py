"""Benchmark of corpus preparation: throughput and peak memory on a generated corpus of a chosen size.

The corpus is the demo text (run data/demo_corpus.py first) repeated, documents in a different random order each
round and every sentence given a round number, until it reaches --mb megabytes; so it has realistic sentences and
no two documents are identical. Prints tokenizer sentences/s, preparation MB/s and the peak resident memory of
this process and of its worker processes (getrusage maxrss). Figures go to docs/PERF.md, "Corpus preparation".

  python bench/bench_prepare.py --mb 100 --workers 2
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import time

from albert_jax.input.corpus import CorpusStats, TextFiles, prepare_corpus
from albert_jax.input.tokenizer import Tokenizer


def make_corpus(text_path: str, out_path: str, megabytes: int, seed: int = 0) -> int:
    """Writes a sentences-format file of about `megabytes` MB from the documents of `text_path`."""
    documents = [doc.sentences() for doc in TextFiles((text_path,)).documents(CorpusStats())]
    rng = random.Random(seed)
    written, round_index = 0, 0
    with open(out_path, "w", encoding="utf-8") as out:
        while written < megabytes * 1_000_000:
            rng.shuffle(documents)
            for document in documents:
                block = "\n".join(f"{s} ({round_index})" for s in document) + "\n\n"
                out.write(block)
                written += len(block.encode("utf-8"))
                if written >= megabytes * 1_000_000:
                    break
            round_index += 1
    return written


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo_dir", default="cache/demo")
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work_dir", default="cache/bench_prepare")
    args = parser.parse_args()
    text = os.path.join(args.demo_dir, "text", "python-docs.txt")
    vocab = os.path.join(args.demo_dir, f"vocab{args.vocab_size}.model")
    if not (os.path.isfile(text) and os.path.isfile(vocab)):
        raise SystemExit(f"{text} or {vocab} missing: run `albert-jax data demo` first")
    os.makedirs(args.work_dir, exist_ok=True)
    corpus = os.path.join(args.work_dir, f"corpus{args.mb}mb.txt")
    if not os.path.isfile(corpus):
        make_corpus(text, corpus, args.mb)
    size = os.path.getsize(corpus)

    sentences = [s for doc in TextFiles((text,)).documents(CorpusStats()) for s in doc.sentences()]
    tokenizer = Tokenizer(vocab)
    start, cpu = time.perf_counter(), _cpu_seconds()
    tokenizer.encode_batch(sentences)
    print(f"tokenizer: {len(sentences) / (time.perf_counter() - start):,.0f} sentences/s in one process, "
          f"{len(sentences) / (_cpu_seconds() - cpu):,.0f} per CPU second ({len(sentences)} demo sentences)")

    output = os.path.join(args.work_dir, "prepared")
    start, cpu = time.perf_counter(), _cpu_seconds()
    info = prepare_corpus(TextFiles((corpus,)), vocab, output, workers=args.workers, overwrite=True, progress=False)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    stats = info["stats"]
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"prepare: {size / 1e6:.0f} MB, {stats['input_documents']} documents, {stats['sentences']} sentences, "
          f"{stats['tokens']} tokens in {seconds:.1f} s with {args.workers} worker(s): "
          f"{size / 1e6 / seconds:.2f} MB/s, "
          f"{stats['sentences'] / seconds:,.0f} sentences/s; {cpu:.1f} CPU s ({size / 1e6 / cpu:.2f} MB per CPU s)\n"
          f"peak RSS: main process {own:.0f} MiB, largest worker {children:.0f} MiB\n"
          f"output: {sum(os.path.getsize(os.path.join(output, f)) for f in os.listdir(output)) / 1e6:.0f} MB")
    shutil.rmtree(output)


if __name__ == "__main__":
    main()
