"""pygrad.Value as a drop-in for micrograd.engine.Value (micrograd 0.1.0).

micrograd is the oracle: wherever micrograd can compute something, the same
expression is built with both engines and the results are compared -- forward
values bit for bit, gradients to 1e-12 relative (the order in which micrograd
accumulates gradients depends on set iteration order, so sums may round
differently).  Where micrograd cannot (tanh, exp, log, sigmoid, Value
exponents), closed forms and finite differences are the oracle.
"""
import gc
import math
import operator
import random
import re
from decimal import Decimal
from fractions import Fraction

import micrograd.engine
import numpy as np
import pytest

import pygrad
import pygrad.engine
from pygrad import Value

from support import cube, settle, trace

MV = micrograd.engine.Value


# --- helpers --------------------------------------------------------------------

def same(x, y):
    """Bit for bit: equal as floats with the same sign of zero, or both NaN."""
    x, y = float(x), float(y)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y and math.copysign(1.0, x) == math.copysign(1.0, y)


def close(x, y, rel=1e-12, abs_tol=1e-12):
    return math.isclose(float(x), float(y), rel_tol=rel, abs_tol=abs_tol)


def outcome(fn):
    """('ok', result) or ('err', exception type)."""
    try:
        return "ok", fn()
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        return "err", type(e)


def signature(v):
    """The graph below v as nested tuples: (op, data, sorted child signatures)."""
    kids = sorted(signature(c) for c in v._prev)
    return (v._op, float(v.data), tuple(kids))


# --- 1. constructor and the data / grad attributes --------------------------------

REAL_INPUTS = [0, 3, -7, 2.5, -0.0, 1e300, True, False, np.float64(1.25), np.int64(-4),
               np.float32(0.1), Fraction(1, 3), Decimal("0.1"), Decimal("-2.5")]


@pytest.mark.parametrize("data", REAL_INPUTS, ids=repr)
def test_constructor_accepts_real_numbers_as_python_float(data):
    v = Value(data)
    assert type(v.data) is float
    assert same(v.data, float(data))
    assert type(v.grad) is float and v.grad == 0.0


@pytest.mark.parametrize("data", ["1.0", "", b"1", None, 1j, complex(2, 0),
                                  np.complex128(1.0), [1.0], (1.0,), {1.0}, {},
                                  np.array([1.0, 2.0]), object()], ids=repr)
def test_constructor_rejects_non_real_with_type_error(data):
    before = pygrad.live_nodes()
    with pytest.raises(TypeError):
        Value(data)
    assert pygrad.live_nodes() == before  # nothing half-made in the arena


def test_constructor_signature_matches_micrograd_positionally_and_by_keyword():
    a, b = Value(1.0), Value(2.0)
    v = Value(3.0, (a, b), "myop")
    w = Value(data=4.0, _children=(a,), _op="other")
    assert v.data == 3.0 and v._op == "myop" and v._prev == {a, b}
    assert w.data == 4.0 and w._op == "other" and w._prev == {a}
    leaf = Value(5.0, ())
    assert leaf._op == "" and leaf._prev == set()
    listed = Value(6.0, [a, b, a], "fromlist")  # micrograd takes any iterable of children
    assert listed._prev == {a, b} and listed._op == "fromlist"


def test_equality_hashing_and_truth_are_micrograd_s_identity_semantics():
    for V in (Value, MV):
        a, b = V(2.0), V(2.0)
        assert a == a and not (a == b) and a != b
        assert not (a == 2.0) and a != 2.0
        assert len({a, b, a}) == 2
        assert {a: 1}[a] == 1
        assert bool(V(0.0)) is True


def test_data_and_grad_are_writable_floats():
    p = Value(1.0)
    p.grad = 2
    assert type(p.grad) is float and p.grad == 2.0
    p.data -= 0.1 * p.grad  # the SGD update micrograd's demo does
    assert type(p.data) is float and p.data == 1.0 - 0.1 * 2.0
    p.data = np.float64(3.5)
    assert type(p.data) is float and p.data == 3.5
    p.grad = Fraction(1, 4)
    assert p.grad == 0.25


def test_written_data_is_used_by_later_ops_and_backward():
    a, b = Value(1.0), Value(2.0)
    a.data = 3.0
    c = a * b
    assert c.data == 6.0
    b.data = 10.0  # micrograd's backward reads current data of children
    c.backward()
    assert a.grad == 10.0 and b.grad == 3.0


@pytest.mark.parametrize("bad", ["x", None, 1j, [1.0]], ids=repr)
def test_setting_data_or_grad_to_non_real_raises_type_error(bad):
    v = Value(1.0)
    with pytest.raises(TypeError):
        v.data = bad
    with pytest.raises(TypeError):
        v.grad = bad
    assert v.data == 1.0 and v.grad == 0.0


# --- 2. operators, against micrograd ---------------------------------------------

# Operands on the other side of a Value.  pygrad makes numpy scalars floats
# before any arithmetic (README); micrograd computes with a float32 operand in
# float32 and cannot divide by a numpy integer (numpy refuses k ** -1), so it is
# given float(k) for those.
OTHERS = [2, -3, 0, 0.5, -1.25, True, False, np.float64(2.5), np.int64(3), np.float32(0.75),
          np.float32(0.1)]
SELF_DATA = [3.0, -2.0, 0.1, 0.0, -0.0, 7]
BINOPS = [operator.add, operator.sub, operator.mul, operator.truediv]
INPLACE = [operator.iadd, operator.isub, operator.imul, operator.itruediv]


