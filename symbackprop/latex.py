"""LaTeX for derivations: the notation printer, line breaking, LaTeX logs.

* ``NotationPrinter`` is sympy's LaTeX printer told each symbol's TeX name
  (``Derivation.tex_names``), so every expression reads in the article's notation;
  activations print themselves (g′ as ``g'(z)``, never a ``Subs``).
* Long expressions are broken into rows of bounded width, by an estimate of
  their printed width (``tex_width``, in em): sums break between terms,
  products between factors, a function call inside its argument. The same rows
  serve LaTeX (``align*``) and Markdown (``aligned`` inside ``$$``).
* ``gradient_latex``, ``derivation_latex`` and ``derivation_summary_latex`` back
  ``Derivation.latex``, ``latex_derivation`` and ``_repr_latex_``.
* On a graph, a node that several layers read gets the sum of what each sends back (the
  article's rule (20)): ``gathered_rows`` prints it reader by reader, each reader's terms on
  rows of their own tagged ``(layer r)``; a derivation shows the upstream gradients its chain
  forms use that way after them, and x's own chain form when several layers read x.

Imports ``engine`` (and what it builds on) and sympy; nothing imports it but the
``document`` package, ``cli``, ``record``, ``tensor`` (whose ``TensorPrinter`` extends
``NotationPrinter``) and ``derivation``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import sympy
from sympy.printing.latex import LatexPrinter

from .engine import Engine as Derivation
from .engine import Term, _flat
from .simplify import tidy

ROW_WIDTH = 31.0  # em available to one row of a broken formula, after its left-hand side
CLOSED_FORM_MAX_NODES = 400  # tree nodes; a larger closed form is too long to print
CLOSED_FORM_MAX_ROWS = 8  # rows; a closed form needing more is not printed either


# ---- the printer ------------------------------------------------------------------------


class NotationPrinter(LatexPrinter):
    r"""sympy's LaTeX printer with every symbol written in the network's notation.

    >>> import symbackprop as sb
    >>> d = sb.presets.article().derive()
    >>> print(NotationPrinter(d.tex_names).doprint(d.chain("W3")[0, 0]))
    a^{(2)}_{1} \frac{\partial L}{\partial a^{(3)}_{1}} g'\left(z^{(3)}_{1}\right)

    It remembers what it printed: closed forms repeat the same subexpressions
    many times over, and line breaking prints the parts of a formula again.
    """

    def __init__(self, names: dict[sympy.Symbol, str]) -> None:
        super().__init__({"symbol_names": names})
        self._printed: dict[sympy.Basic, str] = {}

    def _print(self, expr, **kwargs) -> str:
        if kwargs or not isinstance(expr, sympy.Basic):  # a context (an exponent): print afresh
            return super()._print(expr, **kwargs)
        if expr not in self._printed:
            self._printed[expr] = super()._print(expr)
        return self._printed[expr]


def printer(d: Derivation) -> NotationPrinter:
    """The printer for ``d``'s network."""
    return NotationPrinter(d.tex_names)


# ---- printed width ----------------------------------------------------------------------

_TOKEN = re.compile(r"\\[A-Za-z]+|\\.|[{}^_]|\S")
_EM = {  # widths in em of the commands a formula here may hold, spacing included
    r"\partial": 0.6, r"\cdot": 0.8, r"\times": 0.8, r"\quad": 1.0, r"\qquad": 2.0,
    r"\,": 0.17, r"\:": 0.22, r"\;": 0.28, r"\!": -0.17, r"\ ": 0.33, r"\lbrace": 0.5,
    r"\rbrace": 0.5, r"\ldots": 1.2, r"\dots": 1.2, r"\cdots": 1.2, r"\sum": 1.5,
    r"\log": 1.5, r"\exp": 1.7, r"\tanh": 2.2, r"\max": 1.8, r"\leq": 1.3, r"\geq": 1.3,
    r"\le": 1.3, r"\ge": 1.3, r"\to": 1.5, r"\in": 1.2, r"\mid": 0.9,
}
_DELIMITED = {r"\left", r"\right", r"\bigl", r"\bigr", r"\Bigl", r"\Bigr", r"\biggl", r"\biggr"}
_TEXT = {r"\operatorname", r"\mathrm", r"\text", r"\textit"}
_LETTER = {"w": 0.72, "m": 0.88, "n": 0.6, "i": 0.35, "j": 0.42, "l": 0.3, "f": 0.5, "y": 0.49}
_CHAR = {"+": 1.25, "-": 1.25, "=": 1.4, "<": 1.4, ">": 1.4, ",": 0.45, "(": 0.4, ")": 0.4,
         "[": 0.3, "]": 0.3, "'": 0.3, "|": 0.3, "/": 0.5, ".": 0.3, "!": 0.3, ":": 0.3}


