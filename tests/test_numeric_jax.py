"""backend="jax": the same per-layer code with jax.numpy under jax.jit gives the numpy code's
numbers, on every operation and on graphs (tests/graphs.py, resnet_tiny). jax comes with the
test extra, so these run wherever the tests do."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from graphs import GRAPHS
from oracle import assert_same_gradients, torch_batch_loss_and_grads, torch_reduced_loss_and_grads
from test_numeric_layers import CASES, FORMS, OPERATIONS, batch, network

import symbackprop as sb
from symbackprop import numeric
from symbackprop.verify import draw_point


@pytest.mark.slow  # a jax.jit compile per case
@pytest.mark.parametrize("name, form", CASES)
@pytest.mark.parametrize("reduce", [None, "sum", "mean"])
def test_every_operation_gives_the_numpy_numbers(name, form, reduce, rng, monkeypatch):
    monkeypatch.setattr(sb.Conv2D, "MATRIX_LIMIT", FORMS[form])  # a convolution both ways
    net = network(OPERATIONS[name])
    d = net.derive()
    _, _, params = draw_point(net, rng)
    x, y = batch(net, rng, 5, ties=True)
    expected = d.numeric(style="layers", reduce=reduce)(x, y, params)
    assert_same_gradients(d.numeric(backend="jax", reduce=reduce)(x, y, params), *expected, rtol=1e-12)


@pytest.mark.parametrize("reduce", [None, "mean"])
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_max_pooling_with_ties_and_padding(reduce, rng):
    net = network(OPERATIONS["maxpool, overlapping and padded"])
    d = net.derive()
    _, _, params = draw_point(net, rng)
    x, y = batch(net, rng, 5, ties=True)
    expected = d.numeric(style="layers", reduce=reduce)(x, y, params)
    assert_same_gradients(d.numeric(backend="jax", reduce=reduce)(x, y, params), *expected, rtol=1e-12)


@pytest.mark.parametrize("size", [0, 1])
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_empty_and_single_batches(size, rng):
    net = sb.presets.lenet5()
    d = net.derive()
    _, _, params = draw_point(net, rng)
    x, y = batch(net, rng, size)
    out = d.numeric(backend="jax")(x, y, params)
    assert out.grads["W5"].shape == (size, 120, 400) and out.loss.shape == (size,)
    if size:
        assert_same_gradients(out, *d.numeric()(x, y, params), rtol=1e-12)
        one = d.numeric(backend="jax")(x[0], y[0], params)
        assert one.grads["x"].shape == (1, 32, 32) and isinstance(one.loss, float)


def test_a_generic_activation_is_chosen_at_run_time(rng):
    d = sb.presets.article().derive()
    net = sb.presets.article().with_choices(g="softplus", loss="cross_entropy")
    _, _, params = draw_point(net, rng)
    x, y = batch(net, rng, 4)
    f = d.numeric(g="softplus", loss="cross_entropy", backend="jax", reduce="sum")
    expected = d.numeric(g="softplus", loss="cross_entropy", style="layers", reduce="sum")(x, y, params)
    assert_same_gradients(f(x, y, params), *expected, rtol=1e-12)


def test_the_jax_module_is_the_per_layer_code_with_jnp():
    source = numeric.module_source(sb.presets.lenet5().derive(), backend="jax")
    assert "import jax.numpy as jnp\n" in source and 'jax.config.update("jax_enable_x64", True)' in source
    assert "    a1 = tanh(z1)\n" in source and "numpy.ascontiguousarray(x" not in source
    assert "    da1 = _spread_windows(da2 / 4, (6, 28, 28, B), (2, 2), (2, 2))\n" in source
    assert "jnp.broadcast_to(d[:, None, None]" in source  # jax's own _spread_windows
    with pytest.raises(ValueError, match="backend='jax' runs the per-layer code only"):
        numeric.module_source(sb.presets.article().derive(), style="nodes", backend="jax")


# ---- graphs: every network of tests/graphs.py, and resnet_tiny ---------------------------------

GRAPH_NETWORKS = {**GRAPHS, "resnet_tiny": sb.presets.resnet_tiny}


def graph_batch(net: sb.Network, rng, size: int):
    _, _, params = draw_point(net, rng)
    x = rng.normal(size=(size, *net.input_shape))
    y = rng.dirichlet(np.ones(net.output_size), size=size)
    return x, y, params


@pytest.mark.slow  # four jax.jit compiles per network: per sample and summed, batches of 1 and 5
@pytest.mark.parametrize("name", list(GRAPH_NETWORKS))
def test_graphs_give_the_numbers_of_numpy_and_torch(name, rng):
    net = GRAPH_NETWORKS[name]()
    d = net.derive()  # one module: "sum" and "mean" share its summed program, compiled once
    for size in (1, 5):
        x, y, params = graph_batch(net, rng, size)
        for reduce in (None, "sum", "mean"):
            out = d.numeric(backend="jax", reduce=reduce)(x, y, params)
            expected = d.numeric(style="layers", reduce=reduce)(x, y, params)
            assert_same_gradients(out, *expected, rtol=1e-12)
            if reduce is None:
                assert_same_gradients(out, *torch_batch_loss_and_grads(net, x, y, params))
            else:
                assert_same_gradients(out, *torch_reduced_loss_and_grads(net, x, y, params, reduce))
    for reduce in (None, "sum", "mean"):
        f = d.numeric(backend="jax", reduce=reduce)
        one = f(x[0], y[0], params)  # one sample (C, H, W): the program on a batch of one
        expected = d.numeric(style="layers", reduce=reduce)(x[0], y[0], params)
        assert_same_gradients(one, *expected, rtol=1e-12)
        empty = f(*graph_batch(net, rng, 0))
        lead = (0,) if reduce is None else ()
        assert {n: g.shape for n, g in empty.grads.items()} == {
            "x": (0, *net.input_shape), **{n: (*lead, *shape) for n, shape in net.parameters.items()}
        }


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_resnet_tiny_summed_over_a_batch_is_torch_backward(rng):
    net = sb.presets.resnet_tiny()
    x, y, params = graph_batch(net, rng, 6)
    out = net.derive().numeric(backend="jax", reduce="sum")(x, y, params)
    assert_same_gradients(out, *torch_reduced_loss_and_grads(net, x, y, params, "sum"))
    source = numeric.module_source(net.derive(), backend="jax")
    assert "    a4 = a1 + a3\n" in source  # the identity shortcut's join
    assert "    da1 = da1_2 + da1_4\n" in source  # the stem's gradient from both its readers


@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_batch_normalisation_in_train_mode_gives_the_numpy_numbers(reduce, rng):
    # the batch's statistics from a channel's values as rows, dL/dx from the two sums
    net = sb.presets.resnet_tiny(batch_norm=True)
    d = net.derive()
    _, _, params = draw_point(net, rng)
    x = rng.normal(size=(4, *net.input_shape))
    y = rng.dirichlet(np.ones(net.output_size), size=4)
    expected = d.numeric(reduce=reduce)(x, y, params)
    assert_same_gradients(d.numeric(backend="jax", reduce=reduce)(x, y, params), *expected, rtol=1e-10)


# ---- float32 ------------------------------------------------------------------------------------

JAX_FLOAT32_CASES = {name: lambda op=op: network(op) for name, op in OPERATIONS.items()}
JAX_FLOAT32_CASES.update(GRAPH_NETWORKS)
JAX_FLOAT32_CASES.update({preset: getattr(sb.presets, preset) for preset in ("lenet5", "fcn_tiny", "unet_tiny")})


QUICK = ("conv", "maxpool, overlapping and padded", "lenet5")  # the others: a jax.jit compile each, slow


@pytest.mark.parametrize("name", [
    name if name in QUICK else pytest.param(name, marks=pytest.mark.slow) for name in JAX_FLOAT32_CASES
])
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_float32_jax_arrays_stay_float32_and_give_the_numpy_float32_numbers(name, rng):
    import re


    net = JAX_FLOAT32_CASES[name]()
    d = net.derive()
    x, y, params = graph_batch(net, rng, 3)
    module = numeric.compiled(d, None, "jax", "float32")
    chosen = module.choose(module._LAYOUT, None, None)
    as32 = {name: value.astype(np.float32) for name, value in params.items()}

    def program(x, y, params):
        return module._layers(x, y, params, *chosen, {}, False, 1.0)

    traced = str(jax.make_jaxpr(program)(x.astype(np.float32), y.astype(np.float32), as32))
    # no float64 array anywhere in the compiled program (weakly typed scalars such as the
    # padding's 0.0 take the array's dtype)
    assert not re.search(r"f64\[\d", traced), [line for line in traced.splitlines() if re.search(r"f64\[\d", line)][:3]
    rtol, atol = numeric.TOLERANCES["float32"]
    for reduce in (None, "sum"):
        out = d.numeric(backend="jax", reduce=reduce, dtype="float32")(x, y, params)
        assert {grad.dtype for grad in out.grads.values()} == {np.dtype(np.float32)}
        expected = d.numeric(style="layers", reduce=reduce)(x, y, params)  # float64
        for key, grad in expected.grads.items():
            assert np.abs(out.grads[key] - grad).max() <= atol + rtol * np.abs(grad).max(), key
