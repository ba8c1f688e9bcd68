"""Addition of two or more inputs of one shape: a_i = Σ_k input^{(k)}_i — a residual join.

``Add()(h, r)`` is ResNet's h + F(h). Each output reads one value of each input with
coefficient 1, so its backward pass hands ∂L/∂a_i unchanged to every input; where an input
is also read elsewhere (the fork before a residual block), the engine adds what each reader
sends back — the article's rule (20). No parameters, no activation (``ReLU()`` after it).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import reduce
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
class Add(Op):
    """The sum of its inputs, element by element; every input of one shape.

    >>> Add().output_shape(((8, 4, 4), (8, 4, 4))), Add().window(((8, 4, 4), (8, 4, 4)))
    ((8, 4, 4), 2)
    """

    key: ClassVar[str] = "add"
    title: ClassVar[str] = "addition"
    torch_name: ClassVar[str] = "add"  # a function, torch.add or +: no module
    arity: ClassVar[int | None] = None
    has_activation: ClassVar[bool] = False
    image_input: ClassVar[bool] = False

    def output_shape(self, input_shape: tuple[Shape, ...]) -> Shape:
        first = tuple(input_shape[0])
        for shape in input_shape[1:]:
            if tuple(shape) != first:
                texts = [_shape_text(s) for s in input_shape]
                shapes = ", ".join(texts[:-1]) + " and " + texts[-1]
                raise SpecError(f"its inputs have shapes {shapes}; an addition needs one shape")
        return first

    def parameter_shapes(self, input_shape: tuple[Shape, ...]) -> dict[str, Shape]:
        return {}

    def window(self, input_shape: tuple[Shape, ...]) -> int:
        return len(input_shape)  # one value of each input

    # ---- the scalar face --------------------------------------------------------------------

    def connections(self, input_shape: tuple[Shape, ...]) -> list[Connection]:
        """Output i reads element i of each input (inputs laid end to end: k·n + i)."""
        size, count = prod(input_shape[0]), len(input_shape)
        return [
            Connection(tuple(k * size + i for k in range(count)), tuple(range(count)), None, None)
            for i in range(size)
        ]

    def nodes(self, input_shape: tuple[Shape, ...], inputs, params, outputs) -> tuple:
        """a_i = Σ_k 1 · input^{(k)}_i: a weighted sum with constant coefficients 1."""
        one = sympy.S.One
        return tuple(
            Linear(out, tuple((one, values[i]) for values in inputs)) for i, out in enumerate(outputs)
        )

    # ---- notation ---------------------------------------------------------------------------

    def describe(self) -> str:
        return "add"

    def table_cells(self) -> tuple[str, str, str]:
        return "--", "--", "--"

    def size_formula(self, input_shape: tuple[Shape, ...], padded: bool) -> None:
        return None  # the shape of its inputs

    def output_note(self) -> str:
        return "the sum of its inputs at place $i$"

    def forward_formula(self, n: Notation) -> dict[str, str]:
        letters = n.input_letters or (n.input_letter,)
        equation = rf"a^{{({n.number})}}_{{i}} = " + " + ".join(f"{letter}_{{i}}" for letter in letters)
        note = "each output adds the inputs at its own place: a join of the paths that meet here"
        return {"equation": equation, "note": note}

    def weight_formula(self, n: Notation) -> None:
        return None  # no weights

    def upstream_formula(self, n: Notation) -> dict[str, str]:
        l, k = n.number, n.source
        equation = rf"{upstream_tex(k, 'i')} = {upstream_tex(l, 'i')} \cdot 1"
        note = (
            "an addition passes its gradient unchanged to each of its inputs; an input that also "
            "feeds other layers adds their gradients to this one (the rule for several dependencies)"
        )
        return {"equation": equation, "note": note, "feeds": f"the node $a^{{({l})}}_{{i}}$"}

    # ---- the tensor face --------------------------------------------------------------------

    def tensor_form(self, input_shape: tuple[Shape, ...], t: Bases) -> IndexForm:
        """a[c, i, j] = Σ_k input_k[c, i, j] (a[k'] for vectors)."""
        shape = input_shape[0]
        letters = index("c i j") if len(shape) == 3 else index("k")
        inputs = t.inputs or (t.input,)
        return IndexForm(
            output=t.output[letters], expr=sympy.Add(*[base[letters] for base in inputs]),
            input=inputs[0][letters], parameters={}, sizes=dict(zip(letters, shape)), settings={},
            inputs=tuple(base[letters] for base in inputs),
        )

    # ---- the reference face (numpy alone) ---------------------------------------------------

    def reference_forward(self, x: tuple[np.ndarray, ...], params: dict[str, np.ndarray]) -> np.ndarray:
        """The inputs added, element by element."""
        return np.sum(np.stack(x), axis=0)

    def reference_backward(
        self, dz: np.ndarray, x: tuple[np.ndarray, ...], params: dict[str, np.ndarray]
    ) -> tuple[tuple[np.ndarray, ...], dict[str, np.ndarray]]:
        """Each input's gradient is the output's: ∂(Σ_k x_k)/∂x_k = 1."""
        return tuple(dz.copy() for _ in x), {}

    # ---- the numeric-code face ----------------------------------------------------------------

    def code_values(self, input_shape: tuple[Shape, ...]) -> int:
        return prod(input_shape[0])

    def layer_code(self, input_shape: tuple[Shape, ...], names: CodeNames) -> LayerCode:
        """a = x_1 + x_2 + …; each dL/dx_k is dL/da itself (read, never written in place)."""
        _, inputs, out, dout, dinputs = names
        forward = [f"# {out} = {' + '.join(inputs)}", f"{out} = {' + '.join(inputs)}"]
        backward = [f"# dL/d{x} = dL/d{out}: an addition passes its gradient on unchanged" for x in inputs[:1]]
        backward += [f"{dx} = {dout}" for dx in dinputs]
        return LayerCode(forward, backward)

    # ---- the torch twin ---------------------------------------------------------------------

    def torch_twin(self, input_shape: tuple[Shape, ...]) -> list[tuple[str, dict[str, Any]]]:
        return []  # no module: torch_apply adds the inputs

    @staticmethod
    def torch_apply(torch: Any, modules: list[Any], inputs: list[Any]) -> Any:
        """x_1 + x_2 + …, as torch computes it."""
        return reduce(operator.add, inputs)

    @classmethod
    def from_torch(cls, module: Any) -> Add:
        """``+``, ``torch.add`` and ``Tensor.add`` are functions, read by the torch bridge from
        a traced graph; no module is an addition."""
        raise SpecError(f"{type(module).__name__}: not an addition; write x + y in forward()")
