"""The tensor view's results: ``Formula`` (one general formula of a layer, with its letters,
tensors and settings) and ``Fact`` (a fact students remember, checked against the formula it
restates).

A formula prints with ``.latex()`` (``printer.TensorPrinter``) and expands at concrete indices
with ``.at()`` (``evaluate``): over the scalar graph's symbols to compare with the chain form,
over numbers to compare with the reference.

Imports sympy, ``latex`` (line breaking), ``printer`` and ``evaluate``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import product
from math import prod
from typing import Any

import sympy
from sympy import Indexed, IndexedBase, Symbol

from ..indexed import Spread
from ..latex import ROW_WIDTH, Row, aligned, break_expr
from .evaluate import Shape, evaluate, flat, numbers, reader
from .printer import Names, TensorPrinter


@dataclass(frozen=True, eq=False)
class Formula:
    """One general formula of a layer: ``lhs = rhs`` for every value of its free letters.

    ``kind`` is "forward", "activation", "loss", "delta", "W", "b", "input" (and "fact"
    for a ``Fact``). ``letters`` are the lhs's free index letters with how far each runs
    (0 ≤ letter < size); ``tensors`` gives each tensor its role — the key to the values
    ``at`` reads ("input", "output", "activation", "upstream", "delta", "W", "b", "y") —
    and its shape; ``settings`` the values of the settings symbols (s, d, p, K, …).
    """

    kind: str
    lhs: sympy.Expr
    rhs: sympy.Expr
    letters: tuple[tuple[Symbol, int], ...]
    tensors: Mapping[IndexedBase, tuple[str, Shape]]
    settings: Mapping[Symbol, int]
    names: Names
    note: str = ""
    alias: sympy.Expr | None = None  # δ^{(l)}_{o,i,j}, printed before the lhs
    index_rhs: sympy.Expr | None = None  # the rhs in index form, when it is a matrix expression
    spreads: tuple[Spread, ...] = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind}: {self.lhs} = {self.rhs}>"

    def _repr_latex_(self) -> str:
        return f"$${self.latex()}$$"

    @property
    def equation(self) -> sympy.Eq:
        """``lhs = rhs`` as a sympy equation."""
        return sympy.Eq(self.lhs, self.rhs, evaluate=False)

    @property
    def printer(self) -> TensorPrinter:
        """The printer of its layer's tensors (for ``latex.break_expr`` of a long rhs)."""
        return TensorPrinter(self.names)

    def latex(self) -> str:
        r"""The formula in LaTeX, by ``TensorPrinter``: ``\frac{\partial L}{\partial W^{(1)}_{o,c,m,n}} = …``."""
        p = self.printer
        sides = [p.doprint(self.lhs), p.doprint(self.rhs)]
        if self.alias is not None:
            sides.insert(0, p.doprint(self.alias))
        return " = ".join(sides)

    def aligned(self, width: float = ROW_WIDTH) -> str:
        r"""The formula as ``align`` rows, ``lhs &= …``, its rhs broken into rows of at most
        ``width`` em where it is longer (``latex.break_expr``: a fork's upstream, one reader's
        part to a row)."""
        p = self.printer
        lhs = " = ".join(p.doprint(side) for side in (self.alias, self.lhs) if side is not None)
        return aligned(lhs, break_expr(self.rhs, p, width) or [Row(p.doprint(self.rhs))])

    def positions(self) -> Iterator[tuple[int, ...]]:
        """Every concrete value of the free letters, in row-major order."""
        return product(*(range(size) for _, size in self.letters))

    def at(self, position: Sequence[int], values: Mapping[str, Any]) -> Any:
        """The rhs at one concrete index, every sum written out, reading each tensor from
        ``values[role]`` (any array or sequence, flattened row-major): symbols give the
        scalar form, numbers a number. Entries outside a tensor read 0 (−∞ under a max)."""
        rhs = self.index_rhs if self.index_rhs is not None else self.rhs
        hats = {s.hat: s.base for s in self.spreads}
        for base in {hats.get(e.base, e.base) for e in rhs.atoms(Indexed)}:
            if self.tensors[base][0] not in values:
                raise KeyError(f"no values for {self.tensors[base][0]!r}: give them to at() by that name")
        flattened = {role: flat(v) for role, v in values.items()}
        numeric = all(isinstance(v, float) for entries in flattened.values() for v in entries)
        env = {**self.settings, **dict(zip([x for x, _ in self.letters], map(int, position)))}
        return evaluate(rhs, env, reader(self.tensors, flattened, self.spreads, self.settings), numeric)

    def concrete(self) -> Formula:
        """The same formula with the layer's settings written as numbers (s = 2 → 2 i)."""
        values = numbers(self.settings)

        def put(e: sympy.Expr | None) -> sympy.Expr | None:
            return None if e is None else e.xreplace(values)

        spreads = tuple(replace(s, factors=tuple(sympy.sympify(f).xreplace(values) for f in s.factors))
                        for s in self.spreads)
        return replace(self, lhs=put(self.lhs), rhs=put(self.rhs), alias=put(self.alias),
                       index_rhs=put(self.index_rhs), spreads=spreads)


@dataclass(frozen=True, eq=False)
class Fact(Formula):
    """A fact students remember, stated as an equation and checked against ``restates``,
    the derived formula of the same gradient. ``where`` defines the tensors it introduces
    (δ̂, Ŵ); ``condition`` is an equation it needs (Σ_j y_j = 1), or None."""

    statement: str = ""
    restates: Formula | None = None
    where: tuple[sympy.Eq, ...] = ()
    condition: tuple[sympy.Expr, sympy.Expr] | None = None

    def latex(self) -> str:
        tex = super().latex()
        if self.condition is not None:
            p = self.printer
            lhs, rhs = (p.doprint(side) for side in self.condition)
            tex += rf" \qquad \text{{when }} {lhs} = {rhs}"
        return tex

    def where_latex(self) -> list[str]:
        """The definitions of the tensors it introduces, in LaTeX (each 0 elsewhere)."""
        p = self.printer
        return [rf"{p.doprint(eq.lhs)} = {p.doprint(eq.rhs)}, \text{{ and }} 0 \text{{ elsewhere}}"
                for eq in self.where]

    def concrete(self) -> Fact:
        values = numbers(self.settings)
        where = tuple(sympy.Eq(eq.lhs.xreplace(values), eq.rhs.xreplace(values), evaluate=False)
                      for eq in self.where)
        return replace(super().concrete(), restates=self.restates.concrete(), where=where)

    def check(self) -> bool:
        """Whether the fact equals the formula it restates at every concrete index, both
        written out over the same symbols (under its condition, when it has one)."""
        symbols = {role: sympy.symbols(f"{role}_0:{prod(shape)}", real=True)
                   for role, shape in {**self.restates.tensors, **self.tensors}.values()}
        under = {}
        if self.condition is not None:  # Σ_j y_j = 1: write one y_j as 1 minus the others
            lhs, rhs = (evaluate(side, {}, reader(self.tensors, symbols, (), {})) for side in self.condition)
            chosen = min(lhs.free_symbols, key=str)
            (under[chosen],) = sympy.solve(lhs - rhs, chosen)
        for position in self.positions():
            derived = self.restates.at(position, symbols).xreplace(under)
            if sympy.expand(derived - self.at(position, symbols).xreplace(under)) != 0:
                return False
        return True


