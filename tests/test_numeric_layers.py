"""The per-layer numeric code (style="layers"): every operation against the reference backprop
and PyTorch, per sample and reduced over a batch, for batches of 0, 1 and 5."""

from __future__ import annotations

import multiprocessing
import re
import threading
from types import ModuleType

import numpy as np
import pytest
import threadpoolctl
from graphs import GRAPHS
from hypothesis import given
from oracle import (
    assert_same_gradients,
    torch_batch_loss_and_grads,
    torch_loss_and_grads,
    torch_reduced_loss_and_grads,
)
from strategies import networks

import symbackprop as sb
from symbackprop import numeric, reference
from symbackprop.graph import Graph
from symbackprop.numeric import layers
from symbackprop.numeric.runtime import chunks
from symbackprop.ops.base import activation_code
from symbackprop.verify import draw_point

# One network per case: the operation on a 2x7x7 input, then a dense layer to three outputs.
OPERATIONS = {
    "conv": sb.Conv2D(kernel_size=3, out_channels=2, bias=True, activation="tanh"),
    "conv, stride and padding per axis": sb.Conv2D(
        kernel_size=(3, 2), out_channels=2, stride=(2, 1), padding=(1, 2), activation="sigmoid"
    ),
    "conv, dilation": sb.Conv2D(
        kernel_size=2, out_channels=3, dilation=(2, 3), padding=1, bias=True, activation="softplus"
    ),
    "conv, dilation and stride": sb.Conv2D(kernel_size=3, dilation=2, stride=2, activation="relu"),
    "conv, windows that tile": sb.Conv2D(kernel_size=2, stride=2, activation="leaky_relu"),
    # on windows, these two get dL/dinput from dL/dz's windows and the kernel turned 180°
    "conv, same size": sb.Conv2D(kernel_size=3, out_channels=2, padding=1, bias=True, activation="relu"),
    "conv, dilated, rectangular and padded": sb.Conv2D(
        kernel_size=(3, 2), out_channels=1, dilation=(2, 3), padding=(2, 1), activation="tanh"
    ),
    "maxpool": sb.MaxPool2D(kernel_size=2),
    "maxpool, overlapping and padded": sb.MaxPool2D(kernel_size=3, stride=1, padding=1),
    "maxpool, 3x2 stride 2x1": sb.MaxPool2D(kernel_size=(3, 2), stride=(2, 1)),
    "avgpool": sb.AvgPool2D(kernel_size=2),
    "avgpool, overlapping and padded": sb.AvgPool2D(kernel_size=3, stride=2, padding=1),
    "dense on an image": sb.Dense(units=4, bias=True, activation="tanh"),
}


def network(op: sb.Conv2D, loss: str = "cross_entropy") -> sb.Network:
    return sb.Network((2, 7, 7), [op, sb.Dense(units=3, bias=True)], loss, name="case")


def batch(net: sb.Network, rng: np.random.Generator, size: int, ties: bool = False):
    """x (size, C, H, W) and y (size, K); with ties, x holds few distinct values, so that
    max-pooling windows tie and the first maximum must take the gradient."""
    x = rng.integers(0, 3, size=(size, *net.input_shape)).astype(float) if ties else rng.normal(
        size=(size, *net.input_shape)
    )
    y = rng.dirichlet(np.ones(net.output_size), size=size)
    return x, y


# A convolution runs as its matrix when that is small (all of these are), on its windows
# otherwise: each convolution case runs both ways.
FORMS = {"as a matrix": 10**9, "on windows": 0}
CASES = [
    (name, form)
    for name, op in OPERATIONS.items()
    for form in (FORMS if op.key == "conv" else ["as a matrix"])
]


@pytest.fixture(params=CASES, ids=[f"{n}, {f}" if n.startswith("conv") else n for n, f in CASES])
def case(request, monkeypatch) -> sb.Network:
    name, form = request.param
    monkeypatch.setattr(sb.Conv2D, "MATRIX_LIMIT", FORMS[form])
    return network(OPERATIONS[name])


