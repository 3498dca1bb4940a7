"""Pretrains the gin-configured model in WORKDIR, resuming from its latest checkpoint there.

The loop is a script-like sequence of set-up, then step / log / checkpoint until done.

Everything numeric lives in `train_step`; this module owns the side effects: the mesh, the data iterator,
checkpoints (resume from the latest in WORKDIR), metric sinks, progress, the profiler window, SIGTERM
(preemption: save and exit cleanly) and the non-finite-update guard.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from typing import Any, Callable, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.experimental import multihost_utils

from albert_jax import checkpoint, describe, optim, partitioning
from albert_jax.input import prepare
from albert_jax.jobs import flags, host_allocator, host_devices, sinks
from albert_jax import train_step as steps
from albert_jax.config import AlbertConfig
from albert_jax.input import loader as input_loader
from albert_jax.model import abstract_params

if __name__ == "__main__":  # run through the CLI: gin then sees this module once, as albert_jax.jobs.train
    from albert_jax.jobs import cli

    sys.exit(cli.main(["train", *sys.argv[1:]]))

log = logging.getLogger("albert_jax.jobs.train")
EPILOG = flags.examples(
    "albert-jax train                                           # the demo (experiments/demo.gin) into runs/demo",
    "albert-jax train --gin_file=paper/albert_base.gin --workdir=/runs/base",
    "albert-jax train --gin_file=demo.gin --gin.train.num_train_steps=200 --workdir=runs/short",
    "albert-jax train --gin_file=demo.gin --dry_run              # check the config, run nothing")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_gin(parser, default_files=("demo.gin",))
    flags.add_workdir(parser, "run directory: checkpoints/, metrics, config.gin; an existing run resumes from "
                              "its latest checkpoint (default: the gin macro WORKDIR, else runs/default)")
    parser.add_argument("--restore_step", type=int, default=None, metavar="N",
                        help="resume from this checkpoint step (newer steps are set aside under checkpoints/, "
                             "not deleted)")
    flags.add_no_fallback(parser)
    flags.add_dry_run(parser)
    flags.add_distributed(parser)


def run(args: argparse.Namespace) -> int:
    """`albert-jax train`: gin is already applied (by the CLI); checks the model config, then trains."""
    config = AlbertConfig()  # validates the model config before any work starts
    workdir = flags.default_workdir(args)
    if args.dry_run:
        print(f"dry run: would train a {config.num_hidden_layers}-layer, hidden {config.hidden_size} model into "
              f"{workdir} (gin files: {' '.join(flags.gin_files(args))})")
        return 0
    if host_allocator.tune_host_allocator():  # before JAX starts its CPU client (see the module)
        print("host allocator: glibc malloc tuned for XLA:CPU (one arena, 1 GiB mmap and trim thresholds)", flush=True)
    split = host_devices.host_devices()  # before JAX starts its CPU client (see the module)
    if split:
        print(split, flush=True)
    flags.init_distributed(args)
    train(workdir, restore_step=args.restore_step, fallback=not args.no_fallback, gin_files=flags.gin_files(args))
    return 0


class Preemption:
    """Turns SIGTERM into a flag checked between steps (agreed across processes before acting on it)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        del signum, frame
        self.requested = True

    def any_process_requested(self) -> bool:
        if jax.process_count() == 1:
            return self.requested
        flags = multihost_utils.process_allgather(np.asarray([self.requested]))
        return bool(np.any(flags))

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def operative_config_text() -> str:
    """Every binding in force (not only those used so far), so that eval and resume see the whole run."""
    return gin.config_str()


