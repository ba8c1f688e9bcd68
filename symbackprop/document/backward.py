"""The handout's fourth section: backpropagation, layer by layer from the last.

For each layer: the vector of its parameters' gradients (the article's (3), (6), (14)); the
upstream gradients of its outputs — the loss's own derivatives for the last layer, else what
the layers reading it send back: one reader's sum (the article's (12), (17)), or, where the
network forks, the sum over every reader (the article's rule (20)), each path written with
the engine's own terms; one weight derived symbolically (and in closed form when short); the
general formulas the operations write; the other weights; the tensor view.

Which reader sent which term is the engine's answer (``upstream_terms_of``, grouped by the
layer of the node each term comes from), never a count of layers.

Imports ``engine``, ``graph``, ``latex`` (and what they build on), sympy and the document's
``common``, ``context``, ``layout`` and ``nodes``.
"""

from __future__ import annotations

import sympy

from ..graph import LayerGraph
from ..latex import Row, aligned, break_expr, closed_form, partial, sum_rows, term_latex
from ..tensor import relations
from .common import elide, op_notation, plural, printer, source_letter, tensor_blocks, text
from .context import Context, LayerParameter, via_tex
from .layout import budget, grid, spread
from .nodes import Column, Emph, EqRef, Equation, Inline, Math, Paragraph, Ref, Section, Table


def backward_section(c: Context) -> Section:
    """Section 4: the gradient vector, then every layer from the last to the first."""
    parts = [
        rf"\frac{{\partial L}}{{\partial {weights.tex}}}"
        for lg in reversed(c.layers)
        if (weights := c.weights(lg.number)) is not None
    ]
    article = ", the article's formula (2)," if c.article else ""
    forks = "" if c.chain else (
        " Where the network forks, a node read by several layers reaches the loss along several "
        "paths, and its upstream gradient is the sum of what each path brings back (the rule for "
        "several dependencies)."
    )
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
            "feeds several others adds up the downstream gradients it gets." + forks,
        ),
    ]
    body += [_Layer(c, lg).section() for lg in reversed(c.layers)]
    return Section(("Backpropagation",), tuple(body), label="sec:backward")


def downstream_blocks(c: Context, number: int) -> list:
    """The downstream gradient one node sends back to one input, step by step (the article's
    figure 9, its formulas (7) to (9)): the node's upstream gradient at its weighted sum, its
    local gradient with respect to the input, and their product; written for layer
    ``number``'s first output and the first node reading it."""
    d = c.d
    lg = c.layers[number - 1]
    symbol = lg.upstream[0]
    terms = d.upstream_terms_of(symbol)
    term = next((t for t in terms if t.factor != 1), terms[0])  # a weight, not a copy's 1
    p = printer(d)
    reader = c.layers[c.paths([term]).popitem()[0] - 1]
    z, output = d.tex_names[term.z], d.tex_names[lg.outputs[0].symbol]
    at_z = rf"\frac{{\partial L}}{{\partial {z}}}"
    local = rf"\frac{{\partial {z}}}{{\partial {output}}}"
    factor = p.doprint(term.factor)
    blocks: list = [
        Paragraph(
            f"Each node of layer {reader.number} sends back to every input it read a downstream "
            "gradient: its own upstream gradient, taken to its weighted sum, times its local "
            "gradient with respect to that input (appendix ",
            Ref("app:chain"),
            "). For the node ",
            Math(z),
            " and the first output of layer ",
            f"{number}, ",
            Math(output),
            ", which it reads:",
            lead="Downstream gradients.",
        )
    ]
    if term.local != 1:
        upstream = p.doprint(term.upstream)
        activation = p.doprint(term.local)
        blocks.append(Equation(f"{at_z} = {upstream} \\cdot {activation}", "downstream-upstream"))
    else:
        at_z = p.doprint(term.upstream)  # no activation: the upstream gradient is at z already
    blocks += [
        Equation(f"{local} = {factor}", "downstream-local"),
        Equation(
            rf"\left.\frac{{\partial L}}{{\partial {output}}}\right|_{{\text{{from }} {z}}} = "
            rf"{at_z} \cdot {local} = {term_latex(term, p)}",
            "downstream",
        ),
    ]
    return blocks


