"""Benchmark: the generated numeric code against PyTorch (and jax.jit when installed).

    python benchmarks/numeric.py [--quick] [--networks A,B,C,LeNet-5,resnet_tiny] [--threads 2] [--rounds 5]

Everything runs in one process, in float64 on the CPU with 2 threads (numpy's BLAS, torch
and XLA alike; ``--threads 1`` for one), and every ratio is against a baseline measured in
the same run
(baseline time / our time; above 1 is faster than the baseline):

* batch 1 — ``d.numeric()`` on one sample (its default style; both styles apart on the
  small networks) against torch's ``backward`` of the loss;
* batch 1024, ``reduce="sum"`` — against torch's ``backward`` of the batch's summed loss
  (and ``jax.jit`` of ``jax.grad`` of the same loss, written in jax.numpy, when jax is
  installed);
* batch 1024, ``reduce=None`` — per-sample gradients, against ``torch.func``
  (``vmap(grad(...))``).

Networks: A the article's (g = sigmoid, loss = sse); B = 1x8x8 -> conv 3x3 x4 -> conv 3x3 x4
-> dense 10; C = 1x16x16 -> conv 3x3 x8 -> conv 3x3 stride 2 x8 -> dense 10 (both sigmoid,
sse); LeNet-5 and resnet_tiny (the presets; resnet_tiny a graph: two residual blocks). It also prints the achieved GFLOP/s beside this machine's
float64 matmul rate (the practical limit), the generated module's size and generation time,
and LeNet-5's peak memory at batch 1024. Times are the best of 5 rounds (``--rounds``) that
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
import time
import timeit
import tracemalloc
from math import prod

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
    }


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
    layer with weights, three times (z, ∂L/∂W, ∂L/∂input); pooling and activations left out."""
    total = 0
    for number, (layer, out) in enumerate(zip(net.layers, net.shapes[1:]), start=1):
        shape = net.input_shape_of(number)
        if layer.parameter_shapes(shape):
            total += 3 * 2 * prod(out) * layer.window(shape)
    return total * batch


def matmul_rate(budget: float) -> float:
    """This machine's float64 matrix product rate (GFLOP/s), 1024 x 1024 times 1024 x 1024."""
    a, b = np.random.rand(1024, 1024), np.random.rand(1024, 1024)
    seconds = best_times({"matmul": lambda: a @ b}, budget)["matmul"]
    return 2 * 1024**3 / seconds / 1e9


# ---- the baselines --------------------------------------------------------------------------


def torch_calls(net: sb.Network, params, x, y) -> dict:
    """torch's backward of the summed loss (x's gradient included), and torch.func's
    per-sample gradients, as calls without arguments."""
    model = torch_bridge.to_torch(net, params)
    loss = torch_bridge.torch_loss(net)
    tx, ty = torch.tensor(x), torch.tensor(y)
    size = len(x)

    def backward():
        model.zero_grad()
        inputs = tx.clone().requires_grad_()
        loss(model(inputs).reshape(size, -1), ty).sum().backward()
        return inputs.grad

    weights = {name: p.detach() for name, p in model.named_parameters()}

    def one(p, xs, ys):
        return loss(functional_call(model, p, (xs[None],)).reshape(1, -1), ys[None])[0]

    per_sample = vmap(grad(one, argnums=(0, 1)), in_dims=(None, 0, 0))
    return {"torch backward": backward, "torch.func": lambda: per_sample(weights, tx, ty)}


