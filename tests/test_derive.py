"""The symbolic engine: the article's formulas symbol by symbol, and closed forms proved
equal to PyTorch autograd and to sympy.diff of the closed-form loss."""

from __future__ import annotations

import re

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from oracle import random_point, torch_loss_and_grads
from strategies import CONCRETE_ACTIVATIONS, CONCRETE_LOSSES, networks

import symbackprop as sb
from symbackprop.activations import g, g_prime, relu_step, sigmoid
from symbackprop.budget import OverBudget
from symbackprop.engine import expression_size
from symbackprop.simplify import SimplifyWarning, tidy


def S(name: str) -> sympy.Symbol:
    return sympy.Symbol(name, real=True)


# The article's position sets, written out by hand (figure 7): p^(1) and p^(2).
P1 = [(1, 2, 5, 6), (2, 3, 6, 7), (3, 4, 7, 8), (5, 6, 9, 10), (6, 7, 10, 11), (7, 8, 11, 12),
      (9, 10, 13, 14), (10, 11, 14, 15), (11, 12, 15, 16)]
P2 = [(1, 2, 4, 5), (2, 3, 5, 6), (4, 5, 7, 8), (5, 6, 8, 9)]
KERNEL = [(0, 0), (0, 1), (1, 0), (1, 1)]  # w_1..w_4 of a 2x2 kernel, row by row


@pytest.fixture(scope="module")
def article():
    return sb.presets.article().derive()


def test_formula_5_dense_weights_have_a_single_dependency(article):
    # ∂L/∂w^(3)_{f,i} = ∂L/∂a^(3)_f · g'(z^(3)_f) · a^(2)_i
    chain = article.chain("W3")
    for f in (1, 2):
        for i in (1, 2, 3, 4):
            assert chain[f - 1, i - 1] == S(f"dL_da3_{f}") * g_prime(S(f"z3_{f}")) * S(f"a2_{i}")


def test_formula_12_upstream_of_layer_2_sums_over_both_output_neurons(article):
    for i in (1, 2, 3, 4):
        expected = sum(
            S(f"dL_da3_{f}") * g_prime(S(f"z3_{f}")) * S(f"W3_{f - 1}_{i - 1}") for f in (1, 2)
        )
        assert article.upstream(S(f"dL_da2_{i}")) == expected


def test_formula_13_a_shared_layer_2_weight_sums_over_its_four_positions(article):
    chain = article.chain("W2")
    for n, (m, k) in enumerate(KERNEL):
        expected = sum(
            S(f"dL_da2_{i}") * g_prime(S(f"z2_{i}")) * S(f"a1_{P2[i - 1][n]}") for i in (1, 2, 3, 4)
        )
        assert chain[0, 0, m, k] == expected


def test_formula_17_upstream_of_layer_1_sums_over_the_layer_2_nodes_that_used_it(article):
    for j in range(1, 10):
        expected = sum(
            S(f"dL_da2_{i}") * g_prime(S(f"z2_{i}")) * S("W2_0_0_{}_{}".format(*KERNEL[P2[i - 1].index(j)]))
            for i in (1, 2, 3, 4)
            if j in P2[i - 1]
        )
        assert article.upstream(S(f"dL_da1_{j}")) == expected
    # a^(1)_5, the centre, feeds all four layer-2 nodes; a corner feeds one
    assert len(article.upstream(S("dL_da1_5")).args) == 4
    assert article.upstream(S("dL_da1_1")) == S("dL_da2_1") * g_prime(S("z2_1")) * S("W2_0_0_0_0")


def test_formula_18_a_shared_layer_1_weight_sums_over_its_nine_positions(article):
    chain = article.chain("W1")
    for n, (m, k) in enumerate(KERNEL):
        expected = sum(
            S(f"dL_da1_{j}") * g_prime(S(f"z1_{j}")) * S(f"x_{P1[j - 1][n]}") for j in range(1, 10)
        )
        assert chain[0, 0, m, k] == expected


def test_the_forward_pass_is_the_articles(article):
    z1 = article.graph.layers[0].z[0]
    assert z1.expr == sum(S("W1_0_0_{}_{}".format(*mk)) * S(f"x_{p}") for mk, p in zip(KERNEL, P1[0]))
    z21 = article.graph.layers[1].z[0]
    assert z21.expr == sum(S("W2_0_0_{}_{}".format(*mk)) * S(f"a1_{p}") for mk, p in zip(KERNEL, P2[0]))


