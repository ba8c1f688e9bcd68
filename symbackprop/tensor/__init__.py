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

The package, a module a job, in the direction data flows:

* ``formula``: the results, ``Formula`` and ``Fact``;
* ``calculus``: differentiating an index form, the Kronecker deltas summed out;
* ``layer``: one layer's tensors and the formulas derived from its operation's index form;
* ``evaluate``: writing a formula out at concrete indices (``Formula.at``);
* ``printer``: ``Names`` and ``TensorPrinter`` (``Formula.latex``);
* ``view``: the front, ``formulas`` and ``scalar_values``.

Imports sympy, numpy, ``indexed``, ``activations``, ``nodes``, ``engine`` and ``latex`` (the
printer); ``latex`` must not import this package.
"""

from .formula import Fact, Formula
from .printer import Names, TensorPrinter
from .view import formulas, scalar_values

__all__ = ["Fact", "Formula", "Names", "TensorPrinter", "formulas", "scalar_values"]
