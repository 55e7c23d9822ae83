"""aesweep.service.tune_state: Tune's saved state is committed whole, never left torn, and put back before a resume; a
sweep without an intact state is refused with one line (or, when no trial ever ran, started afresh)."""
from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pyarrow.fs
import pytest
import ray.cloudpickle as pickle

from aesweep.service import sweep_state, tune_state
from tests.conftest import Store, cli, write_spec


def _staging(tmp_path: Path, version: int) -> Path:
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    (staging / "experiment_state-2026-12-07_10-00-00.json").write_text(json.dumps({"trial_data": [],
                                                                                   "v": version}))
    (staging / "callback-states-2026-12-07_10-00-00.pkl").write_bytes(pickle.dumps({"rungs": version}))
    (staging / "trial_a").mkdir(exist_ok=True)
    (staging / "trial_a" / "error.txt").write_text(f"v{version}")
    return staging


def test_an_upload_commits_the_state_as_one_set_then_replaces_tunes_files(tmp_path):
    storage = tmp_path / "exp"
    fs = pyarrow.fs.LocalFileSystem()
    tune_state.upload_atomically(str(_staging(tmp_path, 1)), fs, str(storage))
    tune_state.upload_atomically(str(_staging(tmp_path, 2)), fs, str(storage))
    state = json.loads((storage / "experiment_state-2026-12-07_10-00-00.json").read_text())
    assert state["v"] == 2
    assert pickle.loads((storage / "callback-states-2026-12-07_10-00-00.pkl").read_bytes()) == {"rungs": 2}
    assert (storage / "trial_a" / "error.txt").read_text() == "v2"
    snapshot = tune_state.newest_snapshot(storage)
    assert snapshot == storage / tune_state.SNAPSHOT
    assert json.loads((snapshot / "experiment_state-2026-12-07_10-00-00.json").read_text())["v"] == 2
    assert sorted(p.name for p in storage.iterdir() if p.name.startswith(".")) == [tune_state.SNAPSHOT]


