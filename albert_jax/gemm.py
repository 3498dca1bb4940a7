"""The dense layers' contraction, with a backward pass that XLA:CPU runs on its fast GEMM.

Why a hand-written gradient
---------------------------
A dense layer's weight gradient contracts the input and the output gradient over the token axes, which are the
*major* axes of both ([tokens, in] and [tokens, out]). Autodiff hands XLA exactly that, and XLA:CPU (jaxlib
0.10) turns it into a transposed copy of the output gradient plus a dot whose left operand still contracts on
its major axis. YNNPACK, the CPU backend's fast GEMM, takes no such dot, so it falls back to Eigen: ~120 GFLOP/s
on this project's 2-core machine against ~180 for the same product in YNNPACK's layout (docs/PERF.md). At
ALBERT-base the two FFN weight gradients are a fifth of the step's FLOPs.

`dense_product` computes the same product with a custom VJP whose weight gradient transposes the *input* (one
activation-sized copy, as autodiff's plan makes of the output gradient) and keeps that transpose behind an
optimization barrier, so XLA cannot fold it back into the dot's dimension numbers. Every dot of the backward
then runs in YNNPACK, and the whole train step is 9-10% faster at the demo's shape and 5-9% at ALBERT-base
(docs/PERF.md; a lone layer's backward gains nothing: there Eigen's dot has both cores to itself). The values
are those of autodiff up to the GEMM's summation order.

Layers that narrow (the FFN output: 4H in, H out) would transpose their widest activation that way, and
XLA:CPU's transposes run at a few GB/s: at ALBERT-base that one copy per layer was 5% of the step's thread time.
`dense_product_transposed_kernel` transposes the narrower output gradient instead, which yields the weight
gradient as [*out, *in]; the encoder therefore carries such a kernel through its layer scan in that layout
(transposed once before the loop, its accumulated gradient once after it, albert_jax/model.py) instead of
transposing every layer's gradient back. `carries_transposed_kernel` says which layers do. That took the
ALBERT-base step from 1.07x, 0.96x, 1.05x to 1.19x, 1.10x, 1.18x of PyTorch's in same-hour runs (docs/PERF.md).

The tied MLM decoder (`tied_decoder_logits`) is such a transposed kernel too (the embedding table, [V, E]); its
table and bias gradients come from one GEMM against the E-wide input with a column of ones, so the [tokens, V]
logit gradient, the head's widest tensor, is neither transposed nor reduced separately (1-2% of the demo step).

Only for CPU: on TPU and GPU the dot units take any operand layout, and a materialized transpose behind a
barrier would cost memory traffic and block fusions. `resolve` picks the plan from the platform the program
is compiled for (the mesh in context, else the default backend), so an ahead-of-time TPU compile on a CPU host
keeps autodiff's plan.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array

# AlbertConfig.weight_gradient_gemm: how the dense layers' backward is planned.
WEIGHT_GRADIENT_PLANS = ("auto", "autodiff", "transposed_activation")


def compile_platform() -> str:
    """The platform the current trace is for: the mesh in context (`jax.set_mesh`) if any, else the default."""
    mesh = jax.sharding.get_abstract_mesh()
    device = getattr(mesh, "abstract_device", None)
    if not mesh.empty and device is not None and getattr(device, "platform", None):
        return device.platform
    return jax.default_backend()


def resolve(plan: str) -> str:
    """`auto` -> `transposed_activation` when compiling for CPU, `autodiff` otherwise; explicit plans pass through."""
    if plan != "auto":
        return plan
    return "transposed_activation" if compile_platform() == "cpu" else "autodiff"


def carries_transposed_kernel(plan: str, fan_in: int, fan_out: int) -> bool:
    """Whether a layer of this width uses `dense_product_transposed_kernel`: under the CPU plan, when it narrows."""
    return resolve(plan) == "transposed_activation" and fan_in > fan_out


def dense_product(x: Array, kernel: Array, num_in_axes: int, plan: str = "auto") -> Array:
    """`jnp.tensordot(x, kernel, num_in_axes)`: x [*tokens, *in] with kernel [*in, *out] -> [*tokens, *out].

    `plan` chooses the backward (module docstring); the forward is the same either way.
    """
    if resolve(plan) == "transposed_activation":
        return _product_transposed_input(x, kernel, num_in_axes)
    return jnp.tensordot(x, kernel, axes=num_in_axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _product_transposed_input(x: Array, kernel: Array, num_in_axes: int) -> Array:
    return jnp.tensordot(x, kernel, axes=num_in_axes)


def _forward(x: Array, kernel: Array, num_in_axes: int) -> tuple[Array, tuple[Array, Array]]:
    return jnp.tensordot(x, kernel, axes=num_in_axes), (x, kernel)


def _backward(num_in_axes: int, residuals: tuple[Array, Array], grad: Array) -> tuple[Array, Array]:
    x, kernel = residuals
    num_token_axes = x.ndim - num_in_axes
    token_axes = tuple(range(num_token_axes))
    out_axes = tuple(range(num_token_axes, grad.ndim))
    grad_x = jnp.tensordot(grad, kernel, axes=(out_axes, tuple(range(num_in_axes, kernel.ndim))))
    # [*in, *tokens]: the tokens become the minor (contracted) axes of the left operand, YNNPACK's layout.
    x_transposed = jax.lax.optimization_barrier(
        jnp.transpose(x, tuple(range(num_token_axes, x.ndim)) + token_axes))
    grad_kernel = jnp.tensordot(x_transposed, grad,
                                axes=(tuple(range(num_in_axes, x.ndim)), token_axes))
    return grad_x.astype(x.dtype), grad_kernel.astype(kernel.dtype)


_product_transposed_input.defvjp(_forward, _backward)


def _contract_in_axes(x: Array, kernel_t: Array, num_in_axes: int) -> Array:
    x_in = tuple(range(x.ndim - num_in_axes, x.ndim))
    kernel_in = tuple(range(kernel_t.ndim - num_in_axes, kernel_t.ndim))
    return jnp.tensordot(x, kernel_t, axes=(x_in, kernel_in))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dense_product_transposed_kernel(x: Array, kernel_t: Array, num_in_axes: int) -> Array:
    """`dense_product` for a kernel held transposed: x [*tokens, *in] with kernel_t [*out, *in] -> [*tokens, *out].

    The weight gradient comes out as [*out, *in] from a transposed *output gradient* (module docstring).
    """
    return _contract_in_axes(x, kernel_t, num_in_axes)


def _forward_transposed_kernel(x: Array, kernel_t: Array, num_in_axes: int) -> tuple[Array, tuple[Array, Array]]:
    # The product itself, not a call of the custom-VJP function: remat's dots_saveable then saves it.
    return _contract_in_axes(x, kernel_t, num_in_axes), (x, kernel_t)


def _backward_transposed_kernel(num_in_axes: int, residuals: tuple[Array, Array],
                                grad: Array) -> tuple[Array, Array]:
    x, kernel_t = residuals
    num_token_axes = x.ndim - num_in_axes
    num_out_axes = grad.ndim - num_token_axes
    token_axes = tuple(range(num_token_axes))
    grad_x = jnp.tensordot(grad, kernel_t, axes=num_out_axes)
    # The output gradient is materialized first: left to fuse into the transpose, its producer (the next
    # LayerNorm's backward) is recomputed there, in the transpose's strided order.
    grad_transposed = jax.lax.optimization_barrier(jnp.transpose(
        jax.lax.optimization_barrier(grad), tuple(range(num_token_axes, grad.ndim)) + token_axes))
    grad_kernel_t = jnp.tensordot(grad_transposed, x, axes=num_token_axes)
    return grad_x.astype(x.dtype), grad_kernel_t.astype(kernel_t.dtype)


dense_product_transposed_kernel.defvjp(_forward_transposed_kernel, _backward_transposed_kernel)


def tied_decoder_logits(x: Array, table: Array, bias: Array, plan: str = "auto") -> Array:
    """Logits against a tied embedding table: x [*tokens, E] with table [V, E] and bias [V] -> [*tokens, V].

    The table is the kernel held transposed, so autodiff's plan transposes the [tokens, V] logit gradient,
    the widest tensor of the head, for the table's gradient, and reduces it once more for the bias's. Under the
    CPU plan both gradients come from one GEMM instead: [x | 1]^T g, the narrow input with a column of ones
    appended (the ones row of the product is the bias's gradient), then one [E, V] transpose. `plan` as in
    `dense_product`; the forward is the same either way.
    """
    if resolve(plan) == "transposed_activation":
        return _tied_decoder_one_gemm_backward(x, table, bias)
    return _tied_decoder(x, table, bias)


def _tied_decoder(x: Array, table: Array, bias: Array) -> Array:
    return _contract_in_axes(x, table, 1) + bias


@jax.custom_vjp
def _tied_decoder_one_gemm_backward(x: Array, table: Array, bias: Array) -> Array:
    return _tied_decoder(x, table, bias)


def _tied_decoder_forward(x: Array, table: Array, bias: Array) -> tuple[Array, tuple[Array, Array]]:
    return _tied_decoder(x, table, bias), (x, table)


def _tied_decoder_backward(residuals: tuple[Array, Array], grad: Array) -> tuple[Array, Array, Array]:
    x, table = residuals
    vocab, width = table.shape
    grad_x = jnp.tensordot(grad, table, axes=1)
    tokens = x.reshape(-1, width)
    # [E + 1, tokens]: the tokens become the minor (contracted) axis, YNNPACK's layout (module docstring).
    inputs_and_ones = jax.lax.optimization_barrier(
        jnp.concatenate([tokens.T, jnp.ones((1, tokens.shape[0]), tokens.dtype)], axis=0))
    both = jnp.matmul(inputs_and_ones, grad.reshape(-1, vocab), preferred_element_type=jnp.float32)
    return grad_x.astype(x.dtype), both[:width].T.astype(table.dtype), both[width].astype(grad.dtype)


_tied_decoder_one_gemm_backward.defvjp(_tied_decoder_forward, _tied_decoder_backward)
