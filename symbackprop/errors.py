"""The one exception users see for bad network descriptions, and how its messages quote values.

Imports nothing of the package, so every layer of it can raise SpecError.
"""

from __future__ import annotations

import reprlib


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
