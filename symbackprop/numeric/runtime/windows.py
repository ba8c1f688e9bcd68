"""The array helpers of the per-layer program: products, a small convolution as one matrix,
and the windows of a batch held last.

* products: numpy's buffer kept short where operands are strided or broadcast; sums of
  outer products (a dense layer's ∂L/∂W), summed or per sample;
* a small convolution as one matrix T, built from its weights, and its weight gradient;
* windows of a batch held last, (C, H, W, B): a strided view of every kernel window, the
  windows copied as columns (taken by index when few), sample by sample, or summed (average
  pooling), and the adjoints: the scatter-add of each window's gradient back where it was
  read (in one ``bincount`` when few values, else one kernel place at a time) and the
  spread of each window's sum.

Imports numpy and the standard library only. It shares no code with
``symbackprop.reference``, which checks it.
"""

from __future__ import annotations

import math

import numpy
from numpy.lib.stride_tricks import as_strided

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
    return numpy.concatenate((weights.reshape(-1), numpy.zeros(1, weights.dtype))).take(take)


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
    return _bincount(weights, shares, math.prod(weight_shape)).reshape(weight_shape)


def _bincount(index, weights, size):
    """Σ of ``weights`` by ``index``, ``size`` values, in the dtype of ``weights``: numpy's
    ``bincount`` sums in float64 whatever the weights (a float32 program's are cast back),
    and gives int64 zeros when ``index`` is empty — a convolution whose every window lies
    on the padding has no weight in its matrix, and its gradient must still be floats."""
    return numpy.bincount(index, weights, minlength=size).astype(weights.dtype, copy=False)


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
    shape = (channels, height + 2 * ph, width + 2 * pw, batch)
    # zeros: calloc'd
    out = numpy.zeros(shape, x.dtype) if value == 0 else numpy.full(shape, value, x.dtype)
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
    shape = (channels, kh, kw, out_h, out_w, batch)
    return _view(x, shape, (sc, dh * sy, dw * sx, sh * sy, sw * sx, sb))


def _view(x, shape, strides):
    """A read-only view of x's memory with this shape and these strides (in bytes): numpy's
    array constructor on x's buffer where x is contiguous (0.5 µs), ``as_strided`` where it
    is not (5 µs: a view a program holds, such as a slice of a concatenation's gradient)."""
    if x.flags.c_contiguous:
        view = numpy.ndarray(shape, x.dtype, x, 0, strides)
        view.flags.writeable = False
        return view
    return as_strided(x, shape, strides, writeable=False)


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
    shape = (batch, channels, kh, kw, out_h, out_w)
    windows = _view(first, shape, (sb, sc, dh * sy, dw * sx, sh * sy, sw * sx))
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
        out = numpy.zeros(shape, d_windows.dtype)
        tiles = d_windows.transpose(0, 3, 1, 4, 2, 5)  # (C, OH, kh, OW, kw, B)
        out[:, : out_h * kh, : out_w * kw] = tiles.reshape(channels, out_h * kh, out_w * kw, batch)
        return out
    if channels * out_h * out_w * batch <= SCATTER_BY_INDEX:
        index = _scatter_index(d_windows.shape, shape, stride, dilation)
        return _bincount(index, d_windows.ravel(), math.prod(shape)).reshape(shape)
    out = numpy.zeros(shape, d_windows.dtype)
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
