"""Import and export HuggingFace transformers ALBERT checkpoints (config.json + safetensors), no torch needed.

What maps to what
-----------------
transformers stores one `AlbertLayer` per group (`albert.encoder.albert_layer_groups.{g}.albert_layers.0.*`,
`inner_group_num` must be 1) and PyTorch `Linear` weights as [out, in]. This project stores each weight family as
a stack of unique copies on a leading axis, kernels as [in, out], and q/k/v kernels as [H, heads, head_dim] and
the attention output kernel as [heads, head_dim, H] (see `albert_jax.model`). Every tensor is converted by a
transpose and/or reshape only, so conversions are exact in both directions.

Decisions (each one keeps the two models computing the same function):
* Layer-to-group assignment. transformers picks group `int(i / (L / G))` in floating point, this project picks
  copy `i * G // L` in integers. They agree for every L < 18 but not always beyond (e.g. L=18, G=14, layer 9).
  Import follows transformers' assignment exactly: `config_from_hf` keeps G copies when the two rules agree and
  otherwise asks for one copy per layer (G = L, a warning says so); `params_from_hf` fills each of our copies
  from the transformers group its layers use.
* Sharing. An imported model always gets `sharing='all'` with G groups (G = L is then the same parameter tree
  and computation as `sharing='none'`). transformers cannot express `sharing='attention'`/`'ffn'` (nor a
  mismatching assignment): export writes G = L groups, duplicating the shared block into each layer's group;
  transformers then computes the same outputs, but the file holds the duplicated weights.
* E == H. This project then has no `embedding_hidden_mapping_in`; transformers always has it. Export writes an
  identity weight and zero bias; import accepts E == H only if the mapping is exactly that.
* Tied decoder. transformers 5 ties `predictions.decoder` to the word embeddings and `predictions.bias` and omits
  it on save; export omits it too. Import accepts it (older checkpoints) only if it equals the tied tensors.
* Missing heads. An `AlbertModel` checkpoint (keys with or without the `albert.` prefix) has no MLM/SOP heads.
  `params_from_hf` still returns the full AlbertForPreTraining tree, with the absent heads freshly initialized
  like `init_params` (truncated normal kernels, zero biases, unit LayerNorm scales; `seed` picks them) and a
  warning naming them: `params["albert"]` is the exact encoder, and pretraining can continue from the result.
* Tensors of other task heads (e.g. `classifier.*`) are ignored with a warning.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from albert_jax.config import AlbertConfig, copy_index
from albert_jax.convert import folder
from albert_jax.convert.folder import ConversionError
from albert_jax.model import param_shapes, truncated_normal

CONFIG_FIELDS = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob",
                 "max_position_embeddings", "type_vocab_size", "initializer_range", "layer_norm_eps")
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
LAYER_PREFIX = "albert.encoder.albert_layer_groups.{}.albert_layers.0."
GROUP_NAME = re.compile(r"albert\.encoder\.albert_layer_groups\.(\d+)\.")
SHARED = ("albert", "encoder", "shared_layer")

# Our path -> (transformers name, layout kind) for tensors outside the layer stacks.
GLOBAL_TENSORS: dict[tuple[str, ...], tuple[str, str]] = {
    ("albert", "embeddings", "word_embeddings"): ("albert.embeddings.word_embeddings.weight", "same"),
    ("albert", "embeddings", "position_embeddings"): ("albert.embeddings.position_embeddings.weight", "same"),
    ("albert", "embeddings", "token_type_embeddings"): ("albert.embeddings.token_type_embeddings.weight", "same"),
    ("albert", "embeddings", "layer_norm", "scale"): ("albert.embeddings.LayerNorm.weight", "same"),
    ("albert", "embeddings", "layer_norm", "bias"): ("albert.embeddings.LayerNorm.bias", "same"),
    ("albert", "encoder", "embedding_projection", "kernel"): ("albert.encoder.embedding_hidden_mapping_in.weight",
                                                              "linear"),
    ("albert", "encoder", "embedding_projection", "bias"): ("albert.encoder.embedding_hidden_mapping_in.bias", "same"),
}
# The pooler and the two pretraining heads, each all present or all absent in a checkpoint.
HEAD_TENSORS: dict[str, dict[tuple[str, ...], tuple[str, str]]] = {
    "pooler (albert.pooler.*)": {
        ("albert", "pooler", "kernel"): ("albert.pooler.weight", "linear"),
        ("albert", "pooler", "bias"): ("albert.pooler.bias", "same"),
    },
    "MLM head (predictions.*)": {
        ("mlm_dense", "kernel"): ("predictions.dense.weight", "linear"),
        ("mlm_dense", "bias"): ("predictions.dense.bias", "same"),
        ("mlm_layer_norm", "scale"): ("predictions.LayerNorm.weight", "same"),
        ("mlm_layer_norm", "bias"): ("predictions.LayerNorm.bias", "same"),
        ("mlm_output_bias",): ("predictions.bias", "same"),
    },
    "sentence-order head (sop_classifier.*)": {
        ("sentence_classifier", "kernel"): ("sop_classifier.classifier.weight", "linear"),
        ("sentence_classifier", "bias"): ("sop_classifier.classifier.bias", "same"),
    },
}
# Our module under shared_layer -> (family, transformers module inside the layer, kind of kernel, kind of bias).
LAYER_MODULES: dict[str, tuple[str, str, str, str]] = {
    "query": ("attention", "attention.query", "qkv", "qkv_bias"),
    "key": ("attention", "attention.key", "qkv", "qkv_bias"),
    "value": ("attention", "attention.value", "qkv", "qkv_bias"),
    "attention_output": ("attention", "attention.dense", "attn_out", "same"),
    "attention_layer_norm": ("attention", "attention.LayerNorm", "same", "same"),
    "ffn": ("ffn", "ffn", "linear", "same"),
    "ffn_output": ("ffn", "ffn_output", "linear", "same"),
    "ffn_layer_norm": ("ffn", "full_layer_layer_norm", "same", "same"),
}
TORCH_PARAM = {"kernel": "weight", "scale": "weight", "bias": "bias"}
# Fine-tuning heads with a transformers counterpart: architecture -> (our module, transformers module, outputs).
TASK_HEADS: dict[str, tuple[str, str, int]] = {
    "AlbertForQuestionAnswering": ("qa_outputs", "qa_outputs", 2),
    "AlbertForMultipleChoice": ("choice_classifier", "classifier", 1),
}
PRETRAINING = "AlbertForPreTraining"


def hf_group(layer: int, num_groups: int, num_layers: int) -> int:
    """The group transformers runs at layer `layer` (its own float formula, reproduced exactly)."""
    return int(layer / (num_layers / num_groups))


def assignments_agree(num_groups: int, num_layers: int) -> bool:
    """Whether transformers' group of every layer equals this project's copy `i * G // L`."""
    return all(hf_group(i, num_groups, num_layers) == copy_index(i, num_groups, num_layers)
               for i in range(num_layers))


def config_from_hf(hf: Mapping[str, Any]) -> AlbertConfig:
    """Our AlbertConfig for a transformers ALBERT `config.json` dict (compute and parameter dtypes float32).

    Fields only transformers has (token ids, classifier dropout, the TF-era `gap_size`, ...) do not change the
    pretraining computation and are dropped. G becomes L when the two layer-to-group rules disagree (module doc).
    """
    if hf.get("model_type", "albert") != "albert":
        raise ConversionError(f"config has model_type={hf['model_type']!r}; only 'albert' checkpoints convert")
    if hf.get("inner_group_num", 1) != 1:
        raise ConversionError(f"inner_group_num={hf['inner_group_num']} is not supported: this model runs one "
                              "layer per group step; only checkpoints with inner_group_num=1 (all released "
                              "ALBERTs) convert")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConversionError(f"position_embedding_type={hf['position_embedding_type']!r} is not supported; only "
                              "'absolute' position embeddings convert")
    defaults = AlbertConfig()
    fields = {name: hf.get(name, getattr(defaults, name)) for name in CONFIG_FIELDS}
    layers, groups = fields["num_hidden_layers"], hf.get("num_hidden_groups", 1)
    if not assignments_agree(groups, layers):
        warnings.warn(f"transformers assigns layers to its {groups} groups differently from i*G//L for L={layers}; "
                      f"importing with one weight copy per layer (num_hidden_groups={layers}) to stay exact")
        groups = layers
    try:
        return AlbertConfig(**fields, num_hidden_groups=groups, sharing="all")
    except ValueError as error:
        raise ConversionError(f"the transformers config cannot be represented: {error}") from error


def hf_num_groups(config: AlbertConfig) -> int:
    """Groups transformers needs: our G when one copy count and matching assignment, else one per layer."""
    copies = config.num_attention_copies
    if copies == config.num_ffn_copies and assignments_agree(copies, config.num_hidden_layers):
        return copies
    return config.num_hidden_layers


def config_to_hf(config: AlbertConfig, architecture: str = "AlbertForPreTraining") -> dict[str, Any]:
    """A transformers `config.json` dict for `architecture` computing what `config` computes.

    `classifier_dropout_prob` is 0 for AlbertForPreTraining because our sentence-order head has no dropout (as
    in the original pretraining), 0.1 for multiple choice (the default of our head and of the original
    run_race); token ids are the original vocabulary's (<pad>=0, [CLS]=2, [SEP]=3).
    """
    hf = {name: getattr(config, name) for name in CONFIG_FIELDS}
    dropout = 0.1 if architecture == "AlbertForMultipleChoice" else 0.0
    hf.update(model_type="albert", architectures=[architecture], num_hidden_groups=hf_num_groups(config),
              inner_group_num=1, classifier_dropout_prob=dropout, pad_token_id=0, bos_token_id=2, eos_token_id=3,
              tie_word_embeddings=True, dtype=config.param_dtype)
    return hf


def _hf_shape(kind: str, ours: tuple[int, ...]) -> tuple[int, ...]:
    if kind == "same":
        return ours
    if kind == "linear":
        return ours[::-1]
    if kind == "qkv":  # [H, heads, head_dim] <- [heads * head_dim, H]
        return (ours[1] * ours[2], ours[0])
    if kind == "qkv_bias":  # [heads, head_dim] <- [heads * head_dim]
        return (ours[0] * ours[1],)
    if kind == "attn_out":  # [heads, head_dim, H] <- [H, heads * head_dim]
        return (ours[2], ours[0] * ours[1])
    raise AssertionError(kind)


def _to_ours(kind: str, tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if kind in ("linear", "qkv", "attn_out"):
        tensor = tensor.T
    return tensor.reshape(shape)


def _to_hf(kind: str, tensor: np.ndarray) -> np.ndarray:
    shape = _hf_shape(kind, tensor.shape)
    if kind in ("qkv", "attn_out"):
        tensor = tensor.reshape(shape[::-1])
    if kind in ("linear", "qkv", "attn_out"):
        tensor = tensor.T
    return np.ascontiguousarray(tensor.reshape(shape))


def expected_shapes(config: AlbertConfig) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """Flattened abstract parameter tree of `init_params(config)`, unboxed (no memory, no FLOPs)."""
    return traverse_util.flatten_dict(param_shapes(config))


def _layer_entries(config: AlbertConfig, groups: int
                   ) -> list[tuple[tuple[str, ...], int, list[str], str]]:
    """(our path, our copy, transformers names, kind) for every layer tensor we hold, copies in order.

    The names are that tensor in every transformers group run by a layer that uses our copy: usually one group;
    several when our config shares more than the checkpoint (e.g. re-importing an exported `sharing='ffn'`
    model), which `params_from_hf` accepts only if those groups hold identical tensors.
    """
    entries = []
    for module, (family, hf_module, kernel_kind, bias_kind) in LAYER_MODULES.items():
        n = config.num_attention_copies if family == "attention" else config.num_ffn_copies
        params = ("scale", "bias") if module.endswith("layer_norm") else ("kernel", "bias")
        for copy in range(n):
            used = sorted({hf_group(i, groups, config.num_hidden_layers) for i in range(config.num_hidden_layers)
                           if copy_index(i, n, config.num_hidden_layers) == copy})
            for param in params:
                kind = bias_kind if param == "bias" else kernel_kind
                names = [LAYER_PREFIX.format(group) + f"{hf_module}.{TORCH_PARAM[param]}" for group in used]
                entries.append((SHARED + (module, param), copy, names, kind))
    return entries


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Names as AlbertForPreTraining has them: an AlbertModel checkpoint's bare names get `albert.`."""
    if any(name.startswith("albert.") for name in state_dict):
        return dict(state_dict)
    return {name if name.startswith(("predictions.", "sop_classifier.", "qa_outputs.", "classifier."))
            else "albert." + name: tensor
            for name, tensor in state_dict.items()}