class _Layer:
    """One layer's subsection of the backward pass."""

    def __init__(self, c: Context, lg: LayerGraph) -> None:
        self.c, self.lg, self.l = c, lg, lg.number
        self.d, self.detail = c.d, c.detail
        self.p = printer(c.d)
        self.readers = c.readers(lg.number)
        self.last = lg.number == len(c.layers)
        self.parameters = c.parameters(lg.number)
        weights = c.weights(lg.number)
        self.first = weights.elements[0] if weights is not None else None

    def section(self) -> Section:
        d, l, lg = self.d, self.l, self.lg
        body: list = []
        if self.parameters:
            body += [
                Paragraph(
                    f"The gradient with respect to the weights of layer {l} is the vector of "
                    "their partial derivatives:"
                ),
                Equation(self.vector(), f"vector{l}"),
            ]
        body += self.upstream()
        if self.first is not None:
            terms = d.terms(self.first)
            used = f", used at {plural(len(terms), 'position')}" if len(terms) > 1 else ""
            body += [
                Paragraph(
                    lg.layer.weight_note() or "",
                    " For ",
                    Math(d.tex_names[self.first]),
                    f"{used}:",
                    lead="Weight gradients.",
                ),
                *derivation(self.c, self.first, f"example{l}"),
            ]
        body += self.general()
        if not self.parameters:
            read = [s for s in lg.sources if s > 0]
            after = (
                f", as the upstream gradients of layer {_and([str(s) for s in read])} say."
                if read
                else "."
            )
            body.append(
                Paragraph(
                    "This layer has no weights: it only passes the gradients back to its inputs"
                    + after
                )
            )
        body += self.other_weights()
        # the tensor view names a parameter's formulas by its prefix, the input's "input"
        shapes = self.c.network.shapes
        image = any(len(shapes[k]) == 3 for k in (l, *lg.sources))
        formulas = d.formulas(l, general=False)
        net = self.c.network
        if net.loss_function.grouped and len(shapes[-1]) == 3:
            # the tensor view's loss is one softmax over the flattened map, not one per pixel:
            # the per-pixel formula above stands for it
            formulas = [f for f in formulas if f.kind != "loss" and getattr(getattr(f, "restates", None), "kind", None) != "loss"]
        body += tensor_blocks(formulas, (*net.layer_parameters(l), "input"), image=image)
        body += self.adjoint(l)
        return Section(
            (f"Layer {l} ({lg.layer.title})",), tuple(body), label=f"sec:backward{l}", level=2
        )

    def vector(self) -> str:
        """∂L/∂W^{(l)} = [∂L/∂w_1, …, ∂L/∂w_N] (and the same for b^{(l)}), the article's (3), (6), (14)."""
        rows = []
        for parameter in self.parameters:
            elements = parameter.elements
            shown = [
                partial(self.d, s)
                for s in (elements if len(elements) <= 4 else [elements[0], elements[1]])
            ]
            if len(elements) > 4:
                shown += [r"\ldots", partial(self.d, elements[-1])]
            rows.append(
                rf"\frac{{\partial L}}{{\partial {parameter.tex}}} &= \left["
                + ", ".join(shown)
                + r"\right]"
            )
        return " \\\\\n".join(rows)

    # ---- upstream gradients -----------------------------------------------------------------

    def upstream(self) -> list:
        """The upstream gradients of the layer's outputs: the loss's, one reader's, or a fork's;
        the layer before the last first shows one downstream gradient step by step."""
        d, l, lg, detail = self.d, self.l, self.lg, self.detail
        if self.last:
            return self.loss_upstream()
        steps = downstream_blocks(self.c, l) if l == len(self.c.layers) - 1 else []
        if len(self.readers) > 1:
            return steps + self.fork_upstream()
        (reader,) = self.readers
        following = self.c.layers[reader - 1]
        formula = following.layer.upstream_formula(op_notation(following, l))
        shown_symbols = self.upstream_shown()
        rows = [
            (
                d.tex_names[s],
                sum_rows(elide([term_latex(t, self.p) for t in d.upstream_terms_of(s)], *detail.terms)),
            )
            for s in shown_symbols
        ]
        shown, more = budget(rows, detail.rows)
        more += len(lg.upstream) - len(rows)
        single = all(len(d.upstream_terms_of(s)) == 1 for s in lg.upstream)
        gets = (
            "so its upstream gradient is the one downstream gradient it gets back"
            if single
            else "so its upstream gradient is the sum of the downstream gradients it gets back from each"
        )
        blocks: list = steps + [
            Paragraph(
                *text(f"Each output of layer {l} feeds {formula['feeds']}, {gets}. "),
                "For this network:",
                lead="Upstream gradients.",
            ),
            Equation(grid(shown), f"upstream-list{l}"),
        ]
        if more:
            blocks.append(Paragraph(f"… and {more:,} more of the same form."))
        return blocks

    def loss_upstream(self) -> list:
        d, l, lg = self.d, self.l, self.lg
        if self.c.network.loss_function.generic:
            return [
                Paragraph(
                    "The upstream gradients of the last activations, ",
                    Math(rf"\partial L / \partial a^{{({l})}}_{{k}}"),
                    ", are the loss's own partial derivatives; with ",
                    Math("L"),
                    " generic they stay as they are.",
                )
            ]
        rows = [
            (d.tex_names[s], break_expr(d.upstream(s), self.p) or [Row(self.p.doprint(d.upstream(s)))])
            for s in lg.upstream
        ]
        shown, more = budget(rows, max(self.detail.rows, 4))
        blocks: list = []
        net = self.c.network
        if net.loss_function.grouped:
            blocks += self.softmax_upstream()
        blocks += [
            Paragraph(
                "The upstream gradients of the last activations are the loss's own "
                "partial derivatives:"
            ),
            Equation(grid(shown)),
        ]
        if more:
            blocks.append(Paragraph(f"… and {more:,} more of the same form."))
        return blocks

    def softmax_upstream(self) -> list:
        """A softmax loss's gradient in general: per group (a pixel's channels for a map, all the
        outputs for a vector), the softmax times the group's target sum, minus the target."""
        l = self.l
        a = f"a^{{({l})}}"
        if len(self.c.network.shapes[-1]) == 3:
            lhs = rf"\frac{{\partial L}}{{\partial {a}_{{c,p}}}}"
            rhs = (
                rf"\frac{{e^{{{a}_{{c,p}}}}}}{{\sum_{{c'}} e^{{{a}_{{c',p}}}}}} \sum_{{c'}} y_{{c',p}} - y_{{c,p}}"
            )
            said = (
                "Per pixel, the loss is a softmax over the pixel's channels, so the gradient at a "
                "score involves the scores of its own pixel alone:"
            )
            after = (
                "the softmax of the pixel's scores minus its target, for targets that sum to one at "
                "every pixel (one-hot); the pixels do not mix."
            )
        else:
            lhs = rf"\frac{{\partial L}}{{\partial {a}_{{k}}}}"
            rhs = rf"\frac{{e^{{{a}_{{k}}}}}}{{\sum_{{j}} e^{{{a}_{{j}}}}}} \sum_{{j}} y_{{j}} - y_{{k}}"
            said = "The softmax runs over all the outputs, so the gradient at an output involves all of them:"
            after = "the softmax minus the target, for targets that sum to one (one-hot)."
        return [
            Paragraph(said),
            Equation(f"{lhs} = {rhs}"),
            Paragraph(after[0].upper() + after[1:]),
        ]

    def fork_upstream(self) -> list:
        """A layer read by several: each output's upstream gradient is the sum over its readers
        (the article's rule (20)), every path written with the terms it sends back."""
        d, l, detail = self.d, self.l, self.detail
        readers = [self.c.layers[k - 1] for k in self.readers]
        named = _and([f"{k.number} ({k.layer.title})" for k in readers])
        index = "j"
        lhs = rf"\frac{{\partial L}}{{\partial a^{{({l})}}_{{{index}}}}}"
        total = " + ".join(via_tex(lhs, k.number) for k in readers)
        blocks: list = [
            Paragraph(
                f"The outputs of layer {l} are read by layers {named}: the network forks here, "
                "and each output reaches the loss along one path through each reader. By the rule "
                "for several dependencies, ",
                EqRef("multiple"),
                " in appendix ",
                Ref("app:chain"),
                ", its upstream gradient is the sum of what every path sends back:",
                lead="Upstream gradients.",
            ),
            Equation(f"{lhs} = {total}", f"fork{l}"),
        ]
        nodes = []
        for s in self.upstream_shown():
            paths = self.c.paths(d.upstream_terms_of(s))
            name = d.tex_names[s]
            rows = [(name, [Row(" + ".join(via_tex(name, k) for k in paths))])]
            for k, terms in paths.items():
                rows.append(
                    (via_tex(name, k), sum_rows(elide([term_latex(t, self.p) for t in terms], *detail.terms)))
                )
            nodes.append(rows)
        limit, used, shown = max(detail.rows, 3 * len(readers)), 0, []
        for rows in nodes:
            size = sum(len(rows_) for _, rows_ in rows)
            if shown and used + size > limit:
                break
            shown += rows
            used += size
        more = len(self.lg.upstream) - sum(1 for lhs_, _ in shown if not lhs_.startswith(r"\left."))
        blocks += [
            Paragraph("For this network, each path with the terms its reader sends back:"),
            Equation(" \\\\\n".join(aligned(lhs_, rows_) for lhs_, rows_ in shown), f"upstream-list{l}"),
        ]
        if more:
            blocks.append(Paragraph(f"… and {more:,} more of the same form."))
        return blocks

    def upstream_shown(self) -> list[sympy.Symbol]:
        """The upstream symbols of a layer whose formulas are written: all in full detail (the
        budget cuts them), a spread of ``rows`` in a summary."""
        if self.detail.name == "full":
            return list(self.lg.upstream[: self.detail.rows + 1])
        return [self.lg.upstream[i] for i in spread(self.lg, self.detail.rows)]

    def adjoint(self, l: int) -> list:
        """For an operation that transposes another (a transposed convolution), the two related:
        its forward is the other's input gradient and its input gradient the other's forward,
        each pair derived by the tensor view and checked equal at every index."""
        found = relations(self.c.d, l)
        if not found:
            return []
        op, _ = self.c.network.layers[l - 1].adjoint(self.c.network.input_shape_of(l))
        forward, backward = found
        checked = all(r.holds for r in found)
        letter = source_letter(self.c.layers[l - 1].sources[0])
        return [
            Paragraph(
                Emph("The two convolutions, related."),
                f" Layer {l} transposes a convolution ({op.describe()}, from its output's channels back to "
                "its input's, the same kernel: ",
                Math(r"\tilde{W} = " + f"W^{{({l})}}"),
                ", laid out as PyTorch lays out both). Its forward is, but for its bias, that convolution's "
                "input gradient, with ",
                Math(letter),
                " as its ",
                Math(r"\tilde{\delta}"),
                ":",
            ),
            Equation(forward.formula.aligned() + r" \\" + "\n" + forward.twin.aligned()),
            Paragraph(
                f"and layer {l}'s input gradient is that convolution's forward, run on ",
                Math(f"\\delta^{{({l})}}"),
                " as its input ",
                Math(r"\tilde{x}"),
                ":",
            ),
            Equation(backward.formula.aligned() + r" \\" + "\n" + backward.twin.aligned()),
            Paragraph(
                "Both pairs are derived by the tensor view, each from its own operation's index form, and "
                + ("checked equal, written out over the same random numbers, at every index of each letter's first "
                   "and last values and two between (the borders, where padding and stride act, among them)." if checked
                   else "do NOT agree at every index: a bug to report.")
            ),
        ]

    # ---- the general formulas -----------------------------------------------------------------

    def general(self) -> list:
        l, lg = self.l, self.lg
        general: list = []
        readers = [self.c.layers[k - 1] for k in self.readers] if not self.last else []
        for reader in readers:
            formula = reader.layer.upstream_formula(op_notation(reader, l))
            equation = formula["equation"]
            if len(readers) > 1:
                lhs, rhs = equation.split(" = ", 1)
                equation = f"{via_tex(lhs, reader.number)} = {rhs}"
            key = f"upstream{l}" if reader is readers[0] else f"upstream{l}-{reader.number}"
            general += [Equation(equation, key), Paragraph("where ", *text(formula["note"]), ".")]
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
        if not general:
            return []
        cites = []
        if readers:
            what = (
                "the upstream gradient of every output"
                if len(readers) == 1
                else "every path of the upstream gradient of every output"
            )
            cites.append((what, f"upstream-list{l}"))
        if self.first is not None:
            cites.append(("every weight", f"example{l}"))
        said: list[Inline] = ["The same steps for "]
        for k, (what, key) in enumerate(cites):
            said += [f"{what} (generalising ", EqRef(key), ")", " and for " if k < len(cites) - 1 else ":"]
        if not cites:
            said = ["In general:"]
        return [Paragraph(*said, lead="In general."), *general]

    # ---- the other weights --------------------------------------------------------------------

    def other_weights(self) -> list:
        """The rest of a layer's parameters: in full detail each shown weight's derivation (a grid
        of one-liners when they are all single terms), in a summary a table of term counts."""
        d, detail = self.d, self.detail
        blocks: list = []
        if detail.name == "summary":
            rows = []
            for parameter in self.parameters:
                counts = [len(d.terms(s)) for s in parameter.elements]
                span = (
                    f"{min(counts):,}"
                    if min(counts) == max(counts)
                    else f"{min(counts):,} to {max(counts):,}"
                )
                rows.append(((Math(parameter.tex),), (f"{len(parameter.elements):,}",), (span,)))
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
            for parameter in self.parameters:
                if parameter.bias:
                    blocks += [Paragraph("For the first bias:"), *derivation(self.c, parameter.elements[0])]
            return blocks
        for parameter in self.parameters:
            blocks += self._derived(parameter)
        return blocks

    def _derived(self, parameter: LayerParameter) -> list:
        d, detailed = self.d, self.c.detailed
        elements = parameter.elements
        shown = [s for s in elements if s in detailed and s != self.first]
        hidden = len(elements) - len([s for s in elements if s in detailed])
        blocks: list = []
        if hidden:
            count = len(elements) - hidden
            blocks.append(
                Paragraph(
                    f"Derived in full here: {count} of the {len(elements):,} elements of ",
                    Math(parameter.tex),
                    f"; the other {hidden:,} follow the same pattern (appendix ",
                    Ref("app:rest"),
                    ").",
                )
            )
        p = printer(d)  # one printer: it remembers what it printed
        derivations = [
            (s, sum_rows(elide([term_latex(t, p) for t in d.terms(s)], *self.detail.terms)))
            for s in shown
        ]
        if not derivations:
            return blocks
        single = all(len(rows) == 1 for _, rows in derivations)
        if single and len(derivations) > 1:
            what = "the biases" if parameter.bias else "the other weights"
            return blocks + [
                Paragraph(f"And {what} of this layer:"),
                Equation(grid([(partial(d, s), rows) for s, rows in derivations])),
            ]
        for s, rows in derivations:
            count = len(d.terms(s))
            used = f", used at {plural(count, 'position')}" if count > 1 else ""
            blocks += [
                Paragraph("For ", Math(d.tex_names[s]), f"{used}:"),
                Equation(aligned(partial(d, s), rows)),
            ]
        return blocks


def derivation(c: Context, element: sympy.Symbol, key: str | None = None) -> list:
    """∂L/∂element in chain form, and in closed form when short and asked for."""
    d, detail = c.d, c.detail
    p = printer(d)
    rows = sum_rows(elide([term_latex(t, p) for t in d.terms(element)], *detail.terms))
    lhs = partial(d, element)
    blocks: list = [Equation(aligned(lhs, rows), key)]
    if not detail.closed_forms:
        return blocks
    closed = closed_form(d, element)
    if closed.rows:
        blocks += [
            Paragraph("In closed form, in ", Math("x"), ", ", Math("y"), " and the weights alone:"),
            Equation(aligned(lhs, closed.rows), breakable=False),
        ]
        if closed.simplified:
            blocks += [
                Paragraph("and with common factors pulled out:"),
                Equation(aligned(lhs, closed.simplified), breakable=False),
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


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


__all__ = ["backward_section", "derivation", "source_letter"]
