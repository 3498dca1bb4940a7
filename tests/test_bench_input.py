"""bench/bench_input.py's runner for the original generator: clear errors without the original, TFRecord counting,
and (only where ALBERT_ORIGINAL names a google-research/albert checkout) one tiny run of the original."""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORIGINAL = os.environ.get("ALBERT_ORIGINAL")  # e.g. a `git clone https://github.com/google-research/albert`
VOCAB = os.path.join(REPO, "cache", "demo", "vocab8000.model")


def _runner():
    spec = importlib.util.spec_from_file_location("original_generator",
                                                  os.path.join(REPO, "bench", "original_generator.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_directory_without_the_original_files_is_a_clear_error(tmp_path):
    runner = _runner()
    (tmp_path / "tokenization.py").write_text("")
    with pytest.raises(runner.OriginalNotFound, match="create_pretraining_data.py not found.*git clone"):
        runner.find_original(str(tmp_path))
    (tmp_path / "create_pretraining_data.py").write_text("")
    assert runner.find_original(str(tmp_path)) == tmp_path.resolve()


def test_bench_and_child_refuse_a_bad_original_before_measuring(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    for argv in (["bench/bench_input.py", "--original", str(tmp_path)],
                 ["bench/original_generator.py", "--original", str(tmp_path), "--info", str(tmp_path / "i.json")]):
        done = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode != 0
        assert "create_pretraining_data.py, tokenization.py not found" in done.stderr, done.stderr[-2000:]
        assert "github.com/google-research/albert" in done.stderr


def test_count_tfrecords(tmp_path):
    runner = _runner()
    path = tmp_path / "r.tfrecord"
    with open(path, "wb") as handle:
        for payload in (b"a", b"", b"xyz" * 100):
            handle.write(struct.pack("<Q", len(payload)) + b"\0" * 4 + payload + b"\0" * 4)
    assert runner.count_tfrecords(str(path)) == 3
    with open(path, "ab") as handle:
        handle.write(b"\0" * 5)
    with pytest.raises(ValueError, match="truncated"):
        runner.count_tfrecords(str(path))


@pytest.mark.skipif(not ORIGINAL or not os.path.isfile(VOCAB), reason="needs ALBERT_ORIGINAL and the demo vocab")
def test_tiny_run_of_the_original(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("The first sentence of a document.\nAnd its second one, 1,234 words.\nA third.\n\n"
                    "Another document starts here.\nIt ends here.\n" * 20)
    result = _runner().run_original(ORIGINAL, str(text), VOCAB, str(tmp_path), seq=64, predictions=10,
                                    dupe_factor=1)
    assert result["count"] > 0 and 0 < result["mean_tokens"] <= 64 and 0 < result["mean_masked"] <= 10
    assert 0 < result["run_cpu"] < result["cpu"] and 0 < result["setup_cpu"] < result["cpu"]
