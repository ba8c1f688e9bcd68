"""The handout: golden files, what it says about each kind of network, its numbers, its PDFs.

The texts are made in memory (quick); the PDFs are compiled by the command itself, once
per session, in the slow tests. TeX is required there (CI installs it); nothing is
skipped without it.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from github_markdown import parse
from hypothesis import assume, given, settings
from oracle import torch_loss_and_grads
from strategies import networks

import symbackprop as sb
from symbackprop import cli, reference
from symbackprop.document import default_detail, render_handout, worked_example
from symbackprop.document.common import position_table
from symbackprop.latex import overfull_boxes

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "outputs" / "article"

SPECS = {
    "channels": {  # several channels and kernels, stride 2, padding 1
        "name": "channels",
        "input": [2, 4, 4],
        "layers": [
            {
                "conv": {
                    "out_channels": 2,
                    "kernel_size": 3,
                    "stride": 2,
                    "padding": 1,
                    "activation": "tanh",
                }
            },
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
    "tiny": {  # small enough for its closed forms to be printed, and simplified
        "name": "tiny",
        "input": [1, 2, 1],
        "layers": [{"conv": {"kernel_size": 1}}, {"dense": {"units": 1}}],
        "loss": "mse",
    },
    "relu": {  # seed 0 kills 11 of its 13 ReLUs: the example takes the next seed that does not
        "name": "relu",
        "input": [1, 4, 4],
        "layers": [
            {"conv": {"kernel_size": 2, "activation": "relu"}},
            {"conv": {"kernel_size": 2, "activation": "relu"}},
            {"dense": {"units": 2}},
        ],
        "loss": "sse",
    },
    "maxpool": {
        "name": "maxpool",
        "input": [1, 6, 6],
        "layers": [
            {"conv": {"kernel_size": 3, "activation": "relu"}},
            {"maxpool": {"kernel_size": 2}},
            {"dense": {"units": 2}},
        ],
        "loss": "cross_entropy",
    },
    "avgpool": {
        "name": "avgpool",
        "input": [1, 5, 5],
        "layers": [
            {"conv": {"kernel_size": 2, "activation": "tanh"}},
            {"avgpool": {"kernel_size": 2}},
            {"dense": {"units": 2}},
        ],
        "loss": "sse",
    },
    "mlp": {  # a vector input: neurons, not kernels
        "name": "mlp",
        "input": [4],
        "layers": [
            {"dense": {"units": 3, "bias": True, "activation": "tanh"}},
            {"dense": {"units": 2}},
        ],
        "loss": "sse",
    },
    "b820": {  # the 1x8x8 two-conv net: 820 weights
        "name": "b820",
        "input": [1, 8, 8],
        "layers": [
            {"conv": {"out_channels": 4, "kernel_size": 3, "activation": "sigmoid"}},
            {"conv": {"out_channels": 4, "kernel_size": 3, "activation": "sigmoid"}},
            {"dense": {"units": 10}},
        ],
        "loss": "sse",
    },
}
NAMES = ["article", *SPECS]


def network(name: str) -> sb.Network:
    return sb.presets.article() if name == "article" else sb.Network.from_dict(SPECS[name])


_TEXTS: dict[str, dict[str, str]] = {}


def texts(name: str) -> dict[str, str]:
    """handout.tex and handout.md of a network, made once per session."""
    if name not in _TEXTS:
        _TEXTS[name] = render_handout(network(name))
    return _TEXTS[name]


def _spec(folder: Path, name: str) -> Path:
    spec = folder / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(SPECS[name]), encoding="utf-8")
    return spec


def prose(text: str) -> str:
    """The text with its line breaks undone, to look for a sentence."""
    return " ".join(text.split())


def _pdf_text(path: Path) -> str:
    return subprocess.run(
        ["pdftotext", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout


# ---- golden files and determinism ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["tex", "md"])
def test_committed_article_handout_is_what_the_code_makes(suffix):
    committed = (GOLDEN / f"handout.{suffix}").read_text(encoding="utf-8")
    assert texts("article")[f"handout.{suffix}"] == committed, (
        f"outputs/article/handout.{suffix} is stale: run `symbackprop handout` and commit the result"
    )
    assert (GOLDEN / "handout.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_the_handout_is_the_same_in_every_process():
    """Hash seeds change set and dict order of symbols; the text must not change with them."""
    script = (
        "import hashlib, symbackprop as sb; from symbackprop.document import render_handout; "
        "files = render_handout(sb.presets.article()); "
        "print(hashlib.sha256((files['handout.tex'] + files['handout.md']).encode()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    files = texts("article")
    assert digests == {
        hashlib.sha256((files["handout.tex"] + files["handout.md"]).encode()).hexdigest()
    }


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_no_dates_paths_or_stray_characters_in_the_documents():
    for name in ("article", "maxpool", "mlp"):
        for kind, text in texts(name).items():
            assert str(ROOT) not in text and "\\today" not in text
            assert not re.search(r"20\d\d-\d\d-\d\d", text)
            if kind.endswith(".tex"):  # pdflatex's text fonts know ASCII, … and – (and no ·, −, ×)
                assert set(re.sub(r"[\x00-\x7f]", "", text)) <= {"…", "–"}, kind


# ---- the article, in its numbering ------------------------------------------------------------------


def test_the_articles_formulas_are_numbered_in_order():
    tex = texts("article")["handout.tex"]
    tags = re.findall(r"\\tag\{(\d+)\}", tex)
    assert tags == [str(n) for n in range(1, 21)]  # (1) to (20), no gap
    # (7) to (9), between the article's (6) and (10) (its figure 9): the downstream gradient
    # z^{(3)}_1 sends back to a^{(2)}_1, step by step
    assert (
        r"\frac{\partial L}{\partial z^{(3)}_{1}} = \frac{\partial L}{\partial a^{(3)}_{1}} \cdot "
        r"g'\left(z^{(3)}_{1}\right)" "\n\\end{aligned} \\tag{7}"
    ) in tex
    assert r"\frac{\partial z^{(3)}_{1}}{\partial a^{(2)}_{1}} = w^{(3)}_{1}" "\n\\end{aligned} \\tag{8}" in tex
    assert (
        r"\right|_{\text{from } z^{(3)}_{1}} = \frac{\partial L}{\partial z^{(3)}_{1}} \cdot "
        r"\frac{\partial z^{(3)}_{1}}{\partial a^{(2)}_{1}} = \frac{\partial L}{\partial a^{(3)}_{1}} \cdot "
        r"g'\left(z^{(3)}_{1}\right) \cdot w^{(3)}_{1}" "\n\\end{aligned} \\tag{9}"
    ) in tex
    # (3), (6), (14): the gradient vectors of W3, W2, W1
    assert (
        r"\frac{\partial L}{\partial W^{(3)}} &= \left[\frac{\partial L}{\partial w^{(3)}_{1}}, "
        r"\frac{\partial L}{\partial w^{(3)}_{2}}, \ldots, \frac{\partial L}{\partial w^{(3)}_{8}}\right]"
        "\n\\end{aligned} \\tag{3}"
    ) in tex
    assert "\\frac{\\partial L}{\\partial w^{(2)}_{4}}\\right]\n\\end{aligned} \\tag{6}" in tex
    assert "\\frac{\\partial L}{\\partial w^{(1)}_{4}}\\right]\n\\end{aligned} \\tag{14}" in tex
    # (4) is w^{(3)}_1's own formula, and the text cites it
    assert (
        r"\frac{\partial L}{\partial w^{(3)}_{1}} &= \frac{\partial L}{\partial a^{(3)}_{1}} \cdot "
        r"g'\left(z^{(3)}_{1}\right) \cdot a^{(2)}_{1}"
        "\n\\end{aligned} \\tag{4}"
    ) in tex
    assert all(f"(generalising ({n}))" in prose(tex) for n in (4, 10, 11, 15, 16))


def test_the_readmes_formula_numbers_are_the_handouts():
    """The README cites formula (13) for w^(2)_1's chain form and (12) for dL/da^(2)_1: the
    handout's (13) is the gradient of w^(2)_n, and its (12) the upstream gradient of a^(2)_i."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "the article's formula (13) for w^(2)_1" in readme and "formula (12): ∂L/∂a^(2)_1" in readme
    tex = texts("article")["handout.tex"]
    (thirteen,) = re.findall(r"\\begin\{aligned\}\n([^\n]*)\n\\end\{aligned\} \\tag\{13\}", tex)
    assert thirteen.startswith(r"\frac{\partial L}{\partial w^{(2)}_{n}} = \sum_{i}")
    (twelve,) = re.findall(r"\\begin\{aligned\}\n([^\n]*)\n\\end\{aligned\} \\tag\{12\}", tex)
    assert twelve.startswith(r"\frac{\partial L}{\partial a^{(2)}_{i}} = \sum_{f}")


