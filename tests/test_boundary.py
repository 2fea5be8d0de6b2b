"""Boundary fuzzing: garbage to every C entry point and to the Python wrapper.

The contract (DESIGN.md, "Safety at the boundary"): every C entry point
validates what it is given and returns an error code instead of touching bad
memory, and the Python layer turns codes into exceptions, so no Python program,
however wrong, crashes the interpreter.  Each test here feeds garbage, expects
a Python exception (or an error code from the raw C API), and then checks that
nothing changed: the arena holds exactly the nodes it held before, and a fresh
computation still gives micrograd's numbers.

What the raw C API cannot check, and this file therefore does not feed it: a
pointer paired with a count larger than the array behind it (C cannot know an
array's length), and a pg_grad_off * that pg_grad_off_new did not make (C
dereferences it), nor a pg_tape_ref * given as a Python list or tuple (cffi
makes it a temporary array of that many structs, maybe none, to which C reads
and writes one).  pygrad's own Python code always passes pointers and counts
together, hands each token straight to a gc object, and makes each
pg_tape_ref with ffi.new.

The raw C API is called with the Python layer off (the `raw` fixture), as a C
program would use it: with it on, every handle handed out waits in the
nursery for pygrad's next sweep, which releases those no Value kept -- the
test's own raw handles among them.  No Value is made while it is off.
"""
import copy
import gc
import math
import pickle
import threading

import micrograd.engine
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import pygrad
import pygrad.engine
from pygrad import Value
from pygrad._core import PygradError, StaleValueError, ffi, lib
from pygrad.nn import MLP
from pygrad.optim import SGD, Adam

from support import cube, readme_example, settle, unary_ops

MV = micrograd.engine.Value

ERR_HANDLE, ERR_ARG, ERR_TAPE = lib.PG_ERR_HANDLE, lib.PG_ERR_ARG, lib.PG_ERR_TAPE

# Any Python exception the wrapper may raise for garbage: wrong types, stale or
# garbage handles (StaleValueError is a ValueError), a missing _h.
PYTHON_ERRORS = (TypeError, ValueError, OverflowError, AttributeError, PygradError, KeyError)


# --- health: after each abuse the engine still works and nothing leaked ------------

def reference_computation(V):
    """micrograd's README expression: (g.data, a.grad, b.grad)."""
    nodes = readme_example(V)
    nodes["g"].backward()
    return nodes["g"].data, nodes["a"].grad, nodes["b"].grad


EXPECTED = reference_computation(MV)


def assert_healthy(start):
    """A fresh computation is right, and the arena is back to `start` nodes."""
    data, *grads = reference_computation(Value)
    assert data == EXPECTED[0]  # values bit for bit; gradients to rounding (the
    assert grads == pytest.approx(EXPECTED[1:], rel=1e-12, abs=0)  # order of += differs)
    x = Value(0.5)
    y = (x.tanh() + x.exp() + x.sigmoid() + x.log()) * x
    y.backward()
    assert x.grad != 0.0 and math.isfinite(x.grad)
    del x, y
    assert settle() == start


@pytest.fixture
def healthy():
    """Measures the arena before the test, and checks its health after."""
    start = settle()
    yield start
    assert_healthy(start)


# --- the raw C API: a sandbox graph to aim garbage next to ---------------------------

class Sandbox:
    """A few live nodes and a tape, to check that garbage calls change nothing.

    a, b: leaves; c = a * b; tape: c's graph.  freed: a handle whose node is
    gone and whose slot is free; stale: a handle whose slot now holds another
    node (d)."""

    def __init__(self):
        self.a = lib.pg_leaf(2.0)
        self.b = lib.pg_leaf(3.0)
        self.c = lib.pg_mul(self.a, self.b)
        self.tape = lib.pg_tape_record(self.c)
        stale = lib.pg_leaf(7.0)
        assert lib.pg_release(stale) == lib.PG_OK
        self.d = self.leaf_in_slot(stale >> lib.PG_GEN_BITS, 8.0)  # one generation on
        assert self.d != stale
        self.stale = stale
        self.freed = lib.pg_leaf(9.0)
        assert lib.pg_release(self.freed) == lib.PG_OK
        dead_tape_root = lib.pg_leaf(1.0)
        self.freed_tape = lib.pg_tape_record(dead_tape_root)
        assert lib.pg_tape_free(self.freed_tape) == lib.PG_OK
        assert lib.pg_release(dead_tape_root) == lib.PG_OK
        assert min(self.a, self.b, self.c, self.tape, self.d) >= 0

    @staticmethod
    def leaf_in_slot(slot, x):
        """A new leaf in the free slot `slot`: a sparse arena hands out its low
        slots first (a high one waits at the end of the free list), so leaves
        are made until one lands there, and the others released."""
        others = []
        h = lib.pg_leaf(x)
        while h >> lib.PG_GEN_BITS != slot:
            others.append(h)
            h = lib.pg_leaf(x)
        assert lib.pg_release_many(others, len(others)) == 0
        return h

    def snapshot(self):
        nodes = (self.a, self.b, self.c, self.d)
        return (lib.pg_live_nodes(),
                [(lib.pg_data(h), lib.pg_grad(h), lib.pg_op(h), lib.pg_child_count(h),
                  lib.pg_internal_refs(h), lib.pg_external_refs(h)) for h in nodes],
                lib.pg_tape_length(self.tape), lib.pg_valid(self.freed), lib.pg_valid(self.stale))

    def close(self):
        assert lib.pg_tape_free(self.tape) == lib.PG_OK
        assert lib.pg_release_many([self.a, self.b, self.c, self.d], 4) == 0


@pytest.fixture
def raw(healthy):
    """The Python layer off for a test of the raw C API (see the module
    docstring); the arena is back to `healthy` nodes after it."""
    pygrad.live_nodes()  # nothing left for a sweep: the nursery holds calls in flight only
    kept = len(pygrad._lifetime.values)  # every Value made is kept there
    old = lib.pg_python_layer(0)
    try:
        yield healthy
    finally:
        assert lib.pg_python_layer(old) == 0  # the test left it off
    assert len(pygrad._lifetime.values) == kept, "a Value was made with the Python layer off"
    assert pygrad.live_nodes() == healthy


@pytest.fixture
def sandbox(raw):
    sb = Sandbox()
    yield sb
    sb.close()


def invalid_handles(sb):
    return [-1, -2, -2**63, 2**63 - 1, 2**62, 1 << 42, (1 << 42) - 1, (2**32 - 2) << 10,
            sb.freed, sb.stale]


def invalid_tapes(sb):
    return [-1, -2**63, 2**63 - 1, 2**62, 1 << 32, (1 << 31) - 1, sb.freed_tape,
            sb.tape + (1 << 32)]  # the right slot, the wrong generation


# Garbage of the wrong Python type, by parameter kind: cffi must refuse it.
NOT_INTS = ["1", b"1", None, 1.5, float("nan"), 2**64, 2**63, -2**63 - 1, 10**40, [], (),
            object(), 1j]
NOT_INT32S = NOT_INTS + [2**31, -2**31 - 1]
NOT_DOUBLES = ["1.0", b"1", None, [], object(), 1j, 2**1100, -(2**1100)]

# Each entry point: its parameters' kinds.
#   h node handle   t tape id   d double   n count   i index   f int32 flag
#   e int64 setting (Python layer, node limit)   hs/ns/ds/fs: arrays of handles,
#   sizes, doubles, int32s, read by C (hs: also reordered, for pg_sweep_end)
#   ho/do: arrays C writes (handles, doubles)   pr: a pg_tape_ref (a struct
#   Python makes with ffi.new)   pg: a pointer to the opaque pg_grad_off
SIGNATURES = {
    "pg_leaf": "d", "pg_add": "hh", "pg_mul": "hh", "pg_sub": "hh", "pg_div": "hh",
    "pg_pow": "hh", "pg_add_const": "hd", "pg_mul_const": "hd", "pg_rsub_const": "hd",
    "pg_rdiv_const": "hd", "pg_rpow_const": "hd", "pg_pow_const": "hdf",
    **{f"pg_{name}": "h" for name in unary_ops()},  # the op table's
    "pg_layer": ["hs", "hs", "hs", "n", "n", "f", "ho"],
    "pg_mlp": ["hs", "n", "ns", "fs", "n", "hs", "ho"],
    "pg_custom_node": ["d", "hs", "n"], "pg_set_custom_backward": "h",
    "pg_retain": "h", "pg_release": "h", "pg_release_many": ["hs", "n"],
    "pg_data": "h", "pg_grad": "h", "pg_set_data": "hd", "pg_set_grad": "hd",
    "pg_set_data_many": ["hs", "ds", "n"], "pg_valid": "h", "pg_op": "h", "pg_op_name": "e",
    "pg_flags": "h",
    "pg_exponent": "h", "pg_child_count": "h", "pg_child_retain": "hi",
    "pg_internal_refs": "h", "pg_external_refs": "h",
    "pg_backward": "h", "pg_node_backward": "h",
    "pg_tape_record": "h", "pg_tape_free": "t",
    "pg_tape_record_into": ["pr", "h"], "pg_tape_ref_clear": ["pr"],
    "pg_tape_length": "t", "pg_tape_node": "ti",
    "pg_tape_backward": "ti", "pg_tape_custom_ops": "t", "pg_tape_forward": "t",
    "pg_tape_replay_backward": "t", "pg_tape_diff": "tt", "pg_tape_skip_grads": ["t", "hs", "n"],
    "pg_tape_groups": "t",
    "pg_zero_grad": ["hs", "n"], "pg_sgd_step": ["hs", "do", "n", "d", "d", "d"],
    "pg_adam_step": ["hs", "do", "do", "n", "n", "d", "d", "d", "d", "d"],
    "pg_grad_off_new": "", "pg_grad_off_start": ["pg"], "pg_grad_off_release": ["pg"],
    "pg_grad_recording": "",
    "pg_python_layer": "e", "pg_sweep_begin": "", "pg_sweep_end": ["hs", "n", "hs", "n"],
    "pg_set_stateful": "h",
    "pg_live_nodes": "", "pg_slots_in_use": "", "pg_set_node_limit": "e",
}

# The C type behind each pointer kind; a NULL one is safe to pass to each.
POINTERS = {"pr": "pg_tape_ref *", "pg": "pg_grad_off *"}


def new_tape_ref():
    """An empty pg_tape_ref (ffi.new zeroes it) owned by a gc object, as
    pygrad makes them: a tape recorded into it is freed when it goes."""
    return ffi.gc(ffi.new("pg_tape_ref *"), lib.pg_tape_ref_clear)


def kinds(name):
    sig = SIGNATURES[name]
    return list(sig) if isinstance(sig, str) else sig


