"""Value: micrograd's scalar autograd node, with its graph kept in C.

Read it like micrograd's engine.py: each op computes the value, records how
the gradient flows back, and returns the new node; here both happen in one
call into pygrad's C arena.  A Value holds only a handle to its node, so a
graph is no Python objects at all, and Python's cycle collector has nothing
to do.
"""
import contextlib
import numbers
import sys
import threading
import weakref

from . import _core
from ._core import check, error_for, ffi, lib

__all__ = ["Value", "no_grad", "live_nodes", "release_dead_values"]

# The C calls on the hot path, bound once.
_leaf, _add, _mul, _sub, _div = lib.pg_leaf, lib.pg_add, lib.pg_mul, lib.pg_sub, lib.pg_div
_add_const, _mul_const = lib.pg_add_const, lib.pg_mul_const
_rsub_const, _rdiv_const = lib.pg_rsub_const, lib.pg_rdiv_const
_pow, _pow_const, _rpow_const = lib.pg_pow, lib.pg_pow_const, lib.pg_rpow_const
_data, _grad = lib.pg_data, lib.pg_grad
_backward_from = lib.pg_backward
_INT_EXPONENT = lib.PG_FLAG_INT_EXPONENT
_NEED_PYTHON = lib.PG_NEED_PYTHON

_OP_NAMES = {lib.PG_OP_LEAF: "", lib.PG_OP_ADD: "+", lib.PG_OP_MUL: "*",
             lib.PG_OP_POWV: "**", lib.PG_OP_RELU: "ReLU", lib.PG_OP_TANH: "tanh",
             lib.PG_OP_EXP: "exp", lib.PG_OP_LOG: "log", lib.PG_OP_SIGMOID: "sigmoid",
             lib.PG_OP_DOT: "dot", lib.PG_OP_PYTHON: ""}


def _real(x):
    """x as a float if it is a real number; TypeError otherwise (str, None,
    complex, lists...).  Plain floats never get here on the hot path."""
    if type(x) is int or type(x) is bool:
        return float(x)
    if isinstance(x, (str, bytes, bytearray)) or (
            isinstance(x, numbers.Complex) and not isinstance(x, numbers.Real)):
        raise TypeError(f"a Value holds a real number, not {type(x).__name__}: {x!r}")
    try:
        return float(x)
    except TypeError:
        raise TypeError(f"a Value holds a real number (int, float, numpy scalar, or "
                        f"anything with __float__), not {type(x).__name__}") from None


# A dead Value's handle is queued here and released with the next batch: one
# C call per _RELEASE_BATCH Values instead of one each.
_dead_handles = []
_BATCH_WITHOUT_LIMIT = 4096
_RELEASE_BATCH = _BATCH_WITHOUT_LIMIT
_release_lock = threading.Lock()


def release_dead_values():
    """Release the nodes of every Value that has died since the last batch."""
    if not _release_lock.acquire(blocking=False):
        return  # another thread is releasing; only appends race with it
    try:
        count = len(_dead_handles)
        batch = _dead_handles[:count]
        del _dead_handles[:count]
        try:
            lib.pg_release_many(batch, count)
        except (TypeError, OverflowError):  # a dead Value's _h was overwritten with
            for h in batch:                # a non-handle: release the rest one by one
                try:
                    lib.pg_release(h)
                except (TypeError, OverflowError):
                    pass
    finally:
        _release_lock.release()


def _release_batch_for(limit):
    """Under a node limit, a dead Value's nodes are released as it dies, so the
    limit counts only nodes something holds: with batched releases, the graphs
    of up to 4,095 dead Values would count against it too, and a program
    holding a handful of Values could hit the cap."""
    global _RELEASE_BATCH
    _RELEASE_BATCH = 1 if limit else _BATCH_WITHOUT_LIMIT
    release_dead_values()


_core.on_node_limit.append(_release_batch_for)
_release_batch_for(_core.node_limit)  # PYGRAD_MAX_NODES, read as _core was imported


def live_nodes():
    """How many nodes the arena holds, after releasing those of dead Values."""
    release_dead_values()
    return lib.pg_live_nodes()


def _node(h, _new=object.__new__):
    """Wrap a handle fresh from the C core (one reference, ours) in a Value."""
    if h < 0:
        raise error_for(h)
    out = _new(Value)
    out._h = h
    return out


