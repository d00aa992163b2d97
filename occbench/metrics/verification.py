"""1:1 verification metrics: LFW-style k-fold accuracy, ROC / AUC / EER and strict TAR@FAR.

Conventions (every function here):

* ``scores``: 1-D similarity scores, higher = more similar, finite (NaN / inf raise ``ConfigError``).
* ``labels``: 1-D, same length, bool or 0/1: 1 = genuine ("same") pair, 0 = impostor ("different").
* A pair is *accepted* (predicted "same") when ``score >= threshold``.
* FAR(t) = #{impostors with score >= t} / #impostors, TAR(t) = #{genuines with score >= t} / #genuines.

All functions are pure and vectorised (one sort of the scores each).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

from ..errors import ConfigError

__all__ = [
    "KFoldResult",
    "TarAtFar",
    "kfold_accuracy",
    "best_accuracy_threshold",
    "roc_curve",
    "roc_auc",
    "eer",
    "tar_at_far",
    "strict_operating_point",
]


def _check_scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or y.ndim != 1 or s.shape != y.shape:
        raise ConfigError(
            f"scores and labels must be 1-D arrays of equal length, got shapes {s.shape} and {y.shape}")
    if s.size == 0:
        raise ConfigError("scores is empty: need at least one scored pair")
    if not np.all(np.isfinite(s)):
        bad = int(np.flatnonzero(~np.isfinite(s))[0])
        raise ConfigError(f"scores must be finite; scores[{bad}] = {s[bad]} (drop or re-embed that pair)")
    if y.dtype != bool:
        if not (np.issubdtype(y.dtype, np.number) and np.all((y == 0) | (y == 1))):
            vals = np.unique(y)[:5].tolist()
            raise ConfigError(f"labels must be bool or 0/1 (1 = genuine/same pair), got values like {vals}")
        y = y == 1
    return s, y


def _need_both_classes(y: np.ndarray, what: str) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        only = "genuine" if n_pos else "impostor"
        raise ConfigError(f"{what} needs both genuine and impostor pairs; got only {y.size} {only} pairs")


# --------------------------------------------------------------------------- k-fold accuracy


def best_accuracy_threshold(scores, labels, floor: float | None = None) -> tuple[float, float]:
    """Threshold maximising accuracy of ``score >= t`` on (scores, labels); returns (t, accuracy).

    Candidates: ``-inf``, the midpoints between consecutive sorted unique scores, ``+inf``
    (so every distinct split of the sorted scores is tried once). accuracy(t) =
    (#genuine with s >= t + #impostor with s < t) / n.
    Ties between candidates: the **lowest** threshold wins (first maximum in ascending order,
    as ``np.argmax`` over an ascending grid in insightface / facenet).
    A midpoint that rounds onto the lower score (adjacent floats) is replaced by the upper score,
    so the candidate always separates the two values.
    ``floor``: scores <= floor are never accepted (failures to enrol, scored at the lowest possible
    value): only candidates that reject every such score are tried (``-inf`` is then never chosen).

    >>> best_accuracy_threshold([0.1, 0.4, 0.6, 0.9], [0, 0, 1, 1])
    (0.5, 1.0)
    >>> best_accuracy_threshold([-2.0, 0.4, 0.6], [1, 1, 1], floor=-2.0)
    (-0.8, 0.6666666666666666)
    """
    s, y = _check_scores_labels(scores, labels)
    u, inv = np.unique(s, return_inverse=True)  # ascending unique values
    pos = np.bincount(inv, weights=y, minlength=u.size)
    neg = np.bincount(inv, weights=~y, minlength=u.size)
    # candidate j accepts unique values with index >= j (j = 0..m): c_0=-inf, c_j=mid(u[j-1],u[j]), c_m=+inf
    tp = pos.sum() - np.concatenate([[0.0], np.cumsum(pos)])
    tn = np.concatenate([[0.0], np.cumsum(neg)])
    acc = (tp + tn) / s.size
    j0 = 0 if floor is None else int(np.searchsorted(u, floor, side="right"))  # first candidate above floor
    j = j0 + int(np.argmax(acc[j0:]))
    return float(_candidate(u, j)), float(acc[j])


def _candidate(u: np.ndarray, j: int) -> float:
    if j == 0:
        return -np.inf
    if j == u.size:
        return np.inf
    mid = u[j - 1] + (u[j] - u[j - 1]) / 2.0
    return float(mid) if mid > u[j - 1] else float(u[j])


@dataclass(frozen=True)
class KFoldResult:
    """Result of :func:`kfold_accuracy`.

    accuracy: unweighted mean of the per-fold held-out accuracies.
    accuracy_std: standard deviation of the per-fold accuracies with ``ddof`` (0 = population std,
    the LFW / insightface / facenet convention).
    """

    accuracy: float
    accuracy_std: float
    ddof: int
    fold_ids: tuple
    fold_sizes: tuple[int, ...]
    fold_accuracies: tuple[float, ...]
    thresholds: tuple[float, ...]

    @property
    def n_folds(self) -> int:
        return len(self.fold_ids)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fold_ids"] = [x.item() if hasattr(x, "item") else x for x in self.fold_ids]
        d["n_folds"] = self.n_folds
        return d


def kfold_accuracy(scores, labels, n_folds: int = 10, folds=None, ddof: int = 0,
                   floor: float | None = None) -> KFoldResult:
    """LFW-style k-fold verification accuracy.

    For each test fold f: t_f = :func:`best_accuracy_threshold` on all pairs *not* in f;
    acc_f = mean over pairs in f of [(s >= t_f) == label].
    accuracy = mean_f acc_f;  accuracy_std = sqrt(sum_f (acc_f - accuracy)^2 / (F - ddof)),
    ``ddof=0`` by default (population std, as insightface and facenet report on LFW).

    Folds: by default ``n_folds`` contiguous folds in the given (protocol) order, split as
    ``np.array_split`` does (the first ``n % n_folds`` folds hold one pair more).
    ``folds`` (one fold id per pair, e.g. LFW's 5 published folds) overrides ``n_folds``: the folds
    are the distinct ids present, in sorted order, each left out once.

    ``floor`` (see :func:`best_accuracy_threshold`): scores <= floor are never accepted, so pairs
    with a failure to enrol are always decided "different".

    Empty folds are refused, never skipped: ``n_folds > len(scores)`` (which would create empty
    folds) raises ``ConfigError``, as does fewer than 2 folds. With explicit ``folds`` a fold is
    defined by the ids present, so it cannot be empty.

    >>> r = kfold_accuracy([0.1, 0.9, 0.2, 0.8], [0, 1, 0, 1], n_folds=2)
    >>> r.accuracy, r.thresholds
    (1.0, (0.5, 0.5))
    """
    s, y = _check_scores_labels(scores, labels)
    n = s.size
    if folds is None:
        n_folds = int(n_folds)
        if n_folds < 2:
            raise ConfigError(f"n_folds must be >= 2, got {n_folds}")
        if n_folds > n:
            raise ConfigError(
                f"n_folds={n_folds} exceeds the number of pairs ({n}): some folds would be empty; "
                "use fewer folds")
        fold_of = np.repeat(np.arange(n_folds), [len(a) for a in np.array_split(np.arange(n), n_folds)])
    else:
        fold_of = np.asarray(folds)
        if fold_of.shape != s.shape:
            raise ConfigError(f"folds must give one fold id per pair: shape {fold_of.shape} != {s.shape}")
    ids = np.unique(fold_of)
    if ids.size < 2:
        raise ConfigError(f"need at least 2 distinct folds for cross-validation, got {ids.size}")
    if ddof < 0 or ddof >= ids.size:
        raise ConfigError(f"ddof must be in [0, n_folds - 1], got {ddof}")

    accs, ths, sizes = [], [], []
    for f in ids:
        test = fold_of == f
        t, _ = best_accuracy_threshold(s[~test], y[~test], floor=floor)
        accs.append(float(np.mean((s[test] >= t) == y[test])))
        ths.append(t)
        sizes.append(int(test.sum()))
    a = np.asarray(accs)
    return KFoldResult(
        accuracy=float(a.mean()),
        accuracy_std=float(a.std(ddof=ddof)),
        ddof=int(ddof),
        fold_ids=tuple(ids.tolist()),
        fold_sizes=tuple(sizes),
        fold_accuracies=tuple(accs),
        thresholds=tuple(ths),
    )


# --------------------------------------------------------------------------- ROC


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full ROC (every distinct threshold kept), endpoints included.

    thresholds = [+inf, unique scores in descending order]; for each t:
    far[i] = FAR(thresholds[i]), tar[i] = TAR(thresholds[i]) (accept when ``score >= t``).
    far/tar start at (0, 0) (t = +inf) and end at (1, 1) (t = min score); both are non-decreasing.
    Equal to ``sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)``.
    Raises ``ConfigError`` unless both genuine and impostor pairs are present.

    >>> far, tar, t = roc_curve([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    >>> far.tolist(), tar.tolist(), t.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0], [inf, 0.8, 0.4, 0.35, 0.1])
    """
    s, y = _check_scores_labels(scores, labels)
    _need_both_classes(y, "an ROC curve")
    fp, tp, thr = _roc_counts(s, y)
    return fp / fp[-1], tp / tp[-1], thr


def _roc_counts(s: np.ndarray, y: np.ndarray):
    """(fp, tp, thresholds): accepted impostor / genuine counts at thresholds [+inf, unique desc]."""
    u, inv = np.unique(s, return_inverse=True)
    pos = np.bincount(inv, weights=y, minlength=u.size)[::-1]
    neg = np.bincount(inv, weights=~y, minlength=u.size)[::-1]
    tp = np.concatenate([[0], np.cumsum(pos)]).astype(np.int64)
    fp = np.concatenate([[0], np.cumsum(neg)]).astype(np.int64)
    return fp, tp, np.concatenate([[np.inf], u[::-1]])


def roc_auc(scores, labels) -> float:
    """Area under the ROC (trapezoidal rule over :func:`roc_curve`).

    Equals P(s_genuine > s_impostor) + 0.5 * P(s_genuine == s_impostor), i.e.
    ``sklearn.metrics.roc_auc_score``.

    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    """
    far, tar, _ = roc_curve(scores, labels)
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2.0))


