"""The synth engine: outputs, labels, determinism (jobs, subsets), resume, nothing lost, config safety."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from occbench.errors import ConfigError, OutputWriteError
from occbench.io.images import decode_rgb, sniff_format
from occbench.synth import pipeline
from occbench.synth.manifest import MANIFEST_COLUMNS, read_manifest
from occbench.synth.occluders import list_occluders
from occbench.synth.patterns import cell_fractions, match_pattern
from occbench.synth.pipeline import SynthConfig, plan_variants, run_synth
from synthetic_faces import synthetic_face, write_faces

REQUIRED = ("key", "identity", "src", "image", "mask", "status", "reason", "occluder", "placement", "scale",
            "seed", "area_frac", "pattern", "k", "variant", "cells", "params")


def _occs(n=2):
    names = list_occluders()
    assert len(names) >= n, names
    return tuple(names[:n])


def tree_bytes(out: Path) -> dict[str, bytes]:
    """Every output file (not the internal .synth state) by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".synth" not in p.relative_to(out).parts}


@pytest.fixture()
def faces(tmp_path) -> Path:
    """8 synthetic 112x112 JPEG crops, 2 PNG crops, and three broken files."""
    src = tmp_path / "src"
    write_faces(src, 8, 112, "jpg")
    write_faces(src / "png", 2, 112, "png", seed=1)
    good = (src / "id0" / "face_0000.jpg").read_bytes()
    bad = src / "zz_broken"  # sorts last, so --limit N picks good images
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (bad / "text.jpg").write_text("this is not an image\n")
    return src


def _cfg(src, out, **kw) -> SynthConfig:
    kw.setdefault("occluders", _occs())
    return SynthConfig(src=str(src), out=str(out), **kw)


