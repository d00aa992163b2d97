"""Landmark finders: template, MediaPipe on real LFW faces, file tables, auto, joblib workers."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

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


# ------------------------------------------------------------- fallback chain (issue 9 §2)


def test_detection_to_five_geometry():
    kp = np.array([[40, 50], [80, 50], [60, 70], [60, 90], [20, 60], [100, 60]], float)
    five = L.detection_to_five(kp)
    np.testing.assert_allclose(five[:3], kp[:3])
    np.testing.assert_allclose(five[3:].mean(0), kp[3])  # mouth centre between the corners
    np.testing.assert_allclose(five[4, 0] - five[3, 0], L.DETECTION_MOUTH_RATIO * 40)
    assert L.DETECTION_MOUTH_RATIO == pytest.approx((70.7299 - 41.5493) / (73.5318 - 38.2946))
    # a rotated face: corners stay parallel to the eye line
    c, s = np.cos(0.3), np.sin(0.3)
    rot = L.detection_to_five(kp @ np.array([[c, s], [-s, c]]))
    np.testing.assert_allclose(rot, five @ np.array([[c, s], [-s, c]]), atol=1e-9)


def test_detection_agrees_with_mesh_on_lfw(lfw_sample, mp_landmarker):
    from occbench.face.geometry import apply_affine, face_frame_transform

    for key, img in lfw_sample:
        mesh = mp_landmarker.detect(img).landmarks
        found = [(pts, sc) for name, pts, sc in mp_landmarker._detection_candidates(img) if name == "full-padded"]
        assert found, key  # the first pass finds every LFW face
        pts, _ = found[L.choose_face([f[0] for f in found], img.shape[:2])]
        m = face_frame_transform(mesh.five)
        d = np.linalg.norm(apply_affine(m, L.detection_to_five(pts[:6])) - apply_affine(m, mesh.five), axis=1)
        assert (d[:3] < 6).all() and (d[3:] < 12).all(), (key, d)  # 112x112 face-frame pixels


def test_masked_face_found_by_mesh_on_a_crop(rwmfd_root):
    img = read_rgb(rwmfd_root / "0001" / "0005.jpg")  # a black cloth mask: the mesh finds no face
    with L.create_landmarker("mediapipe", detection_fallback=False) as mesh_only:
        r0 = mesh_only.detect(img)
    assert r0.status == "noface" and r0.reason == "no face found by mediapipe face mesh"
    with L.create_landmarker("mediapipe") as lm:
        r = lm.detect(img)
    lm_ = r.landmarks
    assert r.ok and lm_.method == "mesh-crop" and lm_.source.startswith("mediapipe-mesh-crop/")
    assert lm_.dense.shape == (468, 2)  # the crop's mesh, in image pixels (part maps work)
    np.testing.assert_allclose(lm_.five, L.mesh_to_five(lm_.dense))
    assert L._eyes_agree(lm_.five, lm_.extra["detection_keypoints"])  # the two models agree
    assert 0.5 <= lm_.score <= 1
    _check_plausible_face(lm_.five, *img.shape[:2])
    row = L.landmarks_to_row("k", r)
    assert row["method"] == "mesh-crop" and row["source"] == lm_.source


def test_masked_face_found_by_detection_fallback(rwmfd_root):
    img = read_rgb(rwmfd_root / "0001" / "0082.jpg")  # a chequered mask: the mesh fails, even on crops
    with L.create_landmarker("mediapipe") as lm:
        r = lm.detect(img)
    assert r.ok and r.landmarks.method == "detection"
    assert r.landmarks.source.startswith("mediapipe-detection/") and 0.5 <= r.landmarks.score <= 1
    _check_plausible_face(r.landmarks.five, *img.shape[:2])
    row = L.landmarks_to_row("k", r)
    assert row["method"] == "detection" and row["source"] == r.landmarks.source


# ---- the fallback's choices, on stand-in detections and crop meshes (no model runs)

def _candidate(cx, cy, ed):
    """6 BlazeFace keypoints + 2 box corners of a frontal face with eyes ``ed`` px apart around (cx, cy)."""
    kp = [[cx - ed / 2, cy], [cx + ed / 2, cy], [cx, cy + 0.6 * ed], [cx, cy + 1.1 * ed], [cx - ed, cy], [cx + ed, cy]]
    box = [[cx - 1.1 * ed, cy - 1.0 * ed], [cx + 1.1 * ed, cy + 1.6 * ed]]
    return np.array(kp + box, np.float64)


def _dense_with_eyes(e0, e1):
    d = np.zeros((468, 2))
    d[list(L.MP_RIGHT_EYE)], d[list(L.MP_LEFT_EYE)] = e0, e1
    d[L.MP_NOSE_TIP] = (np.add(e0, e1) / 2) + [0, 10]
    return d


def _stub_landmarker(monkeypatch, cands, crop_faces, pose=None, **kw):
    """A mediapipe landmarker whose mesh finds nothing on the image, whose detection passes return
    ``cands`` [(pass, points, score)], whose crop mesh finds the face of ``crop_faces`` (list of
    (eye0, eye1)) whose eye centre lies inside the crop's box, if any, and whose pose step returns
    ``pose`` (what ``_pose_step`` answers; its calls are logged in ``calls`` as "pose")."""
    from types import SimpleNamespace

    lm = L.create_landmarker("mediapipe", **kw)
    calls = []
    monkeypatch.setattr(lm, "_pose_step", lambda im, back_scale=1.0: (calls.append("pose"), pose)[1])
    monkeypatch.setattr(lm, "_process", lambda im: SimpleNamespace(multi_face_landmarks=None))
    monkeypatch.setattr(lm, "_detection_candidates", lambda im: list(cands))

    def crop_mesh(image, box, scale):
        calls.append(scale)
        for e0, e1 in crop_faces:
            c = (np.asarray(e0) + e1) / 2
            if (box[0] <= c).all() and (c <= box[1]).all():
                return _dense_with_eyes(e0, e1)
        return None

    monkeypatch.setattr(lm, "_crop_mesh", crop_mesh)
    return lm, calls


def test_fallback_prefers_a_face_the_crop_mesh_confirms(monkeypatch):
    img = np.zeros((200, 200, 3), np.uint8)
    junk, face = _candidate(100, 100, 30), _candidate(40, 50, 20)  # the junk is central: choose_face's pick
    cands = [("full-padded", junk, 0.9), ("tiles", face, 0.7)]
    lm, _ = _stub_landmarker(monkeypatch, cands, [((31, 51), (50, 49))])  # eyes within 0.35 x 20 px
    r = lm.detect(img)
    assert r.landmarks.method == "mesh-crop" and r.landmarks.source == "mediapipe-mesh-crop/tiles"
    np.testing.assert_allclose(r.landmarks.five[:2], [[31, 51], [50, 49]])
    np.testing.assert_allclose(r.landmarks.extra["detection_keypoints"], face[:6])
    # the crop mesh finds a face there, but not where the detection put the eyes: not confirmed
    lm, _ = _stub_landmarker(monkeypatch, cands, [((28, 58), (46, 58))])  # 8 px off > 0.35 x 20
    r = lm.detect(img)
    assert r.landmarks.method == "detection" and r.landmarks.source == "mediapipe-detection/full-padded"
    np.testing.assert_allclose(r.landmarks.five, L.detection_to_five(junk[:6]))


def test_fallback_confirmed_faces_of_the_earliest_pass_win(monkeypatch):
    img = np.zeros((200, 200, 3), np.uint8)
    side, centre = _candidate(40, 50, 20), _candidate(100, 100, 30)
    cands = [("tiles", centre, 0.95), ("short", side, 0.6)]
    faces = [((30, 50), (50, 50)), ((85, 100), (115, 100))]
    lm, calls = _stub_landmarker(monkeypatch, cands, faces)
    r = lm.detect(img)
    assert r.landmarks.source == "mediapipe-mesh-crop/short"  # not the central tiles face
    np.testing.assert_allclose(r.landmarks.five[:2], faces[0])
    assert calls == [L.MESH_CROP_SCALES[0]] * 2  # one crop per face: both confirmed at the first scale


def test_fallback_drops_faces_too_small_to_align(monkeypatch):
    img = np.zeros((200, 200, 3), np.uint8)
    tiny = _candidate(100, 100, L.MIN_EYE_DISTANCE - 1)
    lm, calls = _stub_landmarker(monkeypatch, [("tiles", tiny, 0.9)], [])
    r = lm.detect(img)
    assert r.status == "noface" and f"eyes >= {L.MIN_EYE_DISTANCE:g} px apart" in r.reason
    assert calls == ["pose"]  # no crop mesh for a face too small; the pose step was asked and found none
    # measured in original pixels: the same face in an image downscaled 2x (max_side) is big enough
    big = np.zeros((400, 400, 3), np.uint8)
    lm, _ = _stub_landmarker(monkeypatch, [("tiles", tiny, 0.9)], [], max_side=200)
    r = lm.detect(big)
    assert r.landmarks.method == "detection"
    np.testing.assert_allclose(r.landmarks.five, L.detection_to_five(tiny[:6] * 2))


def test_fallback_groups_overlapping_detections_into_one_face(monkeypatch):
    img = np.zeros((200, 200, 3), np.uint8)
    a, b = _candidate(100, 100, 30), _candidate(102, 101, 30)  # one face seen by two passes
    lm, calls = _stub_landmarker(monkeypatch, [("full-padded", a, 0.8), ("short", b, 0.7)], [])
    r = lm.detect(img)
    assert r.landmarks.source == "mediapipe-detection/full-padded"
    assert len(calls) == 2 * len(L.MESH_CROP_SCALES)  # one face, its 2 detections x the crop scales
    assert L._box_iou(a[6:], b[6:]) > L.CLUSTER_IOU and L._box_iou(a[6:], a[6:] + 500) == 0


def _pose_face_at(cx, cy, ed):
    """A pose step's answer: an upright face with eyes ``ed`` px apart around (cx, cy), visibility 0.9."""
    return "pose", np.array([[cx - ed / 2, cy], [cx + ed / 2, cy], [cx, cy + 0.6 * ed], [cx - 0.4 * ed, cy + 1.1 * ed],
                             [cx + 0.4 * ed, cy + 1.1 * ed]]), 0.9, None, None


