"""Runs a grid of pretraining variants (the paper's ablations) and tabulates them next to the paper.

A grid is either a gin file that is a complete experiment by itself and defines the macro
`SWEEP_VARIANTS = {'name': {'Binding.name': value, 'gin_files': [...]}, ...}` (each variant runs
`launch.py --gin_file=GRID [--gin_file=F ...] --gin.Binding.name=value`; optional macros `SWEEP_TITLE`,
`SWEEP_NOTE` and `SWEEP_PAPER = {'name': {'paper column': value}}`), or a directory of gin files, one variant
per file (optionally with a flat `SWEEP_PAPER`). Macros keep grid files valid gin for launch.py: no configurable
has to know about sweeps. docs/ABLATIONS.md has the details.

`python -m albert_jax.jobs.sweep GRID --out=OUT` runs the variants one after another into OUT/<variant>/ (a variant
already completed with the same command is skipped; a partial one resumes from its checkpoints), then writes
OUT/results.csv, OUT/results.md (a paper-shaped table), OUT/loss_curves.png and OUT/params_vs_mlm.png.
`--print_commands` prints one launch command per variant instead (for a cluster); `--collect_only` only
collects. Extra `--gin_file=F` and `--gin.NAME=VALUE` arguments go to every variant (e.g. the data location).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

from gin import config_parser

from albert_jax.gin_setup import EXPERIMENTS_DIR

REPO = os.path.dirname(EXPERIMENTS_DIR)
LAUNCH = os.path.join(REPO, "launch.py")
DONE_FILE = "sweep_done.json"  # written into a variant's workdir when its launch exited 0
DESCRIBE_FILE = "sweep_describe.json"  # the variant's parameter counts and run shape
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
HELD_OUT_KEYS = ("masked_lm_accuracy", "masked_lm_loss", "sentence_order_accuracy", "sentence_order_loss")
RESULT_FIELDS = ("variant", "status", "params", "params_with_heads", "num_train_steps", "steps_done", "eval_step",
                 *HELD_OUT_KEYS, "final_train_loss", "tokens_per_s", "seconds")


class SweepError(ValueError):
    """A grid that cannot be read or run; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One run of a grid: its gin files, its `NAME=VALUE` bindings and the paper's numbers for it."""

    name: str
    gin_files: tuple[str, ...]
    bindings: tuple[str, ...] = ()
    paper: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Grid:
    """The variants of a grid file or directory, with the title and note its table is printed with."""

    source: str
    variants: tuple[Variant, ...]
    title: str = ""
    note: str = ""

    @property
    def paper_columns(self) -> list[str]:
        """Reference columns in first-seen order over the variants."""
        return list(dict.fromkeys(key for variant in self.variants for key, _ in variant.paper))

    @property
    def label(self) -> str:
        return self.title or os.path.basename(self.source.rstrip(os.sep))


class _Unresolved(str):
    """A @reference or %MACRO met while reading a file's macros (fine elsewhere, refused in SWEEP_* values)."""

    def __repr__(self) -> str:
        return f"<unresolved {str(self)}>"


class _KeepReferences(config_parser.ParserDelegate):
    """Gin parser delegate that leaves references unresolved: reading macros needs no configurables."""

    def configurable_reference(self, scoped_name: str, evaluate: bool) -> Any:
        return _Unresolved(f"@{scoped_name}{'()' if evaluate else ''}")

    def macro(self, name: str) -> Any:
        return _Unresolved(f"%{name}")


def resolve_gin_path(path: str) -> str:
    """`path` as given if it exists, else relative to experiments/ (as launch.py looks files up)."""
    for candidate in (path, os.path.join(EXPERIMENTS_DIR, path)):
        if os.path.exists(candidate):
            return os.path.abspath(candidate)
    raise SweepError(f"grid {path!r} not found (looked in the working directory and {EXPERIMENTS_DIR}); pass a gin "
                     f"grid file such as ablations/table4_demo.gin or a directory of gin files.")


def launch_path(path: str) -> str:
    """How commands name a gin file: relative to experiments/ when inside it (portable to a cluster checkout)."""
    absolute = os.path.abspath(path)
    return os.path.relpath(absolute, EXPERIMENTS_DIR) if absolute.startswith(EXPERIMENTS_DIR + os.sep) else absolute


