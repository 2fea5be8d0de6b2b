"""Replay's dense groups (issue 11): a layer over a batch, recorded as DOT
nodes, replays as batched kernels, and every node's value and grad is still
the eager graph's, bit for bit.

Each check builds the same graph twice: once on input leaves, recorded as a
Replay and fed; once eagerly from fresh leaves, with backward().  Both tapes
list the nodes in the same order, so position by position every node's data
and grad must have the same 64 bits (-0.0 is not 0.0).  Each workload also
checks that the replay really runs dense groups (pg_tape_groups), so that a
plan falling back to node-by-node would not pass unnoticed."""
import importlib.util
import pathlib
import random
import struct

import pytest
from hypothesis import given, settings, strategies as st

from pygrad import Replay, Value
from pygrad._core import lib
from pygrad.engine import _Tape
from pygrad.nn import MLP, Layer
from pygrad.optim import SGD

from micrograd_demo import svm_loss_on


def bits(x):
    return struct.pack("<d", x)


def node_bits(tape_id):
    """(data bits, grad bits) of every node of a tape, in tape order."""
    n = lib.pg_tape_length(tape_id)
    handles = [lib.pg_tape_node(tape_id, i) for i in range(n)]
    return [bits(lib.pg_data(h)) for h in handles], [bits(lib.pg_grad(h)) for h in handles]


def assert_same_nodes(replay, eager_root, what):
    eager = _Tape(eager_root)
    try:
        rd, rg = node_bits(replay._tape.id)
        ed, eg = node_bits(eager.id)
        assert len(rd) == len(ed), what
        bad = [i for i in range(len(rd)) if rd[i] != ed[i]]
        assert not bad, f"{what}: {len(bad)} values differ, first at node {bad[0]}"
        bad = [i for i in range(len(rg)) if rg[i] != eg[i]]
        assert not bad, f"{what}: {len(bad)} grads differ, first at node {bad[0]}"
    finally:
        eager.free()


def _load_example(name):
    """examples/<name>.py as a module."""
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hinge_loss = _load_example("digits").multiclass_hinge_loss  # the example's own loss


def leaves(rows, width):
    return [[Value(0.0) for _ in range(width)] for _ in range(rows)]


def check_training(model, loss_fn, rows, feeds, *, inputs_require_grad=True, min_groups=1,
                   lr=0.05, swept=False):
    """Replay `loss_fn(model, *rows)` (rows: lists of lists of input leaves) and
    the eager graph side by side for each feed (flat lists, rows in order),
    with SGD steps in between: every node the same, every step.  swept: plan
    as Replay does (after a sweep has let go of the graph's temporaries, so
    that the plan lays the groups' nodes out row by row), not at once."""
    flat = [v for group in rows for row in group for v in row]
    replay = Replay(loss_fn(model, *rows), inputs=flat, inputs_require_grad=inputs_require_grad)
    groups = replay.dense_groups if swept else lib.pg_tape_groups(replay._tape.id)
    assert groups >= min_groups
    opt = SGD(model.parameters(), lr=lr)
    for k, feed in enumerate(feeds):
        replay.feed(feed)
        replay.forward()
        replay.backward()
        values = iter(feed)
        eager_rows = [[[Value(next(values)) for _ in row] for row in group] for group in rows]
        eager = loss_fn(model, *eager_rows)
        model.zero_grad()
        eager.backward()
        if not inputs_require_grad:  # the replay gives inputs no grad: compare with none
            for group in eager_rows:
                for row in group:
                    for v in row:
                        v.grad = 0.0
        assert_same_nodes(replay, eager, f"step {k}")
        opt.step()
    replay.close()


def moons_like(rng, n):
    xs = [[rng.uniform(-1.5, 2.5), rng.uniform(-1, 1.5)] for _ in range(n)]
    ys = [[rng.choice([-1.0, 1.0])] for _ in range(n)]
    return xs, ys


@pytest.mark.parametrize("inputs_require_grad", [True, False])
def test_demo_graph_replays_bit_for_bit(inputs_require_grad):
    rng = random.Random(5)
    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    xs, ys = leaves(100, 2), leaves(100, 1)
    feeds = []
    for _ in range(3):
        X, Y = moons_like(rng, 100)
        feeds.append([v for r in X for v in r] + [v for r in Y for v in r])
    check_training(model, lambda m, x, y: svm_loss_on(m, x, [r[0] for r in y])[0], [xs, ys], feeds,
                   inputs_require_grad=inputs_require_grad, min_groups=3, lr=0.5)


