"""The tensor view's front: ``formulas(d, l)``, layer l's general formulas, and
``scalar_values(d, l)``, the scalar graph's symbols to expand them over.

Imports sympy, ``engine`` (the type of what it reads), ``formula`` and ``layer``.
"""

from __future__ import annotations

from dataclasses import replace

import sympy

from ..engine import Engine as Derivation
from .formula import Fact, Formula
from .layer import LayerFormulas, input_role


def formulas(d: Derivation, number: int, general: bool = True) -> list[Formula]:
    """Layer ``number``'s general formulas (1-based), derived from its index form: forward,
    activation, the loss's gradient (last layer), δ, ∂L/∂W, ∂L/∂b and ∂L/∂(input), each
    fact after the formula it restates. ``general=False`` writes the settings as numbers."""
    layers = d.network.layers
    if not (isinstance(number, int) and 1 <= number <= len(layers)):
        raise ValueError(f"layer must be 1..{len(layers)}, got {number!r}")
    result = LayerFormulas(d, number).formulas()
    if general:
        return result
    concrete: dict[int, Formula] = {}  # each formula's concrete form, by the general one's id
    for f in result:
        written = f.concrete()
        if isinstance(f, Fact):  # the fact restates the concrete formula of the same list
            written = replace(written, restates=concrete[id(f.restates)])
        concrete[id(f)] = written
    return list(concrete.values())


def scalar_values(d: Derivation, number: int) -> dict[str, list[sympy.Symbol]]:
    """The scalar graph's symbols of layer ``number`` by role, for ``Formula.at``: expanded
    over them, a formula is written as the chain form is (δ as ∂L/∂z symbols)."""
    g = d.graph
    lg = g.layers[number - 1]
    values = {
        **{input_role(k): list(g.outputs_of(s)) for k, s in enumerate(d.network.sources[number - 1])},
        "output": [node.symbol for node in lg.z],
        "activation": list(g.outputs_of(number)),
        "upstream": list(lg.upstream),
        "delta": list(lg.z_upstream if lg.activated else lg.upstream),
        "y": list(g.y),
    }
    for prefix, name in d.network.layer_parameters(number).items():
        values[prefix] = sympy.flatten(g.params[name].tolist())
    return values
