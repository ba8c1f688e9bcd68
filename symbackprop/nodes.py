"""The kinds of node in the scalar computational graph, each with its own local-derivative rule.

* ``Linear``: z = Σ c_k · v_k (+ b), its coefficients symbolic weights (a convolution, a
  dense layer) or constants (an average pool's 1/k²). ∂z/∂v_k = c_k, ∂z/∂w_k = v_k, ∂z/∂b = 1.
* ``Select``: a = max(v_1, …, v_k) over a pooling window. ∂a/∂v_j is 1 for the first
  maximum in window order and 0 for the others: PyTorch's choice when values tie.
* ``Elementwise``: a = f(z), an activation; ∂a/∂z is the activation's own derivative.
* ``Expression``: any other formula of its inputs and weights — batch normalisation's
  variance (1/M) Σ (x − μ)² and normalised x̂ = (x − μ)/√(σ² + ε); its local gradients are the
  formula's partial derivatives, taken by sympy on the one node (never on the network).

The loss, the fourth kind, is a registry entry of ``losses``: its gradient starts the
backward pass. ``derive`` reads ``node.local()`` of every node and never asks which kind it
has. Each kind also counts its formula's tree nodes with its inputs standing for trees of
given sizes (``tree_size``): how large a closed form would be, without building it.

The max is ``window_max``, a sympy function whose derivative is a product of Iverson
brackets: ∂ max(v_1..v_k)/∂v_j = Π_{k<j} [v_j > v_k] · Π_{k>j} [v_j ≥ v_k], the brackets being
``greater`` (Heaviside(d, 0)) and ``not_less`` (Heaviside(d, 1)) of the difference d = v_j − v_k.
Closed forms keep those functions; their elementary forms (Max, Heaviside) serve evalf and
code printing.

Imports sympy and ``activations`` (for the function base classes and the Activation type).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import sympy
from sympy import Function, Heaviside, Max

from .activations import Activation, _Elementary


class _Bracket(_Elementary):
    """An Iverson bracket of a difference d = u − v: prints as [u > v] (or ≥)."""

    relation_tex = ">"

    def fdiff(self, argindex=1):
        return sympy.S.Zero  # a step: flat wherever it is differentiable

    def _latex(self, printer, exp=None):
        positive, negative = [], []
        for term in sympy.Add.make_args(self.args[0]):
            (negative if term.could_extract_minus_sign() else positive).append(term)
        left = printer._print(sympy.Add(*positive)) if positive else "0"
        right = printer._print(-sympy.Add(*negative)) if negative else "0"
        tex = rf"\left[{left} {self.relation_tex} {right}\right]"
        return tex if exp is None else rf"{tex}^{{{exp}}}"


class greater(_Bracket):
    """[d > 0]: 1 when d > 0, else 0."""

    relation_tex = ">"

    @classmethod
    def elementary(cls, x):
        return Heaviside(x, 0)


class not_less(_Bracket):
    """[d ≥ 0]: 1 when d ≥ 0, else 0."""

    relation_tex = r"\geq"

    @classmethod
    def elementary(cls, x):
        return Heaviside(x, 1)


class window_max(Function):
    """max(v_1, …, v_k) over a pooling window, its derivative routed to the first maximum."""

    def fdiff(self, argindex=1):
        values, j = self.args, argindex - 1
        brackets = [greater(values[j] - v) for v in values[:j]]
        brackets += [not_less(values[j] - v) for v in values[j + 1 :]]
        return sympy.Mul(*brackets)

    def _eval_is_real(self):
        return all(v.is_real for v in self.args) or None

    def _eval_evalf(self, prec):
        return Max(*self.args)._eval_evalf(prec)

    def _eval_rewrite_as_Max(self, *args, **kwargs):
        return Max(*args)

    def _numpycode(self, printer):  # lambdify(..., "numpy") prints through here
        return printer._print(Max(*self.args))

    _pythoncode = _numpycode  # lambdify(..., "math")

    def _latex(self, printer, exp=None):
        inner = ", ".join(printer._print(a) for a in self.args)
        tex = rf"\max\left({inner}\right)"
        return tex if exp is None else rf"{tex}^{{{exp}}}"


@dataclass(frozen=True)
class Linear:
    """z = Σ coefficient · input (+ bias), terms in the order of the kernel's weights."""

    symbol: sympy.Symbol
    terms: tuple[tuple[sympy.Expr, sympy.Symbol], ...]  # (coefficient: a weight or a constant, input)
    bias: sympy.Symbol | None = None

    kind = "linear"

    @property
    def inputs(self) -> tuple[sympy.Symbol, ...]:
        return tuple(v for _, v in self.terms)

    @property
    def expr(self) -> sympy.Expr:
        total = sympy.Add(*[c * v for c, v in self.terms])
        return total + self.bias if self.bias is not None else total

    def tree_size(self, sizes: Mapping[sympy.Basic, int]) -> int:
        """Tree nodes of ``expr`` with each input standing for a tree of ``sizes[input]`` nodes."""
        parts = [
            sizes.get(v, 1) if c == 1 else 1 + weighted_size(c, sizes) + sizes.get(v, 1)
            for c, v in self.terms
            if sizes.get(v, 1)  # a zero input adds nothing
        ]
        if self.bias is not None:
            parts.append(1)
        if len(parts) <= 1:
            return parts[0] if parts else 0  # no inputs off the padding: z is 0
        return 1 + sum(parts)

    def local(self) -> Iterator[tuple[sympy.Symbol, sympy.Expr]]:
        """(variable, ∂z/∂variable) for every input, weight and bias, in kernel order."""
        for coefficient, value in self.terms:
            yield value, coefficient
            if coefficient.is_Symbol:  # a weight, not a constant
                yield coefficient, value
        if self.bias is not None:
            yield self.bias, sympy.S.One


