"""Which part matters: a per-item outcome split by whether each face part is covered. Pure functions.

``correct`` is any per-item 0/1 outcome (a verification pair decided right at the fold's threshold, a
1:N probe whose mate is rank 1, an attribute predicted right); ``fractions`` maps a part or group to the
items' occluded fractions of it (``occbench.face.parts.part_fractions``; NaN = unmeasurable, e.g. no part
map). A part is *covered* at fraction >= ``threshold`` (default 0.5, the issue's "≥ 50 % covered").
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError


def accuracy_by_part(correct, fractions: dict[str, np.ndarray], threshold: float = 0.5) -> dict[str, dict]:
    """Per part: n and accuracy where covered / not covered, and the pp lost (uncovered - covered).

    Items whose fraction is NaN are left out of that part's split; an empty side gives None, and so
    does pp_lost then (never a made-up 0)."""
    c = np.asarray(correct, dtype=np.float64).ravel()
    if not np.isin(c, (0.0, 1.0)).all():
        raise ConfigError("correct must be 0/1 (or bool) per item")
    out = {}
    for part, fr in fractions.items():
        f = np.asarray(fr, np.float64).ravel()
        if f.size != c.size:
            raise ConfigError(f"fractions[{part!r}] has {f.size} items, correct has {c.size}")
        known = np.isfinite(f)
        cov, unc = known & (f >= threshold), known & (f < threshold)
        acc_c = float(c[cov].mean()) if cov.any() else None
        acc_u = float(c[unc].mean()) if unc.any() else None
        out[part] = {"n_covered": int(cov.sum()), "n_uncovered": int(unc.sum()), "n_unmeasured": int((~known).sum()),
                     "accuracy_covered": acc_c, "accuracy_uncovered": acc_u,
                     "pp_lost": None if acc_c is None or acc_u is None else 100.0 * (acc_u - acc_c)}
    return out
