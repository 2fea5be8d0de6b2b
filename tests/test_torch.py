"""pygrad against PyTorch in float64: values within 1e-12 relative, gradients
within 1e-10 relative.

micrograd itself has no tanh/exp/log/sigmoid and no Value exponent, so these
are checked against torch rather than micrograd; micrograd's own two tests,
which compare it with torch, are ported here too.  The expressions are written
once and run on both: pygrad Values and torch tensors share the operators and
the method names (.relu(), .tanh(), .exp(), .log(), .sigmoid()).
"""
import math
import random

import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed (pip install torch==2.13.0, CPU build): "
    "the comparisons with torch need it; the micrograd comparisons do not")

from pygrad import Value  # noqa: E402

VALUE_REL = 1e-12
GRAD_REL = 1e-10
GRAD_ABS = 1e-12


def t64(x):
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


def assert_value(ours, theirs, what=""):
    assert isinstance(ours, float)
    assert math.isclose(ours, theirs, rel_tol=VALUE_REL), (what, ours, theirs)


def assert_grad(ours, theirs, what=""):
    assert isinstance(ours, float)
    assert math.isclose(ours, theirs, rel_tol=GRAD_REL, abs_tol=GRAD_ABS), (what, ours, theirs)


# --- a fixed set of expressions, every op ------------------------------------------

EXPRESSIONS = {
    "add-mul": lambda x, y, z: x * y + z * x + 2.0 * y + 3 + x * x,
    "sub-neg": lambda x, y, z: x - y - (-z) - 1.5 - (2 - x) - (y - y * z),
    "div": lambda x, y, z: x / y + 1 / z - y / 4.0 + (x + y) / (z * x) + z / z ** 2,
    "pow-const": lambda x, y, z: (x ** 2 + y ** 3 - z ** -1 + x ** 0.5 + x ** -1.5
                                  + y ** 2.0 + z ** (1 / 3) + (x * z) ** -2),
    "pow-value": lambda x, y, z: x ** y + z ** (x - y) + x ** (y * z) + (x + 1) ** (-z),
    "rpow": lambda x, y, z: 2 ** x + 1.5 ** (y * z) + 0.5 ** (x - z),
    "relu": lambda x, y, z: ((x - y).relu() + (y - x).relu() * z + (x * z - 1).relu()
                             + (-x * z).relu()),
    "tanh": lambda x, y, z: (x * y).tanh() + (z - 1).tanh() * x + (-x).tanh() ** 2,
    "exp": lambda x, y, z: (x * y).exp() + (-z).exp() * y + (x - 3).exp() / (z.exp() + 1),
    "log": lambda x, y, z: x.log() + (x * z).log() * y + (z + x ** 2).log() / z.log().exp(),
    "sigmoid": lambda x, y, z: (x - z).sigmoid() + (y * 3).sigmoid() * x + (-y).sigmoid() ** 2,
    "mixed": lambda x, y, z: (((x.tanh() * y.exp() + z.log()).sigmoid() ** 2
                               + (x ** y).relu()) / (1 + z.exp()) - (y * z).tanh().exp()),
    "shared": lambda x, y, z: _shared(x, y, z),
}


def _shared(x, y, z):
    # A DAG: every node used several times, a few levels deep.
    a = x * y + z
    b = a.tanh() * a + a ** 2
    c = (b - a).sigmoid() * b + (a * b).relu()
    d = c / (b + 3) + c.exp() * 0.01 + (c * c + 1).log()
    return d * a + d ** x - b / (1 + c ** 2)


POINTS = [(0.7, 1.3, 2.1), (1.9, -0.4, 0.35), (0.2, 2.5, 1.1), (3.0, 0.5, 4.0),
          (1.05, -1.7, 0.8)]


@pytest.mark.parametrize("point", POINTS, ids=str)
@pytest.mark.parametrize("name", sorted(EXPRESSIONS))
def test_expression_against_torch(name, point):
    f = EXPRESSIONS[name]
    ours = [Value(v) for v in point]
    theirs = [t64(v) for v in point]
    out, ref = f(*ours), f(*theirs)
    assert_value(out.data, ref.item(), name)
    out.backward()
    ref.backward()
    for label, o, t in zip("xyz", ours, theirs):
        assert_grad(o.grad, t.grad.item(), f"{name} d/d{label}")


