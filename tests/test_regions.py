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
