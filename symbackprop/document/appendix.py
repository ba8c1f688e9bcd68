"""The handout's appendices: the chain rule with one and with several dependencies (the
article's (19) and (20), which every sum of section 4 applies), with its pictures; and the
weights a large network's full handout does not derive in full, a row each.

Imports ``engine`` (and what it builds on) and the document's ``common``, ``context``,
``figures`` and ``nodes``.
"""

from __future__ import annotations

from ..engine import _flat
from .common import elide
from .context import Context
from .figures import chain_rule_diagrams
from .nodes import Column, Emph, Equation, Figure, Math, Paragraph, Ref, Section, Table


def chain_rule_section() -> Section:
    """Appendix A: the chain rule with one and with several dependencies (the article's (19)
    and (20)), and the gradients at a node."""
    single, gradients = chain_rule_diagrams()
    body = [
        Paragraph(
            "If ",
            Math("a(t)"),
            " is differentiable in ",
            Math("t"),
            " and ",
            Math("z(a)"),
            " in ",
            Math("a"),
            ", then",
            lead="A single dependency.",
        ),
        Equation(r"\frac{d z}{d t} = \frac{d z}{d a} \cdot \frac{d a}{d t}", "single"),
        Paragraph(
            "If ",
            Math("a_1(t)"),
            " and ",
            Math("a_2(t)"),
            " are differentiable in ",
            Math("t"),
            " and ",
            Math("z(a_1, a_2)"),
            " in both, then ",
            Math("t"),
            " reaches ",
            Math("z"),
            " along two paths, and their contributions add up:",
            lead="Several dependencies.",
        ),
        Equation(
            r"\frac{d z}{d t} = \frac{\partial z}{\partial a_1} \cdot \frac{d a_1}{d t} + "
            r"\frac{\partial z}{\partial a_2} \cdot \frac{d a_2}{d t}",
            "multiple",
        ),
        Figure(single),
        Paragraph(
            "In backpropagation every node works on its own. A node ",
            Math("z"),
            " with inputs ",
            Math("a_1, a_2"),
            " receives from the nodes it feeds its ",
            Emph("upstream gradient"),
            " ",
            Math(r"\partial L / \partial z"),
            "; it knows its ",
            Emph("local gradients"),
            " ",
            Math(r"\partial z / \partial a_k"),
            ", one per input; and it sends back to each input the ",
            Emph("downstream gradient"),
            ", their product:",
            lead="Upstream, local and downstream gradients.",
        ),
        Equation(
            r"\underbrace{\frac{\partial L}{\partial a_k}}_{\text{downstream}} = "
            r"\underbrace{\frac{\partial L}{\partial z}}_{\text{upstream}} \cdot "
            r"\underbrace{\frac{\partial z}{\partial a_k}}_{\text{local}}"
        ),
        Figure(gradients),
        Paragraph(
            "For a weighted sum ",
            Math(r"z = \sum_k w_k v_k"),
            " the local gradients are ",
            Math(r"\partial z / \partial v_k = w_k"),
            " and ",
            Math(r"\partial z / \partial w_k = v_k"),
            "; for an activation ",
            Math("a = g(z)"),
            " it is ",
            Math("g'(z)"),
            "; for a max, 1 for the "
            "input that won and 0 for the others. A node that feeds several others adds up the "
            "downstream gradients it receives: that is the rule for several dependencies, and the "
            "reason for every sum in section ",
            Ref("sec:backward"),
            ".",
        ),
    ]
    return Section(
        ("The chain rule, and the gradients at a node",), tuple(body), label="app:chain"
    )



def rest_rows(c: Context) -> list:
    """A row per weight not derived in full: its terms, each written short."""
    d = c.d
    rows = []
    for name in c.network.parameters:
        for element in _flat(d.graph.params[name]):
            if element not in c.detailed:
                terms = d.terms(element)
                pieces = [
                    rf"\partial L / \partial {d.tex_names[t.z]}"
                    + ("" if t.factor == 1 else rf" \cdot {d.tex_names[t.factor]}")
                    for t in terms
                ]
                rows.append(
                    (
                        (Math(d.tex_names[element]),),
                        (str(len(terms)),),
                        (Math(" + ".join(elide(pieces, 6, 3, 1)) or "0"),),
                    )
                )
    return rows

def rest_section(rows: list) -> Section:
    """Appendix B: the weights not derived in full in section 4."""
    body = [
        Paragraph(
            "The gradient of each weight not derived in full in section ",
            Ref("sec:backward"),
            ", one term per position where it was used, written with ",
            Math(
                r"\partial L / \partial z^{(l)}_{i} = \partial L / \partial a^{(l)}_{i} \cdot "
                r"\partial a^{(l)}_{i} / \partial z^{(l)}_{i}"
            ),
            ":",
        ),
        Table(
            (Column("l"), Column("r"), Column("l", 11.4)),
            (("Weight",), ("Terms",), (Math(r"\partial L / \partial w"),)),
            tuple(rows),
        ),
    ]
    return Section(("The other weights",), tuple(body), label="app:rest")


__all__ = ["chain_rule_section", "rest_rows", "rest_section"]
