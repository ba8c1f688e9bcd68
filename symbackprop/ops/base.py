"""What every operation provides, and the checks of settings that operations share.

An operation is a frozen dataclass of its settings (the keys of its spec item) and
the one place that knows everything about it. Its faces, listed in ``FACES`` (a test
walks the registry and names any face an operation lacks):

* settings: the dataclass fields, checked in ``__post_init__`` (a ``SpecError`` naming the
  setting); ``output_shape`` (or a ``SpecError`` when the input does not fit) and
  ``parameter_shapes`` (PyTorch layouts, keyed "W" and "b");
* the scalar face: ``window`` (how many kernel places an output reads, padding
  included), ``connections`` (for each output node, which inputs it reads, at which
  kernel place, with which weight: the article's position sets) and ``nodes``, the graph
  nodes it adds (``symbackprop.nodes``), whose local derivatives the engine reads;
* notation, for documents: ``describe`` (one line), ``table_cells`` (kernel, stride,
  padding), ``size_formula`` (the article's formula (1) for this layer),
  ``forward_formula`` (what one output node computes, in the article's notation),
  ``weight_formula`` (∂L/∂w in the article's form) and ``upstream_formula`` (how ∂L/∂a of
  its input collects the gradients of its outputs);
* the tensor face: ``tensor_form``, its forward for every output at once in index form
  (``symbackprop.indexed.IndexForm``: sympy ``Indexed`` and ``Sum``, settings as symbols),
  with the facts it states about its gradients; ``symbackprop.tensor`` differentiates it
  into the layer's general formulas and checks them against the scalar face;
* the reference face: ``reference_forward`` and ``reference_backward``, numpy alone, written
  from the textbook formulas at the level of the whole layer, sharing nothing with the
  scalar face (a test reads their source to hold them to it);
* the numeric-code face: ``layer_code``, the lines of whole-array numpy that the generated
  gradients modules run for its forward and backward pass (``LayerCode``; the variables it
  reads and writes are named by ``CodeNames``; the helpers it calls are those of
  ``symbackprop.numeric.runtime``), and ``code_values``, how many values a sample's code
  holds at most (what the batch is cut into chunks by);
* the torch twin: ``torch_twin`` (the ``torch.nn`` modules that compute it: class names and
  arguments, the last holding its parameters) and
  ``from_torch`` (settings read off such a module). Only ``torch_bridge`` imports torch.

Besides ``FACES``, ``Op`` has ``reference_near_kink`` (numpy, no branch by default: only
max pooling needs it), which ``verify`` asks so that its finite differences never
straddle a kink.

Imports numpy, ``errors``, ``activations`` (for the names) and ``nodes``; the
operations also import ``indexed`` for their tensor face.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from itertools import product
from math import prod
from typing import Any, ClassVar, NamedTuple

import numpy as np

from ..activations import activation as _known_activation
from ..errors import SpecError, shown
from ..nodes import Linear
from .wiring import Tensor, apply

Shape = tuple[int, ...]
Pair = tuple[int, int]

FACES = (
    "output_shape", "parameter_shapes", "window", "connections", "nodes",
    "describe", "table_cells", "size_formula", "forward_formula", "weight_formula",
    "upstream_formula", "tensor_form", "reference_forward", "reference_backward", "layer_code",
    "code_values", "torch_twin", "from_torch",
)


class CodeNames(NamedTuple):
    """The variables of one layer's block in a generated module. Values are held with the
    batch last — an image as (C, H, W, B), a vector as (N, B) — so that a convolution and a
    dense layer are one matrix product each and every slice runs along the batch. ``B`` is
    the batch size; ``grads`` holds the parameter gradients by name ("W3"): when
    ``per_sample``, arrays (B, *shape) given to the block to write into, otherwise the
    block assigns them, summed over the batch."""

    number: int  # l: the parameters are W{l} and b{l}
    # the layer's input, assigned before its block, batch last: "x", "a2" (one per input for an
    # operation of several: ``Op.given``)
    input: Any
    output: str  # what the operation computes, to assign: its z, or a pool's a ("z3", "a2")
    output_grad: str  # ∂L/∂output, assigned before its backward lines: "dz3", "da2"
    input_grad: Any  # ∂L/∂input, that its backward lines assign: "dx", "da2" (one per input)


class Branch(NamedTuple):
    """Lines of numpy for one way of running, and what they do (the comment on their line)."""

    note: str
    lines: list[str]


class ParameterGrads(NamedTuple):
    """A layer's parameter gradients, from output_grad: per sample, written into grads'
    arrays (B, *shape), or summed over the batch and assigned to grads. The printer puts
    them under ``if per_sample:`` / ``else:`` — or, where only sums are asked for (jax),
    the summed lines alone."""

    comment: str  # the formula both compute
    per_sample: Branch
    summed: Branch


class LayerCode(NamedTuple):
    """A layer's lines of numpy, each block opening with a comment saying what it computes."""

    forward: list[str]  # output from input (and the parameters)
    backward: list[str]  # input_grad from output_grad
    parameter_grads: ParameterGrads | None = None  # None: a layer without parameters


