"""Numbers for a network: seeded round values and every number backpropagation computes.

``worked_example(network, seed)`` draws inputs, targets and weights a reader can follow
by hand, then runs the engine's own derivation on them: the forward pass node by node
through the scalar graph, the loss, and the backward pass term by term through the
terms ``Derivation`` derived (upstream × local × factor), so every number a document
shows is the engine's. The tests compare them with PyTorch and with the independent
numpy backprop.

Nothing is turned into one big expression: each node is evaluated from its own
structure (a weighted sum, a max, an activation) and each term from its factors, so a
network of LeNet-5's size takes seconds.

Imports ``network``, ``derive``, ``nodes`` (and what they build on), numpy and sympy.
"""

from __future__ import annotations

import math
from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import sympy

from ..activations import activation as _activation
from ..derivation import Derivation
from ..engine import LOSS, _flat
from ..graph import LayerGraph
from ..losses import groups as loss_groups
from ..network import Network
from ..ops.base import BIAS
from .numbers import GRADIENT_RANGE, Formats, NumberFormat

DRAWS = 20  # draws tried with one seed, to keep ReLUs alive
DEAD_SHARE = 0.5  # at most this share of the ReLUs may be dead (z <= 0) in a worked example
STEP_ACTIVATIONS = ("relu",)  # activations whose gradient dies below zero


@dataclass
class WorkedExample:
    """Concrete values for a network and every number backpropagation computes from them."""

    network: Network  # the network, with the generic g and L made concrete
    derivation: Derivation  # of ``network``
    seed: int | None  # the seed the values were drawn with; None: they were given
    draw: int  # which draw of that seed: 0, or more when the first ones left too many ReLUs dead
    choices: dict[
        str, str
    ]  # what stood in for the generic g and L: {"g": "sigmoid", "loss": "sse"}
    x: np.ndarray  # input, shaped like the network's input
    y: np.ndarray  # targets
    params: dict[str, np.ndarray]  # PyTorch layouts
    values: dict[sympy.Basic, float]  # every symbol: x, y, weights, z, a, L, ∂L/∂a, ∂L/∂z
    gradients: dict[str, np.ndarray]  # "x" and each parameter: dL/d(it)
    loss: float
    formats: Formats = field(init=False)

    def __post_init__(self) -> None:
        g = self.derivation.graph
        self.given = frozenset([*g.x, *g.y, *(s for name in self.network.parameters for s in _flat(g.params[name])),
                                *(s for name in self.network.buffers for s in _flat(g.buffers[name]))])
        gradient_symbols = [s for s in self.values if _is_gradient(s)]
        gradient_values = [self.values[s] for s in gradient_symbols]
        gradient_values += [v for array in self.gradients.values() for v in array.reshape(-1)]
        values = [v for s, v in self.values.items() if not _is_gradient(s) and s not in self.given]
        self.formats = Formats(
            NumberFormat.fitting(values), NumberFormat.fitting(gradient_values, GRADIENT_RANGE)
        )

    def value(self, expr: sympy.Expr) -> float:
        """``expr`` (over the derivation's symbols) at these numbers."""
        return _Evaluator(self.values)(expr)

    def value_with(self, expr: sympy.Expr, numbers: dict[sympy.Basic, float]) -> float:
        """``expr`` at these numbers, with ``numbers`` in place of some of them (the rounded
        numbers a sheet printed)."""
        return _Evaluator(ChainMap(numbers, self.values))(expr)

    def printed(self, expr: sympy.Expr) -> float:
        """``expr``'s number as the document prints it, read back: what a reader holds."""
        return self.format_of(expr).rounded(self.value(expr))

    def format_of(self, expr: sympy.Expr) -> NumberFormat:
        """How ``expr``'s number is written: as given (x, y, a weight), as a gradient (∂L/∂ of
        anything) or as a computed value (z, a, a local derivative, the loss)."""
        if expr in self.given:
            return self.formats.given
        return self.formats.gradient if _is_gradient(expr) else self.formats.value

    def show(self, expr: sympy.Expr) -> str:
        """``expr``'s number as the document writes it (``format_of``); a local gradient that is
        exactly 0 or 1 (an Iverson bracket's, a copy's) as that, not 1.000."""
        value = self.value(expr)
        if not expr.is_Symbol and value in (0.0, 1.0):
            return str(int(value))
        return self.format_of(expr)(value)

    @property
    def dead(self) -> tuple[int, int]:
        """(ReLU nodes with z <= 0, ReLU nodes in all)."""
        return dead_relus(self.derivation, self.values)


