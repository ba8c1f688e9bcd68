"""The handout's first section: its notation, the network layer by layer (what each layer
reads, where the network forks and joins), its activations and loss, and the article's
formula (1) for every layer that slides a window.

Which rows the notation table has follows from what the layers' operations say about
themselves (``Op.position_note``, ``Op.output_note``, their declared parameters): nothing
here asks which operation a layer is.

Imports ``activations``, ``ops`` (and what they build on) and the document's ``common``,
``context`` and ``nodes``.
"""

from __future__ import annotations

from ..activations import activation as _activation
from .common import layer_table, listed, loss_formula, shape_tex, source_letter, text
from .context import Context
from .nodes import Code, Column, Equation, Inline, Math, Paragraph, Section, Table


def notation_section(c: Context) -> Section:
    """Section 1: the symbols, the network's table, its activations and loss, formula (1)."""
    net, layers = c.network, c.layers
    vector = len(net.input_shape) == 1
    sliding = [lg for lg in layers if lg.layer.position_note()]
    all_formulas = [f for lg in layers for f in c.d.formulas(lg.number, general=False)]
    hats = any(f.spreads for f in all_formulas if f.kind == "fact")
    relations_of = [lg.layer.adjoint(lg.input_shape) is not None for lg in layers]
    own_letters = declared_letters(c)
    weighted = [lg for lg in layers if c.parameters(lg.number)]
    flat = all(lg.layer.flat_weights(lg.input_shape) for lg in weighted)
    channels = ", channel after channel" if not vector and net.input_shape[0] > 1 else ""
    rows: list[tuple[str, tuple[Inline, ...]]] = [
        (
            listed("x", len(c.d.graph.x)),
            ("input features",) if vector else (f"input pixels, numbered row by row{channels}",),
        ),
        (listed("y", len(c.d.graph.y)), ("targets, one per output",)),
    ]
    if sliding:
        rows.append(
            (
                r"W^{(l)},\ w^{(l)}_{n}",
                text(
                    "weights of layer $l$ (a kernel, or a neuron's weights) and its $n$-th weight, "
                    "numbered row by row"
                ),
            )
        )
    elif weighted:
        rows.append(
            (
                r"W^{(l)},\ w^{(l)}_{f,i}",
                text(
                    "weights of layer $l$: $w^{(l)}_{f,i}$ connects input $i$ to neuron $f$ (numbered "
                    "$w^{(l)}_{n}$ neuron after neuron)"
                ),
            )
        )
    if not flat:
        rows.append(
            (
                r"w^{(l)}_{o,c,m,n}",
                text(
                    "weight of a kernel with several channels: output channel $o$, input channel $c$, "
                    "row $m$, column $n$"
                ),
            )
        )
    if any(p.bias for lg in weighted for p in c.parameters(lg.number)):
        rows.append((r"b^{(l)}_{o}", text("bias of output channel (or neuron) $o$ of layer $l$")))
    activated = [lg for lg in layers if lg.activated]
    if not sliding:
        rows.append((r"z^{(l)}_{i}", text("weighted sum of neuron $i$ of layer $l$")))
    else:
        dense = any(not lg.layer.position_note() for lg in activated)
        where = "position (or neuron)" if dense else "position"
        rows.append(
            (r"z^{(l)}_{i}", text(f"weighted sum at {where} $i$ of layer $l$, numbered row by row"))
        )
    rows.append((r"a^{(l)}_{i} = g\left(z^{(l)}_{i}\right)", text("activation of $z^{(l)}_{i}$")))
    plain = list(
        dict.fromkeys(
            (lg.layer.output_note(), lg.layer.title) for lg in layers if not lg.activated
        )
    )
    if plain:
        said = "; ".join(f"{note} ({title})" for note, title in plain)
        rows.append((r"a^{(l)}_{i}", text(f"output $i$ of a layer $l$ without $g$: {said}")))
    if sliding:
        rows.append(
            (
                r"p^{(l)}_{i}",
                text(
                    "position set: the inputs the kernel (or window) covered to form output $i$ of layer "
                    "$l$, in the order of its places; $p^{(l)}_{i}[n]$ is the one weight $n$ multiplied"
                ),
            )
        )
    rows += [
        (r"g,\ g'", ("activation function and its derivative",)),
        ("L", ("loss, a function of the last activations and the targets",)),
        (r"\partial L / \partial a^{(l)}_{i}", text("upstream gradient of $a^{(l)}_{i}$")),
    ]
    if not c.chain:
        rows.append(
            (
                r"\left.\partial L / \partial a^{(l)}_{i}\right\vert_{\text{via }k}",
                text(
                    "the part of it that comes back through layer $k$, one of the layers reading "
                    "$a^{(l)}$"
                ),
            )
        )
    if sliding:
        padded = any(layer.pads() for layer in net.layers)  # formula (1) writes P only then
        rows.append(
            (r"M_x \times N_x,\ M_w \times N_w,\ S" + (r",\ P" if padded else ""), text(
                r"an input's height $\times$ width, a kernel's (or window's), the stride"
                + (" and the padding" if padded else "") + " in formula (1); $M_z \\times N_z$ the output's"
            ))
        )
    rows += [
        (
            r"\delta^{(l)}",
            text(r"$\partial L / \partial z^{(l)}$, the gradient at the weighted sums of layer $l$ (the tensor view)"),
        ),
        (
            (r"o, c;\ i, j;\ m, n", text(
                "the tensor view's indices: output and input channel; an output's row and column; "
                "a kernel place's row and column. They count from 0: entry $(c, i, j)$ of an "
                r"$M \times N$ map is node $(c M + i) N + j + 1$"
            ))
            if sliding
            else (r"f,\ i", text(
                "the tensor view's indices: a neuron and an input. They count from 0: entry $i$ is "
                "node $i + 1$"
            ))
        ),
    ]
    if any(x.name in "uv" for f in all_formulas for x, _ in f.letters):
        rows.append((r"u, v", text(
            "the tensor view's row and column of a map the other letters do not index: an input where its "
            "gradient is written, or the output of a layer that spreads its input (a transposed "
            "convolution, an upsampling)"
        )))
    if any(relations_of):
        rows.append((r"\tilde{x},\ \tilde{z},\ \tilde{\delta},\ \tilde{W}", text(
            "input, output, gradient and kernel of the convolution a transposed convolution transposes"
        )))
    rows += own_letters
    if hats:
        rows.append(
            (
                r"\hat{\delta}^{(l)},\ \hat{W}^{(l)}",
                text(
                    r"$\delta^{(l)}$ spread out by the stride and the kernel by the dilation (zeros put "
                    r"between entries); at stride and dilation 1, $\hat{\delta} = \delta$ and $\hat{W} = W$"
                ),
            )
        )
    notation = Table(
        (Column("l", 4.3), Column("l", 10.6)),
        (("Symbol",), ("Meaning",)),
        tuple(((Math(symbol),), meaning) for symbol, meaning in rows),
    )
    body = [
        notation,
        Paragraph(
            "The network, layer by layer; shapes are ",
            *(
                ("features",)
                if vector
                else ("channels ", Math(r"\times"), " height ", Math(r"\times"), " width")
            ),
            ":" if c.chain else " (a layer reads the outputs of the layers its Reads column names):",
        ),
        layer_table(layers),
    ]
    if not c.chain:
        body.append(_forks_and_joins(c))
    activations = list(
        dict.fromkeys(
            _activation(layer.activation).formula for layer in net.layers if layer.activation
        )
    )
    said: list[Inline] = ["Activation: " if len(activations) == 1 else "Activations: "]
    for k, formula in enumerate(activations):
        said += [Math(formula), "." if k == len(activations) - 1 else "; "]
    if net.loss_function.generic:
        said += [" Loss: ", Math("L(a, y)"), ", left generic as in the article."]
    elif net.loss_function.grouped and len(net.shapes[-1]) == 3:
        said += [" Loss (", Code(net.loss), "), scored per pixel:"]
    else:
        said += [" Loss (", Code(net.loss), "): ", Math(loss_formula(net)), "."]
    body.append(Paragraph(*said))
    if net.loss_function.grouped and len(net.shapes[-1]) == 3:
        body += per_pixel(c)
    body += size_formula(c)
    return Section(("Notation and the network",), tuple(body), label="sec:notation")


