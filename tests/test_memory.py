"""Graphs of any depth, and memory that does not grow across training steps.

micrograd's backward is a recursive topological sort, so a chain ~1,000 deep
already fails; pygrad's walk and its release of a dead graph are iterative.
"""
import gc
import random

import micrograd.engine
import pytest

import pygrad
from pygrad import Value

from support import rss_bytes, settle

pytestmark = pytest.mark.slow  # minutes: make test, not make check

MV = micrograd.engine.Value

DEPTH = 10_000_000


def test_micrograd_fails_on_a_5000_deep_chain():
    x = MV(0.0)
    for _ in range(5000):
        x = x + 1.0
    assert x.data == 5000.0
    with pytest.raises(RecursionError):
        x.backward()
    del x
    gc.collect()


def test_pygrad_5000_deep_chain_that_micrograd_cannot_do():
    x0 = Value(0.0)
    x = x0
    for _ in range(5000):
        x = x + 1.0
    x.backward()
    assert x.data == 5000.0 and x0.grad == 1.0
    x.backward()
    assert x0.grad == 5001.0


def test_second_backward_on_a_chain_matches_micrograd():
    # the oracle for the 10,000,000-deep chain's second sweep, at a depth micrograd can do
    grads = []
    for V in (MV, Value):
        x0 = V(0.0)
        x = x0
        for _ in range(300):
            x = x + 1.0
        x.backward()
        x.backward()
        grads.append(x0.grad)
    assert grads[0] == grads[1] == 301


def test_ten_million_deep_chain_builds_backprops_and_is_released():
    start = settle()
    x0 = Value(0.0)
    x = x0
    for _ in range(DEPTH):
        x = x + 1.0  # two nodes a step: the constant leaf and the '+'
    assert x.data == float(DEPTH)
    assert pygrad.live_nodes() == start + 2 * DEPTH + 1
    x.backward()  # no RecursionError, no C stack overflow
    assert x.grad == 1.0
    assert x0.grad == 1.0  # the gradient went through all 10,000,000 '+' nodes
    x.backward()  # a second sweep adds again, through grads already accumulated:
    assert x0.grad == DEPTH + 1.0  # node k below the root now has k + 1 (as micrograd)
    del x  # releasing the chain is iterative too
    assert pygrad.live_nodes() == start + 1  # only x0 is left
    assert x0.data == 0.0 and x0.grad == DEPTH + 1.0
    del x0
    assert pygrad.live_nodes() == start


def test_deep_multiplicative_chain_gradient():
    x0 = Value(1.0)
    x = x0
    for _ in range(200_000):
        x = x * 1.0
    x.backward()
    assert x.data == 1.0 and x0.grad == 1.0
    one = Value(1.0)  # a shared leaf used 200,000 times accumulates each use
    y = x0
    for _ in range(200_000):
        y = y + one
    y.backward()
    assert one.grad == 200_000.0


def _expression(params, xs):
    """~1,000 nodes: a running, decaying sum over params and inputs."""
    acc = params[0] * xs[0]
    for j in range(1, 250):
        acc = acc * 0.5 + params[j % len(params)] * xs[j % len(xs)]  # 4 nodes
    return (acc - 1.0) ** 2


def test_memory_is_flat_across_2000_build_backward_cycles():
    rng = random.Random(0)
    params = [Value(rng.uniform(-1, 1)) for _ in range(16)]
    xs = [Value(rng.uniform(-1, 1)) for _ in range(7)]
    start = settle()
    reference = None
    rss_at_200 = None
    for step in range(1, 2001):
        for p in params:
            p.grad = 0.0
        loss = _expression(params, xs)
        loss.backward()
        grads = [p.grad for p in params]
        if reference is None:
            reference = (loss.data, grads)
            assert any(g != 0.0 for g in grads)
        else:  # the same graph every time gives the same numbers
            assert (loss.data, grads) == reference
        del loss
        assert pygrad.live_nodes() == start, step
        if step == 200:
            rss_at_200 = rss_bytes()
    growth = rss_bytes() - rss_at_200
    assert growth < 4 * 1024 * 1024, f"RSS grew {growth / 2**20:.1f} MB over 1,800 steps"


def test_training_loop_updates_in_place_and_stays_flat():
    # micrograd's demo loop: forward, zero grads, backward, p.data -= lr * p.grad
    rng = random.Random(1)
    params = [Value(rng.uniform(-1, 1)) for _ in range(16)]
    xs = [Value(rng.uniform(-1, 1)) for _ in range(7)]
    start = settle()
    losses = []
    for _ in range(300):
        loss = _expression(params, xs)
        for p in params:
            p.grad = 0.0
        loss.backward()
        for p in params:
            p.data -= 0.05 * p.grad
        losses.append(loss.data)
        del loss
        assert pygrad.live_nodes() == start
    assert losses[-1] < losses[0]


def test_dropping_an_inner_reference_keeps_the_graph_alive_for_its_root():
    start = settle()
    a = Value(2.0)
    b = a * 3.0
    c = b + a
    del b  # c's node still refers to b's
    c.backward()
    assert a.grad == 4.0
    del a, c
    assert pygrad.live_nodes() == start


def test_values_from_prev_keep_their_nodes_alive_after_the_root_dies():
    start = settle()
    a = Value(2.0)
    c = (a * 3.0) + 1.0
    kids = c._prev
    del c
    assert pygrad.live_nodes() > start + 1  # the '*' node is held through kids
    (times,) = [k for k in kids if k._op == "*"]
    assert times.data == 6.0
    del kids, times
    del a
    assert pygrad.live_nodes() == start