def eer(scores, labels) -> float:
    """Equal error rate: the value where FAR = FRR = 1 - TAR on the ROC.

    Along :func:`roc_curve`, d_i = (1 - tar_i) - far_i falls from +1 (at t = +inf) to -1 (at the
    lowest score). With i the first point where d_i <= 0: EER = far_i if d_i == 0, otherwise the
    crossing of the straight ROC segment (i-1, i) with the line FAR = 1 - TAR:
    EER = far_{i-1} + d_{i-1} / (d_{i-1} - d_i) * (far_i - far_{i-1}).
    Raises ``ConfigError`` unless both classes are present.

    >>> eer([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.5
    >>> eer([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1])
    0.0
    """
    far, tar, _ = roc_curve(scores, labels)
    d = (1.0 - tar) - far
    i = int(np.argmax(d <= 0))  # exists: d[-1] = -1
    if d[i] == 0:
        return float(far[i])
    w = d[i - 1] / (d[i - 1] - d[i])
    return float(far[i - 1] + w * (far[i] - far[i - 1]))


# --------------------------------------------------------------------------- TAR @ FAR (strict)


@dataclass(frozen=True)
class TarAtFar:
    """One strict operating point (see :func:`tar_at_far`).

    tar: TAR at ``threshold``; far: the achieved (real) FAR there, always <= far_target;
    threshold: accept when ``score >= threshold`` (+inf: nothing accepted);
    reachable: False when 0 < far_target < 1 / n_neg, i.e. the data hold too few impostors to
    measure any non-zero FAR <= target; the point is then the FAR = 0 point (lowest threshold accepting
    no impostor) and should be reported as such (an upper bound on TAR at the target).
    """

    tar: float
    far: float
    threshold: float
    far_target: float
    reachable: bool
    n_pos: int
    n_neg: int

    def to_dict(self) -> dict:
        return asdict(self)