@gin.configurable(denylist=["workdir", "restore_step", "fallback", "gin_files"])
def train(workdir: str, num_train_steps: int = 1000, global_batch_size: int = 32, seed: int = 0,
          num_microbatches: int = 1, log_every: int = 10, max_nonfinite_streak: int = 10,
          profile_steps: tuple[int, int] | None = None, eval_every: int = 0,
          final_report: bool = False, *, restore_step: int | None = None, fallback: bool = True,
          gin_files: Sequence[str] = ()) -> dict[str, float]:
    """Pretrains the gin-configured model in WORKDIR, resuming from its newest checkpoint that restores (a damaged
    newer one is reported and set aside; `fallback=False` makes it an error), or from `restore_step`.

    Args:
      gin_files: the gin files of the run, as the command line named them (the final report repeats them).
      num_train_steps: total optimizer steps (the schedule decays to 0 at this step).
      global_batch_size: sequences per step over all processes.
      seed: parameter init, dropout and data order all derive from it.
      num_microbatches: gradient accumulation: the batch is processed in this many slices per update.
      log_every: steps between console / TensorBoard / JSONL reports.
      max_nonfinite_streak: stop after this many consecutive skipped (non-finite) updates.
      profile_steps: (first, last) step of a profiler trace written to WORKDIR/profile, or None.
      eval_every: run held-out evaluation every this many steps (0 = never during training).
      final_report: at the end, evaluate on the whole held-out split, compare with simple baselines, draw the
        training curves (WORKDIR/curves.png) and print a report (the demo does).
    Returns the last logged metrics.
    """
    started = time.time()
    config = AlbertConfig()
    mesh = partitioning.make_mesh()
    rules = partitioning.logical_rules()
    check_batch(global_batch_size, mesh, jax.process_count(), num_microbatches)
    os.makedirs(workdir, exist_ok=True)

    input_config = prepared_input_config()
    check_vocab(config, input_config)
    built = build_step(config, mesh, rules, input_loader.sentence_loss_weight(config=input_config), num_microbatches)
    abstract_state, state_sharding, tx = built.abstract_state, built.state_sharding, built.tx
    loader = input_loader.make_loader(split="train", global_batch_size=global_batch_size,
                                      process_index=jax.process_index(), process_count=jax.process_count(),
                                      seed=seed, config=input_config)
    manager = checkpoint.make_manager(workdir)
    saver = checkpoint.Saver(manager)
    target = checkpoint.abstract_with_shardings(abstract_state, state_sharding)
    restored = checkpoint.restore_newest_good(manager, target, workdir, restore_step=restore_step, fallback=fallback)
    if restored is not None:
        start_step, state, iterator_state, _ = restored
        if iterator_state is not None:
            loader.set_state(iterator_state)
        print(f"Resumed from {workdir} at step {start_step}.", flush=True)
    else:
        if restore_step is not None:
            raise FileNotFoundError(f"--restore_step={restore_step}: {workdir} has no checkpoint yet.")
        state = steps.create_state(config, tx, mesh, rules, seed, shardings=state_sharding)
        start_step = 0
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.gin"), "w") as f:
            f.write(operative_config_text())
    checkpoint.write_run_info(workdir, run_info(config, input_config, num_train_steps, global_batch_size,
                                                loader.seq_length, loader.max_predictions_per_seq))

    seq_length = loader.seq_length
    # FLOPs per token at the shape the run actually reads, not describe's gin defaults (512 / 20).
    model_report = describe.describe(seq_length=seq_length, max_predictions_per_seq=loader.max_predictions_per_seq)
    step_fn = built.step_fn
    throughput = sinks.Throughput(global_batch_size * seq_length, model_report["train_flops_per_token"],
                                    num_train_steps, start_step)
    writer = sinks.MetricsWriter(workdir)
    preemption = Preemption()
    evaluator = None
    if eval_every:
        from albert_jax.jobs import evaluate

        evaluator = evaluate.Evaluator(config, mesh, rules, state_sharding.params, input_config=input_config)
    print(f"Training {model_report['params_with_heads']:,} parameters on {jax.device_count()} device{'s' if jax.device_count() > 1 else ''} "
          f"(mesh {dict(mesh.shape)}), batch {global_batch_size} x {seq_length}, steps {start_step} -> "
          f"{num_train_steps}.", flush=True)

    last: dict[str, float] = {}
    previous_streak = None
    step = start_step
    loop_started = time.perf_counter()
    data_iter = iter(loader)
    with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):
        while step < num_train_steps:
            if profile_steps and step == profile_steps[0]:
                jax.block_until_ready(state)  # the trace holds whole steps, none half-run before it
                jax.profiler.start_trace(os.path.join(workdir, "profile"))
            batch = input_loader.to_global_batch(next(data_iter), partitioning.batch_sharding(mesh))
            state, step_metrics = step_fn(state, batch)
            step += 1
            if profile_steps and step == profile_steps[1]:
                jax.block_until_ready(state)  # stopping mid-step crashed XLA:CPU's tracer 1 time in 10 (SIGSEGV)
                jax.profiler.stop_trace()
            if previous_streak is not None and int(previous_streak) >= max_nonfinite_streak:
                saver.save(step, state, loader.get_state(), _checkpoint_config(config), force=True)
                saver.wait()
                raise FloatingPointError(
                    f"{max_nonfinite_streak} consecutive updates had a non-finite loss or gradient (last at step "
                    f"{step}); parameters are unchanged since the last finite step. Lower the learning rate, "
                    f"check the data, or raise train.max_nonfinite_streak.")
            previous_streak = step_metrics["nonfinite_streak"]  # read one step late: no sync on the hot path
            if step % log_every == 0 or step == num_train_steps:
                host = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
                host.update(throughput.mark(step), skipped_total=float(state.nonfinite_total))
                writer.write(step, host)
                print(sinks.console_line(step, num_train_steps, host), flush=True)
                last = host
            if evaluator is not None and step % eval_every == 0:
                held_out = evaluator.run_and_record(state.params, step, workdir)
                print(f"eval at step {step}: " + " | ".join(f"{k} {v:.4f}" for k, v in held_out.items()
                                                          if k.startswith(("masked_lm", "sentence"))), flush=True)
            saver.save(step, state, loader.get_state(), _checkpoint_config(config))
            if preemption.any_process_requested():
                if manager.latest_step() != step:
                    saver.save(step, state, loader.get_state(), _checkpoint_config(config), force=True)
                saver.wait()
                print(f"SIGTERM: saved step {step} to {workdir}; exiting cleanly.", flush=True)
                break
        else:
            if manager.latest_step() != step:
                saver.save(step, state, loader.get_state(), _checkpoint_config(config), force=True)
    saver.wait()
    manager.close()
    writer.close()
    preemption.restore()
    if final_report and step >= num_train_steps:
        tokens_per_s = (step - start_step) * global_batch_size * seq_length / (time.perf_counter() - loop_started)
        _final_report(workdir, config, mesh, rules, state, state_sharding, input_config, step,
                      model_report["params_with_heads"], tokens_per_s, time.time() - started, gin_files)
    return last