def _take(state: dict[str, Any], name: str, shape: tuple[int, ...], used: set[str]) -> np.ndarray:
    if name not in state:
        raise ConversionError(f"tensor {name} is missing from the checkpoint (expected shape {shape})")
    tensor = np.asarray(state[name])
    if tensor.shape != shape:
        raise ConversionError(f"tensor {name} has shape {tuple(tensor.shape)}, expected {shape} from the config; "
                              "the config.json does not describe these weights")
    used.add(name)
    return tensor


def params_from_hf(state_dict: Mapping[str, Any], config: AlbertConfig, *, seed: int = 0,
                   architecture: str | None = None) -> dict[str, Any]:
    """Our unboxed AlbertForPreTraining parameter tree (numpy, `config.param_dtype`) from transformers tensors.

    `state_dict` maps transformers names to arrays (numpy or anything `np.asarray` takes) of an
    AlbertForPreTraining or AlbertModel checkpoint. Absent heads are freshly initialized (module doc). An
    AlbertForQuestionAnswering (`qa_outputs.*`) or, when `architecture` says so, AlbertForMultipleChoice
    (`classifier.*`) checkpoint also gives its head, as `qa_outputs` / `choice_classifier` in the tree.
    """
    state = _strip_prefix(state_dict)
    dtype = np.dtype(config.weight_dtype)
    shapes = expected_shapes(config)
    used: set[str] = {"albert.embeddings.position_ids", "predictions.decoder.weight", "predictions.decoder.bias"}
    flat: dict[tuple[str, ...], np.ndarray] = {}

    for path, (name, kind) in GLOBAL_TENSORS.items():
        if path in shapes:
            flat[path] = _to_ours(kind, _take(state, name, _hf_shape(kind, shapes[path].shape), used),
                                  shapes[path].shape)
    if not config.has_embedding_projection:
        size = config.hidden_size
        weight = _take(state, "albert.encoder.embedding_hidden_mapping_in.weight", (size, size), used)
        bias = _take(state, "albert.encoder.embedding_hidden_mapping_in.bias", (size,), used)
        if not (np.array_equal(weight, np.eye(size)) and not np.any(bias)):
            raise ConversionError(
                f"embedding_size == hidden_size == {size}, so this model has no embedding_hidden_mapping_in, but "
                "the checkpoint's is not the identity with zero bias: its function cannot be represented. Only "
                "checkpoints with E != H, or with an identity mapping (as this project exports), convert")

    groups = 1 + max((int(match.group(1)) for name in state if (match := GROUP_NAME.match(name))), default=0)
    stacks: dict[tuple[str, ...], list[np.ndarray]] = {}
    for path, copy, names, kind in _layer_entries(config, groups):
        shape = shapes[path].shape[1:]
        tensors = [_take(state, name, _hf_shape(kind, shape), used) for name in names]
        if any(not np.array_equal(tensors[0], other) for other in tensors[1:]):
            raise ConversionError(
                f"the config shares {'/'.join(path[3:])} copy {copy} across transformers groups whose tensors "
                f"differ ({', '.join(names)}): the config (num_hidden_groups={config.num_hidden_groups}, "
                f"sharing={config.sharing!r}) has fewer unique weights than the checkpoint; use config_from_hf")
        stacks.setdefault(path, []).append(_to_ours(kind, tensors[0], shape))
    flat.update({path: np.stack(tensors) for path, tensors in stacks.items()})

    fresh = []
    for head, tensors in HEAD_TENSORS.items():
        present = [name for name, _ in tensors.values() if name in state]
        if not present:
            fresh.append(head)
            flat.update(_fresh_head(tensors, shapes, config, seed))
            continue
        for path, (name, kind) in tensors.items():
            flat[path] = _to_ours(kind, _take(state, name, _hf_shape(kind, shapes[path].shape), used),
                                  shapes[path].shape)
    if fresh:
        warnings.warn(f"the checkpoint has no {' and no '.join(fresh)} (an AlbertModel or task checkpoint?): "
                      f"initialized them freshly (seed {seed}); the encoder is exact")
    _check_tied(state, flat)
    for name, (ours, theirs, outputs) in TASK_HEADS.items():
        if f"{theirs}.weight" in state and (architecture == name or (architecture is None and ours == "qa_outputs")):
            weight = _take(state, f"{theirs}.weight", (outputs, config.hidden_size), used)
            flat[(ours, "kernel")] = weight.T
            flat[(ours, "bias")] = _take(state, f"{theirs}.bias", (outputs,), used)

    unused = sorted(set(state) - used)
    if unused:
        unknown = [name for name in unused if name.startswith("albert.")]
        if unknown:
            raise ConversionError(f"the checkpoint has encoder tensors the config does not describe: {unknown[:5]}"
                                  f"{' ...' if len(unknown) > 5 else ''}; check num_hidden_groups / num_hidden_layers")
        warnings.warn(f"ignoring {len(unused)} tensors that are not part of AlbertForPreTraining: {unused[:5]}")
    missing = sorted("/".join(path) for path in set(shapes) - set(flat))
    assert not missing, missing
    return traverse_util.unflatten_dict({path: tensor.astype(dtype) for path, tensor in flat.items()})


