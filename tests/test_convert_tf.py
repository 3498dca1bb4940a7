"""Importing original TensorFlow ALBERT checkpoints, checked against transformers' PyTorch model.

Each test writes a TF checkpoint itself with `tf.compat.v1.train.Saver`, under the variable names of the original
implementation (reference section 5: `bert/...`, `cls/...`, `<var>/adam_m`, `<var>/adam_v`, `global_step`), from
random arrays. The same arrays are mapped to transformers' PyTorch names by this test's own table (kernels
transposed to [out, in]), loaded into `transformers.AlbertForPreTraining`, and its outputs are the reference for
the imported model. PyTorch runs in the session's torch worker (tests/conftest.py, tests/torch_reference.py, which
holds that table): this process imports TensorFlow and never torch. Nothing is downloaded.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import tensorflow as tf

from albert_jax.config import AlbertConfig
from albert_jax.convert import tf as convert_tf
from albert_jax.convert.hf import ConversionError, expected_shapes
from albert_jax.jobs import cli
from albert_jax.model import AlbertForPreTraining
from conftest import TorchWorker
from hf_fixtures import padded_batch

TOLERANCE = 1e-5
BATCH, LENGTH, PREDICTIONS = 3, 12, 3
TINY = dict(vocab_size=40, max_position_embeddings=16, type_vocab_size=2, intermediate_size=24, hidden_act="gelu",
            hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.02,
            net_structure_type=0, gap_size=0, num_memory_blocks=0, inner_group_num=1, down_scale_factor=1)
CASES = {
    "G=1,E!=H": dict(embedding_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                     num_hidden_groups=1),
    "G=2,E==H": dict(embedding_size=12, hidden_size=12, num_hidden_layers=4, num_attention_heads=3,
                     num_hidden_groups=2),
    # The original's int(i / L * G) runs group 14 at layer 15 and never group 15 here.
    "L=G=22": dict(embedding_size=4, hidden_size=8, num_hidden_layers=22, num_attention_heads=2,
                   num_hidden_groups=22, intermediate_size=8),
}


def tf_config(case: str) -> dict[str, Any]:
    return {**TINY, **CASES[case]}


def tf_variables(cfg: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Random values under the original's variable names and [in, out] kernel layout."""
    rng = np.random.default_rng(seed)
    V, E, H, F = cfg["vocab_size"], cfg["embedding_size"], cfg["hidden_size"], cfg["intermediate_size"]

    def normal(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 0.2, shape).astype(np.float32)

    def layer_norm(prefix: str, width: int) -> dict[str, np.ndarray]:
        return {f"{prefix}/gamma": rng.uniform(0.5, 1.5, width).astype(np.float32), f"{prefix}/beta": normal(width)}

    out = {"bert/embeddings/word_embeddings": normal(V, E),
           "bert/embeddings/position_embeddings": normal(cfg["max_position_embeddings"], E),
           "bert/embeddings/token_type_embeddings": normal(cfg["type_vocab_size"], E),
           **layer_norm("bert/embeddings/LayerNorm", E)}
    if E != H:
        out.update({"bert/encoder/embedding_hidden_mapping_in/kernel": normal(E, H),
                    "bert/encoder/embedding_hidden_mapping_in/bias": normal(H)})
    for group in range(cfg["num_hidden_groups"]):
        p = f"bert/encoder/transformer/group_{group}/inner_group_0/"
        for name in ("query", "key", "value"):
            out.update({f"{p}attention_1/self/{name}/kernel": normal(H, H),
                        f"{p}attention_1/self/{name}/bias": normal(H)})
        out.update({f"{p}attention_1/output/dense/kernel": normal(H, H), f"{p}attention_1/output/dense/bias": normal(H),
                    **layer_norm(f"{p}LayerNorm", H),
                    f"{p}ffn_1/intermediate/dense/kernel": normal(H, F), f"{p}ffn_1/intermediate/dense/bias": normal(F),
                    f"{p}ffn_1/intermediate/output/dense/kernel": normal(F, H),
                    f"{p}ffn_1/intermediate/output/dense/bias": normal(H),
                    **layer_norm(f"{p}LayerNorm_1", H)})
    out.update({"bert/pooler/dense/kernel": normal(H, H), "bert/pooler/dense/bias": normal(H),
                "cls/predictions/transform/dense/kernel": normal(H, E),
                "cls/predictions/transform/dense/bias": normal(E),
                **layer_norm("cls/predictions/transform/LayerNorm", E),
                "cls/predictions/output_bias": normal(V),
                "cls/seq_relationship/output_weights": normal(2, H), "cls/seq_relationship/output_bias": normal(2)})
    return out


