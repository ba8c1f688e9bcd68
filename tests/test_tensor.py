"""The tensor view: every layer's general formulas, derived from its operation's index form,
proved equal — at every concrete index — to the scalar chain form the engine derived node by
node, and the facts students remember proved against the numpy reference."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import sympy
from graphs import GRAPHS
from hypothesis import given, settings
from strategies import networks

import symbackprop as sb
from symbackprop import reference
from symbackprop.derivation import Derivation
from symbackprop.latex import latex_errors
from symbackprop.ops import FACES, OPS
from symbackprop.tensor import Fact, Formula, scalar_values, upstream_formula
from symbackprop.tensor.adjoint import adjoint_formulas, agree, relations
from symbackprop.tensor.evaluate import evaluate

# Small networks covering every operation and setting: stride, padding, dilation, channels,
# pools overlapping and padded, dense on an image; generic and concrete activations and losses.
NETWORKS = {
    "article": sb.presets.article(),
    "conv stride 2, padding 1, 2 -> 2 channels, bias": sb.Network(
        (2, 5, 5), [sb.Conv2D(out_channels=2, kernel_size=3, stride=2, padding=1, bias=True,
                              activation="sigmoid")], loss="sse"),
    "conv 2x3 dilated 2x1, stride 2x1, padding 1x0": sb.Network(
        (1, 6, 5), [sb.Conv2D(out_channels=2, kernel_size=(2, 3), stride=(2, 1), padding=(1, 0),
                              dilation=(2, 1), activation="tanh")], loss="mse"),
    "max pool 3x3, stride 1, padding 1 (overlapping, padded)": sb.Network(
        (2, 4, 4), [sb.MaxPool2D(kernel_size=3, stride=1, padding=1)], loss="sse"),
    "conv then max pool 2x2 stride 1": sb.Network(
        (1, 4, 4), [sb.Conv2D(kernel_size=2, activation="relu"), sb.MaxPool2D(kernel_size=2, stride=1)]),
    "avg pool 3x3, stride 2, padding 1": sb.Network(
        (2, 5, 5), [sb.AvgPool2D(kernel_size=3, stride=2, padding=1)], loss="sse"),
    "dense with bias on an image, softmax cross-entropy": sb.Network(
        (2, 2, 2), [sb.Dense(units=3, bias=True)], loss="cross_entropy"),
}


GRAPH_NAMES = list(GRAPHS)


@pytest.fixture(scope="module", params=list(NETWORKS) + GRAPH_NAMES)
def derivation(request) -> Derivation:
    network = NETWORKS.get(request.param) or GRAPHS[request.param]()
    return network.derive()


def as_dz(d: Derivation) -> dict[sympy.Symbol, sympy.Expr]:
    """Every layer's ∂L/∂a as ∂L/∂z over a′(z), so that the engine's ∂L/∂a · a′(z) reads ∂L/∂z,
    as the tensor view writes δ."""
    substitutions = {}
    for number in range(1, len(d.network.layers) + 1):
        lg = d.graph.layers[number - 1]
        if lg.activated:
            local = d.backward(number).local
            substitutions |= {up: dz / local[z.symbol] for up, dz, z in zip(lg.upstream, lg.z_upstream, lg.z)}
    return substitutions


def engine_forms(d: Derivation, number: int, kind: str, source: int | None = None,
                 at: list[int] | None = None, dz: dict | None = None) -> list[sympy.Expr]:
    """What the engine derived node by node for the elements ``at`` (flat; all when None) of
    what a formula of ``kind`` gives — the graph's nodes, ``d.chain_of``, ``d.upstream``, the
    terms a layer sends back to the layer ``source`` it reads — written with ∂L/∂z symbols
    (``dz``: ``as_dz(d)``), as the tensor view writes δ: ∂L/∂a · g′(z) = ∂L/∂z. ``number`` 0
    with "upstream": ∂L/∂x."""
    items, form = engine_elements(d, number, kind, source, as_dz(d) if dz is None else dz)
    return [form(items[k]) for k in (range(len(items)) if at is None else at)]


def engine_elements(d: Derivation, number: int, kind: str, source: int | None, dz: dict):
    """The elements of what a formula of ``kind`` gives, flat (symbols, cheap to list), and
    the engine's form of one of them (see ``engine_forms``)."""
    g = d.graph
    if kind == "upstream":  # the sum over every layer reading it (the article's rule (20))
        if number == 0:
            return g.x, lambda x: d.chain_of(x).xreplace(dz)
        return g.upstream_of(number), lambda up: d.upstream(up).xreplace(dz)
    lg = g.layers[number - 1]
    local = d.backward(number).local
    if kind == "forward":
        return lg.z, lambda node: node.expr
    if kind == "activation":
        return lg.a, lambda node: node.expr
    if kind == "loss":  # ∂L/∂a of the last layer: the loss's own gradient
        return lg.upstream, d.upstream
    if kind == "delta":
        return list(zip(lg.upstream, lg.z)), lambda pair: pair[0] * local[pair[1].symbol]
    if kind in ("W", "b"):
        name = d.network.layer_parameters(number)[kind]
        return sympy.flatten(g.params[name].tolist()), lambda w: d.chain_of(w).xreplace(dz)
    # "input": what this layer alone sends back to the layer it reads
    terms = d.backward(number).input_terms
    return g.outputs_of(source), lambda s: sympy.Add(*[t.expr for t in terms.get(s, [])]).xreplace(dz)


def assert_formula_is_the_engines(formula: Formula, values: dict, where: str, d: Derivation, number: int,
                                  source: int | None = None, sample: int | None = None,
                                  dz: dict | None = None) -> None:
    """The formula written out at every index (or at ``sample`` of them, the first and last
    among them) is the engine's chain form there."""
    positions = list(formula.positions())
    items, form = engine_elements(d, number, formula.kind, source, as_dz(d) if dz is None else dz)
    assert len(positions) == len(items)
    chosen = list(range(len(positions)))
    if sample is not None and len(positions) > sample:
        picked = np.random.default_rng(len(positions)).choice(len(positions) - 2, sample - 2, replace=False)
        chosen = [0, *sorted(int(k) + 1 for k in picked), len(positions) - 1]
    for k in chosen:
        assert sympy.expand(formula.at(positions[k], values) - form(items[k])) == 0, (
            f"{where} {formula.kind} at {positions[k]}: {formula.latex()}"
        )


