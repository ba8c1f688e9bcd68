"""2-D max and average pooling, as PyTorch's ``MaxPool2d`` and ``AvgPool2d``.

A pooling layer slides a window over each channel on its own: a_i = max over j ∈ p_i of
the previous a_j (max pooling), or (1/K) Σ_{j ∈ p_i} a_j with K = kh·kw the window's whole
area (average pooling). It has no parameters and no activation. As in PyTorch: the stride
defaults to the kernel size; max pooling pads with −∞, so padding never wins; average
pooling pads with zeros and still divides by the whole area (``count_include_pad=True``);
padding is at most half the kernel. When values tie, max pooling's gradient goes to the
first maximum in window order (row by row), PyTorch's choice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import product
from math import prod
from typing import Any, ClassVar

import numpy as np
import sympy

from ..errors import SpecError
from ..indexed import Bases, IndexForm, Maximum, Settings, index
from ..nodes import Linear, Select
from .arrays import pad, windows
from .base import (
    CodeNames,
    Connection,
    LayerCode,
    Notation,
    Op,
    Pair,
    Shape,
    padded_text,
    pair,
    pair_text,
    read_attribute,
    read_text,
    same_or_pair,
    shape_tex,
    sliding_output,
    sliding_size_tex,
    unpadded_text,
    window_upstream_tex,
)


@dataclass(frozen=True, kw_only=True)
class _Pool(Op):
    """What max and average pooling share: the window, its settings and its sizes."""

    kernel_size: int | Pair
    stride: int | Pair | None = None
    padding: int | Pair = 0

    has_activation: ClassVar[bool] = False
    required: ClassVar[tuple[str, ...]] = ("kernel_size",)

    def __post_init__(self) -> None:
        owner = self.key
        object.__setattr__(self, "kernel_size", pair(owner, "kernel_size", self.kernel_size, 1))
        stride = self.kernel_size if self.stride is None else self.stride
        object.__setattr__(self, "stride", pair(owner, "stride", stride, 1))
        object.__setattr__(self, "padding", pair(owner, "padding", self.padding, 0))
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if ph > kh // 2 or pw > kw // 2:
            raise SpecError(
                f"{owner}: padding {ph}x{pw} is more than half the kernel {kh}x{kw} "
                "(PyTorch refuses it too: a window could then lie on padding alone)"
            )

    def output_shape(self, input_shape: Shape) -> Shape:
        self.check_input(input_shape)
        rows, cols = sliding_output("window", input_shape[1:], self.kernel_size, self.stride, self.padding)
        return (input_shape[0], rows, cols)

    def parameter_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {}

    def window(self, input_shape: Shape) -> int:
        return self.kernel_size[0] * self.kernel_size[1]  # one channel at a time

    def connections(self, input_shape: Shape) -> list[Connection]:
        channels, height, width = input_shape
        _, out_height, out_width = self.output_shape(input_shape)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        result = []
        for c, i, j in product(range(channels), range(out_height), range(out_width)):
            inputs, slots = [], []
            for slot, (m, n) in enumerate(product(range(kh), range(kw))):
                row, col = i * sh + m - ph, j * sw + n - pw
                if 0 <= row < height and 0 <= col < width:
                    inputs.append(c * height * width + row * width + col)
                    slots.append(slot)
            result.append(Connection(tuple(inputs), tuple(slots), None, None))
        return result

    def _reads(self) -> str:
        """Where output (i, j) reads its input at window place (m, n), for code comments."""
        return read_text(self.stride, (1, 1), self.padding)

    def pads(self) -> bool:
        return self.padding != (0, 0)

    def describe(self) -> str:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return f"{self.key} {kh}x{kw}, stride {sh}x{sw}, padding {ph}x{pw}"

    def table_cells(self) -> tuple[str, str, str]:
        return f"${shape_tex(self.kernel_size)}$", pair_text(self.stride), pair_text(self.padding)

    def size_formula(self, input_shape: Shape, padded: bool) -> list[str]:
        out = self.output_shape(input_shape)
        return sliding_size_tex(
            input_shape[1:], out[1:], self.kernel_size, self.stride, self.padding, (1, 1), padded
        )

    def weight_formula(self, n: Notation) -> None:
        return None  # no weights

    def position_note(self) -> str:
        return "the inputs its window covered, in the order of the window's places"

    # ---- the tensor face --------------------------------------------------------------------

    def _index_form(
        self, input_shape: Shape, t: Bases, pool: Callable[..., sympy.Expr], outside: sympy.Expr
    ) -> IndexForm:
        """output[c, i, j] = ``pool``(the entries a[c, s·i + m − p, s·j + n − p] of window (m, n),
        the window's limits, its area K_h·K_w): the index form both poolings share."""
        c, i, j, m, n, u, v = index("c i j m n u v")
        settings = Settings()  # s, p, K: symbols with the layer's values, per axis (h, w)
        s, p, k = settings.pairs(s=self.stride, p=self.padding, K=self.kernel_size)
        channels, height, width = input_shape
        _, out_height, out_width = self.output_shape(input_shape)
        entry = t.input[c, s[0] * i + m - p[0], s[1] * j + n - p[1]]
        window = ((m, 0, self.kernel_size[0] - 1), (n, 0, self.kernel_size[1] - 1))
        return IndexForm(
            output=t.output[c, i, j], expr=pool(entry, window, k[0] * k[1]), input=t.input[c, u, v],
            parameters={}, settings=settings.values, outside=outside,
            sizes={c: channels, i: out_height, j: out_width, m: self.kernel_size[0],
                   n: self.kernel_size[1], u: height, v: width},
        )

    def torch_twin(self, input_shape: Shape) -> list[tuple[str, dict[str, Any]]]:
        return [(self.torch_name, {
            "kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding,
        })]

    @classmethod
    def _settings_from_torch(cls, module: Any) -> dict[str, Any]:
        name = type(module).__name__
        if read_attribute(module, "ceil_mode"):
            raise SpecError(f"{name}: ceil_mode=True; only ceil_mode=False is supported")
        return {
            "kernel_size": same_or_pair(module.kernel_size),
            "stride": same_or_pair(module.stride),
            "padding": same_or_pair(module.padding),
        }


@dataclass(frozen=True, kw_only=True)
class MaxPool2D(_Pool):
    """Max pooling: each output is the largest input of its window.

    >>> MaxPool2D(kernel_size=2).output_shape((3, 5, 5))
    (3, 2, 2)
    """

    key: ClassVar[str] = "maxpool"
    title: ClassVar[str] = "max pooling"
    torch_name: ClassVar[str] = "MaxPool2d"

    def nodes(self, input_shape: Shape, inputs, params, outputs) -> tuple:
        """a_i = max(a_j for j in p_i): a selection node per output."""
        return tuple(
            Select(out, tuple(inputs[j] for j in c.inputs))
            for out, c in zip(outputs, self.connections(input_shape))
        )

    def output_note(self) -> str:
        return "the largest input of its window"

    def forward_formula(self, n: Notation) -> dict[str, str]:
        l = n.number
        equation = rf"a^{{({l})}}_{{i}} = \max_{{j \in p^{{({l})}}_{{i}}}} {n.input_letter}_{{j}}"
        note = (
            rf"each output is the largest input of its window, the position set $p^{{({l})}}_{{i}}$, "
            "taken on each channel on its own"
            + (r"; the padding holds $-\infty$ and never wins" if self.padding != (0, 0) else "")
        )
        return {"equation": equation, "note": note}

    def upstream_formula(self, n: Notation) -> dict[str, str]:
        k, l = n.number, n.source
        equation = (
            rf"{window_upstream_tex(k, n.source)}\left[a^{{({l})}}_{{j}} \text{{ is the first maximum of }} "
            rf"p^{{({k})}}_{{i}}\right]"
        )
        note = (
            rf"the bracket is 1 when $a^{{({l})}}_{{j}}$ is the largest input of the window "
            rf"$p^{{({k})}}_{{i}}$ (the first of them, in window order, when several tie) and 0 "
            rf"otherwise: max pooling routes each gradient to the input that won"
        )
        feeds = f"the windows of layer {k} that contain it"
        return {"equation": equation, "note": note, "feeds": feeds}

    # ---- the tensor face --------------------------------------------------------------------

    def tensor_form(self, input_shape: Shape, t: Bases) -> IndexForm:
        """a[c, i, j] = max_{m,n} a[c, s·i + m − p, s·j + n − p], the input read as −∞ outside
        its bounds: its gradient goes to each window's first maximum."""
        return self._index_form(
            input_shape, t, lambda entry, window, area: Maximum(entry, *window), outside=-sympy.oo
        )

    def reference_forward(self, x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        """The largest value under each window of x padded with −∞."""
        patches = windows(pad(x, self.padding, -np.inf), self.kernel_size, self.stride)
        return patches.max(axis=(4, 5))

    def reference_backward(
        self, dz: np.ndarray, x: np.ndarray, params: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Each window's gradient, added to its first maximum (``argmax`` takes the first)."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        padded = pad(x, self.padding, -np.inf)
        patches = windows(padded, (kh, kw), (sh, sw))
        batch, channels, out_h, out_w = patches.shape[:4]
        first = patches.reshape(batch, channels, out_h, out_w, kh * kw).argmax(axis=4)
        rows = np.arange(out_h)[:, None] * sh + first // kw
        cols = np.arange(out_w)[None, :] * sw + first % kw
        b, c = np.indices((batch, channels))[..., None, None]
        d_padded = np.zeros(padded.shape)
        np.add.at(d_padded, (b, c, rows, cols), dz)
        height, width = x.shape[2:]
        return d_padded[:, :, ph : ph + height, pw : pw + width], {}

    def reference_near_kink(self, x: np.ndarray, margin: float) -> bool:
        """Whether some window of x holds a value within ``margin`` below its maximum (a
        near-tie, not an exact one): a small step could then change which input wins."""
        patches = windows(pad(x, self.padding, -np.inf), self.kernel_size, self.stride)
        values = patches.reshape(*patches.shape[:4], -1)
        gaps = values.max(axis=4, keepdims=True) - values
        return bool(np.any((gaps > 0) & (gaps < margin)))

    # ---- the numeric-code face ----------------------------------------------------------------

    def code_values(self, input_shape: Shape) -> int:
        """The most values per sample an array of its code holds: its windows, copied."""
        return self.window(input_shape) * prod(self.output_shape(input_shape))

    def layer_code(self, input_shape: Shape, names: CodeNames) -> LayerCode:
        """The windows as a view; argmax finds each window's first maximum, and the gradient
        goes back to it alone."""
        l, x, z, dz, dx = names
        channels, height, width = input_shape
        _, out_h, out_w = self.output_shape(input_shape)
        (kh, kw), stride, padding = self.kernel_size, self.stride, self.padding
        kept, first, area, places = f"windows{l}", f"first{l}", kh * kw, f"{out_h}, {out_w}, B"
        window_view = f"_windows({padded_text(x, padding, '-numpy.inf')}, {self.kernel_size}, {stride}, (1, 1))"
        padded_shape = f"({channels}, {height + 2 * padding[0]}, {width + 2 * padding[1]}, B)"
        added = f"_add_windows(d_windows, {padded_shape}, {stride}, (1, 1))"
        forward = [
            f"# {z}[c,i,j,b] = max_(m,n) {x}[c, {self._reads()}, b]"
            + (" (the padding, -inf, never wins)" if padding != (0, 0) else ""),
            f"{kept} = {window_view}.reshape({channels}, {area}, {places})",
            f"{first} = {kept}.argmax(axis=1)  # each window's first maximum, in window order",
            f"{z} = {kept}.max(axis=1)",
        ]
        backward = [
            f"# dL/d{x}: each window's dL/d{z} goes to its first maximum alone (PyTorch's rule)",
            f"places = numpy.arange({area}).reshape({area}, 1, 1, 1)",
            f"d_windows = ({first}[:, None] == places) * {dz}[:, None]",
            f"d_windows = d_windows.reshape({channels}, {kh}, {kw}, {places})",
            f"{dx} = {unpadded_text(added, padding)}",
        ]
        return LayerCode(forward, backward)

    @classmethod
    def from_torch(cls, module: Any) -> MaxPool2D:
        name = type(module).__name__
        if read_attribute(module, "dilation") not in (1, (1, 1)):
            raise SpecError(f"{name}: dilation={module.dilation}; only dilation 1 is supported")
        if read_attribute(module, "return_indices"):
            raise SpecError(f"{name}: return_indices=True; only plain outputs are supported")
        return cls(**cls._settings_from_torch(module))


@dataclass(frozen=True, kw_only=True)
class AvgPool2D(_Pool):
    """Average pooling: each output is the sum of its window over the window's whole area.

    >>> AvgPool2D(kernel_size=2, stride=1).output_shape((1, 3, 3))
    (1, 2, 2)
    """

    key: ClassVar[str] = "avgpool"
    title: ClassVar[str] = "average pooling"
    torch_name: ClassVar[str] = "AvgPool2d"

    @property
    def weight(self) -> sympy.Rational:
        """1/K, the coefficient of every input in a window of K = kh·kw places."""
        return sympy.Rational(1, self.kernel_size[0] * self.kernel_size[1])

    def nodes(self, input_shape: Shape, inputs, params, outputs) -> tuple:
        """a_i = Σ_{j ∈ p_i} a_j / K: a linear node with constant coefficients."""
        return tuple(
            Linear(out, tuple((self.weight, inputs[j]) for j in c.inputs))
            for out, c in zip(outputs, self.connections(input_shape))
        )

    def output_note(self) -> str:
        return "the mean of its window"

    def forward_formula(self, n: Notation) -> dict[str, str]:
        l, (kh, kw) = n.number, self.kernel_size
        equation = (rf"a^{{({l})}}_{{i}} = \frac{{1}}{{{kh * kw}}} "
                    rf"\sum_{{j \in p^{{({l})}}_{{i}}}} {n.input_letter}_{{j}}")
        note = (
            rf"each output is the mean of its window, the position set $p^{{({l})}}_{{i}}$, over the "
            rf"window's whole area ${kh} \times {kw}$, taken on each channel on its own"
            + ("; the padding holds zeros and still counts" if self.padding != (0, 0) else "")
        )
        return {"equation": equation, "note": note}

    def upstream_formula(self, n: Notation) -> dict[str, str]:
        k, (kh, kw) = n.number, self.kernel_size
        equation = rf"{window_upstream_tex(k, n.source)}\frac{{1}}{{{kh * kw}}}"
        note = (
            rf"each window averages its {kh * kw} places, padding included, so it spreads its "
            rf"gradient evenly: $\frac{{1}}{{{kh * kw}}}$ to every input it covers"
        )
        feeds = f"the windows of layer {k} that contain it"
        return {"equation": equation, "note": note, "feeds": feeds}

    # ---- the tensor face --------------------------------------------------------------------

    def tensor_form(self, input_shape: Shape, t: Bases) -> IndexForm:
        """a[c, i, j] = (1 / (K_h·K_w)) Σ_{m,n} a[c, s·i + m − p, s·j + n − p], the input read
        as 0 outside its bounds: its gradient spreads δ / (K_h·K_w) evenly over each window."""
        return self._index_form(
            input_shape, t, lambda entry, window, area: sympy.Sum(entry, *window) / area,
            outside=sympy.S.Zero,
        )

    def reference_forward(self, x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        """The mean of each window of the zero-padded x, over the window's whole area."""
        return windows(pad(x, self.padding), self.kernel_size, self.stride).mean(axis=(4, 5))

    def reference_backward(
        self, dz: np.ndarray, x: np.ndarray, params: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Each window's gradient over K, spread evenly over the places it covers."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        batch, channels, height, width = x.shape
        out_h, out_w = dz.shape[2:]
        d_padded = np.zeros((batch, channels, height + 2 * ph, width + 2 * pw))
        for m, n in np.ndindex(kh, kw):
            d_padded[:, :, m : m + (out_h - 1) * sh + 1 : sh, n : n + (out_w - 1) * sw + 1 : sw] += (
                dz / (kh * kw)
            )
        return d_padded[:, :, ph : ph + height, pw : pw + width], {}

    # ---- the numeric-code face ----------------------------------------------------------------

    def code_values(self, input_shape: Shape) -> int:
        """The most values per sample an array of its code holds: its input (the windows are
        views)."""
        return prod(input_shape)

    def layer_code(self, input_shape: Shape, names: CodeNames) -> LayerCode:
        """The windows summed over the window's area; the gradient spreads evenly."""
        _, x, z, dz, dx = names
        channels, height, width = input_shape
        (ph, pw), kernel, stride = self.padding, self.kernel_size, self.stride
        area = kernel[0] * kernel[1]
        forward = [
            f"# {z}[c,i,j,b] = (1/{area}) sum_(m,n) {x}[c, {self._reads()}, b]"
            + (" (the zero padding counted, as PyTorch)" if self.padding != (0, 0) else ""),
            f"{z} = _sum_windows({padded_text(x, self.padding)}, {kernel}, {stride}) / {area}",
        ]
        padded_shape = f"({channels}, {height + 2 * ph}, {width + 2 * pw}, B)"
        spread = f"_spread_windows({dz} / {area}, {padded_shape}, {kernel}, {stride})"
        backward = [
            f"# dL/d{x}: each window's dL/d{z} / {area}, spread evenly over the places it covers",
            f"{dx} = {unpadded_text(spread, self.padding)}",
        ]
        return LayerCode(forward, backward)

    def torch_twin(self, input_shape: Shape) -> list[tuple[str, dict[str, Any]]]:
        ((name, settings),) = super().torch_twin(input_shape)
        return [(name, {**settings, "count_include_pad": True})]

    @classmethod
    def from_torch(cls, module: Any) -> AvgPool2D:
        name = type(module).__name__
        if not read_attribute(module, "count_include_pad"):
            raise SpecError(f"{name}: count_include_pad=False; only the default True is supported")
        if read_attribute(module, "divisor_override") is not None:
            raise SpecError(f"{name}: divisor_override is set; only the window's area is supported")
        return cls(**cls._settings_from_torch(module))
