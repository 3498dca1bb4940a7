"""The training loop through `launch.py`, as a user runs it: falling loss, exact resume after SIGKILL, clean
exit on SIGTERM, two local processes matching one, and clear errors for bad gin bindings."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBJECTS = ["the river", "a small dog", "my old teacher", "the red train", "every farmer", "the tall tower",
            "our neighbour", "the quiet library", "a bright star", "the young queen"]
VERBS = ["watched", "followed", "painted", "remembered", "carried", "visited", "described", "found"]
OBJECTS = ["the green hills", "a broken clock", "the morning market", "seven letters", "the winter garden",
           "an empty boat", "the stone bridge", "a golden key"]


def write_corpus(path: str, documents: int = 160, seed: int = 0) -> None:
    """Small structured English (one sentence per line, blank line between documents): learnable quickly."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for _ in range(documents):
            for _ in range(int(rng.integers(4, 9))):
                s, v, o = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
                f.write(f"{s} {v} {o} near {rng.choice(OBJECTS)} in {1900 + int(rng.integers(0, 99))}.\n")
            f.write("\n")


def run_args(workdir: str, corpus: str, cache: str, steps: int, extra: list[str] = ()) -> list[str]:
    return [sys.executable, os.path.join(REPO, "launch.py"), "--gin_file=base.gin", "--gin_file=models/tiny.gin",
            "--gin_file=objective/sop.gin", "--gin_file=masking/ngram3.gin", "--gin_file=optim/lamb.gin",
            "--gin_file=scale/tiny.gin", f"--workdir={workdir}",
            "--gin.DataSpec.corpus='text'", f"--gin.DataSpec.text_files=['{corpus}']",
            f"--gin.DataSpec.cache_dir='{cache}'", "--gin.DataSpec.vocab_size=100",
            "--gin.DataSpec.eval_fraction=0.1", "--gin.DataSpec.num_workers=1",
            "--gin.AlbertConfig.vocab_size=128", "--gin.AlbertConfig.hidden_size=64",
            "--gin.AlbertConfig.embedding_size=32", "--gin.AlbertConfig.intermediate_size=128",
            "--gin.AlbertConfig.num_hidden_layers=2", "--gin.AlbertConfig.hidden_dropout_prob=0.1",
            f"--gin.NUM_TRAIN_STEPS={steps}", "--gin.train.log_every=1", "--gin.make_manager.save_every_steps=4",
            "--gin.make_schedule.peak_learning_rate=0.02", *extra]


def env(devices: int = 4) -> dict[str, str]:
    out = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return out


def final_params(workdir: str) -> dict:
    checkpoints = os.path.join(workdir, "checkpoints")
    last = max(int(name) for name in os.listdir(checkpoints) if name.isdigit())
    host = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # saved on any topology, read onto one device
    checkpointer = ocp.Checkpointer(ocp.StandardCheckpointHandler())
    state = checkpointer.restore(os.path.join(checkpoints, str(last), "state"),
                                 args=ocp.args.StandardRestore(fallback_sharding=host))
    return {"step": last, "params": state["params"]}


def flat(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = np.asarray(value)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    corpus = str(root / "corpus.txt")
    write_corpus(corpus)
    return {"root": root, "corpus": corpus, "cache": str(root / "cache")}


@pytest.fixture(scope="module")
def uninterrupted(data):
    workdir = str(data["root"] / "full")
    proc = subprocess.run(run_args(workdir, data["corpus"], data["cache"], 12), env=env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir, proc.stdout


def test_trains_checkpoints_and_logs(uninterrupted):
    workdir, stdout = uninterrupted
    losses = [json.loads(line)["loss"] for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3, losses
    assert "ETA" in stdout and "tok/s" in stdout and "GFLOP/s" in stdout
    assert sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit()) == [4, 8, 12]
    config = open(os.path.join(workdir, "config.gin")).read()
    assert "AlbertConfig.hidden_size = 64" in config
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(workdir, "tensorboard")))


