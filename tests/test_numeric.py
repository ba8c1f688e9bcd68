"""Numeric code from the derivation: d.numeric() and the generated module agree with PyTorch,
in both styles (per node, per layer), on chains and on graphs (tests/graphs.py, resnet_tiny);
the API, its errors and the exported module."""

from __future__ import annotations

import ast
import gc
import json
import linecache
import subprocess
import sys
import threading
import traceback
from itertools import product
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from graphs import GRAPHS
from hypothesis import given
from oracle import (
    assert_same_gradients,
    random_point,
    torch_batch_loss_and_grads,
    torch_loss_and_grads,
    torch_reduced_loss_and_grads,
)
from strategies import CONCRETE_ACTIVATIONS, CONCRETE_LOSSES, networks

import symbackprop as sb
from symbackprop import numeric, reference
from symbackprop.cli import main
from symbackprop.numeric import module_source
from symbackprop.verify import draw_point


@pytest.fixture(scope="module")
def article() -> sb.Derivation:
    return sb.presets.article().derive()


# ---- worked example ------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["nodes", "layers", None])
def test_article_at_a_point_worked_by_hand(article, style):
    # x = 0.5 and every weight 1, identity g, sse against y = 0:
    # z1 = 4 · 0.5 = 2, z2 = 4 · 2 = 8, z3 = 4 · 8 = 32, L = (32² + 32²) / 2 = 1024;
    # ∂L/∂z3 = 32, so ∂L/∂w3 = 32 · a2 = 256; ∂L/∂a2 = 2 · 32 = 64, so ∂L/∂w2 = 4 · 64 · 2 = 512;
    # each a1 feeds as many z2 as it has positions: ∂L/∂w1 = Σ_j ∂L/∂a1_j · x = 16 · 64 · 0.5.
    f = article.numeric(g="identity", loss="sse", style=style)
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


@pytest.mark.parametrize("style", ["nodes", "layers"])
@pytest.mark.parametrize("g, loss", list(product(CONCRETE_ACTIVATIONS, CONCRETE_LOSSES)))
def test_article_with_each_concrete_choice_matches_torch(article, rng, g, loss, style):
    net = sb.presets.article().with_choices(g=g, loss=loss)
    x, y, params = draw_point(net, rng)
    out = article.numeric(g=g, loss=loss, style=style)(x, y, params)
    assert_same_gradients(out, *torch_loss_and_grads(net, x, y, params))


@given(networks())
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_numeric_equals_reference_and_torch(net):
    x, y, params = draw_point(net, np.random.default_rng(7))
    d = net.derive()
    for style in ("nodes", "layers"):
        out = d.numeric(style=style)(x, y, params)
        assert_same_gradients(out, *torch_loss_and_grads(net, x, y, params))
        assert_same_gradients(out, *reference.loss_and_grads(net, x, y, params))


@given(networks())
def test_batch_gives_per_sample_gradients_of_torch_func(net):
    rng = np.random.default_rng(8)
    _, _, params = draw_point(net, rng)
    points = [draw_point(net, rng)[:2] for _ in range(3)]
    x, y = np.stack([p[0] for p in points]), np.stack([p[1] for p in points])
    f = net.derive().numeric(style="nodes")
    batch = f(x, y, params)
    assert_same_gradients(batch, *torch_batch_loss_and_grads(net, x, y, params))
    # The array code (a batch) and the float code (one sample) give the same numbers.
    one = f(x[1], y[1], params)
    assert_same_gradients(one, batch.loss[1], {n: g[1] for n, g in batch.grads.items()}, 1e-13)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("size", [0, 1, 5])
def test_the_per_node_program_reduces_a_batch_as_torch(article, rng, reduce, size):
    net = sb.presets.article().with_choices(g="tanh", loss="cross_entropy")
    _, _, params = draw_point(net, rng)
    x, y = rng.normal(size=(size, 1, 4, 4)), rng.dirichlet(np.ones(2), size=size)
    out = article.numeric(g="tanh", loss="cross_entropy", reduce=reduce, style="nodes")(x, y, params)
    expected = torch_reduced_loss_and_grads(net, x, y, params, reduce)
    if size == 0:
        assert out.loss == 0.0 if reduce == "sum" else np.isnan(out.loss)
        assert {n: g.shape for n, g in out.grads.items()} == {
            n: g.shape for n, g in expected[1].items()
        }
    else:
        assert_same_gradients(out, *expected)


