"""Occlusion-estimate metrics: predicted masks vs true masks, predicted vs true FROM patterns.

Conventions:

* Masks are (N, h, w): ``true`` bool (True = occluded), ``prob`` float P(occluded) in [0, 1]
  (NaN allowed: an image with any NaN is left out and counted as ``n_nan``). A pixel is predicted
  occluded when ``prob >= threshold`` (default 0.5).
* Pixel counts are pooled over all images of a set ("micro"): IoU of the occluded class =
  TP / (TP + FP + FN) over every pixel, as ``sklearn.metrics.jaccard_score`` on the flattened arrays.
  Per-image IoU (for breakdowns and tertiles) is NaN where an image has neither a true nor a
  predicted occluded pixel.
* Patterns: ``scores`` (N, P) class scores (higher = more likely), ``labels`` (N,) true classes.
  Top-k counts ties against the prediction: the true class is within the top k when fewer than k
  other classes score >= it.
* A metric that cannot be measured is None, with the reason in ``notes``.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

__all__ = ["mask_counts", "per_image_iou", "mask_metrics", "average_precision", "false_occlusion_rate",
           "pattern_ranks", "pattern_topk", "cell_agreement", "confusion_matrix", "most_confused",
           "accuracy_by_quality"]


def _masks(prob, true) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(prob, np.float64)
    t = np.asarray(true)
    if t.dtype != bool:
        t = t.astype(bool)
    if p.ndim == 2:
        p, t = p[None], t[None] if t.ndim == 2 else t
    if p.ndim != 3 or p.shape != t.shape:
        raise ConfigError(f"predicted and true masks must both be (N, h, w) of one shape, got {p.shape} and {t.shape}")
    return p, t


def nan_images(prob) -> np.ndarray:
    """(N,) bool: images whose predicted mask holds any NaN."""
    p = np.asarray(prob, np.float64)
    return np.isnan(p.reshape(len(p), -1)).any(axis=1) if p.size else np.zeros(len(p), bool)


def mask_counts(pred, true) -> np.ndarray:
    """(N, 4) int64 per-image counts [TP, FP, FN, TN] for bool (N, h, w) masks."""
    pred = np.asarray(pred, bool)
    true = np.asarray(true, bool)
    if pred.shape != true.shape or pred.ndim != 3:
        raise ConfigError(f"masks must both be (N, h, w) of one shape, got {pred.shape} and {true.shape}")
    flat_p, flat_t = pred.reshape(len(pred), -1), true.reshape(len(true), -1)
    tp = (flat_p & flat_t).sum(1)
    fp = (flat_p & ~flat_t).sum(1)
    fn = (~flat_p & flat_t).sum(1)
    tn = flat_p.shape[1] - tp - fp - fn
    return np.stack([tp, fp, fn, tn], axis=1).astype(np.int64)


def per_image_iou(pred, true) -> np.ndarray:
    """(N,) IoU of the occluded class per image; NaN where the union is empty."""
    c = mask_counts(pred, true)
    union = c[:, 0] + c[:, 1] + c[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, c[:, 0] / np.maximum(union, 1), np.nan)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def average_precision(y_true, scores) -> float | None:
    """Area under the precision-recall step curve, as ``sklearn.metrics.average_precision_score``:
    sum over distinct score thresholds (high to low) of (R_n - R_(n-1)) * P_n. None without positives."""
    y = np.asarray(y_true, bool).ravel()
    s = np.asarray(scores, np.float64).ravel()
    if y.shape != s.shape:
        raise ConfigError(f"y_true and scores must have one length, got {y.shape} and {s.shape}")
    n_pos = int(y.sum())
    if n_pos == 0:
        return None
    # any order of tied scores gives the same sums (only each distinct score's last index is used)
    order = np.argsort(-s)
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def false_occlusion_rate(prob, threshold: float = 0.5) -> dict:
    """On images with no true occlusion: share of pixels predicted occluded, and share of images with any."""
    p = np.asarray(prob, np.float64)
    bad = nan_images(p)
    p = p[~bad]
    pred = p >= threshold
    return {"pixel_rate": _ratio(pred.sum(), pred.size), "image_rate": _ratio(pred.reshape(len(p), -1).any(1).sum(), len(p)),
            "n_images": int(len(p)), "n_nan": int(bad.sum())}


def mask_metrics(prob, true, threshold: float = 0.5) -> dict:
    """Pooled mask metrics of a set of images (see the module docstring).

    Returns iou_occluded, iou_visible, miou (mean of the two), pixel_accuracy, dice (F1 of the occluded
    class), ap (average precision of the probabilities), true_occluded_share, n_images, n_nan, notes."""
    p, t = _masks(prob, true)
    bad = nan_images(p)
    p, t = p[~bad], t[~bad]
    notes = []
    if bad.any():
        notes.append(f"{int(bad.sum())} image(s) with NaN in the predicted mask are left out")
    pred = p >= threshold
    tp, fp, fn, tn = (int(v) for v in mask_counts(pred, t).sum(0)) if len(p) else (0, 0, 0, 0)
    iou_occ = _ratio(tp, tp + fp + fn)
    iou_vis = _ratio(tn, tn + fn + fp)
    if iou_occ is None and len(p):
        notes.append("no occluded pixel in truth or prediction: occluded-class IoU undefined")
    ap = average_precision(t, p) if len(p) else None
    if ap is None and len(p):
        notes.append("no occluded pixel in the truth: AP undefined")
    return {
        "iou_occluded": iou_occ, "iou_visible": iou_vis,
        "miou": None if iou_occ is None or iou_vis is None else (iou_occ + iou_vis) / 2,
        "pixel_accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "ap": ap,
        "true_occluded_share": _ratio(tp + fn, tp + fp + fn + tn),
        "predicted_occluded_share": _ratio(tp + fp, tp + fp + fn + tn),
        "n_images": int(len(p)), "n_nan": int(bad.sum()), "threshold": float(threshold), "notes": notes,
    }


# --------------------------------------------------------------------------------------- patterns


def _scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, np.int64)
    if s.ndim != 2 or y.shape != (len(s),):
        raise ConfigError(f"pattern scores must be (N, P) and labels (N,), got {s.shape} and {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= s.shape[1]):
        raise ConfigError(f"pattern labels must lie in [0, {s.shape[1]}), got {y.min()}..{y.max()}")
    return s, y


def pattern_ranks(scores, labels) -> np.ndarray:
    """(N,) rank of the true class: 1 + number of other classes scoring >= it (ties count against)."""
    s, y = _scores_labels(scores, labels)
    true = s[np.arange(len(y)), y]
    return (s >= true[:, None]).sum(1)  # includes the true class itself


def pattern_topk(scores, labels, ks=(1, 5)) -> dict[str, float | None]:
    """{"top1": ..., "top5": ...}: share of images whose true pattern ranks within k (NaN rows left out)."""
    s, y = _scores_labels(scores, labels)
    ok = np.isfinite(s).all(1)
    r = pattern_ranks(s[ok], y[ok])
    return {f"top{k}": _ratio((r <= k).sum(), len(r)) for k in ks}


def _cell_sets(labels, k: int) -> np.ndarray:
    from ..synth.patterns import enumerate_patterns

    rects = enumerate_patterns(k)[np.asarray(labels, np.int64)]
    yy = np.arange(k)[None, :, None]
    xx = np.arange(k)[None, None, :]
    r = rects[:, :, None, None]
    return (yy >= r[:, 0]) & (yy < r[:, 2]) & (xx >= r[:, 1]) & (xx < r[:, 3])


def cell_agreement(pred_labels, true_labels, k: int) -> np.ndarray:
    """(N,) share of the K x K cells on which the predicted and true pattern rectangles agree
    (both cover the cell, or both leave it free); pattern 0 (clean) covers no cell."""
    a, b = _cell_sets(pred_labels, k), _cell_sets(true_labels, k)
    return (a == b).reshape(len(a), -1).mean(1)


def confusion_matrix(true_labels, pred_labels, n_classes: int) -> np.ndarray:
    """(P, P) counts, rows = true class, columns = predicted (as sklearn's confusion_matrix)."""
    t = np.asarray(true_labels, np.int64)
    p = np.asarray(pred_labels, np.int64)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def most_confused(true_labels, pred_labels, n_classes: int, top: int = 10) -> list[dict]:
    """The ``top`` most frequent (true, predicted) pairs with true != predicted, count-descending
    (ties: lower true class, then lower predicted class first)."""
    cm = confusion_matrix(true_labels, pred_labels, n_classes)
    np.fill_diagonal(cm, 0)
    flat = cm.ravel()
    order = np.lexsort((np.arange(flat.size), -flat))
    out = []
    for i in order[:top]:
        if flat[i] == 0:
            break
        out.append({"true": int(i // n_classes), "pred": int(i % n_classes), "count": int(flat[i])})
    return out


# --------------------------------------------------------------------------------------- link to recognition


def accuracy_by_quality(correct, quality, groups: int = 3) -> list[dict]:
    """Verification accuracy split by occlusion-estimate quality.

    ``correct``: (n,) 1/0 per pair (NaN = not scored); ``quality``: (n,) e.g. per-image mask IoU (NaN =
    unknown). Pairs with both finite are sorted by quality and cut into ``groups`` near-equal groups
    (tertiles for 3); each gets its quality range, pair count and accuracy."""
    c = np.asarray(correct, np.float64)
    q = np.asarray(quality, np.float64)
    ok = np.isfinite(c) & np.isfinite(q)
    c, q = c[ok], q[ok]
    order = np.argsort(q, kind="stable")
    out = []
    for g, idx in enumerate(np.array_split(order, groups)):
        if idx.size == 0:
            continue
        out.append({"group": g + 1, "quality_min": float(q[idx].min()), "quality_max": float(q[idx].max()),
                    "n_pairs": int(idx.size), "accuracy": float(c[idx].mean())})
    return out
