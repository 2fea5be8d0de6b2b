"""Value: micrograd's scalar autograd node, with its graph kept in C.

Read it like micrograd's engine.py: each op computes the value, records how
the gradient flows back, and returns the new node; here all three happen in
one call into pygrad's C arena (csrc/ops.c has each op's forward and backward
side by side).  How a Value and its node live and die together (attributes,
identity, custom ops, signals) is pygrad/_lifetime.py.
"""
import contextlib
import functools
import numbers
import threading

from . import _lifetime
from ._core import check, error_for, ffi, lib
from ._lifetime import free as _free, keep as _keep, settle

__all__ = ["Value", "no_grad", "live_nodes"]

# The C calls on the hot path, bound once.
_leaf, _add, _mul, _sub, _div = lib.pg_leaf, lib.pg_add, lib.pg_mul, lib.pg_sub, lib.pg_div
_add_const, _mul_const = lib.pg_add_const, lib.pg_mul_const
_rsub_const, _rdiv_const = lib.pg_rsub_const, lib.pg_rdiv_const
_pow, _pow_const, _rpow_const = lib.pg_pow, lib.pg_pow_const, lib.pg_rpow_const
_relu = lib.pg_relu
_data, _grad = lib.pg_data, lib.pg_grad
_new = object.__new__
_reuse = _free.pop

live_nodes = _lifetime.live_nodes


