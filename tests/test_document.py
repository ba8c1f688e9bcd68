"""The document model and its two writers: one tree, LaTeX and Markdown saying the same."""

from __future__ import annotations

import jinja2
import pytest
import sympy
from github_markdown import parse

from symbackprop.document import markdown, tex
from symbackprop.document.nodes import (
    Code,
    Column,
    Diagram,
    DiagramEdge,
    DiagramNode,
    Displays,
    Document,
    Emph,
    EqRef,
    Equation,
    Figure,
    Keep,
    Link,
    Math,
    Paragraph,
    Ref,
    Section,
    Table,
    numbering,
)
from symbackprop.document.numbers import GRADIENT_RANGE, NumberFormat
from symbackprop.document.template import Raw, environment, md_escape, tex_escape, wrap

DIAGRAM = Diagram(
    (DiagramNode("a", "a_1", "a₁", 0, 0, "x"), DiagramNode("b", "z", "z", 2, 0, "z")),
    (
        DiagramEdge("a", "b", "kernel1"),
        DiagramEdge("b", "a", tex=r"\partial L", text="∂L", back=True, bend=30),
    ),
    colours=(("kernel1", "1F77B4"),),
)


def small_document(tags: dict[str, str] | None = None) -> Document:
    return Document(
        title="A title",
        subtitle=("the network ", Code("my_net")),
        front=(Paragraph("Before the sections."),),
        sections=(
            Section(
                ("First",),
                (
                    Paragraph(
                        "See ",
                        EqRef("second"),
                        " and section ",
                        Ref("sec:two"),
                        ", and figure ",
                        Ref("fig:one"),
                        ".",
                    ),
                    Equation("a &= b", "first"),
                    Section(("Inner",), (Equation("c &= d", "second"),), level=2),
                ),
                label="sec:one",
            ),
            Section(
                ("Second",),
                (
                    Table(
                        (Column("l"), Column("r")),
                        (("x",), (Math("y"),)),
                        ((("1_a",), (Math("2"),)),),
                    ),
                    Figure(DIAGRAM, ("A drawing.",), "fig:one"),
                    Displays(("x = 1", "y = 2")),
                ),
                label="sec:two",
            ),
        ),
        appendices=(Section(("Extra",), (Paragraph("The ", Emph("end"), "."),), label="app:x"),),
        tags=tags or {},
    )


def test_numbering_counts_sections_figures_and_equations_in_order():
    numbers = numbering(small_document())
    assert numbers.sections == {"sec:one": "1", "sec:two": "2", "fig:one": "1", "app:x": "A"}
    # an equation inside a kept block is numbered like any other
    kept = Document("t", (), (), (Section(("S",), (Keep(Paragraph("q"), Equation("a", "inside")),)),))
    assert numbering(kept).equations == {"inside": "1"}
    assert numbers.equations == {"first": "1", "second": "2"}
    # fixed tags (the article's numbers) win, and the others follow the largest so far
    assert numbering(small_document({"first": "4"})).equations == {"first": "4", "second": "5"}


def test_an_equation_key_used_twice_is_an_error():
    doc = Document("t", (), (Equation("a", "k"), Equation("b", "k")), ())
    with pytest.raises(ValueError, match="used twice"):
        numbering(doc)


def test_the_latex_writer():
    text = tex.render(small_document())
    assert r"\section{First}\label{sec:one}" in text and r"\subsection{Inner}" in text
    assert r"See (2) and section \hyperref[sec:two]{2}, and figure \hyperref[fig:one]{1}." in text
    assert "\\begin{aligned}\na &= b\n\\end{aligned} \\tag{1}" in text
    assert r"\texttt{my\_net}" in text and r"1\_a & $2$ \\" in text
    assert r"\definecolor{kernel1}{HTML}{1F77B4}" in text
    assert r"\draw[kernel1, line width=0.5pt] (a) -- (b);" in text
    assert (
        r"\draw[back] (b) to[bend left=30] node[lab, above, text=red!70!black] {$\partial L$} (a);"
        in text
    )
    assert r"\caption{A drawing.}\label{fig:one}" in text
    assert "\\appendix\n\n\\section{Extra}" in text
    assert "\\begin{gather*}\nx = 1 \\\\\ny = 2\n\\end{gather*}" in text


def test_a_display_after_a_paragraph_is_written_into_it_and_never_parted_from_it():
    doc = Document(
        "t", (), (), (
            Section(("S",), (
                Paragraph("In closed form:"),
                Equation(" \\\\\n".join(["a &= b"] * 8), breakable=False),  # long, yet one piece
                Paragraph("Next."),
                Equation(" \\\\\n".join(["c &= d"] * 8)),  # long and breakable
                Displays(()),  # nothing to show: nothing written (an empty gather* fails)
            )),
        ),
    )
    text = tex.render(doc)
    assert "In closed form:\n\\begin{equation*}\n\\begin{aligned}\na &= b" in text  # no blank line
    assert "Next.\n\\begin{align*}\nc &= d" in text
    assert "gather" not in text
    assert markdown.render(doc).count("$$") == 4  # two displays, and no empty third


