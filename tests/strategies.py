"""Hypothesis strategies for small networks of every layer option, activation and loss."""

from __future__ import annotations

import warnings

from hypothesis import strategies as st

import symbackprop as sb
from symbackprop.activations import ACTIVATIONS
from symbackprop.errors import DegenerateSetup
from symbackprop.losses import LOSSES

CONCRETE_ACTIVATIONS = sorted(name for name, a in ACTIVATIONS.items() if not a.generic)
CONCRETE_LOSSES = sorted(name for name, l in LOSSES.items() if not l.generic)


@st.composite
def networks(draw, max_size: int = 6, max_conv: int = 2, ops: bool = False) -> sb.Network:
    """A valid small network: 1–2 conv layers (channels, kernels, strides, padding, bias)
    and an optional dense layer, with concrete activations and loss. With ``ops``, each
    conv may be dilated and followed by a max or average pool (any kernel, stride and
    padding that fit)."""
    channels = draw(st.integers(1, 2))
    height, width = draw(st.integers(2, max_size)), draw(st.integers(2, max_size))
    shape = (channels, height, width)
    layers = []
    for _ in range(draw(st.integers(1, max_conv))):
        padding = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
        kernel = (
            draw(st.integers(1, min(3, shape[1] + 2 * padding[0]))),
            draw(st.integers(1, min(3, shape[2] + 2 * padding[1]))),
        )
        dilation = tuple(
            draw(st.integers(1, 2)) if ops and (k - 1) * 2 + 1 <= size + 2 * p else 1
            for k, size, p in zip(kernel, shape[1:], padding)
        )
        layer = sb.Conv2D(
            out_channels=draw(st.integers(1, 2)),
            kernel_size=kernel,
            stride=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
            padding=padding,
            dilation=dilation,
            bias=draw(st.booleans()),
            activation=draw(st.sampled_from(CONCRETE_ACTIVATIONS)),
        )
        layers.append(layer)
        shape = layer.output_shape(shape)
        if ops and draw(st.booleans()):
            pool_kernel = (draw(st.integers(1, min(3, shape[1]))), draw(st.integers(1, min(3, shape[2]))))
            pool = draw(st.sampled_from([sb.MaxPool2D, sb.AvgPool2D]))(
                kernel_size=pool_kernel,
                stride=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
                padding=tuple(draw(st.integers(0, k // 2)) for k in pool_kernel),
            )
            layers.append(pool)
            shape = pool.output_shape(shape)
    if draw(st.booleans()) or shape[0] * shape[1] * shape[2] > 8:
        layers.append(
            sb.Dense(
                units=draw(st.integers(1, 3)),
                bias=draw(st.booleans()),
                activation=draw(st.sampled_from(CONCRETE_ACTIVATIONS)),
            )
        )
        shape = (layers[-1].units,)
    # a softmax over one output (one unit, a one-channel map) is refused: it is always 1
    losses = [name for name in CONCRETE_LOSSES if shape[0] > 1 or not LOSSES[name].grouped]
    with warnings.catch_warnings():  # a squashed output before a loss of logits is drawn too, on purpose
        warnings.simplefilter("ignore", DegenerateSetup)
        return sb.Network((channels, height, width), layers, draw(st.sampled_from(losses)))
