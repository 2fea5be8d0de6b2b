"""Scale: a node with 1,000,000 parents, a graph of millions of nodes, and a
MemoryError (pygrad.NodeLimitError), never a crash, when the arena is full.

The 10,000,000-deep chain is tests/test_memory.py's.  The big graph here is
5,000,000 nodes by default; PYGRAD_SCALE=1 makes it 50,000,000 (about a
minute to build on a 2-core machine, ~5 GB), and PYGRAD_SCALE_NODES=N any size.
Each test prints what it measured (build, backward and free times, peak RSS):
run with -s to see it.  Times are reported, never asserted.
"""
import math
import os
import subprocess
import sys
import textwrap
import time

import pytest

import pygrad
import pygrad.engine
from pygrad import NodeLimitError, Value
from pygrad._core import lib
from pygrad.nn import MLP, Neuron

from support import rss_bytes, settle

pytestmark = pytest.mark.slow  # minutes: make test, not make check

PARENTS = 1_000_000
BIG_NODES = int(os.environ.get("PYGRAD_SCALE_NODES") or
                (50_000_000 if os.environ.get("PYGRAD_SCALE") == "1" else 5_000_000))


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def report(what, **figures):
    text = ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v:,}"
                     for k, v in figures.items())
    print(f"\nSCALE {what}: {text}")


@pytest.fixture
def arena():
    """The live node count before the test; checked to be back there after."""
    start = settle()
    yield start
    assert settle() == start


# --- a node with 1,000,000 parents ------------------------------------------------------

def test_a_node_with_a_million_parents(arena):
    x = Value(3.0)
    t0 = time.perf_counter()
    acc = Value(0.0)
    for i in range(PARENTS):
        acc = acc + x * float(i % 7 - 3)  # integers: every sum below is exact
    t1 = time.perf_counter()
    assert lib.pg_internal_refs(x._h) == PARENTS  # one '*' node per use
    weight_sum = sum(i % 7 - 3 for i in range(PARENTS))
    assert acc.data == 3.0 * weight_sum
    assert pygrad.live_nodes() == arena + 2 + 3 * PARENTS  # x, 0.0; '*', its constant, '+'
    acc.backward()
    t2 = time.perf_counter()
    assert x.grad == float(weight_sum)  # the million contributions, accumulated into x
    acc.backward()  # a second sweep adds again, through grads already accumulated
    # (micrograd's semantics): the k-th product from the top now has grad k + 1
    again = sum((i % 7 - 3) * (PARENTS - i + 1) for i in range(PARENTS))
    assert x.grad == float(weight_sum + again)
    del acc
    assert pygrad.live_nodes() == arena + 1  # the whole fan-in freed; x is left
    t3 = time.perf_counter()
    assert lib.pg_internal_refs(x._h) == 0 and x.data == 3.0
    report("1,000,000 parents", nodes=3 * PARENTS + 2, build_s=t1 - t0, backward_s=t2 - t1,
           free_s=t3 - t2, peak_rss_mb=peak_rss_mb())
    del x


def test_a_leaf_shared_by_a_million_parents_through_one_nary_node(arena):
    # the other direction: one neuron (a DOT node) with 2,000,001 children
    n = Neuron(PARENTS, nonlin=False)
    xs = [Value(float(i % 5 - 2)) for i in range(PARENTS)]
    out = n(xs)
    assert out._op == "dot" and lib.pg_child_count(out._h) == 2 * PARENTS + 1
    expected = 0.0
    for w, x in zip(n.w, xs):  # micrograd's order: b + w0*x0 + w1*x1 + ...
        expected = expected + w.data * x.data
    assert out.data == expected
    out.backward()
    assert all(w.grad == x.data for w, x in zip(n.w, xs))
    assert all(x.grad == w.data for w, x in zip(n.w, xs))
    assert n.b.grad == 1.0
    del out, xs, n


# --- a big graph ----------------------------------------------------------------------------

