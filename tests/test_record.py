"""derivation.json: complete for small networks, sampled and cut past its budget, closed forms by
choice — and a few MB at most whatever the network."""

from __future__ import annotations

import json
import re

import pytest
from graphs import GRAPHS

import symbackprop as sb
from symbackprop import record
from symbackprop.cli import main
from symbackprop.record import Plan, dumps

B_IDENTITY = sb.Network(  # the net: 273 MB of closed forms before the bounds
    (1, 8, 8),
    [
        sb.Conv2D(kernel_size=3, out_channels=4, activation="sigmoid"),
        sb.Conv2D(kernel_size=3, out_channels=4, activation="sigmoid"),
        sb.Dense(units=10, activation="identity"),
    ],
    loss="sse",
    name="b_identity",
)


def test_a_small_network_is_listed_complete_with_small_closed_forms():
    data = Plan(sb.presets.article().derive()).build()
    assert data["bounds"] == {
        "complete": True,
        "sample": None,
        "cut_at": None,
        "closed_forms": "small",
        "small_closed_size": 1000,
        "small_closed_total": 100_000,
    }
    assert [len(data["parameters"][n]["elements"]) for n in ("W1", "W2", "W3")] == [4, 4, 8]
    sizes = [
        e["closed_size"] for n in ("W1", "W2", "W3") for e in data["parameters"][n]["elements"]
    ]
    written = [
        e for n in ("W1", "W2", "W3") for e in data["parameters"][n]["elements"] if e["closed"]
    ]
    # W1's 27,746 tree nodes, counted on the graph without building them (sympy's own
    # flattening makes the built form 4 nodes smaller)
    assert sizes[:4] == [27750] * 4 and len(written) == 8  # all of W3, none of W1 and W2
    assert all(e["closed_size"] <= record.SMALL_CLOSED for e in written)


def test_past_the_budget_each_list_shows_a_spread_sample_and_long_forms_are_cut(monkeypatch):
    monkeypatch.setattr(record, "LISTED_BUDGET", 400)
    net = sb.Network(
        (1, 6, 6), [sb.Conv2D(kernel_size=2, activation="tanh"), sb.Dense(units=3)], loss="sse"
    )
    plan = Plan(net.derive(), "none")
    assert not plan.complete and plan.cut_at == 3
    data = plan.build()
    assert data["bounds"]["sample"] == record.SAMPLE == 16
    w1 = data["parameters"]["W1"]
    assert w1["count"] == 4 and len(w1["elements"]) == 4  # fewer than the sample: all of them
    first = w1["elements"][0]
    assert first["terms"] == 25 and first["chain"].endswith(" + ...")  # one per position, cut at 3
    assert first["chain"].count("dL_da1_") == 3
    w2 = data["parameters"]["W2"]
    assert w2["count"] == 75 and len(w2["elements"]) == 16
    assert w2["elements"][0]["index"] == [0, 0] and w2["elements"][-1]["index"] == [2, 24]
    sets = data["layers"][0]["position_sets"]
    assert (
        sets["count"] == 25 and list(sets["sets"])[:3] == ["1", "3", "4"] and "25" in sets["sets"]
    )
    assert sets["sets"]["1"] == [1, 2, 7]  # [1, 2, 7, 8], cut at 3 like the forms
    assert data["layers"][1]["position_sets"] == {"count": 3, "every_input": 25}
    assert len(data["layers"][0]["upstream"]["formulas"]) == 16


def test_build_steps_its_progress_once_per_entry_the_plan_counted():
    plan = Plan(sb.presets.article().derive(), "none")
    steps: list[int] = []
    plan.build(progress=steps.append)
    # the loss, 16 weights, 16 input pixels, 9 + 4 position sets, 9 + 4 + 2 upstream formulas
    assert sum(steps) == plan.entries == 1 + 16 + 16 + 13 + 15


def test_the_written_file_matches_the_plan_and_lists_numbers_on_one_line():
    text = dumps(Plan(sb.presets.article().derive(), "none").build())
    assert '"1": [1, 2, 5, 6],' in text
    assert json.loads(text)["layers"][0]["position_sets"]["sets"]["1"] == [1, 2, 5, 6]


@pytest.mark.slow
def test_b_identity_is_small_and_its_closed_forms_are_only_counted(tmp_path, capsys):
    out = tmp_path / "b"
    spec = tmp_path / "b.json"
    spec.write_text(json.dumps(B_IDENTITY.to_dict()))
    assert main(["derive", str(spec), "-o", str(out), "-q"]) == 0
    size = (out / "derivation.json").stat().st_size
    assert size < 3_000_000  # was 273 MB
    data = json.loads((out / "derivation.json").read_text())
    elements = [e for p in data["parameters"].values() for e in p["elements"]]
    assert len(elements) == 820 and data["bounds"]["complete"]
    assert max(e["closed_size"] for e in elements) > 10**8  # counted, not written
    assert all(e["closed"] is None or e["closed_size"] <= 1000 for e in elements)
    assert main(["derive", str(spec), "-o", str(tmp_path / "all"), "--closed-forms", "all"]) == 2
    assert "rerun with --max-closed-size" in capsys.readouterr().err


