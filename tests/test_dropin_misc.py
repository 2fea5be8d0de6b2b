"""Issue 10, part 3: grad mode and inputs.

* ``with no_grad():`` a custom Python op records no children and keeps no
  closure, like every other op there.
* ``Replay.feed`` takes real numbers only: strings and complex values raise
  TypeError (before, "1.5" was parsed and 1+2j lost its imaginary part).
* ``pygrad.nn`` given the wrong number of inputs raises ValueError naming the
  count it expects; micrograd's ``zip`` silently truncates (shown here).
"""
import gc
import random
import warnings
import weakref
from fractions import Fraction

import micrograd.engine as mg_engine
import micrograd.nn as mg_nn
import numpy as np
import pytest

import pygrad
import pygrad.nn as pg_nn
from pygrad import Value

MG = mg_engine.Value

# --- no_grad and custom Python ops -----------------------------------------------------

def cube_with_spy(x, calls):
    """micrograd's custom-op pattern: the closure refers to `out` and to `x`."""
    out = Value(x.data ** 3, (x,), "cube")

    def _backward():
        calls.append(out)
        x.grad += 3 * x.data ** 2 * out.grad
    out._backward = _backward
    return out, _backward


def test_custom_op_in_grad_mode_records_its_child():
    """The reference behaviour outside no_grad, so the test below means something."""
    calls = []
    x = Value(2.0)
    out, fn = cube_with_spy(x, calls)
    assert out._prev == {x} and out._op == "cube"
    out.backward()
    assert x.grad == 12.0 and len(calls) == 1


def test_custom_op_under_no_grad_records_nothing():
    calls = []
    x = Value(2.0)
    with pygrad.no_grad():
        out, fn = cube_with_spy(x, calls)
        built_in = x * 3.0
    assert out.data == 8.0
    assert built_in._prev == set()  # as every built-in op under no_grad
    assert out._prev == set()
    out.backward()  # a leaf: nothing flows to x, the closure is not called
    assert calls == [] and x.grad == 0.0 and out.grad == 1.0


def test_custom_op_under_no_grad_keeps_no_closure():
    """After `del fn` and dropping `out`, nothing holds the closure: plain
    reference counting and gc.collect() free it, with no wait for pygrad's
    periodic collection of custom ops."""
    x = Value(2.0)
    gc.collect()  # earlier tests' cyclic garbage (grad-mode custom ops) is not counted
    before = pygrad.live_nodes()
    with pygrad.no_grad():
        out, fn = cube_with_spy(x, [])
    closure = weakref.ref(fn)
    del fn, out
    gc.collect()
    assert closure() is None
    assert pygrad.live_nodes() == before


# --- Replay.feed takes real numbers only ---------------------------------------------

def small_replay():
    a, b = Value(0.0), Value(0.0)
    loss = a * b + a
    return pygrad.Replay(loss, inputs=[a, b]), a, b


