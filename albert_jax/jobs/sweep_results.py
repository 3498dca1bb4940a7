"""Sweep results: one row per run (variant x seed) from its run directory, written as OUT/results.csv, a
paper-shaped OUT/results.md (with seeds: mean +- sd per variant, 95% intervals and every seed's values) and two
figures (loss curves, with seeds as mean +- sd bands; parameters against MLM accuracy, with error bars)."""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import sys
from typing import Any, Sequence

from albert_jax.jobs.sweep_grid import CrossEval, Grid, Run, SweepError, Variant, cross_eval_dir, describe_variant
from albert_jax.jobs.sweep_stats import Summary, aggregate, mean_curve

DONE_FILE = "sweep_done.json"  # written into a variant's workdir when its launch exited 0
DESCRIBE_FILE = "sweep_describe.json"  # the variant's parameter counts and run shape
HELD_OUT_KEYS = ("masked_lm_accuracy", "masked_lm_loss", "sentence_order_accuracy", "sentence_order_loss")
CROSS_KEYS = ("masked_lm_accuracy", "sentence_order_accuracy", "masked_lm_loss", "sentence_order_loss")
RESULT_FIELDS = ("variant", "seed", "status", "params", "params_with_heads", "num_train_steps", "steps_done",
                 "eval_step", *HELD_OUT_KEYS, "final_train_loss", "tokens_per_s", "seconds")


def read_json(path: str) -> dict[str, Any] | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_json(path: str, value: dict[str, Any]) -> None:
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


def last_eval(workdir: str, subdir: str = "eval") -> dict[str, Any] | None:
    """The held-out evaluation at the highest step (WORKDIR/SUBDIR/step_N.json), or None."""
    found = {int(m.group(1)): path for path in glob.glob(os.path.join(workdir, subdir, "step_*.json"))
             for m in [re.search(r"step_(\d+)\.json$", path)] if m}
    return read_json(found[max(found)]) if found else None


def variant_info(variant: Variant, workdir: str, extra_files: Sequence[str] = (),
                 extra_bindings: Sequence[str] = ()) -> dict[str, Any]:
    """The variant's describe record: cached in WORKDIR, else from the run's saved config.gin (what actually ran,
    e.g. a cluster job's), else from the grid; {} (with a warning) when none of them parses."""
    cached = read_json(os.path.join(workdir, DESCRIBE_FILE))
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
        write_json(os.path.join(workdir, DESCRIBE_FILE), info)
    return info


def cross_eval_result(run: Run, cross_eval: CrossEval) -> dict[str, Any] | None:
    """The run's cross-evaluation at the step of its own last evaluation (its final model), or None: missing, or
    an evaluation of an earlier checkpoint (not this run's model, to be redone)."""
    final = (last_eval(run.workdir) or {}).get("step")
    result = last_eval(cross_eval_dir(run, cross_eval), subdir="")
    return result if final is not None and result and result.get("step") == final else None


def cross_fields(grid: Grid) -> list[str]:
    """The results columns of the grid's cross-evaluations: NAME KEY for each, and the data each one read."""
    return [f"{c.name} {key}" for c in grid.cross_evals for key in (*CROSS_KEYS, "eval_step", "eval_dir")]


def collect_run(grid: Grid, run: Run, info: dict[str, Any]) -> dict[str, Any]:
    """One results row from a run's directory and describe record (blank where the run has not got that far).
    Complete: the sweep's launch exited 0, or (a cluster job's) the log reached the final step."""
    variant, workdir = run.variant, run.workdir
    done = read_json(os.path.join(workdir, DONE_FILE))
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
    row["seed"] = run.seed
    for cross_eval in grid.cross_evals:
        result = cross_eval_result(run, cross_eval) or {}
        row.update({f"{cross_eval.name} {key}": result.get(key) for key in (*CROSS_KEYS, "eval_dir")})
        row[f"{cross_eval.name} eval_step"] = result.get("step")
    row.update({f"paper {key}": value for key, value in variant.paper})
    return row


def _fmt(value: Any, kind: str) -> str:
    """A table cell: parameters in millions, accuracies in %, losses to 3 decimals, '-' when missing; a Summary
    (seeds) as mean +- sd, or as its 95% interval for kind 'ci'."""
    if value is None or value == "":
        return "-"
    if isinstance(value, Summary):
        scale = 100 if kind in ("pct", "ci") else 1
        if kind == "ci":
            return "-" if value.low is None else f"[{scale * value.low:.1f}, {scale * value.high:.1f}]"
        if kind in ("int", "params"):
            return _fmt(value.mean, kind)
        digits = 3 if kind == "loss" else 1
        return f"{scale * value.mean:.{digits}f} ± {scale * value.sd:.{digits}f}"
    formats = {"params": lambda v: f"{v / 1e6:.2f}M" if v < 1e8 else f"{v / 1e6:.0f}M",
               "pct": lambda v: f"{100 * v:.1f}", "loss": lambda v: f"{v:.3f}", "int": lambda v: f"{v:,.0f}"}
    return formats.get(kind, str)(value)


