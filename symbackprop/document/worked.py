"""The handout's worked example: the network with numbers, every one computed by the engine.

The values (``example.worked_example``), the forward pass by hand (a weighted sum, a pooling
window, an interpolation), each layer's table of z, a, ∂L/∂a and ∂L/∂z, the loss and every
gradient; then the backward pass by hand: the loss's own gradient at one output (per pixel
for a map scored by a softmax), the last layer's first weight factor for factor, the first
convolution's shared weight term by term, a pooling window's routing, and ∂L/∂W of the
first convolution as the cross-correlation of its input with δ, computed by the tensor
view's own fact. Numbers are written one way per kind (``numbers``: given, computed,
gradients).

Imports ``network``, ``derive``, ``latex``, ``activations`` (and what they build on), numpy
and the rest of the document package.
"""

from __future__ import annotations

from itertools import product

import numpy as np
import sympy

from ..activations import activation as _activation
from ..graph import LayerGraph
from ..latex import NotationPrinter, Row, aligned, partial, sum_rows
from ..losses import groups as loss_groups
from .common import (
    LINE_WIDTH,
    Detail,
    arrays,
    capital_letter,
    correlation_padding,
    elide,
    formula_row,
    input_letter,
    labelled_cells,
    lines,
    loss_formula,
    node_by_hand,
    op_notation,
    plural,
    printer,
    prose,
    slashed,
    subscripted,
    tensor_indices,
    terms_by_hand,
    text,
    whole_matrix,
)
from .context import forks, parameter_tex, paths_of, via_tex, weights_of
from .example import WorkedExample, is_bias, layer_values, weight_scale
from .nodes import (
    Code,
    Column,
    Displays,
    Equation,
    Inline,
    Keep,
    Math,
    Paragraph,
    Ref,
    Section,
    Table,
)


def worked_section(example: WorkedExample, detail: Detail) -> Section:
    """Section 5: the worked example."""
    return _Worked(example, detail).worked()