def read_macros(path: str) -> dict[str, Any]:
    """The SWEEP_* macros bound in the gin file itself (includes are not followed); values must be literals."""
    with open(path) as f:
        text = f.read()
    try:
        macros = {s.selector: s.value for s in config_parser.ConfigParser(text, _KeepReferences())
                  if isinstance(s, config_parser.BindingStatement) and s.selector.startswith("SWEEP_")
                  and not s.scope and not s.arg_name}
    except (SyntaxError, ValueError) as error:
        raise SweepError(f"{path} is not valid gin: {error}") from error
    for name, value in macros.items():
        unresolved = re.findall(r"<unresolved ([^>]*)>", repr(value))
        if unresolved:
            raise SweepError(f"{path}: {name} must hold plain values (strings, numbers, lists, dicts); found "
                             f"{', '.join(unresolved)}. Put references in the included gin files instead.")
    return macros


def _paper(name: str, values: Any, where: str) -> tuple[tuple[str, str], ...]:
    if values is not None and not isinstance(values, dict):
        raise SweepError(f"{where}: SWEEP_PAPER for {name!r} must be a dict of column -> value, got {values!r}.")
    return tuple((str(key), str(value)) for key, value in (values or {}).items())


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SweepError(f"{where}: variant name {name!r} is not usable as a directory name; use letters, digits, "
                         f"'_', '.' and '-'.")
    return name


def variant_from_spec(grid_file: str, name: str, spec: Any, paper: Any) -> Variant:
    """A SWEEP_VARIANTS entry: {'gin_files': [...] (optional), 'Binding.name' or 'MACRO': value, ...}."""
    if not isinstance(spec, dict):
        raise SweepError(f"{grid_file}: SWEEP_VARIANTS[{name!r}] must be a dict of binding -> value (e.g. "
                         f"{{'AlbertConfig.sharing': 'none'}}), got {spec!r}.")
    files = spec.get("gin_files", ())
    files = (files,) if isinstance(files, str) else tuple(files)
    bindings = tuple(f"{key}={value!r}" for key, value in spec.items() if key != "gin_files")
    return Variant(name, (launch_path(grid_file), *files), bindings, _paper(name, paper, grid_file))


def load_grid(path: str) -> Grid:
    """Reads a grid file (SWEEP_VARIANTS) or a directory of variant gin files (see the module docstring)."""
    resolved = resolve_gin_path(path)
    if os.path.isdir(resolved):
        files = sorted(glob.glob(os.path.join(resolved, "*.gin")))
        if not files:
            raise SweepError(f"{resolved} holds no .gin files: put one gin file per variant there.")
        names = [_check_name(os.path.splitext(os.path.basename(file))[0], resolved) for file in files]
        return Grid(resolved, tuple(Variant(name, (launch_path(file),), (), _paper(
            name, read_macros(file).get("SWEEP_PAPER"), file)) for name, file in zip(names, files)))
    macros = read_macros(resolved)
    specs = macros.get("SWEEP_VARIANTS")
    if not isinstance(specs, dict) or not specs:
        raise SweepError(f"{resolved} defines no SWEEP_VARIANTS macro: add SWEEP_VARIANTS = {{'name': "
                         f"{{'Binding.name': value}}, ...}} to it, or pass a directory of gin files (one per variant).")
    paper = macros.get("SWEEP_PAPER") or {}
    if sorted(set(paper) - set(specs)):
        raise SweepError(f"{resolved}: SWEEP_PAPER names variants that SWEEP_VARIANTS lacks: "
                         f"{sorted(set(paper) - set(specs))}.")
    variants = tuple(variant_from_spec(resolved, _check_name(name, resolved), spec, paper.get(name))
                     for name, spec in specs.items())
    return Grid(resolved, variants, str(macros.get("SWEEP_TITLE", "")), str(macros.get("SWEEP_NOTE", "")))


