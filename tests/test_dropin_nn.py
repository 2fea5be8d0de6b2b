"""Issue 10, part 2: pygrad.nn honours subclasses and overrides, and takes
activations other than ReLU.

The fused C path may run only when every class and method involved is
pygrad's own; a Neuron, Layer or MLP subclass, a monkeypatched ``__call__``, a
replaced ``layer.neurons`` or ``neuron.w`` must give micrograd's numbers.  Each
case is built on pygrad.nn and on micrograd.nn after the same random.seed (the
two draw the same initial weights) and compared: forward values bit for bit
(micrograd's ReLU gives the int 0, equal to pygrad's 0.0), gradients of every
parameter and input within 1e-12 relative after backward().

The activation keyword (the README's "Differences from micrograd"): ``Neuron(nin,
nonlin=True, act='relu')``, ``Layer(nin, nout, **kwargs)`` passing it on, and
``MLP(nin, nouts, act='relu')``.  ``nonlin`` keeps micrograd's meaning (is there
a nonlinearity at all); ``act`` says which: 'relu', 'tanh', 'sigmoid' or
'linear'.  An MLP's last layer stays linear, as micrograd's does.
"""
import copy
import pickle
import random
import struct
from types import SimpleNamespace

import micrograd.engine as mg_engine
import micrograd.nn as mg_nn
import pytest

import pygrad
import pygrad.nn as pg_nn

MG = mg_engine.Value
PG = pygrad.Value

# --- comparing -----------------------------------------------------------------------

def same_value(m, p):
    """micrograd's value m and pygrad's float p: bit for bit, except that
    micrograd's ReLU gives the int 0 (no sign), equal to pygrad's 0.0."""
    if type(p) is not float:
        return False
    if isinstance(m, int):
        return float(m) == p
    return struct.pack("<d", m) == struct.pack("<d", p)


def close(a, b, rel=1e-12):
    """a and b equal to `rel` relative (exactly equal counts, zeros included)."""
    a, b = float(a), float(b)
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b))


def rows(n, nin, seed):
    rng = random.Random(seed)
    return [[rng.uniform(-2, 2) for _ in range(nin)] for _ in range(n)]


def as_list(out):
    return out if isinstance(out, list) else [out]


def weighted_sum(outs):
    loss = outs[0] * 0.5
    for k, o in enumerate(outs[1:], 1):
        loss = loss + o * (0.5 + k)
    return loss


def forward_backward(module, x_data, V):
    """module applied to leaves holding x_data; backward() from a weighted sum
    of its outputs.  Returns the output values and the input leaves."""
    xs = [V(v) for v in x_data]
    outs = as_list(module(xs))
    weighted_sum(outs).backward()
    return [o.data for o in outs], xs


def assert_matches_micrograd(pg, mg, nin, seed=0, params=lambda m: m.parameters()):
    """pygrad's module pg against micrograd's mg on a few inputs."""
    nonzero = False
    for x in rows(4, nin, seed):
        pg.zero_grad()
        mg.zero_grad()
        p_values, p_xs = forward_backward(pg, x, PG)
        m_values, m_xs = forward_backward(mg, x, MG)
        assert len(p_values) == len(m_values)
        assert all(same_value(m, p) for m, p in zip(m_values, p_values)), (m_values, p_values)
        p_params, m_params = params(pg), params(mg)
        assert len(p_params) == len(m_params)
        for k, (m, p) in enumerate(zip(m_params, p_params)):
            assert close(m.grad, p.grad), ("parameter", k, m.grad, p.grad)
        for k, (m, p) in enumerate(zip(m_xs, p_xs)):
            assert close(m.grad, p.grad), ("input", k, m.grad, p.grad)
        nonzero = nonzero or any(v != 0 for v in m_values)
    assert nonzero  # not a comparison of dead ReLUs only


def build_both(seed, make):
    """make(nn, classes) on pygrad.nn and on micrograd.nn after the same seed."""
    random.seed(seed)
    pg = make(pg_nn, CLASSES[pg_nn])
    random.seed(seed)
    mg = make(mg_nn, CLASSES[mg_nn])
    return pg, mg


