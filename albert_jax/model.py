"""ALBERT in Flax: factorized embeddings, one scanned shared layer, pooler, MLM and sentence heads.

Cross-layer sharing inside one `nn.scan`
----------------------------------------
The encoder is `nn.scan` over a single `SharedLayer` with `variable_broadcast='params'`: its parameters are
created once, outside the loop, and every step sees all of them. Each weight family (the attention block with
its LayerNorm, the FFN block with its LayerNorm) is stored as a stack of its *unique* copies on a leading
`layers` axis, and scan step i (the layer index is the scanned input) picks copy `i * n // L` of a stack of
n copies. That single rule expresses every sharing scheme of the paper:

  sharing      attention copies   FFN copies
  all          G                  G           (G = num_hidden_groups; G = 1 is ALBERT)
  attention    G                  L           (paper Table 4, "shared-attention")
  ffn          L                  G           (paper Table 4, "shared-FFN")
  none         L                  L           (BERT)

so the parameter tree holds exactly the unique weights, the scan body stays one traced layer (compile time flat
in depth), and with n = L the pick is the identity (`i * L // L = i`) while with n = 1 it is always copy 0.
Flax's `Dense`/`LayerNorm` cannot hold a stack indexed by a traced layer number, hence the small
`StackedDense`/`StackedLayerNorm` below.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from albert_jax.config import AlbertConfig, copy_index
from albert_jax.gemm import (carries_transposed_kernel, dense_product, dense_product_transposed_kernel,
                             tied_decoder_logits)

Array = jax.Array


def truncated_normal(stddev: float) -> Callable[..., Array]:
    """The original's init: a normal of std `stddev` truncated at two std (TF1 semantics, not rescaled)."""

    def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        return (stddev * jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)).astype(dtype)

    return init


def activation(name: str) -> Callable[[Array], Array]:
    return {
        "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),
        "relu": jax.nn.relu,
        "tanh": jnp.tanh,
    }[name]


def boxed(init: Callable[..., Array], axes: tuple[str | None, ...]) -> Callable[..., Any]:
    return nn.with_logical_partitioning(init, axes)