def one_hot(rng, n, classes):
    rows = []
    for _ in range(n):
        row = [0.0] * classes
        row[rng.randrange(classes)] = 1.0
        rows.append(row)
    return rows


@pytest.mark.parametrize("inputs_require_grad", [True, False])
def test_digits_graph_replays_bit_for_bit(inputs_require_grad):
    rng = random.Random(6)
    random.seed(1337)
    model = MLP(64, [32, 10])
    xs, ts = leaves(100, 64), leaves(100, 10)
    feeds = []
    for _ in range(2):
        X = [[rng.randrange(17) / 16.0 for _ in range(64)] for _ in range(100)]
        feeds.append([v for r in X for v in r] + [v for r in one_hot(rng, 100, 10) for v in r])
    check_training(model, hinge_loss, [xs, ts], feeds, inputs_require_grad=inputs_require_grad,
                   min_groups=2, lr=0.01)


def test_batch_1000_graph_replays_bit_for_bit():
    rng = random.Random(7)
    random.seed(1337)
    model = MLP(64, [128, 10])
    xs, ts = leaves(1000, 64), leaves(1000, 10)
    X = [[rng.gauss(0.0, 1.0) for _ in range(64)] for _ in range(1000)]
    feed = [v for r in X for v in r] + [v for r in one_hot(rng, 1000, 10) for v in r]
    check_training(model, hinge_loss, [xs, ts], [feed], inputs_require_grad=False, min_groups=2,
                   lr=0.01)


@pytest.mark.parametrize("batch", [16, 24, 13])
def test_layers_laid_out_row_by_row_replay_bit_for_bit(batch):
    """Planned after the sweep, a layer's activations lie row by row, and the
    next layer reads them as its inputs and adds its input grads into them in
    place, rows in reverse (when the batch is a multiple of 8; 13 is not)."""
    rng = random.Random(11)
    random.seed(1337)
    model = MLP(12, [16, 10])
    xs, ts = leaves(batch, 12), leaves(batch, 10)
    feeds = [[rng.gauss(0.0, 1.0) for _ in range(batch * 12)] +
             [v for r in one_hot(rng, batch, 10) for v in r] for _ in range(2)]
    check_training(model, hinge_loss, [xs, ts], feeds, inputs_require_grad=False, min_groups=2,
                   swept=True)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "linear"])
def test_fused_activations_replay_bit_for_bit(activation):
    """A Layer without its ReLU, then an activation on each output: the
    activation runs inside the group (or none: a linear layer)."""
    rng = random.Random(8)
    random.seed(3)
    layer1, layer2 = Layer(3, 5, nonlin=False), Layer(5, 2, nonlin=False)

    def act(v):
        return v if activation == "linear" else getattr(v, activation)()

    def loss(_, xs):
        total = 0.0
        for x in xs:
            hidden = [act(h) for h in layer1(x)]
            out = layer2(hidden)
            total = total + (out[0] - 0.5) ** 2 + out[1] * out[1]
        return total

    class Both:
        def parameters(self):
            return layer1.parameters() + layer2.parameters()

        def zero_grad(self):
            for p in self.parameters():
                p.grad = 0.0

    xs = leaves(12, 3)
    feeds = [[rng.uniform(-2, 2) for _ in range(36)] for _ in range(3)]
    check_training(Both(), loss, [xs], feeds, min_groups=2)


def test_negative_zeros_keep_their_sign():
    """-0.0 biases, weights and inputs: sums of signed zeros, bit for bit (a
    broadcast done as 0.0 + w would turn -0.0 into 0.0)."""
    random.seed(4)
    layer = Layer(2, 4, nonlin=False)
    for n in layer.neurons:
        n.b.data = -0.0
        n.w[0].data = -0.0
    xs = leaves(8, 2)

    def loss(_, xs):
        return sum(o * 0.0 for x in xs for o in layer(x))

    feeds = [[0.0, -0.0] * 8, [-0.0, 0.0] * 8]
    check_training(layer, loss, [xs], feeds, min_groups=1, lr=0.0)


