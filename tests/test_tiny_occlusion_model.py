"""The tiny occlusion model (examples/tiny_occlusion_model.py) learns the mask: a short training run on
real LFW crops beats the blind ("all clean") bound on held-out identities by a clear margin."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_occlusion_model.py"


def _example():
    spec = importlib.util.spec_from_file_location("tiny_occlusion_model", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_tiny_model_beats_blind(lfw_images, tmp_path):
    ex = _example()
    ex.LFW = lfw_images
    train_keys, held_keys = ex.split_keys(lfw_images, 240)
    assert not {k.split("/")[0] for k in train_keys} & {k.split("/")[0] for k in held_keys}
    runs = ex.synthesize(train_keys + held_keys, tmp_path / "synth", seed=0, jobs=1, progress=False)
    xs, ms, ys = ex.load_examples(runs, set(train_keys))
    xh, mh, yh = ex.load_examples(runs, set(held_keys))
    model, info = ex.train(xs, ms, ys, minutes=1.0, progress=False)
    s = ex.score(model, xh, mh, yh)
    assert s["blind_mask_iou"] == 0.0
    assert s["mask_iou"] > 0.25, s  # blind is 0; chance (predicting occluded at the true rate) is ~0.2
    assert s["pattern_top5"] > s["blind_pattern_top1"] * 0.5, s