class Parameter(NamedTuple):
    """A parameter an operation declares: layer l's is named ``{prefix}{l}`` (W3, b3)."""

    prefix: str  # "W": the name's letters, before the layer's number
    role: str  # what documents call it: "weights", "bias"
    torch: str  # the attribute of the torch twin that holds it: "weight", "bias"
    tex: str = ""  # its letter in formulas: "w" (by default the prefix's first, lowercase)


WEIGHTS = Parameter("W", "weights", "weight", "w")
BIAS = Parameter("b", "bias", "bias", "b")


class Connection(NamedTuple):
    """How one output node reads its inputs, in the order of the kernel's places."""

    # 0-based flat input indices (an operation of several inputs counts them laid end to end:
    # the first input's values, then the second's); places on the padding are left out
    inputs: tuple[int, ...]
    slots: tuple[int, ...]  # each input's place in the kernel, 0-based in kernel order
    weights: tuple[tuple[int, ...], ...] | None  # each input's index into W; None: no weights
    bias: tuple[int, ...] | None  # index into the bias, or None


@dataclass(frozen=True)
class Notation:
    """What a document tells an operation about its layer, to write its general formulas.

    ``sources`` and ``input_letters`` name every input, in the operation's order; for
    ``upstream_formula`` the input asked about comes first (``source``, ``input_letter``)."""

    number: int  # l
    input_letter: str  # what it reads: "x" (the input), "a^{(k)}" (layer k's output)
    input_count: int
    local: Callable[[str], str]  # the activation's derivative at an index, "… \cdot ", or ""
    flat: bool  # the layer's weights are numbered flat (w_1, w_2, …)
    sources: tuple[int, ...] = ()  # the layers it reads (0: x); () for the one before it
    input_letters: tuple[str, ...] = ()  # one letter per input, for an operation of several

    @property
    def source(self) -> int:
        """The layer its (first) input comes from: 0 for x."""
        return self.sources[0] if self.sources else self.number - 1