def _final_report(workdir: str, config: AlbertConfig, mesh: Any, rules: Any, state: Any, state_sharding: Any,
                  input_config: input_loader.InputConfig, step: int, params: int, tokens_per_s: float,
                  seconds: float, gin_files: Sequence[str]) -> None:
    """Full held-out evaluation, baselines, curves PNG and the printed summary (process 0 prints)."""
    from albert_jax.jobs import evaluate, report as report_lib

    evaluator = evaluate.Evaluator(config, mesh, rules, state_sharding.params, input_config=input_config,
                                   max_batches=None)
    held_out = evaluator.run_and_record(state.params, step, workdir)
    base = report_lib.baselines(input_config)
    curves = report_lib.plot_curves(workdir, f"{params:,} parameters, {step} steps", base)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "report.json"), "w") as f:
            json.dump({"step": step, "held_out": held_out, "baselines": base, "params": params,
                       "tokens_per_s": tokens_per_s, "seconds": seconds, "curves": curves}, f, indent=2)
        gin_flags = " ".join(f"--gin_file={name}" for name in gin_files)
        print(report_lib.format_report(workdir, held_out, base, params, tokens_per_s, seconds, gin_flags),
              flush=True)


@dataclasses.dataclass
class BuiltStep:
    """What the loop runs: optimizer, the state's abstract shape and shardings, the raw and the jitted step."""

    tx: Any
    abstract_state: Any
    state_sharding: Any
    raw_step: Callable
    step_fn: Callable