# ---- every operation against the reference and torch ------------------------------------------


@pytest.mark.parametrize("size", [1, 5])
def test_per_sample_gradients_match_the_reference_and_torch(case, rng, size):
    _, _, params = draw_point(case, rng)
    x, y = batch(case, rng, size, ties=True)
    out = case.derive().numeric(style="layers")(x, y, params)
    assert_same_gradients(out, *reference.loss_and_grads(case, x, y, params))
    assert_same_gradients(out, *torch_batch_loss_and_grads(case, x, y, params))


def test_one_sample_gives_its_own_gradients(case, rng):
    x, y, params = draw_point(case, rng)
    out = case.derive().numeric(style="layers")(x, y, params)
    assert np.shape(out.loss) == () and out.grads["x"].shape == case.input_shape
    assert_same_gradients(out, *torch_loss_and_grads(case, x, y, params))


@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("size", [1, 5])
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_reduced_gradients_are_torch_backward_of_the_batch_loss(case, rng, reduce, size):
    _, _, params = draw_point(case, rng)
    x, y = batch(case, rng, size, ties=True)
    out = case.derive().numeric(style="layers", reduce=reduce)(x, y, params)
    assert isinstance(out.loss, float)
    assert {name: g.shape for name, g in out.grads.items()} == {
        "x": x.shape, **case.parameters
    }
    assert_same_gradients(out, *torch_reduced_loss_and_grads(case, x, y, params, reduce))


def test_a_batch_of_many_sums_the_same_gradients(case, rng):
    # 40 samples: a convolution's matrix gradient comes from one product over the batch.
    _, _, params = draw_point(case, rng)
    x, y = batch(case, rng, 40, ties=True)
    out = case.derive().numeric(style="layers", reduce="sum")(x, y, params)
    assert_same_gradients(out, *torch_reduced_loss_and_grads(case, x, y, params, "sum"))


@pytest.mark.parametrize("reduce", [None, "sum", "mean"])
def test_a_batch_of_zero_gives_empty_arrays_of_the_right_shapes(case, rng, reduce):
    _, _, params = draw_point(case, rng)
    x, y = np.zeros((0, *case.input_shape)), np.zeros((0, 3))
    out = case.derive().numeric(style="layers", reduce=reduce)(x, y, params)
    per_sample = reduce is None
    assert {name: g.shape for name, g in out.grads.items()} == {
        "x": (0, *case.input_shape),
        **{name: (0, *shape) if per_sample else shape for name, shape in case.parameters.items()},
    }
    assert all(not g.any() for g in out.grads.values())
    if reduce is None:
        assert out.loss.shape == (0,)
    else:  # a sum of nothing is 0; a mean of nothing is nan, as torch's
        assert out.loss == 0.0 if reduce == "sum" else np.isnan(out.loss)


def test_a_vector_input_goes_through_dense_layers(rng):
    net = sb.Network((5,), [sb.Dense(units=4, activation="tanh"), sb.Dense(units=2)], "mse")
    _, _, params = draw_point(net, rng)
    x, y = rng.normal(size=(5, 5)), rng.normal(size=(5, 2))
    f = net.derive().numeric(style="layers")
    assert_same_gradients(f(x, y, params), *torch_batch_loss_and_grads(net, x, y, params))
    assert_same_gradients(f(x[0], y[0], params), *torch_loss_and_grads(net, x[0], y[0], params))


def test_an_image_output_is_flattened_for_the_loss_as_pytorch(rng):
    net = sb.Network((1, 5, 5), [sb.Conv2D(kernel_size=3, out_channels=2)], "sse")
    _, _, params = draw_point(net, rng)
    x, y = rng.normal(size=(5, 1, 5, 5)), rng.normal(size=(5, 18))
    out = net.derive().numeric(style="layers")(x, y, params)
    assert_same_gradients(out, *torch_batch_loss_and_grads(net, x, y, params))


