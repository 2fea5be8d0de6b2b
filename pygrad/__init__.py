"""pygrad: micrograd's scalar autograd engine with its hot loop in C.

    from pygrad import Value        # instead of: from micrograd.engine import Value
    from pygrad.nn import MLP       # instead of: from micrograd.nn import MLP
"""
from . import nn, optim
from ._core import NodeLimitError, PygradError, StaleValueError, set_node_limit
from ._version import __version__ as __version__
from .engine import Value, live_nodes, no_grad
from .replay import Replay, ReplayMismatchError
from .viz import draw_dot, to_dot

__all__ = ["Value", "no_grad", "live_nodes", "nn", "optim", "Replay", "ReplayMismatchError",
           "draw_dot", "to_dot", "set_node_limit", "PygradError", "StaleValueError",
           "NodeLimitError"]
