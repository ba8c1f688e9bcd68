"""Building networks: shapes, parameters, position sets, spec files and their errors."""

import json

import pytest

import symbackprop as sb
from symbackprop.cli import main


def test_article_preset_has_the_articles_shapes_and_sixteen_weights():
    net = sb.presets.article()
    assert net.shapes == ((1, 4, 4), (1, 3, 3), (1, 2, 2), (2,))
    assert net.parameters == {"W1": (1, 1, 2, 2), "W2": (1, 1, 2, 2), "W3": (2, 4)}
    assert [l.activation for l in net.layers] == ["g", "g", "g"]
    assert net.loss == "generic"


def test_article_position_sets_are_the_articles_p():
    net = sb.presets.article()
    assert net.position_sets(1) == [
        (1, 2, 5, 6), (2, 3, 6, 7), (3, 4, 7, 8),
        (5, 6, 9, 10), (6, 7, 10, 11), (7, 8, 11, 12),
        (9, 10, 13, 14), (10, 11, 14, 15), (11, 12, 15, 16),
    ]
    assert net.position_sets(2) == [(1, 2, 4, 5), (2, 3, 5, 6), (4, 5, 7, 8), (5, 6, 8, 9)]
    assert net.position_sets(3) == [(1, 2, 3, 4), (1, 2, 3, 4)]


def test_output_size_follows_formula_1_with_floor_and_padding():
    layer = sb.Conv2D(kernel_size=(3, 2), stride=(2, 3), padding=(1, 0), out_channels=5)
    # rows: floor((7 + 2 - 3) / 2) + 1 = 4; columns: floor((8 - 2) / 3) + 1 = 3
    assert layer.output_shape((2, 7, 8)) == (5, 4, 3)
    net = sb.Network((2, 7, 8), [layer, sb.Dense(units=3, bias=True)])
    assert net.parameters == {"W1": (5, 2, 3, 2), "W2": (3, 60), "b2": (3,)}


def test_padding_positions_are_left_out_of_the_position_sets():
    net = sb.Network((1, 3, 3), [sb.Conv2D(kernel_size=3, padding=1)])
    sets = net.position_sets(1)
    assert sets[0] == (1, 2, 4, 5)  # top-left: the kernel's first row and column fall on padding
    assert sets[4] == (1, 2, 3, 4, 5, 6, 7, 8, 9)  # centre: the whole kernel on the image
    assert sets[8] == (5, 6, 8, 9)


def test_several_channels_number_inputs_channel_then_row_then_column():
    net = sb.Network((2, 2, 2), [sb.Conv2D(kernel_size=2, out_channels=2)])
    # kernel order is (in channel, row, column): channel 1's pixels 1..4, then channel 2's 5..8
    assert net.position_sets(1) == [(1, 2, 3, 4, 5, 6, 7, 8)] * 2


def test_dense_flattens_channel_row_column():
    net = sb.Network((2, 1, 2), [sb.Dense(units=1)])
    z = net.derive().graph.layers[0].z[0]
    assert [str(w) + "*" + str(v) for w, v in z.terms] == [
        "W1_0_0*x_1", "W1_0_1*x_2", "W1_0_2*x_3", "W1_0_3*x_4",
    ]


SPEC_YAML = """
input: [1, 4, 4]
layers:
  - conv: {out_channels: 1, kernel_size: 2, stride: 1, padding: 0, bias: false, activation: g}
  - conv: {kernel_size: 2, activation: g}
  - dense: {units: 2, activation: g}
loss: generic
"""


