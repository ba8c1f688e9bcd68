"""A network: its layers, shapes and parameters, and its scalar computational graph.

``Network`` checks a description and infers every shape; ``Network.graph`` builds
the article's computational graph (its figure 8) from sympy symbols: one z node
per feature-map pixel, written as the weighted sum of the nodes its position set
p names, one a node per z, and the loss of the last layer's a. The derivation
reads everything it needs off this graph.

Imports ``errors``, ``naming``, ``activations``, ``losses`` and ``layers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from math import prod
from typing import TYPE_CHECKING, Any

import sympy

from .activations import Activation, activation
from .errors import SpecError
from .layers import LAYER_TYPES, Connection, Conv2D, Dense, Layer, Shape, layer_keys
from .losses import Loss
from .losses import loss as _known_loss
from .naming import Names

if TYPE_CHECKING:
    from .derive import Derivation


@dataclass(frozen=True)
class WeightedSum:
    """A z node: z = Σ weight · input (+ bias), terms in the order of the kernel's weights."""

    symbol: sympy.Symbol
    terms: tuple[tuple[sympy.Symbol, sympy.Symbol], ...]  # (weight, input)
    bias: sympy.Symbol | None

    @property
    def expr(self) -> sympy.Expr:
        total = sympy.Add(*[w * v for w, v in self.terms])
        return total + self.bias if self.bias is not None else total


@dataclass(frozen=True)
class Activated:
    """An a node: a = activation(z)."""

    symbol: sympy.Symbol
    z: sympy.Symbol
    activation: Activation

    @property
    def expr(self) -> sympy.Expr:
        return self.activation.apply(self.z)


@dataclass(frozen=True)
class LayerGraph:
    """Layer l's part of the graph: its inputs, z and a nodes, and a's upstream-gradient symbols."""

    number: int
    layer: Layer
    input_shape: Shape
    output_shape: Shape
    inputs: tuple[sympy.Symbol, ...]  # x for layer 1, the previous layer's a otherwise
    z: tuple[WeightedSum, ...]
    a: tuple[Activated, ...]
    upstream: tuple[sympy.Symbol, ...]  # ∂L/∂a_i, one per a node
    z_upstream: tuple[sympy.Symbol, ...]  # ∂L/∂z_i, one per z node (for the per-node program)


@dataclass(frozen=True)
class Graph:
    """The whole scalar computational graph of a network, with its symbol names."""

    names: Names
    x: tuple[sympy.Symbol, ...]
    y: tuple[sympy.Symbol, ...]
    params: dict[str, sympy.Array]
    layers: tuple[LayerGraph, ...]
    loss: sympy.Expr  # in the last layer's a and y
    loss_gradient: tuple[sympy.Expr, ...]  # ∂L/∂a_k of the last layer, in its a and y


