"""Handwritten digits with pygrad: an MLP trained through a recorded step.

    python examples/digits.py [--epochs 100] [--batch 100] [--lr 0.1] [--out out/]

scikit-learn's bundled 8x8 digits (1,797 images, no download), split into a
training and a held-out test set with a fixed seed.  The loss is a multiclass
hinge (the SVM loss of micrograd's demo, for ten classes) built from Value ops.
The training step is built eagerly once, on input leaves, and recorded as a
pygrad.Replay; every step then feeds it a minibatch and reruns it in C.  At the
end: the held-out accuracy, and the confusion matrix as a PNG.

bench/bench.py imports load_digits_split, one_hot, multiclass_hinge_loss and
record_step from here: the benchmark times this example's step.
"""
import argparse
import os
import random
import sys
import time

import numpy as np

import pygrad
from pygrad import Value
from pygrad.nn import MLP
from pygrad.optim import SGD

N_CLASSES = 10


def load_digits_split(seed, test_fraction=0.25):
    """(X_train, y_train, X_test, y_test): pixels scaled to [0, 1], float64
    rows of 64; labels 0-9.  The split is stratified and fixed by `seed`."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X = digits.data / 16.0
    X_train, X_test, y_train, y_test = train_test_split(
        X, digits.target, test_size=test_fraction, random_state=seed, stratify=digits.target)
    return X_train, y_train, X_test, y_test


def one_hot(labels, n_classes=N_CLASSES):
    return np.eye(n_classes)[labels]


def multiclass_hinge_loss(model, xs, onehots, alpha=1e-4):
    """Mean over the batch of sum over the wrong classes j of
    relu(1 + score_j - score_true), plus alpha * sum of squared parameters.

    The true score is picked by a dot product with the one-hot row, and the
    true class is left out by multiplying by (1 - onehot_j), so the graph is the
    same whatever the labels: with xs and onehots made of leaves, it can be
    recorded once and fed any minibatch.  Plain numbers work too (eagerly)."""
    losses = []
    for x, onehot in zip(xs, onehots):
        scores = model(x)
        true_score = sum(o * s for o, s in zip(onehot, scores))
        losses.append(sum((1 - o) * (1 + s - true_score).relu() for o, s in zip(onehot, scores)))
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = alpha * sum(p * p for p in model.parameters())
    return data_loss + reg_loss


def record_step(model, batch_size, alpha=1e-4):
    """The loss over one minibatch of input leaves, recorded as a Replay whose
    feed() takes a minibatch's pixels then its one-hot rows, flattened."""
    n_inputs = len(model.layers[0].neurons[0].w)
    n_classes = len(model.layers[-1].neurons)
    xs = [[Value(0.0) for _ in range(n_inputs)] for _ in range(batch_size)]
    onehots = [[Value(0.0) for _ in range(n_classes)] for _ in range(batch_size)]
    loss = multiclass_hinge_loss(model, xs, onehots, alpha)
    # Pixels and labels are data: nobody reads their grads, so none are computed.
    return pygrad.Replay(loss, inputs=[v for row in xs + onehots for v in row],
                         inputs_require_grad=False)


def minibatches(X, Y, batch_size, rng):
    """One epoch: a shuffled pass, each minibatch as the flat array feed() takes
    (the last partial minibatch is dropped: the recorded graph has a fixed size)."""
    order = rng.permutation(len(X))
    for start in range(0, len(X) - batch_size + 1, batch_size):
        rows = order[start:start + batch_size]
        yield np.concatenate([X[rows].ravel(), Y[rows].ravel()])


def train(X, Y, hidden, epochs, batch_size, lr, alpha, seed):
    from tqdm import tqdm  # here: the tests and the bench import this file without it

    random.seed(seed)
    model = MLP(X.shape[1], [hidden, N_CLASSES])
    step = record_step(model, batch_size, alpha)       # built once, replayed below
    optimizer = SGD(model.parameters(), lr=lr, momentum=0.9)
    rng = np.random.default_rng(seed)
    steps_per_epoch = len(X) // batch_size
    history = []
    bar = tqdm(total=epochs * steps_per_epoch, desc="training", unit="step", file=sys.stdout)
    start = time.perf_counter()
    for epoch in range(epochs):
        for batch in minibatches(X, Y, batch_size, rng):
            step.feed(batch)
            loss = step.forward()
            step.backward()
            optimizer.step()
            history.append(loss)
            bar.update()
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}")
    bar.close()
    step.close()
    return model, history, time.perf_counter() - start


def predict(model, X):
    with pygrad.no_grad():  # inference: values only, no graph kept
        return np.array([np.argmax([s.data for s in model(list(x))]) for x in X])


def plot_confusion(confusion, accuracy, path):
    import matplotlib

    matplotlib.use("Agg")  # files only: no screen needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.imshow(confusion, cmap=plt.cm.Blues)
    for true, row in enumerate(confusion):
        for predicted, count in enumerate(row):
            color = "white" if count > confusion.max() / 2 else "black"
            ax.text(predicted, true, str(count), ha="center", va="center", color=color)
    ax.set_xticks(range(N_CLASSES))
    ax.set_yticks(range(N_CLASSES))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(f"pygrad on held-out digits: {accuracy:.1%} correct")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100, help="passes over the training set")
    parser.add_argument("--batch", type=int, default=100, help="minibatch size")
    parser.add_argument("--hidden", type=int, default=32, help="hidden layer width")
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (momentum 0.9)")
    parser.add_argument("--alpha", type=float, default=1e-3, help="L2 weight in the loss")
    parser.add_argument("--out", default="out", help="directory for the PNG file")
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args(argv)

    X_train, y_train, X_test, y_test = load_digits_split(args.seed)
    model, history, seconds = train(X_train, one_hot(y_train), args.hidden, args.epochs,
                                    args.batch, args.lr, args.alpha, args.seed)
    print(f"pygrad: {len(history)} steps of {args.batch} in {seconds:.2f} s "
          f"({seconds / len(history) * 1e3:.2f} ms/step), final loss {history[-1]:.4f}")

    predicted = predict(model, X_test)
    accuracy = float(np.mean(predicted == y_test))
    confusion = np.zeros((N_CLASSES, N_CLASSES), dtype=int)
    np.add.at(confusion, (y_test, predicted), 1)
    correct = int(np.sum(predicted == y_test))
    print(f"held-out accuracy: {accuracy:.1%} ({correct} of {len(y_test)})")

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "digits_confusion.png")
    plot_confusion(confusion, accuracy, path)
    print(f"wrote {path}")
    return accuracy


if __name__ == "__main__":
    main()
