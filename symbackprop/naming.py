"""The one symbol factory: every sympy symbol of a network is made here.

Each symbol has a code-safe name (its sympy name, usable as a Python identifier:
``x_1``, ``W1_0_0_1_1``, ``z2_3``, ``dL_da2_3``) and a TeX name in the article's
notation (``x_{1}``, ``w^{(1)}_{4}``, ``z^{(2)}_{3}``,
``\\frac{\\partial L}{\\partial a^{(2)}_{3}}``).

Conventions, chosen so both audiences can read them:

* nodes (x, y, z, a) are numbered flat, 1-based, in (channel, row, column)
  order, as in the article (x_1 ... x_16);
* parameter code names carry PyTorch's 0-based tensor index (``W1[0, 0, 1, 1]`` is
  ``W1_0_0_1_1``), so weights move to and from PyTorch without renumbering;
* parameter TeX names are 1-based: a kernel with one input and one output
  channel, and a dense layer, number their weights flat (the article's
  w^{(1)}_1 ... w^{(1)}_4 and w^{(3)}_1 ... w^{(3)}_8); a kernel with several
  channels is indexed w^{(l)}_{o,c,m,n}.

Imports only sympy.
"""

from __future__ import annotations

from itertools import product

import sympy


class Names:
    """Makes a network's symbols and remembers each one's TeX name.

    One per network: the same code name can need another TeX name in another
    network (a dense weight's flat number depends on the layer's width).
    """

    def __init__(self) -> None:
        self.tex: dict[sympy.Symbol, str] = {}
        self.parameter_of: dict[sympy.Symbol, str] = {}  # each parameter element → its name

    def symbol(self, code_name: str, tex_name: str) -> sympy.Symbol:
        """A real symbol with its TeX name recorded."""
        s = sympy.Symbol(code_name, real=True)
        self.tex[s] = tex_name
        return s

    def nodes(
        self, kind: str, count: int, layer: int | None = None, sample: int | None = None
    ) -> list[sympy.Symbol]:
        """x_i, y_i (layer None) or z^{(l)}_i, a^{(l)}_i for i = 1..count; of sample n of a
        batch when ``sample`` is given: x^{[n]}_i, a^{(l)[n]}_i, code names ending ``__n``."""
        code, tex = _sample_marks(sample)
        if layer is None:
            return [self.symbol(f"{kind}_{i}{code}", f"{kind}^{{{tex}}}_{{{i}}}" if tex else f"{kind}_{{{i}}}")
                    for i in range(1, count + 1)]
        return [
            self.symbol(f"{kind}{layer}_{i}{code}", f"{kind}^{{({layer}){tex}}}_{{{i}}}")
            for i in range(1, count + 1)
        ]

    def gradients(self, kind: str, layer: int, count: int, sample: int | None = None) -> list[sympy.Symbol]:
        """∂L/∂a^{(l)}_i (kind "a") or ∂L/∂z^{(l)}_i (kind "z") for i = 1..count (of sample n)."""
        code, tex = _sample_marks(sample)
        return [
            self.symbol(
                f"dL_d{kind}{layer}_{i}{code}",
                rf"\frac{{\partial L}}{{\partial {kind}^{{({layer}){tex}}}_{{{i}}}}}",
            )
            for i in range(1, count + 1)
        ]

    def gradient_of(self, symbol: sympy.Symbol) -> sympy.Symbol:
        """∂L/∂(symbol), for a node inside a layer (batch normalisation's μ, σ², x̂)."""
        return self.symbol(f"dL_d{symbol.name}", rf"\frac{{\partial L}}{{\partial {self.tex[symbol]}}}")

    def parameter(
        self, name: str, layer: int, shape: tuple[int, ...], flat: bool, letter: str = ""
    ) -> sympy.Array:
        """The symbols of parameter ``name`` (``W3``, ``b1``) as a sympy Array of ``shape``,
        their TeX names ``letter`` (the name's first letter, lowercase, by default) with the
        layer and the index: w^{(3)}_{1}, \\gamma^{(2)}_{1}.

        ``flat`` numbers the TeX names 1..size in row-major order; otherwise every
        index is written out, 1-based.
        """
        letter = letter or name[0].lower()
        symbols = []
        for flat_index, index in enumerate(product(*(range(n) for n in shape)), start=1):
            code = name + "_" + "_".join(map(str, index))
            sub = str(flat_index) if flat else ",".join(str(i + 1) for i in index)
            symbols.append(self.symbol(code, f"{letter}^{{({layer})}}_{{{sub}}}"))
        self.parameter_of.update(dict.fromkeys(symbols, name))
        return sympy.Array(symbols, shape)


def _sample_marks(sample: int | None) -> tuple[str, str]:
    """How a symbol of sample n of a batch is marked: ``__n`` in code, ``[n]`` in TeX."""
    return ("", "") if sample is None else (f"__{sample}", f"[{sample}]")
