"""pygrad against micrograd (and PyTorch), side by side in one run, as a table of ratios.

    python bench/bench.py            # full run
    python bench/bench.py --quick    # fewer repeats (the README's `make demo`)
    python bench/bench.py --smoke    # tiny sizes, for the test suite: checks it runs

Absolute times on shared machines mean little; the ratios, measured in the same
process on the same workload, are the result.  Workloads:

  a * b          one op on two leaves, result dropped (timeit)
  demo step      micrograd's demo: 100 two-moons points, MLP(2, [16, 16, 1]), SVM
                 loss + L2, forward + zero_grad + backward + SGD; steady state
                 (micrograd settles after two warm-up steps, once its cyclic
                 garbage is in play).  Engines:
                   micrograd                micrograd 0.1.0, as published
                   pygrad.Value             micrograd's own nn classes driving
                                            pygrad.Value: only the engine differs
                   pygrad.nn                the demo code with its imports changed
                   pygrad.nn + optim.SGD    ... and the update loop one C call
                   pygrad Replay            the step recorded once, replayed in C
                   torch float64 batched    the same MLP as one batched
                                            torch.nn.Sequential, 1 thread
  demo step, act='tanh'
                 the same step with MLP(2, [16, 16, 1], act='tanh') (micrograd
                 0.1.0 has no tanh, so the baseline is the first row):
                   pygrad.nn, Neuron subclass   its neurons of a Neuron subclass
                                            that overrides nothing, so pygrad.nn
                                            runs micrograd's Python for them (Value
                                            ops, then Value.tanh): the path a user
                                            who subclasses Neuron for tanh gets
                   pygrad.nn, fused             act='tanh' as is: C kernels
  backward       backward() alone on that demo step's graph
  deep chain     x = x * 1.0000001, N deep: build, backward, free (micrograd's
                 recursive backward fails near 1,000 deep)
  peak memory    extra peak RSS over 3 demo steps, each engine in its own process
"""
import argparse
import gc
import importlib.util
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import timeit

import micrograd.engine
import micrograd.nn

import pygrad
import pygrad.nn
import pygrad.optim
from pygrad.demo import learning_rate, make_moons, micrograd_nn_using, sgd_step, svm_loss

SEED = 1337


def micrograd_model(Value, sizes):
    random.seed(SEED)
    with micrograd_nn_using(Value) as nn:
        return nn.MLP(2, sizes)


def pygrad_model(sizes):
    random.seed(SEED)
    return pygrad.nn.MLP(2, sizes)


class PythonPathNeuron(pygrad.nn.Neuron):
    """Overrides nothing: pygrad.nn runs micrograd's Python for a subclass."""


def tanh_model(sizes, python_path=False):
    """pygrad.nn's MLP with act='tanh' (the same weights either way); with
    python_path, its neurons are PythonPathNeurons."""
    random.seed(SEED)
    model = pygrad.nn.MLP(2, sizes, act="tanh")
    if python_path:
        for layer in model.layers:
            for neuron in layer.neurons:
                neuron.__class__ = PythonPathNeuron
    return model


def steady_state(step, warmup, steps):
    """Median time of `step(k)` after `warmup` untimed calls."""
    times = []
    for k in range(warmup + steps):
        start = time.perf_counter()
        step(k)
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:])


# --- the demo step, engine by engine: each builder sets up and returns step(k) ---

def eager_step(model, Value, X, y):
    return lambda k: sgd_step(model, X, y, Value, k)


def optim_step(model, X, y):
    optimizer = pygrad.optim.SGD(model.parameters(), lr=1.0)

    def step(k):
        loss, _ = svm_loss(model, X, y, pygrad.Value)
        optimizer.zero_grad()
        loss.backward()
        optimizer.lr = learning_rate(k)
        optimizer.step()
    return step


