"""`check` on a network whose batch normalisation mixes the samples (train mode): one batch,
the gradients of its summed loss against the reference over the batch, finite differences of
the batch's loss and torch with BatchNorm in train mode; eval mode like any network; and a
point that cannot be drawn clear of kinks said so."""

from __future__ import annotations

import dataclasses
import json
from functools import cached_property

import numpy as np
import pytest
import sympy
from oracle import assert_close, torch_reduced_loss_and_grads

import symbackprop as sb
from symbackprop import reference, verify
from symbackprop.cli import main
from symbackprop.errors import NearKink


def conv_bn(mode: str = "train", activation: str = "relu") -> sb.Network:
    """2x3x3 → conv 2@2x2 (bias) → BatchNorm2D → activation → dense 2, sse: 54 graph edges a
    sample, small enough for the engine's program of a batch of 3."""
    x = sb.Input((2, 3, 3))
    h = sb.BatchNorm2D()(sb.Conv2D(out_channels=2, kernel_size=2, bias=True)(x))
    return sb.Network(inputs=x, outputs=sb.Dense(units=2)(sb.Activation(activation)(h)), loss="sse",
                      name="conv_bn", mode=mode)


def dense_bn(mode: str = "train") -> sb.Network:
    """3 → dense 4 → BatchNorm1D → tanh → dense 3 (bias), cross-entropy."""
    x = sb.Input((3,))
    h = sb.Tanh()(sb.BatchNorm1D()(sb.Dense(units=4)(x)))
    return sb.Network(inputs=x, outputs=sb.Dense(units=3, bias=True)(h), loss="cross_entropy",
                      name="dense_bn", mode=mode)


def largest(report: verify.Report) -> dict[str, dict[str, float]]:
    return {row.name: {m: c.abs_error for m, c in row.comparisons.items()} for run in report.runs for row in run.rows}


@pytest.mark.parametrize("build", [conv_bn, dense_bn])
def test_a_train_mode_network_is_checked_on_one_batch(build):
    net = build()
    report = verify.check(net.derive(), samples=3, seed=1)
    assert report.batch and report.samples == 3 and report.agree
    assert report.styles == ["layers", "nodes"]  # the engine's program of the batch too
    assert report.methods == ["reference", "finite differences", "torch"]
    rows = report.runs[0].rows
    assert [row.name for row in rows] == ["loss", "x", *net.parameters]
    assert list(rows[0].comparisons) == ["reference", "torch"]  # finite differences give no loss
    assert all(list(row.comparisons) == report.methods for row in rows[1:])
    assert json.loads(json.dumps(report.to_dict()))["batch"] is True


def test_past_its_limit_the_program_of_the_batch_is_left_to_the_other_methods():
    net = conv_bn()
    batch = verify.BATCH_NODES_LIMIT // net.graph_edges + 1  # one sample past the limit
    report = verify.check(net.derive(), samples=batch)
    assert report.batch and report.samples == batch and report.styles == ["layers"] and report.agree


def test_the_bias_before_batch_norm_has_no_gradient_and_the_check_sees_the_rest():
    # the batch's mean takes the bias away: its gradient is 0 (to rounding), which every method
    # agrees on; the other parameters' gradients are of order one
    net = conv_bn()
    xs, ys, params = verify.draw_point(net, np.random.default_rng(0), batch=3)
    out = net.derive().numeric(reduce="sum")(xs, ys, params)
    assert np.abs(out.grads["b1"]).max() < 1e-15
    assert 0.1 < np.abs(out.grads["W1"]).max() < 10 and 0.1 < np.abs(out.grads["gamma2"]).max() < 10


