"""Numeric code from a derivation: one generated Python module, run in-process or written out.

``module_source(d)`` prints a standalone module that needs only numpy;
``numeric(d)`` compiles that same text in memory and ``export_module(d, path)`` writes it
to a file, so the two give the same numbers. A module holds one or two programs:

* per layer (``style="layers"``, ``numeric.layers``): each layer's forward and backward as
  whole-array numpy from the operations' numeric-code faces — strided windows and one
  matrix product per convolution, pooling by windows, a matrix product per dense layer. Its
  size grows with the number of layers; it never builds the scalar graph.
* per node (``style="nodes"``, ``numeric.nodes``): the derivation's straight-line program,
  one line per node — what a handout's reader can follow line by line. Its size grows with
  pixels × kernel size; for a handful of nodes it is the fastest at one sample (python
  floats, no numpy call per node).

``style=None`` picks by measurement: the per-layer program, and for networks of at most
``NODES_EDGE_LIMIT`` graph edges the per-node program too, which then runs single samples
(see ``NODES_EDGE_LIMIT``).

Both programs run on the helpers of ``numeric.runtime`` (checking arguments and running a
call, stable activations and losses, windows, chunks on threads), copied into the module
(``numeric.embed``).
``backend="jax"`` prints the per-layer program with jax.numpy, run under ``jax.jit`` on
the helpers of ``numeric.runtime_jax`` (needs jax: ``pip install -e '.[jax]'``).

``dtype="float32"`` (float64 is the default) makes a module that computes in float32 end to
end: its arguments are converted once, at the call, and every array it makes — windows,
padding, sums by index, per-sample rows — keeps the dtype of what it is made from, so
nothing is silently computed in float64 or returned so. One sample of the per-node program
runs on python floats, which are float64: a float32 module runs it on arrays (its weights
as arrays (1,)), and ``style=None`` picks the per-layer code alone. See ``TOLERANCES`` for
how far float32 results may lie from float64 ones.

Imports ``nodes``, ``layers``, ``embed`` and ``runtime.calls`` (its reductions) of this
package (sympy through the per-node printer).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from ..activations import ACTIVATIONS
from ..losses import LOSSES
from . import layers, nodes
from .embed import register_source, runtime_source
from .runtime.calls import REDUCTIONS

if TYPE_CHECKING:
    from ..engine import Engine as Derivation
    from ..network import Network

STYLES = ("nodes", "layers")
BACKENDS = ("numpy", "jax")
DTYPES = ("float64", "float32")
# How far a float32 module's results may lie from float64 ones (rtol, atol): an element
# agrees when |float32 − float64| <= atol + rtol · (the quantity's largest magnitude).
# float32 rounds each operation to 2^-24 ≈ 6e-8 of its value; a gradient element sums products
# over a network's depth, and its rounding errors grow about as the square root of the number
# of terms. Measured (sum over 8 samples): LeNet-5 within 1.5e-6 of each quantity's scale
# (torch's float32 within 2.7e-6), resnet_tiny 1.8e-6, fcn_tiny and unet_tiny 3e-7: rtol 1e-4
# leaves a margin of 30x or more, and still catches a term of 1e-4 of the scale left out.
# The absolute floor covers values near zero computed by cancelling values of order one (an
# output minus its target): their errors are float32's rounding of those, about 6e-8 each.
TOLERANCES = {"float64": (1e-9, 1e-12), "float32": (1e-4, 1e-6)}
# Measured (one thread, CPU time): on the article's network (75 edges) the per-node program
# takes 16 µs for one sample on python floats, the per-layer code 43 µs; on network B of
# benchmarks/numeric.py (4 458 edges) 272 µs against 68 µs: about 0.06 µs an edge, the
# per-layer code's lead from about 500 edges. On numpy arrays (B,), one per node, a batch of
# any size costs it about 200 µs even on the article's (the per-layer code 70–100 µs): batches
# go to the per-layer code.
NODES_EDGE_LIMIT = 500
# Per-sample gradients (reduce=None) of a large batch on the smallest networks: the per-node
# program on arrays (B,) pays ~200 µs a call and ~2 ns an edge a sample; the per-layer code's
# per-sample products of tiny convolutions cost it ~0.4 µs a sample whatever the edges.
# Measured (CPU time): the article's network (77 edges) at 1024, 410 µs against 480; at 4096,
# 880 against 1850; a 2x2 -> 3 -> 2 dense net (25 edges) even at 1024, 280 against 550 at
# 4096; a 1x5x5 conv 3x3 x2 -> dense 3 net (240 edges) still slower at 4096 (2630 against
# 2700): (batch from, edges at most).
NODES_PER_SAMPLE = (1024, 100)

NumericFunction = Callable[[Any, Any, Mapping[str, Any]], Any]  # (x, y, params) -> Result


# ---- public entry points ----------------------------------------------------------------------


def numeric(
    d: Derivation,
    g: str | None = None,
    loss: str | None = None,
    reduce: str | None = None,
    style: str | None = None,
    backend: str = "numpy",
    dtype: str = "float64",
) -> NumericFunction:
    """``loss_and_grads(x, y, params)`` for ``d``'s network, the generic activation and loss
    (if it has them) made concrete by name.

    ``reduce``: None gives one sample's loss and gradients, or per-sample ones for a batch
    (B, *input); "sum" or "mean" the batch's summed or mean loss and gradients shaped like the
    parameters (the gradient of x stays per sample). ``style``: "layers", "nodes" or None (the
    faster; see the module's docstring). ``dtype``: "float64" (the default) or "float32", what
    the code computes in and returns, whatever the arguments' dtype.

    >>> import numpy as np, symbackprop as sb
    >>> f = sb.presets.article().derive().numeric(g="identity", loss="sse")
    >>> params = {"W1": np.ones((1, 1, 2, 2)), "W2": np.ones((1, 1, 2, 2)), "W3": np.ones((2, 4))}
    >>> out = f(np.full((1, 4, 4), 0.5), np.zeros(2), params)
    >>> out.loss, out.grads["W3"].shape
    (1024.0, (2, 4))
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce={reduce!r}; choose None (per sample), 'sum' or 'mean'")
    module = compiled(d, style, backend, dtype)
    module.choose(module._LAYOUT, g, loss)  # a missing or unknown choice fails now

    def loss_and_grads(x: Any, y: Any, params: Mapping[str, Any]) -> Any:
        return module.loss_and_grads(x, y, params, reduce, g, loss)

    loss_and_grads.__doc__ = module.loss_and_grads.__doc__
    return loss_and_grads


def export_module(
    d: Derivation, path: str | Path, style: str | None = None, backend: str = "numpy",
    dtype: str = "float64",
) -> Path:
    """Write the standalone module (numpy only; numpy and jax for the jax backend), computing
    in ``dtype``, to ``path``; returns the path."""
    path = Path(path)
    path.write_text(module_source(d, style, backend, dtype), encoding="utf-8")
    return path


def resolve_style(
    network: Network, style: str | None, backend: str = "numpy", dtype: str = "float64"
) -> tuple[str, ...]:
    """The programs a module holds: ("layers",), ("nodes",) or ("nodes", "layers")."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; choose one of {', '.join(BACKENDS)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; choose one of {', '.join(map(repr, DTYPES))}")
    if backend == "jax":
        if style not in (None, "layers"):
            raise ValueError(f"style={style!r}: backend='jax' runs the per-layer code only")
        return ("layers",)
    if network.couples_samples:  # batch statistics: the per-node program would be of one batch
        if style not in (None, "layers"):
            raise ValueError(f"style={style!r}: a network whose batch normalisation mixes the samples "
                             "runs the per-layer code only")
        return ("layers",)
    if style is None:
        # the per-node program's lead is on python floats (float64): off it, per layer
        small = dtype == "float64" and network.graph_edges <= NODES_EDGE_LIMIT
        return ("nodes", "layers") if small else ("layers",)
    if style not in STYLES:
        raise ValueError(f"style={style!r}; choose 'layers', 'nodes' or None (the faster)")
    return (style,)


def module_source(
    d: Derivation, style: str | None = None, backend: str = "numpy", dtype: str = "float64"
) -> str:
    """The text of the standalone module for ``d`` (built once per derivation, style, backend
    and dtype)."""
    key = (resolve_style(d.network, style, backend, dtype), backend, dtype)
    cache = _SOURCES.setdefault(d, {})
    if key not in cache:
        cache[key] = _module_text(d, *key)
    return cache[key]


def compiled(
    d: Derivation, style: str | None = None, backend: str = "numpy", dtype: str = "float64"
) -> ModuleType:
    """The module of ``module_source(d, style, backend, dtype)``, compiled in memory (once per
    derivation and choice)."""
    key = (resolve_style(d.network, style, backend, dtype), backend, dtype)
    cache = _MODULES.setdefault(d, {})
    if key not in cache:
        if backend == "jax":
            try:
                import jax  # noqa: F401
            except ImportError:
                raise ImportError(
                    "backend='jax' needs jax: pip install -e '.[jax]' (or pip install jax)"
                ) from None
        source = module_source(d, style, backend, dtype)
        name = d.network.name.replace("-", "_")
        module = ModuleType(f"symbackprop_gradients_{name}")
        # its lines registered while it lives, so that tracebacks through it show them
        label = f"symbackprop gradients of {d.network.name}, {' and '.join(key[0])}, {backend}, {dtype}"
        filename = register_source(module, source, label)
        # The text is ours, printed from the network: no user text is ever evaluated.
        exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102
        cache[key] = module
    return cache[key]


_SOURCES: WeakKeyDictionary = WeakKeyDictionary()
_MODULES: WeakKeyDictionary = WeakKeyDictionary()


# ---- the module -------------------------------------------------------------------------------


def _module_text(d: Derivation, styles: tuple[str, ...], backend: str, dtype: str) -> str:
    net = d.network
    programs = []
    if "layers" in styles:
        text = layers.program_source(net, backend)
        programs.append("# ---- the network, a block per layer ----\n\n\n" + text)
    if "nodes" in styles:
        programs.append("# ---- the derivation, a line per node ----\n\n\n" + nodes.program_source(d, dtype))
    entry = _entry(net, styles)
    wiring = (
        "# ---- wiring ----\n\n\n"
        f"_LAYOUT = Layout(INPUT_SHAPE, OUTPUT_SIZE, PARAMETERS, generic_g={net.generic_activation}, "
        f"loss={None if net.loss_function.generic else net.loss!r}"
        + (", buffers=BUFFERS" if net.buffers else "")
        + (", couples=True" if net.couples_samples else "")
        + (f", output_shape={net.shapes[-1]!r}" if len(net.shapes[-1]) > 1 else "")
        + (f", dtype={dtype!r}" if dtype != "float64" else "")
        + ")\n"
        f"_PROGRAMS = Programs("
        f"nodes={nodes.PROGRAM if 'nodes' in styles else None}, "
        f"layers={layers.PROGRAM if 'layers' in styles else None}, "
        f"batch_chunk={layers.batch_chunk(net)}, sample_bytes={layers.sample_bytes(net)}"
        + (f", nodes_from={NODES_PER_SAMPLE[0]}" if _per_sample_on_nodes(net, styles) else "")
        + ")"
    )
    code = "\n\n\n".join([entry, *programs, wiring])
    imports, definitions = runtime_source(code, backend).split("\n\n\n", 1)  # imports first
    runtime = (
        "# ---- runtime helpers, copied from symbackprop/numeric/runtime/ ----\n\n\n" + definitions
    )
    parts = [_docstring(net, styles, backend, dtype), imports, _constants(net), entry, *programs, runtime, wiring]
    return "\n\n\n".join(part.strip("\n") for part in parts) + "\n"


def _per_sample_on_nodes(net: Network, styles: tuple[str, ...]) -> bool:
    """Whether a module of both programs gives a large batch's per-sample gradients with its
    per-node program (see NODES_PER_SAMPLE)."""
    return len(styles) == 2 and net.graph_edges <= NODES_PER_SAMPLE[1]


def _docstring(net: Network, styles: tuple[str, ...], backend: str, dtype: str) -> str:
    generic_g, generic_loss = net.generic_activation, net.loss_function.generic
    lines = [f"input {_shape(net.input_shape)}"]
    for number, (layer, shape) in enumerate(zip(net.layers, net.shapes[1:]), start=1):
        lines.append(f"layer {number}: {layer.describe()} -> {_shape(shape)}")
    lines.append(f"loss: {net.loss}")
    params = textwrap.fill(
        "params: a dict of arrays, " + ", ".join(f"{n} {s}" for n, s in net.parameters.items()) + ".",
        width=90,
    )
    call = "loss_and_grads(x, y, params"
    call += ', g="sigmoid"' if generic_g else ""
    call += ', loss="sse"' if generic_loss else ""
    choose = []
    if generic_g:
        choose.append(f"g=, one of {', '.join(_concrete(ACTIVATIONS))}")
    if generic_loss:
        choose.append(f"loss=, one of {', '.join(_concrete(LOSSES))}")
    generic_note = ""
    if choose:
        generic_note = (
            "\nThe network leaves its activation g or its loss L generic: choose them by name\n"
            "at run time:\n" + "".join(f"    {line}\n" for line in choose)
        )
    how = {
        ("layers",): (
            "How it runs: _layers computes each layer on the whole batch at once with numpy\n"
            "(a block per layer, its formula in a comment)."
        ),
        ("nodes",): (
            "How it runs: _nodes is the derivation written out, one line per node of the\n"
            "computational graph: on python floats for one sample, on numpy arrays holding\n"
            "one value per sample for a batch."
        ),
        ("nodes", "layers"): (
            "How it runs: _layers computes each layer on the whole batch at once with numpy\n"
            "(a block per layer, its formula in a comment); _nodes is the derivation written\n"
            "out, one line per node, on python floats: faster on this small network for a\n"
            "single sample, which it runs."
        ),
    }[styles]
    if "layers" in styles and backend == "numpy":
        how += (
            "\nLarge batches run a chunk at a time, the chunks on as many threads as numpy's BLAS\n"
            "is set to use when threadpoolctl is installed (OPENBLAS_NUM_THREADS=1: one)."
        )
    if backend == "jax":
        how += (
            "\nWith jax.numpy (jnp) for numpy, under jax.jit: compiled once per choice and batch\n"
            "size, per-sample gradients through jax.vmap. Importing it turns on jax's float64."
        )
    if dtype != "float64":
        how += (
            f"\nIt computes in {dtype}: x, y and params of any other dtype are converted to {dtype}\n"
            f"once, at the call; per-sample losses and every gradient are {dtype} arrays, a single\n"
            f"loss a python float holding the {dtype} value."
        )
    needs = "numpy and jax" if backend == "jax" else "only numpy"
    return (
        f'"""Loss and gradients of the network "{net.name}", generated by symbackprop: '
        f"needs {needs}.\n\n"
        f"    out = {call})\n"
        "    out.loss          # a float, or shape (B,) for a batch: per sample\n"
        '    out.grads["W1"]   # shaped like W1, or (B, *W1.shape) for a batch: per sample\n'
        '    out.grads["x"]    # the gradient with respect to the input\n'
        f"    {call}, reduce=\"sum\")\n"
        "        # or \"mean\": the batch's loss, gradients shaped like the parameters (x's per sample)\n\n"
        + "\n".join(f"    {line}" for line in lines)
        + "\n\n"
        f"x: {net.input_shape} or a batch (B, {', '.join(map(str, net.input_shape))}); "
        f"y: ({net.output_size},) or (B, {net.output_size});\n"
        f"{params}\n"
        f"{generic_note}\n"
        f"{how}\n"
        "Generated code: do not edit; derive again instead.\n"
        '"""'
    )