def valid_args(name, sb):
    """Arguments for a call that would succeed: garbage replaces one of them."""
    n1 = ffi.new("int64_t[]", 1)
    table = {
        "pg_layer": [[sb.a], [sb.b], [sb.c], 1, 1, 0, n1],
        "pg_mlp": [[sb.a, sb.b], 2, [1, 1], [0], 1, [sb.c], n1],
        "pg_custom_node": [1.0, [sb.a], 1],
        "pg_release_many": [[sb.a], 1],
        "pg_tape_skip_grads": [sb.tape, [sb.a], 1],
        "pg_set_data_many": [[sb.a], [2.0], 1],
        "pg_zero_grad": [[sb.a], 1],
        "pg_sgd_step": [[sb.a], ffi.new("double[]", 1), 1, 0.0, 0.9, 0.0],
        "pg_adam_step": [[sb.a], ffi.new("double[]", 1), ffi.new("double[]", 1), 1, 1, 0.0,
                         0.9, 0.999, 1e-8, 0.0],
        # kept: a sandbox node with no nursery entry, which stays as it is;
        # dropped: a freed node, whose release is refused
        "pg_sweep_end": [[sb.a], 1, [sb.freed], 1],
        "pg_child_retain": [sb.c, 0], "pg_tape_node": [sb.tape, 0],
        "pg_tape_backward": [sb.tape, 0], "pg_pow_const": [sb.a, 2.0, 0],
        "pg_python_layer": [0], "pg_set_node_limit": [0], "pg_op_name": [lib.PG_OP_ADD],
    }
    if name in table:
        return table[name]
    simple = {"h": sb.a, "t": sb.tape, "d": 1.0,
              **{kind: ffi.cast(ctype, 0) for kind, ctype in POINTERS.items()}}
    simple["pr"] = new_tape_ref()  # a real one: C reads and writes the struct
    args = [simple[k] for k in kinds(name)]
    if kinds(name) == ["h", "h"]:
        args[1] = sb.b
    return args


def type_garbage(kind):
    if kind in ("h", "t", "n", "i", "e"):
        return NOT_INTS
    if kind in POINTERS:  # anything but a pointer of its own type (or void *, which cffi takes)
        others = [ffi.cast(ctype, 0) for k, ctype in POINTERS.items() if k != kind]
        garbage = NOT_INTS + [0, 1, b"\0" * 8, bytearray(8), [0], ffi.new("int64_t[]", 1),
                              ffi.new("char[]", 8)] + others
        if kind == "pr":  # a list or tuple is an array of structs to cffi (module docstring)
            garbage = [g for g in garbage if type(g) not in (list, tuple)]
            garbage += [[0], [1.5], ["x"], [None], ffi.new("int64_t[2]"), ffi.new("double[2]"),
                        ffi.new("pg_tape_ref **")]
        return garbage
    if kind == "f":
        return NOT_INT32S
    if kind == "d":
        return NOT_DOUBLES
    common = ["abc", b"abc", 5, 1.5, None, object(), bytearray(16), ["x"], [None], [1j]]
    if kind in ("ds", "do"):
        return common + [ffi.new("int64_t[]", 1), ffi.new("float[]", 1)]
    too_big = [2**31] if kind == "fs" else [2**64]
    wrong = ffi.new("int64_t[]", 1) if kind == "fs" else ffi.new("int32_t[]", 1)
    return common + [[1.5], too_big, wrong, ffi.new("double[]", 1)]


def test_every_entry_point_is_covered():
    declared = {name for name in dir(lib) if name.startswith("pg_")}
    assert declared == set(SIGNATURES), "new C entry points need boundary tests here"
    for name in declared:
        assert len(ffi.typeof(getattr(lib, name)).args) == len(kinds(name)), name


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_wrong_python_types_are_refused_by_every_entry_point(name, sandbox):
    before = sandbox.snapshot()
    fn = getattr(lib, name)
    for position, kind in enumerate(kinds(name)):
        for garbage in type_garbage(kind):
            args = valid_args(name, sandbox)
            args[position] = garbage
            with pytest.raises((TypeError, OverflowError)):
                fn(*args)
    with pytest.raises(TypeError):  # wrong number of arguments
        fn(*(valid_args(name, sandbox) + [0]))
    if kinds(name):
        with pytest.raises(TypeError):
            fn()
    assert sandbox.snapshot() == before


HANDLE_ERROR = {"pg_valid": 0, "pg_data": "nan", "pg_grad": "nan", "pg_exponent": "nan",
                "pg_release_many": 1,
                "pg_sweep_end": 0}  # released nothing


@pytest.mark.parametrize("name", sorted(n for n in SIGNATURES
                                        if any(k in ("h", "hs") for k in kinds(n))))
def test_invalid_handles_in_every_position_are_refused(name, sandbox):
    before = sandbox.snapshot()
    fn = getattr(lib, name)
    want = HANDLE_ERROR.get(name, ERR_HANDLE)
    for position, kind in enumerate(kinds(name)):
        if kind not in ("h", "hs"):
            continue
        for bad in invalid_handles(sandbox):
            args = valid_args(name, sandbox)
            if kind == "h":
                args[position] = bad
            else:  # the bad handle last in an array of otherwise good ones
                args[position] = list(args[position])
                args[position][-1] = bad
            got = fn(*args)
            if want == "nan":
                assert math.isnan(got), (name, bad)
            else:
                assert got == want, (name, position, bad)
    assert sandbox.snapshot() == before


def test_a_bad_handle_anywhere_in_an_array_changes_nothing(sandbox):
    before = sandbox.snapshot()
    sb = sandbox
    for bad in invalid_handles(sb):
        assert lib.pg_set_data_many([sb.a, bad, sb.b], [5.0, 6.0, 7.0], 3) == ERR_HANDLE
        assert lib.pg_zero_grad([sb.a, sb.b, bad], 3) == ERR_HANDLE
        vel = ffi.new("double[]", [1.0, 1.0])
        assert lib.pg_sgd_step([sb.a, bad], vel, 2, 0.1, 0.9, 0.1) == ERR_HANDLE
        assert list(vel) == [1.0, 1.0]
        m, v = ffi.new("double[]", 2), ffi.new("double[]", 2)
        assert lib.pg_adam_step([bad, sb.a], m, v, 2, 1, 0.1, 0.9, 0.999, 1e-8, 0.0) == ERR_HANDLE
        assert list(m) == list(v) == [0.0, 0.0]
        assert lib.pg_custom_node(1.0, [sb.a, sb.b, bad], 3) == ERR_HANDLE
        # a sweep's kept handles without nursery entries stay as they are; dropped
        # handles of no live node release nothing
        assert lib.pg_sweep_end([sb.a, bad, sb.b], 3, [bad, sb.freed, bad], 3) == 0
        out = ffi.new("int64_t[]", [-99, -99])
        assert lib.pg_layer([sb.a, sb.b, sb.c, bad], [sb.a, sb.b], [sb.c, sb.d], 2, 2, 1,
                            out) == ERR_HANDLE
        assert list(out) == [-99, -99]
        assert lib.pg_mlp([sb.a, sb.b, bad], 3, [2, 1], [1], 1, [sb.c, sb.d], out) == ERR_HANDLE
        assert lib.pg_mlp([sb.a, sb.b, sb.c], 3, [2, 1], [1], 1, [sb.c, bad], out) == ERR_HANDLE
        # release_many releases the good ones and counts the bad: give back what it took
        assert lib.pg_retain(sb.a) == lib.PG_OK
        assert lib.pg_release_many([bad, sb.a, bad], 3) == 2
    assert sandbox.snapshot() == before


@pytest.mark.parametrize("name", sorted(n for n in SIGNATURES if "t" in kinds(n)))
def test_invalid_tape_ids_are_refused(name, sandbox):
    before = sandbox.snapshot()
    fn = getattr(lib, name)
    for position, kind in enumerate(kinds(name)):
        if kind != "t":
            continue
        for bad in invalid_tapes(sandbox):
            args = valid_args(name, sandbox)
            args[position] = bad
            assert fn(*args) == ERR_TAPE, (name, bad)
    assert sandbox.snapshot() == before


BAD_COUNTS = [-1, -2, -2**31, -2**63]


def test_negative_counts_and_null_pointers_are_refused(sandbox):
    before = sandbox.snapshot()
    sb, NULL = sandbox, ffi.NULL
    out = ffi.new("int64_t[]", 4)
    d1 = ffi.new("double[]", 1)
    for n in BAD_COUNTS:
        assert lib.pg_release_many([sb.a], n) == ERR_ARG
        assert lib.pg_set_data_many([sb.a], [1.0], n) == ERR_ARG
        assert lib.pg_custom_node(1.0, [sb.a], n) == ERR_ARG
        assert lib.pg_zero_grad([sb.a], n) == ERR_ARG
        assert lib.pg_sgd_step([sb.a], d1, n, 0.1, 0.9, 0.0) == ERR_ARG
        assert lib.pg_adam_step([sb.a], d1, d1, n, 1, 0.1, 0.9, 0.999, 1e-8, 0.0) == ERR_ARG
        assert lib.pg_sweep_end([sb.a], n, [sb.freed], 1) == ERR_ARG
        assert lib.pg_sweep_end([sb.a], 1, [sb.freed], n) == ERR_ARG
        assert lib.pg_layer([sb.a], [sb.b], [sb.c], n, 1, 0, out) == ERR_ARG
        assert lib.pg_layer([sb.a], [sb.b], [sb.c], 1, n, 0, out) == ERR_ARG
        assert lib.pg_mlp([sb.a, sb.b], n, [1, 1], [0], 1, [sb.c], out) == ERR_ARG
        assert lib.pg_mlp([sb.a, sb.b], 2, [1, 1], [0], n, [sb.c], out) == ERR_ARG
        assert lib.pg_mlp([sb.a, sb.b], 2, [n, 1], [0], 1, [sb.c], out) == ERR_ARG
        assert lib.pg_mlp([sb.a, sb.b], 2, [1, n], [0], 1, [sb.c], out) == ERR_ARG
        assert lib.pg_child_retain(sb.c, n) == ERR_ARG
        assert lib.pg_tape_node(sb.tape, n) == ERR_ARG
        assert lib.pg_tape_backward(sb.tape, n) == ERR_ARG
        assert lib.pg_set_node_limit(n) == ERR_ARG
    # indices past the end (c has 2 children, the tape 3 nodes)
    for i in (3, 4, 2**31, 2**32, 2**62, 2**63 - 1):
        assert lib.pg_child_retain(sb.c, i - 1) == ERR_ARG
        assert lib.pg_tape_node(sb.tape, i) == ERR_ARG
        assert lib.pg_tape_backward(sb.tape, i + 1 if i < 2**63 - 1 else i) == ERR_ARG
    assert lib.pg_child_retain(sb.a, 0) == ERR_ARG  # a leaf has no children
    # NULL where C reads or writes an array of a non-zero count
    assert lib.pg_release_many(NULL, 1) == ERR_ARG
    assert lib.pg_set_data_many(NULL, [1.0], 1) == ERR_ARG
    assert lib.pg_set_data_many([sb.a], NULL, 1) == ERR_ARG
    assert lib.pg_custom_node(1.0, NULL, 1) == ERR_ARG
    assert lib.pg_sweep_end(NULL, 1, [sb.freed], 1) == ERR_ARG
    assert lib.pg_sweep_end([sb.a], 1, NULL, 1) == ERR_ARG
    assert lib.pg_zero_grad(NULL, 1) == ERR_ARG
    assert lib.pg_sgd_step(NULL, d1, 1, 0.1, 0.0, 0.0) == ERR_ARG
    assert lib.pg_sgd_step([sb.a], NULL, 1, 0.1, 0.9, 0.0) == ERR_ARG  # momentum needs it
    assert lib.pg_adam_step([sb.a], NULL, d1, 1, 1, 0.1, 0.9, 0.999, 1e-8, 0.0) == ERR_ARG
    assert lib.pg_adam_step([sb.a], d1, NULL, 1, 1, 0.1, 0.9, 0.999, 1e-8, 0.0) == ERR_ARG
    for args in ([NULL, [sb.b], [sb.c], 1, 1, 0, out], [[sb.a], NULL, [sb.c], 1, 1, 0, out],
                 [[sb.a], [sb.b], NULL, 1, 1, 0, out], [[sb.a], [sb.b], [sb.c], 1, 1, 0, NULL]):
        assert lib.pg_layer(*args) == ERR_ARG
    for args in ([NULL, 2, [1, 1], [0], 1, [sb.c], out],
                 [[sb.a, sb.b], 2, NULL, [0], 1, [sb.c], out],
                 [[sb.a, sb.b], 2, [1, 1], NULL, 1, [sb.c], out],
                 [[sb.a, sb.b], 2, [1, 1], [0], 1, NULL, out],
                 [[sb.a, sb.b], 2, [1, 1], [0], 1, [sb.c], NULL]):
        assert lib.pg_mlp(*args) == ERR_ARG
    # shapes that do not add up, and sizes past what a node can hold
    assert lib.pg_mlp([sb.a, sb.b], 3, [1, 1], [0], 1, [sb.c], out) == ERR_ARG
    assert lib.pg_mlp([sb.a, sb.b], 1, [1, 1], [0], 1, [sb.c], out) == ERR_ARG
    assert lib.pg_mlp([sb.a], 2**62, [2**31, 2**31], [0], 1, [sb.c], out) == ERR_ARG
    assert lib.pg_layer([sb.a], [sb.b], [sb.c], 2**31, 1, 0, out) == ERR_ARG
    assert lib.pg_layer([sb.a], [sb.b], [sb.c], 1, 2**31, 0, out) == ERR_ARG
    assert lib.pg_layer([sb.a], [sb.b], [sb.c], 2**40, 2**40, 0, out) == ERR_ARG
    assert lib.pg_custom_node(1.0, [sb.a], 2**32) == ERR_ARG
    assert lib.pg_adam_step([sb.a], d1, d1, 1, 0, 0.1, 0.9, 0.999, 1e-8, 0.0) == ERR_ARG
    assert lib.pg_adam_step([sb.a], d1, d1, 1, -2**63, 0.1, 0.9, 0.999, 1e-8, 0.0) == ERR_ARG
    for flags in (4, 8, -1, 2**31 - 1, -2**31):
        assert lib.pg_pow_const(sb.a, 2.0, flags) == ERR_ARG
    for act in (lib.PG_ACT_SIGMOID + 1, -1, 2**31 - 1, -2**31):  # activations C has not
        assert lib.pg_layer([sb.a], [sb.b], [sb.c], 1, 1, act, out) == ERR_ARG
        assert lib.pg_mlp([sb.a, sb.b], 2, [1, 1], [act], 1, [sb.c], out) == ERR_ARG
        assert lib.pg_mlp([sb.a, sb.b, sb.a, sb.b], 4, [1, 1, 1], [0, act], 2, [sb.c],
                          out) == ERR_ARG
    assert sandbox.snapshot() == before