class Value:
    """ stores a single scalar value and its gradient """

    __slots__ = ("_h", "__weakref__")
    __array_ufunc__ = None  # numpy scalars on the left defer to our reflected ops

    def __init__(self, data, _children=(), _op=''):
        if type(data) is not float:
            data = _real(data)
        if _children or _op or type(self) is not Value:
            _init_custom(self, data, _children, _op)
        else:
            h = _leaf(data)
            if h < 0:
                raise error_for(h)
            self._h = h

    def __del__(self, _dead=_dead_handles, _queue=_dead_handles.append):
        try:
            _queue(self._h)
            if len(_dead) >= _RELEASE_BATCH:
                release_dead_values()
        except AttributeError:  # __init__ raised before the node existed
            pass
        except TypeError:  # interpreter shutdown: this module's globals are gone
            pass

    # --- the ops: micrograd's, then pygrad's own ------------------------------

    # + and * are the hot path: _node() is inlined there.
    def __add__(self, other, _new=object.__new__):
        if isinstance(other, Value):
            h = _add(self._h, other._h)
        else:
            h = _add_const(self._h, other if type(other) is float else _real(other))
        if h < 0:
            raise error_for(h)
        out = _new(Value)
        out._h = h
        return out

    def __mul__(self, other, _new=object.__new__):
        if isinstance(other, Value):
            h = _mul(self._h, other._h)
        else:
            h = _mul_const(self._h, other if type(other) is float else _real(other))
        if h < 0:
            raise error_for(h)
        out = _new(Value)
        out._h = h
        return out

    def __pow__(self, other):
        if isinstance(other, Value):
            return _node(_pow(self._h, other._h))
        exponent = _real_operand(other)
        if exponent is None:
            return NotImplemented
        return _node(_pow_const(self._h, *exponent))

    def relu(self):
        return _node(lib.pg_relu(self._h))

    def tanh(self):
        return _node(lib.pg_tanh(self._h))

    def exp(self):
        return _node(lib.pg_exp(self._h))

    def log(self):
        return _node(lib.pg_log(self._h))

    def sigmoid(self):
        return _node(lib.pg_sigmoid(self._h))

    def backward(self):
        status = _backward_from(self._h)
        if status == _NEED_PYTHON:
            _backward_through_custom_ops(self)
        elif status < 0:
            raise error_for(status)

    # Derived ops, built as micrograd builds them so values round the same way.

    def __neg__(self):  # -self == self * -1
        return _node(_mul_const(self._h, -1.0))

    __radd__ = __add__  # other + self == self + other

    def __sub__(self, other):  # self + (-other)
        if isinstance(other, Value):
            return _node(_sub(self._h, other._h))
        return _node(_add_const(self._h, _real(-other)))

    def __rsub__(self, other):  # other + (-self)
        return _node(_rsub_const(self._h, _real(other)))

    __rmul__ = __mul__  # other * self == self * other

    def __truediv__(self, other):  # self * other**-1
        if isinstance(other, Value):
            return _node(_div(self._h, other._h))
        return _node(_mul_const(self._h, _real(other ** -1)))

    def __rtruediv__(self, other):  # other * self**-1
        return _node(_rdiv_const(self._h, _real(other)))

    def __rpow__(self, other):  # other ** self: micrograd has none
        base = _real_operand(other)
        if base is None:
            return NotImplemented
        return _node(_rpow_const(self._h, base[0]))

    # --- data and grad: Python floats, read from and written to the node -----

    @property
    def data(self):
        value = _data(self._h)
        if value != value:  # NaN: a real NaN, or a bad handle
            _check_live(self)
        return value

    @data.setter
    def data(self, value):
        check(lib.pg_set_data(self._h, value if type(value) is float else _real(value)))

    @property
    def grad(self):
        value = _grad(self._h)
        if value != value:
            _check_live(self)
        return value

    @grad.setter
    def grad(self, value):
        check(lib.pg_set_grad(self._h, value if type(value) is float else _real(value)))

    # --- micrograd's graph internals, derived from the node on demand --------

    @property
    def _prev(self):
        h = self._h
        count = check(lib.pg_child_count(h))
        return {_adopt(check(lib.pg_child_retain(h, i))) for i in range(count)}

    @property
    def _op(self):
        return _op_of(self._h)

    @property
    def _backward(self):
        custom = _custom_op(self._h)
        if custom is not None:
            return custom.backward or _no_backward
        return lambda: check(lib.pg_node_backward(self._h))

    @_backward.setter
    def _backward(self, fn):
        if not callable(fn):
            raise TypeError(f"_backward must be callable, not {type(fn).__name__}")
        h = self._h
        custom = _custom_op(h)
        if custom is None:  # a built-in op whose backward the user replaces
            op = self._op
            check(lib.pg_make_python(h))
            custom = _register_custom_op(h, op)
        custom.backward = fn

    # --- identity: two Values are equal when they are the same node ----------

    def __eq__(self, other):
        if isinstance(other, Value):
            return self._h == other._h
        return NotImplemented

    def __hash__(self):
        return hash(self._h)

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"

    # --- pickle and copy: a Value is saved as its data and grad (a leaf; the
    # graph that made it is not saved, as with a torch tensor's grad_fn) ------

    def __reduce__(self):
        return _restore, (type(self), self.data, self.grad), _subclass_state(self)


