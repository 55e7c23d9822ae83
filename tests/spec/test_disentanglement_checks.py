"""eval.disentanglement checked with file and line: registered measure names, and only on a dataset whose generative
factors are known (declared ``factors=True``), told without importing torch."""
from __future__ import annotations

import subprocess
import sys

import pytest

from aesweep import registry
from aesweep.spec.load import load_spec, parse_spec
from aesweep.spec.problems import SpecError
from tests.conftest import REPO, cli

BAD = [
    ("a dataset without factors", "name: s\ndataset: {name: mnist}\neval:\n  disentanglement: [mig, dci]\n",
     "spec.yaml:4: eval.disentanglement: disentanglement measures need a dataset with known generative factors; "
     "dataset mnist has none (with factors: shapes, dsprites)"),
    ("one drawn dataset without factors", "name: s\ndataset:\n  name: {choice: [shapes, frey_face]}\n"
     "eval: {disentanglement: [factorvae]}\n",
     "spec.yaml:4: eval.disentanglement: disentanglement measures need a dataset with known generative factors; "
     "dataset frey_face has none (with factors: shapes, dsprites)"),
    ("searched lists", "name: s\ndataset: {name: cifar10}\neval:\n  disentanglement:\n    grid: [[], [sap]]\n",
     "spec.yaml:4: eval.disentanglement: disentanglement measures need a dataset with known generative factors; "
     "dataset cifar10 has none (with factors: shapes, dsprites)"),
    ("the online measure on a dataset without factors",
     "name: s\ndataset: {name: fashion_mnist}\neval:\n  online_probe_every: 1\n  online_disentanglement: [mig]\n",
     "spec.yaml:5: eval.online_disentanglement: disentanglement measures need a dataset with known generative "
     "factors; dataset fashion_mnist has none (with factors: shapes, dsprites)"),
    ("an online measure that fits a model", "name: s\neval:\n  online_disentanglement: [dci]\n",
     "spec.yaml:3: eval.online_disentanglement.0: input should be 'mig' or 'modularity'"),
    ("an unknown measure", "name: s\neval:\n  disentanglement: [mig, betavea]\n",
     "spec.yaml:3: eval.disentanglement: unknown disentanglement metric 'betavea'; known: betavae, dci, "
     "explicitness, factorvae, mig, modularity, sap"),
    ("a protocol size of 0", "name: s\neval:\n  disentanglement: [mig]\n  disentanglement_protocol:\n"
     "    num_train: 0\n",
     "spec.yaml:5: eval.disentanglement_protocol.num_train: input should be greater than 0"),
    ("a protocol field that does not exist", "name: s\neval:\n  disentanglement_protocol: {num_bin: 10}\n",
     "spec.yaml:3: eval.disentanglement_protocol.num_bin: unknown key; did you mean num_bins?"),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in BAD], ids=[b[0] for b in BAD])
def test_a_bad_disentanglement_section_is_one_line_naming_file_line_and_field(tmp_path, text, expected):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert [str(p).replace(str(tmp_path) + "/", "") for p in err.value.problems] == [expected]


@pytest.mark.parametrize("dataset", ["shapes", "dsprites"])
def test_datasets_with_factors_take_every_measure(dataset):
    names = list(registry.declared(registry.DISENTANGLEMENT))
    spec = parse_spec(f"name: s\ndataset: {{name: {dataset}}}\neval:\n  disentanglement: [{', '.join(names)}]\n"
                      "  disentanglement_protocol: {num_train: 500, batch_size: 32}\n")
    trial = spec.resolve()
    assert trial.eval.disentanglement == names
    assert (trial.eval.disentanglement_protocol.num_train, trial.eval.disentanglement_protocol.batch_size) == (500, 32)
    assert sorted(names) == ["betavae", "dci", "explicitness", "factorvae", "mig", "modularity", "sap"]


def test_the_check_reads_declarations_without_importing_torch(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(BAD[0][1])
    code = ("import sys; from aesweep.spec.load import load_spec; from aesweep.spec.problems import SpecError\n"
            f"try:\n    load_spec({str(path)!r})\nexcept SpecError as err:\n    print(err)\n"
            "print('heavy:', [m for m in ('torch', 'sklearn') if m in sys.modules])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "eval.disentanglement: disentanglement measures need" in done.stdout, done.stdout + done.stderr
    assert "heavy: []" in done.stdout


def test_validate_exits_2_with_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD[0][1])
    done = cli("validate", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{path}:4: eval.disentanglement: disentanglement measures need a dataset" in done.stdout + done.stderr
