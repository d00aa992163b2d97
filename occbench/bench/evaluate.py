"""The benchmark engine: one protocol x one recognizer -> a results dict (and files).

Steps (timed):
1. landmarks of every clean image (cached), then ``recognizer.alignment_transform`` on the *clean*
   image -> M (cached per model). Occlusion never changes the alignment.
2. occluded variants via ``run_synth`` with the same landmarks (``variants.synthesize``).
3. crops = warp(image, M) for the clean and every occluded image set; embeddings cached per
   (model fingerprint, protocol hash, image set + inputs digest) in ``EmbeddingCache``.
4. scores = cosine similarity (dot product of L2-normalised embeddings); metrics per variant.

Failure policy (failure to enrol, FTE): an image that is missing, undecodable, faceless (no
landmarks), unalignable, not occludable or not embeddable has no embedding. Every pair (1:1) or
probe (1:N) that needs such an embedding is *excluded* from that variant's metrics and counted
(``n_fte``, with reasons); every failed image is listed under ``failures``. A gallery image that
fails removes its identity's mated probes (counted as FTE), rather than turning them into
non-mated probes. Landmark failures do not depend on the model, so all models are scored on the
same clean pairs.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import ConfigError
from .data import Task, load_task
from .protocols import Protocol, VariantSpec, canonical_json, protocol_hash
from .variants import CleanLandmarks, OccludedSet, clean_landmarks, keys_digest, synthesize

CACHE_ENV = "OCCBENCH_CACHE"
DEFAULT_CACHE = ".occbench_cache"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


@dataclass
class EmbSet:
    """Embeddings of one image set (clean or one occluded variant) over a list of keys."""

    name: str
    index: dict[str, int]
    emb: np.ndarray  # (N, D) float32, NaN rows where not ok
    ok: np.ndarray  # (N,) bool
    reasons: list[str]
    stages: list[str]  # stage of the failure ("" when ok)
    cached: bool

    def get(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        idx = np.array([self.index[k] for k in keys], np.int64)
        return self.emb[idx], self.ok[idx], [self.reasons[i] for i in idx]


class _Timer:
    def __init__(self):
        self.t: dict[str, float] = {}

    def add(self, name: str, t0: float) -> None:
        self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t0


# ----------------------------------------------------------------------------------- alignment


def _alignments(recognizer, task: Task, keys: list[str], lms: CleanLandmarks, cache, phash: str,
                progress: bool) -> tuple[np.ndarray, list[str], list[str], bool]:
    """(M (N,2,3) float64, NaN where none; reasons; stages; from cache?) for the clean images.

    Besides the per-protocol entry, successful alignments are memoised per image content (sha256 of
    the image bytes and its five points) for this recognizer, so other protocols on the same images
    (lfw, lfw-occ, lfw-occ-id) reuse them instead of running a face detector again."""
    from ..io.images import decode_rgb
    from ..recognizers.extract import CacheKey

    digest = hashlib.sha256((canonical_json(keys) + lms.inputs_digest()).encode()).hexdigest()[:16]
    key = CacheKey(recognizer.fingerprint(), phash, f"align-{digest}")
    hit = cache.get(key)
    if hit is not None:
        arr, meta = hit
        return arr, meta["reasons"], meta["stages"], True
    memo = AlignmentMemo(cache, recognizer.fingerprint())
    n = len(keys)
    ms = np.full((n, 2, 3), np.nan)
    reasons, stages = [""] * n, [""] * n
    from tqdm.auto import tqdm

    for i, k in enumerate(tqdm(keys, desc="align", unit="img", disable=not progress, leave=False)):
        if k in task.missing:
            reasons[i], stages[i] = task.missing[k], "missing"
            continue
        five = lms.five(k)
        if five is None:
            reasons[i], stages[i] = lms.failure(k), "landmarks"
            continue
        m = None
        try:
            data = task.read_bytes(k)
            m = memo.get(data, five)
            if m is None:
                m = recognizer.alignment_transform(decode_rgb(data), five)
                if m is not None:
                    memo.add(data, five, m)
        except Exception as e:  # noqa: BLE001 - recorded per image
            m, reasons[i] = None, f"{type(e).__name__}: {e}"
        if m is None:
            reasons[i] = reasons[i] or f"recognizer {recognizer.name} could not align this face"
            stages[i] = "alignment"
            continue
        ms[i] = np.asarray(m, np.float64)
    memo.save()
    cache.put(key, ms, {"reasons": reasons, "stages": stages})
    return ms, reasons, stages, False


class AlignmentMemo:
    """Per-recognizer table image-content digest -> 2x3 alignment, kept in the embedding cache as one
    structured array (no pickle). Saving merges with what another run may have added meanwhile."""

    DTYPE = np.dtype([("digest", "u1", (32,)), ("m", "<f8", (2, 3))])

    def __init__(self, cache, fingerprint: str):
        from ..recognizers.extract import CacheKey

        self.cache, self.key = cache, CacheKey(fingerprint, "alignments", "by-content")
        self.table = self._load()
        self.new: dict[bytes, np.ndarray] = {}

    def _load(self) -> dict[bytes, np.ndarray]:
        hit = self.cache.get(self.key)
        if hit is None or hit[0].dtype != self.DTYPE:
            return {}
        return {r["digest"].tobytes(): np.array(r["m"]) for r in hit[0]}

    @staticmethod
    def digest(data: bytes, five) -> bytes:
        pts = getattr(five, "five", five)  # FaceLandmarks or (5, 2) points
        return hashlib.sha256(data + np.ascontiguousarray(pts, np.float64).tobytes()).digest()

    def get(self, data: bytes, five) -> np.ndarray | None:
        d = self.digest(data, five)
        return self.new.get(d, self.table.get(d))

    def add(self, data: bytes, five, m) -> None:
        self.new[self.digest(data, five)] = np.asarray(m, np.float64)

    def save(self) -> None:
        if not self.new:
            return
        table = {**self._load(), **self.new}
        arr = np.empty(len(table), self.DTYPE)
        for i, (d, m) in enumerate(sorted(table.items())):
            arr[i] = (np.frombuffer(d, np.uint8), m)
        self.cache.put(self.key, arr, {"entries": len(arr)})
        self.table, self.new = table, {}


# ----------------------------------------------------------------------------------- embeddings


def _embed_set(name: str, recognizer, keys: list[str], sources: list, pre_reasons: list[str],
               pre_stages: list[str], ms: np.ndarray, cache, phash: str, inputs_id: str, batch_size: int,
               num_workers: int, progress: bool) -> EmbSet:
    """Embed ``sources[i]`` (path | bytes | None) aligned by ``ms[i]``; None/NaN M -> failure as given."""
    from ..recognizers.extract import AlignedCropDataset, CacheKey, extract_embeddings

    digest = hashlib.sha256(canonical_json([keys, inputs_id, hashlib.sha256(ms.tobytes()).hexdigest()])
                            .encode()).hexdigest()[:16]
    key = CacheKey(recognizer.fingerprint(), phash, f"{name}-{digest}")
    index = {k: i for i, k in enumerate(keys)}
    hit = cache.get(key)
    if hit is not None:
        emb, meta = hit
        return EmbSet(name, index, emb, np.asarray(meta["ok"], bool), meta["reasons"], meta["stages"], True)
    n = len(keys)
    reasons, stages = list(pre_reasons), list(pre_stages)
    valid = [i for i in range(n) if sources[i] is not None and np.isfinite(ms[i]).all()]
    ok = np.zeros(n, bool)
    items = [(sources[i], ms[i]) for i in valid]
    ds = AlignedCropDataset(items, tuple(recognizer.preprocess.input_size))
    if items:
        e, good, why = extract_embeddings(recognizer, ds, batch_size=batch_size, num_workers=num_workers,
                                          progress=progress)
        emb = np.full((n, e.shape[1]), np.nan, np.float32)
        for j, i in enumerate(valid):
            if good[j]:
                emb[i] = e[j]
                ok[i] = True
            else:
                reasons[i], stages[i] = why[j], "embedding"
    else:
        h, w = recognizer.preprocess.input_size
        emb = np.full((n, recognizer.embed(np.zeros((1, h, w, 3), np.uint8)).shape[1]), np.nan, np.float32)
    cache.put(key, emb, {"ok": ok.tolist(), "reasons": reasons, "stages": stages, "set": name, "n": n})
    return EmbSet(name, index, emb, ok, reasons, stages, False)


def _set_name(v: VariantSpec) -> str:
    return f"{v.run}/{v.synth_variant}"


# ----------------------------------------------------------------------------------- engine


def evaluate(protocol: Protocol, recognizer, data_root=None, out_dir=None, cache_dir=None, batch_size: int = 128,
             num_workers: int = 0, save_scores: bool = False, limit_pairs: int | None = None, progress: bool = True,
             *, model_info: dict | None = None, plots: bool = True, allow_unsafe_pickle: bool = False,
             device: str = "cpu", variants: list[str] | None = None) -> dict:
    """Evaluate ``recognizer`` on ``protocol``; returns the results dict.

    With ``out_dir`` the results are written as ``out_dir/<protocol>.json`` (atomically), with
    ``out_dir/<protocol>.scores/<variant>.parquet`` when ``save_scores`` and the plots
    ``out_dir/<protocol>.<plot>.png`` when ``plots``. ``variants`` restricts the evaluated variants
    (default: all). ``device`` is where the 1:N search runs.
    """
    from ..recognizers.extract import EmbeddingCache
    from . import results as R

    timer = _Timer()
    t_start = time.perf_counter()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    num_workers = max(int(num_workers), 0)
    jobs = max(num_workers, 1)

    t0 = time.perf_counter()
    task = load_task(protocol, data_root, allow_unsafe_pickle=allow_unsafe_pickle, limit=limit_pairs)
    phash = protocol_hash(protocol, task.identity)
    specs = protocol.variants()
    if variants is not None:
        unknown = sorted(set(variants) - {v.name for v in specs})
        if unknown:
            raise ConfigError(f"unknown variants {', '.join(unknown)} for protocol {protocol.name}; "
                              f"known: {', '.join(v.name for v in specs)}")
        specs = [v for v in specs if v.name in variants or v.name == "clean"]
    keys = task.keys()
    if not keys:
        raise ConfigError(f"protocol {protocol.name} selects no images")
    run_dir = cache_dir / "runs" / phash / keys_digest(keys)
    run_dir.mkdir(parents=True, exist_ok=True)
    timer.add("data_s", t0)

    # 1. landmarks + alignment on the clean images
    t0 = time.perf_counter()
    lms = clean_landmarks(task, keys, cache_dir, run_dir, task.root, jobs=jobs, progress=progress)
    timer.add("landmarks_s", t0)
    cache = EmbeddingCache(cache_dir / "embeddings")
    t0 = time.perf_counter()
    ms, al_reasons, al_stages, al_cached = _alignments(recognizer, task, keys, lms, cache, phash, progress)
    timer.add("alignment_s", t0)

    # 2. occluded variants
    sets: dict[tuple[str, str], OccludedSet] = {}
    synth_info: dict = {}
    occluded_specs = [v for v in specs if v.occluded]
    if occluded_specs:
        t0 = time.perf_counter()
        sets, synth_info = synthesize(protocol, task, task.probe_keys(), lms.table, run_dir, jobs=jobs,
                                      progress=progress, runs={v.run for v in occluded_specs})
        timer.add("synth_s", t0)
        for v in occluded_specs:
            if (v.run, v.synth_variant) not in sets:
                raise ConfigError(f"internal: synth run {v.run} produced no variant {v.synth_variant!r} "
                                  f"(has {sorted(s for r, s in sets if r == v.run)})")

    # 3. embeddings
    t0 = time.perf_counter()
    key_index = {k: i for i, k in enumerate(keys)}
    sources = []
    for k in keys:
        try:
            sources.append(None if k in task.missing else task.image_source(k))
        except Exception:  # noqa: BLE001 - the alignment step recorded why
            sources.append(None)
    emb_sets: dict[str, EmbSet] = {
        "clean": _embed_set("clean", recognizer, keys, sources, al_reasons, al_stages, ms, cache, phash,
                            canonical_json(task.identity) + lms.inputs_digest(), batch_size, num_workers,
                            progress)}
    pkeys = task.probe_keys()
    p_idx = np.array([key_index[k] for k in pkeys], np.int64)
    for v in occluded_specs:
        name = _set_name(v)
        if name in emb_sets:
            continue
        occ = sets[(v.run, v.synth_variant)]
        srcs, reasons, stages = [], [], []
        for k, i in zip(pkeys, p_idx):
            if al_stages[i]:  # no clean alignment: the failure is the clean image's
                src, why, stage = None, al_reasons[i], al_stages[i]
            else:
                why = occ.failure(k)
                src, stage = (occ.image_path(k), "") if why is None else (None, "occlusion")
            srcs.append(src)
            reasons.append(why or "")
            stages.append(stage)
        emb_sets[name] = _embed_set(name, recognizer, pkeys, srcs, reasons, stages, ms[p_idx], cache, phash,
                                    occ.fingerprint, batch_size, num_workers, progress)
    timer.add("extraction_s", t0)

    # 4. scores and metrics
    t0 = time.perf_counter()
    score_tables: dict[str, object] = {}
    curves: dict[str, dict] = {}
    if task.kind == "verification":
        variant_results = _score_verification(protocol, task, specs, emb_sets, sets, score_tables, curves)
    else:
        variant_results = _score_identification(protocol, task, specs, emb_sets, sets, score_tables, curves, device)
    timer.add("scoring_s", t0)

    failures = _failures(keys, emb_sets, pkeys)
    ms_spec = protocol.main_score
    main_val = variant_results.get(ms_spec["variant"], {}).get("metrics", {}).get(ms_spec["metric"])
    res = {
        "schema_version": R.SCHEMA_VERSION,
        "occbench_version": __version__,
        "protocol": {"name": protocol.name, "version": protocol.version, "hash": phash, "kind": protocol.kind,
                     "description": protocol.description, "data": task.identity, "subset": task.subset,
                     "landmarks": {k: v for k, v in lms.describe.items() if k != "path"},
                     "occlusion": protocol.occlusion,
                     "source": Path(protocol.path).name if protocol.path else None},
        "model": R.model_block(recognizer, model_info),
        "main_score": {**ms_spec, "value": main_val},
        "seed": protocol.seed,
        "counts": {**task.counts(), "n_failed_images": failures["n_images"]},
        "variants": variant_results,
        "variant_order": list(variant_results),  # report order (the JSON's keys are sorted)
        "failures": failures,
        # synth fingerprints are left out: they include cache paths (the embedding cache keys use them)
        "synth": {name: {k: v for k, v in info.items() if k in ("variants", "status_counts")}
                  for name, info in synth_info.items()},
        "cache": {"embedding_sets": len(emb_sets), "embedding_hits": sum(e.cached for e in emb_sets.values()),
                  "alignment_hit": al_cached, "landmarks_computed": lms.computed, "dir": str(cache_dir)},
        "failure_policy": "failures to enrol are excluded from the metrics and counted per variant (n_fte)",
        "environment": R.environment(model_info, recognizer),
        "created": R.now_iso(),
    }
    timer.t["total_s"] = time.perf_counter() - t_start
    res["timing"] = {k: round(v, 3) for k, v in timer.t.items()}
    if out_dir is not None:
        R.write_outputs(res, Path(out_dir), score_tables if save_scores else None, curves if plots else None)
    return res


# ----------------------------------------------------------------------------------- verification


def _pair_sets(v: VariantSpec, emb_sets: dict[str, EmbSet]) -> tuple[EmbSet, EmbSet]:
    clean = emb_sets["clean"]
    if v.mode == "clean":
        return clean, clean
    occ = emb_sets[_set_name(v)]
    return (clean, occ) if v.mode == "N-O" else (occ, occ)


def _score_verification(protocol, task: Task, specs, emb_sets, sets, score_tables, curves) -> dict:
    import pandas as pd

    from ..metrics import roc_curve
    from .scoring import area_breakdown, cell_drop, verification_metrics

    k1 = [p.key1 for p in task.pairs]
    k2 = [p.key2 for p in task.pairs]
    labels = np.array([p.same for p in task.pairs], bool)
    folds = np.array([p.fold for p in task.pairs], np.int64)
    n = len(task.pairs)
    far_targets = protocol.metrics["far"]
    kk = protocol.occlusion["k"] if protocol.occlusion else None
    out: dict = {}
    clean_correct = None
    for v in specs:
        sa, sb = _pair_sets(v, emb_sets)
        ea, oka, ra = sa.get(k1)
        eb, okb, rb = sb.get(k2)
        ok = oka & okb
        scores = np.full(n, np.nan)
        scores[ok] = np.einsum("ij,ij->i", ea[ok].astype(np.float64), eb[ok].astype(np.float64))
        reasons = ["" if ok[i] else (ra[i] if not oka[i] else rb[i]) for i in range(n)]
        m = verification_metrics(scores[ok], labels[ok], folds[ok], far_targets)
        correct = np.full(n, np.nan)
        if m["correct"] is not None:
            correct[ok] = m["correct"].astype(np.float64)
        entry = {
            "spec": v.to_dict(),
            "metrics": m["metrics"],
            "n_pairs": n, "n_scored": int(ok.sum()), "n_fte": int((~ok).sum()),
            "n_genuine": int(labels[ok].sum()), "n_impostor": int((~labels[ok]).sum()),
            "fte_reasons": _top_reasons(reasons),
            "thresholds": m["thresholds"], "operating_points": m["operating_points"], "notes": m["notes"],
        }
        cols = {"pair": np.arange(n), "key1": k1, "key2": k2, "same": labels, "fold": folds, "score": scores,
                "status": np.where(ok, "ok", "fte"), "reason": reasons}
        if v.occluded:
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
            entry["occlusion"] = {"area": area_breakdown(area, correct, clean_correct)}
            if clean_correct is not None:
                entry["occlusion"]["cells"] = cell_drop(cells, correct, clean_correct, kk)
        if v.mode == "clean":
            clean_correct = correct
        out[v.name] = entry
        score_tables[v.name] = pd.DataFrame(cols)
        if ok.any() and labels[ok].any() and (~labels[ok]).any():
            far, tar, _ = roc_curve(scores[ok], labels[ok])
            curves.setdefault("roc", {})[v.name] = (far, tar, v.to_dict())
        if "occlusion" in entry:
            curves.setdefault("area", {})[v.name] = entry["occlusion"]["area"]
            if "cells" in entry["occlusion"]:
                curves.setdefault("cells", {})[v.name] = entry["occlusion"]["cells"]
    curves["main"] = protocol.main_score
    return out


# ----------------------------------------------------------------------------------- identification


def _score_identification(protocol, task: Task, specs, emb_sets, sets, score_tables, curves, device) -> dict:
    import pandas as pd

    from .scoring import identification_metrics

    clean = emb_sets["clean"]
    g_keys = [k for k, _ in task.gallery]
    g_ids = np.array([i for _, i in task.gallery], dtype=object)
    ge, gok, gr = clean.get(g_keys)
    failed_ids = {g_ids[i] for i in range(len(g_keys)) if not gok[i]}
    g_emb, g_lab, g_keys_ok = ge[gok], g_ids[gok].astype(str), [k for k, o in zip(g_keys, gok) if o]
    p_keys = [k for k, _ in task.probes]
    p_ids = np.array([i for _, i in task.probes], dtype=str)
    n = len(p_keys)
    out: dict = {}
    for v in specs:
        s = clean if v.mode == "clean" else emb_sets[_set_name(v)]
        pe, pok, pr = s.get(p_keys)
        lost = np.array([i in failed_ids for i in p_ids], bool)
        ok = pok & ~lost
        reasons = ["" if ok[i] else (pr[i] if not pok[i] else "the gallery image of this identity failed")
                   for i in range(n)]
        m = identification_metrics(pe[ok], p_ids[ok], g_emb, g_lab, protocol.metrics["max_rank"],
                                   protocol.metrics["fpir"], device=device)
        mated = np.isin(p_ids, g_lab)
        entry = {
            "spec": v.to_dict(), "metrics": m["metrics"], "cmc": m["cmc"],
            "n_probes": n, "n_scored": int(ok.sum()), "n_fte": int((~ok).sum()),
            "n_mated": int((ok & mated).sum()), "n_nonmated": int((ok & ~mated).sum()),
            "n_gallery": int(gok.sum()), "n_gallery_fte": int((~gok).sum()),
            "fte_reasons": _top_reasons(reasons), "operating_points": m["operating_points"], "notes": m["notes"],
        }
        if v.occluded:
            occ = sets[(v.run, v.synth_variant)]
            area = np.array([occ.area(k) for k in p_keys])
            entry["occlusion"] = {"mean_area_frac": float(np.nanmean(area)) if np.isfinite(area).any() else None}
        out[v.name] = entry
        score_tables[v.name] = _topk_table(p_keys, p_ids, mated, ok, reasons, m, g_keys_ok, g_lab)
        if m["cmc"] is not None:
            curves.setdefault("cmc", {})[v.name] = (m["cmc"], v.to_dict())
    curves["main"] = protocol.main_score
    return out


def _topk_table(p_keys, p_ids, mated, ok, reasons, m, g_keys, g_lab):
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


# ----------------------------------------------------------------------------------- failures


def _top_reasons(reasons: list[str], n: int = 10) -> dict[str, int]:
    c = Counter(r for r in reasons if r)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:n])


def _failures(keys: list[str], emb_sets: dict[str, EmbSet], pkeys: list[str]) -> dict:
    """Every image that has no embedding, per image set; clean failures are not repeated per occluded set."""
    clean = emb_sets["clean"]
    items = []
    for k in keys:
        i = clean.index[k]
        if not clean.ok[i]:
            items.append({"key": k, "set": "clean", "stage": clean.stages[i], "reason": clean.reasons[i]})
    clean_failed = {it["key"] for it in items}
    for name, s in emb_sets.items():
        if name == "clean":
            continue
        for k in pkeys:
            i = s.index[k]
            if not s.ok[i] and k not in clean_failed:
                items.append({"key": k, "set": name, "stage": s.stages[i], "reason": s.reasons[i]})
    by_stage = Counter(it["stage"] for it in items)
    return {"n_images": len({it["key"] for it in items}), "n_entries": len(items),
            "by_stage": dict(sorted(by_stage.items())), "images": items}
