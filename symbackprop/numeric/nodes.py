"""The per-node program (``style="nodes"``): the derivation's straight-line program printed as
it is, one line per node of the scalar graph.

Why it looks the way it does:

* ``Derivation.program`` already shares its common subexpressions node by node — each ∂L/∂z
  is computed once and reused by every weight and input it reaches — so it is printed as
  it is: forward z and a, the loss, backward ∂L/∂a and ∂L/∂z per layer, then each gradient
  as the sum over the positions where its weight was used.
* The loss and its gradient are calls to the runtime's losses (``loss_value``,
  ``loss_gradient``) on the list of outputs: a cross-entropy then goes through log-sum-exp,
  finite for any logits, and a generic L is just another choice of those two functions.
* One sample runs on python floats, a batch on numpy arrays (B,) — one per node — so B
  samples cost one pass through the program. Every function the program calls (σ, ReLU,
  the max of a pooling window, …) works on both: the runtime's own where it has one
  (numerically stable forms), else a helper printed twice from its sympy definition, by
  sympy's ``math`` printer and by its numpy printer.
* A generic activation g becomes the run-time choice of ``g`` and ``g_prime``; ``g_prime``
  gets the node's a = g(z) besides z, so that σ′ is a(1 − a) rather than a second exp.

Its size grows with the graph (pixels × kernel), so it is for small networks; see
``symbackprop.numeric`` for the per-layer code and the choice between the two.

Imports sympy, numpy, ``activations``, ``nodes`` (the max) and, for its types, ``derive``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.pycode import PythonCodePrinter

from ..activations import g, g_prime
from ..nodes import window_max
from .embed import runtime_names

if TYPE_CHECKING:
    from ..engine import Engine as Derivation

WIDTH = 100  # the generated module's line length
PROGRAM = "_nodes"  # the name of the printed function


# ---- printers ---------------------------------------------------------------------------------


class _ProgramPrinter(PythonCodePrinter):
    """Python arithmetic, with every function application printed as a call by name —
    ``sigmoid(z1_1)``, ``_max(a1_1, a1_2)`` — to a helper of the module, never ``math.exp``,
    so the same line runs on floats and on arrays."""

    printmethod = ""  # a function must not inline its elementary form here

    def __init__(self, activated: Mapping[sympy.Symbol, sympy.Symbol], arrays: bool = False):
        super().__init__({"order": "none"})  # terms as stored: no sorting of large sums
        self.activated = activated  # each z node -> its a node
        self.helpers: dict[str, type] = {}  # helpers printed from sympy the code needs
        self.arrays = arrays  # every node an array, never a python float (off float64)

    def _print_Pow(self, expr: sympy.Pow, rational: bool = False) -> str:
        # math.sqrt takes floats only (batch normalisation's sqrt(var + eps)); on arrays,
        # numpy's, which keeps their dtype
        return self._hprint_Pow(expr, rational=rational, sqrt="numpy.sqrt" if self.arrays else "math.sqrt")

    def _print(self, expr: Any, **kwargs: Any) -> str:
        if isinstance(expr, g_prime):
            # g′(z) is given a = g(z) too, already computed where a node holds it: σ′ is then
            # a(1 − a), no exp. An activation layer g reads its input, which no a = g(z) node
            # pairs with: g of it is computed again.
            z = expr.args[0]
            a = self._print(self.activated[z]) if z in self.activated else f"g({self._print(z)})"
            return f"g_prime({self._print(z)}, {a})"
        if isinstance(expr, window_max):
            return f"_max({', '.join(self._print(arg) for arg in expr.args)})"
        if isinstance(expr, g):
            return f"g({self._print(expr.args[0])})"
        if isinstance(expr, sympy.Function):
            name = type(expr).__name__
            if name not in runtime_names():
                if len(expr.args) != 1:
                    raise NotImplementedError(
                        f"{expr}: only functions of one argument become numeric helpers"
                    )
                self.helpers[name] = type(expr)
            return f"{name}({', '.join(self._print(arg) for arg in expr.args)})"
        return super()._print(expr, **kwargs)


class _ArrayPrinter(NumPyPrinter):
    """sympy's numpy printer with elementwise forms that are fast on arrays."""

    def _print_Max(self, expr: sympy.Max) -> str:  # not functools.reduce over a list
        return self._fold("numpy.maximum", expr.args)

    def _print_Min(self, expr: sympy.Min) -> str:
        return self._fold("numpy.minimum", expr.args)

    def _fold(self, function: str, args: tuple) -> str:
        text = self._print(args[0])
        for arg in args[1:]:
            text = f"{function}({text}, {self._print(arg)})"
        return text

    def _print_Piecewise(self, expr: sympy.Piecewise) -> str:  # nested where, not select
        *pieces, (otherwise, condition) = expr.args
        if condition != sympy.true:
            return super()._print_Piecewise(expr)
        text = self._print(otherwise)
        for value, condition in reversed(pieces):
            text = f"numpy.where({self._print(condition)}, {self._print(value)}, {text})"
        return text

    def _print_Pow(self, expr: sympy.Pow, rational: bool = False) -> str:
        if expr.exp == -1:  # a division, not numpy's slower power
            return f"1/({self._print(expr.base)})"
        return super()._print_Pow(expr, rational=rational)