def test_a_yaml_spec_builds_the_same_network_as_python(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(SPEC_YAML)
    net = sb.load_spec(path)
    article = sb.presets.article()
    assert net.layers == article.layers
    assert net.input_shape == article.input_shape and net.loss == article.loss
    assert net.name == "net"


def test_a_json_spec_with_defaults(tmp_path):
    path = tmp_path / "small.json"
    path.write_text(json.dumps({"input": [1, 3, 3], "layers": [{"conv": {"kernel_size": 2}}]}))
    net = sb.load_spec(path)
    (layer,) = net.layers
    assert (layer.out_channels, layer.stride, layer.padding, layer.bias, layer.activation) == (
        1, (1, 1), (0, 0), False, "identity",
    )
    assert net.loss == "generic"


def test_to_dict_round_trips():
    net = sb.Network((2, 5, 5), [sb.Conv2D(kernel_size=(3, 2), stride=2, padding=1, bias=True,
                                           activation="relu", out_channels=3),
                                 sb.Dense(units=4, activation="sigmoid")], loss="mse")
    again = sb.Network.from_dict(net.to_dict())
    assert again.layers == net.layers and again.loss == "mse" and again.input_shape == (2, 5, 5)


BAD_SPECS = [
    ({"input": [1, 2, 2], "layers": [{"conv": {"kernel_size": 3}}]},
     "layer 1 (conv): kernel 3x3 is larger than its padded input 2x2"),
    ({"input": [1, 4, 4], "layers": [{"conv": {"kernel_size": 2}}, {"conv": {"kernel_size": 4}}]},
     "layer 2 (conv): kernel 4x4 is larger than its padded input 3x3"),
    ({"input": [1, 4, 4], "layers": [{"conv": {"kernel_size": 2, "stride": 0}}]},
     "layer 1 (conv): stride must be a positive integer or a pair of them, got 0"),
    ({"input": [1, 4, 4], "layers": [{"conv": {"kernel_size": 1.5}}]},
     "layer 1 (conv): kernel_size must be a positive integer or a pair of them, got 1.5"),
    ({"input": [1, 4, 4], "layers": [{"conv": {"kernel_size": 2, "padding": -1}}]},
     "layer 1 (conv): padding must be a non-negative integer or a pair of them, got -1"),
    ({"input": [1, 4, 4], "layers": [{"dense": {"units": 0}}]},
     "layer 1 (dense): units must be a positive integer, got 0"),
    ({"input": [1, 4, 4], "layers": [{"conv": {"kernel_size": 2, "strides": 2}}]},
     "layer 1 (conv): unknown key 'strides'; allowed: out_channels, kernel_size, stride"),
    ({"input": [1, 4, 4], "layers": [{"conv": {"kernel_size": 2, "activation": "swish"}}]},
     "layer 1 (conv): unknown activation 'swish'; choose one of g, identity, sigmoid"),
    ({"input": [1, 4, 4], "layers": [{"pool": {"size": 2}}]},
     "layer 1: unknown layer type 'pool'; choose one of conv, dense, maxpool, avgpool"),
    ({"input": [1, 4, 4], "layers": [{"dense": {"units": 2}}], "loss": "hinge"},
     "loss: unknown loss 'hinge'; choose one of generic, sse, mse, cross_entropy"),
    ({"layers": [{"dense": {"units": 2}}]}, "input: missing"),
    ({"input": [1, 4, 4], "layers": []}, "layers: the network has no layers"),
    ({"input": [1, 4], "layers": [{"dense": {"units": 2}}]}, "input: the input shape must be"),
    ({"input": [1, 4, 4], "layers": [{"conv": {}}]}, "layer 1 (conv): missing kernel_size"),
    ({"input": [1, 4, 4], "layers": [{"dense": {"units": 2}}], "lr": 0.1}, "unknown key 'lr'"),
    ({"input": [1, 4, 4], "layers": [{"dense": {"units": 2}}, {"conv": {"kernel_size": 1}}]},
     "layer 2 (conv): a convolution layer needs a (channels, height, width) input, got a vector of 2"),
    # pooling
    ({"input": [1, 2, 2], "layers": [{"maxpool": {"kernel_size": 3}}]},
     "layer 1 (maxpool): window 3x3 is larger than its padded input 2x2"),
    ({"input": [1, 4, 4], "layers": [{"conv": {"kernel_size": 2}}, {"avgpool": {"kernel_size": [2, 4]}}]},
     "layer 2 (avgpool): window 2x4 is larger than its padded input 3x3"),
    ({"input": [1, 4, 4], "layers": [{"avgpool": {"kernel_size": 3, "padding": 2}}]},
     "layer 1 (avgpool): padding 2x2 is more than half the kernel 3x3"),
    ({"input": [1, 4, 4], "layers": [{"maxpool": {"kernel_size": [2, 4], "padding": [1, 3]}}]},
     "layer 1 (maxpool): padding 1x3 is more than half the kernel 2x4"),
    ({"input": [1, 4, 4], "layers": [{"maxpool": {"kernel_size": 2, "stride": 0}}]},
     "layer 1 (maxpool): stride must be a positive integer or a pair of them, got 0"),
    ({"input": [1, 4, 4], "layers": [{"maxpool": {"kernel_size": 2, "activation": "relu"}}]},
     "layer 1 (maxpool): unknown key 'activation'; allowed: kernel_size, stride, padding"),
    ({"input": [1, 4, 4], "layers": [{"avgpool": {"stride": 1}}]}, "layer 1 (avgpool): missing kernel_size"),
    # dilation
    ({"input": [1, 4, 4], "layers": [{"conv": {"kernel_size": 2, "dilation": 0}}]},
     "layer 1 (conv): dilation must be a positive integer or a pair of them, got 0"),
    ({"input": [1, 4, 4], "layers": [{"conv": {"kernel_size": 2, "dilation": [1, 0]}}]},
     "layer 1 (conv): dilation must be a positive integer or a pair of them, got [1, 0]"),
    ({"input": [1, 4, 4], "layers": [{"conv": {"kernel_size": 3, "dilation": 2}}]},
     "layer 1 (conv): kernel 3x3 dilated to 5x5 is larger than its padded input 4x4"),
    # a vector input takes dense layers only
    ({"input": [4], "layers": [{"conv": {"kernel_size": 1}}]},
     "layer 1 (conv): a convolution layer needs a (channels, height, width) input, got a vector of 4"),
    ({"input": [4], "layers": [{"maxpool": {"kernel_size": 1}}]},
     "layer 1 (maxpool): a max pooling layer needs a (channels, height, width) input, got a vector of 4"),
    ({"input": [6], "layers": [{"dense": {"units": 3}}, {"avgpool": {"kernel_size": 1}}]},
     "layer 2 (avgpool): an average pooling layer needs a (channels, height, width) input, got a vector of 3"),
    ({"input": [0], "layers": [{"dense": {"units": 2}}]}, "input: the input shape must be"),
]


@pytest.mark.parametrize("spec, message", BAD_SPECS)
def test_bad_specs_say_where_and_what(spec, message):
    with pytest.raises(sb.SpecError) as error:
        sb.Network.from_dict(spec)
    assert message in str(error.value)
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("command", ["derive", "check", "handout"])
@pytest.mark.parametrize("spec, message", BAD_SPECS)
def test_every_bad_spec_file_is_one_line_and_exit_2_on_the_command_line(
    spec, message, command, tmp_path, capsys
):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / "out"
    assert main([command, str(path), *([] if command == "check" else ["-o", str(out)])]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().count("\n") == 0 and message in captured.err
    assert not out.exists()


def test_bad_python_layers_are_spec_errors_too():
    with pytest.raises(sb.SpecError, match="conv: stride must be a positive integer"):
        sb.Conv2D(kernel_size=2, stride=(1, 0))
    with pytest.raises(sb.SpecError, match="dense: bias must be true or false"):
        sb.Dense(units=2, bias="yes")
    with pytest.raises(sb.SpecError, match="layers: the network has no layers"):
        sb.Network((1, 4, 4), [])
    with pytest.raises(sb.SpecError, match="maxpool: padding 2x2 is more than half the kernel 3x3"):
        sb.MaxPool2D(kernel_size=3, padding=2)
    with pytest.raises(sb.SpecError, match="conv: dilation must be a positive integer"):
        sb.Conv2D(kernel_size=2, dilation=0)
    with pytest.raises(sb.SpecError, match="layer 1 \\(avgpool\\): an average pooling layer needs"):
        sb.Network((5,), [sb.AvgPool2D(kernel_size=1)])


def test_a_vector_input_spec_builds_an_mlp(tmp_path):
    path = tmp_path / "mlp.yaml"
    path.write_text(
        "input: [5]\n"
        "layers:\n"
        "  - dense: {units: 3, bias: true, activation: tanh}\n"
        "  - dense: {units: 2}\n"
        "loss: cross_entropy\n"
    )
    net = sb.load_spec(path)
    assert net.input_shape == (5,) and net.shapes == ((5,), (3,), (2,))
    assert net.parameters == {"W1": (3, 5), "b1": (3,), "W2": (2, 3)}
    assert net.position_sets(1) == [(1, 2, 3, 4, 5)] * 3
    assert sb.Network.from_dict(net.to_dict()).layers == net.layers


def test_pooling_specs_and_their_defaults(tmp_path):
    path = tmp_path / "pools.yaml"
    path.write_text(
        "input: [2, 6, 6]\n"
        "layers:\n"
        "  - maxpool: {kernel_size: 2}\n"
        "  - avgpool: {kernel_size: [3, 2], stride: 1, padding: [1, 0]}\n"
        "  - conv: {kernel_size: 2, dilation: [2, 1]}\n"
    )
    net = sb.load_spec(path)
    maxpool, avgpool, conv = net.layers
    # the stride defaults to the kernel size
    assert (maxpool.kernel_size, maxpool.stride, maxpool.padding) == ((2, 2), (2, 2), (0, 0))
    assert (avgpool.kernel_size, avgpool.stride, avgpool.padding) == ((3, 2), (1, 1), (1, 0))
    assert conv.dilation == (2, 1)
    assert net.shapes == ((2, 6, 6), (2, 3, 3), (2, 3, 2), (1, 1, 1))
    assert net.parameters == {"W3": (1, 2, 2, 2)}
    assert sb.Network.from_dict(net.to_dict()).layers == net.layers


def test_files_that_are_not_yaml_or_json(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("input: [1, 4, 4\nlayers: -\n")
    with pytest.raises(sb.SpecError, match=r"broken.yaml: not valid YAML \(line"):
        sb.load_spec(broken)
    broken_json = tmp_path / "broken.json"
    broken_json.write_text('{"input": [1, 4, 4],}')
    with pytest.raises(sb.SpecError, match="broken.json: not valid JSON"):
        sb.load_spec(broken_json)
    with pytest.raises(sb.SpecError, match="no such file"):
        sb.load_spec(tmp_path / "missing.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text")
    with pytest.raises(sb.SpecError, match="the spec must be a mapping"):
        sb.load_spec(scalar)


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("input: !!python/object/apply:os.system ['echo hacked']\nlayers: []\n")
    with pytest.raises(sb.SpecError, match="not valid YAML"):
        sb.load_spec(evil)


def test_the_cli_reports_a_bad_spec_on_one_line_exits_2_and_writes_nothing(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("input: [1, 2, 2]\nlayers:\n  - conv: {kernel_size: 3}\n")
    out = tmp_path / "out"
    assert main(["derive", str(spec), "-o", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().count("\n") == 0
    assert "layer 1 (conv): kernel 3x3 is larger than its padded input 2x2" in captured.err
    assert "Traceback" not in captured.err
    assert not out.exists()