def mg_operand(k):
    return float(k) if isinstance(k, (np.float32, np.integer)) else k


def assert_same_outcome(pg_fn, mg_fn):
    pg, mg = outcome(pg_fn), outcome(mg_fn)
    if mg[0] == "err":
        assert pg == mg, f"micrograd raised {mg[1].__name__}, pygrad gave {pg}"
        return None
    assert pg[0] == "ok", f"pygrad raised {pg[1].__name__}, micrograd gave {mg[1]}"
    assert type(pg[1]) is Value
    assert type(pg[1].data) is float
    assert same(pg[1].data, mg[1].data), (pg[1].data, mg[1].data)
    return pg[1]


VALUE_OP_NUMBER = [(op, k) for op in BINOPS for k in OTHERS]


@pytest.mark.parametrize("op, k", VALUE_OP_NUMBER,
                         ids=[f"{op.__name__}-{k!r}" for op, k in VALUE_OP_NUMBER])
@pytest.mark.parametrize("x", SELF_DATA, ids=repr)
def test_value_op_number_matches_micrograd(op, k, x):
    assert_same_outcome(lambda: op(Value(x), k), lambda: op(MV(x), mg_operand(k)))


def test_value_divided_by_float32_scalar_is_in_doubles():
    # micrograd computes v * k**-1: the reciprocal in float32 (numpy's rules),
    # then the product in float32 too, giving 4.0.  pygrad makes k a float
    # first (README), so both happen in doubles.
    k = np.float32(0.7)
    assert (MV(3.0) / k).data == np.float32(3.0) * (k ** -1)
    assert (Value(3.0) / k).data == 3.0 * (float(k) ** -1) == (MV(3.0) / float(k)).data
    assert (Value(3.0) / k).data != 3.0 * float(k ** -1)


