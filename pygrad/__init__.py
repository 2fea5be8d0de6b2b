"""pygrad: micrograd's scalar autograd engine with its hot loop in C.

    from pygrad import Value        # instead of: from micrograd.engine import Value
"""
from ._core import NodeLimitError, PygradError, StaleValueError
from . import nn, optim
from .engine import Value, live_nodes, no_grad
from .replay import Replay, ReplayMismatchError

__all__ = ["Value", "no_grad", "live_nodes", "nn", "optim", "Replay", "ReplayMismatchError",
           "PygradError", "StaleValueError", "NodeLimitError"]
__version__ = "0.1.0"
