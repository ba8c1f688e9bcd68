"""The handout: golden files, compiled PDFs, the worked example's numbers, the CLI.

Three networks are written and compiled once per session by the command itself:
the article's, one with several channels, stride 2 and padding, and one with
bias and softmax cross-entropy. TeX is required (CI installs it); nothing here
is skipped without it.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import assume, given, settings
from oracle import torch_loss_and_grads
from strategies import networks

import symbackprop as sb
from symbackprop import cli
from symbackprop.handout import position_table, render, worked_example
from symbackprop.latex import number, overfull_boxes

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "outputs" / "article"

SPECS = {
    "channels": {  # several channels and kernels, stride 2, padding 1
        "name": "channels",
        "input": [2, 4, 4],
        "layers": [
            {"conv": {"out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 1, "activation": "tanh"}},
            {"dense": {"units": 2, "activation": "sigmoid"}},
        ],
        "loss": "mse",
    },
    "softmax": {  # bias everywhere, softmax cross-entropy
        "name": "softmax",
        "input": [1, 3, 3],
        "layers": [
            {"conv": {"kernel_size": 2, "bias": True, "activation": "sigmoid"}},
            {"dense": {"units": 3, "bias": True, "activation": "identity"}},
        ],
        "loss": "cross_entropy",
    },
}
SPECS["tiny"] = {  # small enough for its closed forms to be printed, and simplified
    "name": "tiny",
    "input": [1, 2, 1],
    "layers": [{"conv": {"kernel_size": 1}}, {"dense": {"units": 1}}],
    "loss": "mse",
}
NAMES = ["article", *SPECS]


def network(name: str) -> sb.Network:
    return sb.presets.article() if name == "article" else sb.Network.from_dict(SPECS[name])


@pytest.fixture(scope="module")
def handouts(tmp_path_factory) -> dict[str, Path]:
    """Each network's handout folder, written and compiled once by ``symbackprop handout``."""
    root = tmp_path_factory.mktemp("handouts")
    folders = {}
    for name in NAMES:
        args = ["handout", "-o", str(root / name)]
        if name in SPECS:
            args.insert(1, str(_spec(root, name)))
        assert cli.main(args) == 0
        folders[name] = root / name
    return folders


def _spec(folder: Path, name: str) -> Path:
    spec = folder / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(SPECS[name]), encoding="utf-8")
    return spec


# ---- golden files and determinism ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["tex", "md"])
def test_committed_article_handout_is_what_the_code_makes(handouts, suffix):
    fresh = (handouts["article"] / f"handout.{suffix}").read_bytes()
    committed = (GOLDEN / f"handout.{suffix}").read_bytes()
    assert fresh == committed, f"outputs/article/handout.{suffix} is stale: run `symbackprop handout`"
    assert (GOLDEN / "handout.pdf").read_bytes().startswith(b"%PDF")


def test_the_handout_is_the_same_in_every_process():
    """Hash seeds change set and dict order of symbols; the text must not change with them."""
    script = ("import hashlib, symbackprop as sb; from symbackprop.handout import render; "
              "files = render(sb.presets.article()); "
              "print(hashlib.sha256((files['handout.tex'] + files['handout.md']).encode()).hexdigest())")
    digests = {
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
        for seed in ("1", "2")
    }
    files = render(sb.presets.article())
    assert digests == {hashlib.sha256((files["handout.tex"] + files["handout.md"]).encode()).hexdigest()}


def test_no_dates_or_paths_in_the_documents():
    files = render(sb.presets.article())
    for text in files.values():
        assert str(ROOT) not in text and "\\today" not in text
        assert not re.search(r"20\d\d-\d\d-\d\d", text)


# ---- the PDFs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_pdf_compiles_without_errors_or_wide_lines(handouts, name):
    folder = handouts[name]
    assert (folder / "handout.pdf").read_bytes().startswith(b"%PDF")
    log = (folder / "handout.log").read_text()
    assert not re.search(r"^! ", log, re.MULTILINE)
    assert "undefined" not in log.lower().replace("undefined references", "")
    wide = [box for box in overfull_boxes(log) if box[0] > 10]
    assert not wide, f"{name}: lines stick out of the page: {wide}"


