"""fill-mask against transformers: same weights, same text -> same token ids, top-k tokens and probabilities.

The model is a random `transformers.AlbertForPreTraining` saved with `save_pretrained`; the vocabulary is a
tiny SentencePiece model trained here. The reference ids come from transformers' `AlbertTokenizer` on that
vocabulary and the reference probabilities from a softmax of transformers' MLM logits in PyTorch, both in the
session's torch worker (tests/conftest.py, tests/torch_reference.py): this process never imports torch.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from albert_jax.convert import hf
from albert_jax.input.tokenizer import train_vocab
from albert_jax.jobs import cli
from conftest import TorchWorker

TEXT = "the capital of france is [MASK] and [MASK] river"
WORDS = ("the capital of france is paris a city in europe river big small red blue green house tree dog cat "
         "runs fast slow good bad apple orange and").split()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory, torch_worker: TorchWorker) -> Path:
    """A transformers directory with random weights and its SentencePiece model as spiece.model."""
    root = tmp_path_factory.mktemp("fill_mask")
    rng = random.Random(0)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(400)]
    vocab = train_vocab(sentences, str(root / "vocab"), 60, num_threads=1)
    directory = root / "hf"
    torch_worker("torch_reference", "save_tiny_model", str(directory), 60, 0.3)
    shutil.copyfile(vocab["model"], directory / "spiece.model")
    return directory


def reference(worker: TorchWorker, directory: Path, text: str,
              top_k: int) -> tuple[list[int], list[list[tuple[int, float]]]]:
    """(input ids, per mask the top-k (id, probability)) from transformers' tokenizer and PyTorch model."""
    return worker("torch_reference", "fill_mask", str(directory), text, top_k)


def run(capsys: pytest.CaptureFixture, *args: str) -> dict[str, Any]:
    assert cli.main(["fill-mask", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def check(result: dict[str, Any], expected_ids: list[int], expected_top: list[list[tuple[int, float]]]) -> None:
    assert result["input_ids"] == expected_ids
    assert len(result["masks"]) == len(expected_top) == 2
    worst = 0.0
    for mask, top in zip(result["masks"], expected_top):
        assert [p["id"] for p in mask["predictions"]] == [i for i, _ in top]
        diffs = [abs(p["probability"] - prob) for p, (_, prob) in zip(mask["predictions"], top)]
        worst = max(worst, *diffs)
    print(f"max |probability diff| vs transformers: {worst:.2e}")
    assert worst < 1e-5


def test_transformers_directory_matches_transformers(hf_dir: Path, capsys: pytest.CaptureFixture,
                                                     torch_worker: TorchWorker) -> None:
    ids, top = reference(torch_worker, hf_dir, TEXT, 5)
    result = run(capsys, "--model", str(hf_dir), "--text", TEXT, "--top_k", "5")
    check(result, ids, top)
    assert result["masks"][0]["predictions"][0]["token"] == result["masks"][0]["predictions"][0]["piece"].lstrip("▁")


def test_converted_directory_with_explicit_vocab(hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 torch_worker: TorchWorker) -> None:
    hf.import_dir(hf_dir, tmp_path / "ours")
    assert cli.main(["fill-mask", "--model", str(tmp_path / "ours"), "--text", TEXT]) == 1
    assert "pass --vocab" in capsys.readouterr().err
    ids, top = reference(torch_worker, hf_dir, TEXT, 3)
    result = run(capsys, "--model", str(tmp_path / "ours"), "--text", TEXT, "--top_k", "3",
                 "--vocab", str(hf_dir / "spiece.model"))
    check(result, ids, top)


def test_text_output_and_errors(hf_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["fill-mask", "--model", str(hf_dir), "--text", "paris is a [MASK]", "--top_k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"\[MASK\] 1 \(token position \d+\):", lines[0]) and len(lines) == 4
    assert lines[-1].startswith("top-1 filled: paris is a")
    assert cli.main(["fill-mask", "--model", str(hf_dir), "--text", "no mask here"]) == 1
    assert "has no [MASK]" in capsys.readouterr().err
    assert cli.main(["fill-mask", "--model", str(hf_dir.parent), "--text", "a [MASK]"]) == 1
    assert "is not a model directory" in capsys.readouterr().err
