"""The tensor view's front: ``formulas(d, l)``, layer l's general formulas, and
``scalar_values(d, l)``, the scalar graph's symbols to expand them over.

Imports sympy, ``engine`` (the type of what it reads), ``formula``, ``layer`` and ``fork``.
"""

from __future__ import annotations

from dataclasses import replace

import sympy

from ..engine import Engine as Derivation
from .fork import upstream_formula
from .formula import Fact, Formula
from .layer import LayerFormulas, input_role


def formulas(d: Derivation, number: int, general: bool = True) -> list[Formula]:
    """Layer ``number``'s general formulas (1-based), derived from its index form: forward,
    activation, the loss's gradient (last layer) — or, for a layer that several layers read,
    its upstream gradient, the sum of their parts (``upstream_formula``) — δ, ∂L/∂W, ∂L/∂b and
    ∂L/∂(input), each fact after the formula it restates. ``general=False`` writes the
    settings as numbers."""
    layers = d.network.layers
    if not (isinstance(number, int) and 1 <= number <= len(layers)):
        raise ValueError(f"layer must be 1..{len(layers)}, got {number!r}")
    result = LayerFormulas(d, number).formulas()
    if len(d.network.consumers(number)) > 1:  # before δ, which it feeds: forward, activation, upstream
        at = next(k for k, f in enumerate(result) if f.kind == "delta")
        result.insert(at, upstream_formula(d, number))
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
    over them, a formula is written as the chain form is (δ as ∂L/∂z symbols). Where several
    layers read it, the tensors of its upstream formula too, by name ("delta2", "W2", "a1");
    ``number`` 0 gives those of the input's upstream formula alone."""
    g, net = d.graph, d.network
    values: dict[str, list[sympy.Symbol]] = {}
    if number > 0:
        lg = g.layers[number - 1]
        values |= {
            **{input_role(k): list(g.outputs_of(s)) for k, s in enumerate(net.sources[number - 1])},
            "output": [node.symbol for node in lg.z],
            "activation": list(g.outputs_of(number)),
            "upstream": list(lg.upstream),
            "delta": list(lg.z_upstream if lg.activated else lg.upstream),
            "y": list(g.y),
        }
        for prefix, name in net.layer_parameters(number).items():
            values[prefix] = sympy.flatten(g.params[name].tolist())
    readers = net.consumers(number) if number < len(net.layers) else ()
    if number == 0 or len(readers) > 1:
        values |= {"x" if number == 0 else f"a{number}": list(g.outputs_of(number))}
        for reader in readers:
            values |= named_values(d, reader)
    return values


def named_values(d: Derivation, number: int) -> dict[str, list[sympy.Symbol]]:
    """Layer ``number``'s tensors by name, the scalar graph's symbols of each: "a2" (or "z2"
    and "a2"), "delta2" (∂L/∂z), "dL_da2", each parameter ("W2", "b2")."""
    g, net = d.graph, d.network
    lg = g.layers[number - 1]
    outputs = list(g.outputs_of(number))
    values = {f"a{number}": outputs, f"dL_da{number}": list(lg.upstream),
              f"delta{number}": list(lg.z_upstream if lg.activated else lg.upstream)}
    if lg.activated:
        values[f"z{number}"] = [node.symbol for node in lg.z]
    for name in net.layer_parameters(number).values():
        values[name] = sympy.flatten(g.params[name].tolist())
    return values
