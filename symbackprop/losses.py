"""Losses: each is one ``Loss`` entry in ``LOSSES`` — its value and its gradient.

A loss maps the network's outputs a_1..a_K and the targets y_1..y_K to a scalar.
``gradient`` gives ∂L/∂a_k as sympy expressions in those symbols: the upstream
gradients where backpropagation starts. Definitions follow PyTorch for a single
sample: ``mse`` is ``MSELoss`` (mean over the K outputs), ``cross_entropy`` is
``CrossEntropyLoss`` with probability targets (softmax of the outputs inside),
``binary_cross_entropy`` is ``BCEWithLogitsLoss`` summed over the outputs (σ inside).

A network whose output is a map C×H×W is scored per pixel, as torch scores an (N, C, H, W)
output: ``cross_entropy`` takes a softmax over the C channels at every pixel and sums over
the pixels (its ``groups``: the outputs of one pixel, one group per pixel; a vector output is
one group); ``sse``, ``mse`` and ``binary_cross_entropy`` are elementwise anyway. A softmax over
a single output is always 1: ``check`` refuses cross_entropy there, pointing to
binary_cross_entropy.

The ``generic`` loss is the article's undefined L(a, y); its partial derivatives
print as ∂L/∂a^{(l)}_k. Each concrete loss also has an index form (``index_form``, over
the outputs a[k] and targets y[k], k < K), which ``tensor`` differentiates.

Imports sympy, ``errors`` and ``indexed`` (for the index letters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import sympy
from sympy import Function, Integer, Rational, exp, log

from .activations import sigmoid, softplus
from .errors import SpecError, shown
from .indexed import Claim, index

Exprs = Sequence[sympy.Expr]
Groups = Sequence[Sequence[int]]  # the outputs each softmax runs over, 0-based


def groups(shape: Sequence[int]) -> list[list[int]]:
    """The softmax groups of an output of ``shape``: every output together for a vector (K,),
    the C channels of each pixel for a map (C, H, W), in (channel, row, column) order.

    >>> groups((3,)), groups((2, 1, 2))
    ([[0, 1, 2]], [[0, 2], [1, 3]])
    """
    if len(shape) != 3:
        return [list(range(shape[0]))]
    channels, pixels = shape[0], shape[1] * shape[2]
    return [[c * pixels + p for c in range(channels)] for p in range(pixels)]


@cache
def generic_loss_functions(output_layer: int) -> tuple[type[Function], type[Function]]:
    """The undefined L(a_1..a_K, y_1..y_K) and its partials ∂L/∂a_k, for outputs of layer l.

    ``dL(k, a_1.., y_1..)`` is ∂L/∂a_k; it prints without its arguments, as the article does.
    """

    def partial_latex(self, printer, exp=None):
        k = self.args[0]
        tex = rf"\frac{{\partial L}}{{\partial a^{{({output_layer})}}_{{{k}}}}}"
        return tex if exp is None else rf"\left({tex}\right)^{{{exp}}}"

    def real_if_arguments_are(self):
        return all(arg.is_real for arg in self.args) or None

    partial = type("dL", (Function,), {"_latex": partial_latex, "_eval_is_real": real_if_arguments_are})

    def loss_fdiff(self, argindex=1):
        return partial(Integer(argindex), *self.args)

    def loss_latex(self, printer, exp=None):
        inner = ", ".join(printer._print(a) for a in self.args)
        return rf"L\left({inner}\right)" + ("" if exp is None else f"^{{{exp}}}")

    loss = type(
        "L", (Function,),
        {"fdiff": loss_fdiff, "_latex": loss_latex, "_eval_is_real": real_if_arguments_are},
    )
    return loss, partial


def _generic_value(a: Exprs, y: Exprs, output_layer: int, groups: Groups = ()) -> sympy.Expr:
    return generic_loss_functions(output_layer)[0](*a, *y)


def _generic_gradient(a: Exprs, y: Exprs, output_layer: int, groups: Groups = ()) -> list[sympy.Expr]:
    partial = generic_loss_functions(output_layer)[1]
    return [partial(Integer(k), *a, *y) for k in range(1, len(a) + 1)]


def _sse_value(a: Exprs, y: Exprs, output_layer: int, groups: Groups = ()) -> sympy.Expr:
    return Rational(1, 2) * sympy.Add(*[(ak - yk) ** 2 for ak, yk in zip(a, y)])


def _sse_gradient(a: Exprs, y: Exprs, output_layer: int, groups: Groups = ()) -> list[sympy.Expr]:
    return [ak - yk for ak, yk in zip(a, y)]


def _mse_value(a: Exprs, y: Exprs, output_layer: int, groups: Groups = ()) -> sympy.Expr:
    return Rational(1, len(a)) * sympy.Add(*[(ak - yk) ** 2 for ak, yk in zip(a, y)])


def _mse_gradient(a: Exprs, y: Exprs, output_layer: int, groups: Groups = ()) -> list[sympy.Expr]:
    return [Rational(2, len(a)) * (ak - yk) for ak, yk in zip(a, y)]


def _cross_entropy_value(a: Exprs, y: Exprs, output_layer: int, groups: Groups = ()) -> sympy.Expr:
    terms = []
    for group in groups or [range(len(a))]:
        log_partition = log(sympy.Add(*[exp(a[k]) for k in group]))
        terms += [y[k] * (a[k] - log_partition) for k in group]
    return -sympy.Add(*terms)


def _cross_entropy_gradient(a: Exprs, y: Exprs, output_layer: int, groups: Groups = ()) -> list[sympy.Expr]:
    # y need not sum to one, so the softmax term keeps its factor Σ y_j (over the group).
    gradient: list[sympy.Expr] = [sympy.S.Zero] * len(a)
    for group in groups or [range(len(a))]:
        partition = sympy.Add(*[exp(a[k]) for k in group])
        total = sympy.Add(*[y[k] for k in group])
        for k in group:
            gradient[k] = exp(a[k]) / partition * total - y[k]
    return gradient


def _binary_value(a: Exprs, y: Exprs, output_layer: int, groups: Groups = ()) -> sympy.Expr:
    # −y log σ(a) − (1 − y) log(1 − σ(a)) = softplus(a) − y a: finite for any logit
    return sympy.Add(*[softplus(ak) - yk * ak for ak, yk in zip(a, y)])


def _binary_gradient(a: Exprs, y: Exprs, output_layer: int, groups: Groups = ()) -> list[sympy.Expr]:
    return [sigmoid(ak) - yk for ak, yk in zip(a, y)]


def _sse_index(a: sympy.IndexedBase, y: sympy.IndexedBase, size: int, channels: int = 0) -> sympy.Expr:
    (k,) = index("k")
    return Rational(1, 2) * sympy.Sum((a[k] - y[k]) ** 2, (k, 0, size - 1))


def _mse_index(a: sympy.IndexedBase, y: sympy.IndexedBase, size: int, channels: int = 0) -> sympy.Expr:
    (k,) = index("k")
    return Rational(1, size) * sympy.Sum((a[k] - y[k]) ** 2, (k, 0, size - 1))


def _cross_entropy_index(a: sympy.IndexedBase, y: sympy.IndexedBase, size: int, channels: int = 0) -> sympy.Expr:
    """Over the outputs flattened; for a map of ``channels`` channels and P pixels, output
    k = c·P + p, with a softmax over each pixel's channels, summed over the pixels."""
    k, j = index("k j")
    pixels = size // (channels or size)
    if pixels == 1:
        log_partition = log(sympy.Sum(exp(a[j]), (j, 0, size - 1)))
        return -sympy.Sum(y[k] * (a[k] - log_partition), (k, 0, size - 1))
    c, p = index("c p")
    log_partition = log(sympy.Sum(exp(a[j * pixels + p]), (j, 0, channels - 1)))
    return -sympy.Sum(y[c * pixels + p] * (a[c * pixels + p] - log_partition),
                      (c, 0, channels - 1), (p, 0, pixels - 1))


