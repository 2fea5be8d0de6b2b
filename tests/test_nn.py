"""pygrad.nn against micrograd.nn (issue 3, contract point 8), plus what pygrad
adds: fused kernels, no_grad, pickling, state_dict, to_torch, bad input."""
import copy
import gc
import pickle
import random
import threading

import micrograd.engine as mg_engine
import micrograd.nn as mg_nn
import pytest

import pygrad
import pygrad.nn as pg_nn
from pygrad import Value
from pygrad.optim import SGD, Adam

import micrograd_demo as demo


def close(a, b, rel):
    """a and b equal to `rel` relative (exactly equal counts, zeros included)."""
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b))


def rows(n, nin, seed):
    rng = random.Random(seed)
    return [[rng.uniform(-2, 2) for _ in range(nin)] for _ in range(n)]


def build_both(seed, make):
    """The same constructor call on pygrad.nn and micrograd.nn after the same seed."""
    random.seed(seed)
    pg = make(pg_nn)
    pg_after = random.random()
    random.seed(seed)
    mg = make(mg_nn)
    mg_after = random.random()
    return pg, mg, pg_after, mg_after


# --- contract point 8: reprs, initial weights, parameters(), zero_grad ---------

CONSTRUCTORS = [
    ("Neuron(3)", lambda nn: nn.Neuron(3)),
    ("Neuron(4, nonlin=False)", lambda nn: nn.Neuron(4, nonlin=False)),
    ("Neuron(1)", lambda nn: nn.Neuron(1)),
    ("Layer(3, 2)", lambda nn: nn.Layer(3, 2)),
    ("Layer(2, 5, nonlin=False)", lambda nn: nn.Layer(2, 5, nonlin=False)),
    ("MLP(2, [16, 16, 1])", lambda nn: nn.MLP(2, [16, 16, 1])),
    ("MLP(3, [4, 5, 2])", lambda nn: nn.MLP(3, [4, 5, 2])),
    ("MLP(1, [1])", lambda nn: nn.MLP(1, [1])),
]


@pytest.mark.parametrize("name,make", CONSTRUCTORS, ids=[c[0] for c in CONSTRUCTORS])
def test_repr_matches_micrograd(name, make):
    pg, mg, _, _ = build_both(0, make)
    assert repr(pg) == repr(mg)
    assert str(pg) == str(mg)


def test_repr_strings_spelled_out():
    assert repr(pg_nn.Neuron(2)) == "ReLUNeuron(2)"
    assert repr(pg_nn.Neuron(2, nonlin=False)) == "LinearNeuron(2)"
    assert repr(pg_nn.Layer(2, 2)) == "Layer of [ReLUNeuron(2), ReLUNeuron(2)]"
    assert repr(pg_nn.MLP(2, [2, 1])) == (
        "MLP of [Layer of [ReLUNeuron(2), ReLUNeuron(2)], Layer of [LinearNeuron(2)]]")


@pytest.mark.parametrize("seed", [0, 1, 1337])
@pytest.mark.parametrize("name,make", CONSTRUCTORS, ids=[c[0] for c in CONSTRUCTORS])
def test_same_initial_weights_and_parameter_order(seed, name, make):
    pg, mg, pg_after, mg_after = build_both(seed, make)
    pg_params, mg_params = pg.parameters(), mg.parameters()
    assert len(pg_params) == len(mg_params)
    assert all(isinstance(p, Value) for p in pg_params)
    # Every parameter's data, in parameters() order, bit for bit.
    assert [p.data for p in pg_params] == [float(p.data) for p in mg_params]
    assert all(type(p.data) is float for p in pg_params)
    assert [p.grad for p in pg_params] == [0.0] * len(pg_params)
    # Same number of random.uniform calls: the generator is left in the same state.
    assert pg_after == mg_after


def test_parameters_are_the_model_values_in_micrograd_order():
    random.seed(5)
    model = pg_nn.MLP(3, [4, 2])
    expected = []
    for layer in model.layers:
        for n in layer.neurons:
            expected += n.w + [n.b]
    params = model.parameters()
    assert len(params) == 3 * 4 + 4 + 4 * 2 + 2
    assert all(p is q for p, q in zip(params, expected))
    assert model.layers[0].parameters() == [p for n in model.layers[0].neurons
                                            for p in n.w + [n.b]]
    n = model.layers[1].neurons[1]
    assert n.parameters()[-1] is n.b and n.parameters()[:-1] == n.w
    assert n.b.data == 0.0
    assert pg_nn.Module().parameters() == []


def test_module_classes_and_constructor_signatures():
    assert issubclass(pg_nn.Neuron, pg_nn.Module)
    assert issubclass(pg_nn.Layer, pg_nn.Module)
    assert issubclass(pg_nn.MLP, pg_nn.Module)
    n = pg_nn.Neuron(3, nonlin=False)
    assert n.nonlin is False and len(n.w) == 3 and isinstance(n.b, Value)
    layer = pg_nn.Layer(3, 4, nonlin=False)
    assert len(layer.neurons) == 4 and all(not n.nonlin for n in layer.neurons)
    model = pg_nn.MLP(2, [3, 3, 1])
    assert [len(layer.neurons) for layer in model.layers] == [3, 3, 1]
    assert [layer.neurons[0].nonlin for layer in model.layers] == [True, True, False]