class Op:
    """The base of every operation: the class attributes and helpers all of them share."""

    key: ClassVar[str]  # the spec item's key and the registry's name: "conv"
    title: ClassVar[str]  # "convolution", in running text
    torch_name: ClassVar[str]  # the torch.nn class of its twin: "Conv2d"
    has_activation: ClassVar[bool] = True  # a = g(z) follows its sums
    image_input: ClassVar[bool] = True  # its input must be (channels, height, width)
    required: ClassVar[tuple[str, ...]] = ()  # settings without a default
    activation: ClassVar[str | None] = None  # overridden by a field where there is one
    bias: ClassVar[bool] = False
    # How many inputs it reads: 1, or None for two or more (Add, Concat). Its faces take
    # what ``given`` makes of one item per input (shapes, symbols, arrays, variable names).
    arity: ClassVar[int | None] = 1
    # The parameters it may have, in the order of its torch twin's; ``parameter_shapes`` gives
    # the shapes of those it has, by prefix.
    parameters: ClassVar[tuple[Parameter, ...]] = ()
    # Constants it reads that are not trained (batch normalisation's running statistics):
    # declared as parameters are, named by prefix and layer, their shapes by ``buffer_shapes``
    buffers: ClassVar[tuple[Parameter, ...]] = ()

    def __call__(self, *inputs: Tensor, name: str | None = None) -> Tensor:
        """The functional API: this operation applied to tensors, ``Conv2D(8, 3)(x)``; the
        result's shape is inferred at once (see ``ops.wiring``)."""
        try:
            return apply(self, inputs, name)
        except SpecError as error:
            raise SpecError(f"{self.key}: {error}") from None

    @staticmethod
    def torch_apply(torch: Any, modules: list[Any], inputs: list[Any]) -> Any:
        """How its torch twin computes its output from its inputs: its modules (built from
        ``torch_twin``) one after another on its one input. ``torch`` is the module itself,
        passed in (only ``torch_bridge`` imports it)."""
        (value,) = inputs
        for module in modules:
            value = module(value)
        return value

    def buffer_shapes(self, input_shape: Any) -> dict[str, Shape]:
        """The shapes of its buffers, by prefix: none for most operations."""
        return {}

    def in_mode(self, mode: str) -> Op:
        """The operation as a network in ``mode`` ("train" or "eval") runs it: itself for every
        operation but those that behave differently (batch normalisation)."""
        return self

    def couples_samples(self) -> bool:
        """Whether each output depends on every sample of the batch (batch normalisation in
        train mode): the scalar graph then needs a batch, and ``batch_nodes`` builds it."""
        return False

    def batch_nodes(
        self, input_shape: Any, inputs: list[Any], params: dict[str, Any], outputs: list[Any], names: Any,
        number: int,
    ) -> tuple[tuple, tuple]:
        """For an operation that couples the samples: the nodes inside its layer (each a new
        symbol from ``names.symbol(code, tex)``, named for layer ``number``) and its output
        nodes, from every sample's inputs (one ``given`` per sample) to every sample's outputs."""
        raise NotImplementedError(f"{self.key} does not couple the samples of a batch")

    def compact(self, d: Any, number: int) -> list[Any] | None:
        """Its input gradient simplified from the engine's staged result into a compact form
        (batch normalisation in train mode); None for the operations that have no stages."""
        return None

    def folds_as(self) -> str | None:
        """The activation it is, when it could fold into the layer before it as that layer's
        ``activation=`` (the article's a = g(z)); None for every operation but an activation."""
        return None

    def given(self, per_input: Sequence[Any]) -> Any:
        """What its faces take for its inputs, from one item per input (shapes, symbols,
        arrays, names): the item itself for an operation of one input, else all of them."""
        return per_input[0] if self.arity == 1 else tuple(per_input)

    def per_input(self, taken: Any) -> tuple[Any, ...]:
        """The other way round: one item per input from what its faces give back (the input
        gradients of ``reference_backward``)."""
        return (taken,) if self.arity == 1 else tuple(taken)

    @classmethod
    def setting_names(cls) -> list[str]:
        """The settings it accepts: the keys allowed in its spec item."""
        return [f.name for f in fields(cls)]

    def settings(self) -> dict[str, Any]:
        """Its settings as a spec item holds them (pairs as lists)."""
        values = {name: getattr(self, name) for name in self.setting_names()}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    def with_activation(self, name: str) -> Op:
        return replace(self, activation=name) if self.has_activation else self

    def parameter_count(self, input_shape: Shape) -> int:
        return sum(prod(shape) for shape in self.parameter_shapes(input_shape).values())

    def flat_weights(self, input_shape: Shape) -> bool:
        """Whether documents number its weights flat: w_1, w_2, … (else w_{o,c,m,n})."""
        return True

    # ---- teaching: what documents say about it, beyond its formulas ----------------------

    def position_note(self) -> str | None:
        """What the position set p^{(l)}_i of one of its nodes holds, as documents introduce
        it ("the inputs its kernel covered"); None when its nodes have no position sets worth
        listing (a neuron reads every input, an addition one value of each)."""
        return None

    def weight_note(self) -> str | None:
        """Why ∂L/∂w of one of its weights has the terms it has, in a sentence or two for the
        backward section; None for an operation without weights."""
        return None

    def output_note(self) -> str | None:
        """What output i of its layer holds when it has no activation of its own (the
        notation table's a^{(l)}_i): "the largest input of its window"; None for an operation
        with an activation, whose outputs are a = g(z)."""
        return None

    def window_shape(self, input_shape: Any) -> tuple[int, int, int] | None:
        """The places of one node's window as (channels, rows, columns), in the order of its
        position sets: how documents lay out a long set as a table (a row per channel, a
        column per row of the kernel). None for an operation without windows."""
        return None

    def position_grid(self, entries: Sequence[int | None], input_shape: Any) -> tuple[list[str], list[list[str]]] | None:
        """A long position set laid out as its window is, for a table: (column heads, rows) of
        text with ``$…$`` math — by default a row per channel and a column per row of the window,
        a cell holding that row's inputs (a–b for a run, a dot for an empty place). None without
        ``window_shape``."""
        shape = self.window_shape(input_shape)
        if shape is None:
            return None
        channels, rows, columns = shape
        body = []
        for c in range(channels):
            cells = [f"channel {c + 1}"]
            for m in range(rows):
                start = (c * rows + m) * columns
                cells.append(runs(entries[start : start + columns]))
            body.append(cells)
        return [f"row {m + 1}" for m in range(rows)], body

    def place_word(self) -> str:
        """What documents call one place of its window: "kernel place" for a kernel of
        weights, "window place" for a window without them."""
        return "kernel place" if self.parameters else "window place"

    def position_set_tex(self, number: int, index: int, entries: Sequence[int | None]) -> str:
        """Its position set p^{(l)}_i as documents write it, from ``entries``: the 1-based input
        each place read, in the order of its places, None where a place read none (the
        padding). By default the inputs in order, a dot for an empty place, in pieces of ten
        (each its own formula, separated by ``$ $``, so that a table cell can wrap it)."""
        items = [r"\cdot" if e is None else str(e) for e in entries]
        pieces = [", ".join(items[k : k + 10]) for k in range(0, len(items), 10)]
        return rf"p^{{({number})}}_{{{index}}} = \lbrace " + ",$ $".join(pieces) + r" \rbrace"

    def parameter_declared(self, input_shape: Any) -> tuple[Parameter, ...]:
        """The declared parameters it has for this input, in their order (those
        ``parameter_shapes`` gives): documents name them by role ("weights", "bias")."""
        shapes = self.parameter_shapes(input_shape)
        return tuple(p for p in self.parameters if p.prefix in shapes)

    def outer_product(self) -> bool:
        """Whether its weight gradient is the outer product δ aᵀ of ∂L/∂z and its flattened
        input (documents then ask for it as one); only a dense layer's."""
        return False

    def pads(self) -> bool:
        """Whether its windows reach into padding (documents then write formula (1) with P
        and mark the padded places); an operation without windows never does."""
        return False

    def correlates(self) -> bool:
        """Whether its weight gradient is a plain cross-correlation of its input with
        ∂L/∂z (documents then say so and check it); only a convolution of stride 1 without
        dilation."""
        return False

    def adjoint(self, input_shape: Any) -> tuple[Op, Shape] | None:
        """The operation whose input gradient this one's forward is, and the input shape it takes
        (a transposed convolution's: the convolution it transposes), for documents to relate the
        two; None for every other operation."""
        return None

    def reference_near_kink(self, x: np.ndarray, margin: float) -> bool:
        """Whether a step smaller than ``margin`` in the input x (B, *input) could switch the
        branch this operation takes, so that finite differences would straddle a kink.
        Numpy alone, like the reference faces. Never, for an operation without branches;
        max pooling overrides it (near-ties inside a window)."""
        return False

    def check_input(self, input_shape: Shape) -> None:
        """A SpecError when the operation needs an image and gets a vector."""
        if self.image_input and len(input_shape) != 3:
            article = "an" if self.title[0] in "aeiou" else "a"
            got = f"a vector of {input_shape[0]}" if len(input_shape) == 1 else f"shape {input_shape}"
            raise SpecError(
                f"{article} {self.title} layer needs a (channels, height, width) input, got {got}"
            )


