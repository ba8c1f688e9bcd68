"""What every section of the handout reads: the network, its derivation, its worked example
and the level of detail, and the questions about the graph that the sections ask.

The sections never count layers to find what a layer reads or who reads it: they ask the
network (``sources``, ``consumers``) and the engine (the terms each reader sends back), so
that a fork, a join or a shortcut is written as what it is. Parameters are named by what
their operation declares (``Op.parameters``: a prefix and a role), never by a letter.

Imports ``network``, ``derivation``, ``engine``, ``graph``, ``ops`` (and what they build on),
sympy and the document's ``common`` and ``example``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import sympy

from ..derivation import Derivation
from ..engine import Term, _flat
from ..graph import LayerGraph
from ..network import Network
from ..ops.base import BIAS
from .common import Detail
from .example import WorkedExample


@dataclass(frozen=True)
class LayerParameter:
    """One parameter of a layer, as documents write it."""

    name: str  # the network's name: "W3"
    tex: str  # W^{(3)}
    bias: bool  # declared a bias (added to the sums), not weights
    elements: list = field(compare=False)  # its symbols, row-major


def parameter_tex(network: Network, name: str) -> str:
    """How documents write parameter (or buffer) ``name``: its operation's prefix and its layer,
    W^{(3)}, or the letter it declares where the prefix is a word (\\gamma^{(2)} for "gamma2")."""
    owners = {**network.parameter_owner, **network.buffer_owner}
    number, prefix = owners[name]
    op = network.layers[number - 1]
    declared = next(p for p in (*op.parameters, *op.buffers) if p.prefix == prefix)
    letter = prefix if not declared.tex or declared.tex.lower() == prefix.lower() else declared.tex
    return f"{letter}^{{({number})}}"


def layer_parameters(d: Derivation, number: int) -> list[LayerParameter]:
    """Layer ``number``'s parameters in the order its operation declares them (weights first)."""
    net = d.network
    op = net.layers[number - 1]
    names = net.layer_parameters(number)
    return [
        LayerParameter(
            names[p.prefix], parameter_tex(net, names[p.prefix]), p.role == BIAS.role,
            _flat(d.graph.params[names[p.prefix]]),
        )
        for p in op.parameter_declared(net.input_shape_of(number))
    ]


def weights_of(d: Derivation, number: int) -> LayerParameter | None:
    """Layer ``number``'s weights (its first parameter that is not a bias), or None."""
    return next((p for p in layer_parameters(d, number) if not p.bias), None)


@dataclass
class Context:
    """A handout's network, derivation, worked example and detail, shared by its sections."""

    network: Network
    detail: Detail
    d: Derivation  # of ``network`` itself (g and L as given)
    example: WorkedExample  # with g and L made concrete where generic
    article: bool  # the article's own network: its formula numbers
    detailed: set = field(default_factory=set)  # the weights derived in full
    coupled: bool = False  # the network couples samples in train mode: ``network`` is its eval mode

    @cached_property
    def layers(self) -> list[LayerGraph]:
        return list(self.d.graph.layers)

    @property
    def chain(self) -> bool:
        return self.network.is_chain

    def parameters(self, number: int) -> list[LayerParameter]:
        return layer_parameters(self.d, number)

    def weights(self, number: int) -> LayerParameter | None:
        return weights_of(self.d, number)

    def readers(self, number: int) -> tuple[int, ...]:
        """The layers that read layer ``number``'s outputs (0: the input)."""
        return self.network.consumers(number)

    def paths(self, terms: list[Term]) -> dict[int, list[Term]]:
        return paths_of(self.d, terms)


def paths_of(d: Derivation, terms: list[Term]) -> dict[int, list[Term]]:
    """The terms of an upstream gradient grouped by the layer that sent them back, in layer
    order: one group per path to the loss (the article's rule (20))."""
    grouped: dict[int, list[Term]] = {}
    for term in terms:
        grouped.setdefault(_reader_of(d)[term.z], []).append(term)
    return dict(sorted(grouped.items()))


@lru_cache(maxsize=4)
def _reader_of(d: Derivation) -> dict[sympy.Symbol, int]:
    """Each node a term can come from (a layer's z, or its outputs without activation) → its
    layer."""
    return {node.symbol: lg.number for lg in d.graph.layers for node in lg.z}


def forks(network: Network) -> list[int]:
    """The layers (not the input) whose outputs several layers read."""
    return [l for l in range(1, len(network.layers) + 1) if len(network.consumers(l)) > 1]


def via_tex(lhs: str, reader: int) -> str:
    """The part of a gradient that comes back through layer ``reader``:
    ∂L/∂a|_{via layer k}."""
    return rf"\left.{lhs}\right|_{{\text{{via }}{reader}}}"


__all__ = [
    "Context", "LayerParameter", "forks", "layer_parameters", "parameter_tex", "paths_of", "via_tex",
    "weights_of",
]
