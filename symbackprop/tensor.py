"""The tensor view: each layer's general formulas, derived from its operation's index form.

Beside the article's scalar derivation (``derive``, one node at a time) a course writes each
layer's rules once for every index: forward, δ, ∂L/∂W, ∂L/∂b and ∂L/∂(input). Here they
are derived, never typed: ``formulas(d, l)`` takes layer l's index form
(``Op.tensor_form``: sympy ``Indexed`` and ``Sum``), differentiates it with ``sympy.diff``
and sums the Kronecker deltas out. For a convolution:

    ∂L/∂W[o', c', m', n'] = Σ_{o,i,j} δ[o, i, j] · ∂z[o, i, j]/∂W[o', c', m', n']
                          = Σ_{i,j} δ[o', i, j] · a[c', s·i + d·m' − p, s·j + d·n' − p]

A delta between a summed letter and a letter of the same range is summed out; the others
stay, printed as conditions under the sum (an input's gradient collects the outputs whose
window holds it: Σ over o, i, j, m, n with s·i + d·m − p = u and s·j + d·n − p = v).
The input reads 0 outside its bounds (zero padding; −∞ under max pooling), and the input
gradient is stated for indices inside them: padded places get no gradient.

Each ``Formula`` prints with ``.latex()`` (``TensorPrinter``: the project's
``NotationPrinter`` taught indexed tensors, a^{(l)}, W^{(l)}, δ^{(l)}) and expands at
concrete indices with ``.at()``: over the scalar graph's symbols (``scalar_values``) to
compare with the chain form, over numbers to compare with the reference. The facts students
remember — the weight gradient is a cross-correlation, the input gradient a full
convolution, δ aᵀ and Wᵀ δ, softmax − y — are ``Fact`` entries that ``check()`` themselves
against the formula they restate. Indices count from 0, as in PyTorch.

Imports sympy, numpy, ``indexed``, ``activations``, ``engine`` and ``latex`` (the printer);
``latex`` must not import this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from itertools import product
from math import prod
from typing import Any

import numpy as np
import sympy
from sympy import Add, Dummy, Indexed, IndexedBase, KroneckerDelta, Mul, Pow, Sum, Symbol
from sympy.matrices.expressions.matexpr import MatrixElement

from .activations import activation
from .engine import Engine as Derivation
from .indexed import Bases, Claim, IndexForm, IsFirstMax, Maximum, Spread, index
from .latex import NotationPrinter
from .nodes import window_max

Shape = tuple[int, ...]
Reader = Callable[[IndexedBase, tuple[int, ...]], Any]

# Index letters print in this order inside an index: s·i + d·m − p, not d·m + i·s − p.
LETTER_ORDER = ("o", "f", "c", "k", "i", "j", "u", "v", "m", "n")


# ---- formulas -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Names:
    """How a layer's tensors print: TeX by ``IndexedBase`` label (or ``MatrixSymbol``), and
    the labels of gradients, printed ∂L/∂(tensor)_{indices}."""

    tex: Mapping[Any, str]
    partial: frozenset = frozenset()
    # where a tensor goes in a printed product, by label (others 2): δ · W · a
    rank: Mapping[Symbol, int] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Formula:
    """One general formula of a layer: ``lhs = rhs`` for every value of its free letters.

    ``kind`` is "forward", "activation", "loss", "delta", "W", "b", "input" (and "fact"
    for a ``Fact``). ``letters`` are the lhs's free index letters with how far each runs
    (0 ≤ letter < size); ``tensors`` gives each tensor its role — the key to the values
    ``at`` reads ("input", "output", "activation", "upstream", "delta", "W", "b", "y") —
    and its shape; ``settings`` the values of the settings symbols (s, d, p, K, …).
    """

    kind: str
    lhs: sympy.Expr
    rhs: sympy.Expr
    letters: tuple[tuple[Symbol, int], ...]
    tensors: Mapping[IndexedBase, tuple[str, Shape]]
    settings: Mapping[Symbol, int]
    names: Names
    note: str = ""
    alias: sympy.Expr | None = None  # δ^{(l)}_{o,i,j}, printed before the lhs
    index_rhs: sympy.Expr | None = None  # the rhs in index form, when it is a matrix expression
    spreads: tuple[Spread, ...] = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind}: {self.lhs} = {self.rhs}>"

    def _repr_latex_(self) -> str:
        return f"$${self.latex()}$$"

    @property
    def equation(self) -> sympy.Eq:
        """``lhs = rhs`` as a sympy equation."""
        return sympy.Eq(self.lhs, self.rhs, evaluate=False)

    @property
    def printer(self) -> TensorPrinter:
        """The printer of its layer's tensors (for ``latex.break_expr`` of a long rhs)."""
        return TensorPrinter(self.names)

    def latex(self) -> str:
        r"""The formula in LaTeX, by ``TensorPrinter``: ``\frac{\partial L}{\partial W^{(1)}_{o,c,m,n}} = …``."""
        p = self.printer
        sides = [p.doprint(self.lhs), p.doprint(self.rhs)]
        if self.alias is not None:
            sides.insert(0, p.doprint(self.alias))
        return " = ".join(sides)

    def positions(self) -> Iterator[tuple[int, ...]]:
        """Every concrete value of the free letters, in row-major order."""
        return product(*(range(size) for _, size in self.letters))

    def at(self, position: Sequence[int], values: Mapping[str, Any]) -> Any:
        """The rhs at one concrete index, every sum written out, reading each tensor from
        ``values[role]`` (any array or sequence, flattened row-major): symbols give the
        scalar form, numbers a number. Entries outside a tensor read 0 (−∞ under a max)."""
        rhs = self.index_rhs if self.index_rhs is not None else self.rhs
        hats = {s.hat: s.base for s in self.spreads}
        for base in {hats.get(e.base, e.base) for e in rhs.atoms(Indexed)}:
            if self.tensors[base][0] not in values:
                raise KeyError(f"no values for {self.tensors[base][0]!r}: give them to at() by that name")
        flat = {role: _flat(v) for role, v in values.items()}
        numeric = all(isinstance(v, float) for entries in flat.values() for v in entries)
        env = {**self.settings, **dict(zip([x for x, _ in self.letters], map(int, position)))}
        return _evaluate(rhs, env, _reader(self.tensors, flat, self.spreads, self.settings), numeric)

    def concrete(self) -> Formula:
        """The same formula with the layer's settings written as numbers (s = 2 → 2 i)."""
        values = _numbers(self.settings)

        def put(e: sympy.Expr | None) -> sympy.Expr | None:
            return None if e is None else e.xreplace(values)

        spreads = tuple(replace(s, factors=tuple(sympy.sympify(f).xreplace(values) for f in s.factors))
                        for s in self.spreads)
        return replace(self, lhs=put(self.lhs), rhs=put(self.rhs), alias=put(self.alias),
                       index_rhs=put(self.index_rhs), spreads=spreads)


