"""Ray Tune's driver state on storage, kept so that a driver SIGKILLed at any instant can be resumed.

Tune (2.60) writes its driver state (the trials, the callbacks' state with the scheduler's rungs, the searcher)
into a local staging directory, then copies that directory into the storage path in a background thread
(``_FilesystemSyncer`` -> ``_upload_to_fs_path``, a plain ``pyarrow.fs.copy_files``). A driver killed during the
copy left files cut short in the storage, and, in a sweep's first session, no intact copy at all: the resume
then handed Tune a directory it could not restore (seen: a trial started with an empty config).

For storage on a local or network filesystem (every path this machine can write), ``ray_patches.install_atomic_upload``
replaces that copy with one that never leaves a torn file:

1. the staged state files are copied into ``.aesweep-state.new/`` beside Tune's files, each checked to load
   (JSON or pickle), with ``tuner.pkl``; a set that does not load whole is dropped and the last one stays;
2. the set is committed as a whole: ``.aesweep-state`` -> ``.aesweep-state.old``, ``.new`` -> ``.aesweep-state``
   (renames), so one complete set exists at every instant, under one of those three names, marked ``COMPLETE``;
3. only then are Tune's own files replaced, each by a rename from a temporary name.

``restore_snapshot`` (first thing ``aesweep resume`` does) copies the newest complete set back over Tune's files,
so Tune restores a state whose parts were saved together. Storage given as a URI (s3://, gs://) keeps Tune's
own upload: object stores write an object whole or not at all.
"""
from __future__ import annotations

import importlib
import json
import os
import pickletools
import shutil
from pathlib import Path
from typing import Any

SNAPSHOT = ".aesweep-state"
COMPLETE = "COMPLETE"
TUNER_PKL = "tuner.pkl"  # written once by Tuner(), read by Tuner.restore

# Pattern -> (how Tune wrote it, what a resume loses when no intact copy is left). Tune pickles the searchers'
# states, whatever their file names say.
TUNE_STATE_FILES = {
    "experiment_state-*.json": ("json", "Tune has no record of the trials to resume from"),
    "callback-states-*.pkl": ("pickle", "the scheduler starts with empty rungs"),
    "searcher-state-*.pkl": ("pickle", "Tune starts that part afresh"),
    "search_gen_state-*.json": ("pickle", "Tune starts that part afresh"),
    "basic-variant-state-*.json": ("pickle", "Tune starts that part afresh"),
}


class NoIntactState(Exception):
    """Tune's experiment state has no intact copy: the sweep cannot be resumed (the message says why)."""


