"""fill-mask against transformers: same weights, same text -> same token ids, top-k tokens and probabilities.

The model is a random `transformers.AlbertForPreTraining` saved with `save_pretrained`; the vocabulary is a
tiny SentencePiece model trained here. The reference ids come from transformers' `AlbertTokenizer` on that
vocabulary and the reference probabilities from a softmax of transformers' MLM logits in PyTorch.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import torch
import transformers

from albert_jax.jobs import fill_mask  # noqa: E402
from albert_jax.convert import hf  # noqa: E402
from albert_jax.input.tokenizer import train_vocab  # noqa: E402
from hf_fixtures import random_albert_for_pretraining

TEXT = "the capital of france is [MASK] and [MASK] river"
WORDS = ("the capital of france is paris a city in europe river big small red blue green house tree dog cat "
         "runs fast slow good bad apple orange and").split()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transformers directory with random weights and its SentencePiece model as spiece.model."""
    root = tmp_path_factory.mktemp("fill_mask")
    rng = random.Random(0)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(400)]
    vocab = train_vocab(sentences, str(root / "vocab"), 60, num_threads=1)
    model = random_albert_for_pretraining(60, std=0.3)
    directory = root / "hf"
    model.save_pretrained(directory)
    shutil.copyfile(vocab["model"], directory / "spiece.model")
    return directory


def reference(directory: Path, text: str, top_k: int) -> tuple[list[int], list[list[tuple[int, float]]]]:
    """(input ids, per mask the top-k (id, probability)) from transformers' tokenizer and PyTorch model."""
    tokenizer = transformers.AlbertTokenizer.from_pretrained(directory)
    model = transformers.AlbertForPreTraining.from_pretrained(directory, attn_implementation="eager").eval()
    ids = tokenizer(text)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).prediction_logits[0]
    probabilities = torch.softmax(logits.double(), dim=-1).numpy()
    masks = [index for index, token in enumerate(ids) if token == tokenizer.mask_token_id]
    top = []
    for position in masks:
        order = np.argsort(-probabilities[position], kind="stable")[:top_k]
        top.append([(int(i), float(probabilities[position, i])) for i in order])
    return ids, top


def run(capsys: pytest.CaptureFixture, *args: str) -> dict[str, Any]:
    assert fill_mask.main([*args, "--json"]) == 0
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


def test_transformers_directory_matches_transformers(hf_dir: Path, capsys: pytest.CaptureFixture) -> None:
    ids, top = reference(hf_dir, TEXT, 5)
    result = run(capsys, "--model", str(hf_dir), "--text", TEXT, "--top_k", "5")
    check(result, ids, top)
    assert result["masks"][0]["predictions"][0]["token"] == result["masks"][0]["predictions"][0]["piece"].lstrip("▁")


def test_converted_directory_with_explicit_vocab(hf_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    hf.import_dir(hf_dir, tmp_path / "ours")
    assert fill_mask.main(["--model", str(tmp_path / "ours"), "--text", TEXT]) == 2
    assert "pass --vocab" in capsys.readouterr().err
    ids, top = reference(hf_dir, TEXT, 3)
    result = run(capsys, "--model", str(tmp_path / "ours"), "--text", TEXT, "--top_k", "3",
                 "--vocab", str(hf_dir / "spiece.model"))
    check(result, ids, top)


def test_text_output_and_errors(hf_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert fill_mask.main(["--model", str(hf_dir), "--text", "paris is a [MASK]", "--top_k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"\[MASK\] 1 \(token position \d+\):", lines[0]) and len(lines) == 4
    assert lines[-1].startswith("top-1 filled: paris is a")
    assert fill_mask.main(["--model", str(hf_dir), "--text", "no mask here"]) == 2
    assert "has no [MASK]" in capsys.readouterr().err
    assert fill_mask.main(["--model", str(hf_dir.parent), "--text", "a [MASK]"]) == 2
    assert "is not a model directory" in capsys.readouterr().err