@dataclass(frozen=True, eq=False)
class Fact(Formula):
    """A fact students remember, stated as an equation and checked against ``restates``,
    the derived formula of the same gradient. ``where`` defines the tensors it introduces
    (δ̂, Ŵ); ``condition`` is an equation it needs (Σ_j y_j = 1), or None."""

    statement: str = ""
    restates: Formula | None = None
    where: tuple[sympy.Eq, ...] = ()
    condition: tuple[sympy.Expr, sympy.Expr] | None = None

    def latex(self) -> str:
        tex = super().latex()
        if self.condition is not None:
            p = self.printer
            lhs, rhs = (p.doprint(side) for side in self.condition)
            tex += rf" \qquad \text{{when }} {lhs} = {rhs}"
        return tex

    def where_latex(self) -> list[str]:
        """The definitions of the tensors it introduces, in LaTeX (each 0 elsewhere)."""
        p = self.printer
        return [rf"{p.doprint(eq.lhs)} = {p.doprint(eq.rhs)}, \text{{ and }} 0 \text{{ elsewhere}}"
                for eq in self.where]

    def concrete(self) -> Fact:
        values = _numbers(self.settings)
        where = tuple(sympy.Eq(eq.lhs.xreplace(values), eq.rhs.xreplace(values), evaluate=False)
                      for eq in self.where)
        return replace(super().concrete(), restates=self.restates.concrete(), where=where)

    def check(self) -> bool:
        """Whether the fact equals the formula it restates at every concrete index, both
        written out over the same symbols (under its condition, when it has one)."""
        symbols = {role: sympy.symbols(f"{role}_0:{prod(shape)}", real=True)
                   for role, shape in {**self.restates.tensors, **self.tensors}.values()}
        under = {}
        if self.condition is not None:  # Σ_j y_j = 1: write one y_j as 1 minus the others
            lhs, rhs = (_evaluate(side, {}, _reader(self.tensors, symbols, (), {})) for side in self.condition)
            chosen = min(lhs.free_symbols, key=str)
            (under[chosen],) = sympy.solve(lhs - rhs, chosen)
        for position in self.positions():
            derived = self.restates.at(position, symbols).xreplace(under)
            if sympy.expand(derived - self.at(position, symbols).xreplace(under)) != 0:
                return False
        return True