class _Worked:
    def __init__(self, example: WorkedExample, detail: Detail) -> None:
        self.example, self.detail = example, detail

    def worked(self) -> Section:
        ex, detail = self.example, self.detail
        d = ex.derivation
        body: list = [self.choices(), self.values()]
        inputs = arrays(ex.x, subscripted("X"), ex.formats.given, detail.matrix_rows, detail.matrices)
        out = ex.network.shapes[-1]
        targets = ex.y.reshape(out) if len(out) == 3 else ex.y  # a map's targets, as maps
        inputs += arrays(targets, subscripted("y") if len(out) == 3 else (lambda _: "y"), ex.formats.given,
                         detail.matrix_rows, detail.matrices)
        params = []
        for name in [*ex.network.parameters, *ex.network.buffers]:
            params += arrays(
                ex.params[name],
                subscripted(parameter_tex(ex.network, name)),
                ex.formats.given,
                detail.matrix_rows,
                detail.matrices,
            )
        body.append(Displays(tuple(lines(inputs + params))))
        # forward by hand
        layers = list(d.graph.layers)
        weighted = [lg for lg in layers if weights_of(d, lg.number) is not None]
        shown = self.forward_shown(layers, weighted)
        body.append(
            Paragraph(
                "The forward pass fills in the ",
                Math("z"),
                " and ",
                Math("a"),
                " columns of the tables below from the first layer to the last"
                + ("; for instance" if shown else "."),
            )
        )
        for k, lg in enumerate(shown):
            node = lg.z[0]
            if k:
                body.append(Paragraph(f"and the first output of the {lg.layer.title} layer {lg.number} is"))
            body.append(Equation(aligned(d.tex_names[node.symbol], self.by_hand(node))))
        body.append(
            Paragraph(
                "The backward pass fills in the gradient columns from the last layer to the "
                "first, with ",
                Math(
                    r"\partial L / \partial z = \partial L / \partial a \cdot "
                    r"\partial a / \partial z"
                ),
                " at every node.",
            )
        )
        for lg in layers:
            body += self.example_table(lg)
        gradients = []
        for name in ex.network.parameters:
            tex_name = parameter_tex(ex.network, name)
            gradients += arrays(
                ex.gradients[name],
                lambda sub, t=tex_name: (
                    rf"\frac{{\partial L}}{{\partial {t if sub is None else f'{t}_{{{sub}}}'}}}"
                ),
                ex.formats.gradient,
                detail.matrix_rows,
                detail.matrices,
            )
        loss = Math(f"L = {ex.formats.value(ex.loss)}")
        if gradients:
            body += [
                Paragraph("The loss is ", loss, ", and the gradients of the weights are"),
                Displays(tuple(lines(gradients))),
            ]
        else:
            body.append(Paragraph("The loss is ", loss, "; the network has no weights to train."))
        pools = [lg for lg in layers if not lg.activated and lg.layer.position_note()]
        body += self.loss_by_hand()
        body += self.paths_by_hand()
        body += self.single_by_hand(weighted)
        body += self.shared_by_hand(weighted)
        body += self.routing_by_hand(pools)
        body += self.correlation_by_hand(weighted)
        body.append(
            Paragraph(
                "PyTorch's automatic differentiation gives the same numbers for the same network "
                "and values: symbackprop's tests compare its worked examples with it, and ",
                Code("symbackprop check"),
                " compares the derivation of any network.",
            )
        )
        return Section(("A worked example",), tuple(body), label="sec:example")

    def choices(self) -> Paragraph:
        """What stood in for a generic g or L."""
        ex = self.example
        if not ex.choices:
            return Paragraph("Now with numbers.")
        said: list[Inline] = ["Now with numbers, for which the generic functions need a concrete choice: "]
        if "g" in ex.choices:
            said += [Math("g"), " is the sigmoid, ", Math(_activation("sigmoid").formula)]
        if "loss" in ex.choices:
            said += [
                ", and " if "g" in ex.choices else "",
                Math("L"),
                " is half the sum of squared errors, ",
                Math(loss_formula(ex.network)),
            ]
        return Paragraph(*said, ".")

    def values(self) -> Paragraph:
        """Where the numbers come from, and how they are written."""
        ex = self.example
        fmt_v, fmt_g = ex.formats.value, ex.formats.gradient
        rounded = (
            "Computed numbers are written with four significant digits (trailing zeros kept)"
            + (", gradients in scientific notation throughout" if fmt_g.scientific else "")
            + (", values too" if fmt_v.scientific else "")
            + "; each is computed from the exact numbers before it, so a sum of printed terms "
            "may differ from the printed result in its last digit."
        )
        if ex.seed is None:
            return Paragraph("The values are given: inputs, targets and weights as below. " + rounded)
        scaled = {
            weight_scale(shape) for name, shape in ex.network.parameters.items() if not is_bias(ex.network, name)
        } - {1.0}
        scaling = (
            " (the weights of a layer whose nodes sum many inputs scaled down by a power of ten, "
            "so that its sums stay of order one)"
            if scaled
            else ""
        )
        seed = f"seed {ex.seed}"
        dead, total = ex.dead
        if total:
            tries = "" if ex.draw == 0 else f", drawn {ex.draw + 1} times until at most half of the ReLUs were dead"
            seed += f"{tries} ({dead} of the {total} ReLUs dead here, so that the example shows gradients"
            seed += " rather than zeros)"
        return Paragraph(
            f"The values are drawn with {seed}: inputs in ",
            Math("[0, 1]"),
            " and weights in ",
            Math(r"\pm[0.1, 1]"),
            f" with one decimal{scaling}, so that the forward pass can be followed by hand. " + rounded,
        )

    def forward_shown(self, layers: list[LayerGraph], weighted: list[LayerGraph]) -> list[LayerGraph]:
        """The layers whose first node is computed by hand: the first with weights, the first of
        each kind that reads a window (a pool, an interpolation, a transposed convolution) and
        the first join; in layer order."""
        chosen = weighted[:1]
        titles = {lg.layer.title for lg in chosen}
        for lg in layers:
            windowed = lg.layer.position_note() and lg.layer.title not in titles
            if windowed or (len(lg.sources) > 1 and not any(len(c.sources) > 1 for c in chosen)):
                chosen.append(lg)
                titles.add(lg.layer.title)
        return sorted(chosen, key=lambda lg: lg.number)

    def by_hand(self, node) -> list[Row]:
        """A node's formula, then the same with the example's numbers, then its value."""
        ex = self.example
        return node_by_hand(ex.derivation, node, ex.show, self.detail.terms)

    def example_table(self, lg: LayerGraph) -> list:
        ex, l = self.example, lg.number
        columns = layer_values(ex, lg)
        fmt = {
            "z": ex.formats.value,
            "a": ex.formats.value,
            "da": ex.formats.gradient,
            "dz": ex.formats.gradient,
        }
        heads = {
            "z": f"z^{{({l})}}_{{i}}",
            "a": f"a^{{({l})}}_{{i}}",
            "da": rf"\partial L / \partial a^{{({l})}}_{{i}}",
            "dz": rf"\partial L / \partial z^{{({l})}}_{{i}}",
        }
        count = len(next(iter(columns.values())))
        shown = min(count, self.detail.example_rows)
        rows = tuple(
            ((str(i + 1),), *((Math(fmt[k](columns[k][i])),) for k in columns))
            for i in range(shown)
        )
        table = Table(
            tuple(Column("r") for _ in range(len(columns) + 1)),
            ((Math("i"),), *((Math(heads[k]),) for k in columns)),
            rows,
        )
        intro = Paragraph(
            f"Layer {l} ({lg.layer.title})"
            + (f", the first {shown} of its {count:,} nodes:" if shown < count else ":")
        )
        return [intro, table]

    def loss_by_hand(self) -> list:
        """Where a softmax scores the outputs (per pixel for a map), the loss's gradient at the
        first output with numbers: the softmax of its group minus the target."""
        ex, d = self.example, self.example.derivation
        net = ex.network
        if not net.loss_function.grouped:
            return []
        last = d.graph.layers[-1]
        group = loss_groups(net.shapes[-1])[0]
        outputs = [last.outputs[k].symbol for k in group]
        targets = [d.graph.y[k] for k in group]
        scores = [ex.value(a) for a in outputs]
        top = max(scores)
        softmax = np.exp(np.array(scores) - top) / np.sum(np.exp(np.array(scores) - top))
        total = sum(ex.value(y) for y in targets)
        fmt_v, fmt_g = ex.formats.value, ex.formats.gradient
        name = d.tex_names[outputs[0]]
        exps = " + ".join(elide([f"e^{{{d.tex_names[a]}}}" for a in outputs], 5, 3, 1))
        sum_y = " + ".join(elide([ex.show(y) for y in targets], 5, 3, 1))
        upstream = last.upstream[group[0]]
        where = (
            f"pixel 1 of the {net.shapes[-1][0]} score maps: its {len(group)} scores, one per class"
            if len(net.shapes[-1]) == 3
            else f"the {len(group)} outputs"
        )
        rows = [
            Row(rf"\frac{{e^{{{name}}}}}{{{exps}}} \cdot \left({sum_y}\right) - {ex.show(targets[0])}"),
            Row(rf"= {fmt_v(softmax[0])} \cdot {fmt_v(total)} - {ex.show(targets[0])}"),
            Row(f"= {fmt_g(ex.values[upstream])}"),
        ]
        pairs = [f"{d.tex_names[a]} = {ex.show(a)}" for a in outputs]
        return [
            Paragraph("The backward pass starts at the loss. The softmax runs over ", where, ":"),
            Displays(tuple(r" \qquad ".join(pairs[k : k + 5]) for k in range(0, len(pairs), 5))),
            Paragraph(
                "the gradient at a score is the softmax there times the sum of the targets, minus "
                "its own target (the softmax minus the target, for targets that sum to one):",
            ),
            Equation(aligned(d.tex_names[upstream], rows)),
        ]

    def paths_by_hand(self) -> list:
        """Where the network forks, one output's upstream gradient with numbers: what each layer
        reading it sends back, term by term, and their sum (the article's rule (20))."""
        ex, d = self.example, self.example.derivation
        found = forks(d.network)
        if not found:
            return []
        lg = d.graph.layers[found[0] - 1]
        fmt_g = ex.formats.gradient

        def paths(symbol) -> dict[int, list]:
            return paths_of(d, d.upstream_terms_of(symbol))

        readers = len(d.network.consumers(lg.number))

        def forked(symbol) -> bool:  # every reader reads it (a strided shortcut skips some)
            return len(paths(symbol)) == readers

        def alive(symbol) -> bool:  # and every path brings back something (no dead ReLU on it)
            return forked(symbol) and all(
                abs(sum(ex.value(t.expr) for t in terms)) > 1e-12 for terms in paths(symbol).values()
            )

        symbol = next(
            (s for s in lg.upstream if alive(s)),
            next((s for s in lg.upstream if forked(s)), lg.upstream[0]),
        )
        name = d.tex_names[symbol]
        output = d.tex_names[lg.outputs[lg.upstream.index(symbol)].symbol]
        grouped = paths(symbol)
        values = {k: sum(ex.value(t.expr) for t in terms) for k, terms in grouped.items()}
        readers = [d.graph.layers[k - 1] for k in grouped]
        named = ", ".join(f"{r.number} ({r.layer.title})" for r in readers[:-1])
        named += f" and {readers[-1].number} ({readers[-1].layer.title})"
        rows = []
        for k, terms in grouped.items():
            rows.append(
                aligned(
                    via_tex(name, k),
                    terms_by_hand(d, terms, ex.show, fmt_g(values[k]), self.detail.terms),
                )
            )
        total = [
            Row(" + ".join(via_tex(name, k) for k in grouped)),
            Row("= " + " + ".join(f"({fmt_g(v)})" for v in values.values())),
            Row(f"= {fmt_g(ex.values[symbol])}"),
        ]
        rows.append(aligned(name, total))
        return [
            Paragraph(
                "Where the network forks, the numbers follow the rule for several dependencies. "
                "The output ",
                Math(output),
                f" of layer {lg.number} is read by layers {named}; each path sends back its own "
                "terms, upstream gradient times local gradient, and the upstream gradient of ",
                Math(output),
                " is their sum (section ",
                Ref(f"sec:backward{lg.number}"),
                "):",
            ),
            Equation(" \\\\\n".join(rows)),
        ]

    def single_by_hand(self, weighted: list[LayerGraph]) -> list:
        """The last weighted layer's first weight: its terms, factor for factor, with numbers."""
        if not weighted:
            return []
        ex, d = self.example, self.example.derivation
        lg = weighted[-1]
        weights = weights_of(d, lg.number)
        weight = weights.elements[0]
        result = ex.formats.gradient(ex.gradients[weights.name].reshape(-1)[0])
        rows = terms_by_hand(d, d.terms(weight), ex.show, result, self.detail.terms)
        return [
            Paragraph(
                "For instance, for ",
                Math(d.tex_names[weight]),
                ", upstream gradient times local gradient, factor for factor:",
            ),
            Equation(aligned(partial(d, weight), rows)),
        ]

    def shared_by_hand(self, weighted: list[LayerGraph]) -> list:
        """The first convolution's first weight in full: every term it collects, with numbers;
        a long list shows its first and last rows, and the sum beneath the same terms."""
        ex, d = self.example, self.example.derivation
        shared = [lg for lg in weighted if len(d.terms(weights_of(d, lg.number).elements[0])) > 1]
        if not shared:
            return []
        lg = shared[0]
        weights = weights_of(d, lg.number)
        l, weight = lg.number, weights.elements[0]
        terms = d.terms(weight)
        fmt_g = ex.formats.gradient
        p = printer(d)
        positions = {z: i for i, z in enumerate((n.symbol for n in lg.z), start=1)}
        shown = elide(list(range(len(terms))), *self.detail.terms)
        has_local = any(t.local != 1 for t in terms)
        local_head = (
            p.doprint(terms[0].local).replace(f"_{{{positions[terms[0].z]}}}", "_{i}")
            if has_local
            else None
        )
        rows = []
        for k in shown:
            if not isinstance(k, int):  # the gap
                rows.append(tuple((Math(r"\vdots"),) for _ in range(4 + has_local)))
                continue
            t = terms[k]
            cells = [(str(positions[t.z]),), (Math(ex.show(t.upstream)),)]
            if has_local:
                cells.append((Math(ex.show(t.local)),))
            cells += [
                (Math(f"{d.tex_names[t.factor]} = {ex.show(t.factor)}"),),
                (Math(fmt_g(ex.value(t.expr))),),
            ]
            rows.append(tuple(cells))
        header = [(Math("i"),), (Math(rf"\partial L / \partial a^{{({l})}}_{{i}}"),)]
        if has_local:
            header.append((Math(local_head),))
        header += [(Math(rf"{input_letter(lg)}_{{p^{{({l})}}_{{i}}[1]}}"),), ("product",)]
        aligns = "r" * len(header)
        products = [f"({fmt_g(ex.value(t.expr))})" for t in terms]
        total = fmt_g(ex.gradients[weights.name].reshape(-1)[0])
        sums = sum_rows(elide(products, *self.detail.terms))
        cut = len(shown) < len(terms)
        head = shown.index(r"\cdots") if cut else len(shown)
        return [Keep(
            Paragraph(
                "A shared weight collects one term per position where it was used. The first weight "
                f"of layer {l}'s kernel, ",
                Math(d.tex_names[weight]),
                f", was used at {plural(len(terms), 'position')}; one row each"
                + (f" (the first {head} and the last {len(shown) - head - 1})" if cut else "")
                + ", upstream gradient times local gradient:",
            ),
            Table(tuple(Column(a) for a in aligns), tuple(header), tuple(rows)),
        ),
            Paragraph(
                "and the sum of the products is the gradient"
                + (" (the rows left out above are the terms left out below):" if cut else ":")
            ),
            Equation(aligned(partial(d, weight), sums + [Row(f"= {total}")])),
        ]

    def routing_by_hand(self, pools: list[LayerGraph]) -> list:
        """One window's backward step with numbers, for a layer without weights that reads
        windows (a pool, an interpolation): each input's local gradient (the first maximum's 1,
        1/K, an interpolation weight) times the output's upstream gradient."""
        if not pools:
            return []
        ex, d = self.example, self.example.derivation
        lg = pools[0]
        widest = max(len(node.inputs) for node in lg.z)  # an output that reads the most
        k = next(k for k, node in enumerate(lg.z) if len(node.inputs) == widest)
        l, node = lg.number, lg.z[k]
        upstream = lg.upstream[k]
        fmt_g = ex.formats.gradient
        rows = []
        for variable, local in node.local():
            rows.append(
                (
                    (Math(f"{d.tex_names[variable]} = {ex.show(variable)}"),),
                    (Math(self.exact(local)),),
                    (Math(fmt_g(ex.value(upstream) * ex.value(local))),),
                )
            )
        following = lg.layer.upstream_formula(op_notation(lg, lg.sources[0]))
        which = "first output" if k == 0 else "output"
        return [Keep(
            Paragraph(
                f"Backwards through the {lg.layer.title} layer {l}: its {which} ",
                Math(d.tex_names[node.symbol]),
                " has the upstream gradient ",
                Math(f"{slashed(d.tex_names[upstream])} = {ex.show(upstream)}"),
                " and sends each input it read that times its local gradient; ",
                *text(following["note"]) + (".",),
            ),
            Table(
                (Column("l"), Column("r"), Column("r")),
                (
                    ("input",),
                    (
                        Math(
                            rf"\partial {d.tex_names[node.symbol]} / \partial {input_letter(lg)}_{{j}}"
                        ),
                    ),
                    ("downstream",),
                ),
                tuple(rows),
            ),
        )]

    def exact(self, local: sympy.Expr) -> str:
        """A local gradient that is exact — a constant (1/4, an interpolation's 3/16) or an
        Iverson bracket's 0 or 1 — as that; anything else as a computed value."""
        if local.is_Number:
            return NotationPrinter({}).doprint(local)
        value = self.example.value(local)
        return str(round(value)) if abs(value - round(value)) < 1e-12 else self.example.formats.value(value)

    def correlation_by_hand(self, weighted: list[LayerGraph]) -> list:
        """∂L/∂W of the first convolution as the cross-correlation of its input with δ = ∂L/∂z,
        with numbers: the tensor view's fact, evaluated by the engine at the example's values
        (shown for stride 1 and no dilation, where δ slides as it is, and one channel pair).
        The tensor view counts from 0, and so does this part, saying so."""
        convs = [lg for lg in weighted if lg.layer.position_note()]
        if not convs:
            return []
        lg = convs[0]
        if not lg.layer.correlates():
            return []
        ex, l = self.example, lg.number
        d = ex.derivation
        _, height, width = lg.output_shape
        delta_symbols = list(lg.z_upstream or lg.upstream)
        deltas = [ex.values[s] for s in delta_symbols]
        inputs = [ex.values[s] for s in lg.read]
        first_weight = weights_of(d, l)
        kh, kw = ex.network.parameters[first_weight.name][-2:]
        pad_h, pad_w = correlation_padding(lg.input_shape, lg.output_shape, (kh, kw))
        channel_in = lg.input_shape[1] * lg.input_shape[2]
        source_symbols = np.array(list(lg.read[:channel_in]) if len(lg.read) >= channel_in else [], dtype=object)
        if source_symbols.size != channel_in:
            return []
        source_symbols = source_symbols.reshape(lg.input_shape[1:])
        padded_symbols = np.full((lg.input_shape[1] + 2 * pad_h, lg.input_shape[2] + 2 * pad_w), None, dtype=object)
        padded_symbols[pad_h : pad_h + lg.input_shape[1], pad_w : pad_w + lg.input_shape[2]] = source_symbols
        delta_map = np.array(delta_symbols[: height * width], dtype=object).reshape(height, width)
        if max(padded_symbols.shape) > 8 or delta_map.size > 36:
            return []  # too big to follow by hand; the formula says it all
        _, prefix = ex.network.parameter_owner[first_weight.name]
        fact = next(
            f
            for f in d.formulas(l, general=False)
            if f.kind == "fact" and f.restates.kind == prefix
        )
        gradient = np.array(
            [
                [fact.at((0, 0, m, n), {"input": inputs, "delta": deltas}) for n in range(kw)]
                for m in range(kh)
            ]
        )
        fmt_g = ex.formats.gradient

        def shown(symbol) -> str:
            return "0" if symbol is None else ex.show(symbol)

        letter = capital_letter(lg.sources[0])
        delta_cells = [[ex.show(s) for s in row] for row in delta_map]
        if labelled_cells(r"\delta^{(1)}", delta_cells)[1] > LINE_WIDTH:
            return []  # δ too wide for the page in this notation: the formula says it all
        one = lg.output_shape[0] == 1 and lg.input_shape[0] == 1
        channel = "" if one else ", for output channel 0 and input channel 0"
        padded = (pad_h, pad_w) != (0, 0)
        delta_tex = rf"\delta^{{({l})}}"
        displays = lines(
            [
                labelled_cells(
                    letter + (r"_{\text{padded}}" if padded else ""), [[shown(s) for s in row] for row in padded_symbols]
                ),
                labelled_cells(delta_tex, delta_cells),
            ]
        ) + lines(
            [
                (
                    rf"\frac{{\partial L}}{{\partial W^{{({l})}}}} = {letter} \star {delta_tex} = "
                    + whole_matrix(gradient, fmt_g)[0],
                    12.0,
                )
            ]
        )
        products = [
            f"({ex.show(delta_map[i, j])})({shown(padded_symbols[i, j])})"
            for i, j in product(range(height), range(width))
        ]
        entry = sum_rows(elide(products, *self.detail.terms))
        first = d.tex_names[first_weight.elements[0]]
        return [
            Paragraph(
                "The same gradient for the whole kernel at once, as the tensor view of section ",
                Ref(f"sec:backward{l}"),
                " says: ",
                *prose(fact.statement),
                ". ",
                *tensor_indices(),
                " With this layer's numbers, and at stride 1, where ",
                Math(r"\hat{\delta} = \delta"),
                ":",
            ),
            Equation(formula_row(fact.restates.latex())),
            Paragraph(
                "where ",
                Math(delta_tex),
                " is the map of ",
                Math(rf"\partial L / \partial z^{{({l})}}_{{i}}"),
                f" of layer {l}{channel}: each weight's gradient sums, over every position, ",
                Math(delta_tex),
                " there times the input the weight met there, so sliding ",
                Math(delta_tex),
                " over the layer's input"
                + (" (zero-padded)" if padded else "")
                + " like a kernel gives "
                f"all of them ({kh} by {kw} positions):",
            ),
            Displays(tuple(displays)),
            Paragraph(
                "Its entry ",
                Math("(0, 0)"),
                ", the gradient of ",
                Math(first),
                ", is the sum above, position by position:",
            ),
            Equation(
                aligned(
                    rf"\left({letter} \star {delta_tex}\right)_{{0,0}}",
                    entry + [Row(f"= {fmt_g(gradient[0, 0])}")],
                )
            ),
        ]


__all__ = ["worked_section"]
