"""Exercises and their answer keys: every answer the engine computed, checked against the
independent numpy backprop (``symbackprop.reference`` and the operations' reference faces),
never against the engine itself."""

from __future__ import annotations

import functools
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


@functools.cache
def lenet5_sheets() -> dict[str, str]:
    """LeNet-5's sheets at seed 0, rendered once for the tests that read them (seconds each)."""
    return render(sb.presets.lenet5(), 0)


@functools.cache
def lenet5_set():
    """LeNet-5's exercises at seed 0, chosen once."""
    return exercise_set(sb.presets.lenet5(), 0)

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
    "issue19": lambda: sb.Network(  # issue 19's 1x6x6 net: conv 3x3 x2 relu, maxpool, dense 3
        (1, 6, 6),
        [sb.Conv2D(out_channels=2, kernel_size=3, activation="relu"), sb.MaxPool2D(kernel_size=2), sb.Dense(units=3)],
        loss="cross_entropy",
        name="issue19",
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
    assert kinds == {"forward", "positions", "gradient", "dependencies", "tensor"}  # chains: no join, no routing
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
    assert f"= {gradient.facts['printed']}" in key
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
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
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


# ---- issue 19: every number on the sheet, every cell in the key, keys from printed numbers ------


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_the_front_of_a_sheet_prints_no_numbers_and_each_question_what_it_reads():
    """LeNet-5 seed 0: the front gives the network, not 3.5 pages of weights; exercise 1 prints,
    for each node asked, the input patch under its window and its kernel, and the key's z is the
    sum of their products (the key once used x_57…x_189, which the sheet never printed)."""
    chosen = lenet5_set()
    files = lenet5_sheets()
    sheet = files["exercises.tex"]
    front = sheet.split("\\maketitle")[1].split("\\section*")[0]
    assert "pmatrix" not in front and "W^{(5)}" not in sheet
    forward = chosen.exercises[0]
    assert forward.kind == "forward" and forward.facts["nodes"] == [2404, 2995, 3999]
    ex = chosen.example
    question = sheet.split("\\section*{Exercise 1")[1].split("\\section*")[0]
    for node, z_printed in zip(forward.facts["nodes"], forward.facts["z_printed"]):
        channel, place = divmod(node, 28 * 28)
        row, column = divmod(place, 28)
        patch = ex.x[0, row : row + 5, column : column + 5]  # what the window covers, by numpy
        kernel = ex.params["W1"][channel, 0]
        for matrix in (patch, kernel):
            body = " \\\\ ".join(" & ".join(ex.formats.given(v) for v in line) for line in matrix)
            assert f"\\begin{{pmatrix}} {body} \\end{{pmatrix}}" in question
        assert f"b^{{(1)}}_{{{channel + 1}}} = {ex.formats.given(ex.params['b1'][channel])}" in question
        # the key adds up exactly these products: the given numbers are exact
        assert z_printed == pytest.approx(float(np.sum(patch * kernel) + ex.params["b1"][channel]), abs=5e-5)
        assert f"z^{{(1)}}_{{{node + 1}}}" in question


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_keys_show_every_cell_asked_for_computed_from_the_printed_numbers():
    """The 1x6x6 net of issue 19 (seed 0): asked for 3 rows and 6 columns, the key shows 3 x 6
    cells, the sixth column 0.02965, -0.7798, 0.7501 (0.02720 x 1.090, -0.7154 x 1.090 and
    0.6882 x 1.090, the printed numbers), and no stray dots."""
    net = NETWORKS["issue19"]()
    chosen = exercise_set(net, 0)
    tensor = next(e for e in chosen.exercises if e.kind == "tensor")
    assert tensor.facts["kind"] == "outer" and np.shape(tensor.facts["printed"]) == (3, 6)
    assert [row[5] for row in tensor.facts["printed"]] == ["0.02965", "-0.7798", "0.7501"]
    key = render(net, 0)["solutions.tex"].split("Exercise 5")[1]
    answer = key.split("Answer.")[1]
    matrix = answer.split("\\begin{pmatrix}")[1].split("\\end{pmatrix}")[0]
    assert [len(row.split("&")) for row in matrix.split("\\\\")] == [6, 6, 6]
    assert "\\cdots" not in matrix and "\\ldots" not in answer.split("\\end{pmatrix}")[1].split("\n")[0]
    assert "the first 3 rows and 6 columns" in " ".join(key.split())
    # LeNet-5: -0.7362 x 0.8826 = -0.6498 (the key once said -0.6497, from unrounded numbers)
    lenet = next(e for e in lenet5_set().exercises if e.kind == "tensor")
    assert lenet.facts["printed"][0][0] == r"-6.498 \times 10^{-1}"
    rows, columns = np.shape(lenet.facts["printed"])
    assert f"the first {rows} rows and {columns} columns" in " ".join(lenet5_sheets()["exercises.tex"].split())


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{s}" for n, s in CASES])
def printed_case(request):
    name, seed = request.param
    return exercise_set(NETWORKS[name](), seed)


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_a_student_who_works_with_the_printed_numbers_gets_the_keys_answers(printed_case):
    """Each key's number is the computation from the numbers its question prints, each step
    rounded as printed; and it stays within rounding of the exact (reference-checked) value."""
    ex = printed_case.example
    for exercise in printed_case.exercises:
        f = exercise.facts
        if exercise.kind == "tensor":
            if f["kind"] == "outer":
                delta = [ex.formats.gradient.rounded(v) for v in f["delta"]]
                inputs = [ex.printed(s) for s in _sources(ex, f["layer"])[f["columns_from"]:][: len(f["input"])]]
                expected = np.outer(delta, inputs)
            else:
                delta = np.vectorize(ex.formats.gradient.rounded)(np.array(f["delta"]))
                source = np.array(f["input"])
                kh, kw = f["shape"]
                h, w = delta.shape
                rounded = np.vectorize(lambda v: 0.0 if v == 0 else _given_or_value(ex, v))(source)
                expected = np.array([[np.sum(delta * rounded[m : m + h, n : n + w]) for n in range(kw)] for m in range(kh)])
            np.testing.assert_allclose(f["from_printed"], expected, rtol=1e-12, atol=1e-15)
            assert f["printed"] == [[ex.formats.gradient(v) for v in row] for row in expected]
            scale = np.max(np.abs(f["gradient"])) or 1.0
            np.testing.assert_allclose(f["from_printed"], f["gradient"], atol=2e-3 * scale)
        elif "from_printed" in f:
            assert f["printed"] == ex.formats.gradient(f["from_printed"])
            assert abs(f["from_printed"] - f["value"]) <= 2e-3 * max(abs(f["value"]), 1e-3)
    forward = next(e for e in printed_case.exercises if e.kind == "forward").facts
    for z_exact, z_printed in zip(forward["z"], forward["z_printed"]):
        assert z_printed == ex.formats.value.rounded(z_printed)  # as printed
        assert abs(z_printed - z_exact) <= 1e-3 * max(1.0, abs(z_exact))


def _sources(ex, layer: int) -> list:
    return list(ex.derivation.graph.layers[layer - 1].read)


def _given_or_value(ex, value: float) -> float:
    """A number of a correlation's input map as printed: given inputs as they are, computed ones
    rounded to four significant digits."""
    exact = ex.formats.given.rounded(value)
    return value if abs(exact - value) < 1e-12 and round(value * 10) == value * 10 else ex.formats.value.rounded(value)


def test_questions_stay_on_one_page_and_read_right():
    files = lenet5_sheets()
    for kind in ("exercises", "solutions"):
        tex = files[f"{kind}.tex"]
        for section in tex.split("\\section*")[1:]:  # each question in one minipage, tables whole
            kept = section.split("\\begin{minipage}{\\linewidth}")
            assert len(kept) == 2 and "longtable" not in kept[1].split("\\end{minipage}")[0]
    text = " ".join(files["exercises.tex"].split())
    assert "Layer 2 is an average pooling layer (avgpool 2x2, stride 2x2, padding 0x0)" in text
    assert "At which window place of each?" in text  # a pool's window has places, not weights
    assert "a dot where a place lies on the padding" not in text  # no padding here
    assert "computes each node from the input." in text and "the outputs of the input" not in text
    assert "\\frac{\\partial L}{\\partial a" not in text.split("\\section*")[4].split("\\begin{")[0]


def test_a_first_convolution_that_reads_padding_alone_gives_a_sheet_without_a_traceback():
    """Issue 19: 1x1x1 → conv 1x1 stride 2 padding 1 reads only padding (its input sits between
    the strides): no position set to ask about, no shared weight in use; the rest is asked."""
    net = sb.Network((1, 1, 1), [sb.Conv2D(kernel_size=1, padding=1, stride=2), sb.Dense(units=2)], "sse", name="void")
    chosen = exercise_set(net, 0)
    kinds = [e.kind for e in chosen.exercises]
    assert "positions" not in kinds and {"forward", "gradient"} <= set(kinds)
    files = render(net, 0)
    parse(files["exercises.md"])


def test_the_document_functions_take_what_the_command_line_will_pass():
    """--seed, --values FILE, --only KINDS and --layers N: a seed, given values, kinds, layers."""
    net = sb.presets.article()
    drawn = exercise_set(net, 3)
    x, y, params = drawn.example.x, drawn.example.y, drawn.example.params
    given = exercise_set(net, 3, values=(x, y, params))
    assert given.seed is None and [e.facts for e in given.exercises] == [e.facts for e in drawn.exercises]
    assert "given numbers" in render(net, 3, values=(x, y, params))["exercises.tex"]
    only = exercise_set(net, 0, kinds=["tensor", "forward"])
    assert [e.kind for e in only.exercises] == ["forward", "tensor"]  # in the sheet's order
    assert {e.facts["layer"] for e in exercise_set(net, 0, layers=[2]).exercises} == {2}
    with pytest.raises(ValueError, match="no exercise kind 'nope'; choose from forward, positions"):
        exercise_set(net, 0, kinds=["nope"])
    with pytest.raises(ValueError, match="no layer 9 in this network: its layers are 1 to 3"):
        exercise_set(net, 0, layers=[9])
    with pytest.raises(ValueError, match="values: W1 has shape"):
        exercise_set(net, 0, values=(x, y, {**params, "W1": np.zeros((2, 2))}))


# ---- fully convolutional networks: the routing exercise, and transposed position sets ---------


def fcn_small() -> sb.Network:
    """fcn_tiny's shape, small enough for --detail full: 1x4x4 → conv 2@2x2 stride 2 (relu) →
    transposed conv 2@2x2 stride 2 → a 2x4x4 score map, cross-entropy per pixel."""
    return sb.Network((1, 4, 4), [
        sb.Conv2D(out_channels=2, kernel_size=2, stride=2, activation="relu"),
        sb.ConvTranspose2D(out_channels=2, kernel_size=2, stride=2),
    ], loss="cross_entropy", name="fcn_small")


def fcn_upsample() -> sb.Network:
    """The same, upsampled: conv 2@2x2 stride 2 (relu) → bilinear upsampling x2 → 2x4x4 scores."""
    return sb.Network((1, 4, 4), [
        sb.Conv2D(out_channels=2, kernel_size=2, stride=2, activation="relu"),
        sb.Upsample(2, "bilinear"),
    ], loss="cross_entropy", name="fcn_upsample")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_routing_answer_is_the_upsamplings_weights_and_the_gradient_the_reference_gives(seed):
    chosen = exercise_set(fcn_upsample(), seed)
    ex, net = chosen.example, chosen.example.network
    f = next(e for e in chosen.exercises if e.kind == "routing").facts
    op, shape = net.layers[f["layer"] - 1], net.shapes[f["layer"] - 1]
    lit = np.zeros(int(np.prod(shape)))
    lit[f["input"]] = 1.0
    out = op.reference_forward(lit.reshape(1, *shape), {}).reshape(-1)  # numpy's interpolation
    assert [i for i in np.flatnonzero(out)] == f["readers"]
    np.testing.assert_allclose(out[f["readers"]], f["weights"], rtol=1e-12)
    total = upstream_by_reference(net, ex.x, ex.y, ex.params, f["layer"] - 1)[f["input"]]
    assert f["value"] == pytest.approx(total, rel=1e-10, abs=1e-14)
    assert abs(f["from_printed"] - total) <= 2e-3 * max(abs(total), 1e-3)
    key = render(fcn_upsample(), seed)["solutions.tex"]
    assert "Exercise 4: routing through an upsampling" in key and f"= {f['printed']}" in key


def test_a_transposed_convolutions_position_sets_are_its_input_and_kernel_place_pairs():
    """Probed through numpy: with one kernel place (c, m, n) set to 1 and one input lit, the
    outputs that light up are those whose set pairs that input with that place."""
    chosen = exercise_set(fcn_small(), 1)
    f = next(e for e in chosen.exercises if e.kind == "positions").facts
    net = chosen.example.network
    assert f["layer"] == 2
    op, shape = net.layers[1], net.shapes[1]
    channels, (kh, kw) = shape[0], op.kernel_size
    for node, entries in zip(f["nodes"], f["sets"]):
        for slot, j in enumerate(entries):
            c, place = divmod(slot, kh * kw)
            weights = np.zeros(op.parameter_shapes(shape)["W"])
            weights[c, :, place // kw, place % kw] = 1.0
            for input_ in range(1, int(np.prod(shape)) + 1):
                x = np.zeros(int(np.prod(shape)))
                x[input_ - 1] = 1.0
                value = op.reference_forward(x.reshape(1, *shape), {"W": weights, "b": np.zeros(2)}).reshape(-1)[node]
                assert (value == 1.0) == (input_ == j), (node, slot, input_)
    assert channels == 2
    key = render(fcn_small(), 1)["solutions.tex"]
    assert r"p^{(2)}_{" in key and r"\lbrace (" in key  # written as (input, place) pairs


@pytest.mark.slow
@pytest.mark.parametrize("name, make, pages", [
    ("lenet5", sb.presets.lenet5, (3, 7)),
    ("issue19", NETWORKS["issue19"], (3, 5)),
    ("fcn_upsample", fcn_upsample, (2, 5)),
])
def test_sheets_compile_short_with_nothing_sticking_out(tmp_path, name, make, pages):
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(make().to_dict()), encoding="utf-8")
    assert cli.main(["exercises", str(spec), "--keep-log", "-o", str(tmp_path / "out")]) == 0
    for kind, most in zip(("exercises", "solutions"), pages):
        log = (tmp_path / "out" / f"{kind}.log").read_text()
        assert not re.search(r"^! ", log, re.MULTILINE)
        assert not [box for box in overfull_boxes(log) if box[0] > 10], kind
        info = subprocess.run(["pdfinfo", str(tmp_path / "out" / f"{kind}.pdf")], capture_output=True, text=True, check=True)
        assert int(re.search(r"^Pages:\s+(\d+)", info.stdout, re.MULTILINE).group(1)) <= most, kind


# ---- batch normalisation over a batch ----------------------------------------------------------


def batch_norm_net() -> sb.Network:
    """1x3x3 → conv 2x2 → BatchNorm2D → ReLU → dense 2, sse, in train mode."""
    x = sb.Input((1, 3, 3))
    h = sb.BatchNorm2D()(sb.Conv2D(kernel_size=2)(x))
    return sb.Network(inputs=x, outputs=sb.Dense(units=2)(sb.ReLU()(h)), loss="sse", name="bn")


def test_the_batch_norm_answer_is_worked_from_its_printed_numbers_as_the_reference_computes_it():
    net = batch_norm_net()
    chosen = exercise_set(net, 0)
    assert chosen.coupled and chosen.network.mode == "eval"  # the other questions: one sample, eval mode
    (asked,) = [e for e in chosen.exercises if e.kind == "batchnorm"]
    f, ex = asked.facts, chosen.example
    xs, ys = f["batch"]
    params = {name: ex.params[name] for name in net.parameters}
    a1 = reference.forward(net, xs, params)[0]  # the convolution's output: the layer's input
    assert f["mu"] == pytest.approx(a1.mean(), abs=1e-12) and f["var"] == pytest.approx(a1.var(), abs=1e-12)
    np.testing.assert_allclose(f["hats"], ((a1 - a1.mean()) / np.sqrt(a1.var() + 1e-5)).ravel(), atol=1e-12)
    renamed = {f"{prefix}{owner - 1}": params[name] for name, (owner, prefix) in net.parameter_owner.items() if owner > 1}
    upstream = reference.loss_and_grads(rest_after(net, 1), a1, ys, renamed).grads["x"].ravel()
    assert f["value"] == pytest.approx(upstream[f["input"]], abs=1e-12)
    # the key, from the printed numbers: within rounding of the exact value, written as computed
    assert f["printed"] == ex.formats.gradient(f["from_printed"])
    assert abs(f["from_printed"] - f["value"]) <= 2e-3 * max(abs(f["value"]), 1e-3)
    key = render(net, 0)["solutions.tex"]
    assert r"\frac{\gamma^{(2)}_{1}}{8 \sigma^{(2)}_{1}}" in key  # the compact form the engine derived
    assert "in train mode over a batch" in " ".join(key.split())


def test_a_network_without_batch_norm_gets_no_batch_norm_question():
    assert "batchnorm" not in {e.kind for e in exercise_set(sb.presets.article(), 0).exercises}