@pytest.mark.parametrize("make", [lambda: pg_nn.MLP(2, [4, 3, 2]),
                                  lambda: pg_nn.Layer(2, 3),
                                  lambda: pg_nn.Neuron(2, nonlin=False)],
                         ids=["MLP", "Layer", "Neuron"])
def test_zero_grad_sets_every_grad_to_zero(make):
    random.seed(3)
    module = make()
    out = module([0.7, -0.4])
    outs = out if isinstance(out, list) else [out]
    loss = sum(o * (k + 1.5) for k, o in enumerate(outs)) + sum(p * p for p in module.parameters())
    loss.backward()
    assert any(p.grad != 0.0 for p in module.parameters())
    module.zero_grad()
    assert [p.grad for p in module.parameters()] == [0.0] * len(module.parameters())
    assert all(type(p.grad) is float for p in module.parameters())


# --- the demo training loop against micrograd ---------------------------------

DEMO_SEED = 1337
DEMO_STEPS = 20


@pytest.fixture(scope="module")
def moons():
    return demo.make_moons(100)


@pytest.fixture(scope="module")
def micrograd_demo_run(moons):
    """micrograd's own 20 demo steps (its cyclic garbage is collected once per
    step, with the automatic collector off, only to keep this test fast)."""
    X, y = moons
    random.seed(DEMO_SEED)
    model = mg_nn.MLP(2, [16, 16, 1])
    history = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for k in range(DEMO_STEPS):
            history.append(demo.sgd_step(model, X, y, mg_engine.Value, k))
            gc.collect()
    finally:
        if was_enabled:
            gc.enable()
    return history, [p.data for p in model.parameters()]


def test_demo_training_matches_micrograd(moons, micrograd_demo_run):
    X, y = moons
    mg_history, mg_final = micrograd_demo_run
    random.seed(DEMO_SEED)
    model = pg_nn.MLP(2, [16, 16, 1])
    history = [demo.sgd_step(model, X, y, Value, k) for k in range(DEMO_STEPS)]
    losses = [loss for loss, _ in history]
    mg_losses = [loss for loss, _ in mg_history]
    # The first step's forward pass is the same bits as micrograd's.
    assert losses[0] == mg_losses[0]
    for k, (ours, theirs) in enumerate(zip(losses, mg_losses)):
        assert close(ours, theirs, 1e-9), (k, ours, theirs)
    assert [acc for _, acc in history] == [acc for _, acc in mg_history]
    # Training did something (the trajectory is not trivially flat).
    assert losses[-1] < 0.5 * losses[0]
    final = [p.data for p in model.parameters()]
    assert all(abs(a - b) <= 1e-9 * max(1.0, abs(b)) for a, b in zip(final, mg_final))


def test_first_demo_forward_scores_bit_identical(moons):
    """Every score of the first forward pass equals micrograd's, bit for bit."""
    X, _ = moons
    random.seed(DEMO_SEED)
    pg = pg_nn.MLP(2, [16, 16, 1])
    random.seed(DEMO_SEED)
    mg = mg_nn.MLP(2, [16, 16, 1])
    pg_scores = [pg(list(map(Value, row))).data for row in X]
    mg_scores = [mg(list(map(mg_engine.Value, row))).data for row in X]
    assert pg_scores == mg_scores


# --- fused kernels against plain Value ops in micrograd's order ----------------

def unfused_neuron(n, x):
    act = sum((wi * xi for wi, xi in zip(n.w, x)), n.b)
    return act.relu() if n.nonlin else act


def unfused_layer(layer, x):
    out = [unfused_neuron(n, x) for n in layer.neurons]
    return out[0] if len(out) == 1 else out


def unfused_mlp(model, x):
    for layer in model.layers:
        x = unfused_layer(layer, x)
    return x


def as_list(out):
    return out if isinstance(out, list) else [out]


def weighted_sum(outs):
    return sum((o * (0.5 + k) for k, o in enumerate(as_list(outs))), Value(0.0))


def fused_vs_unfused(module, forward, unfused, x_data):
    """Values bit for bit; grads of parameters and inputs within 1e-12."""
    xs = [Value(v) for v in x_data]
    out = as_list(forward(xs))
    module.zero_grad()
    weighted_sum(out).backward()
    fused_values = [o.data for o in out]
    fused_param_grads = [p.grad for p in module.parameters()]
    fused_input_grads = [x.grad for x in xs]

    xs2 = [Value(v) for v in x_data]
    ref = as_list(unfused(xs2))
    module.zero_grad()
    weighted_sum(ref).backward()
    assert fused_values == [o.data for o in ref]
    for a, b in zip(fused_param_grads, [p.grad for p in module.parameters()]):
        assert close(a, b, 1e-12), (a, b)
    for a, b in zip(fused_input_grads, [x.grad for x in xs2]):
        assert close(a, b, 1e-12), (a, b)
    # Not vacuous: unless every output is a dead ReLU, gradients reached the
    # parameters and the inputs.
    if any(v != 0.0 for v in fused_values):
        assert any(g != 0.0 for g in fused_param_grads)
        assert any(g != 0.0 for g in fused_input_grads)
    return fused_values


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("nin,nouts", [(2, [16, 16, 1]), (3, [4, 5, 2]), (5, [7]), (1, [3, 1])])
def test_mlp_fused_matches_unfused(seed, nin, nouts):
    random.seed(seed)
    model = pg_nn.MLP(nin, nouts)
    values = []
    for x in rows(3, nin, seed):
        values += fused_vs_unfused(model, model, lambda xs: unfused_mlp(model, xs), x)
    assert any(v != 0.0 for v in values)


