"""Threads: cffi releases the GIL around every C call, so several Python threads
are inside pygrad's arena at once.  Each thread's results must be exactly those
computed single-threaded, and no node may be lost or leaked."""
import gc
import math
import sys
import threading

import pytest

import pygrad
import pygrad.engine
from pygrad import Value

from support import cube, settle

N_THREADS = 6
ITERATIONS = 400


@pytest.fixture(autouse=True)
def _fast_thread_switching():
    # switch between threads often, so that Python code interleaves finely too
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


def run_threads(target, n=N_THREADS):
    """Run target(tid) in n threads started together; their return values, and
    re-raise the first exception any thread hit."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def main(tid):
        try:
            barrier.wait()
            results[tid] = target(tid)
        except BaseException as e:  # noqa: BLE001 - reported to the test below
            errors.append(e)

    threads = [threading.Thread(target=main, args=(tid,)) for tid in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def make_shared():
    return [Value(0.1 * (i + 1) * (-1) ** i) for i in range(8)]


def model(shared, xs):
    """~250 nodes using every op, over shared parameters and private inputs."""
    acc = Value(0.0)
    for j, x in enumerate(xs):
        w, b = shared[j % len(shared)], shared[(j + 3) % len(shared)]
        h = (w * x + b).tanh() + (x * w).relu() - (b * x).sigmoid() / 2
        h = h * (x ** 2 + 1).log() + (w - x) ** 2 / (1 + x.exp())
        acc = acc + h * (0.5 ** (j % 3)) + (x * x) ** Value(0.5)
    return (acc - 1) ** 2 / len(xs)


def inputs(tid, it):
    return [Value(1.2 + math.sin(tid * 7.1 + it * 0.37 + k)) for k in range(8)]


def work(shared, tid, iterations=ITERATIONS):
    """What one thread does: its own graphs, backprop, its own results."""
    out = []
    for it in range(iterations):
        xs = inputs(tid, it)
        loss = model(shared, xs)
        loss.backward()
        out.append((loss.data, loss.grad, tuple(x.grad for x in xs)))
    return out


def test_threads_get_exactly_the_single_threaded_results():
    shared = make_shared()
    start = settle()
    expected = [work(shared, tid) for tid in range(N_THREADS)]
    serial_shared_grads = [p.grad for p in shared]
    for p in shared:
        p.grad = 0.0
    data_before = [p.data for p in shared]

    results = run_threads(lambda tid: work(shared, tid))

    for tid in range(N_THREADS):
        assert results[tid] == expected[tid], f"thread {tid} differs"
    assert [p.data for p in shared] == data_before  # read-only stayed untouched
    # every backward added its share into the shared leaves: the same sums,
    # in another order
    for got, want in zip((p.grad for p in shared), serial_shared_grads):
        assert math.isclose(got, want, rel_tol=1e-9)
    del results, expected
    assert settle() == start


def test_thread_results_do_not_depend_on_what_other_threads_do():
    # half the threads compute, half churn the arena: allocate, release, count
    shared = make_shared()
    start = settle()
    expected = {tid: work(shared, tid, 60) for tid in range(0, N_THREADS, 2)}

    def target(tid):
        if tid % 2 == 0:
            return work(shared, tid, 60)
        for i in range(3000):
            a = Value(float(i))
            chain = a
            for _ in range(20):
                chain = chain * 1.0 + a
            chain.backward()
            assert a.grad == 21.0  # 1 + 1 + ... through 20 levels, plus the first
            if i % 100 == 0:
                pygrad.live_nodes()  # flushes the release queue from this thread
        return None

    results = run_threads(target)
    for tid, want in expected.items():
        assert results[tid] == want
    del results
    assert settle() == start


def test_deep_chains_in_several_threads_at_once():
    # each backward needs the arena's scratch space for the whole chain
    start = settle()

    def target(tid):
        x0 = Value(float(tid))
        x = x0
        for _ in range(50_000 + 10_000 * tid):
            x = x + 1.0
        x.backward()
        return x0.grad, x.data

    results = run_threads(target)
    for tid, (grad, data) in enumerate(results):
        assert grad == 1.0
        assert data == tid + 50_000 + 10_000 * tid
    assert settle() == start


def test_walking_shared_graph_while_others_build_on_it():
    # _prev hands out canonical wrappers; several threads adopt the same nodes
    shared = make_shared()
    base = (shared[0] * shared[1] + shared[2]).tanh() * shared[3]
    base_nodes = len(_trace(base))
    start = settle()

    def target(tid):
        sizes = set()
        for it in range(200):
            if tid % 2:
                sizes.add(len(_trace(base)))
            else:
                y = base * float(it) + shared[4 + tid % 4]  # not in base
                sizes.add(len(_trace(y)) - base_nodes)
        return sizes

    results = run_threads(target)
    for tid, sizes in enumerate(results):
        assert sizes == ({base_nodes} if tid % 2 else {4})  # y adds: const, '*', '+', leaf
    assert settle() == start


def _trace(root):
    nodes = set()

    def build(v):
        if v not in nodes:
            nodes.add(v)
            for child in v._prev:
                build(child)
    build(root)
    return nodes




def test_custom_ops_in_several_threads():
    # The custom-op graphs are kept alive until every thread is done, so the
    # collector finds none of them to free while the threads run (concurrent
    # collection is the next test).
    start = settle()
    alive = []

    def target(tid):
        out = []
        for it in range(2000):
            x = Value(1.0 + 1e-4 * (tid * 2000 + it))
            y = cube(x * 2.0) + x
            y.backward()
            out.append((y.data, x.grad))
            alive.append(y)
        return out

    expected = [target(tid) for tid in range(N_THREADS)]
    alive.clear()
    settle()  # collect the serial run's custom ops now, not concurrently below
    results = run_threads(target)
    alive.clear()
    assert results == expected
    assert results[0][0] == (8.0 + 1.0, 3 * 4.0 * 2.0 + 1.0)
    assert settle() == start


def test_custom_op_collection_in_several_threads_at_once():
    start = settle()
    for _ in range(8):  # the race is likeliest while the threads run in step
        keep = [cube(Value(1.0)) for _ in range(10_000)]  # held: nothing to collect yet
        del keep  # now 10,000 nodes are held only by their own closures

        def target(tid):
            gc.collect()  # several collectors at once free the closures' cycles

        run_threads(target, n=4)
        assert settle() == start
