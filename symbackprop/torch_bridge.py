"""PyTorch and symbackprop, both ways — the only module that imports torch, and only when asked.

* ``to_torch(network, params)``: a module (float64, a ``torch.fx.GraphModule``) computing
  the network, holding those weights: each layer's operation builds its twin modules
  (``Op.torch_twin``) and says how they compute from its inputs (``Op.torch_apply``: one
  after another, or an addition, or ``torch.cat``); ``torch_loss(network)`` its loss per
  sample.
* ``from_torch(module, input_shape, loss=...)``: the network any ``nn.Module`` computes that
  ``torch.fx.symbolic_trace`` can trace — its modules (``Conv2d``, ``Linear``, ``MaxPool2d``,
  ``AvgPool2d``, ``AdaptiveAvgPool2d(1)``, ``Flatten``, the activations), ``+``/``torch.add``,
  ``torch.cat(dim=1)``, the activation functions and methods, ``flatten``/``view(B, -1)`` and
  ``mean((2, 3))`` — with its parameters. An activation right after the ``Conv2d`` or
  ``Linear`` whose output it alone reads folds into that layer (the article's z, then a =
  g(z)); elsewhere it is a layer of its own. Anything else is a ``SpecError`` naming the fx
  node, its op and its target.

Nothing is read wrong in silence. Modules are matched by type, never by name: a subclass
of a module read here is kept whole by the tracer and read as that module only when it keeps
its ``forward`` (a fake-quantised ``Linear`` has its own: refused); a module with forward
hooks or pre-hooks, a module with parameters called twice and two modules holding one
parameter (weights shared by two layers) are refused, and so is an operation in place
(``inplace=True``) on a tensor that another node reads after it. Each node, once read, is
run by torch on a batch of two: where torch fails, or computes a shape other than the one
read, the node is refused (``AdaptiveAvgPool2d(1)``'s (C, 1, 1) stays an image until
flattened). Last, the network read and the module are run on one seeded random batch: what
fx does not record (a tensor changed in place through an alias) makes them differ, and the
module is refused. A layer fx keeps but whose output nothing uses is no layer of the network.

Softplus: torch's returns z itself once z > 20 (its ``threshold``); symbackprop's is
the exact log(1 + e^z). ``to_torch(..., exact=True)`` — what ``check`` and the tests use —
puts an exact softplus (``logaddexp(z, 0)``) in its place, so points with z > 20 agree.

torch is never a runtime requirement: it is imported inside the functions here.

Imports ``errors``, ``activations``, ``losses``, ``network`` and ``ops``; torch lazily.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import prod
from types import SimpleNamespace
from typing import Any

import numpy as np

from .activations import ACTIVATIONS
from .errors import SpecError, shown
from .losses import LOSSES
from .network import INPUT, LAYER_NAME, Network
from .ops import OPS, Activation, Add, Concat, GlobalAvgPool2D, Input, Op, Shape, Upsample
from .ops.wiring import input_shape as _input_shape


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ImportError(
            "PyTorch is not installed; `pip install torch` (the CPU build is enough)"
        ) from None
    return torch


# ---- symbackprop → torch ----------------------------------------------------------------------


def to_torch(network: Network, params: Mapping[str, Any] | None = None, exact: bool = False) -> Any:
    """The network as a ``torch.fx.GraphModule`` in float64, holding ``params`` (by name,
    PyTorch layouts, every parameter and nothing else) or torch's own initial weights when
    None. Its parameters come in the network's order (layer by layer, W before b); ``exact``
    swaps torch's thresholded Softplus for the exact function.

    A network with the generic g must choose it first (``network.with_choices(g=...)``).
    """
    torch = _torch()
    nn = torch.nn
    if network.generic_activation:
        raise ValueError("the network leaves its activation g generic; choose it with with_choices(g=...)")
    arrays = _checked_params(network, params) if params is not None else None
    twins, holders = [], {}
    for number, op in enumerate(network.layers, start=1):
        shape = network.input_shape_of(number)
        modules = [getattr(nn, name)(**kwargs) for name, kwargs in op.torch_twin(shape)]
        held = {**network.layer_parameters(number), **network.layer_buffers(number)}
        for parameter in (*op.parameters, *op.buffers):
            name = held.get(parameter.prefix)
            if name is not None:
                holders[name] = (modules[-1], parameter.torch)
        if op.has_activation and op.activation != "identity":
            modules.append(_activation_module(op.activation, exact))
        if exact:
            modules = [_exact_softplus() if type(m) is nn.Softplus else m for m in modules]
        twins.append(modules)
    model = _interpreter()(network, twins).to(torch.float64)
    model.train(network.mode == "train")  # batch normalisation: batch or running statistics
    if arrays is not None:
        with torch.no_grad():
            for name, (module, attribute) in holders.items():
                getattr(module, attribute).copy_(torch.as_tensor(arrays[name]))
    traced = torch.fx.symbolic_trace(model)
    return traced.train(network.mode == "train")


def _checked_params(network: Network, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``params`` as float64 arrays, every one of the network's and of its shape, or a
    ValueError saying which is missing, unknown or misshapen (no broadcasting); a TypeError
    when it is no mapping."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must map each parameter's name to an array, got {_shown(params)}")
    wanted = {**network.parameters, **network.buffers}  # running statistics in eval mode
    missing = [name for name in wanted if name not in params]
    unknown = [str(name) for name in params if name not in wanted]
    if missing or unknown:
        parts = [f"missing {', '.join(missing)}" if missing else "", f"unknown {', '.join(unknown)}" if unknown else ""]
        raise ValueError(
            f"params: {'; '.join(p for p in parts if p)}; the network's are {', '.join(wanted) or 'none'}"
        )
    arrays = {}
    for name, shape in wanted.items():
        value = np.asarray(params[name], dtype=np.float64)
        if value.shape != tuple(shape):
            raise ValueError(f"params: {name} has shape {value.shape}, the network's is {tuple(shape)}")
        arrays[name] = value
    return arrays


def _interpreter() -> type:
    """The class of the module ``to_torch`` traces: the network's layers in order, each on
    the outputs of the layers it reads, as its operation says (``Op.torch_apply``)."""
    torch = _torch()

    class NetworkModule(torch.nn.Module):
        """Layer l's modules are ``layer{l}_0``, ``layer{l}_1``, … (its activation last)."""

        def __init__(self, network: Network, twins: list[list[Any]]) -> None:
            super().__init__()
            self.network = network
            self.names = []
            for number, modules in enumerate(twins, start=1):
                self.names.append([f"layer{number}_{k}" for k in range(len(modules))])
                for name, module in zip(self.names[-1], modules):
                    self.add_module(name, module)

        def forward(self, x: Any) -> Any:
            outputs = [x]
            for op, sources, names in zip(self.network.layers, self.network.sources, self.names):
                modules = [getattr(self, name) for name in names]
                outputs.append(op.torch_apply(torch, modules, [outputs[s] for s in sources]))
            return outputs[-1]

    return NetworkModule


