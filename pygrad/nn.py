"""micrograd's nn, with each forward one call into C.

Same classes, constructor arguments, reprs and random.uniform calls as
micrograd.nn, so a model built after random.seed(s) starts from the same
weights.  A neuron is one DOT node (b + w[0]*x[0] + ..., summed in micrograd's
order, so the values are the same bits) and a ReLU node over it; a Layer makes
all its neurons in one call, and an MLP its whole forward pass in one call.
"""
import random
from operator import attrgetter

from ._core import check, ffi, lib
from ._lifetime import plain, settle
from .engine import Value, _real

__all__ = ["Module", "Neuron", "Layer", "MLP"]

_handle = attrgetter("_h")

# Bumped by every change to a model's structure (one of its lists of
# parameters, neurons or layers mutated, or any attribute assigned), so that an
# MLP's cached parameter handles are rebuilt, never stale.
_structure_version = [0]


class _TrackedList(list):
    """A list that bumps _structure_version whenever it is mutated.  The nn
    classes build their lists as these; a list a user assigns is kept as it is
    (the same object, as in micrograd), and a model holding one is run without
    the cache."""

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


class Neuron(Module):

    def __init__(self, nin, nonlin=True):
        self.w = _TrackedList(Value(random.uniform(-1, 1)) for _ in range(nin))
        self.b = Value(0)
        self.nonlin = nonlin

    def __call__(self, x):
        return _neurons_forward([self], x)[0]

    def parameters(self):
        return self.w + [self.b]

    def named_parameters(self):
        return [(f"w.{i}", w) for i, w in enumerate(self.w)] + [("b", self.b)]

    def __repr__(self):
        return f"{'ReLU' if self.nonlin else 'Linear'}Neuron({len(self.w)})"


class Layer(Module):

    def __init__(self, nin, nout, **kwargs):
        self.neurons = _TrackedList(Neuron(nin, **kwargs) for _ in range(nout))

    def __call__(self, x):
        out = _neurons_forward(self.neurons, x)
        return out[0] if len(out) == 1 else out

    def parameters(self):
        return [p for n in self.neurons for p in n.parameters()]

    def named_parameters(self):
        return [(f"neurons.{j}.{name}", p) for j, n in enumerate(self.neurons)
                for name, p in n.named_parameters()]

    def __repr__(self):
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):

    def __init__(self, nin, nouts):
        sz = [nin] + nouts
        self.layers = _TrackedList(Layer(sz[i], sz[i+1], nonlin=i!=len(nouts)-1)
                                   for i in range(len(nouts)))

    def __call__(self, x):
        plan = self._forward_plan()
        if plan is None:  # a hand-edited shape: layer by layer
            for layer in self.layers:
                x = layer(x)
            return x
        x = [_as_value(xi) for xi in x]
        if len(x) != plan.nin:
            raise ValueError(f"{self!r} takes {plan.nin} inputs, got {len(x)}")
        out = ffi.new("int64_t[]", plan.nout)
        _call(lib.pg_mlp, (plan._values, x), plan.params, plan.n_params, plan.sizes, plan.relu,
              plan.n_layers, list(map(_handle, x)), out)
        out = [plain(Value, h) for h in out]
        return out[0] if len(out) == 1 else out

    def _forward_plan(self):
        """The parameter handles and shape pg_mlp needs, cached until the
        structure changes; None if the layers do not chain as an MLP's do."""
        plan = self.__dict__.get("_plan")
        if plan is None or plan.version != _structure_version[0]:
            plan = _MLPPlan.of(self)
            object.__setattr__(self, "_plan", plan)
        return plan if plan.sizes else None

    def __getstate__(self):  # the plan holds C buffers: rebuilt after loading
        return {k: v for k, v in self.__dict__.items() if k != "_plan"}

    def __setstate__(self, state):
        """Never a plan from a pickle: pg_mlp trusts a plan's sizes to match
        its handles and buffers, and only _MLPPlan.of(self) can vouch for
        that.  State is pickle's: a dict, or (dict, slots) set by setattr."""
        attributes, slots = state if isinstance(state, tuple) else (state, None)
        if attributes:
            self.__dict__.update({k: v for k, v in attributes.items() if k != "_plan"})
        for name, value in (slots or {}).items():
            if name != "_plan":
                setattr(self, name, value)

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def named_parameters(self):
        return [(f"layers.{i}.{name}", p) for i, layer in enumerate(self.layers)
                for name, p in layer.named_parameters()]

    def to_torch(self):
        """An equivalent torch.nn.Sequential (Linear/ReLU, float64, same weights).
        ValueError if the layers were edited into a shape Linear/ReLU can't hold."""
        import torch

        if _MLPPlan.of(self, require_tracked=False).sizes is None:
            raise ValueError(f"{self!r} is not a chain of Linear/ReLU layers (were its "
                             "layers edited by hand?), so it has no torch equivalent")
        modules = []
        for layer in self.layers:
            nin, nout = len(layer.neurons[0].w), len(layer.neurons)
            linear = torch.nn.Linear(nin, nout, dtype=torch.float64)
            with torch.no_grad():
                linear.weight.copy_(torch.tensor([[w.data for w in n.w] for n in layer.neurons],
                                                 dtype=torch.float64))
                linear.bias.copy_(torch.tensor([n.b.data for n in layer.neurons],
                                               dtype=torch.float64))
            modules.append(linear)
            if layer.neurons[0].nonlin:
                modules.append(torch.nn.ReLU())
        return torch.nn.Sequential(*modules)

    def __repr__(self):
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"