class Value:
    """ stores a single scalar value and its gradient """

    __slots__ = ("_h", "_anchor", "__dict__", "__weakref__")
    label = ""  # the Zero-to-Hero lecture's; Value(2.0, label='a') or v.label = 'a'
    # numpy: an array operand runs numpy's object loop, each element through
    # the operators below (as for micrograd's Values); a numpy scalar, whose
    # priority is -1e6, defers to our reflected operator, which makes it a
    # float.  ndarray's priority is 0.0, so arrays never defer to a Value.
    __array_priority__ = -1.0

    def __init__(self, data, _children=(), _op='', label=''):
        _initialize(self, data if type(data) is float else _real(data), _children, _op, label)

    # --- the ops: micrograd's, then pygrad's own ------------------------------
    # Each is one C call: it makes the node, computes its value, and records
    # which backward step applies.  + and * are the hot path, written out.

    def __add__(self, other):
        if isinstance(other, Value):
            h = _add(self._h, other._h)
            if h < 0:
                h = settle(h, (self, other), _add, self._h, other._h)
        else:  # micrograd wraps a number in a Value: the C core does, with no Python object
            k = other
            if type(k) is not float:
                k = _number(k)
                if k is None:  # an array (numpy's to run: see _number), or no number
                    return NotImplemented
            h = _add_const(self._h, k)
            if h < 0:
                h = settle(h, (self,), _add_const, self._h, k)
        out = _reuse() if _free else _new(Value)  # a dead Value made new, or a new one
        out._h = h
        _keep(out)
        return out

    def __mul__(self, other):
        if isinstance(other, Value):
            h = _mul(self._h, other._h)
            if h < 0:
                h = settle(h, (self, other), _mul, self._h, other._h)
        else:
            k = other
            if type(k) is not float:
                k = _number(k)
                if k is None:  # an array (numpy's to run: see _number), or no number
                    return NotImplemented
            h = _mul_const(self._h, k)
            if h < 0:
                h = settle(h, (self,), _mul_const, self._h, k)
        out = _reuse() if _free else _new(Value)
        out._h = h
        _keep(out)
        return out

    def __pow__(self, other):
        if isinstance(other, Value):
            return _made((self, other), _pow, self._h, other._h)
        exponent = _real_operand(other)
        if exponent is None:
            return NotImplemented
        return _made((self,), _pow_const, self._h, *exponent)

    def relu(self):  # on micrograd.nn's hot path too, so written out
        h = _relu(self._h)
        if h < 0:
            h = settle(h, (self,), _relu, self._h)
        out = _reuse() if _free else _new(Value)
        out._h = h
        _keep(out)
        return out

    def tanh(self):
        return _made((self,), lib.pg_tanh, self._h)

    def exp(self):
        return _made((self,), lib.pg_exp, self._h)

    def log(self):
        return _made((self,), lib.pg_log, self._h)

    def sigmoid(self):
        return _made((self,), lib.pg_sigmoid, self._h)

    def backward(self):
        status = lib.pg_backward(self._h)
        if status == lib.PG_CUSTOM_OPS:
            _backward_through_custom_ops(self)
        elif status < 0:
            raise error_for(status)

    # Derived ops, built as micrograd builds them so values round the same way.

    def __neg__(self):  # -self == self * -1
        return _made((self,), _mul_const, self._h, -1.0)

    __radd__ = __add__  # other + self == self + other

    def __sub__(self, other):  # self + (-other)
        if isinstance(other, Value):
            return _made((self, other), _sub, self._h, other._h)
        k = _number(other)  # a float before it is negated: numpy cannot negate np.bool_
        if k is None:
            return NotImplemented
        return _made((self,), _add_const, self._h, -k if k else _negated_zero(other))

    def __rsub__(self, other):  # other + (-self)
        k = _number(other)
        if k is None:
            return NotImplemented
        return _made((self,), _rsub_const, self._h, k)

    __rmul__ = __mul__  # other * self == self * other

    def __truediv__(self, other):  # self * other**-1
        if isinstance(other, Value):
            return _made((self, other), _div, self._h, other._h)
        k = _number(other)
        if k is None:
            return NotImplemented
        return _made((self,), _mul_const, self._h, _reciprocal(other, k))

    def __rtruediv__(self, other):  # other * self**-1
        k = _number(other)
        if k is None:
            return NotImplemented
        return _made((self,), _rdiv_const, self._h, k)

    def __rpow__(self, other):  # other ** self: micrograd has none
        base = _real_operand(other)
        if base is None:
            return NotImplemented
        return _made((self,), _rpow_const, self._h, base[0])

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
        _lifetime.register_young()  # so that the user's own Values are found
        return {_lifetime.value_for_child(h, i) for i in range(check(lib.pg_child_count(h)))}

    @property
    def _op(self):
        return _op_of(self._h)

    @_op.setter
    def _op(self, op):
        _lifetime.make_stateful(self)
        self.__dict__["_op"] = op

    @property
    def _backward(self):
        fn = _custom_backward(self._h)
        if fn is not None:
            return fn
        return _BuiltinBackward(self)

    @_backward.setter
    def _backward(self, fn):
        if not callable(fn):
            raise TypeError(f"_backward must be callable, not {type(fn).__name__}")
        if not lib.pg_grad_recording():
            return  # no_grad: no graph, so no closure kept either
        h = self._h
        _lifetime.make_stateful(self)
        self.__dict__["_backward"] = fn
        check(lib.pg_set_custom_backward(h))

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"

    # --- pickle and copy: a Value is saved as its data, grad and attributes
    # (a leaf: the graph that made it is not saved, as with a torch tensor's
    # grad_fn) ------------------------------------------------------------------

    def __reduce__(self):
        return _restore, (type(self), self.data, self.grad), _picklable_state(self)


_lifetime.bind(Value)


def _made(operands, fn, *args):
    """A new Value for the node fn(*args) made (operands: the Values it used)."""
    h = fn(*args)
    if h < 0:
        h = settle(h, operands, fn, *args)
    out = _reuse() if _free else _new(Value)
    out._h = h
    _keep(out)
    return out


# What a node's state holds for the engine, not for the user: not copied by
# pickle or a second __init__.
_NODE_KEYS = ("_op", "_backward", "_stateful_children")


