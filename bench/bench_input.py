"""Input pipeline throughput per CPU core: dynamic masking from pre-tokenized instances, raw text end to end, and
the original ALBERT generator on the same text in the same run.

    python bench/bench_input.py [--original DIR] [--text FILE] [--vocab MODEL] [--mb 1] [--seconds 15]

1. dynamic: unmasked instances of length --seq in an ArrayRecord file (made from the text first), read and
   masked by `Loader.element` (ArrayRecord read, decode, whole-word n-gram masking, fixed arrays) in this
   process; also the masker alone.
2. raw text end to end: --mb of text (one sentence per line, blank line between documents) -> tokenizer ->
   document records -> instances -> masks -> fixed arrays, with --dupe_factor 1 and 5.
3. the original generator (google-research/albert `create_pretraining_data.py`, run unmodified in a child process
   by bench/original_generator.py under TensorFlow 2's compat.v1) on the same --mb of text, the same vocabulary,
   length and prediction budget, dupe_factor 5; then `speed-up of albert-jax over the original generator`, the
   ratio of the dupe_factor 5 rates per CPU second. The original is not part of this repository: get it with
   `git clone https://github.com/google-research/albert DIR` and pass --original DIR. Without --original the
   ratio is not measured (and the output says so).

Figures are sequences per CPU second (time.process_time of this process; for the original, the child's CPU time
from getrusage), which a shared machine does not distort; wall-clock rates are printed next to them. Uses
albert_jax.input.tokenizer with the demo vocabulary (cache/demo/vocab8000.model) when present; otherwise trains an
8000-piece SentencePiece vocabulary on the text and encodes with SentencePiece directly (printed as such).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from typing import Callable

import numpy as np

from albert_jax.input.documents import encode_document
from albert_jax.input.instances import InstanceConfig, InstanceMaker
from albert_jax.input.loader import Loader
from albert_jax.input.masking import Masker, MaskingConfig
from albert_jax.input.records import SpecialIds
from albert_jax.input.write_instances import write_instances

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling runner, however this file is started
from original_generator import HOW_TO_GET, OriginalNotFound, find_original, run_original  # noqa: E402


def read_prefix(path: str, megabytes: float) -> str:
    """The first `megabytes` (2**20 characters each) of a text file."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read(int(megabytes * 2**20))


def read_documents(path: str, megabytes: float) -> list[list[str]]:
    """The first `megabytes` of a sentences-per-line file, as documents of sentences."""
    text = read_prefix(path, megabytes)
    docs = [[line for line in block.split("\n") if line.strip()] for block in text.split("\n\n")]
    return [d for d in docs if d]


def synthetic_text(path: str, megabytes: float, seed: int = 0) -> None:
    """Pseudo-English text (Zipf-distributed made-up words) when no real text is at hand."""
    rng = np.random.default_rng(seed)
    syllables = ["ka", "to", "ri", "en", "sa", "mu", "lo", "pe", "an", "di", "or", "ve", "ti", "us", "ne"]
    words = ["".join(rng.choice(syllables, int(rng.integers(1, 4)))) for _ in range(20000)]
    ranks = 1.0 / np.arange(1, len(words) + 1)
    probs = ranks / ranks.sum()
    with open(path, "w") as out:
        written = 0
        while written < megabytes * 2**20:
            for _ in range(int(rng.integers(5, 60))):
                line = " ".join(rng.choice(words, int(rng.integers(4, 30)), p=probs)).capitalize() + ".\n"
                out.write(line)
                written += len(line)
            out.write("\n")


