"""One layer's tensors, its operation's index form, and the general formulas derived from it:
forward, activation, the loss's gradient (last layer), δ, ∂L/∂W, ∂L/∂b and ∂L/∂(input) — one
per tensor the layer reads, its part alone (printed |_{via l}) of a tensor other layers read
too — each fact after the formula it restates.

Imports sympy, ``activations``, ``engine`` (the type of what it reads), ``indexed``,
``calculus``, ``evaluate``, ``formula`` and ``printer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from math import prod
from typing import Any

import sympy
from sympy import Indexed, IndexedBase, Symbol

from ..activations import activation
from ..engine import Engine as Derivation
from ..indexed import Bases, Claim, IndexForm, IsFirstMax, index
from ..ops.base import Parameter
from .calculus import backward, bounds, entries
from .evaluate import numbers
from .formula import Fact, Formula
from .printer import Names


def input_role(place: int) -> str:
    """The role of a layer's input at ``place`` for ``Formula.at``: "input", then "input2", …"""
    return "input" if place == 0 else f"input{place + 1}"


COUPLED = ("; the statistics are the batch's, so that every output depends on every sample: the input "
           "gradient is not one sample's, and its compact form over the batch is Derivation.compact(l)")


def letter(parameter: Parameter) -> str:
    """How the tensor view writes a parameter: its prefix (W, b), or the letter it declares where
    the prefix is a word (\\gamma for "gamma")."""
    tex = parameter.tex
    return parameter.prefix if not tex or tex.lower() == parameter.prefix.lower() else tex


def listed(numbers: Sequence[int]) -> str:
    """2; 2 and 3; 2, 3 and 4."""
    words = [str(n) for n in numbers]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