def assert_formulas_are_the_engines(d: Derivation, number: int, sample: int | None = None,
                                    dz: dict | None = None) -> None:
    values = scalar_values(d, number)
    dz = as_dz(d) if dz is None else dz
    sources = iter(dict.fromkeys(d.network.sources[number - 1]))  # an input formula per tensor read
    for formula in d.formulas(number):
        if isinstance(formula, Fact):
            continue
        source = next(sources) if formula.kind == "input" else None
        assert_formula_is_the_engines(formula, values, f"layer {number}", d, number, source, sample, dz)


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_every_formula_at_every_index_is_the_engines_chain_form(derivation):
    for number in range(1, len(derivation.network.layers) + 1):
        assert_formulas_are_the_engines(derivation, number)
    if len(derivation.network.consumers(0)) > 1:  # the input's upstream, the sum over its readers
        upstream = upstream_formula(derivation, 0)
        assert_formula_is_the_engines(upstream, scalar_values(derivation, 0), "the input", derivation, 0)


@pytest.mark.slow
def test_resnet_tiny_formulas_are_the_engines_chain_forms_at_sampled_indices():
    # every formula of its 12 layers, at 8 of its indices (the first and the last among them):
    # at every index, the stem's 2,048 outputs, 216 weights and 768 inputs alone take minutes
    d = sb.presets.resnet_tiny().derive()
    dz = as_dz(d)
    for number in range(1, len(d.network.layers) + 1):
        assert_formulas_are_the_engines(d, number, sample=8, dz=dz)


@pytest.mark.slow
@settings(max_examples=10)
@given(networks(max_size=4))
def test_random_networks_formulas_are_the_engines_chain_forms(net):
    d = net.derive()
    for number in range(1, len(net.layers) + 1):
        assert_formulas_are_the_engines(d, number)
        assert all(f.check() for f in d.formulas(number) if isinstance(f, Fact))


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_the_settings_written_as_numbers_change_nothing(derivation):
    d = derivation
    for number in range(1, len(d.network.layers) + 1):
        values = scalar_values(d, number)
        for general, concrete in zip(d.formulas(number), d.formulas(number, general=False)):
            assert concrete.rhs.free_symbols.isdisjoint(general.settings)
            for position in general.positions():
                assert sympy.expand(general.at(position, values) - concrete.at(position, values)) == 0


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_every_fact_holds_against_the_formula_it_restates(derivation):
    facts = [f for n in range(1, len(derivation.network.layers) + 1) for f in derivation.formulas(n)
             if isinstance(f, Fact)]
    for fact in facts:
        assert fact.check(), fact.latex()
        assert fact.concrete().check(), fact.concrete().latex()


def test_a_wrong_fact_fails_its_check():
    d = NETWORKS["conv stride 2, padding 1, 2 -> 2 channels, bias"].derive()
    full = next(f for f in d.formulas(1) if f.kind == "fact" and f.restates.kind == "input")
    spread, dilated = full.spreads
    flipped = next(e for e in full.rhs.atoms(sympy.Indexed) if e.base == dilated.hat)
    o, c, m, n = sympy.symbols("o c m n", integer=True)
    assert flipped.indices[:2] == (o, c) and flipped.indices[2:] != (m, n)
    unflipped = full.rhs.xreplace({flipped: dilated.hat[o, c, m, n]})
    assert not replace(full, rhs=unflipped).check()  # the kernel not flipped
    not_spread = replace(spread, factors=(1, 1, 1))
    assert not replace(full, spreads=(not_spread, dilated)).check()  # δ not spread by the stride


def test_a_formula_compared_with_another_position_would_fail():
    d = NETWORKS["article"].derive()
    weight = d.formulas(1)[3]
    values = scalar_values(d, 1)
    assert weight.kind == "W"
    assert sympy.expand(weight.at((0, 0, 0, 1), values) - engine_forms(d, 1, "W")[0]) != 0


def test_an_upstream_missing_a_reader_would_fail():
    d = GRAPHS["a fork feeding three consumers"]().derive()
    upstream = upstream_formula(d, 1)
    values = scalar_values(d, 1)
    assert len(upstream.rhs.args) == 3  # one part from each of layers 2, 3 and 4
    for part in upstream.rhs.args:
        without = replace(upstream, rhs=upstream.rhs - part)
        with pytest.raises(AssertionError, match="upstream"):
            assert_formula_is_the_engines(without, values, "layer 1", d, 1)


def test_a_sum_with_conditions_is_written_out_as_every_place_would_give():
    # at() solves each condition for one summed letter rather than trying every value: here
    # i + m = u fixes i given m, and 2 m + n − 1 = v then fixes m given n; twice a letter's
    # coefficient and an out-of-range solution must drop terms exactly as trying them would
    i, m, n, u, v = sympy.symbols("i m n u v", integer=True)
    f = sympy.IndexedBase("f")
    conditions = sympy.KroneckerDelta(i + m, u) * sympy.KroneckerDelta(2 * m + n - 1, v)
    total = sympy.Sum(f[i, m, n] * conditions, (i, 0, 3), (m, 0, 2), (n, 0, 1))
    entries = np.arange(24.0) + 1

    def read(base, at):
        return entries[np.ravel_multi_index(at, (4, 3, 2))]

    for u_value, v_value in [(0, 0), (2, 1), (3, 4), (5, 3), (6, 5), (4, 2)]:
        tried = sum(read(f, (a, b, c)) for a in range(4) for b in range(3) for c in range(2)
                    if a + b == u_value and 2 * b + c - 1 == v_value)
        assert evaluate(total, {u: u_value, v: v_value}, read, numeric=True) == tried


# ---- the formulas, written out ------------------------------------------------------------------


def latex_of(network: sb.Network, number: int, general: bool = True) -> dict[str, str]:
    """Each kind of formula of layer ``number`` → its LaTeX (one line per formula of that kind)."""
    result: dict[str, list[str]] = {}
    for formula in network.derive().formulas(number, general=general):
        result.setdefault(formula.kind, []).append(formula.latex())
    return {kind: "\n".join(lines) for kind, lines in result.items()}


def test_convolution_general_formulas():
    tex = latex_of(NETWORKS["conv stride 2, padding 1, 2 -> 2 channels, bias"], 1)
    assert tex["forward"] == (
        r"z^{(1)}_{o,i,j} = \sum_{c,m,n} W^{(1)}_{o,c,m,n} \cdot x_{c,s i + d m - p,s j + d n - p}"
        r" + b^{(1)}_{o}"
    )
    assert tex["delta"] == (
        r"\delta^{(1)}_{o,i,j} = \frac{\partial L}{\partial z^{(1)}_{o,i,j}} = "
        r"\frac{\partial L}{\partial a^{(1)}_{o,i,j}} \cdot a^{(1)}_{o,i,j} \cdot \left(1 - a^{(1)}_{o,i,j}\right)"
    )
    assert tex["W"] == (
        r"\frac{\partial L}{\partial W^{(1)}_{o,c,m,n}} = "
        r"\sum_{i,j} \delta^{(1)}_{o,i,j} \cdot x_{c,s i + d m - p,s j + d n - p}"
    )
    assert tex["b"] == r"\frac{\partial L}{\partial b^{(1)}_{o}} = \sum_{i,j} \delta^{(1)}_{o,i,j}"
    assert tex["input"] == (
        r"\frac{\partial L}{\partial x_{c,u,v}} = \sum_{\substack{o,i,j,m,n \\ s i + d m - p = u \\ "
        r"s j + d n - p = v}} \delta^{(1)}_{o,i,j} \cdot W^{(1)}_{o,c,m,n}"
    )


