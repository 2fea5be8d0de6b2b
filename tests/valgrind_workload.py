"""A quick tour of everything pygrad does, for valgrind memcheck (`make valgrind-python`).

Not a pytest file: valgrind makes Python ~50x slower, so this runs each
feature once or twice, small, in one process, and exits non-zero if any
result is wrong or any node is left behind.  Run as
    PYTHONMALLOC=malloc valgrind --suppressions=valgrind-python.supp python valgrind_workload.py
"""
import copy
import math
import pickle
import random
import threading

import pygrad
from pygrad import NodeLimitError, StaleValueError, Value
from pygrad._core import PygradError, ffi, lib
from pygrad.nn import MLP
from pygrad.optim import SGD, Adam

from micrograd_demo import make_moons, sgd_step, svm_loss_on
from support import cube, settle


def expect(exc, fn, *args):
    try:
        fn(*args)
    except exc:
        return
    raise AssertionError(f"{fn} did not raise {exc}")


def every_op():
    a, b = Value(-4.0), Value(2.0)
    c = a + b
    d = a * b + b ** 3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e ** 2
    g = f / 2.0
    g += 10.0 / f
    g.backward()
    assert (round(g.data, 4), round(a.grad, 4), round(b.grad, 4)) == (24.7041, 138.8338, 645.5773)
    x = Value(0.5)
    y = x.tanh() + x.exp() + x.log() + x.sigmoid() + 2 ** x + x ** Value(3.0) + 1 / x - 2 - x
    y.backward()
    sig = 1 / (1 + math.exp(-0.5))
    want = (1 - math.tanh(0.5) ** 2 + math.exp(0.5) + 1 / 0.5 + sig * (1 - sig)
            + math.log(2) * 2 ** 0.5 + 3 * 0.5 ** 2 - 1 / 0.5 ** 2 - 1)
    assert abs(x.grad - want) < 1e-12, (x.grad, want)
    assert {v._op for v in y._prev} and pygrad.to_dot(y).startswith("digraph")
    for bad in (lambda: Value(0.0) ** -1, lambda: Value(-1.0).log(), lambda: Value(1000.0).exp(),
                lambda: Value(-8.0) ** (1 / 3), lambda: Value(10.0) ** 400.0):
        expect((ZeroDivisionError, ValueError, OverflowError), bad)




def custom_ops():
    x = Value(1.5)
    y = cube(cube(x * 2.0)) + x
    y.backward()
    assert abs(x.grad - (9 * 3.0 ** 8 * 2 + 1)) < 1e-6 * x.grad
    for _ in range(1100):  # cycles through closures, for the collector
        cube(Value(1.0))


def training():
    random.seed(1337)
    X, y = make_moons(20)
    model = MLP(2, [8, 8, 1])
    losses = [sgd_step(model, X, y, Value, step)[0] for step in range(5)]
    assert min(losses[1:]) < losses[0], losses
    opt = Adam(model.parameters(), lr=0.01)
    opt2 = SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    for o in (opt, opt2):
        loss = sum(model([a, b]) for a, b in X[:5])
        o.zero_grad()
        loss.backward()
        o.step()
    with pygrad.no_grad():
        assert model([0.5, 0.5])._prev == set()
    clone = pickle.loads(pickle.dumps(model))
    twin = copy.deepcopy(model)
    assert clone([0.1, 0.2]).data == twin([0.1, 0.2]).data == model([0.1, 0.2]).data
    model.load_state_dict(clone.state_dict())
    pickle.loads(pickle.dumps(opt)).step()


