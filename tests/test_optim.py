"""pygrad.optim (issue 3): SGD and Adam against the same update written in
plain Python (csrc/optim.c's formulas) and against torch.optim in float64."""
import gc
import math
import random

import pytest

import pygrad
import pygrad.nn as pg_nn
from pygrad import Value
from pygrad.optim import SGD, Adam

import micrograd_demo as demo

N_PARAMS = 40
STEPS = 12


def close(a, b, rel):
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b))


def problem(seed, n=N_PARAMS, steps=STEPS):
    """Initial parameter values, one gradient per parameter per step (some
    exactly zero, some large), and a learning-rate schedule."""
    rng = random.Random(seed)
    data = [rng.uniform(-3, 3) for _ in range(n)]
    grads = [[0.0 if rng.random() < 0.1 else rng.gauss(0, 1) * rng.choice([1e-3, 1.0, 50.0])
              for _ in range(n)] for _ in range(steps)]
    lrs = [0.1 * (1.0 - 0.9 * k / steps) for k in range(steps)]
    return data, grads, lrs


def run_pygrad(make_opt, data, grads, lrs):
    params = [Value(d) for d in data]
    opt = make_opt(params)
    history = []
    for g_step, lr in zip(grads, lrs):
        for p, g in zip(params, g_step):
            p.grad = g
        opt.lr = lr
        opt.step()
        history.append([p.data for p in params])
    return history


# --- plain-Python mirrors of csrc/optim.c ---------------------------------------

def sgd_reference(data, grads, lrs, momentum=0.0, weight_decay=0.0):
    params = list(data)
    velocity = [0.0] * len(params)
    history = []
    for g_step, lr in zip(grads, lrs):
        for i, grad in enumerate(g_step):
            g = grad
            if weight_decay != 0.0:
                g = g + weight_decay * params[i]
            if momentum != 0.0:
                velocity[i] = momentum * velocity[i] + g
                g = velocity[i]
            params[i] -= lr * g
        history.append(list(params))
    return history


def adam_reference(data, grads, lrs, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    beta1, beta2 = betas
    params = list(data)
    m = [0.0] * len(params)
    v = [0.0] * len(params)
    history = []
    for t, (g_step, lr) in enumerate(zip(grads, lrs), start=1):
        bias_correction1 = 1.0 - beta1 ** t
        bias_correction2_sqrt = math.sqrt(1.0 - beta2 ** t)
        step_size = lr / bias_correction1
        for i, grad in enumerate(g_step):
            g = grad
            if weight_decay != 0.0:
                g = g + weight_decay * params[i]
            m[i] = beta1 * m[i] + (1.0 - beta1) * g
            v[i] = beta2 * v[i] + (1.0 - beta2) * g * g
            denom = math.sqrt(v[i]) / bias_correction2_sqrt + eps
            params[i] -= step_size * (m[i] / denom)
        history.append(list(params))
    return history


def assert_histories(ours, expected, rel):
    assert len(ours) == len(expected)
    for k, (a_step, b_step) in enumerate(zip(ours, expected)):
        for i, (a, b) in enumerate(zip(a_step, b_step)):
            assert close(a, b, rel), (k, i, a, b)


def test_plain_sgd_is_bit_identical_to_python_update():
    data, grads, lrs = problem(1)
    ours = run_pygrad(lambda ps: SGD(ps, lr=0.5), data, grads, lrs)
    # micrograd's own update: p.data -= lr * p.grad, on floats.
    expected = []
    params = list(data)
    for g_step, lr in zip(grads, lrs):
        params = [p - lr * g for p, g in zip(params, g_step)]
        expected.append(params)
    assert ours == expected
    assert ours[-1] != data


SGD_CASES = [(0.9, 0.0), (0.0, 0.01), (0.5, 0.1), (0.99, 1e-4)]


@pytest.mark.parametrize("momentum,weight_decay", SGD_CASES)
def test_sgd_matches_python_formula(momentum, weight_decay):
    data, grads, lrs = problem(2)
    ours = run_pygrad(lambda ps: SGD(ps, lr=1.0, momentum=momentum, weight_decay=weight_decay),
                      data, grads, lrs)
    expected = sgd_reference(data, grads, lrs, momentum, weight_decay)
    assert_histories(ours, expected, 1e-15)
    # The extra terms matter: plain SGD would have given something else.
    assert ours[-1] != sgd_reference(data, grads, lrs)[-1]


ADAM_CASES = [
    dict(),
    dict(weight_decay=0.01),
    dict(betas=(0.8, 0.95), eps=1e-6),
    dict(betas=(0.5, 0.9), eps=1e-3, weight_decay=0.1),
]


@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=[str(k) for k in ADAM_CASES])
def test_adam_matches_python_formula(kwargs):
    data, grads, lrs = problem(3)
    ours = run_pygrad(lambda ps: Adam(ps, lr=1.0, **kwargs), data, grads, lrs)
    expected = adam_reference(data, grads, lrs, **kwargs)
    assert_histories(ours, expected, 1e-15)
    assert ours[-1] != data