def _columns(grid: Grid) -> list[tuple[str, str, str]]:
    """(results key, header, kind) of the table's metric columns, cross-evaluations after the run's own."""
    return [("params", "parameters", "params"), ("masked_lm_accuracy", "MLM acc", "pct"),
            ("sentence_order_accuracy", "sentence acc", "pct"), ("masked_lm_loss", "MLM loss", "loss"),
            ("sentence_order_loss", "sentence loss", "loss"), ("tokens_per_s", "tokens/s", "int"),
            ("eval_step", "steps", "int"),
            *((f"{c.name} {key}", header.format(c.name), "pct") for c in grid.cross_evals
              for key, header in (("masked_lm_accuracy", "MLM acc on {} data"), ("sentence_order_accuracy",
                                                                                 "{} acc")))]


def _table(headers: list[str], kinds: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if k == "str" else "---:" for k in kinds) + "|",
            *("| " + " | ".join(cells) + " |" for cells in body)]


def markdown_table(grid: Grid, rows: list[dict[str, Any]], command: str = "") -> str:
    """The results as a Markdown table shaped like the paper's, the paper's numbers in the last columns; with
    seeds, one row per variant (mean +- sd over its seeds), then the 95% intervals and every seed's values."""
    columns, paper = _columns(grid), [(f"paper {c}", f"paper: {c}", "str") for c in grid.paper_columns]
    lines = [f"# {grid.label}", ""]
    if not grid.seeds:
        body = []
        for row in rows:
            cells = [row["variant"] + ("" if row.get("status") == "complete" else f" ({row.get('status')})")]
            body.append(cells + [_fmt(row.get(key), kind) for key, _, kind in (*columns, *paper)])
        lines += _table(["variant", *(h for _, h, _ in (*columns, *paper))],
                        ["str", *(k for _, _, k in (*columns, *paper))], body)
    else:
        summaries = aggregate(rows, [key for key, _, _ in columns])
        papers = {row["variant"]: row for row in rows}
        body = [[name + ("" if s["status"] == "complete" else f" ({s['status']})"), str(len(s["seeds"])),
                 *(_fmt(s[key], kind) for key, _, kind in columns),
                 *(_fmt(papers[name].get(key), kind) for key, _, kind in paper)] for name, s in summaries.items()]
        lines += _table(["variant", "seeds", *(h for _, h, _ in (*columns, *paper))],
                        ["str", "int", *(k for _, _, k in (*columns, *paper))], body)
        accuracy = [(key, header) for key, header, kind in columns if kind == "pct"]
        lines += ["", "95% intervals of the mean (Student's t over the seeds), accuracies in %:", ""]
        lines += _table(["variant", *(h for _, h in accuracy)], ["str"] + ["str"] * len(accuracy),
                        [[name, *(_fmt(s[key], "ci") for key, _ in accuracy)] for name, s in summaries.items()])
        lines += ["", "Every seed (no run left out), accuracies in %:", ""]
        lines += _table(["variant", "seed", "status", *(h for _, h in accuracy), "steps"],
                        ["str", "int", "str", *(["str"] * len(accuracy)), "int"],
                        [[r["variant"], str(r["seed"]), r["status"], *(_fmt(r.get(k), "pct") for k, _ in accuracy),
                          _fmt(r.get("eval_step"), "int")] for r in rows])
    lines += ["", "Parameters: encoder + pooler (the paper's count; heads excluded). Accuracies in %, losses in nats, "
              "on the held-out split at the last evaluated step (the steps column). Sentence acc/loss: the variant's "
              "own sentence task. tokens/s: mean of the training reports, leaving out the first (compilation) and "
              "those whose interval held an evaluation."
              + (" With seeds: mean ± sample standard deviation over the seeds (train.seed: initialization, data "
                 "order, masks; the instances are the same)." if grid.seeds else "")
              + (" Cross-evaluations: every model's last checkpoint on the held-out data of "
                 + ", ".join(f"{c.name} ({' '.join(c.gin_files + c.bindings)})" for c in grid.cross_evals)
                 + ", the same data for every model." if grid.cross_evals else "")]
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


