"""Face attributes under occlusion: the engine of protocol kind ``attributes`` (issue 12 §3, MGMTN's task).

Data: an image folder and a label file read as published (``occbench.io.attributes``: occbench's
``attributes.csv``, CelebA's ``list_attr_celeba.txt``, LFW's ``lfw_attributes.txt``). Model: any
recognizer that declares an ``attributes`` output (names + N x A logits; ``recognizers.outputs``),
loaded like every recognizer (TorchScript, state dict + arch, ONNX, factory).

Flow (the recognition engine's steps, then attribute scoring instead of pair scores):

1. labels; the model's attribute names matched to the label columns by name
   (``io.attributes.match_attributes``); model-only and label-only names are reported, never dropped
   silently; no match at all is an error;
2. landmarks of the clean images and the model's alignment (cached, ``bench.variants`` / ``bench.embed``);
   occluded variants through ``run_synth`` (same machinery as ``lfw-occ``: clean + one variant per
   scale / occluder / placement; each image is occluded on its own);
3. attribute logits of every image set (clean, each occluded synth variant), cached per model;
4. per variant: per-attribute accuracy, balanced accuracy and AP and their means
   (``metrics.attributes``), the change against clean, and for occluded variants the breakdown by
   face part covered (the synth manifest's ``part_<name>`` fractions, covered = fraction >= 0.5).

Unknown labels (-1 / empty) are left out per attribute and counted (``n_unknown``). Failure policy
(as for recognition, NIST rule): an image without a prediction (missing, no landmarks, not alignable,
not occludable, not decodable) counts as a wrong answer on every attribute with a known label (a
positive scores lowest, a negative highest); ``enrolled_only`` repeats the metrics without them.
"""
from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataNotFoundError
from ..io.attributes import (AttributeTable, match_attributes, read_attributes_csv, read_celeba_attributes,
                             read_lfw_attributes)
from ..metrics.attributes import METRICS as ATTR_METRICS, attribute_metrics, compare_variants, metrics_by_part
from .protocols import ATTRIBUTE_LAYOUTS, Protocol, canonical_json, protocol_hash

COVERED_AT = 0.5  # a part counts as covered when at least this share of its pixels is occluded
WORST = 1e6  # the score of a failed image: the wrong side of the threshold, last / first in the ranking
FAILURE_POLICY = {
    "rule": "nist-frvt",
    "summary": "an image without a prediction counts as a wrong answer on every attribute with a known label",
    "attributes": "an image that has no prediction (missing, no landmarks, not alignable, not occludable, not "
                  "decodable) is scored as wrong on each attribute with a known label: a positive gets the lowest "
                  "score, a negative the highest. Accuracy, balanced accuracy and AP use every image; the "
                  "enrolled_only block repeats them without the failures",
    "unknown_labels": "labels -1 / empty are left out per attribute and counted (n_unknown)",
}
_METRIC_NAMES = {"accuracy": "attr_accuracy", "balanced_accuracy": "attr_balanced_accuracy", "ap": "attr_ap"}
_NEEDS = {"accuracy": "a known label", "balanced_accuracy": "both classes", "ap": "a positive"}


# ----------------------------------------------------------------------------------- data


def load_attribute_task(protocol: Protocol, data_root=None, limit: int | None = None):
    """(Task, AttributeTable, info) of an ``attributes`` protocol: the labelled images under the image
    folder. occbench CSV: every listed path must exist (row-numbered error otherwise). CelebA / LFW
    files list a whole data set: labelled images absent from the folder are counted in ``info``
    (``n_labels_without_image``, examples), never used silently."""
    from ..paths import safe_join
    from .data import Task, _data_root, _file_identity, _find_file, _images_dir, check_images

    layout = ATTRIBUTE_LAYOUTS[protocol.data["format"]]
    user = protocol.overrides.get("attributes")
    root = _data_root(protocol, data_root, Path(user).parent if user else None)
    images = _images_dir(protocol, root)
    af = _find_file(protocol, root, "attributes")
    if layout == "csv":
        table = read_attributes_csv(af, root=images)
    elif layout == "celeba":
        table = read_celeba_attributes(af)
    else:
        table = read_lfw_attributes(af)
    info: dict = {"file": af.name, "layout": layout, "n_labelled": len(table.keys)}
    keys = sorted(table.keys)
    if layout != "csv":
        present = [k for k in keys if safe_join(images, k).is_file()]
        absent = sorted(set(keys) - set(present))
        info["n_labels_without_image"] = len(absent)
        info["labels_without_image_examples"] = absent[:5]
        keys = present
    if not keys:
        raise DataNotFoundError(f"none of the {len(table.keys):,} images labelled in {af} is under {images}. "
                                f"{protocol.expects(str(root))}")
    subset = None
    if limit is not None and int(limit) < len(keys):  # evenly spaced over the sorted keys
        idx = np.unique(np.linspace(0, len(keys) - 1, int(limit)).round().astype(int))
        keys = [keys[i] for i in idx]
        subset = {"limit": int(limit), "n_selected": len(keys)}
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()
    task = Task(protocol, "attributes", str(images), images_root=images, probes=[(k, "") for k in keys],
                identity={"attributes": _file_identity(af), "layout": layout,
                          "images": {"n": len(keys), "keys_sha256": digest}}, subset=subset, root=root)
    return check_images(task), table, info


