"""Benchmark: the derived numeric code against the reference backprop and PyTorch autograd.

    python benchmarks/numeric.py [--quick]

Times one call (loss and every per-sample gradient, x included) for two networks at
batch 1 and batch 1024, all in float64 on the CPU, and prints each time with its
speed-up over PyTorch measured in the same run (torch time / this time; above 1 is
faster than torch):

* A: the article's network (g = sigmoid, loss = sse), 16 weights;
* B: 1x8x8 -> conv 3x3 x4 -> conv 3x3 x4 -> dense 10 (sigmoid, sse), 820 weights.

Methods: ``d.numeric()``; the generated module (``gradients.py``, imported from a
file); ``symbackprop.reference``; PyTorch with 2 threads, both as the backward of the
batch-summed loss (one gradient per parameter, what training uses) and as per-sample
gradients with ``torch.func`` (the same output as ours: like for like). It also
reports the generated code's size and how long deriving, printing and compiling took.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np
import torch
from torch.func import grad, vmap

import symbackprop as sb
from symbackprop import numeric, reference
from symbackprop.verify import draw_point, torch_losses

BATCHES = (1, 1024)


def networks() -> dict[str, tuple[sb.Network, dict[str, str]]]:
    """name -> (network to derive, the choices for its generic g and loss)."""
    sigmoid = {"activation": "sigmoid"}
    b = sb.Network(
        (1, 8, 8),
        [
            sb.Conv2D(kernel_size=3, out_channels=4, **sigmoid),
            sb.Conv2D(kernel_size=3, out_channels=4, **sigmoid),
            sb.Dense(units=10, **sigmoid),
        ],
        loss="sse",
        name="B",
    )
    return {"A": (sb.presets.article(), {"g": "sigmoid", "loss": "sse"}), "B": (b, {})}


def best_times(calls: dict, budget: float) -> dict[str, float]:
    """The best time per call of each method over 5 rounds of ~budget/5 seconds each. The
    rounds go round the methods in turn, so a burst of load elsewhere hits them all alike."""
    timers = {method: timeit.Timer(call) for method, call in calls.items()}
    numbers = {}
    for method, timer in timers.items():
        number, elapsed = timer.autorange()
        numbers[method] = max(1, int(number * budget / 5 / max(elapsed, 1e-9)))
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(5):
        for method, timer in timers.items():
            best[method] = min(best[method], timer.timeit(numbers[method]) / numbers[method])
    return best


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_methods(net: sb.Network, choices: dict, x, y, params) -> dict:
    """The two PyTorch ways to get gradients, as calls without arguments."""
    g, loss = choices.get("g"), choices.get("loss")
    tx, ty = torch.tensor(x), torch.tensor(y)
    tp = {name: torch.tensor(value) for name, value in params.items()}

    def summed_backward():
        leaves = {name: t.detach().requires_grad_() for name, t in tp.items()}  # fresh .grad
        inputs = tx.clone().requires_grad_()
        torch_losses(net, inputs, ty, leaves, g, loss).sum().backward()
        return inputs.grad, {name: t.grad for name, t in leaves.items()}

    def one_sample(p, xs, ys):
        return torch_losses(net, xs[None], ys[None], p, g, loss)[0]

    per_sample_grads = vmap(grad(one_sample, argnums=(0, 1)), in_dims=(None, 0, 0))
    frozen = {name: t.detach() for name, t in tp.items()}
    return {
        "torch backward": summed_backward,
        "torch.func per-sample": lambda: per_sample_grads(frozen, tx, ty),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing rounds")
    budget = 0.2 if parser.parse_args().quick else 1.0  # seconds per measurement
    torch.set_num_threads(2)
    torch.set_default_dtype(torch.float64)
    print(
        f"numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"python {sys.version.split()[0]}; float64, best of 5 rounds"
    )
    print("speed-up: PyTorch's time / this time, measured in this run (above 1: faster)")
    load = os.getloadavg()[0]
    if load > 0.5:  # torch's threads wait on each other when a core is taken: its times balloon
        print(f"warning: load average {load:.1f}; the machine is busy, times are not reliable")
    print()
    rng = np.random.default_rng(0)
    folder = Path(tempfile.mkdtemp(prefix="symbackprop-bench-"))
    for name, (spec, choices) in networks().items():
        start = time.perf_counter()
        d = spec.derive()
        _ = d.program  # the straight-line program is part of deriving
        derived = time.perf_counter()
        source = numeric.module_source(d)
        printed = time.perf_counter()
        numeric.compiled(d)
        compiled = time.perf_counter()
        net = spec.with_choices(**choices)
        weights = sum(int(np.prod(s)) for s in net.parameters.values())
        print(f"{name}: {' -> '.join(layer.describe() for layer in net.layers)}, loss {net.loss}")
        print(
            f"   {weights} weights; generated code {len(source) / 1000:.0f} kB, "
            f"{source.count(chr(10))} lines; derive {derived - start:.2f} s, "
            f"print {printed - derived:.2f} s, compile {compiled - printed:.2f} s"
        )
        module = load_module(d.export_module(folder / f"gradients_{name}.py"))
        results = {}
        for batch in BATCHES:
            calls = method_calls(d, module, net, choices, batch, rng)
            results[batch] = best_times(calls, budget)
        print_table(results)
        print()


def method_calls(d, module, net: sb.Network, choices: dict, batch: int, rng) -> dict:
    """Each method's call on one random point: a sample (C, H, W) for batch 1, else (B, C, H, W)."""
    _, _, params = draw_point(net, rng)
    x = rng.normal(size=(batch, *net.input_shape))
    y = rng.normal(size=(batch, net.output_size))
    calls = torch_methods(net, choices, x, y, params)
    if batch == 1:  # one sample as (C, H, W): the float code path
        x, y = x[0], y[0]
    f = d.numeric(**choices)
    return {
        "d.numeric()": lambda: f(x, y, params),
        "gradients.py": lambda: module.loss_and_grads(x, y, params, **choices),
        "reference": lambda: reference.loss_and_grads(net, x, y, params),
        **calls,
    }


def print_table(results: dict[int, dict[str, float]]) -> None:
    header = f"   {'':<24}" + "".join(
        f"{'batch ' + str(b):<12}{'vs backward':<13}{'vs torch.func':<16}" for b in results
    )
    print(header.rstrip())
    for method in next(iter(results.values())):
        cells = ""
        for times in results.values():
            t = times[method]
            backward, per_sample = times["torch backward"], times["torch.func per-sample"]
            cells += f"{format_time(t):<12}{backward / t:<13.2f}{per_sample / t:<16.2f}"
        print(f"   {method:<24}{cells}".rstrip())


def format_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms"


if __name__ == "__main__":
    main()
