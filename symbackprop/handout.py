"""The teaching handout: everything the templates show, built from a network and its derivation.

``render(network)`` returns ``handout.tex`` and ``handout.md`` as strings, from
``templates/handout.tex.j2`` and ``handout.md.j2``. The context handed to them
holds only strings, numbers, and lists and dicts of them: LaTeX made here is
marked ``Raw``, anything else (the network's name) is escaped by the template
environment. No dates, no paths, no set order: one network gives one text.

``worked_example(network)`` evaluates the derivation's straight-line program at
seeded values; the handout prints those numbers and the tests compare them with
PyTorch.

Imports ``network``, ``derive``, ``latex`` (and what they build on), numpy and sympy;
``presets`` late, only to recognise the article's network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product
from math import prod

import numpy as np
import sympy

from .activations import ACTIVATIONS
from .activations import activation as _activation
from .derive import Derivation, Term, _flat
from .latex import (
    NotationPrinter,
    Raw,
    Row,
    aligned,
    break_expr,
    closed_form,
    environment,
    number,
    partial,
    printer,
    sum_rows,
    term_latex,
    tex_width,
)
from .network import LayerGraph, Network
from .ops import Notation

SEED = 0  # the worked example's values
DETAILED_TOTAL = 24  # weights in all; beyond this, each parameter shows a few in full
DETAILED_PER_PARAMETER = 4
LISTED_ROWS = 14  # rows of forward sums or upstream formulas shown per layer before "…"
LISTED_TERMS = 24  # terms of one sum; a longer sum shows its first 16 and last 4 around "⋯"
LISTED_SETS = 36  # position sets in a layer's table; beyond, the first 24 and "…"
MATRIX_ROWS = 12  # rows of a matrix of numbers; beyond, "⋮" (and "⋯" for columns beyond the page)
MATRICES_SHOWN = 8  # channel pairs of a kernel shown as matrices
EXAMPLE_ROWS_PER_LAYER = 64  # nodes per layer in the worked example's tables
GRAPH_MAX_COLUMN = 24  # nodes in one column of the drawn graph; beyond, a layer-level graph
GRAPH_MAX_EDGES = 300
LINE_WIDTH = 41.0  # em in a display line (estimates run ~5% wide), for matrices side by side
EDGE_COLOURS = ["1F77B4", "D62728", "2CA02C", "FF7F0E", "9467BD", "8C564B", "E377C2", "17BECF", "BCBD22"]
COLOUR_NAMES = ["blue", "red", "green", "orange", "purple", "brown", "pink", "cyan", "olive"]

# The article's formula numbers, shown when the network is the article's own.
ARTICLE_TAGS = {
    "formula1": "1", "gradient_vector": "2", "dense_example": "4", "dense_weight": "5",
    "upstream_dense_list": "10", "upstream_dense": "12", "conv_example_2": "11",
    "conv_weight_2": "13", "upstream_conv_list": "15", "upstream_conv": "17",
    "conv_example_1": "16", "conv_weight_1": "18", "single": "19", "multiple": "20",
}


# ---- the worked example -----------------------------------------------------------------------


@dataclass(frozen=True)
class WorkedExample:
    """Concrete values for a network and every number backpropagation computes from them."""

    network: Network  # the network, with the generic g and L made concrete
    seed: int
    choices: dict[str, str]  # what stood in for the generic g and L: {"g": "sigmoid", "loss": "sse"}
    x: np.ndarray  # input, shaped (C, H, W)
    y: np.ndarray  # targets
    params: dict[str, np.ndarray]  # PyTorch layouts
    values: dict[sympy.Symbol, float]  # every symbol of the derivation's program
    gradients: dict[str, np.ndarray]  # "x" and each parameter: dL/d(it)
    loss: float


def worked_example(network: Network, seed: int = SEED) -> WorkedExample:
    """Seeded round values for x, y and the weights, and every number of the backward pass.

    The generic activation becomes the sigmoid and the generic loss half the sum
    of squared errors. Inputs are in [0, 1] and weights in ±[0.1, 1], one decimal
    each; targets are one decimal in [0, 1], or a one-hot class for cross-entropy.
    """
    choices = {}
    if any(layer.activation == "g" for layer in network.layers):
        choices["g"] = "sigmoid"
    if network.loss == "generic":
        choices["loss"] = "sse"
    concrete = network.with_choices(**choices)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 11, size=concrete.input_shape) / 10
    params = {
        name: rng.integers(1, 11, size=shape) / 10 * rng.choice([-1.0, 1.0], size=shape)
        for name, shape in concrete.parameters.items()
    }
    if concrete.loss == "cross_entropy":
        y = np.zeros(concrete.output_size)
        y[rng.integers(concrete.output_size)] = 1.0
    else:
        y = rng.integers(0, 11, size=concrete.output_size) / 10

    d = concrete.derive()
    program = d.program
    inputs = [*d.graph.x, *d.graph.y, *(s for array in d.symbols.params.values() for s in _flat(array))]
    numbers = [*x.reshape(-1), *y, *(v for name in d.symbols.params for v in params[name].reshape(-1))]
    assigned = [symbol for symbol, _ in program.assignments]
    wanted = assigned + [e for exprs in program.gradients.values() for e in _flat(exprs)]
    # One function runs the whole program: its assignments stand in for lambdify's common
    # subexpressions, so every node is computed once, in order, in float64.
    run = sympy.lambdify(inputs, wanted, "math", cse=lambda exprs: (list(program.assignments), exprs))
    results = iter(run(*map(float, numbers)))
    values = dict(zip(inputs, map(float, numbers)))
    values.update((symbol, float(next(results))) for symbol in assigned)
    gradients = {
        name: np.array([float(next(results)) for _ in _flat(exprs)]).reshape(exprs.shape)
        for name, exprs in program.gradients.items()
    }
    return WorkedExample(concrete, seed, choices, x, y, params, values, gradients, values[program.loss])


def _evaluate(expr: sympy.Expr, values: dict[sympy.Symbol, float]) -> float:
    """``expr`` at ``values`` in float64 (for the few numbers the handout works out by hand)."""
    args = sorted(expr.free_symbols, key=str)
    return float(sympy.lambdify(args, expr, "math")(*[values[a] for a in args]))


# ---- rendering --------------------------------------------------------------------------------


def render(network: Network, seed: int = SEED) -> dict[str, str]:
    """``{"handout.tex": ..., "handout.md": ...}`` for ``network``."""
    context = build_context(network, seed)
    texts = {kind: environment(kind).get_template(f"handout.{kind}.j2").render(**context)
             for kind in ("tex", "md")}
    # Optional blocks leave runs of blank lines; one separates paragraphs in both formats.
    return {f"handout.{kind}": re.sub(r"\n{3,}", "\n\n", text) for kind, text in texts.items()}


def build_context(network: Network, seed: int = SEED) -> dict:
    """Everything the templates show, as strings (``Raw`` for LaTeX made here)."""
    d = network.derive()
    is_article = _is_article(network)
    detailed = _detailed_elements(d)
    return {
        "name": network.name,
        "is_article": is_article,
        "tags": {k: Raw(v) for k, v in ARTICLE_TAGS.items()} if is_article else None,
        "notation": _notation(d),
        "layers": _layer_table(d),
        "formula1": _formula1(network),
        "activations": [Raw(f"${f}$") for f in dict.fromkeys(
            _activation(layer.activation).formula for layer in network.layers if layer.has_activation)],
        "loss": {"name": network.loss, "formula": Raw(network.loss_function.formula),
                 "generic": network.loss_function.generic},
        "padding": _padded(network),
        "forward": [_forward(d, lg) for lg in d.graph.layers],
        "graph": _graph(d),
        "gradient_vector": Raw(_gradient_vector(d)),
        "backward": [_backward(d, lg, detailed, is_article) for lg in reversed(d.graph.layers)],
        "rest": _rest(d, detailed),
        "example": _example(worked_example(network, seed)),
    }


def _is_article(network: Network) -> bool:
    from .presets import article  # a preset to compare with, not something the document needs

    return network.to_dict() == article().to_dict()


def _shape(shape: tuple[int, ...]) -> str:
    return r" \times ".join(map(str, shape))


def _listed(letter: str, count: int) -> str:
    """x_1, ..., x_n (or the numbers alone for no letter), written out when there are one or two."""
    items = [f"{letter}_{{{i}}}" if letter else str(i) for i in (1, count)]
    return items[0] if count == 1 else ", ".join(items) if count == 2 else rf"{items[0]}, \ldots, {items[1]}"


def _input_letter(lg: LayerGraph) -> str:
    return "x" if lg.number == 1 else f"a^{{({lg.number - 1})}}"


def _flat_kernel(lg: LayerGraph) -> bool:
    """True when the layer's weights are numbered flat (dense, or one kernel on one channel)."""
    return lg.layer.flat_weights(lg.input_shape)


