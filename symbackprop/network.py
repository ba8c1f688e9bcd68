"""A network: a graph of operations, its shapes and parameters, and how specs describe it.

``Network`` checks a description and infers every shape. A network is a directed acyclic
graph of layers, each one operation (``symbackprop.ops``) reading the outputs of earlier
layers — or the network's input — and numbered from 1 in an order where every layer comes
after what it reads (the article's l). It is written either

* as a chain, ``Network(input_shape, layers=[...])``: each layer reads the one before it;
* with the functional API, ``Network(inputs=x, outputs=out)``: ``x = Input(shape)``, then
  ``h = Conv2D(...)(x)``, ``h = Add()(h, r)``, … (``ops.wiring``);
* as a spec (``from_dict``, YAML/JSON files through ``spec``): a list of layers, each
  reading the previous one unless it says ``inputs: [names]``.

A layer's parameters carry its number (W1, b1, W3, …), whatever reads what. The last layer
is the output, the loss reads it; a layer that nothing leads from to the output is refused.
Nothing here asks which operation a layer is: what differs is in ``symbackprop.ops``.

A setup that builds but cannot learn (a sigmoid on the output before cross-entropy) is
warned of, ``errors.DegenerateSetup``, when the network is built.

Imports ``errors``, ``activations``, ``losses`` and ``ops``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from functools import cached_property
from math import prod
from typing import Any, ClassVar

from .activations import ACTIVATIONS
from .errors import DegenerateSetup, SpecError, shown
from .losses import Loss, check_output
from .losses import loss as _known_loss
from .ops import OPS, Op, Shape
from .ops.wiring import Input, Tensor, apply, input_shape

INPUT = "input"  # how a spec's inputs: [...] names the network's input
MODES = ("train", "eval")  # as torch's module.train() and module.eval()


class Network:
    """A network of operations (``symbackprop.ops``) with a loss: a chain of ``layers``, or
    the graph from ``inputs`` to ``outputs`` written with the functional API.

    >>> from symbackprop.ops import Add, Conv2D, Dense, Input
    >>> net = Network(input_shape=(1, 4, 4), layers=[Conv2D(kernel_size=2), Dense(units=2)])
    >>> dict(net.parameters)
    {'W1': (1, 1, 2, 2), 'W2': (2, 9)}
    >>> x = Input((1, 4, 4))
    >>> h = Conv2D(kernel_size=3, padding=1)(x)
    >>> skip = Network(inputs=x, outputs=Dense(units=2)(Add()(x, h)), loss="sse")
    >>> skip.sources, skip.consumers(0)
    (((0,), (0, 1), (2,)), (1, 2))
    """

    # The class derive() returns, symbackprop.Derivation: it builds on this module, so it
    # names itself here when the package is imported (symbackprop.derivation).
    derivation: ClassVar[Callable[[Network], Any]]

    def __init__(
        self,
        input_shape: Shape | None = None,
        layers: Sequence[Op] | None = None,
        loss: str = "generic",
        name: str = "network",
        *,
        inputs: Tensor | None = None,
        outputs: Tensor | None = None,
        mode: str = "train",
        _variant: bool = False,
    ) -> None:
        # _variant: built by with_choices or with_mode from a network already warned about
        if inputs is not None or outputs is not None:
            if input_shape is not None or layers is not None:
                raise SpecError(
                    "give either input_shape and layers (a chain) or inputs and outputs (a graph), not both"
                )
            x, out = _graph_ends(inputs, outputs)
        else:
            x, out = _chain(input_shape, layers)
        tensors = _tensors_between(x, out)
        try:
            self.loss_function: Loss = _known_loss(loss)
            check_output(loss, out.shape)
        except SpecError as error:
            raise SpecError(f"loss: {error}") from None
        check_name(name)
        if mode not in MODES:
            raise SpecError(f"mode: must be one of {', '.join(MODES)}, got {shown(mode)}")
        number = {id(t): l for l, t in enumerate(tensors, start=1)} | {id(x): 0}
        self.input_shape: Shape = x.shape
        # each operation as it runs in this mode (batch normalisation: batch or running statistics)
        self.layers: tuple[Op, ...] = tuple(t.op.in_mode(mode) for t in tensors)
        self.mode: str = mode
        # the layers each layer reads, in its operation's order; 0 is the network's input
        self.sources: tuple[tuple[int, ...], ...] = tuple(
            tuple(number[id(s)] for s in t.inputs) for t in tensors
        )
        self.layer_names: tuple[str | None, ...] = tuple(t.name for t in tensors)
        self.shapes: tuple[Shape, ...] = (x.shape, *(t.shape for t in tensors))  # input, then each output
        self.loss: str = loss
        self.name: str = name
        _check_layer_names(self.layer_names)
        problem = None if _variant else self.degenerate_setup()
        if problem:
            warnings.warn(problem, DegenerateSetup, stacklevel=2)

    def degenerate_setup(self) -> str | None:
        """What makes this network unable to learn as written, in one line that says what to
        do, or None: a bounded activation (sigmoid, tanh) on the output layer before a loss
        that reads logits — cross_entropy applies its own softmax, binary_cross_entropy its
        own sigmoid, so the outputs are squashed twice and the loss cannot approach 0.
        (A ReLU there is unbounded above and is not warned of.)"""
        output = self.layers[-1]
        squash = self.loss_function.squashes_logits
        function = ACTIVATIONS.get(output.activation) if output.activation else None
        if squash is None or function is None or not function.bounded:
            return None
        number, function_name = len(self.layers), output.activation
        fix = (f"give layer {number} activation identity" if output.has_activation
               else f"drop layer {number} (the {function_name})")
        return (
            f"the output layer (layer {number}) applies {function_name} before {self.loss}, which "
            f"reads logits and applies {squash} itself: the outputs are squashed twice, so the "
            f"loss cannot approach 0 and its gradients shrink; {fix}"
        )

    def __repr__(self) -> str:
        if self.is_chain:
            return f"Network(input_shape={self.input_shape}, layers={list(self.layers)}, loss={self.loss!r})"
        layers = ", ".join(
            f"{l}: {op!r} <- {', '.join(map(str, sources))}"
            for l, (op, sources) in enumerate(zip(self.layers, self.sources), start=1)
        )
        return f"Network(input_shape={self.input_shape}, graph=[{layers}], loss={self.loss!r})"

    # ---- the graph ----------------------------------------------------------------------

    @property
    def is_chain(self) -> bool:
        """Whether every layer reads the one before it alone (the article's networks)."""
        return all(sources == (l - 1,) for l, sources in enumerate(self.sources, start=1))

    def input_shape_of(self, number: int) -> Any:
        """What layer ``number``'s operation takes for its input shape: the shape of the
        layer it reads, or one per input (``Op.given``)."""
        op = self.layers[number - 1]
        return op.given([self.shapes[source] for source in self.sources[number - 1]])

    def consumers(self, number: int) -> tuple[int, ...]:
        """The layers that read layer ``number``'s output (0: the network's input), in order."""
        return self._consumers[number]

    @cached_property
    def _consumers(self) -> dict[int, tuple[int, ...]]:
        readers: dict[int, list[int]] = {l: [] for l in range(len(self.layers) + 1)}
        for l, sources in enumerate(self.sources, start=1):
            for source in dict.fromkeys(sources):
                readers[source].append(l)
        return {l: tuple(found) for l, found in readers.items()}

    def reference_name(self, number: int) -> str:
        """How ``to_dict`` and messages name layer ``number``: its name, or ``layer{l}``
        (``input`` for 0)."""
        if number == 0:
            return INPUT
        own = self.layer_names[number - 1]
        if own:
            return own
        taken = set(self.layer_names)
        made = f"layer{number}"
        while made in taken:
            made += "_"
        return made

    # ---- parameters ---------------------------------------------------------------------

    @cached_property
    def parameters(self) -> dict[str, Shape]:
        """Parameter name → shape, in PyTorch layouts: W{l} (conv (o, c, kh, kw); dense (out, in)),
        b{l}, l the layer's number — each operation's ``parameters`` prefix and its number."""
        return {
            name: self.layers[number - 1].parameter_shapes(self.input_shape_of(number))[prefix]
            for name, (number, prefix) in self.parameter_owner.items()
        }

    @cached_property
    def parameter_owner(self) -> dict[str, tuple[int, str]]:
        """Parameter name → (its layer's number, its operation's prefix for it): "W3" → (3, "W")."""
        owners = {}
        for number, op in enumerate(self.layers, start=1):
            for prefix in op.parameter_shapes(self.input_shape_of(number)):
                owners[f"{prefix}{number}"] = (number, prefix)
        return owners

    def layer_parameters(self, number: int) -> dict[str, str]:
        """Layer ``number``'s parameters: its operation's prefix → the network's name ("W" → "W3")."""
        return {prefix: name for name, (owner, prefix) in self.parameter_owner.items() if owner == number}

    @cached_property
    def buffers(self) -> dict[str, Shape]:
        """Buffer name → shape: constants a layer reads that are not trained (batch
        normalisation's running statistics, ``running_mean{l}`` and ``running_var{l}``)."""
        return {
            name: self.layers[number - 1].buffer_shapes(self.input_shape_of(number))[prefix]
            for name, (number, prefix) in self.buffer_owner.items()
        }

    @cached_property
    def buffer_owner(self) -> dict[str, tuple[int, str]]:
        """Buffer name → (its layer's number, its operation's prefix for it)."""
        owners = {}
        for number, op in enumerate(self.layers, start=1):
            for prefix in op.buffer_shapes(self.input_shape_of(number)):
                owners[f"{prefix}{number}"] = (number, prefix)
        return owners

    def layer_buffers(self, number: int) -> dict[str, str]:
        """Layer ``number``'s buffers: its operation's prefix → the network's name."""
        return {prefix: name for name, (owner, prefix) in self.buffer_owner.items() if owner == number}

    @property
    def couples_samples(self) -> bool:
        """Whether a layer mixes the samples of a batch (batch normalisation in train mode):
        gradients are then those of a whole batch, never of one sample alone."""
        return any(op.couples_samples() for op in self.layers)

    @property
    def parameter_count(self) -> int:
        return sum(prod(shape) for shape in self.parameters.values())

    # ---- sizes ----------------------------------------------------------------------------

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
        for number, layer in enumerate(self.layers, start=1):
            nodes = prod(self.shapes[number])
            edges += nodes * layer.window(self.input_shape_of(number)) + (nodes if layer.has_activation else 0)
        return edges

    def position_sets(self, layer: int) -> list[tuple[int, ...]]:
        """The article's p: for each output node of layer ``layer`` (1-based, flat order), the
        1-based flat indices of the input nodes it used, in the order of the kernel's places
        (an operation of several inputs counts them laid end to end).

        Positions that fall on the padding add nothing and are left out, so a border
        node's set is shorter than the kernel.
        """
        if not (isinstance(layer, int) and 1 <= layer <= len(self.layers)):
            raise ValueError(f"layer must be 1..{len(self.layers)}, got {shown(layer)}")
        connections = self.layers[layer - 1].connections(self.input_shape_of(layer))
        return [tuple(i + 1 for i in c.inputs) for c in connections]

    # ---- variants -------------------------------------------------------------------------

    def with_choices(self, g: str | None = None, loss: str | None = None) -> Network:
        """The same network with the generic g and/or the generic loss made concrete."""
        layers = [
            layer.with_activation(g) if g is not None and layer.activation == "g" else layer
            for layer in self.layers
        ]
        chosen_loss = loss if loss is not None and self.loss == "generic" else self.loss
        x, out = _wired(self.input_shape, layers, self.sources, self.layer_names)
        return Network(inputs=x, outputs=out, loss=chosen_loss, name=self.name, mode=self.mode, _variant=True)

    def with_mode(self, mode: str) -> Network:
        """The same network in ``mode``: "train" (batch normalisation on the batch's statistics)
        or "eval" (on its running statistics)."""
        x, out = _wired(self.input_shape, self.layers, self.sources, self.layer_names)
        return Network(inputs=x, outputs=out, loss=self.loss, name=self.name, mode=mode, _variant=True)

    @property
    def generic_activation(self) -> bool:
        return any(layer.activation == "g" for layer in self.layers)

    def derive(self, batch: int | None = None, reduce: str = "sum") -> Any:
        """Backpropagate symbolically: a ``symbackprop.Derivation`` of this network — of one
        sample, or of a batch of ``batch`` samples sharing every weight, its loss their sum
        (``reduce="mean"``: their mean). A network whose layers couple the samples (batch
        normalisation in train mode) needs a batch."""
        return self.derivation(self, batch=batch, reduce=reduce)

    # ---- specs ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The spec of this network, as ``from_dict`` reads it (pairs written out; a layer's
        ``name`` and ``inputs`` where it has a name or reads other than the layer before it)."""
        referenced = {s for sources in self.sources for s in sources}
        items = []
        for number, (layer, sources) in enumerate(zip(self.layers, self.sources), start=1):
            item: dict[str, Any] = {layer.key: layer.settings()}
            if self.layer_names[number - 1] or (number in referenced and not self.is_chain):
                item["name"] = self.reference_name(number)
            if sources != (number - 1,):
                item["inputs"] = [self.reference_name(s) for s in sources]
            items.append(item)
        spec = {"name": self.name, "input": list(self.input_shape), "layers": items, "loss": self.loss}
        return spec if self.mode == "train" else {**spec, "mode": self.mode}

    @classmethod
    def from_dict(cls, spec: object, name: str = "network") -> Network:
        """Build a network from a parsed spec: ``{input, layers: [{conv|dense|…: {...},
        name?, inputs?}], loss, name}``."""
        if not isinstance(spec, dict):
            raise SpecError("the spec must be a mapping with keys input and layers (loss and name optional)")
        unknown = set(spec) - {"input", "layers", "loss", "name", "mode"}
        if unknown:
            raise SpecError(
                f"unknown key {min(map(str, unknown))!r} at the top level; "
                "allowed: input, layers, loss, name, mode"
            )
        if "input" not in spec:
            raise SpecError("input: missing; give the input shape as [channels, height, width] or [features]")
        items = spec.get("layers")
        if not isinstance(items, list) or not items:
            raise SpecError(f"layers: the network has no layers; give a list of {_item_choices()} items")
        ops, sources, names = [], [], []
        known = {INPUT: 0}
        for number, item in enumerate(items, start=1):
            op, layer_name, reads = _layer_from_item(number, item, known)
            ops.append(op)
            sources.append(reads)
            names.append(layer_name)
            if layer_name is not None:
                known[layer_name] = number
        x, out = _wired(spec["input"], ops, sources, names)
        return cls(inputs=x, outputs=out, loss=spec.get("loss", "generic"), name=spec.get("name", name),
                   mode=spec.get("mode", "train"))


# ---- building the graph -------------------------------------------------------------------


def _applied(number: int, op: Any, inputs: tuple[Tensor, ...], name: str | None = None) -> Tensor:
    """Layer ``number``: ``op`` on ``inputs``, a SpecError naming the layer when it does not fit."""
    if not isinstance(op, Op):
        choices = ", ".join(kind.__name__ for kind in OPS.values())
        raise SpecError(f"layer {number}: expected one of {choices}, got {shown(op)}")
    try:
        return apply(op, inputs, name)
    except SpecError as error:
        raise SpecError(f"layer {number} ({op.key}): {error}") from None


def _chain(input_shape: object, layers: object) -> tuple[Tensor, Tensor]:
    if input_shape is None:
        raise SpecError("input_shape: missing; give (channels, height, width) or (features,), or inputs= and outputs=")
    if not isinstance(layers, (list, tuple)) or not layers:
        raise SpecError("layers: the network has no layers; give at least one")
    return _wired(input_shape, layers, [(l - 1,) for l in range(1, len(layers) + 1)], [None] * len(layers))


def _wired(
    shape: object, ops: Sequence[Any], sources: Sequence[tuple[int, ...]], names: Sequence[str | None]
) -> tuple[Tensor, Tensor]:
    """The input and the output of layers given as operations and what each reads (0: the
    input); the last is the output, and every other must lead to it."""
    try:
        x = Input(input_shape(shape))
    except SpecError as error:
        raise SpecError(str(error)) from None
    tensors = [x]
    for number, (op, reads, layer_name) in enumerate(zip(ops, sources, names), start=1):
        tensors.append(_applied(number, op, tuple(tensors[s] for s in reads), layer_name))
    used = {id(t) for t in _tensors_between(x, tensors[-1])}
    for number, tensor in enumerate(tensors[1:-1], start=1):
        if id(tensor) not in used:
            raise SpecError(
                f"layer {number} ({tensor.op.key}): nothing reads its output on the way to the "
                "last layer; give it to a later layer's inputs, or remove it"
            )
    return x, tensors[-1]


def _graph_ends(inputs: object, outputs: object) -> tuple[Tensor, Tensor]:
    if isinstance(inputs, (list, tuple)):
        if len(inputs) != 1:
            raise SpecError(f"inputs: a network has one input tensor, got {len(inputs)}")
        (inputs,) = inputs
    if isinstance(outputs, (list, tuple)):
        if len(outputs) != 1:
            raise SpecError(f"outputs: the loss reads one output tensor, got {len(outputs)}")
        (outputs,) = outputs
    if not isinstance(inputs, Tensor) or inputs.op is not None:
        raise SpecError(f"inputs: expected the tensor of sb.Input(shape), got {shown(inputs)}")
    if not isinstance(outputs, Tensor):
        raise SpecError(f"outputs: expected the tensor an operation returned, got {shown(outputs)}")
    return inputs, outputs


def _tensors_between(x: Tensor, out: Tensor) -> list[Tensor]:
    """The tensors ``out`` is computed from, ``out`` included and ``x`` not, in the order they
    were made (every one after what it reads); a SpecError when ``out`` does not come from
    ``x`` alone."""
    if out is x:
        raise SpecError("layers: the network has no layers; give at least one")
    seen: dict[int, Tensor] = {}
    stack = [out]
    while stack:
        tensor = stack.pop()
        if id(tensor) not in seen:
            seen[id(tensor)] = tensor
            stack.extend(tensor.inputs)
    if id(x) not in seen:
        raise SpecError("outputs: not computed from inputs")
    if any(t.op is None and t is not x for t in seen.values()):
        raise SpecError("outputs: computed from inputs and from another Input; a network has one input")
    return sorted((t for t in seen.values() if t is not x), key=lambda t: t.order)


LAYER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


def _check_layer_names(names: Sequence[object], taken: dict[str, int] | None = None) -> None:
    """Each name a valid one, ``input`` left to the network's input, none given twice."""
    seen: dict[str, int] = {k: v for k, v in (taken or {}).items() if k != INPUT}
    for number, name in enumerate(names, start=1):
        if name is None:
            continue
        if not isinstance(name, str) or not LAYER_NAME.fullmatch(name) or name == INPUT:
            raise SpecError(
                f"layer {number}: name must be 1 to 64 ASCII letters, digits, - or _, starting "
                f"with a letter or _, and not {INPUT!r}; got {shown(name)}"
            )
        if name in seen:
            raise SpecError(f"layer {number}: name {name!r} is layer {seen[name]}'s already")
        seen[name] = number


