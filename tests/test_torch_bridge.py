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
    """Per-sample losses, summed parameter gradients and per-sample input gradients from
    autograd on ``module`` itself, its loss written here with torch's own functions."""
    module.zero_grad()
    xt = torch.tensor(x, requires_grad=True)
    out, yt = module(xt), torch.tensor(y)
    losses = {
        "sse": lambda: 0.5 * ((out - yt) ** 2).sum(dim=1),
        "mse": lambda: nn.functional.mse_loss(out, yt, reduction="none").mean(dim=1),
        "cross_entropy": lambda: nn.functional.cross_entropy(out, yt, reduction="none"),
    }[loss]()
    losses.sum().backward()
    return losses.detach().numpy(), [p.grad.numpy() for p in module.parameters()], xt.grad.numpy()


@pytest.mark.parametrize("case", list(MODULES))
def test_from_torch_then_derive_gives_autograds_gradients(case, rng):
    module, shape, loss = MODULES[case]
    module = module.double()
    net, params = sb.from_torch(module, shape, loss=loss)
    x = rng.normal(size=(3, *shape))
    k = net.output_size
    y = rng.dirichlet(np.ones(k), size=3) if loss == "cross_entropy" else rng.normal(size=(3, k))
    losses, param_grads, x_grad = autograd_on(module, x, y, loss)
    out = net.derive().numeric()(x, y, params)
    assert_close(out.loss, losses)
    assert_close(out.grads["x"], x_grad)
    for name, grad in zip(params, param_grads):  # the sum over the batch is autograd's
        assert_close(out.grads[name].sum(axis=0), grad)


@pytest.mark.parametrize("case", list(MODULES))
def test_to_torch_of_from_torch_computes_what_the_module_computes(case, rng):
    module, shape, loss = MODULES[case]
    module = module.double()
    net, params = sb.from_torch(module, shape, loss=loss)
    again = sb.to_torch(net, params)
    x = torch.tensor(rng.normal(size=(4, *shape)))
    with torch.no_grad():
        assert_close(again(x).numpy(), module(x).numpy(), rtol=1e-14)
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


# ---- refused, with the module and the reason -------------------------------------------------

REFUSED = [
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), (1, 5, 5),
     "fx node _1 (call_module 1: BatchNorm2d): not supported; symbackprop reads Conv2d, Linear"),
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