def per_pixel(c: Context) -> list:
    """A softmax loss on a map, in symbols and words: a softmax over the C channels of each pixel,
    the pixels' losses summed, and how the flat outputs a_k are numbered."""
    channels, height, width = c.network.shapes[-1]
    l, pixels = len(c.layers), height * width
    a = f"a^{{({l})}}"
    return [
        Equation(
            rf"L = -\sum_{{p=1}}^{{{pixels}}} \sum_{{c=1}}^{{{channels}}} y_{{c,p}} \log "
            rf"\frac{{e^{{{a}_{{c,p}}}}}}{{\sum_{{c'=1}}^{{{channels}}} e^{{{a}_{{c',p}}}}}}"
        ),
        Paragraph(
            f"a softmax over the {channels} channels (classes) of each of the {pixels} pixels, the "
            "pixels' losses added: ",
            Math(f"{a}_{{c,p}}"),
            " is the score of class ",
            Math("c"),
            " at pixel ",
            Math("p"),
            ", the output ",
            Math(f"{a}_{{(c-1) \\cdot {pixels} + p}}"),
            " (channel by channel, each numbered row by row), and ",
            Math("y_{c,p}"),
            " its target (one-hot: the pixel's class).",
        ),
    ]


def _forks_and_joins(c: Context) -> Paragraph:
    """Where the graph forks (an output read by several layers) and joins (a layer reading
    several), in words."""
    said: list[Inline] = [
        "The input ",
        Math("x"),
        " is ",
        Math(shape_tex(c.network.input_shape)),
        ", and the network is a graph, not a chain: ",
    ]
    forks = [l for l in range(len(c.layers)) if len(c.readers(l)) > 1]
    for l in forks:
        readers = c.readers(l)
        said += [
            Math(source_letter(l)),
            " is read by layers " + _and([str(k) for k in readers]),
            " (a fork), so its upstream gradient will be the sum of what each sends back. ",
        ]
    for lg in c.layers:
        if len(lg.sources) > 1:
            letters = [Math(source_letter(s)) for s in lg.sources]
            said += [f"Layer {lg.number} ({lg.layer.title}) joins "]
            for k, letter in enumerate(letters):
                said += [letter, _separator(k, len(letters))]
            said += [". "]
    said[-1] = said[-1].rstrip()
    return Paragraph(*said)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _separator(k: int, count: int) -> str:
    return "" if k == count - 1 else (" and " if k == count - 2 else ", ")


