"""Reading a sweep file: YAML (through ``yamlsafe``'s bounded reader), ``--set`` overrides and stages applied,
validated into a SweepSpec; every error becomes a ``Problem`` that points at the file, line and field.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from aesweep.spec import yamlsafe
from aesweep.spec.checks import semantic_problems
from aesweep.spec.distributions import is_distribution_like
from aesweep.spec.problems import Problem, SpecError, clean_loc, error_message, line_map, loc_path
from aesweep.spec.sweep_spec import SEARCHABLE_SECTIONS, SweepSpec

# --------------------------------------------------------------------------------------------------------------


def _lookup(data: Any, loc: tuple) -> Any:
    for key in loc:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> tuple[str, ...]:
    """Put ``value`` at ``dotted.key`` in the document (creating mappings on the way); returns the key's parts."""
    parts = tuple(key.strip().split("."))
    if not all(parts):
        raise ValueError(f"malformed key {key!r}")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value
    return parts


def apply_override(data: dict[str, Any], override: str) -> tuple[str, ...]:
    """``dotted.key=value`` (value parsed as YAML) into the document; raises ValueError on a malformed one."""
    if "=" not in override:
        raise ValueError(f"--set {override!r}: expected dotted.key=value")
    key, raw = override.split("=", 1)
    try:
        if raw.strip():
            yamlsafe.scan(raw)
        value = yaml.safe_load(raw) if raw.strip() else None
    except yamlsafe.DocumentError as err:
        raise ValueError(f"--set {key}: {err.message}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"--set {override!r}: value is not valid YAML ({err})") from None
    try:
        return _set_dotted(data, key, value)
    except ValueError:
        raise ValueError(f"--set {override!r}: malformed key") from None


def _apply_stage(data: dict[str, Any], stage: str, lines: dict[tuple, int], file: str,
                 overridden: dict[tuple, tuple[int | None, str]], problems: list[Problem]) -> None:
    """Apply the entries of ``stages.<stage>`` (dotted keys -> values) to the document."""
    table = data.get("stages")
    if not isinstance(table, dict) or stage not in table:
        known = ", ".join(table) if isinstance(table, dict) and table else "none defined"
        problems.append(Problem(file, lines.get(("stages",)), "stages", f"no stage {stage!r} (stages: {known})"))
        return
    entries = table[stage]
    if not isinstance(entries, dict):
        problems.append(Problem(file, lines.get(("stages", stage)), f"stages.{stage}",
                                "a stage is a mapping of dotted.key: value overrides"))
        return
    for key, value in entries.items():
        try:
            parts = _set_dotted(data, str(key), copy.deepcopy(value))
        except ValueError as err:
            problems.append(Problem(file, lines.get(("stages", stage, key)), f"stages.{stage}", str(err)))
        else:
            overridden[parts] = (lines.get(("stages", stage, key)), f"from stage {stage}")
    if not any(str(k) == "name" for k in entries):
        # A stage is its own sweep: its own storage directory and MLflow experiment.
        data["name"] = f"{data.get('name')}-{stage}"


def parse_spec(text: str, file: str = "<spec>", overrides: Iterable[str] = (),
               stages: Iterable[str] = ()) -> SweepSpec:
    """Parse and validate a spec document. Raises SpecError with every problem found.

    ``stages``: names under the document's ``stages:`` whose overrides apply, in order, before ``overrides``
    (the ``--set`` strings)."""
    problems: list[Problem] = []
    try:
        yamlsafe.scan(text)  # bounded before anything composes, recurses or copies the document
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError([Problem(file, mark.line + 1 if mark else None, "yaml", problem,
                                 column=mark.column + 1 if mark else None)]) from None
    except yamlsafe.DocumentError as err:
        raise SpecError([Problem(file, err.line, err.field, err.message, column=err.column)]) from None
    if node is None or not isinstance(data, dict):
        raise SpecError([Problem(file, 1, "(top level)", "a spec is a mapping with at least a name")])
    lines = line_map(node, problems, file)
    # Fields set by a stage or --set: (line to blame, where the value came from).
    overridden: dict[tuple, tuple[int | None, str]] = {}
    for stage in stages:
        _apply_stage(data, stage, lines, file, overridden, problems)
    for override in overrides:
        try:
            parts = apply_override(data, override)
        except ValueError as err:
            problems.append(Problem(file, None, "--set", str(err)))
        else:
            overridden[parts] = (None, "from --set")

    def line_of(loc: tuple) -> int | None:
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in overridden:
                return overridden[loc[:cut]][0]
            if loc[:cut] in lines:
                return lines[loc[:cut]]
        return None

    def origin(loc: tuple) -> str:
        for cut in range(len(loc), 0, -1):
            if loc[:cut] in overridden:
                return f" ({overridden[loc[:cut]][1]})"
        return ""

    spec: SweepSpec | None = None
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        for error in err.errors():
            loc = clean_loc(error["loc"])
            message = error_message(error, SweepSpec)
            if loc and loc[0] not in SEARCHABLE_SECTIONS and is_distribution_like(_lookup(data, loc)):
                message = f"distributions are not allowed in {loc[0]}; give a fixed value"
            problems.append(Problem(file, line_of(loc), loc_path(loc) + origin(loc), message))
    if spec is not None:
        for loc, message in semantic_problems(spec):
            problems.append(Problem(file, line_of(loc), loc_path(loc) + origin(loc), message))
        if not problems:
            spec._source = file
            try:  # the first trial must build: catches what only the concrete TrialConfig can check
                spec.resolve()
            except SpecError as err:
                problems += [Problem(file, line_of(tuple(p.path.split("."))), p.path, p.message)
                             for p in err.problems]
    if problems:
        raise SpecError(problems)
    assert spec is not None
    spec._source, spec._data = file, data
    spec._locate = lambda loc: (line_of(loc), origin(loc))
    return spec


def load_spec(path: str | Path, overrides: Iterable[str] = (), stages: Iterable[str] = ()) -> SweepSpec:
    """Read and validate a spec file. Raises SpecError (never a bare pydantic or YAML exception)."""
    file = str(path)
    try:
        text = yamlsafe.read_text(path)
    except OSError as err:
        raise SpecError([Problem(file, None, "(file)", err.strerror or str(err))]) from None
    except yamlsafe.DocumentError as err:
        raise SpecError([Problem(file, err.line, err.field, err.message, column=err.column)]) from None
    return parse_spec(text, file, overrides, stages)



