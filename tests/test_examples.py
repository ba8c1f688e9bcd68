"""examples/train_digits.py: training on real digits with the exported module's gradients,
beside the same training in torch — what its docstring claims, on a short run and a full one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_digits.py"


def example():
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_one_epoch_from_the_same_weights_and_batches_ends_where_torch_ends(tmp_path):
    history = example().train(epochs=1, quiet=True, folder=tmp_path)
    ours, torch = history["final"]["symbackprop"], history["final"]["torch"]
    assert list(ours) == ["W1", "b1", "W3", "b3"]
    for name in ours:
        np.testing.assert_allclose(ours[name], torch[name], rtol=0, atol=1e-9)
    assert history["symbackprop"]["loss"] == pytest.approx(history["torch"]["loss"], rel=1e-9)
    assert (tmp_path / "digits_gradients.py").exists()  # the exported module it trained with


@pytest.mark.slow
def test_a_full_run_recognises_at_least_95_percent_of_the_test_digits(tmp_path, capsys):
    assert example().main(["--plot", str(tmp_path / "loss.png")]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("test accuracy: symbackprop ")[1].split(",")[0])
    assert accuracy >= 0.95, out
    assert (tmp_path / "loss.png").stat().st_size > 10_000
