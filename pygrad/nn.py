"""micrograd's nn, with each forward one call into C.

Same classes, constructor arguments, reprs and random.uniform calls as
micrograd.nn, so a model built after random.seed(s) starts from the same
weights.  A neuron is one DOT node (b + w[0]*x[0] + ..., summed in micrograd's
order, so the values are the same bits) and an activation node over it; a
Layer makes all its neurons in one call, and an MLP its whole forward pass in
one call.

Those fused calls stand in for micrograd's Python (MLP.__call__ calling each
layer, Layer.__call__ each neuron, Neuron.__call__ its Value ops), so they run
only while everything involved is pygrad's own: the classes themselves, their
__call__, the Value methods a neuron uses, and lists, layers, neurons and
parameters of exactly pygrad's types.  Anything subclassed, monkeypatched or
replaced runs micrograd's Python instead, and gets micrograd's numbers.

Beyond micrograd, an activation other than ReLU: Neuron(nin, act='tanh'),
Layer(nin, nout, act='sigmoid'), MLP(nin, nouts, act='tanh').  `nonlin` keeps
micrograd's meaning (is there an activation at all); `act` says which.
"""
import random
from itertools import chain
from operator import attrgetter

from ._core import check, ffi, lib
from ._lifetime import plain, settle
from .engine import Value, _real

__all__ = ["Module", "Neuron", "Layer", "MLP"]

_handle = attrgetter("_h")

# act= : (repr's name, the Value method micrograd's Python would call, C's code)
_ACTIVATIONS = {
    "relu": ("ReLU", "relu", lib.PG_ACT_RELU),
    "tanh": ("Tanh", "tanh", lib.PG_ACT_TANH),
    "sigmoid": ("Sigmoid", "sigmoid", lib.PG_ACT_SIGMOID),
    "linear": ("Linear", None, lib.PG_ACT_LINEAR),
}

# Bumped by every change to a model's structure (one of its lists of
# parameters, neurons or layers mutated, or any attribute assigned), so that a
# module's cached plan is rebuilt, never stale.
_structure_version = [0]


class _TrackedList(list):
    """A list that bumps _structure_version whenever it is mutated.  The nn
    classes build their lists as these; a list a user assigns is kept as it is
    (the same object, as in micrograd), and a model holding one is run by
    micrograd's Python, since no cache would see its edits."""

    def _tracked(name):
        method = getattr(list, name)

        def mutate(self, *args, **kwargs):
            _structure_version[0] += 1
            return method(self, *args, **kwargs)
        mutate.__name__ = name
        return mutate

    for _name in ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend",
                  "insert", "pop", "remove", "clear", "sort", "reverse"):
        locals()[_name] = _tracked(_name)
    del _name, _tracked

    def __reduce_ex__(self, protocol):  # its items pickle as a list's do; it comes back tracked
        return _TrackedList, (list(self),)


