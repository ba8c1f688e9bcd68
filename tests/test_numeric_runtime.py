"""The runtime helpers of the generated modules (symbackprop.numeric.runtime), tested as the
module they are: numerics far out, float and array forms alike, windows and their adjoint,
and what the printers copy of them."""

from __future__ import annotations

import ast
import inspect
import math

import numpy as np
import pytest

from symbackprop.numeric import embed
from symbackprop.numeric.runtime import calls, chunks, functions, windows

# ---- the numerics that must not break ----------------------------------------------------------


def test_cross_entropy_of_logits_far_out_is_finite_and_exact():
    # logits (1e4, -1e4): softmax is (1, e^-2e4) — exp(1e4) itself would overflow.
    a, y = np.array([[1e4], [-1e4]]), np.array([[0.0], [1.0]])
    assert functions.cross_entropy(a, y, 2).tolist() == [2e4]  # -log softmax_2 = 2e4
    assert functions.cross_entropy_gradient(a, y, 2).tolist() == [[1.0], [-1.0]]
    # the per-node form, on floats, agrees
    assert functions.cross_entropy([1e4, -1e4], [0.0, 1.0], 2) == 2e4
    assert functions.cross_entropy_gradient([1e4, -1e4], [0.0, 1.0], 2) == [1.0, -1.0]


def test_binary_cross_entropy_of_logits_far_out_is_finite_and_exact():
    a, y = np.array([[1e4], [-1e4]]), np.array([[0.0], [1.0]])  # both wrong by 1e4
    assert functions.binary_cross_entropy(a, y, 2).tolist() == [2e4]
    assert functions.binary_cross_entropy_gradient(a, y, 2).tolist() == [[1.0], [-1.0]]
    assert functions.binary_cross_entropy([1e4, -1e4], [0.0, 1.0], 2) == 2e4


def test_cross_entropy_of_a_map_takes_a_softmax_per_pixel():
    # a 2-channel map of 3 pixels, K = 6 in (channel, pixel) order; pixel 0: logits (0, 0),
    # target channel 0; pixel 1: (log 3, 0), target channel 1; pixel 2: (0, log 3), channel 1
    a = np.log(np.array([[1.0], [3.0], [1.0], [1.0], [1.0], [3.0]]))
    y = np.array([[1.0], [0.0], [0.0], [0.0], [1.0], [1.0]])
    expected = math.log(2) + math.log(4) + math.log(4 / 3)  # −log softmax, pixel by pixel
    assert functions.cross_entropy(a, y, 2).tolist() == [pytest.approx(expected, rel=1e-15)]
    gradient = functions.cross_entropy_gradient(a, y, 2)[:, 0]
    np.testing.assert_allclose(gradient, [0.5 - 1, 0.75, 0.25, 0.5, 0.25 - 1, 0.75 - 1], rtol=1e-15)
    assert functions.cross_entropy(list(a[:, 0]), list(y[:, 0]), 2) == pytest.approx(expected, rel=1e-15)
    np.testing.assert_allclose(functions.cross_entropy_gradient(list(a[:, 0]), list(y[:, 0]), 2), gradient)


def test_softplus_far_below_zero_keeps_its_tiny_value():
    exact = 4.248354255291589e-18  # log(1 + e^-40)
    assert functions.softplus(-40.0) == pytest.approx(exact, rel=1e-15)
    assert functions.softplus(np.array([-40.0]))[0] == pytest.approx(exact, rel=1e-15)
    assert functions.softplus(800.0) == 800.0 and functions.softplus(np.array([800.0]))[0] == 800.0


@pytest.mark.parametrize("z, value", [(1e3, 1.0), (-1e3, 0.0), (-40.0, 4.248354255291589e-18)])
def test_sigmoid_never_overflows(z, value):
    with np.errstate(over="raise", invalid="raise"):
        assert functions.sigmoid(z) == pytest.approx(value, rel=1e-15, abs=0)
        assert functions.sigmoid(np.array([z]))[0] == pytest.approx(value, rel=1e-15, abs=0)