@pytest.mark.parametrize("nonlin", [True, False])
def test_layer_and_neuron_fused_match_unfused(nonlin):
    random.seed(11)
    layer = pg_nn.Layer(4, 6, nonlin=nonlin)
    values = []
    for x in rows(4, 4, 11):
        values += fused_vs_unfused(layer, layer, lambda xs: unfused_layer(layer, xs), x)
    assert any(v != 0.0 for v in values)
    neuron = pg_nn.Neuron(5, nonlin=nonlin)
    values = []
    for x in rows(6, 5, 12):
        values += fused_vs_unfused(neuron, neuron, lambda xs: unfused_neuron(neuron, xs), x)
    assert any(v != 0.0 for v in values)


def test_fused_values_bit_identical_to_micrograd_engine():
    random.seed(21)
    pg = pg_nn.MLP(4, [8, 8, 3])
    random.seed(21)
    mg = mg_nn.MLP(4, [8, 8, 3])
    for x in rows(10, 4, 21):
        assert [o.data for o in pg(x)] == [o.data for o in mg(x)]
        assert [o.data for o in pg.layers[0](x)] == [o.data for o in mg.layers[0](x)]
        assert pg.layers[0].neurons[2](x).data == mg.layers[0].neurons[2](x).data


def test_fused_outputs_are_ordinary_values():
    random.seed(8)
    model = pg_nn.MLP(3, [4, 2])
    xs = [Value(0.3), Value(-1.2), Value(2.0)]
    out = model(xs)
    assert isinstance(out, list) and len(out) == 2
    assert all(type(o) is Value for o in out)
    last = model.layers[1].neurons[0]
    # A linear neuron's output is a 'dot' over its bias, weights and inputs.
    assert out[0]._op == "dot"
    children = out[0]._prev
    assert last.b in children and all(w in children for w in last.w)
    assert len(children) == 1 + 4 + 4
    hidden = [c for c in children if c not in last.w and c != last.b]
    assert len(hidden) == 4 and all(h._op == "ReLU" for h in hidden)
    for h in hidden:
        (dot,) = h._prev
        assert dot._op == "dot"
        assert set(xs) <= dot._prev
    # Both outputs share the same hidden nodes (one forward pass, not two).
    other = model.layers[1].neurons[1]
    assert {c for c in out[1]._prev if c not in other.w and c != other.b} == set(hidden)
    # Layer and Neuron outputs.
    relu_out = model.layers[0].neurons[0](xs)
    assert relu_out._op == "ReLU" and len(relu_out._prev) == 1
    lin = pg_nn.Neuron(3, nonlin=False)(xs)
    assert lin._op == "dot" and set(xs) <= lin._prev
    # backward works from them.
    out[1].backward()
    assert out[1].grad == 1.0
    assert any(x.grad != 0.0 for x in xs)
    assert any(h.grad != 0.0 for h in hidden) or all(h.data == 0.0 for h in hidden)
    assert model.layers[1].neurons[1].b.grad == 1.0
    assert repr(out[1]).startswith("Value(data=")


def test_inputs_may_be_floats_ints_numpy_or_values():
    np = pytest.importorskip("numpy")
    random.seed(9)
    model = pg_nn.MLP(3, [5, 1])
    reference = model([Value(1.0), Value(-2.0), Value(0.5)]).data
    assert model([1.0, -2.0, 0.5]).data == reference
    assert model([1, -2, 0.5]).data == reference
    assert model((1.0, Value(-2.0), 0.5)).data == reference
    assert model(np.array([1.0, -2.0, 0.5])).data == reference
    assert model([np.float32(1.0), np.int64(-2), np.float64(0.5)]).data == reference
    layer = model.layers[0]
    assert [o.data for o in layer([1.0, -2.0, 0.5])] == \
           [o.data for o in layer([Value(1.0), Value(-2.0), Value(0.5)])]
    n = layer.neurons[1]
    assert n([1, -2.0, 0.5]).data == n([Value(1.0), Value(-2.0), Value(0.5)]).data


def test_float_inputs_get_gradient_flow_to_parameters():
    random.seed(10)
    model = pg_nn.MLP(2, [3, 1])
    out = model([0.25, -0.75])
    out.backward()
    ref = unfused_mlp(model, [Value(0.25), Value(-0.75)])
    grads = [p.grad for p in model.parameters()]
    model.zero_grad()
    ref.backward()
    assert out.data == ref.data
    assert all(close(a, p.grad, 1e-12) for a, p in zip(grads, model.parameters()))