def _helper_source(name: str, function: type, dtype: str = "float64") -> str:
    """A helper for a function the program calls: math for a float, numpy for an array — in
    the array's dtype off float64 (sympy prints a step's 0 and 1 as integers, which numpy
    would make an int64 array, and an int64 array times a float32 one is float64)."""
    z = sympy.Symbol("z", real=True)
    try:
        scalar = PythonCodePrinter().doprint(function(z))
        array = _ArrayPrinter().doprint(function(z))
        if dtype != "float64":
            array = f"numpy.asarray({array}, z.dtype)"
    except sympy.printing.codeprinter.PrintMethodNotImplementedError as error:
        raise NotImplementedError(
            f"{name} has no numeric form; give its sympy class an elementary form "
            f"(see symbackprop.activations): {error}"
        ) from None
    return (
        f"def {name}(z):\n"
        f"    if isinstance(z, _NUMBER):\n"
        f"        return {scalar}\n"
        f"    return {array}\n"
    )


# ---- the program ------------------------------------------------------------------------------


def program_source(d: Derivation, dtype: str = "float64") -> str:
    """``def _nodes(x, y, params, [g, g_prime,] loss_value, loss_gradient)``: the derivation,
    one line per node, and the helpers printed from sympy that it calls (keeping an array's
    ``dtype``)."""
    graph, program = d.graph, d.program
    generic_g = d.network.generic_activation
    activated = {node.z: node.symbol for layer in graph.layers for node in layer.a}
    printer = _ProgramPrinter(activated, arrays=dtype != "float64")
    args = ["x", "y", "params", *(["g", "g_prime"] if generic_g else []), "loss_value", "loss_gradient"]
    lines = [
        f"def {PROGRAM}({', '.join(args)}):",
        '    """The derivation, one line per node: forward z and a, the loss L, backward dL/da',
        "    (a sum over the nodes each a feeds) and dL/dz = dL/da * a'(z), then each gradient",
        "    as a sum over the positions where its weight was used. x, y and the parameters",
        "    come flat: python floats for one sample, arrays (B,) for a batch.",
        '    """',
    ]
    lines += _wrap_names([str(s) for s in graph.x], "    ", " = x", tuple_=True)
    lines += _wrap_names([str(s) for s in graph.y], "    ", " = y", tuple_=True)
    for name, symbols in [*d.symbols.params.items(), *d.graph.buffers.items()]:  # weights, statistics
        names = [str(s) for s in sympy.flatten(symbols.tolist())]
        lines += _wrap_names(names, "    ", f" = params[{name!r}]", tuple_=True)

    last = graph.layers[-1]
    loss_part = {program.loss, *last.upstream}  # printed as calls to the runtime's losses
    titles = {}
    for layer in graph.layers:
        titles[layer.z[0].symbol] = f"# layer {layer.number} forward: {layer.layer.describe()}"
        titles[layer.upstream[0]] = (
            f"# layer {layer.number} backward: dL/da{layer.number}, "
            f"dL/dz{layer.number} = dL/da{layer.number} * a'(z{layer.number})"
        )
    for symbol, expr in program.assignments:
        if symbol == program.loss:
            outputs = [str(node.symbol) for node in last.outputs]
            lines += ["", f"    # the loss: {d.network.loss}, and dL/da{last.number}"]
            lines += _wrap_names(outputs, "    out = [", "]")
            lines += _wrap_names([str(s) for s in graph.y], "    targets = [", "]")
            channels = d.network.shapes[-1][0]  # a map's softmax runs pixel by pixel
            lines.append(f"    {symbol} = loss_value(out, targets, {channels})")
            lines += _wrap_names(
                [str(s) for s in last.upstream], "    ", f" = loss_gradient(out, targets, {channels})", True
            )
            continue
        if symbol in loss_part:
            continue
        if symbol in titles:
            lines += ["", f"    {titles[symbol]}"]
        lines += _wrap(f"    {symbol} = ", printer.doprint(expr))

    lines += [
        "",
        "    # the gradients, x then each parameter, each flat (row-major)",
        f"    return {program.loss}, (",
    ]
    for name, array in program.gradients.items():
        for index, expr in zip(np.ndindex(*array.shape), sympy.flatten(array.tolist())):
            comment = f",  # {name}[{', '.join(map(str, index))}]"
            lines += _wrap("        ", printer.doprint(expr), comment)
    lines.append("    )")
    helpers = [_helper_source(n, f, dtype) for n, f in sorted(printer.helpers.items())]
    return "\n\n\n".join(["\n".join(lines), *[h.rstrip("\n") for h in helpers]])