def test_generic_derivatives_print_as_g_prime_not_subs(article):
    closed = article.gradient("W3")[0, 0]
    assert not closed.has(sympy.Subs) and not closed.has(sympy.Derivative)
    assert closed.has(g_prime)
    assert sympy.latex(g_prime(S("z"))) == r"g'\left(z\right)"
    assert sympy.latex(g(S("z")).diff(S("z"))) == r"g'\left(z\right)"


def test_article_closed_form_of_w3_is_the_chain_form_written_out(article):
    x = [S(f"x_{i}") for i in range(1, 17)]
    w1 = [S("W1_0_0_{}_{}".format(*mk)) for mk in KERNEL]
    w2 = [S("W2_0_0_{}_{}".format(*mk)) for mk in KERNEL]
    a1 = [g(sum(w * x[p - 1] for w, p in zip(w1, P1[j]))) for j in range(9)]
    a2 = [g(sum(w * a1[p - 1] for w, p in zip(w2, P2[i]))) for i in range(4)]
    z3 = [sum(S(f"W3_{f}_{i}") * a2[i] for i in range(4)) for f in range(2)]
    closed = article.gradient("W3")[1, 2]
    partial = closed.args[0] if closed.args[0].func.__name__ == "dL" else None
    assert partial is not None and partial.args[0] == 2  # ∂L/∂a^(3)_2
    assert closed == partial * g_prime(z3[1]) * a2[2]


def test_closed_form_equals_diff_of_the_closed_form_loss_on_the_article_network(article):
    loss = article.loss
    for name in ("W1", "W2", "W3"):
        symbols, closed = article.symbols.params[name], article.gradient(name)
        for index in [(0, 0, 0, 0), (0, 0, 1, 1)] if name != "W3" else [(0, 0), (1, 3)]:
            assert sympy.expand(closed[index] - sympy.diff(loss, symbols[index])) == 0


@pytest.mark.filterwarnings("ignore::symbackprop.errors.DegenerateSetup")  # every pairing, on purpose
@pytest.mark.parametrize("activation", CONCRETE_ACTIVATIONS)
@pytest.mark.parametrize("loss", CONCRETE_LOSSES)
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_closed_form_equals_diff_of_the_loss_for_every_activation_and_loss(activation, loss, rng):
    net = sb.Network((1, 3, 3), [sb.Conv2D(kernel_size=2, bias=True, activation=activation),
                                 sb.Dense(units=2, activation=activation)], loss=loss)
    d = net.derive()
    values = point_values(d, *random_point(net, rng))
    for name in net.parameters:
        symbols, closed = d.symbols.params[name], d.gradient(name)
        for s, expr in zip(flat(symbols), flat(closed)):
            by_diff = sympy.diff(d.loss, s)
            assert evaluate(expr, values) == pytest.approx(evaluate(by_diff, values), rel=1e-12, abs=1e-14)


@pytest.mark.filterwarnings("ignore::symbackprop.errors.DegenerateSetup")  # every pairing, on purpose
@pytest.mark.parametrize("activation", CONCRETE_ACTIVATIONS)
@pytest.mark.parametrize("loss", CONCRETE_LOSSES)
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_closed_forms_equal_torch_autograd(activation, loss, rng):
    net = sb.Network((2, 5, 4), [
        sb.Conv2D(out_channels=2, kernel_size=(3, 2), stride=(2, 1), padding=1, bias=True,
                  activation=activation),
        sb.Conv2D(out_channels=2, kernel_size=2, activation=activation),
        sb.Dense(units=3, bias=True, activation=activation),
    ], loss=loss)
    assert_matches_torch(net, rng)


def test_the_sixteen_article_gradients_equal_torch_once_g_and_l_are_chosen(rng):
    assert_matches_torch(sb.presets.article().with_choices(g="sigmoid", loss="sse"), rng)


@given(networks())
@settings(max_examples=25)
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_hypothesis_architectures_match_torch(net):
    assert_matches_torch(net, np.random.default_rng(7))