def test_an_empty_batch_gives_empty_per_sample_arrays_in_both_styles(article):
    for style in ("nodes", "layers"):
        f = article.numeric(g="relu", loss="sse", style=style)
        params = {"W1": np.ones((1, 1, 2, 2)), "W2": np.ones((1, 1, 2, 2)), "W3": np.ones((2, 4))}
        out = f(np.zeros((0, 1, 4, 4)), np.zeros((0, 2)), params)
        assert out.loss.shape == (0,)
        assert {n: g.shape for n, g in out.grads.items()} == {
            "x": (0, 1, 4, 4), "W1": (0, 1, 1, 2, 2), "W2": (0, 1, 1, 2, 2), "W3": (0, 2, 4)
        }


def test_the_default_runs_the_per_node_program_on_one_sample_of_a_small_network(
    article, monkeypatch
):
    from symbackprop.numeric import compiled

    module = compiled(article)  # the article is small: both programs
    ran = []
    for name in ("_nodes", "_layers"):
        program = getattr(module, name)
        monkeypatch.setattr(
            module, "_PROGRAMS",
            module._PROGRAMS._replace(**{name[1:]: lambda *a, _p=program, _n=name: ran.append(_n) or _p(*a)}),
        )
    f = article.numeric(g="sigmoid", loss="sse")
    params = {"W1": np.ones((1, 1, 2, 2)), "W2": np.ones((1, 1, 2, 2)), "W3": np.ones((2, 4))}
    f(np.zeros((1, 4, 4)), np.zeros(2), params)
    one = f(np.zeros((1, 1, 4, 4)), np.zeros((1, 2)), params)  # a batch of one too
    assert one.grads["W1"].shape == (1, 1, 1, 2, 2)
    f(np.zeros((2, 1, 4, 4)), np.zeros((2, 2)), params)
    assert ran == ["_nodes", "_nodes", "_layers"]
    lenet = sb.presets.lenet5().derive()
    assert "def _nodes(" not in module_source(lenet)


def test_per_sample_gradients_of_a_large_batch_run_the_per_node_program_on_the_smallest_networks(
    article, monkeypatch
):
    from symbackprop.numeric import NODES_PER_SAMPLE, compiled

    module = compiled(article)  # 77 edges: per sample from 1024 on the per-node program
    assert module._PROGRAMS.nodes_from == NODES_PER_SAMPLE[0] == 1024
    ran = []
    for name in ("_nodes", "_layers"):
        program = getattr(module, name)
        monkeypatch.setattr(
            module, "_PROGRAMS",
            module._PROGRAMS._replace(**{name[1:]: lambda *a, _p=program, _n=name: ran.append(_n) or _p(*a)}),
        )
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(1024, 1, 4, 4)), rng.normal(size=(1024, 2))
    params = {"W1": rng.normal(size=(1, 1, 2, 2)), "W2": rng.normal(size=(1, 1, 2, 2)), "W3": rng.normal(size=(2, 4))}
    per_sample = article.numeric(g="sigmoid", loss="sse")(x, y, params)
    summed = article.numeric(g="sigmoid", loss="sse", reduce="sum")(x, y, params)
    fewer = article.numeric(g="sigmoid", loss="sse")(x[:1023], y[:1023], params)
    assert ran == ["_nodes", "_layers", "_layers"]
    # the same numbers either way
    np.testing.assert_allclose(per_sample.grads["W1"].sum(axis=0), summed.grads["W1"], rtol=1e-12)
    np.testing.assert_allclose(per_sample.grads["W3"][:1023], fewer.grads["W3"], rtol=1e-12)
    np.testing.assert_allclose(per_sample.grads["x"], summed.grads["x"], rtol=1e-9, atol=1e-15)
    assert per_sample.loss.shape == (1024,) and per_sample.grads["W2"].shape == (1024, 1, 1, 2, 2)
    assert compiled(sb.presets.lenet5().derive())._PROGRAMS.nodes_from == 0  # one program


@given(networks())
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
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


