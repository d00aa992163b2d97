"""Sharded synth (--format rec), on-the-fly occlusion and Dask, as ratios to baselines in the same run.

    python benchmarks/bench_shards.py --n 600                     # rec rows + dataset rows
    python benchmarks/bench_shards.py --n 2000 --dask             # + --dask local:2 vs --jobs 1
    python benchmarks/bench_shards.py --n 2000 --malloc --skip rec,dataset   # the Dask nanny's malloc setting
    python benchmarks/bench_shards.py --n 2000 --dask --dask-rows local,jobs2 --skip rec,dataset  # + --jobs 2

Aligned 112x112 crops of real LFW faces are built once (as bench_synth.py: MediaPipe + align, JPEG q95)
into --cache. Rows (each the best of --repeat runs unless stated):

* rec: ``run_synth_sharded(format="rec")`` (every occluder, scales 1:0.5:2, --jobs 1, shard size 1000)
  vs the bare copy into one shard: read every file, decode, re-encode (cv2, same quality) and append it
  framed to one RecordIO file, nothing else. ``--bank 64`` warm (the process drew the bank before) and
  ``--bank 0`` (a new seed per repeat).
* dataset: images/s of a DataLoader (batch 32, --workers, persistent workers, second pass = warm) over
  ``OccludedDataset`` vs the same DataLoader over the same source without occlusion (decode only); two
  floors: the JPEG round trip alone, and the round trip with one pre-drawn sprite pasted and its mask.
* dask (--dask): the same rec run (--dask-shard-size) with ``--dask local:2`` vs ``--jobs 1``, each in a
  fresh interpreter (cold bank and imports, cluster start included), for ``--bank 0`` (the default: a new
  look per image) and ``--bank 64`` (the bank's sprites are drawn once per run and shared by the workers
  through ``OUT/.synth/sprites``); then the same against an existing 2-worker cluster (``--dask
  tcp://...``, the issue's first use: a new LocalCluster started by this script before each run, so nothing
  drawn before is kept, and closed after it, so that no idle cluster shares the CPU with the ``--jobs 1``
  runs; cluster start not included). Every run writes to a new OUT.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_synth import REALDATA, aligned_crops  # noqa: E402


def timed(fn):
    c, t = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def bare_copy_into_shard(src: Path, keys: list[str], out: Path) -> None:
    import cv2
    import numpy as np

    from occbench.io.recordio import IRHeader, frame, pack

    with open(out, "wb") as fh:
        for i, k in enumerate(keys):
            img = cv2.imdecode(np.frombuffer((src / k).read_bytes(), np.uint8), cv2.IMREAD_COLOR)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            fh.write(frame(pack(IRHeader(0, 0.0, i, 0), buf.tobytes())))


def floor_sprite():
    """One pre-drawn premultiplied RGBA float32 sprite (a blurred ellipse), as a bank sprite is."""
    import cv2
    import numpy as np

    sprite = np.zeros((80, 112, 4), np.float32)
    cv2.ellipse(sprite, (56, 40), (50, 35), 0, 0, 360, (150.0, 120.0, 100.0, 1.0), -1)
    return cv2.GaussianBlur(sprite, (5, 5), 1.0)


def paste_sprite(img, sprite, rng):
    """Warp ``sprite`` into ``img`` (a small random similarity), blend it (cv2, float32) and threshold the
    mask: the least work an occluder needs per image. Returns (occluded uint8 image, uint8 mask)."""
    import cv2
    import numpy as np

    a, tx, ty = rng.uniform(-0.1, 0.1), rng.uniform(-3, 3), rng.uniform(55, 65)
    m = np.array([[np.cos(a), -np.sin(a), tx], [np.sin(a), np.cos(a), ty]], np.float32)
    layer = cv2.warpAffine(sprite, m, (img.shape[1], img.shape[0]))
    alpha = cv2.extractChannel(layer, 3)
    keep = 1.0 - alpha
    mixed = cv2.multiply(img, cv2.merge([keep, keep, keep]), dtype=cv2.CV_32F)
    occluded = cv2.add(mixed, cv2.cvtColor(layer, cv2.COLOR_BGRA2BGR), dtype=cv2.CV_8U)
    return occluded, np.where(alpha >= 0.5, 255, 0).astype(np.uint8)


def floor_into_shard(src: Path, keys: list[str], out: Path) -> None:
    """The least a synth with an occluder must do per image, with the fastest calls we know: decode,
    warp one pre-drawn premultiplied RGBA sprite into the image and blend it (cv2, float32), threshold
    the mask, encode the image (cv2 JPEG, same quality) and the mask (occbench's PNG writer, faster
    than cv2's for these masks), append both to the shard. No labels, params, manifest or landmarks."""
    import cv2
    import numpy as np

    from occbench.io.recordio import IRHeader, frame, pack
    from occbench.synth.pipeline import encode_mask_png

    sprite = floor_sprite()
    rng = np.random.default_rng(0)
    masks = []
    with open(out, "wb") as fh:
        for i, k in enumerate(keys):
            img = cv2.imdecode(np.frombuffer((src / k).read_bytes(), np.uint8), cv2.IMREAD_COLOR)
            occluded, mask = paste_sprite(img, sprite, rng)
            ok, buf = cv2.imencode(".jpg", occluded, [cv2.IMWRITE_JPEG_QUALITY, 95])
            fh.write(frame(pack(IRHeader(0, 0.0, i, 0), buf.tobytes())))
            masks.append(encode_mask_png(mask))


def synth_rec(src: Path, out: Path, bank: int, seed: int, jobs: int = 1, dask: str | None = None,
              shard_size: int = 1000) -> None:
    from occbench.synth.pipeline import SynthConfig
    from occbench.synth.sharded import run_synth_sharded

    cfg = SynthConfig(src=str(src), out=str(out), landmarks="template", scales=(1.0, 1.5, 2.0), bank=bank,
                      seed=seed, jobs=jobs, overwrite=True)
    run_synth_sharded(cfg, "rec", shard_size, dask=dask, progress=False)


def fresh_process(src: Path, out: Path, bank: int, seed: int, jobs: int, dask: str | None, shard_size: int,
                  env: dict | None = None, tune: bool = False) -> None:
    """synth_rec in a new interpreter: nothing drawn before (a cold bank), as a real run starts.
    ``env``: extra environment variables; ``tune``: call ``tune_worker_malloc`` first (as shard tasks do)."""
    import subprocess

    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); from bench_shards import synth_rec; "
            + ("from occbench.distributed import tune_worker_malloc; tune_worker_malloc(); " if tune else "")
            + f"synth_rec({str(src)!r}, __import__('pathlib').Path({str(out)!r}), {bank}, {seed}, {jobs}, {dask!r}, {shard_size})")
    subprocess.run([sys.executable, "-c", code], check=True, env=None if env is None else os.environ | env)