def build_step(config: AlbertConfig, mesh: Any, rules: Any, sentence_weight: float,
               num_microbatches: int) -> BuiltStep:
    """The train step exactly as `train` runs it (gin picks optimizer and schedule); `albert-jax compile`
    compiles this same object for a TPU slice."""
    tx = optim.make_optimizer(abstract_params(config))
    schedule = optim.make_schedule()
    abstract_state, state_sharding = steps.state_shardings(config, tx, mesh, rules)
    raw_step = steps.make_train_step(config, tx, schedule, sentence_weight, num_microbatches)
    return BuiltStep(tx, abstract_state, state_sharding, raw_step,
                     steps.jit_train_step(raw_step, state_sharding, mesh))


def check_batch(global_batch_size: int, mesh: Any, process_count: int, num_microbatches: int) -> None:
    """The global batch must split evenly over data-parallel devices, processes and microbatches."""
    dp = partitioning.data_parallel_size(mesh)
    if global_batch_size % dp or global_batch_size % (process_count * num_microbatches) or (
            (global_batch_size // num_microbatches) % dp):
        raise ValueError(f"global_batch_size={global_batch_size} must divide evenly over {dp} data-parallel "
                         f"devices, {process_count} processes and {num_microbatches} microbatches (each "
                         f"microbatch over the {dp} devices too).")


def prepared_input_config() -> input_loader.InputConfig:
    """Process 0 prepares missing data (corpus, vocab, instances); the others wait, then find it ready."""
    if jax.process_index() == 0:
        input_config = prepare.prepare_data()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("albert_jax: data prepared")
    if jax.process_index() != 0:
        input_config = prepare.prepare_data()
    return input_config


def check_vocab(config: AlbertConfig, input_config: input_loader.InputConfig) -> None:
    """The data's vocabulary must fit the model's embedding table."""
    data_vocab = input_loader.load_dataset_info(input_config.train_dir)["vocab_size"]
    if data_vocab > config.vocab_size:
        raise ValueError(f"The training data uses a {data_vocab}-piece vocabulary but AlbertConfig.vocab_size is "
                         f"{config.vocab_size}: bind AlbertConfig.vocab_size = {data_vocab} (or use a smaller "
                         f"vocabulary).")


def run_info(config: AlbertConfig, input_config: input_loader.InputConfig, num_train_steps: int,
             global_batch_size: int, seq_length: int, max_predictions_per_seq: int) -> dict[str, Any]:
    """WORKDIR/run.json: what fine-tuning, fill-mask, evaluation and export need to know about the run."""
    meta = input_loader.load_dataset_info(input_config.train_dir)
    vocab = meta.get("vocab_path") or (meta.get("vocab") or {}).get("path")
    return {"vocab_path": os.path.abspath(vocab) if vocab else None, "vocab_size": meta["vocab_size"],
            "num_train_steps": num_train_steps, "global_batch_size": global_batch_size, "seq_length": seq_length,
            "max_predictions_per_seq": max_predictions_per_seq, "train_dir": input_config.train_dir,
            "eval_dir": input_config.eval_dir, "model": config.to_dict(), "written": time.time()}


def _checkpoint_config(config: AlbertConfig) -> dict[str, Any]:
    return {"model": config.to_dict(), "gin": operative_config_text(), "time": time.time()}