def save_tf_checkpoint(prefix: Path, variables: dict[str, np.ndarray], step: int = 125000) -> None:
    """A TF1-style checkpoint as the original's Estimator writes it: weights, Adam slots, global_step."""
    rng = np.random.default_rng(1)
    values: dict[str, np.ndarray] = {}
    for name, value in variables.items():
        values[name] = value
        values[f"{name}/adam_m"] = rng.normal(0, 1, value.shape).astype(np.float32)
        values[f"{name}/adam_v"] = rng.uniform(0, 1, value.shape).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        var_list = {name: tf.compat.v1.Variable(value, name=f"v{index}")
                    for index, (name, value) in enumerate(values.items())}
        var_list["global_step"] = tf.compat.v1.Variable(np.int64(step), name="step")
        saver = tf.compat.v1.train.Saver(var_list=var_list)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(prefix), write_meta_graph=False, write_state=False)
    written = dict(tf.train.list_variables(str(prefix)))
    assert set(written) == set(values) | {"global_step"}
    assert all(tuple(written[name]) == value.shape for name, value in values.items())


def write_release(root: Path, cfg: dict[str, Any], variables: dict[str, np.ndarray],
                  prefix: str = "model.ckpt-best") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "albert_config.json").write_text(json.dumps(cfg))
    save_tf_checkpoint(root / prefix, variables)
    (root / "30k-clean.model").write_bytes(b"not a real sentencepiece model")
    return root


def restore(out: Path) -> tuple[AlbertConfig, Any]:
    config = AlbertConfig(**json.loads((out / "albert_config.json").read_text()))
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(out / "params")
    return config, params


@pytest.mark.parametrize("case", list(CASES))
def test_import_matches_transformers(case: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                                     torch_worker: TorchWorker) -> None:
    cfg = tf_config(case)
    variables = tf_variables(cfg)
    release = write_release(tmp_path / "release", cfg, variables)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert cli.main(["convert", "tf", str(release), str(tmp_path / "out")]) == 0
    line = capsys.readouterr().out
    L, G = cfg["num_hidden_layers"], cfg["num_hidden_groups"]
    never_run = 16 * (G - len({int(i / L * G) for i in range(L)}))  # 16 tensors per group
    assert f"imported {len(variables) - never_run} variables" in line
    assert f"skipped {2 * len(variables)} optimizer slots (adam_m/adam_v) and global_step" in line
    assert (f"and {never_run} variables of never-run groups" in line) == (never_run > 0)
    assert (tmp_path / "out" / "30k-clean.model").read_bytes() == (release / "30k-clean.model").read_bytes()

    config, params = restore(tmp_path / "out")
    assert config.hidden_act == "gelu_new" and config.layer_norm_eps == 1e-12
    assert config.hidden_dropout_prob == 0.1
    batch = padded_batch(cfg["vocab_size"], seed=2)
    mlm, sop = AlbertForPreTraining(config).apply(
        {"params": params}, jnp.asarray(batch["input_ids"]), jnp.asarray(batch["input_mask"]),
        jnp.asarray(batch["segment_ids"]), jnp.asarray(batch["masked_lm_positions"]), deterministic=True)

    reference = torch_worker("torch_reference", "tf_release_logits", cfg, variables, batch)
    missing, unexpected = reference["missing"], reference["unexpected"]
    assert not unexpected and set(missing) <= {"albert.embeddings.position_ids"}, (missing, unexpected)
    mlm_diff = np.abs(np.asarray(mlm) - reference["mlm"]).max()
    sop_diff = np.abs(np.asarray(sop) - reference["sop"]).max()
    print(f"{case}: max |diff| MLM logits {mlm_diff:.2e}, SOP logits {sop_diff:.2e}")
    assert mlm_diff < TOLERANCE and sop_diff < TOLERANCE


def test_never_run_groups_are_skipped_with_a_warning() -> None:
    cfg = tf_config("L=G=22")
    variables = tf_variables(cfg)
    with pytest.warns(UserWarning, match=r"differently from i\*G//L for L=22"):
        config = convert_tf.config_from_tf(cfg)
    assert config.num_hidden_groups == 22
    with pytest.warns(UserWarning, match="never runs"):
        params, summary = convert_tf.params_from_tf({n: v.shape for n, v in variables.items()}, variables.get,
                                                    config, 22)
    assert summary["unused_group_variables_skipped"] == 16  # group 15: 16 tensors
    query = params["albert"]["encoder"]["shared_layer"]["query"]["kernel"]
    group_14 = variables["bert/encoder/transformer/group_14/inner_group_0/attention_1/self/query/kernel"]
    np.testing.assert_array_equal(query[15].reshape(group_14.shape), group_14)