def tex_width(tex: str) -> float:
    """Estimated width in em of a LaTeX math formula typeset in display style.

    An estimate made for line breaking — close for what ``NotationPrinter`` writes
    (letters, indices, fractions, functions), conservative elsewhere.

    >>> round(tex_width("w^{(1)}_{1} x_{1}"), 1)  # TeX sets it 2.8 em wide
    2.7
    """
    tokens = _TOKEN.findall(tex)
    width, _ = _group_width(tokens, 0)
    return width


def _group_width(tokens: list[str], i: int) -> tuple[float, int]:
    """Width of tokens from i up to the closing brace of the group (or the end)."""
    total = 0.0
    script = None  # width of the script just set, so a sub- and superscript overlap
    while i < len(tokens) and tokens[i] != "}":
        token = tokens[i]
        if token in "^_":
            width, i = _argument_width(tokens, i + 1)
            width = width * 0.73 + 0.05  # script size, plus TeX's \\scriptspace
            total += width if script is None else max(0.0, width - script)
            script = width if script is None else max(script, width)
            continue
        script = None
        if token == "{":
            width, i = _group_width(tokens, i + 1)
            total, i = total + width, i + 1
        elif token == r"\frac":
            numerator, i = _argument_width(tokens, i + 1)
            denominator, i = _argument_width(tokens, i)
            total += max(numerator, denominator) + 0.3
        elif token in _DELIMITED:
            total += 0.0 if i + 1 < len(tokens) and tokens[i + 1] == "." else 0.45
            i += 2
        elif token in _TEXT:
            width, i = _argument_width(tokens, i + 1)
            total += width * 1.1 + 0.2  # upright text is wider than italic letters
        else:
            total += _token_width(token)
            i += 1
    return total, i


def _argument_width(tokens: list[str], i: int) -> tuple[float, int]:
    """Width of the one argument starting at i: a braced group or a single token."""
    if i >= len(tokens):
        return 0.0, i
    if tokens[i] == "{":
        width, i = _group_width(tokens, i + 1)
        return width, i + 1
    return _token_width(tokens[i]), i + 1


def _token_width(token: str) -> float:
    if token in _EM:
        return _EM[token]
    if token in _CHAR:
        return _CHAR[token]
    if token.startswith("\\"):
        return 0.6  # a Greek letter or a symbol
    if token.isdigit():
        return 0.5
    return _LETTER.get(token, 0.8 if token.isupper() else 0.56)


# ---- breaking long formulas into rows -------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of a broken formula: its LaTeX and how deep it is nested (for indenting)."""

    tex: str
    depth: int = 0


def pack(items: Sequence[str], width: float = ROW_WIDTH) -> list[Row]:
    """``items`` (LaTeX pieces, each but the first starting with its operator: ``+ t``) in
    as few rows of at most ``width`` em as greedy filling needs, then evened out, so a
    sum of four terms breaks 2 + 2 rather than 3 + 1. An item wider than a row gets its own."""
    widths = [tex_width(item) for item in items]

    def fill(limit: float) -> list[list[int]]:
        rows: list[list[int]] = []
        used = 0.0
        for k, w in enumerate(widths):
            if rows and used + w <= limit:
                rows[-1].append(k)
                used += w
            else:
                rows.append([k])
                used = w
        return rows

    rows = fill(width)
    low, high = max(widths, default=0.0), width
    for _ in range(12):  # the narrowest limit that needs no more rows
        middle = (low + high) / 2
        if len(fill(middle)) <= len(rows):
            high = middle
        else:
            low = middle
    rows = fill(high) if len(fill(high)) <= len(rows) else rows
    texts = [" ".join(items[k] for k in row) for row in rows]
    return [Row(t if n == 0 else _continued(t)) for n, t in enumerate(texts)]


def _continued(item: str) -> str:
    """A row's first piece: a leading binary operator keeps its spacing after ``&``."""
    return "{}" + item if item[:1] in "+-=" or item.startswith(r"\cdot") else item