def test_adam_defaults_are_torchs():
    opt = Adam([Value(1.0)])
    assert opt.lr == 1e-3
    assert tuple(opt.betas) == (0.9, 0.999)
    assert opt.eps == 1e-8
    assert opt.weight_decay == 0.0
    sgd = SGD([Value(1.0)], lr=0.1)
    assert (sgd.lr, sgd.momentum, sgd.weight_decay) == (0.1, 0.0, 0.0)


def test_learning_rate_change_between_steps_is_used():
    data, grads, _ = problem(4, steps=4)
    for make, reference in ((lambda ps: SGD(ps, lr=9.0, momentum=0.9), sgd_reference),
                            (lambda ps: Adam(ps, lr=9.0), adam_reference)):
        lrs = [0.1, 0.0, 0.3, 0.05]
        ours = run_pygrad(make, data, grads, lrs)
        expected = reference(data, grads, lrs, 0.9) if reference is sgd_reference \
            else reference(data, grads, lrs)
        assert_histories(ours, expected, 1e-15)
        # lr = 0 at the second step: nothing moved.
        assert ours[1] == ours[0]
        # A constant lr would have given something else.
        assert ours[-1] != run_pygrad(make, data, grads, [0.1] * 4)[-1]


def test_real_backward_then_step():
    """Gradients from backward(), the optimizer over an MLP's parameters."""
    random.seed(5)
    X, y = demo.make_moons(30)
    for make, reference, kwargs in (
            (lambda ps: SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3), sgd_reference,
             dict(momentum=0.9, weight_decay=1e-3)),
            (lambda ps: Adam(ps, lr=0.01, weight_decay=1e-3), adam_reference,
             dict(weight_decay=1e-3))):
        random.seed(5)
        model = pg_nn.MLP(2, [6, 6, 1])
        params = model.parameters()
        opt = make(params)
        start = [p.data for p in params]
        seen_grads, ours = [], []
        for _ in range(4):
            loss, _ = demo.svm_loss(model, X, y, Value)
            opt.zero_grad()
            loss.backward()
            seen_grads.append([p.grad for p in params])
            opt.step()
            ours.append([p.data for p in params])
        expected = reference(start, seen_grads, [opt.lr] * 4, **kwargs)
        assert_histories(ours, expected, 1e-15)
        assert ours[-1] != start


def test_sgd_in_demo_loop_equals_demo_update_bit_for_bit():
    X, y = demo.make_moons(40)
    random.seed(6)
    eager = pg_nn.MLP(2, [8, 8, 1])
    random.seed(6)
    model = pg_nn.MLP(2, [8, 8, 1])
    opt = SGD(model.parameters(), lr=1.0)
    for k in range(5):
        eager_loss, _ = demo.sgd_step(eager, X, y, Value, k)
        loss, _ = demo.svm_loss(model, X, y, Value)
        opt.zero_grad()
        loss.backward()
        opt.lr = demo.learning_rate(k)
        opt.step()
        assert loss.data == eager_loss
        assert [p.data for p in model.parameters()] == [p.data for p in eager.parameters()]


# --- torch.optim in float64 ------------------------------------------------------

