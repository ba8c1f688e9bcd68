"""The teaching handout, built once as a ``Document`` and rendered to LaTeX and Markdown.

``handout(network, detail, seed)`` retraces the article's derivation on any network, in
its notation and, for the article's own network, with its formula numbers: notation and
network, the forward pass with its position sets, the computational graph, every
layer's backward pass (the gradient vector, the upstream gradients, one weight worked
symbolically, the general formulas, the tensor view), a worked example with numbers
(``worked``), and the chain rule; the drawings come from ``figures``.

Two levels of detail (``DETAILS``): ``full`` writes every node and weight of a small network;
``summary`` gives, per layer, the general formulas, the position sets of a few nodes and
one weight per parameter tensor derived in full, with tables in place of walls of
equations — LeNet-5 in under 30 pages. ``default_detail`` chooses by size. Nothing is
built that is not shown: closed forms only for what is printed (and measured first), no
whole-network expression or program; the worked example's numbers come node by node
from the scalar graph, built one layer at a time.

Imports ``network``, ``derive``, ``latex``, ``ops`` (and what they build on), numpy and
sympy, and the rest of the document package; ``presets`` late, only to recognise the
article's network.
"""

from __future__ import annotations

from math import prod

import sympy

from ..activations import activation as _activation
from ..derivation import Derivation
from ..engine import _flat
from ..graph import LayerGraph
from ..latex import (
    NotationPrinter,
    Row,
    aligned,
    break_expr,
    closed_form,
    partial,
    printer,
    sum_rows,
    term_latex,
    tex_width,
)
from ..network import Network
from . import markdown, tex
from .common import (
    Detail,
    elide,
    layer_table,
    listed,
    node_rows,
    op_notation,
    plural,
    position_set_tex,
    position_table,
    tensor_blocks,
    text,
)
from .example import WorkedExample, worked_example
from .figures import chain_rule_diagrams, graph_section
from .nodes import (
    Code,
    Column,
    Contents,
    Document,
    Emph,
    EqRef,
    Equation,
    Figure,
    Inline,
    Math,
    Paragraph,
    Ref,
    Section,
    Table,
)
from .worked import worked_section

DETAILS = {
    "full": Detail(
        "full",
        rows=14,
        terms=(24, 16, 4),
        sets=36,
        derived=None,
        example_rows=64,
        matrix_rows=12,
        matrices=8,
        node_graph=True,
        closed_forms=True,
        appendix=True,
    ),
    "summary": Detail(
        "summary",
        rows=2,
        terms=(9, 6, 2),
        sets=3,
        derived=1,
        example_rows=5,
        matrix_rows=5,
        matrices=1,
        node_graph=False,
        closed_forms=False,
        appendix=False,
    ),
}
FULL_MAX_WEIGHTS = 64  # a network with more weights, or with
FULL_MAX_EDGES = 400  # more edges in its graph, gets the summary by default
DETAILED_TOTAL = 24  # full detail: up to this many weights in all are all derived; beyond,
DETAILED_PER_PARAMETER = 4  # a spread of this many per parameter, the others in an appendix
# The article's formula numbers, by the key of the equation that shows each.
ARTICLE_TAGS = {
    "size": "1",
    "gradient": "2",
    "vector3": "3",
    "example3": "4",
    "general3": "5",
    "vector2": "6",
    "upstream-list2": "10",
    "example2": "11",
    "upstream2": "12",
    "general2": "13",
    "vector1": "14",
    "upstream-list1": "15",
    "example1": "16",
    "upstream1": "17",
    "general1": "18",
    "single": "19",
    "multiple": "20",
}


def default_detail(network: Network) -> str:
    """ "full" for a network small enough to write out node by node, else "summary"."""
    edges = sum(
        layer.window(shape) * prod(out)
        for layer, shape, out in zip(network.layers, network.shapes, network.shapes[1:])
    )
    small = network.parameter_count <= FULL_MAX_WEIGHTS and edges <= FULL_MAX_EDGES
    return "full" if small else "summary"


def handout(network: Network, detail: str | None = None, seed: int | None = None) -> Document:
    """The handout of ``network`` as a document; ``detail`` "full" or "summary" (default: by
    size), ``seed`` for the worked example's values (default: see ``worked_example``)."""
    detail = default_detail(network) if detail is None else detail
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {', '.join(DETAILS)}, got {detail!r}")
    return _Handout(network, DETAILS[detail], seed).document()


