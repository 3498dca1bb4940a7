"""Held-out evaluation through `launch.py --mode=eval`, as a user runs it.

A short training run on 4 devices (a structured corpus written here, a tiny model) is evaluated in continuous
mode on 1 device and at one `--step` on 4 devices; the metrics agree across device counts and equal a NumPy
recomputation from the restored parameters on the eval batches. A random transformers AlbertForPreTraining with
its own SentencePiece vocabulary is evaluated with `--init`; its MLM loss equals transformers' PyTorch model on
the same batches. Exports of the run workdir and of a converted directory saved sharded on another device count
load in transformers. PyTorch runs in the session's torch worker (tests/conftest.py, tests/torch_reference.py):
this process never imports torch.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from albert_jax import gin_setup, pretrained
from albert_jax.config import AlbertConfig
from albert_jax.convert import folder, hf
from albert_jax.input import loader as input_loader
from albert_jax.input.tokenizer import train_vocab
from albert_jax.jobs import cli, configurables, evaluate
from albert_jax.model import AlbertForPreTraining
from conftest import TorchWorker
import tb_events

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_BATCH = 16
SUBJECTS = ["the river", "a small dog", "my old teacher", "the red train", "every farmer", "the tall tower",
            "our neighbour", "the quiet library", "a bright star", "the young queen"]
VERBS = ["watched", "followed", "painted", "remembered", "carried", "visited", "described", "found"]
OBJECTS = ["the green hills", "a broken clock", "the morning market", "seven letters", "the winter garden",
           "an empty boat", "the stone bridge", "a golden key"]
WORDS = ("the capital of france is paris a city in europe river big small red blue green house tree dog cat "
         "runs fast slow good bad apple orange and").split()


def launch(args: list[str], devices: int, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.run([sys.executable, os.path.join(REPO, "launch.py"), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def printed(proc: subprocess.CompletedProcess) -> list[dict[str, Any]]:
    """The JSON result lines an eval command printed."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"step"')]


