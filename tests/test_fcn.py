"""Fully convolutional pieces: outputs that are maps, scored per pixel, and the binary
cross-entropy — each checked against torch's own losses on the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from oracle import assert_close, torch_batch_loss_and_grads

import symbackprop as sb
from symbackprop import reference


def segmenter(classes: int = 3, loss: str = "cross_entropy") -> sb.Network:
    """1x4x4 → conv 2@3x3 (padding 1, tanh) → conv `classes`@1x1: a score map per class."""
    return sb.Network((1, 4, 4), [
        sb.Conv2D(out_channels=2, kernel_size=3, padding=1, bias=True, activation="tanh"),
        sb.Conv2D(out_channels=classes, kernel_size=1, bias=True),
    ], loss=loss)


def point(net: sb.Network, rng: np.random.Generator, batch: int = 3):
    params = {name: rng.normal(size=shape) for name, shape in net.parameters.items()}
    x = rng.normal(size=(batch, *net.input_shape))
    channels, *pixels = net.shapes[-1]
    labels = rng.integers(0, channels, size=(batch, *pixels))
    y = np.moveaxis(np.eye(channels)[labels], -1, 1).reshape(batch, -1)  # one-hot per pixel
    return x, y, params, labels


def test_a_map_is_scored_with_a_softmax_over_its_channels_at_every_pixel(rng):
    net = segmenter()
    x, y, params, labels = point(net, rng)
    out = net.derive().numeric()(x, y, params)
    model = sb.to_torch(net, params)
    with torch.no_grad():
        scores = model(torch.tensor(x))  # (B, 3, 4, 4)
        by_index = torch.nn.functional.cross_entropy(scores, torch.tensor(labels), reduction="none")
    assert_close(out.loss, by_index.sum(dim=(1, 2)).numpy())  # torch's, with class indices
    one_softmax = -(y * torch.log_softmax(scores.reshape(3, -1), dim=1).numpy()).sum(axis=1)
    assert np.abs(out.loss - one_softmax).min() > 1.0  # not one softmax over all 48 values


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy", "sse", "mse"])
def test_map_losses_equal_torch_on_every_face(loss, rng):
    net = segmenter(loss=loss)
    x, y, params, _ = point(net, rng)
    if loss != "cross_entropy":
        y = rng.random(size=y.shape)  # soft targets in [0, 1]
    losses, grads = torch_batch_loss_and_grads(net, x, y, params)
    d = net.derive()
    for out in (d.numeric(style="layers")(x, y, params), d.numeric(style="nodes")(x, y, params),
                reference.loss_and_grads(net, x, y, params)):
        assert_close(out.loss, losses)
        for name, grad in grads.items():
            assert_close(out.grads[name], grad)


@pytest.mark.parametrize("style", ["layers", "nodes"])
@pytest.mark.parametrize("reduce", [None, "sum", "mean"])
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_a_map_takes_class_indices_per_pixel_as_torch_does(style, reduce, rng):
    net = segmenter()
    x, _, params, labels = point(net, rng)  # labels (3, 4, 4): a class per pixel
    out = net.derive().numeric(style=style, reduce=reduce)(x, labels, params)
    xt = torch.tensor(x, requires_grad=True)
    model = sb.to_torch(net, params)
    per_sample = torch.nn.functional.cross_entropy(model(xt), torch.tensor(labels), reduction="none")
    losses = per_sample.sum(dim=(1, 2))
    expected = {None: losses, "sum": losses.sum(), "mean": losses.mean()}[reduce]
    assert_close(out.loss, expected.detach().numpy())
    if reduce is not None:
        expected.backward()
        assert_close(out.grads["x"], xt.grad.numpy())
    probabilities = np.moveaxis(np.eye(3)[labels], -1, 1).reshape(3, -1)  # one-hot per pixel
    one_hot = net.derive().numeric(style=style, reduce=reduce)(x, probabilities, params)
    for name, grad in one_hot.grads.items():
        np.testing.assert_array_equal(out.grads[name], grad)
    one = net.derive().numeric(style=style)(x[0], labels[0], params)  # one sample: an (H, W) map
    assert_close(one.loss, losses[0].item())


def test_targets_may_come_as_the_map_or_as_a_class_per_sample(rng):
    net = segmenter()
    x, y, params, labels = point(net, rng)
    f = net.derive().numeric(reduce="sum")
    flat = f(x, y, params).loss
    assert f(x, y.reshape(3, 3, 4, 4), params).loss == flat  # (B, C, H, W) as torch's probabilities
    assert f(x, labels, params).loss == flat
    classifier = sb.Network((4,), [sb.Dense(3, bias=True)], loss="cross_entropy")
    params = {name: rng.normal(size=shape) for name, shape in classifier.parameters.items()}
    x, labels = rng.normal(size=(5, 4)), np.array([0, 2, 1, 2, 0])
    with torch.no_grad():
        logits = sb.to_torch(classifier, params)(torch.tensor(x))
        expected = torch.nn.functional.cross_entropy(logits, torch.tensor(labels), reduction="sum")
    assert_close(classifier.derive().numeric(reduce="sum")(x, labels, params).loss, expected.item())
    assert_close(classifier.derive().numeric()(x[1], 2, params).loss,
                 torch.nn.functional.cross_entropy(logits[1], torch.tensor(2)).item())


@pytest.mark.parametrize("labels, message", [
    (np.full((3, 4, 4), 3), "y holds class 3; this output has 3 classes, 0 to 2"),
    (np.full((3, 4, 4), -1), "y holds class -1"),
    (np.zeros((3, 4, 5), dtype=int), r"integer shape \(3, 4, 5\): class indices are an array \(4, 4\)"),
])
def test_class_indices_out_of_range_or_of_the_wrong_shape_are_refused(labels, message, rng):
    net = segmenter()
    x, _, params, _ = point(net, rng)
    with pytest.raises(ValueError, match=message):
        net.derive().numeric()(x, labels, params)


def test_sse_takes_no_class_indices(rng):
    net = segmenter(loss="sse")
    x, _, params, labels = point(net, rng)
    with pytest.raises(ValueError, match="y has shape"):
        net.derive().numeric()(x, labels, params)


def test_the_closed_form_loss_of_a_map_sums_a_softmax_per_pixel():
    net = sb.Network((1, 1, 2), [sb.Conv2D(out_channels=2, kernel_size=1)], loss="cross_entropy")
    text = str(net.derive().graph.loss)
    assert "log(exp(a1_1) + exp(a1_3))" in text and "log(exp(a1_2) + exp(a1_4))" in text


@pytest.mark.parametrize("logit", [1e4, -1e4])
def test_binary_cross_entropy_stays_finite_at_logits_far_out(logit):
    net = sb.Network((2,), [sb.Dense(units=1, bias=True)], loss="binary_cross_entropy")
    params = {"W1": np.array([[logit, 0.0]]), "b1": np.zeros(1)}
    x, wrong = np.array([1.0, 0.0]), np.array([0.0 if logit > 0 else 1.0])
    out = net.derive().numeric()(x, wrong, params)
    assert out.loss == pytest.approx(abs(logit), rel=1e-15)  # −log σ(−|a|) = |a| + e^−|a|
    assert out.grads["b1"].tolist() == [1.0 if logit > 0 else -1.0]  # σ(a) − y
    losses, grads = torch_batch_loss_and_grads(net, x[None], wrong[None], params)
    assert losses[0] == pytest.approx(out.loss, rel=1e-15)
    assert_close(out.grads["W1"], grads["W1"][0])


@pytest.mark.parametrize("layers, message", [
    ([sb.Dense(units=1)], "loss: cross_entropy on one unit: a softmax over one output is always 1"),
    ([sb.Conv2D(kernel_size=1)], "loss: cross_entropy on a map of one channel"),
])
def test_cross_entropy_over_one_output_is_refused_pointing_to_binary(layers, message):
    with pytest.raises(sb.SpecError) as error:
        sb.Network((1, 2, 2), layers, loss="cross_entropy")
    assert str(error.value).startswith(message) and "use binary_cross_entropy" in str(error.value)


# ---- the presets -------------------------------------------------------------------------------


def test_the_fully_convolutional_presets_end_in_a_score_map():
    fcn, unet = sb.presets.fcn_tiny(), sb.presets.unet_tiny()
    assert fcn.parameter_count == 3562 and unet.parameter_count == 3818
    assert fcn.shapes[-1] == unet.shapes[-1] == (2, 16, 16)
    assert unet.sources == ((0,), (1,), (2,), (1, 3), (4,))  # the skip: layer 1 joins layer 3
    assert unet.parameters["W5"] == (16, 2, 4, 4)  # (in_channels, out_channels, kh, kw), as torch


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["fcn_tiny", "unet_tiny"])
def test_check_of_the_fully_convolutional_presets_agrees(preset):
    from symbackprop.verify import check

    report = check(sb.presets.PRESETS[preset]().derive(), samples=2, seed=0)
    assert report.agree and report.methods == ["reference", "finite differences", "torch"]


# ---- from and to torch -------------------------------------------------------------------------


class Decoder(torch.nn.Module):
    """A conv, F.interpolate (bilinear) and a transposed conv: a decoder's pieces under fx."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.up = torch.nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1, output_padding=0)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.up(torch.nn.functional.interpolate(h, scale_factor=2, mode="bilinear"))


