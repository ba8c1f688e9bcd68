"""Activations: each is a sympy function that knows its derivative, its LaTeX and its numbers.

Every activation is one ``Activation`` entry in ``ACTIVATIONS``: its forward rule
(a sympy function applied to z), its TeX, and, through sympy's ``fdiff``, its own
derivative — so g′ prints as g′(z) and σ′ as σ(z)(1 − σ(z)), never as a
``Subs(Derivative(...))``. Concrete functions also carry an elementary form used
for ``evalf`` and for code printing (``lambdify(..., "numpy")`` and ``"math"``),
so closed forms need no extra set-up to be evaluated.

Imports sympy and ``errors`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import sympy
from sympy import Function, Heaviside, Max, Piecewise, Rational, exp, log

from .errors import SpecError, shown

LEAKY_RELU_SLOPE = Rational(1, 100)  # PyTorch's default negative_slope


def _latex_call(printer, name: str, args, exp_=None) -> str:
    """``name(args)``, raised to ``exp_`` the way sympy writes sin^2(x)."""
    inner = ", ".join(printer._print(a) for a in args)
    call = rf"{name}\left({inner}\right)"
    if exp_ is None:
        return call
    if "'" in name or "^" in name:  # a prime is a superscript already: bracket the call
        return rf"\left({call}\right)^{{{exp_}}}"
    return rf"{name}^{{{exp_}}}\left({inner}\right)"


class _Printed(Function):
    """A real function of a real argument that prints as ``tex(args)`` in LaTeX."""

    tex = ""

    def _eval_is_real(self):
        # Said outright, so sympy never digs through a closed form to find out
        # (tanh of a sum of unknowns asks for its imaginary part modulo pi).
        return self.args[0].is_real

    def _latex(self, printer, exp=None):
        return _latex_call(printer, self.tex, self.args, exp)


class _Elementary(_Printed):
    """A concrete function with an elementary form, for evalf and code printing."""

    nargs = 1

    @classmethod
    def elementary(cls, x):
        raise NotImplementedError

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            return cls.elementary(x)
        return None

    def _eval_evalf(self, prec):
        return self.elementary(self.args[0])._eval_evalf(prec)

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return self.elementary(x)

    def _numpycode(self, printer):  # lambdify(..., "numpy") prints through here
        # Parenthesised: the printer ranks a function call above any operator.
        return f"({printer._print(self.elementary(self.args[0]))})"

    _pythoncode = _numpycode  # lambdify(..., "math")


class g(_Printed):
    """The article's generic activation g, left undefined."""

    nargs = 1
    tex = "g"

    def fdiff(self, argindex=1):
        return g_prime(self.args[0])


class g_prime(_Printed):
    """g′, the generic activation's derivative."""

    nargs = 1
    tex = "g'"

    def fdiff(self, argindex=1):
        return g_second(self.args[0])


class g_second(_Printed):
    """g″."""

    nargs = 1
    tex = "g''"


class sigmoid(_Elementary):
    tex = r"\sigma"

    @classmethod
    def elementary(cls, x):
        return 1 / (1 + exp(-x))

    def fdiff(self, argindex=1):
        return self * (1 - self)


class relu_step(_Elementary):
    """ReLU′: 1 for z > 0, else 0 — 0 at z = 0, as PyTorch. Printed as the Iverson bracket
    [z > 0], as max pooling's brackets are."""

    tex = r"\operatorname{ReLU}'"

    @classmethod
    def elementary(cls, x):
        return Heaviside(x, 0)

    def fdiff(self, argindex=1):
        return sympy.S.Zero

    def _latex(self, printer, exp=None):
        tex = rf"\left[{printer._print(self.args[0])} > 0\right]"
        return tex if exp is None else rf"{tex}^{{{exp}}}"


class relu(_Elementary):
    tex = r"\operatorname{ReLU}"

    @classmethod
    def elementary(cls, x):
        return Max(x, 0)

    def fdiff(self, argindex=1):
        return relu_step(self.args[0])


class leaky_step(_Elementary):
    """Leaky ReLU′: 1 for z > 0, else the slope — the slope at z = 0, as PyTorch."""

    tex = r"\operatorname{LReLU}'"

    @classmethod
    def elementary(cls, x):
        return Piecewise((1, x > 0), (LEAKY_RELU_SLOPE, True))

    def fdiff(self, argindex=1):
        return sympy.S.Zero


class leaky_relu(_Elementary):
    tex = r"\operatorname{LReLU}"

    @classmethod
    def elementary(cls, x):
        return Piecewise((x, x > 0), (LEAKY_RELU_SLOPE * x, True))

    def fdiff(self, argindex=1):
        return leaky_step(self.args[0])


class softplus(_Elementary):
    tex = r"\operatorname{softplus}"

    @classmethod
    def elementary(cls, x):
        return Max(x, 0) + log(1 + exp(-abs(x)))  # log(1 + e^x) without overflow

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])


_Z = sympy.Dummy("z", real=True)
_A = sympy.Dummy("a", real=True)


@dataclass(frozen=True)
class Activation:
    """One activation: a = apply(z), with its derivative and how it is written."""

    name: str
    apply: Callable[[sympy.Expr], sympy.Expr]
    label: str  # how documents name it in running text (LaTeX)
    formula: str  # TeX definition, for documents
    generic: bool = False
    torch: tuple[str, dict] | None = None  # its torch.nn twin: class name and arguments
    # its values lie in a bounded interval (σ's (0, 1), tanh's (−1, 1)): read as logits by a
    # loss, they cap how sure the prediction can be (see Network's warning)
    bounded: bool = False

    @cached_property
    def _template(self) -> sympy.Expr:
        applied = self.apply(_Z)
        derivative = applied.diff(_Z)
        if applied != _Z:
            derivative = derivative.xreplace({applied: _A})
        return derivative

    def derivative(self, z: sympy.Expr, a: sympy.Expr) -> sympy.Expr:
        """da/dz, written with the node's own a where the derivative allows (σ′ = a(1 − a))."""
        return self._template.xreplace({_Z: z, _A: a})


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("g", g, "$g$", r"a = g(z)\ \text{(generic)}", generic=True),
        Activation("identity", lambda z: z, "identity", r"a = z", torch=("Identity", {})),
        Activation(
            "sigmoid", sigmoid, r"$\sigma$", r"\sigma(z) = \frac{1}{1 + e^{-z}}", torch=("Sigmoid", {}),
            bounded=True,
        ),
        Activation(
            "tanh", sympy.tanh, r"$\tanh$", r"\tanh(z) = \frac{e^{z} - e^{-z}}{e^{z} + e^{-z}}",
            torch=("Tanh", {}), bounded=True,
        ),
        Activation("relu", relu, "ReLU", r"\operatorname{ReLU}(z) = \max(z, 0)", torch=("ReLU", {})),
        Activation(
            "softplus", softplus, "softplus", r"\operatorname{softplus}(z) = \log\left(1 + e^{z}\right)",
            torch=("Softplus", {"beta": 1, "threshold": 20}),  # torch's defaults, the only ones read
        ),
        Activation(
            "leaky_relu",
            leaky_relu,
            "leaky ReLU",
            r"\operatorname{LReLU}(z) = \begin{cases} z & z > 0 \\ 0.01\,z & z \le 0 \end{cases}",
            torch=("LeakyReLU", {"negative_slope": 0.01}),
        ),
    ]
}


def activation(name: str) -> Activation:
    """The registered activation called ``name``; SpecError naming the choices otherwise."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise SpecError(f"unknown activation {shown(name)}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]
