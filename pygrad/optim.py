"""Optimizers whose step() and zero_grad() are one C call over all parameters.

    opt = SGD(model.parameters(), lr=0.1)
    ...; loss.backward(); opt.step(); opt.zero_grad()

The learning rate (and every hyperparameter) is read at each step, so a
schedule is `opt.lr = ...` between steps.  Formulas are PyTorch's.
"""
from ._core import check, ffi, lib
from .engine import Value

__all__ = ["SGD", "Adam"]


class Optimizer:
    """Holds the parameters (keeping them alive) and their handles for C.

    The parameters are those given at construction: C reads their handles and
    the per-parameter state from buffers sized then, so editing self.params
    later changes nothing that step() and zero_grad() update."""

    def __init__(self, params):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        for p in self.params:
            if not isinstance(p, Value):
                raise TypeError(f"{type(self).__name__} optimizes Values, not {type(p).__name__}")
        self._hold(self.params)

    def _hold(self, params):
        self._held = tuple(params)  # the Values behind _handles, whatever self.params becomes
        self._handles = ffi.new("int64_t[]", [p._h for p in self._held])

    def zero_grad(self):
        check(lib.pg_zero_grad(self._handles, len(self._held)))

    _buffers = ()  # names of this optimizer's per-parameter state arrays

    def _buffer(self):
        return ffi.new("double[]", len(self._held))

    def __getstate__(self):  # C buffers are pickled as lists
        state = {k: v for k, v in self.__dict__.items() if k != "_handles"}
        for name in self._buffers:
            state[name] = list(state[name])
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._hold(state.get("_held", self.params))
        for name in self._buffers:
            if len(state[name]) != len(self._held):
                raise ValueError(f"pickled {type(self).__name__} state does not match its "
                                 f"{len(self._held)} parameters")
            setattr(self, name, ffi.new("double[]", state[name]))


class SGD(Optimizer):
    """p -= lr * (grad + weight_decay * p), with optional momentum."""

    _buffers = ("_velocity",)

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self._velocity = self._buffer()

    def step(self):
        check(lib.pg_sgd_step(self._handles, self._velocity, len(self._held),
                              self.lr, self.momentum, self.weight_decay))


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's bias correction and eps placement."""

    _buffers = ("_m", "_v")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params)
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self.t = 0
        self._m, self._v = self._buffer(), self._buffer()

    def step(self):
        self.t += 1
        beta1, beta2 = self.betas
        check(lib.pg_adam_step(self._handles, self._m, self._v, len(self._held), self.t,
                               self.lr, beta1, beta2, self.eps, self.weight_decay))
