"""Derivation time and peak memory, with the naive baseline measured in the same run.

    python benchmarks/derive.py [--quick]

A = the article network (generic g and L), B = 1x8x8 → conv 3x3 x4 → conv 3x3 x4 →
dense 10, C = 1x16x16 → conv 3x3 x8 → conv 3x3 stride 2 x8 → dense 10 (sigmoid, sse).
"Derive" is ``net.derive()`` plus the chain form of every parameter (the working form);
the naive baseline expands the closed-form loss and calls ``sympy.diff`` per weight,
on A only (it did 4 of B's 820 weights in 5 minutes). The scaling table derives
growing versions of C and prints the time per graph edge, which stays flat when the
cost is linear in the number of edges.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from math import prod

import sympy
from sympy.core.cache import clear_cache

import symbackprop as sb


def network_b() -> sb.Network:
    return sb.Network((1, 8, 8), [
        sb.Conv2D(out_channels=4, kernel_size=3, activation="sigmoid"),
        sb.Conv2D(out_channels=4, kernel_size=3, activation="sigmoid"),
        sb.Dense(units=10, activation="sigmoid"),
    ], loss="sse")


def network_c(size: int = 16) -> sb.Network:
    return sb.Network((1, size, size), [
        sb.Conv2D(out_channels=8, kernel_size=3, activation="sigmoid"),
        sb.Conv2D(out_channels=8, kernel_size=3, stride=2, activation="sigmoid"),
        sb.Dense(units=10, activation="sigmoid"),
    ], loss="sse")


def edges(net: sb.Network) -> int:
    """Weighted-sum terms in the graph: one edge per (weight, input) product."""
    return sum(len(z.terms) for layer in net.graph.layers for z in layer.z)


def derive_all(net: sb.Network) -> sb.Derivation:
    d = net.derive()
    for name in net.parameters:
        d.chain(name)
    return d


def fresh(net: sb.Network) -> sb.Network:
    """The same network with nothing cached, so each measurement builds its graph anew."""
    return sb.Network(net.input_shape, list(net.layers), net.loss, net.name)


def measure(action, net: sb.Network) -> tuple[float, float]:
    """(seconds, peak MiB) of ``action`` on fresh copies of ``net``: timed in one run and
    traced in another, because tracemalloc slows sympy several times over."""
    clear_cache()  # sympy caches results globally: every run starts cold
    start = time.perf_counter()
    action(fresh(net))
    seconds = time.perf_counter() - start
    clear_cache()
    tracemalloc.start()
    action(fresh(net))
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def naive(net: sb.Network) -> None:
    """The baseline: the loss written out in full, then sympy.diff for every weight."""
    d = net.derive()
    loss = sympy.expand(d.loss)
    for symbols in d.symbols.params.values():
        for w in sympy.flatten(symbols.tolist()):
            sympy.diff(loss, w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip C and the scaling table")
    args = parser.parse_args()

    nets = {"A": sb.presets.article(), "B": network_b()}
    if not args.quick:
        nets["C"] = network_c()
    print(f"{'net':4} {'weights':>8} {'edges':>7} {'derive s':>9} {'peak MiB':>9} {'us/edge':>8}")
    results = {}
    for label, net in nets.items():
        seconds, peak = measure(derive_all, net)
        weights = sum(prod(s) for s in net.parameters.values())
        results[label] = seconds
        print(f"{label:4} {weights:8} {edges(net):7} {seconds:9.3f} {peak:9.1f} "
              f"{1e6 * seconds / edges(net):8.1f}")

    naive_seconds, naive_peak = measure(naive, sb.presets.article())
    print(f"\nA naive (expand L, diff per weight): {naive_seconds:.3f} s, peak {naive_peak:.1f} MiB; "
          f"structured is {naive_seconds / results['A']:.1f}x faster")

    if not args.quick:
        print("\nscaling (C with growing input): time per edge should stay flat")
        print(f"{'input':>6} {'edges':>7} {'derive s':>9} {'us/edge':>8}")
        for size in (8, 12, 16, 20, 24):
            net = network_c(size)
            n = edges(net)
            clear_cache()
            start = time.perf_counter()
            derive_all(fresh(net))
            seconds = time.perf_counter() - start
            print(f"{size:>6} {n:7} {seconds:9.3f} {1e6 * seconds / n:8.1f}")


if __name__ == "__main__":
    main()
