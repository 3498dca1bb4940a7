"""Fine-tune ALBERT on sentence and sentence-pair classification and regression (the GLUE family).

`albert-jax finetune --gin_file=finetune/sst2.gin --model=DIR --workdir=OUT`

DIR is any starting point `pretrained.load_pretrained` accepts: a directory written by `albert-jax convert tf`
or `albert-jax convert hf import` (albert_config.json + params/), a pretraining run's workdir (its latest
checkpoint, or `--step`), a transformers directory (config.json + safetensors), or an unconverted TF release
(converted in memory). The model follows the original run_classifier: the pooled output ([CLS] through
the pooler's dense + tanh), dropout (0.1 by default), and a dense layer to the labels initialized with a
truncated normal of std 0.02; cross-entropy for classes, squared error for regression (num_labels = 1). The
optimizer is the original AdamWeightDecay (Adam moments without bias correction, decoupled weight decay 0.01
skipping LayerNorm and bias, global-norm clipping at 1.0; `optax.adamw` on request) on the original schedule
(`optim.make_schedule`: linear warmup, then linear decay to 0 counted from step 0).

OUT receives config.gin, train.jsonl + tensorboard/, eval/step_N.json and eval/best.json (best by the task's
first metric on its first evaluation split), and model/ (albert_config.json, params/, task.json, vocabulary).
Fine-tuning runs in one process over all of its devices (batch split over the data axes of the mesh).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from albert_jax import optim, partitioning
from albert_jax import train_step as steps
from albert_jax.downstream import families
from albert_jax.config import AlbertConfig
from albert_jax.convert import folder
from albert_jax.jobs import flags
from albert_jax.jobs.sinks import MetricsWriter
from albert_jax.heads import AlbertClassifier  # noqa: F401  (re-exported: the GLUE model)
from albert_jax.pretrained import Pretrained, PretrainedError, load_pretrained, model_tokenizer  # noqa: F401

if __name__ == "__main__":  # run through the CLI: gin then sees this module once, as albert_jax.jobs.finetune
    from albert_jax.jobs import cli

    sys.exit(cli.main(["finetune", *sys.argv[1:]]))

Array = jax.Array
EPILOG = flags.examples(
    "albert-jax finetune --gin_file=finetune/sst2.gin --model=runs/demo --workdir=runs/sst2",
    "albert-jax finetune --gin_file=finetune/mrpc.gin --model=converted/albert_base --workdir=runs/mrpc \\",
    "    --gin.finetune.max_seq_length=128 --gin.make_task.data_dir=\"'/data/tfds'\"",
    "albert-jax finetune --gin_file=finetune/sst2.gin --model=runs/demo --workdir=OUT --dry_run")
OPTIMIZERS = ("adamw_original", "adamw")
INITS = ("pretrained", "random")


def make_optimizer(name: str, params_axes: Any, schedule: optax.Schedule,
                   weight_decay: float) -> optax.GradientTransformation:
    """'adamw_original': the original AdamWeightDecay (no bias correction, eps 1e-6), from `optim`'s pieces;
    'adamw': `optim.make_optimizer`'s optax.adamw. Both clip the global norm at 1.0 and skip LayerNorm/bias decay."""
    if name == "adamw":
        return optim.make_optimizer(params_axes, optimizer="adamw", learning_rate=schedule, weight_decay=weight_decay,
                                    b1=0.9, b2=0.999, eps=1e-6, clip_norm=1.0)
    if name != "adamw_original":
        raise ValueError(f"finetune.optimizer={name!r} is not one of {OPTIMIZERS}")
    return optax.chain(optax.clip_by_global_norm(1.0), optim.scale_by_moments_without_bias_correction(0.9, 0.999, 1e-6),
                       optax.add_decayed_weights(weight_decay, mask=optim.decay_mask),
                       optax.scale_by_learning_rate(schedule))


def _set_encoder(params: dict[str, Any], encoder: dict[str, Any]) -> dict[str, Any]:
    return {**params, "albert": encoder}


