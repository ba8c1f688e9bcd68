"""A fully connected (dense) layer on the flattened input: z = W a (+ b).

The input is flattened in (channel, row, column) order, as PyTorch's ``Flatten``; a dense
layer takes an image or a vector input alike. W is (out, in), as ``nn.Linear``'s weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, ClassVar

import numpy as np
from sympy import Sum

from ..indexed import Bases, Claim, IndexForm, index
from .base import (
    BIAS,
    WEIGHTS,
    Branch,
    CodeNames,
    Connection,
    LayerCode,
    Notation,
    Op,
    Parameter,
    ParameterGrads,
    Shape,
    check_bias_and_activation,
    integer,
    upstream_tex,
    weight_formula_tex,
    weighted_sums,
)


@dataclass(frozen=True, kw_only=True)
class Dense(Op):
    """Fully connected layer on the flattened input (channel, row, column), optional bias.

    >>> Dense(units=3).parameter_shapes((2, 2, 2))
    {'W': (3, 8)}
    """

    units: int
    bias: bool = False
    activation: str = "identity"

    key: ClassVar[str] = "dense"
    title: ClassVar[str] = "fully connected"
    torch_name: ClassVar[str] = "Linear"
    image_input: ClassVar[bool] = False
    required: ClassVar[tuple[str, ...]] = ("units",)
    parameters: ClassVar[tuple[Parameter, ...]] = (WEIGHTS, BIAS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", integer("dense", "units", self.units, 1))
        check_bias_and_activation("dense", self.bias, self.activation)

    def output_shape(self, input_shape: Shape) -> Shape:
        return (self.units,)

    def parameter_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        shapes = {"W": (self.units, prod(input_shape))}
        if self.bias:
            shapes["b"] = (self.units,)
        return shapes

    def window(self, input_shape: Shape) -> int:
        return prod(input_shape)  # every input

    # ---- the scalar face --------------------------------------------------------------------

    def connections(self, input_shape: Shape) -> list[Connection]:
        size = prod(input_shape)
        every = tuple(range(size))
        return [
            Connection(every, every, tuple((f, i) for i in every), (f,) if self.bias else None)
            for f in range(self.units)
        ]

    def nodes(self, input_shape: Shape, inputs, params, outputs) -> tuple:
        """z_f = Σ_i w_{f,i} · a_i (+ b_f), one node per neuron."""
        return weighted_sums(self.connections(input_shape), inputs, params, outputs)

    # ---- notation ---------------------------------------------------------------------------

    def describe(self) -> str:
        return f"dense {self.units}, {'bias' if self.bias else 'no bias'}, {self.activation}"

    def table_cells(self) -> tuple[str, str, str]:
        return "--", "--", "--"

    def size_formula(self, input_shape: Shape, padded: bool) -> None:
        return None  # no sliding window: its size is its number of units

    def weight_note(self) -> str:
        return (
            "Each weight connects one input to one neuron, a single dependency: its gradient is "
            "one upstream gradient times one local gradient."
        )

    def outer_product(self) -> bool:
        return True

    def forward_formula(self, n: Notation) -> dict[str, str]:
        l = n.number
        bias = f" + b^{{({l})}}_{{f}}" if self.bias else ""
        equation = rf"z^{{({l})}}_{{f}} = \sum_{{i=1}}^{{{n.input_count}}} w^{{({l})}}_{{f,i}} \, {n.input_letter}_{{i}}{bias}"
        note = (
            f"each neuron $f$ sums all {n.input_count} inputs, each times its own weight "
            rf"$w^{{({l})}}_{{f,i}}$ (numbered $w^{{({l})}}_{{(f-1) \cdot {n.input_count} + i}}$ "
            "neuron after neuron): no weight is shared between neurons"
        )
        return {"equation": equation, "note": note}

    def weight_formula(self, n: Notation) -> dict[str, str | None]:
        weight, used = f"w^{{({n.number})}}_{{n}}", f"{n.input_letter}_{{i}}"
        note = (
            rf"for the neuron $f$ and the input $i$ that $w^{{({n.number})}}_{{n}}$ connects: "
            rf"$n = (f - 1) \cdot {n.input_count} + i$"
        )
        equation, bias = weight_formula_tex(n, "f", "", weight, used, "f" if self.bias else None)
        return {"equation": equation, "note": note, "bias": bias}

    def upstream_formula(self, n: Notation) -> dict[str, str]:
        k, l = n.number, n.source
        equation = (
            rf"{upstream_tex(l, 'i')} = \sum_{{f}} {upstream_tex(k, 'f')} \cdot "
            rf"{n.local('f')}w^{{({k})}}_{{f,i}}"
        )
        note = (
            rf"$w^{{({k})}}_{{f,i}}$ is the weight from $a^{{({l})}}_{{i}}$ to neuron $f$ "
            rf"($w^{{({k})}}_{{(f-1) \cdot {n.input_count} + i}}$ in the flat numbering)"
        )
        return {"equation": equation, "note": note, "feeds": f"every neuron of layer {k}"}

    # ---- the tensor face --------------------------------------------------------------------

    def tensor_form(self, input_shape: Shape, t: Bases) -> IndexForm:
        """z[f] = Σ_i W[f, i] · a[i] (+ b[f]) over the flattened input; and, as matrices,
        ∂L/∂W = δ aᵀ and ∂L/∂a = Wᵀ δ."""
        f, i = index("f i")
        size = prod(input_shape)
        z = Sum(t.W[f, i] * t.input[i], (i, 0, size - 1))
        parameters = {"W": t.W[f, i]}
        if self.bias:
            z += t.b[f]
            parameters["b"] = t.b[f]
        delta, a = t.matrix(t.delta, self.units), t.matrix(t.input, size)  # column vectors
        weights = t.matrix(t.W, self.units, size)
        claims = (
            Claim("W", "the weight gradient is the outer product of δ and the layer's input", delta * a.T),
            Claim("input", "the input gradient is the transposed weights times δ", weights.T * delta),
        )
        return IndexForm(
            output=t.output[f], expr=z, input=t.input[i], parameters=parameters,
            sizes={f: self.units, i: size}, settings={}, claims=claims,
        )

    # ---- the reference face (numpy alone) ---------------------------------------------------

    def reference_forward(self, x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        """z = W a (+ b) for a batch, the input flattened: (B, *input) → (B, units)."""
        z = x.reshape(len(x), -1) @ params["W"].T
        return z + params["b"] if self.bias else z

    def reference_backward(
        self, dz: np.ndarray, x: np.ndarray, params: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """∂L/∂a = Wᵀ ∂L/∂z, per-sample ∂L/∂W = ∂L/∂z aᵀ and ∂L/∂b = ∂L/∂z."""
        flat = x.reshape(len(x), -1)
        grads = {"W": np.einsum("bf,bn->bfn", dz, flat)}
        if self.bias:
            grads["b"] = dz
        return (dz @ params["W"]).reshape(x.shape), grads

    # ---- the numeric-code face ----------------------------------------------------------------

    def code_values(self, input_shape: Shape) -> int:
        """The most values per sample an array of its code holds: its input or output."""
        return max(prod(input_shape), self.units)

    def layer_code(self, input_shape: Shape, names: CodeNames) -> LayerCode:
        """z = W flat (+ b), flat the input as a column per sample, in (channel, row, column)
        order as PyTorch's; ∂L/∂W = ∂L/∂z flatᵀ (an outer product per sample) and
        ∂L/∂flat = Wᵀ ∂L/∂z."""
        l, x, z, dz, dx = names
        weight, bias, size = f"W{l}", f"b{l}", prod(input_shape)
        if len(input_shape) > 1:  # an image (C, H, W, B): its columns are already in that order
            flat = f"flat{l}"
            flatten = [f"{flat} = {x}.reshape({size}, B)  # (channel, row, column) order, as PyTorch"]
            unflatten = f".reshape({', '.join(map(str, input_shape))}, B)"
        else:
            flat, flatten, unflatten = x, [], ""
        forward = [
            f"# {z}[f,b] = sum_n {weight}[f,n] * {flat}[n,b]" + (f" + {bias}[f]" if self.bias else ""),
            *flatten,
            f"{z} = {weight} @ {flat}" + (f" + {bias}[:, None]" if self.bias else ""),
        ]
        parameter_grads = ParameterGrads(
            f"# dL/d{weight}[f,n] = dL/d{z}[f,b] * {flat}[n,b], summed over b unless per sample",
            Branch("an outer product per sample, into grads", [
                f"_outer_per_sample({dz}, {flat}, out=grads[{weight!r}])",
                *([f"grads[{bias!r}][...] = {dz}.T"] if self.bias else []),
            ]),
            Branch(f"summed over the batch: {dz} {flat}ᵀ", [
                f"grads[{weight!r}] = _outer_sum({dz}, {flat})",
                *([f"grads[{bias!r}] = {dz}.sum(axis=1)"] if self.bias else []),
            ]),
        )
        backward = [
            f"# dL/d{x}[n,b] = sum_f {weight}[f,n] * dL/d{z}[f,b]",
            f"{dx} = ({weight}.T @ {dz}){unflatten}" if unflatten else f"{dx} = {weight}.T @ {dz}",
        ]
        return LayerCode(forward, backward, parameter_grads)

    # ---- the torch twin ---------------------------------------------------------------------

    def torch_twin(self, input_shape: Shape) -> list[tuple[str, dict[str, Any]]]:
        linear = (self.torch_name, {
            "in_features": prod(input_shape), "out_features": self.units, "bias": self.bias,
        })
        return [("Flatten", {}), linear] if len(input_shape) > 1 else [linear]

    @classmethod
    def from_torch(cls, module: Any) -> Dense:
        return cls(units=module.out_features, bias=module.bias is not None)
