"""PyTorch and symbackprop, both ways — the only module that imports torch, and only when asked.

* ``to_torch(network, params)``: an ``nn.Sequential`` (float64) computing the network,
  holding those weights, built from each operation's ``torch_twin`` and each activation's
  twin; ``torch_loss(network)`` its loss per sample.
* ``from_torch(module, input_shape, loss=...)``: the network an ``nn.Sequential`` of
  ``Conv2d``, ``Linear``, ``MaxPool2d``, ``AvgPool2d``, ``Flatten`` and activation modules
  computes, and its parameters in the order of ``module.parameters()``. Anything else is
  a ``SpecError`` naming the module and why.

Softplus: torch's returns z itself once z > 20 (its ``threshold``); symbackprop's is
the exact log(1 + e^z). ``to_torch(..., exact=True)`` — what ``check`` and the tests use —
puts an exact softplus (``logaddexp(z, 0)``) in its place, so points with z > 20 agree.

torch is never a runtime requirement: it is imported inside the functions here.

Imports ``errors``, ``activations``, ``losses``, ``network`` and ``ops``; torch lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from math import prod
from typing import Any

import numpy as np

from .activations import ACTIVATIONS
from .errors import SpecError
from .losses import LOSSES
from .network import Network, _input_shape
from .ops import OPS, Op, Shape


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
    """The network as an ``nn.Sequential`` in float64, holding ``params`` (by name, PyTorch
    layouts) or torch's own initial weights when None. ``exact`` swaps torch's thresholded
    Softplus for the exact function.

    A network with the generic g must choose it first (``network.with_choices(g=...)``).
    """
    torch = _torch()
    nn = torch.nn
    if network.generic_activation:
        raise ValueError("the network leaves its activation g generic; choose it with with_choices(g=...)")
    modules, holders = [], {}
    for number, (op, shape) in enumerate(zip(network.layers, network.shapes), start=1):
        twins = [getattr(nn, name)(**kwargs) for name, kwargs in op.torch_twin(shape)]
        holders.update({f"{kind}{number}": (twins[-1], kind) for kind in op.parameter_shapes(shape)})
        modules += twins
        if op.has_activation and op.activation != "identity":
            modules.append(_activation_module(op.activation, exact))
    model = nn.Sequential(*modules).to(torch.float64)
    if params is not None:
        with torch.no_grad():
            for name, (module, kind) in holders.items():
                target = module.weight if kind == "W" else module.bias
                target.copy_(torch.as_tensor(np.asarray(params[name], dtype=np.float64)))
    return model


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
            return torch.logaddexp(z, torch.zeros((), dtype=z.dtype))

    return ExactSoftplus()


def torch_loss(network: Network, loss: str | None = None) -> Callable[[Any, Any], Any]:
    """The network's loss (or ``loss`` for a generic one) per sample: (B, K), (B, K) → (B,)."""
    name = loss if network.loss_function.generic else network.loss
    if name is None:
        raise ValueError("the network leaves its loss generic; pass loss=NAME")
    return _torch_losses()[name]


