"""The handout's drawings: the computational graph and the chain rule's pictures, as
``Diagram`` nodes that TikZ and Mermaid both draw.

The graph is drawn node by node when it is legible (every x, z, a and the loss, edges
coloured by the kernel weight they carry, so that one colour in many places is one shared
weight) and layer by layer otherwise (a box per map, an arrow per operation).

Imports ``network``, ``derive`` (and what they build on), sympy and the document's
``nodes`` and ``common``.
"""

from __future__ import annotations

from itertools import product
from math import prod

import sympy

from ..derivation import Derivation
from ..engine import _flat
from ..graph import LayerGraph
from .common import Detail, shape_tex
from .context import weights_of
from .nodes import (
    Diagram,
    DiagramEdge,
    DiagramNode,
    Figure,
    Inline,
    Math,
    Paragraph,
    Ref,
    Section,
)

GRAPH_MAX_COLUMN = 24  # nodes in one column of the drawn graph; beyond, a layer-level graph
GRAPH_MAX_EDGES = 300
SKIP_BOW = -60  # degrees: a layer-level arrow that skips boxes bows out this far, to the left
SKIP_BEND = 18  # degrees: how far an edge that skips columns bows away from the nodes between
EDGE_COLOURS = [
    "1F77B4",
    "D62728",
    "2CA02C",
    "FF7F0E",
    "9467BD",
    "8C564B",
    "E377C2",
    "17BECF",
    "BCBD22",
]
COLOUR_NAMES = ["blue", "red", "green", "orange", "purple", "brown", "pink", "cyan", "olive"]


def graph_section(d: Derivation, detail: Detail, article: bool) -> Section:
    """Section 3: the computational graph, node by node or layer by layer."""
    return _Graph(d, detail, article).graph()


