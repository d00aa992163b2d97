"""accuracy_by_part: the per-part split of a per-item outcome, against a brute-force count."""
from __future__ import annotations

import math

import numpy as np
import pytest

from occbench.errors import ConfigError
from occbench.metrics.regions import accuracy_by_part


def test_accuracy_by_part_brute_force():
    rng = np.random.default_rng(5)
    n = 500
    correct = rng.random(n) < 0.8
    fr = {"mouth": rng.random(n), "eye_l": np.where(rng.random(n) < 0.1, np.nan, rng.random(n)),
          "never": np.zeros(n)}
    got = accuracy_by_part(correct, fr, threshold=0.5)
    for part, f in fr.items():
        cov = [c for c, x in zip(correct, f) if not math.isnan(x) and x >= 0.5]
        unc = [c for c, x in zip(correct, f) if not math.isnan(x) and x < 0.5]
        g = got[part]
        assert g["n_covered"] == len(cov) and g["n_uncovered"] == len(unc)
        assert g["n_unmeasured"] == sum(math.isnan(x) for x in f)
        if cov:
            assert g["accuracy_covered"] == pytest.approx(sum(cov) / len(cov))
            assert g["pp_lost"] == pytest.approx(100 * (sum(unc) / len(unc) - sum(cov) / len(cov)))
        else:
            assert g["accuracy_covered"] is None and g["pp_lost"] is None
    assert got["never"]["n_covered"] == 0


def test_accuracy_by_part_errors():
    with pytest.raises(ConfigError, match="0/1"):
        accuracy_by_part([0.5], {"a": [1.0]})
    with pytest.raises(ConfigError, match="items"):
        accuracy_by_part([1, 0], {"a": [1.0]})


def test_min_n_and_clean_comparison_brute_force():
    rng = np.random.default_rng(11)
    n = 300
    correct = rng.random(n) < 0.7
    clean = rng.random(n) < 0.95
    fr = {"nose": np.where(rng.random(n) < 0.2, np.nan, rng.random(n)),
          "rare": np.where(rng.random(n) < 0.05, 0.9, 0.1)}
    got = accuracy_by_part(correct, fr, threshold=0.5, min_n=20, clean_correct=clean, item="pairs")
    for part, f in fr.items():
        cov = [i for i in range(n) if not math.isnan(f[i]) and f[i] >= 0.5]
        unc = [i for i in range(n) if not math.isnan(f[i]) and f[i] < 0.5]
        g = got[part]
        assert (g["n_covered"], g["n_uncovered"]) == (len(cov), len(unc))
        if len(cov) >= 20:
            acc = sum(correct[i] for i in cov) / len(cov)
            cl = sum(clean[i] for i in cov) / len(cov)
            assert g["accuracy_covered"] == pytest.approx(acc) and g["clean_accuracy_covered"] == pytest.approx(cl)
            assert g["pp_lost_vs_clean"] == pytest.approx(100 * (cl - acc))
            assert "na" not in g
        else:  # too few: n/a with the reason, never a number
            assert g["accuracy_covered"] is None and g["pp_lost"] is None and g["pp_lost_vs_clean"] is None
            assert g["na"] == f"n/a ({len(cov)} covered pairs, fewer than 20)"
    assert got["rare"]["n_covered"] < 20 < got["nose"]["n_covered"]


def test_pair_fractions_truth_table():
    from occbench.metrics.regions import pair_fractions

    nan = float("nan")
    a = np.array([0.2, 0.7, nan, nan, 0.1, nan])
    b = np.array([0.4, 0.1, 0.9, 0.3, nan, nan])
    got = pair_fractions(a, b, 0.5)
    # covered when either image covers the part; uncovered only when both are known and neither does
    want = [0.4, 0.7, 0.9, nan, nan, nan]
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.allclose(got[:3], want[:3])
    with pytest.raises(ConfigError, match="shape"):
        pair_fractions([0.1], [0.1, 0.2])