@dataclass(frozen=True)
class Select:
    """a = max over the window's inputs (padding, −∞, never wins and is left out)."""

    symbol: sympy.Symbol
    inputs: tuple[sympy.Symbol, ...]

    kind = "select"

    @property
    def expr(self) -> sympy.Expr:
        return window_max(*self.inputs) if len(self.inputs) > 1 else self.inputs[0]

    def tree_size(self, sizes: Mapping[sympy.Basic, int]) -> int:
        """Tree nodes of ``expr`` with each input standing for a tree of ``sizes[input]`` nodes."""
        inputs = [sizes.get(v, 1) for v in self.inputs]
        return inputs[0] if len(inputs) == 1 else 1 + sum(inputs)

    def local(self) -> Iterator[tuple[sympy.Symbol, sympy.Expr]]:
        if len(self.inputs) == 1:
            yield self.inputs[0], sympy.S.One
            return
        applied = window_max(*self.inputs, evaluate=False)
        for j, value in enumerate(self.inputs, start=1):
            yield value, applied.fdiff(j)


@dataclass(frozen=True)
class Elementwise:
    """a = activation(z)."""

    symbol: sympy.Symbol
    z: sympy.Symbol
    activation: Activation

    kind = "elementwise"

    @property
    def expr(self) -> sympy.Expr:
        return self.activation.apply(self.z)

    @property
    def inputs(self) -> tuple[sympy.Symbol, ...]:
        return (self.z,)

    def tree_size(self, sizes: Mapping[sympy.Basic, int]) -> int:
        """Tree nodes of ``expr`` with z standing for a tree of ``sizes[z]`` nodes."""
        return weighted_size(self.expr, sizes)

    def local(self) -> Iterator[tuple[sympy.Symbol, sympy.Expr]]:
        yield self.z, self.activation.derivative(self.z, self.symbol)


@dataclass(frozen=True)
class Expression:
    """symbol = expr, a formula of ``inputs`` (values of the graph) and ``weights`` (parameters);
    every other symbol in it is a constant (a running statistic)."""

    symbol: sympy.Symbol
    expr: sympy.Expr
    inputs: tuple[sympy.Symbol, ...]
    weights: tuple[sympy.Symbol, ...] = ()

    kind = "expression"

    def tree_size(self, sizes: Mapping[sympy.Basic, int]) -> int:
        """Tree nodes of ``expr`` with each input standing for a tree of ``sizes[input]`` nodes."""
        return weighted_size(self.expr, sizes)

    def local(self) -> Iterator[tuple[sympy.Symbol, sympy.Expr]]:
        """(variable, ∂expr/∂variable) for every input, then every weight."""
        for variable in (*self.inputs, *self.weights):
            yield variable, sympy.diff(self.expr, variable)


Node = Linear | Select | Elementwise | Expression


def weighted_size(expr: sympy.Basic, sizes: Mapping[sympy.Basic, int]) -> int:
    """Tree nodes of ``expr`` with each subexpression in ``sizes`` counted as that many nodes;
    a size of 0 marks a value known to be zero (an output on the padding alone), which takes
    its product with it and drops out of its sum, as sympy would.

    >>> x, y, zero = sympy.symbols("x y zero")
    >>> weighted_size(x * (y + 1), {y: 10}), weighted_size(x + x * zero, {zero: 0})
    (14, 1)
    """
    if expr in sizes:
        return sizes[expr]
    if not expr.args:
        return 1
    parts = [weighted_size(a, sizes) for a in expr.args]
    if expr.is_Mul and 0 in parts:
        return 0
    if expr.is_Add:
        parts = [p for p in parts if p]
        if len(parts) <= 1:
            return parts[0] if parts else 0
    return 1 + sum(parts)