def test_a_big_graph_builds_backprops_and_is_freed(arena):
    """BIG_NODES nodes: acc = acc + a[t % K] * b[t % K2], two nodes a step, over
    K + K2 shared leaves with small integer values, so that every value and
    gradient is an exact integer and can be checked exactly."""
    K, K2 = 1000, 7
    a_vals = [float(j % 5 - 2) for j in range(K)]
    b_vals = [float(1 + j % 3) for j in range(K2)]
    a = [Value(v) for v in a_vals]
    b = [Value(v) for v in b_vals]
    steps = (BIG_NODES - K - K2 - 1) // 2
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    acc = Value(0.0)
    for t in range(steps):
        acc = acc + a[t % K] * b[t % K2]
    t1 = time.perf_counter()
    nodes = pygrad.live_nodes() - arena
    assert nodes == K + K2 + 1 + 2 * steps
    want_a, want_b, want_data = [0] * K, [0] * K2, 0
    for t in range(K * K2):  # the pattern repeats every K * K2 steps (coprime)
        reps = steps // (K * K2) + (1 if t < steps % (K * K2) else 0)
        want_a[t % K] += reps * int(b_vals[t % K2])
        want_b[t % K2] += reps * int(a_vals[t % K])
        want_data += reps * int(a_vals[t % K]) * int(b_vals[t % K2])
    assert acc.data == want_data
    acc.backward()
    t2 = time.perf_counter()
    assert acc.grad == 1.0
    assert [v.grad for v in a] == want_a
    assert [v.grad for v in b] == want_b
    rss_built = rss_bytes()
    del acc  # releases the whole graph, iteratively
    assert pygrad.live_nodes() == arena + K + K2
    t3 = time.perf_counter()
    report(f"{nodes:,}-node graph", nodes=nodes, depth=steps, build_s=t1 - t0,
           backward_s=t2 - t1, free_s=t3 - t2, rss_growth_mb=(rss_built - rss0) / 2**20,
           peak_rss_mb=peak_rss_mb(), bytes_per_node=(rss_built - rss0) / nodes)
    # The arena shrinks as the graph goes (its leaves are at the bottom): most
    # of the memory is given back.
    assert rss_bytes() - rss0 < 0.25 * (rss_built - rss0)
    del a, b


# --- running out: the node limit -----------------------------------------------------------

@pytest.fixture
def cap(arena):
    """Caps the arena at `arena + n` nodes for the test; lifted after."""
    def set_cap(n):
        pygrad.set_node_limit(arena + n)
    yield set_cap
    assert pygrad.set_node_limit(0) >= 0


def test_node_limit_error_is_a_memory_error_and_nothing_leaks(arena, cap):
    keep = [Value(1.0) for _ in range(10)]
    cap(101)
    while True:
        try:
            keep.append(keep[-1] * 1.0)  # two nodes: the constant and the '*'
        except MemoryError as e:
            assert isinstance(e, NodeLimitError)
            break
    # the failing op made nothing: the cap left room for its constant only
    assert pygrad.live_nodes() == arena + 100
    assert len(keep) == 10 + 45
    with pytest.raises(NodeLimitError):
        Value(1.0) + Value(2.0)  # the second leaf does not fit
    assert pygrad.live_nodes() == arena + 100
    pygrad.set_node_limit(0)
    y = keep[-1] * 2.0 + 1.0  # lifting the cap lets work continue
    y.backward()
    assert keep[9].grad == 2.0 and y.data == 3.0  # through the 45 "*1.0" nodes
    del keep, y


@pytest.mark.parametrize("op", [
    ("v + w", lambda v, w: v + w, 1), ("v * 2", lambda v, w: v * 2.0, 2),
    ("v - w", lambda v, w: v - w, 3), ("2 - v", lambda v, w: 2.0 - v, 4),
    ("v / w", lambda v, w: v / w, 2), ("2 / v", lambda v, w: 2.0 / v, 3),
    ("v ** 2", lambda v, w: v ** 2, 1), ("v ** w", lambda v, w: v ** w, 1),
    ("2 ** v", lambda v, w: 2.0 ** v, 2), ("-v", lambda v, w: -v, 2),
    ("relu", lambda v, w: v.relu(), 1), ("tanh", lambda v, w: v.tanh(), 1),
    ("exp", lambda v, w: v.exp(), 1), ("log", lambda v, w: v.log(), 1),
    ("sigmoid", lambda v, w: v.sigmoid(), 1), ("Value", lambda v, w: Value(1.0), 1),
    ("custom op", lambda v, w: Value(1.0, (v, w), "f"), 1),
    ("neuron", lambda v, w: Neuron(2)([v, w]), 3 + 2),  # w0, w1, b; dot, relu
    ("mlp", lambda v, w: MLP(2, [3, 1])([v, w]), 13 + 7),  # 13 parameters; 3 dots,
], ids=lambda op: op[0])  # 3 relus and a dot
def test_every_op_fails_whole_at_the_limit(op, arena, cap):
    """An op that needs k nodes, with room for k - 1: it raises and makes none;
    with room for k it succeeds."""
    name, fn, needs = op
    v, w = Value(1.5), Value(2.5)
    for room in range(needs):
        cap(2 + room)
        with pytest.raises(NodeLimitError):
            fn(v, w)
        assert pygrad.live_nodes() == arena + 2, (name, room)
    cap(2 + needs)
    out = fn(v, w)
    assert out.data == out.data  # a value, not garbage
    del out
    assert pygrad.live_nodes() == arena + 2
    del v, w


