"""Pieces the handout and the exercises both write: in the article's notation, as LaTeX.

Position sets as tables, a node's forward formula, an activation's derivative at an index,
matrices of numbers that fit the page, the equation of one chain-rule term with the
numbers in it.

Imports ``network``, ``derive``, ``latex``, ``ops`` (and what they build on), numpy, sympy
and the document's ``numbers``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from itertools import product
from math import prod

import numpy as np
import sympy

from ..activations import ACTIVATIONS
from ..derivation import Derivation
from ..engine import Term
from ..graph import LayerGraph
from ..latex import NotationPrinter, Row, sum_rows, term_latex, tex_width
from ..ops import Notation
from ..ops.base import BIAS
from .nodes import Column, Equation, Inline, Math, Paragraph, Table
from .numbers import NumberFormat


@dataclass(frozen=True)
class Detail:
    """How much a handout writes out."""

    name: str
    rows: int  # equations of one kind (sums, upstream formulas) per layer before "… and N more"
    terms: tuple[int, int, int]  # a sum longer than [0] terms shows its first [1] and last [2]
    sets: int  # position sets listed per layer
    derived: int | None  # weights derived in full per parameter; None: all (of a small network)
    example_rows: int  # rows per layer in the worked example's tables
    matrix_rows: int  # rows of a matrix of numbers
    matrices: int  # channel pairs of a kernel shown as matrices
    node_graph: bool  # the graph may be drawn node by node
    closed_forms: bool  # closed forms are printed when short
    appendix: bool  # the weights not derived in full are listed in an appendix


# ---- printing sympy expressions for readers -----------------------------------------------------

ELIDED_SUM = 6  # a sum of this many like terms or more (y_1 + … + y_10) is written with ⋯


def _natural(text: str) -> tuple:
    """A sort key that reads numbers as numbers: y_2 before y_10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


class DocumentPrinter(NotationPrinter):
    """The network's notation, as a reader expects sums: in natural order, positive terms first
    (y_1 + y_2 + … + y_10, e^{a}/Σ − y_1 rather than −y_1 + …), and a long sum of like terms
    (symbols, or one function of a symbol each) as its first two, ⋯ and its last."""

    def _as_ordered_terms(self, expr, order=None):
        terms = list(sympy.Add.make_args(expr))
        return sorted(terms, key=lambda t: (t.could_extract_minus_sign(), _natural(str(-t if t.could_extract_minus_sign() else t))))

    def _print_Add(self, expr, order=None):
        terms = self._as_ordered_terms(expr)
        like = all(t.is_Symbol or (isinstance(t, sympy.Function) and len(t.args) == 1 and t.args[0].is_Symbol)
                   for t in terms)
        if like and len(terms) >= ELIDED_SUM:
            return " + ".join([self._print(terms[0]), self._print(terms[1]), r"\cdots", self._print(terms[-1])])
        return super()._print_Add(expr, order)


def printer(d: Derivation) -> DocumentPrinter:
    """The printer documents write ``d``'s expressions with."""
    return DocumentPrinter(d.tex_names)


def slashed(tex: str) -> str:
    """A fraction as running text writes it: ``\\frac{\\partial L}{\\partial a}`` →
    ``\\partial L / \\partial a`` (a fraction inline shrinks to nothing); anything else as it is."""
    match = re.fullmatch(r"\\frac\{(\\partial [^{}]*)\}\{(.*)\}", tex)
    return f"{match.group(1)} / {match.group(2)}" if match else tex


