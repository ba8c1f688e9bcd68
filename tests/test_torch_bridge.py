"""The torch bridge: modules in (``from_torch``), modules out (``to_torch``), and what is refused.

A module read by ``from_torch`` and derived by symbackprop must give the gradients autograd
computes on the module itself; ``to_torch`` must give back a module computing the same.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from oracle import assert_close
from torch import nn
from torch.nn import functional as F

import symbackprop as sb
from symbackprop import verify
from symbackprop.verify import Comparison, check

torch.manual_seed(0)

# Each: (the module, its input shape, the loss). Built in float64, as the comparisons need.
MODULES = {
    "conv, relu, max pool, flatten, linear": (nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3),
    ), (1, 4, 4), "cross_entropy"),
    "pairs, dilation, overlapping padded average pool": (nn.Sequential(
        nn.Conv2d(2, 2, kernel_size=(2, 3), stride=(2, 1), padding=(1, 0), dilation=(1, 2)), nn.Tanh(),
        nn.AvgPool2d(2, stride=1, padding=1), nn.Flatten(), nn.Linear(24, 4), nn.Sigmoid(), nn.Linear(4, 2),
    ), (2, 5, 6), "mse"),
    "identity folding on a vector input": (nn.Sequential(
        nn.Linear(5, 3), nn.Identity(), nn.Linear(3, 2), nn.Softplus(),
    ), (5,), "sse"),
    "no biases, leaky relu, padded max pool": (nn.Sequential(
        nn.Conv2d(1, 2, 2, bias=False), nn.LeakyReLU(0.01), nn.MaxPool2d(3, stride=2, padding=1),
        nn.Flatten(), nn.Linear(8, 2, bias=False),
    ), (1, 5, 5), "sse"),
}


def autograd_on(module: nn.Module, x: np.ndarray, y: np.ndarray, loss: str):
    """Per-sample losses and per-sample input gradients from autograd on ``module`` itself,
    its loss written here with torch's own functions; the parameters' summed gradients are
    left in their ``.grad``."""
    module.zero_grad()
    xt = torch.tensor(x, requires_grad=True)
    out, yt = module(xt), torch.tensor(y)
    losses = {
        "sse": lambda: 0.5 * ((out - yt) ** 2).sum(dim=1),
        "mse": lambda: nn.functional.mse_loss(out, yt, reduction="none").mean(dim=1),
        "cross_entropy": lambda: nn.functional.cross_entropy(out, yt, reduction="none"),
    }[loss]()
    losses.sum().backward()
    return losses.detach().numpy(), xt.grad.numpy()


def holders(module: nn.Module, params: dict[str, np.ndarray]) -> dict[str, nn.Parameter]:
    """The module's own tensor each parameter that ``from_torch`` named was read from, found
    by value (random weights: each matches one), so that a parameter read from the wrong
    tensor, or under the wrong name, fails the comparisons."""
    found = {}
    for name, value in params.items():
        (found[name],) = [
            p for p in module.parameters() if p.shape == value.shape and np.array_equal(p.detach().numpy(), value)
        ]
    assert len({id(p) for p in found.values()}) == len(found) == len(list(module.parameters()))
    return found


def assert_autograds_gradients(module: nn.Module, shape, loss: str, rng) -> sb.Network:
    """``from_torch``, then derived: the loss and every gradient, x's and each parameter's,
    are what autograd computes on the module itself, at a batch of three, in float64."""
    module = module.double()
    net, params = sb.from_torch(module, shape, loss=loss)
    x = rng.normal(size=(3, *shape))
    k = net.output_size
    y = rng.dirichlet(np.ones(k), size=3) if loss == "cross_entropy" else rng.normal(size=(3, k))
    losses, x_grad = autograd_on(module, x, y, loss)
    out = net.derive().numeric()(x, y, params)
    assert_close(out.loss, losses)
    assert_close(out.grads["x"], x_grad)
    for name, tensor in holders(module, params).items():  # the sum over the batch is autograd's
        assert_close(out.grads[name].sum(axis=0), tensor.grad.numpy())
    return net


def assert_round_trip(module: nn.Module, shape, loss: str, rng) -> None:
    """``to_torch(from_torch(module))`` computes what the module computes, with as many weights."""
    module = module.double()
    net, params = sb.from_torch(module, shape, loss=loss)
    again = sb.to_torch(net, params)
    assert isinstance(again, torch.fx.GraphModule)
    x = torch.tensor(rng.normal(size=(4, *shape)))
    with torch.no_grad():
        assert_close(again(x).numpy(), module(x).numpy(), rtol=1e-14)
    assert sorted(p.numel() for p in again.parameters()) == sorted(p.numel() for p in module.parameters())


@pytest.mark.parametrize("case", list(MODULES))
def test_from_torch_then_derive_gives_autograds_gradients(case, rng):
    module, shape, loss = MODULES[case]
    assert_autograds_gradients(module, shape, loss, rng)


@pytest.mark.parametrize("case", list(MODULES))
def test_to_torch_of_from_torch_computes_what_the_module_computes(case, rng):
    module, shape, loss = MODULES[case]
    assert_round_trip(module, shape, loss, rng)
    again = sb.to_torch(*sb.from_torch(module, shape, loss=loss))
    assert [p.shape for p in again.parameters()] == [p.shape for p in module.parameters()]


def test_parameters_come_in_the_order_of_module_parameters():  # for a Sequential: layer order
    module = nn.Sequential(
        nn.Conv2d(1, 2, 3, bias=True), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(2, 3, 2, bias=False),
        nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 2),
    )
    net, params = sb.from_torch(module, (1, 8, 8))
    # layers numbered in order, the pool included: the pool's number 2 has no parameters
    assert list(params) == ["W1", "b1", "W3", "W4", "b4", "W5", "b5"]
    assert list(params) == list(net.parameters)
    for value, tensor in zip(params.values(), module.parameters()):
        assert value.dtype == np.float64
        assert np.array_equal(value, tensor.detach().numpy().astype(np.float64))
    assert [layer.describe() for layer in net.layers] == [
        "conv 2x3x3, stride 1x1, padding 0x0, bias, tanh",
        "avgpool 2x2, stride 2x2, padding 0x0",
        "conv 3x2x2, stride 1x1, padding 0x0, no bias, identity",
        "dense 4, bias, relu",
        "dense 2, bias, identity",
    ]
    assert net.loss == "cross_entropy"


def test_settings_are_read_as_pairs_or_ints():
    module = nn.Sequential(
        nn.Conv2d(1, 1, kernel_size=(3, 1), stride=(1, 2), padding=(1, 0), dilation=(2, 1)),
        nn.MaxPool2d(kernel_size=2, stride=1, padding=1),
        nn.Conv2d(1, 1, 2, padding="valid"),
    )
    net, _ = sb.from_torch(module, (1, 6, 6), loss="sse")
    conv, pool, valid = net.layers
    assert (conv.kernel_size, conv.stride, conv.padding, conv.dilation) == ((3, 1), (1, 2), (1, 0), (2, 1))
    assert (pool.kernel_size, pool.stride, pool.padding) == ((2, 2), (1, 1), (1, 1))
    assert valid.padding == (0, 0)


# ---- graphs: modules that fx traces ----------------------------------------------------------


class ResidualIdentity(nn.Module):
    """ResNet's basic block on h = relu(stem(x)): relu(h + conv2(relu(conv1(h)))), then the
    mean over height and width and a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.conv1 = nn.Conv2d(2, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        r = self.conv2(F.relu(self.conv1(h)))
        return self.fc((h + r).relu().mean((2, 3)))


class ResidualProjection(nn.Module):
    """A downsampling block: its shortcut a strided 1x1 convolution, added with torch.add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(1, 2, 1, stride=2)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        r = self.conv2(nn.functional.relu(self.conv1(x)))
        return self.fc(torch.flatten(torch.tanh(torch.add(r, self.shortcut(x))), 1))


class Branches(nn.Module):
    """Inception's join: a convolution and a max pool of x side by side (torch.cat), global
    average pooling by nn.AdaptiveAvgPool2d(1), flattened by view(B, -1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        h = self.gap(torch.cat([torch.sigmoid(self.conv(x)), self.pool(x)], dim=1))
        return self.fc(h.view(h.size(0), -1))


class Folding(nn.Module):
    """Activations that fold into the Linear before them, and those that are layers of their
    own: after an addition, or on a Linear's output that another layer reads too."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = F.relu(self.fc1(x))  # fc1's output is read by the relu alone: folds
        g = self.fc2(h)  # read by the addition and by the tanh: nothing folds into it
        s = torch.relu(g + h)  # after an addition: a layer of its own
        return self.fc3(torch.tanh(g) + s)


class ReusedReLU(nn.Module):
    """One nn.ReLU object applied twice, each time after an addition: two layers."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.relu(self.fc1(x) + x)
        h = self.relu(self.fc2(h) + h)
        return self.fc3(h)


def sequential_reusing(module: nn.Module) -> nn.Sequential:
    """A Sequential holding ``module`` twice: a ReLU between Linears, or a Linear (4, 4) around a Tanh."""
    if isinstance(module, nn.ReLU):
        return nn.Sequential(nn.Linear(4, 4), module, nn.Linear(4, 4), module, nn.Linear(4, 2))
    return nn.Sequential(module, nn.Tanh(), module)


class InPlace(nn.Module):
    """torchvision's style: nn.ReLU(inplace=True) and +=, each on a tensor nothing else reads after."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc2(self.relu(self.fc1(x)))
        h += x
        return self.fc3(self.relu(h))


class PlainLinear(nn.Linear):
    """A subclass that keeps nn.Linear's forward: it computes what a Linear computes."""


class Flattening(nn.Module):
    """conv, relu, then one way of flattening, then a Linear."""

    def __init__(self, flatten) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 2)
        self.flatten = flatten
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.flatten(F.relu(self.conv(x))))


