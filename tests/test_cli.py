"""The command line: `symbackprop derive` and the help texts."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from symbackprop.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_derive_with_no_argument_writes_the_article_into_outputs_article(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["derive"]) == 0
    out = capsys.readouterr().out
    assert "network article: input 1x4x4, loss generic" in out
    assert "layer 1: conv 1x2x2, stride 1x1, padding 0x0, no bias, g -> 1x3x3" in out
    assert "16 weights: W1 1x1x2x2, W2 1x1x2x2, W3 2x4" in out
    assert "derived in" in out and "peak memory" in out
    record = json.loads((tmp_path / "outputs" / "article" / "derivation.json").read_text())
    assert record["bounds"]["complete"] is True and record["bounds"]["closed_forms"] == "small"
    w2 = record["parameters"]["W2"]["elements"][0]
    assert w2["symbol"] == "W2_0_0_0_0" and w2["index"] == [0, 0, 0, 0] and w2["tex"] == "w^{(2)}_{1}"
    assert w2["terms"] == 4
    assert w2["chain"] == (
        "a1_1*dL_da2_1*g_prime(z2_1) + a1_2*dL_da2_2*g_prime(z2_2) + "
        "a1_4*dL_da2_3*g_prime(z2_3) + a1_5*dL_da2_4*g_prime(z2_4)"
    )
    # 6,953 tree nodes: too large to read, so only its size (counted, not built)
    assert w2["closed"] is None and w2["closed_size"] == 6953
    w3 = record["parameters"]["W3"]["elements"][0]  # 893 nodes: small enough to write
    assert w3["closed_size"] == 893 and w3["closed"].startswith("dL(1, g(W3_0_0*g(W2_0_0_0_0*g(")
    layer2 = record["layers"][1]
    assert layer2["position_sets"] == {
        "count": 4, "sets": {"1": [1, 2, 4, 5], "2": [2, 3, 5, 6], "3": [4, 5, 7, 8], "4": [5, 6, 8, 9]},
    }
    assert layer2["upstream"]["formulas"]["dL_da2_1"] == (
        "W3_0_0*dL_da3_1*g_prime(z3_1) + W3_1_0*dL_da3_2*g_prime(z3_2)"
    )
    assert layer2["general"]["weight"].startswith(r"\frac{\partial L}{\partial w^{(2)}_{n}} = \sum_{i}")
    assert record["layers"][2]["position_sets"] == {"count": 2, "every_input": 4}  # dense
    assert record["input_gradient"]["count"] == 16
    assert not list((tmp_path / "outputs" / "article").glob(".staging-*"))


@pytest.mark.parametrize(
    ("choice", "w1_closed"), [("none", None), pytest.param("all", "written", marks=pytest.mark.slow)]
)
def test_closed_forms_none_or_all(tmp_path, capsys, choice, w1_closed):
    assert main(["derive", "--closed-forms", choice, "-o", str(tmp_path)]) == 0
    w1 = json.loads((tmp_path / "derivation.json").read_text())["parameters"]["W1"]["elements"][0]
    if w1_closed is None:
        assert "closed" not in w1 and "closed_size" not in w1
    else:
        assert w1["closed_size"] == 27746 and len(w1["closed"]) > 100_000


def test_derive_a_spec_into_a_chosen_folder(tmp_path, capsys):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "input: [1, 3, 3]\n"
        "layers:\n"
        "  - conv: {kernel_size: 2, bias: true, activation: sigmoid}\n"
        "  - dense: {units: 1}\n"
        "loss: sse\n"
    )
    assert main(["derive", str(spec), "-o", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "derivation.json").read_text())
    assert record["network"]["name"] == "tiny"
    assert list(record["parameters"]) == ["W1", "b1", "W2"]
    (b1,) = record["parameters"]["b1"]["elements"]
    # the bias collects one term per feature-map pixel: ∂L/∂a · σ' · 1
    assert b1["chain"].count("dL_da1_") == 4 and b1["terms"] == 4
    assert "sigmoid" in b1["closed"]


def test_spec_and_preset_together_is_an_error(tmp_path, capsys):
    spec = tmp_path / "x.yaml"
    spec.write_text("input: [1, 2, 2]\nlayers: [{dense: {units: 1}}]\n")
    assert main(["derive", str(spec), "--preset", "article", "-o", str(tmp_path / "o")]) == 2
    assert "give a SPEC file or --preset, not both" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == "symbackprop 0.1.0\n"


@pytest.mark.parametrize("command", [[], ["derive"], ["check"], ["handout"], ["exercises"]])
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_every_command_explains_itself(command):
    result = subprocess.run(
        [sys.executable, "-m", "symbackprop.cli", *command, "--help"],
        capture_output=True, text=True, check=True,
    )
    assert "usage: symbackprop" in result.stdout
    assert "spec" in result.stdout or "COMMAND" in result.stdout


@pytest.fixture(scope="module")
def fresh_article_derivation(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("derive")
    assert main(["derive", "-o", str(out)]) == 0
    return out


@pytest.mark.parametrize("filename", ["derivation.json", "gradients.py"])
def test_the_committed_article_derivation_is_current(fresh_article_derivation, filename):
    committed = REPO / "outputs" / "article" / filename
    assert committed.read_text() == (fresh_article_derivation / filename).read_text(), (
        f"outputs/article/{filename} is stale: run `symbackprop derive` in the repository "
        "and commit the result"
    )


GRAPH = """\
name: skip
input: [1, 4, 4]
layers:
  - conv: {out_channels: 2, kernel_size: 1, activation: tanh}
    name: stem
  - conv: {out_channels: 2, kernel_size: 3, padding: 1}
    name: body
  - add: {}
    inputs: [stem, body]
  - dense: {units: 2}
