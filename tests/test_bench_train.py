"""bench/bench_train.py's GEMM-only sides and GEMM ceiling: the right products, and a real run through the script
(with the cores split into two XLA:CPU devices, `--cpu_devices`)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

from albert_jax import describe
from albert_jax.config import AlbertConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench():
    spec = importlib.util.spec_from_file_location("bench_train", os.path.join(REPO, "bench", "bench_train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_encoder_gemms_are_the_dense_layers_training_flops():
    config = AlbertConfig(vocab_size=300, embedding_size=32, hidden_size=64, num_hidden_layers=3,
                          num_attention_heads=4, intermediate_size=256)
    seq, predictions, batch = 16, 3, 5
    chained = sum(2 * m * k * n for m, k, n in _bench().encoder_gemms(config, batch * seq))
    # describe's analytic count with the dense layers alone left: no projection, attention products or heads.
    everything = describe.train_flops_per_token(config, seq, predictions)
    without_layers = describe.train_flops_per_token(config.replace(num_hidden_layers=1), seq, predictions)
    per_layer = (everything - without_layers) / 2  # two layers' worth
    attention_per_layer = 3.0 * 4 * seq * config.hidden_size
    assert chained == config.num_hidden_layers * (per_layer - attention_per_layer) * batch * seq


def test_gemm_sides_run_through_the_script():
    # With the cores split into two XLA:CPU devices (--cpu_devices 2): albert-jax's step is data-parallel over both.
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env.update(PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "bench/bench_train.py", "--gin_file=models/tiny.gin", "--batch", "4", "--seq", "16",
         "--predictions", "2", "--steps", "1", "--binding", "AlbertConfig.num_hidden_layers=2",
         "--sides", "jax,torch,jax_gemms,torch_gemms", "--cpu_devices", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "host devices: XLA:CPU split into 2 data-parallel devices" in out, out[:2000]
    assert re.search(r"speed-up of albert-jax over PyTorch: \d+\.\d\dx", out)
    assert re.search(r"albert-jax's encoder GEMMs alone: \d+\.\d+ s, [\d.]+ GFLOP/s; the rest of its step", out)
    assert re.search(r"PyTorch's encoder GEMMs alone: \d+\.\d+ s, [\d.]+ GFLOP/s; the rest of its step", out)
    assert re.search(r"speed-up over PyTorch if albert-jax's step were its GEMMs alone: \d+\.\d\dx", out)
    # The ceiling line, and each step's share of it agrees with the table's GFLOP/s column.
    ceiling = re.search(r"GEMM ceiling, the best of 20 plain 1024\^3 matmuls: XLA:CPU ([\d.]+) GFLOP/s, "
                        r"PyTorch ([\d.]+) GFLOP/s", out)
    assert ceiling, out
    best = max(float(ceiling.group(1)), float(ceiling.group(2)))
    rates = {who: float(re.search(re.escape(name) + r"\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)", out).group(1))
             for who, name in (("albert-jax", "albert-jax (jit, LAMB)"), ("PyTorch", "transformers PyTorch (AdamW)"))}
    shares = re.search(r"each step's share of that ceiling \(([\d.]+)\): albert-jax (\d+)%, PyTorch (\d+)%", out)
    assert shares and float(shares.group(1)) == best
    assert abs(int(shares.group(2)) - 100 * rates["albert-jax"] / best) <= 1
    assert abs(int(shares.group(3)) - 100 * rates["PyTorch"] / best) <= 1
    bound = re.search(r"most speed-up over PyTorch a step at the GEMM ceiling could have: (\d+\.\d\d)x", out)
    assert bound and abs(float(bound.group(1)) - best / rates["PyTorch"]) < 0.02 * best / rates["PyTorch"]


def test_gemm_ceiling_is_a_plausible_rate():
    # XLA:CPU only: this process never imports torch (tests/conftest.py); the script run above covers PyTorch's.
    rates = _bench().gemm_ceiling(["jax"], "float32", repeats=3)
    assert set(rates) == {"jax"}
    # More than a naive loop could reach, less than any CPU this runs on: 2e9 flops in well under a minute.
    assert 0.5 < rates["jax"] < 1e5, rates