class Pooling(nn.Module):
    """conv, then one way of global average pooling (to (B, 2)), then a Linear."""

    def __init__(self, pool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 2)
        self.pool = pool
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)))


class Activated(nn.Module):
    """A Linear, one activation written as a function or a method, then a Linear."""

    def __init__(self, activation) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 3), nn.Linear(3, 2)
        self.activation = activation

    def forward(self, x):
        return self.fc2(self.activation(self.fc1(x)))


# Each: (the module, its input shape, its loss, the layers read, what each reads).
GRAPH_MODULES = {
    "residual block, identity shortcut": (ResidualIdentity(), (1, 4, 4), "cross_entropy", [
        "conv 2x3x3, stride 1x1, padding 1x1, bias, relu",
        "conv 2x3x3, stride 1x1, padding 1x1, bias, relu",
        "conv 2x3x3, stride 1x1, padding 1x1, bias, identity",
        "add", "relu", "global avgpool", "dense 3, bias, identity",
    ], ((0,), (1,), (2,), (1, 3), (4,), (5,), (6,))),
    "residual block, projection shortcut": (ResidualProjection(), (1, 4, 4), "sse", [
        "conv 2x3x3, stride 2x2, padding 1x1, bias, relu",
        "conv 2x3x3, stride 1x1, padding 1x1, no bias, identity",
        "conv 2x1x1, stride 2x2, padding 0x0, bias, identity",
        "add", "tanh", "dense 2, bias, identity",
    ], ((0,), (1,), (0,), (2, 3), (4,), (5,))),
    "torch.cat of two branches": (Branches(), (2, 3, 3), "mse", [
        "conv 3x3x3, stride 1x1, padding 1x1, bias, sigmoid",
        "maxpool 3x3, stride 1x1, padding 1x1",
        "concat channels", "global avgpool", "dense 2, bias, identity",
    ], ((0,), (0,), (1, 2), (3,), (4,))),
    "activations folded or not": (Folding(), (4,), "sse", [
        "dense 4, bias, relu", "dense 4, bias, identity", "add", "relu", "tanh", "add",
        "dense 2, bias, identity",
    ], ((0,), (1,), (2, 1), (3,), (2,), (5, 4), (6,))),
    "one nn.ReLU applied twice": (ReusedReLU(), (4,), "cross_entropy", [
        "dense 4, bias, identity", "add", "relu", "dense 4, bias, identity", "add", "relu",
        "dense 2, bias, identity",
    ], ((0,), (1, 0), (2,), (3,), (4, 3), (5,), (6,))),
    "one nn.ReLU in a Sequential twice": (
        sequential_reusing(nn.ReLU()),
        (4,), "sse", ["dense 4, bias, relu", "dense 4, bias, relu", "dense 2, bias, identity"],
        ((0,), (1,), (2,)),
    ),
    "in place, on tensors read by nothing after": (InPlace(), (4,), "sse", [
        "dense 4, bias, relu", "dense 4, bias, identity", "add", "relu", "dense 2, bias, identity",
    ], ((0,), (1,), (2, 0), (3,), (4,))),
    "a subclass of nn.Linear keeping its forward": (
        nn.Sequential(PlainLinear(4, 3), nn.Tanh(), PlainLinear(3, 2)), (4,), "sse",
        ["dense 3, bias, tanh", "dense 2, bias, identity"], ((0,), (1,)),
    ),
}