def test_convolution_formulas_with_the_layers_numbers():
    tex = latex_of(NETWORKS["conv 2x3 dilated 2x1, stride 2x1, padding 1x0"], 1, general=False)
    assert tex["W"] == (
        r"\frac{\partial L}{\partial W^{(1)}_{o,c,m,n}} = "
        r"\sum_{i,j} \delta^{(1)}_{o,i,j} \cdot x_{c,2 i + 2 m - 1,j + n}"
    )
    assert tex["input"] == (
        r"\frac{\partial L}{\partial x_{c,u,v}} = \sum_{\substack{o,i,j,m,n \\ 2 i + 2 m - 1 = u \\ "
        r"j + n = v}} \delta^{(1)}_{o,i,j} \cdot W^{(1)}_{o,c,m,n}"
    )
    # stride and dilation differ between the axes: one symbol per axis in the general form
    general = latex_of(NETWORKS["conv 2x3 dilated 2x1, stride 2x1, padding 1x0"], 1)
    assert general["W"] == (
        r"\frac{\partial L}{\partial W^{(1)}_{o,c,m,n}} = \sum_{i,j} \delta^{(1)}_{o,i,j} \cdot "
        r"x_{c,s_{h} i + d_{h} m - p_{h},s_{w} j + d_{w} n - p_{w}}"
    )


def test_the_two_facts_of_a_convolution():
    d = NETWORKS["conv stride 2, padding 1, 2 -> 2 channels, bias"].derive()
    weight, full = [f for f in d.formulas(1) if f.kind == "fact"]
    concrete = d.formulas(1, general=False)
    by_kind = {f.kind: f for f in concrete if f.kind != "fact"}  # facts restate the same list's formulas
    assert [f.restates for f in concrete if f.kind == "fact"] == [by_kind["W"], by_kind["input"]]
    assert weight.statement.startswith("the weight gradient is the cross-correlation")
    assert weight.latex() == (
        r"\frac{\partial L}{\partial W^{(1)}_{o,c,m,n}} = "
        r"\sum_{i,j} \hat{\delta}^{(1)}_{o,i,j} \cdot x_{c,i + d m - p,j + d n - p}"
    )
    assert weight.where_latex() == [
        r"\hat{\delta}^{(1)}_{o,s i,s j} = \delta^{(1)}_{o,i,j}, \text{ and } 0 \text{ elsewhere}"
    ]
    assert full.statement.startswith("the input gradient is the full cross-correlation")
    assert full.latex() == (
        r"\frac{\partial L}{\partial x_{c,u,v}} = \sum_{o,m,n} "
        r"\hat{\delta}^{(1)}_{o,u + m + p - d \left(K - 1\right),v + n + p - d \left(K - 1\right)} \cdot "
        r"\hat{W}^{(1)}_{o,c,d \left(K - 1\right) - m,d \left(K - 1\right) - n}"
    )
    # with the layer's numbers (K = 3, d = 1, p = 1): δ̂ padded by 2, the kernel flipped
    assert full.concrete().latex() == (
        r"\frac{\partial L}{\partial x_{c,u,v}} = \sum_{o,m,n} "
        r"\hat{\delta}^{(1)}_{o,u + m - 1,v + n - 1} \cdot \hat{W}^{(1)}_{o,c,2 - m,2 - n}"
    )


def test_pooling_formulas():
    tex = latex_of(NETWORKS["max pool 3x3, stride 1, padding 1 (overlapping, padded)"], 1)
    assert tex["forward"] == r"a^{(1)}_{c,i,j} = \max_{m,n} x_{c,s i + m - p,s j + n - p}"
    assert tex["input"] == (
        r"\frac{\partial L}{\partial x_{c,u,v}} = \sum_{\substack{i,j,m,n \\ s i + m - p = u \\ "
        r"s j + n - p = v}} \delta^{(1)}_{c,i,j} \cdot \left[(m, n) = \operatorname*{arg\,max}_{m',n'} "
        r"x_{c,s i + m' - p,s j + n' - p}\right]"
    )
    assert "W" not in tex and "b" not in tex
    tex = latex_of(NETWORKS["avg pool 3x3, stride 2, padding 1"], 1)
    assert tex["forward"] == r"a^{(1)}_{c,i,j} = \frac{1}{K^{2}} \sum_{m,n} x_{c,s i + m - p,s j + n - p}"
    assert tex["input"] == (
        r"\frac{\partial L}{\partial x_{c,u,v}} = \frac{1}{K^{2}} \sum_{\substack{i,j,m,n \\ "
        r"s i + m - p = u \\ s j + n - p = v}} \delta^{(1)}_{c,i,j}"
    )
    assert tex["delta"] == r"\delta^{(1)}_{c,i,j} = \frac{\partial L}{\partial a^{(1)}_{c,i,j}}"


def test_dense_formulas_and_their_matrix_facts():
    tex = latex_of(NETWORKS["article"], 3)
    assert tex["forward"] == r"z^{(3)}_{f} = \sum_{i} W^{(3)}_{f,i} \cdot a^{(2)}_{i}"
    assert tex["W"] == r"\frac{\partial L}{\partial W^{(3)}_{f,i}} = \delta^{(3)}_{f} \cdot a^{(2)}_{i}"
    assert tex["input"] == r"\frac{\partial L}{\partial a^{(2)}_{i}} = \sum_{f} \delta^{(3)}_{f} \cdot W^{(3)}_{f,i}"
    assert tex["fact"].splitlines() == [
        r"\frac{\partial L}{\partial W^{(3)}} = \delta^{(3)} {a^{(2)}}^{T}",
        r"\frac{\partial L}{\partial a^{(2)}} = {W^{(3)}}^{T} \delta^{(3)}",
    ]
    assert tex["delta"] == (
        r"\delta^{(3)}_{f} = \frac{\partial L}{\partial z^{(3)}_{f}} = "
        r"\frac{\partial L}{\partial a^{(3)}_{f}} \cdot g'\left(z^{(3)}_{f}\right)"
    )