class _Graph:
    def __init__(self, d: Derivation, detail: Detail, article: bool) -> None:
        self.d, self.detail, self.article = d, detail, article
        self.network = d.network
        self.layers: list[LayerGraph] = list(d.graph.layers)

    def graph(self) -> Section:
        tallest = max([len(self.d.graph.x)] + [len(lg.z) for lg in self.layers])
        edges = sum(len(node.inputs) for lg in self.layers for node in lg.z)
        if self.detail.node_graph and tallest <= GRAPH_MAX_COLUMN and edges <= GRAPH_MAX_EDGES:
            return self.node_graph()
        too_big = self.detail.node_graph
        why = (
            f"With {tallest:,} nodes in its largest layer and {edges:,} edges to the weighted sums, "
            f"the node-by-node graph would be too dense to read (this handout draws it up to "
            f"{GRAPH_MAX_COLUMN} nodes a layer), so "
            if too_big
            else "In this summary "
        )
        intro = Paragraph(
            why + "figure ",
            Ref("fig:graph"),
            " shows it layer by layer: a "
            "box stands for all the nodes of one map and an arrow for all the edges between "
            "two maps, drawn node by node as the position sets of section ",
            Ref("sec:forward"),
            " say.",
        )
        return Section(
            ("The computational graph",),
            (
                intro,
                Figure(
                    self.layer_diagram(), ("The computational graph, layer by layer.",), "fig:graph"
                ),
            ),
            label="sec:graph",
        )

    def node_graph(self) -> Section:
        d = self.d
        columns = [
            [(f"x{i}", f"x_{{{i}}}", "x" + _sub(i), "x") for i in range(1, len(d.graph.x) + 1)]
        ]
        for lg in self.layers:
            for kind in _stages(lg):
                columns.append(
                    [
                        (
                            f"{kind}{lg.number}n{i}",
                            f"{kind}^{{({lg.number})}}_{{{i}}}",
                            kind + _sup(lg.number) + _sub(i),
                            kind,
                        )
                        for i in range(1, len(lg.z) + 1)
                    ]
                )
        columns.append([("L", "L", "L", "loss")])
        tallest = max(len(c) for c in columns)
        dx = min(2.1, 14.8 / (len(columns) - 1))
        dy = min(0.9, 18.0 / max(1, tallest - 1))
        nodes = []
        for k, column in enumerate(columns):
            top = (len(column) - 1) * dy / 2
            for j, (node_id, label, plain, kind) in enumerate(column):
                nodes.append(DiagramNode(node_id, label, plain, k * dx, top - j * dy, kind))
        heads = (
            ["x"]
            + [f"{kind}^{{({lg.number})}}" for lg in self.layers for kind in _stages(lg)]
            + ["L"]
        )
        height = (tallest - 1) * dy / 2 + 0.8
        legend = self.legend()
        edges = self.graph_edges()
        used = {e.colour for e in edges}
        diagram = Diagram(
            tuple(nodes),
            tuple(edges),
            colours=tuple(
                (f"kernel{k + 1}", c)
                for k, c in enumerate(EDGE_COLOURS)
                if f"kernel{k + 1}" in used
            ),
            node_size=min(0.75, 0.85 * dy),
            small=dy < 0.8,
            heads=tuple((k * dx, height, h) for k, h in enumerate(heads)),
        )
        article = ", the article's figure 8" if self.article else ""
        sliding = any(lg.layer.position_note() for lg in self.layers)
        pools = any(not lg.activated for lg in self.layers)
        reads = (
            " node takes as inputs the nodes its position set names (a fully connected node all of "
            "them), every "
            if sliding
            else " node takes as inputs all the outputs of the layer before it, every "
        )
        intro: list[Inline] = [
            f"The network's computational graph{article}: every ",
            Math("z"),
            reads,
            Math("a"),
            " node its own ",
            Math("z"),
            " (a pooling node its window)" if pools else "",
            ", and the loss all the last activations.",
        ]
        if not self.network.is_chain:
            intro += [
                (" The network is a graph: an edge drawn bent skips the columns between (a "
                "shortcut), a node with edges into two layers feeds both (a fork), and a node "
                "with edges from two layers joins them (an addition sums one node of each).")
            ]
        caption: list[Inline] = [
            "The computational graph" + (" (the article's figure 8)." if self.article else ".")
        ]
        if legend:
            intro += [
                (
                    " An edge's colour tells which kernel weight multiplies that input: one colour in "
                    "many places is one shared weight."
                )
            ]
            caption += [" Edge colours: "]
            for k, (colour, name, label) in enumerate(legend):
                caption += [f"{name} ", Math(label), "; " if k < len(legend) - 1 else "."]
        return Section(
            ("The computational graph",),
            (Paragraph(*intro), Figure(diagram, tuple(caption), "fig:graph")),
            label="sec:graph",
        )

    def graph_edges(self) -> list[DiagramEdge]:
        """inputs → z (coloured by kernel position), z → a, a → L; an edge that skips columns
        (a shortcut) is bent, so that it does not run through the nodes between."""
        node_id, column = self._node_places()
        edges = []
        for lg in self.layers:
            kernel = _kernel_shape(self.d, lg)
            coloured = kernel is not None and prod(kernel) <= len(EDGE_COLOURS)
            index = _weight_index(self.d, lg) if coloured else {}
            target = _stages(lg)[0]
            for i, node in enumerate(lg.z, start=1):
                dst = f"{target}{lg.number}n{i}"
                for coefficient, value in _read(node):
                    colour = "black!30"
                    if coloured:
                        *_, m, n = index[coefficient]
                        colour = f"kernel{m * kernel[1] + n + 1}"
                    src = node_id[value]
                    bend = 0 if column[dst] - column[src] == 1 else SKIP_BEND
                    edges.append(DiagramEdge(src, dst, colour, bend=bend))
            if lg.activated:
                edges += [
                    DiagramEdge(f"z{lg.number}n{i}", f"a{lg.number}n{i}", "black")
                    for i in range(1, len(lg.z) + 1)
                ]
        last = self.layers[-1]
        edges += [
            DiagramEdge(f"a{last.number}n{i}", "L", "black")
            for i in range(1, len(last.outputs) + 1)
        ]
        return edges

    def _node_places(self) -> tuple[dict[sympy.Symbol, str], dict[str, int]]:
        """Each output symbol (x, and every layer's a) → its node's id; each node id → its
        column."""
        ids = {x: f"x{i}" for i, x in enumerate(self.d.graph.x, start=1)}
        column = {f"x{i}": 0 for i in range(1, len(self.d.graph.x) + 1)}
        k = 0
        for lg in self.layers:
            for stage in _stages(lg):
                k += 1
                for i in range(1, len(lg.z) + 1):
                    column[f"{stage}{lg.number}n{i}"] = k
            ids.update(
                (node.symbol, f"a{lg.number}n{i}") for i, node in enumerate(lg.outputs, start=1)
            )
        return ids, column

    def legend(self) -> list[tuple[str, str, str]]:
        """(colour, its name, the weights it stands for) per kernel position, when every kernel
        has the same size: w^{(1)}_1, w^{(2)}_1 for a flat one, (m, n) = (1, 1) otherwise."""
        kernels = [lg for lg in self.layers if _kernel_shape(self.d, lg) is not None]
        sizes = {_kernel_shape(self.d, lg) for lg in kernels}
        if len(sizes) != 1 or prod(next(iter(sizes))) > len(EDGE_COLOURS):
            return []
        kh, kw = sizes.pop()
        flat = all(lg.layer.flat_weights(lg.input_shape) for lg in kernels)
        legend = []
        for m, n in product(range(kh), range(kw)):
            k = m * kw + n
            if flat:
                label = ", ".join(f"w^{{({lg.number})}}_{{{k + 1}}}" for lg in kernels)
            else:
                label = f"w^{{(l)}}_{{o,c,{m + 1},{n + 1}}}"
            legend.append((f"kernel{k + 1}", COLOUR_NAMES[k], label))
        return legend

    def layer_diagram(self) -> Diagram:
        """A layer-level graph: the input, each layer's z and a maps, the loss, top to bottom."""

        def box(
            node_id: str, tex_: str, plain: str, shape: tuple[int, ...], y: float
        ) -> DiagramNode:
            size = "×".join(map(str, shape))
            return DiagramNode(
                node_id,
                rf"{tex_} \in \mathbb{{R}}^{{{shape_tex(shape)}}}",
                f"{plain} {size}",
                0.0,
                y,
                "box",
            )

        net = self.network
        boxes = [("X", "x", "x", net.input_shape)]
        edges: list[DiagramEdge] = []
        output = {0: "X"}  # each layer's last box: where what reads it starts
        for lg in self.layers:
            l = lg.number
            if lg.activated:
                boxes += [
                    (f"Z{l}", f"z^{{({l})}}", f"z({l})", lg.output_shape),
                    (f"A{l}", f"a^{{({l})}}", f"a({l})", lg.output_shape),
                ]
                step, first = lg.layer.describe().rsplit(",", 1)[0], f"Z{l}"
            else:
                boxes.append((f"A{l}", f"a^{{({l})}}", f"a({l})", lg.output_shape))
                step, first = lg.layer.describe(), f"A{l}"
            # the arrow from the nearest of what it reads carries the operation's name
            sources = sorted(dict.fromkeys(lg.sources), reverse=True)
            for k, source in enumerate(sources):
                edges.append(_arrow(output[source], first, step if k == 0 else "", 0))
            if lg.activated:
                edges.append(_arrow(f"Z{l}", f"A{l}", lg.layer.activation, 0))
            output[l] = f"A{l}"
        place = {b[0]: k for k, b in enumerate(boxes)}
        # an arrow that skips boxes (a shortcut) bows out to the left, away from the labels of
        # the others on the right, its own label (if any) beside it
        edges = [
            e if place[e.dst] - place[e.src] == 1 else _arrow(e.src, e.dst, e.text or "", SKIP_BOW)
            for e in edges
        ]
        edges.append(_arrow(output[len(self.layers)], "L", f"loss: {net.loss}", 0))
        nodes = [box(*b, -1.25 * k) for k, b in enumerate(boxes)]
        nodes.append(DiagramNode("L", "L", "L", 0.0, -1.25 * len(boxes), "loss"))
        return Diagram(tuple(nodes), tuple(edges), direction="TD")


