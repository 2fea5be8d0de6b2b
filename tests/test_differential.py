"""Differential tests: pygrad against micrograd 0.1.0, the reference.

The same program is run with ``micrograd.engine.Value`` and with
``pygrad.Value``, and everything observable is compared (DESIGN.md, "The
micrograd contract"):

* forward values bit-identical (point 3; NaN matches NaN),
* gradients within 1e-12 relative (point 3), including a second ``backward()``
  that accumulates on top of the first (point 4),
* the same exception type at the same step, or a ``ValueError`` where
  micrograd produces a complex number (point 6),
* micrograd's own ``nn`` training micrograd's demo on pygrad Values.

Why gradients are compared with a tolerance at all: micrograd orders its
backward sweep by iterating ``_prev``, a set of Values hashed by id, so the
terms that accumulate into a shared node are summed in an order that is not
even stable between two micrograd runs.  Forward values have no such freedom.

Divergences that the comparison tolerates, each pinned by an explicit test
below (and only these):
* micrograd keeps ints exact (``Value(3) * 5`` is the int 15, ``Value(10) **
  400`` an exact 401-digit int); pygrad computes in doubles.  Values agree
  while the int fits a double exactly (|x| <= 2**53); past that, a random
  program is compared only up to that step.  An int zero has no sign, so signs
  of zero are compared only where micrograd's whole subgraph is free of int
  zeros (``v - 0`` has the int constant 0 in its graph;
  test_sub_int_zero_keeps_micrograd_sign pins that case on its own).
* numpy scalars make micrograd compute with numpy semantics (``0.0 ** -1`` is
  inf with a RuntimeWarning); pygrad computes with Python's float semantics
  and raises.  Tolerated only where micrograd's result is a numpy inf/nan (or,
  in backward, where a pow node's backward can raise in Python's semantics).
"""
import math
import operator
import random
import struct
import warnings
from fractions import Fraction

import micrograd.engine
import micrograd.nn
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

import pygrad

import micrograd_demo as demo
from support import readme_example

MG = micrograd.engine.Value
PG = pygrad.Value

EXACT_INT = 2 ** 53  # ints up to this magnitude are exactly doubles


# --- comparing one number ------------------------------------------------------

def _as_float(x):
    """A micrograd number (int, bool, float, numpy scalar) as a float."""
    if isinstance(x, (int, np.integer)):
        try:
            return float(x)
        except OverflowError:  # an exact int beyond the doubles
            return math.copysign(math.inf, x)
    return float(x)


def _same_value(m, p, signed_zero=True):
    """micrograd's value m and pygrad's value p are the same number: bit for
    bit when both are floats (any NaN matches any NaN); by value when
    micrograd's is an int (ints have no -0.0)."""
    if not isinstance(p, float):
        return False
    if isinstance(m, (int, np.integer)):
        return abs(m) <= EXACT_INT and float(m) == p
    m = float(m)
    if math.isnan(m) or math.isnan(p):
        return math.isnan(m) and math.isnan(p)
    if not signed_zero:
        return m == p
    return struct.pack("<d", m) == struct.pack("<d", p)


def _close(m, p, rel=1e-12, abs_=1e-12, scale=0.0):
    """Gradients: within rel of the larger, or abs_ near zero, or rel of the
    scale (the sum of the magnitudes of the terms, see _Mag): summing the same
    terms in another order moves a cancelling sum by a few ulps of the scale,
    not of the result.  Infinities and NaN must be of the same class."""
    m = _as_float(m)
    if not (math.isfinite(m) and math.isfinite(p)):
        return (math.isnan(m) and math.isnan(p)) or m == p
    d = abs(m - p)
    return d <= rel * max(abs(m), abs(p)) or d <= abs_ or d <= rel * scale


# --- fixed expressions: micrograd's README and tests -----------------------------



def sanity_check(Value):
    # micrograd's test_sanity_check.
    x = Value(-4.0)
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    return dict(x=x, z=z, q=q, h=h, y=y)


def more_ops(Value):
    return readme_example(Value)


def mixed_constants(Value):
    # Constants of every kind on both sides, and int leaves.
    x = Value(3)
    y = Value(-1.5)
    z = Value(np.float64(0.25))
    u = 2 + x * y - 1 / y + np.float64(2) * z - z / 4 + 7 - x
    w = (u ** 2 + 0.5 * u).relu() + (-u) ** 3 / (x + 1) + (y * y) ** 0.5
    v = w * u - 3.5 * z ** -2 + x ** 2 - (1 - x) * (u - 2)
    return dict(x=x, y=y, z=z, u=u, w=w, v=v)


FIXED = {"readme": readme_example, "sanity_check": sanity_check,
         "more_ops": more_ops, "mixed_constants": mixed_constants}
