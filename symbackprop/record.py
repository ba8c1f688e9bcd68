"""What ``derivation.json`` holds: a derivation as plain data, of bounded size on any network.

For every layer: its operation and shapes, which layers it reads and which read it (the
network is a graph), its general formulas in the article's form (LaTeX, as the operation
writes them; how the upstream gradient of each layer it reads collects its gradients), its
position sets and the formulas of its upstream gradients ∂L/∂a — for a layer read by
several, the sum over its readers (the article's rule (20)), and that sum split by reader.
For every parameter element and input pixel: its chain form (one term per position where it
was used) and, when small enough, its closed form. The loss.

Bounds, so that the file stays small and quick to write whatever the network:

* Everything is listed while the lists hold at most ``LISTED_BUDGET`` units — a term of a
  chain form or upstream formula, an index of a position set, and 3 per entry for its
  name — about 3 MB. Past that, each list (a parameter's elements, the input gradient, a
  layer's position sets, its upstream formulas) holds ``SAMPLE`` entries spread evenly,
  first and last included; and if those still hold more, the longest forms and sets are
  cut to their first ``cut_at`` terms, the same number for all, as many as fit (a cut form
  ends in ``+ ...``; each element says how many ``terms`` it has).
* Closed forms (``closed_forms``): ``"none"``; ``"small"`` (the default), those of at most
  ``SMALL_CLOSED`` tree nodes, until ``SMALL_CLOSED_TOTAL`` nodes in all (about 0.5 MB);
  ``"all"``, every listed one — ``Plan.closed_total`` tells how large that would be
  before anything is built (the command line refuses past ``--max-closed-size``). Where
  no closed form is written, ``closed_size`` is its size counted on the graph (past 10^15,
  as text: ``"3.1e+45"``).
* Layers whose operation reads every input (dense) say so instead of listing position sets;
  so do those whose outputs each read a few values, one per input, in place (an addition,
  an activation, a concatenation: ``each_reads``).

``Plan(d)`` decides all of this from counts alone; ``Plan.build()`` writes the forms.

Imports ``derivation``, ``engine``, ``latex`` (its notation printer), ``activations``, ``ops``
and ``budget`` (how it writes large counts).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from math import prod
from typing import Any

import sympy

from .activations import ACTIVATIONS
from .budget import count
from .derivation import Derivation
from .engine import _flat, expression_size
from .latex import NotationPrinter
from .ops import Notation, Op

LISTED_BUDGET = 60_000  # units: a term, a position-set index, 3 per entry; ~50 bytes each
ENTRY_UNITS = 3
SAMPLE = 16  # entries per list past the budget
SMALL_CLOSED = 1_000  # tree nodes, about 5 KB of text: "small" closed forms
SMALL_CLOSED_TOTAL = 100_000  # tree nodes of "small" closed forms in all
CLOSED_FORMS = ("none", "small", "all")

CONVENTIONS = {
    "nodes": "x, y, z, a numbered flat from 1 in (channel, row, column) order",
    "parameters": "PyTorch layouts; code names carry 0-based tensor indices (W1_0_0_1_1 is W1[0,0,1,1])",
    "position_sets": "1-based flat input indices per output node, in kernel order; padding left out",
    "chain": "sum over the positions where the element was used of upstream * local * factor",
    "closed_size": "tree nodes of the closed form; counted on the graph where it is not written",
    "reads": "the layers a layer reads, by number in its operation's order (0: the input x); read_by: "
    "the layers reading it",
    "upstream": "dL/da of a layer's outputs: the sum of what every layer reading it sends back (rule (20)); "
    "by_reader splits it by reader where several read it",
}


@dataclass
class _List:
    """One list of the file: all its entries' keys and sizes, and the ones it will show."""

    keys: list  # element symbols, upstream symbols or node numbers
    sizes: list[int]  # terms or indices of each
    shown: list[int] | None = None  # positions in keys; None: all

    @property
    def listed(self) -> list[int]:
        return list(range(len(self.keys))) if self.shown is None else self.shown

    def units(self) -> int:
        return sum(self.sizes[k] + ENTRY_UNITS for k in self.listed)


