"""An independent numeric backprop: the second opinion on every derived gradient.

A vectorised numpy forward and backward pass over a batch, written from the
layer-level formulas a textbook gives rather than node by node. Each operation's
own formulas are its reference face (``reference_forward``, ``reference_backward`` in
``symbackprop/ops/``: a convolution's input gradient as the full correlation with the
rotated kernel, a max pool's as the gradient routed to each window's first maximum, a
dense layer's as Wᵀ ∂L/∂z); this module chains them through the activations and the loss.

Activations and losses have their own numpy definitions here, with PyTorch's
conventions: ReLU′(0) = 0, leaky ReLU′(0) = 0.01 (slope 0.01), ``mse`` the mean
over outputs, ``cross_entropy`` with probability targets, softplus the exact
log(1 + e^z).

Reads only a network's settings — its operations, activation names, input shape and
loss name — and imports numpy alone: nothing of symbackprop's activations, losses,
graph or derivation, so that a mistake there cannot hide here (and the reference
faces of the operations are held to numpy alone by a test).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

Array = np.ndarray


class Result(NamedTuple):
    """The loss (a float, or shape (B,) for a batch) and the gradients by name ("x" and each
    parameter), with a leading B for a batch: per-sample gradients."""

    loss: Any
    grads: dict[str, Array]


# ---- activations and losses, in numpy ---------------------------------------------------------


def _sigmoid(z: Array) -> Array:
    return np.exp(-np.logaddexp(0.0, -z))  # 1 / (1 + e^-z) without overflow


LEAKY_SLOPE = 0.01

# name -> (a(z), da/dz(z))
ACTIVATIONS: dict[str, tuple[Callable[[Array], Array], Callable[[Array], Array]]] = {
    "identity": (lambda z: z, np.ones_like),
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1 - _sigmoid(z))),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
    "softplus": (lambda z: np.logaddexp(0.0, z), _sigmoid),
    "leaky_relu": (
        lambda z: np.where(z > 0, z, LEAKY_SLOPE * z),
        lambda z: np.where(z > 0, 1.0, LEAKY_SLOPE),
    ),
}
KINKED = {"relu", "leaky_relu"}  # their derivative jumps at z = 0


def _log_softmax(a: Array) -> Array:
    shifted = a - a.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# name -> (L(a, y) per sample, ∂L/∂a), for outputs a and targets y of shape (B, K)
LOSSES: dict[str, tuple[Callable[[Array, Array], Array], Callable[[Array, Array], Array]]] = {
    "sse": (lambda a, y: 0.5 * ((a - y) ** 2).sum(axis=1), lambda a, y: a - y),
    "mse": (lambda a, y: ((a - y) ** 2).mean(axis=1), lambda a, y: 2 * (a - y) / a.shape[1]),
    "cross_entropy": (
        lambda a, y: -(y * _log_softmax(a)).sum(axis=1),
        # y need not sum to one: the softmax term keeps its factor Σ y.
        lambda a, y: np.exp(_log_softmax(a)) * y.sum(axis=1, keepdims=True) - y,
    ),
}


def _pick(table: dict, kind: str, name: str, generic: str, choice: str | None, how: str):
    """``table[name]``, or ``table[choice]`` when ``name`` is the generic one."""
    if name == generic:
        if choice is None:
            raise ValueError(f"the network leaves its {how}")
        name = choice
    if name not in table:
        raise ValueError(f"no reference {kind} {name!r}; known: {', '.join(table)}")
    return table[name]


def _activation(name: str, g: str | None) -> tuple[Callable, Callable]:
    return _pick(ACTIVATIONS, "activation", name, "g", g, "activation g generic: pass g=NAME")


def _loss(name: str, loss: str | None) -> tuple[Callable, Callable]:
    return _pick(LOSSES, "loss", name, "generic", loss, "loss generic: pass loss=NAME")


# ---- the network ----------------------------------------------------------------------------


def _layer_params(params: Mapping[str, Array], number: int) -> dict[str, Array]:
    """Layer ``number``'s parameters under the names its operation knows them by ("W", "b")."""
    return {kind: params[f"{kind}{number}"] for kind in "Wb" if f"{kind}{number}" in params}


