"""Gin plumbing for the command line: files and `--gin.NAME=VALUE` bindings applied in order, with errors
that name the bad binding and the closest known names instead of a bare gin traceback."""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
from typing import Iterable, Sequence

import gin

EXPERIMENTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")


class GinConfigError(ValueError):
    """A gin file or binding that cannot be applied; the message says what and how to fix it."""


def known_bindings() -> list[str]:
    """Every `Configurable.parameter` name gin knows about (for suggestions)."""
    names = []
    for _, configurable in gin.config._REGISTRY.items():  # gin exposes no public registry iterator
        selector = configurable.name
        signature = getattr(configurable, "wrapped", None)
        try:
            params = inspect.signature(signature).parameters if signature else {}
        except (TypeError, ValueError):
            params = {}
        names.append(selector)
        names.extend(f"{selector}.{p}" for p in params if p not in ("self", "args", "kwargs"))
    return sorted(set(names))


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, known_bindings(), n=3, cutoff=0.5)
    return f" Closest known names: {', '.join(close)}." if close else ""


def _explain(error: Exception, where: str) -> GinConfigError:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    missing = re.search(r"No configurable matching '([^']+)'", text)
    unknown_param = re.search(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", text)
    required = re.search(r"^(\w+)/macro\.value set to `%gin\.REQUIRED`", text)
    if required:  # an experiment file declares `NAME = %gin.REQUIRED`: the user must give NAME
        name = required.group(1)
        return GinConfigError(f"{where}: the gin files need {name} (declared %gin.REQUIRED); give it after the "
                              f"files, e.g. --gin.{name}=VALUE, or bind {name} in a gin file of your own.")
    hint = ""
    if missing:
        hint = _suggest(missing.group(1))
    elif unknown_param:
        hint = _suggest(f"{unknown_param.group(1)}.{unknown_param.group(2)}")
    return GinConfigError(f"{where}: {text.rstrip('.')}.{hint}")


def parse(gin_files: Sequence[str], bindings: Iterable[str], search_paths: Sequence[str] = ()) -> None:
    """Clears gin, then applies files and bindings in order (later wins) and finalizes.

    Files are looked up as given, then relative to `experiments/` (so `include` lines and command-line
    files can say `models/tiny.gin`). The configurables the files bind must be registered (imported) first;
    the command line does it through `albert_jax.jobs.configurables`.
    """
    gin.clear_config()
    # gin logs an ERROR for every search-path miss while resolving `include`; only its exceptions matter.
    logging.getLogger().setLevel(logging.CRITICAL)
    for path in [EXPERIMENTS_DIR, os.path.dirname(EXPERIMENTS_DIR), *search_paths]:
        gin.add_config_file_search_path(path)
    for path in gin_files:
        resolved = resolve_file(path)
        try:
            gin.parse_config_file(resolved)
        except Exception as error:  # gin raises many types (ValueError, KeyError, SyntaxError...)
            raise _explain(error, f"in gin file {path}") from error
    for binding in bindings:
        try:
            gin.parse_config(binding)
        except Exception as error:
            raise _explain(error, f"in binding --gin.{binding}") from error
    try:
        gin.finalize()
    except Exception as error:
        raise _explain(error, "finalizing the gin config") from error
    finally:
        logging.getLogger().setLevel(logging.WARNING)


def resolve_file(path: str) -> str:
    """A gin file as given if it exists, else relative to experiments/; a clear error when neither exists."""
    resolved = path if os.path.exists(path) else os.path.join(EXPERIMENTS_DIR, path)
    if not os.path.exists(resolved):
        raise GinConfigError(f"gin file {path!r} not found (looked in the working directory and "
                             f"{EXPERIMENTS_DIR}).")
    return resolved


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separates `--gin.NAME=VALUE` arguments (returned as `NAME=VALUE`) from the others."""
    bindings, rest = [], []
    for arg in argv:
        if arg.startswith("--gin."):
            body = arg[len("--gin."):]
            if "=" not in body:
                raise GinConfigError(f"{arg!r} has no value: write --gin.NAME=VALUE.")
            name, value = body.split("=", 1)
            bindings.append(f"{name} = {value}")
        else:
            rest.append(arg)
    return bindings, rest
