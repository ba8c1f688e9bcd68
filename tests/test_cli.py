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
    assert "derived in" in out
    record = json.loads((tmp_path / "outputs" / "article" / "derivation.json").read_text())
    w2 = record["parameters"]["W2"]["elements"][0]
    assert w2["symbol"] == "W2_0_0_0_0" and w2["index"] == [0, 0, 0, 0] and w2["tex"] == "w^{(2)}_{1}"
    assert w2["chain"] == (
        "a1_1*dL_da2_1*g_prime(z2_1) + a1_2*dL_da2_2*g_prime(z2_2) + "
        "a1_4*dL_da2_3*g_prime(z2_3) + a1_5*dL_da2_4*g_prime(z2_4)"
    )
    assert "dL(1, g(W3_0_0*g(W2_0_0_0_0*g(W1_0_0_0_0*x_1 + " in w2["closed"]
    assert w2["closed_size"] > 1000
    assert record["position_sets"]["2"][0] == [1, 2, 4, 5]
    assert record["upstream"]["dL_da2_1"] == (
        "W3_0_0*dL_da3_1*g_prime(z3_1) + W3_1_0*dL_da3_2*g_prime(z3_2)"
    )
    assert not list((tmp_path / "outputs" / "article").glob(".staging-*"))


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
    assert b1["chain"].count("dL_da1_") == 4
    assert "sigmoid" in b1["closed"]


def test_spec_and_preset_together_is_an_error(tmp_path, capsys):
    spec = tmp_path / "x.yaml"
    spec.write_text("input: [1, 2, 2]\nlayers: [{dense: {units: 1}}]\n")
    assert main(["derive", str(spec), "--preset", "article", "-o", str(tmp_path / "o")]) == 2
    assert "give a SPEC file or --preset, not both" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", [[], ["derive"], ["check"], ["handout"], ["exercises"]])
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
