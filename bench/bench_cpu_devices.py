"""albert-jax's training step with the host's cores split into N XLA:CPU devices, against other splits, interleaved.

The number of XLA:CPU devices is fixed when JAX starts, so two splits cannot share a process. This benchmark starts
one worker process per device count (`host_devices.count`, albert_jax/jobs/host_devices.py: the step runs
data-parallel over the devices), compiles the step in each, and then has them take turns, one timed step each,
the others idle while one runs (a short pause before each step lets the idle workers' threads stop spinning).
A load that comes and goes on a shared machine then slows every split alike; back-to-back runs of the
train job or of bench_train.py cannot tell a 5% difference apart on a noisy 2-core VM. The order alternates
each round. Prints each split's median wall time, its quartiles, its median process-CPU time and its ratio to
the first count's.

  python bench/bench_cpu_devices.py [--counts 1,2] [--rounds 60] [--gin_file=models/tiny.gin] [--batch 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
PAUSE_S = 0.05  # before each step: the other workers' spinning threads go to sleep


def worker(args: argparse.Namespace) -> None:
    """One device count: build the step, say "ready", then run one timed step per line read from stdin."""
    from albert_jax.jobs import host_allocator, host_devices

    if not args.default_allocator:
        host_allocator.tune_for_xla_cpu()  # as bench_train.py and the CPU recipes, before JAX starts
    host_devices.split_cpu_into_devices(args.worker)
    sys.path.insert(0, BENCH)
    import bench_train

    from albert_jax import gin_setup
    from albert_jax.config import AlbertConfig
    from albert_jax.jobs import configurables

    configurables.register_all()
    gin_setup.parse([args.gin_file], args.binding)
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
    parser.add_argument("--counts", default="1,2", help="comma-separated XLA:CPU device counts; ratios are to the first")
    parser.add_argument("--rounds", type=int, default=60, help="timed steps per count")
    parser.add_argument("--gin_file", default="models/tiny.gin")
    parser.add_argument("--binding", action="append", default=None,
                        help="gin binding after --gin_file, repeatable (default: the demo recipe's: scale/demo.gin's "
                             "dots_saveable remat, demo.gin's 2 layers in one unrolled scan iteration)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--predictions", type=int, default=10)
    parser.add_argument("--default_allocator", action="store_true",
                        help="keep glibc's allocator defaults instead of the CPU recipes' tuning")
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)  # internal: one worker's count
    args = parser.parse_args()
    if args.binding is None:
        args.binding = ["AlbertConfig.remat_policy='dots_saveable'", "AlbertConfig.num_hidden_layers=2",
                        "AlbertConfig.scan_unroll=2"]
    if args.worker:
        worker(args)
        return
    try:
        counts = [int(c) for c in args.counts.split(",") if c]
    except ValueError:
        parser.error(f"--counts takes comma-separated device counts, got {args.counts!r}")
    if not counts or min(counts) < 1 or any(args.batch % c for c in counts):
        parser.error(f"--counts must be positive and divide --batch {args.batch}, got {args.counts!r}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")])))
    passed = [f"--gin_file={args.gin_file}", "--batch", str(args.batch), "--seq", str(args.seq), "--predictions",
              str(args.predictions), *(["--default_allocator"] if args.default_allocator else []),
              *(f"--binding={binding}" for binding in args.binding)]
    workers = [subprocess.Popen([sys.executable, os.path.abspath(__file__), *passed, "--worker", str(count)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env) for count in counts]
    for count, process in zip(counts, workers):
        while (line := process.stdout.readline()) and line.strip() != "ready":
            pass
        if not line:
            raise SystemExit(f"the worker for {count} devices ended before its step was ready (its error is above)")
    print(f"{args.gin_file} {' '.join(args.binding)}: batch {args.batch} x {args.seq}, {args.predictions} predictions, "
          f"{args.rounds} rounds, counts {counts}; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    times: list[list[tuple[float, float]]] = [[] for _ in counts]
    for index in range(args.rounds):
        order = range(len(counts)) if index % 2 == 0 else reversed(range(len(counts)))
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
    for count, samples in zip(counts, times):
        walls = sorted(wall for wall, _ in samples)
        median = statistics.median(walls)
        quartiles = statistics.quantiles(walls, n=4) if len(walls) > 1 else [walls[0]] * 3
        print(f"{count} XLA:CPU device{'s' if count > 1 else ''}: {median * 1e3:.1f} ms/step (quartiles "
              f"{quartiles[0] * 1e3:.1f}-{quartiles[2] * 1e3:.1f}), CPU {statistics.median(c for _, c in samples) * 1e3:.1f} ms, "
              f"{median / first:.3f}x the time of {counts[0]}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
