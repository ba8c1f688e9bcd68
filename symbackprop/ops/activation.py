"""An activation as an operation of its own: a_i = g(input_i), element by element.

``Conv2D(..., activation="relu")`` fuses an activation into its layer (the article's
z^{(l)} then a^{(l)} = g(z^{(l)})); ``Activation("relu")`` — or ``ReLU()``, ``Sigmoid()``,
``Tanh()``, ``Softplus()``, ``LeakyReLU()`` — is the same function as a layer of its own, for
what fusing cannot say: ReLU after an addition (a residual block), after a pool, or twice.
It keeps the input's shape, has no parameters, and its local gradient is the function's own
derivative (``symbackprop.activations``), σ′ = a(1 − a) written with its output.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod
from typing import Any, ClassVar

import numpy as np
import sympy

from ..activations import ACTIVATIONS
from ..activations import activation as function_named
from ..errors import SpecError
from ..indexed import Bases, IndexForm, index
from ..nodes import Elementwise
from .arrays import activate, activation_slope, near_kink
from .base import (
    CodeNames,
    Connection,
    LayerCode,
    Notation,
    Op,
    Shape,
    activation_code,
    upstream_tex,
)


@dataclass(frozen=True)
class Activation(Op):
    """a = g(input), element by element: ``Activation("tanh")``.

    >>> Activation("relu").output_shape((2, 3, 3)), Activation("relu").describe()
    ((2, 3, 3), 'relu')
    """

    function: str

    key: ClassVar[str] = "activation"
    title: ClassVar[str] = "activation"
    torch_name: ClassVar[str] = "activation"  # its twin is the function's own module
    has_activation: ClassVar[bool] = False  # it is one: nothing follows its nodes
    image_input: ClassVar[bool] = False
    required: ClassVar[tuple[str, ...]] = ("function",)

    def __post_init__(self) -> None:
        try:
            function_named(self.function)
        except SpecError as error:
            raise SpecError(f"activation: {error}") from None

    @property
    def activation(self) -> str:  # type: ignore[override]
        """The function it applies (what ``Network.generic_activation`` and ``with_choices`` read)."""
        return self.function

    def folds_as(self) -> str:
        return self.function

    def with_activation(self, name: str) -> Activation:
        return replace(self, function=name)

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def parameter_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {}

    def window(self, input_shape: Shape) -> int:
        return 1

    # ---- the scalar face --------------------------------------------------------------------

    def connections(self, input_shape: Shape) -> list[Connection]:
        return [Connection((i,), (0,), None, None) for i in range(prod(input_shape))]

    def nodes(self, input_shape: Shape, inputs, params, outputs) -> tuple:
        """a_i = g(input_i): an elementwise node per output, its local gradient g′."""
        function = function_named(self.function)
        return tuple(Elementwise(out, value, function) for out, value in zip(outputs, inputs))

    # ---- notation ---------------------------------------------------------------------------

    def describe(self) -> str:
        return self.function

    def table_cells(self) -> tuple[str, str, str]:
        return "--", "--", "--"

    def size_formula(self, input_shape: Shape, padded: bool) -> None:
        return None  # its output has its input's shape

    def output_note(self) -> str:
        return "its function of input $i$ alone"

    def forward_formula(self, n: Notation) -> dict[str, str]:
        l, entry = n.number, function_named(self.function)
        equation = rf"a^{{({l})}}_{{i}} = {_applied_tex(self.function, f'{n.input_letter}_{{i}}')}"
        note = f"{entry.label} of each input on its own, as a layer of its own: ${entry.formula}$"
        return {"equation": equation, "note": note}

    def weight_formula(self, n: Notation) -> None:
        return None  # no weights

    def upstream_formula(self, n: Notation) -> dict[str, str]:
        l, k = n.number, n.source
        slope = _derivative_tex(self.function, l, n.input_letter)
        equation = rf"{upstream_tex(k, 'i')} = {upstream_tex(l, 'i')} \cdot {slope}"
        note = "each input feeds one output: its gradient is that output's, times the function's slope there"
        return {"equation": equation, "note": note, "feeds": f"the node $a^{{({l})}}_{{i}}$ alone"}

    # ---- the tensor face --------------------------------------------------------------------

    def tensor_form(self, input_shape: Shape, t: Bases) -> IndexForm:
        """a[k] = g(input[k]) at every index k (written c, i, j for an image)."""
        letters = index("c i j") if len(input_shape) == 3 else index("k")
        function = function_named(self.function).apply
        return IndexForm(
            output=t.output[letters], expr=function(t.input[letters]), input=t.input[letters],
            parameters={}, sizes=dict(zip(letters, input_shape)), settings={},
        )

    # ---- the reference face (numpy alone) ---------------------------------------------------

    def reference_forward(self, x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        """g(x) element by element (PyTorch's functions; softplus exact: log(1 + e^x))."""
        return activate(self.function, x)

    def reference_backward(
        self, dz: np.ndarray, x: np.ndarray, params: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """∂L/∂x = ∂L/∂a · g′(x), with g′ as PyTorch takes it at kinks (ReLU′(0) = 0)."""
        return dz * activation_slope(self.function, x), {}

    def reference_near_kink(self, x: np.ndarray, margin: float) -> bool:
        """ReLU and leaky ReLU bend at 0: a step across it changes the slope."""
        return near_kink(self.function, x, margin)

    # ---- the numeric-code face ----------------------------------------------------------------

    def code_values(self, input_shape: Shape) -> int:
        return prod(input_shape)

    def layer_code(self, input_shape: Shape, names: CodeNames) -> LayerCode:
        """a = g(input); ∂L/∂input = g′(input, a) · ∂L/∂a."""
        _, x, a, da, dx = names
        forward, backward = activation_code(self.function, x, a, da, dx)
        return LayerCode(forward, backward)

    # ---- the torch twin ---------------------------------------------------------------------

    def torch_twin(self, input_shape: Shape) -> list[tuple[str, dict[str, Any]]]:
        twin = function_named(self.function).torch
        if twin is None:
            raise ValueError(f"the activation {self.function!r} is generic: choose it first (with_choices(g=...))")
        return [twin]

    @classmethod
    def from_torch(cls, module: Any) -> Activation:
        """The activation a torch module is (``nn.ReLU``, ``nn.Tanh``, …, ``nn.LeakyReLU(0.01)``)."""
        kind = type(module).__name__
        for name, entry in ACTIVATIONS.items():
            if entry.torch is None or entry.torch[0] != kind:
                continue
            for key, value in entry.torch[1].items():
                if getattr(module, key) != value:
                    raise SpecError(f"{kind}: {key}={getattr(module, key)}; only {key}={value} is supported")
            return cls(name)
        raise SpecError(f"{kind}: not an activation symbackprop knows")


def ReLU() -> Activation:
    """``Activation("relu")``."""
    return Activation("relu")


def Sigmoid() -> Activation:
    """``Activation("sigmoid")``."""
    return Activation("sigmoid")


def Tanh() -> Activation:
    """``Activation("tanh")``."""
    return Activation("tanh")


def Softplus() -> Activation:
    """``Activation("softplus")``: the exact log(1 + e^z), without torch's threshold at 20."""
    return Activation("softplus")


def LeakyReLU() -> Activation:
    """``Activation("leaky_relu")``: slope 0.01 below 0, as torch's default."""
    return Activation("leaky_relu")


def _applied_tex(function: str, argument: str) -> str:
    """g(argument) as documents write each activation."""
    names = {"g": "g", "sigmoid": r"\sigma", "tanh": r"\tanh", "relu": r"\operatorname{ReLU}",
             "softplus": r"\operatorname{softplus}", "leaky_relu": r"\operatorname{LReLU}"}
    if function == "identity":
        return argument
    return rf"{names[function]}\left({argument}\right)"


def _derivative_tex(function: str, layer: int, input_letter: str) -> str:
    """g′ at the input, written with the layer's output where that is how it reads (σ′ = a(1 − a))."""
    z, a = sympy.Symbol("z_", real=True), sympy.Symbol("a_", real=True)
    derivative = function_named(function).derivative(z, a)
    names = {z: f"{input_letter}_{{i}}", a: f"a^{{({layer})}}_{{i}}"}
    return sympy.latex(derivative, symbol_names=names)
