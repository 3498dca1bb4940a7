"""Runs a grid of pretraining variants (the paper's ablations) and tabulates them next to the paper.

A grid is either a gin file that is a complete experiment by itself and defines the macro
`SWEEP_VARIANTS = {'name': {'Binding.name': value, 'gin_files': [...]}, ...}` (each variant runs
`launch.py --gin_file=GRID [--gin_file=F ...] --gin.Binding.name=value`; optional macros `SWEEP_TITLE`,
`SWEEP_NOTE` and `SWEEP_PAPER = {'name': {'paper column': value}}`), or a directory of gin files, one variant
per file (optionally with a flat `SWEEP_PAPER`). Macros keep grid files valid gin for launch.py: no configurable
has to know about sweeps. docs/ABLATIONS.md has the details.

`albert-jax sweep GRID --out=OUT` runs the variants one after another into OUT/<variant>/ (a variant
already completed with the same command is skipped; a partial one resumes from its checkpoints), then writes
OUT/results.csv, OUT/results.md (a paper-shaped table), OUT/loss_curves.png and OUT/params_vs_mlm.png.
Seeds are a grid dimension (`SWEEP_SEEDS = [1, 2, 3]` or `--seeds=1,2,3`): each variant runs once per seed
(`train.seed`) into OUT/<variant>/seed_<s>/, and the tables give mean +- standard deviation with a t-based 95%
interval, the plots bands and error bars. `SWEEP_CROSS_EVAL = {'NSP': {'gin_files': ['objective/nsp.gin']}}`
evaluates every trained run again on other held-out data (`albert-jax eval --out_dir=RUN/cross_eval/NSP`), the
paper's Table 5 protocol: every model scored on every sentence task.
`--print_commands` prints one launch command per variant instead (for a cluster); `--collect_only` only
collects. Extra `--gin_file=F` and `--gin.NAME=VALUE` arguments go to every variant (e.g. the data location).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from typing import Callable, Sequence

from albert_jax.jobs import flags
from albert_jax.jobs.sinks import format_duration
from albert_jax.jobs.sweep_grid import (REPO, Grid, Run, cross_eval_args, describe_variant, load_grid,
                                        parse_seeds, print_commands, run_args, select, shell_quote)
from albert_jax.jobs.sweep_results import (DESCRIBE_FILE, DONE_FILE, collect, cross_eval_result, last_eval,
                                           read_json, write_json)

if __name__ == "__main__":  # one entry for every job: the CLI
    from albert_jax.jobs import cli

    sys.exit(cli.main(["sweep", *sys.argv[1:]]))

LAUNCH = os.path.join(REPO, "launch.py")
EPILOG = flags.examples(
    "albert-jax sweep ablations/table4_demo.gin --out=runs/ablations/table4_demo",
    "albert-jax sweep ablations/table5_demo.gin --out=runs/t5 --variants=sop,nsp",
    "albert-jax sweep ablations/table4_demo.gin --out=runs/t4 --seeds=1,2,3",
    "albert-jax sweep ablations/table4_paper.gin --out=gs://BUCKET/t4 --print_commands \\",
    "    --gin_file=corpus/wikipedia.gin --gin.TFDS_DATA_DIR=\"'gs://BUCKET/tfds'\"",
    "albert-jax sweep ablations/table4_paper.gin --out=runs/t4 --collect_only")


def run_grid(grid: Grid, out: str, extra_files: Sequence[str] = (), extra_bindings: Sequence[str] = (),
             python: str = sys.executable, write: Callable[[str], None] = print) -> list[str]:
    """Runs the grid's runs (variant x seed) one after another, skipping completed ones, each followed by its
    missing cross-evaluations; returns the labels of the runs that failed.

    Every variant's config is checked and described first, so a bad binding stops the sweep before hours of
    runs rather than in the middle. Each launch's output goes to RUN/launch.log. A run counts as complete when
    this exact launch command already exited 0 in its workdir (another command resumes it).
    """
    described = {variant.name: describe_variant(variant, extra_files, extra_bindings) for variant in grid.variants}
    plans = []
    for run in grid.runs(out):
        os.makedirs(run.workdir, exist_ok=True)
        write_json(os.path.join(run.workdir, DESCRIBE_FILE), described[run.variant.name])
        plans.append((run, run_args(run, extra_files, extra_bindings)))
    todo = [run.label for run, args in plans
            if (read_json(os.path.join(run.workdir, DONE_FILE)) or {}).get("args") != args]
    shape = (f"{len(plans)} runs ({len(grid.variants)} variants x {len(grid.seeds)} seeds)" if grid.seeds
             else f"{len(plans)} variants")
    write(f"sweep {grid.label}: {shape}, {len(todo)} to run, into {out}")
    started, durations, failed = time.time(), [], []
    for index, (run, args) in enumerate(plans, 1):
        tag = f"[{index}/{len(plans)}] {run.label}"
        if run.label not in todo:
            write(f"{tag}: already complete, skipped")
        else:
            write(f"{tag}: running (log: {os.path.join(run.workdir, 'launch.log')})")
            begun = time.time()
            code = _logged(run, [python, LAUNCH, *args])
            seconds = time.time() - begun
            durations.append(seconds)
            todo.remove(run.label)
            if code == 0:
                write_json(os.path.join(run.workdir, DONE_FILE), {"args": list(args), "seconds": seconds,
                                                                   "finished": time.time()})
                status = "done"
            else:
                failed.append(run.label)
                status = f"FAILED (exit {code}; see {os.path.join(run.workdir, 'launch.log')})"
            held_out = last_eval(run.workdir) or {}
            score = f" | MLM acc {held_out['masked_lm_accuracy']:.3f}" if "masked_lm_accuracy" in held_out else ""
            eta = sum(durations) / len(durations) * len(todo)
            write(f"{tag}: {status} in {format_duration(seconds)}{score} | grid elapsed "
                  f"{format_duration(time.time() - started)} | ETA {format_duration(eta)} for {len(todo)} more")
        if run.label not in failed and not run_cross_evals(grid, run, python, write, tag):
            failed.append(run.label)
    return failed


def _logged(run: Run, command: list[str]) -> int:
    """Runs a command of the run with its output appended to RUN/launch.log; its exit code."""
    with open(os.path.join(run.workdir, "launch.log"), "a") as log:
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode


def run_cross_evals(grid: Grid, run: Run, python: str, write: Callable[[str], None], tag: str) -> bool:
    """The run's cross-evaluations that are missing at its last evaluated step; False if one failed."""
    ok = True
    for cross_eval in grid.cross_evals:
        if cross_eval_result(run, cross_eval):
            continue
        code = _logged(run, [python, "-m", "albert_jax", "eval", *cross_eval_args(run, cross_eval)])
        result = cross_eval_result(run, cross_eval)
        if code != 0 or result is None:
            ok = False
            write(f"{tag}: cross-evaluation {cross_eval.name} FAILED (exit {code}; see "
                  f"{os.path.join(run.workdir, 'launch.log')})")
        else:
            write(f"{tag}: cross-evaluation {cross_eval.name} at step {result['step']}: MLM acc "
                  f"{result['masked_lm_accuracy']:.3f}, sentence acc {result['sentence_order_accuracy']:.3f}")
    return ok


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", help="gin grid file with SWEEP_VARIANTS, or a directory of gin files (one each); "
                                     "looked up as given, then under experiments/")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="sweep directory: OUT/<variant>/ run dirs and the results")
    flags.add_gin(parser, apply=False, help="extra gin file for every variant (repeatable); --gin.NAME=VALUE "
                                            "bindings also go to every variant")
    parser.add_argument("--variants", default="", help="comma-separated subset of variant names to run/collect")
    parser.add_argument("--seeds", default="", metavar="S,S,...",
                        help="run every variant once per seed (train.seed) into OUT/<variant>/seed_<s>/ and report "
                             "mean +- sd; replaces the grid's SWEEP_SEEDS")
    parser.add_argument("--print_commands", action="store_true", help="print one launch command per variant")
    parser.add_argument("--collect_only", action="store_true", help="only (re)write the results from OUT")
    parser.add_argument("--python", default=None, help="interpreter for launch.py (default: this one)")


