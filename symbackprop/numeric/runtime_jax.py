"""The jax counterparts of the runtime helpers, for ``backend="jax"``: the same per-layer
program, printed with ``jnp`` for ``numpy``, runs under ``jax.jit`` on these.

A generated jax module carries the argument checks of ``runtime`` (numpy, before anything
reaches jax) and, in place of its array helpers, the definitions here — windows taken by
slicing and put back with ``.at[...].add`` (jax arrays are immutable), activations and
losses in ``jax.numpy`` — and its own ``run``: the program jit-compiled once per choice of
g and L, summed over the batch, or per sample through ``jax.vmap``. Importing it turns on
jax's float64 (``jax_enable_x64``): the numbers are those of the numpy module. A float32
module's arrays stay float32 (its arguments converted by ``checked``, every array made here
in the dtype of what it is made from).

Imports numpy, jax and the names of ``runtime.calls`` and ``runtime.windows`` it builds on;
nothing of symbackprop reaches a generated module (``embed`` copies the definitions).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy

from .runtime.calls import _empty, _result, checked, choose, targets
from .runtime.windows import _conv_matrix_index

jax.config.update("jax_enable_x64", True)  # float64, as the numpy code

# ---- products ----------------------------------------------------------------------------------


def _outer_sum(rows, columns):
    """Σ_b rows[:, b] columns[:, b]ᵀ, (F, N) from rows (F, B) and columns (N, B)."""
    return rows @ columns.T


def _conv_matrix(weights, input_shape, stride, padding, dilation):
    """The convolution as one matrix T (O·OH·OW, C·H·W), weights taken to their places."""
    take = _conv_matrix_index(weights.shape, input_shape, stride, padding, dilation)[0]
    return jnp.concatenate([weights.ravel(), jnp.zeros(1, weights.dtype)])[take]


def _conv_matrix_grad(dz, flat, weight_shape, input_shape, stride, padding, dilation):
    """∂L/∂W of a convolution run as its matrix: ∂L/∂T = dz flatᵀ summed where T holds each
    weight."""
    _, positions, weights = _conv_matrix_index(weight_shape, input_shape, stride, padding, dilation)
    shares = (dz @ flat.T).ravel()[positions]
    total = jnp.zeros(int(numpy.prod(weight_shape)), shares.dtype)
    return total.at[weights].add(shares).reshape(weight_shape)


# ---- windows of a batch held last: (C, H, W, B) ------------------------------------------------


def _pad(x, padding, value=0.0):
    """x (C, H, W, B) with ``padding`` rows and columns of ``value`` on each side."""
    ph, pw = padding
    return jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=value)


def _unpad(x, padding):
    """The inverse of ``_pad``: the rows and columns inside the padding."""
    ph, pw = padding
    return x[:, ph : x.shape[1] - ph, pw : x.shape[2] - pw]


def _windows(x, kernel, stride, dilation):
    """Every kernel window of x (C, H, W, B) as (C, kh, kw, OH, OW, B), one strided slice per
    kernel place (m, n)."""
    _, height, width, _ = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    out_h = (height - dh * (kh - 1) - 1) // sh + 1
    out_w = (width - dw * (kw - 1) - 1) // sw + 1
    rows = []
    for m in range(kh):
        places = [
            x[:, m * dh : m * dh + sh * (out_h - 1) + 1 : sh, n * dw : n * dw + sw * (out_w - 1) + 1 : sw]
            for n in range(kw)
        ]
        rows.append(jnp.stack(places, axis=1))
    return jnp.stack(rows, axis=1)


def _columns(x, kernel, stride, dilation):
    """The windows of x (C, H, W, B) as columns (C·kh·kw, OH·OW·B)."""
    windows = _windows(x, kernel, stride, dilation)
    channels, kh, kw = windows.shape[:3]
    return windows.reshape(channels * kh * kw, -1)


def _add_windows(d_windows, shape, stride, dilation):
    """The adjoint of ``_windows``: each window's gradient added back where it was read."""
    out = jnp.zeros(shape, d_windows.dtype)
    _, kh, kw, out_h, out_w, _ = d_windows.shape
    (sh, sw), (dh, dw) = stride, dilation
    for m in range(kh):
        for n in range(kw):
            rows = slice(m * dh, m * dh + sh * (out_h - 1) + 1, sh)
            cols = slice(n * dw, n * dw + sw * (out_w - 1) + 1, sw)
            out = out.at[:, rows, cols].add(d_windows[:, m, n])
    return out


def _sum_windows(x, kernel, stride):
    """Σ over each window's places of x (C, H, W, B)."""
    return _windows(x, kernel, stride, (1, 1)).sum(axis=(1, 2))


def _spread_windows(d, shape, kernel, stride):
    """The adjoint of ``_sum_windows``: each window's d added at every place it covers."""
    channels, out_h, out_w, batch = d.shape
    d_windows = jnp.broadcast_to(d[:, None, None], (channels, *kernel, out_h, out_w, batch))
    return _add_windows(d_windows, shape, stride, (1, 1))


# ---- activations and losses ---------------------------------------------------------------------


def identity(z):
    return z


def identity_prime(z, a):
    return 1.0


def sigmoid(z):
    return jax.nn.sigmoid(z)


def sigmoid_prime(z, a):
    return a * (1 - a)


