"""Import the original TensorFlow ALBERT checkpoints (google-research/albert releases) into this project.

A release directory holds `albert_config.json` (the original's config), `model.ckpt-best.{index,data-*}` (or
`model.ckpt-<step>.*` from a training run), and the SentencePiece vocabulary `30k-clean.model`.
`python -m albert_jax.convert.tf TF_DIR OUT_DIR` writes the layout `python -m albert_jax.convert.hf import`
writes: OUT_DIR/albert_config.json (this project's `AlbertConfig`) and OUT_DIR/params (orbax
`StandardCheckpointer`, the unboxed `AlbertForPreTraining` tree), plus copies of the vocabulary files and a
`conversion.json` recording the source. Fine-tuning, fill-mask and `convert.hf export` read that directory.

What maps to what (reference section 5): TF stores kernels as [in, out], like this project, so most tensors are
copied as they are; the q/k/v kernels [H, heads * head_dim] and the attention output kernel
[heads * head_dim, H] are reshaped to [H, heads, head_dim] and [heads, head_dim, H]; the sentence-order
`output_weights` is [2, H] ([out, in]) and is transposed. Group g's variables
(`bert/encoder/transformer/group_{g}/inner_group_0/...`) become copy g of each stacked weight.

Decisions:
* Activation. The original's "gelu" is the tanh approximation: it becomes `hidden_act='gelu_new'`.
* Layer-to-group assignment. The original runs group `int(i / L * G)` (floating point) at layer i; this project
  uses copy `i * G // L`. They disagree for a few shapes (e.g. L = G = 22 runs group 14 at layer 15 and never
  group 15). The import then keeps one copy per layer (`num_hidden_groups = L`, with a warning), each filled from
  the group the original runs there; groups the original never runs are skipped with a warning.
* Optimizer slots (`<var>/adam_m`, `<var>/adam_v`) and `global_step` are skipped and counted in the summary.
  Any other variable the config does not describe, a missing variable, or a shape that disagrees with the
  config is an error naming the variable.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from flax import traverse_util

from albert_jax.config import AlbertConfig, copy_index
from albert_jax.convert import folder
from albert_jax.convert.folder import ConversionError
from albert_jax.convert.hf import expected_shapes

TF_CONFIG_FILE = "albert_config.json"
VOCAB_FILES = ("30k-clean.model", "30k-clean.vocab")
BEST_PREFIX = "model.ckpt-best"
STEP_INDEX = re.compile(r"^model\.ckpt-(\d+)\.index$")
OPTIMIZER_SLOTS = ("/adam_m", "/adam_v")
GLOBAL_STEP = "global_step"
TF_ACTIVATIONS = {"gelu": "gelu_new", "relu": "relu", "tanh": "tanh"}
# Original config fields selecting structures this model does not have, with the value the releases use.
PLAIN_STRUCTURE = {"inner_group_num": 1, "net_structure_type": 0, "gap_size": 0, "num_memory_blocks": 0,
                   "down_scale_factor": 1}
REQUIRED_FIELDS = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                   "intermediate_size")
OPTIONAL_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                   "type_vocab_size", "initializer_range")

# Our path -> (TF variable name, layout kind) for tensors outside the layer stacks.
GLOBAL_VARIABLES: dict[tuple[str, ...], tuple[str, str]] = {
    ("albert", "embeddings", "word_embeddings"): ("bert/embeddings/word_embeddings", "same"),
    ("albert", "embeddings", "position_embeddings"): ("bert/embeddings/position_embeddings", "same"),
    ("albert", "embeddings", "token_type_embeddings"): ("bert/embeddings/token_type_embeddings", "same"),
    ("albert", "embeddings", "layer_norm", "scale"): ("bert/embeddings/LayerNorm/gamma", "same"),
    ("albert", "embeddings", "layer_norm", "bias"): ("bert/embeddings/LayerNorm/beta", "same"),
    ("albert", "encoder", "embedding_projection", "kernel"): ("bert/encoder/embedding_hidden_mapping_in/kernel",
                                                              "same"),
    ("albert", "encoder", "embedding_projection", "bias"): ("bert/encoder/embedding_hidden_mapping_in/bias", "same"),
    ("albert", "pooler", "kernel"): ("bert/pooler/dense/kernel", "same"),
    ("albert", "pooler", "bias"): ("bert/pooler/dense/bias", "same"),
    ("mlm_dense", "kernel"): ("cls/predictions/transform/dense/kernel", "same"),
    ("mlm_dense", "bias"): ("cls/predictions/transform/dense/bias", "same"),
    ("mlm_layer_norm", "scale"): ("cls/predictions/transform/LayerNorm/gamma", "same"),
    ("mlm_layer_norm", "bias"): ("cls/predictions/transform/LayerNorm/beta", "same"),
    ("mlm_output_bias",): ("cls/predictions/output_bias", "same"),
    ("sentence_classifier", "kernel"): ("cls/seq_relationship/output_weights", "transpose"),
    ("sentence_classifier", "bias"): ("cls/seq_relationship/output_bias", "same"),
}
GROUP_PREFIX = "bert/encoder/transformer/group_{}/inner_group_0/"
GROUP_NAME = re.compile(r"^bert/encoder/transformer/group_(\d+)/")
# Our module under shared_layer -> (family, TF scope inside inner_group_0, kernel kind, bias kind); LayerNorms
# map scale/bias to gamma/beta.
LAYER_MODULES: dict[str, tuple[str, str, str, str]] = {
    "query": ("attention", "attention_1/self/query", "qkv", "qkv_bias"),
    "key": ("attention", "attention_1/self/key", "qkv", "qkv_bias"),
    "value": ("attention", "attention_1/self/value", "qkv", "qkv_bias"),
    "attention_output": ("attention", "attention_1/output/dense", "attn_out", "same"),
    "attention_layer_norm": ("attention", "LayerNorm", "same", "same"),
    "ffn": ("ffn", "ffn_1/intermediate/dense", "same", "same"),
    "ffn_output": ("ffn", "ffn_1/intermediate/output/dense", "same", "same"),
    "ffn_layer_norm": ("ffn", "LayerNorm_1", "same", "same"),
}
TF_PARAM = {"kernel": "kernel", "bias": "bias"}
TF_LAYER_NORM_PARAM = {"scale": "gamma", "bias": "beta"}
SHARED = ("albert", "encoder", "shared_layer")


def tf_group(layer: int, num_groups: int, num_layers: int) -> int:
    """The group the original runs at layer `layer`: its own float formula `int(i / L * G)`, reproduced."""
    return int(layer / num_layers * num_groups)


def assignments_agree(num_groups: int, num_layers: int) -> bool:
    """Whether the original's group at every layer equals this project's copy `i * G // L`."""
    return all(tf_group(i, num_groups, num_layers) == copy_index(i, num_groups, num_layers)
               for i in range(num_layers))


def config_from_tf(tf_config: Mapping[str, Any]) -> AlbertConfig:
    """Our AlbertConfig for an original `albert_config.json` dict (float32, LayerNorm epsilon 1e-12, sharing 'all').

    G becomes L when the original's layer-to-group rule differs from ours for this shape (module doc).
    """
    missing = [name for name in REQUIRED_FIELDS if name not in tf_config]
    if missing:
        raise ConversionError(f"albert_config.json lacks {', '.join(missing)}; it is not an ALBERT config "
                              "(expected the file shipped with the release)")
    for name, plain in PLAIN_STRUCTURE.items():
        if tf_config.get(name, plain) != plain:
            raise ConversionError(f"albert_config.json has {name}={tf_config[name]!r}; only {name}={plain!r} (as in "
                                  "every released ALBERT) converts: this model runs one plain layer per group step")
    if tf_config.get("layers_to_keep"):
        raise ConversionError(f"albert_config.json has layers_to_keep={tf_config['layers_to_keep']!r}; pruned "
                              "layer stacks do not convert, remove the field only if every layer is kept")
    activation = tf_config.get("hidden_act", "gelu")
    if activation not in TF_ACTIVATIONS:
        raise ConversionError(f"albert_config.json has hidden_act={activation!r}; supported: "
                              f"{', '.join(TF_ACTIVATIONS)} (the original's 'gelu' is the tanh approximation)")
    defaults = AlbertConfig()
    fields = {name: tf_config[name] for name in REQUIRED_FIELDS}
    fields.update({name: tf_config.get(name, getattr(defaults, name)) for name in OPTIONAL_FIELDS})
    layers, groups = int(fields["num_hidden_layers"]), int(tf_config.get("num_hidden_groups", 1))
    if 1 <= groups <= layers and not assignments_agree(groups, layers):
        warnings.warn(f"the original assigns layers to its {groups} groups differently from i*G//L for L={layers} "
                      f"(int(i / L * G) in floating point); importing with one weight copy per layer "
                      f"(num_hidden_groups={layers}) to stay exact")
        groups = layers
    try:
        return AlbertConfig(**fields, hidden_act=TF_ACTIVATIONS[activation], layer_norm_eps=1e-12,
                            num_hidden_groups=groups, sharing="all", dtype="float32", param_dtype="float32")
    except ValueError as error:
        raise ConversionError(f"albert_config.json cannot be represented: {error}") from error


def _tf_shape(kind: str, ours: tuple[int, ...]) -> tuple[int, ...]:
    if kind == "same":
        return ours
    if kind == "transpose":
        return ours[::-1]
    if kind == "qkv":  # ours [H, heads, head_dim]
        return (ours[0], ours[1] * ours[2])
    if kind == "qkv_bias":  # ours [heads, head_dim]
        return (ours[0] * ours[1],)
    if kind == "attn_out":  # ours [heads, head_dim, H]
        return (ours[0] * ours[1], ours[2])
    raise AssertionError(kind)


def _to_ours(kind: str, tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return (tensor.T if kind == "transpose" else tensor).reshape(shape)


def layer_variables(config: AlbertConfig, tf_groups: int) -> list[tuple[tuple[str, ...], int, str, str]]:
    """(our path, our copy, TF variable name, kind) for every layer tensor we hold, copies in order.

    `tf_groups` is the checkpoint's G (`num_hidden_groups` of its albert_config.json); every copy of ours is used
    by layers that all run the same original group (guaranteed by `config_from_tf`).
    """
    layers = config.num_hidden_layers
    entries = []
    for module, (family, scope, kernel_kind, bias_kind) in LAYER_MODULES.items():
        n = config.num_attention_copies if family == "attention" else config.num_ffn_copies
        params = ("scale", "bias") if module.endswith("layer_norm") else ("kernel", "bias")
        for copy in range(n):
            groups = {tf_group(i, tf_groups, layers) for i in range(layers) if copy_index(i, n, layers) == copy}
            if len(groups) != 1:
                raise ConversionError(f"copy {copy} of {module} would mix original groups {sorted(groups)}; "
                                      "build the config with config_from_tf")
            group = groups.pop()
            for param in params:
                tf_param = TF_LAYER_NORM_PARAM[param] if module.endswith("layer_norm") else TF_PARAM[param]
                kind = bias_kind if param == "bias" else kernel_kind
                entries.append((SHARED + (module, param), copy, f"{GROUP_PREFIX.format(group)}{scope}/{tf_param}",
                                kind))
    return entries


def is_skipped(name: str) -> bool:
    """Optimizer slots and the step counter: training state, not model weights."""
    return name == GLOBAL_STEP or name.endswith(OPTIMIZER_SLOTS)


def params_from_tf(shapes: Mapping[str, Sequence[int]], read: Any, config: AlbertConfig,
                   tf_groups: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(our unboxed AlbertForPreTraining tree of float32 numpy arrays, summary) from TF variables.

    `shapes` maps every variable name in the checkpoint to its shape; `read(name)` returns one variable's value
    (only the variables the model needs are read, never the optimizer slots).
    """
    ours = expected_shapes(config)
    wanted: list[tuple[tuple[str, ...], int | None, str, str]] = [
        (path, None, name, kind) for path, (name, kind) in GLOBAL_VARIABLES.items() if path in ours]
    wanted += layer_variables(config, tf_groups)

    problems = []
    for path, copy, name, kind in wanted:
        shape = ours[path].shape if copy is None else ours[path].shape[1:]
        expected = _tf_shape(kind, tuple(shape))
        if name not in shapes:
            problems.append(f"{name} is missing (expected shape {expected})")
        elif tuple(shapes[name]) != expected:
            problems.append(f"{name} has shape {tuple(shapes[name])}, expected {expected} from albert_config.json")
    if problems:
        raise ConversionError("the checkpoint does not match albert_config.json:\n  " + "\n  ".join(problems)
                              + "\nCheck that albert_config.json belongs to this checkpoint")

    used = {name for _, _, name, _ in wanted}
    skipped = sorted(name for name in shapes if is_skipped(name))
    unused_groups = _unused_group_variables(shapes, used, config.num_hidden_layers, tf_groups)
    unknown = sorted(set(shapes) - used - set(skipped) - set(unused_groups))
    if unknown:
        raise ConversionError(f"the checkpoint has {len(unknown)} variable(s) albert_config.json does not describe: "
                              f"{', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}. Only pretraining "
                              "checkpoints of AlbertForPreTraining convert (task heads such as output_weights "
                              "of a fine-tuned model do not); check num_hidden_groups / embedding_size")
    if unused_groups:
        warnings.warn(f"skipping {len(unused_groups)} variable(s) of groups the original never runs for "
                      f"L={config.num_hidden_layers}, G={tf_groups}: {', '.join(unused_groups[:4])} ...")

    flat: dict[tuple[str, ...], np.ndarray] = {}
    stacks: dict[tuple[str, ...], list[np.ndarray]] = {}
    for path, copy, name, kind in wanted:
        shape = tuple(ours[path].shape if copy is None else ours[path].shape[1:])
        tensor = _to_ours(kind, np.asarray(read(name), np.float32), shape)
        if copy is None:
            flat[path] = tensor
        else:
            stacks.setdefault(path, []).append(tensor)
    flat.update({path: np.stack(tensors) for path, tensors in stacks.items()})
    summary = {"variables": len(used), "parameters": int(sum(t.size for t in flat.values())),
               "optimizer_slots_skipped": sum(name.endswith(OPTIMIZER_SLOTS) for name in skipped),
               "global_step_skipped": GLOBAL_STEP in shapes, "unused_group_variables_skipped": len(unused_groups)}
    return traverse_util.unflatten_dict(flat), summary