ROOT = {"readme": "g", "sanity_check": "y", "more_ops": "g", "mixed_constants": "v"}


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_expression_values_and_grads(name):
    m, p = FIXED[name](MG), FIXED[name](PG)
    for k in m:
        assert _same_value(m[k].data, p[k].data), (k, m[k].data, p[k].data)
    m[ROOT[name]].backward()
    p[ROOT[name]].backward()
    for k in m:
        assert _close(m[k].grad, p[k].grad), (k, m[k].grad, p[k].grad)


def test_readme_numbers():
    # The numbers micrograd's README prints, from pygrad.
    r = readme_example(PG)
    r["g"].backward()
    assert f"{r['g'].data:.4f}" == "24.7041"
    assert f"{r['a'].grad:.4f}" == "138.8338"
    assert f"{r['b'].grad:.4f}" == "645.5773"


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_expression_backward_twice(name):
    # Contract point 4: a second backward() sets the root's grad to 1 again and
    # accumulates into everything else, whatever the result.
    m, p = FIXED[name](MG), FIXED[name](PG)
    for _ in range(2):
        m[ROOT[name]].backward()
        p[ROOT[name]].backward()
    for k in m:
        assert _close(m[k].grad, p[k].grad), (k, m[k].grad, p[k].grad)


def test_backward_from_an_inner_node_after_the_root():
    m, p = readme_example(MG), readme_example(PG)
    for r in (m, p):
        r["g"].backward()
        r["d"].backward()
        r["b"].backward()
    for k in m:
        assert _close(m[k].grad, p[k].grad), (k, m[k].grad, p[k].grad)
    assert p["b"].grad == 1.0 and m["b"].grad == 1


def test_grads_are_writable_then_accumulate():
    # p.grad = 0 between steps (nn.zero_grad), or any value: backward adds to it.
    results = []
    for Value in (MG, PG):
        r = readme_example(Value)
        r["g"].backward()
        r["a"].grad = 0
        r["b"].grad = 2.5
        r["g"].backward()
        results.append((r["a"].grad, r["b"].grad))
    (ma, mb), (pa, pb) = results
    assert _close(ma, pa) and _close(mb, pb)


def test_backward_reads_data_written_after_forward():
    # micrograd's backward closures read .data when they run, not when the
    # node was made: a value written between forward and backward (a leaf, an
    # inner node, a ReLU's output) is what the chain rule uses.
    results = []
    for Value in (MG, PG):
        r = readme_example(Value)
        r["a"].data = 1.5
        r["d"].data = -2.0
        r["f"].data = 0.25
        r["g"].backward()
        results.append(r)
    m, p = results
    for k in m:
        assert _same_value(m[k].data, p[k].data), (k, m[k].data, p[k].data)
        assert _close(m[k].grad, p[k].grad), (k, m[k].grad, p[k].grad)


def test_relu_backward_reads_its_output():
    results = []
    for Value in (MG, PG):
        x = Value(3.0)
        y = x.relu()
        z = y * 2.0
        y.data = -1.0  # ReLU's backward: (out.data > 0) * out.grad
        z.backward()
        results.append(x.grad)
    assert results[0] == results[1] == 0


# --- errors, complex numbers, special values ---------------------------------------

