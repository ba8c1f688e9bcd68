"""The teaching controls of `handout` and `exercises` (--seed, --values, --only, --layers),
the warning for a degenerate setup, and --batch-norm's refusals."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

import symbackprop as sb
from symbackprop.cli import main
from symbackprop.document import render_exercises, render_handout
from symbackprop.errors import DegenerateSetup

# The article's numbers, given: x 1x4x4, y 2, W1 1x1x2x2, W2 1x1x2x2, W3 2x4.
X = [[[0.35, 0.82, 0.33, -1.3], [0.91, 0.45, -0.54, 0.58], [0.36, 0.29, 0.03, 0.55], [-0.74, -0.16, -0.48, 0.6]]]
VALUES = {
    "x": X,
    "y": [0.3, 0.7],
    "W1": [[[[0.04, -0.29], [-0.78, -0.26]]]],
    "W2": [[[[0.01, -0.28], [1.29, 1.01]]]],
    "W3": [[-2.71, -1.89, -0.17, -0.42], [0.21, 0.22, 2.12, -1.11]],
}


def given() -> tuple:
    arrays = {key: np.array(value) for key, value in VALUES.items()}
    return arrays.pop("x"), arrays.pop("y"), arrays


def write(path, values, kind: str | None = None):
    kind = kind or path.suffix[1:]
    if kind == "npz":
        np.savez(path, **{key: np.asarray(value) for key, value in values.items()})
    elif kind == "json":
        path.write_text(json.dumps(values), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


# ---- handout --seed and --values -----------------------------------------------------------------


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_handout_seed_draws_the_worked_example_with_that_seed(tmp_path):
    assert main(["handout", "--no-pdf", "-q", "--seed", "3", "-o", str(tmp_path / "three")]) == 0
    assert main(["handout", "--no-pdf", "-q", "-o", str(tmp_path / "default")]) == 0
    seeded = (tmp_path / "three" / "handout.md").read_text(encoding="utf-8")
    assert seeded == render_handout(sb.presets.article(), "full", seed=3)["handout.md"]
    assert seeded != (tmp_path / "default" / "handout.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json", ".npz"])
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_handout_values_from_a_file_are_the_worked_examples_numbers(tmp_path, suffix):
    path = write(tmp_path / f"numbers{suffix}", VALUES, {".yml": "yaml"}.get(suffix))
    assert main(["handout", "--no-pdf", "-q", "--values", str(path), "-o", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "handout.md").read_text(encoding="utf-8")
    assert text == render_handout(sb.presets.article(), "full", values=given())["handout.md"]
    assert r"y = \begin{pmatrix} 0.3 & 0.7 \end{pmatrix}" in text
    assert r"X = \begin{pmatrix} 0.35 & 0.82 & 0.33 & -1.3 \\" in text


def test_handout_takes_a_seed_or_values_not_both(tmp_path, capsys):
    path = write(tmp_path / "v.yaml", VALUES)
    assert main(["handout", "--no-pdf", "--seed", "1", "--values", str(path), "-o", str(tmp_path / "o")]) == 2
    assert error_line(capsys) == (
        "symbackprop: error: give --seed or --values, not both: the seed draws the worked example's numbers"
    )
    assert not (tmp_path / "o").exists()


def _bad(**changes):
    values = dict(VALUES)
    for key, value in changes.items():
        if value is None:
            del values[key]
        else:
            values[key] = value
    return values


NOT_AN_ARRAY = "is not an array of numbers (a number, or lists of equal length of numbers)"
BAD_FILES = {
    "a misshapen weight": (_bad(W1=[[1.0, 2.0]]), "yaml", "W1 has shape 1x2, the network's W1 is 1x1x2x2"),
    "a misshapen input": (_bad(x=[[1.0] * 4] * 4), "json", "x has shape 4x4, the network's x is 1x4x4"),
    "a target of the wrong size": (_bad(y=[1.0, 2.0, 3.0]), "npz", "y has shape 3, the network's y is 2"),
    "a missing weight": (_bad(W2=None, W3=None), "yaml", "missing W2, W3; it needs x, y, W1, W2, W3"),
    "an unknown key": (_bad(W9=[1.0]), "json", "no 'W9' in this network; it needs x, y, W1, W2, W3"),
    "a ragged list": (_bad(W3=[[1.0, 2.0, 3.0, 4.0], [1.0]]), "yaml", f"W3 {NOT_AN_ARRAY}"),
    "text for a number": (_bad(y=["0.3", "0.7"]), "yaml", f"y {NOT_AN_ARRAY}"),
    "a yes/no for a number": (_bad(y=[True, False]), "json", f"y {NOT_AN_ARRAY}"),
    "a number that is not finite": (_bad(y=[0.3, float("nan")]), "yaml", "y holds a number that is not finite"),
    "booleans in an archive": (_bad(y=np.array([True, False])), "npz", "y holds bool values, not numbers"),
    "a list, not a mapping": ([1.0, 2.0], "yaml", "the file must map x, y, W1, W2, W3 to arrays"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
@pytest.mark.parametrize("command", ["handout", "exercises"])
def test_values_that_do_not_fit_are_one_line_naming_the_key_and_shapes(tmp_path, capsys, case, command):
    values, kind, message = BAD_FILES[case]
    path = write(tmp_path / f"numbers.{kind}", values, kind)
    assert main([command, "--no-pdf", "--values", str(path), "-o", str(tmp_path / "out")]) == 2
    assert error_line(capsys) == f"symbackprop: error: --values {path}: {message}"
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("v.txt", "x: [1]", "give an .npz, .yaml, .yml or .json file"),
        ("v.yaml", "x: [1, 2\n", "not valid YAML (line 2): expected ',' or ']', but got '<stream end>'"),
        ("v.json", "{x: 1}", "not valid JSON (line 1: Expecting property name enclosed in double quotes)"),
        ("v.yaml", "x: !!python/object/apply:os.system ['echo hi']\n", ("not valid YAML (line 1): could not determine a constructor for the tag "
                  "'tag:yaml.org,2002:python/object/apply:os.system'")),
        ("v.npz", "not an archive", "cannot read it as npz"),
        ("v.yaml", "x: &a [*a]\ny: [1, 2]\nW1: 1\nW2: 1\nW3: 1\n", "x is not an array of numbers"),
    ],
)
def test_a_values_file_that_cannot_be_read_is_one_line(tmp_path, capsys, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert main(["handout", "--no-pdf", "--values", str(path), "-o", str(tmp_path / "out")]) == 2
    line = error_line(capsys)
    assert line.startswith(f"symbackprop: error: --values {path}: {message}")
    assert not (tmp_path / "out").exists()


def test_a_values_file_that_is_not_there(tmp_path, capsys):
    missing = tmp_path / "gone.npz"
    assert main(["exercises", "--no-pdf", "--values", str(missing), "-o", str(tmp_path / "out")]) == 2
    assert error_line(capsys) == f"symbackprop: error: --values {missing}: no such file"


def test_values_for_a_spec_are_checked_against_its_shapes(tmp_path, capsys):
    spec = tmp_path / "tiny.yaml"
    spec.write_text("input: [3]\nlayers:\n  - dense: {units: 2, bias: true, activation: sigmoid}\nloss: sse\n")
    good = {"x": [1.0, -0.5, 0.25], "y": [0.0, 1.0], "W1": [[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]], "b1": [0.5, -0.5]}
    path = write(tmp_path / "v.json", good)
    assert main(["exercises", str(spec), "--no-pdf", "-q", "--values", str(path), "-o", str(tmp_path / "o")]) == 0
    x, y = np.array(good["x"]), np.array(good["y"])
    params = {"W1": np.array(good["W1"]), "b1": np.array(good["b1"])}
    expected = render_exercises(sb.load_spec(spec), seed=0, values=(x, y, params))
    for name, text in expected.items():
        assert (tmp_path / "o" / name).read_text(encoding="utf-8") == text
    path = write(tmp_path / "w.json", {**good, "b1": [0.5]})
    assert main(["exercises", str(spec), "--no-pdf", "--values", str(path), "-o", str(tmp_path / "p")]) == 2
    assert error_line(capsys).endswith(": b1 has shape 1, the network's b1 is 2")


# ---- exercises --only and --layers ---------------------------------------------------------------


def titles(path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("## Exercise")]


def test_exercises_only_some_kinds(tmp_path):
    assert main(["exercises", "--no-pdf", "-q", "--only", "gradient,forward", "-o", str(tmp_path)]) == 0
    assert titles(tmp_path / "exercises.md") == [
        "## Exercise 1: the forward pass", "## Exercise 2: a weight's gradient by the chain rule",
    ]
    expected = render_exercises(sb.presets.article(), seed=0, kinds=["gradient", "forward"])
    assert (tmp_path / "solutions.md").read_text(encoding="utf-8") == expected["solutions.md"]


def test_exercises_about_some_layers_only(tmp_path):
    assert main(["exercises", "--no-pdf", "-q", "--layers", "3", "--seed", "1", "-o", str(tmp_path)]) == 0
    expected = render_exercises(sb.presets.article(), seed=1, layers=[3])
    assert expected != render_exercises(sb.presets.article(), seed=1)
    for name, text in expected.items():
        assert (tmp_path / name).read_text(encoding="utf-8") == text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "forward,nope"], ("--only has no kind 'nope'; choose from forward, positions, gradient, "
                                     "dependencies, tensor, join, routing, batchnorm (see symbackprop exercises --help)")),
        (["--only", ""], ("--only has no kind ''; choose from forward, positions, gradient, "
                         "dependencies, tensor, join, routing, batchnorm (see symbackprop exercises --help)")),
        (["--layers", "1,x"], ("--layers must be layer numbers from 1, comma-separated, got '1,x' "
                              "(see symbackprop exercises --help)")),
        (["--layers", "0"], "--layers must be layer numbers from 1, got 0 (see symbackprop exercises --help)"),
        (["--layers", "2,4,7"], "--layers: no layer 4, 7 in article; its layers are 1 to 3"),
    ],
)
def test_unknown_kinds_and_layers_are_one_line(tmp_path, capsys, args, message):
    assert main(["exercises", "--no-pdf", *args, "-o", str(tmp_path / "out")]) == 2
    assert error_line(capsys) == f"symbackprop: error: {message}"
    assert not (tmp_path / "out").exists()


# ---- a degenerate setup --------------------------------------------------------------------------


def test_a_sigmoid_before_cross_entropy_is_warned_of_when_the_network_is_built():
    with pytest.warns(DegenerateSetup) as caught:
        sb.Network((3,), [sb.Dense(units=4, activation="relu"), sb.Dense(units=2, activation="sigmoid")],
                   loss="cross_entropy")
    assert [str(w.message) for w in caught] == [
        ("the output layer (layer 2) applies sigmoid before cross_entropy, which reads logits and "
        "applies softmax itself: the outputs are squashed twice, so the loss cannot approach 0 and "
        "its gradients shrink; give layer 2 activation identity")
    ]
    with pytest.warns(DegenerateSetup, match=r"applies tanh before binary_cross_entropy, which reads logits "
                      r"and applies a sigmoid itself: .*; drop layer 2 \(the tanh\)$"):
        sb.Network((3,), [sb.Dense(units=2), sb.Tanh()], loss="binary_cross_entropy")


@pytest.mark.parametrize(
    ("last", "loss"),
    [
        (sb.Dense(units=2, activation="relu"), "cross_entropy"),  # unbounded above: logits enough
        (sb.Dense(units=2), "binary_cross_entropy"),
        (sb.Dense(units=2, activation="sigmoid"), "sse"),  # a regression onto (0, 1): fine
        (sb.Dense(units=2, activation="g"), "generic"),
    ],
)
def test_sound_setups_are_not_warned_of(last, loss):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateSetup)
        net = sb.Network((3,), [last], loss=loss)
        net.with_choices(g="sigmoid", loss="cross_entropy")  # a choice made to check, not a setup
    assert net.degenerate_setup() is None


def test_the_command_line_shows_the_warning_as_one_line(tmp_path, capsys):
    spec = tmp_path / "squashed.yaml"
    spec.write_text(
        "input: [3]\nlayers:\n  - dense: {units: 4, activation: relu}\n"
        "  - dense: {units: 2}\n  - activation: {function: sigmoid}\nloss: cross_entropy\n"
    )
    assert main(["check", str(spec), "--samples", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        "symbackprop: warning: the output layer (layer 3) applies sigmoid before cross_entropy, which "
        "reads logits and applies softmax itself: the outputs are squashed twice, so the loss cannot "
        "approach 0 and its gradients shrink; drop layer 3 (the sigmoid)\n"
    )
    assert captured.out.rstrip().endswith("all agree")


# ---- --batch-norm --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "--batch-norm"], ("--batch-norm chooses a preset's batch-normalised variant: give --preset "
                                    "lenet5 or resnet_tiny (a spec writes its own batch normalisation layers)")),
        (["check", "--preset", "fcn_tiny", "--batch-norm"],
         "--batch-norm: the preset fcn_tiny has no batch-normalised variant; lenet5 and resnet_tiny have one"),
        (["derive", "--preset", "lenet5", "--batch-norm"],
         "unrecognized arguments: --batch-norm (see symbackprop --help)"),
    ],
)
def test_batch_norm_is_refused_where_there_is_no_such_variant(capsys, args, message):
    assert main(args) == 2
    assert error_line(capsys) == f"symbackprop: error: {message}"


BATCH_NORM_SPEC = ("name: bn\ninput: [3]\nlayers:\n  - dense: {units: 3}\n  - batchnorm1d: {}\n"
                   "  - dense: {units: 2}\nloss: sse\n")


def test_derive_refuses_batch_statistics(tmp_path, capsys):
    command = "derive"
    spec = tmp_path / "bn.yaml"
    spec.write_text(BATCH_NORM_SPEC)
    assert main([command, str(spec), "-o", str(tmp_path / "out")]) == 2
    assert error_line(capsys) == (
        f"symbackprop: error: {command} writes one sample's derivation, and bn's batch normalisation "
        "in train mode mixes the samples of a batch; check it (symbackprop check compares a batch's "
        "gradients), or put it in eval mode (mode: eval in its spec)"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, written, says", [
    # the compact form over the handout's batch of 3, as the engine derived it
    ("handout", "handout.tex", (r"\frac{\gamma^{(2)}_{1}}{3 \sigma^{(2)}_{1}} \left(3 g_{i} - \sum_{j} g_{j} "
                                r"- \hat{x}_{i} \sum_{j} g_{j} \hat{x}_{j}\right)")),
    ("exercises", "exercises.tex", r"\section*{Exercise 5: batch normalisation over a batch}"),
])
def test_documents_work_batch_statistics_over_a_batch(tmp_path, capsys, command, written, says):
    spec = tmp_path / "bn.yaml"
    spec.write_text(BATCH_NORM_SPEC)
    assert main([command, str(spec), "-o", str(tmp_path / "out"), "--no-pdf", "-q"]) == 0
    assert says in (tmp_path / "out" / written).read_text()


# ---- the README says what the command line prints --------------------------------------------------


README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readmes_warning_and_values_error_are_what_the_command_line_prints(tmp_path, monkeypatch, capsys):
    readme = README.read_text(encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "squashed.yaml"
    spec.write_text("input: [4]\nlayers:\n  - dense: {units: 3, activation: relu}\n  - dense: {units: 3}\n"
                    "  - dense: {units: 2, activation: sigmoid}\nloss: cross_entropy\n")
    assert main(["derive", str(spec), "--closed-forms", "none", "-o", "out"]) == 0
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("symbackprop: warning: ") and f"\n{warning}\n" in readme
    write(tmp_path / "mine.yaml", _bad(W1=[[1.0, 2.0]]))
    assert main(["handout", "--no-pdf", "--values", "mine.yaml", "-o", "h"]) == 2
    error = error_line(capsys)
    assert f"`{error}`" in readme