def select(grid: Grid, names: str) -> Grid:
    """The grid restricted to the comma-separated `names` (all when empty)."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    missing = [n for n in wanted if n not in [v.name for v in grid.variants]]
    if missing:
        raise SweepError(f"--variants names {missing} not in the grid; its variants are "
                         f"{[v.name for v in grid.variants]}.")
    return dataclasses.replace(grid, variants=tuple(v for v in grid.variants if not wanted or v.name in wanted))


def launch_args(variant: Variant, workdir: str, extra_files: Sequence[str] = (),
                extra_bindings: Sequence[str] = ()) -> list[str]:
    """launch.py's arguments for a variant: its files, the sweep's extra files, its bindings, the extra bindings
    (last, so they win), and the workdir."""
    return ([f"--gin_file={f}" for f in (*variant.gin_files, *extra_files)]
            + [f"--gin.{b}" for b in (*variant.bindings, *extra_bindings)] + [f"--workdir={workdir}"])


def shell_quote(arg: str) -> str:
    """shlex.quote, but gin string values read as --gin.X="'v'" rather than shlex's '"'"' escapes."""
    return f'"{arg}"' if "'" in arg and not any(c in arg for c in '"$`\\!') else shlex.quote(arg)


def print_commands(grid: Grid, out: str, extra_files: Sequence[str] = (), extra_bindings: Sequence[str] = (),
                   python: str = "python", write: Callable[[str], None] = print) -> list[str]:
    """One shell command per variant (run from the repository root; each may go to its own cluster job)."""
    lines = [" ".join(shell_quote(a) for a in [python, "launch.py", *launch_args(
        v, os.path.join(out, v.name), extra_files, extra_bindings)]) for v in grid.variants]
    for line in lines:
        write(line)
    return lines


def describe_variant(variant: Variant, extra_files: Sequence[str] = (), extra_bindings: Sequence[str] = ()
                     ) -> dict[str, Any]:
    """Parameter counts and run shape of a variant from its gin config, nothing allocated; also the check that
    the config is valid before anything runs."""
    import gin

    from albert_jax import describe, gin_setup

    try:
        gin_setup.parse([*variant.gin_files, *extra_files],
                        [b.replace("=", " = ", 1) for b in (*variant.bindings, *extra_bindings)])
        info = {key: describe.describe()[key] for key in ("params", "params_with_heads", "config")}
        for key, name in (("num_train_steps", "train.num_train_steps"), ("global_batch_size",
                          "train.global_batch_size"), ("max_seq_length", "InstanceConfig.max_seq_length")):
            value = gin.query_parameter(name)
            while isinstance(value, gin.config.ConfigurableReference) and value.evaluate:  # %MACRO -> its value
                value = value.scoped_configurable_fn()
            info[key] = value
    except ValueError as error:
        message = str(error).split("\n  In call to configurable")[0].split(" in config string:")[0]
        missing = re.search(r"No bindings specified for '(\w+)/gin.macro'", message)
        hint = (f" Give it to every variant on the sweep's command line: --gin.{missing.group(1)}=VALUE."
                if missing else "")
        raise SweepError(f"variant {variant.name!r}: {message}{hint}") from error
    finally:
        gin.clear_config()
    return info


def _read_json(path: str) -> dict[str, Any] | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_json(path: str, value: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=2)


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Records of a JSONL file (empty when absent); a half-written line (a killed run) is skipped."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def by_step(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per step (the latest, as a resumed run logs some steps again), in step order."""
    return sorted({r["step"]: r for r in records if "step" in r}.values(), key=lambda r: r["step"])


def mean_tokens_per_s(reports: list[dict[str, Any]], eval_steps: Sequence[int]) -> float | None:
    """Mean tokens/s of the training reports that timed training alone: not the first of a run or of a restart
    (it includes compilation) and not one whose interval also held a held-out evaluation."""
    speeds, previous = [], None
    for report in reports:
        step = report.get("step")
        if previous is not None and step is not None and step > previous and "tokens_per_s" in report \
                and not any(previous <= e < step for e in eval_steps):
            speeds.append(report["tokens_per_s"])
        previous = step
    return sum(speeds) / len(speeds) if speeds else None


def last_eval(workdir: str) -> dict[str, Any] | None:
    """The held-out evaluation at the highest step (WORKDIR/eval/step_N.json), or None."""
    found = {int(m.group(1)): path for path in glob.glob(os.path.join(workdir, "eval", "step_*.json"))
             for m in [re.search(r"step_(\d+)\.json$", path)] if m}
    return _read_json(found[max(found)]) if found else None