# --- a user's subclasses, written once for either library -----------------------------

def user_classes(nn):
    class HalfNeuron(nn.Neuron):
        """The issue's: halves the activation."""

        def __call__(self, x):
            return super().__call__(x) * 0.5

    class OwnSumHalfNeuron(nn.Neuron):
        """Writes the neuron out itself, without the ReLU, and halves it."""

        def __call__(self, x):
            act = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
            return act * 0.5

    class HalfLayer(nn.Layer):
        """A Layer subclass made of HalfNeurons; Layer.__call__ inherited."""

        def __init__(self, nin, nout, **kwargs):
            self.neurons = [HalfNeuron(nin, **kwargs) for _ in range(nout)]

    class DoubleLayer(nn.Layer):
        """Overrides __call__: doubles every output."""

        def __call__(self, x):
            out = super().__call__(x)
            return [o * 2.0 for o in out] if isinstance(out, list) else out * 2.0

    class PlainLayer(nn.Layer):
        """A subclass that overrides nothing."""

    def mlp_of(layer_class):
        class LayerMLP(nn.MLP):
            """An MLP subclass built of layer_class; MLP.__call__ inherited."""

            def __init__(self, nin, nouts):
                sz = [nin] + nouts
                self.layers = [layer_class(sz[i], sz[i + 1], nonlin=i != len(nouts) - 1)
                               for i in range(len(nouts))]
        return LayerMLP

    class ScaledMLP(nn.MLP):
        """Overrides __call__: scales the outputs."""

        def __call__(self, x):
            return [o * 0.25 for o in as_list(super().__call__(x))]

    class PlainMLP(nn.MLP):
        """A subclass that overrides nothing."""

    return SimpleNamespace(HalfNeuron=HalfNeuron, OwnSumHalfNeuron=OwnSumHalfNeuron,
                           HalfLayer=HalfLayer, DoubleLayer=DoubleLayer,
                           PlainLayer=PlainLayer, DoubleLayerMLP=mlp_of(DoubleLayer),
                           HalfLayerMLP=mlp_of(HalfLayer), ScaledMLP=ScaledMLP,
                           PlainMLP=PlainMLP)


CLASSES = {pg_nn: user_classes(pg_nn), mg_nn: user_classes(mg_nn)}


# --- the issue's example, exactly ----------------------------------------------------

ISSUE_X = [1.0, 2.0]
# micrograd.nn after random.seed(0): Layer(2, 2) with its neurons replaced by
# [HalfNeuron(2, nonlin=False), HalfNeuron(2, nonlin=False)], applied to [1.0, 2.0].
MICROGRAD_HALF = [-0.1788570037305629, -0.10957595880737248]


def issue_layer(nn, C, neuron="HalfNeuron", **kwargs):
    layer = nn.Layer(2, 2)
    layer.neurons = [getattr(C, neuron)(2, **kwargs) for _ in range(2)]
    return layer


def test_micrograd_half_neuron_numbers():
    random.seed(0)
    layer = issue_layer(mg_nn, CLASSES[mg_nn], nonlin=False)
    assert [o.data for o in layer(ISSUE_X)] == MICROGRAD_HALF
    random.seed(0)
    layer = issue_layer(mg_nn, CLASSES[mg_nn], neuron="OwnSumHalfNeuron")
    assert [o.data for o in layer(ISSUE_X)] == MICROGRAD_HALF


@pytest.mark.parametrize("neuron,kwargs", [("HalfNeuron", {"nonlin": False}),
                                           ("OwnSumHalfNeuron", {})],
                         ids=["HalfNeuron(nonlin=False)", "OwnSumHalfNeuron"])
def test_issue_example_half_neurons_in_a_layer(neuron, kwargs):
    """Before issue 10 pygrad gave [-0.3577..., -0.2191...] (HalfNeuron's
    halving skipped) and [0.0, 0.0] (OwnSumHalfNeuron: the fused ReLU applied)."""
    random.seed(0)
    layer = issue_layer(pg_nn, CLASSES[pg_nn], neuron, **kwargs)
    assert [o.data for o in layer(ISSUE_X)] == MICROGRAD_HALF
    pg, mg = build_both(0, lambda nn, C: issue_layer(nn, C, neuron, **kwargs))
    assert_matches_micrograd(pg, mg, 2)