@pytest.mark.parametrize("op", BINOPS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("k", OTHERS, ids=repr)
@pytest.mark.parametrize("x", SELF_DATA, ids=repr)
def test_number_op_value_matches_micrograd(op, k, x):
    assert_same_outcome(lambda: op(k, Value(x)), lambda: op(mg_operand(k), MV(x)))


@pytest.mark.parametrize("op", BINOPS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("y", [3.0, -0.5, 0.0, 1e-300, 4], ids=repr)
@pytest.mark.parametrize("x", SELF_DATA, ids=repr)
def test_value_op_value_matches_micrograd(op, x, y):
    assert_same_outcome(lambda: op(Value(x), Value(y)), lambda: op(MV(x), MV(y)))


@pytest.mark.parametrize("op", BINOPS, ids=lambda f: f.__name__)
def test_value_op_itself_matches_micrograd(op):
    def run(V):
        v = V(1.5)
        return op(v, v)
    assert_same_outcome(lambda: run(Value), lambda: run(MV))


@pytest.mark.parametrize("op, k", [(op, k) for op in INPLACE + [operator.ipow]
                                   for k in (2, 0.5, True, np.float64(-1.5), "value")
                                   if not (op is operator.ipow and k == "value")],
                         ids=lambda x: getattr(x, "__name__", repr(x)))
def test_inplace_ops_rebind_to_a_new_value_like_micrograd(op, k):
    v = Value(3.0)
    m = MV(3.0)
    pg_k = Value(4.0) if k == "value" else k
    mg_k = MV(4.0) if k == "value" else k
    original = v
    v = op(v, pg_k)
    m = op(m, mg_k)
    assert type(v) is Value and v is not original
    assert original.data == 3.0  # micrograd has no __iadd__: the old node is untouched
    assert same(v.data, m.data)


@pytest.mark.parametrize("x", [3.0, -2.0, 0.0, -0.0, 7, True], ids=repr)
def test_unary_neg_matches_micrograd(x):
    v = -Value(x)
    assert type(v) is Value
    assert same(v.data, (-MV(x)).data)
    assert v._op == "*"


@pytest.mark.parametrize("scalar", [np.float64(2.0), np.int64(2), np.float32(2.0)], ids=repr)
def test_numpy_scalar_on_either_side_gives_a_value(scalar):
    v = Value(3.0)
    for result in (scalar * v, v * scalar, scalar + v, v + scalar, scalar - v, v - scalar,
                   scalar / v, v / np.float64(2.0), v ** scalar, scalar ** v):
        assert type(result) is Value
    assert (np.float64(2.0) * v).data == 6.0 and (v * np.float64(2.0)).data == 6.0


# Exponents micrograd accepts (int, float and their subclasses: bool, np.float64).
POW_EXPONENTS = [2, 3, -1, -2, 0, 1, 0.5, 2.0, -1.5, 1 / 3, 10, True, False,
                 np.float64(1.5), np.float64(2.0), np.int64(2), np.float32(0.5)]
POW_BASES = [3.0, 0.5, -2.0, 0.0, -0.0, 2, 1.0, -1.0, 1e-3, 1e200, -1e200]


def mg_exponent(k):
    # micrograd asserts int/float exponents and, given a numpy scalar, computes
    # with numpy's power (nan/inf + warning instead of Python's errors); pygrad
    # follows Python float semantics, so micrograd is given the Python number.
    return k.item() if isinstance(k, np.generic) else k


@pytest.mark.parametrize("k", POW_EXPONENTS, ids=repr)
@pytest.mark.parametrize("x", POW_BASES, ids=repr)
def test_pow_matches_micrograd(x, k):
    pg, mg = outcome(lambda: Value(x) ** k), outcome(lambda: MV(x) ** mg_exponent(k))
    if mg[0] == "ok" and isinstance(mg[1].data, complex):
        assert pg == ("err", ValueError)  # micrograd returns a complex number
    elif mg[0] == "err":
        assert pg == mg
    else:
        assert pg[0] == "ok" and type(pg[1]) is Value
        assert same(pg[1].data, mg[1].data), (pg[1].data, mg[1].data)


SPECIAL = [math.inf, -math.inf, math.nan, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 1e308]


@pytest.mark.parametrize("k", SPECIAL + [3, -3, 2, -1], ids=repr)
@pytest.mark.parametrize("x", SPECIAL, ids=repr)
def test_pow_special_values_follow_python_float_pow(x, k):
    pg, mg = outcome(lambda: Value(x) ** k), outcome(lambda: MV(x) ** k)
    if mg[0] == "ok" and isinstance(mg[1].data, complex):
        assert pg == ("err", ValueError)
    elif mg[0] == "err":
        assert pg == mg
    else:
        assert pg[0] == "ok", pg
        assert same(pg[1].data, mg[1].data), (pg[1].data, mg[1].data)


@pytest.mark.parametrize("x", [math.inf, -math.inf, math.nan, 1e308, -0.0], ids=repr)
@pytest.mark.parametrize("op", BINOPS, ids=lambda f: f.__name__)
def test_special_values_through_arithmetic_match_micrograd(op, x):
    assert_same_outcome(lambda: op(Value(x), Value(2.0)), lambda: op(MV(x), MV(2.0)))
    assert_same_outcome(lambda: op(Value(3.0), Value(x)), lambda: op(MV(3.0), MV(x)))


@pytest.mark.parametrize("x", [-2.0, -0.0, 0.0, 3.5, 7, math.nan, -math.inf], ids=repr)
def test_relu_matches_micrograd(x):
    r = Value(x).relu()
    assert type(r) is Value and same(r.data, MV(x).relu().data)


def _random_expression(seed, steps=80):
    """Build the same random expression with both engines, checking every
    intermediate value bit for bit; returns (pygrad nodes, micrograd nodes)."""
    rng = random.Random(seed)
    pg = [Value(d) for d in (1.5, -0.75, 2.0, 0.3)]
    mg = [MV(d) for d in (1.5, -0.75, 2.0, 0.3)]
    ops = [
        lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / b,
        lambda a, b: a ** 2, lambda a, b: a ** -1, lambda a, b: a ** 3, lambda a, b: -a,
        lambda a, b: a.relu(), lambda a, b: a + 1.5, lambda a, b: 2 - a, lambda a, b: 0.7 * a,
        lambda a, b: a / 3, lambda a, b: 3 / a, lambda a, b: a * a, lambda a, b: a - a,
    ]
    for _ in range(steps):
        f = rng.choice(ops)
        i, j = rng.randrange(len(pg)), rng.randrange(len(pg))
        try:
            m = f(mg[i], mg[j])
        except (ZeroDivisionError, OverflowError):
            continue
        if not math.isfinite(m.data) or abs(m.data) > 1e6:
            continue
        p = f(pg[i], pg[j])
        assert type(p) is Value
        assert same(p.data, m.data), (p.data, m.data)
        pg.append(p)
        mg.append(m)
    return pg, mg


@pytest.mark.parametrize("seed", range(12))
def test_random_expressions_match_micrograd_values_and_gradients(seed):
    pg, mg = _random_expression(seed)
    pg_root = pg[-1] + pg[-2] * pg[-3]
    mg_root = mg[-1] + mg[-2] * mg[-3]
    assert same(pg_root.data, mg_root.data)
    pg_root.backward()
    mg_root.backward()
    scale = max(1.0, max(abs(m.grad) for m in mg))
    for p, m in zip(pg, mg):
        assert close(p.grad, m.grad, abs_tol=1e-12 * scale), (p.grad, m.grad)


# --- 3. the graph view: _op and _prev --------------------------------------------

def test_leaf_op_is_empty_and_prev_is_empty_set():
    v = Value(1.0)
    assert v._op == "" and v._prev == set() and isinstance(v._prev, set)


@pytest.mark.parametrize("build, op", [
    (lambda a, b: a + b, "+"), (lambda a, b: a * b, "*"), (lambda a, b: a ** 2, "**2"),
    (lambda a, b: a ** 2.0, "**2.0"), (lambda a, b: a ** 0.5, "**0.5"),
    (lambda a, b: a ** -1, "**-1"), (lambda a, b: a ** -2.5, "**-2.5"),
    (lambda a, b: a ** (1 / 3), f"**{1 / 3}"), (lambda a, b: a ** np.float64(2.0), "**2.0"),
    (lambda a, b: a.relu(), "ReLU"), (lambda a, b: a / b, "*"), (lambda a, b: a - b, "+"),
    (lambda a, b: -a, "*"), (lambda a, b: 2 - a, "+"), (lambda a, b: 2 / a, "*"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_op_strings_match_micrograd(build, op):
    p = build(Value(3.0), Value(4.0))
    m = build(MV(3.0), MV(4.0))
    assert m._op == op  # the table above is micrograd's
    assert p._op == op


def test_pow_with_bool_exponent_op_string_matches_micrograd():
    assert (Value(3.0) ** True)._op == (MV(3.0) ** True)._op == "**True"
    assert (Value(3.0) ** False)._op == (MV(3.0) ** False)._op == "**False"


@pytest.mark.parametrize("build", [
    lambda a, b: a - b, lambda a, b: a / b, lambda a, b: a - 2, lambda a, b: 2 - a,
    lambda a, b: a / 2, lambda a, b: 2 / a, lambda a, b: -a, lambda a, b: a + 1,
    lambda a, b: 1 + a, lambda a, b: a * 3, lambda a, b: 3 * a, lambda a, b: a ** 2,
    lambda a, b: (a - b) / (a * b) + (2 - a) ** 2 - (b / 4).relu(),
    lambda a, b: a * a, lambda a, b: a + a, lambda a, b: a - a, lambda a, b: a / a,
], ids=lambda f: "")
def test_graph_structure_matches_micrograd(build):
    p = build(Value(3.0), Value(4.0))
    m = build(MV(3.0), MV(4.0))
    assert signature(p) == signature(m)


def test_sub_builds_add_over_times_minus_one_as_micrograd():
    a, b = Value(3.0), Value(4.0)
    d = a - b
    assert d._op == "+" and len(d._prev) == 2 and a in d._prev
    (neg,) = d._prev - {a}
    assert neg._op == "*" and b in neg._prev
    (minus_one,) = neg._prev - {b}
    assert minus_one._op == "" and minus_one.data == -1.0


def test_div_builds_mul_over_pow_minus_one_as_micrograd():
    a, b = Value(3.0), Value(4.0)
    q = a / b
    assert q._op == "*" and a in q._prev
    (inv,) = q._prev - {a}
    assert inv._op == "**-1" and inv._prev == {b} and inv.data == 0.25


def test_prev_is_a_set_of_values_containing_the_operands():
    a, b = Value(2.0), Value(3.0)
    c = a * b
    prev = c._prev
    assert type(prev) is set and len(prev) == 2
    assert all(type(v) is Value for v in prev)
    assert a in prev and b in prev
    assert Value(2.0) not in prev  # membership is by node, not by data
    assert {v.data for v in prev} == {2.0, 3.0}


@pytest.mark.parametrize("build", [lambda x: x * x, lambda x: x + x, lambda x: x ** 2],
                         ids=["x*x", "x+x", "x**2"])
def test_repeated_operand_is_one_child(build):
    x = Value(3.0)
    assert len(build(x)._prev) == 1 == len(build(MV(3.0))._prev)
    assert x in build(x)._prev


def test_prev_children_are_the_live_nodes_their_grads_and_data_are_shared():
    a, b = Value(2.0), Value(3.0)
    c = a * b
    c.backward()
    by_data = {v.data: v for v in c._prev}
    assert by_data[2.0].grad == 3.0 and by_data[3.0].grad == 2.0
    by_data[2.0].grad = 100.0  # writing through _prev writes the node a refers to
    assert a.grad == 100.0


def _shared_graph(V):
    a, b = V(2.0), V(-3.0)
    c = a * b
    d = c + a
    e = d * c - b / c
    f = (e ** 2 + c.relu()) * d + (a * a) - (d - d)
    return f


def test_trace_walk_finds_same_nodes_and_edges_as_micrograd():
    p_nodes, p_edges = trace(_shared_graph(Value))
    m_nodes, m_edges = trace(_shared_graph(MV))
    assert len(p_nodes) == len(m_nodes)
    assert len(p_edges) == len(m_edges)
    assert sorted((n._op, n.data) for n in p_nodes) == sorted(
        (n._op, float(n.data)) for n in m_nodes)


def test_trace_walk_has_stable_identity_for_draw_dot():
    root = _shared_graph(Value)
    nodes, edges = trace(root)
    node_ids = {id(n) for n in nodes}
    assert len(node_ids) == len(nodes)  # each node met as one object
    for child, parent in edges:  # draw_dot names nodes by str(id(n))
        assert id(child) in node_ids and id(parent) in node_ids
    # a second walk while the first one's objects are alive sees them again
    nodes2, _ = trace(root)
    assert {id(n) for n in nodes2} == node_ids


# --- 4. backward semantics ---------------------------------------------------------

def _pair(build):
    pl, ml = [Value(x) for x in (2.0, -3.0, 0.5)], [MV(x) for x in (2.0, -3.0, 0.5)]
    return (pl, build(*pl)), (ml, build(*ml))


def _chain(a, b, c):
    d = a * b + c
    e = d * d + a
    return (e * b - c / a).relu() + e ** 2


def test_backward_sets_root_grad_to_one():
    (_, p), (_, m) = _pair(_chain)
    p.grad = 5.0
    m.grad = 5.0
    p.backward()
    m.backward()
    assert p.grad == m.grad == 1.0


def test_backward_accumulates_into_repeated_uses():
    x, mx = Value(3.0), MV(3.0)
    (x * x + x * 4.0 + x).backward()
    (mx * mx + mx * 4.0 + mx).backward()
    assert x.grad == mx.grad == 2 * 3.0 + 4.0 + 1.0


def test_backward_matches_micrograd_on_leaves():
    (pl, p), (ml, m) = _pair(_chain)
    assert same(p.data, m.data)
    p.backward()
    m.backward()
    for a, b in zip(pl, ml):
        assert close(a.grad, b.grad)


def test_second_backward_adds_again_exactly_like_micrograd():
    # micrograd does not zero intermediate grads, so the second sweep pushes the
    # already accumulated intermediate grads down again: not simply doubling.
    (pl, p), (ml, m) = _pair(_chain)
    p.backward()
    m.backward()
    first = [a.grad for a in pl]
    p.backward()
    m.backward()
    for a, b in zip(pl, ml):
        assert close(a.grad, b.grad)
    assert any(not close(a.grad, 2 * g) for a, g in zip(pl, first))
    pn, _ = trace(p)
    mn, _ = trace(m)
    assert sorted(n.grad for n in pn) == pytest.approx(sorted(n.grad for n in mn), rel=1e-12)


def test_grads_preset_by_user_are_added_to():
    a, b = Value(2.0), Value(3.0)
    ma, mb = MV(2.0), MV(3.0)
    a.grad, ma.grad = 10.0, 10.0
    (a * b).backward()
    (ma * mb).backward()
    assert a.grad == ma.grad == 13.0


def test_zeroing_grads_then_backward_gives_fresh_gradient():
    a, b = Value(2.0), Value(3.0)
    c = a * b
    c.backward()
    c.backward()
    a.grad = b.grad = 0
    (a * b).backward()
    assert (a.grad, b.grad) == (3.0, 2.0)


def test_backward_from_a_leaf_and_from_an_inner_node():
    v = Value(4.0)
    v.backward()
    assert v.grad == 1.0
    a, b = Value(2.0), Value(5.0)
    c = a * b
    d = c + a
    c.backward()  # only c's subgraph
    assert (a.grad, b.grad, d.grad) == (5.0, 2.0, 0.0)


@pytest.mark.parametrize("build", [
    lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a ** 3, lambda a, b: a ** -2,
    lambda a, b: a ** 0.5, lambda a, b: a.relu(), lambda a, b: (-a).relu(), lambda a, b: a * a,
    lambda a, b: a + a, lambda a, b: a + 2.5, lambda a, b: a * 2.5,
], ids=["+", "*", "**3", "**-2", "**0.5", "relu+", "relu-", "x*x", "x+x", "+k", "*k"])
def test_node_backward_runs_the_local_step_like_micrograd(build):
    a, b, ma, mb = Value(1.5), Value(-4.0), MV(1.5), MV(-4.0)
    p, m = build(a, b), build(ma, mb)
    for node in (a, b, ma, mb):
        node.grad = 0.25
    p.grad = m.grad = 2.5
    p._backward()
    m._backward()
    assert same(a.grad, ma.grad) and same(b.grad, mb.grad)
    p._backward()  # a local step, run again, adds again
    m._backward()
    assert same(a.grad, ma.grad) and same(b.grad, mb.grad)
    assert p.grad == 2.5  # the node's own grad is untouched


def test_node_backward_on_leaf_does_nothing():
    v = Value(3.0)
    v.grad = 1.0
    v._backward()
    assert v.grad == 1.0


def test_manual_backprop_through_backward_attributes_like_the_lecture():
    # Karpathy's lecture sets o.grad = 1 and calls _backward node by node.
    def run(V):
        x1, w1, x2, w2 = V(2.0), V(-3.0), V(0.0), V(1.0)
        x1w1 = x1 * w1
        x2w2 = x2 * w2
        n = x1w1 + x2w2
        o = n.relu() + n * 0.5
        o.grad = 1.0
        o._backward()
        r = next(c for c in o._prev if c._op == "ReLU")
        h = next(c for c in o._prev if c._op == "*")
        r._backward()
        h._backward()
        n._backward()
        x1w1._backward()
        x2w2._backward()
        return [v.grad for v in (x1, w1, x2, w2, n)]
    assert run(Value) == run(MV)


# --- 5. errors -------------------------------------------------------------------------

@pytest.mark.parametrize("expr, exc", [
    (lambda V: V(0.0) ** -1, ZeroDivisionError),
    (lambda V: V(0.0) ** -0.5, ZeroDivisionError),
    (lambda V: V(10.0) ** 400, OverflowError),
    (lambda V: V(-10.0) ** 401, OverflowError),
    (lambda V: V(0) / V(0), ZeroDivisionError),
    (lambda V: V(1.0) / V(0.0), ZeroDivisionError),
    (lambda V: V(1.0) / 0, ZeroDivisionError),
    (lambda V: 1 / V(0.0), ZeroDivisionError),
    (lambda V: V(1) < V(2), TypeError),
    (lambda V: V(1) <= V(2), TypeError),
    (lambda V: V(1) + "a", TypeError),
    (lambda V: "a" + V(1), TypeError),
    (lambda V: V(1) * None, TypeError),
    (lambda V: V(1) - [1], TypeError),
    (lambda V: V(1) / "2", TypeError),
], ids=["0**-1", "0**-0.5", "10**400", "-10**401", "0/0", "1/0v", "1/0", "1/v0", "<", "<=",
        "+str", "str+", "*None", "-list", "/str"])
def test_errors_have_micrograd_types(expr, exc):
    with pytest.raises(exc):
        expr(MV)
    with pytest.raises(exc):
        expr(Value)


def test_failed_op_leaves_no_node_behind():
    x = Value(0.0)
    before = pygrad.live_nodes()
    for expr in (lambda: x ** -1, lambda: 1 / x, lambda: Value(10.0) ** 400, lambda: x + "a"):
        with pytest.raises((ZeroDivisionError, OverflowError, TypeError)):
            expr()
    assert pygrad.live_nodes() == before


def test_backward_of_sqrt_at_zero_raises_zero_division_in_both():
    for V in (MV, Value):
        y = V(0.0) ** 0.5
        assert y.data == 0.0
        with pytest.raises(ZeroDivisionError):
            y.backward()


def test_negative_base_fractional_power_is_value_error_not_complex():
    assert isinstance((MV(-8.0) ** (1 / 3)).data, complex)  # micrograd's behaviour
    with pytest.raises(ValueError, match="complex"):
        Value(-8.0) ** (1 / 3)
    with pytest.raises(ValueError):
        Value(-8.0) ** Value(0.5)


# --- 6. pygrad's own ops: tanh, exp, log, sigmoid, Value exponents --------------------

def finite_difference(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


UNARY = {
    "tanh": (math.tanh, lambda x: 1 - math.tanh(x) ** 2),
    "exp": (math.exp, math.exp),
    "log": (math.log, lambda x: 1 / x),
    "sigmoid": (lambda x: 1 / (1 + math.exp(-x)),
                lambda x: math.exp(-x) / (1 + math.exp(-x)) ** 2),
}


@pytest.mark.parametrize("name, x", [(name, x) for name in UNARY
                                     for x in (0.3, 1.7, -0.9, 2.5, 0.01)
                                     if not (name == "log" and x <= 0)])
def test_unary_op_value_and_gradient(name, x):
    f, df = UNARY[name]
    v = Value(x)
    y = getattr(v, name)()
    assert type(y) is Value and y._op == name and y._prev == {v}
    assert close(y.data, f(x), rel=1e-15, abs_tol=0)
    (y * 3.0).backward()
    assert close(v.grad, 3.0 * df(x), rel=1e-12)
    assert close(v.grad, 3.0 * finite_difference(f, x), rel=1e-6)


@pytest.mark.parametrize("name", ["tanh", "exp", "log"])
@pytest.mark.parametrize("x", [0.3, 1.7, 12.5, 1e-5])
def test_unary_op_value_is_math_modules_bit_for_bit(name, x):
    assert same(getattr(Value(x), name)().data, getattr(math, name)(x))


@pytest.mark.parametrize("x", [-800.0, -40.0, 40.0, 800.0])
def test_sigmoid_saturates_without_overflow(x):
    s = Value(x).sigmoid()
    assert 0.0 <= s.data <= 1.0
    assert s.data == (1.0 if x > 0 else pytest.approx(0.0, abs=1e-17))


def test_math_errors_of_extra_ops():
    with pytest.raises(OverflowError):
        Value(1000).exp()
    with pytest.raises(ValueError):
        Value(0).log()
    with pytest.raises(ValueError):
        Value(-1).log()
    assert Value(-1000).exp().data == 0.0  # underflow is not an error, as in math.exp


def test_extra_ops_compose_with_micrograd_ops():
    x = Value(0.7)
    y = (x.tanh() * x.exp() + (x * 2).log() - x.sigmoid()) / x
    y.backward()

    def f(t):
        return (math.tanh(t) * math.exp(t) + math.log(2 * t) - 1 / (1 + math.exp(-t))) / t
    assert close(y.data, f(0.7), rel=1e-14)
    assert close(x.grad, finite_difference(f, 0.7), rel=1e-7)


@pytest.mark.parametrize("a, b", [(2.0, 3.0), (1.5, -0.5), (0.3, 2.7), (5.0, 0.0)])
def test_pow_with_value_exponent_values_and_both_gradients(a, b):
    x, y = Value(a), Value(b)
    z = x ** y
    assert type(z) is Value and z._prev == {x, y}
    assert same(z.data, a ** b)
    z.backward()
    assert close(x.grad, b * a ** (b - 1))
    assert close(y.grad, a ** b * math.log(a))


@pytest.mark.parametrize("base", [2, 2.0, 0.5, np.float64(3.0), True])
def test_number_to_the_power_of_a_value(base):
    y = Value(1.5)
    z = base ** y
    assert type(z) is Value
    assert same(z.data, float(base) ** 1.5)
    z.backward()
    assert close(y.grad, float(base) ** 1.5 * math.log(float(base)))
    consts = z._prev - {y}
    assert len(consts) == 1 and next(iter(consts)).data == float(base)


def test_value_exponent_chain_matches_finite_difference():
    def f(a, b):
        return (a ** b + 2 ** (a * b)) ** 0.5
    a, b = Value(1.3), Value(0.8)
    out = f(a, b)
    out.backward()
    assert close(out.data, f(1.3, 0.8))
    assert close(a.grad, finite_difference(lambda t: f(t, 0.8), 1.3), rel=1e-7)
    assert close(b.grad, finite_difference(lambda t: f(1.3, t), 0.8), rel=1e-7)


# --- 7. custom ops written micrograd style ---------------------------------------------



def weighted3(V, a, b, c):
    """a*b + 2*c + a*c, one node with three children."""
    out = V(a.data * b.data + 2 * c.data + a.data * c.data, (a, b, c), "w3")

    def _backward():
        a.grad += (b.data + c.data) * out.grad
        b.grad += a.data * out.grad
        c.grad += (2 + a.data) * out.grad
    out._backward = _backward
    return out


def sum_n(V, xs):
    out = V(sum(x.data for x in xs), tuple(xs), "sum")

    def _backward():
        for x in xs:
            x.grad += out.grad
    out._backward = _backward
    return out


def test_custom_op_gradient_through_backward():
    for V in (Value, MV):
        x = V(1.5)
        y = cube(x, V)
        y.backward()
        assert y.data == 1.5 ** 3
        assert x.grad == 3 * 1.5 ** 2


def test_custom_op_node_has_its_op_and_prev():
    x = Value(2.0)
    y = cube(x, Value)
    assert y._op == "cube" and y._prev == {x} and type(y) is Value
    w = weighted3(Value, x, Value(3.0), Value(4.0))
    assert w._op == "w3" and len(w._prev) == 3 and x in w._prev


def test_custom_op_backward_attribute_is_the_users_function():
    x = Value(2.0)
    out = Value(x.data * 5, (x,), "times5")

    def fn():
        x.grad += 5 * out.grad
    out._backward = fn
    assert out._backward is fn


def _mixed(V):
    a, b, c = V(0.5), V(-1.5), V(2.0)
    h = cube(a * b + c, V)                # custom over built-ins
    w = weighted3(V, h, b, c.relu())      # custom with 3 children
    s = sum_n(V, [w, a, b, c, h * a, a])  # custom with 6 children, one repeated
    loss = (s - 1) ** 2 + cube(s * 0.1, V) / b  # built-ins over customs
    return [a, b, c], loss


def test_custom_ops_mixed_with_builtin_ops_match_micrograd():
    pl, p = _mixed(Value)
    ml, m = _mixed(MV)
    assert same(p.data, m.data)
    p.backward()
    m.backward()
    for x, y in zip(pl, ml):
        assert close(x.grad, y.grad), (x.grad, y.grad)
    p.backward()  # and a second sweep accumulates the same way
    m.backward()
    for x, y in zip(pl, ml):
        assert close(x.grad, y.grad), (x.grad, y.grad)


def test_custom_op_as_root_and_chained_custom_ops():
    for V in (Value, MV):
        x = V(1.1)
        y = cube(cube(x, V), V)
        y.backward()
        assert close(x.grad, 9 * 1.1 ** 8)


def test_custom_op_without_backward_stops_the_gradient_like_micrograd():
    for V in (Value, MV):
        x = V(2.0)
        y = V(x.data * 3, (x,), "nograd")
        z = y * x
        z.backward()
        assert x.grad == 6.0  # only through the '*' edge
        assert y.grad == 2.0


def test_replacing_backward_of_a_builtin_node_like_micrograd():
    for V in (Value, MV):
        a, b = V(2.0), V(3.0)
        c = a * b

        def halved():
            a.grad += 0.5 * b.data * c.grad
            b.grad += 0.5 * a.data * c.grad
        c._backward = halved
        (c + 1).backward()
        assert (a.grad, b.grad) == (1.5, 1.0)
        assert c._op == "*"


def test_custom_backward_that_raises_propagates_and_graph_stays_usable():
    x = Value(2.0)
    y = Value(x.data * 2, (x,), "boom")

    def _backward():
        raise RuntimeError("boom")
    y._backward = _backward
    z = y * x
    with pytest.raises(RuntimeError, match="boom"):
        z.backward()

    def good():
        x.grad += 2 * y.grad
    y._backward = good
    x.grad = y.grad = z.grad = 0.0
    z.backward()
    assert x.grad == 4.0 + 2 * 2.0


class LectureValue(Value):
    """Karpathy's lecture Value, written on top of pygrad's: an extra attribute
    and tanh/+/* as custom ops."""

    def __init__(self, data, _children=(), _op="", label=""):
        super().__init__(data, _children, _op)
        self.label = label

    def __add__(self, other):
        other = other if isinstance(other, Value) else LectureValue(other)
        out = LectureValue(self.data + other.data, (self, other), "+")

        def _backward():
            self.grad += 1.0 * out.grad
            other.grad += 1.0 * out.grad
        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else LectureValue(other)
        out = LectureValue(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad
        out._backward = _backward
        return out

    def tanh(self):
        x = self.data
        t = (math.exp(2 * x) - 1) / (math.exp(2 * x) + 1)
        out = LectureValue(t, (self,), "tanh")

        def _backward():
            self.grad += (1 - t ** 2) * out.grad
        out._backward = _backward
        return out


def test_subclass_with_custom_ops_reproduces_the_lecture_neuron():
    x1, x2 = LectureValue(2.0, label="x1"), LectureValue(0.0, label="x2")
    w1, w2 = LectureValue(-3.0, label="w1"), LectureValue(1.0, label="w2")
    b = LectureValue(6.8813735870195432, label="b")
    n = x1 * w1 + x2 * w2 + b
    n.label = "n"
    o = n.tanh()
    assert type(o) is LectureValue and o._op == "tanh"
    assert close(o.data, 0.7071067811865476, rel=1e-12)
    o.backward()
    assert close(x1.grad, -1.5, rel=1e-9) and close(w1.grad, 1.0, rel=1e-9)
    assert close(x2.grad, 0.5, rel=1e-9) and w2.grad == 0.0
    assert close(n.grad, 0.5, rel=1e-9)
    assert (x1.label, n.label) == ("x1", "n")
    (child,) = o._prev
    assert child is n and child.label == "n"


def test_subclass_instances_come_back_by_identity_from_prev():
    a = LectureValue(2.0, label="a")
    c = Value.__mul__(a, Value(3.0))  # pygrad's built-in op on a subclass instance
    assert type(c) is Value
    kids = c._prev
    assert any(k is a for k in kids)
    (mine,) = [k for k in kids if k is a]
    assert mine.label == "a"
    e = a.relu() + a ** 2  # inherited ops work, and the walk finds `a` itself
    nodes, _ = trace(e)
    assert any(n is a for n in nodes)
    e.backward()
    assert a.grad == 1.0 + 4.0


def test_subclass_custom_tanh_matches_builtin_tanh():
    x = LectureValue(0.4)
    t = x.tanh()
    y = Value(0.4)
    u = y.tanh()
    assert close(t.data, u.data, rel=1e-15)
    t.backward()
    u.backward()
    assert close(x.grad, y.grad, rel=1e-13)


def test_custom_op_graphs_built_and_dropped_repeatedly_stay_bounded():
    # micrograd-style closures refer back to their node (`out`): a cycle that
    # Python's collector frees, young, as it frees micrograd's.
    start = settle()
    peak = 0
    for i in range(20_000):
        x = Value(float(i % 7))
        y = cube(x * 0.5 + 1, Value)
        z = weighted3(Value, y, x, Value(2.0))
        z.backward()
        if i % 500 == 499:
            peak = max(peak, pygrad.live_nodes() - start)
        del x, y, z
    # a leak of the graphs would be ~8 nodes per iteration: 160,000 nodes
    assert 0 < peak < 10_000, peak
    assert settle() == start


def _nested_cubes(depth):
    x = Value(1.01)
    y = x
    for _ in range(depth):
        y = cube(y, Value)
    y.backward()
    assert close(x.grad, 3 ** depth * 1.01 ** (3 ** depth - 1), rel=1e-9)


def test_one_collection_frees_nested_custom_ops():
    start = settle()
    _nested_cubes(5)
    assert pygrad.live_nodes() == start + 6  # 5 cubes held by their closures, and x
    gc.collect()
    assert pygrad.live_nodes() == start


def test_nested_custom_op_graphs_built_and_dropped_repeatedly_stay_bounded():
    start = settle()
    peak = 0
    for i in range(10_000):
        _nested_cubes(10)
        if i % 500 == 499:
            peak = max(peak, pygrad.live_nodes() - start)
    assert settle() == start
    assert peak < 10_000, peak  # a leak of the graphs would be 110,000 nodes


def test_custom_op_gradient_in_the_leak_loop_is_right():
    for i in range(50):
        x = Value(float(i % 7))
        y = cube(x * 0.5 + 1, Value)
        z = weighted3(Value, y, x, Value(2.0))
        z.backward()
        u = 0.5 * x.data + 1
        # z = y*x + 2*2 + y*2, y = u**3: dz/dx = y + dz/dy * 3u^2 * 0.5
        assert close(x.grad, y.data + (x.data + 2.0) * 3 * u ** 2 * 0.5)


# custom-op registry keyed by handle; a handle repeats after a slot is reused
# 2**10 times (GEN_BITS), and the registry forgets freed nodes only in bulk.

def test_builtin_node_on_a_reused_slot_is_not_taken_for_a_dead_custom_op():
    settle()
    tagged = Value(1.0, (), "tag")  # a custom-op node (an _op label) without a closure
    pygrad.live_nodes()  # nothing else is freed with `tagged`, on top of its slot
    handle = tagged._h
    del tagged
    pygrad.live_nodes()  # flush: the custom node's slot is now on top of the free list
    for _ in range(5000):  # leaves reuse that slot until its handle comes round again
        v = Value(0.0)
        if v._h == handle:
            break
        del v
        pygrad.live_nodes()
    else:
        pytest.fail("the freed slot's handle never came round again")
    assert v._op == ""
    assert v._backward is not None
    w = v * 2.0
    assert w._op == "*" and v in w._prev


def test_live_custom_op_survives_registry_cleanup_after_slot_reuse():
    settle()
    x = Value(5.0)
    old = Value(0.0, (), "old")
    del old
    pygrad.live_nodes()
    for _ in range(1023):  # cycle the freed slot's generation back round
        t = Value(0.0)
        del t
        pygrad.live_nodes()
    out = Value(2.0 * x.data, (x,), "double")

    def _backward(out=out):
        x.grad += 2.0 * out.grad
    out._backward = _backward
    gc.collect()
    pygrad.live_nodes()
    assert out._op == "double"
    (out * 1.0).backward()
    assert x.grad == 2.0


# --- 8. repr ------------------------------------------------------------------------------

def test_repr_has_micrograd_format():
    v = Value(2.5)
    assert repr(v) == "Value(data=2.5, grad=0.0)"
    v.grad = -1.25
    assert repr(v) == "Value(data=2.5, grad=-1.25)"
    m = MV(2.5)
    m.grad = -1.25
    assert repr(v) == repr(m)


def test_repr_after_backward_matches_micrograd():
    a, b, ma, mb = Value(2.0), Value(-3.0), MV(2.0), MV(-3.0)
    c, mc = a * b + a, ma * mb + ma
    c.backward()
    mc.backward()
    assert repr(a) == repr(ma) and repr(b) == repr(mb)
    assert re.fullmatch(r"Value\(data=-4\.0, grad=1(\.0)?\)", repr(c))