def _initialize(value, data, children, op, label):
    """Value(data, _children, _op, label): a leaf, or a custom op."""
    if not isinstance(value, Value):  # Value.__init__(obj, ...): a node made for obj
        raise TypeError(f"Value.__init__ initializes Values, not {type(value).__name__}")
    handles = []
    for child in children:
        if not isinstance(child, Value):
            raise TypeError(f"_children must be Values, not {type(child).__name__}")
        handles.append(child._h)
    if children or op:
        # Stateful children are held by this node's state (below), not apart.
        h = lib.pg_custom_node(data, handles, len(handles))
        if h < 0:
            h = settle(h, (), lib.pg_custom_node, data, handles, len(handles))
    else:
        h = _leaf(data)
        if h < 0:
            h = settle(h, (), _leaf, data)
    attributes = None
    if hasattr(value, "_h"):  # __init__ again: the Value moves to the new node.  Only
        # now is the old one let go: it may be one of the children (v.__init__(x, (v,)))
        attributes = {k: v for k, v in value.__dict__.items() if k not in _NODE_KEYS}
        _lifetime.release(value)
        value.__dict__ = attributes
    value._h = h
    if type(value) is Value:
        _keep(value)
    else:
        _lifetime.keep_unusual(value)
    # Under no_grad a custom op is a leaf: no children, and no state to keep its op
    custom = bool(children or op) and lib.pg_op(h) == lib.PG_OP_CUSTOM
    if type(value) is not Value or label or custom or attributes:
        _lifetime.make_stateful(value)
        if label:
            value.__dict__["label"] = label
        if custom:
            if op:
                value.__dict__["_op"] = op
            _hold_stateful_children(value, children)


def _hold_stateful_children(value, children):
    """A custom op's state holds its stateful children, as micrograd's _prev
    holds its children: their states (a closure, a label) live as long as it,
    and the collector sees what it refers to through them."""
    stateful = tuple(child for child in children if getattr(child, "_anchor", None) is not None)
    if stateful:
        value.__dict__["_stateful_children"] = stateful


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


def _number(x):
    """x as a float, for an op with a Value; None for what the op leaves to the
    other operand by returning NotImplemented: an array, which numpy then runs
    through its object loop (each element through our operators, as with
    micrograd's Values), or anything that is not a real number (Python then
    raises TypeError).  A numpy scalar, or a 0-d array, is a number."""
    kind = type(x)
    if kind is int or kind is bool:  # micrograd's demo: 1 + -y * score
        return float(x)
    if kind is float:
        return x
    if getattr(x, "ndim", 0):
        return None
    try:
        return _real(x)
    except TypeError:
        return None


def _negated_zero(zero):
    """micrograd's -zero for v - zero, as a float: an integer zero has no sign
    (micrograd's -0.0 - 0 is 0.0), a float zero has one (-0.0 - 0.0 is -0.0)."""
    try:
        return float(-zero)
    except TypeError:  # np.bool_(False), which numpy cannot negate: an integer zero
        return 0.0


def _reciprocal(other, k):
    """micrograd's other ** -1 for v / other, as a float (k is float(other)).
    In doubles, so a numpy scalar is a float first (README): v / np.int64(3)
    works and v / np.float32(3) is v * (1/3); for a Python int that is what
    Python computes anyway.  A fraction's is exact, as micrograd's is."""
    if isinstance(other, numbers.Rational) and not isinstance(other, numbers.Integral):
        return _real(other ** -1)
    return k ** -1


def _real_operand(k):
    """(k as float, flags) for a real-number exponent or base; None otherwise
    (then ** returns NotImplemented: for an array, numpy's object loop)."""
    if type(k) is bool:
        return float(k), lib.PG_FLAG_INT_EXPONENT | lib.PG_FLAG_BOOL_EXPONENT
    if type(k) is int or isinstance(k, numbers.Integral):
        return float(k), lib.PG_FLAG_INT_EXPONENT
    if isinstance(k, numbers.Real):
        return float(k), 0
    k = _number(k)  # np.bool_, Decimal: real numbers that numbers.Real does not list
    return None if k is None else (k, 0)


def _restore(cls, data, grad):
    value = cls.__new__(cls)
    Value.__init__(value, data)
    value.grad = grad
    return value


def _picklable_state(value):
    """A Value's attributes (its node's state, without the custom op's own
    entries) and a subclass's slots, in pickle's (dict, slots) form, or None."""
    attributes = {k: v for k, v in getattr(value, "__dict__", {}).items()
                  if k not in _NODE_KEYS}
    slots = {}
    for cls in type(value).__mro__:
        if cls is Value:
            break
        names = cls.__dict__.get("__slots__", ())
        for name in (names,) if isinstance(names, str) else names:
            if name not in ("__dict__", "__weakref__") and hasattr(value, name):
                slots[name] = getattr(value, name)
    if slots:
        return attributes, slots
    return attributes or None


# --- micrograd's op strings and backward steps -------------------------------------