def test_lone_detection_gives_way_to_a_pose_face_elsewhere(monkeypatch):
    img = np.zeros((200, 200, 3), np.uint8)
    lone = _candidate(100, 100, 30)  # seen by one pass only, no crop mesh confirms it
    pose = _pose_face_at(40, 60, 20)
    lm, calls = _stub_landmarker(monkeypatch, [("short", lone, 0.6)], [], pose=pose)
    r = lm.detect(img)
    assert calls.count("pose") == 1
    assert r.landmarks.method == "pose" and r.landmarks.source == "mediapipe-pose" and r.landmarks.score == 0.9
    np.testing.assert_allclose(r.landmarks.five, pose[1])
    np.testing.assert_allclose(r.landmarks.extra["replaced_detection_keypoints"], lone[:6])  # what it replaced
    assert L.landmarks_to_row("k", r)["method"] == "pose" and L.method_of_source("mediapipe-pose") == "pose"
    # pose sees the same face (eyes within POSE_AGREE_TOL eye distances): the detection's points stay
    lm, _ = _stub_landmarker(monkeypatch, [("short", lone, 0.6)], [], pose=_pose_face_at(104, 103, 28))
    r = lm.detect(img)
    assert r.landmarks.method == "detection"
    np.testing.assert_allclose(r.landmarks.five, L.detection_to_five(lone[:6]))
    # pose finds nothing: the lone detection stays
    lm, _ = _stub_landmarker(monkeypatch, [("short", lone, 0.6)], [], pose=None)
    assert lm.detect(img).landmarks.method == "detection"