# --- no_grad --------------------------------------------------------------------

@pytest.mark.parametrize("nin,nouts", [(2, [16, 16, 1]), (3, [4, 5])])
def test_no_grad_mlp_forward_leaves_only_outputs(nin, nouts):
    random.seed(2)
    model = pg_nn.MLP(nin, nouts)
    x = [0.5] * nin
    grad_mode = as_list(model(x))
    before = pygrad.live_nodes()
    with pygrad.no_grad():
        out = as_list(model(x))
    assert pygrad.live_nodes() - before == len(out) == nouts[-1]
    assert all(o._prev == set() and o._op == "" for o in out)
    assert [o.data for o in out] == [o.data for o in grad_mode]
    # In grad mode the same call records a graph (so the count above means something).
    before = pygrad.live_nodes()
    recorded = as_list(model(x))
    assert pygrad.live_nodes() - before > len(recorded)
    assert all(o._prev for o in recorded)


def test_no_grad_layer_neuron_and_plain_ops():
    random.seed(4)
    layer = pg_nn.Layer(3, 4)
    a, b = Value(2.0), Value(-3.0)
    before = pygrad.live_nodes()
    with pygrad.no_grad():
        outs = layer([1.0, 2.0, 3.0])
        single = layer.neurons[0]([1.0, 2.0, 3.0])
        c = (a * b + 1).relu() + a ** 2 - b / a
    assert pygrad.live_nodes() - before == len(outs) + 2
    assert c.data == (a * b + 1).relu().data + (a ** 2).data - (b / a).data
    assert c._prev == set() and single._prev == set()
    assert single.data == outs[0].data
    c.backward()
    assert c.grad == 1.0 and a.grad == 0.0 and b.grad == 0.0


def test_no_grad_as_decorator():
    @pygrad.no_grad()
    def infer(model, x):
        return model(x)

    random.seed(6)
    model = pg_nn.MLP(2, [3, 1])
    out = infer(model, [0.1, 0.2])
    assert out._prev == set()
    assert out.data == model([0.1, 0.2]).data
    # Grad mode is back after the call.
    assert model([0.1, 0.2])._prev
    assert len((Value(1.0) * Value(2.0))._prev) == 2


def test_no_grad_nested():
    a = Value(3.0)
    with pygrad.no_grad():
        with pygrad.no_grad():
            assert (a * 2)._prev == set()
        assert (a * 2)._prev == set()  # still off after the inner block
        ng = pygrad.no_grad()
        with ng:
            with ng:  # the same object, re-entered
                assert (a + 1)._prev == set()
            assert (a + 1)._prev == set()
        assert (a + 1)._prev == set()
    assert len((a * 2)._prev) == 2


def test_no_grad_restores_grad_mode_after_exception():
    a = Value(1.5)
    with pytest.raises(RuntimeError, match="boom"):
        with pygrad.no_grad():
            assert (a * a)._prev == set()
            raise RuntimeError("boom")
    assert (a * a)._prev == {a}

    @pygrad.no_grad()
    def fails():
        raise KeyError("x")

    with pytest.raises(KeyError):
        fails()
    assert len((a + Value(1.0))._prev) == 2


def test_no_grad_is_per_thread():
    a, b = Value(2.0), Value(5.0)
    result = {}

    # Another thread records while this one is in no_grad.
    entered, checked = threading.Event(), threading.Event()

    def records():
        entered.wait(10)
        result["other"] = len((a * b)._prev)
        checked.set()

    t = threading.Thread(target=records)
    t.start()
    with pygrad.no_grad():
        entered.set()
        assert checked.wait(10)
        result["mine"] = (a * b)._prev
    t.join(10)
    assert result["other"] == 2
    assert result["mine"] == set()

    # And this thread records while another is in no_grad.
    entered, release = threading.Event(), threading.Event()

    def inference():
        with pygrad.no_grad():
            entered.set()
            release.wait(10)
            result["other_nograd"] = (a * b)._prev

    t = threading.Thread(target=inference)
    t.start()
    assert entered.wait(10)
    result["mine_grad"] = len((a * b)._prev)
    release.set()
    t.join(10)
    assert result["mine_grad"] == 2
    assert result["other_nograd"] == set()


def test_no_grad_decorated_function_used_by_two_threads():
    a_inside, b_inside, a_done = threading.Event(), threading.Event(), threading.Event()

    @pygrad.no_grad()
    def infer(first):
        if first:
            a_inside.set()
            b_inside.wait(10)
        else:
            b_inside.set()
            a_done.wait(10)
        return (Value(1.0) * 2)._prev

    result = {}

    def thread_a():  # calls infer from inside its own no_grad block
        with pygrad.no_grad():
            result["a_in_call"] = infer(True)
            result["a_after_call"] = (Value(1.0) * 2)._prev  # still in no_grad here
        a_done.set()

    def thread_b():  # calls infer in grad mode, while A is inside it
        a_inside.wait(10)
        result["b_in_call"] = infer(False)
        result["b_after_call"] = len((Value(1.0) * 2)._prev)  # grad mode again

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert result["a_in_call"] == set() and result["b_in_call"] == set()
    assert result["a_after_call"] == set()
    assert result["b_after_call"] == 2  # a leaf and the constant 2: recorded


