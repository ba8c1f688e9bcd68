"""Numeric code from a derivation: one generated Python module, run in-process or written out.

``module_source(d)`` prints the derivation's straight-line program
(``Derivation.program``) as a standalone Python module that needs only numpy;
``numeric(d)`` compiles that same text in memory and ``export_module(d, path)``
writes it to a file, so the two give the same numbers.

Why the generated code looks the way it does:

* The program is printed as it is, one line per node (z, a, L, ∂L/∂a, ∂L/∂z), then
  each gradient as the sum over the positions where its weight was used. It already
  shares its common subexpressions node by node — each ∂L/∂z is computed once and
  reused by every weight and input it reaches — so sympy's ``cse`` is run only on the
  loss and its gradient, where a softmax's partition sum repeats across the outputs
  (``cse`` over the whole program finds nothing more and costs minutes on larger nets).
* One sample runs on python floats with ``math``: for small networks that is far
  faster than numpy calls on tiny arrays. A batch runs the same lines on numpy arrays
  of shape (B,), one per node, so B samples cost one pass through the program, not B.
  Every function the program calls (σ, ReLU, exp, ...) is a small helper printed twice
  from its sympy definition — by sympy's ``math`` printer and by its numpy printer —
  that picks its form by the type of its argument.
* A generic activation g or loss L becomes a run-time choice: the program calls the
  ``g``/``g_prime`` and ``loss_value``/``loss_gradient`` it is given, and the module
  carries one implementation per registered concrete activation and loss. ``g_prime``
  gets the node's a = g(z) besides z, so that σ′ is a(1 − a), as a concrete derivation
  writes it, rather than a second exp.

Imports sympy, numpy, ``activations``, ``losses`` and ``derive`` (for its types).
"""

from __future__ import annotations

import linecache
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import numpy as np
import sympy
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.pycode import PythonCodePrinter

from .activations import ACTIVATIONS, g, g_prime
from .losses import LOSSES, generic_loss_functions
from .nodes import window_max

if TYPE_CHECKING:
    from .derive import Derivation

WIDTH = 100  # the generated module's line length
NumericFunction = Callable[[Any, Any, Mapping[str, Any]], Any]  # (x, y, params) -> Result


# ---- public entry points ----------------------------------------------------------------------


def numeric(d: Derivation, g: str | None = None, loss: str | None = None) -> NumericFunction:
    """``loss_and_grads(x, y, params)`` from the derived program, with the generic activation
    and loss (if the network has them) made concrete by name.

    >>> import numpy as np, symbackprop as sb
    >>> f = sb.presets.article().derive().numeric(g="identity", loss="sse")
    >>> params = {"W1": np.ones((1, 1, 2, 2)), "W2": np.ones((1, 1, 2, 2)), "W3": np.ones((2, 4))}
    >>> out = f(np.full((1, 4, 4), 0.5), np.zeros(2), params)
    >>> out.loss, out.grads["W3"].shape
    (1024.0, (2, 4))
    """
    module = compiled(d)
    module._choose(g, loss)  # a missing or unknown choice fails now, saying how to make it

    def loss_and_grads(x: Any, y: Any, params: Mapping[str, Any]) -> Any:
        return module.loss_and_grads(x, y, params, g=g, loss=loss)

    loss_and_grads.__doc__ = module.loss_and_grads.__doc__
    return loss_and_grads


def export_module(d: Derivation, path: str | Path) -> Path:
    """Write the standalone module (numpy only) to ``path``; returns the path."""
    path = Path(path)
    path.write_text(module_source(d), encoding="utf-8")
    return path


def module_source(d: Derivation) -> str:
    """The text of the standalone module for ``d`` (built once per derivation)."""
    if d not in _SOURCES:
        _SOURCES[d] = _ModuleWriter(d).source()
    return _SOURCES[d]


def compiled(d: Derivation) -> ModuleType:
    """The module of ``module_source(d)``, compiled in memory (once per derivation)."""
    if d not in _MODULES:
        source = module_source(d)
        filename = f"<symbackprop gradients of {d.network.name}>"
        # Registered so that tracebacks through the generated code show its lines.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        module = ModuleType(f"symbackprop_gradients_{d.network.name.replace('-', '_')}")
        # The text is ours, printed from the derivation: no user text is ever evaluated.
        exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102
        _MODULES[d] = module
    return _MODULES[d]


_SOURCES: WeakKeyDictionary = WeakKeyDictionary()
_MODULES: WeakKeyDictionary = WeakKeyDictionary()


# ---- printers ---------------------------------------------------------------------------------


