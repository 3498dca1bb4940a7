"""Model description without allocating it: parameter counts per component and analytic training FLOPs.

Shapes come from `jax.eval_shape` of the real init, so the numbers are the model's own and `--describe` on
xxlarge runs in seconds.
"""

from __future__ import annotations

import math
from typing import Any

import gin
import jax

from albert_jax.config import AlbertConfig
from albert_jax.model import param_shapes


def _count(tree: Any) -> int:
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def component_counts(config: AlbertConfig) -> dict[str, int]:
    """Parameters per component. Attention and FFN include their LayerNorms (as the paper's tables do)."""
    shapes = param_shapes(config)
    albert = shapes["albert"]
    layer = albert["encoder"]["shared_layer"]
    attention_keys = ("query", "key", "value", "attention_output", "attention_layer_norm")
    ffn_keys = ("ffn", "ffn_output", "ffn_layer_norm")
    return {
        "embeddings": _count(albert["embeddings"]),
        "embedding_projection": _count(albert["encoder"].get("embedding_projection", {})),
        "attention": _count([layer[k] for k in attention_keys]),
        "ffn": _count([layer[k] for k in ffn_keys]),
        "pooler": _count(albert["pooler"]),
        "mlm_head": _count([shapes[k] for k in ("mlm_dense", "mlm_layer_norm", "mlm_output_bias")]),
        "sentence_head": _count(shapes["sentence_classifier"]),
    }


def train_flops_per_token(config: AlbertConfig, seq_length: int, max_predictions_per_seq: int) -> float:
    """Training FLOPs per input token: 3x the forward pass (forward + backward), counting matmuls only.

    Forward per token: 2 x (E*H projection + L x (4H^2 + 2*H*FFN)) + 4*L*S*H for QK^T and AV; the MLM head
    runs only on the P masked positions of each sequence, the pooler and sentence head once per sequence.
    Sharing changes parameters, not compute.
    """
    e, h, f, layers = config.embedding_size, config.hidden_size, config.intermediate_size, config.num_hidden_layers
    projection = e * h if config.has_embedding_projection else 0
    per_token = 2 * (projection + layers * (4 * h * h + 2 * h * f)) + 4 * layers * seq_length * h
    mlm_head = 2 * (h * e + e * config.vocab_size) * max_predictions_per_seq / seq_length
    sequence_heads = 2 * (h * h + 2 * h) / seq_length
    return 3.0 * (per_token + mlm_head + sequence_heads)


@gin.configurable
def describe(seq_length: int = 512, max_predictions_per_seq: int = 20) -> dict[str, Any]:
    """The `--describe` report for the gin-configured model."""
    config = AlbertConfig()
    parts = component_counts(config)
    encoder = sum(parts[k] for k in ("embeddings", "embedding_projection", "attention", "ffn", "pooler"))
    return {
        "config": config.to_dict(),
        "params": encoder,
        "params_with_heads": encoder + parts["mlm_head"] + parts["sentence_head"],
        "components": parts,
        "unique_attention_blocks": config.num_attention_copies,
        "unique_ffn_blocks": config.num_ffn_copies,
        "seq_length": seq_length,
        "max_predictions_per_seq": max_predictions_per_seq,
        "train_flops_per_token": train_flops_per_token(config, seq_length, max_predictions_per_seq),
    }
