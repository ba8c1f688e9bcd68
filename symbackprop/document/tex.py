"""The LaTeX writer: a ``Document`` as a ``.tex`` file, through ``templates/document.tex.j2``.

Displays become ``equation*`` with an ``aligned`` body (``align*`` when long and breakable, so
that they may break across pages), numbered with ``\\tag``, and a display that follows a
paragraph is written into it, so that no page break parts them (TeX's
``\\predisplaypenalty``); tables ``longtable`` with booktabs rules (``tabular`` inside a
``Keep``, which is a ``minipage``: one page); diagrams TikZ pictures. Numbers of sections and equations come from
``nodes.numbering``, the same the Markdown writer uses.

Imports ``nodes`` and ``template``.
"""

from __future__ import annotations

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
    walk,
)
from .template import Raw, environment, tex_escape, wrap

LONG_DISPLAY_ROWS = 6  # rows; a longer display may break across pages

NODE_STYLES = {  # TikZ styles of diagram nodes, by their style name
    "x": "node, fill=black!6",
    "z": "node, fill=blue!8",
    "a": "node, fill=green!10",
    "focus": "node, fill=blue!8",
    "plain": "node",
    "loss": "node, rectangle, rounded corners=2pt, fill=red!12",
    "box": "node, rectangle, rounded corners=2pt, fill=blue!6, minimum width=4.4cm, minimum height=0.6cm",
}


def render(doc: Document) -> str:
    """The document as LaTeX source."""
    writer = _Writer(numbering(doc))
    body = [writer.blocks(doc.front)]
    body += [writer.block(s) for s in doc.sections]
    if doc.appendices:
        body.append(r"\appendix")
        body += [writer.block(s) for s in doc.appendices]
    colours = {}
    for block in walk([*doc.front, *doc.sections, *doc.appendices]):
        if isinstance(block, Figure):
            colours.update(block.diagram.colours)
    template = environment("tex").get_template("document.tex.j2")
    return template.render(
        title=doc.title,
        subtitle=Raw(writer.inline(doc.subtitle)),
        author=doc.author,
        colours=[{"name": name, "html": html} for name, html in colours.items()],
        body=Raw("\n\n".join(part for part in body if part)),
    )


class _Writer:
    def __init__(self, numbers: Numbers) -> None:
        self.numbers = numbers

    # ---- inline -------------------------------------------------------------------------

    def inline(self, parts) -> str:
        return "".join(self._inline(p) for p in parts)

    def _inline(self, part: Inline) -> str:
        if isinstance(part, str):
            return tex_escape(part)
        if isinstance(part, Math):
            return f"${part.tex}$"
        if isinstance(part, Emph):
            return rf"\emph{{{self.inline(part.parts)}}}"
        if isinstance(part, Strong):
            return rf"\textbf{{{self.inline(part.parts)}}}"
        if isinstance(part, Code):
            return rf"\texttt{{{tex_escape(part.text)}}}"
        if isinstance(part, Link):
            return rf"\url{{{part.url}}}"
        if isinstance(part, Ref):
            return rf"\hyperref[{part.label}]{{{self.numbers.sections[part.label]}}}"
        if isinstance(part, EqRef):
            return f"({self.numbers.equations[part.key]})"
        raise TypeError(f"not inline content: {part!r}")

    # ---- blocks -------------------------------------------------------------------------

    def blocks(self, blocks, keep: bool = False) -> str:
        """Blocks one after another; a display right after a paragraph is written into it."""
        parts: list[str] = []
        for k, block in enumerate(blocks):
            text = self.block(block, keep)
            if not text:
                continue
            glued = k and isinstance(block, (Equation, Displays)) and isinstance(blocks[k - 1], Paragraph)
            if glued and parts:
                parts[-1] += "\n" + text
            else:
                parts.append(text)
        return "\n\n".join(parts)

    def block(self, block: Block, keep: bool = False) -> str:
        if isinstance(block, Section):
            return self.section(block)
        if isinstance(block, Paragraph):
            lead = rf"\paragraph{{{tex_escape(block.lead)}}} " if block.lead else ""
            return wrap(lead + self.inline(block.parts))
        if isinstance(block, Equation):
            return self.equation(block)
        if isinstance(block, Displays):
            if not block.lines:
                return ""
            return "\\begin{gather*}\n" + " \\\\\n".join(block.lines) + "\n\\end{gather*}"
        if isinstance(block, Table):
            return self.tabular(block) if keep else self.table(block)
        if isinstance(block, Keep):
            return (
                "\\par\\noindent\\begin{minipage}{\\linewidth}\\setlength{\\parskip}{0.7ex}\n"
                + self.blocks(block.blocks, keep=True)
                + "\n\\end{minipage}\\par"
            )
        if isinstance(block, Figure):
            return self.figure(block)
        if isinstance(block, Contents):
            return r"\tableofcontents"
        if isinstance(block, PageBreak):
            return r"\clearpage"
        raise TypeError(f"not a block: {block!r}")

    def section(self, section: Section) -> str:
        command = {1: "section", 2: "subsection"}[section.level] + ("" if section.numbered else "*")
        head = rf"\{command}{{{self.inline(section.title)}}}"
        if section.label:
            head += rf"\label{{{section.label}}}"
        body = self.blocks(section.body)
        return head + ("\n\n" + body if body else "")

    def equation(self, equation: Equation) -> str:
        tag = f" \\tag{{{self.numbers.equations[equation.key]}}}" if equation.key else ""
        long = equation.body.count("\\\\") >= LONG_DISPLAY_ROWS
        if not (long if equation.breakable is None else equation.breakable):  # one piece
            return (
                f"\\begin{{equation*}}\n\\begin{{aligned}}\n{equation.body}\n"
                f"\\end{{aligned}}{tag}\n\\end{{equation*}}"
            )
        return f"\\begin{{align*}}\n{equation.body}{tag}\n\\end{{align*}}"

    def table(self, table: Table) -> str:
        spec = "".join(
            rf">{{\raggedright\arraybackslash}}p{{{c.width}cm}}" if c.width else c.align
            for c in table.columns
        )
        # A little more room between rows, for indices and superscripts.
        lines = [
            r"{\renewcommand{\arraystretch}{1.25}" + (r"\small" if table.small else ""),
            rf"\begin{{longtable}}{{{spec}}}",
            r"\toprule",
            " & ".join(self.inline(cell) for cell in table.header) + r" \\",
            r"\midrule",
            r"\endhead",
        ]
        lines += [" & ".join(self.inline(cell) for cell in row) + r" \\" for row in table.rows]
        lines += [r"\bottomrule", r"\end{longtable}}"]
        return "\n".join(lines)

    def tabular(self, table: Table) -> str:
        """A table that stays whole (inside a ``Keep``), centred."""
        spec = "".join(
            rf">{{\raggedright\arraybackslash}}p{{{c.width}cm}}" if c.width else c.align
            for c in table.columns
        )
        lines = [
            r"\begin{center}{\renewcommand{\arraystretch}{1.25}",
            rf"\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            " & ".join(self.inline(cell) for cell in table.header) + r" \\",
            r"\midrule",
        ]
        lines += [" & ".join(self.inline(cell) for cell in row) + r" \\" for row in table.rows]
        lines += [r"\bottomrule", r"\end{tabular}}\end{center}"]
        return "\n".join(lines)

    def figure(self, figure: Figure) -> str:
        picture = tikz(figure.diagram)
        if not figure.caption:
            return "\\begin{center}\n" + picture + "\n\\end{center}"
        label = rf"\label{{{figure.label}}}" if figure.label else ""
        return (
            "\\begin{figure}[htbp]\n\\centering\n"
            + picture
            + "\n"
            + rf"\caption{{{self.inline(figure.caption)}}}{label}"
            + "\n\\end{figure}"
        )