def formulas(d: Derivation, number: int, general: bool = True) -> list[Formula]:
    """Layer ``number``'s general formulas (1-based), derived from its index form: forward,
    activation, the loss's gradient (last layer), δ, ∂L/∂W, ∂L/∂b and ∂L/∂(input), each
    fact after the formula it restates. ``general=False`` writes the settings as numbers."""
    layers = d.network.layers
    if not (isinstance(number, int) and 1 <= number <= len(layers)):
        raise ValueError(f"layer must be 1..{len(layers)}, got {number!r}")
    result = _Layer(d, number).formulas()
    if general:
        return result
    concrete: dict[int, Formula] = {}  # each formula's concrete form, by the general one's id
    for f in result:
        written = f.concrete()
        if isinstance(f, Fact):  # the fact restates the concrete formula of the same list
            written = replace(written, restates=concrete[id(f.restates)])
        concrete[id(f)] = written
    return list(concrete.values())


def scalar_values(d: Derivation, number: int) -> dict[str, list[sympy.Symbol]]:
    """The scalar graph's symbols of layer ``number`` by role, for ``Formula.at``: expanded
    over them, a formula is written as the chain form is (δ as ∂L/∂z symbols)."""
    g = d.graph
    lg = g.layers[number - 1]
    values = {
        **{_input_role(k): list(g.outputs_of(s)) for k, s in enumerate(d.network.sources[number - 1])},
        "output": [node.symbol for node in lg.z],
        "activation": list(g.outputs_of(number)),
        "upstream": list(lg.upstream),
        "delta": list(lg.z_upstream if lg.activated else lg.upstream),
        "y": list(g.y),
    }
    for prefix, name in d.network.layer_parameters(number).items():
        values[prefix] = sympy.flatten(g.params[name].tolist())
    return values


def _input_role(place: int) -> str:
    """The role of a layer's input at ``place`` for ``Formula.at``: "input", then "input2", …"""
    return "input" if place == 0 else f"input{place + 1}"


# ---- one layer ------------------------------------------------------------------------------


