"""What "shows on GitHub" means for the Markdown documents, checked with a parser.

GitHub renders ``$…$`` and ``$$…$$`` math and ``mermaid`` code blocks. markdown-it-py with
mdit-py-plugins' dollarmath, set up as strictly as GitHub reads dollars (no space inside
the dollars), must find every formula as math: a dollar
left in the text is a formula GitHub would print raw. On top of the parse, the line rules
GitHub's own parser needs: no blank line and no line that starts a Markdown block inside a
display, no ``|`` inside a formula of a table, no ``\\tag``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin

BLOCK_START = re.compile(r"^(\s{4}|[#>]|[-+*] |\d+[.)] |=+\s*$|-+\s*$|\|)")


@dataclass
class Parsed:
    headings: list[str]
    displays: list[str]  # the body of every $$ display
    inline: list[str]  # every inline formula
    tables: int
    mermaid: list[str]  # the source of every mermaid block
    text: str  # all the plain text, formulas left out


def parser() -> MarkdownIt:
    # allow_digits stays on: off, the plugin reads the character "before" a $ that opens a
    # table cell as the cell's last character, and refuses "$2 \times 2$, dilation 2".
    return (
        MarkdownIt("commonmark")
        .enable("table")
        .use(dollarmath_plugin, allow_space=False, allow_digits=True, double_inline=False)
    )


def parse(markdown: str) -> Parsed:
    """The document as GitHub would read it; AssertionError naming what would not show."""
    tokens = parser().parse(markdown)
    headings, displays, inline, mermaid, texts = [], [], [], [], []
    tables = 0
    for k, token in enumerate(tokens):
        if token.type == "heading_open":
            headings.append(tokens[k + 1].content)
        elif token.type == "math_block":
            displays.append(token.content)
        elif token.type == "table_open":
            tables += 1
        elif token.type == "fence" and token.info.strip() == "mermaid":
            mermaid.append(token.content)
        elif token.type == "fence":
            raise AssertionError(f"a code block that is not a diagram: {token.content[:80]!r}")
        if token.type == "inline":
            for child in token.children or []:
                if child.type == "math_inline":
                    inline.append(child.content)
                elif child.type == "text":
                    texts.append(child.content)
    text = "\n".join(texts)
    assert "$" not in text, f"a dollar GitHub would print: {_around(text, '$')}"
    for leaked in (r"\frac", "^{", "_{", r"\partial", r"\begin"):
        assert leaked not in text, f"TeX outside math: {_around(text, leaked)}"
    for formula in inline:
        assert formula == formula.strip(), f"space inside the dollars: ${formula}$"
    assert markdown.count("\n$$\n") + markdown.startswith("$$\n") >= len(displays)
    for body in displays:
        assert r"\tag" not in body
        for line in body.strip("\n").splitlines():
            assert line.strip(), f"a blank line inside a display: {body[:80]!r}"
            assert not BLOCK_START.match(line), f"a display line GitHub reads as Markdown: {line!r}"
    for line in markdown.splitlines():
        if line.startswith("| "):
            for formula in re.findall(r"\$([^$]*)\$", line):
                assert "|" not in formula, f"a | inside a formula in a table: {formula}"
    for source in mermaid:
        assert source.startswith(("flowchart LR\n", "flowchart TD\n")), source[:40]
        for line in source.splitlines()[1:]:
            assert re.fullmatch(
                r'  (\w+(\(\(".*"\)\)|\[".*"\])|\w+ -(->|\.->)(\|".*"\|)? \w+|linkStyle [\d,]+ stroke:#[0-9A-F]{6})',
                line,
            ), f"not a Mermaid line this writer makes: {line!r}"
    return Parsed(headings, displays, inline, tables, mermaid, text)


def _around(text: str, needle: str, width: int = 60) -> str:
    at = text.index(needle)
    return repr(text[max(0, at - width) : at + width])
