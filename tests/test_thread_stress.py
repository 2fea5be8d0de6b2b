"""8 threads building, backpropagating and updating at once, checked bit for bit
against one thread doing the same work.

The semantics (what pygrad guarantees to threads, and what this file relies on):

* Every C call is atomic: one lock guards the arena, so making a node, a whole
  backward sweep, an optimizer step (SGD.step, Adam.step, zero_grad) or a
  replay's forward/backward happens entirely before or after any other
  thread's call.  cffi releases the GIL around each call, so threads really
  are inside the arena at the same time.
* A graph is private to the thread that builds it, but it may use shared
  Values (parameters) as children: any number of threads build on the same
  parameter nodes at once and read their data.
* backward() adds into the grad of every node of its graph, shared
  parameters included.  Concurrent backward passes each add their whole
  contribution; the shared grad ends up as the sum of every thread's
  contribution, in whatever order the sweeps ran.  (With inexact floating
  point the order changes the rounding; the shared workload below is exact
  dyadic arithmetic, so the sums are exact and the test compares bits.)
* Writes to shared parameters are the caller's to order: here, between two
  barriers, thread 0 alone updates them (one SGD step, one C call) and zeroes
  their grads while no thread reads them.  Everything a thread owns (its
  inputs, its private model and optimizer, its Replay, its custom ops, its
  no_grad mode) it uses and updates whenever it likes, concurrently with all
  the others.
* A Replay belongs to the thread that recorded it; no_grad is per thread.

Default run: a few seconds.  PYGRAD_STRESS=1: the threads run for 30 seconds
(PYGRAD_STRESS_SECONDS to change it), then the same rounds run on one thread
for the comparison.
"""
import math
import os
import random
import sys
import threading
import time

import pytest

import pygrad
import pygrad.engine
from pygrad import Value
from pygrad._core import lib
from pygrad.nn import MLP
from pygrad.optim import SGD

from support import cube, settle

pytestmark = pytest.mark.slow  # minutes: make test, not make check

N_THREADS = 8
P = 16             # shared parameters
TERMS = 16         # terms of each thread's shared-parameter loss
LR = 1.0 / 1024    # a power of two: the shared updates stay exact
SHORT_ROUNDS = 150
STRESS = os.environ.get("PYGRAD_STRESS") == "1"
STRESS_SECONDS = float(os.environ.get("PYGRAD_STRESS_SECONDS", "30"))


@pytest.fixture(autouse=True)
def _fast_thread_switching():
    # switch threads often, so that Python code between C calls interleaves finely too
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


# --- the shared workload: exact dyadic arithmetic over shared parameters -------------

def make_shared():
    return [Value(float((i * 7) % 9 - 4)) for i in range(P)]


def shared_inputs(tid, rnd):
    return [Value(float((tid * 13 + rnd * 7 + j * 5) % 11 - 5)) for j in range(TERMS)]


def shared_loss(shared, xs):
    """Linear in each parameter, integer inputs: every value and gradient is a
    multiple of 2**-11 far below 2**42, so every sum is exact in any order."""
    acc = Value(0.0)
    for j, x in enumerate(xs):
        w, b, c = shared[j % P], shared[(j + 5) % P], shared[(j + 11) % P]
        h = (w * x + b).relu()
        acc = acc + h * 3.0 - c * x + (x * x) * 0.5
    return acc


# --- the private workload: every op, floats, a thread's own state ----------------------



class Private:
    """One thread's own model, optimizer and replay.  Made in the main thread
    (the nn's initial weights come from the global random module)."""

    def __init__(self, tid):
        random.seed(1000 + tid)
        self.tid = tid
        self.model = MLP(3, [8, 8, 1])
        self.opt = SGD(self.model.parameters(), lr=0.01, momentum=0.5)
        self.replay = None  # recorded by the thread that first uses it
        self.steps = 0

    def step(self, rnd):
        tid, self.steps = self.tid, self.steps + 1
        xs = [math.sin(tid + 0.1 * rnd + k + 0.01 * self.steps) for k in range(3)]
        target = math.cos(0.7 * tid + 0.05 * rnd)
        out = self.model(xs)
        z = (out.tanh() * 2.0 + out.sigmoid() - (out - target) ** 2 / (1.0 + out.exp())
             + (out * out + 1.0).log() + 2 ** (out * 0.1))
        loss = cube(z * 0.1) + (z - 1) ** 2
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        with pygrad.no_grad():
            inference = self.model(xs).data
        if self.replay is None:
            self.a, self.b = Value(0.5), Value(-0.25)
            root = (self.a * self.b).tanh() + (self.a - self.b) ** 2 / (1 + self.a.exp())
            self.replay = pygrad.Replay(root, inputs=[self.a, self.b])
        self.replay.feed([xs[0], xs[1] * 2])
        replayed = self.replay.forward()
        self.replay.backward()
        result = (loss.data, out.data, inference, replayed, self.a.grad, self.b.grad)
        if (rnd + tid) % 40 == 0:  # now and then a deep chain: the walk scratch grows
            x0 = Value(float(tid))
            x = x0
            for _ in range(20_000 + 1000 * tid):
                x = x + 1.0
            x.backward()
            result += (x.data, x0.grad)
        return result

    def close(self):
        if self.replay is not None:
            self.replay.close()


# --- one round, and the runs -------------------------------------------------------------

