"""Benchmark: the generated numeric code against PyTorch (and jax.jit when installed).

    python benchmarks/numeric.py [--quick] [--networks A,B,C,LeNet-5,resnet_tiny,...]
                                 [--dtype float64,float32] [--threads 2] [--rounds 5]

Everything runs in one process, on the CPU with 2 threads (numpy's BLAS, torch and XLA
alike; ``--threads 1`` for one), in each dtype asked for (``--dtype``, float64 by default;
the baselines in the same dtype), and every ratio is against a baseline measured in the
same run (baseline time / our time; above 1 is faster than the baseline):

* the small batch — one sample (``d.numeric()``, its default style; both styles apart on
  the small networks), or 8 for a network whose batch normalisation runs on the batch's
  statistics (``reduce="sum"``) — against torch's ``backward`` of the loss;
* batch 1024, ``reduce="sum"`` — against torch's ``backward`` of the batch's summed loss
  (and ``jax.jit`` of ``jax.grad`` of the same loss, written in jax.numpy, when jax is
  installed);
* batch 1024, ``reduce=None`` — per-sample gradients, against ``torch.func``
  (``vmap(grad(...))``); not for batch normalisation in train mode, which refuses them
  (a sample's loss depends on the whole batch).

Networks: A the article's (g = sigmoid, loss = sse); B = 1x8x8 -> conv 3x3 x4 -> conv 3x3 x4
-> dense 10; C = 1x16x16 -> conv 3x3 x8 -> conv 3x3 stride 2 x8 -> dense 10 (both sigmoid,
sse); the presets LeNet-5, resnet_tiny (a graph: two residual blocks), resnet_tiny_bn
(``resnet_tiny(batch_norm=True)`` in train mode: torch's BatchNorm2d in train mode too),
fcn_tiny and unet_tiny (a 2x16x16 score map, cross-entropy per pixel: torch's
``CrossEntropyLoss(reduction="sum")`` on (N, C, H, W) with probability targets). It also
prints the achieved GFLOP/s beside this machine's matmul rate in the same dtype (the
practical limit), the generated module's size and generation time, and LeNet-5's peak
memory at batch 1024.

float32 needs ``d.numeric(dtype=...)``: where this build's numeric code takes no dtype, the
float32 half says so and measures nothing. Times are the best of 5 rounds (``--rounds``) that
go round the methods in turn, so a burst of load elsewhere hits them all alike, each timed
after a quarter of a second of its own calls (so that the previous method's spinning
threads have stopped); on a machine shared with other work, more rounds give each method
more chances of a quiet one.
"""

from __future__ import annotations

import os
import sys

# The thread count must be set before numpy loads its BLAS (and before jax starts XLA).
THREADS = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 2
for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = str(THREADS)
if THREADS == 1:
    os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

import argparse
import inspect
import time
import timeit
import tracemalloc

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

import symbackprop as sb
from symbackprop import numeric, torch_bridge
from symbackprop.verify import draw_point

BATCH = 1024
SIGMOID = {"activation": "sigmoid"}


def networks() -> dict[str, tuple[sb.Network, dict[str, str]]]:
    """name -> (network to derive, the choices for its generic g and loss)."""
    b = sb.Network(
        (1, 8, 8),
        [sb.Conv2D(kernel_size=3, out_channels=4, **SIGMOID),
         sb.Conv2D(kernel_size=3, out_channels=4, **SIGMOID), sb.Dense(units=10, **SIGMOID)],
        loss="sse", name="B",
    )
    c = sb.Network(
        (1, 16, 16),
        [sb.Conv2D(kernel_size=3, out_channels=8, **SIGMOID),
         sb.Conv2D(kernel_size=3, out_channels=8, stride=2, **SIGMOID), sb.Dense(units=10, **SIGMOID)],
        loss="sse", name="C",
    )
    return {
        "A": (sb.presets.article(), {"g": "sigmoid", "loss": "sse"}),
        "B": (b, {}),
        "C": (c, {}),
        "LeNet-5": (sb.presets.lenet5(), {}),
        "resnet_tiny": (sb.presets.resnet_tiny(), {}),
        "resnet_tiny_bn": (sb.presets.resnet_tiny(batch_norm=True), {}),
        "fcn_tiny": (sb.presets.fcn_tiny(), {}),
        "unet_tiny": (sb.presets.unet_tiny(), {}),
    }


DTYPES = ("float64", "float32")
NETWORKS = "A,B,C,LeNet-5,resnet_tiny,resnet_tiny_bn,fcn_tiny,unet_tiny"


