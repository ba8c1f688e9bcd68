"""The tensor view: every layer's general formulas, derived from its operation's index form,
proved equal — at every concrete index — to the scalar chain form the engine derived node by
node, and the facts students remember proved against the numpy reference."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from strategies import networks

import symbackprop as sb
from symbackprop import reference
from symbackprop.derivation import Derivation
from symbackprop.latex import latex_errors
from symbackprop.ops import FACES, OPS
from symbackprop.tensor import Fact, Formula, scalar_values

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


@pytest.fixture(scope="module", params=list(NETWORKS))
def derivation(request) -> Derivation:
    return NETWORKS[request.param].derive()


def engine_forms(d: Derivation, number: int, kind: str) -> list[sympy.Expr]:
    """What the engine derived node by node for every element (flat) of what a formula of
    ``kind`` gives — the graph's nodes, ``d.chain``, ``d.upstream`` — written with ∂L/∂z
    symbols, as the tensor view writes δ: ∂L/∂a · g′(z) = ∂L/∂z."""
    g = d.graph
    lg = g.layers[number - 1]
    local = d.backward(number).local
    as_dz = {}
    if lg.activated:
        as_dz = {up: dz / local[z.symbol] for up, dz, z in zip(lg.upstream, lg.z_upstream, lg.z)}
    if kind == "forward":
        return [node.expr for node in lg.z]
    if kind == "activation":
        return [node.expr for node in lg.a]
    if kind == "loss":  # ∂L/∂a of the last layer: the loss's own gradient
        return [d.upstream(up) for up in lg.upstream]
    if kind == "delta":
        return [up * local[z.symbol] for up, z in zip(lg.upstream, lg.z)]
    if kind in ("W", "b"):
        chain = sympy.flatten(d.chain(f"{kind}{number}").tolist())
    elif number == 1:  # kind "input"
        chain = sympy.flatten(d.chain("x").tolist())
    else:
        chain = [d.upstream(up) for up in g.upstream_of(number - 1)]
    return [e.xreplace(as_dz) for e in chain]


def assert_formulas_are_the_engines(d: Derivation, number: int) -> None:
    values = scalar_values(d, number)
    for formula in d.formulas(number):
        if isinstance(formula, Fact):
            continue
        expected = engine_forms(d, number, formula.kind)
        positions = list(formula.positions())
        assert len(positions) == len(expected)
        for position, engine in zip(positions, expected):
            assert sympy.expand(formula.at(position, values) - engine) == 0, (
                f"layer {number} {formula.kind} at {position}: {formula.latex()}"
            )


def test_every_formula_at_every_index_is_the_engines_chain_form(derivation):
    for number in range(1, len(derivation.network.layers) + 1):
        assert_formulas_are_the_engines(derivation, number)


@pytest.mark.slow
@settings(max_examples=10)
@given(networks(max_size=4))
def test_random_networks_formulas_are_the_engines_chain_forms(net):
    d = net.derive()
    for number in range(1, len(net.layers) + 1):
        assert_formulas_are_the_engines(d, number)
        assert all(f.check() for f in d.formulas(number) if isinstance(f, Fact))


def test_the_settings_written_as_numbers_change_nothing(derivation):
    d = derivation
    number = 1
    values = scalar_values(d, number)
    for general, concrete in zip(d.formulas(number), d.formulas(number, general=False)):
        assert concrete.rhs.free_symbols.isdisjoint(general.settings)
        for position in general.positions():
            assert sympy.expand(general.at(position, values) - concrete.at(position, values)) == 0


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


def test_every_operation_has_a_tensor_face():
    assert "tensor_form" in FACES
    examples = {"conv": {"kernel_size": 2}, "dense": {"units": 2}, "maxpool": {"kernel_size": 2},
                "avgpool": {"kernel_size": 2}, "global_avgpool": {}, "activation": {"function": "tanh"},
                "add": {}, "concat": {}, "conv_transpose": {"out_channels": 2, "kernel_size": 2},
                "upsample": {"scale_factor": 2}}
    assert set(examples) == set(OPS)
    for key, example in examples.items():
        op = OPS[key](**example)
        x = sb.Input((1, 4, 4))
        inputs = (x,) if op.arity == 1 else (x, sb.Conv2D(kernel_size=1)(x))
        net = sb.Network(inputs=x, outputs=op(*inputs), loss="sse")
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
    for net in NETWORKS.values():
        d = net.derive()
        for number in range(1, len(net.layers) + 1):
            for formula in d.formulas(number) + d.formulas(number, general=False):
                lines.append(rf"\[ {formula.latex()} \]")
                lines += [rf"\[ {w} \]" for w in getattr(formula, "where_latex", list)()]
    lines.append(r"\end{document}")
    (tmp_path / "formulas.tex").write_text("\n".join(lines), encoding="utf-8")
    command = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "formulas.tex"]
    run = subprocess.run(command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, latex_errors(run.stdout)