class Plan:
    """What ``derivation.json`` will hold for ``d``, decided from counts before any form is
    printed: which entries each list shows, where long forms are cut, which closed forms
    are written. ``build()`` then writes them (``progress(1)`` after each entry)."""

    def __init__(self, d: Derivation, closed_forms: str = "small") -> None:
        if closed_forms not in CLOSED_FORMS:
            raise ValueError(
                f"closed_forms must be one of {', '.join(CLOSED_FORMS)}, got {closed_forms!r}"
            )
        self.d, self.closed_forms = d, closed_forms
        net = d.network
        self.layers = range(1, len(net.layers) + 1)
        self.parameters = {
            name: self._elements(_flat(d.symbols.params[name])) for name in net.parameters
        }
        self.inputs = self._elements(_flat(d.symbols.x))
        self._position_sets = {  # only where the operation has sets worth listing (Op.position_note)
            n: net.position_sets(n) for n in self.layers if net.layers[n - 1].position_note()
        }
        self.sets = {
            n: _List(list(range(1, len(sets) + 1)), [len(s) for s in sets])
            for n, sets in self._position_sets.items()
        }
        self.upstream = {n: self._upstream(n) for n in self.layers}
        self.by_reader = {  # a fork's upstream formulas again, split by the layer each term comes from
            n: _List(lst.keys, lst.sizes) for n, lst in self.upstream.items() if len(net.consumers(n)) > 1
        }
        self._lists = lists = [
            *self.parameters.values(),
            self.inputs,
            *self.sets.values(),
            *self.upstream.values(),
            *self.by_reader.values(),
        ]
        self.complete = sum(lst.units() for lst in lists) <= LISTED_BUDGET
        if not self.complete:
            for lst in lists:
                lst.shown = spread(len(lst.keys), SAMPLE)
        listed = [lst.sizes[k] for lst in lists for k in lst.listed]
        room = LISTED_BUDGET - ENTRY_UNITS * len(listed)
        self.cut_at = cap(listed, max(room, len(listed)))

    def _elements(self, symbols: list[sympy.Symbol]) -> _List:
        return _List(symbols, [len(self.d.terms(s)) for s in symbols])

    def _upstream(self, number: int) -> _List:
        symbols = list(self.d.graph.upstream_of(number))
        if number == len(self.layers):  # the loss's own derivative: one formula each
            return _List(symbols, [1] * len(symbols))
        return _List(symbols, [len(self.d.upstream_terms_of(s)) for s in symbols])

    @property
    def entries(self) -> int:
        """How many entries ``build`` writes (its progress steps)."""
        return sum(len(lst.listed) for lst in self._lists) + 1  # + the loss

    def _closed_candidates(self) -> list[sympy.Expr]:
        chains = [
            self.d.chain_of(lst.keys[k])
            for lst in [*self.parameters.values(), self.inputs]
            for k in lst.listed
        ]
        return [self.d.graph.loss, *chains]

    @property
    def closed_total(self) -> int:
        """Tree nodes of every closed form ``"all"`` would write, counted without building them."""
        return sum(self.d.closed_size_estimate(e) for e in self._closed_candidates())

    # ---- writing ----------------------------------------------------------------------------

    def build(self, progress: Callable[[int], Any] | None = None) -> dict[str, Any]:
        """The record, as plain data for ``json``."""
        step = progress or (lambda n: None)
        d, net = self.d, self.d.network
        self._closed_used = 0
        record: dict[str, Any] = {
            "format": 3,
            "network": net.to_dict(),
            "conventions": CONVENTIONS,
            "bounds": {
                "complete": self.complete,
                "sample": None if self.complete else SAMPLE,
                "cut_at": self.cut_at,
                "closed_forms": self.closed_forms,
                "small_closed_size": SMALL_CLOSED,
                "small_closed_total": SMALL_CLOSED_TOTAL,
            },
            "loss": {"formula": net.loss_function.formula, **self._closed(d.graph.loss)},
        }
        step(1)
        record["layers"] = [self._layer(n, step) for n in self.layers]
        record["parameters"] = {
            name: {
                "shape": list(shape),
                "count": prod(shape),
                "elements": self._element_entries(self.parameters[name], step),
            }
            for name, shape in net.parameters.items()
        }
        record["input_gradient"] = {
            "shape": list(net.input_shape),
            "count": prod(net.input_shape),
            "elements": self._element_entries(self.inputs, step),
        }
        return record

    def _layer(self, number: int, step: Callable[[int], Any]) -> dict[str, Any]:
        net, d = self.d.network, self.d
        op, taken, after = net.layers[number - 1], net.input_shape_of(number), net.shapes[number]
        read = [net.shapes[source] for source in net.sources[number - 1]]
        entry: dict[str, Any] = {
            "number": number,
            "name": net.layer_names[number - 1],  # None: unnamed
            "operation": op.describe(),
            "reads": list(net.sources[number - 1]),
            "read_by": list(net.consumers(number)),
            "input_shape": list(taken) if len(read) == 1 else [list(shape) for shape in read],
            "output_shape": list(after),
            "general": general_forms(net, number),
        }
        if number in self.sets:
            lst = self.sets[number]
            sets = self._position_sets[number]
            entry["position_sets"] = {
                "count": len(sets),
                "sets": {str(lst.keys[k]): list(sets[k][: self.cut_at]) for k in lst.listed},
            }
            step(len(lst.listed))
        else:  # each output reads every input (dense), or a few values, one per input (add)
            window, values = op.window(taken), sum(prod(shape) for shape in read)
            reads = {"every_input": values} if window == values else {"each_reads": window, "of": values}
            entry["position_sets"] = {"count": prod(after), **reads}
        lst = self.upstream[number]
        formulas = {}
        for k in lst.listed:
            symbol = lst.keys[k]
            if number == len(self.layers):
                formulas[str(symbol)] = _text(d.upstream(symbol))
            else:
                formulas[str(symbol)] = self._sum_text(d.upstream_terms_of(symbol))
            step(1)
        entry["upstream"] = {"count": len(lst.keys), "formulas": formulas}
        if number in self.by_reader:
            entry["upstream"]["by_reader"] = self._by_reader(number, step)
        return entry

    def _by_reader(self, number: int, step: Callable[[int], Any]) -> dict[str, dict[str, str]]:
        """A fork's listed upstream formulas split into what each reader sends back: the
        article's rule (20), one sum per layer reading it (cut like the rest, at ``cut_at``
        terms in all)."""
        d, lst = self.d, self.by_reader[number]
        outputs = d.graph.outputs_of(number)
        split = {}
        for k in lst.listed:
            left = self.cut_at
            parts = {}
            for reader in d.network.consumers(number):
                terms = d.backward(reader).input_terms.get(outputs[k], [])
                shown = terms if left is None else terms[:left]
                text = _text(sympy.Add(*[t.expr for t in shown]))  # "0": a reader that skips it (a stride)
                if len(shown) < len(terms):
                    text = f"{text} + ..." if shown else "..."
                parts[str(reader)] = text
                left = None if left is None else left - len(shown)
            split[str(lst.keys[k])] = parts
            step(1)
        return split

    def _element_entries(self, lst: _List, step: Callable[[int], Any]) -> list[dict[str, Any]]:
        d, result = self.d, []
        for k in lst.listed:
            symbol = lst.keys[k]
            parts = str(symbol).split("_")[1:]
            terms = d.terms(symbol)
            chain = sympy.Add(*[t.expr for t in terms])
            cut = self.cut_at is not None and len(terms) > self.cut_at
            result.append(
                {
                    "symbol": str(symbol),
                    "index": [int(i) for i in parts],
                    "tex": d.tex_names[symbol],
                    "terms": len(terms),
                    "chain": self._sum_text(terms) if cut else _text(chain),
                    **self._closed(chain),
                }
            )
            step(1)
        return result

    def _sum_text(self, terms: list) -> str:
        if self.cut_at is not None and len(terms) > self.cut_at:
            return _text(sympy.Add(*[t.expr for t in terms[: self.cut_at]])) + " + ..."
        return _text(sympy.Add(*[t.expr for t in terms]))

    def _closed(self, chain: sympy.Expr) -> dict[str, Any]:
        """``closed`` and ``closed_size`` of a chain form, as the mode allows (none: nothing)."""
        if self.closed_forms == "none":
            return {}
        estimate = self.d.closed_size_estimate(chain)
        if self.closed_forms == "small" and (
            estimate > SMALL_CLOSED or self._closed_used + estimate > SMALL_CLOSED_TOTAL
        ):
            return {
                "closed": None,
                "closed_size": estimate if estimate < 10**15 else count(estimate),
            }
        closed = self.d.closed(chain)
        size = expression_size(closed, self.d._sizes)
        self._closed_used += size
        return {"closed": _text(closed), "closed_size": size}