class Runner:
    """The jitted, sharded train and predict steps of one task model on the mesh: the train state, its
    shardings and the update step are `train_step`'s own (`model_state_shardings`, `make_update_step`); the
    model, its init, loss and predict function come from the task family (`downstream.families`)."""

    def __init__(self, family: Any, model: nn.Module, tx: optax.GradientTransformation, schedule: optax.Schedule,
                 seq_length: int, seed: int, boxed_params: Any) -> None:
        """`boxed_params`: the abstract boxed parameters of `family.init_fn(model, seq_length)` (the optimizer
        was built from it too)."""
        self.model, self.mesh, self.rules = model, partitioning.make_mesh(), partitioning.logical_rules()
        init_fn = family.init_fn(model, seq_length)
        _, self.sharding = steps.model_state_shardings(init_fn, tx, self.mesh, self.rules, boxed_params)
        self._init = functools.partial(steps.create_model_state, init_fn, tx, self.mesh, self.rules, seed,
                                       self.sharding)
        update = steps.make_update_step(family.loss_fn(model), tx, schedule, totals_fn=lambda batch: {})
        self._train = steps.jit_train_step(update, self.sharding, self.mesh)
        self.batch_sharding = partitioning.batch_sharding(self.mesh)
        self._predict = jax.jit(family.predict_fn(model), in_shardings=(self.sharding.params, self.batch_sharding),
                                out_shardings=partitioning.replicated(self.mesh))

    def context(self) -> Any:
        """The mesh and logical-axis rules the steps run under."""
        import contextlib

        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(nn.logical_axis_rules(list(self.rules)))
        return stack

    def initial_state(self, params: dict[str, Any], restore_head: bool = False,
                      restore_encoder: bool = True) -> steps.TrainState:
        """A fresh head and optimizer state around the pretrained encoder `params["albert"]`; with `restore_head`
        the head tensors too, from `params` (a model fine-tuned or imported with this head). Without
        `restore_encoder` the encoder keeps its fresh initialization (the model's own, drawn from the seed)."""
        state = self._init()
        fresh = state.params
        expected = jax.tree.map(lambda a: a.shape, fresh["albert"])
        if jax.tree.map(lambda a: tuple(np.shape(a)), params["albert"]) != expected:
            raise PretrainedError("the pretrained encoder's parameter tree differs from the task model's encoder")
        names = ["albert"] if restore_encoder else []
        if restore_head:
            head = [name for name in fresh if name != "albert"]
            shapes = lambda tree: jax.tree.map(lambda a: tuple(np.shape(a)), tree)  # noqa: E731
            mismatched = [name for name in head if name not in params or shapes(params[name]) != shapes(fresh[name])]
            if mismatched:
                raise PretrainedError(f"finetune.restore_head: the model has no {', '.join(mismatched)} of the "
                                      f"shapes this task's head needs (it has {', '.join(sorted(params))})")
            names += head
        restored = {name: jax.device_put(jax.tree.map(lambda a, s: np.asarray(a, s.dtype), params[name], fresh[name]),
                                         self.sharding.params[name]) for name in names}
        return state.replace(params={**fresh, **restored})

    def train_step(self, state: steps.TrainState, batch: dict[str, np.ndarray]) -> tuple[steps.TrainState, dict]:
        with self.context():
            return self._train(state, jax.device_put(batch, self.batch_sharding))

    def predict(self, params: Any, data: Any, batch_size: int) -> dict[str, np.ndarray]:
        """The predict function's outputs for every row of `data`, in order (the last batch padded with rows
        that are then dropped)."""
        outputs: list[dict[str, np.ndarray]] = []
        with self.context():
            for start in range(0, len(data), batch_size):
                indices = range(start, min(start + batch_size, len(data)))
                result = self._predict(params, jax.device_put(data.batch(indices, batch_size), self.batch_sharding))
                outputs.append({key: np.asarray(value)[: len(indices)] for key, value in result.items()})
        return {key: np.concatenate([part[key] for part in outputs]) for key in outputs[0]}


def evaluate(runner: Runner, params: Any, family: Any, splits: dict[str, Any], batch_size: int,
             out: Path | None = None) -> dict[str, dict[str, float]]:
    """The task's metrics on each evaluation split, computed on the host from all predictions; the prediction
    files of split S go to out/S when `out` is given."""
    return {split: family.score(split, data, runner.predict(params, data, batch_size),
                                None if out is None else out / split)
            for split, data in splits.items()}


def _record_eval(workdir: Path, step: int, task: Any, results: dict[str, dict[str, float]]) -> bool:
    """Writes eval/step_N.json; updates eval/best.json when the selection metric improved. Returns whether it did."""
    out = workdir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"step_{step}.json").write_text(json.dumps({"step": step, **results}, indent=2) + "\n")
    split, metric = task.eval_splits[0], task.metrics[0]
    best_path = out / "best.json"
    best = json.loads(best_path.read_text()) if best_path.exists() else None
    value = results[split][metric]
    if best is None or (not math.isnan(value) and (math.isnan(best[split][metric]) or value > best[split][metric])):
        best_path.write_text(json.dumps({"step": step, "selected_by": f"{split}/{metric}", **results}, indent=2) + "\n")
        return True
    return False