def test_max_pooling_sends_a_tied_window_gradient_to_its_first_maximum():
    # Every window of a constant image ties: the first place of each (row by row) gets it all.
    net = sb.Network((1, 4, 4), [sb.MaxPool2D(kernel_size=2)], "sse")
    x, y = np.ones((1, 4, 4)), np.zeros(4)  # ∂L/∂a = a - y = 1 per window
    out = net.derive().numeric(style="layers")(x, y, {})
    assert out.grads["x"][0].tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]


def dilated_conv_module(rng, size: int):
    """The per-layer module of a dilated convolution's network, its parameters and a batch
    of ``size``: what the tests of chunks and threads run."""
    net = network(OPERATIONS["conv, dilation"])
    _, _, params = draw_point(net, rng)
    x, y = batch(net, rng, size)
    return numeric.compiled(net.derive(), "layers"), x, y, params


def test_large_batches_run_a_chunk_at_a_time_with_the_same_result(rng, monkeypatch):
    module, x, y, params = dilated_conv_module(rng, 5)
    whole = {reduce: module.loss_and_grads(x, y, params, reduce) for reduce in (None, "sum", "mean")}
    monkeypatch.setattr(module, "_PROGRAMS", module._PROGRAMS._replace(batch_chunk=2))
    for reduce, expected in whole.items():
        assert_same_gradients(module.loss_and_grads(x, y, params, reduce), *expected, rtol=1e-14)


def padding_only_network() -> sb.Network:
    """A convolution whose every window lies on the padding: 1x1 kernels at stride 5 over a
    2x2 input padded by 2 read places -2 and 3 of each axis, never the input. Its output is
    0 whatever x, and so is its weight gradient."""
    return sb.Network(
        (1, 2, 2), [sb.Conv2D(kernel_size=1, padding=2, stride=5), sb.Dense(units=2)], "sse", name="padding"
    )


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("size", [31, 32, 1025])  # the matrix's gradient by index from 32; two chunks
def test_a_convolution_reading_only_padding_keeps_float_gradients(form, size, rng, monkeypatch):
    # issue 19: numpy's bincount over no index gave int64 zeros at 32 samples, and the sum of
    # two chunks then failed (UFuncTypeError)
    monkeypatch.setattr(sb.Conv2D, "MATRIX_LIMIT", FORMS[form])
    net = padding_only_network()
    params = {"W1": np.array([[[[0.5]]]]), "W2": np.arange(8.0).reshape(2, 4) / 8}
    x, y = rng.normal(size=(size, 1, 2, 2)), rng.normal(size=(size, 2))
    for reduce in (None, "sum"):
        out = net.derive().numeric(style="layers", reduce=reduce)(x, y, params)
        assert {name: grad.dtype for name, grad in out.grads.items()} == dict.fromkeys(out.grads, np.float64)
        assert not out.grads["W1"].any() and not out.grads["x"].any()
    # the dense layer reads zeros: its loss is that of output 0, its gradient y's outer zeros
    assert out.loss == pytest.approx(0.5 * (y**2).sum())
    assert_same_gradients(out, *torch_reduced_loss_and_grads(net, x, y, params, "sum"), rtol=1e-12)


def test_chunks_on_threads_give_the_numbers_of_chunks_in_turn(rng, monkeypatch):
    module, x, y, params = dilated_conv_module(rng, 9)
    # chunks of 2 samples, each as much work as a thread needs
    programs = module._PROGRAMS._replace(batch_chunk=2, sample_bytes=module.THREADS_FROM_BYTES)
    monkeypatch.setattr(module, "_PROGRAMS", programs)
    monkeypatch.setitem(module._RUNNING, "controller", None)  # as without threadpoolctl
    in_turn = {reduce: module.loss_and_grads(x, y, params, reduce) for reduce in (None, "sum")}
    monkeypatch.delitem(module._RUNNING, "controller")
    monkeypatch.setattr(module, "_blas_threads", lambda controller: 2)
    for reduce, expected in in_turn.items():
        out = module.loss_and_grads(x, y, params, reduce)
        assert_same_gradients(out, *expected, rtol=0)  # the same sums in the same order
    assert module._RUNNING["pool"][1] == 2


