"""1:1 verification variants: pair scores from the embedding sets, metrics, the per-pair scores table
and the occlusion analyses (accuracy by occluded area and by K x K face-frame cell).

Failure to enrol (NIST FRVT / IJB rule): a pair with an image that has no embedding gets the lowest
possible score (``scoring.fte_score``, column ``score_used`` of the scores table) and is decided
"different" by every threshold: a genuine pair is a false reject, an impostor pair a true reject.
Every metric uses all pairs; the ``enrolled_only`` block repeats them on the enrolled pairs alone."""
from __future__ import annotations

import numpy as np

from .embed import EmbSet, set_name  # noqa: F401 - set_name re-exported
from .protocols import VariantSpec
from .results import VariantResult


def pair_sets(v: VariantSpec, emb_sets: dict[str, EmbSet], masked: dict[str, bool] | None = None
              ) -> tuple[EmbSet, EmbSet]:
    """The embedding sets of the first and second images of every pair under the variant's mode."""
    clean = emb_sets["clean"]
    if v.mode == "clean":
        return clean, clean
    occ = emb_sets[set_name(v)]
    if v.mode == "mask-unmasked":  # synthetic mask on the images the masked list marks unmasked
        mixed = mixed_set(clean, occ, {k: not m for k, m in (masked or {}).items()})
        return mixed, mixed
    return (clean, occ) if v.mode == "N-O" else (occ, occ)


def mixed_set(clean: EmbSet, occ: EmbSet, use_occ: dict[str, bool]) -> EmbSet:
    """Per image the occluded embedding where ``use_occ[key]``, else the clean one."""
    keys = list(clean.index)
    emb, ok = clean.emb.copy(), clean.ok.copy()
    reasons, stages = list(clean.reasons), list(clean.stages)
    for i, k in enumerate(keys):
        if use_occ.get(k) and k in occ.index:
            j = occ.index[k]
            emb[i], ok[i], reasons[i], stages[i] = occ.emb[j], occ.ok[j], occ.reasons[j], occ.stages[j]
    return EmbSet(f"{clean.name}+{occ.name}", dict(clean.index), emb, ok, reasons, stages, clean.cached and occ.cached)


