"""Test-wide setup and the PyTorch isolation rule.

* 8 simulated CPU devices (before jax is imported anywhere) so sharding tests have a mesh.
* The pytest process never imports torch or triton: TensorFlow (the TF checkpoint tests) and triton (imported by
  torch._dynamo with PyPI's CUDA wheel) crash when loaded into one process. Every PyTorch/transformers-model
  reference runs in the session's spawned `torch_worker` (functions of tests/*_reference.py modules taking and
  returning plain numpy arrays, paths and dicts). A guard fails the test, or the collection, during which either
  module appeared in this process.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import multiprocessing  # noqa: E402
import sys  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from typing import Any, Iterator  # noqa: E402

import pytest  # noqa: E402

from spawn_call import call  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUARDED_MODULES = ("torch", "triton")
WORKER_TIMEOUT_S = 600
_blamed: set[str] = set()


class TorchWorker:
    """The session's one spawned process that imports torch and transformers (never TensorFlow)."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self._pool = pool

    def __call__(self, module: str, function: str, *args: Any) -> Any:
        """`module.function(*args)` run in the worker; arguments and result cross as pickles (numpy, not torch)."""
        return self._pool.submit(call, module, function, *args).result(timeout=WORKER_TIMEOUT_S)


@pytest.fixture(scope="session")
def torch_worker() -> Iterator[TorchWorker]:
    """The worker, started on first use (spawn: a fresh interpreter, nothing inherited from this process)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield TorchWorker(pool)


@pytest.fixture
def clean_gin() -> Iterator[None]:
    """An empty gin config before and after the test: a job leaves its bindings behind, and no test may see
    another's (files whose every test needs it say `pytestmark = pytest.mark.usefixtures("clean_gin")`)."""
    import gin

    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture(scope="session")
def demo_corpus() -> dict:
    """The real demo corpus under cache/demo, fetched (Debian's package registry) and prepared on first use."""
    from albert_jax.input.demo_corpus import ensure_demo_corpus

    return ensure_demo_corpus(os.path.join(REPO, "cache", "demo"), vocab_size=8000)


def _newly_imported() -> list[str]:
    """Guarded modules in sys.modules not yet blamed on a test (each is blamed once: it stays imported)."""
    found = [name for name in GUARDED_MODULES if name in sys.modules and name not in _blamed]
    _blamed.update(found)
    return found


def _blame(report: Any, found: list[str], where: str) -> None:
    message = (f"{' and '.join(found)} got imported into the pytest process {where}. This process never imports "
               "torch or triton (TensorFlow and triton crash together in one process): run PyTorch/transformers "
               "model code in the spawned worker instead, through the `torch_worker` fixture of tests/conftest.py "
               "(torch_worker('some_reference', 'function', *numpy_args)), with the function in a "
               "tests/*_reference.py module that imports torch and nothing of TensorFlow.")
    report.outcome = "failed"
    report.longrepr = message if report.longrepr is None else f"{message}\n\n{report.longrepr}"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Anything imported before the first collection (a plugin, this conftest) is blamed at once."""
    found = _newly_imported()
    if found:
        raise pytest.UsageError(f"{' and '.join(found)} already imported when the test session started; "
                                "the pytest process must never import them (see tests/conftest.py).")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """Fails the collection (a test module importing torch at its top, say) during which a guarded module appeared."""
    outcome = yield
    found = _newly_imported()
    if found:
        _blame(outcome.get_result(), found, f"while collecting {collector.nodeid or collector.name}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Fails the test during whose setup, call or teardown a guarded module appeared."""
    outcome = yield
    found = _newly_imported()
    if found:
        _blame(outcome.get_result(), found, f"during the {call.when} of {item.nodeid}")
