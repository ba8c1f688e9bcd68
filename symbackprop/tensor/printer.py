"""How the tensor view prints: ``Names`` (a layer's tensors and their TeX) and ``TensorPrinter``.

``TensorPrinter`` is the project's ``NotationPrinter`` (``symbackprop.latex``) taught indexed
tensors: W^{(1)}_{o,c,m,n}, ∂L/∂W^{(1)}_{o,c,m,n}, indices written s i + d m − p, sums over
their letters with a Kronecker delta under the sum as the condition it sets, and products
with the gradient first.

Imports sympy, ``indexed`` (what index forms are made of) and ``latex`` (the printer it
extends).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sympy
from sympy import Add, Indexed, KroneckerDelta, Mul, Sum, Symbol

from ..indexed import IsFirstMax, Maximum
from ..latex import NotationPrinter

# Index letters print in this order inside an index: s·i + d·m − p, not d·m + i·s − p.
LETTER_ORDER = ("o", "f", "c", "k", "i", "j", "u", "v", "m", "n")


@dataclass(frozen=True)
class Names:
    """How a layer's tensors print: TeX by ``IndexedBase`` label (or ``MatrixSymbol``), and
    the labels of gradients, printed ∂L/∂(tensor)_{indices}."""

    tex: Mapping[Any, str]
    partial: frozenset = frozenset()
    # where a tensor goes in a printed product, by label (others 2): δ · W · a
    rank: Mapping[Symbol, int] = field(default_factory=dict)
    # where a term goes in a printed sum, by the labels it reads (the least wins; others
    # last): an addition's inputs in the order it reads them, a fork's readers in order
    order: Mapping[Symbol, int] = field(default_factory=dict)
    # gradient labels that stand for one reader's part of a gradient, with that reader's
    # number: ∂L/∂a^{(1)} |_{via 3}, what layer 3 sends back to a^{(1)}
    part_of: Mapping[Symbol, int] = field(default_factory=dict)


class TensorPrinter(NotationPrinter):
    r"""``NotationPrinter`` taught indexed tensors: W^{(1)}_{o,c,m,n}; ∂L/∂W^{(1)}_{o,c,m,n};
    indices written s i + d m − p; sums over their letters, a Kronecker delta under the sum
    as the condition it sets; products with the gradient first, joined by ``\cdot``."""

    def __init__(self, names: Names) -> None:
        super().__init__(dict(names.tex))
        self.names = names

    def _print_Indexed(self, expr: sympy.Indexed) -> str:
        label = expr.base.label
        tex = self.names.tex.get(label, str(label))
        indices = ",".join(self._index(i) for i in expr.indices)
        if label in self.names.part_of:
            gradient = rf"\frac{{\partial L}}{{\partial {tex}_{{{indices}}}}}"
            return rf"\left.{gradient}\right|_{{\text{{via }}{self.names.part_of[label]}}}"
        if label in self.names.partial:
            return rf"\frac{{\partial L}}{{\partial {tex}_{{{indices}}}}}"
        return f"{tex}_{{{indices}}}"

    def _print_tanh(self, expr: sympy.tanh, exp: Any = None) -> str:
        """tanh(x) as every other activation prints, \\tanh\\left(x\\right)."""
        power = "" if exp is None else f"^{{{exp}}}"
        return rf"\tanh{power}\left({self._print(expr.args[0])}\right)"

    def _print_MatrixSymbol(self, expr: sympy.MatrixSymbol) -> str:
        return self.names.tex.get(expr, str(expr.name))

    def _print_Transpose(self, expr: Any) -> str:
        return f"{{{self._print(expr.arg)}}}^{{T}}"

    def _index(self, e: sympy.Expr) -> str:
        """An index expression with its letters first, in ``LETTER_ORDER``: s i + d m − p."""
        def rank(term: sympy.Expr) -> int:  # letters in LETTER_ORDER, other letters, numbers
            names = [x.name.rstrip("'") for x in term.free_symbols if isinstance(x, Symbol)]
            known = [LETTER_ORDER.index(n) for n in names if n in LETTER_ORDER]
            return min(known) if known else len(LETTER_ORDER) + (not names)

        terms = sorted(Add.make_args(e), key=rank)
        positive = [t for t in terms if not t.could_extract_minus_sign()]
        if positive and terms[0].could_extract_minus_sign():  # d (K − 1) − m, not −m + d (K − 1)
            terms.remove(positive[0])
            terms.insert(0, positive[0])
        tex = ""
        for term in terms:
            coefficient, rest = term.as_coeff_Mul()
            sign = "-" if coefficient < 0 else "+"
            coefficient = abs(coefficient)
            factors = sorted(Mul.make_args(rest), key=rank, reverse=True)
            parts = [] if coefficient == 1 and rest != 1 else [self._print(coefficient)]
            parts += [self._print(f) if not f.is_Add else rf"\left({self._print(f)}\right)"
                      for f in factors if f != 1]
            body = " ".join(parts)
            tex += (f"{sign} " if tex or sign == "-" else "") + body + " "
        return tex.strip().replace("- ", "-", 1) if tex.startswith("- ") else tex.strip()

    def _as_ordered_terms(self, expr: sympy.Expr, order: Any = None) -> list[sympy.Expr]:
        """A sum's terms as they print (and as ``latex.break_expr`` breaks them): sums and
        maxima first, Σ W · a + b; a sum of tensors from several places of ``Names.order``
        in that order (an addition's inputs as it reads them, a fork's readers), not sympy's
        alphabetical one."""
        terms = list(super()._as_ordered_terms(expr, order=order))
        places = {t: self._place(t) for t in terms}
        ordered = sum(place < len(self.names.order) for place in places.values()) > 1
        return sorted(terms, key=lambda t: (places[t] if ordered else 0, not t.has(Sum, Maximum)))

    def _print_Add(self, expr: sympy.Add, order: Any = None) -> str:
        terms = self._as_ordered_terms(expr, order=order)
        tex = ""
        for term in terms:
            if tex and term.could_extract_minus_sign():
                tex += " - " + self._print(-term)
            else:
                tex += (" + " if tex else "") + self._print(term)
        return tex

    def _place(self, term: sympy.Expr) -> int:
        """Where ``term`` goes in a sum: the least ``Names.order`` of the tensors it reads."""
        order = self.names.order
        return min((order[e.base.label] for e in term.atoms(Indexed) if e.base.label in order),
                   default=len(order))

    def _print_Pow(self, expr: sympy.Pow) -> str:
        if isinstance(expr.base, Indexed) and expr.exp.is_positive:  # a^{(1)}_{k}^{2} would not typeset
            return rf"\left({self._print(expr.base)}\right)^{{{self._print(expr.exp)}}}"
        return super()._print_Pow(expr)

    def _print_KroneckerDelta(self, expr: KroneckerDelta, exp: Any = None) -> str:
        return rf"\left[{self._index(expr.args[0])} = {self._index(expr.args[1])}\right]"

    def _print_Sum(self, expr: Sum) -> str:
        limits, function = list(expr.limits), expr.function
        while isinstance(function, Sum):
            limits += function.limits
            function = function.function
        summed = {x for x, *_ in limits}
        conditions = [f for f in Mul.make_args(function) if isinstance(f, KroneckerDelta) and f.free_symbols & summed]
        body = Mul(*[f for f in Mul.make_args(function) if f not in conditions])
        under = ",".join(self._print(x) for x, *_ in limits)
        if conditions:
            lines = [under] + [self._condition(c, summed) for c in conditions]
            under = r"\substack{" + r" \\ ".join(lines) + "}"
        tex = self._print(body)
        return rf"\sum_{{{under}}} " + (rf"\left({tex}\right)" if body.is_Add else tex)

    def _condition(self, delta: KroneckerDelta, summed: set[Symbol]) -> str:
        left, right = delta.args
        if not (left.free_symbols & summed):
            left, right = right, left
        return f"{self._index(left)} = {self._index(right)}"

    def _print_Mul(self, expr: sympy.Mul) -> str:
        factors = Mul.make_args(expr)
        tensors = [f for f in factors if f.has(Indexed) or isinstance(f, (Sum, IsFirstMax))]
        if not tensors or any(f.is_Pow and f.exp.is_negative for f in tensors):
            return super()._print_Mul(expr)
        constant = Mul(*[f for f in factors if f not in tensors])
        parts = []
        for f in sorted(tensors, key=self._rank):
            tex = self._print(f)
            parts.append(rf"\left({tex}\right)" if f.is_Add else tex)
        tex = r" \cdot ".join(parts)
        if constant == 1:
            return tex
        if constant == -1:
            return "- " + tex
        return f"{self._print(constant)} {tex}"

    def _rank(self, factor: sympy.Expr) -> int:
        """Gradients first, then parameters, other tensors, functions, sums, brackets:
        δ · a, W · a, ∂L/∂a · g′(z)."""
        if isinstance(factor, Indexed):
            return self.names.rank.get(factor.base.label, 2)
        if isinstance(factor, IsFirstMax):
            return 5
        return 4 if isinstance(factor, Sum) else 3


