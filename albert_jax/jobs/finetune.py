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
from albert_jax.downstream import tasks
from albert_jax.config import AlbertConfig
from albert_jax.convert import folder
from albert_jax.jobs import flags
from albert_jax.jobs.sinks import MetricsWriter
from albert_jax.model import AlbertModel, dense
from albert_jax.pretrained import Pretrained, PretrainedError, load_pretrained, model_tokenizer  # noqa: F401
from albert_jax.losses import LossFn, classification_loss

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


class AlbertClassifier(nn.Module):
    """AlbertModel, dropout on the pooled output, dense layer to `num_labels` logits (1 = regression)."""

    config: AlbertConfig
    num_labels: int
    classifier_dropout: float = 0.1

    def setup(self) -> None:
        self.albert = AlbertModel(self.config)
        self.dropout = nn.Dropout(self.classifier_dropout)
        self.classifier = dense(self.num_labels, ("hidden", None), self.config, "classifier")

    def __call__(self, input_ids: Array, input_mask: Array, segment_ids: Array,
                 deterministic: bool = True) -> Array:
        _, pooled = self.albert(input_ids, input_mask, segment_ids, deterministic)
        return self.classifier(self.dropout(pooled, deterministic=deterministic)).astype(jnp.float32)


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


def classifier_init(model: AlbertClassifier, seq_length: int) -> steps.ParamsInit:
    """`init_fn` of the classifier: key -> boxed parameters."""
    ids = jnp.zeros((1, seq_length), jnp.int32)
    return lambda rng: model.init(rng, ids, ids, ids, deterministic=True)["params"]


def abstract_classifier_params(model: AlbertClassifier, seq_length: int) -> Any:
    """The classifier's boxed abstract parameter tree (logical axes for shardings and the optimizer)."""
    return jax.eval_shape(classifier_init(model, seq_length), jax.random.PRNGKey(0))


def classifier_loss_fn(model: AlbertClassifier) -> LossFn:
    """The `loss_fn` for `train_step.make_update_step`: the classifier's task loss with dropout from `rng`."""
    regression = model.num_labels == 1

    def loss_fn(params: Any, batch: dict[str, Array], rng: Array, totals: dict[str, Array]) -> tuple[Array, dict]:
        del totals  # task losses are whole-batch means: fine-tuning takes no microbatches
        logits = model.apply({"params": params}, batch["input_ids"], batch["input_mask"], batch["segment_ids"],
                             deterministic=False, rngs={"dropout": rng})
        loss, metrics = classification_loss(logits, batch, regression)
        return loss, dict(metrics, loss=loss)

    return loss_fn


