"""An independent numeric backprop: the second opinion on every derived gradient.

A vectorised numpy forward and backward pass over a batch, written from the
layer-level formulas a textbook gives rather than node by node:

* convolution forward is cross-correlation over the zero-padded input,
  z[o, i, j] = Σ_{c,m,n} W[o, c, m, n] · x_pad[c, i·s + m, j·s + n] + b[o];
* its input gradient is the *full* correlation of the upstream gradient — spread
  back out by the stride — with the kernel rotated by 180° (input and output
  channels swapped), cropped back to the unpadded input;
* its kernel gradient sums, over every output position, the upstream gradient
  times the input under that weight; the bias gradient sums the upstream gradient;
* a dense layer is z = W a + b, with ∂L/∂a = Wᵀ ∂L/∂z and ∂L/∂W = ∂L/∂z aᵀ.

Activations and losses have their own numpy definitions here, with PyTorch's
conventions: ReLU′(0) = 0, leaky ReLU′(0) = 0.01 (slope 0.01), ``mse`` the mean
over outputs, ``cross_entropy`` with probability targets.

Reads only a network's settings — each layer's ``kind``, sizes, ``bias`` and
activation name, the input shape and the loss name — and imports numpy alone:
nothing of symbackprop's activations, losses, graph or derivation, so that a
mistake there cannot hide here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

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


# ---- layers ---------------------------------------------------------------------------------


def _windows(x: Array, kernel: tuple[int, int], stride: tuple[int, int]) -> Array:
    """(B, C, H, W) → (B, C, OH, OW, kh, kw): the patch of x under each output position."""
    windows = sliding_window_view(x, kernel, axis=(2, 3))
    return windows[:, :, :: stride[0], :: stride[1]]


def _pad(x: Array, padding: tuple[int, int]) -> Array:
    (ph, pw) = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def conv_forward(x: Array, weight: Array, bias: Array | None, stride, padding) -> Array:
    """Cross-correlation of a batch x (B, C, H, W) with kernels (O, C, kh, kw) → (B, O, OH, OW)."""
    windows = _windows(_pad(x, padding), weight.shape[2:], stride)
    # optimize=True: contract through a matrix product (BLAS), not einsum's plain loops
    z = np.einsum("bchwmn,ocmn->bohw", windows, weight, optimize=True)
    return z if bias is None else z + bias[None, :, None, None]


def conv_backward(
    dz: Array, x: Array, weight: Array, stride, padding
) -> tuple[Array, Array, Array]:
    """∂L/∂x, per-sample ∂L/∂W and ∂L/∂b of a convolution, from ∂L/∂z (B, O, OH, OW)."""
    (kh, kw), (sh, sw), (ph, pw) = weight.shape[2:], stride, padding
    batch, out_channels, out_h, out_w = dz.shape
    padded = _pad(x, padding)
    # Kernel: each weight sums upstream × the input under it, over every output position.
    d_weight = np.einsum(
        "bohw,bchwmn->bocmn", dz, _windows(padded, (kh, kw), stride), optimize=True
    )
    d_bias = dz.sum(axis=(2, 3))
    # Input: spread dz back to the positions the stride visited, then take the full
    # correlation (padding k - 1) with the kernel rotated by 180°, channels swapped.
    spread = np.zeros((batch, out_channels, (out_h - 1) * sh + 1, (out_w - 1) * sw + 1))
    spread[:, :, ::sh, ::sw] = dz
    full = np.pad(spread, ((0, 0), (0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1)))
    rotated = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # (C, O, kh, kw)
    covered = np.einsum(
        "bohwmn,comn->bchw", _windows(full, (kh, kw), (1, 1)), rotated, optimize=True
    )
    # Rows and columns past the last window get no gradient; then the padding is cut off.
    d_padded = np.zeros(padded.shape)
    d_padded[:, :, : covered.shape[2], : covered.shape[3]] = covered
    height, width = x.shape[2:]
    return d_padded[:, :, ph : ph + height, pw : pw + width], d_weight, d_bias


def dense_forward(a: Array, weight: Array, bias: Array | None) -> Array:
    """z = W a (+ b) for a batch of flattened inputs a (B, N) → (B, F)."""
    z = a @ weight.T
    return z if bias is None else z + bias


def dense_backward(dz: Array, a: Array, weight: Array) -> tuple[Array, Array, Array]:
    """∂L/∂a = Wᵀ ∂L/∂z, per-sample ∂L/∂W = ∂L/∂z aᵀ and ∂L/∂b = ∂L/∂z."""
    return dz @ weight, np.einsum("bf,bn->bfn", dz, a), dz


# ---- the network ----------------------------------------------------------------------------


def forward(net: Any, x: Array, params: Mapping[str, Array], g: str | None = None) -> list[Array]:
    """Each layer's z (before its activation) for a batch x (B, C, H, W), first layer first."""
    return _forward(net, np.asarray(x, dtype=float), params, g)[1]


def _forward(net: Any, x: Array, params: Mapping[str, Array], g: str | None):
    inputs, zs, h = [], [], x
    for number, layer in enumerate(net.layers, start=1):
        weight, bias = params[f"W{number}"], params.get(f"b{number}")
        inputs.append(h)
        if layer.kind == "conv":
            z = conv_forward(h, weight, bias, layer.stride, layer.padding)
        else:
            z = dense_forward(h.reshape(len(h), -1), weight, bias)
        zs.append(z)
        h = _activation(layer.activation, g)[0](z)
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
        dz = upstream.reshape(z.shape) * _activation(layer.activation, g)[1](z)
        weight = params[f"W{number}"]
        if layer.kind == "conv":
            upstream, d_weight, d_bias = conv_backward(dz, h, weight, layer.stride, layer.padding)
        else:
            upstream, d_weight, d_bias = dense_backward(dz, h.reshape(len(h), -1), weight)
            upstream = upstream.reshape(h.shape)
        grads[f"W{number}"] = d_weight
        if layer.bias:
            grads[f"b{number}"] = d_bias
    grads = {"x": upstream, **{name: grads[name] for name in net.parameters}}
    value = value_of(out, y)
    if single:
        return Result(float(value[0]), {name: grad[0] for name, grad in grads.items()})
    return Result(value, grads)


def _batched(net: Any, x: Array, y: Array) -> tuple[Array, Array, bool]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    single = x.shape == tuple(net.input_shape)
    return (x[None], y[None], True) if single else (x, y, False)