def test_detection_seen_twice_never_asks_pose(monkeypatch):
    """A detection repeated by a second kind of pass (support >= 2) is kept without the pose step: this is
    what keeps LFW's one detection-fallback face (Peter_Mugyeni_0001: full-padded, short, short-padded) as
    it was. The padded pass of the same model is no second opinion."""
    img = np.zeros((200, 200, 3), np.uint8)
    a, b = _candidate(100, 100, 30), _candidate(102, 101, 30)
    pose = _pose_face_at(40, 60, 20)
    for second in ("tiles", "short", "short-padded"):
        lm, calls = _stub_landmarker(monkeypatch, [("full-padded", a, 0.8), (second, b, 0.7)], [], pose=pose)
        r = lm.detect(img)
        assert r.landmarks.source == "mediapipe-detection/full-padded" and "pose" not in calls, second
    lm, calls = _stub_landmarker(monkeypatch, [("full-padded", a, 0.8), ("full", b, 0.7)], [], pose=pose)
    assert lm.detect(img).landmarks.method == "pose" and calls.count("pose") == 1


def test_no_detection_falls_back_to_pose(monkeypatch):
    img = np.zeros((200, 200, 3), np.uint8)
    lm, calls = _stub_landmarker(monkeypatch, [], [], pose=_pose_face_at(60, 70, 12))
    r = lm.detect(img)
    assert r.landmarks.method == "pose" and r.landmarks.extra == {}
    lm, _ = _stub_landmarker(monkeypatch, [], [], pose=None)
    r = lm.detect(img)
    assert r.status == "noface" and r.reason.endswith("nor by pose")