def strict_operating_point(pos_scores, neg_scores, target: float, n_pos: int | None = None) -> TarAtFar:
    """Highest-TAR point whose real FAR never exceeds ``target``, from separate score arrays.

    FAR(t) = #{neg >= t} / len(neg); TAR(t) = #{pos >= t} / n_pos. The threshold is the lowest
    candidate t in {+inf} U unique(pos U neg) with FAR(t) <= target: accepting score s iff
    s >= t is then the same as s > v, with v the highest impostor score that must be rejected.
    Tied impostors are accepted or rejected together, so ties can never push FAR over target.
    ``n_pos`` (default len(pos)) lets callers count genuines that can never be accepted (e.g.
    mated probes whose mate is not rank-1 in open-set identification) in the TAR denominator.
    """
    pos = np.asarray(pos_scores, dtype=np.float64).ravel()
    neg = np.asarray(neg_scores, dtype=np.float64).ravel()
    n_pos = pos.size if n_pos is None else int(n_pos)
    target = float(target)
    if not np.isfinite(target) or target < 0:
        raise ConfigError(f"the target false-accept rate must be a finite number >= 0, got {target}")
    if neg.size == 0 or n_pos == 0:
        raise ConfigError(
            f"a TAR@FAR point needs genuine and impostor scores; got {n_pos} genuine, {neg.size} impostor")
    if n_pos < pos.size:
        raise ConfigError(f"n_pos={n_pos} is smaller than the {pos.size} genuine scores given")
    s = np.concatenate([pos, neg])
    if not np.all(np.isfinite(s)):
        raise ConfigError("scores must be finite (drop or re-embed the offending pairs)")
    y = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
    fp, tp, thr = _roc_counts(s, y)
    n_neg = neg.size
    far = fp / n_neg  # by division, so c / n compares with the target exactly like the user's fraction
    i = int(np.searchsorted(far, target, side="right") - 1)  # last index with far <= target (far[0] = 0)
    return TarAtFar(
        tar=float(tp[i] / n_pos),
        far=float(far[i]),
        threshold=float(thr[i]),
        far_target=target,
        reachable=bool(target == 0.0 or 1.0 / n_neg <= target),
        n_pos=int(n_pos),
        n_neg=int(n_neg),
    )