class _Layer:
    """Layer l's tensors, its operation's index form, and the formulas derived from it."""

    def __init__(self, d: Derivation, number: int) -> None:
        net = d.network
        self.number, self.op = number, net.layers[number - 1]
        self.last = number == len(net.layers)
        self.loss = net.loss_function
        self.activated = self.op.has_activation
        l = number
        self.tex: dict[Any, str] = {}
        self.partial: set[Symbol] = set()
        sources = [("x", "x") if s == 0 else (f"a{s}", f"a^{{({s})}}") for s in net.sources[l - 1]]
        inputs = tuple(self._base(*source) for source in sources)
        self.bases = Bases(
            input=inputs[0],
            inputs=inputs if len(inputs) > 1 else (),
            output=self._base(f"z{l}", f"z^{{({l})}}") if self.activated else self._base(f"a{l}", f"a^{{({l})}}"),
            W=self._base(f"W{l}", f"W^{{({l})}}"),
            b=self._base(f"b{l}", f"b^{{({l})}}"),
            delta=self._base(f"delta{l}", rf"\delta^{{({l})}}"),
            tex=self.tex,
        )
        self.activation = self._base(f"a{l}", f"a^{{({l})}}")
        self.upstream = self._gradient(self.activation)
        self.y = self._base("y", "y")
        in_shape = net.input_shape_of(l)
        if self.op.arity == 1 and not self.op.image_input:  # it reads its input flattened
            in_shape = (prod(in_shape),)
        self.form: IndexForm = self.op.tensor_form(in_shape, self.bases)

    def _base(self, label: str, tex: str) -> IndexedBase:
        base = IndexedBase(Symbol(label))
        self.tex[base.label] = tex
        return base

    def _gradient(self, base: IndexedBase) -> IndexedBase:
        """∂L/∂(base), printed as such."""
        gradient = self._base(f"dL_d{base.label}", self.tex[base.label])
        self.partial.add(gradient.label)
        return gradient

    @property
    def names(self) -> Names:
        bases = self.bases
        rank = {bases.delta: 0, bases.W: 1, bases.b: 1}
        rank.update({hat: rank[base] for hat, base in bases.hats.items() if base in rank})
        labels = {base.label: r for base, r in rank.items()} | dict.fromkeys(self.partial, 0)
        return Names(self.tex, frozenset(self.partial), labels)

    def _formula(self, kind: str, lhs: sympy.Expr, rhs: sympy.Expr, letters: Sequence[Symbol],
                 note: str = "", cls: type[Formula] = Formula, **more: Any) -> Formula:
        form = self.form
        out_shape = form.shape(form.output)
        tensors = {
            **{e.base: (_input_role(k), form.shape(e)) for k, e in enumerate(form.inputs or (form.input,))},
            self.bases.output: ("output", out_shape),
            self.bases.delta: ("delta", out_shape),
            self.upstream: ("upstream", out_shape),
            self.y: ("y", (prod(out_shape),)),
            **{e.base: (name, form.shape(e)) for name, e in form.parameters.items()},
        }
        if self.activated:
            tensors[self.activation] = ("activation", out_shape)
        tensors.update(more.pop("tensors", {}))
        sizes = {**form.sizes, **more.pop("sizes", {})}
        return cls(kind, lhs, rhs, tuple((x, sizes[x]) for x in letters), tensors,
                   form.settings, self.names, note, **more)

    def formulas(self) -> list[Formula]:
        form, bases = self.form, self.bases
        out = form.output.indices
        padded = self._padding_note()
        result = [self._formula("forward", form.output, form.expr, out, "indices count from 0" + padded)]
        if self.activated:
            g = activation(self.op.activation).apply
            result.append(self._formula("activation", self.activation[out], g(bases.output[out]), out))
        if self.last and self.loss.index_form is not None:
            result += self._loss()
        result.append(self._delta())
        for name, element in form.parameters.items():
            result.append(self._parameter(name, element))
        inside = "for indices inside the input: padded places get no gradient" if padded else ""
        for element in form.inputs or (form.input,):
            result.append(self._parameter("input", element, inside))
        return self._with_facts(result)

    def _padding_note(self) -> str:
        """How the input reads outside its bounds, when some output's window reaches there."""
        form, values = self.form, _numbers(self.form.settings)
        shape = form.shape(form.input)
        for read in form.expr.atoms(Indexed):
            if read.base != self.bases.input:
                continue
            for axis, size in zip(read.indices, shape):
                low, high = _bounds(axis.xreplace(values), form.sizes)
                if low < 0 or high >= size:
                    value = "0 (zero padding)" if form.outside == 0 else "minus infinity (padding never wins the max)"
                    return f"; the input reads {value} at indices outside its bounds"
        return ""

    def _delta(self) -> Formula:
        """δ = ∂L/∂z: the upstream gradient times the activation's derivative (or ∂L/∂a itself
        for a layer without activation)."""
        out, bases = self.form.output.indices, self.bases
        if not self.activated:
            return self._formula("delta", bases.delta[out], self.upstream[out], out,
                                 "the gradient at the layer's outputs")
        g = activation(self.op.activation).apply
        applied = g(bases.output[out])
        rhs = _backward(applied, out, self.form.sizes, self.upstream, bases.output[out])
        rhs = rhs.xreplace({applied: self.activation[out]})  # σ′ written σ(1 − σ) = a(1 − a)
        return self._formula("delta", self._gradient(bases.output)[out], rhs, out,
                             "the gradient at the layer's weighted sums", alias=bases.delta[out])

    def _parameter(self, name: str, element: sympy.Indexed, note: str = "") -> Formula:
        """∂L/∂(element): Σ over the outputs of δ times the output's derivative."""
        rhs = _backward(self.form.expr, self.form.output.indices, self.form.sizes, self.bases.delta, element)
        if rhs.has(IsFirstMax):
            note += ("; the bracket is 1 where (m, n) holds the window's first maximum in row-by-row "
                     "order (PyTorch's choice when values tie) and 0 elsewhere")
        return self._formula(name, self._gradient(element.base)[element.indices], rhs, element.indices,
                             note.lstrip("; "))

    def _loss(self) -> list[Formula]:
        """∂L/∂a^{(L)}_k of the loss's index form, over the outputs flattened (and its facts)."""
        size = prod(self.form.shape(self.form.output))
        a = self.activation if self.activated else self.bases.output
        (k,) = index("k")
        role = "activation" if self.activated else "output"
        more = {"tensors": {a: (role, (size,))}, "sizes": {k: size}}
        rhs = _backward(self.loss.index_form(a, self.y, size), (), {k: size}, None, a[k])
        formula = self._formula("loss", self._gradient(a)[k], rhs, (k,),
                                "the outputs flattened in (channel, row, column) order", **more)
        claims = self.loss.index_claims(a, self.y, size) if self.loss.index_claims else ()
        facts = [self._fact(claim, formula, **more) for claim in claims]
        return [formula, *facts]

    def _with_facts(self, result: list[Formula]) -> list[Formula]:
        """Each of the operation's claims, as a fact after the formula it restates."""
        out = []
        for formula in result:
            out.append(formula)
            out += [self._fact(c, formula) for c in self.form.claims if c.kind == formula.kind]
        return out

    def _fact(self, claim: Claim, restated: Formula, **more: Any) -> Fact:
        letters = [x for x, _ in restated.letters]
        lhs, index_rhs = restated.lhs, None
        if claim.rhs.is_Matrix:  # a matrix statement: the whole gradient, read entry by entry
            gradient = restated.lhs.base
            lhs = sympy.MatrixSymbol(str(gradient.label), *claim.rhs.shape)
            self.tex[lhs] = rf"\frac{{\partial L}}{{\partial {self.tex[gradient.label]}}}"
            index_rhs = _entries(claim.rhs, letters, self.bases.matrices)
        where = tuple(s.equation(self._letters_of(s.base)) for s in claim.spreads)
        return self._formula(
            "fact", lhs, claim.rhs, letters, claim.statement, cls=Fact, index_rhs=index_rhs,
            spreads=claim.spreads, statement=claim.statement, restates=restated, where=where,
            condition=claim.condition, **more,
        )

    def _letters_of(self, base: IndexedBase) -> tuple[Symbol, ...]:
        """The letters the index form writes ``base`` with: W[o, c, m, n], δ[o, i, j]."""
        if base == self.bases.delta:
            return self.form.output.indices
        for element in self.form.parameters.values():
            if element.base == base:
                return element.indices
        raise KeyError(base)


