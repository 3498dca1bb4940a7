"""The model configuration: every knob the ALBERT paper and the released configs use.

One frozen dataclass, configurable from gin (`AlbertConfig.hidden_size = 768`). Field names follow the
released `albert_config.json` so that importing an official or transformers config is a plain mapping.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import gin
import jax.numpy as jnp

from albert_jax.gemm import WEIGHT_GRADIENT_PLANS

SHARING_MODES = ("all", "attention", "ffn", "none")
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")
ACTIVATIONS = ("gelu_new", "gelu", "relu", "tanh")
DTYPES = ("float32", "bfloat16", "float16")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class AlbertConfig:
    """Shape, numerics and sharing of one ALBERT (or BERT) encoder.

    Defaults are ALBERT-base v2. `sharing` and `num_hidden_groups` together say which weights are unique:
    `all` shares attention and FFN within each of the G groups; `attention` / `ffn` share only that block
    (the other one is unique per layer, paper Table 4); `none` makes every layer unique.
    """

    vocab_size: int = 30000
    embedding_size: int = 128  # E: width of the factorized embedding
    hidden_size: int = 768  # H
    num_hidden_layers: int = 12  # L
    num_attention_heads: int = 12
    intermediate_size: int = 3072  # FFN width
    hidden_act: str = "gelu_new"  # the original's "gelu" is the tanh approximation
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    num_hidden_groups: int = 1  # G: layer i uses group i * G // L
    sharing: str = "all"
    dtype: str = "float32"  # compute dtype of activations
    param_dtype: str = "float32"
    remat_policy: str = "none"
    scan_unroll: int = 1  # scan steps unrolled per loop iteration (1 = a rolled loop, L = fully unrolled)
    # How the encoder's dense layers get their weight gradients (albert_jax/gemm.py): "auto" (a transposed
    # activation that XLA:CPU's fast GEMM takes when compiling for CPU, autodiff's own plan on TPU/GPU),
    # "autodiff", "transposed_activation".
    weight_gradient_gemm: str = "auto"

    def __post_init__(self) -> None:
        errors = []

        def choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
            if value not in allowed:
                close = difflib.get_close_matches(value, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                errors.append(f"{name}={value!r} is not one of {allowed}{hint}")

        choice("sharing", self.sharing, SHARING_MODES)
        choice("remat_policy", self.remat_policy, REMAT_POLICIES)
        choice("hidden_act", self.hidden_act, ACTIVATIONS)
        choice("dtype", self.dtype, DTYPES)
        choice("param_dtype", self.param_dtype, DTYPES)
        choice("weight_gradient_gemm", self.weight_gradient_gemm, WEIGHT_GRADIENT_PLANS)
        for name in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "scan_unroll",
                     "num_attention_heads", "intermediate_size", "max_position_embeddings",
                     "type_vocab_size", "num_hidden_groups"):
            if getattr(self, name) < 1:
                errors.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.hidden_size % max(self.num_attention_heads, 1):
            errors.append(f"hidden_size={self.hidden_size} is not divisible by "
                          f"num_attention_heads={self.num_attention_heads}")
        if not 1 <= self.num_hidden_groups <= max(self.num_hidden_layers, 1):
            errors.append(f"num_hidden_groups={self.num_hidden_groups} must be between 1 and "
                          f"num_hidden_layers={self.num_hidden_layers}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                errors.append(f"{name}={getattr(self, name)} must be in [0, 1)")
        if errors:
            raise ValueError("Invalid AlbertConfig:\n  " + "\n  ".join(errors))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def has_embedding_projection(self) -> bool:
        """The original creates `embedding_hidden_mapping_in` only when E != H."""
        return self.embedding_size != self.hidden_size

    @property
    def num_attention_copies(self) -> int:
        """How many unique attention blocks (with their LayerNorm) the model holds."""
        return self.num_hidden_layers if self.sharing in ("ffn", "none") else self.num_hidden_groups

    @property
    def num_ffn_copies(self) -> int:
        """How many unique FFN blocks (with their LayerNorm) the model holds."""
        return self.num_hidden_layers if self.sharing in ("attention", "none") else self.num_hidden_groups

    @property
    def compute_dtype(self) -> Any:
        return jnp.dtype(self.dtype)

    @property
    def weight_dtype(self) -> Any:
        return jnp.dtype(self.param_dtype)

    def replace(self, **changes: Any) -> "AlbertConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def copy_table(num_copies: int, num_layers: int) -> tuple[int, ...]:
    """Which of `num_copies` unique weight copies each of `num_layers` layers uses.

    Groups (fewer copies than layers) follow the original exactly, float arithmetic included:
    group = int(i / L * G). With one copy per layer the answer is the identity: there the float form would,
    for some depths, send a layer to its neighbour's copy and leave one copy unused (15 / 22 * 22 is
    14.999...), an artefact we do not reproduce for unshared blocks.
    """
    if num_copies == num_layers:
        return tuple(range(num_layers))
    return tuple(int(i / num_layers * num_copies) for i in range(num_layers))


def copy_index(layer: Any, num_copies: int, num_layers: int) -> Any:
    """`copy_table(num_copies, num_layers)[layer]` for a Python int or a traced layer index."""
    table = copy_table(num_copies, num_layers)
    if isinstance(layer, int):
        return table[layer]
    return jnp.asarray(table, jnp.int32)[layer]