def _fresh_head(tensors: Mapping[tuple[str, ...], tuple[str, str]], shapes: Mapping[tuple[str, ...], Any],
                config: AlbertConfig, seed: int) -> dict[tuple[str, ...], np.ndarray]:
    """The head's tensors initialized as `init_params` would: kernels truncated normal, LN scale 1, biases 0."""
    init = truncated_normal(config.initializer_range)
    out = {}
    for index, path in enumerate(sorted(tensors)):
        shape = shapes[path].shape
        if path[-1] == "kernel":
            out[path] = np.asarray(init(jax.random.fold_in(jax.random.PRNGKey(seed), index), shape))
        else:
            out[path] = np.full(shape, 1.0 if path[-1] == "scale" else 0.0, np.float32)
    return out


def _check_tied(state: Mapping[str, Any], flat: Mapping[tuple[str, ...], np.ndarray]) -> None:
    """An explicit decoder (older checkpoints) must equal what our tied decoder uses."""
    tied = {"predictions.decoder.weight": flat[("albert", "embeddings", "word_embeddings")],
            "predictions.decoder.bias": flat[("mlm_output_bias",)]}
    for name, ours in tied.items():
        if name in state and not np.array_equal(np.asarray(state[name]), ours):
            raise ConversionError(f"{name} differs from the tensor it should be tied to; this model always ties "
                                  "the MLM decoder to the word embeddings and predictions.bias, so an untied "
                                  "checkpoint cannot be represented")


