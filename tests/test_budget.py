"""Budgets: what a command would build, counted from shapes, and the one line past a limit."""

from __future__ import annotations

import pytest
from graphs import GRAPHS
from hypothesis import given
from strategies import networks

import symbackprop as sb
from symbackprop import budget
from symbackprop.budget import OverBudget, Work


def exact_edges(net: sb.Network) -> int:
    """The edges of the graph as the operations wire it (padding left out), counted slowly:
    per layer, from what it reads (several inputs laid end to end)."""
    edges = net.output_size
    for number, layer in enumerate(net.layers, start=1):
        connections = layer.connections(net.input_shape_of(number))
        edges += sum(len(c.inputs) for c in connections)
        edges += len(connections) if layer.has_activation else 0
    return edges


def built_edges(net: sb.Network) -> int:
    """The edges of the scalar graph itself, once built: every node's inputs, and the loss's."""
    graph = net.derive().graph
    edges = net.output_size
    for layer in graph.layers:
        edges += sum(len(node.inputs) for node in (*layer.z, *layer.a))
    return edges


def test_graph_edges_of_the_presets():
    assert sb.presets.article().graph_edges == 9 * 4 + 9 + 4 * 4 + 4 + 2 * 4 + 2 + 2 == 77
    assert sb.presets.lenet5().graph_edges == exact_edges(sb.presets.lenet5()) == 429_352


@given(net=networks())
def test_graph_edges_count_the_padding_places_too(net):
    padded = any(getattr(layer, "padding", (0, 0)) != (0, 0) for layer in net.layers)
    if padded:
        assert net.graph_edges >= exact_edges(net)
    else:
        assert net.graph_edges == exact_edges(net)


def test_graph_edges_stay_exact_past_what_int64_holds():
    # 10^19 outputs of a 1x1 conv, each reading one pixel and activated, all read by one
    # dense unit: 3·10^19 + 2 edges, where a numpy int64 product would wrap around.
    net = sb.Network(
        (1, 10**6, 10**6),
        [sb.Conv2D(kernel_size=1, out_channels=10**7, activation="relu"), sb.Dense(units=1)],
        loss="sse",
    )
    assert net.graph_edges == 3 * 10**19 + 2
    with pytest.raises(OverBudget, match=r"3\.0e\+19 edges .* far too large to do at any limit"):
        budget.enforce("derive", [budget.scalar_graph(net)])


@pytest.mark.parametrize("case", list(GRAPHS))
def test_graph_edges_of_a_graph_count_every_input_of_every_layer(case):
    net = GRAPHS[case]()
    assert exact_edges(net) == built_edges(net)
    if any(layer.pads() for layer in net.layers):
        assert net.graph_edges > exact_edges(net)  # the padding places too: a close upper bound
    else:
        assert net.graph_edges == exact_edges(net)


def test_graph_edges_of_an_addition_reading_a_tensor_twice():
    net = GRAPHS["one addition reading a tensor twice"]()  # conv 3x3 (padded) → add(h, x, h) → dense 2
    # conv: 9 windows of 9 places (49 on the image) and 9 activations; the addition: 3 per output;
    # dense: 2 x 9 and 2 activations; the loss reads 2
    assert net.graph_edges == (9 * 9 + 9) + 9 * 3 + (2 * 9 + 2) + 2 == 139
    assert exact_edges(net) == built_edges(net) == (49 + 9) + 9 * 3 + (2 * 9 + 2) + 2 == 107


def test_graph_edges_of_resnet_tiny():
    net = sb.presets.resnet_tiny()
    convs = [  # outputs x window (+ one activation per output), per convolution
        2048 * 27 + 2048, 2048 * 72 + 2048, 2048 * 72 + 2048,  # stem, block 1
        1024 * 72 + 1024, 1024 * 144 + 1024, 1024 * 8 + 1024,  # block 2 and its 1x1 shortcut
    ]
    rest = 2048 * 2 + 2048 + 1024 * 2 + 1024 + 16 * 64 + (10 * 16 + 10) + 10  # adds, relus, pool, dense, loss
    assert net.graph_edges == sum(convs) + rest == 599_220
    # without the padding places: each plane of a 3x3 conv reads 46 x 46 places of 16 x 16
    # (23 x 23 strided to 8 x 8, 22 x 22 of 8 x 8)
    inside = [8 * 3 * 46**2 + 2048, 8 * 8 * 46**2 + 2048, 8 * 8 * 46**2 + 2048,
              16 * 8 * 23**2 + 1024, 16 * 16 * 22**2 + 1024, 1024 * 8 + 1024]
    assert exact_edges(net) == sum(inside) + rest == 541_076


def test_work_within_its_limits_goes_ahead():
    budget.enforce("derive", [Work("build a scalar graph of", "edges", 1_000_000, 11.0)])
    budget.enforce("derive", [Work("build a scalar graph of", "edges", 5, 0.1)], {"edges": 5})


def test_work_past_a_limit_is_one_line_with_the_estimate_and_the_flag():
    works = [
        Work("build a scalar graph of", "edges", 2_500_000, 27.5, 1.5e9),
        Work("write per-node code for a scalar graph of", "edges", 2_500_000, 750.0, 4e9),
    ]
    with pytest.raises(OverBudget) as refused:
        budget.enforce("derive", works)
    assert str(refused.value) == (
        "derive would build a scalar graph of 2,500,000 edges (estimated 13.0 min, 4.0 GB), "
        "more than --max-edges allows (1,000,000); rerun with --max-edges 2500000 to go ahead"
    )
    with pytest.raises(OverBudget, match="more than --max-closed-size allows \\(10\\)"):
        budget.enforce("derive", [budget.closed_forms(11)], {"closed": 10})


def test_finite_differences_count_two_evaluations_per_weight_per_point_and_choice():
    article = sb.presets.article()  # generic g and L: 6 choices of activation and loss
    work = budget.finite_differences(article, samples=3)
    assert work.amount == 6 * 3 * (2 * 16 + 1)
    assert work.limit == "evaluations"


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (999, "999"),
        (1_234_567, "1,234,567"),
        (10**12, "1.0e+12"),
        (31 * 10**44, "3.1e+45"),
        (10**5000, "1.0e+5000"),
    ],
    ids=["999", "millions", "a trillion", "1e45", "more digits than str() converts"],
)
def test_counts_read_well_however_large(n, text):
    assert budget.count(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "1 s"),
        (42, "42 s"),
        (150, "2.5 min"),
        (5400, "1.5 h"),
        (86400 * 10, "10 days"),
        (1e12, "more than a century"),
    ],
)
def test_durations_read_well(seconds, text):
    assert budget.duration(seconds) == text
