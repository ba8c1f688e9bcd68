"""Built-in networks. ``article`` is the network of the reference article, exactly;
``lenet5`` is LeCun et al.'s LeNet-5 as it is taught today; ``resnet_tiny`` is a residual
network of two of ResNet's basic blocks, a graph with an identity and a projection shortcut;
``fcn_tiny`` and ``unet_tiny`` are fully convolutional: they downsample with strided
convolutions, upsample with transposed ones and score every pixel of a 16x16 map (the U-Net
with a skip that joins the two halves)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .errors import SpecError
from .network import Network
from .ops import (
    Add,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Concat,
    Conv2D,
    ConvTranspose2D,
    Dense,
    GlobalAvgPool2D,
    Input,
    ReLU,
    Tanh,
)


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


def lenet5(batch_norm: bool = False) -> Network:
    """LeNet-5: 1x32x32 → conv 6@5x5, tanh → avgpool 2 → conv 16@5x5, tanh → avgpool 2 →
    dense 120, tanh → dense 84, tanh → dense 10 → cross-entropy; every conv and dense
    layer with a bias. 61,706 parameters: W1 b1 W3 b3 W5 b5 W6 b6 W7 b7.

    ``batch_norm=True`` puts a batch normalisation after each convolution and each hidden
    dense layer, before its tanh (those layers then without a bias, which β replaces).

    >>> lenet5().parameter_count, lenet5(batch_norm=True).parameter_count
    (61706, 61932)
    """
    if not batch_norm:
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
    return Network(
        input_shape=(1, 32, 32),
        layers=[
            Conv2D(out_channels=6, kernel_size=5), BatchNorm2D(), Tanh(), AvgPool2D(kernel_size=2),
            Conv2D(out_channels=16, kernel_size=5), BatchNorm2D(), Tanh(), AvgPool2D(kernel_size=2),
            Dense(units=120), BatchNorm1D(), Tanh(),
            Dense(units=84), BatchNorm1D(), Tanh(),
            Dense(units=10, bias=True),
        ],
        loss="cross_entropy",
        name="lenet5_bn",
    )


def resnet_tiny(batch_norm: bool = False) -> Network:
    """Two of ResNet's basic blocks on a 3x16x16 image: a stem conv 8@3x3 (padding 1, relu);
    block 1, conv 8@3x3 (relu) → conv 8@3x3, added to the stem's output (the identity
    shortcut), then ReLU; block 2, conv 16@3x3 stride 2 (relu) → conv 16@3x3, added to a
    1x1 stride-2 conv 16 of block 1's output (the projection shortcut), then ReLU; global
    average pooling → dense 10 → cross-entropy. Every convolution pads by 1 but the 1x1; a
    bias everywhere: 5,194 parameters.

    ``batch_norm=True`` puts a batch normalisation after every convolution, before its ReLU
    (and before the addition), as ResNet does; the convolutions then have no bias (β stands
    for it): 5,266 parameters.

    >>> net = resnet_tiny()
    >>> net.parameter_count, net.shapes[-3:], net.sources[8]
    (5194, ((16, 8, 8), (16,), (10,)), (7, 8))
    >>> resnet_tiny(batch_norm=True).parameter_count
    5266
    """
    def conv(out: int, size: int, stride: int = 1, padding: int = 1, relu: bool = True) -> Callable:
        def apply(tensor: Any) -> Any:
            if not batch_norm:
                return Conv2D(out_channels=out, kernel_size=size, stride=stride, padding=padding,
                              bias=True, activation="relu" if relu else "identity")(tensor)
            h = BatchNorm2D()(Conv2D(out_channels=out, kernel_size=size, stride=stride, padding=padding)(tensor))
            return ReLU()(h) if relu else h
        return apply

    x = Input((3, 16, 16))
    stem = conv(8, 3)(x)
    h = conv(8, 3, relu=False)(conv(8, 3)(stem))
    block1 = ReLU()(Add()(stem, h))
    h = conv(16, 3, relu=False)(conv(16, 3, stride=2)(block1))
    shortcut = conv(16, 1, stride=2, padding=0, relu=False)(block1)
    block2 = ReLU()(Add()(h, shortcut))
    logits = Dense(units=10, bias=True)(GlobalAvgPool2D()(block2))
    return Network(inputs=x, outputs=logits, loss="cross_entropy",
                   name="resnet_tiny_bn" if batch_norm else "resnet_tiny")


def fcn_tiny() -> Network:
    """A fully convolutional network on a 1x16x16 image: conv 8@3x3 stride 2 (padding 1, relu) →
    conv 16@3x3 stride 2 (padding 1, relu) → transposed conv 8@4x4 stride 2 (padding 1, relu) →
    transposed conv 2@4x4 stride 2 (padding 1): a 2x16x16 score map, cross-entropy per pixel
    over the 2 classes. 3,562 parameters.

    >>> net = fcn_tiny()
    >>> net.parameter_count, net.shapes
    (3562, ((1, 16, 16), (8, 8, 8), (16, 4, 4), (8, 8, 8), (2, 16, 16)))
    """
    x = Input((1, 16, 16))
    down = Conv2D(out_channels=8, kernel_size=3, stride=2, padding=1, bias=True, activation="relu")(x)
    h = Conv2D(out_channels=16, kernel_size=3, stride=2, padding=1, bias=True, activation="relu")(down)
    up = ConvTranspose2D(out_channels=8, kernel_size=4, stride=2, padding=1, activation="relu")(h)
    scores = ConvTranspose2D(out_channels=2, kernel_size=4, stride=2, padding=1)(up)
    return Network(inputs=x, outputs=scores, loss="cross_entropy", name="fcn_tiny")


def unet_tiny() -> Network:
    """``fcn_tiny`` with U-Net's skip: the first layer's output (8x8x8) is concatenated with the
    first transposed convolution's (8x8x8) before the last layer, which reads 16 channels.
    3,818 parameters.

    >>> net = unet_tiny()
    >>> net.parameter_count, net.sources[3], net.shapes[4:]
    (3818, (1, 3), ((16, 8, 8), (2, 16, 16)))
    """
    x = Input((1, 16, 16))
    down = Conv2D(out_channels=8, kernel_size=3, stride=2, padding=1, bias=True, activation="relu")(x)
    h = Conv2D(out_channels=16, kernel_size=3, stride=2, padding=1, bias=True, activation="relu")(down)
    up = ConvTranspose2D(out_channels=8, kernel_size=4, stride=2, padding=1, activation="relu")(h)
    joined = Concat()(down, up)
    scores = ConvTranspose2D(out_channels=2, kernel_size=4, stride=2, padding=1)(joined)
    return Network(inputs=x, outputs=scores, loss="cross_entropy", name="unet_tiny")


PRESETS: dict[str, Callable[[], Network]] = {
    "article": article, "lenet5": lenet5, "resnet_tiny": resnet_tiny, "fcn_tiny": fcn_tiny,
    "unet_tiny": unet_tiny,
}

BATCH_NORM_PRESETS: tuple[str, ...] = tuple(
    name for name, build in PRESETS.items() if "batch_norm" in inspect.signature(build).parameters
)
"""The presets with a batch-normalised variant (``batch_norm=True``)."""


def preset(name: str, batch_norm: bool = False) -> Network:
    """The preset called ``name``, batch-normalised when ``batch_norm`` (for those of
    ``BATCH_NORM_PRESETS``); a SpecError naming the choices otherwise.

    >>> preset("resnet_tiny", batch_norm=True).name
    'resnet_tiny_bn'
    """
    if name not in PRESETS:
        raise SpecError(f"no preset {name!r}; choose one of {', '.join(PRESETS)}")
    if not batch_norm:
        return PRESETS[name]()
    if name not in BATCH_NORM_PRESETS:
        raise SpecError(
            f"the preset {name} has no batch-normalised variant; "
            f"{' and '.join(BATCH_NORM_PRESETS)} have one"
        )
    return PRESETS[name](batch_norm=True)
