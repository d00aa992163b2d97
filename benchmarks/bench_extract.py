"""Extraction throughput vs. bare model forward, measured in the same run.

Pipeline: AlignedCropDataset (read + decode + warp, in DataLoader workers) -> TorchRecognizer.embed
(uint8 to device, normalise, forward, L2). Baseline: the same model's forward alone on batches that
were decoded, aligned and normalised beforehand (already on the device). The ratio
pipeline / baseline says how much of the model's speed extraction keeps (1.0 = no overhead).

    python benchmarks/bench_extract.py                      # iresnet50, CPU, 48 LFW images
    python benchmarks/bench_extract.py --device cuda --n-images 4096 --batch-size 256 --workers 0,4,8
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from occbench.recognizers.archs import create_arch
from occbench.recognizers.base import Preprocess
from occbench.recognizers.extract import AlignedCropDataset, extract_embeddings, iter_batches
from occbench.recognizers.torch_backend import TorchRecognizer, autocast_context
from occbench.face.geometry import ARCFACE_112, estimate_similarity

REPO = Path(__file__).resolve().parents[1]
# Approximate 5 points of the centred 250x250 LFW images (alignment quality is irrelevant here).
LFW_FIVE = np.array([[106, 113], [145, 112], [126, 138], [110, 158], [142, 158]], float)


def lfw_items(root: Path, n: int):
    files = sorted(root.glob("*/*.jpg"))[:n]
    if len(files) < n:
        raise SystemExit(f"need {n} LFW images under {root}, found {len(files)}")
    m = estimate_similarity(LFW_FIVE, ARCFACE_112)
    return [(f, m) for f in files]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_forward(rec: TorchRecognizer, batches: list[torch.Tensor]) -> float:
    """Images/s of module forward alone on pre-normalised, on-device batches."""
    with torch.inference_mode(), autocast_context(rec.device, rec.precision):
        rec.module(batches[0])  # warm-up (allocator, kernels)
        sync(rec.device)
        t = time.perf_counter()
        for x in batches:
            rec.module(x)
        sync(rec.device)
    return sum(len(x) for x in batches) / (time.perf_counter() - t)


def bench_extract(rec: TorchRecognizer, ds: AlignedCropDataset, batch_size: int, workers: int) -> float:
    t = time.perf_counter()
    emb, ok, _ = extract_embeddings(rec, ds, batch_size=batch_size, num_workers=workers, progress=False)
    sync(rec.device)
    ips = len(ds) / (time.perf_counter() - t)
    assert ok.all() and emb.shape[0] == len(ds)
    return ips


def main() -> None:
    default_lfw = Path(os.environ.get("OCCBENCH_REALDATA", REPO.parent / "shared" / "realdata")) / "lfw-guesswho" / "lfw"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="iresnet50")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--n-images", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts to try")
    ap.add_argument("--rounds", type=int, default=2,
                    help="interleaved rounds (baseline, then each worker count); best of each is reported, "
                         "which damps the effect of other processes on a shared machine")
    ap.add_argument("--lfw", type=Path, default=default_lfw)
    args = ap.parse_args()

    torch.manual_seed(0)
    rec = TorchRecognizer(create_arch(args.arch).eval(), Preprocess(), name=args.arch, device=args.device,
                          precision=args.precision, max_batch=args.batch_size)
    ds = AlignedCropDataset(lfw_items(args.lfw, args.n_images), (112, 112))
    workers = [int(s) for s in args.workers.split(",")]
    print(f"{args.arch} on {rec.device} ({args.precision}), {args.n_images} LFW images, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}, {args.rounds} interleaved rounds (best of)")

    # Decode/warp alone (what the workers do), for context; also builds the baseline's inputs.
    t = time.perf_counter()
    crops = np.concatenate([c for _, c, _, _ in iter_batches(ds, args.batch_size, 0)])
    decode_ips = len(crops) / (time.perf_counter() - t)
    batches = [rec.to_input(crops[i:i + args.batch_size]) for i in range(0, len(crops), args.batch_size)]
    rec.embed(crops[: args.batch_size])  # warm-up of the embed path

    forward_ips, extract_ips = 0.0, dict.fromkeys(workers, 0.0)
    for _ in range(args.rounds):
        forward_ips = max(forward_ips, bench_forward(rec, batches))
        for w in workers:
            extract_ips[w] = max(extract_ips[w], bench_extract(rec, ds, args.batch_size, w))
    print(f"  decode+warp only (1 process): {decode_ips:9.2f} img/s")
    print(f"  bare forward (baseline):      {forward_ips:9.2f} img/s")
    for w, ips in extract_ips.items():
        print(f"  extraction, {w} workers:       {ips:9.2f} img/s   ratio to bare forward: {ips / forward_ips:.3f}")


if __name__ == "__main__":
    main()
