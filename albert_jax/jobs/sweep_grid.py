"""Sweep grids: reading a grid (a gin file with SWEEP_VARIANTS, or a directory of gin files, one variant each)
into variants, its seeds (SWEEP_SEEDS: one run per variant and seed) and cross-evaluations (SWEEP_CROSS_EVAL),
the train and eval commands of each run, and a variant's parameter counts from its gin config."""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shlex
from typing import Any, Callable, Sequence

from gin import config_parser

from albert_jax.gin_setup import EXPERIMENTS_DIR, GinConfigError

REPO = os.path.dirname(EXPERIMENTS_DIR)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SweepError(GinConfigError):
    """A grid that cannot be read or run (a configuration error: exit code 2); the message names the fix."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One run of a grid: its gin files, its `NAME=VALUE` bindings and the paper's numbers for it."""

    name: str
    gin_files: tuple[str, ...]
    bindings: tuple[str, ...] = ()
    paper: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class CrossEval:
    """An evaluation of every trained model on other held-out data: the run's own config, then these gin files
    and bindings (e.g. objective/nsp.gin: NSP pairs instead of the run's SOP pairs)."""

    name: str
    gin_files: tuple[str, ...]
    bindings: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a sweep: a variant, its seed (None for a grid without seeds) and its directory."""

    variant: Variant
    seed: int | None
    workdir: str

    @property
    def label(self) -> str:
        return self.variant.name if self.seed is None else f"{self.variant.name}/seed_{self.seed}"

    @property
    def bindings(self) -> tuple[str, ...]:
        """The seed's binding, applied after every other (the seed is the grid's dimension, not the user's)."""
        return () if self.seed is None else (f"train.seed={self.seed}",)


@dataclasses.dataclass(frozen=True)
class Grid:
    """The variants of a grid file or directory, with the title and note its table is printed with, the seeds
    each variant runs with and the cross-evaluations every run gets."""

    source: str
    variants: tuple[Variant, ...]
    title: str = ""
    note: str = ""
    seeds: tuple[int, ...] = ()
    cross_evals: tuple[CrossEval, ...] = ()

    def runs(self, out: str) -> list[Run]:
        """Every run of the grid in order: OUT/<variant>/ without seeds, OUT/<variant>/seed_<s>/ with them."""
        if not self.seeds:
            return [Run(v, None, os.path.join(out, v.name)) for v in self.variants]
        return [Run(v, seed, os.path.join(out, v.name, f"seed_{seed}")) for v in self.variants for seed in self.seeds]

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