def test_article_tex_has_the_articles_formulas():
    tex = texts("article")["handout.tex"]
    assert r"M_z = \left\lfloor \frac{4 - 2}{1} \right\rfloor + 1 = 3" in tex  # (1) for layer 1
    assert (
        r"\frac{\partial L}{\partial w^{(2)}_{n}} = \sum_{i} \underbrace{\frac{\partial L}{\partial a^{(2)}_{i}}}"
        r"_{\text{upstream}} \cdot \underbrace{g'\left(z^{(2)}_{i}\right) \cdot a^{(1)}_{p^{(2)}_{i}[n]}}"
        "_{\\text{local}}\n\\end{aligned} \\tag{13}"
    ) in tex
    assert "\\cdot a^{(1)}_{5}\n\\end{aligned} \\tag{11}" in tex
    assert (
        r"\sum_{i \,:\, j \in p^{(2)}_{i}} \frac{\partial L}{\partial a^{(2)}_{i}}" in tex
    )  # (17)
    assert r"p^{(1)}_{1} = \lbrace 1, 2, 5, 6 \rbrace" in tex
    assert (
        r"z^{(1)}_{1} &= w^{(1)}_{1} x_{1} + w^{(1)}_{2} x_{2} + w^{(1)}_{3} x_{5} + w^{(1)}_{4} x_{6}"
        in tex
    )
    assert "Subs" not in tex


def test_the_graph_caption_names_each_colours_weights_with_their_layer():
    tex = texts("article")["handout.tex"]
    caption = re.search(
        r"\\caption\{The computational graph \(the article's figure 8\)\. Edge colours: (.*)\}", tex
    )
    assert caption.group(1).startswith(
        r"blue $w^{(1)}_{1}, w^{(2)}_{1}$; red $w^{(1)}_{2}, w^{(2)}_{2}$;"
    )


def test_graph_is_drawn_node_by_node_when_legible():
    tex = (
        texts("article")["handout.tex"]
        .split(r"\section{The computational graph}")[1]
        .split(r"\section")[0]
    )
    edges = re.findall(r"^\\draw\[(\S+), line width", tex, re.MULTILINE)
    # x→z: 9 × 4, z→a: 9 + 4 + 2, a→z: 4 × 4 + 2 × 4, a→L: 2
    assert len(edges) == 36 + 15 + 16 + 8 + 2
    assert edges.count("kernel1") == 9 + 4  # w_1 of both kernels: one colour, shared
    assert (r"\node[znode] (z1n1)" in tex) and (r"\node[lossnode] (L)" in tex)


def test_the_gradients_at_a_node_figure_keeps_labels_off_the_arrows():
    tex = texts("article")["handout.tex"]
    appendix = tex.split(r"\section{The chain rule, and the gradients at a node}")[1]
    back = re.findall(
        r"\\draw\[back\] \((\w+)\) (to\[bend left=-?\d+\]|--) node\[lab, (\w+)", appendix
    )
    # each gradient flowing back is bent away from the straight forward edge it pairs with,
    # its label on the outer side of the bend
    assert [(src, path.startswith("to[bend"), side) for src, path, side in back] == [
        ("z", True, "above"),
        ("z", True, "below"),
        ("L", True, "below"),
    ]


# ---- what the handout says, network by network --------------------------------------------------


def test_relu_derivative_is_an_iverson_bracket():
    tex = texts("relu")["handout.tex"]
    assert r"\left[z^{(1)}_{1} > 0\right]" in tex and "mathbb{1}" not in tex


def test_worked_example_keeps_at_most_half_of_the_relus_alive():
    example = worked_example(network("relu"))  # seed 0's first draw: 11 of its 13 ReLUs dead
    assert (example.seed, example.draw, example.dead) == (0, 5, (4, 13))
    assert (
        "seed 0, drawn 6 times until at most half of the ReLUs were dead (4 of the 13 ReLUs dead here"
        in prose(texts("relu")["handout.tex"])
    )
    other = worked_example(network("relu"), seed=1)  # another seed, other numbers: alive at once
    assert (other.draw, other.dead) == (0, (4, 13)) and not np.array_equal(other.x, example.x)


def test_each_worked_step_has_as_many_numbers_as_factors():
    # identity activation in the last layer: ∂L/∂w = ∂L/∂a · input, two factors, two numbers
    tex = texts("relu")["handout.tex"]
    step = re.search(
        r"For instance, for \$w\^\{\(3\)\}_\{1\}\$.*?\\begin\{aligned\}\n(.*?)\n\\end\{aligned\}",
        tex,
        re.DOTALL,
    )
    formula, numbers, result = step.group(1).split(" \\\\\n")
    assert formula.count(r"\cdot") == 1 and numbers.count(r"\cdot") == 1
    assert re.fullmatch(r"&\\quad = \([^()]+\) \\cdot \([^()]+\)", numbers)
    example = worked_example(network("relu"))
    assert result == f"&\\quad = {example.formats.gradient(example.gradients['W3'][0, 0])}"


