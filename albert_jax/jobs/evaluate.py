"""Held-out evaluation: one pass over the eval split on whatever devices exist, exact metric sums.

Two uses (docs/EVALUATE.md):
  `albert-jax eval --workdir=RUN [--step=N] [--continuous]` evaluates a pretraining run's checkpoints (the model
      config saved with each checkpoint, the data of the run's config.gin);
  `albert-jax eval --model=MODEL --gin_file=corpus/... --workdir=OUT` evaluates any model directory
      `pretrained.load_pretrained` reads, on a corpus tokenized with the model's own vocabulary.
Each evaluation writes eval/step_N.json, a line of eval/eval.jsonl and TensorBoard scalars under
eval/tensorboard, and keeps eval/best.json on the best one by masked_lm_accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import os
import sys
import time
from typing import Any

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from albert_jax import checkpoint, partitioning, pretrained
from albert_jax.input import prepare
from albert_jax.jobs import flags, sinks
from albert_jax import train_step as steps
from albert_jax.config import AlbertConfig
from albert_jax.input import loader as input_loader
from albert_jax.input.instances import InstanceConfig
from albert_jax.input.tokenizer import Tokenizer
from albert_jax.losses import metrics_from_sums

if __name__ == "__main__":  # run through the CLI: gin then sees this module once, as albert_jax.jobs.evaluate
    from albert_jax.jobs import cli

    sys.exit(cli.main(["eval", *sys.argv[1:]]))

EPILOG = flags.examples(
    "albert-jax eval --workdir=runs/demo                        # its latest checkpoint",
    "albert-jax eval --workdir=runs/demo --step=800",
    "albert-jax eval --workdir=runs/demo --continuous           # follow a running job",
    "albert-jax eval --model=MODEL_DIR --gin_file=corpus/text.gin --gin.TEXT_FILES=\"['held_out.txt']\" "
    "--workdir=OUT")
REPORTED = ("masked_lm_accuracy", "masked_lm_loss", "sentence_order_accuracy", "sentence_order_loss",
            "examples", "masked_tokens")


@gin.configurable
class Evaluator:
    """Runs the jitted eval step over one pass of the eval split and reduces the sums on the host."""

    def __init__(self, config: AlbertConfig, mesh: Mesh, rules: Any, params_sharding: Any,
                 input_config: input_loader.InputConfig | None = None, batch_size: int = 32,
                 max_batches: int | None = None) -> None:
        """batch_size: global eval batch; max_batches: stop early (None = the whole split)."""
        ways = partitioning.data_parallel_size(mesh)
        if batch_size % ways:
            raise ValueError(f"Evaluator.batch_size={batch_size} does not split over the {ways} data-parallel "
                             f"devices: bind --gin.Evaluator.batch_size to a multiple of {ways}.")
        self.mesh, self.rules, self.input_config = mesh, rules, input_config
        self.batch_size, self.max_batches = batch_size, max_batches
        self._step = jax.jit(steps.make_eval_step(config), in_shardings=(params_sharding,
                             partitioning.batch_sharding(mesh)), out_shardings=partitioning.replicated(mesh))

    def evaluate(self, params: Any) -> dict[str, float]:
        """The REPORTED metrics of `params` (laid out like `params_sharding`) over the eval split."""
        loader = input_loader.make_loader(split="eval", global_batch_size=self.batch_size, config=self.input_config)
        totals: dict[str, float] = {}
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(list(self.rules)):
            for index, local in enumerate(loader):
                if self.max_batches is not None and index >= self.max_batches:
                    break
                sums = self._step(params, input_loader.to_global_batch(local, partitioning.batch_sharding(self.mesh)))
                for key, value in jax.device_get(sums).items():
                    totals[key] = totals.get(key, 0.0) + float(value)
        loader.close()
        if not totals or totals["examples"] == 0:
            raise ValueError("The eval split produced no examples: check InputConfig.eval_dir.")
        means = metrics_from_sums({k: np.float64(v) for k, v in totals.items()})
        return {k: float(means[k]) for k in REPORTED}

    def run_and_record(self, params: Any, step: int, workdir: str, provenance: dict[str, Any] | None = None,
                       out_dir: str | None = None) -> dict[str, float]:
        """Evaluates; writes a line of OUT_DIR/eval.jsonl, TensorBoard scalars under OUT_DIR/tensorboard and the
        JSON files (`record`). OUT_DIR defaults to WORKDIR/eval; the provenance names the data evaluated."""
        result = self.evaluate(params)
        out_dir = out_dir or os.path.join(workdir, "eval")
        _writer(out_dir).write(step, result)
        _writer(out_dir).flush()
        data = {"eval_dir": os.path.abspath(self.input_config.eval_dir)} if self.input_config else {}
        record(out_dir, step, result, {**(provenance or {"checkpoint": checkpoint.step_dir(workdir, step)}), **data})
        return result


@functools.cache
def _writer(out_dir: str) -> sinks.MetricsWriter:
    """One writer per eval directory for the whole process: TensorBoard names event files by the second they are
    opened, so a writer per evaluation would overwrite another opened in the same second."""
    return sinks.MetricsWriter(out_dir, subdir="tensorboard", jsonl_name="eval.jsonl")


def record(out_dir: str, step: int, result: dict[str, float], provenance: dict[str, Any]) -> None:
    """OUT_DIR/step_N.json (metrics + where they came from), and OUT_DIR/best.json when masked_lm_accuracy beats
    the best so far (or re-evaluates the best step). Only process 0 writes."""
    if jax.process_index() != 0:
        return
    entry = {"step": step, **result, **provenance}
    with open(os.path.join(out_dir, f"step_{step}.json"), "w") as f:
        json.dump(entry, f, indent=2)
    best_path = os.path.join(out_dir, "best.json")
    best = json.load(open(best_path)) if os.path.exists(best_path) else None
    if best is None or best["step"] == step or result["masked_lm_accuracy"] > best["masked_lm_accuracy"]:
        with open(best_path, "w") as f:
            json.dump(entry, f, indent=2)


def _checkpoint_steps(workdir: str, must_exist: bool = True) -> list[int]:
    """The steps of the run's finished checkpoints, in order."""
    if not checkpoint.is_run_dir(workdir):
        if not must_exist:
            return []  # continuous mode started before the run's first save
        raise FileNotFoundError(f"{workdir} has no checkpoints/ directory: pass the --workdir of a training run "
                                f"(or --init=MODEL_DIR to evaluate a model directory).")
    return checkpoint.finished_steps(workdir)


