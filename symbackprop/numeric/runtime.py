"""The helpers every generated gradients module runs on — a real module, tested on its own,
whose definitions the printers copy into each module they write (``embed.runtime_source``
copies those a module uses, with what they use in turn).

Sections, in the order a module needs them:

* arguments: ``Result``, ``Layout`` (what a module knows of its network), checking x, y and
  params with errors that say what is expected, choosing the generic g and L by name;
* elementwise functions, each for a python float (one sample of the per-node code) or a
  numpy array, in forms that never overflow: σ through e^−|z|, softplus through ``log1p``;
  each activation ``f`` has ``f_prime(z, a)``, its derivative written with a = f(z) where
  that saves work (σ′ = a(1 − a), tanh′ = 1 − a²);
* losses, per sample: over a (K, B) array (per-layer code) or a list of K values, floats or
  arrays (B,) (per-node code); cross-entropy through log-sum-exp, finite for any finite
  logits;
* products: numpy's buffer kept short where operands are strided or broadcast; sums of
  outer products (a dense layer's ∂L/∂W); a small convolution as one matrix T and its
  weight gradient;
* windows of a batch held last, (C, H, W, B): a strided view of every kernel window, the
  windows copied as columns (taken by index when few), sample by sample, or summed (average
  pooling), and the adjoints: the scatter-add of each window's gradient back where it was
  read (in one ``bincount`` when few values, else one kernel place at a time) and the
  spread of each window's sum;
* running a module's programs: ``run`` checks the arguments, picks the program, and
  returns per-sample results (``reduce=None``) or the batch's sum or mean; the per-layer
  program runs large batches a chunk at a time, the chunks on threads where threadpoolctl
  is installed (the BLAS held to one thread meanwhile).

Imports numpy and the standard library only (threadpoolctl, where installed, inside a
function): the exported modules need nothing else. It
shares no code with ``symbackprop.reference``, which checks it.
"""

from __future__ import annotations

import concurrent.futures
import math
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy
from numpy.lib.stride_tricks import as_strided

_NUMBER = (int, float)  # one sample of the per-node code runs on python floats

# ---- arguments --------------------------------------------------------------------------------


class Result(NamedTuple):
    """The loss and the gradients by name ("x" and each parameter).

    reduce=None: the loss (a float, or shape (B,) for a batch) and each gradient shaped like
    what it differentiates, with a leading B for a batch (per sample). reduce="sum" or
    "mean": the batch's summed or mean loss (a float) and parameter gradients shaped like
    the parameters; the gradient of x is still per sample.
    """

    loss: Any
    grads: dict


class Layout:
    """What a generated module knows of its network: the shapes of x, y and the parameters,
    whether its activation g is generic, and its loss (None: generic, chosen at run time)."""

    def __init__(
        self, input_shape, output_size, parameters, generic_g, loss, buffers=None, couples=False
    ):
        self.input_shape = tuple(input_shape)
        self.output_size = output_size
        self.parameters = dict(parameters)
        self.generic_g = generic_g
        self.loss = loss
        self.buffers = dict(buffers or {})  # read with the parameters, never trained
        self.couples = couples  # batch statistics: a batch runs whole, never sample by sample
        # Where each gradient sits in the per-node program's flat result: x, then each parameter.
        self.spans, start = {}, 0
        for name, shape in {"x": self.input_shape, **self.parameters}.items():
            self.spans[name] = (start, start + math.prod(shape), shape)
            start += math.prod(shape)


def choose(layout, g, loss):
    """The functions a program takes: (g, g′) when g is generic, then (L, ∂L/∂a) always —
    the chosen loss, or the network's own."""
    if layout.generic_g:
        chosen = _pick("g", g, ACTIVATIONS, "activation g")
    elif g is not None:
        raise ValueError(f"g={g!r}: this network has no generic activation g; its spec fixes it")
    else:
        chosen = ()
    if layout.loss is None:
        return chosen + _pick("loss", loss, LOSSES, "loss L")
    if loss is not None:
        raise ValueError(f"loss={loss!r}: this network has no generic loss L; its spec fixes it")
    return chosen + LOSSES[layout.loss]


def _pick(keyword, name, choices, what):
    if name is None:
        raise ValueError(
            f"this network leaves its {what} generic; choose one for numbers with "
            f"{keyword}=..., one of {', '.join(choices)} (e.g. {keyword}={next(iter(choices))!r})"
        )
    if name not in choices:
        raise ValueError(
            f"{keyword}={name!r} is not a known {what}; choose one of {', '.join(choices)}"
        )
    return choices[name]


REDUCTIONS = (None, "sum", "mean")


