"""The Markdown writer: a ``Document`` as GitHub-flavoured Markdown with ``$…$`` math and
Mermaid diagrams, through ``templates/document.md.j2``.

What GitHub needs, and the tests check with a dollar-math parser: inline math is ``$…$``
with no space inside the dollars; a display is ``$$`` on its own line, an ``aligned`` (or
``gathered``) body with no blank line and no line starting like a Markdown block, then
``$$``; an equation's number follows its body as ``\\qquad (n)`` (GitHub has no ``\\tag``);
tables are pipe tables whose cells hold no ``|``; a diagram is a ``mermaid`` code block
and its caption a paragraph after it.

Imports ``nodes`` and ``template``.
"""

from __future__ import annotations

import re

from .nodes import (
    Block,
    Code,
    Contents,
    Diagram,
    Displays,
    Document,
    Emph,
    EqRef,
    Equation,
    Figure,
    Inline,
    Keep,
    Link,
    Math,
    Numbers,
    PageBreak,
    Paragraph,
    Ref,
    Section,
    Strong,
    Table,
    numbering,
)
from .template import Raw, environment, md_escape, md_escape_inline, wrap

ALIGN = {"l": ":--", "r": "--:", "c": ":-:"}
MERMAID_SHAPES = {"box": '["{}"]', "loss": '["{}"]'}  # any other style: a circle (("…"))


def render(doc: Document) -> str:
    """The document as Markdown."""
    writer = _Writer(numbering(doc))
    body = [writer.block(b) for b in doc.front]
    body += [writer.block(s) for s in doc.sections]
    body += [writer.block(s, appendix=True) for s in doc.appendices]
    template = environment("md").get_template("document.md.j2")
    text = template.render(
        title=doc.title,
        subtitle=Raw(writer.inline(doc.subtitle)),
        author=doc.author,
        body=Raw("\n\n".join(part for part in body if part)),
    )
    return re.sub(r"\n{3,}", "\n\n", text)


class _Writer:
    def __init__(self, numbers: Numbers) -> None:
        self.numbers = numbers
        self.figures = 0

    # ---- inline -------------------------------------------------------------------------

    def inline(self, parts) -> str:
        return "".join(self._inline(p) for p in parts)

    def _inline(self, part: Inline) -> str:
        if isinstance(part, str):
            return md_escape_inline(part)
        if isinstance(part, Math):
            return f"${part.tex.strip()}$"
        if isinstance(part, Emph):
            return f"*{self.inline(part.parts)}*"
        if isinstance(part, Strong):
            return f"**{self.inline(part.parts)}**"
        if isinstance(part, Code):
            return f"`{part.text}`" if "`" not in part.text else md_escape(part.text)
        if isinstance(part, Link):
            return f"<{part.url}>"
        if isinstance(part, Ref):
            return self.numbers.sections[part.label]
        if isinstance(part, EqRef):
            return f"({self.numbers.equations[part.key]})"
        raise TypeError(f"not inline content: {part!r}")

    # ---- blocks -------------------------------------------------------------------------

    def block(self, block: Block, appendix: bool = False) -> str:
        if isinstance(block, Section):
            return self.section(block, appendix)
        if isinstance(block, Paragraph):
            lead = f"**{md_escape_inline(block.lead)}** " if block.lead else ""
            return wrap(lead + self.inline(block.parts), markdown=True)
        if isinstance(block, Equation):
            tag = f"\\qquad ({self.numbers.equations[block.key]})" if block.key else ""
            return f"$$\n\\begin{{aligned}}\n{block.body}\n\\end{{aligned}}{tag}\n$$"
        if isinstance(block, Keep):
            return "\n\n".join(part for part in (self.block(b) for b in block.blocks) if part)
        if isinstance(block, Displays):
            if not block.lines:
                return ""
            return "$$\n\\begin{gathered}\n" + " \\\\\n".join(block.lines) + "\n\\end{gathered}\n$$"
        if isinstance(block, Table):
            return self.table(block)
        if isinstance(block, Figure):
            return self.figure(block)
        if isinstance(block, (Contents, PageBreak)):
            return ""  # GitHub shows its own outline; a screen has no pages
        raise TypeError(f"not a block: {block!r}")

    def section(self, section: Section, appendix: bool) -> str:
        number = self.numbers.headings.get(id(section))
        prefix = "" if number is None else (f"Appendix {number} " if appendix else f"{number} ")
        head = "#" * (section.level + 1) + " " + prefix + self.inline(section.title)
        return "\n\n".join([head] + [part for part in (self.block(b) for b in section.body) if part])

    def table(self, table: Table) -> str:
        lines = [
            "| " + " | ".join(self.inline(cell) for cell in table.header) + " |",
            "| "
            + " | ".join(ALIGN.get(c.align, ":--") if not c.width else ":--" for c in table.columns)
            + " |",
        ]
        lines += ["| " + " | ".join(self.inline(cell) for cell in row) + " |" for row in table.rows]
        return "\n".join(lines)

    def figure(self, figure: Figure) -> str:
        drawing = "```mermaid\n" + mermaid(figure.diagram) + "\n```"
        if not figure.caption:
            return drawing
        self.figures += 1
        return (
            drawing
            + "\n\n"
            + wrap(f"*Figure {self.figures}: {self.inline(figure.caption)}*", markdown=True)
        )


def mermaid(diagram: Diagram) -> str:
    """A diagram as a Mermaid flowchart: the same nodes and edges (Mermaid places them),
    edge colours as ``linkStyle`` lines."""
    lines = [f"flowchart {diagram.direction}"]
    for n in diagram.nodes:
        shape = MERMAID_SHAPES.get(n.style, '(("{}"))')
        lines.append(f"  {n.id}{shape.format(_quoted(n.text))}")
    colours = dict(diagram.colours)
    by_colour: dict[str, list[str]] = {}
    for k, e in enumerate(diagram.edges):
        arrow = "-.->" if e.back else "-->"
        label = f'|"{_quoted(e.text)}"|' if e.text else ""
        lines.append(f"  {e.src} {arrow}{label} {e.dst}")
        if e.colour in colours:
            by_colour.setdefault(e.colour, []).append(str(k))
        elif e.back:
            by_colour.setdefault("back", []).append(str(k))
    colours["back"] = "B22222"
    lines += [
        f"  linkStyle {','.join(ids)} stroke:#{colours[name]}" for name, ids in by_colour.items()
    ]
    return "\n".join(lines)


def _quoted(text: str) -> str:
    return text.replace('"', "#quot;")


__all__ = ["mermaid", "render"]