def test_zero_counts_with_null_pointers_are_fine(sandbox):
    before = sandbox.snapshot()
    NULL = ffi.NULL
    assert lib.pg_release_many(NULL, 0) == 0
    assert lib.pg_set_data_many(NULL, NULL, 0) == lib.PG_OK
    assert lib.pg_zero_grad(NULL, 0) == lib.PG_OK
    assert lib.pg_sgd_step(NULL, NULL, 0, 0.1, 0.9, 0.0) == lib.PG_OK
    assert lib.pg_adam_step(NULL, NULL, NULL, 0, 1, 0.1, 0.9, 0.999, 1e-8, 0.0) == lib.PG_OK
    assert lib.pg_layer(NULL, NULL, NULL, 0, 0, 0, NULL) == lib.PG_OK
    h = lib.pg_custom_node(4.0, NULL, 0)  # a custom op with no children is allowed
    assert h >= 0 and lib.pg_data(h) == 4.0 and lib.pg_child_count(h) == 0
    assert lib.pg_release(h) == lib.PG_OK
    # a sweep of nothing, right after pygrad's own full sweep (the raw fixture):
    # no entry left to settle, none released
    assert lib.pg_sweep_begin() == 0
    assert lib.pg_sweep_end(NULL, 0, NULL, 0) == 0
    assert lib.pg_sweep_end(NULL, 0, NULL, 0) == 0  # an end with no begin
    assert sandbox.snapshot() == before


def test_unowed_releases_are_refused_and_free_nothing(sandbox):
    sb = sandbox
    before = sandbox.snapshot()
    # c holds a and b; a's one external reference is ours.  Extra releases of
    # a child are refused: c still needs it.
    kid = lib.pg_child_retain(sb.c, 0)
    assert kid == sb.a and lib.pg_external_refs(sb.a) == 2
    assert lib.pg_release(kid) == lib.PG_OK
    assert lib.pg_release(sb.a) == lib.PG_OK  # ours: now held by its parent only
    for _ in range(3):
        assert lib.pg_release(sb.a) == ERR_HANDLE
        assert lib.pg_release_many([sb.a, sb.a], 2) == 2
    assert lib.pg_valid(sb.a) == 1 and lib.pg_data(sb.a) == 2.0
    assert lib.pg_retain(sb.a) == lib.PG_OK  # take it back for the sandbox
    assert sandbox.snapshot() == before


def test_set_node_limit_and_python_layer_take_any_int(sandbox):
    before = sandbox.snapshot()
    old = lib.pg_set_node_limit(2**62)
    assert old == 0
    assert lib.pg_set_node_limit(2**63 - 1) == 2**62
    assert lib.pg_set_node_limit(0) == 2**63 - 1
    for value in (2, -1, 2**63 - 1, -2**63, 0):  # no handle is made while it is on
        previous = lib.pg_python_layer(value)
        assert previous in (0, 1)
    assert lib.pg_python_layer(0) == 0  # the last one set (0) turned it off
    assert sandbox.snapshot() == before


def test_custom_op_tags_on_raw_nodes_do_not_break_the_engine(sandbox):
    # pg_set_custom_backward on built-in nodes: backward then needs a tape, replay refuses
    sb = sandbox
    x = lib.pg_leaf(3.0)
    y = lib.pg_tanh(x)
    z = lib.pg_mul(y, x)
    assert lib.pg_set_custom_backward(y) == lib.PG_OK
    assert lib.pg_set_custom_backward(y) == lib.PG_OK  # twice is fine
    assert lib.pg_backward(z) == lib.PG_CUSTOM_OPS
    assert lib.pg_grad(z) == lib.pg_grad(y) == lib.pg_grad(x) == 0.0  # nothing changed
    t = lib.pg_tape_record(z)
    assert lib.pg_tape_custom_ops(t) == 1
    assert lib.pg_tape_forward(t) == lib.PG_CUSTOM_OPS
    assert lib.pg_tape_replay_backward(t) == lib.PG_CUSTOM_OPS
    end = lib.pg_tape_backward(t, lib.pg_tape_length(t))
    assert lib.pg_tape_node(t, end - 1) == y  # stops at the custom op
    assert lib.pg_tape_backward(t, end - 1) == 0
    assert lib.pg_grad(x) == lib.pg_data(y)  # through z's '*' only; y's backward is the caller's
    # y's built-in step is still there for the caller to run (micrograd's y._backward())
    assert lib.pg_grad(y) == 3.0
    assert lib.pg_node_backward(y) == lib.PG_OK
    assert lib.pg_grad(x) == pytest.approx(lib.pg_data(y) + (1 - lib.pg_data(y) ** 2) * 3.0,
                                           rel=1e-15)
    assert lib.pg_tape_free(t) == lib.PG_OK
    assert lib.pg_tape_free(t) == ERR_TAPE  # double free
    assert lib.pg_release_many([x, y, z], 3) == 0
    assert lib.pg_valid(sb.a) == 1


def test_tape_refs_record_once_and_free_their_tape_once(sandbox):
    # A pg_tape_ref: a struct Python makes empty (ffi.new zeroes it) and hands
    # to a gc object whose destructor is pg_tape_ref_clear, before recording
    # into it with pg_tape_record_into.
    sb = sandbox
    before = sandbox.snapshot()
    ref = ffi.new("pg_tape_ref *")
    assert (ref.recorded, ref.tape) == (0, 0)
    lib.pg_tape_ref_clear(ref)  # empty: nothing to free
    # only `recorded` says a ref holds a tape: an empty one naming the
    # sandbox's tape frees nothing
    ref.tape = sb.tape
    lib.pg_tape_ref_clear(ref)
    assert lib.pg_tape_length(sb.tape) == 3 and sandbox.snapshot() == before
    ref.tape = 0
    # a bad root: pg_tape_record's error, and the ref stays empty
    for bad in invalid_handles(sb):
        assert lib.pg_tape_record_into(ref, bad) == ERR_HANDLE
        assert (ref.recorded, ref.tape) == (0, 0)
    assert sandbox.snapshot() == before
    # NULL: refused, and a no-op to clear
    for null in (ffi.NULL, ffi.cast("pg_tape_ref *", 0)):
        assert lib.pg_tape_record_into(null, sb.c) == ERR_ARG
        lib.pg_tape_ref_clear(null)
    assert sandbox.snapshot() == before
    # record: the ref holds the tape, which holds the graph
    t = lib.pg_tape_record_into(ref, sb.c)
    assert t >= 0 and t != sb.tape and (ref.recorded, ref.tape) == (1, t)
    assert lib.pg_tape_length(t) == 3 and lib.pg_tape_diff(t, sb.tape) == 3
    assert [lib.pg_internal_refs(h) for h in (sb.a, sb.b, sb.c)] == [3, 3, 2]
    # a filled ref takes no second tape, whatever the root: nothing recorded
    for root in [sb.c, sb.d, sb.a] + invalid_handles(sb):
        assert lib.pg_tape_record_into(ref, root) == ERR_ARG
        assert (ref.recorded, ref.tape) == (1, t)
    assert [lib.pg_internal_refs(h) for h in (sb.a, sb.b, sb.c, sb.d)] == [3, 3, 2, 0]
    # clear frees it and empties the ref; again, nothing more
    lib.pg_tape_ref_clear(ref)
    assert ref.recorded == 0 and lib.pg_tape_length(t) == ERR_TAPE
    assert sandbox.snapshot() == before
    lib.pg_tape_ref_clear(ref)
    assert ref.recorded == 0 and sandbox.snapshot() == before
    # a cleared ref is empty: it can record again (here d's one-node graph)
    t2 = lib.pg_tape_record_into(ref, sb.d)
    assert t2 >= 0 and t2 != t and (ref.recorded, ref.tape) == (1, t2)
    assert lib.pg_tape_length(t2) == 1 and lib.pg_internal_refs(sb.d) == 1
    lib.pg_tape_ref_clear(ref)
    assert lib.pg_tape_length(t2) == ERR_TAPE and sandbox.snapshot() == before
    # a ref whose tape was freed by its id: clearing it frees nothing else
    t3 = lib.pg_tape_record_into(ref, sb.c)
    assert t3 >= 0 and lib.pg_tape_free(t3) == lib.PG_OK
    lib.pg_tape_ref_clear(ref)
    assert ref.recorded == 0 and sandbox.snapshot() == before
    # owned by a gc object, as pygrad's are: its tape goes with it...
    owned = new_tape_ref()
    t = lib.pg_tape_record_into(owned, sb.c)
    assert t >= 0 and owned.recorded == 1 and lib.pg_internal_refs(sb.c) == 2
    del owned
    assert lib.pg_tape_length(t) == ERR_TAPE and sandbox.snapshot() == before
    # ...or sooner, with ffi.release (pygrad's _Tape.free), and only once
    owned = new_tape_ref()
    t = lib.pg_tape_record_into(owned, sb.c)
    assert t >= 0
    ffi.release(owned)
    assert lib.pg_tape_length(t) == ERR_TAPE and sandbox.snapshot() == before
    del owned
    # dropped empty, or after a refused recording: nothing to free
    owned = new_tape_ref()
    del owned
    owned = new_tape_ref()
    assert lib.pg_tape_record_into(owned, sb.freed) == ERR_HANDLE
    del owned
    assert sandbox.snapshot() == before