def test_relu_derivative_is_zero_at_zero_as_in_pytorch():
    assert relu_step(sympy.Integer(0)) == 0 and relu_step(sympy.Float(0.5)) == 1
    net = sb.Network((1, 1, 2), [sb.Dense(units=1, activation="relu")], loss="sse")
    d = net.derive()
    x1, x2 = d.symbols.x[0, 0, 0], d.symbols.x[0, 0, 1]
    w1, w2 = d.symbols.params["W1"][0, 0], d.symbols.params["W1"][0, 1]
    at_kink = {x1: 1.0, x2: 1.0, w1: 0.5, w2: -0.5, d.symbols.y[0]: 2.0}  # z = 0 exactly
    assert evaluate(d.gradient("W1")[0, 0], at_kink) == 0.0
    just_above = {**at_kink, w1: 0.75}  # z = 0.25: a - y = -1.75, relu' = 1, x_1 = 1
    assert evaluate(d.gradient("W1")[0, 0], just_above) == -1.75


def test_sigmoid_derivative_is_its_own_closed_form():
    z = S("z")
    assert sigmoid(z).diff(z) == sigmoid(z) * (1 - sigmoid(z))
    d = sb.Network((1, 1, 1), [sb.Dense(units=1, activation="sigmoid")], loss="sse").derive()
    a, y, x = S("a1_1"), S("y_1"), S("x_1")
    assert d.chain("W1")[0, 0] == S("dL_da1_1") * a * (1 - a) * x
    assert d.upstream(S("dL_da1_1")) == a - y


def test_closed_forms_evaluate_with_plain_sympy(rng):
    net = sb.Network((1, 2, 2), [sb.Dense(units=2, activation="softplus", bias=True)],
                     loss="cross_entropy")
    d = net.derive()
    values = point_values(d, *random_point(net, rng))
    for expr in flat(d.gradient("W1")):
        by_xreplace = float(expr.xreplace({s: sympy.Float(v) for s, v in values.items()}).evalf())
        symbols = list(values)
        by_lambdify = sympy.lambdify(symbols, expr, "numpy")(*[values[s] for s in symbols])
        assert by_xreplace == pytest.approx(by_lambdify, rel=1e-12)


def test_gradient_with_respect_to_the_input_has_the_inputs_shape():
    d = sb.presets.article().derive()
    chain = d.chain("x")
    assert chain.shape == (1, 4, 4)
    # x_1 is used only by z^(1)_1, through w^(1)_1
    assert chain[0, 0, 0] == S("dL_da1_1") * g_prime(S("z1_1")) * S("W1_0_0_0_0")
    assert d.chain_of(S("x_1")) == chain[0, 0, 0]
    with pytest.raises(KeyError, match="not a parameter or input"):
        d.chain_of(S("x_99"))
    with pytest.raises(KeyError, match="no parameter 'W9'"):
        d.chain("W9")


def test_simplify_tidies_small_forms_and_returns_large_ones_unchanged():
    a, b, c = S("a"), S("b"), S("c")
    assert tidy(a * b * sigmoid(c) + a * c * sigmoid(c)) == a * (b + c) * sigmoid(c)
    d = sb.Network((1, 1, 2), [sb.Dense(units=1, activation="sigmoid")], loss="sse").derive()
    tidied, raw = d.gradient("W1", simplify=True), d.gradient("W1")
    for a, b in zip(flat(tidied), flat(raw)):
        assert sympy.simplify(a - b) == 0
    big = sb.presets.article().derive()
    with pytest.warns(SimplifyWarning) as caught:
        tidied = big.gradient("W1", simplify=True)
    assert str(caught[0].message) == (
        "dL/dW1_0_0_0_0 has a closed form of 27,746 tree nodes, more than the 600 that simplify "
        "tidies, and 3 more elements of W1 too: returned as they are"
    )
    assert tidied[0, 0, 0, 0] == big.gradient("W1")[0, 0, 0, 0]


def test_simplify_pulls_a_shared_error_out_of_a_shared_weights_gradient():
    # the README's example: every position of the shared weight carries (a^(2) − y)
    d = sb.Network((1, 3, 3), [sb.Conv2D(kernel_size=2, activation="sigmoid"), sb.Dense(units=1)],
                   loss="sse").derive()
    raw, tidied = d.gradient("W1")[0, 0, 0, 0], d.gradient("W1", simplify=True)[0, 0, 0, 0]
    assert (expression_size(raw), expression_size(tidied)) == (413, 210)
    error = S("W2_0_0") * sigmoid(d.closed(S("z1_1"))) + S("W2_0_1") * sigmoid(d.closed(S("z1_2"))) \
        + S("W2_0_2") * sigmoid(d.closed(S("z1_3"))) + S("W2_0_3") * sigmoid(d.closed(S("z1_4"))) - S("y_1")
    assert tidied.is_Mul and error in tidied.args
    assert sympy.simplify(raw - tidied) == 0


