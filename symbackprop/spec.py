"""Network descriptions in YAML or JSON files.

The file holds what ``Network`` takes, with the same keyword names::

    input: [1, 4, 4]                 # channels, height, width
    layers:
      - conv: {kernel_size: 2, activation: g}
      - conv: {kernel_size: 2, activation: g}
      - dense: {units: 2, activation: g}
    loss: generic

Files are read with pyyaml's safe loader (JSON is read with ``json``); nothing in
them is evaluated. Every problem is a ``SpecError`` that names its place.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .errors import SpecError
from .network import Network


def load_spec(path: str | Path) -> Network:
    """The network described by a YAML (``.yaml``/``.yml``) or JSON (``.json``) file.

    The network's name, used for its output folder, is the spec's ``name`` or the
    file's stem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: cannot read it ({error})") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise SpecError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or "cannot parse"
        raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
    try:
        return Network.from_dict(data, name=_safe_name(path.stem))
    except SpecError as error:
        raise SpecError(f"{path}: {error}") from None


def _safe_name(stem: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem)
    return cleaned or "network"