def malloc_rows(src: Path, tmp: Path, n: int, a) -> None:
    """The Dask nanny's MALLOC_TRIM_THRESHOLD_=65536 on the one-process run, and the same after
    ``tune_worker_malloc`` (what every shard task does): wall seconds, fresh processes, new OUT each."""
    nanny = {"MALLOC_TRIM_THRESHOLD_": "65536"}
    for r in range(a.repeat):
        plain = timed(lambda: fresh_process(src, tmp / f"m{r}a", 64, 0, 1, None, a.dask_shard_size))[0]
        trim = timed(lambda: fresh_process(src, tmp / f"m{r}b", 64, 0, 1, None, a.dask_shard_size, env=nanny))[0]
        tuned = timed(lambda: fresh_process(src, tmp / f"m{r}c", 64, 0, 1, None, a.dask_shard_size, env=nanny,
                                            tune=True))[0]
        print(f"[{r}] rec --bank 64, {n} crops, --jobs 1: {plain:.1f} s; with the nanny's MALLOC_TRIM_THRESHOLD_=65536 "
              f"{trim:.1f} s ({trim / plain:.2f}x); same + tune_worker_malloc {tuned:.1f} s ({tuned / plain:.2f}x); "
              f"load {os.getloadavg()[0]:.1f}", flush=True)


