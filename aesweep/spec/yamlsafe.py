"""Bounded reading of untrusted YAML: a spec file cannot take the machine's memory, time or stack.

A sweep file is small (the largest shipped one is a few KB and a few hundred values). YAML itself lets a tiny file
describe a huge document: aliases of aliases (the "billion laughs": 9 levels of 9 aliases is 387 million values
from 1 KB), thousands of nested brackets (PyYAML's composer and everything after it recurse), megabytes of list.
Before anything composes or walks the document, ``scan`` reads PyYAML's event stream, which its parser produces
iteratively (no recursion, constant memory per event), and stops at the first bound crossed, naming the line.
The events come from libyaml's C parser where PyYAML was built with it (``yaml.CSafeLoader``: a 300 KB list is
read in milliseconds instead of seconds), else from PyYAML's pure-Python one; both give the same marks.

Imports only PyYAML: the CLI can reject a hostile file before it imports torch.
"""
from __future__ import annotations

from pathlib import Path

import yaml

# Bounds, each far above any real sweep file and far below what hurts: a shipped spec is < 10 KB, < 500 values and
# < 10 levels deep.
MAX_BYTES = 1 << 20  # 1 MiB
MAX_VALUES = 100_000  # scalars and collections, counting what every alias expands to
MAX_DEPTH = 64  # nested mappings and sequences
# The event stream's loader: libyaml's C parser if PyYAML has it (yaml.__with_libyaml__), else the Python one.
EVENT_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# A document libyaml rejects within this many values is scanned again with PyYAML's parser: its messages name what
# it found ("expected ',' or '}', but got ':'" where libyaml says "did not find expected ',' or '}'"), and libyaml
# refuses 1,000 nested brackets before it emits the event past MAX_DEPTH that names the line and column. Re-reading
# that many values costs PyYAML under 0.2 s; a document near MAX_VALUES would cost it seconds.
REREAD_VALUES = 10_000


class DocumentError(Exception):
    """A spec file that cannot be read safely: ``line`` (1-based, or None), ``field`` and ``message``."""

    def __init__(self, line: int | None, field: str, message: str, column: int | None = None):
        super().__init__(message)
        self.line, self.field, self.message, self.column = line, field, message, column


def read_text(path: str | Path, max_bytes: int = MAX_BYTES) -> str:
    """The file's text, if it is at most ``max_bytes`` of UTF-8; reads at most ``max_bytes + 1`` bytes."""
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        size = Path(path).stat().st_size
        raise DocumentError(None, "(file)", f"{_size(size)}; a sweep file is at most {_size(max_bytes)}")
    return decode(raw)


def decode(raw: bytes) -> str:
    """Strict UTF-8 (a BOM is allowed); the error names the line and column of the first undecodable byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise DocumentError(line, "(file)", f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column {column}); "
                            "save the file as UTF-8", column=column) from None


def scan(text: str, max_values: int = MAX_VALUES, max_depth: int = MAX_DEPTH) -> int:
    """Check the document's size, alias expansion and nesting from its event stream; return its value count.

    Every anchored node's expanded size is remembered, so an alias costs what it expands to, and the count is
    exactly the number of values a loader would build if it copied every alias. Raises ``DocumentError`` at the
    first event past a bound; ``yaml.YAMLError`` for a syntax error (the caller reports those as it always has).
    """
    if len(text) > MAX_BYTES:  # text that did not come through read_text (a --set value, a test)
        raise DocumentError(None, "(file)", f"{_size(len(text.encode()))}; a sweep file is at most "
                            f"{_size(MAX_BYTES)}")
    return _scan(text, max_values, max_depth, EVENT_LOADER)


def _scan(text: str, max_values: int, max_depth: int, loader: type) -> int:
    sizes: dict[str, int] = {}  # anchor -> expanded size of its node
    open_nodes: list[tuple[str | None, int]] = []  # (anchor, count when the node started)
    count = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            line = event.start_mark.line + 1 if event.start_mark else None
            if isinstance(event, yaml.AliasEvent):
                expanded = sizes.get(event.anchor, 1)  # an undefined alias is the composer's error to report
                count += expanded
                if count > max_values:
                    raise DocumentError(line, "yaml", f"alias *{event.anchor} expands the document past "
                                        f"{max_values:,} values (it stands for {expanded:,}); aliases of aliases "
                                        "multiply, write the values out or use fewer levels")
                continue
            if isinstance(event, yaml.ScalarEvent):
                count += 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                count += 1
                open_nodes.append((event.anchor, count))
                if len(open_nodes) > max_depth:
                    raise DocumentError(line, "yaml", f"nested more than {max_depth} levels deep; a sweep file "
                                        "needs a handful", column=event.start_mark.column + 1)
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, started = open_nodes.pop()
                if anchor is not None:
                    sizes[anchor] = count - started + 1
            else:
                continue
            if count > max_values:
                raise DocumentError(line, "yaml", f"more than {max_values:,} values; a sweep file needs a few "
                                    "hundred (a long grid belongs in a range: {int: [lo, hi]})")
    except yaml.YAMLError:
        if loader is not yaml.SafeLoader and count <= REREAD_VALUES:
            return _scan(text, max_values, max_depth, yaml.SafeLoader)
        raise
    return count


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"