def _binary_index(a: sympy.IndexedBase, y: sympy.IndexedBase, size: int, channels: int = 0) -> sympy.Expr:
    (k,) = index("k")
    return sympy.Sum(softplus(a[k]) - y[k] * a[k], (k, 0, size - 1))


def _cross_entropy_claims(
    a: sympy.IndexedBase, y: sympy.IndexedBase, size: int, channels: int = 0
) -> tuple[Claim, ...]:
    if size // (channels or size) > 1:
        return ()  # a map: softmax − y holds pixel by pixel, each pixel's target summing to one
    k, j = index("k j")
    softmax = exp(a[k]) / sympy.Sum(exp(a[j]), (j, 0, size - 1))
    return (
        Claim(
            "loss",
            "for a probability target (its entries summing to one) the gradient at the logits "
            "is the softmax minus the target",
            softmax - y[k],
            condition=(sympy.Sum(y[j], (j, 0, size - 1)), Integer(1)),
        ),
    )


@dataclass(frozen=True)
class Loss:
    """One loss: value(a, y, l) and gradient(a, y, l) = [∂L/∂a_k], with its TeX definition."""

    name: str
    value: Callable[[Exprs, Exprs, int, Groups], sympy.Expr]  # (a, y, output layer, groups)
    gradient: Callable[[Exprs, Exprs, int, Groups], list[sympy.Expr]]
    formula: str  # TeX, with a_k for the outputs and y_k for the targets
    generic: bool = False
    grouped: bool = False  # a softmax over each group (per pixel), summed over the groups
    # what it applies to the outputs itself, which it reads as logits ("softmax"); None: it
    # reads them as they are
    squashes_logits: str | None = None
    # L over the outputs a[k] and targets y[k], k < K, of an output of C channels:
    # (a, y, K, C) → index form; None when generic
    index_form: Callable[[sympy.IndexedBase, sympy.IndexedBase, int, int], sympy.Expr] | None = None
    # facts about its gradient, (a, y, K, C) → claims of kind "loss", in the same letters
    index_claims: Callable[[sympy.IndexedBase, sympy.IndexedBase, int, int], tuple[Claim, ...]] | None = None


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in [
        Loss("generic", _generic_value, _generic_gradient, r"L(a, y)\ \text{(generic)}", True),
        Loss("sse", _sse_value, _sse_gradient, r"L = \frac{1}{2}\sum_{k} (a_k - y_k)^2",
             index_form=_sse_index),
        Loss("mse", _mse_value, _mse_gradient, r"L = \frac{1}{n_{\text{out}}}\sum_{k} (a_k - y_k)^2",
             index_form=_mse_index),
        Loss(
            "cross_entropy",
            _cross_entropy_value,
            _cross_entropy_gradient,
            r"L = -\sum_{k} y_k \log \frac{e^{a_k}}{\sum_j e^{a_j}}",
            index_form=_cross_entropy_index,
            index_claims=_cross_entropy_claims,
            grouped=True,
            squashes_logits="softmax",
        ),
        Loss(
            "binary_cross_entropy",
            _binary_value,
            _binary_gradient,
            r"L = \sum_{k} \left(\operatorname{softplus}(a_k) - y_k a_k\right)",
            index_form=_binary_index,
            squashes_logits="a sigmoid",
        ),
    ]
}


def loss(name: str) -> Loss:
    """The registered loss called ``name``; SpecError naming the choices otherwise."""
    if not isinstance(name, str) or name not in LOSSES:
        raise SpecError(f"unknown loss {shown(name)}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]


def check_output(name: str, shape: Sequence[int]) -> None:
    """A SpecError when loss ``name`` cannot score an output of ``shape``: a softmax over one
    output (one unit, or a map of one channel) is always 1, so cross-entropy would be 0 with
    zero gradients, in silence."""
    if LOSSES[name].grouped and shape[0] == 1:
        what = "one unit" if len(shape) == 1 else "a map of one channel"
        raise SpecError(
            f"cross_entropy on {what}: a softmax over one output is always 1, so the loss would "
            "be 0 and every gradient 0; use binary_cross_entropy (a sigmoid per output) for a "
            "yes/no output or a binary mask"
        )