def test_a_closed_form_too_large_to_use_is_refused_before_it_is_built():
    # Two 3x3 convolutions over 10x10: the first element of W1 alone has 5e9 tree nodes.
    net = sb.Network((1, 10, 10), [sb.Conv2D(kernel_size=3, out_channels=3, activation="tanh"),
                                   sb.Conv2D(kernel_size=3, out_channels=3, activation="tanh"),
                                   sb.Dense(units=3, activation="tanh"), sb.Dense(units=2)],
                     loss="cross_entropy")
    d = net.derive()
    with pytest.raises(OverBudget) as refused:
        d.gradient("W1")
    assert str(refused.value) == (
        "gradient('W1') would write closed forms of at least 5,033,414,037 tree nodes (its "
        "first 1 of 27 elements), more than max_size allows (1,000,000,000); pass "
        "max_size=None to build it, or use d.chain('W1') and d.numeric()"
    )


def test_a_closed_form_loss_too_large_to_use_is_refused_too():
    # Four dense layers of 8 on two convolutions: each multiplies the forward's tree by 8.
    net = sb.Network((1, 10, 10), [sb.Conv2D(kernel_size=3, out_channels=3, activation="tanh"),
                                   sb.Conv2D(kernel_size=3, out_channels=3, activation="tanh"),
                                   *[sb.Dense(units=8, activation="tanh") for _ in range(4)],
                                   sb.Dense(units=2)], loss="cross_entropy")
    with pytest.raises(OverBudget, match=r"^loss would write closed forms of 2,2\d\d,\d{3},\d{3} tree "
                       r"nodes, .*; d\.closed\(d\.graph\.loss\) builds it at any size, or use "
                       r"d\.numeric\(\)$"):
        _ = net.derive().loss


def test_max_size_counts_every_element_of_the_gradient(article):
    with pytest.raises(OverBudget, match=r"^gradient\('W1'\) would write closed forms of 111,000 tree "
                       r"nodes, more than max_size allows \(100,000\); pass max_size=None"):
        article.gradient("W1", max_size=100_000)
    assert article.gradient("W1", max_size=111_000) == article.gradient("W1", max_size=None)
    with pytest.raises(OverBudget, match=r"^latex\('W1_0_0_0_0'\) would write closed forms of "
                       r"27,\d{3} tree nodes, .*; pass max_size=None to print it, or use "
                       r"d\.latex_derivation\('W1_0_0_0_0'\) for its chain form$"):
        article.latex("W1_0_0_0_0", max_size=20_000)


def test_layers_count_from_1_as_parameters_do(article):
    assert article.layer(1).number == 1 and article.layer(3).upstream == (S("dL_da3_1"), S("dL_da3_2"))
    assert article.layer(np.int64(2)) is article.graph.layers[1]
    for wrong in (0, 4, -1, True, "2"):
        with pytest.raises(IndexError, match="layer must be 1..3, got"):
            article.layer(wrong)


def test_repr_says_what_the_derivation_is(article):
    assert repr(article) == (
        "<Derivation of article: input 1x4x4, 3 layers, 16 weights in W1, W2, W3, loss generic>"
    )


@settings(max_examples=10)
@given(net=networks(max_size=5))
def test_closed_size_estimates_are_close_without_building(net):
    """Off only by what sympy merges or evaluates as it builds: a product of products
    flattened, a number spread over a sum (mse's 2/n), exp(0) of an output on the padding
    alone. (Softmax of a single output is 1 whatever it is: nothing to estimate there.)"""
    d = net.derive()
    if net.loss == "cross_entropy" and net.output_size == 1:
        return
    for name in ["x", *net.parameters]:
        for element in flat(d.chain(name)):
            exact, estimate = d.closed_size(element), d.closed_size_estimate(element)
            assert 0.75 * exact - 10 <= estimate <= 1.5 * exact + 10


# ---- helpers --------------------------------------------------------------------------------


def flat(array: sympy.Array) -> list:
    return list(sympy.flatten(array.tolist()))


def point_values(d: sb.Derivation, x, y, params) -> dict[sympy.Symbol, float]:
    values = dict(zip(flat(d.symbols.x), x.ravel()))
    values.update(zip(flat(d.symbols.y), y.ravel()))
    for name, symbols in [*d.symbols.params.items(), *d.graph.buffers.items()]:  # and running statistics
        values.update(zip(flat(symbols), params[name].ravel()))
    return values