# ----------------------------------------------------------------------------------- predictions


@dataclass
class AttrSet:
    """The model's attribute logits over one image set (rows as the task's keys; NaN where no prediction)."""

    name: str
    logits: np.ndarray  # (N, A_model) float32
    ok: np.ndarray  # (N,) bool
    reasons: list[str]
    stages: list[str]
    cached: bool


def predict_set(name: str, recognizer, keys: list[str], sources: list, pre_reasons: list[str],
                pre_stages: list[str], ms: np.ndarray, cache, phash: str, inputs_id: str, batch_size: int,
                num_workers: int, tick=lambda n: None) -> AttrSet:
    """Attribute logits of ``sources[i]`` (path | None) aligned by ``ms[i]``; cached per model, image set
    and output declaration."""
    from ..recognizers.extract import AlignedCropDataset, iter_batches
    from ..recognizers.outputs import OutputMismatchError, infer_outputs
    from .embed import CacheKey

    spec = recognizer.outputs
    digest = hashlib.sha256(canonical_json([keys, inputs_id, hashlib.sha256(ms.tobytes()).hexdigest(),
                                            spec.to_dict()]).encode()).hexdigest()[:16]
    key = CacheKey(recognizer.fingerprint(), phash, f"attr-{name}-{digest}")
    hit = cache.get(key)
    if hit is not None:
        arr, meta = hit
        tick(len(keys))
        return AttrSet(name, arr, np.asarray(meta["ok"], bool), meta["reasons"], meta["stages"], True)
    n, a = len(keys), len(spec.attributes.names)
    logits = np.full((n, a), np.nan, np.float32)
    ok = np.zeros(n, bool)
    reasons, stages = list(pre_reasons), list(pre_stages)
    valid = [i for i in range(n) if sources[i] is not None and np.isfinite(ms[i]).all()]
    tick(n - len(valid))
    if valid:
        ds = AlignedCropDataset([(sources[i], ms[i]) for i in valid], tuple(recognizer.preprocess.input_size))
        rows = np.asarray(valid, np.int64)
        for idx, crops, good, why in iter_batches(ds, batch_size, num_workers):
            for j, r in zip(idx, why):
                if r:
                    reasons[rows[j]], stages[rows[j]] = r, "decode"
            if good.any():
                out = infer_outputs(recognizer, crops[good])
                if out.attributes is None:
                    raise OutputMismatchError(f"{recognizer.name} declares attributes but returned none")
                logits[rows[idx[good]]] = out.attributes
            tick(len(idx))
        finite = np.isfinite(logits).all(axis=1)
        for i in valid:
            if finite[i]:
                ok[i] = True
            elif not reasons[i]:
                reasons[i], stages[i] = "the model returned non-finite attribute scores", "inference"
    cache.put(key, logits, {"ok": ok.tolist(), "reasons": reasons, "stages": stages, "set": name, "n": n})
    return AttrSet(name, logits, ok, reasons, stages, False)


# ----------------------------------------------------------------------------------- scoring


def _with_unknown(block: dict, labels: np.ndarray, names: list[str]) -> dict:
    for j, nm in enumerate(names):
        block["per_attribute"][nm]["n_unknown"] = int((labels[:, j] < 0).sum())
    return block


