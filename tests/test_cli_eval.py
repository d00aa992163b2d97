"""CLI: `occbench eval` end to end on real LFW (small subset), `protocols`, `leaderboard`, errors."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from occbench.cli import cli
from occbench.commands.eval import COMMANDS

LFW_MINI = """
include: [_lfw.yaml, _occlusion.yaml]
name: lfw-mini-occ
description: lfw-occ with two fast occluders and no breakdowns
occlusion:
  occluders: [block_solid, rgba_phone]
  scales: [2.0]
  breakdown: []
main_score: {variant: N-O, metric: accuracy}
"""


@pytest.fixture(scope="module")
def lfw_eval(lfw_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    (base / "lfw-mini-occ.yaml").write_text(LFW_MINI)
    args = ["eval", "--model", "test_evaluate:tiny_recognizer", "--protocol", str(base / "lfw-mini-occ.yaml"),
            "--data-root", str(lfw_root), "--limit-pairs", "20", "--out", str(base / "results"),
            "--cache-dir", str(base / "cache"), "--save-scores", "--no-progress", "--device", "cpu"]
    r = CliRunner().invoke(cli, args)
    return {"base": base, "result": r, "dir": base / "results" / "test_evaluate-tiny_recognizer"}


def test_eval_writes_results_plots_and_scores(lfw_eval):
    r = lfw_eval["result"]
    assert r.exit_code == 0, r.output
    out = lfw_eval["dir"]
    d = json.loads((out / "lfw-mini-occ.json").read_text())
    assert {"schema_version", "occbench_version", "protocol", "model", "variants", "timing", "created", "seed",
            "environment"} <= set(d)
    assert d["model"]["spec"] == "test_evaluate:tiny_recognizer" and d["environment"]["device"] == "cpu"
    assert d["protocol"]["subset"] == {"limit_pairs": 20, "n_selected": 20}
    assert set(d["variants"]) == {"clean", "N-O", "O-O"}
    for name, v in d["variants"].items():
        assert v["n_pairs"] == 20 and 0 <= v["metrics"]["accuracy"] <= 1
        scores = pd.read_parquet(out / "lfw-mini-occ.scores" / f"{name}.parquet")
        assert len(scores) == 20 and (scores["status"] == "ok").sum() == v["n_scored"]
    for kind in ("roc", "area", "cells"):
        assert (out / f"lfw-mini-occ.{kind}.png").stat().st_size > 10_000
    assert sorted(d["files"]["plots"]) == sorted(f"lfw-mini-occ.{k}.png" for k in ("area", "cells", "roc"))
    assert "N-O accuracy = " in r.output and f"wrote {out / 'lfw-mini-occ.json'}" in r.output


def test_leaderboard_command(lfw_eval, tmp_path):
    assert lfw_eval["result"].exit_code == 0
    r = CliRunner().invoke(cli, ["leaderboard", str(lfw_eval["base"] / "results"), "-o", str(tmp_path / "lb.csv")])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "lb.csv")
    assert list(df["variant"]) == ["clean", "N-O", "O-O"] and set(df["limit_pairs"]) == {20}
    assert (tmp_path / "lb.md").is_file() and "3 rows from 1 results files" in r.output


def test_protocols_command_lists_and_shows():
    r = CliRunner().invoke(cli, ["protocols"])
    assert r.exit_code == 0
    for name in ("lfw ", "lfw-occ ", "lfw-occ-id", "bin ", "pairs ", "gallery-probe "):
        assert name in r.output
    assert "N-O accuracy" in r.output and "N-O rank1" in r.output
    r = CliRunner().invoke(cli, ["protocols", "--show", "lfw-occ"])
    assert r.exit_code == 0 and "name: N-O/surgical_mask@s2.0" in r.output and "synth_runs:" in r.output


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("OCCBENCH_DATA", raising=False)
    r = CliRunner().invoke(cli, ["eval", "-m", "test_evaluate:tiny_recognizer", "-p", "lfw-occ",
                                 "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r")])
    assert r.exit_code == 1
    assert r.output.startswith("Error: no data root") and "lfw-occ expects DATA/lfw/<Name>/<Name>_NNNN.jpg" in r.output


def test_bad_invocations(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("path1,path2,same\n")
    runner = CliRunner()
    r = runner.invoke(cli, ["eval", "-m", "test_evaluate:tiny_recognizer", "-p", "bin", "--pairs", str(f)])
    assert r.exit_code == 1 and "does not read a pairs file" in r.output
    r = runner.invoke(cli, ["eval", "-m", "test_evaluate:tiny_recognizer", "-p", "lfw-ocd"])
    assert r.exit_code == 1 and "Did you mean: lfw-occ" in r.output
    r = runner.invoke(cli, ["eval", "-p", "lfw"])
    assert r.exit_code == 2 and "Missing option '--model'" in r.output


def test_every_command_has_help():
    for cmd in COMMANDS:
        assert cmd.help and cmd.help.strip()
        r = CliRunner().invoke(cli, [cmd.name, "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output