def test_outputs_labels_and_manifest_contract(faces, tmp_path):
    out = tmp_path / "out"
    s = run_synth(_cfg(faces, out, scales="1:0.5:2", clean_ratio=0.25, seed=3), progress=False)
    df = read_manifest(out)
    assert tuple(df.columns) == MANIFEST_COLUMNS and set(REQUIRED) <= set(df.columns)
    assert len(df) == 13 == s.n_rows == s.n_images
    assert list(df["key"]) == sorted(df["key"])
    # nothing lost: the three broken files are error rows with the decoder's reason, and counted
    err = df[df["status"] == "error"].set_index("key")
    assert set(err.index) == {"zz_broken/empty.jpg", "zz_broken/truncated.jpg", "zz_broken/text.jpg"}
    assert err.loc["zz_broken/empty.jpg", "reason"] == "empty file"
    assert "truncated" in err.loc["zz_broken/truncated.jpg", "reason"]
    assert "not a recognised image format" in err.loc["zz_broken/text.jpg", "reason"]
    assert (err["image"] == "").all() and (err["mask"] == "").all()
    assert s.status_counts["error"] == 3 and sum(s.status_counts.values()) == 13
    assert s.reason_counts["empty file"] == 1
    good = df[df["status"].isin(["ok", "clean"])]
    assert len(good) == 10 and (good["status"] == "clean").any() and (good["status"] == "ok").any()
    for _, r in good.iterrows():
        src_bytes = (faces / r["key"]).read_bytes()
        img_bytes = (out / r["image"]).read_bytes()
        assert r["image"] == f"images/main/{r['key']}"
        assert r["mask"] == f"masks/main/{r['key']}.png"  # the key's extension is kept: x.jpg, x.webp differ
        assert sniff_format(img_bytes) == sniff_format(src_bytes) == r["fmt"]
        img = decode_rgb(img_bytes)
        mask = cv2.imdecode(np.frombuffer((out / r["mask"]).read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
        assert img.shape == (112, 112, 3) and mask.shape == (112, 112) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        # 112x112 template crops: the face frame is the image, so labels follow from the mask itself
        assert r["pattern"] == match_pattern(mask, 5)
        assert r["area_frac"] == pytest.approx((mask == 255).mean())
        np.testing.assert_allclose(json.loads(r["cells"]), cell_fractions(mask, 5).ravel())
        assert r["k"] == 5 and r["placement"] == "anchored" and r["landmarks"] == "template"
        if r["status"] == "clean":
            assert img_bytes == src_bytes and r["pattern"] == 0 and not mask.any() and r["occluder"] == "none"
        else:
            assert r["occluder"] in _occs() and r["scale"] in (1.0, 1.5, 2.0)
            assert r["pattern"] > 0 and 0 < r["area_frac"] < 1
            assert json.loads(r["params"])  # the sampled parameters are recorded
            assert not np.array_equal(img, decode_rgb(src_bytes))
    meta = json.loads((out / "synth.json").read_text())
    assert meta["seed"] == 3 and meta["config"]["scales"] == [1.0, 1.5, 2.0]
    assert meta["summary"]["status_counts"] == s.status_counts
    assert set(meta["occluders"]) == set(_occs()) and meta["occbench_version"]
    assert SynthConfig.from_dict({**meta["config"], "out": str(out)}).recipe() == meta["config"]
    lms = pd.read_parquet(out / "landmarks.parquet")
    assert len(lms) == 10 and (lms["status"] == "ok").all()  # one per decodable image
    assert (out / "manifest.csv").is_file() and (out / "landmarks.csv").is_file()


def test_output_independent_of_jobs(faces, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_synth(_cfg(faces, a, scales="1,2", per_scale=True, jobs=1), progress=False)
    run_synth(_cfg(faces, b, scales="1,2", per_scale=True, jobs=2), progress=False)
    ta, tb = tree_bytes(a), tree_bytes(b)
    assert len(ta) > 30 and ta == tb


def test_subset_and_limit_do_not_change_an_image(faces, tmp_path):
    full, sub, lim = tmp_path / "full", tmp_path / "sub", tmp_path / "lim"
    run_synth(_cfg(faces, full), progress=False)
    keys = ["id2/face_0005.jpg", "png/id1/face_0001.png"]
    run_synth(_cfg(faces, sub, keys=keys), progress=False)
    run_synth(_cfg(faces, lim, limit=3), progress=False)
    t_full, t_sub, t_lim = tree_bytes(full), tree_bytes(sub), tree_bytes(lim)
    for t in (t_sub, t_lim):
        files = [p for p in t if p.startswith(("images/", "masks/"))]
        assert files and all(t[p] == t_full[p] for p in files)
    df_full = read_manifest(full).set_index("key")
    df_sub = read_manifest(sub).set_index("key")
    assert list(df_sub.index) == sorted(keys)
    pd.testing.assert_frame_equal(df_sub, df_full.loc[df_sub.index])
    assert len(read_manifest(lim)) == 3


def test_resume_after_interruption_is_byte_identical(faces, tmp_path, monkeypatch):
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    cfg = dict(scales="1:0.5:2", per_scale=True, clean_ratio=0.2)
    run_synth(_cfg(faces, clean, **cfg), progress=False)

    calls = {"n": 0}
    real = pipeline._Worker.process

    def flaky(self, key, identity):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt  # as if Ctrl-C hit in the middle of the run
        return real(self, key, identity)

    monkeypatch.setattr(pipeline._Worker, "process", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_synth(_cfg(faces, broken, **cfg), progress=False)
    assert not (broken / "manifest.parquet").exists()
    monkeypatch.setattr(pipeline._Worker, "process", real)
    # a kill can also leave half a line in the log: it is trimmed and that item redone
    with open(broken / ".synth" / "rows.jsonl", "ab") as fh:
        fh.write(b'{"key": "id1/face_00')
    s = run_synth(_cfg(faces, broken, **cfg), progress=False)
    assert s.resumed == 5 and s.processed == 8
    assert tree_bytes(broken) == tree_bytes(clean)
    # rerunning a finished run is a no-op that rewrites the same tables
    s2 = run_synth(_cfg(faces, broken, **cfg, jobs=2), progress=False)
    assert s2.processed == 0 and tree_bytes(broken) == tree_bytes(clean)


def test_per_scale_and_per_occluder_rows(faces, tmp_path):
    occs = _occs(2)
    out = tmp_path / "x"
    s = run_synth(_cfg(faces, out, occluders=occs, scales="1:0.5:2", per_scale=True, per_occluder=True,
                       limit=3), progress=False)
    df = read_manifest(out)
    assert len(df) == 3 * 2 * 3 == s.n_rows and s.n_images == 3
    assert s.variants == [f"{o}@s{x}" for o in occs for x in ("1", "1.5", "2")]
    first = df[df["key"] == df["key"].iloc[0]]
    assert list(first["variant"]) == s.variants  # rows ordered by key, then variant
    assert (first["occluder"] + "@s" + first["scale"].map("{:g}".format) == first["variant"]).all()
    # a paired scale sweep: the variants of one occluder share the seed; the occluded area grows with scale
    for o in occs:
        g = first[first["occluder"] == o]
        assert g["seed"].nunique() == 1
        assert g["area_frac"].is_monotonic_increasing
    for v in s.variants:
        assert (out / "images" / v / df["key"].iloc[0]).is_file()

    out2 = tmp_path / "y"
    s2 = run_synth(_cfg(faces, out2, occluders=occs, per_occluder=True, limit=2), progress=False)
    assert s2.n_rows == 4 and s2.variants == list(occs)
    out3 = tmp_path / "z"
    s3 = run_synth(_cfg(faces, out3, scales="1,3", per_scale=True, limit=2), progress=False)
    assert s3.n_rows == 4 and s3.variants == ["s1", "s3"]
    assert read_manifest(out3).groupby("key")["occluder"].nunique().eq(1).all()  # same occluder per image


def test_plan_variants_names():
    assert [v.name for v in plan_variants(("a", "b"), (1.0, 1.5), False, False)] == ["main"]
    assert [v.name for v in plan_variants(("a", "b"), (1.0, 1.5), True, False)] == ["s1", "s1.5"]
    assert [v.name for v in plan_variants(("a", "b"), (1.0,), False, True)] == ["a", "b"]
    with pytest.raises(ConfigError, match="safe folder name"):
        plan_variants(("../x",), (1.0,), False, True)


def test_all_clean_copies_the_input(faces, tmp_path):
    out = tmp_path / "o"
    s = run_synth(_cfg(faces, out, clean_ratio=1.0, limit=4), progress=False)
    assert s.status_counts == {"clean": 4}
    for _, r in read_manifest(out).iterrows():
        assert (out / r["image"]).read_bytes() == (faces / r["key"]).read_bytes()


def test_faceless_and_missing_keys(faces, tmp_path):
    # a landmarks file that knows only some keys: the others are noface with the reason
    first = tmp_path / "first"
    run_synth(_cfg(faces, first, keys=["id0/face_0000.jpg", "id1/face_0001.jpg", "png/id0/face_0000.png"]),
              progress=False)
    lm = pd.read_parquet(first / "landmarks.parquet")
    assert len(lm) == 3
    out = tmp_path / "second"
    keys = list(lm["key"]) + ["id0/face_0003.jpg", "no/such.jpg"]
    s = run_synth(_cfg(faces, out, landmarks="file", landmarks_file=str(first / "landmarks.parquet"), keys=keys),
                  progress=False)
    df = read_manifest(out).set_index("key")
    assert df.loc["id0/face_0003.jpg", "status"] == "noface"
    assert "no landmarks for key" in df.loc["id0/face_0003.jpg", "reason"]
    assert df.loc["no/such.jpg", "status"] == "error" and "not found" in df.loc["no/such.jpg", "reason"]
    assert s.status_counts == {"error": 1, "noface": 1, "ok": 3}
    # reused landmarks reproduce the first run's images exactly (what the eval engine relies on)
    for k in lm["key"]:
        assert (out / df.loc[k, "image"]).read_bytes() == (first / df.loc[k, "image"]).read_bytes()


def test_blank_image_is_noface_with_mediapipe(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    cv2.imwrite(str(src / "blank.png"), np.full((160, 160, 3), 128, np.uint8))
    img, _ = synthetic_face(112)
    cv2.imwrite(str(src / "crop.png"), img)
    out = tmp_path / "o"
    s = run_synth(SynthConfig(src=str(src), out=str(out), occluders=_occs(1)), progress=False)
    df = read_manifest(out).set_index("key")
    assert df.loc["blank.png", "status"] == "noface" and df.loc["blank.png", "reason"]
    assert df.loc["blank.png", "image"] == "" and df.loc["blank.png", "width"] == 160
    assert df.loc["crop.png", "status"] == "ok"  # auto: 112x112 is an aligned crop
    assert s.status_counts == {"noface": 1, "ok": 1}


def test_refuses_a_different_config_unless_overwrite(faces, tmp_path):
    out = tmp_path / "o"
    run_synth(_cfg(faces, out, limit=2), progress=False)
    with pytest.raises(ConfigError, match=r"different configuration \(seed: 0 -> 1\).*--overwrite"):
        run_synth(_cfg(faces, out, limit=2, seed=1), progress=False)
    s = run_synth(_cfg(faces, out, limit=2, seed=1, overwrite=True), progress=False)
    assert s.processed == 2
    assert json.loads((out / "synth.json").read_text())["seed"] == 1


def test_refuses_foreign_or_nested_out(faces, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not written by `occbench synth`"):
        run_synth(_cfg(faces, foreign, overwrite=True), progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="inside the source folder"):
        run_synth(_cfg(faces, faces / "occ"), progress=False)


def test_config_json_round_trip_and_validation(tmp_path):
    cfg = SynthConfig(src="lfw", out=str(tmp_path), occluders="a,b", scales="1:0.5:2", keys=["x", "y", "x"])
    assert cfg.occluders == ("a", "b") and cfg.scales == (1.0, 1.5, 2.0) and cfg.keys == ("x", "y")
    assert SynthConfig.from_json(cfg.to_json()) == cfg
    assert "jobs" not in cfg.recipe() and "out" not in cfg.recipe()
    for bad, msg in [(dict(landmarks="dlib"), "landmarks must be"), (dict(landmarks="file"), "landmarks_file"),
                     (dict(placement="x"), "placement"), (dict(clean_ratio=1.5), "clean_ratio"),
                     (dict(k=0), "positive integer"), (dict(jobs=0), "jobs"), (dict(occluders=()), "empty")]:
        with pytest.raises(ConfigError, match=msg):
            SynthConfig(src="x", out="y", **bad).validate()
    with pytest.raises(ConfigError, match="unknown synth config fields"):
        SynthConfig.from_dict({"src": "x", "out": "y", "colour": 1})


def test_lfw_wild_images(lfw_images, tmp_path):
    out = tmp_path / "o"
    s = run_synth(SynthConfig(src=str(lfw_images), out=str(out), occluders=_occs(), limit=3), progress=False)
    df = read_manifest(out)
    assert s.status_counts == {"ok": 3}
    assert (df["landmarks"] == "mediapipe").all() and (df["width"] == 250).all()
    # labels are measured in the face frame: a face-sized occluder covers a sizeable part of it
    assert df["area_frac"].between(0.02, 0.9).all() and (df["pattern"] > 0).all()
    for _, r in df.iterrows():
        assert decode_rgb((out / r["image"]).read_bytes()).shape == (250, 250, 3)


@pytest.mark.slow
def test_lfw_jobs_and_kill_resume(lfw_images, tmp_path):
    """Real LFW through the CLI: --jobs 1 vs 3, and a run killed mid-way then resumed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["--src", str(lfw_images), "--limit", "40", "--scales", "1,1.5", "--per-scale", "--no-progress"]
    cmd = [sys.executable, "-c", "from occbench.cli import main; main()", "synth"]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    subprocess.run(cmd + args + ["--out", str(a)], check=True, capture_output=True)
    subprocess.run(cmd + args + ["--out", str(b), "--jobs", "3"], check=True, capture_output=True)
    assert tree_bytes(a) == tree_bytes(b)
    p = subprocess.Popen(cmd + args + ["--out", str(c), "--jobs", "2"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    log = c / ".synth" / "rows.jsonl"
    t0 = time.time()
    while time.time() - t0 < 120 and (not log.exists() or log.read_bytes().count(b"\n") < 3):
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # the run and its workers, as a killed job would be
    p.wait()
    assert not (c / "manifest.parquet").exists()
    subprocess.run(cmd + args + ["--out", str(c)], check=True, capture_output=True)
    assert tree_bytes(c) == tree_bytes(a)


def test_labels_match_the_pattern_module_and_geometry():
    """The engine's fast labels equal patterns.match_pattern / cell_fractions on mask_in_face_frame."""
    from occbench.face.geometry import ARCFACE_112, mask_in_face_frame
    from occbench.synth.pipeline import FaceFrame, occlusion_labels

    rng = np.random.default_rng(0)
    wild_five = ARCFACE_112 * 1.7 + [30.0, 25.0]
    for i in range(60):
        size, five = ((112, 112), ARCFACE_112) if i % 2 else ((250, 250), wild_five)
        mask = np.zeros(size, np.uint8)
        for _ in range(rng.integers(0, 3)):
            y0, x0 = rng.integers(0, size[0] - 10, 2)
            mask[y0:y0 + rng.integers(3, 90), x0:x0 + rng.integers(3, 90)] = 255
        frame_mask = mask_in_face_frame(mask, five)
        assert np.array_equal(FaceFrame(five, size).mask(mask), frame_mask >= 128)
        k = int(rng.integers(2, 7))
        lab = occlusion_labels(mask, five, k)
        assert lab["pattern"] == match_pattern(frame_mask, k)
        assert lab["cells"] == cell_fractions(frame_mask, k).ravel().tolist()
        assert lab["area_frac"] == pytest.approx((frame_mask == 255).mean())


def test_occluders_dir_is_loaded_in_workers(faces, tmp_path):
    """A user RGBA occluder folder works with --jobs N (workers load it themselves)."""
    import yaml

    folder = tmp_path / "assets"
    folder.mkdir()
    rgba = np.zeros((30, 50, 4), np.uint8)
    rgba[4:-4, 4:-4] = (200, 40, 40, 255)
    cv2.imwrite(str(folder / "patch.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    name = f"user_patch_{tmp_path.name}"[-60:]
    anchor = {"kind": "eyes", "points": {"left_eye": [8, 15], "right_eye": [42, 15]}}
    (folder / "occluders.yaml").write_text(yaml.safe_dump(
        {"occluders": [{"file": "patch.png", "name": name, "category": "rgba", "anchor": anchor}]}))
    out = tmp_path / "o"
    s = run_synth(SynthConfig(src=str(faces), out=str(out), occluders=(name,), occluders_dir=str(folder),
                              limit=4, jobs=2), progress=False)
    assert s.status_counts == {"ok": 4} and s.occluder_counts == {name: 4}
    meta = json.loads((out / "synth.json").read_text())
    assert meta["config"]["occluders_dir"] == str(folder) and name in meta["occluders"]


def test_a_failed_output_write_stops_the_run_and_a_rerun_resumes(faces, tmp_path, monkeypatch):
    """Files land by rename from a part file beside them. A failing OUTPUT write is not the input's
    fault: the run stops with one clear error (no error row, no part file left, no PID-specific path),
    and rerunning after the fix gives the bytes of a clean run (0.2 logged it as the image's row)."""
    clean = tmp_path / "clean"
    run_synth(_cfg(faces, clean, limit=4), progress=False)
    real_replace = pipeline.os.replace
    failed = []

    def flaky_replace(src, dst):
        if "/masks/" in str(dst) and not failed:
            failed.append((src, dst))
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(pipeline.os, "replace", flaky_replace)
    out = tmp_path / "o"
    with pytest.raises(OutputWriteError, match=r"masks/main/id0/face_0000.jpg.png: the disk is full.*rerun the same"):
        run_synth(_cfg(faces, out, limit=4), progress=False)
    part, dest = failed[0]
    assert Path(part).parent == Path(dest).parent and not Path(part).exists() and not Path(dest).exists()
    log = (out / ".synth" / "rows.jsonl")
    assert not log.exists() or b"error" not in log.read_bytes()
    monkeypatch.setattr(pipeline.os, "replace", real_replace)
    s = run_synth(_cfg(faces, out, limit=4), progress=False)
    assert s.status_counts == {"ok": 4} and tree_bytes(out) == tree_bytes(clean)
    assert not [p for p in out.rglob("*.part")] and not (out / ".synth" / "tmp").exists()


def test_decode_rgb_equals_a_bgr_decode_reversed():
    """decode_rgb (straight to RGB where OpenCV can) gives the pixels of a BGR decode with channels reversed."""
    a = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for ext, img in [(".jpg", a), (".jpg", a[..., 0]), (".png", a), (".png", a[..., 1]), (".bmp", a),
                     (".png", np.dstack([a, a[..., :1]])), (".png", a.astype(np.uint16) * 257), (".webp", a)]:
        data = cv2.imencode(ext, img)[1].tobytes()
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(decode_rgb(data), bgr[..., ::-1])


def test_cells_json_is_compact_json():
    rng = np.random.default_rng(0)
    for k in range(2, 8):
        cells = (rng.integers(0, 530, k * k) / rng.choice([484, 506, 529], k * k)).tolist() + [0.0, 1.0]
        assert pipeline.cells_json(cells) == json.dumps(cells, separators=(",", ":"))


def test_bank_runs_are_reproducible_and_recorded(faces, tmp_path):
    """--bank: looks come from a per-occluder bank seeded by the run's seed; jobs and the process's
    warm sprite caches never change a byte."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    run_synth(_cfg(faces, a, scales="1,2", per_scale=True, bank=2, jobs=1), progress=False)
    run_synth(_cfg(faces, b, scales="1,2", per_scale=True, bank=2, jobs=2), progress=False)
    assert tree_bytes(a) == tree_bytes(b)
    shutil.rmtree(a)  # the same run again in this process: every sprite now comes from the cache
    run_synth(_cfg(faces, a, scales="1,2", per_scale=True, bank=2, jobs=1), progress=False)
    assert tree_bytes(a) == tree_bytes(b)
    meta = json.loads((a / "synth.json").read_text())
    assert meta["config"]["bank"] == 2
    assert all(o["config"]["bank"] == 2 for o in meta["occluders"].values())
    df = pd.read_parquet(a / "manifest.parquet")
    ok = df[df.status == "ok"]
    params = [json.loads(p) for p in ok.params]
    assert {p["bank_index"] for p in params} <= {0, 1}
    looks = {(p["name"], json.dumps(p["vars"], sort_keys=True)) for p in params}
    assert len(looks) <= 2 * ok.occluder.nunique()
    run_synth(_cfg(faces, c, scales="1,2", per_scale=True, bank=0, jobs=1), progress=False)
    assert json.loads((c / "synth.json").read_text())["config"]["bank"] == 0
    with pytest.raises(ConfigError, match="bank"):
        run_synth(_cfg(faces, tmp_path / "d", bank=-1), progress=False)


def test_rerun_after_out_was_deleted_reuses_workers_safely(faces, tmp_path):
    """joblib keeps worker processes (and their record of made folders) between runs."""
    out = tmp_path / "o"
    first = run_synth(_cfg(faces, out, jobs=2), progress=False)
    before = tree_bytes(out)
    shutil.rmtree(out)
    again = run_synth(_cfg(faces, out, jobs=2), progress=False)
    assert again.status_counts == first.status_counts and tree_bytes(out) == before


def test_summary_rate_says_n_a_when_nothing_was_processed():
    # qa-h: a fully resumed run printed "processed 0 images in 1.1 s (0.0 images/s)"
    from occbench.synth.pipeline import SynthSummary

    done = SynthSummary(out="o", n_images=5, resumed=5, processed=0, elapsed_s=1.1).format()
    assert "0.0 images/s" not in done and "processed 0 images in 1.1 s (rate n/a: nothing left to process)" in done
    assert "(2.0 images/s)" in SynthSummary(out="o", n_images=4, processed=4, elapsed_s=2.0).format()


def test_same_options_but_changed_definitions_say_what_changed_and_what_to_do(faces, tmp_path):
    # qa-h: after the region occluders became opt-in, rerunning an older default-occluder run said
    # "(occluder or landmarker definitions changed). Rerun with the same options to resume it" - which it was
    out = tmp_path / "o"
    run_synth(_cfg(faces, out, limit=2), progress=False)
    lock_path = out / ".synth" / "lock.json"
    lock = json.loads(lock_path.read_text())
    lock["occluders"] = {"old_thing": {}, **lock["occluders"]} if isinstance(lock["occluders"], dict) \
        else ["old_thing", *lock["occluders"]]
    lock["fingerprint"] = "0" * 16  # as an older occbench would have written it
    lock_path.write_text(json.dumps(lock))
    with pytest.raises(ConfigError) as e:
        run_synth(_cfg(faces, out, limit=2), progress=False)
    msg = str(e.value)
    assert "occluders no longer drawn: old_thing" in msg and "pass --overwrite to redo it" in msg
    assert "Rerun with the same options" not in msg