def test_a_tape_ref_over_a_stateful_root_holds_the_unflagged_id(healthy):
    # With the Python layer on, a tape given to a stateful root comes back
    # PG_PENDING-flagged (its state must be held): the ref holds the tape itself.
    PENDING = pygrad._lifetime.PENDING
    x = Value(3.0, label="x")
    pygrad.live_nodes()  # no sweep due: only the stateful root flags the call
    ref = new_tape_ref()
    flagged = lib.pg_tape_record_into(ref, x._h)
    assert flagged < 0 and ref.recorded == 1 and flagged - PENDING == ref.tape
    t = pygrad._lifetime.settle(flagged, (x,))
    assert t == ref.tape and lib.pg_tape_length(t) == 1 and lib.pg_internal_refs(x._h) == 1
    assert lib.pg_tape_record_into(ref, x._h) == ERR_ARG  # filled
    del ref
    assert lib.pg_tape_length(t) == ERR_TAPE and lib.pg_internal_refs(x._h) == 0
    plain = Value(2.0)
    pygrad.live_nodes()
    ref = new_tape_ref()
    t = lib.pg_tape_record_into(ref, plain._h)
    assert t >= 0 and (ref.recorded, ref.tape) == (1, t)
    del ref, x, plain
    assert lib.pg_tape_length(t) == ERR_TAPE
    assert settle() == healthy


def test_grad_off_tokens_turn_recording_off_in_their_own_thread(sandbox):
    # Only NULL and tokens from pg_grad_off_new may be passed (C dereferences them).
    sb = sandbox
    before = sandbox.snapshot()
    assert lib.pg_grad_recording() == 1
    lib.pg_grad_off_release(ffi.NULL)
    assert lib.pg_grad_off_start(ffi.NULL) == ERR_ARG
    first, second = lib.pg_grad_off_new(), lib.pg_grad_off_new()
    try:
        assert first != ffi.NULL and second != ffi.NULL
        assert lib.pg_grad_recording() == 1  # a token starts inactive
        assert lib.pg_grad_off_start(first) == lib.PG_OK
        assert lib.pg_grad_off_start(first) == ERR_ARG  # once only
        assert lib.pg_grad_recording() == 0
        h = lib.pg_mul(sb.a, sb.b)  # no graph: a leaf holding the product
        assert (lib.pg_data(h), lib.pg_op(h), lib.pg_child_count(h)) == (6.0, lib.PG_OP_LEAF, 0)
        assert lib.pg_release(h) == lib.PG_OK
        seen = []

        def other_thread():  # records, and cannot start this thread's token
            seen.extend([lib.pg_grad_recording(), lib.pg_grad_off_start(second)])
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert seen == [1, ERR_ARG]
        assert lib.pg_grad_off_start(second) == lib.PG_OK  # nested
        lib.pg_grad_off_release(first)
        first = None
        assert lib.pg_grad_recording() == 0  # the second is still active
        thread = threading.Thread(target=lib.pg_grad_off_release, args=(second,))
        second = None
        thread.start()  # released from another thread: recording is back on here
        thread.join()
        assert lib.pg_grad_recording() == 1
    finally:
        for token in (first, second):
            if token is not None:
                lib.pg_grad_off_release(token)
    # owned by gc objects, as no_grad's are: released with them, started or not
    unstarted = ffi.gc(lib.pg_grad_off_new(), lib.pg_grad_off_release)
    started = ffi.gc(lib.pg_grad_off_new(), lib.pg_grad_off_release)
    assert lib.pg_grad_off_start(started) == lib.PG_OK and lib.pg_grad_recording() == 0
    del unstarted, started
    assert lib.pg_grad_recording() == 1
    assert sandbox.snapshot() == before


def test_stateful_flags_and_slots_in_use(sandbox):
    sb = sandbox
    before = sandbox.snapshot()
    # pg_set_stateful returns the parent and tape references (a: c and the tape)
    assert [lib.pg_set_stateful(h) for h in (sb.a, sb.b, sb.c, sb.d)] == [2, 2, 1, 0]
    assert lib.pg_set_stateful(sb.a) == 2  # twice is fine
    for bad in invalid_handles(sb):
        assert lib.pg_set_stateful(bad) == ERR_HANDLE
    used = lib.pg_slots_in_use()
    assert all(h >> lib.PG_GEN_BITS < used for h in (sb.a, sb.b, sb.c, sb.d))
    assert sandbox.snapshot() == before  # the flag is the Python layer's: no op or flag changes


# --- hypothesis: random raw API programs against a model of the arena ----------------

def graph_garbage():
    """Integers that are never live handles: negative, huge, or past any slot."""
    return st.one_of(st.integers(min_value=-2**63, max_value=-1),
                     st.integers(min_value=1 << 42, max_value=2**63 - 1),
                     st.integers(min_value=(2**32 - 2) << 10, max_value=(1 << 42) - 1))


