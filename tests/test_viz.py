"""Graph pictures: to_dot's structure, draw_dot rendered by the real `dot`."""
import re
import shutil

import pytest

import pygrad
from pygrad import Value

from support import trace


def neuron():
    x1, x2 = Value(2.0), Value(0.0)
    w1, w2, b = Value(-3.0), Value(1.0), Value(6.8813735870195432)
    n = x1 * w1 + x2 * w2 + b
    out = n.relu()
    out.backward()
    return out


def counts(dot_source):
    records = len(re.findall(r'shape="record"', dot_source))
    edges = len(re.findall(r"->", dot_source))
    return records, edges


def test_to_dot_counts_nodes_and_edges_of_a_known_graph():
    a, b = Value(2.0), Value(-3.0)
    c = a * b + 1  # a, b, a*b, the constant 1, the sum: 5 values and 2 ops
    records, edges = counts(pygrad.to_dot(c))
    assert records == 5
    assert edges == 2 + 4  # op -> its value, and four child -> op edges


def test_to_dot_matches_micrograd_notebook_walk():
    # micrograd's trace_graph notebook: one record per Value, one edge per (child, parent)
    # plus one per op node; a shared subexpression is drawn once.
    from micrograd.engine import Value as MValue

    def build(V):
        x = V(1.5)
        y = x * x + x
        return (y * y).relu()

    def micrograd_counts(root):
        nodes, edges = trace(root)
        return len(nodes), len(edges) + sum(1 for n in nodes if n._op)

    assert counts(pygrad.to_dot(build(Value))) == micrograd_counts(build(MValue))


def test_to_dot_shows_data_grad_and_ops():
    source = pygrad.to_dot(neuron())
    assert "data 2.0000 | grad -3.0000" in source  # x1: grad = w1 * relu'(n) = -3
    assert '[label="ReLU"]' in source and '[label="*"]' in source
    assert source.startswith("digraph {") and source.rstrip().endswith("}")


def test_to_dot_cuts_big_graphs_with_a_note():
    x = Value(1.0)
    for _ in range(100):
        x = x + 1.0
    source = pygrad.to_dot(x, max_nodes=10)
    assert counts(source)[0] == 10
    assert "191 more nodes not drawn (max_nodes=10)" in source


def test_custom_op_labels_are_quoted():
    x = Value(3.0)
    out = Value(9.0, (x,), 'my "op"')
    assert r'[label="my \"op\""]' in pygrad.to_dot(out)


def test_to_dot_rejects_non_values():
    with pytest.raises(TypeError):
        pygrad.to_dot(3.0)
    with pytest.raises(ValueError):
        pygrad.to_dot(Value(1.0), max_nodes=0)


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot binary is not installed")
def test_draw_dot_renders_svg_with_every_value():
    graphviz = pytest.importorskip("graphviz",
                                   reason="the graphviz Python package is not installed")
    out = neuron()
    dot = pygrad.draw_dot(out, format="svg", rankdir="TB")
    assert isinstance(dot, graphviz.Digraph)
    svg = dot.pipe().decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for text in ("data 2.0000", "data &#45;3.0000", "data 6.8814", "data 0.8814", "ReLU"):
        assert text in svg