def _kind(lg: LayerGraph) -> str:
    return lg.layer.title


def _padded(network: Network) -> bool:
    """Whether some layer pads its input."""
    return any(getattr(layer, "padding", (0, 0)) != (0, 0) for layer in network.layers)


def _op_notation(lg: LayerGraph) -> Notation:
    """What layer ``lg``'s operation needs to write its general formulas."""
    return Notation(lg.number, _input_letter(lg), len(lg.inputs), lambda index: _local(lg, index),
                    _flat_kernel(lg))


def _grid(equations: list[tuple[str, list[Row]]]) -> str:
    """Equations as ``align`` rows; short one-row ones two to a row, as a table of results."""
    if len(equations) > 1 and all(
        len(rows) == 1 and tex_width(lhs) + tex_width(rows[0].tex) <= 18.0 for lhs, rows in equations
    ):
        pairs = [equations[k : k + 2] for k in range(0, len(equations), 2)]
        return " \\\\\n".join(" & ".join(f"{lhs} &= {rows[0].tex}" for lhs, rows in pair)
                              for pair in pairs)
    return " \\\\\n".join(aligned(lhs, rows) for lhs, rows in equations)


def _budget(equations: list[tuple[str, list[Row]]]) -> tuple[list, int]:
    """The first equations that fit in ``LISTED_ROWS`` rows (at least two), and how many are left."""
    shown, used = [], 0
    for lhs, rows in equations:
        if len(shown) >= 2 and used + len(rows) > LISTED_ROWS:
            break
        shown.append((lhs, rows))
        used += len(rows)
    return shown, len(equations) - len(shown)


