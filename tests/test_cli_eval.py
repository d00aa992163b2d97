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
    assert d["protocol"]["subset"] == {"limit": 20, "n_selected": 20}
    assert set(d["variants"]) == {"clean", "N-O", "O-O"}
    for name, v in d["variants"].items():
        assert v["n_pairs"] == 20 and 0 <= v["metrics"]["accuracy"] <= 1
        scores = pd.read_parquet(out / "lfw-mini-occ.scores" / f"{name}.parquet")
        assert len(scores) == 20 and (scores["status"] == "ok").sum() == v["n_scored"]
    for kind in ("roc", "area", "cells"):
        assert (out / f"lfw-mini-occ.{kind}.png").stat().st_size > 10_000
    # parts: the face diagram of the pp lost per covered part (a part is covered in >= 20 pairs of a headline)
    assert sorted(d["files"]["plots"]) == sorted(f"lfw-mini-occ.{k}.png" for k in ("area", "cells", "parts", "roc"))
    assert "N-O accuracy = " in r.output and f"wrote {out / 'lfw-mini-occ.json'}" in r.output


def test_leaderboard_command(lfw_eval, tmp_path):
    assert lfw_eval["result"].exit_code == 0
    r = CliRunner().invoke(cli, ["leaderboard", str(lfw_eval["base"] / "results"), "-o", str(tmp_path / "lb.csv")])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "lb.csv")
    assert list(df["variant"]) == ["clean", "N-O", "O-O"] and set(df["limit"]) == {20}
    assert (tmp_path / "lb.md").is_file() and "3 rows from 1 results files" in r.output


def test_protocols_command_lists_and_shows():
    r = CliRunner().invoke(cli, ["protocols"])
    assert r.exit_code == 0
    for name in ("lfw ", "lfw-occ ", "lfw-occ-id", "bin ", "pairs ", "gallery-probe "):
        assert name in r.output
    assert "N-O accuracy" in r.output and "N-O rank1" in r.output
    r = CliRunner().invoke(cli, ["protocols", "--show", "lfw-occ"])
    assert r.exit_code == 0 and "name: N-O/surgical_mask_v1@s2.0" in r.output and "synth_runs:" in r.output


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


# --------------------------------------------------------------------------- every number says what it is
# (fast: generated faces, the tiny model)


@pytest.fixture(scope="module")
def gen_pairs(tmp_path_factory):
    from test_evaluate import make_pairs_set

    base = tmp_path_factory.mktemp("gen-cli")
    return base, make_pairs_set(base / "data")


def _eval(base, *args):
    return CliRunner().invoke(cli, ["eval", "-m", "test_evaluate:tiny_recognizer", "--cache-dir", str(base / "cache"),
                                    "--no-progress", "--no-plots", "--device", "cpu", *args])


def test_unmeasurable_tar_is_na_on_console_csv_and_markdown(gen_pairs, tmp_path):
    base, pf = gen_pairs
    r = _eval(base, "-p", "pairs", "--pairs", str(pf), "--out", str(tmp_path / "res"))
    assert r.exit_code == 0, r.output
    # 36 impostors cannot measure FAR 1e-3: never a number, always the reason
    assert "TAR@FAR=1e-3 = n/a (needs ≥ 1,000 impostors) in: clean" in r.output
    row = next(line for line in r.output.splitlines() if line.startswith("clean "))
    assert row.split()[2] == "n/a"  # the TAR@FAR=1e-3 cell (its FAR = 0 point is 100.00 here)
    r = CliRunner().invoke(cli, ["leaderboard", str(tmp_path / "res"), "-o", str(tmp_path / "lb.csv")])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "lb.csv")
    assert pd.isna(df.loc[0, "tar_at_far_1e-3_pct"]) and 50 <= df.loc[0, "accuracy_pct"] <= 100
    assert "n/a (needs ≥ 1,000 impostors)" in (tmp_path / "lb.md").read_text()


def test_one_fold_pairs_file_prints_the_note_and_a_hint(gen_pairs, tmp_path):
    base, pf = gen_pairs
    one = tmp_path / "one-fold.csv"
    lines = pf.read_text().splitlines()
    one.write_text("\n".join([lines[0]] + [",".join(ln.split(",")[:3] + ["1"]) for ln in lines[1:]]) + "\n")
    r = _eval(base, "-p", "pairs", "--pairs", str(one), "--data-root", str(pf.parent), "--out", str(tmp_path / "r"))
    assert r.exit_code == 0, r.output
    assert "clean accuracy = n/a (need at least 2 distinct folds" in r.output
    assert "note [clean]: accuracy: need at least 2 distinct folds" in r.output and "hint: use --folds 10" in r.output
    r = _eval(base, "-p", "pairs", "--pairs", str(one), "--data-root", str(pf.parent), "--out", str(tmp_path / "r"),
              "--folds", "4")
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "r" / "test_evaluate-tiny_recognizer" / "pairs.json").read_text())
    assert d["variants"]["clean"]["metrics"]["accuracy"] is not None
    assert sorted(d["variants"]["clean"]["thresholds"]["per_fold"]) == ["1", "2", "3", "4"]