class RawArena(RuleBasedStateMachine):
    """Random sequences of raw C calls, good handles mixed with garbage, checked
    against a model: the nodes reachable from our references (external refs and
    tapes) are exactly the live ones we made, with exact reference counts.
    The Python layer is off throughout (see the module docstring)."""

    def __init__(self):
        super().__init__()
        gc.collect()
        pygrad.live_nodes()
        gc.disable()  # no collection (a subclass's finalizer, a sweep) while we count nodes
        self.layer = lib.pg_python_layer(0)
        self.base = lib.pg_live_nodes()
        self.kids = {}   # handle -> child handles, for every node we know of
        self.ext = {}    # handle -> external references we own
        self.tapes = {}  # tape id -> handles it holds
        self.refs = {}   # tape id -> the pg_tape_ref it was recorded into, if it was
        self.spent_refs = []  # refs holding no live tape: cleared, or their tape freed by id
        self.dead = []   # handles of nodes that were freed
        self.dead_tapes = []
        self.custom = set()  # nodes whose backward is the caller's (pg_set_custom_backward)

    # model helpers
    def learn(self, h):
        """Record a node (and, recursively, its children) as the C core has it."""
        stack = [h]
        while stack:
            n = stack.pop()
            if n in self.kids:
                continue
            kids = []
            for i in range(lib.pg_child_count(n)):
                k = lib.pg_child_retain(n, i)
                assert k >= 0
                assert lib.pg_release(k) == lib.PG_OK
                kids.append(k)
            self.kids[n] = kids
            stack.extend(kids)

    def reachable(self):
        roots = [h for h, n in self.ext.items() if n > 0]
        roots += [h for nodes in self.tapes.values() for h in nodes]
        seen, stack = set(), roots
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self.kids[n])
        return seen

    # Lists in the order nodes were made, never sorted by handle: handles differ
    # from run to run, and hypothesis needs the same draws to pick the same nodes.
    def owned(self):
        return [h for h, n in self.ext.items() if n > 0]

    def known(self):
        alive = self.reachable()
        return [h for h in self.kids if h in alive]

    def made(self, h):
        assert h >= 0, h
        self.learn(h)
        self.ext[h] = self.ext.get(h, 0) + 1

    def forget_unreachable(self):
        alive = self.reachable()
        for n in list(self.kids):
            if n not in alive:
                del self.kids[n]
                self.ext.pop(n, None)
                self.custom.discard(n)
                self.dead.append(n)

    def relearn_tape(self, t):
        """A replay lays its tape's nodes out in run order: the ones nothing but
        the tape can name (no external reference, every parent on the tape) move
        to other slots, and their old handles go stale.  Learn the tape anew."""
        nodes = [lib.pg_tape_node(t, i) for i in range(lib.pg_tape_length(t))]
        moved = [n for n in self.tapes[t] if not lib.pg_valid(n)]
        if not moved:
            return
        for n in moved:
            assert self.ext.get(n, 0) == 0, "a node someone holds moved"
            del self.kids[n]
            self.ext.pop(n, None)
            self.custom.discard(n)
            self.dead.append(n)
        for n in nodes:  # their children may have moved
            self.kids.pop(n, None)
        self.tapes[t] = nodes
        for n in nodes:
            self.learn(n)

    def internal_refs(self):
        """handle -> references from parents and tapes, for every live node."""
        alive = self.reachable()
        parents = dict.fromkeys(alive, 0)
        for n in alive:
            for k in self.kids[n]:
                parents[k] += 1
        for nodes in self.tapes.values():
            for n in nodes:
                parents[n] += 1
        return parents

    # rules
    @rule(x=st.floats(allow_nan=True, allow_infinity=True))
    def leaf(self, x):
        self.made(lib.pg_leaf(x))

    @rule(data=st.data(), op=st.sampled_from(["pg_add", "pg_mul", "pg_sub", "pg_div", "pg_pow"]))
    def binary(self, data, op):
        pool = self.known()
        assume(pool)
        a = data.draw(st.sampled_from(pool))
        b = data.draw(st.sampled_from(pool))
        h = getattr(lib, op)(a, b)
        if h >= 0:
            self.made(h)
        else:  # math errors (0 ** -1, ...) make nothing
            assert h in (lib.PG_ERR_ZERODIV, lib.PG_ERR_OVERFLOW, lib.PG_ERR_COMPLEX), h

    @rule(data=st.data(), op=st.sampled_from([f"pg_{name}" for name in unary_ops()]))
    def unary(self, data, op):
        pool = self.known()
        assume(pool)
        h = getattr(lib, op)(data.draw(st.sampled_from(pool)))
        if h >= 0:
            self.made(h)
        else:
            assert h in (lib.PG_ERR_RANGE, lib.PG_ERR_DOMAIN), h

    @rule(data=st.data(), k=st.floats(), op=st.sampled_from(
        ["pg_add_const", "pg_mul_const", "pg_rsub_const", "pg_rdiv_const", "pg_rpow_const",
         "pg_pow_const"]))
    def with_constant(self, data, k, op):
        pool = self.known()
        assume(pool)
        args = (data.draw(st.sampled_from(pool)), k) + ((0,) if op == "pg_pow_const" else ())
        h = getattr(lib, op)(*args)
        if h >= 0:
            self.made(h)
        else:
            assert h in (lib.PG_ERR_ZERODIV, lib.PG_ERR_OVERFLOW, lib.PG_ERR_COMPLEX), h

    @rule(data=st.data(), x=st.floats(allow_nan=False))
    def custom_node(self, data, x):
        kids = []
        if self.known():
            kids = data.draw(st.lists(st.sampled_from(self.known()), max_size=4))
        self.made(lib.pg_custom_node(x, kids, len(kids)))

    @rule(data=st.data())
    def set_custom_backward(self, data):
        pool = self.known()
        assume(pool)
        h = data.draw(st.sampled_from(pool))
        assert lib.pg_set_custom_backward(h) == lib.PG_OK
        self.custom.add(h)

    @rule(data=st.data(), op=st.sampled_from(["pg_add", "pg_mul", "pg_sub", "pg_div"]))
    def without_grad(self, data, op):
        # under a no_grad token an op makes a leaf holding its value
        pool = self.known()
        assume(pool)
        a, b = data.draw(st.sampled_from(pool)), data.draw(st.sampled_from(pool))
        token = lib.pg_grad_off_new()
        assert token != ffi.NULL
        try:
            assert lib.pg_grad_off_start(token) == lib.PG_OK
            h = getattr(lib, op)(a, b)
        finally:
            lib.pg_grad_off_release(token)
        assert lib.pg_grad_recording() == 1
        if h >= 0:
            assert lib.pg_op(h) == lib.PG_OP_LEAF and lib.pg_child_count(h) == 0
            self.made(h)
        else:  # math errors make nothing, with or without a graph
            assert h in (lib.PG_ERR_ZERODIV, lib.PG_ERR_OVERFLOW, lib.PG_ERR_COMPLEX), h

    @rule(data=st.data())
    def set_stateful(self, data):
        pool = self.known()
        assume(pool)
        h = data.draw(st.sampled_from(pool))
        assert lib.pg_set_stateful(h) == self.internal_refs()[h]

    @rule(data=st.data(), act=st.integers(lib.PG_ACT_LINEAR, lib.PG_ACT_SIGMOID))
    def layer(self, data, act):
        pool = self.known()
        assume(pool)
        nin = data.draw(st.integers(0, 3))
        nout = data.draw(st.integers(0, 3))
        pick = st.sampled_from(pool)
        w = [data.draw(pick) for _ in range(nin * nout)]
        b = [data.draw(pick) for _ in range(nout)]
        x = [data.draw(pick) for _ in range(nin)]
        out = ffi.new("int64_t[]", max(nout, 1))
        assert lib.pg_layer(w, b, x, nin, nout, act, out) == lib.PG_OK
        for j in range(nout):
            self.made(out[j])

    @rule(data=st.data())
    def retain(self, data):
        h = data.draw(st.sampled_from(self.known() or [-1]))
        if h < 0:
            assert lib.pg_retain(h) == ERR_HANDLE
        else:
            assert lib.pg_retain(h) == lib.PG_OK
            self.ext[h] = self.ext.get(h, 0) + 1

    @rule(data=st.data())
    def release(self, data):
        pool = self.owned()
        assume(pool)
        h = data.draw(st.sampled_from(pool))
        assert lib.pg_release(h) == lib.PG_OK
        self.ext[h] -= 1
        self.forget_unreachable()

    @rule(data=st.data())
    def release_unowed(self, data):
        # inner nodes we hold no reference to, dead nodes, and garbage: all refused
        candidates = [h for h in self.known() if self.ext.get(h, 0) == 0] + self.dead[-20:]
        h = data.draw(st.sampled_from(candidates) if candidates else graph_garbage())
        assert lib.pg_release(h) == ERR_HANDLE

    @rule(data=st.data())
    def child_retain(self, data):
        pool = [h for h in self.known() if self.kids[h]]
        assume(pool)
        h = data.draw(st.sampled_from(pool))
        i = data.draw(st.integers(0, len(self.kids[h]) - 1))
        k = lib.pg_child_retain(h, i)
        assert k == self.kids[h][i]
        self.ext[k] = self.ext.get(k, 0) + 1

    @rule(data=st.data())
    def backward(self, data):
        pool = self.known()
        assume(pool)
        root = data.draw(st.sampled_from(pool))
        rc = lib.pg_backward(root)
        assert rc in (lib.PG_OK, lib.PG_CUSTOM_OPS, lib.PG_ERR_ZERODIV, lib.PG_ERR_OVERFLOW,
                      lib.PG_ERR_COMPLEX), rc
        if rc == lib.PG_OK:
            assert lib.pg_grad(root) == 1.0

    @rule(data=st.data(), into_ref=st.booleans())
    def record(self, data, into_ref):
        pool = self.known()
        assume(pool)
        root = data.draw(st.sampled_from(pool))
        if into_ref:  # as pygrad's tapes are: into an empty struct (a new one, or one cleared)
            empty = [r for r in self.spent_refs if r.recorded == 0]
            if empty and data.draw(st.booleans()):
                ref = data.draw(st.sampled_from(empty))
                self.spent_refs = [r for r in self.spent_refs if r is not ref]
            else:
                ref = ffi.new("pg_tape_ref *")
            t = lib.pg_tape_record_into(ref, root)
            assert t >= 0 and (ref.recorded, ref.tape) == (1, t)
            assert lib.pg_tape_record_into(ref, root) == ERR_ARG  # filled: nothing recorded
            assert (ref.recorded, ref.tape) == (1, t)
            self.refs[t] = ref
        else:
            t = lib.pg_tape_record(root)
        assert t >= 0
        nodes = [lib.pg_tape_node(t, i) for i in range(lib.pg_tape_length(t))]
        assert all(n >= 0 for n in nodes)
        self.tapes[t] = nodes

    @rule(data=st.data())
    def tape_work(self, data):
        assume(self.tapes)
        t = data.draw(st.sampled_from(list(self.tapes)))
        custom = lib.pg_tape_custom_ops(t)
        assert custom == sum(lib.pg_op(n) == lib.PG_OP_CUSTOM or n in self.custom
                             for n in self.tapes[t])
        for replay in (lib.pg_tape_forward, lib.pg_tape_replay_backward):
            rc = replay(t)
            if custom:
                assert rc == lib.PG_CUSTOM_OPS
            else:
                assert rc in (lib.PG_OK, lib.PG_ERR_ZERODIV, lib.PG_ERR_OVERFLOW,
                              lib.PG_ERR_COMPLEX, lib.PG_ERR_RANGE, lib.PG_ERR_DOMAIN), rc
            self.relearn_tape(t)
        end = lib.pg_tape_length(t)
        while end > 0:
            end = lib.pg_tape_backward(t, end)
            if end <= 0:
                break
            end -= 1  # skip the custom op, as Python would after running it
        other = data.draw(st.sampled_from(list(self.tapes)))
        diff = lib.pg_tape_diff(t, other)
        assert 0 <= diff <= min(len(self.tapes[t]), len(self.tapes[other]))

    @rule(data=st.data(), by_ref=st.booleans())
    def free_tape(self, data, by_ref):
        assume(self.tapes)
        t = data.draw(st.sampled_from(list(self.tapes)))
        ref = self.refs.pop(t, None)
        if by_ref and ref is not None:  # as a tape's gc object does
            lib.pg_tape_ref_clear(ref)
            assert ref.recorded == 0
            assert lib.pg_tape_length(t) == ERR_TAPE
        else:  # by id (a ref holding it then holds a freed tape)
            assert lib.pg_tape_free(t) == lib.PG_OK
        if ref is not None:
            self.spent_refs.append(ref)
        del self.tapes[t]
        self.dead_tapes.append(t)
        self.forget_unreachable()

    @rule(data=st.data())
    def garbage_everywhere(self, data):
        bad = data.draw(st.sampled_from(self.dead[-20:]) if self.dead and data.draw(st.booleans())
                        else graph_garbage())
        good = data.draw(st.sampled_from(self.known() or [bad]))
        for fn in (lib.pg_add, lib.pg_mul, lib.pg_sub, lib.pg_div, lib.pg_pow):
            assert fn(good, bad) == ERR_HANDLE and fn(bad, good) == ERR_HANDLE
        unary = [getattr(lib, f"pg_{name}") for name in unary_ops()]
        for fn in (*unary, lib.pg_retain, lib.pg_release, lib.pg_backward, lib.pg_node_backward,
                   lib.pg_set_custom_backward, lib.pg_tape_record, lib.pg_op, lib.pg_flags,
                   lib.pg_child_count, lib.pg_internal_refs, lib.pg_external_refs,
                   lib.pg_set_stateful):
            assert fn(bad) == ERR_HANDLE
        assert lib.pg_valid(bad) == 0
        assert math.isnan(lib.pg_data(bad)) and math.isnan(lib.pg_grad(bad))
        assert lib.pg_set_data(bad, 1.0) == ERR_HANDLE
        assert lib.pg_set_grad(bad, 1.0) == ERR_HANDLE
        assert lib.pg_child_retain(bad, 0) == ERR_HANDLE
        assert lib.pg_custom_node(0.0, [good, bad], 2) == ERR_HANDLE
        empty = ffi.new("pg_tape_ref *")
        assert lib.pg_tape_record_into(empty, bad) == ERR_HANDLE
        assert (empty.recorded, empty.tape) == (0, 0)
        assert lib.pg_tape_record_into(ffi.NULL, good) == ERR_ARG
        lib.pg_tape_ref_clear(ffi.NULL)
        assert lib.pg_sweep_end([good, bad], 2, [bad], 1) == 0  # good has no nursery entry
        tape = data.draw(st.sampled_from(self.dead_tapes) if self.dead_tapes else graph_garbage())
        for fn in (lib.pg_tape_free, lib.pg_tape_length, lib.pg_tape_forward,
                   lib.pg_tape_replay_backward, lib.pg_tape_custom_ops):
            assert fn(tape) == ERR_TAPE
        assert lib.pg_tape_node(tape, 0) == ERR_TAPE
        assert lib.pg_tape_backward(tape, 0) == ERR_TAPE
        # refs holding a tape no more (the invariant checks that nothing changed)
        lib.pg_tape_ref_clear(ffi.new("pg_tape_ref *", {"recorded": 1, "tape": tape}))
        for ref in self.spent_refs:
            recorded = ref.recorded
            lib.pg_tape_ref_clear(ref)
            assert ref.recorded == 0
            if recorded:  # its tape was freed by id: refused
                assert lib.pg_tape_length(ref.tape) == ERR_TAPE

    @invariant()
    def arena_matches_the_model(self):
        alive = self.reachable()
        assert lib.pg_live_nodes() == self.base + len(alive)
        parents = self.internal_refs()
        used = lib.pg_slots_in_use()
        for n in alive:
            assert lib.pg_valid(n) == 1 and n >> lib.PG_GEN_BITS < used
            assert lib.pg_external_refs(n) == self.ext.get(n, 0), n
            assert lib.pg_internal_refs(n) == parents[n], n
        for n in self.dead[-50:]:
            assert lib.pg_valid(n) == 0
        for t, ref in self.refs.items():
            assert (ref.recorded, ref.tape) == (1, t) and t in self.tapes
            assert lib.pg_tape_length(t) == len(self.tapes[t])

    def teardown(self):
        try:
            for t in list(self.tapes):
                if t in self.refs:
                    lib.pg_tape_ref_clear(self.refs.pop(t))
                    assert lib.pg_tape_length(t) == ERR_TAPE
                else:
                    assert lib.pg_tape_free(t) == lib.PG_OK
            for h, n in self.ext.items():
                for _ in range(n):
                    assert lib.pg_release(h) == lib.PG_OK
            assert lib.pg_live_nodes() == self.base
        finally:
            assert lib.pg_python_layer(self.layer) == 0
            gc.enable()