BAD_FEEDS = [  # (id, values)
    ("list with a str", ["1.5", 2.0]),
    ("tuple with a str", ("1.5", 2.0)),
    ("list with bytes", [b"1.5", 2.0]),
    ("list with np.str_", [np.str_("1.5"), 2.0]),
    ("numpy str array", np.array(["1.5", "2"])),
    ("object array with a str", np.array(["1.5", 2.0], dtype=object)),
    ("list with a complex", [1 + 2j, 2.0]),
    ("list with a complex of zero imaginary part", [complex(1.5, 0.0), 2.0]),
    ("list with np.complex128", [np.complex128(1 + 2j), 2.0]),
    ("numpy complex array", np.array([1 + 2j, 2.0])),
    ("numpy complex array, imaginary parts zero", np.array([1.5 + 0j, 2 + 0j])),
    ("list with None", [None, 2.0]),
    ("numpy bytes array", np.array([b"1.5", b"2"])),
    ("numpy datetime array", np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[D]")),
]


@pytest.mark.parametrize("values", [v for _, v in BAD_FEEDS], ids=[n for n, _ in BAD_FEEDS])
def test_feed_refuses_what_is_not_a_real_number(values):
    step, a, b = small_replay()
    step.feed([0.25, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's ComplexWarning is not an answer
        with pytest.raises(TypeError):
            step.feed(values)
    assert (a.data, b.data) == (0.25, 0.5)  # nothing was set
    step.close()


GOOD_FEEDS = [
    ("floats", [1.5, -2.0]),
    ("ints", [3, -2]),
    ("floats and ints", [1.5, 2]),
    ("tuple", (1.5, -2.0)),
    ("bools", [True, False]),
    ("numpy scalars", [np.float32(1.5), np.int64(-2)]),
    ("Fraction", [Fraction(3, 2), -2.0]),
    ("float64 array", np.array([1.5, -2.0])),
    ("float32 array", np.array([1.5, -2.0], dtype=np.float32)),
    ("int array", np.array([3, -2])),
    ("2-d float array", np.array([[1.5], [-2.0]])),
    ("object array of floats", np.array([1.5, -2.0], dtype=object)),
]


@pytest.mark.parametrize("values", [v for _, v in GOOD_FEEDS], ids=[n for n, _ in GOOD_FEEDS])
def test_feed_takes_real_numbers(values):
    step, a, b = small_replay()
    expected = [float(v) for v in np.asarray(values, dtype=object).ravel()]
    step.feed(values)
    assert [a.data, b.data] == expected
    assert step.forward() == expected[0] * expected[1] + expected[0]
    step.close()


# --- pygrad.nn and the wrong number of inputs -------------------------------------------

def test_micrograd_truncates_inputs_silently():
    """micrograd's Neuron zips weights with inputs: too few inputs use the first
    weights only, too many ignore the extras."""
    random.seed(1)
    n = mg_nn.Neuron(3, nonlin=False)
    w, b = [wi.data for wi in n.w], n.b.data
    assert n([1.0, 2.0]).data == b + w[0] * 1.0 + w[1] * 2.0
    assert n([1.0, 2.0, 3.0, 4.0]).data == n([1.0, 2.0, 3.0]).data
    random.seed(1)
    model = mg_nn.MLP(3, [4, 1])
    assert model([1.0, 2.0, 3.0, 4.0]).data == model([1.0, 2.0, 3.0]).data
    assert isinstance(model([1.0]), MG)


class PlainLayer(pg_nn.Layer):
    """A subclass: the Python path."""


def _mlp_with_plain_lists():
    model = pg_nn.MLP(3, [4, 1])
    model.layers = list(model.layers)
    return model


MODULES = [
    ("Neuron(3)", lambda: pg_nn.Neuron(3)),
    ("Neuron(3, nonlin=False)", lambda: pg_nn.Neuron(3, nonlin=False)),
    ("Layer(3, 2)", lambda: pg_nn.Layer(3, 2)),
    ("Layer(3, 1)", lambda: pg_nn.Layer(3, 1)),
    ("MLP(3, [4, 1])", lambda: pg_nn.MLP(3, [4, 1])),
    ("MLP(3, [4, 4, 2])", lambda: pg_nn.MLP(3, [4, 4, 2])),
    ("Layer subclass", lambda: PlainLayer(3, 2)),
    ("MLP with a plain list of layers", _mlp_with_plain_lists),
]


@pytest.mark.parametrize("x", [[1.0, 2.0], [1.0, 2.0, 3.0, 4.0], np.array([1.0, 2.0]), [],
                               [Value(1.0), Value(2.0), Value(3.0), Value(4.0)]],
                         ids=["2 floats", "4 floats", "numpy array of 2", "none",
                              "4 Values"])
@pytest.mark.parametrize("make", [m for _, m in MODULES], ids=[n for n, _ in MODULES])
def test_wrong_number_of_inputs_is_a_value_error(make, x):
    random.seed(2)
    module = make()
    with pytest.raises(ValueError) as caught:
        module(x)
    message = str(caught.value)
    assert "3 inputs" in message and f"got {len(x)}" in message, message
    with pygrad.no_grad(), pytest.raises(ValueError):
        module(x)
    assert module([1.0, 2.0, 3.0]) is not None  # and the right count still works
