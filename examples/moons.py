"""micrograd's demo on pygrad: train an MLP on two moons, draw what it learned.

    python examples/moons.py [--steps 100] [--out out/] [--micrograd-steps 3]

The training loop is micrograd's demo notebook (demo.ipynb) with its imports
changed to pygrad's: the same data (scikit-learn's make_moons), the same SVM
max-margin loss with L2, the same update.  It writes the decision boundary and
the loss curve as PNG files, and times a few steps of micrograd itself on the
same data and model to say how long micrograd would have taken for the run.
"""
import argparse
import os
import random
import sys
import time

import matplotlib

matplotlib.use("Agg")  # files only: no screen needed
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.datasets import make_moons  # noqa: E402
from tqdm import tqdm  # noqa: E402

import pygrad  # noqa: E402
from pygrad import Value  # noqa: E402
from pygrad.nn import MLP  # noqa: E402


def loss(model, X, y, Value=Value):
    """The notebook's loss: SVM max-margin over every point, plus L2."""
    inputs = [list(map(Value, xrow)) for xrow in X]
    # forward the model to get scores
    scores = list(map(model, inputs))
    # svm "max-margin" loss
    losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    # L2 regularization
    alpha = 1e-4
    reg_loss = alpha * sum(p * p for p in model.parameters())
    total_loss = data_loss + reg_loss
    # also get accuracy
    accuracy = [(yi > 0) == (scorei.data > 0) for yi, scorei in zip(y, scores)]
    return total_loss, sum(accuracy) / len(accuracy)


def step(model, X, y, k, Value=Value):
    """One step of the notebook's optimization loop; (loss, accuracy)."""
    # forward
    total_loss, acc = loss(model, X, y, Value)
    # backward
    model.zero_grad()
    total_loss.backward()
    # update (sgd)
    learning_rate = 1.0 - 0.9 * k / 100
    for p in model.parameters():
        p.data -= learning_rate * p.grad
    return total_loss.data, acc


def train(X, y, steps, seed):
    random.seed(seed)
    model = MLP(2, [16, 16, 1])  # 2-layer neural network
    history = []
    bar = tqdm(range(steps), desc="training", unit="step", file=sys.stdout)
    start = time.perf_counter()
    for k in bar:
        total_loss, acc = step(model, X, y, k)
        history.append((total_loss, acc))
        bar.set_postfix(loss=f"{total_loss:.4f}", accuracy=f"{acc:.0%}")
    return model, history, time.perf_counter() - start


def micrograd_seconds_per_step(X, y, steps, seed):
    """Median time of micrograd's own step, after its two warm-up steps."""
    import micrograd.engine
    import micrograd.nn

    random.seed(seed)
    model = micrograd.nn.MLP(2, [16, 16, 1])
    times = []
    for k in range(2 + steps):
        start = time.perf_counter()
        step(model, X, y, k, micrograd.engine.Value)
        times.append(time.perf_counter() - start)
    times = sorted(times[2:])
    return times[len(times) // 2]


def plot_decision_boundary(model, X, y, path, resolution=100):
    xs = [p[0] for p in X]
    ys = [p[1] for p in X]
    x_min, x_max = min(xs) - 1, max(xs) + 1
    y_min, y_max = min(ys) - 1, max(ys) + 1
    grid_x = [x_min + (x_max - x_min) * i / (resolution - 1) for i in range(resolution)]
    grid_y = [y_min + (y_max - y_min) * j / (resolution - 1) for j in range(resolution)]
    with pygrad.no_grad():  # 10,000 forward passes, no graph kept
        scores = [[model([gx, gy]).data > 0 for gx in grid_x] for gy in grid_y]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.contourf(grid_x, grid_y, scores, cmap=plt.cm.Spectral, alpha=0.8)
    ax.scatter(xs, ys, c=y, s=40, cmap=plt.cm.Spectral, edgecolors="k")
    ax.set_title("pygrad: MLP(2, [16, 16, 1]) decision boundary")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_loss(history, path):
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([loss for loss, _ in history], label="loss")
    ax.plot([accuracy for _, accuracy in history], label="accuracy")
    ax.set_xlabel("step")
    ax.set_title("pygrad: training on two moons")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps (default 100)")
    parser.add_argument("--out", default="out", help="directory for the PNG files")
    parser.add_argument("--micrograd-steps", type=int, default=3,
                        help="micrograd steps to time for the comparison (0: skip)")
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args(argv)

    X, y = make_moons(n_samples=100, noise=0.1, random_state=args.seed)
    y = y * 2 - 1  # make y be -1 or 1
    X, y = X.tolist(), y.tolist()  # Python floats and ints, as micrograd computes with
    model, history, seconds = train(X, y, args.steps, args.seed)
    loss, accuracy = history[-1]
    print(f"pygrad: {args.steps} steps in {seconds:.2f} s "
          f"({seconds / args.steps * 1e3:.2f} ms/step), "
          f"final loss {loss:.4f}, accuracy {accuracy:.0%}")

    os.makedirs(args.out, exist_ok=True)
    boundary = os.path.join(args.out, "moons_decision_boundary.png")
    curve = os.path.join(args.out, "moons_loss.png")
    plot_decision_boundary(model, X, y, boundary)
    plot_loss(history, curve)
    print(f"wrote {boundary} and {curve}")

    if args.micrograd_steps > 0:
        per_step = micrograd_seconds_per_step(X, y, args.micrograd_steps, args.seed)
        total = per_step * args.steps
        print(f"micrograd: {per_step * 1e3:.0f} ms/step (median of {args.micrograd_steps} steps "
              f"after 2 warm-up), so about {total:.1f} s for the same {args.steps} steps: "
              f"pygrad was {total / seconds:.0f}x faster")
    return history


if __name__ == "__main__":
    main()
