"""Helpers shared by the test files."""
import gc
import os

import pygrad
from pygrad import Value


def settle():
    """Free everything freeable (cycles through custom ops, dead Values); the
    live node count."""
    # The nursery keeps the handle of this thread's latest call (its Value may
    # not exist yet): make that one a live Value's, not counted.
    anchor = Value(0.0)  # noqa: F841
    count = -1
    for _ in range(50):
        gc.collect()
        now = pygrad.live_nodes() - 1
        if now == count:
            return now
        count = now
    raise AssertionError("live node count never settled")


def unary_ops():
    """The op table's unary ops (PG_UNARY_OPS in csrc/pygrad.h), in tag order:
    each name is a tag PG_OP_NAME, a C function pg_name(a) and a Value method."""
    from pygrad._core import ffi, lib

    tags = sorted(ffi.typeof("enum pg_op").relements.items(), key=lambda item: item[1])
    names = [tag[len("PG_OP_"):].lower() for tag, _ in tags]
    return [name for name in names
            if hasattr(lib, f"pg_{name}")
            and [a.cname for a in ffi.typeof(getattr(lib, f"pg_{name}")).args] == ["int64_t"]]


def trace(root):
    """micrograd's trace_graph notebook helper, draw_dot's walk (the Zero-to-Hero
    lecture's trace(), as written there): (nodes, edges) below root."""
    nodes, edges = set(), set()

    def build(v):
        if v not in nodes:
            nodes.add(v)
            for child in v._prev:
                edges.add((child, v))
                build(child)

    build(root)
    return nodes, edges


def rss_bytes():
    """This process's resident set size, from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def readme_example(V):
    """micrograd's README expression (also its test_more_ops), built with
    Value class V; every node by name, before backward()."""
    a = V(-4.0)
    b = V(2.0)
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    return dict(a=a, b=b, c=c, d=d, e=e, f=f, g=g)


def cube(x, V=Value):
    """A custom op written micrograd style: its closure refers back to `out`."""
    out = V(x.data ** 3, (x,), "cube")

    def _backward():
        x.grad += 3 * x.data ** 2 * out.grad
    out._backward = _backward
    return out


def step_with_everything(i):
    """A step with everything an interrupt may land in: a label, a custom op,
    no_grad, backward and a drawing (test_lifetime's signal tests)."""
    x = Value(float(i % 5) + 0.5, label="x")
    y = cube(x * 0.5) + (x * x).tanh()
    with pygrad.no_grad():
        z = y * 2.0 + x.relu()
    y.backward()
    pygrad.to_dot(y)
    return z
