"""A call of a generated module's ``loss_and_grads``: its arguments checked, its program run,
its result shaped — the loop every generated module runs (``run``).

* ``Result``, ``Layout`` (what a module knows of its network), ``Programs`` (the programs it
  holds and how the per-layer one cuts a batch);
* checking x, y and params with errors that say what is expected (and that every value is
  finite), choosing the generic g and L by name;
* ``run``: checks the arguments, picks the program, and returns per-sample results
  (``reduce=None``) or the batch's sum or mean; the per-node program on python floats for
  one sample or on arrays (B,) for a batch; the per-layer program through ``chunks``.

Imports numpy, the standard library, and ``functions`` (the choices of g and L) and
``chunks`` (the per-layer program's run) of this package.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy

from .chunks import _run_layers
from .functions import ACTIVATIONS, LOSSES


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
    whether its activation g is generic, its loss (None: generic, chosen at run time), and
    the dtype it computes in (float64, or float32: every argument is converted to it once,
    at the call, and every array the program makes keeps it)."""

    def __init__(
        self, input_shape, output_size, parameters, generic_g, loss, buffers=None, couples=False,
        output_shape=None, dtype="float64",
    ):
        self.input_shape = tuple(input_shape)
        self.output_size = output_size
        self.output_shape = tuple(output_shape or (output_size,))  # a map's (C, H, W)
        self.parameters = dict(parameters)
        self.generic_g = generic_g
        self.loss = loss
        self.buffers = dict(buffers or {})  # read with the parameters, never trained
        self.couples = couples  # batch statistics: a batch runs whole, never sample by sample
        self.dtype = numpy.dtype(dtype)
        # One sample of the per-node program runs on python floats, which are float64.
        self.python_floats = self.dtype == numpy.float64
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
    """x as a batch (B, *input), y as (B, K), params as arrays, all in the layout's dtype
    (converted here, once), and whether x was one sample; a ValueError naming what is wrong
    and what was expected otherwise."""
    x, y, arrays, one = _shaped(layout, x, y, params, reduce)
    _require_finite({"x": x, "y": y, **arrays})
    return (x[None], y[None], arrays, True) if one else (x, y, arrays, False)


