"""The demo corpus: the Python 3.11 documentation (Debian package python3.11-doc) as English prose, tokenized.

Steps, each skipped when its output is already in the cache dir (delete a file or dir to redo that step):
  1. <cache>/python3.11-doc_*.deb      fetched with `apt-get download python3.11-doc` (package registry only)
  2. <cache>/text/python-docs.txt      prose of the reST sources (input/rst_text.py), one sentence per line, one
                                       document per source file; <cache>/text/COPYRIGHT is the package's license
  3. <cache>/vocab<N>.model            SentencePiece vocabulary of N pieces (`albert-jax data vocab` recipe)
  4. <cache>/corpus<N>/                train/eval ArrayRecord files and corpus.json (`albert-jax data prepare`)
The text is the Python documentation, (c) Python Software Foundation, under the PSF documentation license
(see data/README.md); it stays in the cache and is never committed.

  albert-jax data demo [--cache_dir cache/demo] [--vocab_size 8000]
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tarfile
import time

from albert_jax.input.corpus import CorpusStats, TextFiles, load_corpus_info, prepare_corpus, split_sentences
from albert_jax.input.rst_text import rst_paragraphs
from albert_jax.input.tokenizer import train_vocab

PACKAGE = "python3.11-doc"
SOURCES_DIR = "/usr/share/doc/python3.11/html/_sources/"
COPYRIGHT = f"/usr/share/doc/{PACKAGE}/copyright"


def fetch_deb(cache_dir: str, package: str = PACKAGE) -> str:
    """Path of the package's .deb in `cache_dir`, downloading it with apt-get when absent."""
    found = sorted(glob.glob(os.path.join(cache_dir, f"{package}_*.deb")))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"apt-get is not available: download the Debian package {package} (.deb) by hand into "
                           f"{cache_dir} and run this again")
    command = ["apt-get", "download", "-o", "APT::Sandbox::User=root", package]
    result = subprocess.run(command, cwd=cache_dir, capture_output=True, text=True)
    if result.returncode != 0 and os.geteuid() == 0:
        subprocess.run(["apt-get", "update"], capture_output=True, text=True)
        result = subprocess.run(command, cwd=cache_dir, capture_output=True, text=True)
    found = sorted(glob.glob(os.path.join(cache_dir, f"{package}_*.deb")))
    if result.returncode != 0 or not found:
        raise RuntimeError(f"`{' '.join(command)}` failed in {cache_dir}: {result.stderr.strip()}\nRun `apt-get update`"
                           f" as root (or put the {package} .deb into {cache_dir}) and run this again")
    return found[-1]


def deb_members(deb_path: str) -> dict[str, bytes]:
    """The reST sources and the copyright file of the .deb, read from its data archive without extracting it."""
    members: dict[str, bytes] = {}
    process = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb_path], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
        for member in archive:
            name = member.name.lstrip(".")
            if member.isfile() and (name == COPYRIGHT or (name.startswith(SOURCES_DIR) and name.endswith(".txt"))):
                members[name] = archive.extractfile(member).read()
    if process.wait() != 0 or not members:
        raise RuntimeError(f"could not read reST sources from {deb_path}; delete it and run this again")
    return members


def write_text(deb_path: str, text_dir: str) -> dict:
    """Writes the prose of every source file as one document (one sentence per line) into text_dir."""
    os.makedirs(text_dir, exist_ok=True)
    members = deb_members(deb_path)
    documents = sentences = 0
    temporary = os.path.join(text_dir, "python-docs.txt.tmp")
    with open(temporary, "w", encoding="utf-8") as out:
        for name in sorted(members):
            if name == COPYRIGHT:
                continue
            text = members[name].decode("utf-8", errors="replace")
            lines = [s for paragraph in rst_paragraphs(text) for s in split_sentences(paragraph)]
            if lines:
                out.write("\n".join(lines) + "\n\n")
                documents += 1
                sentences += len(lines)
    with open(os.path.join(text_dir, "COPYRIGHT"), "wb") as handle:
        handle.write(members[COPYRIGHT])
    os.replace(temporary, os.path.join(text_dir, "python-docs.txt"))
    return {"documents": documents, "sentences": sentences}


def ensure_vocab_and_corpus(text_path: str, cache_dir: str, vocab_size: int, eval_fraction: float, workers: int,
                            timings: dict) -> dict:
    """Steps 3 and 4 for any one-file text (this corpus, the Wikipedia introductions): `<cache>/vocab<N>.model`
    trained on the text and `<cache>/corpus<N>/` prepared with it, each skipped when present; their seconds go
    into `timings`. Returns the paths ("vocab", "corpus") and the corpus's info."""
    vocab_prefix = os.path.join(cache_dir, f"vocab{vocab_size}")
    corpus_dir = os.path.join(cache_dir, f"corpus{vocab_size}")
    if not os.path.isfile(vocab_prefix + ".model"):
        vocab_start = time.perf_counter()
        source = TextFiles((text_path,))
        sentences = (s for doc in source.documents(CorpusStats()) for s in doc.sentences())
        summary = train_vocab(sentences, vocab_prefix, vocab_size)
        print(f"vocab: {vocab_prefix}.model, {vocab_size} pieces from {summary['sentences']} sentences")
        timings["vocab_s"] = time.perf_counter() - vocab_start
    if not os.path.isfile(os.path.join(corpus_dir, "corpus.json")):
        prepare_start = time.perf_counter()
        prepare_corpus(TextFiles((text_path,)), vocab_prefix + ".model", corpus_dir, eval_fraction=eval_fraction,
                       workers=workers, overwrite=True, progress=False)
        timings["prepare_s"] = time.perf_counter() - prepare_start
    return {"vocab": vocab_prefix + ".model", "corpus": corpus_dir, "info": load_corpus_info(corpus_dir)}


def ensure_demo_corpus(cache_dir: str = "cache/demo", vocab_size: int = 8000, eval_fraction: float = 0.05,
                       workers: int = 1) -> dict:
    """Builds whatever of the demo corpus is missing; returns its paths ("text", "vocab", "corpus")."""
    os.makedirs(cache_dir, exist_ok=True)
    text_path = os.path.join(cache_dir, "text", "python-docs.txt")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if not os.path.isfile(text_path):
        deb = fetch_deb(cache_dir)
        counts = write_text(deb, os.path.dirname(text_path))
        print(f"text: {counts['documents']} documents, {counts['sentences']} sentences from {os.path.basename(deb)}")
        timings["text_s"] = time.perf_counter() - start
    built = ensure_vocab_and_corpus(text_path, cache_dir, vocab_size, eval_fraction, workers, timings)
    return {"text": text_path, **built, "timings": timings, "seconds": time.perf_counter() - start}