class PooledView(nn.Module):
    """nn.AdaptiveAvgPool2d((1, 1)), whose output (B, C, 1, 1) view(B, -1) flattens."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x):
        h = self.pool(x)
        return h.view(h.size(0), -1)


FLATTENS = {
    "x.view(x.size(0), -1)": lambda h: h.view(h.size(0), -1),
    "x.reshape(x.shape[0], -1)": lambda h: h.reshape(h.shape[0], -1),
    "x.flatten(1)": lambda h: h.flatten(1),
    "torch.flatten(x, 1)": lambda h: torch.flatten(h, 1),
    "nn.Flatten()": nn.Flatten(),
}
POOLS = {
    "x.mean((2, 3))": lambda h: h.mean((2, 3)),
    "x.mean(dim=(-2, -1))": lambda h: h.mean(dim=(-2, -1)),
    "torch.mean(x, [2, 3])": lambda h: torch.mean(h, [2, 3]),
    "nn.AdaptiveAvgPool2d(1), flatten(1)": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    "nn.AdaptiveAvgPool2d((1, 1)), view(B, -1)": PooledView(),
    "F.adaptive_avg_pool2d(x, 1), torch.flatten": lambda h: torch.flatten(F.adaptive_avg_pool2d(h, 1), 1),
}
ACTIVATIONS = {  # how it is written, the activation read
    "F.relu": (F.relu, "relu"), "torch.relu": (torch.relu, "relu"), "x.relu()": (lambda h: h.relu(), "relu"),
    "torch.sigmoid": (torch.sigmoid, "sigmoid"), "x.sigmoid()": (lambda h: h.sigmoid(), "sigmoid"),
    "F.tanh": (F.tanh, "tanh"), "x.tanh()": (lambda h: h.tanh(), "tanh"),
    "F.softplus": (F.softplus, "softplus"), "F.leaky_relu": (F.leaky_relu, "leaky_relu"),
    "F.relu(x, inplace=False)": (lambda h: F.relu(h, inplace=False), "relu"),
}


@pytest.mark.parametrize("case", list(GRAPH_MODULES))
def test_a_traced_graph_is_read_layer_by_layer_with_what_each_reads(case):
    module, shape, loss, layers, sources = GRAPH_MODULES[case]
    net, params = sb.from_torch(module, shape, loss=loss)
    assert [layer.describe() for layer in net.layers] == layers
    assert net.sources == sources
    assert list(params) == list(net.parameters)


@pytest.mark.parametrize("case", list(GRAPH_MODULES))
def test_a_graph_from_torch_derived_gives_autograds_gradients(case, rng):
    module, shape, loss, _, _ = GRAPH_MODULES[case]
    assert_autograds_gradients(module, shape, loss, rng)


@pytest.mark.parametrize("case", list(GRAPH_MODULES))
def test_to_torch_of_a_graph_from_torch_computes_what_the_module_computes(case, rng):
    module, shape, loss, _, _ = GRAPH_MODULES[case]
    assert_round_trip(module, shape, loss, rng)


def test_the_residual_blocks_parameters_are_named_by_their_layers():
    net, params = sb.from_torch(ResidualIdentity(), (1, 4, 4))
    assert {name: value.shape for name, value in params.items()} == {
        "W1": (2, 1, 3, 3), "b1": (2,), "W2": (2, 2, 3, 3), "b2": (2,), "W3": (2, 2, 3, 3), "b3": (2,),
        "W7": (3, 2), "b7": (3,),
    }
    assert net.layer_names == ("stem", "conv1", "conv2", "add", "relu_2", "mean", "fc")  # fx's names
    assert net.consumers(1) == (2, 4)  # h is read by the block and by its shortcut


@pytest.mark.parametrize("how", list(FLATTENS))
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_every_way_of_flattening_is_read_as_none_and_computes_the_same(how, rng):
    module = Flattening(FLATTENS[how])
    net = assert_autograds_gradients(module, (1, 3, 3), "sse", rng)
    assert [layer.describe() for layer in net.layers] == [
        "conv 2x2x2, stride 1x1, padding 0x0, bias, relu", "dense 2, bias, identity",
    ]
    assert_round_trip(module, (1, 3, 3), "sse", rng)


@pytest.mark.parametrize("how", list(POOLS))
def test_every_way_of_global_average_pooling_is_one_layer(how, rng):
    module = Pooling(POOLS[how])
    net = assert_autograds_gradients(module, (1, 3, 3), "cross_entropy", rng)
    assert [layer.describe() for layer in net.layers] == [
        "conv 2x2x2, stride 1x1, padding 0x0, bias, identity", "global avgpool", "dense 3, bias, identity",
    ]
    assert net.shapes == ((1, 3, 3), (2, 2, 2), (2,), (3,))
    assert_round_trip(module, (1, 3, 3), "cross_entropy", rng)


@pytest.mark.parametrize("how", list(ACTIVATIONS))
def test_an_activation_function_or_method_after_a_linear_folds_into_it(how, rng):
    function, name = ACTIVATIONS[how]
    module = Activated(function)
    net = assert_autograds_gradients(module, (4,), "mse", rng)
    assert [layer.describe() for layer in net.layers] == [f"dense 3, bias, {name}", "dense 2, bias, identity"]
    assert_round_trip(module, (4,), "mse", rng)


def test_to_torch_then_from_torch_gives_back_each_graph_network():
    from graphs import GRAPHS

    for case, make in GRAPHS.items():
        net = make()
        rng = np.random.default_rng(1)
        params = {name: rng.normal(size=shape) for name, shape in net.parameters.items()}
        again, read = sb.from_torch(sb.to_torch(net, params), net.input_shape, loss=net.loss)
        for value, original in zip(read.values(), params.values(), strict=True):
            assert np.array_equal(value, original), case
        if case == "activation layers":  # the ReLU after the convolution folds into it
            assert [layer.describe() for layer in again.layers] == [
                "conv 2x2x2, stride 1x1, padding 0x0, bias, relu", "maxpool 2x2, stride 2x2, padding 0x0",
                "tanh", "dense 2, no bias, identity",
            ]
        elif case == "one addition reading a tensor twice":  # torch adds two at a time: (h + x) + h
            assert [layer.describe() for layer in again.layers] == [
                "conv 1x3x3, stride 1x1, padding 1x1, no bias, tanh", "add", "add", "dense 2, no bias, identity",
            ]
            assert again.sources == ((0,), (1, 0), (2, 1), (3,))
        else:
            assert again.layers == net.layers and again.sources == net.sources, case


# ---- refused, with the module and the reason -------------------------------------------------

REFUSED = [
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2)), (1, 5, 5),
     "fx node _1 (call_module 1: GroupNorm): not supported; symbackprop reads Conv2d, ConvTranspose2d"),
    (nn.Sequential(nn.Linear(4, 2), nn.Dropout()), (4,), "fx node _1 (call_module 1: Dropout): not supported"),
    (nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), (1, 5, 5),
     "fx node _0 (call_module 0: MaxPool2d): ceil_mode=True; only ceil_mode=False is supported"),
    (nn.Sequential(nn.AvgPool2d(2, ceil_mode=True)), (1, 5, 5),
     "fx node _0 (call_module 0: AvgPool2d): ceil_mode=True; only ceil_mode=False is supported"),
    (nn.Sequential(nn.AvgPool2d(2, padding=1, count_include_pad=False)), (1, 5, 5),
     "fx node _0 (call_module 0: AvgPool2d): count_include_pad=False; only the default True is supported"),
    (nn.Sequential(nn.MaxPool2d(2, dilation=2)), (1, 5, 5),
     "fx node _0 (call_module 0: MaxPool2d): dilation=2; only dilation 1 is supported"),
    (nn.Sequential(nn.Linear(4, 2), nn.LeakyReLU(0.2)), (4,),
     "fx node _1 (call_module 1: LeakyReLU): negative_slope=0.2; only negative_slope=0.01 is supported"),
    (nn.Sequential(nn.Linear(4, 2), nn.Softplus(beta=2)), (4,),
     "fx node _1 (call_module 1: Softplus): beta=2; only beta=1 is supported"),
    (nn.Sequential(nn.Linear(4, 2), nn.Softplus(threshold=10)), (4,),
     "fx node _1 (call_module 1: Softplus): threshold=10; only threshold=20 is supported"),
    (nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), (2, 5, 5),
     "fx node _0 (call_module 0: Conv2d): groups=2; only groups=1 is supported"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")), (1, 5, 5),
     "fx node _0 (call_module 0: Conv2d): padding_mode='reflect'; only zero padding is supported"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, padding="same")), (1, 5, 5),
     "fx node _0 (call_module 0: Conv2d): padding='same'; give the padding as numbers"),
    (nn.Sequential(nn.Linear(25, 2)), (1, 5, 5),
     "fx node _0 (call_module 0: Linear): its input has shape (1, 5, 5); put an nn.Flatten() before it"),
    (nn.Sequential(nn.Conv2d(3, 2, 3)), (1, 5, 5),
     "fx node _0 (call_module 0: Conv2d): in_channels is 3, but its input (1, 5, 5) needs 1"),
    (nn.Sequential(nn.Flatten(), nn.Linear(24, 2)), (1, 5, 5),
     "fx node _1 (call_module 1: Linear): in_features is 24, but its input (1, 5, 5) needs 25"),
    (nn.Sequential(nn.Conv2d(1, 2, 3)), (9,),
     "fx node _0 (call_module 0: Conv2d): its input is flat, shape (9,); it needs an image"),
    (nn.Sequential(nn.Conv2d(1, 2, 7)), (1, 5, 5),
     "fx node _0 (call_module 0: Conv2d): kernel 7x7 is larger than its padded input 5x5"),
    (nn.Sequential(nn.MaxPool2d(3, padding=2)), (1, 5, 5),
     "fx node _0 (call_module 0: MaxPool2d): padding 2x2 is more than half the kernel 3x3"),
    (nn.Sequential(nn.Flatten(0), nn.Linear(25, 2)), (1, 5, 5),
     "fx node _0 (call_module 0: Flatten): only Flatten(start_dim=1, end_dim=-1) is supported"),
    (nn.Sequential(), (1, 5, 5), "Sequential: computes nothing from its input"),
    (nn.Sequential(nn.Linear(4, 2)), (4, 4),
     "input: the input shape must be [channels, height, width] or [features]"),
    ("a Linear", (4,), "from_torch reads a torch.nn.Module, got 'a Linear'"),
]


@pytest.mark.parametrize("module, shape, message", REFUSED, ids=[m for _, _, m in REFUSED])
def test_unsupported_modules_are_refused_naming_the_module_and_why(module, shape, message):
    with pytest.raises(sb.SpecError) as error:
        sb.from_torch(module, shape)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_a_loss_without_a_torch_counterpart_is_refused():
    message = "loss: 'generic' has no torch counterpart; choose one of sse, mse"
    with pytest.raises(sb.SpecError, match=message):
        sb.from_torch(nn.Sequential(nn.Linear(4, 2)), (4,), loss="generic")


# ---- softplus: torch's stops at z = 20, ours is exact ------------------------------------------


@pytest.fixture
def softplus_past_20():
    """A dense softplus layer with weights large enough that every z lies past 20."""
    module = nn.Sequential(nn.Linear(2, 2), nn.Softplus()).double()
    with torch.no_grad():
        module[0].weight.copy_(torch.tensor([[10.0, 10.25], [10.5, 10.0]]))
        module[0].bias.copy_(torch.tensor([0.0, -0.375]))
    net, params = sb.from_torch(module, (2,), loss="sse")
    x, y = np.array([1.0, 1.0]), np.array([0.0, 1.0])  # z = (20.25, 20.125)
    return module, net, params, x, y


def test_torchs_softplus_returns_z_past_20_while_ours_is_exact(softplus_past_20):
    module, net, params, x, y = softplus_past_20
    z = np.array([20.25, 20.125])
    with torch.no_grad():
        assert module(torch.tensor(x[None]))[0].tolist() == z.tolist()  # z itself
    exact = np.logaddexp(0.0, z)  # z + log(1 + e^-z): 1.6e-9 and 1.8e-9 more
    assert 1e-9 < (exact - z).min() and (exact - z).max() < 2e-9
    out = net.derive().numeric()(x, y, params)
    assert out.loss == pytest.approx(0.5 * ((exact - y) ** 2).sum(), rel=1e-15)
    # torch's own softplus has slope 1 past 20, the exact one σ(z) = 1 − 2e-9: check's
    # 1e-9 would flag that, so check compares with the exact function
    module.zero_grad()
    xt = torch.tensor(x[None], requires_grad=True)
    (0.5 * ((module(xt) - torch.tensor(y[None])) ** 2).sum()).backward()
    against_thresholded = Comparison()
    against_thresholded.add(out.grads["W1"], module[0].weight.grad.numpy())
    assert not against_thresholded.agrees("torch")
    against_exact = Comparison()
    against_exact.add(out.grads["W1"], verify.torch_loss_and_grads(net, x, y, params).grads["W1"])
    assert against_exact.agrees("torch") and against_exact.rel_error < 1e-14


def test_check_does_not_flag_a_point_past_20(softplus_past_20, monkeypatch):
    _, net, params, x, y = softplus_past_20
    monkeypatch.setattr(verify, "draw_point", lambda *args: (x, y, params))
    report = check(net.derive(), samples=1)
    assert report.methods == ["reference", "finite differences", "torch"]
    assert report.agree


# ---- graphs refused: nothing is read wrong in silence ------------------------------------------


class LinearTwice(nn.Module):
    """One Linear applied twice: its weights would serve two layers."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(F.relu(self.fc(x)))