def run_torch(torch, make_opt, data, grads, lrs):
    param = torch.tensor(data, dtype=torch.float64, requires_grad=True)
    opt = make_opt([param])
    history = []
    for g_step, lr in zip(grads, lrs):
        param.grad = torch.tensor(g_step, dtype=torch.float64)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        history.append(param.detach().tolist())
    return history


def assert_close_to_torch(ours, theirs):
    for k, (a_step, b_step) in enumerate(zip(ours, theirs)):
        for i, (a, b) in enumerate(zip(a_step, b_step)):
            assert abs(a - b) <= 1e-10 * max(1.0, abs(b)), (k, i, a, b)


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0)] + SGD_CASES)
def test_sgd_matches_torch(momentum, weight_decay):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    data, grads, lrs = problem(7)
    ours = run_pygrad(lambda ps: SGD(ps, lr=1.0, momentum=momentum, weight_decay=weight_decay),
                      data, grads, lrs)
    theirs = run_torch(torch, lambda ps: torch.optim.SGD(ps, lr=1.0, momentum=momentum,
                                                          weight_decay=weight_decay),
                       data, grads, lrs)
    assert_close_to_torch(ours, theirs)


@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=[str(k) for k in ADAM_CASES])
def test_adam_matches_torch(kwargs):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    data, grads, lrs = problem(8)
    ours = run_pygrad(lambda ps: Adam(ps, lr=1.0, **kwargs), data, grads, lrs)
    theirs = run_torch(torch, lambda ps: torch.optim.Adam(ps, lr=1.0, **kwargs),
                       data, grads, lrs)
    assert_close_to_torch(ours, theirs)


# --- zero_grad, bookkeeping, bad input ---------------------------------------------

@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1), lambda ps: Adam(ps)],
                         ids=["SGD", "Adam"])
def test_zero_grad_zeroes_exactly_its_parameters(make):
    params = [Value(float(i)) for i in range(10)]
    outsider = Value(3.0)
    loss = sum((p * p * outsider for p in params), Value(0.0))
    loss.backward()
    assert all(p.grad != 0.0 for p in params[1:]) and outsider.grad != 0.0
    opt = make(params)
    opt.zero_grad()
    assert [p.grad for p in params] == [0.0] * 10
    assert all(type(p.grad) is float for p in params)
    assert outsider.grad == sum(i * i for i in range(10))
    # Stepping with zero grads moves nothing (no weight decay).
    opt.step()
    assert [p.data for p in params] == [float(i) for i in range(10)]


def test_optimizer_keeps_its_parameters_alive():
    def make():
        ps = [Value(1.0), Value(2.0)]
        return SGD(ps, lr=0.5)

    opt = make()
    gc.collect()
    pygrad.live_nodes()  # releases dead Values' nodes
    for p in opt.params:
        p.grad = 1.0
    opt.step()
    assert [p.data for p in opt.params] == [0.5, 1.5]


def test_parameters_from_a_generator():
    params = [Value(1.0), Value(-1.0)]
    opt = SGD((p for p in params), lr=0.25)
    for p in params:
        p.grad = 2.0
    opt.step()
    assert [p.data for p in params] == [0.5, -1.5]


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1), lambda ps: SGD(ps, 0.1, 0.9),
                                  lambda ps: Adam(ps), lambda ps: Adam(ps, lr=0.1)],
                         ids=["SGD", "SGD-momentum", "Adam", "Adam-lr"])
def test_empty_parameter_list_raises_value_error(make):
    with pytest.raises(ValueError):
        make([])
    with pytest.raises(ValueError):
        make(iter(()))
    with pytest.raises(ValueError):
        make(pg_nn.Module().parameters())


@pytest.mark.parametrize("bad", [[1.0], [Value(1.0), 2.0], ["w"], [None], [[Value(1.0)]],
                                 [Value(1.0), object()]],
                         ids=["float", "mixed", "str", "None", "nested", "object"])
@pytest.mark.parametrize("cls", [SGD, Adam])
def test_non_value_parameters_raise_type_error(cls, bad):
    with pytest.raises(TypeError):
        cls(bad, lr=0.1)


def test_non_value_torch_tensor_raises_type_error():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    with pytest.raises(TypeError):
        SGD([torch.zeros(2, dtype=torch.float64, requires_grad=True)], lr=0.1)
