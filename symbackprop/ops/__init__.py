"""The operations a network is made of, one file each, and their registry.

``OPS`` maps each spec key (``conv``, ``dense``, ``maxpool``, ``avgpool``) to its class.
Everything else dispatches over it: nothing outside this package asks which kind of layer
it holds. Adding an operation is one file here with every face of ``base.FACES`` and its
entry below; ``tests/test_ops.py`` names any face it still lacks.
"""

from __future__ import annotations

from .base import (
    FACES,
    Branch,
    CodeNames,
    Connection,
    LayerCode,
    Notation,
    Op,
    ParameterGrads,
    Shape,
)
from .conv import Conv2D
from .dense import Dense
from .pool import AvgPool2D, MaxPool2D

OPS: dict[str, type[Op]] = {op.key: op for op in (Conv2D, Dense, MaxPool2D, AvgPool2D)}

__all__ = [
    "FACES", "OPS", "AvgPool2D", "Branch", "CodeNames", "Connection", "Conv2D", "Dense", "LayerCode",
    "MaxPool2D", "Notation", "Op", "ParameterGrads", "Shape",
]
