"""Networks as graphs: the functional API, specs with names and inputs, and the engine's sum
over every layer that reads a node (the article's rule (20), "multiple dependencies")."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from graphs import GRAPHS, read_twice, residual_identity
from oracle import assert_same_gradients, random_point, torch_loss_and_grads

import symbackprop as sb
from symbackprop import reference

# ---- the functional API ------------------------------------------------------------------------


def test_layers_are_numbered_in_the_order_they_were_written():
    x = sb.Input((1, 4, 4))
    h = sb.Conv2D(out_channels=2, kernel_size=3, padding=1, activation="relu")(x)
    r = sb.Conv2D(out_channels=2, kernel_size=3, padding=1)(h)
    y = sb.ReLU()(sb.Add()(h, r))
    net = sb.Network(inputs=x, outputs=sb.Dense(units=3)(y), loss="sse")
    assert [op.key for op in net.layers] == ["conv", "conv", "add", "activation", "dense"]
    assert net.sources == ((0,), (1,), (1, 2), (3,), (4,))
    assert [net.consumers(l) for l in range(6)] == [(1,), (2, 3), (3,), (4,), (5,), ()]
    assert net.shapes == ((1, 4, 4), (2, 4, 4), (2, 4, 4), (2, 4, 4), (2, 4, 4), (3,))
    assert net.input_shape_of(3) == ((2, 4, 4), (2, 4, 4)) and net.input_shape_of(2) == (2, 4, 4)
    assert list(net.parameters) == ["W1", "W2", "W5"]  # a layer's parameters keep its number
    assert net.parameter_owner["W5"] == (5, "W") and net.layer_parameters(2) == {"W": "W2"}
    assert not net.is_chain and sb.presets.article().is_chain


def test_settings_that_every_layer_has_come_first_as_in_keras():
    # out_channels and kernel_size, units, a pooling's kernel_size: positional; the rest by name
    x = sb.Input((3, 16, 16))
    h = sb.Conv2D(8, 3, padding=1, activation="relu")(x)
    r = sb.Conv2D(8, 3, padding=1, activation="relu")(h)
    r = sb.Conv2D(8, 3, padding=1)(r)
    h = sb.ReLU()(sb.Add()(h, r))
    out = sb.Dense(10)(sb.GlobalAvgPool2D()(h))
    net = sb.Network(inputs=x, outputs=out, loss="cross_entropy")
    assert net.layers[0] == sb.Conv2D(out_channels=8, kernel_size=3, padding=1, activation="relu")
    assert net.parameter_count == 3 * 8 * 9 + 2 * 8 * 8 * 9 + 8 * 10
    assert sb.MaxPool2D(2) == sb.MaxPool2D(kernel_size=2)
    assert sb.ConvTranspose2D(2, 4, stride=2).kernel_size == (4, 4)
    with pytest.raises(TypeError, match="kernel_size"):
        sb.Conv2D(8)
    with pytest.raises(TypeError):
        sb.Conv2D(8, 3, 2)  # the stride is named


def test_a_tensor_made_but_not_used_is_not_part_of_the_network():
    x = sb.Input((4,))
    sb.Dense(units=9)(x)  # written, then left aside
    net = sb.Network(inputs=x, outputs=sb.Dense(units=2)(x))
    assert net.parameters == {"W1": (2, 4)}


def test_shapes_are_checked_as_each_operation_is_applied():
    x = sb.Input((1, 4, 4))
    with pytest.raises(sb.SpecError, match=r"^conv: kernel 5x5 is larger than its padded input 4x4$"):
        sb.Conv2D(kernel_size=5)(x)
    with pytest.raises(sb.SpecError, match=r"^add: its inputs have shapes 1x4x4 and 2x3x3; an addition needs one shape$"):
        sb.Add()(x, sb.Conv2D(out_channels=2, kernel_size=2)(x))
    with pytest.raises(sb.SpecError, match=r"^add: reads two or more inputs, got 1$"):
        sb.Add()(x)
    with pytest.raises(sb.SpecError, match=r"^conv: reads 1 input, got 2$"):
        sb.Conv2D(kernel_size=2)(x, x)
    with pytest.raises(sb.SpecError, match=r"^concat: its inputs have shapes 1x4x4 and 1x3x3; a concatenation"):
        sb.Concat()(x, sb.Conv2D(kernel_size=2)(x))
    with pytest.raises(sb.SpecError, match=r"^dense: expected tensors .*, got \(1, 4, 4\)"):
        sb.Dense(units=2)((1, 4, 4))
    with pytest.raises(sb.SpecError, match=r"^input: the input shape must be"):
        sb.Input((4, 4))


def test_a_network_has_one_input_and_one_output():
    x, other = sb.Input((4,)), sb.Input((4,))
    joined = sb.Add()(sb.Dense(units=2)(x), sb.Dense(units=2)(other))
    with pytest.raises(sb.SpecError, match="^outputs: computed from inputs and from another Input"):
        sb.Network(inputs=x, outputs=joined)
    with pytest.raises(sb.SpecError, match="^outputs: not computed from inputs"):
        sb.Network(inputs=x, outputs=sb.Dense(units=2)(other))
    with pytest.raises(sb.SpecError, match="^outputs: the loss reads one output tensor, got 2"):
        sb.Network(inputs=x, outputs=[sb.Dense(units=2)(x), sb.Dense(units=3)(x)])
    with pytest.raises(sb.SpecError, match="^layers: the network has no layers"):
        sb.Network(inputs=x, outputs=x)
    with pytest.raises(sb.SpecError, match="^give either input_shape and layers .* or inputs and outputs"):
        sb.Network((4,), [sb.Dense(units=2)], inputs=x, outputs=sb.Dense(units=2)(x))


def test_layer_names_are_checked():
    x = sb.Input((4,))
    h = sb.Dense(units=3)(x, name="hidden")
    with pytest.raises(sb.SpecError, match="^layer 2: name 'hidden' is layer 1's already$"):
        sb.Network(inputs=x, outputs=sb.Dense(units=2)(h, name="hidden"))
    with pytest.raises(sb.SpecError, match="^layer 1: name must be .* and not 'input'"):
        sb.Network(inputs=x, outputs=sb.Dense(units=2)(x, name="input"))
    net = sb.Network(inputs=x, outputs=sb.Dense(units=2)(h))
    assert net.layer_names == ("hidden", None) and net.reference_name(2) == "layer2"


def test_with_choices_keeps_the_wiring():
    x = sb.Input((4,))
    h = sb.Dense(units=4, activation="g")(x)
    net = sb.Network(inputs=x, outputs=sb.Dense(units=2)(sb.Add()(x, h)))
    chosen = net.with_choices(g="tanh", loss="sse")
    assert chosen.sources == net.sources and chosen.layers[0].activation == "tanh"
    assert chosen.loss == "sse" and sb.Activation("g").with_activation("relu") == sb.Activation("relu")


def test_an_addition_reads_its_inputs_laid_end_to_end():
    x = sb.Input((1, 2, 2))
    net = sb.Network(inputs=x, outputs=sb.Add()(x, sb.Conv2D(kernel_size=1)(x)), loss="sse")
    # output i reads element i of x (1..4) and element i of the conv's output (5..8)
    assert net.position_sets(2) == [(1, 5), (2, 6), (3, 7), (4, 8)]
    # the loss's, the addition's, the conv's and its identity activation's
    assert net.graph_edges == 4 + 4 * 2 + 4 * 1 + 4


def test_the_graph_counts_its_edges_from_the_shapes():
    for build in GRAPHS.values():
        net = build()
        d = net.derive()
        built = sum(len(node.read) if hasattr(node, "read") else len(node.inputs)
                    for layer in d.graph.layers for node in (*layer.z, *layer.a))
        assert net.graph_edges >= built + net.output_size  # padding places counted: an upper bound


# ---- specs -------------------------------------------------------------------------------------

RESIDUAL_YAML = """
name: residual
input: [1, 4, 4]
layers:
  - conv: {out_channels: 2, kernel_size: 3, padding: 1, activation: relu}
    name: stem
  - conv: {out_channels: 2, kernel_size: 3, padding: 1, bias: true}
  - add: {}
    inputs: [stem, layer2]
  - activation: {function: relu}
  - global_avgpool: {}
  - dense: {units: 3, bias: true}