def _item_choices() -> str:
    return "/".join(OPS)


def _layer_from_item(number: int, item: object, known: dict[str, int]) -> tuple[Op, str | None, tuple[int, ...]]:
    """A spec item's operation, its name and the layers it reads."""
    where = f"layer {number}"
    kinds = [key for key in item if key not in ("name", "inputs")] if isinstance(item, dict) else []
    if not isinstance(item, dict) or len(kinds) != 1:
        examples = " or ".join(f"{{{key}: {{...}}}}" for key in OPS)
        raise SpecError(f"{where}: expected one of {examples} (with name: and inputs: if needed), got {shown(item)}")
    (kind,) = kinds
    settings = item[kind]
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
    name = item.get("name")
    if name is not None:
        _check_layer_names([*([None] * (number - 1)), name], taken=known)
    reads = (number - 1,)
    if "inputs" in item:
        names = item["inputs"]
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not names:
            raise SpecError(f"{where}: inputs must be a list of layer names (or {INPUT!r}), got {shown(names)}")
        for source in names:
            if not isinstance(source, str) or source not in known:
                earlier = ", ".join(known)
                raise SpecError(
                    f"{where}: inputs names {shown(source)}, which is not an earlier layer's name; "
                    f"known here: {earlier}"
                )
        reads = tuple(known[source] for source in names)
    try:
        return op(**settings), name, reads
    except SpecError as error:
        message = str(error).split(": ", 1)[-1]
        raise SpecError(f"{where}: {message}") from None


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