def _unused_group_variables(shapes: Mapping[str, Any], used: set[str], layers: int, tf_groups: int) -> list[str]:
    """Variables of groups < G that no layer runs under the original's rule (see the module doc)."""
    run = {tf_group(i, tf_groups, layers) for i in range(layers)}
    out = []
    for name in shapes:
        match = GROUP_NAME.match(name)
        if match and name not in used and not is_skipped(name) and int(match.group(1)) < tf_groups \
                and int(match.group(1)) not in run:
            out.append(name)
    return sorted(out)


def find_checkpoint(tf_dir: Path) -> Path:
    """The checkpoint prefix to import: `model.ckpt-best` if present, else the highest `model.ckpt-<step>`."""
    if not tf_dir.is_dir():
        raise ConversionError(f"{tf_dir} is not a directory; pass the unpacked release directory "
                              "(albert_config.json, model.ckpt-best.*, 30k-clean.model)")
    if (tf_dir / f"{BEST_PREFIX}.index").is_file():
        prefix = tf_dir / BEST_PREFIX
    else:
        steps = [(int(m.group(1)), tf_dir / path.name[: -len(".index")])
                 for path in tf_dir.iterdir() if (m := STEP_INDEX.match(path.name))]
        if not steps:
            listing = ", ".join(sorted(path.name for path in tf_dir.iterdir())) or "nothing"
            raise ConversionError(f"{tf_dir} has no {BEST_PREFIX}.index and no model.ckpt-<step>.index; it holds: "
                                  f"{listing}. Pass the directory of an unpacked ALBERT release or training run")
        prefix = max(steps)[1]
    if not list(tf_dir.glob(f"{prefix.name}.data-*")):
        raise ConversionError(f"{prefix}.index has no {prefix.name}.data-* files next to it (incomplete download "
                              "or copy?); copy the data shards too")
    return prefix


