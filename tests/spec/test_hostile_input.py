"""Hostile or absurd input: one line naming the file, line and field, exit 2, bounded memory, nothing written.

Each case runs the real CLI in a subprocess and reads its peak resident memory from the kernel (wait4), so a case
that expands a document or allocates a model would show up here as hundreds of MB or a MemoryError, and which heavy
modules it imported: none of them (torch alone is ~0.6 GB resident with its CUDA libraries) is needed to reject.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
import yaml

from aesweep.models import capacity
from aesweep.spec import yamlsafe
from aesweep.spec.load import load_spec, parse_spec
from aesweep.spec.problems import SpecError
from tests.conftest import REPO, cli_env

MB = 1 << 20


# Runs the CLI as `python -m aesweep` does, and at exit writes the process's peak resident memory (VmHWM: the
# high-water mark of this program's own address space, unlike ru_maxrss, which also counts the parent's pages
# between fork and exec) and the heavy modules it imported to the file named by $AESWEEP_TEST_HWM.
_LAUNCHER = """
import atexit, os, runpy, sys
def peak():
    heavy = [m for m in ("torch", "sklearn", "ray", "mlflow") if m in sys.modules]
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(os.environ["AESWEEP_TEST_HWM"], "w").write(line.split()[1] + "\\n" + " ".join(heavy))
atexit.register(peak)
sys.argv = ["aesweep", *sys.argv[1:]]
runpy.run_module("aesweep", run_name="__main__", alter_sys=True)
"""


def run_cli(*args: str, cwd: Path, limit_as: int | None = None) -> tuple[int, str, str, int, list[str]]:
    """``python -m aesweep ARGS``: (exit code, stdout, stderr, peak resident memory in bytes, which of
    torch, sklearn, ray, mlflow it imported)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    hwm = cwd.parent / f"{cwd.name}.hwm"
    env = cli_env({"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   "AESWEEP_TEST_HWM": str(hwm)})
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=120, preexec_fn=limit if limit_as else None)
    peak, _, heavy = hwm.read_text().partition("\n")
    hwm.unlink()
    return proc.returncode, proc.stdout, proc.stderr, int(peak) * 1024, heavy.split()


def billion_laughs(levels: int = 9, fan: int = 9) -> str:
    lines = ["name: lol", "a0: &a0 [" + ", ".join(['"lol"'] * fan) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]" for i in range(1, levels + 1)]
    return "\n".join([*lines, f"model: {{latent_dim: *a{levels}}}", ""])


# name -> (file bytes, the exact start of the one line it must print after "FILE")
CASES: dict[str, tuple[bytes, str]] = {
    "billion-laughs": (billion_laughs().encode(), ":7: yaml: alias *a4 expands the document past 100,000 values"),
    "not-utf8": (b"name: x\nmodel:\n  latent_dim: 4  # \xff\xfe\n", ":3:20: (file): not UTF-8 text (byte 0xff"),
    "utf16-bom": ("name: x\n".encode("utf-16"), ":1:1: (file): not UTF-8 text (byte 0xff"),
    "deep-brackets": (b"name: deep\nmodel: {latent_dim: " + b"[" * 5000 + b"]" * 5000 + b"}\n",
                      ":2:83: yaml: nested more than 64 levels deep"),
    "100-MB-file": (b"name: big\n" + b"# padding\n" * 10_000_000, ": (file): 95.4 MiB; a sweep file is at most 1 MiB"),
    "huge-list": (b"name: l\nmodel: {latent_dim: {grid: [" + b",".join([b"1"] * 150_000) + b"]}}\n",
                  ":2: yaml: more than 100,000 values"),
    # The model cases are valid YAML and valid specs: what rejects them is the parameter floor, from the shapes.
    "huge-latent": (b"name: huge\nmodel: {latent_dim: 2000000000}\n",
                    ":2: model.latent_dim: the largest trial needs more than 238 TiB to train (at least 1.64e+13 "
                    "parameters), more than this machine's memory"),
    "huge-width": (b"name: wide\nmodel:\n  backbone: conv\n  width: 1000000\n",
                   ":4: model.width: the largest trial needs more than 16,629,700 TiB to train (at least 1.14e+18 "
                   "parameters)"),
    "overflowing-width": (b"name: s\nmodel: {backbone: mlp, latent_dim: 8, width: 1.0e+17}\n",
                          ":2: model.width: the largest trial needs more than 912,789,255,381 TiB to train (at "
                          "least 6.27e+22 parameters)"),
    "infinite-width": (b"name: s\nmodel: {backbone: mlp, width: .inf}\n",
                       ":2: model.width: the largest trial needs layers past the largest float"),
    "huge-depth": (b"name: s\nmodel: {backbone: conv, depth: 1000000000}\n",
                   ":2: model.depth: the largest trial needs more than 11,265 TiB to train"),
    "huge-searched-latent": (b"name: s\nmodel: {backbone: mlp, latent_dim: {int: [2, 3000000000], log: true}}\n",
                             ":2: model.latent_dim: the largest trial needs more than 130,967,306 TiB to train"),
    "huge-projection": (b"name: s\nmodel: {projection_dim: 1000000000000}\nobjective: {variant: contrastive}\n",
                        ":2: model.projection_dim: the largest trial needs more than "),
}
# An absurd size beside a searched value of every distribution form: until 2026-12-07 the check read `.bounds` of
# uniform / loguniform (they have none) and turned the AttributeError into "fits", so most real sweeps (they
# search a float: lr, beta, ...) were never checked.
SEARCHED = {
    "uniform": "train: {lr: {uniform: [1.0e-4, 1.0e-2]}}",
    "loguniform": "train: {lr: {loguniform: [1.0e-4, 1.0e-2]}}",
    "int": "train: {batch_size: {int: [32, 128]}}",
    "int-log": "train: {batch_size: {int: [32, 128], log: true}}",
    "choice": "train: {lr: {choice: [1.0e-3, 3.0e-3]}}",
    "grid": "train: {lr: {grid: [1.0e-3, 3.0e-3]}}",
}
for _form, _line in SEARCHED.items():
    CASES[f"huge-latent-beside-{_form}"] = (
        f"name: s\nmodel: {{backbone: mlp, latent_dim: 2000000000}}\n{_line}\n".encode(),
        ":2: model.latent_dim: the largest trial needs more than ")


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_spec_is_one_line_exit_2_in_bounded_memory(case, tmp_path):
    content, expected = CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(content)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err, peak, heavy = run_cli("validate", str(path), cwd=tmp_path)
    lines = err.strip().splitlines()
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith(str(path) + expected), err
    assert "Traceback" not in err and out == ""
    # Nothing on the way to the rejection imports torch or scikit-learn: names are checked against the declarations,
    # sizes against the parameter floor. Tens of MB.
    assert heavy == [], f"{case}: imported {heavy}"
    assert peak < 100 * MB, f"{case}: peak RSS {peak / MB:.0f} MB"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_alias_reuse_within_bounds_is_fine():
    spec = parse_spec("name: reuse\ntrain: &t {epochs: 2, batch_size: 64}\nstages:\n  again: {train: *t}\n",
                      "s.yaml")
    assert spec.train.epochs == 2 and spec.stages["again"]["train"]["batch_size"] == 64


def test_scan_counts_what_aliases_expand_to():
    # the mapping, key a, a's list of 3, key b, b's list, and each alias counted as the 4 values it stands for
    assert yamlsafe.scan("a: &x [1, 2, 3]\nb: [*x, *x]\n") == 1 + 1 + 4 + 1 + 1 + 4 + 4
    with pytest.raises(yamlsafe.DocumentError) as err:
        yamlsafe.scan(billion_laughs(levels=4, fan=10), max_values=10_000)
    assert err.value.line == 5 and "alias *a2" in err.value.message  # line 5 defines a3 from *a2


def test_hostile_set_value_is_bounded():
    with pytest.raises(SpecError) as err:
        parse_spec("name: s\n", "s.yaml", ["model.latent_dim=" + "[" * 100 + "]" * 100])
    assert [str(p) for p in err.value.problems] == [
        "s.yaml: --set: --set model.latent_dim: nested more than 64 levels deep; a sweep file needs a handful"]


def test_memory_estimate_in_process_allocates_nothing_of_the_model(tmp_path):
    from aesweep.cli import checked_spec

    path = tmp_path / "huge.yaml"
    path.write_text("name: huge\nmodel: {latent_dim: 32}\n")
    checked_spec(path)  # imports (torch, the model code) happen here, not under the trace
    path.write_text("name: huge\nmodel: {latent_dim: 2000000000}\n")
    tracemalloc.start()
    with pytest.raises(SpecError):
        checked_spec(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 100 * MB


def test_memory_estimate_counts_the_real_parameters():
    spec = load_spec(REPO / "sweeps" / "quickstart.yaml")
    trial = spec.resolve(capacity.largest)
    need = capacity.estimate(trial)
    import math

    from aesweep.models.model import AutoEncoder
    from aesweep.spec import variants

    o = trial.objective
    objective = variants.compose(o.variant, {k: getattr(o, k) for k in variants.KNOBS}, o.recon_weight,
                                 elements_per_image=math.prod((1, 28, 28)))
    real = AutoEncoder.from_config(trial.model, objective, (1, 28, 28), 10)
    assert need.parameters == sum(p.numel() for p in real.parameters())
    assert need.bytes > need.parameters * capacity.BYTES_PER_PARAMETER  # activations counted on top
    assert trial.model.latent_dim == max(spec.model.latent_dim.options)  # the largest of the grid


@pytest.mark.parametrize("model, objective", [
    ({"backbone": "conv"}, {}),
    ({"backbone": "conv", "depth": 2, "width": 0.5, "latent_dim": 7}, {"variant": "vae"}),
    ({"backbone": "conv", "channels": [8, 16, 32], "strides": [1, 2, 2], "skip_connections": True}, {}),
    ({"backbone": "mlp"}, {}),
    ({"backbone": "mlp", "widths": [256, 128], "decoder_widths": [64], "width": 1.5}, {"variant": "contrastive"}),
    ({"backbone": "mlp", "depth": 5, "latent_dim": 900, "head_widths": [64, 32]}, {"variant": "classifier"}),
    ({"backbone": "resnet", "depth": 1, "width": 0.25}, {}),
    ({"backbone": "resnet"}, {"variant": "vae+contrastive"}),
])
@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "frey_face"])
def test_parameter_floor_is_a_lower_bound_of_the_real_count(model, objective, dataset):
    if dataset == "frey_face" and objective.get("variant") == "classifier":
        return  # no labels: the spec rejects it
    spec = parse_spec(yaml.safe_dump({"name": "f", "dataset": {"name": dataset}, "model": model,
                                      "objective": objective}), "f.yaml")
    trial = spec.resolve(capacity.largest)
    floor, exact = capacity.parameter_floor(trial), capacity.estimate(trial).parameters
    assert 0 < floor <= exact
    assert floor > exact * (0.98 if model["backbone"] == "mlp" else 0.5)  # mlp: every weight; others: the bulk


