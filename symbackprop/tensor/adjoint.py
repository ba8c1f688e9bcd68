"""Two operations related by their derivatives: a transposed convolution's forward is the input
gradient of the convolution it transposes, and its input gradient is that convolution's forward
(the "full convolution with the flipped kernel" of the article's reference, read both ways).

``relations(d, l)`` derives both sides with the tensor view — layer l's formulas, and those of the
convolution its operation names (``Op.adjoint``), on a network of that one layer — and checks each
pair equal at every index, written out over the same random numbers: the layer's input standing for
the convolution's δ, its δ for the convolution's input, the same weights W[c, o, m, n] (torch
lays a transposed convolution's weights out as the convolution's). Nothing here asks which
operation a layer is: an operation that names no adjoint has no relations.

Imports numpy, ``network``, ``ops``, ``engine`` (the type of what it reads) and ``layer``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import product
from math import prod

import numpy as np

from ..engine import Engine as Derivation
from ..network import Network
from ..ops.wiring import Input
from .formula import Formula
from .layer import LayerFormulas
from .printer import Names


@dataclass(frozen=True)
class Relation:
    """``formula`` of the layer equals ``twin`` of the adjoint convolution, with ``roles``
    telling which tensor of the one stands for which of the other; ``holds`` as checked."""

    statement: str
    formula: Formula  # the layer's (its forward, bias left out; or its input gradient)
    twin: Formula  # the convolution's (its input gradient; or its forward)
    holds: bool


class _Adjoint:
    """The network of one layer that ``Network`` builds for the adjoint operation: what
    ``LayerFormulas`` reads of a derivation."""

    def __init__(self, network: Network) -> None:
        self.network = network


def adjoint_formulas(d: Derivation, number: int) -> tuple[list[Formula], list[Formula], tuple[str, ...]] | None:
    """Layer ``number``'s formulas and those of its operation's adjoint (on a network of that one
    layer), both with their settings as numbers, and the parameters the adjoint declares (the
    weights both read, by prefix); None when the operation has none."""
    net = d.network
    found = net.layers[number - 1].adjoint(net.input_shape_of(number))
    if found is None:
        return None
    op, shape = found
    x = Input(shape)
    twin_net = Network(inputs=x, outputs=op(x), loss="sse")
    ours = [f.concrete() for f in LayerFormulas(d, number).formulas()]
    theirs = [replace(f.concrete(), names=_tilded(f.names)) for f in LayerFormulas(_Adjoint(twin_net), 1).formulas()]  # type: ignore[arg-type]
    return ours, theirs, tuple(p.prefix for p in op.parameters)


def _tilded(names: Names) -> Names:
    """The adjoint's tensors printed with a tilde (x̃, z̃, δ̃, W̃), apart from the layer's own."""
    tex = {label: TILDED.get(written, written) for label, written in names.tex.items()}
    return replace(names, tex=tex)


TILDED = {"x": r"\tilde{x}", "z^{(1)}": r"\tilde{z}", "a^{(1)}": r"\tilde{a}", r"\delta^{(1)}": r"\tilde{\delta}",
          "W^{(1)}": r"\tilde{W}"}


def relations(d: Derivation, number: int) -> list[Relation]:
    """The forward of layer ``number`` as its adjoint's input gradient, and its input gradient as
    its adjoint's forward, each checked at every index; [] for an operation without an adjoint."""
    found = adjoint_formulas(d, number)
    if found is None:
        return []
    ours, theirs, shared = found
    mine = {f.kind: f for f in ours if type(f) is Formula}
    twin = {f.kind: f for f in theirs if type(f) is Formula}
    return [
        Relation("its forward (without its bias) is the input gradient of the convolution it transposes, "
                 "its input standing for that convolution's δ",
                 mine["forward"], twin["input"], agree(mine["forward"], {"input": "delta"}, twin["input"], shared)),
        Relation("its input gradient is the forward of that convolution, run on its δ",
                 mine["input"], twin["forward"], agree(mine["input"], {"delta": "input"}, twin["forward"], shared)),
    ]


def agree(formula: Formula, roles: dict[str, str], twin: Formula, shared: tuple[str, ...], seed: int = 0) -> bool:
    """Whether ``formula`` equals ``twin`` at its ``checked_positions``, both written out over the same numbers
    (random, so that a transposed kernel or a shifted index cannot agree by chance): the tensor of
    ``formula`` in role r read as the twin's tensor in role ``roles[r]``, those in the roles
    ``shared`` (the weights) as the twin's of the same role, every other tensor (a bias) read as
    0."""
    if [size for _, size in formula.letters] != [size for _, size in twin.letters]:
        return False
    shapes = {role: shape for role, shape in formula.tensors.values()}
    twin_shapes = {role: shape for role, shape in twin.tensors.values()}
    rng = np.random.default_rng(seed)
    values, twin_values = {}, {}
    for role, twin_role in {**roles, **{r: r for r in shared if r in shapes and r in twin_shapes}}.items():
        if shapes.get(role) != twin_shapes.get(twin_role):
            return False
        numbers = [float(v) for v in rng.normal(size=prod(shapes[role]))]
        values[role], twin_values[twin_role] = numbers, numbers
    for role, shape in shapes.items():
        values.setdefault(role, [0.0] * prod(shape))
    return all(
        abs(float(formula.at(position, values)) - float(twin.at(position, twin_values))) <= 1e-9
        for position in checked_positions(formula)
    )


def checked_positions(formula: Formula, per_letter: int = 4) -> list[tuple[int, ...]]:
    """The indices a relation is checked at: every index of a small layer; of a larger one, each
    letter at its first and last values and evenly between (``per_letter`` in all), so that the
    borders, where the padding and the stride's remainders act, are always among them."""
    spreads = []
    for _, size in formula.letters:
        count = min(size, per_letter)
        spreads.append(sorted({round(k * (size - 1) / max(1, count - 1)) for k in range(count)}))
    return list(product(*spreads))


__all__ = ["Relation", "adjoint_formulas", "agree", "relations"]
