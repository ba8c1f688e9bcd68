"""Upsampling by an integer factor, as PyTorch's ``Upsample``: nearest or bilinear.

Nearest repeats each input value over an s_h × s_w block. Bilinear (``align_corners=False``,
torch's default) reads output row y at the source row (y + ½)/s − ½, clamped at 0, between
the rows ⌊·⌋ and ⌊·⌋ + 1 (the last row stands in for the one past it), weighted by how near
each is; columns alike, the two axes multiplied. Either way each output is a weighted sum
of inputs with constant weights: its gradient routes ∂L/∂a back with those same weights — the
upsampling's routing table. No parameters, no activation.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from itertools import product
from math import floor, prod
from typing import Any, ClassVar

import numpy as np
import sympy
from sympy import KroneckerDelta, Sum

from ..errors import SpecError, shown
from ..indexed import Bases, IndexForm, index
from ..nodes import Linear
from .arrays import bilinear_matrix
from .base import (
    CodeNames,
    Connection,
    LayerCode,
    Notation,
    Op,
    Pair,
    Shape,
    pair,
    pair_text,
    upstream_tex,
)

MODES = ("nearest", "bilinear")


def axis_weights(size: int, scale: int, mode: str) -> list[list[tuple[int, Fraction]]]:
    """For each output index along one axis, the (input index, weight) pairs it reads."""
    result = []
    for out in range(size * scale):
        if mode == "nearest":
            result.append([(out // scale, Fraction(1))])
            continue
        source = max(Fraction(2 * out + 1, 2 * scale) - Fraction(1, 2), Fraction(0))
        low = floor(source)
        high = min(low + 1, size - 1)
        far = source - low
        pairs = {low: 1 - far}
        pairs[high] = pairs.get(high, Fraction(0)) + far
        result.append([(i, w) for i, w in pairs.items() if w != 0])
    return result


@dataclass(frozen=True)
class Upsample(Op):
    """Upsampling by ``scale_factor`` (an int or an (h, w) pair), ``mode`` "nearest" or "bilinear".

    >>> Upsample(2).output_shape((3, 4, 5)), Upsample(2, "bilinear").window((3, 4, 5))
    ((3, 8, 10), 4)
    """

    scale_factor: int | Pair
    mode: str = "nearest"

    key: ClassVar[str] = "upsample"
    title: ClassVar[str] = "upsampling"
    torch_name: ClassVar[str] = "Upsample"
    has_activation: ClassVar[bool] = False
    required: ClassVar[tuple[str, ...]] = ("scale_factor",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale_factor", pair(self.key, "scale_factor", self.scale_factor, 1))
        if self.mode not in MODES:
            raise SpecError(f"{self.key}: mode must be one of {', '.join(MODES)}, got {shown(self.mode)}")

    def output_shape(self, input_shape: Shape) -> Shape:
        self.check_input(input_shape)
        channels, height, width = input_shape
        return (channels, height * self.scale_factor[0], width * self.scale_factor[1])

    def parameter_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {}

    def window(self, input_shape: Shape) -> int:
        return 1 if self.mode == "nearest" else 4  # the rows and columns it reads, at most

    def _weights(self, input_shape: Shape) -> tuple[list, list]:
        _, height, width = input_shape
        return (axis_weights(height, self.scale_factor[0], self.mode),
                axis_weights(width, self.scale_factor[1], self.mode))

    # ---- the scalar face --------------------------------------------------------------------

    def connections(self, input_shape: Shape) -> list[Connection]:
        """Each output reads its source rows and columns: one input (nearest), up to four."""
        return [Connection(tuple(i for i, _ in reads), tuple(slot for slot, _ in enumerate(reads)), None, None)
                for reads in self._reads(input_shape)]

    def _reads(self, input_shape: Shape) -> list[list[tuple[int, Fraction]]]:
        """For each output (c, y, x): the flat inputs it reads and their weights."""
        channels, height, width = input_shape
        rows, cols = self._weights(input_shape)
        result = []
        for c, row, col in product(range(channels), rows, cols):
            result.append([(c * height * width + i * width + j, wi * wj) for (i, wi), (j, wj) in product(row, col)])
        return result

    def nodes(self, input_shape: Shape, inputs, params, outputs) -> tuple:
        """a_i = Σ_j w_ij · a_j, the interpolation's weights as constants."""
        return tuple(
            Linear(out, tuple((sympy.Rational(w.numerator, w.denominator), inputs[j]) for j, w in reads))
            for out, reads in zip(outputs, self._reads(input_shape))
        )

    # ---- notation ---------------------------------------------------------------------------

    def describe(self) -> str:
        return f"upsample x{pair_text(self.scale_factor)}, {self.mode}"

    def table_cells(self) -> tuple[str, str, str]:
        return f"x{pair_text(self.scale_factor)}, {self.mode}", "--", "--"

    def size_formula(self, input_shape: Shape, padded: bool) -> list[str]:
        out = self.output_shape(input_shape)
        return [rf"{letter}_a = {m} \cdot {s} = {result}"
                for letter, m, s, result in zip("MN", input_shape[1:], self.scale_factor, out[1:])]

    def position_note(self) -> str:
        return ("the input its block stands on" if self.mode == "nearest"
                else "the (at most four) inputs around its source point")

    def output_note(self) -> str:
        return ("a copy of the input under its block" if self.mode == "nearest"
                else "a weighted mean of the inputs around its source point")

    def forward_formula(self, n: Notation) -> dict[str, str]:
        l = n.number
        if self.mode == "nearest":
            equation = rf"a^{{({l})}}_{{i}} = {n.input_letter}_{{p^{{({l})}}_{{i}}}}"
            note = "each output copies the input its block stands on: each input fills a block of the output"
        else:
            equation = rf"a^{{({l})}}_{{i}} = \sum_{{j \in p^{{({l})}}_{{i}}}} \lambda_{{i,j}} \, {n.input_letter}_{{j}}"
            note = (
                r"each output mixes the (at most) four inputs around its source point, $\lambda_{i,j}$ "
                "the bilinear weights, products of how near each row and column lies"
            )
        return {"equation": equation, "note": note}

    def weight_formula(self, n: Notation) -> None:
        return None

    def upstream_formula(self, n: Notation) -> dict[str, str]:
        k, l = n.number, n.source
        weight = "" if self.mode == "nearest" else r" \cdot \lambda_{i,j}"
        equation = rf"{upstream_tex(l, 'j')} = \sum_{{i \,:\, j \in p^{{({k})}}_{{i}}}} {upstream_tex(k, 'i')}{weight}"
        note = ("each input collects the gradients of the outputs it filled" if self.mode == "nearest"
                else "each input collects the gradients of the outputs that read it, each with its weight")
        return {"equation": equation, "note": note, "feeds": f"the outputs of layer {k} that read it"}

    # ---- the tensor face --------------------------------------------------------------------

    def tensor_form(self, input_shape: Shape, t: Bases) -> IndexForm:
        """a[c, u, v] = Σ_{i,j} U_h[u, i] U_w[v, j] · a[c, i, j]; for nearest, U[u, i] = [⌊u/s⌋ = i],
        written Σ_{m<s} [s·i + m = u] (u, v: not the targets y, the input x)."""
        c, u, v, i, j, m, n = index("c u v i j m n")
        channels, height, width = input_shape
        _, out_h, out_w = self.output_shape(input_shape)
        (sh, sw) = self.scale_factor
        if self.mode == "nearest":
            expr = Sum(KroneckerDelta(sh * i + m, u) * KroneckerDelta(sw * j + n, v) * t.input[c, i, j],
                       (i, 0, height - 1), (j, 0, width - 1), (m, 0, sh - 1), (n, 0, sw - 1))
            sizes = {c: channels, u: out_h, v: out_w, i: height, j: width, m: sh, n: sw}
        else:
            rows, cols = self._weights(input_shape)
            expr = sympy.Add(*[
                sympy.Rational(wi.numerator, wi.denominator) * sympy.Rational(wj.numerator, wj.denominator)
                * KroneckerDelta(u, out_y) * KroneckerDelta(v, out_x) * t.input[c, ri, rj]
                for out_y, row in enumerate(rows) for out_x, col in enumerate(cols)
                for (ri, wi), (rj, wj) in product(row, col)
            ])
            sizes = {c: channels, u: out_h, v: out_w, i: height, j: width}
        return IndexForm(output=t.output[c, u, v], expr=expr, input=t.input[c, i, j], parameters={},
                         sizes=sizes, settings={})

    # ---- the reference face (numpy alone) ---------------------------------------------------

    def reference_forward(self, x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        """Nearest: each value repeated over its block. Bilinear: rows, then columns, each an
        interpolation matrix applied along its axis."""
        (sh, sw) = self.scale_factor
        if self.mode == "nearest":
            return np.repeat(np.repeat(x, sh, axis=2), sw, axis=3)
        height, width = x.shape[2:]
        rows, cols = bilinear_matrix(height, sh), bilinear_matrix(width, sw)
        return np.einsum("yi,bcij,xj->bcyx", rows, x, cols, optimize=True)

    def reference_backward(
        self, dz: np.ndarray, x: np.ndarray, params: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The transposed interpolation: each input gets the outputs it fed, with their weights."""
        (sh, sw) = self.scale_factor
        batch, channels, height, width = x.shape
        if self.mode == "nearest":
            return dz.reshape(batch, channels, height, sh, width, sw).sum(axis=(3, 5)), {}
        rows, cols = bilinear_matrix(height, sh), bilinear_matrix(width, sw)
        return np.einsum("yi,bcyx,xj->bcij", rows, dz, cols, optimize=True), {}

    # ---- the numeric-code face ----------------------------------------------------------------

    def code_values(self, input_shape: Shape) -> int:
        return prod(self.output_shape(input_shape))

    def layer_code(self, input_shape: Shape, names: CodeNames) -> LayerCode:
        """Nearest: numpy.repeat along rows and columns; its gradient sums each block. Bilinear:
        an interpolation matrix per axis, U_h a U_wᵀ, and its transpose backward."""
        _, x, a, da, dx = names
        channels, height, width = input_shape
        (sh, sw) = self.scale_factor
        _, out_h, out_w = self.output_shape(input_shape)
        if self.mode == "nearest":
            forward = [
                f"# {a}[c,y,x,b] = {x}[c, y // {sh}, x // {sw}, b]: each value over a {sh}x{sw} block",
                f"{a} = numpy.repeat(numpy.repeat({x}, {sh}, axis=1), {sw}, axis=2)",
            ]
            backward = [
                f"# dL/d{x}: each block of dL/d{a} summed",
                f"{dx} = {da}.reshape({channels}, {height}, {sh}, {width}, {sw}, B).sum(axis=(2, 4))",
            ]
            return LayerCode(forward, backward)
        rows, cols = f"{a}_rows", f"{a}_cols"
        forward = [
            f"# {a}[c,y,x,b] = sum_(i,j) U_h[y,i] U_w[x,j] {x}[c,i,j,b]: bilinear, align_corners=False",
            f"{rows} = numpy.array({_matrix_text(height, sh)}, {x}.dtype)  # U_h ({out_h}, {height})",
            f"{cols} = numpy.array({_matrix_text(width, sw)}, {x}.dtype)  # U_w ({out_w}, {width})",
            (
                f"{a} = numpy.matmul({rows}, {x}.reshape({channels}, {height}, {width} * B))"
                f".reshape({channels}, {out_h}, {width}, B)"
            ),
            f"{a} = numpy.matmul({cols}, {a})  # ({out_w}, {width}) @ (c, y, {width}, B)",
        ]
        backward = [
            f"# dL/d{x} = U_hᵀ dL/d{a} U_w: each input gets the outputs it fed, with their weights",
            f"{dx} = numpy.matmul({cols}.T, {da})",
            (
                f"{dx} = numpy.matmul({rows}.T, {dx}.reshape({channels}, {out_h}, {width} * B))"
                f".reshape({channels}, {height}, {width}, B)"
            ),
        ]
        return LayerCode(forward, backward)

    # ---- the torch twin ---------------------------------------------------------------------

    def torch_twin(self, input_shape: Shape) -> list[tuple[str, dict[str, Any]]]:
        settings: dict[str, Any] = {"scale_factor": tuple(float(s) for s in self.scale_factor), "mode": self.mode}
        if self.mode == "bilinear":
            settings["align_corners"] = False
        return [(self.torch_name, settings)]

    @classmethod
    def from_torch(cls, module: Any) -> Upsample:
        """``nn.Upsample`` (and ``UpsamplingNearest2d``) with an integer ``scale_factor``, mode
        nearest or bilinear, ``align_corners`` False or unset; ``UpsamplingBilinear2d`` has
        ``align_corners=True``, which is refused."""
        name = type(module).__name__
        if getattr(module, "size", None) is not None:
            raise SpecError(f"{name}: size={module.size}; give scale_factor instead")
        if getattr(module, "align_corners", None):
            raise SpecError(f"{name}: align_corners=True; only align_corners=False (torch's default) is supported")
        if getattr(module, "recompute_scale_factor", None):
            raise SpecError(f"{name}: recompute_scale_factor=True is not supported")
        mode = getattr(module, "mode", None)
        if mode not in MODES:
            raise SpecError(f"{name}: mode={mode!r}; only nearest and bilinear are supported")
        factor = module.scale_factor
        factors = tuple(factor) if isinstance(factor, (tuple, list)) else (factor, factor)
        if len(factors) != 2 or any(float(f) != int(f) or f < 1 for f in factors):
            raise SpecError(f"{name}: scale_factor={factor}; only whole factors are supported")
        whole = tuple(int(f) for f in factors)
        return cls(whole[0] if whole[0] == whole[1] else whole, mode)


def _matrix_text(size: int, scale: int) -> str:
    """The interpolation matrix as a literal for generated code, from the scalar face's weights."""
    rows = []
    for reads in axis_weights(size, scale, "bilinear"):
        row = [0.0] * size
        for i, w in reads:
            row[i] += float(w)
        rows.append("[" + ", ".join(repr(v) for v in row) + "]")
    return "[" + ", ".join(rows) + "]"
