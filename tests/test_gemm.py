"""The dense layers' CPU weight-gradient plan (albert_jax/gemm.py): same gradients, YNNPACK GEMMs, CPU only."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from albert_jax import aot, gemm, hardware, hlo_stats, losses, partitioning
from albert_jax.config import AlbertConfig
from albert_jax.model import AlbertForPreTraining, init_params

# (x shape, kernel shape, number of contracted input axes): a plain dense, the attention output ([heads,
# head_dim] in), the fused query/key/value projection ([3, heads, head_dim] out).
SHAPES = [((3, 5, 4), (4, 6), 1), ((2, 3, 2, 4), (2, 4, 5), 2), ((2, 3, 4), (4, 3, 2, 5), 1)]


@pytest.mark.parametrize("kernel_held", ["in_out", "out_in"])
@pytest.mark.parametrize("x_shape,kernel_shape,num_in", SHAPES)
def test_cpu_plan_gradients_match_a_float64_reference(x_shape, kernel_shape, num_in, kernel_held) -> None:
    """`dense_product` (kernel [*in, *out], input transposed) and `dense_product_transposed_kernel` (the same
    kernel held as [*out, *in], output gradient transposed): value and both gradients against float64 numpy."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=x_shape).astype(np.float32)
    kernel = rng.normal(size=kernel_shape).astype(np.float32)
    num_tokens = len(x_shape) - num_in
    out_shape = x_shape[:num_tokens] + kernel_shape[num_in:]
    cotangent = rng.normal(size=out_shape).astype(np.float32)
    out_first = list(range(num_in, len(kernel_shape))) + list(range(num_in))  # [*in, *out] -> [*out, *in]
    if kernel_held == "in_out":
        y, vjp = jax.vjp(lambda a, b: gemm.dense_product(a, b, num_in, "transposed_activation"), x, kernel)
        grad_x, grad_kernel = vjp(cotangent)
    else:
        y, vjp = jax.vjp(lambda a, b: gemm.dense_product_transposed_kernel(a, b, num_in), x,
                         np.transpose(kernel, out_first))
        grad_x, grad_kernel_t = vjp(cotangent)
        grad_kernel = np.transpose(grad_kernel_t, np.argsort(out_first))  # back to [*in, *out]
    x64, k64, g64 = (a.astype(np.float64) for a in (x, kernel, cotangent))
    out_axes = list(range(num_tokens, len(out_shape)))
    np.testing.assert_allclose(y, np.tensordot(x64, k64, axes=num_in), rtol=1e-5, atol=1e-5)
    kernel_out_axes = list(range(num_in, len(kernel_shape)))
    np.testing.assert_allclose(grad_x, np.tensordot(g64, k64, axes=(out_axes, kernel_out_axes)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_kernel, np.tensordot(x64, g64, axes=(list(range(num_tokens)),) * 2),
                               rtol=1e-5, atol=1e-5)


def test_only_narrowing_layers_carry_a_transposed_kernel_and_only_on_cpu() -> None:
    assert gemm.carries_transposed_kernel("transposed_activation", 3072, 768)
    assert not gemm.carries_transposed_kernel("transposed_activation", 768, 3072)
    assert not gemm.carries_transposed_kernel("transposed_activation", 768, 768)
    assert not gemm.carries_transposed_kernel("autodiff", 3072, 768)
    assert gemm.carries_transposed_kernel("auto", 3072, 768)  # compiling for this CPU


def pretraining_loss_grads(config: AlbertConfig, params, batch):
    model = AlbertForPreTraining(config)

    def loss(p):
        mlm, sentence = model.apply({"params": p}, batch["input_ids"], batch["input_mask"], batch["segment_ids"],
                                    batch["masked_lm_positions"])
        nll, _ = losses.masked_lm_nll_and_hits(mlm, batch["masked_lm_ids"])
        return (nll * batch["masked_lm_weights"]).sum() + jax.nn.log_softmax(sentence)[:, 0].sum()

    return jax.jit(jax.grad(loss))(params)


# The FFN output's kernel crosses the scan transposed under the CPU plan (intermediate 64 > hidden 32): as one
# shared copy, as one copy per group, and as one copy per layer (every FFN weight picked per scan step).
@pytest.mark.parametrize("sharing,groups", [("all", 1), ("all", 3), ("attention", 1)])
def test_both_plans_give_the_same_model_gradients(sharing: str, groups: int) -> None:
    config = AlbertConfig(vocab_size=97, embedding_size=16, hidden_size=32, num_hidden_layers=3,
                          num_attention_heads=4, intermediate_size=64, num_hidden_groups=groups, sharing=sharing)
    rng = np.random.default_rng(1)
    batch = {"input_ids": rng.integers(0, 97, (4, 12)).astype(np.int32), "input_mask": np.ones((4, 12), np.int32),
             "segment_ids": np.zeros((4, 12), np.int32), "masked_lm_positions": np.tile(np.arange(1, 4), (4, 1)),
             "masked_lm_ids": rng.integers(0, 97, (4, 3)).astype(np.int32),
             "masked_lm_weights": np.ones((4, 3), np.float32)}
    params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))
    by_autodiff = pretraining_loss_grads(config.replace(weight_gradient_gemm="autodiff"), params, batch)
    by_transpose = pretraining_loss_grads(config.replace(weight_gradient_gemm="transposed_activation"), params, batch)
    largest = max(float(np.abs(a).max()) for a in jax.tree.leaves(by_autodiff))
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(by_autodiff), jax.tree.leaves(by_transpose)):
        # Each leaf to 2e-6 of its own scale; a gradient that is zero in exact arithmetic (the key bias: softmax
        # ignores a constant shift of the scores) is rounding noise, held to 2e-6 of 1e-5 of the largest one.
        scale = max(float(np.abs(a).max()), 1e-5 * largest)
        np.testing.assert_allclose(b, a, rtol=0, atol=2e-6 * scale, err_msg=jax.tree_util.keystr(path))
    shared = by_autodiff["albert"]["encoder"]["shared_layer"]["ffn"]["kernel"]
    assert float(np.abs(shared).max()) > 0  # the encoder's weights do get gradient