class _ProgramPrinter(PythonCodePrinter):
    """Python arithmetic, with every function application printed as a call by name —
    ``sigmoid(z1_1)``, ``exp(a3_1)`` — to a helper of the module, never ``math.exp``,
    so the same line runs on floats and on arrays."""

    printmethod = ""  # a function must not inline its elementary form here

    def __init__(self, calls: Mapping[type, str], activated: Mapping[sympy.Symbol, sympy.Symbol]):
        super().__init__({"order": "none"})  # terms as stored: no sorting of large sums
        self.calls = dict(calls)  # function class -> the name the program calls it by
        self.activated = activated  # each z node -> its a node
        self.helpers: dict[str, type] = {}  # helpers the printed code needs

    def _print(self, expr: Any, **kwargs: Any) -> str:
        if isinstance(expr, g_prime) and expr.args[0] in self.activated:
            # g′(z) is given a = g(z) too, already computed: σ′ is then a(1 − a), no exp.
            z = expr.args[0]
            return f"g_prime({self._print(z)}, {self._print(self.activated[z])})"
        if isinstance(expr, window_max):
            self.helpers["_max"] = window_max
            return f"_max({', '.join(self._print(arg) for arg in expr.args)})"
        if isinstance(expr, sympy.Function):
            name = self.calls.get(type(expr))
            if name is None:
                name = type(expr).__name__
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


_MAX_HELPER = '''
def _max(*values):
    """A max pool's window: max() of floats, numpy.maximum over arrays (one per sample)."""
    if all(isinstance(v, _NUMBER) for v in values):
        return max(values)
    result = values[0]
    for value in values[1:]:
        result = numpy.maximum(result, value)
    return result
'''


def _helper_source(name: str, function: type) -> str:
    """A helper for a function the program calls: math for a float, numpy for an array."""
    if function is window_max:
        return _MAX_HELPER.strip("\n") + "\n"
    z = sympy.Symbol("z", real=True)
    try:
        scalar = PythonCodePrinter().doprint(function(z))
        array = _ArrayPrinter().doprint(function(z))
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


# ---- the module writer ------------------------------------------------------------------------