# --- pickle and deepcopy ----------------------------------------------------------

class TaggedValue(Value):
    """A user's subclass with its own attributes."""


def roundtrips():
    return [("pickle", lambda obj: pickle.loads(pickle.dumps(obj))),
            ("pickle-protocol-0", lambda obj: pickle.loads(pickle.dumps(obj, protocol=0))),
            ("deepcopy", copy.deepcopy)]


ROUNDTRIPS = roundtrips()
ROUNDTRIP_IDS = [name for name, _ in ROUNDTRIPS]


@pytest.mark.parametrize("name,roundtrip", ROUNDTRIPS, ids=ROUNDTRIP_IDS)
def test_value_roundtrip_keeps_data_and_grad(name, roundtrip):
    v = Value(-2.75)
    v.grad = 0.125
    w = roundtrip(v)
    assert type(w) is Value
    assert (w.data, w.grad) == (-2.75, 0.125)
    assert w is not v and w != v  # a new node, not the same one
    w.data = 1.0
    assert v.data == -2.75
    # A node from a graph comes back with its data and grad.
    a, b = Value(3.0), Value(4.0)
    c = a * b + a
    c.backward()
    c2 = roundtrip(c)
    assert (c2.data, c2.grad) == (15.0, 1.0)
    assert (c2 * 2).data == 30.0
    # Shared Values stay shared within one round trip.
    pair = roundtrip([a, a])
    assert pair[0] is pair[1] and pair[0].data == 3.0 and pair[0].grad == 5.0


@pytest.mark.parametrize("name,roundtrip", ROUNDTRIPS, ids=ROUNDTRIP_IDS)
def test_value_subclass_roundtrip_keeps_attributes(name, roundtrip):
    v = TaggedValue(1.25)
    v.label = "weight"
    v.meta = {"layer": 3}
    v.grad = -4.0
    w = roundtrip(v)
    assert type(w) is TaggedValue
    assert (w.data, w.grad, w.label, w.meta) == (1.25, -4.0, "weight", {"layer": 3})
    assert (w + 1).data == 2.25


class SlottedValue(Value):
    """A user's subclass that declares its attributes in __slots__."""
    __slots__ = ("label",)


@pytest.mark.parametrize("name,roundtrip", ROUNDTRIPS, ids=ROUNDTRIP_IDS)
def test_value_subclass_with_slots_roundtrip_keeps_attributes(name, roundtrip):
    v = SlottedValue(2.5)
    v.label = "bias"
    w = roundtrip(v)
    assert type(w) is SlottedValue and w.data == 2.5
    assert getattr(w, "label", "<lost>") == "bias"


@pytest.mark.parametrize("name,roundtrip", ROUNDTRIPS, ids=ROUNDTRIP_IDS)
@pytest.mark.parametrize("nin,make", [(2, lambda: pg_nn.MLP(2, [16, 16, 1])),
                                      (3, lambda: pg_nn.MLP(3, [4, 2])),
                                      (3, lambda: pg_nn.Layer(3, 4)),
                                      (3, lambda: pg_nn.Neuron(3))],
                         ids=["MLP-demo", "MLP-2out", "Layer", "Neuron"])
def test_model_roundtrip(name, roundtrip, nin, make):
    random.seed(17)
    model = make()
    for p in model.parameters():
        p.data += 0.25  # non-zero biases too
    # An input where not every output is a dead ReLU.
    x = next(x for x in rows(20, nin, 3) if any(o.data > 0 for o in as_list(model(x))))
    out = model(x)
    weighted_sum(out).backward()
    clone = roundtrip(model)
    assert type(clone) is type(model)
    assert clone.state_dict() == model.state_dict()
    assert repr(clone) == repr(model)
    assert [p.grad for p in clone.parameters()] == [p.grad for p in model.parameters()]
    assert any(p.grad != 0.0 for p in clone.parameters())
    assert [o.data for o in as_list(clone(x))] == [o.data for o in as_list(out)]
    # The clone is independent of the original.
    assert not any(p is q or p == q for p, q in zip(clone.parameters(), model.parameters()))
    clone.parameters()[-1].data += 10.0  # the last bias: moves the last output
    assert clone.parameters()[-1].data != model.parameters()[-1].data
    assert [o.data for o in as_list(clone(x))] != [o.data for o in as_list(model(x))]


def test_model_roundtrip_then_structural_edit_is_seen():
    random.seed(18)
    model = pg_nn.MLP(2, [3, 1])
    x = [0.5, 0.5]
    model(x)
    clone = pickle.loads(pickle.dumps(model))
    clone(x)
    new = Value(4.0)
    clone.layers[0].neurons[0].w[0] = new
    assert clone(x).data == reference_output(clone, x)
    assert clone(x).data != model(x).data or clone.layers[0].neurons[0](x).data == 0.0


def train_steps(model, opt, X, y, steps):
    losses = []
    for _ in range(steps):
        loss, _ = demo.svm_loss(model, X, y, Value)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.data)
    return losses


