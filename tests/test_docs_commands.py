"""Every command the README and docs/ write still works as written.

Each documented command line (fenced and indented code blocks, and inline `code` spans that start with one of the
project's entry points) is parsed by the real argument parsers of the command it names: the `albert-jax`
subcommand with its flags, `launch.py` through its alias translation, `python bench/X.py` by that script's
parser. Gin files the command names must exist (placeholders such as `A.gin` aside). Then each distinct entry
point (every `albert-jax` subcommand, `launch.py`, every bench script) runs once as its own process with
`--help`, through the console script and `python SCRIPT`, the way a user starts it.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from albert_jax import gin_setup
from albert_jax.jobs import cli

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted([REPO / "README.md", REPO / "data" / "README.md", *(REPO / "docs").rglob("*.md")])
PLACEHOLDER_FILE = re.compile(r"^[A-Z][A-Z0-9_]*\.gin$")  # A.gin, GRID.gin: stand for the user's own file
PLACEHOLDER_DIR = re.compile(r"^[A-Z][A-Z0-9_]*/")  # RUN/config.gin: a file inside the user's own run directory
PREFIXES = ("albert-jax ", ".venv/bin/albert-jax ", "python launch.py", ".venv/bin/python launch.py",
            "python bench/", ".venv/bin/python bench/", "python -m albert_jax ")


def _code_texts(text: str) -> list[str]:
    """Fenced blocks, 4-space indented blocks and inline spans of a Markdown text, continuation lines joined.
    An inline span counts only with a flag in it: `albert-jax sweep` alone names the command in prose."""
    pieces = []
    fenced = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)  # list items indent theirs
    for block in fenced.findall(text):
        pieces += re.sub(r"\\[ \t]*\n", " ", block).splitlines()
    outside = fenced.sub("", text)
    indented = [line[4:] for line in outside.splitlines() if line.startswith("    ") and not line.lstrip()[:1] in "-*|"]
    pieces += indented
    pieces += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", outside) if " -" in span]
    return pieces


def _command(piece: str) -> str | None:
    """The documented command in one code text, without a shell prefix (`/usr/bin/time -v`, `cd X &&`)."""
    piece = piece.strip().removeprefix("$ ")
    for separator in ("&&", "|", ">"):
        piece = piece.split(f" {separator} ")[-1] if separator == "&&" else piece.split(f" {separator} ")[0]
    piece = re.sub(r"^(/usr/bin/time -v |env \S+ )+", "", piece)
    if piece.count('"') % 2 and piece.endswith('"'):
        piece = piece[:-1]  # the end of an outer quoted command (`gcloud ... --command="..."`)
    return piece if piece.startswith(PREFIXES) else None


def documented_commands() -> list[tuple[str, str]]:
    """(doc file, command line) for every command line written in the README and docs/."""
    found = []
    for doc in DOCS:
        for piece in _code_texts(doc.read_text()):
            command = _command(piece)
            if command and (str(doc.relative_to(REPO)), command) not in found:
                found.append((str(doc.relative_to(REPO)), command))
    return found


def _words(command: str) -> list[str]:
    """The command's arguments: shell words, comments and `...` (stands for more of the same) dropped; a shell
    variable ($NODE_RANK) stands for 0, as on the first node."""
    return [re.sub(r"\$\{?[A-Z_]+\}?", "0", word) for word in shlex.split(command, comments=True) if word != "..."]


def _gin_files(argv: list[str]) -> list[str]:
    files = []
    for index, word in enumerate(argv):
        if word.startswith("--gin_file="):
            files.append(word.split("=", 1)[1])
        elif word == "--gin_file" and index + 1 < len(argv):
            files.append(argv[index + 1])
    return files


def _run_outputs(argv: list[str]) -> list[str]:
    """The run directories the command names (`--workdir`): the files it reads from them (`RUN/config.gin`) are
    written by the run that made them, so they exist only after that run, not in the repository."""
    return [word.split("=", 1)[1].rstrip("/") + "/" for word in argv if word.startswith("--workdir=")]


def _albert_jax_argv(words: list[str]) -> list[str]:
    """The `albert-jax` argv a documented command amounts to (launch.py translated by its alias)."""
    if words[0].endswith("albert-jax"):
        return words[1:]
    if words[:3] == ["python", "-m", "albert_jax"]:
        return words[3:]
    script = words.index("launch.py") if "launch.py" in words else words.index(next(w for w in words if w.endswith("launch.py")))
    return cli.launch_argv(words[script + 1:])[1]


def parse_albert_jax(argv: list[str]) -> argparse.Namespace:
    """What `albert-jax` does with `argv` before running anything: split off gin bindings, build the parser of
    the named subcommand, parse. Raises SystemExit on a usage error, as the command would exit."""
    _, rest = gin_setup.split_argv(argv)
    return cli.build_parser(rest).parse_args(rest)


# Runs a script as `python SCRIPT ARGS` would, except that it exits 0 right after its argparse parse succeeds
# (a usage error still exits 2 with the script's own message): a dry parse through the real script.
PARSE_ONLY = """
import argparse, runpy, sys
parse = argparse.ArgumentParser.parse_args
def parse_then_stop(self, *args, **kwargs):
    parse(self, *args, **kwargs)
    sys.exit(0)
