"""Batch normalisation: derived over a batch, its stages as nodes, simplified to the compact
form — and every gradient as torch computes it, in train mode (batch statistics, biased
variance) and in eval mode (running statistics)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from oracle import assert_close, torch_reduced_loss_and_grads

import symbackprop as sb
from symbackprop import reference


def after_conv(affine: bool = True, activation: str = "relu", mode: str = "train") -> sb.Network:
    """2x3x3 → conv 2@2x2 (bias) → BatchNorm2D → activation → dense 2."""
    x = sb.Input((2, 3, 3))
    h = sb.Conv2D(out_channels=2, kernel_size=2, bias=True)(x)
    y = sb.Activation(activation)(sb.BatchNorm2D(affine=affine)(h))
    return sb.Network(inputs=x, outputs=sb.Dense(units=2)(y), loss="sse", mode=mode)


def after_dense(affine: bool = True, activation: str = "tanh", mode: str = "train") -> sb.Network:
    """3 → dense 3 (bias) → BatchNorm1D → activation → dense 2, cross-entropy."""
    x = sb.Input((3,))
    y = sb.Activation(activation)(sb.BatchNorm1D(affine=affine)(sb.Dense(units=3, bias=True)(x)))
    return sb.Network(inputs=x, outputs=sb.Dense(units=2)(y), loss="cross_entropy", mode=mode)


def residual(mode: str = "train") -> sb.Network:
    """A residual block with batch norm after each convolution, before its ReLU (as ResNet)."""
    x = sb.Input((2, 3, 3))
    h = sb.ReLU()(sb.BatchNorm2D()(sb.Conv2D(out_channels=2, kernel_size=3, padding=1)(x)))
    r = sb.BatchNorm2D()(sb.Conv2D(out_channels=2, kernel_size=3, padding=1)(h))
    out = sb.ReLU()(sb.Add()(h, r))
    return sb.Network(inputs=x, outputs=sb.Dense(units=2)(sb.GlobalAvgPool2D()(out)), loss="sse", mode=mode)


def point(net: sb.Network, rng: np.random.Generator, batch: int):
    """A batch, its targets, and the parameters — with running statistics in eval mode."""
    params = {name: rng.normal(size=shape) for name, shape in net.parameters.items()}
    for name, shape in net.buffers.items():
        params[name] = rng.uniform(0.5, 2.0, size=shape) if "var" in name else rng.normal(size=shape)
    x = rng.normal(size=(batch, *net.input_shape))
    y = (rng.dirichlet(np.ones(net.output_size), size=batch) if net.loss == "cross_entropy"
         else rng.normal(size=(batch, net.output_size)))
    return x, y, params


def program_values(d: sb.Derivation, x, y, params) -> tuple[dict, dict]:
    """Every node's value and every gradient, from the derivation's own program (the engine's
    chain forms, node by node), evaluated on numbers."""
    values = dict(zip(d.graph.x, np.ravel(x))) | dict(zip(d.graph.y, np.ravel(y)))
    for name, symbols in [*d.symbols.params.items(), *d.graph.buffers.items()]:
        values |= dict(zip(sympy.flatten(symbols.tolist()), np.ravel(params[name])))
    for symbol, expr in d.program.assignments:
        values[symbol] = float(expr.xreplace(values))
    grads = {name: np.array([float(e.xreplace(values)) for e in sympy.flatten(array.tolist())]).reshape(array.shape)
             for name, array in d.program.gradients.items()}
    return values, grads


NETWORKS = {
    "BatchNorm2D after a conv": after_conv,
    "BatchNorm2D, no affine, sigmoid": lambda mode="train": after_conv(False, "sigmoid", mode),
    "BatchNorm1D after a dense layer": after_dense,
    "BatchNorm1D, no affine, leaky relu": lambda mode="train": after_dense(False, "leaky_relu", mode),
    "inside a residual block": residual,
}


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_the_engines_program_equals_torch(name, mode, rng):
    net = NETWORKS[name](mode=mode)
    x, y, params = point(net, rng, batch=2)
    loss, grads = torch_reduced_loss_and_grads(net, x, y, params, "sum")
    d = net.derive(batch=2)
    values, derived = program_values(d, x, y, params)
    assert values[sympy.Symbol("L", real=True)] == pytest.approx(loss, rel=1e-12)
    for key, grad in grads.items():
        assert_close(derived[key], grad)


# torch refuses BatchNorm1d on a batch of one in train mode (one value per channel): not a case
REFERENCE_CASES = [
    (name, mode, batch)
    for name in NETWORKS for mode in ("train", "eval") for batch in (1, 2, 7)
    if not (batch == 1 and mode == "train" and "1D" in name)
]


@pytest.mark.parametrize("name, mode, batch", REFERENCE_CASES)
def test_the_reference_equals_torch(name, mode, batch, rng):
    net = NETWORKS[name](mode=mode)
    x, y, params = point(net, rng, batch)
    loss, grads = torch_reduced_loss_and_grads(net, x, y, params, "sum")
    out = reference.loss_and_grads(net, x, y, params)
    assert out.loss.sum() == pytest.approx(loss, rel=1e-12)
    for key, grad in grads.items():
        assert_close(out.grads[key] if key == "x" else out.grads[key].sum(axis=0), grad)


def test_a_batch_of_one_in_train_mode_gives_what_torch_gives(rng):
    # one sample of one channel whose 2x2 values are equal: the variance is 0, ε keeps
    # 1/√(σ² + ε) finite, x̂ = 0 and every output is β
    net = sb.Network((1, 2, 2), [sb.BatchNorm2D(), sb.Dense(units=2, bias=True)], loss="sse")
    _, y, params = point(net, rng, batch=1)
    x = np.full((1, 1, 2, 2), 0.7)
    loss, grads = torch_reduced_loss_and_grads(net, x, y, params, "sum")
    out = reference.loss_and_grads(net, x, y, params)
    assert out.loss.sum() == pytest.approx(loss, rel=1e-12)
    assert_close(out.grads["x"], grads["x"])  # finite, and as large as 1/√ε ≈ 316 makes it
    assert 1 < np.abs(grads["x"]).max() < 1e4
    assert_close(reference.forward(net, x, params)[0], np.zeros((1, 1, 2, 2)) + params["beta1"][0])


# ---- the stages and the compact form ------------------------------------------------------------


def test_the_chain_forms_show_the_stages_as_nodes():
    d = after_dense().derive(batch=2)
    stages = [n for n in d.nodes if n.kind == "stage"]
    assert [str(n.node) for n in stages[-6:]] == ["var2_3", "var2_2", "var2_1", "mu2_3", "mu2_2", "mu2_1"]
    mean = stages[-1]
    assert str(mean.upstream_symbol) == "dL_dmu2_1"
    # ∂L/∂μ collects the normalised values' and the variance's terms, each upstream × local
    assert {str(s) for s in mean.upstream.free_symbols} >= {"dL_dxhat2_1__1", "dL_dxhat2_1__2", "dL_dvar2_1"}
    assert {str(s) for s in mean.local} == {"a1_1__1", "a1_1__2"}  # μ = (a_1^[1] + a_1^[2]) / 2
    assert set(mean.local.values()) == {sympy.Rational(1, 2)}


@pytest.mark.parametrize("build, batch", [(after_dense, 2), (after_dense, 3), (after_conv, 2)])
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_the_compact_form_is_derived_from_the_staged_one(build, batch):
    net = build()
    d = net.derive(batch=batch)
    number = next(l for l, op in enumerate(net.layers, start=1) if op.compact(d, l) is not None)
    forms = d.compact(number)
    assert len(forms) == batch * np_size(net.shapes[number])
    for form in forms:
        count = len(form.g)  # M: the channel's values in the batch
        gamma = form.alpha * form.sigma
        # the textbook's (γ / (M σ)) (M g_i − Σ g_j − x̂_i Σ g_j x̂_j), found, not typed
        assert sympy.simplify(form.alpha - gamma / form.sigma) == 0
        assert sympy.simplify(form.beta + gamma / (count * form.sigma)) == 0
        assert sympy.simplify(form.delta + gamma / (count * form.sigma)) == 0
    assert "- \\sum_{j} g_{j} - \\hat{x}_{i} \\sum_{j} g_{j} \\hat{x}_{j}" in forms[0].latex(d.tex_names)


def np_size(shape) -> int:
    return int(np.prod(shape))


def test_compact_and_staged_agree_in_numbers_at_a_larger_batch(rng):
    net = after_dense()
    batch = 7
    d = net.derive(batch=batch)
    x, y, params = point(net, rng, batch)
    values, _ = program_values(d, x, y, params)
    layer = d.graph.layers[1]
    g = np.array([values[s] for s in layer.upstream]).reshape(batch, 3)  # ∂L/∂y
    hat = np.array([values[n.symbol] for n in layer.inner if n.symbol.name.startswith("xhat")]).reshape(batch, 3)
    var = np.array([values[n.symbol] for n in layer.inner if n.symbol.name.startswith("var")])
    gamma, sigma = params["gamma2"], np.sqrt(var + 1e-5)
    compact = gamma / (batch * sigma) * (batch * g - g.sum(axis=0) - hat * (g * hat).sum(axis=0))
    staged = np.array([values[s] for s in d.graph.upstream_of(1)]).reshape(batch, 3)  # ∂L/∂a^(1)
    assert_close(staged, compact, rtol=1e-12)


def test_a_network_in_train_mode_needs_a_batch_for_its_scalar_graph():
    d = after_conv().derive()  # the numeric code needs no graph: it takes any batch
    with pytest.raises(ValueError, match=r"^layer 2: batch normalisation in train mode mixes the samples "
                       r"of a batch: derive a batch, net\.derive\(batch=N\)"):
        d.chain("gamma2")
    eval_mode = after_conv().with_mode("eval")
    assert eval_mode.mode == "eval" and not eval_mode.couples_samples
    assert list(eval_mode.buffers) == ["running_mean2", "running_var2"]
    assert eval_mode.derive().chain("gamma2").shape == (2,)  # one sample: an affine map


def test_batch_norm_declares_its_parameters_and_their_letters():
    net = after_conv()
    assert list(net.parameters) == ["W1", "b1", "gamma2", "beta2", "W4"] and net.buffers == {}
    d = net.with_mode("eval").derive()
    assert d.tex_names[d.symbols.params["gamma2"][0]] == r"\gamma^{(2)}_{1}"
    spec = net.with_mode("eval").to_dict()
    assert spec["mode"] == "eval" and spec["layers"][1] == {"batchnorm2d": {"eps": 1e-05, "affine": True}}
    assert sb.Network.from_dict(spec).mode == "eval"
    with pytest.raises(sb.SpecError, match="mode: must be one of train, eval"):
        sb.Network.from_dict({**spec, "mode": "test"})
    with pytest.raises(sb.SpecError, match="batchnorm2d: eps must be a positive number"):
        sb.BatchNorm2D(eps=0)


# ---- the generated code --------------------------------------------------------------------------

ACTIVATIONS = ["identity", "sigmoid", "tanh", "relu", "softplus", "leaky_relu"]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch", [1, 2, 7, 1024])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_the_generated_code_equals_torch_with_every_activation_after_it(mode, batch, activation, rng):
    net = after_conv(activation=activation, mode=mode)
    x, y, params = point(net, rng, batch)
    f = net.derive().numeric(reduce="mean")
    loss, grads = torch_reduced_loss_and_grads(net, x, y, params, "mean")
    out = f(x, y, params)
    assert out.loss == pytest.approx(loss, rel=1e-12)
    for key, grad in grads.items():
        assert_close(out.grads[key], grad)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_the_generated_code_equals_torch_on_each_network_summed(name, rng):
    for mode in ("train", "eval"):
        net = NETWORKS[name](mode=mode)
        x, y, params = point(net, rng, 5)
        loss, grads = torch_reduced_loss_and_grads(net, x, y, params, "sum")
        out = net.derive().numeric(reduce="sum")(x, y, params)
        assert out.loss == pytest.approx(loss, rel=1e-12)
        for key, grad in grads.items():
            assert_close(out.grads[key], grad)


def test_per_sample_gradients_are_refused_in_train_mode_and_given_in_eval_mode(rng):
    train = after_dense()
    x, y, params = point(train, rng, 4)
    with pytest.raises(ValueError, match=r"^reduce=None: per-sample gradients are not defined here, batch "
                       r"normalisation in train mode makes every sample's loss depend on the whole batch"):
        train.derive().numeric()(x, y, params)
    evaluated = train.with_mode("eval")
    x, y, params = point(evaluated, rng, 4)
    out = evaluated.derive().numeric()(x, y, params)  # per sample: the statistics are constants
    reference_out = reference.loss_and_grads(evaluated, x, y, params)
    for key, grad in reference_out.grads.items():
        assert_close(out.grads[key], grad)
    with pytest.raises(ValueError, match="params is missing 'running_mean2'"):
        evaluated.derive().numeric()(x, y, {k: v for k, v in params.items() if "running" not in k})