class _MLPPlan:
    __slots__ = ("version", "params", "n_params", "sizes", "relu", "n_layers", "nin", "nout",
                 "_values")

    @classmethod
    def of(cls, mlp, require_tracked=True):
        """The plan for `mlp`; plan.sizes is None when its layers don't chain
        as Linear/ReLU layers, or (require_tracked) when a list in it is one a
        user assigned, whose edits no cache would see."""
        plan = cls()
        plan.version = _structure_version[0]
        plan.sizes = None
        sizes, relu, values = [], [], []
        if require_tracked and not _all_tracked(mlp):
            return plan
        for layer in mlp.layers:
            neurons = layer.neurons
            if not neurons or any(bool(n.nonlin) != bool(neurons[0].nonlin) for n in neurons):
                return plan
            nin = len(neurons[0].w)
            if any(len(n.w) != nin for n in neurons) or (sizes and sizes[-1] != nin):
                return plan
            if not sizes:
                sizes.append(nin)
            sizes.append(len(neurons))
            relu.append(bool(neurons[0].nonlin))
            values += [w for n in neurons for w in n.w] + [n.b for n in neurons]
        if not relu:
            return plan
        plan._values = values  # keeps the handles below alive
        plan.params = ffi.new("int64_t[]", list(map(_handle, values)))
        plan.n_params = len(values)
        plan.sizes = ffi.new("int64_t[]", sizes)
        plan.relu = ffi.new("int32_t[]", relu)
        plan.n_layers, plan.nin, plan.nout = len(relu), sizes[0], sizes[-1]
        return plan


def _all_tracked(mlp):
    lists = [mlp.layers] + [layer.neurons for layer in mlp.layers]
    lists += [n.w for layer in mlp.layers for n in layer.neurons]
    return all(type(x) is _TrackedList for x in lists)


def _as_value(x):
    if isinstance(x, Value):
        return x
    try:
        return Value(x)
    except TypeError:
        raise TypeError(f"a layer's inputs are Values or real numbers, not "
                        f"{type(x).__name__}") from None


def _neurons_forward(neurons, x):
    """Every neuron applied to x in one C call, as a list of Values."""
    x = [_as_value(xi) for xi in x]  # keeps inputs made from numbers alive
    nin, nout = len(x), len(neurons)
    relu = bool(neurons[0].nonlin) if neurons else False
    for n in neurons:
        if len(n.w) != nin:
            raise ValueError(f"{n!r} takes {len(n.w)} inputs, got {nin}")
        if bool(n.nonlin) != relu:  # a hand-mixed layer: one call per neuron
            return [_neurons_forward([n], x)[0] for n in neurons]
    handles = ffi.new("int64_t[]", nout)
    weights, biases = [w for n in neurons for w in n.w], [n.b for n in neurons]
    _call(lib.pg_layer, (weights, biases, x), list(map(_handle, weights)),
          list(map(_handle, biases)), list(map(_handle, x)), nin, nout, relu, handles)
    return [plain(Value, h) for h in handles]


def _call(fn, operands, *args):
    """fn(*args), a C call that writes new handles into its last argument
    (operands: lists of the Values it uses, joined only if settle needs them)."""
    status = fn(*args)
    if status < 0:
        settle(status, [v for values in operands for v in values], fn, *args)