UNARY = [
    ("tanh", [-20.0, -3.0, -0.5, -1e-9, 0.0, 0.123, 2.0, 20.0]),
    ("exp", [-700.0, -50.0, -1.0, 0.0, 0.123, 2.0, 30.0, 700.0]),
    ("log", [1e-300, 1e-5, 0.5, 1.0, 2.0, 1e5, 1e300]),
    ("sigmoid", [-800.0, -40.0, -3.0, -0.5, 0.0, 0.5, 3.0, 40.0, 800.0]),
    ("relu", [-2.0, -1e-300, 1e-300, 0.5, 3.0]),
]


@pytest.mark.parametrize("op, xs", UNARY, ids=[u[0] for u in UNARY])
def test_unary_ops_against_torch(op, xs):
    # micrograd's fork's test_unary_tensor_fns, wider and tighter.
    for x in xs:
        v, t = Value(x), t64(x)
        out, ref = getattr(v, op)(), getattr(t, op)()
        assert_value(out.data, ref.item(), (op, x))
        out.backward()
        ref.backward()
        assert_grad(v.grad, t.grad.item(), (op, x))


@pytest.mark.parametrize("base, exponent", [(2.0, 3.0), (0.5, -2.5), (3.7, 0.0),
                                            (1.0, 4.2), (10.0, -0.3), (0.01, 1.5)])
def test_value_exponent_against_torch(base, exponent):
    a, b = Value(base), Value(exponent)
    ta, tb = t64(base), t64(exponent)
    out, ref = a ** b, ta ** tb
    assert_value(out.data, ref.item())
    out.backward()
    ref.backward()
    assert_grad(a.grad, ta.grad.item(), "d/dbase")
    assert_grad(b.grad, tb.grad.item(), "d/dexponent")


# --- micrograd's own tests (test/test_engine.py), ported to pygrad -----------------

def test_sanity_check():

    x = Value(-4.0)
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    xmg, ymg = x, y

    x = torch.Tensor([-4.0]).double()
    x.requires_grad = True
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    xpt, ypt = x, y

    # forward pass went well
    assert ymg.data == ypt.data.item()
    # backward pass went well
    assert xmg.grad == xpt.grad.item()


def test_more_ops():

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
    amg, bmg, gmg = a, b, g

    a = torch.Tensor([-4.0]).double()
    b = torch.Tensor([2.0]).double()
    a.requires_grad = True
    b.requires_grad = True
    c = a + b
    d = a * b + b**3
    c = c + c + 1
    c = c + 1 + c + (-a)
    d = d + d * 2 + (b + a).relu()
    d = d + 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g = g + 10.0 / f
    g.backward()
    apt, bpt, gpt = a, b, g

    tol = 1e-6
    # forward pass went well
    assert abs(gmg.data - gpt.data.item()) < tol
    # backward pass went well
    assert abs(amg.grad - apt.grad.item()) < tol
    assert abs(bmg.grad - bpt.grad.item()) < tol
    # and, tighter than micrograd asks:
    assert_value(gmg.data, gpt.data.item())
    assert_grad(amg.grad, apt.grad.item())
    assert_grad(bmg.grad, bpt.grad.item())


# --- a small MLP: pygrad Values against the same network in torch ----------------------

def make_weights(sizes, seed):
    rng = random.Random(seed)
    return [([[rng.uniform(-1, 1) for _ in range(nin)] for _ in range(nout)],
             [rng.uniform(-0.5, 0.5) for _ in range(nout)])
            for nin, nout in zip(sizes, sizes[1:])]


def make_data(n, nin, seed):
    rng = random.Random(seed)
    X = [[rng.gauss(0, 1) for _ in range(nin)] for _ in range(n)]
    y = [1 if x[0] * x[-1] + 0.3 * x[1] > 0 else -1 for x in X]
    return X, y