def _arrow(src: str, dst: str, step: str, bend: int) -> DiagramEdge:
    """An arrow of the layer-level graph, labelled with the operation it stands for."""
    return DiagramEdge(
        src, dst, text=step.replace("_", " ") or None, arrow=True,
        side="left" if bend else "right", bend=bend,
    )


def chain_rule_diagrams() -> tuple[Diagram, Diagram]:
    """The appendix's two pictures: a single and a double dependency; the gradients at a node,
    each gradient flowing back bent away from its forward edge, its label outside the bend."""
    single = Diagram(
        (
            DiagramNode("t1", "t", "t", 0, 0, "plain"),
            DiagramNode("a", "a", "a", 2, 0, "plain"),
            DiagramNode("z1", "z", "z", 4, 0, "plain"),
            DiagramNode("t2", "t", "t", 7, 0, "plain"),
            DiagramNode("a1", "a_1", "a₁", 9, 0.8, "plain"),
            DiagramNode("a2", "a_2", "a₂", 9, -0.8, "plain"),
            DiagramNode("z2", "z", "z", 11, 0, "plain"),
        ),
        (
            DiagramEdge("t1", "a", arrow=True),
            DiagramEdge("a", "z1", arrow=True),
            DiagramEdge("t2", "a1", arrow=True),
            DiagramEdge("t2", "a2", arrow=True),
            DiagramEdge("a1", "z2", arrow=True),
            DiagramEdge("a2", "z2", arrow=True),
        ),
    )
    gradients = Diagram(
        (
            DiagramNode("a1", "a_1", "a₁", 0, 1.6, "plain"),
            DiagramNode("a2", "a_2", "a₂", 0, -1.6, "plain"),
            DiagramNode("z", "z", "z", 7, 0, "focus"),
            DiagramNode("L", r"\cdots\ L", "⋯ L", 11, 0, "plain"),
        ),
        (
            DiagramEdge("a1", "z", arrow=True),
            DiagramEdge("a2", "z", arrow=True),
            DiagramEdge("z", "L", arrow=True),
            DiagramEdge(
                "z",
                "a1",
                tex=r"\partial L / \partial a_1 = \partial L / \partial z \cdot \partial z / \partial a_1",
                text="∂L/∂a₁ = ∂L/∂z · ∂z/∂a₁",
                back=True,
                bend=-30,
                side="above",
            ),
            DiagramEdge(
                "z",
                "a2",
                tex=r"\partial L / \partial a_2 = \partial L / \partial z \cdot \partial z / \partial a_2",
                text="∂L/∂a₂ = ∂L/∂z · ∂z/∂a₂",
                back=True,
                bend=30,
                side="below",
            ),
            DiagramEdge(
                "L",
                "z",
                tex=r"\text{upstream } \partial L / \partial z",
                text="upstream ∂L/∂z",
                back=True,
                bend=40,
                side="below",
            ),
        ),
    )
    return single, gradients