class Network:
    """A feed-forward network of Conv2D and Dense layers with a loss.

    >>> net = Network(input_shape=(1, 4, 4), layers=[Conv2D(kernel_size=2), Dense(units=2)])
    >>> dict(net.parameters)
    {'W1': (1, 1, 2, 2), 'W2': (2, 9)}
    """

    def __init__(
        self, input_shape: Shape, layers: list[Layer], loss: str = "generic", name: str = "network"
    ) -> None:
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) != 3
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in input_shape)
        ):
            raise SpecError(
                f"input: the input shape must be [channels, height, width] of positive integers, "
                f"got {input_shape!r}"
            )
        if not isinstance(layers, (list, tuple)) or not layers:
            raise SpecError("layers: the network has no layers; give at least one conv or dense")
        shapes = [tuple(input_shape)]
        for number, layer in enumerate(layers, start=1):
            if not isinstance(layer, (Conv2D, Dense)):
                raise SpecError(f"layer {number}: expected Conv2D or Dense, got {layer!r}")
            try:
                shapes.append(layer.output_shape(shapes[-1]))
            except SpecError as error:
                raise SpecError(f"layer {number} ({layer.kind}): {error}") from None
        try:
            self.loss_function: Loss = _known_loss(loss)
        except SpecError as error:
            raise SpecError(f"loss: {error}") from None
        self.input_shape: Shape = tuple(input_shape)
        self.layers: tuple[Layer, ...] = tuple(layers)
        self.loss: str = loss
        self.name: str = name
        self.shapes: tuple[Shape, ...] = tuple(shapes)  # input, then each layer's output

    def __repr__(self) -> str:
        return f"Network(input_shape={self.input_shape}, layers={list(self.layers)}, loss={self.loss!r})"

    @property
    def parameters(self) -> dict[str, Shape]:
        """Parameter name → shape, in PyTorch layouts: W{l} (conv (o, c, kh, kw); dense (out, in)), b{l}."""
        result = {}
        for number, (layer, shape) in enumerate(zip(self.layers, self.shapes), start=1):
            for kind, param_shape in layer.parameter_shapes(shape).items():
                result[f"{kind}{number}"] = param_shape
        return result

    @property
    def output_size(self) -> int:
        return prod(self.shapes[-1])

    def position_sets(self, layer: int) -> list[tuple[int, ...]]:
        """The article's p: for each output node of layer ``layer`` (1-based, flat order), the
        1-based flat indices of the input nodes it used, in the order of the kernel weights.

        Positions that fall on zero padding add nothing and are left out, so a border
        node's set is shorter than the kernel.
        """
        return [tuple(i + 1 for i, _ in c.terms) for c in self._connections(layer)]

    def _connections(self, layer: int) -> list[Connection]:
        if not (isinstance(layer, int) and 1 <= layer <= len(self.layers)):
            raise ValueError(f"layer must be 1..{len(self.layers)}, got {layer!r}")
        return self.layers[layer - 1].connections(self.shapes[layer - 1])

    def with_choices(self, g: str | None = None, loss: str | None = None) -> Network:
        """The same network with the generic g and/or the generic loss made concrete."""
        layers = [
            _replace_activation(layer, g) if g is not None and layer.activation == "g" else layer
            for layer in self.layers
        ]
        chosen_loss = loss if loss is not None and self.loss == "generic" else self.loss
        return Network(self.input_shape, layers, chosen_loss, self.name)

    @cached_property
    def graph(self) -> Graph:
        """The scalar computational graph, built once per network."""
        names = Names()
        x = tuple(names.nodes("x", prod(self.input_shape)))
        params = {}
        inputs = x
        layer_graphs = []
        for number, (layer, in_shape, out_shape) in enumerate(
            zip(self.layers, self.shapes, self.shapes[1:]), start=1
        ):
            shapes = layer.parameter_shapes(in_shape)
            weight_shape = shapes["W"]
            flat = isinstance(layer, Dense) or weight_shape[:2] == (1, 1)
            weights = names.parameter(f"W{number}", number, weight_shape, flat)
            params[f"W{number}"] = weights
            bias = names.parameter(f"b{number}", number, shapes["b"], True) if "b" in shapes else None
            if bias is not None:
                params[f"b{number}"] = bias
            size = prod(out_shape)
            z_symbols = names.nodes("z", size, number)
            a_symbols = names.nodes("a", size, number)
            act = activation(layer.activation)
            z_nodes = tuple(
                WeightedSum(
                    z,
                    tuple((weights[w], inputs[i]) for i, w in conn.terms),
                    bias[conn.bias] if conn.bias is not None else None,
                )
                for z, conn in zip(z_symbols, layer.connections(in_shape))
            )
            a_nodes = tuple(Activated(a, z, act) for a, z in zip(a_symbols, z_symbols))
            layer_graphs.append(
                LayerGraph(
                    number, layer, in_shape, out_shape, inputs, z_nodes, a_nodes,
                    tuple(names.gradients("a", number, size)),
                    tuple(names.gradients("z", number, size)),
                )
            )
            inputs = tuple(a_symbols)
        y = tuple(names.nodes("y", len(inputs)))
        last = len(self.layers)
        return Graph(
            names, x, y, params, tuple(layer_graphs),
            self.loss_function.value(inputs, y, last),
            tuple(self.loss_function.gradient(inputs, y, last)),
        )

    def derive(self) -> Derivation:
        """Backpropagate symbolically: see ``symbackprop.derive.Derivation``."""
        from .derive import Derivation  # derive builds on this module

        return Derivation(self)

    def to_dict(self) -> dict[str, Any]:
        """The spec of this network, as ``from_dict`` reads it (pairs written out)."""
        layers = []
        for layer in self.layers:
            settings = {key: getattr(layer, key) for key in layer_keys(type(layer))}
            settings = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
            layers.append({layer.kind: settings})
        return {"name": self.name, "input": list(self.input_shape), "layers": layers, "loss": self.loss}

    @classmethod
    def from_dict(cls, spec: object, name: str = "network") -> Network:
        """Build a network from a parsed spec: ``{input, layers: [{conv|dense: {...}}], loss}``."""
        if not isinstance(spec, dict):
            raise SpecError("the spec must be a mapping with keys input, layers and loss")
        unknown = set(spec) - {"input", "layers", "loss", "name"}
        if unknown:
            raise SpecError(
                f"unknown key {min(map(str, unknown))!r} at the top level; "
                "allowed: input, layers, loss, name"
            )
        if "input" not in spec:
            raise SpecError("input: missing; give the input shape as [channels, height, width]")
        items = spec.get("layers")
        if not isinstance(items, list) or not items:
            raise SpecError("layers: the network has no layers; give a list of conv/dense items")
        layers = [_layer_from_item(number, item) for number, item in enumerate(items, start=1)]
        input_shape = spec["input"]
        if isinstance(input_shape, list):
            input_shape = tuple(input_shape)
        spec_name = spec.get("name", name)
        if not isinstance(spec_name, str) or not spec_name.replace("-", "").replace("_", "").isalnum():
            raise SpecError(f"name: must be letters, digits, - or _, got {spec_name!r}")
        return cls(input_shape, layers, spec.get("loss", "generic"), spec_name)


def _replace_activation(layer: Layer, name: str) -> Layer:
    settings = {key: getattr(layer, key) for key in layer_keys(type(layer))}
    return type(layer)(**{**settings, "activation": name})


def _layer_from_item(number: int, item: object) -> Layer:
    where = f"layer {number}"
    if not isinstance(item, dict) or len(item) != 1:
        raise SpecError(f"{where}: expected one of {{conv: {{...}}}} or {{dense: {{...}}}}, got {item!r}")
    (kind, settings), = item.items()
    if kind not in LAYER_TYPES:
        raise SpecError(f"{where}: unknown layer type {kind!r}; choose one of {', '.join(LAYER_TYPES)}")
    where = f"layer {number} ({kind})"
    settings = {} if settings is None else settings
    if not isinstance(settings, dict):
        raise SpecError(f"{where}: settings must be a mapping, got {settings!r}")
    allowed = layer_keys(LAYER_TYPES[kind])
    for key in settings:
        if key not in allowed:
            raise SpecError(f"{where}: unknown key {key!r}; allowed: {', '.join(allowed)}")
    try:
        return LAYER_TYPES[kind](**settings)
    except TypeError:  # a required setting is missing
        missing = [k for k in allowed if k not in settings and k in ("kernel_size", "units")]
        raise SpecError(f"{where}: missing {', '.join(missing)}") from None
    except SpecError as error:
        message = str(error).split(": ", 1)[-1]
        raise SpecError(f"{where}: {message}") from None
