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
    # nodes inside the layer, before its z, in the order they are computed (batch
    # normalisation's μ, σ², x̂), each with its ∂L/∂ symbol in ``inner_upstream``
    inner: tuple[Node, ...] = ()
    inner_upstream: tuple[sympy.Symbol, ...] = ()

    @property
    def outputs(self) -> tuple[Node, ...]:
        """The nodes whose values leave the layer: its a nodes."""
        return self.a or self.z

    @property
    def activated(self) -> bool:
        return bool(self.a)

    samples: int | None = None  # the batch a derivation of several samples builds

    @property
    def read(self) -> tuple[sympy.Symbol, ...]:
        """Every symbol it reads, input after input (sample after sample, in a batch)."""
        given = [self.inputs] if self.samples is None else self.inputs
        return tuple(s for one in given for symbols in self.layer.per_input(one) for s in symbols)


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
            number, prefix = net.parameter_owner[name]
            op = net.layers[number - 1]
            flat = op.flat_weights(net.input_shape_of(number))
            letter = next(p.tex for p in op.parameters if p.prefix == prefix)
            self._built[name] = self._graph.names.parameter(name, number, shape, flat, letter)
        return self._built[name]


class _LazyBuffers(_LazyParameters):
    """Buffer name → sympy Array of its symbols: constants a layer reads (running statistics)."""

    def __iter__(self) -> Iterator[str]:
        return iter(self._graph.network.buffers)

    def __len__(self) -> int:
        return len(self._graph.network.buffers)

    def __getitem__(self, name: str) -> sympy.Array:
        if name not in self._built:
            net = self._graph.network
            shape = net.buffers[name]
            number, prefix = net.buffer_owner[name]
            letter = next(p.tex for p in net.layers[number - 1].buffers if p.prefix == prefix)
            self._built[name] = self._graph.names.parameter(name, number, shape, True, letter)
        return self._built[name]


class Graph:
    """The scalar computational graph of a network, with its symbols' names: of one sample,
    or of a batch of ``batch`` samples that share every weight (each node then once per
    sample, x^{[n]}, a^{(l)[n]}; a layer that couples the samples — batch normalisation in
    train mode — reads all of them at once), the loss their sum or, ``reduce="mean"``, mean.

    ``layers`` and ``params`` build what is asked for, when it is first asked for."""

    def __init__(self, network: Network, batch: int | None = None, reduce: str = "sum") -> None:
        self.network = network
        self.batch, self.reduce = batch, reduce
        self.samples: list[int | None] = [None] if batch is None else list(range(1, batch + 1))
        self.names = Names()
        self.x: tuple[sympy.Symbol, ...] = self._each("x", prod(network.input_shape))
        self.y: tuple[sympy.Symbol, ...] = self._each("y", network.output_size)
        self.params: Mapping[str, sympy.Array] = _LazyParameters(self)
        self.buffers: Mapping[str, sympy.Array] = _LazyBuffers(self)
        self.layers: Sequence[LayerGraph] = _LazyLayers(self)
        self._outputs: dict[int, tuple[sympy.Symbol, ...]] = {0: self.x}
        self._upstream: dict[int, tuple[sympy.Symbol, ...]] = {}

    def _each(self, kind: str, size: int, layer: int | None = None) -> tuple[sympy.Symbol, ...]:
        """Nodes of ``kind`` for every sample, sample after sample."""
        return tuple(s for n in self.samples for s in self.names.nodes(kind, size, layer, n))

    def by_sample(self, symbols: Sequence[sympy.Symbol]) -> list[tuple[sympy.Symbol, ...]]:
        """A layer's flat symbols cut into one tuple per sample."""
        size = len(symbols) // len(self.samples)
        return [tuple(symbols[k * size : (k + 1) * size]) for k in range(len(self.samples))]

    def outputs_of(self, number: int) -> tuple[sympy.Symbol, ...]:
        """The symbols of layer ``number``'s outputs (x for 0), without building the layer."""
        if number not in self._outputs:
            self._outputs[number] = self._each("a", prod(self.network.shapes[number]), number)
        return self._outputs[number]

    def upstream_of(self, number: int) -> tuple[sympy.Symbol, ...]:
        """∂L/∂a of layer ``number``'s outputs, without building the layer."""
        if number not in self._upstream:
            size = prod(self.network.shapes[number])
            self._upstream[number] = tuple(
                s for n in self.samples for s in self.names.gradients("a", number, size, n)
            )
        return self._upstream[number]

    def _build_layer(self, number: int) -> LayerGraph:
        net, names = self.network, self.names
        op, in_shape, out_shape = net.layers[number - 1], net.input_shape_of(number), net.shapes[number]
        size = prod(out_shape)
        sources = net.sources[number - 1]
        per_sample = [
            op.given(list(reads))
            for reads in zip(*[self.by_sample(self.outputs_of(source)) for source in sources])
        ]
        params = {prefix: self.params[name] for prefix, name in net.layer_parameters(number).items()}
        params.update({prefix: self.buffers[name] for prefix, name in net.layer_buffers(number).items()})
        if op.has_activation:
            z_symbols = self._each("z", size, number)
            act = activation(op.activation)
            a_nodes = tuple(Elementwise(a, z, act) for a, z in zip(self.outputs_of(number), z_symbols))
            z_upstream = tuple(s for n in self.samples for s in names.gradients("z", number, size, n))
        else:
            z_symbols, a_nodes, z_upstream = self.outputs_of(number), (), ()
        inner: tuple = ()
        if op.couples_samples() and self.batch is None:
            raise ValueError(
                f"layer {number}: batch normalisation in train mode mixes the samples of a batch: "
                "derive a batch, net.derive(batch=N), or the network in eval mode, net.with_mode('eval')"
            )
        if op.couples_samples():
            inner, z_nodes = op.batch_nodes(
                in_shape, per_sample, params, self.by_sample(z_symbols), names, number
            )
        else:
            z_nodes = tuple(
                node
                for inputs, outputs in zip(per_sample, self.by_sample(z_symbols))
                for node in op.nodes(in_shape, inputs, params, outputs)
            )
        return LayerGraph(
            number, op, in_shape, out_shape, sources,
            per_sample[0] if self.batch is None else tuple(per_sample), tuple(z_nodes), a_nodes,
            self.upstream_of(number), z_upstream,
            tuple(inner), tuple(names.gradient_of(node.symbol) for node in inner), self.batch,
        )

    @cached_property
    def loss(self) -> sympy.Expr:
        """L in the last layer's outputs and y (summed, or averaged, over a batch's samples)."""
        last, function = len(self.network.layers), self.network.loss_function
        pairs = zip(self.by_sample(self.outputs_of(last)), self.by_sample(self.y))
        total = sympy.Add(*[function.value(a, y, last, self._groups) for a, y in pairs])
        return total / len(self.samples) if self.reduce == "mean" and self.batch else total

    @cached_property
    def loss_gradient(self) -> tuple[sympy.Expr, ...]:
        """∂L/∂a_k of the last layer, in its outputs and y: where backpropagation starts."""
        last, function = len(self.network.layers), self.network.loss_function
        scale = sympy.Rational(1, len(self.samples)) if self.reduce == "mean" and self.batch else 1
        pairs = zip(self.by_sample(self.outputs_of(last)), self.by_sample(self.y))
        return tuple(g * scale for a, y in pairs for g in function.gradient(a, y, last, self._groups))

    @property
    def _groups(self) -> list[list[int]]:
        """The outputs each softmax runs over: all of them, or each pixel's channels."""
        return loss_groups(self.network.shapes[-1])
