"""A network: its operations, shapes and parameters, and its scalar computational graph.

``Network`` checks a description and infers every shape; ``Network.graph`` is the
article's computational graph (its figure 8) in sympy symbols, built one layer at a time
when first asked for: each layer adds the nodes its operation makes (weighted sums z of
the inputs its position sets name, or a pool's a = max / mean over its window), then an
a = g(z) node per z when the operation has an activation; the loss closes the graph.

Layers are numbered from 1 in order, pooling layers included; a layer's parameters carry
its number (W1, b1, W3, …). Nothing here asks which operation a layer is: what differs
is in ``symbackprop.ops``.

Imports ``errors``, ``naming``, ``activations``, ``losses``, ``nodes`` and ``ops``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from math import prod
from typing import Any, ClassVar

import sympy

from .activations import activation
from .errors import SpecError, shown
from .losses import Loss
from .losses import loss as _known_loss
from .naming import Names
from .nodes import Elementwise, Node
from .ops import OPS, Op, Shape
from .ops.base import as_int


@dataclass(frozen=True)
class LayerGraph:
    """Layer l's part of the graph.

    ``z`` are the nodes its operation makes from its inputs (weighted sums, or a pool's max
    or mean), ``a`` the activations a = g(z) that follow them — empty when the operation has
    no activation, its own nodes being then the layer's outputs a^{(l)}.
    """

    number: int
    layer: Op
    input_shape: Shape
    output_shape: Shape
    inputs: tuple[sympy.Symbol, ...]  # x for layer 1, the previous layer's outputs otherwise
    z: tuple[Node, ...]
    a: tuple[Elementwise, ...]
    upstream: tuple[sympy.Symbol, ...]  # ∂L/∂a_i, one per output
    z_upstream: tuple[sympy.Symbol, ...]  # ∂L/∂z_i, one per z node of a layer with activations

    @property
    def outputs(self) -> tuple[Node, ...]:
        """The nodes whose values leave the layer: its a nodes."""
        return self.a or self.z

    @property
    def activated(self) -> bool:
        return bool(self.a)


class _LazyLayers(Sequence):
    """The graph's layers, each built on first use (a large network's graph is big)."""

    def __init__(self, graph: Graph) -> None:
        self._graph = graph
        self._built: dict[int, LayerGraph] = {}

    def __len__(self) -> int:
        return len(self._graph.network.layers)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = operator.index(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"layer index {index} out of range")
        if index not in self._built:
            self._built[index] = self._graph._build_layer(index + 1)
        return self._built[index]


class _LazyParameters(Mapping):
    """Parameter name → sympy Array of its symbols, each made on first use."""

    def __init__(self, graph: Graph) -> None:
        self._graph = graph
        self._built: dict[str, sympy.Array] = {}

    def __iter__(self) -> Iterator[str]:
        return iter(self._graph.network.parameters)

    def __len__(self) -> int:
        return len(self._graph.network.parameters)

    def __getitem__(self, name: str) -> sympy.Array:
        if name not in self._built:
            net = self._graph.network
            shape = net.parameters[name]  # KeyError for an unknown name
            number = int(name[1:])
            flat = net.layers[number - 1].flat_weights(net.shapes[number - 1])
            self._built[name] = self._graph.names.parameter(name, number, shape, flat)
        return self._built[name]


class Graph:
    """The scalar computational graph of a network, with its symbols' names.

    ``layers`` and ``params`` build what is asked for, when it is first asked for."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.names = Names()
        self.x: tuple[sympy.Symbol, ...] = tuple(self.names.nodes("x", prod(network.input_shape)))
        self.y: tuple[sympy.Symbol, ...] = tuple(self.names.nodes("y", network.output_size))
        self.params: Mapping[str, sympy.Array] = _LazyParameters(self)
        self.layers: Sequence[LayerGraph] = _LazyLayers(self)
        self._outputs: dict[int, tuple[sympy.Symbol, ...]] = {0: self.x}
        self._upstream: dict[int, tuple[sympy.Symbol, ...]] = {}

    def outputs_of(self, number: int) -> tuple[sympy.Symbol, ...]:
        """The symbols of layer ``number``'s outputs (x for 0), without building the layer."""
        if number not in self._outputs:
            size = prod(self.network.shapes[number])
            self._outputs[number] = tuple(self.names.nodes("a", size, number))
        return self._outputs[number]

    def upstream_of(self, number: int) -> tuple[sympy.Symbol, ...]:
        """∂L/∂a of layer ``number``'s outputs, without building the layer."""
        if number not in self._upstream:
            size = prod(self.network.shapes[number])
            self._upstream[number] = tuple(self.names.gradients("a", number, size))
        return self._upstream[number]

    def _build_layer(self, number: int) -> LayerGraph:
        net, names = self.network, self.names
        op, in_shape, out_shape = net.layers[number - 1], net.shapes[number - 1], net.shapes[number]
        size = prod(out_shape)
        inputs = self.outputs_of(number - 1)
        params = {kind: self.params[f"{kind}{number}"] for kind in op.parameter_shapes(in_shape)}
        if op.has_activation:
            z_symbols = names.nodes("z", size, number)
            act = activation(op.activation)
            a_symbols = self.outputs_of(number)
            a_nodes = tuple(Elementwise(a, z, act) for a, z in zip(a_symbols, z_symbols))
            z_upstream = tuple(names.gradients("z", number, size))
        else:
            z_symbols, a_nodes, z_upstream = self.outputs_of(number), (), ()
        z_nodes = op.nodes(in_shape, inputs, params, z_symbols)
        return LayerGraph(
            number, op, in_shape, out_shape, inputs, z_nodes, a_nodes,
            self.upstream_of(number), z_upstream,
        )

    @cached_property
    def loss(self) -> sympy.Expr:
        """L in the last layer's outputs and y."""
        last = len(self.network.layers)
        return self.network.loss_function.value(self.outputs_of(last), self.y, last)

    @cached_property
    def loss_gradient(self) -> tuple[sympy.Expr, ...]:
        """∂L/∂a_k of the last layer, in its outputs and y: where backpropagation starts."""
        last = len(self.network.layers)
        return tuple(self.network.loss_function.gradient(self.outputs_of(last), self.y, last))