def score_variant(v, labels: np.ndarray, s: AttrSet, model_cols: list[int], names: list[str]):
    """VariantResult of one variant: metrics on every image (failures scored wrong) + enrolled_only."""
    from .results import VariantResult
    from .scoring import top_reasons

    logits = s.logits[:, model_cols].astype(np.float64)
    worst = np.where(labels == 1, -WORST, WORST)
    used = np.where(s.ok[:, None], np.nan_to_num(logits), worst)
    m_all = _with_unknown(attribute_metrics(labels, used, names), labels, names)
    m_enr = _with_unknown(attribute_metrics(labels[s.ok], logits[s.ok], names), labels[s.ok], names)
    n = len(labels)
    metrics = {_METRIC_NAMES[k]: m_all["mean"][k] for k in ATTR_METRICS}
    metrics["fte_rate"] = float((~s.ok).mean()) if n else None
    notes = [f"{_METRIC_NAMES[k]}: no matched attribute has {_NEEDS[k]} among these images"
             for k in ATTR_METRICS if m_all["mean"][k] is None]
    res = VariantResult(name=v.name, spec=v.to_dict(), metrics=metrics,
                        counts={"n_images": n, "n_scored": int(s.ok.sum()), "n_fte": int((~s.ok).sum())},
                        notes=notes, fte_reasons=top_reasons([r for r, o in zip(s.reasons, s.ok) if not o]))
    res.add_block("attributes", {
        "what": "per attribute over the images with a known label: accuracy and balanced accuracy of logit >= 0, "
                "average precision of the logits; failures scored wrong (failure_policy); means over the attributes "
                "where each is defined",
        **m_all})
    res.add_block("attributes_enrolled_only", {
        "what": "the same metrics on the images with a prediction (failures left out): for comparison only",
        **m_enr})
    return res


def part_columns(rows: dict[str, dict]) -> list[str]:
    """The manifest's part_<name> fraction columns (parts, then groups), as the synth run wrote them."""
    from ..face.parts import manifest_columns

    first = next(iter(rows.values()), {})
    return [c for c in manifest_columns() if c not in ("part_map", "part_reason") and c in first]