class _ModuleWriter:
    """Prints one derivation as the module's sections (see ``source``)."""

    def __init__(self, d: Derivation) -> None:
        self.d = d
        self.network = d.network
        self.graph = d.graph
        self.generic_g = any(layer.activation == "g" for layer in self.network.layers)
        self.generic_loss = self.network.loss_function.generic
        loss_value, loss_gradient = generic_loss_functions(len(self.network.layers))
        self.printer = _ProgramPrinter(
            {g: "g", g_prime: "g_prime", loss_value: "loss_value", loss_gradient: "loss_gradient"},
            {node.z: node.symbol for layer in self.graph.layers for node in layer.a},
        )
        self.outputs = [a.symbol for a in self.graph.layers[-1].a]

    def source(self) -> str:
        # The program and the choices are printed first: they tell which helpers are needed.
        program = self._program()
        choices = self._choices()
        helpers = [_helper_source(n, f) for n, f in sorted(self.printer.helpers.items())]
        parts = [
            self._header(),
            _RUNTIME,
            "# ---- the functions the program calls: math for one sample, numpy for a batch ----",
            *helpers,
            choices,
            program,
        ]
        return "\n\n\n".join(part.strip("\n") for part in parts if part) + "\n"

    # -- header: docstring and the network's shapes

    def _header(self) -> str:
        net = self.network
        shapes = {"x": net.input_shape, **net.parameters}
        lines = [f"input {_shape(net.input_shape)}"]
        for number, (layer, shape) in enumerate(zip(net.layers, net.shapes[1:]), start=1):
            lines.append(f"layer {number}: {layer.describe()} -> {_shape(shape)}")
        lines.append(f"loss: {net.loss}")
        params = ", ".join(f"{n} {s}" for n, s in net.parameters.items())
        choose = []
        if self.generic_g:
            choose.append(f"g=, one of {', '.join(_concrete(ACTIVATIONS))}")
        if self.generic_loss:
            choose.append(f"loss=, one of {', '.join(_concrete(LOSSES))}")
        call = "loss_and_grads(x, y, params"
        call += ', g="sigmoid"' if self.generic_g else ""
        call += ', loss="sse"' if self.generic_loss else ""
        generic_note = ""
        if choose:
            generic_note = (
                "\nThe network leaves its activation g or its loss L generic: choose them by name\n"
                "at run time:\n"
                + "".join(f"    {line}\n" for line in choose)
                + "The program is the same for every choice: only g and g', the loss and its\n"
                "gradient are passed to it.\n"
            )
        docstring = (
            f'"""Loss and gradients of the network "{net.name}", generated by symbackprop: '
            f"needs only numpy.\n\n"
            f"    out = {call})\n"
            "    out.loss          # a float, or shape (B,) for a batch\n"
            '    out.grads["W1"]   # shaped like W1, or (B, *W1.shape) for a batch: per-sample\n'
            '    out.grads["x"]    # the gradient with respect to the input\n\n'
            + "\n".join(f"    {line}" for line in lines)
            + "\n\n"
            f"x: {net.input_shape} or a batch (B, {', '.join(map(str, net.input_shape))}); "
            f"y: ({net.output_size},) or (B, {net.output_size});\n"
            f"params: a dict of arrays, {params}.\n"
            f"{generic_note}\n"
            "How it runs: _program is the derivation written out, one line per node of the\n"
            "computational graph. One sample runs it on python floats (math); a batch runs the\n"
            "same lines on numpy arrays holding one value per sample. Generated code: do not\n"
            "edit; derive again instead.\n"
            '"""'
        )
        constants = (
            "import math\n"
            "from collections.abc import Mapping\n"
            "from typing import Any, NamedTuple\n\n"
            "import numpy\n\n"
            f"INPUT_SHAPE = {net.input_shape!r}\n"
            f"OUTPUT_SIZE = {net.output_size}"
        )
        for constant, table in [("PARAMETERS", net.parameters), ("GRADIENT_SHAPES", shapes)]:
            items = [f"{name!r}: {shape!r}" for name, shape in table.items()]
            constants += "\n" + "\n".join(_wrap_names(items, f"{constant} = {{", "}"))
        return docstring + "\n\n" + constants

    # -- the generic choices

    def _choices(self) -> str:
        parts = ["# ---- choices for the generic activation g and loss L ----"]
        if self.generic_g:
            z, a = sympy.Symbol("z", real=True), sympy.Symbol("a", real=True)
            table = []
            for name in _concrete(ACTIVATIONS):
                act = ACTIVATIONS[name]
                value = act.apply(z)
                if isinstance(value, sympy.Function) and value.args == (z,):
                    g_function = self.printer.doprint(value).split("(")[0]  # a helper: use it
                else:
                    g_function = f"_g_{name}"
                    parts.append(self._function(g_function, ["z"], [value], one=True))
                derivative = act.derivative(z, a)  # written with a where it can (σ′ = a(1 − a))
                parts.append(self._function(f"_g_prime_{name}", ["z", "a"], [derivative], one=True))
                table.append(f'    "{name}": ({g_function}, _g_prime_{name}),')
            parts.append("G_CHOICES = {\n" + "\n".join(table) + "\n}")
        else:
            parts.append("G_CHOICES = None  # the spec fixes every activation")
        if self.generic_loss:
            y = list(self.graph.y)
            last = len(self.network.layers)
            args = [str(s) for s in [*self.outputs, *y]]
            table = []
            for name in _concrete(LOSSES):
                loss = LOSSES[name]
                value = [loss.value(self.outputs, y, last)]
                gradient = loss.gradient(self.outputs, y, last)
                parts.append(self._function(f"_loss_{name}", args, value, one=True))
                parts.append(self._function(f"_loss_gradient_{name}", ["k", *args], gradient))
                table.append(f'    "{name}": (_loss_{name}, _loss_gradient_{name}),')
            parts.append("LOSS_CHOICES = {\n" + "\n".join(table) + "\n}")
        else:
            parts.append("LOSS_CHOICES = None  # the spec fixes the loss")
        return "\n\n\n".join(parts)

    def _function(self, name: str, args: list[str], exprs: list, one: bool = False) -> str:
        """``def name(args)`` returning exprs[0] (``one``) or exprs[k - 1], common parts shared."""
        common, reduced = sympy.cse(exprs, symbols=sympy.numbered_symbols("common_"))
        lines = _wrap_names(args, f"def {name}(", "):")
        for symbol, expr in common:
            lines += _wrap(f"    {symbol} = ", self.printer.doprint(expr))
        if one:
            lines += _wrap("    return ", self.printer.doprint(reduced[0]))
        else:
            lines += _wrap_names(
                [self.printer.doprint(e) for e in reduced], "    return (", ")[k - 1]", tuple_=True
            )
        return "\n".join(lines)

    # -- the program

    def _program(self) -> str:
        d, graph = self.d, self.graph
        program = d.program
        args = ["x", "y", "params"]
        args += ["g", "g_prime"] if self.generic_g else []
        args += ["loss_value", "loss_gradient"] if self.generic_loss else []
        lines = [
            "# ---- the derived program ----",
            "",
            "",
            f"def _program({', '.join(args)}):",
            '    """The derivation, one line per node: forward z and a, the loss L, backward',
            "    dL/da (a sum over the nodes each a feeds) and dL/dz = dL/da * a'(z), then each",
            "    gradient as a sum over the positions where its weight was used. x, y and the",
            "    parameters come flat: python floats for one sample, arrays (B,) for a batch.",
            '    """',
        ]
        lines += _wrap_names([str(s) for s in graph.x], "    ", " = x", tuple_=True)
        lines += _wrap_names([str(s) for s in graph.y], "    ", " = y", tuple_=True)
        for name, symbols in d.symbols.params.items():
            names = [str(s) for s in sympy.flatten(symbols.tolist())]
            lines += _wrap_names(names, "    ", f" = params[{name!r}]", tuple_=True)

        # The loss and its gradient share parts (a softmax's partition sum): cse them.
        loss_part = {program.loss, *graph.layers[-1].upstream}
        loss_symbols = [s for s, _ in program.assignments if s in loss_part]
        common, reduced = sympy.cse(
            [e for s, e in program.assignments if s in loss_part],
            symbols=sympy.numbered_symbols("common_"),
        )
        loss_exprs = dict(zip(loss_symbols, reduced))

        titles = {}
        for layer in graph.layers:
            titles[layer.z[0].symbol] = f"# layer {layer.number} forward: {layer.layer.describe()}"
            titles[layer.upstream[0]] = (
                f"# layer {layer.number} backward: dL/da{layer.number}, "
                f"dL/dz{layer.number} = dL/da{layer.number} * a'(z{layer.number})"
            )
        for symbol, expr in program.assignments:
            if symbol == program.loss:
                lines += ["", f"    # the loss: {self.network.loss}"]
                for temp, temp_expr in common:
                    lines += _wrap(f"    {temp} = ", self.printer.doprint(temp_expr))
            if symbol in titles:
                lines += ["", f"    {titles[symbol]}"]
            lines += _wrap(f"    {symbol} = ", self.printer.doprint(loss_exprs.get(symbol, expr)))

        lines += [
            "",
            "    # the gradients, one after another as in GRADIENT_SHAPES, each flat (row-major)",
            f"    return {program.loss}, (",
        ]
        for name, array in program.gradients.items():
            for index, expr in zip(np.ndindex(*array.shape), sympy.flatten(array.tolist())):
                comment = f",  # {name}[{', '.join(map(str, index))}]"
                lines += _wrap("        ", self.printer.doprint(expr), comment)
        lines.append("    )")
        return "\n".join(lines)