def variant_info(variant: Variant, workdir: str, extra_files: Sequence[str] = (),
                 extra_bindings: Sequence[str] = ()) -> dict[str, Any]:
    """The variant's describe record: cached in WORKDIR, else from the run's saved config.gin (what actually ran,
    e.g. a cluster job's), else from the grid; {} (with a warning) when none of them parses."""
    cached = _read_json(os.path.join(workdir, DESCRIBE_FILE))
    if cached:
        return cached
    saved = os.path.join(workdir, "config.gin")
    try:
        info = (describe_variant(Variant(variant.name, (saved,))) if os.path.exists(saved)
                else describe_variant(variant, extra_files, extra_bindings))
    except SweepError as error:
        print(f"warning: no parameter count for {variant.name}: {error}", file=sys.stderr)
        return {}
    if os.path.isdir(workdir):
        _write_json(os.path.join(workdir, DESCRIBE_FILE), info)
    return info


def collect_variant(variant: Variant, workdir: str, info: dict[str, Any]) -> dict[str, Any]:
    """One results row from a variant's run directory and describe record (blank where the run has not got
    that far). Complete: the sweep's launch exited 0, or (a cluster job's) the log reached the final step."""
    done = _read_json(os.path.join(workdir, DONE_FILE))
    reports = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    train = by_step(reports)
    evals = [r["step"] for r in by_step(read_jsonl(os.path.join(workdir, "eval", "eval.jsonl")))]
    held_out = last_eval(workdir) or {}
    row: dict[str, Any] = {
        "variant": variant.name, "params": info.get("params"), "params_with_heads": info.get("params_with_heads"),
        "num_train_steps": info.get("num_train_steps"), "steps_done": train[-1]["step"] if train else None,
        "final_train_loss": train[-1].get("loss") if train else None, "seconds": (done or {}).get("seconds"),
        "tokens_per_s": mean_tokens_per_s(reports, evals), "eval_step": held_out.get("step"),
        **{key: held_out.get(key) for key in HELD_OUT_KEYS}}
    finished = bool(train) and bool(row["num_train_steps"]) and row["steps_done"] >= row["num_train_steps"]
    row["status"] = "complete" if done or finished else ("partial" if train else "not run")
    row.update({f"paper {key}": value for key, value in variant.paper})
    return row


def _fmt(value: Any, kind: str) -> str:
    """A table cell: parameters in millions, accuracies in %, losses to 3 decimals, '-' when missing."""
    if value is None or value == "":
        return "-"
    formats = {"params": lambda v: f"{v / 1e6:.2f}M" if v < 1e8 else f"{v / 1e6:.0f}M",
               "pct": lambda v: f"{100 * v:.1f}", "loss": lambda v: f"{v:.3f}", "int": lambda v: f"{v:,.0f}"}
    return formats.get(kind, str)(value)


