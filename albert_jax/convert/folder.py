"""The converted-model folder: this project's one on-disk layout for a model that lives outside a pretraining run.

    DIR/albert_config.json   the AlbertConfig fields
    DIR/params/              orbax checkpoint of the unboxed parameter tree (host arrays, any device count)
    DIR/*.model, *.vocab     the SentencePiece vocabulary (30k-clean.model, spiece.model, or a single *.model)
    DIR/conversion.json      optional: where the weights came from (the TF importer writes it)
    DIR/task.json            fine-tuned models only: the task and sequence length

`convert tf`, `convert hf import` and the fine-tuning job write it (`write`); `pretrained.load_pretrained` reads it
(`read`). Nothing else spells the layout out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from albert_jax.checkpoint import restore_numpy
from albert_jax.config import AlbertConfig

CONFIG_FILE = "albert_config.json"
PARAMS_DIR = "params"
CONVERSION_RECORD = "conversion.json"
TASK_RECORD = "task.json"
VOCAB_NAMES = ("30k-clean.model", "spiece.model")  # the original releases' and transformers' names


class ConversionError(ValueError):
    """A model directory or tensor set that cannot be converted or read; the message names what is wrong."""


def is_model_folder(path: Path) -> bool:
    """Whether `path` has this layout's config file and params directory."""
    return (path / PARAMS_DIR).is_dir() and (path / CONFIG_FILE).is_file()


def write(out_dir: str | Path, config: AlbertConfig, params: Any, *, files: Sequence[Path] = (),
          record: Mapping[str, Any] | None = None, force: bool = False) -> Path:
    """Writes the folder: config, params (orbax), copies of `files` (the vocabulary) and `record` as
    conversion.json. An existing params/ is an error unless `force`. Returns the resolved DIR."""
    import orbax.checkpoint as ocp

    out = Path(out_dir).resolve()
    if (out / PARAMS_DIR).exists() and not force:
        raise ConversionError(f"{out / PARAMS_DIR} already exists; remove it or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(out / PARAMS_DIR, params, force=force)
        checkpointer.wait_until_finished()
    for path in files:
        if Path(path).resolve() != (out / Path(path).name).resolve():
            shutil.copyfile(path, out / Path(path).name)
    if record is not None:
        (out / CONVERSION_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return out


def read(path: str | Path) -> tuple[AlbertConfig, Any]:
    """(config, host numpy parameter tree) of a folder `write` made."""
    path = Path(path)
    fields = json.loads((path / CONFIG_FILE).read_text())
    try:
        config = AlbertConfig(**fields)
    except TypeError as error:
        raise ConversionError(f"{path / CONFIG_FILE} is not this project's AlbertConfig ({error}); an original "
                              "release's config sits next to model.ckpt-*, not params/") from error
    return config, restore_numpy(path / PARAMS_DIR)


def find_vocab(directory: Path) -> str | None:
    """The SentencePiece model stored with the weights (a release's or transformers' name, else the only *.model
    there), or None."""
    for name in VOCAB_NAMES:
        if (directory / name).is_file():
            return str(directory / name)
    models = sorted(directory.glob("*.model"))
    return str(models[0]) if len(models) == 1 else None