# From the C op table (csrc/pygrad.h): tag -> micrograd's _op string.
_OP_NAMES = {tag: ffi.string(lib.pg_op_name(tag)).decode() for tag in range(lib.PG_OP_COUNT)}


def _op_of(h):
    """micrograd's op string for node h: '+', '*', '**2', 'ReLU', '' ..."""
    state = _lifetime.state_of(h)
    if state is not None and "_op" in state:
        return state["_op"]
    tag = check(lib.pg_op(h))
    if tag == lib.PG_OP_POW_CONST:
        exponent, flags = lib.pg_exponent(h), lib.pg_flags(h)
        if flags & lib.PG_FLAG_BOOL_EXPONENT:
            return f"**{bool(exponent)}"
        if flags & lib.PG_FLAG_INT_EXPONENT:
            return f"**{int(exponent)}"
        return f"**{exponent}"
    return _OP_NAMES[tag]


def _is_custom(h):
    return lib.pg_op(h) == lib.PG_OP_CUSTOM


def _custom_backward(h):
    state = _lifetime.state_of(h)
    fn = state.get("_backward") if state is not None else None
    if fn is None and _is_custom(h):
        return _no_backward
    return fn


def _no_backward():
    pass


class _BuiltinBackward:
    """A built-in op's local backward step, as micrograd's out._backward():
    callable, returns None.  Still the built-in step after the node's
    _backward is replaced (the user may be wrapping it).  It holds its Value,
    as micrograd's closure holds `out`: the node lives while it does."""

    __slots__ = ("_value",)

    def __init__(self, value):
        self._value = value

    def __call__(self):
        check(lib.pg_node_backward(self._value._h))


def _check_live(value):
    if not lib.pg_valid(value._h):
        raise error_for(lib.PG_ERR_HANDLE)


class _Tape:
    """A recorded topological order of the graph under a Value, owned by a gc
    object: freed when dropped, whatever interrupted its user."""

    __slots__ = ("id", "_ref")

    def __init__(self, root):
        self._ref = _lifetime.new_tape_ref()
        self.id = settle(lib.pg_tape_record_into(self._ref, root._h))  # root outlives it

    def __len__(self):
        return lib.pg_tape_length(self.id)

    def node(self, i):
        return lib.pg_tape_node(self.id, i)

    def free(self):
        ffi.release(self._ref)


def _backward_through_custom_ops(root):
    """backward() for a graph with custom ops: C runs the built-in steps and
    hands back each custom op in turn, whose Python backward runs here."""
    tape = _Tape(root)
    try:
        end = check(lib.pg_tape_backward(tape.id, len(tape)))
        while end:
            custom = _custom_backward(tape.node(end - 1))
            if custom is not None:
                custom()
            end = check(lib.pg_tape_backward(tape.id, end - 1))
    finally:
        tape.free()


# --- grad mode -------------------------------------------------------------------------

class no_grad(contextlib.ContextDecorator):
    """Ops compute values without recording a graph (each result is a leaf), in
    this thread, as torch.no_grad(): for inference, e.g. scoring a grid.  A
    context manager or a decorator; nests, and is safe across threads.

    Recording is off while the thread holds an active C token.  Nothing an
    interrupt (a signal handler's exception) can skip is between turning it
    off and on: __enter__ and __exit__ are looked up (these properties, which
    make the token) before the with statement calls them, and what it calls
    is C: a partial of pg_grad_off_start, and the token's own __exit__, which
    frees it (pg_grad_off_release).  No Python frame runs in between."""

    def __init__(self):
        self._threads = threading.local()  # the token between the two lookups

    @property
    def __enter__(self):
        token = ffi.gc(lib.pg_grad_off_new(), lib.pg_grad_off_release)
        if token == ffi.NULL:
            raise MemoryError("no memory for a no_grad token")
        self._threads.token = token
        return functools.partial(lib.pg_grad_off_start, token)

    @property
    def __exit__(self):
        token = self._threads.__dict__.pop("token", None)
        return token.__exit__ if token is not None else _exit_without_enter

    def _recreate_cm(self):  # each decorated call gets its own tokens
        return type(self)()


def _exit_without_enter(*exc):
    raise RuntimeError("no_grad.__exit__ without a matching __enter__")
