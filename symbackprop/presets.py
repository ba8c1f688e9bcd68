"""Built-in networks. ``article`` is the network of the reference article, exactly."""

from __future__ import annotations

from collections.abc import Callable

from .layers import Conv2D, Dense
from .network import Network


def article() -> Network:
    """The article's network (its figure 7): 4x4 grey image → conv 2x2 → conv 2x2 → dense 2.

    Stride 1, no padding, no bias, the generic activation g everywhere and the
    generic loss L(a, y): 16 weights, W1 (1,1,2,2), W2 (1,1,2,2), W3 (2,4).
    """
    return Network(
        input_shape=(1, 4, 4),
        layers=[
            Conv2D(out_channels=1, kernel_size=2, stride=1, padding=0, bias=False, activation="g"),
            Conv2D(out_channels=1, kernel_size=2, activation="g"),
            Dense(units=2, bias=False, activation="g"),
        ],
        loss="generic",
        name="article",
    )


PRESETS: dict[str, Callable[[], Network]] = {"article": article}