class TiedWeights(nn.Module):
    """Two Linears holding one weight tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class DoubledLinear(nn.Linear):
    """A subclass of nn.Linear with its own forward: it computes something else."""

    def forward(self, x):
        return F.linear(x, 2 * self.weight, self.bias)


class DataDependent(nn.Module):
    """Control flow on a value: fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc(x)
        if h.sum() > 0:
            return h
        return -h


class ScaledOutput(nn.Module):
    """A parameter of its own, read in forward (an fx get_attr node)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.scale = nn.Parameter(torch.ones(2))

    def forward(self, x):
        return self.fc(x) * self.scale


class Then(nn.Module):
    """A Linear (on a vector) or a 1x1 Conv2d (on an image), then ``function``."""

    def __init__(self, function, image: bool = False) -> None:
        super().__init__()
        self.fc = nn.Conv2d(1, 2, 1) if image else nn.Linear(4, 4)
        self.function = function

    def forward(self, x):
        return self.function(self.fc(x))


class TwoInputs(nn.Module):
    def forward(self, x, y):
        return x + y


class Broadcasting(nn.Module):
    """torch broadcasts (2, 3, 3) + (1, 3, 3); an addition reads one shape."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 1), nn.Conv2d(1, 1, 1)

    def forward(self, x):
        return self.a(x) + self.b(x)


