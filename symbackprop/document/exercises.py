"""Exercise sheets and their answer keys, every answer computed by the engine.

``exercise_set(network, seed)`` draws the numbers (``worked_example``: another seed, other
numbers) and, with the same seed, what to ask about: which nodes, which weight, which
layer. Each exercise holds its question, its answer, and the answer as data
(``Exercise.answer``) for the tests to check against the independent numpy backprop:

1. the forward pass: fill in z and a of a few nodes of a layer;
2. position sets: the set of a few nodes, and which nodes read a given input;
3. the chain rule: the gradient of a named weight from given upstream gradients;
4. dependencies: which weights the upstream gradient of a node is made of;
5. the tensor view: a whole weight gradient at once (the cross-correlation of the
   layer's input with δ, or δ aᵀ for a dense layer);
6. a fork and its join (a network that is a graph): the upstream gradient of an output read
   by several layers — a residual block's input, read by the block and by its shortcut — as
   the sum of what each path sends back (the article's rule (20)).

A chain gets the first five, drawn as they always were: the sixth comes last and draws
nothing for a network without a fork.

``exercises(network, seed)`` makes the student's sheet and the key as two documents from
the same exercises; ``render`` writes both in LaTeX and Markdown.

Imports ``network``, ``derive``, ``latex`` (and what they build on), numpy, sympy and the
rest of the document package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np

from ..activations import activation as _activation
from ..graph import LayerGraph
from ..latex import Row, aligned, partial, printer, sum_rows, term_latex
from ..network import Network
from . import markdown, tex
from .common import (
    arrays,
    capital_letter,
    correlation_padding,
    elide,
    fact_blocks,
    formula_row,
    input_letter,
    labelled_whole,
    layer_table,
    lines,
    node_by_hand,
    position_set_tex,
    position_table,
    subscripted,
    term_parts,
    terms_by_hand,
    whole_matrix,
)
from .context import LayerParameter, forks, parameter_tex, paths_of, via_tex, weights_of
from .example import WorkedExample, worked_example
from .nodes import (
    Code,
    Column,
    Displays,
    Document,
    Equation,
    Inline,
    Math,
    Paragraph,
    Section,
    Table,
)

BLANK = r"\underline{\hspace{4em}}"  # where the student writes
NODES_ASKED = 3  # nodes in the forward and position-set questions
TERMS = (24, 16, 4)  # a sum longer than 24 terms is shown as its first 16 and last 4
MANY = 16  # inputs, terms or readers a question may list; layers with fewer are preferred
BLOCK = (4, 6)  # at most this block of a dense layer's weight gradient is asked for


@dataclass
class Exercise:
    """One exercise: its title, the question and the answer as blocks, and the answer as data."""

    kind: str  # "forward", "positions", "gradient", "dependencies", "tensor", "join"
    title: str
    question: list
    answer: list
    facts: dict[str, Any] = field(default_factory=dict)
    blanks: list = field(default_factory=list)  # what only the sheet shows: where to write


@dataclass
class ExerciseSet:
    network: Network  # the concrete network the numbers are for
    seed: int
    example: WorkedExample
    exercises: list[Exercise]


def exercise_set(network: Network, seed: int = 0) -> ExerciseSet:
    """The exercises for ``network`` with seed ``seed`` (numbers and choices)."""
    example = worked_example(network, seed)
    rng = np.random.default_rng(seed)
    maker = _Maker(example, rng)
    made = [
        maker.forward(),
        maker.positions(),
        maker.gradient(),
        maker.dependencies(),
        maker.tensor(),
        maker.join(),  # last: the numbers drawn for the others stay those of a chain's sheet
    ]
    return ExerciseSet(example.network, seed, example, [e for e in made if e is not None])


def exercises(network: Network, seed: int = 0) -> tuple[Document, Document]:
    """The student's sheet and the answer key."""
    chosen = exercise_set(network, seed)
    return _document(chosen, solutions=False), _document(chosen, solutions=True)