@pytest.mark.parametrize("name", NAMES)
def test_pdf_text_has_the_sections_and_formulas(handouts, name):
    text = subprocess.run(["pdftotext", str(handouts[name] / "handout.pdf"), "-"],
                          capture_output=True, text=True, check=True).stdout
    for heading in ["Notation and the network", "The forward pass", "The computational graph",
                    "Backpropagation", "A worked example", "The chain rule, and the gradients at a node",
                    "Upstream gradients", "Weight gradients"]:
        assert heading in text
    assert "∇W L =" in text and "∂L" in text
    example = worked_example(network(name))
    assert f"The loss is L = {number(example.loss)}" in text


def test_article_pdf_carries_the_articles_formula_numbers(handouts):
    text = subprocess.run(["pdftotext", str(handouts["article"] / "handout.pdf"), "-"],
                          capture_output=True, text=True, check=True).stdout
    tags = set(re.findall(r"^\((\d+)\)$", text, re.MULTILINE))
    assert {"1", "2", "5", "10", "11", "12", "13", "15", "16", "17", "18", "19", "20"} <= tags
    assert "the article’s formula (4)" in text.replace("\n", " ")
    assert "Weight w1 , used at 9 positions:" in text  # formula (16)'s weight, 9 positions


# ---- the content ---------------------------------------------------------------------------------


def test_article_tex_has_the_articles_formulas(handouts):
    tex = (handouts["article"] / "handout.tex").read_text()
    # (1), evaluated for layer 1
    assert r"M_z = \left\lfloor \frac{4 - 2}{1} \right\rfloor + 1 = 3" in tex
    # (13) in general, and its instance (11) for w^{(2)}_1
    assert (r"\frac{\partial L}{\partial w^{(2)}_{n}} = \sum_{i} \underbrace{\frac{\partial L}{\partial a^{(2)}_{i}}}"
            r"_{\text{upstream}} \cdot \underbrace{g'\left(z^{(2)}_{i}\right) \cdot a^{(1)}_{p^{(2)}_{i}[n]}}"
            "_{\\text{local}}\n\\end{aligned} \\tag{13}") in tex
    assert "\\cdot a^{(1)}_{5}\n\\end{aligned} \\tag{11}" in tex
    # (17): upstream gradients of layer 1 through the convolution
    assert r"\sum_{i \,:\, j \in p^{(2)}_{i}} \frac{\partial L}{\partial a^{(2)}_{i}}" in tex
    # p^{(1)}_1 = {1, 2, 5, 6}, and the z it records
    assert r"p^{(1)}_{1} = \lbrace 1, 2, 5, 6 \rbrace" in tex
    assert r"z^{(1)}_{1} &= w^{(1)}_{1} x_{1} + w^{(1)}_{2} x_{2} + w^{(1)}_{3} x_{5} + w^{(1)}_{4} x_{6}" in tex
    assert "Subs" not in tex


def test_markdown_says_what_the_tex_says(handouts):
    for name in NAMES:
        tex = (handouts[name] / "handout.tex").read_text()
        md = (handouts[name] / "handout.md").read_text()
        sections = re.findall(r"\\(?:sub)?section\{([^}\\]*)", tex)
        headings = re.findall(r"^#+ (?:[\dA-Z.]+ )?(?:Appendix [AB] )?(.*)$", md, re.MULTILINE)
        assert sections == headings[1:]
        # every display of the .tex is in the .md, in the same order
        displays = re.findall(r"\\begin\{(?:align\*|aligned)\}\n(.*?)(?: \\tag\{\d+\})?\n\\end\{(?:align\*|aligned)\}",
                              tex, re.DOTALL)
        assert displays and [d for d in displays if d in md] == displays
        assert "```mermaid" in md
        for header, rule in pairwise(md.splitlines()):
            if re.fullmatch(r"\|( :?-+:? \|)+", rule):  # a table's alignment row
                assert rule.count("|") == header.count("|"), header


