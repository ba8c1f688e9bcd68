"""The ``symbackprop`` command: the only module that prints to the terminal or writes files.

    symbackprop derive  [SPEC] [--preset NAME] [-o DIR] [--closed-forms none|small|all] [--style layers|nodes]
                        [--dtype float64|float32]
    symbackprop check   [SPEC] [--preset NAME [--batch-norm]] [--samples N] [--seed S] [--json] [--dtype float64|float32]
    symbackprop handout [SPEC] [--preset NAME [--batch-norm]] [-o DIR] [--no-pdf] [--keep-log] [--detail full|summary]
                        [--seed N | --values FILE]
    symbackprop exercises [SPEC] [--preset NAME [--batch-norm]] [--seed N] [-o DIR] [--no-pdf] [--keep-log]
                          [--values FILE] [--only KIND[,KIND]] [--layers L[,L]]
    symbackprop --version

With neither SPEC nor --preset, each command works on the article preset. ``check``,
``handout`` and ``exercises`` take --batch-norm with --preset lenet5 or resnet_tiny (their
batch-normalised variants: checked on a batch; the documents work the batch statistics
over a batch in a section of their own); derive writes one sample's derivation and refuses
a network whose batch normalisation mixes the samples. symbackprop's warnings
(``errors.DegenerateSetup``, ``errors.NearKink``) are one line each on stderr,
"symbackprop: warning: ...".

What every command shares lives here, so a new command plugs in with ``_command`` and a
``run_*`` function:

* exit status: 0 done; 1 only when ``check`` finds gradients that disagree; 2 for anything
  the user can fix — a bad argument or spec, an output folder that cannot be written, a
  full disk, work past a budget, LaTeX failing — always one line on stderr, never a
  traceback; 3 for a bug (its traceback, and a request to report it);
* budgets: before its long work a command lists what it would build (``symbackprop.budget``)
  and refuses within seconds, naming the flag that lifts the limit (``--max-edges`` …);
* output staging (``staged_output``): files are written into a scratch folder and moved
  into place all together only when the command succeeds; on failure nothing is left;
* progress (``Progress``): tqdm bars on stderr, shown only when stderr is a terminal and
  ``--quiet`` is not given.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from math import prod
from pathlib import Path
from typing import Any

from . import budget
from .budget import LIMITS, OverBudget
from .document import EXERCISE_KINDS, default_detail, render_exercises, render_handout
from .errors import DegenerateSetup, NearKink, SpecError, shown
from .latex import latex_errors, overfull_boxes
from .network import Network
from .numeric import DTYPES
from .presets import BATCH_NORM_PRESETS, PRESETS, preset
from .record import CLOSED_FORMS, Plan, dumps
from .spec import load_spec, parse

EXIT_DISAGREE, EXIT_USAGE, EXIT_BUG = 1, 2, 3
SYMBACKPROP_WARNINGS = (DegenerateSetup, NearKink)


class CommandError(Exception):
    """Something the user can fix (an argument, an output folder, a full disk): exit 2.

    The message is one line; ``details``, when given, follow it (LaTeX's own error lines)."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


# ---- shared infrastructure ------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (argparse prints the usage above them)."""

    def error(self, message: str):  # type: ignore[override]
        message = re.sub(r"^argument ([^:]+): ", r"\1 ", message)  # "--seed must be ..."
        raise CommandError(f"{message} (see {self.prog} --help)")


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _command(
    commands, name: str, run: Callable[[argparse.Namespace], int], help: str, description: str,
    *, output: bool = False, limits: tuple[str, ...] = (), batch_norm: bool = False,
) -> argparse.ArgumentParser:
    """A subcommand with the arguments every command takes: SPEC, --preset, --quiet, the flags
    of the budgets it enforces, for a command that writes files -o and, for one that works
    on a batch, --batch-norm."""
    parser = commands.add_parser(name, help=help, description=description)
    parser.add_argument("spec", nargs="?", help="a YAML or JSON network spec (default: the article preset)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a built-in network instead of a spec")
    if batch_norm:
        parser.add_argument("--batch-norm", action="store_true",
                            help=f"the preset's batch-normalised variant, in train mode "
                            f"({' or '.join(BATCH_NORM_PRESETS)})")
    if output:
        parser.add_argument("-o", "--output", metavar="DIR", help="output folder (default outputs/NAME/)")
    for key in limits:
        limit = LIMITS[key]
        parser.add_argument(limit.flag, type=_count(1), default=limit.default, metavar="N",
                            dest=f"limit_{key}", help=limit.help)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(run=run, limit_keys=limits)
    return parser


def _limits(args: argparse.Namespace) -> dict[str, int]:
    return {key: getattr(args, f"limit_{key}") for key in args.limit_keys}


def _network(args: argparse.Namespace) -> Network:
    if args.spec is not None and args.preset is not None:
        raise SpecError("give a SPEC file or --preset, not both")
    batch_norm = getattr(args, "batch_norm", False)
    if batch_norm and args.preset is None:
        raise CommandError(
            f"--batch-norm chooses a preset's batch-normalised variant: give --preset "
            f"{' or '.join(BATCH_NORM_PRESETS)} (a spec writes its own batch normalisation layers)"
        )
    if args.spec is not None:
        return load_spec(args.spec)
    try:
        return preset(args.preset or "article", batch_norm=batch_norm)
    except SpecError as error:
        raise CommandError(f"--batch-norm: {error}") from None


def _one_sample(command: str, network: Network) -> None:
    """Refuse a network whose batch normalisation mixes the samples, for a command that
    writes one sample's derivation (derive; the documents work such a layer over a batch in a
    section of its own)."""
    if network.couples_samples:
        raise CommandError(
            f"{command} writes one sample's derivation, and {network.name}'s batch normalisation "
            "in train mode mixes the samples of a batch; check it (symbackprop check compares "
            "a batch's gradients), or put it in eval mode (mode: eval in its spec)"
        )


def _output_dir(args: argparse.Namespace, network: Network) -> Path:
    return Path(args.output) if args.output else Path("outputs") / network.name


class Progress:
    """Progress on stderr: tqdm bars and notes, only when stderr is a terminal and not --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.shown = not quiet and sys.stderr.isatty()

    def bar(self, description: str, total: int | None, unit: str = "it"):
        from tqdm import tqdm  # late: only a command with progress to show needs it

        return tqdm(total=total, desc=description, unit=unit, unit_scale=(total or 0) >= 1000,
                    file=sys.stderr,
                    disable=not self.shown, dynamic_ncols=True)

    def note(self, message: str) -> None:
        if self.shown:
            print(message, file=sys.stderr, flush=True)


@contextmanager
def staged_output(target: Path) -> Iterator[Path]:
    """A scratch folder inside ``target`` for a command's files: when the block succeeds they
    replace target's all together (or, if a move fails, none of them); when it fails, they
    are dropped, and so is ``target`` itself if it was created for them. Every I/O problem
    becomes a one-line ``CommandError``."""
    created = _make_folder(target)
    try:
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target))
    except OSError as error:
        _remove_folders(created)
        raise CommandError(f"cannot write into {target}: {_reason(error)}") from None
    try:
        yield staging
        _commit(staging, target)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_folders(created)
        name = Path(error.filename).name if getattr(error, "filename", None) else "the output"
        raise CommandError(f"cannot write {target / name}: {_reason(error)}; nothing written") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_folders(created)
        raise
    shutil.rmtree(staging, ignore_errors=True)


def _make_folder(target: Path) -> list[Path]:
    """Create ``target`` and its missing parents; the ones created, deepest first."""
    if target.exists() and not target.is_dir():
        raise CommandError(f"{target} exists and is not a folder; give -o a folder")
    missing, folder = [], target
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _remove_folders(missing)
        raise CommandError(f"cannot create the output folder {target}: {_reason(error)}") from None
    return missing


def _remove_folders(folders: list[Path]) -> None:
    for folder in folders:  # deepest first, and only while empty
        try:
            folder.rmdir()
        except OSError:
            return


def _commit(staging: Path, target: Path) -> None:
    """Move every file of ``staging`` into ``target``, replacing what is there; if one move
    fails, put everything back as it was and raise."""
    names = sorted(p.name for p in staging.iterdir())
    for name in names:
        if (target / name).is_dir() and not (target / name).is_symlink():
            raise CommandError(f"{target / name} is a folder; move it away or give another -o")
    previous = staging / ".previous"
    previous.mkdir()
    replaced, placed = [], []
    try:
        for name in names:
            if (target / name).exists() or (target / name).is_symlink():
                os.replace(target / name, previous / name)
                replaced.append(name)
            os.replace(staging / name, target / name)
            placed.append(name)
    except OSError:
        for name in placed:
            _try_replace(target / name, staging / name)
        for name in replaced:
            _try_replace(previous / name, target / name)
        raise


def _try_replace(source: Path, destination: Path) -> None:
    try:
        os.replace(source, destination)
    except OSError:
        pass  # putting back as much as can be: the error being raised says what failed


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _summary(network: Network) -> str:
    """The network, a line per layer; for a graph, what each layer reads and, where several
    layers read it, which."""
    lines = [f"network {network.name}: input {_shape(network.input_shape)}, loss {network.loss}"]
    for number, (layer, shape) in enumerate(zip(network.layers, network.shapes[1:]), start=1):
        name = network.layer_names[number - 1]
        line = f"  layer {number}{f' ({name})' if name else ''}: {layer.describe()} -> {_shape(shape)}"
        if not network.is_chain:
            wiring = [f"reads {_layers(network.sources[number - 1])}"]
            if len(network.consumers(number)) > 1:
                wiring.append(f"read by {_layers(network.consumers(number))}")
            line += f" ({'; '.join(wiring)})"
        lines.append(line)
    params = network.parameters
    counts = ", ".join(f"{name} {_shape(shape)}" for name, shape in params.items())
    lines.append(f"  {sum(prod(s) for s in params.values()):,} weights: {counts}")
    return "\n".join(lines)


def _layers(numbers: tuple[int, ...]) -> str:
    """How the summary names the layers a layer reads, in its operation's order: "x",
    "layer 3", "layer 1 and layer 3", "layer 1, x and layer 1"."""
    names = ["x" if n == 0 else f"layer {n}" for n in numbers]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _peak_memory() -> str:
    """', peak memory 273 MB', or '' where the platform does not say."""
    try:
        import resource
    except ImportError:  # Windows
        return ""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_bytes = peak if sys.platform == "darwin" else peak * 1024
    return f", peak memory {peak_bytes / 1e6:.0f} MB"


def _file_size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.0f} kB"


# ---- the user's own numbers (handout and exercises --values) ---------------------------------

VALUE_FILES = (".npz", ".yaml", ".yml", ".json")
MAX_NESTING = 8  # deeper than any shape: a self-referencing YAML list stops here


def load_values(path: Path, network: Network) -> tuple[Any, Any, dict[str, Any]]:
    """x, y and the parameters from an .npz, YAML or JSON file of keys x, y, W1, b1, ...,
    as float arrays of the network's shapes (y flat or shaped like the output); a
    CommandError of one line naming the key and the shapes when something does not fit.
    YAML is read with the safe loader: nothing in the file is evaluated."""
    import numpy as np  # late: only --values needs it here

    where = f"--values {path}"
    suffix = path.suffix.lower()
    if suffix not in VALUE_FILES:
        raise CommandError(f"{where}: give an .npz, .yaml, .yml or .json file")
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:  # an .npy file is no archive
                data = {key: archive[key] for key in archive.files}
        else:
            data = parse(path.read_text(encoding="utf-8"), json_format=suffix == ".json")
    except FileNotFoundError:
        raise CommandError(f"{where}: no such file") from None
    except SpecError as error:  # YAML or JSON that does not parse
        raise CommandError(f"{where}: {error}") from None
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, zipfile.BadZipFile) as error:
        raise CommandError(f"{where}: cannot read it as {suffix[1:]} ({error})") from None
    wanted = {"x": network.input_shape, "y": network.shapes[-1], **network.parameters}
    needs = f"it needs {', '.join(wanted)}"
    if not isinstance(data, dict):
        raise CommandError(f"{where}: the file must map {', '.join(wanted)} to arrays")
    missing = [key for key in wanted if key not in data]
    unknown = [shown(key) for key in data if key not in wanted]
    if unknown:
        raise CommandError(f"{where}: no {', '.join(unknown)} in this network; {needs}")
    if missing:
        raise CommandError(f"{where}: missing {', '.join(missing)}; {needs}")
    arrays = {key: _value_array(where, key, data[key], shape) for key, shape in wanted.items()}
    return arrays.pop("x"), arrays.pop("y"), arrays


def _value_array(where: str, key: str, value: Any, shape: tuple[int, ...]) -> Any:
    """One entry of a values file as a float array of ``shape`` (y: flat or shaped like the
    output), or a CommandError naming it."""
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise CommandError(f"{where}: {key} holds {value.dtype} values, not numbers")
        given = value.shape
    else:
        given = _nested_shape(value)
        if given is None:
            raise CommandError(
                f"{where}: {key} is not an array of numbers (a number, or lists of equal length "
                "of numbers)"
            )
    accepted = list(dict.fromkeys([tuple(shape)] + ([(prod(shape),)] if key == "y" else [])))
    if tuple(given) not in accepted:
        raise CommandError(
            f"{where}: {key} has shape {_shape(given) or 'scalar'}, the network's {key} is "
            f"{' or '.join(_shape(a) for a in accepted)}"
        )
    try:
        array = np.asarray(value, dtype=float).reshape(shape)
    except OverflowError:
        array = np.array([np.inf])
    if not np.all(np.isfinite(array)):
        raise CommandError(f"{where}: {key} holds a number that is not finite")
    return array


def _nested_shape(value: Any, depth: int = 0) -> tuple[int, ...] | None:
    """The shape of nested lists of numbers (a number: ()), or None when they are ragged,
    hold something else or nest past MAX_NESTING."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ()
    if not isinstance(value, list) or not value or depth >= MAX_NESTING:
        return None
    shapes = {_nested_shape(item, depth + 1) for item in value}
    if len(shapes) != 1 or None in shapes:
        return None
    return (len(value), *shapes.pop())


# ---- derive ---------------------------------------------------------------------------------


def run_derive(args: argparse.Namespace) -> int:
    network = _network(args)
    _one_sample("derive", network)
    limits = _limits(args)
    # derivation.json needs the scalar graph; gradients.py needs it only in the per-node style
    work = [budget.scalar_graph(network)]
    if args.style == "nodes":
        work.append(budget.per_node_program(network))
    budget.enforce("derive", work, limits)
    target = _output_dir(args, network)
    progress = Progress(args.quiet)
    start = time.perf_counter()
    with staged_output(target) as staging:  # checks the output folder before any work
        print(_summary(network))
        d = network.derive()
        edges = [prod(network.shapes[number]) * layer.window(network.input_shape_of(number))
                 for number, layer in enumerate(network.layers, start=1)]
        with progress.bar("backpropagating", sum(edges), "edge") as bar:
            for number, count in enumerate(edges, start=1):
                d.backward(number)
                bar.update(count)
        derived = time.perf_counter()
        plan = Plan(d, args.closed_forms)
        if args.closed_forms == "all":
            budget.enforce("derive --closed-forms all", [budget.closed_forms(plan.closed_total)], limits)
        with progress.bar("derivation.json", plan.entries, "entry") as bar:
            record = plan.build(progress=bar.update)
        (staging / "derivation.json").write_text(dumps(record), encoding="utf-8")
        with progress.bar("gradients.py", 1, "file") as bar:
            # numpy-only loss_and_grads(x, y, params); per layer, it never builds the scalar graph
            d.export_module(staging / "gradients.py", style=args.style, dtype=args.dtype)
            bar.update(1)
    done = time.perf_counter()
    files = ", ".join(f"{target / name} ({_file_size(target / name)})"
                      for name in ("derivation.json", "gradients.py"))
    print(f"derived in {derived - start:.2f} s, written in {done - derived:.2f} s{_peak_memory()} -> {files}")
    return 0


# ---- check ----------------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    from .verify import check, choices  # late: only this command needs the checking machinery

    network = _network(args)
    if network.couples_samples and args.samples < 2:
        raise CommandError(f"--samples must be 2 or more for {network.name}: its batch normalisation "
                           "mixes the samples, so its samples are checked as one batch")
    # The per-layer code needs no scalar graph; the per-node program is checked too only for
    # small networks (verify.NODES_LIMIT edges): memory and finite differences are what grow.
    work = [budget.check_memory(network, args.samples), budget.finite_differences(network, args.samples)]
    budget.enforce("check", work, _limits(args))
    progress = Progress(args.quiet)
    progress.note("deriving ...")
    d = network.derive()
    with progress.bar("checking", len(choices(network)), "choice") as bar:
        begun: list[str] = []

        def on_choice(g: str | None, loss: str | None) -> None:
            if begun:
                bar.update(1)  # the one before is done
            begun.append(_choice(g, loss))
            bar.set_description(f"checking {begun[-1]}" if begun[-1] else "checking")

        report = check(d, samples=args.samples, seed=args.seed, on_choice=on_choice, dtype=args.dtype)
        bar.update(bar.total - bar.n)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(_check_table(report))
    return 0 if report.agree else EXIT_DISAGREE


def _choice(g: str | None, loss: str | None) -> str:
    return ", ".join(f"{key} = {value}" for key, value in [("g", g), ("loss", loss)] if value)


def _check_table(report) -> str:
    """The report as text: per choice, a row per quantity with abs and rel error per method."""
    methods = report.methods
    if report.batch:  # the samples mix (batch normalisation in train mode): one batch's gradients
        names = {"layers": "per-layer code, summed and mean", "nodes": "the engine's program of the batch"}
        code = " and ".join(names[s] for s in report.styles)
        code += f", {report.dtype}" if report.dtype != "float64" else ""
        lines = [
            (
                f"check {report.network}: a batch of {report.samples} samples, seed {report.seed} (its "
                f"layers mix the samples); derived gradients of the batch's summed loss ({code}) "
                f"against {', '.join(methods)}"
            ),
            "abs: largest |derived - method|; rel: abs / the method's largest |value|",
        ]
    else:
        code = " and ".join({"layers": "per-layer code", "nodes": "per-node program"}[s] for s in report.styles)
        code += f", {report.dtype}" if report.dtype != "float64" else ""
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
        f"{m} {report.tolerance(m)[0]:.0e} rel + {report.tolerance(m)[1]:.0e} abs" for m in methods
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
    """LaTeX failed; the message holds the relevant lines of its log, ``log`` all of it."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


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
                raise LatexError(latex_errors(log), log)
            if "Rerun to get" not in log and "Rerun LaTeX" not in log:
                break
        return (work / tex.with_suffix(".pdf").name).read_bytes(), log


def run_handout(args: argparse.Namespace) -> int:
    if args.seed is not None and args.values is not None:
        raise CommandError("give --seed or --values, not both: the seed draws the worked example's numbers")

    def render(network: Network) -> tuple[str, Callable[[], dict[str, str]]]:
        detail = args.detail or default_detail(network)
        values = _given_values(args, network)
        return f"typesetting ({detail})", lambda: render_handout(network, detail, seed=args.seed, values=values)

    return _run_documents("handout", args, render, ["handout"])


def _run_documents(
    command_name: str, args: argparse.Namespace,
    render: Callable[[Network], tuple[str, Callable[[], dict[str, str]]]], stems: list[str],
) -> int:
    """What handout and exercises share: the network within budget, its documents rendered
    (``render`` gives the progress label and the call that makes the files) and written all
    or nothing, ``stems`` compiled to PDF where TeX is installed, and a warning for lines
    that stick out of a page."""
    network = _network(args)
    budget.enforce(command_name, [budget.scalar_graph(network, copies=2)], _limits(args))
    target = _output_dir(args, network)
    progress = Progress(args.quiet)
    start = time.perf_counter()
    command = None if args.no_pdf else _tex_compiler()
    with staged_output(target) as staging:  # checks the output folder before any work
        print(_summary(network))
        label, make_files = render(network)
        with progress.bar(label, 1, "document") as bar:
            try:
                files = make_files()
            except ValueError as error:  # the given numbers do not fit (checked here first)
                if not str(error).startswith("values"):
                    raise
                raise CommandError(f"--values {args.values}: {str(error).removeprefix('values: ')}") from None
            bar.update(1)
        written, logs = _write_documents(staging, files, stems if command else [], command, args, progress)
    print(f"wrote {', '.join(str(target / name) for name in written)} "
          f"in {time.perf_counter() - start:.1f} s")
    if command is None and not args.no_pdf:
        print(f"symbackprop: {TEX_INSTALL_HINT}", file=sys.stderr)
    for stem, log in logs.items():
        wide = [width for width, _ in overfull_boxes(log) if width > OVERFULL_TOLERANCE]
        if wide:
            where = target / f"{stem}.log" if args.keep_log else "rerun with --keep-log to see where"
            print(f"symbackprop: warning: {len(wide)} line(s) of {stem}.pdf stick out of the page "
                  f"(up to {max(wide):.0f}pt); {where}", file=sys.stderr)
    return 0


def _write_documents(
    staging: Path, files: dict[str, str], stems: list[str], command: list[str] | None,
    args: argparse.Namespace, progress: Progress,
) -> tuple[list[str], dict[str, str]]:
    """Write ``files`` into ``staging`` and compile ``stems`` (``["handout"]``) to PDF: the
    names written, in order, and LaTeX's log of each stem (kept beside them only with
    --keep-log)."""
    written, logs = list(files), {}
    for name, text in files.items():
        (staging / name).write_text(text, encoding="utf-8")
    for stem in stems:
        with progress.bar(f"compiling {stem}.pdf with {command[0]}", 1, "pdf") as bar:
            try:
                pdf, log = compile_pdf(staging / f"{stem}.tex", command)
            except LatexError as error:
                raise CommandError(_latex_failure(error, stem), details=str(error)) from None
            bar.update(1)
        logs[stem] = log
        (staging / f"{stem}.pdf").write_bytes(pdf)
        written.append(f"{stem}.pdf")
        if args.keep_log:
            (staging / f"{stem}.log").write_text(log, encoding="utf-8")
            written.append(f"{stem}.log")
    return written, logs


def _latex_failure(error: LatexError, stem: str = "handout") -> str:
    """The message for a LaTeX failure: its relevant lines, and where its whole log was kept
    (outside the output folder, which gets nothing)."""
    kept = ""
    if error.log:
        with tempfile.NamedTemporaryFile("w", prefix=f"symbackprop-{stem}-", suffix=".log",
                                         delete=False, encoding="utf-8") as file:
            file.write(error.log)
        kept = f"; the whole log: {file.name}"
    return (f"LaTeX failed on {stem}.tex, nothing written (--no-pdf writes the .tex and .md "
            f"alone){kept}")


# ---- exercises ------------------------------------------------------------------------------


def run_exercises(args: argparse.Namespace) -> int:
    def render(network: Network) -> tuple[str, Callable[[], dict[str, str]]]:
        count = len(network.layers)
        wrong = [l for l in args.layers or () if l > count]
        if wrong:
            raise CommandError(
                f"--layers: no layer {', '.join(map(str, wrong))} in {network.name}; its layers are 1 to {count}"
            )
        values = _given_values(args, network)
        label = f"choosing the exercises (seed {args.seed})"
        return label, lambda: render_exercises(network, seed=args.seed, values=values, kinds=args.only,
                                               layers=args.layers)

    return _run_documents("exercises", args, render, ["exercises", "solutions"])


def _given_values(args: argparse.Namespace, network: Network) -> tuple[Any, Any, dict[str, Any]] | None:
    return None if args.values is None else load_values(Path(args.values), network)


def _kinds(text: str) -> list[str]:
    """An argparse type: exercise kinds, comma-separated, each one of EXERCISE_KINDS."""
    kinds = [kind.strip() for kind in text.split(",")]
    unknown = [kind for kind in kinds if kind not in EXERCISE_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"has no kind {', '.join(map(repr, unknown))}; choose from {', '.join(EXERCISE_KINDS)}"
        )
    return kinds


def _layer_numbers(text: str) -> list[int]:
    """An argparse type: layer numbers from 1, comma-separated."""
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be layer numbers from 1, comma-separated, got {text!r}") from None
    if min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"must be layer numbers from 1, got {min(numbers)}")
    return numbers


# ---- entry point ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="symbackprop",
        description="Derive backpropagation symbolically for a small convolutional or dense network: "
        "closed-form gradients of every weight, LaTeX handouts, numeric code, and checks "
        "against independent methods. Exit status: 0 done, 1 check found gradients that "
        "disagree, 2 a problem to fix (arguments, spec, output, budget), 3 a bug.",
    )
    parser.add_argument("--version", action="version", version=f"symbackprop {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    derive = _command(
        commands, "derive", run_derive, help="derive every dL/dw and write derivation.json",
        description="Derive dL/dw for every weight and write derivation.json (chain forms, "
        "position sets, general formulas per layer and closed forms where small; a sample of "
        "elements past a size bound) and gradients.py into the output folder "
        "(default outputs/NAME/).",
        output=True, limits=("edges", "closed"),
    )
    derive.add_argument("--closed-forms", choices=CLOSED_FORMS, default="small",
                        help="which closed forms derivation.json holds: none, small (up to 1,000 "
                        "tree nodes each; the default) or all (refused past --max-closed-size)")
    derive.add_argument(
        "--style", choices=["layers", "nodes"], default=None,
        help="gradients.py's code: a block per layer, or a line per node of the graph "
        "(default: per layer, with the per-node program too for a small network)",
    )
    derive.add_argument("--dtype", choices=DTYPES, default="float64",
                        help="what gradients.py computes in and returns: float64 (the default) or "
                        "float32 (inputs of another dtype converted at the call)")

    check = _command(
        commands, "check", run_check,
        help="prove the derived gradients right against independent methods",
        description="Evaluate the derived gradients at random points and compare them with an "
        "independent numpy backprop, finite differences and PyTorch autograd (if installed). "
        "Exit status 0 when all agree, 1 when any disagree, 2 for a problem to fix.",
        limits=("memory", "evaluations"), batch_norm=True,
    )
    check.add_argument("--samples", type=_count(1), default=3, metavar="N", help="random points (default 3)")
    check.add_argument("--seed", type=_count(0), default=0, metavar="S", help="random seed, 0 or more (default 0)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--dtype", choices=DTYPES, default="float64",
                       help="check the code that computes in this dtype: float32 is compared with "
                       "the float64 code, the reference and torch in float32, within 1e-4 of each "
                       "quantity's largest magnitude + 1e-6 (default float64: 1e-9 + 1e-12)")

    handout = _command(
        commands, "handout", run_handout, help="write a teaching handout (LaTeX, PDF, Markdown)",
        description="Write handout.tex and handout.md for the network and compile handout.pdf "
        "when latexmk or pdflatex is installed.",
        output=True, limits=("edges",), batch_norm=True,
    )
    handout.add_argument("--seed", type=_count(0), default=None, metavar="N",
                         help="draw the worked example's numbers with this seed (default 0)")
    handout.add_argument("--values", metavar="FILE",
                         help="the worked example's numbers from an .npz, YAML or JSON file with keys "
                         "x, y and each parameter (W1, b1, ...), of the network's shapes")
    handout.add_argument("--no-pdf", action="store_true", help="write the .tex and .md only")
    handout.add_argument("--keep-log", action="store_true", help="keep LaTeX's handout.log beside the PDF")
    handout.add_argument(
        "--detail", choices=["full", "summary"],
        help="full: every node and weight; summary: per layer the general formulas, a few position "
        "sets, one weight per parameter derived in full (default: full for a small network)",
    )

    exercises = _command(
        commands, "exercises", run_exercises,
        help="write an exercise sheet and its answer key (LaTeX, PDF, Markdown)",
        description="Write exercises.tex/.md and solutions.tex/.md for the network — the forward "
        "pass, position sets, a weight's gradient by the chain rule, what an upstream gradient "
        "depends on, the tensor view — every answer computed by the engine, and compile "
        "exercises.pdf and solutions.pdf when latexmk or pdflatex is installed. Another seed "
        "gives other numbers and other questions.",
        output=True, limits=("edges",), batch_norm=True,
    )
    exercises.add_argument("--seed", type=_count(0), default=0, metavar="N", help="numbers and questions (default 0)")
    exercises.add_argument("--values", metavar="FILE",
                           help="the numbers to use from an .npz, YAML or JSON file with keys x, y and "
                           "each parameter (W1, b1, ...), of the network's shapes; the seed still "
                           "chooses the questions")
    exercises.add_argument("--only", type=_kinds, metavar="KIND[,KIND]",
                           help=f"these kinds of exercise alone: {', '.join(EXERCISE_KINDS)}")
    exercises.add_argument("--layers", type=_layer_numbers, metavar="L[,L]",
                           help="questions about these layers only (numbered from 1)")
    exercises.add_argument("--no-pdf", action="store_true", help="write the .tex and .md only")
    exercises.add_argument("--keep-log", action="store_true", help="keep LaTeX's logs beside the PDFs")
    return parser


def _version() -> str:
    try:
        return metadata.version("symbackprop")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """symbackprop's own warnings (a degenerate setup, a point near a kink) on stderr as one
    line each, "symbackprop: warning: ...", each once; other warnings as Python shows them."""
    said: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if not issubclass(category, SYMBACKPROP_WARNINGS):
            return python_shows(message, category, filename, lineno, file, line)
        text = " ".join(str(message).split())
        if text not in said:
            said.add(text)
            print(f"symbackprop: warning: {text}", file=sys.stderr, flush=True)
        return None

    with warnings.catch_warnings():
        warnings.simplefilter("always", SYMBACKPROP_WARNINGS)  # shown here, once each
        python_shows = warnings.showwarning
        warnings.showwarning = show
        yield


class Terminated(BaseException):
    """SIGTERM, raised where the command is, so that its scratch folders are cleaned up."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    # SIGTERM would end the process where it stands, leaving a half-written staging folder:
    # raised as an exception instead, it unwinds through staged_output like an interrupt
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        return _main(argv)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    try:
        with _warnings_as_lines():
            args = build_parser().parse_args(argv)
            return args.run(args)
    except (CommandError, SpecError, OverBudget) as error:
        message = " ".join(str(error).split())  # one line, whatever a value held
        print(f"symbackprop: error: {message}", file=sys.stderr)
        if getattr(error, "details", ""):
            print(error.details, file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `symbackprop ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("symbackprop: interrupted; nothing written", file=sys.stderr)
        return 130
    except Terminated:
        print("symbackprop: terminated; nothing written", file=sys.stderr)
        return 128 + signal.SIGTERM
    except MemoryError:
        print("symbackprop: error: out of memory; nothing written (a smaller network, or a "
              "lower --max-edges to be told in advance)", file=sys.stderr)
        return EXIT_USAGE
    except Exception:  # noqa: BLE001 - a bug: show where, and keep exit status 1 for disagreeing gradients
        traceback.print_exc()
        print("symbackprop: internal error: this is a bug in symbackprop; please report it "
              "with the traceback above", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