# ---- line wrapping ----------------------------------------------------------------------------


def _wrap(head: str, text: str, tail: str = "") -> list[str]:
    """``head + text + tail``, as lines of at most WIDTH: a long sum is broken between terms
    inside parentheses."""
    if len(head) + len(text) + len(tail) <= WIDTH:
        return [head + text + tail]
    terms = _terms(text)
    indent = head[: len(head) - len(head.lstrip())]
    inner = indent + "    "
    lines = [f"{head}("]
    current = inner + terms[0]
    for term in terms[1:]:
        if len(current) + 1 + len(term) > WIDTH:
            lines.append(current)
            current = inner + term
        else:
            current += " " + term
    lines += [current, f"{indent}){tail}"]
    return lines


_TOKENS = re.compile(r" [+-] |[()\[\]{}]")


def _terms(text: str) -> list[str]:
    """The top-level terms of a printed sum, each but the first with its sign: a*b, + c, - d."""
    terms, start, depth = [], 0, 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "([{":
            depth += 1
        elif token in ")]}":
            depth -= 1
        elif depth == 0:
            terms.append(text[start : match.start()])
            start = match.start() + 1
    terms.append(text[start:])
    return terms


def _wrap_names(names: Iterable[str], head: str, tail: str, tuple_: bool = False) -> list[str]:
    """``head + "a, b, c" + tail``, broken into lines of at most WIDTH between brackets:
    those ``head`` opens and ``tail`` closes, or parentheses of its own.

    ``tuple_``: the names make a tuple (an assignment target, a tuple to index), so a
    single name gets its trailing comma.
    """
    names = list(names)
    joined = ", ".join(names) + ("," if tuple_ and len(names) == 1 else "")
    if len(head) + len(joined) + len(tail) <= WIDTH:
        return [head + joined + tail]
    outer = head[: len(head) - len(head.lstrip())]
    inner = outer + "    "
    opens = head.endswith(("(", "[", "{"))  # head opens the brackets; tail closes them
    lines = [head if opens else head + "("]
    current = ""
    for name in names:
        if current and len(current) + len(name) + 2 > WIDTH:
            lines.append(current)
            current = ""
        current = f"{current} {name}," if current else f"{inner}{name},"
    lines += [current, outer + (tail if opens else ")" + tail)]
    return lines