# ---- 1: notation and the network ------------------------------------------------------------


def _notation(d: Derivation) -> list[list[Raw]]:
    g = d.graph
    flat = all(_flat_kernel(lg) for lg in g.layers)
    bias = any(lg.layer.bias for lg in g.layers)
    channels = ", channel after channel" if d.network.input_shape[0] > 1 else ""
    rows = [
        (_listed("x", len(g.x)), f"input pixels, numbered row by row{channels}"),
        (_listed("y", len(g.y)), "targets, one per output"),
        (r"W^{(l)},\ w^{(l)}_{n}", "weights (kernel) of layer $l$ and its $n$-th weight, numbered row by row"),
    ]
    if not flat:
        rows.append((r"w^{(l)}_{o,c,m,n}", ("weight of a kernel with several channels: output "
                                             "channel $o$, input channel $c$, row $m$, column $n$")))
    if bias:
        rows.append((r"b^{(l)}_{o}", "bias of output channel (or neuron) $o$ of layer $l$"))
    rows += [
        (r"z^{(l)}_{i}", "weighted sum at position $i$ of layer $l$'s output, numbered row by row"),
        (r"a^{(l)}_{i} = g\left(z^{(l)}_{i}\right)", "activation of $z^{(l)}_{i}$"),
        (r"p^{(l)}_{i}", (r"position set: the inputs the kernel covered to form $z^{(l)}_{i}$, in the "
                          r"order of the kernel's weights; $p^{(l)}_{i}[n]$ is the one weight $n$ multiplied")),
        (r"g,\ g'", "activation function and its derivative"),
        (r"L", "loss, a function of the last activations and the targets"),
        (r"\partial L / \partial a^{(l)}_{i}", "upstream gradient of $a^{(l)}_{i}$"),
        (r"M \times N,\ S,\ P", r"height $\times$ width, stride, padding"),
    ]
    return [[Raw(f"${symbol}$"), Raw(text)] for symbol, text in rows]


def _layer_table(d: Derivation) -> list[list[Raw]]:
    rows = []
    for lg in d.graph.layers:
        layer = lg.layer
        count = layer.parameter_count(lg.input_shape)
        kernel, stride, padding = layer.table_cells()
        activation = ACTIVATIONS[layer.activation].label if layer.has_activation else "--"
        bias = ("yes" if layer.bias else "no") if layer.parameter_shapes(lg.input_shape) else "--"
        rows.append([Raw(c) for c in (
            str(lg.number), layer.key, kernel, stride, padding, bias, activation,
            f"${_shape(lg.input_shape)}$", f"${_shape(lg.output_shape)}$", str(count),
        )])
    return rows


def _formula1(network: Network) -> dict:
    """Formula (1) in general (with P only when some layer pads) and for each convolution."""
    padded = _padded(network)
    pm, pn = (" + 2P_M", " + 2P_N") if padded else ("", "")
    general = (rf"M_z = \left\lfloor \frac{{M_x{pm} - M_w}}{{S_M}} \right\rfloor + 1, \qquad "
               rf"N_z = \left\lfloor \frac{{N_x{pn} - N_w}}{{S_N}} \right\rfloor + 1")
    rows = []
    for number_, (layer, shape) in enumerate(zip(network.layers, network.shapes), start=1):
        sides = layer.size_formula(shape, padded)
        if sides is None:
            continue
        rows.append(rf"\text{{layer {number_}:}} &\quad {sides[0]}, &\quad {sides[1]}")
    return {"general": Raw(general), "rows": Raw(" \\\\\n".join(rows)) if rows else None}


# ---- 2: the forward pass ---------------------------------------------------------------------


def _weight_index(d: Derivation, lg: LayerGraph) -> dict[sympy.Symbol, tuple[int, ...]]:
    """Each weight of layer ``lg`` → its 0-based index in the weight array."""
    weights = d.graph.params[f"W{lg.number}"]
    return dict(zip(_flat(weights), product(*(range(n) for n in weights.shape))))


def position_table(d: Derivation, lg: LayerGraph) -> list[list[int | None]]:
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


