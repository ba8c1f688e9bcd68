"""The torch oracle: the same network built from PyTorch layers, and random points to test at.

Shared by the tests of the symbolic engine, the numeric code and the handout: a
network's gradients are proved right by comparing them with what PyTorch's
autograd computes for the same weights (float64). Builds only on the network's
settings (layer types, sizes, activation and loss names), never on its graph.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import symbackprop as sb

torch.set_default_dtype(torch.float64)

TORCH_ACTIVATIONS = {
    "identity": lambda z: z,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "softplus": F.softplus,
    "leaky_relu": lambda z: F.leaky_relu(z, 0.01),
}

TORCH_LOSSES = {
    "sse": lambda a, y: 0.5 * ((a - y) ** 2).sum(),
    "mse": lambda a, y: F.mse_loss(a, y),
    "cross_entropy": lambda a, y: F.cross_entropy(a[None], y[None]),
}


def torch_forward(net: sb.Network, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The network's output for one sample x of shape (C, H, W)."""
    h = x[None]
    for number, layer in enumerate(net.layers, start=1):
        weight, bias = params[f"W{number}"], params.get(f"b{number}")
        if isinstance(layer, sb.Conv2D):
            h = F.conv2d(h, weight, bias, stride=layer.stride, padding=layer.padding)
        else:
            h = F.linear(h.reshape(1, -1), weight, bias)
        h = TORCH_ACTIVATIONS[layer.activation](h)
    return h.reshape(-1)


def torch_loss_and_grads(
    net: sb.Network, x: np.ndarray, y: np.ndarray, params: dict[str, np.ndarray]
) -> tuple[float, dict[str, np.ndarray]]:
    """PyTorch's loss and its gradients for every parameter and for "x", one sample."""
    tx = torch.tensor(x, requires_grad=True)
    tp = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    loss = TORCH_LOSSES[net.loss](torch_forward(net, tx, tp), torch.tensor(y))
    loss.backward()
    grads = {name: t.grad.numpy() for name, t in tp.items()}
    grads["x"] = tx.grad.numpy()
    return loss.item(), grads


def random_point(net: sb.Network, rng: np.random.Generator, scale: float = 0.6):
    """Inputs, targets and weights drawn at random: x (C, H, W), y (K,), params by name.

    Targets are a probability vector for cross-entropy and plain numbers otherwise.
    """
    x = rng.normal(size=net.input_shape)
    k = net.output_size
    y = rng.dirichlet(np.ones(k)) if net.loss == "cross_entropy" else rng.normal(size=k)
    params = {name: rng.normal(size=shape) * scale for name, shape in net.parameters.items()}
    return x, y, params


def torch_batch_loss_and_grads(
    net: sb.Network, x: np.ndarray, y: np.ndarray, params: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """PyTorch's per-sample losses (B,) and per-sample gradients (B, *shape) for a batch
    x (B, C, H, W), y (B, K), through ``torch.func``: one sample's autograd, vectorised."""
    from torch.func import grad_and_value, vmap

    def one_sample(p, xs, ys):
        return TORCH_LOSSES[net.loss](torch_forward(net, xs, p), ys)

    tp = {name: torch.tensor(value) for name, value in params.items()}
    per_sample = vmap(grad_and_value(one_sample, argnums=(0, 1)), in_dims=(None, 0, 0))
    (grads, x_grads), losses = per_sample(tp, torch.tensor(x), torch.tensor(y))
    return losses.numpy(), {"x": x_grads.numpy(), **{n: g.numpy() for n, g in grads.items()}}


def sign_flipped(net: sb.Network, name: str, index: tuple[int, ...]) -> sb.Derivation:
    """A test double: ``net``'s derivation with the sign of one gradient element flipped in its
    program — what a wrong derivation looks like to the numeric code and to ``check``."""
    import dataclasses
    from functools import cached_property

    import sympy

    class SignFlipped(sb.Derivation):
        @cached_property
        def program(self):
            program = sb.Derivation.program.func(self)
            elements = sympy.MutableDenseNDimArray(program.gradients[name])
            elements[index] = -elements[index]
            gradients = {**program.gradients, name: sympy.ImmutableDenseNDimArray(elements)}
            return dataclasses.replace(program, gradients=gradients)

    return SignFlipped(net)


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-9) -> None:
    """Normwise: max |actual - expected| within rtol of the largest |expected| (+ rounding)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    error = np.abs(actual - expected).max(initial=0.0)
    assert error <= rtol * np.abs(expected).max(initial=0.0) + 1e-12, f"max error {error:.3g}"


def assert_same_gradients(out, loss, grads, rtol: float = 1e-9) -> None:
    """``out.loss`` and ``out.grads`` equal another method's ``loss`` and ``grads``, each within
    ``rtol`` of its largest magnitude (1e-9: far below a wrong sign, term or transposed kernel)."""
    assert_close(out.loss, loss, rtol)
    assert out.grads.keys() == grads.keys()
    for name in grads:
        assert_close(out.grads[name], grads[name], rtol)
