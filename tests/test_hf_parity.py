"""Parity with HuggingFace transformers' PyTorch ALBERT, the independent reference, and exact weight round trips.

Every numeric check compares this project's Flax model against `transformers.AlbertForPreTraining` run in
PyTorch (fp32, eval mode, eager attention) on random weights, including random LayerNorm scales and biases.
PyTorch runs in the session's torch worker (tests/conftest.py, tests/torch_reference.py): this process never
imports torch.
Padded positions are compared too: padding only masks attention *keys* (both models add a large negative score
there), so both compute the same values at padded query positions as well.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from albert_jax.config import AlbertConfig
from albert_jax.convert import folder, hf
from albert_jax.jobs import cli
from albert_jax.model import AlbertForPreTraining
from conftest import TorchWorker
from hf_fixtures import padded_batch

TOLERANCE = 1e-5

TINY = dict(vocab_size=64, max_position_embeddings=32, type_vocab_size=2, intermediate_size=32)
BATCH_VOCAB = TINY["vocab_size"]  # the random batches' ids; every imported config must have this vocabulary
PARITY_CONFIGS = {
    "E!=H,G=1": dict(embedding_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                     num_hidden_groups=1, hidden_act="gelu_new"),
    "L=4,G=2": dict(embedding_size=8, hidden_size=24, num_hidden_layers=4, num_attention_heads=3,
                    num_hidden_groups=2, hidden_act="gelu_new"),
    "L=6,G=4,erf-gelu": dict(embedding_size=12, hidden_size=16, num_hidden_layers=6, num_attention_heads=4,
                             num_hidden_groups=4, hidden_act="gelu"),
    "E==H,G=2": dict(embedding_size=16, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     num_hidden_groups=2, hidden_act="gelu_new"),
    # transformers' float group formula differs from i*G//L here (layer 9 -> group 6, not 7).
    "L=18,G=14": dict(embedding_size=4, hidden_size=8, num_hidden_layers=18, num_attention_heads=2,
                      num_hidden_groups=14, hidden_act="relu", intermediate_size=16),
}


def hf_model(worker: TorchWorker, overrides: dict[str, Any], identity_projection: bool = False,
             batch: dict[str, np.ndarray] | None = None, save_dir: Path | None = None) -> dict[str, Any]:
    """A transformers AlbertForPreTraining with every tensor random (LayerNorm scales around 1), built in the torch
    worker (seed 0): its config dict, state dicts ("state", "base_state" of `.albert`), outputs on `batch`."""
    return worker("torch_reference", "random_model", {**TINY, **overrides}, 0, identity_projection, batch,
                  None if save_dir is None else str(save_dir))


def ours_outputs(config: AlbertConfig, params: Any, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    model = AlbertForPreTraining(config)
    args = [jnp.asarray(batch[k], jnp.int32) for k in ("input_ids", "input_mask", "segment_ids")]

    @jax.jit
    def run(params: Any) -> tuple[Any, ...]:
        sequence, pooled = model.apply({"params": params}, *args, method=lambda m, *a: m.albert(*a))
        mlm, sop = model.apply({"params": params}, *args, jnp.asarray(batch["masked_lm_positions"], jnp.int32))
        return sequence, pooled, mlm, sop

    return dict(zip(("sequence", "pooled", "mlm", "sop"), map(np.asarray, run(params))))


def assert_parity(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray], label: str) -> None:
    diffs = {name: float(np.max(np.abs(ours[name] - reference[name]))) for name in reference}
    print(f"{label}: max abs diff {diffs}")
    for name in reference:
        assert ours[name].shape == reference[name].shape, name
    assert max(diffs.values()) <= TOLERANCE, f"{label}: {diffs}"


def randomize(params: Any, seed: int = 2) -> Any:
    """Our parameter tree with every leaf random (LayerNorm scales around 1), so nothing is trivially 0/1."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({
        path: (rng.uniform(0.5, 1.5, leaf.shape) if path[-1] == "scale"
               else rng.normal(0.0, 0.1, leaf.shape)).astype(leaf.dtype)
        for path, leaf in flat.items()})