ERROR_CASES = {
    "int 0 ** -1": lambda V: V(0) ** -1,
    "0.0 ** -1": lambda V: V(0.0) ** -1,
    "-0.0 ** -2.5": lambda V: V(-0.0) ** -2.5,
    "1 / 0.0": lambda V: 1 / V(0.0),
    "1 / -0.0": lambda V: 1 / V(-0.0),
    "v / 0": lambda V: V(2.0) / 0,
    "v / v-v": lambda V: (lambda x: x / (x - x))(V(3.0)),
    "overflow **2": lambda V: V(1e200) ** 2,
    "overflow **-1": lambda V: V(1e-310) ** -1,
    "overflow ** 1.5 neg": lambda V: V(-1e300) ** 3.0,
    "complex ** 0.5": lambda V: V(-8.0) ** 0.5,
    "complex ** 1/3": lambda V: V(-8.0) ** (1 / 3),
    "complex int ** -0.5": lambda V: V(-2) ** -0.5,
    "complex after ops": lambda V: (V(1.0) - 3) ** 1.5,
    "v + str": lambda V: V(2.0) + "a",
    "str + v": lambda V: "a" + V(2.0),
    "v + None": lambda V: V(2.0) + None,
    "v * list": lambda V: V(2.0) * [1],
    "v - str": lambda V: V(2.0) - "a",
    "v / str": lambda V: V(2.0) / "a",
    "str / v": lambda V: "a" / V(2.0),
    # Special values that are not errors in Python's float semantics.
    "0.0 ** -inf": lambda V: V(0.0) ** float("-inf"),
    "-1.0 ** inf": lambda V: V(-1.0) ** float("inf"),
    "1.0 ** nan": lambda V: V(1.0) ** float("nan"),
    "nan ** 0": lambda V: V(float("nan")) ** 0,
    "-inf ** 3": lambda V: V(float("-inf")) ** 3,
    "-inf ** -3": lambda V: V(float("-inf")) ** -3,
    "-inf ** 0.5": lambda V: V(float("-inf")) ** 0.5,
    "inf - inf": lambda V: V(float("inf")) - V(float("inf")),
    "inf * 0": lambda V: V(float("inf")) * 0,
    "1e308 * 10": lambda V: V(1e308) * 10,
    "relu nan": lambda V: V(float("nan")).relu(),
    "relu -0.0": lambda V: V(-0.0).relu(),
    "-2.0 ** 3.0": lambda V: V(-2.0) ** 3.0,
    "-2.0 ** -3": lambda V: V(-2.0) ** -3,
    "-1.0 ** 1e300": lambda V: V(-1.0) ** 1e300,
    "2 ** 1e300": lambda V: V(2.0) ** 1e300,
    "0.5 ** 1e300": lambda V: V(0.5) ** 1e300,
    "subnormal ** 2": lambda V: V(5e-324) ** 2,
}


def _outcome(make, Value):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return make(Value), None
        except Exception as e:  # noqa: BLE001 - the type is what we compare
            return None, e


def _assert_same_outcome(m, m_err, p, p_err):
    if m_err is not None:
        assert type(p_err) is type(m_err), (m_err, p_err, p)
    elif isinstance(m.data, complex):
        assert type(p_err) is ValueError, (m.data, p_err, p)
    else:
        assert p_err is None, (m.data, p_err)
        assert _same_value(m.data, p.data), (m.data, p.data)


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_and_special_values(case):
    m, m_err = _outcome(ERROR_CASES[case], MG)
    p, p_err = _outcome(ERROR_CASES[case], PG)
    _assert_same_outcome(m, m_err, p, p_err)


BACKWARD_ERROR_CASES = {
    # micrograd's pow backward computes other * x**(other-1) in Python floats.
    "0.0 ** 0.5": (0.0, lambda x: x ** 0.5),
    "-0.0 ** 0.5": (-0.0, lambda x: x ** 0.5),
    "int 0 ** 0.5": (0, lambda x: x ** 0.5),
    "0.0 ** 0.0": (0.0, lambda x: x ** 0.0),
    "0.0 ** -0.0": (0.0, lambda x: x ** -0.0),
    "0.0 ** 1": (0.0, lambda x: x ** 1),
    "0.0 ** 1.0": (0.0, lambda x: x ** 1.0),
    "1e-150 ** -2": (1e-150, lambda x: x ** -2),
    "1e200 ** 1.0": (1e200, lambda x: x ** 1.0),
    "inf ** 2": (math.inf, lambda x: x ** 2),
    "nan ** 2": (math.nan, lambda x: x ** 2),
    "0 ** inf": (0.0, lambda x: x ** math.inf),
    "2 ** -inf": (2.0, lambda x: x ** -math.inf),
    "inf * 0 grad": (math.inf, lambda x: (x * 0.0) * x),
    "relu nan grad": (2.0, lambda x: (x * math.nan).relu() + x),
    "deep": (0.0, lambda x: (x * x + x ** 0.5 * 3).relu() + 1 / (x + 1)),
    "deep ok": (0.25, lambda x: (x * x + x ** 0.5 * 3).relu() + 1 / (x + 1)),
}


@pytest.mark.parametrize("case", sorted(BACKWARD_ERROR_CASES))
def test_backward_errors_and_special_values(case):
    x0, f = BACKWARD_ERROR_CASES[case]
    results = []
    for Value in (MG, PG):
        x = Value(x0)
        root = f(x)
        try:
            root.backward()
            err = None
        except Exception as e:  # noqa: BLE001 - the type is what we compare
            err = e
        results.append((root, x, err))
    (m, mx, m_err), (p, px, p_err) = results
    assert type(p_err) is type(m_err), (m_err, p_err)
    assert _same_value(m.data, p.data), (m.data, p.data)
    if m_err is None:
        assert _close(mx.grad, px.grad), (mx.grad, px.grad)