class PooledNotFlattened(nn.Module):
    """A Linear on AdaptiveAvgPool2d(1)'s (B, 2, 1, 1): torch applies it to the last axis."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool, self.fc = nn.Conv2d(1, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)))


class Overwritten(nn.Module):
    """``activation`` in place on fc's output, which the addition reads afterwards: torch adds
    the new values."""

    def __init__(self, activation) -> None:
        super().__init__()
        self.fc, self.out = nn.Linear(4, 4), nn.Linear(4, 2)
        self.activation = activation

    def forward(self, x):
        h = self.fc(x)
        return self.out(self.activation(h) + h)


class ThroughAnAlias(nn.Module):
    """h += x changes g too (one tensor): fx records a new value for h alone."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc(x)
        g = h
        h += x
        return self.out(h + g)


def qat_linear() -> nn.Module:
    """torch's fake-quantised Linear: a subclass of nn.Linear, named Linear too."""
    return torch.ao.nn.qat.Linear(4, 2, qconfig=torch.ao.quantization.get_default_qat_qconfig())


NOT_SUPPORTED = "not supported; symbackprop reads +, torch.add, torch.cat(dim=1), flatten, view(B, -1), mean((2, 3))"
GRAPHS_REFUSED = {
    "a Linear applied twice": (LinearTwice(), (4,),
        ("fx node fc_1 (call_module fc: Linear): called a second time (first by fx node fc); its weights "
        "would be shared by two layers, which symbackprop does not support")),
    "a Linear twice in a Sequential": (sequential_reusing(nn.Linear(4, 4)), (4,),
        "fx node _0_1 (call_module 0: Linear): called a second time (first by fx node _0)"),
    "tied weights": (TiedWeights(), (4,),
        ("fx node b (call_module b: Linear): its weight is also a.weight (tied weights); weights shared by "
        "two layers are not supported")),
    "torch.ao.nn.qat.Linear": (qat_linear(), (4,),
        ("fx node _0 (call_module 0: torch.ao.nn.qat.modules.linear.Linear): a subclass of torch.nn.Linear "
        "with its own forward(); symbackprop reads the torch.nn modules themselves")),
    "a subclass with its own forward": (nn.Sequential(nn.Linear(4, 4), DoubledLinear(4, 2)), (4,),
        "fx node _1 (call_module 1: test_torch_bridge.DoubledLinear): a subclass of torch.nn.Linear with its own forward()"),
    "data-dependent control flow": (DataDependent(), (4,),
        ("DataDependent: torch.fx.symbolic_trace cannot trace it (TraceError: symbolically traced variables "
        "cannot be used as inputs to control flow); from_torch reads modules that fx can trace")),
    "a parameter read in forward": (ScaledOutput(), (4,),
        "fx node scale (get_attr scale): not supported; symbackprop reads modules, functions and methods on tensors"),
    "torch.exp": (Then(torch.exp), (4,), f"fx node exp (call_function exp): {NOT_SUPPORTED}"),
    "x.pow(2)": (Then(lambda h: h.pow(2)), (4,), f"fx node pow_1 (call_method pow): {NOT_SUPPORTED}"),
    "x * 2": (Then(lambda h: h * 2), (4,), f"fx node mul (call_function mul): {NOT_SUPPORTED}"),
    "x + 1": (Then(lambda h: h + 1), (4,),
        "fx node add (call_function add): fc + 1; symbackprop adds tensors to tensors, not numbers"),
    "torch.add(alpha=2)": (Then(lambda h: torch.add(h, h, alpha=2)), (4,),
        "fx node add (call_function add): alpha=2; only a plain sum is supported"),
    "an addition of two shapes": (Broadcasting(), (1, 3, 3),
        "fx node add (call_function add): its inputs have shapes 2x3x3 and 1x3x3; an addition needs one shape"),
    "view(-1, 2)": (Then(lambda h: h.view(-1, 2)), (4,),
        "fx node view (call_method view): view(-1, 2); only view(x.size(0), -1) is supported"),
    "flatten(0)": (Then(lambda h: h.flatten(0)), (4,),
        "fx node flatten (call_method flatten): start_dim=0, end_dim=-1; only flatten(x, 1) is supported"),
    "torch.cat(dim=2)": (Then(lambda h: torch.cat([h, h], dim=2), image=True), (1, 3, 3),
        "fx node cat (call_function cat): dim=2; only dim=1 (channels, or features) is supported"),
    "mean(1)": (Then(lambda h: h.mean(1), image=True), (1, 3, 3),
        ("fx node mean (call_method mean): only mean((2, 3)) over height and width, global average pooling, "
        "is supported")),
    "mean((2, 3), keepdim=True)": (Then(lambda h: h.mean((2, 3), keepdim=True), image=True), (1, 3, 3),
        "fx node mean (call_method mean): only mean((2, 3))"),
    "adaptive_avg_pool2d(x, 2)": (Then(lambda h: F.adaptive_avg_pool2d(h, 2), image=True), (1, 3, 3),
        ("fx node adaptive_avg_pool2d (call_function adaptive_avg_pool2d): output_size=2; only 1, global "
        "average pooling, is supported")),
    "indexing": (Then(lambda h: h[:, 0], image=True), (1, 3, 3),
        "fx node getitem (call_function getitem): indexing tensors is not supported"),
    "a Linear on an unflattened pool": (PooledNotFlattened(), (1, 3, 3),
        "fx node fc (call_module fc: Linear): its input has shape (2, 1, 1); put an nn.Flatten() before it"),
    "nn.ReLU(inplace=True) on a tensor read after": (Overwritten(nn.ReLU(inplace=True)), (4,),
        ("fx node activation (call_module activation: ReLU): works in place (inplace=True) on fc, which fx "
         "node add reads afterwards; symbackprop would read the value from before; use inplace=False")),
    "F.relu(x, True) on a tensor read after": (Overwritten(lambda h: F.relu(h, True)), (4,),
        "fx node relu (call_function relu): works in place (inplace=True) on fc, which fx node add reads afterwards"),
    "+= through an alias": (ThroughAnAlias(), (4,),
        ("ThroughAnAlias: the network read computes other values than the module (")),
    "two inputs": (TwoInputs(), (4,), "fx node y (placeholder): a second input; a network has one"),
    "two outputs": (Then(lambda h: (h, h)), (4,), "fx node output (output): returns (fc, fc); one tensor only"),
}