# ---- checks of settings ---------------------------------------------------------------------


def runs(entries: Sequence[int | None]) -> str:
    """A row of a position set, short: "197–201" for consecutive inputs, else them listed (a dot,
    ``$\\cdot$``, for an empty place)."""
    present = [e for e in entries if e is not None]
    if len(present) == len(entries) > 2 and present == list(range(present[0], present[0] + len(present))):
        return f"{present[0]}\u2013{present[-1]}"
    return ", ".join("$\\cdot$" if e is None else str(e) for e in entries)


def integer(owner: str, key: str, value: object, minimum: int) -> int:
    """``value`` as an int ≥ minimum (numpy integers accepted, bools and floats refused)."""
    number = as_int(value)
    if number is None or number < minimum:
        what = "a positive integer" if minimum == 1 else "a non-negative integer"
        raise SpecError(f"{owner}: {key} must be {what}, got {shown(value)}")
    return number


def pair(owner: str, key: str, value: object, minimum: int) -> Pair:
    """An int or an [h, w] pair of ints ≥ minimum, as a tuple (h, w)."""
    items = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    numbers = [as_int(v) for v in items]
    if len(numbers) != 2 or any(n is None or n < minimum for n in numbers):
        what = "a positive integer" if minimum == 1 else "a non-negative integer"
        raise SpecError(f"{owner}: {key} must be {what} or a pair of them, got {shown(value)}")
    return (numbers[0], numbers[1])


