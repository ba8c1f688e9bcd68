"""How a document writes numbers: one format for each kind of quantity, throughout.

A document shows three kinds of numbers: the given ones (inputs, targets and weights, drawn
with one decimal: written as drawn, 0.9, −0.05), values computed from them (z, a, local
derivatives, the loss) and gradients (∂L/∂ of anything). A computed number is written with
four significant digits, its trailing zeros kept (0.2400, 1.000: four digits, not two),
fixed-point (0.4925, −0.03000) unless some number of that kind is too small or too large
for it, and then scientific for all of them (−5.935 × 10⁻⁵ and −5.900 × 10⁻⁴ side by side,
never −0.00059 beside the first). Values are of order one and stay fixed-point down to
10⁻⁶; gradients shrink layer by layer and go scientific below 10⁻³.

``NumberFormat.rounded`` is the number a format prints, as a float: what a reader who works
with the printed numbers holds, so that a key can compute its answers from them.

Imports numpy alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

DIGITS = 4  # significant digits
VALUE_RANGE = (1e-6, 1e5)  # magnitudes written fixed-point; outside, the kind goes scientific
GRADIENT_RANGE = (1e-3, 1e5)
NOISE = 1e-12  # smaller magnitudes are rounding noise (a sum of one-decimal products that is 0): 0


@dataclass(frozen=True)
class NumberFormat:
    """Numbers of one kind, as LaTeX: ``fmt(0.004923)`` → ``0.004923`` or ``4.923 \\times 10^{-3}``."""

    scientific: bool = False
    digits: int = DIGITS
    trailing: bool = True  # keep the zeros that count among the significant digits

    @classmethod
    def fitting(
        cls, values: Iterable[float], fixed: tuple[float, float] = VALUE_RANGE, digits: int = DIGITS
    ) -> NumberFormat:
        """Fixed-point when every nonzero magnitude (rounded) lies in the range ``fixed``,
        else scientific."""
        magnitudes = np.abs(np.asarray(list(values), dtype=float))
        magnitudes = magnitudes[magnitudes > NOISE]
        rounded = np.array([float(f"{m:.{digits}g}") for m in magnitudes])
        low, high = fixed
        return cls(scientific=bool(np.any((rounded < low) | (rounded >= high))), digits=digits)

    @classmethod
    def given(cls) -> NumberFormat:
        """Numbers written as they were given (one-decimal draws): 0.9, −0.05, no zeros added."""
        return GIVEN

    def rounded(self, value: float) -> float:
        """The number this format prints for ``value``, as a float: 0.24003 → 0.24."""
        if abs(value) <= NOISE:
            return 0.0
        return float(f"{value:.{self.digits - 1}e}")

    def __call__(self, value: float) -> str:
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value} as a number of a document")
        if abs(value) <= NOISE:
            return "0"
        mantissa, exponent = f"{value:.{self.digits - 1}e}".split("e")
        exponent_ = int(exponent)
        if float(mantissa) == 0:
            return "0"
        trim = _trim if not self.trailing else _sign
        if self.scientific:
            text = trim(mantissa)
            return text if exponent_ == 0 else rf"{text} \times 10^{{{exponent_}}}"
        decimals = max(0, self.digits - 1 - exponent_)
        return trim(f"{float(mantissa) * 10.0**exponent_:.{decimals}f}")

    def many(self, values: Iterable[float]) -> list[str]:
        return [self(v) for v in values]


def _trim(text: str) -> str:
    """1.500 → 1.5, 2.000 → 2, -0.0 → 0."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "0") else text


def _sign(text: str) -> str:
    """The digits as they are; only a zero loses its sign."""
    return "0" if text.lstrip("-").strip("0.") == "" else text


GIVEN = NumberFormat(trailing=False)  # numbers as they were given


@dataclass(frozen=True)
class Formats:
    """A document's number formats: ``value`` and ``gradient`` for what it computes, ``given``
    for what it was given."""

    value: NumberFormat
    gradient: NumberFormat
    given: NumberFormat = GIVEN


__all__ = ["DIGITS", "GRADIENT_RANGE", "VALUE_RANGE", "Formats", "NumberFormat"]