def run(args: argparse.Namespace) -> int:
    """`albert-jax sweep`: a bad grid raises SweepError (a user error, exit 1); exit 1 also when a variant
    failed or is incomplete."""
    extra_bindings = [b.replace(" = ", "=", 1) for b in args.gin_bindings]
    sweep_args = [args.grid, f"--out={args.out}", *([f"--variants={args.variants}"] if args.variants else []),
                  *([f"--seeds={args.seeds}"] if args.seeds else []),
                  *(f"--gin_file={f}" for f in args.gin_file), *(f"--gin.{b}" for b in extra_bindings)]
    command = " ".join(shell_quote(a) for a in ["albert-jax", "sweep", *sweep_args])
    grid = select(load_grid(args.grid), args.variants)
    if args.seeds:
        grid = dataclasses.replace(grid, seeds=parse_seeds(args.seeds, "--seeds"))
    if args.print_commands:
        print_commands(grid, args.out, args.gin_file, extra_bindings, python=args.python or "python")
        print(f"# then collect the results: {command} --collect_only", file=sys.stderr)
        return 0
    failed = [] if args.collect_only else run_grid(grid, args.out, args.gin_file, extra_bindings,
                                                   python=args.python or sys.executable)
    rows = collect(grid, args.out, command, args.gin_file, extra_bindings)
    with open(os.path.join(args.out, "results.md")) as f:
        print(f.read())
    print(f"wrote {os.path.join(args.out, 'results.csv')}, results.md, loss_curves.png and params_vs_mlm.png")
    if failed:
        print(f"error: {len(failed)} run(s) failed: {', '.join(failed)}; rerun the same command to retry "
              f"them (completed runs and cross-evaluations are skipped).", file=sys.stderr)
        return 1
    return 0 if args.collect_only or all(r["status"] == "complete" for r in rows) else 1

