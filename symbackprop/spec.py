"""Network descriptions in YAML or JSON files.

The file holds what ``Network`` takes, with the same keyword names::

    input: [1, 4, 4]                 # channels, height, width
    layers:
      - conv: {kernel_size: 2, activation: g}
      - conv: {kernel_size: 2, activation: g}
      - dense: {units: 2, activation: g}
    loss: generic

Files are read with pyyaml's safe loader (JSON is read with ``json``); nothing in
them is evaluated. A key written twice in one mapping is refused, not silently
overwritten. Every problem is a ``SpecError`` that names its place.

Imports ``errors`` and ``network``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError, shown
from .network import Network, safe_name


def load_spec(path: str | Path) -> Network:
    """The network described by a YAML (``.yaml``/``.yml``) or JSON (``.json``) file.

    The network's name, used for its output folder, is the spec's ``name`` or, when it has
    none, one made from the file's stem (``safe_name``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: cannot read it ({error})") from None
    try:
        data = parse(text, json_format=path.suffix.lower() == ".json")
        return Network.from_dict(data, name=safe_name(path.stem))
    except SpecError as error:
        raise SpecError(f"{path}: {error}") from None


def parse(text: str, json_format: bool = False) -> Any:
    """The data in a spec's text, YAML (or JSON), with no key repeated; SpecError otherwise."""
    try:
        if json_format:
            return json.loads(text, object_pairs_hook=_unique_keys)
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: nothing evaluated
    except SpecError:  # a duplicate key, from the hooks below
        raise
    except json.JSONDecodeError as error:
        raise SpecError(f"not valid JSON (line {error.lineno}: {error.msg})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or "cannot parse"
        raise SpecError(f"not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise SpecError("nested too deeply to be a network spec") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise SpecError(f"cannot read a value: {error}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise SpecError(f"duplicate key {shown(key)}: each key may appear once in a mapping")
        mapping[key] = value
    return mapping


class _UniqueKeyLoader(yaml.SafeLoader):
    """pyyaml's safe loader, refusing a key written twice in one mapping (pyyaml keeps the last).

    Keys brought in by a merge (``<<: *defaults``) may still be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable: the safe loader refuses it with its own message
                continue
            if duplicate:
                raise SpecError(
                    f"duplicate key {shown(key)} (line {key_node.start_mark.line + 1}): "
                    "each key may appear once in a mapping"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