class Runner:
    """The jitted, sharded train and predict steps of one classifier on the mesh: the train state, its
    shardings and the update step are `train_step`'s own (`model_state_shardings`, `make_update_step`)."""

    def __init__(self, model: AlbertClassifier, tx: optax.GradientTransformation, schedule: optax.Schedule,
                 seq_length: int, seed: int, boxed_params: Any) -> None:
        """`boxed_params`: `abstract_classifier_params(model, seq_length)` (the optimizer was built from it too)."""
        self.model, self.mesh, self.rules = model, partitioning.make_mesh(), partitioning.logical_rules()
        init_fn = classifier_init(model, seq_length)
        _, self.sharding = steps.model_state_shardings(init_fn, tx, self.mesh, self.rules, boxed_params)
        self._init = functools.partial(steps.create_model_state, init_fn, tx, self.mesh, self.rules, seed,
                                       self.sharding)
        update = steps.make_update_step(classifier_loss_fn(model), tx, schedule, totals_fn=lambda batch: {})
        self._train = steps.jit_train_step(update, self.sharding, self.mesh)

        def predict(params: Any, batch: dict[str, Array]) -> Array:
            return model.apply({"params": params}, batch["input_ids"], batch["input_mask"], batch["segment_ids"],
                               deterministic=True)

        self.batch_sharding = partitioning.batch_sharding(self.mesh)
        self._predict = jax.jit(predict, in_shardings=(self.sharding.params, self.batch_sharding),
                                out_shardings=partitioning.replicated(self.mesh))

    def context(self) -> Any:
        """The mesh and logical-axis rules the steps run under."""
        import contextlib

        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(nn.logical_axis_rules(list(self.rules)))
        return stack

    def initial_state(self, encoder: dict[str, Any]) -> steps.TrainState:
        """A fresh classifier head and optimizer state around the pretrained `encoder` tree."""
        state = self._init()
        expected = jax.tree.map(lambda a: a.shape, state.params["albert"])
        if jax.tree.map(lambda a: tuple(np.shape(a)), encoder) != expected:
            raise PretrainedError("the pretrained encoder's parameter tree differs from the classifier's encoder")
        return state.replace(params=_set_encoder(state.params, jax.device_put(
            jax.tree.map(lambda a, s: np.asarray(a, s.dtype), encoder, state.params["albert"]),
            self.sharding.params["albert"])))

    def train_step(self, state: steps.TrainState, batch: dict[str, np.ndarray]) -> tuple[steps.TrainState, dict]:
        with self.context():
            return self._train(state, jax.device_put(batch, self.batch_sharding))

    def predict(self, params: Any, encoded: tasks.Encoded, seq_length: int, batch_size: int) -> np.ndarray:
        """Logits of every example, in order (the last batch padded with rows that are then dropped)."""
        outputs = []
        with self.context():
            for start in range(0, len(encoded), batch_size):
                indices = range(start, min(start + batch_size, len(encoded)))
                batch = tasks.make_batch(encoded, indices, seq_length, batch_size)
                logits = self._predict(params, jax.device_put(batch, self.batch_sharding))
                outputs.append(np.asarray(logits)[: len(indices)])
        return np.concatenate(outputs)


def evaluate(runner: Runner, params: Any, task: tasks.Task, splits: dict[str, tasks.Encoded], seq_length: int,
             batch_size: int) -> dict[str, dict[str, float]]:
    """The task's metrics on each evaluation split, computed on the host from all predictions."""
    results = {}
    for split, encoded in splits.items():
        logits = runner.predict(params, encoded, seq_length, batch_size)
        predictions = tasks.predictions_from_logits(task, logits)
        results[split] = dict(tasks.compute_metrics(task, encoded.labels, predictions), examples=len(encoded))
    return results