SIGNED_ZERO_CASES = {
    "-(0.0)": lambda V: -V(0.0),
    "0.0 * -1.0": lambda V: V(0.0) * -1.0,
    "-0.0 + 0.0": lambda V: V(-0.0) + 0.0,
    "-0.0 + -0.0": lambda V: V(-0.0) + V(-0.0),
    "-0.0 - 0.0": lambda V: V(-0.0) - 0.0,
    "-0.0 - -0.0": lambda V: V(-0.0) - -0.0,
    "-0.0 - v0.0": lambda V: V(-0.0) - V(0.0),
    "0.0 - v0.0": lambda V: 0.0 - V(0.0),
    "0 - v0.0": lambda V: 0 - V(0.0),
    "-0.0 - np0": lambda V: V(-0.0) - np.float64(0.0),
    "-0.0 / 5.0": lambda V: V(-0.0) / 5.0,
    "5.0 / -inf": lambda V: 5.0 / V(float("-inf")),
    "-0.0 ** 3": lambda V: V(-0.0) ** 3,
    "-0.0 ** 2": lambda V: V(-0.0) ** 2,
    "-0.0 ** 0.5": lambda V: V(-0.0) ** 0.5,
    "relu -0.0": lambda V: V(-0.0).relu(),
    "relu -3.0": lambda V: V(-3.0).relu(),
    "-1e-200 * 1e-200": lambda V: V(-1e-200) * 1e-200,
}


@pytest.mark.parametrize("case", sorted(SIGNED_ZERO_CASES))
def test_signed_zero(case):
    m, p = SIGNED_ZERO_CASES[case](MG), SIGNED_ZERO_CASES[case](PG)
    assert _same_value(m.data, p.data), (m.data, p.data)


# --- known divergences: each a minimal case --------------------------------------

@pytest.mark.parametrize("k", [0, False])
def test_sub_int_zero_keeps_micrograd_sign(k):
    # micrograd negates k first: -0 is the int 0, so -0.0 - 0 is 0.0
    m, p = MG(-0.0) - k, PG(-0.0) - k
    assert _same_value(m.data, p.data), (m.data, p.data)


@pytest.mark.parametrize("base, exponent", [(-1e200, 2.5), (-10.0, 400.5), (-2, 1100.5)])
def test_complex_overflow_is_overflow_error(base, exponent):
    m, m_err = _outcome(lambda V: V(base) ** exponent, MG)
    p, p_err = _outcome(lambda V: V(base) ** exponent, PG)
    assert type(m_err) is OverflowError  # the reference's behaviour, to be sure
    _assert_same_outcome(m, m_err, p, p_err)


def test_complex_without_overflow_is_value_error():
    # The same kind of power, when the complex result is finite: micrograd
    # returns it, pygrad raises ValueError (contract point 6).
    m, m_err = _outcome(lambda V: V(-1e123) ** 2.5, MG)
    p, p_err = _outcome(lambda V: V(-1e123) ** 2.5, PG)
    assert m_err is None and isinstance(m.data, complex)
    _assert_same_outcome(m, m_err, p, p_err)


@pytest.mark.parametrize("make, error", [
    (lambda V: V(np.float64(0.0)) ** -1, ZeroDivisionError),
    (lambda V: V(np.float64(1e200)) ** 2, OverflowError),
    (lambda V: V(np.float64(-8.0)) ** 0.5, ValueError),
], ids=["zerodiv", "overflow", "negative-fractional"])
def test_numpy_float64_data_follows_python_float_rules(make, error):
    # README, differences: pygrad's data is a Python float, so a numpy float64
    # leaf computes with Python's float rules (raising); micrograd keeps the
    # numpy scalar and gets numpy's inf/nan with a RuntimeWarning.
    with np.errstate(all="ignore"):
        m, m_err = _outcome(make, MG)
    p, p_err = _outcome(make, PG)
    assert m_err is None and not np.isfinite(m.data)
    assert type(p_err) is error


def test_numpy_float32_is_computed_in_doubles():
    # README: .data is always a Python float.  micrograd keeps a numpy float32
    # leaf in float32 arithmetic (np.float32(0.3) == 0.30000001192092896);
    # pygrad converts the leaf and computes in doubles.
    m, p = MG(np.float32(0.1)) * 3, PG(np.float32(0.1)) * 3
    assert isinstance(m.data, np.float32)
    assert p.data == float(np.float32(0.1)) * 3.0 != float(m.data)


@pytest.mark.parametrize("exponent", ["a", None, 1j, [2]], ids=repr)
def test_bad_exponent_is_type_error(exponent):
    # README: a non-number exponent raises TypeError (micrograd's assert:
    # AssertionError), a documented difference from contract point 6.
    m, m_err = _outcome(lambda V: V(2.0) ** exponent, MG)
    p, p_err = _outcome(lambda V: V(2.0) ** exponent, PG)
    assert type(m_err) is AssertionError
    assert type(p_err) is TypeError, p_err