def random_params(config: AlbertConfig) -> Any:
    """Random unboxed parameters shaped like `init_params(config)` (from its abstract shapes: eager init is slow)."""
    return randomize(traverse_util.unflatten_dict(
        {path: np.zeros(leaf.shape, leaf.dtype) for path, leaf in hf.expected_shapes(config).items()}))


def assert_trees_equal(a: Any, b: Any) -> None:
    flat_a, flat_b = traverse_util.flatten_dict(a), traverse_util.flatten_dict(b)
    assert flat_a.keys() == flat_b.keys()
    for path in flat_a:
        x, y = np.asarray(flat_a[path]), np.asarray(flat_b[path])
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), path


@pytest.mark.parametrize("name", PARITY_CONFIGS)
def test_import_matches_transformers(name: str, torch_worker: TorchWorker) -> None:
    overrides = PARITY_CONFIGS[name]
    batch = padded_batch(BATCH_VOCAB, seed=1)
    model = hf_model(torch_worker, overrides, overrides["embedding_size"] == overrides["hidden_size"], batch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = hf.config_from_hf(model["config"])
        params = hf.params_from_hf(model["state"], config)
    expanded = not hf.assignments_agree(overrides["num_hidden_groups"], overrides["num_hidden_layers"])
    assert config.num_hidden_groups == (overrides["num_hidden_layers"] if expanded else overrides["num_hidden_groups"])
    assert any("differently" in str(w.message) for w in caught) == expanded
    assert config.vocab_size == BATCH_VOCAB
    assert_parity(ours_outputs(config, params, batch), model["outputs"], f"import {name}")


def test_import_albert_model_checkpoint_without_heads(torch_worker: TorchWorker) -> None:
    """An AlbertModel state dict (no `albert.` prefix, no heads): exact encoder, heads freshly initialized."""
    batch = padded_batch(BATCH_VOCAB, seed=1)
    model = hf_model(torch_worker, PARITY_CONFIGS["L=4,G=2"], batch=batch)
    state = model["base_state"]
    assert not any(k.startswith("albert.") for k in state)
    config = hf.config_from_hf(model["config"])
    assert config.vocab_size == BATCH_VOCAB
    with pytest.warns(UserWarning, match="no MLM head .* and no sentence-order head"):
        params = hf.params_from_hf(state, config)
    ours, reference = ours_outputs(config, params, batch), model["outputs"]
    assert_parity({k: ours[k] for k in ("sequence", "pooled")}, {k: reference[k] for k in ("sequence", "pooled")},
                  "AlbertModel import")
    assert np.all(params["mlm_layer_norm"]["scale"] == 1) and np.all(params["sentence_classifier"]["bias"] == 0)


EXPORT_CONFIGS = {
    "attention-shared": dict(embedding_size=8, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                             num_hidden_groups=2, sharing="attention"),
    "ffn-shared": dict(embedding_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                       num_hidden_groups=1, sharing="ffn"),
    "none,E==H": dict(embedding_size=16, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                      sharing="none"),
    "all,L=18,G=14": dict(embedding_size=4, hidden_size=8, num_hidden_layers=18, num_attention_heads=2,
                          num_hidden_groups=14, intermediate_size=16),
}


@pytest.mark.parametrize("name", EXPORT_CONFIGS)
def test_export_matches_transformers(name: str, tmp_path: Path, torch_worker: TorchWorker) -> None:
    """Our random weights, exported; transformers loading the files computes what our model computes."""
    config = AlbertConfig(**{**TINY, **EXPORT_CONFIGS[name]})
    params = random_params(config)
    hf.save_hf_dir(config, params, tmp_path)
    batch = padded_batch(config.vocab_size, seed=1)
    model = torch_worker("torch_reference", "saved_model", str(tmp_path), batch)
    info = model["info"]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert model["num_hidden_groups"] == hf.hf_num_groups(config)
    assert_parity(ours_outputs(config, params, batch), model["outputs"], f"export {name}")


@pytest.mark.parametrize("name", ["L=4,G=2", "E==H,G=2"])
def test_round_trip_through_transformers_is_exact(name: str, tmp_path: Path, torch_worker: TorchWorker) -> None:
    config = AlbertConfig(**{**TINY, **PARITY_CONFIGS[name]})
    params = random_params(config)
    hf.save_hf_dir(config, params, tmp_path / "ours")
    loaded = torch_worker("torch_reference", "resave", str(tmp_path / "ours"), str(tmp_path / "theirs"))
    info, base_info = loaded["info"], loaded["base_info"]
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not base_info["missing_keys"], base_info
    loaded_config, loaded = hf.load_hf_dir(tmp_path / "theirs")
    assert loaded_config == config
    assert_trees_equal(loaded, params)


@pytest.mark.parametrize("overrides", [
    dict(sharing="all", num_hidden_groups=2),
    dict(sharing="none", embedding_size=16),
    dict(sharing="attention", num_hidden_groups=1, param_dtype="bfloat16"),
])
def test_params_round_trip_is_exact(overrides: dict[str, Any]) -> None:
    config = AlbertConfig(**{**TINY, **PARITY_CONFIGS["L=4,G=2"], "hidden_size": 16, "num_attention_heads": 2,
                             **overrides})
    params = random_params(config)
    # Partial sharing is exported with a group per layer; importing into the same config picks the copies back.
    assert_trees_equal(hf.params_from_hf(hf.params_to_hf(params, config), config), params)


def test_command_line_import_then_export(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         torch_worker: TorchWorker) -> None:
    hf_model(torch_worker, PARITY_CONFIGS["L=6,G=4,erf-gelu"], save_dir=tmp_path / "hf")
    assert cli.main(["convert", "hf", "import", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    ours_config = json.loads((tmp_path / "ours" / folder.CONFIG_FILE).read_text())
    assert ours_config["num_hidden_groups"] == 4 and ours_config["hidden_act"] == "gelu"
    assert cli.main(["convert", "hf", "export", "--model", str(tmp_path / "ours"), str(tmp_path / "back")]) == 0
    original, exported = hf.load_hf_state(tmp_path / "hf"), hf.load_hf_state(tmp_path / "back")
    assert original.keys() == exported.keys()
    assert all(np.array_equal(original[k], exported[k]) for k in original)

    assert cli.main(["convert", "hf", "import", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["convert", "hf", "import", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 1
    assert "nowhere does not exist" in capsys.readouterr().err
    assert cli.main(["convert", "hf", "export", "--model", str(tmp_path / "hf"), str(tmp_path / "y")]) == 1
    assert "has no albert_config.json" in capsys.readouterr().err


def test_clear_errors(torch_worker: TorchWorker) -> None:
    model = hf_model(torch_worker, PARITY_CONFIGS["E!=H,G=1"])
    config = hf.config_from_hf(model["config"])
    state = model["state"]
    name = "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight"
    state[name] = state[name][:, :-1]
    with pytest.raises(hf.ConversionError, match=rf"{name} has shape \(32, 15\), expected \(32, 16\)"):
        hf.params_from_hf(state, config)

    square = hf_model(torch_worker, PARITY_CONFIGS["E==H,G=2"])
    with pytest.raises(hf.ConversionError, match="not the identity with zero bias: its function cannot be "):
        hf.params_from_hf(square["state"], hf.config_from_hf(square["config"]))

    with pytest.raises(hf.ConversionError, match="inner_group_num=2 is not supported"):
        hf.config_from_hf({**model["config"], "inner_group_num": 2})