def break_expr(expr: sympy.Expr, p: LatexPrinter, width: float = ROW_WIDTH) -> list[Row] | None:
    """``expr`` printed in rows of at most ``width`` em, or None when it cannot be broken
    that narrow (a fraction, a power or a symbol too wide for a row).

    A sum breaks before a + or -, a product between factors (the row after the break
    starts with a centred dot), a function call inside its argument."""
    tex = p.doprint(expr)
    if _fits(tex, width):
        return [Row(tex)]
    if expr.is_Add:
        pieces = []
        for n, term in enumerate(p._as_ordered_terms(expr, order=None)):
            sign = "" if n == 0 else "+"
            if n and term.could_extract_minus_sign():
                sign, term = "-", -term
            pieces.append((f" {sign} ", f"{{}}{sign} ", term, p._needs_add_brackets(term)))
        pieces[0] = ("", "", *pieces[0][2:])
        return _break_pieces(pieces, p, width)
    if expr.is_Mul and sympy.fraction(expr)[1] == 1:
        coefficient, rest = expr.as_coeff_Mul()
        if not rest.is_Mul and coefficient in (1, -1):
            return _break_call(rest, p, width, sign="-" if coefficient == -1 else "")
        head = {1: "", -1: "- "}.get(coefficient, p.doprint(coefficient) + " ")
        factors = rest.as_ordered_factors() if rest.is_Mul else [rest]
        pieces = [(" ", r"{}\cdot ", f, p._needs_mul_brackets(f, first=n == 0, last=False))
                  for n, f in enumerate(factors)]
        pieces[0] = (head, head, *pieces[0][2:])
        return _break_pieces(pieces, p, width)
    return _break_call(expr, p, width)


def _fits(tex: str, width: float) -> bool:
    # Nothing printed here takes more than ~20 characters an em: a longer string cannot fit,
    # and huge closed forms need not be measured at every level of the breaking.
    return len(tex) <= 25 * width and tex_width(tex) <= width


def _break_call(expr: sympy.Expr, p: LatexPrinter, width: float, sign: str = "") -> list[Row] | None:
    """f(long argument) as ``f\\Bigl(`` rows of the argument ``\\Bigr)``."""
    if not (isinstance(expr, sympy.Function) and len(expr.args) == 1 and hasattr(expr, "tex")):
        return None
    inner = break_expr(expr.args[0], p, width - 1.0)
    if inner is None:
        return None
    return _nest(inner, sign + expr.tex + r"\Bigl(", r"\Bigr)")


def _break_pieces(pieces, p: LatexPrinter, width: float) -> list[Row] | None:
    """Pack (operator within a row, operator starting a row, expression, needs brackets)
    pieces into rows; a piece too wide for a row is broken itself, its first row kept on
    the current row when it fits there."""
    rows: list[Row] = []
    for inline, starting, expr, brackets in pieces:
        tex = p.doprint(expr)
        tex = rf"\left({tex}\right)" if brackets else tex
        if _fits(tex, width):
            new = [Row(tex)]
        else:
            new = break_expr(expr, p, width - 1.0)
            if new is None:
                return None
            if brackets:
                new = _nest(new, r"\Bigl(", r"\Bigr)")
        if rows and rows[-1].depth == 0 and tex_width(rows[-1].tex + inline + new[0].tex) <= width:
            rows[-1] = Row(rows[-1].tex + inline + new[0].tex)
        else:
            rows.append(Row((starting if rows else inline.lstrip()) + new[0].tex, new[0].depth))
        rows.extend(new[1:])
    return rows


def _nest(inner: list[Row], opening: str, closing: str) -> list[Row]:
    """Inner rows between ``opening`` and ``closing``, the rows after the first one deeper."""
    rows = [Row(opening + " " + inner[0].tex)] + [Row(r.tex, r.depth + 1) for r in inner[1:]]
    rows[-1] = Row(rows[-1].tex + closing, rows[-1].depth)
    return rows


def aligned(lhs: str, rows: Sequence[Row], relation: str = "=") -> str:
    """One equation as ``align`` rows: ``lhs &= row₁ \\\\ &\\quad row₂ …`` (continuations indented)."""
    lines = [f"{lhs} &{relation} {rows[0].tex}"]
    lines += ["&" + r"\quad" * (r.depth + 1) + " " + r.tex for r in rows[1:]]
    return " \\\\\n".join(lines)


# ---- the terms of a chain-rule sum ----------------------------------------------------------


