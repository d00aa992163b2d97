"""Scoring glue: truth of an image set, oracle / blind bounds, NaN masks, prediction cache, plots."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from occbench.bench.occlusion import (OutputCollector, SetPredictions, get_predictions, link_to_recognition,
                                      pair_quality, prediction_cache_key, put_predictions, score_set, set_truth,
                                      summary_text, truth_predictions)
from occbench.face.geometry import ARCFACE_112, estimate_similarity
from occbench.recognizers import create_recognizer
from occbench.recognizers.outputs import ModelOutputs


def _images(tmp_path, n=12, seed=0):
    """n 250x250 image-frame masks (PNG) with boxes of varied size; every 4th image is clean."""
    rng = np.random.default_rng(seed)
    five = ARCFACE_112 * 1.6 + 35
    m = estimate_similarity(five, ARCFACE_112)
    sources, rows = [], []
    for i in range(n):
        if i % 4 == 3:
            sources.append("clean")
            rows.append({"occluder": "none", "scale": np.nan, "area_frac": 0.0})
            continue
        mask = np.zeros((250, 250), np.uint8)
        y0, x0 = rng.integers(40, 150, 2)
        hh, ww = rng.integers(30, 100, 2)
        mask[y0:y0 + hh, x0:x0 + ww] = 255
        p = tmp_path / f"m{i}.png"
        cv2.imwrite(str(p), mask)
        sources.append(str(p))
        rows.append({"occluder": ["hand", "cap"][i % 2], "scale": [1.0, 2.0][i % 2], "area_frac": float((mask > 0).mean())})
    return np.repeat(m[None], n, 0), sources, rows


def test_oracle_and_blind_bounds(tmp_path):
    ms, sources, rows = _images(tmp_path)
    oracle, blind = create_recognizer("oracle"), create_recognizer("blind")
    truth = set_truth(ms, sources, (112, 112), oracle.grid, 5)
    assert truth.known.all() and (truth.pattern[3::4] == 0).all() and (truth.pattern[:3] > 0).all()
    ok = np.ones(len(sources), bool)
    s = score_set(truth_predictions(truth, oracle.outputs, oracle.outputs.pattern.n_classes), truth, ok, rows,
                  oracle.outputs)
    assert s.block["mask"]["iou_occluded"] == 1.0 and s.block["pattern"]["top1"] == 1.0
    assert s.block["pattern"]["cell_agreement"] == 1.0 and s.block["pattern"]["most_confused"] == []
    assert set(s.block["by_occluder"]) == {"hand", "cap", "none"} and s.block["by_area"]
    crops = np.zeros((len(sources), 112, 112, 3), np.uint8)
    out = blind.infer(crops)
    col = OutputCollector(len(sources))
    col.add(np.arange(len(sources)), out)
    b = score_set(col.predictions(), truth, ok, rows, blind.outputs)
    assert b.block["mask"]["iou_occluded"] == 0.0
    assert b.block["pattern"]["top1"] == pytest.approx(b.block["pattern"]["clean_share"]) == pytest.approx(3 / 12)
    assert "mask IoU 0.000" in summary_text(b.block) and "pattern top-1 0.250" in summary_text(b.block)


def test_clean_set_reports_false_occlusion_and_nan_masks_are_counted(tmp_path):
    n = 6
    ms = np.repeat(estimate_similarity(ARCFACE_112, ARCFACE_112)[None], n, 0)
    truth = set_truth(ms, ["clean"] * n, (112, 112), (4, 4), 5)
    blind = create_recognizer("blind", factory_kwargs={"grid": (4, 4)})
    mask = np.zeros((n, 4, 4), np.float32)
    mask[0, 0, 0] = 0.9
    mask[1] = np.nan
    pred = SetPredictions(mask, blind.infer(np.zeros((n, 112, 112, 3), np.uint8)).pattern)
    s = score_set(pred, truth, np.ones(n, bool), None, blind.outputs, clean=True)
    fo = s.block["false_occlusion"]
    assert fo["n_nan"] == 1 and fo["n_images"] == 5 and fo["pixel_rate"] == pytest.approx(1 / 80)
    assert s.block["mask"]["n_nan"] == 1 and any("NaN" in x for x in s.block["notes"])
    assert np.isnan(s.iou[1])


def test_unknown_truth_and_failed_images_are_left_out(tmp_path):
    ms, sources, rows = _images(tmp_path, n=8)
    ms[1] = np.nan  # not aligned
    sources[2] = None  # no label
    sources[5] = str(tmp_path / "missing.png")  # unreadable mask: counted with its reason
    truth = set_truth(ms, sources, (112, 112), (14, 14), 5)
    assert truth.known.tolist() == [True, False, False, True, True, False, True, True]
    assert "FileNotFoundError" in truth.reasons[5]
    ok = np.ones(8, bool)
    ok[0] = False
    oracle = create_recognizer("oracle")
    s = score_set(truth_predictions(truth, oracle.outputs, 226), truth, ok, rows, oracle.outputs)
    assert s.block["n_images"] == 4 and s.block["n_without_truth"] == 3


def test_predictions_cache_roundtrip(tmp_path):
    from occbench.bench.embed import CacheKey, EmbeddingCache

    cache = EmbeddingCache(tmp_path)
    spec = create_recognizer("blind").outputs
    key = prediction_cache_key(CacheKey("fp", "proto", "clean-abc"), spec)
    assert get_predictions(cache, key) is None
    pred = SetPredictions(np.random.default_rng(0).random((3, 2, 2)).astype(np.float32), None)
    put_predictions(cache, key, pred)
    back = get_predictions(cache, key)
    np.testing.assert_array_equal(back.mask, pred.mask)
    assert back.pattern is None


def test_link_to_recognition_and_pair_quality():
    correct = np.array([1, 1, 0, 0, 1, np.nan])
    iou2 = np.array([0.9, 0.8, 0.1, 0.2, 0.5, 0.5])
    pat2 = np.array([1, 1, 0, 0, np.nan, 1])
    q, p = pair_quality(None, iou2, None, pat2)
    link = link_to_recognition(correct, q, p)
    assert [t["n_pairs"] for t in link["mask_iou_tertiles"]] == [2, 2, 1]
    assert link["mask_iou_tertiles"][0]["accuracy"] == 0.0
    assert link["by_pattern"]["correct"] == {"n_pairs": 2, "accuracy": 1.0}
    assert link["by_pattern"]["wrong"] == {"n_pairs": 2, "accuracy": 0.0}
    q2, p2 = pair_quality(iou2, iou2 / 2, pat2, np.ones(6))
    np.testing.assert_allclose(q2, iou2 * 0.75)


def test_plots_and_contact_sheet(tmp_path):
    from occbench.bench.occlusion_plots import contact_sheet, plot_confused_patterns, plot_iou_vs_area

    crops = np.random.default_rng(0).integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)
    tm = np.zeros((3, 14, 14))
    tm[:, 4:9] = 1
    p = contact_sheet(tmp_path / "s.png", crops, tm, tm[:, ::-1], ["a", "b", "c"], "best / worst")
    img = cv2.imread(str(p))
    assert img.shape[1] == 2 * 3 * 112
    plot_iou_vs_area({"N-O": [{"area_lo": 0.1, "area_hi": 0.2, "mask_iou_mean": 0.4, "n": 3, "pattern_top1": None}]},
                     tmp_path / "a.png", "t")
    plot_confused_patterns([{"true": 5, "pred": 0, "count": 4}, {"true": 1, "pred": 2, "count": 1}], 5,
                           tmp_path / "c.png", "t")
    assert (tmp_path / "a.png").stat().st_size > 1000 and (tmp_path / "c.png").stat().st_size > 1000


def test_model_outputs_collector_scatter():
    col = OutputCollector(3)
    col.add(np.array([0, 2]), ModelOutputs(np.zeros((2, 4)), np.ones((2, 2, 2), np.float32), None))
    pred = col.predictions()
    assert np.isnan(pred.mask[1]).all() and (pred.mask[[0, 2]] == 1).all() and pred.pattern is None
    scattered = col.predictions(rows=[1, 3, 4], n=5)
    assert np.isnan(scattered.mask[0]).all() and (scattered.mask[4] == 1).all()


def test_truth_cache_returns_the_same_truth(tmp_path):
    from occbench.bench.embed import EmbeddingCache
    from occbench.bench.occlusion import cached_truth

    ms, sources, rows = _images(tmp_path, n=6)
    cache = EmbeddingCache(tmp_path / "cache")
    a = cached_truth(cache, "set", [str(i) for i in range(6)], ms, sources, (112, 112), (14, 14), 5, 0.5)
    b = cached_truth(cache, "set", [str(i) for i in range(6)], ms, sources, (112, 112), (14, 14), 5, 0.5)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.pattern, b.pattern)
    assert a.known.tolist() == b.known.tolist() and a.mask.any()
    c = cached_truth(cache, "set", [str(i) for i in range(6)], ms, sources, (112, 112), (14, 14), 5, 0.3)
    assert c.mask.sum() >= a.mask.sum()  # another tau is another entry


def test_truth_cache_keys_differ_per_set_and_mask_files(tmp_path):
    """Two variants of one synth run (same run fingerprint, masks with equal file names in other
    folders) must not share a cached truth."""
    from occbench.bench.embed import EmbeddingCache
    from occbench.bench.occlusion import cached_truth

    ms, sources, _ = _images(tmp_path, n=4, seed=0)
    (tmp_path / "other").mkdir()
    ms2, sources2, _ = _images(tmp_path / "other", n=4, seed=5)  # same names m0.png..., other boxes
    cache = EmbeddingCache(tmp_path / "cache")
    keys = ["a", "b", "c", "d"]
    a = cached_truth(cache, "run/s1", keys, ms, sources, (112, 112), (14, 14), 5, 0.5)
    b = cached_truth(cache, "run/s1", keys, ms2, sources2, (112, 112), (14, 14), 5, 0.5)
    assert (a.mask != b.mask).any()


def test_set_truth_same_for_any_thread_count(tmp_path):
    ms, sources, _ = _images(tmp_path, n=200, seed=3)  # >= 64 masks per thread: 3 threads really run
    a = set_truth(ms, sources, (112, 112), (14, 14), 5, threads=1)
    b = set_truth(ms, sources, (112, 112), (14, 14), 5, threads=3)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.pattern, b.pattern)


def test_leaderboard_values_empty_without_outputs_and_percent_with():
    from occbench.bench.occlusion import LEADERBOARD_COLUMNS, leaderboard_values
    from occbench.bench.results import VariantResult

    plain = VariantResult("N-O", {}, {"accuracy": 0.9})
    assert leaderboard_values(plain) == dict.fromkeys(LEADERBOARD_COLUMNS)
    v = VariantResult("N-O", {}, {"accuracy": 0.9})
    v.add_block("occlusion", {"estimate": {"mask": {"iou_occluded": 0.5, "miou": 0.7, "ap": 0.8},
                                           "pattern": {"top1": 0.25, "top5": 0.5, "cell_agreement": 0.75}}})
    vals = leaderboard_values(v)
    assert vals["mask_iou_pct"] == 50.0 and vals["pattern_top1_pct"] == 25.0 and vals["false_occlusion_pct"] is None
    c = VariantResult("clean", {}, {})
    c.add_block("occlusion", {"estimate": {"mask": {"iou_occluded": 0.0}, "false_occlusion": {"pixel_rate": 0.03}}})
    assert leaderboard_values(c)["mask_iou_pct"] is None and leaderboard_values(c)["false_occlusion_pct"] == 3.0


def test_mask_paths_checked_per_folder_and_links_refused(tmp_path):
    """Mask paths are checked like resolve_under (no escape, no linked folder) without a realpath per
    file; a linked mask file is a row without truth, not a read through the link."""
    import cv2

    from occbench.bench.occlusion import MaskPaths
    from occbench.errors import UnsafePathError

    root = tmp_path / "run"
    (root / "masks" / "s2" / "A").mkdir(parents=True)
    cv2.imwrite(str(root / "masks" / "s2" / "A" / "a.png"), np.full((8, 8), 255, np.uint8))
    under = MaskPaths(root)
    good = under("masks/s2/A/a.png")
    assert good == os.path.realpath(root / "masks/s2/A/a.png")
    under("top.png")
    # plain paths skip PurePosixPath (a split), not the checks; unusual spellings are normalised as before
    assert under("masks//s2/A/a.png") == under("./masks/s2/A/./a.png") == good
    for bad in ("/etc/passwd", "masks/../../x.png", "~/x.png", "", "masks/s2/A/..", "masks/s2/A/../../../x.png",
                "/top.png", "/masks/s2/A/a.png", "~top.png"):
        with pytest.raises(UnsafePathError):
            under(bad)
    assert under("masks/s2/A/b.png") == os.path.join(os.path.realpath(root), "masks/s2/A/b.png")
    outside = tmp_path / "outside"
    outside.mkdir()
    cv2.imwrite(str(outside / "b.png"), np.full((8, 8), 255, np.uint8))
    (root / "masks" / "s2" / "L").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        MaskPaths(root)("masks/s2/L/b.png")
    (root / "masks" / "s2" / "A" / "link.png").symlink_to(outside / "b.png")
    t = set_truth(np.tile(np.eye(2, 3), (2, 1, 1)), [good, under("masks/s2/A/link.png")], (112, 112), (14, 14), 5)
    assert t.known.tolist() == [True, False] and t.reasons[1]


def test_mask_paths_resolve_the_root_once(tmp_path, monkeypatch):
    from occbench.bench.occlusion import MaskPaths

    calls = []
    real = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda p, *a, **k: calls.append(p) or real(p, *a, **k))
    under = MaskPaths(tmp_path)
    paths = [under(f"masks/s2/id{i % 7}/img{i}.png") for i in range(200)]
    assert len(calls) == 1 and len(set(paths)) == 200
