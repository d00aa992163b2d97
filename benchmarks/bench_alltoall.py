"""Benchmark the streamed all-to-all TAR@FAR (occbench.metrics.all_to_all_tar_at_far).

Seeded synthetic set: a gallery of L2-normalised float32 rows, two images per identity, and probes
that are noisy copies of gallery rows (same identity as their source; the MFR setting: masked probe vs
unmasked gallery). Measured in the same run, back to back, on the same blocks:

* baseline: the bare blocked matmul (probe block x gallery block into a preallocated buffer), nothing else;
* all-to-all: ``all_to_all_tar_at_far`` at FAR 1e-4, 1e-5, 1e-6 (genuine extraction, streamed top-k).

Reported: wall and CPU time of each (median of ``--repeats``, alternating), the ratio, and peak memory
(process RSS sampled every 5 ms, above the level before the call) for the full run and for runs with
a quarter and a half of the probes, i.e. 4x fewer / 2x fewer impostor pairs: the peak beyond the
function's own sorted copy of the probes must not grow with the impostor count. The operating points
of a smaller subset are checked against a dense reference (strict TAR@FAR on the full score list).

    python benchmarks/bench_alltoall.py                     # 10k x 10k, dim 512
    python benchmarks/bench_alltoall.py --n 2000 --repeats 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import GiB, make_gallery, timed  # noqa: E402

from occbench.metrics.alltoall import _DEFAULT_BLOCKS, all_to_all_tar_at_far  # noqa: E402
from occbench.metrics.identification import _resolve_device  # noqa: E402
from occbench.metrics.verification import strict_operating_point  # noqa: E402

FARS = (1e-4, 1e-5, 1e-6)


def make_set(n_gallery: int, n_probes: int, dim: int, seed: int, noise: float):
    g = make_gallery(n_gallery, dim, seed, 65536)
    g_id = np.arange(n_gallery) // 2
    rng = np.random.default_rng(seed + 1)
    src = rng.integers(0, n_gallery, n_probes)
    p = g[src] + rng.standard_normal((n_probes, dim), dtype=np.float32) * np.float32(noise / np.sqrt(dim))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return p, g_id[src], g, g_id


def bare_matmul(p: np.ndarray, g: np.ndarray, pb: int, gb: int, dev) -> None:
    with torch.inference_mode():
        p_all = torch.from_numpy(p).to(dev)
        buf = torch.empty(min(pb, len(p)) * min(gb, len(g)), dtype=torch.float32, device=dev)
        for g0 in range(0, len(g), gb):
            g1 = min(g0 + gb, len(g))
            g_t = torch.from_numpy(g[g0:g1]).to(dev).T
            for p0 in range(0, len(p), pb):
                p1 = min(p0 + pb, len(p))
                torch.mm(p_all[p0:p1], g_t, out=buf[: (p1 - p0) * (g1 - g0)].view(p1 - p0, g1 - g0))


def dense_check(p, pl, g, gl, pb, gb, dev) -> bool:
    r = all_to_all_tar_at_far(p, pl, g, gl, [1e-2, 1e-3, 1e-4], probe_block=pb, gallery_block=gb, device=dev)
    s = (torch.from_numpy(p) @ torch.from_numpy(g).T).numpy().astype(np.float64)
    same = pl[:, None] == gl[None, :]
    ok = True
    for pt in r.points:
        if pt.measurable:
            ref = strict_operating_point(s[same], s[~same], pt.far_target)
            ok &= (pt.tar, pt.far, pt.threshold) == (ref.tar, ref.far, ref.threshold)
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="probes = gallery size (default 10,000)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu | cuda[:N] | auto")
    ap.add_argument("--probe-block", type=int, default=None)
    ap.add_argument("--gallery-block", type=int, default=None)
    ap.add_argument("--noise", type=float, default=1.2, help="probe noise (relative to a unit row)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)

    dev = _resolve_device(a.device)
    pb = a.probe_block or _DEFAULT_BLOCKS[dev.type][0]
    gb = a.gallery_block or _DEFAULT_BLOCKS[dev.type][1]
    p, pl, g, gl = make_set(a.n, a.n, a.dim, a.seed, a.noise)
    print(f"device={dev} threads={torch.get_num_threads()} torch={torch.__version__} probes={a.n} gallery={a.n} "
          f"dim={a.dim} blocks={pb}x{gb}", flush=True)

    check = dense_check(p[:1500], pl[:1500], g[:2000], gl[:2000], 300, 700, dev)
    print(f"dense reference check (1500 x 2000, FAR 1e-2/1e-3/1e-4): {'exact match' if check else 'MISMATCH'}",
          flush=True)

    all_to_all_tar_at_far(p[:64], pl[:64], g[:256], gl[:256], FARS, device=dev)  # warm-up
    base, ours, res = [], [], {}

    def run(n_probes: int):
        res[n_probes] = all_to_all_tar_at_far(p[:n_probes], pl[:n_probes], g, gl, FARS, probe_block=pb,
                                              gallery_block=gb, device=dev)

    load0 = os.getloadavg()[0]
    for _ in range(a.repeats):  # alternate, so that other load hits both alike
        base.append(timed(lambda: bare_matmul(p, g, pb, gb, dev), dev))
        ours.append(timed(lambda: run(a.n), dev))
    load1 = os.getloadavg()[0]
    mem = {n: timed(lambda n=n: run(n), dev) for n in (a.n // 4, a.n // 2)}
    mem[a.n] = ours[-1]
    r = res[a.n]
    med = lambda xs, f: statistics.median(getattr(x, f) for x in xs)  # noqa: E731
    ratio_wall = med(ours, "wall_s") / med(base, "wall_s")
    ratio_cpu = med(ours, "cpu_s") / med(base, "cpu_s")
    print(f"bare blocked matmul: {med(base, 'wall_s'):.2f} s wall / {med(base, 'cpu_s'):.2f} s CPU "
          f"(runs: {', '.join(f'{x.wall_s:.2f}' for x in base)})")
    print(f"all-to-all:          {med(ours, 'wall_s'):.2f} s wall / {med(ours, 'cpu_s'):.2f} s CPU "
          f"(runs: {', '.join(f'{x.wall_s:.2f}' for x in ours)})")
    print(f"ratio all-to-all / bare matmul (medians of {a.repeats}): {ratio_wall:.3f} wall, {ratio_cpu:.3f} CPU "
          f"(1-min load {load0:.1f} -> {load1:.1f} on {os.cpu_count()} CPUs)")
    print(f"impostors {r.n_impostor:,}, genuine {r.n_genuine:,}; dense score matrix would be "
          f"{a.n * a.n * 4 / GiB:.2f} GiB (never formed)")
    for pt in r.points:
        shown = (f"TAR {pt.tar:.4f} at FAR {pt.far:.2e} (threshold {pt.threshold:.4f}, "
                 f"{pt.n_accepted_impostors} impostors accepted)" if pt.measurable else pt.note)
        print(f"  FAR {pt.far_target:g}: {shown}")
    print(f"bare matmul loop: +{base[-1].rss_peak_above / 2**20:.1f} MiB RSS above start (its score block: "
          f"{min(pb, a.n) * min(gb, a.n) * 4 / 2**20:.1f} MiB)")
    copy_bytes = {n: n * a.dim * 4 for n in mem}
    print("peak RSS above start vs impostor count (the probes' sorted float32 copy is listed apart):")
    for n in sorted(mem):
        n_imp = res[n].n_impostor
        print(f"  {n:>6} probes, {n_imp:>12,} impostors: +{mem[n].rss_peak_above / 2**20:6.1f} MiB "
              f"(probe copy {copy_bytes[n] / 2**20:.1f} MiB; rest +{(mem[n].rss_peak_above - copy_bytes[n]) / 2**20:.1f} MiB)")
    if a.json:
        from occbench.io.atomic import atomic_write_json

        atomic_write_json(a.json, {
            "device": str(dev), "threads": torch.get_num_threads(), "n": a.n, "dim": a.dim, "blocks": [pb, gb],
            "baseline_wall_s": [x.wall_s for x in base], "alltoall_wall_s": [x.wall_s for x in ours],
            "ratio_wall": ratio_wall, "ratio_cpu": ratio_cpu, "dense_check": check,
            "peak_rss_above_start_bytes": {str(n): mem[n].rss_peak_above for n in mem},
            "impostors": {str(n): res[n].n_impostor for n in res}, "result": r.to_dict()})
    return 0 if check else 1


if __name__ == "__main__":
    sys.exit(main())
