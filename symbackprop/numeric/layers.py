"""The per-layer program (``style="layers"``): each layer's forward and backward pass as
whole-array numpy, a block per layer, from each operation's numeric-code face
(``Op.layer_code``) — never from the scalar graph, so its size grows with the number of
layers, not with the image, and printing it for LeNet-5 takes milliseconds.

The printer owns what lies between the operations: the activations a = g(z) and
∂L/∂z = ∂L/∂a · g′(z, a); the input held with the batch last ((C, H, W, B), see
``ops.CodeNames``: a convolution is then one matrix product and every slice runs along the
batch) and its gradient put back as (B, C, H, W); the loss per sample on a column per
sample and its gradient (multiplied by ``scale``, 1/B for a batch's mean).

Imports ``ops`` (for the names of a layer's variables) and the runtime's activations.
"""

from __future__ import annotations

import re
from math import prod
from typing import Any

from ..ops import CodeNames, ParameterGrads
from ..ops.base import activation_code
from .runtime.functions import ACTIVATIONS, LOSSES_AND_GRADIENTS

PROGRAM = "_layers"  # the name of the printed function
INDENT = "    "


def program_source(network: Any, backend: str = "numpy") -> str:
    """``def _layers(x, y, params, [g, g_prime,] loss_value, loss_gradient, grads, per_sample,
    scale)`` for ``network``: (losses (B,), grads by name). For ``backend="jax"`` the same
    text with ``jnp`` (jax.numpy) for ``numpy``; it runs summed only, per_sample False."""
    generic_g = network.generic_activation
    args = ["x", "y", "params", *(["g", "g_prime"] if generic_g else [])]
    args += ["loss_value", "loss_gradient", "grads", "per_sample", "scale"]
    body = [
        f"def {PROGRAM}({', '.join(args)}):",
        '    """The network a layer at a time on a batch x (B, *INPUT_SHAPE), y (B, K): forward,',
        "    the loss per sample, then backward from the last layer. per_sample: the parameter",
        "    gradients are written into grads' arrays (B, *shape); otherwise they are summed over",
        "    the batch and put in grads. dL/da of the output is multiplied by scale (1/B for a",
        '    mean). Returns the losses (B,) and grads, with "x" (B, *INPUT_SHAPE) added."""',
        "    B = len(x)",
    ]
    body += [f"    {name} = params[{name!r}]" for name in [*network.parameters, *network.buffers]]
    image = len(network.input_shape) == 3
    if image:
        body.append("    # (C, H, W, B): the batch last and contiguous, so that windows copy whole rows of it")
        if backend == "jax":
            body.append("    x = x.transpose(1, 2, 3, 0)")
        else:
            body.append("    x = numpy.ascontiguousarray(x.transpose(1, 2, 3, 0))")
    else:
        body.append("    x = x.T  # (N, B): a column per sample")
    body.append("    y = y.T  # (K, B)")

    gradients = _gradient_names(network)
    blocks = []  # per layer: the operation and its code
    for number, op in enumerate(network.layers, start=1):
        sources = network.sources[number - 1]
        activated = op.has_activation
        names = CodeNames(
            number=number,
            input=op.given([_value(source) for source in sources]),
            output=f"z{number}" if activated else f"a{number}",
            output_grad=f"dz{number}" if activated else f"da{number}",
            input_grad=op.given([gradients[number, k] for k in range(len(sources))]),
        )
        blocks.append((op, op.layer_code(network.input_shape_of(number), names)))

    for number, (op, code) in enumerate(blocks, start=1):
        out = network.shapes[number]
        sources = network.sources[number - 1]
        reads = "" if sources == (number - 1,) else ", from " + ", ".join(map(_value, sources))
        body += ["", f"    # ---- layer {number} forward: {op.describe()} -> {_shape(out)}{reads}"]
        body += _indent(code.forward)
        if op.has_activation:
            body += _indent(activation_code(_activation(op.activation), f"z{number}", f"a{number}", "", "")[0])

    last = len(blocks)
    out_shape = network.shapes[-1]
    body += ["", f"    # ---- the loss: {network.loss}, one value per sample"]
    out = f"a{last}"
    channels = out_shape[0]  # a map's softmax runs over its channels, pixel by pixel
    if len(out_shape) == 3:
        body.append(f"    out = a{last}.reshape({prod(out_shape)}, B)  # (channel, row, column) order")
        out = "out"
    both = _loss_and_gradient(network)
    if both is None:  # the generic loss, chosen at run time
        body += [f"    losses = loss_value({out}, y, {channels})"]
        body += [f"    da{last} = loss_gradient({out}, y, {channels}) * scale"]
    else:
        body += [
            f"    losses, da{last} = {both}({out}, y, {channels})  # the two share their work (log-sum-exp)",
            f"    da{last} *= scale",
        ]
    if len(out_shape) == 3:
        body.append(f"    da{last} = da{last}.reshape({_args(out_shape)}, B)")

    for number in range(last, 0, -1):
        op, code = blocks[number - 1]
        body += ["", f"    # ---- layer {number} backward: {op.describe()}"]
        body += _indent(_gathered(network, number, gradients))
        if op.has_activation:
            function = _activation(op.activation)
            body += _indent(activation_code(function, f"z{number}", f"a{number}", f"da{number}", f"dz{number}")[1])
        body += _indent(_parameter_grads(code.parameter_grads, backend) + code.backward)

    body += _indent(_gathered(network, 0, gradients))
    body += [""]
    body.append('    grads["x"] = dx.transpose(3, 0, 1, 2)' if image else '    grads["x"] = dx.T')
    body.append("    return losses, grads")
    text = "\n".join(body)
    return re.sub(r"\bnumpy\.", "jnp.", text) if backend == "jax" else text