def test_chunks_run_on_threads_each_with_a_one_thread_blas():
    seen = []

    def chunk(part):
        blas = chunks._blas_controller().info()  # numpy's BLAS among them
        seen.append((threading.current_thread().name, {info["num_threads"] for info in blas}))
        return part.start

    parts = [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert chunks._map_chunks(chunk, parts, chunks._blas_controller(), 2) == [0, 2, 4]
    assert {name.split("_")[0] for name, _ in seen} == {"gradients"}
    assert all(threads == {1} for _, threads in seen)
    loaded = {info["filepath"] for info in threadpoolctl.threadpool_info()}
    numpy_blas = {path for path in loaded if "numpy" in path}  # numpy's wheels ship theirs
    assert numpy_blas <= {info["filepath"] for info in chunks._blas_controller().info()}


# jax (imported by other tests) and python 3.12 warn of any fork of a process with threads;
# the child here runs numpy alone
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning", "ignore:This process:DeprecationWarning")
def test_a_forked_child_runs_a_batch_on_threads_after_its_parent_did(rng, monkeypatch):
    # multiprocessing's default on Linux forks: the child inherits the parent's chunk pool but
    # none of its threads, and work handed to that pool would wait for ever
    module, x, y, params = dilated_conv_module(rng, 9)
    programs = module._PROGRAMS._replace(batch_chunk=2, sample_bytes=module.THREADS_FROM_BYTES)
    monkeypatch.setattr(module, "_PROGRAMS", programs)
    monkeypatch.setattr(module, "_blas_threads", lambda controller: 2)
    expected = module.loss_and_grads(x, y, params, "sum")
    assert module._RUNNING["pool"][1] == 2  # the parent's pool, its threads started
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)

    def child():
        out = module.loss_and_grads(x, y, params, "sum")
        sender.send((out.loss, out.grads, module._RUNNING["pool"][1]))

    process = context.Process(target=child)
    process.start()
    try:
        assert receiver.poll(60), "the forked child hangs on its parent's chunk pool"
        loss, grads, threads = receiver.recv()
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
    assert process.exitcode == 0 and threads == 2  # its own pool of two threads
    assert loss == expected.loss
    for name, grad in expected.grads.items():
        np.testing.assert_array_equal(grads[name], grad)


def test_a_batch_is_cut_into_a_chunk_for_each_thread_at_least(rng, monkeypatch):
    module, x, y, params = dilated_conv_module(rng, 5)
    assert module._PROGRAMS.batch_chunk >= 5
    sizes = []
    program = module._PROGRAMS.layers
    counted = module._PROGRAMS._replace(
        layers=lambda x, *rest: sizes.append(len(x)) or program(x, *rest),
        sample_bytes=module.THREADS_FROM_BYTES // 2,  # 2 samples: as much work as a thread needs
    )
    monkeypatch.setattr(module, "_PROGRAMS", counted)
    monkeypatch.setattr(module, "_blas_threads", lambda controller: 2)
    module.loss_and_grads(x, y, params, "sum")
    assert sizes == [3, 2]
    monkeypatch.setattr(module, "_blas_threads", lambda controller: 1)  # OPENBLAS_NUM_THREADS=1
    module.loss_and_grads(x, y, params, "sum")
    assert sizes[2:] == [5]
    monkeypatch.setattr(module, "_blas_threads", lambda controller: 2)
    monkeypatch.setattr(module, "_PROGRAMS", counted._replace(sample_bytes=1000))  # too little
    module.loss_and_grads(x, y, params, "sum")
    assert sizes[3:] == [5]


