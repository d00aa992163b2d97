"""1:N identification variants: streamed top-k search of the probes against the clean gallery,
rank-k / CMC / open-set TPIR@FPIR, and the per-probe top-k table.

Failure to enrol (NIST FRVT / IJB rule): a probe that fails to enrol is a miss at every rank (mated)
or never a false positive (non-mated: lowest possible score). A gallery image that fails to enrol is
left out of the searched gallery; an identity left without any gallery image is absent from it, but
its probes stay *mated* searches, which are then misses at every rank (they are not turned into
non-mated probes, which would flatter). Every metric uses all probes; ``enrolled_only`` has the rest."""
from __future__ import annotations

import numpy as np

from .results import VariantResult
from .verify import set_name


def score_identification(protocol, task, specs, emb_sets, sets, score_tables, curves, device,
                         progress=None) -> dict:
    """{variant name: VariantResult}; fills ``score_tables`` and ``curves``."""
    from .scoring import identification_metrics, identification_metrics_fte, top_reasons

    clean = emb_sets["clean"]
    g_keys = [k for k, _ in task.gallery]
    g_ids = np.array([i for _, i in task.gallery], dtype=object)
    ge, gok, gr = clean.get(g_keys)
    g_emb, g_lab, g_keys_ok = ge[gok], g_ids[gok].astype(str), [k for k, o in zip(g_keys, gok) if o]
    intended = set(g_ids.astype(str))  # identities the protocol enrols
    lost_ids = intended - set(g_lab)  # every gallery image of the identity failed to enrol
    p_keys = [k for k, _ in task.probes]
    p_ids = np.array([i for _, i in task.probes], dtype=str)
    n = len(p_keys)
    mated = np.isin(p_ids, list(intended))
    lost = np.isin(p_ids, list(lost_ids))
    out: dict[str, VariantResult] = {}
    for i_v, v in enumerate(specs, start=1):
        if progress is not None:
            progress.stage(f"{v.name}: search", i_v, len(specs))
        s = clean if v.mode == "clean" else emb_sets[set_name(v)]
        pe, pok, pr = s.get(p_keys)
        reasons = ["" if pok[i] else pr[i] for i in range(n)]
        # the search runs on the enrolled probes; the rule then counts every probe (scoring.identification_metrics_fte)
        m = identification_metrics(pe[pok], p_ids[pok], g_emb, g_lab, protocol.metrics["max_rank"],
                                   protocol.metrics["fpir"], device=device)
        m_all = identification_metrics_fte(m, pok, mated, len(g_emb), protocol.metrics["max_rank"],
                                           protocol.metrics["fpir"])
        m_all["metrics"]["fte_rate"] = float((~pok).mean()) if n else None
        ok_enr = pok & ~lost  # the old, enrolled-only selection: probe and its gallery identity enrolled
        m_enr = identification_metrics(pe[ok_enr], p_ids[ok_enr], g_emb, g_lab, protocol.metrics["max_rank"],
                                       protocol.metrics["fpir"], device=device) if lost.any() else m
        res = VariantResult(
            name=v.name, spec=v.to_dict(), metrics=m_all["metrics"], cmc=m_all["cmc"],
            counts={"n_probes": n, "n_scored": int(pok.sum()), "n_fte": int((~pok).sum()),
                    "n_mated": int(mated.sum()), "n_nonmated": int((~mated).sum()),
                    "n_mated_fte": int((mated & ~pok).sum()), "n_nonmated_fte": int((~mated & ~pok).sum()),
                    "n_mated_gallery_lost": int((mated & lost).sum()),
                    "n_gallery": int(gok.sum()), "n_gallery_fte": int((~gok).sum()),
                    "n_gallery_identities": len(intended) - len(lost_ids)},
            notes=m_all["notes"], fte_reasons=top_reasons(reasons + ["gallery image failed to enrol: " + r
                                                                   for r in np.asarray(gr, object)[~gok]]),
            operating_points=m_all["operating_points"])
        res.add_block("enrolled_only", {
            "what": "the same metrics on the probes that enrolled and whose identity's gallery image enrolled "
                    "(failures left out): flattering when failures are many; for comparison only",
            "metrics": m_enr["metrics"], "cmc": m_enr["cmc"], "n_probes": int(ok_enr.sum()),
            "n_mated": int((ok_enr & mated).sum()), "n_nonmated": int((ok_enr & ~mated).sum()),
            "operating_points": m_enr["operating_points"], "notes": m_enr["notes"]})
        if v.occluded:
            occ = sets[(v.run, v.synth_variant)]
            area = np.array([occ.area(k) for k in p_keys])
            res.add_block("occlusion", {"mean_area_frac": float(np.nanmean(area)) if np.isfinite(area).any()
                                        else None})
        out[v.name] = res
        score_tables[v.name] = topk_table(p_keys, p_ids, mated, pok, reasons, m, g_keys_ok, g_lab)
        if m_all["cmc"] is not None:
            curves.setdefault("cmc", {})[v.name] = (m_all["cmc"], v.to_dict())
    curves["main"] = protocol.main_score
    return out


def topk_table(p_keys, p_ids, mated, ok, reasons, m, g_keys, g_lab):
    """One row per (scored probe, rank) of the top-k list; one row (rank 0) per failed probe."""
    import pandas as pd

    rows = {c: [] for c in ("probe", "probe_key", "probe_identity", "mated", "status", "reason", "rank",
                            "gallery_key", "gallery_identity", "score", "mate_rank", "mate_score")}
    scored = np.flatnonzero(ok)
    top, mr = m["topk"], m["mate"]
    pos = {int(i): j for j, i in enumerate(scored)}
    for i in range(len(p_keys)):
        if i not in pos or top is None:
            for c, val in (("probe", i), ("probe_key", p_keys[i]), ("probe_identity", p_ids[i]),
                           ("mated", bool(mated[i])), ("status", "fte"), ("reason", reasons[i]), ("rank", 0),
                           ("gallery_key", ""), ("gallery_identity", ""), ("score", np.nan),
                           ("mate_rank", np.nan), ("mate_score", np.nan)):
                rows[c].append(val)
            continue
        j = pos[i]
        for r, (sc, gi) in enumerate(zip(top.scores[j], top.indices[j]), start=1):
            if gi < 0:
                continue
            for c, val in (("probe", i), ("probe_key", p_keys[i]), ("probe_identity", p_ids[i]),
                           ("mated", bool(mated[i])), ("status", "ok"), ("reason", ""), ("rank", r),
                           ("gallery_key", g_keys[gi]), ("gallery_identity", g_lab[gi]), ("score", float(sc)),
                           ("mate_rank", float(mr.ranks[j])), ("mate_score", float(mr.mate_scores[j]))):
                rows[c].append(val)
    return pd.DataFrame(rows)
