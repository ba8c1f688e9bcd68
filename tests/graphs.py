"""Small networks that are graphs, not chains, written with the functional API.

Shared by the tests of every face: each puts a fork or a join to work — residual blocks with
identity and projection shortcuts, a fork feeding three consumers, concatenations, a skip
over a pooling layer, a tensor read twice by one addition — small enough for closed forms.
"""

from __future__ import annotations

from collections.abc import Callable

import symbackprop as sb


def activation_layers() -> sb.Network:
    """A chain of activations as layers of their own: ReLU after a conv, tanh after a pool."""
    return sb.Network((1, 5, 5), [
        sb.Conv2D(out_channels=2, kernel_size=2, bias=True), sb.ReLU(), sb.MaxPool2D(kernel_size=2),
        sb.Tanh(), sb.Dense(units=2),
    ], loss="sse")


def residual_identity() -> sb.Network:
    """ResNet's basic block: relu(h + conv(relu(conv(h)))) with h = relu(conv(x)) read twice."""
    x = sb.Input((1, 4, 4))
    h = sb.Conv2D(out_channels=2, kernel_size=3, padding=1, activation="relu")(x)
    r = sb.Conv2D(out_channels=2, kernel_size=3, padding=1, bias=True)(h)
    out = sb.ReLU()(sb.Add()(h, r))
    return sb.Network(inputs=x, outputs=sb.Dense(units=3, bias=True)(sb.GlobalAvgPool2D()(out)),
                      loss="cross_entropy", name="residual_identity")


def residual_projection() -> sb.Network:
    """A downsampling block: its shortcut is a strided 1x1 convolution."""
    x = sb.Input((1, 4, 4))
    h = sb.Conv2D(out_channels=2, kernel_size=1, activation="tanh")(x)
    r = sb.Conv2D(out_channels=2, kernel_size=2, stride=2, activation="sigmoid")(h)
    shortcut = sb.Conv2D(out_channels=2, kernel_size=1, stride=2, bias=True)(h)
    return sb.Network(inputs=x, outputs=sb.Dense(units=2)(sb.Add()(r, shortcut)), loss="sse",
                      name="residual_projection")


def fork_of_three() -> sb.Network:
    """One tensor read by three layers, joined again by one concatenation of three."""
    x = sb.Input((1, 3, 3))
    h = sb.Conv2D(out_channels=2, kernel_size=1, bias=True, activation="tanh")(x)
    a = sb.Conv2D(out_channels=1, kernel_size=3, padding=1, activation="softplus")(h)
    b = sb.Sigmoid()(h)
    c = sb.AvgPool2D(kernel_size=3, stride=1, padding=1)(h)
    return sb.Network(inputs=x, outputs=sb.Dense(units=2)(sb.Concat()(a, b, c)), loss="mse",
                      name="fork_of_three")


def concat_branches() -> sb.Network:
    """Inception's join: a convolution and a max pool of the same input, side by side."""
    x = sb.Input((2, 3, 3))
    a = sb.Conv2D(out_channels=1, kernel_size=3, padding=1, activation="leaky_relu")(x)
    b = sb.MaxPool2D(kernel_size=3, stride=1, padding=1)(x)
    return sb.Network(inputs=x, outputs=sb.Dense(units=2, bias=True)(sb.GlobalAvgPool2D()(sb.Concat()(a, b))),
                      loss="cross_entropy", name="concat_branches")


def skip_over_pooling() -> sb.Network:
    """A max pool and, beside it, a strided convolution that skips it, added."""
    x = sb.Input((1, 4, 4))
    h = sb.Conv2D(out_channels=2, kernel_size=1, activation="relu")(x)
    pooled = sb.MaxPool2D(kernel_size=2)(h)
    skip = sb.Conv2D(out_channels=2, kernel_size=2, stride=2)(h)
    return sb.Network(inputs=x, outputs=sb.Dense(units=2)(sb.Add()(pooled, skip)), loss="sse",
                      name="skip_over_pooling")


def read_twice() -> sb.Network:
    """One addition reading the same tensor twice, and the input once more."""
    x = sb.Input((1, 3, 3))
    h = sb.Conv2D(kernel_size=3, padding=1, activation="tanh")(x)
    return sb.Network(inputs=x, outputs=sb.Dense(units=2)(sb.Add()(h, x, h)), loss="sse",
                      name="read_twice")


def dense_skip() -> sb.Network:
    """A residual multilayer perceptron on a vector input."""
    x = sb.Input((4,))
    h = sb.Dense(units=4, bias=True, activation="tanh")(x)
    return sb.Network(inputs=x, outputs=sb.Dense(units=2)(sb.Add()(x, h)), loss="cross_entropy",
                      name="dense_skip")


GRAPHS: dict[str, Callable[[], sb.Network]] = {
    "activation layers": activation_layers,
    "residual, identity shortcut": residual_identity,
    "residual, projection shortcut": residual_projection,
    "a fork feeding three consumers": fork_of_three,
    "concat of two branches": concat_branches,
    "a skip over a pooling layer": skip_over_pooling,
    "one addition reading a tensor twice": read_twice,
    "a residual MLP": dense_skip,
}
