"""pygrad.Replay (issue 4): a recorded graph replayed in C equals eager
micrograd-style training bit for bit; check mode; honest errors."""
import gc
import random
import struct
import threading

import pytest

import pygrad
import pygrad.nn as pg_nn
from pygrad import PygradError, Replay, ReplayMismatchError, Value
from pygrad.optim import SGD, Adam

import micrograd_demo as demo

SEED = 1337
STEPS = 50
BATCH = 20


@pytest.fixture(scope="module")
def moons():
    return demo.make_moons(100)


def twin_optimizers(kind, eager, model):
    """The same optimizer ("SGD" with momentum, or "Adam") over each model."""
    def make(m):
        if kind == "SGD":
            return SGD(m.parameters(), lr=1.0, momentum=0.5)
        return Adam(m.parameters(), lr=0.02)
    return make(eager), make(model)


def twin_models(seed=SEED, nouts=(16, 16, 1)):
    """Two MLPs with the same initial weights: one trained eagerly, one replayed."""
    random.seed(seed)
    eager = pg_nn.MLP(2, list(nouts))
    random.seed(seed)
    replayed = pg_nn.MLP(2, list(nouts))
    assert [p.data for p in eager.parameters()] == [p.data for p in replayed.parameters()]
    return eager, replayed


def datas(model):
    return [p.data for p in model.parameters()]


def grads(model):
    return [p.grad for p in model.parameters()]


def input_leaves(n):
    xs = [[Value(0.0), Value(0.0)] for _ in range(n)]
    ys = [Value(0.0) for _ in range(n)]
    return xs, ys, [v for row in xs for v in row] + ys


# --- replay equals eager, bit for bit ------------------------------------------

def test_full_batch_sgd_replay_equals_eager(moons):
    X, y = moons
    eager, model = twin_models()
    loss, _ = demo.svm_loss(model, X, y, Value)
    replay = Replay(loss)
    assert len(replay) > 1000
    opt = SGD(model.parameters(), lr=1.0)
    eager_losses = []
    for k in range(STEPS):
        eager_loss, _ = demo.sgd_step(eager, X, y, Value, k)  # micrograd's update loop
        eager_losses.append(eager_loss)
        assert replay.forward() == eager_loss, k
        assert loss.data == eager_loss
        replay.backward()
        assert grads(model) == grads(eager), k
        opt.lr = demo.learning_rate(k)
        opt.step()
        assert datas(model) == datas(eager), k
    assert eager_losses[-1] < 0.5 * eager_losses[0]  # it trained
    replay.close()


def test_full_batch_adam_replay_equals_eager(moons):
    X, y = moons
    eager, model = twin_models(seed=7)
    opt_eager = Adam(eager.parameters(), lr=0.01, weight_decay=1e-4)
    opt = Adam(model.parameters(), lr=0.01, weight_decay=1e-4)
    loss, _ = demo.svm_loss(model, X, y, Value)
    losses = []
    with Replay(loss) as replay:
        for k in range(STEPS):
            eager_loss, _ = demo.svm_loss(eager, X, y, Value)
            opt_eager.zero_grad()
            eager_loss.backward()
            opt_eager.step()
            losses.append(eager_loss.data)

            assert replay.forward() == eager_loss.data, k
            replay.backward()
            assert grads(model) == grads(eager), k
            opt.step()
            assert datas(model) == datas(eager), k
    assert losses[-1] < losses[0]


def minibatches(X, y, steps, seed):
    rng = random.Random(seed)
    for _ in range(steps):
        idx = rng.sample(range(len(X)), BATCH)
        yield [X[i] for i in idx], [y[i] for i in idx]


