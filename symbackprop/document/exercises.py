"""Exercise sheets and their answer keys, every answer computed from what the sheet prints.

``exercise_set(network, seed)`` draws the numbers (``worked_example``: another seed, other
numbers; or ``values``, given) and, with the same seed, what to ask about: which nodes,
which weight, which layer. Each exercise holds its question, its answer, and the answer as
data (``Exercise.facts``) for the tests to check against the independent numpy backprop:

1. the forward pass: fill in z and a of a few nodes of a layer, from the inputs under each
   node's window and its weights, printed with the question;
2. position sets: the set of a few nodes, and which nodes read a given input;
3. the chain rule: the gradient of a named weight from given upstream gradients;
4. dependencies: which weights the upstream gradient of a node is made of;
5. the tensor view: a whole weight gradient at once (the cross-correlation of the
   layer's input with δ, or δ aᵀ for a dense layer), every cell asked for in the key;
6. a fork and its join (a network that is a graph): the upstream gradient of an output read
   by several layers — a residual block's input, read by the block and by its shortcut — as
   the sum of what each path sends back (the article's rule (20));
7. routing: which outputs of an interpolation (an upsampling) read a given input, with which
   weights, and the input's upstream gradient collected from theirs;
8. batch normalisation over a batch of 2 (a network with a layer that couples the samples, in
   train mode): a channel's statistics, its normalised values, one input's gradient by the
   compact form the engine derived, and the scale's and shift's gradients.

A network that couples the samples is asked about in eval mode (one sample at a time, its
running statistics printed) in the kinds 1 to 7, as the handout writes it, and in train mode
over the batch in the eighth.

Every number a question needs is printed with it, and nothing else: the front of a sheet
gives the network, not its weights. A key computes each answer from the numbers as the
sheet prints them (``WorkedExample.printed``), as a student would, and writes it with four
significant digits; ``facts`` keep the exact value beside it, for the tests.

``KINDS`` names the kinds; ``kinds=`` keeps some of them (in this order), ``layers=`` the
layers questions may be about. A chain gets the first five and the seventh where a layer
interpolates: the sixth draws nothing for a network without a fork.

``exercises(network, seed)`` makes the student's sheet and the key as two documents from
the same exercises; ``render`` writes both in LaTeX and Markdown.

Imports ``network``, ``derive``, ``latex`` (and what they build on), numpy, sympy and the
rest of the document package.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import product
from math import prod
from typing import Any

import numpy as np
import sympy

from ..activations import activation as _activation
from ..graph import LayerGraph
from ..latex import NotationPrinter, Row, aligned, partial, sum_rows, term_latex
from ..network import Network
from . import markdown, tex
from .batch import _Batch, _parameter_sums, coupling_layers, epsilon_tex
from .common import (
    LINE_WIDTH,
    capital_letter,
    correlation_padding,
    elide,
    fact_blocks,
    formula_row,
    input_letter,
    joined,
    labelled_cells,
    layer_table,
    lines,
    loss_formula,
    node_rows,
    position_set_tex,
    position_table,
    printer,
    slashed,
    tensor_indices,
    term_parts,
)
from .context import LayerParameter, forks, paths_of, via_tex, weights_of
from .example import Values, WorkedExample, draw_values, worked_example
from .handout import DETAILS
from .nodes import (
    Code,
    Column,
    Displays,
    Document,
    Equation,
    Inline,
    Keep,
    Math,
    Paragraph,
    Section,
    Table,
)

BLANK = r"\underline{\hspace{4em}}"  # where the student writes
NODES_ASKED = 3  # nodes in the forward and position-set questions
TERMS = (24, 16, 4)  # a sum longer than 24 terms is shown as its first 16 and last 4
MANY = 16  # inputs, terms or readers a question may list; layers with fewer are preferred
FORWARD_INPUTS = 27  # inputs a forward question's node may read (a 3x3x3 or 5x5 window)
WHOLE = (FORWARD_INPUTS + 2, FORWARD_INPUTS, 1)  # no elision: every term a forward question reads
BLOCK = (4, 6)  # at most this block of a dense layer's weight gradient is asked for
KINDS = ("forward", "positions", "gradient", "dependencies", "tensor", "join", "routing", "batchnorm")
ROUNDING = (
    "Each answer is computed from the numbers as printed, as you would: every number the key "
    "writes is rounded to four significant digits, and the next step uses it as written."
)


@dataclass
class Exercise:
    """One exercise: its title, the question and the answer as blocks, and the answer as data."""

    kind: str  # one of KINDS
    title: str
    question: list
    answer: list
    facts: dict[str, Any] = field(default_factory=dict)
    blanks: list = field(default_factory=list)  # what only the sheet shows: where to write


@dataclass
class ExerciseSet:
    network: Network  # the concrete network the numbers are for
    seed: int | None  # None: the numbers were given
    example: WorkedExample
    exercises: list[Exercise]
    coupled: bool = False  # a layer couples the samples in train mode: ``network`` is the eval mode's


def exercise_set(
    network: Network,
    seed: int = 0,
    values: Values | None = None,
    kinds: Iterable[str] | None = None,
    layers: Iterable[int] | None = None,
) -> ExerciseSet:
    """The exercises for ``network`` with seed ``seed`` (numbers and choices); ``values`` =
    (x, y, {parameter: array}) gives the numbers instead of drawing them (the seed still
    chooses the questions); ``kinds`` keeps those of ``KINDS`` named, ``layers`` lets questions
    be about these layers only (1-based). A ValueError names an unknown kind or layer."""
    chosen_kinds = _kinds(kinds)
    allowed = _layers(network, layers)
    coupled = network.couples_samples
    one_sample = network.with_mode("eval") if coupled else network
    if values is not None and one_sample.buffers:
        x, y, params = values
        drawn = draw_values(one_sample, 0)[2]  # running statistics the user did not give
        values = (x, y, {**{name: drawn[name] for name in one_sample.buffers}, **dict(params)})
    example = worked_example(one_sample, seed, values)
    rng = np.random.default_rng(seed)
    maker = _Maker(example, rng, allowed, coupled)
    made = [getattr(maker, kind)() for kind in chosen_kinds]
    return ExerciseSet(example.network, example.seed, example, [e for e in made if e is not None], coupled)


def _kinds(kinds: Iterable[str] | None) -> list[str]:
    if kinds is None:
        return list(KINDS)
    asked = list(kinds)
    unknown = [k for k in asked if k not in KINDS]
    if unknown:
        raise ValueError(f"no exercise kind {', '.join(map(repr, unknown))}; choose from {', '.join(KINDS)}")
    return [k for k in KINDS if k in asked]


def _layers(network: Network, layers: Iterable[int] | None) -> set[int]:
    every = set(range(1, len(network.layers) + 1))
    if layers is None:
        return every
    asked = set(layers)
    wrong = sorted(asked - every, key=str)
    if wrong:
        raise ValueError(
            f"no layer {', '.join(map(str, wrong))} in this network: its layers are 1 to {len(network.layers)}"
        )
    return asked


def exercises(
    network: Network,
    seed: int = 0,
    values: Values | None = None,
    kinds: Iterable[str] | None = None,
    layers: Iterable[int] | None = None,
) -> tuple[Document, Document]:
    """The student's sheet and the answer key (see ``exercise_set``)."""
    chosen = exercise_set(network, seed, values, kinds, layers)
    return _document(chosen, solutions=False), _document(chosen, solutions=True)


