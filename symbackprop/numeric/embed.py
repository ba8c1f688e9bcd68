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


@cache
def _definitions() -> tuple[dict[str, tuple[int, str, frozenset[str]]], list[str]]:
    """name -> (position, source, names it uses), for each top-level definition of the
    runtime, and its import lines (the ``__future__`` one left out)."""
    text = RUNTIME.read_text(encoding="utf-8")
    tree = ast.parse(text)
    definitions, imports = {}, []
    for position, node in enumerate(tree.body):
        source = ast.get_source_segment(text, node, padded=False)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if not (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                imports.append(source)
            continue
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names = [node.name]
            if node.decorator_list:  # keep decorators with their definition
                start = node.decorator_list[0].lineno
                source = "\n".join(text.splitlines()[start - 1 : node.end_lineno])
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
        else:
            continue  # the module docstring
        used = frozenset(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
        comment = _comment_above(text, node)
        for name in names:
            definitions[name] = (position, comment + source, used)
    return definitions, imports


def _comment_above(text: str, node: ast.AST) -> str:
    """The comment lines right above a definition (what a table's keys mean, say)."""
    lines = text.splitlines()
    start = node.lineno - 1
    comments: list[str] = []
    while start > 0 and lines[start - 1].startswith("# ") and not lines[start - 1].startswith("# ----"):
        comments.insert(0, lines[start - 1])
        start -= 1
    return "".join(line + "\n" for line in comments)


def runtime_names() -> frozenset[str]:
    """The names the runtime defines."""
    return frozenset(_definitions()[0])


def runtime_source(code: str) -> str:
    """The imports and the runtime definitions that ``code`` (module text) uses, directly or
    through other definitions, in the runtime's own order."""
    definitions, imports = _definitions()
    wanted = {n.id for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Name)}
    pending = [name for name in wanted if name in definitions]
    needed: set[str] = set()
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        pending.extend(n for n in definitions[name][2] if n in definitions and n not in needed)
    chosen = sorted({definitions[name][:2] for name in needed})  # one entry per statement
    standard = [line for line in imports if "numpy" not in line]
    numpy = [line for line in imports if "numpy" in line]
    header = "\n".join(standard) + "\n\n" + "\n".join(numpy)  # the standard library first
    return header + "\n\n\n" + "\n\n\n".join(source for _, source in chosen) + "\n"