def _files_and_bindings(grid_file: str, macro: str, name: str, spec: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The gin files and `NAME=VALUE` bindings of a spec {'gin_files': [...] (optional), 'Binding.name': value}."""
    if not isinstance(spec, dict):
        raise SweepError(f"{grid_file}: {macro}[{name!r}] must be a dict of binding -> value (e.g. "
                         f"{{'AlbertConfig.sharing': 'none'}} or {{'gin_files': ['objective/nsp.gin']}}), got {spec!r}.")
    files = spec.get("gin_files", ())
    files = (files,) if isinstance(files, str) else tuple(files)
    return files, tuple(f"{key}={value!r}" for key, value in spec.items() if key != "gin_files")


def variant_from_spec(grid_file: str, name: str, spec: Any, paper: Any) -> Variant:
    """A SWEEP_VARIANTS entry: {'gin_files': [...] (optional), 'Binding.name' or 'MACRO': value, ...}."""
    files, bindings = _files_and_bindings(grid_file, "SWEEP_VARIANTS", name, spec)
    return Variant(name, (launch_path(grid_file), *files), bindings, _paper(name, paper, grid_file))


def parse_seeds(value: Any, where: str) -> tuple[int, ...]:
    """SWEEP_SEEDS / --seeds: distinct integers (a list, or a comma-separated string from the command line)."""
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    try:
        seeds = tuple(int(v) for v in items)
        if any(isinstance(v, (float, bool)) for v in items) or any(s < 0 for s in seeds):
            raise ValueError
    except (TypeError, ValueError):
        raise SweepError(f"{where}: seeds must be non-negative integers, e.g. [1, 2, 3] (or --seeds=1,2,3); got "
                         f"{value!r}.") from None
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"{where}: seeds {list(seeds)} repeat a seed; each seed is one run per variant.")
    return seeds


def _cross_evals(grid_file: str, specs: Any) -> tuple[CrossEval, ...]:
    """SWEEP_CROSS_EVAL = {'NSP': {'gin_files': ['objective/nsp.gin']}, ...}: evaluations of every run."""
    if specs is None:
        return ()
    if not isinstance(specs, dict) or not specs:
        raise SweepError(f"{grid_file}: SWEEP_CROSS_EVAL must be a dict of name -> {{'gin_files': [...], "
                         f"'Binding.name': value}}, got {specs!r}.")
    return tuple(CrossEval(_check_name(name, grid_file), *_files_and_bindings(grid_file, "SWEEP_CROSS_EVAL", name,
                                                                               spec)) for name, spec in specs.items())


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
    return Grid(resolved, variants, str(macros.get("SWEEP_TITLE", "")), str(macros.get("SWEEP_NOTE", "")),
                parse_seeds(macros.get("SWEEP_SEEDS", ()), f"{resolved}: SWEEP_SEEDS"),
                _cross_evals(resolved, macros.get("SWEEP_CROSS_EVAL")))


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


def run_args(run: Run, extra_files: Sequence[str] = (), extra_bindings: Sequence[str] = ()) -> list[str]:
    """launch.py's arguments for one run of the grid: the variant's, with the run's seed binding last."""
    return launch_args(run.variant, run.workdir, extra_files, (*extra_bindings, *run.bindings))


def cross_eval_dir(run: Run, cross_eval: CrossEval) -> str:
    """Where a run's cross-evaluation goes: RUN/cross_eval/<name>/ (apart from the run's own eval/)."""
    return os.path.join(run.workdir, "cross_eval", cross_eval.name)


def cross_eval_args(run: Run, cross_eval: CrossEval) -> list[str]:
    """`albert-jax eval`'s arguments for a cross-evaluation: the run's latest checkpoint (no fallback: a damaged
    one is an error, not a silently older model), the run's own config, then the cross-evaluation's files."""
    return ([f"--workdir={run.workdir}", "--no_fallback", f"--gin_file={os.path.join(run.workdir, 'config.gin')}"]
            + [f"--gin_file={f}" for f in cross_eval.gin_files] + [f"--gin.{b}" for b in cross_eval.bindings]
            + [f"--out_dir={cross_eval_dir(run, cross_eval)}"])


def shell_quote(arg: str) -> str:
    """shlex.quote, but gin string values read as --gin.X="'v'" rather than shlex's '"'"' escapes."""
    return f'"{arg}"' if "'" in arg and not any(c in arg for c in '"$`\\!') else shlex.quote(arg)


def print_commands(grid: Grid, out: str, extra_files: Sequence[str] = (), extra_bindings: Sequence[str] = (),
                   python: str = "python", write: Callable[[str], None] = print) -> list[str]:
    """One shell command per run (run from the repository root; each may go to its own cluster job), followed by
    the run's cross-evaluations joined with `&&` (they need its final checkpoint)."""
    lines = []
    for run in grid.runs(out):
        commands = [[python, "launch.py", *run_args(run, extra_files, extra_bindings)]]
        commands += [[python, "-m", "albert_jax", "eval", *cross_eval_args(run, c)] for c in grid.cross_evals]
        lines.append(" && ".join(" ".join(shell_quote(a) for a in command) for command in commands))
    for line in lines:
        write(line)
    return lines


def describe_variant(variant: Variant, extra_files: Sequence[str] = (), extra_bindings: Sequence[str] = ()
                     ) -> dict[str, Any]:
    """Parameter counts and run shape of a variant from its gin config, nothing allocated; also the check that
    the config is valid before anything runs."""
    import gin

    from albert_jax import describe, gin_setup
    from albert_jax.jobs import configurables

    configurables.register_all()
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
        missing = (re.search(r"No bindings specified for '(\w+)/gin.macro'", message)
                   or re.search(r"the gin files need (\w+) \(declared %gin.REQUIRED\)", message))
        hint = (f" Give it to every variant on the sweep's command line: --gin.{missing.group(1)}=VALUE."
                if missing else "")
        raise SweepError(f"variant {variant.name!r}: {message}{hint}") from error
    finally:
        gin.clear_config()
    return info
