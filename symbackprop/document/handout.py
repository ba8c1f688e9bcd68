"""The teaching handout, built once as a ``Document`` and rendered to LaTeX and Markdown.

``handout(network, detail, seed)`` retraces the article's derivation on any network — a
chain or a graph — in its notation and, for the article's own network, with its formula
numbers. The sections are written by one module each, from a shared ``context.Context``:

1. ``notation``: the symbols, the network (what each layer reads), formula (1);
2. ``forward``: each layer's forward formula, its nodes, its position sets;
3. ``figures``: the computational graph, its forks and joins drawn;
4. ``backward``: every layer's backward pass — the gradient vector, the upstream gradients
   (the sum over every reader where the network forks, the article's rule (20)), one weight
   worked symbolically, the general formulas, the tensor view;
5. ``worked``: a worked example with numbers;
A, B. ``appendix``: the chain rule, and the weights not derived in full.

Two levels of detail (``DETAILS``): ``full`` writes every node and weight of a small network;
``summary`` gives, per layer, the general formulas, the position sets of a few nodes and
one weight per parameter tensor derived in full, with tables in place of walls of
equations — LeNet-5 in under 30 pages. ``default_detail`` chooses by size. Nothing is
built that is not shown: closed forms only for what is printed (and measured first), no
whole-network expression or program; the worked example's numbers come node by node
from the scalar graph, built one layer at a time.

Imports ``network`` and ``engine`` (and what they build on), numpy and sympy, and the rest of
the document package; ``presets`` late, only to recognise the article's network.
"""

from __future__ import annotations

from math import prod

import sympy

from ..engine import _flat
from ..network import Network
from . import markdown, tex
from .appendix import chain_rule_section, rest_rows, rest_section
from .backward import backward_section
from .batch import batch_section, coupling_layers
from .common import Detail
from .context import Context
from .example import Values, draw_values, worked_example
from .figures import graph_section
from .forward import forward_section
from .nodes import Code, Contents, Document, Emph, Inline, Link, Math, Paragraph, Section
from .notation import notation_section
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
ARTICLE_TITLE = "Backpropagation in Fully Convolutional Networks (FCNs)"
ARTICLE_URL = "https://towardsdatascience.com/backpropagation-in-fully-convolutional-networks-fcns-1a13b75fb56a"
# The article's formula numbers, by the key of the equation that shows each; (7) to (9), which
# the article shows in its figure 9, are the downstream gradient one neuron of layer 3 sends back.
ARTICLE_TAGS = {
    "size": "1",
    "gradient": "2",
    "vector3": "3",
    "example3": "4",
    "general3": "5",
    "vector2": "6",
    "downstream-upstream": "7",
    "downstream-local": "8",
    "downstream": "9",
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
        layer.window(network.input_shape_of(number)) * prod(network.shapes[number])
        for number, layer in enumerate(network.layers, start=1)
    )
    small = network.parameter_count <= FULL_MAX_WEIGHTS and edges <= FULL_MAX_EDGES
    return "full" if small else "summary"


def handout(
    network: Network, detail: str | None = None, seed: int | None = None, values: Values | None = None
) -> Document:
    """The handout of ``network`` as a document; ``detail`` "full" or "summary" (default: by
    size), ``seed`` for the worked example's values (default: see ``worked_example``), or
    ``values`` = (x, y, {parameter: array}) to work it with those numbers instead."""
    detail = default_detail(network) if detail is None else detail
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {', '.join(DETAILS)}, got {detail!r}")
    # A layer that couples the samples (batch normalisation in train mode) cannot be followed
    # one sample at a time: sections 1 to 5 take the network in eval mode, and a section of
    # its own derives train mode over a batch.
    coupled = network.couples_samples
    one_sample = network.with_mode("eval") if coupled else network
    if values is not None and one_sample.buffers:
        x, y, params = values
        drawn = draw_values(one_sample, 0)[2]  # running statistics the user did not give
        values = (x, y, {**{name: drawn[name] for name in one_sample.buffers}, **dict(params)})
    example = worked_example(one_sample, seed, values)
    # The example's network is this one when nothing generic had to be made concrete:
    # then one derivation (and one scalar graph) serves both.
    d = one_sample.derive() if example.choices else example.derivation
    c = Context(one_sample, DETAILS[detail], d, example, is_article(network), coupled=coupled)
    c.detailed = _detailed_elements(c)
    return _document(c, batch_section(network, example, c.detail) if coupled else None)


