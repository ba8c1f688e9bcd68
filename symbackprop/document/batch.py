"""The handout's section on a layer that couples the samples of a batch (batch normalisation in
train mode), derived over a batch of ``BATCH`` samples that share every weight (``FEATURE_BATCH`` for a
vector's features: over two values alone, x̂ = ±1 and the input gradient vanishes up to ε).

Sections 1 to 5 follow one sample; a layer whose every output depends on every sample of the
batch cannot be followed that way, so the handout writes those sections with the network in
eval mode (its running statistics constants, the layer an affine map) and this section in
train mode: the scalar graph of the batch, the nodes inside the layer (its stages: for batch
normalisation μ, σ², x̂, then y) drawn for one channel, each stage's formula and local
gradients, the upstream gradient of each stage as the engine's chain form, the compact input
gradient the engine simplified the staged one to (``Engine.compact``), the parameter
gradients, and all of it with numbers, which a reader can check by hand.

Nothing here asks which operation the layer is: it asks the network which layers couple the
samples, the graph for the nodes inside them, and the engine for their terms and compact form.

Imports ``network``, ``engine``, ``derivation``, ``latex`` (and what they build on), numpy,
sympy and the document package's ``common``, ``context``, ``example`` and ``nodes``.
"""

from __future__ import annotations

from math import prod

import numpy as np
import sympy

from ..derivation import Derivation
from ..latex import Row, aligned, break_expr, partial, sum_rows
from ..network import Network
from .common import Detail, DocumentPrinter, elide, joined, node_rows, source_letter
from .example import DRAWS, WorkedExample, _Evaluator, draw_values
from .nodes import (
    Code,
    Column,
    Diagram,
    DiagramEdge,
    DiagramNode,
    Displays,
    Equation,
    Figure,
    Math,
    Paragraph,
    Section,
    Table,
)

BATCH = 2  # samples in the batch the section derives over, for an image's channels
FEATURE_BATCH = 3  # for features (one value per sample): with 2, x̂ = ±1 and ∂L/∂x vanishes up to ε


def batch_size(network: Network, number: int) -> int:
    """The batch layer ``number`` is derived over: ``BATCH`` where a channel has several values
    per sample, ``FEATURE_BATCH`` where it has one (a vector's feature)."""
    shape = network.input_shape_of(number)
    return BATCH if len(shape) > 1 and prod(shape[1:]) > 1 else FEATURE_BATCH
MAX_EDGES = 20_000  # a larger network's batch is not worked through here (the numbers of every node)
MAX_VALUES = 16  # a channel with more values in the batch (M) is not written out: its chain forms have M terms


def coupling_layers(network: Network) -> list[int]:
    """The layers (1-based) whose outputs depend on every sample of the batch, in train mode."""
    return [number for number, op in enumerate(network.layers, start=1) if op.couples_samples()]


def batch_section(network: Network, example: WorkedExample, detail: Detail) -> Section | None:
    """The section on the first layer of ``network`` (in train mode) that couples the samples,
    or None when none does. ``example`` gives the weights and the first sample (its network is
    the one sections 1 to 5 wrote: in eval mode)."""
    train = example.network.with_mode("train")
    numbers = coupling_layers(train)
    if not numbers:
        return None
    return _Batch(train, numbers[0], example, detail).section()