def takes_dtype() -> bool:
    """Whether this build's numeric code has a float32 path (``d.numeric(dtype=...)``)."""
    return "dtype" in inspect.signature(sb.Derivation.numeric).parameters


def small_batch(net: sb.Network) -> int:
    """The small batch measured: one sample, or 8 (the smallest batch people train with it)
    where batch normalisation runs on the batch's statistics."""
    return 8 if net.couples_samples else 1


def targets(net: sb.Network, rng: np.random.Generator, size: int) -> np.ndarray:
    """y (size, K): for cross-entropy a probability vector per sample, or per pixel over the
    channels of a map (laid out (C, H, W) and flattened, as the network's output is)."""
    shape = net.shapes[-1]
    if net.loss != "cross_entropy":
        return rng.normal(size=(size, net.output_size))
    if len(shape) == 3:
        channels, height, width = shape
        per_pixel = rng.dirichlet(np.ones(channels), size=(size, height, width))
        return per_pixel.transpose(0, 3, 1, 2).reshape(size, -1)
    return rng.dirichlet(np.ones(net.output_size), size=size)


def best_times(calls: dict, budget: float) -> dict[str, float]:
    """The best time per call of each method over ROUNDS rounds of ~budget/5 seconds each,
    each round timed after SETTLE seconds of the same method's calls, untimed (see SETTLE)."""
    timers = {method: timeit.Timer(call) for method, call in calls.items()}
    numbers, settling = {}, {}
    for method, timer in timers.items():
        number, elapsed = timer.autorange()
        per_call = max(elapsed, 1e-9) / number
        numbers[method] = max(1, int(budget / 5 / per_call))
        settling[method] = max(1, int(SETTLE / per_call))
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(ROUNDS):
        for method, timer in timers.items():
            timer.timeit(settling[method])
            best[method] = min(best[method], timer.timeit(numbers[method]) / numbers[method])
    return best


ROUNDS = 5  # --rounds

# After a call, OpenBLAS's threads spin for up to ~0.1 s (2^28 cycles) before they sleep, and
# take a core from whatever runs next: torch's backward of network B measured right after
# numpy's 2-thread BLAS took 6.9 ms against 5.2 alone. Each method first runs this long
# untimed, so that it is timed on cores the previous method has let go of.
SETTLE = 0.25


def flops(net: sb.Network, batch: int) -> int:
    """Floating-point operations of one forward and backward pass: 2 per multiply-add of every
    layer with weights, three times (z, ∂L/∂W, ∂L/∂input); pooling and activations left out.
    The multiply-adds are the layer's (input, output) pairs (``Op.connections``), padding
    places and a transposed convolution's inserted zeros not counted."""
    total = 0
    for number, layer in enumerate(net.layers, start=1):
        shape = net.input_shape_of(number)
        if layer.parameter_shapes(shape):
            total += 3 * 2 * sum(len(node.inputs) for node in layer.connections(shape))
    return total * batch


def matmul_rate(budget: float, dtype: str = "float64") -> float:
    """This machine's matrix product rate (GFLOP/s) in ``dtype``, 1024 x 1024 times 1024 x 1024."""
    a, b = (np.random.rand(1024, 1024).astype(dtype) for _ in range(2))
    seconds = best_times({"matmul": lambda: a @ b}, budget)["matmul"]
    return 2 * 1024**3 / seconds / 1e9


# ---- the baselines --------------------------------------------------------------------------


def torch_calls(net: sb.Network, params, x, y, dtype: str = "float64") -> dict:
    """torch's backward of the summed loss (x's gradient included), and torch.func's
    per-sample gradients (not where batch normalisation couples the samples), as calls
    without arguments, in ``dtype``. A map's cross-entropy is torch's own on (N, C, H, W)."""
    model = torch_bridge.to_torch(net, params).to(getattr(torch, dtype))
    loss = torch_bridge.torch_loss(net)
    tx, ty = torch.tensor(x, dtype=getattr(torch, dtype)), torch.tensor(y, dtype=getattr(torch, dtype))
    size, shape = len(x), tuple(net.shapes[-1])
    if net.loss == "cross_entropy":  # torch's CrossEntropyLoss, summed over the batch (and pixels)
        summed = torch.nn.CrossEntropyLoss(reduction="sum")
        ty_summed = ty.reshape(size, *shape)

        def backward():
            model.zero_grad()
            inputs = tx.clone().requires_grad_()
            summed(model(inputs).reshape(size, *shape), ty_summed).backward()
            return inputs.grad
    else:
        def backward():
            model.zero_grad()
            inputs = tx.clone().requires_grad_()
            loss(model(inputs).reshape(size, -1), ty).sum().backward()
            return inputs.grad

    if net.couples_samples:
        return {"torch backward": backward}

    weights = {name: p.detach() for name, p in model.named_parameters()}

    def one(p, xs, ys):
        return loss(functional_call(model, p, (xs[None],)).reshape(1, -1), ys[None])[0]

    per_sample = vmap(grad(one, argnums=(0, 1)), in_dims=(None, 0, 0))
    return {"torch backward": backward, "torch.func": lambda: per_sample(weights, tx, ty)}