loss: cross_entropy
"""


def test_a_spec_names_layers_and_says_what_each_reads(tmp_path):
    path = tmp_path / "residual.yaml"
    path.write_text(RESIDUAL_YAML.replace("[stem, layer2]", "[stem, second]").replace(
        "bias: true}\n  - add", "bias: true}\n    name: second\n  - add"))
    net = sb.load_spec(path)
    assert net.sources == residual_identity().sources
    assert net.layer_names == ("stem", "second", None, None, None, None)
    assert net.parameters == residual_identity().parameters


def test_to_dict_writes_names_and_inputs_and_reads_back():
    net = sb.presets.resnet_tiny()
    spec = net.to_dict()
    assert spec["layers"][3] == {"add": {}, "name": "layer4", "inputs": ["layer1", "layer3"]}
    assert spec["layers"][7]["inputs"] == ["layer5"]  # the shortcut reads block 1's output
    again = sb.Network.from_dict(spec)
    assert again.sources == net.sources and again.parameters == net.parameters
    assert "name" not in sb.presets.lenet5().to_dict()["layers"][0]  # a chain stays as it was


@pytest.mark.parametrize("change, message", [
    (("[stem, layer2]", "[stem, nowhere]"),
     "layer 3 (add): inputs names 'nowhere', which is not an earlier layer's name; known here: input, stem"),
    (("[stem, layer2]", "[stem]"), "layer 3 (add): reads two or more inputs, got 1"),
    (("[stem, layer2]", "stem"), "layer 3 (add): reads two or more inputs, got 1"),
    (("[stem, layer2]", "[stem, 3]"), "layer 3 (add): inputs names 3, which is not an earlier layer's name"),
    (("[stem, layer2]", "[]"), "layer 3 (add): inputs must be a list of layer names (or 'input'), got []"),
    (("[stem, layer2]", "[input, stem]"), "layer 3 (add): its inputs have shapes 1x4x4 and 2x4x4"),
    (("    name: stem", "    name: input"), "layer 1: name must be"),
    (("  - activation: {function: relu}", "  - activation: {function: swish}"),
     "layer 4 (activation): unknown activation 'swish'"),
])
def test_graph_spec_errors_say_where_and_what(tmp_path, change, message):
    path = tmp_path / "net.yaml"
    spec = RESIDUAL_YAML.replace("bias: true}\n  - add", "bias: true}\n    name: layer2\n  - add")
    path.write_text(spec.replace(*change))
    with pytest.raises(sb.SpecError) as error:
        sb.load_spec(path)
    assert str(error.value).startswith(f"{path}: {message}"), str(error.value)


def test_a_spec_layer_that_nothing_reads_is_refused(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("input: [4]\nlayers:\n  - dense: {units: 3}\n  - dense: {units: 2}\n    inputs: [input]\n")
    with pytest.raises(sb.SpecError, match=r"layer 1 \(dense\): nothing reads its output on the way to the last layer"):
        sb.load_spec(path)


# ---- the engine sums over the layers that read a node ----------------------------------------


def test_a_node_read_by_two_layers_gets_the_sum_of_both_paths():
    d = residual_identity().derive()
    h1 = d.graph.upstream_of(1)[0]  # ∂L/∂a^(1)_1: read by the second conv and by the addition
    terms = d.upstream_terms_of(h1)
    consumers = {d.graph.layers[2].z[0].symbol, *(node.symbol for node in d.graph.layers[1].z)}
    assert {t.z for t in terms} <= consumers
    assert any(t.z == d.graph.layers[2].z[0].symbol for t in terms)  # the shortcut's: dL/da3_1 · 1
    # the corner pixel lies in 4 windows of the padded 3x3 kernel, in each of 2 output channels
    assert sum(t.z in {n.symbol for n in d.graph.layers[1].z} for t in terms) == 4 * 2
    assert d.upstream(h1) == sympy.Add(*[t.expr for t in terms])


def test_the_input_read_twice_by_one_addition_gets_two_terms():
    d = read_twice().derive()
    x1 = d.graph.x[0]
    shortcut = [t for t in d.terms(x1) if t.z in {n.symbol for n in d.graph.layers[1].z}]
    assert len(shortcut) == 1 and shortcut[0].factor == 1  # x is the addition's second input
    h1 = d.graph.upstream_of(1)[0]  # h, the addition's first and third input: two terms of 1
    assert [t.factor for t in d.upstream_terms_of(h1)] == [1, 1]
    assert d.upstream(h1) == 2 * d.graph.upstream_of(2)[0]


@pytest.mark.parametrize("name", list(GRAPHS))
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_every_graph_equals_torch_through_every_reduce(name, rng):
    net = GRAPHS[name]()
    d = net.derive()
    x, y, params = random_point(net, rng)
    by_torch = torch_loss_and_grads(net, x, y, params)
    assert_same_gradients(d.numeric(style="nodes")(x, y, params), *by_torch)
    assert_same_gradients(d.numeric(style="layers")(x, y, params), *by_torch)
    batch = np.stack([x, random_point(net, rng)[0]])
    targets = np.stack([y, y])
    per_sample = reference.loss_and_grads(net, batch, targets, params)
    summed = d.numeric(reduce="sum")(batch, targets, params)
    assert summed.loss == pytest.approx(per_sample.loss.sum(), rel=1e-12)
    for key, grad in per_sample.grads.items():
        expected = grad if key == "x" else grad.sum(axis=0)
        np.testing.assert_allclose(summed.grads[key], expected, rtol=1e-9, atol=1e-12)


# ---- a batch in the scalar graph ---------------------------------------------------------------


def test_a_batch_derivation_sums_the_samples_gradients(rng):
    # Without a layer that couples the samples, derive(batch=2) gives each weight the sum of the
    # two samples' gradients: N separate derivations, added.
    net = GRAPHS["a residual MLP"]()
    d = net.derive(batch=2)
    x, y, params = random_point(net, rng)
    x2, y2, _ = random_point(net, rng)
    values = dict(zip(d.graph.x, [*x, *x2])) | dict(zip(d.graph.y, [*y, *y2]))
    for name, array in params.items():
        values |= dict(zip(sympy.flatten(d.symbols.params[name].tolist()), array.ravel()))
    per_sample = reference.loss_and_grads(net, np.stack([x, x2]), np.stack([y, y2]), params)
    for name in params:
        closed = [float(e.xreplace(values)) for e in sympy.flatten(d.gradient(name).tolist())]
        np.testing.assert_allclose(closed, per_sample.grads[name].sum(axis=0).ravel(), rtol=1e-12)
    assert float(d.loss.xreplace(values)) == pytest.approx(per_sample.loss.sum(), rel=1e-12)
    assert d.symbols.x.shape == (2, 4) and str(d.graph.x[5]) == "x_2__2"
    mean = net.derive(batch=2, reduce="mean")
    assert float(mean.loss.xreplace(values)) == pytest.approx(per_sample.loss.mean(), rel=1e-12)


def test_a_batch_derivation_runs_the_per_layer_code(rng):
    net = GRAPHS["a residual MLP"]()
    x, y, params = random_point(net, rng)
    out = net.derive(batch=3).numeric(reduce="sum")(np.stack([x, x]), np.stack([y, y]), params)
    assert out.grads["W1"].shape == (4, 4)
    with pytest.raises(ValueError, match="style='nodes' is the program of one sample"):
        net.derive(batch=3).numeric(style="nodes")
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        net.derive(batch=0)