class _Batch:
    def __init__(self, network: Network, number: int, example: WorkedExample, detail: Detail) -> None:
        self.network, self.number, self.example, self.detail = network, number, example, detail
        self.batch = batch_size(network, number)
        self.d: Derivation = network.derive(batch=self.batch)
        self.lg = self.d.graph.layers[number - 1]
        self.op = self.lg.layer
        shape = network.input_shape_of(number)
        self.places = prod(shape[1:]) if len(shape) > 1 else 1  # values per channel in one sample
        self.count = self.batch * self.places  # M
        self.written = self.count <= MAX_VALUES
        self.values = self._numbers() if self.written and self._small() else None

    # ---- the numbers -----------------------------------------------------------------------

    def _small(self) -> bool:
        net = self.network
        edges = sum(op.window(net.input_shape_of(k)) * prod(net.shapes[k]) for k, op in enumerate(net.layers, start=1))
        return self.batch * edges <= MAX_EDGES

    def _numbers(self) -> dict[sympy.Basic, float]:
        """Every node and gradient of the batch, by the engine's program (its chain forms node by
        node): sample 1 is the worked example's, the others drawn with the same seed."""
        ex, d, g = self.example, self.d, self.d.graph
        seed = 0 if ex.seed is None else ex.seed
        xs, ys = [ex.x], [ex.y]
        for n in range(1, self.batch):
            x, y, _ = draw_values(self.network, seed, DRAWS + n)
            xs.append(x)
            ys.append(y)
        values: dict[sympy.Basic, float] = dict(zip(g.x, np.ravel(xs).astype(float)))
        values |= dict(zip(g.y, np.ravel(ys).astype(float)))
        for name in self.network.parameters:
            values |= dict(zip(sympy.flatten(g.params[name].tolist()), np.ravel(ex.params[name]).astype(float)))
        self.xs, self.ys = xs, ys
        for symbol, expr in d.program.assignments:
            values[symbol] = _Evaluator(values)(expr)
        return values

    def rows(self, expr: sympy.Expr, tidy: bool = False) -> list[Row]:
        """``expr`` in the network's notation, ε as a letter (factored, ``tidy``), broken into rows
        where it is long."""
        epsilon = sympy.Symbol("epsilon", positive=True)
        expr = expr.xreplace({sympy.Float(self.op.eps): epsilon})
        expr = sympy.factor(expr) if tidy else expr
        p = DocumentPrinter({**self.d.tex_names, epsilon: r"\epsilon"})
        return break_expr(expr, p) or [Row(p.doprint(expr))]

    def show(self, symbol: sympy.Basic, gradient: bool = False) -> str:
        fmt = self.example.formats.gradient if gradient else self.example.formats.value
        return fmt(self.values[symbol])

    # ---- the section -----------------------------------------------------------------------

    def section(self) -> Section:
        if not self.written:
            return Section((f"Layer {self.number} over a batch: the {self.op.title} in train mode",),
                           (self._introduction(), self._too_many(), self._eval_mode()), label="sec:batch")
        body: list = [self._introduction(), *self._stages(), self._figure(), *self._locals(), *self._upstreams(),
                      *self._compact(), *self._parameters()]
        if self.values is not None:
            body += self._worked()
        else:
            body.append(Paragraph(
                f"The numbers of a batch are left out for a network this size (its batch's graph has more "
                f"than {MAX_EDGES:,} edges); ", Math(f"d = net.derive(batch={self.batch})"), " gives every one."))
        body.append(self._eval_mode())
        return Section((f"Layer {self.number} over a batch: the {self.op.title} in train mode",), tuple(body),
                       label="sec:batch")

    def _too_many(self) -> Paragraph:
        """Why a channel of many values is not written out, and where to find it."""
        return Paragraph(
            f"With {self.count:,} values to a channel, its stages' chain forms have as many terms each: too many "
            "to write out here. The handout of a small network with the same layer (say a ",
            Math(r"1 \times 3 \times 3"), " input, a ", Math(r"2 \times 2"), " convolution, this layer, a ReLU "
            "and a dense layer) derives them in full: the stages as nodes, their local gradients, the compact "
            "form the engine simplifies them to, and the batch's numbers. In Python, ",
            Code(f"net.derive(batch={self.batch}).compact({self.number})"),
            " gives the compact form of this layer's every input.",
        )

    def _introduction(self) -> Paragraph:
        l, x = self.number, source_letter(self.lg.sources[0])
        return Paragraph(
            f"The sections before took layer {l} in eval mode. In train mode, as the network is trained, "
            f"layer {l} normalises each channel with the statistics of the whole batch, so that each of its "
            "outputs depends on every sample: one sample can no longer be followed on its own. The graph is "
            f"then that of the batch: {self.batch} samples ",
            Math(r"x^{[1]}, \ldots, " + f"x^{{[{self.batch}]}}"),
            " go through the network side by side and share every weight, and ",
            Math("L"),
            " is the sum of their losses. The statistics of a channel run over its ",
            Math(f"M = {self.batch} \\cdot {self.places} = {self.count}") if self.places > 1 else Math(f"M = {self.count}"),
            " values in the batch" + (" (every pixel of every sample)" if self.places > 1 else " (one per sample)"),
            f"; layer {l}'s input ",
            Math(x),
            " holds them" + (", and its stages are nodes of the graph inside the layer:" if self.written else "."),
        )

    def _channel_nodes(self) -> tuple[list, list, list]:
        """Channel 1's stage nodes: its statistics (μ, σ²), its normalised values (x̂, one per input
        value of the channel, sample after sample) and its outputs (y), from the graph."""
        lg = self.lg
        channel_inputs = set(self._channel_inputs())
        stats = [n for n in lg.inner if len(set(n.inputs) & channel_inputs) > 1]
        stat_symbols = {n.symbol for n in stats}
        hats = [n for n in lg.inner if n not in stats and set(n.inputs) & stat_symbols]
        hat_symbols = {n.symbol for n in hats}
        outputs = [n for n in lg.z if set(n.inputs) & hat_symbols]
        return stats, hats, outputs

    def _channel_inputs(self) -> list[sympy.Symbol]:
        per_sample = self.d.graph.by_sample(self.lg.read)
        return [sample[p] for sample in per_sample for p in range(self.places)]

    def _stages(self) -> list:
        d = self.d
        stats, hats, outputs = self._channel_nodes()
        rows = [aligned(d.tex_names[n.symbol], node_rows(d, n, self.detail.terms) if n.kind == "linear"
                        else self.rows(n.expr)) for n in [*stats, hats[0], outputs[0]]]
        return [Equation(" \\\\\n".join(rows)),
                Paragraph("for channel 1, the statistics once for the whole batch and the other two at every value ",
                          "of every sample (shown for the first); ", Math(rf"\epsilon = {epsilon_tex(self.op.eps)}"), " keeps the division finite. Drawn for channel 1:")]

    def _figure(self) -> Figure:
        d = self.d
        stats, hats, outputs = self._channel_nodes()
        inputs = self._channel_inputs()
        step = 0.9
        top = (len(inputs) - 1) * step / 2
        nodes, edges = [], []

        def node(symbol, x, y, style):
            nodes.append(DiagramNode(symbol.name, d.tex_names[symbol], symbol.name, x, y, style))

        for k, (v, h, o) in enumerate(zip(inputs, hats, outputs)):
            y = top - k * step
            node(v, 0.0, y, "x")
            node(h.symbol, 6.0, y, "z")
            node(o.symbol, 8.6, y, "a")
            edges += [DiagramEdge(v.name, h.symbol.name, arrow=True), DiagramEdge(h.symbol.name, o.symbol.name, arrow=True)]
        for k, s in enumerate(stats):
            node(s.symbol, 3.0, (1.2 if k == 0 else -1.2) if len(stats) == 2 else 0.0, "z")
            for v in s.inputs:
                edges.append(DiagramEdge(v.name, s.symbol.name, colour="faint", arrow=True))
        for h in hats:
            for v in h.inputs:
                if v in {s.symbol for s in stats}:
                    edges.append(DiagramEdge(v.name, h.symbol.name, colour="faint", arrow=True))
        high = max(top, 1.2) + 0.9  # above the inputs and the statistics
        heads = ((0.0, high, self._input_head()), (3.0, high, r"\text{statistics}"),
                 (6.0, high, r"\hat{x}"), (8.6, high, r"\text{output}"))
        return Figure(Diagram(tuple(nodes), tuple(edges), colours=(("faint", "9A9A9A"),), node_size=0.75,
                              small=True, heads=heads),
                      caption=((f"Channel 1 of layer {self.number} over the batch: its {self.count} inputs (sample 1's, "
                               "and so on) feed the statistics, and each normalised value reads its input and "
                               "both statistics."),),
                      label="fig:batch")

    def _input_head(self) -> str:
        return r"\text{input}"

    def _locals(self) -> list:
        d = self.d
        stats, hats, outputs = self._channel_nodes()
        rows = []
        for n in [*stats, hats[0], outputs[0]]:
            for variable, local in list(n.local())[:1] if n in stats else n.local():
                tex = " ".join(row.tex for row in self.rows(local, tidy=True))
                rows.append(((Math(d.tex_names[n.symbol]),), (Math(d.tex_names[variable]),), (Math(tex),)))
        return [
            Paragraph("Each stage's local gradients, by the engine (for the statistics, with respect to the first "
                      "input; every input alike):"),
            Table((Column("l"), Column("l"), Column("l")), (("stage",), ("with respect to",), ("local gradient",)),
                  tuple(rows)),
        ]

    def _upstreams(self) -> list:
        d = self.d
        stats, hats, _outputs = self._channel_nodes()
        first_input = self._channel_inputs()[0]
        upstream_of = dict(zip([n.symbol for n in self.lg.inner], self.lg.inner_upstream))
        rows = []
        for n in [hats[0], *reversed(stats)]:
            symbol = upstream_of[n.symbol]
            rows.append(aligned(d.tex_names[symbol], self.rows(d.upstream(symbol))))
        input_upstream = self._input_upstream(first_input)
        rows.append(aligned(d.tex_names[input_upstream], self.rows(d.upstream(input_upstream))))
        return [
            Paragraph("Backwards, each stage's upstream gradient is the sum over the stages that read it (the "
                      "article's rule (20)), upstream gradient times local gradient: the engine's chain forms, "
                      "from the output to the layer's first input of sample 1,"),
            Equation(" \\\\\n".join(rows), breakable=True),
        ]

    def _input_upstream(self, symbol: sympy.Symbol) -> sympy.Symbol:
        """∂L/∂(symbol) for an input value of the layer: the upstream symbol of the layer it comes from."""
        source = self.lg.sources[0]
        outputs = self.d.graph.outputs_of(source)
        return self.d.graph.upstream_of(source)[outputs.index(symbol)] if source else self._x_gradient(symbol)

    def _x_gradient(self, symbol: sympy.Symbol) -> sympy.Symbol:
        raise ValueError("a layer that couples the samples reading the network's input is not written here")

    def _compact(self) -> list:
        d, l = self.d, self.number
        form = self.op.compact(d, l, first=1)[0]
        sigma = rf"\sigma^{{({l})}}_{{1}}"
        _stats, _, _ = self._channel_nodes()
        names = {**d.tex_names, form.sigma: sigma}
        return [
            Paragraph(
                "Written out, these chain forms are long, and the engine simplifies them: it writes every input as ",
                Math(r"x_{j} = \mu + \sigma \hat{x}_{j}"), ", with ", Math(sigma + r" = \sqrt{\sigma^{2} + \epsilon}"),
                ", uses ", Math(r"\sum_{j} \hat{x}_{j} = 0"),
                " (which is what the mean is), and solves for the coefficients of what is left, which is linear in ",
                Math("g"), ". What it derives for channel 1 is the compact form",
            ),
            Equation(form.latex(names)),
            Paragraph(
                "where ", Math("i"), " and ", Math("j"), f" run over the channel's {self.count} values in the batch, ",
                Math(r"g_{j}"), " is the upstream gradient ", Math(rf"\partial L / \partial a^{{({l})}}"),
                " of output ", Math("j"),
                " and ", Math(r"\hat{x}_{j}"), " its normalised input. Its three terms are the three paths back: ",
                "through ", Math(r"\hat{x}_{i}"), " alone, through the mean, and through the variance. The tests ",
                "check that it equals the staged chain form, symbolically for small batches and in numbers for large ones.",
            ),
        ]

    def _parameters(self) -> list:
        d = self.d
        l = self.number
        names = self.network.layer_parameters(l)
        rows = []
        for name in names.values():
            element = sympy.flatten(d.graph.params[name].tolist())[0]
            terms = d.terms(element)
            pieces = []
            for t in terms:
                factor = "" if t.factor == 1 else " " + d.tex_names[t.factor]
                pieces.append(d.tex_names[t.upstream] + factor)
            rows.append(aligned(partial(d, element), sum_rows(elide(pieces, *self.detail.terms))))
        if not rows:
            return []
        return [
            Paragraph("Its parameters are shared by every value of the channel in every sample, so each gradient "
                      "collects one term per value in the batch:"),
            Equation(" \\\\\n".join(rows)),
        ]

    def _worked(self) -> list:
        d, l = self.d, self.number
        stats, hats, outputs = self._channel_nodes()
        inputs = self._channel_inputs()
        upstream = dict(zip([n.symbol for n in self.lg.z], self.lg.upstream))
        input_upstreams = [self._input_upstream(v) for v in inputs]
        rows = []
        for k, (v, h, o, dx) in enumerate(zip(inputs, hats, outputs, input_upstreams)):
            rows.append(((str(k // self.places + 1),), (Math(f"{d.tex_names[v]} = {self.show(v)}"),),
                         (Math(self.show(h.symbol)),), (Math(self.show(o.symbol)),),
                         (Math(self.show(upstream[o.symbol], True)),), (Math(self.show(dx, True)),)))
        header = (("sample",), ("input",), (Math(r"\hat{x}"),), (Math(f"a^{{({l})}}"),),
                  (Math(r"g = \partial L / \partial a^{" + f"({l})" + "}"),), (Math(rf"\partial L / \partial {source_letter(self.lg.sources[0])}"),))
        stat_values = [Math(f"{d.tex_names[s.symbol]} = {self.show(s.symbol)}") for s in stats]
        gs = [self.values[upstream[o.symbol]] for o in outputs]
        xh = [self.values[h.symbol] for h in hats]
        fmt_g, fmt_v = self.example.formats.gradient, self.example.formats.value
        sum_g, sum_gx = sum(gs), sum(g * x for g, x in zip(gs, xh))
        sigma = float(np.sqrt(self.values[stats[-1].symbol] + self.op.eps)) if len(stats) > 1 else None
        body: list = [
            Paragraph("With numbers: sample 1 is the worked example's, the others drawn with the same seed, the "
                      "weights the same. Channel 1's statistics are ", *joined(stat_values),
                      "" if sigma is None else ", so ", *(() if sigma is None else
                      (Math(rf"\sigma^{{({l})}}_{{1}} = {fmt_v(sigma)}"),)),
                      "; its values, sample after sample, with the gradients the engine's chain forms give:"),
            Table(tuple(Column("r") for _ in header), header, tuple(rows)),
        ]
        gamma = self._gamma()
        if sigma is not None:
            first = next((k for k, g in enumerate(gs) if g != 0), 0)  # a value whose own gradient is not 0
            g1, x1 = gs[first], xh[first]
            scale = f"\\frac{{{gamma[1]}}}{{{self.count} \\cdot {fmt_v(sigma)}}}" if gamma else \
                f"\\frac{{1}}{{{self.count} \\cdot {fmt_v(sigma)}}}"
            result = self.values[input_upstreams[first]]
            rows_ = [
                Row(rf"{scale} \left({self.count} \cdot ({fmt_g(g1)}) - ({fmt_g(sum_g)}) - ({fmt_v(x1)}) \cdot ({fmt_g(sum_gx)})\right)"),
                Row(f"= {fmt_g(result)}"),
            ]
            body += [
                Paragraph("The compact form gives an input's gradient from two sums over the channel, ",
                          Math(rf"\sum_{{j}} g_{{j}} = {fmt_g(sum_g)}"), " and ",
                          Math(rf"\sum_{{j}} g_{{j}} \hat{{x}}_{{j}} = {fmt_g(sum_gx)}"), ":"),
                Equation(aligned(d.tex_names[input_upstreams[first]], rows_)),
                Paragraph(f"the number in the table's row {first + 1}; and the parameters' gradients are those sums:"),
                Displays((_parameter_sums(d, self.network, l, fmt_g, sum_g, sum_gx),)),
            ]
        return body

    def _gamma(self) -> tuple[str, str] | None:
        """The scale parameter's first element, (its TeX name, its number), or None without it."""
        names = self.network.layer_parameters(self.number)
        params = [sympy.flatten(self.d.graph.params[name].tolist())[0] for name in names.values()]
        for coefficient, _ in getattr(self.lg.z[0], "terms", ()):
            if coefficient in params:
                return self.d.tex_names[coefficient], self.show(coefficient)
        return None

    def _eval_mode(self) -> Paragraph:
        l = self.number
        return Paragraph(
            f"In eval mode, the statistics are the running mean and variance, constants that training kept: "
            f"layer {l} is then an affine map of each channel, each output reads its own input alone, the samples "
            "go through on their own, and the input gradient is the upstream gradient times ",
            Math(r"\gamma / \sqrt{\overline{\sigma^{2}} + \epsilon}"),
            " — what sections 1 to 5 wrote.",
        )



def _parameter_sums(d: Derivation, network: Network, number: int, fmt, sum_g: float, sum_gx: float) -> str:
    """∂L/∂(scale) = Σ g x̂ and ∂L/∂(shift) = Σ g with numbers, as a display line: the engine's terms
    say which is which (a parameter whose terms carry a factor, x̂, sums g x̂; one without sums g)."""
    items = []
    for name in network.layer_parameters(number).values():
        element = sympy.flatten(d.graph.params[name].tolist())[0]
        factored = any(t.factor != 1 for t in d.terms(element))
        items.append(f"{partial(d, element)} = {fmt(sum_gx if factored else sum_g)}")
    return r" \qquad ".join(items)


def epsilon_tex(eps: float) -> str:
    """ε as a power of ten where it is one (10^{-5}), else as a decimal."""
    mantissa, exponent = f"{eps:.6e}".split("e")
    head = mantissa.rstrip("0").rstrip(".")
    power = rf"10^{{{int(exponent)}}}"
    return power if head == "1" else rf"{head} \cdot {power}"


__all__ = ["BATCH", "FEATURE_BATCH", "batch_section", "batch_size", "coupling_layers", "epsilon_tex"]