def test_every_shipped_sweep_fits_this_machine():
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        spec = load_spec(path)
        assert capacity.problems(spec) == [], path


def test_train_one_that_runs_out_of_memory_is_a_failed_trial_not_a_traceback(tmp_path):
    # Passes the estimate (7 GiB < this machine's RAM) but the process may only map 4.5 GB: the allocation
    # fails at once, exactly as on a machine without the memory, without touching any.
    spec = tmp_path / "oom.yaml"
    spec.write_text("name: oom\ndataset: {name: shapes, train_size: 200, test_size: 50}\n"
                    "model: {backbone: mlp, latent_dim: 300000, depth: 1}\ntrain: {epochs: 1, batch_size: 8}\n"
                    "eval: {probes: [], clustering: [], figures: []}\n")
    assert capacity.problems(load_spec(spec)) == []
    code, out, err, _, _ = run_cli("train-one", str(spec), "--out", str(tmp_path / "out"), cwd=tmp_path,
                                limit_as=4_500_000_000)
    assert code == 1, (out, err)
    assert err.strip().splitlines() == [err.strip()] and err.startswith("trial failed: out of memory ("), err
    assert "Traceback" not in err


def test_unexpected_errors_are_one_line_unless_debug(tmp_path):
    # A sweep directory whose state file is garbage: not a spec problem, still one line.
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "aesweep.json").write_text("{not json")
    code, _, err, _, _ = run_cli("status", str(tmp_path / "broken"), cwd=tmp_path)
    assert code in (1, 2) and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    code, _, err, _, _ = run_cli("--debug", "status", str(tmp_path / "broken"), cwd=tmp_path)
    assert code == 1 and "Traceback" in err
