"""Versioned occluder looks: frozen looks never drift, plain names get the newest look (issue 12).

The pinned hashes are of occbench 0.3.0's plain-named occluders (commit de1f3ef), rendered with the
script in ``_frozen_renders``: look 1 (``<name>_v1``) must give those very bytes, so every benchmark
protocol (which names look 1) reproduces its published numbers.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from occbench.errors import ConfigError
from occbench.face.geometry import FaceLandmarks
from occbench.face.parts import fit_mean_mesh
from occbench.seeding import rng_for
from occbench.synth.occluders import OCCLUDERS, create_occluder, default_occluders, list_occluders, seed_group
from occbench.synth.occluders.definitions import load_definitions, load_frozen_looks

from synthetic_faces import synthetic_face

FROZEN_V1 = {
    "surgical_mask": "615d7e129b4cbefbf3a91dda94de00ee42bff26516694a5fd52e228814dbdac3",
    "n95": "b11aadd4e3c317afeec94a3629b18fe92a91c45377281dc49007a2cc33d5369c",
    "cloth_mask": "b92a9e2dc9629c14696110259917de3c1773a1a827b4ceffbb2e3ff5fe4d459a",
    "sunglasses": "fdb8adb5a14a32eeed8709a6b666a048a2687686addb0cad522cd852426db9e6",
    "eyeglasses": "9649f52e27e02d8b6b3594918e49dcb94431ab500d2aed1da38639599b37042b",
    "scarf": "4e784bfc48a537fe0da99d0d792511e909fad352719ed3a4dac5681d4485e2a2",
    "hand": "54ec73d975b5a2e54aeb29f9eb11bdc1239f2f7ab6e4e607b91d2a83e914879d",
    "cap": "003c39fda624f23d6f0342dc61fb6ca2ef3eff9add22104516a53eaf60cc4b2a",
    "hat": "8dc1369a6dea00628e47544b322017ef1f7946e53f35af8e79bace0200d3726a",
    "block_solid": "0d15fa42a5f2fc974dee718d1c22672014a88c3ceb3e974012a4ca59d92bb1a3",
    "block_noise": "32f0e78735a2cf05ef6b11fcb2701144d33d93c4f0abaabf23b910ca02cb7dcd",
    "block_texture": "e70a0b7f9d4332d27aaf594a9aa339902b852963a7c8dfac842dbe5a5b61fa2e",
    "rgba_mug": "f47f93c403f6a37f791122e41b1ba3b231d78c454e00e4523b46d62428dbeace",
    "rgba_phone": "6f1f58fff03c121762c98b2b38d880b5db5106b654366876e9222cd7344b9b5d",
    "rgba_sport_mask": "0c3022b7a887f3a0877256e13984e42b5e367cbd4e751a4799f0fa8e14cdb94b",
    "rgba_sleep_mask": "03c34588e308b188fb897fe736327383469e92341d74ed10c593ec8553ed923d",
    "region_forehead": "d429b93ef85e7b8282f05ca591183c37d7660a190840d3c4f34c593baee494f5",
    "region_eyes": "f6d8d5e3481306dd9e07da178ff91196352ea7cb1bacefae08152ce8d8ac6a47",
    "region_left_eye": "d2c97ef7040c9c9decf0db2cddd315a7b6d108a40eb8b565e961dbc24f64928c",
    "region_right_eye": "75aaf8f362aaeb8e95812e33b580283108621038efd96a73b9b85fb41c5217dd",
    "region_nose": "7c0f3dc0b768c9527ed5abc6868b7521e224cbb18555d5004cf5d7e6e153af04",
    "region_mouth": "681ef8f2c748bb0fa0a3127d02908fb955c9260bbd15fd3349f09ee927ea8286",
    "region_chin": "98eeb5de564e83b5e6d570e7827c94521f8e6f22cbdb44535d01fa4a8a1ed2e8",
    "region_left_half": "ba5e27f9d9d83144ae888ff4ce3585031f1918167f2a25104fb586ec28cefb83",
    "region_right_half": "7c8e6e3b5c6b644ac18ea46e63633e7bc6c09332ea8c942c919a13fb62f22fab",
    "region_upper_half": "21db2e0da0a43352b2ad53eed295d2847c1e7c25a19aca94f1b84d54e741d73b",
    "region_lower_half": "e288e7769d98e824b0a64d23459c2bdda5b1cc8681a7f2b5763c1e70833d8980",
}
CASES = [(0, 112, 1.0, "anchored"), (1, 250, 2.0, "anchored"), (2, 250, 1.5, "free"), (3, 112, 0.5, "anchored")]


def _frozen_renders(name: str) -> str:
    """sha256 over image + mask of four renders (sizes 112 / 250, scales 0.5-2, both placements) of
    generated faces that carry a (perturbed) 468-point mesh, which look 1 must ignore."""
    h = hashlib.sha256()
    occ = create_occluder(name)
    base = name.rsplit("_v", 1)[0]
    for seed, size, scale, placement in CASES:
        img, five = synthetic_face(size, seed)
        mesh = fit_mean_mesh(five) + 1.5 * np.sin(np.arange(468))[:, None]
        lm = FaceLandmarks(five, source="mediapipe", dense=mesh)
        res = occ(img, lm, rng=rng_for(seed, "frozen-look", base), scale=scale, placement=placement)
        h.update(res.image.tobytes())
        h.update(res.mask.tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("base", sorted(FROZEN_V1))
def test_frozen_looks_render_the_pinned_pixels(base):
    assert _frozen_renders(f"{base}_v1") == FROZEN_V1[base]


def test_plain_names_are_the_newest_look_and_pinned_names_are_opt_in():
    names = set(list_occluders())
    default = set(default_occluders())
    for base in FROZEN_V1:
        assert f"{base}_v1" in names and f"{base}_v1" not in default
        fac = OCCLUDERS.get(base)
        newest = OCCLUDERS.get(f"{base}_v{fac.look}")
        assert (newest.family, newest.category, newest.config) == (fac.family, fac.category, fac.config)
        assert seed_group(f"{base}_v1") == seed_group(base) == base
    improved = {"surgical_mask", "n95", "cloth_mask", "hand", "scarf", "cap", "rgba_sleep_mask"}
    for base in improved:
        assert OCCLUDERS.get(base).look == 2 and OCCLUDERS.get(f"{base}_v1").family != OCCLUDERS.get(base).family
    assert not any(re.search(r"_v\d+$", n) for n in default)


def test_every_protocol_pins_its_occluder_looks():
    from occbench.bench.protocols import list_protocols

    seen = 0
    for p in list_protocols():
        for name in (p.occlusion or {}).get("occluders", []):
            m = re.fullmatch(r"(.+)_v(\d+)", name)
            assert m, f"protocol {p.name} names {name!r}: pin a look (<name>_v<N>) so its numbers cannot drift"
            assert OCCLUDERS.get(name).look == int(m.group(2))
            seen += 1
    assert seen


def test_pinned_and_plain_names_share_their_seeds_in_per_occluder_variants():
    from occbench.synth.pipeline import plan_variants

    v = plan_variants(("hand_v1", "hand", "surgical_mask_v1"), (2.0,), True, True)
    assert [x.group for x in v] == ["hand", "hand", "surgical_mask"]
    assert [x.name for x in v] == ["hand_v1@s2", "hand@s2", "surgical_mask_v1@s2"]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_changed_look_needs_a_new_look_number(tmp_path):
    body = ("occluders:\n  t_look_box:\n    family: block_solid\n    category: block\n    size: {size}\n"
            "    aspect: [1, 1]\n    regions: {{mouth: {{center: [56, 92], weight: 1}}}}\n"
            "    colours: {{grey: [128, 128, 128]}}\n    random_colour: 0.0\n    relight: 0.0\n"
            "    jitter: {{shift: 0.0, angle: 0.0, size: 0.0}}\n")
    _write(tmp_path / "a" / "looks-v1-box.yaml", "frozen_look: 1\n" + body.format(size=20))
    _write(tmp_path / "a" / "box.yaml", body.format(size=24))  # edited, still claims look 1
    assert load_frozen_looks(tmp_path / "a") == ["t_look_box_v1"]
    with pytest.raises(ConfigError, match="new 'look' number"):
        load_definitions(tmp_path / "a")
    newer = body.format(size=24).replace("t_look_box:", "t_look_box2:").replace("category: block",
                                                                                  "category: block\n    look: 2")
    _write(tmp_path / "b" / "box.yaml", newer)
    assert load_definitions(tmp_path / "b") == ["t_look_box2"]
    assert OCCLUDERS.get("t_look_box2_v2").config == OCCLUDERS.get("t_look_box2").config
    assert "t_look_box2_v2" not in default_occluders()


# ----------------------------------------------------------------------------- look 2 (the plain names)


def _lfw_like(seed: int = 0):
    img, five = synthetic_face(250, seed)
    return img, five, fit_mean_mesh(five)


def _turned(mesh: np.ndarray, five: np.ndarray, k: float = 0.5) -> np.ndarray:
    """A crude yaw: the image-right half of the mesh squeezed towards the nose line by ``k``."""
    cx = float(five[2, 0])
    out = mesh.copy()
    right = out[:, 0] > cx
    out[right, 0] = cx + k * (out[right, 0] - cx)
    return out


@pytest.mark.parametrize("name", ["surgical_mask", "n95", "cloth_mask"])
def test_masks_follow_a_turned_face_with_the_mesh(name):
    img, five, mesh = _lfw_like()
    occ = create_occluder(name)
    plain = occ(img, FaceLandmarks(five), rng=rng_for(3, name))
    assert plain.params["mesh_warp"] is None  # no mesh: the 5-point fit, as before
    front = occ(img, FaceLandmarks(five, dense=mesh), rng=rng_for(3, name))
    a, b = plain.mask > 0, front.mask > 0
    assert (a & b).sum() / (a | b).sum() > 0.93  # a frontal mesh changes little
    turned_mesh = _turned(mesh, five)
    turned = occ(img, FaceLandmarks(five, dense=turned_mesh), rng=rng_for(3, name))
    rows = slice(int(turned_mesh[17, 1]), int(turned_mesh[152, 1]) - 3)  # lower lip to chin: no ear loops
    far_edge = np.nonzero(turned.mask[rows].any(0))[0].max()
    frontal_fit = np.nonzero(a[rows].any(0))[0].max()
    contour = turned_mesh[[397, 365, 379, 378, 400], 0].max()  # the far jaw line at those heights
    assert frontal_fit > contour + 14  # the 5-point fit hangs past the far cheek ...
    assert far_edge <= contour + 8  # ... the mesh fit ends at the far-side jaw line (as it wraps a frontal one)
    # the warp is in the params: replays without the landmarks, image and mask alike
    assert np.array_equal(occ.apply(img, turned.params), turned.image)
    assert np.array_equal(occ.apply_to_mask(None, turned.params), turned.mask)
    free = occ(img, FaceLandmarks(five, dense=turned_mesh), rng=rng_for(3, name), placement="free")
    assert free.params["mesh_warp"] is None  # FROM-style free placement is never fitted


def test_a_folded_mesh_falls_back_to_the_five_point_fit():
    img, five, mesh = _lfw_like()
    folded = _turned(mesh, five, k=-0.6)  # the right half flipped over the nose line
    res = create_occluder("surgical_mask")(img, FaceLandmarks(five, dense=folded), rng=rng_for(0))
    assert res.params["mesh_warp"] is None


def test_hands_come_in_a_range_of_skin_tones_and_from_three_sides():
    occ = create_occluder("hand")
    img = np.full((112, 112, 3), 128, np.uint8)
    lum, sides = [], set()
    for seed in range(80):
        p = occ.get_params(rng_for(seed, "hand-look"), img.shape, None)
        rgb = p["vars"]["skin"]["rgb"]
        if not p["vars"]["skin"]["match_face"]:
            lum.append(0.3 * rgb[0] + 0.59 * rgb[1] + 0.11 * rgb[2])
        m = occ.apply_to_mask(None, p) > 0
        for side, edge in (("bottom", m[-1]), ("left", m[:, 0]), ("right", m[:, -1])):
            if edge.sum() >= 8:
                sides.add(side)
    assert max(lum) - min(lum) > 120  # light to deep
    assert sides == {"bottom", "left", "right"}


def test_sleep_masks_vary_in_colour_pattern_and_size():
    occ = create_occluder("rgba_sleep_mask")
    img = np.full((112, 112, 3), 128, np.uint8)
    colours, areas, patterns = set(), [], set()
    for seed in range(24):
        res = occ(img, None, rng=rng_for(seed, "sleep-look"))
        m = res.mask > 0
        colours.add(tuple((res.image[m].mean(0) // 24).astype(int)))
        areas.append(int(m.sum()))
        patterns.add(res.params["vars"]["pattern"])
    assert len(colours) >= 16 and len(patterns) >= 4
    assert max(areas) > 1.15 * min(areas)


def test_scarf_top_edge_is_draped_over_the_nose():
    occ = create_occluder("scarf")
    for seed in range(12):
        p = occ.get_params(rng_for(seed, "scarf-look"), (112, 112, 3), None, scale=1.0)
        p = {**p, "fit": p["fit"]}
        m = occ.apply_to_mask(None, p) > 0
        top = np.array([np.argmax(m[:, x]) if m[:, x].any() else 112 for x in range(112)])
        peak = int(top[40:72].min())
        assert top[20] - peak >= 4 and top[92] - peak >= 4, seed  # falls away from the nose to the cheeks
    v1 = create_occluder("scarf_v1")
    p = v1.get_params(rng_for(0, "scarf-look"), (112, 112, 3), None)
    assert "drape" not in p["vars"]


def test_cap_is_a_low_crown_with_a_narrower_crescent_visor():
    cfg, old = create_occluder("cap").cfg, create_occluder("cap_v1").cfg
    crown, visor = np.array(cfg["crown"]), np.array(cfg["visor"])
    assert np.ptp(visor[:, 0]) < np.ptp(crown[:, 0])  # the visor is narrower than the crown
    assert crown[:, 1].min() > np.array(old["crown"])[:, 1].min() + 5  # a lower dome than look 1
    front = visor[visor[:, 1] > 36.0]  # the front (lower) edge of the visor
    centre = front[np.argmin(np.abs(front[:, 0] - 56))]
    assert centre[1] - front[:, 1].min() > 8  # an arch: the middle juts out below the ends


def test_cloth_masks_vary_in_style_straps_textile_and_colour():
    occ = create_occluder("cloth_mask")
    styles, straps, kinds, names = set(), set(), set(), set()
    for seed in range(60):
        v = occ.get_params(rng_for(seed, "cloth-look"), (112, 112, 3), None)["vars"]
        styles.add(v["style"])
        straps.add(v["straps"])
        kinds.add(v["texture"]["texture"])
        names.add(v["texture"]["colour_names"][0])
    assert styles == {"fitted", "pleated"} and straps == {"loops", "ties", "none"}
    assert len(kinds) >= 6 and len(names) >= 12
