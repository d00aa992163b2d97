"""Console wording that must say what a number means (issue 8, lead's follow-ups to the QA pass)."""
from __future__ import annotations

from click.testing import CliRunner

from occbench.cli import cli
from occbench.commands.eval import _hint

FAR_NOTE = "tar_at_far_1e-4: only 1500 impostor pairs, so FAR 0.0001 cannot be measured (needs ≥ 10,000)"


def test_far_hint_suggests_a_larger_limit_only_when_a_limit_was_used():
    assert "--limit" in _hint(FAR_NOTE, limited=True)
    assert "--limit" not in _hint(FAR_NOTE, limited=False)
    assert "more impostor pairs" in _hint(FAR_NOTE, limited=False)


def test_protocols_table_columns_never_run_together():
    out = CliRunner().invoke(cli, ["protocols"]).output.splitlines()
    header = out[0]
    desc_at = header.index("description")
    for line in out[1:]:
        assert line[desc_at - 1] == " ", line  # the main-score column ends before the description