def test_plausible_face():
    five = _pose_face_at(50, 50, 20)[1]
    assert L.plausible_face(five) and L.plausible_face(ARCFACE_112)
    c, s = np.cos(np.radians(40)), np.sin(np.radians(40))
    assert L.plausible_face((five - 50) @ np.array([[c, s], [-s, c]]) + 50)  # a tilted head
    upside_down = 100 - five  # rotated 180 degrees: BlazePose's "eyes" below its "mouth" (e.g. on a shirt)
    assert not L.plausible_face(upside_down)
    c, s = np.cos(np.radians(70)), np.sin(np.radians(70))
    assert not L.plausible_face((five - 50) @ np.array([[c, s], [-s, c]]) + 50)  # rolled past POSE_MAX_ROLL
    for bad in ([2, 0], [2, 1], [3, 1]):  # mouth above the eyes, nose below the mouth, mouth far aside
        f = five.copy()
        if bad == [2, 0]:
            f[3:, 1] = 40
        elif bad == [2, 1]:
            f[2, 1] = 90
        else:
            f[3:, 0] += 30
        assert not L.plausible_face(f), bad
    assert not L.plausible_face(np.zeros((5, 2)))
    pts = np.arange(22, dtype=float).reshape(11, 2)
    np.testing.assert_array_equal(L.pose_to_five(pts), pts[[5, 2, 0, 10, 9]])  # subject's right eye first


# RWMFD images whose 0.3.0 alignment was judged wrong or missing, each a failure mode the pose step mends:
# (file, what went wrong, the source now, the eyes judged right by eye in tests/rwmfd_judged_alignments.csv)
POSE_STEP_CASES = [
    ("0001/0016.jpg", "lone short-range detection on the cap and gun; eyes 8 px apart on a 60 px face",
     "mediapipe-pose", [[116.5, 80.6], [147.6, 79.5]]),
    ("0002/0081.jpg", "lone short-range detection spanning three people (a 25 px eye line on the wall)",
     "mediapipe-detection/pose", [[208.9, 65.8], [216.5, 65.0]]),
    ("0002/0030.jpg", "face cut by the image edge; the lone full-range detection's eyes were off the eyes",
     "mediapipe-mesh-crop/pose", [[234.6, 31.8], [247.3, 25.9]]),
    ("0002/0074.jpg", "detection by the short-range model alone (plain and padded) on the mask and neck",
     "mediapipe-pose", [[108.5, 45.9], [118.3, 44.5]]),
    ("0002/0009.jpg", "no face: small masked faces in a night street scene", "mediapipe-pose",
     [[208.9, 68.6], [213.4, 69.4]]),
]


@pytest.mark.parametrize("rel,why,source,eyes", POSE_STEP_CASES, ids=[c[0] for c in POSE_STEP_CASES])
def test_pose_step_mends_a_real_failure(rwmfd_root, mp_landmarker, rel, why, source, eyes):
    r = mp_landmarker.detect(read_rgb(rwmfd_root / rel))
    assert r.ok and r.landmarks.source == source, (why, r.landmarks.source if r.ok else r.reason)
    eyes = np.array(eyes)
    tol = 0.3 * np.linalg.norm(eyes[1] - eyes[0])  # the example's rule for "the judged alignment"
    assert np.linalg.norm(r.landmarks.five[:2] - eyes, axis=1).max() < tol, why
    assert L.plausible_face(r.landmarks.five)
    if r.landmarks.method == "mesh-crop":
        assert r.landmarks.dense.shape == (468, 2)