# ---- differentiating an index form ----------------------------------------------------------


def _backward(
    expr: sympy.Expr, out: Sequence[Symbol], sizes: Mapping[Symbol, int],
    seed: IndexedBase | None, wrt: sympy.Indexed,
) -> sympy.Expr:
    """Σ over the output letters ``out`` of seed[out] · ∂expr/∂wrt (just ∂expr/∂wrt when
    ``seed`` is None), the Kronecker deltas summed out; wrt's letters are left free."""
    twins = {x: Dummy(x.name, integer=True) for x in wrt.indices}
    ranges = {twins[x]: (0, sizes[x] - 1) for x in wrt.indices}
    local = sympy.diff(expr, wrt.xreplace(twins))
    total = local if seed is None else Sum(seed[tuple(out)] * local, *[(x, 0, sizes[x] - 1) for x in out])
    summed = _sum_out(total, ranges)
    named = _rebind(summed, set(twins)).xreplace({t: x for x, t in twins.items()})
    return sympy.factor_terms(named)  # 2/3 (a_k − y_k), not 2/3 a_k − 2/3 y_k


def _sum_out(expr: sympy.Expr, ranges: Mapping[Symbol, tuple[int, int]]) -> sympy.Expr:
    """Every sum in ``expr`` distributed over its terms, each term's deltas summed out."""
    if isinstance(expr, Sum):
        return _sum_terms(_sum_out(expr.function, ranges), list(expr.limits), ranges)
    if not expr.args or isinstance(expr, Indexed):
        return expr
    args = [_sum_out(a, ranges) for a in expr.args]
    return expr if all(a is b for a, b in zip(args, expr.args)) else expr.func(*args)


def _sum_terms(function: sympy.Expr, limits: list, ranges: Mapping) -> sympy.Expr:
    return Add(*[_sum_term(term, limits, ranges) for term in _terms(function)])


def _terms(expr: sympy.Expr) -> list[sympy.Expr]:
    """``expr`` as a sum of terms, products distributed only over the sums that hold a delta
    or a Sum (so σ′ stays a(1 − a))."""
    if expr.is_Add:
        return [t for a in expr.args for t in _terms(a)]
    if expr.is_Mul:
        for k, f in enumerate(expr.args):
            if f.is_Add and f.has(KroneckerDelta, Sum):
                rest = Mul(*(expr.args[:k] + expr.args[k + 1 :]))
                return [t for a in f.args for t in _terms(rest * a)]
    return [expr]


def _sum_term(term: sympy.Expr, limits: list, ranges: Mapping) -> sympy.Expr:
    """Σ over ``limits`` of one product: a sum it holds joins the sum; δ(summed, other) with
    other running over the same range substitutes other for summed; the factors that do not
    depend on what is summed come out."""
    if term == 0:
        return sympy.S.Zero
    factors = Mul.make_args(term)
    bounds = {x: (lo, hi) for x, lo, hi in limits}
    for f in factors:
        if isinstance(f, Sum) and not ({x for x, *_ in f.limits} & (term.free_symbols | set(bounds))):
            rest = Mul(*[g for g in factors if g is not f])
            return _sum_terms(rest * f.function, limits + list(f.limits), ranges)
    for f in factors:
        if isinstance(f, KroneckerDelta):
            for summed, other in (f.args, f.args[::-1]):
                if summed in bounds and other.is_Symbol and (ranges.get(other) or bounds.get(other)) == bounds[summed]:
                    remaining = [limit for limit in limits if limit[0] != summed]
                    return _sum_term(term.xreplace({summed: other}), remaining, ranges)
    inside = [f for f in factors if f.free_symbols & set(bounds)]
    outside = Mul(*[f for f in factors if not f.free_symbols & set(bounds)])
    if not limits:
        return term
    if not inside:
        return outside * prod(int(hi - lo + 1) for lo, hi in bounds.values())
    return outside * Sum(Mul(*inside), *limits)


