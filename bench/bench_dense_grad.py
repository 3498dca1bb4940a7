"""One dense layer's backward on XLA:CPU under the two weight-gradient plans of albert_jax/gemm.py, side by side.

For each of ALBERT-base's encoder dense shapes (tokens x in -> out), times the jitted backward (input gradient
and weight gradient from a fixed cotangent) under autodiff's plan and under the CPU plan (`transposed_activation`:
the input transposed, or for a narrowing layer the output gradient, its kernel held as [out, in] as the encoder
carries it), the two taking turns step by step, and says which library XLA:CPU gave each plan's weight-gradient
dot (YNNPACK when it is a `__ynn_fusion`, else Eigen's dot thunk).

  python bench/bench_dense_grad.py --tokens 1024 --repeats 20
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from albert_jax import gemm, hlo_stats

SHAPES = {  # name: (in width, out width) at ALBERT-base
    "query/key/value (fused)": (768, 2304),
    "attention output": (768, 768),
    "ffn": (768, 3072),
    "ffn output": (3072, 768),
}
PLANS = tuple(plan for plan in gemm.WEIGHT_GRADIENT_PLANS if plan != "auto")


def backward_under(plan: str, kernel: jax.Array):
    """One dense layer's jitted backward, (x, weight, cotangent) -> (grad x, grad weight), and its weight.

    The weight is the kernel as the encoder's layer loop holds it under `plan`: [out, in] for a narrowing layer
    under the CPU plan (its gradient then comes out in that layout, as the loop accumulates it), else [in, out].
    """
    if gemm.carries_transposed_kernel(plan, *kernel.shape):
        product = functools.partial(gemm.dense_product_transposed_kernel, num_in_axes=1)
        kernel = kernel.T
    else:
        product = functools.partial(gemm.dense_product, num_in_axes=1, plan=plan)
    return jax.jit(lambda a, b, g: jax.vjp(product, a, b)[1](g)), kernel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1024, help="batch x length (ALBERT-base bench: 8 x 128)")
    parser.add_argument("--repeats", type=int, default=20, help="timed backward passes per plan")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}; tokens {args.tokens}; "
          f"median of {args.repeats} alternating runs")
    print(f"{'layer':26s} {'plan':22s} {'weight-grad dot':>15s} {'ms':>7s} {'GFLOP/s':>8s}")
    for name, (width_in, width_out) in SHAPES.items():
        x = jnp.asarray(rng.normal(size=(args.tokens, width_in)).astype(np.float32))
        kernel = jnp.asarray(rng.normal(size=(width_in, width_out)).astype(np.float32))
        cotangent = jnp.asarray(rng.normal(size=(args.tokens, width_out)).astype(np.float32))
        runs, weights, libraries = {}, {}, {}
        for plan in PLANS:
            runs[plan], weights[plan] = backward_under(plan, kernel)
            compiled = runs[plan].lower(x, weights[plan], cotangent).compile().as_text()
            libraries[plan] = "Eigen" if hlo_stats.dots_outside_ynnpack(compiled) else "YNNPACK"
            jax.block_until_ready(runs[plan](x, weights[plan], cotangent))
        times: dict[str, list[float]] = {plan: [] for plan in PLANS}
        for _ in range(args.repeats):
            for plan in PLANS:
                start = time.perf_counter()
                jax.block_until_ready(runs[plan](x, weights[plan], cotangent))
                times[plan].append(time.perf_counter() - start)
        flops = 2 * 2 * args.tokens * width_in * width_out  # input gradient + weight gradient
        medians = {plan: statistics.median(times[plan]) for plan in PLANS}
        for plan in PLANS:
            print(f"{name:26s} {plan:22s} {libraries[plan]:>15s} {medians[plan] * 1e3:7.1f} "
                  f"{flops / medians[plan] / 1e9:8.1f}")
        print(f"{name:26s} speed-up of the CPU plan over autodiff: "
              f"{medians['autodiff'] / medians['transposed_activation']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