def forward(net: Any, x: Array, params: Mapping[str, Array], g: str | None = None) -> list[Array]:
    """Each layer's z (before its activation; a pool's output) for a batch x, first layer first."""
    return forward_pass(net, x, params, g)[1]


def layer_inputs(net: Any, x: Array, params: Mapping[str, Array], g: str | None = None) -> list[Array]:
    """Each layer's input (x, then each layer's output a) for a batch x, first layer first."""
    return forward_pass(net, x, params, g)[0]


def forward_pass(
    net: Any, x: Array, params: Mapping[str, Array], g: str | None = None
) -> tuple[list[Array], list[Array]]:
    """Each layer's input and its z, from one forward pass over a batch x, first layer first."""
    inputs, zs, _ = _forward(net, np.asarray(x, dtype=float), params, g)
    return inputs, zs


def _forward(net: Any, x: Array, params: Mapping[str, Array], g: str | None):
    inputs, zs, h = [], [], x
    for number, layer in enumerate(net.layers, start=1):
        inputs.append(h)
        z = layer.reference_forward(h, _layer_params(params, number))
        zs.append(z)
        h = _activation(layer.activation, g)[0](z) if layer.has_activation else z
    return inputs, zs, h.reshape(len(h), -1)


def loss_value(
    net: Any,
    x: Array,
    y: Array,
    params: Mapping[str, Array],
    g: str | None = None,
    loss: str | None = None,
) -> Any:
    """The loss at one sample (a float) or per sample of a batch (shape (B,))."""
    x, y, single = _batched(net, x, y)
    value = _loss(net.loss, loss)[0](_forward(net, x, params, g)[2], y)
    return float(value[0]) if single else value


def loss_and_grads(
    net: Any,
    x: Array,
    y: Array,
    params: Mapping[str, Array],
    g: str | None = None,
    loss: str | None = None,
) -> Result:
    """The loss and the gradients of "x" and every parameter, for one sample x (C, H, W)
    or per sample of a batch x (B, C, H, W); g= and loss= choose a generic activation and loss.

    >>> import numpy as np, symbackprop as sb
    >>> net = sb.Network((1, 2, 2), [sb.Dense(units=1)], loss="sse")
    >>> out = loss_and_grads(net, np.ones((1, 2, 2)), np.zeros(1), {"W1": np.ones((1, 4))})
    >>> out.loss, out.grads["W1"].tolist()
    (8.0, [[4.0, 4.0, 4.0, 4.0]])
    """
    x, y, single = _batched(net, x, y)
    params = {name: np.asarray(value, dtype=float) for name, value in params.items()}
    value_of, gradient_of = _loss(net.loss, loss)
    inputs, zs, out = _forward(net, x, params, g)
    upstream = gradient_of(out, y)  # ∂L/∂a of the last layer, then of each layer below
    grads: dict[str, Array] = {}
    for number in range(len(net.layers), 0, -1):
        layer, z, h = net.layers[number - 1], zs[number - 1], inputs[number - 1]
        dz = upstream.reshape(z.shape)
        if layer.has_activation:
            dz = dz * _activation(layer.activation, g)[1](z)
        upstream, layer_grads = layer.reference_backward(dz, h, _layer_params(params, number))
        grads.update({f"{kind}{number}": grad for kind, grad in layer_grads.items()})
    grads = {"x": upstream, **{name: grads[name] for name in net.parameters}}
    value = value_of(out, y)
    if single:
        return Result(float(value[0]), {name: grad[0] for name, grad in grads.items()})
    return Result(value, grads)


def _batched(net: Any, x: Array, y: Array) -> tuple[Array, Array, bool]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    single = x.shape == tuple(net.input_shape)
    return (x[None], y[None], True) if single else (x, y, False)