def _bounds(expr: sympy.Expr, sizes: Mapping[Symbol, int]) -> tuple[int, int]:
    """The least and greatest value of a linear index expression, each letter x running over
    0 ≤ x < sizes[x]."""
    low = high = 0
    for term in Add.make_args(expr):
        coefficient, rest = term.as_coeff_Mul()
        extent = 0 if rest == 1 else sizes[rest] - 1
        low += min(0, coefficient * extent) + (coefficient if rest == 1 else 0)
        high += max(0, coefficient * extent) + (coefficient if rest == 1 else 0)
    return int(low), int(high)


def _rebind(expr: sympy.Expr, keep: set[Symbol]) -> sympy.Expr:
    """``expr`` with every summed letter that a twin in ``keep`` will be renamed to given a
    fresh letter first (Σ_k y_k → Σ_j y_j when the free k comes back)."""
    taken = {Symbol(t.name, integer=True) for t in keep}
    if isinstance(expr, Sum):
        function, limits = _rebind(expr.function, keep), []
        for x, lo, hi in expr.limits:
            if x in taken:
                fresh = next(y for y in index("j q r t") if y not in taken and not function.has(y))
                function, x = function.xreplace({x: fresh}), fresh
            limits.append((x, lo, hi))
        return Sum(function, *limits)
    if not expr.args or isinstance(expr, Indexed):
        return expr
    args = [_rebind(a, keep) for a in expr.args]
    return expr if all(a is b for a, b in zip(args, expr.args)) else expr.func(*args)


def _entries(matrix: sympy.MatrixExpr, letters: Sequence[Symbol],
             matrices: Mapping[sympy.MatrixSymbol, tuple[IndexedBase, bool]]) -> sympy.Expr:
    """A matrix expression's entry at ``letters`` (a column vector's at letters[0]) in index form,
    a product's sum kept as a ``Sum`` (``at`` writes it out; ``matrix[i, j]`` would write its
    terms out here, 120 of them for LeNet-5's Wᵀ δ)."""
    entry = matrix._entry(letters[0], letters[1] if len(letters) > 1 else 0, expand=False)

    def indexed(e: MatrixElement) -> sympy.Indexed:
        base, vector = matrices[e.parent]
        return base[e.i] if vector else base[e.i, e.j]

    return entry.replace(lambda e: isinstance(e, MatrixElement), indexed)


# ---- writing a formula out at concrete indices ---------------------------------------------------


def _numbers(settings: Mapping[Symbol, int]) -> dict[Symbol, sympy.Integer]:
    return {s: sympy.Integer(v) for s, v in settings.items()}


def _reader(tensors: Mapping[IndexedBase, tuple[str, Shape]], flat: Mapping[str, Sequence],
            spreads: Sequence[Spread], settings: Mapping[Symbol, int]) -> Reader:
    """read(base, index): the entry of a tensor (its role's values, flat and row-major), None
    outside its bounds; a spread tensor (δ̂, Ŵ) reads its base, or 0 at an inserted zero."""
    spread = {s.hat: s for s in spreads}

    def read(base: IndexedBase, at: tuple[int, ...]) -> Any:
        if base in spread:
            s = spread[base]
            source = s.source(at, tuple(_integer(f, settings) for f in s.factors))
            return 0 if source is None else read(s.base, source)
        role, shape = tensors[base]
        if not all(0 <= i < n for i, n in zip(at, shape)):
            return None
        return flat[role][int(np.ravel_multi_index(at, shape))]

    return read


def _flat(values: Any) -> list:
    """Any array or sequence as a flat list, row-major: sympy objects, or Python floats."""
    if isinstance(values, sympy.NDimArray):
        return sympy.flatten(values.tolist()) if values.rank() else [values[()]]
    flat = list(np.asarray(values, dtype=object).ravel())
    return flat if any(isinstance(v, sympy.Basic) for v in flat) else [float(v) for v in flat]