@pytest.mark.parametrize("feed_kind", ["list", "numpy"])
@pytest.mark.parametrize("opt_kind", ["SGD", "Adam"])
def test_minibatch_replay_equals_eager(moons, feed_kind, opt_kind):
    if feed_kind == "numpy":
        np = pytest.importorskip("numpy")
    X, y = moons
    eager, model = twin_models(seed=11)
    opt_eager, opt = twin_optimizers(opt_kind, eager, model)

    xs, ys, inputs = input_leaves(BATCH)
    loss, scores = demo.svm_loss_on(model, xs, ys)
    replay = Replay(loss, inputs=inputs)
    distinct_losses = set()
    for k, (Xb, yb) in enumerate(minibatches(X, y, STEPS, seed=5)):
        # Eager: a fresh graph from fresh leaves, as micrograd does it.
        xs_e = [[Value(a), Value(b)] for a, b in Xb]
        ys_e = [Value(float(label)) for label in yb]
        eager_loss, eager_scores = demo.svm_loss_on(eager, xs_e, ys_e)
        eager.zero_grad()
        eager_loss.backward()
        opt_eager.lr = opt.lr = demo.learning_rate(k) * (1.0 if opt_kind == "SGD" else 0.02)
        opt_eager.step()

        flat = [v for row in Xb for v in row] + [float(label) for label in yb]
        if feed_kind == "numpy":
            replay.feed(np.concatenate([np.asarray(Xb, dtype=np.float64).ravel(),
                                        np.asarray(yb, dtype=np.int64)]))
        else:
            replay.feed(flat)
        assert [v.data for v in inputs] == flat
        assert replay.forward() == eager_loss.data, k
        assert [s.data for s in scores] == [s.data for s in eager_scores]
        replay.backward()
        assert grads(model) == grads(eager), k
        assert [v.grad for v in inputs] == [v.grad for row in xs_e for v in row] + \
            [v.grad for v in ys_e]
        opt.step()
        assert datas(model) == datas(eager), k
        distinct_losses.add(eager_loss.data)
    assert len(distinct_losses) == STEPS  # the batches really changed
    replay.close()


def bits(values):
    """Each float's 64 bits: equal lists mean the same numbers bit for bit
    (-0.0 is not 0.0, and a NaN equals the same NaN)."""
    return [struct.pack("<d", v) for v in values]


@pytest.mark.parametrize("opt_kind", ["SGD", "Adam"])
def test_inputs_require_grad_false_skips_only_the_inputs(moons, opt_kind):
    """Replay(..., inputs_require_grad=False): the inputs' grads stay 0, every
    other grad is eager's, bit for bit, step after step."""
    X, y = moons
    eager, model = twin_models(seed=12)
    opt_eager, opt = twin_optimizers(opt_kind, eager, model)
    xs, ys, inputs = input_leaves(BATCH)
    loss, scores = demo.svm_loss_on(model, xs, ys)
    replay = Replay(loss, inputs=inputs, inputs_require_grad=False)
    assert replay.inputs_require_grad is False
    for k, (Xb, yb) in enumerate(minibatches(X, y, 10, seed=6)):
        xs_e = [[Value(a), Value(b)] for a, b in Xb]
        ys_e = [Value(float(label)) for label in yb]
        eager_loss, eager_scores = demo.svm_loss_on(eager, xs_e, ys_e)
        eager.zero_grad()
        eager_loss.backward()
        opt_eager.step()

        replay.feed([v for row in Xb for v in row] + [float(label) for label in yb])
        assert bits([replay.forward()]) == bits([eager_loss.data]), k
        replay.backward()
        assert bits(grads(model)) == bits(grads(eager)), k
        assert bits([s.grad for s in scores]) == bits([s.grad for s in eager_scores]), k
        assert all(v.grad == 0.0 for v in inputs)
        opt.step()
        assert bits(datas(model)) == bits(datas(eager)), k
    replay.close()


def test_inputs_require_grad_false_keeps_the_root_and_non_leaf_inputs():
    a, b = Value(2.0), Value(3.0)
    ab = a * b
    out = ab + a
    replay = Replay(out, inputs=[a, ab, out], inputs_require_grad=False)
    replay.forward()
    replay.backward()
    # a is a leaf input: no grad; ab and out are not leaves: they pass grads on
    assert (a.grad, b.grad, ab.grad, out.grad) == (0.0, 2.0, 1.0, 1.0)


def test_replay_sees_parameter_and_input_changes_made_in_python():
    a, b = Value(2.0), Value(3.0)
    out = (a * b + a ** 2).relu() - b.exp() / a + b.log() + a.tanh() * b.sigmoid()
    replay = Replay(out, inputs=[a, b])
    for pair in ([1.5, 0.25], [4.0, 9.0], [0.1, 0.2]):
        replay.feed(pair)
        x, yv = Value(pair[0]), Value(pair[1])
        eager = (x * yv + x ** 2).relu() - yv.exp() / x + yv.log() + x.tanh() * yv.sigmoid()
        assert replay.forward() == eager.data
        replay.backward()
        eager.backward()
        assert (a.grad, b.grad) == (x.grad, yv.grad)
    a.data = 0.75  # set directly, not fed
    x, yv = Value(0.75), Value(0.2)
    eager = (x * yv + x ** 2).relu() - yv.exp() / x + yv.log() + x.tanh() * yv.sigmoid()
    assert replay.forward() == eager.data


def test_backward_zeroes_before_accumulating():
    a = Value(3.0)
    out = a * a
    replay = Replay(out, inputs=[a])
    replay.backward()
    replay.backward()  # a second backward does not add: grads are recomputed
    assert a.grad == 6.0 and out.grad == 1.0