class Run:
    """The state of one run: shared parameters, their optimizer, private states,
    and what was observed, per round and per thread."""

    def __init__(self):
        self.shared = make_shared()
        self.opt = SGD(self.shared, lr=LR)
        self.privates = [Private(tid) for tid in range(N_THREADS)]
        self.observed = [[] for _ in range(N_THREADS)]  # per thread, per round
        self.shared_grads = []                          # per round, before the update
        self.inside, self.most_inside = 0, 0  # threads in phase 1 at once
        self.count_lock = threading.Lock()

    def phase1(self, tid, rnd):
        """Build on the shared parameters, backward into them; a private step."""
        with self.count_lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        xs = shared_inputs(tid, rnd)
        loss = shared_loss(self.shared, xs)
        loss.backward()
        private = self.privates[tid].step(rnd)
        self.observed[tid].append((loss.data, tuple(x.grad for x in xs), private))
        with self.count_lock:
            self.inside -= 1

    def phase2(self, tid, rnd):
        """Thread 0 updates the shared parameters; every thread steps privately."""
        if tid == 0:
            self.shared_grads.append(tuple(p.grad for p in self.shared))
            self.opt.step()
            self.opt.zero_grad()
        self.observed[tid].append(self.privates[tid].step(rnd))

    def result(self):
        return self.observed, self.shared_grads, [p.data for p in self.shared]

    def close(self):
        for private in self.privates:
            private.close()


def run_threaded(rounds=None, seconds=None):
    """8 threads, rounds in lockstep (two barriers a round).  Either a fixed
    number of rounds, or as many as fit in `seconds` (thread 0 decides, between
    the barriers, so every thread stops after the same round)."""
    run = Run()
    barrier = threading.Barrier(N_THREADS)
    errors, done = [], [0]
    deadline = time.monotonic() + seconds if seconds else None
    stop = [False]

    def main(tid):
        try:
            rnd = 0
            while True:
                run.phase1(tid, rnd)
                barrier.wait(timeout=300)
                run.phase2(tid, rnd)
                if tid == 0:
                    done[0] = rnd + 1
                    stop[0] = (done[0] >= rounds) if rounds else time.monotonic() >= deadline
                barrier.wait(timeout=300)
                if stop[0]:
                    return
                rnd += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((tid, e))
            barrier.abort()

    threads = [threading.Thread(target=main, args=(tid,)) for tid in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0][1]
    return run, done[0]


def run_serial(rounds):
    """The same rounds on one thread: phase 1 for thread 0..7, then phase 2."""
    run = Run()
    for rnd in range(rounds):
        for tid in range(N_THREADS):
            run.phase1(tid, rnd)
        for tid in range(N_THREADS):
            run.phase2(tid, rnd)
    return run


def check_threads_match_one_thread(rounds=None, seconds=None):
    start = settle()
    t0 = time.perf_counter()
    threaded, n = run_threaded(rounds=rounds, seconds=seconds)
    t1 = time.perf_counter()
    serial = run_serial(n)
    t2 = time.perf_counter()
    got, want = threaded.result(), serial.result()
    for tid in range(N_THREADS):  # compare thread by thread first, for a clear failure
        assert got[0][tid] == want[0][tid], f"thread {tid} computed something else"
    assert got[1] == want[1], "shared grads differ"
    most = threaded.most_inside
    assert most > 1  # the threads did overlap (the serial run: 1)
    assert got[2] == want[2], "shared parameters differ"
    assert len(got[0][0]) == 2 * n and len(got[1]) == n
    # the shared parameters moved, and the shared grads were sums over 8 threads
    assert got[2] != [p.data for p in make_shared()]
    assert any(g != 0.0 for g in got[1][0])
    pygrad.live_nodes()  # release the dead Values' graphs now
    for run in (threaded, serial):
        assert all(lib.pg_internal_refs(p._h) == 0 for p in run.shared)  # no graph holds them
        run.close()
    del threaded, serial, got, want, run
    assert settle() == start  # nothing leaked, nothing freed twice
    print(f"\nTHREADS {N_THREADS} threads x {n} rounds: threaded {t1 - t0:.1f} s, "
          f"one thread {t2 - t1:.1f} s, up to {most} threads in phase 1 at once")
    return n


def test_8_threads_build_backprop_and_update_like_one_thread():
    assert check_threads_match_one_thread(rounds=SHORT_ROUNDS) == SHORT_ROUNDS


@pytest.mark.skipif(not STRESS, reason="the 30-second stress run: PYGRAD_STRESS=1")
def test_8_threads_stress():
    n = check_threads_match_one_thread(seconds=STRESS_SECONDS)
    assert n > SHORT_ROUNDS


def test_shared_grads_sum_every_threads_backward():
    """No update at all: 8 threads x 50 backward passes through the same
    parameters, each adding an exact contribution: the shared grads are the
    exact sums, whatever order the sweeps ran in."""
    shared = make_shared()
    start = settle()
    want = [0.0] * P
    for tid in range(N_THREADS):
        for rnd in range(50):
            shared_loss(shared, shared_inputs(tid, rnd)).backward()
    want = [p.grad for p in shared]
    for p in shared:
        p.grad = 0.0
    barrier = threading.Barrier(N_THREADS)
    errors = []

    def main(tid):
        try:
            barrier.wait()
            for rnd in range(50):
                shared_loss(shared, shared_inputs(tid, rnd)).backward()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=main, args=(tid,)) for tid in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [p.grad for p in shared] == want
    assert any(g != 0.0 for g in want)
    assert settle() == start
