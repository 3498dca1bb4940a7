"""Random padded batches (numpy only) shared by the tests that compare against a reference model."""

from __future__ import annotations

import numpy as np


def padded_batch(vocab_size: int, seed: int, batch: int = 3, length: int = 12,
                 predictions: int = 3) -> dict[str, np.ndarray]:
    """Rows of real lengths `length`, 8 and 5 (the rest padding), two segments each, masked positions inside."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, (batch, length))
    mask = np.zeros((batch, length), np.int64)
    segments = np.zeros((batch, length), np.int64)
    positions = np.zeros((batch, predictions), np.int64)
    for row, real in enumerate((length, 8, 5)[:batch]):
        mask[row, :real] = 1
        segments[row, real // 2:real] = 1
        positions[row] = np.sort(rng.choice(np.arange(1, real), predictions, replace=False))
    ids[mask == 0] = 0
    return {"input_ids": ids, "input_mask": mask, "segment_ids": segments, "masked_lm_positions": positions}