def test_pose_face_on_a_shirt_is_refused(rwmfd_root, mp_landmarker):
    """0002/0063: BlazePose's person there has its "eyes" below its "mouth" on a red shirt (an upside-down
    face); plausible_face refuses it, so the pose step does not replace the lone detection with it."""
    img = read_rgb(rwmfd_root / "0002" / "0063.jpg")
    pts = mp_landmarker._pose_points(img)
    assert pts is not None and not L.plausible_face(L.pose_to_five(pts[:, :2]))
    assert mp_landmarker.detect(img).landmarks.method != "pose"


def test_huge_image_is_downscaled_and_points_mapped_back(lfw_sample, mp_landmarker):
    import cv2

    _, img = lfw_sample[2]
    big = cv2.resize(img, (img.shape[1] * 6, img.shape[0] * 6), interpolation=cv2.INTER_CUBIC)  # 1500 px
    calls = []
    lm = L.create_landmarker("mediapipe", max_side=512)
    orig = lm._process
    lm._process = lambda im: (calls.append(im.shape), orig(im))[1]
    r = lm.detect(big)
    lm.close()
    assert calls == [(512, 512, 3)]  # MediaPipe never saw the 1500 px image
    ref = mp_landmarker.detect(img).landmarks.five * 6
    assert np.abs(r.landmarks.five - ref).max() < 6 * 3  # within 3 original pixels
    assert r.landmarks.dense.max() > 512  # dense points mapped back too
    with pytest.raises(ConfigError, match="max_side"):
        L.create_landmarker("mediapipe", max_side=10)


def test_aligned_landmarker_falls_back_to_the_template(lfw_sample):
    from occbench.face.geometry import ARCFACE_112, get_template

    with L.create_landmarker("aligned", template="arcface-112") as lm:
        r = lm.detect(np.full((160, 160, 3), 127, np.uint8))
        assert r.ok and r.landmarks.method == "template" and r.landmarks.source == "template"
        np.testing.assert_allclose(r.landmarks.five, ARCFACE_112 * 160 / 112)
        bad = lm.detect(np.full((160, 120, 3), 127, np.uint8))
        assert bad.status == "noface" and "aspect ratio of the declared template arcface-112 (112x112)" in bad.reason
        key, img = lfw_sample[0]
        assert lm.detect(img).landmarks.method == "mesh"  # MediaPipe first
        assert pickle.loads(pickle.dumps(lm)).template.name == "arcface112"
        assert lm.describe()["template"] == "arcface-112"
    assert get_template("arcface-112x96") is get_template("arcface112x96")
    with pytest.raises(ConfigError, match="unknown alignment template 'mtcnn-999'"):
        L.create_landmarker("aligned", template="mtcnn-999")


def test_method_column_round_trip_and_old_tables(tmp_path):
    rows = [L.landmarks_to_row("a.jpg", L.LandmarkResult.found(FaceLandmarks(ARCFACE_112, source="mediapipe-detection/short",
                                                                           method="detection"))),
            L.landmarks_to_row("b.jpg", L.LandmarkResult.found(FaceLandmarks(ARCFACE_112, source="template",
                                                                           method="template")))]
    L.write_landmarks_table(rows, tmp_path / "new.csv")
    assert list(pd.read_csv(tmp_path / "new.csv").columns) == list(L.TABLE_COLUMNS)
    lm = L.create_landmarker("file", path=tmp_path / "new.csv")
    assert lm.detect(np.zeros((5, 5, 3), np.uint8), key="a.jpg").landmarks.method == "detection"
    # a 0.2 table has no method column: the method is inferred from the source
    old = pd.read_csv(tmp_path / "new.csv").drop(columns=["method"])
    old.loc[0, "source"] = "mediapipe"
    old.to_csv(tmp_path / "old.csv", index=False)
    lm = L.create_landmarker("file", path=tmp_path / "old.csv")
    assert lm.detect(np.zeros((5, 5, 3), np.uint8), key="a.jpg").landmarks.method == "mesh"
    assert lm.detect(np.zeros((5, 5, 3), np.uint8), key="b.jpg").landmarks.method == "template"
    assert L.method_of_source("mediapipe-mesh-crop/tiles") == "mesh-crop"
    assert L.method_of_source("mediapipe-detection/short") == "detection"