def tar_at_far(scores, labels, far_target: float | Iterable[float]) -> TarAtFar | list[TarAtFar]:
    """Strict TAR@FAR: the threshold is chosen so that the *real* FAR is <= ``far_target``.

    threshold = min{t in {+inf} U unique(scores) : FAR(t) <= far_target}; TAR is reported there with
    the achieved FAR (never above the target, also with tied scores). If ``0 < far_target < 1/n_neg``
    the only FAR <= target the data can show is 0: the FAR = 0 point is returned with
    ``reachable=False``. A sequence of targets returns a list of results.

    The genuine 0.3 is tied with two impostors; accepting it would give FAR 2/5 > 0.25:

    >>> r = tar_at_far([0.1, 0.2, 0.25, 0.3, 0.3, 0.3, 0.5, 0.9], [0, 0, 0, 0, 0, 1, 1, 1], 0.25)
    >>> r.tar, r.far, r.threshold, r.reachable
    (0.6666666666666666, 0.0, 0.5, True)
    """
    s, y = _check_scores_labels(scores, labels)
    _need_both_classes(y, "TAR@FAR")
    if np.ndim(far_target) == 0:
        return strict_operating_point(s[y], s[~y], far_target)
    return [strict_operating_point(s[y], s[~y], t) for t in far_target]
