"""All-to-all variants (MFR style, ``kind: all-to-all``): every probe (clean, or its occluded image)
against every clean gallery image, streamed by ``occbench.metrics.alltoall`` (no score matrix, no
impostor list). Strict TAR@FAR at the protocol's targets; a target the impostor count cannot support
is not a number: ``metrics`` holds None and ``operating_points`` says how many impostors it needs.

Failure to enrol (issue 9 §1): failed probes and gallery images score ``-inf`` against everything, so
their genuine pairs are false rejects and their impostor pairs true rejects, and they stay counted;
``enrolled_only`` repeats the points on the enrolled images alone."""
from __future__ import annotations

import numpy as np

from .results import VariantResult
from .embed import keys_and_ids, variant_set


def _points(r, targets) -> tuple[dict, dict, list]:
    from ..metrics.names import far_key

    metrics, ops, notes = {}, {}, []
    for f in targets:
        key = far_key("tar_at_far", f)
        p = r.point(f)
        metrics[key] = p.tar if p.measurable else None
        ops[key] = {"tar": p.tar, "far": p.far, "threshold": p.threshold, "reachable": p.measurable,
                    "n_accepted_impostors": p.n_accepted_impostors, "needs_impostors": p.impostors_needed}
        if not p.measurable:
            notes.append(f"{key}: {p.note.removeprefix('n/a: ')}")
    return metrics, ops, notes


def score_all_to_all(protocol, task, specs, emb_sets, sets, score_tables, curves, device, progress=None) -> dict:
    """{variant name: VariantResult}; the scores table holds every genuine score and the top impostor
    scores the operating points needed."""
    import pandas as pd

    from ..metrics.alltoall import all_to_all_tar_at_far
    from .scoring import top_reasons

    clean = emb_sets["clean"]
    targets = [float(f) for f in protocol.metrics["far"]]
    g_keys, g_ids = keys_and_ids(task.gallery)
    p_keys, p_ids = keys_and_ids(task.probes)
    ge, gok, gr = clean.get(g_keys)
    out: dict[str, VariantResult] = {}
    for i_v, v in enumerate(specs, start=1):
        if progress is not None:
            progress.stage(f"{v.name}: all-to-all", i_v, len(specs))
        s = variant_set(v, emb_sets)
        pe, pok, pr = s.get(p_keys)
        r = all_to_all_tar_at_far(pe, p_ids, ge, g_ids, far=targets, probe_ok=pok, gallery_ok=gok,
                                  probe_keys=p_keys, gallery_keys=g_keys, device=device)
        metrics, ops, notes = _points(r, targets)
        n = len(p_keys)
        metrics["fte_rate"] = float((~pok).mean()) if n else None
        res = VariantResult(
            name=v.name, spec=v.to_dict(), metrics=metrics, operating_points=ops, notes=notes,
            counts={"n_probes": n, "n_scored": int(pok.sum()), "n_fte": int((~pok).sum()),
                    "n_gallery": len(g_keys), "n_gallery_fte": int((~gok).sum()), "n_genuine": r.n_genuine,
                    "n_impostor": r.n_impostor, "n_excluded_self": r.n_excluded_self},
            fte_reasons=top_reasons([pr[i] for i in range(n) if not pok[i]]
                                    + ["gallery image failed to enrol: " + gr[i] for i in range(len(g_keys))
                                       if not gok[i]]))
        if (~pok).any() or (~gok).any():
            re = all_to_all_tar_at_far(pe[pok], p_ids[pok], ge[gok], g_ids[gok], far=targets,
                                       probe_keys=np.array(p_keys)[pok], gallery_keys=np.array(g_keys)[gok],
                                       device=device) if pok.any() and gok.any() else None
        else:
            re = r
        if re is not None:
            m_e, ops_e, notes_e = _points(re, targets)
            res.add_block("enrolled_only", {
                "what": "the same points on the images that enrolled (failures left out): flattering when "
                        "failures are many; for comparison only",
                "metrics": m_e, "operating_points": ops_e, "notes": notes_e, "n_genuine": re.n_genuine,
                "n_impostor": re.n_impostor})
        if v.occluded:
            occ = sets[(v.run, v.synth_variant)]
            area = np.array([occ.area(k) for k in p_keys])
            res.add_block("occlusion", {"mean_area_frac": float(np.nanmean(area)) if np.isfinite(area).any()
                                        else None})
        out[v.name] = res
        score_tables[v.name] = pd.DataFrame({
            "kind": ["genuine"] * r.genuine_scores.size + ["top_impostor"] * r.top_impostor_scores.size,
            "score": np.concatenate([r.genuine_scores, r.top_impostor_scores]).astype(np.float64)})
    curves["main"] = protocol.main_score
    return out