def test_rwmfd_enrolment_example(rwmfd_root, tmp_path):
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import rwmfd_enrolment

    src = tmp_path / "src"
    for rel in ("0001/0005.jpg", "0000/0000.jpg"):  # a mesh-crop find (black mask) and whatever 0000 gets
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(rwmfd_root / rel, src / rel)
    assert rwmfd_enrolment.main(["--src", str(src), "--out", str(tmp_path / "out"), "--sample", "2"]) == 0
    summary = json.loads((tmp_path / "out" / "enrolment.json").read_text())
    assert summary["images"] == 2 and summary["by_method"].get("mesh-crop", 0) >= 1
    table = pd.read_csv(tmp_path / "out" / "landmarks.csv")
    assert set(table["method"].dropna()) <= set(L.METHODS)
    assert (tmp_path / "out" / "alignments.png").stat().st_size > 0


def _rwmfd_example():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import rwmfd_enrolment

    return rwmfd_enrolment


def test_every_fallback_constant_is_recorded_in_describe():
    """The fallback steps live in occbench.face.fallback (re-exported here); each of their settings must be
    reported by describe() (it goes into synth.json / enrolment.json / results), in value."""
    from occbench.face import fallback

    d = L.create_landmarker("mediapipe").describe()
    leaves = json.dumps({k: d[k] for k in ("detection", "mesh_crop", "pose")})
    consts = {k: v for k, v in vars(fallback).items() if k.isupper() and k != "ARCFACE_112"}  # not an import
    assert len(consts) >= 22  # the filter finds the settings (22 today)
    for name, value in consts.items():
        if name == "DETECTION_PASSES":
            assert d["detection"]["passes"][:-1] == [n for n, _, _ in value]
        elif name == "DETECTION_TILES":
            assert d["detection"]["tiles"] == [f"{n}x{n}@{f:g}" for n, f in value]
        elif name == "DETECTION_MOUTH_RATIO":
            assert d["detection"]["mouth_ratio"] == round(value, 6)
        else:
            assert json.dumps(list(value) if isinstance(value, tuple) else value) in leaves, name
    assert L.MediapipeLandmarker._fallback is fallback.FallbackSteps._fallback and L.MIN_EYE_DISTANCE == 4.0
    assert "detection" not in L.create_landmarker("mediapipe", detection_fallback=False).describe()


def test_rwmfd_judge_latest_verdict_wins(tmp_path):
    """A re-judged alignment is a new row below the old one; the last matching row decides. Alignments
    match when both eyes lie within 0.3 eye distances; others are 'unjudged'."""
    (tmp_path / "j.csv").write_text("key,eye0_x_px,eye0_y_px,eye1_x_px,eye1_y_px,correct,judge\n"
                                    "a.jpg,10,10,20,10,1,old\n"
                                    "b.jpg,10,10,20,10,1,old\n"
                                    "a.jpg,10.5,10,20,10.5,0,new\n")
    nan = float("nan")
    rows = [{"key": k, "status": "ok", "method": "detection", "x0": x0, "y0": 10.0, "x1": 20.0, "y1": 10.0}
            for k, x0 in (("a.jpg", 10.0), ("b.jpg", 10.0), ("c.jpg", 10.0))]
    rows += [{"key": "b.jpg", "status": "ok", "method": "mesh", "x0": 14.0, "y0": 10.0, "x1": 20.0, "y1": 10.0},
             {"key": "d.jpg", "status": "noface", "method": "", "x0": nan, "y0": nan, "x1": nan, "y1": nan}]
    counts, verdict = _rwmfd_example().judge(rows, tmp_path / "j.csv")
    assert counts["detection"] == {"correct": 1, "wrong": 1, "unjudged": ["c.jpg"]}
    assert counts["mesh"] == {"correct": 0, "wrong": 0, "unjudged": ["b.jpg"]}  # 4 px off at 6 px eye distance
    assert verdict == {"a.jpg": False, "b.jpg": True}