@pytest.mark.parametrize("exponent", [np.int64(3), Fraction(1, 2), None],
                         ids=["np.int64", "Fraction", "Value"])
def test_exponents_micrograd_refuses(exponent):
    # Extensions: micrograd asserts int/float exponents; pygrad takes any real
    # number, and a Value (contract point 6 allows it).
    def make(V):
        return V(4.0) ** (V(0.5) if exponent is None else exponent)
    m, m_err = _outcome(make, MG)
    p, p_err = _outcome(make, PG)
    assert type(m_err) is AssertionError and p_err is None
    expected = 2.0 if exponent is None else 4.0 ** float(exponent)
    assert p.data == expected


def test_bool_exponent_op_string():
    assert (PG(3.0) ** True)._op == (MG(3.0) ** True)._op


@pytest.mark.parametrize("make", [
    lambda V: (V(3) * 5).data,                       # exact int 15 vs 15.0
    lambda V: (-(V(-3.0).relu())).data,              # int 0 vs -0.0
    lambda V: (V(2 ** 52 + 1) * 2 - 3).data,         # 2**53 - 1, exact in both
], ids=["int-product", "int-zero", "near-2**53"])
def test_int_data_agrees_by_value(make):
    # micrograd keeps ints; pygrad's doubles agree by value while exact.
    m, p = make(MG), make(PG)
    assert isinstance(p, float) and m == p, (m, p)


def test_int_beyond_doubles_is_where_values_part():
    # Documents where exact ints and doubles part ways; no assertion of
    # equality is possible here, so assert the shape of the difference.
    assert isinstance((MG(10) ** 400).data, int)
    with pytest.raises(OverflowError):
        PG(10) ** 400
    assert (MG(2 ** 60 + 1)).data != PG(2 ** 60 + 1).data


# --- random programs -------------------------------------------------------------
# A program is (leaves, instructions, k): the pool starts with Values of the
# leaves; each instruction appends one Value made from pool entries and
# constants; backward() runs on the last Value, then again on pool[k].

_BIN = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def _step(pool, ins):
    kind = ins[0]
    if kind == "bin":
        return _BIN[ins[1]](pool[ins[2]], pool[ins[3]])
    if kind == "rconst":
        return _BIN[ins[1]](pool[ins[2]], ins[3])
    if kind == "lconst":
        return _BIN[ins[1]](ins[2], pool[ins[3]])
    if kind == "pow":
        return pool[ins[1]] ** ins[2]
    if kind == "neg":
        return -pool[ins[1]]
    if kind == "relu":
        return pool[ins[1]].relu()
    raise AssertionError(ins)


class _Mag:
    """The program once more in plain floats, as micrograd builds it (a - b is
    a + b*-1, a / b is a * b**-1, constants are leaves), whose backward sums
    the magnitudes |local derivative * upstream grad| of the finite terms:
    the scale of each gradient, which bounds how far summing the same terms in
    another order can move it.  Also records which exceptions a pow node's
    backward can raise."""

    __slots__ = ("data", "grad", "kids", "local", "errors")

    def __init__(self, data, kids=(), local=(), errors=()):
        self.data = float(data)
        self.grad = 0.0
        self.kids = kids
        self.local = local
        self.errors = errors

    @staticmethod
    def _wrap(x):
        return x if isinstance(x, _Mag) else _Mag(x)

    def __add__(self, other):
        other = self._wrap(other)
        return _Mag(self.data + other.data, (self, other), (1.0, 1.0))

    __radd__ = __add__

    def __mul__(self, other):
        other = self._wrap(other)
        return _Mag(self.data * other.data, (self, other),
                    (abs(other.data), abs(self.data)))

    __rmul__ = __mul__

    def __pow__(self, e):
        e = float(e) if isinstance(e, np.generic) else e  # Python's semantics
        data = self.data ** e
        try:
            local, errors = abs(e * self.data ** (e - 1)), ()
        except (ZeroDivisionError, OverflowError, ValueError) as err:
            local, errors = math.inf, (type(err),)
        return _Mag(data, (self,), (local,), errors)

    def relu(self):
        out = 0.0 if self.data < 0 else self.data
        return _Mag(out, (self,), (1.0 if out > 0 else 0.0,))

    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __truediv__(self, other):
        return self * other ** -1

    def __rtruediv__(self, other):
        return other * self ** -1

    def topo(self):
        order, seen, stack = [], set(), [(self, False)]
        while stack:
            v, done = stack.pop()
            if done:
                order.append(v)
            elif id(v) not in seen:
                seen.add(id(v))
                stack.append((v, True))
                stack.extend((k, False) for k in v.kids)
        return order

    def backward(self):
        self.grad = 1.0
        for v in reversed(self.topo()):
            for k, local in zip(v.kids, v.local):
                t = local * v.grad
                if math.isfinite(t):
                    k.grad += t