def checked(layout, x, y, params, reduce):
    """x as a float batch (B, *input), y as (B, K), params as float arrays, and whether x was
    one sample; a ValueError naming what is wrong and what was expected otherwise."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce={reduce!r}; choose None (per sample), 'sum' or 'mean'")
    input_shape, output_size = layout.input_shape, layout.output_size
    x = _numbers("x", x)
    one = x.shape == input_shape
    if one:
        y_shape = (output_size,)
    elif x.ndim == len(input_shape) + 1 and x.shape[1:] == input_shape:
        y_shape = (x.shape[0], output_size)
    else:
        raise ValueError(
            f"x has shape {x.shape}; expected {input_shape} for one sample "
            f"or (B, {', '.join(map(str, input_shape))}) for a batch"
        )
    y = _numbers("y", y)
    if y.shape != y_shape:
        raise ValueError(
            f"y has shape {y.shape}; expected {y_shape} to go with x of shape {x.shape}"
        )
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params must be a dict of arrays ({_expected(layout)}), got {type(params).__name__}"
        )
    if layout.couples and reduce is None and not one:
        raise ValueError(
            "reduce=None: per-sample gradients are not defined here, batch normalisation in train "
            "mode makes every sample's loss depend on the whole batch; ask for the batch's, "
            "reduce='sum' or 'mean'"
        )
    wanted = {**layout.parameters, **layout.buffers}
    if params.keys() != wanted.keys():
        for name in params:
            if name not in wanted:
                raise ValueError(
                    f"params has {name!r}, which this network does not have; "
                    f"expected {_expected(layout)}"
                )
        missing = next(name for name in wanted if name not in params)
        raise ValueError(
            f"params is missing {missing!r} of shape {wanted[missing]}; "
            f"expected {_expected(layout)}"
        )
    arrays = {}
    for name, shape in wanted.items():
        value = _numbers(name, params[name])
        if value.shape != shape:
            raise ValueError(f"params[{name!r}] has shape {value.shape}; expected {shape}")
        arrays[name] = value
    _require_finite({"x": x, "y": y, **arrays})
    return (x[None], y[None], arrays, True) if one else (x, y, arrays, False)


def _expected(layout):
    wanted = {**layout.parameters, **layout.buffers}
    return ", ".join(f"{name} {shape}" for name, shape in wanted.items())


def _label(what):
    return what if what in ("x", "y") else f"params[{what!r}]"


def _numbers(what, value):
    try:
        return numpy.asarray(value, dtype=float)
    except (TypeError, ValueError):
        message = f"{_label(what)} must be an array of numbers, got {type(value).__name__}"
        raise ValueError(message) from None


def _require_finite(arrays):
    """A ValueError naming the first of ``arrays`` (name -> array) holding nan or inf."""
    # A sum is finite when every value is: one pass over each array — python's sum for a
    # few values, numpy's for the others (not BLAS's dot product, twice as fast alone: it
    # leaves BLAS's threads spinning on the cores the chunks then run on, 30% slower for
    # network C at batch 1024). Huge values can overflow it, so the values themselves are
    # looked at before any is called non-finite.
    total, large = 0.0, []
    for values in arrays.values():
        if values.size <= 64:
            total += sum(values.ravel().tolist())
        else:
            large.append(values.ravel())
    if large:
        with numpy.errstate(over="ignore", invalid="ignore"):
            total += sum(float(flat.sum()) for flat in large)
    if math.isfinite(total):
        return
    for what, values in arrays.items():
        if not numpy.isfinite(values).all():
            raise ValueError(
                f"{_label(what)} has non-finite values (nan or inf); all must be finite"
            )


# ---- elementwise functions: a float or an array -----------------------------------------------


def identity(z):
    return z


def identity_prime(z, a):
    return 1.0


def sigmoid(z):
    """1 / (1 + e^−z): far below 0, e^−z overflows to inf and σ is 0, as it should be (the
    exact value is below the smallest float); a float takes the branch that never overflows."""
    if isinstance(z, _NUMBER):
        e = math.exp(-abs(z))
        return 1 / (1 + e) if z >= 0 else e / (1 + e)
    e = numpy.negative(z)
    with numpy.errstate(over="ignore"):
        numpy.exp(e, out=e)
    e += 1.0
    return numpy.reciprocal(e, out=e)


def sigmoid_prime(z, a):
    prime = 1.0 - a
    prime *= a  # in place: one new array, not two
    return prime


def tanh(z):
    return math.tanh(z) if isinstance(z, _NUMBER) else numpy.tanh(z)


def tanh_prime(z, a):
    prime = -a
    prime *= a
    prime += 1.0  # in place: one new array, not two
    return prime


def relu(z):
    """max(z, 0); its derivative is 0 at z = 0, as PyTorch's."""
    return max(z, 0.0) if isinstance(z, _NUMBER) else numpy.maximum(z, 0.0)


def relu_prime(z, a):
    return float(z > 0) if isinstance(z, _NUMBER) else (z > 0) * 1.0


def softplus(z):
    """log(1 + e^z) = max(z, 0) + log1p(e^−|z|): exact far out on both sides (4.2e-18 at −40)."""
    if isinstance(z, _NUMBER):
        return max(z, 0.0) + math.log1p(math.exp(-abs(z)))
    return numpy.maximum(z, 0.0) + numpy.log1p(numpy.exp(-numpy.abs(z)))