# --- check mode --------------------------------------------------------------------

def test_check_mode_passes_for_a_faithful_graph(moons):
    X, y = moons
    random.seed(3)
    model = pg_nn.MLP(2, [8, 8, 1])
    xs, ys, inputs = input_leaves(BATCH)
    build = lambda: demo.svm_loss_on(model, xs, ys)[0]  # noqa: E731
    replay = Replay(build(), inputs=inputs, check=build)
    opt = SGD(model.parameters(), lr=0.5)
    live = []
    for Xb, yb in minibatches(X, y, 6, seed=9):
        replay.feed([v for row in Xb for v in row] + list(yb))
        value = replay.forward()  # runs the eager graph beside it: no mismatch
        assert value == build().data
        replay.backward()
        opt.step()
        live.append(pygrad.live_nodes())
    assert len(set(live[1:])) == 1  # the eager graphs it checked against were freed


def flip_graph():
    x, w = Value(2.0), Value(3.0)

    def build():
        a = x * w
        return (a if a.data > 0 else -a) + 1  # Python control flow on data

    return x, w, build


def test_check_mode_raises_when_control_flow_depends_on_data():
    x, w, build = flip_graph()
    replay = Replay(build(), inputs=[x], check=build)
    replay.feed([1.5])
    assert replay.forward() == 1.5 * 3.0 + 1  # same branch: fine
    replay.feed([-1.0])  # a * w < 0: eager takes the other branch
    with pytest.raises(ReplayMismatchError) as info:
        replay.forward()
    assert isinstance(info.value, PygradError) and isinstance(info.value, AssertionError)
    assert str(info.value)
    # Without check mode the replay silently keeps the recorded branch (the
    # documented limit of tracing): a different number from eager's.
    x.data = 2.0
    plain = Replay(build(), inputs=[x])
    plain.feed([-1.0])
    assert plain.forward() == -3.0 + 1
    assert build().data == 3.0 + 1


def test_check_mode_catches_a_changing_constant():
    x = Value(1.0)
    scale = [2.0]
    build = lambda: x * scale[0]  # noqa: E731  a Python float baked in as a constant
    replay = Replay(build(), inputs=[x], check=build)
    replay.feed([3.0])
    assert replay.forward() == 6.0
    scale[0] = 5.0
    with pytest.raises(ReplayMismatchError):
        replay.forward()


# --- errors ------------------------------------------------------------------------

def test_custom_python_op_cannot_be_recorded():
    gc.collect()
    before = pygrad.live_nodes()
    x = Value(3.0)
    out = Value(x.data ** 2, (x,), "square")

    def _backward():
        x.grad += 2 * x.data * out.grad

    out._backward = _backward
    loss = out * 2 + x
    with pytest.raises(ValueError):
        Replay(loss)
    # A built-in node whose backward the user replaced is a custom op too.
    y = x * 4
    y._backward = lambda: None
    with pytest.raises(ValueError):
        Replay(y + 1)
    # Eager backward still works, and the failed recordings left nothing behind.
    loss.backward()
    assert x.grad == 2 * 2 * 3.0 + 1
    del loss, out, y, _backward, x
    gc.collect()
    assert pygrad.live_nodes() == before


def test_closed_replay_raises_pygrad_error():
    a = Value(2.0)
    replay = Replay(a * a + 1, inputs=[a])
    assert replay.forward() == 5.0
    replay.close()
    for call in (replay.forward, replay.backward, lambda: replay.feed([1.0]),
                 lambda: len(replay)):
        with pytest.raises(PygradError):
            call()
    replay.close()  # closing twice is harmless
    with Replay(a * 3, inputs=[a]) as ctx:
        assert ctx.forward() == 6.0
    with pytest.raises(PygradError):
        ctx.forward()


def test_replay_from_another_thread_raises_pygrad_error():
    a = Value(2.0)
    replay = Replay(a * a, inputs=[a])
    errors = {}

    def use():
        for name, call in (("forward", replay.forward), ("backward", replay.backward),
                           ("feed", lambda: replay.feed([4.0]))):
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - recorded and checked below
                errors[name] = exc

    t = threading.Thread(target=use)
    t.start()
    t.join(30)
    assert set(errors) == {"forward", "backward", "feed"}
    assert all(isinstance(e, PygradError) for e in errors.values())
    assert a.data == 2.0  # the other thread's feed changed nothing
    assert replay.forward() == 4.0  # still fine in its own thread
    replay.close()


@pytest.mark.parametrize("values", [[1.0], [1.0, 2.0, 3.0], [], [[1.0, 2.0]]],
                         ids=["too-few", "too-many", "empty", "nested-list"])
