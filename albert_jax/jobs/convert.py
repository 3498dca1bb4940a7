"""Converts models: official TF releases and transformers directories in, transformers directories out.

    albert-jax convert tf TF_DIR OUT_DIR [--force]
    albert-jax convert hf import HF_DIR OUT_DIR [--force]
    albert-jax convert hf export --model=MODEL_DIR HF_DIR [--step=N]

Imports write a converted-model folder (`albert_jax.convert.folder`); export reads any model directory
`pretrained.load_pretrained` accepts (a converted folder or a pretraining run, its latest checkpoint or `--step`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from albert_jax import pretrained
from albert_jax.convert import folder, hf
from albert_jax.convert import tf as convert_tf
from albert_jax.convert.folder import ConversionError
from albert_jax.jobs import flags

if __name__ == "__main__":  # one entry for every job: the CLI
    from albert_jax.jobs import cli

    sys.exit(cli.main(["convert", *sys.argv[1:]]))

EPILOG = flags.examples(
    "albert-jax convert tf albert_base converted/albert_base      # an unpacked official TF release",
    "albert-jax convert hf import hf/albert-base-v2 converted/albert_base_v2",
    "albert-jax convert hf export --model=runs/demo hf/demo --step=1600")


def export_hf(model_dir: str | Path, hf_dir: str | Path, step: int | None = None) -> Path:
    """A model directory (converted folder or pretraining run) -> transformers directory, with the vocabulary as
    spiece.model when one is found with the model. Parameters are read onto the host, so a checkpoint saved
    sharded over any number of devices exports on any machine."""
    source = Path(model_dir).resolve()
    if not source.is_dir():
        raise ConversionError(f"model directory {source} does not exist or is not a directory")
    if not folder.is_model_folder(source) and not (source / "checkpoints").is_dir():
        missing = folder.CONFIG_FILE if not (source / folder.CONFIG_FILE).exists() else folder.PARAMS_DIR + "/"
        raise ConversionError(f"{source} has no {missing}; expected a converted-model folder ({folder.CONFIG_FILE} "
                              f"+ {folder.PARAMS_DIR}/) or a pretraining workdir (checkpoints/)")
    try:
        model = pretrained.load_pretrained(source, step)
    except pretrained.PretrainedError as error:
        raise ConversionError(str(error)) from error
    hf.save_hf_dir(model.config, model.params, hf_dir)
    target = Path(hf_dir).resolve() / "spiece.model"
    if model.vocab is not None and Path(model.vocab).resolve() != target:
        shutil.copyfile(model.vocab, target)
    return Path(hf_dir).resolve()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sources = parser.add_subparsers(dest="source", required=True, metavar="SOURCE", title="sources")
    tf_parser = sources.add_parser("tf", formatter_class=parser.formatter_class, help="original TF release -> converted-model folder",
                                   description="An unpacked original TF release (albert_config.json, "
                                   "model.ckpt-best.*, 30k-clean.model) -> a converted-model folder.")
    tf_parser.add_argument("tf_dir", help="unpacked release: albert_config.json, model.ckpt-best.*, 30k-clean.model")
    tf_parser.add_argument("out_dir", help="output: albert_config.json + params/ (+ vocabulary copies)")
    tf_parser.add_argument("--force", action="store_true", help="overwrite OUT_DIR/params")
    hf_parser = sources.add_parser("hf", formatter_class=parser.formatter_class, help="transformers directories in (import) and out (export)",
                                   description="transformers AlbertForPreTraining directories in and out.")
    directions = hf_parser.add_subparsers(dest="direction", required=True, metavar="DIRECTION", title="directions")
    importer = directions.add_parser("import", formatter_class=parser.formatter_class, help="transformers directory -> converted-model folder",
                                     description="A transformers directory (config.json + weights) -> a "
                                     "converted-model folder (albert_config.json + params/).")
    importer.add_argument("hf_dir", help="transformers directory: config.json + model.safetensors (or its shards)")
    importer.add_argument("out_dir", help="output: albert_config.json + params/ (+ spiece.model)")
    importer.add_argument("--force", action="store_true", help="overwrite OUT_DIR/params")
    exporter = directions.add_parser("export", formatter_class=parser.formatter_class, help="model directory -> transformers directory",
                                     description="A converted-model folder or a pretraining run (its latest "
                                     "checkpoint, or --step) -> a transformers directory, with spiece.model.")
    flags.add_model(exporter, help="converted-model folder (albert_config.json + params/) or a pretraining run")
    exporter.add_argument("hf_dir", help="output transformers directory")
    flags.add_step(exporter)


def run(args: argparse.Namespace) -> int:
    """Runs one conversion; a ConversionError (a ValueError) is a user error the CLI prints in one paragraph."""
    if args.source == "tf":
        print(convert_tf.import_dir(args.tf_dir, args.out_dir, force=args.force))
    elif args.direction == "import":
        print(f"wrote {hf.import_dir(args.hf_dir, args.out_dir, force=args.force)}")
    else:
        print(f"wrote {export_hf(args.model, args.hf_dir, step=args.step)}")
    return 0