def declared_letters(c: Context) -> list[tuple[str, tuple[Inline, ...]]]:
    """Rows for the parameters and buffers that operations declare with letters of their own
    (batch normalisation's γ, β and running statistics), per channel, by their roles; and, with
    buffers, the small constant ε their formulas add."""
    rows, seen = [], set()
    for lg in c.layers:
        op = lg.layer
        shapes = {**op.parameter_shapes(lg.input_shape), **op.buffer_shapes(lg.input_shape)}
        for p in (*op.parameters, *op.buffers):
            if p.prefix not in shapes or not p.tex.startswith("\\") or p.tex in seen:
                continue
            seen.add(p.tex)
            rows.append((rf"{p.tex}^{{(l)}}_{{c}}", (f"{p.role} of channel (or feature) ", Math("c"), " of layer ",
                                                     Math("l"))))
        if op.buffer_shapes(lg.input_shape) and "epsilon" not in seen:
            seen.add("epsilon")
            rows.append((r"\epsilon", ("a small constant added to a variance, so that its square root is never 0",)))
    if c.coupled:
        rows.append((r"\mu,\ \sigma^{2},\ \hat{x};\ x^{[n]}", text(
            "in the last section: a channel's mean and variance over the batch, an input normalised by them; "
            "sample $n$ of the batch (every node of it carries $[n]$)"
        )))
    return rows


def size_formula(c: Context) -> list:
    """Formula (1), in general (with P when some layer pads) and for each sliding layer."""
    padded = any(layer.pads() for layer in c.network.layers)
    rows = []
    for lg in c.layers:
        sides = lg.layer.size_formula(lg.input_shape, padded)
        if sides is not None:
            rows.append(rf"\text{{layer {lg.number}:}} &\quad {sides[0]}, &\quad {sides[1]}")
    if not rows:
        return []
    pm, pn = (" + 2P_M", " + 2P_N") if padded else ("", "")
    general = (
        rf"M_z = \left\lfloor \frac{{M_x{pm} - M_w}}{{S_M}} \right\rfloor + 1, \qquad "
        rf"N_z = \left\lfloor \frac{{N_x{pn} - N_w}}{{S_N}} \right\rfloor + 1"
    )
    padding = ("padded with ", Math("P"), " zeros on each side ") if padded else ()
    return [
        Paragraph(
            "A kernel or window of ",
            Math(r"M_w \times N_w"),
            " sliding with stride ",
            Math("S"),
            " turns an ",
            Math(r"M_x \times N_x"),
            " input ",
            *padding,
            "into an ",
            Math(r"M_z \times N_z"),
            " map:",
        ),
        Equation(general, "size"),
        Paragraph("For the layers of this network:"),
        Equation(" \\\\\n".join(rows)),
    ]


__all__ = ["notation_section", "size_formula"]