def _activation_module(name: str, exact: bool) -> Any:
    nn = _torch().nn
    if exact and name == "softplus":
        return _exact_softplus()
    class_name, kwargs = ACTIVATIONS[name].torch
    return getattr(nn, class_name)(**kwargs)


def _exact_softplus() -> Any:
    torch = _torch()

    class ExactSoftplus(torch.nn.Module):
        """log(1 + e^z) for every z, without torch's threshold at 20."""

        def forward(self, z):
            return torch.logaddexp(z, torch.zeros_like(z))

    return ExactSoftplus()


def torch_loss(network: Network, loss: str | None = None) -> Callable[[Any, Any], Any]:
    """The network's loss (or ``loss`` for a generic one) per sample: (B, K), (B, K) → (B,),
    with outputs and targets shaped like the network's output inside — a map (B, C, H, W) is
    scored per pixel, as torch's CrossEntropyLoss scores it — and summed per sample."""
    name = loss if network.loss_function.generic else network.loss
    if name is None:
        raise ValueError("the network leaves its loss generic; pass loss=NAME")
    per_element, shape = _torch_losses()[name], tuple(network.shapes[-1])

    def per_sample(a: Any, y: Any) -> Any:
        values = per_element(a.reshape(len(a), *shape), y.reshape(len(y), *shape))
        return values.reshape(len(a), prod(values.shape[1:])).sum(dim=1)

    return per_sample


def _torch_losses() -> dict[str, Callable[[Any, Any], Any]]:
    """Each loss as torch computes it, on outputs and targets (B, *shape), before the sum over
    a sample's outputs (or pixels)."""
    functional = _torch().nn.functional
    return {
        "sse": lambda a, y: 0.5 * (a - y) ** 2,
        "mse": lambda a, y: (a - y) ** 2 / a[0].numel(),
        "cross_entropy": lambda a, y: functional.cross_entropy(a, y, reduction="none"),
        "binary_cross_entropy": lambda a, y: functional.binary_cross_entropy_with_logits(a, y, reduction="none"),
    }