def _has_int_zero(m, memo):
    """Is there an int zero (no sign) anywhere in micrograd node m's graph?"""
    key = id(m)
    if key not in memo:
        d = m.data
        memo[key] = (isinstance(d, (int, np.integer)) and d == 0) or any(
            _has_int_zero(k, memo) for k in m._prev)
    return memo[key]


def _attempt(fn, *args):
    try:
        return fn(*args), None
    except Exception as e:  # noqa: BLE001 - the type is what we compare
        return None, e


ARITH_ERRORS = (ZeroDivisionError, OverflowError, ValueError)


class Report:
    """What one comparison did, for the statistics test."""

    def __init__(self):
        self.steps = 0
        self.stop = None
        self.backward = None


def run_differential(leaves, ops, k_second):
    """Run the program with micrograd, pygrad and _Mag in lock step and assert
    everything matches; returns a Report."""
    rep = Report()
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mpool = [MG(x) for x in leaves]
        ppool = [PG(x) for x in leaves]
        apool = [_Mag(_as_float(x)) for x in leaves]
        memo = {}
        for i, x in enumerate(leaves):
            assert _same_value(mpool[i].data, ppool[i].data), (i, x, ppool[i].data)
            assert ppool[i]._op == "" and not ppool[i]._prev

        for n, ins in enumerate(ops):
            where = f"instruction {n} {ins!r} (pool of {len(mpool)})"
            m, m_err = _attempt(_step, mpool, ins)
            p, p_err = _attempt(_step, ppool, ins)
            if m_err is not None:
                assert p_err is not None and type(p_err) is type(m_err), (
                    f"{where}: micrograd raised {m_err!r}, pygrad gave {p_err!r} {p!r}")
                rep.stop = "both raised " + type(m_err).__name__
                break
            md = m.data
            if isinstance(md, (int, np.integer)) and abs(md) > EXACT_INT:
                rep.stop = "int beyond 2**53"
                break
            if isinstance(md, complex):
                assert type(p_err) is ValueError, (
                    f"{where}: micrograd made complex {md!r}, pygrad gave {p_err!r} {p!r}")
                rep.stop = "complex"
                break
            if p_err is not None:
                assert (isinstance(md, np.generic) and not np.isfinite(md)
                        and isinstance(p_err, ARITH_ERRORS)), (
                    f"{where}: micrograd gave {md!r}, pygrad raised {p_err!r}")
                rep.stop = "numpy semantics"
                break
            trusted_sign = not _has_int_zero(m, memo)
            assert _same_value(md, p.data, signed_zero=trusted_sign), (
                f"{where}: micrograd {md!r}, pygrad {p.data!r}")
            assert p._op == m._op, f"{where}: _op {m._op!r} vs {p._op!r}"
            # The same children: pool entries by position, others by count.
            m_index = {id(v): j for j, v in enumerate(mpool)}
            p_index = {v: j for j, v in enumerate(ppool)}
            m_kids = sorted(m_index.get(id(c), -1) for c in m._prev)
            p_kids = sorted(p_index.get(c, -1) for c in p._prev)
            assert m_kids == p_kids, f"{where}: _prev {m_kids} vs {p_kids}"
            mpool.append(m)
            ppool.append(p)
            apool.append(_step(apool, ins))
            rep.steps += 1

        tainted = any(isinstance(v.data, np.generic) for v in mpool)
        roots = [len(mpool) - 1, k_second % len(mpool)]
        for sweep, r in enumerate(roots):
            _, m_err = _attempt(mpool[r].backward)
            _, p_err = _attempt(ppool[r].backward)
            where = f"backward #{sweep + 1} from pool[{r}]"
            if m_err is not None or p_err is not None:
                possible = {e for v in apool[r].topo() for e in v.errors}
                if m_err is not None:
                    assert p_err is not None, f"{where}: micrograd raised {m_err!r}, pygrad did not"
                    assert type(m_err) in possible | {type(p_err)}, (where, m_err, possible)
                    assert type(p_err) in possible | {type(m_err)}, (where, p_err, possible)
                    rep.backward = "both raised"
                else:
                    # numpy data: micrograd's pow backward gives inf, pygrad raises.
                    assert tainted and type(p_err) in possible, (
                        f"{where}: pygrad raised {p_err!r}, micrograd did not")
                    rep.backward = "numpy semantics"
                return rep
            apool[r].backward()
            lenient = any(not (v.grad < 1e300) for v in apool[r].topo())
            for j, (mv, pv, av) in enumerate(zip(mpool, ppool, apool)):
                mg, pg = mv.grad, pv.grad
                assert isinstance(pg, float)
                if lenient and not (math.isfinite(_as_float(mg)) and math.isfinite(pg)):
                    continue  # finite terms near the overflow threshold: order decides
                assert _close(mg, pg, scale=av.grad), (
                    f"{where}: grad of pool[{j}]: micrograd {mg!r}, pygrad {pg!r}, "
                    f"scale {av.grad!r}")
            rep.backward = "compared"
    return rep


