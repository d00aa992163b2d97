"""What the occluders themselves cost per image with ``--bank 0`` (a fresh look every image), against
the bare decode->encode copy of the same image, in the same run.

    python benchmarks/bench_drawing.py --n 200
    python benchmarks/bench_drawing.py --n 200 --looks 1,2
    python benchmarks/bench_drawing.py --wild 120          # wild LFW images vs MediaPipe's face mesh alone

On aligned 112x112 LFW crops (built as bench_synth.py builds them, into --cache) with the ArcFace
template as landmarks, each default occluder is applied to every crop at scale 1 with a new seed per
image: ``occluder(image, landmarks, rng=...)`` = sample the look and placement, draw the sprite, warp it
in, relight, composite, mask (wall time, one thread: run it on a quiet machine). Look 2 is the default
look; ``--looks 1,2`` also times the frozen look-1 occluders. The copy is cv2 decode + JPEG encode
(quality 95) of the same files. Printed: ms per image for each occluder, their mean (synth picks
occluders equally often), and the ceiling this puts on ``--bank 0`` synth against the copy: copy /
(copy + mean occluder) -- a synth that did nothing else per image would still not beat it.

``--wild N``: the same on N wild 250x250 LFW images with their MediaPipe landmarks (found once
beforehand, not timed; the masks follow the mesh), for ``--bank 0`` and ``--bank 64`` (a warm-up pass
draws the bank first, so the timed pass only places, warps, relights and composites), against
MediaPipe's face mesh alone on the same images (read, decode, ``FaceMesh.process``, as
bench_synth.py's wild row; wall time: MediaPipe runs its own threads). Ceiling for wild synth vs the
mesh: mesh / (mesh + mean occluder); and a floor that also encodes the image (JPEG q95) and its mask
(occbench's PNG writer) and writes both atomically beside their destination: what a synth with these
occluders must at least do beyond the mesh.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_synth import REALDATA, aligned_crops, spread  # noqa: E402


def main(argv=None) -> int:
    import tempfile

    import cv2

    from occbench.face.geometry import ARCFACE_112
    from occbench.synth import pipeline as pl

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="aligned crops")
    ap.add_argument("--looks", default="2", help="comma list of looks to time: 2 (default look), 1 (frozen)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "occbench-bench-aligned")
    ap.add_argument("--wild", type=int, default=0, help="time wild LFW images instead (this many)")
    a = ap.parse_args(argv)
    cv2.setNumThreads(1)
    if a.wild:
        return wild(a.wild, a.seed)
    data = [p.read_bytes() for p in sorted(aligned_crops(a.cache, a.n).rglob("*.jpg"))]
    images = [cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR) for d in data]
    t = time.perf_counter()
    for d in data:
        cv2.imencode(".jpg", cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR),
                     [cv2.IMWRITE_JPEG_QUALITY, 95])
    copy_ms = 1e3 * (time.perf_counter() - t) / len(data)
    print(f"{len(data)} aligned crops; bare copy (decode + encode) {copy_ms:.3f} ms / image", flush=True)
    default = pl.resolve_occluders(pl.SynthConfig(src=".", out="."))
    lm = np.asarray(ARCFACE_112, np.float64)
    for look in a.looks.split(","):
        names = default if look.strip() == "2" else [f"{n}_v1" for n in default]
        per = mean_occluder_ms(names, 0, images, [lm] * len(images), a.seed)
        mean = per_occluder_line(f"look {look.strip()}", per)
        print(f"look {look.strip()}: mean over {len(per)} occluders {mean:.2f} ms / image "
              f"(range {min(per.values()):.2f}-"
              f"{max(per.values()):.2f}) = {mean / copy_ms:.1f}x the copy; ceiling for --bank 0 synth vs the copy: "
              f"{copy_ms / (copy_ms + mean):.3f}x", flush=True)
    return 0


def per_occluder_line(label: str, per: dict) -> float:
    """Print each occluder's ms per image, cheapest first; return their mean."""
    print(f"{label}: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: kv[1]))
          + " ms / image", flush=True)
    return statistics.mean(per.values())