def test_feed_wrong_number_of_values_raises_value_error(values):
    a, b = Value(1.0), Value(2.0)
    replay = Replay(a * b, inputs=[a, b])
    with pytest.raises((ValueError, TypeError)) as info:
        replay.feed(values)
    if values != [[1.0, 2.0]]:
        assert info.type is ValueError
    assert (a.data, b.data) == (1.0, 2.0)  # all or nothing
    replay.feed((5.0, 6.0))
    assert replay.forward() == 30.0


def test_feed_numpy_wrong_size_raises_value_error():
    np = pytest.importorskip("numpy")
    a, b = Value(1.0), Value(2.0)
    replay = Replay(a * b, inputs=[a, b])
    with pytest.raises(ValueError):
        replay.feed(np.zeros(3))
    with pytest.raises(ValueError):
        replay.feed(np.zeros(1))
    replay.feed(np.array([[3.0, 4.0]]))  # any shape with the right size
    assert replay.forward() == 12.0
    replay.feed(np.array([5, 6], dtype=np.int32))  # converted to float64
    assert replay.forward() == 30.0
    replay.feed(np.arange(4.0)[::2])  # not contiguous
    assert (a.data, b.data) == (0.0, 2.0)


def make_dropped_model_replay(X, y):
    """Build a model and its loss, record them, and keep only the replay and
    one parameter: the user has dropped the model and the loss."""
    random.seed(13)
    model = pg_nn.MLP(2, [4, 4, 1])
    loss, _ = demo.svm_loss(model, X, y, Value)
    replay = Replay(loss)
    return replay, loss.data, model.layers[0].neurons[0].w[0]


def eager_reference(X, y, w00):
    random.seed(13)
    model = pg_nn.MLP(2, [4, 4, 1])
    model.layers[0].neurons[0].w[0].data = w00
    loss, _ = demo.svm_loss(model, X, y, Value)
    loss.backward()
    return loss.data, model.layers[0].neurons[0].w[0].grad


def test_replay_keeps_its_graph_alive_after_model_and_loss_are_dropped(moons):
    X, y = moons[0][:30], moons[1][:30]
    gc.collect()
    start = pygrad.live_nodes()
    replay, recorded, p = make_dropped_model_replay(X, y)
    gc.collect()
    assert pygrad.live_nodes() > start + 100  # the graph is held
    assert replay.forward() == recorded
    replay.backward()
    expected_loss, expected_grad = eager_reference(X, y, p.data)
    assert recorded == expected_loss and p.grad == expected_grad
    p.data += 0.5
    expected_loss, expected_grad = eager_reference(X, y, p.data)
    assert replay.forward() == expected_loss != recorded
    replay.backward()
    assert p.grad == expected_grad
    replay.close()
    del replay, p
    gc.collect()
    assert pygrad.live_nodes() == start


def test_close_releases_the_graph_while_the_replay_object_lives(moons):
    X, y = moons[0][:30], moons[1][:30]
    gc.collect()
    start = pygrad.live_nodes()
    replay, recorded, p = make_dropped_model_replay(X, y)
    assert replay.forward() == recorded
    del p
    replay.close()
    gc.collect()
    assert pygrad.live_nodes() == start


MATH_ERRORS = [
    ("log-negative", lambda v: v.log() * 2 + 1, 2.0, -1.0),
    ("log-zero", lambda v: (v * 3).log(), 1.0, 0.0),
    ("exp-overflow", lambda v: (v * 2).exp(), 1.0, 1000.0),
    ("pow-zero-negative", lambda v: (v + 1) ** -1, 1.0, -1.0),
    ("pow-complex", lambda v: v ** 0.5 + 1, 4.0, -4.0),
    ("div-by-zero", lambda v: 3.0 / v, 2.0, 0.0),
]


@pytest.mark.parametrize("name,build,good,bad", MATH_ERRORS, ids=[m[0] for m in MATH_ERRORS])
def test_math_error_from_fed_data_raises_eagers_exception(name, build, good, bad):
    with pytest.raises(Exception) as eager_error:
        build(Value(bad))
    x = Value(good)
    replay = Replay(build(x), inputs=[x])
    replay.feed([bad])
    with pytest.raises(Exception) as replay_error:
        replay.forward()
    assert replay_error.type is eager_error.type
    assert issubclass(replay_error.type, (ValueError, OverflowError, ZeroDivisionError))
    # Good data afterwards: the replay recovers.
    replay.feed([good])
    assert replay.forward() == build(Value(good)).data
    replay.close()


def test_replay_rejects_bad_arguments():
    with pytest.raises(TypeError):
        Replay(1.0)
    a = Value(1.0)
    with pytest.raises(TypeError):
        Replay(a * 2, inputs=[1.0])