def _node_rows(d: Derivation, node) -> list[Row]:
    """A node's forward formula in the article's notation: a weighted sum in kernel order,
    an average as 1/K (…), a max as max(…)."""
    names = d.tex_names
    if node.kind == "select":
        return [Row(r"\max\left(" + ", ".join(names[v] for v in node.inputs) + r"\right)")]
    constant = {c for c, _ in node.terms if not c.is_Symbol}
    if constant:
        (coefficient,) = constant
        rows = sum_rows(_elide([names[v] for _, v in node.terms]))
        head = NotationPrinter({}).doprint(coefficient)
        if len(rows) == 1:
            return [Row(rf"{head} \left({rows[0].tex}\right)")]
        return [Row(rf"{head} \Bigl({rows[0].tex}")] + rows[1:-1] + [Row(rf"{rows[-1].tex} \Bigr)")]
    pieces = [f"{names[w]} {names[v]}" for w, v in node.terms]
    if node.bias is not None:
        pieces.append(names[node.bias])
    return sum_rows(_elide(pieces))


def _forward(d: Derivation, lg: LayerGraph) -> dict:
    names = d.tex_names
    equations = [(names[z.symbol], _node_rows(d, z)) for z in lg.z]
    shown, more = _budget(equations)
    conv = lg.layer.shows_position_sets
    sets, columns, sets_more = [], 1, 0
    if conv:
        cells = []
        for i, entries in enumerate(position_table(d, lg), start=1):
            items = [r"\cdot" if e is None else str(e) for e in entries]
            # A long set in pieces of ten, each its own formula, so that it can wrap in its cell.
            pieces = [", ".join(items[k : k + 10]) for k in range(0, len(items), 10)]
            cells.append(Raw(rf"$p^{{({lg.number})}}_{{{i}}} = \lbrace " + ",$ $".join(pieces) + r" \rbrace$"))
        if len(cells) > LISTED_SETS:
            sets_more, cells = len(cells) - 24, cells[:24]
        # Laid out like the feature map when its rows fit on the page, one set a row otherwise.
        width = lg.output_shape[2]
        columns = width if width * (tex_width(cells[-1]) + 3) <= LINE_WIDTH else 1
        sets = [cells[k : k + columns] for k in range(0, len(cells), columns)]
        sets[-1] = sets[-1] + [Raw("")] * (columns - len(sets[-1]))
    z_i = sympy.Symbol("z_", real=True)
    p = NotationPrinter({z_i: f"z^{{({lg.number})}}_{{i}}"})
    activation = None
    if lg.activated:
        activation = Raw(rf"a^{{({lg.number})}}_{{i}} = {p.doprint(lg.a[0].activation.apply(z_i))}, "
                         rf"\quad i = {_listed('', len(lg.a))}")
    return {
        "number": lg.number,
        "conv": conv,
        "kind": _kind(lg),
        "sums": Raw(_grid(shown)),
        "more": more,
        "activation": activation,
        "sets": sets,
        "sets_more": sets_more,
        "set_spec": Raw("l" * columns if columns > 1 else r">{\raggedright\arraybackslash}p{15cm}"),
        "set_header": Raw(" & ".join(["Position sets"] + [""] * (columns - 1))),
        "inputs": Raw(_listed(_input_letter(lg), len(lg.inputs))),
        "input_count": len(lg.inputs),
    }


# ---- 3: the computational graph ---------------------------------------------------------------


_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
_SUP = str.maketrans("0123456789()", "⁰¹²³⁴⁵⁶⁷⁸⁹⁽⁾")


def _graph(d: Derivation) -> dict:
    """The drawn graph: node-level (positions in cm) when legible, else layer-level."""
    g = d.graph
    columns = [[(f"x{i}", f"x_{{{i}}}", "x" + str(i).translate(_SUB), "x") for i in range(1, len(g.x) + 1)]]
    for lg in g.layers:
        for kind in _stages(lg):
            columns.append([
                (f"{kind}{lg.number}n{i}", f"{kind}^{{({lg.number})}}_{{{i}}}",
                 kind + f"({lg.number})".translate(_SUP) + str(i).translate(_SUB), kind)
                for i in range(1, len(lg.z) + 1)
            ])
    columns.append([("L", "L", "L", "loss")])
    edges = _graph_edges(d)
    tallest = max(len(c) for c in columns)
    if tallest > GRAPH_MAX_COLUMN or len(edges) > GRAPH_MAX_EDGES:
        return _layer_graph(d, tallest, len(edges))
    dx = min(2.1, 14.8 / (len(columns) - 1))
    dy = min(0.9, 18.0 / max(1, tallest - 1))
    nodes = []
    for k, column in enumerate(columns):
        top = (len(column) - 1) * dy / 2
        for j, (node_id, label, text, kind) in enumerate(column):
            nodes.append({"id": node_id, "x": f"{k * dx:.2f}", "y": f"{top - j * dy:.2f}",
                          "label": Raw(label), "text": Raw(text), "kind": kind})
    heads = ["x"] + [f"{kind}^{{({lg.number})}}" for lg in g.layers for kind in _stages(lg)] + ["L"]
    height = f"{(tallest - 1) * dy / 2 + 0.8:.2f}"
    return {
        "level": "node",
        "nodes": nodes,
        "edges": edges,
        "heads": [{"x": f"{k * dx:.2f}", "y": height, "label": Raw(h)} for k, h in enumerate(heads)],
        "size": Raw(f"{min(0.75, 0.85 * dy):.2f}cm"),
        "font": Raw(r"\footnotesize" if dy >= 0.8 else r"\scriptsize"),
        "colours": [{"name": f"kernel{k + 1}", "html": c} for k, c in enumerate(EDGE_COLOURS)],
        "legend": _legend(d),
        "links": _link_styles(edges),
    }


