"""transformers' PyTorch AlbertForPreTraining as the reference, run in the session's spawned torch worker.

Imports only numpy, torch and transformers (never TensorFlow, never albert_jax): the pytest process never imports
torch. Every function takes and returns plain values: numpy arrays, paths as strings, lists and dicts.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
import transformers

INPUT_NAMES = {"input_ids": "input_ids", "attention_mask": "input_mask", "token_type_ids": "segment_ids"}


def _randomize(model: Any, std: float, scales: tuple[str, ...]) -> None:
    """Parameters named `*<one of scales>` uniform in [0.5, 1.5], every other one normal(0, std), in
    named_parameters order."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(scales):
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, std)


def _state(module: Any) -> dict[str, np.ndarray]:
    return {name: tensor.detach().numpy().copy() for name, tensor in module.state_dict().items()}


def _config_dict(model: Any) -> dict[str, Any]:
    """The model's full config as JSON values (no torch objects cross back)."""
    return json.loads(model.config.to_json_string(use_diff=False))


def _loading_info(info: dict[str, Any]) -> dict[str, list[str]]:
    return {key: sorted(map(str, value)) for key, value in info.items() if key != "error_msgs"}


def _inputs(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    return {name: torch.as_tensor(batch[key], dtype=torch.long) for name, key in INPUT_NAMES.items() if key in batch}


def _outputs(model: Any, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sequence, pooled, MLM logits at `masked_lm_positions` ([B, P, V]) and SOP logits."""
    inputs = _inputs(batch)
    with torch.no_grad():
        base = model.albert(**inputs)
        full = model(**inputs)
    rows = np.arange(len(batch["input_ids"]))[:, None]
    return dict(sequence=base.last_hidden_state.numpy(), pooled=base.pooler_output.numpy(),
                mlm=full.prediction_logits.numpy()[rows, batch["masked_lm_positions"]],
                sop=full.sop_logits.numpy())


def _tiny_model(vocab_size: int, std: float, seed: int) -> Any:
    """E 8, H 16, 2 layers, eval mode; LayerNorm scales (not the full_layer_layer_norm ones) in [0.5, 1.5], every
    other tensor normal(0, std)."""
    torch.manual_seed(seed)
    config = transformers.AlbertConfig(vocab_size=vocab_size, embedding_size=8, hidden_size=16, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                                       hidden_act="gelu_new", hidden_dropout_prob=0.0,
                                       attention_probs_dropout_prob=0.0, attn_implementation="eager")
    model = transformers.AlbertForPreTraining(config).eval()
    _randomize(model, std, ("LayerNorm.weight",))
    return model


def save_tiny_model(hf_dir: str, vocab_size: int, std: float, seed: int = 0) -> None:
    """A tiny random AlbertForPreTraining (see `_tiny_model`) saved to `hf_dir` with save_pretrained."""
    _tiny_model(vocab_size, std, seed).save_pretrained(hf_dir)


def random_model(config: dict[str, Any], seed: int = 0, identity_projection: bool = False,
                 batch: dict[str, np.ndarray] | None = None, save_dir: str | None = None) -> dict[str, Any]:
    """An AlbertForPreTraining of `config` (eager attention), every tensor random (all LayerNorm scales in
    [0.5, 1.5], the rest normal(0, 0.1)), optionally with an identity embedding projection: its config dict, state dicts (whole and of `.albert`), outputs on `batch` and,
    with `save_dir`, saved there."""
    torch.manual_seed(seed)
    hf_config = transformers.AlbertConfig(**config, attn_implementation="eager")
    model = transformers.AlbertForPreTraining(hf_config).eval()
    _randomize(model, 0.1, ("LayerNorm.weight", "layer_norm.weight"))
    if identity_projection:
        with torch.no_grad():
            model.albert.encoder.embedding_hidden_mapping_in.weight.copy_(torch.eye(hf_config.hidden_size))
            model.albert.encoder.embedding_hidden_mapping_in.bias.zero_()
    if save_dir is not None:
        model.save_pretrained(save_dir)
    return {"config": _config_dict(model), "state": _state(model), "base_state": _state(model.albert),
            "outputs": None if batch is None else _outputs(model, batch)}


def saved_model(hf_dir: str, batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """AlbertForPreTraining.from_pretrained(hf_dir) (eager): its loading info, group count, outputs on `batch`."""
    model, info = transformers.AlbertForPreTraining.from_pretrained(hf_dir, output_loading_info=True,
                                                                    attn_implementation="eager")
    return {"info": _loading_info(info), "num_hidden_groups": model.config.num_hidden_groups,
            "outputs": _outputs(model.eval(), batch)}


def resave(hf_dir: str, out_dir: str) -> dict[str, Any]:
    """Loads `hf_dir` as AlbertForPreTraining (saved again to `out_dir`) and as AlbertModel: both loading infos."""
    model, info = transformers.AlbertForPreTraining.from_pretrained(hf_dir, output_loading_info=True)
    _, base_info = transformers.AlbertModel.from_pretrained(hf_dir, output_loading_info=True)
    model.save_pretrained(out_dir)
    return {"info": _loading_info(info), "base_info": _loading_info(base_info)}


def masked_logits(hf_dir: str, batches: list[dict[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """Per batch, the MLM logits at `masked_lm_positions` ([B, P, V]) and the SOP logits of the saved model."""
    model = transformers.AlbertForPreTraining.from_pretrained(hf_dir, attn_implementation="eager").eval()
    mlm, sop = [], []
    with torch.no_grad():
        for batch in batches:
            out = model(**_inputs(batch))
            positions = batch["masked_lm_positions"].astype(np.int64)
            mlm.append(np.take_along_axis(out.prediction_logits.numpy(), positions[:, :, None], 1))
            sop.append(out.sop_logits.numpy())
    return {"mlm": mlm, "sop": sop}


def prediction_logits(hf_dir: str, ids: np.ndarray) -> np.ndarray:
    """The saved model's MLM logits at every position of `ids` (no attention mask, one segment)."""
    model = transformers.AlbertForPreTraining.from_pretrained(hf_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(ids, dtype=torch.long)).prediction_logits.numpy()


def fill_mask(hf_dir: str, text: str, top_k: int) -> tuple[list[int], list[list[tuple[int, float]]]]:
    """(input ids, per mask the top-k (id, probability)) from transformers' tokenizer and PyTorch model."""
    tokenizer = transformers.AlbertTokenizer.from_pretrained(hf_dir)
    model = transformers.AlbertForPreTraining.from_pretrained(hf_dir, attn_implementation="eager").eval()
    ids = tokenizer(text)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).prediction_logits[0]
    probabilities = torch.softmax(logits.double(), dim=-1).numpy()
    masks = [index for index, token in enumerate(ids) if token == tokenizer.mask_token_id]
    top = []
    for position in masks:
        order = np.argsort(-probabilities[position], kind="stable")[:top_k]
        top.append([(int(i), float(probabilities[position, i])) for i in order])
    return [int(i) for i in ids], top


def _tf_release_model(cfg: dict[str, Any], variables: dict[str, np.ndarray]) -> tuple[Any, list[str], list[str]]:
    """transformers' AlbertForPreTraining holding the values of an original TF checkpoint (tests/test_convert_tf.py
    writes them under the original names): this module's own name table, kernels transposed to [out, in]. With the
    missing and unexpected names load_state_dict reports."""
    L, G, H, E = cfg["num_hidden_layers"], cfg["num_hidden_groups"], cfg["hidden_size"], cfg["embedding_size"]
    hf_groups = G if all(int(i / (L / G)) == int(i / L * G) for i in range(L)) else L
    config = transformers.AlbertConfig(
        vocab_size=cfg["vocab_size"], embedding_size=E, hidden_size=H, num_hidden_layers=L,
        num_hidden_groups=hf_groups, num_attention_heads=cfg["num_attention_heads"],
        intermediate_size=cfg["intermediate_size"], inner_group_num=1, hidden_act="gelu_new",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0,
        max_position_embeddings=cfg["max_position_embeddings"], type_vocab_size=cfg["type_vocab_size"],
        layer_norm_eps=1e-12, attn_implementation="eager")
    v = {name: torch.from_numpy(value.copy()) for name, value in variables.items()}
    state = {"albert.embeddings.word_embeddings.weight": v["bert/embeddings/word_embeddings"],
             "albert.embeddings.position_embeddings.weight": v["bert/embeddings/position_embeddings"],
             "albert.embeddings.token_type_embeddings.weight": v["bert/embeddings/token_type_embeddings"],
             "albert.embeddings.LayerNorm.weight": v["bert/embeddings/LayerNorm/gamma"],
             "albert.embeddings.LayerNorm.bias": v["bert/embeddings/LayerNorm/beta"],
             "albert.pooler.weight": v["bert/pooler/dense/kernel"].T,
             "albert.pooler.bias": v["bert/pooler/dense/bias"],
             "predictions.dense.weight": v["cls/predictions/transform/dense/kernel"].T,
             "predictions.dense.bias": v["cls/predictions/transform/dense/bias"],
             "predictions.LayerNorm.weight": v["cls/predictions/transform/LayerNorm/gamma"],
             "predictions.LayerNorm.bias": v["cls/predictions/transform/LayerNorm/beta"],
             "predictions.bias": v["cls/predictions/output_bias"],
             "predictions.decoder.weight": v["bert/embeddings/word_embeddings"],
             "predictions.decoder.bias": v["cls/predictions/output_bias"],
             "sop_classifier.classifier.weight": v["cls/seq_relationship/output_weights"],
             "sop_classifier.classifier.bias": v["cls/seq_relationship/output_bias"]}
    if E != H:
        mapping = "bert/encoder/embedding_hidden_mapping_in"
        state["albert.encoder.embedding_hidden_mapping_in.weight"] = v[f"{mapping}/kernel"].T
        state["albert.encoder.embedding_hidden_mapping_in.bias"] = v[f"{mapping}/bias"]
    else:
        state["albert.encoder.embedding_hidden_mapping_in.weight"] = torch.eye(H)
        state["albert.encoder.embedding_hidden_mapping_in.bias"] = torch.zeros(H)
    pairs = {"attention.query": "attention_1/self/query", "attention.key": "attention_1/self/key",
             "attention.value": "attention_1/self/value", "attention.dense": "attention_1/output/dense",
             "ffn": "ffn_1/intermediate/dense", "ffn_output": "ffn_1/intermediate/output/dense"}
    norms = {"attention.LayerNorm": "LayerNorm", "full_layer_layer_norm": "LayerNorm_1"}
    for hf_group in range(hf_groups):
        tf_groups = {int(i / L * G) for i in range(L) if int(i / (L / hf_groups)) == hf_group}
        assert len(tf_groups) == 1
        tf_prefix = f"bert/encoder/transformer/group_{tf_groups.pop()}/inner_group_0/"
        hf_prefix = f"albert.encoder.albert_layer_groups.{hf_group}.albert_layers.0."
        for hf_name, tf_name in pairs.items():
            state[f"{hf_prefix}{hf_name}.weight"] = v[f"{tf_prefix}{tf_name}/kernel"].T
            state[f"{hf_prefix}{hf_name}.bias"] = v[f"{tf_prefix}{tf_name}/bias"]
        for hf_name, tf_name in norms.items():
            state[f"{hf_prefix}{hf_name}.weight"] = v[f"{tf_prefix}{tf_name}/gamma"]
            state[f"{hf_prefix}{hf_name}.bias"] = v[f"{tf_prefix}{tf_name}/beta"]
    model = transformers.AlbertForPreTraining(config).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    return model, sorted(missing), sorted(unexpected)


def tf_release_logits(cfg: dict[str, Any], variables: dict[str, np.ndarray],
                      batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """MLM logits at `masked_lm_positions` and SOP logits on `batch` of the model `_tf_release_model` builds from
    a TF release's config dict and variables, with the names load_state_dict left missing or unexpected."""
    model, missing, unexpected = _tf_release_model(cfg, variables)
    with torch.no_grad():
        out = model(**_inputs(batch))
    mlm = np.take_along_axis(out.prediction_logits.numpy(), batch["masked_lm_positions"][..., None], axis=1)
    return {"mlm": mlm, "sop": out.sop_logits.numpy(), "missing": missing, "unexpected": unexpected}