@pytest.mark.parametrize("g", ["sigmoid", "softplus", "tanh"])
def test_far_out_inputs_stay_finite_and_the_float_and_array_code_agree(article, g):
    # z1 = -4000 and z1 = +4000: exp(4000) would overflow; the runtime's forms never form it.
    params = {"W1": -np.ones((1, 1, 2, 2)), "W2": np.ones((1, 1, 2, 2)), "W3": np.ones((2, 4))}
    params["W1"][0, 0, 0, 0] = 1.0
    x, y = np.full((1, 4, 4), 1000.0), np.array([0.0, 1.0])
    for style in ("nodes", "layers"):
        f = article.numeric(g=g, loss="cross_entropy", style=style)
        with np.errstate(over="raise", invalid="raise", divide="raise"):  # not even a warning
            one, batch = f(x, y, params), f(x[None], y[None], params)
        assert np.isfinite(one.loss) and all(np.isfinite(v).all() for v in one.grads.values())
        assert_same_gradients(one, batch.loss[0], {n: v[0] for n, v in batch.grads.items()}, 1e-15)


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
    source = module_source(article, style="nodes")
    assert (
        "    z1_1 = W1_0_0_0_0*x_1 + W1_0_0_0_1*x_2 + W1_0_0_1_0*x_5 + W1_0_0_1_1*x_6\n" in source
    )
    assert "    a1_1 = g(z1_1)\n" in source
    assert "    dL_dz3_1 = dL_da3_1*g_prime(z3_1, a3_1)\n" in source  # a = g(z) passed along
    assert "        a2_1*dL_dz3_1,  # W3[0, 0]\n" in source
    assert max(len(line) for line in source.splitlines()) <= 100


@pytest.mark.parametrize("net", [sb.presets.article(), sb.presets.lenet5()], ids=["article", "lenet5"])
def test_generated_modules_import_numpy_and_the_standard_library_only(net):
    for style in ("nodes", "layers") if net.name == "article" else ("layers",):
        tree = ast.parse(module_source(net.derive(), style=style))
        imported = {
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in tree.body
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        }
        standard = {"concurrent.futures", "math", "os", "threading", "collections.abc", "typing"}
        assert imported <= standard | {"numpy", "numpy.lib.stride_tricks"}
        # threadpoolctl, if installed, lets chunks of a batch run on threads; only tried
        optional = [node for node in ast.walk(tree) if isinstance(node, ast.Try)]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "threadpoolctl":
                guard = next(t for t in optional if node in t.body)
                assert [h.type.id for h in guard.handlers] == ["ImportError"]


def test_the_loss_is_a_call_to_the_stable_loss_of_the_runtime():
    net = sb.Network((1, 1, 3), [sb.Dense(units=3)], "cross_entropy")
    program = module_source(net.derive(), style="nodes").split("def _nodes", 1)[1]
    assert "    L = loss_value(out, targets, 3)\n" in program  # 3 channels: the softmax's
    assert "    dL_da1_1, dL_da1_2, dL_da1_3 = loss_gradient(out, targets, 3)\n" in program
    assert "exp(" not in program.split("# ---- runtime helpers")[0]


FRESH_PROCESS = """
import importlib.util, json, sys
import numpy as np
sys.modules["sympy"] = None  # importing sympy (or symbackprop) now fails
sys.modules["symbackprop"] = None
sys.modules["threadpoolctl"] = None  # optional: without it, a batch's chunks run in turn
spec = importlib.util.spec_from_file_location("gradients", sys.argv[1])
gradients = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gradients)
data = np.load(sys.argv[2])
choices = json.loads(sys.argv[3])
params = {name: data[name] for name in gradients.PARAMETERS}
results = {}
for reduce in (None, "sum", "mean"):
    for name, x, y in [("one", data["x"][0], data["y"][0]), ("batch", data["x"], data["y"])]:
        out = gradients.loss_and_grads(x, y, params, reduce, **choices)
        results[f"{name} {reduce}"] = [
            np.asarray(out.loss).tolist(), {n: v.tolist() for n, v in out.grads.items()}
        ]
print(json.dumps(results))
"""


def run_in_a_fresh_process(module: Path, point: Path, choices: dict) -> dict:
    """FRESH_PROCESS's results: the exported module on the point's one sample and batch."""
    run = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(module), str(point), json.dumps(choices)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(run.stdout)


