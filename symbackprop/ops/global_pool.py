"""Global average pooling: the mean of each channel, a (C, H, W) map to a vector (C,).

What ResNet puts before its last dense layer: ``GlobalAvgPool2D()``, as torch's
``AdaptiveAvgPool2d(1)`` followed by ``Flatten()`` (or ``x.mean((2, 3))``). Each output reads
every place of its channel with the constant 1/(H·W), so its backward pass spreads
∂L/∂a_c evenly over the channel. No parameters, no activation.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, ClassVar

import numpy as np
import sympy

from ..errors import SpecError
from ..indexed import Bases, IndexForm, index
from ..nodes import Linear
from .base import (
    CodeNames,
    Connection,
    LayerCode,
    Notation,
    Op,
    Shape,
    read_attribute,
    upstream_tex,
)


@dataclass(frozen=True)
class GlobalAvgPool2D(Op):
    """The mean of each channel over its whole height and width.

    >>> GlobalAvgPool2D().output_shape((16, 8, 8)), GlobalAvgPool2D().window((16, 8, 8))
    ((16,), 64)
    """

    key: ClassVar[str] = "global_avgpool"
    title: ClassVar[str] = "global average pooling"
    torch_name: ClassVar[str] = "AdaptiveAvgPool2d"
    has_activation: ClassVar[bool] = False

    def output_shape(self, input_shape: Shape) -> Shape:
        self.check_input(input_shape)
        return (input_shape[0],)

    def parameter_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {}

    def window(self, input_shape: Shape) -> int:
        return input_shape[1] * input_shape[2]  # the whole channel

    # ---- the scalar face --------------------------------------------------------------------

    def connections(self, input_shape: Shape) -> list[Connection]:
        channels, area = input_shape[0], input_shape[1] * input_shape[2]
        return [
            Connection(tuple(range(c * area, (c + 1) * area)), tuple(range(area)), None, None)
            for c in range(channels)
        ]

    def nodes(self, input_shape: Shape, inputs, params, outputs) -> tuple:
        """a_c = Σ_{j in channel c} a_j / (H·W): a weighted sum with constant coefficients."""
        weight = sympy.Rational(1, input_shape[1] * input_shape[2])
        return tuple(
            Linear(out, tuple((weight, inputs[j]) for j in c.inputs))
            for out, c in zip(outputs, self.connections(input_shape))
        )

    # ---- notation ---------------------------------------------------------------------------

    def describe(self) -> str:
        return "global avgpool"

    def table_cells(self) -> tuple[str, str, str]:
        return "all", "--", "--"  # its window is the whole map

    def size_formula(self, input_shape: Shape, padded: bool) -> None:
        return None  # one value per channel

    def output_note(self) -> str:
        return "the mean of one whole channel"

    def forward_formula(self, n: Notation) -> dict[str, str]:
        l = n.number
        equation = (rf"a^{{({l})}}_{{c}} = \frac{{1}}{{H W}} \sum_{{j \in p^{{({l})}}_{{c}}}} "
                    rf"{n.input_letter}_{{j}}")
        note = rf"each output is the mean of one whole channel $p^{{({l})}}_{{c}}$, its $H W$ places"
        return {"equation": equation, "note": note}

    def weight_formula(self, n: Notation) -> None:
        return None

    def upstream_formula(self, n: Notation) -> dict[str, str]:
        l, k = n.number, n.source
        equation = rf"{upstream_tex(k, 'j')} = {upstream_tex(l, 'c(j)')} \cdot \frac{{1}}{{H W}}"
        note = "each channel's mean spreads its gradient evenly over the channel's places"
        return {"equation": equation, "note": note, "feeds": f"one node of layer {l}"}

    # ---- the tensor face --------------------------------------------------------------------

    def tensor_form(self, input_shape: Shape, t: Bases) -> IndexForm:
        """a[c] = (1 / (M·N)) Σ_{i,j} input[c, i, j], M × N the channel's size (the article's
        names for a map's height and width; W is the weights')."""
        c, i, j, u, v = index("c i j u v")
        channels, height, width = input_shape
        rows, columns = (sympy.Symbol(name, integer=True, positive=True) for name in "MN")
        expr = sympy.Sum(t.input[c, i, j], (i, 0, rows - 1), (j, 0, columns - 1)) / (rows * columns)
        return IndexForm(
            output=t.output[c], expr=expr, input=t.input[c, u, v], parameters={},
            sizes={c: channels, i: height, j: width, u: height, v: width},
            settings={rows: height, columns: width},
        )

    # ---- the reference face (numpy alone) ---------------------------------------------------

    def reference_forward(self, x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        """The mean over height and width: (B, C, H, W) → (B, C)."""
        return x.mean(axis=(2, 3))

    def reference_backward(
        self, dz: np.ndarray, x: np.ndarray, params: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """∂L/∂a_c / (H·W) at every place of channel c."""
        height, width = x.shape[2:]
        return np.broadcast_to(dz[:, :, None, None] / (height * width), x.shape).copy(), {}

    # ---- the numeric-code face ----------------------------------------------------------------

    def code_values(self, input_shape: Shape) -> int:
        return prod(input_shape)

    def layer_code(self, input_shape: Shape, names: CodeNames) -> LayerCode:
        """a = the mean over rows and columns; dL/dx spreads dL/da / (H·W) over the channel
        (repeated into a new array: 3 µs for one sample, where ``broadcast_to`` and a copy
        took 8)."""
        _, x, a, da, dx = names
        channels, height, width = input_shape
        area = height * width
        forward = [f"# {a}[c,b] = (1/{area}) sum_(i,j) {x}[c,i,j,b]", f"{a} = {x}.sum(axis=(1, 2)) / {area}"]
        backward = [
            f"# dL/d{x}[c,i,j,b] = dL/d{a}[c,b] / {area}, at every place of channel c",
            f"{dx} = ({da} / {area})[:, None, :].repeat({area}, axis=1).reshape({channels}, {height}, {width}, B)",
        ]
        return LayerCode(forward, backward)

    # ---- the torch twin ---------------------------------------------------------------------

    def torch_twin(self, input_shape: Shape) -> list[tuple[str, dict[str, Any]]]:
        return [(self.torch_name, {"output_size": 1}), ("Flatten", {})]

    @classmethod
    def from_torch(cls, module: Any) -> GlobalAvgPool2D:
        """``nn.AdaptiveAvgPool2d(1)``: one value per channel (other output sizes are refused)."""
        size = read_attribute(module, "output_size")
        if size not in (1, (1, 1), [1, 1]):
            raise SpecError(f"{type(module).__name__}: output_size={size}; only 1 (global pooling) is supported")
        return cls()
