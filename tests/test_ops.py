"""Every operation of the registry ``symbackprop.ops.OPS``, table-driven.

* each operation has every face of ``ops.base.FACES``, and its reference face is numpy alone;
* each operation, in small networks covering its settings, gives the gradients PyTorch's
  autograd gives (float64, relative error below 1e-9), from the derived program (one
  sample and a batch), from the closed forms and from the reference backprop;
* max pooling with exact ties routes the gradient to the first maximum, as torch does;
* position sets of pooling and dilated convolutions, written out by hand;
* LeNet-5: shapes, parameters and a derivation that builds nothing until asked.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import inspect
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from graphs import GRAPHS
from hypothesis import given
from oracle import (
    assert_close,
    assert_same_gradients,
    random_point,
    torch_batch_loss_and_grads,
    torch_loss_and_grads,
)
from strategies import networks
from test_derive import assert_matches_torch

import symbackprop as sb
from symbackprop import reference
from symbackprop.ops import FACES, OPS, Op, arrays

# ---- every face, on every operation ----------------------------------------------------------


def missing_faces(op: type) -> list[str]:
    """The faces of ``FACES`` that ``op`` neither defines nor inherits from a base other than
    ``Op`` (which defines none of them)."""
    owners = [cls for cls in op.__mro__ if cls not in (Op, object)]
    return [face for face in FACES if not any(face in vars(cls) for cls in owners)]


def test_every_operation_has_every_face():
    gaps = {key: missing_faces(op) for key, op in OPS.items()}
    gaps = {key: faces for key, faces in gaps.items() if faces}
    assert not gaps, "; ".join(f"{key} lacks {', '.join(faces)}" for key, faces in gaps.items())


def test_a_half_written_operation_is_told_every_face_it_lacks():
    @dataclass(frozen=True)
    class Half(Op):
        units: int = 1

        def output_shape(self, input_shape):
            return (self.units,)

        def parameter_shapes(self, input_shape):
            return {}

    assert missing_faces(Half) == [face for face in FACES if face not in ("output_shape", "parameter_shapes")]
    assert "reference_backward" in missing_faces(Half) and "from_torch" in missing_faces(Half)


def test_operations_say_whether_they_pad_and_whether_their_weight_gradient_correlates():
    # what documents ask of a layer, answered by the operation itself
    assert sb.Conv2D(kernel_size=2, padding=1).pads() and sb.MaxPool2D(kernel_size=2, padding=1).pads()
    assert not any(op.pads() for op in (sb.Conv2D(kernel_size=2), sb.AvgPool2D(kernel_size=2),
                                        sb.Dense(units=2)))
    assert sb.Conv2D(kernel_size=2, padding=1).correlates()  # stride 1, no dilation
    assert not any(op.correlates() for op in (sb.Conv2D(kernel_size=2, stride=2),
                                              sb.Conv2D(kernel_size=2, dilation=2),
                                              sb.MaxPool2D(kernel_size=2), sb.Dense(units=2)))


def test_the_registry_is_keyed_by_each_operations_own_key():
    import torch

    assert list(OPS) == [
        "conv", "dense", "maxpool", "avgpool", "global_avgpool", "activation", "add", "concat",
        "conv_transpose", "upsample", "batchnorm2d", "batchnorm1d",
    ]
    for key, op in OPS.items():
        assert op.key == key
        # a module of torch.nn, or a function of torch (addition, concatenation), or, for an
        # activation, each function's own module (its registry entry's)
        assert op.title and (hasattr(torch.nn, op.torch_name) or hasattr(torch, op.torch_name)
                             or key == "activation"), op.torch_name
        assert set(op.required) <= set(op.setting_names())


# ---- the reference face is numpy alone --------------------------------------------------------

ARRAY_HELPERS = {
    name: value for name, value in vars(arrays).items()
    if inspect.isfunction(value) and value.__module__ == arrays.__name__
}
FORBIDDEN_BUILTINS = {"super", "eval", "exec", "compile", "getattr", "globals", "vars", "__import__", "open"}


def non_numpy_names(op: type, method: str) -> list[str]:
    """What ``op.method`` uses beyond numpy: anything but ``np``, the helpers of ``ops/arrays.py``,
    builtins, its own arguments and locals, and ``self.<setting>`` (a dataclass field)."""
    function = getattr(op, method)
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    settings = {f.name for f in dataclasses.fields(op)} if dataclasses.is_dataclass(op) else set()
    arguments = {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    assigned = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    own = (arguments | assigned) - {"self"}
    allowed_globals = {"np": np, **ARRAY_HELPERS}
    problems = []
    self_attributes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            self_attributes.add(id(node.value))
            if node.attr not in settings:
                problems.append(f"self.{node.attr}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            problems.append("an import")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Name) or not isinstance(node.ctx, ast.Load) or node.id in own:
            continue
        if node.id == "self":
            if id(node) not in self_attributes:
                problems.append("self itself")
        elif node.id in allowed_globals:
            if function.__globals__.get(node.id) is not allowed_globals[node.id]:
                problems.append(f"{node.id} (not numpy's or arrays')")
        elif node.id not in vars(builtins) or node.id in FORBIDDEN_BUILTINS:
            problems.append(node.id)
    return sorted(set(problems))


def reference_methods(op: type) -> list[str]:
    return sorted(name for name in dir(op) if name.startswith("reference_"))


@pytest.mark.parametrize("key", list(OPS))
def test_the_reference_face_is_numpy_alone(key):
    op = OPS[key]
    assert {"reference_forward", "reference_backward"} <= set(reference_methods(op))
    for method in reference_methods(op):
        assert non_numpy_names(op, method) == [], f"{op.__name__}.{method}"


def test_the_numpy_check_catches_the_scalar_face_and_sympy():
    import sympy

    @dataclass(frozen=True)
    class Leaky(Op):
        kernel_size: int = 2

        def reference_forward(self, x, params):
            symbols = sympy.symbols("w")  # sympy
            out = np.zeros(len(self.connections(x.shape)))  # the scalar face
            return out + self.weight + symbols  # not a setting

        def reference_backward(self, dz, x, params):
            return helper(self), {}  # noqa: F821 - self itself, passed along

    assert non_numpy_names(Leaky, "reference_forward") == ["self.connections", "self.weight", "sympy"]
    assert non_numpy_names(Leaky, "reference_backward") == ["helper", "self itself"]


def test_the_array_helpers_import_numpy_alone():
    tree = ast.parse(inspect.getsource(arrays))
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert imported == {"__future__", "numpy", "numpy.lib.stride_tricks"}


# ---- every operation, against PyTorch ---------------------------------------------------------

# Small networks, each putting one operation's settings to work; closed forms stay small.
CASES = {
    "conv, channels and bias": sb.Network((2, 4, 4), [
        sb.Conv2D(out_channels=3, kernel_size=2, bias=True, activation="tanh"),
        sb.Dense(units=2),
    ], "sse"),
    "conv, kernel/stride/padding pairs": sb.Network((1, 5, 4), [
        sb.Conv2D(out_channels=2, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), activation="sigmoid"),
        sb.Dense(units=2, bias=True),
    ], "mse"),
    "conv, dilation": sb.Network((1, 5, 5), [
        sb.Conv2D(kernel_size=2, dilation=2, bias=True, activation="softplus"),
        sb.Dense(units=2),
    ], "sse"),
    "conv, dilation with stride and padding": sb.Network((2, 6, 5), [
        sb.Conv2D(out_channels=2, kernel_size=(2, 3), stride=2, padding=(1, 2), dilation=(2, 1),
                  bias=True, activation="tanh"),
        sb.Dense(units=2),
    ], "cross_entropy"),
    "maxpool after a conv": sb.Network((1, 5, 5), [
        sb.Conv2D(out_channels=2, kernel_size=2, bias=True, activation="relu"),
        sb.MaxPool2D(kernel_size=2),
        sb.Dense(units=2),
    ], "sse"),
    "maxpool, overlapping (stride < kernel)": sb.Network((2, 4, 4), [
        sb.MaxPool2D(kernel_size=3, stride=1),
        sb.Dense(units=2, bias=True),
    ], "mse"),
    "maxpool, padded and overlapping": sb.Network((1, 5, 5), [
        sb.Conv2D(kernel_size=2, activation="tanh"),
        sb.MaxPool2D(kernel_size=3, stride=2, padding=1),
        sb.Dense(units=2),
    ], "cross_entropy"),
    "maxpool, rectangular": sb.Network((1, 4, 6), [
        sb.MaxPool2D(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1)),
        sb.Dense(units=1),
    ], "sse"),
    "avgpool after a conv": sb.Network((2, 4, 4), [
        sb.Conv2D(out_channels=2, kernel_size=1, bias=True, activation="sigmoid"),
        sb.AvgPool2D(kernel_size=2),
        sb.Dense(units=2),
    ], "sse"),
    "avgpool, padded and overlapping, then a conv": sb.Network((1, 5, 5), [
        sb.AvgPool2D(kernel_size=3, stride=2, padding=1),
        sb.Conv2D(kernel_size=2, bias=True, activation="tanh"),
        sb.Dense(units=2),
    ], "mse"),
    "avgpool, rectangular": sb.Network((1, 4, 5), [
        sb.AvgPool2D(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0)),
        sb.Dense(units=2, bias=True),
    ], "cross_entropy"),
    "dense, an MLP on a vector input": sb.Network((5,), [
        sb.Dense(units=4, bias=True, activation="tanh"),
        sb.Dense(units=3, bias=True, activation="leaky_relu"),
        sb.Dense(units=2),
    ], "cross_entropy"),
    "conv transpose, stride 2, padding 1, output padding 1": sb.Network((2, 2, 3), [
        sb.ConvTranspose2D(out_channels=2, kernel_size=3, stride=2, padding=1, output_padding=1,
                           activation="tanh"),
        sb.Dense(units=2),
    ], "sse"),
    "conv transpose, pairs, dilation, no bias": sb.Network((1, 3, 2), [
        sb.ConvTranspose2D(out_channels=1, kernel_size=(2, 3), stride=(1, 2), padding=(0, 1),
                           dilation=(2, 1), bias=False),
        sb.Dense(units=2, bias=True),
    ], "mse"),
    "upsample nearest x2, then a conv": sb.Network((1, 2, 2), [
        sb.Upsample(2), sb.Conv2D(kernel_size=2, bias=True, activation="sigmoid"), sb.Dense(units=2),
    ], "sse"),
    "upsample bilinear x(2, 3)": sb.Network((2, 2, 3), [
        sb.Conv2D(out_channels=1, kernel_size=1, activation="relu"), sb.Upsample((2, 3), "bilinear"),
        sb.Dense(units=2),
    ], "cross_entropy"),
    "batch norm 2d, eval mode, after a conv": sb.Network((2, 3, 3), [
        sb.Conv2D(out_channels=2, kernel_size=2), sb.BatchNorm2D(), sb.ReLU(), sb.Dense(units=2),
    ], "sse", mode="eval"),
    "batch norm 1d, eval mode, no affine": sb.Network((3,), [
        sb.Dense(units=3, bias=True), sb.BatchNorm1D(affine=False, eps=1e-3), sb.Tanh(), sb.Dense(units=2),
    ], "cross_entropy", mode="eval"),
    **{name: build() for name, build in GRAPHS.items()},
}


def test_every_operation_has_a_case():
    used = {layer.key for net in CASES.values() for layer in net.layers}
    assert set(OPS) <= used, f"no case for {sorted(set(OPS) - used)}: add one to CASES"


@pytest.fixture(scope="module")
def derived() -> dict[str, sb.Derivation]:
    return {}


def derivation(derived: dict, case: str) -> sb.Derivation:
    if case not in derived:
        derived[case] = CASES[case].derive()
    return derived[case]


def batch_point(net: sb.Network, rng: np.random.Generator, size: int = 3):
    _, _, params = random_point(net, rng)
    points = [random_point(net, rng) for _ in range(size)]
    return np.stack([p[0] for p in points]), np.stack([p[1] for p in points]), params


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_the_derived_program_equals_torch(case, derived, rng):
    net, f = CASES[case], derivation(derived, case).numeric()
    x, y, params = batch_point(net, rng)
    losses, grads = torch_batch_loss_and_grads(net, x, y, params)
    batch = f(x, y, params)
    one = f(x[0], y[0], params)
    assert_close(batch.loss, losses)
    assert_close(one.loss, losses[0])
    assert list(batch.grads) == ["x", *net.parameters]
    for name, grad in grads.items():
        assert_close(batch.grads[name], grad)
        assert_close(one.grads[name], grad[0])


@pytest.mark.parametrize("case", list(CASES))
def test_the_reference_equals_torch(case, rng):
    net = CASES[case]
    x, y, params = batch_point(net, rng)
    losses, grads = torch_batch_loss_and_grads(net, x, y, params)
    out = reference.loss_and_grads(net, x, y, params)
    assert_close(out.loss, losses)
    for name, grad in grads.items():
        assert_close(out.grads[name], grad)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_the_closed_forms_equal_torch(case, rng):
    assert_matches_torch(CASES[case], rng)


# ---- max pooling with ties -------------------------------------------------------------------


def test_a_tie_sends_the_whole_gradient_to_the_first_maximum():
    # One window, [[1, 3], [3, 2]]: both 3s are maxima; the first in window order (row by row)
    # takes the upstream gradient, a - y = 3 - 1 = 2, and the other gets nothing.
    net = sb.Network((1, 2, 2), [sb.MaxPool2D(kernel_size=2)], "sse")
    x, y = np.array([[[1.0, 3.0], [3.0, 2.0]]]), np.array([1.0])
    out = net.derive().numeric()(x, y, {})
    assert out.loss == 2.0
    assert out.grads["x"].tolist() == [[[0.0, 2.0], [0.0, 0.0]]]
    assert reference.loss_and_grads(net, x, y, {}).grads["x"].tolist() == [[[0.0, 2.0], [0.0, 0.0]]]


TIES = {  # inputs on a coarse grid: every window below holds repeated maxima
    "2x2 windows": (sb.MaxPool2D(kernel_size=2), (1, 4, 4)),
    "overlapping 3x3 windows, stride 1": (sb.MaxPool2D(kernel_size=3, stride=1), (2, 4, 4)),
    "padded overlapping windows": (sb.MaxPool2D(kernel_size=3, stride=2, padding=1), (1, 5, 5)),
    "rectangular windows": (sb.MaxPool2D(kernel_size=(1, 3), stride=(1, 2), padding=(0, 1)), (1, 3, 5)),
}


@pytest.mark.parametrize("case", list(TIES))
def test_ties_route_to_the_first_maximum_as_torch_does(case, rng):
    pool, shape = TIES[case]
    net = sb.Network(shape, [pool, sb.Dense(units=2, bias=True)], "sse")
    x = rng.integers(0, 3, size=(4, *shape)) * 0.5  # values 0, 0.5 and 1: ties everywhere
    assert tied_windows(x, net.position_sets(1)) >= 4, "the grid should give repeated maxima"
    y = rng.normal(size=(4, 2))
    params = {"W2": rng.normal(size=net.parameters["W2"]), "b2": rng.normal(size=2)}
    d = net.derive()
    losses, grads = torch_batch_loss_and_grads(net, x, y, params)
    batch, one = d.numeric()(x, y, params), d.numeric()(x[0], y[0], params)
    by_reference = reference.loss_and_grads(net, x, y, params)
    assert_close(batch.loss, losses)
    for name, grad in grads.items():
        assert np.array_equal(batch.grads[name] != 0, grad != 0), name  # the same winners
        assert_close(batch.grads[name], grad)
        assert_close(one.grads[name], grad[0])
        assert_close(by_reference.grads[name], grad)
    assert_matches_torch_at(net, x[0], y[0], params, grads, d)


def tied_windows(x: np.ndarray, position_sets: list[tuple[int, ...]]) -> int:
    """How many windows of a batch x hold their maximum more than once."""
    count = 0
    for sample in x.reshape(len(x), -1):
        for p in position_sets:
            values = sample[[i - 1 for i in p]]
            count += np.count_nonzero(values == values.max()) > 1
    return count


def assert_matches_torch_at(net, x, y, params, torch_grads, d) -> None:
    """The closed form of ∂L/∂x at one tied point (its brackets decide the winners)."""
    from test_derive import evaluate, flat, point_values

    values = point_values(d, x, y, params)
    memo: dict = {}
    closed = np.array([evaluate(e, values, memo) for e in flat(d.gradient("x"))]).reshape(x.shape)
    assert_close(closed, torch_grads["x"][0])


# ---- position sets, by hand ------------------------------------------------------------------

# A 4x4 image numbered row by row:
#    1  2  3  4
#    5  6  7  8
#    9 10 11 12
#   13 14 15 16
POSITION_SETS = {
    "max pool 2": ((1, 4, 4), sb.MaxPool2D(kernel_size=2), [
        (1, 2, 5, 6), (3, 4, 7, 8), (9, 10, 13, 14), (11, 12, 15, 16),
    ]),
    "max pool 3, stride 2, padding 1 (padding left out)": (
        (1, 4, 4), sb.MaxPool2D(kernel_size=3, stride=2, padding=1), [
            (1, 2, 5, 6), (2, 3, 4, 6, 7, 8), (5, 6, 9, 10, 13, 14), (6, 7, 8, 10, 11, 12, 14, 15, 16),
        ]),
    "average pool 2 on two channels (each on its own)": ((2, 2, 4), sb.AvgPool2D(kernel_size=2), [
        (1, 2, 5, 6), (3, 4, 7, 8), (9, 10, 13, 14), (11, 12, 15, 16),
    ]),
    "average pool 2, stride 1": ((1, 3, 3), sb.AvgPool2D(kernel_size=2, stride=1), [
        (1, 2, 4, 5), (2, 3, 5, 6), (4, 5, 7, 8), (5, 6, 8, 9),
    ]),
    "conv 2x2, dilation 2: the kernel's places two apart": (
        (1, 4, 4), sb.Conv2D(kernel_size=2, dilation=2), [
            (1, 3, 9, 11), (2, 4, 10, 12), (5, 7, 13, 15), (6, 8, 14, 16),
        ]),
    "conv 2x2, dilation 2, stride 2, padding 1": (
        (1, 4, 4), sb.Conv2D(kernel_size=2, dilation=2, stride=2, padding=1), [
            (6,), (6, 8), (6, 14), (6, 8, 14, 16),
        ]),
    "conv 1x2, dilation (1, 3)": ((1, 2, 4), sb.Conv2D(kernel_size=(1, 2), dilation=(1, 3)), [
        (1, 4), (5, 8),
    ]),
}


@pytest.mark.parametrize("case", list(POSITION_SETS))
def test_position_sets_by_hand(case):
    shape, layer, expected = POSITION_SETS[case]
    assert sb.Network(shape, [layer]).position_sets(1) == expected


def test_pooling_layers_are_numbered_and_have_position_sets():
    net = sb.Network((1, 4, 4), [
        sb.Conv2D(kernel_size=1, bias=True), sb.MaxPool2D(kernel_size=2), sb.Dense(units=1, bias=True),
    ])
    assert net.parameters == {"W1": (1, 1, 1, 1), "b1": (1,), "W3": (1, 4), "b3": (1,)}
    assert net.position_sets(2) == [(1, 2, 5, 6), (3, 4, 7, 8), (9, 10, 13, 14), (11, 12, 15, 16)]
    layer = net.derive().graph.layers[1]
    assert layer.a == () and not layer.activated  # a pool has no activation: its nodes are a^(2)
    assert [str(s) for s in layer.z[0].inputs] == ["a1_1", "a1_2", "a1_5", "a1_6"]
    assert str(layer.z[0].symbol) == "a2_1"


def test_an_average_pool_weighs_each_input_by_one_over_the_whole_window():
    net = sb.Network((1, 2, 2), [sb.AvgPool2D(kernel_size=2, padding=1)])
    # padding 1 around 2x2: four windows, each holding one real input and three padding
    # places; count_include_pad: each still divides by 4
    assert net.position_sets(1) == [(1,), (2,), (3,), (4,)]
    assert [str(node.expr) for node in net.derive().graph.layers[0].z] == ["x_1/4", "x_2/4", "x_3/4", "x_4/4"]


# ---- LeNet-5 ---------------------------------------------------------------------------------


def test_lenet5_shapes_and_parameters():
    net = sb.presets.lenet5()
    assert net.shapes == (
        (1, 32, 32), (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120,), (84,), (10,),
    )
    assert net.parameters == {
        "W1": (6, 1, 5, 5), "b1": (6,), "W3": (16, 6, 5, 5), "b3": (16,),
        "W5": (120, 400), "b5": (120,), "W6": (84, 120), "b6": (84,), "W7": (10, 84), "b7": (10,),
    }
    assert net.parameter_count == 61_706
    kinds = [layer.key for layer in net.layers]
    assert kinds == ["conv", "avgpool", "conv", "avgpool", "dense", "dense", "dense"]
    assert net.loss == "cross_entropy"


@pytest.mark.slow  # a large network: its first layer alone has 117,600 edges
def test_lenet5_derives_without_building_its_graph():
    d = sb.presets.lenet5().derive()
    built = d.graph.layers._built  # the layers built so far (the graph builds them lazily)
    assert built == {}
    w = d.symbols.params["W1"][0, 0, 0, 0]
    # w^(1)_{1,1,1,1} is shared by every place of the 28x28 feature map: one term per place
    assert len(d.terms(w)) == len(d.chain_of(w).args) == 28 * 28
    assert sorted(built) == [0]  # only layer 1 was needed
    assert len(d.terms(d.symbols.params["b1"][5])) == 28 * 28
    assert len(d.terms(d.symbols.params["W7"][9, 83])) == 1  # a dense weight: one use
    assert sorted(built) == [0, 6]


# ---- the reference forward, by hand ----------------------------------------------------------


def test_pool_forward_by_hand():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    assert sb.MaxPool2D(kernel_size=2).reference_forward(x, {}).tolist() == [[[[5, 7], [13, 15]]]]
    assert sb.AvgPool2D(kernel_size=2).reference_forward(x, {}).tolist() == [[[[2.5, 4.5], [10.5, 12.5]]]]
    # padding: max pads with -inf (never wins, even over negatives); avg pads with 0 and
    # divides by the whole window
    negative = -np.ones((1, 1, 1, 1))
    assert sb.MaxPool2D(kernel_size=3, padding=1).reference_forward(negative, {}).tolist() == [[[[-1.0]]]]
    assert sb.AvgPool2D(kernel_size=3, padding=1).reference_forward(negative, {}).tolist() == [[[[-1 / 9]]]]


def test_dilated_conv_forward_by_hand():
    # dilation 2 reads x[0, 0] and x[0, 2] for the first output: 0 + 2, then 1 + 3
    x = np.arange(4.0).reshape(1, 1, 1, 4)
    conv = sb.Conv2D(kernel_size=(1, 2), dilation=2)
    assert conv.reference_forward(x, {"W": np.ones((1, 1, 1, 2))}).tolist() == [[[[2.0, 4.0]]]]


# ---- nothing outside ops/ asks which operation a layer is -------------------------------------


KIND_FLAGS = {"shows_position_sets"}  # the flag documents once read instead of asking the op
SETTINGS = {"kernel_size", "stride", "padding", "dilation"}  # a convolution's, or a pool's
PARAMETER_LETTERS = {"W", "b"}  # parameters are named by what their operation declares
# torch's own modules carry these settings, and its tensors an add method: the bridge reads
# them off torch, not off an op
READS_TORCH = {"torch_bridge.py"}
TORCH_WORDS = {"add"}
# Words that are also spec keys, where they name something else: "activation", the a = g(z)
# tensor's role in the tensor view and the registry of functions in the reference.
OTHER_MEANING = {"layer.py": {"activation"}, "view.py": {"activation"}, "reference.py": {"activation"}}
# Known leaks, each to be removed by its module's owner: tensor.py names the index form's
# bases W and b (ops.Bases) and the layer's parameters after them.
KNOWN: dict[str, set[str]] = {}


def kind_leaks(source: str, reads_torch: bool = False, allowed: frozenset = frozenset()) -> list[str]:
    """Where ``source`` asks which operation a layer is: isinstance on an op class, a spec key
    of an operation as a string ("conv"), a kind flag, a window setting read off an op
    (kernel_size, stride, padding, dilation), or a "W"/"b" parameter letter (also as the
    start of an f-string: f"W{l}"); as "line: what" strings. ``allowed`` words are let pass."""
    classes = {op.__name__ for op in OPS.values()}
    keys = set(OPS) - allowed - (TORCH_WORDS if reads_torch else set())
    letters = PARAMETER_LETTERS - allowed
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "issubclass"):
            named = node.args[1] if len(node.args) > 1 else ast.Tuple([])
            if {getattr(n, "id", getattr(n, "attr", None)) for n in ast.walk(named)} & classes:
                found.append(f"{node.lineno}: isinstance on an operation")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in keys:
                found.append(f"{node.lineno}: the spec key {node.value!r}")
            elif node.value in letters:
                found.append(f"{node.lineno}: the parameter letter {node.value!r}")
            elif node.value in KIND_FLAGS:
                found.append(f"{node.lineno}: the kind flag {node.value!r}")
        elif isinstance(node, ast.JoinedStr) and len(node.values) > 1:
            first, then = node.values[0], node.values[1]
            if (
                isinstance(first, ast.Constant)
                and first.value in letters
                and isinstance(then, ast.FormattedValue)
            ):
                found.append(f"{node.lineno}: the parameter letter {first.value!r} in an f-string")
        elif isinstance(node, (ast.Attribute, ast.Name)):
            name = node.attr if isinstance(node, ast.Attribute) else node.id
            if name in KIND_FLAGS:
                found.append(f"{node.lineno}: the kind flag {name}")
            elif isinstance(node, ast.Attribute) and name in SETTINGS and not reads_torch:
                found.append(f"{node.lineno}: the setting .{name}")
    return found


@pytest.mark.parametrize("planted, what", [
    ("ok = isinstance(layer, Conv2D)", "isinstance on an operation"),
    ("sliding = layer.key == 'conv'", "the spec key 'conv'"),
    ("pools = [l for l in layers if l.key in ('maxpool', 'avgpool')]", "the spec key 'maxpool'"),
    ("shown = layer.shows_position_sets", "the kind flag shows_position_sets"),
    ("flag = getattr(layer, 'shows_position_sets')", "the kind flag 'shows_position_sets'"),
    ("pad_h, pad_w = lg.layer.padding", "the setting .padding"),
    ("kh, kw = layer.kernel_size", "the setting .kernel_size"),
    ("weights = params['W']", "the parameter letter 'W'"),
    ("for kind in ('W', 'b'): pass", "the parameter letter 'W'"),
    ("name = f'W{number}'", "the parameter letter 'W' in an f-string"),
    ("bias = d.graph.params[f'b{l}']", "the parameter letter 'b' in an f-string"),
])
def test_the_guard_catches_a_planted_question_about_a_layer_kind(planted, what):
    assert what in " ".join(kind_leaks(planted))
    # and only what asks about a kind: the same lines, asked of the operation, pass
    assert not kind_leaks("notes = [layer.position_note() for layer in layers]")
    assert not kind_leaks("W = f'W^{{(l)}}'; name = f'{prefix}{number}'")


def test_no_module_outside_ops_tests_for_a_layer_kind():
    package = Path(sb.__file__).parent
    found = []
    outside = [path for path in sorted(package.rglob("*.py")) if "ops" not in path.relative_to(package).parts]
    assert {path.parent.name for path in outside} >= {"symbackprop", "document", "numeric"}
    for path in outside:
        source = path.read_text(encoding="utf-8")
        allowed = frozenset(OTHER_MEANING.get(path.name, set()) | KNOWN.get(path.name, set()))
        for leak in kind_leaks(source, path.name in READS_TORCH, allowed):
            found.append(f"{path.relative_to(package)}:{leak}")
    assert not found, "outside symbackprop/ops/, asking which operation a layer is:\n" + "\n".join(found)


def test_every_subpackage_is_packaged():
    # pyproject.toml lists its packages one by one: a subpackage left out (as ops/ once was)
    # is missing from every wheel, though an editable install hides it
    root = Path(sb.__file__).parents[1]
    listed = re.search(r"^packages = \[(.*)\]$", (root / "pyproject.toml").read_text(), re.MULTILINE)
    packages = set(re.findall(r'"([\w.]+)"', listed.group(1)))
    on_disk = {
        ".".join(path.parent.relative_to(root).parts)
        for path in (root / "symbackprop").rglob("__init__.py")
    }
    assert on_disk <= packages, f"add {sorted(on_disk - packages)} to packages in pyproject.toml"


# ---- any mix of operations -------------------------------------------------------------------


@given(networks(ops=True))
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_any_mix_of_operations_equals_torch(net):
    x, y, params = random_point(net, np.random.default_rng(11))
    by_torch = torch_loss_and_grads(net, x, y, params)
    assert_same_gradients(net.derive().numeric()(x, y, params), *by_torch)
    assert_same_gradients(reference.loss_and_grads(net, x, y, params), *by_torch)