def _constants(net: Network) -> str:
    shapes = {"x": net.input_shape, **net.parameters}
    lines = [f"INPUT_SHAPE = {net.input_shape!r}", f"OUTPUT_SIZE = {net.output_size}"]
    tables = [("PARAMETERS", net.parameters), ("GRADIENT_SHAPES", shapes)]
    if net.buffers:  # batch normalisation's running statistics, read in eval mode, not trained
        tables.append(("BUFFERS", net.buffers))
    for constant, table in tables:
        items = [f"{name!r}: {shape!r}" for name, shape in table.items()]
        lines += nodes._wrap_names(items, f"{constant} = {{", "}")
    return "\n".join(lines)


def _entry(net: Network, styles: tuple[str, ...]) -> str:
    return (
        "def loss_and_grads(x, y, params, reduce=None, g=None, loss=None):\n"
        '    """The loss and its gradients at one sample x (C, H, W) or a batch x (B, C, H, W).\n\n'
        "    y is (K,) or (B, K), a map's (C, H, W) or (B, C, H, W), or for cross-entropy class\n"
        "    indices: an int per sample, or an (H, W) array of them for a map. params maps each\n"
        "    name of PARAMETERS to an array of that shape.\n"
        "    reduce=None: per sample, each gradient (B, *shape) for a batch; reduce=\"sum\" or\n"
        '    "mean": the batch\'s loss and parameter gradients. g= and loss= choose the generic\n'
        "    activation and loss by name when the network leaves them generic.\n"
        '    """\n'
        "    return run(_PROGRAMS, _LAYOUT, x, y, params, reduce, g, loss)"
    )


def _concrete(registry: Mapping[str, Any]) -> list[str]:
    return [name for name, entry in registry.items() if not entry.generic]


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
