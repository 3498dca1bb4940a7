"""The MLM loss and accuracy against references computed here in float64 numpy, not by the code under test."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from albert_jax.losses import masked_lm_nll_and_hits


def _reference(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nll, argmax hits, d nll / d logits) of softmax cross-entropy, in float64."""
    wide = logits.astype(np.float64)
    shifted = wide - wide.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    one_hot = np.eye(logits.shape[-1])[targets]
    return nll, (logits.argmax(-1) == targets).astype(np.float32), np.exp(log_probs) - one_hot


def test_nll_hits_and_gradient_match_softmax_cross_entropy():
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(4, 5, 300)) * 3).astype(np.float32)
    targets = rng.integers(0, 300, size=(4, 5))
    targets[0, :3] = logits[0, :3].argmax(-1)  # some predictions right, so hits are not all zero
    nll, hits = masked_lm_nll_and_hits(jnp.asarray(logits), jnp.asarray(targets))
    want_nll, want_hits, want_grad = _reference(logits, targets)
    np.testing.assert_allclose(np.asarray(nll), want_nll, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(hits), want_hits)
    assert 3 <= want_hits.sum() < want_hits.size
    grad = jax.grad(lambda x: masked_lm_nll_and_hits(x, jnp.asarray(targets))[0].sum())(jnp.asarray(logits))
    np.testing.assert_allclose(np.asarray(grad), want_grad, atol=1e-6)


def test_large_logits_stay_finite_and_a_tie_for_the_maximum_counts_as_a_hit():
    logits = np.array([[1000.0, 1000.0, -5.0], [0.0, 2.0, 2.0]], np.float32)
    nll, hits = masked_lm_nll_and_hits(jnp.asarray(logits), jnp.asarray([1, 1]))
    np.testing.assert_allclose(np.asarray(nll), [np.log(2.0), np.log(2.0 + np.exp(-2.0))], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(hits), [1.0, 1.0])  # argmax would say 0 for the first row
