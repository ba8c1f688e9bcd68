"""Copying the runtime helpers into a generated module: the definitions it uses, nothing else.

``runtime_source(code)`` reads the modules of ``numeric/runtime/`` once, finds the runtime
names ``code`` uses, then the names those definitions use in turn, and returns their source
in the runtime's order (module by module, as ``RUNTIME`` lists them, each in its own order),
so a module is exactly as long as what it runs. The helpers stay real modules, tested as
such; the generated modules carry a copy, flat (the runtime's imports of one another left
out), and need no symbackprop.

``register_source(module, source, label)`` names a compiled module's text for tracebacks:
registered in ``linecache`` for as long as the module lives, then forgotten.

Imports the standard library only (it reads the runtime's files as text, through ``ast``).
"""

from __future__ import annotations

import ast
import itertools
import linecache
import weakref
from functools import cache
from pathlib import Path
from types import ModuleType

_RUNTIME_DIR = Path(__file__).with_name("runtime")
# The runtime's modules, in the order a generated module holds their definitions.
RUNTIME = tuple(_RUNTIME_DIR / name for name in ("calls.py", "functions.py", "windows.py", "chunks.py"))
RUNTIME_JAX = Path(__file__).with_name("runtime_jax.py")


@cache
def _definitions(
    path: Path,
) -> tuple[dict[str, tuple[int, str, frozenset[str]]], list[tuple[str, frozenset[str]]], list[str]]:
    """name -> (position, source, names it uses), for each top-level definition of a runtime
    file; its import lines, each with the names it binds (``__future__`` and the package's
    own left out); and its set-up statements (calls at the top level, such as jax's
    configuration)."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    definitions, imports, setup = {}, [], []
    for position, node in enumerate(tree.body):
        source = _segment(lines, node)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            own = isinstance(node, ast.ImportFrom) and (node.level or node.module == "__future__")
            if not own:
                bound = frozenset((alias.asname or alias.name).split(".")[0] for alias in node.names)
                imports.append((source, bound))
            continue
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            setup.append(_comment_above(lines, node) + source)
            continue
        else:
            continue  # the module docstring
        used = frozenset(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
        comment = _comment_above(lines, node)
        for name in names:
            definitions[name] = (position, comment + source, used)
    return definitions, imports, setup


def _segment(lines: list[str], node: ast.stmt) -> str:
    """A top-level statement's text, as ``ast.get_source_segment`` gives it (which splits the
    whole file again for each statement). Its offsets count UTF-8 bytes."""
    first, last = node.lineno - 1, node.end_lineno - 1
    end = lines[last].encode()[: node.end_col_offset].decode()
    if first == last:
        return end[node.col_offset :]
    return lines[first][node.col_offset :] + "".join(lines[first + 1 : last]) + end


def _comment_above(lines: list[str], node: ast.AST) -> str:
    """The comment lines right above a definition (what a table's keys mean, say), from the
    file's lines (ends kept)."""
    start = end = node.lineno - 1
    while start > 0 and lines[start - 1].startswith("# ") and not lines[start - 1].startswith("# ----"):
        start -= 1
    return "".join(lines[start:end])


@cache
def runtime_names() -> frozenset[str]:
    """The names the runtime defines."""
    return frozenset(name for path in RUNTIME for name in _definitions(path)[0])


def runtime_source(code: str, backend: str = "numpy") -> str:
    """The imports and the runtime definitions that ``code`` (module text) uses, directly or
    through other definitions, in the runtime's own order. For ``backend="jax"`` the
    definitions of ``runtime_jax`` come first: they replace the runtime's of the same name."""
    files = [*RUNTIME, RUNTIME_JAX] if backend == "jax" else list(RUNTIME)
    tables = [_definitions(path) for path in files]
    lookup: dict[str, tuple[int, int, str, frozenset[str]]] = {}
    for order, (definitions, _, _) in enumerate(tables):  # a later file's name replaces
        for name, (position, source, used) in definitions.items():
            lookup[name] = (order, position, source, used)  # file by file, each in order
    wanted = _names(code)
    pending = [name for name in wanted if name in lookup]
    needed: set[str] = set()
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        pending.extend(n for n in lookup[name][3] if n in lookup and n not in needed)
    chosen = sorted({lookup[name][:3] for name in needed})  # one entry per statement
    setup = [statement for _, _, statements in tables for statement in statements]
    # the imports that the code, the definitions and the set-up use, each once: plain imports,
    # then from-imports, each group sorted; the standard library first
    used = wanted.union(*(lookup[name][3] for name in needed), *(_names(line) for line in setup))
    imports = {line for _, lines, _ in tables for line, bound in lines if bound & used}
    ordered = sorted(imports, key=lambda line: (line.startswith("from"), line))
    standard = [line for line in ordered if "numpy" not in line and "jax" not in line]
    arrays = [line for line in ordered if line not in standard]
    header = "\n".join(standard) + "\n\n" + "\n".join(arrays)
    if setup:
        header += "\n\n" + "\n".join(setup)
    return header + "\n\n\n" + "\n\n\n".join(source for *_, source in chosen) + "\n"


def _names(text: str) -> set[str]:
    """The names a piece of code reads."""
    return {n.id for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Name)}


def register_source(module: ModuleType, source: str, label: str) -> str:
    """The file name to compile ``module``'s ``source`` under, its lines registered in
    ``linecache`` so that tracebacks through the generated code show them, for as long as
    the module lives. Each module gets a name of its own (``label`` and a number): two
    networks of one name never show each other's lines, and the entry goes with its module,
    so that numeric() called on many networks does not leave one entry per call behind."""
    filename = f"<{label} #{next(_SERIALS)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    weakref.finalize(module, linecache.cache.pop, filename, None)
    return filename


_SERIALS = itertools.count(1)
