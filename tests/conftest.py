"""Test-wide setup: 8 simulated CPU devices (before jax is imported anywhere) so sharding tests have a mesh."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def demo_corpus() -> dict:
    """The real demo corpus under cache/demo, fetched (Debian's package registry) and prepared on first use."""
    from albert_jax.input.demo_corpus import ensure_demo_corpus

    return ensure_demo_corpus(os.path.join(REPO, "cache", "demo"), vocab_size=8000)
