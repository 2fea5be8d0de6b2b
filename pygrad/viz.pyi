# Type stubs for pygrad.viz: pictures of graphs, as micrograd's trace_graph notebook.
from typing import Any, Final

from .engine import Value

__all__ = ["draw_dot", "to_dot", "trace"]

MAX_NODES: Final[int]

# A drawn node: (handle, data, grad, op, label).
_Node = tuple[int, float, float, str, str]

def trace(root: Value, max_nodes: int = 500
          ) -> tuple[list[_Node], list[tuple[int, int]], int]: ...
def to_dot(root: Value, rankdir: str = "LR", max_nodes: int = 500) -> str: ...
# A graphviz.Digraph (the graphviz package is optional, so not named here).
def draw_dot(root: Value, format: str = "svg", rankdir: str = "LR",
             max_nodes: int = 500) -> Any: ...