def read_tf_config(tf_dir: Path) -> dict[str, Any]:
    path = tf_dir / TF_CONFIG_FILE
    if not path.is_file():
        raise ConversionError(f"{tf_dir} has no {TF_CONFIG_FILE}; the release ships one next to the checkpoint")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path} is not valid JSON: {error}") from error


def load_tf_dir(tf_dir: str | Path) -> tuple[AlbertConfig, dict[str, Any], dict[str, Any]]:
    """(config, unboxed params, summary) of a release directory, read with `tf.train.load_checkpoint`."""
    import tensorflow as tf

    tf_dir = Path(tf_dir)
    prefix = find_checkpoint(tf_dir)
    tf_config = read_tf_config(tf_dir)
    config = config_from_tf(tf_config)
    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except (tf.errors.OpError, ValueError) as error:
        raise ConversionError(f"cannot read checkpoint {prefix}: {str(error).splitlines()[0]}") from error
    params, summary = params_from_tf(reader.get_variable_to_shape_map(), reader.get_tensor, config,
                                     int(tf_config.get("num_hidden_groups", 1)))
    summary.update(checkpoint=str(prefix), tf_config=tf_config)
    return config, params, summary


def find_vocab_files(tf_dir: Path) -> list[Path]:
    """The release's `30k-clean.model`/`.vocab`, else every `*.model`/`*.vocab` pair next to the checkpoint."""
    files = [tf_dir / name for name in VOCAB_FILES if (tf_dir / name).is_file()]
    return files or sorted(path for path in tf_dir.iterdir() if path.suffix in (".model", ".vocab"))