@pytest.mark.parametrize("style", ["nodes", "layers"])
def test_the_exported_module_gives_the_same_numbers_in_a_fresh_process_without_sympy(
    article, tmp_path, rng, style
):
    path = article.export_module(tmp_path / "gradients.py", style=style)
    net = sb.presets.article().with_choices(g="tanh", loss="mse")
    _, _, params = random_point(net, rng)
    x, y = rng.normal(size=(4, 1, 4, 4)), rng.normal(size=(4, 2))
    np.savez(tmp_path / "point.npz", x=x, y=y, **params)
    result = run_in_a_fresh_process(path, tmp_path / "point.npz", {"g": "tanh", "loss": "mse"})
    assert len(result) == 6
    for reduce in (None, "sum", "mean"):
        f = article.numeric(g="tanh", loss="mse", reduce=reduce, style=style)
        for name, out in [("one", f(x[0], y[0], params)), ("batch", f(x, y, params))]:
            loss, grads = result[f"{name} {reduce}"]
            assert loss == np.asarray(out.loss).tolist()
            assert grads == {n: v.tolist() for n, v in out.grads.items()}


def test_derive_writes_gradients_py_beside_derivation_json(tmp_path, capsys):
    assert main(["derive", "--preset", "article", "-o", str(tmp_path)]) == 0
    source = (tmp_path / "gradients.py").read_text(encoding="utf-8")
    assert (tmp_path / "derivation.json").exists()
    assert 'out = loss_and_grads(x, y, params, g="sigmoid", loss="sse")' in source
    assert "g=, one of identity, sigmoid, tanh, relu, softplus, leaky_relu" in source


def test_derive_writes_the_style_asked_for(tmp_path, capsys):
    assert main(["derive", "--preset", "article", "-o", str(tmp_path), "--style", "layers"]) == 0
    source = (tmp_path / "gradients.py").read_text(encoding="utf-8")
    assert "def _layers(" in source and "def _nodes(" not in source


def test_an_unknown_style_or_backend_or_reduction_is_refused(article):
    with pytest.raises(ValueError, match=r"style='fast'; choose 'layers', 'nodes' or None"):
        article.numeric(g="relu", loss="sse", style="fast")
    with pytest.raises(ValueError, match=r"backend='torch'; choose one of numpy, jax"):
        article.numeric(g="relu", loss="sse", backend="torch")
    with pytest.raises(ValueError, match=r"reduce='max'; choose None \(per sample\), 'sum' or 'mean'"):
        article.numeric(g="relu", loss="sse", reduce="max")


# ---- graphs: every network of tests/graphs.py, and resnet_tiny ---------------------------------

GRAPH_NETWORKS = {**GRAPHS, "resnet_tiny": sb.presets.resnet_tiny}
# Both programs on the small graphs (at most ~1,000 edges); resnet_tiny's per-node program
# would be 600,000 lines: the per-layer one alone.
GRAPH_STYLES = [
    (name, style)
    for name in GRAPH_NETWORKS
    for style in ("layers", "nodes")
    if name != "resnet_tiny" or style == "layers"
]


@pytest.fixture(scope="module")
def graph_derivations() -> dict:
    return {}


def graph(derivations: dict, name: str) -> tuple[sb.Network, sb.Derivation]:
    """The network ``name`` and its derivation, derived once per module of tests."""
    if name not in derivations:
        net = GRAPH_NETWORKS[name]()
        derivations[name] = net, net.derive()
    return derivations[name]


def graph_batch(net: sb.Network, rng: np.random.Generator, size: int):
    """x (size, *input), y (size, K) and the weights, as ``draw_point`` draws them."""
    _, _, params = draw_point(net, rng)
    points = [draw_point(net, rng)[:2] for _ in range(size)]
    x = np.array([p[0] for p in points]).reshape(size, *net.input_shape)
    y = np.array([p[1] for p in points]).reshape(size, net.output_size)
    return x, y, params


def reduced(out, reduce: str) -> tuple[float, dict]:
    """A per-sample result (losses, grads) summed or averaged over the batch, x's kept per
    sample (scaled by 1/B for a mean, as torch's backward of the mean gives it)."""
    losses, grads = out
    scale = 1.0 if reduce == "sum" else 1 / len(losses)
    return float(np.sum(losses) * scale), {
        name: grad * scale if name == "x" else grad.sum(axis=0) * scale for name, grad in grads.items()
    }


