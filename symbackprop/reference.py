"""An independent numeric backprop: the second opinion on every derived gradient.

A vectorised numpy forward and backward pass over a batch, written from the
layer-level formulas a textbook gives rather than node by node. Each operation's
own formulas are its reference face (``reference_forward``, ``reference_backward`` in
``symbackprop/ops/``: a convolution's input gradient as the full correlation with the
rotated kernel, a max pool's as the gradient routed to each window's first maximum, a
dense layer's as Wᵀ ∂L/∂z); this module chains them through the activations and the loss,
over the network's graph: forward in layer order, backward in reverse, each layer's
upstream gradient the sum of what the layers reading it send back.

Activations (in ``ops/arrays.py``, shared with the activation operation's reference face)
and losses have their own numpy definitions, with PyTorch's conventions: ReLU′(0) = 0,
leaky ReLU′(0) = 0.01 (slope 0.01), ``mse`` the mean over outputs, ``cross_entropy`` with
probability targets, softplus the exact log(1 + e^z).

Reads only a network's settings — its operations, what each reads, activation names, input
shape and loss name — and imports numpy alone (and ``ops/arrays.py``, numpy alone too):
nothing of symbackprop's activations, losses, graph or derivation, so that a mistake there
cannot hide here (and the reference faces of the operations are held to numpy alone by a
test).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from .ops.arrays import ACTIVATIONS, KINKED  # noqa: F401 - numpy alone, PyTorch's conventions

Array = np.ndarray


class Result(NamedTuple):
    """The loss (a float, or shape (B,) for a batch) and the gradients by name ("x" and each
    parameter), with a leading B for a batch: per-sample gradients."""

    loss: Any
    grads: dict[str, Array]


# ---- activations and losses, in numpy ---------------------------------------------------------


def _log_softmax(a: Array) -> Array:
    shifted = a - a.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# name -> (L(a, y) per sample, ∂L/∂a), for outputs a and targets y of shape (B, *output): a
# vector (B, K) or a map (B, C, H, W). Softmax runs along axis 1 — the K outputs of a vector,
# the C channels of each pixel of a map (torch's CrossEntropyLoss on (N, C, H, W)) — and a
# sample's loss sums over every other axis.


def _total(values: Array) -> Array:
    """Per sample: the sum over every axis but the batch's."""
    return values.reshape(len(values), -1).sum(axis=1)


