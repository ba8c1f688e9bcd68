"""Exercises and their answer keys: every answer the engine computed, checked against the
independent numpy backprop (``symbackprop.reference`` and the operations' reference faces),
never against the engine itself."""

from __future__ import annotations

import re
import subprocess

import graphs
import numpy as np
import pytest
import yaml
from github_markdown import parse

import symbackprop as sb
from symbackprop import cli, reference
from symbackprop.document.exercises import exercise_set, render
from symbackprop.latex import overfull_boxes

NETWORKS = {
    "article": sb.presets.article,
    "relu": lambda: sb.Network(
        (1, 4, 4),
        [
            sb.Conv2D(kernel_size=2, activation="relu"),
            sb.Conv2D(kernel_size=2, activation="relu"),
            sb.Dense(units=2),
        ],
        loss="sse",
        name="relu",
    ),
    "padded": lambda: sb.Network(
        (2, 4, 4),
        [
            sb.Conv2D(
                out_channels=2, kernel_size=3, stride=2, padding=1, bias=True, activation="tanh"
            ),
            sb.Dense(units=2),
        ],
        loss="mse",
        name="padded",
    ),
    "maxpool": lambda: sb.Network(
        (1, 6, 6),
        [
            sb.Conv2D(kernel_size=3, activation="softplus"),
            sb.MaxPool2D(kernel_size=2),
            sb.Dense(units=3, bias=True),
        ],
        loss="cross_entropy",
        name="maxpool",
    ),
    "avgpool": lambda: sb.Network(
        (1, 5, 5),
        [
            sb.Conv2D(out_channels=2, kernel_size=2, activation="sigmoid"),
            sb.AvgPool2D(kernel_size=2, stride=1),
            sb.Dense(units=2),
        ],
        loss="sse",
        name="avgpool",
    ),
    "mlp": lambda: sb.Network(
        (5,),
        [
            sb.Dense(units=4, bias=True, activation="leaky_relu"),
            sb.Dense(units=3, activation="tanh"),
            sb.Dense(units=2),
        ],
        loss="mse",
        name="mlp",
    ),
}
CASES = [(name, seed) for name in NETWORKS for seed in (0, 1, 2)]


def _layer_params(params: dict, layer: int) -> dict:
    return {kind: params[f"{kind}{layer}"] for kind in "Wb" if f"{kind}{layer}" in params}


def _index(symbol_name: str) -> tuple[str, tuple[int, ...]]:
    """ "W1_0_0_1_1" → ("W1", (0, 0, 1, 1))."""
    name, *index = symbol_name.split("_")
    return name, tuple(map(int, index))


def _activation(net: sb.Network, layer: int, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a, da/dz) of layer ``layer`` by the reference's own numpy activations."""
    op = net.layers[layer - 1]
    if not op.has_activation:
        return z, np.ones_like(z)
    value, slope = reference.ACTIVATIONS[op.activation]
    return value(z), slope(z)


def _upstream(net: sb.Network, x, y, params, layer: int) -> np.ndarray:
    """∂L/∂a^{(layer)}, flat, by the reference: the gradient of the input of the network made of
    the layers after ``layer``, fed with layer ``layer``'s outputs."""
    zs = reference.forward(net, x[None], params)
    a = _activation(net, layer, zs[layer - 1])[0][0]
    if layer == len(net.layers):
        return reference.LOSSES[net.loss][1](a.reshape(1, -1), y[None])[0]
    rest = sb.Network(net.shapes[layer], list(net.layers[layer:]), net.loss)
    renamed = {
        f"{name[0]}{int(name[1:]) - layer}": value
        for name, value in params.items()
        if int(name[1:]) > layer
    }
    return reference.loss_and_grads(rest, a, y, renamed).grads["x"].reshape(-1)


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{s}" for n, s in CASES])
def case(request):
    name, seed = request.param
    chosen = exercise_set(NETWORKS[name](), seed)
    ex = chosen.example
    return chosen, {e.kind: e.facts for e in chosen.exercises}, ex.network, ex