def test_rwmfd_enrolment_sample_0_writes_no_sheet(tmp_path):
    """--sample 0 (and any run where no image enrols) skips the contact sheet; it used to crash writing an
    empty one. Generated images with no face: no real data needed."""
    from PIL import Image

    src = tmp_path / "src" / "0000"
    src.mkdir(parents=True)
    Image.fromarray(np.full((64, 80, 3), 128, np.uint8)).save(src / "grey.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(src / "noise.png")
    out = tmp_path / "out"
    assert _rwmfd_example().main(["--src", str(tmp_path / "src"), "--out", str(out), "--sample", "0"]) == 0
    summary = json.loads((out / "enrolment.json").read_text())
    assert summary["images"] == 2 and summary["enrolled"] == 0 and summary["by_method"] == {"none": 2}
    assert not (out / "alignments.png").exists()


def test_rwmfd_enrolment_keys_and_sheet_only(rwmfd_root, tmp_path):
    """--keys runs only the named images and puts every enrolled one on the sheet; --sheet-only not-right
    shows only the alignments not judged right; an unknown key is a usage error."""
    from PIL import Image

    ex = _rwmfd_example()
    keys = ["0000/0000.jpg", "0001/0005.jpg"]  # a mesh find and a mesh-crop find
    out = tmp_path / "out"
    assert ex.main(["--src", str(rwmfd_root), "--out", str(out), "--keys", ",".join(keys), "--cols", "1"]) == 0
    table = pd.read_csv(out / "landmarks.csv", dtype={"key": str})
    assert list(table["key"]) == keys and (table["status"] == "ok").all()
    assert Image.open(out / "alignments.png").size == (112, 2 * 126)  # both, one column
    # judge the first right and the second wrong: only the second is on the not-right sheet
    judged = table[["key", "x0", "y0", "x1", "y1"]].set_axis(
        ["key", "eye0_x_px", "eye0_y_px", "eye1_x_px", "eye1_y_px"], axis=1).assign(correct=[1, 0])
    judged.to_csv(tmp_path / "judged.csv", index=False)
    (tmp_path / "keys.txt").write_text("\n".join(keys) + "\n")
    assert ex.main(["--src", str(rwmfd_root), "--out", str(out), "--keys", str(tmp_path / "keys.txt"),
                    "--judged", str(tmp_path / "judged.csv"), "--sheet-only", "not-right", "--cols", "1"]) == 0
    assert Image.open(out / "alignments.png").size == (112, 126)
    j = json.loads((out / "enrolment.json").read_text())["judged"]
    assert sum(v["correct"] for k, v in j.items() if k != "file") == 1
    assert sum(v["wrong"] for k, v in j.items() if k != "file") == 1
    with pytest.raises(SystemExit):
        ex.main(["--src", str(rwmfd_root), "--out", str(out), "--keys", "0000/0000.jpg,no/such.jpg"])


@pytest.mark.slow
def test_rwmfd_alignments_judged_by_eye(rwmfd_root, tmp_path):
    """All 385 RWMFD images against their alignments judged by eye (tests/rwmfd_judged_alignments.csv:
    each judged alignment's eyes, correct 1 / 0; a found alignment matches when both eyes lie within 0.3
    eye distances). The mesh: 254 right, 1 wrong. 0.2's detection fallback (first pass with a face):
    97 right, 26 wrong; with mesh-crop and the eye-distance floor: 107 right, 12 wrong, 11 no face; with
    the pose step: 111 right, 11 wrong, 8 no face (docs/notes/align.md); re-judged strictly in session 5
    (eyes placed on the mask: 0001/0016, 0001/0040, 0002/0044, 0002/0092): 107 right, 15 wrong
    (docs/notes/rwmfd.md)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import rwmfd_enrolment

    judged = Path(__file__).with_name("rwmfd_judged_alignments.csv")
    assert rwmfd_enrolment.main(["--src", str(rwmfd_root), "--out", str(tmp_path), "--sample", "4",
                                 "--judged", str(judged)]) == 0
    j = json.loads((tmp_path / "enrolment.json").read_text())["judged"]
    assert j["mesh"]["correct"] == 254 and j["mesh"]["wrong"] == 1 and not j["mesh"]["unjudged"], j["mesh"]
    fallback = [v for k, v in j.items() if k in ("mesh-crop", "detection", "pose")]
    right = sum(v["correct"] for v in fallback)
    doubtful = sum(v["wrong"] + len(v["unjudged"]) for v in fallback)
    assert right >= 107 and doubtful <= 15, j
