"""pygrad: micrograd's scalar autograd engine with its hot loop in C.

    from pygrad import Value        # instead of: from micrograd.engine import Value
"""
from ._core import NodeLimitError, PygradError, StaleValueError
from .engine import Value

__all__ = ["Value", "PygradError", "StaleValueError", "NodeLimitError"]
__version__ = "0.1.0"
