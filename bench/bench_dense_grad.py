"""One dense layer's backward on XLA:CPU under the two weight-gradient plans of albert_jax/gemm.py, side by side.

For each of ALBERT-base's encoder dense shapes (tokens x in -> out), times the jitted backward (input gradient
and weight gradient from a fixed cotangent) under autodiff's plan and under the transposed-input plan, the two
taking turns step by step, and says which library XLA:CPU gave each plan's weight-gradient dot (YNNPACK when it
is a `__ynn_fusion`, else Eigen's dot thunk).

  python bench/bench_dense_grad.py --tokens 1024 --repeats 20
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1024, help="batch x length (ALBERT-base bench: 8 x 128)")
    parser.add_argument("--repeats", type=int, default=20, help="timed backward passes per plan")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}; tokens {args.tokens}; "
          f"median of {args.repeats} alternating runs")
    print(f"{'layer':26s} {'plan':18s} {'weight-grad dot':>15s} {'ms':>7s} {'GFLOP/s':>8s}")
    for name, (width_in, width_out) in SHAPES.items():
        x = jnp.asarray(rng.normal(size=(args.tokens, width_in)).astype(np.float32))
        kernel = jnp.asarray(rng.normal(size=(width_in, width_out)).astype(np.float32))
        cotangent = jnp.asarray(rng.normal(size=(args.tokens, width_out)).astype(np.float32))
        runs, libraries = {}, {}
        for plan in PLANS:
            backward = jax.jit(lambda a, b, g, plan=plan: jax.vjp(
                lambda a_, b_: gemm.dense_product(a_, b_, 1, plan), a, b)[1](g))
            compiled = backward.lower(x, kernel, cotangent).compile().as_text()
            libraries[plan] = "Eigen" if hlo_stats.dots_outside_ynnpack(compiled) else "YNNPACK"
            jax.block_until_ready(backward(x, kernel, cotangent))
            runs[plan] = backward
        times: dict[str, list[float]] = {plan: [] for plan in PLANS}
        for _ in range(args.repeats):
            for plan in PLANS:
                start = time.perf_counter()
                jax.block_until_ready(runs[plan](x, kernel, cotangent))
                times[plan].append(time.perf_counter() - start)
        flops = 2 * 2 * args.tokens * width_in * width_out  # input gradient + weight gradient
        medians = {plan: statistics.median(times[plan]) for plan in PLANS}
        for plan in PLANS:
            print(f"{name:26s} {plan:18s} {libraries[plan]:>15s} {medians[plan] * 1e3:7.1f} "
                  f"{flops / medians[plan] / 1e9:8.1f}")
        print(f"{name:26s} speed-up of the transposed input over autodiff: "
              f"{medians['autodiff'] / medians['transposed_input']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
