"""A spec's errors: ``Problem`` (``FILE:LINE: dotted.field.path: message``), ``SpecError`` holding them in file
order, and the map from a field path to the YAML line that set it.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, get_args

import yaml
from pydantic import (
    BaseModel,
)

from aesweep.spec.distributions import DIST_KEYS, UNION_TAG, Distribution

# --------------------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------------------
# Loading, with errors that point at the file, line and field.


class Problem:
    """One error in a spec: ``FILE:LINE: dotted.field.path: message``."""

    def __init__(self, file: str, line: int | None, path: str, message: str, column: int | None = None):
        self.file, self.line, self.path, self.message, self.column = file, line, path, message, column

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}"

    def __repr__(self) -> str:
        return f"Problem({str(self)!r})"


class SpecError(Exception):
    """A spec that cannot run; ``problems`` holds one entry per error, in file order."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


def line_map(node: yaml.Node, problems: list[Problem], file: str) -> dict[tuple, int]:
    """Path tuple -> 1-based line of that key (or sequence item), from the composed YAML node tree."""
    lines: dict[tuple, int] = {(): node.start_mark.line + 1}

    def walk(n: yaml.Node, path: tuple) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, value_node in n.value:
                key = key_node.value
                if key in seen:
                    problems.append(Problem(file, key_node.start_mark.line + 1, loc_path((*path, key)),
                                            "duplicate key"))
                seen.add(key)
                lines[(*path, key)] = key_node.start_mark.line + 1
                walk(value_node, (*path, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                lines[(*path, i)] = item.start_mark.line + 1
                walk(item, (*path, i))

    walk(node, ())
    return lines


def clean_loc(loc: Iterable[Any]) -> tuple:
    """A pydantic error location as the user's path: union tags stripped."""
    parts = [p for p in loc if not (isinstance(p, str) and p.startswith(UNION_TAG))]
    # The distribution union's tag repeats the key that follows it (loc: ..., 'choice', 'choice', 0).
    return tuple(p for i, p in enumerate(parts)
                 if not (p in DIST_KEYS and i + 1 < len(parts) and parts[i + 1] == p))


def loc_path(loc: Iterable[Any]) -> str:
    return ".".join(str(p) for p in clean_loc(loc)) or "(top level)"


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The config section class inside a field annotation (through Annotated and unions), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return None if issubclass(annotation, Distribution) else annotation
    for arg in get_args(annotation):
        found = _section_model(arg)
        if found is not None:
            return found
    return None


def _keys_at(root: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the section at ``loc`` accepts, for 'did you mean' suggestions."""
    model: type[BaseModel] | None = root
    for key in loc:
        if model is None or key not in model.model_fields:
            return []
        model = _section_model(model.model_fields[key].annotation)
    return list(model.model_fields) if model is not None else list(DIST_KEYS)


def error_message(error: dict[str, Any], root: type[BaseModel]) -> str:
    """A pydantic error as the one-line message a user reads; unknown keys get a suggestion from the keys
    ``root`` (the model validated) accepts at that place."""
    kind, msg, ctx = error["type"], error["msg"], error.get("ctx", {})
    if kind == "extra_forbidden":
        import difflib

        loc = clean_loc(error["loc"])
        close = difflib.get_close_matches(str(loc[-1]), _keys_at(root, loc[:-1]), n=1)
        return "unknown key" + (f"; did you mean {close[0]}?" if close else "")
    if kind == "union_tag_invalid":
        return f"{ctx.get('tag')} is not allowed for this field; use one of: {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"a distribution has exactly one of: {', '.join(DIST_KEYS)}"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg[0].lower() + msg[1:] if msg else kind
