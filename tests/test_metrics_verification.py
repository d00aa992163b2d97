"""Verification metrics against scikit-learn and naive brute-force references."""
from __future__ import annotations

import doctest

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from occbench.errors import ConfigError
from occbench.metrics import verification as V
from occbench.metrics import (
    best_accuracy_threshold,
    eer,
    kfold_accuracy,
    roc_auc,
    roc_curve,
    strict_operating_point,
    tar_at_far,
)


def _data(seed, n=200, decimals=None, pos_shift=0.8):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    s = rng.normal(size=n) + pos_shift * y
    if decimals is not None:  # coarse rounding -> many ties, also across classes
        s = np.round(s, decimals)
    return s, y.astype(int)


# ---------------------------------------------------------------- naive references (O(n^2) loops)


def naive_best_threshold(s, y):
    u = sorted(set(float(v) for v in s))
    cands = [-np.inf] + [(a + b) / 2 for a, b in zip(u[:-1], u[1:])] + [np.inf]
    best_t, best_acc = None, -1.0
    for t in cands:  # ascending: strict ">" keeps the lowest threshold on ties
        acc = sum((si >= t) == bool(yi) for si, yi in zip(s, y)) / len(s)
        if acc > best_acc:
            best_t, best_acc = t, acc
    return best_t, best_acc


def naive_kfold(s, y, fold_of):
    accs, ths = [], []
    for f in sorted(set(fold_of.tolist())):
        train = [i for i in range(len(s)) if fold_of[i] != f]
        test = [i for i in range(len(s)) if fold_of[i] == f]
        t, _ = naive_best_threshold([s[i] for i in train], [y[i] for i in train])
        accs.append(sum((s[i] >= t) == bool(y[i]) for i in test) / len(test))
        ths.append(t)
    return accs, ths


def naive_tar_at_far(s, y, target):
    """Max TAR over thresholds whose real FAR (counted pair by pair) is <= target."""
    n_pos, n_neg = sum(y), len(y) - sum(y)
    best = None
    for t in [np.inf] + sorted(set(float(v) for v in s)):
        fa = sum(1 for si, yi in zip(s, y) if not yi and si >= t)
        ta = sum(1 for si, yi in zip(s, y) if yi and si >= t)
        if fa / n_neg <= target and (best is None or ta / n_pos > best[0]):
            best = (ta / n_pos, fa / n_neg)
    return best


def naive_eer(fpr, tpr):
    """Walk the ROC segments and solve (1 - tpr) = fpr on the one where the sign changes."""
    for a in range(len(fpr)):
        d_a = (1 - tpr[a]) - fpr[a]
        if d_a == 0:
            return fpr[a]
        if a + 1 < len(fpr):
            d_b = (1 - tpr[a + 1]) - fpr[a + 1]
            if d_a > 0 > d_b:
                # point = P_a + w (P_b - P_a): (1 - tpr_a - w dtpr) = fpr_a + w dfpr
                w = d_a / ((tpr[a + 1] - tpr[a]) + (fpr[a + 1] - fpr[a]))
                return fpr[a] + w * (fpr[a + 1] - fpr[a])
    raise AssertionError("no crossing")


# ---------------------------------------------------------------- k-fold accuracy


@pytest.mark.parametrize("seed,n,n_folds,decimals", [(0, 120, 10, 1), (1, 97, 7, None), (2, 60, 3, 0)])
def test_kfold_matches_naive_reference(seed, n, n_folds, decimals):
    s, y = _data(seed, n, decimals)
    r = kfold_accuracy(s, y, n_folds=n_folds)
    fold_of = np.repeat(np.arange(n_folds), [len(a) for a in np.array_split(np.arange(n), n_folds)])
    accs, ths = naive_kfold(s, y, fold_of)
    assert r.fold_accuracies == pytest.approx(accs)
    assert r.thresholds == pytest.approx(ths)
    assert r.accuracy == pytest.approx(np.mean(accs))
    assert r.fold_sizes == tuple(np.bincount(fold_of))
    assert r.n_folds == n_folds


def test_kfold_contiguous_folds_follow_protocol_order():
    # first half perfectly separable with a high threshold, second half with a low one
    s = np.r_[0.6, 0.9, 0.6, 0.9, 0.1, 0.3, 0.1, 0.3]
    y = np.r_[0, 1, 0, 1, 0, 1, 0, 1]
    r = kfold_accuracy(s, y, n_folds=2)
    assert r.thresholds == (0.2, 0.75)  # fold 0 is trained on the second half, fold 1 on the first
    assert r.fold_accuracies == (0.5, 0.5)


def test_kfold_explicit_folds_leave_one_fold_out():
    s, y = _data(3, 150, decimals=1)
    fold_of = np.random.default_rng(3).integers(1, 6, size=150) * 10  # ids 10..50, interleaved
    r = kfold_accuracy(s, y, folds=fold_of)
    accs, ths = naive_kfold(s, y, fold_of)
    assert r.fold_ids == (10, 20, 30, 40, 50)
    assert r.fold_accuracies == pytest.approx(accs)
    assert r.thresholds == pytest.approx(ths)


