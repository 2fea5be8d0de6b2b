"""The README's examples written with types: `mypy --strict` must accept this file.

    cd tests && python -m mypy --strict typing_usage.py      (part of `make lint`)

It type-checks against the installed package's stubs (pygrad/*.pyi, found through
py.typed), so it also shows that they ship. Not a pytest file (pytest collects
test_*.py), but it runs: `python typing_usage.py`; test_typing.py runs it too.
"""
from __future__ import annotations

import copy
import pickle
import random
from collections.abc import Sequence

import numpy as np

import pygrad
from pygrad import NodeLimitError, PygradError, Replay, ReplayMismatchError, StaleValueError, Value
from pygrad.nn import MLP, Layer, Module, Neuron
from pygrad.optim import SGD, Adam
from pygrad.viz import trace


def readme_tour() -> tuple[float, float, float]:
    a = Value(-4.0)
    b = Value(2.0)
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    g.backward()
    return g.data, a.grad, b.grad


def cube(x: Value) -> Value:
    """A custom op written micrograd style."""
    out = Value(x.data ** 3, (x,), 'cube')

    def _backward() -> None:
        x.grad += 3 * x.data ** 2 * out.grad
    out._backward = _backward
    return out


def beyond_micrograd() -> list[Value]:
    x = Value(0.5, label='x')
    label: str = x.label
    assert label == 'x'
    results = [x.tanh(), x.exp(), x.log(), x.sigmoid(), 2 ** x, x ** Value(3.0), 1 - x, 1 / x]
    children: set[Value] = results[0]._prev
    op: str = results[0]._op
    step = results[0]._backward
    step()
    assert x in children and op == 'tanh'
    return results


def svm_loss(model: MLP, xs: Sequence[Sequence[float]], ys: Sequence[float]) -> Value:
    """micrograd's demo loss. sum() of Values starts from Value(0.0): typeshed's
    sum() without a start may return the int 0, which has no backward()."""
    scores: list[Value] = [model(x) for x in xs]
    losses = [(1 + -y * score).relu() for y, score in zip(ys, scores)]
    data_loss = sum(losses, Value(0.0)) * (1.0 / len(losses))
    reg_loss = 1e-4 * sum((p * p for p in model.parameters()), Value(0.0))
    return data_loss + reg_loss


def training(steps: int = 3) -> float:
    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    xs = [[2.0, 3.0], [3.0, -1.0], [0.5, 1.0], [1.0, 1.0]]
    ys = [1.0, -1.0, -1.0, 1.0]
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        loss = svm_loss(model, xs, ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in model.parameters():  # or by hand, as micrograd's demo
        p.data -= 0.01 * p.grad

    with pygrad.no_grad():
        score: Value = model([0.5, -1.0])

    @pygrad.no_grad()
    def predict(x: list[float]) -> float:
        out: Value = model(x)
        return out.data

    restored: MLP = pickle.loads(pickle.dumps(model))
    twin = copy.deepcopy(model)
    twin.load_state_dict(model.state_dict())
    names = [name for name, _ in restored.named_parameters()]
    assert names[0] == 'layers.0.neurons.0.w.0'
    return score.data + predict([0.0, 0.0])


def other_activations() -> str:
    model = MLP(2, [16, 16, 1], act='tanh')
    neuron = Neuron(3, act='sigmoid')
    linear = Neuron(3, nonlin=False)
    layer = Layer(3, 2, nonlin=True, act='relu')
    outputs: list[Value] = layer([1.0, 2.0, 3.0])
    modules: list[Module] = [model, neuron, linear, layer]
    assert len(outputs) == 2 and all(m.parameters() for m in modules)
    adam = Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
    adam.step()
    return repr(neuron)


def replayed(batches: int = 3) -> float:
    random.seed(1337)
    model = MLP(2, [4, 1])
    opt = SGD(model.parameters(), lr=0.05)
    xs = [[Value(0.0), Value(0.0)] for _ in range(4)]
    ys = [Value(0.0) for _ in range(4)]

    def build() -> Value:
        scores: list[Value] = [model(x) for x in xs]
        return sum(((1 + -y * s).relu() for y, s in zip(ys, scores)), Value(0.0))

    inputs = [v for row in xs for v in row] + ys
    loss = 0.0
    with Replay(build(), inputs=inputs, check=build) as step:
        nodes: int = len(step)
        assert nodes > 0
        for i in range(batches):
            step.feed([float(i)] * 8 + [1.0, -1.0, -1.0, 1.0])
            loss = step.forward()
            step.backward()
            opt.step()
    return loss


def numpy_interop() -> float:
    v = Value(np.float64(0.5))
    w = np.float64(2.0) * v + v * np.float32(3.0) - np.int64(1)
    model = MLP(2, [1])
    score: Value = model(np.array([1.0, 2.0]))
    step = Replay(score + w, inputs=[v])
    step.feed(np.array([0.25]))
    return step.forward()


def pictures() -> str:
    x = Value(2.0, label='x')
    y = (x * x).relu()
    nodes, edges, omitted = trace(y)
    handle, data, grad, op, label = nodes[-1]
    assert op == 'ReLU' and omitted == 0 and edges
    dot: str = pygrad.to_dot(y)
    return dot


def errors() -> list[type[Exception]]:
    caught: list[type[Exception]] = []
    old: int = pygrad.set_node_limit(0)
    pygrad.set_node_limit(old)
    for kind in (NodeLimitError, StaleValueError, ReplayMismatchError):
        assert issubclass(kind, PygradError)
        caught.append(kind)
    try:
        Value(0.0) ** -1
    except ZeroDivisionError as error:
        caught.append(type(error))
    nodes: int = pygrad.live_nodes()
    assert nodes >= 0 and pygrad.__version__
    return caught


def main() -> None:
    data, a_grad, b_grad = readme_tour()
    assert f"{data:.4f} {a_grad:.4f} {b_grad:.4f}" == "24.7041 138.8338 645.5773"
    x = Value(2.0)
    cube(x).backward()
    assert x.grad == 12.0
    beyond_micrograd()
    training()
    other_activations()
    replayed()
    numpy_interop()
    pictures()
    errors()
    print("typing_usage: every example ran")


if __name__ == "__main__":
    main()