def sigmoid_backward(z, a, da):
    return a * (1 - a) * da


def tanh(z):
    return jnp.tanh(z)


def tanh_prime(z, a):
    return 1 - a * a


def tanh_backward(z, a, da):
    return (1 - a * a) * da


def relu(z):
    return jnp.maximum(z, 0.0)


def relu_prime(z, a):
    return (z > 0).astype(z.dtype)


def relu_backward(z, a, da):
    return jnp.where(z > 0, da, 0.0)


def softplus(z):
    return jnp.logaddexp(z, 0.0)


def softplus_prime(z, a):
    return jax.nn.sigmoid(z)


def softplus_backward(z, a, da):
    return jax.nn.sigmoid(z) * da


LEAKY_RELU_SLOPE = 0.01  # PyTorch's default negative_slope


def leaky_relu(z):
    return jnp.where(z > 0, z, LEAKY_RELU_SLOPE * z)


def leaky_relu_prime(z, a):
    return jnp.where(z > 0, 1.0, LEAKY_RELU_SLOPE)


def leaky_relu_backward(z, a, da):
    return jnp.where(z > 0, da, LEAKY_RELU_SLOPE * da)


# name -> (a = g(z), g'(z, a)): the choices for a generic activation g
ACTIVATIONS = {
    "identity": (identity, identity_prime),
    "sigmoid": (sigmoid, sigmoid_prime),
    "tanh": (tanh, tanh_prime),
    "relu": (relu, relu_prime),
    "softplus": (softplus, softplus_prime),
    "leaky_relu": (leaky_relu, leaky_relu_prime),
}


# a and y: (K, B), a column per sample; a loss gives (B,), its gradient (K, B)
def sse(a, y, channels):
    return 0.5 * ((a - y) ** 2).sum(axis=0)


def sse_gradient(a, y, channels):
    return a - y


def mse(a, y, channels):
    return ((a - y) ** 2).mean(axis=0)


def mse_gradient(a, y, channels):
    return 2 * (a - y) / len(a)


def cross_entropy(a, y, channels):
    # a column per pixel and sample
    columns, targets = a.reshape(channels, -1), y.reshape(channels, -1)
    per_column = -(targets * jax.nn.log_softmax(columns, axis=0)).sum(axis=0)
    return per_column.reshape(-1, a.shape[1]).sum(axis=0)


def cross_entropy_gradient(a, y, channels):
    columns, targets = a.reshape(channels, -1), y.reshape(channels, -1)
    return (jax.nn.softmax(columns, axis=0) * targets.sum(axis=0) - targets).reshape(a.shape)


def binary_cross_entropy(a, y, channels):
    return (jax.nn.softplus(a) - y * a).sum(axis=0)


def binary_cross_entropy_gradient(a, y, channels):
    return jax.nn.sigmoid(a) - y


def sse_and_gradient(a, y, channels):
    return sse(a, y, channels), sse_gradient(a, y, channels)


def mse_and_gradient(a, y, channels):
    return mse(a, y, channels), mse_gradient(a, y, channels)


def cross_entropy_and_gradient(a, y, channels):
    return cross_entropy(a, y, channels), cross_entropy_gradient(a, y, channels)  # one log-sum-exp under jit


def binary_cross_entropy_and_gradient(a, y, channels):
    return binary_cross_entropy(a, y, channels), binary_cross_entropy_gradient(a, y, channels)


# name -> (L per sample, ∂L/∂a): the choices for a generic loss, and the concrete losses
LOSSES = {
    "sse": (sse, sse_gradient),
    "mse": (mse, mse_gradient),
    "cross_entropy": (cross_entropy, cross_entropy_gradient),
    "binary_cross_entropy": (binary_cross_entropy, binary_cross_entropy_gradient),
}


# ---- running the program under jax.jit ---------------------------------------------------------

_COMPILED = {}  # (program, choice, per sample) -> the jit-compiled function


def run(programs, layout, x, y, params, reduce=None, g=None, loss=None):
    """Check the arguments (numpy), run the jit-compiled program, shape the result."""
    chosen = choose(layout, g, loss)
    x, y, params, one = checked(layout, x, targets(layout, y, loss), params, reduce)
    size = len(x)
    if size == 0:
        return _empty(layout, reduce)
    scale = 1.0 if reduce != "mean" else 1 / size
    step = _compiled(programs.layers, chosen, reduce is None)
    losses, grads = step(x, y, params, scale)
    losses, grads = numpy.asarray(losses), {name: numpy.asarray(v) for name, v in grads.items()}
    return _result(losses, grads, reduce, one)


def _compiled(program, chosen, per_sample):
    """The program for one choice of g and L, compiled: summed over the batch, or per
    sample — the summed program on a batch of one, mapped over the samples by jax.vmap."""
    key = (program, chosen, per_sample)
    if key not in _COMPILED:

        def summed(x, y, params, scale):
            return program(x, y, params, *chosen, {}, False, scale)

        def one(x, y, params, scale):
            losses, grads = summed(x[None], y[None], params, scale)
            return losses[0], {**grads, "x": grads["x"][0]}

        mapped = jax.vmap(one, in_axes=(0, 0, None, None))
        _COMPILED[key] = jax.jit(mapped if per_sample else summed)
    return _COMPILED[key]