def test_kfold_std_ddof_is_explicit():
    s, y = _data(4, 100, decimals=1)
    r0 = kfold_accuracy(s, y, n_folds=5)
    r1 = kfold_accuracy(s, y, n_folds=5, ddof=1)
    a = np.array(r0.fold_accuracies)
    assert r0.ddof == 0 and r0.accuracy_std == pytest.approx(a.std(ddof=0))
    assert r1.ddof == 1 and r1.accuracy_std == pytest.approx(a.std(ddof=1))
    assert r0.to_dict()["ddof"] == 0 and r0.to_dict()["n_folds"] == 5


def test_kfold_refuses_empty_or_degenerate_folds():
    s, y = _data(5, 8)
    with pytest.raises(ConfigError, match="empty"):
        kfold_accuracy(s, y, n_folds=9)
    with pytest.raises(ConfigError, match="n_folds"):
        kfold_accuracy(s, y, n_folds=1)
    with pytest.raises(ConfigError, match="2 distinct folds"):
        kfold_accuracy(s, y, folds=np.zeros(8, int))
    with pytest.raises(ConfigError, match="one fold id per pair"):
        kfold_accuracy(s, y, folds=np.arange(7))
    # n_folds == n is allowed: leave-one-pair-out, every fold holds exactly one pair
    r = kfold_accuracy(s, y, n_folds=8)
    assert r.fold_sizes == (1,) * 8


def test_kfold_all_same_scores_and_single_class():
    y = np.r_[np.ones(6, int), np.zeros(4, int)]
    r = kfold_accuracy(np.full(10, 0.3), y, n_folds=5)
    # only -inf / +inf separate nothing; training majority decides, ties -> lowest (-inf)
    ref_accs, ref_ths = naive_kfold(np.full(10, 0.3), y, np.repeat(np.arange(5), 2))
    assert r.thresholds == tuple(ref_ths)
    assert r.fold_accuracies == pytest.approx(ref_accs)
    assert set(r.thresholds) <= {-np.inf, np.inf}
    one = kfold_accuracy(np.linspace(0, 1, 10), np.ones(10, int), n_folds=5)
    assert one.accuracy == 1.0 and set(one.thresholds) == {-np.inf}