def jax_call(net: sb.Network, params, x, y):
    """jax.jit of jax.grad of the summed loss, the network written in jax.numpy from its
    torch twin: each layer's torch modules (``Op.torch_twin``, then its activation's) as jax
    functions, joined as the operation says (``Op.torch_apply``, given a stand-in for torch
    that concatenates with jax); None without jax."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
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
        if net.loss == "cross_entropy":
            return -(ys * jax.nn.log_softmax(out, axis=1)).sum()
        if net.loss == "mse":
            return ((out - ys) ** 2).mean(axis=1).sum()
        return 0.5 * ((out - ys) ** 2).sum()

    step = jax.jit(jax.grad(loss, argnums=(0, 1)))
    jp = {name: jnp.asarray(value) for name, value in params.items()}
    jx, jy = jnp.asarray(x), jnp.asarray(y)
    step(jp, jx, jy)[1].block_until_ready()  # compile once, outside the timing
    return lambda: step(jp, jx, jy)[1].block_until_ready()


# ---- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing rounds")
    parser.add_argument("--networks", default="A,B,C,LeNet-5,resnet_tiny", help="which networks, comma-separated")
    parser.add_argument("--threads", type=int, default=2, help="threads for numpy, torch and jax")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per measurement; the best counts")
    args = parser.parse_args()
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
        f"python {sys.version.split()[0]}; float64; best of {ROUNDS} rounds; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    peak = matmul_rate(budget)
    print(f"float64 matmul (1024x1024 @ 1024x1024): {peak:.1f} GFLOP/s\n")
    rng = np.random.default_rng(0)
    rows = [measure(name, budget, rng) for name in args.networks.split(",")]
    print_table(rows, peak)


def measure(name: str, budget: float, rng: np.random.Generator) -> dict:
    """Time one network at batch 1 and 1024 against the baselines; print and return a row."""
    spec, choices = networks()[name]
    net = spec.with_choices(**choices)
    tracemalloc.start()
    start = time.perf_counter()
    d = spec.derive()
    source = numeric.module_source(d)
    numeric.compiled(d)
    generated = time.perf_counter() - start
    generation_memory = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    styles = numeric.resolve_style(spec, None)
    _, _, params = draw_point(net, rng)
    x = rng.normal(size=(BATCH, *net.input_shape))
    y = rng.dirichlet(np.ones(net.output_size), size=BATCH)
    print(
        f"{name}: {' -> '.join(layer.describe() for layer in net.layers)}, loss {net.loss}; "
        f"{net.parameter_count} weights\n"
        f"   module ({' + '.join(styles)}): {len(source) / 1000:.0f} kB, "
        f"{source.count(chr(10))} lines, derived, printed and compiled in {generated:.2f} s, "
        f"{generation_memory:.0f} MB at most"
    )
    # batch 1: one sample (C, H, W)
    f = d.numeric(**choices)
    one = {"ours": lambda: f(x[0], y[0], params)}
    one["torch backward"] = torch_calls(net, params, x[:1], y[:1])["torch backward"]
    if len(styles) == 2:
        for style in styles:
            g = d.numeric(style=style, **choices)
            one[f"ours, {style}"] = lambda g=g: g(x[0], y[0], params)
    t1 = best_times(one, budget)
    # batch 1024, summed and per sample
    summed, per_sample = d.numeric(reduce="sum", **choices), d.numeric(**choices)
    calls = {
        "ours sum": lambda: summed(x, y, params),
        "ours per-sample": lambda: per_sample(x, y, params),
        **torch_calls(net, params, x, y),
    }
    jax_step = jax_call(net, params, x, y)
    if jax_step is not None:
        calls["jax.jit"] = jax_step
        ours_jax = d.numeric(reduce="sum", backend="jax", **choices)
        ours_jax(x, y, params)  # compiled once, outside the timing
        calls["ours, jax backend"] = lambda: ours_jax(x, y, params)
    tb = best_times(calls, budget)
    for method, t in t1.items():
        print(f"   batch 1     {method:<18}{t * 1e6:9.0f} us  torch / this "
              f"{t1['torch backward'] / t:6.2f}")
    for method, t in tb.items():
        print(f"   batch {BATCH}  {method:<18}{t * 1e3:9.2f} ms  "
              f"{flops(net, BATCH) / t / 1e9:6.1f} GFLOP/s")
    row = {
        "name": name, "kB": len(source) / 1000, "generate": generated,
        "one": t1["ours"], "one torch": t1["torch backward"],
        "sum": tb["ours sum"], "sum torch": tb["torch backward"], "jax": tb.get("jax.jit"),
        "ours jax": tb.get("ours, jax backend"),
        "per-sample": tb["ours per-sample"], "torch.func": tb["torch.func"],
        "gflops": flops(net, BATCH) / tb["ours sum"] / 1e9,
    }
    if name == "LeNet-5":
        row["memory"] = {
            reduce: peak_memory(lambda r=reduce: d.numeric(reduce=r)(x, y, params))
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


def print_table(rows: list[dict], peak: float) -> None:
    """The summary as a Markdown table (what README's Benchmarks section shows): each cell
    ours, the baseline, and the baseline's time over ours (above 1: we are faster)."""
    jax = any(row["jax"] for row in rows)
    header = (
        "| | batch 1: ours / torch | batch 1024 sum: ours / torch"
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
                f"{r['ours jax'] * 1e3:.2f} ms"
            )
        print(
            f"| {r['name']} "
            f"| {_time(r['one'])} / {_time(r['one torch'])}: {r['one torch'] / r['one']:.1f}x "
            f"| {_time(r['sum'])} / {_time(r['sum torch'])}: {r['sum torch'] / r['sum']:.2f}x"
            f"{jax_cells} "
            f"| {_time(r['per-sample'])} / {_time(r['torch.func'])}: "
            f"{r['torch.func'] / r['per-sample']:.2f}x "
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
