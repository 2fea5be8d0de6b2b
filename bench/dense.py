"""Dense references for bench.py: the same MLP training step as pygrad's, written
as whole-batch array code, and how fast one core can go.

  NumpyStep     forward and backward by hand with numpy float64 matmuls
  CStep         bench/dense_step.c: the same step in plain C, built by this
                module with pygrad's own compiler flags (C_FLAGS: -O2 and
                csrc/cflags) and loaded with cffi
  flops_per_step, peak_gflops   for the GFLOP/s lines under bench.py's table

Both steps take a pygrad.nn.MLP's current weights, then keep their own copy;
every step is forward, the loss, backward, and SGD (p -= lr * dloss/dp) over a
minibatch X [batch, nin] with targets T: labels -1/+1 for "svm" (micrograd's
demo loss), one-hot rows for "hinge" (examples/digits.py's multiclass hinge).
The loss includes alpha * sum(p**2) over every weight and bias.
"""
import os
import subprocess
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PYGRAD_CFLAGS = os.path.join(os.path.dirname(HERE), "csrc", "cflags")
LOSSES = {"svm": 0, "hinge": 1}


def pygrad_c_flags():
    """pygrad's own compiler options: -O2, as csrc/build.py builds the extension,
    and the flags the extension shares with the C tests (csrc/cflags), so that
    the reference differs from pygrad in its design, not in its compiler options,
    and follows when those change.  Warnings aside."""
    with open(PYGRAD_CFLAGS) as f:
        flags = [flag for line in f if not line.startswith("#") for flag in line.split()]
    return ["-O2"] + [flag for flag in flags if not flag.startswith("-W")]


C_FLAGS = pygrad_c_flags()
C_COMPILER = os.environ.get("CC", "gcc")


def flops_per_step(sizes, batch):
    """6 * sum over layers of nin * nout * batch: three dense products per
    layer (forward, grad into the inputs, grad into the weights), a
    multiply-add counted as 2 flops.  Biases, ReLUs, the loss and the update
    are left out (they are O(nout), not O(nin * nout))."""
    return 6 * sum(nin * nout for nin, nout in zip(sizes, sizes[1:])) * batch


def mlp_arrays(model):
    """A pygrad.nn.MLP's [(W [nout, nin], b [nout], relu)] as float64 arrays."""
    return [(np.array([[w.data for w in n.w] for n in layer.neurons]),
             np.array([n.b.data for n in layer.neurons]),
             bool(layer.neurons[0].nonlin)) for layer in model.layers]


def mlp_sizes(model):
    return [len(model.layers[0].neurons[0].w)] + [len(layer.neurons) for layer in model.layers]


# --- numpy -----------------------------------------------------------------------

def svm_loss(scores, labels):
    """(data loss, dloss/dscores) of mean(relu(1 - y * s)); scores [batch, 1]."""
    margins = 1 - labels * scores[:, 0]
    active = margins > 0
    scale = 1.0 / len(labels)
    return np.sum(margins[active]) * scale, (-labels * active * scale)[:, None]


def hinge_loss(scores, onehot):
    """(data loss, dloss/dscores) of the mean over samples of
    sum_j (1 - o_j) * relu(1 + s_j - t), t = sum_k o_k * s_k."""
    true_score = np.sum(onehot * scores, axis=1, keepdims=True)
    margins = 1 + scores - true_score
    wrong = 1 - onehot
    scale = 1.0 / len(scores)
    grad = wrong * (margins > 0) * scale
    loss = np.sum(grad * margins)
    grad -= onehot * np.sum(grad, axis=1, keepdims=True)
    return loss, grad