class Module:

    def __setattr__(self, name, value):
        _structure_version[0] += 1
        object.__setattr__(self, name, value)

    def zero_grad(self):
        params = self.parameters()
        check(lib.pg_zero_grad(list(map(_handle, params)), len(params)))

    def parameters(self):
        return []

    def named_parameters(self):
        """(name, Value) pairs.  The nn classes name them by path
        ('layers.0.neurons.3.w.1'); any other Module by position in parameters()."""
        return [(str(i), p) for i, p in enumerate(self.parameters())]

    def state_dict(self):
        """Every parameter's value, as a plain float, by name."""
        return {name: p.data for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Set every parameter from a state_dict(); the names must match exactly."""
        params = dict(self.named_parameters())
        unknown = sorted(set(state) - set(params))
        missing = sorted(set(params) - set(state))
        if unknown or missing:
            raise KeyError(f"state_dict does not match {type(self).__name__}: "
                           f"unknown keys {unknown[:5]}, missing keys {missing[:5]}")
        values = {name: _real(value) for name, value in state.items()}
        for name, p in params.items():
            p.data = values[name]

    # pickle and copy: never a cached plan (_plan, below), which holds C buffers
    # and which only _cached can vouch for
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_plan"}

    def __setstate__(self, state):
        """state is pickle's: a dict, or (dict, slots) set by setattr."""
        attributes, slots = state if isinstance(state, tuple) else (state, None)
        if attributes:
            self.__dict__.update({k: v for k, v in attributes.items() if k != "_plan"})
        for name, value in (slots or {}).items():
            if name != "_plan":
                setattr(self, name, value)


class Neuron(Module):
    act = "relu"  # for a Neuron whose __init__ never ran (a subclass's own __init__)

    def __init__(self, nin, nonlin=True, act="relu"):
        _check_activation(act)
        self.w = _TrackedList(Value(random.uniform(-1, 1)) for _ in range(nin))
        self.b = Value(0)
        self.nonlin = nonlin
        self.act = act

    def __call__(self, x):
        x = x if type(x) is list else list(x)
        if type(self) is Neuron and _methods_are_pygrads():
            plan = _cached(self, _neuron_plan)
            out = _fused_layer(self, plan, x) if plan is not None else None
            if out is not None:
                return out[0]
        # micrograd's Neuron.__call__, with pygrad's count of the inputs
        if len(x) != len(self.w):
            raise ValueError(f"{self!r} takes {len(self.w)} inputs, got {len(x)}")
        act = sum((wi*xi for wi, xi in zip(self.w, x)), self.b)
        method = _ACTIVATIONS[_activation(self)][1]
        return getattr(act, method)() if method else act

    def parameters(self):
        return self.w + [self.b]

    def named_parameters(self):
        return [(f"w.{i}", w) for i, w in enumerate(self.w)] + [("b", self.b)]

    def __repr__(self):
        act = _applied(self)
        return f"{_ACTIVATIONS.get(act, (act,))[0]}Neuron({len(self.w)})"


class Layer(Module):

    def __init__(self, nin, nout, **kwargs):
        self.neurons = _TrackedList(Neuron(nin, **kwargs) for _ in range(nout))

    def __call__(self, x):
        x = x if type(x) is list else list(x)
        out = None
        if type(self) is Layer and _methods_are_pygrads():
            plan = _cached(self, _layer_plan)
            out = _fused_layer(self, plan, x) if plan is not None else None
        if out is None:  # micrograd's Layer.__call__
            out = [n(x) for n in self.neurons]
        return out[0] if len(out) == 1 else out

    def parameters(self):
        return [p for n in self.neurons for p in n.parameters()]

    def named_parameters(self):
        return [(f"neurons.{j}.{name}", p) for j, n in enumerate(self.neurons)
                for name, p in n.named_parameters()]

    def __repr__(self):
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):

    def __init__(self, nin, nouts, act="relu"):
        _check_activation(act)
        sz = [nin] + nouts
        self.layers = _TrackedList(Layer(sz[i], sz[i+1], nonlin=i!=len(nouts)-1, act=act)
                                   for i in range(len(nouts)))

    def __call__(self, x):
        x = x if type(x) is list else list(x)
        if type(self) is MLP and _methods_are_pygrads():
            plan = _cached(self, _mlp_plan)
            out = _fused_mlp(self, plan, x) if plan is not None else None
            if out is not None:
                return out[0] if len(out) == 1 else out
        for layer in self.layers:  # micrograd's MLP.__call__
            x = layer(x)
        return x

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def named_parameters(self):
        return [(f"layers.{i}.{name}", p) for i, layer in enumerate(self.layers)
                for name, p in layer.named_parameters()]

    def to_torch(self):
        """An equivalent torch.nn.Sequential (Linear and ReLU/Tanh/Sigmoid,
        float64, same weights).  ValueError if the model is not a chain of such
        layers (layers edited by hand, or subclasses of Layer or Neuron)."""
        import torch

        plan = _mlp_plan(self, require_tracked=False)
        if plan is None:
            raise ValueError(f"{self!r} is not a chain of Linear and activation layers "
                             "(were its layers edited by hand, or subclassed?), so it has "
                             "no torch equivalent")
        modules = []
        for layer, act in zip(self.layers, plan.acts):
            nin, nout = len(layer.neurons[0].w), len(layer.neurons)
            linear = torch.nn.Linear(nin, nout, dtype=torch.float64)
            with torch.no_grad():
                linear.weight.copy_(torch.tensor([[w.data for w in n.w] for n in layer.neurons],
                                                 dtype=torch.float64))
                linear.bias.copy_(torch.tensor([n.b.data for n in layer.neurons],
                                               dtype=torch.float64))
            modules.append(linear)
            torch_act = {lib.PG_ACT_RELU: torch.nn.ReLU, lib.PG_ACT_TANH: torch.nn.Tanh,
                         lib.PG_ACT_SIGMOID: torch.nn.Sigmoid}.get(act)
            if torch_act is not None:
                modules.append(torch_act())
        return torch.nn.Sequential(*modules)

    def __repr__(self):
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"