def loss_and_grads(
    network: Network,
    x: np.ndarray,
    y: np.ndarray,
    params: Mapping[str, np.ndarray],
    g: str | None = None,
    loss: str | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """PyTorch autograd's per-sample losses (B,) and per-sample gradients (B, *shape) of "x"
    and every parameter, for a batch x (B, *input) and y (B, K), in float64 with the exact
    softplus; ``g`` and ``loss`` choose a generic activation or loss."""
    torch = _torch()
    concrete = network.with_choices(g=g) if g is not None else network
    model = to_torch(concrete, params, exact=True)
    value_of = torch_loss(network, loss)
    weights = dict(zip(network.parameters, model.parameters()))  # both in layer order, W before b
    losses = np.zeros(len(x))
    grads = {"x": np.zeros(np.shape(x))}
    grads.update({name: np.zeros((len(x), *shape)) for name, shape in network.parameters.items()})
    for k in range(len(x)):
        xt = torch.tensor(np.asarray(x[k], dtype=float)[None], requires_grad=True)
        model.zero_grad()
        value = value_of(model(xt).reshape(1, -1), torch.tensor(np.asarray(y[k], dtype=float)[None]))[0]
        value.backward()
        losses[k] = value.item()
        grads["x"][k] = xt.grad[0].numpy()
        for name, tensor in weights.items():
            grads[name][k] = tensor.grad.numpy()
    return losses, grads


# ---- torch → symbackprop ----------------------------------------------------------------------


@dataclass
class _Layer:
    """A layer read off the traced graph, before the network numbers it."""

    op: Op
    inputs: list[_Value]
    name: str
    module: Any = None  # the torch module holding its parameters, if any
    readers: int = 0  # how many layers read its output


@dataclass
class _Value:
    """What an fx node computes: a layer's output (or the input: layer None), ``flat`` once it
    was flattened (only a dense layer may read it then), or the batch size (``x.size(0)``)."""

    layer: _Layer | None
    flat: bool = False
    shape: Shape = ()
    batch: bool = False

    def __repr__(self) -> str:  # how messages show an argument
        return "x.size(0)" if self.batch else "a tensor"


def from_torch(
    module: Any, input_shape: Shape, loss: str = "cross_entropy", name: str = "network"
) -> tuple[Network, dict[str, np.ndarray]]:
    """The network ``module`` computes on inputs of ``input_shape`` ((C, H, W) or (n,)), with
    ``loss``, and its parameters as float64 arrays named W{l}/b{l}, in the network's order
    (layer by layer, W before b: ``module.parameters()``'s for an ``nn.Sequential``).

    ``module`` is traced with ``torch.fx.symbolic_trace``; its layers are numbered in the
    order the traced graph runs them. See the module's docstring for what is read."""
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise SpecError(f"from_torch reads a torch.nn.Module, got {_shown(module)}")
    shape = _input_shape(input_shape)
    if loss not in LOSSES or LOSSES[loss].generic:
        choices = ", ".join(n for n, entry in LOSSES.items() if not entry.generic)
        raise SpecError(f"loss: {loss!r} has no torch counterpart; choose one of {choices}")
    _refuse_hooks(torch, module)
    leaves = tuple(_Reader.leaf_types(torch))
    if isinstance(module, leaves):
        module = torch.nn.Sequential(module)  # fx traces into the root: a lone layer is read as one
    try:
        traced = _traced(torch, module, leaves)
    except Exception as error:  # noqa: BLE001 - fx raises many kinds: say which and why, on one line
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise SpecError(
            f"{type(module).__name__}: torch.fx.symbolic_trace cannot trace it ({type(error).__name__}"
            f"{': ' + reason if reason else ''}); from_torch reads modules that fx can trace"
        ) from None
    reader = _Reader(torch, traced, shape)
    out = reader.read()
    layers = _folded(reader.layers, out)
    x = Input(shape)
    tensors: dict[int, Any] = {}
    for layer in layers:
        inputs = tuple(x if v.layer is None else tensors[id(v.layer)] for v in layer.inputs)
        try:
            tensors[id(layer)] = layer.op(*inputs, name=_layer_name(layer.name))
        except SpecError as error:
            raise SpecError(f"fx node {layer.name}: {error!s}") from None
    if out.layer is None:
        raise SpecError(f"{type(module).__name__}: computes nothing from its input (no layer symbackprop reads)")
    modes = {sub.training for sub in module.modules()}
    if len(modes) > 1:
        raise SpecError(f"{type(module).__name__}: some of its modules are in train mode and some in eval "
                        "mode; put them all in one, module.train() or module.eval()")
    mode = "train" if module.training else "eval"
    net = Network(inputs=x, outputs=tensors[id(out.layer)], loss=loss, name=name, mode=mode)
    params: dict[str, np.ndarray] = {}
    # the network numbers the layers the output is computed from, in the order they were made
    used = _computed_from(out.layer)
    for number, layer in enumerate((layer for layer in layers if id(layer) in used), start=1):
        for parameter in layer.op.parameters:
            param_name = net.layer_parameters(number).get(parameter.prefix)
            if param_name is not None:
                value = getattr(layer.module, parameter.torch).detach().cpu().numpy().astype(np.float64)
                if value.shape != net.parameters[param_name]:  # the module's sizes are checked before: a guard
                    raise SpecError(
                        f"fx node {layer.name}: its {parameter.torch} has shape {value.shape}, but the layer "
                        f"read needs {net.parameters[param_name]}"
                    )
                params[param_name] = value
        for buffer in layer.op.buffers:  # running statistics, read in eval mode
            buffer_name = net.layer_buffers(number).get(buffer.prefix)
            if buffer_name is not None:
                params[buffer_name] = getattr(layer.module, buffer.torch).detach().cpu().numpy().astype(np.float64)
    params = {name: params[name] for name in [*net.parameters, *net.buffers]}
    _refuse_unless_the_same(torch, module, net, params, reader.dtype)
    return net, params


def _refuse_unless_the_same(torch: Any, module: Any, net: Network, params: dict[str, np.ndarray], dtype: Any) -> None:
    """The last guard: the network read, run by torch (``to_torch``), must compute what the
    module computes on a seeded random batch of two, to the module's precision — else a
    SpecError (something fx does not record, such as a tensor changed in place through an
    alias, was read wrong)."""
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn((2, *net.input_shape), generator=generator, dtype=torch.float64)
    with torch.no_grad():  # on a copy: in train mode batch norm would move the module's statistics
        expected = copy.deepcopy(module)(sample.to(dtype)).to(torch.float64).reshape(2, -1)
        computed = to_torch(net, params)(sample.clone()).reshape(2, -1)
    if expected.shape != computed.shape:
        raise SpecError(f"{type(module).__name__}: returns {tuple(expected.shape[1:])} values per sample, "
                        f"the network read {tuple(computed.shape[1:])}")
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    error = float((expected - computed).abs().max()) if expected.numel() else 0.0
    tolerance = 1000 * torch.finfo(dtype).eps * max(scale, 1.0)
    if not error <= tolerance:  # a nan fails too
        raise SpecError(
            f"{type(module).__name__}: the network read computes other values than the module ({error:.2g} "
            f"apart on a random input, more than its precision allows); an operation fx does not record "
            "(a tensor changed in place through an alias?) was read wrong"
        )


def _computed_from(last: _Layer) -> set[int]:
    """The ids of the layers ``last`` is computed from, itself included (a layer whose output
    nothing uses, which fx keeps, is no layer of the network)."""
    seen, stack = set(), [last]
    while stack:
        layer = stack.pop()
        if id(layer) not in seen:
            seen.add(id(layer))
            stack.extend(v.layer for v in layer.inputs if v.layer is not None)
    return seen


def _layer_name(node: str) -> str | None:
    """The fx node's name as the layer's (``stem``, ``add_1``), or none where a network's
    layer cannot be called that (past 64 characters, or ``input``): a name is only a label."""
    return node if LAYER_NAME.fullmatch(node) and node != INPUT else None


def _refuse_hooks(torch: Any, module: Any) -> None:
    """A SpecError naming the first module with a forward hook or pre-hook (fx ignores them, and
    a hook can change what a module computes), or naming the global ones."""
    kinds = ("_forward_hooks", "_forward_pre_hooks")
    for path, sub in module.named_modules():
        hooks = [kind for kind in kinds if getattr(sub, kind, None)]
        if hooks:
            where = f"module {path or '(the root)'} ({type(sub).__name__})"
            raise SpecError(f"{where}: has {' and '.join(_hook_text(h) for h in hooks)}; "
                            "a hook can change what it computes, so it is not read")
    registry = torch.nn.modules.module
    hooks = [kind for kind in kinds if getattr(registry, f"_global{kind}", None)]
    if hooks:
        raise SpecError(f"torch.nn has global {' and '.join(_hook_text(h) for h in hooks)} "
                        "(register_module_forward_hook); a hook can change what modules compute, so none is read")


def _hook_text(kind: str) -> str:
    return kind.strip("_").replace("_", " ")  # "_forward_pre_hooks" -> "forward pre hooks"


def _traced(torch: Any, module: Any, leaves: tuple[type, ...]) -> Any:
    """``module`` traced by fx, each module of a type read here (or of a subclass, which the
    reader then judges) kept whole as one call_module node: fx's own rule keeps only the
    modules of the torch.nn namespace, and would trace into a subclass's forward."""

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, sub: Any, qualified_name: str) -> bool:
            return isinstance(sub, leaves) or super().is_leaf_module(sub, qualified_name)

    # F.interpolate branches on its input's size: kept as one call, as nn.Upsample is
    tracer = Tracer(autowrap_functions=(torch.nn.functional.interpolate,))
    graph = tracer.trace(module)
    return torch.fx.GraphModule(tracer.root, graph, type(module).__name__)