def render(network: Network, seed: int = 0) -> dict[str, str]:
    """``exercises.tex``, ``exercises.md``, ``solutions.tex`` and ``solutions.md``."""
    sheet, key = exercises(network, seed)
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
    fmt_v = ex.formats.value
    givens = arrays(ex.x, subscripted("X"), fmt_v)
    givens += arrays(ex.y, lambda _: "y", fmt_v)
    for name in net.parameters:
        givens += arrays(ex.params[name], subscripted(parameter_tex(net, name)), fmt_v)
    activations = list(dict.fromkeys(layer.activation for layer in net.layers if layer.activation))
    said: list[Inline] = ["Activations: " if len(activations) > 1 else "Activation: "]
    for k, name in enumerate(activations):
        said += [Math(_activation(name).formula), "; " if k < len(activations) - 1 else ". "]
    said += ["Loss: ", Math(net.loss_function.formula), "."]
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
            " the position sets, nodes numbered from 1 row by row. "
            + (
                "Every answer below was computed by symbackprop and checked against an independent "
                "numeric backpropagation."
                if solutions
                else "Work with the numbers given; round to four significant digits."
            ),
        ),
        layer_table(list(d.graph.layers)),
        Paragraph(*said),
        Paragraph(
            f"The numbers (seed {chosen.seed}"
            + (
                f", draw {ex.draw + 1}, the first to leave at most half of the ReLUs dead"
                if ex.draw
                else ""
            )
            + "):"
        ),
        Displays(tuple(lines(givens))),
    ]
    sections = []
    for k, exercise in enumerate(chosen.exercises, start=1):
        body = list(exercise.question)
        body += [Paragraph("", lead="Answer."), *exercise.answer] if solutions else exercise.blanks
        sections.append(Section((f"Exercise {k}: {exercise.title}",), tuple(body), numbered=False))
    kind = "Solutions" if solutions else "Exercises"
    return Document(
        title=f"{kind}: backpropagation, step by step",
        subtitle=("the network ", Code(net.name), f", seed {chosen.seed}"),
        front=tuple(front),
        sections=tuple(sections),
    )


