"""The reference backprop: layer-level numpy formulas, checked by hand and against PyTorch."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
from hypothesis import given
from oracle import (
    assert_same_gradients,
    torch_batch_loss_and_grads,
    torch_loss_and_grads,
)
from strategies import networks

import symbackprop as sb
from symbackprop import reference, torch_bridge
from symbackprop.activations import ACTIVATIONS
from symbackprop.losses import LOSSES
from symbackprop.verify import draw_point

# ---- every registry entry has a counterpart --------------------------------------------------


def test_every_activation_and_loss_has_a_reference_and_a_torch_counterpart():
    torch_activations = {name for name, entry in ACTIVATIONS.items() if entry.torch is not None}
    counterparts = {
        "symbackprop.reference": (reference.ACTIVATIONS, reference.LOSSES),
        "symbackprop.torch_bridge": (torch_activations, torch_bridge._torch_losses()),
    }
    gaps = [
        f"{kind} {name!r} has no counterpart in {where}"
        for where, (activations, losses) in counterparts.items()
        for kind, registry, table in [
            ("activation", ACTIVATIONS, activations),
            ("loss", LOSSES, losses),
        ]
        for name, entry in registry.items()
        if not entry.generic and name not in table
    ]
    assert not gaps, "; ".join(gaps)


def test_the_reference_imports_nothing_of_the_engine():
    tree = ast.parse(inspect.getsource(reference))
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert imported <= {
        "__future__",
        "collections.abc",
        "typing",
        "numpy",
        "numpy.lib.stride_tricks",
        "ops.arrays",  # numpy alone too: its own imports are checked in test_ops
    }


# ---- the layer formulas, worked by hand ------------------------------------------------------


def test_convolution_forward_is_cross_correlation():
    # z[i, j] = x[i, j] − x[i+1, j+1] with the kernel [[1, 0], [0, −1]] (not flipped): −5 everywhere.
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    kernel = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])
    assert sb.Conv2D(kernel_size=2).reference_forward(x, {"W": kernel}).tolist() == [[[[-5.0] * 3] * 3]]


def test_convolution_forward_with_stride_padding_and_bias():
    # Padding 1 around a 2x2 input of ones, a 2x2 kernel of ones, stride 2: each window
    # covers exactly one input pixel; the bias adds 0.5.
    x = np.ones((1, 1, 2, 2))
    conv = sb.Conv2D(kernel_size=2, stride=2, padding=1, bias=True)
    z = conv.reference_forward(x, {"W": np.ones((1, 1, 2, 2)), "b": np.array([0.5])})
    assert z.tolist() == [[[[1.5, 1.5], [1.5, 1.5]]]]


def test_input_gradient_is_full_correlation_with_the_rotated_kernel():
    # Upstream gradient of ones over a 2x2 output of a 3x3 input, kernel [[1, 2], [3, 4]]:
    # every input pixel collects the kernel weights of the windows that covered it.
    x = np.zeros((1, 1, 3, 3))
    kernel = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    conv = sb.Conv2D(kernel_size=2, bias=True)
    d_x, grads = conv.reference_backward(np.ones((1, 1, 2, 2)), x, {"W": kernel, "b": np.zeros(1)})
    assert d_x.tolist() == [[[[1, 3, 2], [4, 10, 6], [3, 7, 4]]]]
    assert grads["b"].tolist() == [[4.0]]


def test_kernel_gradient_sums_over_positions():
    # ∂L/∂w[m, n] = Σ_positions upstream · x[i + m, j + n]: with upstream ones, the sum of
    # the 2x2 window sums of x = arange(9): [[0+1+3+4, 1+2+4+5], [3+4+6+7, 4+5+7+8]].
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    ones = np.ones((1, 1, 2, 2))
    _, grads = sb.Conv2D(kernel_size=2).reference_backward(ones, x, {"W": ones})
    assert grads["W"].tolist() == [[[[[8, 12], [20, 24]]]]]  # per sample: (B, O, C, kh, kw)


def test_strided_input_gradient_leaves_unvisited_pixels_at_zero():
    # A 1x1 kernel with stride 2 reads only the even rows and columns of a 3x3 input.
    x = np.zeros((1, 1, 3, 3))
    upstream, kernel = np.full((1, 1, 2, 2), 7.0), np.full((1, 1, 1, 1), 2.0)
    d_x, _ = sb.Conv2D(kernel_size=1, stride=2).reference_backward(upstream, x, {"W": kernel})
    assert d_x.tolist() == [[[[14, 0, 14], [0, 0, 0], [14, 0, 14]]]]


def test_dense_backward():
    dz, a = np.array([[1.0, -1.0]]), np.array([[2.0, 3.0, 4.0]])
    weight = np.arange(6.0).reshape(2, 3)
    d_a, grads = sb.Dense(units=2, bias=True).reference_backward(dz, a, {"W": weight, "b": np.zeros(2)})
    assert d_a.tolist() == [[0 - 3, 1 - 4, 2 - 5]]
    assert grads["W"].tolist() == [[[2, 3, 4], [-2, -3, -4]]]
    assert grads["b"].tolist() == [[1, -1]]


@pytest.mark.parametrize(
    "name, z, value, slope",
    [
        ("relu", [-1.0, 0.0, 2.0], [0.0, 0.0, 2.0], [0.0, 0.0, 1.0]),  # ReLU'(0) = 0, as PyTorch
        ("leaky_relu", [-1.0, 0.0, 2.0], [-0.01, 0.0, 2.0], [0.01, 0.01, 1.0]),  # slope at 0
        ("sigmoid", [0.0, -800.0], [0.5, 0.0], [0.25, 0.0]),  # no overflow far out
        ("softplus", [0.0, 800.0], [np.log(2), 800.0], [0.5, 1.0]),
    ],
)
def test_activation_values_and_slopes(name, z, value, slope):
    function, derivative = reference.ACTIVATIONS[name]
    assert function(np.array(z)).tolist() == pytest.approx(value)
    assert derivative(np.array(z)).tolist() == pytest.approx(slope)


def test_cross_entropy_gradient_is_softmax_minus_targets():
    a, y = np.array([[0.0, np.log(3.0)]]), np.array([[0.0, 1.0]])
    value, gradient = reference.LOSSES["cross_entropy"]
    assert value(a, y).tolist() == pytest.approx([np.log(4 / 3)])
    assert gradient(a, y)[0].tolist() == pytest.approx([0.25, -0.25])  # softmax (¼, ¾) − y


# ---- against PyTorch -------------------------------------------------------------------------


@given(networks())
def test_reference_equals_torch(net):
    x, y, params = draw_point(net, np.random.default_rng(3))
    out = reference.loss_and_grads(net, x, y, params)
    assert_same_gradients(out, *torch_loss_and_grads(net, x, y, params))


@given(networks())
def test_reference_batch_equals_torch_per_sample_gradients(net):
    rng = np.random.default_rng(4)
    _, _, params = draw_point(net, rng)
    x = rng.normal(size=(3, *net.input_shape))
    y = rng.dirichlet(np.ones(net.output_size), size=3)
    out = reference.loss_and_grads(net, x, y, params)
    assert_same_gradients(out, *torch_batch_loss_and_grads(net, x, y, params))


def test_generic_choices_are_asked_for():
    net = sb.presets.article()
    x, y = np.zeros((1, 4, 4)), np.zeros(2)
    params = {name: np.zeros(shape) for name, shape in net.parameters.items()}
    with pytest.raises(ValueError, match="leaves its activation g generic: pass g=NAME"):
        reference.loss_and_grads(net, x, y, params, loss="sse")
    with pytest.raises(ValueError, match="leaves its loss generic: pass loss=NAME"):
        reference.loss_and_grads(net, x, y, params, g="relu")
    assert reference.loss_and_grads(net, x, y, params, g="relu", loss="sse").loss == 0.0
