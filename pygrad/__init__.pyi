# Type stubs for pygrad: the names `from pygrad import ...` gives.
from . import nn as nn, optim as optim
from ._core import (
    NodeLimitError as NodeLimitError,
    PygradError as PygradError,
    StaleValueError as StaleValueError,
    set_node_limit as set_node_limit,
)
from .engine import Value as Value, live_nodes as live_nodes, no_grad as no_grad
from .replay import Replay as Replay, ReplayMismatchError as ReplayMismatchError
from .viz import draw_dot as draw_dot, to_dot as to_dot

__version__: str

__all__ = ["Value", "no_grad", "live_nodes", "nn", "optim", "Replay", "ReplayMismatchError",
           "draw_dot", "to_dot", "set_node_limit", "PygradError", "StaleValueError",
           "NodeLimitError"]