def _graph_edges(d: Derivation) -> list[dict]:
    """Edges in drawing order: inputs → z (coloured by kernel position), z → a, a → L."""
    edges = []
    for lg in d.graph.layers:
        kernel = _kernel_shape(d, lg)
        coloured = kernel is not None and prod(kernel) <= len(EDGE_COLOURS)
        index = _weight_index(d, lg) if coloured else {}
        source = "x" if lg.number == 1 else f"a{lg.number - 1}n"
        target = _stages(lg)[0]
        position = {s: i for i, s in enumerate(lg.inputs, start=1)}
        for i, node in enumerate(lg.z, start=1):
            for coefficient, value in _read(node):
                colour = "black!30"
                if coloured:
                    *_, m, n = index[coefficient]
                    colour = f"kernel{m * kernel[1] + n + 1}"
                edges.append({"src": f"{source}{position[value]}", "dst": f"{target}{lg.number}n{i}",
                              "colour": colour})
        if lg.activated:
            edges += [{"src": f"z{lg.number}n{i}", "dst": f"a{lg.number}n{i}", "colour": "black"}
                      for i in range(1, len(lg.z) + 1)]
    last = d.graph.layers[-1]
    edges += [{"src": f"a{last.number}n{i}", "dst": "L", "colour": "black"}
              for i in range(1, len(last.outputs) + 1)]
    return edges


def _stages(lg: LayerGraph) -> str:
    """The columns a layer draws: z and a, or a alone for an operation without activation."""
    return "za" if lg.activated else "a"


def _read(node) -> list[tuple]:
    """(coefficient or None, input) for every input a node reads, in kernel order."""
    return list(node.terms) if node.kind == "linear" else [(None, v) for v in node.inputs]


def _kernel_shape(d: Derivation, lg: LayerGraph) -> tuple[int, int] | None:
    """(kh, kw) of a layer whose weights form a sliding kernel (o, c, kh, kw); else None."""
    shape = d.network.parameters.get(f"W{lg.number}")
    return shape[2:] if shape is not None and len(shape) == 4 else None


def _legend(d: Derivation) -> list[dict]:
    """The edge colours: one per kernel position, named by the weight when kernels are flat."""
    kernels = [lg for lg in d.graph.layers if _kernel_shape(d, lg) is not None]
    sizes = {_kernel_shape(d, lg) for lg in kernels}
    if len(sizes) != 1 or prod(next(iter(sizes))) > len(EDGE_COLOURS):
        return []
    kh, kw = sizes.pop()
    flat = all(_flat_kernel(lg) for lg in kernels)
    return [
        {"colour": f"kernel{m * kw + n + 1}", "name": COLOUR_NAMES[m * kw + n],
         "label": Raw(f"w_{{{m * kw + n + 1}}}" if flat else f"(m, n) = ({m + 1}, {n + 1})")}
        for m, n in product(range(kh), range(kw))
    ]


def _link_styles(edges: list[dict]) -> list[dict]:
    """Mermaid's edge colours: the indices of the edges of each kernel colour."""
    by_colour: dict[str, list[str]] = {}
    for k, edge in enumerate(edges):
        if edge["colour"].startswith("kernel"):
            by_colour.setdefault(edge["colour"], []).append(str(k))
    return [{"ids": ",".join(ids), "html": EDGE_COLOURS[int(c.removeprefix("kernel")) - 1]}
            for c, ids in by_colour.items()]


def _layer_graph(d: Derivation, tallest: int, edge_count: int) -> dict:
    """A layer-level graph: the input, each layer's z and a maps, the loss, top to bottom."""
    def box(node_id: str, tex: str, text: str, shape: tuple[int, ...]) -> dict:
        size = "×".join(map(str, shape))
        return {"id": node_id, "label": Raw(rf"{tex} \in \mathbb{{R}}^{{{_shape(shape)}}}"),
                "text": Raw(f"{text} {size}")}

    boxes = [box("X", "x", "x", d.network.input_shape)]
    steps = []
    for lg in d.graph.layers:
        a = box(f"A{lg.number}", f"a^{{({lg.number})}}", f"a({lg.number})", lg.output_shape)
        if lg.activated:
            boxes += [box(f"Z{lg.number}", f"z^{{({lg.number})}}", f"z({lg.number})", lg.output_shape), a]
            steps += [lg.layer.describe().rsplit(",", 1)[0], lg.layer.activation]
        else:  # a pool: its own nodes are the layer's outputs
            boxes.append(a)
            steps.append(lg.layer.describe())
    boxes.append({"id": "L", "label": Raw("L"), "text": Raw("L")})
    steps.append(f"loss: {d.network.loss}")
    steps = [Raw(s.replace("_", " ")) for s in steps]  # registry names and numbers: safe in both formats
    for k, b in enumerate(boxes):
        b["y"] = f"{-1.25 * k:.2f}"
    edges = [{"src": a["id"], "dst": b["id"], "label": s} for a, b, s in zip(boxes, boxes[1:], steps)]
    return {"level": "layer", "boxes": boxes, "edges": edges, "tallest": tallest,
            "edge_count": edge_count, "max_column": GRAPH_MAX_COLUMN}