def test_a_kept_block_is_one_minipage_with_its_table_whole_and_a_link_is_an_address():
    doc = Document(
        "t", (), (Paragraph("See ", Link("https://example.org/a-long-address"), "."),), (
            Section(("Exercise",), (
                Keep(
                    Paragraph("Fill in the table."),
                    Table((Column("r"),), (("i",),), ((("1",),),)),
                    Displays(("x = 1",)),
                ),
            ), numbered=False),
        ),
    )
    text = tex.render(doc)
    kept = text.split("\\begin{minipage}{\\linewidth}")[1].split("\\end{minipage}")[0]
    assert "\\begin{tabular}{r}" in kept and "longtable" not in kept and "x = 1" in kept
    assert "See \\url{https://example.org/a-long-address}." in text
    md = markdown.render(doc)
    assert "See <https://example.org/a-long-address>." in md and "| 1 |" in md
    parse(md)


def test_the_markdown_writer_and_github():
    text = markdown.render(small_document())
    assert text.startswith("# A title: the network `my_net`\n\n*Generated by symbackprop.*\n")
    assert "## 1 First" in text and "### 1.1 Inner" in text and "## Appendix A Extra" in text
    assert "See (2) and section 2, and figure 1." in text
    assert "$$\n\\begin{aligned}\na &= b\n\\end{aligned}\\qquad (1)\n$$" in text
    assert "| 1\\_a | $2$ |" in text
    assert "*Figure 1: A drawing.*" in text
    parsed = parse(text)
    assert parsed.headings == [
        "A title: the network `my_net`",
        "1 First",
        "1.1 Inner",
        "2 Second",
        "Appendix A Extra",
    ]
    assert parsed.tables == 1 and len(parsed.displays) == 3
    assert parsed.mermaid == [
        (
            'flowchart LR\n  a(("a₁"))\n  b(("z"))\n  a --> b\n  b -.->|"∂L"| a\n'
            "  linkStyle 0 stroke:#1F77B4\n  linkStyle 1 stroke:#B22222\n"
        )
    ]


def test_the_github_check_catches_what_github_would_not_show():
    with pytest.raises(AssertionError, match="dollar"):
        parse("A formula $ x$ with a space.\n")
    with pytest.raises(AssertionError, match="reads as Markdown"):
        parse("$$\n\\begin{aligned}\n- a\n\\end{aligned}\n$$\n")
    with pytest.raises(AssertionError, match="TeX outside math"):
        parse("A \\frac{1}{2} outside.\n")


@pytest.mark.parametrize(
    "value, fixed, scientific, given",
    [
        (0.123456, "0.1235", r"1.235 \times 10^{-1}", "0.1235"),
        (-2.5, "-2.500", "-2.500", "-2.5"),  # four significant digits: the zeros count
        (0.24003, "0.2400", r"2.400 \times 10^{-1}", "0.24"),
        (1.2345e-05, "0.00001234", r"1.234 \times 10^{-5}", "0.00001234"),
        (-0.0, "0", "0", "0"),
        (12345.6, "12350", r"1.235 \times 10^{4}", "12350"),
        (0.9, "0.9000", r"9.000 \times 10^{-1}", "0.9"),
        (-2.7755575615628914e-17, "0", "0", "0"),  # rounding noise of a sum that is 0
    ],
)
def test_number_formats(value, fixed, scientific, given):
    assert NumberFormat()(value) == fixed
    assert NumberFormat(scientific=True)(value) == scientific
    assert NumberFormat.given()(value) == given  # a drawn input or weight, as it was drawn


def test_the_printed_number_read_back_is_what_a_student_holds():
    fmt = NumberFormat()
    assert fmt.rounded(-0.7362 * 0.8826) == -0.6498 and fmt(-0.7362 * 0.8826) == "-0.6498"
    assert fmt.rounded(-0.73624) * fmt.rounded(0.88262) == pytest.approx(-0.64977012)
    assert NumberFormat(scientific=True).rounded(2.9438e-2) == 0.02944
    assert fmt.rounded(1e-20) == 0.0


def test_one_format_per_kind_of_number():
    # the handout's complaint: -5.935e-5 beside -0.00059 — both scientific now
    gradients = NumberFormat.fitting([-5.935e-5, -0.00059, 0.04], GRADIENT_RANGE)
    assert gradients.many([-5.935e-5, -0.00059]) == [
        r"-5.935 \times 10^{-5}",
        r"-5.900 \times 10^{-4}",
    ]
    assert not NumberFormat.fitting([0.9, -0.03, 0.4925]).scientific
    assert not NumberFormat.fitting([0.9, 2.8e-17]).scientific  # noise does not count


def test_wrap_breaks_outside_math_and_never_before_a_markdown_block():
    text = "word " * 20 + "$a + b + c + d$ " + "more " * 10 + "- not a list"
    lines = wrap(text, width=30, markdown=True).splitlines()
    assert all("$a + b + c + d$" in line or "$" not in line for line in lines)
    assert not any(line.startswith("- ") for line in lines)


def test_escaping():
    assert tex_escape("my_net & 100% {x}") == r"my\_net \& 100\% \{x\}"
    assert md_escape("my_net*") == r"my\_net\*"


def test_templates_escape_everything_but_raw():
    env = environment("tex")
    template = env.from_string(r"\VAR{user} \VAR{made}")
    assert template.render(user="a_b", made=Raw("a_{b}")) == r"a\_b a_{b}"
    with pytest.raises(TypeError, match="not a string"):
        template.render(user=sympy.Symbol("x"), made=Raw(""))
    with pytest.raises(jinja2.UndefinedError):
        env.from_string(r"\VAR{missing}").render()
    assert environment("md").from_string(r"\VAR{user}").render(user="a_b") == r"a\_b"
