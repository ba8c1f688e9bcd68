"""The ``symbackprop`` command: the only module that prints to the terminal or writes files.

    symbackprop derive  [SPEC] [--preset article] [-o DIR] [--style layers|nodes]
    symbackprop check   [SPEC] [--preset article] [--samples N] [--seed S] [--json]
    symbackprop handout [SPEC] [--preset article] [-o DIR] [--no-pdf] [--detail full|summary]
    symbackprop exercises [SPEC] [--preset article] [--seed N] [-o DIR] [--no-pdf]

With neither SPEC nor --preset, each command works on the article preset.
A bad spec prints one line and exits with status 2, writing nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from math import prod
from pathlib import Path

import sympy

from .derive import Derivation
from .document import default_detail, render_exercises, render_handout
from .errors import SpecError
from .latex import latex_errors, overfull_boxes
from .network import Network
from .presets import PRESETS
from .spec import load_spec

CLOSED_FORM_LIMIT = 100_000  # tree nodes; larger closed forms are summarised, not written out


# ---- shared helpers -------------------------------------------------------------------------


def _network(args: argparse.Namespace) -> Network:
    if args.spec is not None and args.preset is not None:
        raise SpecError("give a SPEC file or --preset, not both")
    if args.spec is not None:
        return load_spec(args.spec)
    return PRESETS[args.preset or "article"]()


def _output_dir(args: argparse.Namespace, network: Network) -> Path:
    return Path(args.output) if args.output else Path("outputs") / network.name


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def _staged_output(target: Path):
    """A temporary folder beside ``target`` whose files replace target's only on success,
    so a failure leaves nothing half-written."""
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target))
    try:
        yield staging
        for item in staging.iterdir():
            item.replace(target / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _add_network_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="?", help="a YAML or JSON network spec (default: the article preset)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a built-in network instead of a spec")


def _summary(network: Network) -> str:
    lines = [f"network {network.name}: input {_shape(network.input_shape)}, loss {network.loss}"]
    for number, (layer, shape) in enumerate(zip(network.layers, network.shapes[1:]), start=1):
        lines.append(f"  layer {number}: {layer.describe()} -> {_shape(shape)}")
    params = network.parameters
    counts = ", ".join(f"{name} {_shape(shape)}" for name, shape in params.items())
    lines.append(f"  {sum(prod(s) for s in params.values())} weights: {counts}")
    return "\n".join(lines)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


# ---- derive ---------------------------------------------------------------------------------


def derivation_record(d: Derivation, on_parameter: Callable[[str], None] | None = None) -> dict:
    """Everything ``derivation.json`` holds: per element, chain and closed form as strings."""

    def closed_entry(expr: sympy.Expr) -> dict:
        size = d.closed_size(expr)
        return {"closed": _text(d.closed(expr)) if size <= CLOSED_FORM_LIMIT else None, "closed_size": size}

    def elements(name: str, with_closed: bool = True) -> list[dict]:
        symbols = d.symbols.x if name == "x" else d.symbols.params[name]
        chain = d.chain(name)
        result = []
        for symbol, expr in zip(sympy.flatten(symbols.tolist()), sympy.flatten(chain.tolist())):
            index = str(symbol).split("_")[1:] if name != "x" else [str(symbol).split("_")[1]]
            result.append({
                "symbol": str(symbol),
                "index": [int(i) for i in index],
                "tex": d.tex_names[symbol],
                "chain": _text(expr),
                **(closed_entry(expr) if with_closed else {}),
            })
        return result

    network = d.network
    parameters = {}
    for name, shape in network.parameters.items():
        if on_parameter:
            on_parameter(name)
        parameters[name] = {"shape": list(shape), "elements": elements(name)}
    loss_size = d.closed_size(d.graph.loss)
    return {
        "network": network.to_dict(),
        "conventions": {
            "nodes": "x, y, z, a numbered flat from 1 in (channel, row, column) order",
            "parameters": "PyTorch layouts; code names carry 0-based tensor indices (W1_0_0_1_1 is W1[0,0,1,1])",
            "position_sets": "1-based flat input indices per output node, in kernel order; padding left out",
        },
        "position_sets": {
            str(layer): [list(p) for p in network.position_sets(layer)]
            for layer in range(1, len(network.layers) + 1)
        },
        "upstream": {str(s): _text(d.upstream(s)) for lg in d.graph.layers for s in lg.upstream},
        "loss": {"closed": _text(d.loss) if loss_size <= CLOSED_FORM_LIMIT else None, "closed_size": loss_size},
        "parameters": parameters,
        "input_gradient": {"shape": list(network.input_shape), "elements": elements("x", False)},
    }


def _text(expr: sympy.Basic) -> str:
    """sympy's string form, terms in their stored order (sorting them for display is slow)."""
    return sympy.sstr(expr, order="none")