class StateOfOtherCode(Exception):
    """Tune's saved state names aesweep classes this installation does not have: another version wrote it."""


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def pickled_globals(data: bytes) -> set[tuple[str, str]]:
    """The (module, qualified name) of every class or function a pickle refers to, read without unpickling.

    Follows the opcodes: ``GLOBAL`` names both; ``STACK_GLOBAL`` takes the two strings on top of the stack, which
    may come from the memo (``MEMOIZE`` / ``PUT`` then ``GET``), so pushed strings and the memo are tracked. A pickle
    cut short yields the names before the cut."""
    found: set[tuple[str, str]] = set()
    pushed: list[str | None] = []
    memo: dict[int, str | None] = {}
    opcodes = pickletools.genops(data)
    while True:
        try:
            op, arg, _ = next(opcodes)
        except StopIteration:
            break
        except ValueError:  # torn: pickletools reads past the end
            break
        name = op.name
        if name in _STRING_OPS:
            pushed.append(arg.decode("latin1") if isinstance(arg, bytes) else arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif name == "GLOBAL":
            module, _, qualname = arg.partition(" ")
            found.add((module, qualname))
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            if len(pushed) >= 2 and isinstance(pushed[-2], str) and isinstance(pushed[-1], str):
                found.add((pushed[-2], pushed[-1]))
            pushed.append(None)
        else:
            pushed.append(None)
    return found


def missing_own_names(experiment_path: str | Path) -> list[str]:
    """The aesweep classes and functions ``tuner.pkl`` refers to that this installation cannot import, sorted.

    Tune pickles the Tuner with the sweep's spec, scheduler and callbacks by reference; a sweep started by an
    aesweep whose modules were named otherwise (before the layers of 0.1's re-cut: ``aesweep.spec.Choice``,
    ``aesweep.sweep``) cannot be restored by this one, and Tune would fail half-way through starting it."""
    root = Path(experiment_path)
    snapshot = newest_snapshot(root)
    # The copy ``restore_snapshot`` would put back, else Tune's own.
    path = snapshot / TUNER_PKL if snapshot is not None and (snapshot / TUNER_PKL).is_file() else root / TUNER_PKL
    if not path.exists():
        return []
    missing = []
    for module, qualname in sorted(pickled_globals(path.read_bytes())):
        if module.split(".")[0] != "aesweep":
            continue
        try:
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            missing.append(f"{module}.{qualname}")
    return missing


def state_kind(name: str) -> str | None:
    """'json' or 'pickle' for a Tune driver-state file name (``tuner.pkl`` included), else None."""
    from fnmatch import fnmatch

    if name == TUNER_PKL:
        return "pickle"
    return next((kind for pattern, (kind, _) in TUNE_STATE_FILES.items() if fnmatch(name, pattern)), None)


def _load_error(path: Path, kind: str) -> Exception | None:
    import ray.cloudpickle as pickle

    try:
        json.loads(path.read_text()) if kind == "json" else pickle.loads(path.read_bytes())
    except Exception as err:  # torn: truncated JSON or pickle, whatever the exception type
        return err
    return None


def _write_atomically(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source`` in one rename: a reader (or a crash) sees the old file or the new
    one, never part of it."""
    staged = target.with_name(f".{target.name}.aesweep-tmp")
    shutil.copyfile(source, staged)
    with open(staged, "rb") as f:
        os.fsync(f.fileno())
    staged.replace(target)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_snapshot(root: Path, files: list[Path]) -> bool:
    """Save ``files`` (and ``root/tuner.pkl``) as the newest complete state set under ``root``; False, with
    nothing changed, if one of them does not load (a staging file Tune was still writing)."""
    tuner = root / TUNER_PKL
    members = [*files, *([tuner] if tuner.is_file() and tuner not in files else [])]
    new, current, old = root / f"{SNAPSHOT}.new", root / SNAPSHOT, root / f"{SNAPSHOT}.old"
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    for path in members:
        shutil.copyfile(path, new / path.name)
        kind = state_kind(path.name)
        if kind is not None and _load_error(new / path.name, kind) is not None:
            shutil.rmtree(new, ignore_errors=True)
            return False
        with open(new / path.name, "rb") as f:
            os.fsync(f.fileno())
    (new / COMPLETE).write_text(json.dumps(sorted(p.name for p in members)))
    _fsync_dir(new)
    if current.is_dir():
        shutil.rmtree(old, ignore_errors=True)
        current.rename(old)
    new.rename(current)
    _fsync_dir(root)
    shutil.rmtree(old, ignore_errors=True)
    return True


def newest_snapshot(root: Path) -> Path | None:
    """The newest complete state set under ``root``, wherever a crash during a commit left it."""
    for name in (SNAPSHOT, f"{SNAPSHOT}.new", f"{SNAPSHOT}.old"):
        if (root / name / COMPLETE).is_file():
            return root / name
    return None


def upload_atomically(local_path: str, fs: Any, fs_path: str, exclude: list[str] | None = None) -> None:
    """Tune's upload of its staging directory to a local filesystem, without ever leaving a torn file (the
    module docstring): the state files as one committed set, then every file replaced by a rename."""
    src, root = Path(local_path), Path(fs_path)
    root.mkdir(parents=True, exist_ok=True)
    state = sorted(p for p in src.iterdir() if p.is_file() and state_kind(p.name) is not None)
    for path in src.rglob("*"):  # the rest (trials' driver-side files) as Tune copies it, file by file
        relative = path.relative_to(src)
        if not path.is_file() or path in state or (exclude and any(relative.match(x) for x in exclude)):
            continue
        if relative.parts[0].startswith(SNAPSHOT) or relative.parts[0] == "torn":
            continue  # ours (Tune's restore may have staged a copy): written only by commit_snapshot
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, root / relative)
    if state and commit_snapshot(root, state):
        snapshot = root / SNAPSHOT
        for path in state:
            _write_atomically(snapshot / path.name, root / path.name)
        prune_checkpoints(snapshot)


def _latest_checkpoints(experiment_state: Path) -> list[Path]:
    """The checkpoint each trial of a saved experiment state resumes from."""
    from ray.tune.utils.serialization import TuneFunctionDecoder

    out = []
    for entry in json.loads(experiment_state.read_text()).get("trial_data", []):
        runtime = json.loads(entry[1], cls=TuneFunctionDecoder, allow_cloudpickle=True)  # our own storage
        latest = getattr(runtime.get("checkpoint_manager"), "latest_checkpoint_result", None)
        if latest is not None and latest.checkpoint is not None:
            out.append(Path(latest.checkpoint.path))
    return out


def prune_checkpoints(snapshot: Path) -> None:
    """Delete each trial's checkpoints older than the one the committed state ``snapshot`` names (newer ones
    stay: the trial may be writing them, and the next state will name them)."""
    for experiment_state in sorted(snapshot.glob("experiment_state-*.json"))[-1:]:  # the one Tune restores
        for keep in _latest_checkpoints(experiment_state):
            for old in keep.parent.glob("checkpoint_*"):
                if old.is_dir() and old.name < keep.name:
                    shutil.rmtree(old, ignore_errors=True)


def snapshot_tuner(experiment_path: str | Path) -> None:
    """Put ``tuner.pkl`` (written by ``Tuner()`` straight into the storage) into a first state set, so that a
    sweep killed before Tune saved anything else still has it intact. Local storage only."""
    root = Path(str(experiment_path))
    if "://" in str(experiment_path) or not (root / TUNER_PKL).is_file() or newest_snapshot(root) is not None:
        return
    commit_snapshot(root, [])


def restore_snapshot(experiment_path: str | Path) -> list[str]:
    """Put the newest complete state set back over Tune's files before a resume; set aside (into ``torn/``)
    any state file that is not part of it (one a crash left half-replaced, or cut short). Returns one line per
    file set aside. Storage without a set (a URI, or a sweep of an earlier aesweep) is left as it is."""
    root = Path(str(experiment_path))
    snapshot = newest_snapshot(root) if "://" not in str(experiment_path) else None
    if snapshot is None:
        return []
    members = set(json.loads((snapshot / COMPLETE).read_text()))
    lines = []
    for path in sorted(root.iterdir()):
        if path.is_file() and state_kind(path.name) is not None and path.name not in members:
            (root / "torn").mkdir(exist_ok=True)
            path.replace(root / "torn" / path.name)
            lines.append(f"{path.name} was not part of the last state Tune saved whole; set aside in "
                         f"{root / 'torn'}")
    for name in sorted(members):
        target = root / name
        if not target.is_file() or target.read_bytes() != (snapshot / name).read_bytes():
            _write_atomically(snapshot / name, target)
    return lines


def set_aside_torn_state(experiment_path: str | Path) -> list[str]:
    """Move Tune driver-state files that do not load (cut short by a crash) into ``torn/`` beside them, so
    that a resume reads the newest intact ones. Returns one line per file moved, saying what it costs. Remote
    storage (a URI) is left to Tune."""
    root = Path(str(experiment_path))
    if "://" in str(experiment_path) or not root.is_dir():
        return []
    lines = []
    for pattern, (kind, lost) in {**TUNE_STATE_FILES, TUNER_PKL: ("pickle", "Tune cannot restore the sweep")
                                  }.items():
        paths = sorted(root.glob(pattern))
        torn = {path: err for path in paths if (err := _load_error(path, kind)) is not None}
        intact = [path.name for path in paths if path not in torn]
        # Tune restores the greatest name of each kind.
        cost = f"the resume uses {max(intact)}" if intact else f"no intact copy is left: {lost}"
        for path, err in torn.items():
            (root / "torn").mkdir(exist_ok=True)
            path.replace(root / "torn" / path.name)
            lines.append(f"{path.name} was cut short by the crash ({type(err).__name__}); set aside in "
                         f"{root / 'torn'}; {cost}")
    return lines


def has_experiment_state(experiment_path: str | Path) -> bool:
    """Whether Tune can restore from ``experiment_path``: a ``tuner.pkl`` and an experiment state that load.
    A URI is assumed restorable (Tune checks it)."""
    root = Path(str(experiment_path))
    if "://" in str(experiment_path):
        return True
    states = sorted(root.glob("experiment_state-*.json"))
    return ((root / TUNER_PKL).is_file() and _load_error(root / TUNER_PKL, "pickle") is None
            and any(_load_error(p, "json") is None for p in states))


def repair_dangling_checkpoints(experiment_path: str | Path) -> list[str]:
    """Point a trial whose recorded checkpoint no longer exists at the newest one it wrote after it.

    With ``CheckpointConfig(num_to_keep=1)`` Tune deletes a trial's previous checkpoint as soon as it registers
    the next one, but writes the experiment state that names the trial's latest checkpoint afterwards, in the
    background. A driver killed in between leaves a state that names a deleted checkpoint, and the resumed trial
    fails with "Could not recover from checkpoint as it does not exist on storage anymore" (seen on the on-prem
    test cluster: one of two trials lost to a driver SIGKILL). The newer checkpoint is there: its epochs were
    logged to MLflow by the trial itself, so continuing from it loses and repeats nothing. Returns one line per
    trial repaired. Remote storage (a URI) is left to Tune.
    """
    root = Path(str(experiment_path))
    states = sorted(root.glob("experiment_state-*.json")) if "://" not in str(experiment_path) else []
    if not states:
        return []
    from ray.train import Checkpoint
    from ray.tune.utils.serialization import TuneFunctionDecoder, TuneFunctionEncoder

    path = states[-1]  # the one Tune restores
    data = json.loads(path.read_text())
    lines = []
    for entry in data.get("trial_data", []):
        runtime = json.loads(entry[1], cls=TuneFunctionDecoder, allow_cloudpickle=True)  # our own storage
        manager = runtime.get("checkpoint_manager")
        latest = getattr(manager, "latest_checkpoint_result", None)
        if latest is None or latest.checkpoint is None or Path(latest.checkpoint.path).exists():
            continue
        gone = Path(latest.checkpoint.path)
        newer = sorted(p for p in gone.parent.glob("checkpoint_*") if p.is_dir() and p.name > gone.name)
        if not newer:
            continue
        latest.checkpoint = Checkpoint(str(newer[-1]), filesystem=latest.checkpoint.filesystem)
        # Tune names a trial's checkpoints checkpoint_<index>, one per report: iteration = index + 1.
        latest.metrics = {**latest.metrics, "training_iteration": int(newer[-1].name.split("_")[-1]) + 1}
        manager._checkpoint_results = [latest]
        entry[1] = json.dumps(runtime, cls=TuneFunctionEncoder)
        lines.append(f"{gone.parent.name}: its recorded checkpoint {gone.name} was deleted before the crash "
                     f"saved the experiment state; the resume continues it from {newer[-1].name}")
    if lines:
        staged = path.with_name(path.name + ".tmp")
        staged.write_text(json.dumps(data))
        staged.replace(path)
    return lines
