"""The dense-mesh sidecar of a landmarks table: format, safety, the file landmarker reading it back, and
synth: with the sidecar the occluded pixels are unchanged and every row gets its part fractions."""
from __future__ import annotations

import io
import math
import zipfile

import numpy as np
import pytest

from occbench.errors import ConfigError
from occbench.face import landmarks as L
from occbench.face.geometry import FaceLandmarks
from occbench.face.mesh_table import mesh_bytes, mesh_path_for, read_mesh_table, write_mesh_table
from occbench.face.parts import fit_mean_mesh

from synthetic_faces import face_points, synthetic_face


def _mesh_face(five0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(468-point mesh, its 5 points): the mean mesh fitted to ``five0``, five derived from it as the
    mediapipe landmarker derives them."""
    mesh = fit_mean_mesh(five0)
    return mesh, L.mesh_to_five(mesh)


def test_mesh_path_and_round_trip(tmp_path):
    assert mesh_path_for(tmp_path / "landmarks.csv") == tmp_path / "landmarks.mesh.npz"
    assert mesh_path_for("x/lm.parquet").name == "lm.mesh.npz"
    rng = np.random.default_rng(0)
    meshes = {"b/x.jpg": rng.random((468, 2)) * 250, "a.jpg": rng.random((468, 2)), "ü ~.png": rng.random((468, 2))}
    write_mesh_table(meshes, tmp_path / "m.mesh.npz")
    back = read_mesh_table(tmp_path / "m.mesh.npz")
    assert set(back) == set(meshes) and all(np.array_equal(back[k], meshes[k]) for k in meshes)
    # bytes depend on the content only (key order, time): an unchanged mesh keeps synth's fingerprint
    assert mesh_bytes(dict(reversed(list(meshes.items())))) == (tmp_path / "m.mesh.npz").read_bytes()
    assert np.load(tmp_path / "m.mesh.npz", allow_pickle=False)["points"].shape == (3, 468, 2)
    write_mesh_table({}, tmp_path / "e.mesh.npz")
    assert read_mesh_table(tmp_path / "e.mesh.npz") == {}


def _npz(members: dict, compress=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _npy(arr, allow_pickle=False) -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array(b, arr, allow_pickle=allow_pickle)
    return b.getvalue()


def _bomb_header(shape) -> bytes:
    """A .npy header declaring ``shape`` float64 followed by 16 bytes of data."""
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return b.getvalue() + bytes(16)


KEYS = _npy(np.array(["a"]))


@pytest.mark.parametrize("members,msg", [
    ({"keys.npy": KEYS}, "exactly"),
    ({"keys.npy": KEYS, "points.npy": _bomb_header((10**9, 468, 2))}, "more than it holds"),
    ({"keys.npy": KEYS, "points.npy": _npy(np.array([None, 1], dtype=object), allow_pickle=True)}, "objects"),
    ({"keys.npy": KEYS, "points.npy": _npy(np.zeros((2, 468, 2)))}, "N = 1"),
    ({"keys.npy": _npy(np.array(["a", "a"])), "points.npy": _npy(np.zeros((2, 468, 2)))}, "twice"),
    ({"keys.npy": KEYS, "points.npy": _npy(np.full((1, 468, 2), np.nan))}, "non-finite"),
    ({"keys.npy": KEYS, "points.npy": b"not an array at all"}, "not a .npy"),
])
def test_bad_mesh_files_are_refused(tmp_path, members, msg):
    p = tmp_path / "m.mesh.npz"
    p.write_bytes(_npz(members))
    with pytest.raises(ConfigError, match=msg):
        read_mesh_table(p)


def test_compressed_members_and_non_zip_are_refused(tmp_path):
    p = tmp_path / "m.mesh.npz"
    p.write_bytes(_npz({"keys.npy": KEYS, "points.npy": _npy(np.zeros((1, 468, 2)))}, zipfile.ZIP_DEFLATED))
    with pytest.raises(ConfigError, match="uncompressed"):
        read_mesh_table(p)
    p.write_bytes(b"PK but not really")
    with pytest.raises(ConfigError, match="not a .npz"):
        read_mesh_table(p)


def _table(tmp_path, n=3, size=250, sidecar=True, fmt="csv"):
    rows, meshes = [], {}
    for i in range(n):
        mesh, five = _mesh_face(face_points(size) + i)
        key = f"p{i}/img_{i}.png"
        meshes[key] = mesh
        rows.append(L.landmarks_to_row(key, L.LandmarkResult.found(
            FaceLandmarks(five, source="mediapipe", dense=mesh, method="mesh"))))
    rows.append(L.landmarks_to_row("bad.png", L.LandmarkResult.noface("no face found")))
    path = tmp_path / f"landmarks.{fmt}"
    L.write_landmarks_table(rows, path, meshes=meshes if sidecar else None)
    return path, meshes


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_file_landmarker_reads_the_mesh_back(tmp_path, fmt):
    path, meshes = _table(tmp_path, fmt=fmt)
    assert mesh_path_for(path).is_file()
    lmk = L.create_landmarker("file", path=path)
    img = np.zeros((250, 250, 3), np.uint8)
    for key, mesh in meshes.items():
        res = lmk.detect(img, key=key)
        assert res.ok and res.landmarks.method == "mesh" and np.array_equal(res.landmarks.dense, mesh)
    assert lmk.detect(img, key="bad.png").status == "noface"
    d = lmk.describe()
    assert d["mesh"]["n_meshes"] == 3 and len(d["mesh"]["sha256"]) == 64


def test_without_a_sidecar_nothing_changes(tmp_path):
    path, meshes = _table(tmp_path, sidecar=False)
    lmk = L.create_landmarker("file", path=path)
    assert "mesh" not in lmk.describe()  # runs without a sidecar keep their fingerprint
    res = lmk.detect(np.zeros((250, 250, 3), np.uint8), key=next(iter(meshes)))
    assert res.ok and res.landmarks.dense is None


def test_a_stale_sidecar_is_refused(tmp_path):
    path, meshes = _table(tmp_path)
    key = next(iter(meshes))
    write_mesh_table({**meshes, key: meshes[key] + 9.0}, mesh_path_for(path))
    with pytest.raises(ConfigError, match="do not belong together"):
        L.create_landmarker("file", path=path)


# ----------------------------------------------------------------------------------- synth


def _faces(tmp_path, n=4, size=250):
    src = tmp_path / "src"
    rows, meshes = [], {}
    for i in range(n):
        img, five0 = synthetic_face(size, seed=i)
        key = f"id{i}/face_{i}.png"
        (src / f"id{i}").mkdir(parents=True)
        import cv2

        cv2.imwrite(str(src / key), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        mesh, five = _mesh_face(five0)
        meshes[key] = mesh
        rows.append(L.landmarks_to_row(key, L.LandmarkResult.found(
            FaceLandmarks(five, source="mediapipe", dense=mesh, method="mesh"))))
    return src, rows, meshes


def _synth(src, table, out, occluders):
    from occbench.synth.pipeline import SynthConfig, run_synth
    from occbench.synth.manifest import read_manifest

    run_synth(SynthConfig(src=str(src), out=str(out), landmarks="file", landmarks_file=str(table),
                          occluders=tuple(occluders), per_occluder=True, scales=(1.0, 2.0), per_scale=True,
                          seed=3, jobs=1), progress=False)
    return read_manifest(out).sort_values(["key", "variant"]).reset_index(drop=True)


def test_eval_occluders_draw_the_same_pixels_with_the_mesh_and_get_part_fractions(tmp_path):
    """Eval's occluded probes come from synth with the landmarks table: carrying the mesh beside it must
    not move a pixel of the protocol occluders (they place by the 5 points), and gives part fractions."""
    from occbench.bench.protocols import load_protocol

    occluders = load_protocol("lfw-occ").occlusion["occluders"]
    src, rows, meshes = _faces(tmp_path)
    plain, with_mesh = tmp_path / "plain", tmp_path / "mesh"
    plain.mkdir()
    with_mesh.mkdir()
    L.write_landmarks_table(rows, plain / "landmarks.csv")
    L.write_landmarks_table(rows, with_mesh / "landmarks.csv", meshes=meshes)
    a = _synth(src, plain / "landmarks.csv", tmp_path / "out_a", occluders)
    b = _synth(src, with_mesh / "landmarks.csv", tmp_path / "out_b", occluders)
    assert len(a) == len(b) == 4 * len(occluders) * 2 and (a["status"] == "ok").all()
    for ra, rb in zip(a.to_dict("records"), b.to_dict("records")):
        assert (ra["key"], ra["variant"], ra["params"], ra["cells"]) == (rb["key"], rb["variant"], rb["params"],
                                                                          rb["cells"])
        for col in ("image", "mask"):
            assert (tmp_path / "out_a" / ra[col]).read_bytes() == (tmp_path / "out_b" / rb[col]).read_bytes()
        assert math.isnan(ra["part_nose"]) and ra["part_reason"]  # 5 points only: unmeasured, explained
        assert 0.0 <= rb["part_nose"] <= 1.0 and 0.0 <= rb["part_eye_group"] <= 1.0 and not rb["part_reason"]
    sun = b[b["occluder"].str.startswith("sunglasses")]
    assert (sun["part_eye_l"] > 0.5).all() and (sun["part_mouth"] < 0.05).all()
