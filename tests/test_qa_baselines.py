"""Trivial QA baselines under the official metrics: hand-worked scores, and the data job printing them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from albert_jax.downstream import qa_baselines
from albert_jax.downstream.race import RaceExample
from albert_jax.downstream.squad import SquadExample

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSWERABLE = [
    SquadExample("q1", "what sat?", "The cat sat. It was red.", (("cat", 4),)),
    SquadExample("q2", "what here?", "Blue skies here. More text.", (("Blue skies", 0),)),
]


def test_squad_baselines_by_hand() -> None:
    scores = qa_baselines.squad_baselines(ANSWERABLE)
    # first word: "The" normalizes to "" against "cat" (F1 0); "Blue" against "blue skies": P 1, R 1/2, F1 2/3.
    assert scores["first word"] == pytest.approx({"exact_match": 0.0, "f1": 100 * (0 + 2 / 3) / 2})
    # first sentence: "cat sat" vs "cat": P 1/2, R 1, F1 2/3; "blue skies here" vs "blue skies": P 2/3, R 1, F1 0.8.
    assert scores["first sentence"] == pytest.approx({"exact_match": 0.0, "f1": 100 * (2 / 3 + 0.8) / 2})
    assert set(scores) == {"first word", "first sentence", "random word"}


def test_squad_v2_baselines_score_no_answer() -> None:
    examples = [*ANSWERABLE, SquadExample("q3", "what?", "Nothing to see.", (), is_impossible=True)]
    scores = qa_baselines.squad_baselines(examples)
    # "no answer" is right on the one unanswerable question of three and wrong on both answerable ones.
    assert scores["no answer"]["exact"] == pytest.approx(100 / 3)
    assert scores["no answer"]["HasAns_exact"] == 0.0 and scores["no answer"]["NoAns_exact"] == 100.0


def test_race_baselines_by_hand() -> None:
    options = ("a", "b", "c", "d")
    examples = [RaceExample("r1", "middle", "x", "q", options, 1), RaceExample("r2", "high", "x", "q", options, 1),
                RaceExample("r3", "high", "x", "q", options, 0)]
    scores = qa_baselines.race_baselines(examples)
    assert scores["chance"]["accuracy"] == pytest.approx(25.0)
    # always B: right on r1 (middle) and r2 (high), wrong on r3 (high).
    assert scores["always B"] == pytest.approx({"accuracy": 200 / 3, "middle_accuracy": 100.0,
                                                "high_accuracy": 50.0})


def test_data_job_prints_the_dev_baselines(demo_corpus: dict, tmp_path: Path) -> None:
    """Through the real entry point: the paths on stdout, the dev set's baselines on stderr."""
    proc = subprocess.run([sys.executable, "-m", "albert_jax", "data", "synthetic-qa", "squad",
                           f"--out={tmp_path}", f"--text={demo_corpus['text']}", "--train=20", "--dev=30"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr
    assert "train.json" in proc.stdout
    assert "dev baseline, first sentence: exact_match 0.0, f1" in proc.stderr