# --- subclasses and replaced parts, against micrograd -------------------------------

def _replace_layer(model, index, make):
    model.layers[index] = make()
    return model


def _replace_neuron(model, layer, index, make):
    model.layers[layer].neurons[index] = make()
    return model


def _plain_layer_list(model):
    model.layers = list(model.layers)
    return model


def _plain_neurons_reversed(model):
    model.layers[0].neurons = list(reversed(model.layers[0].neurons))
    return model


def _new_weights(nn, layer):
    rng = random.Random(99)
    layer.neurons[1].w = [nn.Value(rng.uniform(-1, 1)) for _ in layer.neurons[1].w]
    return layer


def _tied_weights(layer):
    layer.neurons[2].w = layer.neurons[0].w
    layer.neurons[1].b = layer.neurons[0].b
    return layer


def _computed_weights(nn, layer):
    scale = nn.Value(1.5)
    layer.neurons[0].w = [w * scale for w in layer.neurons[0].w]
    return layer


# (id, builder(nn, classes) -> module, number of inputs)
CASES = [
    ("Layer of HalfNeurons (replaced list)",
     lambda nn, C: issue_layer(nn, C, nonlin=False), 2),
    ("HalfLayer(3, 4): a Layer subclass of Neuron subclasses",
     lambda nn, C: C.HalfLayer(3, 4, nonlin=False), 3),
    ("HalfLayer(3, 4) with ReLU",
     lambda nn, C: C.HalfLayer(3, 4), 3),
    ("DoubleLayer(3, 4): a Layer subclass overriding __call__",
     lambda nn, C: C.DoubleLayer(3, 4), 3),
    ("PlainLayer(3, 4): a Layer subclass overriding nothing",
     lambda nn, C: C.PlainLayer(3, 4), 3),
    ("MLP subclass of DoubleLayers (MLP.__call__ inherited)",
     lambda nn, C: C.DoubleLayerMLP(3, [4, 4, 2]), 3),
    ("MLP subclass of HalfLayers",
     lambda nn, C: C.HalfLayerMLP(3, [4, 2]), 3),
    ("ScaledMLP: an MLP subclass overriding __call__",
     lambda nn, C: C.ScaledMLP(3, [4, 4, 2]), 3),
    ("PlainMLP: an MLP subclass overriding nothing",
     lambda nn, C: C.PlainMLP(3, [4, 4, 1]), 3),
    ("MLP with layers[1] replaced by a DoubleLayer",
     lambda nn, C: _replace_layer(nn.MLP(3, [4, 4, 2]), 1, lambda: C.DoubleLayer(4, 4)), 3),
    ("MLP with one neuron replaced by a HalfNeuron",
     lambda nn, C: _replace_neuron(nn.MLP(3, [4, 2]), 0, 2, lambda: C.HalfNeuron(3)), 3),
    ("MLP whose layers are a plain list",
     lambda nn, C: _plain_layer_list(nn.MLP(3, [4, 4, 1])), 3),
    ("MLP with a layer's neurons replaced by a plain list, reversed",
     lambda nn, C: _plain_neurons_reversed(nn.MLP(3, [4, 4, 1])), 3),
    ("Layer with neuron.w replaced by new Values",
     lambda nn, C: _new_weights(nn, nn.Layer(3, 3)), 3),
    ("Layer whose neurons share a weight list and a bias",
     lambda nn, C: _tied_weights(nn.Layer(3, 3)), 3),
    ("Layer with neuron.w made of computed Values",
     lambda nn, C: _computed_weights(nn, nn.Layer(3, 2, nonlin=False)), 3),
]


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize("make,nin", [(make, nin) for _, make, nin in CASES],
                         ids=[name for name, _, _ in CASES])
def test_subclassed_or_replaced_matches_micrograd(make, nin, seed):
    pg, mg = build_both(seed, make)
    assert repr(pg) == repr(mg)
    assert_matches_micrograd(pg, mg, nin, seed)