def replay_step(model, X, y):
    """The demo loss with its inputs and labels as leaves, recorded once."""
    xs = [[pygrad.Value(a), pygrad.Value(b)] for a, b in X]
    ys = [pygrad.Value(label) for label in y]
    scores = list(map(model, xs))
    losses = [(1 + -yi * si).relu() for yi, si in zip(ys, scores)]
    loss = sum(losses) * (1.0 / len(losses)) + 1e-4 * sum(p * p for p in model.parameters())
    replay = pygrad.Replay(loss, inputs=[v for row in xs for v in row] + ys)
    optimizer = pygrad.optim.SGD(model.parameters(), lr=1.0)

    def step(k):
        replay.forward()
        replay.backward()
        optimizer.lr = learning_rate(k)
        optimizer.step()
    return step


def torch_step(model, X, y):
    import torch
    torch.set_num_threads(1)
    net = model.to_torch()
    Xt = torch.tensor(X, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64)
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)

    def step(k):
        scores = net(Xt).squeeze(1)
        loss = torch.relu(1 - yt * scores).mean()
        loss = loss + 1e-4 * sum((p * p).sum() for p in net.parameters())
        optimizer.zero_grad()
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(k)
        optimizer.step()
    return step


def torch_available():
    return importlib.util.find_spec("torch") is not None


MG, PG = micrograd.engine.Value, pygrad.Value
TANH_PYTHON = "pygrad.nn, Neuron subclass (micrograd's Python)"
SLOW_ENGINES = ("micrograd", "pygrad.Value under micrograd.nn", TANH_PYTHON)


def demo_engines():
    """name -> builder(sizes, X, y) returning step(k)."""
    engines = {
        "micrograd": lambda sz, X, y: eager_step(micrograd_model(MG, sz), MG, X, y),
        "pygrad.Value under micrograd.nn":
            lambda sz, X, y: eager_step(micrograd_model(PG, sz), PG, X, y),
        "pygrad.nn": lambda sz, X, y: eager_step(pygrad_model(sz), PG, X, y),
        "pygrad.nn + optim.SGD": lambda sz, X, y: optim_step(pygrad_model(sz), X, y),
        "pygrad Replay + optim.SGD": lambda sz, X, y: replay_step(pygrad_model(sz), X, y),
    }
    if torch_available():
        engines["torch float64 batched (1 thread)"] = \
            lambda sz, X, y: torch_step(pygrad_model(sz), X, y)
    return engines


def tanh_engines():
    """The demo step with act='tanh': micrograd's Python path, then the fused one."""
    return {
        TANH_PYTHON: lambda sz, X, y: eager_step(tanh_model(sz, python_path=True), PG, X, y),
        "pygrad.nn, fused": lambda sz, X, y: eager_step(tanh_model(sz), PG, X, y),
    }


# --- the other workloads: each returns seconds (None: the engine failed) -------

def single_op(Value, number):
    a, b = Value(2.0), Value(3.0)
    return min(timeit.repeat(lambda: a * b, number=number, repeat=5)) / number


def backward_only(model, Value, X, y, repeats):
    loss, _ = svm_loss(model, X, y, Value)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loss.backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def deep_chain(Value, depth):
    start = time.perf_counter()
    try:
        x = leaf = Value(1.0)
        for _ in range(depth):
            x = x * 1.0000001
        x.backward()
        assert leaf.grad > 0
        del x, leaf
    except RecursionError:
        return None
    return time.perf_counter() - start


