"""Built-in networks. ``article`` is the network of the reference article, exactly;
``lenet5`` is LeCun et al.'s LeNet-5 as it is taught today."""

from __future__ import annotations

from collections.abc import Callable

from .network import Network
from .ops import AvgPool2D, Conv2D, Dense


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


def lenet5() -> Network:
    """LeNet-5: 1x32x32 → conv 6@5x5, tanh → avgpool 2 → conv 16@5x5, tanh → avgpool 2 →
    dense 120, tanh → dense 84, tanh → dense 10 → cross-entropy; every conv and dense
    layer with a bias. 61,706 parameters: W1 b1 W3 b3 W5 b5 W6 b6 W7 b7.

    >>> lenet5().parameter_count
    61706
    """
    return Network(
        input_shape=(1, 32, 32),
        layers=[
            Conv2D(out_channels=6, kernel_size=5, bias=True, activation="tanh"),
            AvgPool2D(kernel_size=2),
            Conv2D(out_channels=16, kernel_size=5, bias=True, activation="tanh"),
            AvgPool2D(kernel_size=2),
            Dense(units=120, bias=True, activation="tanh"),
            Dense(units=84, bias=True, activation="tanh"),
            Dense(units=10, bias=True),
        ],
        loss="cross_entropy",
        name="lenet5",
    )


PRESETS: dict[str, Callable[[], Network]] = {"article": article, "lenet5": lenet5}