def term_latex(term: Term, p: LatexPrinter) -> str:
    """One chain-rule term, upstream · local · factor, as the article writes it;
    a factor equal to 1 (identity activation, bias) is left out."""
    parts = []
    for part in (term.upstream, term.local, term.factor):
        if part == 1:
            continue
        tex = p.doprint(part)
        parts.append(rf"\left({tex}\right)" if part.is_Add else tex)
    return r" \cdot ".join(parts) or "1"


def sum_rows(pieces: Sequence[str], width: float = ROW_WIDTH) -> list[Row]:
    """Rows of the sum of ``pieces`` (LaTeX terms, in order); 0 for no terms."""
    if not pieces:
        return [Row("0")]
    return pack([pieces[0]] + ["+ " + t for t in pieces[1:]], width)


def chain_rows(d: Derivation, element: sympy.Symbol, width: float = ROW_WIDTH) -> list[Row]:
    """∂L/∂element in chain form: one upstream · local · input term per position it was used."""
    p = printer(d)
    return sum_rows([term_latex(t, p) for t in d.terms(element)], width)


# ---- a node several layers read: the article's rule (20) -----------------------------------


def reader_terms(d: Derivation, number: int, node: sympy.Symbol) -> list[tuple[int, list[Term]]]:
    """The terms that each layer reading layer ``number``'s output (0: the input x) sends back
    to its node ``node``, reader by reader in the network's order: the parts whose sum is
    ∂L/∂node (the article's rule (20))."""
    return [(r, list(d.backward(r).input_terms.get(node, []))) for r in d.network.consumers(number)]


def gathered_rows(d: Derivation, number: int, node: sympy.Symbol, width: float = ROW_WIDTH) -> list[Row]:
    """∂L/∂node, node an output of layer ``number`` (0: an input x_i), as the sum of what its
    readers send back. Where several layers read it, each reader's terms take rows of their
    own, the last of them tagged with the reader, ``(layer 2)``; otherwise the chain form's
    rows."""
    p = printer(d)
    groups = [(r, [term_latex(t, p) for t in terms]) for r, terms in reader_terms(d, number, node)]
    if len(groups) < 2:
        return sum_rows([piece for _, pieces in groups for piece in pieces], width)
    rows: list[Row] = []
    for reader, pieces in groups:
        if not pieces:  # it meets this reader only on its padding
            continue
        tag = rf"\qquad \text{{(layer {reader})}}"
        group = sum_rows(pieces, width - tex_width(tag))
        if rows:
            group[0] = Row(_continued("+ " + group[0].tex), group[0].depth)
        group[-1] = Row(group[-1].tex + tag, group[-1].depth)
        rows += group
    return rows or [Row("0")]


def forked_upstreams(d: Derivation, parameter: str, elements: Sequence[sympy.Symbol]) -> list[tuple[int, int]]:
    """The upstream gradients ∂L/∂a^{(l)}_i that the chain forms of ``elements`` (of
    ``parameter``, layer l's) use, as (l, i - 1), when several layers read layer l's output;
    none otherwise, and none for x (its chain form is its upstream already)."""
    if parameter == "x":
        return []
    number, _ = d.network.parameter_owner[parameter]
    if len(d.network.consumers(number)) < 2:
        return []
    place = {symbol: i for i, symbol in enumerate(d.graph.upstream_of(number))}
    used = dict.fromkeys(t.upstream for element in elements for t in d.terms(element))
    return [(number, place[symbol]) for symbol in used]


def upstream_blocks(d: Derivation, upstreams: Sequence[tuple[int, int]]) -> list[str]:
    """The upstream gradients ``upstreams`` ((l, i - 1) pairs), each as the sum over the layers
    reading layer l (``gathered_rows``), after a line per layer saying which layers read it."""
    blocks = []
    for number in dict.fromkeys(n for n, _ in upstreams):
        readers = d.network.consumers(number)
        said = ", ".join(map(str, readers[:-1])) + f" and {readers[-1]}"
        blocks.append(rf"&\text{{by rule (20), as layers {said} read }} a^{{({number})}}\text{{:}}")
        for n, i in upstreams:
            if n == number:
                symbol, node = d.graph.upstream_of(n)[i], d.graph.outputs_of(n)[i]
                blocks.append(aligned(d.tex_names[symbol], gathered_rows(d, n, node)))
    return blocks