def tikz(diagram: Diagram) -> str:
    """A diagram as a TikZ picture: nodes at their positions (cm), edges as straight or bent
    lines, labels beside them."""
    font = r"\scriptsize" if diagram.small else r"\footnotesize"
    styles = [
        (
            f"node/.style={{circle, draw, fill=white, inner sep=1pt, minimum size={diagram.node_size:.2f}cm, "
            f"font={font}}}"
        ),
        *(f"{name}node/.style={{{style}}}" for name, style in NODE_STYLES.items()),
        r"back/.style={->, thick, red!70!black}",
        r"lab/.style={font=\small, inner sep=2pt}",
    ]
    lines = [r"\begin{tikzpicture}[x=1cm, y=1cm, >={Stealth}, " + ", ".join(styles) + "]"]
    for x, y, tex in diagram.heads:
        lines.append(rf"\node[font=\small] at ({x:.2f}, {y:.2f}) {{${tex}$}};")
    for n in diagram.nodes:
        lines.append(rf"\node[{n.style}node] ({n.id}) at ({n.x:.2f}, {n.y:.2f}) {{${n.tex}$}};")
    for e in diagram.edges:
        options = ["back"] if e.back else (["->"] if e.arrow else [])
        if e.colour:
            options.append(e.colour)
        if not e.back:
            options.append("line width=0.5pt")
        path = f"to[bend left={e.bend}]" if e.bend else "--"
        src, dst = e.src, e.dst
        if e.around:  # out of the west side, down past the boxes between, into the west side
            path, src, dst = f"-- ++({-e.around:.2f}, 0) |-", f"{e.src}.west", f"{e.dst}.west"
        label = ""
        if e.tex or e.text:
            content = f"${e.tex}$" if e.tex else tex_escape(e.text or "")
            colour = ", text=red!70!black" if e.back else ""
            shift = {"left": ", xshift=-0.12cm", "right": ", xshift=0.12cm"}.get(e.side, "")
            if e.around:  # a shortcut's label, beside its vertical run: wrapped, to the left
                shift += r", pos=0.25, text width=2.6cm, align=right, font=\scriptsize"
            label = f" node[lab, {e.side}{shift}{colour}] {{{content}}}"
        lines.append(rf"\draw[{', '.join(options)}] ({src}) {path}{label} ({dst});")
    lines.append(r"\end{tikzpicture}")
    return "\n".join(lines)


__all__ = ["render", "tikz"]