def _shaped(layout, x, y, params, reduce):
    """``checked`` but for finiteness, and x and y of one sample left as they came, (*input)
    and (K,): x, y, params as arrays of the layout's dtype, and whether x was one sample."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce={reduce!r}; choose None (per sample), 'sum' or 'mean'")
    input_shape, output_size = layout.input_shape, layout.output_size
    dtype = layout.dtype
    x = _numbers("x", x, dtype)
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
    y = _numbers("y", y, dtype)
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
        value = _numbers(name, params[name], dtype)
        if value.shape != shape:
            raise ValueError(f"params[{name!r}] has shape {value.shape}; expected {shape}")
        arrays[name] = value
    return x, y, arrays, one


def targets(layout, y, loss):
    """y as the program takes it, (K,) or (B, K) in the output's (channel, row, column) order,
    from what a caller may give: that, a map's values as (C, H, W) or (B, C, H, W), or — for
    cross-entropy — class indices as torch's CrossEntropyLoss takes them: an integer per sample
    for a vector output, an H×W array of them per sample for a map, each made a one-hot
    probability vector over the C channels."""
    if type(y) is numpy.ndarray and y.ndim <= 2 and y.dtype.kind == "f":
        return y  # the quick path: already as the program takes it
    y = numpy.asarray(y)
    shape = layout.output_shape
    if y.dtype.kind in "iu" and (loss or layout.loss) == "cross_entropy":
        classes, per_sample = shape[0], shape[1:]
        if y.shape != per_sample and y.shape[1:] != per_sample:
            where = "an integer" if not per_sample else f"an array {per_sample} of integers"
            raise ValueError(
                f"y has integer shape {y.shape}: class indices are {where} per sample "
                f"(or a batch of them), for an output of {classes} classes"
            )
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise ValueError(
                f"y holds class {y.min() if y.min() < 0 else y.max()}; "
                f"this output has {classes} classes, 0 to {classes - 1}"
            )
        batch = y.ndim - len(per_sample)
        one_hot = numpy.eye(classes)[y]  # (*batch, *pixels, C): the channel last
        return numpy.moveaxis(one_hot, -1, batch).reshape(*y.shape[:batch], -1)
    if len(shape) > 1 and y.shape[-len(shape):] == shape:
        return y.reshape(*y.shape[: y.ndim - len(shape)], -1)  # a map's values, flattened
    return y


def _expected(layout):
    wanted = {**layout.parameters, **layout.buffers}
    return ", ".join(f"{name} {shape}" for name, shape in wanted.items())


def _label(what):
    return what if what in ("x", "y") else f"params[{what!r}]"


def _numbers(what, value, dtype):
    try:
        return numpy.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        message = f"{_label(what)} must be an array of numbers, got {type(value).__name__}"
        raise ValueError(message) from None


GATHERED = 4096  # values: arrays up to this size are summed together (copying more costs more)


def _require_finite(arrays):
    """A ValueError naming the first of ``arrays`` (name -> array) holding nan or inf."""
    # A sum is finite when every value is: one pass over the values — python's sum for a
    # few (the article's network: 1.5 µs in all), the arrays of up to GATHERED values joined
    # and summed in one call (resnet_tiny's parameters and a sample: 7 µs, against 15 one by
    # one), larger ones each on its own; numpy's sum, not BLAS's dot product (twice as fast
    # alone, it leaves BLAS's threads spinning on the cores the chunks then run on: 30%
    # slower for network C at batch 1024). Huge values can overflow it, so the values
    # themselves are looked at before any is called non-finite.
    total, joined, large = 0.0, [], []
    for values in arrays.values():
        if values.size <= 64:
            total += sum(values.ravel().tolist())
        else:
            (joined if values.size <= GATHERED else large).append(values)
    if joined or large:
        with numpy.errstate(over="ignore", invalid="ignore"):
            if joined:
                total += float(numpy.add.reduce(numpy.concatenate(joined, axis=None)))
            for values in large:
                total += float(numpy.add.reduce(values, axis=None))
    if not math.isfinite(total):
        _name_non_finite(arrays)


def _name_non_finite(arrays):
    """A ValueError naming the first of ``arrays`` holding nan or inf (none: a sum of huge
    finite values overflowed, and all is well)."""
    for what, values in arrays.items():
        if not numpy.isfinite(values).all():
            # a float32 module's arguments were converted: a value past its range became inf
            past = "" if values.dtype == numpy.float64 else f", or past {values.dtype}'s range"
            raise ValueError(
                f"{_label(what)} has non-finite values (nan or inf{past}); all must be finite"
            )



# ---- running a module's programs ---------------------------------------------------------------


class Programs(NamedTuple):
    """A module's programs — per node and/or per layer, None where it has none — the number
    of samples the per-layer program takes at a time (its arrays then stay small enough for
    the cache), and the bytes a sample takes in its largest array (whether a chunk is worth
    a thread). With both programs, the per-node program runs single samples, on python
    floats, and the per-layer program every batch of two or more — but per-sample gradients
    of a batch of ``nodes_from`` samples or more (0: none), which the per-node program on
    arrays (B,) gives quicker on the smallest networks (see numeric.NODES_PER_SAMPLE)."""

    nodes: Any
    layers: Any
    batch_chunk: int = 64
    sample_bytes: int = 0
    nodes_from: int = 0


def run(programs, layout, x, y, params, reduce=None, g=None, loss=None):
    """Check the arguments, run a program, shape the result (see ``Result``)."""
    chosen = choose(layout, g, loss)
    x, y, params, one = _shaped(layout, x, targets(layout, y, loss), params, reduce)
    # One sample on python floats, kept quick (float64 only: python floats are float64).
    floats = programs.nodes is not None and layout.python_floats
    if one and floats:
        return Result(*_one_on_floats(programs.nodes, layout, x, y, params, chosen))
    if not one and len(x) == 1 and floats and programs.layers is not None:
        loss, grads = _one_on_floats(programs.nodes, layout, x[0], y[0], params, chosen)
        if reduce is None:  # a batch of one: per sample
            return Result(numpy.array([loss]), {name: g[None] for name, g in grads.items()})
        return Result(loss, {**grads, "x": grads["x"][None]})  # its sum and mean
    _require_finite({"x": x, "y": y, **params})
    if one:
        x, y = x[None], y[None]
    size = len(x)
    if size == 0:
        return _empty(layout, reduce)
    on_nodes = programs.layers is None or (
        reduce is None and programs.nodes_from and size >= programs.nodes_from
    )
    if programs.nodes is not None and on_nodes:  # the per-node program on arrays (B,)
        losses, grads = _run_nodes(programs.nodes, layout, x, y, params, chosen)
        if reduce is not None:
            scale = 1.0 if reduce == "sum" else 1 / size
            grads = {
                name: grad * scale if name == "x" else grad.sum(axis=0) * scale
                for name, grad in grads.items()
            }
    elif one and reduce is None:  # one sample's gradients are its batch's sums: kept quick
        losses, grads = programs.layers(x, y, params, *chosen, {}, False, 1.0)
        parameters = {name: grads[name] for name in layout.parameters}
        return Result(float(losses[0]), {"x": grads["x"][0], **parameters})
    else:
        scale = 1.0 if reduce != "mean" else 1 / size
        losses, grads = _run_layers(programs, layout, x, y, params, chosen, reduce is None, scale)
    return _result(losses, grads, reduce, one)


def _one_on_floats(program, layout, x, y, params, chosen):
    """One sample (x (*input), y (K,)) through the per-node program on python floats, the
    values' finiteness checked on the floats the program reads (one conversion, not two):
    its loss and gradients, the same whatever the reduction (the sum or mean of one)."""
    xs, ys = x.ravel().tolist(), y.tolist()
    flat = {name: value.ravel().tolist() for name, value in params.items()}
    total = sum(xs) + sum(ys)
    for values in flat.values():
        total += sum(values)
    if not math.isfinite(total):
        _name_non_finite({"x": x, "y": y, **params})
    try:
        loss, grads = program(xs, ys, flat, *chosen)
    except (ArithmeticError, ValueError):
        # math raises where numpy gives inf or nan (an exp of a large value, a log of 0):
        # run the array code instead, as a batch of one, so both give the same answer.
        losses, grads = _run_nodes(program, layout, x[None], y[None], params, chosen)
        return float(losses[0]), {name: grad[0] for name, grad in grads.items()}
    values = numpy.array(grads, dtype=float)
    spans = layout.spans.items()
    return float(loss), {name: values[a:b].reshape(shape) for name, (a, b, shape) in spans}


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



def _empty(layout, reduce):
    """An empty batch: no losses and no per-sample gradients; summed, a loss of 0 and zero
    gradients; a mean is undefined: nan, with zero gradients (as PyTorch's mean of nothing)."""
    dtype = layout.dtype
    x = numpy.zeros((0, *layout.input_shape), dtype)
    if reduce is None:
        grads = {name: numpy.zeros((0, *shape), dtype) for name, shape in layout.parameters.items()}
        return Result(numpy.zeros(0, dtype), {"x": x, **grads})
    grads = {name: numpy.zeros(shape, dtype) for name, shape in layout.parameters.items()}
    return Result(0.0 if reduce == "sum" else math.nan, {"x": x, **grads})


def _run_nodes(program, layout, x, y, params, chosen):
    """The per-node program on arrays (B,), one per node, for a batch: losses (B,) and
    per-sample gradients (B, *shape). (One sample on python floats: ``_one_on_floats``.) Off
    float64, the weights are arrays (1,) of the dtype, not python floats, so that every node
    keeps it."""
    if layout.python_floats:
        flat = {name: value.ravel().tolist() for name, value in params.items()}
    else:
        flat = {name: list(value.reshape(-1, 1)) for name, value in params.items()}
    size = len(x)
    # One contiguous row of B values per input node: the program unpacks the rows.
    columns = numpy.ascontiguousarray(x.reshape(size, -1).T)
    loss, grads = program(columns, numpy.ascontiguousarray(y.T), flat, *chosen)
    rows = _rows(grads, size, layout.dtype)
    return _rows([loss], size, layout.dtype)[0], {
        name: rows[a:b].T.reshape(size, *shape) for name, (a, b, shape) in layout.spans.items()
    }


def _rows(values, size, dtype):
    """Node values (arrays (B,), or a constant where a node does not depend on the sample)
    as one array (len(values), B) of ``dtype``."""
    rows = numpy.empty((len(values), size), dtype)
    for i, value in enumerate(values):
        rows[i] = value
    return rows