def pygrad_network(weights, X, y, hidden, loss_kind):
    params = [[([Value(w) for w in row], Value(b)) for row, b in zip(W, B)]
              for W, B in weights]
    scores = []
    for xrow in X:
        h = [Value(x) for x in xrow]
        for depth, layer in enumerate(params):
            # a micrograd Neuron: sum((wi*xi for ...), b), then the nonlinearity
            acts = [sum((wi * xi for wi, xi in zip(w, h)), b) for w, b in layer]
            last = depth == len(params) - 1
            h = acts if last else [getattr(a, hidden)() for a in acts]
        scores.append(h[0])
    if loss_kind == "svm":
        losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores)]
    else:  # logistic: -log sigmoid(y * s)
        losses = [-((yi * si).sigmoid().log()) for yi, si in zip(y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    flat = [p for layer in params for w, b in layer for p in w + [b]]
    reg_loss = 1e-4 * sum(p * p for p in flat)
    return data_loss + reg_loss, params


def torch_network(weights, X, y, hidden, loss_kind):
    params = [(t64(W), t64(B)) for W, B in weights]
    h = torch.tensor(X, dtype=torch.float64)
    for depth, (W, B) in enumerate(params):
        h = h @ W.T + B
        if depth < len(params) - 1:
            h = getattr(h, hidden)()
    s = h[:, 0]
    yt = torch.tensor(y, dtype=torch.float64)
    if loss_kind == "svm":
        data_loss = (1 - yt * s).relu().mean()
    else:
        data_loss = -(yt * s).sigmoid().log().mean()
    reg_loss = 1e-4 * sum((W * W).sum() + (B * B).sum() for W, B in params)
    return data_loss + reg_loss, params


@pytest.mark.parametrize("hidden, loss_kind", [("relu", "svm"), ("tanh", "logistic"),
                                               ("sigmoid", "svm")])
def test_mlp_against_torch(hidden, loss_kind):
    sizes = [3, 8, 6, 1]
    weights = make_weights(sizes, seed=7)
    X, y = make_data(12, sizes[0], seed=11)
    loss, params = pygrad_network(weights, X, y, hidden, loss_kind)
    ref, tparams = torch_network(weights, X, y, hidden, loss_kind)
    assert_value(loss.data, ref.item(), "loss")
    # Within 1e-10 as the brief for the network asks; values above are 1e-12.
    loss.backward()
    ref.backward()
    checked = 0
    for layer, (W, B) in zip(params, tparams):
        for i, (w, b) in enumerate(layer):
            for j, p in enumerate(w):
                assert_grad(p.grad, W.grad[i, j].item(), f"W[{i},{j}]")
                checked += 1
            assert_grad(b.grad, B.grad[i].item(), f"B[{i}]")
            checked += 1
    assert checked == sum(nin * nout + nout for nin, nout in zip(sizes, sizes[1:]))
    assert any(abs(W.grad).max().item() > 1e-3 for W, _ in tparams)


def test_mlp_training_steps_against_torch():
    # Five SGD steps, pygrad and torch each on its own: the trajectories agree.
    sizes = [2, 6, 1]
    weights = make_weights(sizes, seed=3)
    X, y = make_data(10, 2, seed=5)
    _, tparams = torch_network(weights, X, y, "relu", "svm")
    ours, theirs = [], []
    for _step in range(5):
        loss, params = pygrad_network(weights, X, y, "relu", "svm")
        loss.backward()
        weights = [([[p.data - 0.5 * p.grad for p in w] for w, _ in layer],
                    [b.data - 0.5 * b.grad for _, b in layer]) for layer in params]
        ours.append(loss.data)

        h = torch.tensor(X, dtype=torch.float64)
        (W1, B1), (W2, B2) = tparams
        s = ((h @ W1.T + B1).relu() @ W2.T + B2)[:, 0]
        yt = torch.tensor(y, dtype=torch.float64)
        ref = (1 - yt * s).relu().mean() + 1e-4 * sum(
            (W * W).sum() + (B * B).sum() for W, B in tparams)
        for W, B in tparams:
            W.grad = B.grad = None
        ref.backward()
        with torch.no_grad():
            for W, B in tparams:
                W -= 0.5 * W.grad
                B -= 0.5 * B.grad
        theirs.append(ref.item())
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert math.isclose(a, b, rel_tol=1e-10), (step, a, b)
    assert ours[-1] < ours[0]
    for (W, B), (tW, tB) in zip(weights, tparams):
        for i, row in enumerate(W):
            for j, w in enumerate(row):
                assert math.isclose(w, tW[i, j].item(), rel_tol=1e-10, abs_tol=1e-12)
            assert math.isclose(B[i], tB[i].item(), rel_tol=1e-10, abs_tol=1e-12)
