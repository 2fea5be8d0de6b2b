"""pygrad against micrograd, side by side in one run, printed as a table of ratios.

    python bench/bench.py            # full run
    python bench/bench.py --quick    # fewer repeats (the README's `make demo`)
    python bench/bench.py --smoke    # tiny sizes, for the test suite: checks it runs

Absolute times on shared machines mean little; the ratios, measured in the same
process on the same workload, are the result.  Workloads:

  a * b            one op on two leaves, result dropped (timeit)
  demo step        micrograd's demo: 100 two-moons points, MLP(2, [16, 16, 1]), SVM
                   loss + L2, forward + zero_grad + backward + SGD; steady state
                   (micrograd settles after two warm-up steps, once its cyclic
                   garbage is in play).  "pygrad" is micrograd's own nn classes
                   driving pygrad.Value, so only the engine differs.
  backward         backward() alone on that demo step's graph
"""
import argparse
import contextlib
import gc
import os
import platform
import random
import statistics
import sys
import time
import timeit

import micrograd.engine
import micrograd.nn

import pygrad
from pygrad.demo import make_moons, sgd_step, svm_loss

SEED = 1337
ENGINES = ("micrograd", "pygrad")


@contextlib.contextmanager
def micrograd_nn_using(Value):
    """micrograd.nn, building its parameters as `Value` (micrograd's or pygrad's)."""
    saved = micrograd.nn.Value
    micrograd.nn.Value = Value
    try:
        yield micrograd.nn
    finally:
        micrograd.nn.Value = saved


VALUE_CLASSES = {"micrograd": micrograd.engine.Value, "pygrad": pygrad.Value}


def make_model(engine, sizes):
    random.seed(SEED)
    with micrograd_nn_using(VALUE_CLASSES[engine]) as nn:
        return nn.MLP(2, sizes)


def time_single_op(engine, number):
    Value = VALUE_CLASSES[engine]
    a, b = Value(2.0), Value(3.0)
    runs = timeit.repeat(lambda: a * b, number=number, repeat=5)
    return min(runs) / number


def time_demo_steps(engine, X, y, sizes, warmup, steps):
    model = make_model(engine, sizes)
    Value = VALUE_CLASSES[engine]
    times = []
    for k in range(warmup + steps):
        start = time.perf_counter()
        sgd_step(model, X, y, Value, k)
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:])


def time_backward(engine, X, y, sizes, repeats):
    model = make_model(engine, sizes)
    loss, _ = svm_loss(model, X, y, VALUE_CLASSES[engine])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loss.backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def fmt_time(seconds):
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} us"
    return f"{seconds * 1e9:.0f} ns"


def print_table(rows, command):
    print(f"\n`{command}` on {machine()}\n")
    print("| workload | micrograd | pygrad | pygrad speed-up |")
    print("|---|---:|---:|---:|")
    for name, times in rows:
        ratio = times["micrograd"] / times["pygrad"]
        print(f"| {name} | {fmt_time(times['micrograd'])} | {fmt_time(times['pygrad'])} "
              f"| **{ratio:.1f}x** |")


def run(mode):
    sizes = {"smoke": [4, 4, 1]}.get(mode, [16, 16, 1])
    n_points = 10 if mode == "smoke" else 100
    op_number = {"smoke": 1000, "quick": 100_000}.get(mode, 300_000)
    warmup, steps = {"smoke": (1, 1), "quick": (2, 3)}.get(mode, (2, 7))
    X, y = make_moons(n_points, noise=0.1, seed=SEED)

    rows = []
    rows.append(("a * b", {e: time_single_op(e, op_number) for e in ENGINES}))
    rows.append((f"demo step ({n_points} points, MLP(2, {sizes}))",
                 {e: time_demo_steps(e, X, y, sizes, warmup, steps) for e in ENGINES}))
    rows.append(("backward (demo graph)",
                 {e: time_backward(e, X, y, sizes, max(steps, 3)) for e in ENGINES}))
    gc.collect()
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="fewer repeats")
    group.add_argument("--smoke", action="store_true", help="tiny sizes: checks it runs")
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    rows = run(mode)
    command = "python bench/bench.py" + {"smoke": " --smoke", "quick": " --quick"}.get(mode, "")
    print_table(rows, command)
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
