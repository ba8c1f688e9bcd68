"""float32 code (``dtype="float32"``): every operation, loss and reduction computes in float32
end to end — its results are float32, no float64 array lives in any frame of its module —
and agrees with the float64 code and with PyTorch in float32 within float32's tolerance
(``numeric.TOLERANCES``: 1e-4 of each quantity's largest magnitude, 1e-6 absolute), a
tolerance tight enough to catch a term left out of a sum of a thousand."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
from oracle import random_point, sign_flipped
from test_batchnorm import NETWORKS as BATCH_NORM
from test_numeric_layers import FORMS, OPERATIONS, padding_only_network
from test_numeric_layers import network as one_operation
from test_ops import CASES as OPERATION_CASES

import symbackprop as sb
from symbackprop import numeric, torch_bridge, verify
from symbackprop.cli import main
from symbackprop.numeric.runtime import functions

RTOL, ATOL = numeric.TOLERANCES["float32"]

# Every operation of the registry (tests/test_ops.py's cases, graphs among them), each
# convolution setting of tests/test_numeric_layers.py, batch normalisation in train mode.
CASES = {
    **OPERATION_CASES,
    **{f"{name}, then dense": one_operation(op) for name, op in OPERATIONS.items()},
    **{f"{name}, train mode": build() for name, build in BATCH_NORM.items()},
}


def within(actual, expected, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """|actual − expected| <= atol + rtol · max |expected|: float32's tolerance, elementwise
    against the quantity's scale."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape
    error = np.abs(actual - expected).max(initial=0.0)
    return bool(error <= atol + rtol * np.abs(expected).max(initial=0.0))


def assert_agrees(out, loss, grads) -> None:
    assert within(out.loss, loss), f"loss {out.loss} against {loss}"
    assert out.grads.keys() == grads.keys()
    for name, grad in grads.items():
        assert within(out.grads[name], grad), f"{name}: max error {np.abs(out.grads[name] - grad).max():.3g}"


def assert_float32(out, reduce) -> None:
    """Every gradient a float32 array; per-sample losses a float32 array; a single loss a
    python float holding a float32 value."""
    assert {name: grad.dtype for name, grad in out.grads.items()} == dict.fromkeys(out.grads, np.float32)
    if isinstance(out.loss, np.ndarray):
        assert out.loss.dtype == np.float32
    else:
        assert isinstance(out.loss, float) and np.float32(out.loss) == out.loss or np.isnan(out.loss)


def batch(net: sb.Network, rng: np.random.Generator, size: int):
    _, _, params = random_point(net, rng)  # weights of a size torch's tests use; buffers
    xs = rng.normal(size=(size, *net.input_shape))
    ys = (rng.dirichlet(np.ones(net.output_size), size=size) if net.loss == "cross_entropy"
          else rng.normal(size=(size, net.output_size)))
    return xs, ys, params


def torch_float32(net: sb.Network, x, y, params, reduce: str):
    """PyTorch's backward of the batch's summed or mean loss with the model, x and y in
    float32 (its oneDNN kernels, as people train)."""
    model = torch_bridge.to_torch(net, params, exact=True).to(torch.float32)
    inputs = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    losses = torch_bridge.torch_loss(net)(model(inputs).reshape(len(x), -1), torch.tensor(y, dtype=torch.float32))
    total = losses.sum() if reduce == "sum" else losses.mean()
    total.backward()
    grads = {"x": inputs.grad.numpy(), **{n: p.grad.numpy() for n, p in zip(net.parameters, model.parameters())}}
    return float(total.detach()), grads


# ---- every operation -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_every_operation_in_float32_is_float32_and_agrees_with_float64_and_torch(name, rng):
    net = CASES[name]
    d = net.derive()
    x, y, params = batch(net, rng, 4)
    for reduce in ("sum", "mean") if net.couples_samples else (None, "sum", "mean"):
        out = d.numeric(reduce=reduce, style="layers", dtype="float32")(x, y, params)
        assert_float32(out, reduce)
        assert_agrees(out, *d.numeric(reduce=reduce, style="layers")(x, y, params))
        if reduce is not None:
            assert_agrees(out, *torch_float32(net, x, y, params, reduce))


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_a_convolution_in_float32_on_its_windows_too(name, rng, monkeypatch):
    monkeypatch.setattr(sb.Conv2D, "MATRIX_LIMIT", FORMS["on windows"])
    net = one_operation(OPERATIONS[name])
    x, y, params = batch(net, rng, 3)
    out = net.derive().numeric(reduce="sum", dtype="float32")(x, y, params)
    assert_float32(out, "sum")
    assert_agrees(out, *torch_float32(net, x, y, params, "sum"))