@pytest.mark.parametrize("name", list(functions.ACTIVATIONS))
def test_each_activation_has_the_same_float_and_array_form(name):
    function, derivative = functions.ACTIVATIONS[name]
    z = np.array([-50.0, -2.0, -1e-3, 0.0, 1e-3, 0.7, 3.0, 50.0])
    arrays = function(z), derivative(z, function(z))
    floats = [function(v) for v in z.tolist()], [derivative(v, function(v)) for v in z.tolist()]
    # the same formulas; math and numpy may round the last bit differently (tanh)
    np.testing.assert_allclose(np.broadcast_to(arrays[0], z.shape), floats[0], rtol=1e-15, atol=0)
    np.testing.assert_allclose(np.broadcast_to(arrays[1], z.shape), floats[1], rtol=1e-15, atol=0)


@pytest.mark.parametrize("name", [name for name in functions.ACTIVATIONS if name != "identity"])
def test_each_activation_backward_is_its_derivative_times_the_upstream_gradient(name):
    # what the per-layer code calls: f_backward(z, a, dL/da) = f'(z) dL/da, a new array
    function, derivative = functions.ACTIVATIONS[name]
    backward = getattr(functions, f"{name}_backward")
    z = np.array([[-50.0, -2.0, -1e-3, 0.0], [1e-3, 0.7, 3.0, 50.0]])
    a, da = function(z), np.array([[1.5, -2.0, 3.0, 0.5], [-1.0, 2.5, 4.0, -0.25]])
    before = da.copy()
    d = backward(z, a, da)
    np.testing.assert_allclose(d, derivative(z, a) * da, rtol=1e-15, atol=0)
    assert np.array_equal(da, before) and not np.shares_memory(d, da) and not np.shares_memory(d, z)
    assert d[0, 3] == (0.01 * 0.5 if name == "leaky_relu" else 0.0 if name == "relu" else d[0, 3])


@pytest.mark.parametrize("name", list(functions.LOSSES))
def test_each_loss_has_the_same_array_and_list_form(name):
    value, gradient = functions.LOSSES[name]
    rng = np.random.default_rng(0)
    a, y = rng.normal(size=(3, 4)), rng.dirichlet(np.ones(3), size=4).T  # (K, B): a column each
    lists = [list(a), list(y)]  # K arrays (B,): the per-node batch form
    np.testing.assert_allclose(value(a, y, 3), value(*lists, 3), rtol=1e-15)
    np.testing.assert_allclose(gradient(a, y, 3), np.array(gradient(*lists, 3)), rtol=1e-15)
    floats = [a[:, 0].tolist(), y[:, 0].tolist()]  # one sample: python floats
    assert value(*floats, 3) == pytest.approx(value(a, y, 3)[0], rel=1e-15)


@pytest.mark.parametrize("name", list(functions.LOSSES))
def test_each_loss_and_its_gradient_at_once_are_the_two_apart(name):
    # what the per-layer code calls for a concrete loss: the same operations, to the bit
    value, gradient = functions.LOSSES[name]
    rng = np.random.default_rng(3)
    a, y = rng.normal(size=(4, 5)) * 30, rng.dirichlet(np.ones(4), size=5).T
    values, d = functions.LOSSES_AND_GRADIENTS[f"{name}_and_gradient"](a, y, 4)
    assert np.array_equal(values, value(a, y, 4)) and np.array_equal(d, gradient(a, y, 4))
    # a map of 2 channels and 2 pixels: a softmax per pixel
    values, d = functions.LOSSES_AND_GRADIENTS[f"{name}_and_gradient"](a, y, 2)
    assert np.array_equal(values, value(a, y, 2)) and np.array_equal(d, gradient(a, y, 2))


def test_losses_are_per_sample_and_the_worked_values():
    a, y = np.array([[1.0, 0.0], [3.0, 0.0]]), np.array([[0.0, 0.0], [1.0, 0.0]])
    assert functions.sse(a, y, 2).tolist() == [2.5, 0.0]
    assert functions.mse(a, y, 2).tolist() == [2.5, 0.0]
    assert functions.mse_gradient(a, y, 2).tolist() == [[1.0, 0.0], [2.0, 0.0]]
    assert functions.cross_entropy(np.zeros((2, 1)), np.array([[1.0], [0.0]]), 2).tolist() == [
        math.log(2)
    ]


# ---- windows ------------------------------------------------------------------------------------


