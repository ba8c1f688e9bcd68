"""The generic activation g as a layer of its own, ``sb.Activation("g")``: both numeric codes
take g at run time and agree with the reference (the per-node program once failed: its g′
had no a = g(z) node to pair with)."""

from __future__ import annotations

import numpy as np
import pytest

import symbackprop as sb
from symbackprop import reference, verify
from symbackprop.activations import ACTIVATIONS

CONCRETE = [name for name, a in ACTIVATIONS.items() if not a.generic]


def two_units() -> sb.Network:
    """x (2) → dense 2 → g → dense 1, sse: z = W1 x, a = g(z), out = W3 a."""
    return sb.Network((2,), [sb.Dense(units=2), sb.Activation("g"), sb.Dense(units=1)], loss="sse")


PARAMS = {"W1": np.array([[1.0, 0.0], [0.0, 2.0]]), "W3": np.array([[1.0, 1.0]])}
X, Y = np.array([1.0, -1.0]), np.array([0.0])


@pytest.mark.parametrize("style", ["nodes", "layers"])
def test_g_as_sigmoid_by_hand(style):
    # z = (1, -2), a = (σ(1), σ(-2)) = (0.73106, 0.11920), out = 0.85026, L = out² / 2;
    # dL/dW3 = out a; dL/dW1 = out σ'(z) xᵀ, σ'(z) = a (1 - a) = (0.19661, 0.10499)
    out = two_units().derive().numeric(g="sigmoid", style=style)(X, Y, PARAMS)
    assert out.loss == pytest.approx(0.36147230974559963, rel=1e-14)
    np.testing.assert_allclose(out.grads["W3"], [[0.62159096, 0.10135366]], rtol=1e-7)
    np.testing.assert_allclose(out.grads["W1"], [[0.16717156, -0.16717156], [0.089272, -0.089272]], rtol=1e-6)
    np.testing.assert_allclose(out.grads["x"], [0.16717156, 2 * 0.089272], rtol=1e-6)


@pytest.mark.parametrize("style", ["nodes", "layers"])
def test_g_as_tanh_by_hand(style):
    # a = (tanh 1, tanh -2) = (0.76159, -0.96403), out = -0.20243; tanh' = 1 - a²
    out = two_units().derive().numeric(g="tanh", style=style)(X, Y, PARAMS)
    assert out.loss == pytest.approx(0.020489645600484437, rel=1e-13)
    np.testing.assert_allclose(out.grads["W3"], [[-0.15417211, 0.1951514]], rtol=1e-7)
    np.testing.assert_allclose(out.grads["W1"], [[-0.08501684, 0.08501684], [-0.01430209, 0.01430209]], rtol=1e-6)


def graph_with_g_layers() -> sb.Network:
    """1x4x4 → conv 2@3x3 (padding 1, bias) → g → maxpool 2 → g, plus g of the input through a
    conv 2@3x3, added → dense 2: g after a conv, after a pool and on the input itself."""
    x = sb.Input((1, 4, 4))
    h = sb.Activation("g")(sb.Conv2D(out_channels=2, kernel_size=3, padding=1, bias=True)(x))
    pooled = sb.Activation("g")(sb.MaxPool2D(kernel_size=2)(h))  # 2x2x2
    skip = sb.Conv2D(out_channels=2, kernel_size=3)(sb.Activation("g")(x))  # 2x2x2
    return sb.Network(inputs=x, outputs=sb.Dense(units=2)(sb.Add()(pooled, skip)), loss="sse")


@pytest.mark.parametrize("g", CONCRETE)
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_both_codes_agree_with_the_reference_for_every_choice_of_g(g, rng):
    net = graph_with_g_layers()
    d = net.derive()
    params = {name: rng.normal(size=shape) for name, shape in net.parameters.items()}
    xs, ys = rng.normal(size=(3, 1, 4, 4)), rng.normal(size=(3, 2))
    expected = reference.loss_and_grads(net, xs, ys, params, g=g)
    for style in ("nodes", "layers"):
        f = d.numeric(g=g, style=style)
        batch = f(xs, ys, params)
        one = f(xs[1], ys[1], params)
        np.testing.assert_allclose(batch.loss, expected.loss, rtol=1e-12)
        assert one.loss == pytest.approx(expected.loss[1], rel=1e-12)
        for name, grad in expected.grads.items():
            np.testing.assert_allclose(batch.grads[name], grad, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(one.grads[name], grad[1], rtol=1e-9, atol=1e-12)
        summed = d.numeric(g=g, style=style, reduce="sum")(xs, ys, params)
        np.testing.assert_allclose(summed.grads["W1"], expected.grads["W1"].sum(axis=0), rtol=1e-9, atol=1e-12)


def test_check_passes_with_the_per_node_program():
    report = verify.check(graph_with_g_layers().derive(), samples=1)
    assert report.styles == ["layers", "nodes"] and report.agree
    assert [run.g for run in report.runs] == CONCRETE