def general_forms(network, number: int) -> dict[str, Any]:
    """Layer ``number``'s formulas in the article's form, as its operation writes them:
    ∂L/∂w and ∂L/∂b (None without weights) and, for each layer it reads (not the input x),
    how that layer's upstream gradient collects the gradients of this one's outputs
    (``input_upstream``, by the number of the layer read: its part of the sum, when several
    read it)."""
    op: Op = network.layers[number - 1]
    notation = layer_notation(network, number)
    weight = op.weight_formula(notation) or {}
    sources = network.sources[number - 1]
    return {
        "weight": weight.get("equation"),
        "bias": weight.get("bias"),
        "note": weight.get("note"),
        "input_upstream": {
            str(source): op.upstream_formula(_reading(notation, source))["equation"]
            for source in dict.fromkeys(sources)
            if source != 0
        },
    }


def layer_notation(network, number: int) -> Notation:
    """What layer ``number``'s operation needs to write its general formulas, from the network
    alone (no graph): the letters of what it reads (x, or a^{(k)} for layer k), their size,
    its activation's derivative in TeX."""
    op = network.layers[number - 1]
    sources = network.sources[number - 1]
    taken = network.input_shape_of(number)

    def local(index: str) -> str:
        if not op.has_activation:
            return ""
        z, a = sympy.Symbol("z_", real=True), sympy.Symbol("a_", real=True)
        derivative = ACTIVATIONS[op.activation].derivative(z, a)
        if derivative == 1:
            return ""
        names = {z: f"z^{{({number})}}_{{{index}}}", a: f"a^{{({number})}}_{{{index}}}"}
        tex = NotationPrinter(names).doprint(derivative)
        return (rf"\left({tex}\right)" if derivative.is_Add else tex) + r" \cdot "

    letters = tuple(_letter(source) for source in sources)
    values = sum(prod(network.shapes[source]) for source in sources)
    return Notation(
        number, letters[0], values, local, op.flat_weights(taken), sources,
        letters if len(sources) > 1 else (),
    )