LOSSES: dict[str, tuple[Callable[[Array, Array], Array], Callable[[Array, Array], Array]]] = {
    "sse": (lambda a, y: 0.5 * _total((a - y) ** 2), lambda a, y: a - y),
    "mse": (lambda a, y: _total((a - y) ** 2) / a[0].size, lambda a, y: 2 * (a - y) / a[0].size),
    "cross_entropy": (
        lambda a, y: -_total(y * _log_softmax(a)),
        # y need not sum to one: the softmax term keeps its factor Σ y.
        lambda a, y: np.exp(_log_softmax(a)) * y.sum(axis=1, keepdims=True) - y,
    ),
    "binary_cross_entropy": (  # with logits: softplus(a) − y a, σ(a) − y
        lambda a, y: _total(np.logaddexp(0.0, a) - y * a),
        lambda a, y: np.exp(-np.logaddexp(0.0, -a)) - y,
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


def _layer_params(net: Any, params: Mapping[str, Array], number: int) -> dict[str, Array]:
    """Layer ``number``'s parameters and buffers (batch normalisation's running statistics, in
    eval mode) under the names its operation knows them by ("W", "b", "running_mean")."""
    names = {**net.layer_parameters(number), **net.layer_buffers(number)}
    return {prefix: np.asarray(params[name], dtype=float) for prefix, name in names.items()}


def forward(net: Any, x: Array, params: Mapping[str, Array], g: str | None = None) -> list[Array]:
    """Each layer's z (before its activation; a pool's output) for a batch x, first layer first."""
    return forward_pass(net, x, params, g)[1]


def layer_inputs(net: Any, x: Array, params: Mapping[str, Array], g: str | None = None) -> list[Any]:
    """Each layer's input for a batch x, first layer first: the output a of the layer it reads
    (x for the input), or a tuple of them for an operation of several inputs (``Op.given``)."""
    return forward_pass(net, x, params, g)[0]


def forward_pass(
    net: Any, x: Array, params: Mapping[str, Array], g: str | None = None
) -> tuple[list[Any], list[Array]]:
    """Each layer's input and its z, from one forward pass over a batch x, first layer first."""
    inputs, zs, _ = _forward(net, np.asarray(x, dtype=float), params, g)
    return inputs, zs


def _forward(net: Any, x: Array, params: Mapping[str, Array], g: str | None):
    """Each layer's input (as its operation takes it) and z, and the network's output (B, *shape):
    the layers in order, each reading the outputs of the layers it names (0: x)."""
    outputs: list[Array] = [x]  # a of every layer, x first
    inputs, zs = [], []
    for number, layer in enumerate(net.layers, start=1):
        given = layer.given([outputs[source] for source in net.sources[number - 1]])
        inputs.append(given)
        z = layer.reference_forward(given, _layer_params(net, params, number))
        zs.append(z)
        outputs.append(_activation(layer.activation, g)[0](z) if layer.has_activation else z)
    return inputs, zs, outputs[-1]


def loss_value(
    net: Any,
    x: Array,
    y: Array,
    params: Mapping[str, Array],
    g: str | None = None,
    loss: str | None = None,
    reduce: str | None = None,
) -> Any:
    """The loss at one sample (a float) or per sample of a batch (shape (B,)); ``reduce``
    "sum" or "mean": the batch's (a float)."""
    _check_reduce(reduce)
    net = _concrete(net, g)
    x, y, single = _batched(net, x, y)
    value = _loss(net.loss, loss)[0](_forward(net, x, params, g)[2], y)
    if reduce is not None and not single:
        return float(_reduced(value, reduce))
    return float(value[0]) if single else value


def loss_and_grads(
    net: Any,
    x: Array,
    y: Array,
    params: Mapping[str, Array],
    g: str | None = None,
    loss: str | None = None,
    reduce: str | None = None,
) -> Result:
    """The loss and the gradients of "x" and every parameter, for one sample x (C, H, W)
    or per sample of a batch x (B, C, H, W); g= and loss= choose a generic activation and loss.
    ``reduce`` "sum" or "mean": the batch's loss and its gradients, shaped like the parameters
    (x's per sample), as the numeric code gives them.

    A layer that mixes the samples (batch normalisation in train mode) runs over the whole
    batch, so its per-sample gradients are each sample's share of the batch's: they sum to the
    gradient of the summed loss, which is what the reduced result gives.

    Backward, the layers in reverse: a layer's upstream gradient is the sum of what every
    layer reading it sent back (all of them come later).

    >>> import numpy as np, symbackprop as sb
    >>> net = sb.Network((1, 2, 2), [sb.Dense(units=1)], loss="sse")
    >>> out = loss_and_grads(net, np.ones((1, 2, 2)), np.zeros(1), {"W1": np.ones((1, 4))})
    >>> out.loss, out.grads["W1"].tolist()
    (8.0, [[4.0, 4.0, 4.0, 4.0]])
    """
    _check_reduce(reduce)
    net = _concrete(net, g)
    x, y, single = _batched(net, x, y)
    params = {name: np.asarray(value, dtype=float) for name, value in params.items()}
    value_of, gradient_of = _loss(net.loss, loss)
    inputs, zs, out = _forward(net, x, params, g)
    last = len(net.layers)
    upstream: dict[int, Array] = {last: gradient_of(out, y)}  # ∂L/∂a of each layer, summed
    grads: dict[str, Array] = {}
    for number in range(last, 0, -1):
        layer, z = net.layers[number - 1], zs[number - 1]
        dz = upstream.pop(number).reshape(z.shape)
        if layer.has_activation:
            dz = dz * _activation(layer.activation, g)[1](z)
        taken, layer_grads = layer.reference_backward(dz, inputs[number - 1], _layer_params(net, params, number))
        for source, gradient in zip(net.sources[number - 1], layer.per_input(taken)):
            upstream[source] = upstream[source] + gradient if source in upstream else gradient
        grads.update({net.layer_parameters(number)[prefix]: grad for prefix, grad in layer_grads.items()})
    upstream = upstream.get(0, np.zeros_like(x))
    grads = {"x": upstream, **{name: grads[name] for name in net.parameters}}
    value = value_of(out, y)
    if single:
        return Result(float(value[0]), {name: grad[0] for name, grad in grads.items()})
    if reduce is not None:
        scale = 1.0 / len(x) if reduce == "mean" else 1.0
        return Result(
            float(_reduced(value, reduce)),
            {name: grad * scale if name == "x" else _reduced(grad, reduce) for name, grad in grads.items()},
        )
    return Result(value, grads)


def _reduced(values: Array, reduce: str) -> Array:
    """The sum or the mean over the batch's axis."""
    return values.sum(axis=0) if reduce == "sum" else values.mean(axis=0)


def _check_reduce(reduce: str | None) -> None:
    if reduce not in (None, "sum", "mean"):
        raise ValueError(f"reduce={reduce!r}; choose None (per sample), 'sum' or 'mean'")


def _concrete(net: Any, g: str | None) -> Any:
    """The network with a generic activation made ``g`` (the operations' reference faces then
    know every function they apply)."""
    return net.with_choices(g=g) if g is not None and net.generic_activation else net


def _batched(net: Any, x: Array, y: Array) -> tuple[Array, Array, bool]:
    """x and y with a batch axis first, y shaped like the output (B, *output): targets come
    flattened (K,) or shaped like the output."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    single = x.shape == tuple(net.input_shape)
    x, y = (x[None], y[None]) if single else (x, y)
    return x, y.reshape(len(y), *net.shapes[-1]), single
