"""1:N identification variants: streamed top-k search of the probes against the clean gallery,
rank-k / CMC / open-set TPIR@FPIR, and the per-probe top-k table.

Failure to enrol (NIST FRVT / IJB rule): a probe that fails to enrol is a miss at every rank (mated)
or never a false positive (non-mated: lowest possible score). A gallery image that fails to enrol is
left out of the searched gallery; an identity left without any gallery image is absent from it, but
its probes stay *mated* searches, which are then misses at every rank (they are not turned into
non-mated probes, which would flatter). Every metric uses all probes; ``enrolled_only`` has the rest."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .parts import identification_parts
from .results import VariantResult
from .embed import keys_and_ids, variant_set


@dataclass
class SearchSetup:
    """How the 1:N search runs (``--search``, ``--distractors``, ``--distractor-sweep``)."""

    backend: str = "torch"  # torch | faiss (exact) | faiss-ivf | faiss-hnsw (approximate)
    recall_sample: int = 1000  # approximate backends: seeded probes checked against exact search
    seed: int = 0
    distractors: object = None  # bench.distractors.DistractorSet, added to the gallery
    sweep: tuple[int, ...] | None = None  # distractor counts (first N enrolled distractors in list order)


class _Gallery:
    """The enrolled gallery followed by the distractors, searched part by part (never concatenated)."""

    def __init__(self, *parts):
        self.parts = [p for p in parts]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)


def _searcher(setup: SearchSetup, device, log: list):
    """search(probes, gallery, k) -> TopK for identification_metrics; each SearchResult goes to ``log``."""
    from ..search import search_parts

    def run(probes, gallery, k):
        parts = gallery.parts if isinstance(gallery, _Gallery) else [gallery]
        r = search_parts(probes, parts, k, setup.backend, device=device, recall_sample=setup.recall_sample,
                         seed=setup.seed)
        log.append(r)
        return r.topk

    return run


def _search_block(r) -> dict:
    """What the results record about a search (no timings: the block is part of the reproducible results)."""
    d = {k: v for k, v in r.to_dict().items() if not k.endswith("_s")}
    d["what"] = ("exact search" if r.exact else
                 f"APPROXIMATE search: recall_at_k = mean |approximate top-{r.k} ∩ exact top-{r.k}| / {r.k} on "
                 f"{r.recall_sample} seeded probes; the variant's metrics come from the approximate lists")
    return d


def score_identification(protocol, task, specs, emb_sets, sets, score_tables, curves, device,
                         progress=None, setup: SearchSetup | None = None) -> dict:
    """{variant name: VariantResult}; fills ``score_tables`` and ``curves``."""
    from .distractors import distractor_label
    from .scoring import identification_metrics, identification_metrics_fte, top_reasons

    setup = setup or SearchSetup()
    custom = setup.backend != "torch" or setup.distractors is not None
    clean = emb_sets["clean"]
    g_keys, g_ids = keys_and_ids(task.gallery, dtype=object)
    ge, gok, gr = clean.get(g_keys)
    g_emb, g_lab, g_keys_ok = ge[gok], g_ids[gok].astype(str), [k for k, o in zip(g_keys, gok) if o]
    intended = set(g_ids.astype(str))  # identities the protocol enrols
    lost_ids = intended - set(g_lab)  # every gallery image of the identity failed to enrol
    p_keys, p_ids = keys_and_ids(task.probes)
    n = len(p_keys)
    mated = np.isin(p_ids, list(intended))
    lost = np.isin(p_ids, list(lost_ids))
    dset = setup.distractors
    searched, s_lab, s_keys = g_emb, g_lab, g_keys_ok  # what the main search sees
    if dset is not None:
        dlab = distractor_label(p_ids)
        searched = _Gallery(g_emb, dset.emb)
        s_lab = np.concatenate([g_lab.astype(object), np.full(dset.n, dlab, object)]).astype(str)
        s_keys = g_keys_ok + list(dset.keys)
    out: dict[str, VariantResult] = {}
    for i_v, v in enumerate(specs, start=1):
        if progress is not None:
            progress.stage(f"{v.name}: search", i_v, len(specs))
        s = variant_set(v, emb_sets)
        pe, pok, pr = s.get(p_keys)
        reasons = ["" if pok[i] else pr[i] for i in range(n)]
        log: list = []
        search = _searcher(setup, device, log) if custom else None
        # the search runs on the enrolled probes; the rule then counts every probe (scoring.identification_metrics_fte)
        m = identification_metrics(pe[pok], p_ids[pok], searched, s_lab, protocol.metrics["max_rank"],
                                   protocol.metrics["fpir"], device=device, search=search)
        m_all = identification_metrics_fte(m, pok, mated, len(searched), protocol.metrics["max_rank"],
                                           protocol.metrics["fpir"])
        m_all["metrics"]["fte_rate"] = float((~pok).mean()) if n else None
        ok_enr = pok & ~lost  # the old, enrolled-only selection: probe and its gallery identity enrolled
        m_enr = identification_metrics(pe[ok_enr], p_ids[ok_enr], searched, s_lab, protocol.metrics["max_rank"],
                                       protocol.metrics["fpir"], device=device, search=search) if lost.any() else m
        counts = {"n_probes": n, "n_scored": int(pok.sum()), "n_fte": int((~pok).sum()),
                  "n_mated": int(mated.sum()), "n_nonmated": int((~mated).sum()),
                  "n_mated_fte": int((mated & ~pok).sum()), "n_nonmated_fte": int((~mated & ~pok).sum()),
                  "n_mated_gallery_lost": int((mated & lost).sum()),
                  "n_gallery": int(gok.sum()), "n_gallery_fte": int((~gok).sum()),
                  "n_gallery_identities": len(intended) - len(lost_ids)}
        if dset is not None:
            counts["n_distractors"] = dset.n
        res = VariantResult(
            name=v.name, spec=v.to_dict(), metrics=m_all["metrics"], cmc=m_all["cmc"],
            counts=counts,
            notes=m_all["notes"], fte_reasons=top_reasons(reasons + ["gallery image failed to enrol: " + r
                                                                   for r in np.asarray(gr, object)[~gok]]),
            operating_points=m_all["operating_points"])
        res.add_block("enrolled_only", {
            "what": "the same metrics on the probes that enrolled and whose identity's gallery image enrolled "
                    "(failures left out): flattering when failures are many; for comparison only",
            "metrics": m_enr["metrics"], "cmc": m_enr["cmc"], "n_probes": int(ok_enr.sum()),
            "n_mated": int((ok_enr & mated).sum()), "n_nonmated": int((ok_enr & ~mated).sum()),
            "operating_points": m_enr["operating_points"], "notes": m_enr["notes"]})
        if log:
            res.add_block("search", _search_block(log[0]))
        if setup.sweep is not None and not mated.any():
            res.notes.append("distractor_sweep: no mated probes, so rank-1 against gallery size is undefined")
        elif setup.sweep is not None:
            sw = sweep_all_probes(pe, pok, p_ids, mated, g_emb, g_lab, dset.emb, setup.sweep,
                                  protocol.metrics["fpir"], device)
            res.add_block("distractor_sweep", {
                **sw.to_dict(),
                "what": "rank-1 and TPIR@FPIR (rank 1, ties against the probe, failures to enrol counted) with the "
                        "first n_distractors enrolled distractors (list order) added to the gallery; exact search "
                        "(one pass over the distractors), whatever --search"})
        if v.occluded:
            occ = sets[(v.run, v.synth_variant)]
            area = np.array([occ.area(k) for k in p_keys])
            res.add_block("occlusion", {"mean_area_frac": float(np.nanmean(area)) if np.isfinite(area).any()
                                        else None})
        identification_parts(res, v, sets, p_keys, mated, pok, m, out.get("clean"))  # rank-1 by part covered
        out[v.name] = res
        score_tables[v.name] = topk_table(p_keys, p_ids, mated, pok, reasons, m, s_keys, s_lab)
        if m_all["cmc"] is not None:
            curves.setdefault("cmc", {})[v.name] = (m_all["cmc"], v.to_dict())
    curves["main"] = protocol.main_score
    return out


def sweep_all_probes(pe, pok, p_ids, mated, g_emb, g_lab, d_emb, sizes, fpir, device):
    """:func:`~occbench.search.distractor_sweep` over every probe under the failure-to-enrol rule:
    the searches run on the enrolled probes; a failed probe has no scores (a mated one misses at every
    size, a non-mated one gets the lowest score), as in the variant's own metrics."""
    from ..metrics import topk_search
    from ..search import distractor_sweep, segment_max_scores
    from .scoring import fte_score

    n, ok = len(pok), np.flatnonzero(pok)
    kq = min(2, len(g_emb))
    scores = np.full((n, max(kq, 1)), -np.inf, np.float32)
    ids = np.full((n, max(kq, 1)), -1, np.int64)
    seg = np.full((n, len(sizes)), -np.inf, np.float32)
    if ok.size and kq:
        top = topk_search(pe[pok], g_emb, kq, device=device)
        scores[ok], ids[ok] = top.scores, top.indices
    if ok.size:
        seg[ok] = segment_max_scores(pe[pok], d_emb, list(sizes), device=device)
    floor = fte_score(np.concatenate([scores.ravel(), seg.ravel()]))
    labels = g_lab if len(g_lab) else np.array(["<no enrolled gallery image>"])
    return distractor_sweep(scores, ids, p_ids, labels, seg, list(sizes), fpir, mated=mated, nonmated_floor=floor)


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