def markdown_table(grid: Grid, rows: list[dict[str, Any]], command: str = "") -> str:
    """The results as a Markdown table shaped like the paper's, the paper's numbers in the last columns."""
    columns = [("variant", "variant", "str"), ("params", "parameters", "params"),
               ("masked_lm_accuracy", "MLM acc", "pct"), ("sentence_order_accuracy", "sentence acc", "pct"),
               ("masked_lm_loss", "MLM loss", "loss"), ("sentence_order_loss", "sentence loss", "loss"),
               ("tokens_per_s", "tokens/s", "int"), ("eval_step", "steps", "int"),
               *((f"paper {c}", f"paper: {c}", "str") for c in grid.paper_columns)]
    lines = [f"# {grid.label}", "", "| " + " | ".join(header for _, header, _ in columns) + " |",
             "|" + "|".join("---" if kind == "str" else "---:" for _, _, kind in columns) + "|"]
    for row in rows:
        cells = [_fmt(row.get(key), kind) for key, _, kind in columns]
        cells[0] += "" if row.get("status") == "complete" else f" ({row.get('status')})"
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Parameters: encoder + pooler (the paper's count; heads excluded). Accuracies in %, losses in nats, "
              "on the held-out split at the last evaluated step (the steps column). Sentence acc/loss: the variant's "
              "own sentence task. tokens/s: mean of the training reports, leaving out the first (compilation) and "
              "those whose interval held an evaluation."]
    lines += ["", grid.note] if grid.note else []
    lines += ["", f"Reproduce: `{command}`"] if command else []
    return "\n".join(lines) + "\n"


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (sweeps run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_loss_curves(grid: Grid, out: str, path: str) -> str:
    """Training loss (left) and held-out MLM loss (right) of every variant over steps, on one figure."""
    plt = _pyplot()
    fig, (train_ax, eval_ax) = plt.subplots(1, 2, figsize=(13, 4.5))
    for index, variant in enumerate(grid.variants):
        workdir = os.path.join(out, variant.name)
        style = {"color": plt.get_cmap("tab10")(index % 10), "linestyle": ("-", "--", "-.", ":")[index % 4],
                 "label": variant.name}
        train = [r for r in by_step(read_jsonl(os.path.join(workdir, "metrics.jsonl"))) if "loss" in r]
        held_out = [r for r in by_step(read_jsonl(os.path.join(workdir, "eval", "eval.jsonl")))
                    if "masked_lm_loss" in r]
        if train:
            train_ax.plot([r["step"] for r in train], [r["loss"] for r in train], linewidth=1.2, **style)
        if held_out:
            eval_ax.plot([r["step"] for r in held_out], [r["masked_lm_loss"] for r in held_out], marker="o", **style)
    for ax, name in ((train_ax, "training loss (MLM + sentence)"), (eval_ax, "held-out MLM loss")):
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(grid.label)
    return _save(fig, path)


def plot_params_vs_mlm(grid: Grid, rows: list[dict[str, Any]], path: str) -> str:
    """Parameters against held-out MLM accuracy, one labelled point per evaluated variant."""
    from matplotlib.ticker import FuncFormatter

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {v.name: plt.get_cmap("tab10")(index % 10) for index, v in enumerate(grid.variants)}  # as in the curves
    points = sorted((r for r in rows if r.get("params") and r.get("masked_lm_accuracy") is not None),
                    key=lambda r: r["params"])
    for index, row in enumerate(points):  # neighbours' labels alternate above / below: equal scores would overprint
        ax.scatter(row["params"], 100 * row["masked_lm_accuracy"], s=30, color=colors.get(row["variant"]))
        ax.annotate(row["variant"], (row["params"], 100 * row["masked_lm_accuracy"]), fontsize=8,
                    xytext=(4, 4 if index % 2 == 0 else -11), textcoords="offset points")
    if points and points[-1]["params"] > 10 * points[0]["params"]:
        ax.set_xscale("log")  # parameter counts spanning more than a decade
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value / 1e6:g}M"))
    ax.set_xlabel("parameters (encoder + pooler)")
    ax.set_ylabel("held-out MLM accuracy (%)")
    ax.set_title(grid.label, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def collect(grid: Grid, out: str, command: str = "", extra_files: Sequence[str] = (),
            extra_bindings: Sequence[str] = ()) -> list[dict[str, Any]]:
    """OUT/results.csv, OUT/results.md, OUT/loss_curves.png and OUT/params_vs_mlm.png from the run directories."""
    os.makedirs(out, exist_ok=True)
    rows = [collect_variant(v, os.path.join(out, v.name),
                            variant_info(v, os.path.join(out, v.name), extra_files, extra_bindings))
            for v in grid.variants]
    columns = [*RESULT_FIELDS, *(f"paper {c}" for c in grid.paper_columns)]
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{k: "" if row.get(k) is None else row[k] for k in columns} for row in rows])
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown_table(grid, rows, command))
    plot_loss_curves(grid, out, os.path.join(out, "loss_curves.png"))
    plot_params_vs_mlm(grid, rows, os.path.join(out, "params_vs_mlm.png"))
    return rows