OPTIMIZERS = [
    ("SGD-momentum", lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3)),
    ("Adam", lambda ps: Adam(ps, lr=0.02, betas=(0.8, 0.95), eps=1e-7, weight_decay=1e-3)),
]


@pytest.mark.parametrize("name,roundtrip", ROUNDTRIPS, ids=ROUNDTRIP_IDS)
@pytest.mark.parametrize("opt_name,make_opt", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_optimizer_and_model_roundtrip_mid_training(name, roundtrip, opt_name, make_opt, moons):
    X, y = moons[0][:24], moons[1][:24]
    random.seed(23)
    model = pg_nn.MLP(2, [8, 8, 1])
    opt = make_opt(model.parameters())
    train_steps(model, opt, X, y, 3)
    model2, opt2 = roundtrip((model, opt))
    # The optimizer's parameters are the restored model's own Values.
    assert len(opt2.params) == len(model2.parameters())
    assert all(p is q for p, q in zip(opt2.params, model2.parameters()))
    assert model2.state_dict() == model.state_dict()
    # A fresh optimizer would continue differently: the saved state matters.
    model3 = copy.deepcopy(model)
    fresh = make_opt(model3.parameters())
    train_steps(model3, fresh, X, y, 3)

    losses = train_steps(model, opt, X, y, 3)
    losses2 = train_steps(model2, opt2, X, y, 3)
    assert losses2 == losses
    assert [p.data for p in model2.parameters()] == [p.data for p in model.parameters()]
    assert [p.data for p in model3.parameters()] != [p.data for p in model.parameters()]


# --- state_dict / load_state_dict ---------------------------------------------------

def test_state_dict_names_and_plain_floats():
    random.seed(31)
    model = pg_nn.MLP(2, [16, 16, 1])
    sd = model.state_dict()
    assert len(sd) == len(model.parameters()) == 2 * 16 + 16 + 16 * 16 + 16 + 16 + 1
    assert all(type(k) is str for k in sd)
    assert all(type(v) is float for v in sd.values())
    assert sd["layers.0.neurons.3.w.1"] == model.layers[0].neurons[3].w[1].data
    assert sd["layers.1.neurons.15.w.15"] == model.layers[1].neurons[15].w[15].data
    assert sd["layers.2.neurons.0.b"] == model.layers[2].neurons[0].b.data
    assert "layers.0.neurons.0.w.2" not in sd
    assert [sd[k] for k in sd] == [p.data for p in model.parameters()]
    assert pg_nn.Layer(2, 2).state_dict().keys() == {
        "neurons.0.w.0", "neurons.0.w.1", "neurons.0.b",
        "neurons.1.w.0", "neurons.1.w.1", "neurons.1.b"}
    assert set(pg_nn.Neuron(2).state_dict()) == {"w.0", "w.1", "b"}
    # A copy: changing the dict does not change the model, and vice versa.
    sd["layers.2.neurons.0.b"] = 99.0
    assert model.layers[2].neurons[0].b.data != 99.0
    model.layers[2].neurons[0].b.data = 7.0
    assert model.state_dict()["layers.2.neurons.0.b"] == 7.0


def test_load_state_dict_round_trip_into_fresh_model():
    random.seed(32)
    trained = pg_nn.MLP(3, [5, 4, 2])
    for p in trained.parameters():
        p.data += 0.5  # not the initial values of any seed
    sd = trained.state_dict()
    random.seed(99)
    fresh = pg_nn.MLP(3, [5, 4, 2])
    assert fresh.state_dict() != sd
    before = fresh.parameters()
    fresh.load_state_dict(pickle.loads(pickle.dumps(sd)))
    assert fresh.state_dict() == sd
    assert all(p is q for p, q in zip(before, fresh.parameters()))  # in place
    for x in rows(5, 3, 32):
        assert [o.data for o in fresh(x)] == [o.data for o in trained(x)]
    # ints and numpy scalars load as floats
    np = pytest.importorskip("numpy")
    fresh.load_state_dict({k: (np.float64(v) if i % 2 else int(i)) for i, (k, v)
                           in enumerate(sd.items())})
    assert all(type(v) is float for v in fresh.state_dict().values())
    assert fresh.state_dict()["layers.0.neurons.0.w.0"] == 0.0


def test_load_state_dict_unknown_or_missing_keys_raise_key_error():
    random.seed(33)
    model = pg_nn.MLP(2, [3, 1])
    sd = model.state_dict()
    snapshot = dict(sd)

    with pytest.raises(KeyError, match="layers.5.neurons.0.b"):
        model.load_state_dict({**sd, "layers.5.neurons.0.b": 1.0})
    missing = dict(sd)
    del missing["layers.1.neurons.0.w.2"]
    with pytest.raises(KeyError, match=r"layers\.1\.neurons\.0\.w\.2"):
        model.load_state_dict(missing)
    with pytest.raises(KeyError):
        model.load_state_dict({})
    assert model.state_dict() == snapshot  # nothing was loaded


@pytest.mark.parametrize("bad", ["1.0", None, [1.0], 1 + 2j, object()],
                         ids=["str", "None", "list", "complex", "object"])
def test_load_state_dict_non_numeric_raises_type_error(bad):
    random.seed(34)
    model = pg_nn.MLP(2, [3, 1])
    sd = model.state_dict()
    snapshot = dict(sd)
    sd = {k: v + 1.0 for k, v in sd.items()}
    sd["layers.0.neurons.1.w.0"] = bad
    with pytest.raises(TypeError):
        model.load_state_dict(sd)
    assert model.state_dict() == snapshot  # all or nothing


class UserModel(pg_nn.Module):
    """A model written the micrograd way: a Module that defines parameters()."""

    def __init__(self):
        self.hidden = pg_nn.Layer(2, 3)
        self.out = pg_nn.Neuron(3, nonlin=False)

    def __call__(self, x):
        return self.out(self.hidden(x))

    def parameters(self):
        return self.hidden.parameters() + self.out.parameters()


def test_state_dict_of_a_user_module_covers_every_parameter():
    random.seed(35)
    model = UserModel()
    sd = model.state_dict()
    assert len(sd) == len(model.parameters()) == 13
    with pytest.raises(KeyError):
        model.load_state_dict({})


# --- to_torch -------------------------------------------------------------------

def test_to_torch_equivalent_sequential():
    torch = pytest.importorskip("torch", reason="torch is not installed: to_torch() untested")
    random.seed(41)
    model = pg_nn.MLP(2, [16, 16, 1])
    for p in model.parameters():  # non-zero biases too
        p.data += 0.01
    seq = model.to_torch()
    assert isinstance(seq, torch.nn.Sequential)
    kinds = [type(m) for m in seq]
    assert kinds == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear, torch.nn.ReLU,
                     torch.nn.Linear]
    linears = [m for m in seq if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(16, 2), (16, 16), (1, 16)]
    assert all(m.weight.dtype == torch.float64 and m.bias.dtype == torch.float64
               for m in linears)
    assert linears[0].weight[3, 1].item() == model.layers[0].neurons[3].w[1].data
    assert linears[2].bias[0].item() == model.layers[2].neurons[0].b.data
    X, _ = demo.make_moons(100)
    with torch.no_grad():
        out = seq(torch.tensor(X, dtype=torch.float64))
    assert out.dtype == torch.float64 and tuple(out.shape) == (100, 1)
    with pygrad.no_grad():
        ours = [model(x).data for x in X]
    for a, b in zip(out[:, 0].tolist(), ours):
        assert abs(a - b) <= 1e-12 * max(1.0, abs(b))
    # Independent of the model afterwards.
    model.layers[0].neurons[0].w[0].data += 1.0
    assert linears[0].weight[0, 0].item() != model.layers[0].neurons[0].w[0].data