def score_verification(protocol, task, specs, emb_sets, sets, score_tables, curves, progress=None) -> dict:
    """{variant name: VariantResult}; fills ``score_tables`` (pandas per variant) and ``curves``."""
    import pandas as pd

    from ..metrics import roc_curve
    from .scoring import area_breakdown, cell_drop, fte_score, top_reasons, verification_metrics
    from .parts import verification_parts

    k1 = [p.key1 for p in task.pairs]
    k2 = [p.key2 for p in task.pairs]
    labels = np.array([p.same for p in task.pairs], bool)
    folds = np.array([p.fold for p in task.pairs], np.int64)
    n = len(task.pairs)
    far_targets = protocol.metrics["far"]
    kk = protocol.occlusion["k"] if protocol.occlusion else None
    out: dict[str, VariantResult] = {}
    clean_correct = None
    for i_v, v in enumerate(specs, start=1):
        if progress is not None:
            progress.stage(f"{v.name}: score", i_v, len(specs))
        sa, sb = pair_sets(v, emb_sets, task.masked)
        ea, oka, ra = sa.get(k1)
        eb, okb, rb = sb.get(k2)
        ok = oka & okb
        scores = np.full(n, np.nan)
        scores[ok] = np.einsum("ij,ij->i", ea[ok].astype(np.float64), eb[ok].astype(np.float64))
        reasons = ["" if ok[i] else (ra[i] if not oka[i] else rb[i]) for i in range(n)]
        # failure to enrol: the lowest possible score, never accepted -> every pair counts
        low = fte_score(scores)
        all_scores = np.where(ok, scores, low)
        m = verification_metrics(all_scores, labels, folds, far_targets, floor=low)
        m["metrics"]["fte_rate"] = float((~ok).mean()) if n else None
        enrolled = verification_metrics(scores[ok], labels[ok], folds[ok], far_targets)
        correct = m["correct"].astype(np.float64) if m["correct"] is not None else np.full(n, np.nan)
        res = VariantResult(
            name=v.name, spec=v.to_dict(), metrics=m["metrics"],
            counts={"n_pairs": n, "n_scored": int(ok.sum()), "n_fte": int((~ok).sum()),
                    "n_genuine": int(labels.sum()), "n_impostor": int((~labels).sum()),
                    "n_genuine_fte": int((labels & ~ok).sum()), "n_impostor_fte": int((~labels & ~ok).sum())},
            notes=m["notes"], fte_reasons=top_reasons(reasons), operating_points=m["operating_points"],
            thresholds=m["thresholds"])
        res.add_block("enrolled_only", {
            "what": "the same metrics on the pairs whose two images both enrolled (failures left out): "
                    "flattering when failures are many; for comparison only",
            "metrics": enrolled["metrics"], "n_pairs": int(ok.sum()), "n_genuine": int(labels[ok].sum()),
            "n_impostor": int((~labels[ok]).sum()), "operating_points": enrolled["operating_points"],
            "notes": enrolled["notes"]})
        if res.thresholds is not None:
            res.thresholds["fte_score"] = low
        cols = {"pair": np.arange(n), "key1": k1, "key2": k2, "same": labels, "fold": folds, "score": scores,
                "score_used": all_scores, "status": np.where(ok, "ok", "fte"), "reason": reasons}
        if v.occluded and v.mode != "mask-unmasked":
            occ = sets[(v.run, v.synth_variant)]
            a2 = np.array([occ.area(k) for k in k2])
            c2 = np.stack([occ.cells(k, kk) for k in k2]) if n else np.zeros((0, kk * kk))
            if v.mode == "O-O":
                a1 = np.array([occ.area(k) for k in k1])
                c1 = np.stack([occ.cells(k, kk) for k in k1]) if n else np.zeros((0, kk * kk))
                area, cells = (a1 + a2) / 2.0, np.fmax(c1, c2)
                cols.update(occluder1=[occ.rows.get(k, {}).get("occluder", "") for k in k1], area_frac1=a1)
            else:
                area, cells = a2, c2
            cols.update(occluder2=[occ.rows.get(k, {}).get("occluder", "") for k in k2], area_frac2=a2,
                        area_frac=area)
            res.add_block("occlusion", {"area": area_breakdown(area, correct, clean_correct)})
            res.add_block("parts", verification_parts(occ, v.mode, k1, k2, correct, clean_correct))
            if clean_correct is not None:
                res.add_block("occlusion", {"cells": cell_drop(cells, correct, clean_correct, kk)})
        if task.masked is not None:  # accuracy by pair type, decided with the headline thresholds
            res.add_block("pair_types", pair_type_accuracy(task, labels, correct))
        if v.mode == "clean":
            clean_correct = correct
        out[v.name] = res
        score_tables[v.name] = pd.DataFrame(cols)
        if n and labels.any() and (~labels).any():
            far, tar, _ = roc_curve(all_scores, labels)
            curves.setdefault("roc", {})[v.name] = (far, tar, v.to_dict())
        occ_block = res.blocks.get("occlusion")
        if occ_block:
            curves.setdefault("area", {})[v.name] = occ_block["area"]
            if "cells" in occ_block:
                curves.setdefault("cells", {})[v.name] = occ_block["cells"]
    curves["main"] = protocol.main_score
    return out


def pair_type_accuracy(task, labels: np.ndarray, correct: np.ndarray) -> dict:
    """{pair type: {n_pairs, n_genuine, n_impostor, accuracy}} (+ ``all``) from the masked list; each pair
    is decided by its fold's headline threshold (failures to enrol included, decided "different")."""
    from .masked import PAIR_TYPES, pair_types

    types = np.array(pair_types(task.pairs, task.masked))
    out = {}
    for name in PAIR_TYPES + ("all",):
        sel = np.ones(len(types), bool) if name == "all" else types == name
        if sel.any():
            c = correct[sel]
            out[name] = {"n_pairs": int(sel.sum()), "n_genuine": int(labels[sel].sum()),
                         "n_impostor": int((~labels[sel]).sum()),
                         "accuracy": float(np.mean(c)) if np.isfinite(c).all() else None}
    return out