def _folded(layers: list[_Layer], out: _Value) -> list[_Layer]:
    """The layers with each activation that alone reads a fresh Conv2d's or Linear's output
    folded into it (z, then a = g(z), as the article writes a layer)."""
    kept = []
    for layer in layers:
        source = layer.inputs[0].layer if len(layer.inputs) == 1 else None
        function = layer.op.folds_as()
        if (
            function is not None
            and source is not None
            and source.op.has_activation
            and source.op.activation == "identity"
            and source.readers == 1
            and out.layer is not source
        ):
            source.op = source.op.with_activation(function)
            source.readers = layer.readers
            for other in layers:  # the layers reading the activation now read the layer itself
                other.inputs = [_Value(source, v.flat, v.shape) if v.layer is layer else v for v in other.inputs]
            if out.layer is layer:
                out.layer = source
            continue
        kept.append(layer)
    return kept


class _Reader:
    """Walks a traced graph, node by node, into ``_Layer`` records."""

    def __init__(self, torch: Any, traced: Any, shape: Shape) -> None:
        self.torch, self.traced, self.shape = torch, traced, shape
        self.layers: list[_Layer] = []
        self.values: dict[Any, _Value] = {}
        self.called: dict[str, str] = {}  # module target -> the fx node that first called it
        self.owners: dict[int, str] = {}  # id of a parameter read -> "target.weight" that held it
        self.real: dict[Any, Any] = {}  # fx node -> what torch computes there, on two zero samples
        floats = [p.dtype for p in traced.parameters() if p.is_floating_point()]
        self.dtype = floats[0] if floats else torch.get_default_dtype()
        nn, functional = torch.nn, torch.nn.functional
        self.modules: dict[type, Callable[[Any], Op]] = {
            getattr(nn, op.torch_name): op.from_torch
            for op in OPS.values()
            if hasattr(nn, op.torch_name)
        }
        for entry in ACTIVATIONS.values():
            if entry.torch is not None and entry.name != "identity":
                self.modules[getattr(nn, entry.torch[0])] = Activation.from_torch
        activation_functions = {
            torch.relu: "relu", functional.relu: "relu", torch.sigmoid: "sigmoid",
            functional.sigmoid: "sigmoid", torch.tanh: "tanh", functional.tanh: "tanh",
            functional.softplus: "softplus", functional.leaky_relu: "leaky_relu",
        }
        self.functions: dict[Any, Callable[[Any, list, dict], _Value]] = {
            operator.add: self._add, torch.add: self._add, torch.cat: self._cat,
            torch.flatten: self._flatten, torch.mean: self._mean, operator.getitem: self._getitem,
            getattr: self._getattr, functional.adaptive_avg_pool2d: self._adaptive_pool,
            functional.interpolate: self._interpolate,
        }
        self.functions.update({f: self._activation_function(name) for f, name in activation_functions.items()})
        self.methods: dict[str, Callable[[Any, list, dict], _Value]] = {
            "add": self._add, "flatten": self._flatten, "view": self._view, "reshape": self._view,
            "mean": self._mean, "size": self._size, "relu": self._activation_function("relu"),
            "sigmoid": self._activation_function("sigmoid"), "tanh": self._activation_function("tanh"),
        }

    @staticmethod
    def leaf_types(torch: Any) -> list[type]:
        """The torch.nn modules read as one layer each (or, Flatten and Identity, as none)."""
        nn = torch.nn
        kinds = [getattr(nn, op.torch_name) for op in OPS.values() if hasattr(nn, op.torch_name)]
        kinds += [getattr(nn, entry.torch[0]) for entry in ACTIVATIONS.values() if entry.torch is not None]
        return kinds + [nn.Flatten]

    def read(self) -> _Value:
        placeholders = 0
        for node in self.traced.graph.nodes:
            if node.op == "placeholder":
                placeholders += 1
                if placeholders > 1:
                    raise SpecError(f"fx node {node.name} (placeholder): a second input; a network has one")
                self.values[node] = _Value(None, len(self.shape) == 1, self.shape)
            elif node.op == "output":
                result = self._arg(node, node.args[0])
                if not isinstance(result, _Value) or result.batch:
                    raise SpecError(f"fx node {node.name} (output): returns {_shown(node.args[0])}; one tensor only")
                return result
            elif node.op == "call_module":
                self.values[node] = self._call_module(node)
            elif node.op == "call_function":
                self.values[node] = self._call(node, self.functions.get(node.target), _target(node.target))
            elif node.op == "call_method":
                self.values[node] = self._call(node, self.methods.get(node.target), node.target)
            else:
                raise SpecError(f"fx node {node.name} ({node.op} {node.target}): not supported; "
                                "symbackprop reads modules, functions and methods on tensors")
            self.values[node] = self._as_torch_computes(node, self.values[node])
        raise SpecError("the traced graph has no output")

    def _as_torch_computes(self, node: Any, value: _Value) -> _Value:
        """``value`` once torch has run ``node`` on a batch of two zeros (nothing it was not read
        as runs: no module with state): a SpecError where torch fails or its shape is not the
        one read. A layer whose module leaves its output unflattened (AdaptiveAvgPool2d's
        (C, 1, 1)) keeps torch's shape, so that only a flatten makes it a vector again."""
        torch = self.torch
        real = self.real

        def run() -> Any:
            if node.op == "placeholder":  # two samples: batch norm in train mode wants more than one
                return torch.zeros((2, *self.shape), dtype=self.dtype)
            args = torch.fx.node.map_arg(node.args, lambda n: real[n])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: real[n])
            if node.op == "call_module":  # a copy: batch norm in train mode moves its statistics
                return copy.deepcopy(self.traced.get_submodule(node.target))(*args, **kwargs)
            if node.op == "call_method":
                return getattr(args[0], node.target)(*args[1:], **kwargs)
            return node.target(*args, **kwargs)

        where = self._where(node, self._kind(node))
        try:
            with torch.no_grad():
                real[node] = run()
        except Exception as error:  # noqa: BLE001 - whatever torch raises, said on one line
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise SpecError(f"{where}: torch cannot run it on the input read ({reason})") from None
        if not isinstance(real[node], torch.Tensor) or value.batch or value.shape == ("shape",):
            return value
        computed = tuple(real[node].shape[1:])
        read = (prod(value.shape),) if value.flat else tuple(value.shape)
        if computed == read:
            return value
        if value.flat and prod(computed) == prod(value.shape) and len(computed) == 3:
            return _Value(value.layer, False, computed)
        raise SpecError(f"{where}: torch computes shape {computed} here, but it was read as {read}")

    # ---- nodes ----------------------------------------------------------------------------

    def _where(self, node: Any, kind: str) -> str:
        return f"fx node {node.name} ({node.op} {kind})"

    def _kind(self, node: Any) -> str:
        """What an fx node calls, as messages name it: "conv1: Conv2d", "add", "flatten"."""
        if node.op == "call_module":
            return f"{node.target}: {_type_name(self.torch, type(self.traced.get_submodule(node.target)))}"
        return _target(node.target)

    def _call_module(self, node: Any) -> _Value:
        sub = self.traced.get_submodule(node.target)
        kind = type(sub)
        where = self._where(node, self._kind(node))
        nn = self.torch.nn
        args = [self._arg(node, a) for a in node.args]
        if node.kwargs:
            raise SpecError(f"{where}: called with keyword arguments {sorted(node.kwargs)}; pass the tensor alone")
        if kind is nn.Identity:
            return self._one(args, where)
        if kind is nn.Flatten:
            if (sub.start_dim, sub.end_dim) != (1, -1):
                raise SpecError(f"{where}: only Flatten(start_dim=1, end_dim=-1) is supported")
            return self._flat(self._one(args, where))
        base = kind if kind in self.modules else self._base(kind, where)
        if base is None:
            raise SpecError(
                f"{where}: not supported; symbackprop reads Conv2d, ConvTranspose2d, Linear, MaxPool2d, "
                "AvgPool2d, AdaptiveAvgPool2d(1), BatchNorm1d, BatchNorm2d, Upsample, Flatten, Identity, "
                "the activations Sigmoid, Tanh, ReLU, Softplus, LeakyReLU(0.01), and +, "
                "torch.cat(dim=1), mean((2, 3)), F.interpolate"
            )
        try:
            op = self.modules[base](sub)
        except SpecError as error:
            raise SpecError(f"{where}: {str(error).split(': ', 1)[-1]}") from None
        if any(True for _ in sub.parameters()):
            if node.target in self.called:
                raise SpecError(
                    f"{where}: called a second time (first by fx node {self.called[node.target]}); its "
                    "weights would be shared by two layers, which symbackprop does not support"
                )
            self.called[node.target] = node.name
            for name, parameter in sub.named_parameters():
                if id(parameter) in self.owners:
                    raise SpecError(
                        f"{where}: its {name} is also {self.owners[id(parameter)]} (tied weights); "
                        "weights shared by two layers are not supported"
                    )
                self.owners[id(parameter)] = f"{node.target}.{name}"
        value = self._one(args, where)
        self._check_twin(op, sub, base, value, where)
        if getattr(sub, "inplace", False):
            self._refuse_overwritten(node, where)
        return self._layer(op, [value], node.name, where, sub)

    def _refuse_overwritten(self, node: Any, where: str) -> None:
        """A node working in place (``inplace=True``) overwrites the tensor it reads: a
        SpecError when another node reads that tensor after it (it would get the new values,
        where a layer reads the old ones). Before it, or nowhere else, it changes nothing."""
        (target, *_) = node.args
        order = {n: k for k, n in enumerate(self.traced.graph.nodes)}
        later = [user for user in getattr(target, "users", ()) if user is not node and order[user] > order[node]]
        if later:
            raise SpecError(
                f"{where}: works in place (inplace=True) on {target}, which fx node {later[0].name} reads "
                "afterwards; symbackprop would read the value from before; use inplace=False"
            )

    def _base(self, kind: type, where: str) -> type | None:
        """The module type read here that ``kind`` subclasses, when it keeps that type's
        ``forward``; a SpecError when it has its own (a fake-quantised Linear computes
        something else); None when it subclasses none."""
        for base in self.modules:
            if issubclass(kind, base):
                if kind.forward is not base.forward:
                    raise SpecError(
                        f"{where}: a subclass of torch.nn.{base.__name__} with its own forward(); "
                        "symbackprop reads the torch.nn modules themselves"
                    )
                return base
        return None

    def _call(self, node: Any, handler: Callable | None, name: str) -> _Value:
        where = self._where(node, name)
        if handler is None:
            raise SpecError(
                f"{where}: not supported; symbackprop reads +, torch.add, torch.cat(dim=1), "
                "flatten, view(B, -1), mean((2, 3)) and the activation functions"
            )
        args = [self._arg(node, a) for a in node.args]
        kwargs = {key: self._arg(node, value) for key, value in node.kwargs.items()}
        return handler(node, args, kwargs)

    def _arg(self, node: Any, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return type(value)(self._arg(node, v) for v in value)
        if type(value).__name__ == "Node":
            return self.values[value]
        return value

    # ---- what nodes compute ---------------------------------------------------------------

    def _one(self, args: list, where: str) -> _Value:
        if len(args) != 1 or not isinstance(args[0], _Value) or args[0].batch:
            raise SpecError(f"{where}: expected one tensor argument, got {_shown(args)}")
        return args[0]

    def _layer(self, op: Op, inputs: list[_Value], name: str, where: str, module: Any = None) -> _Value:
        for value in inputs:
            if value.flat and op.image_input:
                raise SpecError(f"{where}: its input is flat, shape {(prod(value.shape),)}; it needs an image")
        try:
            shape = op.output_shape(op.given([v.shape if not v.flat else (prod(v.shape),) for v in inputs]))
        except SpecError as error:
            raise SpecError(f"{where}: {error}") from None
        layer = _Layer(op, inputs, name, module)
        for value in inputs:
            if value.layer is not None:
                value.layer.readers += 1
        self.layers.append(layer)
        return _Value(layer, len(shape) == 1, shape)

    def _flat(self, value: _Value) -> _Value:
        return _Value(value.layer, True, value.shape)

    def _check_twin(self, op: Op, module: Any, base: type, value: _Value, where: str) -> None:
        """The module's own sizes (in_channels, in_features, …) agree with the input it gets
        (``base``: the torch.nn type it is read as)."""
        if value.flat and op.image_input:
            raise SpecError(f"{where}: its input is flat, shape {(prod(value.shape),)}; it needs an image")
        shape = (prod(value.shape),) if value.flat else value.shape
        try:
            twins = op.torch_twin(shape)
        except SpecError as error:
            raise SpecError(f"{where}: {error}") from None
        if len(twins) > 1 and twins[0][0] == "Flatten":  # its twin flattens; the module needs it done
            raise SpecError(f"{where}: its input has shape {value.shape}; put an nn.Flatten() before it")
        held = [(name, kwargs) for name, kwargs in twins if name == base.__name__]
        if not held:
            return
        ((_, kwargs),) = held
        for key, expected in kwargs.items():
            if key == "bias" or not hasattr(module, key):
                continue
            actual = getattr(module, key)
            if actual is None or isinstance(actual, str):  # torch's default, or padding="valid":
                continue  # read by the op itself
            if _normal(actual) != _normal(expected):
                raise SpecError(f"{where}: {key} is {actual}, but its input {value.shape} needs {expected}")

    def _add(self, node: Any, args: list, kwargs: dict) -> _Value:
        where = self._where(node, _target(node.target))
        if kwargs.get("alpha", 1) != 1:
            raise SpecError(f"{where}: alpha={kwargs['alpha']}; only a plain sum is supported")
        tensors = [a for a in args if isinstance(a, _Value) and not a.batch]
        if len(tensors) != len(args) or len(tensors) < 2:
            added = " + ".join(map(str, node.args))
            raise SpecError(f"{where}: {added}; symbackprop adds tensors to tensors, not numbers")
        flat = {v.flat for v in tensors}
        if len(flat) > 1:
            raise SpecError(f"{where}: adds a flattened tensor to an image")
        return self._layer(Add(), tensors, node.name, where)

    def _cat(self, node: Any, args: list, kwargs: dict) -> _Value:
        where = self._where(node, "cat")
        tensors = args[0] if args else kwargs.get("tensors")
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, _Value) for t in tensors):
            raise SpecError(f"{where}: expected a list of tensors")
        rank = 1 + (1 if tensors[0].flat else len(tensors[0].shape))
        if dim not in (1, 1 - rank):
            raise SpecError(f"{where}: dim={dim}; only dim=1 (channels, or features) is supported")
        if len(tensors) == 1:
            return tensors[0]
        return self._layer(Concat(), list(tensors), node.name, where)

    def _flatten(self, node: Any, args: list, kwargs: dict) -> _Value:
        where = self._where(node, "flatten")
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        if (start, end) != (1, -1):
            raise SpecError(f"{where}: start_dim={start}, end_dim={end}; only flatten(x, 1) is supported")
        return self._flat(self._one(args[:1], where))

    def _view(self, node: Any, args: list, kwargs: dict) -> _Value:
        where = self._where(node, node.target)
        sizes = args[1:] if len(args) > 2 else (list(args[1]) if len(args) == 2 else [])
        if len(sizes) != 2 or not isinstance(sizes[0], _Value) or not sizes[0].batch or sizes[1] != -1:
            raise SpecError(f"{where}: {node.target}{tuple(args[1:])}; only {node.target}(x.size(0), -1) is supported")
        return self._flat(self._one(args[:1], where))

    def _size(self, node: Any, args: list, kwargs: dict) -> _Value:
        if len(args) == 2 and args[1] == 0:
            return _Value(None, batch=True)
        raise SpecError(f"{self._where(node, 'size')}: only x.size(0), the batch size, is supported")

    def _getattr(self, node: Any, args: list, kwargs: dict) -> _Value:
        if len(args) == 2 and args[1] == "shape" and isinstance(args[0], _Value):
            return _Value(None, shape=("shape",))
        raise SpecError(f"{self._where(node, 'getattr')}: only x.shape[0], the batch size, is supported")

    def _getitem(self, node: Any, args: list, kwargs: dict) -> _Value:
        if len(args) == 2 and isinstance(args[0], _Value) and args[0].shape == ("shape",) and args[1] == 0:
            return _Value(None, batch=True)
        raise SpecError(f"{self._where(node, 'getitem')}: indexing tensors is not supported")

    def _mean(self, node: Any, args: list, kwargs: dict) -> _Value:
        where = self._where(node, "mean")
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        if dims is None or sorted(d % 4 for d in (dims if isinstance(dims, (list, tuple)) else (dims,))) != [2, 3] or keep:
            raise SpecError(f"{where}: only mean((2, 3)) over height and width, global average pooling, is supported")
        value = self._one(args[:1], where)
        return self._layer(GlobalAvgPool2D(), [value], node.name, where)

    def _adaptive_pool(self, node: Any, args: list, kwargs: dict) -> _Value:
        where = self._where(node, "adaptive_avg_pool2d")
        size = args[1] if len(args) > 1 else kwargs.get("output_size")
        if size not in (1, (1, 1), [1, 1]):
            raise SpecError(f"{where}: output_size={size}; only 1, global average pooling, is supported")
        value = self._one(args[:1], where)
        return self._layer(GlobalAvgPool2D(), [value], node.name, where)

    def _interpolate(self, node: Any, args: list, kwargs: dict) -> _Value:
        """F.interpolate(x, scale_factor=s, mode=...): an Upsample, read as nn.Upsample is."""
        where = self._where(node, "interpolate")
        names = ("input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias")
        given = dict(zip(names, args)) | kwargs
        if given.get("antialias"):
            raise SpecError(f"{where}: antialias=True is not supported")
        settings = SimpleNamespace(
            size=given.get("size"), scale_factor=given.get("scale_factor"),
            mode=given.get("mode", "nearest"), align_corners=given.get("align_corners"),
            recompute_scale_factor=given.get("recompute_scale_factor"),
        )
        try:
            op = Upsample.from_torch(settings)
        except SpecError as error:
            raise SpecError(f"{where}: {str(error).split(': ', 1)[-1]}") from None
        return self._layer(op, [self._one([given.get("input")], where)], node.name, where)

    def _activation_function(self, name: str) -> Callable[[Any, list, dict], _Value]:
        entry = ACTIVATIONS[name]

        def read(node: Any, args: list, kwargs: dict) -> _Value:
            where = self._where(node, _target(node.target))
            defaults = dict(entry.torch[1])
            extra = args[1 + len(defaults):]  # F.relu(x, True): in place
            values = dict(zip(list(defaults), args[1:])) | {k: v for k, v in kwargs.items() if k != "inplace"}
            for key, value in values.items():
                if key not in defaults or defaults[key] != value:
                    raise SpecError(f"{where}: {key}={value}; symbackprop's {name} takes only {defaults or 'no settings'}")
            if len(extra) > 1:
                raise SpecError(f"{where}: called with {len(args)} arguments; symbackprop's {name} takes {defaults or 'no settings'}")
            if kwargs.get("inplace", extra[0] if extra else False):
                self._refuse_overwritten(node, where)
            return self._layer(Activation(name), [self._one(args[:1], where)], node.name, where)

        return read


def _type_name(torch: Any, kind: type) -> str:
    """A module's class as messages name it: "Linear" for torch.nn's own, its full path for
    any other (``torch.ao.nn.qat.modules.linear.Linear``), so that two classes of one name
    are told apart."""
    if getattr(torch.nn, kind.__name__, None) is kind:
        return kind.__name__
    return f"{kind.__module__}.{kind.__qualname__}"


def _shown(value: Any) -> str:
    """``errors.shown`` on one line: a numpy array's repr spans several."""
    return " ".join(shown(value).split())


def _target(target: Any) -> str:
    return getattr(target, "__name__", str(target))


def _normal(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return tuple(value) if len(set(value)) > 1 else value[0]
    return value
