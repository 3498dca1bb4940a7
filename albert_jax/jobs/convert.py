"""The conversion jobs: official TF releases and transformers directories in, transformers directories out.

    python -m albert_jax.jobs.convert tf TF_DIR OUT_DIR [--force]
    python -m albert_jax.jobs.convert hf import HF_DIR OUT_DIR [--force]
    python -m albert_jax.jobs.convert hf export MODEL_DIR HF_DIR [--step N]

Imports write a converted-model folder (`albert_jax.convert.folder`); export reads any model directory
`pretrained.load_pretrained` accepts (a converted folder or a pretraining run, its latest checkpoint or `--step`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Sequence

from albert_jax import pretrained
from albert_jax.convert import folder, hf
from albert_jax.convert import tf as convert_tf
from albert_jax.convert.folder import ConversionError


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m albert_jax.jobs.convert", description=__doc__.split("\n")[0])
    sources = parser.add_subparsers(dest="source", required=True)
    tf_parser = sources.add_parser("tf", help="original TF release -> converted-model folder")
    tf_parser.add_argument("tf_dir", help="unpacked release: albert_config.json, model.ckpt-best.*, 30k-clean.model")
    tf_parser.add_argument("out_dir", help="output: albert_config.json + params/ (+ vocabulary copies)")
    tf_parser.add_argument("--force", action="store_true", help="overwrite OUT_DIR/params")
    hf_parser = sources.add_parser("hf", help="transformers directories in and out")
    directions = hf_parser.add_subparsers(dest="direction", required=True)
    importer = directions.add_parser("import", help="transformers directory -> converted-model folder")
    importer.add_argument("hf_dir")
    importer.add_argument("out_dir")
    importer.add_argument("--force", action="store_true", help="overwrite OUT_DIR/params")
    exporter = directions.add_parser("export", help="converted-model folder or run workdir -> transformers directory")
    exporter.add_argument("model_dir", help="albert_config.json + params/, or a pretraining workdir")
    exporter.add_argument("hf_dir")
    exporter.add_argument("--step", type=int, default=None, help="workdir checkpoint step (default: latest)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one conversion; returns the exit code (2 with a one-line reason when the input cannot be converted)."""
    args = build_parser().parse_args(argv)
    try:
        if args.source == "tf":
            print(convert_tf.import_dir(args.tf_dir, args.out_dir, force=args.force))
        elif args.direction == "import":
            print(f"wrote {hf.import_dir(args.hf_dir, args.out_dir, force=args.force)}")
        else:
            print(f"wrote {export_hf(args.model_dir, args.hf_dir, step=args.step)}")
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
