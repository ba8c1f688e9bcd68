"""Numeric code from the derivation: d.numeric() and the generated module agree with PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import product

import numpy as np
import pytest
from hypothesis import given
from oracle import (
    assert_same_gradients,
    random_point,
    torch_batch_loss_and_grads,
    torch_loss_and_grads,
)
from strategies import CONCRETE_ACTIVATIONS, CONCRETE_LOSSES, networks

import symbackprop as sb
from symbackprop import reference
from symbackprop.cli import main
from symbackprop.numeric import module_source
from symbackprop.verify import draw_point


@pytest.fixture(scope="module")
def article() -> sb.Derivation:
    return sb.presets.article().derive()


# ---- worked example ------------------------------------------------------------------------


def test_article_at_a_point_worked_by_hand(article):
    # x = 0.5 and every weight 1, identity g, sse against y = 0:
    # z1 = 4 · 0.5 = 2, z2 = 4 · 2 = 8, z3 = 4 · 8 = 32, L = (32² + 32²) / 2 = 1024;
    # ∂L/∂z3 = 32, so ∂L/∂w3 = 32 · a2 = 256; ∂L/∂a2 = 2 · 32 = 64, so ∂L/∂w2 = 4 · 64 · 2 = 512;
    # each a1 feeds as many z2 as it has positions: ∂L/∂w1 = Σ_j ∂L/∂a1_j · x = 16 · 64 · 0.5.
    f = article.numeric(g="identity", loss="sse")
    params = {"W1": np.ones((1, 1, 2, 2)), "W2": np.ones((1, 1, 2, 2)), "W3": np.ones((2, 4))}
    out = f(np.full((1, 4, 4), 0.5), np.zeros(2), params)
    assert out.loss == 1024.0
    assert out.grads["W3"].tolist() == [[256.0] * 4] * 2
    assert out.grads["W2"].tolist() == [[[[512.0, 512.0], [512.0, 512.0]]]]
    assert out.grads["W1"].tolist() == [[[[512.0, 512.0], [512.0, 512.0]]]]
    # ∂L/∂z1 = 64 × (how many z2 use that a1): [[64, 128, 64], [128, 256, 128], [64, 128, 64]];
    # ∂L/∂x_k sums w1 · ∂L/∂z1 over the z1 whose window covers x_k.
    assert out.grads["x"][0].tolist() == [
        [64, 192, 192, 64],
        [192, 576, 576, 192],
        [192, 576, 576, 192],
        [64, 192, 192, 64],
    ]


# ---- against PyTorch ---------------------------------------------------------------------------


@pytest.mark.parametrize("g, loss", list(product(CONCRETE_ACTIVATIONS, CONCRETE_LOSSES)))
def test_article_with_each_concrete_choice_matches_torch(article, rng, g, loss):
    net = sb.presets.article().with_choices(g=g, loss=loss)
    x, y, params = draw_point(net, rng)
    out = article.numeric(g=g, loss=loss)(x, y, params)
    assert_same_gradients(out, *torch_loss_and_grads(net, x, y, params))


@given(networks())
def test_numeric_equals_reference_and_torch(net):
    x, y, params = draw_point(net, np.random.default_rng(7))
    out = net.derive().numeric()(x, y, params)
    assert_same_gradients(out, *torch_loss_and_grads(net, x, y, params))
    assert_same_gradients(out, *reference.loss_and_grads(net, x, y, params))


@given(networks())
def test_batch_gives_per_sample_gradients_of_torch_func(net):
    rng = np.random.default_rng(8)
    _, _, params = draw_point(net, rng)
    points = [draw_point(net, rng)[:2] for _ in range(3)]
    x, y = np.stack([p[0] for p in points]), np.stack([p[1] for p in points])
    f = net.derive().numeric()
    batch = f(x, y, params)
    assert_same_gradients(batch, *torch_batch_loss_and_grads(net, x, y, params))
    # The array code (a batch) and the float code (one sample) give the same numbers.
    one = f(x[1], y[1], params)
    assert_same_gradients(one, batch.loss[1], {n: g[1] for n, g in batch.grads.items()}, 1e-13)


@given(networks())
def test_finite_differences_agree_along_a_random_direction(net):
    # Central differences of the derived loss itself, along one random direction of all
    # parameters and x together: accurate to ~1e-8 here, so judged at 1e-6.
    rng = np.random.default_rng(9)
    x, y, params = draw_point(net, rng)
    f = net.derive().numeric()
    out = f(x, y, params)
    step = 1e-6
    dx = rng.normal(size=x.shape)
    dp = {name: rng.normal(size=value.shape) for name, value in params.items()}
    up = f(x + step * dx, y, {n: v + step * dp[n] for n, v in params.items()}).loss
    down = f(x - step * dx, y, {n: v - step * dp[n] for n, v in params.items()}).loss
    predicted = np.sum(out.grads["x"] * dx) + sum(np.sum(out.grads[n] * dp[n]) for n in params)
    assert (up - down) / (2 * step) == pytest.approx(predicted, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("activation, slope", [("relu", 0.0), ("leaky_relu", 0.01)])
def test_kinks_follow_pytorch(activation, slope):
    # z = W·0 + b = 0 exactly; sse against y = 1 gives ∂L/∂a = -1, so ∂L/∂b = -a'(0).
    net = sb.Network((1, 1, 2), [sb.Dense(units=1, bias=True, activation=activation)], "sse")
    x, y, params = np.zeros((1, 1, 2)), np.ones(1), {"W1": np.ones((1, 2)), "b1": np.zeros(1)}
    out = net.derive().numeric()(x, y, params)
    assert out.grads["b1"].tolist() == [-slope]
    assert torch_loss_and_grads(net, x, y, params)[1]["b1"].tolist() == [-slope]
    assert reference.loss_and_grads(net, x, y, params).grads["b1"].tolist() == [-slope]


def test_overflow_in_the_float_code_falls_back_to_the_array_code(article):
    # σ(-4000): math.exp(4000) overflows where numpy gives inf and σ = 0 exactly.
    f = article.numeric(g="sigmoid", loss="sse")
    params = {"W1": -np.ones((1, 1, 2, 2)), "W2": np.ones((1, 1, 2, 2)), "W3": np.ones((2, 4))}
    x, y = np.full((1, 4, 4), 1000.0), np.zeros(2)
    with np.errstate(over="ignore"):
        one, batch = f(x, y, params), f(x[None], y[None], params)
    assert np.isfinite(one.loss)
    assert_same_gradients(one, batch.loss[0], {n: g[0] for n, g in batch.grads.items()}, 0)


# ---- errors a user can act on ----------------------------------------------------------------


@pytest.fixture(scope="module")
def good(article):
    net = sb.presets.article().with_choices(g="sigmoid", loss="sse")
    x, y, params = random_point(net, np.random.default_rng(0))
    return article.numeric(g="sigmoid", loss="sse"), x, y, params


def test_a_generic_network_asks_for_its_choices(article):
    with pytest.raises(ValueError, match=r"leaves its activation g generic; .* with g=.*sigmoid"):
        article.numeric(loss="sse")
    with pytest.raises(
        ValueError, match=r"leaves its loss L generic; .* with loss=.*cross_entropy"
    ):
        article.numeric(g="tanh")
    with pytest.raises(ValueError, match=r"g='swish' is not a known activation g; choose one of"):
        article.numeric(g="swish", loss="sse")


def test_a_concrete_network_refuses_a_choice():
    d = sb.Network((1, 2, 2), [sb.Dense(units=1, activation="tanh")], "sse").derive()
    with pytest.raises(ValueError, match=r"g='relu': this network has no generic activation g"):
        d.numeric(g="relu")


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda x, y, p: (x[0], y, p),
            r"x has shape \(4, 4\); expected \(1, 4, 4\) for one sample or \(B, 1, 4, 4\)",
        ),
        (
            lambda x, y, p: (x, y[:1], p),
            r"y has shape \(1,\); expected \(2,\) to go with x of shape \(1, 4, 4\)",
        ),
        (lambda x, y, p: (x[None], y, p), r"y has shape \(2,\); expected \(1, 2\)"),
        (
            lambda x, y, p: (x, y, {**p, "W2": p["W2"][0]}),
            r"params\['W2'\] has shape \(1, 2, 2\); expected \(1, 1, 2, 2\)",
        ),
        (
            lambda x, y, p: (x, y, {"W1": p["W1"], "W3": p["W3"]}),
            r"params is missing 'W2' of shape \(1, 1, 2, 2\)",
        ),
        (
            lambda x, y, p: (x, y, {**p, "b1": np.zeros(1)}),
            r"params has 'b1', which this network does not have; expected W1 \(1, 1, 2, 2\)",
        ),
        (lambda x, y, p: (x * np.nan, y, p), r"x has non-finite values"),
        (lambda x, y, p: (x, y, {**p, "W3": p["W3"] * np.inf}), r"params\['W3'\] has non-finite"),
        (
            lambda x, y, p: (x, y, {**p, "W1": "ones"}),
            r"params\['W1'\] must be an array of numbers",
        ),
    ],
)
def test_bad_arguments_name_what_is_wrong_and_what_was_expected(good, change, message):
    f, x, y, params = good
    with pytest.raises(ValueError, match=message):
        f(*change(x, y, params))


def test_huge_finite_values_are_not_mistaken_for_non_finite(good):
    f, _, y, params = good
    huge = np.full((1, 4, 4), 1e308)  # their sum overflows; every value is still finite
    with np.errstate(over="ignore", invalid="ignore"):
        assert f(huge, y, params).grads["x"].shape == (1, 4, 4)


# ---- the generated module ----------------------------------------------------------------------


def test_the_generated_module_is_the_program_written_out(article):
    source = module_source(article)
    assert (
        "    z1_1 = W1_0_0_0_0*x_1 + W1_0_0_0_1*x_2 + W1_0_0_1_0*x_5 + W1_0_0_1_1*x_6\n" in source
    )
    assert "    a1_1 = g(z1_1)\n" in source
    assert "    dL_dz3_1 = dL_da3_1*g_prime(z3_1, a3_1)\n" in source  # a = g(z) passed along
    assert "        a2_1*dL_dz3_1,  # W3[0, 0]\n" in source
    assert "import sympy" not in source and "symbackprop" not in source.split('"""', 2)[2]
    assert max(len(line) for line in source.splitlines()) <= 100