class Plain:
    """The baseline dataset: decode the source image, same tensor layout and label as OccludedDataset."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def outputs(self, data: bytes, i: int) -> tuple:
        """(RGB pixels, extra item fields...) of item ``i`` from its source bytes."""
        from occbench.io.images import decode_rgb

        return (decode_rgb(data),)

    def __getitem__(self, i):
        import numpy as np
        import torch

        img, *extra = self.outputs(self.ds._source.read_bytes(self.ds.keys[i]), i)
        return (torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), self.ds.labels[i], *extra)


class RoundTrip(Plain):
    """The dataset floor: decode, re-encode as synth writes it (JPEG, same quality), decode again, the
    round trip that giving exactly synth's pixels needs for a JPEG source, and no occlusion at all."""

    def outputs(self, data: bytes, i: int) -> tuple:
        from occbench.io.images import decode_rgb, encode

        return (decode_rgb(encode(decode_rgb(data), "jpg", jpeg_quality=95)),)


class PastedRoundTrip(Plain):
    """The dataset floor with an occluder: decode, paste one pre-drawn sprite (``paste_sprite``, a fresh
    per-item RNG), the JPEG round trip, and the mask as a tensor; no drawing, relighting, labels or
    pattern. What any on-the-fly occluder giving synth's exact pixels must at least do."""

    _sprite = None

    def outputs(self, data: bytes, i: int) -> tuple:
        import numpy as np
        import torch

        from occbench.io.images import decode_rgb, encode

        if PastedRoundTrip._sprite is None:
            PastedRoundTrip._sprite = floor_sprite()
        occluded, mask = paste_sprite(decode_rgb(data), PastedRoundTrip._sprite, np.random.default_rng(i))
        return decode_rgb(encode(occluded, "jpg", jpeg_quality=95)), torch.from_numpy(mask)


def loader_rate(ds, workers: int) -> tuple[float, float]:
    """(cold, warm) images/s: first and second pass of one persistent-worker DataLoader."""
    import torch

    dl = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=workers, persistent_workers=workers > 0,
                                     multiprocessing_context="fork" if workers else None)
    rates = []
    for _ in range(2):
        t = time.perf_counter()
        n = sum(len(b[0]) for b in dl)
        rates.append(n / (time.perf_counter() - t))
    return rates[0], rates[1]