class _Maker:
    """Makes each exercise from the example's numbers, choosing with ``rng``."""

    def __init__(self, example: WorkedExample, rng: np.random.Generator) -> None:
        self.ex = example
        self.d = example.derivation
        self.rng = rng
        self.layers: list[LayerGraph] = list(self.d.graph.layers)
        self.fv, self.fg = example.formats.value, example.formats.gradient

    def _choose(self, items: list):
        return items[int(self.rng.integers(len(items)))]

    def _weights(self, lg: LayerGraph) -> LayerParameter | None:
        return weights_of(self.d, lg.number)

    def _weighted(self) -> list[LayerGraph]:
        return [lg for lg in self.layers if self._weights(lg) is not None]

    def _first_terms(self, lg: LayerGraph) -> list:
        return self.d.terms(self._weights(lg).elements[0])

    def _nodes(self, lg: LayerGraph, count: int = NODES_ASKED) -> list[int]:
        total = len(lg.z)
        return sorted(int(i) for i in self.rng.choice(total, size=min(count, total), replace=False))

    # ---- 1: the forward pass ----------------------------------------------------------------

    def forward(self) -> Exercise | None:
        weighted = self._weighted()
        if not weighted:
            return None
        # a layer whose nodes read few enough inputs to be given here (X is given above)
        lg = self._choose(
            _prefer(weighted, lambda lg: lg.sources == (0,) or len(lg.z[0].inputs) <= MANY)
        )
        l, d, ex = lg.number, self.d, self.ex
        chosen = self._nodes(lg)
        reads = _read_names(lg.sources)
        question: list = [
            Paragraph(
                f"Layer {l} ({lg.layer.title}) computes each node from the outputs of {reads}. "
                "Fill in the table."
            )
        ]
        if lg.sources != (0,):  # the inputs these nodes read, so the exercise stands on its own
            order = {s: k for k, s in enumerate(lg.read)}
            needed = sorted({v for i in chosen for v in lg.z[i].inputs}, key=order.__getitem__)
            question += [
                Paragraph(f"The outputs of {reads} that they read:"),
                _value_lines([(d.tex_names[s], self.fv(ex.values[s])) for s in needed]),
            ]
        has_a = lg.activated
        header = [(Math("i"),), (Math(f"z^{{({l})}}_{{i}}"),)] + (
            [(Math(f"a^{{({l})}}_{{i}}"),)] if has_a else []
        )
        blanks, filled = [], []
        for i in chosen:
            node = lg.z[i]
            blanks.append(((str(i + 1),), (Math(BLANK),)) + (((Math(BLANK),),) if has_a else ()))
            values = [(Math(self.fv(ex.values[node.symbol])),)]
            if has_a:
                values.append((Math(self.fv(ex.values[lg.a[i].symbol])),))
            filled.append(((str(i + 1),), *values))
        spec = tuple(Column("r") for _ in header)
        answer: list = [Table(spec, tuple(header), tuple(filled))]
        for i in chosen:
            node = lg.z[i]
            rows = node_by_hand(d, node, ex.value, self.fv, TERMS)
            answer.append(Equation(aligned(d.tex_names[node.symbol], rows)))
        facts = {
            "layer": l,
            "nodes": chosen,
            "z": [ex.values[lg.z[i].symbol] for i in chosen],
            "a": [ex.values[lg.a[i].symbol] for i in chosen] if has_a else None,
        }
        return Exercise(
            "forward",
            "the forward pass",
            question,
            answer,
            facts,
            blanks=[Table(spec, tuple(header), tuple(blanks))],
        )

    # ---- 2: position sets ---------------------------------------------------------------------

    def positions(self) -> Exercise | None:
        sliding = [lg for lg in self.layers if lg.layer.position_note()]
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
        l = lg.number
        table = position_table(lg)
        chosen = self._nodes(lg, 2)
        readers: dict[int, list[int]] = {}
        for i, entries in enumerate(table):
            for e in entries:
                if e is not None:
                    readers.setdefault(e, []).append(i + 1)
        shared = [j for j, users in readers.items() if len(users) > 1] or list(readers)
        j = self._choose(sorted(shared))
        letter = input_letter(lg)
        question = [
            Paragraph(
                f"Layer {l} is a {lg.layer.title} ({lg.layer.describe()}) on an input of shape ",
                Math(r" \times ".join(map(str, lg.input_shape))),
                ", numbered from 1 row by row"
                + (", channel after channel" if lg.input_shape[0] > 1 else "")
                + ".",
            ),
            Paragraph(
                "(a) Write the position sets ",
                *_join([Math(f"p^{{({l})}}_{{{i + 1}}}") for i in chosen]),
                ", in the order of the kernel's places (a dot where a place lies on the padding).",
            ),
            Paragraph(
                "(b) Which nodes of layer ",
                Math(str(l)),
                " read ",
                Math(f"{letter}_{{{j}}}"),
                "? With which place of the kernel?",
            ),
        ]
        places = {i: table[i - 1].index(j) + 1 for i in readers[j]}
        answer = [
            Paragraph("(a)"),
            Table(
                (Column("l", 15.0),),
                (("Position sets",),),
                tuple(((Math(position_set_tex(l, i + 1, table[i])),),) for i in chosen),
            ),
            Paragraph(
                "(b) ",
                Math(f"{letter}_{{{j}}}"),
                " is read by ",
                *_join(
                    [
                        Math(f"z^{{({l})}}_{{{i}}}" if lg.activated else f"a^{{({l})}}_{{{i}}}")
                        for i in readers[j]
                    ]
                ),
                ", at kernel places ",
                ", ".join(str(places[i]) for i in readers[j]),
                " respectively: its upstream gradient will have one term from each.",
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
        weight = self._choose(weights.elements)
        terms = d.terms(weight)
        index = {n.symbol: k for k, n in enumerate(lg.z)}
        rows = []
        for t in terms:
            k = index[t.z]
            a_symbol = lg.a[k].symbol if lg.activated else lg.z[k].symbol
            rows.append(
                (
                    (str(k + 1),),
                    (Math(self.fg(ex.values[t.upstream])),),
                    (Math(self.fv(ex.values[t.z])),),
                    (Math(self.fv(ex.values[a_symbol])),),
                    (Math(f"{d.tex_names[t.factor]} = {self.fv(ex.value(t.factor))}"),),
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
                Math(partial(d, weight)),
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
        rows = terms_by_hand(d, terms, ex.value, ex.formats, self.fg(value), TERMS)
        answer = [Equation(aligned(partial(d, weight), rows))]
        facts = {
            "layer": l,
            "weight": str(weight),
            "value": float(value),
            "upstream": {str(t.upstream): ex.values[t.upstream] for t in terms},
            "terms": len(terms),
            "parts": [len(term_parts(t)) for t in terms],
        }
        return Exercise(
            "gradient", "a weight's gradient by the chain rule", question, answer, facts
        )

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
            return reader if self._weights(reader) is not None else None

        candidates = [lg for lg in self.layers[:-1] if weighted_reader(lg) is not None]
        if not candidates:
            return None
        lg = self._choose(
            _prefer(candidates, lambda lg: len(self.d.upstream_terms_of(lg.upstream[0])) <= MANY)
        )
        d, l = self.d, lg.number
        following = weighted_reader(lg)
        k = following.number
        j = int(self.rng.integers(len(lg.upstream)))
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
                Math(d.tex_names[symbol]),
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

    # ---- 6: a join: the sum over the paths -----------------------------------------------------

    def join(self) -> Exercise | None:
        """Where the network forks (a residual block's input, read by the block and by its
        shortcut), one output's upstream gradient as the sum of what each reader sends back:
        the article's rule (20), with numbers."""
        found = forks(self.d.network)
        if not found:
            return None
        d, ex = self.d, self.ex
        fv, fg = self.fv, self.fg

        def paths(symbol) -> dict[int, list]:
            return paths_of(d, d.upstream_terms_of(symbol))

        def sums(symbol) -> dict[int, float]:
            return {k: sum(ex.value(t.expr) for t in terms) for k, terms in paths(symbol).items()}

        # a layer whose outputs each get few terms, and a node whose every path brings back
        # something (not a dead ReLU's zero)
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
        readers = [self.layers[k - 1] for k in grouped]
        has_local = any(t.local != 1 for terms in grouped.values() for t in terms)
        p = printer(d)
        rows = []
        for k, terms in grouped.items():
            for t in terms:
                # ∂L/∂a written inline (a fraction would shrink to nothing in a table's row)
                slashed = re.sub(r"^\\frac\{(.*?)\}\{(.*)\}$", r"\1 / \2", d.tex_names[t.upstream])
                upstream = f"{slashed} = {fg(ex.values[t.upstream])}"
                cells = [(str(k),), (Math(d.tex_names[t.z]),), (Math(upstream),)]
                if has_local:
                    cells.append((Math(fv(ex.value(t.local))),))
                factor = "1" if t.factor == 1 else f"{p.doprint(t.factor)} = {fv(ex.value(t.factor))}"
                cells.append((Math(factor),))
                rows.append(tuple(cells))
        header = [("via layer",), ("node",), ("its upstream gradient",)]
        if has_local:
            header.append(("local",))
        header.append((Math(rf"\partial \text{{node}} / \partial {output}"),))
        named = _join([f"{r.number} ({r.layer.title})" for r in readers])
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
                Math(d.tex_names[symbol]),
                ": first the part each path sends back, then the whole.",
            ),
            Table(tuple(Column("r" if k != 1 else "l") for k in range(len(header))), tuple(header), tuple(rows)),
        ]
        name = d.tex_names[symbol]
        steps = [
            aligned(
                via_tex(name, k),
                terms_by_hand(d, terms, ex.value, ex.formats, fg(values[k]), TERMS),
            )
            for k, terms in grouped.items()
        ]
        total = [
            Row(" + ".join(via_tex(name, k) for k in grouped)),
            _eq(" + ".join(f"({fg(v)})" for v in values.values())),
            _eq(fg(ex.values[symbol])),
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
            "terms": {k: len(terms) for k, terms in grouped.items()},
        }
        return Exercise("join", "a fork and its join: the sum over the paths", question, answer, facts)

    # ---- 5: the tensor view -------------------------------------------------------------------

    def tensor(self) -> Exercise | None:
        """A whole weight gradient: the cross-correlation of the input with δ for a convolution
        of stride 1 without dilation (one channel pair), δ aᵀ for a dense layer."""
        simple = [
            lg
            for lg in self._weighted()
            if (lg.layer.correlates() and max(lg.input_shape[1:]) <= 8) or lg.layer.outer_product()
        ]
        if not simple:
            return None
        lg = self._choose(simple)
        d, ex, l = self.d, self.ex, lg.number
        deltas = lg.z_upstream or lg.upstream
        delta = np.array([ex.values[s] for s in deltas])
        source = np.array([ex.values[s] for s in lg.read])
        gradient = ex.gradients[self._weights(lg).name]
        letter = capital_letter(lg.sources[0])
        delta_tex = rf"\delta^{{({l})}}"
        derived = _tensor_formulas(d, l)
        if lg.layer.correlates():
            delta_map = delta.reshape(lg.output_shape)[0]
            (ph, pw) = correlation_padding(lg.input_shape, lg.output_shape, gradient.shape[-2:])
            input_map = np.pad(source.reshape(lg.input_shape)[0], ((ph, ph), (pw, pw)))
            channel = (
                "" if gradient.shape[:2] == (1, 1) else " for output channel 1 and input channel 1"
            )
            padded = r"_{\text{padded}}" if (ph, pw) != (0, 0) else ""
            givens = lines(
                [
                    labelled_whole(letter + padded, input_map, self.fv),
                    labelled_whole(delta_tex, delta_map, self.fg),
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
            answer_matrix = gradient[0, 0]
            kh, kw = answer_matrix.shape
            h, w = delta_map.shape
            products = [
                f"({self.fg(delta_map[i, j])})({self.fv(input_map[i, j])})"
                for i, j in product(range(h), range(w))
            ]
            answer = [
                Paragraph(
                    "Each weight's gradient sums, over every position, ",
                    Math(delta_tex),
                    " there times the "
                    "input the weight met there (formula of the kernel's shared weights); sliding ",
                    Math(delta_tex),
                    " over the input like a kernel does that for every weight at once:",
                ),
                Displays(
                    tuple(
                        lines(
                            [
                                (
                                    rf"\frac{{\partial L}}{{\partial W^{{({l})}}}} = {letter} \star {delta_tex} = "
                                    + whole_matrix(answer_matrix, self.fg)[0],
                                    12.0,
                                )
                            ]
                        )
                    )
                ),
                Paragraph("For instance, its top-left entry:"),
                Equation(
                    aligned(
                        rf"\left({letter} \star {delta_tex}\right)_{{1,1}}",
                        sum_rows(elide(products, *TERMS)) + [_eq(self.fg(answer_matrix[0, 0]))],
                    )
                ),
                *derived,
            ]
            facts = {
                "layer": l,
                "kind": "correlation",
                "gradient": answer_matrix.tolist(),
                "delta": delta_map.tolist(),
                "input": input_map.tolist(),
                "shape": (kh, kw),
            }
        else:
            rows, columns = min(len(delta), BLOCK[0]), min(len(source), BLOCK[1])
            # The columns start at the first input that is not zero (a dead ReLU's or a pool's
            # zeros would make a block of zeros, which teaches nothing).
            nonzero = np.flatnonzero(source)
            start = min(int(nonzero[0]) if len(nonzero) else 0, len(source) - columns)
            block = gradient[:rows, start : start + columns]
            whole = (rows, columns) == gradient.shape
            which = f"{columns} columns" if start == 0 else f"columns {start + 1} to {start + columns}"
            part = "" if whole else f"the first {rows} rows and {which} of "
            delta_name = delta_tex if whole else rf"\left({delta_tex}_{{f}}\right)_{{f \le {rows}}}"
            span = rf"i \le {columns}" if start == 0 else rf"{start} < i \le {start + columns}"
            input_name = (
                input_letter(lg)
                if whole
                else rf"\left({input_letter(lg)}_{{i}}\right)_{{{span}}}"
            )
            givens = lines(
                [
                    labelled_whole(delta_name, delta[:rows].reshape(-1, 1), self.fg),
                    labelled_whole(
                        input_name, source[start : start + columns].reshape(-1, 1), self.fv
                    ),
                ]
            )
            question = [
                Paragraph(
                    "Below are ",
                    Math(delta_tex),
                    ", the vector of ",
                    Math(rf"\partial L / \partial z^{{({l})}}_{{f}}"),
                    f" of the dense layer {l}, and "
                    "its input" + ("" if whole else " (some of their entries)") + f". Compute {part}",
                    Math(rf"\partial L / \partial W^{{({l})}}"),
                    " at once as the outer product ",
                    Math(rf"{delta_tex} \left({input_letter(lg)}\right)^{{\top}}"),
                    ", and say why it is.",
                ),
                Displays(tuple(givens)),
            ]
            shown = whole_matrix(block, self.fg)[0] + ("" if whole else r" \;\ldots")
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
                    " of the outer product:",
                ),
                Displays(
                    tuple(
                        lines([(rf"\frac{{\partial L}}{{\partial W^{{({l})}}}} = " + shown, 12.0)])
                    )
                ),
                *derived,
            ]
            facts = {
                "layer": l,
                "kind": "outer",
                "gradient": block.tolist(),
                "delta": delta[:rows].tolist(),
                "input": source[start : start + columns].tolist(),
                "columns_from": start,
            }
        return Exercise("tensor", "the tensor view", question, answer, facts)


def _read_names(sources: tuple[int, ...]) -> str:
    """What a layer reads, in words: "the input", "layer 2", "layers 1 and 3"."""
    named = ["the input" if s == 0 else str(s) for s in sources]
    layers = [n for n in named if n != "the input"]
    parts = (["the input"] if "the input" in named else []) + (
        [("layer " if len(layers) == 1 else "layers ") + " and ".join(layers)] if layers else []
    )
    return " and ".join(parts)


def _join(items: list[Inline]) -> list[Inline]:
    out: list[Inline] = []
    for k, item in enumerate(items):
        if k:
            out.append(" and " if k == len(items) - 1 else ", ")
        out.append(item)
    return out


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
            "In the tensor view (indices from 0), as symbackprop derives it from the "
            "layer's forward pass:"
        ),
        Equation(formula_row(weight[0].latex())),
    ]
    for fact in weight[1:]:
        blocks += fact_blocks(fact)
    return blocks


def _value_lines(pairs: list[tuple[str, str]], per_line: int = 4) -> Displays:
    """``name = value`` displays, ``per_line`` to a line."""
    cells = [f"{name} = {value}" for name, value in pairs]
    return Displays(
        tuple(r" \qquad ".join(cells[k : k + per_line]) for k in range(0, len(cells), per_line))
    )


def _eq(row: Row | str) -> Row:
    """A row that starts with "=": the next step of a computation."""
    return Row("= " + (row.tex if isinstance(row, Row) else row))


__all__ = ["Exercise", "ExerciseSet", "exercise_set", "exercises", "render"]