def test_to_torch_multi_output_linear_last_layer():
    torch = pytest.importorskip("torch", reason="torch is not installed: to_torch() untested")
    random.seed(42)
    model = pg_nn.MLP(3, [4, 2])
    seq = model.to_torch()
    assert [type(m) for m in seq] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    xs = rows(7, 3, 42)
    with torch.no_grad():
        out = seq(torch.tensor(xs, dtype=torch.float64)).tolist()
    for x, row in zip(xs, out):
        for a, b in zip(row, [o.data for o in model(x)]):
            assert abs(a - b) <= 1e-12 * max(1.0, abs(b))


def test_to_torch_mixed_layer_is_equivalent_or_refused():
    torch = pytest.importorskip("torch", reason="torch is not installed: to_torch() untested")
    random.seed(43)
    model = pg_nn.MLP(2, [3, 1])
    model.layers[0].neurons[0].nonlin = False
    for n in model.layers[0].neurons:
        n.b.data = -0.5
    xs = [[1.0, 1.0], [-1.0, 0.5], [0.3, -2.0]]
    try:
        seq = model.to_torch()
    except (ValueError, TypeError, NotImplementedError):
        return  # refusing is fine
    with torch.no_grad():
        out = seq(torch.tensor(xs, dtype=torch.float64))[:, 0].tolist()
    for a, x in zip(out, xs):
        assert abs(a - model(x).data) <= 1e-12


# --- bad input and structural changes ----------------------------------------------

def small_modules():
    random.seed(51)
    model = pg_nn.MLP(2, [3, 1])
    return [("MLP", model), ("Layer", model.layers[0]), ("Neuron", model.layers[0].neurons[0])]


@pytest.mark.parametrize("x", [[1.0], [1.0, 2.0, 3.0], [], [Value(1.0)]],
                         ids=["short", "long", "empty", "short-values"])
def test_wrong_input_length_raises_value_error(x):
    for _name, module in small_modules():
        with pytest.raises(ValueError):
            module(x)


@pytest.mark.parametrize("x", [["a", 1.0], [1.0, None], "ab", None, [1.0, "2"], [1.0, 1j]],
                         ids=["str-elem", "None-elem", "str", "None", "numeric-str", "complex"])
def test_non_number_input_raises_type_error(x):
    for _name, module in small_modules():
        with pytest.raises(TypeError):
            module(x)


def test_bad_input_makes_no_nodes():
    random.seed(52)
    model = pg_nn.MLP(2, [3, 1])
    before = pygrad.live_nodes()
    for bad in ([1.0], [1.0, "x"], [1.0, 2.0, 3.0]):
        with pytest.raises((TypeError, ValueError)):
            model(bad)
    assert pygrad.live_nodes() == before