def test_a_staging_file_that_does_not_load_keeps_the_last_set(tmp_path):
    storage = tmp_path / "exp"
    fs = pyarrow.fs.LocalFileSystem()
    tune_state.upload_atomically(str(_staging(tmp_path, 1)), fs, str(storage))
    staging = _staging(tmp_path, 2)
    half = (staging / "callback-states-2026-12-07_10-00-00.pkl").read_bytes()
    (staging / "callback-states-2026-12-07_10-00-00.pkl").write_bytes(half[: len(half) // 2])  # Tune mid-write
    tune_state.upload_atomically(str(staging), fs, str(storage))
    # Neither the set nor Tune's own files moved to the half-new state.
    assert json.loads((storage / "experiment_state-2026-12-07_10-00-00.json").read_text())["v"] == 1
    assert pickle.loads((storage / "callback-states-2026-12-07_10-00-00.pkl").read_bytes()) == {"rungs": 1}


@pytest.mark.parametrize("crash", ["mid-replace", "between-renames", "torn-file"])
def test_restore_puts_back_the_last_committed_set(tmp_path, crash):
    storage = tmp_path / "exp"
    fs = pyarrow.fs.LocalFileSystem()
    tune_state.upload_atomically(str(_staging(tmp_path, 1)), fs, str(storage))
    experiment = storage / "experiment_state-2026-12-07_10-00-00.json"
    if crash == "mid-replace":  # the set committed, the driver killed before Tune's files were all replaced
        tune_state.commit_snapshot(storage, sorted(p for p in _staging(tmp_path, 2).iterdir() if p.is_file()))
    elif crash == "between-renames":  # killed after .aesweep-state went to .old, before .new took its place
        (storage / tune_state.SNAPSHOT).rename(storage / f"{tune_state.SNAPSHOT}.old")
    else:  # an older aesweep's upload cut the file short, and a stray newer file
        experiment.write_text(experiment.read_text()[:10])
        (storage / "callback-states-9999-12-31_23-59-59.pkl").write_bytes(b"\x80\x05")
    lines = tune_state.restore_snapshot(storage)
    want = 2 if crash == "mid-replace" else 1
    assert json.loads(experiment.read_text())["v"] == want
    if crash == "torn-file":
        assert lines == [f"callback-states-9999-12-31_23-59-59.pkl was not part of the last state Tune saved "
                         f"whole; set aside in {storage / 'torn'}"]


@pytest.mark.slow
def test_resume_without_an_intact_state_refuses_in_one_line_or_starts_afresh(store: Store, tmp_path):
    path = write_spec(tmp_path, "nostate")
    done = cli("run", str(path), "--storage", store.storage, "--tracking-uri", store.uri)
    assert done.returncode == 0, done.stdout + done.stderr
    experiment = Path(store.storage) / "nostate"
    parent = store.parent("nostate")

    # A sweep started by an aesweep whose modules were named otherwise (the layout before the re-cut): Tune's
    # tuner.pkl names a class this one lacks. Refused in one line before Ray or MLflow is touched.
    originals = {p: p.read_bytes() for p in experiment.rglob(tune_state.TUNER_PKL)}
    assert len(originals) == 2  # Tune's own and the committed set's
    gone = types.ModuleType("aesweep.spec_before_recut")
    gone.Choice = type("Choice", (), {"__module__": gone.__name__})
    sys.modules[gone.__name__] = gone
    try:
        foreign = pickle.dumps({"values": gone.Choice(), "kept": Path("x")})
    finally:
        del sys.modules[gone.__name__]
    for p in originals:
        p.write_bytes(foreign)
    refused = cli("resume", str(experiment))
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "started by another version of aesweep" in lines[0], refused.stderr
    assert "aesweep.spec_before_recut.Choice" in lines[0]
    assert store.client.get_run(parent.info.run_id).info.status == "FINISHED"  # untouched
    for p, raw in originals.items():
        assert p.read_bytes() == foreign  # nothing restored, nothing repaired
        p.write_bytes(raw)

    for path in experiment.iterdir():  # every state Tune saved, and aesweep's sets, gone
        if path.name.startswith(tune_state.SNAPSHOT):
            shutil.rmtree(path)
        elif path.name.startswith("experiment_state-"):
            path.unlink()
    refused = cli("resume", str(experiment))
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no intact copy, but 1 trial run(s)" in lines[0], refused.stderr
    assert store.client.get_run(parent.info.run_id).info.status == "FINISHED"  # untouched

    # Killed before Tune's first save: no trial ran, so none has a run; the resume runs the sweep from the start.
    for child in store.children(parent.info.run_id):
        store.client.delete_run(child.info.run_id)
    again = cli("resume", str(experiment))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "starts from the beginning" in again.stderr
    children = store.children(parent.info.run_id)
    assert [c.info.status for c in children] == ["FINISHED"]
    assert store.client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert json.loads((experiment / sweep_state.STATE_FILE).read_text())["parent_run_id"] == parent.info.run_id


class _Leaf:
    def __init__(self, value):
        self.value = value


class _Node:
    def __init__(self, *children):
        self.children = list(children)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_the_names_read_from_a_pickle_are_those_unpickling_looks_up(protocol):
    import collections
    import io
    import pickle

    # Repeated classes are memoized and fetched again (GET), the case a plain scan of GLOBAL opcodes misses.
    data = pickle.dumps(_Node(_Leaf(1), _Leaf(collections.OrderedDict(a=_Leaf(2))), _Node(), Path("x")),
                        protocol=protocol)
    looked_up = set()

    class Recording(pickle.Unpickler):
        def find_class(self, module, name):
            looked_up.add((module, name))
            return super().find_class(module, name)

    Recording(io.BytesIO(data)).load()
    assert tune_state.pickled_globals(data) == looked_up
    assert (__name__, "_Leaf") in looked_up
    # Cut short, the names before the cut are still read, and nothing raises.
    assert tune_state.pickled_globals(data[: len(data) // 2]) <= looked_up