class Network:
    """A feed-forward network of operations (``symbackprop.ops``) with a loss.

    >>> from symbackprop.ops import Conv2D, Dense
    >>> net = Network(input_shape=(1, 4, 4), layers=[Conv2D(kernel_size=2), Dense(units=2)])
    >>> dict(net.parameters)
    {'W1': (1, 1, 2, 2), 'W2': (2, 9)}
    """

    def __init__(
        self, input_shape: Shape, layers: list[Op], loss: str = "generic", name: str = "network"
    ) -> None:
        input_shape = _input_shape(input_shape)
        if not isinstance(layers, (list, tuple)) or not layers:
            raise SpecError("layers: the network has no layers; give at least one")
        shapes = [input_shape]
        for number, layer in enumerate(layers, start=1):
            if not isinstance(layer, Op):
                choices = ", ".join(op.__name__ for op in OPS.values())
                raise SpecError(f"layer {number}: expected one of {choices}, got {shown(layer)}")
            try:
                shapes.append(layer.output_shape(shapes[-1]))
            except SpecError as error:
                raise SpecError(f"layer {number} ({layer.key}): {error}") from None
        try:
            self.loss_function: Loss = _known_loss(loss)
        except SpecError as error:
            raise SpecError(f"loss: {error}") from None
        check_name(name)
        self.input_shape: Shape = input_shape
        self.layers: tuple[Op, ...] = tuple(layers)
        self.loss: str = loss
        self.name: str = name
        self.shapes: tuple[Shape, ...] = tuple(shapes)  # input, then each layer's output

    def __repr__(self) -> str:
        return f"Network(input_shape={self.input_shape}, layers={list(self.layers)}, loss={self.loss!r})"

    @cached_property
    def parameters(self) -> dict[str, Shape]:
        """Parameter name → shape, in PyTorch layouts: W{l} (conv (o, c, kh, kw); dense (out, in)),
        b{l}, l the layer's number."""
        result = {}
        for number, (layer, shape) in enumerate(zip(self.layers, self.shapes), start=1):
            for kind, param_shape in layer.parameter_shapes(shape).items():
                result[f"{kind}{number}"] = param_shape
        return result

    @property
    def parameter_count(self) -> int:
        return sum(prod(shape) for shape in self.parameters.values())

    @property
    def output_size(self) -> int:
        return prod(self.shapes[-1])

    @property
    def graph_edges(self) -> int:
        """Edges of the scalar graph, counted from the shapes without building it: for every
        node, one per input it reads — an output of a layer reads its window (padding places
        counted, so a padded layer's count is a close upper bound), an activation its z, the
        loss every output. What the graph's work, the per-node program and every estimate of
        ``budget`` grow with; exact past what an int64 holds."""
        edges = self.output_size
        for layer, before, after in zip(self.layers, self.shapes, self.shapes[1:]):
            nodes = prod(after)
            edges += nodes * layer.window(before) + (nodes if layer.has_activation else 0)
        return edges

    def position_sets(self, layer: int) -> list[tuple[int, ...]]:
        """The article's p: for each output node of layer ``layer`` (1-based, flat order), the
        1-based flat indices of the input nodes it used, in the order of the kernel's places.

        Positions that fall on the padding add nothing and are left out, so a border
        node's set is shorter than the kernel.
        """
        if not (isinstance(layer, int) and 1 <= layer <= len(self.layers)):
            raise ValueError(f"layer must be 1..{len(self.layers)}, got {shown(layer)}")
        connections = self.layers[layer - 1].connections(self.shapes[layer - 1])
        return [tuple(i + 1 for i in c.inputs) for c in connections]

    def with_choices(self, g: str | None = None, loss: str | None = None) -> Network:
        """The same network with the generic g and/or the generic loss made concrete."""
        layers = [
            layer.with_activation(g) if g is not None and layer.activation == "g" else layer
            for layer in self.layers
        ]
        chosen_loss = loss if loss is not None and self.loss == "generic" else self.loss
        return Network(self.input_shape, layers, chosen_loss, self.name)

    @property
    def generic_activation(self) -> bool:
        return any(layer.activation == "g" for layer in self.layers)

    @cached_property
    def graph(self) -> Graph:
        """The scalar computational graph (its layers built when first used)."""
        return Graph(self)

    # The class derive() returns, symbackprop.Derivation: it builds on this module, so it
    # names itself here when the package is imported (symbackprop.derivation).
    derivation: ClassVar[Callable[[Network], Any]]

    def derive(self) -> Any:
        """Backpropagate symbolically: a ``symbackprop.Derivation`` of this network."""
        return self.derivation(self)

    def to_dict(self) -> dict[str, Any]:
        """The spec of this network, as ``from_dict`` reads it (pairs written out)."""
        layers = [{layer.key: layer.settings()} for layer in self.layers]
        return {"name": self.name, "input": list(self.input_shape), "layers": layers, "loss": self.loss}

    @classmethod
    def from_dict(cls, spec: object, name: str = "network") -> Network:
        """Build a network from a parsed spec: ``{input, layers: [{conv|dense|…: {...}}], loss}``."""
        if not isinstance(spec, dict):
            raise SpecError("the spec must be a mapping with keys input and layers (loss and name optional)")
        unknown = set(spec) - {"input", "layers", "loss", "name"}
        if unknown:
            raise SpecError(
                f"unknown key {min(map(str, unknown))!r} at the top level; "
                "allowed: input, layers, loss, name"
            )
        if "input" not in spec:
            raise SpecError("input: missing; give the input shape as [channels, height, width] or [features]")
        items = spec.get("layers")
        if not isinstance(items, list) or not items:
            raise SpecError(f"layers: the network has no layers; give a list of {_item_choices()} items")
        layers = [_layer_from_item(number, item) for number, item in enumerate(items, start=1)]
        return cls(spec["input"], layers, spec.get("loss", "generic"), spec.get("name", name))


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
NAME_RULE = "1 to 64 ASCII letters, digits, - or _, starting with a letter or a digit"