@pytest.mark.parametrize("case", list(GRAPHS_REFUSED))
def test_a_graph_is_refused_naming_the_fx_node_its_op_and_target(case):
    module, shape, message = GRAPHS_REFUSED[case]
    with pytest.raises(sb.SpecError) as error:
        sb.from_torch(module, shape, loss="sse")
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_a_subclass_keeping_forward_is_checked_like_the_class_itself():
    with pytest.raises(sb.SpecError, match=r"^fx node _1 \(call_module 1: test_torch_bridge.PlainLinear\): "
                       r"in_features is 5, but its input \(4,\) needs 4$"):
        sb.from_torch(nn.Sequential(nn.Linear(4, 4), PlainLinear(5, 2)), (4,), loss="sse")


@pytest.mark.parametrize("where", ["a submodule", "the root"])
@pytest.mark.parametrize("kind", ["forward hook", "forward pre-hook"])
def test_a_module_with_a_hook_is_refused(where, kind):
    module = nn.Sequential(nn.Linear(4, 2))
    hooked = module[0] if where == "a submodule" else module
    if kind == "forward hook":
        hooked.register_forward_hook(lambda m, inputs, output: 2 * output)
    else:
        hooked.register_forward_pre_hook(lambda m, inputs: tuple(2 * i for i in inputs))
    name = "module 0 (Linear)" if where == "a submodule" else "module (the root) (Sequential)"
    hooks = "forward hooks" if kind == "forward hook" else "forward pre hooks"
    with pytest.raises(sb.SpecError) as error:
        sb.from_torch(module, (4,), loss="sse")
    assert str(error.value) == f"{name}: has {hooks}; a hook can change what it computes, so it is not read"


