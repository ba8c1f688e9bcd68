"""Concatenation along channels: the inputs' channels one after another — U-Net's and
Inception's join.

``Concat()(a, b)`` of a (C₁, H, W) and a (C₂, H, W) is (C₁ + C₂, H, W), as
``torch.cat((a, b), dim=1)``; vectors (n₁,) and (n₂,) give (n₁ + n₂,). Flattened in
(channel, row, column) order, the output is the inputs' values laid end to end, so each
output copies one input value: its backward pass hands each input its own slice of ∂L/∂a.
No parameters, no activation.
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
from .base import CodeNames, Connection, LayerCode, Notation, Op, Shape, upstream_tex


def _shape_text(shape: Shape) -> str:
    return "x".join(map(str, shape))


@dataclass(frozen=True)
class Concat(Op):
    """Its inputs' channels (or features) one after another; the rest of their shapes agree.

    >>> Concat().output_shape(((8, 4, 4), (2, 4, 4)))
    (10, 4, 4)
    """

    key: ClassVar[str] = "concat"
    title: ClassVar[str] = "concatenation"
    torch_name: ClassVar[str] = "cat"  # a function, torch.cat(..., dim=1): no module
    arity: ClassVar[int | None] = None
    has_activation: ClassVar[bool] = False
    image_input: ClassVar[bool] = False

    def output_shape(self, input_shape: tuple[Shape, ...]) -> Shape:
        first = tuple(input_shape[0])
        for shape in input_shape[1:]:
            if len(shape) != len(first) or tuple(shape[1:]) != first[1:]:
                texts = [_shape_text(s) for s in input_shape]
                shapes = ", ".join(texts[:-1]) + " and " + texts[-1]
                raise SpecError(
                    f"its inputs have shapes {shapes}; a concatenation along channels needs the "
                    "same height and width (or vectors alike)"
                )
        return (sum(shape[0] for shape in input_shape), *first[1:])

    def parameter_shapes(self, input_shape: tuple[Shape, ...]) -> dict[str, Shape]:
        return {}

    def window(self, input_shape: tuple[Shape, ...]) -> int:
        return 1  # one input value

    def offsets(self, input_shape: tuple[Shape, ...]) -> list[int]:
        """Where each input's channels start in the output."""
        starts, total = [], 0
        for shape in input_shape:
            starts.append(total)
            total += shape[0]
        return starts

    # ---- the scalar face --------------------------------------------------------------------

    def connections(self, input_shape: tuple[Shape, ...]) -> list[Connection]:
        """Output i copies value i of the inputs laid end to end."""
        size = sum(prod(shape) for shape in input_shape)
        return [Connection((i,), (0,), None, None) for i in range(size)]

    def nodes(self, input_shape: tuple[Shape, ...], inputs, params, outputs) -> tuple:
        """a_i = 1 · (the input value it copies)."""
        values = [value for symbols in inputs for value in symbols]
        return tuple(Linear(out, ((sympy.S.One, value),)) for out, value in zip(outputs, values))

    # ---- notation ---------------------------------------------------------------------------

    def describe(self) -> str:
        return "concat channels"

    def table_cells(self) -> tuple[str, str, str]:
        return "--", "--", "--"

    def size_formula(self, input_shape: tuple[Shape, ...], padded: bool) -> None:
        return None

    def output_note(self) -> str:
        return "one input value, copied (the inputs' channels one after another)"

    def forward_formula(self, n: Notation) -> dict[str, str]:
        letters = n.input_letters or (n.input_letter,)
        joined = r" \,\Vert\, ".join(letters)
        equation = rf"a^{{({n.number})}} = {joined}"
        note = "the inputs' channels one after another: each output copies one input value"
        return {"equation": equation, "note": note}

    def weight_formula(self, n: Notation) -> None:
        return None

    def upstream_formula(self, n: Notation) -> dict[str, str]:
        l, k = n.number, n.source
        position = r"\operatorname{pos}(j)"
        equation = rf"{upstream_tex(k, 'j')} = {upstream_tex(l, position)}"
        note = (
            r"each input value is copied to one output, at its place $\operatorname{pos}(j)$ in "
            "the concatenation: its gradient is that output's"
        )
        return {"equation": equation, "note": note, "feeds": f"one node of layer {l}"}

    # ---- the tensor face --------------------------------------------------------------------

    def tensor_form(self, input_shape: tuple[Shape, ...], t: Bases) -> IndexForm:
        """a[c, i, j] = Σ_k input_k[c − offset_k, i, j], each input read as 0 outside its own
        channels (a[f] = Σ_k input_k[f − offset_k] for vectors)."""
        out = self.output_shape(input_shape)
        letters = index("c i j") if len(out) == 3 else index("f")
        inputs = t.inputs or (t.input,)
        reads = [
            base[(letters[0] - offset, *letters[1:])]
            for base, offset in zip(inputs, self.offsets(input_shape))
        ]
        channels = index("u v w q r t")[: len(inputs)]  # each input's own channel letter
        own = [(channel, *letters[1:]) for channel in channels]
        return IndexForm(
            output=t.output[letters], expr=sympy.Add(*reads), input=inputs[0][own[0]], parameters={},
            sizes=dict(zip(letters, out)) | {u: shape[0] for u, shape in zip(channels, input_shape)},
            settings={}, inputs=tuple(base[place] for base, place in zip(inputs, own)),
        )

    # ---- the reference face (numpy alone) ---------------------------------------------------

    def reference_forward(self, x: tuple[np.ndarray, ...], params: dict[str, np.ndarray]) -> np.ndarray:
        """The inputs joined along axis 1 (channels or features)."""
        return np.concatenate(x, axis=1)

    def reference_backward(
        self, dz: np.ndarray, x: tuple[np.ndarray, ...], params: dict[str, np.ndarray]
    ) -> tuple[tuple[np.ndarray, ...], dict[str, np.ndarray]]:
        """Each input's gradient is its own slice of the output's."""
        ends = np.cumsum([part.shape[1] for part in x])[:-1]
        return tuple(np.split(dz, ends, axis=1)), {}

    # ---- the numeric-code face ----------------------------------------------------------------

    def code_values(self, input_shape: tuple[Shape, ...]) -> int:
        return prod(self.output_shape(input_shape))

    def layer_code(self, input_shape: tuple[Shape, ...], names: CodeNames) -> LayerCode:
        """a = the inputs joined along the first axis (values are held batch last); each
        dL/dx_k is its slice of dL/da (a view, read and never written)."""
        _, inputs, out, dout, dinputs = names
        forward = [
            f"# {out}: the channels of {', '.join(inputs)}, one after another",
            f"{out} = numpy.concatenate(({', '.join(inputs)},), axis=0)",
        ]
        backward = [f"# dL/d{inputs[0]}, …: each input's own channels of dL/d{out}"]
        for dx, start, shape in zip(dinputs, self.offsets(input_shape), input_shape):
            backward.append(f"{dx} = {dout}[{start}:{start + shape[0]}]")
        return LayerCode(forward, backward)

    # ---- the torch twin ---------------------------------------------------------------------

    def torch_twin(self, input_shape: tuple[Shape, ...]) -> list[tuple[str, dict[str, Any]]]:
        return []  # no module: torch_apply joins the inputs

    @staticmethod
    def torch_apply(torch: Any, modules: list[Any], inputs: list[Any]) -> Any:
        """torch.cat(inputs, dim=1)."""
        return torch.cat(inputs, dim=1)

    @classmethod
    def from_torch(cls, module: Any) -> Concat:
        """``torch.cat(..., dim=1)`` is a function, read by the torch bridge from a traced graph."""
        raise SpecError(f"{type(module).__name__}: not a concatenation; write torch.cat((a, b), dim=1)")
