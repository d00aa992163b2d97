"""Face parts in synth output: part_<name> manifest columns, --part-masks maps, legend, preview."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from synthetic_faces import write_faces

from occbench.cli import cli
from occbench.errors import ConfigError
from occbench.face.parts import face_part_map, load_parts, part_fractions
from occbench.face.geometry import ARCFACE_112, FaceLandmarks
from occbench.synth.pipeline import SynthConfig, run_synth

PARTS = load_parts()
PART_COLS = [f"part_{n}" for n in PARTS.names + list(PARTS.groups)]


def _png(path) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)


def test_lfw_run_has_part_columns_and_maps(lfw_images, tmp_path):
    out = tmp_path / "occ"
    res = CliRunner().invoke(cli, ["synth", "--src", str(lfw_images), "--out", str(out), "--limit", "4",
                                   "--occluders", "sunglasses,surgical_mask", "--per-occluder", "--part-masks",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out / "manifest.parquet")
    assert set(PART_COLS) <= set(df.columns) and (df["status"] == "ok").all()
    for _, r in df.iterrows():
        labels = _png(out / r["part_map"])
        mask = _png(out / r["mask"])
        # the manifest's fractions are those of the files on disk
        fr = part_fractions(mask, labels)
        for name, v in fr.items():
            assert (math.isnan(v) and math.isnan(r[f"part_{name}"])) or r[f"part_{name}"] == pytest.approx(v)
        if r["occluder"] == "sunglasses":
            assert r["part_eye_l"] > 0.95 and r["part_eye_r"] > 0.95 and r["part_mouth"] < 0.02
        else:
            assert r["part_mouth"] > 0.95 and r["part_nose"] > 0.5 and r["part_eye_group"] < 0.02
        assert r["part_reason"] == ""
    # the map is the one occbench.face.parts makes from the run's own mesh: ids 0..10 only
    assert set(np.unique(_png(out / df["part_map"].iloc[0]))) <= set(range(11))
    meta = json.loads((out / "synth.json").read_text())
    assert meta["parts"]["legend"]["9"] == "eye_l" and "eye_group" in meta["parts"]["groups"]
    assert "partmaps/" in meta["parts"]["part_map"]
    # the preview can show the part map
    res = CliRunner().invoke(cli, ["preview", str(out), "--parts", "--n", "2", "--out", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    sheet = _png(tmp_path / "p.png")
    assert sheet.shape[1] > 4 * 128 * 2  # two samples of four tiles each


def test_template_crops_use_the_mean_mesh(tmp_path):
    write_faces(tmp_path / "src", 4)
    out = tmp_path / "occ"
    run_synth(SynthConfig(src=str(tmp_path / "src"), out=str(out), occluders=("surgical_mask",), part_masks=True,
                          clean_ratio=0.5, seed=3), progress=False)
    df = pd.read_parquet(out / "manifest.parquet")
    assert (df["landmarks"] == "template").all() and not df[PART_COLS].isna().any().any()
    want = face_part_map(FaceLandmarks(ARCFACE_112, source="template"), (112, 112)).labels
    for _, r in df.iterrows():
        assert np.array_equal(_png(out / r["part_map"]), want)
        if r["status"] == "clean":
            assert (r[PART_COLS] == 0).all()
        else:
            assert r["part_mouth"] > 0.95


def test_five_point_landmarks_give_an_explained_noface(tmp_path):
    write_faces(tmp_path / "src", 2, size=150)
    lm = tmp_path / "lm.json"
    from synthetic_faces import face_points

    keys = sorted(p.relative_to(tmp_path / "src").as_posix() for p in (tmp_path / "src").rglob("*.jpg"))
    lm.write_text(json.dumps({k: face_points(150).tolist() for k in keys}))
    out = tmp_path / "occ"
    run_synth(SynthConfig(src=str(tmp_path / "src"), out=str(out), landmarks="file", landmarks_file=str(lm),
                          occluders=("sunglasses",), part_masks=True), progress=False)
    df = pd.read_parquet(out / "manifest.parquet")
    assert (df["status"] == "ok").all()  # the occlusion itself is fine
    assert df["part_reason"].str.contains("no face-mesh points").all()
    assert df[PART_COLS].isna().all().all() and (df["part_map"] == "").all()
    assert not (out / "partmaps").exists()


def test_part_masks_need_files_format(tmp_path):
    with pytest.raises(ConfigError, match="--part-masks"):
        SynthConfig(src="x", out=str(tmp_path), part_masks=True, format="rec").validate()
    # runs without part maps keep their recipe (and so their fingerprint) as before
    assert "part_masks" not in SynthConfig(src="x", out=str(tmp_path)).recipe()
    assert SynthConfig(src="x", out=str(tmp_path), part_masks=True).recipe()["part_masks"] is True


def test_preview_parts_on_a_run_without_part_masks_says_how_to_get_them(tmp_path):
    # qa-h: --parts on such a run used to write a sheet of "no part map" placeholders and exit 0
    write_faces(tmp_path / "src", 2)
    out = tmp_path / "occ"
    run_synth(SynthConfig(src=str(tmp_path / "src"), out=str(out), occluders=("sunglasses",)), progress=False)
    res = CliRunner().invoke(cli, ["preview", str(out), "--parts", "--out", str(tmp_path / "p.png")])
    assert res.exit_code == 1 and "without --part-masks" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "p.png").exists()
    res = CliRunner().invoke(cli, ["preview", str(out), "--out", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