loss: sse
"""


def test_derive_a_graph_spec_says_which_layer_reads_which(tmp_path, capsys):
    spec = tmp_path / "skip.yaml"
    spec.write_text(GRAPH)
    assert main(["derive", str(spec), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "network skip: input 1x4x4, loss sse\n"
        "  layer 1 (stem): conv 2x1x1, stride 1x1, padding 0x0, no bias, tanh -> 2x4x4 (reads x; read by layer 2 and layer 3)\n"
        "  layer 2 (body): conv 2x3x3, stride 1x1, padding 1x1, no bias, identity -> 2x4x4 (reads layer 1)\n"
        "  layer 3: add -> 2x4x4 (reads layer 1 and layer 2)\n"
        "  layer 4: dense 2, no bias, identity -> 2 (reads layer 3)\n"
        "  102 weights: W1 2x1x1x1, W2 2x2x3x3, W4 2x32\n"
    )
    record = json.loads((tmp_path / "out" / "derivation.json").read_text())
    assert record["network"]["layers"][2] == {"add": {}, "name": "layer3", "inputs": ["stem", "body"]}
    assert [(layer["name"], layer["reads"], layer["read_by"]) for layer in record["layers"]] == [
        ("stem", [0], [2, 3]), ("body", [1], [3]), (None, [1, 2], [4]), (None, [3], []),
    ]
    stem = record["layers"][0]["upstream"]
    # the stem's gradient at its corner: what the addition sends back, plus the body's, from the
    # four outputs of each channel whose padded 3x3 window holds it (output (i, j) reads it at
    # kernel place (1 - i, 1 - j))
    body = (
        "W2_0_0_0_0*dL_da2_6 + W2_0_0_0_1*dL_da2_5 + W2_0_0_1_0*dL_da2_2 + W2_0_0_1_1*dL_da2_1 + "
        "W2_1_0_0_0*dL_da2_22 + W2_1_0_0_1*dL_da2_21 + W2_1_0_1_0*dL_da2_18 + W2_1_0_1_1*dL_da2_17"
    )
    assert stem["by_reader"]["dL_da1_1"] == {"2": body, "3": "dL_da3_1"}
    assert stem["formulas"]["dL_da1_1"] == "dL_da3_1 + " + body
    assert (tmp_path / "out" / "gradients.py").exists()


def test_a_graph_spec_round_trips_through_to_dict(tmp_path):
    from symbackprop import load_spec

    spec = tmp_path / "skip.yaml"
    spec.write_text(GRAPH)
    net = load_spec(spec)
    assert net.sources == ((0,), (1,), (1, 2), (3,)) and net.layer_names == ("stem", "body", None, None)
    again = tmp_path / "again.json"
    again.write_text(json.dumps(net.to_dict()))
    assert load_spec(again).sources == net.sources