def final_step(workdir: str) -> int:
    """The run's last step: num_train_steps from its run info; for runs older than run.json, train.num_train_steps
    as bound by the gin config in force (the run's config.gin), else the train job's default, both read through
    gin's registry (this job does not import the train job)."""
    info = checkpoint.read_run_info(workdir)
    if info and info.get("num_train_steps"):
        return int(info["num_train_steps"])
    default = inspect.signature(gin.get_configurable("train")).parameters["num_train_steps"].default
    return int(gin.get_bindings("train").get("num_train_steps", default))


@gin.configurable(denylist=["workdir", "step", "continuous", "fallback", "out_dir"])
def evaluate_checkpoints(workdir: str, step: int | None = None, continuous: bool = False, fallback: bool = True,
                         poll_seconds: float = 30.0, timeout_seconds: float = 3600.0,
                         out_dir: str | None = None) -> dict[int, dict]:
    """Evaluates one checkpoint (`step`, default the latest: if it is damaged, the newest that restores, unless
    `fallback` is False); or, in continuous mode, every checkpoint without an eval/step_N.json, each once (a
    damaged one is reported and skipped), looking for new ones every `poll_seconds`, until the run's final step
    has been evaluated or no new checkpoint has appeared for `timeout_seconds`. Returns {step: metrics} of the
    evaluations made. The results go to `out_dir` (default WORKDIR/eval): another directory keeps an evaluation
    on other data (e.g. a sweep's cross-evaluation on another sentence task) apart from the run's own."""
    if continuous and step is not None:
        raise ValueError("--continuous evaluates every new checkpoint; it cannot be combined with --step.")
    mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
    last_step = final_step(workdir) if continuous else None
    damaged: set[int] = set()
    out_dir = out_dir or os.path.join(workdir, "eval")
    done = lambda s: s in damaged or os.path.exists(os.path.join(out_dir, f"step_{s}.json"))  # noqa: E731
    results: dict[int, dict] = {}
    evaluator, last_new = None, time.time()
    while True:
        available = _checkpoint_steps(workdir, must_exist=not continuous)
        if not continuous and (not available or (step is not None and step not in available)):
            raise FileNotFoundError(f"No checkpoint {'yet' if step is None else f'for step {step}'} in {workdir}/"
                                    f"checkpoints; available steps: {available}. Pass one of them to --step (or "
                                    f"omit it for the latest).")
        if continuous:
            todo = [s for s in available if not done(s)]
        else:  # the chosen step; for the latest, older ones follow in case it is damaged
            todo = [step] if step is not None else (sorted(available, reverse=True) if fallback else available[-1:])
        for target in _from_process_zero(todo):
            if continuous and not os.path.isdir(checkpoint.step_dir(workdir, target)):
                continue  # removed by the run's max_to_keep since it was listed
            try:
                config, params, shardings = pretrained.restore_on_mesh(workdir, target, mesh, rules)
            except checkpoint.CheckpointDamaged as error:
                if not continuous and (step is not None or not fallback):
                    raise
                damaged.add(target)
                following = "going on with the next" if continuous else "trying the next older"
                print(f"warning: {error} Not evaluated; {following} checkpoint.", flush=True)
                continue
            if evaluator is None:
                evaluator = Evaluator(config, mesh, rules, shardings, input_config=_prepared_input_config())
            results[target] = evaluator.run_and_record(params, target, workdir, out_dir=out_dir)
            print(json.dumps({"step": target, **results[target]}), flush=True)
            last_new = time.time()
            if not continuous:
                if damaged:
                    print(f"warning: evaluated step {target}, the newest checkpoint that restores; skipped damaged "
                          f"step(s) {sorted(damaged)} (left in place; check them with `python -m "
                          f"albert_jax.jobs.checkpoints verify --workdir {workdir}`).", flush=True)
                break
        if not continuous and not results:
            raise RuntimeError(f"No checkpoint of {workdir} restores (damaged: {sorted(damaged)}); check them with "
                               f"`python -m albert_jax.jobs.checkpoints verify --workdir {workdir}`.")
        timed_out = time.time() - last_new > timeout_seconds
        if _from_process_zero([int(not continuous or done(last_step) or timed_out)]) == [1]:
            if continuous and not done(last_step):
                print(f"No new checkpoint in {workdir} for {timeout_seconds:.0f} s; stopping before the final "
                      f"step {last_step}.", flush=True)
            return results
        time.sleep(poll_seconds)