def _evaluate(expr: sympy.Expr, env: Mapping[Symbol, int], read: Reader, numeric: bool = False) -> Any:
    """``expr`` with its letters and settings at ``env``'s values, every sum, max and bracket
    written out, tensors read through ``read`` (0 outside their bounds). ``numeric``: the
    tensors hold numbers, and the arithmetic is done in floats."""

    def value(e: sympy.Expr, env: Mapping[Symbol, int]) -> Any:
        if e in env:
            return env[e]
        if e.is_Number:
            return float(e) if numeric else e
        if isinstance(e, Indexed):
            entry = read(e.base, _place(e.indices, env))
            return 0 if entry is None else entry
        if isinstance(e, KroneckerDelta):
            left, right = _place(e.args, env)
            return int(left == right)
        if isinstance(e, Sum):
            return sum((value(e.function, inner) for inner in _window_envs(e.limits, env)), 0)
        if isinstance(e, Mul):
            result = 1
            for f in sorted(e.args, key=lambda f: not isinstance(f, KroneckerDelta)):  # zeros first
                result *= value(f, env)
                if result == 0:
                    return 0
            return result
        if isinstance(e, Pow):
            return value(e.base, env) ** value(e.exp, env)
        if isinstance(e, Maximum):
            values = [v for _, v in _entries_of(e, env, read)]
            if len(values) == 1:
                return values[0]
            return max(values) if numeric else window_max(*values)
        if isinstance(e, IsFirstMax):
            entries = _entries_of(e.window, env, read)
            places, values = [p for p, _ in entries], [v for _, v in entries]
            place = _place(e.place, env)
            if place not in places:
                return 0
            if numeric:
                return int(places.index(place) == int(np.argmax(values)))  # argmax: the first maximum
            if len(values) == 1:
                return 1
            # nodes.window_max's brackets, [v_j > v_k] before the place and [v_j ≥ v_k] after it
            return window_max(*values, evaluate=False).fdiff(places.index(place) + 1)
        result = e.func(*[value(a, env) for a in e.args])
        return float(result) if numeric else result

    result = value(expr, env)
    return float(result) if numeric else sympy.sympify(result)


def _place(indices: Sequence[sympy.Expr], env: Mapping[Symbol, int]) -> tuple[int, ...]:
    return tuple(_integer(i, env) for i in indices)


def _integer(e: sympy.Expr, env: Mapping[Symbol, int]) -> int:
    """An index expression's value: a sum of integer × product of letters and settings."""
    total = 0
    for coefficient, letters in _polynomial(e):
        for x in letters:
            coefficient *= env[x]
        total += coefficient
    return total


@cache
def _polynomial(e: Any) -> tuple[tuple[int, tuple[Symbol, ...]], ...]:
    """s·i + d·(K − 1) − p as ((1, (s, i)), (1, (d, K)), (−1, (d,)), (−1, (p,))), read once."""
    terms = []
    for term in Add.make_args(sympy.expand(sympy.sympify(e))):
        coefficient, rest = term.as_coeff_Mul()
        letters = [] if rest == 1 else [f for f in Mul.make_args(rest)]
        terms.append((int(coefficient), tuple(letters)))
    return tuple(terms)


def _window_envs(limits: Sequence, env: Mapping[Symbol, int]) -> Iterator[dict]:
    letters = [x for x, *_ in limits]
    ranges = [range(_integer(lo, env), _integer(hi, env) + 1) for _, lo, hi in limits]
    for values in product(*ranges):
        yield {**env, **dict(zip(letters, values))}


def _entries_of(window: Maximum, env: Mapping[Symbol, Any], read: Reader) -> list[tuple[tuple, Any]]:
    """A max's entries inside the input, in window order (row by row), with their places:
    the places outside read −∞ and never win, so they are left out."""
    entries = []
    for inner in _window_envs(window.limits, env):
        value = read(window.function.base, _place(window.function.indices, inner))
        if value is not None:
            entries.append((_place([x for x, *_ in window.limits], inner), value))
    return entries


# ---- printing -------------------------------------------------------------------------------


