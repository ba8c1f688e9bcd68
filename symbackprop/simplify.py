"""Bounded tidying of closed forms: named rewrites, applied in order, never a blind simplify().

Each rewrite is cheap on small expressions and is tried only while the
expression is small (``MAX_SIZE`` tree nodes); a rewrite is kept only when it
makes the expression no larger. Larger expressions come back unchanged, so
tidying can never hang.

Imports sympy only.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy

MAX_SIZE = 600  # tree nodes; beyond this the closed form is returned as it is


def _size(expr: sympy.Basic) -> int:
    return sympy.count_ops(expr, visual=False) + len(expr.free_symbols)


REWRITES: list[tuple[str, Callable[[sympy.Expr], sympy.Expr]]] = [
    ("pull out common factors", lambda e: sympy.factor_terms(e, radical=False)),
    ("gather like powers", sympy.powsimp),
]


class SimplifyWarning(UserWarning):
    """Some expressions were too large to tidy and came back as they were."""


def small_enough(expr: sympy.Basic, max_size: int = MAX_SIZE) -> bool:
    """Whether ``tidy`` works on ``expr`` (at most ``max_size`` tree nodes)."""
    return _tree_size(expr, limit=max_size) <= max_size


def tidy(expr: sympy.Expr, max_size: int = MAX_SIZE) -> sympy.Expr:
    """``expr`` after each rewrite in ``REWRITES`` that does not make it larger;
    ``expr`` itself when it has more than ``max_size`` tree nodes (see ``small_enough``).

    >>> import sympy
    >>> a, b, c = sympy.symbols("a b c")
    >>> tidy(a*b + a*c)
    a*(b + c)
    """
    if not small_enough(expr, max_size):
        return expr
    best, best_size = expr, _size(expr)
    for _name, rewrite in REWRITES:
        candidate = rewrite(best)
        candidate_size = _size(candidate)
        if candidate_size <= best_size:
            best, best_size = candidate, candidate_size
    return best


def _tree_size(expr: sympy.Basic, limit: int) -> int:
    """Tree nodes of ``expr``, counting stops once past ``limit`` (the tree may be huge)."""
    count = 0
    stack = [expr]
    while stack and count <= limit:
        e = stack.pop()
        count += 1
        stack.extend(e.args)
    return count