def as_int(value: object) -> int | None:
    """An int from anything that is one (numpy integers included); None for bools and the rest."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_bias_and_activation(owner: str, bias: object, activation: object) -> None:
    if not isinstance(bias, bool):
        raise SpecError(f"{owner}: bias must be true or false, got {shown(bias)}")
    try:
        _known_activation(activation)
    except SpecError as error:
        raise SpecError(f"{owner}: {error}") from None


def sliding_output(
    what: str, size: Pair, kernel: Pair, stride: Pair, padding: Pair, span: Pair | None = None
) -> Pair:
    """Formula (1) on both axes, floor((M + 2P − K) / S) + 1, where K is the span the kernel
    covers; a SpecError when it does not fit in the padded input."""
    span = span or kernel
    padded = (size[0] + 2 * padding[0], size[1] + 2 * padding[1])
    if span[0] > padded[0] or span[1] > padded[1]:
        raise SpecError(
            f"{what} {span[0]}x{span[1]} is larger than its padded input {padded[0]}x{padded[1]}"
        )
    return ((padded[0] - span[0]) // stride[0] + 1, (padded[1] - span[1]) // stride[1] + 1)


def sliding_size_tex(
    size: Pair, out: Pair, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair, padded: bool
) -> list[str]:
    """Formula (1) with the layer's numbers, one line per axis: M_z = ⌊(M (+ 2P) − K) / S⌋ + 1,
    K written d·(K − 1) + 1 where the kernel is dilated."""
    sides = []
    for letter, m, result, k, s, p, d in zip("MN", size, out, kernel, stride, padding, dilation):
        pad = rf" + 2 \cdot {p}" if padded else ""
        span = str(k) if d == 1 else rf"({d} \cdot {k - 1} + 1)"
        sides.append(rf"{letter}_z = \left\lfloor \frac{{{m}{pad} - {span}}}{{{s}}} \right\rfloor + 1 = {result}")
    return sides


def pair_text(values: Pair) -> str:
    """"2" for (2, 2), "2, 3" otherwise: how tables show a setting."""
    return str(values[0]) if values[0] == values[1] else f"{values[0]}, {values[1]}"


def shape_tex(shape: Sequence[int]) -> str:
    return r" \times ".join(map(str, shape))


def upstream_tex(layer: int, index: str) -> str:
    """∂L/∂a^{(l)}_{index}."""
    return rf"\frac{{\partial L}}{{\partial a^{{({layer})}}_{{{index}}}}}"


def window_upstream_tex(layer: int, source: int) -> str:
    """The head of the upstream formula of a layer that reads windows (its position sets) of
    layer ``source``'s output: ∂L/∂a^{(k)}_j = Σ_{i : j ∈ p^{(l)}_i} ∂L/∂a^{(l)}_i · (what
    follows is the layer's own)."""
    return (
        rf"{upstream_tex(source, 'j')} = \sum_{{i \,:\, j \in p^{{({layer})}}_{{i}}}} "
        rf"{upstream_tex(layer, 'i')} \cdot "
    )


def read_attribute(module: Any, name: str) -> Any:
    """A torch module's setting; a SpecError naming the module when it has none."""
    if not hasattr(module, name):
        raise SpecError(f"{type(module).__name__}: has no {name!r}; not a module symbackprop reads")
    return getattr(module, name)


