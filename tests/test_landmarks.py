"""Landmark finders: template, MediaPipe on real LFW faces, file tables, auto, joblib workers."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pandas as pd
import pytest

from occbench.errors import ConfigError, DataNotFoundError
from occbench.io.images import read_rgb
from occbench.face import landmarks as L
from occbench.face.geometry import ARCFACE_112, ARCFACE_112x96, FaceLandmarks, align


# ------------------------------------------------------------------------------ template


def test_template_exact_sizes():
    lm = L.create_landmarker("template")
    r = lm.detect(np.zeros((112, 112, 3), np.uint8))
    assert r.ok and r.status == "ok" and r.reason == ""
    np.testing.assert_allclose(r.landmarks.five, ARCFACE_112)
    assert r.landmarks.source == "template"
    r = lm.detect(np.zeros((112, 96, 3), np.uint8))
    np.testing.assert_allclose(r.landmarks.five, ARCFACE_112x96)


def test_template_scaled_sizes():
    lm = L.create_landmarker("template")
    np.testing.assert_allclose(lm.detect(np.zeros((224, 224, 3), np.uint8)).landmarks.five, 2 * ARCFACE_112)
    np.testing.assert_allclose(lm.detect(np.zeros((224, 192, 3), np.uint8)).landmarks.five, 2 * ARCFACE_112x96)


@pytest.mark.parametrize("hw", [(112, 100), (120, 96), (96, 112)])
def test_template_wrong_size_is_noface(hw):
    r = L.create_landmarker("template").detect(np.zeros(hw + (3,), np.uint8))
    assert not r.ok and r.status == "noface" and r.landmarks is None
    assert r.reason == f"not a pre-aligned crop (size {hw[0]}x{hw[1]})"


def test_template_result_is_not_shared_state():
    lm = L.create_landmarker("template")
    lm.detect(np.zeros((112, 112, 3), np.uint8)).landmarks.five[:] = 0
    np.testing.assert_allclose(lm.detect(np.zeros((112, 112, 3), np.uint8)).landmarks.five, ARCFACE_112)


def test_registry_and_options():
    assert {"template", "mediapipe", "file", "auto"} <= set(L.LANDMARKERS.names())
    with pytest.raises(ConfigError, match="Did you mean"):
        L.create_landmarker("mediapip")
    with pytest.raises(ConfigError, match="invalid options"):
        L.create_landmarker("template", foo=1)
    with pytest.raises(ConfigError):
        L.create_landmarker("mediapipe", max_num_faces=0)


def test_input_validation():
    lm = L.create_landmarker("template")
    assert lm.detect(np.zeros((112, 112), np.uint8)).ok  # grayscale accepted
    assert lm.detect(np.zeros((112, 112, 4), np.uint8)).ok  # alpha dropped
    assert lm.detect(np.zeros((0, 0, 3), np.uint8)).status == "noface"
    with pytest.raises(ConfigError):
        lm.detect(np.zeros((112, 112, 3), np.float32))


# ----------------------------------------------------------------------------- mediapipe


@pytest.fixture(scope="module")
def lfw_sample(lfw_images):
    files = sorted(lfw_images.glob("*/*.jpg"))
    picked = files[:: max(1, len(files) // 6)][:6]
    return [(str(p.relative_to(lfw_images)), read_rgb(p)) for p in picked]


@pytest.fixture(scope="module")
def mp_landmarker():
    lm = L.create_landmarker("mediapipe")
    yield lm
    lm.close()


def test_mesh_indices_match_mediapipe():
    from mediapipe.python.solutions import face_mesh_connections as c

    assert set(L.MP_RIGHT_EYE) == {i for e in c.FACEMESH_RIGHT_EYE for i in e}
    assert set(L.MP_LEFT_EYE) == {i for e in c.FACEMESH_LEFT_EYE for i in e}
    lips = {i for e in c.FACEMESH_LIPS for i in e}
    assert {L.MP_MOUTH_LEFT, L.MP_MOUTH_RIGHT} <= lips


def _check_plausible_face(five, h, w):
    assert ((five >= 0) & (five < [w, h])).all()
    le, re_, nose, ml, mr = five
    assert le[0] < re_[0] and ml[0] < mr[0]  # image-left first
    assert max(le[1], re_[1]) < nose[1] < min(ml[1], mr[1])  # eyes above nose above mouth
    return float(np.linalg.norm(re_ - le))


def test_mediapipe_on_lfw(lfw_sample, mp_landmarker):
    for key, img in lfw_sample:
        r = mp_landmarker.detect(img, key=key)
        assert r.ok, (key, r.reason)
        lm = r.landmarks
        assert lm.source == "mediapipe"
        assert lm.dense.shape == (468, 2)
        np.testing.assert_allclose(lm.five, L.mesh_to_five(lm.dense))
        iod = _check_plausible_face(lm.five, *img.shape[:2])
        assert 30 <= iod <= 70, (key, iod)  # LFW 250x250 images


def test_mediapipe_is_deterministic(lfw_sample, mp_landmarker):
    _, img = lfw_sample[0]
    a = mp_landmarker.detect(img).landmarks.five
    b = mp_landmarker.detect(img.copy()).landmarks.five
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["blank", "noise", "tiny"])
def test_mediapipe_noface(kind, mp_landmarker):
    rng = np.random.default_rng(0)
    img = {"blank": np.full((250, 250, 3), 127, np.uint8),
           "noise": rng.integers(0, 256, (250, 250, 3), dtype=np.uint8),
           "tiny": np.zeros((2, 2, 3), np.uint8)}[kind]
    r = mp_landmarker.detect(img)
    assert r.status == "noface" and r.landmarks is None and "no face" in r.reason


@pytest.mark.parametrize("template", ["arcface112", "arcface112x96"])
def test_mediapipe_finds_aligned_crop(lfw_sample, mp_landmarker, template):
    key, img = lfw_sample[1]
    five = mp_landmarker.detect(img).landmarks.five
    crop, m = align(img, five, template)
    r = mp_landmarker.detect(crop)
    assert r.ok, r.reason
    _check_plausible_face(r.landmarks.five, *crop.shape[:2])
    ref = ARCFACE_112 if template == "arcface112" else ARCFACE_112x96
    assert np.abs(r.landmarks.five - ref).max() < 8  # lands near the template it was aligned to


def test_choose_face_prefers_the_central_subject():
    def face(cx, cy, s):
        return np.array([[cx - s / 2, cy - s / 2], [cx + s / 2, cy + s / 2]])

    big_off_centre, small_central = face(40, 40, 90), face(125, 125, 60)
    assert L.choose_face([big_off_centre, small_central], (250, 250)) == 1
    # both centred: the larger one
    assert L.choose_face([face(125, 125, 40), face(125, 125, 80)], (250, 250)) == 1
    assert L.choose_face([face(125, 125, 80)], (250, 250)) == 0


def test_mediapipe_pickles_after_use_and_reopens(lfw_sample):
    key, img = lfw_sample[2]
    lm = L.create_landmarker("mediapipe", max_num_faces=2)
    a = lm.detect(img).landmarks.five
    clone = pickle.loads(pickle.dumps(lm))
    assert clone._mesh is None and clone.max_num_faces == 2
    lm.close()
    np.testing.assert_allclose(lm.detect(img).landmarks.five, a)  # rebuilt lazily after close()
    np.testing.assert_allclose(clone.detect(img).landmarks.five, a)
    lm.close()
    clone.close()
    json.dumps(lm.describe())


def _detect_in_worker(lm, img):
    r = lm.detect(img)
    return os.getpid(), r.status, None if r.landmarks is None else r.landmarks.five


@pytest.mark.slow
def test_mediapipe_in_loky_workers(lfw_sample, mp_landmarker):
    from joblib import Parallel, delayed

    imgs = [img for _, img in lfw_sample[:4]]
    want = [mp_landmarker.detect(img).landmarks.five for img in imgs]  # parent graph exists already
    out = Parallel(n_jobs=2, backend="loky")(delayed(_detect_in_worker)(mp_landmarker, im) for im in imgs)
    assert all(pid != os.getpid() for pid, _, _ in out)
    for (_, status, five), w in zip(out, want):
        assert status == "ok"
        np.testing.assert_allclose(five, w, atol=1e-3)


def test_native_log_filter(capfd):
    with L._filtered_native_stderr():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"E0000 something.cc:1] a real error\n")
    err = capfd.readouterr().err
    assert "a real error" in err
    assert "XNNPACK" not in err


# ---------------------------------------------------------------------------------- file


def _results():
    pts = ARCFACE_112 * 2 + 3.25
    return {"0001": L.LandmarkResult.found(FaceLandmarks(pts, source="mediapipe")),
            "a/b.jpg": L.LandmarkResult.found(FaceLandmarks(pts + 1, source="template")),
            "bad.jpg": L.LandmarkResult.noface("no face found by mediapipe face mesh")}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_round_trip_pipeline_table(tmp_path, suffix):
    res = _results()
    path = tmp_path / f"landmarks{suffix}"
    L.write_landmarks_table([L.landmarks_to_row(k, r) for k, r in res.items()], path)
    table = L.read_landmarks_table(path)
    assert set(table) == {"0001", "a/b.jpg"}  # key with leading zeros stays a string
    for k in table:
        np.testing.assert_allclose(table[k].five, res[k].landmarks.five)
        assert table[k].source == res[k].landmarks.source
    lm = L.create_landmarker("file", path=path)
    img = np.zeros((250, 250, 3), np.uint8)
    r = lm.detect(img, key="a/b.jpg")
    assert r.ok
    np.testing.assert_allclose(r.landmarks.five, res["a/b.jpg"].landmarks.five)
    failed = lm.detect(img, key="bad.jpg")
    assert failed.status == "noface" and "no face found by mediapipe" in failed.reason
    missing = lm.detect(img, key="nope.jpg")
    assert missing.status == "noface" and missing.reason == f"no landmarks for key in {path}"
    d = lm.describe()
    json.dumps(d)
    assert d["n_landmarks"] == 2 and d["n_failed"] == 1 and len(d["sha256"]) == 64


def test_file_user_csv_and_json(tmp_path):
    pts = np.arange(10, dtype=float).reshape(5, 2) + 50
    csv = tmp_path / "user.csv"
    csv.write_text("key,x0,y0,x1,y1,x2,y2,x3,y3,x4,y4,comment\n"
                   "img1.png," + ",".join(map(str, pts.reshape(-1))) + ",hello\n")
    js = tmp_path / "user.json"
    js.write_text(json.dumps({"img1.png": pts.tolist(), "img2.png": None}))
    for path in (csv, js):
        lm = L.create_landmarker("file", path=str(path))
        r = lm.detect(np.zeros((200, 200, 3), np.uint8), key="img1.png")
        assert r.ok and r.landmarks.source == "file"
        np.testing.assert_allclose(r.landmarks.five, pts)
        assert lm.detect(np.zeros((9, 9, 3), np.uint8), key="zzz").reason == f"no landmarks for key in {path}"
    assert L.create_landmarker("file", path=js).detect(np.zeros((9, 9, 3), np.uint8), key="img2.png").status == "noface"


def test_file_errors(tmp_path):
    with pytest.raises(DataNotFoundError):
        L.create_landmarker("file", path=tmp_path / "absent.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("key,x0,y0\na,1,2\n")
    with pytest.raises(ConfigError, match="lacks columns"):
        L.create_landmarker("file", path=bad)
    dup = tmp_path / "dup.csv"
    pd.DataFrame([{"key": "a", **{c: 1.0 for c in L.COORD_COLUMNS}}] * 2).to_csv(dup, index=False)
    with pytest.raises(ConfigError, match="twice"):
        L.create_landmarker("file", path=dup)
    js = tmp_path / "bad.json"
    js.write_text(json.dumps({"a": [[1, 2]]}))
    with pytest.raises(ConfigError, match="5"):
        L.create_landmarker("file", path=js)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"a": ARCFACE_112.tolist()}))
    with pytest.raises(ConfigError, match="key"):
        L.create_landmarker("file", path=good).detect(np.zeros((9, 9, 3), np.uint8))


# ---------------------------------------------------------------------------------- auto


def test_auto_helper_choice():
    assert isinstance(L.auto_landmarker(112, 112), L.TemplateLandmarker)
    assert isinstance(L.auto_landmarker(112, 96), L.TemplateLandmarker)
    assert isinstance(L.auto_landmarker(250, 250), L.MediapipeLandmarker)


def test_auto_landmarker(lfw_sample):
    lm = L.create_landmarker("auto")
    assert lm.detect(np.zeros((112, 96, 3), np.uint8)).landmarks.source == "template"
    assert lm._mediapipe._mesh is None  # not built until a wild image arrives
    _, img = lfw_sample[3]
    assert lm.detect(img).landmarks.source == "mediapipe"
    json.dumps(lm.describe())
    lm.close()