def rss_kb(field):
    """VmRSS (now) or VmHWM (peak) of this process, in kB, from /proc."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def memory_probe(engine, sizes, n_points):
    """In this process: the peak RSS above the set-up, over 3 demo steps."""
    X, y = make_moons(n_points, noise=0.1, seed=SEED)
    step = demo_engines()[engine](sizes, X, y)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, so imports and set-up are not the peak
    baseline = rss_kb("VmRSS")
    for k in range(3):
        step(k)
    return (rss_kb("VmHWM") - baseline) * 1024


def peak_memory(engine, sizes, n_points):
    """memory_probe run in a fresh process, so engines do not share a peak."""
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-probe", engine,
         "--sizes", ",".join(map(str, sizes)), "--points", str(n_points)],
        capture_output=True, text=True, check=True)
    return int(result.stdout.split()[-1])


# --- the run --------------------------------------------------------------------

def run(mode):
    sizes = {"smoke": [4, 4, 1]}.get(mode, [16, 16, 1])
    n_points = 10 if mode == "smoke" else 100
    op_number = {"smoke": 1000, "quick": 100_000}.get(mode, 300_000)
    warmup, steps = {"smoke": (1, 1), "quick": (2, 3)}.get(mode, (2, 7))
    long_chain = {"smoke": 10_000, "quick": 1_000_000}.get(mode, 1_000_000)
    X, y = make_moons(n_points, noise=0.1, seed=SEED)
    rows = []  # (workload, engine, value, kind): kind "time" (s) or "memory" (bytes)

    for engine, Value in (("micrograd", MG), ("pygrad.Value", PG)):
        rows.append(("a * b", engine, single_op(Value, op_number), "time"))

    demo = f"demo step ({n_points} points, MLP(2, {sizes}))"
    tanh_demo = f"demo step, act='tanh' ({n_points} points, MLP(2, {sizes}))"
    for workload, engines in ((demo, demo_engines()), (tanh_demo, tanh_engines())):
        for engine, build in engines.items():
            measured = steps if engine in SLOW_ENGINES else steps * 10
            rows.append((workload, engine, steady_state(build(sizes, X, y), warmup, measured),
                         "time"))

    repeats = max(steps, 3)
    for engine, model, Value in (
            ("micrograd", micrograd_model(MG, sizes), MG),
            ("pygrad.Value under micrograd.nn", micrograd_model(PG, sizes), PG),
            ("pygrad.nn", pygrad_model(sizes), PG)):
        rows.append(("backward (demo graph)", engine,
                     backward_only(model, Value, X, y, repeats), "time"))

    for depth in (500, long_chain):
        for engine, Value in (("micrograd", MG), ("pygrad.Value", PG)):
            rows.append((f"deep chain, {depth:,} deep", engine, deep_chain(Value, depth), "time"))

    for engine in demo_engines():
        rows.append(("peak memory, 3 demo steps", engine, peak_memory(engine, sizes, n_points),
                     "memory"))
    gc.collect()
    return rows


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def fmt_value(value, kind):
    if value is None:
        return "fails (RecursionError)"
    if kind == "memory":
        return f"{value / 2**20:,.1f} MB"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value * 1e9:.0f} ns"


def baselines(rows):
    """workload -> the engine its rows are compared with: micrograd, or where
    micrograd has no row (act='tanh'), the workload's first row."""
    chosen = {workload: engine for workload, engine, _, _ in rows if engine == "micrograd"}
    for workload, engine, _, _ in rows:
        chosen.setdefault(workload, engine)
    return chosen


def table(rows, command):
    """Markdown: each measurement, and the baseline's divided by it on the same
    workload (how many times faster, or smaller)."""
    chosen = baselines(rows)
    baseline = {workload: v for workload, engine, v, _ in rows if engine == chosen[workload]}
    lines = [f"`{command}` on {machine()}", "",
             "| workload | engine | measured | vs micrograd |", "|---|---|---:|---:|"]
    for workload, engine, value, kind in rows:
        base = baseline.get(workload)
        if engine == chosen[workload] and value is not None:
            ratio = "1x"
        elif value is None or base is None or value <= 0:
            ratio = "-"
        else:
            ratio = f"**{base / value:,.1f}x**"
        lines.append(f"| {workload} | {engine} | {fmt_value(value, kind)} | {ratio} |")
    others = sorted({f"`{w}`: {e}" for w, e in chosen.items() if e != "micrograd"})
    if others:
        lines += ["", "Where micrograd has no row, the ratio is against the workload's first: "
                  + "; ".join(others) + "."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="fewer repeats")
    group.add_argument("--smoke", action="store_true", help="tiny sizes: checks it runs")
    parser.add_argument("--memory-probe", metavar="ENGINE", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="16,16,1", help=argparse.SUPPRESS)
    parser.add_argument("--points", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:  # the child process of peak_memory()
        sizes = [int(n) for n in args.sizes.split(",")]
        print(memory_probe(args.memory_probe, sizes, args.points))
        return []
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    command = "python bench/bench.py" + {"smoke": " --smoke", "quick": " --quick"}.get(mode, "")
    rows = run(mode)
    print(table(rows, command))
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