def test_a_plain_number_among_the_weights():
    """micrograd multiplies whatever neuron.w holds: a float there is a frozen
    weight (float * Value).  Its parameters() then holds a float, so only the
    Values' gradients are compared."""
    def make(nn, C):
        layer = nn.Layer(3, 2)
        layer.neurons[0].w = [layer.neurons[0].w[0], 0.75, layer.neurons[0].w[2]]
        return layer

    pg, mg = build_both(3, make)
    x = [0.5, -1.0, 2.0]
    p_values, p_xs = forward_backward(pg, x, PG)
    m_values, m_xs = forward_backward(mg, x, MG)
    assert all(same_value(m, p) for m, p in zip(m_values, p_values))

    def values_only(module):
        return [p for p in module.parameters() if not isinstance(p, float)]
    for m, p in zip(values_only(mg), values_only(pg)):
        assert close(m.grad, p.grad)
    for m, p in zip(m_xs, p_xs):
        assert close(m.grad, p.grad)


# --- monkeypatched methods ----------------------------------------------------------

def _count_calls(monkeypatch, cls, name, factor):
    """Replace cls.name by a version that scales its result and counts calls."""
    original = getattr(cls, name)
    calls = []

    def patched(self, x):
        calls.append(self)
        out = original(self, x)
        return [o * factor for o in out] if isinstance(out, list) else out * factor
    monkeypatch.setattr(cls, name, patched)
    return calls


def _models(seed):
    return build_both(seed, lambda nn, C: nn.MLP(3, [4, 4, 2])), \
        build_both(seed + 1, lambda nn, C: nn.Layer(3, 3))


def test_monkeypatched_neuron_call_is_honoured(monkeypatch):
    (pg_mlp, mg_mlp), (pg_layer, mg_layer) = _models(7)
    x = [0.5, -1.0, 1.5]
    pg_mlp(x), pg_layer(x)  # first calls, fused: whatever gets cached is cached now
    pg_calls = _count_calls(monkeypatch, pg_nn.Neuron, "__call__", 0.5)
    mg_calls = _count_calls(monkeypatch, mg_nn.Neuron, "__call__", 0.5)
    assert_matches_micrograd(pg_mlp, mg_mlp, 3, seed=7)
    assert_matches_micrograd(pg_layer, mg_layer, 3, seed=8)
    assert len(pg_calls) == len(mg_calls) == 4 * (4 + 4 + 2 + 3)
    monkeypatch.undo()  # and back: micrograd's unpatched numbers again
    assert_matches_micrograd(pg_mlp, mg_mlp, 3, seed=9)
    assert len(pg_calls) == len(mg_calls) == 4 * (4 + 4 + 2 + 3)


def test_monkeypatched_layer_call_is_honoured(monkeypatch):
    (pg_mlp, mg_mlp), _ = _models(11)
    pg_mlp([0.5, -1.0, 1.5])
    pg_calls = _count_calls(monkeypatch, pg_nn.Layer, "__call__", -2.0)
    mg_calls = _count_calls(monkeypatch, mg_nn.Layer, "__call__", -2.0)
    assert_matches_micrograd(pg_mlp, mg_mlp, 3, seed=11)
    assert len(pg_calls) == len(mg_calls) == 4 * 3
    monkeypatch.undo()
    assert_matches_micrograd(pg_mlp, mg_mlp, 3, seed=12)


def test_monkeypatched_value_relu_is_honoured(monkeypatch):
    """Value.relu is a method the neuron uses too: a leaky replacement (on both
    libraries' Value) must show in Layer and MLP outputs, as on micrograd."""
    (pg_mlp, mg_mlp), (pg_layer, mg_layer) = _models(15)
    pg_mlp([0.5, -1.0, 1.5])

    def leaky(self):
        return self * (0.125 if self.data < 0 else 1.0)
    monkeypatch.setattr(PG, "relu", leaky)
    monkeypatch.setattr(MG, "relu", leaky)
    assert_matches_micrograd(pg_mlp, mg_mlp, 3, seed=15)
    assert_matches_micrograd(pg_layer, mg_layer, 3, seed=16)


