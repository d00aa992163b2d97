"""Per-variant metrics from scores, on top of ``occbench.metrics`` (pure functions).

Verification: k-fold accuracy (leave-one-fold-out thresholds), AUC, EER, strict TAR@FAR; per-pair
correctness under the fold thresholds (for the occluded-area and K x K cell analyses).
Identification: rank-k / CMC (ties against the probe) and open-set TPIR@FPIR from a top-k search.
A metric that cannot be computed on the data (e.g. only one class left) is None, with the reason in
``notes``; it never aborts the run.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from ..errors import ConfigError
from ..metrics.names import far_key

AREA_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0)
CELL_COVERED = 0.5  # a cell counts as covered when at least this fraction of it is occluded


def top_reasons(reasons: list[str], n: int = 10) -> dict[str, int]:
    """The ``n`` most frequent non-empty reasons with their counts (ties by text)."""
    c = Counter(r for r in reasons if r)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:n])


def _try(notes: list, name: str, fn):
    try:
        return fn()
    except ConfigError as e:
        notes.append(f"{name}: {e}")
        return None


def verification_metrics(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray, far_targets,
                         floor: float | None = None) -> dict:
    """{metrics, thresholds, operating_points, notes, correct} for pairs with finite scores.

    ``floor``: scores <= floor are failures to enrol (scored at the lowest possible value); the k-fold
    thresholds never accept them. An operating point the impostor count cannot reach (FAR target
    below 1 / #impostors) is None in ``metrics``; its FAR = 0 point stays in ``operating_points``
    with ``reachable: false``."""
    from ..metrics import eer, kfold_accuracy, roc_auc, tar_at_far

    notes: list[str] = []
    metrics: dict = {}
    out = {"metrics": metrics, "notes": notes, "correct": None, "thresholds": None, "operating_points": {}}
    if scores.size == 0:
        notes.append("no scored pairs")
        for k in ("accuracy", "accuracy_std", "auc", "eer"):
            metrics[k] = None
        for f in far_targets:
            metrics[far_key("tar_at_far", f)] = None
        return out
    kf = _try(notes, "accuracy", lambda: kfold_accuracy(scores, labels, folds=folds, floor=floor))
    metrics["accuracy"] = kf.accuracy if kf else None
    metrics["accuracy_std"] = kf.accuracy_std if kf else None
    metrics["auc"] = _try(notes, "auc", lambda: roc_auc(scores, labels))
    metrics["eer"] = _try(notes, "eer", lambda: eer(scores, labels))
    n_neg = int((~labels).sum())
    for f in far_targets:
        key = far_key("tar_at_far", f)
        op = _try(notes, key, lambda f=f: tar_at_far(scores, labels, f))
        metrics[key] = op.tar if op is not None and op.reachable else None
        if op is not None:
            out["operating_points"][key] = {"tar": op.tar, "far": op.far, "threshold": op.threshold,
                                            "reachable": op.reachable}
            if not op.reachable:
                out["operating_points"][key]["needs_impostors"] = int(np.ceil(1.0 / f - 1e-9))
                notes.append(f"{key}: only {n_neg} impostor pairs, so FAR {f:g} cannot be measured "
                             f"(needs ≥ {int(np.ceil(1.0 / f - 1e-9)):,}); the FAR = 0 point is in "
                             "operating_points")
    if kf is not None:
        th = dict(zip(kf.fold_ids, kf.thresholds))
        t = np.array([th[f] for f in folds], np.float64)
        out["correct"] = (scores >= t) == labels
        out["thresholds"] = {"per_fold": {str(k): v for k, v in th.items()},
                             "fold_accuracies": {str(k): a for k, a in zip(kf.fold_ids, kf.fold_accuracies)},
                             "fold_sizes": {str(k): n for k, n in zip(kf.fold_ids, kf.fold_sizes)},
                             "rule": "accept when score >= threshold; each fold's threshold maximises accuracy "
                                     "on the other folds"}
    return out


def area_breakdown(area: np.ndarray, correct: np.ndarray, clean_correct: np.ndarray | None) -> dict:
    """Accuracy per occluded-area bin. Arrays run over all pairs of the task; ``correct`` /
    ``clean_correct`` are 1.0 / 0.0 per pair, NaN where the pair was not scored (left out)."""
    edges = np.asarray(AREA_BINS)
    rows = []
    ok = np.isfinite(area) & np.isfinite(correct)
    for lo, hi in zip(edges[:-1], edges[1:]):
        last = hi == edges[-1]
        m = ok & (area >= lo) & ((area <= hi) if last else (area < hi))
        n = int(m.sum())
        row = {"lo": float(lo), "hi": float(hi), "n": n, "accuracy": float(correct[m].mean()) if n else None}
        if clean_correct is not None:
            both = m & np.isfinite(clean_correct)
            row["clean_accuracy"] = float(clean_correct[both].mean()) if both.any() else None
            row["n_clean"] = int(both.sum())
        rows.append(row)
    return {"bins": rows, "mean_area_frac": float(area[ok].mean()) if ok.any() else None,
            "what": "accuracy of pairs grouped by the occluded fraction of the face frame "
                    "(N-O: the occluded image; O-O: the mean of both), with clean accuracy on the same pairs"}


def cell_drop(cells: np.ndarray, correct: np.ndarray, clean_correct: np.ndarray, k: int) -> dict:
    """K x K accuracy drop: for each cell, accuracy on pairs whose occluded image covers the cell
    (fraction >= 0.5) minus clean accuracy on the same pairs (pairs scored in both). None where no
    pair covers the cell. ``cells`` is (n_pairs, K*K); correctness arrays as in :func:`area_breakdown`."""
    drop = np.full(k * k, np.nan)
    acc = np.full(k * k, np.nan)
    n = np.zeros(k * k, np.int64)
    scored = np.isfinite(correct) & np.isfinite(clean_correct)
    for c in range(k * k):
        m = scored & np.isfinite(cells[:, c]) & (cells[:, c] >= CELL_COVERED)
        n[c] = int(m.sum())
        if n[c]:
            acc[c] = correct[m].mean()
            drop[c] = acc[c] - clean_correct[m].mean()

    def grid(a):
        return [[None if not np.isfinite(v) else float(v) for v in row] for row in a.reshape(k, k)]

    return {"k": k, "covered_if": CELL_COVERED, "drop": grid(drop), "accuracy": grid(acc),
            "n": n.reshape(k, k).tolist(),
            "what": "per face-frame cell (row-major, 112x112 ArcFace frame): accuracy on pairs whose occluded image "
                    "covers the cell minus clean accuracy on the same pairs (O-O: either image covers it)"}


def identification_metrics(probe_emb: np.ndarray, probe_labels: np.ndarray, gallery_emb: np.ndarray,
                           gallery_labels: np.ndarray, max_rank: int, fpir_targets, device: str = "cpu",
                           search=None) -> dict:
    """{metrics, cmc, topk (scores, indices), mate (ranks, scores), notes}. ``search(probes, gallery, k)
    -> TopK`` replaces the exact torch search (``--search``, distractors; see bench.identify)."""
    from ..metrics import cmc, mate_ranks, topk_search, tpir_at_fpir

    notes: list[str] = []
    metrics: dict = {"rank1": None, "rank5": None}
    for f in fpir_targets:
        metrics[far_key("tpir_at_fpir", f)] = None
    out = {"metrics": metrics, "cmc": None, "topk": None, "mate": None, "notes": notes, "operating_points": {}}
    if len(probe_emb) == 0 or len(gallery_emb) == 0:
        notes.append("no probes or no gallery left after failures")
        return out
    n_g = len(gallery_emb)
    k = min(max_rank + 1, n_g)
    top = topk_search(probe_emb, gallery_emb, k=k, device=device) if search is None else \
        search(probe_emb, gallery_emb, k)
    out["topk"] = top
    m = mate_ranks(top.scores, top.indices, probe_labels, gallery_labels)
    out["mate"] = m
    if m.has_mate.any():
        res = _try(notes, "cmc", lambda: cmc(top.scores, top.indices, probe_labels, gallery_labels))
        if res is not None:
            out["cmc"] = list(res.curve)
            metrics["rank1"] = res.rate(1)
            metrics["rank5"] = res.rate(5) if res.max_rank >= 5 else None
            if res.max_rank < 5:
                notes.append(f"rank5: the gallery has only {n_g} entries")
            if res.n_uncertain:
                notes.append(f"{res.n_uncertain} mated probes tie with the last listed score; counted as misses")
    else:
        notes.append("no mated probes: rank-k and CMC are undefined")
    for f in fpir_targets:
        key = far_key("tpir_at_fpir", f)
        if not m.has_mate.any() or m.has_mate.all():
            notes.append(f"{key}: needs both mated and non-mated probes")
            continue
        op = _try(notes, key, lambda f=f: tpir_at_fpir(top.scores, top.indices, probe_labels, gallery_labels, f))
        _open_set_point(metrics, out["operating_points"], notes, key, f, op)
    return out


def _open_set_point(metrics: dict, ops: dict, notes: list, key: str, f: float, op) -> None:
    """Record a TPIR@FPIR point: the metric is None when the non-mated count cannot reach ``f``."""
    if op is None:
        return
    metrics[key] = op.tpir if op.reachable else None
    ops[key] = {"tpir": op.tpir, "fpir": op.fpir, "threshold": op.threshold, "reachable": op.reachable}
    if not op.reachable:
        need = int(np.ceil(1.0 / f - 1e-9))
        ops[key]["needs_nonmated"] = need
        notes.append(f"{key}: only {op.n_nonmated} non-mated probes, so FPIR {f:g} cannot be measured "
                     f"(needs ≥ {need:,}); the FPIR = 0 point is in operating_points")


# ----------------------------------------------------------------------------------- failure to enrol


def fte_score(scores: np.ndarray) -> float:
    """The score given to a failure to enrol: below every real score (cosine similarity >= -1, so
    -2.0 unless a model's unnormalised scores go lower). Finite, so every metric takes it as is."""
    finite = np.asarray(scores, np.float64)
    finite = finite[np.isfinite(finite)]
    return float(min(-1.0, finite.min() if finite.size else -1.0) - 1.0)


def identification_metrics_fte(m_enrolled: dict, probe_ok: np.ndarray, mated: np.ndarray, n_gallery: int,
                               max_rank: int, fpir_targets) -> dict:
    """1:N metrics over ALL probes under the failure-to-enrol rule, from the search of the enrolled
    probes (``m_enrolled``: :func:`identification_metrics` on the probes where ``probe_ok``).

    ``mated``: the probe's identity was meant to be in the gallery (the protocol's gallery), whether
    or not its gallery image enrolled. A mated probe that failed to enrol, or whose identity has no
    enrolled gallery image, is a miss at every rank. A non-mated probe that failed to enrol scores the
    lowest possible top-1 score (it never raises a false positive). Ranks and CMC are certified as in
    :func:`identification_metrics` (ties against the probe)."""
    from ..metrics import cmc_from_ranks, tpir_at_fpir_from_scores

    notes: list[str] = []
    metrics: dict = {"rank1": None, "rank5": None}
    for f in fpir_targets:
        metrics[far_key("tpir_at_fpir", f)] = None
    out = {"metrics": metrics, "cmc": None, "notes": notes, "operating_points": {}}
    n = len(probe_ok)
    ranks = np.full(n, np.inf)
    mate_scores = np.full(n, np.nan)
    top1 = np.full(n, np.nan)
    idx = np.flatnonzero(probe_ok)
    top, mr = m_enrolled.get("topk"), m_enrolled.get("mate")
    n_uncertain = 0
    if top is not None and mr is not None and idx.size:
        r = np.where(np.isnan(mr.ranks), np.inf, mr.ranks)  # identity without an enrolled gallery image: miss
        ranks[idx], mate_scores[idx] = r, mr.mate_scores
        top1[idx] = np.asarray(top.scores, np.float64)[:, 0]
        n_uncertain = int((mr.uncertain & mr.has_mate).sum())
    top1[~np.isfinite(top1)] = np.nan
    top1 = np.where(np.isnan(top1), fte_score(top1), top1)
    if not mated.any():
        notes.append("no mated probes: rank-k and CMC are undefined")
    else:
        k = min(max_rank + 1, n_gallery)
        certified = k if n_gallery <= k else k - 1
        if certified >= 1:
            curve = cmc_from_ranks(ranks[mated], certified)
            out["cmc"] = [float(c) for c in curve]
            metrics["rank1"] = float(curve[0])
            metrics["rank5"] = float(curve[4]) if certified >= 5 else None
            if certified < 5:
                notes.append(f"rank5: the gallery has only {n_gallery} enrolled entries")
        else:
            metrics["rank1"] = 0.0 if n_gallery == 0 else None
            out["cmc"] = [0.0] if n_gallery == 0 else None
            notes.append("no enrolled gallery image: every mated probe is a miss")
        if n_uncertain:
            notes.append(f"{n_uncertain} mated probes tie with the last listed score; counted as misses")
    for f in fpir_targets:
        key = far_key("tpir_at_fpir", f)
        if not mated.any() or mated.all():
            notes.append(f"{key}: needs both mated and non-mated probes")
            continue
        op = _try(notes, key, lambda f=f: tpir_at_fpir_from_scores(ranks[mated], mate_scores[mated], top1[~mated],
                                                                   f, 1, n_uncertain=n_uncertain))
        _open_set_point(metrics, out["operating_points"], notes, key, f, op)
    return out