def dask_rows(src: Path, tmp: Path, n: int, a) -> None:
    """--dask local:2 and an existing 2-worker cluster vs --jobs 1, fresh processes, new OUT each run."""
    runs = iter(range(1 << 30))

    def run(bank: int, seed: int, dask: str | None, jobs: int = 1) -> float:
        return timed(lambda: fresh_process(src, tmp / f"run{next(runs)}", bank, seed, jobs, dask, a.dask_shard_size))[0]

    rows = set(a.dask_rows.split(","))
    for bank in (0, 64) if "local" in rows else ():
        for r in range(a.repeat):  # --bank 0: a new seed per repeat (nothing drawn before can help)
            seed = 1000 + r if bank == 0 else 0
            w1, wd = run(bank, seed, None), run(bank, seed, "local:2")
            # the same shards in joblib's two loky processes: the best-known local two-process run
            w2 = run(bank, seed, None, jobs=2) if "jobs2" in rows else None
            print(f"[{r}] rec --bank {bank}, shard size {a.dask_shard_size}, fresh processes: --jobs 1 {n / w1:.0f} "
                  f"img/s, --dask local:2 {n / wd:.0f} img/s (cluster start included) = {w1 / wd:.3f}x"
                  + ("" if w2 is None else f", --jobs 2 (joblib) {n / w2:.0f} img/s = {w1 / w2:.3f}x")
                  + f"; load {os.getloadavg()[0]:.1f}", flush=True)
    from distributed import Client, LocalCluster

    from occbench.distributed import _restore_environ

    for bank in (0, 64) if "existing" in rows else ():
        for r in range(a.repeat):
            seed = 2000 + r if bank == 0 else 0
            w1 = run(bank, seed, None)  # no cluster alive meanwhile
            environ = dict(os.environ)
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                              silence_logs=40) as cluster, Client(cluster) as client:
                client.wait_for_workers(2)  # started, not timed: the cluster exists before the run
                _restore_environ(environ)  # what its nannies left in os.environ must not reach the runs
                wd = run(bank, seed, cluster.scheduler_address)
            _restore_environ(environ)
            print(f"[{r}] rec --bank {bank}: --jobs 1 {n / w1:.0f} img/s, existing 2-worker cluster "
                  f"{n / wd:.0f} img/s = {w1 / wd:.3f}x; load {os.getloadavg()[0]:.1f}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "occbench-bench-aligned")
    ap.add_argument("--dask", action="store_true")
    ap.add_argument("--dask-rows", default="local,existing", help="with --dask: local (local:2, cluster start "
                    "included; with jobs2 also --jobs 2, joblib) and/or existing (a cluster started before the run)")
    ap.add_argument("--malloc", action="store_true", help="the Dask nanny's malloc setting, with and without the fix")
    ap.add_argument("--dask-shard-size", type=int, default=250)
    ap.add_argument("--skip", default="", help="comma list of rows to skip: rec,dataset")
    a = ap.parse_args(argv)
    lfw = REALDATA / "lfw-guesswho" / "lfw"
    if not lfw.is_dir():
        print(f"real LFW not found at {lfw}")
        return 1
    src = aligned_crops(a.cache, a.n)
    keys = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.jpg"))
    n = len(keys)
    print(f"{n} aligned crops; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="occbench-bench-shards-"))
    skip = set(a.skip.split(","))
    try:
        if "rec" not in skip:
            synth_rec(src, tmp / "cold", 64, 0)  # draws the bank's sprites once in this process (cold)
            for r in range(a.repeat):
                base_w, base_c = timed(lambda: bare_copy_into_shard(src, keys, tmp / "copy.rec"))
                w64, c64 = timed(lambda: synth_rec(src, tmp / "b64", 64, 0))
                w0, c0 = timed(lambda: synth_rec(src, tmp / "b0", 0, 1000 + r))
                wf, cf = timed(lambda: floor_into_shard(src, keys, tmp / "floor.rec"))
                print(f"[{r}] copy into one shard {n / base_w:.0f} img/s; rec --bank 64 warm {n / w64:.0f} img/s "
                      f"= {base_w / w64:.3f}x wall ({base_c / c64:.3f}x CPU); rec --bank 0 {n / w0:.0f} img/s = "
                      f"{base_w / w0:.3f}x wall ({base_c / c0:.3f}x CPU); floor (one pre-drawn sprite pasted, "
                      f"mask, encodes) {base_w / wf:.3f}x wall ({base_c / cf:.3f}x CPU)", flush=True)
        if "dataset" not in skip:
            from occbench.torch import OccludedDataset

            for bank in (64, 0):
                ds = OccludedDataset(str(src), landmarks="template", scales=(1.0, 1.5, 2.0), bank=bank, seed=3)
                for r in range(a.repeat):
                    p_cold, p_warm = loader_rate(Plain(ds), a.workers)
                    o_cold, o_warm = loader_rate(ds, a.workers)
                    f_warm = loader_rate(RoundTrip(ds), a.workers)[1]
                    fp_warm = loader_rate(PastedRoundTrip(ds), a.workers)[1]
                    print(f"[{r}] DataLoader workers={a.workers}: plain {p_warm:.0f} img/s; OccludedDataset "
                          f"--bank {bank}: first pass {o_cold:.0f} img/s ({o_cold / p_cold:.3f}x), second pass "
                          f"{o_warm:.0f} img/s = {o_warm / p_warm:.3f}x; floor (JPEG round trip, no occlusion) "
                          f"{f_warm:.0f} img/s = {f_warm / p_warm:.3f}x; floor with one pre-drawn sprite pasted "
                          f"{fp_warm:.0f} img/s = {fp_warm / p_warm:.3f}x", flush=True)
        if a.dask:
            dask_rows(src, tmp, n, a)
        if a.malloc:
            malloc_rows(src, tmp, n, a)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
