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
  backward       backward() alone on that demo step's graph
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
import pygrad.nn
import pygrad.optim
from pygrad.demo import learning_rate, make_moons, sgd_step, svm_loss

SEED = 1337


@contextlib.contextmanager
def micrograd_nn_using(Value):
    """micrograd.nn, building its parameters as `Value` (micrograd's or pygrad's)."""
    saved = micrograd.nn.Value
    micrograd.nn.Value = Value
    try:
        yield micrograd.nn
    finally:
        micrograd.nn.Value = saved


def micrograd_model(Value, sizes):
    random.seed(SEED)
    with micrograd_nn_using(Value) as nn:
        return nn.MLP(2, sizes)


def pygrad_model(sizes):
    random.seed(SEED)
    return pygrad.nn.MLP(2, sizes)


def steady_state(step, warmup, steps):
    """Median time of `step(k)` after `warmup` untimed calls."""
    times = []
    for k in range(warmup + steps):
        start = time.perf_counter()
        step(k)
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:])


# --- the workloads: each returns seconds ---------------------------------------

def single_op(Value, number):
    a, b = Value(2.0), Value(3.0)
    return min(timeit.repeat(lambda: a * b, number=number, repeat=5)) / number


def demo_step_eager(model, Value, X, y, warmup, steps):
    return steady_state(lambda k: sgd_step(model, X, y, Value, k), warmup, steps)


def demo_step_optim(model, X, y, warmup, steps):
    optimizer = pygrad.optim.SGD(model.parameters(), lr=1.0)

    def step(k):
        loss, _ = svm_loss(model, X, y, pygrad.Value)
        optimizer.zero_grad()
        loss.backward()
        optimizer.lr = learning_rate(k)
        optimizer.step()
    return steady_state(step, warmup, steps)


def demo_step_replay(model, X, y, warmup, steps):
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
    return steady_state(step, warmup, steps)


def demo_step_torch(model, X, y, warmup, steps):
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
    return steady_state(step, warmup, steps)


def backward_only(model, Value, X, y, repeats):
    loss, _ = svm_loss(model, X, y, Value)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loss.backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_available():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


# --- the run --------------------------------------------------------------------

def run(mode):
    sizes = {"smoke": [4, 4, 1]}.get(mode, [16, 16, 1])
    n_points = 10 if mode == "smoke" else 100
    op_number = {"smoke": 1000, "quick": 100_000}.get(mode, 300_000)
    warmup, steps = {"smoke": (1, 1), "quick": (2, 3)}.get(mode, (2, 7))
    fast_steps = steps * 10  # the fast engines are timed over more steps
    X, y = make_moons(n_points, noise=0.1, seed=SEED)
    mg, pg = micrograd.engine.Value, pygrad.Value

    rows = [("a * b", "micrograd", single_op(mg, op_number)),
            ("a * b", "pygrad.Value", single_op(pg, op_number))]

    demo = f"demo step ({n_points} points, MLP(2, {sizes}))"
    rows += [
        (demo, "micrograd", demo_step_eager(micrograd_model(mg, sizes), mg, X, y, warmup, steps)),
        (demo, "pygrad.Value under micrograd.nn",
         demo_step_eager(micrograd_model(pg, sizes), pg, X, y, warmup, steps)),
        (demo, "pygrad.nn", demo_step_eager(pygrad_model(sizes), pg, X, y, warmup, fast_steps)),
        (demo, "pygrad.nn + optim.SGD", demo_step_optim(pygrad_model(sizes), X, y, warmup, fast_steps)),
        (demo, "pygrad Replay + optim.SGD",
         demo_step_replay(pygrad_model(sizes), X, y, warmup, fast_steps)),
    ]
    if torch_available():
        rows.append((demo, "torch float64 batched (1 thread)",
                     demo_step_torch(pygrad_model(sizes), X, y, warmup, fast_steps)))

    repeats = max(steps, 3)
    rows += [
        ("backward (demo graph)", "micrograd",
         backward_only(micrograd_model(mg, sizes), mg, X, y, repeats)),
        ("backward (demo graph)", "pygrad.Value under micrograd.nn",
         backward_only(micrograd_model(pg, sizes), pg, X, y, repeats)),
        ("backward (demo graph)", "pygrad.nn", backward_only(pygrad_model(sizes), pg, X, y, repeats)),
    ]
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


def fmt_time(seconds):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.2f} {unit}"
    return f"{seconds * 1e9:.0f} ns"


def table(rows, command):
    """Markdown: each time, and its speed-up over micrograd on the same workload."""
    baseline = {workload: t for workload, engine, t in rows if engine == "micrograd"}
    lines = [f"`{command}` on {machine()}", "",
             "| workload | engine | time | vs micrograd |", "|---|---|---:|---:|"]
    for workload, engine, t in rows:
        ratio = "1x" if engine == "micrograd" else f"**{baseline[workload] / t:,.1f}x**"
        lines.append(f"| {workload} | {engine} | {fmt_time(t)} | {ratio} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="fewer repeats")
    group.add_argument("--smoke", action="store_true", help="tiny sizes: checks it runs")
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    command = "python bench/bench.py" + {"smoke": " --smoke", "quick": " --quick"}.get(mode, "")
    rows = run(mode)
    print(table(rows, command))
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
