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
   layer's input with δ, or δ aᵀ for a dense layer).

``exercises(network, seed)`` makes the student's sheet and the key as two documents from
the same exercises; ``render`` writes both in LaTeX and Markdown.

Imports ``network``, ``derive``, ``latex`` (and what they build on), numpy, sympy and the
rest of the document package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np

from ..activations import activation as _activation
from ..engine import _flat
from ..graph import LayerGraph
from ..latex import Row, aligned, partial, printer, sum_rows, term_latex
from ..network import Network
from . import markdown, tex
from .common import (
    arrays,
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

    kind: str  # "forward", "positions", "gradient", "dependencies", "tensor"
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
        givens += arrays(ex.params[name], subscripted(f"{name[0]}^{{({name[1:]})}}"), fmt_v)
    activations = list(
        dict.fromkeys(layer.activation for layer in net.layers if layer.has_activation)
    )
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

    def _first_terms(self, lg: LayerGraph) -> list:
        return self.d.terms(_flat(self.d.graph.params[f"W{lg.number}"])[0])

    def _nodes(self, lg: LayerGraph, count: int = NODES_ASKED) -> list[int]:
        total = len(lg.z)
        return sorted(int(i) for i in self.rng.choice(total, size=min(count, total), replace=False))

    # ---- 1: the forward pass ----------------------------------------------------------------

    def forward(self) -> Exercise | None:
        weighted = [lg for lg in self.layers if f"W{lg.number}" in self.d.graph.params]
        if not weighted:
            return None
        # a layer whose nodes read few enough inputs to be given here (layer 1 reads X, given above)
        lg = self._choose(
            _prefer(weighted, lambda lg: lg.number == 1 or len(lg.z[0].inputs) <= MANY)
        )
        l, d, ex = lg.number, self.d, self.ex
        chosen = self._nodes(lg)
        question: list = [
            Paragraph(
                f"Layer {l} ({lg.layer.title}) computes each node from the outputs of "
                + ("the input" if l == 1 else f"layer {l - 1}")
                + ". Fill in the table."
            )
        ]
        if l > 1:  # the inputs these nodes read, so the exercise stands on its own
            needed = sorted(
                {v for i in chosen for v in lg.z[i].inputs}, key=lambda s: lg.inputs.index(s)
            )
            question += [
                Paragraph(f"The outputs of layer {l - 1} that they read:"),
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
        sliding = [lg for lg in self.layers if lg.layer.shows_position_sets]
        if not sliding:
            return None
        lg = self._choose(
            _prefer(
                sliding,
                lambda lg: (
                    lg.layer.window(lg.input_shape) <= MANY and len(lg.z) <= MANY * len(lg.inputs)
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
        weighted = [lg for lg in self.layers if f"W{lg.number}" in self.d.graph.params]
        if not weighted:
            return None
        # a weight used at few enough positions for its terms to be listed
        lg = self._choose(_prefer(weighted, lambda lg: len(self._first_terms(lg)) <= MANY))
        d, ex, l = self.d, self.ex, lg.number
        weight = self._choose(_flat(d.graph.params[f"W{l}"]))
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
        shared = lg.layer.shows_position_sets
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
        value = ex.gradients[f"W{l}"].reshape(-1)[_flat(d.graph.params[f"W{l}"]).index(weight)]
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
        candidates = [lg for lg in self.layers[:-1] if f"W{lg.number + 1}" in self.d.graph.params]
        if not candidates:
            return None
        lg = self._choose(
            _prefer(candidates, lambda lg: len(self.d.upstream_terms_of(lg.upstream[0])) <= MANY)
        )
        d, l = self.d, lg.number
        following = self.layers[l]
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
                f"layer {l + 1} ({following.layer.title}). On which weights of layer {l + 1} does "
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
                + f" of layer {l + 1}, each through one weight:"
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
        weighted = [lg for lg in self.layers if f"W{lg.number}" in self.d.graph.params]
        simple = [
            lg
            for lg in weighted
            if (lg.layer.correlates() and max(lg.input_shape[1:]) <= 8)
            or not lg.layer.shows_position_sets
        ]
        if not simple:
            return None
        lg = self._choose(simple)
        d, ex, l = self.d, self.ex, lg.number
        deltas = lg.z_upstream or lg.upstream
        delta = np.array([ex.values[s] for s in deltas])
        source = np.array([ex.values[s] for s in lg.inputs])
        gradient = ex.gradients[f"W{l}"]
        letter = "X" if l == 1 else f"A^{{({l - 1})}}"
        delta_tex = rf"\delta^{{({l})}}"
        derived = _tensor_formulas(d, l)
        if lg.layer.shows_position_sets:
            delta_map = delta.reshape(lg.output_shape)[0]
            (ph, pw) = lg.layer.padding
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


def _prefer(items: list, good) -> list:
    """The items that are ``good``, or all of them when none is."""
    return [item for item in items if good(item)] or items


def _tensor_formulas(d, l: int) -> list:
    """The weight gradient's formula in the tensor view, with this layer's numbers for its
    settings, and the fact that restates it, as the engine derived them."""
    formulas = d.formulas(l, general=False)
    weight = [f for f in formulas if f.kind == "W" or (f.kind == "fact" and f.restates.kind == "W")]
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


def _join(items: list[Inline]) -> list[Inline]:
    out: list[Inline] = []
    for k, item in enumerate(items):
        if k:
            out.append(" and " if k == len(items) - 1 else ", ")
        out.append(item)
    return out


__all__ = ["Exercise", "ExerciseSet", "exercise_set", "exercises", "render"]
