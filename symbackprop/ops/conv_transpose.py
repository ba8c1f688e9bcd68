"""2-D transposed convolution, as PyTorch's ``ConvTranspose2d``: each input value spreads its
kernel over the output — what a fully convolutional network upsamples with.

z[o, y, x] = Σ over (c, i, j, m, n) with s·i + d·m − p = y and s·j + d·n − p = x of
W[c, o, m, n] · a[c, i, j] (+ b[o]), weight layout (in_channels, out_channels, kh, kw) as
torch's. Output size (H − 1)·S − 2P + d·(K − 1) + output_padding + 1 per axis. It is the
input gradient of a convolution with the same settings, read the other way round: its forward
scatters as a convolution's backward does, and its input gradient is a plain convolution of
∂L/∂z with the kernel (Kafunah's "full convolution with the flipped kernel", from the other
side). Each output pixel's position set lists the (input, kernel place) pairs that reach it.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from itertools import product
from math import prod
from typing import Any, ClassVar

import numpy as np
from sympy import KroneckerDelta, Sum

from ..errors import SpecError
from ..indexed import Bases, IndexForm, Settings, index
from .arrays import dilated_kernel, pad, windows
from .base import (
    BIAS,
    WEIGHTS,
    Branch,
    CodeNames,
    Connection,
    LayerCode,
    Notation,
    Op,
    Pair,
    Parameter,
    ParameterGrads,
    Shape,
    check_bias_and_activation,
    integer,
    pair,
    pair_text,
    read_attribute,
    same_or_pair,
    shape_tex,
    upstream_tex,
    weight_formula_tex,
    weighted_sums,
)
from .conv import Conv2D


@dataclass(frozen=True)
class ConvTranspose2D(Op):
    """A transposed convolution; ``kernel_size``, ``stride``, ``padding``, ``output_padding`` and
    ``dilation`` take an int or an (h, w) pair.

    >>> ConvTranspose2D(out_channels=2, kernel_size=4, stride=2, padding=1).output_shape((3, 4, 4))
    (2, 8, 8)
    """

    out_channels: int
    kernel_size: int | Pair
    _: KW_ONLY
    stride: int | Pair = 1
    padding: int | Pair = 0
    output_padding: int | Pair = 0
    dilation: int | Pair = 1
    bias: bool = True
    activation: str = "identity"

    key: ClassVar[str] = "conv_transpose"
    title: ClassVar[str] = "transposed convolution"
    torch_name: ClassVar[str] = "ConvTranspose2d"
    required: ClassVar[tuple[str, ...]] = ("out_channels", "kernel_size")
    parameters: ClassVar[tuple[Parameter, ...]] = (WEIGHTS, BIAS)

    def __post_init__(self) -> None:
        owner = self.key
        object.__setattr__(self, "out_channels", integer(owner, "out_channels", self.out_channels, 1))
        for name, minimum in (("kernel_size", 1), ("stride", 1), ("padding", 0), ("output_padding", 0),
                              ("dilation", 1)):
            object.__setattr__(self, name, pair(owner, name, getattr(self, name), minimum))
        check_bias_and_activation(owner, self.bias, self.activation)
        for extra, s, d in zip(self.output_padding, self.stride, self.dilation):
            if extra >= max(s, d):
                raise SpecError(
                    f"{owner}: output_padding {pair_text(self.output_padding)} must be smaller than "
                    "the stride or the dilation (PyTorch's rule)"
                )

    @property
    def span(self) -> Pair:
        """How many output rows and columns one input's kernel covers: d·(K − 1) + 1."""
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        return (dh * (kh - 1) + 1, dw * (kw - 1) + 1)

    def output_shape(self, input_shape: Shape) -> Shape:
        self.check_input(input_shape)
        sizes = []
        for size, s, p, span, extra in zip(input_shape[1:], self.stride, self.padding, self.span,
                                           self.output_padding):
            sizes.append((size - 1) * s - 2 * p + span + extra)
        if min(sizes) < 1:
            raise SpecError(
                f"its output would be {sizes[0]}x{sizes[1]}: the padding {pair_text(self.padding)} "
                "cuts away more than the kernel spreads"
            )
        return (self.out_channels, *sizes)

    def parameter_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        shapes = {"W": (input_shape[0], self.out_channels, *self.kernel_size)}
        if self.bias:
            shapes["b"] = (self.out_channels,)
        return shapes

    def window(self, input_shape: Shape) -> int:
        return input_shape[0] * self.kernel_size[0] * self.kernel_size[1]  # kernel places (c, m, n)

    def flat_weights(self, input_shape: Shape) -> bool:
        return (self.out_channels, input_shape[0]) == (1, 1)

    def pads(self) -> bool:
        return self.padding != (0, 0)

    # ---- the scalar face --------------------------------------------------------------------

    def connections(self, input_shape: Shape) -> list[Connection]:
        """For each output (o, y, x): the inputs (c, i, j) whose kernel reaches it, at the place
        (m, n) with s·i + d·m − p = y and s·j + d·n − p = x, in kernel order (c, m, n)."""
        channels, height, width = input_shape
        out_channels, out_height, out_width = self.output_shape(input_shape)
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        result = []
        for o, y, x in product(range(out_channels), range(out_height), range(out_width)):
            inputs, slots, weights = [], [], []
            for slot, (c, m, n) in enumerate(product(range(channels), range(kh), range(kw))):
                rows, cols = y + ph - dh * m, x + pw - dw * n
                if rows % sh or cols % sw:
                    continue
                i, j = rows // sh, cols // sw
                if 0 <= i < height and 0 <= j < width:
                    inputs.append(c * height * width + i * width + j)
                    slots.append(slot)
                    weights.append((c, o, m, n))
            result.append(Connection(tuple(inputs), tuple(slots), tuple(weights), (o,) if self.bias else None))
        return result

    def nodes(self, input_shape: Shape, inputs, params, outputs) -> tuple:
        """z = Σ w · input (+ b) per output pixel, over the inputs whose kernel reaches it."""
        return weighted_sums(self.connections(input_shape), inputs, params, outputs)

    # ---- notation ---------------------------------------------------------------------------

    def describe(self) -> str:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        extra = f", output padding {pair_text(self.output_padding)}" if self.output_padding != (0, 0) else ""
        dilation = f", dilation {self.dilation[0]}x{self.dilation[1]}" if self.dilation != (1, 1) else ""
        return (
            f"conv transpose {self.out_channels}x{kh}x{kw}, stride {sh}x{sw}, padding {ph}x{pw}"
            f"{extra}{dilation}, {'bias' if self.bias else 'no bias'}, {self.activation}"
        )

    def table_cells(self) -> tuple[str, str, str]:
        kernel = f"${shape_tex(self.kernel_size)}$"  # the Type column says it is transposed
        if self.dilation != (1, 1):
            kernel += f", dilation {pair_text(self.dilation)}"
        return kernel, pair_text(self.stride), pair_text(self.padding)

    def size_formula(self, input_shape: Shape, padded: bool) -> list[str]:
        out = self.output_shape(input_shape)
        sides = []
        for letter, m, result, k, s, p, d, extra in zip(
            "MN", input_shape[1:], out[1:], self.kernel_size, self.stride, self.padding, self.dilation,
            self.output_padding,
        ):
            span = str(k) if d == 1 else rf"({d} \cdot {k - 1} + 1)"
            added = f" + {extra}" if extra else ""
            sides.append(rf"{letter}_z = ({m} - 1) \cdot {s} - 2 \cdot {p} + {span}{added} = {result}")
        return sides

    def position_note(self) -> str:
        return "the pairs (input, kernel place) whose kernel reached it, in the order of the kernel's places"

    def window_shape(self, input_shape: Shape) -> tuple[int, int, int]:
        return (input_shape[0], *self.kernel_size)

    def position_grid(self, entries, input_shape: Shape) -> tuple[list[str], list[list[str]]]:
        """A long set as a row per input channel, the pairs (input, kernel place) of that
        channel in it; a channel whose kernel reaches nothing here is left out."""
        channels = input_shape[0]
        places = self.kernel_size[0] * self.kernel_size[1]
        rows = []
        for c in range(channels):
            pairs = [
                f"({j}, {n})"
                for n, j in enumerate(entries[c * places : (c + 1) * places], start=c * places + 1)
                if j is not None
            ]
            if pairs:
                rows.append([f"channel {c + 1}", ", ".join(pairs)])
        return ["(input, kernel place)"], rows

    def position_set_tex(self, number: int, index: int, entries) -> str:
        """The pairs (input j, kernel place n) that reach output i — most places reach none
        (the stride leaves gaps), so the pairs, not a list of dots."""
        pairs = [f"({j}, {n})" for n, j in enumerate(entries, start=1) if j is not None]
        pieces = [", ".join(pairs[k : k + 6]) for k in range(0, len(pairs), 6)]
        return rf"p^{{({number})}}_{{{index}}} = \lbrace " + (",$ $".join(pieces) or r"\,") + r" \rbrace"

    def weight_note(self) -> str:
        return (
            "The kernel is shared: each input spread it over the output, so each weight's "
            "gradient collects one term per output it reached, the upstream gradient there times "
            "the input that carried it."
        )

    def forward_formula(self, n: Notation) -> dict[str, str]:
        l, a = n.number, n.input_letter
        bias = (f" + b^{{({l})}}" if n.flat else f" + b^{{({l})}}_{{o}}") if self.bias else ""
        weight = f"w^{{({l})}}_{{n}}" if n.flat else f"w^{{({l})}}_{{c,o,m,n}}"
        equation = (rf"z^{{({l})}}_{{i}} = \sum_{{(j, n) \in p^{{({l})}}_{{i}}}} {weight} \, {a}_{{j}}{bias}")
        note = (
            "each input spreads its kernel over the output; an output node sums, over the pairs "
            rf"(input $j$, kernel place $n$) of its position set $p^{{({l})}}_{{i}}$, the input times "
            "the weight at that place: a convolution's input gradient, read forwards"
        )
        return {"equation": equation, "note": note}

    def weight_formula(self, n: Notation) -> dict[str, str | None]:
        l = n.number
        weight = f"w^{{({l})}}_{{{'n' if n.flat else 'c,o,m,n'}}}"
        used = f"{n.input_letter}_{{j(i, n)}}"
        note = (
            "summed over every output $i$ the weight reached, $j(i, n)$ being the input that reached "
            "it through that weight"
        )
        equation, bias = weight_formula_tex(n, "i", r"\sum_{i} ", weight, used, "o" if self.bias else None)
        return {"equation": equation, "note": note, "bias": bias}

    def upstream_formula(self, n: Notation) -> dict[str, str]:
        k, l = n.number, n.source
        equation = (
            rf"{upstream_tex(l, 'j')} = \sum_{{(i, n) \,:\, (j, n) \in p^{{({k})}}_{{i}}}} "
            rf"{upstream_tex(k, 'i')} \cdot {n.local('i')}w^{{({k})}}_{{n}}"
        )
        note = (
            "each input collects the gradients of the outputs its kernel reached, each times the "
            "weight that carried it there: a plain convolution of the upstream gradient"
        )
        return {"equation": equation, "note": note, "feeds": f"the outputs of layer {k} its kernel reaches"}

    # ---- the tensor face --------------------------------------------------------------------

    def tensor_form(self, input_shape: Shape, t: Bases) -> IndexForm:
        """z[o, u, v] = Σ_{c,i,j,m,n} [s·i + d·m − p = u] [s·j + d·n − p = v] W[c, o, m, n] · a[c, i, j]
        (+ b[o]): every input's kernel, spread out by the stride, added where it lands."""
        o, u, v, c, i, j, m, n = index("o u v c i j m n")  # u, v: not the targets y, the input x
        settings = Settings()
        s, d, p = settings.pairs(s=self.stride, d=self.dilation, p=self.padding)
        channels, height, width = input_shape
        out_channels, out_height, out_width = self.output_shape(input_shape)
        kernel_h, kernel_w = self.kernel_size
        lands = KroneckerDelta(s[0] * i + d[0] * m - p[0], u) * KroneckerDelta(s[1] * j + d[1] * n - p[1], v)
        z = Sum(
            lands * t.W[c, o, m, n] * t.input[c, i, j],
            (c, 0, channels - 1), (i, 0, height - 1), (j, 0, width - 1),
            (m, 0, kernel_h - 1), (n, 0, kernel_w - 1),
        )
        parameters = {"W": t.W[c, o, m, n]}
        if self.bias:
            z += t.b[o]
            parameters["b"] = t.b[o]
        return IndexForm(
            output=t.output[o, u, v], expr=z, input=t.input[c, i, j], parameters=parameters,
            sizes={o: out_channels, u: out_height, v: out_width, c: channels, i: height, j: width,
                   m: kernel_h, n: kernel_w},
            settings=settings.values,
        )

    def adjoint(self, input_shape: Shape) -> tuple[Op, Shape]:
        """The convolution this one transposes, and the input it takes: a ``Conv2D`` with the same
        kernel, stride, padding and dilation from this layer's output channels back to its input
        channels, on an input of this layer's output shape. Its weights (out, in, kh, kw) are
        this layer's (in, out, kh, kw) as they stand, as torch lays them out; this layer's
        forward is that convolution's input gradient, and its input gradient that convolution's
        forward (the tensor view derives both and checks them)."""
        conv = Conv2D(out_channels=input_shape[0], kernel_size=self.kernel_size, stride=self.stride,
                      padding=self.padding, dilation=self.dilation, bias=False)
        return conv, self.output_shape(input_shape)

    # ---- the reference face (numpy alone) ---------------------------------------------------

    def reference_forward(self, x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        """Each input value times the kernel, added into the output at s·i + d·m − p: the
        kernel dilated by inserting zeros, one product per kernel place, the padding cut off."""
        weight, bias = dilated_kernel(params["W"], self.dilation), params.get("b")
        (sh, sw), (ph, pw) = self.stride, self.padding
        batch, _, height, width = x.shape
        out_channels, span_h, span_w = weight.shape[1:]
        (eh, ew) = self.output_padding  # extra rows and columns past the last kernel: zeros
        full = np.zeros((batch, out_channels, (height - 1) * sh + span_h + eh, (width - 1) * sw + span_w + ew))
        for m, n in np.ndindex(span_h, span_w):
            rows = slice(m, m + (height - 1) * sh + 1, sh)
            cols = slice(n, n + (width - 1) * sw + 1, sw)
            full[:, :, rows, cols] += np.einsum("bchw,co->bohw", x, weight[:, :, m, n])
        z = full[:, :, ph : full.shape[2] - ph, pw : full.shape[3] - pw]
        return z if bias is None else z + bias[None, :, None, None]

    def reference_backward(
        self, dz: np.ndarray, x: np.ndarray, params: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """∂L/∂x is the plain cross-correlation of ∂L/∂z (zero-padded) with the dilated kernel,
        stride s — the windows of ∂L/∂z that each input's kernel covered; per-sample ∂L/∂W sums
        each input times those windows, and ∂L/∂b sums ∂L/∂z."""
        weight = dilated_kernel(params["W"], self.dilation)
        height, width = x.shape[2:]
        padded = pad(dz, self.padding)
        covered = windows(padded, weight.shape[2:], self.stride)[:, :, :height, :width]  # (B, O, H, W, kh, kw)
        dx = np.einsum("bohwmn,comn->bchw", covered, weight, optimize=True)
        d_weight = np.einsum("bchw,bohwmn->bcomn", x, covered, optimize=True)
        grads = {"W": d_weight[:, :, :, :: self.dilation[0], :: self.dilation[1]]}
        if self.bias:
            grads["b"] = dz.sum(axis=(2, 3))
        return dx, grads

    # ---- the numeric-code face ----------------------------------------------------------------

    def code_values(self, input_shape: Shape) -> int:
        """Its input, its output, or the kernel copies it spreads (c·m·n by i·j)."""
        out = self.output_shape(input_shape)
        _, height, width = input_shape
        spread = self.out_channels * self.kernel_size[0] * self.kernel_size[1] * height * width
        return max(prod(input_shape), prod(out), spread)

    def layer_code(self, input_shape: Shape, names: CodeNames) -> LayerCode:
        """Forward: every input's kernel copies, W as (c, o·m·n) transposed times the input, added
        back where they land (a convolution's input gradient); backward: the windows of the
        padded ∂L/∂z as columns (made with the parameter gradients, which read them first), then
        one product each for ∂L/∂input and ∂L/∂W (a convolution)."""
        l, x, z, dz, dx = names
        channels, height, width = input_shape
        out_channels, out_h, out_w = self.output_shape(input_shape)
        (kh, kw), stride, padding, dilation = self.kernel_size, self.stride, self.padding, self.dilation
        weight, bias = f"W{l}", f"b{l}"
        size, places = out_channels * kh * kw, height * width
        span = self.span
        # the padded output the kernels land in; rows past the last kernel (output_padding) stay 0
        full = (out_h + 2 * padding[0], out_w + 2 * padding[1])
        reach = ((height - 1) * stride[0] + span[0], (width - 1) * stride[1] + span[1])
        forward = [
            f"# {z}[o,y,x,b] = sum over (c,i,j,m,n) with s*i + d*m - p = y, s*j + d*n - p = x of "
            f"W{l}[c,o,m,n] * {x}[c,i,j,b]" + (f" + b{l}[o]" if self.bias else ""),
            (
                f"kernels = ({weight}.reshape({channels}, {size}).T @ {x}.reshape({channels}, {places} * B))"
                f".reshape({out_channels}, {kh}, {kw}, {height}, {width}, B)"
            ),
            f"full = _add_windows(kernels, ({out_channels}, {full[0]}, {full[1]}, B), {stride}, {dilation})",
            f"{z} = _unpad(full, {padding})" + (f" + {bias}[:, None, None, None]" if self.bias else ""),
        ]
        cols = f"cols{l}"
        crop = f"[:, :{reach[0]}, :{reach[1]}]" if reach != full else ""
        padded = f"_pad({dz}, {padding}){crop}" if padding != (0, 0) else f"{dz}{crop}"
        window = f"{self.kernel_size}, {stride}, {dilation}"
        backward = [
            f"# dL/d{x}[c,i,j,b] = sum_(o,m,n) W{l}[c,o,m,n] * dL/d{z}[o, s*i + d*m - p, s*j + d*n - p, b]",
            f"{dx} = ({weight}.reshape({channels}, {size}) @ {cols}).reshape({channels}, {height}, {width}, B)",
        ]
        columns = f"{cols} = _columns({padded}, {window})  # ({size}, {places}·B)"
        per_sample = [
            columns,  # the backward lines below read them too
            f"rows = numpy.ascontiguousarray({x}.reshape({channels}, {places}, B).transpose(2, 0, 1))",
            f"columns = _columns_by_sample({padded}, {window})  # (B, {size}, {places})",
            f"per_sample_grad = grads[{weight!r}].reshape(B, {channels}, {size})",
            "numpy.matmul(rows, columns.transpose(0, 2, 1), out=per_sample_grad)",
            *([f"grads[{bias!r}][...] = {dz}.sum(axis=(1, 2)).T"] if self.bias else []),
        ]
        summed = [
            columns,
            (
                f"grads[{weight!r}] = ({x}.reshape({channels}, {places} * B) @ {cols}.T)"
                f".reshape({channels}, {out_channels}, {kh}, {kw})"
            ),
            *([f"grads[{bias!r}] = {dz}.sum(axis=(1, 2, 3))"] if self.bias else []),
        ]
        parameter_grads = ParameterGrads(
            f"# dL/dW{l}[c,o,m,n] = sum_(i,j,b) {x}[c,i,j,b] * dL/d{z}[o, s*i + d*m - p, s*j + d*n - p, b]",
            Branch("a product per sample: (c, i·j) @ (i·j, o·m·n), into grads", per_sample),
            Branch("(c, i·j·b) @ (i·j·b, o·m·n)", summed),
        )
        return LayerCode(forward, backward, parameter_grads)

    # ---- the torch twin ---------------------------------------------------------------------

    def torch_twin(self, input_shape: Shape) -> list[tuple[str, dict[str, Any]]]:
        return [(self.torch_name, {
            "in_channels": input_shape[0], "out_channels": self.out_channels,
            "kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding,
            "output_padding": self.output_padding, "dilation": self.dilation, "bias": self.bias,
        })]

    @classmethod
    def from_torch(cls, module: Any) -> ConvTranspose2D:
        name = type(module).__name__
        if read_attribute(module, "groups") != 1:
            raise SpecError(f"{name}: groups={module.groups}; only groups=1 is supported")
        if read_attribute(module, "padding_mode") != "zeros":
            raise SpecError(f"{name}: padding_mode={module.padding_mode!r}; only zero padding is supported")
        return cls(
            out_channels=module.out_channels, kernel_size=same_or_pair(module.kernel_size),
            stride=same_or_pair(module.stride), padding=same_or_pair(module.padding),
            output_padding=same_or_pair(module.output_padding), dilation=same_or_pair(module.dilation),
            bias=module.bias is not None,
        )