def softplus_prime(z, a):
    return sigmoid(z)


LEAKY_RELU_SLOPE = 0.01  # PyTorch's default negative_slope


def leaky_relu(z):
    """z for z > 0, 0.01 z otherwise; the slope at z = 0, as PyTorch."""
    if isinstance(z, _NUMBER):
        return z if z > 0 else LEAKY_RELU_SLOPE * z
    return numpy.where(z > 0, z, LEAKY_RELU_SLOPE * z)


def leaky_relu_prime(z, a):
    if isinstance(z, _NUMBER):
        return 1.0 if z > 0 else LEAKY_RELU_SLOPE
    return numpy.where(z > 0, 1.0, LEAKY_RELU_SLOPE)


def _max(*values):
    """A max pool's window in the per-node code: max() of floats, numpy.maximum of arrays."""
    if all(isinstance(v, _NUMBER) for v in values):
        return max(values)
    result = values[0]
    for value in values[1:]:
        result = numpy.maximum(result, value)
    return result


def _exp(z):
    return math.exp(z) if isinstance(z, _NUMBER) else numpy.exp(z)


def _log(z):
    return math.log(z) if isinstance(z, _NUMBER) else numpy.log(z)


# name -> (a = g(z), g'(z, a)): the choices for a generic activation g
ACTIVATIONS = {
    "identity": (identity, identity_prime),
    "sigmoid": (sigmoid, sigmoid_prime),
    "tanh": (tanh, tanh_prime),
    "relu": (relu, relu_prime),
    "softplus": (softplus, softplus_prime),
    "leaky_relu": (leaky_relu, leaky_relu_prime),
}


# ---- losses, per sample ------------------------------------------------------------------------
# a and y: a (K, B) array each, a column per sample (the per-layer code), or lists of K values,
# each a float or an array (B,) (the per-node code). A loss gives (B,) values, or one value; its
# gradient ∂L/∂a_k (K, B), or a list of K values. ``channels`` is the output's C: K for a vector;
# for a map of K = C·P values (channel, then pixel), cross_entropy takes a softmax over the C
# channels of each pixel and sums over the pixels (torch's on (N, C, H, W)); the others are
# elementwise and need not know.


def sse(a, y, channels):
    """½ Σ_k (a_k − y_k)²."""
    if isinstance(a, list):
        return 0.5 * sum((ak - yk) * (ak - yk) for ak, yk in zip(a, y))
    return 0.5 * ((a - y) ** 2).sum(axis=0)


def sse_gradient(a, y, channels):
    if isinstance(a, list):
        return [ak - yk for ak, yk in zip(a, y)]
    return a - y


def mse(a, y, channels):
    """(1/K) Σ_k (a_k − y_k)², PyTorch's MSELoss of one sample."""
    if isinstance(a, list):
        return sum((ak - yk) * (ak - yk) for ak, yk in zip(a, y)) / len(a)
    return ((a - y) ** 2).mean(axis=0)


def mse_gradient(a, y, channels):
    if isinstance(a, list):
        return [2 * (ak - yk) / len(a) for ak, yk in zip(a, y)]
    return 2 * (a - y) / len(a)


def cross_entropy(a, y, channels):
    """−Σ_k y_k log softmax(a)_k = −Σ_k y_k (a_k − log Σ_j e^{a_j}), PyTorch's
    CrossEntropyLoss with probability targets, the softmax over each pixel's channels for a
    map; log-sum-exp keeps it finite for any logits."""
    if isinstance(a, list):
        pixels = len(a) // channels
        total = 0.0
        for p in range(pixels):
            ap, yp = a[p::pixels], y[p::pixels]
            lse = _log_sum_exp_values(ap)
            total = total - sum(yk * (ak - lse) for ak, yk in zip(ap, yp))
        return total
    # a column per pixel and sample
    columns, targets = a.reshape(channels, -1), y.reshape(channels, -1)
    per_column = -(targets * (columns - _log_sum_exp(columns))).sum(axis=0)
    return per_column.reshape(-1, a.shape[1]).sum(axis=0)


def cross_entropy_gradient(a, y, channels):
    """softmax(a)_k · Σ_j y_j − y_k over each pixel's channels (y need not sum to one)."""
    if isinstance(a, list):
        pixels = len(a) // channels
        gradient = [0.0] * len(a)
        for p in range(pixels):
            ap, yp = a[p::pixels], y[p::pixels]
            lse, total = _log_sum_exp_values(ap), sum(yp)
            gradient[p::pixels] = [_exp(ak - lse) * total - yk for ak, yk in zip(ap, yp)]
        return gradient
    columns, targets = a.reshape(channels, -1), y.reshape(channels, -1)
    softmax = numpy.exp(columns - _log_sum_exp(columns))
    return (softmax * targets.sum(axis=0) - targets).reshape(a.shape)


