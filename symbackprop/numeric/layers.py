"""The per-layer program (``style="layers"``): each layer's forward and backward pass as
whole-array numpy, a block per layer, from each operation's numeric-code face
(``Op.layer_code``) — never from the scalar graph, so its size grows with the number of
layers, not with the image, and printing it for LeNet-5 takes milliseconds.

The printer owns what lies between the operations: the activations a = g(z) and
∂L/∂z = ∂L/∂a · g′(z, a), the input held channels last ((B, H, W, C), so that a convolution
is one matrix product) and its gradient put back as (B, C, H, W), the flattening of an image
output for the loss, the loss per sample and its gradient (multiplied by ``scale``, 1/B for
a batch's mean).

Imports ``ops`` (for the names of a layer's variables) and the runtime's names.
"""

from __future__ import annotations

from math import prod
from typing import Any

from ..ops import CodeNames
from . import runtime

PROGRAM = "_layers"  # the name of the printed function
INDENT = "    "


def program_source(network: Any) -> str:
    """``def _layers(x, y, params, [g, g_prime,] loss_value, loss_gradient, per_sample, scale)``
    for ``network``: (losses (B,), grads by name)."""
    generic_g = network.generic_activation
    args = ["x", "y", "params", *(["g", "g_prime"] if generic_g else [])]
    args += ["loss_value", "loss_gradient", "per_sample", "scale"]
    body = [
        f"def {PROGRAM}({', '.join(args)}):",
        '    """The network a layer at a time on a batch x (B, *INPUT_SHAPE), y (B, K): forward,',
        "    the loss per sample, then backward from the last layer. Gradients are per sample",
        "    (B, *shape) when per_sample, else summed over the batch; dL/da of the output is",
        '    multiplied by scale (1/B for a mean). Returns the losses (B,) and the gradients."""',
        "    B = len(x)",
        "    grads = {}",
    ]
    body += [f"    {name} = params[{name!r}]" for name in network.parameters]
    image = len(network.input_shape) == 3
    if image:
        body.append("    x = x.transpose(0, 2, 3, 1)  # (B, H, W, C): images are held channels last")

    blocks = []  # per layer: its names and code
    for number, (op, shape) in enumerate(zip(network.layers, network.shapes), start=1):
        previous = "x" if number == 1 else f"a{number - 1}"
        activated = op.has_activation
        names = CodeNames(
            number=number,
            input=previous,
            output=f"z{number}" if activated else f"a{number}",
            output_grad=f"dz{number}" if activated else f"da{number}",
            input_grad=f"d{previous}",
        )
        blocks.append((op, shape, names, op.layer_code(shape, names)))

    for number, (op, shape, names, code) in enumerate(blocks, start=1):
        out = network.shapes[number]
        body += ["", f"    # ---- layer {number} forward: {op.describe()} -> {_shape(out)}"]
        body += _indent(code.forward)
        if op.has_activation:
            body.append(f"    a{number} = {_activation(op.activation, generic_g)}(z{number})")

    last = len(blocks)
    out_shape = network.shapes[-1]
    body += ["", f"    # ---- the loss: {network.loss}, one value per sample"]
    if len(out_shape) == 3:
        channels, height, width = out_shape
        body.append(f"    out = a{last}.transpose(0, 3, 1, 2).reshape(B, {prod(out_shape)})  # (c, h, w)")
        body += [
            "    losses = loss_value(out, y)",
            f"    da{last} = (loss_gradient(out, y) * scale)"
            f".reshape(B, {channels}, {height}, {width}).transpose(0, 2, 3, 1)",
        ]
    else:
        body += [
            f"    losses = loss_value(a{last}, y)",
            f"    da{last} = loss_gradient(a{last}, y) * scale",
        ]

    for number in range(last, 0, -1):
        op, shape, names, code = blocks[number - 1]
        body += ["", f"    # ---- layer {number} backward: {op.describe()}"]
        if op.has_activation:
            if op.activation == "identity":
                body.append(f"    dz{number} = da{number}  # identity: dL/dz = dL/da")
            else:
                prime = f"{_activation(op.activation, generic_g)}_prime"
                body.append(f"    dz{number} = da{number} * {prime}(z{number}, a{number})")
        body += _indent(code.backward)

    body += [""]
    body.append('    grads["x"] = dx.transpose(0, 3, 1, 2)' if image else '    grads["x"] = dx')
    body.append("    return losses, {name: grads[name] for name in GRADIENT_SHAPES}")
    return "\n".join(body)


def _activation(name: str, generic_g: bool) -> str:
    """The runtime function computing an activation (``g`` for the generic one)."""
    if name == "g":
        return "g"
    if name not in runtime.ACTIVATIONS:
        raise NotImplementedError(f"activation {name!r} has no numeric form in the runtime")
    return name


def _indent(lines: list[str]) -> list[str]:
    return [INDENT + line if line else "" for line in lines]


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
