"""Load a pretrained ALBERT from any directory this project meets, as host numpy parameters and a config.

`load_pretrained(DIR)` accepts
  * a converted-model folder (`albert_jax.convert.folder`: albert_config.json + params/), written by the
    converters and by fine-tuning (`OUT/model`, the same layout with a classifier);
  * a pretraining run's workdir, its checkpoints/ or checkpoints/<step> (only the parameters are read);
  * a transformers directory (config.json + safetensors);
  * an unconverted original TF release (albert_config.json + model.ckpt-*), converted in memory.
Parameters come back as numpy arrays whatever device count or mesh they were saved from, so every consumer
(fine-tuning, fill-mask, evaluation, export) places them on its own devices (`place_on_mesh`); a run's
checkpoint can also be restored straight onto a mesh (`restore_on_mesh`). Fine-tuning, fill-mask, evaluation
and export share this module so that "a model directory" means the same thing to all of them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh

from albert_jax import checkpoint, partitioning
from albert_jax.config import AlbertConfig
from albert_jax.convert import folder, hf
from albert_jax.convert import tf as convert_tf
from albert_jax.input.tokenizer import Tokenizer
from albert_jax.model import abstract_params, param_shapes


class PretrainedError(ValueError):
    """A starting-point directory that cannot be loaded; the message says what was expected."""


@dataclasses.dataclass
class Pretrained:
    """A restored model: config, unboxed parameter tree (AlbertForPreTraining's, or a fine-tuned model's with
    `classifier` instead of the pretraining heads), its SentencePiece vocabulary if one was found, and a label."""

    config: AlbertConfig
    params: dict[str, Any]
    vocab: str | None
    source: str
    vocab_note: str = ""  # why no vocabulary was found, for the error that asks for one


def load_pretrained(path: str | Path, step: int | None = None) -> Pretrained:
    """Restores a model from any supported directory (see the module doc); `step` picks a workdir checkpoint."""
    path = Path(path).resolve()
    if not path.exists():
        raise PretrainedError(f"{path} does not exist")
    if folder.is_model_folder(path):
        try:
            config, params = folder.read(path)
        except folder.ConversionError as error:
            raise PretrainedError(str(error)) from error
        found = Pretrained(config, params, folder.find_vocab(path), f"converted directory {path}")
    elif (path / "config.json").is_file():
        config, params = hf.load_hf_dir(path)
        found = Pretrained(config, params, folder.find_vocab(path), f"transformers directory {path}")
    elif (path / convert_tf.TF_CONFIG_FILE).is_file() and list(path.glob("model.ckpt-*.index")):
        config, params, summary = convert_tf.load_tf_dir(path)
        found = Pretrained(config, params, folder.find_vocab(path), f"TensorFlow checkpoint {summary['checkpoint']}")
    elif checkpoint.is_run_dir(path):
        found = _load_workdir(path, step)
    elif path.name == checkpoint.CHECKPOINTS and path.is_dir():
        found = _load_workdir(path.parent, step)
    elif (path / checkpoint.STATE).is_dir() and path.parent.name == checkpoint.CHECKPOINTS and path.name.isdigit():
        found = _load_workdir(path.parent.parent, int(path.name))
    else:
        listing = ", ".join(sorted(p.name for p in path.iterdir())[:12]) if path.is_dir() else "a file"
        raise PretrainedError(
            f"{path} is not a model directory (it holds: {listing or 'nothing'}). Expected one of: albert_config.json "
            "+ params/ (convert.tf / convert.hf import output), a pretraining workdir with checkpoints/, a "
            "transformers directory (config.json + model.safetensors), or an original TF release")
    _check_encoder(found)
    return found


def _load_workdir(workdir: Path, step: int | None) -> Pretrained:
    """Parameters (only: optimizer state stays on disk) and model config of a pretraining run's checkpoint, and
    the vocabulary its run info records."""
    steps = checkpoint.finished_steps(workdir)
    if not steps:
        raise PretrainedError(f"{checkpoint.checkpoints_dir(workdir)} holds no finished checkpoint")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise PretrainedError(f"{checkpoint.checkpoints_dir(workdir)} has no checkpoint for step {step}; it has "
                              f"{steps}")
    config = AlbertConfig(**checkpoint.read_config(workdir, step)["model"])
    params = checkpoint.restore_params(workdir, step)
    vocab = checkpoint.run_vocab(workdir) or folder.find_vocab(workdir)
    note = ""
    if vocab is None:
        info = checkpoint.read_run_info(workdir)
        note = (f" (its {checkpoint.RUN_INFO} names {info.get('vocab_path')!r}, which does not exist)" if info else
                f" (it has no {checkpoint.RUN_INFO}: it was trained before runs recorded their vocabulary)")
    return Pretrained(config, params, vocab, f"workdir {workdir} step {step}", note)


def _check_encoder(found: Pretrained) -> None:
    """The encoder tensors must be exactly those the config describes."""
    shapes = traverse_util.flatten_dict(param_shapes(found.config))
    flat = traverse_util.flatten_dict(found.params)
    problems = [f"{'/'.join(p)}: expected {shapes[p].shape}, found {flat[p].shape if p in flat else 'nothing'}"
                for p in shapes if p[0] == "albert" and (p not in flat or tuple(flat[p].shape) != shapes[p].shape)]
    if problems:
        raise PretrainedError(f"{found.source} does not match its config:\n  " + "\n  ".join(problems[:8]))


def pretraining_params(found: Pretrained) -> dict[str, Any]:
    """The parameters as exactly AlbertForPreTraining's tree (encoder, MLM and sentence-order heads); tensors of
    other heads are dropped. A model without the pretraining heads (a fine-tuned classifier) is an error."""
    shapes = traverse_util.flatten_dict(param_shapes(found.config))
    flat = traverse_util.flatten_dict(found.params)
    problems = [f"{'/'.join(p)}: expected {shapes[p].shape}, found {flat[p].shape if p in flat else 'nothing'}"
                for p in shapes if p not in flat or tuple(flat[p].shape) != shapes[p].shape]
    if problems:
        raise PretrainedError(f"{found.source} is not a pretraining model (AlbertForPreTraining with MLM and "
                              f"sentence-order heads): {'; '.join(problems[:4])}. A fine-tuned classifier has no "
                              f"pretraining heads; use the model it was fine-tuned from.")
    return traverse_util.unflatten_dict({path: flat[path] for path in shapes})


def model_tokenizer(found: Pretrained, vocab: str | None = None) -> Tokenizer:
    """The tokenizer of `vocab`, else of the vocabulary found with the model; an error when there is none or when
    it has more pieces than the model has embeddings (then it is not the model's vocabulary)."""
    path = vocab or found.vocab
    if path is None:
        raise PretrainedError(f"no SentencePiece vocabulary found with {found.source}{found.vocab_note}; pass "
                              f"--vocab=PATH.model")
    tokenizer = Tokenizer(path)
    if tokenizer.vocab_size > found.config.vocab_size:
        raise PretrainedError(f"vocabulary {path} has {tokenizer.vocab_size} pieces but the model only "
                              f"{found.config.vocab_size} embeddings: it is not this model's vocabulary")
    return tokenizer


def param_shardings(config: AlbertConfig, mesh: Mesh, rules: Any) -> tuple[Any, Any]:
    """(abstract unboxed AlbertForPreTraining parameter tree, its NamedShardings on `mesh`), nothing allocated."""
    boxed = abstract_params(config)
    return nn.unbox(boxed), partitioning.logical_to_sharding(nn.get_partition_spec(boxed), mesh, rules)


def place_on_mesh(params: Any, config: AlbertConfig, mesh: Mesh, rules: Any) -> tuple[Any, Any]:
    """(params as global arrays laid out on `mesh`, their shardings) from a host tree shaped like
    `pretraining_params`; each process fills only its own shards, so this also works across hosts."""
    abstract, shardings = param_shardings(config, mesh, rules)
    placed = jax.tree.map(lambda a, s, x: jax.make_array_from_callback(
        a.shape, s, lambda index: np.asarray(x, a.dtype)[index]), abstract, shardings, params)
    return placed, shardings


def restore_on_mesh(workdir: str | Path, step: int, mesh: Mesh, rules: Any) -> tuple[AlbertConfig, Any, Any]:
    """(model config, params, their shardings) of a pretraining run's checkpoint `step`: only the parameters are
    read (not the optimizer state), straight onto `mesh`, whatever device count the run saved them from, and
    verified against the checksums saved with them (`checkpoint.CheckpointDamaged` otherwise)."""
    config = AlbertConfig(**checkpoint.read_config(workdir, step)["model"])
    abstract, shardings = param_shardings(config, mesh, rules)
    return config, checkpoint.restore_params_on_mesh(workdir, step, abstract, shardings), shardings
