"""Handout and exercise builds: time to write the text, time to typeset, pages — with the
article's full handout, measured in the same run, as the baseline.

    python benchmarks/handout.py [--no-lenet]

A = the article (full detail), B = 1x8x8 → conv 3x3 x4 → conv 3x3 x4 → dense 10 (820
weights, summary by default), LeNet-5 (61,706 weights, summary by default). Text is
``render_handout`` (derivation, worked example, document, both writers); typesetting is
what ``symbackprop handout`` runs (latexmk or pdflatex). Exercises: ``symbackprop.document
.exercises.render`` and both PDFs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import symbackprop as sb
from symbackprop.cli import _tex_compiler, compile_pdf
from symbackprop.document import default_detail, render_handout
from symbackprop.document.exercises import render as render_exercises


def network_b() -> sb.Network:
    return sb.Network(
        (1, 8, 8),
        [
            sb.Conv2D(out_channels=4, kernel_size=3, activation="sigmoid"),
            sb.Conv2D(out_channels=4, kernel_size=3, activation="sigmoid"),
            sb.Dense(units=10, activation="sigmoid"),
        ],
        loss="sse",
        name="b820",
    )


def pages(pdf: bytes) -> int:
    with tempfile.NamedTemporaryFile(suffix=".pdf") as file:
        file.write(pdf)
        file.flush()
        info = subprocess.run(
            ["pdfinfo", file.name], capture_output=True, text=True, check=True
        ).stdout
    return int(re.search(r"^Pages:\s+(\d+)", info, re.MULTILINE).group(1))


def build(files: dict[str, str], stems: list[str]) -> tuple[float, list[int]]:
    """Typeset ``stems`` of ``files``: (seconds, pages of each)."""
    command = _tex_compiler()
    if command is None:
        raise SystemExit("no latexmk or pdflatex: install TeX to measure typesetting")
    folder = Path(tempfile.mkdtemp(prefix="symbackprop-bench-"))
    try:
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        start = time.perf_counter()
        counts = [pages(compile_pdf(folder / f"{stem}.tex", command)[0]) for stem in stems]
        return time.perf_counter() - start, counts
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-lenet", action="store_true", help="skip LeNet-5 (about a minute)")
    args = parser.parse_args()
    networks = [("A article", sb.presets.article()), ("B 820 weights", network_b())]
    if not args.no_lenet:
        networks.append(("LeNet-5", sb.presets.lenet5()))

    print(
        f"{'handout':<16}{'detail':<9}{'text s':>8}{'typeset s':>11}{'total s':>9}{'x A':>7}{'pages':>7}"
    )
    baseline = None
    for label, net in networks:
        start = time.perf_counter()
        files = render_handout(net)
        text = time.perf_counter() - start
        typeset, (count,) = build(files, ["handout"])
        total = text + typeset
        baseline = baseline or total
        print(
            f"{label:<16}{default_detail(net):<9}{text:>8.1f}{typeset:>11.1f}{total:>9.1f}"
            f"{total / baseline:>7.1f}{count:>7}"
        )

    print(
        f"\n{'exercises':<16}{'seed':<9}{'text s':>8}{'typeset s':>11}{'total s':>9}{'x A':>7}{'pages':>7}"
    )
    for label, net in networks[:1] + networks[2:]:
        start = time.perf_counter()
        files = render_exercises(net, seed=0)
        text = time.perf_counter() - start
        typeset, counts = build(files, ["exercises", "solutions"])
        total = text + typeset
        print(
            f"{label:<16}{0:<9}{text:>8.1f}{typeset:>11.1f}{total:>9.1f}{total / baseline:>7.1f}"
            f"{'+'.join(map(str, counts)):>7}"
        )


if __name__ == "__main__":
    main()
