"""Estimates of the work a command is about to do, and the limits that work must stay under.

Before its long work, each command lists what it would build as ``Work`` items — so many
scalar-graph edges, closed-form tree nodes or loss evaluations, counted from the network's
shapes in milliseconds — and ``enforce`` compares each with its ``Limit``. Past a limit,
``OverBudget`` says in one line what would be built, roughly how long and how much memory
it would take, and the flag that lifts the limit::

    derive would build a scalar graph of 11,993,108 edges (estimated 1.0 h, 19.2 GB), more
    than --max-edges allows (1,000,000); rerun with --max-edges 11993108 to go ahead

A command that builds something new adds a function here returning its ``Work`` (and, for a
new kind of resource, a ``Limit`` in ``LIMITS``: the command line gets its flag from there).
The seconds and bytes per unit are rough, measured on a 2-core machine
(``benchmarks/budget.py`` prints estimate against measurement): they make the message
useful, while the counts, which are exact or close upper bounds, decide.

Imports ``errors``, ``network`` (shapes only: nothing here builds a graph) and ``verify``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import prod

from .engine import GRAPH_BYTES, GRAPH_SECONDS
from .errors import OverBudget, capped, count, duration, size
from .network import Network
from .verify import FD_ELEMENTS, choices


@dataclass(frozen=True)
class Limit:
    """A resource a command may use only so much of, and the flag that sets how much."""

    flag: str  # the command-line option: "--max-edges"
    unit: str  # what is counted: "edges"
    default: int
    help: str


LIMITS: dict[str, Limit] = {
    "edges": Limit(
        "--max-edges",
        "edges",
        1_000_000,
        "largest scalar graph (edges: one per input of every node) a command builds; "
        "LeNet-5 has 423,000 (default 1,000,000)",
    ),
    "closed": Limit(
        "--max-closed-size",
        "tree nodes",
        2_000_000,
        "most closed-form tree nodes --closed-forms all writes in total, about 5 bytes each "
        "(default 2,000,000)",
    ),
    "memory": Limit(
        "--max-memory",
        "MB",
        8_000,
        "most memory, in MB, that check's arrays may take: the generated code's and the reference's "
        "on every point, finite differences included, grow with the largest layer (default 8,000)",
    ),
    "evaluations": Limit(
        "--max-evaluations",
        "loss evaluations",
        200_000,
        "most loss evaluations the finite differences of check may take (default 200,000)",
    ),
}


@dataclass(frozen=True)
class Work:
    """One step of a command: how much of a limited resource it takes, and a rough cost."""

    what: str  # "build a scalar graph of", completed by the amount and the unit
    limit: str  # a key of LIMITS
    amount: int
    seconds: float
    bytes: float = 0.0


def enforce(command: str, works: Sequence[Work], limits: Mapping[str, int] | None = None) -> None:
    """Raise ``OverBudget`` for the first work past its limit (``limits`` overrides
    ``LIMITS``' defaults, by key); the message gives the whole command's estimate."""
    for work in works:
        limit = LIMITS[work.limit]
        allowed = (limits or {}).get(work.limit, limit.default)
        if work.amount > allowed:
            seconds = sum(w.seconds for w in works)
            memory = max(w.bytes for w in works)
            if work.amount > 10**15:
                advice = "far too large to do at any limit"
            else:
                advice = f"rerun with {limit.flag} {work.amount} to go ahead"
            raise OverBudget(
                f"{command} would {work.what} {count(work.amount)} {limit.unit} "
                f"(estimated {duration(seconds)}, {size(memory)}), more than {limit.flag} allows "
                f"({allowed:,}); {advice}"
            )


# ---- what commands build ------------------------------------------------------------------------

# Per edge, measured on LeNet-5 (423k edges) with 2 cores: building the graph and its backward
# pass; the straight-line program of every node; printing it as Python; compiling that.
PROGRAM_SECONDS, PROGRAM_BYTES = 300e-6, 1000
COMPILE_SECONDS = 150e-6
# One reference loss evaluation (finite differences): numpy call overhead per layer + the sums.
EVALUATION_LAYER_SECONDS, EVALUATION_EDGE_SECONDS = 60e-6, 0.5e-9


def scalar_graph(network: Network, copies: int = 1) -> Work:
    """The scalar graph and its backward pass (``copies`` of them: a handout builds two)."""
    edges = network.graph_edges
    n = capped(edges)
    return Work(
        "build a scalar graph of",
        "edges",
        edges,
        copies * n * GRAPH_SECONDS,
        copies * n * GRAPH_BYTES,
    )


def per_node_program(network: Network, compiled: bool = False) -> Work:
    """The straight-line program of every node, printed as Python (and compiled, to run it)."""
    edges = network.graph_edges
    n = capped(edges)
    seconds = n * (PROGRAM_SECONDS + (COMPILE_SECONDS if compiled else 0.0))
    return Work(
        "write per-node code for a scalar graph of",
        "edges",
        edges,
        seconds,
        n * (GRAPH_BYTES + PROGRAM_BYTES),
    )


def closed_forms(tree_nodes: int) -> Work:
    """Closed forms written out: ~5 characters and a few microseconds per tree node."""
    n = capped(tree_nodes)
    return Work("write closed forms of", "closed", tree_nodes, n * 3e-6, n * 5.0)


def finite_differences(network: Network, samples: int) -> Work:
    """Central differences of the reference loss, two evaluations per parameter element
    (at most ``verify.FD_ELEMENTS`` of each parameter, sampled) at each sample and choice of
    the generic g and loss (the input's all at once)."""
    per_point = 1 + 2 * sum(min(prod(shape), FD_ELEMENTS) for shape in network.parameters.values())
    count = len(choices(network)) * samples * per_point
    per_evaluation = (
        len(network.layers) * EVALUATION_LAYER_SECONDS
        + capped(network.graph_edges) * EVALUATION_EDGE_SECONDS
    )
    return Work("run finite differences of", "evaluations", count, capped(count) * per_evaluation)


# Measured with `check --samples 1` on 1x150x150 and 1x300x300 -> conv 2@3x3 -> dense 10: 300 MB
# for python, numpy and torch, then 1,350-1,400 bytes and 45 µs for each value of the largest
# array a sample's layer holds (Op.code_values: its windows) — the reference's finite
# differences hold eight perturbed copies of every layer, the per-sample gradients their own.
CHECK_BASE_BYTES, CHECK_BYTES_PER_VALUE, CHECK_SECONDS_PER_VALUE = 300e6, 1400, 45e-6


def check_memory(network: Network, samples: int) -> Work:
    """What ``check`` holds at once: its arrays grow with the largest a layer keeps per sample."""
    values = max(op.code_values(network.input_shape_of(l)) for l, op in enumerate(network.layers, start=1))
    total = CHECK_BASE_BYTES + CHECK_BYTES_PER_VALUE * capped(values)
    return Work("hold arrays of", "memory", int(total // 1e6) + 1,
                capped(values) * CHECK_SECONDS_PER_VALUE * samples, total)


# ---- how estimates read -------------------------------------------------------------------------