def test_a_softmax_partition_sum_is_computed_once():
    net = sb.Network((1, 1, 3), [sb.Dense(units=3)], "cross_entropy")
    program = module_source(net.derive()).split("def _program", 1)[1]
    assert program.count("exp(a1_1)") == 1


FRESH_PROCESS = """
import importlib.util, json, sys
import numpy as np
sys.modules["sympy"] = None  # importing sympy (or symbackprop) now fails
sys.modules["symbackprop"] = None
spec = importlib.util.spec_from_file_location("gradients", sys.argv[1])
gradients = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gradients)
data = np.load(sys.argv[2])
params = {name: data[name] for name in gradients.PARAMETERS}
one = gradients.loss_and_grads(data["x"][0], data["y"][0], params, g="tanh", loss="mse")
batch = gradients.loss_and_grads(data["x"], data["y"], params, g="tanh", loss="mse")
print(json.dumps({
    "one": [one.loss, {n: v.tolist() for n, v in one.grads.items()}],
    "batch": [batch.loss.tolist(), {n: v.tolist() for n, v in batch.grads.items()}],
}))
"""


def test_the_exported_module_gives_the_same_numbers_in_a_fresh_process_without_sympy(
    article, tmp_path, rng
):
    path = article.export_module(tmp_path / "gradients.py")
    net = sb.presets.article().with_choices(g="tanh", loss="mse")
    _, _, params = random_point(net, rng)
    x, y = rng.normal(size=(4, 1, 4, 4)), rng.normal(size=(4, 2))
    np.savez(tmp_path / "point.npz", x=x, y=y, **params)
    run = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(path), str(tmp_path / "point.npz")],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(run.stdout)
    f = article.numeric(g="tanh", loss="mse")
    one, batch = f(x[0], y[0], params), f(x, y, params)
    assert result["one"][0] == one.loss
    assert result["batch"][0] == batch.loss.tolist()
    for name in one.grads:
        assert result["one"][1][name] == one.grads[name].tolist()
        assert result["batch"][1][name] == batch.grads[name].tolist()


def test_derive_writes_gradients_py_beside_derivation_json(tmp_path, capsys):
    assert main(["derive", "--preset", "article", "-o", str(tmp_path)]) == 0
    source = (tmp_path / "gradients.py").read_text(encoding="utf-8")
    assert (tmp_path / "derivation.json").exists()
    assert 'out = loss_and_grads(x, y, params, g="sigmoid", loss="sse")' in source
    assert "g=, one of identity, sigmoid, tanh, relu, softplus, leaky_relu" in source
