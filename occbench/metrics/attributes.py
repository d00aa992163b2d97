"""Face-attribute metrics under occlusion: pure functions on labels (N x A: 1, 0, -1 = unknown) and scores.

Per attribute, over the images whose label is known: accuracy and balanced accuracy of ``score >=
threshold`` (logits: threshold 0), and average precision of the raw scores; then their means over the
attributes where each is defined. Undefined values are ``None``, never a made-up number: no known label
-> accuracy None; one class only -> balanced accuracy None; no positive -> AP None.

Equal to scikit-learn's ``accuracy_score``, ``balanced_accuracy_score`` and ``average_precision_score``
on the same rows (tests/test_attributes.py).
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

METRICS = ("accuracy", "balanced_accuracy", "ap")


def _check(labels, scores, names=None) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, np.float64)
    if y.ndim == 1:
        y, s = y[:, None], s.reshape(-1, 1)
    if y.ndim != 2 or s.shape != y.shape:
        raise ConfigError(f"labels {y.shape} and scores {s.shape} must both be N x A")
    if names is not None and len(names) != y.shape[1]:
        raise ConfigError(f"{len(names)} attribute names for {y.shape[1]} columns")
    if not np.isin(y, (-1, 0, 1)).all():
        raise ConfigError("labels must be 1, 0 or -1 (unknown)")
    if not np.isfinite(s).all():
        raise ConfigError("scores must be finite")
    return y.astype(np.int8), s


def average_precision(y_true, scores) -> float | None:
    """AP = sum_n (R_n - R_{n-1}) P_n over descending distinct thresholds (sklearn's definition).

    None when there is no positive (AP undefined)."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, np.float64).ravel()
    if not y.any():
        return None
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _one(y: np.ndarray, s: np.ndarray, threshold: float) -> dict:
    known = y >= 0
    y, s = y[known], s[known]
    n, n_pos = int(y.size), int(y.sum())
    out = {"n": n, "n_pos": n_pos, "accuracy": None, "balanced_accuracy": None, "ap": None}
    if n == 0:
        return out
    pred = s >= threshold
    out["accuracy"] = float(np.mean(pred == (y == 1)))
    if 0 < n_pos < n:
        tpr = float(np.mean(pred[y == 1]))
        tnr = float(np.mean(~pred[y == 0]))
        out["balanced_accuracy"] = (tpr + tnr) / 2.0
    out["ap"] = average_precision(y, s)
    return out


def _means(per: dict) -> dict:
    out = {}
    for m in METRICS:
        vals = [v[m] for v in per.values() if v[m] is not None]
        out[m] = float(np.mean(vals)) if vals else None
        out[f"{m}_n_attributes"] = len(vals)
    return out


def attribute_metrics(labels, scores, names: list[str], threshold: float = 0.0) -> dict:
    """{"per_attribute": {name: {n, n_pos, accuracy, balanced_accuracy, ap}}, "mean": {...}}."""
    y, s = _check(labels, scores, names)
    per = {n: _one(y[:, j], s[:, j], threshold) for j, n in enumerate(names)}
    return {"per_attribute": per, "mean": _means(per), "threshold": float(threshold), "n_images": int(y.shape[0])}


def compare_variants(results: dict[str, dict], reference: str = "clean") -> dict[str, dict]:
    """Per variant and attribute: metric(variant) - metric(reference), in the metrics' units (None when
    either side is undefined). ``results`` maps variant name -> :func:`attribute_metrics` output."""
    if reference not in results:
        raise ConfigError(f"no reference variant {reference!r} among {', '.join(results)}")
    ref = results[reference]
    out = {}
    for v, res in results.items():
        if v == reference:
            continue
        per = {}
        for a, m in res["per_attribute"].items():
            r = ref["per_attribute"].get(a)
            per[a] = {k: (None if r is None or m[k] is None or r[k] is None else m[k] - r[k]) for k in METRICS}
        means = {k: (None if res["mean"][k] is None or ref["mean"][k] is None else res["mean"][k] - ref["mean"][k])
                 for k in METRICS}
        out[v] = {"per_attribute": per, "mean": means}
    return out


def metrics_by_part(labels, scores, names: list[str], covered: dict[str, np.ndarray],
                    threshold: float = 0.0) -> dict[str, dict]:
    """Which covered part kills which attribute: for every part, the metrics on the images where that part
    is covered and where it is not. ``covered`` maps part -> (N,) array of True / False / None (None or
    NaN: unmeasurable, e.g. no part map; left out of both sides)."""
    y, s = _check(labels, scores, names)
    out = {}
    for part, cov in covered.items():
        c = np.asarray(cov, dtype=object).ravel()
        if c.size != y.shape[0]:
            raise ConfigError(f"covered[{part!r}] has {c.size} entries for {y.shape[0]} images")
        known = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) for v in c])
        is_cov = np.array([bool(v) if k else False for v, k in zip(c, known)])
        out[part] = {"n_covered": int(is_cov.sum()), "n_uncovered": int((known & ~is_cov).sum()),
                     "covered": attribute_metrics(y[is_cov], s[is_cov], names, threshold),
                     "uncovered": attribute_metrics(y[known & ~is_cov], s[known & ~is_cov], names, threshold)}
    return out


def flat_table(results: dict[str, dict]) -> list[dict]:
    """Rows (variant, attribute, n, n_pos, accuracy_pct, balanced_accuracy_pct, ap_pct) for CSV/markdown;
    None stays None (write it as n/a)."""
    rows = []
    for v, res in results.items():
        for a, m in list(res["per_attribute"].items()) + [("mean", {**res["mean"], "n": None, "n_pos": None})]:
            rows.append({"variant": v, "attribute": a, "n": m.get("n"), "n_pos": m.get("n_pos"),
                         **{f"{k}_pct": (None if m[k] is None else 100.0 * m[k]) for k in METRICS}})
    return rows