def jax_call(net: sb.Network, params, x, y, dtype: str = "float64"):
    """jax.jit of jax.grad of the summed loss, the network written in jax.numpy from its
    torch twin: each layer's torch modules (``Op.torch_twin``, then its activation's) as jax
    functions, joined as the operation says (``Op.torch_apply``, given a stand-in for torch
    that concatenates with jax); None without jax, or where a module has no jax twin here
    (batch normalisation, transposed convolution, upsampling: said once)."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    written = {"Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten", "Identity",
               "Sigmoid", "Tanh", "ReLU", "Softplus", "LeakyReLU"}
    for number, layer in enumerate(net.layers, start=1):
        for kind, _ in layer.torch_twin(net.input_shape_of(number)):
            if kind not in written:
                print(f"   jax.jit: no jax twin of {kind} written here; {net.name} not timed in jax")
                return None
    from symbackprop.activations import activation as activation_named

    def conv(p, settings, weight, bias):
        (ph, pw) = settings["padding"]

        def apply(h):
            h = jax.lax.conv_general_dilated(
                h, p[weight], settings["stride"], [(ph, ph), (pw, pw)],
                rhs_dilation=settings["dilation"],
            )
            return h + p[bias][None, :, None, None] if settings["bias"] else h
        return apply

    def linear(p, settings, weight, bias):
        return lambda h: h @ p[weight].T + (p[bias] if settings["bias"] else 0)

    def pool(kind, settings):
        (kh, kw), (sh, sw), (ph, pw) = settings["kernel_size"], settings["stride"], settings["padding"]
        window, strides = (1, 1, kh, kw), (1, 1, sh, sw)
        padding = ((0, 0), (0, 0), (ph, ph), (pw, pw))
        if kind == "MaxPool2d":
            return lambda h: jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, window, strides, padding)
        return lambda h: jax.lax.reduce_window(h, 0.0, jax.lax.add, window, strides, padding) / (kh * kw)

    elementwise = {
        "Identity": lambda z: z, "Sigmoid": jax.nn.sigmoid, "Tanh": jnp.tanh,
        "ReLU": jax.nn.relu, "Softplus": jax.nn.softplus,
        "LeakyReLU": lambda z: jax.nn.leaky_relu(z, 0.01),
    }

    def modules(p, number, layer):
        """Layer ``number``'s torch twin as jax functions of one input each."""
        twin = list(layer.torch_twin(net.input_shape_of(number)))
        if layer.has_activation and layer.activation != "identity":
            twin.append(activation_named(layer.activation).torch)
        names = net.layer_parameters(number)
        held = {parameter.torch: names.get(parameter.prefix) for parameter in layer.parameters}
        functions = []
        for kind, settings in twin:
            if kind == "Conv2d":
                functions.append(conv(p, settings, held.get("weight"), held.get("bias")))
            elif kind == "Linear":
                functions.append(linear(p, settings, held.get("weight"), held.get("bias")))
            elif kind in ("MaxPool2d", "AvgPool2d"):
                functions.append(pool(kind, settings))
            elif kind == "AdaptiveAvgPool2d":  # output_size 1: the mean of each channel
                functions.append(lambda h: h.mean(axis=(2, 3), keepdims=True))
            elif kind == "Flatten":
                functions.append(lambda h: h.reshape(h.shape[0], -1))
            else:
                functions.append(elementwise[kind])
        return functions

    class Joins:
        """What ``Op.torch_apply`` asks of torch, in jax."""

        @staticmethod
        def cat(values, dim):
            return jnp.concatenate(values, axis=dim)

    def forward(p, h):
        outputs = [h]
        for number, (layer, sources) in enumerate(zip(net.layers, net.sources), start=1):
            inputs = [outputs[source] for source in sources]
            outputs.append(layer.torch_apply(Joins, modules(p, number, layer), inputs))
        return outputs[-1].reshape(outputs[-1].shape[0], -1)

    def loss(p, xs, ys):
        out = forward(p, xs)
        if net.loss == "cross_entropy":  # a map's: the softmax over its channels, per pixel
            shape = (len(out), *net.shapes[-1])
            return -(ys.reshape(shape) * jax.nn.log_softmax(out.reshape(shape), axis=1)).sum()
        if net.loss == "mse":
            return ((out - ys) ** 2).mean(axis=1).sum()
        return 0.5 * ((out - ys) ** 2).sum()

    step = jax.jit(jax.grad(loss, argnums=(0, 1)))
    jp = {name: jnp.asarray(value, dtype=dtype) for name, value in params.items()}
    jx, jy = jnp.asarray(x, dtype=dtype), jnp.asarray(y, dtype=dtype)
    step(jp, jx, jy)[1].block_until_ready()  # compile once, outside the timing
    return lambda: step(jp, jx, jy)[1].block_until_ready()