# The strategies.

_nice = [0.0, -0.0, 1.0, -1.0, 0.5, -2.0, 3.0, 0.1, -7.25, 1e-300, -1e300, 1e300,
         5e-324, 2.0 ** 53, 1e16, 1e-8]
finite_floats = st.one_of(
    st.sampled_from(_nice),
    st.floats(-10, 10),
    st.floats(-1e6, 1e6),
    st.floats(allow_nan=False, allow_infinity=False),
)
ints = st.one_of(st.integers(-5, 5), st.integers(-10 ** 6, 10 ** 6))

leaf_values = st.one_of(
    finite_floats, finite_floats, st.floats(-10, 10), ints, st.booleans(),
    finite_floats.map(np.float64))

constants = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([0.5, -1.5, 2.0, 0.0, -0.0, 1e-3, 3.5, -10.0, 1e200, 1e-200]),
    st.floats(-100, 100),
    st.sampled_from([np.float64(2.0), np.float64(-0.5), np.float64(0.0)]),
)

exponents = st.one_of(
    st.sampled_from([0, 1, 2, 3, 5, -1, -2, -3, 0.5, -0.5, 1.5, -1.5, 2.0, 3.0, -1.0,
                     0.0, -0.0, 1 / 3, 2.5, 0.1, 7, -4.0]),
    st.floats(-4, 4),
    st.sampled_from([np.float64(2.0), np.float64(0.5), np.float64(-1.0)]),
)

nonfinite = st.sampled_from([math.nan, math.inf, -math.inf])
special_leaves = st.one_of(nonfinite, nonfinite, st.floats(-10, 10), st.integers(-3, 3),
                           st.sampled_from([0.0, -0.0, 1.0, -1.0]))
special_constants = st.one_of(constants, nonfinite)
special_exponents = st.one_of(exponents, nonfinite)

KINDS = ["bin", "bin", "bin", "rconst", "lconst", "pow", "neg", "relu"]
SYMS = st.sampled_from(sorted(_BIN))


@st.composite
def programs(draw, leaf_st=leaf_values, const_st=constants, exp_st=exponents,
             max_leaves=5, max_ops=24):
    leaves = draw(st.lists(leaf_st, min_size=1, max_size=max_leaves))
    size = len(leaves)
    ops = []
    for _ in range(draw(st.integers(1, max_ops))):
        # Anywhere in the pool (shared subexpressions), or among the newest
        # (deep chains).
        pick = st.integers(0, size - 1) | st.integers(max(0, size - 3), size - 1)
        kind = draw(st.sampled_from(KINDS))
        if kind == "bin":
            ins = ("bin", draw(SYMS), draw(pick), draw(pick))
        elif kind == "rconst":
            ins = ("rconst", draw(SYMS), draw(pick), draw(const_st))
        elif kind == "lconst":
            ins = ("lconst", draw(SYMS), draw(const_st), draw(pick))
        elif kind == "pow":
            ins = ("pow", draw(pick), draw(exp_st))
        else:
            ins = (kind, draw(pick))
        ops.append(ins)
        size += 1
    return leaves, ops, draw(st.integers(0, size - 1))


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=800, **SETTINGS)
@given(programs())
@example(([-4.0, 2.0], [("bin", "+", 0, 1), ("bin", "*", 0, 1), ("pow", 1, 3),
                        ("bin", "+", 3, 4), ("bin", "-", 2, 5), ("pow", 6, 2),
                        ("rconst", "/", 7, 2.0), ("lconst", "/", 10.0, 7),
                        ("bin", "+", 8, 9)], 3))
@example(([3.0], [("bin", "*", 0, 0), ("bin", "+", 1, 1), ("bin", "/", 2, 0)], 1))
@example(([0.0], [("pow", 0, 0.5)], 0))                   # backward: 0.0 ** -0.5
@example(([-8.0], [("pow", 0, 1 / 3)], 0))                 # complex
@example(([10], [("pow", 0, 5), ("pow", 1, 5)], 0))       # exact int past 2**53
@example(([np.float64(0.0)], [("pow", 0, -1)], 0))        # numpy: inf, not an error
@example(([np.float64(0.0)], [("pow", 0, 0.5)], 0))       # numpy: inf in backward
@example(([-3.0], [("relu", 0), ("neg", 1), ("rconst", "+", 2, -0.0)], 0))  # int 0
def test_random_programs(program):
    run_differential(*program)