def partial(d: Derivation, symbol: sympy.Symbol) -> str:
    """``\\frac{\\partial L}{\\partial <symbol>}`` in the network's notation."""
    return rf"\frac{{\partial L}}{{\partial {d.tex_names[symbol]}}}"


# ---- closed forms -------------------------------------------------------------------------


@dataclass(frozen=True)
class ClosedForm:
    """A closed form (in x, y and the weights) and its tidied form, as rows — or only its size
    when it is too long to print (``rows`` None)."""

    size: int  # tree nodes; a lower bound when not ``exact``
    exact: bool
    rows: list[Row] | None
    simplified: list[Row] | None  # None when too long or no simpler than ``rows``


def closed_form(d: Derivation, element: sympy.Symbol, width: float = ROW_WIDTH) -> ClosedForm:
    """The closed form of ∂L/∂element, printed when short (``CLOSED_FORM_MAX_*``).

    Every gradient's closed form holds the network's outputs in closed form (the loss's
    derivative is a function of them), so when those alone are too large the closed
    form is not built at all: building it can take sympy minutes."""
    bound = max(_output_sizes(d))
    if bound > CLOSED_FORM_MAX_NODES:
        return ClosedForm(bound, False, None, None)
    chain = d.chain_of(element)
    size = d.closed_size(chain)
    if size > CLOSED_FORM_MAX_NODES:
        return ClosedForm(size, True, None, None)
    expr = d.closed(chain)
    p = printer(d)
    rows = _short(break_expr(expr, p, width))
    simplified = None
    if rows is not None:
        tidied = tidy(expr)
        if tidied != expr:
            simplified = _short(break_expr(tidied, p, width))
    return ClosedForm(size, True, rows, simplified)


def _output_sizes(d: Derivation) -> list[int]:
    """Tree nodes of each output's closed form, counted on the graph without building it."""
    size = dict.fromkeys(d.graph.x, 1)
    for lg in d.graph.layers:
        for z in lg.z:
            # Add(Mul(w, input), ...) + bias (a pool's max or mean: at most as large)
            bias = getattr(z, "bias", None) is not None
            size[z.symbol] = 1 + sum(2 + size[v] for v in z.inputs) + bias
        for a in lg.a:  # the activation applied to it
            size[a.symbol] = size[a.z] + 1
    return [size[node.symbol] for node in d.graph.layers[-1].outputs]


def _short(rows: list[Row] | None) -> list[Row] | None:
    return rows if rows is not None and len(rows) <= CLOSED_FORM_MAX_ROWS else None


# ---- the API behind Derivation.latex, latex_derivation, _repr_latex_ ------------------------


def element_of(d: Derivation, name: str) -> tuple[str, list[sympy.Symbol]]:
    """Parameter ``name`` (``"W1"``, ``"x"``) or one element's code name (``"W1_0_0_1_1"``)
    → (its parameter name, its elements in row-major order)."""
    if name == "x" or name in d.symbols.params:
        array = d.symbols.x if name == "x" else d.symbols.params[name]
        return name, _flat(array)
    parameter = name.split("_")[0]
    for symbol in _flat(d.symbols.params.get(parameter, sympy.Array([]))):
        if symbol.name == name:
            return parameter, [symbol]
    choices = ", ".join(["x", *d.symbols.params])
    raise KeyError(f"no parameter or element {name!r}; choose one of {choices} or an element like W1_0_0_0_0")


def gradient_latex(d: Derivation, name: str, simplify: bool = False) -> str:
    r"""Closed-form ∂L/∂(``name``) in the network's notation: one ``aligned`` row group per
    element, long ones broken over rows. ``name`` is a parameter (``"W1"``), ``"x"`` or an
    element's code name (``"W3_0_0"``).

    >>> import symbackprop as sb
    >>> net = sb.Network((1, 1, 2), [sb.Dense(units=1)], loss="sse")
    >>> print(net.derive().latex("W1_0_0"))
    \begin{aligned}
    \frac{\partial L}{\partial w^{(1)}_{1}} &= x_{1} \left(w^{(1)}_{1} x_{1} + w^{(1)}_{2} x_{2} - y_{1}\right)
    \end{aligned}
    """
    _, elements = element_of(d, name)
    p = printer(d)
    blocks = []
    for element in elements:
        expr = d.closed(d.chain_of(element))
        if simplify:
            expr = tidy(expr)
        rows = break_expr(expr, p) or [Row(p.doprint(expr))]
        blocks.append(aligned(partial(d, element), rows))
    return "\\begin{aligned}\n" + " \\\\\n".join(blocks) + "\n\\end{aligned}"


