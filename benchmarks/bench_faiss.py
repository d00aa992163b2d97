"""Benchmark ``occbench.search.search(backend="faiss")`` against FAISS called directly, same run.

Baseline (FAISS alone): ``IndexFlatIP(d)``, ``index.add(gallery)``, ``index.search(probes, k)``.
occbench: ``search(probes, gallery, k, backend="faiss")`` (finiteness checks, k+1 results, tie order,
boundary ties redone exactly). Both are timed end to end (index build + search), interleaved with the
order alternating per repeat; the ratio of each repeat is reported as median and range. With
``--approx`` the approximate backends are run once each and their measured recall@k reported.

    python benchmarks/bench_faiss.py --gallery 100000 --repeats 3
    python benchmarks/bench_faiss.py --gallery 1000000 --repeats 3 --approx
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_data import interleaved, load_line, make_gallery, make_probes, ratio_line, wall_cpu  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gallery", type=int, default=1_000_000)
    ap.add_argument("--probes", type=int, default=3530)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--approx", action="store_true", help="also run faiss-ivf and faiss-hnsw once (recall@k)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)

    import faiss

    from occbench.search import search

    g = make_gallery(a.gallery, a.dim, a.seed, 65536)
    p, _ = make_probes(g, a.probes, a.seed)
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; gallery {a.gallery}x{a.dim}, "
          f"{a.probes} probes, k={a.k}", flush=True)

    def direct():
        index = faiss.IndexFlatIP(a.dim)
        index.add(g)
        return index.search(p, a.k)

    def ours():
        return search(p, g, a.k, backend="faiss", device="cpu")

    last = {}

    def keep(name, fn):
        def run():
            last[name] = fn()
        return run

    load0 = os.getloadavg()[0]
    timed = interleaved({"faiss_direct": keep("faiss_direct", direct), "occbench_faiss": keep("occbench_faiss", ours)},
                        a.repeats, wall_cpu)
    runs = {name: [(w, c) for _, w, c in ts] for name, ts in timed.items()}
    res, (d_scores, d_ids) = last["occbench_faiss"], last["faiss_direct"]
    load1 = os.getloadavg()[0]
    same_set = float(np.mean([set(x) == set(y) for x, y in zip(res.topk.indices, d_ids)]))
    out = {"gallery": a.gallery, "probes": a.probes, "dim": a.dim, "k": a.k, "repeats": a.repeats,
           "runs_s": runs, "loadavg_1min_start": load0, "loadavg_1min_end": load1,
           "same_topk_sets_as_faiss": same_set,
           "boundary_ties_redone": res.params.get("boundary_ties_redone")}
    for unit, col in (("wall", 0), ("cpu", 1)):
        rs = [o[col] / d[col] for o, d in zip(runs["occbench_faiss"], runs["faiss_direct"])]
        out[f"ratio_{unit}"] = rs
        print(ratio_line(f"occbench --search faiss / FAISS direct, {unit}", rs))
    for name, ts in runs.items():
        print(f"  {name}: " + ", ".join(f"{w:.1f} s wall / {c:.1f} s CPU" for w, c in ts))
    print(f"top-k sets equal to FAISS's on {same_set:.4f} of probes; " + load_line(load0, load1))
    if a.approx:
        for backend in ("faiss-ivf", "faiss-hnsw"):
            t = time.perf_counter()
            r = search(p, g, a.k, backend=backend, device="cpu", recall_sample=500)
            dt = time.perf_counter() - t
            out[backend] = r.to_dict() | {"total_s": dt}
            print(f"{backend}: build {r.build_s:.1f} s, search {r.search_s:.1f} s, recall@{a.k} "
                  f"{r.recall_at_k:.4f} on {r.recall_sample} probes (exact check {r.recall_s:.1f} s); {r.params}")
    if a.json:
        from occbench.io.atomic import atomic_write_json
        atomic_write_json(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
