"""Spec files and names: duplicate keys, what a name may be, numpy integers, and a fuzz test
that feeds the loader random YAML and JSON — always a SpecError or a valid network."""

from __future__ import annotations

import json
import os
import string

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import symbackprop as sb
from symbackprop.cli import main
from symbackprop.document import render_handout
from symbackprop.network import safe_name
from symbackprop.ops import OPS

LAYERS = "layers:\n  - conv: {kernel_size: 2, activation: sigmoid}\n  - dense: {units: 1}\n"


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---- duplicate keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "top.yaml",
            "input: [1, 3, 3]\n" + LAYERS + "input: [1, 4, 4]\n",
            "duplicate key 'input' (line 5)",
        ),
        (
            "nested.yaml",
            "input: [1, 3, 3]\nlayers:\n  - conv: {kernel_size: 2, kernel_size: 3}\n",
            "duplicate key 'kernel_size' (line 3)",
        ),
        (
            "top.json",
            '{"input": [1, 3, 3], "loss": "sse", "layers": [{"dense": {"units": 1}}], "loss": "mse"}',
            "duplicate key 'loss'",
        ),
    ],
)
def test_a_key_written_twice_is_refused_naming_it(tmp_path, name, text, message):
    with pytest.raises(sb.SpecError) as error:
        sb.load_spec(write(tmp_path, name, text))
    assert (
        str(error.value) == f"{tmp_path / name}: {message}: each key may appear once in a mapping"
    )


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    text = (
        "input: [1, 4, 4]\nlayers:\n  - conv: &c {kernel_size: 2, activation: tanh}\n"
        "  - conv: {<<: *c, activation: sigmoid}\n"
    )
    net = sb.load_spec(write(tmp_path, "merge.yaml", text))
    assert [layer.activation for layer in net.layers] == ["tanh", "sigmoid"]


# ---- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "LeNet-5", "my_net_2", "7up", "x" * 64])
def test_names_that_are_safe_everywhere_are_accepted(name):
    assert sb.Network((1, 2, 2), [sb.Dense(units=1)], name=name).name == name


@pytest.mark.parametrize(
    "name", ["", "-net", "_net", "网络", "my net", "../up", "a/b", "a.b", "x" * 65, 5, None]
)
def test_other_names_are_refused_saying_what_a_name_may_be(name):
    with pytest.raises(sb.SpecError) as error:
        sb.Network((1, 2, 2), [sb.Dense(units=1)], name=name)
    assert str(error.value).startswith(
        "name: must be 1 to 64 ASCII letters, digits, - or _, starting with a letter or a digit, got "
    )
    assert len(str(error.value)) < 200  # a 300-character name is quoted cut short


@pytest.mark.parametrize(
    ("stem", "name"),
    [
        ("+", "network"),
        ("网络", "network"),
        ("my net (v2)", "my_net_v2"),
        ("-x-", "x"),
        ("lenet5.small", "lenet5_small"),
        ("a" * 100, "a" * 64),
    ],
)
def test_a_spec_without_a_name_takes_a_safe_one_from_its_file(tmp_path, stem, name):
    net = sb.load_spec(write(tmp_path, f"{stem}.yaml", "input: [1, 3, 3]\n" + LAYERS))
    assert net.name == name
    assert safe_name(stem) == name