def _record_eval(workdir: Path, step: int, task: tasks.Task, results: dict[str, dict[str, float]]) -> bool:
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
             save_model: bool = True) -> dict[str, Any]:
    """Fine-tunes the model at `init` on `tasks.make_task()` in `workdir`; returns the final and best evaluations.

    Args:
      max_seq_length: tokens per example, [CLS]/[SEP] included (longer pairs are truncated).
      batch_size: examples per step (global; must divide over the mesh's data axes).
      num_train_steps / num_epochs: training length, exactly one of them (epochs drop each epoch's remainder).
      warmup_steps: linear warmup steps; None: warmup_proportion of the steps.
      learning_rate: peak learning rate. weight_decay: decoupled, not on LayerNorm/bias.
      optimizer: 'adamw_original' (the original's AdamWeightDecay, no bias correction) or 'adamw' (optax).
      albert_dropout: hidden and attention dropout inside ALBERT ("ALBERT DR" of the paper); None keeps the
        pretrained config's. classifier_dropout: on the pooled output. dtype: compute dtype override.
      eval_every: evaluate every this many steps (0: only at the end). log_every: steps between log lines.
      seed: classifier init, dropout and data order. save_model: write workdir/model at the end.
    """
    if jax.process_count() > 1:
        raise RuntimeError("fine-tuning runs in one process (over all its local devices); run it on one host")
    if (num_train_steps is None) == (num_epochs is None):
        raise ValueError("set exactly one of finetune.num_train_steps and finetune.num_epochs")
    task = tasks.make_task()
    if not task.eval_splits:
        raise ValueError(f"task {task.name!r} has no evaluation split: add one to make_task.files (or eval_splits)")
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
    train = tasks.encode(tasks.read_split(task, task.train_split), tokenizer, max_seq_length)
    evals = {split: tasks.encode(tasks.read_split(task, split), tokenizer, max_seq_length)
             for split in task.eval_splits}
    steps_per_epoch = len(train) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the train split has {len(train)} examples, fewer than finetune.batch_size={batch_size}")
    total = num_train_steps if num_train_steps is not None else max(1, int(num_epochs * steps_per_epoch))
    warmup = warmup_steps if warmup_steps is not None else int(warmup_proportion * total)
    print(f"Fine-tuning {pretrained.source} on {task.name}: {len(train)} train examples "
          f"({', '.join(f'{s} {len(e)}' for s, e in evals.items())}), {total} steps of {batch_size}, warmup {warmup}, "
          f"lr {learning_rate}; data ready in {time.time() - started:.1f}s.", flush=True)

    schedule = optim.make_schedule(peak_learning_rate=learning_rate, warmup_steps=warmup, num_train_steps=total)
    model = AlbertClassifier(config, task.num_labels, classifier_dropout)
    boxed = abstract_classifier_params(model, max_seq_length)
    runner = Runner(model, make_optimizer(optimizer, boxed, schedule, weight_decay), schedule, max_seq_length, seed,
                    boxed)
    ways = partitioning.data_parallel_size(runner.mesh)
    if batch_size % ways or eval_batch_size % ways:
        raise ValueError(f"finetune.batch_size={batch_size} and eval_batch_size={eval_batch_size} must be multiples "
                         f"of the {ways} data-parallel devices")
    state = runner.initial_state(pretrained.params["albert"])
    del pretrained

    writer = MetricsWriter(str(out), subdir="tensorboard", jsonl_name="train.jsonl")
    order_rng = np.random.default_rng(seed)
    order = np.empty(0, np.int64)
    results: dict[str, dict[str, float]] = {}
    for step in range(1, total + 1):
        if len(order) < batch_size:
            order = order_rng.permutation(len(train))[: steps_per_epoch * batch_size]
        indices, order = order[:batch_size], order[batch_size:]
        state, step_metrics = runner.train_step(state, tasks.make_batch(train, indices, max_seq_length, batch_size))
        if step % log_every == 0 or step == total:
            host = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
            writer.write(step, host)
            print(f"step {step}/{total} " + " ".join(f"{k} {v:.4g}" for k, v in sorted(host.items())), flush=True)
        if (eval_every and step % eval_every == 0) or step == total:
            results = evaluate(runner, state.params, task, evals, max_seq_length, eval_batch_size)
            improved = _record_eval(out, step, task, results)
            writer.write(step, {f"eval/{s}/{m}": v for s, r in results.items() for m, v in r.items()})
            print(f"eval step {step}: {json.dumps(results)}{' (best so far)' if improved else ''}", flush=True)
    writer.close()
    if save_model:
        _save_model(out / "model", config, state.params, task, vocab_path, max_seq_length, init)
    best = json.loads((out / "eval" / "best.json").read_text())
    return {"final": results, "best": best, "steps": total}


def _save_model(directory: Path, config: AlbertConfig, params: Any, task: tasks.Task, vocab: str,
                max_seq_length: int, init: str) -> None:
    """albert_config.json + params/ (encoder and classifier) + task.json + the vocabulary, loadable again by
    `load_pretrained` (whose encoder can start another fine-tuning)."""
    folder.write(directory, config, jax.device_get(params), files=[Path(vocab)], force=True)
    record = {"task": dataclasses.asdict(task), "max_seq_length": max_seq_length, "init": str(init)}
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
    task = tasks.make_task()
    if args.dry_run:
        print(f"dry run: would fine-tune {args.model} on {task.name} ({task.num_labels} labels, metrics "
              f"{', '.join(task.metrics)}) into {args.workdir}")
        return 0
    result = finetune(args.model, args.workdir, vocab=args.vocab, init_step=args.step)
    print(json.dumps({"best": result["best"]}), flush=True)
    return 0
