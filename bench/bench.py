"""pygrad against micrograd, PyTorch and dense references, side by side in one
run, as a table of ratios.

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
                                            torch.nn.Sequential, 1 thread (eager)
                   numpy float64 batched    forward and backward written by hand
                                            with numpy matmuls, 1 BLAS thread
                   hand-written C           bench/dense_step.c: the same maths as
                                            dense loops, pygrad's compiler flags
  digits step    examples/digits.py's step: minibatches of 100 of its training
                 split of scikit-learn's 8x8 digits, MLP(64, [32, 10]), multiclass
                 hinge (one-hot leaves, so the graph does not depend on the
                 labels) + L2, SGD lr 0.01, the next minibatch every step.
                 pygrad.nn + optim.SGD (the graph rebuilt every step from plain
                 numbers), Replay (recorded once, fed), torch, numpy, C as above.
  batch 1,000    the same loss and engines (no eager pygrad.nn) on MLP(64, [128,
                 10]), batch 1,000 of random normal inputs and labels.
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

micrograd is not run on the digits and batch-1,000 workloads: a step there is
about 0.5 and 19 million micrograd nodes (at its demo-step rate, ~10 s and
~6 min a step); their ratios are against torch float64 instead.  Every engine
of a step workload starts from the same weights (random.seed, then
pygrad.nn.MLP or micrograd.nn.MLP) and sees the same data; the losses of its
first two steps (so the forward, and the backward and update in between) must
agree to 1e-9 relative across engines, or the run fails.

GFLOP/s (printed under the table) counts 6 * sum over layers of nin * nout *
batch flops per step: the forward, the grad into each layer's inputs and the
grad into its weights, each a dense product of nin * nout multiply-adds per
sample, a multiply-add being 2 flops (biases, ReLUs, the loss and the update
left out).  The peak it is compared with is measured in the same run: the best
of a few n x n float64 numpy matmuls on one BLAS thread (threadpoolctl).
"""
import argparse
import contextlib
import gc
import importlib.util
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import timeit
from typing import Callable, NamedTuple

import micrograd.engine
import micrograd.nn
import numpy as np

import pygrad
import pygrad.nn
import pygrad.optim

