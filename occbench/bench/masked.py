"""Real vs synthetic masks (issue 9 §5): pair types from a masked list, accuracy by pair type, and
the table of real-mask accuracy against synthetic-mask accuracy with the scale at which they meet.

Pure functions; the engine feeds them the scores of ``mfr2`` (real masks, images as published) and of
``mfr2-synth`` (mode ``mask-unmasked``: every image the masked list marks unmasked carries a synthetic
mask at scale s, real-masked images unchanged) on the same pairs.

Accuracy by pair type: each pair is decided with the leave-one-fold-out threshold of its fold,
learnt on *all* pairs (exactly the thresholds of the headline ``accuracy``), and the decisions are
averaged within each type. Types are too small and one-sided to learn thresholds of their own (an
unmasked-unmasked subset may hold no impostor at all). Failures to enrol arrive as ``-inf`` scores
(the lowest possible score, issue 9 §1) and are decided "different".

Meeting scale: after synthetic masking, the unmasked-unmasked pairs have a mask on both images, like
the real masked-masked pairs; the meeting scale is where their synthetic accuracy, linearly
interpolated between the measured scales, equals the real masked-masked accuracy (None when the
curves do not cross inside the measured scales). The identities and pairs are the same set's, but
the two rows are different pairs of it: the table shows both, with their counts.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..metrics.verification import kfold_accuracy
from .protocols import scale_tag

PAIR_TYPES = ("masked-unmasked", "masked-masked", "unmasked-unmasked")


def pair_type(masked1: bool, masked2: bool) -> str:
    if masked1 and masked2:
        return "masked-masked"
    return "masked-unmasked" if masked1 or masked2 else "unmasked-unmasked"


def pair_types(pairs, masked: dict[str, bool]) -> list[str]:
    """The type of every pair (``Pair``-likes with key1/key2) from a key -> masked map."""
    try:
        return [pair_type(masked[p.key1], masked[p.key2]) for p in pairs]
    except KeyError as e:
        raise ConfigError(f"the masked list does not cover image {e.args[0]}") from None


def synthetic_sides(pair, masked: dict[str, bool]) -> tuple[bool, bool]:
    """Mode ``mask-unmasked``: which images of the pair carry a synthetic mask (the unmasked ones)."""
    return (not masked[pair.key1], not masked[pair.key2])


def _finite(scores) -> np.ndarray:
    s = np.asarray(scores, np.float64).copy()
    if np.isnan(s).any() or np.isposinf(s).any():
        raise ConfigError("scores must be finite or -inf (failure to enrol)")
    low = ~np.isfinite(s)
    if low.any():
        s[low] = (s[~low].min() - 1.0) if (~low).any() else 0.0  # below every real score
    return s


def accuracy_by_pair_type(scores, labels, folds, types) -> dict[str, dict]:
    """{type: {n_pairs, n_genuine, n_impostor, accuracy}} for each type present, plus ``all``.

    >>> r = accuracy_by_pair_type([.9, .8, .2, .1, .7, .3], [1, 1, 0, 0, 1, 0], [1, 1, 1, 2, 2, 2],
    ...                           ["masked-masked"] * 3 + ["unmasked-unmasked"] * 3)
    >>> r["all"]["accuracy"], r["masked-masked"]["n_genuine"]
    (1.0, 2)
    """
    s = _finite(scores)
    y = np.asarray(labels).astype(bool)
    f = np.asarray(folds)
    t = np.asarray(types)
    if not (s.shape == y.shape == f.shape == t.shape):
        raise ConfigError("scores, labels, folds and types need one entry per pair")
    kf = kfold_accuracy(s, y, folds=f)
    thr = dict(zip(kf.fold_ids, kf.thresholds))
    correct = (s >= np.array([thr[x] for x in f.tolist()])) == y
    out = {}
    for name in PAIR_TYPES + ("all",):
        sel = np.ones_like(y) if name == "all" else t == name
        if sel.any():
            out[name] = {"n_pairs": int(sel.sum()), "n_genuine": int(y[sel].sum()),
                         "n_impostor": int((~y[sel]).sum()), "accuracy": float(correct[sel].mean())}
    return out


def meeting_scale(scales, synthetic, real: float) -> float | None:
    """First scale where the piecewise-linear synthetic curve equals ``real``; None if it never does, or if
    it equals ``real`` at two neighbouring scales (a flat stretch has no single meeting point)."""
    sc = np.asarray(scales, np.float64)
    acc = np.asarray(synthetic, np.float64)
    order = np.argsort(sc)
    sc, acc = sc[order], acc[order]
    d = acc - real
    if np.any((d[1:] == 0) & (d[:-1] == 0)):
        return None
    for i in range(len(sc)):
        if d[i] == 0:
            return float(sc[i])
        if i and d[i - 1] * d[i] < 0:
            return float(sc[i - 1] + (sc[i] - sc[i - 1]) * d[i - 1] / (d[i - 1] - d[i]))
    return None


def real_vs_synthetic(real: dict[str, dict], synthetic: dict[float, dict[str, dict]]) -> dict:
    """The side-by-side table: one row per pair type (real accuracy, synthetic accuracy per scale, counts)
    and the meeting of synthetic-masked unmasked-unmasked pairs with real masked-masked pairs.

    ``real``: :func:`accuracy_by_pair_type` of the published images; ``synthetic``: {scale: the same
    for the ``mask-unmasked`` variant at that scale}."""
    scales = sorted(float(s) for s in synthetic)
    rows = []
    for name in PAIR_TYPES + ("all",):
        if name not in real:
            continue
        rows.append({"pair_type": name, "n_pairs": real[name]["n_pairs"], "real_accuracy": real[name]["accuracy"],
                     **{f"synthetic_accuracy_s{scale_tag(s)}": synthetic[s].get(name, {}).get("accuracy")
                        for s in scales}})
    meet = {"real": "masked-masked (real masks on both images)",
            "synthetic": "unmasked-unmasked (synthetic masks on both images)", "scale": None,
            "note": ""}
    uu = [synthetic[s].get("unmasked-unmasked", {}).get("accuracy") for s in scales]
    if "masked-masked" not in real or any(a is None for a in uu):
        meet["note"] = "n/a: needs masked-masked and unmasked-unmasked pairs"
    else:
        meet["scale"] = meeting_scale(scales, uu, real["masked-masked"]["accuracy"])
        ties = [s for s, a in zip(scales, uu) if a == real["masked-masked"]["accuracy"]]
        if meet["scale"] is None and len(ties) > 1:
            meet["note"] = (f"n/a: synthetic accuracy equals the real one at scales {ties}, so they do not meet at "
                            "one scale (more pairs would separate them)")
        elif meet["scale"] is None:
            side = "above" if uu[0] > real["masked-masked"]["accuracy"] else "below"
            meet["note"] = f"n/a: synthetic accuracy stays {side} the real one over scales {scales}"
    return {"scales": scales, "rows": rows, "meeting": meet}


def table_markdown(table: dict) -> str:
    """The table as markdown (accuracy in %)."""
    sc = table["scales"]
    head = "| pair type | pairs | real masks | " + " | ".join(f"synthetic s={scale_tag(s)}" for s in sc) + " |"
    lines = [head, "|---|---:|---:|" + "---:|" * len(sc)]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}"  # noqa: E731
    for r in table["rows"]:
        lines.append(f"| {r['pair_type']} | {r['n_pairs']} | {pct(r['real_accuracy'])} | "
                     + " | ".join(pct(r[f'synthetic_accuracy_s{scale_tag(s)}']) for s in sc) + " |")
    m = table["meeting"]
    lines.append("")
    lines.append(f"Meeting scale ({m['synthetic']} vs {m['real']}): "
                 + (f"s = {m['scale']:.2f}" if m["scale"] is not None else m["note"]))
    return "\n".join(lines)
