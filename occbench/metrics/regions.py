"""Which part matters: a per-item outcome split by whether each face part is covered. Pure functions.

``correct`` is any per-item 0/1 outcome (a verification pair decided right at the fold's threshold, a
1:N probe whose mate is rank 1, an attribute predicted right); ``fractions`` maps a part or group to the
items' occluded fractions of it (``occbench.face.parts.part_fractions``; NaN = unmeasurable, e.g. no part
map). A part is *covered* at fraction >= ``threshold`` (default 0.5, the issue's "≥ 50 % covered").

- :func:`accuracy_by_part`: per part, n and accuracy where covered / not covered, the pp lost between
  them and, given the same items' clean outcome, the pp lost against clean on the covered items;
- :func:`pair_fractions`: the fraction of a pair of images (O-O: both occluded): covered when either
  image covers the part, uncovered when both are measured and neither does, else unmeasured.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

COVERED = 0.5  # a part is covered when at least this fraction of its pixels is occluded


def _outcome(values, name: str, n: int | None = None) -> np.ndarray:
    c = np.asarray(values, dtype=np.float64).ravel()
    if not np.isin(c, (0.0, 1.0)).all():
        raise ConfigError(f"{name} must be 0/1 (or bool) per item")
    if n is not None and c.size != n:
        raise ConfigError(f"{name} has {c.size} items, correct has {n}")
    return c


def pair_fractions(f1, f2, threshold: float = COVERED) -> np.ndarray:
    """Per pair: max of the two images' fractions where both are known; where one is NaN, the other if it
    is covered (>= threshold: the pair is covered whatever the unknown one is), else NaN."""
    a, b = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if a.shape != b.shape:
        raise ConfigError(f"the two images' fractions differ in shape: {a.shape} vs {b.shape}")
    out = np.fmax(a, b)  # ignores one NaN
    return np.where(np.isnan(a) | np.isnan(b), np.where(out >= threshold, out, np.nan), out)


def accuracy_by_part(correct, fractions: dict[str, np.ndarray], threshold: float = COVERED, min_n: int = 0,
                     clean_correct=None, item: str = "items") -> dict[str, dict]:
    """Per part: ``n_covered`` / ``n_uncovered`` / ``n_unmeasured``, ``accuracy_covered`` /
    ``accuracy_uncovered``, ``pp_lost`` = 100 x (uncovered - covered) and, with ``clean_correct`` (the
    same items' outcome without occlusion), ``clean_accuracy_covered`` and ``pp_lost_vs_clean`` = 100 x
    (clean - occluded) on the covered items.

    Items whose fraction is NaN are left out of that part's split. A side with fewer than ``min_n``
    items (or none) has accuracy None, and so has every difference using it (never a made-up 0); ``na``
    then says why, e.g. "n/a (8 covered items, fewer than 20)"."""
    c = _outcome(correct, "correct")
    cc = None if clean_correct is None else _outcome(clean_correct, "clean_correct", c.size)
    if not 0.0 < float(threshold) <= 1.0:
        raise ConfigError(f"threshold must be in (0, 1], got {threshold!r}")
    out = {}
    for part, fr in fractions.items():
        f = np.asarray(fr, np.float64).ravel()
        if f.size != c.size:
            raise ConfigError(f"fractions[{part!r}] has {f.size} items, correct has {c.size}")
        known = np.isfinite(f)
        cov, unc = known & (f >= threshold), known & (f < threshold)
        n_c, n_u = int(cov.sum()), int(unc.sum())
        ok_c, ok_u = n_c > 0 and n_c >= min_n, n_u > 0 and n_u >= min_n
        acc_c = float(c[cov].mean()) if ok_c else None
        acc_u = float(c[unc].mean()) if ok_u else None
        row = {"n_covered": n_c, "n_uncovered": n_u, "n_unmeasured": int((~known).sum()),
               "accuracy_covered": acc_c, "accuracy_uncovered": acc_u,
               "pp_lost": None if acc_c is None or acc_u is None else 100.0 * (acc_u - acc_c)}
        if cc is not None:
            clean_c = float(cc[cov].mean()) if ok_c else None
            row["clean_accuracy_covered"] = clean_c
            row["pp_lost_vs_clean"] = None if acc_c is None else 100.0 * (clean_c - acc_c)
        why = [f"{n} {side} {item}" + (f", fewer than {min_n}" if n else "")
               for n, side, ok in ((n_c, "covered", ok_c), (n_u, "uncovered", ok_u)) if not ok]
        if why:
            row["na"] = f"n/a ({'; '.join(why)})"
        out[part] = row
    return out
