"""The proof that a derivation's gradients are right: derived numbers against independent ones.

``check(d)`` draws random points — inputs, targets and weights, from a seed — and
evaluates the derived gradients there with the numeric code (``d.numeric()``): the
per-layer code always, and the per-node program too when the network is small enough
for it (``NODES_LIMIT`` graph edges) — each as one sample and as a batch of one, and
reduced (``reduce="sum"``) over the batch of all the points. It compares them, and the
loss, with three methods that share nothing with that code:

* ``reference``: the layer-level numpy backprop of ``symbackprop.reference`` (the
  operations' reference faces), written apart from the numeric code's runtime;
* ``finite differences``: central differences of the reference loss, one
  element at a time (step ``STEP``) — accurate to about 1e-9, so judged more loosely.
  A quantity with more than ``FD_ELEMENTS`` elements is differenced on a seeded sample
  of that many (the report says which);
* ``torch``: PyTorch autograd in float64, when torch is installed.

``check(d, dtype="float32")`` checks the float32 code (``d.numeric(dtype="float32")``) the
same way, against a fourth method, ``float64 code`` (the same code in float64), and against
torch in float32; every method is then judged with float32's tolerance
(``numeric.TOLERANCES``: 1e-4 of the quantity's largest magnitude, 1e-6 absolute), and the
float32 results must be float32 arrays.

A network whose layers mix the samples of a batch (batch normalisation in train mode,
``Network.couples_samples``) has no per-sample gradients: its ``samples`` points form one
batch, and what is compared is the gradient of the batch's summed loss — the per-layer
code with ``reduce="sum"`` (and ``"mean"``, scaled), and the engine's own program of that
batch (``net.derive(batch=N)``, evaluated node by node) where it is small enough
(``BATCH_NODES_LIMIT``) — against
the reference over the batch, finite differences of the batch's loss and torch's autograd
with its BatchNorm in train mode. In eval mode such a network is checked like any other,
with running statistics drawn beside the weights.

A network with a generic activation g or loss L is checked once per concrete
choice (see ``choices``). The result is a ``Report``: per choice, per parameter,
the largest absolute error over the samples, the relative error (that error over
the largest magnitude the method gave), and whether it is within tolerance.

Imports numpy, sympy (to evaluate a batch's program), ``reference``, ``ops.arrays`` (where
activations bend), the activation and loss registries (for the names of the concrete
choices), ``errors``, ``numeric`` (float32's tolerance) and, when torch is installed,
``torch_bridge``.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from math import prod
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy

from . import reference
from .activations import ACTIVATIONS
from .errors import NearKink
from .losses import LOSSES
from .numeric import TOLERANCES as DTYPE_TOLERANCES
from .ops.arrays import near_kink

if TYPE_CHECKING:
    from .derivation import Derivation
    from .network import Network

METHODS = ("reference", "finite differences", "torch")
# method -> (rtol, atol): a difference agrees when abs error <= atol + rtol * (largest magnitude)
TOLERANCES = {
    "reference": (1e-9, 1e-12),
    "finite differences": (1e-6, 1e-7),
    "torch": (1e-9, 1e-12),
}
STEP = 1e-6  # the finite-difference step
FD_ELEMENTS = 200  # finite differences of at most this many elements per quantity, seeded
FD_CHUNK = 8  # perturbed inputs the reference evaluates at once (a copy of each layer per input)
NODES_LIMIT = 20_000  # graph edges up to which the per-node program is checked too
# graph edges times the batch up to which the engine's program of a batch is evaluated too:
# batch normalisation's stages make it slow to derive and evaluate (about 2 ms an edge here)
BATCH_NODES_LIMIT = 2_000
KINK_MARGIN = 1e-4  # points this close to a kink (ReLU at 0, a max pool's near-tie) are drawn again
DRAWS = 100  # draws before a point near a kink is taken, with a NearKink warning


@dataclass
class Comparison:
    """The derived numbers against one method's, over every sample."""

    abs_error: float = 0.0
    scale: float = 0.0  # the largest magnitude the method gave
    tolerance: tuple[float, float] | None = None  # (rtol, atol); None: TOLERANCES[method]

    @property
    def rel_error(self) -> float:
        if self.scale > 0:
            return self.abs_error / self.scale
        return 0.0 if self.abs_error == 0 else float("inf")

    def agrees(self, method: str) -> bool:
        rtol, atol = self.tolerance or TOLERANCES[method]
        return self.abs_error <= atol + rtol * self.scale

    def add(self, derived: Any, other: Any) -> None:
        derived, other = np.asarray(derived, dtype=float), np.asarray(other, dtype=float)
        self.abs_error = max(self.abs_error, float(np.abs(derived - other).max(initial=0.0)))
        self.scale = max(self.scale, float(np.abs(other).max(initial=0.0)))