# ---- 4: backpropagation ------------------------------------------------------------------------


def _gradient_vector(d: Derivation) -> str:
    parts = [rf"\frac{{\partial L}}{{\partial W^{{({lg.number})}}}}" for lg in reversed(d.graph.layers)]
    return r"\nabla_{W} L = \left[" + ", ".join(parts) + r"\right]"


def _upstream_of(l: int, index: str) -> str:
    return rf"\frac{{\partial L}}{{\partial a^{{({l})}}_{{{index}}}}}"


def _local(lg: LayerGraph, index: str) -> str:
    """da/dz of layer ``lg`` at z^{(l)}_index as the activation writes it, then ``\\cdot``;
    '' for the identity, whose derivative 1 is left out."""
    if not lg.activated:
        return ""
    z, a = sympy.Symbol("z_", real=True), sympy.Symbol("a_", real=True)
    local = lg.a[0].activation.derivative(z, a)
    if local == 1:
        return ""
    p = NotationPrinter({z: f"z^{{({lg.number})}}_{{{index}}}", a: f"a^{{({lg.number})}}_{{{index}}}"})
    tex = p.doprint(local)
    return (rf"\left({tex}\right)" if local.is_Add else tex) + r" \cdot "


def _weight_general(lg: LayerGraph) -> dict | None:
    """∂L/∂w (and ∂L/∂b) of layer l in the article's form — (5) dense, (13)/(18) convolution —
    as its operation writes it; None for a layer without weights."""
    formula = lg.layer.weight_formula(_op_notation(lg))
    if formula is None:
        return None
    return {key: Raw(value) if value else None for key, value in formula.items()}


def _upstream_general(lg: LayerGraph, following: LayerGraph) -> dict:
    """∂L/∂a^{(l)} from the layer after it, as that layer's operation writes it: (12) through
    a dense layer, (17) through a convolution, a pool's routing or spreading."""
    formula = following.layer.upstream_formula(_op_notation(following))
    return {key: Raw(value) if key in ("equation", "note") else value for key, value in formula.items()}


def _detailed_elements(d: Derivation) -> set[sympy.Symbol]:
    """The weights derived in full: all in a small network, else a spread of a few per
    parameter (the first, the last and evenly between)."""
    arrays = [_flat(array) for array in d.symbols.params.values()]
    if sum(len(a) for a in arrays) <= DETAILED_TOTAL:
        return {s for a in arrays for s in a}
    chosen = set()
    for elements in arrays:
        count = min(DETAILED_PER_PARAMETER, len(elements))
        chosen |= {elements[round(k * (len(elements) - 1) / max(1, count - 1))] for k in range(count)}
    return chosen


def _backward(d: Derivation, lg: LayerGraph, detailed: set, is_article: bool) -> dict:
    g = d.graph
    p = printer(d)
    last = lg.number == len(g.layers)
    if last:
        upstream = [] if d.network.loss_function.generic else [
            (d.tex_names[s], break_expr(d.upstream(s), p) or [Row(p.doprint(d.upstream(s)))])
            for s in lg.upstream]
        following = None
    else:
        upstream = [(d.tex_names[s], sum_rows(_elide([term_latex(t, p) for t in d.upstream_terms[s]])))
                    for s in lg.upstream]
        following = _upstream_general(lg, g.layers[lg.number])
    upstream, upstream_more = _budget(upstream)
    parameters = []
    for kind in "Wb":
        name = f"{kind}{lg.number}"
        if name not in g.params:
            continue
        elements = _flat(g.params[name])
        shown = [s for s in elements if s in detailed]
        derivations = [_derivation(d, s) for s in shown]
        grid = None
        if len(derivations) > 1 and all(len(x["rows"]) == 1 and x["closed"] is None for x in derivations):
            grid = Raw(_grid([(partial(d, s), x["rows"]) for s, x in zip(shown, derivations)]))
        parameters.append({
            "tex": Raw(f"{kind}^{{({lg.number})}}" if kind == "W" else f"b^{{({lg.number})}}"),
            "derivations": derivations,
            "grid": grid,
            "hidden": len(elements) - len(shown),
        })
    sizes = [x["size"] for parameter in parameters for x in parameter["derivations"] if x["closed"] is None]
    exact = all(x["exact"] for parameter in parameters for x in parameter["derivations"])
    tags: dict[str, Raw | None] = {"upstream": None, "following": None, "general": None, "example": None}
    if is_article and parameters:
        key = {3: "dense", 2: "conv_weight_2", 1: "conv_weight_1"}[lg.number]
        tags["general"] = Raw(ARTICLE_TAGS["dense_weight" if key == "dense" else key])
        example = {3: "dense_example", 2: "conv_example_2", 1: "conv_example_1"}[lg.number]
        tags["example"] = Raw(ARTICLE_TAGS[example])
        parameters[0]["derivations"][0]["tag"] = tags["example"]
        if following:
            tags["following"] = Raw(ARTICLE_TAGS[f"upstream_{following['kind']}"])
            tags["upstream"] = Raw(ARTICLE_TAGS[f"upstream_{following['kind']}_list"])
    return {
        "number": lg.number,
        "last": last,
        "kind": _kind(lg),
        "shared": lg.layer.shows_position_sets,
        "upstream": Raw(_grid(upstream)) if upstream else None,
        "upstream_more": upstream_more,
        "following": following,
        "general": _weight_general(lg),
        "tags": tags,
        "parameters": parameters,
        "closed_sizes": Raw(_span(sizes) if exact else f"more than {min(sizes):,}") if sizes else None,
        "next": lg.number + 1,
    }


