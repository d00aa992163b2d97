"""Occlusion-scoring overhead, measured in the same eval run (issue 10 target: <= 1.1x).

Ratio = (extraction + occlusion scoring) / extraction, both from one ``run_eval`` of a model that
declares mask / pattern outputs: ``timing["extraction_s"]`` (read, align, forward, for every image set)
and ``timing["occlusion_s"]`` (ground truth in the model frame for every set + metrics + contact sheet),
in wall seconds; and the same ratio in CPU seconds (``CpuClock``: process threads + DataLoader worker
processes), which a shared machine's load does not move.
Landmarks and the occluded sets are made once beforehand (a warm-up run that also extracts, so the
first timed run does not carry the model's first-forward cost); every timed run starts with an empty
embedding cache, so extraction, the truth and its cache are computed afresh.

Besides, on the same masks in the same process, one thread: the truth alone per image with the current
method (``set_truth``: one warp, exact uint8 block sums, one vectorised pattern match per set) and with
occbench 0.3.0's (float block means, one pattern match per image); the values must be identical.

    python benchmarks/bench_occlusion_overhead.py                           # tiny model, lfw-occ, 300 pairs
    python benchmarks/bench_occlusion_overhead.py --runs 3 --limit 300 --workers 2
    OCCBENCH_TINY_MODEL=/tmp/tiny.pt python benchmarks/bench_occlusion_overhead.py --model examples-tiny-model

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


def truth_inputs(cache: Path):
    """(alignments to arcface112, mask paths) of the occluded images of every synth run in the cache."""
    import pandas as pd

    from occbench.face.geometry import ARCFACE_112, estimate_similarity
    from occbench.face.landmarks import COORD_COLUMNS
    from occbench.synth.manifest import read_manifest

    ms, paths = [], []
    for lm_file in sorted((cache / "runs").glob("*/*/landmarks.csv")):
        lms = pd.read_csv(lm_file)
        lms = lms[lms["status"] == "ok"].set_index("key")
        for run in sorted(p.parent for p in lm_file.parent.glob("*/manifest.csv")):
            man = read_manifest(run)
            man = man[(man["status"] == "ok") & man["key"].isin(lms.index)]
            fives = lms.loc[man["key"], list(COORD_COLUMNS)].to_numpy(float).reshape(-1, 5, 2)
            ms += [estimate_similarity(f, ARCFACE_112) for f in fives]
            paths += [str(run / p) for p in man["mask"]]
    if not paths:
        raise SystemExit(f"no occluded images under {cache}/runs")
    return np.array(ms), paths


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


def truth_alone(ms, paths, k: int = 5, grid=(14, 14), crop=(112, 112)) -> tuple[float, float]:
    """CPU ms per image (process time: the load does not inflate it), one thread each: ``set_truth``
    (current) and 0.3.0's per-image method, on the same masks (PNG decode included in both); the two
    must agree exactly."""
    import cv2

    from occbench.bench.occlusion import _read_mask, set_truth

    cv2.setNumThreads(1)

    t0 = time.process_time()
    cur = set_truth(ms, paths, crop, grid, k, threads=1)
    t_cur = time.process_time() - t0
    t0 = time.process_time()
    prev = [previous_truth(_read_mask(p), ms[i], crop, grid, k) for i, p in enumerate(paths)]
    t_prev = time.process_time() - t0
    for i, (tm, label) in enumerate(prev):
        if not (np.array_equal(tm, cur.mask[i]) and label == cur.pattern[i]):
            raise SystemExit(f"truth differs from 0.3.0's on {paths[i]}")
    return 1e3 * t_cur / len(paths), 1e3 * t_prev / len(paths)


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
    ms, paths = truth_inputs(cache)
    cur, ref = truth_alone(ms, paths)
    print(f"ratio (extraction + occlusion scoring) / extraction over {args.runs} runs: wall {min(rows):.3f}-"
          f"{max(rows):.3f}, CPU {min(cpu_rows):.3f}-{max(cpu_rows):.3f}")
    print(f"truth alone, CPU time, one thread, {len(paths)} occluded masks: {cur:.3f} ms/image (set_truth) vs {ref:.3f} "
          f"ms/image (0.3.0's method, identical values); load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
