"""The scalar computational graph of a network (the article's figure 8), in sympy symbols.

Built one layer at a time, when first asked for: each layer adds the nodes its operation
makes from the symbols of the layers it reads (weighted sums z of the inputs its position
sets name, a pool's max or mean over its window, an activation's a = g(·), an addition's
sum), then an a = g(z) node per z when the operation has an activation of its own; the
loss closes the graph, on the last layer's outputs.

Layer l's outputs are a^(l) (x for l = 0) whoever reads them: a layer read by several
others is one set of symbols with several consumers, which the engine sums over. Nothing
here asks which operation a layer is: what differs is in ``symbackprop.ops``.

Imports ``activations``, ``losses``, ``naming``, ``nodes``, ``ops`` and ``network``.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from math import prod
from typing import Any

import sympy

from .activations import activation
from .losses import groups as loss_groups
from .naming import Names
from .network import Network
from .nodes import Elementwise, Node
from .ops import Op, Shape


@dataclass(frozen=True)
class LayerGraph:
    """Layer l's part of the graph.

    ``z`` are the nodes its operation makes from its inputs (weighted sums, or a pool's max
    or mean), ``a`` the activations a = g(z) that follow them — empty when the operation has
    no activation, its own nodes being then the layer's outputs a^{(l)}.
    """

    number: int
    layer: Op
    input_shape: Any  # what the operation takes: a shape, or one per input (``Op.given``)
    output_shape: Shape
    sources: tuple[int, ...]  # the layers it reads, 0 for the network's input
    inputs: Any  # the symbols it reads, as the operation takes them (``Op.given``)
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

    @property
    def read(self) -> tuple[sympy.Symbol, ...]:
        """Every symbol it reads, input after input."""
        return tuple(s for symbols in self.layer.per_input(self.inputs) for s in symbols)


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
            number, _ = net.parameter_owner[name]
            flat = net.layers[number - 1].flat_weights(net.input_shape_of(number))
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
        op, in_shape, out_shape = net.layers[number - 1], net.input_shape_of(number), net.shapes[number]
        size = prod(out_shape)
        sources = net.sources[number - 1]
        inputs = op.given([self.outputs_of(source) for source in sources])
        params = {prefix: self.params[name] for prefix, name in net.layer_parameters(number).items()}
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
            number, op, in_shape, out_shape, sources, inputs, z_nodes, a_nodes,
            self.upstream_of(number), z_upstream,
        )

    @cached_property
    def loss(self) -> sympy.Expr:
        """L in the last layer's outputs and y."""
        last = len(self.network.layers)
        return self.network.loss_function.value(self.outputs_of(last), self.y, last, self._groups)

    @cached_property
    def loss_gradient(self) -> tuple[sympy.Expr, ...]:
        """∂L/∂a_k of the last layer, in its outputs and y: where backpropagation starts."""
        last = len(self.network.layers)
        return tuple(self.network.loss_function.gradient(self.outputs_of(last), self.y, last, self._groups))

    @property
    def _groups(self) -> list[list[int]]:
        """The outputs each softmax runs over: all of them, or each pixel's channels."""
        return loss_groups(self.network.shapes[-1])