def test_monkeypatched_mlp_call_is_honoured(monkeypatch):
    (pg_mlp, mg_mlp), _ = _models(13)
    pg_calls = _count_calls(monkeypatch, pg_nn.MLP, "__call__", 3.0)
    mg_calls = _count_calls(monkeypatch, mg_nn.MLP, "__call__", 3.0)
    assert_matches_micrograd(pg_mlp, mg_mlp, 3, seed=13)
    assert len(pg_calls) == len(mg_calls) == 4


def test_value_subclass_inputs_reach_their_own_operators():
    """An input of a Value subclass that overrides __rmul__: micrograd's
    `wi * xi` calls it first (Python tries a subclass's reflected method
    first), so a fused kernel must give way to the Python path."""
    def half_times(V):
        class HalfTimes(V):
            def __rmul__(self, other):
                return V.__mul__(self, other) * 0.5
        return HalfTimes

    for make in (lambda nn: nn.Layer(3, 2), lambda nn: nn.MLP(3, [4, 2]),
                 lambda nn: nn.Neuron(3)):
        pg, mg = build_both(17, lambda nn, C: make(nn))
        outs = {}
        for module, V in ((pg, PG), (mg, MG)):
            xs = [half_times(V)(v) for v in rows(1, 3, 17)[0]]
            values = as_list(module(xs))
            weighted_sum(values).backward()
            outs[V] = ([o.data for o in values], [x.grad for x in xs],
                       [p.grad for p in module.parameters()])
        (p_values, p_x, p_params), (m_values, m_x, m_params) = outs[PG], outs[MG]
        assert all(same_value(m, p) for m, p in zip(m_values, p_values)), (m_values, p_values)
        assert all(close(m, p) for m, p in zip(m_x + m_params, p_x + p_params))


# --- activations beyond ReLU ------------------------------------------------------------

REPRS = [  # (constructor, as written, and its repr)
    ("Neuron(3, act='tanh')", "TanhNeuron(3)"),
    ("Neuron(3, act='sigmoid')", "SigmoidNeuron(3)"),
    ("Neuron(3, act='linear')", "LinearNeuron(3)"),
    ("Neuron(3, act='relu')", "ReLUNeuron(3)"),
    ("Neuron(3, nonlin=False, act='tanh')", "LinearNeuron(3)"),
    ("Neuron(3, nonlin=True, act='sigmoid')", "SigmoidNeuron(3)"),
    ("Layer(2, 2, act='sigmoid')", "Layer of [SigmoidNeuron(2), SigmoidNeuron(2)]"),
    ("MLP(2, [3, 1], act='tanh')",
     ("MLP of [Layer of [TanhNeuron(2), TanhNeuron(2), TanhNeuron(2)], "
      "Layer of [LinearNeuron(3)]]")),
]


@pytest.mark.parametrize("constructor,expected", REPRS, ids=[r[0] for r in REPRS])
def test_activation_reprs(constructor, expected):
    assert repr(eval(constructor, vars(pg_nn))) == expected


def test_micrograd_signature_keeps_its_meaning():
    """nonlin=True is ReLU, nonlin=False linear, as micrograd's reprs say."""
    assert repr(pg_nn.Neuron(3, nonlin=True)) == "ReLUNeuron(3)"
    assert repr(mg_nn.Neuron(3, nonlin=True)) == "ReLUNeuron(3)"
    assert repr(pg_nn.Neuron(3, nonlin=False)) == "LinearNeuron(3)"
    assert repr(pg_nn.Layer(2, 1, nonlin=False)) == "Layer of [LinearNeuron(2)]"


def test_unknown_activation_is_a_value_error():
    with pytest.raises(ValueError, match="gelu"):
        pg_nn.Neuron(3, act="gelu")
    with pytest.raises(ValueError):
        pg_nn.MLP(2, [3, 1], act="Tanh ")


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "linear"])
def test_activation_does_not_change_the_initial_weights(act):
    random.seed(4)
    pg = pg_nn.MLP(3, [4, 4, 2], act=act)
    after_pg = random.random()
    random.seed(4)
    mg = mg_nn.MLP(3, [4, 4, 2])
    after_mg = random.random()
    assert [p.data for p in pg.parameters()] == [float(p.data) for p in mg.parameters()]
    assert after_pg == after_mg