def test_best_threshold_tie_break_lowest_and_adjacent_floats():
    t, acc = best_accuracy_threshold([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    assert (t, acc) == (pytest.approx(0.15), 0.75)  # 0.35 reaches 0.75 too; the lower one wins
    lo = 1.0
    hi = np.nextafter(lo, 2.0)
    t, acc = best_accuracy_threshold([lo, hi], [0, 1])
    assert acc == 1.0 and lo < t <= hi


@pytest.mark.parametrize("seed", range(4))
def test_best_threshold_matches_naive(seed):
    s, y = _data(seed, 80, decimals=1)
    t, acc = best_accuracy_threshold(s, y)
    t_ref, acc_ref = naive_best_threshold(s, y)
    assert t == pytest.approx(t_ref) and acc == pytest.approx(acc_ref)


def test_input_validation():
    with pytest.raises(ConfigError, match="finite"):
        kfold_accuracy([0.1, np.nan, 0.3, 0.4], [0, 1, 0, 1], n_folds=2)
    with pytest.raises(ConfigError, match="equal length"):
        roc_curve([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ConfigError, match="empty"):
        roc_curve([], [])
    with pytest.raises(ConfigError, match="0/1"):  # -1/+1 protocol labels must be mapped explicitly
        roc_curve([0.1, 0.2, 0.3], [-1, 1, 1])
    far, tar, _ = roc_curve([0.1, 0.2, 0.3], np.array([False, True, True]))
    assert tar.tolist() == [0.0, 0.5, 1.0, 1.0]


# ---------------------------------------------------------------- ROC / AUC / EER


@pytest.mark.parametrize("seed,decimals", [(0, None), (1, 1), (2, 0), (3, 2)])
def test_roc_matches_sklearn(seed, decimals):
    s, y = _data(seed, 300, decimals)
    far, tar, thr = roc_curve(s, y)
    fpr, tpr, sk_thr = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(far, fpr)
    np.testing.assert_allclose(tar, tpr)
    np.testing.assert_array_equal(thr[1:], sk_thr[1:])
    assert thr[0] == np.inf and (far[0], tar[0], far[-1], tar[-1]) == (0, 0, 1, 1)
    assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_all_same_scores():
    y = np.r_[0, 1, 1, 0, 1]
    far, tar, thr = roc_curve(np.full(5, 0.7), y)
    assert far.tolist() == [0, 1] and tar.tolist() == [0, 1] and thr.tolist() == [np.inf, 0.7]
    assert roc_auc(np.full(5, 0.7), y) == pytest.approx(roc_auc_score(y, np.full(5, 0.7)))
    assert eer(np.full(5, 0.7), y) == pytest.approx(0.5)


def test_roc_single_class_raises():
    for fn in (roc_curve, roc_auc, eer):
        with pytest.raises(ConfigError, match="both genuine and impostor"):
            fn([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ConfigError, match="both genuine and impostor"):
        tar_at_far([0.1, 0.2], [0, 0], 0.1)


@pytest.mark.parametrize("seed,decimals", [(0, None), (1, 1), (5, 0)])
def test_eer_matches_reference_on_sklearn_roc(seed, decimals):
    s, y = _data(seed, 250, decimals)
    fpr, tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    e = eer(s, y)
    assert e == pytest.approx(naive_eer(fpr, tpr), abs=1e-12)
    # the EER sits between the best achievable max(FAR, FRR) bounds on the ROC points
    assert np.min(np.minimum(fpr, 1 - tpr)) <= e <= np.min(np.maximum(fpr, 1 - tpr)) + 1e-12


def test_eer_extremes():
    assert eer([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0
    assert eer([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 1.0


# ---------------------------------------------------------------- TAR @ FAR (strict)


@pytest.mark.parametrize("seed,decimals", [(0, None), (1, 1), (2, 0)])
def test_tar_at_far_matches_brute_force_and_sklearn(seed, decimals):
    s, y = _data(seed, 160, decimals)
    fpr, tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    targets = [0.0, 1e-3, 0.01, 0.05, 0.1, 1 / 3, 0.5, 1.0]
    results = tar_at_far(s, y, targets)
    for t, r in zip(targets, results):
        ref_tar, _ = naive_tar_at_far(s, y, t)
        assert r.tar == pytest.approx(ref_tar)
        assert r.tar == pytest.approx(tpr[fpr <= t].max())
        assert r.far <= t and r.far_target == t
        # the real FAR at the reported threshold, counted directly
        assert np.mean(s[y == 0] >= r.threshold) == pytest.approx(r.far)
        assert np.mean(s[y == 1] >= r.threshold) == pytest.approx(r.tar)


def test_tar_at_far_ties_never_exceed_target():
    # the genuine 0.3 ties with two impostors; a naive "k-th highest impostor" threshold accepts both
    s = np.r_[0.1, 0.2, 0.25, 0.3, 0.3, 0.3, 0.5, 0.9]
    y = np.r_[0, 0, 0, 0, 0, 1, 1, 1]
    r = tar_at_far(s, y, 0.25)
    assert (r.far, r.threshold, r.reachable) == (0.0, 0.5, True)
    assert r.tar == pytest.approx(2 / 3)
    r = tar_at_far(s, y, 0.4)  # now both tied impostors fit: FAR = 2/5
    assert (r.far, r.threshold, r.tar) == (0.4, 0.3, 1.0)
    rng = np.random.default_rng(9)
    for _ in range(20):
        s = rng.integers(0, 5, size=40).astype(float)  # heavy ties
        y = rng.random(40) < 0.5
        if y.all() or not y.any():
            continue
        for t in (0.0, 0.05, 0.1, 0.2, 0.3):
            r = tar_at_far(s, y, t)
            assert np.mean(s[~y] >= r.threshold) <= t
            assert r.tar == pytest.approx(naive_tar_at_far(s, y.astype(int), t)[0])


def test_tar_at_far_unreachable_target_reports_far0_point():
    rng = np.random.default_rng(4)
    neg = rng.normal(size=50)
    pos = rng.normal(size=50) + 1.5
    s, y = np.r_[pos, neg], np.r_[np.ones(50, int), np.zeros(50, int)]
    r = tar_at_far(s, y, 1e-3)  # 1/50 > 1e-3
    assert not r.reachable and r.far == 0.0 and r.n_neg == 50
    assert r.tar == pytest.approx(np.mean(pos > neg.max()))
    assert r.threshold == pos[pos > neg.max()].min()
    assert tar_at_far(s, y, 0.02).reachable and tar_at_far(s, y, 0.0).reachable
    # the highest score is an impostor: nothing can be accepted
    r = tar_at_far([0.9, 0.5, 0.4], [0, 1, 1], 0.5)
    assert (r.tar, r.far, r.threshold, r.reachable) == (0.0, 0.0, np.inf, False)


def test_tar_at_far_bad_targets():
    for t in (-0.1, np.nan, np.inf):
        with pytest.raises(ConfigError, match="target"):
            tar_at_far([0.1, 0.9], [0, 1], t)


def test_strict_operating_point_counts_unreachable_genuines():
    r = strict_operating_point([0.9, 0.8], [0.1, 0.85], 0.5, n_pos=4)
    assert (r.tar, r.far, r.threshold) == (0.5, 0.5, 0.8)
    with pytest.raises(ConfigError, match="n_pos"):
        strict_operating_point([0.9, 0.8], [0.1], 0.5, n_pos=1)


def test_docstring_examples():
    assert doctest.testmod(V, raise_on_error=False).failed == 0
