"""`python -m aesweep validate` on the misuses of the building blocks (issue 13): one line FILE:LINE: field:
message per problem, exit 2, through the command itself."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from aesweep.cli import app

CASES = {
    "widths on a conv backbone": (
        "name: s\nmodel:\n  backbone: conv\n  widths: [256, 128]\n",
        ":4: model.widths: widths is not a setting of backbone conv"),
    "a schedule that does not exist": (
        "name: s\ntrain:\n  epochs: 5\n  schedule: {name: cosinus}\n",
        ":4: train.schedule.name: unknown lr schedule 'cosinus'"),
    "a warm-up longer than the epochs": (
        "name: s\ntrain:\n  epochs: 5\n  schedule: {name: cosine, warmup_epochs: 8}\n",
        ":4: train.schedule.warmup_epochs: "),
}


@pytest.mark.parametrize("case", list(CASES))
def test_validate_rejects_misuse_with_file_and_line(case, tmp_path):
    text, expected = CASES[case]
    path = tmp_path / "s.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(path)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith(str(path) + expected), result.output