def reference_output(model, x):
    return unfused_mlp(model, [Value(v) for v in x]).data


def test_structural_change_replacing_a_weight_value_is_seen():
    random.seed(53)
    model = pg_nn.MLP(2, [4, 4, 1])
    x = [0.9, -0.6]
    old = model.layers[0].neurons[0].w[0]
    first = model(x).data  # a forward plan (cached handles) exists now
    new = Value(5.0)
    model.layers[0].neurons[0].w[0] = new
    out = model(x)
    assert out.data == reference_output(model, x)
    assert out.data != first
    model.zero_grad()
    old.grad = 0.0
    out.backward()
    assert model.layers[0].neurons[0].w[0] is new
    assert new in model.parameters() and old not in model.parameters()
    expected = _grad_of(model, x, lambda m: m.layers[0].neurons[0].w[0])
    assert expected != 0.0
    model.zero_grad()
    model(x).backward()
    assert close(new.grad, expected, 1e-12)
    assert old.grad == 0.0  # the replaced Value is no longer in the graph
    # Changing the new Value's data afterwards is seen too (no copied values).
    new.data = -5.0
    assert model(x).data == reference_output(model, x)


def _grad_of(model, x, pick):
    model.zero_grad()
    unfused_mlp(model, [Value(v) for v in x]).backward()
    g = pick(model).grad
    model.zero_grad()
    return g


def test_structural_changes_of_every_kind_are_seen():
    random.seed(54)
    model = pg_nn.MLP(3, [4, 3, 1])
    x = [0.4, -0.2, 0.8]
    model(x)  # a forward plan now exists
    edits = [
        lambda m: m.layers[0].neurons[1].w.__setitem__(2, Value(-3.0)),
        lambda m: setattr(m.layers[1].neurons[0], "b", Value(2.5)),
        lambda m: setattr(m.layers[0].neurons[2], "w", [Value(1.0), Value(2.0), Value(3.0)]),
        lambda m: m.layers[1].neurons.__setitem__(2, pg_nn.Neuron(4)),
        lambda m: m.layers.__setitem__(2, pg_nn.Layer(3, 1, nonlin=False)),
        lambda m: m.layers[0].neurons[0].w.reverse(),
        lambda m: m.layers[0].neurons[0].w.__setitem__(slice(0, 2), [Value(0.7), Value(-0.7)]),
        lambda m: setattr(m.layers[0].neurons[3], "nonlin", False),  # a mixed layer
        lambda m: setattr(m, "layers", [m.layers[0], m.layers[1], pg_nn.Layer(3, 2)]),
    ]
    for k, edit in enumerate(edits):
        edit(model)
        out = as_list(model(x))
        ref = as_list(unfused_mlp(model, [Value(v) for v in x]))
        assert [o.data for o in out] == [o.data for o in ref], k
        # Gradients reach exactly the current parameters.
        model.zero_grad()
        weighted_sum(out).backward()
        fused = [p.grad for p in model.parameters()]
        model.zero_grad()
        weighted_sum(ref).backward()
        assert all(close(a, p.grad, 1e-12) for a, p in zip(fused, model.parameters())), k
        assert any(g != 0.0 for g in fused), k


def test_layer_list_mutations_with_append_and_pop_are_seen():
    random.seed(55)
    model = pg_nn.MLP(2, [3, 1])
    x = [0.3, 0.6]
    model(x)
    first = model(x).data
    model.layers.insert(1, pg_nn.Layer(3, 3))
    assert model(x).data == reference_output(model, x)
    model.layers.pop(1)
    assert model(x).data == reference_output(model, x) == first
    model.layers[-1].neurons.append(pg_nn.Neuron(3, nonlin=False))
    out = model(x)
    assert isinstance(out, list) and len(out) == 2
    assert [o.data for o in out] == [o.data for o in unfused_mlp(model, [Value(v) for v in x])]
    model.layers[0].neurons.pop()  # now 2 hidden neurons feeding a 3-input layer
    with pytest.raises(ValueError):
        model(x)


def test_mutating_an_assigned_list_subclass_is_seen():
    class WeightList(list):
        pass

    random.seed(56)
    model = pg_nn.MLP(2, [2, 1])
    x = [1.0, 1.0]
    n = model.layers[0].neurons[0]
    n.w = WeightList([Value(0.5), Value(0.5)])
    model(x)  # caches the forward plan
    n.w[0] = Value(100.0)
    assert model(x).data == reference_output(model, x)


def test_assigned_list_is_the_same_list_as_in_micrograd():
    outputs = []
    for nn, V in ((pg_nn, Value), (mg_nn, mg_engine.Value)):
        random.seed(57)
        model = nn.MLP(2, [2, 1])
        ws = [V(0.5), V(0.5)]
        model.layers[0].neurons[0].w = ws
        model([1.0, 1.0])
        ws[0] = V(100.0)
        outputs.append((model.layers[0].neurons[0].w is ws, model([1.0, 1.0]).data))
    assert outputs[0] == outputs[1]
