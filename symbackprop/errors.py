"""The one exception users see for bad network descriptions, and how its messages quote values.

Imports nothing of the package, so every layer of it can raise SpecError.
"""

from __future__ import annotations

import reprlib
from math import floor, log10


class SpecError(ValueError):
    """A network description (Python or YAML/JSON) that cannot be built.

    The message names where the problem is ("layer 2 (conv): ...") and what is wrong.
    """


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlong = 40
_SHORT.maxlevel = 3
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6


def shown(value: object) -> str:
    """``repr(value)`` cut short, for error messages: a spec can hold a huge string, a number
    of a thousand digits or a self-referencing YAML structure, and a message stays one
    readable line.

    >>> shown("a" * 100)
    "'aaaaaaaaaaaaaaaaaaaaaaaaaa...aaaaaaaaaaaaaaaaaaaaaaaaaaaa'"
    >>> shown([1, [2, [3, [4, [5]]]]])
    '[1, [2, [3, [...]]]]'
    """
    try:
        return _SHORT.repr(value)
    except ValueError:  # an int past Python's limit on digits it converts to text
        return "<a number of thousands of digits>"


class DegenerateSetup(UserWarning):
    """A network that builds but cannot learn as written — a bounded activation (sigmoid,
    tanh) on the output before a loss that reads logits (cross_entropy's softmax,
    binary_cross_entropy's sigmoid). The message is one line and says what to do."""


class NearKink(UserWarning):
    """``verify`` could not draw a point clear of every kink (a ReLU's bend, a max pool's
    near-tie): finite differences there may straddle one and disagree for that reason alone."""


class OverBudget(Exception):
    """Work that would pass a limit: a command's estimate, or a closed form too large to build.
    The message is one line, says how large, and names the flag or argument that lifts it."""


def count(n: int) -> str:
    """'1,234,567', or '3.1e+45' past a trillion (closed forms can be astronomically large,
    beyond the digits Python turns into text)."""
    if n < 10**12:
        return f"{n:,}"
    exponent = (n.bit_length() - 1) * log10(2) + log10(n / 2 ** (n.bit_length() - 1))
    whole = floor(exponent)
    return f"{10 ** (exponent - whole):.1f}e+{whole}"


def capped(n: int) -> float:
    """``n`` as a float that cannot overflow (costs are only estimates)."""
    return float(min(n, 10**30))


def duration(seconds: float) -> str:
    """'3 s', '4.2 min', '1.5 h', '12 days'."""
    if seconds < 60:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    if seconds < 86400 * 365 * 100:
        return f"{seconds / 86400:,.0f} days"
    return "more than a century"


def size(count: float) -> str:
    """Bytes as '12 MB', '3.4 GB'."""
    if count < 1e9:
        return f"{max(count / 1e6, 1):.0f} MB"
    if count < 1e15:
        return f"{count / 1e9:,.1f} GB"
    return "more memory than any machine has"