def test_windows_read_the_places_of_the_formula():
    x = np.arange(25.0).reshape(1, 5, 5, 1)  # (C, H, W, B)
    views = windows._windows(x, (2, 2), (2, 1), (2, 3))  # stride 2x1, dilation 2x3
    assert views.shape == (1, 2, 2, 2, 2, 1)  # (C, kh, kw, OH, OW, B)
    # window (i, j) = (0, 1) reads x[2i + 2m, j + 3n] for m, n in {0, 1}
    assert views[0, :, :, 0, 1, 0].tolist() == [[1.0, 4.0], [11.0, 14.0]]
    assert not views.flags.writeable  # windows overlap: never written through
    # a view of x (every other column, reversed), not contiguous: the same places of it
    strided = windows._windows(x[:, :, ::-2], (2, 2), (2, 1), (1, 1))
    assert strided[0, :, :, 1, 0, 0].tolist() == [[14.0, 12.0], [19.0, 17.0]]  # rows 2, 3


@pytest.mark.parametrize("scatter", ["by index", "by slices"])
@pytest.mark.parametrize(
    "kernel, stride, dilation",
    [((3, 3), (1, 1), (1, 1)), ((2, 3), (2, 1), (1, 2)), ((2, 2), (2, 2), (1, 1)), ((3, 1), (3, 2), (2, 1))],
)
def test_adding_windows_back_is_the_adjoint_of_taking_them(kernel, stride, dilation, scatter, monkeypatch):
    # <windows(x), d> = <x, add_windows(d)> for every x and d: the scatter-add is exactly the
    # transpose of the gather, overlaps and tiles alike, whichever way it adds.
    monkeypatch.setattr(windows, "SCATTER_BY_INDEX", 10**9 if scatter == "by index" else 0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 9, 8, 3))
    views = windows._windows(x, kernel, stride, dilation)
    d = rng.normal(size=views.shape)
    back = windows._add_windows(d, x.shape, stride, dilation)
    assert np.sum(views * d) == pytest.approx(np.sum(x * back), rel=1e-12)


def test_both_ways_of_adding_windows_back_give_the_same_bits(monkeypatch):
    # The same additions in the same order (kernel place by kernel place): equal to the bit.
    rng = np.random.default_rng(2)
    d = rng.normal(size=(3, 3, 2, 4, 5, 7))  # (C, kh, kw, OH, OW, B), stride 2x1, dilation 1x2
    by_index = windows._add_windows(d, (3, 10, 7, 7), (2, 1), (1, 2))
    monkeypatch.setattr(windows, "SCATTER_BY_INDEX", 0)
    by_slices = windows._add_windows(d, (3, 10, 7, 7), (2, 1), (1, 2))
    assert by_index.shape == (3, 10, 7, 7) and np.array_equal(by_index, by_slices)
    assert not by_index[:, 9].any()  # the last row is read by no window: it gets nothing


def test_the_scatter_index_is_kept_for_a_few_shapes_at_most():
    windows._SCATTER_INDEXES.clear()
    for batch in range(1, 80):
        windows._add_windows(np.ones((1, 2, 2, 2, 2, batch)), (1, 3, 3, batch), (1, 1), (1, 1))
    assert 0 < len(windows._SCATTER_INDEXES) <= 64


@pytest.mark.parametrize("by", ["index", "strided adds"])
def test_window_sums_and_padding(by, monkeypatch):
    monkeypatch.setattr(windows, "SCATTER_BY_INDEX", 10**9 if by == "index" else 0)
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    sums = windows._sum_windows(x, (2, 2), (2, 2))
    assert sums[0, :, :, 0].tolist() == [[10.0, 18.0], [42.0, 50.0]]
    assert windows._sum_windows(x, (3, 2), (1, 2))[0, :, :, 0].tolist() == [[27.0, 39.0], [51.0, 63.0]]
    padded = windows._pad(x, (1, 2), -np.inf)
    assert padded.shape == (1, 6, 8, 1) and padded[0, 0, 0, 0] == -np.inf
    assert np.array_equal(windows._unpad(padded, (1, 2)), x)


@pytest.mark.parametrize(
    "shape, kernel, stride",
    [((2, 6, 4, 3), (2, 2), (2, 2)), ((2, 7, 5, 3), (2, 2), (2, 2)), ((2, 7, 5, 3), (3, 2), (1, 2))],
    ids=["tiles", "tiles short of the edge", "overlapping"],
)
def test_spreading_windows_back_is_the_adjoint_of_summing_them(shape, kernel, stride):
    # <sum_windows(x), d> = <x, spread_windows(d)>: each window's d reaches every place it sums.
    rng = np.random.default_rng(5)
    x = rng.normal(size=shape)
    sums = windows._sum_windows(x, kernel, stride)
    d = rng.normal(size=sums.shape)
    back = windows._spread_windows(d, shape, kernel, stride)
    assert back.shape == shape
    assert np.sum(sums * d) == pytest.approx(np.sum(x * back), rel=1e-12)