def test_a_replay_moves_only_nodes_nothing_but_its_tape_can_name(sandbox):
    # The first replay lays a tape's nodes out in run order (RawArena's model
    # relearns a tape after each replay for this): a layer's DOT and ReLU nodes
    # that only the tape holds get new slots, and their old handles go stale;
    # every node with a handle held keeps it.
    nin, nout, samples = 3, 4, 8
    w = [lib.pg_leaf(0.1 * i) for i in range(nin * nout)]
    b = [lib.pg_leaf(0.01 * i) for i in range(nout)]
    xs, outs = [], []
    for s in range(samples):
        x = [lib.pg_leaf(s + 0.5 * i) for i in range(nin)]
        out = ffi.new("int64_t[]", nout)
        assert lib.pg_layer(w, b, x, nin, nout, lib.PG_ACT_RELU, out) == lib.PG_OK
        xs += x
        outs += list(out)
    sums = [outs[0]]
    for o in outs[1:]:
        sums.append(lib.pg_add(sums[-1], o))
    root = sums[-1]
    t = lib.pg_tape_record(root)
    for h in outs + sums[1:-1]:
        assert lib.pg_release(h) == lib.PG_OK
    held = w + b + xs + [root]
    try:
        before = [lib.pg_tape_node(t, i) for i in range(lib.pg_tape_length(t))]
        values = [lib.pg_data(n) for n in before]
        assert lib.pg_tape_forward(t) == lib.PG_OK and lib.pg_tape_groups(t) == 1
        after = [lib.pg_tape_node(t, i) for i in range(lib.pg_tape_length(t))]
        moved = {n for n in before if not lib.pg_valid(n)}
        # mostly the DOTs and their ReLUs (64 of them), less any that happened
        # to lie where the layout puts them already
        assert len(moved) >= nout * samples
        assert all(lib.pg_valid(h) for h in held) and not moved & set(held)
        assert [lib.pg_data(n) for n in after] == values
    finally:
        assert lib.pg_tape_free(t) == lib.PG_OK
        for h in held:
            assert lib.pg_release(h) == lib.PG_OK


TestRawArena = RawArena.TestCase
TestRawArena.settings = settings(max_examples=40, stateful_step_count=40, deadline=None,
                                 suppress_health_check=[HealthCheck.too_slow,
                                                        HealthCheck.filter_too_much])


def test_raw_arena_programs_leave_the_engine_healthy(healthy):
    # a few programs more, then the fixture checks that the engine still works
    run_state_machine_as_test(RawArena, settings=settings(
        TestRawArena.settings, max_examples=5))


# --- the Python wrapper: a Value whose _h was overwritten ---------------------------

def operations():
    """Every method, operator and property of a Value, as (name, fn(v, good))."""
    import numpy as np
    ops = [
        ("add", lambda v, g: v + g), ("radd", lambda v, g: g + v), ("add_k", lambda v, g: v + 1.5),
        ("k_add", lambda v, g: 1.5 + v), ("sub", lambda v, g: v - g), ("rsub", lambda v, g: g - v),
        ("sub_k", lambda v, g: v - 2), ("k_sub", lambda v, g: 2 - v), ("mul", lambda v, g: v * g),
        ("rmul", lambda v, g: g * v), ("mul_k", lambda v, g: v * 3), ("k_mul", lambda v, g: 3 * v),
        ("div", lambda v, g: v / g), ("rdiv", lambda v, g: g / v), ("div_k", lambda v, g: v / 4.0),
        ("k_div", lambda v, g: 4.0 / v), ("pow_k", lambda v, g: v ** 2),
        ("pow_f", lambda v, g: v ** 0.5), ("pow_v", lambda v, g: v ** g),
        ("rpow_v", lambda v, g: g ** v), ("k_pow", lambda v, g: 2 ** v),
        ("np_add", lambda v, g: np.float64(1.0) + v), ("np_mul", lambda v, g: v * np.int64(2)),
        ("neg", lambda v, g: -v), ("relu", lambda v, g: v.relu()), ("tanh", lambda v, g: v.tanh()),
        ("exp", lambda v, g: v.exp()), ("log", lambda v, g: v.log()),
        ("sigmoid", lambda v, g: v.sigmoid()), ("backward", lambda v, g: v.backward()),
        ("data", lambda v, g: v.data), ("grad", lambda v, g: v.grad),
        ("set_data", lambda v, g: setattr(v, "data", 1.25)),
        ("set_grad", lambda v, g: setattr(v, "grad", -1.0)),
        ("prev", lambda v, g: v._prev), ("op", lambda v, g: v._op),
        ("backward_attr", lambda v, g: v._backward()),
        ("set_backward", lambda v, g: setattr(v, "_backward", lambda: None)),
        ("eq", lambda v, g: v == g), ("hash", lambda v, g: hash(v)), ("repr", lambda v, g: repr(v)),
        ("str", lambda v, g: str(v)), ("pickle", lambda v, g: pickle.loads(pickle.dumps(v))),
        ("copy", lambda v, g: copy.copy(v)), ("deepcopy", lambda v, g: copy.deepcopy(v)),
        ("iadd", lambda v, g: _iadd(v, g)), ("sum", lambda v, g: sum([g, v, g])),
        ("custom_child", lambda v, g: Value(1.0, (g, v), "f")),
        ("mlp", lambda v, g: MLP(2, [2, 1])([v, g])),
        ("layer", lambda v, g: pygrad.nn.Layer(2, 2)([g, v])),
        ("sgd", lambda v, g: _sgd(v, g)), ("adam", lambda v, g: _adam(v, g)),
        ("replay", lambda v, g: pygrad.Replay(v * g, inputs=[v]).close()),
        ("replay_root", lambda v, g: pygrad.Replay(v).close()),
        ("to_dot", lambda v, g: pygrad.to_dot(v)),
        ("to_dot_parent", lambda v, g: pygrad.to_dot(v * g)),
    ]
    return ops


def _iadd(v, g):
    v += g
    return v


def _sgd(v, g):
    opt = SGD([g, v], lr=0.1, momentum=0.9)
    opt.zero_grad()
    opt.step()


def _adam(v, g):
    opt = Adam([v, g], lr=0.1)
    opt.step()


OPERATIONS = operations()


def tamper_kinds():
    return ["str", "none", "float", "negative", "huge", "min", "too_big", "too_small", "object",
            "freed", "stale_slot", "deleted"]


def garbage_handle(kind):
    """A value for v._h; for 'freed', the handle of a node that no longer exists."""
    if kind == "freed":
        dead = Value(1.0)
        h = dead._h
        del dead
        pygrad.live_nodes()  # flush the release queue: the node is gone
        assert not lib.pg_valid(h)
        return h
    if kind == "stale_slot":  # a freed node's slot reused: the same slot, another generation
        dead = Value(1.0)
        h = dead._h
        del dead
        pygrad.live_nodes()
        keep = Value(2.0)
        assert not lib.pg_valid(h)
        return h, keep
    return {"str": "12", "none": None, "float": 1.0, "negative": -1, "huge": 2**62,
            "min": -2**63, "too_big": 2**64, "too_small": -2**63 - 1, "object": object()}[kind]


def restored_intact(v, young, data=2.0):
    """Whether v, its _h restored after tampering, still has its node (with
    `data`).  A Value that no sweep has seen yet holds its node through the
    nursery alone: a sweep while its _h names no node lets go of it, once
    its call is no longer the thread's latest.  It then comes back stale: an
    exception, never another node's numbers.  A Value that survived a sweep
    holds its own reference, and comes back whole."""
    try:
        assert v.data == data
        return True
    except StaleValueError:
        assert young, "a Value that survived a sweep lost its node to tampering"
        assert not lib.pg_valid(v._h)
        return False


def abuse(kind, name, fn, young):
    """Overwrite a Value's _h with garbage, use it, restore it: only
    exceptions.  young: tamper before any sweep has seen the Value.
    Returns (v, good, whether v came back with its node)."""
    good = Value(3.0)
    v = Value(2.0)
    if not young:
        pygrad.live_nodes()
    original = v._h
    keep = None
    if kind == "deleted":
        del v._h
    else:
        garbage = garbage_handle(kind)
        if kind == "stale_slot":
            garbage, keep = garbage
        v._h = garbage
    keep_data = keep.data if keep is not None else None
    try:
        result = fn(v, good)
    except PYTHON_ERRORS:
        result = None
    else:  # only comparing and hashing, which never reach the C core, may succeed
        assert name in ("eq", "hash"), (kind, name, result)
    finally:
        v._h = original
    del result
    assert good.data == 3.0  # untouched
    intact = restored_intact(v, young)  # restored
    if keep is not None:
        assert keep.data == keep_data  # the node in the reused slot was not touched
    return v, good, intact


@pytest.mark.parametrize("young", [False, True], ids=["held", "young"])
@pytest.mark.parametrize("kind", tamper_kinds())
def test_every_operation_on_a_tampered_value_raises_and_changes_nothing(kind, young, healthy):
    for name, fn in OPERATIONS:
        if name == "set_backward":
            continue  # tested below: it would tag the original node a custom op
        v, good, intact = abuse(kind, name, fn, young)
        assert not intact or v.grad == 0.0 or name in ("sgd", "adam")  # no backward through v
        del v, good
    assert settle() == healthy


def test_a_young_value_tampered_across_a_sweep_comes_back_stale(healthy):
    # The deterministic case of restored_intact's young Value: v's call is not
    # the latest when a sweep runs, and v's _h names no node then.
    for garbage in ("12", None, -1, 2**62, 2**64):
        v = Value(2.0)
        original = v._h
        other = Value(1.0)  # a later call: v's is no longer in flight
        v._h = garbage
        pygrad.live_nodes()  # the sweep leaves v out; nothing names its node: released
        assert not lib.pg_valid(original)
        v._h = original
        for use in (lambda: v.data, lambda: v + other, lambda: v.backward(), lambda: v._prev):
            with pytest.raises(StaleValueError):
                use()
        assert other.data == 1.0
        del v, other  # v's death releases nothing (refused quietly)
        assert settle() == healthy


def test_setting_backward_on_a_tampered_value_raises(healthy):
    for kind in tamper_kinds():
        v = Value(2.0)
        original = v._h
        if kind == "deleted":
            del v._h
            with pytest.raises(AttributeError):
                v._backward = lambda: None
        else:
            garbage = garbage_handle(kind)
            v._h = garbage[0] if kind == "stale_slot" else garbage
            with pytest.raises(PYTHON_ERRORS):
                v._backward = lambda: None
            del garbage
        v._h = original
        assert v._op == ""  # still a plain leaf
        del v
        assert settle() == healthy


def test_garbage_handles_from_hypothesis(healthy):
    @settings(max_examples=200, deadline=None)
    @given(garbage=st.one_of(st.integers(min_value=-2**70, max_value=-1),
                             st.integers(min_value=1 << 42, max_value=2**70),
                             st.floats(), st.text(max_size=3), st.none(), st.binary(max_size=3),
                             st.complex_numbers(), st.lists(st.integers(), max_size=2)),
           op=st.sampled_from([(n, f) for n, f in OPERATIONS if n != "set_backward"]),
           young=st.booleans())
    def run(garbage, op, young):
        name, fn = op
        good = Value(3.0)
        v = Value(2.0)
        if not young:
            pygrad.live_nodes()
        original = v._h
        v._h = garbage
        try:
            fn(v, good)
        except PYTHON_ERRORS:
            pass
        else:
            assert name in ("eq", "hash"), (name, garbage)
        finally:
            v._h = original
        assert good.data == 3.0
        restored_intact(v, young)

    run()
    assert settle() == healthy


def test_a_value_aliasing_another_values_node(healthy):
    # v._h = w._h: both now name w's node, which owes only one reference.  The
    # first to die gives it back; the node then lives while parents hold it, and
    # the Value left holding the handle finds it stale (an exception, no crash).
    w = Value(5.0)
    v = Value(1.0)
    lost = v._h
    v._h = w._h
    assert v is not w and v._h == w._h  # two Values, one node
    assert v.data == 5.0 and (v * 2).data == 10.0
    y = w * 3.0  # a parent of w's node
    del v
    pygrad.live_nodes()  # v's death released w's node's only external reference
    assert lib.pg_external_refs(w._h) == 0 and lib.pg_valid(w._h)  # held by y
    # v's own node: no Value kept its handle, so the nursery gave it back
    assert not lib.pg_valid(lost)
    y.backward()
    assert w.grad == 3.0
    del y
    pygrad.live_nodes()
    with pytest.raises(StaleValueError):
        w.data
    with pytest.raises(StaleValueError):
        w + 1.0
    with pytest.raises(StaleValueError):
        w.backward()
    del w  # its release is refused quietly
    assert settle() == healthy


