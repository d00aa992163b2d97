"""Occlusion-scoring overhead, measured in the same benchmark run (issue 10 target: <= 1.1x).

Headline: the wall time (and the CPU time) of the eval phase that embeds every image set and scores the
occlusion estimates (from the first ``embed_set`` call to the end of ``score_sets``), divided by the
same phase of a run of the same model with occlusion scoring switched off (``occlusion._SCORING =
False``: the model runs as one without occlusion outputs: no mask / pattern collection, no prediction
cache, no truth, no occlusion metrics; the phase ends with the last ``embed_set``). Runs with and
without scoring alternate (on/off, then off/on, ...), ``--runs`` of each; each pair gives one ratio.
CPU: this process's threads + reaped child processes (the
DataLoader workers), inside the phase.

Also printed, labelled "per-phase": ``(timing["extraction_s"] + timing["occlusion_s"]) /
timing["extraction_s"]`` of the scoring runs (and the same in CPU of the two wrapped functions,
``embed_set`` and ``score_sets``). It is lower than the headline: collecting the model's mask and
pattern outputs and caching the predictions happen inside ``extraction_s``.

Landmarks and the occluded sets are made once beforehand (a warm-up run that also extracts, so the
first timed run does not carry the model's first-forward cost); every timed run starts with an empty
embedding cache, so extraction, the truth and its cache are computed afresh. With ``--truth warm`` the
truth cache is kept (it is shared by every model with the same output grid on the same protocol, so a
model's run after any other's finds it): only the model's embeddings and predictions are dropped.

Besides, on the same masks in the same process, one thread: the truth alone per mask with the current
method (``sets_truth``: the sets of an image together, one warp per image for up to 8 sets, counts by
byte arithmetic), with 0.4.0's ``set_truth`` (one warp and one ``INTER_AREA`` per mask) and with occbench
0.3.0's (float block means, one pattern match per image); every mask and pattern label must be identical
across the three. ``--truth-cache`` adds that check and timing on the synth runs of another cache (e.g.
a full LFW run's).

    python benchmarks/bench_occlusion_overhead.py                           # tiny model, lfw-occ, 300 pairs
    python benchmarks/bench_occlusion_overhead.py --runs 3 --limit 300 --workers 2
    OCCBENCH_TINY_MODEL=/tmp/tiny.pt python benchmarks/bench_occlusion_overhead.py --model examples-tiny-model
    python benchmarks/bench_occlusion_overhead.py --runs 3 --truth-cache ~/.occbench_cache   # + its masks
    python benchmarks/bench_occlusion_overhead.py --model from_sized_model:from_sized --limit 40 --no-truth-alone
        # a FROM-sized model (benchmarks/from_sized_model.py: IResNet-50 trunk + mask and pattern heads)

Prints one line per run and the ranges, with the load average (the ratios are same-run ratios; the
load still moves them).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "realdata" / "lfw-guesswho"


class PhaseClock:
    """Wall and CPU seconds (this process's threads + reaped child processes, i.e. the DataLoader
    workers) of the phase from the first ``embed_set`` call to the last exit of ``embed_set`` /
    ``score_sets``, and the CPU inside each of the two (per-phase)."""

    def __init__(self):
        import occbench.bench.embed as E
        import occbench.bench.occlusion as O

        self.reset()
        E.embed_set = self._wrap(E.embed_set, "extraction")
        O.score_sets = self._wrap(O.score_sets, "occlusion")

    @staticmethod
    def now() -> tuple[float, float]:
        import resource

        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.perf_counter(), a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    def _wrap(self, fn, name):
        def timed(*args, **kwargs):
            t0 = self.now()
            self.start = self.start or t0
            try:
                return fn(*args, **kwargs)
            finally:
                self.end = self.now()
                self.cpu[name] += self.end[1] - t0[1]
        return timed

    def reset(self) -> None:
        self.cpu = {"extraction": 0.0, "occlusion": 0.0}
        self.start = self.end = None

    def phase(self) -> tuple[float, float]:
        """(wall, CPU) seconds of the phase."""
        return self.end[0] - self.start[0], self.end[1] - self.start[1]


def eval_once(args, cache: Path, scoring: bool = True):
    import occbench.bench.occlusion as O
    from occbench.bench.config import EvalConfig
    from occbench.bench.evaluate import run_eval

    cfg = EvalConfig(model=args.model, protocol=args.protocol, data_root=str(args.data_root), out=None,
                     cache_dir=str(cache), limit=args.limit, workers=args.workers, plots=False,
                     batch_size=args.batch_size, variants=tuple(args.variants.split(",")) if args.variants else None)
    O._SCORING = scoring
    try:
        return run_eval(cfg, progress=False)
    finally:
        O._SCORING = True


def truth_inputs(cache: Path) -> list[tuple[np.ndarray, list[str], list[list]]]:
    """The occluded images of every synth run in the cache, one group per landmark table (one list of
    keys): (alignments to arcface112 (N, 2, 3), set names, sources[j][i] = set j's mask path of key i
    or None)."""
    import pandas as pd

    from occbench.face.geometry import ARCFACE_112, estimate_similarity
    from occbench.face.landmarks import COORD_COLUMNS
    from occbench.synth.manifest import read_manifest

    groups = []
    for lm_file in sorted((cache / "runs").glob("*/*/landmarks.csv")):
        lms = pd.read_csv(lm_file)
        lms = lms[lms["status"] == "ok"].set_index("key")
        index: dict[str, int] = {}
        names, sets = [], []
        for run in sorted(p.parent for p in lm_file.parent.glob("*/manifest.csv")):
            man = read_manifest(run)
            man = man[(man["status"] == "ok") & man["key"].isin(lms.index) & (man["mask"].astype(str) != "")]
            for variant, rows in man.groupby("variant", sort=True):
                col = {}
                for key, mask in zip(rows["key"], rows["mask"]):
                    col[index.setdefault(key, len(index))] = str(run / mask)
                names.append(f"{run.name}/{variant}")
                sets.append(col)
        if not index:
            continue
        keys = list(index)
        fives = lms.loc[keys, list(COORD_COLUMNS)].to_numpy(float).reshape(-1, 5, 2)
        ms = np.array([estimate_similarity(f, ARCFACE_112) for f in fives])
        groups.append((ms, names, [[col.get(i) for i in range(len(keys))] for col in sets]))
    if not groups:
        raise SystemExit(f"no occluded images under {cache}/runs")
    return groups


def previous_truth(mask, m, crop_hw, grid_hw, k, tau=0.5):
    """occbench 0.3.0's truth_for_image (one warp, float INTER_AREA, one match per image), for comparison."""
    import cv2

    from occbench.bench.occlusion_truth import _canvas_transform
    from occbench.synth.patterns import match_pattern

    ch, cw = crop_hw
    occ = mask >= 128
    mc, _, _ = _canvas_transform(m, crop_hw, crop_hw, 4)
    canvas = cv2.warpAffine(occ.astype(np.uint8), mc, (cw * 4, ch * 4), flags=cv2.INTER_NEAREST,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    crop_frac = cv2.resize(canvas.astype(np.float32), (cw, ch), interpolation=cv2.INTER_AREA)
    grid_frac = cv2.resize(crop_frac, (grid_hw[1], grid_hw[0]), interpolation=cv2.INTER_AREA)
    return grid_frac >= tau, match_pattern(crop_frac >= 0.5, k)


def truth_04(ms, sources, crop_hw, grid_hw, k):
    """occbench 0.4.0's set_truth, one thread: per mask ``cv2.imdecode``, one warp of that mask alone and
    ``INTER_AREA`` block sums (``truth_cells``), then the set's labels at once. -> per set (masks, labels)."""
    import cv2

    from occbench.bench.occlusion_truth import labels_from_cell_counts, truth_cells

    out = []
    for srcs in sources:
        masks, cells = {}, {}
        for i, src in enumerate(srcs):
            if src is not None:
                with open(src, "rb") as fh:
                    mk = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_GRAYSCALE)
                masks[i], cells[i] = truth_cells(mk, ms[i], crop_hw, grid_hw, k)
        labels = labels_from_cell_counts(np.array([cells[i] for i in cells]), k, crop_hw) if cells else []
        out.append((masks, dict(zip(cells, labels))))
    return out