def test_the_forward_answers(case):
    _, facts, net, ex = case
    f = facts["forward"]
    z = reference.forward(net, ex.x[None], ex.params)[f["layer"] - 1].reshape(-1)
    np.testing.assert_allclose(f["z"], z[f["nodes"]], rtol=1e-12, atol=1e-14)
    if f["a"] is not None:
        a = _activation(net, f["layer"], z)[0]
        np.testing.assert_allclose(f["a"], a[f["nodes"]], rtol=1e-12, atol=1e-14)


def test_the_position_set_answers(case):
    """Probed through the operation's reference forward: a one-hot input and a kernel whose
    places hold 1, 2, 3, … light up exactly the outputs that read it, with its place."""
    _, facts, net, _ = case
    if "positions" not in facts:
        assert not any(op.position_note() for op in net.layers)
        return
    f = facts["positions"]
    op, shape = net.layers[f["layer"] - 1], net.shapes[f["layer"] - 1]
    params = {}
    if op.parameter_shapes(shape):
        w_shape = op.parameter_shapes(shape)["W"]
        places = np.arange(1, np.prod(w_shape[1:]) + 1, dtype=float).reshape(w_shape[1:])
        params = {"W": np.broadcast_to(places, w_shape).copy()}
        if "b" in op.parameter_shapes(shape):
            params["b"] = np.zeros(w_shape[0])

    def lit(j: int) -> np.ndarray:
        x = np.zeros(int(np.prod(shape)))
        x[j - 1] = 1.0
        return op.reference_forward(x.reshape(1, *shape), params).reshape(-1)

    for node, entries in zip(f["nodes"], f["sets"]):
        for j in range(1, int(np.prod(shape)) + 1):
            value = lit(j)[node]
            if params:  # the place that read j is the kernel weight's number
                expected = entries.index(j) + 1 if j in entries else 0.0
                assert value == expected, (node, j)
            else:
                assert (value != 0) == (j in entries), (node, j)
    readers = [i + 1 for i, v in enumerate(lit(f["input"])) if v != 0]
    assert readers == f["readers"]
    if params:
        assert [int(lit(f["input"])[i - 1]) for i in readers] == f["places"]


def test_the_gradient_answers(case):
    _, facts, net, ex = case
    f = facts["gradient"]
    name, index = _index(f["weight"])
    grads = reference.loss_and_grads(net, ex.x, ex.y, ex.params).grads
    assert f["value"] == pytest.approx(grads[name][index], rel=1e-10, abs=1e-14)
    upstream = _upstream(net, ex.x, ex.y, ex.params, f["layer"])  # the numbers the question gives
    for symbol, value in f["upstream"].items():
        i = int(symbol.rsplit("_", 1)[1]) - 1
        assert value == pytest.approx(upstream[i], rel=1e-10, abs=1e-14)


def test_the_dependency_answers(case):
    """Probed through the next layer's reference backward: with one weight set to 1 and the
    others 0, the input gradient at the node is nonzero exactly when that weight is listed."""
    _, facts, net, _ = case
    if "dependencies" not in facts:
        return
    f = facts["dependencies"]
    following = f["layer"] + 1
    op, shape = net.layers[following - 1], net.shapes[following - 1]
    w_shape = op.parameter_shapes(shape)["W"]
    out_shape = net.shapes[following]
    found = []
    for index in np.ndindex(*w_shape):
        params = {"W": np.zeros(w_shape)}
        params["W"][index] = 1.0
        if "b" in op.parameter_shapes(shape):
            params["b"] = np.zeros(w_shape[0])
        x = np.zeros((1, *shape))
        d_input, _ = op.reference_backward(np.ones((1, *out_shape)), x, params)
        if d_input.reshape(-1)[f["node"]] != 0:
            found.append(f"W{following}_" + "_".join(map(str, index)))
    assert sorted(found) == sorted(f["weights"])