def architecture_of(params: Any) -> str:
    """The transformers architecture our parameter tree exports to: a QA or multiple-choice model when it holds
    that head, else AlbertForPreTraining; a head transformers has no class for is an error."""
    names = set(nn.unbox(params))
    for name, (ours, _, _) in TASK_HEADS.items():
        if ours in names:
            return name
    others = sorted(names - {"albert", "mlm_dense", "mlm_layer_norm", "mlm_output_bias", "sentence_classifier"})
    if others:
        raise ConversionError(f"the model's head {', '.join(others)} has no transformers counterpart this exporter "
                              "writes (it writes AlbertForPreTraining, AlbertForQuestionAnswering with qa_outputs "
                              "and AlbertForMultipleChoice with choice_classifier)")
    return PRETRAINING


def params_to_hf(params: Any, config: AlbertConfig) -> dict[str, np.ndarray]:
    """transformers tensors (numpy, same dtypes) of `architecture_of(params)` for our parameters, boxed or not.

    Writes `config_to_hf(config)["num_hidden_groups"]` groups (duplicating shared blocks where transformers
    cannot share them), an identity `embedding_hidden_mapping_in` when E == H, and no tied decoder tensors. A
    QA model has no pooler (transformers builds it without one) and task models no pretraining heads.
    """
    flat = {path: np.asarray(leaf) for path, leaf in traverse_util.flatten_dict(nn.unbox(params)).items()}
    architecture = architecture_of(params)
    shapes = expected_shapes(config)
    if architecture != PRETRAINING:
        ours, _, outputs = TASK_HEADS[architecture]
        keep = (lambda path: path[0] == "albert" and path[1] != "pooler") if ours == "qa_outputs" else (
            lambda path: path[0] == "albert")
        shapes = {path: shape for path, shape in shapes.items() if keep(path)}
        flat = {path: tensor for path, tensor in flat.items() if keep(path) or path[0] == ours}
        shapes[(ours, "kernel")] = jax.ShapeDtypeStruct((config.hidden_size, outputs), np.float32)
        shapes[(ours, "bias")] = jax.ShapeDtypeStruct((outputs,), np.float32)
    problems = [f"{'/'.join(path)}: expected {shapes[path].shape}, found "
                f"{flat[path].shape if path in flat else 'nothing'}"
                for path in shapes if path not in flat or flat[path].shape != shapes[path].shape]
    problems += [f"{'/'.join(path)}: not a parameter of this config" for path in flat if path not in shapes]
    if problems:
        raise ConversionError("the parameters do not match the config:\n  " + "\n  ".join(problems))

    out: dict[str, np.ndarray] = {}
    for path, (name, kind) in list(GLOBAL_TENSORS.items()) + [item for head in HEAD_TENSORS.values()
                                                              for item in head.items()]:
        if path in flat:
            out[name] = _to_hf(kind, flat[path])
    if not config.has_embedding_projection:
        dtype = flat[("albert", "embeddings", "layer_norm", "bias")].dtype
        out["albert.encoder.embedding_hidden_mapping_in.weight"] = np.eye(config.hidden_size, dtype=dtype)
        out["albert.encoder.embedding_hidden_mapping_in.bias"] = np.zeros(config.hidden_size, dtype)

    groups = hf_num_groups(config)
    for group in range(groups):
        layer = next(i for i in range(config.num_hidden_layers) if hf_group(i, groups, config.num_hidden_layers)
                     == group)
        for module, (family, hf_module, kernel_kind, bias_kind) in LAYER_MODULES.items():
            n = config.num_attention_copies if family == "attention" else config.num_ffn_copies
            copy = copy_index(layer, n, config.num_hidden_layers)
            for param in ("scale", "kernel", "bias"):
                if SHARED + (module, param) in flat:
                    kind = bias_kind if param == "bias" else kernel_kind
                    name = LAYER_PREFIX.format(group) + f"{hf_module}.{TORCH_PARAM[param]}"
                    out[name] = _to_hf(kind, flat[SHARED + (module, param)][copy])
    if architecture != PRETRAINING:
        ours, theirs, _ = TASK_HEADS[architecture]
        out[f"{theirs}.weight"] = _to_hf("linear", flat[(ours, "kernel")])
        out[f"{theirs}.bias"] = np.ascontiguousarray(flat[(ours, "bias")])
    return out


