"""Every misuse of the command line or a spec: one line on stderr, exit 2, nothing written.

One table of misuses, each run through ``main`` in a fresh folder; then the I/O problems
(an occupied or impossible -o, a full disk, a move that fails half way) and the exit
statuses that are not 2.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from symbackprop import cli
from symbackprop.cli import main

TINY = "input: [1, 3, 3]\nlayers:\n  - conv: {kernel_size: 2, activation: sigmoid}\n  - dense: {units: 1}\nloss: sse\n"
BIG = (  # 3x64x64, two 16-channel 3x3 convs with padding 1 and relu, dense 10: ~12 million edges
    "input: [3, 64, 64]\nlayers:\n"
    "  - conv: {kernel_size: 3, out_channels: 16, padding: 1, activation: relu}\n"
    "  - conv: {kernel_size: 3, out_channels: 16, padding: 1, activation: relu}\n"
    "  - dense: {units: 10}\nloss: sse\n"
)
GRAPH = (  # a residual block: the stem read by the body and by the addition
    "name: skip\ninput: [1, 4, 4]\nlayers:\n"
    "  - conv: {out_channels: 2, kernel_size: 1, activation: tanh}\n    name: stem\n"
    "  - conv: {out_channels: 2, kernel_size: 3, padding: 1}\n    name: body\n"
    "  - add: {}\n    inputs: [stem, body]\n"
    "  - dense: {units: 2}\nloss: sse\n"
)

# (files to create: name → text, the command line, words the one line must hold)
MISUSES = [
    ({}, ["frobnicate"], "invalid choice: 'frobnicate'"),
    ({}, [], "the following arguments are required: COMMAND"),
    ({}, ["derive", "--bogus"], "unrecognized arguments: --bogus"),
    ({}, ["check", "--seed", "-1"], "--seed must be 0 or more, got -1"),
    ({}, ["check", "--seed", "x"], "--seed must be an integer, got 'x'"),
    ({}, ["check", "--samples", "0"], "--samples must be 1 or more, got 0"),
    ({}, ["derive", "--max-edges", "0"], "--max-edges must be 1 or more, got 0"),
    (
        {},
        ["derive", "--closed-forms", "some"],
        "--closed-forms invalid choice: 'some' (choose from 'none', 'small', 'all')",
    ),
    ({}, ["derive", "--preset", "vgg"], "invalid choice: 'vgg'"),
    ({}, ["derive", "missing.yaml"], "missing.yaml: no such file"),
    (
        {"net.yaml": TINY},
        ["derive", "net.yaml", "--preset", "article"],
        "give a SPEC file or --preset",
    ),
    ({"empty.yaml": ""}, ["derive", "empty.yaml"], "input and layers (loss and name optional)"),
    (
        {"dup.yaml": "input: [1, 2, 2]\ninput: [1, 3, 3]\nlayers: [{dense: {units: 1}}]\n"},
        ["derive", "dup.yaml"],
        "duplicate key 'input' (line 2)",
    ),
    (
        {"dup.json": '{"input": [1, 2, 2], "layers": [{"dense": {"units": 1, "units": 2}}]}'},
        ["check", "dup.json"],
        "duplicate key 'units'",
    ),
    (
        {"long.yaml": f"name: {'a' * 300}\n" + TINY},
        ["derive", "long.yaml"],
        "name: must be 1 to 64 ASCII",
    ),
    ({"cjk.yaml": "name: 网络\n" + TINY}, ["handout", "cjk.yaml", "--no-pdf"], "got '网络'"),
    (
        {"bad.yaml": "input: [1, 2, 2]\nlayers:\n  - conv: {kernel_size: 3}\n"},
        ["derive", "bad.yaml"],
        "layer 1 (conv): kernel 3x3 is larger than its padded input 2x2",
    ),
    (
        {"digits.yaml": "input: [1, 2, 2]\nlayers: [{dense: {units: " + "9" * 5000 + "}}]\n"},
        ["derive", "digits.yaml"],
        "cannot read a value: Exceeds the limit (4300 digits)",
    ),
    (
        {"huge.yaml": "input: [1, 2, 2]\nlayers: [{dense: {units: " + "9" * 1000 + "}}]\n"},
        ["derive", "huge.yaml"],
        "edges (estimated more than a century, more memory than any machine has)",
    ),
    (
        {"big.yaml": BIG},
        ["derive", "big.yaml"],
        "derive would build a scalar graph of 11,993,108 edges (estimated",
    ),
    ({"big.yaml": BIG}, ["handout", "big.yaml"], "more than --max-edges allows (1,000,000)"),
    (
        {"tiny.yaml": TINY},
        ["check", "tiny.yaml", "--samples", "100000"],
        "check would run finite differences of 1,700,000 loss evaluations",
    ),
    (
        {"graph.yaml": GRAPH.replace("inputs: [stem, body]", "inputs: [stem, bodyy]")},
        ["derive", "graph.yaml"],
        (
            "graph.yaml: layer 3 (add): inputs names 'bodyy', which is not an earlier layer's name; "
            "known here: input, stem, body"
        ),
    ),
    (
        {"graph.yaml": GRAPH.replace("[stem, body]", "[stem, late]").replace("{units: 2}", "{units: 2}\n    name: late")},
        ["check", "graph.yaml"],
        "layer 3 (add): inputs names 'late', which is not an earlier layer's name",
    ),
    (
        {"graph.yaml": GRAPH.replace("inputs: [stem, body]", "inputs: [stem, stem]")},
        ["derive", "graph.yaml"],
        (
            "graph.yaml: layer 2 (conv): nothing reads its output on the way to the last layer; give it "
            "to a later layer's inputs, or remove it"
        ),
    ),
    (
        {"graph.yaml": GRAPH.replace("out_channels: 2, kernel_size: 3", "out_channels: 1, kernel_size: 3")},
        ["check", "graph.yaml"],
        "graph.yaml: layer 3 (add): its inputs have shapes 2x4x4 and 1x4x4; an addition needs one shape",
    ),
    (
        {"graph.yaml": GRAPH.replace("name: body", "name: stem").replace("[stem, body]", "[stem, stem]")},
        ["derive", "graph.yaml"],
        "graph.yaml: layer 2: name 'stem' is layer 1's already",
    ),
    ({"file": "occupied"}, ["derive", "-o", "file"], "file exists and is not a folder"),
    ({}, ["handout", "--no-pdf", "-o", "/proc/nope"], "cannot create the output folder /proc/nope"),
]


@pytest.mark.parametrize(
    ("files", "argv", "words"), MISUSES, ids=[" ".join(m[1]) or "nothing" for m in MISUSES]
)
def test_a_misuse_is_one_line_exit_2_and_writes_nothing(
    tmp_path, monkeypatch, capsys, files, argv, words
):
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    before = _tree(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("symbackprop: error: "), err
    assert out == ""
    assert words in err
    assert "Traceback" not in err
    assert _tree(tmp_path) == before  # nothing written, not even an empty outputs/ folder


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_misuse_in_a_real_process_has_no_traceback(tmp_path):
    """The same through the installed entry point: the process's own stderr and status."""
    done = subprocess.run(
        [sys.executable, "-m", "symbackprop.cli", "check", "--seed", "-1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2
    assert (
        done.stderr
        == "symbackprop: error: --seed must be 0 or more, got -1 (see symbackprop check --help)\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_closed_forms_all_on_lenet5_is_refused_with_its_size(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["derive", "--preset", "lenet5", "--closed-forms", "all", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "derive --closed-forms all would write closed forms of" in err
    assert "far too large to do at any limit" in err
    assert list(tmp_path.iterdir()) == []


def test_the_budget_refuses_before_building_anything(tmp_path, monkeypatch):
    """Refused from the shapes alone: the graph is never touched."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "big.yaml").write_text(BIG)

    def no_graph(network):
        raise AssertionError("the graph was built")

    monkeypatch.setattr(cli.Network, "derive", no_graph)
    for command in ("derive", "handout"):
        assert main([command, "big.yaml"]) == 2


@pytest.mark.slow
def test_check_of_the_big_net_is_done_in_bounded_time(tmp_path, monkeypatch, capsys):
    """check needs no scalar graph (per-layer code, sampled finite differences): the
    3x64x64 net that derive and handout refuse is checked in seconds."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "big.yaml").write_text(BIG)
    assert main(["check", "big.yaml", "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert "all agree" in out
    assert "finite differences on a seeded sample of elements: x 200 of 12288" in out


def test_check_of_a_huge_input_is_refused_before_it_eats_the_memory(tmp_path, capsys):
    # a 1x2000x2000 input once grew check to 24 GB before the kernel killed it, after 137 s
    (tmp_path / "huge.yaml").write_text(
        "input: [1, 2000, 2000]\nlayers:\n  - conv: {out_channels: 2, kernel_size: 3, activation: relu}\n"
        "  - conv: {out_channels: 2, kernel_size: 3}\n  - dense: {units: 10}\nloss: cross_entropy\n"
    )
    started = time.perf_counter()
    assert main(["check", str(tmp_path / "huge.yaml")]) == 2
    assert time.perf_counter() - started < 10
    error = capsys.readouterr().err
    assert "check would hold arrays of 100,698 MB" in error
    assert "more than --max-memory allows (8,000); rerun with --max-memory 100698 to go ahead" in error


def test_check_takes_no_max_edges_it_would_not_enforce(capsys):
    assert main(["check", "--max-edges", "5"]) == 2
    assert "unrecognized arguments: --max-edges" in capsys.readouterr().err


def test_raising_the_limit_lets_the_work_go_ahead(tmp_path, capsys):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    assert main(["derive", str(spec), "--max-edges", "10", "-o", str(tmp_path / "a")]) == 2
    # 16 + 4 edges into the conv's sums and activations, 4 + 1 into the dense's, 1 into the loss
    assert "would build a scalar graph of 26 edges" in capsys.readouterr().err
    assert main(["derive", str(spec), "--max-edges", "26", "-o", str(tmp_path / "a")]) == 0


# ---- output: occupied, impossible, full ---------------------------------------------------------


def test_an_output_file_that_is_a_folder_is_refused_and_nothing_changes(tmp_path, capsys):
    (tmp_path / "derivation.json").mkdir()
    (tmp_path / "gradients.py").write_text("old")
    assert main(["derive", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "derivation.json is a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["derivation.json", "gradients.py"]
    assert (tmp_path / "gradients.py").read_text() == "old"


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    real_write = Path.write_text

    def full(self, *args, **kwargs):
        if self.name == "gradients.py":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "new" / "folder"
    assert main(["derive", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"symbackprop: error: cannot write {out / 'gradients.py'}: "
        "No space left on device; nothing written\n"
    )
    assert list(tmp_path.iterdir()) == []  # the folders made for the output are gone too


def test_a_move_failing_half_way_puts_the_old_files_back(tmp_path, monkeypatch, capsys):
    for name in ("derivation.json", "gradients.py"):
        (tmp_path / name).write_text(f"old {name}")
    real_replace = os.replace

    failed = []

    def failing(source, destination):  # the second file's move fails, once
        if Path(source).name == "gradients.py" and ".staging-" in str(source) and not failed:
            failed.append(source)
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(destination))
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", failing)
    assert main(["derive", "-o", str(tmp_path)]) == 2
    assert "Input/output error; nothing written" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["derivation.json", "gradients.py"]
    assert (tmp_path / "derivation.json").read_text() == "old derivation.json"


def test_existing_files_are_replaced_all_together_on_success(tmp_path, capsys):
    (tmp_path / "derivation.json").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["derive", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "derivation.json",
        "gradients.py",
        "notes.txt",
    ]
    assert (tmp_path / "derivation.json").read_text().startswith("{")


@pytest.mark.slow  # seconds: the quick run (-m "not slow") stays under a minute
def test_handout_leaves_no_log_on_success_unless_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "compile_pdf", lambda tex, command: (b"%PDF-1.5 fake", "the log"))
    monkeypatch.setattr(cli, "_tex_compiler", lambda: ["pdflatex"])
    assert main(["handout", "-o", str(tmp_path / "a")]) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "handout.md",
        "handout.pdf",
        "handout.tex",
    ]
    assert main(["handout", "--keep-log", "-o", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "handout.log").read_text() == "the log"


def test_handout_and_exercises_warn_of_lines_that_stick_out_of_a_page(tmp_path, monkeypatch, capsys):
    log = "Overfull \\hbox (25.0pt too wide) in paragraph at lines 7--9\nOverfull \\hbox (3.0pt too wide)\n"
    monkeypatch.setattr(cli, "compile_pdf", lambda tex, command: (b"%PDF-1.5 fake", log))
    monkeypatch.setattr(cli, "_tex_compiler", lambda: ["pdflatex"])
    assert main(["handout", "-q", "-o", str(tmp_path / "a")]) == 0
    assert capsys.readouterr().err == (
        "symbackprop: warning: 1 line(s) of handout.pdf stick out of the page (up to 25pt); "
        "rerun with --keep-log to see where\n"  # 3 pt is within the tolerance
    )
    assert main(["exercises", "-q", "--keep-log", "-o", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"symbackprop: warning: 1 line(s) of {stem}.pdf stick out of the page (up to 25pt); "
        f"{tmp_path / 'b' / stem}.log" for stem in ("exercises", "solutions")
    ]


# ---- exit statuses other than 2 ------------------------------------------------------------------


def test_a_bug_is_exit_3_with_its_traceback_never_1(tmp_path, monkeypatch, capsys):
    def broken(network):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli.Network, "derive", broken)
    assert main(["check", "--samples", "1"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err
    assert err.rstrip().endswith("please report it with the traceback above")


def test_interrupting_leaves_nothing(tmp_path, monkeypatch, capsys):
    def interrupted(self, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.Plan, "build", interrupted)
    out = tmp_path / "out"
    assert main(["derive", "-o", str(out)]) == 130
    assert capsys.readouterr().err == "symbackprop: interrupted; nothing written\n"
    assert not out.exists()


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.slow
def test_sigterm_while_deriving_leaves_no_staging_folder(tmp_path):
    # SIGTERM once ended the process where it stood, a half-written .staging-* folder left behind
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "symbackprop.cli", "derive", "--preset", "lenet5", "-o", str(out), "-q"],
        stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while not list(out.glob(".staging-*")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert list(out.glob(".staging-*")), "the command finished before it could be terminated"
    process.send_signal(signal.SIGTERM)
    _, error = process.communicate(timeout=60)
    assert process.returncode == 143 and "terminated; nothing written" in error
    assert not out.exists()  # the folder made for the files is gone with them
