"""The operations a network is made of, one file each, and their registry.

``OPS`` maps each spec key (``conv``, ``dense``, ``maxpool``, ``avgpool``) to its class.
Everything else dispatches over it: nothing outside this package asks which kind of layer
it holds. Adding an operation is one file here with every face of ``base.FACES`` and its
entry below; ``tests/test_ops.py`` names any face it still lacks.
"""

from __future__ import annotations

from .activation import Activation, LeakyReLU, ReLU, Sigmoid, Softplus, Tanh
from .add import Add
from .base import (
    FACES,
    Branch,
    CodeNames,
    Connection,
    LayerCode,
    Notation,
    Op,
    Parameter,
    ParameterGrads,
    Shape,
)
from .batchnorm import BatchNorm1D, BatchNorm2D
from .concat import Concat
from .conv import Conv2D
from .conv_transpose import ConvTranspose2D
from .dense import Dense
from .global_pool import GlobalAvgPool2D
from .pool import AvgPool2D, MaxPool2D
from .upsample import Upsample
from .wiring import Input, Tensor

OPS: dict[str, type[Op]] = {
    op.key: op
    for op in (
        Conv2D, Dense, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Activation, Add, Concat, ConvTranspose2D,
        Upsample, BatchNorm2D, BatchNorm1D,
    )
}

__all__ = [
    "FACES",
    "OPS",
    "Activation",
    "Add",
    "AvgPool2D",
    "BatchNorm1D",
    "BatchNorm2D",
    "Branch",
    "CodeNames",
    "Concat",
    "Connection",
    "Conv2D",
    "ConvTranspose2D",
    "Dense",
    "GlobalAvgPool2D",
    "Input",
    "LayerCode",
    "LeakyReLU",
    "MaxPool2D",
    "Notation",
    "Op",
    "Parameter",
    "ParameterGrads",
    "ReLU",
    "Shape",
    "Sigmoid",
    "Softplus",
    "Tanh",
    "Tensor",
    "Upsample",
]
