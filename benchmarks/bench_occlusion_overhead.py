"""Occlusion-scoring overhead, measured in the same eval run (issue 10 target: <= 1.1x).

Ratio = (extraction + occlusion scoring) / extraction, both from one ``run_eval`` of a model that
declares mask / pattern outputs: ``timing["extraction_s"]`` (read, align, forward, for every image set)
and ``timing["occlusion_s"]`` (ground truth in the model frame for every set + metrics), in wall seconds; and the same ratio in CPU seconds (``CpuClock``: process threads + DataLoader worker
processes), which a shared machine's load does not move.
Landmarks and the occluded sets are made once beforehand (a warm-up run that also extracts, so the
first timed run does not carry the model's first-forward cost); every timed run starts with an empty
embedding cache, so extraction, the truth and its cache are computed afresh.

``occlusion_s`` holds the truth of every set (decode, warp, block sums, pattern labels), the metrics and
breakdowns, the truth-cache writes (and the contact-sheet crops, only gathered when plots are on: this
benchmark runs without plots); drawing plots is not in it. Nothing of it runs during extraction, so the
two buckets do not overlap and the ratio is (extraction + occlusion scoring) / extraction of one run.

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

Prints one line per run and the range, with the load average (the ratio is a same-run ratio; the
load still moves it).
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "realdata" / "lfw-guesswho"


class CpuClock:
    """CPU seconds (this process's threads + reaped child processes, i.e. the DataLoader workers) spent
    inside the wrapped engine functions: extraction (``embed_set``) and occlusion scoring
    (``score_sets``). On a shared machine the wall ratio moves with the load; the CPU ratio does not."""

    def __init__(self):
        import occbench.bench.embed as E
        import occbench.bench.occlusion as O

        self.cpu = {"extraction": 0.0, "occlusion": 0.0}
        E.embed_set = self._wrap(E.embed_set, "extraction")
        O.score_sets = self._wrap(O.score_sets, "occlusion")

    @staticmethod
    def now() -> float:
        import resource

        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    def _wrap(self, fn, name):
        def timed(*args, **kwargs):
            t0 = self.now()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu[name] += self.now() - t0
        return timed

    def reset(self) -> None:
        self.cpu = dict.fromkeys(self.cpu, 0.0)


def eval_once(args, cache: Path):
    from occbench.bench.config import EvalConfig
    from occbench.bench.evaluate import run_eval

    cfg = EvalConfig(model=args.model, protocol=args.protocol, data_root=str(args.data_root), out=None,
                     cache_dir=str(cache), limit=args.limit, workers=args.workers, plots=False,
                     batch_size=args.batch_size, variants=tuple(args.variants.split(",")) if args.variants else None)
    return run_eval(cfg, progress=False)


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="examples-tiny-model")
    ap.add_argument("--protocol", default="lfw-occ")
    ap.add_argument("--variants", default="N-O@s1.0,N-O@s1.5,N-O", help="comma list (default: the three scale sets)")
    ap.add_argument("--data-root", type=Path, default=DATA)
    ap.add_argument("--limit", type=int, default=300, help="pairs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/occbench-bench-occlusion"))
    ap.add_argument("--truth-cache", type=Path, action="append", default=[],
                    help="another occbench cache whose synth runs' masks to check and time the truth on (repeatable)")
    args = ap.parse_args(argv)
    if not args.data_root.is_dir():
        raise SystemExit(f"LFW not found at {args.data_root} (--data-root)")
    cache = args.work / "cache"
    shutil.rmtree(cache / "embeddings", ignore_errors=True)  # the warm-up extracts too (model load, first forward)
    eval_once(args, cache)  # warm-up: landmarks, occluded sets, model
    clock = CpuClock()
    rows, cpu_rows = [], []
    for i in range(args.runs):
        shutil.rmtree(cache / "embeddings", ignore_errors=True)
        clock.reset()
        res = eval_once(args, cache)
        t = res.timing
        ratio = (t["extraction_s"] + t.get("occlusion_s", 0.0)) / t["extraction_s"]
        cpu_ratio = (clock.cpu["extraction"] + clock.cpu["occlusion"]) / clock.cpu["extraction"]
        load = os.getloadavg()[0]
        rows.append(ratio)
        cpu_rows.append(cpu_ratio)
        print(f"run {i + 1}: wall: extraction {t['extraction_s']:.2f} s, occlusion scoring {t.get('occlusion_s', 0.0):.2f} s, "
              f"ratio {ratio:.3f}; CPU: extraction {clock.cpu['extraction']:.2f} s, occlusion scoring "
              f"{clock.cpu['occlusion']:.2f} s, ratio {cpu_ratio:.3f}  (load average {load:.1f})", flush=True)
    print(f"ratio (extraction + occlusion scoring) / extraction over {args.runs} runs: wall {min(rows):.3f}-"
          f"{max(rows):.3f}, CPU {min(cpu_rows):.3f}-{max(cpu_rows):.3f}")
    for name, tc in [("this run's", cache)] + [(str(p), p) for p in args.truth_cache]:
        r = truth_alone(truth_inputs(tc))
        print(f"truth alone ({name} masks), CPU time, one thread, {r['n_masks']} occluded masks, identical values "
              f"(masks and patterns) from all three: {r['sets_truth']:.3f} ms/mask (sets_truth) vs {r['0.4.0']:.3f} "
              f"(0.4.0's set_truth) vs {r['0.3.0']:.3f} (0.3.0's method); load average {os.getloadavg()[0]:.1f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