def render(
    network: Network,
    seed: int = 0,
    values: Values | None = None,
    kinds: Iterable[str] | None = None,
    layers: Iterable[int] | None = None,
) -> dict[str, str]:
    """``exercises.tex``, ``exercises.md``, ``solutions.tex`` and ``solutions.md``."""
    sheet, key = exercises(network, seed, values, kinds, layers)
    return {
        "exercises.tex": tex.render(sheet),
        "exercises.md": markdown.render(sheet),
        "solutions.tex": tex.render(key),
        "solutions.md": markdown.render(key),
    }


def _document(chosen: ExerciseSet, solutions: bool) -> Document:
    ex = chosen.example
    net = chosen.network
    d = ex.derivation
    activations = list(dict.fromkeys(layer.activation for layer in net.layers if layer.activation))
    said: list[Inline] = []
    if activations:
        said += ["Activations: " if len(activations) > 1 else "Activation: "]
        for k, name in enumerate(activations):
            said += [Math(_activation(name).formula), "; " if k < len(activations) - 1 else ". "]
    said += ["Loss: ", Math(loss_formula(net))]
    if net.loss_function.grouped and len(net.shapes[-1]) == 3:
        said += [", a softmax over the channels of each pixel, the pixels' losses added"]
    said.append(".")
    where = (
        "the numbers given" if chosen.seed is None
        else f"seed {chosen.seed}"
        + (f", draw {ex.draw + 1}, the first to leave at most half of the ReLUs dead" if ex.draw else "")
    )
    front = [
        Paragraph(
            "Backpropagation on the network ",
            Code(net.name),
            ", in the notation of the handout (",
            Code("symbackprop handout"),
            "): ",
            Math("x_i"),
            " the inputs, ",
            Math("z^{(l)}_{i}"),
            " and ",
            Math("a^{(l)}_{i}"),
            " the weighted sums and activations of layer ",
            Math("l"),
            ", ",
            Math("p^{(l)}_{i}"),
            " the position sets, nodes numbered from 1 row by row. Each question prints the numbers "
            f"it needs ({where}). "
            + (
                ROUNDING + " Every answer was also checked against an independent numeric "
                "backpropagation of the exact numbers."
                if solutions
                else "Work with the numbers as printed and round to four significant digits; "
                "the key rounds as it goes in the same way."
            ),
        ),
        layer_table(list(d.graph.layers)),
        Paragraph(*said),
    ]
    if chosen.coupled:
        (number, *_) = coupling_layers(net.with_mode("train"))
        front.append(Paragraph(
            f"Layer {number} normalises over the batch in train mode, so that one sample cannot be followed on "
            "its own: the questions take the network in eval mode (the layer's running statistics given "
            "with it), as the handout's sections 1 to 5 do, except the one on batch normalisation, which "
            "works in train mode over a batch."
        ))
    sections = []
    for k, exercise in enumerate(chosen.exercises, start=1):
        if solutions:
            body = [Keep(*exercise.question), Paragraph("", lead="Answer."), *exercise.answer]
        else:
            body = [Keep(*exercise.question, *exercise.blanks)]
        sections.append(Section((f"Exercise {k}: {exercise.title}",), tuple(body), numbered=False))
    kind = "Solutions" if solutions else "Exercises"
    subtitle = ("the network ", Code(net.name)) + (
        (", given numbers",) if chosen.seed is None else (f", seed {chosen.seed}",)
    )
    return Document(
        title=f"{kind}: backpropagation, step by step",
        subtitle=subtitle,
        front=tuple(front),
        sections=tuple(sections),
    )