def mean_occluder_ms(names, bank: int, images, landmarks, seed: int) -> dict:
    """ms per image (wall, one thread) of each occluder applied to every image once, after a warm-up pass."""
    from occbench.seeding import rng_for
    from occbench.synth import pipeline as pl

    api = pl._load_occluder_api()
    per = {}
    for name in names:
        occ = api.create_occluder(name, bank=bank)
        for i, (img, lm) in enumerate(zip(images, landmarks)):  # warm-up: imports; with a bank, its sprites
            occ(img, lm, rng=rng_for(seed, name, "warm-up" if not bank else i))
        t = time.perf_counter()
        for i, (img, lm) in enumerate(zip(images, landmarks)):
            occ(img, lm, rng=rng_for(seed, name, i))
        per[name] = 1e3 * (time.perf_counter() - t) / len(images)
    return per


def wild(n: int, seed: int) -> int:
    import cv2

    from bench_synth import _mesh_alone
    from occbench.face.landmarks import create_landmarker
    from occbench.io.sources import open_source
    from occbench.synth import pipeline as pl

    lfw = REALDATA / "lfw-guesswho" / "lfw"
    keys = spread([it.key for it in open_source(str(lfw)).items()], n)
    src = open_source(str(lfw))
    marker = create_landmarker("mediapipe")
    images, landmarks = [], []
    for k in keys:
        bgr = cv2.imdecode(np.frombuffer(src.read_bytes(k), np.uint8), cv2.IMREAD_COLOR)
        res = marker.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), k)
        if res.ok:
            images.append(bgr)
            landmarks.append(res.landmarks)
    marker.close()
    _mesh_alone(lfw, keys[:2])  # model load and graph start
    t = time.perf_counter()
    _mesh_alone(lfw, keys)
    mesh_ms = 1e3 * (time.perf_counter() - t) / len(keys)
    print(f"{len(keys)} wild LFW images ({len(images)} with a face); MediaPipe face mesh alone "
          f"{mesh_ms:.2f} ms / image", flush=True)
    write_ms = encode_and_write_ms(images)
    print(f"encode image (JPEG q95) + mask (PNG) and write both atomically: {write_ms:.2f} ms / image", flush=True)
    names = pl.resolve_occluders(pl.SynthConfig(src=".", out="."))
    for bank in (0, 64):
        per = mean_occluder_ms(names, bank, images, landmarks, seed)
        mean = per_occluder_line(f"--bank {bank}", per)
        print(f"--bank {bank}: mean over {len(per)} occluders {mean:.2f} ms / image; ceiling for wild synth vs the "
              f"mesh alone: {mesh_ms / (mesh_ms + mean):.3f}x; with the encodes and writes: "
              f"{mesh_ms / (mesh_ms + mean + write_ms):.3f}x", flush=True)
    return 0


def encode_and_write_ms(images) -> float:
    """ms per image: JPEG-encode the image, PNG-encode a mask, write both through a temp file beside the
    destination and rename (the fastest atomic write measured, see the README's Speed section)."""
    import os
    import tempfile

    import cv2

    from occbench.synth.pipeline import encode_mask_png

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        for i, img in enumerate(images):
            mask = np.zeros(img.shape[:2], np.uint8)
            mask[img.shape[0] // 2:, :] = 255
            for name, payload in ((f"{i}.jpg", cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()),
                                  (f"{i}.png", encode_mask_png(mask))):
                part = os.path.join(d, f".{name}.tmp")
                with open(part, "wb") as fh:
                    fh.write(payload)
                os.replace(part, os.path.join(d, name))
        return 1e3 * (time.perf_counter() - t) / len(images)


if __name__ == "__main__":
    raise SystemExit(main())
