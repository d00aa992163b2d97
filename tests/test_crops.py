"""The protocol-level crop switch (``crop: arcface-112x96``, FROM's 112x96 crop) for any recognizer."""
from __future__ import annotations

import numpy as np
import pytest

from occbench.bench.crops import CropSwitch, apply_crop, crop_geometry
from occbench.bench.protocols import load_protocol, protocol_hash, validate_protocol
from occbench.errors import ConfigError
from occbench.face.geometry import ARCFACE_112, ARCFACE_112x96, FaceLandmarks, estimate_similarity, warp
from occbench.recognizers.base import Preprocess, template_alignment
from test_evaluate import OCC_YAML, TinyRecognizer, make_pairs_set


def _face(seed: int = 0):
    rng = np.random.default_rng(seed)
    five = ARCFACE_112 * 1.6 + rng.uniform(20, 40, 2)
    image = rng.integers(30, 220, (260, 240, 3), dtype=np.uint8)
    return image, FaceLandmarks(five)


def test_112x112_model_sees_its_own_crop_with_8_black_columns_each_side():
    rec = TinyRecognizer()
    sw = apply_crop(rec, "arcface-112x96")
    image, lm = _face()
    m = sw.alignment_transform(image, lm)
    np.testing.assert_allclose(m, template_alignment(rec.preprocess, lm), atol=1e-9)  # same face geometry
    crop = sw.blank(warp(image, m, (112, 112))[None])[0]
    own = warp(image, template_alignment(rec.preprocess, lm), (112, 112))
    assert not crop[:, :8].any() and not crop[:, 104:].any()
    np.testing.assert_array_equal(crop[:, 8:104], own[:, 8:104])
    assert own[:, :8].any() and own[:, 104:].any()
    # the kept window is exactly the 112x96 crop FROM's networks see
    from96 = warp(image, estimate_similarity(lm.five, ARCFACE_112x96), (112, 96))
    np.testing.assert_array_equal(crop[:, 8:104], from96)


def test_112x96_model_gets_the_crop_as_is():
    class Rec96(TinyRecognizer):
        def __init__(self):
            super().__init__()
            self.preprocess = Preprocess(input_size=(112, 96), template="arcface112x96")

    rec = Rec96()
    sw = apply_crop(rec, "arcface-112x96")
    image, lm = _face(1)
    np.testing.assert_allclose(sw.alignment_transform(image, lm), template_alignment(rec.preprocess, lm), atol=1e-9)
    crops = np.full((2, 112, 96, 3), 7, np.uint8)
    assert sw.blank(crops) is crops  # nothing blanked


def test_other_input_sizes_pad_then_resize():
    post, keep = crop_geometry((150, 150))
    f = 150 / 112
    # the window [7.5, 103.5) of the 112 frame lands on [8f - 0.5, 104f - 0.5) model pixels
    assert keep.sum() == 128 and np.flatnonzero(keep)[[0, -1]].tolist() == [11, 138]
    # a point of the 112x96 crop at its centre lands at the centre of the 150x150 input
    c = post @ np.array([47.5, 55.5, 1.0])
    np.testing.assert_allclose(c[:2], [74.5, 74.5])
    assert f > 1


def test_switch_delegates_and_separates_the_cache():
    rec = TinyRecognizer()
    sw = apply_crop(rec, "arcface-112x96")
    assert isinstance(sw, CropSwitch) and sw.name == rec.name and sw.preprocess is rec.preprocess
    assert sw.fingerprint() == rec.fingerprint() + "+crop-arcface-112x96"
    assert not hasattr(sw, "infer")  # TinyRecognizer has none: the wrapper must not invent one
    assert apply_crop(rec, "model") is rec and apply_crop(rec, None) is rec
    with pytest.raises(ConfigError, match="unknown crop"):
        apply_crop(rec, "arcface-112x80")
    crops = np.full((1, 112, 112, 3), 100, np.uint8)
    sw.embed(crops)
    assert crops.all()  # the caller's crops are not modified


def test_protocol_option():
    p = load_protocol("from-occlfw-112x96")
    base = load_protocol("from-occlfw")
    assert p.crop == "arcface-112x96" and base.crop == "model" and "crop" not in base.raw  # hashes unchanged
    assert [v.name for v in p.variants()] == [v.name for v in base.variants()]
    assert p.occlusion == base.occlusion
    raw = {k: v for k, v in p.raw.items() if k != "crop"}
    with pytest.raises(ConfigError, match="crop must be one of"):
        validate_protocol({**raw, "crop": "112x96"})
    assert protocol_hash(p, {}) != protocol_hash(base, {})


def test_crop_protocol_end_to_end(tmp_path):
    """The engine applies the switch: the model sees black bands, the oracle stays exact in that frame."""
    from occbench.bench.evaluate import evaluate
    from occbench.recognizers import create_recognizer

    data = tmp_path / "data"
    pairs = make_pairs_set(data)
    y = tmp_path / "gen-occ-96.yaml"
    y.write_text(OCC_YAML.format(name="gen-occ-96") + "crop: arcface-112x96\n")
    prot = load_protocol(y).with_overrides(pairs=pairs)

    class Recording(TinyRecognizer):
        seen: list = []

        def embed(self, crops):
            type(self).seen.append(np.asarray(crops).copy())
            return super().embed(crops)

    rec = Recording()
    res = evaluate(prot, rec, data_root=data, cache_dir=tmp_path / "cache", progress=False, plots=False,
                   variants=["N-O"])
    seen = np.concatenate(Recording.seen)
    assert len(seen) > 0 and not seen[:, :, :8].any() and not seen[:, :, 104:].any() and seen[:, :, 8:104].any()
    assert res["model"]["fingerprint"].endswith("+crop-arcface-112x96")
    oracle = evaluate(prot, create_recognizer("oracle"), data_root=data, cache_dir=tmp_path / "cache",
                      progress=False, plots=False, variants=["N-O"])
    est = oracle["variants"]["N-O"]["occlusion"]["estimate"]
    assert est["mask"]["iou_occluded"] == 1.0 and est["pattern"]["top1"] == 1.0