def test_a_global_forward_hook_is_refused():
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, inputs, output: output)
    try:
        with pytest.raises(sb.SpecError, match=r"^torch.nn has global forward hooks \(register_module_forward_hook\)"):
            sb.from_torch(nn.Sequential(nn.Linear(4, 2)), (4,), loss="sse")
    finally:
        handle.remove()
    sb.from_torch(nn.Sequential(nn.Linear(4, 2)), (4,), loss="sse")  # read again once it is gone


@pytest.mark.parametrize("train", [True, False])
def test_a_module_read_is_left_as_it_was(train):
    # running it in train mode, as reading does, would move batch norm's running statistics
    module = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2), nn.GroupNorm(1, 2)).train(train)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(sb.SpecError, match="GroupNorm"):
        sb.from_torch(module, (4,), loss="sse")
    net, _ = sb.from_torch(module[:2].train(train), (4,), loss="sse")
    assert net.mode == ("train" if train else "eval")
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # its running statistics untouched


# ---- to_torch's params: every one, of its shape, nothing else ---------------------------------


@pytest.mark.parametrize("params, message", [
    ({"W1": np.ones((2, 3))}, "params: missing b1; the network's are W1, b1"),
    ({"W1": np.ones((2, 3)), "b1": np.ones(2), "W2": np.ones(1)}, "params: unknown W2; the network's are W1, b1"),
    ({"b1": np.ones(2), "w1": np.ones((2, 3))}, "params: missing W1; unknown w1; the network's are W1, b1"),
    ({"W1": np.ones((1, 3)), "b1": np.ones(2)}, "params: W1 has shape (1, 3), the network's is (2, 3)"),
    ({"W1": np.ones((2, 3)), "b1": 0.5}, "params: b1 has shape (), the network's is (2,)"),
    ({"W1": np.ones((3, 2)), "b1": np.ones(2)}, "params: W1 has shape (3, 2), the network's is (2, 3)"),
])
def test_to_torch_refuses_params_that_are_not_the_networks_with_one_line(params, message):
    net = sb.Network((3,), [sb.Dense(units=2, bias=True)], loss="sse")
    with pytest.raises(ValueError) as error:
        sb.to_torch(net, params)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_to_torch_refuses_params_that_are_no_mapping():
    net = sb.Network((3,), [sb.Dense(units=2, bias=True)], loss="sse")
    with pytest.raises(TypeError) as error:
        sb.to_torch(net, [np.ones((2, 3)), np.ones(2)])
    assert str(error.value) == (
        "params must map each parameter's name to an array, got [array([[1., 1., 1.], [1., 1., 1.]]), array([1., 1.])]"
    )


