"""Layer types: their settings, shapes and forward wiring — no sympy, no backward rules.

A layer is a frozen dataclass of settings. Given its input shape (C, H, W) it
tells its output shape, its parameter shapes (PyTorch layouts) and its
*connections*: for every output node, which input nodes it multiplies by which
weight. That wiring is the forward rule, z_i = Σ w · input (+ b); the network
turns it into sympy nodes and the derivation reads local derivatives off it.

Adding a layer type is one class here with the same four methods
(``kind``, ``output_shape``, ``parameter_shapes``, ``connections``) plus its
entry in ``LAYER_TYPES``.

Imports ``errors`` and ``activations`` (for the names) only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from itertools import product
from typing import ClassVar, NamedTuple

from .activations import activation as _known_activation
from .errors import SpecError

Shape = tuple[int, ...]
Pair = tuple[int, int]


class Connection(NamedTuple):
    """How one output node is formed: Σ weight[w] · input[i] over ``terms``, + bias[b]."""

    terms: tuple[tuple[int, tuple[int, ...]], ...]  # (0-based flat input index, weight index)
    bias: tuple[int, ...] | None  # index into the bias, or None without bias


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(owner: str, key: str, value: object) -> int:
    if not _is_int(value) or value < 1:
        raise SpecError(f"{owner}: {key} must be a positive integer, got {value!r}")
    return value


def _pair(owner: str, key: str, value: object, minimum: int) -> Pair:
    """An int or an [h, w] pair of ints ≥ minimum, as a tuple (h, w)."""
    items = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    what = "a positive integer" if minimum == 1 else "a non-negative integer"
    if len(items) != 2 or not all(_is_int(v) and v >= minimum for v in items):
        raise SpecError(f"{owner}: {key} must be {what} or a pair of them, got {value!r}")
    return items


def _check_common(owner: str, bias: object, activation: object) -> None:
    if not isinstance(bias, bool):
        raise SpecError(f"{owner}: bias must be true or false, got {bias!r}")
    try:
        _known_activation(activation)
    except SpecError as error:
        raise SpecError(f"{owner}: {error}") from None


@dataclass(frozen=True, kw_only=True)
class Conv2D:
    """2-D convolution as PyTorch's conv2d (cross-correlation), zero padding, optional bias.

    Output size by the article's formula (1): floor((M + 2P − K) / S) + 1 per axis.
    ``kernel_size``, ``stride`` and ``padding`` take an int or an (h, w) pair and are
    stored as pairs.
    """

    kernel_size: int | Pair
    out_channels: int = 1
    stride: int | Pair = 1
    padding: int | Pair = 0
    bias: bool = False
    activation: str = "identity"

    kind: ClassVar[str] = "conv"

    def __post_init__(self) -> None:
        owner = "conv"
        _positive_int(owner, "out_channels", self.out_channels)
        object.__setattr__(self, "kernel_size", _pair(owner, "kernel_size", self.kernel_size, 1))
        object.__setattr__(self, "stride", _pair(owner, "stride", self.stride, 1))
        object.__setattr__(self, "padding", _pair(owner, "padding", self.padding, 0))
        _check_common(owner, self.bias, self.activation)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise SpecError(
                f"a convolution needs a (channels, height, width) input, got shape {input_shape}"
            )
        _, height, width = input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if kh > height + 2 * ph or kw > width + 2 * pw:
            raise SpecError(
                f"kernel {kh}x{kw} is larger than its padded input "
                f"{height + 2 * ph}x{width + 2 * pw}"
            )
        return (self.out_channels, (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1)

    def parameter_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        shapes = {"W": (self.out_channels, input_shape[0], *self.kernel_size)}
        if self.bias:
            shapes["b"] = (self.out_channels,)
        return shapes

    def connections(self, input_shape: Shape) -> list[Connection]:
        channels, height, width = input_shape
        out_channels, out_height, out_width = self.output_shape(input_shape)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        result = []
        for o, i, j in product(range(out_channels), range(out_height), range(out_width)):
            terms = []
            for c, m, n in product(range(channels), range(kh), range(kw)):
                row, col = i * sh + m - ph, j * sw + n - pw
                if 0 <= row < height and 0 <= col < width:  # padding contributes zero
                    terms.append((c * height * width + row * width + col, (o, c, m, n)))
            result.append(Connection(tuple(terms), (o,) if self.bias else None))
        return result

    def describe(self) -> str:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (
            f"conv {self.out_channels}x{kh}x{kw}, stride {sh}x{sw}, padding {ph}x{pw}, "
            f"{'bias' if self.bias else 'no bias'}, {self.activation}"
        )


@dataclass(frozen=True, kw_only=True)
class Dense:
    """Fully connected layer on the flattened input (channel, row, column), optional bias."""

    units: int
    bias: bool = False
    activation: str = "identity"

    kind: ClassVar[str] = "dense"

    def __post_init__(self) -> None:
        _positive_int("dense", "units", self.units)
        _check_common("dense", self.bias, self.activation)

    def output_shape(self, input_shape: Shape) -> Shape:
        return (self.units,)

    def parameter_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        size = 1
        for n in input_shape:
            size *= n
        shapes = {"W": (self.units, size)}
        if self.bias:
            shapes["b"] = (self.units,)
        return shapes

    def connections(self, input_shape: Shape) -> list[Connection]:
        size = self.parameter_shapes(input_shape)["W"][1]
        return [
            Connection(tuple((i, (f, i)) for i in range(size)), (f,) if self.bias else None)
            for f in range(self.units)
        ]

    def describe(self) -> str:
        return f"dense {self.units}, {'bias' if self.bias else 'no bias'}, {self.activation}"


Layer = Conv2D | Dense
LAYER_TYPES: dict[str, type] = {"conv": Conv2D, "dense": Dense}


def layer_keys(layer_type: type) -> list[str]:
    """The settings a layer type accepts (the keys allowed in a spec file)."""
    return [f.name for f in fields(layer_type)]