# ---- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing rounds")
    parser.add_argument("--networks", default=NETWORKS, help="which networks, comma-separated")
    parser.add_argument("--dtype", default="float64",
                        help="float64, float32 or both (float64,float32): one table each")
    parser.add_argument("--threads", type=int, default=2, help="threads for numpy, torch and jax")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per measurement; the best counts")
    args = parser.parse_args()
    dtypes = args.dtype.split(",")
    for dtype in dtypes:
        if dtype not in DTYPES:
            parser.error(f"--dtype {dtype}: choose from {', '.join(DTYPES)}")
    names = args.networks.split(",")
    for name in names:
        if name not in networks():
            parser.error(f"--networks: no network {name!r}; choose from {NETWORKS}")
    global ROUNDS
    ROUNDS = args.rounds
    budget = 0.3 if args.quick else 1.5  # seconds per measurement
    torch.set_num_threads(THREADS)
    torch.set_default_dtype(torch.float64)
    try:
        import jax

        jax_version = f"jax {jax.__version__}"
    except ImportError:
        jax_version = "jax not installed"
    print(
        f"numpy {np.__version__} (BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), {jax_version}, "
        f"python {sys.version.split()[0]}; best of {ROUNDS} rounds; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {_load()}"
    )
    for dtype in dtypes:
        if dtype != "float64" and not takes_dtype():
            print(f"\n{dtype}: {dtype} code not available in this build (d.numeric takes no dtype=); "
                  "nothing measured")
            continue
        peak = matmul_rate(budget, dtype)
        print(f"\n{dtype}: matmul (1024x1024 @ 1024x1024) {peak:.1f} GFLOP/s\n")
        rng = np.random.default_rng(0)
        rows = [measure(name, budget, rng, dtype) for name in names]
        print(f"{dtype}, {_load()}\n")
        print_table(rows, peak, dtype)


def _if_taken(function, keywords: dict) -> dict:
    """The keywords ``function`` takes (a module's text and compilation may not take dtype=
    where d.numeric does)."""
    taken = inspect.signature(function).parameters
    return {name: value for name, value in keywords.items() if name in taken}