FCN_MODULES = {
    "nn.Upsample bilinear then a linear layer": torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Upsample(scale_factor=2, mode="bilinear"),
        torch.nn.Flatten(), torch.nn.Linear(2 * 8 * 8, 3)),
    "ConvTranspose2d with output padding, UpsamplingNearest2d": torch.nn.Sequential(
        torch.nn.ConvTranspose2d(1, 2, 3, stride=2, padding=1, output_padding=1),
        torch.nn.UpsamplingNearest2d(scale_factor=2)),
    "F.interpolate under fx, a decoder": Decoder(),
}


@pytest.mark.parametrize("name", list(FCN_MODULES))
def test_fully_convolutional_modules_are_read_as_torch_computes_them(name, rng):
    module = FCN_MODULES[name].double()
    net, params = sb.from_torch(module, (1, 4, 4), loss="sse")
    x = rng.normal(size=(2, 1, 4, 4))
    y = rng.normal(size=(2, net.output_size))
    out = net.derive().numeric(reduce="sum")(x, y, params)
    inputs = torch.tensor(x, requires_grad=True)
    loss = 0.5 * ((module(inputs).reshape(2, -1) - torch.tensor(y)) ** 2).sum()
    loss.backward()
    assert out.loss == pytest.approx(loss.item(), rel=1e-12)
    assert_close(out.grads["x"], inputs.grad.numpy())
    with torch.no_grad():
        assert_close(sb.to_torch(net, params)(torch.tensor(x)).numpy(), module(torch.tensor(x)).numpy())


def test_align_corners_true_is_refused_saying_so():
    with pytest.raises(sb.SpecError, match=r"UpsamplingBilinear2d\): align_corners=True; only align_corners=False"):
        sb.from_torch(torch.nn.Sequential(torch.nn.UpsamplingBilinear2d(scale_factor=2)), (1, 4, 4), loss="sse")
    with pytest.raises(sb.SpecError, match=r"scale_factor=1.5; only whole factors"):
        sb.from_torch(torch.nn.Sequential(torch.nn.Upsample(scale_factor=1.5)), (1, 4, 4), loss="sse")