def _require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise ConversionError(f"{what} {path} does not exist")
    if not path.is_dir():
        raise ConversionError(f"{what} {path} is not a directory")


def load_hf_state(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a transformers directory: model.safetensors, or the shards its index lists."""
    from safetensors.numpy import load_file

    path = Path(path)
    if (path / SAFETENSORS_FILE).is_file():
        return load_file(path / SAFETENSORS_FILE)
    if (path / SAFETENSORS_INDEX).is_file():
        shards = sorted(set(json.loads((path / SAFETENSORS_INDEX).read_text())["weight_map"].values()))
        state: dict[str, np.ndarray] = {}
        for shard in shards:
            if not (path / shard).is_file():
                raise ConversionError(f"{path / SAFETENSORS_INDEX} lists shard {shard}, which is missing")
            state.update(load_file(path / shard))
        return state
    hint = ""
    if any((path / name).exists() for name in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        hint = (" It holds PyTorch .bin weights only: re-save them as safetensors with transformers "
                "(AlbertForPreTraining.from_pretrained(dir).save_pretrained(dir)).")
    raise ConversionError(f"{path} has neither {SAFETENSORS_FILE} nor {SAFETENSORS_INDEX}.{hint}")


def load_hf_dir(path: str | Path, *, seed: int = 0) -> tuple[AlbertConfig, dict[str, Any]]:
    """(config, unboxed params) from a transformers ALBERT directory (config.json + safetensors)."""
    path = Path(path)
    _require_dir(path, "transformers checkpoint directory")
    if not (path / "config.json").is_file():
        raise ConversionError(f"{path} has no config.json; pass a directory written by save_pretrained")
    fields = json.loads((path / "config.json").read_text())
    config = config_from_hf(fields)
    architecture = (fields.get("architectures") or [None])[0]
    return config, params_from_hf(load_hf_state(path), config, seed=seed, architecture=architecture)


def save_hf_dir(config: AlbertConfig, params: Any, path: str | Path) -> None:
    """Write config.json + model.safetensors that transformers' `from_pretrained` of `architecture_of(params)`
    (AlbertForPreTraining, AlbertForQuestionAnswering or AlbertForMultipleChoice) loads."""
    from safetensors.numpy import save_file

    tensors = params_to_hf(params, config)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    hf_config = config_to_hf(config, architecture_of(params))
    (path / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    save_file(tensors, path / SAFETENSORS_FILE, metadata={"format": "pt"})


def import_dir(hf_dir: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    """transformers directory -> a converted-model folder (`albert_jax.convert.folder`); the weights only."""
    config, params = load_hf_dir(hf_dir)
    return folder.write(out_dir, config, params, force=force,
                        record={"source": "transformers", "directory": str(Path(hf_dir).resolve())})