def _derivation(d: Derivation, element: sympy.Symbol) -> dict:
    closed = closed_form(d, element)
    p = printer(d)
    rows = sum_rows(_elide([term_latex(t, p) for t in d.terms(element)]))
    lhs = partial(d, element)
    return {
        "symbol": Raw(d.tex_names[element]),
        "rows": rows,
        "chain": Raw(aligned(lhs, rows)),
        "terms": len(d.terms(element)),
        "closed": Raw(aligned(lhs, closed.rows)) if closed.rows else None,
        "simplified": Raw(aligned(lhs, closed.simplified)) if closed.simplified else None,
        "size": closed.size,
        "exact": closed.exact,
        "tag": None,
    }


def _elide(pieces: list[str], limit: int = LISTED_TERMS, head: int = 16, tail: int = 4) -> list[str]:
    """The terms of a sum, or of a long one its first ``head`` and last ``tail`` around ⋯."""
    return pieces if len(pieces) <= limit else [*pieces[:head], r"\cdots", *pieces[-tail:]]


def _span(sizes: list[int]) -> str:
    low, high = min(sizes), max(sizes)
    return f"{low:,}" if low == high else f"{low:,} to {high:,}"


# ---- appendix: the weights not derived in full ---------------------------------------------------


def _rest(d: Derivation, detailed: set) -> list[list[Raw]]:
    """Every weight not derived in full, with its chain form written Σ ∂L/∂z · input."""
    rows = []
    for array in d.symbols.params.values():
        for element in _flat(array):
            if element not in detailed:
                terms = d.terms(element)
                rows.append([Raw(f"${d.tex_names[element]}$"), Raw(str(len(terms))),
                             Raw(f"${_compact_chain(d, terms)}$")])
    return rows


def _compact_chain(d: Derivation, terms: list[Term]) -> str:
    pieces = [rf"\partial L / \partial {d.tex_names[t.z]}" + ("" if t.factor == 1 else rf" \cdot {d.tex_names[t.factor]}")
              for t in terms]
    return " + ".join(_elide(pieces, limit=6, head=3, tail=1)) or "0"


# ---- 5: the worked example ----------------------------------------------------------------------


def _matrix(values: np.ndarray, room: float) -> tuple[str, float]:
    """A pmatrix of ``values`` (2-D) at most ``room`` em wide, and its estimated width; a big
    one is cut to its top-left corner, with dots for the rest."""
    cells = [[number(v) for v in row] for row in values[: MATRIX_ROWS]]
    widths = [max(tex_width(c) for c in column) + 1.0 for column in zip(*cells)]  # + column gap
    shown = len(widths)
    while shown > 1 and sum(widths[:shown]) + (2.2 if shown < len(widths) else 1.0) > room:
        shown -= 1
    cells = [row[:shown] + ([r"\cdots"] if shown < len(widths) else []) for row in cells]
    if len(values) > MATRIX_ROWS:
        cells.append([r"\vdots"] * len(cells[0]))
    body = r" \\ ".join(" & ".join(row) for row in cells)
    width = sum(widths[:shown]) + (2.2 if shown < len(widths) else 1.0)
    return r"\begin{pmatrix} " + body + r" \end{pmatrix}", width


def _arrays(values: np.ndarray, label) -> list[tuple[str, float]]:
    """``label = matrix`` displays for an array of any rank: one matrix per channel (3-D) or per
    (output, input) channel pair (4-D); a wide matrix is shown transposed."""
    if values.ndim == 4:
        pairs = list(product(range(values.shape[0]), range(values.shape[1])))
        one = values.shape[:2] == (1, 1)
        shown = [_labelled(label(None if one else f"{o + 1},{c + 1}"), values[o, c])
                 for o, c in pairs[:MATRICES_SHOWN]]
        more = len(pairs) - MATRICES_SHOWN
        return shown + ([(rf"\ldots \text{{ and {more} more}}", 8.0)] if more > 0 else [])
    if values.ndim == 3:
        one = values.shape[0] == 1
        return [_labelled(label(None if one else f"c={c + 1}"), values[c]) for c in range(values.shape[0])]
    if values.ndim == 1:
        return [_labelled(label(None), values.reshape(1, -1))]
    return [_labelled(label(None), values)]


