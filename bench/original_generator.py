"""Runs the original ALBERT data generator (google-research/albert `create_pretraining_data.py`) unmodified.

The original is not part of this repository (its code is not copied here). Get it with

    git clone https://github.com/google-research/albert /tmp/albert_original

or copy just its `create_pretraining_data.py` and `tokenization.py` into one directory, and give that directory
to `bench/bench_input.py --original DIR`. The parent (`run_original`) starts this file as a child process:

    python bench/original_generator.py --original DIR --info FILE -- --input_file=... [original's flags]

The child makes the original importable as it is written (`from albert import tokenization` resolves to DIR's
tokenization.py through an `albert` package whose path is DIR; `tensorflow_hub`, which tokenization.py imports
only for `FullTokenizer.from_hub_module`, is a stub that raises if used when it is not installed), imports its
heavy dependencies, notes the CPU time spent so far, then runs the script as `__main__` with the given flags
(TensorFlow 2's `tensorflow.compat.v1`, which the original imports itself). The parent measures the child's CPU
time with `resource.getrusage(RUSAGE_CHILDREN)`; afterwards, outside the measurement, a second child
(`--stats FILE`) reads the TFRecords it wrote back for their count, mean real tokens and masked positions.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import runpy
import subprocess
import sys
import types
from pathlib import Path

FILES = ("create_pretraining_data.py", "tokenization.py")
HOW_TO_GET = ("get it with `git clone https://github.com/google-research/albert` and pass the checkout "
              "(a directory holding create_pretraining_data.py and tokenization.py) as --original DIR")


class OriginalNotFound(FileNotFoundError):
    """--original does not point at a directory with the original generator's files."""


def find_original(directory: str) -> Path:
    """The directory holding the original's create_pretraining_data.py and tokenization.py, or a clear error."""
    path = Path(directory).expanduser().resolve()
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise OriginalNotFound(f"--original {directory}: {', '.join(missing)} not found there; {HOW_TO_GET}")
    return path


def original_flags(text: str, vocab: str, output: str, seq: int, predictions: int, dupe_factor: int,
                   seed: int) -> list[str]:
    """The original's command-line flags for one run; the others keep the original's defaults (whole-word
    masking, 3-grams favouring shorter ones, masked_lm_prob 0.15, short_seq_prob 0.1, lower case).
    --vocab_file is required by the original even with a SentencePiece model; it is unused then."""
    return [f"--input_file={text}", f"--output_file={output}", f"--spm_model_file={vocab}", f"--vocab_file={vocab}",
            f"--max_seq_length={seq}", f"--max_predictions_per_seq={predictions}", f"--dupe_factor={dupe_factor}",
            "--masked_lm_prob=0.15", f"--random_seed={seed}"]


def run_original(directory: str, text: str, vocab: str, workdir: str, seq: int = 512, predictions: int = 20,
                 dupe_factor: int = 5, seed: int = 12345, python: str = sys.executable) -> dict:
    """Runs the original generator in a child process on `text`; returns its instance count and CPU seconds:
    `cpu` for the whole child (getrusage of the waited-for child), `run_cpu` for the script's run alone (the
    child's own CPU from just before the script to just after it), `setup_cpu` for interpreter start and imports
    before it; `wall` of the script's run; `peak_rss_mb` of the largest waited-for child so far."""
    original = find_original(directory)
    output = os.path.join(workdir, "original.tfrecord")
    info = os.path.join(workdir, "original_child.json")
    log = os.path.join(workdir, "original.log")
    argv = [python, os.path.abspath(__file__), "--original", str(original), "--info", info, "--",
            *original_flags(text, vocab, output, seq, predictions, dupe_factor, seed)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as log_handle:
        done = subprocess.run(argv, stdout=log_handle, stderr=subprocess.STDOUT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        with open(log) as handle:
            tail = handle.read()[-3000:]
        raise RuntimeError(f"the original generator failed (exit {done.returncode}):\n{tail}")
    with open(info) as handle:
        child = json.load(handle)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stats = subprocess.run([python, os.path.abspath(__file__), "--stats", output], capture_output=True, text=True)
    if stats.returncode != 0:  # after the measurement: reading the records back is not the original's cost
        raise RuntimeError(f"reading the original's records failed:\n{stats.stderr[-3000:]}")
    return {"cpu": cpu, "run_cpu": child["run_cpu"], "setup_cpu": child["setup_cpu"],
            "wall": child["wall"], "peak_rss_mb": after.ru_maxrss / 1024, "tensorflow": child["tensorflow"],
            **json.loads(stats.stdout.strip().splitlines()[-1])}


def record_stats(path: str) -> dict:
    """Record count, mean real tokens (input_mask) and masked positions (masked_lm_weights) of the original's
    output."""
    import tensorflow.compat.v1 as tf

    tokens, masked, count = 0.0, 0.0, 0
    for serialized in tf.io.tf_record_iterator(path):
        features = tf.train.Example.FromString(serialized).features.feature
        tokens += sum(features["input_mask"].int64_list.value)
        masked += sum(features["masked_lm_weights"].float_list.value)
        count += 1
    return {"count": count, "mean_tokens": tokens / max(count, 1), "mean_masked": masked / max(count, 1)}


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(original: Path, flags: list[str], info: str) -> None:
    """Makes the original importable as written, imports its dependencies, then runs it as `__main__`."""
    import time

    package = types.ModuleType("albert")
    package.__path__ = [str(original)]
    sys.modules["albert"] = package
    if importlib.util.find_spec("tensorflow_hub") is None:
        hub = types.ModuleType("tensorflow_hub")

        def unavailable(name: str):
            raise ImportError(f"tensorflow_hub.{name}: tensorflow_hub is not installed (stub of the benchmark)")

        hub.__getattr__ = unavailable
        sys.modules["tensorflow_hub"] = hub
    import numpy  # noqa: F401  (imported before the clock: the original's dependencies)
    import sentencepiece  # noqa: F401
    import six  # noqa: F401
    import tensorflow.compat.v1 as tf

    setup_cpu, wall0 = _self_cpu(), time.perf_counter()
    script = str(original / "create_pretraining_data.py")
    sys.argv = [script, *flags]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:  # tf.app.run ends with sys.exit(main(argv))
        if stop.code not in (None, 0):
            raise
    with open(info, "w") as handle:
        json.dump({"setup_cpu": setup_cpu, "run_cpu": _self_cpu() - setup_cpu, "wall": time.perf_counter() - wall0,
                   "tensorflow": tf.__version__}, handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", help="directory with the original's two files")
    parser.add_argument("--info", help="JSON file the child writes its CPU times to")
    parser.add_argument("--stats", help="instead: print record_stats of this TFRecord file of the original's")
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="-- then the original's own flags")
    args = parser.parse_args()
    if args.stats:
        print(json.dumps(record_stats(args.stats)))
        return
    if not args.original or not args.info:
        parser.error("--original and --info are required (or --stats)")
    flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags
    try:
        original = find_original(args.original)
    except OriginalNotFound as error:
        sys.exit(str(error))
    _child(original, flags, args.info)


if __name__ == "__main__":
    main()