def _curves(runs: list[Run]) -> tuple[list[list[tuple[int, float]]], list[list[tuple[int, float]]]]:
    """Training loss and held-out MLM loss curves, (step, value) pairs, of each run."""
    train, held_out = [], []
    for run in runs:
        train.append([(r["step"], r["loss"]) for r in by_step(read_jsonl(os.path.join(run.workdir, "metrics.jsonl")))
                      if "loss" in r])
        held_out.append([(r["step"], r["masked_lm_loss"]) for r in by_step(read_jsonl(
            os.path.join(run.workdir, "eval", "eval.jsonl"))) if "masked_lm_loss" in r])
    return [c for c in train if c], [c for c in held_out if c]


def plot_loss_curves(grid: Grid, out: str, path: str) -> str:
    """Training loss (left) and held-out MLM loss (right) of every variant over steps, on one figure; with
    seeds, the mean over the seeds with a band of +- one standard deviation."""
    plt = _pyplot()
    fig, (train_ax, eval_ax) = plt.subplots(1, 2, figsize=(13, 4.5))
    runs = grid.runs(out)
    for index, variant in enumerate(grid.variants):
        style = {"color": plt.get_cmap("tab10")(index % 10), "linestyle": ("-", "--", "-.", ":")[index % 4],
                 "label": variant.name}
        train, held_out = _curves([r for r in runs if r.variant.name == variant.name])
        for ax, curves, marker in ((train_ax, train, None), (eval_ax, held_out, "o")):
            steps, means, sds = mean_curve(curves)
            if not steps:
                continue
            ax.plot(steps, means, marker=marker, linewidth=1.2, **style)
            if len(curves) > 1:
                ax.fill_between(steps, [m - s for m, s in zip(means, sds)], [m + s for m, s in zip(means, sds)],
                                color=style["color"], alpha=0.2, linewidth=0)
    band = f" (mean of {len(grid.seeds)} seeds, band ± 1 sd)" if grid.seeds else ""
    for ax, name in ((train_ax, "training loss (MLM + sentence)"), (eval_ax, "held-out MLM loss")):
        ax.set_title(name + band, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(grid.label)
    return _save(fig, path)


def plot_params_vs_mlm(grid: Grid, rows: list[dict[str, Any]], path: str) -> str:
    """Parameters against held-out MLM accuracy, one labelled point per evaluated variant (with seeds: the mean,
    error bars of +- one standard deviation)."""
    from matplotlib.ticker import FuncFormatter

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {v.name: plt.get_cmap("tab10")(index % 10) for index, v in enumerate(grid.variants)}  # as in the curves
    summaries = aggregate(rows, ["params", "masked_lm_accuracy"])
    points = sorted(((name, s["params"].mean, s["masked_lm_accuracy"]) for name, s in summaries.items()
                     if s["params"] and s["masked_lm_accuracy"]), key=lambda p: p[1])
    for index, (name, params, mlm) in enumerate(points):  # labels alternate above / below: equal scores overprint
        ax.errorbar(params, 100 * mlm.mean, yerr=100 * mlm.sd if mlm.n > 1 else None, fmt="o", markersize=5,
                    capsize=3, color=colors.get(name))
        ax.annotate(name, (params, 100 * mlm.mean), fontsize=8, xytext=(4, 4 if index % 2 == 0 else -11),
                    textcoords="offset points")
    if points and points[-1][1] > 10 * points[0][1]:
        ax.set_xscale("log")  # parameter counts spanning more than a decade
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value / 1e6:g}M"))
    ax.set_xlabel("parameters (encoder + pooler)")
    ax.set_ylabel("held-out MLM accuracy (%)" + (f", mean ± sd of {len(grid.seeds)} seeds" if grid.seeds else ""))
    ax.set_title(grid.label, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def collect(grid: Grid, out: str, command: str = "", extra_files: Sequence[str] = (),
            extra_bindings: Sequence[str] = ()) -> list[dict[str, Any]]:
    """OUT/results.csv (one row per run), OUT/results.md, OUT/loss_curves.png and OUT/params_vs_mlm.png from the
    run directories."""
    os.makedirs(out, exist_ok=True)
    rows = [collect_run(grid, run, variant_info(run.variant, run.workdir, extra_files, extra_bindings))
            for run in grid.runs(out)]
    columns = [*RESULT_FIELDS, *cross_fields(grid), *(f"paper {c}" for c in grid.paper_columns)]
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{k: "" if row.get(k) is None else row[k] for k in columns} for row in rows])
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown_table(grid, rows, command))
    plot_loss_curves(grid, out, os.path.join(out, "loss_curves.png"))
    plot_params_vs_mlm(grid, rows, os.path.join(out, "params_vs_mlm.png"))
    return rows
