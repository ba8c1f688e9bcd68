"""Writing a formula out at concrete indices: every sum, max and bracket expanded, tensors
read from flat values (sympy symbols, to compare with the chain form; floats, to compare with
the reference).

Imports numpy, sympy, ``indexed`` and ``nodes`` (a max pool's brackets at concrete indices).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from itertools import product
from typing import Any

import numpy as np
import sympy
from sympy import Add, Indexed, IndexedBase, KroneckerDelta, Mul, Pow, Sum, Symbol

from ..indexed import IsFirstMax, Maximum, Spread
from ..nodes import window_max

Shape = tuple[int, ...]
Reader = Callable[[IndexedBase, tuple[int, ...]], Any]



def numbers(settings: Mapping[Symbol, int]) -> dict[Symbol, sympy.Integer]:
    return {s: sympy.Integer(v) for s, v in settings.items()}


def reader(tensors: Mapping[IndexedBase, tuple[str, Shape]], values: Mapping[str, Sequence],
            spreads: Sequence[Spread], settings: Mapping[Symbol, int]) -> Reader:
    """read(base, index): the entry of a tensor (its role's values, flat and row-major), None
    outside its bounds; a spread tensor (δ̂, Ŵ) reads its base, or 0 at an inserted zero."""
    spread = {s.hat: s for s in spreads}

    def read(base: IndexedBase, at: tuple[int, ...]) -> Any:
        if base in spread:
            s = spread[base]
            source = s.source(at, tuple(integer(f, settings) for f in s.factors))
            return 0 if source is None else read(s.base, source)
        role, shape = tensors[base]
        if not all(0 <= i < n for i, n in zip(at, shape)):
            return None
        return values[role][int(np.ravel_multi_index(at, shape))]

    return read


def flat(values: Any) -> list:
    """Any array or sequence as a flat list, row-major: sympy objects, or Python floats."""
    if isinstance(values, sympy.NDimArray):
        return sympy.flatten(values.tolist()) if values.rank() else [values[()]]
    entries = list(np.asarray(values, dtype=object).ravel())
    return entries if any(isinstance(v, sympy.Basic) for v in entries) else [float(v) for v in entries]


def evaluate(expr: sympy.Expr, env: Mapping[Symbol, int], read: Reader, numeric: bool = False) -> Any:
    """``expr`` with its letters and settings at ``env``'s values, every sum, max and bracket
    written out, tensors read through ``read`` (0 outside their bounds). ``numeric``: the
    tensors hold numbers, and the arithmetic is done in floats."""

    def value(e: sympy.Expr, env: Mapping[Symbol, int]) -> Any:
        if e in env:
            return env[e]
        if e.is_Number:
            return float(e) if numeric else e
        if isinstance(e, Indexed):
            entry = read(e.base, _place(e.indices, env))
            return 0 if entry is None else entry
        if isinstance(e, KroneckerDelta):
            left, right = _place(e.args, env)
            return int(left == right)
        if isinstance(e, Sum):
            return sum((value(e.function, inner) for inner in _sum_envs(e.limits, e.function, env)), 0)
        if isinstance(e, Mul):
            result = 1
            for f in sorted(e.args, key=lambda f: not isinstance(f, KroneckerDelta)):  # zeros first
                result *= value(f, env)
                if result == 0:
                    return 0
            return result
        if isinstance(e, Pow):
            return value(e.base, env) ** value(e.exp, env)
        if isinstance(e, Maximum):
            values = [v for _, v in _entries_of(e, env, read)]
            if len(values) == 1:
                return values[0]
            return max(values) if numeric else window_max(*values)
        if isinstance(e, IsFirstMax):
            entries = _entries_of(e.window, env, read)
            places, values = [p for p, _ in entries], [v for _, v in entries]
            place = _place(e.place, env)
            if place not in places:
                return 0
            if numeric:
                return int(places.index(place) == int(np.argmax(values)))  # argmax: the first maximum
            if len(values) == 1:
                return 1
            # nodes.window_max's brackets, [v_j > v_k] before the place and [v_j ≥ v_k] after it
            return window_max(*values, evaluate=False).fdiff(places.index(place) + 1)
        result = e.func(*[value(a, env) for a in e.args])
        if not numeric:
            return result
        if not np.isfinite(float(result)):  # e^800: inf, and inf · 0 would pass for a number
            raise OverflowError(f"{e.func.__name__} of these values is not a finite float: {float(result)}")
        return float(result)

    result = value(expr, env)
    return float(result) if numeric else sympy.sympify(result)


def _place(indices: Sequence[sympy.Expr], env: Mapping[Symbol, int]) -> tuple[int, ...]:
    return tuple(integer(i, env) for i in indices)


def integer(e: sympy.Expr, env: Mapping[Symbol, int]) -> int:
    """An index expression's value: a sum of integer × product of letters and settings."""
    total = 0
    for coefficient, letters in _polynomial(e):
        for x in letters:
            coefficient *= env[x]
        total += coefficient
    return total


@cache
def _polynomial(e: Any) -> tuple[tuple[int, tuple[Symbol, ...]], ...]:
    """s·i + d·(K − 1) − p as ((1, (s, i)), (1, (d, K)), (−1, (d,)), (−1, (p,))), read once."""
    terms = []
    for term in Add.make_args(sympy.expand(sympy.sympify(e))):
        coefficient, rest = term.as_coeff_Mul()
        letters = [] if rest == 1 else [f for f in Mul.make_args(rest)]
        terms.append((int(coefficient), tuple(letters)))
    return tuple(terms)


def _sum_envs(limits: Sequence, function: sympy.Expr, env: Mapping[Symbol, int]) -> Iterator[dict]:
    """The values of a sum's letters where its terms can be nonzero: a Kronecker delta that
    fixes a summed letter (s·i + d·m − p = u fixes i, given m) is solved for it rather than
    every value tried — a convolution's input gradient at one index of a 16×16 map then
    tries 72 places, not 18,432."""
    letters = [x for x, *_ in limits]
    ranges = {x: range(integer(lo, env), integer(hi, env) + 1) for x, lo, hi in limits}
    solved: dict[Symbol, tuple] = {}  # letter → the delta's terms that fix it, in solving order
    needed: set[Symbol] = set()  # the letters the deltas solved so far read: known before them
    for delta in (f for f in Mul.make_args(function) if isinstance(f, KroneckerDelta)):
        terms = _polynomial(delta.args[0] - delta.args[1])
        inside = [[x for x in term if x in ranges] for _, term in terms]
        if any(len(found) > 1 for found in inside):
            continue  # a product of summed letters: not solved, every value tried
        held = list(dict.fromkeys(x for found in inside for x in found))
        chosen = next((x for x in held if x not in solved and x not in needed), None)
        if chosen is not None:
            solved[chosen] = terms
            needed.update(x for x in held if x != chosen)
    tried = [x for x in letters if x not in solved]
    for values in product(*(ranges[x] for x in tried)):
        yield from _solved(list(solved.items()), {**env, **dict(zip(tried, values))}, ranges)


def _solved(deltas: list[tuple[Symbol, tuple]], env: dict, ranges: Mapping[Symbol, range]) -> Iterator[dict]:
    """``env`` with each delta's letter set to the value that makes the delta's terms sum to
    zero, in order; nothing where a delta has no such value in its letter's range."""
    if not deltas:
        yield env
        return
    (x, terms), rest_of = deltas[0], deltas[1:]
    scale = rest = 0
    for coefficient, letters in terms:
        for y in letters:
            if y != x:
                coefficient *= env[y]
        if x in letters:
            scale += coefficient
        else:
            rest += coefficient
    if scale == 0:  # the delta does not hold x here: it holds for every x, or for none
        values = ranges[x] if rest == 0 else range(0)
    else:
        values = [-rest // scale] if rest % scale == 0 and -rest // scale in ranges[x] else []
    for v in values:
        yield from _solved(rest_of, {**env, x: v}, ranges)


def _window_envs(limits: Sequence, env: Mapping[Symbol, int]) -> Iterator[dict]:
    letters = [x for x, *_ in limits]
    ranges = [range(integer(lo, env), integer(hi, env) + 1) for _, lo, hi in limits]
    for values in product(*ranges):
        yield {**env, **dict(zip(letters, values))}


def _entries_of(window: Maximum, env: Mapping[Symbol, Any], read: Reader) -> list[tuple[tuple, Any]]:
    """A max's entries inside the input, in window order (row by row), with their places:
    the places outside read −∞ and never win, so they are left out."""
    entries = []
    for inner in _window_envs(window.limits, env):
        value = read(window.function.base, _place(window.function.indices, inner))
        if value is not None:
            entries.append((_place([x for x, *_ in window.limits], inner), value))
    return entries

