"""verify.check: the derived gradients against reference, finite differences and torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from graphs import GRAPHS
from oracle import assert_same_gradients, sign_flipped, torch_loss_and_grads

import symbackprop as sb
from symbackprop import reference, verify
from symbackprop.verify import (
    KINK_MARGIN,
    Comparison,
    check,
    choices,
    draw_point,
    finite_differences,
)

SMALL = sb.Network(
    (1, 3, 3),
    [sb.Conv2D(kernel_size=2, out_channels=2, bias=True, activation="tanh"), sb.Dense(units=2)],
    "mse",
    name="small",
)


def test_the_article_agrees_with_every_method_for_every_choice():
    report = check(sb.presets.article().derive(), samples=2, seed=0)
    assert report.agree
    assert report.methods == ["reference", "finite differences", "torch"]
    assert [(run.g, run.loss) for run in report.runs] == [
        ("identity", "sse"),
        ("sigmoid", "mse"),
        ("tanh", "cross_entropy"),
        ("relu", "binary_cross_entropy"),
        ("softplus", "sse"),
        ("leaky_relu", "mse"),
    ]
    rows = report.runs[0].rows
    assert [row.name for row in rows] == ["loss", "x", "W1", "W2", "W3"]
    assert set(rows[0].comparisons) == {"reference", "torch"}  # no finite differences of L itself
    assert rows[2].comparisons["torch"].rel_error < 1e-12


def test_a_flipped_sign_is_caught_by_every_method():
    report = check(sign_flipped(SMALL, "W1", (1, 0, 0, 1)), samples=1, seed=0)
    assert not report.agree
    rows = {row.name: row for row in report.runs[0].rows}
    assert rows["W1"].disagreeing == ["reference", "finite differences", "torch"]
    assert rows["W1"].comparisons["reference"].rel_error > 0.01
    assert [name for name, row in rows.items() if not row.agree] == ["W1"]


class _Transposed(sb.Derivation):
    """A test double: W1's kernel gradient transposed (kh and kw swapped) in one of the codes
    ``check`` runs — the per-layer or the per-node code, per sample or summed over a batch."""

    wrong_code: tuple[str, str | None] = ("layers", None)

    def numeric(self, g=None, loss=None, reduce=None, style=None, backend="numpy", dtype="float64"):
        f = super().numeric(g=g, loss=loss, reduce=reduce, style=style, backend=backend, dtype=dtype)
        if (style, reduce) != self.wrong_code:
            return f

        def transposed(x, y, params):
            out = f(x, y, params)
            return reference.Result(out.loss, {**out.grads, "W1": np.swapaxes(out.grads["W1"], -1, -2)})

        return transposed


@pytest.mark.parametrize(
    ("wrong_code", "caught_by"),
    [
        (("layers", None), ["reference", "finite differences", "torch"]),
        (("nodes", None), ["reference", "finite differences", "torch"]),
        (("layers", "sum"), ["reference"]),  # the batch of all the points: the reference alone
        (("nodes", "sum"), ["reference"]),
    ],
    ids=["per-layer", "per-node", "per-layer summed batch", "per-node summed batch"],
)
def test_a_transposed_kernel_in_any_code_checked_is_caught(wrong_code, caught_by):
    d = _Transposed(SMALL)
    d.wrong_code = wrong_code
    report = check(d, samples=2, seed=0)
    rows = {row.name: row for row in report.runs[0].rows}
    assert rows["W1"].disagreeing == caught_by
    assert rows["W1"].comparisons["reference"].rel_error > 0.01
    assert [name for name, row in rows.items() if not row.agree] == ["W1"]


def test_a_flipped_input_gradient_is_caught_too():
    report = check(sign_flipped(SMALL, "x", (0, 1, 1)), samples=1, seed=1)
    assert [row.name for row in report.runs[0].rows if not row.agree] == ["x"]


def test_choices_pair_each_generic_option_without_the_full_product():
    article = sb.presets.article()
    assert len(choices(article)) == 6  # 6 activations, the 4 losses cycled
    g_only = article.with_choices(loss="sse")
    assert choices(g_only)[:2] == [("identity", None), ("sigmoid", None)]
    loss_only = article.with_choices(g="relu")
    assert choices(loss_only) == [
        (None, "sse"), (None, "mse"), (None, "cross_entropy"), (None, "binary_cross_entropy"),
    ]
    assert choices(SMALL) == [(None, None)]


def test_finite_differences_match_the_reference_gradient(rng):
    x, y, params = draw_point(SMALL, rng)
    exact = reference.loss_and_grads(SMALL, x, y, params)
    approx = finite_differences(SMALL, x, y, params)
    assert approx.loss is None
    for name, grad in exact.grads.items():
        np.testing.assert_allclose(approx.grads[name], grad, atol=1e-8)


def test_drawn_points_stay_off_the_kinks():
    net = sb.Network(
        (1, 4, 4), [sb.Conv2D(kernel_size=2, activation="relu"), sb.Dense(units=1)], "sse"
    )
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, _, params = draw_point(net, rng)
        z = reference.forward(net, x[None], params)[0]
        assert np.all((np.abs(z) >= KINK_MARGIN) | (z == 0))


def test_drawn_points_are_set_by_the_seed():
    first = draw_point(SMALL, np.random.default_rng(5))
    again = draw_point(SMALL, np.random.default_rng(5))
    assert all(np.array_equal(a, b) for a, b in zip(first[:2], again[:2]))
    assert first[1].shape == (2,) and first[2]["W1"].shape == (2, 1, 2, 2)


def test_targets_for_cross_entropy_are_probabilities():
    net = sb.Network(SMALL.input_shape, list(SMALL.layers), "cross_entropy")
    _, y, _ = draw_point(net, np.random.default_rng(0))
    assert y.min() >= 0 and y.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "abs_error, scale, agrees",
    [
        (0.0, 0.0, True),
        (1e-13, 0.0, True),
        (1e-10, 1.0, True),
        (1e-8, 1.0, False),
        (2.0, 1.0, False),
    ],
)
def test_agreement_is_judged_against_the_largest_magnitude(abs_error, scale, agrees):
    assert Comparison(abs_error, scale).agrees("reference") is agrees


def test_relative_error_of_an_all_zero_gradient():
    assert Comparison(0.0, 0.0).rel_error == 0.0
    assert Comparison(1e-3, 0.0).rel_error == float("inf")
    assert Comparison(1e-3, 0.5).rel_error == 2e-3


def test_the_report_is_plain_data():
    data = json.loads(json.dumps(check(SMALL.derive(), samples=1).to_dict()))
    assert data["agree"] is True and data["network"] == "small" and data["samples"] == 1
    assert data["tolerances"]["reference"] == {"rtol": 1e-9, "atol": 1e-12}
    w1 = data["runs"][0]["rows"][2]
    assert w1["name"] == "W1" and set(w1["errors"]) == {"reference", "finite differences", "torch"}


def test_torch_in_verify_matches_the_test_oracle(rng):
    from symbackprop.verify import torch_loss_and_grads as verify_torch

    x, y, params = draw_point(SMALL, rng)
    mine = verify_torch(SMALL, x, y, params)
    loss, grads = torch_loss_and_grads(SMALL, x, y, params)
    assert mine.loss == loss
    assert all(np.array_equal(mine.grads[n], grads[n]) for n in grads)


@pytest.mark.parametrize(("g", "loss"), [("softplus", "cross_entropy"), ("leaky_relu", "mse")])
def test_torch_in_verify_agrees_with_the_reference_for_a_chosen_g_and_loss(rng, g, loss):
    from symbackprop.verify import torch_loss_and_grads as verify_torch

    article = sb.presets.article()
    x, y, params = draw_point(article, rng, g, loss)
    mine = verify_torch(article, x, y, params, g, loss)
    exact = reference.loss_and_grads(article, x, y, params, g=g, loss=loss)
    assert_same_gradients(mine, exact.loss, exact.grads)
    other = reference.loss_and_grads(article, x, y, params, g="sigmoid", loss=loss)
    assert abs(mine.grads["W1"] - other.grads["W1"]).max() > 1e-3  # the choice of g matters


def test_samples_must_be_positive_and_the_seed_not_negative():
    with pytest.raises(ValueError, match="samples must be at least 1"):
        check(SMALL.derive(), samples=0)
    with pytest.raises(ValueError, match="seed must be 0 or more, got -1"):
        check(SMALL.derive(), samples=1, seed=-1)
    with pytest.raises(TypeError):
        check(SMALL.derive(), samples=1.5)


def test_without_torch_the_other_methods_still_judge(monkeypatch):
    monkeypatch.setattr(verify, "_torch", lambda: None)  # as if torch were not installed
    report = check(SMALL.derive(), samples=1)
    assert report.methods == ["reference", "finite differences"]
    assert report.skipped == {"torch": "not installed"}
    assert report.agree and "torch" not in report.runs[0].rows[1].comparisons


def test_large_parameters_get_finite_differences_on_a_seeded_sample(monkeypatch):
    monkeypatch.setattr(verify, "FD_ELEMENTS", 5)  # SMALL's x (9), W1 (8) and W2 (2x8) are larger
    report = check(SMALL.derive(), samples=1, seed=3)
    assert report.agree
    assert report.sampled == {"x": (5, 9), "W1": (5, 8), "W2": (5, 16)}
    assert report.to_dict()["finite_differences_sampled"]["W2"] == {"elements": 5, "of": 16}
    x, y, params = draw_point(SMALL, np.random.default_rng(0))
    chosen = {"W1": np.array([0, 7])}
    approx = finite_differences(SMALL, x, y, params, elements=chosen)
    exact = reference.loss_and_grads(SMALL, x, y, params).grads["W1"].ravel()
    assert np.isnan(approx.grads["W1"].ravel()[1:7]).all()  # the elements not looked at
    np.testing.assert_allclose(approx.grads["W1"].ravel()[[0, 7]], exact[[0, 7]], atol=1e-8)


def test_both_codes_are_checked_on_a_small_network_the_per_layer_one_on_a_large_one(monkeypatch):
    assert check(SMALL.derive(), samples=1).styles == ["layers", "nodes"]
    monkeypatch.setattr(verify, "NODES_LIMIT", 10)  # SMALL's graph as if it were large
    assert check(SMALL.derive(), samples=1).styles == ["layers"]


@pytest.mark.slow
def test_lenet5_checks_out_with_sampled_finite_differences():
    report = check(sb.presets.lenet5().derive(), samples=1, seed=0)
    assert report.agree and report.styles == ["layers"]
    assert report.sampled == {
        "x": (200, 1024), "W3": (200, 2400), "W5": (200, 48000), "W6": (200, 10080),
        "W7": (200, 840),
    }


# ---- max pooling: near-ties are kinks too ----------------------------------------------------


def test_a_max_pool_window_whose_top_two_values_nearly_tie_is_a_kink():
    pool = sb.MaxPool2D(kernel_size=2)
    window = np.array([[[[1.0, 0.5], [-1.0, 0.0]]]])  # (B, C, H, W): one window
    assert not pool.reference_near_kink(window, KINK_MARGIN)
    near = window.copy()
    near[0, 0, 1, 1] = 1.0 - 1e-6  # within the margin below the maximum
    assert pool.reference_near_kink(near, KINK_MARGIN)
    exact = window.copy()
    exact[0, 0, 1, 1] = 1.0  # an exact tie stays put under a small step of another value
    assert not pool.reference_near_kink(exact, KINK_MARGIN)
    # padding (−∞) never ties; operations without branches have no kinks
    padded = sb.MaxPool2D(kernel_size=3, stride=1, padding=1)
    assert not padded.reference_near_kink(np.full((1, 1, 1, 1), -5.0), KINK_MARGIN)
    assert not sb.AvgPool2D(kernel_size=2).reference_near_kink(near, KINK_MARGIN)
    assert not sb.Conv2D(kernel_size=2).reference_near_kink(near, KINK_MARGIN)


class _NearTieFirst:
    """A stand-in generator whose first input has a near-tie in a max pool's window; every
    other draw comes from a real generator."""

    def __init__(self, first: np.ndarray) -> None:
        self.first, self.rng = first, np.random.default_rng(0)

    def normal(self, size=None):
        if self.first is not None and size == self.first.shape:
            first, self.first = self.first, None
            return first
        return self.rng.normal(size=size)

    def dirichlet(self, alpha):
        return self.rng.dirichlet(alpha)


def test_drawn_points_stay_off_near_ties_of_max_pooling():
    pool = sb.MaxPool2D(kernel_size=2)
    net = sb.Network((1, 2, 2), [pool, sb.Dense(units=1)], "sse")
    near_tie = np.array([[[0.3, 0.3 + 1e-6], [-1.0, 0.2]]])
    x, _, _ = draw_point(net, _NearTieFirst(near_tie))
    assert not np.array_equal(x, near_tie)  # drawn again
    assert not pool.reference_near_kink(x[None], KINK_MARGIN)


def test_networks_with_max_pooling_check_out():
    net = sb.Network((1, 5, 5), [
        sb.Conv2D(out_channels=2, kernel_size=2, bias=True, activation="relu"),
        sb.MaxPool2D(kernel_size=2, stride=1),
        sb.Dense(units=2),
    ], "cross_entropy", name="pooled")
    report = check(net.derive(), samples=2, seed=3)
    assert report.agree
    assert [row.name for row in report.runs[0].rows] == ["loss", "x", "W1", "b1", "W3"]


# ---- graphs: kinks wherever a layer reads from, and every code checked -------------------------


def _pools_of_two_layers() -> sb.Network:
    """x → a 1x1 conv h (layer 1) → a 1x1 conv of h (2); a max pool of h (3), one of layer 2
    (4), added (5)."""
    x = sb.Input((1, 2, 2))
    h = sb.Conv2D(kernel_size=1)(x)
    scaled = sb.Conv2D(kernel_size=1)(h)
    pooled = sb.Add()(sb.MaxPool2D(kernel_size=2)(h), sb.MaxPool2D(kernel_size=2)(scaled))
    return sb.Network(inputs=x, outputs=sb.Dense(units=1)(pooled), loss="sse")


def test_a_max_pool_is_judged_on_the_layer_it_reads_not_the_one_before_it():
    net = _pools_of_two_layers()
    assert net.sources[2:4] == ((1,), (2,))
    params = {"W1": np.ones((1, 1, 1, 1)), "W2": np.full((1, 1, 1, 1), 3.0), "W6": np.ones((1, 1))}
    near_tie = np.array([[[0.3, 0.3 + 5e-5], [-1.0, 0.2]]])  # h = x: a near-tie under pool 3
    assert verify._near_kink(net, near_tie, params, None)
    # layer 2, 3x, has a gap of 1.5e-4: read there, pool 3's near-tie would be missed
    assert not net.layers[2].reference_near_kink(3 * near_tie[None], KINK_MARGIN)
    apart = np.array([[[0.3, 0.5], [-1.0, 0.2]]])
    assert not verify._near_kink(net, apart, params, None)


def _relu_after_an_addition() -> sb.Network:
    """relu(x + conv(x)): the ReLU a layer of its own, on what the addition reads."""
    x = sb.Input((1, 2, 2))
    out = sb.ReLU()(sb.Add()(x, sb.Conv2D(kernel_size=1)(x)))
    return sb.Network(inputs=x, outputs=sb.Dense(units=1)(out), loss="sse")


def test_an_activation_layer_near_its_bend_is_a_kink():
    net = _relu_after_an_addition()
    params = {"W1": np.ones((1, 1, 1, 1)), "W4": np.ones((1, 4))}
    near = np.array([[[3e-5, 0.5], [-1.0, 0.2]]])  # the ReLU reads 2x: 6e-5 from its bend
    assert verify._near_kink(net, near, params, None)
    assert not verify._near_kink(net, near * 10, params, None)


def test_an_activation_layer_reading_exact_zeros_is_no_kink():
    # max pools of a ReLU's zeros are exactly 0 whatever the step: never redrawn for them
    net = sb.Network((1, 2, 2), [
        sb.Conv2D(out_channels=2, kernel_size=1, activation="relu"), sb.MaxPool2D(kernel_size=2),
        sb.ReLU(), sb.Dense(units=1),
    ], loss="sse")
    params = {"W1": np.array([1.0, -1.0]).reshape(2, 1, 1, 1), "W4": np.ones((1, 2))}
    x = np.array([[[0.5, 0.25], [1.0, 2.0]]])  # channel 2, -x, is all negative: pooled to 0
    pooled = reference.forward(net, x[None], params)[1]
    assert pooled.ravel().tolist() == [2.0, 0.0]
    assert not verify._near_kink(net, x, params, None)
    x[0, 1, 1] = 5e-5  # channel 1's maximum, then 5e-5 into the ReLU layer: near
    x[0, 0] = [-1.0, -2.0]
    assert verify._near_kink(net, x, params, None)


def test_an_activation_layer_g_is_judged_as_the_function_chosen():
    net = sb.Network((1, 2, 2), [sb.Conv2D(kernel_size=1), sb.Activation("g"), sb.Dense(units=1)], loss="sse")
    params = {"W1": np.ones((1, 1, 1, 1)), "W3": np.ones((1, 4))}
    near = np.array([[[5e-5, 0.5], [-1.0, 0.2]]])
    assert verify._near_kink(net, near, params, "relu")
    assert not verify._near_kink(net, near, params, "tanh")  # smooth: no kink
    x, _, drawn = draw_point(net, np.random.default_rng(0), "relu")
    assert not verify._near_kink(net, x, drawn, "relu")


@pytest.mark.parametrize("case", list(GRAPHS))
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_every_graph_checks_out_in_both_codes(case):
    report = check(GRAPHS[case]().derive(), samples=1, seed=0)
    assert report.styles == ["layers", "nodes"]
    assert report.agree, case


class _OneReaderForgotten(sb.Derivation):
    """A test double: the per-node program forgets what the last layer reading a fork sends
    back (the article's rule (20) without its sum)."""

    def _consumer_terms(self, number, source):
        readers = self.network.consumers(number)
        kept = readers[:-1] if len(readers) > 1 else readers
        return [term for reader in kept for term in self.backward(reader).input_terms.get(source, [])]


def test_a_fork_summed_over_one_reader_too_few_is_caught():
    net = GRAPHS["residual, identity shortcut"]()
    assert net.consumers(1) == (2, 3)  # h feeds the block and the shortcut's addition
    report = check(_OneReaderForgotten(net), samples=1, seed=0)
    rows = {row.name: row for row in report.runs[0].rows}
    # the per-node program is wrong before the fork; the per-layer code, written apart, is right
    assert [name for name, row in rows.items() if not row.agree] == ["x", "W1"]
    assert rows["W1"].disagreeing == ["reference", "finite differences", "torch"]