def test_profile_steps_write_a_trace(data):
    """`train.profile_steps` writes a jax.profiler trace of those steps. Its own run, apart from the run the resume
    tests compare against: XLA:CPU's tracer (jaxlib 0.10.2) crashes the process with SIGSEGV now and then when a
    trace starts or stops, even between whole steps (seen 2026-12-03 and 2026-12-06, about one run in ten); such a
    crash, and only that, gets one more try."""
    workdir = str(data["root"] / "profiled")
    for attempt in range(2):
        proc = subprocess.run(run_args(workdir + str(attempt), data["corpus"], data["cache"], 6,
                                       ["--gin.train.profile_steps=(3, 5)"]),
                              env=env(), capture_output=True, text=True, timeout=600)
        if proc.returncode != -signal.SIGSEGV:
            break
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    traces = [f for _, _, files in os.walk(os.path.join(workdir + str(attempt), "profile")) for f in files
              if "xplane" in f]
    assert traces, "profile_steps=(3, 5) wrote no trace"


def test_throughput_counts_flops_at_the_length_the_run_reads(uninterrupted):
    """GFLOP/s (and so MFU) use the data's length 64 and 10 predictions, not describe's defaults 512 / 20."""
    workdir, _ = uninterrupted
    e, h, ffn, layers, vocab, length, predictions = 32, 64, 128, 2, 128, 64, 10  # run_args + scale/tiny.gin
    per_token = 2 * (e * h + layers * (4 * h * h + 2 * h * ffn)) + 4 * layers * length * h
    heads = (2 * (h * e + e * vocab) * predictions + 2 * (h * h + 2 * h)) / length
    expected = 3 * (per_token + heads)  # training matmul FLOPs per token: 3x the forward
    for line in open(os.path.join(workdir, "metrics.jsonl")):
        record = json.loads(line)
        assert record["gflops_per_s"] * 1e9 / record["tokens_per_s"] == pytest.approx(expected, rel=1e-6)


def test_nonfinite_updates_stop_the_run_with_a_clear_message(data):
    workdir = str(data["root"] / "diverged")
    proc = subprocess.run(run_args(workdir, data["corpus"], data["cache"], 12, [
        "--gin.make_schedule.peak_learning_rate=1e38", "--gin.train.max_nonfinite_streak=2"]),
        env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "2 consecutive updates had a non-finite loss or gradient" in proc.stderr
    assert "Traceback" not in proc.stderr
    skipped = [json.loads(line)["update_skipped"] for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert skipped[-2:] == [1.0, 1.0]


def test_sigkill_then_resume_is_bit_identical(data, uninterrupted):
    workdir = str(data["root"] / "killed")
    args = run_args(workdir, data["corpus"], data["cache"], 12)
    proc = subprocess.Popen(args, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    first_checkpoint = os.path.join(workdir, "checkpoints", "4")
    while not os.path.isdir(first_checkpoint) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = final_params(workdir)["step"]
    assert killed_at < 12
    resumed = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"Resumed from {workdir} at step" in resumed.stdout
    got, want = final_params(workdir), final_params(uninterrupted[0])
    assert got["step"] == want["step"] == 12
    for name, value in flat(want["params"]).items():
        np.testing.assert_array_equal(flat(got["params"])[name], value, err_msg=name)


def test_sigterm_saves_and_exits_cleanly(data):
    workdir = str(data["root"] / "preempted")
    proc = subprocess.Popen(run_args(workdir, data["corpus"], data["cache"], 400), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while not os.path.exists(os.path.join(workdir, "metrics.jsonl")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    said = [line for line in out.splitlines() if line.startswith("SIGTERM: saved step")]
    assert said, out[-3000:]
    saved = int(said[0].split()[3])
    assert 0 < saved < 400 and final_params(workdir)["step"] == saved


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_match_one(data):
    one = str(data["root"] / "one_process")
    proc = subprocess.run(run_args(one, data["corpus"], data["cache"], 6), env=env(4), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    two = str(data["root"] / "two_processes")
    port = free_port()
    procs = [subprocess.Popen(run_args(two, data["corpus"], data["cache"], 6, [
        f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"]),
        env=env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    assert "on 4 devices" in outputs[0]
    got, want = final_params(two), final_params(one)
    assert got["step"] == want["step"] == 6
    for name, value in flat(want["params"]).items():
        np.testing.assert_allclose(flat(got["params"])[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


def test_misspelled_binding_names_the_closest(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "launch.py"), "--gin_file=demo.gin",
                           "--gin.AlbertConfig.hiden_size=8", f"--workdir={tmp_path}"], env=env(1),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "hiden_size" in proc.stderr and "AlbertConfig.hidden_size" in proc.stderr
    assert "Traceback" not in proc.stderr
