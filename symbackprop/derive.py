"""Reverse mode over the scalar computational graph — this project's engine.

``Derivation(network)`` walks the graph once, from the loss back to the input:

* the upstream gradient of every activation a_i is the sum of the downstream
  gradients from every z node it feeds (the article's formulas 12 and 17);
* a z node's local gradients are read off its weighted sum — ∂z/∂input is the
  weight, ∂z/∂w is the input, ∂z/∂b is 1 — and an a node's is its activation's
  own derivative; no ``sympy.diff`` of the network is ever taken;
* a shared weight's gradient sums one term per position where it was used
  (formulas 13 and 18).

The result is kept in the article's chain form, over the intermediate symbols
z, a and ∂L/∂a. Closed forms in x, y and the weights are built from it on
request, by substituting each intermediate symbol's own closed form, once.

Imports ``network`` (and what it builds on) and ``simplify``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from types import SimpleNamespace
from typing import NamedTuple

import sympy

from .network import Graph, Network
from .simplify import tidy


class Term(NamedTuple):
    """One downstream contribution, upstream × local × factor, as the article writes it:
    ∂L/∂a_i · g′(z_i) · (the input or the weight that z_i multiplied)."""

    upstream: sympy.Symbol  # ∂L/∂a_i of the consuming node
    local: sympy.Expr  # da_i/dz_i, the activation's derivative at z_i
    factor: sympy.Expr  # ∂z_i/∂(this node): the weight, the input, or 1 for a bias
    z: sympy.Symbol  # the consuming z node

    @property
    def expr(self) -> sympy.Expr:
        return self.upstream * self.local * self.factor


@dataclass(frozen=True)
class NodeGradient:
    """One node of the graph during backpropagation (the article's appendix 2).

    ``upstream`` is ∂L/∂node in chain form; for an a node it is the sum of the
    downstream gradients it received, also named by ``upstream_symbol``.
    ``local`` and ``downstream`` map each input of the node to ∂node/∂input and
    to upstream × local (written with ``upstream_symbol`` where there is one).
    """

    node: sympy.Symbol
    kind: str  # "loss", "a", "z" or "x"
    layer: int | None
    upstream_symbol: sympy.Symbol | None
    upstream: sympy.Expr
    local: dict[sympy.Symbol, sympy.Expr]
    downstream: dict[sympy.Symbol, sympy.Expr]


LOSS = sympy.Symbol("L", real=True)


@dataclass(frozen=True)
class Program:
    """The derivation as straight-line code: ``assignments`` in evaluation order
    (forward z and a, the loss L, then backward ∂L/∂a and ∂L/∂z per layer from the last),
    each over the inputs x, targets y, parameters and earlier assigned symbols.
    ``gradients`` maps "x" and each parameter name to the array of its gradient
    expressions over the same symbols.
    """

    assignments: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    loss: sympy.Symbol
    gradients: dict[str, sympy.Array]


class Derivation:
    """Every ∂L/∂w of a network, in chain form and (on request) closed form.

    >>> import symbackprop as sb
    >>> d = sb.presets.article().derive()
    >>> d.chain("W3")[1, 0]
    a2_1*dL_da3_2*g_prime(z3_2)
    """

    def __init__(self, network: Network) -> None:
        self.network = network
        self.graph: Graph = network.graph
        g = self.graph
        self.symbols = SimpleNamespace(
            x=sympy.Array(list(g.x), network.input_shape),
            y=sympy.Array(list(g.y), (len(g.y),)),
            params=dict(g.params),
        )
        self.tex_names: dict[sympy.Symbol, str] = dict(g.names.tex)
        self.tex_names[LOSS] = "L"
        self._backpropagate()

    # ---- the engine -------------------------------------------------------------------

    def _backpropagate(self) -> None:
        g = self.graph
        # ∂L/∂a of the last layer: where the loss starts the backward pass.
        self.upstream_formula: dict[sympy.Symbol, sympy.Expr] = dict(
            zip(g.layers[-1].upstream, g.loss_gradient)
        )
        self.upstream_terms: dict[sympy.Symbol, list[Term]] = {}
        self.local: dict[sympy.Symbol, sympy.Expr] = {}  # z → da/dz
        self.parameter_terms: dict[sympy.Symbol, list[Term]] = defaultdict(list)
        self.input_terms: dict[sympy.Symbol, list[Term]] = defaultdict(list)
        for layer in reversed(g.layers):
            feeds: dict[sympy.Symbol, list[Term]] = defaultdict(list)
            for z, a, upstream in zip(layer.z, layer.a, layer.upstream):
                local = a.activation.derivative(z.symbol, a.symbol)
                self.local[z.symbol] = local
                for weight, source in z.terms:
                    self.parameter_terms[weight].append(Term(upstream, local, source, z.symbol))
                    feeds[source].append(Term(upstream, local, weight, z.symbol))
                if z.bias is not None:
                    self.parameter_terms[z.bias].append(Term(upstream, local, sympy.S.One, z.symbol))
            if layer.number == 1:
                self.input_terms = feeds
            else:
                previous = g.layers[layer.number - 2]
                for a, upstream in zip(previous.a, previous.upstream):
                    terms = feeds.get(a.symbol, [])
                    self.upstream_terms[upstream] = terms
                    self.upstream_formula[upstream] = sympy.Add(*[t.expr for t in terms])

    # ---- chain form -------------------------------------------------------------------

    def _array(self, name: str, values: dict[sympy.Symbol, sympy.Expr]) -> sympy.Array:
        symbols = self._symbols_of(name)
        return sympy.Array([values[s] for s in _flat(symbols)], symbols.shape)

    def _symbols_of(self, name: str) -> sympy.Array:
        if name == "x":
            return self.symbols.x
        if name not in self.symbols.params:
            choices = ", ".join(["x", *self.symbols.params])
            raise KeyError(f"no parameter {name!r}; choose one of {choices}")
        return self.symbols.params[name]

    def terms(self, element: sympy.Symbol) -> list[Term]:
        """The terms of ∂L/∂element, one per position where it was used (a weight, bias or x_i)."""
        if element in self.parameter_terms:
            return list(self.parameter_terms[element])
        if element in self.input_terms:
            return list(self.input_terms[element])
        if element in self._leaves:  # used nowhere: every position it met was padding
            return []
        raise KeyError(f"{element} is not a parameter or input of this network")

    @cached_property
    def _leaves(self) -> set[sympy.Symbol]:
        return {s for array in self.symbols.params.values() for s in _flat(array)} | set(self.graph.x)

    @cached_property
    def _chain(self) -> dict[sympy.Symbol, sympy.Expr]:
        elements = [s for array in self.symbols.params.values() for s in _flat(array)]
        elements += list(self.graph.x)
        return {s: sympy.Add(*[t.expr for t in self.terms(s)]) for s in elements}

    def chain_of(self, element: sympy.Symbol) -> sympy.Expr:
        """∂L/∂element (one weight, bias or x_i) in chain form."""
        if element not in self._chain:
            raise KeyError(f"{element} is not a parameter or input of this network")
        return self._chain[element]

    def chain(self, name: str) -> sympy.Array:
        """∂L/∂(parameter ``name`` or ``"x"``) in the article's chain form:
        Σ over positions of ∂L/∂a_i · g′(z_i) · input, shaped like the parameter."""
        return self._array(name, self._chain)

    # ---- nodes ------------------------------------------------------------------------

    @cached_property
    def nodes(self) -> list[NodeGradient]:
        """Every node — L, then each layer's a and z from the last, then x — in backward order."""
        g = self.graph
        outputs = [a.symbol for a in g.layers[-1].a]
        result = [
            NodeGradient(LOSS, "loss", None, None, sympy.S.One, dict(zip(outputs, g.loss_gradient)),
                         dict(zip(outputs, g.loss_gradient)))
        ]
        for layer in reversed(g.layers):
            for a, upstream in zip(layer.a, layer.upstream):
                local = self.local[a.z]
                result.append(NodeGradient(
                    a.symbol, "a", layer.number, upstream, self.upstream_formula[upstream],
                    {a.z: local}, {a.z: upstream * local},
                ))
            for z, upstream in zip(layer.z, layer.upstream):
                dz = upstream * self.local[z.symbol]
                local = {}
                for weight, source in z.terms:
                    local[source] = weight
                    local[weight] = source
                if z.bias is not None:
                    local[z.bias] = sympy.S.One
                result.append(NodeGradient(
                    z.symbol, "z", layer.number, None, dz, local,
                    {s: dz * v for s, v in local.items()},
                ))
        for x in g.x:
            result.append(NodeGradient(x, "x", None, None, self._chain[x], {}, {}))
        return result

    def upstream(self, symbol: sympy.Symbol) -> sympy.Expr:
        """The formula of an upstream-gradient symbol ∂L/∂a_i (the article's 12 and 17)."""
        return self.upstream_formula[symbol]

    # ---- straight-line program ----------------------------------------------------------

    @cached_property
    def program(self) -> Program:
        """The per-node program, for numeric code: ∂L/∂z_i = ∂L/∂a_i · a′(z_i) is computed
        once per node and reused by every weight and input it reaches."""
        g = self.graph
        assignments: list[tuple[sympy.Symbol, sympy.Expr]] = []
        for layer in g.layers:
            for z, a in zip(layer.z, layer.a):
                assignments += [(z.symbol, z.expr), (a.symbol, a.expr)]
        assignments.append((LOSS, g.loss))
        dz_of: dict[sympy.Symbol, sympy.Symbol] = {}
        for layer in reversed(g.layers):
            for z, upstream, dz in zip(layer.z, layer.upstream, layer.z_upstream):
                if layer.number == len(g.layers):
                    assignments.append((upstream, self.upstream_formula[upstream]))
                assignments.append((dz, upstream * self.local[z.symbol]))
                dz_of[z.symbol] = dz
            if layer.number > 1:
                for upstream in g.layers[layer.number - 2].upstream:
                    total = sympy.Add(*[dz_of[t.z] * t.factor for t in self.upstream_terms[upstream]])
                    assignments.append((upstream, total))

        def gradient(element: sympy.Symbol) -> sympy.Expr:
            return sympy.Add(*[dz_of[t.z] * t.factor for t in self.terms(element)])

        names = ["x", *self.symbols.params]
        gradients = {
            name: sympy.Array([gradient(s) for s in _flat(self._symbols_of(name))],
                              self._symbols_of(name).shape)
            for name in names
        }
        return Program(tuple(assignments), LOSS, gradients)

    # ---- closed forms -----------------------------------------------------------------

    @cached_property
    def _closed(self) -> dict[sympy.Symbol, sympy.Expr]:
        """Every intermediate symbol (z, a, ∂L/∂a) → its closed form in x, y and the weights.

        Built once, in graph order, so each closed form reuses the ones before it
        (shared in memory, never expanded)."""
        closed: dict[sympy.Symbol, sympy.Expr] = {}
        for layer in self.graph.layers:
            for z, a in zip(layer.z, layer.a):
                closed[z.symbol] = substitute(z.expr, closed)
                closed[a.symbol] = substitute(a.expr, closed)
        for layer in reversed(self.graph.layers):
            for upstream in layer.upstream:
                closed[upstream] = substitute(self.upstream_formula[upstream], closed)
        return closed

    def closed(self, expr: sympy.Expr) -> sympy.Expr:
        """``expr`` (in program symbols z, a, ∂L/∂a) written in x, y and the weights."""
        return substitute(expr, self._closed)

    def closed_size(self, expr: sympy.Expr) -> int:
        """Tree nodes of ``closed(expr)`` written out; cheap to ask for every element in turn."""
        return expression_size(self.closed(expr), self._sizes)

    @cached_property
    def _sizes(self) -> dict[sympy.Basic, int]:
        return {}

    @cached_property
    def loss(self) -> sympy.Expr:
        """The closed-form loss L in x, y and the weights."""
        return self.closed(self.graph.loss)

    def gradient(self, name: str, simplify: bool = False) -> sympy.Array:
        """Closed-form ∂L/∂(parameter ``name`` or ``"x"``), shaped like it.

        ``simplify=True`` tidies each element with bounded rewrites
        (``symbackprop.simplify.tidy``); an element too large to tidy quickly is
        returned as it is.
        """
        chain = self.chain(name)
        closed = [self.closed(e) for e in _flat(chain)]
        if simplify:
            closed = [tidy(e) for e in closed]
        return sympy.Array(closed, chain.shape)

    # ---- numbers (symbackprop.numeric builds on this module, so it is imported late) --------

    def numeric(self, g: str | None = None, loss: str | None = None):
        """Fast ``loss_and_grads(x, y, params)`` from the program, generic g/loss chosen by
        name; see ``symbackprop.numeric.numeric``."""
        from .numeric import numeric

        return numeric(self, g=g, loss=loss)

    def export_module(self, path):
        """Write the standalone numpy module with ``loss_and_grads``; returns its path."""
        from .numeric import export_module

        return export_module(self, path)

    # ---- printing (symbackprop.latex builds on this module, so it is imported late) --------

    def latex(self, name: str, simplify: bool = False) -> str:
        """The LaTeX of closed-form ∂L/∂(parameter ``name``), in the network's notation."""
        from .latex import gradient_latex

        return gradient_latex(self, name, simplify=simplify)

    def latex_derivation(self, name: str | None = None) -> str:
        """The step-by-step derivation of ``name`` (every parameter when None) as LaTeX."""
        from .latex import derivation_latex

        return derivation_latex(self, name)

    def _repr_latex_(self) -> str:
        from .latex import derivation_summary_latex

        return derivation_summary_latex(self)


def substitute(expr: sympy.Basic, mapping: dict[sympy.Symbol, sympy.Expr]) -> sympy.Basic:
    """``expr.xreplace(mapping)``, without letting sympy evaluate functions of the result.

    Sums, products and powers are still flattened and ordered as usual, but
    function applications (exp, tanh, g, …) are rebuilt unevaluated: evaluating
    exp of a closed form asks assumptions of the whole tree at every node — minutes
    for a two-conv network — and finds nothing to do, since each formula
    substituted here is already in its final form over its own symbols.
    """

    def rebuild(e: sympy.Basic) -> sympy.Basic:
        if e in mapping:
            return mapping[e]
        if not e.args:
            return e
        args = [rebuild(a) for a in e.args]
        if all(new is old for new, old in zip(args, e.args)):
            return e
        if isinstance(e, sympy.Function):
            return e.func(*args, evaluate=False)
        return e.func(*args)

    return rebuild(expr)


def _flat(array: sympy.Array) -> list:
    """The elements of a sympy Array in row-major order (PyTorch's flattening)."""
    return list(sympy.flatten(array.tolist())) if array.rank() else [array[()]]


def expression_size(expr: sympy.Basic, memo: dict[sympy.Basic, int] | None = None) -> int:
    """The number of nodes in ``expr`` written out as a tree — counted without writing it out.

    Each shared subexpression is counted once and remembered in ``memo``; pass the same
    memo to size many closed forms of one network in time linear in what they share."""
    memo = {} if memo is None else memo
    stack = [expr]
    while stack:  # iterative post-order: closed forms can nest deeper than Python's stack
        e = stack[-1]
        if e in memo:
            stack.pop()
            continue
        pending = [a for a in e.args if a not in memo]
        if pending:
            stack.extend(pending)
        else:
            memo[e] = 1 + sum(memo[a] for a in e.args)
            stack.pop()
    return memo[expr]