def make_encoder(args: argparse.Namespace, text_path: str,
                 workdir: str) -> tuple[Callable, int, np.ndarray, str, str]:
    """(encode_batch, vocab_size, word_start, description, SentencePiece model path) from the project tokenizer or
    a fresh SentencePiece vocabulary (the model path is what the original generator is given too)."""
    vocab = args.vocab or ("cache/demo/vocab8000.model" if os.path.isfile("cache/demo/vocab8000.model") else None)
    try:
        from albert_jax.input.tokenizer import Tokenizer
    except ImportError:
        Tokenizer = None
    if vocab and Tokenizer is not None:
        tokenizer = Tokenizer(vocab, num_threads=1)
        return tokenizer.encode_batch, tokenizer.vocab_size, tokenizer.word_start_table(), \
            f"albert_jax.input.tokenizer.Tokenizer({vocab}), 1 thread", vocab
    import sentencepiece as spm

    prefix = os.path.join(workdir, "bench_vocab")
    spm.SentencePieceTrainer.train(input=text_path, model_prefix=prefix, vocab_size=8000, model_type="unigram",
                                   pad_id=0, unk_id=1, bos_id=-1, eos_id=-1,
                                   control_symbols=["[CLS]", "[SEP]", "[MASK]"], input_sentence_size=200000,
                                   shuffle_input_sentence=True, num_threads=1, minloglevel=2)
    processor = spm.SentencePieceProcessor(model_file=prefix + ".model")
    size = processor.get_piece_size()
    word_start = np.asarray([processor.id_to_piece(i).startswith("\u2581") or i < 5 for i in range(size)])
    return (lambda texts: processor.encode([t.lower() for t in texts], num_threads=1)), size, word_start, \
        "sentencepiece directly (vocabulary trained by the bench), 1 thread", prefix + ".model"


def rate(count: int, cpu: float, wall: float) -> str:
    return f"{count / cpu:,.0f} seq per CPU second ({count / wall:,.0f}/s wall; {count} sequences)"


def bench_dynamic(instance_dir: str, seconds: float, batch: int, masking: MaskingConfig) -> dict:
    loader = Loader(instance_dir, batch_size=batch, seed=0, masking=masking)
    loader.element(0)
    count, step = 0, 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.process_time() - cpu0 < seconds:
        out = loader.element(step)
        count += out["input_ids"].shape[0]
        step += 1
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    icount = 0
    cpu2, wall2 = time.process_time(), time.perf_counter()
    while time.process_time() - cpu2 < seconds / 2:
        icount += next(loader)["input_ids"].shape[0]
    iterated = (icount, time.process_time() - cpu2, time.perf_counter() - wall2)
    loader.close()
    batch_arrays = loader.element(0)
    masker = Masker(masking, int(loader.info["vocab_size"]),
                    np.load(os.path.join(instance_dir, loader.info["word_start"])), SpecialIds(), 0)
    ids, lengths = batch_arrays["input_ids"], batch_arrays["input_mask"].sum(1)
    mcount = 0
    cpu1 = time.process_time()
    while time.process_time() - cpu1 < seconds / 2:
        masker(ids, lengths, np.arange(ids.shape[0]) + mcount, np.zeros(ids.shape[0]))
        mcount += ids.shape[0]
    return {"loader": (count, cpu, wall), "iterator": iterated, "masker": (mcount, time.process_time() - cpu1),
            "mean_tokens": float(lengths.mean())}


