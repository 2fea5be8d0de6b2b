"""pygrad: micrograd's scalar autograd engine with its hot loop in C.

    from pygrad import Value        # instead of: from micrograd.engine import Value
"""
from ._core import NodeLimitError, PygradError, StaleValueError
from .engine import Value, live_nodes

__all__ = ["Value", "live_nodes", "PygradError", "StaleValueError", "NodeLimitError"]
__version__ = "0.1.0"