def test_an_accepted_name_is_safe_in_paths_latex_and_markdown(tmp_path, monkeypatch, capsys):
    name = "my_net-2"
    spec = write(
        tmp_path, "spec.yaml", f"name: {name}\ninput: [1, 3, 3]\n" + LAYERS + "loss: sse\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["derive", str(spec), "-q"]) == 0
    assert (tmp_path / "outputs" / name / "derivation.json").exists()
    files = render_handout(sb.load_spec(spec))
    assert r"\texttt{my\_net-2}" in files["handout.tex"] and "my_net-2" not in files["handout.tex"]
    assert "the network `my_net-2`" in files["handout.md"]  # a code span: no escaping needed


# ---- numpy integers ----------------------------------------------------------------------------


def test_numpy_integers_are_accepted_as_settings_and_stored_as_ints():
    i = np.int64
    layers = [
        sb.Conv2D(
            kernel_size=i(2),
            out_channels=np.int32(2),
            stride=(i(1), i(1)),
            padding=i(1),
            dilation=i(1),
        ),
        sb.MaxPool2D(kernel_size=i(2), stride=np.uint8(2), padding=i(1)),
        sb.AvgPool2D(kernel_size=(i(1), i(2))),
        sb.Dense(units=i(3), bias=True),
    ]
    net = sb.Network((i(1), i(5), i(5)), layers, loss="mse")
    assert net.shapes == ((1, 5, 5), (2, 6, 6), (2, 4, 4), (2, 4, 2), (3,))
    spec = json.loads(json.dumps(net.to_dict()))  # plain ints all the way down
    assert spec["layers"][0]["conv"]["kernel_size"] == [2, 2]
    assert all(type(n) is int for n in net.input_shape)


def test_numpy_bools_and_floats_are_still_refused():
    with pytest.raises(
        sb.SpecError, match=r"units must be a positive integer, got np.float64\(2.0\)"
    ):
        sb.Dense(units=np.float64(2.0))
    with pytest.raises(sb.SpecError, match="bias must be true or false"):
        sb.Dense(units=2, bias=np.bool_(True))


def test_an_empty_spec_says_loss_and_name_are_optional(tmp_path):
    with pytest.raises(
        sb.SpecError, match=r"a mapping with keys input and layers \(loss and name optional\)"
    ):
        sb.load_spec(write(tmp_path, "empty.yaml", ""))


# ---- fuzz ----------------------------------------------------------------------------------------

SETTINGS = sorted({name for op in OPS.values() for name in op.setting_names()})
WORDS = [
    "g",
    "relu",
    "sigmoid",
    "sse",
    "generic",
    "cross_entropy",
    "conv",
    "dense",
    "maxpool",
    "avgpool",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 6),
    st.integers(),
    st.floats(),
    st.text(string.printable, max_size=6),
    st.sampled_from(WORDS),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(scalars, inner, max_size=3),
    max_leaves=10,
)
pairs = st.one_of(st.integers(0, 4), st.lists(st.integers(-1, 4), min_size=0, max_size=3), values)
layer_items = (
    st.dictionaries(
        st.sampled_from([*OPS, "pool"]),
        st.none() | st.dictionaries(st.sampled_from([*SETTINGS, "size"]), pairs, max_size=5),
        min_size=1,
        max_size=2,
    )
    | values
)
specs = (
    st.fixed_dictionaries(
        {
            "input": st.lists(st.integers(-1, 7), min_size=0, max_size=4) | values,
            "layers": st.lists(layer_items, max_size=4) | values,
        },
        optional={
            "loss": st.sampled_from(WORDS) | values,
            "name": st.text(max_size=8) | values,
            "extra": values,
        },
    )
    | values
)


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(spec=specs, as_json=st.booleans())
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_the_loader_gives_a_network_or_a_spec_error_for_any_structure(tmp_path, spec, as_json):
    if as_json:
        try:
            text = json.dumps(spec)
        except (TypeError, ValueError):  # keys JSON cannot hold
            return
        path = write(tmp_path, "fuzz.json", text)
    else:
        path = write(tmp_path, "fuzz.yaml", yaml.safe_dump(spec, allow_unicode=True))
    try:
        net = sb.load_spec(path)
    except sb.SpecError as error:
        assert str(error).startswith(str(path))
        event("SpecError")
        return
    event("a valid network")
    # A valid network: its shapes, parameters and budget estimate are all there.
    assert len(net.shapes) == len(net.layers) + 1
    assert net.graph_edges >= 1
    assert sb.Network.from_dict(net.to_dict()).layers == net.layers


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(string.printable + "网{}[]:-&*!|>'\"", max_size=80))
def test_the_loader_gives_a_network_or_a_spec_error_for_any_text(tmp_path, text):
    try:
        sb.load_spec(write(tmp_path, "text.yaml", text))
    except sb.SpecError:
        pass
