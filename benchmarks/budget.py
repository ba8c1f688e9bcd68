"""How good the budgets' estimates are, and what derivation.json costs, measured in one run.

    python benchmarks/budget.py [--quick]

For each network: the scalar-graph edges ``symbackprop.budget`` counts from shapes alone
against the edges the operations actually wire (a ratio of 1 means exact; padding places
make the count a little high), the estimated seconds for building the graph and its
backward pass against the measured ones, and the size and time of ``derivation.json``
(``symbackprop.record``) with the default closed forms. The ratios show how far to trust
the "estimated …" of a refusal; the sizes, that the file stays a few MB.

A = the article network, B = 1x8x8 → conv 3x3 x4 → conv 3x3 x4 → dense 10 (identity), sse,
C = 1x16x16 → conv 3x3 x8 → conv 3x3 stride 2 x8 → dense 10 (sigmoid, sse), D = C with
padding 1 on both convolutions, and LeNet-5 (skipped by --quick).
"""

from __future__ import annotations

import argparse
import time

from sympy.core.cache import clear_cache

import symbackprop as sb
from symbackprop import budget
from symbackprop.record import Plan, dumps


def networks(quick: bool) -> dict[str, sb.Network]:
    sig = "sigmoid"
    nets = {
        "A": sb.presets.article(),
        "B": sb.Network(
            (1, 8, 8),
            [
                sb.Conv2D(out_channels=4, kernel_size=3, activation=sig),
                sb.Conv2D(out_channels=4, kernel_size=3, activation=sig),
                sb.Dense(units=10, activation="identity"),
            ],
            loss="sse",
        ),
        "C": sb.Network(
            (1, 16, 16),
            [
                sb.Conv2D(out_channels=8, kernel_size=3, activation=sig),
                sb.Conv2D(out_channels=8, kernel_size=3, stride=2, activation=sig),
                sb.Dense(units=10, activation=sig),
            ],
            loss="sse",
        ),
        "D": sb.Network(
            (1, 16, 16),
            [
                sb.Conv2D(out_channels=8, kernel_size=3, padding=1, activation=sig),
                sb.Conv2D(out_channels=8, kernel_size=3, stride=2, padding=1, activation=sig),
                sb.Dense(units=10, activation=sig),
            ],
            loss="sse",
        ),
    }
    if not quick:
        nets["LeNet-5"] = sb.presets.lenet5()
    return nets


def wired_edges(net: sb.Network) -> int:
    """The graph's edges as the operations wire them (slow: every connection is listed)."""
    edges = net.output_size
    for layer, shape in zip(net.layers, net.shapes):
        connections = layer.connections(shape)
        edges += sum(len(c.inputs) for c in connections)
        edges += len(connections) if layer.has_activation else 0
    return edges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip LeNet-5")
    args = parser.parse_args()
    print(
        f"{'net':8} {'edges':>8} {'counted':>8} {'ratio':>6} {'graph s':>8} {'estimated':>9} "
        f"{'ratio':>6} {'json MB':>8} {'json s':>7}"
    )
    for label, net in networks(args.quick).items():
        counted, wired = net.graph_edges, wired_edges(net)
        estimate = budget.scalar_graph(net).seconds
        clear_cache()
        start = time.perf_counter()
        d = net.derive()
        for number in range(1, len(net.layers) + 1):
            d.backward(number)
        graph_seconds = time.perf_counter() - start
        start = time.perf_counter()
        text = dumps(Plan(d).build())
        record_seconds = time.perf_counter() - start
        print(
            f"{label:8} {wired:8} {counted:8} {counted / wired:6.3f} {graph_seconds:8.2f} "
            f"{estimate:9.2f} {graph_seconds / estimate:6.2f} {len(text) / 1e6:8.2f} {record_seconds:7.2f}"
        )


if __name__ == "__main__":
    main()