def test_auto_picks_the_transposed_activation_only_when_compiling_for_cpu() -> None:
    assert jax.default_backend() == "cpu"
    assert gemm.resolve("auto") == "transposed_activation"
    assert gemm.resolve("autodiff") == "autodiff" and gemm.resolve("transposed_activation") == "transposed_activation"
    cpu_mesh = partitioning.make_mesh(partitioning.MeshConfig(data=1), jax.devices()[:1])
    with jax.set_mesh(cpu_mesh):
        assert gemm.resolve("auto") == "transposed_activation"
    # An ahead-of-time compile for a TPU slice runs on this CPU host but must keep autodiff's plan.
    tpu_devices = aot.slice_devices(hardware.parse_slice("v5e-4"))
    with jax.set_mesh(jax.sharding.Mesh(np.array(tpu_devices).reshape(4), ("data",))):
        assert gemm.compile_platform() == "tpu"
        assert gemm.resolve("auto") == "autodiff"


INTERMEDIATE = 256  # the FFN width of the compiled model below; its hidden width is 64, its batch 8 x 16


def compiled_pretraining_gradient(plan: str) -> str:
    """The optimized HLO text of a small model's pretraining gradient, as XLA:CPU compiles it."""
    config = AlbertConfig(vocab_size=97, embedding_size=16, hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=INTERMEDIATE, weight_gradient_gemm=plan)
    params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))
    model = AlbertForPreTraining(config)
    ids = jnp.zeros((8, 16), jnp.int32)

    def loss(p):
        mlm, sentence = model.apply({"params": p}, ids, jnp.ones_like(ids), ids, jnp.zeros((8, 4), jnp.int32))
        return mlm.sum() + sentence.sum()

    return jax.jit(jax.grad(loss)).lower(params).compile().as_text()


