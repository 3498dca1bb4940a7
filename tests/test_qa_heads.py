"""The SQuAD / RACE heads against transformers' PyTorch AlbertForQuestionAnswering and AlbertForMultipleChoice.

Both directions go through the real conversion command (`convert hf import` / `convert hf export`): a random
transformers model imported here must compute the same start/end (choice) logits as in PyTorch, and a random
model of this project exported must load in transformers with no missing or unexpected tensors and compute the
same logits. PyTorch runs in the session's torch worker (tests/conftest.py, tests/qa_reference.py): this process never
imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from albert_jax.config import AlbertConfig
from albert_jax.convert import folder
from albert_jax.heads import AlbertForMultipleChoice, AlbertForQuestionAnswering, AlbertForSquadV2
from albert_jax.jobs import cli
from conftest import TorchWorker

TOLERANCE = 1e-5
HF_CONFIG = dict(vocab_size=64, embedding_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                 num_hidden_groups=1, intermediate_size=32, max_position_embeddings=32, hidden_act="gelu_new")
CONFIG = AlbertConfig(**{k: v for k, v in HF_CONFIG.items()}, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


def inputs(seed: int, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Random ids with real lengths varying per row (the rest padding) and two segments."""
    rng = np.random.default_rng(seed)
    length = shape[-1]
    ids = rng.integers(5, HF_CONFIG["vocab_size"], shape)
    real = rng.integers(length // 3, length + 1, shape[:-1])
    positions = np.arange(length)
    mask = (positions < real[..., None]).astype(np.int64)
    segments = ((positions >= real[..., None] // 2) & (mask == 1)).astype(np.int64)
    return {"input_ids": ids * mask, "input_mask": mask, "segment_ids": segments}


def ours(model: Any, params: Any, batch: dict[str, np.ndarray]) -> Any:
    return model.apply({"params": params}, *(jnp.asarray(batch[k]) for k in ("input_ids", "input_mask",
                                                                             "segment_ids")))


@pytest.mark.parametrize("kind", ["qa", "mc"])
def test_import_matches_transformers(kind: str, tmp_path: Path, torch_worker: TorchWorker) -> None:
    batch = inputs(1, (3, 12) if kind == "qa" else (2, 4, 12))
    expected = torch_worker("qa_reference", "random_model", kind, HF_CONFIG, 0, str(tmp_path / "hf"), batch)
    with pytest.warns(UserWarning):  # the QA model has no pooler, neither has pretraining heads: fresh, with a warning
        assert cli.main(["convert", "hf", "import", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    config, params = folder.read(tmp_path / "ours")
    assert config == CONFIG.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if kind == "qa":
        start, end = ours(AlbertForQuestionAnswering(config), params, batch)
        np.testing.assert_allclose(start, expected["start_logits"], atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(end, expected["end_logits"], atol=TOLERANCE, rtol=0)
    else:
        logits = ours(AlbertForMultipleChoice(config), params, batch)
        assert logits.shape == (2, 4)
        np.testing.assert_allclose(logits, expected["logits"], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("kind", ["qa", "mc"])
def test_export_matches_transformers(kind: str, tmp_path: Path, torch_worker: TorchWorker) -> None:
    model = AlbertForQuestionAnswering(CONFIG) if kind == "qa" else AlbertForMultipleChoice(CONFIG)
    batch = inputs(2, (3, 12) if kind == "qa" else (2, 4, 12))
    ids = jnp.zeros((1, 4, 8) if kind == "mc" else (1, 8), jnp.int32)
    params = jax.tree.map(np.asarray, nn.unbox(model.init(jax.random.PRNGKey(3), ids, ids, ids)["params"]))
    params = jax.tree.map(lambda a: a + np.random.default_rng(4).normal(0, 0.05, a.shape).astype(a.dtype), params)
    folder.write(tmp_path / "ours", CONFIG, params)
    assert cli.main(["convert", "hf", "export", "--model", str(tmp_path / "ours"), str(tmp_path / "hf")]) == 0
    expected = torch_worker("qa_reference", "saved_model", kind, str(tmp_path / "hf"), batch)
    assert expected["missing"] == [] and expected["unexpected"] == []
    if kind == "qa":
        start, end = ours(model, params, batch)
        np.testing.assert_allclose(start, expected["start_logits"], atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(end, expected["end_logits"], atol=TOLERANCE, rtol=0)
    else:
        np.testing.assert_allclose(ours(model, params, batch), expected["logits"], atol=TOLERANCE, rtol=0)


def test_original_v2_head(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The beam's end scores are the training-mode end log-probs at the beam's starts; masked positions are never
    proposed; the head has no transformers class, so export says so."""
    model = AlbertForSquadV2(CONFIG, start_n_top=3, end_n_top=2)
    batch = {k: jnp.asarray(v) for k, v in inputs(5, (2, 12)).items()}
    p_mask = jnp.asarray(np.r_[[[0, 1, 1, 1] + [0] * 7 + [1]] * 2], jnp.int32)
    params = model.init(jax.random.PRNGKey(0), batch["input_ids"], batch["input_mask"], batch["segment_ids"], p_mask,
                        jnp.zeros(2, jnp.int32))["params"]
    params = nn.unbox(params)
    beam = model.apply({"params": params}, batch["input_ids"], batch["input_mask"], batch["segment_ids"], p_mask)
    assert beam["start_top_index"].shape == (2, 3) and beam["end_top_index"].shape == (2, 6)
    masked = set(np.flatnonzero(np.asarray(p_mask[0])))
    proposed = set(np.asarray(beam["start_top_index"]).ravel()) | set(np.asarray(beam["end_top_index"]).ravel())
    assert not masked & proposed
    for rank in range(3):
        starts = beam["start_top_index"][:, rank]
        trained = model.apply({"params": params}, batch["input_ids"], batch["input_mask"], batch["segment_ids"],
                              p_mask, starts)
        for row in range(2):
            np.testing.assert_allclose(trained["start_log_probs"][row, starts[row]],
                                       beam["start_top_log_probs"][row, rank], atol=1e-6)
            ends = beam["end_top_index"][row, rank * 2:rank * 2 + 2]
            np.testing.assert_allclose(trained["end_log_probs"][row, ends], beam["end_top_log_probs"][row, rank * 2:
                                       rank * 2 + 2], atol=1e-6)
            order = np.argsort(-np.asarray(trained["end_log_probs"][row]))[:2]
            assert list(order) == list(np.asarray(ends))
        np.testing.assert_allclose(trained["cls_logits"], beam["cls_logits"], atol=1e-6)
    folder.write(tmp_path / "v2", CONFIG, jax.tree.map(np.asarray, params))
    assert cli.main(["convert", "hf", "export", "--model", str(tmp_path / "v2"), str(tmp_path / "hf")]) == 1
    assert "has no transformers counterpart" in capsys.readouterr().err