def _concrete(registry: Mapping[str, Any]) -> list[str]:
    return [name for name, entry in registry.items() if not entry.generic]


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


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


# ---- the fixed part of every module: checking arguments, one sample, a batch ------------------

_RUNTIME = '''
_NUMBER = (int, float)  # one sample: the program runs on python floats


class Result(NamedTuple):
    """The loss (a float, or shape (B,) for a batch) and the gradients by name ("x" and each
    parameter), shaped like what they differentiate by, with a leading B for a batch."""

    loss: Any
    grads: dict


def loss_and_grads(x, y, params, *, g=None, loss=None) -> Result:
    """The loss and its gradients at one sample x (C, H, W) or a batch x (B, C, H, W).

    y is (K,) or (B, K); params maps each name of PARAMETERS to an array of that shape.
    For a batch, every gradient is per sample: shape (B, *shape). g= and loss= choose the
    generic activation and loss by name when the network leaves them generic.
    """
    chosen = _choose(g, loss)
    x, y, flat = _checked(x, y, params)
    if x.ndim == len(INPUT_SHAPE):
        return _one_sample(x, y, flat, chosen)
    return _batch(x, y, flat, chosen)


def _one_sample(x, y, flat, chosen):
    try:
        loss, grads = _program(x.ravel().tolist(), y.tolist(), flat, *chosen)
    except (ArithmeticError, ValueError):
        # math raises where numpy gives inf or nan (an exp that overflows, a log of 0):
        # run the numpy form, as a batch of one, so that both forms give the same answer.
        batch = _batch(x[None], y[None], flat, chosen)
        return Result(float(batch.loss[0]), {n: v[0] for n, v in batch.grads.items()})
    values = numpy.array(grads, dtype=float)
    return Result(float(loss), {n: values[a:b].reshape(s) for n, (a, b, s) in _SPANS.items()})


def _batch(x, y, flat, chosen):
    size = len(x)
    # One contiguous row of B values per input node: the program unpacks the rows.
    columns = numpy.ascontiguousarray(x.reshape(size, -1).T)
    loss, grads = _program(columns, numpy.ascontiguousarray(y.T), flat, *chosen)
    rows = _rows(grads, size)
    return Result(
        _rows([loss], size)[0],
        {n: rows[a:b].T.reshape(size, *s) for n, (a, b, s) in _SPANS.items()},
    )


def _spans():
    """name -> (start, stop, shape): where each gradient sits in the program's flat result."""
    spans, start = {}, 0
    for name, shape in GRADIENT_SHAPES.items():
        spans[name] = (start, start + math.prod(shape), shape)
        start += math.prod(shape)
    return spans


_SPANS = _spans()


def _rows(values, size):
    """Node values (arrays of shape (B,), or a constant where a node does not depend on the
    sample) as one array of shape (len(values), B)."""
    rows = numpy.empty((len(values), size))
    for i, value in enumerate(values):
        rows[i] = value
    return rows


def _checked(x, y, params):
    """x and y as float arrays and each parameter as a flat list of floats; a ValueError
    naming what is wrong and the shape expected otherwise."""
    x = _numbers("x", x)
    if x.shape == INPUT_SHAPE:
        y_shape = (OUTPUT_SIZE,)
    elif x.ndim == len(INPUT_SHAPE) + 1 and x.shape[1:] == INPUT_SHAPE:
        y_shape = (x.shape[0], OUTPUT_SIZE)
    else:
        raise ValueError(
            f"x has shape {x.shape}; expected {INPUT_SHAPE} for one sample "
            f"or (B, {', '.join(map(str, INPUT_SHAPE))}) for a batch"
        )
    y = _numbers("y", y)
    if y.shape != y_shape:
        raise ValueError(
            f"y has shape {y.shape}; expected {y_shape} to go with x of shape {x.shape}"
        )
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params must be a dict of arrays ({_expected()}), got {type(params).__name__}"
        )
    if params.keys() != PARAMETERS.keys():
        for name in params:
            if name not in PARAMETERS:
                raise ValueError(
                    f"params has {name!r}, which this network does not have; "
                    f"expected {_expected()}"
                )
        missing = next(name for name in PARAMETERS if name not in params)
        raise ValueError(
            f"params is missing {missing!r} of shape {PARAMETERS[missing]}; "
            f"expected {_expected()}"
        )
    flat = {}
    for name, shape in PARAMETERS.items():
        value = _numbers(name, params[name])
        if value.shape != shape:
            raise ValueError(f"params[{name!r}] has shape {value.shape}; expected {shape}")
        flat[name] = value.ravel().tolist()
        _require_finite(name, flat[name])
    _require_finite("x", x)
    _require_finite("y", y)
    return x, y, flat


def _expected():
    return ", ".join(f"{name} {shape}" for name, shape in PARAMETERS.items())


def _label(what):
    return what if what in ("x", "y") else f"params[{what!r}]"


def _numbers(what, value):
    try:
        return numpy.asarray(value, dtype=float)
    except (TypeError, ValueError):
        message = f"{_label(what)} must be an array of numbers, got {type(value).__name__}"
        raise ValueError(message) from None


def _require_finite(what, values):
    # A sum is finite when every value is: the quickest test on a few values. Huge values
    # can overflow it, so each value is looked at before they are called non-finite.
    if isinstance(values, list):
        if math.isfinite(sum(values)) or all(map(math.isfinite, values)):
            return
    elif values.size <= 256 and math.isfinite(sum(values.ravel().tolist())):
        return
    elif numpy.isfinite(values).all():
        return
    raise ValueError(f"{_label(what)} has non-finite values (nan or inf); all must be finite")


def _choose(g, loss):
    """The functions the program takes for the generic g and loss, in its argument order."""
    return _pick("g", g, G_CHOICES, "activation g") + _pick("loss", loss, LOSS_CHOICES, "loss L")


def _pick(keyword, name, choices, what):
    if choices is None:
        if name is not None:
            raise ValueError(
                f"{keyword}={name!r}: this network has no generic {what}; its spec fixes it"
            )
        return ()
    if name is None:
        raise ValueError(
            f"this network leaves its {what} generic; choose one for numbers with "
            f"{keyword}=..., one of {', '.join(choices)} (e.g. {keyword}={next(iter(choices))!r})"
        )
    if name not in choices:
        raise ValueError(
            f"{keyword}={name!r} is not a known {what}; choose one of {', '.join(choices)}"
        )
    return choices[name]
'''