def derivation_latex(d: Derivation, name: str | None = None) -> str:
    """The step-by-step derivation of ``name`` (a parameter, an element, ``"x"``, or every
    parameter when None): per element its chain form (upstream · local per position), then its
    closed form and simplified form when short enough to print. Where several layers read the
    layer a parameter belongs to (a fork), the upstream gradients its chain forms use follow,
    each the sum of what every reader sends back, reader by reader (the article's rule (20));
    so does x's chain form itself when several layers read x. LaTeX for a math environment."""
    names = list(d.symbols.params) if name is None else [name]
    blocks: list[str] = []
    shown: set[tuple[int, int]] = set()
    for parameter in names:
        owner, elements = element_of(d, parameter)
        for element in elements:
            lhs = partial(d, element)
            rows = gathered_rows(d, 0, element) if owner == "x" else chain_rows(d, element)
            lines = [aligned(lhs, rows)]
            closed = closed_form(d, element)
            if closed.rows is not None:
                lines.append(aligned("", closed.rows))
            if closed.simplified is not None:
                lines.append(aligned("", closed.simplified))
            blocks.append(" \\\\\n".join(lines))
        # the upstream gradients those chain forms use, summed over readers where several read them
        upstreams = [u for u in forked_upstreams(d, owner, elements) if u not in shown]
        shown.update(upstreams)
        blocks += upstream_blocks(d, upstreams)
    return "\\begin{aligned}\n" + " \\\\[1ex]\n".join(blocks) + "\n\\end{aligned}"


def derivation_summary_latex(d: Derivation, limit: int = 12) -> str:
    """What a ``Derivation`` shows in Jupyter: the chain form of the first ``limit`` gradients,
    and, where several layers read a layer they use, the first of its upstream gradients as the
    sum over its readers."""
    elements = [(name, s) for name, array in d.symbols.params.items() for s in _flat(array)]
    blocks = [aligned(partial(d, s), chain_rows(d, s)) for _, s in elements[:limit]]
    more = len(elements) - limit
    if more > 0:
        blocks.append(rf"&\ldots\ \text{{and {more} more}}")
    # a few of the upstream gradients they use, summed over readers where several layers read them
    upstreams = list(dict.fromkeys(u for name, s in elements[:limit] for u in forked_upstreams(d, name, [s])))
    few = max(1, limit // 3)
    blocks += upstream_blocks(d, upstreams[:few])
    if len(upstreams) > few:
        blocks.append(rf"&\ldots\ \text{{and {len(upstreams) - few} more}}")
    return "$$\\begin{aligned}\n" + " \\\\\n".join(blocks) + "\n\\end{aligned}$$"


# ---- reading a LaTeX log ------------------------------------------------------------------------

_ERROR_START = re.compile(r"^(! |.*:\d+: )")  # plain and -file-line-error messages
_OVERFULL = re.compile(r"^Overfull \\hbox \(([\d.]+)pt too wide\)(.*)$", re.MULTILINE)


def latex_errors(log: str, context: int = 6) -> str:
    """The error messages of a LaTeX log, each with the lines that locate it
    (up to its ``l.<line>`` line), instead of the whole log."""
    lines = log.splitlines()
    found: list[str] = []
    for n, line in enumerate(lines):
        if _ERROR_START.match(line) and not line.startswith(("!  ==>", "! Emergency stop")):
            block = [line]
            for following in lines[n + 1 : n + 1 + context]:
                block.append(following)
                if following.startswith("l."):
                    break
            found.append("\n".join(block))
    return "\n".join(found[:3]) if found else "\n".join(lines[-context:])


def overfull_boxes(log: str) -> list[tuple[float, str]]:
    """Every overfull line in a LaTeX log: (how much too wide in pt, where)."""
    return [(float(m.group(1)), m.group(2).strip()) for m in _OVERFULL.finditer(log)]


__all__ = [
    "NotationPrinter",
    "Row",
    "aligned",
    "break_expr",
    "chain_rows",
    "closed_form",
    "derivation_latex",
    "derivation_summary_latex",
    "forked_upstreams",
    "gathered_rows",
    "gradient_latex",
    "latex_errors",
    "overfull_boxes",
    "pack",
    "partial",
    "printer",
    "reader_terms",
    "sum_rows",
    "term_latex",
    "tex_width",
    "upstream_blocks",
]
