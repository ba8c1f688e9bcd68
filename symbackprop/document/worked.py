"""The handout's worked example: the network with numbers, every one computed by the engine.

The values (``example.worked_example``), the forward pass by hand (a weighted sum, a pooling
window), each layer's table of z, a, ∂L/∂a and ∂L/∂z, the loss and every gradient; then the
backward pass by hand: the last layer's first weight factor for factor, the first
convolution's shared weight term by term, a pooling window's routing, and ∂L/∂W of the
first convolution as the cross-correlation of its input with δ, computed by the tensor
view's own fact. Numbers are written one way per kind (``numbers``).

Imports ``network``, ``derive``, ``latex``, ``activations`` (and what they build on), numpy
and the rest of the document package.
"""

from __future__ import annotations

from itertools import product

import numpy as np

from ..activations import activation as _activation
from ..graph import LayerGraph
from ..latex import Row, aligned, partial, printer, sum_rows
from .common import (
    Detail,
    arrays,
    capital_letter,
    correlation_padding,
    elide,
    formula_row,
    input_letter,
    labelled_whole,
    lines,
    node_by_hand,
    op_notation,
    plural,
    prose,
    subscripted,
    terms_by_hand,
    text,
    whole_matrix,
)
from .context import forks, parameter_tex, paths_of, via_tex, weights_of
from .example import WorkedExample, is_bias, layer_values, weight_scale
from .nodes import Code, Column, Displays, Equation, Inline, Math, Paragraph, Ref, Section, Table

SHARED_TERMS_SHOWN = 12  # rows of the table of a shared weight's terms


def worked_section(example: WorkedExample, detail: Detail) -> Section:
    """Section 5: the worked example."""
    return _Worked(example, detail).worked()