@pytest.mark.parametrize("by", ["index", "strided copy"])
def test_columns_hold_each_window_down_a_column(by, monkeypatch):
    monkeypatch.setattr(windows, "COLUMNS_BY_INDEX", 10**9 if by == "index" else 0)
    x = np.arange(18.0).reshape(1, 3, 3, 2)  # (C, H, W, B): sample b holds 2·(3h + w) + b
    columns = windows._columns(x, (2, 2), (1, 1), (1, 1))
    assert columns.shape == (4, 8)  # (c·m·n, i·j·b)
    # window (i, j) = (0, 1) of sample 1: x[0, m, 1 + n, 1] for (m, n) in kernel order
    assert columns[:, 3].tolist() == [3.0, 5.0, 9.0, 11.0]
    by_sample = windows._columns_by_sample(x, (2, 2), (1, 1), (1, 1))  # (B, c·m·n, i·j)
    assert by_sample.shape == (2, 4, 4) and by_sample[1, :, 1].tolist() == [3.0, 5.0, 9.0, 11.0]
    assert np.array_equal(by_sample, columns.reshape(4, 4, 2).transpose(2, 0, 1))


# ---- a small convolution as one matrix ----------------------------------------------------------


def test_a_convolution_matrix_holds_the_kernel_at_each_window():
    weights = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])  # (O, C, kh, kw) = (1, 1, 2, 2)
    matrix = windows._conv_matrix(weights, (1, 3, 3), (1, 1), (0, 0), (1, 1))
    assert matrix.shape == (4, 9)  # outputs (o, i, j) x inputs (c, h, w)
    assert matrix[0].tolist() == [1, 2, 0, 3, 4, 0, 0, 0, 0]  # window (0, 0)
    assert matrix[3].tolist() == [0, 0, 0, 0, 1, 2, 0, 3, 4]  # window (1, 1)
    padded = windows._conv_matrix(weights, (1, 3, 3), (2, 2), (1, 1), (1, 1))  # 2x2 outputs
    assert padded[0].tolist() == [4, 0, 0, 0, 0, 0, 0, 0, 0]  # three places on the padding