def _labelled(tex: str, values: np.ndarray) -> tuple[str, float]:
    if values.shape[1] > 6 and values.shape[0] < values.shape[1]:
        tex, values = rf"\left({tex}\right)^{{\top}}", values.T
    room = LINE_WIDTH - tex_width(tex) - 1.4
    matrix, width = _matrix(values, room)
    return f"{tex} = {matrix}", tex_width(tex) + 1.4 + width


def _lines(items: list[tuple[str, float]]) -> list[Raw]:
    """Displays placed side by side, as many as fit in a line."""
    lines: list[tuple[list[str], float]] = []
    for tex, width in items:
        if lines and lines[-1][1] + 2 + width <= LINE_WIDTH:
            lines[-1][0].append(tex)
            lines[-1] = (lines[-1][0], lines[-1][1] + 2 + width)
        else:
            lines.append(([tex], width))
    return [Raw(r" \qquad ".join(texs)) for texs, _ in lines]


def _example(example: WorkedExample) -> dict:
    d = example.network.derive()
    values, names = example.values, d.tex_names
    tables = []
    for lg in d.graph.layers:
        l = lg.number
        if lg.activated:
            columns = list(zip(lg.z, lg.a, lg.upstream, lg.z_upstream))
            symbols = [(z.symbol, a.symbol, up, dz) for z, a, up, dz in columns]
            header = (rf"$i$ & $z^{{({l})}}_{{i}}$ & $a^{{({l})}}_{{i}}$ & $\partial L / \partial a^{{({l})}}_{{i}}$ "
                      rf"& $\partial L / \partial z^{{({l})}}_{{i}}$")
        else:
            symbols = [(a.symbol, up) for a, up in zip(lg.z, lg.upstream)]
            header = rf"$i$ & $a^{{({l})}}_{{i}}$ & $\partial L / \partial a^{{({l})}}_{{i}}$"
        rows = [[Raw(str(i))] + [Raw(f"${number(values[s])}$") for s in row]
                for i, row in enumerate(symbols, start=1)]
        tables.append({"number": l, "header": Raw(header), "rows": rows[:EXAMPLE_ROWS_PER_LAYER],
                       "spec": Raw("r" * (len(symbols[0]) + 1)),
                       "more": max(0, len(rows) - EXAMPLE_ROWS_PER_LAYER)})

    def label(tex: str):
        return lambda sub: tex if sub is None else f"{tex}_{{{sub}}}"

    inputs = _arrays(example.x, label("X")) + _arrays(example.y, lambda _: "y")
    params, gradients = [], []
    for name in d.symbols.params:
        tex = f"{name[0]}^{{({name[1:]})}}"
        params += _arrays(example.params[name], label(tex))
        gradients += _arrays(
            example.gradients[name],
            lambda sub, tex=tex: rf"\frac{{\partial L}}{{\partial {tex if sub is None else f'{tex}_{{{sub}}}'}}}",
        )

    weighted = [lg for lg in d.graph.layers if f"W{lg.number}" in d.graph.params]
    first = weighted[0].z[0]
    products = [rf"({number(values[w])})({number(values[v])})" for w, v in first.terms]
    if first.bias is not None:
        products.append(f"({number(values[first.bias])})")
    z_rows = sum_rows(_elide(products)) + [Row(f"= {number(values[first.symbol])}")]

    last = weighted[-1]
    weight = _flat(d.graph.params[f"W{last.number}"])[0]
    terms = [
        rf"({number(values[t.upstream])}) \cdot ({number(_evaluate(t.local, values))}) \cdot ({number(values[t.factor])})"
        for t in d.terms(weight)
    ]
    numbers = sum_rows(_elide(terms))
    p = printer(d)
    chain = sum_rows(_elide([term_latex(t, p) for t in d.terms(weight)]))
    gradient_rows = (chain + [Row("= " + numbers[0].tex)] + numbers[1:]
                     + [Row(f"= {number(example.gradients[f'W{last.number}'].reshape(-1)[0])}")])
    activation = example.network.layers[0].activation
    return {
        "choices": bool(example.choices),
        "g": Raw(_activation(activation).formula) if "g" in example.choices else None,
        "loss": Raw(example.network.loss_function.formula) if "loss" in example.choices else None,
        "seed": example.seed,
        "inputs": _lines(inputs),
        "params": _lines(params),
        "tables": tables,
        "value": Raw(number(example.loss)),
        "gradients": _lines(gradients),
        "z_by_hand": Raw(aligned(names[first.symbol], z_rows)),
        "gradient_by_hand": Raw(aligned(partial(d, weight), gradient_rows)),
        "weight": Raw(names[weight]),
    }


__all__ = ["WorkedExample", "build_context", "position_table", "render", "worked_example"]
