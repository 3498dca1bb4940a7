"""albert-jax's training step under recipe variants that must each have a process: XLA:CPU device counts above all.

The number of XLA:CPU devices is fixed when JAX starts, so two splits of the cores cannot share a process. This
benchmark starts one worker process per variant, each a set of gin bindings applied on top of the shared ones (by
default `host_devices.count=1` and `host_devices.count=2`: albert_jax/jobs/host_devices.py, which each worker
applies before JAX starts exactly as the train job does). Each compiles the step; then they take turns, one
timed step each, the others idle while one runs (a short pause before each step lets the idle workers' threads
stop spinning). A load that comes and goes on a shared machine then slows every variant alike; back-to-back runs
of the train job or of bench_train.py cannot tell a 5% difference apart on a noisy 2-core VM. The order
alternates each round. Prints each variant's median wall time, its quartiles, its median process-CPU time and
its ratio to the first variant's.

  python bench/bench_cpu_devices.py [--counts 1,2] [--rounds 60] [--gin_file=models/tiny.gin] [--batch 64]
  python bench/bench_cpu_devices.py --variant "AlbertConfig.scan_unroll=1" --variant "AlbertConfig.scan_unroll=2"
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
PAUSE_S = 0.05  # before each step: the other workers' spinning threads go to sleep


def worker(args: argparse.Namespace) -> None:
    """One variant: apply its bindings and process-start switches, build the step, say "ready", then run one timed
    step per line read from stdin."""
    from albert_jax import gin_setup
    from albert_jax.config import AlbertConfig
    from albert_jax.jobs import configurables, host_allocator, host_devices

    if not args.default_allocator:
        host_allocator.tune_for_xla_cpu()  # as bench_train.py and the CPU recipes, before JAX starts
    configurables.register_all()
    gin_setup.parse([args.gin_file], args.binding + shlex.split(args.worker))
    host_devices.host_devices()  # the recipe's switch, before JAX starts, as the train job applies it
    sys.path.insert(0, BENCH)
    import bench_train
    import gin
    import jax

    wanted = gin.get_bindings("host_devices").get("count", 1)
    if jax.local_device_count() != wanted:  # a variant must run what its name says
        raise SystemExit(f"variant {args.worker!r}: {wanted} XLA:CPU devices asked for, JAX has {jax.local_device_count()}")

    config = AlbertConfig()
    run = bench_train.jax_step(config, bench_train.synthetic_batch(args.batch, args.seq, args.predictions,
                                                                    config.vocab_size))
    for _ in range(2):  # compile, first allocations
        run()
    print("ready", flush=True)
    for _ in sys.stdin:
        start, cpu = time.perf_counter(), time.process_time()
        run()
        print(f"{time.perf_counter() - start} {time.process_time() - cpu}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="1,2",
                        help="comma-separated XLA:CPU device counts, one variant each (host_devices.count=N); "
                             "ratios are to the first")
    parser.add_argument("--variant", action="append", default=None, metavar="BINDINGS",
                        help="instead of --counts: one variant's gin bindings, space-separated, on top of --binding; "
                             "repeatable, ratios are to the first")
    parser.add_argument("--rounds", type=int, default=60, help="timed steps per variant")
    parser.add_argument("--gin_file", default="models/tiny.gin")
    parser.add_argument("--binding", action="append", default=None,
                        help="gin binding after --gin_file, repeatable (default: the demo recipe's: scale/demo.gin's "
                             "dots_saveable remat, demo.gin's 2 layers in one unrolled scan iteration)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--predictions", type=int, default=10)
    parser.add_argument("--default_allocator", action="store_true",
                        help="keep glibc's allocator defaults instead of the CPU recipes' tuning")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one worker's variant
    args = parser.parse_args()
    if args.binding is None:
        args.binding = ["AlbertConfig.remat_policy='dots_saveable'", "AlbertConfig.num_hidden_layers=2",
                        "AlbertConfig.scan_unroll=2"]
    if args.worker is not None:
        worker(args)
        return
    if args.variant:
        variants = args.variant
    else:
        try:
            counts = [int(c) for c in args.counts.split(",") if c]
        except ValueError:
            parser.error(f"--counts takes comma-separated device counts, got {args.counts!r}")
        if not counts or min(counts) < 1 or any(args.batch % c for c in counts):
            parser.error(f"--counts must be positive and divide --batch {args.batch}, got {args.counts!r}")
        variants = [f"host_devices.count={count}" for count in counts]
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")])))
    passed = [f"--gin_file={args.gin_file}", "--batch", str(args.batch), "--seq", str(args.seq), "--predictions",
              str(args.predictions), *(["--default_allocator"] if args.default_allocator else []),
              *(f"--binding={binding}" for binding in args.binding)]
    workers = [subprocess.Popen([sys.executable, os.path.abspath(__file__), *passed, f"--worker={variant}"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env) for variant in variants]
    for variant, process in zip(variants, workers):
        while (line := process.stdout.readline()) and line.strip() != "ready":
            pass
        if not line:
            raise SystemExit(f"the worker for {variant!r} ended before its step was ready (its error is above)")
    print(f"{args.gin_file} {' '.join(args.binding)}: batch {args.batch} x {args.seq}, {args.predictions} predictions, "
          f"{args.rounds} rounds; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    times: list[list[tuple[float, float]]] = [[] for _ in variants]
    for index in range(args.rounds):
        order = range(len(variants)) if index % 2 == 0 else reversed(range(len(variants)))
        for i in order:
            time.sleep(PAUSE_S)
            workers[i].stdin.write("step\n")
            workers[i].stdin.flush()
            wall, cpu = map(float, workers[i].stdout.readline().split())
            times[i].append((wall, cpu))
    for process in workers:
        process.stdin.close()
        process.wait()
    first = statistics.median(wall for wall, _ in times[0])
    for variant, samples in zip(variants, times):
        walls = [wall for wall, _ in samples]
        median = statistics.median(walls)
        quartiles = statistics.quantiles(walls, n=4) if len(walls) > 1 else [walls[0]] * 3
        print(f"{variant}: {median * 1e3:.1f} ms/step (quartiles {quartiles[0] * 1e3:.1f}-{quartiles[2] * 1e3:.1f}), "
              f"CPU {statistics.median(c for _, c in samples) * 1e3:.1f} ms, {median / first:.3f}x the time of "
              f"{variants[0]}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