argparse.ArgumentParser.parse_args = parse_then_stop
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _env() -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}


def console_script() -> str:
    """The installed `albert-jax` (next to this Python, as pip puts it), else `python -m albert_jax`."""
    script = Path(sys.executable).parent / "albert-jax"
    assert script.exists(), f"{script} is missing: install the package (pip install -e .) as the Makefile does"
    return str(script)


COMMANDS = documented_commands()


def test_the_docs_document_commands():
    """The extraction itself sees what the README shows (so an empty list cannot pass the tests below)."""
    commands = [command for _, command in COMMANDS]
    assert "albert-jax eval --workdir=RUN --step=800" in [c.split("  #")[0].strip() for c in commands]
    assert any(c.startswith("python launch.py --mode=eval") for c in commands)
    assert any(c.startswith("python bench/") for c in commands)
    assert len(COMMANDS) >= 40, len(COMMANDS)


def _is_bench(command: str) -> bool:
    return " bench/" in f" {command}"


@pytest.mark.parametrize("doc,command", [c for c in COMMANDS if not _is_bench(c[1])], ids=lambda value: value[:70])
def test_documented_command_parses(doc: str, command: str):
    words = _words(command)
    if len(words) > 1 and re.fullmatch(r"[A-Z_]+", words[1]):
        pytest.skip(f"{command!r} names a placeholder subcommand")  # e.g. `albert-jax SUBCOMMAND --help`
    argv = _albert_jax_argv(words)
    if "-h" in argv or "--help" in argv:
        return  # run for real, per subcommand, in test_entry_points_start below
    try:
        parse_albert_jax(argv)
    except SystemExit as exit_:
        pytest.fail(f"{doc}: `{command}` does not parse (argparse exit {exit_.code}); see the usage above")
    for name in _gin_files(argv):
        if PLACEHOLDER_FILE.match(os.path.basename(name)) or PLACEHOLDER_DIR.match(name) or name.startswith("<"):
            continue
        if name.startswith(tuple(_run_outputs(argv))):
            continue  # the run's own recorded config (runs/demo/config.gin), written by training
        try:
            gin_setup.resolve_file(name)
        except gin_setup.GinConfigError as error:
            pytest.fail(f"{doc}: `{command}` names gin file {name!r}, which does not exist: {error}")


@pytest.mark.parametrize("doc,command", [c for c in COMMANDS if _is_bench(c[1])], ids=lambda value: value[:70])
def test_documented_bench_command_parses(doc: str, command: str):
    words = _words(command)
    script = next(word for word in words if word.startswith("bench/"))
    argv = words[words.index(script) + 1:]
    done = subprocess.run([sys.executable, "-c", PARSE_ONLY, str(REPO / script), *argv], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{doc}: `{command}` does not parse:\n{done.stderr[-2000:]}"


def _subcommands() -> list[list[str]]:
    """Every `albert-jax` subcommand path the docs use (e.g. ['data', 'prepare']), each once."""
    paths = []
    for _, command in COMMANDS:
        if _is_bench(command):
            continue
        argv = [w for w in _albert_jax_argv(_words(command)) if not w.startswith("-")]
        path = []
        table = cli.COMMANDS
        for word in argv:
            if word not in table:
                break
            path.append(word)
            module = __import__(table[word][0], fromlist=["_"])
            table = getattr(module, "COMMANDS", {})
        if path and path not in paths:
            paths.append(path)
    return paths


def test_entry_points_start():
    """Each documented entry point starts as its own process and prints its help: the console script with every
    subcommand the docs use, `python launch.py`, `python -m albert_jax`, and each bench script."""
    failures = []
    subcommands = _subcommands()
    assert ["train"] in subcommands and ["data", "prepare"] in subcommands, subcommands
    runs = [[console_script(), *path, "--help"] for path in subcommands]
    runs += [[console_script(), "--help"], [sys.executable, "launch.py", "--help"],
             [sys.executable, "-m", "albert_jax", "--help"]]
    runs += [[sys.executable, script, "--help"] for script in
             sorted({next(w for w in _words(c) if w.startswith("bench/")) for _, c in COMMANDS if _is_bench(c)})]
    def start(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(2) as pool:  # two processes at a time: the start-up is mostly imports
        for argv, done in zip(runs, pool.map(start, runs)):
            if done.returncode != 0 or "usage:" not in done.stdout:
                failures.append(f"{' '.join(argv[-3:])}: exit {done.returncode}\n{done.stderr[-1000:]}")
    assert not failures, "\n\n".join(failures)
