"""CLI: synth, patterns, preview through click's CliRunner (exit codes, messages, outputs)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from occbench.cli import cli
from occbench.synth.manifest import read_manifest
from occbench.synth.occluders import list_occluders
from synthetic_faces import write_faces


@pytest.fixture()
def runner():
    return CliRunner()


@pytest.fixture()
def src(tmp_path):
    p = tmp_path / "src"
    write_faces(p, 6, 112, "jpg")
    (p / "zz").mkdir()
    (p / "zz" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return p


@pytest.mark.parametrize("name", ["synth", "patterns", "preview"])
def test_every_command_has_help_with_examples(runner, name):
    res = runner.invoke(cli, [name, "--help"])
    assert res.exit_code == 0, res.output
    assert "Examples:" in res.output and f"occbench {name}" in res.output


def test_synth_reports_a_summary(runner, src, tmp_path):
    out = tmp_path / "out"
    occ = ",".join(list_occluders()[:2])
    res = runner.invoke(cli, ["synth", "--src", str(src), "--out", str(out), "--occluders", occ,
                              "--scales", "1:0.5:2", "--per-scale", "--no-progress", "--seed", "7"])
    assert res.exit_code == 0, res.output
    assert f"7 images -> 21 rows (3 variants) in {out}" in res.output
    assert "status: ok 18, clean 0, noface 0, error 3" in res.output
    assert "reason (3): truncated JPEG (data ends before the end-of-image marker)" in res.output
    df = read_manifest(out)
    assert sorted(df["variant"].unique()) == ["s1", "s1.5", "s2"]
    assert json.loads((out / "synth.json").read_text())["config"]["occluders"] == occ.split(",")
    # the same command again resumes (nothing to do); a changed one is refused with a fix
    res = runner.invoke(cli, ["synth", "--src", str(src), "--out", str(out), "--occluders", occ,
                              "--scales", "1:0.5:2", "--per-scale", "--no-progress", "--seed", "7"])
    assert res.exit_code == 0 and "resumed: 7 images were already done" in res.output
    res = runner.invoke(cli, ["synth", "--src", str(src), "--out", str(out), "--occluders", occ,
                              "--scales", "1:0.5:2", "--per-scale", "--no-progress"])
    assert res.exit_code == 1
    assert "Error: --out" in res.output and "different configuration (seed: 7 -> 0)" in res.output
    assert "--overwrite" in res.output


def test_keys_file_and_limit(runner, src, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# probes\nid1/face_0004.jpg\nid0/face_0000.jpg\n\n")
    out = tmp_path / "o"
    res = runner.invoke(cli, ["synth", "--src", str(src), "--out", str(out), "--keys-file", str(keys),
                              "--limit", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert list(read_manifest(out)["key"]) == ["id0/face_0000.jpg"]


@pytest.mark.parametrize("args, message", [
    (["--scales", "1:0:2"], "Invalid value for '--scales': scale step must be > 0"),
    (["--scales", "2:0.5:1"], "greater than stop"),
    (["--scales", "0,1"], "scales must be > 0"),
    (["--clean-ratio", "2"], "Invalid value for '--clean-ratio'"),
    (["--occluders", ","], "give at least one name"),
    (["--landmarks", "template", "--landmarks-file", "{lm}"], "--landmarks-file needs --landmarks file"),
    (["--landmarks", "file"], "--landmarks file needs --landmarks-file"),
    (["--placement", "random"], "Invalid value for '--placement'"),
    (["--jobs", "0"], "Invalid value for '--jobs' / '-j': 0 is not a worker count"),
])
def test_bad_invocations_are_usage_errors(runner, src, tmp_path, args, message):
    lm = tmp_path / "lm.csv"
    lm.write_text("key,x0,y0,x1,y1,x2,y2,x3,y3,x4,y4\n")
    args = [a.replace("{lm}", str(lm)) for a in args]
    res = runner.invoke(cli, ["synth", "--src", str(src), "--out", str(tmp_path / "o")] + args)
    assert res.exit_code == 2, res.output
    assert message in res.output


def test_library_errors_become_clean_messages(runner, src, tmp_path):
    res = runner.invoke(cli, ["synth", "--src", str(src), "--out", str(tmp_path / "o"), "--occluders",
                              "surgical_msk", "--no-progress"])
    assert res.exit_code == 1
    assert "Error: unknown occluder 'surgical_msk'. Did you mean: surgical_mask" in res.output
    res = runner.invoke(cli, ["synth", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "Error: source" in res.output and "Traceback" not in res.output


def test_list_occluders(runner):
    res = runner.invoke(cli, ["synth", "--list-occluders"])
    assert res.exit_code == 0
    assert [ln.split("\t")[0] for ln in res.output.splitlines()] == list_occluders()


def test_patterns_csv_k5(runner, tmp_path):
    out = tmp_path / "patterns.csv"
    res = runner.invoke(cli, ["patterns", "--k", "5", "--out", str(out)])
    assert res.exit_code == 0 and "wrote 226 patterns (K=5)" in res.output
    df = pd.read_csv(out)
    assert list(df.columns) == ["pattern", "y0", "x0", "y1", "x1"] and len(df) == 226
    assert df.iloc[0].tolist() == [0, 0, 0, 0, 0]
    assert list(df["pattern"]) == list(range(226))
    body = df.iloc[1:]
    assert ((body.y1 > body.y0) & (body.x1 > body.x0) & (body.y1 <= 5) & (body.x1 <= 5)).all()
    assert len(body.drop_duplicates(["y0", "x0", "y1", "x1"])) == 225
    res = runner.invoke(cli, ["patterns", "--k", "4"])
    assert res.exit_code == 0 and res.output.splitlines()[:2] == ["pattern,y0,x0,y1,x1", "0,0,0,0,0"]
    assert len(res.output.splitlines()) == 102
    assert runner.invoke(cli, ["patterns", "--k", "0"]).exit_code == 2


def test_preview_writes_a_sheet(runner, src, tmp_path):
    out = tmp_path / "o"
    assert runner.invoke(cli, ["synth", "--src", str(src), "--out", str(out), "--no-progress"]).exit_code == 0
    sheet = tmp_path / "sheet.png"
    res = runner.invoke(cli, ["preview", str(out), "--out", str(sheet), "--n", "4"])
    assert res.exit_code == 0 and f"wrote {sheet}" in res.output
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape[0] > 128 and img.shape[1] > 3 * 128 * 4
    again = tmp_path / "again.png"
    runner.invoke(cli, ["preview", str(out), "--out", str(again), "--n", "4"])
    assert again.read_bytes() == sheet.read_bytes()  # deterministic sample
    res = runner.invoke(cli, ["preview", str(out), "--variant", "s9"])
    assert res.exit_code == 1 and "no variant 's9' in this run; variants: main" in res.output
    res = runner.invoke(cli, ["preview", str(tmp_path)])
    assert res.exit_code == 1 and "no synth manifest" in res.output


def test_preview_overlay_marks_the_mask(src, tmp_path):
    from occbench.synth.preview import overlay

    img = np.full((4, 4, 3), 100, np.uint8)
    mask = np.zeros((4, 4), np.uint8)
    mask[:2] = 255
    o = overlay(img, mask)
    assert (o[2:] == 100).all() and (o[:2, :, 0] > 150).all() and (o[:2, :, 1] < 60).all()


def test_synth_bank_option(runner, src, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(cli, ["synth", "--src", str(src), "--out", str(out), "--occluders", "surgical_mask",
                              "--bank", "3", "--no-progress", "--seed", "5"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "synth.json").read_text())
    assert meta["config"]["bank"] == 3 and meta["occluders"]["surgical_mask"]["config"]["bank_seed"] == 5
    ok = read_manifest(out).query("status == 'ok'")
    assert {json.loads(p)["bank_index"] for p in ok["params"]} <= {0, 1, 2}
    bad = runner.invoke(cli, ["synth", "--src", str(src), "--out", str(tmp_path / "x"), "--bank", "-2"])
    assert bad.exit_code == 2 and "--bank" in bad.output


def test_every_command_has_examples_and_every_option_a_help_text():
    # qa-h: `occbench realism --help` listed --epochs with no help text
    import click

    for name, cmd in cli.commands.items():
        assert "Example" in (cmd.help or ""), f"`occbench {name} --help` has no example"
        bare = [p.opts[0] for p in cmd.params if isinstance(p, click.Option) and not p.hidden and not p.help]
        assert not bare, f"`occbench {name}` options without help: {bare}"


def test_preview_takes_o_like_leaderboard(runner, src, tmp_path):
    # qa-h: `occbench preview OUT -o sheet.png` was "No such option '-o'" (leaderboard takes -o)
    out = tmp_path / "out"
    assert runner.invoke(cli, ["synth", "--src", str(src), "--out", str(out), "--limit", "2",
                               "--no-progress"]).exit_code == 0
    res = runner.invoke(cli, ["preview", str(out), "-o", str(tmp_path / "s.png"), "--n", "2"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