def test_the_tensor_view_answers(case):
    _, facts, net, ex = case
    f = facts["tensor"]
    l = f["layer"]
    grads = reference.loss_and_grads(net, ex.x, ex.y, ex.params).grads
    z = reference.forward(net, ex.x[None], ex.params)[l - 1].reshape(-1)
    delta = _upstream(net, ex.x, ex.y, ex.params, l) * _activation(net, l, z)[1]
    if f["kind"] == "correlation":
        np.testing.assert_allclose(f["gradient"], grads[f"W{l}"][0, 0], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(
            np.ravel(f["delta"]), delta[: np.size(f["delta"])], rtol=1e-10, atol=1e-14
        )
        inputs = reference.layer_inputs(net, ex.x[None], ex.params)[l - 1][0, 0]
        (ph, pw) = net.layers[l - 1].padding  # the input map the question gives, zero-padded
        np.testing.assert_allclose(f["input"], np.pad(inputs, ((ph, ph), (pw, pw))), rtol=1e-12)
    else:
        rows, columns = np.shape(f["gradient"])
        start = f["columns_from"]
        np.testing.assert_allclose(
            f["gradient"], grads[f"W{l}"][:rows, start : start + columns], rtol=1e-10, atol=1e-14
        )
        inputs = reference.layer_inputs(net, ex.x[None], ex.params)[l - 1].reshape(-1)
        np.testing.assert_allclose(f["input"], inputs[start : start + columns], rtol=1e-12)
        assert np.any(inputs) <= np.any(f["input"])  # zeros only when the whole input is zero
        np.testing.assert_allclose(f["delta"], delta[:rows], rtol=1e-10, atol=1e-14)


def test_every_kind_of_exercise_is_asked():
    kinds = {e.kind for name in NETWORKS for e in exercise_set(NETWORKS[name](), 0).exercises}
    assert kinds == {"forward", "positions", "gradient", "dependencies", "tensor"}
    article = [e.kind for e in exercise_set(sb.presets.article(), 0).exercises]
    assert article == ["forward", "positions", "gradient", "dependencies", "tensor"]


def test_another_seed_gives_other_numbers_and_other_questions():
    first, second = exercise_set(sb.presets.article(), 0), exercise_set(sb.presets.article(), 1)
    assert not np.array_equal(first.example.x, second.example.x)
    asked = [{e.kind: e.facts for e in s.exercises} for s in (first, second)]
    assert asked[0]["gradient"]["weight"] != asked[1]["gradient"]["weight"]
    assert (
        exercise_set(sb.presets.article(), 1).exercises[2].facts == asked[1]["gradient"]
    )  # and the same again


def test_the_sheet_has_blanks_and_the_key_has_the_answers():
    files = render(sb.presets.article(), 0)
    sheet, key = files["exercises.tex"], files["solutions.tex"]
    assert sheet.count(r"\underline{\hspace{4em}}") >= 2 and r"\underline" not in key
    assert r"\paragraph{Answer.}" in key and "Answer." not in sheet
    chosen = exercise_set(sb.presets.article(), 0)
    gradient = next(e for e in chosen.exercises if e.kind == "gradient")
    assert f"= {chosen.example.formats.gradient(gradient.facts['value'])}" in key
    for kind in ("exercises", "solutions"):
        parsed = parse(files[f"{kind}.md"])
        assert [h for h in parsed.headings if h.startswith("Exercise ")] == [
            "Exercise 1: the forward pass",
            "Exercise 2: position sets",
            "Exercise 3: a weight's gradient by the chain rule",
            "Exercise 4: what an upstream gradient depends on",
            "Exercise 5: the tensor view",
        ]


@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_sheet_and_key_shows_on_github(name):
    files = render(NETWORKS[name](), 1)
    for kind in ("exercises", "solutions"):
        parse(files[f"{kind}.md"])


def test_the_command_writes_both_documents(tmp_path, capsys):
    assert cli.main(["exercises", "--no-pdf", "--seed", "2", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "exercises.md",
        "exercises.tex",
        "solutions.md",
        "solutions.tex",
    ]
    assert "seed 2" in (tmp_path / "exercises.tex").read_text()
    assert cli.main(["exercises", "--seed", "-1", "-o", str(tmp_path / "no")]) == 2
    assert "--seed must be 0 or more" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args", [[], ["--preset", "lenet5", "--seed", "3"]])
def test_the_pdfs_compile(tmp_path, args):
    assert cli.main(["exercises", *args, "--keep-log", "-o", str(tmp_path)]) == 0
    for kind in ("exercises", "solutions"):
        assert (tmp_path / f"{kind}.pdf").read_bytes().startswith(b"%PDF")
        log = (tmp_path / f"{kind}.log").read_text()
        assert not re.search(r"^! ", log, re.MULTILINE)
        text = subprocess.run(
            ["pdftotext", str(tmp_path / f"{kind}.pdf"), "-"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "Exercise 5: the tensor view" in text


# ---- networks that are graphs: a fork and its join -------------------------------------------


def rest_after(net: sb.Network, layer: int) -> sb.Network:
    """The network made of the layers after ``layer``, fed with layer ``layer``'s outputs: its
    input gradient is ∂L/∂a^{(layer)}. Every later layer must read ``layer`` or a later one."""
    x = sb.Input(net.shapes[layer])
    tensors = {layer: x}
    for k in range(layer + 1, len(net.layers) + 1):
        tensors[k] = net.layers[k - 1](*[tensors[s] for s in net.sources[k - 1]])
    return sb.Network(inputs=x, outputs=tensors[len(net.layers)], loss=net.loss)


def upstream_by_reference(net: sb.Network, x, y, params, layer: int) -> np.ndarray:
    """∂L/∂a^{(layer)}, flat, by the independent numpy backprop (``rest_after``)."""
    a = _activation(net, layer, reference.forward(net, x[None], params)[layer - 1])[0][0]
    renamed = {
        f"{prefix}{owner - layer}": params[name]
        for name, (owner, prefix) in net.parameter_owner.items()
        if owner > layer
    }
    return reference.loss_and_grads(rest_after(net, layer), a, y, renamed).grads["x"].reshape(-1)


GRAPH_CASES = [  # identity shortcut: the addition reads the fork; projection: two convolutions do
    ("residual_identity", graphs.residual_identity, 0),
    ("residual_identity", graphs.residual_identity, 1),
    ("residual_projection", graphs.residual_projection, 0),
    ("residual_projection", graphs.residual_projection, 2),
]


@pytest.mark.parametrize("name, make, seed", GRAPH_CASES, ids=[f"{n}-{s}" for n, _, s in GRAPH_CASES])
def test_the_join_answer_is_the_sum_of_both_paths_as_the_reference_computes_it(name, make, seed):
    chosen = exercise_set(make(), seed)
    ex, net = chosen.example, chosen.example.network
    facts = {e.kind: e.facts for e in chosen.exercises}["join"]
    l, j = facts["layer"], facts["node"]
    assert len(facts["readers"]) == 2 and facts["readers"] == list(net.consumers(l))
    total = upstream_by_reference(net, ex.x, ex.y, ex.params, l)[j]
    assert facts["value"] == pytest.approx(total, rel=1e-10, abs=1e-14)
    assert sum(facts["paths"].values()) == pytest.approx(total, rel=1e-10, abs=1e-14)
    assert all(abs(v) > 1e-12 for v in facts["paths"].values())  # both paths bring something
    # where the addition reads the fork itself, its path brings back the addition's own upstream
    # gradient (an addition passes it on unchanged), and the block's path is the rest
    for k in facts["readers"]:
        if len(net.sources[k - 1]) > 1:
            through_add = upstream_by_reference(net, ex.x, ex.y, ex.params, k)[j]
            assert facts["paths"][k] == pytest.approx(through_add, rel=1e-10, abs=1e-14)
            assert name == "residual_identity"


def test_the_join_exercise_reads_as_a_sum_of_paths_and_a_chain_has_none():
    sheet = render(graphs.residual_identity(), 0)
    assert "Exercise 6: a fork and its join: the sum over the paths" in sheet["exercises.tex"]
    assert r"\right|_{\text{via }2} + \left." in sheet["solutions.tex"]
    parse(sheet["exercises.md"])
    assert not any(e.kind == "join" for e in exercise_set(NETWORKS["relu"](), 0).exercises)


@pytest.mark.slow
def test_a_residual_sheet_compiles_without_lines_sticking_out(tmp_path):
    spec = tmp_path / "residual.yaml"
    spec.write_text(yaml.safe_dump(graphs.residual_identity().to_dict()), encoding="utf-8")
    assert cli.main(["exercises", str(spec), "--keep-log", "-o", str(tmp_path / "out")]) == 0
    for name in ("exercises", "solutions"):
        log = (tmp_path / "out" / f"{name}.log").read_text()
        assert not re.search(r"^! ", log, re.MULTILINE)
        assert not [box for box in overfull_boxes(log) if box[0] > 10], name