def test_softmax_cross_entropy_gives_softmax_minus_y_for_probability_targets():
    d = NETWORKS["dense with bias on an image, softmax cross-entropy"].derive()
    loss, fact = [f for f in d.formulas(1) if f.kind in ("loss", "fact")][:2]
    # the engine's gradient keeps the factor Σ_j y_j: the targets need not sum to one
    assert loss.latex() == (
        r"\frac{\partial L}{\partial a^{(1)}_{k}} = "
        r"\frac{e^{a^{(1)}_{k}} \sum_{j} y_{j}}{\sum_{j} e^{a^{(1)}_{j}}} - y_{k}"
    )
    assert fact.restates is loss
    assert fact.latex() == (
        r"\frac{\partial L}{\partial a^{(1)}_{k}} = \frac{e^{a^{(1)}_{k}}}{\sum_{j} e^{a^{(1)}_{j}}} - y_{k}"
        r" \qquad \text{when } \sum_{j} y_{j} = 1"
    )
    assert fact.check()


def test_the_kinds_of_formula_per_layer():
    d = NETWORKS["conv then max pool 2x2 stride 1"].derive()
    assert [f.kind for f in d.formulas(1)] == ["forward", "activation", "delta", "W", "fact", "input", "fact"]
    # a generic loss has no index form: the last layer starts from its δ
    assert [f.kind for f in d.formulas(2)] == ["forward", "delta", "input"]
    d = NETWORKS["conv stride 2, padding 1, 2 -> 2 channels, bias"].derive()
    kinds = [f.kind for f in d.formulas(1)]
    assert kinds == ["forward", "activation", "loss", "delta", "W", "fact", "b", "input", "fact"]


def test_padding_is_stated_where_a_window_reaches_it():
    notes = {f.kind: f.note for f in NETWORKS["article"].derive().formulas(1)}
    assert notes["forward"] == "indices count from 0"
    assert notes["input"] == ""
    notes = {f.kind: f.note for f in NETWORKS["max pool 3x3, stride 1, padding 1 (overlapping, padded)"]
             .derive().formulas(1)}
    assert notes["forward"] == (
        "indices count from 0; the input reads minus infinity (padding never wins the max) at "
        "indices outside its bounds"
    )
    assert notes["input"].startswith("for indices inside the input: padded places get no gradient; ")


# ---- networks that are graphs -------------------------------------------------------------------


def late_reader() -> sb.Network:
    """a^{(3)} read by layer 6, an addition whose inputs sympy would put the other way round."""
    x = sb.Input((1, 3, 3))
    h = sb.ReLU()(sb.Conv2D(out_channels=2, kernel_size=1, activation="tanh")(x))
    h3 = sb.Conv2D(out_channels=2, kernel_size=3, padding=1)(h)
    h5 = sb.Conv2D(out_channels=2, kernel_size=3, padding=1)(sb.Sigmoid()(h3))
    return sb.Network(inputs=x, outputs=sb.Dense(units=2)(sb.Add()(h5, h3)), loss="sse")


def dense_beside_pool() -> sb.Network:
    """An image read by a dense layer (flattened) and by global average pooling."""
    x = sb.Input((1, 3, 3))
    h = sb.Conv2D(out_channels=2, kernel_size=2, bias=True, activation="tanh")(x)
    joined = sb.Concat()(sb.Dense(units=3)(h), sb.GlobalAvgPool2D()(h))
    return sb.Network(inputs=x, outputs=sb.Dense(units=2)(joined), loss="mse")


def test_a_forked_layer_gets_its_upstream_formula_before_its_delta():
    d = GRAPHS["residual, identity shortcut"]().derive()
    kinds = [f.kind for f in d.formulas(1)]
    assert kinds == ["forward", "activation", "upstream", "delta", "W", "fact", "input", "fact"]
    upstream = d.formulas(1)[2]
    assert upstream.latex() == (
        r"\frac{\partial L}{\partial a^{(1)}_{c,u,v}} = \sum_{\substack{o,i,j,m,n \\ "
        r"s^{(2)} i + d^{(2)} m - p^{(2)} = u \\ s^{(2)} j + d^{(2)} n - p^{(2)} = v}} "
        r"\delta^{(2)}_{o,i,j} \cdot W^{(2)}_{o,c,m,n} + \delta^{(3)}_{c,u,v}"
    )
    assert upstream.note.startswith("the article's rule (20): layers 2 and 3 read it")
    # with the numbers of layer 2 (3x3, padding 1) and the readers' tensors by name
    assert upstream.concrete().latex() == (
        r"\frac{\partial L}{\partial a^{(1)}_{c,u,v}} = \sum_{\substack{o,i,j,m,n \\ i + m - 1 = u \\ "
        r"j + n - 1 = v}} \delta^{(2)}_{o,i,j} \cdot W^{(2)}_{o,c,m,n} + \delta^{(3)}_{c,u,v}"
    )
    assert sorted({role for role, _ in upstream.tensors.values()}) == ["W2", "delta2", "delta3"]
    # each reader's own input formula is its part, marked with the reader
    (part,) = [f for f in d.formulas(3) if f.kind == "input" and "a^{(1)}" in f.latex()]
    assert part.latex() == (
        r"\left.\frac{\partial L}{\partial a^{(1)}_{c,i,j}}\right|_{\text{via }3} = \delta^{(3)}_{c,i,j}"
    )
    assert part.note == (
        "this layer's part of the gradient: layer 2 reads the same tensor, and its gradient is the "
        "sum of the parts of every layer reading it (the article's rule (20))"
    )


def test_a_wide_upstream_breaks_into_a_row_per_reader_for_documents():
    d = GRAPHS["residual, projection shortcut"]().derive()
    upstream, delta = [f for f in d.formulas(1) if f.kind in ("upstream", "delta")]
    assert upstream.aligned() == (
        r"\frac{\partial L}{\partial a^{(1)}_{c,u,v}} &= \sum_{\substack{o,i,j,m,n \\ s^{(2)} i + d^{(2)} m - "
        r"p^{(2)} = u \\ s^{(2)} j + d^{(2)} n - p^{(2)} = v}} \delta^{(2)}_{o,i,j} \cdot W^{(2)}_{o,c,m,n} \\" "\n"
        r"&\quad {}+ \sum_{\substack{o,i,j,m,n \\ s^{(3)} i + d^{(3)} m - p^{(3)} = u \\ s^{(3)} j + d^{(3)} n - "
        r"p^{(3)} = v}} \delta^{(3)}_{o,i,j} \cdot W^{(3)}_{o,c,m,n}"
    )
    assert delta.aligned() == (  # short: one row, its alias before the aligned equals sign
        r"\delta^{(1)}_{o,i,j} = \frac{\partial L}{\partial z^{(1)}_{o,i,j}} &= "
        r"\frac{\partial L}{\partial a^{(1)}_{o,i,j}} \cdot \left(1 - \left(a^{(1)}_{o,i,j}\right)^{2}\right)"
    )


