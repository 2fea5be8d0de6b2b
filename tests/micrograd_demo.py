"""micrograd's demo notebook as reusable pieces, for the tests and bench/: the
two-moons data, the SVM loss and the training step.

The loss is the notebook's line for line, written against whatever ``Value``
class and model it is given, so that the same function drives micrograd,
pygrad, and micrograd's own nn running on pygrad's Value.  It exists here only:
examples/moons.py writes the notebook out for its readers.
"""
import contextlib
import math
import random

__all__ = ["make_moons", "svm_loss", "svm_loss_on", "sgd_step", "learning_rate",
           "micrograd_nn_using"]


def make_moons(n_samples=100, noise=0.1, seed=1337):
    """Two interleaving half circles, as sklearn.datasets.make_moons (labels -1/+1).

    Returns (X, y): X a list of [x0, x1] float pairs, y a list of ints in {-1, 1}.
    """
    rng = random.Random(seed)
    n_outer = n_samples // 2
    n_inner = n_samples - n_outer

    def arc(count):
        return [math.pi * i / (count - 1) if count > 1 else 0.0 for i in range(count)]

    points = [([math.cos(t), math.sin(t)], -1) for t in arc(n_outer)]
    points += [([1 - math.cos(t), 1 - math.sin(t) - 0.5], 1) for t in arc(n_inner)]
    rng.shuffle(points)
    X = [[x0 + rng.gauss(0.0, noise), x1 + rng.gauss(0.0, noise)] for (x0, x1), _ in points]
    y = [label for _, label in points]
    return X, y


def svm_loss(model, X, y, Value, alpha=1e-4):
    """micrograd's demo loss: SVM max-margin plus L2.  Returns (loss, accuracy)."""
    inputs = [list(map(Value, xrow)) for xrow in X]
    total_loss, scores = svm_loss_on(model, inputs, y, alpha)
    accuracy = [(yi > 0) == (scorei.data > 0) for yi, scorei in zip(y, scores)]
    return total_loss, sum(accuracy) / len(accuracy)


def svm_loss_on(model, inputs, y, alpha=1e-4):
    """The same loss over inputs already made (rows of Values: a Replay's input
    leaves) and labels y (numbers, or Values to feed).  Returns (loss, scores)."""
    scores = list(map(model, inputs))
    losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = alpha * sum(p * p for p in model.parameters())
    total_loss = data_loss + reg_loss
    return total_loss, scores


def learning_rate(step, steps=100):
    """The demo's schedule: 1.0 decaying linearly to 0.1 over `steps`."""
    return 1.0 - 0.9 * step / steps


def sgd_step(model, X, y, Value, step):
    """One demo training step: forward, zero_grad, backward, SGD update."""
    total_loss, accuracy = svm_loss(model, X, y, Value)
    model.zero_grad()
    total_loss.backward()
    lr = learning_rate(step)
    for p in model.parameters():
        p.data -= lr * p.grad
    return total_loss.data, accuracy


@contextlib.contextmanager
def micrograd_nn_using(Value):
    """micrograd.nn building its parameters as `Value` (pygrad's, say), so that
    micrograd's own nn classes drive another engine; restored on exit.  Needs
    micrograd installed."""
    import micrograd.nn

    saved = micrograd.nn.Value
    micrograd.nn.Value = Value
    try:
        yield micrograd.nn
    finally:
        micrograd.nn.Value = saved