def test_pooling_layers_have_position_sets_and_route_gradients_in_the_example():
    tex = texts("maxpool")["handout.tex"]
    assert r"a^{(2)}_{i} = \max_{j \in p^{(2)}_{i}} a^{(1)}_{j}" in tex
    assert r"p^{(2)}_{1} = \lbrace 1, 2, 5, 6 \rbrace" in tex
    assert r"\text{ is the first maximum of } p^{(2)}_{i}" in tex  # the routing formula
    routing = (
        prose(tex)
        .split("Backwards through the max pooling layer 2")[1]
        .split(r"\end{longtable}")[0]
    )
    example = worked_example(network("maxpool"))
    d = example.derivation
    window = d.graph.layers[1].z[0].inputs
    winner = max(window, key=lambda s: example.values[s])  # the first maximum
    upstream = example.values[d.graph.layers[1].upstream[0]]
    for symbol in window:
        routed = upstream if symbol == winner else 0.0
        assert (
            f"{d.tex_names[symbol]} = {example.formats.value(example.values[symbol])}$ & "
            f"${'1' if symbol == winner else '0'}$ & ${example.formats.gradient(routed)}$"
            in routing
        )


def test_average_pooling_spreads_its_gradient_evenly():
    tex = texts("avgpool")["handout.tex"]
    assert r"a^{(2)}_{i} = \frac{1}{4} \sum_{j \in p^{(2)}_{i}} a^{(1)}_{j}" in tex
    routing = (
        prose(tex)
        .split("Backwards through the average pooling layer 2")[1]
        .split(r"\end{longtable}")[0]
    )
    assert routing.count(r"& $\frac{1}{4}$ &") == 4  # exact: a quarter, not 0.2500
    example = worked_example(network("avgpool"))
    d = example.derivation
    upstream = example.values[d.graph.layers[1].upstream[0]]
    for symbol in d.graph.layers[1].z[0].inputs:  # each input gets a quarter of the upstream
        assert (
            f"{d.tex_names[symbol]} = {example.formats.value(example.values[symbol])}$ & "
            f"$\\frac{{1}}{{4}}$ & ${example.formats.gradient(upstream / 4)}$"
        ) in routing


def test_a_vector_input_network_talks_about_neurons_not_kernels():
    tex = prose(texts("mlp")["handout.tex"])
    for word in ("kernel", "position set", "pixels", "Stride"):
        assert word not in tex, word
    assert "input features" in tex and "weighted sum of neuron $i$ of layer $l$" in tex
    assert r"z^{(1)}_{f} = \sum_{i=1}^{4} w^{(1)}_{f,i} \, x_{i} + b^{(1)}_{f}" in tex


def test_a_shared_weight_is_worked_in_full_with_numbers():
    tex = texts("article")["handout.tex"]
    part = tex.split("A shared weight collects one term per")[1]
    table = part.split(r"\end{longtable}")[0]
    assert len(re.findall(r"^\d+ & ", table, re.MULTILINE)) == 9  # w^{(1)}_1: its 9 terms
    example = worked_example(network("article"))
    assert (
        f"= {example.formats.gradient(example.gradients['W1'][0, 0, 0, 0])}"
        in part.split(r"\end{aligned}")[0]
    )


def test_the_weight_gradient_is_the_cross_correlation_of_the_input_with_delta():
    example = worked_example(network("article"))
    d = example.derivation
    delta = np.array([example.values[s] for s in d.graph.layers[0].z_upstream]).reshape(3, 3)
    correlation = np.array(
        [[np.sum(example.x[0, m : m + 3, n : n + 3] * delta) for n in range(2)] for m in range(2)]
    )
    np.testing.assert_allclose(correlation, example.gradients["W1"][0, 0], rtol=1e-12)
    tex = texts("article")["handout.tex"]
    fmt = example.formats.gradient
    assert (
        r"\frac{\partial L}{\partial W^{(1)}} = X \star \delta^{(1)} = \begin{pmatrix} "
        f"{fmt(correlation[0, 0])} & {fmt(correlation[0, 1])}"
    ) in tex
    assert "as the tensor view of section \\hyperref[sec:backward1]{4.3} says" in prose(tex)


def test_numbers_are_written_one_way_per_kind():
    tex = texts("article")["handout.tex"]
    table = tex.split(r"$\partial L / \partial z^{(1)}_{i}$ \\")[1].split(r"\end{longtable}")[0]
    for row in re.findall(r"^\d+ & (.*) \\\\$", table, re.MULTILINE):
        z, a, da, dz = [cell.strip("$") for cell in row.split(" & ")]
        assert r"\times" not in z + a  # values: fixed-point
        assert r"\times 10^{" in da and r"\times 10^{" in dz  # gradients: all scientific


# ---- detail: full or summary ------------------------------------------------------------------


def test_the_default_detail_follows_the_size():
    assert [default_detail(network(n)) for n in ("article", "mlp", "b820")] == [
        "full",
        "full",
        "summary",
    ]
    assert default_detail(sb.presets.lenet5()) == "summary"


def test_a_summary_derives_one_weight_per_parameter_and_lists_a_few_position_sets():
    tex = texts("b820")["handout.tex"]
    assert "This is the summary" in prose(tex)
    derived = re.findall(
        r"^\\frac\{\\partial L\}\{\\partial (w\^\{\(\d\)\}_\{[\d,]+\})\} &= ", tex, re.MULTILINE
    )
    # one weight per parameter in section 4, plus the worked example's two by hand
    assert derived[:3] == ["w^{(3)}_{1}", "w^{(2)}_{1,1,1,1}", "w^{(1)}_{1,1,1,1}"]
    assert "The position sets of nodes 1, 22, 144 of the 144:" in prose(tex)  # corner, middle, last
    assert r"\section{The other weights}" not in tex
    assert "Every element of the layer's parameters is derived in the same way" in prose(tex)


def test_the_markdown_shows_on_github():
    for name in ("article", "maxpool", "mlp", "b820", "channels"):
        tex, md = texts(name)["handout.tex"], texts(name)["handout.md"]
        parsed = parse(md)
        sections = re.findall(r"\\(?:sub)?section\{([^}\\]*)", tex)
        assert [re.sub(r"^(Appendix )?[\dA-Z.]+ ", "", h) for h in parsed.headings[1:]] == sections
        # every display of the .tex is in the .md
        displays = re.findall(
            r"\\begin\{(?:align\*|aligned)\}\n(.*?)(?: \\tag\{\d+\})?\n\\end\{(?:align\*|aligned)\}",
            tex,
            re.DOTALL,
        )
        assert displays and all(d in md for d in displays)
        assert len(parsed.mermaid) == tex.count(r"\begin{tikzpicture}")
        assert parsed.tables == tex.count(r"\begin{longtable}") + tex.count(r"\begin{tabular}")


def test_large_networks_in_full_derive_a_few_weights_and_list_the_rest():
    tex = render_handout(network("channels"), "full")["handout.tex"]
    assert "4 of the 36 elements of $W^{(1)}$" in prose(
        tex
    ) and "4 of the 16 elements of $W^{(2)}$" in prose(tex)
    assert r"\section{The other weights}" in tex
    rest = tex.split(r"\section{The other weights}")[1]
    assert rest.count(r"\\" + "\n") == 1 + 36 + 16 - 8


