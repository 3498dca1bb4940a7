"""Held-out evaluation of pretraining checkpoints: one pass over the eval split, exact metric sums.

`python launch.py --mode=eval --workdir=DIR [--step=N] [--continuous]` restores a run's checkpoint onto
whatever devices this machine has and writes DIR/eval/step_N.json plus TensorBoard scalars at that step.
Continuous mode follows a running job and keeps DIR/eval/best.json pointing at the best checkpoint by
masked_lm_accuracy.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.sharding import Mesh

from albert_jax import checkpoint, data_setup, metrics, optim, partitioning
from albert_jax import train_step as steps
from albert_jax.config import AlbertConfig
from albert_jax.input import loader as input_loader
from albert_jax.model import init_params, metrics_from_sums

REPORTED = ("masked_lm_accuracy", "masked_lm_loss", "sentence_order_accuracy", "sentence_order_loss",
            "examples", "masked_tokens")


@gin.configurable
class Evaluator:
    """Runs the jitted eval step over one pass of the eval split and reduces the sums on the host."""

    def __init__(self, config: AlbertConfig, mesh: Mesh, rules: Any, params_sharding: Any,
                 input_config: input_loader.InputConfig | None = None, batch_size: int = 32,
                 max_batches: int | None = None) -> None:
        """batch_size: global eval batch; max_batches: stop early (None = the whole split)."""
        self.mesh, self.rules, self.input_config = mesh, rules, input_config
        self.batch_size, self.max_batches = batch_size, max_batches
        self._step = jax.jit(steps.make_eval_step(config), in_shardings=(params_sharding,
                             partitioning.batch_sharding(mesh)), out_shardings=partitioning.replicated(mesh))

    def evaluate(self, params: Any) -> dict[str, float]:
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

    def run_and_record(self, params: Any, step: int, workdir: str) -> dict[str, float]:
        """Evaluates and writes WORKDIR/eval/step_N.json and TensorBoard scalars under WORKDIR/eval."""
        result = self.evaluate(params)
        record(workdir, step, result)
        return result


def record(workdir: str, step: int, result: dict[str, float]) -> None:
    if jax.process_index() != 0:
        return
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"step_{step}.json"), "w") as f:
        json.dump({"step": step, **result}, f, indent=2)
    writer = metrics.MetricsWriter(out_dir, subdir="tensorboard", jsonl_name="eval.jsonl")
    writer.write(step, result)
    writer.close()
    best_path = os.path.join(out_dir, "best.json")
    best = json.load(open(best_path)) if os.path.exists(best_path) else None
    if best is None or result["masked_lm_accuracy"] > best["masked_lm_accuracy"]:
        with open(best_path, "w") as f:
            json.dump({"step": step, "checkpoint": os.path.join(workdir, "checkpoints", str(step)), **result}, f,
                      indent=2)


def restore_params(workdir: str, mesh: Mesh, rules: Any, step: int | None = None) -> tuple[int, Any, Any]:
    """(step, params, params sharding) of a run's checkpoint, laid out on `mesh`."""
    config = AlbertConfig()
    boxed = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    tx = optim.make_optimizer(boxed)
    abstract, shardings = steps.state_shardings(config, tx, mesh, rules)
    manager = checkpoint.make_manager(workdir)
    step, state, _, _ = checkpoint.restore(manager, checkpoint.abstract_with_shardings(abstract, shardings),
                                           step=step, with_iterator=False)
    manager.close()
    return step, state.params, shardings.params


def evaluate_checkpoints(workdir: str, step: int | None = None, continuous: bool = False,
                         poll_seconds: float = 30.0, timeout_seconds: float = 3600.0) -> dict[int, dict]:
    """Evaluates one checkpoint (latest or `step`), or in continuous mode every new one until the run ends
    (no new checkpoint for `timeout_seconds`)."""
    mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
    results: dict[int, dict] = {}
    evaluator = None
    last_new = time.time()
    while True:
        manager = checkpoint.make_manager(workdir)
        available = sorted(manager.all_steps())
        manager.close()
        if not available:
            raise FileNotFoundError(f"No checkpoints in {workdir}/checkpoints.")
        todo = [step if step is not None else available[-1]] if not continuous else [
            s for s in available if s not in results and not os.path.exists(
                os.path.join(workdir, "eval", f"step_{s}.json"))]
        for target in todo:
            restored_step, params, sharding = restore_params(workdir, mesh, rules, target)
            if evaluator is None:
                evaluator = Evaluator(AlbertConfig(), mesh, rules, sharding, input_config=data_setup.prepare_data())
            results[restored_step] = evaluator.run_and_record(params, restored_step, workdir)
            print(json.dumps({"step": restored_step, **results[restored_step]}), flush=True)
            last_new = time.time()
        if not continuous or time.time() - last_new > timeout_seconds:
            return results
        time.sleep(poll_seconds)