def import_dir(tf_dir: str | Path, out_dir: str | Path, force: bool = False) -> str:
    """Release directory -> a converted-model folder OUT_DIR; returns a one-line summary of what was read."""
    tf_dir = Path(tf_dir)
    config, params, summary = load_tf_dir(tf_dir)
    vocab = find_vocab_files(tf_dir)
    if not any(path.suffix == ".model" for path in vocab):
        warnings.warn(f"{tf_dir} has no SentencePiece .model file; fill-mask and fine-tuning will need --vocab")
    out = folder.write(out_dir, config, params, files=vocab, force=force,
                       record={"source": "tensorflow", **summary, "vocab": [path.name for path in vocab]})
    skipped = [f"{summary['optimizer_slots_skipped']} optimizer slots (adam_m/adam_v)"]
    if summary["global_step_skipped"]:
        skipped.append("global_step")
    if summary["unused_group_variables_skipped"]:
        skipped.append(f"{summary['unused_group_variables_skipped']} variables of never-run groups")
    return (f"imported {summary['variables']} variables ({summary['parameters']:,} parameters) from "
            f"{summary['checkpoint']}; skipped {' and '.join(skipped)}; wrote {out}"
            f"{' with ' + ', '.join(path.name for path in vocab) if vocab else ''}")