class _Worked:
    def __init__(self, example: WorkedExample, detail: Detail) -> None:
        self.example, self.detail = example, detail

    def worked(self) -> Section:
        ex, detail = self.example, self.detail
        fmt_v, fmt_g = ex.formats.value, ex.formats.gradient
        d = ex.derivation
        body: list = []
        if ex.choices:
            said: list[Inline] = [
                "Now with numbers, for which the generic functions need a concrete choice: "
            ]
            if "g" in ex.choices:
                said += [Math("g"), " is the sigmoid, ", Math(_activation("sigmoid").formula)]
            if "loss" in ex.choices:
                said += [
                    ", and " if "g" in ex.choices else "",
                    Math("L"),
                    (" is half the sum of squared errors, "),
                    Math(ex.network.loss_function.formula),
                ]
            body.append(Paragraph(*said, "."))
        else:
            body.append(Paragraph("Now with numbers."))
        scaled = sorted(
            {
                weight_scale(shape)
                for name, shape in ex.network.parameters.items()
                if not is_bias(ex.network, name)
            }
            - {1.0}
        )
        scaling = (
            (
                " (the weights of a layer whose nodes sum many inputs scaled down by a power of ten, "
                "so that its sums stay of order one)"
            )
            if scaled
            else ""
        )
        seed = f"seed {ex.seed}"
        dead, total = ex.dead
        if total:
            tries = (
                ""
                if ex.draw == 0
                else f", drawn {ex.draw + 1} times until at most half of the ReLUs were dead"
            )
            seed += f"{tries} ({dead} of the {total} ReLUs dead here, so that the example shows gradients"
            seed += " rather than zeros)"
        rounded = (
            "Results are rounded to four significant digits"
            + (", gradients written in scientific notation throughout" if fmt_g.scientific else "")
            + (", values too" if fmt_v.scientific else "")
            + "."
        )
        body.append(
            Paragraph(
                f"The values are drawn with {seed}: inputs in ",
                Math("[0, 1]"),
                " and weights in ",
                Math(r"\pm[0.1, 1]"),
                f" with one decimal{scaling}, so that the forward "
                "pass can be followed by hand. " + rounded,
            )
        )
        inputs = arrays(ex.x, subscripted("X"), fmt_v, detail.matrix_rows, detail.matrices)
        inputs += arrays(ex.y, lambda _: "y", fmt_v, detail.matrix_rows)
        params = []
        for name in ex.network.parameters:
            params += arrays(
                ex.params[name],
                subscripted(parameter_tex(ex.network, name)),
                fmt_v,
                detail.matrix_rows,
                detail.matrices,
            )
        body.append(Displays(tuple(lines(inputs + params))))
        # forward by hand
        layers = list(d.graph.layers)
        weighted = [lg for lg in layers if weights_of(d, lg.number) is not None]
        body.append(
            Paragraph(
                "The forward pass fills in the ",
                Math("z"),
                " and ",
                Math("a"),
                " columns of the tables below from the first layer to the last; for instance",
            )
        )
        if weighted:
            node = weighted[0].z[0]
            body.append(Equation(aligned(d.tex_names[node.symbol], self.by_hand(node))))
        pools = [lg for lg in layers if not lg.activated and lg.layer.position_note()]
        joins = [lg for lg in layers if len(lg.sources) > 1]
        for lg in ([pools[0]] if pools else []) + ([joins[0]] if joins else []):
            node = lg.z[0]
            body += [
                Paragraph(f"and the first output of the {lg.layer.title} layer {lg.number} is"),
                Equation(aligned(d.tex_names[node.symbol], self.by_hand(node))),
            ]
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
        body.append(
            Paragraph(
                "The loss is ",
                Math(f"L = {fmt_v(ex.loss)}"),
                ", and the gradients of the weights are",
            )
        )
        gradients = []
        for name in ex.network.parameters:
            tex_name = parameter_tex(ex.network, name)
            gradients += arrays(
                ex.gradients[name],
                lambda sub, t=tex_name: (
                    rf"\frac{{\partial L}}{{\partial {t if sub is None else f'{t}_{{{sub}}}'}}}"
                ),
                fmt_g,
                detail.matrix_rows,
                detail.matrices,
            )
        body.append(Displays(tuple(lines(gradients))))
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

    def by_hand(self, node) -> list[Row]:
        """A node's formula, then the same with the example's numbers, then its value."""
        ex = self.example
        return node_by_hand(ex.derivation, node, ex.value, ex.formats.value, self.detail.terms)

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
                    terms_by_hand(d, terms, ex.value, ex.formats, fmt_g(values[k]), self.detail.terms),
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
        rows = terms_by_hand(d, d.terms(weight), ex.value, ex.formats, result, self.detail.terms)
        return [
            Paragraph(
                "For instance, for ",
                Math(d.tex_names[weight]),
                ", upstream gradient times local gradient, factor for factor:",
            ),
            Equation(aligned(partial(d, weight), rows)),
        ]

    def shared_by_hand(self, weighted: list[LayerGraph]) -> list:
        """The first convolution's first weight in full: every term it collects, with numbers."""
        ex, d = self.example, self.example.derivation
        shared = [lg for lg in weighted if len(d.terms(weights_of(d, lg.number).elements[0])) > 1]
        if not shared:
            return []
        lg = shared[0]
        weights = weights_of(d, lg.number)
        l, weight = lg.number, weights.elements[0]
        terms = d.terms(weight)
        fmt_v, fmt_g = ex.formats.value, ex.formats.gradient
        p = printer(d)
        positions = {z: i for i, z in enumerate((n.symbol for n in lg.z), start=1)}
        shown = terms if len(terms) <= SHARED_TERMS_SHOWN else terms[: SHARED_TERMS_SHOWN - 2]
        has_local = any(t.local != 1 for t in terms)
        local_head = (
            p.doprint(terms[0].local).replace(f"_{{{positions[terms[0].z]}}}", "_{i}")
            if has_local
            else None
        )
        rows = []
        for t in shown:
            i = positions[t.z]
            cells = [(str(i),), (Math(fmt_g(ex.value(t.upstream))),)]
            if has_local:
                cells.append((Math(fmt_v(ex.value(t.local))),))
            cells += [
                (Math(f"{d.tex_names[t.factor]} = {fmt_v(ex.value(t.factor))}"),),
                (Math(fmt_g(ex.value(t.expr))),),
            ]
            rows.append(tuple(cells))
        header = [(Math("i"),), (Math(rf"\partial L / \partial a^{{({l})}}_{{i}}"),)]
        if has_local:
            header.append((Math(local_head),))
        header += [(Math(rf"{input_letter(lg)}_{{p^{{({l})}}_{{i}}[1]}}"),), ("product",)]
        aligns = "r" * len(header)
        products = [fmt_g(ex.value(t.expr)) for t in terms]
        total = fmt_g(ex.gradients[weights.name].reshape(-1)[0])
        sums = sum_rows(elide([f"({x})" for x in products], *self.detail.terms))
        blocks = [
            Paragraph(
                "A shared weight collects one term per position where it was used. The first weight "
                f"of layer {l}'s kernel, ",
                Math(d.tex_names[weight]),
                f", was used at "
                f"{plural(len(terms), 'position')}; one row each"
                + (f" (the first {len(shown)} of them)" if len(shown) < len(terms) else "")
                + ", upstream gradient times local gradient:",
            ),
            Table(tuple(Column(a) for a in aligns), tuple(header), tuple(rows)),
            Paragraph("and the sum of the products is the gradient:"),
            Equation(aligned(partial(d, weight), sums + [Row(f"= {total}")])),
        ]
        return blocks

    def routing_by_hand(self, pools: list[LayerGraph]) -> list:
        """One pooling window's backward step with numbers: each input's local gradient (the
        first maximum's 1, or 1/K) times the window's upstream gradient."""
        if not pools:
            return []
        ex, d = self.example, self.example.derivation
        lg = pools[0]
        l, node = lg.number, lg.z[0]
        upstream = lg.upstream[0]
        fmt_v, fmt_g = ex.formats.value, ex.formats.gradient
        rows = []
        for variable, local in node.local():
            rows.append(
                (
                    (Math(f"{d.tex_names[variable]} = {fmt_v(ex.value(variable))}"),),
                    (Math(fmt_v(ex.value(local))),),
                    (Math(fmt_g(ex.value(upstream) * ex.value(local))),),
                )
            )
        following = lg.layer.upstream_formula(op_notation(lg, lg.sources[0]))
        return [
            Paragraph(
                f"Backwards through the {lg.layer.title} layer {l}: its first output ",
                Math(d.tex_names[node.symbol]),
                " has the upstream gradient ",
                Math(f"{d.tex_names[upstream]} = {fmt_g(ex.value(upstream))}"),
                " and sends each input of its window that times its local gradient; ",
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
        ]

    def correlation_by_hand(self, weighted: list[LayerGraph]) -> list:
        """∂L/∂W of the first convolution as the cross-correlation of its input with δ = ∂L/∂z,
        with numbers: the tensor view's fact, evaluated by the engine at the example's values
        (shown for stride 1 and no dilation, where δ slides as it is, and one channel pair)."""
        convs = [lg for lg in weighted if lg.layer.position_note()]
        if not convs:
            return []
        lg = convs[0]
        if not lg.layer.correlates():
            return []
        ex, l = self.example, lg.number
        _, height, width = lg.output_shape
        deltas = [ex.values[s] for s in (lg.z_upstream or lg.upstream)]
        inputs = [ex.values[s] for s in lg.read]
        delta = np.array(deltas).reshape(lg.output_shape)[0]
        kh, kw = ex.network.parameters[weights_of(ex.derivation, l).name][-2:]
        pad_h, pad_w = correlation_padding(lg.input_shape, lg.output_shape, (kh, kw))
        source = np.pad(
            np.array(inputs).reshape(lg.input_shape)[0], ((pad_h, pad_h), (pad_w, pad_w))
        )
        if max(source.shape) > 8 or delta.size > 36:
            return []  # too big to follow by hand; the formula says it all
        _, prefix = ex.network.parameter_owner[weights_of(ex.derivation, l).name]
        fact = next(
            f
            for f in ex.derivation.formulas(l, general=False)
            if f.kind == "fact" and f.restates.kind == prefix
        )
        gradient = np.array(
            [
                [fact.at((0, 0, m, n), {"input": inputs, "delta": deltas}) for n in range(kw)]
                for m in range(kh)
            ]
        )
        fmt_v, fmt_g = ex.formats.value, ex.formats.gradient
        letter = capital_letter(lg.sources[0])
        one = lg.output_shape[0] == 1 and lg.input_shape[0] == 1
        channel = "" if one else ", for output channel 1 and input channel 1"
        padded = (pad_h, pad_w) != (0, 0)
        delta_tex = rf"\delta^{{({l})}}"
        displays = lines(
            [
                labelled_whole(letter + (r"_{\text{padded}}" if padded else ""), source, fmt_v),
                labelled_whole(delta_tex, delta, fmt_g),
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
            f"({fmt_g(delta[i, j])})({fmt_v(source[i, j])})"
            for i, j in product(range(height), range(width))
        ]
        entry = sum_rows(elide(products, *self.detail.terms))
        return [
            Paragraph(
                "The same gradient for the whole kernel at once, as the tensor view of section ",
                Ref(f"sec:backward{l}"),
                " says: ",
                *prose(fact.statement),
                ". With this layer's numbers, indices from 0,",
            ),
            Equation(formula_row(fact.restates.latex())),  # stride 1: δ spread out is δ itself
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
            Paragraph("Its top-left entry is the sum above, position by position:"),
            Equation(
                aligned(
                    rf"\left({letter} \star {delta_tex}\right)_{{1,1}}",
                    entry + [Row(f"= {fmt_g(gradient[0, 0])}")],
                )
            ),
        ]


__all__ = ["worked_section"]