@dataclass
class Row:
    """One quantity ("loss", "x" or a parameter) against each method that gives it."""

    name: str
    comparisons: dict[str, Comparison] = field(default_factory=dict)

    @property
    def disagreeing(self) -> list[str]:
        return [m for m, c in self.comparisons.items() if not c.agrees(m)]

    @property
    def agree(self) -> bool:
        return not self.disagreeing

    def to_dict(self) -> dict[str, Any]:
        errors = {
            method: {
                "abs": c.abs_error,
                "rel": c.rel_error if np.isfinite(c.rel_error) else None,  # None: all zero
                "agree": c.agrees(method),
                **({"rtol": c.tolerance[0], "atol": c.tolerance[1]} if c.tolerance else {}),
            }
            for method, c in self.comparisons.items()
        }
        return {"name": self.name, "agree": self.agree, "errors": errors}


@dataclass
class Run:
    """The rows for one concrete choice of the generic activation and loss (None: not generic)."""

    g: str | None
    loss: str | None
    rows: list[Row]

    @property
    def agree(self) -> bool:
        return all(row.agree for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        rows = [row.to_dict() for row in self.rows]
        return {"g": self.g, "loss": self.loss, "agree": self.agree, "rows": rows}


@dataclass
class Report:
    """Everything ``check`` found: one run per choice of the generic g and loss."""

    network: str
    samples: int
    seed: int
    methods: list[str]  # the methods used
    skipped: dict[str, str]  # method -> why it was not used
    runs: list[Run]
    styles: list[str] = field(default_factory=lambda: ["layers"])  # the numeric code checked
    # quantity -> (elements differenced, elements) where finite differences took a sample
    sampled: dict[str, tuple[int, int]] = field(default_factory=dict)
    dtype: str = "float64"  # what the checked code computes in

    def tolerance(self, method: str) -> tuple[float, float]:
        """(rtol, atol) a method's numbers are judged with: its own in float64, float32's
        (``numeric.TOLERANCES``) for float32 code."""
        return TOLERANCES[method] if self.dtype == "float64" else DTYPE_TOLERANCES[self.dtype]
    # the samples formed one batch, its summed loss's gradients compared (its layers mix them)
    batch: bool = False

    @property
    def agree(self) -> bool:
        return all(run.agree for run in self.runs)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data, for JSON."""
        tolerances = {m: dict(zip(("rtol", "atol"), self.tolerance(m))) for m in self.methods}
        return {
            "network": self.network,
            "dtype": self.dtype,
            "samples": self.samples,
            "batch": self.batch,
            "seed": self.seed,
            "methods": self.methods,
            "styles": self.styles,
            "finite_differences_sampled": {
                name: {"elements": count, "of": total} for name, (count, total) in self.sampled.items()
            },
            "skipped": self.skipped,
            "tolerances": tolerances,
            "agree": self.agree,
            "runs": [run.to_dict() for run in self.runs],
        }


# ---- the check --------------------------------------------------------------------------------


def choices(net: Network) -> list[tuple[str | None, str | None]]:
    """The (g, loss) pairs to check: every concrete activation for a generic g and every
    concrete loss for a generic loss, zipped with the shorter list cycled — so each choice
    is checked at least once without running the full product. (None, None) when neither
    is generic."""
    generic_g = any(layer.activation == "g" for layer in net.layers)
    gs = [n for n, a in ACTIVATIONS.items() if not a.generic] if generic_g else [None]
    losses = [n for n, l in LOSSES.items() if not l.generic] if net.loss == "generic" else [None]
    count = max(len(gs), len(losses))
    return [(gs[i % len(gs)], losses[i % len(losses)]) for i in range(count)]


def check(
    d: Derivation,
    samples: int = 3,
    seed: int = 0,
    on_choice: Callable[[str | None, str | None], None] | None = None,
    dtype: str = "float64",
) -> Report:
    """Compare ``d``'s numeric gradients with every independent method at ``samples``
    random points drawn with ``seed``, for each choice of a generic g and loss
    (``on_choice(g, loss)`` is told as each begins). ``dtype="float32"``: the float32 code,
    against the float64 code too, torch in float32, and float32's tolerance. For a network
    whose layers mix the samples, the points form one batch (2 or more; see the module's
    docstring)."""
    samples, seed = operator.index(samples), operator.index(seed)  # numpy integers welcome
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if seed < 0:
        raise ValueError(f"seed must be 0 or more, got {seed}")
    if dtype not in DTYPE_TOLERANCES:
        raise ValueError(f"dtype={dtype!r}; choose one of {', '.join(map(repr, DTYPE_TOLERANCES))}")
    torch = _torch()
    methods = [m for m in METHODS if m != "torch" or torch is not None]
    if dtype != "float64":
        methods.insert(0, FLOAT64_CODE)
    skipped = {} if torch is not None else {"torch": "not installed"}
    tolerance = None if dtype == "float64" else DTYPE_TOLERANCES[dtype]
    net = d.network
    if net.couples_samples:
        if dtype != "float64":
            methods.remove(FLOAT64_CODE)
        return _check_batch(d, samples, seed, on_choice, torch, methods, skipped, dtype)
    styles = ["layers", "nodes"] if net.graph_edges <= NODES_LIMIT else ["layers"]
    rng = np.random.default_rng(seed)
    sizes = {"x": prod(net.input_shape), **{n: prod(s) for n, s in net.parameters.items()}}
    elements = _fd_elements(rng, sizes)
    runs = []
    for g, loss in choices(net):
        if on_choice:
            on_choice(g, loss)
        functions = [d.numeric(g=g, loss=loss, style=style, dtype=dtype) for style in styles]
        rows = {name: Row(name) for name in ["loss", "x", *net.parameters]}
        points = []
        for _ in range(samples):
            x, y, params = draw_point(net, rng, g, loss)
            points.append((x, y))
            derived = [f(x, y, params) for f in functions]  # one sample,
            derived += [_first(f(x[None], y[None], params)) for f in functions]  # a batch of one
            _require_dtype(derived, dtype)
            others = {"reference": reference.loss_and_grads(net, x, y, params, g=g, loss=loss)}
            if dtype != "float64":
                others = {FLOAT64_CODE: d.numeric(g=g, loss=loss, style="layers")(x, y, params), **others}
            others["finite differences"] = finite_differences(net, x, y, params, g, loss, elements)
            if torch is not None:
                others["torch"] = torch_loss_and_grads(net, x, y, params, g, loss, dtype)
            for method, other in others.items():
                for out in derived:
                    _compare(rows, method, out, other, tolerance)
        # The batch of all the points, reduced: the summed loss and gradients (the last
        # point's parameters), against the reference's per-sample ones summed.
        xs, ys = np.stack([p[0] for p in points]), np.stack([p[1] for p in points])
        per_sample = reference.loss_and_grads(net, xs, ys, params, g=g, loss=loss)
        summed = reference.Result(
            per_sample.loss.sum(),
            {n: v if n == "x" else v.sum(axis=0) for n, v in per_sample.grads.items()},
        )
        for style in styles:
            f = d.numeric(g=g, loss=loss, reduce="sum", style=style, dtype=dtype)
            out = f(xs, ys, params)
            _require_dtype([out], dtype)
            _compare(rows, "reference", out, summed, tolerance)
        runs.append(Run(g, loss, list(rows.values())))
    sampled = {n: (FD_ELEMENTS, sizes[n]) for n, chosen in elements.items() if chosen is not None}
    return Report(net.name, samples, seed, methods, skipped, runs, styles, sampled, dtype)


FLOAT64_CODE = "float64 code"  # the method of float32 code's check: the same code in float64


def _require_dtype(results: list[Any], dtype: str) -> None:
    """Every gradient of the code's results is an array of ``dtype``: float32 code that gave
    float64 somewhere computed in float64, a bug (an AssertionError, as any other bug)."""
    for out in results:
        wrong = {name: str(grad.dtype) for name, grad in out.grads.items() if grad.dtype != dtype}
        assert not wrong, f"{dtype} code returned gradients of another dtype: {wrong}"


def _fd_elements(rng: np.random.Generator, sizes: Mapping[str, int]) -> dict[str, np.ndarray | None]:
    """The elements finite differences look at, per quantity: all (None), or a seeded sample
    of FD_ELEMENTS flat indices."""
    return {
        name: np.sort(rng.choice(size, FD_ELEMENTS, replace=False)) if size > FD_ELEMENTS else None
        for name, size in sizes.items()
    }


def _check_batch(
    d: Derivation, batch: int, seed: int, on_choice: Callable[[str | None, str | None], None] | None,
    torch: Any, methods: list[str], skipped: dict[str, str], dtype: str = "float64",
) -> Report:
    """``check`` for a network whose layers mix the samples: one batch of ``batch`` points,
    the gradients of its summed loss (see the module's docstring)."""
    net = d.network
    tolerance = None if dtype == "float64" else DTYPE_TOLERANCES[dtype]
    if batch < 2:
        raise ValueError(
            f"{net.name}'s batch normalisation in train mode mixes the samples of a batch: it is "
            f"checked on a batch of 2 or more samples, got samples={batch}"
        )
    # the engine's program of the batch, evaluated node by node, where it is small enough
    styles = ["layers", "nodes"] if net.graph_edges * batch <= BATCH_NODES_LIMIT else ["layers"]
    rng = np.random.default_rng(seed)
    sizes = {"x": batch * prod(net.input_shape), **{n: prod(s) for n, s in net.parameters.items()}}
    elements = _fd_elements(rng, sizes)
    runs = []
    for g, loss in choices(net):
        if on_choice:
            on_choice(g, loss)
        rows = {name: Row(name) for name in ["loss", "x", *net.parameters]}
        xs, ys, params = draw_point(net, rng, g, loss, batch=batch)
        derived = [
            d.numeric(g=g, loss=loss, reduce="sum", style="layers", dtype=dtype)(xs, ys, params),
            _times(d.numeric(g=g, loss=loss, reduce="mean", style="layers", dtype=dtype)(xs, ys, params), batch),
        ]
        _require_dtype(derived[:1], dtype)
        if "nodes" in styles:
            derived.append(program_loss_and_grads(net.with_choices(g=g, loss=loss).derive(batch=batch),
                                                  xs, ys, params))
        others = {
            "reference": reference.loss_and_grads(net, xs, ys, params, g=g, loss=loss, reduce="sum"),
            "finite differences": finite_differences(net, xs, ys, params, g, loss, elements, batch=True),
        }
        if torch is not None:
            others["torch"] = torch_batch_loss_and_grads(net, xs, ys, params, g, loss)
        for method, other in others.items():
            for out in derived:
                _compare(rows, method, out, other, tolerance)
        runs.append(Run(g, loss, list(rows.values())))
    sampled = {n: (FD_ELEMENTS, sizes[n]) for n, chosen in elements.items() if chosen is not None}
    return Report(net.name, batch, seed, methods, skipped, runs, styles, sampled, dtype, batch=True)


def _times(result: Any, factor: float) -> reference.Result:
    """A mean's loss and gradients scaled back to the sum's."""
    return reference.Result(result.loss * factor, {n: np.asarray(v) * factor for n, v in result.grads.items()})


def program_loss_and_grads(
    d: Derivation, x: np.ndarray, y: np.ndarray, params: Mapping[str, np.ndarray]
) -> reference.Result:
    """The loss and gradients of ``d``'s own program (the engine's chain forms, node by node),
    evaluated in floats at x, y and the parameters (and running statistics) — for a
    derivation of a batch (``derive(batch=N)``: x (N, *input), y (N, K)), whose program no
    generated code runs."""
    values: dict[sympy.Basic, Any] = dict(zip(d.graph.x, map(float, np.ravel(x))))
    values.update(zip(d.graph.y, map(float, np.ravel(y))))
    for name, symbols in [*d.symbols.params.items(), *d.graph.buffers.items()]:
        values.update(zip(sympy.flatten(symbols.tolist()), map(float, np.ravel(params[name]))))
    program = d.program
    for symbol, expr in program.assignments:
        values[symbol] = sympy.Float(float(expr.xreplace(values)))
    grads = {
        name: np.array([float(e.xreplace(values)) for e in sympy.flatten(array.tolist())]).reshape(array.shape)
        for name, array in program.gradients.items()
    }
    return reference.Result(float(values[program.loss]), grads)


def _compare(
    rows: dict[str, Row], method: str, derived: Any, other: Any, tolerance: tuple[float, float] | None = None
) -> None:
    """Add one derived result against one method's to the rows (no loss row if it gave none;
    only the elements finite differences looked at, the others being nan there), judged with
    ``tolerance`` (None: the method's own)."""

    def comparison(row: Row) -> Comparison:
        return row.comparisons.setdefault(method, Comparison(tolerance=tolerance))

    if other.loss is not None:
        comparison(rows["loss"]).add(derived.loss, other.loss)
    for name, grad in other.grads.items():
        mine = np.asarray(derived.grads[name], dtype=float)
        looked_at = ~np.isnan(grad) if method == "finite differences" else ...
        comparison(rows[name]).add(mine[looked_at], np.asarray(grad, dtype=float)[looked_at])


def _first(batch: Any) -> reference.Result:
    """Sample 0 of a batch result."""
    return reference.Result(batch.loss[0], {name: grad[0] for name, grad in batch.grads.items()})


def draw_point(
    net: Network,
    rng: np.random.Generator,
    g: str | None = None,
    loss: str | None = None,
    batch: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A random x (C, H, W), y (K,) and parameters — or ``batch`` of x (B, C, H, W) and y
    (B, K) with one set of parameters: x ~ N(0, 1); weights ~ N(0, 1/fan-in), so every
    layer's z stays of order one; running statistics (eval mode's buffers) ~ U(0.5, 2); y a
    probability vector for cross-entropy, N(0, 1) otherwise.

    A point near a kink — a ReLU-like input within KINK_MARGIN of 0 (but not exactly on
    it), or a layer's own kink (``Op.reference_near_kink``: a max pool's window whose top
    two values are that close) — is drawn again, so that finite differences never straddle
    a kink. After DRAWS draws all near one (a network of very many ReLUs), the last is
    returned with a ``NearKink`` warning: finite differences may then disagree at a few
    elements for that reason alone."""
    loss_name = loss if net.loss == "generic" else net.loss
    count = 1 if batch is None else batch
    k = net.output_size
    for _ in range(DRAWS):
        x = rng.normal(size=(count, *net.input_shape))
        y = rng.dirichlet(np.ones(k), size=count) if loss_name == "cross_entropy" else rng.normal(size=(count, k))
        params = {}
        for name, shape in net.parameters.items():
            number, _ = net.parameter_owner[name]
            fan_in = net.layers[number - 1].window(net.input_shape_of(number))  # inputs per node
            params[name] = rng.normal(size=shape) / np.sqrt(fan_in)
        for name, shape in net.buffers.items():  # positive, as a variance must be; a mean may
            params[name] = rng.uniform(0.5, 2.0, size=shape)
        if not _near_kink(net, x, params, g):
            break
    else:
        warnings.warn(
            f"no point of {net.name} clear of its kinks in {DRAWS} draws (every one had a ReLU "
            f"input or a max pool's near-tie within {KINK_MARGIN:g}): finite differences may "
            "straddle a kink, and a difference they alone show may come from that; try another seed",
            NearKink, stacklevel=2,
        )
    return (x[0], y[0], params) if batch is None else (x, y, params)


def _near_kink(
    net: Network, x: np.ndarray, params: Mapping[str, np.ndarray], g: str | None
) -> bool:
    """Whether some layer of ``net`` at this point (x one sample or a batch) is within
    KINK_MARGIN of a kink: its operation's own (``Op.reference_near_kink`` on what it reads,
    whichever layers that comes from: an activation layer's bend, a max pool's near-tie), or
    its activation's bend at z (an exact 0 excluded: a z that is 0 whatever the step, as
    after a ReLU, never crosses)."""
    if g is not None and net.generic_activation:
        net = net.with_choices(g=g)  # an activation layer g: its own face must know the function
    batch = x[None] if x.shape == tuple(net.input_shape) else x  # one sample, or a batch
    inputs, zs = reference.forward_pass(net, batch, params)
    for layer, h, z in zip(net.layers, inputs, zs):
        if layer.reference_near_kink(h, KINK_MARGIN):
            return True
        if layer.has_activation and near_kink(layer.activation, z, KINK_MARGIN):
            return True
    return False


def finite_differences(
    net: Network,
    x: np.ndarray,
    y: np.ndarray,
    params: Mapping[str, np.ndarray],
    g: str | None = None,
    loss: str | None = None,
    elements: Mapping[str, np.ndarray | None] | None = None,
    batch: bool = False,
) -> reference.Result:
    """Central differences (L(θ + h) − L(θ − h)) / 2h of the reference loss, for every element
    of x and of each parameter — or, where ``elements`` names flat indices for a quantity, for
    those alone (the others are nan). The loss itself is left out (None): nothing to compare.

    ``batch``: x (B, *input) and y (B, K) are one batch whose samples interact (batch
    normalisation in train mode), and L is its summed loss: each perturbed batch is then
    evaluated on its own, x's gradient being (B, *input)."""
    elements = elements or {}
    grads = {}
    chosen = elements.get("x")
    indices = np.arange(x.size) if chosen is None else chosen
    flat = np.full(x.size, np.nan)
    if batch:
        def batch_loss(inputs: np.ndarray, weights: Mapping[str, np.ndarray]) -> float:
            return reference.loss_value(net, inputs, y, weights, g, loss, reduce="sum")

        for i in indices:
            shifted = x.copy()
            shifted.flat[i] = x.flat[i] + STEP
            up = batch_loss(shifted, params)
            shifted.flat[i] = x.flat[i] - STEP
            flat[i] = (up - batch_loss(shifted, params)) / (2 * STEP)
    else:  # every perturbed input at once, as one batch
        def batch_loss(inputs: np.ndarray, weights: Mapping[str, np.ndarray]) -> float:
            return reference.loss_value(net, inputs, y, weights, g, loss)

        steps = np.zeros((len(indices), x.size))
        steps[np.arange(len(indices)), indices] = STEP
        inputs = np.concatenate([x + steps.reshape(-1, *x.shape), x - steps.reshape(-1, *x.shape)])
        values = np.concatenate([  # in chunks: a large image's layers hold a copy per sample
            reference.loss_value(net, part, np.broadcast_to(y, (len(part), y.size)), params, g, loss)
            for part in np.array_split(inputs, max(1, len(inputs) // FD_CHUNK))
        ])
        flat[indices] = (values[: len(indices)] - values[len(indices) :]) / (2 * STEP)
    grads["x"] = flat.reshape(x.shape)
    for name in net.parameters:  # not the running statistics: no gradient is asked of them
        value, chosen = params[name], elements.get(name)
        flat = np.full(value.size, np.nan)
        for i in range(value.size) if chosen is None else chosen:
            shifted = {**params, name: value.copy()}
            shifted[name].flat[i] = value.flat[i] + STEP
            up = batch_loss(x, shifted)
            shifted[name].flat[i] = value.flat[i] - STEP
            flat[i] = (up - batch_loss(x, shifted)) / (2 * STEP)
        grads[name] = flat.reshape(value.shape)
    return reference.Result(None, grads)


# ---- PyTorch ----------------------------------------------------------------------------------


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_loss_and_grads(
    net: Network,
    x: np.ndarray,
    y: np.ndarray,
    params: Mapping[str, np.ndarray],
    g: str | None = None,
    loss: str | None = None,
    dtype: str = "float64",
) -> reference.Result:
    """PyTorch autograd's loss and gradients at one sample, in float64 (or ``dtype``),
    through the bridge (with the exact softplus: torch's own returns z past z = 20)."""
    from . import torch_bridge

    if dtype == "float64":
        losses, grads = torch_bridge.loss_and_grads(net, x[None], y[None], params, g, loss)
        return reference.Result(float(losses[0]), {name: grad[0] for name, grad in grads.items()})
    batch = torch_batch_loss_and_grads(net, np.asarray(x)[None], np.asarray(y)[None], params, g, loss, dtype)
    return reference.Result(batch.loss, {**batch.grads, "x": batch.grads["x"][0]})


def torch_batch_loss_and_grads(
    net: Network,
    x: np.ndarray,
    y: np.ndarray,
    params: Mapping[str, np.ndarray],
    g: str | None = None,
    loss: str | None = None,
    dtype: str = "float64",
) -> reference.Result:
    """PyTorch autograd's summed loss of a batch x (B, *input), y (B, K) and its gradients
    (x's per sample), in float64 (or ``dtype``: weights, buffers and values alike), the whole
    batch in one forward pass — its BatchNorm layers in the network's mode (train: the
    batch's statistics)."""
    import torch

    from . import torch_bridge

    kind = getattr(torch, dtype)
    concrete = net.with_choices(g=g) if g is not None and net.generic_activation else net
    model = torch_bridge.to_torch(concrete, params, exact=True).to(kind)
    inputs = torch.tensor(np.asarray(x), dtype=kind, requires_grad=True)
    outputs = model(inputs).reshape(len(x), net.output_size)
    total = torch_bridge.torch_loss(net, loss)(outputs, torch.tensor(np.asarray(y), dtype=kind)).sum()
    total.backward()
    grads = {"x": inputs.grad.numpy()}
    grads.update({name: p.grad.numpy() for name, p in zip(net.parameters, model.parameters())})
    return reference.Result(float(total.detach()), grads)