def binary_cross_entropy(a, y, channels):
    """Σ_k softplus(a_k) − y_k a_k = Σ_k −y_k log σ(a_k) − (1 − y_k) log(1 − σ(a_k)), PyTorch's
    BCEWithLogitsLoss summed over the outputs: finite for any logits."""
    if isinstance(a, list):
        return sum(softplus(ak) - yk * ak for ak, yk in zip(a, y))
    return (softplus(a) - y * a).sum(axis=0)


def binary_cross_entropy_gradient(a, y, channels):
    """σ(a_k) − y_k."""
    if isinstance(a, list):
        return [sigmoid(ak) - yk for ak, yk in zip(a, y)]
    return sigmoid(a) - y


def _log_sum_exp(a):
    """log Σ_k e^{a_k} of each column, as a row (1, B): the largest a_k taken out first."""
    top = a.max(axis=0, keepdims=True)
    return top + numpy.log(numpy.exp(a - top).sum(axis=0, keepdims=True))


def _log_sum_exp_values(a):
    top = _max(*a)
    return top + _log(sum(_exp(ak - top) for ak in a))


# name -> (L per sample, ∂L/∂a): the choices for a generic loss, and the concrete losses
LOSSES = {
    "sse": (sse, sse_gradient),
    "mse": (mse, mse_gradient),
    "cross_entropy": (cross_entropy, cross_entropy_gradient),
    "binary_cross_entropy": (binary_cross_entropy, binary_cross_entropy_gradient),
}


# ---- products ----------------------------------------------------------------------------------


class _short_buffers:
    """``with _short_buffers():`` runs numpy's ufuncs with buffers of SHORT_BUFFER values,
    restored after. numpy runs a ufunc on strided or broadcast operands through buffers of
    ``getbufsize()`` values; where their rows are shorter than that, its default (8192)
    copies them in and out first: 2-4x slower than working on them in place."""

    def __enter__(self):
        self.saved = numpy.setbufsize(SHORT_BUFFER)

    def __exit__(self, *exception):
        numpy.setbufsize(self.saved)


SHORT_BUFFER = 1024  # measured best from rows of 16 to 2048 values (the default is 8192)


def _outer_sum(rows, columns):
    """Σ_b rows[:, b] columns[:, b]ᵀ = rows @ columnsᵀ, (F, N) from rows (F, B) and columns
    (N, B): summed over the batch. For one sample, a large outer product is computed as
    such (BLAS's product over one term is 5x slower: 54 µs against 10 for 120 x 400)."""
    if rows.shape[1] != 1 or len(rows) * len(columns) < 4096:
        return rows @ columns.T
    with _short_buffers():
        return rows * columns.T


def _outer_per_sample(rows, columns, out):
    """out[b] = rows[:, b] columns[:, b]ᵀ, written into out (B, F, N), from rows (F, B) and
    columns (N, B)."""
    with _short_buffers():
        numpy.multiply(rows.T[:, :, None], numpy.ascontiguousarray(columns.T)[:, None, :], out=out)


# ---- a small convolution as one matrix ----------------------------------------------------------


def _conv_matrix(weights, input_shape, stride, padding, dilation):
    """The convolution of an input (C, H, W) with weights (O, C, kh, kw) as one matrix T
    (O·OH·OW, C·H·W): row (o, i, j) holds W[o, c, m, n] at column (c, s·i + d·m − p,
    s·j + d·n − p), zeros elsewhere (and nothing for places on the padding); z = T x."""
    take = _conv_matrix_index(weights.shape, input_shape, stride, padding, dilation)[0]
    return numpy.concatenate((weights.reshape(-1), _ZERO)).take(take)


_ZERO = numpy.zeros(1)


def _conv_matrix_grad(dz, flat, weight_shape, input_shape, stride, padding, dilation):
    """∂L/∂W of a convolution run as its matrix T, summed over the batch, from dz (O·OH·OW, B)
    and the flat input (C·H·W, B). For many samples, ∂L/∂T = Σ_b dz flatᵀ in one product,
    each weight's share summed over the places where T holds it; for a few, the windows as
    columns and one product with them (the same sums, fewer values to go through)."""
    batch = flat.shape[1]
    if batch < MATRIX_GRAD_FROM:
        image = _pad(flat.reshape(*input_shape, batch), padding)
        columns = _columns(image, weight_shape[2:], stride, dilation)
        return (dz.reshape(weight_shape[0], -1) @ columns.T).reshape(weight_shape)
    _, positions, weights = _conv_matrix_index(weight_shape, input_shape, stride, padding, dilation)
    shares = (dz @ flat.T).ravel().take(positions)
    return numpy.bincount(weights, shares, minlength=math.prod(weight_shape)).reshape(weight_shape)


# From this many samples, _conv_matrix_grad's one product over the batch is faster than the
# windows (measured on 1x8x8 -> conv 3x3 x4: 12 against 5 µs for one sample, 150 against
# 300 µs for 1024).
MATRIX_GRAD_FROM = 32
_CONV_MATRIX_INDEXES = {}  # _conv_matrix_index's, by their arguments: one per layer


