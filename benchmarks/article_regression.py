"""Benchmark: the article network's default code now against the first release of the numeric
code, in alternating processes.

    python benchmarks/article_regression.py [--old COMMIT] [--rounds 5] [--threads 2]

The first release is the commit that added ``symbackprop/numeric.py`` (found with ``git log``
unless ``--old`` names another); its tree is checked out once with ``git worktree add
--detach`` under the system's temporary folder and reused. Each round runs one process on
the old tree, then one on this one (``PYTHONPATH`` set to each), so that a burst of load
elsewhere hits both alike; each process times ``d.numeric(g="sigmoid", loss="sse")`` on the
same sample and batch — one sample (the default style), and per-sample gradients at batch
1024 — in wall-clock time and in the process's CPU time (which a machine busy with other
work inflates less), and the best of the rounds counts. Both run with the same BLAS
threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # this tree's root

# What each process runs: the article network's default code, timed on its own (best of
# several ~0.2 s stretches), with the same sample and parameters in every process.
WORKER = r"""
import json, time
import numpy as np
import symbackprop as sb

net = sb.presets.article()
f = net.derive().numeric(g="sigmoid", loss="sse")
rng = np.random.default_rng(0)
params = {name: rng.normal(size=shape) for name, shape in net.parameters.items()}
x = rng.normal(size=(1024, *net.input_shape))
y = rng.normal(size=(1024, net.output_size))

def best(call, clock, stretches=7, seconds=0.2):
    call()
    times = []
    for _ in range(stretches):
        count, start = 0, clock()
        while clock() - start < seconds:
            call()
            count += 1
        times.append((clock() - start) / count)
    return min(times)

one, batch = lambda: f(x[0], y[0], params), lambda: f(x, y, params)
print(json.dumps({
    "one": best(one, time.perf_counter), "per-sample": best(batch, time.perf_counter),
    "one cpu": best(one, time.process_time), "per-sample cpu": best(batch, time.process_time),
}))
"""


def first_release() -> str:
    """The commit that added symbackprop/numeric.py: the numeric code's first release."""
    out = subprocess.run(
        ["git", "log", "--diff-filter=A", "--reverse", "--format=%h", "--", "symbackprop/numeric.py"],
        cwd=HERE, capture_output=True, text=True, check=True,
    ).stdout.split()
    if not out:
        raise SystemExit("git log finds no commit adding symbackprop/numeric.py; name one with --old")
    return out[0]


def checkout(commit: str) -> Path:
    """The tree of ``commit``, checked out once (git worktree, detached) and reused."""
    path = Path(tempfile.gettempdir()) / f"symbackprop-{commit}"
    if not (path / "symbackprop").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=HERE,
                       capture_output=True, check=True)
    return path


def measure(tree: Path, threads: int) -> dict[str, float]:
    """One process on ``tree``: its times (seconds) for one sample and per sample at 1024."""
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        environment[variable] = str(threads)
    done = subprocess.run([sys.executable, "-c", WORKER], check=False, cwd=tree, env=environment,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the process on {tree} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", help="the commit to compare with (default: the numeric code's first release)")
    parser.add_argument("--rounds", type=int, default=5, help="old/new process pairs; the best counts")
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads in both")
    args = parser.parse_args()
    old = args.old or first_release()
    trees = {f"{'commit' if args.old else 'first release'} {old}": checkout(old), "this tree": HERE}
    keys = ("one", "per-sample", "one cpu", "per-sample cpu")
    best = {name: dict.fromkeys(keys, float("inf")) for name in trees}
    print(f"article network, g = sigmoid, loss = sse, d.numeric() default; {args.threads} BLAS threads; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for round_ in range(args.rounds):
        for name, tree in trees.items():
            times = measure(tree, args.threads)
            for key, seconds in times.items():
                best[name][key] = min(best[name][key], seconds)
            print(f"   round {round_ + 1} {name:<26} one sample {times['one'] * 1e6:6.1f} µs "
                  f"(CPU {times['one cpu'] * 1e6:5.1f}), per sample at 1024 "
                  f"{times['per-sample'] * 1e6:6.0f} µs (CPU {times['per-sample cpu'] * 1e6:4.0f})",
                  flush=True)
    print(f"\nbest of {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}:\n")
    print("| article network | one sample (CPU time) | per-sample gradients, batch 1024 (CPU time) |")
    print("|---|---|---|")
    for name, t in best.items():
        print(f"| {name} | {t['one'] * 1e6:.1f} µs ({t['one cpu'] * 1e6:.1f} µs) "
              f"| {t['per-sample'] * 1e6:.0f} µs ({t['per-sample cpu'] * 1e6:.0f} µs) |")
    old, new = best.values()
    print(f"| this tree / the other | {new['one'] / old['one']:.2f} ({new['one cpu'] / old['one cpu']:.2f}) "
          f"| {new['per-sample'] / old['per-sample']:.2f} "
          f"({new['per-sample cpu'] / old['per-sample cpu']:.2f}) |")


if __name__ == "__main__":
    main()
