"""A sweep's own state on storage: ``<storage>/<sweep name>/aesweep.json`` (spec, tracking URI, parent run id),
next to Ray Tune's experiment directory; what ``resume``, ``status`` and ``report`` read. Storage is a local path
or a pyarrow filesystem URI (s3://, gs://, ...).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from aesweep.service.search_space import spec_from_json
from aesweep.spec.sweep_spec import SweepSpec

DEFAULT_STORAGE = "aesweep-results"
STATE_FILE = "aesweep.json"

# --------------------------------------------------------------------------------------------------------------
# The driver


@dataclass
class SweepState:
    """What ``resume`` and ``status`` need, stored next to Ray Tune's experiment state."""

    name: str
    spec_json: str
    spec_file: str
    uri: str
    parent_run_id: str
    experiment_path: str
    cpu: float = 1.0
    max_points: int | None = None  # --smoke: the first grid points only (a resume runs the same ones)

    def save(self) -> None:
        _write_text(_join(self.experiment_path, STATE_FILE), json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, name_or_path: str, storage: str | None = None) -> SweepState:
        """By the sweep's directory (a local path or a URI such as ``s3://bucket/aesweep-results/NAME``), or by
        its name under ``storage``."""
        candidates = [name_or_path, _join(_normal_root(storage or DEFAULT_STORAGE), name_or_path)]
        for candidate in candidates:
            text = _read_text(_join(candidate, STATE_FILE))
            if text is not None:
                return cls(**json.loads(text))
        looked = " and ".join(_join(c, STATE_FILE) for c in candidates)
        raise FileNotFoundError(f"{name_or_path}: no sweep there (looked for {looked})")

    @property
    def spec(self) -> SweepSpec:
        return spec_from_json(self.spec_json)


# Ray Tune's storage may be a local directory or a URI (s3://, gs://, file://): multi-node fault tolerance needs
# storage that every node reaches. aesweep.json lives next to Tune's experiment state, through the same pyarrow
# filesystems that Tune itself uses for URIs.


def _is_uri(path: str) -> bool:
    return "://" in path


def _normal_root(path: str) -> str:
    return path.rstrip("/") if _is_uri(path) else str(Path(path).expanduser().resolve())


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}" if _is_uri(root) else str(Path(root) / name)


def _write_text(path: str, text: str) -> None:
    if not _is_uri(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
        return
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as out:
        out.write(text.encode())


def _read_text(path: str) -> str | None:
    """The file's text, or None when it does not exist (or the URI names no reachable filesystem)."""
    if not _is_uri(path):
        return Path(path).read_text() if Path(path).is_file() else None
    import pyarrow.fs

    try:
        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        if fs.get_file_info(inner).type != pyarrow.fs.FileType.File:
            return None
        with fs.open_input_stream(inner) as stream:
            return stream.read().decode()
    except (OSError, pyarrow.ArrowInvalid):
        return None