def plural(n: int, noun: str) -> str:
    """A count and its noun: "1 position", "9 positions", "1,600 positions"."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


LINE_WIDTH = 41.0  # em in a display line (estimates run ~5% wide), for matrices side by side


def text(source: str) -> tuple[Inline, ...]:
    """Inline content from a string with ``$…$`` math in it (the operations' notes)."""
    parts = source.split("$")
    if len(parts) % 2 == 0:
        raise ValueError(f"unbalanced $ in {source!r}")
    return tuple(Math(p) if k % 2 else p for k, p in enumerate(parts) if p)


UNICODE_MATH = {
    "δ": r"\delta",
    "°": r"^{\circ}",
    "ᵀ": r"^{\top}",
    "−": "-",
    "·": r"\cdot",
    "×": r"\times",
}


def prose(source: str) -> tuple[Inline, ...]:
    """Inline content from plain text that may hold a few symbols (δ, 180°, ᵀ): each becomes
    math, so that the text typesets with pdflatex's fonts."""
    parts: list[Inline] = []
    word = ""
    for ch in source:
        if ch in UNICODE_MATH:
            digits = ""  # 180° is one formula, 180^{\circ}
            while ch == "°" and word and word[-1].isdigit():
                word, digits = word[:-1], word[-1] + digits
            if word:
                parts.append(word)
            parts.append(Math(digits + UNICODE_MATH[ch]))
            word = ""
        else:
            word += ch
    if word:
        parts.append(word)
    return tuple(parts)


def paired(formulas: Sequence[str], short: float = 17.0) -> str:
    """``lhs = rhs`` formulas as ``align`` rows, two short neighbours to a row."""
    rows: list[str] = []
    pending: str | None = None
    for tex in formulas:
        if tex_width(tex) > short:
            if pending:
                rows.append(formula_row(pending))
                pending = None
            rows.append(formula_row(tex))
        elif pending:
            rows.append(formula_row(pending) + " & " + formula_row(tex))
            pending = None
        else:
            pending = tex
    if pending:
        rows.append(formula_row(pending))
    return " \\\\\n".join(rows)


def tensor_rows(formulas: Sequence, wide: float = 40.0) -> str:
    """A layer's derived formulas as ``align`` rows: short ones two to a row (``paired``), one
    wider than ``wide`` em broken into rows of its own where its rhs breaks (a fork's upstream,
    one reader's part to a row)."""
    rows: list[str] = []
    short: list[str] = []
    for formula in formulas:
        tex = formula.latex()
        broken = formula.aligned() if tex_width(tex) > wide else ""
        if "\\\\" in broken:
            if short:
                rows.append(paired(short))
                short = []
            rows.append(broken)
        else:
            short.append(tex)
    if short:
        rows.append(paired(short))
    return " \\\\\n".join(rows)


def formula_row(tex: str) -> str:
    """``lhs = rhs`` as an ``align`` row, aligned at its first equals sign."""
    lhs, rhs = tex.split(" = ", 1)
    return f"{lhs} &= {rhs}"


def tensor_indices(image: bool = True) -> tuple[Inline, ...]:
    """How the tensor view's indices relate to the node view's: the sentence documents print
    where the view changes (for vectors alone when no map is involved)."""
    if not image:
        return (
            "Its indices count from 0, as in PyTorch, where the nodes above count from 1: entry ",
            Math("i"),
            " is node ",
            Math("i + 1"),
            ".",
        )
    return (
        "Its indices count from 0, as in PyTorch, where the nodes above count from 1: entry ",
        Math("(c, i, j)"),
        " of an ",
        Math(r"M \times N"),
        " map is node ",
        Math("(c M + i) N + j + 1"),
        ", and entry ",
        Math("i"),
        " of a vector node ",
        Math("i + 1"),
        ".",
    )


def tensor_blocks(
    formulas: Sequence, gradients: Collection[str], lead: str = "The tensor view.", image: bool = True
) -> list:
    """A layer's formulas in the tensor view (``Derivation.formulas(l, general=False)``: the
    layer's own numbers in place of its settings) as a document: one display of the derived
    formulas, how their indices relate to the nodes', what the notes of the formulas of kind
    ``gradients`` say (its parameters' prefixes and "input"), then each fact with what it
    restates in words."""
    if not formulas:
        return []
    derived = [f for f in formulas if f.kind != "fact"]
    # a wide formula is printed where it breaks into rows (a fork's upstream, a reader a row)
    printed = [f for f in derived if tex_width(f.latex()) <= TENSOR_MAX_WIDTH or "\\\\" in f.aligned()]
    too_long = [f for f in derived if f not in printed]
    derived = printed
    blocks: list = [
        Paragraph(
            "The same layer for every index at once, derived by differentiating the index form of "
            "its forward pass, with this layer's numbers. ",
            *tensor_indices(image),
            lead=lead,
        ),
        Equation(tensor_rows(derived)),
    ]
    if too_long:
        blocks.append(
            Paragraph(
                "Written out for every index, "
                + _and_words([_formula_words(f) for f in too_long])
                + " would run for pages (a sum of "
                + "one term per entry, its weights all different): the routing table of section 2 "
                "says the same."
            )
        )
    notes = [f.note for f in derived if f.note and f.kind in gradients]
    for note in dict.fromkeys(notes):
        blocks.append(Paragraph(*prose(note[0].upper() + note[1:] + ".")))
    for fact in (f for f in formulas if f.kind == "fact"):
        blocks += fact_blocks(fact)
    return blocks


TENSOR_MAX_WIDTH = 3 * LINE_WIDTH  # em; a tensor-view formula wider than this is not printed


def _formula_words(formula) -> str:
    return {"forward": "the forward formula", "input": "the input gradient"}.get(
        formula.kind, f"the formula of {formula.kind}"
    )


def _and_words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def fact_blocks(fact) -> list:
    """A fact of the tensor view: its statement, then the formula and its where-clauses: the
    ranges of its sum's letters, and each tensor it introduces (δ̂, Ŵ) — said plainly to be
    the tensor itself where there is nothing to spread out."""
    rows = [formula_row(fact.latex())]
    plain = []
    for spread, where in zip(fact.spreads, fact.where_latex()):
        if all(factor == 1 for factor in spread.factors):
            plain.append(rf"{fact.printer.doprint(spread.hat)} = {fact.printer.doprint(spread.base)}")
        else:
            rows.append(formula_row(where))
    blocks = [
        Paragraph(*prose(fact.statement[0].upper() + fact.statement[1:] + ":")),
        Equation(" \\\\\n".join(rows)),
    ]
    said: list[Inline] = []
    limits = getattr(fact.rhs, "limits", ())
    if limits:
        ranges = [
            Math(
                f"{fact.printer.doprint(letter)} = {fact.printer.doprint(low)}"
                + ("" if low == high else f", \\ldots, {fact.printer.doprint(high)}")
            )
            for letter, low, high in limits
        ]
        said += ["The sum runs over ", *joined(ranges), " (entries outside a tensor read 0)"]
    if plain:
        said += ["; here " if said else "Here ", *joined([Math(p) for p in plain]), ": nothing is spread out"]
    if said:
        blocks.append(Paragraph(*said, "."))
    return blocks


def joined(items: list[Inline]) -> list[Inline]:
    """The items as running text: "a", "a and b", "a, b and c"."""
    out: list[Inline] = []
    for k, item in enumerate(items):
        if k:
            out.append(" and " if k == len(items) - 1 else ", ")
        out.append(item)
    return out


def loss_formula(network) -> str:
    """The network's loss as TeX, a count written as its number (the mean over 2 outputs is
    1/2 Σ, not 1/n_out Σ: one letter fewer to explain)."""
    return network.loss_function.formula.replace(r"\frac{1}{n_{\text{out}}}", rf"\frac{{1}}{{{network.output_size}}}")


def layer_table(layers: Sequence[LayerGraph]) -> Table:
    """The network, a row per layer: its type, kernel, stride and padding (when some layer has
    them), bias, activation, shapes and number of weights; for a network that is not a chain,
    what each layer reads in place of its input's shape (the output of what it reads)."""
    chain = all(lg.sources == (lg.number - 1,) for lg in layers)
    windows = any(set(lg.layer.table_cells()) != {"--"} for lg in layers)
    header = [
        "Layer",
        "Type",
        *([] if chain else ["Reads"]),
        *(["Kernel", "Stride", "Padding"] if windows else []),
        "Bias",
        "$g$",
        *(["Input"] if chain else []),  # a graph's: the outputs its Reads column names
        "Output",
        "Weights",
    ]
    rows, layer_rows = [], []
    for lg in layers:
        layer = lg.layer
        cells = [str(lg.number), layer.key]
        if not chain:
            cells.append(", ".join("$x$" if s == 0 else str(s) for s in lg.sources))
        if windows:
            cells += list(layer.table_cells())
        activation = ACTIVATIONS[layer.activation].label if layer.activation else "--"
        roles = [p.role for p in layer.parameter_declared(lg.input_shape)]
        bias = ("yes" if BIAS.role in roles else "no") if roles else "--"
        cells += [bias, activation]
        if chain:
            cells.append(f"${shape_tex(lg.input_shape)}$")
        cells += [
            f"${shape_tex(lg.output_shape)}$",
            f"{layer.parameter_count(lg.input_shape):,}",
        ]
        rows.append(tuple(text(c.replace("--", "–")) or ("",) for c in cells))
        layer_rows.append(cells)
    aligns = "cl" + ("" if chain else "l") + ("ccc" if windows else "") + ("cccc" if chain else "ccc") + "r"
    columns = list(zip(header, *[[c for c in r] for r in _plain_cells(layer_rows)]))
    width = sum(max(len(cell) for cell in column) * 0.5 + 0.75 for column in columns)  # em, roughly
    return Table(
        tuple(Column(a) for a in aligns), tuple(text(h) for h in header), tuple(rows), small=width > TABLE_WIDTH
    )


TABLE_WIDTH = 40.0  # em a table's cells may take in the normal font; a wider one is set smaller


def _plain_cells(rows: list[list[str]]) -> list[list[str]]:
    """The cells' text as printed, roughly: math and its commands left out, "\\times" as one sign."""
    return [[re.sub(r"\\[a-z]+|[${}]", "", cell.replace(r"\times", "x")).replace(" ", "") for cell in row] for row in rows]


def shape_tex(shape: Sequence[int]) -> str:
    return r" \times ".join(map(str, shape))


def listed(letter: str, count: int) -> str:
    """x_1, ..., x_n (or the numbers alone for no letter), written out when there are one or two."""
    items = [f"{letter}_{{{i}}}" if letter else str(i) for i in (1, count)]
    return (
        items[0]
        if count == 1
        else ", ".join(items)
        if count == 2
        else rf"{items[0]}, \ldots, {items[1]}"
    )


def source_letter(source: int) -> str:
    """How the article writes the outputs of layer ``source``: x for the input (0), else
    a^{(source)}."""
    return "x" if source == 0 else f"a^{{({source})}}"


def input_letter(lg: LayerGraph) -> str:
    """The letter of what layer ``lg`` reads (its first input, for an operation of several)."""
    return source_letter(lg.sources[0])


def capital_letter(source: int) -> str:
    """The outputs of layer ``source`` as a map: X for the input, A^{(source)}."""
    return "X" if source == 0 else f"A^{{({source})}}"


def correlation_padding(
    input_shape: Sequence[int], output_shape: Sequence[int], kernel: Sequence[int]
) -> tuple[int, int]:
    """The zero padding of a layer whose weight gradient is a plain cross-correlation (stride 1,
    no dilation: ``Op.correlates``), from its shapes: M_z = M_x + 2P − K + 1 on each axis."""
    return tuple((out - size + k - 1) // 2 for out, size, k in zip(output_shape[-2:], input_shape[-2:], kernel))


def elide(pieces: Sequence[str], limit: int = 24, head: int = 16, tail: int = 4) -> list[str]:
    """The terms of a sum, or of a long one its first ``head`` and last ``tail`` around ⋯."""
    pieces = list(pieces)
    return pieces if len(pieces) <= limit else [*pieces[:head], r"\cdots", *pieces[-tail:]]


def local_tex(lg: LayerGraph, index: str) -> str:
    """da/dz of layer ``lg`` at z^{(l)}_index as the activation writes it, then ``\\cdot``;
    '' for the identity and for a layer without activation, whose derivative 1 is left out."""
    if not lg.activated:
        return ""
    z, a = sympy.Symbol("z_", real=True), sympy.Symbol("a_", real=True)
    local = lg.a[0].activation.derivative(z, a)
    if local == 1:
        return ""
    p = NotationPrinter(
        {z: f"z^{{({lg.number})}}_{{{index}}}", a: f"a^{{({lg.number})}}_{{{index}}}"}
    )
    tex = p.doprint(local)
    return (rf"\left({tex}\right)" if local.is_Add else tex) + r" \cdot "


def op_notation(lg: LayerGraph, source: int | None = None) -> Notation:
    """What layer ``lg``'s operation needs to write its general formulas: every input's letter
    and, first, the one ``source`` names (the input an upstream formula is asked about)."""
    sources = list(lg.sources)
    shapes = list(lg.layer.per_input(lg.input_shape))
    if source is not None and source in sources:
        k = sources.index(source)
        sources.insert(0, sources.pop(k))
        shapes.insert(0, shapes.pop(k))
    return Notation(
        lg.number,
        source_letter(sources[0]),
        prod(shapes[0]),
        lambda index: local_tex(lg, index),
        lg.layer.flat_weights(lg.input_shape),
        tuple(sources),
        tuple(source_letter(s) for s in sources),
    )


def position_table(lg: LayerGraph) -> list[list[int | None]]:
    """A layer's position sets, 1-based, in kernel order (channel, row, column), with None
    where the kernel lay on the padding, so entry n is always what kernel place n read.
    Leaving out the Nones gives ``Network.position_sets``."""
    table = []
    for connection in lg.layer.connections(lg.input_shape):
        entries: list[int | None] = [None] * lg.layer.window(lg.input_shape)
        for i, slot in zip(connection.inputs, connection.slots):
            entries[slot] = i + 1
        table.append(entries)
    return table


def position_set_tex(lg: LayerGraph, index: int, entries: Sequence[int | None]) -> str:
    """p^{(l)}_i as layer ``lg``'s operation writes its position sets (``Op.position_set_tex``)."""
    return lg.layer.position_set_tex(lg.number, index, entries)


POSITION_TABLE_ABOVE = 30  # places; a longer position set is laid out as a table


def position_grid(lg: LayerGraph, index: int, entries: Sequence[int | None]) -> Table | None:
    """A long position set as a table, laid out as its operation lays out its window
    (``Op.position_grid``: for a convolution a row per channel and a column per row of the kernel,
    a run as first–last); None when the set is short or the operation has no such layout."""
    if len(entries) <= POSITION_TABLE_ABOVE:
        return None
    grid = lg.layer.position_grid(entries, lg.input_shape)
    if grid is None:
        return None
    heads, body = grid
    header = [(Math(f"p^{{({lg.number})}}_{{{index}}}"),), *((head,) for head in heads)]
    rows = tuple(tuple(text(cell) or ("",) for cell in row) for row in body)
    widths = [Column("l")] + [Column("l", 12.0) if len(heads) == 1 else Column("l") for _ in heads]
    return Table(tuple(widths), tuple(header), rows)


def node_rows(d: Derivation, node, limits: tuple[int, int, int] = (24, 16, 4)) -> list[Row]:
    """A node's forward formula in the article's notation: a weighted sum in kernel order,
    a sum of inputs (an addition; one input alone, a copy), an average as 1/K (…), a max as
    max(…), a function of one input as g(…), any other formula as it is."""
    names = d.tex_names
    if node.kind == "select":
        return [
            Row(
                r"\max\left("
                + ", ".join(elide([names[v] for v in node.inputs], *limits))
                + r"\right)"
            )
        ]
    if node.kind == "elementwise":
        return [Row(NotationPrinter({node.z: names[node.z]}).doprint(node.expr))]
    if node.kind == "expression":  # a formula of its inputs and constants (batch normalisation's)
        return [Row(NotationPrinter({s: names[s] for s in node.expr.free_symbols}).doprint(node.expr))]
    constant = {c for c, _ in node.terms if not c.is_Symbol}
    if len(constant) == 1:
        (coefficient,) = constant
        inputs = sum_rows(elide([names[v] for _, v in node.terms], *limits))
        return inputs if coefficient == 1 else _scaled(coefficient, inputs)
    p = NotationPrinter(names)
    pieces = [f"{p.doprint(w)} \\, {names[v]}" if not w.is_Symbol else f"{names[w]} {names[v]}" for w, v in node.terms]
    if node.bias is not None:
        pieces.append(names[node.bias])
    return sum_rows(elide(pieces, *limits))


Show = Callable[[sympy.Expr], str]  # an expression's number as the document writes it


def node_numbers(d: Derivation, node, show: Show, limits: tuple[int, int, int] = (24, 16, 4)) -> list[Row]:
    """The same formula with the numbers in it (``show``), then its value: rows ``(w)(v) + …``
    and ``= z`` (the first row without its ``=``)."""
    if node.kind == "select":
        inside = ", ".join(elide([show(v) for v in node.inputs], *limits))
        rows = [Row(rf"\max\left({inside}\right)")]
    elif node.kind == "elementwise":
        rows = [Row(NotationPrinter({node.z: show(node.z)}).doprint(node.expr))]
    elif node.kind == "expression":
        numbers = {s: rf"\left({show(s)}\right)" if show(s).startswith("-") else show(s) for s in node.expr.free_symbols}
        rows = [Row(NotationPrinter(numbers).doprint(node.expr))]
    else:
        constant = {c for c, _ in node.terms if not c.is_Symbol}
        if len(constant) == 1:
            (coefficient,) = constant
            items = [show(v) for _, v in node.terms]
            inner = sum_rows(elide(items[:1] + [_bracket(t) for t in items[1:]], *limits))
            rows = inner if coefficient == 1 else _scaled(coefficient, inner)
        else:
            pieces = [f"({_number(c, show)})({show(v)})" for c, v in node.terms]
            if node.bias is not None:
                pieces.append(f"({show(node.bias)})")
            rows = sum_rows(elide(pieces, *limits))
    return rows + [Row(f"= {show(node.symbol)}")]


def _number(coefficient: sympy.Expr, show: Show) -> str:
    """A weight's number, or a constant coefficient as a fraction (an interpolation's 3/16)."""
    return show(coefficient) if coefficient.is_Symbol else NotationPrinter({}).doprint(coefficient)


def node_by_hand(d: Derivation, node, show: Show, limits: tuple[int, int, int] = (24, 16, 4)) -> list[Row]:
    """A node's formula (``node_rows``), then the same with the numbers in it, then its value."""
    numbers = node_numbers(d, node, show, limits)
    return node_rows(d, node, limits) + [Row("= " + numbers[0].tex)] + numbers[1:]


def _scaled(coefficient: sympy.Expr, rows: list[Row]) -> list[Row]:
    """``coefficient (sum)``, the parentheses spanning the sum's rows when it has several."""
    head = NotationPrinter({}).doprint(coefficient)
    if len(rows) == 1:
        return [Row(rf"{head} \left({rows[0].tex}\right)")]
    return [Row(rf"{head} \Bigl({rows[0].tex}")] + rows[1:-1] + [Row(rf"{rows[-1].tex} \Bigr)")]


def _bracket(tex: str) -> str:
    return f"({tex})" if tex.startswith("-") else tex


def term_parts(term: Term) -> list[sympy.Expr]:
    """The factors of a chain-rule term as the article writes them: upstream, local, input,
    leaving out those equal to 1 (an identity's derivative, a bias's input)."""
    return [part for part in (term.upstream, term.local, term.factor) if part != 1]


def term_numbers(term: Term, show: Show) -> str:
    """One term with its numbers, factor for factor as ``term_latex`` writes it:
    (upstream) · (local) · (input)."""
    return r" \cdot ".join(f"({show(part)})" for part in term_parts(term)) or "1"


def terms_by_hand(
    d: Derivation,
    terms: Sequence[Term],
    show: Show,
    result: str,
    limits: tuple[int, int, int] = (24, 16, 4),
) -> list[Row]:
    """A gradient's chain-rule terms (``term_latex``), then the same with their numbers
    (``term_numbers``), then ``= result``."""
    p = printer(d)
    chain = sum_rows(elide([term_latex(t, p) for t in terms], *limits))
    numbers = sum_rows(elide([term_numbers(t, show) for t in terms], *limits))
    return chain + [Row("= " + numbers[0].tex)] + numbers[1:] + [Row(f"= {result}")]


# ---- matrices of numbers -----------------------------------------------------------------------


def matrix(cells: list[list[str]], room: float, rows: int) -> tuple[str, float]:
    """A pmatrix of TeX ``cells`` at most ``room`` em wide and ``rows`` rows high, and its
    estimated width; a big one is cut to its top-left corner, with dots for the rest."""
    shown_rows = cells[:rows]
    widths = [
        max(tex_width(c) for c in column) + 1.0 for column in zip(*shown_rows)
    ]  # + column gap
    shown = len(widths)
    while shown > 1 and sum(widths[:shown]) + (2.2 if shown < len(widths) else 1.0) > room:
        shown -= 1
    body_rows = [row[:shown] + ([r"\cdots"] if shown < len(widths) else []) for row in shown_rows]
    if len(cells) > rows:
        body_rows.append([r"\vdots"] * len(body_rows[0]))
    body = r" \\ ".join(" & ".join(row) for row in body_rows)
    width = sum(widths[:shown]) + (2.2 if shown < len(widths) else 1.0)
    return r"\begin{pmatrix} " + body + r" \end{pmatrix}", width


def arrays(
    values: np.ndarray,
    label: Callable[[str | None], str],
    fmt: NumberFormat,
    rows: int = 12,
    pairs_shown: int = 8,
) -> list[tuple[str, float]]:
    """``label = matrix`` displays for an array of any rank: one matrix per channel (3-D) or per
    (output, input) channel pair (4-D), a vector as a row."""
    if values.ndim == 4:
        pairs = list(product(range(values.shape[0]), range(values.shape[1])))
        one = values.shape[:2] == (1, 1)
        shown = [
            labelled(label(None if one else f"{o + 1},{c + 1}"), values[o, c], fmt, rows)
            for o, c in pairs[:pairs_shown]
        ]
        more = len(pairs) - pairs_shown
        return shown + ([(rf"\ldots \text{{ and {more} more}}", 8.0)] if more > 0 else [])
    if values.ndim == 3:
        channels = list(range(values.shape[0]))
        one = len(channels) == 1
        shown = [
            labelled(label(None if one else f"c={c + 1}"), values[c], fmt, rows)
            for c in channels[:pairs_shown]
        ]
        more = len(channels) - pairs_shown
        return shown + ([(rf"\ldots \text{{ and {more} more}}", 8.0)] if more > 0 else [])
    if values.ndim == 1:
        return [labelled(label(None), values.reshape(1, -1), fmt, rows)]
    return [labelled(label(None), values, fmt, rows)]


def labelled(tex: str, values: np.ndarray, fmt: NumberFormat, rows: int = 12) -> tuple[str, float]:
    """``tex = (matrix)``, cut to what fits (see ``matrix``)."""
    room = LINE_WIDTH - tex_width(tex) - 1.4
    cells = [
        [fmt(v) for v in row] for row in values[: rows + 1]
    ]  # one more: the matrix knows it is cut
    tex_matrix, width = matrix(cells, room, rows)
    return f"{tex} = {tex_matrix}", tex_width(tex) + 1.4 + width


def whole_matrix(values: np.ndarray, fmt: NumberFormat) -> tuple[str, float]:
    """A pmatrix of every value of a matrix, never cut (the caller sees that it fits), and its
    width."""
    cells = [[fmt(v) for v in row] for row in values]
    return matrix(cells, 1e9, len(cells))


def labelled_whole(tex: str, values: np.ndarray, fmt: NumberFormat) -> tuple[str, float]:
    """``tex = (matrix)`` of every value (see ``whole_matrix``), and its width."""
    tex_matrix, width = whole_matrix(values, fmt)
    return f"{tex} = {tex_matrix}", tex_width(tex) + 1.4 + width


def labelled_cells(tex: str, cells: list[list[str]]) -> tuple[str, float]:
    """``tex = (matrix)`` of TeX ``cells`` given whole, and its width."""
    tex_matrix, width = matrix(cells, 1e9, len(cells))
    return f"{tex} = {tex_matrix}", tex_width(tex) + 1.4 + width


def subscripted(tex: str) -> Callable[[str | None], str]:
    """A label for ``arrays``: ``tex`` alone, or ``tex`` with the channel's subscript."""
    return lambda sub: tex if sub is None else f"{tex}_{{{sub}}}"


def lines(items: list[tuple[str, float]]) -> list[str]:
    """Displays placed side by side, as many as fit in a line."""
    result: list[tuple[list[str], float]] = []
    for tex, width in items:
        if result and result[-1][1] + 2 + width <= LINE_WIDTH:
            result[-1][0].append(tex)
            result[-1] = (result[-1][0], result[-1][1] + 2 + width)
        else:
            result.append(([tex], width))
    return [r" \qquad ".join(texs) for texs, _ in result]


__all__ = [
    "LINE_WIDTH",
    "Detail",
    "DocumentPrinter",
    "Show",
    "arrays",
    "capital_letter",
    "correlation_padding",
    "elide",
    "fact_blocks",
    "formula_row",
    "input_letter",
    "labelled",
    "labelled_cells",
    "labelled_whole",
    "layer_table",
    "lines",
    "listed",
    "local_tex",
    "loss_formula",
    "matrix",
    "node_by_hand",
    "node_numbers",
    "node_rows",
    "op_notation",
    "plural",
    "position_grid",
    "position_set_tex",
    "position_table",
    "printer",
    "prose",
    "shape_tex",
    "slashed",
    "source_letter",
    "subscripted",
    "tensor_blocks",
    "tensor_indices",
    "term_numbers",
    "term_parts",
    "terms_by_hand",
    "text",
    "whole_matrix",
]