def _reading(notation: Notation, source: int) -> Notation:
    """The notation of a layer as it reads ``source``: the operations write the upstream
    formula of the (first) layer they read, ``Notation.source``."""
    others = tuple(s for s in notation.sources if s != source)
    return replace(notation, sources=(source, *others), input_letter=_letter(source))


def _letter(source: int) -> str:
    return "x" if source == 0 else f"a^{{({source})}}"


# ---- helpers ------------------------------------------------------------------------------------


def spread(count: int, wanted: int) -> list[int]:
    """``wanted`` positions among ``count``, evenly spread, first and last included.

    >>> spread(5, 16), spread(100, 4)
    ([0, 1, 2, 3, 4], [0, 33, 66, 99])
    """
    if count <= wanted:
        return list(range(count))
    return sorted({round(k * (count - 1) / (wanted - 1)) for k in range(wanted)})


def cap(lengths: list[int], budget: int) -> int | None:
    """The largest c with Σ min(n, c) ≤ budget (at least 1); None when everything fits.

    >>> cap([5, 100, 3], 200), cap([5, 100, 3], 20)
    (None, 12)
    """
    if sum(lengths) <= budget:
        return None
    remaining, left = budget, len(lengths)
    for n in sorted(lengths):
        if n * left > remaining:
            return max(1, remaining // left)
        remaining -= n
        left -= 1
    return None


def _text(expr: sympy.Basic) -> str:
    """sympy's string form, terms in their stored order (sorting them for display is slow)."""
    return sympy.sstr(expr, order="none")


def dumps(record: Any, indent: str = " ") -> str:
    """JSON with one key per line, but lists of numbers (indices, position sets) on one line."""

    def write(value: Any, depth: int) -> str:
        pad, inner = indent * depth, indent * (depth + 1)
        if isinstance(value, dict) and value:
            items = [
                f"{inner}{json.dumps(str(k))}: {write(v, depth + 1)}" for k, v in value.items()
            ]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        if isinstance(value, list) and value and not all(_scalar(v) for v in value):
            return "[\n" + ",\n".join(inner + write(v, depth + 1) for v in value) + f"\n{pad}]"
        return json.dumps(value, ensure_ascii=False)

    return write(record, 0) + "\n"


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) or value is None