def truth_alone(groups, k: int = 5, grid=(14, 14), crop=(112, 112), threads: int = 1) -> dict:
    """CPU ms per occluded mask (process time, one thread each, file read and decode included) of the
    truth of every set of every group: ``sets_truth`` (all sets of the group together: one warp per image
    for up to 8 sets), 0.4.0's ``set_truth`` (one warp per mask) and 0.3.0's per-image method, on the same
    masks. Every mask and pattern label must be identical across the three."""
    import cv2

    from occbench.bench.occlusion import _read_mask, sets_truth

    cv2.setNumThreads(1)
    n = sum(src is not None for _, _, sources in groups for srcs in sources for src in srcs)
    t = {"sets_truth": 0.0, "0.4.0": 0.0, "0.3.0": 0.0}
    for ms, names, sources in groups:
        t0 = time.process_time()
        cur = sets_truth(ms, sources, crop, grid, k, threads=threads)
        t["sets_truth"] += time.process_time() - t0
        t0 = time.process_time()
        v04 = truth_04(ms, sources, crop, grid, k)
        t["0.4.0"] += time.process_time() - t0
        t0 = time.process_time()
        v03 = [{i: previous_truth(_read_mask(src), ms[i], crop, grid, k) for i, src in enumerate(srcs) if src is not None}
               for srcs in sources]
        t["0.3.0"] += time.process_time() - t0
        for j, srcs in enumerate(sources):
            for i, src in enumerate(srcs):
                if src is None:
                    continue
                tm, label = v03[j][i]
                if not (cur[j].known[i] and np.array_equal(tm, cur[j].mask[i]) and label == cur[j].pattern[i]
                        and np.array_equal(tm, v04[j][0][i]) and label == v04[j][1][i]):
                    raise SystemExit(f"truth differs between methods on {src} ({names[j]})")
    return {"n_masks": n, **{name: 1e3 * v / n for name, v in t.items()}}