# --- stateful Values: an anchor holds the node ------------------------------------------

def in_values(obj):
    """How many times obj (by identity) stands in pygrad's swept list."""
    return sum(1 for x in pygrad._lifetime.values if x is obj)


def test_a_stateful_value_holds_one_reference_through_its_anchor(healthy):
    # An attribute makes a Value stateful at the next sweep: an _Anchor takes
    # its place in _lifetime.values, and its one reference to the node.
    Anchor = pygrad._lifetime._Anchor
    v = Value(4.0)
    plain = Value(5.0)
    v.label = "x"
    h = v._h
    for _ in range(3):  # however many sweeps: one anchor, one reference
        pygrad.live_nodes()
        anchor = v._anchor
        assert type(anchor) is Anchor and anchor._h == h
        assert lib.pg_external_refs(h) == 1 and lib.pg_internal_refs(h) == 0
        assert in_values(anchor) == 1 and in_values(v) == 0
        del anchor
    assert getattr(plain, "_anchor", None) is None and in_values(plain) == 1
    assert lib.pg_external_refs(plain._h) == 1
    # made stateful by its constructor: anchored at once, still one reference
    u = Value(1.0, label="u")
    assert type(u._anchor) is Anchor and in_values(u._anchor) == 1 and in_values(u) == 0
    for _ in range(2):
        pygrad.live_nodes()
        assert lib.pg_external_refs(u._h) == 1 and in_values(u._anchor) == 1
    # a parent adds a parent reference, not an external one
    y = v * 2.0
    pygrad.live_nodes()
    assert (lib.pg_external_refs(h), lib.pg_internal_refs(h)) == (1, 1)
    # dropping the Value releases nothing at once (nothing runs when a Value
    # dies); the next sweep finds its anchor unheld and gives the reference back
    hu = u._h
    del v, u
    assert lib.pg_valid(h) == 1 and lib.pg_external_refs(h) == 1
    assert lib.pg_valid(hu) == 1 and lib.pg_external_refs(hu) == 1
    pygrad.live_nodes()
    assert lib.pg_valid(hu) == 0
    assert (lib.pg_valid(h), lib.pg_external_refs(h), lib.pg_internal_refs(h)) == (1, 0, 1)
    assert not any(getattr(x, "_h", None) in (h, hu) for x in pygrad._lifetime.values)
    del y
    pygrad.live_nodes()
    assert lib.pg_valid(h) == 0
    # __init__ again: the old node's reference is given back (a graph keeps
    # it), the new node has the Value's one reference
    x = Value(1.0, label="x")
    y = x * 3.0
    old = x._h
    x.__init__(2.0)
    pygrad.live_nodes()
    assert (lib.pg_external_refs(old), lib.pg_internal_refs(old)) == (0, 1)
    assert lib.pg_external_refs(x._h) == 1 and x._anchor._h == x._h
    assert in_values(x._anchor) == 1 and in_values(x) == 0
    assert sum(1 for a in pygrad._lifetime.values if getattr(a, "_h", None) == old) == 0
    del x, y, plain
    assert settle() == healthy


def test_a_stateful_value_in_a_cycle_is_released_after_the_collector_frees_it(healthy):
    # A custom op's closure refers to `out` (support.cube): a cycle.  Its
    # anchor dies when the collector frees the Value, and only then is the
    # node released.
    x = Value(2.0)
    enabled = gc.isenabled()
    gc.disable()  # the collector runs when this test says so
    try:
        out = cube(x)
        h = out._h
        assert lib.pg_op(h) == lib.PG_OP_CUSTOM and out._anchor._h == h
        del out
        for _ in range(2):
            pygrad.live_nodes()
            assert lib.pg_valid(h) == 1 and lib.pg_external_refs(h) == 1
        gc.collect()
        pygrad.live_nodes()
        assert lib.pg_valid(h) == 0
    finally:
        if enabled:
            gc.enable()
    assert lib.pg_internal_refs(x._h) == 0 and lib.pg_external_refs(x._h) == 1
    del x
    assert settle() == healthy


def test_a_value_resurrected_by_a_finalizer_keeps_its_node(healthy):
    # The anchor dies only with the Value: a finalizer that brings the Value
    # back to life (from a plain decref or from the collector) finds its node,
    # even after sweeps, and so does everything after it.
    revived, seen = [], []

    class Phoenix(Value):  # a subclass: stateful from the start
        def __del__(self):
            pygrad.live_nodes()  # a sweep from the finalizer: the anchor is held
            seen.append((lib.pg_valid(self._h), lib.pg_external_refs(self._h), self.data))
            revived.append(self)

    for cyclic in (False, True):
        p = Phoenix(4.0, label="revive")
        if cyclic:
            p.me = p
        h = p._h
        anchor_h = p._anchor._h
        assert anchor_h == h
        del p
        if cyclic:
            gc.collect()
        assert seen == [(1, 1, 4.0)]
        (back,) = revived
        revived.clear()
        seen.clear()
        for _ in range(3):
            pygrad.live_nodes()
            assert lib.pg_valid(h) == 1 and lib.pg_external_refs(h) == 1
            assert back._h == h and back._anchor._h == h and in_values(back._anchor) == 1
        assert back.data == 4.0 and (back * 2.0).data == 8.0 and back.label == "revive"
        back.backward()
        assert back.grad == 1.0
        # gone for good this time (a finalizer runs once): released at the
        # next sweep.  (back * 2.0 made pygrad hold back's state, which refers
        # to back when cyclic, until a sweep finds the node without parents.)
        del back
        pygrad.live_nodes()
        gc.collect()
        assert seen == [] and revived == []
        pygrad.live_nodes()
        assert lib.pg_valid(h) == 0
    assert settle() == healthy


def test_del_of_a_value_mid_graph_leaves_the_graph_whole(healthy):
    # A Value has no finalizer (nothing to call twice, nothing that runs at an
    # awkward moment): a sweep finds it gone.  Its node lives on in the graph,
    # state and all, and _prev gives it a Value again.
    assert not hasattr(Value, "__del__")
    v = Value(1.0)
    with pytest.raises(AttributeError):
        v.__del__()
    w = v * 2.0
    v.label = "v"
    del v
    pygrad.live_nodes()
    (kid,) = [k for k in w._prev if k.data == 1.0]  # the other child is the constant 2.0
    assert kid.label == "v"
    w.backward()
    assert kid.grad == 2.0
    del w
    pygrad.live_nodes()
    assert kid.data == 1.0 and kid.label == "v"  # kid holds the node now
    del kid
    assert settle() == healthy


def test_a_subclass_defining_del(healthy):
    # A subclass may define __del__ and run pygrad code in it, from a plain
    # decref or from the cycle collector (which may run inside a sweep); its
    # node is still its own there, and a Value it brings back to life works.
    finalized, revived = [], []

    class Mortal(Value):
        def __del__(self):
            finalized.append((self.data, (self * 2.0).data))
            pygrad.live_nodes()  # a sweep from a finalizer
            if self.label == "revive":
                revived.append(self)
            parent = getattr(super(), "__del__", None)  # Value has none
            if parent is not None:
                parent()

    m = Mortal(3.0)
    t = m * m
    del m  # its finalizer runs now; t holds the node
    assert finalized == [(3.0, 6.0)]
    t.backward()
    (kid,) = t._prev
    assert kid.data == 3.0 and kid.grad == 6.0
    del t, kid
    assert settle() == healthy

    m = Mortal(4.0, label="revive")
    del m
    (back,) = revived
    assert back.data == 4.0 and (back + 1.0).data == 5.0 and back.label == "revive"
    revived.clear()
    del back  # gone for good this time (a finalizer runs once)
    assert settle() == healthy

    # in cycles, collected while sweeps run: a collection at almost every
    # allocation, one sweep after each cycle is made
    kept = []
    threshold = gc.get_threshold()
    try:
        for i in range(200):
            a = Value(float(i))
            kept.append((a, a * 2.0, float(i)))
            junk = [Value(1.0) + 1.0 for _ in range(5)]
            m = Mortal(float(i))
            m.me = m
            del a, junk, m
            gc.set_threshold(1, 1, 1)
            pygrad.live_nodes()
            gc.set_threshold(*threshold)
    finally:
        gc.set_threshold(*threshold)
    gc.collect()
    assert len(finalized) == 2 + 200
    assert all(a.data == x and b.data == 2 * x for a, b, x in kept)
    del kept
    assert settle() == healthy


def test_a_dead_value_with_a_garbage_handle_does_not_poison_sweeps(healthy):
    # A sweep hands the handles of the Values it looked at to C in one batch:
    # one garbage _h in it must not keep the others from being released, nor
    # make live_nodes() (or any later sweep) raise.
    for garbage in ("12", None, 1.5, 2**64, -2**63 - 1, object(), -1, 2**62, (1 << 42) - 1):
        # bad survived a sweep: it holds its own reference, which nobody can name now
        values = [Value(float(i)) for i in range(100)]
        bad = Value(1.0)
        lost = bad._h
        assert pygrad.live_nodes() == healthy + 101
        bad._h = garbage
        del values, bad
        assert pygrad.live_nodes() == healthy + 1  # only the tampered Value's own node
        assert lib.pg_release(lost) == lib.PG_OK  # given back by hand
        # bad is young: the nursery holds its node, and lets go of it
        values = [Value(float(i)) for i in range(100)]
        assert pygrad.live_nodes() == healthy + 100
        bad = Value(1.0)
        lost = bad._h
        bad._h = garbage
        Value(0.0)  # a later call: bad's is no longer in flight
        del values, bad
        assert pygrad.live_nodes() == healthy
        assert not lib.pg_valid(lost)
    assert settle() == healthy


def test_uninitialized_values(healthy):
    class Sub(Value):
        __slots__ = ("tag",)

    good = Value(3.0)
    for cls in (Value, Sub):
        for blank in (cls.__new__(cls), object.__new__(cls)):
            for name, fn in OPERATIONS:
                if name in ("eq", "hash"):
                    continue
                with pytest.raises(PYTHON_ERRORS):
                    fn(blank, good)
            # micrograd's identity semantics: comparing and hashing read no handle
            assert blank != good and blank == blank and hash(blank) == hash(blank)
            blank.label = "blank"  # attributes: a sweep never sees a Value that has no node
            with pytest.raises(AttributeError):
                blank._op = "op"
            del blank
            pygrad.live_nodes()
    assert good.data == 3.0 and good.grad == 0.0
    # __init__ can still be run on a blank Value later, and it becomes a leaf
    late = Value.__new__(Value)
    Value.__init__(late, 4.0)
    assert (late * 2).data == 8.0
    del late, good
    assert settle() == healthy


def test_value_init_on_something_that_is_not_a_value(healthy):
    x = Value(1.0)
    for target in (object(), 0, "s", [], MV(1.0)):
        for args in ((1.0,), (1.0, (x,), "op"), (1.0, (), "op")):
            with pytest.raises((TypeError, AttributeError)):
                Value.__init__(target, *args)
            assert pygrad.live_nodes() == healthy + 1  # nothing made, nothing leaked
    del x


