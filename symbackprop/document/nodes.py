"""The document tree: what a handout or an exercise sheet says, before any format.

A document is built once from these nodes and rendered by one writer per format
(``tex``, ``markdown``), as pandoc and docutils do: a new section is written once.

* Inline content is a sequence of ``str`` (prose, escaped by the writer), ``Math``
  (inline LaTeX), ``Emph``, ``Strong``, ``Code``, ``Link`` (an address), ``Ref`` (a
  section's number) and ``EqRef`` (an equation's number).
* Blocks: ``Section`` (nested once: sections and subsections), ``Paragraph``,
  ``Equation`` (rows of an ``aligned`` display, optionally numbered), ``Displays``
  (several short displays, centred, as many to a line as the builder put there),
  ``Table``, ``Figure`` (a ``Diagram`` drawn in TikZ or Mermaid, with a caption or
  none), ``Keep`` (blocks printed on one page: a question and its numbers), ``Contents``
  and ``PageBreak``. A display that follows a paragraph belongs to it: printed, the two
  are never parted by a page break.
* ``Diagram``: nodes at positions (cm) and edges between them, each with a TeX label and a
  plain-text one, so that TikZ and Mermaid draw the same picture.

Equations carry a ``key``; ``numbering`` gives each keyed equation its number in order of
appearance (or the fixed number a ``Document`` assigns it, as the article's own), and each
section its number, for both writers alike.

Imports nothing of symbackprop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

# ---- inline content ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Math:
    """Inline math, LaTeX without the dollars."""

    tex: str


@dataclass(frozen=True)
class Emph:
    parts: tuple[Inline, ...]

    def __init__(self, *parts: Inline) -> None:
        object.__setattr__(self, "parts", parts)


@dataclass(frozen=True)
class Strong:
    parts: tuple[Inline, ...]

    def __init__(self, *parts: Inline) -> None:
        object.__setattr__(self, "parts", parts)


@dataclass(frozen=True)
class Code:
    """A name or a command, in a typewriter face."""

    text: str


@dataclass(frozen=True)
class Link:
    """An address, printed as it is and followed in a viewer that can."""

    url: str


@dataclass(frozen=True)
class Ref:
    """The number of the section or figure labelled ``label``: "3", "4.2", "A"."""

    label: str


@dataclass(frozen=True)
class EqRef:
    """The number of the equation keyed ``key``, in parentheses: "(4)"."""

    key: str


Inline = str | Math | Emph | Strong | Code | Link | Ref | EqRef


# ---- blocks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paragraph:
    """Running text; ``lead`` is a bold run-in heading ("Upstream gradients.")."""

    parts: tuple[Inline, ...]
    lead: str | None = None

    def __init__(self, *parts: Inline, lead: str | None = None) -> None:
        object.__setattr__(self, "parts", parts)
        object.__setattr__(self, "lead", lead)


@dataclass(frozen=True)
class Equation:
    """A display: rows of an ``aligned`` environment (``&`` and ``\\\\`` as LaTeX writes them),
    numbered when it has a ``key`` (see ``numbering``). ``breakable``: whether print may
    break it across pages (None: when it is long); a closed form never is."""

    body: str
    key: str | None = None
    breakable: bool | None = None


@dataclass(frozen=True)
class Displays:
    """Short displays set side by side, one line of them per entry of ``lines``."""

    lines: tuple[str, ...]


@dataclass(frozen=True)
class Column:
    """A table column: its alignment ("l", "c", "r") and, for wrapped text, a width in cm."""

    align: str = "l"
    width: float | None = None


Cell = Sequence[Inline]


@dataclass(frozen=True)
class Table:
    columns: tuple[Column, ...]
    header: tuple[Cell, ...]
    rows: tuple[tuple[Cell, ...], ...]
    small: bool = False  # set in a smaller font (print): a wide table that must fit the page


@dataclass(frozen=True)
class DiagramNode:
    id: str
    tex: str  # its label as TeX math
    text: str  # the same as plain text (unicode), for Mermaid
    x: float  # cm
    y: float
    style: str = "plain"  # "x", "z", "a", "loss", "box", "plain", "focus" (see the writers)


@dataclass(frozen=True)
class DiagramEdge:
    src: str
    dst: str
    colour: str | None = None  # a name of ``Diagram.colours``; None: the default line
    tex: str | None = None  # label, TeX math
    text: str | None = None  # label, plain text
    arrow: bool = False
    back: bool = False  # a gradient flowing backwards: drawn in red, apart from the forward edge
    side: str = "above"  # where the label sits: "above", "below", "left", "right"
    bend: int = 0  # degrees; a bent edge leaves room for its label beside a straight one
    around: float = 0.0  # cm: drawn around the nodes between, this far to their left (a shortcut)


@dataclass(frozen=True)
class Diagram:
    nodes: tuple[DiagramNode, ...]
    edges: tuple[DiagramEdge, ...]
    colours: tuple[tuple[str, str], ...] = ()  # (name, RRGGBB)
    direction: str = "LR"  # how Mermaid lays it out: "LR" or "TD"
    node_size: float = 0.8  # cm
    small: bool = False  # a smaller font for the labels
    heads: tuple[tuple[float, float, str], ...] = ()  # column headings: (x, y, TeX)


@dataclass(frozen=True)
class Figure:
    diagram: Diagram
    caption: tuple[Inline, ...] = ()  # none: a plain centred drawing
    label: str | None = None


@dataclass(frozen=True)
class Keep:
    """Blocks that print on one page (a question with its table and its numbers); in
    Markdown, the blocks themselves. No sections inside."""

    blocks: tuple[Block, ...]

    def __init__(self, *blocks: Block) -> None:
        object.__setattr__(self, "blocks", blocks)


@dataclass(frozen=True)
class Contents:
    """The table of contents."""


@dataclass(frozen=True)
class PageBreak:
    """A new page in print; nothing in Markdown."""


@dataclass(frozen=True)
class Section:
    title: tuple[Inline, ...]
    body: tuple[Block, ...]
    label: str | None = None
    level: int = 1  # 1 section, 2 subsection
    numbered: bool = True


Block = Paragraph | Equation | Displays | Table | Figure | Keep | Contents | PageBreak | Section


@dataclass(frozen=True)
class Document:
    """A whole document: a title, its front matter (before the first section), its sections
    and its appendices (numbered A, B, …)."""

    title: str
    subtitle: tuple[Inline, ...]
    front: tuple[Block, ...]
    sections: tuple[Section, ...]
    appendices: tuple[Section, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)  # fixed equation numbers by key
    author: str = "generated by symbackprop"


# ---- numbering ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Numbers:
    sections: dict[str, str]  # label of a section or a figure → "3", "4.2", "A"; figures 1, 2, …
    equations: dict[str, str]  # key → "4"
    headings: dict[int, str]  # id(section) → its number, for the writers' headings


def walk(blocks: Sequence[Block]) -> Iterator[Block]:
    """Every block, depth first, in document order."""
    for block in blocks:
        yield block
        if isinstance(block, Section):
            yield from walk(block.body)
        elif isinstance(block, Keep):
            yield from walk(block.blocks)


def numbering(doc: Document) -> Numbers:
    """Section numbers (1, 1.1, …; appendices A, B, …), figure numbers (1, 2, … for the figures
    with a caption) and equation numbers: each keyed
    equation gets its fixed tag from ``doc.tags``, or else the next number after the
    largest given so far, in order of appearance. An equation key used twice is an error."""
    sections: dict[str, str] = {}
    headings: dict[int, str] = {}

    def number_sections(items: Sequence[Section], names: Iterator[str]) -> None:
        for section, name in zip(items, names):
            headings[id(section)] = name
            if section.label:
                sections[section.label] = name
            subsections = [b for b in section.body if isinstance(b, Section) and b.numbered]
            number_sections(subsections, (f"{name}.{k}" for k in range(1, len(subsections) + 1)))

    numbered = [s for s in doc.sections if s.numbered]
    number_sections(numbered, (str(k) for k in range(1, len(numbered) + 1)))
    number_sections(list(doc.appendices), (chr(ord("A") + k) for k in range(len(doc.appendices))))

    equations: dict[str, str] = {}
    last = figures = 0
    everything = [*doc.front, *doc.sections, *doc.appendices]
    for block in walk(everything):
        if isinstance(block, Figure) and block.caption:
            figures += 1
            if block.label:
                sections[block.label] = str(figures)
        if isinstance(block, Equation) and block.key is not None:
            if block.key in equations:
                raise ValueError(f"equation key {block.key!r} used twice")
            if block.key in doc.tags:
                equations[block.key] = doc.tags[block.key]
            else:
                equations[block.key] = str(last + 1)
            if equations[block.key].isdigit():
                last = max(last, int(equations[block.key]))
    return Numbers(sections, equations, headings)


__all__ = [
    "Block",
    "Cell",
    "Code",
    "Column",
    "Contents",
    "Diagram",
    "DiagramEdge",
    "DiagramNode",
    "Displays",
    "Document",
    "Emph",
    "EqRef",
    "Equation",
    "Figure",
    "Inline",
    "Keep",
    "Link",
    "Math",
    "Numbers",
    "PageBreak",
    "Paragraph",
    "Ref",
    "Section",
    "Strong",
    "Table",
    "numbering",
    "walk",
]