def _is_gradient(symbol: sympy.Basic) -> bool:
    """Whether a symbol of the derivation is a gradient, ∂L/∂a or ∂L/∂z (named dL_…)."""
    return str(symbol).startswith("dL_")


def draw_values(
    network: Network, seed: int, draw: int = 0
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Seeded round numbers: inputs in [0, 1] and weights in ±[0.1, 1], one decimal each;
    targets one decimal in [0, 1], or a one-hot class for cross-entropy (one per pixel when a
    softmax scores each pixel of a map); buffers (running statistics, in eval mode) one decimal
    in [0.5, 1.5], drawn last so that they change no other number.

    A layer whose nodes sum many inputs has its weights (not its bias) scaled down by a power
    of ten near the square root of that number (``weight_scale``), so that its sums stay of
    order one instead of saturating its activation."""
    rng = np.random.default_rng(
        seed if draw == 0 else [seed, draw]
    )  # each (seed, draw) its own stream
    x = rng.integers(0, 11, size=network.input_shape) / 10
    params = {}
    for name, shape in network.parameters.items():
        drawn = rng.integers(1, 11, size=shape) / 10 * rng.choice([-1.0, 1.0], size=shape)
        params[name] = drawn if is_bias(network, name) else drawn * weight_scale(shape)
    if network.loss_function.grouped:  # a class per softmax: per pixel for a map
        y = np.zeros(network.output_size)
        for group in loss_groups(network.shapes[-1]):
            y[group[rng.integers(len(group))]] = 1.0
    else:
        y = rng.integers(0, 11, size=network.output_size) / 10
    for name, shape in network.buffers.items():  # running statistics (eval mode): positive, one decimal
        params[name] = rng.integers(5, 16, size=shape) / 10
    return x, y, params


def is_bias(network: Network, name: str) -> bool:
    """Whether parameter ``name`` is one its operation declares a bias (added to its sums,
    drawn unscaled), not weights."""
    number, prefix = network.parameter_owner[name]
    declared = {p.prefix: p for p in network.layers[number - 1].parameters}
    return declared[prefix].role == BIAS.role


def weight_scale(shape: tuple[int, ...]) -> float:
    """10^-k, k the rounded log10 of √(inputs per node): 1 up to 9 inputs, 0.1 up to 99, …"""
    fan_in = math.prod(shape[1:])
    return 10.0 ** -round(math.log10(math.sqrt(fan_in)))


def concrete(network: Network) -> tuple[Network, dict[str, str]]:
    """The network with its generic g made the sigmoid and its generic loss half the sum of
    squared errors, and what was chosen."""
    choices = {}
    if network.generic_activation:
        choices["g"] = "sigmoid"
    if network.loss_function.generic:
        choices["loss"] = "sse"
    return network.with_choices(**choices), choices


Values = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]  # x, y and the parameters


def worked_example(network: Network, seed: int | None = None, values: Values | None = None) -> WorkedExample:
    """Seeded values for ``network`` (made concrete, see ``concrete``) and every number of its
    forward and backward pass.

    ``seed`` (default 0) draws the values; when they leave more than half of the ReLUs dead
    (z <= 0), the same seed draws again, up to ``DRAWS`` times, so that the example shows
    gradients rather than zeros — and another seed still gives other numbers. ``values``,
    (x, y, {parameter: array}), gives the numbers instead (the seed is then None): each of
    the network's shape, or a ValueError naming the one that is not.
    """
    net, choices = concrete(network)
    d = net.derive()
    if values is not None:
        x, y, params = _checked(net, values)
        numbers = forward_values(d, x, y, params)
        gradients = backward_values(d, numbers)
        return WorkedExample(net, d, None, 0, choices, x, y, params, numbers, gradients, numbers[LOSS])
    seed = 0 if seed is None else seed
    chosen, best = 0, None
    for draw in range(DRAWS):
        x, y, params = draw_values(net, seed, draw)
        numbers = forward_values(d, x, y, params)
        dead, total = dead_relus(d, numbers)
        if best is None or dead < best[0]:
            best = (dead, draw)
        if dead <= DEAD_SHARE * total:
            chosen = draw
            break
    else:
        chosen = best[1]  # never enough alive: the liveliest draw
        x, y, params = draw_values(net, seed, chosen)
        numbers = forward_values(d, x, y, params)
    gradients = backward_values(d, numbers)
    return WorkedExample(
        net, d, seed, chosen, choices, x, y, params, numbers, gradients, numbers[LOSS]
    )


def _checked(network: Network, values: Values) -> Values:
    """Given values as float arrays of the network's shapes; a ValueError naming what does not fit."""
    try:
        x, y, params = values
    except (TypeError, ValueError):
        raise ValueError("values must be (x, y, {parameter: array})") from None
    shapes = {"x": network.input_shape, "y": (network.output_size,), **network.parameters, **network.buffers}
    given = {"x": x, "y": y, **dict(params)}
    missing = sorted(set(shapes) - set(given))
    extra = sorted(set(given) - set(shapes))
    if missing or extra:
        raise ValueError(
            "values: " + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else [])
                + ([f"no parameter {', '.join(extra)} in this network"] if extra else [])
            )
        )
    arrays = {}
    for name, shape in shapes.items():
        array = np.asarray(given[name], dtype=float)
        if array.size == int(np.prod(shape)) and name == "y":
            array = array.reshape(shape)
        if array.shape != tuple(shape):
            raise ValueError(f"values: {name} has shape {array.shape}, the network needs {tuple(shape)}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"values: {name} holds a number that is not finite")
        arrays[name] = array
    return arrays.pop("x"), arrays.pop("y"), arrays


# ---- the engine's numbers ---------------------------------------------------------------------


def forward_values(
    d: Derivation, x: np.ndarray, y: np.ndarray, params: dict[str, np.ndarray]
) -> dict[sympy.Basic, float]:
    """x, y, the weights, then every node of the graph in order, then the loss L."""
    g = d.graph
    values: dict[sympy.Basic, float] = dict(zip(g.x, map(float, np.asarray(x).reshape(-1))))
    values.update(zip(g.y, map(float, np.asarray(y).reshape(-1))))
    for name in d.network.parameters:
        values.update(zip(_flat(g.params[name]), map(float, params[name].reshape(-1))))
    for name in d.network.buffers:
        values.update(zip(_flat(g.buffers[name]), map(float, params[name].reshape(-1))))
    for lg in g.layers:
        for node in lg.z:
            values[node.symbol] = _node_value(node, values)
        if lg.activated:
            function = _activation_function(lg.a[0].activation.name)
            for node in lg.a:
                values[node.symbol] = function(values[node.z])
    values[LOSS] = _Evaluator(values)(g.loss)
    return values


def backward_values(d: Derivation, values: dict[sympy.Basic, float]) -> dict[str, np.ndarray]:
    """Adds ∂L/∂a and ∂L/∂z of every node to ``values``, from the last layer to the first, by the
    engine's terms; returns the gradient of "x" and of every parameter."""
    g = d.graph
    value = _Evaluator(values)
    last = len(g.layers)
    dz: dict[sympy.Symbol, float] = {}  # each z node → ∂L/∂z (its layer's ∂L/∂a without activation)
    for lg in reversed(g.layers):
        local = d.backward(lg.number).local
        for k, (node, upstream) in enumerate(zip(lg.z, lg.upstream)):
            if lg.number == last:
                values[upstream] = value(g.loss_gradient[k])
            else:
                values[upstream] = sum(
                    dz[t.z] * value(t.factor) for t in d.upstream_terms_of(upstream)
                )
            dz[node.symbol] = values[upstream] * value(local[node.symbol])
            if lg.activated:
                values[lg.z_upstream[k]] = dz[node.symbol]

    def gradient(element: sympy.Symbol) -> float:
        return float(sum(dz[t.z] * value(t.factor) for t in d.terms(element)))

    return {
        name: np.array(
            [gradient(s) for s in _flat(d.symbols.x if name == "x" else g.params[name])]
        ).reshape(d.network.input_shape if name == "x" else d.network.parameters[name])
        for name in ["x", *d.network.parameters]
    }


def dead_relus(d: Derivation, values: dict[sympy.Basic, float]) -> tuple[int, int]:
    """(ReLU nodes whose input is at most 0 — their gradient is 0 —, ReLU nodes in all): the
    z of a layer's own ReLU, or the input of a ReLU that is a layer of its own."""
    dead = total = 0
    for lg in d.graph.layers:
        if lg.layer.activation not in STEP_ACTIVATIONS:
            continue
        if lg.activated:
            inputs = [node.symbol for node in lg.z]
        else:
            inputs = [v for node in lg.z for v in node.inputs]
        total += len(inputs)
        dead += sum(values[v] <= 0 for v in inputs)
    return dead, total


def _node_value(node, values: dict[sympy.Basic, float]) -> float:
    """A node of the operations' kinds, from the values of its inputs: a weighted sum, a max,
    a function of one input (an activation as a layer of its own), a formula (batch
    normalisation's, over its input and constants)."""
    if node.kind == "linear":
        total = math.fsum(_number(c, values) * values[v] for c, v in node.terms)
        return total + values[node.bias] if node.bias is not None else total
    if node.kind == "select":
        return max(values[v] for v in node.inputs)
    if node.kind == "elementwise":
        return _activation_function(node.activation.name)(values[node.z])
    if node.kind == "expression":
        return _Evaluator(values)(node.expr)
    raise ValueError(f"no numeric rule for a {node.kind} node")


def _number(expr: sympy.Expr, values: dict[sympy.Basic, float]) -> float:
    return values[expr] if expr in values else float(expr)


@cache
def _activation_function(name: str) -> Callable[[float], float]:
    z = sympy.Symbol("z", real=True)
    f = sympy.lambdify([z], _activation(name).apply(z), "math")
    return lambda v: float(f(v))


@cache
def _function(func, count: int) -> Callable[..., float]:
    """A sympy function class as a python function of floats."""
    arguments = sympy.symbols(f"v0:{count}", real=True)
    return sympy.lambdify(arguments, func(*arguments), "math")


class _Evaluator:
    """Small expressions (a local derivative, a product of brackets, the loss) at numbers,
    walking the tree: sums, products, powers and functions, each function compiled once."""

    def __init__(self, values: dict[sympy.Basic, float]) -> None:
        self.values = values
        self.cache: dict[sympy.Basic, float] = {}

    def __call__(self, expr: sympy.Basic) -> float:
        if expr in self.values:
            return self.values[expr]
        if expr in self.cache:
            return self.cache[expr]
        if expr.is_Number:
            result = float(expr)
        elif expr.is_Add:
            result = math.fsum(self(a) for a in expr.args)
        elif expr.is_Mul:
            result = math.prod(self(a) for a in expr.args)
        elif expr.is_Pow:
            result = self(expr.base) ** self(expr.exp)
        elif isinstance(expr, sympy.Function):
            result = float(_function(expr.func, len(expr.args))(*(self(a) for a in expr.args)))
        else:
            raise ValueError(f"no number for {expr}")
        self.cache[expr] = result
        return result


def layer_values(example: WorkedExample, lg: LayerGraph) -> dict[str, list[float]]:
    """A layer's columns of numbers: z, a, ∂L/∂a, ∂L/∂z (a and ∂L/∂a alone without activation)."""
    v = example.values
    if lg.activated:
        return {
            "z": [v[n.symbol] for n in lg.z],
            "a": [v[n.symbol] for n in lg.a],
            "da": [v[s] for s in lg.upstream],
            "dz": [v[s] for s in lg.z_upstream],
        }
    return {"a": [v[n.symbol] for n in lg.z], "da": [v[s] for s in lg.upstream]}


__all__ = [
    "WorkedExample",
    "backward_values",
    "concrete",
    "dead_relus",
    "draw_values",
    "forward_values",
    "is_bias",
    "layer_values",
    "weight_scale",
    "worked_example",
]