def test_graph_is_drawn_node_by_node_when_legible(handouts):
    tex = (handouts["article"] / "handout.tex").read_text()
    edges = re.findall(r"^\\draw\[(\S+), line width", tex, re.MULTILINE)
    # x→z: 9 × 4, z→a: 9 + 4 + 2, a→z: 4 × 4 + 2 × 4, a→L: 2
    assert len(edges) == 36 + 15 + 16 + 8 + 2
    assert edges.count("kernel1") == 9 + 4  # w_1 of both kernels: one colour, shared
    assert (r"\node[znode] (z1n1)" in tex) and (r"\node[lossnode] (L)" in tex)


def test_graph_is_drawn_layer_by_layer_when_too_large(handouts):
    tex = (handouts["channels"] / "handout.tex").read_text()
    assert "too dense to read" in tex and "layer by layer" in tex
    assert r"\node[box] (Z1) at" in tex and "znode" not in tex


def test_large_networks_derive_a_few_weights_and_list_the_rest(handouts):
    tex = (handouts["channels"] / "handout.tex").read_text()
    net = network("channels")
    assert "4 of the 16 elements of $W^{(2)}$" in tex and "4 of the 36 elements of $W^{(1)}$" in tex
    assert tex.count(r"\weight{") == 4  # W1's in full; W2's single terms in a grid
    assert r"\section{The other weights}" in tex
    rest = tex.split(r"\section{The other weights}")[1]
    assert rest.count(r"\\" + "\n") == 1 + sum(np.prod(s) for s in net.parameters.values()) - 8


def test_short_closed_forms_are_printed_and_simplified(handouts):
    tex = (handouts["tiny"] / "handout.tex").read_text()
    assert "In closed form, in $x$, $y$ and the weights alone:" in tex
    assert (r"\frac{\partial L}{\partial w^{(2)}_{1}} &= 2 w^{(1)}_{1} x_{1} \left(w^{(1)}_{1} w^{(2)}_{1} x_{1} "
            r"+ w^{(1)}_{1} w^{(2)}_{2} x_{2} - y_{1}\right)") in tex  # simplified: the 2 pulled out
    assert "too long to print" not in tex


def test_padding_is_shown_as_dots_in_the_position_sets():
    net = network("channels")
    d = net.derive()
    table = position_table(d, d.graph.layers[0])
    assert table[0][:4] == [None, None, None, None]  # top-left corner, kernel on the padding
    assert [tuple(e for e in row if e is not None) for row in table] == net.position_sets(1)


def test_user_strings_are_escaped():
    spec = {**SPECS["softmax"], "name": "my_net"}
    files = render(sb.Network.from_dict(spec))
    assert r"\texttt{my\_net}" in files["handout.tex"]
    assert r"*my\_net*" in files["handout.md"]


# ---- the worked example is what PyTorch computes ------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_worked_example_equals_torch(name):
    example = worked_example(network(name))
    loss, grads = torch_loss_and_grads(example.network, example.x, example.y, example.params)
    assert example.loss == pytest.approx(loss, rel=1e-12)
    for parameter, value in grads.items():
        np.testing.assert_allclose(example.gradients[parameter], value, rtol=1e-10, atol=1e-14)


@settings(max_examples=8)
@given(networks(max_size=4))
def test_worked_example_equals_torch_for_any_network(net):
    # ReLU's kink: one-decimal values can make z exactly 0 in one summation order and not the other.
    assume(not any(layer.activation in ("relu", "leaky_relu") for layer in net.layers))
    example = worked_example(net)
    loss, grads = torch_loss_and_grads(example.network, example.x, example.y, example.params)
    assert example.loss == pytest.approx(loss, rel=1e-10, abs=1e-14)
    for parameter, value in grads.items():
        np.testing.assert_allclose(example.gradients[parameter], value, rtol=1e-9, atol=1e-12)