def _from_process_zero(values: list[int]) -> list[int]:
    """Process 0's list, on every process: which checkpoints to evaluate and when to stop are decided once, from
    one view of the files, so that all processes run the same collective steps."""
    if jax.process_count() == 1:
        return values
    length = int(multihost_utils.broadcast_one_to_all(np.int32(len(values))))
    padded = np.zeros(length, np.int64)
    padded[: min(length, len(values))] = values[:length]
    return [int(v) for v in multihost_utils.broadcast_one_to_all(padded)]


def evaluate_pretrained(init: str, workdir: str, step: int | None = None, vocab: str | None = None) -> dict:
    """Evaluates the model directory `init` (any kind `pretrained.load_pretrained` reads) on the gin-configured
    corpus tokenized with the model's vocabulary (`vocab` overrides the one found with it); records the result
    under WORKDIR/eval at `step` (0 when not given: a model from outside has no step of a run)."""
    model = pretrained.load_pretrained(init, step)
    params = pretrained.pretraining_params(model)
    tokenizer = pretrained.model_tokenizer(model, vocab)
    spec = prepare.DataSpec()
    if spec.corpus != "instances":  # the instances are written here: check their length before writing them
        _check_length(InstanceConfig().max_seq_length, model.config)
    input_config = _prepared_input_config(_spec_with_vocab(spec, tokenizer))
    _check_eval_data(input_config.eval_dir, tokenizer, model.config)
    mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
    placed, shardings = pretrained.place_on_mesh(params, model.config, mesh, rules)
    evaluator = Evaluator(model.config, mesh, rules, shardings, input_config=input_config)
    step = 0 if step is None else step
    result = evaluator.run_and_record(placed, step, workdir, provenance={
        "model": model.source, "vocab": os.path.abspath(tokenizer.path)})
    print(json.dumps({"step": step, **result}), flush=True)
    return result


def _spec_with_vocab(spec: prepare.DataSpec, tokenizer: Tokenizer) -> prepare.DataSpec:
    """The spec with its vocabulary bound to `tokenizer`'s file. Text corpora are prepared under a cache keyed by
    the vocabulary's digest, since a prepared corpus directory is keyed by its source files only; the demo
    corpus is read as text (its own prepared corpus uses the demo vocabulary), as is any packaged corpus."""
    if spec.corpus in prepare.PACKAGED:
        text = prepare.ensure_packaged_corpus(spec)["text"]
        spec = dataclasses.replace(spec, corpus="text", text_files=(text,), text_format="sentences")
    if spec.corpus == "prepared":
        from albert_jax.input.corpus import load_corpus_info

        load_corpus_info(spec.corpus_dir, tokenizer)  # a corpus made with another vocabulary is a clear error
    if spec.corpus in ("text", "tfds"):
        cache = os.path.join(spec.cache_dir, f"vocab-{tokenizer.sha256()[:12]}")
        spec = dataclasses.replace(spec, vocab_path=os.path.abspath(tokenizer.path), cache_dir=cache)
    return spec