def render(network: Network, detail: str | None = None, seed: int | None = None) -> dict[str, str]:
    """``{"handout.tex": ..., "handout.md": ...}`` for ``network``."""
    doc = handout(network, detail, seed)
    return {"handout.tex": tex.render(doc), "handout.md": markdown.render(doc)}


def is_article(network: Network) -> bool:
    from ..presets import article  # a preset to compare with, not something the document needs

    return network.to_dict() == article().to_dict()


class _Handout:
    def __init__(self, network: Network, detail: Detail, seed: int | None) -> None:
        self.network = network
        self.detail = detail
        self.example: WorkedExample = worked_example(network, seed)
        # The example's network is this one when nothing generic had to be made concrete:
        # then one derivation (and one scalar graph) serves both.
        self.d: Derivation = network.derive() if self.example.choices else self.example.derivation
        self.article = is_article(network)
        self.layers: list[LayerGraph] = list(self.d.graph.layers)
        self.detailed = self._detailed_elements()

    # ---- the document -----------------------------------------------------------------------

    def document(self) -> Document:
        name = self.network.name
        subtitle: tuple[Inline, ...] = ("the network ", Code(name))
        if self.article:
            subtitle += (" of ", Emph("Backpropagation in Fully Convolutional Networks"))
        sections = [
            self.notation(),
            self.forward(),
            graph_section(self.d, self.detail, self.article),
            self.backward(),
            worked_section(self.example, self.detail),
        ]
        appendices = [self.chain_rule()]
        rest = self._rest_rows() if self.detail.appendix else []
        if rest:
            appendices.append(self.rest(rest))
        return Document(
            title="Backpropagation, derived symbolically",
            subtitle=subtitle,
            front=(self.introduction(), Contents()),
            sections=tuple(sections),
            appendices=tuple(appendices),
            tags=ARTICLE_TAGS if self.article else {},
        )

    def introduction(self) -> Paragraph:
        article = Emph("Backpropagation in Fully Convolutional Networks (FCNs)")
        checked = (
            "Every formula was derived and typeset by a program from the network alone, "
            "and checked against PyTorch."
        )
        summary = (
            (
                (
                    " This is the summary: per layer the general formulas, the position sets of a few "
                    "nodes and one weight per parameter derived in full; "
                ),
                Code("--detail full"),
                " writes out every node and weight.",
            )
            if self.detail.name == "summary"
            else ()
        )
        if self.article:
            return Paragraph(
                "This handout retraces the article ",
                article,
                " (Towards Data Science) on "
                "its network of figure 7: in its notation, with its formula numbers, and "
                "then with numbers. ",
                checked,
                *summary,
            )
        return Paragraph(
            "This handout derives backpropagation for the network ",
            Code(self.network.name),
            " step by step, in the notation of the article ",
            article,
            " (Towards Data Science), and then works it through with numbers. ",
            checked,
            *summary,
        )

    # ---- 1: notation and the network ----------------------------------------------------------

    def notation(self) -> Section:
        net, layers = self.network, self.layers
        vector = len(net.input_shape) == 1
        sliding = [lg for lg in layers if lg.layer.shows_position_sets]
        weighted = [lg for lg in layers if lg.layer.parameter_shapes(lg.input_shape)]
        flat = all(lg.layer.flat_weights(lg.input_shape) for lg in weighted)
        channels = ", channel after channel" if not vector and net.input_shape[0] > 1 else ""
        rows: list[tuple[str, tuple[Inline, ...]]] = [
            (
                listed("x", len(self.d.graph.x)),
                ("input features",)
                if vector
                else (f"input pixels, numbered row by row{channels}",),
            ),
            (listed("y", len(self.d.graph.y)), ("targets, one per output",)),
        ]
        if sliding:
            rows.append(
                (
                    r"W^{(l)},\ w^{(l)}_{n}",
                    text(
                        "weights of layer $l$ (a kernel, or a neuron's weights) and its $n$-th weight, "
                        "numbered row by row"
                    ),
                )
            )
        else:
            rows.append(
                (
                    r"W^{(l)},\ w^{(l)}_{f,i}",
                    text(
                        "weights of layer $l$: $w^{(l)}_{f,i}$ connects input $i$ to neuron $f$ (numbered "
                        "$w^{(l)}_{n}$ neuron after neuron)"
                    ),
                )
            )
        if not flat:
            rows.append(
                (
                    r"w^{(l)}_{o,c,m,n}",
                    text(
                        "weight of a kernel with several channels: output channel $o$, input channel $c$, "
                        "row $m$, column $n$"
                    ),
                )
            )
        if any(lg.layer.bias for lg in layers):
            rows.append(
                (r"b^{(l)}_{o}", text("bias of output channel (or neuron) $o$ of layer $l$"))
            )
        if not sliding:
            rows.append((r"z^{(l)}_{i}", text("weighted sum of neuron $i$ of layer $l$")))
        else:
            dense = any(not lg.layer.shows_position_sets and lg.activated for lg in layers)
            where = "position (or neuron)" if dense else "position"
            rows.append(
                (
                    r"z^{(l)}_{i}",
                    text(f"weighted sum at {where} $i$ of layer $l$, numbered row by row"),
                )
            )
        rows.append(
            (r"a^{(l)}_{i} = g\left(z^{(l)}_{i}\right)", text("activation of $z^{(l)}_{i}$"))
        )
        if any(not lg.activated for lg in layers):
            rows.append(
                (
                    r"a^{(l)}_{i}",
                    text("output $i$ of a pooling layer $l$: the max or mean of its window"),
                )
            )
        if sliding:
            rows.append(
                (
                    r"p^{(l)}_{i}",
                    text(
                        "position set: the inputs the kernel (or window) covered to form output $i$ of layer "
                        "$l$, in the order of its places; $p^{(l)}_{i}[n]$ is the one weight $n$ multiplied"
                    ),
                )
            )
        rows += [
            (r"g,\ g'", ("activation function and its derivative",)),
            ("L", ("loss, a function of the last activations and the targets",)),
            (r"\partial L / \partial a^{(l)}_{i}", text("upstream gradient of $a^{(l)}_{i}$")),
        ]
        if sliding:
            rows.append((r"M \times N,\ S,\ P", text(r"height $\times$ width, stride, padding")))
        notation = Table(
            (Column("l", 4.3), Column("l", 10.6)),
            (("Symbol",), ("Meaning",)),
            tuple(((Math(symbol),), meaning) for symbol, meaning in rows),
        )
        body = [
            notation,
            Paragraph(
                "The network, layer by layer; shapes are ",
                *(
                    ("features",)
                    if vector
                    else ("channels ", Math(r"\times"), " height ", Math(r"\times"), " width")
                ),
                ":",
            ),
            layer_table(self.layers),
        ]
        activations = list(
            dict.fromkeys(
                _activation(layer.activation).formula
                for layer in net.layers
                if layer.has_activation
            )
        )
        said: list[Inline] = ["Activation: " if len(activations) == 1 else "Activations: "]
        for k, formula in enumerate(activations):
            said += [Math(formula), "." if k == len(activations) - 1 else "; "]
        if net.loss_function.generic:
            said += [" Loss: ", Math("L(a, y)"), ", left generic as in the article."]
        else:
            said += [" Loss (", Code(net.loss), "): ", Math(net.loss_function.formula), "."]
        body.append(Paragraph(*said))
        body += self.size_formula()
        return Section(("Notation and the network",), tuple(body), label="sec:notation")

    def size_formula(self) -> list:
        """Formula (1), in general (with P when some layer pads) and for each sliding layer."""
        padded = any(layer.pads() for layer in self.network.layers)
        rows = []
        for lg in self.layers:
            sides = lg.layer.size_formula(lg.input_shape, padded)
            if sides is not None:
                rows.append(rf"\text{{layer {lg.number}:}} &\quad {sides[0]}, &\quad {sides[1]}")
        if not rows:
            return []
        pm, pn = (" + 2P_M", " + 2P_N") if padded else ("", "")
        general = (
            rf"M_z = \left\lfloor \frac{{M_x{pm} - M_w}}{{S_M}} \right\rfloor + 1, \qquad "
            rf"N_z = \left\lfloor \frac{{N_x{pn} - N_w}}{{S_N}} \right\rfloor + 1"
        )
        padding = ("padded with ", Math("P"), " zeros on each side ") if padded else ()
        return [
            Paragraph(
                "A kernel or window of ",
                Math(r"M_w \times N_w"),
                " sliding with stride ",
                Math("S"),
                " turns an ",
                Math(r"M_x \times N_x"),
                " input ",
                *padding,
                "into an ",
                Math(r"M_z \times N_z"),
                " map:",
            ),
            Equation(general, "size"),
            Paragraph("For the layers of this network:"),
            Equation(" \\\\\n".join(rows)),
        ]

    # ---- 2: the forward pass ----------------------------------------------------------------

    def forward(self) -> Section:
        sliding = any(lg.layer.shows_position_sets for lg in self.layers)
        intro = (
            Paragraph(
                "Each layer computes its nodes from the outputs of the layer before it. A convolution or a "
                "pooling layer reads a window of its input for each node: the position set ",
                Math("p^{(l)}_{i}"),
                " records which inputs it covered, in the order of its places, and the "
                "computational graph of section ",
                Ref("sec:graph"),
                " is built from these sets.",
            )
            if sliding
            else Paragraph(
                "Each layer computes its nodes, its neurons, from the outputs of the layer before it; the "
                "computational graph of section ",
                Ref("sec:graph"),
                " is built from these sums.",
            )
        )
        body: list = [intro]
        if any(layer.pads() for layer in self.network.layers):
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
        body += [self.forward_layer(lg) for lg in self.layers]
        return Section(("The forward pass",), tuple(body), label="sec:forward")

    def forward_layer(self, lg: LayerGraph) -> Section:
        d, detail = self.d, self.detail
        formula = lg.layer.forward_formula(op_notation(lg))
        body: list = [
            Paragraph(*text(formula["note"][0].upper() + formula["note"][1:] + ":")),
            Equation(formula["equation"]),
        ]
        equations = [(d.tex_names[node.symbol], node_rows(d, node, detail.terms)) for node in lg.z]
        shown, more = _budget(equations, detail.rows)
        body += [Paragraph("For this network:"), Equation(_grid(shown))]
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
                    Math(
                        rf"a^{{({lg.number})}}_{{i}} = {applied}, \quad i = {listed('', len(lg.a))}"
                    ),
                    ".",
                )
            )
        if lg.layer.shows_position_sets:
            body += self.position_sets(lg)
        return Section((f"Layer {lg.number}: {lg.layer.title}",), tuple(body), level=2)

    def position_sets(self, lg: LayerGraph) -> list:
        table = position_table(lg)
        count = len(table)
        if self.detail.name == "full" and count <= self.detail.sets:
            chosen = list(range(count))
        else:
            chosen = _spread(lg, self.detail.sets if self.detail.name == "summary" else 24)
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
            Table(
                spec, header, tuple(tuple((Math(c),) if c else ("",) for c in row) for row in rows)
            )
        ]

    # ---- 3: the computational graph -----------------------------------------------------------

    def backward(self) -> Section:
        parts = [
            rf"\frac{{\partial L}}{{\partial W^{{({lg.number})}}}}"
            for lg in reversed(self.layers)
            if f"W{lg.number}" in self.network.parameters
        ]
        article = ", the article's formula (2)," if self.article else ""
        body: list = [
            Paragraph(f"The gradient of the loss with respect to the weights{article} is"),
            Equation(r"\nabla_{W} L = \left[" + ", ".join(parts) + r"\right]", "gradient"),
            Paragraph(
                "We compute it from the last layer back to the first with the chain rule "
                "(appendix ",
                Ref("app:chain"),
                "). At every node, the ",
                Emph("downstream"),
                " gradient sent back to an input is the node's ",
                Emph("upstream"),
                " gradient times its ",
                Emph("local"),
                " gradient with respect to that input; a node that "
                "feeds several others adds up the downstream gradients it gets.",
            ),
        ]
        body += [self.backward_layer(lg) for lg in reversed(self.layers)]
        return Section(("Backpropagation",), tuple(body), label="sec:backward")

    def backward_layer(self, lg: LayerGraph) -> Section:
        d, detail, l = self.d, self.detail, lg.number
        p = printer(d)
        last = l == len(self.layers)
        weights = _flat(d.graph.params[f"W{l}"]) if f"W{l}" in d.graph.params else []
        body: list = []
        if weights:
            body += [
                Paragraph(
                    f"The gradient with respect to the weights of layer {l} is the vector of "
                    "their partial derivatives:"
                ),
                Equation(self.vector(lg), f"vector{l}"),
            ]
        # upstream gradients: the loss's own derivatives, or the sums over the next layer
        following = None if last else self.layers[l]
        if last:
            if self.network.loss_function.generic:
                body.append(
                    Paragraph(
                        "The upstream gradients of the last activations, ",
                        Math(rf"\partial L / \partial a^{{({l})}}_{{k}}"),
                        ", are the loss's own partial derivatives; with ",
                        Math("L"),
                        " generic they stay as they are.",
                    )
                )
            else:
                rows = [
                    (
                        d.tex_names[s],
                        break_expr(d.upstream(s), p) or [Row(p.doprint(d.upstream(s)))],
                    )
                    for s in lg.upstream
                ]
                shown, more = _budget(rows, max(detail.rows, 4))
                body += [
                    Paragraph(
                        "The upstream gradients of the last activations are the loss's own "
                        "partial derivatives:"
                    ),
                    Equation(_grid(shown)),
                ]
                if more:
                    body.append(Paragraph(f"… and {more:,} more of the same form."))
        else:
            formula = following.layer.upstream_formula(op_notation(following))
            rows = [
                (
                    d.tex_names[s],
                    sum_rows(
                        elide([term_latex(t, p) for t in d.upstream_terms_of(s)], *detail.terms)
                    ),
                )
                for s in self._upstream_shown(lg)
            ]
            shown, more = _budget(rows, detail.rows)
            more += len(lg.upstream) - len(rows)
            body += [
                Paragraph(
                    f"Each output of layer {l} feeds {formula['feeds']}, so its upstream "
                    "gradient is the sum of the downstream gradients it gets back from each. "
                    "For this network:",
                    lead="Upstream gradients.",
                ),
                Equation(_grid(shown), f"upstream-list{l}"),
            ]
            if more:
                body.append(Paragraph(f"… and {more:,} more of the same form."))
        # one weight worked symbolically
        parameters = [
            (kind, _flat(d.graph.params[f"{kind}{l}"]))
            for kind in "Wb"
            if f"{kind}{l}" in d.graph.params
        ]
        first = weights[0] if weights else None
        if first is not None:
            shared = lg.layer.shows_position_sets
            why = (
                "The kernel is shared: each weight was used at many positions, so its gradient "
                "collects one term per position, the upstream gradient of that position's output "
                "times the local gradient there."
                if shared
                else "Each weight connects one input to one neuron, a single dependency: its gradient is "
                "one upstream gradient times one local gradient."
            )
            used = f", used at {plural(len(d.terms(first)), 'position')}" if shared else ""
            body += [
                Paragraph(
                    why, " For ", Math(d.tex_names[first]), f"{used}:", lead="Weight gradients."
                ),
                *self.derivation(first, f"example{l}"),
            ]
        # the general formulas
        general: list = []
        if following is not None:
            formula = following.layer.upstream_formula(op_notation(following))
            general += [
                Equation(formula["equation"], f"upstream{l}"),
                Paragraph("where ", *text(formula["note"]), "."),
            ]
        weight = lg.layer.weight_formula(op_notation(lg))
        if weight is not None:
            general += [
                Equation(weight["equation"], f"general{l}"),
                Paragraph(*text(weight["note"][0].upper() + weight["note"][1:] + ".")),
            ]
            if weight["bias"]:
                general += [
                    Paragraph(
                        "A bias is added to the sums with coefficient 1, so its local gradient is ",
                        Math(r"\partial a / \partial z"),
                        " alone:",
                    ),
                    Equation(weight["bias"]),
                ]
        if general:
            cites = []
            if following is not None:
                cites.append(("the upstream gradient of every output", f"upstream-list{l}"))
            if first is not None:
                cites.append(("every weight", f"example{l}"))
            said: list[Inline] = ["The same steps for "]
            for k, (what, key) in enumerate(cites):
                said += [
                    f"{what} (generalising ",
                    EqRef(key),
                    ")",
                    " and for " if k < len(cites) - 1 else ":",
                ]
            if not cites:
                said = ["In general:"]
            body += [Paragraph(*said, lead="In general."), *general]
        if not weights:
            body.append(
                Paragraph(
                    "This layer has no weights: it only passes the gradients back to its "
                    "inputs"
                    + (f", as the upstream gradients of layer {l - 1} say." if l > 1 else ".")
                )
            )
        body += self.other_weights(lg, parameters)
        body += self.tensor_view(lg)
        return Section(
            (f"Layer {l} ({lg.layer.title})",), tuple(body), label=f"sec:backward{l}", level=2
        )

    def vector(self, lg: LayerGraph) -> str:
        """∂L/∂W^{(l)} = [∂L/∂w_1, …, ∂L/∂w_N] (and the same for b^{(l)}), the article's (3), (6), (14)."""
        rows = []
        for kind in "Wb":
            name = f"{kind}{lg.number}"
            if name not in self.d.graph.params:
                continue
            elements = _flat(self.d.graph.params[name])
            shown = [
                partial(self.d, s)
                for s in (elements if len(elements) <= 4 else [elements[0], elements[1]])
            ]
            if len(elements) > 4:
                shown += [r"\ldots", partial(self.d, elements[-1])]
            rows.append(
                rf"\frac{{\partial L}}{{\partial {kind}^{{({lg.number})}}}} &= \left["
                + ", ".join(shown)
                + r"\right]"
            )
        return " \\\\\n".join(rows)

    def _upstream_shown(self, lg: LayerGraph) -> list[sympy.Symbol]:
        """The upstream symbols of a layer whose formulas are written: all in full detail (the
        budget cuts them), a spread of ``rows`` in a summary."""
        if self.detail.name == "full":
            return list(lg.upstream[: self.detail.rows + 1])
        return [lg.upstream[i] for i in _spread(lg, self.detail.rows)]

    def derivation(self, element: sympy.Symbol, key: str | None = None) -> list:
        """∂L/∂element in chain form, and in closed form when short and asked for."""
        d = self.d
        p = printer(d)
        rows = sum_rows(elide([term_latex(t, p) for t in d.terms(element)], *self.detail.terms))
        lhs = partial(d, element)
        blocks: list = [Equation(aligned(lhs, rows), key)]
        if self.detail.closed_forms:
            closed = closed_form(d, element)
            if closed.rows:
                blocks += [
                    Paragraph(
                        "In closed form, in ", Math("x"), ", ", Math("y"), " and the weights alone:"
                    ),
                    Equation(aligned(lhs, closed.rows)),
                ]
                if closed.simplified:
                    blocks += [
                        Paragraph("and with common factors pulled out:"),
                        Equation(aligned(lhs, closed.simplified)),
                    ]
            else:
                size = f"{closed.size:,}" if closed.exact else f"more than {closed.size:,}"
                blocks.append(
                    Paragraph(
                        "Written out in closed form, in ",
                        Math("x"),
                        ", ",
                        Math("y"),
                        " and the "
                        f"weights alone, this gradient takes {size} nodes of expression tree: "
                        "too long to print. The chain form, evaluated after the forward pass, "
                        "is the same function at a fraction of the cost.",
                    )
                )
        return blocks

    def other_weights(self, lg: LayerGraph, parameters: list) -> list:
        """The rest of a layer's parameters: in full detail each shown weight's derivation (a grid
        of one-liners when they are all single terms), in a summary a table of term counts."""
        d = self.d
        blocks: list = []
        if self.detail.name == "summary":
            rows = []
            for kind, elements in parameters:
                counts = [len(d.terms(s)) for s in elements]
                span = (
                    f"{min(counts):,}"
                    if min(counts) == max(counts)
                    else f"{min(counts):,} to {max(counts):,}"
                )
                tex_name = f"{kind}^{{({lg.number})}}"
                rows.append(((Math(tex_name),), (f"{len(elements):,}",), (span,)))
            if rows:
                blocks += [
                    Paragraph(
                        "Every element of the layer's parameters is derived in the same way, "
                        "each with one term per position where it was used:"
                    ),
                    Table(
                        (Column("l"), Column("r"), Column("r")),
                        (("Parameter",), ("Elements",), ("Terms each",)),
                        tuple(rows),
                    ),
                ]
            bias = [elements[0] for kind, elements in parameters if kind == "b"]
            for element in bias:
                blocks += [Paragraph("For the first bias:"), *self.derivation(element)]
            return blocks
        for kind, elements in parameters:
            shown = [
                s for s in elements if s in self.detailed and not (kind == "W" and s == elements[0])
            ]
            hidden = len(elements) - len([s for s in elements if s in self.detailed])
            tex_name = f"{kind}^{{({lg.number})}}"
            if hidden:
                count = len(elements) - hidden
                blocks.append(
                    Paragraph(
                        f"Derived in full here: {count} of the {len(elements):,} elements of ",
                        Math(tex_name),
                        f"; the other {hidden:,} follow the same pattern (appendix ",
                        Ref("app:rest"),
                        ").",
                    )
                )
            p = printer(d)  # one printer: it remembers what it printed
            derivations = [
                (
                    s,
                    sum_rows(
                        elide([term_latex(t, p) for t in d.terms(s)], *self.detail.terms)
                    ),
                )
                for s in shown
            ]
            if not derivations:
                continue
            single = all(len(rows) == 1 for _, rows in derivations)
            if single and len(derivations) > 1:
                what = "the other weights" if kind == "W" else "the biases"
                blocks += [
                    Paragraph(f"And {what} of this layer:"),
                    Equation(_grid([(partial(d, s), rows) for s, rows in derivations])),
                ]
            else:
                for s, rows in derivations:
                    used = (
                        f", used at {plural(len(d.terms(s)), 'position')}"
                        if lg.layer.shows_position_sets
                        else ""
                    )
                    blocks += [
                        Paragraph("For ", Math(d.tex_names[s]), f"{used}:"),
                        Equation(aligned(partial(d, s), rows)),
                    ]
        return blocks

    def tensor_view(self, lg: LayerGraph) -> list:
        """The layer's general formulas for every index at once — forward, δ, ∂L/∂W, ∂L/∂b,
        ∂L/∂(input) — derived by the engine from the operation's index form
        (``Derivation.formulas``), and the facts students remember, each checked against them."""
        return tensor_blocks(self.d.formulas(lg.number))

    def _detailed_elements(self) -> set[sympy.Symbol]:
        """The weights derived in full: in full detail all of a small network, else a spread of a
        few per parameter (the first, the last and evenly between); in a summary the first."""
        arrays_ = [_flat(self.d.graph.params[name]) for name in self.network.parameters]
        if self.detail.derived is not None:
            return {a[0] for a in arrays_}
        if sum(len(a) for a in arrays_) <= DETAILED_TOTAL:
            return {s for a in arrays_ for s in a}
        chosen = set()
        for elements in arrays_:
            count = min(DETAILED_PER_PARAMETER, len(elements))
            chosen |= {
                elements[round(k * (len(elements) - 1) / max(1, count - 1))] for k in range(count)
            }
        return chosen

    # ---- appendices ---------------------------------------------------------------------------

    def chain_rule(self) -> Section:
        single, gradients = chain_rule_diagrams()
        body = [
            Paragraph(
                "If ",
                Math("a(t)"),
                " is differentiable in ",
                Math("t"),
                " and ",
                Math("z(a)"),
                " in ",
                Math("a"),
                ", then",
                lead="A single dependency.",
            ),
            Equation(r"\frac{d z}{d t} = \frac{d z}{d a} \cdot \frac{d a}{d t}", "single"),
            Paragraph(
                "If ",
                Math("a_1(t)"),
                " and ",
                Math("a_2(t)"),
                " are differentiable in ",
                Math("t"),
                " and ",
                Math("z(a_1, a_2)"),
                " in both, then ",
                Math("t"),
                " reaches ",
                Math("z"),
                " along two paths, and their contributions add up:",
                lead="Several dependencies.",
            ),
            Equation(
                r"\frac{d z}{d t} = \frac{\partial z}{\partial a_1} \cdot \frac{d a_1}{d t} + "
                r"\frac{\partial z}{\partial a_2} \cdot \frac{d a_2}{d t}",
                "multiple",
            ),
            Figure(single),
            Paragraph(
                "In backpropagation every node works on its own. A node ",
                Math("z"),
                " with inputs ",
                Math("a_1, a_2"),
                " receives from the nodes it feeds its ",
                Emph("upstream gradient"),
                " ",
                Math(r"\partial L / \partial z"),
                "; it knows its ",
                Emph("local gradients"),
                " ",
                Math(r"\partial z / \partial a_k"),
                ", one per input; and it sends back to each input the ",
                Emph("downstream gradient"),
                ", their product:",
                lead="Upstream, local and downstream gradients.",
            ),
            Equation(
                r"\underbrace{\frac{\partial L}{\partial a_k}}_{\text{downstream}} = "
                r"\underbrace{\frac{\partial L}{\partial z}}_{\text{upstream}} \cdot "
                r"\underbrace{\frac{\partial z}{\partial a_k}}_{\text{local}}"
            ),
            Figure(gradients),
            Paragraph(
                "For a weighted sum ",
                Math(r"z = \sum_k w_k v_k"),
                " the local gradients are ",
                Math(r"\partial z / \partial v_k = w_k"),
                " and ",
                Math(r"\partial z / \partial w_k = v_k"),
                "; for an activation ",
                Math("a = g(z)"),
                " it is ",
                Math("g'(z)"),
                "; for a max, 1 for the "
                "input that won and 0 for the others. A node that feeds several others adds up the "
                "downstream gradients it receives: that is the rule for several dependencies, and the "
                "reason for every sum in section ",
                Ref("sec:backward"),
                ".",
            ),
        ]
        return Section(
            ("The chain rule, and the gradients at a node",), tuple(body), label="app:chain"
        )

    def _rest_rows(self) -> list:
        d = self.d
        rows = []
        for name in self.network.parameters:
            for element in _flat(d.graph.params[name]):
                if element not in self.detailed:
                    terms = d.terms(element)
                    pieces = [
                        rf"\partial L / \partial {d.tex_names[t.z]}"
                        + ("" if t.factor == 1 else rf" \cdot {d.tex_names[t.factor]}")
                        for t in terms
                    ]
                    rows.append(
                        (
                            (Math(d.tex_names[element]),),
                            (str(len(terms)),),
                            (Math(" + ".join(elide(pieces, 6, 3, 1)) or "0"),),
                        )
                    )
        return rows

    def rest(self, rows: list) -> Section:
        body = [
            Paragraph(
                "The gradient of each weight not derived in full in section ",
                Ref("sec:backward"),
                ", one term per position where it was used, written with ",
                Math(
                    r"\partial L / \partial z^{(l)}_{i} = \partial L / \partial a^{(l)}_{i} \cdot "
                    r"\partial a^{(l)}_{i} / \partial z^{(l)}_{i}"
                ),
                ":",
            ),
            Table(
                (Column("l"), Column("r"), Column("l", 11.4)),
                (("Weight",), ("Terms",), (Math(r"\partial L / \partial w"),)),
                tuple(rows),
            ),
        ]
        return Section(("The other weights",), tuple(body), label="app:rest")


