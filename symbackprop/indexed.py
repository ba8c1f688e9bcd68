"""Index-form building blocks: what an operation's tensor face writes its forward with.

An operation states its forward for every output at once (``IndexForm``), in sympy's
``Indexed`` and ``Sum``, e.g. a convolution's
z[o, i, j] = Σ_{c,m,n} W[o, c, m, n] · a[c, s·i + d·m − p, s·j + d·n − p];
``symbackprop.tensor`` differentiates it. This module holds what such forms are made of:

* ``index`` (integer index letters) and ``Settings`` (a layer's stride, padding, … as the
  symbols s, p, … with their values: one symbol when both axes agree, s_h and s_w when not);
* ``Maximum``, max over a window in index form, whose derivative routes to the window's
  first maximum through ``IsFirstMax``: the Iverson bracket [(m, n) = arg max], which at
  concrete indices is ``nodes.window_max``'s product of brackets [v_j > v_k] · [v_j ≥ v_k];
* ``Bases`` (one layer's tensors as ``IndexedBase`` objects, and their TeX), ``Spread``
  (a tensor with zeros put between its entries: δ spread out by the stride, a dilated
  kernel) and ``Claim`` (a fact an operation states about one of its gradients — the
  weight gradient is a cross-correlation — which ``tensor`` checks against what it derives).

Imports sympy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sympy
from sympy import IndexedBase, Symbol, Tuple
from sympy.concrete.expr_with_limits import ExprWithLimits

Pair = tuple[int, int]


def index(names: str) -> tuple[Symbol, ...]:
    """Integer index letters: ``index("o c i j")``."""
    return tuple(Symbol(name, integer=True) for name in names.split())


def primed(letter: Symbol) -> Symbol:
    """m → m′: the letter a bound copy of a window uses."""
    return Symbol(letter.name + "'", integer=True)


class Settings:
    """A layer's settings as symbols, each remembered with its value.

    >>> settings = Settings()
    >>> settings.pair("s", (2, 2)), settings.pair("p", (1, 0))
    ((s, s), (p_h, p_w))
    >>> settings.values
    {s: 2, p_h: 1, p_w: 0}
    """

    def __init__(self) -> None:
        self.values: dict[Symbol, int] = {}

    def pair(self, letter: str, values: Pair) -> tuple[Symbol, Symbol]:
        """One symbol for both axes when they agree, ``letter_h`` and ``letter_w`` otherwise."""
        if values[0] == values[1]:
            names = (letter, letter)
        else:
            names = (f"{letter}_h", f"{letter}_w")
        symbols = tuple(Symbol(name, integer=True, nonnegative=True) for name in names)
        self.values.update(zip(symbols, values))
        return symbols  # type: ignore[return-value]

    def pairs(self, **settings: Pair) -> list[tuple[Symbol, Symbol]]:
        """``pair`` of each keyword in order: ``s, p = settings.pairs(s=(2, 2), p=(1, 1))``."""
        return [self.pair(letter, values) for letter, values in settings.items()]


# ---- max over a window ------------------------------------------------------------------------


class Maximum(ExprWithLimits):
    """max over a window of ``function``: ``Maximum(a[c, s*i + m - p, …], (m, 0, 1), (n, 0, 1))``.

    Its derivative is the sum over the window of the inner derivative times the bracket
    that the place is the window's first maximum (``IsFirstMax``): max pooling routes the
    gradient to the input that won, the first of them when several tie (PyTorch's choice).
    Places outside the input read −∞ and never win.
    """

    is_commutative = True

    def _eval_derivative(self, x: Any) -> sympy.Expr:
        places = [limit[0] for limit in self.limits]
        inner = self.function.diff(x)
        if inner == 0:
            return sympy.S.Zero
        bound = {m: primed(m) for m in places}
        window = Maximum(
            self.function.xreplace(bound), *[(bound[m], low, high) for m, low, high in self.limits]
        )
        return sympy.Sum(inner * IsFirstMax(Tuple(*places), window), *self.limits)

    def _latex(self, printer: Any) -> str:
        under = ",".join(printer._print(limit[0]) for limit in self.limits)
        return rf"\max_{{{under}}} {printer._print(self.function)}"


class IsFirstMax(sympy.Expr):
    """[(m, n) = arg max of the window]: 1 when place (m, n) holds the window's first maximum
    in window order (row by row), 0 otherwise. A step: its derivative is 0 where it has one.

    At concrete indices it is ``nodes.window_max(v_1, …, v_k).fdiff(j)``, the product of
    brackets Π_{k<j} [v_j > v_k] · Π_{k>j} [v_j ≥ v_k] over the places inside the input.
    """

    is_commutative = True

    def __new__(cls, place: Tuple, window: Maximum):
        return sympy.Expr.__new__(cls, place, window)

    @property
    def place(self) -> Tuple:
        return self.args[0]

    @property
    def window(self) -> Maximum:
        return self.args[1]

    def _eval_derivative(self, x: Any) -> sympy.Expr:
        return sympy.S.Zero

    def _latex(self, printer: Any) -> str:
        place = ", ".join(printer._print(m) for m in self.place)
        under = ",".join(printer._print(limit[0]) for limit in self.window.limits)
        tex = rf"({place})" if len(self.place) > 1 else place
        return (
            rf"\left[{tex} = \operatorname*{{arg\,max}}_{{{under}}} "
            rf"{printer._print(self.window.function)}\right]"
        )


# ---- a layer's tensors ------------------------------------------------------------------------


@dataclass
class Bases:
    """One layer's tensors as ``IndexedBase`` objects, and how each prints (``tex``).

    ``input`` is what the layer reads (x or a^{(l-1)}), ``output`` what its operation writes
    (z^{(l)}, or a^{(l)} for a pool), ``delta`` the gradient of the loss with respect to
    ``output``; ``parameters`` the tensors of the parameters its operation declares, by prefix
    (``Op.parameters``), which an operation reads as attributes: ``t.W``, ``t.b``.
    """

    input: IndexedBase
    output: IndexedBase
    delta: IndexedBase
    parameters: dict[str, IndexedBase] = field(default_factory=dict)
    tex: dict[Any, str] = field(default_factory=dict)  # IndexedBase label or MatrixSymbol → TeX
    # each matrix → its tensor and whether it is a column vector (indexed by its row alone)
    matrices: dict[sympy.MatrixSymbol, tuple[IndexedBase, bool]] = field(default_factory=dict)
    hats: dict[IndexedBase, IndexedBase] = field(default_factory=dict)  # δ̂ → δ, Ŵ → W
    # an operation of several inputs reads each of these (``input`` is the first)
    inputs: tuple[IndexedBase, ...] = ()

    def __getattr__(self, prefix: str) -> IndexedBase:
        """A declared parameter's tensor by its prefix: ``t.W`` is W^{(l)}."""
        parameters = self.__dict__.get("parameters", {})
        if prefix not in parameters:
            raise AttributeError(f"no tensor {prefix!r}: the operation declares {', '.join(parameters) or 'no parameters'}")
        return parameters[prefix]

    def hat(self, base: IndexedBase) -> IndexedBase:
        """A new tensor named after ``base`` with a hat: δ̂, Ŵ."""
        hat = IndexedBase(Symbol(f"hat_{base.label}"))
        letter, _, layer = self.tex[base.label].partition("^")
        self.tex[hat.label] = rf"\hat{{{letter}}}" + ("^" + layer if layer else "")
        self.hats[hat] = base
        return hat

    def matrix(self, base: IndexedBase, rows: int, columns: int | None = None) -> sympy.MatrixSymbol:
        """``base`` as a matrix, or as a column vector when ``columns`` is None; printed as ``base``."""
        matrix = sympy.MatrixSymbol(str(base.label), rows, columns or 1)
        self.tex[matrix] = self.tex[base.label]
        self.matrices[matrix] = (base, columns is None)
        return matrix


@dataclass(frozen=True)
class Spread:
    """``hat`` is ``base`` with (factor − 1) zeros put between neighbours along each axis:
    hat[…, f·i, …] = base[…, i, …], and 0 at every index that is not a multiple of f."""

    hat: IndexedBase
    base: IndexedBase
    factors: tuple[sympy.Expr, ...]

    def equation(self, letters: tuple[Symbol, ...]) -> sympy.Eq:
        """hat[f₁·i₁, …] = base[i₁, …], for documents."""
        spread = [f * i for f, i in zip(self.factors, letters)]
        return sympy.Eq(self.hat[tuple(spread)], self.base[letters], evaluate=False)

    def source(self, index: tuple[int, ...], factors: tuple[int, ...]) -> tuple[int, ...] | None:
        """The base's index that ``hat[index]`` holds, or None where it holds an inserted zero."""
        if any(i % f for i, f in zip(index, factors)):
            return None
        return tuple(i // f for i, f in zip(index, factors))


@dataclass(frozen=True)
class Claim:
    """A fact an operation states about one of its gradients, for ``tensor`` to check.

    ``rhs`` is in the free indices of the gradient it restates (an index form), or a matrix
    expression whose entries are; ``spreads`` define the hatted tensors it reads.
    """

    kind: str  # the gradient it restates: "W", "input" or "loss"
    statement: str  # the sentence students remember
    rhs: sympy.Expr
    spreads: tuple[Spread, ...] = ()
    condition: tuple[sympy.Expr, sympy.Expr] | None = None  # holds when lhs = rhs: Σ_j y_j = 1


@dataclass(frozen=True)
class IndexForm:
    """An operation's forward in index form, for every output element at once.

    ``output`` = ``expr``, where the free index letters run over ``0 ≤ letter < sizes[letter]``
    and the settings symbols take ``settings`` values. ``input`` and ``parameters`` are the
    generic elements ``tensor`` differentiates by; the input reads ``outside`` beyond its
    bounds (0: zero padding; −∞: max pooling's padding, which never wins).
    """

    output: sympy.Indexed
    expr: sympy.Expr
    input: sympy.Indexed
    parameters: dict[str, sympy.Indexed]
    sizes: dict[Symbol, int]
    settings: dict[Symbol, int]
    outside: sympy.Expr = sympy.S.Zero
    claims: tuple[Claim, ...] = ()
    # an operation of several inputs: the generic element of each (``input`` is the first)
    inputs: tuple[sympy.Indexed, ...] = ()

    def shape(self, element: sympy.Indexed) -> tuple[int, ...]:
        """The shape of the tensor ``element`` belongs to, from its letters' sizes."""
        return tuple(self.sizes[i] for i in element.indices)


__all__ = [
    "Bases", "Claim", "IndexForm", "IsFirstMax", "Maximum", "Settings", "Spread",
    "index", "primed",
]