def drop_embeddings(cache: Path, keep_truth: bool) -> None:
    """Empty the embedding cache; with ``keep_truth`` keep the model-independent truth cache."""
    root = cache / "embeddings"
    if not keep_truth:
        shutil.rmtree(root, ignore_errors=True)
        return
    for d in root.iterdir() if root.is_dir() else ():
        if d.name != "occlusion-truth":
            shutil.rmtree(d, ignore_errors=True)


def forward_ms(model: str) -> float:
    """The model's own cost: ms per image of ``infer`` on a batch of 64 random crops (after a warm-up)."""
    from occbench.recognizers.factory import create_recognizer

    rec = create_recognizer(model)
    h, w = rec.preprocess.input_size
    crops = np.random.default_rng(0).integers(0, 256, (64, h, w, 3), dtype=np.uint8)
    rec.infer(crops[:8])
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        rec.infer(crops)
        best = min(best, time.perf_counter() - t)
    return 1e3 * best / len(crops)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="examples-tiny-model")
    ap.add_argument("--protocol", default="lfw-occ")
    ap.add_argument("--variants", default="N-O@s1.0,N-O@s1.5,N-O", help="comma list (default: the three scale sets)")
    ap.add_argument("--data-root", type=Path, default=DATA)
    ap.add_argument("--limit", type=int, default=300, help="pairs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3, help="runs with occlusion scoring, and as many without")
    ap.add_argument("--work", type=Path, default=Path("/tmp/occbench-bench-occlusion"))
    ap.add_argument("--truth-cache", type=Path, action="append", default=[],
                    help="another occbench cache whose synth runs' masks to check and time the truth on (repeatable)")
    ap.add_argument("--no-truth-alone", action="store_true", help="skip the truth-alone timing and check")
    ap.add_argument("--truth", choices=("cold", "warm"), default="cold",
                    help="cold: every run computes the truth; warm: the truth cache of the warm-up is kept")
    args = ap.parse_args(argv)
    if not args.data_root.is_dir():
        raise SystemExit(f"LFW not found at {args.data_root} (--data-root)")
    cache = args.work / "cache"
    shutil.rmtree(cache / "embeddings", ignore_errors=True)  # the warm-up extracts too (model load, first forward)
    eval_once(args, cache)  # warm-up: landmarks, occluded sets, model
    print(f"forward pass of {args.model}: {forward_ms(args.model):.2f} ms / image (batch 64, best of 3)", flush=True)
    clock = PhaseClock()
    pairs, per_phase, loads = [], [], []
    for i in range(max(args.runs, 1)):
        pair = {}
        for scoring in ((True, False) if i % 2 == 0 else (False, True)):
            drop_embeddings(cache, keep_truth=args.truth == "warm")
            clock.reset()
            res = eval_once(args, cache, scoring)
            pair[scoring] = wall, cpu = clock.phase()
            loads.append(os.getloadavg()[0])
            t = res.timing
            estimates = [v.blocks["occlusion"]["estimate"] for v in res.variants.values()
                         if "estimate" in (v.blocks.get("occlusion") or {})]
            if bool(estimates) != scoring or ("occlusion_s" in t) != scoring:
                raise SystemExit(f"occlusion scoring was {'off' if scoring else 'on'} in a run meant to have it "
                                 f"{'on' if scoring else 'off'}")
            line = (f"run {i + 1} scoring {'on ' if scoring else 'off'}: phase wall {wall:.2f} s, CPU {cpu:.2f} s "
                    f"(extraction_s {t['extraction_s']:.2f}")
            if scoring:
                per_phase.append(((t["extraction_s"] + t["occlusion_s"]) / t["extraction_s"],
                                  (clock.cpu["extraction"] + clock.cpu["occlusion"]) / clock.cpu["extraction"]))
                line += (f", occlusion_s {t['occlusion_s']:.2f}; per-phase ratio: wall {per_phase[-1][0]:.3f}, "
                         f"CPU {per_phase[-1][1]:.3f}")
            print(f"{line})  load average {loads[-1]:.1f}", flush=True)
        pairs.append((pair[True][0] / pair[False][0], pair[True][1] / pair[False][1]))
        print(f"  pair {i + 1}: with / without occlusion scoring: wall {pairs[-1][0]:.3f}, CPU {pairs[-1][1]:.3f}",
              flush=True)

    def spread(vals):
        return f"{min(vals):.3f}-{max(vals):.3f} (median {statistics.median(vals):.3f})"

    print(f"OVERHEAD of occlusion scoring (truth {args.truth}; phase embed + score, with / without scoring; {len(pairs)} pairs, "
          f"alternating): wall {spread([p[0] for p in pairs])}, CPU {spread([p[1] for p in pairs])}; "
          f"load average {min(loads):.1f}-{max(loads):.1f}", flush=True)
    print(f"per-phase ratio (extraction_s + occlusion_s) / extraction_s of the scoring runs (lower than the overhead: "
          f"collecting the mask / pattern outputs is inside extraction_s): wall {spread([p[0] for p in per_phase])}, "
          f"CPU {spread([p[1] for p in per_phase])}", flush=True)
    if args.no_truth_alone:
        return 0
    for name, tc in [("this run's", cache)] + [(str(p), p) for p in args.truth_cache]:
        r = truth_alone(truth_inputs(tc))
        print(f"truth alone ({name} masks), CPU time, one thread, {r['n_masks']} occluded masks, identical values "
              f"(masks and patterns) from all three: {r['sets_truth']:.3f} ms/mask (sets_truth) vs {r['0.4.0']:.3f} "
              f"(0.4.0's set_truth) vs {r['0.3.0']:.3f} (0.3.0's method); load average {os.getloadavg()[0]:.1f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
