"""The one exception users see for bad network descriptions.

Imports nothing of the package, so every layer of it can raise SpecError.
"""


class SpecError(ValueError):
    """A network description (Python or YAML/JSON) that cannot be built.

    The message names where the problem is ("layer 2 (conv): ...") and what is wrong.
    """
