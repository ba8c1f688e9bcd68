"""The upstream gradient of a layer's output in index form: the sum, over the layers that read
it, of the part each sends back — the article's rule (20) for a tensor read by several layers.

A layer l read by layers r₁, r₂, … gets

    ∂L/∂a^{(l)}_{c,u,v} = ∂L/∂a^{(l)}_{c,u,v} |_{via r₁} + ∂L/∂a^{(l)}_{c,u,v} |_{via r₂} + …

where each part is the reader's own input formula (``LayerFormulas.input_formula``), derived
from its operation's index form: nothing here is typed. Each part is written with the letters
of the tensor's own shape (c, u, v for an image, i for a vector); a reader that takes it
flattened (a dense layer) reads index c·H·W + u·W + v. Each reader's settings carry its
number (s^{(2)}, p^{(3)}): two convolutions reading one tensor may have different strides.
The tensors of several layers meet in the formula, so ``Formula.at`` reads each by its name
(``"a1"``, ``"delta2"``, ``"W2"``, ``"x"``), not by a role of one layer.

Imports sympy, ``engine`` (the type of what it reads), ``indexed``, ``latex`` (to print a
settings symbol), ``calculus``, ``formula``, ``layer`` and ``printer``.
"""

from __future__ import annotations

from math import prod
from typing import Any

import sympy
from sympy import Dummy, Indexed, IndexedBase, Symbol

from ..engine import Engine as Derivation
from ..indexed import index
from ..latex import NotationPrinter
from .calculus import rebind
from .formula import Formula
from .layer import LayerFormulas, listed
from .printer import Names


def upstream_formula(d: Derivation, number: int) -> Formula:
    """∂L/∂a^{(number)} (∂L/∂x for 0) in index form, kind "upstream": the sum of what every
    layer reading it sends back, each part derived from that layer's operation.

    >>> import symbackprop as sb
    >>> x = sb.Input((1, 3, 3))
    >>> h = sb.Conv2D(kernel_size=1, activation="tanh")(x)
    >>> net = sb.Network(inputs=x, outputs=sb.Dense(units=2)(sb.Add()(h, sb.Sigmoid()(h))), loss="sse")
    >>> print(upstream_formula(net.derive(), 1).latex())
    \\frac{\\partial L}{\\partial a^{(1)}_{c,u,v}} = \\delta^{(2)}_{c,u,v} \\cdot a^{(2)}_{c,u,v} \\cdot \\left(1 - a^{(2)}_{c,u,v}\\right) + \\delta^{(3)}_{c,u,v}
    """
    net = d.network
    if not (isinstance(number, int) and 0 <= number < len(net.layers)):
        raise ValueError(
            f"layer must be 0..{len(net.layers) - 1} (0: the input; layer {len(net.layers)}, the "
            f"output, starts from the loss's gradient), got {number!r}"
        )
    readers = net.consumers(number)
    shape = net.shapes[number]
    letters = index("c u v") if len(shape) == 3 else index("i")
    label = "x" if number == 0 else f"a{number}"
    tex = "x" if number == 0 else f"a^{{({number})}}"
    gradient = IndexedBase(Symbol(f"dL_d{label}"))
    names: dict[str, Any] = {"tex": {gradient.label: tex}, "partial": {gradient.label}, "rank": {}, "order": {}}
    tensors: dict[IndexedBase, tuple[str, tuple[int, ...]]] = {}
    settings: dict[Symbol, int] = {}
    parts = []
    for place, reader in enumerate(readers):
        part = LayerFormulas(d, reader).input_formula(number)
        qualified = _qualified(part.settings, reader)
        rhs = _in_letters(part, letters, shape).xreplace(qualified)
        settings |= {qualified[s]: value for s, value in part.settings.items()}
        names["tex"] |= dict(part.names.tex) | {q: _qualified_tex(s, reader) for s, q in qualified.items()}
        names["partial"] |= part.names.partial
        names["rank"] |= dict(part.names.rank)
        for element in rhs.atoms(Indexed):
            base, own_shape = element.base, part.tensors[element.base][1]
            if tensors.get(base, (None, own_shape))[1] != own_shape:  # read flattened here
                flat = IndexedBase(Symbol(f"{base.label}_flat"))
                names["tex"][flat.label] = part.names.tex[base.label]
                rhs = rhs.xreplace({base: flat})
                base = flat
            tensors[base] = (str(element.base.label), own_shape)
            if str(base.label) != label:  # the reader's own tensors: its part goes in its place
                names["order"].setdefault(base.label, place)
        parts.append(rhs)
    if len(readers) > 1:
        note = (f"the article's rule (20): layers {listed(readers)} read {'the input' if number == 0 else 'it'}, "
                "and its gradient is the sum of the parts they send back, each their own input "
                "gradient")
    else:
        note = f"layer {readers[0]} alone reads it: its input gradient"
    return Formula(
        "upstream", gradient[letters], sympy.Add(*parts), tuple(zip(letters, shape)), tensors, settings,
        Names(names["tex"], frozenset(names["partial"]), names["rank"], names["order"]), note,
    )


def _in_letters(part: Formula, letters: tuple[Symbol, ...], shape: tuple[int, ...]) -> sympy.Expr:
    """The part's rhs with its free letters made ``letters`` (c, u, v): renamed one to one, or,
    for a part over the tensor flattened, its one letter written c·H·W + u·W + v. Summed
    letters that clash with the new names are renamed first."""
    own = [x for x, _ in part.letters]
    if len(own) == len(letters):
        targets = list(letters)
    elif len(own) == 1:
        strides = [prod(shape[k + 1 :]) for k in range(len(shape))]
        targets = [sum((stride * x for stride, x in zip(strides, letters)), sympy.S.Zero)]
    else:
        raise ValueError(f"a part over letters {own} cannot be written over {letters}")
    twins = {x: Dummy(x.name, integer=True) for x in own}
    rhs = part.rhs.xreplace(twins)
    rhs = rebind(rhs, set(letters))  # a summed u, say, becomes a fresh letter before u comes in
    return rhs.xreplace({twins[x]: target for x, target in zip(own, targets)})


def _qualified(settings: dict[Symbol, int], layer: int) -> dict[Symbol, Symbol]:
    """Each settings symbol, named after its layer: s → s^(2)."""
    return {s: Symbol(f"{s.name}^({layer})", **s.assumptions0) for s in settings}


def _qualified_tex(symbol: Symbol, layer: int) -> str:
    """s^{(2)}, p_{h}^{(3)}: the settings symbol's TeX with its layer's number."""
    return f"{NotationPrinter({}).doprint(symbol)}^{{({layer})}}"


__all__ = ["upstream_formula"]