@settings(max_examples=400, **SETTINGS)
@given(programs(leaf_st=special_leaves, const_st=special_constants,
                exp_st=special_exponents, max_leaves=4, max_ops=16))
@example(([math.inf, 0.0], [("bin", "*", 0, 1), ("pow", 0, -1), ("relu", 2)], 0))
@example(([math.nan], [("pow", 0, 0), ("bin", "+", 1, 0)], 0))
@example(([0.0], [("pow", 0, -math.inf)], 0))
@example(([-math.inf, 2.0], [("pow", 0, 0.5), ("bin", "-", 0, 0), ("relu", 3)], 0))
def test_random_programs_with_nan_and_inf(program):
    run_differential(*program)


def test_random_programs_exercise_the_comparison():
    # The generator must reach every branch of the comparison, not just the
    # easy one: draw a fixed sample and count how each program ended.
    stops, backward = {}, {}
    rng = random.Random(1234)
    for _ in range(200):
        leaves = [rng.choice([rng.uniform(-3, 3), rng.randint(-3, 3), 0.0,
                              np.float64(rng.uniform(-3, 3))])
                  for _ in range(rng.randint(1, 4))]
        ops, size = [], len(leaves)
        for _ in range(rng.randint(1, 12)):
            kind = rng.choice(KINDS)
            a, b = rng.randrange(size), rng.randrange(size)
            sym = rng.choice(sorted(_BIN))
            k = rng.choice([2, -1, 0.5, 0, np.float64(1.5)])
            e = rng.choice([2, -1, 0.5, 1 / 3, 3, -0.5])
            ops.append({"bin": ("bin", sym, a, b), "rconst": ("rconst", sym, a, k),
                        "lconst": ("lconst", sym, k, a), "pow": ("pow", a, e),
                        "neg": ("neg", a), "relu": ("relu", a)}[kind])
            size += 1
        rep = run_differential(leaves, ops, rng.randrange(size))
        stops[rep.stop] = stops.get(rep.stop, 0) + 1
        backward[rep.backward] = backward.get(rep.backward, 0) + 1
    assert stops.get(None, 0) > 100, stops          # many run to the end
    assert backward.get("compared", 0) > 100, backward
    assert any(s and s.startswith("both raised") for s in stops), stops
    assert stops.get("complex", 0) > 0, stops


# --- micrograd's demo: micrograd's nn on pygrad Values ---------------------------------

def train_demo(Value, steps=10, n=30):
    """micrograd's demo.ipynb training loop, with micrograd.nn.Value = Value."""
    X, y = demo.make_moons(n)
    random.seed(1337)
    model = micrograd.nn.MLP(2, [16, 16, 1])
    initial = [p.data for p in model.parameters()]
    assert all(type(p) is Value for p in model.parameters())

    trajectory, first_grads = [], None
    for k in range(steps):
        total_loss, acc = demo.svm_loss(model, X, y, Value)
        model.zero_grad()
        total_loss.backward()
        if first_grads is None:
            first_grads = [p.grad for p in model.parameters()]
        learning_rate = demo.learning_rate(k)
        for p in model.parameters():
            p.data -= learning_rate * p.grad
        trajectory.append((total_loss.data, acc))
    return initial, first_grads, trajectory, [p.data for p in model.parameters()]


def test_demo_training_micrograd_nn_on_pygrad_values(monkeypatch):
    reference = train_demo(MG)
    with monkeypatch.context() as m:
        m.setattr(micrograd.nn, "Value", PG)
        ours = train_demo(PG)
    assert micrograd.nn.Value is MG
    (m_init, m_grads, m_traj, m_final), (p_init, p_grads, p_traj, p_final) = reference, ours
    # Same initial weights, bit for bit: the same random draws.
    assert len(m_init) == len(p_init) == 2 * 16 + 16 + 16 * 16 + 16 + 16 + 1
    assert all(_same_value(a, b) for a, b in zip(m_init, p_init))
    # First step: a pure differential of one big graph.
    assert all(_close(a, b) for a, b in zip(m_grads, p_grads))
    assert any(g != 0 for g in p_grads)
    # The trajectory and the final weights.
    assert len(m_traj) == len(p_traj) == 10
    for (ml, ma), (pl, pa) in zip(m_traj, p_traj):
        assert math.isclose(ml, pl, rel_tol=1e-9), (ml, pl)
        assert ma == pa
    assert p_traj[-1][0] < p_traj[0][0]  # it trains
    assert all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
               for a, b in zip(m_final, p_final))