RELEASED = {  # (H, L, heads, FFN) of the four released sizes, v1 dropout (v2 uses 0 everywhere)
    "base": (768, 12, 12, 3072, 0.1), "large": (1024, 24, 16, 4096, 0.1),
    "xlarge": (2048, 24, 16, 8192, 0.1), "xxlarge": (4096, 12, 64, 16384, 0.0),
}
# Reference section 2: encoder + pooler, and with the pretraining heads.
PARAMETERS = {"base": (11_683_584, 11_813_810), "large": (17_683_968, 17_847_474),
              "xlarge": (58_724_864, 59_021_490), "xxlarge": (222_595_584, 223_158_450)}


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("size", list(RELEASED))
def test_released_configs(size: str, version: str) -> None:
    hidden, layers, heads, ffn, v1_dropout = RELEASED[size]
    dropout = v1_dropout if version == "v1" else 0
    released = {"attention_probs_dropout_prob": dropout, "hidden_act": "gelu", "hidden_dropout_prob": dropout,
                "embedding_size": 128, "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": ffn,
                "max_position_embeddings": 512, "num_attention_heads": heads, "num_hidden_layers": layers,
                "num_hidden_groups": 1, "net_structure_type": 0, "gap_size": 0, "num_memory_blocks": 0,
                "inner_group_num": 1, "down_scale_factor": 1, "type_vocab_size": 2, "vocab_size": 30000}
    config = convert_tf.config_from_tf(released)
    assert (config.hidden_act, config.hidden_dropout_prob, config.num_hidden_groups) == ("gelu_new", dropout, 1)
    shapes = expected_shapes(config)
    encoder = sum(int(np.prod(s.shape)) for path, s in shapes.items() if path[0] == "albert")
    total = sum(int(np.prod(s.shape)) for s in shapes.values())
    assert (encoder, total) == PARAMETERS[size]


def test_checkpoint_choice(tmp_path: Path) -> None:
    def touch(*names: str) -> None:
        for name in names:
            (tmp_path / name).write_bytes(b"")

    touch("albert_config.json", "model.ckpt-20.index", "model.ckpt-20.data-00000-of-00001",
          "model.ckpt-100.index", "model.ckpt-100.data-00000-of-00001", "model.ckpt-3.index",
          "model.ckpt-3.data-00000-of-00001")
    assert convert_tf.find_checkpoint(tmp_path) == tmp_path / "model.ckpt-100"
    touch("model.ckpt-best.index", "model.ckpt-best.data-00000-of-00001")
    assert convert_tf.find_checkpoint(tmp_path) == tmp_path / "model.ckpt-best"
    touch("model.ckpt-500.index")
    (tmp_path / "model.ckpt-best.index").unlink()
    with pytest.raises(ConversionError, match="model.ckpt-500.index has no model.ckpt-500.data"):
        convert_tf.find_checkpoint(tmp_path)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "albert_config.json").write_text("{}")
    (empty / "30k-clean.model").write_bytes(b"")
    with pytest.raises(ConversionError, match=r"no model.ckpt-best.index.*it holds: 30k-clean.model, albert_config"):
        convert_tf.find_checkpoint(empty)


def test_mismatches_name_the_variable() -> None:
    cfg = tf_config("G=1,E!=H")
    config = convert_tf.config_from_tf(cfg)
    variables = tf_variables(cfg)
    shapes = {name: value.shape for name, value in variables.items()}

    def convert(shapes: dict[str, Any]) -> None:
        convert_tf.params_from_tf(shapes, variables.get, config, 1)

    with pytest.raises(ConversionError, match=r"bert/pooler/dense/kernel is missing \(expected shape \(16, 16\)\)"):
        convert({n: s for n, s in shapes.items() if n != "bert/pooler/dense/kernel"})
    name = "bert/encoder/transformer/group_0/inner_group_0/ffn_1/intermediate/dense/kernel"
    with pytest.raises(ConversionError, match=f"{name} has shape \\(16, 30\\), expected \\(16, 24\\)"):
        convert({**shapes, name: (16, 30)})
    with pytest.raises(ConversionError, match="does not describe: bert/encoder/transformer/group_1/inner_group_0/x"):
        convert({**shapes, "bert/encoder/transformer/group_1/inner_group_0/x": (3,)})
    with pytest.raises(ConversionError, match="output_weights"):
        convert({**shapes, "output_weights": (2, 16), "output_weights/adam_m": (2, 16)})


def test_unsupported_configs() -> None:
    cfg = tf_config("G=1,E!=H")
    with pytest.raises(ConversionError, match="inner_group_num=2"):
        convert_tf.config_from_tf({**cfg, "inner_group_num": 2})
    with pytest.raises(ConversionError, match="hidden_act='swish'"):
        convert_tf.config_from_tf({**cfg, "hidden_act": "swish"})
    with pytest.raises(ConversionError, match="lacks hidden_size"):
        convert_tf.config_from_tf({k: v for k, v in cfg.items() if k != "hidden_size"})
    assert convert_tf.config_from_tf({**cfg, "hidden_act": "relu"}).hidden_act == "relu"


def test_cli_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tf_config("G=1,E!=H")
    variables = tf_variables(cfg)
    del variables["cls/predictions/output_bias"]
    release = write_release(tmp_path / "release", cfg, variables, prefix="model.ckpt-7")
    assert cli.main(["convert", "tf", str(release), str(tmp_path / "out")]) == 1
    assert "cls/predictions/output_bias is missing" in capsys.readouterr().err
    assert not (tmp_path / "out" / "params").exists()