class LayerFormulas:
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
            delta=self._base(f"delta{l}", rf"\delta^{{({l})}}"),
            # W^{(l)}, b^{(l)}: each parameter the operation declares, named as the network names it
            parameters={p.prefix: self._base(f"{p.prefix}{l}", f"{letter(p)}^{{({l})}}") for p in self.op.parameters},
            tex=self.tex,
        )
        self.activation = self._base(f"a{l}", f"a^{{({l})}}")
        self.upstream = self._gradient(self.activation)
        self.y = self._base("y", "y")
        # the operation takes its input as it is (a dense layer flattens an image itself)
        self.form: IndexForm = self.op.tensor_form(net.input_shape_of(l), self.bases)
        self.source_of = dict(zip(inputs, net.sources[l - 1]))  # each input tensor → its layer
        self.readers_of = {base: net.consumers(s) for base, s in self.source_of.items()}
        self.part_of: dict[Symbol, int] = {}  # gradient labels that are this layer's part alone

    def _base(self, label: str, tex: str) -> IndexedBase:
        base = IndexedBase(Symbol(label))
        self.tex[base.label] = tex
        return base

    def _gradient(self, base: IndexedBase) -> IndexedBase:
        """∂L/∂(base), printed as such."""
        gradient = self._base(f"dL_d{base.label}", self.tex[base.label])
        self.partial.add(gradient.label)
        return gradient

    def _part(self, base: IndexedBase) -> IndexedBase:
        """This layer's part of ∂L/∂(base), for a tensor other layers read too: printed
        ∂L/∂(base) |_{via l}."""
        part = self._base(f"dL_d{base.label}_part{self.number}", self.tex[base.label])
        self.partial.add(part.label)
        self.part_of[part.label] = self.number
        return part

    @property
    def inputs(self) -> list[sympy.Indexed]:
        """The generic element of each tensor the layer reads, once each: an addition that
        reads one tensor twice has one gradient for it, holding both parts."""
        first: dict[IndexedBase, sympy.Indexed] = {}
        for element in self.form.inputs or (self.form.input,):
            first.setdefault(element.base, element)
        return list(first.values())

    @property
    def names(self) -> Names:
        bases = self.bases
        rank = {bases.delta: 0, **dict.fromkeys(bases.parameters.values(), 1)}
        rank.update({hat: rank[base] for hat, base in bases.hats.items() if base in rank})
        labels = {base.label: r for base, r in rank.items()} | dict.fromkeys(self.partial, 0)
        order = {element.base.label: place for place, element in enumerate(self.inputs)}
        return Names(self.tex, frozenset(self.partial), labels, order, dict(self.part_of))

    def _formula(self, kind: str, lhs: sympy.Expr, rhs: sympy.Expr, letters: Sequence[Symbol],
                 note: str = "", cls: type[Formula] = Formula, **more: Any) -> Formula:
        form = self.form
        out_shape = form.shape(form.output)
        tensors: dict[IndexedBase, tuple[str, tuple[int, ...]]] = {}
        for place, element in enumerate(form.inputs or (form.input,)):  # a tensor read twice: its first role
            tensors.setdefault(element.base, (input_role(place), form.shape(element)))
        tensors |= {
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
            result.append(self._parameter(name, element, self._gradient(element.base)))
        padding = padded and len(self.inputs) == 1
        inside = "for indices inside the input: padded places get no gradient" if padding else ""
        if self.op.couples_samples():
            # its statistics are the batch's, functions of every sample's input: differentiated as
            # constants, the input gradient would be wrong. It couples the samples, and the engine
            # derives its compact form over the batch (``Engine.compact``).
            result[0] = replace(result[0], note=result[0].note + COUPLED)
            return self._with_facts(result)
        for element in self.inputs:
            result.append(self._input(element, inside))
        return self._with_facts(result)

    def input_formula(self, source: int) -> Formula:
        """The formula of the gradient this layer sends back to layer ``source``'s output
        (0: the input x): ∂L/∂(input), or its part of it when other layers read it too."""
        for element in self.inputs:
            if self.source_of[element.base] == source:
                return self._input(element)
        raise ValueError(f"layer {self.number} does not read layer {source}")

    def _input(self, element: sympy.Indexed, note: str = "") -> Formula:
        """∂L/∂(input), or this layer's part of it (printed |_{via l}) where other layers
        read the same tensor: their parts add up (the article's rule (20))."""
        readers = self.readers_of[element.base]
        if len(readers) == 1:
            return self._parameter("input", element, self._gradient(element.base), note)
        others = [r for r in readers if r != self.number]
        reads = f"layers {listed(others)} read" if len(others) > 1 else f"layer {others[0]} reads"
        share = (f"this layer's part of the gradient: {reads} the same tensor, and its gradient is "
                 "the sum of the parts of every layer reading it (the article's rule (20))")
        return self._parameter("input", element, self._part(element.base), "; ".join(filter(None, [note, share])))

    def _padding_note(self) -> str:
        """How the inputs read outside their bounds, when some output's window reaches there."""
        form, values = self.form, numbers(self.form.settings)
        shapes = {element.base: form.shape(element) for element in self.inputs}
        for read in form.expr.atoms(Indexed):
            if read.base not in shapes:
                continue
            for axis, size in zip(read.indices, shapes[read.base]):
                low, high = bounds(axis.xreplace(values), form.sizes)
                if low < 0 or high >= size:
                    if len(shapes) > 1:
                        value = "0" if form.outside == 0 else "minus infinity"
                        return f"; each input reads {value} at indices outside its bounds"
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
        rhs = backward(applied, out, self.form.sizes, self.upstream, bases.output[out], self.form.settings)
        rhs = rhs.xreplace({applied: self.activation[out]})  # σ′ written σ(1 − σ) = a(1 − a)
        return self._formula("delta", self._gradient(bases.output)[out], rhs, out,
                             "the gradient at the layer's weighted sums", alias=bases.delta[out])

    def _parameter(self, name: str, element: sympy.Indexed, gradient: IndexedBase, note: str = "") -> Formula:
        """∂L/∂(element), written as ``gradient``: Σ over the outputs of δ times the output's
        derivative."""
        form = self.form
        rhs = backward(form.expr, form.output.indices, form.sizes, self.bases.delta, element, form.settings)
        # the forward's value written as the output where the derivative holds it, as the graph's
        # nodes write their local gradients: an activation's tanh′ is 1 − a², not 1 − tanh²(x)
        rhs = rhs.xreplace({form.expr: form.output})
        if rhs.has(IsFirstMax):
            note += ("; the bracket is 1 where (m, n) holds the window's first maximum in row-by-row "
                     "order (PyTorch's choice when values tie) and 0 elsewhere")
        return self._formula(name, gradient[element.indices], rhs, element.indices, note.lstrip("; "))

    def _loss(self) -> list[Formula]:
        """∂L/∂a^{(L)}_k of the loss's index form, over the outputs flattened (and its facts)."""
        shape = self.form.shape(self.form.output)
        size = prod(shape)
        channels = shape[0] if len(shape) == 3 else size  # a map's softmax runs over its channels
        a = self.activation if self.activated else self.bases.output
        (k,) = index("k")
        role = "activation" if self.activated else "output"
        more = {"tensors": {a: (role, (size,))}, "sizes": {k: size}}
        rhs = backward(self.loss.index_form(a, self.y, size, channels), (), {k: size}, None, a[k],
                       self.form.settings)
        formula = self._formula("loss", self._gradient(a)[k], rhs, (k,),
                                "the outputs flattened in (channel, row, column) order", **more)
        claims = self.loss.index_claims(a, self.y, size, channels) if self.loss.index_claims else ()
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
            if gradient.label in self.part_of:
                self.tex[lhs] = rf"\left.{self.tex[lhs]}\right|_{{\text{{via }}{self.number}}}"
            index_rhs = entries(claim.rhs, letters, self.bases.matrices)
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