def _torch_losses() -> dict[str, Callable[[Any, Any], Any]]:
    functional = _torch().nn.functional
    return {
        "sse": lambda a, y: 0.5 * ((a - y) ** 2).sum(dim=1),
        "mse": lambda a, y: ((a - y) ** 2).mean(dim=1),
        "cross_entropy": lambda a, y: functional.cross_entropy(a, y, reduction="none"),
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


def from_torch(
    module: Any, input_shape: Shape, loss: str = "cross_entropy", name: str = "network"
) -> tuple[Network, dict[str, np.ndarray]]:
    """The network ``module`` computes on inputs of ``input_shape`` ((C, H, W) or (n,)), with
    ``loss``, and its parameters as float64 arrays named W{l}/b{l}, in the order of
    ``module.parameters()``.

    Activation modules fold into the Conv2d or Linear before them; ``Flatten`` goes before a
    ``Linear`` on an image (symbackprop's dense layers flatten their input themselves)."""
    torch = _torch()
    if not isinstance(module, torch.nn.Sequential):
        raise SpecError(f"{type(module).__name__}: from_torch reads an nn.Sequential of layers")
    by_torch_name = {op.torch_name: op for op in OPS.values()}
    layers: list[Op] = []
    params: dict[str, np.ndarray] = {}
    shape = input_shape = _input_shape(input_shape)
    flat = len(shape) == 1
    activated = True  # nothing to fold an activation into yet
    previous = None  # the torch class of the last layer read
    for position, child in enumerate(module.children()):
        kind = type(child).__name__
        where = f"module {position} ({kind})"
        if kind == "Flatten":
            if (child.start_dim, child.end_dim) != (1, -1):
                raise SpecError(f"{where}: only Flatten(start_dim=1, end_dim=-1) is supported")
            flat = True
            continue
        if kind in by_torch_name:
            op = _op_from_torch(by_torch_name[kind], child, where)
            if kind == "Linear" and not flat:
                raise SpecError(f"{where}: its input has shape {shape}; put an nn.Flatten() before it")
            if kind != "Linear" and flat:
                raise SpecError(f"{where}: its input is flat, shape {(prod(shape),)}; it needs an image")
            _check_twin(op, child, shape, where)
            try:
                next_shape = op.output_shape(shape)
            except SpecError as error:
                raise SpecError(f"{where}: {error}") from None
            layers.append(op)
            number = len(layers)
            for param_kind in op.parameter_shapes(shape):
                tensor = child.weight if param_kind == "W" else child.bias
                params[f"{param_kind}{number}"] = tensor.detach().cpu().numpy().astype(np.float64)
            shape, activated, previous = next_shape, not op.has_activation, kind
            continue
        activation = _activation_name(child, where)
        if activation is not None:
            if activated:
                if previous is None:
                    problem = "an activation with no layer before it"
                elif layers[-1].has_activation:
                    problem = "a second activation in a row"
                else:
                    problem = f"follows a {previous}, which takes no activation"
                raise SpecError(f"{where}: {problem}; an activation must follow a Conv2d or Linear")
            layers[-1] = layers[-1].with_activation(activation)
            activated = True
            continue
        raise SpecError(
            f"{where}: not supported; symbackprop reads Conv2d, Linear, MaxPool2d, AvgPool2d, "
            "Flatten and the activations Sigmoid, Tanh, ReLU, Softplus, LeakyReLU(0.01), Identity"
        )
    if not layers:
        raise SpecError("the module has no Conv2d, Linear or pooling layer")
    if loss not in LOSSES or LOSSES[loss].generic:
        choices = ", ".join(n for n, entry in LOSSES.items() if not entry.generic)
        raise SpecError(f"loss: {loss!r} has no torch counterpart; choose one of {choices}")
    return Network(input_shape, layers, loss, name), params


def _op_from_torch(op: type[Op], child: Any, where: str) -> Op:
    try:
        return op.from_torch(child)
    except SpecError as error:
        message = str(error).split(": ", 1)[-1]
        raise SpecError(f"{where}: {message}") from None


def _check_twin(op: Op, child: Any, shape: Shape, where: str) -> None:
    """The module's own sizes (in_channels, in_features, …) agree with the input it gets."""
    _, kwargs = op.torch_twin(shape)[-1]  # the module that holds its parameters
    for key, expected in kwargs.items():
        if key == "bias" or not hasattr(child, key):
            continue
        actual = getattr(child, key)
        if isinstance(actual, str):  # padding="valid": read as numbers by the op itself
            continue
        if _normal(actual) != _normal(expected):
            raise SpecError(f"{where}: {key} is {actual}, but its input {shape} needs {expected}")


def _normal(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return tuple(value) if len(set(value)) > 1 else value[0]
    return value


def _activation_name(child: Any, where: str) -> str | None:
    """The registered activation a torch module is, or None when it is not an activation."""
    kind = type(child).__name__
    for name, entry in ACTIVATIONS.items():
        if entry.torch is None or entry.torch[0] != kind:
            continue
        for key, value in entry.torch[1].items():
            if getattr(child, key) != value:
                raise SpecError(f"{where}: {key}={getattr(child, key)}; only {key}={value} is supported")
        return name
    return None
