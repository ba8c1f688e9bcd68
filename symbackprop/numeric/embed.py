"""Copying the runtime helpers into a generated module: the definitions it uses, nothing else.

``runtime_source(code)`` reads ``runtime.py`` once, finds the runtime names ``code`` uses,
then the names those definitions use in turn, and returns their source in the file's order,
so a module is exactly as long as what it runs. The helpers stay a real module, tested as
such; the generated modules carry a copy and need no symbackprop.

Imports the standard library only (it reads ``runtime.py`` as text, through ``ast``).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

RUNTIME = Path(__file__).with_name("runtime.py")
RUNTIME_JAX = Path(__file__).with_name("runtime_jax.py")


@cache
def _definitions(path: Path) -> tuple[dict[str, tuple[int, str, frozenset[str]]], list[str], list[str]]:
    """name -> (position, source, names it uses), for each top-level definition of a runtime
    file; its import lines (``__future__`` and the package's own left out); and its set-up
    statements (calls at the top level, such as jax's configuration)."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    definitions, imports, setup = {}, [], []
    for position, node in enumerate(tree.body):
        source = _segment(lines, node)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            own = isinstance(node, ast.ImportFrom) and (node.level or node.module == "__future__")
            if not own:
                imports.append(source)
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
    return frozenset(_definitions(RUNTIME)[0])


def runtime_source(code: str, backend: str = "numpy") -> str:
    """The imports and the runtime definitions that ``code`` (module text) uses, directly or
    through other definitions, in the runtime's own order. For ``backend="jax"`` the
    definitions of ``runtime_jax`` come first: they replace the runtime's of the same name."""
    files = [RUNTIME_JAX, RUNTIME] if backend == "jax" else [RUNTIME]
    tables = [_definitions(path) for path in files]
    lookup: dict[str, tuple[int, int, str, frozenset[str]]] = {}
    for order, (definitions, _, _) in reversed(list(enumerate(tables))):
        for name, (position, source, used) in definitions.items():
            lookup[name] = (-order, position, source, used)  # the base file first, in order
    wanted = {n.id for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Name)}
    pending = [name for name in wanted if name in lookup]
    needed: set[str] = set()
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        pending.extend(n for n in lookup[name][3] if n in lookup and n not in needed)
    chosen = sorted({lookup[name][:3] for name in needed})  # one entry per statement
    imports = list(dict.fromkeys(line for _, lines, _ in tables for line in lines))
    standard = [line for line in imports if "numpy" not in line and "jax" not in line]
    arrays = [line for line in imports if line not in standard]
    header = "\n".join(standard) + "\n\n" + "\n".join(arrays)  # the standard library first
    setup = [statement for _, _, statements in tables for statement in statements]
    if setup:
        header += "\n\n" + "\n".join(setup)
    return header + "\n\n\n" + "\n\n\n".join(source for *_, source in chosen) + "\n"