class _Maker:
    """Makes each exercise from the example's numbers, choosing with ``rng`` among the layers
    ``allowed``."""

    def __init__(self, example: WorkedExample, rng: np.random.Generator, allowed: set[int],
                 coupled: bool = False) -> None:
        self.coupled = coupled  # the network couples the samples in train mode (``example`` is eval mode's)
        self.ex = example
        self.d = example.derivation
        self.rng = rng
        self.allowed = allowed
        self.layers: list[LayerGraph] = list(self.d.graph.layers)
        self.fv, self.fg = example.formats.value, example.formats.gradient

    def _choose(self, items: list):
        return items[int(self.rng.integers(len(items)))]

    def _weights(self, lg: LayerGraph) -> LayerParameter | None:
        return weights_of(self.d, lg.number)

    def _weighted(self) -> list[LayerGraph]:
        """The layers with weights whose nodes are weighted sums (not a formula of their own, as
        batch normalisation's in eval mode): what the questions on weights are about."""
        return [lg for lg in self._layers() if self._weighs(lg)]

    def _weighs(self, lg: LayerGraph) -> bool:
        """Whether the layer has weights and its nodes are weighted sums of them."""
        return self._weights(lg) is not None and all(node.kind == "linear" for node in lg.z)

    def _layers(self) -> list[LayerGraph]:
        return [lg for lg in self.layers if lg.number in self.allowed]

    def _first_terms(self, lg: LayerGraph) -> list:
        return self.d.terms(self._weights(lg).elements[0])

    def _nodes(self, lg: LayerGraph, count: int = NODES_ASKED, among: list[int] | None = None) -> list[int]:
        pool = list(range(len(lg.z))) if among is None else among
        picked = self.rng.choice(len(pool), size=min(count, len(pool)), replace=False)
        return sorted(pool[int(i)] for i in picked)

    def show(self, symbol) -> str:
        return self.ex.show(symbol)

    def printed(self, symbol) -> float:
        return self.ex.printed(symbol)

    # ---- 1: the forward pass ----------------------------------------------------------------

    def forward(self) -> Exercise | None:
        weighted = [lg for lg in self._weighted() if any(node.terms for node in lg.z)]
        if not weighted:
            return None
        # a layer whose nodes read few enough inputs to be printed with the question
        lg = self._choose(_prefer(weighted, lambda lg: max(len(n.inputs) for n in lg.z) <= FORWARD_INPUTS))
        l, d = lg.number, self.d
        reading = [i for i, node in enumerate(lg.z) if node.terms]  # a node on padding alone reads nothing
        chosen = self._nodes(lg, among=reading)
        reads = _read_names(lg.sources)
        question: list = [
            Paragraph(
                f"Layer {l} ({lg.layer.title}) computes each node from {reads}. Below, for each "
                "node asked, the inputs it reads and the weights it multiplies them with"
                + (", laid out as its window" if lg.layer.window_shape(lg.input_shape) else "")
                + ". Fill in the table."
            )
        ]
        question += self._forward_numbers(lg, chosen)
        has_a = lg.activated
        header = [(Math("i"),), (Math(f"z^{{({l})}}_{{i}}"),)] + (
            [(Math(f"a^{{({l})}}_{{i}}"),)] if has_a else []
        )
        blanks, filled, z_printed, a_printed = [], [], [], []
        answer_rows: list = []
        for i in chosen:
            node = lg.z[i]
            z_value = sum(self.printed(w) * self.printed(v) for w, v in node.terms)
            if node.bias is not None:
                z_value += self.printed(node.bias)
            z_text = self.fv(z_value)
            z_printed.append(self.fv.rounded(z_value))
            blanks.append(((str(i + 1),), (Math(BLANK),)) + (((Math(BLANK),),) if has_a else ()))
            values = [(Math(z_text),)]
            if has_a:  # g of the z as printed
                a_value = self.ex.value_with(lg.a[i].activation.apply(node.symbol), {node.symbol: z_printed[-1]})
                a_printed.append(self.fv.rounded(a_value))
                values.append((Math(self.fv(a_value)),))
            filled.append(((str(i + 1),), *values))
            pieces = [f"({self.show(w)})({self.show(v)})" for w, v in node.terms]
            if node.bias is not None:
                pieces.append(f"({self.show(node.bias)})")
            numbers = sum_rows(elide(pieces, *WHOLE))
            rows = node_rows(d, node, WHOLE) + [_eq(numbers[0])] + numbers[1:] + [_eq(z_text)]
            answer_rows.append(Equation(aligned(d.tex_names[node.symbol], rows)))
            z = sympy.Symbol("z", real=True)
            if has_a and lg.a[i].activation.apply(z) != z:  # an identity's a is its z: nothing to add
                applied = NotationPrinter({z: z_text}).doprint(lg.a[i].activation.apply(z))
                answer_rows.append(
                    Equation(aligned(d.tex_names[lg.a[i].symbol], [Row(applied), _eq(self.fv(a_value))]))
                )
        spec = tuple(Column("r") for _ in header)
        answer: list = [Table(spec, tuple(header), tuple(filled)), *answer_rows]
        facts = {
            "layer": l,
            "nodes": chosen,
            "z": [self.ex.values[lg.z[i].symbol] for i in chosen],
            "a": [self.ex.values[lg.a[i].symbol] for i in chosen] if has_a else None,
            "z_printed": z_printed,
            "a_printed": a_printed if has_a else None,
            "reads": [[self.printed(v) for _, v in lg.z[i].terms] for i in chosen],
        }
        return Exercise(
            "forward",
            "the forward pass",
            question,
            answer,
            facts,
            blanks=[Table(spec, tuple(header), tuple(blanks))],
        )

    def _node_numbers(self, lg: LayerGraph, i: int) -> Displays | None:
        """What node i reads, laid out as its window (a dot on the padding) beside its weights in
        the same places, and its bias; None for a node without a window."""
        d, node = self.d, lg.z[i]
        name = d.tex_names[node.symbol]
        shape = lg.layer.window_shape(lg.input_shape)
        connection = lg.layer.connections(lg.input_shape)[i]
        items: list[tuple[str, float]] = []
        bias = [] if node.bias is None else [(f"{d.tex_names[node.bias]} = {self.show(node.bias)}", 6.0)]
        if shape is not None and len(connection.slots) == len(node.terms):
            channels, rows, columns = shape
            inputs: list = [None] * (channels * rows * columns)
            weights: list = [None] * (channels * rows * columns)
            for slot, (w, v) in zip(connection.slots, node.terms):
                inputs[slot], weights[slot] = v, w
            for c in range(channels):
                span = range(c * rows * columns, (c + 1) * rows * columns)
                read = [inputs[k] for k in span if inputs[k] is not None]
                if not read:
                    continue  # the window lies on the padding in this channel: nothing read
                first, last = d.tex_names[read[0]], d.tex_names[read[-1]]
                where = f"{first}" if len(read) == 1 else rf"{first}, \ldots, {last}"
                channel = f", channel {c + 1}" if channels > 1 else ""
                cells = [[self._cell(inputs[c * rows * columns + m * columns + n]) for n in range(columns)]
                         for m in range(rows)]
                kernel = [[self._cell(weights[c * rows * columns + m * columns + n]) for n in range(columns)]
                          for m in range(rows)]
                items.append(labelled_cells(rf"{name}\text{{ reads{channel} }} {where}", cells))
                items.append(labelled_cells(r"\text{weights}", kernel))
            return Displays(tuple(lines(items + bias)))
        return None

    def _forward_numbers(self, lg: LayerGraph, chosen: list[int]) -> list:
        """What the nodes asked read: each laid out as its window where it has one; otherwise
        the inputs, once for the nodes that read the same ones, then each node's weights."""
        windows = [self._node_numbers(lg, i) for i in chosen]
        if all(windows):
            return windows
        d = self.d
        blocks: list = []
        groups: dict[tuple, list[int]] = {}
        for i in chosen:
            groups.setdefault(tuple(v for _, v in lg.z[i].terms), []).append(i)
        for inputs, nodes in groups.items():
            named = joined([Math(d.tex_names[lg.z[i].symbol]) for i in nodes])
            pairs = [f"{d.tex_names[v]} = {self.show(v)}" for v in inputs]
            blocks += [
                Paragraph(*named, " read" + ("" if len(nodes) > 1 else "s") + ":"),
                Displays(tuple(r" \qquad ".join(pairs[k : k + 4]) for k in range(0, len(pairs), 4))),
            ]
            for i in nodes:
                node = lg.z[i]
                weights = [f"{d.tex_names[w]} = {self.show(w)}" for w, _ in node.terms if w.is_Symbol]
                if node.bias is not None:
                    weights.append(f"{d.tex_names[node.bias]} = {self.show(node.bias)}")
                blocks += [
                    Paragraph("and ", Math(d.tex_names[node.symbol]), " multiplies them with"),
                    Displays(tuple(r" \qquad ".join(weights[k : k + 4]) for k in range(0, len(weights), 4))),
                ]
        return blocks

    def _cell(self, symbol) -> str:
        return r"\cdot" if symbol is None else self.show(symbol)

    # ---- 2: position sets ---------------------------------------------------------------------

    def positions(self) -> Exercise | None:
        sliding = [lg for lg in self._layers() if lg.layer.position_note()]
        tables = {lg.number: position_table(lg) for lg in sliding}
        # a layer some input of which is read (padding alone reads nothing: nothing to ask)
        sliding = [lg for lg in sliding if any(e is not None for row in tables[lg.number] for e in row)]
        if not sliding:
            return None
        lg = self._choose(
            _prefer(
                sliding,
                lambda lg: (
                    lg.layer.window(lg.input_shape) <= MANY and len(lg.z) <= MANY * len(lg.read)
                ),
            )
        )
        l, op = lg.number, lg.layer
        table = tables[l]
        reading = [i for i, row in enumerate(table) if any(e is not None for e in row)]
        chosen = self._nodes(lg, 2, among=reading)
        readers: dict[int, list[int]] = {}
        for i, entries in enumerate(table):
            for e in entries:
                if e is not None:
                    readers.setdefault(e, []).append(i + 1)
        shared = [j for j, users in readers.items() if len(users) > 1] or list(readers)
        j = self._choose(sorted(shared))
        letter = input_letter(lg)
        place = op.place_word()
        padded = op.pads() and any(table[i][k] is None for i in chosen for k in range(len(table[i])))
        question = [
            Paragraph(
                f"Layer {l} is {_a(op.title)} layer ({op.describe()}) on an input of shape ",
                Math(r" \times ".join(map(str, lg.input_shape))),
                ", numbered from 1 row by row"
                + (", channel after channel" if lg.input_shape[0] > 1 else "")
                + ".",
            ),
            Paragraph(
                "(a) Write the position sets ",
                *joined([Math(f"p^{{({l})}}_{{{i + 1}}}") for i in chosen]),
                f": {op.position_note()}"
                + (" (a dot where a place lies on the padding)" if padded else "")
                + ".",
            ),
            Paragraph(
                "(b) Which nodes of layer ",
                Math(str(l)),
                " read ",
                Math(f"{letter}_{{{j}}}"),
                f"? At which {place} of each?",
            ),
        ]
        places = {i: table[i - 1].index(j) + 1 for i in readers[j]}
        node_letter = "z" if lg.activated else "a"
        answer = [
            Paragraph("(a)"),
            Table(
                (Column("l", 15.0),),
                (("Position sets",),),
                tuple(((Math(position_set_tex(lg, i + 1, table[i])),),) for i in chosen),
            ),
            Paragraph(
                "(b) ",
                Math(f"{letter}_{{{j}}}"),
                " is read by ",
                *joined([Math(f"{node_letter}^{{({l})}}_{{{i}}}") for i in readers[j]]),
                f", at {place}s " if len(readers[j]) > 1 else f", at {place} ",
                ", ".join(str(places[i]) for i in readers[j]),
                " respectively" if len(readers[j]) > 1 else "",
                ": its upstream gradient will have one term from each." if len(readers[j]) > 1
                else ": its upstream gradient will have one term, from it.",
            ),
        ]
        facts = {
            "layer": l,
            "nodes": chosen,
            "sets": [table[i] for i in chosen],
            "input": j,
            "readers": readers[j],
            "places": [places[i] for i in readers[j]],
        }
        return Exercise("positions", "position sets", question, answer, facts)

    # ---- 3: the chain rule --------------------------------------------------------------------

    def gradient(self) -> Exercise | None:
        weighted = self._weighted()
        if not weighted:
            return None
        # a weight used at few enough positions for its terms to be listed
        lg = self._choose(_prefer(weighted, lambda lg: len(self._first_terms(lg)) <= MANY))
        d, ex, l = self.d, self.ex, lg.number
        weights = self._weights(lg)
        used = [w for w in weights.elements if d.terms(w)] or weights.elements
        weight = self._choose(used)
        terms = d.terms(weight)
        index = {n.symbol: k for k, n in enumerate(lg.z)}
        rows = []
        numbers: dict = {}  # each printed symbol → the number printed
        for t in terms:
            k = index[t.z]
            a_symbol = lg.a[k].symbol if lg.activated else lg.z[k].symbol
            for symbol in (t.upstream, t.z, a_symbol, t.factor):
                if symbol != 1:
                    numbers[symbol] = self.printed(symbol)
            rows.append(
                (
                    (str(k + 1),),
                    (Math(self.show(t.upstream)),),
                    (Math(self.show(t.z)),),
                    (Math(self.show(a_symbol)),),
                    (Math(f"{d.tex_names[t.factor]} = {self.show(t.factor)}") if t.factor != 1 else Math("1"),),
                )
            )
        header = (
            (Math("i"),),
            (Math(rf"\partial L / \partial a^{{({l})}}_{{i}}"),),
            (Math(f"z^{{({l})}}_{{i}}"),),
            (Math(f"a^{{({l})}}_{{i}}"),),
            ("the input it multiplied",),
        )
        shared = len(terms) > 1
        question = [
            Paragraph(
                "Compute ",
                Math(slashed(partial(d, weight))),
                " by the chain rule. "
                + (
                    f"The weight is shared: it was used at {len(terms)} positions of layer {l}, listed "
                    "below with the upstream gradient, the weighted sum and the activation there, and the "
                    "input the weight multiplied. "
                    if shared
                    else "The weight connects one input to one neuron; the upstream gradient, the weighted sum, "
                    "the activation and the input are below. "
                )
                + "Write the formula first: one term per position, upstream gradient times local gradient "
                "times input.",
            ),
            Table(tuple(Column("r") for _ in header), header, tuple(rows)),
        ]
        value = ex.gradients[weights.name].reshape(-1)[weights.elements.index(weight)]
        steps, result = self._terms_from_printed(terms, numbers)
        answer = [Equation(aligned(partial(d, weight), steps))]
        facts = {
            "layer": l,
            "weight": str(weight),
            "value": float(value),
            "printed": self.fg(result),
            "from_printed": result,
            "upstream": {str(t.upstream): ex.values[t.upstream] for t in terms},
            "terms": len(terms),
            "parts": [len(term_parts(t)) for t in terms],
        }
        return Exercise(
            "gradient", "a weight's gradient by the chain rule", question, answer, facts
        )

    def _terms_from_printed(self, terms: list, numbers: dict) -> tuple[list[Row], float]:
        """A gradient's terms (``term_latex``), then each factor as a student has it — the local
        gradient computed from the printed z or a, written as printed — then their sum."""
        d = self.d
        p = printer(d)
        factors_of = []
        for t in terms:
            factors = []
            for part in term_parts(t):
                if part in numbers:
                    factors.append((self.show(part), numbers[part]))
                else:  # a local gradient: from the printed numbers it reads
                    local = self.ex.value_with(part, numbers)
                    if local in (0.0, 1.0):  # an Iverson bracket's (or a copy's) exact 0 or 1
                        factors.append((str(int(local)), local))
                    else:
                        factors.append((self.fv(local), self.fv.rounded(local)))
            factors_of.append(factors)
        result = float(sum(prod(n for _, n in factors) for factors in factors_of))
        chain = sum_rows(elide([term_latex(t, p) for t in terms], *TERMS))
        shown = [r" \cdot ".join(f"({text})" for text, _ in factors) or "1" for factors in factors_of]
        numbers_rows = sum_rows(elide(shown, *TERMS))
        return chain + [_eq(numbers_rows[0])] + numbers_rows[1:] + [_eq(self.fg(result))], result

    # ---- 4: dependencies ----------------------------------------------------------------------

    def dependencies(self) -> Exercise | None:
        net = self.d.network

        def weighted_reader(lg: LayerGraph) -> LayerGraph | None:
            """The one layer that reads ``lg``, when it has weights (a fork is the join
            exercise's)."""
            readers = net.consumers(lg.number)
            if len(readers) != 1:
                return None
            reader = self.layers[readers[0] - 1]
            return reader if self._weighs(reader) else None

        candidates = [
            lg for lg in self._layers()[:-1] if lg.number < len(self.layers) and weighted_reader(lg) is not None
        ]
        candidates = [lg for lg in candidates if any(self.d.upstream_terms_of(s) for s in lg.upstream)]
        if not candidates:
            return None
        lg = self._choose(
            _prefer(candidates, lambda lg: len(self.d.upstream_terms_of(lg.upstream[0])) <= MANY)
        )
        d, l = self.d, lg.number
        following = weighted_reader(lg)
        k = following.number
        read = [j for j, s in enumerate(lg.upstream) if d.upstream_terms_of(s)]
        j = read[int(self.rng.integers(len(read)))]
        symbol = lg.upstream[j]
        terms = d.upstream_terms_of(symbol)
        weights = [t.factor for t in terms]
        p = printer(d)
        question = [
            Paragraph(
                "The output ",
                Math(d.tex_names[lg.outputs[j].symbol]),
                f" of layer {l} feeds "
                f"layer {k} ({following.layer.title}). On which weights of layer {k} does "
                "its upstream gradient ",
                Math(slashed(d.tex_names[symbol])),
                " depend, and through which nodes? Write its formula.",
            )
        ]
        rows = tuple(((Math(d.tex_names[t.z]),), (Math(d.tex_names[t.factor]),)) for t in terms)
        answer = [
            Paragraph(
                f"It feeds {len(terms)} node"
                + ("s" if len(terms) != 1 else "")
                + f" of layer {k}, each through one weight:"
            ),
            Table((Column("l"), Column("l")), (("node",), ("weight",)), rows),
            Equation(
                aligned(
                    d.tex_names[symbol], sum_rows(elide([term_latex(t, p) for t in terms], *TERMS))
                )
            ),
        ]
        facts = {
            "layer": l,
            "node": j,
            "weights": [str(w) for w in weights],
            "nodes": [str(t.z) for t in terms],
        }
        return Exercise(
            "dependencies", "what an upstream gradient depends on", question, answer, facts
        )

    # ---- 5: the tensor view -------------------------------------------------------------------

    def tensor(self) -> Exercise | None:
        """A whole weight gradient: the cross-correlation of the input with δ for a convolution
        of stride 1 without dilation (one channel pair), δ aᵀ for a dense layer."""
        simple = [
            lg
            for lg in self._weighted()
            if (lg.layer.correlates() and max(lg.input_shape[1:]) <= 8 and self._delta_fits(lg))
            or lg.layer.outer_product()
        ]
        if not simple:
            return None
        lg = self._choose(simple)
        if lg.layer.correlates():
            return self._correlation(lg)
        return self._outer(lg)

    def _delta_fits(self, lg: LayerGraph) -> bool:
        """Whether the map of δ, as printed, fits a line beside nothing else."""
        height, width = lg.output_shape[1:]
        deltas = list(lg.z_upstream or lg.upstream)[: height * width]
        cells = [[self.show(deltas[i * width + j]) for j in range(width)] for i in range(height)]
        return labelled_cells(r"\delta^{(1)}", cells)[1] <= LINE_WIDTH

    def _correlation(self, lg: LayerGraph) -> Exercise:
        d, ex, l = self.d, self.ex, lg.number
        deltas = list(lg.z_upstream or lg.upstream)
        gradient = ex.gradients[self._weights(lg).name]
        letter = capital_letter(lg.sources[0])
        delta_tex = rf"\delta^{{({l})}}"
        height, width = lg.output_shape[1:]
        delta_map = np.array(deltas[: height * width], dtype=object).reshape(height, width)
        (ph, pw) = correlation_padding(lg.input_shape, lg.output_shape, gradient.shape[-2:])
        plane = lg.input_shape[1] * lg.input_shape[2]
        inputs = np.full((lg.input_shape[1] + 2 * ph, lg.input_shape[2] + 2 * pw), None, dtype=object)
        inputs[ph : ph + lg.input_shape[1], pw : pw + lg.input_shape[2]] = np.array(
            list(lg.read[:plane]), dtype=object
        ).reshape(lg.input_shape[1:])
        channel = "" if gradient.shape[:2] == (1, 1) else " for output channel 0 and input channel 0"
        padded = r"_{\text{padded}}" if (ph, pw) != (0, 0) else ""

        def number(symbol) -> float:
            return 0.0 if symbol is None else self.printed(symbol)

        def shown(symbol) -> str:
            return "0" if symbol is None else self.show(symbol)

        givens = lines(
            [
                labelled_cells(letter + padded, [[shown(s) for s in row] for row in inputs]),
                labelled_cells(delta_tex, [[self.show(s) for s in row] for row in delta_map]),
            ]
        )
        question = [
            Paragraph(
                "Below are the input of layer ",
                Math(str(l)),
                f" ({lg.layer.title})" + (", zero-padded" if padded else "") + " and ",
                Math(delta_tex),
                ", the map of ",
                Math(rf"\partial L / \partial z^{{({l})}}_{{i}}"),
                f"{channel}. Compute ",
                Math(rf"\partial L / \partial W^{{({l})}}"),
                f"{channel} at once, as the cross-correlation of the input with ",
                Math(delta_tex),
                ", and say why it is.",
            ),
            Displays(tuple(givens)),
        ]
        kh, kw = gradient.shape[-2:]
        student = np.array(
            [
                [
                    sum(number(delta_map[i, j]) * number(inputs[m + i, n + j]) for i in range(height) for j in range(width))
                    for n in range(kw)
                ]
                for m in range(kh)
            ]
        )
        products = [
            f"({self.show(delta_map[i, j])})({shown(inputs[i, j])})" for i, j in product(range(height), range(width))
        ]
        answer = [
            Paragraph(
                "Each weight's gradient sums, over every position, ",
                Math(delta_tex),
                " there times the input the weight met there; sliding ",
                Math(delta_tex),
                " over the input like a kernel does that for every weight at once (indices from 0, "
                "as in the tensor view):",
            ),
            Displays(
                tuple(
                    lines(
                        [
                            labelled_cells(
                                rf"\frac{{\partial L}}{{\partial W^{{({l})}}}} = {letter} \star {delta_tex}",
                                [[self.fg(v) for v in row] for row in student],
                            )
                        ]
                    )
                )
            ),
            Paragraph("For instance, its entry ", Math("(0, 0)"), ":"),
            Equation(
                aligned(
                    rf"\left({letter} \star {delta_tex}\right)_{{0,0}}",
                    sum_rows(elide(products, *TERMS)) + [_eq(self.fg(student[0, 0]))],
                )
            ),
            *_tensor_formulas(d, l),
        ]
        facts = {
            "layer": l,
            "kind": "correlation",
            "gradient": gradient[0, 0].tolist(),
            "from_printed": student.tolist(),
            "printed": [[self.fg(v) for v in row] for row in student],
            "delta": [[ex.values[s] for s in row] for row in delta_map],
            "input": [[0.0 if s is None else ex.values[s] for s in row] for row in inputs],
            "shape": (kh, kw),
        }
        return Exercise("tensor", "the tensor view", question, answer, facts)

    def _outer(self, lg: LayerGraph) -> Exercise:
        d, ex, l = self.d, self.ex, lg.number
        deltas = list(lg.z_upstream or lg.upstream)
        sources = list(lg.read)
        gradient = ex.gradients[self._weights(lg).name]
        delta_tex = rf"\delta^{{({l})}}"
        rows = min(len(deltas), BLOCK[0])
        # The columns start at the first input that is not zero (a dead ReLU's or a pool's zeros
        # would make a block of zeros, which teaches nothing), as many as the key can print whole.
        nonzero = [k for k, s in enumerate(sources) if abs(ex.values[s]) > 1e-12]
        columns = min(len(sources), BLOCK[1])
        while True:
            start = min(nonzero[0] if nonzero else 0, len(sources) - columns)
            block = [
                [self.printed(deltas[f]) * self.printed(sources[start + i]) for i in range(columns)]
                for f in range(rows)
            ]
            label = rf"\frac{{\partial L}}{{\partial W^{{({l})}}}}"
            _, width = labelled_cells(label, [[self.fg(v) for v in row] for row in block])
            if width <= LINE_WIDTH - 2 or columns == 1:
                break
            columns -= 1
        whole = (rows, columns) == gradient.shape
        which = f"{columns} columns" if start == 0 else f"columns {start + 1} to {start + columns}"
        part = "" if whole else f"the first {rows} rows and {which} of "
        delta_name = delta_tex if whole else rf"\left({delta_tex}_{{f}}\right)_{{f \le {rows}}}"
        span = rf"i \le {columns}" if start == 0 else rf"{start} < i \le {start + columns}"
        input_name = input_letter(lg) if whole else rf"\left({input_letter(lg)}_{{i}}\right)_{{{span}}}"
        givens = lines(
            [
                labelled_cells(delta_name, [[self.show(deltas[f])] for f in range(rows)]),
                labelled_cells(input_name, [[self.show(sources[start + i])] for i in range(columns)]),
            ]
        )
        question = [
            Paragraph(
                "Below are ",
                Math(delta_tex),
                ", the vector of ",
                Math(rf"\partial L / \partial z^{{({l})}}_{{f}}"),
                f" of the {lg.layer.title} layer {l}, and "
                "its input" + ("" if whole else " (the entries needed)") + f". Compute {part}",
                Math(rf"\partial L / \partial W^{{({l})}}"),
                " at once as the outer product ",
                Math(rf"{delta_tex} \left({input_letter(lg)}\right)^{{\top}}"),
                ", and say why it is.",
            ),
            Displays(tuple(givens)),
        ]
        rows_name = "" if whole else f" (rows 1 to {rows}, {which})"
        answer = [
            Paragraph(
                "Weight ",
                Math(f"w^{{({l})}}_{{f,i}}"),
                " connects input ",
                Math("i"),
                " to neuron ",
                Math("f"),
                ", a single dependency: its gradient is ",
                Math(r"\delta_f"),
                " times that input, the entry ",
                Math("(f, i)"),
                f" of the outer product{rows_name}:",
            ),
            Displays(
                tuple(
                    lines([labelled_cells(rf"\frac{{\partial L}}{{\partial W^{{({l})}}}}", [[self.fg(v) for v in row] for row in block])])
                )
            ),
            *_tensor_formulas(d, l),
        ]
        facts = {
            "layer": l,
            "kind": "outer",
            "gradient": gradient[:rows, start : start + columns].tolist(),
            "from_printed": block,
            "printed": [[self.fg(v) for v in row] for row in block],
            "delta": [ex.values[deltas[f]] for f in range(rows)],
            "input": [ex.values[sources[start + i]] for i in range(columns)],
            "columns_from": start,
        }
        return Exercise("tensor", "the tensor view", question, answer, facts)

    # ---- 6: a join: the sum over the paths -----------------------------------------------------

    def join(self) -> Exercise | None:
        """Where the network forks (a residual block's input, read by the block and by its
        shortcut), one output's upstream gradient as the sum of what each reader sends back:
        the article's rule (20), with numbers."""
        found = [l for l in forks(self.d.network) if l in self.allowed]
        if not found:
            return None
        d, ex = self.d, self.ex
        fg = self.fg

        def paths(symbol) -> dict[int, list]:
            return paths_of(d, d.upstream_terms_of(symbol))

        def sums(symbol) -> dict[int, float]:
            return {k: sum(ex.value(t.expr) for t in terms) for k, terms in paths(symbol).items()}

        lg = self.layers[
            self._choose(
                _prefer(found, lambda l: len(d.upstream_terms_of(self.layers[l - 1].upstream[0])) <= MANY)
            )
            - 1
        ]
        # a node every reader reads (a strided shortcut skips some), where every path brings
        # back something (not a dead ReLU's zero)
        readers = len(d.network.consumers(lg.number))
        forked = [j for j, s in enumerate(lg.upstream) if len(paths(s)) == readers]
        alive = [j for j in forked if all(abs(v) > 1e-12 for v in sums(lg.upstream[j]).values())]
        j = self._choose(alive or forked or list(range(len(lg.upstream))))
        symbol, l = lg.upstream[j], lg.number
        output = d.tex_names[lg.outputs[j].symbol]
        grouped, values = paths(symbol), sums(symbol)
        readers_ = [self.layers[k - 1] for k in grouped]
        has_local = any(t.local != 1 for terms in grouped.values() for t in terms)
        p = printer(d)
        rows, numbers = [], {}
        for k, terms in grouped.items():
            for t in terms:
                numbers[t.upstream] = self.printed(t.upstream)
                upstream = f"{slashed(d.tex_names[t.upstream])} = {self.show(t.upstream)}"
                cells = [(str(k),), (Math(d.tex_names[t.z]),), (Math(upstream),)]
                if has_local:
                    local = self.ex.value(t.local)
                    numbers[t.local] = self.fv.rounded(local)
                    cells.append((Math(self.fv(local)),))
                if t.factor != 1:
                    numbers[t.factor] = self.printed(t.factor)
                factor = "1" if t.factor == 1 else f"{p.doprint(t.factor)} = {self.show(t.factor)}"
                cells.append((Math(factor),))
                rows.append(tuple(cells))
        header = [("via layer",), ("node",), ("its upstream gradient",)]
        if has_local:
            header.append(("local",))
        header.append((Math(rf"\partial \text{{node}} / \partial {output}"),))
        named = joined([f"{r.number} ({r.layer.title})" for r in readers_])
        question = [
            Paragraph(
                "The output ",
                Math(output),
                f" of layer {l} ({lg.layer.title}) is read by layers ",
                *named,
                ": the network forks there, as at the input of a residual block, which both the "
                "block and its shortcut read. Below, for every node that reads it, the upstream "
                "gradient of that node"
                + (", the local gradient of its activation" if has_local else "")
                + " and its local gradient with respect to ",
                Math(output),
                ". Compute ",
                Math(slashed(d.tex_names[symbol])),
                ": first the part each path sends back, then the whole.",
            ),
            Table(tuple(Column("r" if k != 1 else "l") for k in range(len(header))), tuple(header), tuple(rows)),
        ]
        name = d.tex_names[symbol]
        steps, printed_paths = [], {}
        for k, terms in grouped.items():
            rows_, result = self._terms_from_printed(terms, numbers)
            printed_paths[k] = self.fg.rounded(result)
            steps.append(aligned(via_tex(name, k), rows_))
        total_value = sum(printed_paths.values())
        total = [
            Row(" + ".join(via_tex(name, k) for k in grouped)),
            _eq(" + ".join(f"({fg(v)})" for v in printed_paths.values())),
            _eq(fg(total_value)),
        ]
        answer = [
            Paragraph(
                "Each path sends back its own terms, upstream gradient times local gradient; by "
                "the rule for several dependencies (the article's (20)) the node's upstream "
                "gradient is their sum:"
            ),
            Equation(" \\\\\n".join([*steps, aligned(name, total)])),
        ]
        facts = {
            "layer": l,
            "node": j,
            "readers": list(grouped),
            "paths": {k: float(v) for k, v in values.items()},
            "value": float(ex.values[symbol]),
            "from_printed": total_value,
            "printed": fg(total_value),
            "terms": {k: len(terms) for k, terms in grouped.items()},
        }
        return Exercise("join", "a fork and its join: the sum over the paths", question, answer, facts)

    # ---- 7: routing through an interpolation ---------------------------------------------------

    def routing(self) -> Exercise | None:
        """A layer that mixes its inputs with constant weights of its own (an upsampling): the
        outputs that read one input, with their weights — its routing table read backwards — and
        that input's upstream gradient collected from theirs."""
        candidates = [
            lg for lg in self._layers()
            if lg.layer.position_note() and _routes(lg) and len(self.d.network.consumers(lg.sources[0])) == 1
        ]
        if not candidates:
            return None
        lg = self._choose(candidates)
        d, ex, l = self.d, self.ex, lg.number
        source = lg.sources[0]
        readers: dict[sympy.Symbol, list[tuple[int, sympy.Expr]]] = {}
        for i, node in enumerate(lg.z):
            for w, v in node.terms:
                readers.setdefault(v, []).append((i, w))
        inputs = [v for v in lg.read if len(readers.get(v, [])) > 1]
        j = self._choose(inputs or list(readers))
        symbol = d.graph.layers[source - 1].upstream[lg.read.index(j)] if source else None
        if symbol is None:
            return None  # the network's input: no upstream gradient to collect
        name = d.tex_names[j]
        upstream_rows, total = [], 0.0
        for i, w in readers[j]:
            up = lg.upstream[i]
            total += float(w) * self.printed(up)
            upstream_rows.append(
                ((Math(d.tex_names[lg.z[i].symbol]),), (Math(f"{slashed(d.tex_names[up])} = {self.show(up)}"),))
            )
        question = [
            Paragraph(
                f"Layer {l} ({lg.layer.describe()}) computes each output as a weighted sum of the "
                "inputs around its source point, with weights of its own (its routing table). "
                "(a) Which of its outputs read ",
                Math(name),
                ", and with which weights? (b) Below are the upstream gradients of those outputs: "
                "compute the upstream gradient of ",
                Math(name),
                ".",
            ),
            Table((Column("l"), Column("r")), (("output",), ("its upstream gradient",)), tuple(upstream_rows)),
        ]
        table = tuple(((Math(d.tex_names[lg.z[i].symbol]),), (_fraction(w),)) for i, w in readers[j])
        terms = [rf"{NotationPrinter({}).doprint(w)} \cdot {d.tex_names[lg.upstream[i]]}" for i, w in readers[j]]
        with_numbers = [f"{NotationPrinter({}).doprint(w)} \\cdot ({self.show(lg.upstream[i])})" for i, w in readers[j]]
        answer = [
            Paragraph("(a) Its routing table, read backwards:"),
            Table((Column("l"), Column("r")), (("output",), ("weight",)), table),
            Paragraph(
                "(b) Each output sends back its upstream gradient times the weight it read ",
                Math(name),
                " with, and the input adds them up:",
            ),
            Equation(
                aligned(
                    d.tex_names[symbol],
                    sum_rows(terms) + [_eq(r) if k == 0 else r for k, r in enumerate(sum_rows(with_numbers))]
                    + [_eq(self.fg(total))],
                )
            ),
        ]
        facts = {
            "layer": l,
            "input": lg.read.index(j),
            "readers": [i for i, _ in readers[j]],
            "weights": [float(w) for _, w in readers[j]],
            "value": float(ex.values[symbol]),
            "from_printed": total,
            "printed": self.fg(total),
        }
        return Exercise("routing", "routing through an upsampling", question, answer, facts)


    # ---- 8: batch normalisation over a batch ----------------------------------------------------

    def batchnorm(self) -> Exercise | None:
        """A layer that couples the samples, in train mode over a batch of 2: from a channel's
        values and their upstream gradients, as printed, its mean and variance, its normalised
        values, one input's gradient by the compact form (as the engine derived it), and the
        gradients of the scale and the shift."""
        if not self.coupled:
            return None
        train = self.ex.network.with_mode("train")
        numbers = [l for l in coupling_layers(train) if l in self.allowed]
        if not numbers:
            return None
        b = _Batch(train, numbers[0], self.ex, DETAILS["full"])
        if b.values is None:
            return None  # too large a network, or a channel, to work the batch through
        d, l, M, eps = b.d, b.number, b.count, b.op.eps
        fv, fg = self.fv, self.fg
        stats, hats, outputs = b._channel_nodes()
        inputs = b._channel_inputs()
        upstream = dict(zip([n.symbol for n in b.lg.z], b.lg.upstream))
        gs = [upstream[o.symbol] for o in outputs]
        dx = [b._input_upstream(v) for v in inputs]
        x_p = [fv.rounded(b.values[v]) for v in inputs]
        g_p = [fg.rounded(b.values[g]) for g in gs]
        gamma = b._gamma()
        gamma_p = self.ex.formats.given.rounded(b.values[self._gamma_symbol(b)]) if gamma else 1.0
        alive = [k for k, g in enumerate(g_p) if g != 0] or list(range(M))
        i = self._choose(alive)
        # the key, from the numbers as printed, rounding as it goes
        mu = fv.rounded(sum(x_p) / M)
        var = fv.rounded(sum((x - mu) ** 2 for x in x_p) / M)
        sigma = fv.rounded(float(np.sqrt(var + eps)))
        hat_p = [fv.rounded((x - mu) / sigma) for x in x_p]
        sum_g = fg.rounded(sum(g_p))
        sum_gx = fg.rounded(sum(g * h for g, h in zip(g_p, hat_p)))
        result = gamma_p / (M * sigma) * (M * g_p[i] - sum_g - hat_p[i] * sum_gx)
        form = b.op.compact(d, l, first=1)[0]
        names = {**d.tex_names, form.sigma: rf"\sigma^{{({l})}}_{{1}}"}
        rows = tuple(((str(k // b.places + 1),), (Math(d.tex_names[v]),), (Math(fv(b.values[v])),),
                      (Math(fg(b.values[g])),)) for k, (v, g) in enumerate(zip(inputs, gs)))
        header = (("sample",), ("input",), ("value",), (Math(rf"g = \partial L / \partial a^{{({l})}}"),))
        given = [Math(rf"\epsilon = {epsilon_tex(eps)}")]
        if gamma:
            given.insert(0, Math(f"{gamma[0]} = {self.ex.formats.given(gamma_p)}"))
        question = [
            Paragraph(
                f"Layer {l} ({b.op.describe()}) is in train mode: it normalises each channel with the statistics of "
                f"the whole batch. The batch holds {b.batch} samples; channel 1 of its input holds the {M} values below "
                "(sample after sample), each with the upstream gradient ", Math("g"),
                " of the output it gives. The parameters: ", *joined(given), ".",
            ),
            Table(tuple(Column("r") for _ in header), header, rows),
            Paragraph(
                "(a) The channel's mean ", Math(r"\mu"), " and (biased) variance ", Math(r"\sigma^{2}"),
                f" over the {M} values, and ", Math(r"\sigma = \sqrt{\sigma^{2} + \epsilon}"), ". (b) The normalised "
                "values ", Math(r"\hat{x}_{j} = (x_{j} - \mu) / \sigma"), ". (c) The gradient of ",
                Math(d.tex_names[inputs[i]]), " by the compact form (the sums over the channel's values in the batch)",
            ),
            Equation(form.latex(names)),
            Paragraph("(d) The gradients of the layer's parameters for this batch."),
        ]
        hats_row = r" \quad ".join(f"{fv(h)}" for h in hat_p)
        answer = [
            Paragraph("(a) ", Math(rf"\mu = {fv(mu)}"), ", ", Math(rf"\sigma^{{2}} = {fv(var)}"), " and ",
                      Math(rf"\sigma = {fv(sigma)}"), "."),
            Paragraph("(b) In the order of the table:"),
            Displays((hats_row,)),
            Paragraph("(c) With ", Math(rf"\sum_{{j}} g_{{j}} = {fg(sum_g)}"), " and ",
                      Math(rf"\sum_{{j}} g_{{j}} \hat{{x}}_{{j}} = {fg(sum_gx)}"), ":"),
            Equation(aligned(d.tex_names[dx[i]], [
                Row(rf"\frac{{{self.ex.formats.given(gamma_p)}}}{{{M} \cdot {fv(sigma)}}} \left({M} \cdot "
                    rf"({fg(g_p[i])}) - ({fg(sum_g)}) - ({fv(hat_p[i])}) \cdot ({fg(sum_gx)})\right)"),
                _eq(fg(result)),
            ])),
            Paragraph("(d) The scale's gradient is the second sum, the shift's the first:"),
            Displays((_parameter_sums(d, train, l, fg, sum_g, sum_gx),)),
        ]
        facts = {
            "layer": l,
            "input": i,
            "mu": float(b.values[stats[0].symbol]),
            "var": float(b.values[stats[-1].symbol]),
            "hats": [float(b.values[h.symbol]) for h in hats],
            "value": float(b.values[dx[i]]),
            "from_printed": result,
            "printed": fg(result),
            "sums": (sum_g, sum_gx),
            "batch": (np.array(b.xs), np.array(b.ys)),
        }
        return Exercise("batchnorm", "batch normalisation over a batch", question, answer, facts)

    def _gamma_symbol(self, b: _Batch) -> sympy.Symbol:
        """The scale's first element: the coefficient of the layer's first output."""
        names = b.network.layer_parameters(b.number)
        params = [sympy.flatten(b.d.graph.params[name].tolist())[0] for name in names.values()]
        return next(c for c, _ in b.lg.z[0].terms if c in params)


def _fraction(value: sympy.Expr) -> str:
    """A constant weight as running text writes it: 9/16, 1."""
    number = sympy.Rational(value)
    return str(number.p) if number.q == 1 else f"{number.p}/{number.q}"


def _routes(lg: LayerGraph) -> bool:
    """Whether the layer's outputs mix their inputs with constant weights that differ."""
    weights = {w for node in lg.z if node.kind == "linear" for w, _ in node.terms if not w.is_Symbol}
    return len(weights) > 1 and all(node.kind == "linear" and node.bias is None for node in lg.z)


def _a(title: str) -> str:
    """The title with its article: "a convolution", "an average pooling"."""
    return ("an " if title[0] in "aeiou" else "a ") + title


def _read_names(sources: tuple[int, ...]) -> str:
    """What a layer reads, in words: "the input", "layer 2", "layers 1 and 3"."""
    named = ["the input" if s == 0 else str(s) for s in sources]
    layers = [n for n in named if n != "the input"]
    parts = (["the input"] if "the input" in named else []) + (
        [("the outputs of layer " if len(layers) == 1 else "the outputs of layers ") + " and ".join(layers)]
        if layers
        else []
    )
    return " and ".join(parts)



def _prefer(items: list, good) -> list:
    """The items that are ``good``, or all of them when none is."""
    return [item for item in items if good(item)] or items


def _tensor_formulas(d, l: int) -> list:
    """The weight gradient's formula in the tensor view, with this layer's numbers for its
    settings, and the fact that restates it, as the engine derived them."""
    formulas = d.formulas(l, general=False)
    # the tensor view names a parameter's formulas by its operation's prefix for it
    _, prefix = d.network.parameter_owner[weights_of(d, l).name]
    weight = [
        f for f in formulas if f.kind == prefix or (f.kind == "fact" and f.restates.kind == prefix)
    ]
    blocks: list = [
        Paragraph(
            "In the tensor view, as symbackprop derives it from the layer's forward pass. ",
            *tensor_indices(any(len(d.network.shapes[k]) == 3 for k in (l, *d.network.sources[l - 1]))),
        ),
        Equation(formula_row(weight[0].latex())),
    ]
    for fact in weight[1:]:
        blocks += fact_blocks(fact)
    return blocks


def _eq(row: Row | str) -> Row:
    """A row that starts with "=": the next step of a computation."""
    return Row("= " + (row.tex if isinstance(row, Row) else row))


__all__ = ["KINDS", "Exercise", "ExerciseSet", "exercise_set", "exercises", "render"]