def test_dead_values_do_not_count_against_the_limit(arena, cap):
    # Dead Values' nodes are normally released in batches; under a limit they
    # go at once, so that only nodes something holds count against it.
    cap(100)
    for i in range(10_000):
        v = Value(float(i))
        y = (v * 2.0).tanh()  # and dead intermediate graphs
    assert y.data == 1.0 and pygrad.live_nodes() == arena + 4
    held = []
    with pytest.raises(NodeLimitError):
        for _ in range(200):
            held.append(Value(1.0))
    assert len(held) == 100 - 4  # v, y's tanh and the '*' and constant under it
    del held, v, y


def test_limit_below_the_live_count_refuses_new_nodes_only(arena, cap):
    keep = [Value(float(i)) for i in range(50)]
    pygrad.set_node_limit(arena + 10)  # already 50 live: nothing new, but all else works
    with pytest.raises(NodeLimitError):
        keep[0] + keep[1]
    total = keep[0]
    keep[0].data = 5.0
    keep[0].grad = 1.0
    assert keep[0].data == 5.0 and total.data == 5.0
    kids = [v._prev for v in keep[:3]]  # reading the graph makes no nodes
    assert kids == [set(), set(), set()]
    pygrad.set_node_limit(0)
    s = sum(keep)
    s.backward()
    assert all(v.grad == 1.0 for v in keep[1:]) and keep[0].grad == 2.0
    del keep, s, total, kids


def test_backward_and_replay_under_the_limit(arena, cap):
    x = Value(0.5)
    y = (x * x + x).tanh()
    cap(pygrad.live_nodes() - arena)  # full
    y.backward()  # needs scratch memory, no nodes
    assert x.grad > 0
    step = pygrad.Replay(y, inputs=[x])
    step.feed([0.25])
    assert step.forward() == math.tanh(0.25 * 0.25 + 0.25)
    step.backward()
    step.close()
    pygrad.to_dot(y)
    with pytest.raises(NodeLimitError):
        y + 1.0
    del x, y, step


LIMIT_SCRIPT = textwrap.dedent("""
    import os, pygrad
    from pygrad import Value, NodeLimitError
    assert os.environ["PYGRAD_MAX_NODES"] == "1000"
    for i in range(100_000):             # dead Values never count against the cap
        v = Value(float(i)) * 2.0 + 1.0
    held = []
    try:
        while True:
            held.append(Value(1.0))
    except MemoryError as e:
        assert isinstance(e, NodeLimitError), type(e)
        assert "1000" in str(e) or "PYGRAD_MAX_NODES" in str(e), str(e)
    assert pygrad.live_nodes() == 1000, pygrad.live_nodes()
    assert len(held) == 1000 - 5, len(held)  # v's graph: two leaves, two constants, '+'
    del held
    assert pygrad.live_nodes() == 5
    assert pygrad.set_node_limit(0) == 1000
    big = sum(Value(float(i)) for i in range(5000))
    big.backward()
    print("ok", big.data)
""")


def run_script(script, **env):
    full_env = dict(os.environ)
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=full_env, timeout=600)


def test_node_limit_from_the_environment():
    done = run_script(LIMIT_SCRIPT, PYGRAD_MAX_NODES="1000")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", str(float(sum(range(5000))))]


@pytest.mark.parametrize("text", ["abc", "-5", "1.5", "1e6"])
def test_bad_node_limits_in_the_environment_fail_at_import(text):
    done = run_script("import pygrad", PYGRAD_MAX_NODES=text)
    assert done.returncode == 1
    assert "ValueError" in done.stderr and "PYGRAD_MAX_NODES" in done.stderr


OOM_SCRIPT = textwrap.dedent("""
    import gc, resource, pygrad
    from pygrad import Value
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    x0 = Value(1.0)
    x = x0
    n = 0
    try:
        while True:
            for _ in range(100_000):
                x = x + 1.0
            n += 1
    except MemoryError as e:
        kind = type(e).__name__
    del x
    gc.collect()
    assert pygrad.live_nodes() == 1, pygrad.live_nodes()
    y = (x0 * 3.0 + 1.0).tanh()
    y.backward()
    print(kind, n * 100_000, x0.grad > 0)
""")


def test_running_out_of_memory_is_a_memory_error_not_a_crash():
    """A real out-of-memory: the process's address space capped (RLIMIT_AS),
    a chain grown until something fails.  Whether the arena (NodeLimitError)
    or Python runs out first, it is a MemoryError; the process goes on."""
    limit = 2**30
    done = run_script(OOM_SCRIPT.replace("ADDRESS_SPACE", str(limit)))
    assert done.returncode == 0, done.stderr[-2000:]
    kind, steps, grad_ok = done.stdout.split()
    assert kind in ("NodeLimitError", "MemoryError") and grad_ok == "True"
    assert int(steps) > 1_000_000  # it got somewhere first
    print(f"\nSCALE out of memory under RLIMIT_AS={limit / 2**30:.0f} GiB: {kind} after "
          f"{int(steps):,} '+' steps")