def test_calls_from_several_threads_at_once_leave_the_blas_as_they_found_it(rng, monkeypatch):
    module, x, y, params = dilated_conv_module(rng, 8)
    programs = module._PROGRAMS._replace(batch_chunk=2, sample_bytes=module.THREADS_FROM_BYTES)
    monkeypatch.setattr(module, "_PROGRAMS", programs)
    expected = module.loss_and_grads(x, y, params, "sum")
    blas = module._blas_controller()
    before = [info["num_threads"] for info in blas.info()]
    results = []

    def train():
        results.extend(module.loss_and_grads(x, y, params, "sum") for _ in range(20))

    callers = [threading.Thread(target=train) for _ in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(results) == 60
    for out in results:
        assert_same_gradients(out, expected.loss, expected.grads, rtol=1e-13)
    assert [info["num_threads"] for info in blas.info()] == before


def test_while_another_call_holds_the_blas_a_call_runs_its_chunks_in_turn():
    blas = chunks._blas_controller()
    names = []
    # as another thread's call does
    with chunks._this_process()["holding"], blas.limit(limits=1, user_api="blas"):
        chunks._map_chunks(
            lambda part: names.append(threading.current_thread().name), [slice(0, 1)] * 3,
            blas, 2,
        )
        assert {info["num_threads"] for info in blas.info()} == {1}  # the holder's limit
    assert names == [threading.current_thread().name] * 3


def test_chunks_run_in_turn_on_one_thread():
    names = chunks._map_chunks(
        lambda part: threading.current_thread().name, [slice(0, 1)] * 3, None, 1
    )
    assert names == [threading.current_thread().name] * 3


def test_every_operation_says_how_many_values_a_sample_its_code_holds():
    # batch_chunk asks each operation (code_values is in ops.base.FACES, so test_ops names
    # an operation that lacks it)
    conv = sb.Conv2D(kernel_size=3, out_channels=4)
    # as its matrix, its windows' values all the same: its products do that work
    assert conv.runs_as_matrix((1, 8, 8)) and conv.code_values((1, 8, 8)) == 9 * 6 * 6
    assert conv.code_values((1, 30, 30)) == 9 * 28 * 28  # on windows: 9 values for each of 28 x 28


def test_chunks_keep_the_largest_array_near_four_megabytes():
    def chunk(size: int, channels: int) -> int:
        conv = sb.Conv2D(kernel_size=3, out_channels=channels, activation="sigmoid")
        return layers.batch_chunk(sb.Network((1, size, size), [conv, sb.Dense(units=10)], "sse"))

    # 1x8x8 -> conv 3x3 x4, run as its matrix: its windows' 9 x 36 values a sample, 2.6 kB:
    # all 1024 at once
    assert chunk(8, 4) == 1024
    # 1x30x30 -> conv 3x3 x8 on windows: 9 x 784 values a sample, 56 kB: 64 fill 3.6 MB
    assert chunk(30, 8) == 64
    # LeNet-5's first windows take 157 kB a sample: 26 would fill 4 MB, but no fewer than 32
    assert layers.batch_chunk(sb.presets.lenet5()) == 32


# ---- against the per-node program --------------------------------------------------------------


@given(networks())
@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_per_layer_code_equals_the_per_node_program(net):
    rng = np.random.default_rng(11)
    _, _, params = draw_point(net, rng)
    x, y = batch(net, rng, 3)
    d = net.derive()
    by_layer = d.numeric(style="layers")(x, y, params)
    assert_same_gradients(by_layer, *d.numeric(style="nodes")(x, y, params), rtol=1e-12)


# ---- no block writes into an array another layer holds ---------------------------------------


def frozen_between_blocks(source: str) -> str:
    """The module ``source`` with its per-layer program changed so that, as each block begins
    (a layer's forward or backward pass, the loss), every array the program has assigned so
    far at its top level — the inputs, the parameters, each layer's values and every gradient
    sent back — is rebound to a read-only view of itself. A block that writes into an array
    it was given then raises, whoever else holds it: an addition hands one dL/da to each of
    its inputs, a concatenation hands out slices, a node read twice keeps its value."""
    head, rest = source.split("def _layers(", 1)
    program, tail = rest.split("\n\n\n", 1)  # the function's body has no two blank lines
    lines, assigned = [], []
    for line in program.splitlines():
        lines.append(line)
        if re.match(r"    # ---- (layer \d+ (forward|backward)|the loss)", line):
            lines += [f"    {name} = _frozen({name})" for name in assigned]
        top = re.match(r"    (\w+) = ", line)  # at the top level: in every run, both branches
        if top and top.group(1) not in assigned and top.group(1) != "B":
            assigned.append(top.group(1))
    return head + "def _layers(" + "\n".join(lines) + "\n\n\n" + tail


def _frozen(value):
    if isinstance(value, np.ndarray):
        value = value.view()
        value.flags.writeable = False
    return value


def module_of(source: str) -> ModuleType:
    module = ModuleType("frozen_gradients")
    exec(compile(source, "<frozen gradients>", "exec"), module.__dict__)  # noqa: S102 (ours)
    module._frozen = _frozen
    return module


ALIASING = {
    **{name: build for name, build in GRAPHS.items()},
    "resnet_tiny": sb.presets.resnet_tiny,
    **{f"{name}, {form}": (name, form) for name, form in CASES},
}


@pytest.mark.parametrize("name", list(ALIASING))
def test_no_block_writes_into_an_array_another_layer_holds(name, rng, monkeypatch):
    if isinstance(ALIASING[name], tuple):
        operation, form = ALIASING[name]
        monkeypatch.setattr(sb.Conv2D, "MATRIX_LIMIT", FORMS[form])
        net = network(OPERATIONS[operation])
    else:
        net = ALIASING[name]()
    source = numeric.module_source(net.derive(), style="layers")
    plain, frozen = module_of(source), module_of(frozen_between_blocks(source))
    assert "    a1 = _frozen(a1)\n" in frozen_between_blocks(source)
    _, _, params = draw_point(net, rng)
    for size in (1, 3):
        x, y = batch(net, rng, size, ties=True)
        for reduce in (None, "sum"):  # per sample and summed: both branches of each block
            expected = plain.loss_and_grads(x, y, params, reduce)
            assert_same_gradients(frozen.loss_and_grads(x, y, params, reduce), *expected, rtol=0)


def test_the_check_catches_a_block_writing_into_the_gradient_an_addition_shared(rng, monkeypatch):
    # A residual MLP: a = x + tanh(W1 x); the addition hands one dL/da to x and to tanh's
    # output. An activation that multiplied dL/da by g'(z) in place would change what x got
    # too, and x's gradient would come out wrong without an error anywhere.
    def in_place(function, z, a, da, dz):
        forward, _ = activation_code(function, z, a, da, dz)
        return forward, [f"{da} *= {function}_prime({z}, {a})", f"{dz} = {da}"]

    monkeypatch.setattr(layers, "activation_code", in_place)
    net = GRAPHS["a residual MLP"]()
    source = numeric.module_source(net.derive(), style="layers")
    assert "    da1 = da2\n" in source and "    da1 *= tanh_prime(z1, a1)\n" in source
    x, y, params = draw_point(net, rng)
    wrong = module_of(source).loss_and_grads(x, y, params)
    right = torch_loss_and_grads(net, x, y, params)[1]
    assert not np.allclose(wrong.grads["x"], right["x"])
    assert np.allclose(wrong.grads["W3"], right["W3"])  # after the addition: still right
    with pytest.raises(ValueError, match="read-only"):
        module_of(frozen_between_blocks(source)).loss_and_grads(x, y, params)


# ---- LeNet-5 -------------------------------------------------------------------------------------


def test_lenet5_code_is_printed_without_building_the_scalar_graph(monkeypatch, rng):
    def refuse(self, number):
        raise AssertionError(f"the scalar graph of layer {number} was built")

    monkeypatch.setattr(Graph, "_build_layer", refuse)
    net = sb.presets.lenet5()
    source = numeric.module_source(net.derive())  # the default: per layer for LeNet-5
    assert "def _layers(" in source and "def _nodes(" not in source
    assert "# ---- layer 3 forward: conv 16x5x5, stride 1x1, padding 0x0, bias, tanh" in source


def test_lenet5_matches_torch_per_sample_and_summed(rng):
    net = sb.presets.lenet5()
    _, _, params = draw_point(net, rng)
    x, y = batch(net, rng, 3)
    d = net.derive()
    assert_same_gradients(d.numeric()(x, y, params), *torch_batch_loss_and_grads(net, x, y, params))
    summed = d.numeric(reduce="sum")(x, y, params)
    assert_same_gradients(summed, *torch_reduced_loss_and_grads(net, x, y, params, "sum"))


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_the_module_grows_with_the_layers_not_the_image():
    def source(size: int, layers: int) -> str:
        convs = [sb.Conv2D(kernel_size=3, out_channels=4, padding=1, activation="relu")] * layers
        net = sb.Network((1, size, size), [*convs, sb.MaxPool2D(kernel_size=2), sb.Dense(units=10)], "mse")
        return numeric.module_source(net.derive(), style="layers")

    def lines(text: str) -> int:
        return len(text.splitlines())

    # Small convolutions run as their matrix, larger ones on their windows: each form's text
    # is the same whatever the image.
    small, large = source(4, 2), source(32, 2)
    assert "T1 = _conv_matrix(W1," in small and "T1 = " not in large
    assert lines(small) == lines(source(5, 2)) and lines(large) == lines(source(64, 2))
    assert lines(source(32, 3)) > lines(large)


def test_a_convolution_sends_its_input_gradient_back_the_cheaper_way():
    source = numeric.module_source(sb.presets.resnet_tiny().derive())
    # 8 -> 8 channels, stride 1: dL/dz's windows (zeros around) times the kernel turned 180°,
    # a product over o, m, n as z's is over c, m, n
    assert (
        "    # dL/da1[c,u,v,b] = sum_(o,m,n) W2[o,c,2-m,2-n] * dL/dz2[o, u + m - 1, v + n - 1, b]:\n"
        "    # the windows of dL/dz2 (zeros around) times the kernel turned 180°, channels swapped\n"
        "    d_cols = _columns(_pad(dz2, (1, 1)), (3, 3), (1, 1), (1, 1))  # (72, 256·B)\n"
        "    turned = W2[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(8, 72)\n"
        "    da1_2 = (turned @ d_cols).reshape(8, 16, 16, B)\n"
    ) in source
    # 3 -> 8 channels (dL/dz's windows would be larger than x's) and stride 2: added back
    assert "    dx = _unpad(_add_windows(d_windows, (3, 18, 18, B), (1, 1), (1, 1)), (1, 1))\n" in source
    assert "    da5_6 = _unpad(_add_windows(d_windows, (8, 18, 18, B), (2, 2), (1, 1)), (1, 1))\n" in source
    assert sb.Conv2D(kernel_size=3, padding=2, out_channels=4).transposed_padding((4, 6, 6)) == (0, 0)
    assert sb.Conv2D(kernel_size=3, padding=3).transposed_padding((1, 6, 6)) is None  # past the span


def test_each_block_names_the_formula_it_computes():
    net = sb.Network(
        (1, 6, 6),
        [sb.Conv2D(kernel_size=3, stride=2, padding=1, bias=True, activation="sigmoid"),
         sb.MaxPool2D(kernel_size=2), sb.Dense(units=2)],
        "sse",
    )
    source = numeric.module_source(net.derive(), style="layers")
    assert "    # z1[o,i,j,b] = sum_(c,m,n) W1[o,c,m,n] * x[c, 2i + m - 1, 2j + n - 1, b] + b1[o]" in source
    assert "    # a2[c,i,j,b] = max_(m,n) a1[c, 2i + m, 2j + n, b]\n" in source
    assert "    # z3[f,b] = sum_n W3[f,n] * flat3[n,b]\n" in source
    assert "    dz1 = sigmoid_backward(z1, a1, da1)  # dL/dz = g'(z) dL/da, a new array\n" in source
    assert "    z1 += b1[:, None, None, None]  # in place: z is new\n" in source
    assert max(len(line) for line in source.splitlines()) <= 100