def test_the_batch_gradient_is_not_the_per_sample_one():
    # finite differences of the batch's loss give torch's batch gradient; per-sample ones, as
    # the check of an ordinary network takes them, would not (the samples interact)
    net = dense_bn()
    xs, ys, params = verify.draw_point(net, np.random.default_rng(2), batch=3)
    _, grads = torch_reduced_loss_and_grads(net, xs, ys, params, "sum")
    differenced = verify.finite_differences(net, xs, ys, params, batch=True)
    for name, grad in grads.items():
        assert_close(differenced.grads[name], grad, rtol=1e-6)
    # one sample alone is a batch of one: BatchNorm1D normalises it to 0, and W1 drops out
    one_by_one = [verify.finite_differences(net, x, y, params).grads["W1"] for x, y in zip(xs, ys)]
    assert np.abs(sum(one_by_one)).max() < 1e-9 and np.abs(grads["W1"]).max() > 0.01


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_the_reference_reduces_a_batch_as_the_numeric_code_does(reduce, rng):
    net = conv_bn()
    xs, ys, params = verify.draw_point(net, rng, batch=4)
    loss, grads = torch_reduced_loss_and_grads(net, xs, ys, params, reduce)
    out = reference.loss_and_grads(net, xs, ys, params, reduce=reduce)
    assert out.loss == pytest.approx(loss, rel=1e-12)
    assert out.grads.keys() == grads.keys()
    for name, grad in grads.items():
        assert_close(out.grads[name], grad)
    assert reference.loss_value(net, xs, ys, params, reduce=reduce) == pytest.approx(loss, rel=1e-12)
    with pytest.raises(ValueError, match=r"reduce='max'; choose None \(per sample\), 'sum' or 'mean'"):
        reference.loss_and_grads(net, xs, ys, params, reduce="max")


def flipped_batch_program(name: str, index: tuple[int, ...]):
    """Network.derive, with the sign of one gradient element flipped in the program of a batch."""

    class Flipped(sb.Derivation):
        @cached_property
        def program(self):
            program = sb.Derivation.program.func(self)
            if self.batch is None:
                return program
            elements = sympy.MutableDenseNDimArray(program.gradients[name])
            elements[index] = -elements[index]
            gradients = {**program.gradients, name: sympy.ImmutableDenseNDimArray(elements)}
            return dataclasses.replace(program, gradients=gradients)

    return lambda net, batch=None, reduce="sum": Flipped(net, batch=batch, reduce=reduce)


def test_a_wrong_program_of_the_batch_fails_the_check(monkeypatch):
    monkeypatch.setattr(sb.Network, "derive", flipped_batch_program("gamma2", (1,)))
    report = verify.check(conv_bn().derive(), samples=3)
    assert not report.agree
    wrong = [row for row in report.runs[0].rows if not row.agree]
    assert [row.name for row in wrong] == ["gamma2"]
    assert wrong[0].disagreeing == ["reference", "finite differences", "torch"]


def test_a_wrong_numeric_code_fails_the_check(monkeypatch):
    # the per-layer code with the batch's mean gradient not scaled back: W4 off by a factor
    right = sb.Derivation.numeric

    def numeric(self, g=None, loss=None, reduce=None, style=None, backend="numpy", dtype="float64"):
        f = right(self, g, loss, reduce, style, backend, dtype)
        if reduce != "mean":
            return f

        def wrong(x, y, params):
            out = f(x, y, params)
            return reference.Result(out.loss, {**out.grads, "W4": out.grads["W4"] * 2})
        return wrong

    monkeypatch.setattr(sb.Derivation, "numeric", numeric)
    report = verify.check(conv_bn().derive(), samples=3)
    assert [row.name for row in report.runs[0].rows if not row.agree] == ["W4"]


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_a_generic_activation_after_batch_norm_is_checked_for_each_choice():
    report = verify.check(conv_bn(activation="g").derive(), samples=2)
    assert report.batch and report.agree
    assert [run.g for run in report.runs] == ["identity", "sigmoid", "tanh", "relu", "softplus", "leaky_relu"]
    assert report.styles == ["layers", "nodes"]


def test_a_batch_of_one_is_refused_in_train_mode():
    with pytest.raises(ValueError, match=r"^conv_bn's batch normalisation in train mode mixes the samples of "
                       r"a batch: it is checked on a batch of 2 or more samples, got samples=1$"):
        verify.check(conv_bn().derive(), samples=1)


@pytest.mark.parametrize("build", [conv_bn, dense_bn])
def test_eval_mode_is_checked_sample_by_sample_with_running_statistics(build):
    net = build(mode="eval")
    _x, _y, params = verify.draw_point(net, np.random.default_rng(0))
    assert set(params) == {*net.parameters, *net.buffers}
    assert all(0.5 <= value.min() and value.max() <= 2.0 for name, value in params.items() if name in net.buffers)
    report = verify.check(net.derive(), samples=2)
    assert not report.batch and report.agree and report.styles == ["layers", "nodes"]
    assert [row.name for row in report.runs[0].rows] == ["loss", "x", *net.parameters]  # no statistics