def test_to_torch_holds_the_params_given():
    net = sb.Network((3,), [sb.Dense(units=2, bias=True)], loss="sse")
    model = sb.to_torch(net, {"W1": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], "b1": [0.5, -0.5]})
    assert model(torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64)).tolist() == [[6.5, 14.5]]


def test_a_node_read_wrong_is_caught_where_torch_computes_another_shape(monkeypatch):
    # were the reader to take flatten(0) for flatten(1), torch's own run of the traced graph
    # on a sample of one would say so at that node
    from symbackprop import torch_bridge

    monkeypatch.setattr(torch_bridge._Reader, "_flatten", lambda self, node, args, kwargs: self._flat(args[0]))
    with pytest.raises(sb.SpecError) as error:
        sb.from_torch(Then(lambda h: h.flatten(0)), (4,), loss="sse")
    assert str(error.value) == "fx node flatten (call_method flatten): torch computes shape () here, but it was read as (4,)"


class UnusedBranch(nn.Module):
    """A Linear whose output forward throws away: fx keeps its node; the network has no such layer."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.unused, self.b = nn.Linear(4, 3), nn.Linear(4, 5), nn.Linear(3, 2)

    def forward(self, x):
        self.unused(x)
        return self.b(torch.tanh(self.a(x)))


def test_a_layer_whose_output_nothing_uses_is_left_out():
    module = UnusedBranch()
    net, params = sb.from_torch(module, (4,), loss="sse")
    assert net.layer_names == ("a", "b")
    assert {name: value.shape for name, value in params.items()} == {"W1": (3, 4), "b1": (3,), "W2": (2, 3), "b2": (2,)}
    assert np.array_equal(params["W2"], module.b.weight.detach().numpy())


def test_a_module_name_too_long_for_a_layer_leaves_the_layer_unnamed():
    module = nn.Sequential()
    module.add_module("first_fully_connected_layer_of_the_encoder_of_a_very_deep_network", nn.Linear(4, 3))
    module.add_module("head", nn.Linear(3, 2))
    net, params = sb.from_torch(module, (4,), loss="sse")
    assert net.layer_names == (None, "head")
    assert list(params) == ["W1", "b1", "W2", "b2"]


def test_a_module_read_as_another_function_is_caught_by_running_both(monkeypatch):
    # were an activation to be misread (a Tanh as a sigmoid: the same shapes), the network read
    # and the module, run on one random batch, would disagree
    from symbackprop.ops import Activation

    monkeypatch.setattr(Activation, "from_torch", classmethod(lambda cls, m: cls("sigmoid")))
    with pytest.raises(sb.SpecError, match=r"^Sequential: the network read computes other values than the module \("):
        sb.from_torch(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)), (4,), loss="sse")
