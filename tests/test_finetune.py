"""Fine-tuning: a tiny model learns a task this test writes itself, metrics equal scikit-learn / scipy, readers.

The learning test starts from a pretraining workdir (a real orbax checkpoint of a random tiny model, written
with the project's checkpoint manager), fine-tunes through the command line on a TSV task whose label says
whether the sentence contains the word "apple" (balanced: chance is 50%), and then recomputes the final
evaluation independently: the saved model applied to features built here, scored with scikit-learn.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from albert_jax import checkpoint, optim, partitioning
from albert_jax.jobs import cli, finetune
from albert_jax.downstream import tasks
from albert_jax import train_step as steps
from albert_jax.config import AlbertConfig
from albert_jax.convert import folder
from albert_jax.input.tokenizer import CLS_ID, SEP_ID, Tokenizer, train_vocab
from albert_jax.model import init_params

WORDS = ("the capital of france is paris a city in europe river big small red blue green house tree dog cat "
         "runs fast slow good bad orange and").split()
SEQ = 32  # = max_position_embeddings of the tiny model


def sentence(rng: random.Random, apple: bool, longest: int = 6) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(2, longest))]
    if apple:
        words.insert(rng.randint(0, len(words)), "apple")
    return " ".join(words)


pytestmark = pytest.mark.usefixtures("clean_gin")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Vocabulary, train/dev TSVs and a pretraining workdir (step 3) of a random tiny model."""
    root = tmp_path_factory.mktemp("finetune")
    rng = random.Random(0)
    vocab = train_vocab([sentence(rng, i % 3 == 0) for i in range(1000)], str(root / "vocab"), 60,
                        num_threads=1)["model"]
    for name, count in (("train", 512), ("dev", 200)):
        rows = [(sentence(rng, i % 2 == 1), i % 2) for i in range(count)]
        (root / f"{name}.tsv").write_text("id\tsentence\tlabel\n" + "".join(f"{i}\t{s}\t{y}\n"
                                                                         for i, (s, y) in enumerate(rows)))
        pairs = [(sentence(rng, i % 2 == 1, 4), sentence(rng, i % 3 == 1, 4), i % 2 + int(i % 3 == 1))
                 for i in range(count)]
        (root / f"{name}_pairs.csv").write_text("".join(f"{a},{b},{y}.0\n" for a, b, y in pairs))
    config = AlbertConfig(vocab_size=60, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
    mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
    boxed = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    tx = optim.make_optimizer(boxed, optimizer="adamw", learning_rate=1e-3)
    state = steps.create_state(config, tx, mesh, rules, 0)
    manager = checkpoint.make_manager(str(root / "pretrain"), async_save=False)
    checkpoint.save(manager, 3, state, None, {"model": config.to_dict(), "time": 0.0, "gin": ""}, force=True)
    manager.wait_until_finished()
    manager.close()
    checkpoint.write_run_info(root / "pretrain", {"vocab_path": vocab})  # what a training run records
    params = jax.device_get(state.params)
    folder.write(root / "converted", config, params, files=[Path(vocab)])
    return {"root": root, "vocab": vocab, "config": config, "params": params}


def features(tokenizer: Tokenizer, texts_a: list[str],
             texts_b: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[CLS] a [SEP] (b [SEP]) ids and segment ids, built here (pairs short enough not to need truncation)."""
    ids = np.zeros((len(texts_a), SEQ), np.int32)
    segments = np.zeros_like(ids)
    for row, text in enumerate(texts_a):
        first = [CLS_ID, *tokenizer.encode(text), SEP_ID]
        second = [*tokenizer.encode(texts_b[row]), SEP_ID] if texts_b else []
        assert len(first) + len(second) <= SEQ
        ids[row, : len(first) + len(second)] = first + second
        segments[row, len(first): len(first) + len(second)] = 1
    return ids, segments


def apply_saved(out: Path, ids: np.ndarray, segments: np.ndarray, num_labels: int) -> np.ndarray:
    model = finetune.load_pretrained(out / "model")
    logits = finetune.AlbertClassifier(model.config, num_labels).apply(
        {"params": model.params}, jnp.asarray(ids), jnp.asarray(ids != 0, jnp.int32), jnp.asarray(segments))
    return np.asarray(logits)


def test_workdir_restores_params_config_and_vocab(data: dict[str, Any]) -> None:
    workdir = data["root"] / "pretrain"
    for path, step in ((workdir, None), (workdir / "checkpoints", 3), (workdir / "checkpoints" / "3", None)):
        found = finetune.load_pretrained(path, step)
        assert found.config == data["config"] and found.vocab == data["vocab"]
        jax.tree.map(np.testing.assert_array_equal, found.params, data["params"])
    with pytest.raises(finetune.PretrainedError, match=r"no checkpoint for step 9; it has \[3\]"):
        finetune.load_pretrained(workdir, 9)


def test_finetune_learns_and_reports_exact_metrics(data: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    root = data["root"]
    gin_file = root / "apple.gin"
    gin_file.write_text(f"""
make_task.name = 'apple'
make_task.source = 'files'
make_task.files = {{'train': '{root}/train.tsv', 'validation': '{root}/dev.tsv'}}
make_task.text_a = 'sentence'
make_task.num_labels = 2
make_task.metrics = ('accuracy', 'f1', 'mcc')
finetune.max_seq_length = {SEQ}
finetune.batch_size = 32
finetune.num_train_steps = 100
finetune.learning_rate = 1e-3
finetune.eval_every = 50
finetune.eval_batch_size = 64
finetune.log_every = 50
""")
    out = root / "out"
    assert cli.main(["finetune", f"--gin_file={gin_file}", f"--model={root / 'pretrain'}", f"--workdir={out}"]) == 0
    assert "Fine-tuning workdir" in capsys.readouterr().out
    best = json.loads((out / "eval" / "best.json").read_text())
    final = json.loads((out / "eval" / "step_100.json").read_text())["validation"]
    print(f"held-out accuracy: best {best['validation']['accuracy']:.3f} (step {best['step']}), "
          f"final {final['accuracy']:.3f}")
    assert best["validation"]["accuracy"] >= 0.9 and final["accuracy"] >= 0.9

    tokenizer = Tokenizer(data["vocab"])
    lines = (root / "dev.tsv").read_text().splitlines()[1:]
    labels = np.array([int(line.split("\t")[2]) for line in lines])
    predictions = apply_saved(out, *features(tokenizer, [line.split("\t")[1] for line in lines]), 2).argmax(-1)
    assert final["examples"] == len(lines)
    assert final["accuracy"] == pytest.approx(skm.accuracy_score(labels, predictions), abs=1e-12)
    assert final["f1"] == pytest.approx(skm.f1_score(labels, predictions), abs=1e-12)
    assert final["mcc"] == pytest.approx(skm.matthews_corrcoef(labels, predictions), abs=1e-12)


def test_pair_regression_from_converted_directory(data: dict[str, Any]) -> None:
    """Label = number of texts (0-2) containing "apple"; reported Pearson/Spearman equal scipy's."""
    root = data["root"]
    gin.parse_config(f"""
make_task.name = 'apple_pairs'
make_task.source = 'files'
make_task.files = {{'train': '{root}/train_pairs.csv', 'dev': '{root}/dev_pairs.csv'}}
make_task.header = False
make_task.text_a = 0
make_task.text_b = 1
make_task.label = 2
make_task.num_labels = 1
make_task.metrics = ('pearson', 'spearman')
finetune.max_seq_length = {SEQ}
finetune.batch_size = 32
finetune.num_epochs = 8
finetune.learning_rate = 1e-3
finetune.log_every = 1000
""")
    result = finetune.finetune(str(root / "converted"), str(root / "out_pairs"))
    dev = result["final"]["dev"]
    print(f"held-out Pearson {dev['pearson']:.3f}, Spearman {dev['spearman']:.3f} after {result['steps']} steps")
    assert result["steps"] == 8 * (512 // 32) and dev["pearson"] >= 0.8

    rows = [line.split(",") for line in (root / "dev_pairs.csv").read_text().splitlines()]
    labels = np.array([float(row[2]) for row in rows])
    tokenizer = Tokenizer(data["vocab"])
    outputs = apply_saved(root / "out_pairs", *features(tokenizer, [r[0] for r in rows], [r[1] for r in rows]), 1)
    assert dev["pearson"] == pytest.approx(stats.pearsonr(labels, outputs[:, 0])[0], abs=1e-6)
    assert dev["spearman"] == pytest.approx(stats.spearmanr(labels, outputs[:, 0])[0], abs=1e-6)


def test_metrics_match_sklearn_and_scipy() -> None:
    rng = np.random.default_rng(0)
    binary_labels, binary_predictions = rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    multi_labels, multi_predictions = rng.integers(0, 3, 500), rng.integers(0, 3, 500)
    assert tasks.accuracy(multi_labels, multi_predictions) == pytest.approx(
        skm.accuracy_score(multi_labels, multi_predictions), abs=1e-12)
    assert tasks.f1(binary_labels, binary_predictions) == pytest.approx(
        skm.f1_score(binary_labels, binary_predictions), abs=1e-12)
    for labels, predictions in ((binary_labels, binary_predictions), (multi_labels, multi_predictions),
                                (binary_labels, np.ones_like(binary_labels))):
        assert tasks.mcc(labels, predictions) == pytest.approx(skm.matthews_corrcoef(labels, predictions), abs=1e-12)
    assert tasks.f1(binary_labels, np.zeros_like(binary_labels)) == skm.f1_score(
        binary_labels, np.zeros_like(binary_labels), zero_division=0)

    scores = rng.integers(0, 6, 300).astype(np.float64)  # STS-B-like, many ties
    outputs = scores + rng.normal(0, 2.0, 300)
    outputs[:50] = np.round(outputs[:50])
    assert tasks.pearson(scores, outputs) == pytest.approx(stats.pearsonr(scores, outputs)[0], abs=1e-12)
    assert tasks.spearman(scores, outputs) == pytest.approx(stats.spearmanr(scores, outputs)[0], abs=1e-12)

    task = tasks.make_task(name="stsb")
    regression = tasks.compute_metrics(task, scores, tasks.predictions_from_logits(task, outputs[:, None]))
    assert regression["pearson"] == pytest.approx(stats.pearsonr(scores, outputs)[0], abs=1e-12)


def test_file_reader_columns_labels_and_truncation(tmp_path: Path, data: dict[str, Any]) -> None:
    (tmp_path / "pairs.csv").write_text('"a, quoted text",second,entailment\nplain,other one,not_entailment\n')
    task = tasks.make_task(name="rte", source="files", files={"train": str(tmp_path / "pairs.csv")},
                           text_a=0, text_b=1, label=2, header=False)
    assert task.eval_splits == () and task.num_labels == 2
    examples = tasks.read_split(task, "train")
    assert examples == [tasks.Example("a, quoted text", "second", 0.0), tasks.Example("plain", "other one", 1.0)]

    tokenizer = Tokenizer(data["vocab"])
    long_a, long_b = "the city " * 10, "red dog"
    encoded = tasks.encode([tasks.Example(long_a, long_b, 1.0)], tokenizer, 12)
    ids_b = tokenizer.encode(long_b)
    tokens = list(encoded.tokens[0])
    assert len(tokens) == 12 and tokens[-len(ids_b) - 1:] == [*ids_b, SEP_ID]
    assert tokens[: encoded.first[0]] == [CLS_ID, *tokenizer.encode(long_a)[: 12 - 3 - len(ids_b)], SEP_ID]
    batch = tasks.make_batch(encoded, [0], 16, 2)
    assert batch["segment_ids"][0].tolist() == [0] * encoded.first[0] + [1] * (12 - encoded.first[0]) + [0] * 4
    assert batch["example_weights"].tolist() == [1.0, 0.0]

    (tmp_path / "bad.tsv").write_text("sentence\tlabel\nsome text\tmaybe\n")
    bad = tasks.make_task(name="sst2", source="files", files={"train": str(tmp_path / "bad.tsv")})
    with pytest.raises(tasks.TaskError, match=r"bad.tsv:2: label 'maybe' is not an integer id nor one of"):
        tasks.read_split(bad, "train")
    missing = tasks.make_task(name="sst2", source="files", files={"train": str(tmp_path / "bad.tsv")},
                              text_a="text")
    with pytest.raises(tasks.TaskError, match=r"no column 'text' for text_a; its header has \['sentence', 'label'\]"):
        tasks.read_split(missing, "train")
    with pytest.raises(tasks.TaskError, match="did you mean 'sst2'"):
        tasks.make_task(name="sst-2")


def test_tfds_glue_reader() -> None:
    import tensorflow_datasets as tfds
    task = tasks.make_task(name="mnli", data_dir="/nonexistent/tfds")
    with pytest.raises(tasks.TaskError, match="glue/mnli is not prepared under /nonexistent/tfds"):
        tasks.read_split(task, "train")
    with tfds.testing.mock_data(num_examples=5):
        examples = tasks.read_split(task, "validation_matched")
    assert len(examples) == 5 and all(e.label in (0.0, 1.0, 2.0) and e.text_b is not None for e in examples)


@pytest.mark.parametrize("name", sorted(tasks.GLUE))
def test_glue_gin_files(name: str) -> None:
    """Each task file parses (every binding names a real parameter) and selects its GLUE task."""
    from albert_jax import gin_setup

    gin_setup.parse([f"finetune/{name}.gin"], [])
    task = tasks.make_task()
    assert (task.name, task.tfds_name, task.source) == (name, f"glue/{name}", "tfds")
    assert gin.query_parameter("finetune.max_seq_length") == 512
    assert gin.query_parameter("finetune.num_train_steps") > gin.query_parameter("finetune.warmup_steps") > 0
