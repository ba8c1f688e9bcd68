"""The front door: ``Derivation``, the engine with everything it exports.

``Network.derive()`` returns one. The engine (``symbackprop.engine``) derives; the
exporters below it print and compile what it derived — numeric code (``numeric``), the
tensor view (``tensor``) and LaTeX (``latex``) — and this class puts them behind one
object. Nothing below imports this module: exporters take the engine, and ``network``
learns the class it derives with from here (``Network.derivation``), so that the
network, the engine and its exporters stay one way round.

Imports ``engine``, ``latex``, ``tensor``, ``numeric`` and ``network``.
"""

from __future__ import annotations

from pathlib import Path

from . import numeric as _numeric
from . import tensor as _tensor
from .engine import MAX_PRINTED_SIZE, Engine
from .latex import derivation_latex, derivation_summary_latex, element_of, gradient_latex
from .network import Network


class Derivation(Engine):
    """Every ∂L/∂w of a network — chain forms, closed forms, the tensor view, LaTeX and
    numeric code.

    >>> import symbackprop as sb
    >>> d = sb.presets.article().derive()
    >>> d.chain("W3")[1, 0]
    a2_1*dL_da3_2*g_prime(z3_2)
    """

    # ---- numbers ------------------------------------------------------------------------

    def numeric(self, g: str | None = None, loss: str | None = None, reduce: str | None = None,
                style: str | None = None, backend: str = "numpy",
                dtype: str = "float64") -> _numeric.NumericFunction:
        """Fast ``loss_and_grads(x, y, params)``, generic g/loss chosen by name, per sample or
        reduced over a batch (``reduce="sum"``/``"mean"``); see ``symbackprop.numeric.numeric``.
        A derivation of a batch (``derive(batch=N)``) runs the per-layer code, which takes any
        batch: its per-node program is of those N samples. ``dtype="float32"``: the code
        computes in float32 end to end (see ``symbackprop.numeric.TOLERANCES``)."""
        if self.batch is not None:
            if style == "nodes":
                raise ValueError("style='nodes' is the program of one sample: derive without batch= for it")
            style = "layers"
        return _numeric.numeric(self, g=g, loss=loss, reduce=reduce, style=style, backend=backend, dtype=dtype)

    def export_module(self, path: str | Path, style: str | None = None, backend: str = "numpy",
                      dtype: str = "float64") -> Path:
        """Write the standalone numpy module with ``loss_and_grads``, computing in ``dtype``;
        returns its path."""
        return _numeric.export_module(self, path, style=style, backend=backend, dtype=dtype)

    # ---- the tensor view ------------------------------------------------------------------

    def formulas(self, number: int, general: bool = True) -> list[_tensor.Formula]:
        """Layer ``number``'s general formulas (1-based), derived from its operation's index
        form: forward, δ, ∂L/∂W, ∂L/∂b, ∂L/∂(input) and the facts that restate them, each with
        ``.latex()``; ``general=False`` writes the settings as numbers. See
        ``symbackprop.tensor.formulas``.

        >>> import symbackprop as sb
        >>> d = sb.presets.article().derive()
        >>> [f.kind for f in d.formulas(1)]
        ['forward', 'activation', 'delta', 'W', 'fact', 'input', 'fact']
        >>> print(d.formulas(1)[3].latex())
        \\frac{\\partial L}{\\partial W^{(1)}_{o,c,m,n}} = \\sum_{i,j} \\delta^{(1)}_{o,i,j} \\cdot x_{c,s i + d m - p,s j + d n - p}
        >>> print(d.formulas(1, general=False)[3].latex())  # stride 1, no dilation, no padding
        \\frac{\\partial L}{\\partial W^{(1)}_{o,c,m,n}} = \\sum_{i,j} \\delta^{(1)}_{o,i,j} \\cdot x_{c,i + m,j + n}
        """
        return _tensor.formulas(self, number, general=general)

    # ---- printing -------------------------------------------------------------------------

    def latex(self, name: str, simplify: bool = False,
              max_size: int | None = MAX_PRINTED_SIZE) -> str:
        """The LaTeX of closed-form ∂L/∂(parameter or element ``name``), in the network's
        notation. Past ``max_size`` tree nodes in all (MAX_PRINTED_SIZE by default),
        ``OverBudget`` instead; ``max_size=None`` prints any size."""
        if max_size is not None:
            self._require_graph(f"latex({name!r})", "pass max_size=None to print it",
                                f"d.latex_derivation({name!r}) for its chain form")
            chains = [self.chain_of(element) for element in element_of(self, name)[1]]
            self._require_within(f"latex({name!r})", chains, max_size,
                                 "pass max_size=None to print it",
                                 f"d.latex_derivation({name!r}) for its chain form")
        return gradient_latex(self, name, simplify=simplify)

    def latex_derivation(self, name: str | None = None) -> str:
        """The step-by-step derivation of ``name`` (every parameter when None) as LaTeX."""
        return derivation_latex(self, name)

    def _repr_latex_(self) -> str:
        return derivation_summary_latex(self)


Network.derivation = Derivation  # what Network.derive() returns (see the module's docstring)
