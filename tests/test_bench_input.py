"""bench/bench_input.py's runner for the original generator: clear errors without the original.

The original itself is not a registry package, so no test runs it; bench/bench_input.py --original does."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