def eigen_dots_in_the_encoder(plan: str) -> list[str]:
    """The dots of the encoder's backward that XLA:CPU left to Eigen, in the compiled pretraining gradient."""
    text = compiled_pretraining_gradient(plan)
    # The encoder's backward matrix products; batched dots (attention scores and context) are not dense layers.
    return [dot.name for dot in hlo_stats.dots_outside_ynnpack(text)
            if "shared_layer" in dot.attrs and "transpose(" in dot.attrs and "lhs_batch_dims" not in dot.attrs]


def test_on_cpu_every_encoder_weight_gradient_runs_in_ynnpack() -> None:
    # Autodiff's plan leaves the weight gradients to Eigen (a dot contracting its left operand's major axis) ...
    assert eigen_dots_in_the_encoder("autodiff")
    # ... the transposed input hands every one of them to YNNPACK.
    assert eigen_dots_in_the_encoder("transposed_activation") == []


def wide_transposes_in_the_layer_loop(plan: str) -> list[str]:
    """Transposes inside the layer scan whose result leads with the FFN's width: a transposed [tokens, 4H]."""
    computations, _ = hlo_stats.parse_module(compiled_pretraining_gradient(plan))
    return [op.type_text for ops in computations.values() for op in ops
            if op.opcode == "transpose" and "while/body" in op.attrs
            and op.type_text.startswith(f"f32[{INTERMEDIATE},")]


def test_on_cpu_no_ffn_wide_activation_is_transposed_in_the_layer_loop() -> None:
    # Autodiff's plan transposes a [tokens, 4H] activation every layer (XLA:CPU's transposes are slow) ...
    assert wide_transposes_in_the_layer_loop("autodiff")
    # ... the CPU plan transposes only H-wide ones: the FFN output's kernel crosses the loop transposed instead.
    assert wide_transposes_in_the_layer_loop("transposed_activation") == []


@pytest.mark.parametrize("plan", ["autodiff", "transposed_activation"])
def test_tied_decoder_gradients_match_a_float64_reference(plan: str) -> None:
    """`tied_decoder_logits` under either plan (the CPU one takes the table's and bias's gradients from one GEMM
    against the input with a column of ones): value and all three gradients against float64 numpy."""
    rng = np.random.default_rng(2)
    x, table, bias = (rng.normal(size=shape).astype(np.float32) for shape in ((2, 3, 4), (7, 4), (7,)))
    cotangent = rng.normal(size=(2, 3, 7)).astype(np.float32)
    y, vjp = jax.vjp(lambda a, b, c: gemm.tied_decoder_logits(a, b, c, plan), x, table, bias)
    grad_x, grad_table, grad_bias = vjp(cotangent)
    x64, t64, b64, g64 = (a.astype(np.float64) for a in (x, table, bias, cotangent))
    np.testing.assert_allclose(y, x64 @ t64.T + b64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_x, g64 @ t64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_table, np.einsum("bpv,bpe->ve", g64, x64), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_bias, g64.sum(axis=(0, 1)), rtol=1e-5, atol=1e-5)


def vocab_by_token_tensors(plan: str) -> list[str]:
    """Tensors of the compiled pretraining gradient shaped [vocab, predicted tokens]: a transposed logit gradient."""
    computations, _ = hlo_stats.parse_module(compiled_pretraining_gradient(plan))
    return [op.type_text for ops in computations.values() for op in ops if op.type_text.startswith("f32[97,32]")]


def test_on_cpu_the_logit_gradient_is_not_transposed() -> None:
    # Autodiff's plan transposes the [8 x 4 predictions, 97] logit gradient for the tied table's gradient ...
    assert vocab_by_token_tensors("autodiff")
    # ... the CPU plan transposes the E-wide input instead (and its [E, V] product once).
    assert vocab_by_token_tensors("transposed_activation") == []