SMALL_GRAPHS = [name for name in CASES if CASES[name].graph_edges <= 3000 and not CASES[name].couples_samples]


@pytest.mark.parametrize("name", SMALL_GRAPHS)
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_the_per_node_program_in_float32_runs_on_float32_arrays(name, rng):
    # one sample of the per-node program runs on python floats in float64: in float32, on
    # arrays of one value per node, its weights arrays (1,)
    net = CASES[name]
    d = net.derive()
    x, y, params = batch(net, rng, 3)
    for reduce in (None, "sum"):
        out = d.numeric(reduce=reduce, style="nodes", dtype="float32")(x, y, params)
        assert_float32(out, reduce)
        assert_agrees(out, *d.numeric(reduce=reduce, style="layers")(x, y, params))
    one = d.numeric(style="nodes", dtype="float32")(x[0], y[0], params)
    assert_float32(one, None)
    assert one.grads["x"].shape == net.input_shape
    assert_agrees(one, *d.numeric(style="nodes")(x[0], y[0], params))


def float64_arrays_in(run):
    """Run ``run()`` and return (its result, where a float64 array or scalar was held): every
    local variable of every frame of a generated module, line by line, but for the argument
    checks (whose inputs are what the caller gave) and the allocator's warm-up block."""
    found = []
    before_conversion = {
        "loss_and_grads", "run", "checked", "_shaped", "targets", "_numbers", "_require_finite", "_warm_allocator",
    }

    def local(frame, event, arg):
        if frame.f_code.co_name == "_nodes" and event != "return":
            return local  # the per-node program assigns each node once: all are there at its end
        held = [*frame.f_locals.items(), *([("<returned>", arg)] if event == "return" else [])]
        for name, value in held:
            if isinstance(value, (np.ndarray, np.floating)) and value.dtype == np.float64:
                found.append(f"{frame.f_code.co_name}:{frame.f_lineno} {name}")
        return local

    def calls(frame, event, arg):
        code = frame.f_code
        if code.co_filename.startswith("<symbackprop gradients") and code.co_name not in before_conversion:
            return local
        return None

    sys.settrace(calls)
    try:
        out = run()
    finally:
        sys.settrace(None)
    return out, found


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_no_float64_array_lives_anywhere_in_a_float32_module(name, rng):
    net = CASES[name]
    d = net.derive()
    x, y, params = batch(net, rng, 3)
    styles = ["layers", "nodes"] if name in SMALL_GRAPHS else ["layers"]
    for style in styles:
        for reduce in ("sum",) if net.couples_samples else (None, "sum"):
            f = d.numeric(reduce=reduce, style=style, dtype="float32")
            for xs, ys in [(x, y)] if net.couples_samples else [(x, y), (x[0], y[0])]:
                out, found = float64_arrays_in(lambda: f(xs, ys, params))  # noqa: B023
                assert not found, f"{style}, reduce={reduce}: float64 in {sorted(set(found))[:5]}"
                assert_float32(out, reduce)


def test_the_trace_sees_a_float64_array_where_one_is_made(rng, monkeypatch):
    # the test above can fail: a runtime helper that upcasts (an int step times a float32
    # array, numpy.zeros without a dtype) is seen in the frame that holds it
    net = CASES["conv, then dense"]
    d = net.derive()
    x, y, params = batch(net, rng, 3)
    module = numeric.compiled(d, "layers", "numpy", "float32")
    monkeypatch.setitem(module.__dict__, "tanh_backward", lambda z, a, da: (1 - a * a) * da * np.ones(1))
    _, found = float64_arrays_in(lambda: module.loss_and_grads(x, y, params, "sum"))
    assert found and found[0].startswith("_layers:") and found[0].endswith(" dz1")  # where it was made


# ---- every loss and reduction -----------------------------------------------------------------