def bench_raw(documents: list[list[str]], encode: Callable, vocab_size: int, word_start: np.ndarray,
              config: InstanceConfig, masking: MaskingConfig, dupe_factor: int, batch: int) -> tuple:
    """Tokenize, make instances (dupe_factor copies), mask and lay out fixed arrays; returns the count, CPU and
    wall seconds, and mean real tokens per sequence."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    records = [encode_document(encode(doc)) for doc in documents]
    maker = InstanceMaker(records, config, seed=0, vocab_size=vocab_size)
    masker = Masker(masking, vocab_size, word_start, seed=0)
    count, tokens, pending = 0, 0, []

    def flush() -> None:
        ids = np.zeros((len(pending), config.max_seq_length), np.int32)
        for row, inst in enumerate(pending):
            ids[row, :inst.tokens.size] = inst.tokens
        lengths = np.asarray([inst.tokens.size for inst in pending])
        nonlocal tokens
        tokens += int(lengths.sum())
        masker(ids, lengths, np.arange(len(pending)) + count, np.zeros(len(pending)))

    for dupe in range(dupe_factor):
        for index in range(len(records)):
            pending.extend(maker.document_instances(index, dupe))
            if len(pending) >= batch:
                flush()
                count += len(pending)
                pending = []
    if pending:
        flush()
        count += len(pending)
    return count, time.process_time() - cpu0, time.perf_counter() - wall0, tokens / max(count, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", help="directory with the original's create_pretraining_data.py and "
                        "tokenization.py (a google-research/albert checkout); without it no ratio is measured")
    parser.add_argument("--text", help="sentences-per-line text (default: the demo text, else synthetic)")
    parser.add_argument("--vocab", help="SentencePiece model (default: cache/demo/vocab8000.model if present)")
    parser.add_argument("--mb", type=float, default=4.0, help="megabytes of text for the raw-text runs")
    parser.add_argument("--seconds", type=float, default=15.0, help="CPU seconds per dynamic measurement")
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--predictions", type=int, default=20, help="max_predictions_per_seq (20 at 512)")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    try:
        original = find_original(args.original) if args.original else None  # fail before the long measurements
    except OriginalNotFound as error:
        parser.error(str(error))

    with tempfile.TemporaryDirectory() as workdir:
        text = args.text or next(iter(sorted(glob.glob("cache/demo/text/*.txt"))), None)
        if text is None:
            text = os.path.join(workdir, "synthetic.txt")
            synthetic_text(text, max(args.mb, 4.0))
        encode, vocab_size, word_start, described, vocab = make_encoder(args, text, workdir)
        config = InstanceConfig(max_seq_length=args.seq)
        masking = MaskingConfig(max_predictions_per_seq=args.predictions)
        print(f"text: {text}; tokenizer: {described}; vocab {vocab_size}; length {args.seq}, "
              f"{args.predictions} predictions, batch {args.batch}")

        documents = read_documents(text, max(args.mb, 4.0))
        records = [encode_document(encode(doc)) for doc in documents]
        instance_dir = os.path.join(workdir, "instances")
        meta = write_instances(records, instance_dir, mode="dynamic", instance_config=config,
                               masking_config=masking, vocab_size=vocab_size, word_start=word_start, seed=0)
        result = bench_dynamic(instance_dir, args.seconds, args.batch, masking)
        count, cpu, wall = result["loader"]
        dynamic_rate = count / cpu
        print(f"[dynamic] {meta['num_records']} stored instances, mean {result['mean_tokens']:.0f} real tokens")
        print(f"[dynamic] loader batch (read + decode + mask + arrays): {rate(count, cpu, wall)}")
        print(f"[dynamic] same through the grain iterator (1 thread, prefetch 2): {rate(*result['iterator'])}")
        mcount, mcpu = result["masker"]
        print(f"[dynamic] masker alone: {mcount / mcpu:,.0f} seq per CPU second")

        raw_text = os.path.join(workdir, "raw.txt")  # the very text both generators read
        with open(raw_text, "w", encoding="utf-8") as handle:
            handle.write(read_prefix(text, args.mb))
        raw_docs = read_documents(raw_text, args.mb)
        raw_rate = 0.0
        for dupe in (1, 5):
            count, cpu, wall, mean_tokens = bench_raw(raw_docs, encode, vocab_size, word_start, config, masking,
                                                      dupe, args.batch)
            raw_rate = count / cpu
            print(f"[raw text, {args.mb:g} MB, dupe_factor {dupe}] tokenize + instances + masks: "
                  f"{rate(count, cpu, wall)}; mean {mean_tokens:.0f} real tokens")

        if original is None:
            print(f"speed-up of albert-jax over the original generator: not measured (no --original); {HOW_TO_GET}")
            return
        theirs = run_original(str(original), raw_text, vocab, workdir, seq=args.seq, predictions=args.predictions,
                              dupe_factor=5)
        original_rate = theirs["count"] / theirs["run_cpu"]
        whole_rate = theirs["count"] / theirs["cpu"]
        print(f"[original, {args.mb:g} MB, dupe_factor 5] create_pretraining_data.py ({original}, TensorFlow "
              f"{theirs['tensorflow']} compat.v1): {original_rate:,.1f} seq per CPU second of its run "
              f"({theirs['count'] / theirs['wall']:,.1f}/s wall; {theirs['count']} sequences written); "
              f"{whole_rate:,.1f} per CPU second of the whole child ({theirs['cpu']:.1f} CPU s, of which "
              f"{theirs['setup_cpu']:.1f} interpreter start and imports); mean {theirs['mean_tokens']:.0f} real "
              f"tokens, {theirs['mean_masked']:.1f} masked; peak RSS {theirs['peak_rss_mb']:,.0f} MB")
        token_ratio = raw_rate * mean_tokens / (original_rate * theirs["mean_tokens"])
        print(f"speed-up of albert-jax over the original generator: {raw_rate / original_rate:.2f}x "
              f"(raw text end to end, dupe_factor 5, sequences per CPU second; {raw_rate / whole_rate:.2f}x counting "
              f"the original's start-up and imports; {token_ratio:.2f}x in real tokens per CPU second)")
        print(f"[dynamic] loader batch over the original generator: {dynamic_rate / original_rate:,.0f}x")


if __name__ == "__main__":
    main()