def test_init_twice_does_not_leak(healthy):
    # __init__ again moves a Value to a new node and gives the old one back
    v = Value(1.0)
    old = v._h
    v.__init__(2.0)
    assert v.data == 2.0 and v._h != old
    pygrad.live_nodes()
    assert not lib.pg_valid(old)
    del v
    assert settle() == healthy
    # a stateful Value (attributes) whose old node is still in a graph: the
    # graph keeps the old node, the Value keeps its attributes on the new one
    x = Value(1.0, label="x")
    y = x * 3.0
    x.__init__(5.0)
    assert x.data == 5.0 and x.label == "x" and x._op == ""
    y.backward()
    assert sorted((k.data, k.grad) for k in y._prev) == [(1.0, 3.0), (3.0, 1.0)]
    assert x.grad == 0.0 and all(k is not x for k in y._prev)
    x.__init__(6.0, (x,), "again")  # and again, as a custom op over its own old node
    assert x.data == 6.0 and x._op == "again"
    (old_x,) = x._prev
    assert old_x.data == 5.0 and old_x is not x
    del x, y, old_x
    assert settle() == healthy


@pytest.mark.parametrize("bad", [None, 1, "fn", 1.5, object(), [lambda: None]])
def test_non_callable_backward_is_refused(bad, healthy):
    x = Value(2.0)
    y = x * 3.0
    custom = Value(1.0, (x,), "c")
    for v in (x, y, custom):
        op = v._op
        with pytest.raises(TypeError):
            v._backward = bad
        assert v._op == op
    y.backward()  # still a built-in op: no tape needed
    assert x.grad == 3.0
    del x, y, custom


def test_pickle_of_tampered_values_raises(healthy):
    v = Value(2.0)
    original = v._h
    for kind in tamper_kinds():
        if kind == "deleted":
            del v._h
        else:
            garbage = garbage_handle(kind)
            v._h = garbage[0] if kind == "stale_slot" else garbage
            del garbage
        for dump in (pickle.dumps, copy.copy, copy.deepcopy):
            with pytest.raises(PYTHON_ERRORS):
                dump(v)
        v._h = original
    assert pickle.loads(pickle.dumps(v)).data == 2.0
    del v
    assert settle() == healthy


def test_pickles_that_were_tampered_with(healthy):
    # the payload's data and grad fields replaced with garbage: Python errors
    good = pickle.dumps(Value(2.0))
    assert pickle.loads(good).data == 2.0
    restore = pygrad.engine._restore
    for data, grad in [("x", 0.0), (None, 0.0), (1.0, "y"), (1j, 0.0), ([1.0], 0.0)]:
        with pytest.raises(PYTHON_ERRORS):
            restore(Value, data, grad)
    with pytest.raises(PYTHON_ERRORS):
        restore(int, 1.0, 0.0)  # not a Value class
    assert settle() == healthy


# --- backward callbacks that misbehave ----------------------------------------------

def custom(x, backward):
    out = Value(x.data * 2, (x,), "twice")
    out._backward = backward
    return out


def test_custom_backward_that_raises_propagates_and_the_engine_recovers(healthy):
    class Boom(Exception):
        pass

    for exc in (Boom, ZeroDivisionError, KeyboardInterrupt, MemoryError, SystemExit):
        x = Value(1.5)
        calls = []

        def backward():
            calls.append(1)
            raise exc("from a custom backward")
        y = custom(x, backward)
        z = y * 3.0 + x
        with pytest.raises(exc):
            z.backward()
        assert calls == [1]
        assert y.grad == 3.0  # the built-in steps above y ran
        assert x.grad == 1.0  # z's '+' reached x; y's backward never finished
        del x, y, z, backward
        assert_healthy(healthy)


def test_del_inside_backward_callbacks(healthy):
    holder = {}
    x = Value(2.0)

    def backward():
        # drop every Python reference to the graph from inside its backward
        holder.clear()
        gc.collect()
        pygrad.live_nodes()
        x.grad += 2 * out_grad()

    y = custom(x, backward)
    root = (y * y) + 1.0
    out_grad = lambda y_h=y._h: lib.pg_grad(y_h)  # noqa: E731 - reads y's node by handle
    holder["y"], holder["root"] = y, root
    del y, root
    holder["root"].backward()
    assert holder == {}
    assert x.grad == 2 * (2 * 4.0)  # d(y*y)/dy = 2y = 8, times 2
    del x, backward, out_grad
    assert settle() == healthy


def test_backward_callbacks_that_build_backprop_and_free_other_graphs(healthy):
    x = Value(0.5)
    seen = []

    def backward():
        # a whole other graph built, backpropagated and dropped mid-backward
        a = Value(3.0)
        b = (a * a).tanh() + a.exp()
        b.backward()
        seen.append(a.grad)
        del a, b
        pygrad.live_nodes()
        x.grad += 2 * y.grad

    y = custom(x, backward)
    z = y.sigmoid()
    z.backward()
    sig = 1 / (1 + math.exp(-1.0))
    assert x.grad == pytest.approx(2 * sig * (1 - sig), rel=1e-12)
    assert seen and seen[0] == pytest.approx(2 * 3.0 * (1 - math.tanh(9.0) ** 2) + math.exp(3.0))
    # nested backward through the same graph from inside its own backward
    x.grad = 0.0
    depth = []

    def reentrant():
        depth.append(1)
        if len(depth) < 3:
            z.backward()  # runs this very callback again, one level deeper
        x.grad += 2 * y.grad

    y._backward = reentrant
    z.backward()
    assert len(depth) == 3 and math.isfinite(x.grad) and x.grad > 0
    y._backward = lambda: None  # reentrant holds z, y's parent: a cycle no collection frees
    del x, y, z, backward, reentrant
    assert settle() == healthy


def test_callbacks_that_rewire_or_break_the_graph_mid_backward(healthy):
    x = Value(1.0)
    w = Value(2.0)

    def backward():
        y._backward = lambda: None  # replaces itself for the next backward
        with pytest.raises(TypeError):
            w._backward = 42
        saved = x._h  # break a Value the graph holds, then restore it
        x._h = "garbage"
        try:
            with pytest.raises(PYTHON_ERRORS):
                x.grad += 1.0
        finally:
            x._h = saved
        x.grad += 2 * y.grad

    y = custom(x, backward)
    z = y * w
    z.backward()
    assert x.grad == 4.0 and w.grad == 2.0
    z.backward()  # the replacement backward does nothing
    assert x.grad == 4.0 and w.grad == 4.0
    del x, w, y, z, backward
    assert settle() == healthy


def test_backward_on_tampered_children_of_a_custom_op(healthy):
    x = Value(1.0)
    y = custom(x, lambda: None)
    (kid,) = y._prev
    assert kid is x  # one Value per node: _prev hands out the user's own
    original = kid._h
    kid._h = "garbage"
    try:
        # x no longer names the node: _prev makes a Value that does
        (again,) = y._prev
        assert again is not x and again._h == original and again.data == 1.0
        with pytest.raises(PYTHON_ERRORS):
            x.data
        del again
    finally:
        kid._h = original
    assert x.data == 1.0
    y.backward()
    assert x.grad == 0.0  # the custom backward does nothing
    del x, y, kid
    assert settle() == healthy


# --- optimizers and replays whose public lists are edited ---------------------------

def test_optimizer_param_list_edits_do_not_reach_c(healthy):
    # The optimizer's C buffers are sized at construction; appending to
    # opt.params must not make C read or write past them.
    ps = [Value(1.0) for _ in range(3)]
    for make in (lambda: SGD(ps, lr=0.5, momentum=0.9, weight_decay=0.1),
                 lambda: Adam(ps, lr=0.5), lambda: SGD(ps, lr=0.5)):
        opt = make()
        for p in ps:
            p.grad = 1.0
        extra = Value(5.0)
        extra.grad = 1.0
        opt.params.append(extra)
        opt.params.extend(Value(1.0) for _ in range(100))
        opt.step()
        opt.zero_grad()
        assert extra.data == 5.0 and extra.grad == 1.0  # not a parameter of this optimizer
        assert all(p.grad == 0.0 for p in ps)
        opt.params.clear()  # the optimizer keeps its parameters alive regardless
        opt.params.append("not a Value")
        opt.step()
        pickle.loads(pickle.dumps(opt)).step()
        del opt, extra
    assert ps[0].data != 1.0
    del ps, p
    assert settle() == healthy


def test_replay_input_list_edits_do_not_reach_c(healthy):
    a, b = Value(1.0), Value(2.0)
    loss = a * b + 1.0
    step = pygrad.Replay(loss, inputs=[a])
    step.inputs.append(b)
    step.inputs.extend(Value(0.0) for _ in range(100))
    with pytest.raises(ValueError):
        step.feed([3.0, 4.0])  # the recorded replay has one input
    step.feed([3.0])
    assert step.forward() == 3.0 * 2.0 + 1.0 and b.data == 2.0
    step.inputs.clear()
    step.feed([5.0])
    assert step.forward() == 11.0
    step.close()
    del a, b, loss, step
    assert settle() == healthy


# --- pickles that carry a model's cached C plan --------------------------------------

# Run in a subprocess: on an engine that trusted the plan, C writes past a
# buffer, and the interpreter may die of it (or go on corrupted).
CRAFTED_MLP_PICKLE = r'''
import copyreg, importlib, operator, pickle
from pygrad import Value
from pygrad.nn import MLP, _MLPPlan


class Call:
    """Pickles as fn(*args), called when the pickle is loaded."""
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


class Built:
    """Pickles as an instance of cls given `state` (pickle's BUILD step)."""
    def __init__(self, cls, state):
        self.cls, self.state = cls, state

    def __reduce__(self):
        return copyreg._reconstructor, (self.cls, object, None), self.state


model = MLP(1, [1])
(neuron,) = model.layers[0].neurons
neuron.w[0].data, neuron.b.data = 2.0, 0.25
expected = model([0.5]).data

# A plan for OUTPUTS outputs over parameters of its own, whose output buffer
# (nout) holds one, stamped with the structure version current at loading:
# pg_mlp, trusting it, would write OUTPUTS handles into a buffer of one.
OUTPUTS = 1 << 18
params = [Value(0.5)] * (2 * OUTPUTS)
plan = Built(_MLPPlan, (None, {
    "version": Call(operator.getitem, Call(getattr, Call(importlib.import_module, "pygrad.nn"),
                                           "_structure_version"), 0),
    "_values": params, "params": Call(list, Call(map, operator.attrgetter("_h"), params)),
    "n_params": 2 * OUTPUTS, "sizes": [1, OUTPUTS], "act": [0], "acts": [0], "n_layers": 1,
    "nin": 1, "nout": 1}))
forms = {"dict": {"layers": model.layers, "_plan": plan},        # MLP.__dict__ as pickled
         "slots": ({"layers": model.layers}, {"_plan": plan})}  # set by setattr
for form, state in forms.items():
    data = pickle.dumps(Built(MLP, state))
    try:
        out = pickle.loads(data)([0.5])
        print(form, "result", out.data == expected, flush=True)
    except (TypeError, ValueError, AttributeError, pickle.UnpicklingError) as e:
        print(form, "refused", type(e).__name__, flush=True)
'''


def test_a_pickled_mlp_never_brings_its_own_plan():
    # MLP caches what pg_mlp needs (parameter handles, layer sizes, buffer
    # sizes) in _plan.  A pickle is not to be trusted with it: a crafted one
    # whose state carries a _plan must give the model's real output, or a
    # Python exception -- never C running on the pickle's sizes.
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", CRAFTED_MLP_PICKLE], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])
    lines = done.stdout.split("\n")[:-1]
    assert [line.split()[0] for line in lines] == ["dict", "slots"], done.stdout
    for line in lines:
        assert line.split()[1:] == ["result", "True"] or line.split()[1] == "refused", line
