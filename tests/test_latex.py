"""The notation printer, line breaking, escaping and the LaTeX API of a Derivation.

Expected LaTeX is written out: the article's formulas as the handout prints them.
"""

from __future__ import annotations

import re

import pytest
import sympy

import symbackprop as sb
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