def test_limit_and_its_old_name(gen_pairs, tmp_path):
    base, pf = gen_pairs
    out = {}
    for opt in ("--limit", "--limit-pairs"):
        r = _eval(base, "-p", "pairs", "--pairs", str(pf), "--out", str(tmp_path / opt), opt, "12")
        assert r.exit_code == 0, r.output
        d = json.loads((tmp_path / opt / "test_evaluate-tiny_recognizer" / "pairs.json").read_text())
        out[opt] = (d["protocol"]["subset"], d["variants"]["clean"]["metrics"])
    assert out["--limit"] == out["--limit-pairs"] and out["--limit"][0] == {"limit": 12, "n_selected": 12}


def test_arch_opt_reaches_the_factory(gen_pairs, tmp_path):
    from test_evaluate import TinyRecognizer

    base, pf = gen_pairs
    r = _eval(base, "-p", "pairs", "--pairs", str(pf), "--out", str(tmp_path), "--arch-opt", "seed=1")
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "test_evaluate-tiny_recognizer" / "pairs.json").read_text())
    assert d["model"]["fingerprint"] == TinyRecognizer(seed=1).fingerprint() != TinyRecognizer(seed=0).fingerprint()
    assert d["config"]["arch_opts"] == {"seed": 1}
    r = _eval(base, "-p", "pairs", "--pairs", str(pf), "--out", str(tmp_path), "--arch-opt", "seed")
    assert r.exit_code == 1 and "must be KEY=VALUE" in r.output


def test_identification_prints_its_size(tmp_path):
    from test_evaluate import make_faces

    ids = make_faces(tmp_path, n_ids=5, per_id=3, seed=3)
    (tmp_path / "g.csv").write_text("path,identity\n" + "".join(f"{ids[n][0]},{n}\n" for n in sorted(ids)[:4]))
    (tmp_path / "p.csv").write_text("path,identity\n" + "".join(f"{k},{n}\n" for n in sorted(ids) for k in ids[n][1:]))
    r = _eval(tmp_path, "-p", "gallery-probe", "--gallery", str(tmp_path / "g.csv"), "--probe", str(tmp_path / "p.csv"),
              "--out", str(tmp_path / "r"))
    assert r.exit_code == 0, r.output
    assert ("gallery: 4 images enrolled (0 failed to enrol); probes: 10 (8 mated, 2 non-mated; 0 clean probes"
            in r.output)
    assert "TPIR@FPIR=1e-2 = n/a (needs ≥ 100 non-mated probes)" in r.output


def test_protocols_and_leaderboard_help_have_examples():
    for cmd in ("protocols", "leaderboard", "eval"):
        r = CliRunner().invoke(cli, [cmd, "--help"])
        assert r.exit_code == 0 and "Examples:" in r.output, cmd
    assert "--limit-pairs" in CliRunner().invoke(cli, ["eval", "--help"]).output  # the old name still works


def test_bad_paths_are_reported_before_torch_is_imported(tmp_path):
    """A missing model file or data set is reported at once: nothing heavy is imported first."""
    import subprocess
    import sys

    code = ("import sys\nfrom click.testing import CliRunner\nfrom occbench.cli import cli\n"
            "for args in ({a!r}, {b!r}):\n"
            "    r = CliRunner().invoke(cli, args)\n"
            "    print(r.exit_code, 'torch' in sys.modules, 'mediapipe' in sys.modules, r.output.strip())\n")
    a = ["eval", "-m", str(tmp_path / "nope.onnx"), "-p", "lfw", "--data-root", str(tmp_path)]
    b = ["eval", "-m", "dlib-resnet-torch", "-p", "lfw", "--data-root", str(tmp_path)]
    out = subprocess.run([sys.executable, "-c", code.format(a=a, b=b)], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": "", "PATH": "/usr/bin:/bin", "OCCBENCH_DATA": ""}).stdout.splitlines()
    assert out[0].startswith("1 False False Error: model file") and "nope.onnx not found" in out[0]
    assert out[1].startswith("1 False False Error: image folder") and "lfw expects" in out[1]


def test_missing_bin_names_the_paths_as_typed(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    r = CliRunner().invoke(cli, ["eval", "-m", "test_evaluate:tiny_recognizer", "-p", "lfw-bin", "--data-root",
                                 str(tmp_path / "link")])
    assert r.exit_code == 1 and f"looked for {tmp_path / 'link' / 'lfw.bin'}" in r.output
    assert str(real) not in r.output  # never the resolved symlink beside the typed path
