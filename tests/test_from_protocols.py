"""FROM's protocols: the fixed-region occluders land where they say, and both protocols expand."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from occbench.face.geometry import ARCFACE_112, FaceLandmarks
from occbench.synth.occluders import create_occluder, list_occluders

REGIONS_YAML = Path(__file__).resolve().parents[1] / "occluders" / "regions.yaml"


def _declared_boxes() -> dict[str, tuple[int, int, int, int]]:
    text = REGIONS_YAML.read_text()
    return {m.group(1): tuple(int(v) for v in m.groups()[1:])
            for m in re.finditer(r"^  (region_\w+):\s+# \[(\d+), (\d+), (\d+), (\d+)\]", text, re.M)}


def test_region_occluders_cover_their_declared_rectangle():
    boxes = _declared_boxes()
    assert len(boxes) == 11 and set(boxes) <= set(list_occluders("region_*"))
    image = np.full((112, 112, 3), 200, np.uint8)
    for name, (x0, y0, x1, y1) in boxes.items():
        masks = []
        for seed in (0, 1):  # no random draws: every image gets the same rectangle
            res = create_occluder(name)(image, FaceLandmarks(ARCFACE_112), rng=np.random.default_rng(seed),
                                        scale=1.0, placement="anchored")
            masks.append(np.asarray(res.mask) >= 128)
        np.testing.assert_array_equal(masks[0], masks[1])
        want = np.zeros((112, 112), bool)
        want[y0:y1, x0:x1] = True
        inter, union = (masks[0] & want).sum(), (masks[0] | want).sum()
        assert inter / union > 0.9, (name, inter / union)


@pytest.mark.parametrize("name,n_variants", [("from-occlfw", 7), ("from-regions", 13)])
def test_from_protocols_expand(name, n_variants):
    from occbench.bench.protocols import load_protocol

    p = load_protocol(name)
    names = [v.name for v in p.variants()]
    assert len(names) == n_variants, names
    assert names[0] == "clean" and "N-O" in names
    if name == "from-occlfw":
        assert {"N-O@s1.0", "N-O@s1.5", "O-O@s1.0", "O-O@s1.5", "O-O"} <= set(names)
        assert p.occlusion["headline"]["placement"] == "free"


def test_region_accuracy_picture(tmp_path):
    from occbench.bench.occlusion_plots import plot_region_accuracy, region_boxes
    from occbench.bench.results import VariantResult

    boxes = region_boxes(["region_eyes", "region_mouth", "block_solid"])
    assert set(boxes) == {"region_eyes", "region_mouth"}  # block_solid: random region, no fixed box
    np.testing.assert_allclose(boxes["region_eyes"], (16, 38, 96, 66), atol=1e-3)

    class Res:
        model = {"name": "m"}
        protocol = {"name": "from-regions"}
        variants = {"clean": VariantResult("clean", {"group": "clean"}, {"accuracy": 0.95}),
                    **{f"N-O/{n}@s1.0": VariantResult(f"N-O/{n}@s1.0", {"group": "occluder", "occluder": n},
                                                       {"accuracy": a})
                       for n, a in (("region_eyes", 0.8), ("region_mouth", 0.9))}}

    p = plot_region_accuracy(Res(), tmp_path / "r.png")
    assert p is not None and p.stat().st_size > 1000
    Res.variants = {"clean": Res.variants["clean"]}
    assert plot_region_accuracy(Res(), tmp_path / "none.png") is None
