"""The torch oracle: the same network in PyTorch (``sb.to_torch``), and random points to test at.

Shared by the tests of the symbolic engine, the numeric code and the handout: a
network's gradients are proved right by comparing them with what PyTorch's
autograd computes for the same weights (float64). The bridge builds only on the
network's settings (each operation's torch twin), never on its graph.
"""

from __future__ import annotations

import numpy as np

import symbackprop as sb
from symbackprop import torch_bridge


def torch_loss_and_grads(
    net: sb.Network, x: np.ndarray, y: np.ndarray, params: dict[str, np.ndarray]
) -> tuple[float, dict[str, np.ndarray]]:
    """PyTorch's loss and its gradients for every parameter and for "x", one sample, through
    ``sb.to_torch`` (the one bridge; softplus exact, see symbackprop.torch_bridge)."""
    losses, grads = torch_bridge.loss_and_grads(net, x[None], y[None], params)
    return float(losses[0]), {name: grad[0] for name, grad in grads.items()}


def random_point(net: sb.Network, rng: np.random.Generator, scale: float = 0.6):
    """Inputs, targets and weights drawn at random: x (C, H, W), y (K,), params by name (and
    buffers, the running statistics of batch normalisation in eval mode).

    Targets are a probability vector for cross-entropy and plain numbers otherwise.
    """
    x = rng.normal(size=net.input_shape)
    k = net.output_size
    y = rng.dirichlet(np.ones(k)) if net.loss == "cross_entropy" else rng.normal(size=k)
    params = {name: rng.normal(size=shape) * scale for name, shape in net.parameters.items()}
    for name, shape in net.buffers.items():  # running statistics (eval mode): a variance is positive
        params[name] = rng.uniform(0.5, 2.0, size=shape) if "var" in name else rng.normal(size=shape)
    return x, y, params


def torch_batch_loss_and_grads(
    net: sb.Network, x: np.ndarray, y: np.ndarray, params: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """PyTorch's per-sample losses (B,) and per-sample gradients (B, *shape) for a batch
    x (B, C, H, W), y (B, K): one autograd pass per sample, through the bridge."""
    return torch_bridge.loss_and_grads(net, x, y, params)


def torch_reduced_loss_and_grads(
    net: sb.Network, x: np.ndarray, y: np.ndarray, params: dict[str, np.ndarray], reduce: str
) -> tuple[float, dict[str, np.ndarray]]:
    """PyTorch's ``backward`` of the batch's summed or mean loss (``reduce``), in one pass over
    the batch: the loss, each parameter's gradient (shaped like it) and x's per sample."""
    import torch

    model = torch_bridge.to_torch(net, params, exact=True)
    inputs = torch.tensor(np.asarray(x, dtype=float), requires_grad=True)
    outputs = model(inputs).reshape(len(x), net.output_size)
    losses = torch_bridge.torch_loss(net)(outputs, torch.tensor(np.asarray(y, dtype=float)))
    total = losses.sum() if reduce == "sum" else losses.mean()
    total.backward()
    grads = {"x": inputs.grad.numpy()}
    grads.update({name: p.grad.numpy() for name, p in zip(net.parameters, model.parameters())})
    return float(total.detach()), grads


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
