"""What the writers share: escaping, line wrapping and the jinja2 skeleton templates.

The templates in ``templates/`` (``document.tex.j2``, ``document.md.j2``) are the outside of a
document in one format — preamble, title, body — and receive strings: the body a writer
made (``Raw``) and a few values, escaped for their format unless ``Raw``.

Imports jinja2 alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources

import jinja2


class Raw(str):
    """A string of LaTeX or Markdown made by a writer, put into a template as it is."""


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_MD_SPECIAL = set("\\`*_{}[]()#+-.!|<>$~")
_MD_INLINE = set("\\`*_[]<>$|~")  # what means something in the middle of a line


def tex_escape(text: str) -> str:
    """``text`` safe to typeset in LaTeX: ``my_net`` → ``my\\_net``."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)


def md_escape(text: str) -> str:
    """``text`` safe anywhere in Markdown: every punctuation character that means something, escaped."""
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in text)


def md_escape_inline(text: str) -> str:
    """Running text safe in Markdown, where ``wrap`` never starts a line with a block marker:
    only what means something in the middle of a line is escaped."""
    return "".join("\\" + ch if ch in _MD_INLINE else ch for ch in text)


_MD_LINE_START = re.compile(r"[#>+\-*=|`~]|\d+[.)]")


def wrap(text: str, width: int = 92, markdown: bool = False) -> str:
    """``text`` broken into lines of about ``width`` characters, at spaces outside ``$…$`` math
    and outside braces; in Markdown, never before a word that would start a block (a list
    item, a heading, a quote, a table row)."""
    pieces, start, depth, math = [], 0, 0, False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "$":
            math = not math
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == " " and not math and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
        i += 1
    pieces.append(text[start:])
    lines: list[str] = []
    for piece in pieces:
        if not piece:
            continue
        fits = lines and len(lines[-1]) + 1 + len(piece) <= width
        glued = lines and markdown and _MD_LINE_START.match(piece)
        if fits or glued:
            lines[-1] += " " + piece
        else:
            lines.append(piece)
    return "\n".join(lines)


def _finalize(escape: Callable[[str], str]) -> Callable[[object], str]:
    def finalize(value: object) -> str:
        if isinstance(value, jinja2.Undefined):
            return str(value)  # StrictUndefined: raises, naming what is missing
        if isinstance(value, Raw):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str):
            return escape(value)
        raise TypeError(f"a template received {type(value).__name__}, not a string: {value!r}")

    return finalize


def _load_template(name: str) -> str:
    return resources.files("symbackprop.templates").joinpath(name).read_text(encoding="utf-8")


def environment(kind: str) -> jinja2.Environment:
    """The jinja2 environment for ``kind`` "tex" or "md" templates.

    Delimiters that read as LaTeX macros and leave braces alone: ``\\VAR{value}``,
    ``\\BLOCK{if ...}``, ``\\#{comment}``. Every value is escaped for its format
    unless it is ``Raw``; an undefined name is an error.
    """
    escape = {"tex": tex_escape, "md": md_escape}[kind]
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_load_template),
        block_start_string=r"\BLOCK{",
        block_end_string="}",
        variable_start_string=r"\VAR{",
        variable_end_string="}",
        comment_start_string=r"\#{",
        comment_end_string="}",
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=_finalize(escape),
    )


__all__ = ["Raw", "environment", "md_escape", "md_escape_inline", "tex_escape", "wrap"]