# --- activations -------------------------------------------------------------------

def _check_activation(act):
    if not isinstance(act, str) or act not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}: act is one of "
                         f"{', '.join(map(repr, _ACTIVATIONS))}")


def _applied(neuron):
    """The activation a neuron applies: its act, if nonlin says it has one."""
    return neuron.act if neuron.nonlin else "linear"


def _activation(neuron):
    """_applied(neuron), checked."""
    act = _applied(neuron)
    _check_activation(act)
    return act


# --- when the fused kernels may run ------------------------------------------------

# What a fused call stands in for: micrograd's Layer.__call__ calls each
# neuron, whose __call__ computes w*x with Value.__mul__, sums with
# Value.__add__ and applies a Value method.  Any of them can be monkeypatched
# at any time, so they are compared on every call (a few tens of ns).
_NEURON_CALL, _LAYER_CALL = Neuron.__call__, Layer.__call__
_MUL, _ADD = Value.__mul__, Value.__add__
_RELU, _TANH, _SIGMOID = Value.relu, Value.tanh, Value.sigmoid


def _methods_are_pygrads():
    return (Neuron.__call__ is _NEURON_CALL and Layer.__call__ is _LAYER_CALL
            and Value.__mul__ is _MUL and Value.__add__ is _ADD and Value.relu is _RELU
            and Value.tanh is _TANH and Value.sigmoid is _SIGMOID)


def _cached(module, build):
    """build(module), kept in the module until a model's structure changes.
    Its result says what a fused call needs, or None: micrograd's Python."""
    cache = module.__dict__.get("_plan")
    if cache is None or cache[0] != _structure_version[0]:
        cache = (_structure_version[0], build(module))
        object.__setattr__(module, "_plan", cache)  # not a structure change
    return cache[1]


def _fusable_neurons(neurons, require_tracked=True):
    """The activation code of a list of neurons that pg_layer can run exactly
    as micrograd's Python would (pygrad Neurons of one activation and input
    count, weights and biases pygrad Values); None if it cannot.  Lists a user
    assigned (not _TrackedLists) only when not require_tracked: no cache sees
    their edits."""
    if not neurons or (require_tracked and type(neurons) is not _TrackedList):
        return None
    first = neurons[0]
    if type(first) is not Neuron:
        return None
    act, nin = _applied(first), len(first.w)
    if not isinstance(act, str) or act not in _ACTIVATIONS:
        return None
    for n in neurons:
        if (type(n) is not Neuron or _applied(n) != act
                or (require_tracked and type(n.w) is not _TrackedList) or len(n.w) != nin
                or type(n.b) is not Value or any(type(w) is not Value for w in n.w)):
            return None
    return _ACTIVATIONS[act][2]


class _LayerPlan:
    """What pg_layer needs for a Layer's (or one Neuron's) forward."""
    __slots__ = ("weights", "biases", "nin", "act")


def _layer_plan(layer, neurons=None):
    neurons = layer.neurons if neurons is None else neurons
    act = _fusable_neurons(neurons)
    if act is None:
        return None
    plan = _LayerPlan()
    plan.weights = [w for n in neurons for w in n.w]
    plan.biases = [n.b for n in neurons]
    plan.nin, plan.act = len(neurons[0].w), act
    return plan


