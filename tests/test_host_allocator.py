"""The host-allocator tuning for XLA:CPU: when it applies, and that it removes the per-step page faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gin
import pytest

from albert_jax.jobs import host_allocator

# A child that runs a jitted step whose temporaries (64 MiB: a [4096, 4096] product) XLA:CPU allocates as one block per execution,
# and reports the minor page faults per step. It starts JAX only after the (optional) tuning, as the CLI does.
CHILD = """
import json, resource, sys
from albert_jax.jobs import host_allocator
applied = host_allocator.tune_for_xla_cpu()
import jax, jax.numpy as jnp
step = jax.jit(lambda x: (jnp.tanh(x @ x.T) @ x + jnp.exp(x @ x.T) @ x).sum())
x = jnp.ones((4096, 64), jnp.float32) * 1e-3
for _ in range(3):
    step(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step(x).block_until_ready()
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"applied": applied, "faults_per_step": (after - before) / 10}))
"""


def _child(**env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != host_allocator.OPT_OUT and k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-c", CHILD], env={**environ, "JAX_PLATFORMS": "cpu", **env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_tuning_removes_the_page_faults_of_each_step():
    tuned = _child()
    default = _child(**{host_allocator.OPT_OUT: "1"})
    assert tuned["applied"] and not default["applied"]
    # glibc's default maps each step's 64 MiB of temporaries afresh: ~16,000 faults of 4 KiB pages.
    assert default["faults_per_step"] > 10_000, default
    assert tuned["faults_per_step"] < default["faults_per_step"] / 10, (tuned, default)


def test_cpu_is_decided_from_jax_platforms_before_jax_starts():
    assert host_allocator.runs_on_cpu({"JAX_PLATFORMS": "cpu"})
    assert not host_allocator.runs_on_cpu({"JAX_PLATFORMS": "tpu"})
    assert not host_allocator.runs_on_cpu({"JAX_PLATFORMS": "cuda,cpu"})


def test_left_alone_when_the_user_chose_or_an_accelerator_is_named():
    assert host_allocator.user_chose({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
    assert not host_allocator.user_chose({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"})  # not about malloc
    assert not host_allocator.tune_for_xla_cpu({"JAX_PLATFORMS": "cpu", "MALLOC_ARENA_MAX": "4"})
    assert not host_allocator.tune_for_xla_cpu({"JAX_PLATFORMS": "cpu", host_allocator.OPT_OUT: "1"})
    assert not host_allocator.tune_for_xla_cpu({"JAX_PLATFORMS": "tpu"})


@pytest.mark.usefixtures("clean_gin")
def test_off_unless_the_recipe_switches_it_on():
    import jax

    assert not host_allocator.tune_host_allocator()  # the default
    jax.devices()  # JAX's CPU client starts (if no test before this one started it)
    gin.parse_config("tune_host_allocator.enabled = True")
    assert not host_allocator.tune_host_allocator()  # asked for, but too late here: JAX's CPU client is running


@pytest.mark.usefixtures("clean_gin")
@pytest.mark.parametrize("recipe", ["demo.gin", "demo_wiki.gin", "ablations/table4_demo.gin"])
def test_the_cpu_recipes_switch_it_on(recipe):
    from albert_jax import gin_setup
    from albert_jax.jobs import configurables

    configurables.register_all()
    gin_setup.parse([recipe], [])
    assert gin.query_parameter("tune_host_allocator.enabled") is True


def test_the_train_job_applies_the_recipes_switch_before_jax_starts(tmp_path):
    from test_train_loop import run_args, write_corpus

    corpus = str(tmp_path / "corpus.txt")
    write_corpus(corpus, documents=40)
    args = run_args(str(tmp_path / "run"), corpus, str(tmp_path / "cache"), 2)[2:]  # without python launch.py
    env = {k: v for k, v in os.environ.items() if k not in (host_allocator.OPT_OUT, "XLA_FLAGS")}
    done = subprocess.run([sys.executable, "-m", "albert_jax", "train", *args, "--gin.tune_host_allocator.enabled=True"],
                          env={**env, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "host allocator: glibc malloc tuned for XLA:CPU" in done.stdout, done.stdout[-2000:]