@pytest.mark.slow
def test_lenet5_record_is_a_sample_of_a_few_mb():
    plan = Plan(sb.presets.lenet5().derive())
    assert not plan.complete
    text = dumps(plan.build())
    assert len(text) < 3_000_000
    data = json.loads(text)
    assert [len(p["elements"]) for p in data["parameters"].values()] == [
        16,
        6,
        16,
        16,
        16,
        16,
        16,
        16,
        16,
        10,
    ]
    assert all(e["closed"] is None for p in data["parameters"].values() for e in p["elements"])
    assert data["parameters"]["W1"]["elements"][0]["terms"] == 28 * 28


# ---- graphs: what each layer reads, and a fork's gradient summed over its readers --------------


def fork() -> sb.Network:
    """h = tanh(W1 x) read by a dense layer (2) and by the addition (3) joining them."""
    x = sb.Input((2,))
    h = sb.Dense(units=2, activation="tanh")(x, name="h")
    joined = sb.Add()(h, sb.Dense(units=2)(h), name="join")
    return sb.Network(inputs=x, outputs=sb.Dense(units=1)(joined), loss="sse", name="fork")


def test_a_graph_record_says_what_each_layer_reads_and_splits_a_fork_by_reader():
    data = Plan(fork().derive()).build()
    assert data["format"] == 3
    layers = data["layers"]
    assert [(layer["name"], layer["reads"], layer["read_by"]) for layer in layers] == [
        ("h", [0], [2, 3]), (None, [1], [3]), ("join", [1, 2], [4]), (None, [3], []),
    ]
    join = layers[2]
    assert join["input_shape"] == [[2], [2]] and join["output_shape"] == [2]
    assert join["position_sets"] == {"count": 2, "each_reads": 2, "of": 4}  # one value of each input
    assert join["general"]["input_upstream"] == {
        "1": r"\frac{\partial L}{\partial a^{(1)}_{i}} = \frac{\partial L}{\partial a^{(3)}_{i}} \cdot 1",
        "2": r"\frac{\partial L}{\partial a^{(2)}_{i}} = \frac{\partial L}{\partial a^{(3)}_{i}} \cdot 1",
    }
    assert layers[1]["general"]["input_upstream"] == {
        "1": r"\frac{\partial L}{\partial a^{(1)}_{i}} = \sum_{f} \frac{\partial L}{\partial a^{(2)}_{f}} \cdot w^{(2)}_{f,i}",
    }
    assert layers[0]["general"]["input_upstream"] == {}  # it reads x alone
    # h feeds two layers: its upstream gradient is the sum of what each sends back (rule (20))
    upstream = layers[0]["upstream"]
    assert upstream["formulas"]["dL_da1_1"] == "dL_da3_1 + W2_0_0*dL_da2_1 + W2_1_0*dL_da2_2"
    assert upstream["by_reader"] == {  # its sum, split
        "dL_da1_1": {"2": "W2_0_0*dL_da2_1 + W2_1_0*dL_da2_2", "3": "dL_da3_1"},
        "dL_da1_2": {"2": "W2_0_1*dL_da2_1 + W2_1_1*dL_da2_2", "3": "dL_da3_2"},
    }
    assert "by_reader" not in layers[1]["upstream"]  # read by one layer: nothing to split
    assert data["layers"][3]["position_sets"] == {"count": 1, "every_input": 2}  # dense


def test_a_fork_split_by_reader_is_cut_like_the_other_forms(monkeypatch):
    monkeypatch.setattr(record, "LISTED_BUDGET", 60)
    plan = Plan(fork().derive(), "none")
    assert plan.cut_at == 1
    split = plan.build()["layers"][0]["upstream"]["by_reader"]["dL_da1_1"]
    assert split == {"2": "W2_0_0*dL_da2_1 + ...", "3": "..."}  # one term in all, then cut


@pytest.mark.parametrize("case", list(GRAPHS))
def test_every_graph_record_follows_its_network(case):
    net = GRAPHS[case]()
    data = json.loads(dumps(Plan(net.derive(), "none").build()))
    for number, layer in enumerate(data["layers"], start=1):
        assert layer["reads"] == list(net.sources[number - 1])
        assert layer["read_by"] == list(net.consumers(number))
        assert list(layer["general"]["input_upstream"]) == [str(s) for s in dict.fromkeys(net.sources[number - 1]) if s]
        by_reader = layer["upstream"].get("by_reader", {})
        assert bool(by_reader) == (len(net.consumers(number)) > 1)
        for parts in by_reader.values():
            assert list(parts) == [str(r) for r in net.consumers(number)]
            for reader, text in parts.items():  # each part holds the gradients of its reader alone
                assert text == "0" or set(re.findall(r"dL_d[az](\d+)_", text)) == {reader}
            assert any(text != "0" for text in parts.values())


@pytest.mark.slow
def test_resnet_tiny_record_is_bounded_and_says_which_layer_reads_which():
    plan = Plan(sb.presets.resnet_tiny().derive(), "none")
    assert not plan.complete
    text = dumps(plan.build())
    assert len(text) < 3_000_000
    data = json.loads(text)
    layers = data["layers"]
    assert [layer["reads"] for layer in layers] == [
        [0], [1], [2], [1, 3], [4], [5], [6], [5], [7, 8], [9], [10], [11],
    ]
    assert [layer["number"] for layer in layers if "by_reader" in layer["upstream"]] == [1, 5]
    assert layers[3]["position_sets"] == {"count": 2048, "each_reads": 2, "of": 4096}
    assert len(layers[0]["upstream"]["by_reader"]) == record.SAMPLE