def run_derive(args: argparse.Namespace) -> int:
    network = _network(args)
    target = _output_dir(args, network)
    print(_summary(network))
    start = time.perf_counter()
    _progress("deriving ...")
    d = network.derive()
    derived = time.perf_counter()
    record = derivation_record(d, on_parameter=lambda name: _progress(f"  writing out {name}"))
    with _staged_output(target) as staging:
        (staging / "derivation.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        _progress("  writing gradients.py")
        # numpy-only loss_and_grads(x, y, params); per layer, it never builds the scalar graph
        d.export_module(staging / "gradients.py", style=args.style)
    done = time.perf_counter()
    print(f"derived in {derived - start:.2f} s, written in {done - derived:.2f} s -> "
          f"{target / 'derivation.json'}, {target / 'gradients.py'}")
    return 0


# ---- check ----------------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    from .verify import check  # late: only this command needs the checking machinery

    if args.samples < 1:
        message = f"--samples must be 1 or more, got {args.samples}"
        print(f"symbackprop: error: {message}", file=sys.stderr)
        return 2
    network = _network(args)
    _progress("deriving ...")
    d = network.derive()

    def on_choice(g: str | None, loss: str | None) -> None:
        _progress(f"checking {_choice(g, loss)} ..." if g or loss else "checking ...")

    report = check(d, samples=args.samples, seed=args.seed, on_choice=on_choice)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(_check_table(report))
    return 0 if report.agree else 1


def _choice(g: str | None, loss: str | None) -> str:
    return ", ".join(f"{key} = {value}" for key, value in [("g", g), ("loss", loss)] if value)


def _check_table(report) -> str:
    """The report as text: per choice, a row per quantity with abs and rel error per method."""
    from .verify import TOLERANCES

    methods = report.methods
    code = " and ".join({"layers": "per-layer code", "nodes": "per-node program"}[s] for s in report.styles)
    lines = [
        (
            f"check {report.network}: {report.samples} samples, seed {report.seed}; "
            f"derived gradients ({code}) against {', '.join(methods)}"
        ),
        "abs: largest |derived - method| over the samples; rel: abs / the method's largest |value|",
    ]
    if report.sampled:
        counts = ", ".join(f"{name} {count} of {total}" for name, (count, total) in report.sampled.items())
        lines.append(f"finite differences on a seeded sample of elements: {counts}")
    lines += [f"{method} not used: {why}" for method, why in report.skipped.items()]
    header = f"  {'':<8}" + "".join(f"{m:<22}" for m in methods)
    columns = f"  {'':<8}" + "".join(f"{'abs':<11}{'rel':<11}" for _ in methods) + "verdict"
    for run in report.runs:
        title = _choice(run.g, run.loss) or "activations and loss as specified"
        lines += ["", title, header.rstrip(), columns]
        for row in run.rows:
            cells = ""
            for method in methods:
                c = row.comparisons.get(method)
                cells += f"{c.abs_error:<11.1e}{c.rel_error:<11.1e}" if c else f"{'-':<11}{'-':<11}"
            verdict = "ok" if row.agree else "DIFFERS from " + ", ".join(row.disagreeing)
            lines.append(f"  {row.name:<8}{cells}{verdict}")
    tolerances = ", ".join(
        f"{m} {TOLERANCES[m][0]:.0e} rel + {TOLERANCES[m][1]:.0e} abs" for m in methods
    )
    lines += ["", f"tolerances: {tolerances}"]
    lines.append("all agree" if report.agree else "DISAGREE: a derived gradient is wrong")
    return "\n".join(lines)


# ---- handout --------------------------------------------------------------------------------


TEX_INSTALL_HINT = (
    "no latexmk or pdflatex on the PATH, so no handout.pdf: install TeX, e.g. "
    "`sudo apt-get install latexmk texlive-latex-extra texlive-pictures` (Debian/Ubuntu), "
    "MacTeX (macOS) or MiKTeX (Windows), then run again"
)
OVERFULL_TOLERANCE = 10.0  # pt; a line sticking out less than this is not worth a warning


class LatexError(Exception):
    """LaTeX failed; the message holds the relevant lines of its log."""


def _tex_compiler() -> list[str] | None:
    """The command that makes a PDF, preferring latexmk (it reruns as often as needed)."""
    if shutil.which("latexmk"):
        return ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error"]
    if shutil.which("pdflatex"):
        return ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error"]
    return None


def compile_pdf(tex: Path, command: list[str]) -> tuple[bytes, str]:
    """Compile ``tex`` in a scratch folder: (the PDF, the log). LatexError on failure."""
    with tempfile.TemporaryDirectory(prefix="symbackprop-tex-") as folder:
        work = Path(folder)
        shutil.copy(tex, work / tex.name)
        runs = 1 if command[0] == "latexmk" else 3  # pdflatex: contents, longtables, references
        for _ in range(runs):
            try:
                done = subprocess.run([*command, tex.name], cwd=work, capture_output=True, text=True,
                                      errors="replace", timeout=600, check=False)
            except subprocess.TimeoutExpired:
                raise LatexError(f"{command[0]} ran for more than 10 minutes; stopped") from None
            log_path = work / tex.with_suffix(".log").name
            log = log_path.read_text(errors="replace") if log_path.exists() else done.stdout
            if done.returncode != 0:
                raise LatexError(latex_errors(log))
            if "Rerun to get" not in log and "Rerun LaTeX" not in log:
                break
        return (work / tex.with_suffix(".pdf").name).read_bytes(), log


def run_handout(args: argparse.Namespace) -> int:
    network = _network(args)
    target = _output_dir(args, network)
    print(_summary(network))
    start = time.perf_counter()
    detail = args.detail or default_detail(network)
    _progress(f"deriving and typesetting the handout ({detail}) ...")
    files = render_handout(network, detail)
    command = None if args.no_pdf else _tex_compiler()
    written = list(files)
    try:
        with _staged_output(target) as staging:
            for name, text in files.items():
                (staging / name).write_text(text, encoding="utf-8")
            if command is not None:
                _progress(f"compiling handout.pdf with {command[0]} ...")
                pdf, log = compile_pdf(staging / "handout.tex", command)
                (staging / "handout.pdf").write_bytes(pdf)
                (staging / "handout.log").write_text(log, encoding="utf-8")
                written.append("handout.pdf")
    except LatexError as error:
        print(f"symbackprop: error: LaTeX failed on handout.tex, nothing written "
              f"(--no-pdf writes the .tex alone):\n{error}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(str(target / name) for name in written)} "
          f"in {time.perf_counter() - start:.1f} s")
    if command is None and not args.no_pdf:
        print(f"symbackprop: {TEX_INSTALL_HINT}", file=sys.stderr)
    if command is not None:
        wide = [(width, where) for width, where in overfull_boxes(log) if width > OVERFULL_TOLERANCE]
        if wide:
            widest = max(width for width, _ in wide)
            print(f"symbackprop: warning: {len(wide)} line(s) stick out of the page "
                  f"(up to {widest:.0f}pt); see {target / 'handout.log'}", file=sys.stderr)
    return 0


# ---- exercises ------------------------------------------------------------------------------


def add_exercises_command(commands) -> None:
    """``symbackprop exercises``: an exercise sheet and its answer key."""
    exercises = commands.add_parser(
        "exercises", help="write an exercise sheet and its answer key (LaTeX, PDF, Markdown)",
        description="Write exercises.tex/.md and solutions.tex/.md for the network — the forward "
        "pass, position sets, a weight's gradient by the chain rule, what an upstream gradient "
        "depends on, the tensor view — every answer computed by the engine, and compile "
        "exercises.pdf and solutions.pdf when latexmk or pdflatex is installed. Another seed "
        "gives other numbers and other questions.",
    )
    _add_network_arguments(exercises)
    exercises.add_argument("--seed", type=int, default=0, metavar="N",
                           help="numbers and questions (default 0)")
    exercises.add_argument("-o", "--output", metavar="DIR", help="output folder (default outputs/NAME/)")
    exercises.add_argument("--no-pdf", action="store_true", help="write the .tex and .md only")
    exercises.set_defaults(run=run_exercises)


def run_exercises(args: argparse.Namespace) -> int:
    if args.seed < 0:
        print(f"symbackprop: error: --seed must be 0 or more, got {args.seed}", file=sys.stderr)
        return 2
    network = _network(args)
    target = _output_dir(args, network)
    print(_summary(network))
    start = time.perf_counter()
    _progress(f"choosing the exercises (seed {args.seed}) and computing their answers ...")
    files = render_exercises(network, seed=args.seed)
    command = None if args.no_pdf else _tex_compiler()
    written = list(files)
    try:
        with _staged_output(target) as staging:
            for name, text in files.items():
                (staging / name).write_text(text, encoding="utf-8")
            for stem in ("exercises", "solutions") if command is not None else ():
                _progress(f"compiling {stem}.pdf with {command[0]} ...")
                pdf, log = compile_pdf(staging / f"{stem}.tex", command)
                (staging / f"{stem}.pdf").write_bytes(pdf)
                (staging / f"{stem}.log").write_text(log, encoding="utf-8")
                written.append(f"{stem}.pdf")
    except LatexError as error:
        print(f"symbackprop: error: LaTeX failed, nothing written (--no-pdf writes the .tex alone):\n{error}",
              file=sys.stderr)
        return 1
    print(f"wrote {', '.join(str(target / name) for name in written)} in {time.perf_counter() - start:.1f} s")
    if command is None and not args.no_pdf:
        print(f"symbackprop: {TEX_INSTALL_HINT}", file=sys.stderr)
    return 0


# ---- entry point ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symbackprop",
        description="Derive backpropagation symbolically for a small convolutional or dense network: "
        "closed-form gradients of every weight, LaTeX handouts, numeric code, and checks "
        "against independent methods.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    derive = commands.add_parser(
        "derive", help="derive every dL/dw and write derivation.json",
        description="Derive dL/dw for every weight (chain form and closed form) and write "
        "derivation.json into the output folder (default outputs/NAME/).",
    )
    _add_network_arguments(derive)
    derive.add_argument("-o", "--output", metavar="DIR", help="output folder (default outputs/NAME/)")
    derive.add_argument(
        "--style", choices=["layers", "nodes"], default=None,
        help="gradients.py's code: a block per layer, or a line per node of the graph "
        "(default: per layer, with the per-node program too for a small network)",
    )
    derive.set_defaults(run=run_derive)

    check = commands.add_parser(
        "check", help="prove the derived gradients right against independent methods",
        description="Evaluate the derived gradients at random points and compare them with an "
        "independent numpy backprop, finite differences and PyTorch autograd (if installed). "
        "Exit status 0 when all agree, 1 when any disagree, 2 for a bad spec.",
    )
    _add_network_arguments(check)
    check.add_argument("--samples", type=int, default=3, metavar="N", help="random points (default 3)")
    check.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(run=run_check)

    handout = commands.add_parser(
        "handout", help="write a teaching handout (LaTeX, PDF, Markdown)",
        description="Write handout.tex and handout.md for the network and compile handout.pdf "
        "when latexmk or pdflatex is installed.",
    )
    _add_network_arguments(handout)
    handout.add_argument("-o", "--output", metavar="DIR", help="output folder (default outputs/NAME/)")
    handout.add_argument("--no-pdf", action="store_true", help="write the .tex and .md only")
    handout.add_argument(
        "--detail", choices=["full", "summary"],
        help="full: every node and weight; summary: per layer the general formulas, a few position "
        "sets, one weight per parameter derived in full (default: full for a small network)",
    )
    handout.set_defaults(run=run_handout)

    add_exercises_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SpecError as error:
        print(f"symbackprop: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