# ---- helpers -------------------------------------------------------------------------------------


def _grid(equations: list[tuple[str, list[Row]]]) -> str:
    """Equations as ``align`` rows; short one-row ones two to a row, as a table of results."""
    if len(equations) > 1 and all(
        len(rows) == 1 and tex_width(lhs) + tex_width(rows[0].tex) <= 18.0
        for lhs, rows in equations
    ):
        pairs = [equations[k : k + 2] for k in range(0, len(equations), 2)]
        return " \\\\\n".join(
            " & ".join(f"{lhs} &= {rows[0].tex}" for lhs, rows in pair) for pair in pairs
        )
    return " \\\\\n".join(aligned(lhs, rows) for lhs, rows in equations)


def _budget(equations: list[tuple[str, list[Row]]], limit: int) -> tuple[list, int]:
    """The first equations that fit in ``limit`` rows (at least one, two when the limit allows),
    and how many are left."""
    shown, used = [], 0
    for lhs, rows in equations:
        if len(shown) >= min(2, limit) and used + len(rows) > limit:
            break
        shown.append((lhs, rows))
        used += len(rows)
    return shown, len(equations) - len(shown)


def _spread(lg: LayerGraph, count: int) -> list[int]:
    """``count`` node indices of a layer worth showing: the first (a corner), one from the middle
    of the first map, the last, and evenly between."""
    total = len(lg.z)
    if total <= count:
        return list(range(total))
    shape = lg.output_shape
    middle = (shape[1] // 2) * shape[2] + shape[2] // 2 if len(shape) == 3 else total // 2
    chosen = [0, middle, total - 1]
    k = 1
    while len(set(chosen)) < count:
        chosen.append(round(k * (total - 1) / (count + 1)))
        k += 1
    return sorted(set(chosen))[:count] if count >= 3 else sorted(set(chosen[:count]))


__all__ = ["DETAILS", "Detail", "default_detail", "handout", "is_article", "render"]