def test_check_on_the_command_line_says_it_checked_a_batch(tmp_path, capsys):
    spec = tmp_path / "bn.yaml"
    spec.write_text("name: bn\ninput: [3]\nlayers:\n  - dense: {units: 4}\n  - batchnorm1d: {}\n"
                    "  - activation: {function: tanh}\n  - dense: {units: 2, bias: true}\nloss: sse\n")
    assert main(["check", str(spec), "--samples", "4", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "check bn: a batch of 4 samples, seed 5 (its layers mix the samples); derived gradients of the "
        "batch's summed loss (per-layer code, summed and mean and the engine's program of the batch) "
        "against reference, finite differences, torch\nabs: largest |derived - method|; rel: abs / the "
        "method's largest |value|\n"
    )
    assert out.count(" ok\n") == 7 and out.rstrip().endswith("all agree")  # loss, x, W1 gamma2 beta2 W4 b4
    assert main(["check", str(spec), "--samples", "1"]) == 2
    assert capsys.readouterr().err == (
        "symbackprop: error: --samples must be 2 or more for bn: its batch normalisation mixes the "
        "samples, so its samples are checked as one batch\n"
    )


@pytest.mark.slow
def test_resnet_tiny_with_batch_norm_checks_out_within_the_default_budgets(capsys):
    assert main(["check", "--preset", "resnet_tiny", "--batch-norm"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("check resnet_tiny_bn: a batch of 3 samples, seed 0 (its layers mix the samples); "
                          "derived gradients of the batch's summed loss (per-layer code, summed and mean) "
                          "against reference, finite differences, torch\n")
    assert out.count(" ok\n") == 22  # the loss, x and 20 parameters
    assert "finite differences on a seeded sample of elements: x 200 of 2304, W1 200 of 216," in out
    assert out.rstrip().endswith("all agree")


@pytest.mark.slow
def test_lenet5_with_batch_norm_checks_out(capsys):
    assert main(["check", "--preset", "lenet5", "--batch-norm", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["network"] == "lenet5_bn" and report["batch"] and report["agree"]
    assert [row["name"] for row in report["runs"][0]["rows"]][:5] == ["loss", "x", "W1", "gamma2", "beta2"]


# ---- kinks -------------------------------------------------------------------------------------


def test_a_point_near_a_kink_is_drawn_again():
    # ReLU after batch norm: the drawn batch keeps every ReLU input at least 1e-4 from 0
    net = conv_bn()
    for seed in range(5):
        xs, _, params = verify.draw_point(net, np.random.default_rng(seed), batch=3)
        z = reference.forward(net, xs, params)[1]  # batch norm's output, what the ReLU reads
        assert np.abs(z).min() >= verify.KINK_MARGIN


def test_no_point_clear_of_kinks_is_warned_of_not_hidden(monkeypatch):
    calls = []
    monkeypatch.setattr(verify, "_near_kink", lambda *args: calls.append(1) or True)
    with pytest.warns(NearKink) as caught:
        x, y, _params = verify.draw_point(conv_bn(mode="eval"), np.random.default_rng(0))
    assert len(calls) == verify.DRAWS == 100
    assert x.shape == (2, 3, 3) and y.shape == (2,)
    assert str(caught[0].message) == (
        "no point of conv_bn clear of its kinks in 100 draws (every one had a ReLU input or a max "
        "pool's near-tie within 0.0001): finite differences may straddle a kink, and a difference "
        "they alone show may come from that; try another seed"
    )


def test_the_command_line_shows_the_kink_warning_as_one_line(monkeypatch, capsys):
    monkeypatch.setattr(verify, "_near_kink", lambda *args: True)
    assert main(["check", "--preset", "article", "--samples", "1", "--json"]) == 0
    err = capsys.readouterr().err
    assert err == (
        "symbackprop: warning: no point of article clear of its kinks in 100 draws (every one had a "
        "ReLU input or a max pool's near-tie within 0.0001): finite differences may straddle a kink, "
        "and a difference they alone show may come from that; try another seed\n"
    )