def run_grid(grid: Grid, out: str, extra_files: Sequence[str] = (), extra_bindings: Sequence[str] = (),
             python: str = sys.executable, write: Callable[[str], None] = print) -> list[str]:
    """Runs the variants one after another (skipping completed ones); returns the names that failed.

    Every variant's config is checked and described first, so a bad binding stops the sweep before hours of
    runs rather than in the middle. Each launch's output goes to OUT/<variant>/launch.log. A variant counts as
    complete when this exact launch command already exited 0 in its workdir (another command resumes it).
    """
    from albert_jax.jobs.sinks import format_duration

    plans = []
    for variant in grid.variants:
        workdir = os.path.join(out, variant.name)
        os.makedirs(workdir, exist_ok=True)
        _write_json(os.path.join(workdir, DESCRIBE_FILE), describe_variant(variant, extra_files, extra_bindings))
        plans.append((variant, workdir, launch_args(variant, workdir, extra_files, extra_bindings)))
    todo = [variant.name for variant, workdir, args in plans
            if (_read_json(os.path.join(workdir, DONE_FILE)) or {}).get("args") != args]
    write(f"sweep {grid.label}: {len(plans)} variants, {len(todo)} to run, into {out}")
    started, durations, failed = time.time(), [], []
    for index, (variant, workdir, args) in enumerate(plans, 1):
        if variant.name not in todo:
            write(f"[{index}/{len(plans)}] {variant.name}: already complete, skipped")
            continue
        write(f"[{index}/{len(plans)}] {variant.name}: running (log: {os.path.join(workdir, 'launch.log')})")
        begun = time.time()
        with open(os.path.join(workdir, "launch.log"), "a") as log:
            code = subprocess.run([python, LAUNCH, *args], stdout=log, stderr=subprocess.STDOUT).returncode
        seconds = time.time() - begun
        durations.append(seconds)
        todo.remove(variant.name)
        if code == 0:
            _write_json(os.path.join(workdir, DONE_FILE), {"args": list(args), "seconds": seconds,
                                                           "finished": time.time()})
            status = "done"
        else:
            failed.append(variant.name)
            status = f"FAILED (exit {code}; see {os.path.join(workdir, 'launch.log')})"
        held_out = last_eval(workdir) or {}
        score = f" | MLM acc {held_out['masked_lm_accuracy']:.3f}" if "masked_lm_accuracy" in held_out else ""
        eta = sum(durations) / len(durations) * len(todo)
        write(f"[{index}/{len(plans)}] {variant.name}: {status} in {format_duration(seconds)}{score} | grid elapsed "
              f"{format_duration(time.time() - started)} | ETA {format_duration(eta)} for {len(todo)} more")
    return failed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m albert_jax.jobs.sweep", description="Run a grid of launch.py "
                                     "variants and tabulate them. --gin.NAME=VALUE (repeatable) goes to every variant.")
    parser.add_argument("grid", help="gin grid file with SWEEP_VARIANTS, or a directory of gin files (one each)")
    parser.add_argument("--out", required=True, help="sweep directory: OUT/<variant>/ run dirs and the results")
    parser.add_argument("--gin_file", action="append", default=[], help="extra gin file for every variant")
    parser.add_argument("--variants", default="", help="comma-separated subset of variant names to run/collect")
    parser.add_argument("--print_commands", action="store_true", help="print one launch command per variant")
    parser.add_argument("--collect_only", action="store_true", help="only (re)write the results from OUT")
    parser.add_argument("--python", default=None, help="interpreter for launch.py (default: this one)")
    return parser


def main(argv: Sequence[str]) -> int:
    extra_bindings = [a[len("--gin."):] for a in argv if a.startswith("--gin.")]
    args = build_parser().parse_args([a for a in argv if not a.startswith("--gin.")])
    sweep_args = [args.grid, f"--out={args.out}", *([f"--variants={args.variants}"] if args.variants else []),
                  *(f"--gin_file={f}" for f in args.gin_file), *(f"--gin.{b}" for b in extra_bindings)]
    command = " ".join(shell_quote(a) for a in ["python", "-m", "albert_jax.jobs.sweep", *sweep_args])
    try:
        if any("=" not in b for b in extra_bindings):
            raise SweepError("a --gin. argument has no value: write --gin.NAME=VALUE.")
        grid = select(load_grid(args.grid), args.variants)
        if args.print_commands:
            print_commands(grid, args.out, args.gin_file, extra_bindings, python=args.python or "python")
            print(f"# then collect the results: {command} --collect_only", file=sys.stderr)
            return 0
        failed = [] if args.collect_only else run_grid(grid, args.out, args.gin_file, extra_bindings,
                                                       python=args.python or sys.executable)
        rows = collect(grid, args.out, command, args.gin_file, extra_bindings)
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with open(os.path.join(args.out, "results.md")) as f:
        print(f.read())
    print(f"wrote {os.path.join(args.out, 'results.csv')}, results.md, loss_curves.png and params_vs_mlm.png")
    if failed:
        print(f"error: {len(failed)} variant(s) failed: {', '.join(failed)}; rerun the same command to retry "
              f"them (completed variants are skipped).", file=sys.stderr)
        return 1
    return 0 if args.collect_only or all(r["status"] == "complete" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
