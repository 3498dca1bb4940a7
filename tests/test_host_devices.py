"""A CPU recipe's split of the cores into XLA:CPU devices: when it applies, and a run under it end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gin
import pytest

from albert_jax.jobs import host_devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A child that asks for the split before JAX starts, as the train job does, and reports what JAX then has.
CHILD = """
import json, sys
from albert_jax.jobs import host_devices
line = host_devices.split_cpu_into_devices(int(sys.argv[1]))
import jax
print(json.dumps({"line": line, "devices": jax.device_count(), "platform": jax.devices()[0].platform}))
"""


def _child(count: int, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", host_devices.ENV_VAR)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(count)], env={**environ, "JAX_PLATFORMS": "cpu", **env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_split_gives_jax_that_many_cpu_devices():
    split = _child(2)
    assert (split["devices"], split["platform"]) == (2, "cpu"), split
    assert split["line"].startswith("host devices: XLA:CPU split into 2 data-parallel devices"), split
    assert _child(1) == {"line": None, "devices": 1, "platform": "cpu"}  # 1 is XLA's own single device


def test_the_users_count_wins():
    chosen = _child(2, XLA_FLAGS="--xla_force_host_platform_device_count=3")
    assert chosen["devices"] == 3 and "not applied" in chosen["line"], chosen
    chosen = _child(2, **{host_devices.ENV_VAR: "1"})
    assert chosen["devices"] == 1 and "not applied" in chosen["line"], chosen


def test_nothing_to_do_off_the_cpu_and_a_clear_error_for_a_bad_count():
    assert host_devices.split_cpu_into_devices(2, {"JAX_PLATFORMS": "tpu"}) is None
    assert host_devices.user_chose({"XLA_FLAGS": "--xla_cpu_use_thunk_runtime=true "
                                                 "--xla_force_host_platform_device_count=8"})
    assert not host_devices.user_chose({"XLA_FLAGS": "--xla_cpu_use_thunk_runtime=true"})
    with pytest.raises(ValueError, match="host_devices.count must be at least 1"):
        host_devices.split_cpu_into_devices(0, {"JAX_PLATFORMS": "cpu"})


@pytest.mark.usefixtures("clean_gin")
def test_too_late_once_jax_started_says_so_and_keeps_the_devices():
    import jax

    before = jax.device_count()  # JAX's CPU client starts (if no test before this one started it)
    assert host_devices.host_devices() is None  # the default: one device, nothing to do
    gin.parse_config("host_devices.count = 2")  # a recipe's binding parses: the switch is a registered configurable
    assert gin.query_parameter("host_devices.count") == 2
    line = host_devices.split_cpu_into_devices(2, {"JAX_PLATFORMS": "cpu"})  # this environment: no user's count
    assert line and "not applied: JAX already started" in line and f"with {before}" in line, line
    assert jax.device_count() == before


def test_a_run_trained_on_split_devices_evaluates_on_one(tmp_path):
    """The train job applies the recipe's switch before JAX starts; its checkpoints (saved from two devices)
    restore into a one-device evaluation through the real entry point."""
    from test_train_loop import run_args, write_corpus

    corpus = str(tmp_path / "corpus.txt")
    write_corpus(corpus, documents=40)
    workdir = str(tmp_path / "run")
    args = run_args(workdir, corpus, str(tmp_path / "cache"), 4)[2:]  # without python launch.py
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", host_devices.ENV_VAR)}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    trained = subprocess.run([sys.executable, "-m", "albert_jax", "train", *args, "--gin.host_devices.count=2"],
                             env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "host devices: XLA:CPU split into 2 data-parallel devices" in trained.stdout, trained.stdout[-2000:]
    assert "on 2 devices (mesh {'data': 2" in trained.stdout, trained.stdout[-2000:]
    evaluated = subprocess.run([sys.executable, "-m", "albert_jax", "eval", f"--workdir={workdir}"],
                               env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "eval" / "step_4.json").read_text())
    assert result["step"] == 4 and result["examples"] > 0 and result["masked_lm_loss"] > 0, result