def test_the_graphs_cover_every_join_and_resnet_tiny_is_a_graph():
    # what the tests below stand on: forks, additions and concatenations, read-twice inputs
    nets = {name: build() for name, build in GRAPH_NETWORKS.items()}
    keys = {layer.key for net in nets.values() for layer in net.layers}
    assert {"add", "concat", "activation", "global_avgpool", "maxpool", "avgpool", "conv", "dense"} <= keys
    assert not any(net.is_chain for name, net in nets.items() if name != "activation layers")
    assert nets["one addition reading a tensor twice"].sources[1] == (1, 0, 1)
    assert nets["resnet_tiny"].sources[3] == (1, 3) and nets["resnet_tiny"].consumers(5) == (6, 8)


@pytest.mark.parametrize("name, style", GRAPH_STYLES)
@pytest.mark.parametrize("size", [1, 5])
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_graphs_give_torch_per_sample_gradients(graph_derivations, rng, name, style, size):
    net, d = graph(graph_derivations, name)
    x, y, params = graph_batch(net, rng, size)
    f = d.numeric(style=style)
    out = f(x, y, params)
    assert out.loss.shape == (size,) and out.grads["x"].shape == x.shape
    assert_same_gradients(out, *torch_batch_loss_and_grads(net, x, y, params))
    assert_same_gradients(out, *reference.loss_and_grads(net, x, y, params))
    # one sample (C, H, W) gives its own gradients, those of its row of the batch
    one = f(x[-1], y[-1], params)
    assert isinstance(one.loss, float) and one.grads["x"].shape == net.input_shape
    assert_same_gradients(one, out.loss[-1], {n: g[-1] for n, g in out.grads.items()}, rtol=1e-12)


@pytest.mark.parametrize("name, style", GRAPH_STYLES)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("size", [1, 5])
def test_graphs_reduce_a_batch_as_torch_backward(graph_derivations, rng, name, style, reduce, size):
    net, d = graph(graph_derivations, name)
    x, y, params = graph_batch(net, rng, size)
    out = d.numeric(style=style, reduce=reduce)(x, y, params)
    assert isinstance(out.loss, float)
    assert {n: g.shape for n, g in out.grads.items()} == {"x": x.shape, **net.parameters}
    assert_same_gradients(out, *torch_reduced_loss_and_grads(net, x, y, params, reduce))
    assert_same_gradients(out, *reduced(reference.loss_and_grads(net, x, y, params), reduce))


@pytest.mark.parametrize("name, style", GRAPH_STYLES)
@pytest.mark.parametrize("reduce", [None, "sum", "mean"])
def test_graphs_give_empty_arrays_for_an_empty_batch(graph_derivations, rng, name, style, reduce):
    net, d = graph(graph_derivations, name)
    x, y, params = graph_batch(net, rng, 0)
    out = d.numeric(style=style, reduce=reduce)(x, y, params)
    lead = (0,) if reduce is None else ()
    assert {n: g.shape for n, g in out.grads.items()} == {
        "x": (0, *net.input_shape), **{n: (*lead, *shape) for n, shape in net.parameters.items()}
    }
    assert all(not g.any() for g in out.grads.values())
    if reduce is None:
        assert out.loss.shape == (0,)
    else:  # a sum of nothing is 0; a mean of nothing is nan, as torch's
        assert out.loss == 0.0 if reduce == "sum" else np.isnan(out.loss)


# resnet_tiny's: 70 samples through torch one at a time, a few seconds (slow)
BY_CHUNKS = [pytest.param(name, marks=[pytest.mark.slow] if name == "resnet_tiny" else []) for name in GRAPH_NETWORKS]