LOSSES = ["sse", "mse", "cross_entropy", "binary_cross_entropy"]


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("output", ["vector", "map"])
@pytest.mark.parametrize("reduce", [None, "sum", "mean"])
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_every_loss_and_reduce_in_float32(loss, output, reduce, rng):
    last = sb.Dense(units=3, bias=True) if output == "vector" else sb.Conv2D(out_channels=3, kernel_size=1)
    net = sb.Network((2, 4, 4), [sb.Conv2D(out_channels=2, kernel_size=3, padding=1, activation="softplus"),
                                 last], loss=loss)
    d = net.derive()
    x, y, params = batch(net, rng, 5)
    if loss == "binary_cross_entropy":
        y = rng.random(size=y.shape)
    for style in ("layers", "nodes"):
        out = d.numeric(reduce=reduce, style=style, dtype="float32")(x, y, params)
        assert_float32(out, reduce)
        assert_agrees(out, *d.numeric(reduce=reduce, style="layers")(x, y, params))
    if reduce is not None:
        assert_agrees(out, *torch_float32(net, x, y, params, reduce))


@pytest.mark.parametrize("g", ["identity", "sigmoid", "tanh", "relu", "softplus", "leaky_relu"])
def test_a_generic_activation_chosen_at_run_time_stays_float32(g, rng):
    article = sb.presets.article()
    d = article.derive()
    x, y, params = batch(article.with_choices(g=g, loss="sse"), rng, 4)
    for style in ("layers", "nodes"):
        out, found = float64_arrays_in(
            lambda: d.numeric(g=g, loss="sse", reduce="sum", style=style, dtype="float32")(x, y, params)  # noqa: B023
        )
        assert not found, sorted(set(found))[:5]
        assert_agrees(out, *d.numeric(g=g, loss="sse", reduce="sum")(x, y, params))


def test_an_empty_batch_is_float32_too():
    net = sb.presets.article().with_choices(g="tanh", loss="sse")
    f = net.derive().numeric(dtype="float32")
    params = {name: np.ones(shape) for name, shape in net.parameters.items()}
    out = f(np.zeros((0, 1, 4, 4)), np.zeros((0, 2)), params)
    assert out.loss.dtype == np.float32 and out.loss.shape == (0,)
    assert {grad.dtype for grad in out.grads.values()} == {np.dtype(np.float32)}


# ---- stable in float32 -----------------------------------------------------------------------