def covered_by_part(keys: list[str], occ, ok: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Per part: covered (True / False / None) per image from the manifest fractions, and per part the
    unknown count with reasons (no fraction: NaN with the manifest's part_reason; or no prediction)."""
    cols = part_columns(occ.rows)
    covered, unknown = {}, {}
    for c in cols:
        part = c[len("part_"):]
        vals, why = [], Counter()
        for k, good in zip(keys, ok):
            r = occ.rows.get(k)
            f = None if r is None or r.get("status") != "ok" else r.get(c)
            if not good:
                vals.append(None)
                why["no prediction for the image (see failures)"] += 1
            elif f is None or not np.isfinite(float(f)):
                vals.append(None)
                reason = (r or {}).get("part_reason") if r is not None else None
                why[reason if isinstance(reason, str) and reason else "no part fraction in the synth manifest"] += 1
            else:
                vals.append(bool(float(f) >= COVERED_AT))
        covered[part] = np.array(vals, dtype=object)
        unknown[part] = {"n_unknown": int(sum(why.values())), "reasons": dict(why.most_common())}
    return covered, unknown


def by_part_block(labels, logits, names, covered, unknown) -> dict:
    bp = metrics_by_part(labels, np.nan_to_num(logits), names, covered)
    for part, d in bp.items():
        d.update(unknown[part])
        for side in ("covered", "uncovered"):
            _with_unknown(d[side], labels[_side(covered[part], side == "covered")], names)
    return {"what": f"metrics split by whether each face part (or group) is covered (occluded share >= "
                    f"{COVERED_AT}, from the synth manifest's part_<name>); images whose coverage is unknown "
                    "(no part map, e.g. 5-point landmarks, or no prediction) are left out of both sides and "
                    "counted with their reasons", "covered_at": COVERED_AT, "parts": bp}


def _side(cov: np.ndarray, want: bool) -> np.ndarray:
    return np.array([c is not None and bool(c) == want for c in cov], bool)


# ----------------------------------------------------------------------------------- engine


def require_attributes(recognizer):
    spec = getattr(recognizer, "outputs", None)
    if spec is None or getattr(spec, "attributes", None) is None:
        raise ConfigError(f"model {getattr(recognizer, 'name', 'model')} declares no attribute output: an "
                          "attributes protocol needs a model that returns N x A attribute logits and declares "
                          "their names, e.g. output_spec = {'embedding': 'embedding', 'attributes': ['Smiling', "
                          "...]} (recognizers/outputs.py)")
    return spec.attributes


def run_attributes(protocol: Protocol, recognizer, cfg, out_dir: Path | None, model_info: dict | None,
                   progress_on: bool, task=None, table: AttributeTable | None = None, data_info=None):
    """The engine for kind ``attributes``; returns an ``EvalResult`` (written to ``out_dir`` when given)."""
    from . import results as R
    from .embed import default_cache_dir, occluded_inputs, set_name
    from .evaluate import _clean_alignments, _metric_info, _select_variants, _Timer, landmark_methods
    from .progress import Progress
    from .variants import keys_digest, run_images, synthesize

    aspec = require_attributes(recognizer)
    timer = _Timer()
    t_start = t0 = time.perf_counter()
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir is not None else default_cache_dir()
    num_workers = max(int(cfg.workers), 0)
    if task is None or table is None:
        task, table, data_info = load_attribute_task(protocol, cfg.data_root, cfg.limit)
    pairs, model_only, label_only = match_attributes(list(aspec.names), table.names)
    if not pairs:
        raise ConfigError(f"none of the model's attributes ({', '.join(aspec.names)}) is among the labels of "
                          f"{table.source} ({', '.join(table.names)}); names match ignoring case, spaces, '-' and '_'")
    names = [p[2] for p in pairs]
    model_cols = [p[0] for p in pairs]
    keys = task.keys()
    labels = table.select(keys)[:, [p[1] for p in pairs]].astype(np.int8)
    phash = protocol_hash(protocol, task.identity)
    specs = _select_variants(protocol, cfg.variants)
    run_dir = cache_dir / "runs" / phash / keys_digest(keys)
    run_dir.mkdir(parents=True, exist_ok=True)
    timer.add("data_s", t0)

    occluded_specs = [v for v in specs if v.occluded]
    set_specs = list({set_name(v): v for v in occluded_specs}.values())
    runs_used = {v.run for v in occluded_specs}
    bar = Progress(progress_on, desc=f"eval {protocol.name}")
    bar.add_total(3 * len(keys) + len(set_specs) * len(keys)
                  + sum(run_images(protocol, r, len(keys)) for r in protocol.synth_runs() if r.name in runs_used))
    try:
        lms, cache, al = _clean_alignments(recognizer, task, keys, cache_dir, run_dir, phash, max(num_workers, 1),
                                           bar, timer, cfg.dask)
        sets, synth_info = {}, {}
        if occluded_specs:
            t0 = time.perf_counter()
            sets, synth_info = synthesize(protocol, task, keys, lms.table, run_dir, jobs=max(num_workers, 1),
                                          progress=False, runs=runs_used, tick=bar.tick, stage=bar.stage,
                                          dask=cfg.dask)
            timer.add("synth_s", t0)

        t0 = time.perf_counter()
        n_sets = 1 + len(set_specs)
        bar.stage("clean: attributes", 1, n_sets)
        sources = [None if k in task.missing or al.stages[i] else task.image_source(k) for i, k in enumerate(keys)]
        pred = {"clean": predict_set("clean", recognizer, keys, sources, al.reasons, al.stages, al.ms, cache, phash,
                                     canonical_json(task.identity) + lms.inputs_digest(), cfg.batch_size,
                                     num_workers, tick=bar.tick)}
        for i_set, v in enumerate(set_specs, start=2):
            name = set_name(v)
            bar.stage(f"{v.name}: attributes", i_set, n_sets)
            occ = sets[(v.run, v.synth_variant)]
            srcs, reasons, stages = occluded_inputs(occ, keys, range(len(keys)), al)
            pred[name] = predict_set(name, recognizer, keys, srcs, reasons, stages, al.ms, cache, phash,
                                     occ.fingerprint, cfg.batch_size, num_workers, tick=bar.tick)
        timer.add("extraction_s", t0)
    finally:
        bar.close()

    t0 = time.perf_counter()
    variant_results, score_tables = {}, {}
    pooled: dict[str, list] = {"labels": [], "logits": [], "covered": [], "unknown": []}
    for v in specs:
        s = pred["clean" if not v.occluded else set_name(v)]
        res = score_variant(v, labels, s, model_cols, names)
        if v.occluded:
            occ = sets[(v.run, v.synth_variant)]
            covered, unknown = covered_by_part(keys, occ, s.ok)
            logits = s.logits[:, model_cols]
            res.add_block("attributes_by_part", by_part_block(labels, logits, names, covered, unknown))
            if set_name(v) not in pooled.setdefault("_sets", []):  # each occluded image set once
                pooled["_sets"].append(set_name(v))
                for key_, val in (("labels", labels), ("logits", logits), ("covered", covered), ("unknown", unknown)):
                    pooled[key_].append(val)
        variant_results[v.name] = res
        score_tables[v.name] = _scores_table(keys, labels, s, model_cols, names)
    per_variant = {n: {"per_attribute": r.blocks["attributes"]["per_attribute"], "mean": r.blocks["attributes"]["mean"]}
                   for n, r in variant_results.items()}
    drops = compare_variants(per_variant) if "clean" in per_variant else {}
    for n, d in drops.items():
        variant_results[n].add_block("attribute_drop", {
            "what": "metric(variant) - metric(clean) per attribute and for the means, fractions (x100 = pp)", **d})
    methods = landmark_methods(lms, keys)
    for vr in variant_results.values():
        vr.add_block("landmark_methods", methods)
    pooled_block = _pooled_by_part(pooled, names)
    timer.add("scoring_s", t0)

    failures = _failures(keys, pred)
    ms_spec = protocol.main_score
    main = variant_results.get(ms_spec["variant"])
    summary = {
        "what": "the model's attributes matched by name to the label file's columns; model-only attributes are not "
                "scored (no labels), label-only ones are not predicted by the model",
        "label_file": data_info, "model_attributes": list(aspec.names), "label_attributes": list(table.names),
        "matched": [{"model": aspec.names[p[0]], "label": p[2]} for p in pairs],
        "model_only": model_only, "label_only": label_only,
        "by_part": pooled_block,
    }
    res = R.EvalResult(
        protocol={"name": protocol.name, "version": protocol.version, "hash": phash, "kind": protocol.kind,
                  "description": protocol.description, "data": task.identity, "subset": task.subset,
                  "landmarks": {k: v for k, v in lms.describe.items() if k != "path"},
                  "occlusion": protocol.occlusion,
                  "source": Path(protocol.path).name if protocol.path else None},
        model=R.model_block(recognizer, model_info),
        main_score={**ms_spec, "value": main.metrics.get(ms_spec["metric"]) if main is not None else None},
        seed=protocol.seed,
        counts={"n_images": len(keys), "n_missing_images": len(task.missing), "n_attributes": len(names),
                "n_failed_images": failures["n_images"]},
        variants=variant_results, failures=failures,
        synth={name: {k: v for k, v in info.items() if k in ("variants", "status_counts")}
               for name, info in synth_info.items()},
        cache={"attribute_sets": len(pred), "attribute_hits": sum(p.cached for p in pred.values()),
               "alignment_hit": al.cached, "landmarks_computed": lms.computed, "dir": str(cache_dir)},
        failure_policy=FAILURE_POLICY, environment=R.environment(model_info, recognizer), config=cfg.to_dict(),
        metric_info=_metric_info(variant_results), created=R.now_iso(), extra={"attributes": summary})
    timer.t["total_s"] = time.perf_counter() - t_start
    res.timing = {k: round(v, 3) for k, v in timer.t.items()}
    if out_dir is not None:
        from .attributes_report import drop_curves

        res.write(out_dir, score_tables if cfg.save_scores else None, drop_curves(res) if cfg.plots else None)
    return res


def _pooled_by_part(pooled: dict, names: list[str]) -> dict | None:
    """The part breakdown over every occluded image set evaluated (each image of each set once)."""
    if not pooled["labels"]:
        return None
    labels = np.concatenate(pooled["labels"])
    logits = np.concatenate(pooled["logits"])
    parts = list(pooled["covered"][0])
    covered = {p: np.concatenate([c[p] for c in pooled["covered"]]) for p in parts}
    unknown = {}
    for p in parts:
        why = Counter()
        for u in pooled["unknown"]:
            why.update(u[p]["reasons"])
        unknown[p] = {"n_unknown": int(sum(why.values())), "reasons": dict(why.most_common())}
    block = by_part_block(labels, logits, names, covered, unknown)
    block["image_sets"] = list(pooled["_sets"])
    return block


def _scores_table(keys, labels, s: AttrSet, model_cols, names):
    import pandas as pd

    d = {"key": keys, "ok": s.ok, "reason": [r if not o else "" for r, o in zip(s.reasons, s.ok)]}
    for j, (c, nm) in enumerate(zip(model_cols, names)):
        d[f"{nm}_label"] = labels[:, j]
        d[f"{nm}_logit"] = s.logits[:, c]
    return pd.DataFrame(d)


def _failures(keys: list[str], pred: dict[str, AttrSet]) -> dict:
    clean = pred["clean"]
    items = [{"key": k, "set": "clean", "stage": clean.stages[i], "reason": clean.reasons[i]}
             for i, k in enumerate(keys) if not clean.ok[i]]
    for name, s in pred.items():
        if name == "clean":
            continue
        items += [{"key": k, "set": name, "stage": s.stages[i], "reason": s.reasons[i]}
                  for i, k in enumerate(keys) if not s.ok[i] and clean.ok[i]]
    return {"n_images": len({it["key"] for it in items}), "n_entries": len(items),
            "by_stage": dict(sorted(Counter(it["stage"] for it in items).items())), "images": items}
