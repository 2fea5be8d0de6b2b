# Type stubs for pygrad.optim: SGD and Adam, one C call per step() and zero_grad().
from collections.abc import Iterable
from typing import Any

from .engine import Value

__all__ = ["SGD", "Adam"]

class Optimizer:  # their base class (not in __all__)
    params: list[Value]
    def __init__(self, params: Iterable[Value]) -> None: ...
    def zero_grad(self) -> None: ...
    def __getstate__(self) -> dict[str, Any]: ...
    def __setstate__(self, state: dict[str, Any]) -> None: ...

class SGD(Optimizer):
    lr: float
    momentum: float
    weight_decay: float
    def __init__(self, params: Iterable[Value], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None: ...
    def step(self) -> None: ...

class Adam(Optimizer):
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    t: int  # steps taken
    def __init__(self, params: Iterable[Value], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None: ...
    def step(self) -> None: ...
