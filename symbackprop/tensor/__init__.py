"""The tensor view: each layer's general formulas, derived from its operation's index form.

Beside the article's scalar derivation (``derive``, one node at a time) a course writes each
layer's rules once for every index: forward, δ, ∂L/∂W, ∂L/∂b and ∂L/∂(input). Here they
are derived, never typed: ``formulas(d, l)`` takes layer l's index form
(``Op.tensor_form``: sympy ``Indexed`` and ``Sum``), differentiates it with ``sympy.diff``
and sums the Kronecker deltas out. For a convolution:

    ∂L/∂W[o', c', m', n'] = Σ_{o,i,j} δ[o, i, j] · ∂z[o, i, j]/∂W[o', c', m', n']
                          = Σ_{i,j} δ[o', i, j] · a[c', s·i + d·m' − p, s·j + d·n' − p]

A delta that fixes a summed letter to a value inside its range is summed out (a
concatenation's second input gets δ[v + 1, i, j]); the others stay, printed as conditions
under the sum (an input's gradient collects the outputs whose window holds it: Σ over o, i,
j, m, n with s·i + d·m − p = u and s·j + d·n − p = v). The input reads 0 outside its bounds
(zero padding; −∞ under max pooling), and the input gradient is stated for indices inside
them: padded places get no gradient.

On a graph, a layer may read several tensors (an addition, a concatenation: one input
formula per tensor, roles "input", "input2", … in the order it reads them) and its output
may be read by several layers. Each reader's input formula is then its part of the gradient,
printed ∂L/∂a^{(k)} |_{via r}, and ``formulas(d, k)`` gains an "upstream" formula after
the activation: ∂L/∂a^{(k)} = the sum of those parts, derived from the readers' formulas (the
article's rule (20); ``upstream_formula(d, 0)`` for the input x). It reads the tensors of
several layers, each by its name ("a1", "delta2", "W2").

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
* ``fork``: the upstream formula of a tensor several layers read, the sum of their parts;
* ``evaluate``: writing a formula out at concrete indices (``Formula.at``);
* ``printer``: ``Names`` and ``TensorPrinter`` (``Formula.latex``);
* ``view``: the front, ``formulas`` and ``scalar_values``;
* ``adjoint``: two operations related by their derivatives (a transposed convolution's forward
  is its convolution's input gradient, and the other way round), ``relations``, checked.

Imports sympy, numpy, ``indexed``, ``activations``, ``nodes``, ``engine`` and ``latex`` (the
printer); ``latex`` must not import this package.
"""

from .adjoint import Relation, relations
from .fork import upstream_formula
from .formula import Fact, Formula
from .printer import Names, TensorPrinter
from .view import formulas, scalar_values

__all__ = [
    "Fact", "Formula", "Names", "Relation", "TensorPrinter", "formulas", "relations", "scalar_values", "upstream_formula",
]
