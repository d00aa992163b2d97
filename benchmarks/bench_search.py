"""Benchmark the streamed 1:N top-k search (occbench.metrics.topk_search).

Builds a seeded synthetic L2-normalised float32 gallery (generated chunk by chunk, in place),
probes of which half are noisy copies of gallery rows, then measures in the same run:

* baseline: the bare block loop (load the gallery block, probe-block x gallery-block matmul),
  no top-k and no merging;
* baseline 2: the same loop + torch.topk per block + a topk merge (a plain hand-written top-k
  search, ties in arbitrary order);
* search: ``topk_search`` on the same blocks;

and reports wall time, probes/s, the search/baseline time ratio, peak memory (CPU: sampled
process RSS above the level before the step, and ru_maxrss; CUDA: torch.cuda.max_memory_allocated),
and the size a dense probes x gallery float32 matrix would have needed. A few probes are checked
against a dense argsort answer and the mated probes' top-1 against their source row.

    python benchmarks/bench_search.py --gallery 100000          # quick check
    python benchmarks/bench_search.py                           # 1M x 512 vs 3,530 probes
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from occbench.metrics import topk_search
from occbench.metrics.identification import _DEFAULT_BLOCKS, _resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_data import interleaved, load_line, make_gallery, make_probes, ratio_line  # noqa: E402

GiB = 1024 ** 3


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the process RSS every few ms in a thread; .peak_above is the peak minus the start."""

    def __init__(self, period: float = 0.005):
        self.period, self.peak, self._stop = period, 0, threading.Event()

    def __enter__(self):
        self.start = rss_bytes()
        self.peak = self.start
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.period)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def peak_above(self) -> int:
        return self.peak - self.start


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _bare_rows(x, a: int, b: int, dev: torch.device) -> torch.Tensor:
    """Rows a:b as a float32 tensor on dev, the plain way (a view of an in-memory array; a memmap is read)."""
    return torch.from_numpy(np.ascontiguousarray(x[a:b], dtype=np.float32)).to(dev)


def bare_matmul(probes, gallery, pb: int, gb: int, dev: torch.device) -> None:
    """The block loop without top-k / merging (torch.mm into one reused buffer): a floor."""
    with torch.inference_mode():
        p_all = _bare_rows(probes, 0, probes.shape[0], dev)
        n_p, n_g = probes.shape[0], gallery.shape[0]
        buf = torch.empty(min(pb, n_p) * min(gb, n_g), dtype=torch.float32, device=dev)
        for g0 in range(0, n_g, gb):
            g1 = min(g0 + gb, n_g)
            g_t = _bare_rows(gallery, g0, g1, dev).T
            for p0 in range(0, n_p, pb):
                p1 = min(p0 + pb, n_p)
                torch.mm(p_all[p0:p1], g_t, out=buf[: (p1 - p0) * (g1 - g0)].view(p1 - p0, g1 - g0))
        sync(dev)


def bare_matmul_topk(probes, gallery, k: int, pb: int, gb: int, dev: torch.device) -> None:
    """The best-known bare exact top-k search: the same block loop + torch.topk per block + a topk
    merge of the running lists (ties in arbitrary order, no finiteness checks)."""
    with torch.inference_mode():
        p_all = _bare_rows(probes, 0, probes.shape[0], dev)
        n_p, n_g = probes.shape[0], gallery.shape[0]
        best_s = torch.full((n_p, k), -torch.inf, device=dev)
        best_i = torch.full((n_p, k), -1, dtype=torch.int64, device=dev)
        buf = torch.empty(min(pb, n_p) * min(gb, n_g), dtype=torch.float32, device=dev)
        for g0 in range(0, n_g, gb):
            g1 = min(g0 + gb, n_g)
            g_t = _bare_rows(gallery, g0, g1, dev).T
            for p0 in range(0, n_p, pb):
                p1 = min(p0 + pb, n_p)
                sim = buf[: (p1 - p0) * (g1 - g0)].view(p1 - p0, g1 - g0)
                torch.mm(p_all[p0:p1], g_t, out=sim)
                v, i = torch.topk(sim, min(k, g1 - g0), dim=1)
                cv, ci = torch.cat([best_s[p0:p1], v], 1), torch.cat([best_i[p0:p1], i + g0], 1)
                o = torch.topk(cv, k, dim=1).indices
                best_s[p0:p1], best_i[p0:p1] = cv.gather(1, o), ci.gather(1, o)
        sync(dev)