class NumpyStep:
    """The training step as numpy array code, on a copy of `model`'s weights."""

    def __init__(self, model, loss, alpha):
        self.layers = mlp_arrays(model)
        self.data_loss = {"svm": svm_loss, "hinge": hinge_loss}[loss]
        self.alpha = alpha

    def __call__(self, X, T, lr):
        activations = [X]
        for W, b, relu in self.layers:
            out = activations[-1] @ W.T + b
            if relu:
                np.maximum(out, 0, out=out)
            activations.append(out)
        loss, grad = self.data_loss(activations[-1], T)
        loss += self.alpha * sum(np.dot(W.ravel(), W.ravel()) + np.dot(b, b)
                                 for W, b, _ in self.layers)
        for i in reversed(range(len(self.layers))):
            W, b, relu = self.layers[i]
            if relu:
                grad = grad * (activations[i + 1] > 0)
            grad_W, grad_b = grad.T @ activations[i], grad.sum(axis=0)
            if i > 0:
                grad = grad @ W
            W -= lr * (grad_W + 2 * self.alpha * W)
            b -= lr * (grad_b + 2 * self.alpha * b)
        return float(loss)

    def parameters(self):
        """Every weight and bias, flat, in pygrad's parameters() order."""
        return np.concatenate([np.hstack([W, b[:, None]]).ravel() for W, b, _ in self.layers])


# --- C ---------------------------------------------------------------------------

CDEF = """
typedef struct dense_net dense_net;
dense_net *dense_new(int n_layers, const int *sizes, const int *relu, int batch);
void dense_free(dense_net *net);
double dense_step(dense_net *net, double *params, const double *x, const double *target,
                  int loss_kind, double alpha, double lr);
"""
_c = {}


def c_library():
    """(ffi, lib) of bench/dense_step.c, compiled once per process into a
    temporary directory (removed once loaded).  Raises OSError or
    CalledProcessError when there is no working C compiler."""
    if not _c:
        from cffi import FFI

        ffi = FFI()
        ffi.cdef(CDEF)
        with tempfile.TemporaryDirectory(prefix="pygrad-bench-") as tmp:
            path = os.path.join(tmp, "libdense_step.so")
            subprocess.run([C_COMPILER, *C_FLAGS, "-shared", "-fPIC",
                            os.path.join(HERE, "dense_step.c"), "-o", path],
                           check=True, capture_output=True, text=True)
            _c["ffi"], _c["lib"] = ffi, ffi.dlopen(path)
    return _c["ffi"], _c["lib"]


class CStep:
    """The training step in C (bench/dense_step.c), on a copy of `model`'s weights."""

    def __init__(self, model, loss, alpha, batch):
        self.ffi, self.lib = c_library()
        sizes = mlp_sizes(model)
        relu = [int(bool(layer.neurons[0].nonlin)) for layer in model.layers]
        net = self.lib.dense_new(len(relu), sizes, relu, batch)
        if net == self.ffi.NULL:
            raise MemoryError("dense_new failed")
        self.net = self.ffi.gc(net, self.lib.dense_free)
        self.params = np.array([p.data for p in model.parameters()])
        self._params = self.ffi.from_buffer("double[]", self.params)
        self.loss_kind, self.alpha, self.batch = LOSSES[loss], alpha, batch

    def __call__(self, X, T, lr):
        X, T = np.ascontiguousarray(X, dtype=np.float64), np.ascontiguousarray(T, dtype=np.float64)
        if len(X) != self.batch or len(T) != self.batch:
            raise ValueError(f"CStep was built for batches of {self.batch}, got {len(X)}")
        return self.lib.dense_step(self.net, self._params, self.ffi.from_buffer("double[]", X),
                                   self.ffi.from_buffer("double[]", T), self.loss_kind,
                                   self.alpha, lr)

    def parameters(self):
        return self.params.copy()


# --- the machine -----------------------------------------------------------------

def peak_gflops(n=1024, repeats=3):
    """One core's float64 peak, as measured: the best of `repeats` n x n by
    n x n numpy matmuls (2 n^3 flops) on one BLAS thread."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n)), rng.random((n, n))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9