def test_a_group_whose_weight_grads_interleave_is_dissolved_and_still_exact():
    """The L2 term added between two samples' losses puts a non-group term in
    the middle of every weight's sum: no order can keep it and run the layer
    as one group, so the plan runs those nodes alone, exactly."""
    rng = random.Random(9)
    random.seed(5)
    model = MLP(3, [4, 1])

    def loss(m, xs):
        scores = [m(x) for x in xs]
        first = sum(s * s for s in scores[: len(scores) // 2])
        rest = sum(s * s for s in scores[len(scores) // 2:])
        return (first + 0.01 * sum(p * p for p in m.parameters())) + rest

    xs = leaves(8, 3)
    replay = Replay(loss(model, xs), inputs=[v for r in xs for v in r])
    assert lib.pg_tape_groups(replay._tape.id) == 0  # both layers' weights interleave
    replay.close()
    feeds = [[rng.uniform(-1, 1) for _ in range(24)] for _ in range(2)]
    check_training(model, loss, [xs], feeds, min_groups=0)


def test_partial_grids_and_shared_cells_run_node_by_node_exactly():
    """A neuron applied to some samples only, and an input row holding one
    Value twice: not groups; the replay is still exact."""
    random.seed(6)
    layer = Layer(2, 3, nonlin=True)
    a, b = Value(0.0), Value(0.0)

    def loss(_, rows):
        (x, y), = rows
        twice = layer([x, x])  # the same Value in both inputs
        partial = layer.neurons[0]([y, x])
        return sum(twice) + partial

    check_training(layer, loss, [[[a, b]]], [[0.5, -1.5], [2.0, 0.25]], min_groups=0)


@st.composite
def mlp_cases(draw):
    nin = draw(st.integers(1, 5))
    nouts = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    batch = draw(st.integers(1, 11))
    loss_kind = draw(st.sampled_from(["svm", "squares", "hinge"]))
    if loss_kind == "svm":
        nouts[-1] = 1
    elif loss_kind == "hinge":
        nouts[-1] = max(nouts[-1], 2)  # a model of one output returns a Value, not a list
    seed = draw(st.integers(0, 2**16))
    inputs_require_grad = draw(st.booleans())
    return nin, nouts, batch, loss_kind, seed, inputs_require_grad


@settings(max_examples=40, deadline=None)
@given(mlp_cases())
def test_any_mlp_and_batch_replays_bit_for_bit(case):
    nin, nouts, batch, loss_kind, seed, inputs_require_grad = case
    rng = random.Random(seed)
    random.seed(seed)
    model = MLP(nin, nouts)
    xs = leaves(batch, nin)
    ts = leaves(batch, nouts[-1])

    def loss(m, xs, ts):
        if loss_kind == "svm":
            return svm_loss_on(m, xs, [t[0] for t in ts])[0]
        if loss_kind == "hinge":
            return hinge_loss(m, xs, ts)
        outs = [m(x) for x in xs]
        outs = [o if isinstance(o, list) else [o] for o in outs]
        return sum((o - t) ** 2 for os_, tr in zip(outs, ts) for o, t in zip(os_, tr))

    feeds = []
    for _ in range(2):
        X = [[rng.choice([rng.uniform(-3, 3), 0.0, -0.0]) for _ in range(nin)]
             for _ in range(batch)]
        if loss_kind == "hinge":
            T = one_hot(rng, batch, nouts[-1])
        else:
            T = [[rng.choice([-1.0, 1.0]) for _ in range(nouts[-1])] for _ in range(batch)]
        feeds.append([v for r in X for v in r] + [v for r in T for v in r])
    check_training(model, loss, [xs, ts], feeds, inputs_require_grad=inputs_require_grad,
                   min_groups=0, lr=0.1)


def test_walking_a_replayed_graph_sees_every_node_as_the_tape_has_it():
    """Planning lays the replayed nodes out again in memory; walking the
    graph through _prev afterwards meets the same nodes, values and grads."""
    random.seed(10)
    model = MLP(2, [6, 1])
    xs, ys = leaves(8, 2), leaves(8, 1)
    loss = svm_loss_on(model, xs, [r[0] for r in ys])[0]
    replay = Replay(loss, inputs=[v for r in xs + ys for v in r])
    replay.feed([0.1 * i - 0.4 for i in range(24)])
    replay.forward()
    replay.backward()
    assert replay.dense_groups == 2
    seen, stack = {}, [loss]
    while stack:
        v = stack.pop()
        if id(v) not in seen:
            seen[id(v)] = v
            stack.extend(v._prev)
    walked = sorted((bits(v.data), bits(v.grad)) for v in seen.values())
    data, grads = node_bits(replay._tape.id)
    assert walked == sorted(zip(data, grads))
    replay.close()