def check_name(name: object) -> str:
    """``name`` if it may name a network, else a SpecError.

    A name becomes a folder (``outputs/NAME``), a module docstring and a title in LaTeX and
    Markdown, so it is kept to characters that are safe in all of them, on every file system:
    ASCII letters, digits, ``-`` and ``_``, at most 64, not starting with ``-`` or ``_``."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise SpecError(f"name: must be {NAME_RULE}, got {shown(name)}")
    return name


def safe_name(text: str) -> str:
    """A name that ``check_name`` accepts, made from ``text`` (a spec file's stem): other
    characters become ``_``; "network" when nothing usable is left.

    >>> safe_name("my net (v2)"), safe_name("+"), safe_name("网络")
    ('my_net_v2', 'network', 'network')
    """
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_-")[:64].rstrip("_-")
    return cleaned or "network"


def _input_shape(value: object) -> Shape:
    """A (channels, height, width) or (features,) shape of positive ints, or a SpecError."""
    problem = SpecError(
        "input: the input shape must be [channels, height, width] or [features] of positive "
        f"integers, got {shown(value)}"
    )
    if not isinstance(value, (list, tuple)) or len(value) not in (1, 3):
        raise problem
    shape = tuple(as_int(n) for n in value)
    if any(n is None or n < 1 for n in shape):
        raise problem
    return shape


def _item_choices() -> str:
    return "/".join(OPS)


def _layer_from_item(number: int, item: object) -> Op:
    where = f"layer {number}"
    if not isinstance(item, dict) or len(item) != 1:
        examples = " or ".join(f"{{{key}: {{...}}}}" for key in OPS)
        raise SpecError(f"{where}: expected one of {examples}, got {shown(item)}")
    ((kind, settings),) = item.items()
    if kind not in OPS:
        raise SpecError(f"{where}: unknown layer type {shown(kind)}; choose one of {', '.join(OPS)}")
    op = OPS[kind]
    where = f"layer {number} ({kind})"
    settings = {} if settings is None else settings
    if not isinstance(settings, dict):
        raise SpecError(f"{where}: settings must be a mapping, got {shown(settings)}")
    allowed = op.setting_names()
    for key in settings:
        if key not in allowed:
            raise SpecError(f"{where}: unknown key {shown(key)}; allowed: {', '.join(allowed)}")
    missing = [key for key in op.required if key not in settings]
    if missing:
        raise SpecError(f"{where}: missing {', '.join(missing)}")
    try:
        return op(**settings)
    except SpecError as error:
        message = str(error).split(": ", 1)[-1]
        raise SpecError(f"{where}: {message}") from None
