"""A tiny transformers AlbertForPreTraining with random weights, shared by the tests that need a reference model."""

from __future__ import annotations

import numpy as np
import torch
import transformers


def random_albert_for_pretraining(vocab_size: int, std: float, seed: int = 0) -> transformers.AlbertForPreTraining:
    """E 8, H 16, 2 layers, eval mode; LayerNorm scales in [0.5, 1.5], every other tensor normal(0, std)."""
    torch.manual_seed(seed)
    config = transformers.AlbertConfig(vocab_size=vocab_size, embedding_size=8, hidden_size=16, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                                       hidden_act="gelu_new", hidden_dropout_prob=0.0,
                                       attention_probs_dropout_prob=0.0, attn_implementation="eager")
    model = transformers.AlbertForPreTraining(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, std)
    return model


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
