"""Endurance: micrograd's demo trained for thousands of steps in constant memory.

Three ways to run a step, each for many steps, with the process's resident
set size (RSS, from /proc/self/statm) measured early and at the end, and the
arena's live node count checked after every single step: it must be back to
what it was before the step (the model's parameters, and for Replay the
recorded graph, are all that stay).

  pygrad.nn.MLP + micrograd_demo.sgd_step        2,000 steps
  micrograd.nn.MLP built on pygrad.Value        200 steps (each ~70 ms)
  Replay: record once, feed/forward/backward  2,000 steps

RSS_BOUND is the allowed growth between the early and the final measurement:
a leak of one node a step would be 2,000 x ~70 bytes (arena) plus the Python
objects around it; a leak of one step's graph (~20,000 nodes) would be
hundreds of MB.  The bound leaves room for allocator noise only.
"""
import random

import pytest

import pygrad
from pygrad import Value
from pygrad.nn import MLP
from pygrad.optim import SGD

from micrograd_demo import (
    learning_rate,
    make_moons,
    micrograd_nn_using,
    sgd_step,
    svm_loss,
    svm_loss_on,
)
from support import rss_bytes, settle

pytestmark = pytest.mark.slow  # minutes: make test, not make check

RSS_BOUND = 4 * 2**20
STEPS = 2000
MICROGRAD_NN_STEPS = 200


def demo_data():
    return make_moons(100)


def report(what, **figures):
    print(f"\nENDURANCE {what}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def train(model, steps, early, Value=Value):
    """sgd_step `steps` times; checks live nodes after each.  (losses, RSS growth)"""
    X, y = demo_data()
    start = settle()
    losses, accuracies, rss_early = [], [], None
    for step in range(steps):
        # the demo's schedule decays to 0.1 over 100 steps, then stays there
        loss, accuracy = sgd_step(model, X, y, Value, min(step, 100))
        losses.append(loss)
        accuracies.append(accuracy)
        assert pygrad.live_nodes() == start, f"step {step}: nodes leaked"
        if step + 1 == early:
            rss_early = rss_bytes()
    growth = rss_bytes() - rss_early
    return losses, accuracies, growth


def test_pygrad_nn_demo_2000_steps_in_constant_memory():
    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    assert len(model.parameters()) == 337
    losses, accuracies, growth = train(model, STEPS, early=100)
    report("pygrad.nn 2,000 steps", first_loss=round(losses[0], 4), last_loss=round(losses[-1], 6),
           accuracy=accuracies[-1], rss_growth_kb=growth // 1024)
    assert losses[-1] < 0.05 < losses[0]  # it trained
    assert accuracies[-1] == 1.0
    assert growth < RSS_BOUND, f"RSS grew {growth / 2**20:.2f} MB from step 100 to 2,000"


def test_micrograd_nn_on_pygrad_values_200_steps_in_constant_memory():
    random.seed(1337)
    with micrograd_nn_using(Value) as nn:
        model = nn.MLP(2, [16, 16, 1])
    assert all(type(p) is Value for p in model.parameters())
    losses, accuracies, growth = train(model, MICROGRAD_NN_STEPS, early=20)
    report("micrograd.nn on pygrad.Value 200 steps", last_loss=round(losses[-1], 6),
           rss_growth_kb=growth // 1024)
    assert losses[-1] < losses[0] and accuracies[-1] >= 0.95
    assert growth < RSS_BOUND, f"RSS grew {growth / 2**20:.2f} MB from step 20 to 200"


def test_replay_2000_steps_in_constant_memory():
    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    X, y = demo_data()
    xs = [[Value(0.0), Value(0.0)] for _ in X]
    ys = [Value(0.0) for _ in y]
    feed = [v for row in X for v in row] + [float(label) for label in y]
    opt = SGD(model.parameters(), lr=1.0)
    with pygrad.Replay(svm_loss_on(model, xs, ys)[0],
                       inputs=[v for row in xs for v in row] + ys) as step:
        # the replayed forward is the eager loss, bit for bit
        step.feed(feed)
        first = step.forward()
        assert first == svm_loss(model, X, y, Value)[0].data
        start = settle()
        rss_early, losses = None, []
        for i in range(STEPS):
            step.feed(feed)
            losses.append(step.forward())
            step.backward()
            opt.lr = learning_rate(min(i, 100))
            opt.step()
            assert pygrad.live_nodes() == start, f"step {i}: nodes leaked"
            if i + 1 == 100:
                rss_early = rss_bytes()
        growth = rss_bytes() - rss_early
        step.feed(feed)
        assert step.forward() == svm_loss(model, X, y, Value)[0].data
    report("Replay 2,000 steps", first_loss=round(losses[0], 4), last_loss=round(losses[-1], 6),
           rss_growth_kb=growth // 1024)
    assert losses[0] == first and losses[-1] < 0.05 < losses[0]
    assert growth < RSS_BOUND, f"RSS grew {growth / 2**20:.2f} MB from step 100 to 2,000"
    del step, xs, ys, opt
    assert settle() < start  # closing the replay freed the recorded graph
