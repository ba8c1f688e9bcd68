"""The kinds of node in the scalar computational graph, each with its own local-derivative rule.

* ``Linear``: z = Σ c_k · v_k (+ b), its coefficients symbolic weights (a convolution, a
  dense layer) or constants (an average pool's 1/k²). ∂z/∂v_k = c_k, ∂z/∂w_k = v_k, ∂z/∂b = 1.
* ``Select``: a = max(v_1, …, v_k) over a pooling window. ∂a/∂v_j is 1 for the first
  maximum in window order and 0 for the others: PyTorch's choice when values tie.
* ``Elementwise``: a = f(z), an activation; ∂a/∂z is the activation's own derivative.

The loss, the fourth kind, is a registry entry of ``losses``: its gradient starts the
backward pass. ``derive`` reads ``node.local()`` of every node and never asks which kind it
has.

The max is ``window_max``, a sympy function whose derivative is a product of Iverson
brackets: ∂ max(v_1..v_k)/∂v_j = Π_{k<j} [v_j > v_k] · Π_{k>j} [v_j ≥ v_k], the brackets being
``greater`` (Heaviside(d, 0)) and ``not_less`` (Heaviside(d, 1)) of the difference d = v_j − v_k.
Closed forms keep those functions; their elementary forms (Max, Heaviside) serve evalf and
code printing.

Imports sympy and ``activations`` (for the function base classes and the Activation type).
"""

from __future__ import annotations

from collections.abc import Iterator
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

    def local(self) -> Iterator[tuple[sympy.Symbol, sympy.Expr]]:
        yield self.z, self.activation.derivative(self.z, self.symbol)


Node = Linear | Select | Elementwise