def _conv_matrix_index(weight_shape, input_shape, stride, padding, dilation):
    """Where a convolution's weights go in its matrix T: ``take`` (T's shape: at each place
    the index of its weight, or of the 0 after the last weight), ``positions`` and
    ``weights`` (T's flat places holding a weight, in weight order, and which weight)."""
    key = weight_shape, input_shape, stride, padding, dilation
    if key not in _CONV_MATRIX_INDEXES:
        out_channels, channels, kh, kw = weight_shape
        _, height, width = input_shape
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        o, c, m, n, i, j = numpy.ogrid[:out_channels, :channels, :kh, :kw, :out_h, :out_w]
        rows, columns = sh * i + dh * m - ph, sw * j + dw * n - pw
        every = numpy.broadcast_arrays(o, c, m, n, i, j)[0].shape
        inside = (rows >= 0) & (rows < height) & (columns >= 0) & (columns < width)
        inside = numpy.broadcast_to(inside, every)
        row_of_t = (o * out_h + i) * out_w + j
        column_of_t = (c * height + rows) * width + columns
        shape = out_channels * out_h * out_w, channels * height * width
        positions = numpy.broadcast_to(row_of_t * shape[1] + column_of_t, every)[inside]
        weights = numpy.broadcast_to(((o * channels + c) * kh + m) * kw + n, every)[inside]
        take = numpy.full(shape, math.prod(weight_shape))
        take.flat[positions] = weights
        _CONV_MATRIX_INDEXES[key] = take, positions, weights
    return _CONV_MATRIX_INDEXES[key]


# ---- windows of a batch held last: (C, H, W, B) ------------------------------------------------