def render(
    network: Network, detail: str | None = None, seed: int | None = None, values: Values | None = None
) -> dict[str, str]:
    """``{"handout.tex": ..., "handout.md": ...}`` for ``network`` (see ``handout``)."""
    doc = handout(network, detail, seed, values)
    return {"handout.tex": tex.render(doc), "handout.md": markdown.render(doc)}


def is_article(network: Network) -> bool:
    from ..presets import article  # a preset to compare with, not something the document needs

    return network.to_dict() == article().to_dict()


def _document(c: Context, batch: Section | None = None) -> Document:
    subtitle: tuple[Inline, ...] = ("the network ", Code(c.network.name))
    if c.article:
        subtitle += (" of ", Emph(ARTICLE_TITLE))
    sections = [
        notation_section(c),
        forward_section(c),
        graph_section(c.d, c.detail, c.article),
        backward_section(c),
        worked_section(c.example, c.detail),
    ]
    if batch is not None:
        sections.append(batch)
    appendices = [chain_rule_section()]
    rest = rest_rows(c) if c.detail.appendix else []
    if rest:
        appendices.append(rest_section(rest))
    return Document(
        title="Backpropagation, derived symbolically",
        subtitle=subtitle,
        front=(_introduction(c), Contents()),
        sections=tuple(sections),
        appendices=tuple(appendices),
        tags=ARTICLE_TAGS if c.article else {},
    )


def _introduction(c: Context) -> Paragraph:
    article = (Emph(ARTICLE_TITLE), " (Towards Data Science, ", Link(ARTICLE_URL), ")")
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
        if c.detail.name == "summary"
        else ()
    )
    if c.article:
        return Paragraph(
            "This handout retraces the article ",
            *article,
            " on the network of its figure 7 (a ",
            Math(r"4 \times 4"),
            " image, two convolutions with a ",
            Math(r"2 \times 2"),
            " kernel and a dense layer of two neurons, with no biases): in its notation, with its "
            "formula numbers, and then with numbers. ",
            checked,
            *summary,
        )
    coupled = coupling_layers(c.network.with_mode("train"))
    batch = (
        (
            (f" {_layers_word(coupled)} over the batch in train mode, so that "
            + ("its" if len(coupled) == 1 else "their") + " outputs depend on every sample: sections 1 to 5 follow one sample with the network in eval "
            "mode (running statistics constants), and the last section derives train mode over a batch"
            + (f" for layer {coupled[0]}." if len(coupled) > 1 else ".")),
        )
        if c.coupled and coupled
        else ()
    )
    return Paragraph(
        "This handout derives backpropagation for the network ",
        Code(c.network.name),
        " step by step, in the notation of the article ",
        *article,
        ", and then works it through with numbers. ",
        checked,
        *summary,
        *batch,
    )


def _layers_word(numbers: list[int]) -> str:
    """"Layer 2 normalises", "Layers 2 and 6 normalise", "Layers 2, 6 and 10 normalise"."""
    if len(numbers) == 1:
        return f"Layer {numbers[0]} normalises"
    listed = ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"
    return f"Layers {listed} normalise"


def _detailed_elements(c: Context) -> set[sympy.Symbol]:
    """The weights derived in full: in full detail all of a small network, else a spread of a
    few per parameter (the first, the last and evenly between); in a summary the first."""
    arrays_ = [_flat(c.d.graph.params[name]) for name in c.network.parameters]
    if c.detail.derived is not None:
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


__all__ = ["DETAILS", "Detail", "default_detail", "handout", "is_article", "render"]