def test_the_input_read_by_several_layers_has_an_upstream_formula_too():
    d = GRAPHS["a residual MLP"]().derive()
    assert upstream_formula(d, 0).latex() == (
        r"\frac{\partial L}{\partial x_{i}} = \sum_{f} \delta^{(1)}_{f} \cdot W^{(1)}_{f,i} + \delta^{(2)}_{i}"
    )
    assert sorted(scalar_values(d, 0)) == ["W1", "a1", "a2", "b1", "dL_da1", "dL_da2", "delta1", "delta2", "x", "z1"]
    with pytest.raises(ValueError, match=r"layer must be 0\.\.2 \(0: the input; layer 3, the output"):
        upstream_formula(d, 3)


def test_the_upstream_of_a_layer_one_layer_reads_is_that_layers_input_formula():
    d = NETWORKS["article"].derive()
    upstream = upstream_formula(d, 2)
    (read,) = [f for f in d.formulas(3) if f.kind == "input"]
    # the dense layer reads the 1x2x2 image flattened: its i is 4 c + 2 u + v
    assert read.latex() == r"\frac{\partial L}{\partial a^{(2)}_{i}} = \sum_{f} \delta^{(3)}_{f} \cdot W^{(3)}_{f,i}"
    assert upstream.latex() == (
        r"\frac{\partial L}{\partial a^{(2)}_{c,u,v}} = \sum_{f} \delta^{(3)}_{f} \cdot W^{(3)}_{f,4 c + 2 u + v}"
    )
    assert upstream.note == "layer 3 alone reads it: its input gradient"
    assert "upstream" not in [f.kind for f in d.formulas(2)]  # a layer's list holds it for a fork alone


def test_a_dense_reader_reads_the_forked_image_flattened():
    d = dense_beside_pool().derive()
    upstream = upstream_formula(d, 1)
    assert upstream.latex() == (
        r"\frac{\partial L}{\partial a^{(1)}_{c,u,v}} = \sum_{f} \delta^{(2)}_{f} \cdot W^{(2)}_{f,4 c + 2 u + v}"
        r" + \frac{1}{M^{(3)} N^{(3)}} \delta^{(3)}_{c}"
    )
    assert upstream.concrete().latex().endswith(r" + \frac{1}{4} \delta^{(3)}_{c}")
    assert_formulas_are_the_engines(d, 1)


def test_an_addition_keeps_its_inputs_in_order_and_passes_delta_to_each():
    d = late_reader().derive()
    assert d.network.sources[5] == (5, 3)  # layer 6 reads a^{(5)}, then a^{(3)}
    tex = {f.kind: [] for f in d.formulas(6)}
    for f in d.formulas(6):
        tex[f.kind].append(f.latex())
    assert tex["forward"] == [r"a^{(6)}_{c,i,j} = a^{(5)}_{c,i,j} + a^{(3)}_{c,i,j}"]
    assert tex["input"] == [
        r"\frac{\partial L}{\partial a^{(5)}_{c,i,j}} = \delta^{(6)}_{c,i,j}",
        r"\left.\frac{\partial L}{\partial a^{(3)}_{c,i,j}}\right|_{\text{via }6} = \delta^{(6)}_{c,i,j}",
    ]
    assert scalar_values(d, 6)["input2"] == list(d.graph.outputs_of(3))  # the roles follow the sources
    upstream = next(f for f in d.formulas(3) if f.kind == "upstream")
    assert upstream.latex() == (
        r"\frac{\partial L}{\partial a^{(3)}_{c,u,v}} = "
        r"\delta^{(4)}_{c,u,v} \cdot a^{(4)}_{c,u,v} \cdot \left(1 - a^{(4)}_{c,u,v}\right) + \delta^{(6)}_{c,u,v}"
    )
    for number in (3, 6):
        assert_formulas_are_the_engines(d, number)
    mlp = latex_of(GRAPHS["a residual MLP"](), 2)
    assert mlp["forward"] == r"a^{(2)}_{k} = x_{k} + a^{(1)}_{k}"  # sympy would write a^{(1)} + x


def test_an_addition_reading_a_tensor_twice_sends_it_twice_delta():
    tex = latex_of(GRAPHS["one addition reading a tensor twice"](), 2)
    assert tex["forward"] == r"a^{(2)}_{c,i,j} = 2 a^{(1)}_{c,i,j} + x_{c,i,j}"
    assert tex["input"].splitlines() == [
        r"\frac{\partial L}{\partial a^{(1)}_{c,i,j}} = 2 \delta^{(2)}_{c,i,j}",
        r"\left.\frac{\partial L}{\partial x_{c,i,j}}\right|_{\text{via }2} = \delta^{(2)}_{c,i,j}",
    ]


def test_a_concatenation_hands_each_input_its_own_channels_of_delta():
    d = GRAPHS["a fork feeding three consumers"]().derive()
    formulas = d.formulas(5)
    assert formulas[0].latex() == (
        r"a^{(5)}_{c,i,j} = a^{(2)}_{c,i,j} + a^{(3)}_{c - 1,i,j} + a^{(4)}_{c - 3,i,j}"
    )
    assert formulas[0].note == "indices count from 0; each input reads 0 at indices outside its bounds"
    # Σ_c δ_c [c − 1 = v]: c = v + 1 lies inside c's range for every v, so the sum goes
    assert [f.latex() for f in formulas if f.kind == "input"] == [
        r"\frac{\partial L}{\partial a^{(2)}_{u,i,j}} = \delta^{(5)}_{u,i,j}",
        r"\frac{\partial L}{\partial a^{(3)}_{v,i,j}} = \delta^{(5)}_{v + 1,i,j}",
        r"\frac{\partial L}{\partial a^{(4)}_{w,i,j}} = \delta^{(5)}_{w + 3,i,j}",
    ]
    vectors = latex_of(dense_beside_pool(), 4)
    assert vectors["forward"] == r"a^{(4)}_{f} = a^{(2)}_{f} + a^{(3)}_{f - 3}"
    assert vectors["input"].splitlines() == [
        r"\frac{\partial L}{\partial a^{(2)}_{u}} = \delta^{(4)}_{u}",
        r"\frac{\partial L}{\partial a^{(3)}_{v}} = \delta^{(4)}_{v + 3}",
    ]


