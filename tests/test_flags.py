"""Start-up decisions taken from the environment: when a job joins a multi-host TPU pod."""

from __future__ import annotations

import pytest

from albert_jax.jobs.flags import on_multihost_tpu_pod

LIBTPU_WARNING = ("WARNING: could not determine TPU worker hostnames or IP addresses, please set env var "
                  "`TPU_WORKER_HOSTNAMES` manually, otherwise libtpu.so may not properly initialize.")


@pytest.mark.parametrize("environ, pod", [
    ({}, False),
    ({"TPU_WORKER_HOSTNAMES": "localhost"}, False),  # one host: nothing to initialize
    ({"TPU_WORKER_HOSTNAMES": "t1v-n-0,t1v-n-1,t1v-n-2,t1v-n-3"}, True),
    ({"TPU_WORKER_HOSTNAMES": "10.0.0.2, 10.0.0.3"}, True),
    ({"TPU_PROCESS_ADDRESSES": "10.0.0.2:8476,10.0.0.3:8476"}, True),
    # libtpu writes its warning into the variable on a machine that is no TPU VM; child processes inherit it.
    ({"TPU_WORKER_HOSTNAMES": LIBTPU_WARNING}, False),
    ({"TPU_WORKER_HOSTNAMES": LIBTPU_WARNING, "CLOUD_TPU_TASK_ID": "0"}, False),
])
def test_multihost_tpu_pod_detection(environ: dict[str, str], pod: bool) -> None:
    assert on_multihost_tpu_pod(environ) is pod
