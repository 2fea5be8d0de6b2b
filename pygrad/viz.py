"""Pictures of graphs, as in micrograd's trace_graph notebook.

    draw_dot(loss)            # a graphviz.Digraph (pip install graphviz)
    to_dot(loss)              # the same graph as DOT source, no dependencies

Each Value is a record box "{ label | data | grad }" (the label when it has
one, as the Zero-to-Hero lecture draws them), and each op a small node feeding
it, as micrograd draws them.  The graph is read from the C arena in one
walk, so drawing never builds Python objects per node.  Big graphs are cut to
the `max_nodes` nearest the root, with a note saying how many were left out.
"""
from ._core import lib
from ._lifetime import register_young, settle, state_of
from .engine import Value, _op_of, _Tape

__all__ = ["draw_dot", "to_dot", "trace"]

MAX_NODES = 500


def trace(root, max_nodes=MAX_NODES):
    """(nodes, edges, omitted) for the graph under `root`: nodes are
    (handle, data, grad, op, label) in topological order, root last; edges
    are (child handle, parent handle); omitted counts nodes left out."""
    if not isinstance(root, Value):
        raise TypeError(f"trace() takes a Value, not {type(root).__name__}")
    if max_nodes < 1:
        raise ValueError("max_nodes must be at least 1")
    register_young()  # Values given attributes since the last sweep: their labels
    tape = _Tape(root)
    try:
        length = len(tape)
        first = max(0, length - max_nodes)
        handles = [tape.node(i) for i in range(first, length)]
        drawn = set(handles)
        nodes, edges = [], []
        for h in handles:
            nodes.append((h, lib.pg_data(h), lib.pg_grad(h), _op_of(h), _label_of(h)))
            for i in range(lib.pg_child_count(h)):
                child = settle(lib.pg_child_retain(h, i))
                lib.pg_release(child)  # the tape still holds it
                if child in drawn:
                    edges.append((child, h))
        return nodes, list(dict.fromkeys(edges)), first
    finally:
        tape.free()


def _label_of(h):
    state = state_of(h)
    return str(state.get("label", "")) if state is not None else ""


def _statements(root, rankdir, max_nodes):
    """The picture as ('node', name, attrs) and ('edge', tail, head) items,
    micrograd's layout: a record per Value, an op node feeding it."""
    nodes, edges, omitted = trace(root, max_nodes)
    has_op = {h: bool(op) for h, _, _, op, _ in nodes}
    items = []
    for h, data, grad, op, label in nodes:
        record = f"{{ data {data:.4f} | grad {grad:.4f} }}"
        if label:
            record = f"{{ {_escape_record(label)} | data {data:.4f} | grad {grad:.4f} }}"
        items.append(("node", f"n{h}", {"label": record, "shape": "record"}))
        if op:
            items.append(("node", f"n{h}op", {"label": str(op)}))
            items.append(("edge", f"n{h}op", f"n{h}"))
    for child, parent in edges:
        items.append(("edge", f"n{child}", f"n{parent}op" if has_op[parent] else f"n{parent}"))
    if omitted:
        note = f"{omitted} more nodes not drawn (max_nodes={max_nodes})"
        items.append(("node", "omitted", {"label": note, "shape": "note"}))
    return items


def _escape_record(text):
    """A label as text inside a graphviz record field."""
    for special in "\\{}|<>":
        text = text.replace(special, "\\" + special)
    return text


def _quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(root, rankdir="LR", max_nodes=MAX_NODES):
    """The graph under `root` as graphviz DOT source (a str); needs nothing."""
    lines = ["digraph {", f"\trankdir={_quote(rankdir)}"]
    for kind, a, b in _statements(root, rankdir, max_nodes):
        if kind == "node":
            attrs = " ".join(f"{key}={_quote(value)}" for key, value in b.items())
            lines.append(f"\t{a} [{attrs}]")
        else:
            lines.append(f"\t{a} -> {b}")
    return "\n".join(lines + ["}"]) + "\n"


def draw_dot(root, format="svg", rankdir="LR", max_nodes=MAX_NODES):
    """A graphviz.Digraph of the graph under `root`, as micrograd's notebook
    draws it: render it with .render() or .pipe(), or show it in Jupyter."""
    try:
        from graphviz import Digraph
    except ImportError:
        raise ImportError("draw_dot needs the graphviz package: pip install graphviz "
                          "(or pip install 'pygrad[viz]'); to_dot() needs nothing") from None
    dot = Digraph(format=format, graph_attr={"rankdir": rankdir})
    for kind, a, b in _statements(root, rankdir, max_nodes):
        if kind == "node":
            dot.node(name=a, **b)
        else:
            dot.edge(a, b)
    return dot