@gin.configurable(denylist=["init", "workdir", "vocab", "init_step"])
def finetune(init: str, workdir: str, vocab: str | None = None, init_step: int | None = None, *,
             max_seq_length: int = 512, batch_size: int = 32, num_train_steps: int | None = None,
             num_epochs: float | None = None, warmup_steps: int | None = None, warmup_proportion: float = 0.1,
             learning_rate: float = 2e-5, weight_decay: float = 0.01, optimizer: str = "adamw_original",
             albert_dropout: float | None = None, classifier_dropout: float = 0.1, dtype: str | None = None,
             eval_every: int = 0, eval_batch_size: int = 64, log_every: int = 100, seed: int = 12345,
             save_model: bool = True, family: str = "classification", restore_head: bool = False,
             init_from: str = "pretrained") -> dict[str, Any]:
    """Fine-tunes the model at `init` on the task of `family` in `workdir`; returns the final and best evaluations.

    Args:
      max_seq_length: tokens per example, [CLS]/[SEP] included (longer pairs are truncated; SQuAD windows).
      batch_size: examples (SQuAD: windows, RACE: questions) per step (global; must divide over the mesh's data
        axes).
      num_train_steps / num_epochs: training length, exactly one of them (epochs drop each epoch's remainder);
        num_train_steps = 0 only evaluates (with restore_head, a fine-tuned or imported model as it is).
      warmup_steps: linear warmup steps; None: warmup_proportion of the steps.
      learning_rate: peak learning rate. weight_decay: decoupled, not on LayerNorm/bias.
      optimizer: 'adamw_original' (the original's AdamWeightDecay, no bias correction) or 'adamw' (optax).
      albert_dropout: hidden and attention dropout inside ALBERT ("ALBERT DR" of the paper); None keeps the
        pretrained config's. classifier_dropout: on the pooled output. dtype: compute dtype override.
      eval_every: evaluate every this many steps (0: only at the end). log_every: steps between log lines.
      seed: classifier init, dropout and data order. save_model: write workdir/model at the end.
      family: 'classification' (`make_task`), 'squad' (`make_squad_task`) or 'race' (`make_race_task`); see
        `downstream.families`. restore_head: start from the head stored with `init` instead of a fresh one.
      init_from: 'pretrained' starts the encoder from `init`'s weights; 'random' takes only its architecture and
        vocabulary and initializes the encoder afresh from `seed` (the from-scratch baseline of a transfer test).
    """
    if jax.process_count() > 1:
        raise RuntimeError("fine-tuning runs in one process (over all its local devices); run it on one host")
    if (num_train_steps is None) == (num_epochs is None):
        raise ValueError("set exactly one of finetune.num_train_steps and finetune.num_epochs")
    if init_from not in INITS:
        raise ValueError(f"finetune.init_from={init_from!r} is not one of {INITS}")
    if init_from == "random" and restore_head:
        raise ValueError("finetune.init_from='random' with finetune.restore_head=True: a random encoder under a "
                         "trained head; set one of them")
    task = families.make_family(family)
    if not task.eval_splits:
        raise ValueError(f"task {task.name!r} has no evaluation split: add one to the task's files (or eval_splits)")
    pretrained = load_pretrained(init, init_step)
    tokenizer = model_tokenizer(pretrained, vocab)
    vocab_path, config = tokenizer.path, pretrained.config
    if max_seq_length > config.max_position_embeddings:
        raise ValueError(f"finetune.max_seq_length={max_seq_length} exceeds the model's "
                         f"max_position_embeddings={config.max_position_embeddings}")
    if albert_dropout is not None:
        config = config.replace(hidden_dropout_prob=albert_dropout, attention_probs_dropout_prob=albert_dropout)
    if dtype is not None:
        config = config.replace(dtype=dtype)

    out = Path(workdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.gin").write_text(gin.config_str())
    started = time.time()
    train = task.features(task.train_split, tokenizer, max_seq_length) if num_train_steps != 0 else []
    evals = {split: task.features(split, tokenizer, max_seq_length) for split in task.eval_splits}
    steps_per_epoch = len(train) // batch_size
    if steps_per_epoch == 0 and num_train_steps != 0:
        raise ValueError(f"the train split has {len(train)} examples, fewer than finetune.batch_size={batch_size}")
    total = num_train_steps if num_train_steps is not None else max(1, int(num_epochs * steps_per_epoch))
    warmup = warmup_steps if warmup_steps is not None else int(warmup_proportion * total)
    source = pretrained.source if init_from == "pretrained" else f"a random init of {pretrained.source}'s architecture"
    print(f"Fine-tuning {source} on {task.name}: {len(train)} train examples "
          f"({', '.join(f'{s} {len(e)}' for s, e in evals.items())}), {total} steps of {batch_size}, warmup {warmup}, "
          f"lr {learning_rate}; data ready in {time.time() - started:.1f}s.", flush=True)

    schedule = optim.make_schedule(peak_learning_rate=learning_rate, warmup_steps=warmup,
                                   num_train_steps=max(total, 1))
    model = task.model(config, classifier_dropout)
    boxed = jax.eval_shape(task.init_fn(model, max_seq_length), jax.random.PRNGKey(0))
    runner = Runner(task, model, make_optimizer(optimizer, boxed, schedule, weight_decay), schedule, max_seq_length,
                    seed, boxed)
    ways = partitioning.data_parallel_size(runner.mesh)
    if batch_size % ways or eval_batch_size % ways:
        raise ValueError(f"finetune.batch_size={batch_size} and eval_batch_size={eval_batch_size} must be multiples "
                         f"of the {ways} data-parallel devices")
    state = runner.initial_state(pretrained.params, restore_head, restore_encoder=init_from == "pretrained")
    del pretrained

    writer = MetricsWriter(str(out), subdir="tensorboard", jsonl_name="train.jsonl")
    order_rng = np.random.default_rng(seed)
    order = np.empty(0, np.int64)
    results: dict[str, dict[str, float]] = {}
    in_flight = None
    for step in range(1 if total else 0, total + 1):
        if step == 0:  # evaluation only
            pass
        elif len(order) < batch_size:
            order = order_rng.permutation(len(train))[: steps_per_epoch * batch_size]
        if step:
            indices, order = order[:batch_size], order[batch_size:]
            state, step_metrics = runner.train_step(state, train.batch(indices, batch_size))
            # At most two steps in flight, as in the pretraining loop: an unbounded queue of multi-device steps
            # deadlocks XLA:CPU's simulated devices (one device's part never joins a collective's rendezvous,
            # and the process aborts after 40 s) and holds every queued batch in memory.
            if in_flight is not None:
                jax.block_until_ready(in_flight)
            in_flight = step_metrics
        if step and (step % log_every == 0 or step == total):
            host = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
            writer.write(step, host)
            print(f"step {step}/{total} " + " ".join(f"{k} {v:.4g}" for k, v in sorted(host.items())), flush=True)
        if (eval_every and step % eval_every == 0) or step == total:
            results = evaluate(runner, state.params, task, evals, eval_batch_size, out / "eval" / f"step_{step}")
            improved = _record_eval(out, step, task, results)
            writer.write(step, {f"eval/{s}/{m}": v for s, r in results.items() for m, v in r.items()})
            print(f"eval step {step}: {json.dumps(results)}{' (best so far)' if improved else ''}", flush=True)
    writer.close()
    if save_model:
        _save_model(out / "model", config, state.params, task.task, family, vocab_path, max_seq_length, init,
                    init_from)
    best = json.loads((out / "eval" / "best.json").read_text())
    return {"final": results, "best": best, "steps": total}


def _save_model(directory: Path, config: AlbertConfig, params: Any, task: Any, family: str, vocab: str,
                max_seq_length: int, init: str, init_from: str = "pretrained") -> None:
    """albert_config.json + params/ (encoder and head) + task.json + the vocabulary, loadable again by
    `load_pretrained` (whose encoder can start another fine-tuning)."""
    folder.write(directory, config, jax.device_get(params), files=[Path(vocab)], force=True)
    record = {"family": family, "task": dataclasses.asdict(task), "max_seq_length": max_seq_length,
              "init": str(init), "init_from": init_from}
    (directory / folder.TASK_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_gin(parser, help="task gin file, e.g. finetune/sst2.gin (repeatable; looked up as given, then under "
                               "experiments/)")
    flags.add_model(parser, help="the pretrained model to start from: a pretraining run, a converted folder, a "
                                 "transformers directory or an original TF release")
    flags.add_workdir(parser, "output directory: config.gin, train.jsonl, eval/, model/", required=True)
    flags.add_step(parser, "with a run as --model: its checkpoint step (default: the latest)")
    flags.add_vocab(parser)
    flags.add_dry_run(parser)


def run(args: argparse.Namespace) -> int:
    """`albert-jax finetune`: gin is already applied (by the CLI); a dry run checks the task config."""
    if not args.gin_file:
        raise ValueError("finetune needs a task: --gin_file=finetune/<task>.gin (e.g. finetune/sst2.gin).")
    try:
        family = gin.query_parameter("finetune.family")
    except ValueError:
        family = inspect.signature(finetune).parameters["family"].default
    task = families.make_family(family)  # builds the task from gin: a wrong task binding fails here
    if args.dry_run:
        print(f"dry run: would fine-tune {args.model} on {task.name} ({family}; evaluation splits "
              f"{', '.join(task.eval_splits)}) into {args.workdir}")
        return 0
    result = finetune(args.model, args.workdir, vocab=args.vocab, init_step=args.step)
    print(json.dumps({"best": result["best"]}), flush=True)
    return 0
