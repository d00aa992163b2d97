"""Occlusion-estimate metrics against scikit-learn and hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest

sk = pytest.importorskip("sklearn.metrics")

from occbench.errors import ConfigError
from occbench.metrics.occlusion import (accuracy_by_quality, average_precision, cell_agreement, confusion_matrix,
                                        false_occlusion_rate, mask_metrics, most_confused, pattern_ranks,
                                        pattern_topk, per_image_iou)
from occbench.synth.patterns import enumerate_patterns, n_patterns


def _random_masks(seed=0, n=20, h=7, w=6):
    rng = np.random.default_rng(seed)
    true = rng.random((n, h, w)) < 0.3
    prob = np.clip(true * 0.6 + rng.random((n, h, w)) * 0.5, 0, 1)
    prob = np.round(prob, 2)  # ties in the scores exercise AP's distinct thresholds
    return prob, true


@pytest.mark.parametrize("seed", range(4))
def test_mask_metrics_match_sklearn(seed):
    prob, true = _random_masks(seed)
    m = mask_metrics(prob, true, threshold=0.5)
    y, pred = true.ravel(), (prob >= 0.5).ravel()
    assert m["iou_occluded"] == pytest.approx(sk.jaccard_score(y, pred))
    assert m["miou"] == pytest.approx(sk.jaccard_score(y, pred, average="macro"))
    assert m["iou_visible"] == pytest.approx(sk.jaccard_score(~y, ~pred))
    assert m["pixel_accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert m["dice"] == pytest.approx(sk.f1_score(y, pred))
    assert m["ap"] == pytest.approx(sk.average_precision_score(y, prob.ravel()))
    tn, fp, fn, tp = sk.confusion_matrix(y, pred, labels=[False, True]).ravel()
    assert m["true_occluded_share"] == pytest.approx((tp + fn) / y.size)


def test_average_precision_hand_cases():
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([1, 1], [0.5, 0.5]) == 1.0
    assert average_precision([0, 1], [0.5, 0.5]) == 0.5  # one threshold, precision 1/2 at recall 1
    assert average_precision([0, 0], [0.1, 0.2]) is None


def test_per_image_iou_and_perfect_and_blind_bounds():
    true = np.zeros((3, 4, 4), bool)
    true[0, :2] = True
    true[1, 1:3, 1:3] = True
    iou = per_image_iou(true, true)
    assert iou[0] == 1 and iou[1] == 1 and np.isnan(iou[2])  # image 2: nothing anywhere
    perfect = mask_metrics(true.astype(float), true)
    assert perfect["iou_occluded"] == 1 and perfect["pixel_accuracy"] == 1 and perfect["ap"] == 1
    blind = mask_metrics(np.zeros(true.shape), true)
    assert blind["iou_occluded"] == 0 and blind["dice"] == 0
    assert blind["pixel_accuracy"] == pytest.approx(1 - true.mean())
    empty = mask_metrics(np.zeros((2, 3, 3)), np.zeros((2, 3, 3), bool))
    assert empty["iou_occluded"] is None and empty["ap"] is None and empty["notes"]


def test_nan_masks_are_counted_not_averaged():
    prob, true = _random_masks(1, n=6)
    with_nan = prob.copy()
    with_nan[2, 0, 0] = np.nan
    with_nan[4] = np.nan
    m = mask_metrics(with_nan, true)
    ref = mask_metrics(np.delete(prob, [2, 4], 0), np.delete(true, [2, 4], 0))
    assert m["n_nan"] == 2 and m["n_images"] == 4
    assert m["iou_occluded"] == ref["iou_occluded"] and m["ap"] == ref["ap"]
    assert any("NaN" in n for n in m["notes"])
    f = false_occlusion_rate(with_nan)
    assert f["n_nan"] == 2 and f["n_images"] == 4


def test_false_occlusion_rate():
    prob = np.zeros((4, 2, 2))
    prob[0, 0, 0] = 0.9
    prob[1] = 0.7
    f = false_occlusion_rate(prob)
    assert f["pixel_rate"] == pytest.approx(5 / 16) and f["image_rate"] == pytest.approx(2 / 4)


def test_pattern_topk_matches_sklearn_and_counts_ties_against():
    rng = np.random.default_rng(0)
    p = n_patterns(3)
    scores = rng.random((50, p))
    labels = rng.integers(0, p, 50)
    labels[:10] = scores[:10].argmax(1)
    t = pattern_topk(scores, labels, ks=(1, 5))
    assert t["top1"] == pytest.approx(sk.top_k_accuracy_score(labels, scores, k=1, labels=np.arange(p)))
    assert t["top5"] == pytest.approx(sk.top_k_accuracy_score(labels, scores, k=5, labels=np.arange(p)))
    cm = confusion_matrix(labels, scores.argmax(1), p)
    assert t["top1"] == pytest.approx(np.trace(cm) / 50)
    np.testing.assert_array_equal(cm, sk.confusion_matrix(labels, scores.argmax(1), labels=np.arange(p)))
    # ties: a blind one-hot on class 0 ranks every other true class behind all its tied peers
    blind = np.zeros((3, p))
    blind[:, 0] = 1
    r = pattern_ranks(blind, np.array([0, 5, 7]))
    assert r.tolist() == [1, p, p]
    assert pattern_topk(blind, np.array([0, 5, 7]))["top5"] == pytest.approx(1 / 3)


def test_cell_agreement_hand_cases():
    k = 2
    pats = enumerate_patterns(k)  # [y0, x0, y1, x1] cell units; 0 = clean
    full = int(np.flatnonzero((pats == [0, 0, 2, 2]).all(1))[0])
    top = int(np.flatnonzero((pats == [0, 0, 1, 2]).all(1))[0])
    agree = cell_agreement(np.array([full, top, 0, 0]), np.array([full, full, full, 0]), k)
    assert agree.tolist() == [1.0, 0.5, 0.0, 1.0]


def test_most_confused_pairs():
    true = np.array([1, 1, 1, 2, 2, 0, 3])
    pred = np.array([2, 2, 1, 1, 0, 0, 1])
    top = most_confused(true, pred, 4, top=3)
    assert top == [{"true": 1, "pred": 2, "count": 2}, {"true": 2, "pred": 0, "count": 1},
                   {"true": 2, "pred": 1, "count": 1}]


def test_accuracy_by_quality_tertiles():
    correct = np.array([1, 1, 1, 0, 0, 0, 1, np.nan, 1])
    quality = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3, np.nan, 0.5, 0.5])
    g = accuracy_by_quality(correct, quality)
    assert [x["n_pairs"] for x in g] == [3, 2, 2]
    assert g[0]["accuracy"] == 0 and g[2]["accuracy"] == 1
    assert g[0]["quality_max"] <= g[1]["quality_min"]


def test_bad_shapes_raise():
    with pytest.raises(ConfigError):
        mask_metrics(np.zeros((2, 3, 3)), np.zeros((2, 3, 4), bool))
    with pytest.raises(ConfigError):
        pattern_topk(np.zeros((2, 5)), np.array([0, 9]))


def test_average_precision_does_not_depend_on_the_order_of_tied_scores():
    """The sort of the scores need not be stable: only each distinct score's last index is used, so
    shuffled ties give the same value, bit for bit, and sklearn's."""
    rng = np.random.default_rng(3)
    s = rng.integers(0, 20, 5000) / 19.0  # many ties
    y = rng.random(5000) < s
    ref = average_precision(y, s)
    perm = rng.permutation(5000)
    assert average_precision(y[perm], s[perm]) == ref
    assert ref == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)