def test_explicit_relu_and_linear_are_micrograds():
    relu = {pg_nn: {"act": "relu"}, mg_nn: {}}
    pg, mg = build_both(6, lambda nn, C: nn.MLP(3, [4, 4, 2], **relu[nn]))
    assert_matches_micrograd(pg, mg, 3, seed=6)
    linear = {pg_nn: {"act": "linear"}, mg_nn: {"nonlin": False}}
    pg, mg = build_both(6, lambda nn, C: nn.Layer(3, 2, **linear[nn]))
    assert_matches_micrograd(pg, mg, 3, seed=6)


def python_neuron(neuron, x, act):
    """One neuron as Value ops in micrograd's order, then the activation."""
    a = sum((wi * xi for wi, xi in zip(neuron.w, x)), neuron.b)
    return {"relu": a.relu, "tanh": a.tanh, "sigmoid": a.sigmoid, "linear": lambda: a}[act]()


def python_layer(layer, x, act):
    out = [python_neuron(n, x, act) for n in layer.neurons]
    return out[0] if len(out) == 1 else out


def python_mlp(model, x, act):
    for i, layer in enumerate(model.layers):
        x = python_layer(layer, x, act if i != len(model.layers) - 1 else "linear")
    return x


def assert_same_as(module, forward, reference, x_data):
    """forward and reference on leaves holding x_data: values bit for bit,
    gradients of parameters and inputs within 1e-12."""
    results = []
    for run in (forward, reference):
        xs = [PG(v) for v in x_data]
        outs = as_list(run(xs))
        module.zero_grad()
        weighted_sum(outs).backward()
        results.append(([o.data for o in outs], [p.grad for p in module.parameters()],
                        [x.grad for x in xs]))
    (values, param_grads, input_grads), (ref_values, ref_param_grads, ref_input_grads) = results
    assert values == ref_values
    assert all(close(a, b) for a, b in zip(param_grads, ref_param_grads))
    assert all(close(a, b) for a, b in zip(input_grads, ref_input_grads))
    return values


ACTS = ["relu", "tanh", "sigmoid", "linear"]


@pytest.mark.parametrize("act", ACTS)
def test_fused_activation_equals_the_python_path(act):
    random.seed(21)
    model = pg_nn.MLP(3, [5, 4, 2], act=act)
    layer = pg_nn.Layer(3, 4, act=act)
    neuron = pg_nn.Neuron(3, act=act)
    values = []
    for x in rows(4, 3, 21):
        values += assert_same_as(model, model, lambda xs: python_mlp(model, xs, act), x)
        values += assert_same_as(layer, layer, lambda xs: python_layer(layer, xs, act), x)
        values += assert_same_as(neuron, neuron, lambda xs: python_neuron(neuron, xs, act), x)
    assert any(v != 0.0 for v in values)


def assert_twins_agree(a, b, x_data):
    """Two modules with the same weights (built after the same seed): values bit
    for bit, gradients of corresponding parameters and of the inputs to 1e-12."""
    results = []
    for module in (a, b):
        module.zero_grad()
        values, xs = forward_backward(module, x_data, PG)
        results.append((values, [p.grad for p in module.parameters()], [x.grad for x in xs]))
    (values_a, params_a, inputs_a), (values_b, params_b, inputs_b) = results
    assert values_a == values_b
    assert all(close(g, h) for g, h in zip(params_a, params_b))
    assert all(close(g, h) for g, h in zip(inputs_a, inputs_b))


@pytest.mark.parametrize("act", ACTS)
def test_fused_activation_equals_a_subclass_on_the_python_path(act):
    """A subclass that overrides nothing runs the Python path: the same numbers."""
    C = CLASSES[pg_nn]
    random.seed(22)
    fused = pg_nn.MLP(3, [5, 4, 2], act=act)
    random.seed(22)
    python = C.PlainMLP(3, [5, 4, 2], act=act)
    random.seed(23)
    fused_layer = pg_nn.Layer(3, 4, act=act)
    random.seed(23)
    python_layer_ = C.PlainLayer(3, 4, act=act)
    assert [p.data for p in fused.parameters()] == [p.data for p in python.parameters()]
    for x in rows(4, 3, 22):
        assert_twins_agree(fused, python, x)
        assert_twins_agree(fused_layer, python_layer_, x)


