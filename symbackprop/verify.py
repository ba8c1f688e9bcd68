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

A network with a generic activation g or loss L is checked once per concrete
choice (see ``choices``). The result is a ``Report``: per choice, per parameter,
the largest absolute error over the samples, the relative error (that error over
the largest magnitude the method gave), and whether it is within tolerance.

Imports numpy, ``reference``, ``ops.arrays`` (where activations bend), the activation and
loss registries (for the names of the concrete choices), ``numeric`` (float32's tolerance)
and, when torch is installed, ``torch_bridge``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from math import prod
from typing import TYPE_CHECKING, Any

import numpy as np

from . import reference
from .activations import ACTIVATIONS
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
KINK_MARGIN = 1e-4  # points this close to a kink (ReLU at 0, a max pool's near-tie) are drawn again


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
    against the float64 code too, torch in float32, and float32's tolerance."""
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
    styles = ["layers", "nodes"] if net.graph_edges <= NODES_LIMIT else ["layers"]
    rng = np.random.default_rng(seed)
    sizes = {"x": prod(net.input_shape), **{n: prod(s) for n, s in net.parameters.items()}}
    # The elements finite differences look at: all, or a seeded sample of FD_ELEMENTS.
    elements = {
        name: np.sort(rng.choice(size, FD_ELEMENTS, replace=False)) if size > FD_ELEMENTS else None
        for name, size in sizes.items()
    }
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
    net: Network, rng: np.random.Generator, g: str | None = None, loss: str | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A random x (C, H, W), y (K,) and parameters: x ~ N(0, 1); weights ~ N(0, 1/fan-in), so
    every layer's z stays of order one; y a probability vector for cross-entropy, N(0, 1)
    otherwise. A point near a kink — a ReLU-like input within KINK_MARGIN of 0 (but not
    exactly on it), or a layer's own kink (``Op.reference_near_kink``: a max pool's window
    whose top two values are that close) — is drawn again, so that finite differences never
    straddle a kink."""
    loss_name = loss if net.loss == "generic" else net.loss
    for _ in range(100):
        x = rng.normal(size=net.input_shape)
        k = net.output_size
        y = rng.dirichlet(np.ones(k)) if loss_name == "cross_entropy" else rng.normal(size=k)
        params = {}
        for name, shape in net.parameters.items():
            number, _ = net.parameter_owner[name]
            fan_in = net.layers[number - 1].window(net.input_shape_of(number))  # inputs per node
            params[name] = rng.normal(size=shape) / np.sqrt(fan_in)
        if not _near_kink(net, x, params, g):
            break
    return x, y, params


def _near_kink(
    net: Network, x: np.ndarray, params: Mapping[str, np.ndarray], g: str | None
) -> bool:
    """Whether some layer of ``net`` at this point is within KINK_MARGIN of a kink: its
    operation's own (``Op.reference_near_kink`` on what it reads, whichever layers that
    comes from: an activation layer's bend, a max pool's near-tie), or its activation's
    bend at z (an exact 0 excluded: a z that is 0 whatever the step, as after a ReLU, never
    crosses)."""
    if g is not None and net.generic_activation:
        net = net.with_choices(g=g)  # an activation layer g: its own face must know the function
    inputs, zs = reference.forward_pass(net, x[None], params)
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
) -> reference.Result:
    """Central differences (L(θ + h) − L(θ − h)) / 2h of the reference loss, for every element
    of x and of each parameter — or, where ``elements`` names flat indices for a quantity, for
    those alone (the others are nan). The loss itself is left out (None): nothing to compare."""
    elements = elements or {}
    grads = {}
    # x: every perturbed input at once, as one batch.
    chosen = elements.get("x")
    indices = np.arange(x.size) if chosen is None else chosen
    steps = np.zeros((len(indices), x.size))
    steps[np.arange(len(indices)), indices] = STEP
    batch = np.concatenate([x + steps.reshape(-1, *x.shape), x - steps.reshape(-1, *x.shape)])
    values = np.concatenate([  # in chunks: a large image's layers hold a copy per sample
        reference.loss_value(net, part, np.broadcast_to(y, (len(part), y.size)), params, g, loss)
        for part in np.array_split(batch, max(1, len(batch) // FD_CHUNK))
    ])
    flat = np.full(x.size, np.nan)
    flat[indices] = (values[: len(indices)] - values[len(indices) :]) / (2 * STEP)
    grads["x"] = flat.reshape(x.shape)
    for name, value in params.items():
        chosen = elements.get(name)
        flat = np.full(value.size, np.nan)
        for i in range(value.size) if chosen is None else chosen:
            shifted = {**params, name: value.copy()}
            shifted[name].flat[i] = value.flat[i] + STEP
            up = reference.loss_value(net, x, y, shifted, g, loss)
            shifted[name].flat[i] = value.flat[i] - STEP
            down = reference.loss_value(net, x, y, shifted, g, loss)
            flat[i] = (up - down) / (2 * STEP)
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
    torch = _torch()
    kind = getattr(torch, dtype)
    concrete = net.with_choices(g=g) if g is not None else net
    model = torch_bridge.to_torch(concrete, params, exact=True).to(kind)  # weights and buffers
    inputs = torch.tensor(np.asarray(x)[None], dtype=kind, requires_grad=True)
    outputs = model(inputs).reshape(1, -1)
    value = torch_bridge.torch_loss(net, loss)(outputs, torch.tensor(np.asarray(y)[None], dtype=kind))[0]
    value.backward()
    grads = {"x": inputs.grad[0].numpy()}
    grads.update({name: p.grad.numpy() for name, p in zip(net.parameters, model.parameters())})
    return reference.Result(float(value.detach()), grads)
