"""Part blocks (occluders/parts.yaml): a neutral block fitted to one face-part group on the face's mesh."""
from __future__ import annotations

import json

import numpy as np
import pytest

from occbench.errors import ConfigError
from occbench.face.geometry import ARCFACE_112, FaceLandmarks
from occbench.face.parts import MeshRequiredError, fit_mean_mesh, load_parts, part_fractions, rasterise_parts
from occbench.seeding import rng_for
from occbench.synth.occluders import FAMILIES, create_occluder, default_occluders, list_occluders

PARTS = load_parts()
BLOCKS = [n for n in list_occluders("part_*") if not n.rsplit("_", 1)[-1].startswith("v")]
GROUPS = {"part_eye_group": "eye_group", "part_nose_group": "nose_group", "part_mouth_group": "mouth_group",
          "part_cheek_group": "cheek_group", "part_forehead": "forehead", "part_upper_face": "upper_face",
          "part_lower_face": "lower_face"}


def _face(size=224):
    five = ARCFACE_112 * (size / 112)
    mesh = fit_mean_mesh(five)
    lm = FaceLandmarks(five, source="mediapipe", dense=mesh, method="mesh")
    img = np.random.default_rng(0).integers(60, 200, (size, size, 3)).astype(np.uint8)
    return img, lm, mesh


def test_blocks_are_registered_opt_in():
    assert sorted(BLOCKS) == sorted(GROUPS)
    assert not set(BLOCKS) & set(default_occluders())  # never drawn by a run that does not name them
    for name, group in GROUPS.items():
        occ = create_occluder(name)
        assert occ.family == "part_block" and occ.category == "block" and occ.cfg["group"] == group


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_block_covers_its_group(name):
    img, lm, mesh = _face()
    occ = create_occluder(name)
    res = occ(img, lm, rng=rng_for(0, name))
    assert set(np.unique(res.mask)) == {0, 255}
    assert (res.image[res.mask == 255] == 128).all() and np.array_equal(res.image[res.mask == 0], img[res.mask == 0])
    fr = part_fractions(res.mask, rasterise_parts(mesh, img.shape[:2]))
    group = GROUPS[name]
    members = PARTS.groups.get(group, (group,))
    assert all(fr[p] > 0.9 for p in members), fr
    # isolation: no part outside the group is >= 50 % covered (the "covered")
    assert all(fr[p] < 0.5 for p in PARTS.names if p not in members), fr
    # nothing random, and the params replay exactly (image and mask), from the description alone
    again = occ(img, lm, rng=rng_for(99, name))
    assert again.image.tobytes() == res.image.tobytes() and again.params == res.params
    params = json.loads(json.dumps(res.params))
    d = occ.describe()
    clone = FAMILIES.get(d["family"])(d["name"], d["category"], **d["config"])
    assert np.array_equal(clone.apply(img, params), res.image)
    assert np.array_equal(clone.apply_to_mask(None, params), res.mask)


def test_eye_block_is_one_hull_per_side_and_scale_grows_it():
    img, lm, mesh = _face()
    occ = create_occluder("part_eye_group")
    one = occ(img, lm, rng=rng_for(0), scale=1.0)
    assert len(one.params["polygons"]) == 2
    nose_bridge = mesh[168]  # between the eyes: not part of the eye group, not covered by its blocks
    assert one.mask[int(round(nose_bridge[1])), int(round(nose_bridge[0]))] == 0
    big = occ(img, lm, rng=rng_for(0), scale=1.5)
    assert (big.mask > 0).sum() > 1.8 * (one.mask > 0).sum() and not (one.mask & ~big.mask).any()


def test_template_crop_uses_the_mean_mesh_and_five_points_are_never_guessed():
    crop = np.full((112, 112, 3), 90, np.uint8)
    occ = create_occluder("part_mouth_group")
    for lm in (None, FaceLandmarks(ARCFACE_112, source="template")):
        res = occ(crop, lm, rng=rng_for(0))
        assert res.params["mesh_source"] == "mean_mesh" and (res.mask > 0).any()
    for lm in (FaceLandmarks(ARCFACE_112 * 2, source="mediapipe-detection/full", method="detection"),
               ARCFACE_112 * 2):
        with pytest.raises(MeshRequiredError, match="never guessed"):
            occ(np.zeros((224, 224, 3), np.uint8), lm, rng=rng_for(0))


def test_free_placement_and_bad_definitions_are_refused():
    img, lm, _ = _face()
    with pytest.raises(ConfigError, match="anchored"):
        create_occluder("part_nose_group")(img, lm, rng=rng_for(0), placement="free")
    with pytest.raises(ConfigError, match="exactly once"):
        create_occluder("part_eye_group", hulls=[["eye_l", "brow_l"]])
    with pytest.raises(ConfigError, match="unknown part"):
        create_occluder("part_eye_group", hulls=[["eye_l", "ear"]])
    with pytest.raises(ConfigError, match="unknown part or group"):
        create_occluder("part_eye_group", group="ears", hulls=[["eye_l"]])
    with pytest.raises(ConfigError, match="fit"):
        create_occluder("part_forehead", fit="blob")


def test_synth_rows_for_faces_without_a_mesh_say_why(tmp_path):
    """A part block on 5-point landmarks is an explained row, not a guessed block (eval: FTE)."""
    import cv2

    from occbench.face import landmarks as L
    from occbench.synth.manifest import read_manifest
    from occbench.synth.pipeline import SynthConfig, run_synth

    from synthetic_faces import synthetic_face

    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    rows = []
    for i, (mesh_too) in enumerate((True, False)):
        img, five0 = synthetic_face(250, seed=i)
        key = f"a/f{i}.png"
        cv2.imwrite(str(src / key), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        mesh = fit_mean_mesh(five0)
        five = L.mesh_to_five(mesh)
        rows.append((key, five, mesh if mesh_too else None))
    table = tmp_path / "landmarks.csv"
    L.write_landmarks_table([L.landmarks_to_row(k, L.LandmarkResult.found(FaceLandmarks(f, source="mediapipe",
                                                                                           method="mesh")))
                             for k, f, _ in rows], table, meshes={k: m for k, _, m in rows if m is not None})
    run_synth(SynthConfig(src=str(src), out=str(tmp_path / "out"), landmarks="file", landmarks_file=str(table),
                          occluders=("part_eye_group",), jobs=1), progress=False)
    df = read_manifest(tmp_path / "out").set_index("key")
    assert df.loc["a/f0.png", "status"] == "ok" and df.loc["a/f0.png", "part_eye_group"] > 0.9
    bad = df.loc["a/f1.png"]
    assert bad["status"] == "noface" and "no face-mesh points" in bad["reason"] and "never guessed" in bad["reason"]
