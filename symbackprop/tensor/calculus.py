"""Differentiating an index form: Σ over the outputs of δ times the derivative, the
Kronecker deltas summed out.

``backward`` is the one entry: ∂/∂(element) of an operation's forward, written for every
index at once. A delta between a summed letter and a letter of the same range is summed out;
the others stay, as conditions under the sum.

Imports sympy and ``indexed``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sympy
from sympy import Add, Dummy, Indexed, IndexedBase, KroneckerDelta, Mul, Sum, Symbol
from sympy.matrices.expressions.matexpr import MatrixElement

from ..indexed import index


def backward(
    expr: sympy.Expr, out: Sequence[Symbol], sizes: Mapping[Symbol, int],
    seed: IndexedBase | None, wrt: sympy.Indexed, settings: Mapping[Symbol, int] | None = None,
) -> sympy.Expr:
    """Σ over the output letters ``out`` of seed[out] · ∂expr/∂wrt (just ∂expr/∂wrt when
    ``seed`` is None), the Kronecker deltas summed out; wrt's letters are left free.
    ``settings`` gives the values of the settings symbols the ranges are written with."""
    twins = {x: Dummy(x.name, integer=True) for x in wrt.indices}
    ranges = {twins[x]: (0, sizes[x] - 1) for x in wrt.indices}
    local = sympy.diff(expr, wrt.xreplace(twins))
    total = local if seed is None else Sum(seed[tuple(out)] * local, *[(x, 0, sizes[x] - 1) for x in out])
    summed = _DeltaSums(ranges, settings or {}).sum_out(total)
    named = rebind(summed, set(twins)).xreplace({t: x for x, t in twins.items()})
    return sympy.factor_terms(named)  # 2/3 (a_k − y_k), not 2/3 a_k − 2/3 y_k


class _DeltaSums:
    """Sums of products holding Kronecker deltas, the deltas summed out where they can be.

    Σ_x δ(x − e, 0) · f(x) is f(e) when e stays inside x's range for every value of the
    letters it holds (x = v + 1 for a concatenation's second input); otherwise the delta
    stays, a condition under the sum (s·i + d·m − p = u). ``ranges`` are the free letters'
    (lowest, highest) values, ``settings`` the values of the settings symbols."""

    def __init__(self, ranges: Mapping[Symbol, tuple[int, int]], settings: Mapping[Symbol, int]) -> None:
        self.ranges = ranges
        self.values = {symbol: sympy.Integer(value) for symbol, value in settings.items()}

    def sum_out(self, expr: sympy.Expr) -> sympy.Expr:
        """Every sum in ``expr`` distributed over its terms, each term's deltas summed out."""
        if isinstance(expr, Sum):
            return self._sum_terms(self.sum_out(expr.function), list(expr.limits))
        if not expr.args or isinstance(expr, Indexed):
            return expr
        args = [self.sum_out(a) for a in expr.args]
        return expr if all(a is b for a, b in zip(args, expr.args)) else expr.func(*args)

    def _sum_terms(self, function: sympy.Expr, limits: list) -> sympy.Expr:
        return Add(*[self._sum_term(term, limits) for term in _terms(function)])

    def _sum_term(self, term: sympy.Expr, limits: list) -> sympy.Expr:
        """Σ over ``limits`` of one product: a sum it holds joins the sum; a delta that fixes
        a summed letter inside its range substitutes for it; the factors that do not depend
        on what is summed come out."""
        if term == 0:
            return sympy.S.Zero
        factors = Mul.make_args(term)
        summed = {x for x, *_ in limits}
        for f in factors:
            if isinstance(f, Sum) and not ({x for x, *_ in f.limits} & (term.free_symbols | summed)):
                rest = Mul(*[g for g in factors if g is not f])
                return self._sum_terms(rest * f.function, limits + list(f.limits))
        for f in factors:
            if isinstance(f, KroneckerDelta):
                for x, value in self._solutions(f, limits):
                    remaining = [limit for limit in limits if limit[0] != x]
                    return self._sum_term(term.xreplace({x: value}), remaining)
        if not limits:
            return term
        inside = [f for f in factors if f.free_symbols & summed]
        outside = Mul(*[f for f in factors if not f.free_symbols & summed])
        if not inside:
            return outside * Mul(*[hi - lo + 1 for _, lo, hi in limits])
        return outside * Sum(Mul(*inside), *limits)

    def _solutions(self, delta: KroneckerDelta, limits: list) -> list[tuple[Symbol, sympy.Expr]]:
        """Each summed letter x that ``delta`` fixes to a value inside x's range, with that
        value: x must come with coefficient ±1, and its value stay in range for every value
        of the other letters."""
        difference = delta.args[0] - delta.args[1]
        ranges = {**self.ranges, **{x: self._numbers(lo, hi) for x, lo, hi in limits}}
        found = []
        for x, lo, hi in limits:
            coefficient = difference.diff(x)
            if coefficient not in (1, -1) or (difference - coefficient * x).has(x):
                continue
            value = sympy.expand(x - difference / coefficient)
            span = _span(value.xreplace(self.values), ranges)
            low, high = ranges[x]
            if span is not None and low <= span[0] and span[1] <= high:
                found.append((x, value))
        return found

    def _numbers(self, low: sympy.Expr, high: sympy.Expr) -> tuple[int, int]:
        return int(sympy.sympify(low).xreplace(self.values)), int(sympy.sympify(high).xreplace(self.values))


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


def _span(expr: sympy.Expr, ranges: Mapping[Symbol, tuple[int, int]]) -> tuple[int, int] | None:
    """The least and greatest value of a linear index expression whose letters run over
    ``ranges``; None when it is not linear in them, or holds a letter without a range."""
    low = high = 0
    for term in Add.make_args(expr):
        coefficient, rest = term.as_coeff_Mul()
        if not coefficient.is_Integer:
            return None
        if rest == 1:
            low, high = low + coefficient, high + coefficient
        elif rest in ranges:
            ends = (coefficient * ranges[rest][0], coefficient * ranges[rest][1])
            low, high = low + min(ends), high + max(ends)
        else:
            return None
    return int(low), int(high)


def bounds(expr: sympy.Expr, sizes: Mapping[Symbol, int]) -> tuple[int, int]:
    """The least and greatest value of a linear index expression, each letter x running over
    0 ≤ x < sizes[x]."""
    span = _span(expr, {x: (0, size - 1) for x, size in sizes.items()})
    if span is None:
        raise ValueError(f"not a linear index expression in known letters: {expr}")
    return span


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