def layer_norm(x: Array, scale: Array, bias: Array, eps: float, dtype: Any) -> Array:
    """LayerNorm with statistics in float32 whatever the compute dtype."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(dtype)


def pick(stack: Array, copy: Array) -> Array:
    """Copy `copy` of a parameter stack; a static slice when there is only one copy."""
    if stack.shape[0] == 1:
        return stack[0]
    return jax.lax.dynamic_index_in_dim(stack, copy, axis=0, keepdims=False)


class StackedDense(nn.Module):
    """A dense layer holding `num_copies` unique weight copies; `__call__` uses the one layer `layer` maps to.

    `kernel_transposed`: the stack arrives as [copies, *out, *in], the layout the encoder carries a narrowing
    layer's kernel through the scan in on CPU (`transpose_ffn_output_kernel`); parameters are always stored and
    initialized as [copies, *in, *out].
    """

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    num_copies: int
    kernel_axes: tuple[str | None, ...]
    bias_axes: tuple[str | None, ...]
    config: AlbertConfig
    kernel_transposed: bool = False

    def setup(self) -> None:
        cfg = self.config
        shape, axes = self.in_shape + self.out_shape, self.kernel_axes
        if self.kernel_transposed:
            num_in = len(self.in_shape)
            shape, axes = self.out_shape + self.in_shape, axes[num_in:] + axes[:num_in]
        self.kernel = self.param("kernel", boxed(truncated_normal(cfg.initializer_range), ("layers",) + axes),
                                 (self.num_copies,) + shape, cfg.weight_dtype)
        self.bias = self.param("bias", boxed(nn.initializers.zeros, ("layers",) + self.bias_axes),
                               (self.num_copies,) + self.out_shape, cfg.weight_dtype)

    def weights(self, layer: Array) -> tuple[Array, Array]:
        """(kernel, bias) of the copy `layer` uses, in the compute dtype."""
        cfg = self.config
        copy = copy_index(layer, self.num_copies, cfg.num_hidden_layers)
        return pick(self.kernel, copy).astype(cfg.compute_dtype), pick(self.bias, copy).astype(cfg.compute_dtype)

    def __call__(self, x: Array, layer: Array) -> Array:
        kernel, bias = self.weights(layer)
        x = x.astype(self.config.compute_dtype)
        if self.kernel_transposed:
            return dense_product_transposed_kernel(x, kernel, len(self.in_shape)) + bias
        return dense_product(x, kernel, len(self.in_shape), self.config.weight_gradient_gemm) + bias


def fused_projections(x: Array, denses: tuple[StackedDense, ...], layer: Array) -> tuple[Array, ...]:
    """`tuple(dense(x, layer) for dense in denses)` as one matmul against the kernels stacked side by side.

    One [tokens, in] x [in, n * out] product (and one of each in the backward: the input gradient, the weight
    gradient) instead of n narrower ones: on XLA:CPU the query/key/value projections run at a markedly higher
    GEMM rate that way (docs/PERF.md). The parameters stay separate (the stack is made inside the step; with
    shared weights it is loop-invariant, so XLA hoists it out of the layer scan). The backward follows the
    layers' `weight_gradient_gemm` plan (albert_jax/gemm.py).
    """
    pairs = [dense.weights(layer) for dense in denses]
    kernel = jnp.stack([k for k, _ in pairs], axis=1)  # [in, n, *out]
    bias = jnp.stack([b for _, b in pairs], axis=0)  # [n, *out]
    y = dense_product(x.astype(kernel.dtype), kernel, 1, denses[0].config.weight_gradient_gemm) + bias
    return tuple(y[:, :, i] for i in range(len(denses)))


class StackedLayerNorm(nn.Module):
    """LayerNorm over the hidden width with `num_copies` unique (scale, bias) pairs."""

    num_copies: int
    config: AlbertConfig

    @nn.compact
    def __call__(self, x: Array, layer: Array) -> Array:
        cfg = self.config
        shape = (self.num_copies, cfg.hidden_size)
        scale = self.param("scale", boxed(nn.initializers.ones, ("layers", "hidden")), shape, cfg.weight_dtype)
        bias = self.param("bias", boxed(nn.initializers.zeros, ("layers", "hidden")), shape, cfg.weight_dtype)
        copy = copy_index(layer, self.num_copies, cfg.num_hidden_layers)
        return layer_norm(x, pick(scale, copy), pick(bias, copy), cfg.layer_norm_eps, cfg.compute_dtype)


class SharedLayer(nn.Module):
    """One post-LN transformer block; the scan body. Signature (carry, layer index, mask) -> (carry, None).

    `ffn_output_transposed`: the FFN output's kernel arrives transposed (`Encoder`, albert_jax/gemm.py).
    """

    config: AlbertConfig
    deterministic: bool = True
    ffn_output_transposed: bool = False

    @nn.compact
    def __call__(self, hidden: Array, layer: Array, attention_mask: Array) -> tuple[Array, None]:
        cfg = self.config
        heads, head_dim, width = cfg.num_attention_heads, cfg.head_dim, cfg.hidden_size
        n_attn, n_ffn = cfg.num_attention_copies, cfg.num_ffn_copies
        hidden = nn.with_logical_constraint(hidden, ("batch", "length", "hidden"))

        projections = tuple(StackedDense((width,), (heads, head_dim), n_attn, ("hidden", "heads", "kv"),
                                         ("heads", "kv"), cfg, name=name) for name in ("query", "key", "value"))
        query, key, value = (nn.with_logical_constraint(y, ("batch", "length", "heads", "kv"))
                             for y in fused_projections(hidden, projections, layer))
        mask = attention_mask[:, None, None, :].astype(bool)  # [batch, 1, 1, keys]: padding keys masked out
        if cfg.attention_probs_dropout_prob > 0.0 and not self.deterministic:
            # Attention dropout needs the probabilities, which the fused kernel never materializes.
            context = nn.dot_product_attention(query, key, value, mask=mask,
                                               dropout_rate=cfg.attention_probs_dropout_prob,
                                               dropout_rng=self.make_rng("dropout"), deterministic=False,
                                               dtype=cfg.compute_dtype)
        else:
            context = jax.nn.dot_product_attention(query, key, value, mask=mask)
        attention_out = StackedDense((heads, head_dim), (width,), n_attn, ("heads", "kv", "hidden"), ("hidden",),
                                     cfg, name="attention_output")(context, layer)
        attention_out = nn.Dropout(cfg.hidden_dropout_prob)(attention_out, deterministic=self.deterministic)
        hidden = StackedLayerNorm(n_attn, cfg, name="attention_layer_norm")(hidden + attention_out, layer)

        intermediate = StackedDense((width,), (cfg.intermediate_size,), n_ffn, ("hidden", "mlp"), ("mlp",), cfg,
                                    name="ffn")(hidden, layer)
        intermediate = nn.with_logical_constraint(activation(cfg.hidden_act)(intermediate),
                                                  ("batch", "length", "mlp"))
        ffn_out = StackedDense((cfg.intermediate_size,), (width,), n_ffn, ("mlp", "hidden"), ("hidden",), cfg,
                               kernel_transposed=self.ffn_output_transposed, name="ffn_output")(intermediate, layer)
        ffn_out = nn.Dropout(cfg.hidden_dropout_prob)(ffn_out, deterministic=self.deterministic)
        hidden = StackedLayerNorm(n_ffn, cfg, name="ffn_layer_norm")(hidden + ffn_out, layer)
        return nn.with_logical_constraint(hidden, ("batch", "length", "hidden")), None


REMAT_POLICIES: dict[str, Any] = {
    "full": None,  # save nothing, recompute the whole layer
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def dense(features: int, axes: tuple[str | None, str | None], cfg: AlbertConfig, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, name=name,
                    kernel_init=boxed(truncated_normal(cfg.initializer_range), axes),
                    bias_init=boxed(nn.initializers.zeros, (axes[1],)))


def layer_norm_module(axis: str, cfg: AlbertConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
                        scale_init=boxed(nn.initializers.ones, (axis,)),
                        bias_init=boxed(nn.initializers.zeros, (axis,)), name=name)


class Embeddings(nn.Module):
    """Word + position + token-type embeddings at width E, summed, LayerNorm, dropout."""

    config: AlbertConfig

    def setup(self) -> None:
        cfg = self.config
        init = truncated_normal(cfg.initializer_range)
        self.word_embeddings = self.param("word_embeddings", boxed(init, ("vocab", "embed")),
                                          (cfg.vocab_size, cfg.embedding_size), cfg.weight_dtype)
        self.position_embeddings = self.param("position_embeddings", boxed(init, (None, "embed")),
                                              (cfg.max_position_embeddings, cfg.embedding_size), cfg.weight_dtype)
        self.token_type_embeddings = self.param("token_type_embeddings", boxed(init, (None, "embed")),
                                                (cfg.type_vocab_size, cfg.embedding_size), cfg.weight_dtype)
        self.layer_norm = layer_norm_module("embed", cfg, "layer_norm")
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def __call__(self, input_ids: Array, segment_ids: Array, deterministic: bool) -> Array:
        cfg = self.config
        length = input_ids.shape[1]
        x = (jnp.take(self.word_embeddings, input_ids, axis=0)
             + self.position_embeddings[None, :length]
             + jnp.take(self.token_type_embeddings, segment_ids, axis=0))
        x = self.layer_norm(x.astype(cfg.compute_dtype))
        x = self.dropout(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))

    def attend(self, x: Array, bias: Array) -> Array:
        """Logits against the tied word-embedding table: x @ word_embeddings^T + bias (albert_jax/gemm.py)."""
        cfg = self.config
        return tied_decoder_logits(x.astype(cfg.compute_dtype), self.word_embeddings.astype(cfg.compute_dtype),
                                   bias.astype(cfg.compute_dtype), cfg.weight_gradient_gemm)


class Encoder(nn.Module):
    """E->H projection (only when E != H), then `nn.scan` of the shared layer over L steps."""

    config: AlbertConfig

    @nn.compact
    def __call__(self, embedded: Array, attention_mask: Array, deterministic: bool = True) -> Array:
        cfg = self.config
        hidden = embedded
        if cfg.has_embedding_projection:
            hidden = dense(cfg.hidden_size, ("embed", "hidden"), cfg, "embedding_projection")(hidden)
        layer_cls: Any = SharedLayer
        if cfg.remat_policy != "none":
            layer_cls = nn.remat(SharedLayer, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=False)
        scanned = nn.scan(layer_cls, variable_broadcast="params", split_rngs={"params": False, "dropout": True},
                          in_axes=(0, nn.broadcast), length=cfg.num_hidden_layers,
                          unroll=min(cfg.scan_unroll, cfg.num_hidden_layers))
        ffn_output_transposed = False
        if not self.is_initializing():
            # Applied outermost first: the FSDP gather sees the stored layout, the transpose comes after it.
            ffn_output_transposed = carries_transposed_kernel(cfg.weight_gradient_gemm, cfg.intermediate_size,
                                                              cfg.hidden_size)
            if ffn_output_transposed:
                scanned = nn.map_variables(scanned, "params", trans_in_fn=transpose_ffn_output_kernel)
            axes = nn.get_partition_spec(abstract_params(cfg))["albert"]["encoder"]["shared_layer"]
            scanned = nn.map_variables(scanned, "params", trans_in_fn=functools.partial(
                gather_shared_stacks, axes=axes, num_layers=cfg.num_hidden_layers))
        layers = jnp.arange(cfg.num_hidden_layers, dtype=jnp.int32)
        hidden, _ = scanned(cfg, deterministic, ffn_output_transposed, name="shared_layer")(
            hidden, layers, attention_mask)
        return hidden


def transpose_ffn_output_kernel(variables: Any) -> Any:
    """The FFN output's kernel stack [copies, 4H, H] as [copies, H, 4H], for the layer scan (albert_jax/gemm.py).

    Done once per step outside the loop, so the loop accumulates the kernel's gradient in this layout and its
    transpose back (autodiff's, of this function) also runs once per step.
    """
    params = dict(variables["params"])
    ffn_output = dict(params["ffn_output"])
    ffn_output["kernel"] = jnp.swapaxes(nn.unbox(ffn_output["kernel"]), 1, 2)
    params["ffn_output"] = ffn_output
    return dict(variables, params=params)


# Mesh axes that shard a parameter only to save memory (FSDP); tensor parallelism keeps its split.
GATHERED_MESH_AXES = ("fsdp", "data")


def gather_shared_stacks(variables: Any, axes: Any, num_layers: int) -> Any:
    """Un-shards (over the FSDP axes) every weight stack that several layers share, before the layer scan.

    A stack with fewer copies than layers is read by several scan steps. Left FSDP-sharded, XLA all-gathers it
    inside the loop, once per layer, and reduce-scatters its gradient once per layer in the backward loop;
    constrained here, outside the loop, the all-gather runs once per step and its transpose (the gradient
    reduce-scatter) once too. Unshared stacks (one copy per layer) are left alone: each step gathers only its
    own copy. `axes`: the layer's logical partition specs (its parameters arrive unboxed). Without a mesh and
    rules in context the constraint is a no-op.
    """
    rules = nn.get_logical_axis_rules()

    def gathered_names(names: tuple[Any, ...]) -> tuple[Any, ...]:
        out = []
        for name in names:
            mesh_axes = nn.logical_to_mesh_axes((name,), rules)[0]
            mesh_axes = mesh_axes if isinstance(mesh_axes, tuple) else (mesh_axes,)
            out.append(None if any(axis in GATHERED_MESH_AXES for axis in mesh_axes) else name)
        return tuple(out)

    def gather(spec: Any, value: Any) -> Any:
        if isinstance(value, nn.Partitioned):  # boxed parameters (straight from init) work too
            return value.replace_boxed(gather(spec, value.value))
        if value.shape[0] < num_layers:
            return nn.with_logical_constraint(value, gathered_names(tuple(spec)))
        return value

    params = jax.tree.map(gather, axes, variables["params"], is_leaf=lambda x: isinstance(x, PartitionSpec))
    return dict(variables, params=params)


class AlbertModel(nn.Module):
    """The encoder with pooler: returns (sequence_output [B,S,H], pooled_output [B,H])."""

    config: AlbertConfig

    def setup(self) -> None:
        cfg = self.config
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.pooler = dense(cfg.hidden_size, ("hidden", "mlp"), cfg, "pooler")

    def __call__(self, input_ids: Array, input_mask: Array, segment_ids: Array,
                 deterministic: bool = True) -> tuple[Array, Array]:
        embedded = self.embeddings(input_ids, segment_ids, deterministic)
        sequence = self.encoder(embedded, input_mask, deterministic)
        pooled = jnp.tanh(self.pooler(sequence[:, 0]))
        return sequence, pooled


class AlbertForPreTraining(nn.Module):
    """AlbertModel plus the MLM head (tied decoder, scored at masked positions) and the 2-way sentence head."""

    config: AlbertConfig

    def setup(self) -> None:
        cfg = self.config
        self.albert = AlbertModel(cfg)
        self.mlm_dense = dense(cfg.embedding_size, ("hidden", "embed"), cfg, "mlm_dense")
        self.mlm_layer_norm = layer_norm_module("embed", cfg, "mlm_layer_norm")
        self.mlm_output_bias = self.param("mlm_output_bias", boxed(nn.initializers.zeros, ("vocab",)),
                                          (cfg.vocab_size,), cfg.weight_dtype)
        self.sentence_classifier = dense(2, ("hidden", None), cfg, "sentence_classifier")

    def __call__(self, input_ids: Array, input_mask: Array, segment_ids: Array, masked_lm_positions: Array,
                 deterministic: bool = True) -> tuple[Array, Array]:
        """Returns (MLM logits [B, P, V] at `masked_lm_positions`, sentence logits [B, 2])."""
        sequence, pooled = self.albert(input_ids, input_mask, segment_ids, deterministic)
        return self.mlm_logits(sequence, masked_lm_positions), self.sentence_classifier(pooled)

    def mlm_logits(self, sequence: Array, positions: Array) -> Array:
        cfg = self.config
        gathered = jnp.take_along_axis(sequence, positions[..., None].astype(jnp.int32), axis=1)
        x = self.mlm_layer_norm(activation(cfg.hidden_act)(self.mlm_dense(gathered)))
        logits = self.albert.embeddings.attend(x, self.mlm_output_bias)
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


def init_params(config: AlbertConfig, rng: Array, batch_size: int = 1, seq_length: int = 8,
                num_predictions: int = 2) -> Any:
    """Boxed parameters of AlbertForPreTraining (wrap in jax.eval_shape to get shapes only).

    Jitted: op-by-op initialization of the scanned model is many times slower than one compiled call.
    """
    model = AlbertForPreTraining(config)
    ids = jnp.zeros((batch_size, seq_length), jnp.int32)
    positions = jnp.zeros((batch_size, num_predictions), jnp.int32)
    init = jax.jit(lambda key: model.init(key, ids, jnp.ones_like(ids), ids, positions, deterministic=True))
    return init(rng)["params"]


@functools.lru_cache(maxsize=16)
def abstract_params(config: AlbertConfig) -> Any:
    """AlbertForPreTraining's parameters as boxed ShapeDtypeStructs (logical axis names kept), nothing allocated.

    The one place the abstract tree is built: shardings (`nn.get_partition_spec`), the optimizer's stacked-leaf
    map, parameter counts and converters' expected shapes all derive from it. Cached: tracing costs ~0.5 s.
    """
    return jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))


def param_shapes(config: AlbertConfig) -> Any:
    """The unboxed abstract parameter tree (plain ShapeDtypeStructs)."""
    return nn.unbox(abstract_params(config))