def _neuron_plan(neuron):
    return _layer_plan(neuron, _TrackedList([neuron]))


class _MLPPlan:
    """What pg_mlp needs: the parameters' handles and the shape of the layers."""
    __slots__ = ("params", "n_params", "sizes", "act", "acts", "n_layers", "nin", "nout",
                 "_values")


def _mlp_plan(mlp, require_tracked=True):
    """The plan for `mlp`, or None when pg_mlp cannot run it exactly as
    micrograd's Python would: a layer that is not a pygrad Layer of fusable
    neurons, layers that do not chain, or (require_tracked) a list a user
    assigned, whose edits no cache would see."""
    layers = mlp.layers
    if not layers or (require_tracked and type(layers) is not _TrackedList):
        return None
    sizes, acts, values = [], [], []
    for layer in layers:
        if type(layer) is not Layer:
            return None
        neurons = layer.neurons
        act = _fusable_neurons(neurons, require_tracked)
        if act is None or (sizes and sizes[-1] != len(neurons[0].w)):
            return None
        if not sizes:
            sizes.append(len(neurons[0].w))
        sizes.append(len(neurons))
        acts.append(act)
        values += [w for n in neurons for w in n.w] + [n.b for n in neurons]
    plan = _MLPPlan()
    plan._values = values  # keeps the handles below alive
    plan.params = ffi.new("int64_t[]", list(map(_handle, values)))
    plan.n_params = len(values)
    plan.sizes = ffi.new("int64_t[]", sizes)
    plan.acts = acts
    plan.act = ffi.new("int32_t[]", acts)
    plan.n_layers, plan.nin, plan.nout = len(acts), sizes[0], sizes[-1]
    return plan


# --- the fused calls ---------------------------------------------------------------

class _SubclassInput(Exception):
    """An input is of a Value subclass: only micrograd's Python calls its operators."""


def _as_value(x):
    if isinstance(x, Value):
        raise _SubclassInput  # an exact Value never gets here
    try:
        return Value(x)
    except TypeError:
        raise TypeError(f"a layer's inputs are Values or real numbers, not "
                        f"{type(x).__name__}") from None


def _fused_layer(module, plan, x):
    """The Layer (or Neuron) `module` applied to x in one C call, as a list of
    Values; None if micrograd's Python must run it instead."""
    try:  # numbers become leaves, as micrograd's wi * xi wraps them
        x = [xi if type(xi) is Value else _as_value(xi) for xi in x]
    except _SubclassInput:
        return None
    if len(x) != plan.nin:
        raise ValueError(f"{module!r} takes {plan.nin} inputs, got {len(x)}")
    weights, biases = plan.weights, plan.biases
    out = ffi.new("int64_t[]", len(biases))
    _call(lib.pg_layer, (weights, biases, x), list(map(_handle, weights)),
          list(map(_handle, biases)), list(map(_handle, x)), plan.nin, len(biases), plan.act,
          out)
    return [plain(Value, h) for h in out]


def _fused_mlp(mlp, plan, x):
    """The whole MLP applied to x in one C call, as a list of Values; None if
    micrograd's Python must run it instead."""
    try:
        x = [xi if type(xi) is Value else _as_value(xi) for xi in x]
    except _SubclassInput:
        return None
    if len(x) != plan.nin:
        raise ValueError(f"{mlp!r} takes {plan.nin} inputs, got {len(x)}")
    out = ffi.new("int64_t[]", plan.nout)
    _call(lib.pg_mlp, (plan._values, x), plan.params, plan.n_params, plan.sizes, plan.act,
          plan.n_layers, list(map(_handle, x)), out)
    return [plain(Value, h) for h in out]


def _call(fn, operands, *args):
    """fn(*args), a C call that writes new handles into its last argument.
    operands: lists of the Values it uses (and keeps alive: x holds the
    leaves made from numbers), read only when the call needs settling."""
    status = fn(*args)
    if status < 0:
        settle(status, chain.from_iterable(operands), fn, *args)
