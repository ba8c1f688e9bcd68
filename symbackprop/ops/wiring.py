"""The functional API's values: ``Input(shape)``, and what an operation applied to them makes.

Calling an operation on tensors — ``Conv2D(8, 3)(x)``, ``Add()(h, r)`` — gives a new
``Tensor`` that remembers the operation and the tensors it read, with its shape inferred
at once (a window too large for its input is a ``SpecError`` right there). A network is
then ``Network(inputs=x, outputs=out)``: the tensors ``out`` depends on, numbered in the
order they were made, which is an order where every tensor comes after what it reads (the
article's layer numbers l). As Keras's functional API and ``torch.fx`` write graphs.

Imports ``errors``; an operation is any object with ``given`` and ``output_shape``.
"""

from __future__ import annotations

import operator
from itertools import count
from typing import Any

from ..errors import SpecError, shown

Shape = tuple[int, ...]

_ORDER = count()  # tensors are numbered as they are made: that order is topological


class Tensor:
    """A value of a network being written: its shape, the operation that computes it and the
    tensors that operation reads (none for the input). ``name`` names its layer in specs,
    messages and ``to_dict``."""

    __slots__ = ("inputs", "name", "op", "order", "shape")

    def __init__(self, op: Any, inputs: tuple[Tensor, ...], shape: Shape, name: str | None) -> None:
        self.op, self.inputs, self.shape, self.name = op, inputs, shape, name
        self.order = next(_ORDER)

    def __repr__(self) -> str:
        made = "Input" if self.op is None else type(self.op).__name__
        named = f" {self.name!r}" if self.name else ""
        return f"<Tensor{named} {made} {shape_text(self.shape)}>"


def Input(shape: Any, name: str | None = None) -> Tensor:
    """The network's input: ``Input((3, 16, 16))`` (channels, height, width) or ``Input((n,))``.

    >>> Input((1, 4, 4))
    <Tensor Input 1x4x4>
    """
    return Tensor(None, (), input_shape(shape), name)


def apply(op: Any, inputs: tuple[Any, ...], name: str | None = None) -> Tensor:
    """``op`` on ``inputs`` (tensors): the tensor it makes, its shape inferred now; a SpecError
    saying what does not fit (the caller names the layer)."""
    for value in inputs:
        if not isinstance(value, Tensor):
            raise SpecError(f"expected tensors (sb.Input(...) or an operation's result), got {shown(value)}")
    expected = op.arity
    if expected is None and len(inputs) < 2:
        raise SpecError(f"reads two or more inputs, got {len(inputs)}")
    if expected is not None and len(inputs) != expected:
        raise SpecError(f"reads {expected} input{'s' * (expected != 1)}, got {len(inputs)}")
    if name is not None and not isinstance(name, str):
        raise SpecError(f"name must be a string, got {shown(name)}")
    shape = op.output_shape(op.given(tuple(t.shape for t in inputs)))
    return Tensor(op, tuple(inputs), shape, name)


def input_shape(value: object) -> Shape:
    """A (channels, height, width) or (features,) shape of positive ints, or a SpecError."""
    problem = SpecError(
        "input: the input shape must be [channels, height, width] or [features] of positive "
        f"integers, got {shown(value)}"
    )
    if not isinstance(value, (list, tuple)) or len(value) not in (1, 3):
        raise problem
    shape = tuple(_as_int(n) for n in value)
    if any(n is None or n < 1 for n in shape):
        raise problem
    return shape  # type: ignore[return-value]


def shape_text(shape: Shape) -> str:
    return "x".join(map(str, shape))


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None
