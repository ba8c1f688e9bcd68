"""Reverse mode over the scalar computational graph — this project's engine.

``Engine(network)`` walks the graph from the loss back to the input, a layer at a
time, when a result first needs that layer:

* the upstream gradient of every output a_i is the sum of the downstream gradients from
  every node it feeds (the article's formulas 12 and 17);
* every node says its own local gradients (``symbackprop.nodes``): a weighted sum its
  coefficients and inputs, a max its first-maximum brackets, an activation its
  derivative; no ``sympy.diff`` of the network is ever taken;
* a shared weight's gradient sums one term per position where it was used
  (formulas 13 and 18).

The result is kept in the article's chain form, over the intermediate symbols
z, a and ∂L/∂a. Closed forms in x, y and the weights are built from it on
request, by substituting each intermediate symbol's own closed form, once.

Imports ``network`` (and what it builds on), ``errors`` and ``simplify``; nothing it
exports: those build on it (``symbackprop.derivation`` gathers them).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from types import SimpleNamespace
from typing import Any, NamedTuple

import sympy

from .errors import OverBudget, capped, count, duration
from .errors import size as size_text
from .graph import Graph, LayerGraph
from .network import Network
from .nodes import weighted_size
from .ops.base import as_int
from .simplify import MAX_SIZE, SimplifyWarning, small_enough, tidy

# The most closed-form tree nodes ``gradient`` and ``loss`` build unless told otherwise. sympy
# holds a closed form's shared parts once, so its tree size is not its memory: a 1x7x7 net
# with two 2x2 convolutions has a W1 of 64 million tree nodes, built in 0.2 s, and the tests
# evaluate forms of millions of nodes, walking them as the graphs they are. Past a billion,
# though, building takes minutes (one element of LeNet-5's W7, 8.6e12 nodes, was not built
# after ten) and only such a walk can use the result: the chain form and the numeric code
# serve better.
MAX_CLOSED_SIZE = 10**9
# The most tree nodes ``latex`` prints unless told otherwise: printing takes each node in
# turn (one element of 1,048,521 nodes: 38 s and 16 MB of LaTeX; the article's W1, 111,000
# in all: 0.7 s).
MAX_PRINTED_SIZE = 10**6
# Sizing closed forms walks the whole scalar graph: past this many edges (the command line's
# --max-edges default) ``gradient``, ``loss`` and ``latex`` refuse before building it, as the
# commands do (the README's 3x64x64 network, 12 million edges, would take an hour and 19 GB).
MAX_GRAPH_EDGES = 10**6
# Per edge, measured on LeNet-5 (423k edges) with 2 cores: building the graph and its backward
# pass (``budget`` estimates the commands' work with them too).
GRAPH_SECONDS, GRAPH_BYTES = 11e-6, 600


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
    kind: str  # "loss", "a", "z", "stage" (a node inside a layer: batch norm's μ, σ², x̂) or "x"
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


class LayerBackward(NamedTuple):
    """What reverse mode finds in one layer: every term it sends back, by variable."""

    local: dict[sympy.Symbol, sympy.Expr]  # each z node → da/dz (1 without an activation)
    parameter_terms: dict[sympy.Symbol, list[Term]]  # each weight and bias → its terms
    input_terms: dict[sympy.Symbol, list[Term]]  # each input of the layer → its terms
    # each node inside the layer (batch normalisation's μ, σ², x̂) → the terms it gets back
    inner_terms: dict[sympy.Symbol, list[Term]]


class Engine:
    """Every ∂L/∂w of a network, in chain form and (on request) closed form: reverse mode.

    ``symbackprop.Derivation`` (what ``Network.derive()`` returns) is this engine with its
    exporters: numeric code, the tensor view and LaTeX.

    >>> import symbackprop as sb
    >>> d = sb.presets.article().derive()
    >>> d.chain("W3")[1, 0]
    a2_1*dL_da3_2*g_prime(z3_2)

    Each layer is backpropagated when a result first needs it: the chain form of W_l needs
    layer l alone, the upstream formula of a^{(l)} layer l + 1.
    """

    def __init__(self, network: Network, batch: int | None = None, reduce: str = "sum") -> None:
        if batch is not None and (as_int(batch) is None or batch < 1):
            raise ValueError(f"batch must be a positive integer or None, got {batch!r}")
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce={reduce!r}; a batch's loss is its samples' 'sum' or 'mean'")
        self.network = network
        self.batch, self.reduce = batch, reduce
        self.graph: Graph = Graph(network, batch, reduce)
        g = self.graph
        self.symbols = SimpleNamespace(
            x=sympy.Array(list(g.x), (*([batch] if batch else []), *network.input_shape)),
            y=sympy.Array(list(g.y), (*([batch] if batch else []), network.output_size)),
            params=g.params,
        )
        self.tex_names: dict[sympy.Symbol, str] = g.names.tex  # grows as layers are built
        self.tex_names[LOSS] = "L"
        self._upstream_place = {  # ∂L/∂a^{(l)}_i → (l, i - 1)
            s: (number, index)
            for number in range(1, len(network.layers) + 1)
            for index, s in enumerate(g.upstream_of(number))
        }
        self._backward: dict[int, LayerBackward] = {}
        self._inner_place: dict[sympy.Symbol, tuple[int, sympy.Symbol]] = {}  # ∂L/∂μ → (l, μ)

    def __repr__(self) -> str:
        net = self.network
        return (
            f"<Derivation of {net.name}: input {_shape(net.input_shape)}, {len(net.layers)} layers, "
            f"{net.parameter_count} weights in {', '.join(net.parameters) or 'none'}, loss {net.loss}>"
        )

    def layer(self, number: int) -> LayerGraph:
        """Layer ``number``'s part of the graph, counted from 1 as ``W1``, ``position_sets(1)``
        and the handout count: its nodes ``z`` and ``a``, its ``upstream`` symbols ∂L/∂a.

        >>> import symbackprop as sb
        >>> sb.presets.article().derive().layer(3).upstream
        (dL_da3_1, dL_da3_2)
        """
        count, index = len(self.graph.layers), as_int(number)
        if index is None or not 1 <= index <= count:
            raise IndexError(f"layer must be 1..{count}, got {number!r}")
        return self.graph.layers[index - 1]

    # ---- the engine -------------------------------------------------------------------

    def backward(self, number: int) -> LayerBackward:
        """Reverse mode through layer ``number``: each output's upstream gradient ∂L/∂a_i times
        the local gradient of its a over its z (its activation's derivative, or 1), times
        each node's own local gradients — sent to the weights, and to the inputs, where they
        add up, with those of every other layer that reads them, to the upstream gradients of
        the layers it reads (the article's 12, 17 and 20)."""
        if number in self._backward:
            return self._backward[number]
        layer = self.graph.layers[number - 1]
        inputs, inner = set(layer.read), {node.symbol for node in layer.inner}
        local: dict[sympy.Symbol, sympy.Expr] = {}
        parameter_terms: dict[sympy.Symbol, list[Term]] = defaultdict(list)
        input_terms: dict[sympy.Symbol, list[Term]] = defaultdict(list)
        inner_terms: dict[sympy.Symbol, list[Term]] = defaultdict(list)

        def send(variable: sympy.Symbol, term: Term) -> None:
            kind = input_terms if variable in inputs else inner_terms if variable in inner else parameter_terms
            kind[variable].append(term)

        for k, (node, upstream) in enumerate(zip(layer.z, layer.upstream)):
            da_dz = next(layer.a[k].local())[1] if layer.activated else sympy.S.One
            local[node.symbol] = da_dz
            for variable, factor in node.local():
                send(variable, Term(upstream, da_dz, factor, node.symbol))
        # the nodes inside the layer, last first: each has all its terms by the time it sends
        for node, upstream in reversed(list(zip(layer.inner, layer.inner_upstream))):
            for variable, factor in node.local():
                send(variable, Term(upstream, sympy.S.One, factor, node.symbol))
        self._backward[number] = LayerBackward(
            local, dict(parameter_terms), dict(input_terms), dict(inner_terms)
        )
        for node, upstream in zip(layer.inner, layer.inner_upstream):
            self._inner_place[upstream] = (number, node.symbol)
        return self._backward[number]

    @property
    def local(self) -> dict[sympy.Symbol, sympy.Expr]:
        """Every z node → da/dz, for all layers."""
        return {z: e for n in range(1, len(self.graph.layers) + 1) for z, e in self.backward(n).local.items()}

    def upstream_terms_of(self, symbol: sympy.Symbol) -> list[Term]:
        """The terms of ∂L/∂a^{(l)}_i: one per node that a^{(l)}_i feeds, in every layer that
        reads layer l — the article's rule (20): a node used by several others gets the sum of
        what each sends back."""
        number, index = self._upstream_place[symbol]
        if number == len(self.graph.layers):
            raise KeyError(f"{symbol} is the loss's own derivative: see upstream()")
        return self._consumer_terms(number, self.graph.outputs_of(number)[index])

    def _consumer_terms(self, number: int, source: sympy.Symbol) -> list[Term]:
        """Every term that the layers reading layer ``number`` (0: the input) send ``source``."""
        return [
            term
            for consumer in self.network.consumers(number)
            for term in self.backward(consumer).input_terms.get(source, [])
        ]

    @property
    def upstream_terms(self) -> Mapping[sympy.Symbol, list[Term]]:
        """∂L/∂a symbol → its terms, for every layer but the last (see ``upstream_terms_of``)."""
        last = len(self.graph.layers)
        keys = [s for s, (n, _) in self._upstream_place.items() if n < last]
        return _Lazy(keys, self.upstream_terms_of)

    def compact(self, number: int) -> list[Any] | None:
        """Layer ``number``'s input gradient in its compact form, simplified from the staged
        chain form its inner nodes give (batch normalisation in train mode: one ``CompactForm``
        per input value, (γ / (M σ)) (M g_i − Σ g_j − x̂_i Σ g_j x̂_j)); None for a layer without
        inner nodes."""
        return self.network.layers[number - 1].compact(self, number)

    def inner_terms_of(self, symbol: sympy.Symbol) -> list[Term]:
        """The terms of ∂L/∂s for a node s inside a layer (batch normalisation's μ, σ², x̂):
        one per node of its layer that reads it."""
        number, node = self._inner_place[symbol]
        return list(self.backward(number).inner_terms.get(node, []))

    def upstream(self, symbol: sympy.Symbol) -> sympy.Expr:
        """The formula of an upstream-gradient symbol ∂L/∂a_i (the article's 12 and 17), or of
        a node inside a layer."""
        if symbol not in self._upstream_place and symbol not in self._inner_place:
            for number in range(1, len(self.graph.layers) + 1):  # inner symbols: known once built
                self.backward(number)
        if symbol in self._inner_place:
            return sympy.Add(*[t.expr for t in self.inner_terms_of(symbol)])
        if symbol not in self._upstream_place:
            raise KeyError(f"{symbol} is not an upstream-gradient symbol of this network")
        number, index = self._upstream_place[symbol]
        if number == len(self.graph.layers):
            return self.graph.loss_gradient[index]
        return sympy.Add(*[t.expr for t in self.upstream_terms_of(symbol)])

    @property
    def upstream_formula(self) -> Mapping[sympy.Symbol, sympy.Expr]:
        """Every ∂L/∂a symbol → its formula."""
        return _Lazy(list(self._upstream_place), self.upstream)

    # ---- chain form -------------------------------------------------------------------

    def _array(self, name: str, value: Callable[[sympy.Symbol], sympy.Expr]) -> sympy.Array:
        symbols = self._symbols_of(name)
        return sympy.Array([value(s) for s in _flat(symbols)], symbols.shape)

    def _symbols_of(self, name: str) -> sympy.Array:
        if name == "x":
            return self.symbols.x
        if name not in self.symbols.params:
            choices = ", ".join(["x", *self.symbols.params])
            raise KeyError(f"no parameter {name!r}; choose one of {choices}")
        return self.symbols.params[name]

    def terms(self, element: sympy.Symbol) -> list[Term]:
        """The terms of ∂L/∂element, one per position where it was used (a weight, bias or x_i);
        none for an input every kernel place met only as padding."""
        owner = self.graph.names.parameter_of.get(element)
        if owner is not None:
            number, _ = self.network.parameter_owner[owner]
            return list(self.backward(number).parameter_terms.get(element, []))
        if element in self._inputs:
            return self._consumer_terms(0, element)
        raise KeyError(f"{element} is not a parameter or input of this network")

    @cached_property
    def _inputs(self) -> set[sympy.Symbol]:
        return set(self.graph.x)

    def chain_of(self, element: sympy.Symbol) -> sympy.Expr:
        """∂L/∂element (one weight, bias or x_i) in chain form."""
        return sympy.Add(*[t.expr for t in self.terms(element)])

    def chain(self, name: str) -> sympy.Array:
        """∂L/∂(parameter ``name`` or ``"x"``) in the article's chain form:
        Σ over positions of ∂L/∂a_i · g′(z_i) · input, shaped like the parameter."""
        return self._array(name, self.chain_of)

    # ---- nodes ------------------------------------------------------------------------

    @cached_property
    def nodes(self) -> list[NodeGradient]:
        """Every node — L, then each layer's a and z from the last, then x — in backward order."""
        g = self.graph
        last = len(g.layers)
        outputs = g.outputs_of(last)
        result = [
            NodeGradient(LOSS, "loss", None, None, sympy.S.One, dict(zip(outputs, g.loss_gradient)),
                         dict(zip(outputs, g.loss_gradient)))
        ]
        for layer in reversed(g.layers):
            for k, upstream in enumerate(layer.upstream):
                output = layer.outputs[k]
                local = dict(output.local())
                result.append(NodeGradient(
                    output.symbol, "a", layer.number, upstream, self.upstream(upstream),
                    local, {s: upstream * v for s, v in local.items()},
                ))
            for z, upstream in zip(layer.z if layer.activated else (), layer.upstream):
                dz = upstream * self.backward(layer.number).local[z.symbol]
                local = dict(z.local())
                result.append(NodeGradient(
                    z.symbol, "z", layer.number, None, dz, local, {s: dz * v for s, v in local.items()},
                ))
            for node, upstream in reversed(list(zip(layer.inner, layer.inner_upstream))):
                local = dict(node.local())
                result.append(NodeGradient(
                    node.symbol, "stage", layer.number, upstream, self.upstream(upstream),
                    local, {s: upstream * v for s, v in local.items()},
                ))
        for x in g.x:
            result.append(NodeGradient(x, "x", None, None, self.chain_of(x), {}, {}))
        return result

    # ---- straight-line program ----------------------------------------------------------

    @cached_property
    def program(self) -> Program:
        """The per-node program, for numeric code: ∂L/∂z_i = ∂L/∂a_i · a′(z_i) is computed
        once per node and reused by every weight and input it reaches."""
        g = self.graph
        last = len(g.layers)
        assignments: list[tuple[sympy.Symbol, sympy.Expr]] = []
        for layer in g.layers:
            assignments += [(node.symbol, node.expr) for node in layer.inner]
            for k, z in enumerate(layer.z):
                assignments.append((z.symbol, z.expr))
                if layer.activated:
                    assignments.append((layer.a[k].symbol, layer.a[k].expr))
        assignments.append((LOSS, g.loss))
        dz_of: dict[sympy.Symbol, sympy.Symbol] = {}
        for layer in reversed(g.layers):
            local = self.backward(layer.number).local
            for upstream in layer.upstream:  # every layer reading this one is done: sum theirs
                if layer.number == last:
                    assignments.append((upstream, self.upstream(upstream)))
                else:
                    total = sympy.Add(*[dz_of[t.z] * t.factor for t in self.upstream_terms_of(upstream)])
                    assignments.append((upstream, total))
            for k, (z, upstream) in enumerate(zip(layer.z, layer.upstream)):
                if layer.activated:
                    assignments.append((layer.z_upstream[k], upstream * local[z.symbol]))
                    dz_of[z.symbol] = layer.z_upstream[k]
                else:  # the layer's own nodes are its outputs: ∂L/∂z is ∂L/∂a
                    dz_of[z.symbol] = upstream
            for node, upstream in reversed(list(zip(layer.inner, layer.inner_upstream))):
                total = sympy.Add(*[dz_of[t.z] * t.factor for t in self.inner_terms_of(upstream)])
                assignments.append((upstream, total))
                dz_of[node.symbol] = upstream

        def gradient(element: sympy.Symbol) -> sympy.Expr:
            return sympy.Add(*[dz_of[t.z] * t.factor for t in self.terms(element)])

        gradients = {name: self._array(name, gradient) for name in ["x", *self.symbols.params]}
        return Program(tuple(assignments), LOSS, gradients)

    # ---- closed forms -----------------------------------------------------------------

    @cached_property
    def _nodes_by_symbol(self) -> dict[sympy.Symbol, Any]:
        """Every z and a node of the graph by its symbol (formulas are built when asked for)."""
        table: dict[sympy.Symbol, Any] = {}
        for layer in self.graph.layers:
            table.update((node.symbol, node) for node in (*layer.inner, *layer.z, *layer.a))
            self.backward(layer.number)  # so that its inner upstream symbols are known
        return table

    def _definition(self, symbol: sympy.Symbol) -> sympy.Expr | None:
        """The formula of an intermediate symbol (z, a, ∂L/∂a); None for x, y and the weights."""
        if symbol in self._upstream_place or symbol in self._inner_place:
            return self.upstream(symbol)
        node = self._nodes_by_symbol.get(symbol)
        return None if node is None else node.expr

    def _intermediates(self, expr: sympy.Basic) -> list[sympy.Symbol]:
        nodes = self._nodes_by_symbol
        return [s for s in expr.free_symbols
                if s in self._upstream_place or s in self._inner_place or s in nodes]

    def _resolve(self, root: sympy.Symbol, memo: dict, combine: Callable[[sympy.Expr, dict], Any]) -> Any:
        """``memo[root]`` = ``combine(formula of root, memo)``, after every intermediate symbol of
        that formula — depth first, iteratively (graphs are deeper than Python's stack)."""
        stack = [root]
        while stack:
            symbol = stack[-1]
            if symbol in memo:
                stack.pop()
                continue
            formula = self._definition(symbol)
            pending = [s for s in self._intermediates(formula) if s not in memo]
            if pending:
                stack.extend(pending)
                continue
            memo[symbol] = combine(formula, memo)
            stack.pop()
        return memo[root]

    @cached_property
    def _closed(self) -> dict[sympy.Symbol, sympy.Expr]:
        """Intermediate symbol → its closed form in x, y and the weights, filled in on demand.

        Each closed form reuses those of the symbols in its formula (shared in memory,
        never expanded); only what a requested expression depends on is built."""
        return {}

    def closed(self, expr: sympy.Expr) -> sympy.Expr:
        """``expr`` (in program symbols z, a, ∂L/∂a) written in x, y and the weights."""
        mapping = {s: self._resolve(s, self._closed, substitute) for s in self._intermediates(expr)}
        return substitute(expr, mapping)

    def closed_size_estimate(self, expr: sympy.Expr) -> int:
        """Tree nodes of ``closed(expr)``, counted on the graph without building it: cheap on
        any network, even where the closed form is far too large to build.

        sympy merges nested sums and products as it builds, so the closed form itself can be
        a little smaller (or, where a number multiplies a sum, larger): within 1% on the
        networks of the tests.

        >>> import symbackprop as sb
        >>> d = sb.presets.article().derive()
        >>> d.closed_size_estimate(d.chain("W3")[0, 0]), d.closed_size(d.chain("W3")[0, 0])
        (893, 893)
        """
        return weighted_size(expr, self._size_estimates)

    @cached_property
    def _size_estimates(self) -> dict[sympy.Basic, int]:
        """Every z, a and ∂L/∂a symbol → the tree nodes of its closed form (x, y and the weights
        count 1): forward through the nodes, then backward through the terms, once."""
        sizes: dict[sympy.Basic, int] = {}
        for layer in self.graph.layers:
            for node in layer.inner:
                sizes[node.symbol] = node.tree_size(sizes)
            for k, z in enumerate(layer.z):
                sizes[z.symbol] = z.tree_size(sizes)
                if layer.activated:
                    sizes[layer.a[k].symbol] = layer.a[k].tree_size(sizes)
        last = len(self.graph.layers)
        for symbol, formula in zip(self.graph.upstream_of(last), self.graph.loss_gradient):
            sizes[symbol] = weighted_size(formula, sizes)
        locals_: dict[sympy.Expr, int] = {}

        def add_up(symbol: sympy.Symbol, terms: list[Term]) -> None:
            parts = [self._term_size(t, sizes, locals_) for t in terms]
            parts = [p for p in parts if p]  # terms known to be zero drop out
            sizes[symbol] = (parts[0] if parts else 0) if len(parts) <= 1 else 1 + sum(parts)

        for number in range(last, 0, -1):  # a layer's upstream, then its inner nodes', last first
            if number < last:
                for symbol in self.graph.upstream_of(number):
                    add_up(symbol, self.upstream_terms_of(symbol))
            layer = self.graph.layers[number - 1]
            self.backward(number)
            for symbol in reversed(layer.inner_upstream):
                add_up(symbol, self.inner_terms_of(symbol))
        return sizes

    @staticmethod
    def _term_size(term: Term, sizes: dict, locals_: dict) -> int:
        """Tree nodes of upstream · local · factor, as one product (sympy flattens them)."""
        if term.local not in locals_:
            locals_[term.local] = weighted_size(term.local, sizes)
        parts = [(term.upstream, sizes[term.upstream])]
        for expr, size in ((term.local, locals_[term.local]), (term.factor, None)):
            if expr != 1:
                parts.append((expr, size if size is not None else weighted_size(expr, sizes)))
        if any(size == 0 for _, size in parts):
            return 0
        if len(parts) == 1:
            return parts[0][1]
        return 1 + sum(size - 1 if expr.is_Mul else size for expr, size in parts)

    def _require_graph(self, what: str, lift: str, instead: str) -> None:
        """``OverBudget`` before anything is built when sizing the closed forms would build a
        scalar graph of more than MAX_GRAPH_EDGES edges (counted from the shapes)."""
        edges = self.network.graph_edges
        if edges > MAX_GRAPH_EDGES and "_size_estimates" not in self.__dict__:
            n = capped(edges)
            raise OverBudget(
                f"{what} would first build a scalar graph of {count(edges)} edges (estimated "
                f"{duration(n * GRAPH_SECONDS)}, {size_text(n * GRAPH_BYTES)}) to count its closed forms, "
                f"more than {MAX_GRAPH_EDGES:,}; {lift}, or use {instead}"
            )

    def _require_within(self, what: str, exprs: list, max_size: int, lift: str,
                        instead: str) -> None:
        """``OverBudget`` if the closed forms of ``exprs`` would pass ``max_size`` tree nodes
        in all, counted element by element until they do (one element of a deep network
        can have 10^25: the rest need not be counted). The message says how to ``lift``
        the limit, and what to use ``instead``."""
        total = 0
        for k, expr in enumerate(exprs, start=1):
            total += self.closed_size_estimate(expr)
            if total > max_size:
                part = f" (its first {k:,} of {len(exprs):,} elements)" if k < len(exprs) else ""
                advice = f"{lift}, or use {instead}"
                if total > 10**15:
                    advice = f"far too large to build at any limit: use {instead}"
                raise OverBudget(
                    f"{what} would write closed forms of {'at least ' if part else ''}"
                    f"{count(total)} tree nodes{part}, more than max_size allows "
                    f"({max_size:,}); {advice}"
                )

    def closed_size(self, expr: sympy.Expr) -> int:
        """Tree nodes of ``closed(expr)`` written out; cheap to ask for every element in turn."""
        return expression_size(self.closed(expr), self._sizes)

    @cached_property
    def _sizes(self) -> dict[sympy.Basic, int]:
        return {}

    @cached_property
    def loss(self) -> sympy.Expr:
        """The closed-form loss L in x, y and the weights. Past MAX_CLOSED_SIZE tree nodes
        (estimated first) ``OverBudget`` is raised instead; ``d.closed(d.graph.loss)``
        builds it at any size."""
        lift = "d.closed(d.graph.loss) builds it at any size"
        self._require_graph("loss", lift, "d.numeric()")
        self._require_within("loss", [self.graph.loss], MAX_CLOSED_SIZE, lift, "d.numeric()")
        return self.closed(self.graph.loss)

    def gradient(self, name: str, simplify: bool = False,
                 max_size: int | None = MAX_CLOSED_SIZE) -> sympy.Array:
        """Closed-form ∂L/∂(parameter ``name`` or ``"x"``), shaped like it.

        Closed forms grow fast with depth and width (LeNet-5's W7: 7e15 tree nodes, its
        first element not built in ten minutes): past ``max_size`` tree nodes in all
        (MAX_CLOSED_SIZE by default; estimated first, without building them)
        ``OverBudget`` is raised instead, naming the size; ``max_size=None`` builds any
        size. ``d.chain(name)`` is the same gradient in the chain form, and ``d.numeric()``
        its numbers, at any size.

        ``simplify=True`` tidies each element with bounded rewrites
        (``symbackprop.simplify.tidy``); an element too large to tidy quickly
        (``simplify.MAX_SIZE`` tree nodes) is returned as it is, and a ``SimplifyWarning``
        names it, with its size and how many more were too large.
        """
        if max_size is not None:
            self._require_graph(f"gradient({name!r})", "pass max_size=None to build it",
                                f"d.chain({name!r}) and d.numeric()")
        chain = self.chain(name)
        elements = _flat(chain)
        if max_size is not None:
            self._require_within(f"gradient({name!r})", elements, max_size,
                                 "pass max_size=None to build it", f"d.chain({name!r}) and d.numeric()")
        closed = [self.closed(e) for e in elements]
        if simplify:
            too_large = [k for k, e in enumerate(closed) if not small_enough(e)]
            skipped = set(too_large)  # a list's `in` would make a large array quadratic
            closed = [e if k in skipped else tidy(e) for k, e in enumerate(closed)]
            if too_large:
                first = too_large[0]
                element = _flat(self._symbols_of(name))[first]
                size = expression_size(closed[first], self._sizes)
                more = f", and {len(too_large) - 1:,} more elements of {name} too" if len(too_large) > 1 else ""
                warnings.warn(
                    f"dL/d{element} has a closed form of {size:,} tree nodes, more than the "
                    f"{MAX_SIZE:,} that simplify tidies{more}: returned as they are",
                    SimplifyWarning, stacklevel=2,
                )
        return sympy.Array(closed, chain.shape)

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
    """The elements of a sympy Array in row-major order (PyTorch's flattening): the flat
    tuple an immutable Array holds as its first argument (``tolist()`` reads element by
    element: 0.8 s for LeNet-5's W5, against 0.5 ms)."""
    return list(array.as_immutable().args[0])


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


class _Lazy(Mapping):
    """A mapping over known keys whose values are computed (and kept) on first use."""

    def __init__(self, keys: list, compute: Callable[[Any], Any]) -> None:
        self._keys, self._compute, self._values = keys, compute, {}
        self._known = set(keys)

    def __getitem__(self, key: Any) -> Any:
        if key not in self._known:
            raise KeyError(key)
        if key not in self._values:
            self._values[key] = self._compute(key)
        return self._values[key]

    def __iter__(self) -> Iterator:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
