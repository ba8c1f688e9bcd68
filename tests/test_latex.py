"""The notation printer, line breaking, escaping and the LaTeX API of a Derivation.

Expected LaTeX is written out: the article's formulas as the handout prints them.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import sympy
from graphs import GRAPHS

import symbackprop as sb
from symbackprop.engine import _flat
from symbackprop.latex import (
    ROW_WIDTH,
    Row,
    aligned,
    break_expr,
    chain_rows,
    closed_form,
    latex_errors,
    overfull_boxes,
    pack,
    partial,
    printer,
    term_latex,
    tex_width,
)


@pytest.fixture(scope="module")
def article() -> sb.Derivation:
    return sb.presets.article().derive()


def weight(d: sb.Derivation, name: str, *index: int) -> sympy.Symbol:
    return d.symbols.params[name][index]


# ---- the article's formulas, exactly ----------------------------------------------------------


def test_formula_4_the_first_dense_weight(article):
    (term,) = article.terms(weight(article, "W3", 0, 0))
    assert term_latex(term, printer(article)) == (
        r"\frac{\partial L}{\partial a^{(3)}_{1}} \cdot g'\left(z^{(3)}_{1}\right) \cdot a^{(2)}_{1}"
    )


def test_formula_5_connects_neuron_f_and_input_i(article):
    """w^{(3)}_7 = w^{(3)}_{2,3}: neuron 2, input a^{(2)}_3."""
    (term,) = article.terms(weight(article, "W3", 1, 2))
    assert term_latex(term, printer(article)) == (
        r"\frac{\partial L}{\partial a^{(3)}_{2}} \cdot g'\left(z^{(3)}_{2}\right) \cdot a^{(2)}_{3}"
    )


def test_formula_11_sums_the_shared_weight_over_its_positions(article):
    w = weight(article, "W2", 0, 0, 0, 0)
    assert aligned(partial(article, w), chain_rows(article, w)) == (
        r"\frac{\partial L}{\partial w^{(2)}_{1}} &= "
        r"\frac{\partial L}{\partial a^{(2)}_{1}} \cdot g'\left(z^{(2)}_{1}\right) \cdot a^{(1)}_{1} + "
        r"\frac{\partial L}{\partial a^{(2)}_{2}} \cdot g'\left(z^{(2)}_{2}\right) \cdot a^{(1)}_{2} \\" "\n"
        r"&\quad {}+ \frac{\partial L}{\partial a^{(2)}_{3}} \cdot g'\left(z^{(2)}_{3}\right) \cdot a^{(1)}_{4} + "
        r"\frac{\partial L}{\partial a^{(2)}_{4}} \cdot g'\left(z^{(2)}_{4}\right) \cdot a^{(1)}_{5}"
    )


def test_formula_16_uses_the_position_sets_of_layer_1(article):
    """∂L/∂w^{(1)}_4: x_{p^{(1)}_j[4]} for j = 1..9 is x_6, x_7, x_8, x_10, ..., x_16."""
    rows = chain_rows(article, weight(article, "W1", 0, 0, 1, 1))
    text = " ".join(r.tex for r in rows)
    inputs = [int(n) for n in re.findall(r"\\cdot x_\{(\d+)\}", text)]
    assert inputs == [6, 7, 8, 10, 11, 12, 14, 15, 16]
    assert len(rows) == 3 and all(tex_width(r.tex) <= ROW_WIDTH for r in rows)


def test_formula_12_upstream_of_a_through_the_dense_layer(article):
    upstream = article.graph.layers[1].upstream[0]
    pieces = [term_latex(t, printer(article)) for t in article.upstream_terms[upstream]]
    assert pieces == [
        r"\frac{\partial L}{\partial a^{(3)}_{1}} \cdot g'\left(z^{(3)}_{1}\right) \cdot w^{(3)}_{1}",
        r"\frac{\partial L}{\partial a^{(3)}_{2}} \cdot g'\left(z^{(3)}_{2}\right) \cdot w^{(3)}_{5}",
    ]


def test_concrete_activations_print_their_own_derivative():
    net = sb.Network((1, 2, 2), [sb.Conv2D(kernel_size=2, activation="sigmoid")], loss="sse")
    d = net.derive()
    (term,) = d.terms(weight(d, "W1", 0, 0, 0, 0))
    assert term_latex(term, printer(d)) == (
        r"\frac{\partial L}{\partial a^{(1)}_{1}} \cdot a^{(1)}_{1} \left(1 - a^{(1)}_{1}\right) \cdot x_{1}"
    )


def test_identity_and_bias_leave_out_the_factor_one():
    net = sb.Network((1, 1, 2), [sb.Dense(units=1, bias=True)], loss="sse")
    d = net.derive()
    (term,) = d.terms(d.symbols.params["b1"][0])
    assert term_latex(term, printer(d)) == r"\frac{\partial L}{\partial a^{(1)}_{1}}"


def test_several_channels_use_indexed_names():
    net = sb.Network((2, 3, 3), [sb.Conv2D(out_channels=2, kernel_size=2)], loss="sse")
    d = net.derive()
    assert d.tex_names[weight(d, "W1", 1, 0, 1, 0)] == "w^{(1)}_{2,1,2,1}"


# ---- closed forms --------------------------------------------------------------------------------


def test_a_small_closed_form_is_printed():
    net = sb.Network((1, 2, 2), [sb.Conv2D(kernel_size=2)], loss="sse")
    d = net.derive()
    closed = closed_form(d, weight(d, "W1", 0, 0, 1, 0))
    assert closed.rows == [Row(
        r"x_{3} \left(w^{(1)}_{1} x_{1} + w^{(1)}_{2} x_{2} + w^{(1)}_{3} x_{3} + w^{(1)}_{4} x_{4} - y_{1}\right)"
    )]


def test_a_large_closed_form_gives_only_its_size(article):
    closed = closed_form(article, weight(article, "W1", 0, 0, 0, 0))
    assert closed.rows is None and closed.simplified is None
    assert closed.size == sb.engine.expression_size(article.gradient("W1")[0, 0, 0, 0])


def test_long_expressions_break_into_rows_that_fit(article):
    expr = article.gradient("W3")[0, 0]
    rows = break_expr(expr, printer(article))
    assert len(rows) > 10
    assert all(tex_width(r.tex) <= ROW_WIDTH for r in rows)
    # Nothing lost: the rows hold every symbol of the one-line print, in order.
    one_line = printer(article).doprint(expr)
    joined = " ".join(r.tex for r in rows)
    for name in ("x_{16}", "w^{(3)}_{4}", r"\frac{\partial L}{\partial a^{(3)}_{1}}"):
        assert joined.count(name) == one_line.count(name) > 0
    # Broken brackets are balanced across the rows.
    assert joined.count(r"\Bigl(") == joined.count(r"\Bigr)") > 0


def test_pack_evens_out_its_rows():
    assert pack(["a", "+ b", "+ c", "+ d"], width=5.5) == [Row("a + b"), Row("{}+ c + d")]


def test_tex_width_measures_what_is_seen():
    assert tex_width(r"\frac{\partial L}{\partial a^{(3)}_{1}}") == pytest.approx(2.4, abs=0.3)
    assert tex_width("x_{1} + x_{2}") < tex_width("x_{1} + x_{2} + x_{3}")
    assert tex_width(r"\left(x\right)") == pytest.approx(tex_width("(x)"), abs=0.2)


# ---- the Derivation's LaTeX API ------------------------------------------------------------------


def test_latex_of_one_element_and_of_a_parameter(article):
    element = article.latex("W3_0_0")
    assert element.startswith("\\begin{aligned}\n" r"\frac{\partial L}{\partial w^{(3)}_{1}} &= ")
    assert element.endswith("\\end{aligned}")
    assert "Subs" not in element and "g'" in element and "x_{11}" in element
    whole = article.latex("W3")
    assert whole.count("&= ") == 8 and element.split("\n")[1] in whole


def test_latex_simplified_and_unknown_names():
    net = sb.Network((1, 1, 2), [sb.Dense(units=1)], loss="mse")
    d = net.derive()
    assert d.latex("W1", simplify=True) == (
        "\\begin{aligned}\n"
        r"\frac{\partial L}{\partial w^{(1)}_{1}} &= 2 x_{1} \left(w^{(1)}_{1} x_{1} + w^{(1)}_{2} x_{2} - y_{1}\right) \\" "\n"
        r"\frac{\partial L}{\partial w^{(1)}_{2}} &= 2 x_{2} \left(w^{(1)}_{1} x_{1} + w^{(1)}_{2} x_{2} - y_{1}\right)" "\n"
        "\\end{aligned}"
    )
    with pytest.raises(KeyError, match="W7"):
        d.latex("W7")


def test_latex_derivation_and_jupyter_display(article):
    derivation = article.latex_derivation("W2_0_0_0_0")
    assert derivation.startswith("\\begin{aligned}\n" r"\frac{\partial L}{\partial w^{(2)}_{1}} &= ")
    assert r"\cdot a^{(1)}_{5}" in derivation
    everything = article.latex_derivation()
    assert everything.count(r"\frac{\partial L}{\partial w^{(") == 16
    shown = article._repr_latex_()
    assert shown.startswith("$$\\begin{aligned}") and shown.endswith("\\end{aligned}$$")
    assert "4 more" in shown  # 16 weights, 12 shown


# ---- logs -------------------------------------------------------


def test_latex_errors_keep_only_the_relevant_lines():
    log = "\n".join(["(./handout.tex"] + ["noise"] * 500 + [
        "./handout.tex:42: Undefined control sequence.",
        r"l.42 \frobnicate", "", "! Emergency stop.", "l.42 \\frobnicate",
    ])
    assert latex_errors(log) == "./handout.tex:42: Undefined control sequence.\n" r"l.42 \frobnicate"


def test_overfull_boxes():
    log = "Overfull \\hbox (12.5pt too wide) in paragraph at lines 3--4\nOverfull \\hbox (0.3pt too wide) detected at line 9\n"
    assert overfull_boxes(log) == [(12.5, "in paragraph at lines 3--4"), (0.3, "detected at line 9")]


# ---- networks that are graphs: a node several layers read (the article's rule (20)) -------------


@pytest.fixture(scope="module", params=list(GRAPHS))
def graph(request) -> sb.Derivation:
    return GRAPHS[request.param]().derive()


def test_an_input_read_by_two_layers_sums_their_terms_reader_by_reader():
    d = GRAPHS["a residual MLP"]().derive()  # x feeds the dense layer 1 and the addition 2
    first = d.latex_derivation("x").split(" \\\\[1ex]\n")[0]
    assert first == (
        "\\begin{aligned}\n"
        r"\frac{\partial L}{\partial x_{1}} &= "
        r"\frac{\partial L}{\partial a^{(1)}_{1}} \cdot \left(1 - \left(a^{(1)}_{1}\right)^{2}\right) \cdot w^{(1)}_{1}"
        r" + \frac{\partial L}{\partial a^{(1)}_{2}} \cdot \left(1 - \left(a^{(1)}_{2}\right)^{2}\right) \cdot w^{(1)}_{5} \\" "\n"
        r"&\quad {}+ \frac{\partial L}{\partial a^{(1)}_{3}} \cdot \left(1 - \left(a^{(1)}_{3}\right)^{2}\right) \cdot w^{(1)}_{9} \\" "\n"
        r"&\quad {}+ \frac{\partial L}{\partial a^{(1)}_{4}} \cdot \left(1 - \left(a^{(1)}_{4}\right)^{2}\right) \cdot w^{(1)}_{13}"
        r"\qquad \text{(layer 1)} \\" "\n"
        r"&\quad {}+ \frac{\partial L}{\partial a^{(2)}_{1}}\qquad \text{(layer 2)}"
    )


def test_a_weight_of_a_layer_read_by_two_layers_shows_the_terms_of_both():
    d = GRAPHS["residual, projection shortcut"]().derive()  # layer 1 feeds the convolutions 2 and 3
    derivation = d.latex_derivation("W1_0_0_0_0")
    chain, upstreams = derivation.split("\\\\[1ex]\n&\\text{by rule (20), as layers 2 and 3 read } a^{(1)}\\text{:} \\\\[1ex]\n")
    assert chain.startswith("\\begin{aligned}\n" r"\frac{\partial L}{\partial w^{(1)}_{1,1,1,1}} &= ")
    assert chain.count(r"\frac{\partial L}{\partial a^{(1)}_{") == 16  # its 16 positions
    blocks = upstreams.removesuffix("\n\\end{aligned}").split(" \\\\[1ex]\n")
    assert len(blocks) == 16  # ∂L/∂a^{(1)}_1 … ∂L/∂a^{(1)}_16, each once
    assert blocks[0] == (
        r"\frac{\partial L}{\partial a^{(1)}_{1}} &= "
        r"\frac{\partial L}{\partial a^{(2)}_{1}} \cdot a^{(2)}_{1} \left(1 - a^{(2)}_{1}\right) \cdot w^{(2)}_{1,1,1,1} \\" "\n"
        r"&\quad {}+ \frac{\partial L}{\partial a^{(2)}_{5}} \cdot a^{(2)}_{5} \left(1 - a^{(2)}_{5}\right) \cdot w^{(2)}_{2,1,1,1}"
        r"\qquad \text{(layer 2)} \\" "\n"
        r"&\quad {}+ \frac{\partial L}{\partial a^{(3)}_{1}} \cdot w^{(3)}_{1,1,1,1}"
        r" + \frac{\partial L}{\partial a^{(3)}_{5}} \cdot w^{(3)}_{2,1,1,1}\qquad \text{(layer 3)}"
    )
    # a^{(1)}_2 is not under layer 3's 1x1 kernel of stride 2: layer 2 alone sends it anything
    assert r"\text{(layer 2)}" in blocks[1] and r"\text{(layer 3)}" not in blocks[1]


def test_every_forked_upstream_shows_each_reader_that_reads_it(graph):
    d = graph
    for parameter in d.symbols.params:
        number, _ = d.network.parameter_owner[parameter]
        readers = d.network.consumers(number)
        derivation = d.latex_derivation(parameter)
        if len(readers) < 2:
            assert "rule (20)" not in derivation
            continue
        for i, (symbol, node) in enumerate(zip(d.graph.upstream_of(number), d.graph.outputs_of(number))):
            start = derivation.find(d.tex_names[symbol] + " &= ")
            if start < 0:
                continue  # not used by this parameter's chain forms
            block = derivation[start:].split(" \\\\[1ex]\n")[0]
            for reader in readers:
                terms = d.backward(reader).input_terms.get(node, [])
                assert (rf"\text{{(layer {reader})}}" in block) == bool(terms), (parameter, i, reader)
                # each of the reader's terms, with the reader's own ∂L/∂a^{(r)}
                assert block.count(rf"\partial a^{{({reader})}}_") == len(terms)


def test_the_jupyter_display_of_a_graph_sums_over_readers(graph):
    shown = graph._repr_latex_()
    assert shown.startswith("$$\\begin{aligned}") and shown.endswith("\\end{aligned}$$")
    first, _ = graph.network.parameter_owner[next(iter(graph.symbols.params))]
    assert ("rule (20)" in shown) == (len(graph.network.consumers(first)) > 1)


@pytest.mark.slow
def test_graph_derivations_typeset_with_pdflatex(tmp_path):
    lines = [r"\documentclass{article}", r"\usepackage{amsmath,amssymb}", r"\allowdisplaybreaks", r"\begin{document}"]
    for make in GRAPHS.values():
        d = make().derive()
        lines += [rf"\[ {d.latex_derivation()} \]", rf"\[ {d.latex_derivation('x')} \]", d._repr_latex_()]
        lines += [rf"\[ {d.latex(name, max_size=2000)} \]" for name in d.symbols.params
                  if d.closed_size_estimate(d.chain_of(_flat(d.symbols.params[name])[0])) < 200]
    lines.append(r"\end{document}")
    (tmp_path / "graphs.tex").write_text("\n".join(lines), encoding="utf-8")
    command = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "graphs.tex"]
    run = subprocess.run(command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, latex_errors(run.stdout)