def test_worked_example_forward_values_equal_torch():
    """Layer 1's z of the multi-channel network, node by node, against torch's conv2d."""
    import torch
    import torch.nn.functional as F

    example = worked_example(network("channels"))
    d = example.network.derive()
    z = F.conv2d(torch.tensor(example.x)[None], torch.tensor(example.params["W1"]), stride=2, padding=1)
    ours = [example.values[node.symbol] for node in d.graph.layers[0].z]
    np.testing.assert_allclose(ours, z.numpy().reshape(-1), rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_the_handout_prints_the_worked_example(handouts, name):
    tex = (handouts[name] / "handout.tex").read_text()
    md = (handouts[name] / "handout.md").read_text()
    example = worked_example(network(name))
    expected = [number(v) for array in example.gradients.values() if array is not example.gradients["x"]
                for v in array.reshape(-1)] + [number(example.loss)]
    for text in (tex, md):
        for value in expected:
            assert value in text


def test_article_example_makes_g_and_l_concrete():
    example = worked_example(sb.presets.article())
    assert example.choices == {"g": "sigmoid", "loss": "sse"}
    assert example.network.loss == "sse"
    assert {layer.activation for layer in example.network.layers} == {"sigmoid"}
    assert set(np.unique(example.x * 10 % 1)) == {0.0}  # one decimal: followed by hand


# ---- the command ---------------------------------------------------------------------------------


def test_without_tex_it_writes_the_tex_and_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli.shutil, "which", lambda name: None)
    assert cli.main(["handout", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["handout.md", "handout.tex"]
    err = capsys.readouterr().err.strip().splitlines()
    assert "install TeX" in err[-1] and "apt-get install" in err[-1]


def test_pdflatex_alone_makes_the_pdf_too(tmp_path, monkeypatch):
    real_which = cli.shutil.which
    monkeypatch.setattr(cli.shutil, "which", lambda name: None if name == "latexmk" else real_which(name))
    assert cli.main(["handout", str(_spec(tmp_path, "tiny")), "-o", str(tmp_path / "out")]) == 0
    log = (tmp_path / "out" / "handout.log").read_text()
    assert "Rerun to get" not in log  # run until the contents and references settle
    assert (tmp_path / "out" / "handout.pdf").read_bytes().startswith(b"%PDF")


def test_no_pdf_writes_the_tex_and_md_only(tmp_path):
    assert cli.main(["handout", "--no-pdf", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["handout.md", "handout.tex"]


def test_a_latex_error_shows_the_relevant_lines_and_writes_nothing(tmp_path, monkeypatch, capsys):
    broken = "\\documentclass{article}\n\\begin{document}\n" + "Fine.\n" * 200 + "\\frobnicate\n\\end{document}\n"
    monkeypatch.setattr(cli, "render", lambda net: {"handout.tex": broken, "handout.md": "x"})
    assert cli.main(["handout", "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Undefined control sequence" in err and r"\frobnicate" in err
    assert len(err.splitlines()) < 10
    assert list(tmp_path.iterdir()) == []


# ---- pooling layers and vector inputs ----------------------------------------------------------

OPS_NETWORKS = {
    # the max pool reads x itself: its one-decimal ties are exact in torch and here alike
    "maxpool": sb.Network((1, 4, 4), [
        sb.MaxPool2D(kernel_size=2, stride=1), sb.Dense(units=2, activation="sigmoid"),
    ], "sse", name="maxpool"),
    "avgpool and dilation": sb.Network((1, 5, 5), [
        sb.Conv2D(kernel_size=2, dilation=2, bias=True, activation="tanh"),
        sb.AvgPool2D(kernel_size=2, stride=1, padding=1), sb.Dense(units=2),
    ], "cross_entropy", name="avgpool"),
    "vector input": sb.Network((3,), [
        sb.Dense(units=2, bias=True, activation="tanh"), sb.Dense(units=1),
    ], "mse", name="mlp"),
}


@pytest.mark.parametrize("name", list(OPS_NETWORKS))
def test_handouts_cover_pooling_layers_and_vector_inputs(name):
    net = OPS_NETWORKS[name]
    texts = render(net)
    assert set(texts) == {"handout.tex", "handout.md"}
    for layer in net.layers:
        assert layer.title in texts["handout.md"]  # each layer's own section
    example = worked_example(net)
    loss, grads = torch_loss_and_grads(example.network, example.x, example.y, example.params)
    assert example.loss == pytest.approx(loss, rel=1e-12)
    for parameter, value in grads.items():
        np.testing.assert_allclose(example.gradients[parameter], value, rtol=1e-10, atol=1e-14)