def test_activations_and_losses_stay_finite_and_quiet_in_float32_far_out():
    # float32's exp overflows past 88.7: sigmoid and softplus go through e^−|z|, so nothing
    # overflows where it matters; softplus past 20 is z, as torch's threshold gives
    z = np.array([-1e4, -100, -88.8, -20, -1, 0, 1, 20, 21, 88.8, 100, 1e4], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warning either
        ours = {"sigmoid": functions.sigmoid(z.copy()), "softplus": functions.softplus(z),
                "tanh": functions.tanh(z)}
        logits = np.array([[1e4, -1e4, 0], [-1e4, 1e4, 1]], np.float32)  # (K, B)
        targets = np.array([[1, 0.5, 0], [0, 0.5, 1]], np.float32)
        ce, ce_grad = functions.cross_entropy_and_gradient(logits, targets, 2)
        bce, bce_grad = functions.binary_cross_entropy_and_gradient(logits, targets, 2)
    theirs = {"sigmoid": torch.sigmoid, "softplus": torch.nn.functional.softplus, "tanh": torch.tanh}
    for name, values in ours.items():
        assert values.dtype == np.float32
        assert within(values, theirs[name](torch.tensor(z)).numpy(), rtol=1e-6, atol=1e-30), name
    assert ours["softplus"][7:].tolist() == z[7:].tolist()  # z itself from 20 on, in float32
    assert ours["sigmoid"][:2].tolist() == [0.0, 0.0] and ours["sigmoid"][-3:].tolist() == [1.0] * 3
    # log-sum-exp: a column per sample, (1e4, −1e4) right, (−1e4, 1e4) half wrong, (0, 1)
    assert ce.tolist() == [0.0, 1e4, pytest.approx(np.log1p(np.exp(-1)), rel=1e-6)]
    # Σ_k softplus(a_k) − y_k a_k: softplus(±1e4) without overflow
    assert bce.tolist() == [0.0, 1e4, pytest.approx(np.log(2) + np.log1p(np.exp(-1)), rel=1e-6)]
    assert {ce.dtype, ce_grad.dtype, bce.dtype, bce_grad.dtype} == {np.dtype(np.float32)}


def test_a_float32_network_at_logits_far_out_has_torch_float32_gradients():
    net = sb.Network((2,), [sb.Dense(units=3, bias=True)], loss="cross_entropy")
    params = {"W1": np.array([[300.0, 0], [0, 300], [-300, 0]]), "b1": np.zeros(3)}
    x, y = np.array([[1.0, 0.5], [0.2, -1]]), np.array([[0, 1.0, 0], [1, 0, 0]])
    out = net.derive().numeric(reduce="sum", dtype="float32")(x, y, params)
    assert_float32(out, "sum")
    # z = (300, 150, −300) against class 1: 300 − 150; z = (60, −300, −60) against class 0: e^−120
    assert out.loss == pytest.approx(150, rel=1e-6)
    assert_agrees(out, *torch_float32(net, x, y, params, "sum"))


# ---- the tolerance ----------------------------------------------------------------------------


def test_the_tolerance_catches_one_term_left_out_of_a_sum_of_a_thousand(rng):
    # W2's summed gradient is a sum over 1024 samples, each of them a sum over the layer's
    # places: float32's rounding stays below 1e-5 of its scale, while leaving one sample's
    # term out moves it by about 1/1024 ≈ 1e-3 of it — ten times the tolerance
    net = one_operation(OPERATIONS["conv"])
    d = net.derive()
    x, y, params = batch(net, rng, 1024)
    float32 = d.numeric(reduce="sum", dtype="float32")(x, y, params)
    every = d.numeric(reduce="sum")(x, y, params)
    one_left_out = d.numeric(reduce="sum")(x[1:], y[1:], params)
    for name in params:
        scale = np.abs(every.grads[name]).max()
        assert np.abs(float32.grads[name] - every.grads[name]).max() < 1e-5 * scale
        assert within(float32.grads[name], every.grads[name])
        assert not within(float32.grads[name], one_left_out.grads[name]), name


def test_a_wrong_sign_in_the_float32_code_is_caught_by_check():
    small = sb.Network((1, 3, 3), [sb.Conv2D(kernel_size=2, out_channels=2, bias=True, activation="tanh"),
                                   sb.Dense(units=2)], "mse", name="small")
    report = verify.check(sign_flipped(small, "W1", (1, 0, 0, 1)), samples=1, seed=0, dtype="float32")
    rows = {row.name: row for row in report.runs[0].rows}
    assert [name for name, row in rows.items() if not row.agree] == ["W1"]
    # the per-node program carries the flipped sign; the float64 code it is compared with is
    # per layer, printed from the operations, and right
    assert rows["W1"].disagreeing == ["float64 code", "reference", "finite differences", "torch"]
    assert verify.check(small.derive(), samples=2, seed=0, dtype="float32").agree


# ---- arguments of another dtype ---------------------------------------------------------------


def test_arguments_of_any_dtype_are_converted_once_at_the_call(rng, monkeypatch):
    net = CASES["conv, then dense"]
    d = net.derive()
    x, y, params = batch(net, rng, 3)
    module = numeric.compiled(d, "layers", "numpy", "float32")
    seen = []
    program = module._PROGRAMS.layers

    def spy(x, y, params, *rest):
        seen.append({x.dtype, y.dtype, *(value.dtype for value in params.values())})
        return program(x, y, params, *rest)

    monkeypatch.setattr(module, "_PROGRAMS", module._PROGRAMS._replace(layers=spy))
    mixed = {name: value.astype(np.float32 if i % 2 else np.float64) for i, (name, value) in enumerate(params.items())}
    for xs in (x, x.astype(np.float16), np.round(x * 3).astype(np.int64)):
        out = module.loss_and_grads(xs, y.astype(np.float64), mixed, "sum")
        assert_float32(out, "sum")
        expected = d.numeric(reduce="sum")(xs.astype(np.float64), y, mixed)  # the same values in float64
        assert_agrees(out, expected.loss, expected.grads)
    assert seen == [{np.dtype(np.float32)}] * 3  # the program only ever saw float32
    # and a float64 module takes float32 arguments up to float64, as before
    out = d.numeric(reduce="sum")(x.astype(np.float32), y.astype(np.float32), mixed)
    assert {grad.dtype for grad in out.grads.values()} == {np.dtype(np.float64)}


def test_a_value_past_float32s_range_is_refused_saying_so(rng):
    net = CASES["conv, then dense"]
    x, y, params = batch(net, rng, 2)
    f = net.derive().numeric(dtype="float32")
    past = r"^params\['W1'\] has non-finite values \(nan or inf, or past float32's range\); all must be finite$"
    # numpy warns too, converting 1e39 to float32
    with pytest.warns(RuntimeWarning, match="overflow"), pytest.raises(ValueError, match=past):
        f(x, y, {**params, "W1": params["W1"] * 1e39})
    with pytest.raises(ValueError, match=r"^x has non-finite values \(nan or inf\); all must be finite$"):
        net.derive().numeric()(x * np.inf, y, params)  # float64: as before


def test_an_unknown_dtype_is_refused_naming_the_choices():
    d = sb.presets.article().derive()
    with pytest.raises(ValueError, match=r"^dtype='float16'; choose one of 'float64', 'float32'$"):
        d.numeric(g="relu", loss="sse", dtype="float16")
    with pytest.raises(ValueError, match=r"^dtype='int32'; choose one of 'float64', 'float32'$"):
        verify.check(d, dtype="int32")


@pytest.mark.parametrize("size", [32, 1025])  # the matrix's gradient by index; two chunks
def test_a_convolution_reading_only_padding_keeps_float32_gradients(size, rng):
    net = padding_only_network()
    params = {"W1": np.array([[[[0.5]]]]), "W2": np.arange(8.0).reshape(2, 4) / 8}
    x, y = rng.normal(size=(size, 1, 2, 2)), rng.normal(size=(size, 2))
    out = net.derive().numeric(style="layers", reduce="sum", dtype="float32")(x, y, params)
    assert_float32(out, "sum")
    assert not out.grads["W1"].any()


# ---- presets, export and the command line -----------------------------------------------------


@pytest.mark.parametrize("preset", [
    "lenet5", pytest.param("resnet_tiny", marks=pytest.mark.slow), "fcn_tiny", "unet_tiny",
])
def test_presets_in_float32_agree_with_float64_and_torch_float32(preset, rng):
    net = getattr(sb.presets, preset)()
    d = net.derive()
    x, y, params = batch(net, rng, 2)
    for reduce in (None, "sum"):
        out = d.numeric(reduce=reduce, dtype="float32")(x, y, params)
        assert_float32(out, reduce)
        assert_agrees(out, *d.numeric(reduce=reduce)(x, y, params))
    assert_agrees(out, *torch_float32(net, x, y, params, "sum"))


def test_an_exported_float32_module_needs_only_numpy_and_returns_float32(tmp_path, rng):
    net = sb.presets.lenet5()
    path = net.derive().export_module(tmp_path / "gradients32.py", dtype="float32")
    text = path.read_text()
    assert "dtype='float32')" in text and "It computes in float32" in text
    namespace: dict = {}
    exec(compile(text, str(path), "exec"), namespace)  # noqa: S102 - our own generated module
    x, y, params = batch(net, rng, 2)
    out = namespace["loss_and_grads"](x, y, params, reduce="mean")
    assert_float32(out, "mean")


def test_derive_writes_float32_code_when_asked(tmp_path):
    assert main(["derive", "--preset", "article", "--dtype", "float32", "-o", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "gradients.py").read_text()
    assert "_LAYOUT = Layout(INPUT_SHAPE, OUTPUT_SIZE, PARAMETERS, generic_g=True, loss=None, dtype='float32')" in text
    assert "def _nodes(" not in text  # the per-node program's lead is on python floats: per layer alone


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_check_dtype_float32_says_what_it_compared_and_with_which_tolerance(capsys):
    assert main(["check", "--preset", "lenet5", "--samples", "1", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "check lenet5: 1 samples, seed 0; derived gradients (per-layer code, float32) against "
        "float64 code, reference, finite differences, torch\n"
    )
    assert ("tolerances: float64 code 1e-04 rel + 1e-06 abs, reference 1e-04 rel + 1e-06 abs, "
            "finite differences 1e-04 rel + 1e-06 abs, torch 1e-04 rel + 1e-06 abs\n") in out
    assert out.rstrip().endswith("all agree")
    assert main(["check", "--preset", "article", "--samples", "1", "--dtype", "float32", "--json"]) == 0
    report = __import__("json").loads(capsys.readouterr().out)
    assert report["dtype"] == "float32" and report["agree"]
    assert report["tolerances"]["torch"] == {"rtol": 1e-4, "atol": 1e-6}