def replay():
    random.seed(1)
    model = MLP(2, [4, 1])
    xs = [[Value(0.0), Value(0.0)] for _ in range(4)]
    ys = [Value(0.0) for _ in range(4)]

    def loss_of():
        return svm_loss_on(model, xs, ys)[0]

    with pygrad.Replay(loss_of(), inputs=[v for r in xs for v in r] + ys, check=loss_of) as step:
        for i in range(3):
            step.feed([0.1 * i, 0.2, -0.3, 0.4, 0.5, -0.6, 0.7, 0.8, 1.0, -1.0, 1.0, -1.0])
            step.forward()
            step.backward()
        ys[0].data = 2.0  # still a leaf input: fine
        step.forward()
    expect(PygradError, step.forward)
    step = pygrad.Replay(Value(1.0) * 2.0 + xs[0][0], inputs=[xs[0][0]],
                         check=lambda: Value(1.0) * 3.0 + xs[0][0])
    expect(pygrad.ReplayMismatchError, step.forward)
    step.close()
    expect(ValueError, pygrad.Replay, cube(Value(1.0)))


def garbage():
    v = Value(2.0)
    h = v._h
    for bad in ("x", None, 1.5, -1, 2**62, 2**64, object()):
        v._h = bad
        for use in (lambda: v + 1, lambda: v.data, lambda: v.backward(), lambda: v._prev,
                    lambda: v.relu(), lambda: pickle.dumps(v)):
            expect((TypeError, ValueError, OverflowError, PygradError), use)
    v._h = h
    dead = Value(1.0)
    stale = dead._h
    del dead
    # so that dead's call is no longer this thread's latest, in flight
    newer = Value(0.0)  # noqa: F841
    pygrad.live_nodes()
    v._h = stale
    expect(StaleValueError, lambda: v.data)
    v._h = h
    for fn in (lib.pg_add, lib.pg_mul, lib.pg_sub, lib.pg_div, lib.pg_pow):
        assert fn(h, stale) == lib.PG_ERR_HANDLE and fn(-1, 2**62) == lib.PG_ERR_HANDLE
    assert lib.pg_release_many(ffi.NULL, 5) == lib.PG_ERR_ARG
    assert lib.pg_set_data_many([h], [1.0], -1) == lib.PG_ERR_ARG
    assert lib.pg_layer([h], [h], [h], 2**31, 1, 0, ffi.new("int64_t[]", 1)) == lib.PG_ERR_ARG
    assert lib.pg_tape_free(12345) == lib.PG_ERR_TAPE
    out = ffi.new("int64_t[]", 2)
    assert lib.pg_mlp([h, h, h, stale], 4, [1, 2], [1], 1, [h], out) == lib.PG_ERR_HANDLE
    tampered = Value(3.0)
    lost = tampered._h
    tampered._h = "not a handle"
    del tampered
    pygrad.live_nodes()
    assert lib.pg_release(lost) == lib.PG_OK


def node_limit():
    start = pygrad.live_nodes()
    keep = [Value(1.0)]
    pygrad.set_node_limit(start + 50)
    try:
        while True:
            keep.append(keep[-1] * 1.0)
    except NodeLimitError:
        pass
    finally:
        pygrad.set_node_limit(0)
    assert pygrad.live_nodes() <= start + 50
    del keep


def deep_and_threads():
    x0 = Value(0.0)
    x = x0
    for _ in range(50_000):
        x = x + 1.0
    x.backward()
    assert x0.grad == 1.0
    del x
    shared = [Value(0.1 * i) for i in range(4)]
    results = {}

    def work(tid):
        out = []
        for i in range(30):
            loss = sum((w * (tid + i) + 1.0).tanh() for w in shared)
            loss.backward()
            out.append(loss.data)
        results[tid] = out

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for tid in range(4):
        want = [sum(math.tanh(0.1 * k * (tid + i) + 1.0) for k in range(4)) for i in range(30)]
        assert all(abs(a - b) < 1e-12 for a, b in zip(results[tid], want))

def main():
    start = settle()
    for part in (every_op, custom_ops, training, replay, garbage, node_limit, deep_and_threads):
        part()
        assert settle() == start, (part.__name__, pygrad.live_nodes(), start)
    print("valgrind workload ok")


if __name__ == "__main__":
    main()