def test_short_closed_forms_are_printed_and_simplified():
    tex = texts("tiny")["handout.tex"]
    assert "In closed form, in $x$, $y$ and the weights alone:" in prose(tex)
    assert (
        r"\frac{\partial L}{\partial w^{(2)}_{1}} &= 2 w^{(1)}_{1} x_{1} \left(w^{(1)}_{1} w^{(2)}_{1} x_{1} "
        r"+ w^{(1)}_{1} w^{(2)}_{2} x_{2} - y_{1}\right)"
    ) in tex  # simplified: the 2 pulled out
    assert "too long to print" not in tex


def test_padding_is_shown_as_dots_in_the_position_sets():
    net = network("channels")
    d = net.derive()
    table = position_table(d.graph.layers[0])
    assert table[0][:4] == [None, None, None, None]  # top-left corner, kernel on the padding
    assert [tuple(e for e in row if e is not None) for row in table] == net.position_sets(1)


def test_user_strings_are_escaped():
    files = render_handout(sb.Network.from_dict({**SPECS["softmax"], "name": "my_net"}))
    assert r"\texttt{my\_net}" in files["handout.tex"]
    assert "`my_net`" in files["handout.md"]


def test_every_layer_shows_its_tensor_view_as_the_engine_derives_it():
    tex = texts("article")["handout.tex"]
    layer1 = tex.split(r"\subsection{Layer 1 (convolution)}")[1].split(r"\section")[0]
    # with the layer's own numbers: no s, d, p where they are 1, 1 and 0
    assert (
        r"\frac{\partial L}{\partial W^{(1)}_{o,c,m,n}} &= \sum_{i,j} \delta^{(1)}_{o,i,j} \cdot "
        r"x_{c,i + m,j + n}"
    ) in layer1
    view = layer1.split("The tensor view.")[1]
    assert not re.search(r"\bs i\b|\bd m\b|- p\b", view)
    assert "Its indices count from 0, as in PyTorch, where the nodes above count from 1" in prose(layer1)
    assert (
        "The weight gradient is the cross-correlation of the layer's (zero-padded) input with $\\delta$"
        in prose(layer1)
    )
    assert "a full convolution" in prose(layer1) and r"180^{\circ}" in layer1
    # the full convolution's sum says its range, and a spread with nothing to spread is plainly it
    assert "The sum runs over $o = 0$, $m = 0, \\ldots, 1$ and $n = 0, \\ldots, 1$" in prose(layer1)
    assert r"here $\hat{\delta}^{(1)} = \delta^{(1)}$ and $\hat{W}^{(1)} = W^{(1)}$" in prose(layer1)
    mlp = prose(texts("mlp")["handout.tex"])
    assert "The weight gradient is the outer product of $\\delta$ and the layer's input" in mlp
    assert r"\frac{\partial L}{\partial W^{(2)}} &= \delta^{(2)} {a^{(1)}}^{T}" in mlp
    assert "entry $i$ is node $i + 1$" in mlp
    pooled = prose(texts("maxpool")["handout.tex"])
    assert "the gradient at the logits is the softmax minus the target" in pooled


# ---- the worked example is what PyTorch computes ------------------------------------------------


@pytest.mark.parametrize(
    "name", ["article", "channels", "softmax", "relu", "maxpool", "avgpool", "mlp"]
)
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
    d = example.derivation
    z = F.conv2d(
        torch.tensor(example.x)[None], torch.tensor(example.params["W1"]), stride=2, padding=1
    )
    ours = [example.values[node.symbol] for node in d.graph.layers[0].z]
    np.testing.assert_allclose(ours, z.numpy().reshape(-1), rtol=1e-12)


def test_the_handout_prints_the_worked_example():
    example = worked_example(network("article"))
    for text in texts("article").values():
        for name, array in example.gradients.items():
            if name != "x":
                for value in array.reshape(-1):
                    assert example.formats.gradient(value) in text
        assert example.formats.value(example.loss) in text


def test_article_example_makes_g_and_l_concrete():
    example = worked_example(sb.presets.article())
    assert example.choices == {"g": "sigmoid", "loss": "sse"}
    assert example.network.loss == "sse"
    assert {layer.activation for layer in example.network.layers} == {"sigmoid"}
    assert set(np.unique(example.x * 10 % 1)) == {0.0}  # one decimal: followed by hand


# ---- the PDFs (slow) --------------------------------------------------------------------------


PDF_NAMES = ["article", "channels", "softmax", "tiny", "maxpool", "mlp"]


@pytest.fixture(scope="module")
def handouts(tmp_path_factory) -> dict[str, Path]:
    """Each network's handout folder, written and compiled once by ``symbackprop handout``."""
    root = tmp_path_factory.mktemp("handouts")
    folders = {}
    for name in PDF_NAMES:
        args = ["handout", "--keep-log", "-o", str(root / name)]
        if name in SPECS:
            args.insert(1, str(_spec(root, name)))
        assert cli.main(args) == 0
        folders[name] = root / name
    return folders


@pytest.mark.slow
@pytest.mark.parametrize("name", PDF_NAMES)
def test_pdf_compiles_without_errors_or_wide_lines(handouts, name):
    folder = handouts[name]
    assert (folder / "handout.pdf").read_bytes().startswith(b"%PDF")
    log = (folder / "handout.log").read_text()
    assert not re.search(r"^! ", log, re.MULTILINE)
    assert "undefined" not in log.lower().replace("undefined references", "")
    wide = [box for box in overfull_boxes(log) if box[0] > 10]
    assert not wide, f"{name}: lines stick out of the page: {wide}"
    text = _pdf_text(folder / "handout.pdf")
    for heading in [
        "Notation and the network",
        "The forward pass",
        "The computational graph",
        "Backpropagation",
        "A worked example",
        "The chain rule, and the gradients at a node",
    ]:
        assert heading in text
    assert "∇W L =" in text and "∂L" in text
    assert (folder / "handout.tex").read_text() == texts(name)["handout.tex"]


@pytest.mark.slow
def test_article_pdf_carries_the_articles_formula_numbers(handouts):
    text = _pdf_text(handouts["article"] / "handout.pdf")
    # (1), (2), (3) also read like the layers' superscripts: the numbers above them, in order
    tags = [int(n) for n in re.findall(r"^\((\d+)\)$", text, re.MULTILINE) if int(n) > 3]
    assert tags == list(range(4, 21))
    assert "(generalising (4))" in prose(text)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, detail, pages",
    [("b820", None, 15), ("lenet5", "summary", 30), ("fcn_tiny", None, 24), ("unet_tiny", None, 28)],
)
def test_summaries_stay_short(tmp_path, name, detail, pages):
    presets = ("lenet5", "fcn_tiny", "unet_tiny")
    args = ["handout", "--keep-log", "-o", str(tmp_path)] + (
        ["--preset", name] if name in presets else [str(_spec(tmp_path, name))]
    )
    assert cli.main(args + (["--detail", detail] if detail else [])) == 0
    info = subprocess.run(
        ["pdfinfo", str(tmp_path / "handout.pdf")], capture_output=True, text=True, check=True
    )
    count = int(re.search(r"^Pages:\s+(\d+)", info.stdout, re.MULTILINE).group(1))
    assert count <= pages
    parse((tmp_path / "handout.md").read_text(encoding="utf-8"))
    log = (tmp_path / "handout.log").read_text()
    assert not [box for box in overfull_boxes(log) if box[0] > 10]


