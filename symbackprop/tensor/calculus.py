"""Differentiating an index form: Σ over the outputs of δ times the derivative, the
Kronecker deltas summed out.

``backward`` is the one entry: ∂/∂(element) of an operation's forward, written for every
index at once. A delta between a summed letter and a letter of the same range is summed out;
the others stay, as conditions under the sum.

Imports sympy and ``indexed``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import prod

import sympy
from sympy import Add, Dummy, Indexed, IndexedBase, KroneckerDelta, Mul, Sum, Symbol
from sympy.matrices.expressions.matexpr import MatrixElement

from ..indexed import index


def backward(
    expr: sympy.Expr, out: Sequence[Symbol], sizes: Mapping[Symbol, int],
    seed: IndexedBase | None, wrt: sympy.Indexed,
) -> sympy.Expr:
    """Σ over the output letters ``out`` of seed[out] · ∂expr/∂wrt (just ∂expr/∂wrt when
    ``seed`` is None), the Kronecker deltas summed out; wrt's letters are left free."""
    twins = {x: Dummy(x.name, integer=True) for x in wrt.indices}
    ranges = {twins[x]: (0, sizes[x] - 1) for x in wrt.indices}
    local = sympy.diff(expr, wrt.xreplace(twins))
    total = local if seed is None else Sum(seed[tuple(out)] * local, *[(x, 0, sizes[x] - 1) for x in out])
    summed = _sum_out(total, ranges)
    named = rebind(summed, set(twins)).xreplace({t: x for x, t in twins.items()})
    return sympy.factor_terms(named)  # 2/3 (a_k − y_k), not 2/3 a_k − 2/3 y_k


def _sum_out(expr: sympy.Expr, ranges: Mapping[Symbol, tuple[int, int]]) -> sympy.Expr:
    """Every sum in ``expr`` distributed over its terms, each term's deltas summed out."""
    if isinstance(expr, Sum):
        return _sum_terms(_sum_out(expr.function, ranges), list(expr.limits), ranges)
    if not expr.args or isinstance(expr, Indexed):
        return expr
    args = [_sum_out(a, ranges) for a in expr.args]
    return expr if all(a is b for a, b in zip(args, expr.args)) else expr.func(*args)


def _sum_terms(function: sympy.Expr, limits: list, ranges: Mapping) -> sympy.Expr:
    return Add(*[_sum_term(term, limits, ranges) for term in _terms(function)])


def _terms(expr: sympy.Expr) -> list[sympy.Expr]:
    """``expr`` as a sum of terms, products distributed only over the sums that hold a delta
    or a Sum (so σ′ stays a(1 − a))."""
    if expr.is_Add:
        return [t for a in expr.args for t in _terms(a)]
    if expr.is_Mul:
        for k, f in enumerate(expr.args):
            if f.is_Add and f.has(KroneckerDelta, Sum):
                rest = Mul(*(expr.args[:k] + expr.args[k + 1 :]))
                return [t for a in f.args for t in _terms(rest * a)]
    return [expr]


def _sum_term(term: sympy.Expr, limits: list, ranges: Mapping) -> sympy.Expr:
    """Σ over ``limits`` of one product: a sum it holds joins the sum; δ(summed, other) with
    other running over the same range substitutes other for summed; the factors that do not
    depend on what is summed come out."""
    if term == 0:
        return sympy.S.Zero
    factors = Mul.make_args(term)
    bounds = {x: (lo, hi) for x, lo, hi in limits}
    for f in factors:
        if isinstance(f, Sum) and not ({x for x, *_ in f.limits} & (term.free_symbols | set(bounds))):
            rest = Mul(*[g for g in factors if g is not f])
            return _sum_terms(rest * f.function, limits + list(f.limits), ranges)
    for f in factors:
        if isinstance(f, KroneckerDelta):
            for summed, other in (f.args, f.args[::-1]):
                if summed in bounds and other.is_Symbol and (ranges.get(other) or bounds.get(other)) == bounds[summed]:
                    remaining = [limit for limit in limits if limit[0] != summed]
                    return _sum_term(term.xreplace({summed: other}), remaining, ranges)
    inside = [f for f in factors if f.free_symbols & set(bounds)]
    outside = Mul(*[f for f in factors if not f.free_symbols & set(bounds)])
    if not limits:
        return term
    if not inside:
        return outside * prod(int(hi - lo + 1) for lo, hi in bounds.values())
    return outside * Sum(Mul(*inside), *limits)


def bounds(expr: sympy.Expr, sizes: Mapping[Symbol, int]) -> tuple[int, int]:
    """The least and greatest value of a linear index expression, each letter x running over
    0 ≤ x < sizes[x]."""
    low = high = 0
    for term in Add.make_args(expr):
        coefficient, rest = term.as_coeff_Mul()
        extent = 0 if rest == 1 else sizes[rest] - 1
        low += min(0, coefficient * extent) + (coefficient if rest == 1 else 0)
        high += max(0, coefficient * extent) + (coefficient if rest == 1 else 0)
    return int(low), int(high)


def rebind(expr: sympy.Expr, keep: set[Symbol]) -> sympy.Expr:
    """``expr`` with every summed letter that a twin in ``keep`` will be renamed to given a
    fresh letter first (Σ_k y_k → Σ_j y_j when the free k comes back)."""
    taken = {Symbol(t.name, integer=True) for t in keep}
    if isinstance(expr, Sum):
        function, limits = rebind(expr.function, keep), []
        for x, lo, hi in expr.limits:
            if x in taken:
                fresh = next(y for y in index("j q r t") if y not in taken and not function.has(y))
                function, x = function.xreplace({x: fresh}), fresh
            limits.append((x, lo, hi))
        return Sum(function, *limits)
    if not expr.args or isinstance(expr, Indexed):
        return expr
    args = [rebind(a, keep) for a in expr.args]
    return expr if all(a is b for a, b in zip(args, expr.args)) else expr.func(*args)


def entries(matrix: sympy.MatrixExpr, letters: Sequence[Symbol],
             matrices: Mapping[sympy.MatrixSymbol, tuple[IndexedBase, bool]]) -> sympy.Expr:
    """A matrix expression's entry at ``letters`` (a column vector's at letters[0]) in index form,
    a product's sum kept as a ``Sum`` (``at`` writes it out; ``matrix[i, j]`` would write its
    terms out here, 120 of them for LeNet-5's Wᵀ δ)."""
    entry = matrix._entry(letters[0], letters[1] if len(letters) > 1 else 0, expand=False)

    def indexed(e: MatrixElement) -> sympy.Indexed:
        base, vector = matrices[e.parent]
        return base[e.i] if vector else base[e.i, e.j]

    return entry.replace(lambda e: isinstance(e, MatrixElement), indexed)