def _stages(lg: LayerGraph) -> str:
    """The columns a layer draws: z and a, or a alone for an operation without activation."""
    return "za" if lg.activated else "a"


def _read(node) -> list[tuple]:
    """(coefficient or None, input) for every input a node reads, in kernel order."""
    return list(node.terms) if node.kind == "linear" else [(None, v) for v in node.inputs]


def _kernel_shape(d: Derivation, lg: LayerGraph) -> tuple[int, int] | None:
    """(kh, kw) of a layer whose weights form a sliding kernel (o, c, kh, kw); else None."""
    weights = weights_of(d, lg.number)
    shape = None if weights is None else d.network.parameters[weights.name]
    return shape[2:] if shape is not None and len(shape) == 4 else None


def _weight_index(d: Derivation, lg: LayerGraph) -> dict[sympy.Symbol, tuple[int, ...]]:
    """Each weight of layer ``lg`` → its 0-based index in the weight array."""
    weights = d.graph.params[weights_of(d, lg.number).name]
    return dict(zip(_flat(weights), product(*(range(n) for n in weights.shape))))


_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
_SUP = str.maketrans("0123456789()", "⁰¹²³⁴⁵⁶⁷⁸⁹⁽⁾")


def _sub(i: int) -> str:
    return str(i).translate(_SUB)


def _sup(layer: int) -> str:
    return f"({layer})".translate(_SUP)


__all__ = ["EDGE_COLOURS", "chain_rule_diagrams", "graph_section"]