def test_global_average_pooling_and_activation_layers():
    graph = GRAPHS["residual, identity shortcut"]()
    pool = latex_of(graph, 5)
    assert pool["forward"] == r"a^{(5)}_{c} = \frac{1}{M N} \sum_{i,j} a^{(4)}_{c,i,j}"
    assert pool["input"] == r"\frac{\partial L}{\partial a^{(4)}_{c,u,v}} = \frac{1}{M N} \delta^{(5)}_{c}"
    assert latex_of(graph, 5, general=False)["input"] == (
        r"\frac{\partial L}{\partial a^{(4)}_{c,u,v}} = \frac{1}{16} \delta^{(5)}_{c}"
    )
    layers = GRAPHS["activation layers"]()
    relu, tanh = latex_of(layers, 2), latex_of(layers, 4)
    assert relu["forward"] == r"a^{(2)}_{c,i,j} = \operatorname{ReLU}\left(a^{(1)}_{c,i,j}\right)"
    assert relu["input"] == (
        r"\frac{\partial L}{\partial a^{(1)}_{c,i,j}} = \delta^{(2)}_{c,i,j} \cdot \left[a^{(1)}_{c,i,j} > 0\right]"
    )
    assert tanh["forward"] == r"a^{(4)}_{c,i,j} = \tanh\left(a^{(3)}_{c,i,j}\right)"
    # tanh′ written with the layer's output, 1 − a², as the graph's nodes write it
    assert tanh["input"] == (
        r"\frac{\partial L}{\partial a^{(3)}_{c,i,j}} = "
        r"\delta^{(4)}_{c,i,j} \cdot \left(1 - \left(a^{(4)}_{c,i,j}\right)^{2}\right)"
    )


def test_every_operation_has_a_tensor_face():
    assert "tensor_form" in FACES
    examples = {"conv": {"kernel_size": 2}, "dense": {"units": 2}, "maxpool": {"kernel_size": 2},
                "avgpool": {"kernel_size": 2}, "global_avgpool": {}, "activation": {"function": "tanh"},
                "add": {}, "concat": {}, "conv_transpose": {"out_channels": 2, "kernel_size": 2},
                "upsample": {"scale_factor": 2}, "batchnorm2d": {}, "batchnorm1d": {}}
    assert set(examples) == set(OPS)
    for key, example in examples.items():
        op = OPS[key](**example)
        x = sb.Input((4,) if key == "batchnorm1d" else (1, 4, 4))
        inputs = (x,) if op.arity == 1 else (x, sb.Conv2D(kernel_size=1)(x))
        # batch norm in eval mode: one sample's formulas (train mode's couple the batch)
        net = sb.Network(inputs=x, outputs=op(*inputs), loss="sse", mode="eval")
        formulas = net.derive().formulas(len(net.layers))
        inputs_read = [f for f in formulas if f.kind == "input"]
        assert {"forward", "delta", "input"} <= {f.kind for f in formulas}, key
        assert len(inputs_read) == len(inputs), key  # a gradient for each input it reads


def test_bad_layer_numbers_and_missing_values_say_what_is_wrong():
    d = NETWORKS["article"].derive()
    with pytest.raises(ValueError, match=r"layer must be 1\.\.3, got 4"):
        d.formulas(4)
    weight = d.formulas(1)[3]
    with pytest.raises(KeyError, match="no values for 'input'"):
        weight.at((0, 0, 0, 0), {"delta": np.zeros(9)})


# ---- against the numpy reference --------------------------------------------------------------

LAYERS = {
    "conv 3x3, stride 2, padding 1, bias": sb.Conv2D(out_channels=3, kernel_size=3, stride=2,
                                                     padding=1, bias=True),
    "conv 2x3, dilation 2x1, stride 2x1, padding 1x2": sb.Conv2D(
        out_channels=2, kernel_size=(2, 3), stride=(2, 1), padding=(1, 2), dilation=(2, 1)),
    "conv 3x3, dilation 2, stride 3, padding 1": sb.Conv2D(out_channels=2, kernel_size=3, dilation=2,
                                                           stride=3, padding=1),
    "dense with bias": sb.Dense(units=3, bias=True),
    "max pool 3x3, stride 2, padding 1": sb.MaxPool2D(kernel_size=3, stride=2, padding=1),
    "avg pool 2x2, stride 1, padding 1": sb.AvgPool2D(kernel_size=2, stride=1, padding=1),
}


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_formulas_and_facts_agree_with_the_reference_at_random_points(name, rng):
    # One layer, identity activation, L = ½ Σ (z − y)²: δ = z − y, read off the reference forward.
    net = sb.Network((2, 5, 4), [LAYERS[name]], loss="sse")
    d = net.derive()
    for _ in range(2):
        x = rng.standard_normal(net.input_shape)
        y = rng.standard_normal(net.output_size)
        params = {n: rng.standard_normal(shape) for n, shape in net.parameters.items()}
        z = reference.forward(net, x[None], params)[0][0]
        expected = reference.loss_and_grads(net, x, y, params).grads
        values = {"input": x, "delta": z.ravel() - y, "output": z, **{n[0]: v for n, v in params.items()}}
        checked = set()
        for formula in d.formulas(1):
            kind = formula.restates.kind if isinstance(formula, Fact) else formula.kind
            if kind not in ("W", "b", "input", "forward"):
                continue
            got = np.array([float(formula.at(p, values)) for p in formula.positions()])
            want = {"forward": z, "input": expected["x"]}.get(kind, expected.get(f"{kind}1"))
            np.testing.assert_allclose(got, np.ravel(want), rtol=1e-9, atol=1e-12, err_msg=formula.latex())
            checked.add(formula.kind)
        assert checked >= {"forward", "input"} | {n[0] for n in net.parameters}  # W, b
        assert ("fact" in checked) == (not name.startswith(("max", "avg")))


def reference_layers(net: sb.Network, x: np.ndarray, y: np.ndarray, params: dict) -> SimpleNamespace:
    """One sample's values at every layer, from the numpy reference's operations chained as
    ``reference.loss_and_grads`` chains them: each layer's z and a (``a[0]`` is x), its δ =
    ∂L/∂z, its upstream ∂L/∂a (the sum over its readers), the part each layer sends back to
    each layer it reads, ``parts[(reader, source)]``, and the parameter gradients."""
    inputs, zs = reference.forward_pass(net, x[None], params)
    a = {0: x[None]}
    for number, op in enumerate(net.layers, start=1):
        z = zs[number - 1]
        a[number] = reference.ACTIVATIONS[op.activation][0](z) if op.has_activation else z
    last = len(net.layers)
    upstream = {last: reference.LOSSES[net.loss][1](a[last].reshape(1, -1), y[None]).reshape(a[last].shape)}
    delta, parts, grads = {}, {}, {}
    for number in range(last, 0, -1):
        op, z = net.layers[number - 1], zs[number - 1]
        delta[number] = upstream[number] * (reference.ACTIVATIONS[op.activation][1](z) if op.has_activation else 1)
        own = {prefix: params[name] for prefix, name in net.layer_parameters(number).items()}
        taken, layer_grads = op.reference_backward(delta[number], inputs[number - 1], own)
        for source, part in zip(net.sources[number - 1], op.per_input(taken)):
            parts[(number, source)] = parts.get((number, source), 0) + part
            upstream[source] = upstream.get(source, 0) + part
        grads |= {net.layer_parameters(number)[prefix]: g for prefix, g in layer_grads.items()}

    def first(table: dict) -> dict:  # the one sample
        return {k: np.asarray(v)[0] for k, v in table.items()}

    return SimpleNamespace(z={n: z[0] for n, z in enumerate(zs, start=1)}, a=first(a), delta=first(delta),
                           upstream=first(upstream), parts=first(parts), grads=first(grads))


