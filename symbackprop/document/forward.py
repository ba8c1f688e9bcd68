"""The handout's second section: the forward pass, layer by layer — each operation's formula
for one node (``Op.forward_formula``, told the letters of what the layer reads), the nodes of
this network written out, the activation, and the position sets where the operation has them
(``Op.position_note``).

Imports ``graph``, ``latex`` (and what they build on), sympy and the document's ``common``,
``context``, ``layout`` and ``nodes``.
"""

from __future__ import annotations

import sympy

from ..graph import LayerGraph
from ..latex import NotationPrinter, tex_width
from .common import (
    input_letter,
    listed,
    node_rows,
    op_notation,
    position_grid,
    position_set_tex,
    position_table,
    text,
)
from .context import Context
from .layout import budget, grid, spread
from .nodes import Column, Equation, Math, Paragraph, Ref, Section, Table


def forward_section(c: Context) -> Section:
    """Section 2: every layer's forward formula, its nodes and its position sets."""
    titles = list(dict.fromkeys(lg.layer.title for lg in c.layers if lg.layer.position_note()))
    sliding = bool(titles)
    before = (
        "the layer before it"
        if c.chain
        else "the layers it reads (the network is a graph: the Reads column of the table above)"
    )
    intro = (
        Paragraph(
            f"Each layer computes its nodes from the outputs of {before}. A layer of "
            + _and(titles)
            + " reads a window of its input for each node: the position set ",
            Math("p^{(l)}_{i}"),
            " records which inputs it covered, in the order of its places, and the "
            "computational graph of section ",
            Ref("sec:graph"),
            " is built from these sets.",
        )
        if sliding
        else Paragraph(
            f"Each layer computes its nodes, its neurons, from the outputs of {before}; the "
            "computational graph of section ",
            Ref("sec:graph"),
            " is built from these sums.",
        )
    )
    body: list = [intro]
    body += [_forward_layer(c, lg) for lg in c.layers]
    return Section(("The forward pass",), tuple(body), label="sec:forward")


def _forward_layer(c: Context, lg: LayerGraph) -> Section:
    d, detail = c.d, c.detail
    formula = lg.layer.forward_formula(op_notation(lg))
    body: list = [
        Paragraph(*text(formula["note"][0].upper() + formula["note"][1:] + ":")),
        Equation(formula["equation"]),
    ]
    equations = [(d.tex_names[node.symbol], node_rows(d, node, detail.terms)) for node in lg.z]
    shown, more = budget(equations, detail.rows)
    body += [Paragraph("For this network:"), Equation(grid(shown))]
    if more:
        body.append(Paragraph(f"… and {more:,} more, each formed in the same way."))
    if lg.activated:
        z = sympy.Symbol("z_", real=True)
        applied = NotationPrinter({z: f"z^{{({lg.number})}}_{{i}}"}).doprint(
            lg.a[0].activation.apply(z)
        )
        body.append(
            Paragraph(
                "Every node is then activated: ",
                Math(rf"a^{{({lg.number})}}_{{i}} = {applied}, \quad i = {listed('', len(lg.a))}"),
                ".",
            )
        )
    if lg.layer.position_note():
        body += _position_sets(c, lg)
    return Section((f"Layer {lg.number}: {lg.layer.title}",), tuple(body), level=2)


def _position_sets(c: Context, lg: LayerGraph) -> list:
    """The layer's position sets: all of a small layer, a spread of a large one; a set too long
    for a line as a table. A layer whose outputs mix their inputs with weights of their own (an
    interpolation) gets its routing table instead: the inputs each output reads, with them."""
    detail = c.detail
    table = position_table(lg)
    count = len(table)
    if detail.name == "full" and count <= detail.sets:
        chosen = list(range(count))
    else:
        chosen = spread(lg, detail.sets if detail.name == "summary" else 24)
    intro = []
    if len(chosen) < count:
        which = ", ".join(str(i + 1) for i in chosen)
        intro = [Paragraph(f"The {_sets_word(lg)} of nodes {which} of the {count:,}:")]
    if routes(lg):
        return intro + routing_table(c, lg, chosen)
    grids = [position_grid(lg, i + 1, table[i]) for i in chosen]
    if all(grids):
        where = text(
            "Each set is long, so it is laid out as a table, a row per input channel (a–b: the inputs "
            "from a to b)."
        )
        return intro + [Paragraph(*where)] + grids
    cells = [position_set_tex(lg, i + 1, table[i]) for i in chosen]
    if any(r"\cdot" in cell for cell in cells):
        intro.append(
            Paragraph(
                "Where the kernel lies on the zero padding the entry is a dot (",
                Math(r"\cdot"),
                "): that place multiplies 0 and its term is left out of the sum, so the ",
                Math("n"),
                "-th entry is still the input the ",
                Math("n"),
                "-th weight multiplied.",
            )
        )
    # Laid out like the feature map when its rows fit on the page, one set a row otherwise.
    width, widest = lg.output_shape[-1], max(tex_width(cell) for cell in cells) + 3
    if len(chosen) == count and width * widest <= 41:
        columns = width
    else:  # as many to a row as fit
        columns = max(1, min(len(cells), int(41 // widest)))
    rows = [cells[k : k + columns] for k in range(0, len(cells), columns)]
    rows[-1] = rows[-1] + [""] * (columns - len(rows[-1]))
    spec = tuple(Column("l") for _ in range(columns)) if columns > 1 else (Column("l", 15.0),)
    header = (("Position sets",),) + tuple(("",) for _ in range(columns - 1))
    return intro + [
        Table(spec, header, tuple(tuple((Math(c_),) if c_ else ("",) for c_ in row) for row in rows))
    ]


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _sets_word(lg: LayerGraph) -> str:
    return "routing table's rows" if routes(lg) else "position sets"


def routes(lg: LayerGraph) -> bool:
    """Whether the layer's outputs are sums of their inputs with constant weights that differ
    (an interpolation): then its routing table says more than its position sets."""
    weights = {w for node in lg.z if node.kind == "linear" for w, _ in node.terms if not w.is_Symbol}
    return len(weights) > 1 and all(node.kind == "linear" and node.bias is None for node in lg.z)


def routing_table(c: Context, lg: LayerGraph, chosen: list[int]) -> list:
    """Output i, and the inputs it reads with their weights (j: λ): forwards, what each output
    mixes; backwards, the same weights carry each output's gradient to those inputs."""
    position = {symbol: k + 1 for k, symbol in enumerate(lg.read)}
    rows = []
    for i in chosen:
        node = lg.z[i]
        reads = ", ".join(f"{position[v]}: {fraction(w)}" for w, v in node.terms)
        rows.append(((str(i + 1),), (reads,)))
    letter = input_letter(lg)
    return [
        Paragraph(
            "Its routing table: for each output ",
            Math("i"),
            ", the inputs ",
            Math(f"{letter}_{{j}}"),
            " it reads and their weights, written ",
            Math(r"j: \lambda_{i,j}"),
            ". Backwards, each input collects the upstream gradients of the outputs that read it, "
            "times the same weights.",
        ),
        Table((Column("r"), Column("l", 12.0)), (("output",), (Math(r"j: \lambda_{i,j}"),)), tuple(rows)),
    ]


def fraction(value) -> str:
    """A constant weight as a reader writes it: 9/16, 1."""
    number = sympy.Rational(value)
    return str(number.p) if number.q == 1 else f"{number.p}/{number.q}"


__all__ = ["forward_section"]