# ---- the command ---------------------------------------------------------------------------------


def test_without_tex_it_writes_the_tex_and_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli.shutil, "which", lambda name: None)
    assert cli.main(["handout", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["handout.md", "handout.tex"]
    err = capsys.readouterr().err.strip().splitlines()
    assert "install TeX" in err[-1] and "apt-get install" in err[-1]


@pytest.mark.slow
def test_pdflatex_alone_makes_the_pdf_too(tmp_path, monkeypatch):
    real_which = cli.shutil.which
    monkeypatch.setattr(
        cli.shutil, "which", lambda name: None if name == "latexmk" else real_which(name)
    )
    assert cli.main(["handout", str(_spec(tmp_path, "tiny")), "--keep-log", "-o", str(tmp_path / "out")]) == 0
    log = (tmp_path / "out" / "handout.log").read_text()
    assert "Rerun to get" not in log  # run until the contents and references settle
    assert (tmp_path / "out" / "handout.pdf").read_bytes().startswith(b"%PDF")


def test_no_pdf_writes_the_tex_and_md_only(tmp_path, capsys):
    assert cli.main(["handout", "--no-pdf", "--detail", "summary", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["handout.md", "handout.tex"]
    assert "This is the summary" in prose((tmp_path / "handout.tex").read_text())
    assert capsys.readouterr().err == ""  # progress only on a terminal


def test_a_bad_detail_is_refused(capsys):
    assert cli.main(["handout", "--detail", "everything"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--detail invalid choice: 'everything'" in err


@pytest.mark.slow
def test_a_latex_error_shows_the_relevant_lines_and_writes_nothing(tmp_path, monkeypatch, capsys):
    broken = (
        "\\documentclass{article}\n\\begin{document}\n"
        + "Fine.\n" * 200
        + "\\frobnicate\n\\end{document}\n"
    )
    monkeypatch.setattr(
        cli, "render_handout", lambda *args, **kwargs: {"handout.tex": broken, "handout.md": "x"}
    )
    assert cli.main(["handout", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith("symbackprop: error: LaTeX failed on handout.tex, nothing written")
    kept = Path(first.split("the whole log: ")[1])  # outside the output folder, for reading
    assert "frobnicate" in kept.read_text()
    kept.unlink()
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
    files = render_handout(net)
    assert set(files) == {"handout.tex", "handout.md"}
    for layer in net.layers:
        assert layer.title in files["handout.md"]  # each layer's own section
    parse(files["handout.md"])
    example = worked_example(net)
    loss, grads = torch_loss_and_grads(example.network, example.x, example.y, example.params)
    assert example.loss == pytest.approx(loss, rel=1e-12)
    for parameter, value in grads.items():
        np.testing.assert_allclose(example.gradients[parameter], value, rtol=1e-10, atol=1e-14)


# ---- networks that are graphs ----------------------------------------------------------------


def residual_small() -> sb.Network:
    """A residual block small enough for --detail full and the node-by-node graph (31 weights):
    h = relu(conv(x)) is read by the block's convolution and by the addition."""
    x = sb.Input((1, 4, 4))
    h = sb.Conv2D(kernel_size=2, activation="relu")(x)
    r = sb.Conv2D(kernel_size=3, padding=1)(h)
    out = sb.ReLU()(sb.Add()(h, r))
    return sb.Network(inputs=x, outputs=sb.Dense(units=2)(out), loss="sse", name="residual_small")


_GRAPH_TEXTS: dict[str, dict[str, str]] = {}


def graph_texts(name: str) -> dict[str, str]:
    if name not in _GRAPH_TEXTS:
        net = residual_small() if name == "residual_small" else sb.presets.resnet_tiny()
        _GRAPH_TEXTS[name] = render_handout(net)
    return _GRAPH_TEXTS[name]


def test_a_residual_network_table_says_what_each_layer_reads():
    assert default_detail(residual_small()) == "full"
    tex = graph_texts("residual_small")["handout.tex"]
    table = tex.split(r"Layer & Type & Reads")[1].split(r"\end{longtable}")[0]
    assert "3 & add & 1, 2 & – & – & – & – & – & $1 \\times 3 \\times 3$ & 0 \\\\" in table
    assert "4 & activation & 3 & – & – & – & – & ReLU & $1 \\times 3 \\times 3$ & 0 \\\\" in table
    assert (
        "$a^{(1)}$ is read by layers 2 and 3 (a fork), so its upstream gradient will be the sum "
        "of what each sends back. Layer 3 (addition) joins $a^{(1)}$ and $a^{(2)}$."
    ) in prose(tex)
    # each operation's forward formula, with the letters of what it reads
    assert r"a^{(3)}_{i} = a^{(1)}_{i} + a^{(2)}_{i}" in tex
    assert r"a^{(3)}_{1} &= a^{(1)}_{1} + a^{(2)}_{1}" in tex
    assert r"a^{(4)}_{i} = \operatorname{ReLU}\left(a^{(3)}_{i}\right)" in tex


def test_the_backward_pass_sums_both_paths_of_a_fork_by_the_rule_for_several_dependencies():
    tex = graph_texts("residual_small")["handout.tex"]
    layer1 = tex.split(r"\subsection{Layer 1 (convolution)}")[1].split(r"\subsection")[0]
    assert "By the rule for several dependencies, (25) in appendix" in prose(layer1)
    assert (
        r"\frac{\partial L}{\partial a^{(1)}_{j}} = \left.\frac{\partial L}{\partial a^{(1)}_{j}}"
        r"\right|_{\text{via }2} + \left.\frac{\partial L}{\partial a^{(1)}_{j}}\right|_{\text{via }3}"
    ) in layer1
    # a^{(1)}_1, the corner, read at 4 places of layer 2's padded 3x3 kernel, and by the addition
    assert (
        r"\left.\frac{\partial L}{\partial a^{(1)}_{1}}\right|_{\text{via }2} &= "
        r"\frac{\partial L}{\partial a^{(2)}_{1}} \cdot w^{(2)}_{5} + \frac{\partial L}{\partial a^{(2)}_{2}} "
        r"\cdot w^{(2)}_{4} + \frac{\partial L}{\partial a^{(2)}_{4}} \cdot w^{(2)}_{2} + "
        r"\frac{\partial L}{\partial a^{(2)}_{5}} \cdot w^{(2)}_{1}"
    ) in layer1
    assert (
        r"\left.\frac{\partial L}{\partial a^{(1)}_{1}}\right|_{\text{via }3} &= "
        r"\frac{\partial L}{\partial a^{(3)}_{1}}"
    ) in layer1
    # and the general formula of each path, the one an addition writes with its gradient times 1
    assert (
        r"\left.\frac{\partial L}{\partial a^{(1)}_{i}}\right|_{\text{via }3} = "
        r"\frac{\partial L}{\partial a^{(3)}_{i}} \cdot 1"
    ) in layer1
    assert "\\tag{25}" in tex.split(r"\section{The chain rule")[1]  # (20) of the article, here 25


def test_the_worked_fork_adds_up_both_paths_as_the_reference_computes_them():
    from test_exercises import upstream_by_reference

    example = worked_example(residual_small())
    net, fmt = example.network, example.formats.gradient
    tex = prose(graph_texts("residual_small")["handout.tex"])
    worked = tex.split("Where the network forks, the numbers follow")[1].split(r"\end{align*}")[0]
    j = int(re.search(r"The output \$a\^\{\(1\)\}_\{(\d+)\}\$ of layer 1", worked).group(1)) - 1
    total = upstream_by_reference(net, example.x, example.y, example.params, 1)[j]
    through_add = upstream_by_reference(net, example.x, example.y, example.params, 3)[j]
    through_conv = total - through_add
    assert abs(through_conv) > 1e-3 and abs(through_add) > 1e-3  # both paths bring something
    assert f"&\\quad = ({fmt(through_conv)}) + ({fmt(through_add)}) \\\\ &\\quad = {fmt(total)}" in worked
    np.testing.assert_allclose(example.gradients["W1"], reference.loss_and_grads(
        net, example.x, example.y, example.params).grads["W1"], rtol=1e-10)


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_the_graph_draws_the_fork_and_the_join():
    tex = graph_texts("residual_small")["handout.tex"]
    graph = tex.split(r"\section{The computational graph}")[1].split(r"\section")[0]
    # a^{(1)}_1 feeds layer 2's z (the next column, straight) and the addition (bent, skipping)
    assert r"\draw[kernel5, line width=0.5pt] (a1n1) -- (z2n1);" in graph  # w^{(2)}_5 multiplies it
    assert re.search(r"\\draw\[black!30, line width=0.5pt\] \(a1n1\) to\[bend left=18\] \(a3n1\);", graph)
    assert re.search(r"\\draw\[black!30, line width=0.5pt\] \(a2n1\) -- \(a3n1\);", graph)
    assert "a node with edges from two layers joins them" in prose(graph)
    # resnet_tiny, layer by layer: each shortcut runs around the boxes it skips, on their left,
    # further out where it runs beside another, its label wrapped beside it
    tiny = graph_texts("resnet_tiny")["handout.tex"]
    assert r"\draw[->, line width=0.5pt] (A1.west) -- ++(-0.45, 0) |- (A4.west);" in tiny
    assert (
        r"\draw[->, line width=0.5pt] (A5.west) -- ++(-0.45, 0) |- node[lab, left, xshift=-0.12cm, pos=0.25, "
        r"text width=2.6cm, align=right, font=\scriptsize] {conv 16x1x1" in tiny
    )
    assert r"\draw[->, line width=0.5pt] (A7.west) -- ++(-0.90, 0) |- (A9.west);" in tiny


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_resnet_tiny_summary_writes_each_fork_as_a_sum_over_its_readers():
    tex = prose(graph_texts("resnet_tiny")["handout.tex"])
    assert "This is the summary" in tex
    assert "The outputs of layer 1 are read by layers 2 (convolution) and 4 (addition)" in tex
    assert "The outputs of layer 5 are read by layers 6 (convolution) and 8 (convolution)" in tex
    parse(graph_texts("resnet_tiny")["handout.md"])


@pytest.mark.slow
@pytest.mark.parametrize("name, pages", [("residual_small", 22), ("resnet_tiny", 40)])
def test_graph_handouts_compile_without_errors_or_wide_lines(tmp_path, name, pages):
    net = residual_small() if name == "residual_small" else None
    args = ["handout", "--keep-log", "-o", str(tmp_path / "out")]
    if net is None:
        args += ["--preset", "resnet_tiny"]
    else:
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(yaml.safe_dump(net.to_dict()), encoding="utf-8")
        args.insert(1, str(spec))
    assert cli.main(args) == 0
    log = (tmp_path / "out" / "handout.log").read_text()
    assert not re.search(r"^! ", log, re.MULTILINE)
    assert not [box for box in overfull_boxes(log) if box[0] > 10]
    assert (tmp_path / "out" / "handout.tex").read_text() == graph_texts(name)["handout.tex"]
    info = subprocess.run(["pdfinfo", str(tmp_path / "out" / "handout.pdf")], capture_output=True, text=True, check=True)
    assert int(re.search(r"^Pages:\s+(\d+)", info.stdout, re.MULTILINE).group(1)) <= pages


# ---- issue 19: one notation, layout, and the handouts of networks that were refused --------------


def _doc_paragraph_math(doc) -> list[str]:
    """Every inline formula of the document's running text (paragraphs)."""
    from symbackprop.document.nodes import Math, Paragraph, walk

    found = []
    for block in walk([*doc.front, *doc.sections, *doc.appendices]):
        if isinstance(block, Paragraph):
            found += [part.tex for part in block.parts if isinstance(part, Math)]
    return found


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_no_fraction_shrinks_inline_in_running_text():
    from test_exercises import fcn_upsample

    from symbackprop.document import exercises, handout

    for net in (network("maxpool"), residual_small(), fcn_upsample(), sb.presets.article()):
        docs = [handout(net), *exercises(net, 0)]
        for doc in docs:
            assert not [tex for tex in _doc_paragraph_math(doc) if "\\frac{\\partial" in tex], net.name


def test_one_meaning_per_symbol_and_every_symbol_in_the_notation_table():
    tex = texts("channels")["handout.tex"]  # mse over 2 outputs, and a 3x3 kernel
    assert r"L = \frac{1}{2}\sum_{k} (a_k - y_k)^2" in tex and r"\frac{1}{K}" not in tex and "n_{\\text{out}}" not in tex
    table = tex.split(r"\section{Notation and the network}")[1].split(r"\end{longtable}")[0]
    for symbol in (r"$\delta^{(l)}$", r"$o, c;\ i, j;\ m, n$", r"$\hat{\delta}^{(l)},\ \hat{W}^{(l)}$"):
        assert symbol in table
    assert "$f,\\ i$" in texts("mlp")["handout.tex"]  # a dense network's tensor view: neuron, input


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_sums_are_in_natural_order_and_no_row_starts_with_a_lone_minus_y():
    tex = render_handout(sb.presets.lenet5(), "summary")["handout.tex"]
    assert r"\left(y_{1} + y_{2} + \cdots + y_{10}\right) e^{a^{(7)}_{1}}" in tex
    assert "y_{1} + y_{10}" not in tex
    assert not re.search(r"&= -y_\{1\}\s*\\\\", tex) and not re.search(r"&= -y_\{1\}\n", tex)


def test_the_article_is_cited_and_its_figures_said_what_they_show():
    text = prose(texts("article")["handout.tex"])
    assert (
        r"\emph{Backpropagation in Fully Convolutional Networks (FCNs)} (Towards Data Science, "
        r"\url{https://towardsdatascience.com/backpropagation-in-fully-convolutional-networks-fcns-1a13b75fb56a})"
    ) in text
    assert "on the network of its figure 7 (a $4 \\times 4$ image, two convolutions" in text
    assert "computational graph (the article's figure 8 draws the same graph)" in text
    md = texts("article")["handout.md"]
    assert "<https://towardsdatascience.com/backpropagation-in-fully-convolutional-networks-fcns-1a13b75fb56a>" in md


def test_the_worked_correlation_counts_from_zero_as_its_tensor_view_says():
    text = prose(texts("article")["handout.tex"])
    worked = text.split("The same gradient for the whole kernel at once")[1]
    assert "Its indices count from 0, as in PyTorch, where the nodes above count from 1" in worked
    assert "at stride 1, where $\\hat{\\delta} = \\delta$" in worked
    assert "Its entry $(0, 0)$, the gradient of $w^{(1)}_{1}$" in worked
    assert r"\left(X \star \delta^{(1)}\right)_{0,0}" in worked and "_{1,1}" not in worked


def test_a_closed_form_is_one_piece_with_its_sentence():
    """A 2→2→1 dense net: the closed form and the sentence before it never part (they did, over
    pages 3–4): the display is written into its paragraph, as one unbreakable piece."""
    net = sb.Network((2,), [sb.Dense(units=2, activation="sigmoid"), sb.Dense(units=1, activation="sigmoid")],
                     "sse", name="dense221")
    tex = render_handout(net)["handout.tex"]
    closed = tex.split("In closed form, in $x$, $y$ and the weights alone:")[1:]
    assert closed and all(part.startswith("\n\\begin{equation*}\n\\begin{aligned}") for part in closed)


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_long_position_sets_are_tables_and_the_layer_graph_is_compact():
    tex = render_handout(sb.presets.lenet5(), "summary")["handout.tex"]
    layer3 = tex.split(r"\subsection{Layer 3: convolution}")[1].split(r"\subsection")[0]
    assert r"p^{(3)}_{1} = \lbrace" not in layer3  # 150 numbers: no ragged lines
    assert "$p^{(3)}_{1}$ & row 1 & row 2 & row 3 & row 4 & row 5" in layer3
    assert "channel 2 & 197–201 & 211–215 & 225–229 & 239–243 & 253–257" in layer3
    graph = tex.split(r"\section{The computational graph}")[1].split(r"\section")[0]
    boxes = re.findall(r"\\node\[boxnode\] \((\w+)\) at \(0\.00, (-?[\d.]+)\)", graph)
    assert len(boxes) == 8 and -float(boxes[-1][1]) < 10  # a box a layer, under 10 cm: part of a page
    labels = re.findall(r"node\[lab, right, xshift=0\.12cm\] \{([^}]*)\}", graph)
    assert labels[0] == "conv 6x5x5, stride 1x1, padding 0x0, bias, tanh"  # beside its arrow, clear of it


def test_a_network_without_parameters_gets_a_handout():
    """A pooling layer alone (issue 19: an empty gather* and a LaTeX error, blamed on the user)."""
    net = sb.Network((1, 4, 4), [sb.MaxPool2D(kernel_size=2)], "sse", name="pool")
    files = render_handout(net)
    assert not re.search(r"\\begin\{gather\*\}\s*\\end\{gather\*\}", files["handout.tex"])
    assert "the network has no weights to train" in prose(files["handout.tex"])
    parse(files["handout.md"])


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_a_derivation_shows_notebooks_a_summary_and_how_to_see_more():
    import time

    d = sb.presets.lenet5().derive()
    start = time.perf_counter()
    shown = d._repr_latex_()
    assert len(shown) < 100_000 and time.perf_counter() - start < 10
    assert "and 61,694 more" in shown and "d.latex\\_derivation('W1')" in shown
    assert shown.count(r"\frac{\partial L}{\partial w^{(1)}") == 12 and r"\cdots" in shown


def test_the_handout_takes_given_values():
    net = network("relu")
    drawn = worked_example(net, 1)
    files = render_handout(net, values=(drawn.x, drawn.y, drawn.params))
    assert "The values are given" in prose(files["handout.tex"])
    assert drawn.formats.gradient(drawn.gradients["W3"][0, 0]) in files["handout.tex"]


# ---- fully convolutional networks: per-pixel loss, transposed position sets, routing table ------


def _fcn_texts(name: str) -> dict[str, str]:
    from test_exercises import fcn_small, fcn_upsample

    if name not in _TEXTS:
        _TEXTS[name] = render_handout({"fcn_small": fcn_small, "fcn_upsample": fcn_upsample}[name]())
    return _TEXTS[name]


def test_an_fcn_handout_writes_the_per_pixel_loss_and_its_gradient():
    from test_exercises import fcn_small

    assert default_detail(fcn_small()) == "full"
    tex = _fcn_texts("fcn_small")["handout.tex"]
    assert (
        r"L = -\sum_{p=1}^{16} \sum_{c=1}^{2} y_{c,p} \log \frac{e^{a^{(2)}_{c,p}}}{\sum_{c'=1}^{2} "
        r"e^{a^{(2)}_{c',p}}}"
    ) in tex
    assert (
        r"\frac{\partial L}{\partial a^{(2)}_{c,p}} = \frac{e^{a^{(2)}_{c,p}}}{\sum_{c'} e^{a^{(2)}_{c',p}}} "
        r"\sum_{c'} y_{c',p} - y_{c,p}"
    ) in tex
    assert "the softmax of the pixel's scores minus its target" in prose(tex).lower()
    # pixel 1's two scores are outputs 1 and 17 (channel by channel): its gradient reads them alone
    assert (
        r"\frac{\partial L}{\partial a^{(2)}_{1}} &= \frac{\left(y_{1} + y_{17}\right) e^{a^{(2)}_{1}}}"
        r"{e^{a^{(2)}_{1}} + e^{a^{(2)}_{17}}} - y_{1}"
    ) in tex
    # the tensor view's loss (one softmax over the flattened map) is not printed for a map
    assert r"\frac{\partial L}{\partial a^{(2)}_{k}}" not in tex


def test_an_fcn_handout_writes_the_transposed_convolutions_position_sets_as_its_connections():
    from test_exercises import fcn_small

    net = fcn_small()
    tex = _fcn_texts("fcn_small")["handout.tex"]
    op, shape = net.layers[1], net.shapes[1]
    for i, connection in enumerate(op.connections(shape), start=1):  # every output, all 32
        pairs = ", ".join(f"({j + 1}, {slot + 1})" for j, slot in zip(connection.inputs, connection.slots))
        assert f"p^{{(2)}}_{{{i}}} = \\lbrace {pairs} \\rbrace" in tex
    assert r"\sum_{(j, n) \in p^{(2)}_{i}} w^{(2)}_{c,o,m,n} \, a^{(1)}_{j}" in tex


def test_an_upsampling_handout_writes_its_routing_table_with_the_bilinear_weights():
    from test_exercises import fcn_upsample

    net = fcn_upsample()
    tex = _fcn_texts("fcn_upsample")["handout.tex"]
    table = tex.split("Its routing table")[1].split(r"\end{longtable}")[0]
    op, shape = net.layers[1], net.shapes[1]
    reads = {}
    for j in range(int(np.prod(shape))):  # numpy's interpolation, one input lit at a time
        lit = np.zeros(int(np.prod(shape)))
        lit[j] = 1.0
        for i, weight in enumerate(op.reference_forward(lit.reshape(1, *shape), {}).reshape(-1)):
            if weight:
                reads.setdefault(i, []).append((j + 1, weight))
    from fractions import Fraction

    for i, pairs in reads.items():
        row = ", ".join(f"{j}: {Fraction(w).limit_denominator(64)}" for j, w in pairs)
        assert f"\n{i + 1} & {row} \\\\" in table
    assert len(reads) == 32


@pytest.mark.parametrize("name", ["fcn_small", "fcn_upsample"])
def test_an_fcn_worked_example_is_what_the_numpy_reference_computes(name):
    from test_exercises import fcn_small, fcn_upsample

    net = {"fcn_small": fcn_small, "fcn_upsample": fcn_upsample}[name]()
    example = worked_example(net)
    assert example.y.reshape(2, 16).sum(axis=0).tolist() == [1.0] * 16  # a class per pixel
    result = reference.loss_and_grads(example.network, example.x, example.y, example.params)
    assert example.loss == pytest.approx(result.loss, rel=1e-12)
    for parameter, value in result.grads.items():
        np.testing.assert_allclose(example.gradients[parameter], value, rtol=1e-10, atol=1e-14)
    # pixel 1's gradient by hand: the softmax over its two scores minus its target, by numpy
    scores = reference.forward(example.network, example.x[None], example.params)[-1]
    per_pixel = reference.LOSSES["cross_entropy"][1](scores, example.y.reshape(1, 2, 4, 4)).reshape(-1)
    text = prose(_fcn_texts(name)["handout.tex"])
    by_hand = text.split("The backward pass starts at the loss.")[1].split("For instance")[0]
    assert by_hand.rstrip().endswith(f"&\\quad = {example.formats.gradient(per_pixel[0])} \\end{{aligned}} \\end{{equation*}}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fcn_small", "fcn_upsample", "pool"])
def test_fcn_and_parameterless_handouts_compile_without_errors_or_wide_lines(tmp_path, name):
    from test_exercises import fcn_small, fcn_upsample

    net = {
        "fcn_small": fcn_small,
        "fcn_upsample": fcn_upsample,
        "pool": lambda: sb.Network((1, 4, 4), [sb.MaxPool2D(kernel_size=2)], "sse", name="pool"),
    }[name]()
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(net.to_dict()), encoding="utf-8")
    assert cli.main(["handout", str(spec), "--keep-log", "-o", str(tmp_path / "out")]) == 0
    log = (tmp_path / "out" / "handout.log").read_text()
    assert not re.search(r"^! ", log, re.MULTILINE)
    assert not [box for box in overfull_boxes(log) if box[0] > 10]


# ---- batch normalisation: sections 1-5 in eval mode, train mode over a batch ---------------------


def batch_norm_net() -> sb.Network:
    """1x3x3 → conv 2x2 → BatchNorm2D → ReLU → dense 2, sse, in train mode."""
    x = sb.Input((1, 3, 3))
    h = sb.BatchNorm2D()(sb.Conv2D(kernel_size=2)(x))
    return sb.Network(inputs=x, outputs=sb.Dense(units=2)(sb.ReLU()(h)), loss="sse", name="bn")


def test_a_batch_norm_handout_works_one_sample_in_eval_mode_as_the_reference_does():
    from symbackprop.document import handout

    net = batch_norm_net()
    ex = worked_example(net.with_mode("eval"), 0)
    assert set(ex.params) == {"W1", "gamma2", "beta2", "W4", "running_mean2", "running_var2"}
    out = reference.loss_and_grads(net.with_mode("eval"), ex.x, ex.y, ex.params)
    assert ex.loss == pytest.approx(float(out.loss), rel=1e-12)
    for name in ("W1", "gamma2", "beta2", "W4"):
        np.testing.assert_allclose(ex.gradients[name], out.grads[name], rtol=1e-10, atol=1e-14)
    tex = sb.document.tex.render(handout(net))
    assert r"\overline{\mu}^{(2)} = " in tex  # the running statistics are printed with the weights
    assert "sections 1 to 5 follow one sample with the network in eval mode" in " ".join(tex.split())


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_the_batch_section_prints_the_compact_form_the_engine_derived_and_the_batchs_numbers():
    from symbackprop.document import handout
    from symbackprop.document.batch import BATCH, _Batch
    from symbackprop.document.handout import DETAILS

    net = batch_norm_net()
    doc = handout(net)
    tex = sb.document.tex.render(doc)
    section = tex.split(r"\section{Layer 2 over a batch: the batch normalisation in train mode}")[1]
    parsed = parse(sb.document.markdown.render(doc))  # and it shows on GitHub, its figure a diagram
    assert parsed.headings[-2].endswith("Layer 2 over a batch: the batch normalisation in train mode")
    # M = 2 samples x 4 values of the channel; the compact form as CompactForm.latex writes it
    d = net.derive(batch=BATCH)
    form = d.compact(2)[0]
    names = {**d.tex_names, form.sigma: r"\sigma^{(2)}_{1}"}
    assert form.latex(names) in section
    assert r"\frac{\gamma^{(2)}_{1}}{8 \sigma^{(2)}_{1}} \left(8 g_{i} - \sum_{j} g_{j} - \hat{x}_{i}" in section
    for stage in (r"\mu^{(2)}_{1} &= \frac{1}{8}", r"\hat{x}^{(2)[1]}_{1} &=", r"a^{(2)[1]}_{1} &= \gamma^{(2)}_{1} \hat{x}^{(2)[1]}_{1} + \beta^{(2)}_{1}"):
        assert stage in section
    # the batch's numbers are those of the numpy reference on the same two samples, summed
    ex = worked_example(net.with_mode("eval"), 0)
    batch = _Batch(net, 2, ex, DETAILS["full"])
    x, y = np.array(batch.xs), np.array(batch.ys)
    params = {name: ex.params[name] for name in net.parameters}
    out = reference.loss_and_grads(net, x, y, params)
    assert np.array_equal(x[0], ex.x)  # sample 1 is the worked example's
    gamma_grad = float(out.grads["gamma2"].sum())
    beta_grad = float(out.grads["beta2"].sum())
    printed = re.findall(r"\\frac\{\\partial L\}\{\\partial \\(?:gamma|beta)\^\{\(2\)\}_\{1\}\} = (-?[0-9.]+)", section)
    assert [float(v) for v in printed] == pytest.approx([gamma_grad, beta_grad], abs=6e-4)
    program = {name: [float(e.xreplace(batch.values)) for e in np.ravel(d.program.gradients[name])]
               for name in ("W1", "W4")}
    for name, values in program.items():
        np.testing.assert_allclose(values, out.grads[name].sum(axis=0).ravel(), rtol=1e-9)