def _subclass_state(value):
    """A subclass's own attributes, in pickle's (dict, slots) form, or None."""
    slots = {}
    for cls in type(value).__mro__:
        if cls is Value:
            break
        names = cls.__dict__.get("__slots__", ())
        for name in (names,) if isinstance(names, str) else names:
            if name not in ("__dict__", "__weakref__") and hasattr(value, name):
                slots[name] = getattr(value, name)
    attributes = getattr(value, "__dict__", None) or None
    return (attributes, slots) if slots else attributes


def _restore(cls, data, grad):
    value = cls.__new__(cls)
    Value.__init__(value, data)
    value.grad = grad
    return value


class no_grad(contextlib.ContextDecorator):
    """Ops compute values without recording a graph (each result is a leaf), in
    this thread, as torch.no_grad(): for inference, e.g. scoring a grid.  A
    context manager or a decorator; nests, and is safe across threads."""

    def __init__(self):
        self._saved = threading.local()  # each thread's stack of previous modes

    def __enter__(self):
        self._saved.__dict__.setdefault("modes", []).append(lib.pg_set_grad_enabled(0))
        return self

    def __exit__(self, *exc):
        lib.pg_set_grad_enabled(self._saved.modes.pop())
        return False


def _real_operand(k):
    """(k as float, flags) for a real-number exponent or base; None otherwise."""
    if type(k) is bool:
        return float(k), _INT_EXPONENT | lib.PG_FLAG_BOOL_EXPONENT
    if type(k) is int or isinstance(k, numbers.Integral):
        return float(k), _INT_EXPONENT
    if isinstance(k, numbers.Real):
        return float(k), 0
    return None


def _op_of(h):
    """micrograd's op string for node h: '+', '*', '**2', 'ReLU', '' ..."""
    custom = _custom_op(h)
    if custom is not None:
        return custom.op
    tag = check(lib.pg_op(h))
    if tag == lib.PG_OP_POW:
        exponent, flags = lib.pg_exponent(h), lib.pg_flags(h)
        if flags & lib.PG_FLAG_BOOL_EXPONENT:
            return f"**{bool(exponent)}"
        if flags & _INT_EXPONENT:
            return f"**{int(exponent)}"
        return f"**{exponent}"
    return _OP_NAMES[tag]


def _check_live(value):
    if not lib.pg_valid(value._h):
        raise error_for(lib.PG_ERR_HANDLE)


def _no_backward():
    pass


# --- canonical wrappers --------------------------------------------------------
# Values made by ops are plain and unregistered (the hot path).  Values a user
# may care about as objects -- subclass instances, custom ops, and whatever
# _prev hands out -- are registered here, so a walk through _prev meets the
# same object for the same node while anyone holds it.

_wrappers = weakref.WeakValueDictionary()


def _adopt(h):
    """A Value for handle h, whose external reference we own."""
    existing = _wrappers.get(h)
    if existing is not None:
        lib.pg_release(h)
        return existing
    value = _node(h)
    _wrappers[h] = value
    return value


# --- custom ops written in Python, micrograd style -----------------------------
#   out = Value(f(x.data), (x,), 'f'); out._backward = lambda: ...