def _load() -> str:
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def measure(name: str, budget: float, rng: np.random.Generator, dtype: str = "float64") -> dict:
    """Time one network at its small batch and at 1024 against the baselines, in ``dtype``;
    print and return a row."""
    spec, choices = networks()[name]
    net = spec.with_choices(**choices)
    typed = {"dtype": dtype} if dtype != "float64" else {}  # float64 runs on any build
    tracemalloc.start()
    start = time.perf_counter()
    d = spec.derive()
    source = numeric.module_source(d, **_if_taken(numeric.module_source, typed))
    numeric.compiled(d, **_if_taken(numeric.compiled, typed))
    generated = time.perf_counter() - start
    generation_memory = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    styles = numeric.resolve_style(spec, None)
    _, _, params = draw_point(net, rng)
    params = {name: value.astype(dtype) for name, value in params.items()}
    x = rng.normal(size=(BATCH, *net.input_shape)).astype(dtype)
    y = targets(net, rng, BATCH).astype(dtype)
    coupled = net.couples_samples
    small = small_batch(net)
    work = flops(net, BATCH)
    print(
        f"{name}: {' -> '.join(layer.describe() for layer in net.layers)}, loss {net.loss}; "
        f"{net.parameter_count} weights\n"
        f"   module ({' + '.join(styles)}): {len(source) / 1000:.0f} kB, "
        f"{source.count(chr(10))} lines, derived, printed and compiled in {generated:.2f} s, "
        f"{generation_memory:.0f} MB at most"
    )
    # the small batch: one sample (C, H, W), or a batch of 8 summed
    if coupled:
        f = d.numeric(reduce="sum", **choices, **typed)
        one = {"ours": lambda: f(x[:small], y[:small], params)}
    else:
        f = d.numeric(**choices, **typed)
        one = {"ours": lambda: f(x[0], y[0], params)}
    one["torch backward"] = torch_calls(net, params, x[:small], y[:small], dtype)["torch backward"]
    if len(styles) == 2:
        for style in styles:
            g = d.numeric(style=style, **choices, **typed)
            one[f"ours, {style}"] = lambda g=g: g(x[0], y[0], params)
    t1 = best_times(one, budget)
    # batch 1024, summed and per sample
    summed = d.numeric(reduce="sum", **choices, **typed)
    calls = {"ours sum": lambda: summed(x, y, params)}
    if not coupled:
        per_sample = d.numeric(**choices, **typed)
        calls["ours per-sample"] = lambda: per_sample(x, y, params)
    calls.update(torch_calls(net, params, x, y, dtype))
    jax_step = jax_call(net, params, x, y, dtype)
    if jax_step is not None:
        calls["jax.jit"] = jax_step
        ours_jax = d.numeric(reduce="sum", backend="jax", **choices, **typed)
        ours_jax(x, y, params)  # compiled once, outside the timing
        calls["ours, jax backend"] = lambda: ours_jax(x, y, params)
    tb = best_times(calls, budget)
    for method, t in t1.items():
        print(f"   batch {small:<5}{method:<18}{t * 1e6:9.0f} us  torch / this "
              f"{t1['torch backward'] / t:6.2f}")
    for method, t in tb.items():
        print(f"   batch {BATCH} {method:<18}{t * 1e3:9.2f} ms  "
              f"{work / t / 1e9:6.1f} GFLOP/s  torch / this {tb['torch backward'] / t:6.2f}")
    row = {
        "name": name, "kB": len(source) / 1000, "generate": generated, "small": small,
        "one": t1["ours"], "one torch": t1["torch backward"],
        "sum": tb["ours sum"], "sum torch": tb["torch backward"], "jax": tb.get("jax.jit"),
        "ours jax": tb.get("ours, jax backend"),
        "per-sample": tb.get("ours per-sample"), "torch.func": tb.get("torch.func"),
        "gflops": work / tb["ours sum"] / 1e9,
    }
    if name == "LeNet-5":
        row["memory"] = {
            reduce: peak_memory(lambda r=reduce: d.numeric(reduce=r, **typed)(x, y, params))
            for reduce in ("sum", None)
        }
    print()
    return row


def peak_memory(call) -> float:
    """The largest memory numpy held during the call, in MB (tracemalloc sees its arrays)."""
    tracemalloc.start()
    call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6


def print_table(rows: list[dict], peak: float, dtype: str = "float64") -> None:
    """The summary as a Markdown table (what README's Benchmarks section shows): each cell
    ours, the baseline, and the baseline's time over ours (above 1: we are faster)."""
    jax = any(row["jax"] for row in rows)
    header = (
        f"| {dtype} | batch 1 (8 with batch norm): ours / torch | batch 1024 sum: ours / torch"
        + (" | batch 1024 sum: jax.jit, ours with jax" if jax else "")
        + " | batch 1024 per sample: ours / torch.func"
        + f" | GFLOP/s (matmul {peak:.0f}) | module |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in rows:
        jax_cells = ""
        if jax:
            jax_cells = (
                f" | {r['jax'] * 1e3:.2f} ms ({r['jax'] / r['sum']:.2f}x), "
                f"{r['ours jax'] * 1e3:.2f} ms" if r["jax"] else " | —"
            )
        if r["per-sample"] is None:
            per_sample = "refused (batch statistics)"
        else:
            per_sample = (f"{_time(r['per-sample'])} / {_time(r['torch.func'])}: "
                          f"{r['torch.func'] / r['per-sample']:.2f}x")
        small = "" if r["small"] == 1 else f" (batch {r['small']})"
        print(
            f"| {r['name']} "
            f"| {_time(r['one'])} / {_time(r['one torch'])}: {r['one torch'] / r['one']:.1f}x{small} "
            f"| {_time(r['sum'])} / {_time(r['sum torch'])}: {r['sum torch'] / r['sum']:.2f}x"
            f"{jax_cells} "
            f"| {per_sample} "
            f"| {r['gflops']:.1f} "
            f"| {r['kB']:.0f} kB, {r['generate']:.2f} s |"
        )
    for r in rows:
        if "memory" in r:
            print(f"\n{r['name']} peak memory at batch {BATCH}: reduce='sum' "
                  f"{r['memory']['sum']:.0f} MB, per sample {r['memory'][None]:.0f} MB")


def _time(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.1f} ms"


if __name__ == "__main__":
    main()