def _check_eval_data(eval_dir: str, tokenizer: Tokenizer, config: AlbertConfig) -> None:
    """The eval instances must come from `tokenizer`'s vocabulary and fit the model's tables."""
    meta = input_loader.load_dataset_info(eval_dir)
    recorded = meta.get("vocab", {}).get("sha256") or (
        Tokenizer(meta["vocab_path"]).sha256() if os.path.isfile(meta.get("vocab_path", "")) else None)
    if recorded not in (None, tokenizer.sha256()) or meta["vocab_size"] > config.vocab_size:
        raise ValueError(f"The eval instances in {eval_dir} were made with another vocabulary "
                         f"({meta['vocab_size']} pieces, {meta.get('vocab_path') or meta.get('vocab')}) than the "
                         f"model's {tokenizer.path}: point InputConfig.eval_dir at instances made with it, or use "
                         f"a text corpus (corpus/text.gin), which is tokenized with the model's vocabulary.")
    _check_length(meta["max_seq_length"], config)


def _check_length(max_seq_length: int, config: AlbertConfig) -> None:
    """Instances longer than the model's position table cannot be evaluated."""
    if max_seq_length > config.max_position_embeddings:
        raise ValueError(f"The eval instances are {max_seq_length} tokens long but the model has "
                         f"{config.max_position_embeddings} positions: bind --gin.InstanceConfig.max_seq_length="
                         f"{config.max_position_embeddings} (or less).")


def _prepared_input_config(spec: prepare.DataSpec | None = None) -> input_loader.InputConfig:
    """Process 0 prepares missing data; the others wait for it, then find it ready."""
    if jax.process_index() == 0:
        input_config = prepare.prepare_data(spec)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("albert_jax: eval data prepared")
    if jax.process_index() != 0:
        input_config = prepare.prepare_data(spec)
    return input_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_gin(parser, default_files=("demo.gin",), help="gin file, repeatable, looked up as given, then under "
                  "experiments/ (default: a run's own config.gin, or demo.gin)")
    flags.add_workdir(parser, "a run's directory (its checkpoints are evaluated), or with --model the directory "
                              "that receives eval/ (default: the gin macro WORKDIR, else runs/default)")
    flags.add_step(parser, "checkpoint step to evaluate (default: the latest); with --model, the step recorded")
    parser.add_argument("--continuous", action="store_true",
                        help="keep evaluating each new checkpoint of a running job until its final step")
    flags.add_model(parser, required=False, help="evaluate this model directory (a run, a converted folder, "
                    "transformers or a TF release) instead of --workdir's checkpoints; results go to --workdir/eval")
    flags.add_vocab(parser, "with --model: SentencePiece .model (default: the one found with the model)")
    parser.add_argument("--out_dir", default=None, metavar="DIR",
                        help="where a run's evaluation goes (default: WORKDIR/eval); e.g. an evaluation on other data "
                             "than the run's own, given by --gin_file, kept apart from it")
    flags.add_no_fallback(parser)
    flags.add_dry_run(parser)
    flags.add_distributed(parser)


def gin_files(args: argparse.Namespace) -> list[str]:
    """A run is evaluated with the config it was trained with (its config.gin) unless gin files are given."""
    saved = os.path.join(args.workdir or "", "config.gin")
    if not args.gin_file and not args.model and args.workdir and os.path.exists(saved):
        return [saved]
    return flags.gin_files(args)


def run(args: argparse.Namespace) -> int:
    """`albert-jax eval`: gin is already applied (by the CLI)."""
    if args.vocab and not args.model:
        raise ValueError("--vocab is only used with --model (a run's checkpoints use the run's data).")
    if args.model and not args.workdir:
        raise ValueError("eval --model=MODEL_DIR needs --workdir=OUT: the directory that receives eval/.")
    if args.model and args.out_dir:
        raise ValueError("--out_dir is for a run's checkpoints (--workdir=RUN); with --model, --workdir receives "
                         "eval/.")
    if args.model and args.continuous:
        raise ValueError("--continuous follows a run's checkpoints (--workdir=RUN); it does not apply to --model.")
    AlbertConfig()  # validates the model config before any work starts
    workdir = flags.default_workdir(args)
    if args.dry_run:
        target = f"model {args.model}" if args.model else f"the checkpoints of {workdir}"
        print(f"dry run: would evaluate {target} (gin files: {' '.join(gin_files(args))})")
        return 0
    flags.init_distributed(args)
    if args.model:
        evaluate_pretrained(args.model, workdir, step=args.step, vocab=args.vocab)
    else:
        evaluate_checkpoints(workdir, step=args.step, continuous=args.continuous, fallback=not args.no_fallback,
                             out_dir=args.out_dir)
    return 0
