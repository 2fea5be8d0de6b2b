"""Record a training step's graph once, then replay it in C.

micrograd rebuilds the same graph node by node every step although its shape
never changes.  A Replay keeps the graph of one step (its nodes in
topological order) and reruns it: forward() recomputes every node from its
leaves' current values, backward() zeroes every grad and backpropagates, one C
call each, with no Python work per node.  The first replay plans the graph:
a layer applied across a batch (one neuron's DOT nodes over every sample)
runs as dense batched kernels, the rest node by node, and every value and
grad is still the eager graph's, bit for bit (``dense_groups`` says how many
such layers it found)::

    xs = [[Value(0.0), Value(0.0)] for _ in range(batch)]   # input leaves
    loss = build_loss(model, xs)                           # eager, once
    step = Replay(loss, inputs=[v for row in xs for v in row])
    for batch in batches:
        step.feed(batch)          # new input values, one call
        step.forward()            # == loss.data of an eager rebuild, bit for bit
        step.backward()           # == model.zero_grad(); loss.backward()
        optimizer.step()

``Replay(..., inputs_require_grad=False)`` skips the gradients into the input
leaves (fed-in data whose grads nobody reads, as torch tensors made without
requires_grad): backward() then leaves their ``grad`` at 0, and every other
grad is the same as with them.

Like tracing in PyTorch (torch.jit.trace), a recording is of the ops that ran,
not of the Python that ran them: if the graph's shape depends on data through
Python control flow (``if v.data > 0: ...``), a replay keeps following the
branch taken when it was recorded.  Pass ``check=build_loss`` to run the eager
graph beside every forward() and raise ReplayMismatchError at the first node
where they differ.  Numbers the graph baked in as constants (``-yi * score``
with a Python float yi) stay fixed: make anything that changes between steps a
Value leaf and list it in ``inputs``.
"""
import threading

from . import _lifetime
from ._core import PygradError, check, ffi, lib
from .engine import _OP_NAMES, Value, _real, _Tape

_check = check  # Replay.__init__'s `check` parameter shadows the name

__all__ = ["Replay", "ReplayMismatchError"]


class ReplayMismatchError(PygradError, AssertionError):
    """A replayed graph computed something other than the eager graph."""


class Replay:
    """The recorded graph under `root`, replayable in C.

    inputs: leaves whose data feed() sets, in order (e.g. a minibatch).
    check:  optional callable building the same graph eagerly; every forward()
            then compares the two node by node and raises on a mismatch.
    inputs_require_grad: False to give the inputs that are leaves no gradient
            in backward() (their grad stays 0), which saves computing it.
    A Replay belongs to the thread that made it, and keeps its graph alive
    until close() or until it is dropped.
    """

    def __init__(self, root, inputs=(), check=None, inputs_require_grad=True):
        self._tape = None
        if not isinstance(root, Value):
            raise TypeError(f"Replay records the graph of a Value, not {type(root).__name__}")
        self.inputs = list(inputs)
        for value in self.inputs:
            if not isinstance(value, Value):
                raise TypeError(f"Replay inputs are Values, not {type(value).__name__}")
        self._tape = _record(root)
        self.root = root
        # what feed() hands C, fixed here: editing self.inputs later changes neither
        self._input_values = tuple(self.inputs)
        self._input_handles = ffi.new("int64_t[]", [v._h for v in self._input_values])
        self.inputs_require_grad = bool(inputs_require_grad)
        if not self.inputs_require_grad:
            _check(lib.pg_tape_skip_grads(self._tape.id, self._input_handles,
                                          len(self._input_values)))
        self._thread = threading.get_ident()
        self._check = check
        self._planned = False

    def __len__(self):
        """How many nodes the recorded graph has."""
        return lib.pg_tape_length(self._live_tape().id)

    @property
    def dense_groups(self):
        """How many groups of neurons (one neuron's DOT nodes across the
        samples of a batch: a layer over a batch) this replay runs as dense
        batched kernels; the rest of the graph runs node by node."""
        return _check(lib.pg_tape_groups(self._planned_tape().id))

    def feed(self, values):
        """Set the inputs' data from a flat list or array of floats, in one call."""
        self._live_tape()
        buffer = _doubles(values)
        count = len(self._input_values)
        if len(buffer) != count:
            raise ValueError(f"feed() got {len(buffer)} values for {count} inputs")
        check(lib.pg_set_data_many(self._input_handles, buffer, count))

    def forward(self):
        """Recompute every node; returns the root's new value."""
        check(lib.pg_tape_forward(self._planned_tape().id))
        if self._check is not None:
            self._compare_with_eager(self._check())
        return self.root.data

    def backward(self):
        """Zero every grad in the graph (parameters' included), then backward."""
        check(lib.pg_tape_replay_backward(self._planned_tape().id))

    def close(self):
        """Let go of the recorded graph, and of the Values it was given."""
        tape, self._tape = self._tape, None
        self.root, self.inputs, self._check = None, [], None
        self._input_values = ()
        if tape is not None:
            tape.free()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _planned_tape(self):
        """The tape, planned: the first time, after a sweep has let go of the
        Values that died since recording (the graph-building temporaries),
        so that the plan can lay out the nodes only the tape still names."""
        tape = self._live_tape()
        if not self._planned:
            _lifetime.sweep(full=True)
            check(lib.pg_tape_groups(tape.id))  # plans it
            self._planned = True
        return tape

    def _live_tape(self):
        if self._tape is None:
            raise PygradError("this Replay was closed")
        if threading.get_ident() != self._thread:
            raise PygradError("this Replay belongs to the thread that recorded it; "
                              "record one Replay per thread")
        return self._tape

    def _compare_with_eager(self, eager_root):
        eager = _record(eager_root)
        try:
            where = check(lib.pg_tape_diff(self._tape.id, eager.id))
            ours, theirs = len(self._tape), len(eager)
            if where == ours == theirs:
                return
            raise ReplayMismatchError(
                f"replay differs from the eager graph at node {where} "
                f"(replay has {ours} nodes, eager {theirs}): replay "
                f"{_describe(self._tape, where)}, eager {_describe(eager, where)}. "
                "Does Python control flow depend on data, or a changing number "
                "sit in the graph as a constant?")
        finally:
            eager.free()


def _record(root):
    tape = _Tape(root)
    if lib.pg_tape_custom_ops(tape.id):
        tape.free()
        raise ValueError("this graph has custom ops written in Python, whose values "
                         "a replay cannot recompute")
    return tape


def _describe(tape, position):
    if position >= len(tape):
        return "has no such node"
    h = tape.node(position)
    return f"op {_OP_NAMES.get(lib.pg_op(h), lib.pg_op(h))!r} = {lib.pg_data(h)!r}"


def _doubles(values):
    """A double[] for C from real numbers: a list or tuple of them, or an array
    of bools, ints or floats (read in place when already contiguous float64).
    Anything else is a TypeError, raised before anything is set: a string is
    not parsed, a complex number does not lose its imaginary part."""
    if isinstance(values, (list, tuple)):
        return ffi.new("double[]", [v if type(v) is float else _real(v) for v in values])
    try:
        import numpy
    except ImportError:
        return ffi.new("double[]", [_real(v) for v in values])
    array = numpy.asarray(values)
    if array.dtype.kind == "O":
        return ffi.new("double[]", [_real(v) for v in array.reshape(-1)])
    if array.dtype.kind not in "biuf":
        raise TypeError(f"feed() takes real numbers, not an array of {array.dtype}")
    array = numpy.ascontiguousarray(array, dtype=numpy.float64).reshape(-1)
    return ffi.from_buffer("double[]", array)