TORCH_ACTS = {"tanh": "tanh", "sigmoid": "sigmoid", "relu": "relu", "linear": None}


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu", "linear"])
def test_activation_against_torch_float64(act):
    """Values and gradients equal PyTorch float64 (torch.nn.Linear, then
    torch.tanh / torch.sigmoid / torch.relu) to 1e-12 relative."""
    torch = pytest.importorskip("torch")
    random.seed(31)
    model = pg_nn.MLP(3, [5, 4, 2], act=act)
    linears = []
    for layer in model.layers:
        linear = torch.nn.Linear(len(layer.neurons[0].w), len(layer.neurons), dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.tensor([[w.data for w in n.w] for n in layer.neurons],
                                             dtype=torch.float64))
            linear.bias.copy_(torch.tensor([n.b.data for n in layer.neurons], dtype=torch.float64))
        linears.append(linear)
    for x in rows(4, 3, 31):
        xs = [PG(v) for v in x]
        outs = as_list(model(xs))
        model.zero_grad()
        weighted_sum(outs).backward()

        tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        h = tx
        for i, linear in enumerate(linears):
            linear.zero_grad()
            h = linear(h)
            if i != len(linears) - 1 and TORCH_ACTS[act]:
                h = getattr(torch, TORCH_ACTS[act])(h)
        weights = torch.tensor([0.5 + k for k in range(len(outs))], dtype=torch.float64)
        (h * weights).sum().backward()

        assert all(close(o.data, t) for o, t in zip(outs, h.tolist()))
        for layer, linear in zip(model.layers, linears):
            for j, n in enumerate(layer.neurons):
                assert all(close(w.grad, g) for w, g in zip(n.w, linear.weight.grad[j].tolist()))
                assert close(n.b.grad, linear.bias.grad[j].item())
        assert all(close(xv.grad, g) for xv, g in zip(xs, tx.grad.tolist()))


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_to_torch_keeps_the_activation(act):
    torch = pytest.importorskip("torch")
    random.seed(32)
    model = pg_nn.MLP(3, [4, 4, 2], act=act)
    net = model.to_torch()
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", act.capitalize(), "Linear", act.capitalize(), "Linear"]
    for x in rows(3, 3, 32):
        ours = [o.data for o in model(x)]
        theirs = net(torch.tensor(x, dtype=torch.float64)).tolist()
        assert all(close(a, b) for a, b in zip(ours, theirs))


def test_pickle_and_deepcopy_keep_the_activation():
    random.seed(33)
    model = pg_nn.MLP(3, [4, 2], act="sigmoid")
    x = [0.25, -0.5, 1.0]
    expected = [o.data for o in model(x)]
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert repr(clone) == repr(model)
        assert [o.data for o in clone(x)] == expected


def test_activation_edited_after_construction_is_seen():
    """`act` and `nonlin` are plain attributes, as micrograd's `nonlin` is:
    changing them after a first (fused, cached) call changes what runs, a
    layer of mixed activations included."""
    random.seed(34)
    model = pg_nn.MLP(3, [4, 4, 2], act="tanh")
    x = [0.5, -1.0, 2.0]
    model(x)

    def reference(xs):
        for layer in model.layers:
            out = [python_neuron(n, xs, n.act if n.nonlin else "linear") for n in layer.neurons]
            xs = out
        return xs

    model.layers[0].neurons[1].act = "sigmoid"  # a mixed layer
    assert_same_as(model, model, reference, x)
    for n in model.layers[1].neurons:
        n.act = "relu"
    model.layers[2].neurons[0].nonlin = True  # a tanh output
    assert_same_as(model, model, reference, x)
    assert repr(model.layers[2]) == "Layer of [TanhNeuron(4), LinearNeuron(4)]"
    model.layers[0].neurons[0].act = "gelu"
    with pytest.raises(ValueError, match="gelu"):
        model(x)