class _CustomOp:
    __slots__ = ("op", "backward")

    def __init__(self, op, backward=None):
        self.op = op
        self.backward = backward


# handle -> _CustomOp for nodes tagged PG_OP_PYTHON.  Entries of freed nodes
# linger until C reports them, and a handle comes round again after 2**10
# reuses of its slot: so an entry is trusted only for a node C tags as a custom
# op, and C's reports are always taken before a new entry is made.  One lock
# keeps reports, entries and collection in that order across threads.
_custom_ops = {}
_custom_lock = threading.RLock()  # re-entered when a dropped closure makes Values
_collect_at = 1024


def _custom_op(h):
    """The registry entry of node h, if h is a live custom op."""
    custom = _custom_ops.get(h)
    if custom is not None and lib.pg_op(h) == lib.PG_OP_PYTHON:
        return custom
    return None


def _register_custom_op(h, op):
    with _custom_lock:
        _forget_freed_custom_ops()  # a stale report of h must not outlive this entry
        custom = _custom_ops[h] = _CustomOp(op)
        _collect_custom_ops_if_due()
    return custom


def _init_custom(value, data, children, op):
    if not isinstance(value, Value):  # Value.__init__(obj, ...): a node made for obj
        # could not be stored in it, and would leak
        raise TypeError(f"Value.__init__ initializes Values, not {type(value).__name__}")
    handles = []
    for child in children:
        if not isinstance(child, Value):
            raise TypeError(f"_children must be Values, not {type(child).__name__}")
        handles.append(child._h)
    if children or op:
        h = check(lib.pg_python_node(data, handles, len(handles)))
        value._h = h
        _register_custom_op(h, op)
    else:
        h = value._h = check(_leaf(data))
    _wrappers[h] = value


def _backward_through_custom_ops(root):
    """backward() for a graph with custom ops: C runs the built-in steps and
    hands back each custom op in turn, whose Python backward runs here."""
    tape = check(lib.pg_tape_record(root._h))
    try:
        end = check(lib.pg_tape_backward(tape, lib.pg_tape_length(tape)))
        while end:
            custom = _custom_op(lib.pg_tape_node(tape, end - 1))
            if custom is not None and custom.backward is not None:
                custom.backward()
            end = check(lib.pg_tape_backward(tape, end - 1))
    finally:
        lib.pg_tape_free(tape)


def _forget_freed_custom_ops():
    """Drop the entries of custom-op nodes C has freed (call with the lock)."""
    buffer = ffi.new("int64_t[]", 64)
    count = 64
    while count == 64:
        count = lib.pg_take_freed_python(buffer, 64)
        for i in range(count):
            _custom_ops.pop(buffer[i], None)


def _collect_custom_ops_if_due():
    global _collect_at
    if len(_custom_ops) >= _collect_at:
        collect_custom_ops()
        _collect_at = max(1024, 2 * len(_custom_ops))


def collect_custom_ops():
    """Free custom-op nodes that only their own backward closure keeps alive.

    micrograd's closures refer back to their node (``out``), a cycle that a C
    reference count alone never frees.  A node whose only holders are Values
    captured by its own ``_backward`` is garbage: drop the closure and the node
    goes with it.  Runs automatically as custom ops accumulate.
    """
    with _custom_lock:
        release_dead_values()
        _forget_freed_custom_ops()
        for h in reversed(list(_custom_ops)):  # newest first: parents before children
            if _held_only_by_own_backward(h):
                del _custom_ops[h]  # the closure goes, and the Values it held
                release_dead_values()  # ... and their nodes now, so the custom
                # ops they were built on are free by the time the loop gets there
        _forget_freed_custom_ops()


def _held_only_by_own_backward(h):
    custom = _custom_op(h)
    if custom is None or lib.pg_parent_refs(h) != 0:
        return False
    fn = custom.backward
    del custom
    closure = getattr(fn, "__closure__", None)
    # Held by the registry entry, `fn` here, and getrefcount's argument.
    if closure is None or sys.getrefcount(fn) != 3:
        return False
    captured = 0
    for cell in closure:
        try:
            held = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(held, Value) and held._h == h:
            # Each held only by the closure: cell by the tuple, Value by the cell.
            if sys.getrefcount(held) != 3 or sys.getrefcount(cell) != 3:
                return False
            captured += 1
        del held
    return captured == lib.pg_external_refs(h)
