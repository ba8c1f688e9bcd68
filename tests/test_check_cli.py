"""`symbackprop check`: a table or JSON of errors; exit 0 if all agree, 1 if not, 2 for a bad spec."""

from __future__ import annotations

import json

import pytest
from oracle import sign_flipped

import symbackprop as sb
from symbackprop import verify
from symbackprop.cli import main

SPEC = """\
name: tiny
input: [1, 3, 3]
layers:
  - conv: {kernel_size: 2, out_channels: 2, bias: true, activation: sigmoid}
  - dense: {units: 2, activation: identity}
loss: sse
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC, encoding="utf-8")
    return path


def test_the_article_checks_out(capsys):
    assert main(["check", "--preset", "article", "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "check article: 1 samples, seed 0; derived gradients (per-layer code and per-node "
        "program) against reference, finite differences, torch\n"
    )
    assert "\ng = tanh, loss = cross_entropy\n" in out
    assert out.count("\n  W3      ") == 6  # one row per choice of g and loss
    assert out.rstrip().endswith("all agree")


def test_a_spec_file_is_checked_as_specified(spec, capsys):
    assert main(["check", str(spec), "--samples", "2", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "check tiny: 2 samples, seed 3" in out
    assert "\nactivations and loss as specified\n" in out
    for name in ["loss", "x", "W1", "b1", "W2"]:
        row = next(line for line in out.splitlines() if line.startswith(f"  {name} "))
        assert row.endswith(" ok")


def test_json_output(spec, capsys):
    assert main(["check", str(spec), "--samples", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["agree"] is True
    assert [row["name"] for row in report["runs"][0]["rows"]] == ["loss", "x", "W1", "b1", "W2"]
    assert report["runs"][0]["rows"][2]["errors"]["torch"]["rel"] < 1e-9


def test_a_corrupted_derivation_fails_the_check(spec, capsys, monkeypatch):
    # The test double flips the sign of one element of ∂L/∂b1 in the derived program.
    monkeypatch.setattr(sb.Network, "derive", lambda net: sign_flipped(net, "b1", (1,)))
    assert main(["check", str(spec), "--samples", "1"]) == 1
    out = capsys.readouterr().out
    b1 = next(line for line in out.splitlines() if line.startswith("  b1 "))
    assert b1.endswith("DIFFERS from reference, finite differences, torch")
    assert out.rstrip().endswith("DISAGREE: a derived gradient is wrong")


def test_a_corrupted_derivation_fails_in_json_too(spec, capsys, monkeypatch):
    monkeypatch.setattr(sb.Network, "derive", lambda net: sign_flipped(net, "W2", (0, 3)))
    assert main(["check", str(spec), "--samples", "1", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["agree"] is False
    assert [r["name"] for r in report["runs"][0]["rows"] if not r["agree"]] == ["W2"]


def test_a_bad_spec_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [1, 3, 3]\nlayers:\n  - pool: {size: 2}\n", encoding="utf-8")
    assert main(["check", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines()[-1].startswith("symbackprop: error: ")
    assert "unknown layer type 'pool'" in captured.err


def test_no_samples_is_a_usage_error(capsys):
    assert main(["check", "--samples", "0"]) == 2
    assert "--samples must be 1 or more, got 0" in capsys.readouterr().err


def test_the_table_says_when_torch_is_not_there(spec, capsys, monkeypatch):
    monkeypatch.setattr(verify, "_torch", lambda: None)
    assert main(["check", str(spec), "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert "(per-layer code and per-node program) against reference, finite differences\n" in out
    assert "\ntorch not used: not installed\n" in out


GRAPH = """\
name: skip
input: [1, 4, 4]
layers:
  - conv: {out_channels: 2, kernel_size: 1, activation: relu}
    name: stem
  - conv: {out_channels: 2, kernel_size: 3, padding: 1}
    name: body
  - add: {}
    inputs: [stem, body]
  - activation: {function: relu}
  - maxpool: {kernel_size: 2}
  - dense: {units: 2}
loss: cross_entropy
"""


def test_a_graph_spec_checks_out_in_both_codes(tmp_path, capsys):
    spec = tmp_path / "skip.yaml"
    spec.write_text(GRAPH, encoding="utf-8")
    assert main(["check", str(spec), "--samples", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["agree"] and report["network"] == "skip"
    assert report["styles"] == ["layers", "nodes"]
    assert [row["name"] for row in report["runs"][0]["rows"]] == ["loss", "x", "W1", "W2", "W6"]


@pytest.mark.slow
def test_resnet_tiny_checks_out(capsys):
    assert main(["check", "--preset", "resnet_tiny", "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("check resnet_tiny: 1 samples, seed 0; derived gradients (per-layer code) against "
                          "reference, finite differences, torch\n")
    assert out.count(" ok\n") == 16  # the loss, x and 14 parameters
    # 5,194 parameters: too many for the per-node program; finite differences on a sample
    assert "finite differences on a seeded sample of elements: x 200 of 768, W1 200 of 216," in out
    assert out.rstrip().endswith("all agree")