def reference_values(net: sb.Network, ref: SimpleNamespace, number: int, y: np.ndarray, params: dict) -> dict:
    """What ``Formula.at`` reads for layer ``number``'s formulas, from the reference: its roles,
    and, by name, the tensors of the layers reading it (for its upstream formula)."""
    values = {"y": y}
    if number > 0:
        values |= {
            **{("input" if k == 0 else f"input{k + 1}"): ref.a[s] for k, s in enumerate(net.sources[number - 1])},
            "output": ref.z[number], "activation": ref.a[number], "upstream": ref.upstream[number],
            "delta": ref.delta[number],
            **{prefix: params[name] for prefix, name in net.layer_parameters(number).items()},
        }
    values["x" if number == 0 else f"a{number}"] = ref.a[number]
    for reader in net.consumers(number) if number < len(net.layers) else ():
        values |= {f"a{reader}": ref.a[reader], f"z{reader}": ref.z[reader], f"delta{reader}": ref.delta[reader],
                   **{name: params[name] for name in net.layer_parameters(reader).values()}}
    return values


def reference_expected(net: sb.Network, ref: SimpleNamespace, number: int, kind: str, source: int | None):
    """What the reference gives for a formula of ``kind`` of layer ``number``."""
    if kind == "upstream":
        return ref.upstream[number]
    if kind == "input":
        return ref.parts[(number, source)]
    if kind in ("W", "b"):
        return ref.grads[net.layer_parameters(number)[kind]]
    return {"forward": ref.z, "activation": ref.a, "loss": ref.upstream, "delta": ref.delta}[kind][number]


def assert_formulas_agree_with_the_reference(net: sb.Network, rng: np.random.Generator,
                                            sample: int | None = None) -> set[str]:
    """Every formula and fact of every layer (and the input's upstream, where several layers
    read x) at one random point, written out at every index (or at ``sample`` of them) over
    the reference's numbers; the kinds of formula checked."""
    d = net.derive()
    x = rng.standard_normal(net.input_shape)
    y = rng.dirichlet(np.ones(net.output_size))  # a probability vector: softmax − y's condition holds
    # weights of about 1/√(fan-in) keep a deep network's logits small: e^a stays a float
    params = {n: rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:] or (1,))) for n, shape in net.parameters.items()}
    ref = reference_layers(net, x, y, params)
    truth = reference.loss_and_grads(net, x, y, params).grads  # the chained parts are the reference's
    np.testing.assert_allclose(ref.upstream[0], truth["x"], rtol=1e-12)
    for name, gradient in ref.grads.items():
        np.testing.assert_allclose(gradient, truth[name], rtol=1e-12)
    checked = set()
    for number in range(len(net.layers) + 1):
        if number == 0:
            formulas = [upstream_formula(d, 0)] if len(net.consumers(0)) > 1 else []
        else:
            formulas = d.formulas(number)
        values = reference_values(net, ref, number, y, params)
        sources = iter(dict.fromkeys(net.sources[number - 1]) if number else ())
        source_of = {}
        for formula in formulas:
            if formula.kind == "input":
                source_of[id(formula)] = next(sources)
            restated = formula.restates if isinstance(formula, Fact) else formula
            want = np.ravel(reference_expected(net, ref, number, restated.kind, source_of.get(id(restated))))
            positions = list(formula.positions())
            chosen = range(len(positions))
            if sample is not None and len(positions) > sample:
                chosen = sorted(rng.choice(len(positions), sample, replace=False))
            got = np.array([float(formula.at(positions[k], values)) for k in chosen])
            assert len(positions) == len(want)
            np.testing.assert_allclose(got, want[list(chosen)], rtol=1e-9, atol=1e-12,
                                       err_msg=f"layer {number}: {formula.latex()}")
            checked.add(formula.kind)
    return checked


@pytest.mark.parametrize("name", GRAPH_NAMES)
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_graph_formulas_and_facts_agree_with_the_reference_at_random_points(name, rng):
    net = GRAPHS[name]()
    checked = assert_formulas_agree_with_the_reference(net, rng)
    forked = any(len(net.consumers(n)) > 1 for n in range(len(net.layers)))
    assert {"forward", "delta", "input", *(["upstream"] if forked else [])} <= checked


@pytest.mark.slow
def test_resnet_tiny_formulas_and_facts_agree_with_the_reference_at_sampled_indices(rng):
    checked = assert_formulas_agree_with_the_reference(sb.presets.resnet_tiny(), rng, sample=12)
    assert checked == {"forward", "activation", "upstream", "delta", "W", "b", "input", "fact", "loss"}


def test_a_value_too_large_for_a_float_is_an_error_not_a_wrong_number():
    net = sb.Network((2,), [sb.Dense(units=2)], loss="cross_entropy")
    loss = next(f for f in net.derive().formulas(1) if f.kind == "loss")
    assert float(loss.at((0,), {"activation": [1.0, 0.0], "y": [0.5, 0.5]})) == pytest.approx(
        np.e / (np.e + 1) - 0.5)
    with pytest.raises(OverflowError, match="exp of these values is not a finite float: inf"):
        loss.at((0,), {"activation": [800.0, 0.0], "y": [0.5, 0.5]})


def test_max_pooling_routes_ties_to_the_first_maximum_as_the_reference_does(rng):
    net = sb.Network((1, 4, 4), [sb.MaxPool2D(kernel_size=2, stride=1, padding=1)], loss="sse")
    (gradient,) = [f for f in net.derive().formulas(1) if f.kind == "input"]
    x = rng.integers(0, 2, size=(1, 4, 4)).astype(float)  # zeros and ones: windows tie
    delta = rng.standard_normal(25)
    y = reference.forward(net, x[None], {})[0][0].ravel() - delta  # so that z − y = δ
    expected = reference.loss_and_grads(net, x, y, {}).grads["x"].ravel()
    got = [gradient.at(p, {"input": x, "delta": delta}) for p in gradient.positions()]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_softmax_minus_y_matches_the_reference_only_for_probability_targets(rng):
    net = sb.Network((4,), [sb.Dense(units=3)], loss="cross_entropy")
    loss, fact = [f for f in net.derive().formulas(1) if f.kind in ("loss", "fact")][:2]
    logits = rng.standard_normal(3)
    reference_gradient = reference.LOSSES["cross_entropy"][1]
    for y, probability in [(np.array([0.2, 0.5, 0.3]), True), (np.array([0.2, 0.5, 0.9]), False)]:
        expected = reference_gradient(logits[None], y[None])[0]
        values = {"activation": logits, "y": y}
        derived = np.array([float(loss.at(p, values)) for p in loss.positions()])
        short = np.array([float(fact.at(p, values)) for p in fact.positions()])
        np.testing.assert_allclose(derived, expected, rtol=1e-9)
        assert np.allclose(short, expected) == probability