def same_or_pair(value: object) -> object:
    """A torch setting (an int or a tuple) as a spec value: one int when both are equal."""
    if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1]:
        return value[0]
    return value


def weight_formula_tex(
    n: Notation, index: str, over: str, weight: str, used: str, bias_index: str | None
) -> tuple[str, str | None]:
    """∂L/∂w = Σ upstream · local in the article's form, and ∂L/∂b beside it (or None)."""
    local = n.local(index)
    upstream = upstream_tex(n.number, index)
    equation = (
        rf"\frac{{\partial L}}{{\partial {weight}}} = {over}\underbrace{{{upstream}}}"
        rf"_{{\text{{upstream}}}} \cdot \underbrace{{{local}{used}}}_{{\text{{local}}}}"
    )
    if bias_index is None:
        return equation, None
    local_z = (r" \cdot " + local.removesuffix(r" \cdot ")) if local else ""
    bias = rf"\frac{{\partial L}}{{\partial b^{{({n.number})}}_{{{bias_index}}}}} = {over}{upstream}{local_z}"
    return equation, bias


def activation_code(function: str, z: str, a: str, da: str, dz: str) -> tuple[list[str], list[str]]:
    """Generated code for a = g(z) and dL/dz = g′(z, a) · dL/da, with the runtime's functions:
    ``relu`` and ``relu_backward`` (g′ times dL/da in as few passes as it takes), …; for the
    generic g, chosen at run time, ``g`` and ``g_prime``, then the product. g′ is given a
    too, so that σ′ is a(1 − a), not a second exp; dL/dz is a new array, never dL/da
    changed in place (another layer may hold it)."""
    if function == "identity":
        return [f"{a} = {z}  # identity"], [f"{dz} = {da}  # identity: dL/dz = dL/da"]
    forward = [f"{a} = {function}({z})"]
    if function != "g":
        return forward, [f"{dz} = {function}_backward({z}, {a}, {da})  # dL/dz = g'(z) dL/da, a new array"]
    backward = [
        f"{dz} = {function}_prime({z}, {a})  # g'(z), a new array",
        f"{dz} *= {da}  # dL/dz = g'(z) dL/da, in place",
    ]
    return forward, backward


def read_text(stride: Pair, dilation: Pair, padding: Pair) -> str:
    """Where output (i, j) reads the input at kernel place (m, n), row and column, as the
    comments of generated code write it: "2i + m - 1, j + n"."""
    return ", ".join(
        f"{s if s != 1 else ''}{out} + {d if d != 1 else ''}{kernel}" + (f" - {p}" if p else "")
        for s, d, p, out, kernel in zip(stride, dilation, padding, "ij", "mn")
    )


def padded_text(x: str, padding: Pair, fill: str | None = None) -> str:
    """Generated code for x (C, H, W, B) with ``padding`` around it (zeros, or ``fill``):
    x itself when there is none."""
    if padding == (0, 0):
        return x
    return f"_pad({x}, {padding})" if fill is None else f"_pad({x}, {padding}, {fill})"


def unpadded_text(grad: str, padding: Pair) -> str:
    """Generated code for ``grad`` of a padded input cut back to the input: the padding's rows
    and columns dropped."""
    return grad if padding == (0, 0) else f"_unpad({grad}, {padding})"


def weighted_sums(
    connections: Sequence[Connection],
    inputs: Sequence[Any],
    params: dict[str, Any],
    outputs: Sequence[Any],
) -> tuple[Linear, ...]:
    """One ``Linear`` node per output: Σ W[weight] · input (+ b), in kernel order."""
    weights = _lookup(params["W"])
    bias = _lookup(params["b"]) if "b" in params else None
    return tuple(
        Linear(
            out,
            tuple((weights[w], inputs[i]) for i, w in zip(c.inputs, c.weights or ())),
            bias[c.bias] if bias is not None and c.bias is not None else None,
        )
        for out, c in zip(outputs, connections)
    )


def _lookup(array: Any) -> dict[tuple[int, ...], Any]:
    """A sympy Array's elements by index tuple (indexing the Array itself is slow)."""
    indices = product(*(range(n) for n in array.shape))
    return dict(zip(indices, array.as_immutable().args[0]))  # its elements, row-major
