"""Plain prose from reStructuredText (the Python documentation sources), for the demo corpus.

Kept: paragraphs, list items and the bodies of prose directives (note, versionchanged, function descriptions, ...)
with inline markup reduced to its text. Dropped: titles and their underlines, comments and link targets, code
(literal blocks after "::", doctest ">>>" blocks, code/doctest/productionlist/... directives), tables, directive
lines and their options. A heuristic for this one source, not a general reST parser.
"""

from __future__ import annotations

import re
from typing import Iterator

_CODE_DIRECTIVES = frozenset(
    "code-block sourcecode code highlight literalinclude productionlist toctree index testcode testsetup "
    "testoutput testcleanup doctest csv-table list-table table tabularcolumns raw image figure include "
    "audit-event availability moduleauthor sectionauthor program currentmodule contents parsed-literal "
    "grammar-snippet role default-role".split())
_SIGNATURE_DIRECTIVES = frozenset(
    "function method class decorator decoratormethod attribute data exception classmethod staticmethod "
    "coroutinemethod coroutinefunction abstractmethod describe opcode cmdoption option envvar pdbcommand object "
    "module".split())
_DIRECTIVE = re.compile(r"\.\.\s+([\w:-]+)::(.*)$")
_ADORNMENT = re.compile(r"([=\-~^*#\"+`'.:_])\1{2,}\s*$")
_TABLE_RULE = re.compile(r"[=+|-][=+\-| ]*[=+|-]$")
_BULLET = re.compile(r"^([*+\u2022-]|#\.|\d+\.|\(\d+\))\s+")
_FIELD = re.compile(r"^:[^:\s][^:]*:(\s+|$)")
_INLINE = [
    (re.compile(r":[\w:+-]+:`([^`<]*?)\s*<[^`]*>`"), r"\1"),
    (re.compile(r":[\w:+-]+:`[~!]?(?:[\w.]*\.)?([^`]*)`"), r"\1"),
    (re.compile(r"``(.+?)``"), r"\1"),
    (re.compile(r"`([^`<]*?)\s*<[^`]*>`__?"), r"\1"),
    (re.compile(r"`([^`]+)`_{0,2}"), r"\1"),
    (re.compile(r"\*\*(.+?)\*\*"), r"\1"),
    (re.compile(r"(?<![\w*])\*(?=\S)([^*]+?)(?<=\S)\*(?![\w*])"), r"\1"),
    (re.compile(r"\|([\w-]+)\|_?"), r"\1"),
    (re.compile(r"\s*\[(?:#\w*|\d+|\*)\]_"), ""),
    (re.compile(r"\\(.)"), r"\1"),
]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _inline_text(text: str) -> str:
    for pattern, replacement in _INLINE:
        text = pattern.sub(replacement, text)
    return " ".join(text.split())


def rst_paragraphs(source: str) -> Iterator[str]:
    """Yields the prose paragraphs of a reST document, inline markup removed, one string each."""
    lines = source.expandtabs(8).splitlines()
    index, skip_deeper_than = 0, -1
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            index += 1
            continue
        indent = _indent(line)
        if skip_deeper_than >= 0 and indent > skip_deeper_than:
            index += 1
            continue
        skip_deeper_than = -1
        stripped = line.strip()
        directive = _DIRECTIVE.match(stripped)
        if directive or stripped.startswith(".."):
            index += 1
            if not directive or directive.group(1) in _CODE_DIRECTIVES:
                skip_deeper_than = indent
            signature = directive is not None and (directive.group(1) in _SIGNATURE_DIRECTIVES
                                                   or directive.group(1).startswith("c:"))
            while index < len(lines) and _indent(lines[index]) > indent and lines[index].strip() \
                    and (signature or lines[index].strip().startswith(":")):
                index += 1
            continue
        bullet = _BULLET.match(stripped)
        continuation = indent + (bullet.end() if bullet else 0)
        block = [stripped]
        index += 1
        while index < len(lines) and lines[index].strip() and _indent(lines[index]) == continuation \
                and not _BULLET.match(lines[index].strip()):
            block.append(lines[index].strip())
            index += 1
        if index < len(lines) and _ADORNMENT.match(lines[index].strip() or "x"):
            index += 1
            continue
        if any(_ADORNMENT.match(b) or _TABLE_RULE.match(b) for b in block) or block[0].startswith(">>>"):
            skip_deeper_than = indent
            continue
        text = " ".join(block)
        if text.endswith("::"):
            skip_deeper_than = indent
            text = text[:-2].rstrip() + (":" if not text[:-2].endswith(" ") else "")
        text = _FIELD.sub("", _BULLET.sub("", text, count=1), count=1)
        text = _inline_text(text)
        if re.search(r"[A-Za-z]{2}", text):
            yield text
