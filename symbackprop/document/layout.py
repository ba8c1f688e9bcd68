"""How the handout lays out many equations: two short ones to a row, a budget of rows per
layer, and which nodes of a big layer are worth showing.

Imports ``graph`` and ``latex`` (and what they build on).
"""

from __future__ import annotations

from ..graph import LayerGraph
from ..latex import Row, aligned, tex_width


def grid(equations: list[tuple[str, list[Row]]]) -> str:
    """Equations as ``align`` rows; short one-row ones two to a row, as a table of results."""
    if len(equations) > 1 and all(
        len(rows) == 1 and tex_width(lhs) + tex_width(rows[0].tex) <= 18.0
        for lhs, rows in equations
    ):
        pairs = [equations[k : k + 2] for k in range(0, len(equations), 2)]
        return " \\\\\n".join(
            " & ".join(f"{lhs} &= {rows[0].tex}" for lhs, rows in pair) for pair in pairs
        )
    return " \\\\\n".join(aligned(lhs, rows) for lhs, rows in equations)


def budget(equations: list[tuple[str, list[Row]]], limit: int) -> tuple[list, int]:
    """The first equations that fit in ``limit`` rows (at least one, two when the limit allows),
    and how many are left."""
    shown, used = [], 0
    for lhs, rows in equations:
        if len(shown) >= min(2, limit) and used + len(rows) > limit:
            break
        shown.append((lhs, rows))
        used += len(rows)
    return shown, len(equations) - len(shown)


def spread(lg: LayerGraph, count: int) -> list[int]:
    """``count`` node indices of a layer worth showing: the first (a corner), one from the middle
    of the first map, the last, and evenly between."""
    total = len(lg.z)
    if total <= count:
        return list(range(total))
    shape = lg.output_shape
    middle = (shape[1] // 2) * shape[2] + shape[2] // 2 if len(shape) == 3 else total // 2
    chosen = [0, middle, total - 1]
    k = 1
    while len(set(chosen)) < count:
        chosen.append(round(k * (total - 1) / (count + 1)))
        k += 1
    return sorted(set(chosen))[:count] if count >= 3 else sorted(set(chosen[:count]))


__all__ = ["budget", "grid", "spread"]