class Timing(NamedTuple):
    wall_s: float
    cpu_s: float  # process CPU time (all threads): less sensitive than wall time to other load
    rss_peak_above: int
    cuda_peak: int


def timed(fn, dev: torch.device) -> Timing:
    """Wall time, CPU time, peak RSS above the start and peak CUDA bytes allocated of fn()."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with PeakRSS() as mem:
        c, t = time.process_time(), time.perf_counter()
        fn()
        sync(dev)
        dt, dc = time.perf_counter() - t, time.process_time() - c
    cuda_peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else 0
    return Timing(dt, dc, mem.peak_above, cuda_peak)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gallery", type=int, default=1_000_000)
    ap.add_argument("--probes", type=int, default=3530)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--probe-block", type=int, default=None, help="default: 2048 CPU / 4096 CUDA")
    ap.add_argument("--gallery-block", type=int, default=None, help="default: 16384 CPU / 65536 CUDA")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=65536, help="gallery rows generated at a time")
    ap.add_argument("--memmap", type=Path, default=None, help="write the gallery to this .npy and search the memmap")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--baseline-fraction", type=float, default=1.0,
                    help="measure baseline vs search (interleaved, same blocks) on this leading fraction of the "
                         "gallery blocks; the full search is timed on its own. <1 keeps the 1M run short on 2 cores")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved baseline/search repeats (ratio median, range)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    a = ap.parse_args(argv)

    if a.threads:
        torch.set_num_threads(a.threads)
    dev = _resolve_device(a.device)
    pb = a.probe_block or _DEFAULT_BLOCKS[dev.type][0]
    gb = a.gallery_block or _DEFAULT_BLOCKS[dev.type][1]
    dense_bytes = a.probes * a.gallery * 4
    print(f"device={dev} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"gallery={a.gallery}x{a.dim} probes={a.probes} k={a.k} blocks={pb}x{gb}", flush=True)

    t = time.perf_counter()
    if a.memmap:
        mm = np.lib.format.open_memmap(a.memmap, mode="w+", dtype=np.float32, shape=(a.gallery, a.dim))
        make_gallery(a.gallery, a.dim, a.seed, a.chunk, out=mm)
        mm.flush()
        del mm
        gallery = np.load(a.memmap, mmap_mode="r")
    else:
        gallery = make_gallery(a.gallery, a.dim, a.seed, a.chunk)
    probes, src = make_probes(gallery, a.probes, a.seed)
    print(f"generated gallery ({a.gallery * a.dim * 4 / GiB:.2f} GiB) + probes in {time.perf_counter() - t:.1f} s; "
          f"RSS {rss_bytes() / GiB:.2f} GiB", flush=True)

    topk_search(probes[:8], gallery[:4096], a.k, device=dev)  # warm-up (threads, allocator)

    if not 0 < a.baseline_fraction <= 1:
        ap.error("--baseline-fraction must be in (0, 1]")
    n_blocks = -(-a.gallery // gb)
    base_blocks = max(1, round(a.baseline_fraction * n_blocks))
    base_rows = min(a.gallery, base_blocks * gb)
    res = {}

    def search(rows: int):
        res[rows] = topk_search(probes, gallery[:rows], a.k, probe_block=pb, gallery_block=gb, device=dev)

    load0 = os.getloadavg()[0]
    # baselines and search on the same blocks, interleaved (order alternating per repeat), so that
    # other load hits all alike; the ratio of each repeat is reported as median and range
    sub_g = gallery[:base_rows]
    steps = {"matmul": lambda: bare_matmul(probes, sub_g, pb, gb, dev),
             "matmul_topk": lambda: bare_matmul_topk(probes, sub_g, a.k, pb, gb, dev),
             "search": lambda: search(base_rows)}
    runs = interleaved(steps, a.repeats, lambda fn: timed(fn, dev))
    base, sub = runs["matmul"][0], runs["search"][0]

    def ratios(num, den, field):
        return [getattr(x, field) / getattr(y, field) for x, y in zip(runs[num], runs[den])]

    for name, ts in runs.items():
        print(f"on {base_blocks}/{n_blocks} gallery blocks: {name}: "
              + ", ".join(f"{t.wall_s:.2f} s wall / {t.cpu_s:.2f} s CPU" for t in ts), flush=True)
    full = sub if base_rows == a.gallery else timed(lambda: search(a.gallery), dev)
    r = res[a.gallery]
    load1 = os.getloadavg()[0]

    # correctness spot checks: dense argsort on a few probes, and mated probes find their source row
    few = np.arange(0, a.probes, max(1, a.probes // 8))[:8]
    sim = np.concatenate([probes[few].astype(np.float64) @ np.asarray(gallery[g:g + 65536], np.float64).T
                          for g in range(0, a.gallery, 65536)], axis=1)
    dense_idx = np.argsort(-sim, axis=1, kind="stable")[:, :a.k]
    dense_match = float(np.mean(dense_idx == r.indices[few]))
    mated = src >= 0
    top1_src = float(np.mean(r.indices[mated, 0] == src[mated]))

    out = {
        "device": str(dev), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "gallery": a.gallery, "probes": a.probes, "dim": a.dim, "k": a.k,
        "probe_block": pb, "gallery_block": gb, "memmap": bool(a.memmap),
        "search_s": full.wall_s, "search_cpu_s": full.cpu_s, "probes_per_s": a.probes / full.wall_s,
        "gflops_search": 2 * a.probes * a.gallery * a.dim / full.wall_s / 1e9,
        "ratio_blocks": base_blocks, "gallery_blocks": n_blocks,
        "baseline_matmul_s": base.wall_s, "baseline_matmul_cpu_s": base.cpu_s,
        "search_same_blocks_s": sub.wall_s, "search_same_blocks_cpu_s": sub.cpu_s,
        "search_over_baseline": sub.wall_s / base.wall_s, "search_over_baseline_cpu": sub.cpu_s / base.cpu_s,
        "repeats": a.repeats,
        "search_over_matmul_wall": ratios("search", "matmul", "wall_s"),
        "search_over_matmul_cpu": ratios("search", "matmul", "cpu_s"),
        "search_over_matmul_topk_wall": ratios("search", "matmul_topk", "wall_s"),
        "search_over_matmul_topk_cpu": ratios("search", "matmul_topk", "cpu_s"),
        "matmul_topk_over_matmul_wall": ratios("matmul_topk", "matmul", "wall_s"),
        "matmul_topk_over_matmul_cpu": ratios("matmul_topk", "matmul", "cpu_s"),
        "peak_rss_above_start_search_bytes": full.rss_peak_above,
        "peak_rss_above_start_baseline_bytes": base.rss_peak_above,
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "cuda_max_allocated_search_bytes": full.cuda_peak, "cuda_max_allocated_baseline_bytes": base.cuda_peak,
        "loadavg_1min_start": load0, "loadavg_1min_end": load1,
        "score_block_bytes": min(pb, a.probes) * min(gb, a.gallery) * 4,
        "dense_matrix_bytes": dense_bytes,
        "spot_check_dense_agreement": dense_match, "mated_top1_is_source": top1_src,
    }
    print(f"search (whole gallery): {full.wall_s:.2f} s wall ({full.cpu_s:.2f} s CPU), "
          f"{out['probes_per_s']:.1f} probes/s, {out['gflops_search']:.0f} GFLOP/s")
    for den in ("matmul", "matmul_topk"):
        for unit in ("wall", "cpu"):
            rs = out[f"search_over_{den}_{unit}"]
            print(ratio_line(f"ratio search / bare {den.replace('_', ' + ')} on the same {base_blocks}/{n_blocks} "
                             f"blocks, {unit}", rs))
    for unit in ("wall", "cpu"):  # the floor of any exact search: the matmul and a top-k selection
        print(ratio_line(f"ratio bare matmul + topk / bare matmul on the same {base_blocks}/{n_blocks} blocks, {unit}",
                         out[f"matmul_topk_over_matmul_{unit}"]))
    print(load_line(load0, load1))
    print(f"peak memory during search: +{full.rss_peak_above / 2**20:.0f} MiB RSS above start "
          f"(bare matmul loop: +{base.rss_peak_above / 2**20:.0f} MiB); "
          f"ru_maxrss {out['ru_maxrss_bytes'] / GiB:.2f} GiB (whole process, gallery included)"
          + (f"; CUDA max allocated {full.cuda_peak / 2**20:.0f} MiB" if full.cuda_peak else ""))
    print(f"score block {out['score_block_bytes'] / 2**20:.0f} MiB vs dense probes x gallery float32 matrix "
          f"{dense_bytes / GiB:.2f} GiB (never formed)")
    print(f"checks: dense argsort agreement on {len(few)} probes = {dense_match:.3f}; "
          f"mated probes with their source row at rank 1 = {top1_src:.3f}")
    if a.json:
        from occbench.io.atomic import atomic_write_json
        atomic_write_json(a.json, out)
    return 0 if dense_match == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