def _pad(x, padding, value=0.0):
    """x (C, H, W, B) with ``padding`` rows and columns of ``value`` on each side."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    channels, height, width, batch = x.shape
    out = numpy.full((channels, height + 2 * ph, width + 2 * pw, batch), value)
    out[:, ph : ph + height, pw : pw + width] = x
    return out


def _unpad(x, padding):
    """The inverse of ``_pad``: the rows and columns inside the padding."""
    ph, pw = padding
    return x[:, ph : x.shape[1] - ph, pw : x.shape[2] - pw]


def _windows(x, kernel, stride, dilation):
    """Every kernel window of x (C, H, W, B), as a view (C, kh, kw, OH, OW, B) — no copy:
    window (i, j) reads x[c, s·i + d·m, s·j + d·n, b] at kernel place (m, n)."""
    channels, height, width, batch = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    out_h = (height - dh * (kh - 1) - 1) // sh + 1
    out_w = (width - dw * (kw - 1) - 1) // sw + 1
    sc, sy, sx, sb = x.strides
    return as_strided(
        x, (channels, kh, kw, out_h, out_w, batch),
        (sc, dh * sy, dw * sx, sh * sy, sw * sx, sb), writeable=False,
    )


def _columns(x, kernel, stride, dilation):
    """The windows of x (C, H, W, B) as columns (C·kh·kw, OH·OW·B): a column per window and
    sample, its values in (c, m, n) order down it — a copy. Few values per kernel place are
    taken by their places in one ``take``; more are copied from the strided view."""
    channels, height, width, batch = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    out_h = (height - dh * (kh - 1) - 1) // sh + 1
    out_w = (width - dw * (kw - 1) - 1) // sw + 1
    if channels * out_h * out_w * batch > COLUMNS_BY_INDEX:
        windows = _windows(x, kernel, stride, dilation)
        return windows.reshape(channels * kh * kw, out_h * out_w * batch)
    windows_shape = (channels, kh, kw, out_h, out_w, batch)
    index = _scatter_index(windows_shape, x.shape, stride, dilation)
    return x.reshape(-1).take(index).reshape(channels * kh * kw, out_h * out_w * batch)


# Up to this many values per kernel place, _columns takes them by index (measured: 0.7 against
# 3.7 µs for a 1x8x8 sample, 3x3 windows); past it, copying the strided view is faster.
COLUMNS_BY_INDEX = 512


def _columns_by_sample(x, kernel, stride, dilation):
    """The windows of x (C, H, W, B) sample by sample, (B, C·kh·kw, OH·OW): x copied with the
    batch first, then each sample's windows copied as its columns (runs of a window row,
    contiguous in that copy)."""
    first = numpy.ascontiguousarray(x.transpose(3, 0, 1, 2))  # (B, C, H, W)
    batch, channels, height, width = first.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    out_h = (height - dh * (kh - 1) - 1) // sh + 1
    out_w = (width - dw * (kw - 1) - 1) // sw + 1
    sb, sc, sy, sx = first.strides
    windows = as_strided(
        first, (batch, channels, kh, kw, out_h, out_w),
        (sb, sc, dh * sy, dw * sx, sh * sy, sw * sx), writeable=False,
    )
    return windows.reshape(batch, channels * kh * kw, out_h * out_w)


def _add_windows(d_windows, shape, stride, dilation):
    """The adjoint of ``_windows``: an array of ``shape`` (C, H, W, B) where each window's
    gradient d_windows (C, kh, kw, OH, OW, B) is added back at the places it read, so that
    overlapping windows add up. Windows that tile the input without overlap (stride = kernel,
    no dilation) are put back in one copy; few values per kernel place (a batch of one, a
    small layer) in one ``bincount`` by each value's place; others with one strided slice per
    kernel place (m, n)."""
    channels, kh, kw, out_h, out_w, batch = d_windows.shape
    (sh, sw), (dh, dw) = stride, dilation
    if (sh, sw) == (kh, kw) and (dh, dw) == (1, 1):
        out = numpy.zeros(shape)
        tiles = d_windows.transpose(0, 3, 1, 4, 2, 5)  # (C, OH, kh, OW, kw, B)
        out[:, : out_h * kh, : out_w * kw] = tiles.reshape(channels, out_h * kh, out_w * kw, batch)
        return out
    if channels * out_h * out_w * batch <= SCATTER_BY_INDEX:
        index = _scatter_index(d_windows.shape, shape, stride, dilation)
        total = numpy.bincount(index, weights=d_windows.ravel(), minlength=math.prod(shape))
        return total.reshape(shape)
    out = numpy.zeros(shape)
    with _short_buffers():
        for m in range(kh):
            rows = out[:, m * dh : m * dh + sh * (out_h - 1) + 1 : sh]
            for n in range(kw):
                target = rows[:, :, n * dw : n * dw + sw * (out_w - 1) + 1 : sw]
                target += d_windows[:, m, n]
    return out


# Up to this many values per kernel place (C·OH·OW·B), a numpy call per place costs more than
# the work: _add_windows adds them all in one bincount instead (measured: 4x faster for a batch
# of one, even at 4096).
SCATTER_BY_INDEX = 4096
_SCATTER_INDEXES = {}  # _scatter_index's, by their arguments (a few per network and batch size)


def _scatter_index(windows_shape, shape, stride, dilation):
    """Where each value of a windows' gradient (C, kh, kw, OH, OW, B), in its order, lands in
    the flat input (C, H, W, B): c·H·W·B + (s·i + d·m)·W·B + (s·j + d·n)·B + b."""
    key = windows_shape, shape, stride, dilation
    index = _SCATTER_INDEXES.get(key)  # held here: another thread may clear the table
    if index is None:
        if len(_SCATTER_INDEXES) >= 64:  # batches of many sizes: keep the latest only
            _SCATTER_INDEXES.clear()
        channels, kh, kw, out_h, out_w, batch = windows_shape
        _, height, width, _ = shape
        (sh, sw), (dh, dw) = stride, dilation
        c, m, n, i, j, b = numpy.ogrid[:channels, :kh, :kw, :out_h, :out_w, :batch]
        rows, columns = sh * i + dh * m, sw * j + dw * n
        index = (((c * height + rows) * width + columns) * batch + b).ravel()
        _SCATTER_INDEXES[key] = index
    return index


def _sum_windows(x, kernel, stride):
    """Σ over each window's places of x (C, H, W, B): (C, OH, OW, B). Few values per kernel
    place are taken as columns and summed down them; more, one strided add per place (faster
    than a reduction over two strided axes)."""
    channels, height, width, batch = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
    if channels * out_h * out_w * batch <= SCATTER_BY_INDEX:
        columns = _columns(x, kernel, stride, (1, 1)).reshape(channels, kh * kw, -1)
        return columns.sum(axis=1).reshape(channels, out_h, out_w, batch)
    windows = _windows(x, kernel, stride, (1, 1))
    total = windows[:, 0, 0].copy()
    with _short_buffers():
        for m in range(kh):
            for n in range(kw):
                if m or n:
                    total += windows[:, m, n]
    return total


def _spread_windows(d, shape, kernel, stride):
    """The adjoint of ``_sum_windows``: an array of ``shape`` (C, H, W, B) where each window's
    d (C, OH, OW, B) is added at every place the window covers. Windows that tile the input
    exactly repeat each value over their tile."""
    channels, out_h, out_w, batch = d.shape
    (kh, kw), (sh, sw) = kernel, stride
    if (sh, sw) == (kh, kw) and shape[1:3] == (out_h * kh, out_w * kw):
        return numpy.repeat(numpy.repeat(d, kh, axis=1), kw, axis=2)
    d_windows = numpy.broadcast_to(d[:, None, None], (channels, kh, kw, out_h, out_w, batch))
    return _add_windows(d_windows, shape, stride, (1, 1))


# ---- running a module's programs ---------------------------------------------------------------


class Programs(NamedTuple):
    """A module's programs — per node and/or per layer, None where it has none — the number
    of samples the per-layer program takes at a time (its arrays then stay small enough for
    the cache), and the bytes a sample takes in its largest array (whether a chunk is worth
    a thread). With both programs, the per-node program runs single samples, on python
    floats, and the per-layer program every batch of two or more."""

    nodes: Any
    layers: Any
    batch_chunk: int = 64
    sample_bytes: int = 0


def run(programs, layout, x, y, params, reduce=None, g=None, loss=None):
    """Check the arguments, run a program, shape the result (see ``Result``)."""
    chosen = choose(layout, g, loss)
    x, y, params, one = checked(layout, x, y, params, reduce)
    size = len(x)
    if size == 0:
        return _empty(layout, reduce)
    if programs.nodes is not None and (programs.layers is None or size == 1):
        floats = one or programs.layers is not None  # one sample: on python floats
        losses, grads = _run_nodes(programs.nodes, layout, x, y, params, chosen, floats)
        if floats:
            if one and reduce is None:  # the common case of the per-node code, kept quick
                return Result(losses, grads)
            losses, grads = numpy.array([losses]), {n: g[None] for n, g in grads.items()}
        if reduce is not None:
            scale = 1.0 if reduce == "sum" else 1 / size
            grads = {
                name: grad * scale if name == "x" else grad.sum(axis=0) * scale
                for name, grad in grads.items()
            }
    else:
        scale = 1.0 if reduce != "mean" else 1 / size
        losses, grads = _run_layers(programs, layout, x, y, params, chosen, reduce is None, scale)
    return _result(losses, grads, reduce, one)


def _result(losses, grads, reduce, one):
    """A program's losses (B,) and gradients — per sample, or the parameters' summed over
    the batch — as the caller asked: one sample's own, per sample, or the batch's sum or
    mean (see ``Result``)."""
    if reduce is None:
        if one:
            return Result(float(losses[0]), {name: grad[0] for name, grad in grads.items()})
        return Result(losses, grads)
    total = float(losses.sum() if reduce == "sum" else losses.mean())
    return Result(total, {**grads, "x": grads["x"][0] if one else grads["x"]})


def _run_layers(programs, layout, x, y, params, chosen, per_sample, scale):
    """The per-layer program on the batch, ``batch_chunk`` samples at a time, the chunks
    shared among threads (see ``_map_chunks``): losses (B,), the gradient of x per sample,
    the others per sample — each chunk writes its rows of them — or summed over the
    chunks."""
    _warm_allocator()
    size = len(x)
    if size == 1 and per_sample:  # one sample's gradients are its batch's: the quicker code
        losses, grads = programs.layers(x, y, params, *chosen, {}, False, scale)
        return losses, {name: g if name == "x" else g[None] for name, g in grads.items()}
    controller, workers, chunk = None, 1, programs.batch_chunk
    if layout.couples:  # batch statistics: the whole batch at once
        chunk = size
    # The BLAS is asked for its threads (10 µs) only where a chunk can be worth a thread.
    elif size > 1 and min(size, chunk) * programs.sample_bytes >= THREADS_FROM_BYTES:
        controller = _blas_controller()
        threads = _blas_threads(controller) if controller else 1
        shared = min(chunk, -(-size // threads))  # a chunk for each thread at least
        if shared * programs.sample_bytes >= THREADS_FROM_BYTES:  # still worth a thread
            workers, chunk = threads, shared
    losses, dx = numpy.empty(size), numpy.empty(x.shape)
    shapes = layout.parameters.items() if per_sample else ()
    rows = {name: numpy.empty((size, *shape)) for name, shape in shapes}

    def run_chunk(part):
        grads = {name: array[part] for name, array in rows.items()}
        losses[part], grads = programs.layers(
            x[part], y[part], params, *chosen, grads, per_sample, scale
        )
        dx[part] = grads.pop("x")
        return grads

    parts = [slice(start, start + chunk) for start in range(0, size, chunk)]
    results = _map_chunks(run_chunk, parts, controller, workers)
    if per_sample:
        return losses, {"x": dx, **rows}
    summed = results[0]
    for grads in results[1:]:
        for name, grad in grads.items():
            summed[name] += grad
    return losses, {"x": dx, **summed}


# Chunks whose largest array is smaller than this run in one thread: a thread's hand-over and
# the GIL between numpy's calls then cost more than the second core gains (measured: the
# article's network, 16 values a sample, 1.7x slower on two threads at batch 1024; network B,
# 4.6 kB a sample, 1.4x slower at 256, even summed and 1.3x faster per sample at 512, 1.2x
# and 1.4x faster at 1024; network C, 21 kB a sample, 1.2x faster at 128 and 1.3x at 1024).
THREADS_FROM_BYTES = 2**20


def _map_chunks(function, parts, controller, workers):
    """[function(part) for part in parts], on this many threads (one: in this thread), each
    thread's matrix products held to one core by threadpoolctl's ``controller`` of the BLAS
    meanwhile: two threads each calling a multi-threaded BLAS run slower than one. numpy lets
    go of the GIL in its loops, so a second thread runs a chunk's elementwise work on the
    second core, which BLAS alone would leave idle (network C of benchmarks/numeric.py, batch
    1024: 1.4x faster on 2 cores)."""
    workers = min(workers, len(parts))
    # One call at a time holds the BLAS to one thread: threadpoolctl restores the number it
    # found, so overlapping holds could restore one hold's 1 for good. A call from another
    # thread meanwhile runs its chunks in turn.
    if workers < 2 or not _HOLDING_BLAS.acquire(blocking=False):
        return [function(part) for part in parts]
    try:
        with controller.limit(limits=1, user_api="blas"):
            return list(_chunk_pool(workers).map(function, parts))
    finally:
        _HOLDING_BLAS.release()


_HOLDING_BLAS = threading.Lock()


# What running chunks keeps between calls: "controller", threadpoolctl's view of the BLAS
# (None: none); "pool", (a thread pool, its size); "warm", once the allocator is.
_RUNNING = {}


def _blas_controller():
    """threadpoolctl's controller of the loaded BLAS libraries, found once; None without
    threadpoolctl or when it finds no BLAS."""
    if "controller" not in _RUNNING:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            controller = None
        else:
            controller = ThreadpoolController().select(user_api="blas") or None
        _RUNNING["controller"] = controller
    return _RUNNING["controller"]


def _blas_threads(controller):
    """The number of threads the BLAS is set to use now (OPENBLAS_NUM_THREADS and the like;
    by default, one per core): a batch's chunks run on as many. Without threadpoolctl, the
    chunks run one after another."""
    return max(info["num_threads"] for info in controller.info())


def _chunk_pool(workers):
    """A pool of this many threads, kept for the next call (a new pool costs ~100 µs)."""
    pool, size = _RUNNING.get("pool", (None, 0))
    if size != workers:
        if pool is not None:
            pool.shutdown(wait=False)  # its threads end once idle
        pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="gradients")
        _RUNNING["pool"] = pool, workers
    return pool


def _warm_allocator():
    """Allocate and free a 30 MB block, once per process. glibc's malloc serves blocks from
    fresh mmap'ed memory until a freed block raises its threshold (up to 32 MB), and hands
    freed memory back to the system past twice that; a chunk's arrays, allocated and freed
    on every call, then each cost page faults: network C at batch 1024 ran 2.7x slower
    until a block that size had been freed (importing torch does it too). Elsewhere a
    no-op."""
    if "warm" not in _RUNNING:
        block = numpy.empty(WARM_BYTES // 8)
        del block
        _RUNNING["warm"] = True


WARM_BYTES = 30 * 2**20  # under glibc's largest threshold (32 MB on 64-bit machines)


def _empty(layout, reduce):
    """An empty batch: no losses and no per-sample gradients; summed, a loss of 0 and zero
    gradients; a mean is undefined: nan, with zero gradients (as PyTorch's mean of nothing)."""
    x = numpy.zeros((0, *layout.input_shape))
    if reduce is None:
        grads = {name: numpy.zeros((0, *shape)) for name, shape in layout.parameters.items()}
        return Result(numpy.zeros(0), {"x": x, **grads})
    grads = {name: numpy.zeros(shape) for name, shape in layout.parameters.items()}
    return Result(0.0 if reduce == "sum" else math.nan, {"x": x, **grads})


def _run_nodes(program, layout, x, y, params, chosen, one):
    """The per-node program: on python floats for one sample — the loss (a float) and its
    gradients — and on arrays (B,), one per node, for a batch — losses (B,) and per-sample
    gradients (B, *shape)."""
    flat = {name: value.ravel().tolist() for name, value in params.items()}
    if one:
        try:
            loss, grads = program(x[0].ravel().tolist(), y[0].tolist(), flat, *chosen)
        except (ArithmeticError, ValueError):
            # math raises where numpy gives inf or nan (an exp of a large value, a log of 0):
            # run the array code instead, as a batch of one, so both give the same answer.
            losses, grads = _run_nodes(program, layout, x, y, params, chosen, False)
            return float(losses[0]), {name: grad[0] for name, grad in grads.items()}
        values = numpy.array(grads, dtype=float)
        return float(loss), {
            name: values[a:b].reshape(shape) for name, (a, b, shape) in layout.spans.items()
        }
    size = len(x)
    # One contiguous row of B values per input node: the program unpacks the rows.
    columns = numpy.ascontiguousarray(x.reshape(size, -1).T)
    loss, grads = program(columns, numpy.ascontiguousarray(y.T), flat, *chosen)
    rows = _rows(grads, size)
    return _rows([loss], size)[0], {
        name: rows[a:b].T.reshape(size, *shape) for name, (a, b, shape) in layout.spans.items()
    }


def _rows(values, size):
    """Node values (arrays (B,), or a constant where a node does not depend on the sample)
    as one array (len(values), B)."""
    rows = numpy.empty((len(values), size))
    for i, value in enumerate(values):
        rows[i] = value
    return rows