# The largest array of a chunk of the batch: 4 MB, measured best with two chunks at a time on
# 2 MB of cache per core here (network C: 19 ms at 4 MB, 23 at 2 MB, 20 at 8 MB).
CHUNK_BYTES = 2**22
# Fewer samples at a time cost more in python than they save (LeNet-5, whose windows alone
# take 157 kB a sample: 32 at a time 11% faster than 16); more than 1024 gain nothing.
CHUNK_LIMITS = (32, 1024)


def sample_bytes(network: Any) -> int:
    """The bytes a sample takes in the per-layer program's largest array: each operation says
    how many values per sample its code holds at most (``code_values``)."""
    return 8 * max(
        op.code_values(network.input_shape_of(number)) for number, op in enumerate(network.layers, start=1)
    )


def batch_chunk(network: Any) -> int:
    """How many samples the per-layer program takes at a time: a power of two that keeps its
    largest array near CHUNK_BYTES (measured best with benchmarks/numeric.py)."""
    largest = sample_bytes(network)
    chunk = CHUNK_LIMITS[0]
    while chunk * 2 <= CHUNK_LIMITS[1] and chunk * 2 * largest <= CHUNK_BYTES:
        chunk *= 2
    return chunk


def _value(number: int) -> str:
    """The variable holding layer ``number``'s output: ``x`` for 0, else ``a{number}``."""
    return "x" if number == 0 else f"a{number}"


def _gradient_names(network: Any) -> dict[tuple[int, int], str]:
    """(layer, input place) → the variable its backward lines assign ∂L/∂(that input) to:
    ``da3`` where layer 3's output is read once in the whole network, else one variable per
    read, ``da3_5`` (read by layer 5) or ``da3_5_1`` (its second input too), that
    ``_gathered`` adds up."""
    reads: dict[int, list[tuple[int, int]]] = {}
    for number, sources in enumerate(network.sources, start=1):
        for place, source in enumerate(sources):
            reads.setdefault(source, []).append((number, place))
    names = {}
    for source, readers in reads.items():
        for number, place in readers:
            name = f"d{_value(source)}"
            if len(readers) > 1:
                twice = network.sources[number - 1].count(source) > 1
                name += f"_{number}" + (f"_{place}" if twice else "")
            names[number, place] = name
    return names


def _gathered(network: Any, number: int, gradients: dict[tuple[int, int], str]) -> list[str]:
    """∂L/∂(layer ``number``'s output) as the sum of what each layer reading it sent back (the
    article's rule (20)), where more than one did; a new array, none of them changed."""
    parts = [name for (reader, place), name in gradients.items() if network.sources[reader - 1][place] == number]
    if len(parts) <= 1:
        return []
    return [
        f"# dL/d{_value(number)}: the sum of what each of the {len(parts)} places reading it sent back",
        f"d{_value(number)} = {' + '.join(parts)}",
    ]


def _activation(name: str) -> str:
    """The runtime function computing an activation (``g`` for the generic one)."""
    if name == "g":
        return "g"
    if name not in ACTIVATIONS:
        raise NotImplementedError(f"activation {name!r} has no numeric form in the runtime")
    return name


def _loss_and_gradient(network: Any) -> str | None:
    """The runtime function giving a concrete loss's values and gradient at once
    (``cross_entropy_and_gradient``); None for the generic loss, whose two functions the
    call chooses."""
    if network.loss_function.generic:
        return None
    name = f"{network.loss}_and_gradient"
    if name not in LOSSES_AND_GRADIENTS:
        raise NotImplementedError(f"loss {network.loss!r} has no numeric form in the runtime")
    return name


def _parameter_grads(grads: ParameterGrads | None, backend: str) -> list[str]:
    """A layer's parameter gradients, per sample or summed as the call asks; under jax the
    summed lines alone (the program runs summed, per-sample gradients come from jax.vmap)."""
    if grads is None:
        return []
    if backend == "jax":
        return [grads.comment, *grads.summed.lines]
    return [
        grads.comment,
        f"if per_sample:  # {grads.per_sample.note}",
        *_indent(grads.per_sample.lines),
        f"else:  # {grads.summed.note}",
        *_indent(grads.summed.lines),
    ]


def _indent(lines: list[str]) -> list[str]:
    return [INDENT + line if line else "" for line in lines]


def _args(shape: tuple[int, ...]) -> str:
    return ", ".join(map(str, shape))


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