# The demo's data, loss and step, as the tests use them (tests/micrograd_demo.py).
sys.path.insert(1, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
import dense  # noqa: E402
from micrograd_demo import (  # noqa: E402
    learning_rate,
    make_moons,
    micrograd_nn_using,
    sgd_step,
    svm_loss,
    svm_loss_on,
)

SEED = 1337
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGREE = 1e-9  # relative: how close every engine's loss must be on the first two steps


def load_example(name):
    """examples/<name>.py as a module (its loss and its recorded step are timed here)."""
    path = os.path.join(ROOT, "examples", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


digits = load_example("digits")


class Workload(NamedTuple):
    """One training step, the same for every engine."""
    title: str
    sizes: list                  # MLP(sizes[0], sizes[1:])
    loss: str                    # "svm": the demo's; "hinge": examples/digits.py's
    batches: list                # [(X [batch, nin], T)], float64: T is labels -1/+1 (svm)
                                 # or one-hot rows (hinge); step k uses batches[k % len]
    lr: Callable[[int], float]   # step -> learning rate
    alpha: float = 1e-4          # L2 weight


def micrograd_model(Value, sizes):
    random.seed(SEED)
    with micrograd_nn_using(Value) as nn:
        return nn.MLP(sizes[0], sizes[1:])


def pygrad_model(sizes):
    random.seed(SEED)
    return pygrad.nn.MLP(sizes[0], sizes[1:])


class PythonPathNeuron(pygrad.nn.Neuron):
    """Overrides nothing: pygrad.nn runs micrograd's Python for a subclass."""


def tanh_model(sizes, python_path=False):
    """pygrad.nn's MLP with act='tanh' (the same weights either way); with
    python_path, its neurons are PythonPathNeurons."""
    random.seed(SEED)
    model = pygrad.nn.MLP(sizes[0], sizes[1:], act="tanh")
    if python_path:
        for layer in model.layers:
            for neuron in layer.neurons:
                neuron.__class__ = PythonPathNeuron
    return model


def steady_state(step, warmup, steps, budget=math.inf, at_least=3):
    """Median time of `step(k)` after `warmup` untimed calls: `steps` timed
    calls, or fewer (but `at_least`) once they have taken `budget` seconds.
    Also returns what the first two calls returned (the losses of steps 0, 1)."""
    times, losses = [], []
    for k in range(warmup + steps):
        start = time.perf_counter()
        loss = step(k)
        times.append(time.perf_counter() - start)
        losses.append(loss)
        timed = times[warmup:]
        if len(timed) >= at_least and sum(timed) > budget:
            break
    return statistics.median(times[warmup:]), losses[:2]


# --- the demo step, engine by engine: each builder takes the Workload and
# returns step(k), which trains one step and returns its loss -----------------

def demo_data(workload):
    """The demo's one batch as the lists micrograd's demo code takes."""
    (X, y), = workload.batches
    return X.tolist(), y.tolist()


def eager_step(model, Value, workload):
    X, y = demo_data(workload)
    return lambda k: sgd_step(model, X, y, Value, k)[0]


def optim_step(model, workload):
    X, y = demo_data(workload)
    optimizer = pygrad.optim.SGD(model.parameters(), lr=1.0)

    def step(k):
        loss, _ = svm_loss(model, X, y, pygrad.Value)
        optimizer.zero_grad()
        loss.backward()
        optimizer.lr = learning_rate(k)
        optimizer.step()
        return loss.data
    return step


def replay_step(model, workload):
    """The demo loss with its inputs and labels as leaves, recorded once."""
    X, y = demo_data(workload)
    xs = [[pygrad.Value(a), pygrad.Value(b)] for a, b in X]
    ys = [pygrad.Value(label) for label in y]
    loss, _ = svm_loss_on(model, xs, ys)
    replay = pygrad.Replay(loss, inputs=[v for row in xs for v in row] + ys,
                           inputs_require_grad=False)  # as torch's data tensors
    optimizer = pygrad.optim.SGD(model.parameters(), lr=1.0)

    def step(k):
        loss = replay.forward()
        replay.backward()
        optimizer.lr = learning_rate(k)
        optimizer.step()
        return loss
    return step


# --- the multiclass hinge steps (examples/digits.py's loss) -------------------

def hinge_optim_step(model, workload):
    """The graph rebuilt every step from plain numbers, as users write it."""
    rows = [(X.tolist(), T.tolist()) for X, T in workload.batches]
    optimizer = pygrad.optim.SGD(model.parameters(), lr=1.0)

    def step(k):
        xs, onehots = rows[k % len(rows)]
        loss = digits.multiclass_hinge_loss(model, xs, onehots, workload.alpha)
        optimizer.zero_grad()
        loss.backward()
        optimizer.lr = workload.lr(k)
        optimizer.step()
        return loss.data
    return step


def hinge_replay_step(model, workload):
    """examples/digits.py's recorded step: a minibatch fed, forward, backward, SGD."""
    replay = digits.record_step(model, len(workload.batches[0][0]), workload.alpha)
    feeds = [np.concatenate([X.ravel(), T.ravel()]) for X, T in workload.batches]
    optimizer = pygrad.optim.SGD(model.parameters(), lr=1.0)

    def step(k):
        replay.feed(feeds[k % len(feeds)])
        loss = replay.forward()
        replay.backward()
        optimizer.lr = workload.lr(k)
        optimizer.step()
        return loss
    return step


# --- PyTorch and the dense references, for either loss ------------------------

def torch_data_loss(loss):
    import torch

    def svm(scores, labels):
        return torch.relu(1 - labels * scores.squeeze(1)).mean()

    def hinge(scores, onehot):
        true_score = (onehot * scores).sum(1, keepdim=True)
        return ((1 - onehot) * torch.relu(1 + scores - true_score)).sum() * (1.0 / len(scores))
    return {"svm": svm, "hinge": hinge}[loss]


def torch_step(model, workload):
    import torch
    torch.set_num_threads(1)
    net = model.to_torch()
    batches = [(torch.from_numpy(X), torch.from_numpy(T)) for X, T in workload.batches]
    data_loss = torch_data_loss(workload.loss)
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)

    def step(k):
        X, T = batches[k % len(batches)]
        loss = data_loss(net(X), T)
        loss = loss + workload.alpha * sum((p * p).sum() for p in net.parameters())
        optimizer.zero_grad()
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = workload.lr(k)
        optimizer.step()
        return loss.item()
    return step


def dense_step(train, workload):
    """step(k) of a dense.NumpyStep or dense.CStep."""
    def step(k):
        X, T = workload.batches[k % len(workload.batches)]
        return train(X, T, workload.lr(k))
    return step


def torch_available():
    return importlib.util.find_spec("torch") is not None


def c_available():
    try:
        dense.c_library()
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


MG, PG = micrograd.engine.Value, pygrad.Value
TORCH = "torch float64 batched (1 thread)"
NUMPY = "numpy float64 batched (1 thread)"
C_REFERENCE = "hand-written C (bench/dense_step.c)"
REPLAY = "pygrad Replay + optim.SGD"
TANH_PYTHON = "pygrad.nn, Neuron subclass (micrograd's Python)"
SLOW_ENGINES = ("micrograd", "pygrad.Value under micrograd.nn", TANH_PYTHON)


def demo_engines():
    """name -> builder(workload) returning step(k): the engines that run
    micrograd's demo code (and are measured for memory too)."""
    engines = {
        "micrograd": lambda w: eager_step(micrograd_model(MG, w.sizes), MG, w),
        "pygrad.Value under micrograd.nn":
            lambda w: eager_step(micrograd_model(PG, w.sizes), PG, w),
        "pygrad.nn": lambda w: eager_step(pygrad_model(w.sizes), PG, w),
        "pygrad.nn + optim.SGD": lambda w: optim_step(pygrad_model(w.sizes), w),
        REPLAY: lambda w: replay_step(pygrad_model(w.sizes), w),
    }
    if torch_available():
        engines[TORCH] = lambda w: torch_step(pygrad_model(w.sizes), w)
    return engines


def reference_engines(blas_one_thread):
    """numpy (when its BLAS can be held to one thread) and the C step."""
    engines = {}
    if blas_one_thread:
        engines[NUMPY] = lambda w: dense_step(
            dense.NumpyStep(pygrad_model(w.sizes), w.loss, w.alpha), w)
    if c_available():
        engines[C_REFERENCE] = lambda w: dense_step(
            dense.CStep(pygrad_model(w.sizes), w.loss, w.alpha, len(w.batches[0][0])), w)
    return engines


def hinge_engines(eager):
    engines = {}
    if eager:
        engines["pygrad.nn + optim.SGD"] = lambda w: hinge_optim_step(pygrad_model(w.sizes), w)
    engines[REPLAY] = lambda w: hinge_replay_step(pygrad_model(w.sizes), w)
    if torch_available():
        engines[TORCH] = lambda w: torch_step(pygrad_model(w.sizes), w)
    return engines


# --- the workloads ---------------------------------------------------------------

def demo_workload(sizes, n_points):
    X, y = make_moons(n_points, noise=0.1, seed=SEED)
    return Workload(f"demo step ({n_points} points, MLP(2, {sizes}))", [2] + sizes, "svm",
                    [(np.array(X), np.array(y, dtype=float))], learning_rate)


def digits_workload(hidden, batch):
    """Minibatches of examples/digits.py's training split, in its (shuffled) order."""
    X, y, _, _ = digits.load_digits_split(SEED)
    T = digits.one_hot(y)
    batches = [(X[i:i + batch], T[i:i + batch]) for i in range(0, len(X) - batch + 1, batch)]
    return Workload(f"digits step (batch {batch}, MLP(64, [{hidden}, 10]), multiclass hinge)",
                    [64, hidden, 10], "hinge", batches, lambda k: 0.01)


def random_workload(hidden, batch, n_batches=2):
    rng = np.random.default_rng(SEED)
    batches = [(rng.standard_normal((batch, 64)), digits.one_hot(rng.integers(0, 10, batch)))
               for _ in range(n_batches)]
    return Workload(f"batch {batch:,} step (MLP(64, [{hidden}, 10]), random data, "
                    "multiclass hinge)", [64, hidden, 10], "hinge", batches, lambda k: 0.01)


def check_agreement(workload, losses):
    """Fail loudly unless every engine's losses of steps 0 and 1 agree."""
    reference = losses.get(REPLAY) or next(iter(losses.values()))
    for theirs in losses.values():
        for k, (a, b) in enumerate(zip(theirs, reference)):
            if not (math.isfinite(a) and abs(a - b) <= AGREE * abs(b)):
                raise AssertionError(
                    f"{workload.title}: the engines disagree on step {k}'s loss "
                    f"(1e-9 relative): " + ", ".join(f"{e} {v[k]!r}" for e, v in losses.items()))


def time_workload(workload, engines, warmup, steps, budget):
    """[(engine, seconds per step)] for each engine on `workload`, checked to agree."""
    rows, losses = [], {}
    for engine, build in engines.items():
        measured = steps if engine in SLOW_ENGINES else steps * 10
        seconds, losses[engine] = steady_state(build(workload), warmup, measured, budget)
        rows.append((engine, seconds))
    check_agreement(workload, losses)
    return rows


def tanh_engines():
    """The demo step with act='tanh': micrograd's Python path, then the fused one."""
    return {
        TANH_PYTHON: lambda w: eager_step(tanh_model(w.sizes, python_path=True), PG, w),
        "pygrad.nn, fused": lambda w: eager_step(tanh_model(w.sizes), PG, w),
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
    step = demo_engines()[engine](demo_workload(sizes, n_points))
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

def blas_one_thread():
    """numpy's BLAS held to one thread while in use (as torch is), or None
    without threadpoolctl (it comes with scikit-learn)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=1)


def run(mode):
    """(rows, lines to print under the table)"""
    limit = blas_one_thread()
    with limit if limit is not None else contextlib.nullcontext():
        return measure(mode, blas_one_thread=limit is not None)


def measure(mode, blas_one_thread):
    sizes = {"smoke": [4, 4, 1]}.get(mode, [16, 16, 1])
    n_points = 10 if mode == "smoke" else 100
    op_number = {"smoke": 1000, "quick": 100_000}.get(mode, 300_000)
    warmup, steps = {"smoke": (1, 1), "quick": (2, 3)}.get(mode, (2, 7))
    long_chain = {"smoke": 10_000, "quick": 1_000_000}.get(mode, 1_000_000)
    rows = []  # (workload, engine, value, kind): kind "time" (s) or "memory" (bytes)

    for engine, Value in (("micrograd", MG), ("pygrad.Value", PG)):
        rows.append(("a * b", engine, single_op(Value, op_number), "time"))

    demo = demo_workload(sizes, n_points)
    step_rows, lines = step_workloads(demo, mode, warmup, steps, blas_one_thread)
    rows += step_rows
    tanh_demo = demo._replace(title=f"demo step, act='tanh' ({n_points} points, MLP(2, {sizes}))")
    for engine, seconds in time_workload(tanh_demo, tanh_engines(), warmup, steps, math.inf):
        rows.append((tanh_demo.title, engine, seconds, "time"))

    X, y = demo_data(demo)
    repeats = max(steps, 3)
    for engine, model, Value in (
            ("micrograd", micrograd_model(MG, demo.sizes), MG),
            ("pygrad.Value under micrograd.nn", micrograd_model(PG, demo.sizes), PG),
            ("pygrad.nn", pygrad_model(demo.sizes), PG)):
        rows.append(("backward (demo graph)", engine,
                     backward_only(model, Value, X, y, repeats), "time"))

    for depth in (500, long_chain):
        for engine, Value in (("micrograd", MG), ("pygrad.Value", PG)):
            rows.append((f"deep chain, {depth:,} deep", engine, deep_chain(Value, depth), "time"))

    for engine in demo_engines():
        rows.append(("peak memory, 3 demo steps", engine, peak_memory(engine, sizes, n_points),
                     "memory"))
    gc.collect()
    return rows, lines


def step_workloads(demo, mode, warmup, steps, blas_one_thread):
    """The training-step rows (demo, digits, batch 1,000), each workload's
    engines checked to agree, and the lines to print under the table."""
    digits_hidden, digits_batch = (8, 10) if mode == "smoke" else (32, 100)
    wide_hidden, wide_batch = (16, 20) if mode == "smoke" else (128, 1000)
    budget = 3.0 if mode == "full" else 1.0  # seconds per engine, beyond the demo
    references = reference_engines(blas_one_thread)
    workloads = [(demo, {**demo_engines(), **references})]
    notes = []
    if importlib.util.find_spec("sklearn") is not None:
        workloads.append((digits_workload(digits_hidden, digits_batch),
                          {**hinge_engines(eager=True), **references}))
    else:
        notes.append("The digits workload needs scikit-learn (`pip install scikit-learn`): "
                     "skipped.")
    workloads.append((random_workload(wide_hidden, wide_batch),
                      {**hinge_engines(eager=False), **references}))

    rows, flops = [], {}  # flops: workload title -> flops per step
    for workload, engines in workloads:
        for engine, seconds in time_workload(workload, engines, warmup, steps,
                                             math.inf if workload is demo else budget):
            rows.append((workload.title, engine, seconds, "time"))
        flops[workload.title] = dense.flops_per_step(workload.sizes, len(workload.batches[0][0]))

    lines = gflops_lines(rows, flops, mode, blas_one_thread)
    lines.append("micrograd is not run on the digits and batch-1,000 workloads (a step there "
                 "is ~0.5 and ~19 million of its nodes: ~10 s and ~6 min at its demo-step "
                 "rate); their ratios are against torch float64.")
    if C_REFERENCE in references:
        lines.append(f"{C_REFERENCE} is built with `{dense.C_COMPILER} {' '.join(dense.C_FLAGS)}`: "
                     "pygrad's own flags (-O2 and csrc/cflags).")
    else:
        notes.append(f"{C_REFERENCE}: skipped, no working C compiler.")
    if NUMPY not in references:
        notes.append(f"{NUMPY}: skipped, it needs threadpoolctl (it comes with scikit-learn).")
    lines.append("On every step workload, all engines' losses of steps 0 and 1 agreed to "
                 "1e-9 relative (checked in this run).")
    return rows, lines + notes


def gflops_lines(rows, flops, mode, blas_one_thread):
    """GFLOP/s of every engine on the dense workloads, and the measured peak."""
    if blas_one_thread:
        n, repeats = {"smoke": (256, 2), "quick": (512, 3)}.get(mode, (1024, 5))
        peak = dense.peak_gflops(n, repeats)
        lines = [(f"GFLOP/s, counting 6 x sum(nin x nout) x batch flops per step (forward, "
                  f"grad into inputs, grad into weights; a multiply-add is 2 flops), against "
                  f"one core's float64 peak measured here: **{peak:.1f} GFLOP/s** (best of "
                  f"{repeats} {n}x{n} numpy matmuls, one BLAS thread):")]
    else:
        peak = None
        lines = [("GFLOP/s, counting 6 x sum(nin x nout) x batch flops per step (peak not "
                  "measured: needs threadpoolctl, which comes with scikit-learn):")]
    for title, count in flops.items():
        rates = [(engine, count / seconds / 1e9) for workload, engine, seconds, _ in rows
                 if workload == title and engine != "micrograd" and engine in
                 (REPLAY, TORCH, NUMPY, C_REFERENCE)]
        described = []
        for engine, rate in rates:
            share = f" ({rate / peak:.1%} of peak)" if peak and engine == REPLAY else ""
            described.append(f"{engine} {rate:.2f}{share}")
        lines.append(f"- {title}, {count:,} flops: " + "; ".join(described))
    return lines


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


def fmt_ratio(base, value, engine, baseline_engine):
    if engine == baseline_engine and value is not None:
        return "1x"
    if value is None or base is None or value <= 0:
        return "-"
    ratio = base / value
    return f"**{ratio:,.1f}x**" if ratio >= 0.1 else f"**{ratio:.2g}x**"


def baselines(rows):
    """workload -> the engine its "vs micrograd" column is compared with:
    micrograd; where neither micrograd nor torch has a row (act='tanh'), the
    workload's first row; none where only torch has one (the dense workloads)."""
    chosen = {workload: engine for workload, engine, _, _ in rows if engine == "micrograd"}
    with_torch = {workload for workload, engine, _, _ in rows if engine == TORCH}
    for workload, engine, _, _ in rows:
        if workload not in with_torch:
            chosen.setdefault(workload, engine)
    return chosen


def table(rows, command):
    """Markdown: each measurement, and micrograd's (and torch float64's)
    divided by it on the same workload: how many times faster, or smaller."""
    chosen = baselines(rows)
    base = {w: v for w, engine, v, _ in rows if engine == chosen.get(w)}
    torch_base = {w: v for w, engine, v, _ in rows if engine == TORCH}
    lines = [f"`{command}` on {machine()}", "",
             "| workload | engine | measured | vs micrograd | vs torch float64 |",
             "|---|---|---:|---:|---:|"]
    for workload, engine, value, kind in rows:
        lines.append(f"| {workload} | {engine} | {fmt_value(value, kind)} "
                     f"| {fmt_ratio(base.get(workload), value, engine, chosen.get(workload))} "
                     f"| {fmt_ratio(torch_base.get(workload), value, engine, TORCH)} |")
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
    rows, lines = run(mode)
    print(table(rows, command))
    print()
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
