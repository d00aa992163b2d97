"""The benchmark engine: ``run_eval(EvalConfig) -> EvalResult`` (one protocol x one recognizer).

Steps (timed; one overall progress bar):
1. landmarks of every clean image (cached), then ``recognizer.alignment_transform`` on the *clean*
   image -> M (cached per model). Occlusion never changes the alignment.
2. occluded variants via ``run_synth`` with the same landmarks (``variants.synthesize``).
3. crops = warp(image, M) for the clean and every occluded image set; embeddings cached per
   (model fingerprint, protocol hash, image set + inputs digest) (``bench.embed``).
4. scores = cosine similarity (dot product of L2-normalised embeddings); metrics per variant
   (``bench.verify`` for 1:1, ``bench.identify`` for 1:N).

Failure policy (failure to enrol, FTE; NIST FRVT / IJB): a failed image scores lowest and its pairs
are decided "different"; a failed probe misses at every rank. See ``FAILURE_POLICY`` (also written
into every results file); each variant also reports ``fte_rate`` and an ``enrolled_only`` block.
Landmark failures do not depend on the model, so all models are scored on the same pairs.

``evaluate(protocol, recognizer, ...)`` is the same engine for callers holding a ``Protocol`` and a
recognizer object, writing ``out_dir/<protocol>.json`` and returning the results as a dict.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .config import EvalConfig
from .embed import EmbSet, default_cache_dir  # noqa: F401 - default_cache_dir re-exported
from .protocols import Protocol, canonical_json, protocol_hash

__all__ = ["EvalConfig", "run_eval", "evaluate", "FAILURE_POLICY"]

FAILURE_POLICY = {
    "rule": "nist-frvt",
    "summary": "failures to enrol count against the model: every pair / probe is in every metric",
    "one_to_one": "an image that fails to enrol (missing, undecodable, no landmarks, not alignable, not "
                  "occludable, not embeddable) gets the lowest possible score (fte_score: -2.0 for cosine "
                  "similarity, below every real score); its pairs are decided 'different' at every threshold "
                  "(genuine: false reject; impostor: true reject). k-fold accuracy, TAR@FAR, EER, AUC and the "
                  "ROC use all pairs",
    "one_to_n": "a probe that fails to enrol is a miss at every rank (mated) and never a false positive "
                "(non-mated, lowest score). A gallery image that fails is left out of the searched gallery; an "
                "identity without any enrolled gallery image is absent from it, and its probes remain mated "
                "searches that miss at every rank (not turned into non-mated probes, which would flatter)",
    "reported": "fte_rate per variant in metrics; the metrics on enrolled pairs / probes only in each variant's "
                "enrolled_only block; every failed image with its stage and reason under failures",
}


class _Timer:
    def __init__(self):
        self.t: dict[str, float] = {}

    def add(self, name: str, t0: float) -> None:
        self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t0


def _clean_alignments(recognizer, task, keys: list[str], cache_dir: Path, run_dir: Path, phash: str, jobs: int,
                      bar, timer: _Timer, dask: str | None = None):
    """(landmarks, embedding cache, alignments) of the clean images, as stages of ``bar`` timed by ``timer``."""
    from .embed import EmbeddingCache, compute_alignments
    from .variants import clean_landmarks

    t0 = time.perf_counter()
    bar.stage("landmarks")
    lms = clean_landmarks(task, keys, cache_dir, run_dir, task.root, jobs=jobs, progress=False, tick=bar.tick,
                          dask=dask)
    timer.add("landmarks_s", t0)
    cache = EmbeddingCache(cache_dir / "embeddings")
    t0 = time.perf_counter()
    bar.stage("align")
    al = compute_alignments(recognizer, task, keys, lms, cache, phash, tick=bar.tick)
    timer.add("alignment_s", t0)
    return lms, cache, al


# ----------------------------------------------------------------------------------- public API


def run_eval(config: EvalConfig | None = None, *, progress: bool = True, **overrides):
    """Run an evaluation. ``run_eval(EvalConfig(...))`` or ``run_eval(model=..., protocol=..., ...)``;
    keyword overrides replace fields of ``config``. Returns an ``EvalResult`` (also written to
    ``config.out/<model-name>/<protocol>.json`` unless ``out`` is None; ``result.path`` says where)."""
    from .protocols import load_protocol
    from .results import default_model_name, result_path

    if config is None:
        config = EvalConfig(**overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    cfg = config.validate()
    cfg.check_paths()  # before any heavy import: a wrong path is reported at once
    prot = cfg.protocol if isinstance(cfg.protocol, Protocol) else load_protocol(cfg.protocol)
    files = {k: getattr(cfg, k) for k in ("pairs", "gallery", "probe", "bin", "masked_list", "attributes")
             if getattr(cfg, k)}
    prot = _with_folds(prot.with_overrides(**files), cfg.folds)
    _select_variants(prot, cfg.variants)  # unknown variant names: reported before anything loads
    _check_search_options(prot, cfg, count_listed=True)  # --search / --distractors: before anything loads
    if isinstance(cfg.model, (str, Path)):
        from .data import load_task

        # find the data before loading the model: a missing data set is reported before torch loads
        if prot.kind == "attributes":
            from .attributes import load_attribute_task

            task = load_attribute_task(prot, cfg.data_root, cfg.limit)
        else:
            task = load_task(prot, cfg.data_root, allow_unsafe_pickle=cfg.allow_unsafe_pickle, limit=cfg.limit)
        from ..recognizers import create_recognizer

        rec = create_recognizer(str(cfg.model), arch=cfg.arch, device=cfg.device, precision=cfg.precision,
                                allow_unsafe_pickle=cfg.allow_unsafe_pickle, factory_kwargs=cfg.arch_opts or None)
    else:
        rec, task = cfg.model, None
    name = cfg.model_name or (default_model_name(str(cfg.model), rec) if isinstance(cfg.model, (str, Path))
                              else getattr(rec, "name", "model"))
    out_dir = result_path(cfg.out, name, prot.name).parent if cfg.out is not None else None
    info = {"name": name, "spec": cfg.model_spec(), "arch": cfg.arch, "precision": cfg.precision,
            "device": cfg.device}
    return _run(prot, rec, cfg, out_dir, info, progress, task)


def evaluate(protocol: Protocol, recognizer, data_root=None, out_dir=None, cache_dir=None, batch_size: int = 128,
             num_workers: int = 0, save_scores: bool = False, limit_pairs: int | None = None, progress: bool = True,
             *, model_info: dict | None = None, plots: bool = True, allow_unsafe_pickle: bool = False,
             device: str = "cpu", variants: list[str] | None = None, limit: int | None = None,
             dask: str | None = None) -> dict:
    """Evaluate ``recognizer`` on ``protocol``; returns the results as a dict (``EvalResult.to_dict()``).

    With ``out_dir`` the results are written as ``out_dir/<protocol>.json`` (atomically), with
    ``out_dir/<protocol>.scores/<variant>.parquet`` when ``save_scores`` and the plots
    ``out_dir/<protocol>.<plot>.png`` when ``plots``. ``variants`` restricts the evaluated variants
    (default: all). ``device`` is where the 1:N search runs. ``limit_pairs`` is the old name of ``limit``.
    ``dask``: landmarks and occluded images on Dask (``local:N`` or a scheduler address).
    """
    cfg = EvalConfig(model=recognizer, protocol=protocol, data_root=data_root, out=None, cache_dir=cache_dir,
                     batch_size=batch_size, workers=num_workers, save_scores=save_scores,
                     limit=limit if limit is not None else limit_pairs, plots=plots,
                     allow_unsafe_pickle=allow_unsafe_pickle, device=device, variants=variants,
                     model_name=(model_info or {}).get("name"), dask=dask).validate()
    res = _run(protocol, recognizer, cfg, Path(out_dir) if out_dir is not None else None, model_info, progress)
    return res.to_dict()


# ----------------------------------------------------------------------------------- engine


def _with_folds(prot: Protocol, folds: int | None) -> Protocol:
    """The protocol with N contiguous cross-validation folds (``--folds N``) instead of its own."""
    if folds is None:
        return prot
    if prot.kind != "verification" or "folds" not in prot.data:
        raise ConfigError(f"--folds applies to 1:1 verification protocols; {prot.name} is {prot.kind}")
    raw = copy.deepcopy(prot.raw)
    raw["data"]["folds"] = int(folds)
    return Protocol(raw, prot.path, dict(prot.overrides))


def _check_search_options(protocol: Protocol, cfg: EvalConfig, count_listed: bool = False) -> None:
    """--search / --distractors / --distractor-sweep apply to 1:N identification protocols only; sweep
    sizes may not exceed the distractors listed (``count_listed`` reads the list)."""
    from .config import OptionError

    used = [f"--{o}" for o, on in (("search", cfg.search != "torch"), ("distractors", cfg.distractors is not None),
                                   ("distractor-sweep", cfg.distractor_sweep is not None)) if on]
    if used and protocol.kind != "identification":
        raise OptionError(f"{' and '.join(used)} appl{'y' if len(used) > 1 else 'ies'} to 1:N identification "
                          f"protocols (gallery-probe, lfw-occ-id); {protocol.name} is {protocol.kind}")
    if count_listed and cfg.distractor_sweep is not None:
        from .distractors import read_distractor_list

        n = len(read_distractor_list(cfg.distractors))
        _check_sweep_sizes(cfg.distractor_sweep, n, f"{cfg.distractors} lists {n:,} distractors")


def _check_sweep_sizes(sizes, n: int, what: str) -> None:
    if sizes and max(sizes) > n:
        from .config import OptionError

        raise OptionError(f"--distractor-sweep asks for {max(sizes):,} distractors but {what}; use counts <= {n:,}")


def _select_variants(protocol: Protocol, wanted) -> list:
    specs = protocol.variants()
    if wanted is None:
        return specs
    unknown = sorted(set(wanted) - {v.name for v in specs})
    if unknown:
        raise ConfigError(f"unknown variants {', '.join(unknown)} for protocol {protocol.name}; "
                          f"known: {', '.join(v.name for v in specs)}")
    return [v for v in specs if v.name in wanted or v.name == "clean"]


def _run(protocol: Protocol, recognizer, cfg: EvalConfig, out_dir: Path | None, model_info: dict | None,
         progress_on: bool, task=None):
    from . import results as R
    from .data import load_task
    from .embed import embed_set, occluded_inputs, set_name
    from .progress import Progress
    from .variants import keys_digest, run_images, synthesize

    if protocol.kind == "attributes":  # face attributes: its own scoring (bench.attributes)
        from .attributes import run_attributes

        return run_attributes(protocol, recognizer, cfg, out_dir, model_info, progress_on,
                              *(task if task is not None else ()))
    from .crops import apply_crop

    recognizer = apply_crop(recognizer, protocol.crop)  # protocol ``crop:`` (FROM's 112x96); default: unchanged
    timer = _Timer()
    t_start = time.perf_counter()
    _check_search_options(protocol, cfg)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir is not None else default_cache_dir()
    num_workers = max(int(cfg.workers), 0)
    jobs = max(num_workers, 1)

    t0 = time.perf_counter()
    if task is None:
        task = load_task(protocol, cfg.data_root, allow_unsafe_pickle=cfg.allow_unsafe_pickle, limit=cfg.limit)
    phash = protocol_hash(protocol, task.identity)
    specs = _select_variants(protocol, cfg.variants)
    keys = task.keys()
    if not keys:
        raise ConfigError(f"protocol {protocol.name} selects no images")
    run_dir = cache_dir / "runs" / phash / keys_digest(keys)
    run_dir.mkdir(parents=True, exist_ok=True)
    timer.add("data_s", t0)

    occluded_specs = [v for v in specs if v.occluded]
    pkeys = task.probe_keys()
    set_specs = list({set_name(v): v for v in occluded_specs}.values())  # one embedding set per synth variant
    runs_used = {v.run for v in occluded_specs}
    bar = Progress(progress_on, desc=f"eval {protocol.name}")
    bar.add_total(3 * len(keys) + len(set_specs) * len(pkeys)
                  + sum(run_images(protocol, r, len(pkeys)) for r in protocol.synth_runs() if r.name in runs_used))
    n_sets = 1 + len(set_specs)
    try:
        # 1. landmarks + alignment on the clean images
        lms, cache, al = _clean_alignments(recognizer, task, keys, cache_dir, run_dir, phash, jobs, bar, timer,
                                           cfg.dask)

        # 2. occluded variants
        sets: dict = {}
        synth_info: dict = {}
        if occluded_specs:
            t0 = time.perf_counter()
            sets, synth_info = synthesize(protocol, task, pkeys, lms.table, run_dir, jobs=jobs, progress=False,
                                          runs=runs_used, tick=bar.tick, stage=bar.stage, dask=cfg.dask)
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
        bar.stage("clean: embed", 1, n_sets)
        emb_sets: dict[str, EmbSet] = {
            # keyed by content (keys, data files, landmarks, image stamps, alignments), not by protocol:
            # protocols over the same images (lfw, lfw-occ) embed the clean set once
            "clean": embed_set("clean", recognizer, keys, sources, al.reasons, al.stages, al.ms, cache,
                               "clean-by-content", canonical_json(task.identity) + lms.inputs_digest(),
                               cfg.batch_size, num_workers, tick=bar.tick)}
        p_idx = np.array([key_index[k] for k in pkeys], np.int64)
        for i_set, v in enumerate(set_specs, start=2):
            name = set_name(v)
            bar.stage(f"{v.name}: embed", i_set, n_sets)
            occ = sets[(v.run, v.synth_variant)]
            srcs, reasons, stages = occluded_inputs(occ, pkeys, p_idx, al)
            emb_sets[name] = embed_set(name, recognizer, pkeys, srcs, reasons, stages, al.ms[p_idx], cache, phash,
                                       occ.fingerprint, cfg.batch_size, num_workers, tick=bar.tick)
        timer.add("extraction_s", t0)

        # 3b. occlusion estimates of models that declare mask / pattern outputs (bench.occlusion)
        from . import occlusion as occl

        # 3c. distractors (--distractors): embedded once per model and list, cached across runs
        dset = None
        if cfg.distractors is not None:
            from .distractors import load_distractors

            t0 = time.perf_counter()
            bar.stage("distractors")
            dset = load_distractors(cfg.distractors, cfg.data_root, protocol, recognizer, cache, cache_dir,
                                    cfg.batch_size, num_workers, jobs=jobs, tick=bar.tick, add_total=bar.add_total)
            _check_sweep_sizes(cfg.distractor_sweep, dset.n, f"{dset.n:,} of the {dset.n_listed:,} listed "
                                                              f"distractors enrolled")
            timer.add("distractors_s", t0)

        occl_run = None
        if occl.output_spec(recognizer) is not None:
            t0 = time.perf_counter()
            bar.stage("occlusion estimates")
            head = next((set_name(v) for v in occluded_specs if v.group == "headline"), None)
            occl_run = occl.score_sets(recognizer, emb_sets, sets, set_specs, al.ms, keys, pkeys,
                                       (protocol.occlusion or {}).get("k"), headline_set=head, cache=cache,
                                       sheet=cfg.plots)
            timer.add("occlusion_s", t0)

        # 4. scores and metrics
        t0 = time.perf_counter()
        score_tables: dict = {}
        curves: dict = {}
        if task.kind == "verification":
            from .verify import score_verification

            variant_results = score_verification(protocol, task, specs, emb_sets, sets, score_tables, curves,
                                                 progress=bar)
        elif task.kind == "all-to-all":
            from .all_to_all import score_all_to_all

            variant_results = score_all_to_all(protocol, task, specs, emb_sets, sets, score_tables, curves,
                                               cfg.device, progress=bar)
        else:
            from .identify import score_identification

            from .identify import SearchSetup

            setup = SearchSetup(cfg.search, int(cfg.recall_sample), int(protocol.seed or 0), dset,
                                cfg.distractor_sweep)
            variant_results = score_identification(protocol, task, specs, emb_sets, sets, score_tables, curves,
                                                   cfg.device, progress=bar, setup=setup)
        if occl_run is not None:
            occl.attach(variant_results, specs, occl_run, task, score_tables, curves)
        from .parts import part_groups  # part-block variants (lfw-occ-parts): pp lost per face-part group

        part_groups(protocol, variant_results)
        timer.add("scoring_s", t0)
    finally:
        bar.close()

    methods = landmark_methods(lms, keys)
    for vr in variant_results.values():
        vr.add_block("landmark_methods", methods)
    failures = _failures(keys, emb_sets, pkeys)
    ms_spec = protocol.main_score
    main = variant_results.get(ms_spec["variant"])
    res = R.EvalResult(
        protocol={"name": protocol.name, "version": protocol.version, "hash": phash, "kind": protocol.kind,
                  "description": protocol.description, "data": task.identity, "subset": task.subset,
                  "landmarks": {k: v for k, v in lms.describe.items() if k != "path"},
                  "occlusion": protocol.occlusion,
                  "source": Path(protocol.path).name if protocol.path else None,
                  **({"distractors": dset.describe()} if dset is not None else {})},
        model=R.model_block(recognizer, model_info),
        main_score={**ms_spec, "value": main.metrics.get(ms_spec["metric"]) if main is not None else None},
        seed=protocol.seed,
        counts={**task.counts(), "n_failed_images": failures["n_images"]},
        variants=variant_results,
        failures=failures,
        # synth fingerprints are left out: they include cache paths (the embedding cache keys use them)
        synth={name: {k: v for k, v in info.items() if k in ("variants", "status_counts")}
               for name, info in synth_info.items()},
        cache={**({"distractors_hit": dset.cached} if dset is not None else {}),
               "embedding_sets": len(emb_sets), "embedding_hits": sum(e.cached for e in emb_sets.values()),
               "alignment_hit": al.cached, "landmarks_computed": lms.computed, "dir": str(cache_dir)},
        failure_policy=FAILURE_POLICY,
        environment=R.environment(model_info, recognizer),
        config=cfg.to_dict(),
        metric_info=_metric_info(variant_results),
        created=R.now_iso(),
    )
    timer.t["total_s"] = time.perf_counter() - t_start
    res.timing = {k: round(v, 3) for k, v in timer.t.items()}
    if out_dir is not None:
        res.write(out_dir, score_tables if cfg.save_scores else None, curves if cfg.plots else None)
    return res


def landmark_methods(lms, keys: list[str]) -> dict:
    """How the clean images of the variant got their landmarks: counts per landmark-chain step (the
    landmarks table's ``method`` column: mesh, mesh-crop, detection, template, file) and ``none`` for failures.
    Occluded images are aligned with their clean image's landmarks, so every variant has these counts."""
    from ..face.landmarks import method_of_source

    counts: dict[str, int] = {}
    for k in keys:
        r = lms.rows.get(k) or {}
        m = r.get("method") if r.get("status") == "ok" else "none"
        if not isinstance(m, str) or not m:  # tables written before the method column
            src = r.get("source")
            m = method_of_source(src) if isinstance(src, str) and src else "unknown"
        counts[m] = counts.get(m, 0) + 1
    return {"counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))), "n_images": len(keys),
            "what": "images of the variant by the landmark method that found their face (none: failed)"}


def _metric_info(variant_results: dict) -> dict:
    from ..metrics.names import is_known, metric

    names = dict.fromkeys(k for v in variant_results.values() for k in v.metrics)
    return {n: {"label": metric(n).label, "unit": metric(n).unit, "direction": metric(n).direction}
            for n in names if is_known(n)}


# ----------------------------------------------------------------------------------- failures


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