@pytest.mark.parametrize("samples", [1, 40])  # a few: on the windows; many: one product
def test_a_convolution_matrix_gradient_is_the_windows_gradient(samples):
    # ∂L/∂W[o,c,m,n] = Σ_(i,j,b) dz[o,i,j,b] x[c, s·i + d·m − p, s·j + d·n − p, b]
    rng = np.random.default_rng(3)
    shape, stride, padding, dilation = (2, 6, 5), (2, 1), (1, 2), (1, 2)
    weights = rng.normal(size=(3, 2, 3, 2))
    x = rng.normal(size=(*shape, samples))
    padded = windows._pad(x, padding)
    views = windows._windows(padded, (3, 2), stride, dilation)  # (C, kh, kw, OH, OW, B)
    z = np.einsum("ocmn,cmnijb->oijb", weights, views)
    matrix = windows._conv_matrix(weights, shape, stride, padding, dilation)
    assert np.allclose(matrix @ x.reshape(-1, samples), z.reshape(-1, samples), rtol=1e-12, atol=1e-12)
    dz = rng.normal(size=z.shape)
    flat = x.reshape(-1, samples)
    settings = shape, stride, padding, dilation
    grad = windows._conv_matrix_grad(dz.reshape(-1, samples), flat, weights.shape, *settings)
    assert np.allclose(grad, np.einsum("oijb,cmnijb->ocmn", dz, views), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("samples, size", [(1, 4), (1, 80), (3, 4), (3, 80)])  # 80x80: large
def test_outer_products_summed_and_per_sample(samples, size):
    rng = np.random.default_rng(4)
    rows, columns = rng.normal(size=(size, samples)), rng.normal(size=(size + 1, samples))
    each = np.empty((samples, size, size + 1))
    windows._outer_per_sample(rows, columns, out=each)
    assert np.allclose(each, np.einsum("fb,nb->bfn", rows, columns), rtol=1e-15, atol=0)
    assert np.allclose(windows._outer_sum(rows, columns), each.sum(axis=0), rtol=1e-14, atol=1e-14)
    assert np.getbufsize() == 8192  # numpy's own again afterwards


# ---- arguments ----------------------------------------------------------------------------------


LAYOUT = calls.Layout((1, 2, 2), 3, {"W1": (3, 4)}, generic_g=False, loss="sse")


def test_reduce_must_be_none_sum_or_mean():
    with pytest.raises(ValueError, match=r"reduce='max'; choose None \(per sample\), 'sum' or 'mean'"):
        calls.checked(LAYOUT, np.zeros((1, 2, 2)), np.zeros(3), {"W1": np.zeros((3, 4))}, "max")


# python's sum for a few values, numpy's on all the middling ones at once, or on its own
@pytest.mark.parametrize("size", [4, 100, 5000])
def test_non_finite_values_are_named_and_huge_finite_ones_pass(size):
    layout = calls.Layout((size,), 1, {"W1": (1, size)}, generic_g=False, loss="sse")
    x, y, w = np.full(size, 1e308), np.zeros(1), np.full((1, size), -1e308)  # sums overflow
    assert calls.checked(layout, x, y, {"W1": w}, None)[3] is True  # one sample, all finite
    w[0, -1] = np.nan
    with pytest.raises(ValueError, match=r"params\['W1'\] has non-finite values"):
        calls.checked(layout, x, y, {"W1": w}, None)
    with pytest.raises(ValueError, match=r"^x has non-finite values"):
        calls.checked(layout, np.full((2, size), np.inf), np.zeros((2, 1)), {"W1": w}, None)


def test_choices_are_refused_where_the_spec_fixes_them():
    with pytest.raises(ValueError, match=r"loss='mse': this network has no generic loss L"):
        calls.choose(LAYOUT, None, "mse")
    assert calls.choose(LAYOUT, None, None) == functions.LOSSES["sse"]


# ---- what the printers copy ---------------------------------------------------------------------


RUNTIME = {"calls": calls, "functions": functions, "windows": windows, "chunks": chunks}


def imports_of(module) -> tuple[set[str], list[str]]:
    """What a module imports at its top (relative imports as ".name"), and inside functions."""
    tree = ast.parse(inspect.getsource(module))
    top = {
        "." * node.level + (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    inner = [
        node.module for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node not in tree.body
    ]
    return top, inner


def test_each_runtime_module_imports_numpy_the_standard_library_and_its_neighbours_only():
    expected = {
        "calls": {"__future__", "math", "collections.abc", "typing", "numpy", ".chunks", ".functions"},
        "functions": {"__future__", "math", "numpy"},
        "windows": {"__future__", "math", "numpy", "numpy.lib.stride_tricks"},
        "chunks": {"__future__", "concurrent.futures", "os", "threading", "numpy"},
    }
    for name, module in RUNTIME.items():
        top, inner = imports_of(module)
        assert top == expected[name], name
        # and, where installed, threadpoolctl (to run a batch's chunks on threads), in one place
        assert inner == (["threadpoolctl"] if name == "chunks" else []), name


def test_no_two_runtime_modules_define_the_same_name():
    # a generated module holds their definitions side by side, in one namespace
    defined = {}
    for name, module in RUNTIME.items():
        for node in ast.parse(inspect.getsource(module)).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node]
            for target in targets:
                own = getattr(target, "name", None) or getattr(target, "id", None)
                if own:
                    assert own not in defined, f"{own} in both {defined[own]} and {name}"
                    defined[own] = name
    assert {"run", "checked", "sigmoid", "LOSSES", "_add_windows", "_map_chunks"} <= defined.keys()


def test_a_module_gets_the_definitions_it_uses_and_what_they_use():
    copied = embed.runtime_source("def f(z):\n    return softplus_prime(z, None)\n")
    names = {
        node.name
        for node in ast.parse(copied).body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
    }
    assert names == {"softplus_prime", "sigmoid"}  # softplus′ is σ
    assert "_NUMBER = (int, float)" in copied  # the constant sigmoid reads
    # the imports those two use, and no other
    assert copied.startswith("import math\n\nimport numpy\n\n\n") and "threading" not in copied
    assert "def _windows(" not in copied


def test_copied_definitions_are_the_runtime_source_verbatim():
    copied = embed.runtime_source("run\n")
    assert inspect.getsource(calls.run) in copied
    assert inspect.getsource(calls._shaped) in copied  # run checks its arguments
    assert "def _add_windows(" not in copied  # only a per-layer program calls it