def evaluate(expr: sympy.Basic, values: dict[sympy.Symbol, float], memo: dict | None = None) -> float:
    """A closed form's value, each shared subexpression evaluated once (they are DAGs).

    Pass the same ``memo`` to evaluate several closed forms of one network at one point."""
    memo = {} if memo is None else memo

    def ev(e: sympy.Basic) -> sympy.Basic:
        if e not in memo:  # keyed by the expression itself: equal subtrees share one value
            if e in values:
                memo[e] = sympy.Float(values[e])
            elif not e.args:
                memo[e] = e
            else:
                memo[e] = e.func(*[ev(a) for a in e.args]).evalf()
        return memo[e]

    return float(ev(expr))


def assert_matches_torch(net: sb.Network, rng: np.random.Generator) -> None:
    d = net.derive()
    x, y, params = random_point(net, rng)
    values = point_values(d, x, y, params)
    torch_loss, torch_grads = torch_loss_and_grads(net, x, y, params)
    memo: dict = {}
    assert evaluate(d.loss, values, memo) == pytest.approx(torch_loss, rel=1e-9, abs=1e-12)
    for name in ["x", *net.parameters]:
        mine = np.array([evaluate(e, values, memo) for e in flat(d.gradient(name))])
        theirs = torch_grads[name].ravel()
        scale = max(np.max(np.abs(theirs)), 1e-300)
        assert np.max(np.abs(mine - theirs)) <= 1e-9 * scale + 1e-14, f"{name}: {mine} != {theirs}"


def test_every_node_has_upstream_times_local_equal_to_downstream():
    d = sb.presets.article().derive()
    kinds = [n.kind for n in d.nodes]
    assert kinds[0] == "loss" and kinds.count("a") == kinds.count("z") == 9 + 4 + 2
    assert kinds.count("x") == 16
    by_node = {n.node: n for n in d.nodes}
    a = by_node[S("a2_1")]  # formula (10)/(12): the upstream is the sum of what a^(2)_1 feeds
    assert a.upstream_symbol == S("dL_da2_1")
    assert a.upstream == d.upstream(S("dL_da2_1"))
    assert a.local == {S("z2_1"): g_prime(S("z2_1"))}
    assert a.downstream == {S("z2_1"): S("dL_da2_1") * g_prime(S("z2_1"))}
    z = by_node[S("z2_1")]  # local gradients of a weighted sum: its coefficients
    assert z.local[S("a1_2")] == S("W2_0_0_0_1") and z.local[S("W2_0_0_0_1")] == S("a1_2")
    for node in d.nodes:  # an a node's downstream is written with its upstream's symbol
        upstream = node.upstream if node.upstream_symbol is None else node.upstream_symbol
        for source, local in node.local.items():
            assert node.downstream[source] == upstream * local


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_mixed_activations_with_cross_entropy_build_closed_forms_and_match_torch(rng):
    # relu under tanh under exp once sent sympy's assumption system through the whole
    # closed form at every node (minutes); closed forms are now built in well under a second
    net = sb.Network((2, 6, 6), [
        sb.Conv2D(out_channels=2, kernel_size=3, padding=1, activation="relu"),
        sb.Conv2D(out_channels=2, kernel_size=3, stride=2, activation="tanh"),
        sb.Dense(units=3),
    ], loss="cross_entropy")
    assert_matches_torch(net, rng)


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_closed_forms_of_a_huge_network_are_refused_before_its_graph_is_built():
    # the README's 3x64x64 network: 12 million edges, an hour and 19 GB to build
    net = sb.Network((3, 64, 64), [
        sb.Conv2D(out_channels=16, kernel_size=3, padding=1, activation="relu"),
        sb.Conv2D(out_channels=16, kernel_size=3, padding=1, activation="relu"),
        sb.Dense(units=10),
    ], loss="cross_entropy")
    d = net.derive()
    for ask, what in [(lambda: d.gradient("W1"), "gradient('W1')"), (lambda: d.loss, "loss"),
                      (lambda: d.latex("W3"), "latex('W3')")]:
        with pytest.raises(OverBudget, match=rf"^{re.escape(what)} would first build a scalar graph of "
                           r"11,993,108 edges \(estimated .*\) to count its closed forms, more than 1,000,000"):
            ask()
    assert not d.graph.layers._built  # nothing was built