class TensorPrinter(NotationPrinter):
    r"""``NotationPrinter`` taught indexed tensors: W^{(1)}_{o,c,m,n}; ∂L/∂W^{(1)}_{o,c,m,n};
    indices written s i + d m − p; sums over their letters, a Kronecker delta under the sum
    as the condition it sets; products with the gradient first, joined by ``\cdot``."""

    def __init__(self, names: Names) -> None:
        super().__init__(dict(names.tex))
        self.names = names

    def _print_Indexed(self, expr: sympy.Indexed) -> str:
        label = expr.base.label
        tex = self.names.tex.get(label, str(label))
        indices = ",".join(self._index(i) for i in expr.indices)
        if label in self.names.partial:
            return rf"\frac{{\partial L}}{{\partial {tex}_{{{indices}}}}}"
        return f"{tex}_{{{indices}}}"

    def _print_MatrixSymbol(self, expr: sympy.MatrixSymbol) -> str:
        return self.names.tex.get(expr, str(expr.name))

    def _print_Transpose(self, expr: Any) -> str:
        return f"{{{self._print(expr.arg)}}}^{{T}}"

    def _index(self, e: sympy.Expr) -> str:
        """An index expression with its letters first, in ``LETTER_ORDER``: s i + d m − p."""
        def rank(term: sympy.Expr) -> int:
            names = [x.name.rstrip("'") for x in term.free_symbols if isinstance(x, Symbol)]
            return min((LETTER_ORDER.index(n) for n in names if n in LETTER_ORDER), default=len(LETTER_ORDER))

        terms = sorted(Add.make_args(e), key=rank)
        positive = [t for t in terms if not t.could_extract_minus_sign()]
        if positive and terms[0].could_extract_minus_sign():  # d (K − 1) − m, not −m + d (K − 1)
            terms.remove(positive[0])
            terms.insert(0, positive[0])
        tex = ""
        for term in terms:
            coefficient, rest = term.as_coeff_Mul()
            sign = "-" if coefficient < 0 else "+"
            coefficient = abs(coefficient)
            factors = sorted(Mul.make_args(rest), key=rank, reverse=True)
            parts = [] if coefficient == 1 and rest != 1 else [self._print(coefficient)]
            parts += [self._print(f) if not f.is_Add else rf"\left({self._print(f)}\right)"
                      for f in factors if f != 1]
            body = " ".join(parts)
            tex += (f"{sign} " if tex or sign == "-" else "") + body + " "
        return tex.strip().replace("- ", "-", 1) if tex.startswith("- ") else tex.strip()

    def _print_Add(self, expr: sympy.Add, order: Any = None) -> str:
        """Sums and maxima first: Σ W · a + b."""
        terms = list(self._as_ordered_terms(expr, order=order))
        terms.sort(key=lambda t: not t.has(Sum, Maximum))
        tex = ""
        for term in terms:
            if tex and term.could_extract_minus_sign():
                tex += " - " + self._print(-term)
            else:
                tex += (" + " if tex else "") + self._print(term)
        return tex

    def _print_Pow(self, expr: sympy.Pow) -> str:
        if isinstance(expr.base, Indexed) and expr.exp.is_positive:  # a^{(1)}_{k}^{2} would not typeset
            return rf"\left({self._print(expr.base)}\right)^{{{self._print(expr.exp)}}}"
        return super()._print_Pow(expr)

    def _print_KroneckerDelta(self, expr: KroneckerDelta, exp: Any = None) -> str:
        return rf"\left[{self._index(expr.args[0])} = {self._index(expr.args[1])}\right]"

    def _print_Sum(self, expr: Sum) -> str:
        limits, function = list(expr.limits), expr.function
        while isinstance(function, Sum):
            limits += function.limits
            function = function.function
        summed = {x for x, *_ in limits}
        conditions = [f for f in Mul.make_args(function) if isinstance(f, KroneckerDelta) and f.free_symbols & summed]
        body = Mul(*[f for f in Mul.make_args(function) if f not in conditions])
        under = ",".join(self._print(x) for x, *_ in limits)
        if conditions:
            lines = [under] + [self._condition(c, summed) for c in conditions]
            under = r"\substack{" + r" \\ ".join(lines) + "}"
        tex = self._print(body)
        return rf"\sum_{{{under}}} " + (rf"\left({tex}\right)" if body.is_Add else tex)

    def _condition(self, delta: KroneckerDelta, summed: set[Symbol]) -> str:
        left, right = delta.args
        if not (left.free_symbols & summed):
            left, right = right, left
        return f"{self._index(left)} = {self._index(right)}"

    def _print_Mul(self, expr: sympy.Mul) -> str:
        factors = Mul.make_args(expr)
        tensors = [f for f in factors if f.has(Indexed) or isinstance(f, (Sum, IsFirstMax))]
        if not tensors or any(f.is_Pow and f.exp.is_negative for f in tensors):
            return super()._print_Mul(expr)
        constant = Mul(*[f for f in factors if f not in tensors])
        parts = []
        for f in sorted(tensors, key=self._rank):
            tex = self._print(f)
            parts.append(rf"\left({tex}\right)" if f.is_Add else tex)
        tex = r" \cdot ".join(parts)
        if constant == 1:
            return tex
        if constant == -1:
            return "- " + tex
        return f"{self._print(constant)} {tex}"

    def _rank(self, factor: sympy.Expr) -> int:
        """Gradients first, then parameters, other tensors, functions, sums, brackets:
        δ · a, W · a, ∂L/∂a · g′(z)."""
        if isinstance(factor, Indexed):
            return self.names.rank.get(factor.base.label, 2)
        if isinstance(factor, IsFirstMax):
            return 5
        return 4 if isinstance(factor, Sum) else 3


__all__ = ["Fact", "Formula", "Names", "TensorPrinter", "formulas", "scalar_values"]