def expected_metrics(batches: list[dict[str, np.ndarray]], mlm_logits: list[np.ndarray],
                     sentence_logits: list[np.ndarray]) -> dict[str, float]:
    """The pretraining metrics in float64 NumPy from per-batch logits at the masked positions ([B, P, V]) and
    sentence logits ([B, 2]); padding rows (example_weights 0) count toward nothing."""
    sums = dict.fromkeys(("nll", "correct", "tokens", "sop_nll", "sop_correct", "examples"), 0.0)
    for batch, mlm, sop in zip(batches, mlm_logits, sentence_logits):
        rows = batch["example_weights"].astype(np.float64)
        weights = batch["masked_lm_weights"].astype(np.float64) * rows[:, None]
        for logits, labels, w, prefix in ((mlm.astype(np.float64), batch["masked_lm_ids"], weights, ""),
                                          (sop.astype(np.float64), batch["sentence_labels"], rows, "sop_")):
            shifted = logits - logits.max(-1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
            nll = -np.take_along_axis(log_probs, labels[..., None].astype(np.int64), -1)[..., 0]
            sums[prefix + "nll"] += float((w * nll).sum())
            sums[prefix + "correct"] += float(((logits.argmax(-1) == labels) * w).sum())
        sums["tokens"] += float(weights.sum())
        sums["examples"] += float(rows.sum())
    return {"masked_lm_loss": sums["nll"] / (sums["tokens"] + 1e-5),
            "masked_lm_accuracy": sums["correct"] / sums["tokens"],
            "sentence_order_loss": sums["sop_nll"] / sums["examples"],
            "sentence_order_accuracy": sums["sop_correct"] / sums["examples"],
            "examples": sums["examples"], "masked_tokens": sums["tokens"]}


def assert_metrics(got: dict[str, float], want: dict[str, float], loss_tol: float) -> None:
    for name in ("masked_lm_accuracy", "sentence_order_accuracy", "examples", "masked_tokens"):
        assert got[name] == pytest.approx(want[name], abs=1e-7), name
    for name in ("masked_lm_loss", "sentence_order_loss"):
        assert got[name] == pytest.approx(want[name], abs=loss_tol), name


def eval_batches(eval_dir: str, gin_file: str | None = None) -> list[dict[str, np.ndarray]]:
    """One pass over the eval split as the evaluator reads it (masking configured by `gin_file`, if any)."""
    gin.clear_config()
    if gin_file:
        configurables.register_all()
        gin_setup.parse([gin_file], [])
    try:
        config = dataclasses.replace(input_loader.InputConfig(), eval_dir=eval_dir)
        loader = input_loader.make_loader("eval", EVAL_BATCH, 0, 1, config=config)
        batches = [dict(batch) for batch in loader]
        loader.close()
    finally:
        gin.clear_config()
    return batches


def tensorboard_scalars(directory: Path, tag: str) -> dict[int, float]:
    """{step: value} of `tag` in the event files under `directory`."""
    return {step: value for (step, name), value in tb_events.scalars(directory).items() if name == tag}


def restore_checkpoint(workdir: Path, step: int) -> tuple[AlbertConfig, Any]:
    """(model config, params) of a checkpoint, read onto one device with orbax directly."""
    root = workdir / "checkpoints" / str(step)
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
        config = AlbertConfig(**checkpointer.restore(root / "config")["model"])
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        state = checkpointer.restore(root / "state", args=ocp.args.StandardRestore(fallback_sharding=one))
    return config, state["params"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An 8-step training run on 4 devices, checkpoints every 4 steps (orbax also keeps step 1)."""
    root = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    with open(root / "corpus.txt", "w") as f:
        for _ in range(120):
            for _ in range(int(rng.integers(4, 9))):
                f.write(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} near "
                        f"{rng.choice(OBJECTS)} in {1900 + int(rng.integers(0, 99))}.\n")
            f.write("\n")
    workdir = root / "run"
    proc = launch([
        "--gin_file=base.gin", "--gin_file=models/tiny.gin", "--gin_file=objective/sop.gin",
        "--gin_file=masking/ngram3.gin", "--gin_file=optim/lamb.gin", "--gin_file=scale/tiny.gin",
        f"--workdir={workdir}", "--gin.DataSpec.corpus='text'", f"--gin.DataSpec.text_files=['{root}/corpus.txt']",
        f"--gin.DataSpec.cache_dir='{root}/cache'", "--gin.DataSpec.vocab_size=100",
        "--gin.DataSpec.eval_fraction=0.1", "--gin.DataSpec.num_workers=1", "--gin.AlbertConfig.vocab_size=128",
        "--gin.AlbertConfig.hidden_size=64", "--gin.AlbertConfig.embedding_size=32",
        "--gin.AlbertConfig.intermediate_size=128", "--gin.AlbertConfig.num_hidden_layers=2",
        "--gin.NUM_TRAIN_STEPS=8", "--gin.train.log_every=4", "--gin.make_manager.save_every_steps=4",
        "--gin.make_schedule.peak_learning_rate=0.02"], devices=4, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = sorted(int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit())
    assert steps[-1] == 8 and len(steps) >= 2, steps
    (eval_dir,) = glob.glob(str(root / "cache" / "corpora" / "*" / "instances-*" / "eval"))
    (vocab,) = glob.glob(str(root / "cache" / "corpora" / "*" / "vocab100.model"))
    return {"root": root, "workdir": workdir, "steps": steps, "eval_dir": eval_dir, "vocab": vocab}


@pytest.fixture(scope="module")
def continuous(run: dict[str, Any]) -> dict[str, Any]:
    """`--continuous` on 1 device over the finished run, and the step_N.json files it wrote."""
    proc = launch(["--mode=eval", f"--workdir={run['workdir']}", "--continuous",
                   f"--gin.Evaluator.batch_size={EVAL_BATCH}"], devices=1, cwd=run["root"])
    files = {step: json.loads((run["workdir"] / "eval" / f"step_{step}.json").read_text()) for step in run["steps"]}
    return {"printed": printed(proc), "files": files}


def test_continuous_evaluates_each_checkpoint_once_and_tracks_the_best(run: dict, continuous: dict) -> None:
    assert [line["step"] for line in continuous["printed"]] == run["steps"]
    lines = [json.loads(line) for line in (run["workdir"] / "eval" / "eval.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == run["steps"]
    accuracy = {step: entry["masked_lm_accuracy"] for step, entry in continuous["files"].items()}
    best_step = max(run["steps"], key=lambda s: (accuracy[s], -s))  # the first of equals stays the best
    best = json.loads((run["workdir"] / "eval" / "best.json").read_text())
    assert best["step"] == best_step and best["masked_lm_accuracy"] == accuracy[best_step]
    assert best["checkpoint"] == str(run["workdir"] / "checkpoints" / str(best_step))

    again = launch(["--mode=eval", f"--workdir={run['workdir']}", "--continuous"], devices=1, cwd=run["root"])
    assert printed(again) == []  # every checkpoint already has its eval/step_N.json, the final step included
    assert len((run["workdir"] / "eval" / "eval.jsonl").read_text().splitlines()) == len(run["steps"])


def test_metrics_match_across_device_counts_and_an_independent_computation(run: dict, continuous: dict) -> None:
    middle = run["steps"][-2]
    proc = launch(["--mode=eval", f"--workdir={run['workdir']}", f"--step={middle}",
                   f"--gin.Evaluator.batch_size={EVAL_BATCH}"], devices=4, cwd=run["root"])
    (four_devices,) = printed(proc)
    one_device = continuous["files"][middle]
    assert four_devices["step"] == middle
    assert_metrics(four_devices, one_device, loss_tol=1e-6)
    assert json.loads((run["workdir"] / "eval" / f"step_{middle}.json").read_text())["step"] == middle

    batches = eval_batches(run["eval_dir"], str(run["workdir"] / "config.gin"))
    model = AlbertForPreTraining(restore_checkpoint(run["workdir"], run["steps"][0])[0])
    apply = jax.jit(lambda p, b: model.apply({"params": p}, b["input_ids"], b["input_mask"], b["segment_ids"],
                                             b["masked_lm_positions"], deterministic=True))
    for step in run["steps"]:
        config, params = restore_checkpoint(run["workdir"], step)
        assert config == model.config
        logits = [jax.device_get(apply(params, {k: jnp.asarray(v) for k, v in batch.items()})) for batch in batches]
        want = expected_metrics(batches, [m for m, _ in logits], [s for _, s in logits])
        assert_metrics(continuous["files"][step], want, loss_tol=1e-5)
    assert want["examples"] > EVAL_BATCH and want["masked_tokens"] > 100  # several batches, a padded last one

    scalars = tensorboard_scalars(run["workdir"] / "eval" / "tensorboard", "masked_lm_loss")
    assert set(scalars) == set(run["steps"])
    for step in run["steps"]:
        reference = four_devices if step == middle else continuous["files"][step]
        assert scalars[step] == pytest.approx(reference["masked_lm_loss"], rel=1e-6)


def test_missing_step_is_a_clear_error(run: dict) -> None:
    proc = launch(["--mode=eval", f"--workdir={run['workdir']}", "--step=5"], devices=1, cwd=run["root"])
    assert proc.returncode == 1
    assert f"No checkpoint for step 5 in {run['workdir']}/checkpoints; available steps: {run['steps']}" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory: pytest.TempPathFactory, torch_worker: TorchWorker) -> dict[str, Path]:
    """A random transformers AlbertForPreTraining with its SentencePiece vocabulary (spiece.model) and a text
    corpus of the same words (one sentence per line, blank lines between documents)."""
    root = tmp_path_factory.mktemp("evaluate_hf")
    rng = random.Random(0)
    sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))  # noqa: E731
    vocab = train_vocab([sentence() for _ in range(400)], str(root / "vocab"), 60, num_threads=1)
    (root / "text.txt").write_text("".join("".join(sentence() + " .\n" for _ in range(rng.randint(3, 7))) + "\n"
                                           for _ in range(120)))
    torch_worker("torch_reference", "save_tiny_model", str(root / "hf"), 60, 0.1)
    shutil.copyfile(vocab["model"], root / "hf" / "spiece.model")
    return {"root": root, "hf": root / "hf", "text": root / "text.txt"}


def test_imported_transformers_model_matches_pytorch_on_its_own_vocabulary(hf_model: dict, run: dict,
                                                                          torch_worker: TorchWorker) -> None:
    root, out = hf_model["root"], hf_model["root"] / "out"
    proc = launch(["--mode=eval", f"--init={hf_model['hf']}", "--gin_file=corpus/text.gin",
                   f"--gin.TEXT_FILES=['{hf_model['text']}']", f"--gin.DataSpec.cache_dir='{root}/cache'",
                   "--gin.DataSpec.eval_fraction=0.2", "--gin.DataSpec.num_workers=1",
                   "--gin.InstanceConfig.max_seq_length=32", f"--gin.Evaluator.batch_size={EVAL_BATCH}",
                   f"--workdir={out}"], devices=2, cwd=root)
    (result,) = printed(proc)
    written = json.loads((out / "eval" / "step_0.json").read_text())
    assert written["vocab"] == str(hf_model["hf"] / "spiece.model")
    assert json.loads((out / "eval" / "best.json").read_text())["model"] == written["model"]
    assert tensorboard_scalars(out / "eval" / "tensorboard", "masked_lm_loss") == {
        0: pytest.approx(result["masked_lm_loss"], rel=1e-6)}

    batches = eval_batches(written["eval_dir"])
    assert batches[0]["input_ids"].max() < 60
    inputs = [{k: np.asarray(batch[k]) for k in ("input_ids", "input_mask", "segment_ids", "masked_lm_positions")}
              for batch in batches]
    reference = torch_worker("torch_reference", "masked_logits", str(hf_model["hf"]), inputs)
    want = expected_metrics(batches, reference["mlm"], reference["sop"])
    assert want["examples"] > EVAL_BATCH
    assert_metrics(result, want, loss_tol=1e-4)

    with pytest.raises(pretrained.PretrainedError, match="has 100 pieces but the model only 60 embeddings"):
        evaluate.evaluate_pretrained(str(hf_model["hf"]), str(root / "mismatch"), vocab=run["vocab"])


def test_exports_load_in_transformers_whatever_device_count_saved_them(run: dict, tmp_path: Path,
                                                                       torch_worker: TorchWorker) -> None:
    export = ["convert", "hf", "export", "--model", str(run["workdir"]), str(tmp_path / "from_run")]
    assert cli.main(export) == 0  # saved on 4, read on 8
    config, params = restore_checkpoint(run["workdir"], run["steps"][-1])
    ids = np.random.default_rng(0).integers(5, config.vocab_size, (2, 16)).astype(np.int32)
    ours, _ = AlbertForPreTraining(config).apply({"params": params}, jnp.asarray(ids), jnp.ones_like(ids),
                                                 jnp.zeros_like(ids), jnp.asarray([list(range(16))] * 2))
    theirs = torch_worker("torch_reference", "prediction_logits", str(tmp_path / "from_run"), ids)
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4)

    sharded = jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(jax.devices()), ("d",)),
                                         jax.sharding.PartitionSpec("d"))
    converted = tmp_path / "converted"
    converted.mkdir()
    (converted / folder.CONFIG_FILE).write_text(json.dumps(config.to_dict()))
    with ocp.StandardCheckpointer() as checkpointer:  # word embeddings split over the 8 devices of this process
        checkpointer.save(converted / folder.PARAMS_DIR, jax.tree.map(
            lambda x: jax.device_put(x, sharded) if x.shape and x.shape[0] % 8 == 0 else x, params))
        checkpointer.wait_until_finished()
    env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    proc = subprocess.run([sys.executable, "-m", "albert_jax.jobs.convert", "hf", "export", "--model", str(converted),
                           str(tmp_path / "from_converted")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    exported, expected = hf.load_hf_state(tmp_path / "from_converted"), hf.load_hf_state(tmp_path / "from_run")
    assert exported.keys() == expected.keys()
    assert all(np.array_equal(exported[name], expected[name]) for name in expected)