def test_formula_is_a_sympy_equation_with_its_letters():
    weight = NETWORKS["article"].derive().formulas(1)[3]
    assert repr(weight) == (
        "<Formula W: dL_dW1[o, c, m, n] = "
        "Sum(delta1[o, i, j]*x[c, d*m + i*s - p, d*n + j*s - p], (i, 0, 2), (j, 0, 2))>"
    )
    assert isinstance(weight, Formula)
    assert isinstance(weight.equation, sympy.Eq)
    assert [(str(x), n) for x, n in weight.letters] == [("o", 1), ("c", 1), ("m", 2), ("n", 2)]
    assert list(weight.positions()) == [(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 0), (0, 0, 1, 1)]


@pytest.mark.slow
def test_every_formula_typesets_with_pdflatex(tmp_path):
    lines = [r"\documentclass{article}", r"\usepackage{amsmath,amssymb}", r"\begin{document}"]
    for net in [*NETWORKS.values(), *(make() for make in GRAPHS.values()), sb.presets.resnet_tiny()]:
        d = net.derive()
        written = [upstream_formula(d, 0)] if len(net.consumers(0)) > 1 else []
        for number in range(1, len(net.layers) + 1):
            written += d.formulas(number) + d.formulas(number, general=False)
        for formula in written:
            lines.append(rf"\[ {formula.latex()} \]")
            lines += [rf"\[ {w} \]" for w in getattr(formula, "where_latex", list)()]
    lines.append(r"\end{document}")
    (tmp_path / "formulas.tex").write_text("\n".join(lines), encoding="utf-8")
    command = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "formulas.tex"]
    run = subprocess.run(command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, latex_errors(run.stdout)


# ---- the two convolutions, related ------------------------------------------------------------

TRANSPOSED = {
    "2x2": {"kernel_size": 2},
    "3x3, stride 2, padding 1, output_padding 1": {"kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1},
    "2x3, stride 2x1, padding 1x0, dilation 1x2": {"kernel_size": (2, 3), "stride": (2, 1), "padding": (1, 0),
                                                       "dilation": (1, 2)},
}


@pytest.mark.parametrize("name", TRANSPOSED)
def test_a_transposed_convolution_is_its_convolutions_input_gradient_and_back(name):
    x = sb.Input((2, 3, 3))
    net = sb.Network(inputs=x, outputs=sb.ConvTranspose2D(out_channels=2, **TRANSPOSED[name])(x), loss="sse")
    d = net.derive()
    forward, backward = relations(d, 1)
    assert forward.holds and backward.holds
    assert (forward.formula.kind, forward.twin.kind, backward.formula.kind, backward.twin.kind) == (
        "forward", "input", "input", "forward")
    # the convolution's tensors are printed with a tilde, the layer's as the layer's
    assert r"\tilde{\delta}" in forward.twin.latex() and r"\tilde{W}" in forward.twin.latex()
    assert r"\tilde{x}" in backward.twin.latex() and "W^{(1)}" in backward.formula.latex()


def test_the_relation_fails_for_a_convolution_that_is_not_the_transposed_one():
    x = sb.Input((2, 3, 3))
    net = sb.Network(inputs=x, outputs=sb.ConvTranspose2D(out_channels=2, kernel_size=3, padding=1)(x), loss="sse")
    ours, theirs, shared = adjoint_formulas(net.derive(), 1)
    assert shared == ("W", "b")  # the convolution's declared parameters: the weights both read
    forward = next(f for f in ours if f.kind == "forward")
    twin = next(f for f in theirs if f.kind == "input")
    assert agree(forward, {"input": "delta"}, twin, shared)
    (weight,) = [e for e in twin.rhs.atoms(sympy.Indexed) if len(e.indices) == 4]
    o, c, m, n = weight.indices
    flipped = weight.base[o, c, 2 - m, n]  # the kernel read upside down
    assert not agree(forward, {"input": "delta"}, replace(twin, rhs=twin.rhs.xreplace({weight: flipped})), shared)
    swapped = weight.base[c, o, m, n]  # the channels read the other way round
    assert not agree(forward, {"input": "delta"}, replace(twin, rhs=twin.rhs.xreplace({weight: swapped})), shared)
    shifted = weight.base[o, c, m, n + 1]  # one place off (reading 0 past the kernel's last column)
    assert not agree(forward, {"input": "delta"}, replace(twin, rhs=twin.rhs.xreplace({weight: shifted})), shared)


def test_no_other_operation_names_an_adjoint():
    assert relations(NETWORKS["article"].derive(), 1) == []


def test_a_transposed_convolution_and_an_upsampling_write_u_v_for_output_rows_and_columns():
    x = sb.Input((1, 2, 2))
    for op in (sb.ConvTranspose2D(out_channels=1, kernel_size=2), sb.Upsample(scale_factor=2)):
        forward = sb.Network(inputs=x, outputs=op(x), loss="sse").derive().formulas(1)[0]
        assert "_{o,u,v}" in forward.latex() or "_{c,u,v}" in forward.latex()
        assert ",y" not in forward.latex() and ",x" not in forward.latex()


def test_batch_norm_in_the_tensor_view_writes_gamma_beta_and_its_statistics():
    x = sb.Input((1, 3, 3))
    out = sb.Dense(units=2)(sb.BatchNorm2D()(sb.Conv2D(kernel_size=2)(x)))
    train = sb.Network(inputs=x, outputs=out, loss="sse")
    forward, *rest = train.derive(batch=2).formulas(2)
    assert forward.latex() == (r"a^{(2)}_{c,i,j} = \frac{\left(a^{(1)}_{c,i,j} - \mu_{c}\right) \gamma^{(2)}_{c}}"
                               r"{\sqrt{\sigma^{2}_{c} + 1.0 \cdot 10^{-5}}} + \beta^{(2)}_{c}")
    # train mode: statistics of the batch, not constants, so no one-sample input gradient
    assert [f.kind for f in rest] == ["delta", "gamma", "beta"] and "Derivation.compact" in forward.note
    assert rest[1].latex().startswith(r"\frac{\partial L}{\partial \gamma^{(2)}_{c}} = ")
    formulas = train.with_mode("eval").derive().formulas(2)
    assert r"\overline{\mu}_{c}" in formulas[0].latex() and r"\overline{\sigma^{2}}_{c}" in formulas[0].latex()
    assert formulas[-1].latex() == (r"\frac{\partial L}{\partial a^{(1)}_{c,i,j}} = \frac{\delta^{(2)}_{c,i,j} "
                                    r"\gamma^{(2)}_{c}}{\sqrt{\overline{\sigma^{2}}_{c} + 1.0 \cdot 10^{-5}}}")