@pytest.mark.parametrize("name", BY_CHUNKS)
def test_graphs_run_large_batches_in_chunks_on_threads(graph_derivations, rng, name, monkeypatch):
    net, d = graph(graph_derivations, name)
    module = numeric.compiled(d, "layers")
    programs = module._PROGRAMS
    if name == "resnet_tiny":
        # as it comes: 32 samples a chunk (147 kB a sample in its largest array), each chunk
        # worth a thread; 70 samples are 32 + 32 + 6
        assert programs.batch_chunk == 32
        assert 32 * programs.sample_bytes >= module.THREADS_FROM_BYTES
        size, chunks = 70, [32, 32, 6]
    else:  # small networks: chunks of 2 samples, each made to look worth a thread
        programs = programs._replace(batch_chunk=2, sample_bytes=module.THREADS_FROM_BYTES)
        size, chunks = 7, [2, 2, 2, 1]
    ran = []

    def counted(x, *rest):
        ran.append((len(x), threading.current_thread().name))
        return programs.layers(x, *rest)

    monkeypatch.setattr(module, "_PROGRAMS", programs._replace(layers=counted))
    monkeypatch.setattr(module, "_blas_threads", lambda controller: 2)  # two cores, whatever runs this
    x, y, params = graph_batch(net, rng, size)
    per_sample = module.loss_and_grads(x, y, params)
    assert sorted(n for n, _ in ran) == sorted(chunks)
    assert {thread.split("_")[0] for _, thread in ran} == {"gradients"}  # the chunk pool's
    summed = module.loss_and_grads(x, y, params, "sum")
    expected = torch_batch_loss_and_grads(net, x, y, params)
    assert_same_gradients(per_sample, *expected)
    assert_same_gradients(summed, *reduced(expected, "sum"))


@pytest.mark.parametrize(
    "name", [pytest.param("resnet_tiny", marks=pytest.mark.slow), "concat of two branches", "a fork feeding three consumers"]
)
def test_an_exported_graph_module_runs_alone_in_a_fresh_process(graph_derivations, tmp_path, rng, name):
    net, d = graph(graph_derivations, name)
    path = d.export_module(tmp_path / "gradients.py")
    # resnet_tiny: 70 samples, three chunks (in turn: the fresh process has no threadpoolctl)
    x, y, params = graph_batch(net, rng, 70 if name == "resnet_tiny" else 4)
    np.savez(tmp_path / "point.npz", x=x, y=y, **params)
    result = run_in_a_fresh_process(path, tmp_path / "point.npz", {})
    for reduce in (None, "sum", "mean"):
        f = d.numeric(reduce=reduce)
        for which, out in [("one", f(x[0], y[0], params)), ("batch", f(x, y, params))]:
            loss, grads = result[f"{which} {reduce}"]
            grads = {n: np.array(g) for n, g in grads.items()}
            assert_same_gradients(out, np.array(loss), grads, rtol=1e-13)
    loss, grads = result["batch None"]
    alone = SimpleNamespace(loss=np.array(loss), grads={n: np.array(g) for n, g in grads.items()})
    assert_same_gradients(alone, *torch_batch_loss_and_grads(net, x, y, params))


def test_tracebacks_show_each_generated_module_its_own_lines_while_it_lives():
    def same_name(units):
        net = sb.Network((1, 2, 2), [sb.Dense(units=units)], loss="sse", name="same")
        return net.derive()

    two, three = same_name(2), same_name(3)  # one name, two texts
    modules = numeric.compiled(two), numeric.compiled(three)
    files = [module._layers.__code__.co_filename for module in modules]
    assert files[0] != files[1] and all(name.startswith("<symbackprop gradients of same") for name in files)
    for derivation, filename in zip((two, three), files):
        assert "".join(linecache.getlines(filename)) == module_source(derivation)
    with pytest.raises(KeyError) as raised:  # a call that fails inside the generated code
        modules[1]._layers(np.zeros((1, 1, 2, 2)), np.zeros((1, 3)), {}, None, None, {}, False, 1.0)
    shown = "".join(traceback.format_exception(raised.value))
    assert f'File "{files[1]}", line' in shown and "W1 = params['W1']" in shown


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_numeric_calls_on_many_networks_leave_no_lines_behind_in_linecache():
    # each generated module's lines go with it: a numeric() call per network once left one
    # linecache entry each, for good
    for units in range(2, 42):
        net = sb.Network((1, 2, 2), [sb.Dense(units=units)], loss="sse", name="passing")
        f = net.derive().numeric()
        assert f(np.zeros((1, 2, 2)), np.zeros(units), {"W1": np.ones((units, 4))}).loss == 0.0
    held = [name for name in linecache.cache if "gradients of passing" in name]
    assert len(held) <= 1  # the last, while f lives
    del f
    gc.collect()
    assert not [name for name in linecache.cache if "gradients of passing" in name]
