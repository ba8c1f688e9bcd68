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
from .common import listed, node_rows, op_notation, position_set_tex, position_table, text
from .context import Context
from .layout import budget, grid, spread
from .nodes import Column, Equation, Math, Paragraph, Ref, Section, Table


def forward_section(c: Context) -> Section:
    """Section 2: every layer's forward formula, its nodes and its position sets."""
    sliding = any(lg.layer.position_note() for lg in c.layers)
    before = (
        "the layer before it"
        if c.chain
        else "the layers it reads (the network is a graph: the Reads column of the table above)"
    )
    intro = (
        Paragraph(
            f"Each layer computes its nodes from the outputs of {before}. A convolution or a "
            "pooling layer reads a window of its input for each node: the position set ",
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
    if any(layer.pads() for layer in c.network.layers):
        body.append(
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
    detail = c.detail
    table = position_table(lg)
    count = len(table)
    if detail.name == "full" and count <= detail.sets:
        chosen = list(range(count))
    else:
        chosen = spread(lg, detail.sets if detail.name == "summary" else 24)
    cells = [position_set_tex(lg.number, i + 1, table[i]) for i in chosen]
    intro = []
    if len(chosen) < count:
        which = ", ".join(str(i + 1) for i in chosen)
        intro = [Paragraph(f"The position sets of nodes {which} of the {count:,}:")]
    # Laid out like the feature map when its rows fit on the page, one set a row otherwise.
    width = lg.output_shape[-1]
    columns = width if len(chosen) == count and width * (tex_width(cells[-1]) + 3) <= 41 else 1
    rows = [cells[k : k + columns] for k in range(0, len(cells), columns)]
    rows[-1] = rows[-1] + [""] * (columns - len(rows[-1]))
    spec = tuple(Column("l") for _ in range(columns)) if columns > 1 else (Column("l", 15.0),)
    header = (("Position sets",),) + tuple(("",) for _ in range(columns - 1))
    return intro + [
        Table(spec, header, tuple(tuple((Math(c_),) if c_ else ("",) for c_ in row) for row in rows))
    ]


__all__ = ["forward_section"]
