"""dlib-resnet (dlib itself) vs dlib-resnet-torch (the torch port): speed and LFW accuracy.

Both use dlib's alignment (HOG + 5-point predictor, MediaPipe points to pick the face / fall back), and
embed the *same* chips (cv2 warp of dlib's chip matrix, as the evaluation pipeline does).

- speed: faces/s at batch 32 on real chips; dlib native is the baseline (ratio = torch / dlib), torch on
  CPU with its default threads and with 1 thread;
- accuracy on LFW View 2 pairs of the chosen folds: cosine scores, 10-fold cross-validated accuracy
  (thresholds chosen on the other 9 tenths), plus dlib's own rule (raw Euclidean distance < 0.6).

    python benchmarks/bench_dlib.py --folds 1 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from occbench.io.images import read_rgb
from occbench.io.lfw import read_lfw_pairs
from occbench.metrics.verification import kfold_accuracy
from occbench.recognizers.dlib_native import DlibRecognizer
from occbench.recognizers.dlib_torch import create_dlib_resnet_torch
from occbench.face.geometry import warp
from occbench.face.landmarks import create_landmarker

REPO = Path(__file__).resolve().parents[1]


def faces_per_second(fn, chips: np.ndarray, batch: int, repeats: int = 2) -> float:
    fn(chips[:batch])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(0, len(chips), batch):
            fn(chips[i:i + batch])
        best = min(best, time.perf_counter() - t)
    return len(chips) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw-root", type=Path, default=REPO.parent / "shared" / "realdata" / "lfw-guesswho")
    ap.add_argument("--folds", default="1", help="comma-separated LFW folds (1-5)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--timing-faces", type=int, default=64)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    folds = {int(f) for f in args.folds.split(",")}
    pairs = [p for p in read_lfw_pairs(args.lfw_root / "pairs_view2_folds01-05.txt") if p.fold in folds]
    keys = sorted({k for p in pairs for k in (p.key1, p.key2)})
    native = DlibRecognizer()
    ported = create_dlib_resnet_torch(device="cpu")
    landmarker = create_landmarker("mediapipe")

    t0 = time.perf_counter()
    chips: dict[str, np.ndarray] = {}
    for key in keys:
        image = read_rgb(args.lfw_root / "lfw" / key)
        res = landmarker.detect(image)
        m = native.alignment_transform(image, res.landmarks if res.ok else None)
        if m is not None:
            chips[key] = warp(image, m, (150, 150))
    align_s = time.perf_counter() - t0
    ok_keys = list(chips)
    stack = np.stack([chips[k] for k in ok_keys])

    t0 = time.perf_counter()
    raw_native = native.raw_descriptors(stack)
    native_s = time.perf_counter() - t0
    emb_native = raw_native / np.linalg.norm(raw_native, axis=1, keepdims=True)
    with torch.inference_mode():
        raw_torch = ported.forward(ported.to_input(stack)).numpy()
    emb_torch = ported.embed(stack)

    timing = stack[:args.timing_faces]
    native.batch_size = args.batch
    speed = {"dlib_native": faces_per_second(native.raw_descriptors, timing, args.batch)}
    ported.max_batch = args.batch
    speed["torch_cpu_threads_%d" % torch.get_num_threads()] = faces_per_second(ported.embed, timing, args.batch)
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    speed["torch_cpu_1_thread"] = faces_per_second(ported.embed, timing, args.batch)
    torch.set_num_threads(n_threads)

    index = {k: i for i, k in enumerate(ok_keys)}
    usable = [p for p in pairs if p.key1 in index and p.key2 in index]
    i1 = np.array([index[p.key1] for p in usable])
    i2 = np.array([index[p.key2] for p in usable])
    labels = np.array([p.same for p in usable])
    result = {
        "folds": sorted(folds), "pairs": len(pairs), "pairs_scored": len(usable), "images": len(keys),
        "images_aligned": len(ok_keys), "alignment_sources": dict(native.aligner.counts),
        "align_seconds": round(align_s, 1), "native_embed_seconds_all": round(native_s, 1),
        "max_abs_diff_raw": float(np.abs(raw_native - raw_torch).max()),
        "max_abs_diff_normalised": float(np.abs(emb_native - emb_torch).max()),
        "faces_per_second_batch%d" % args.batch: {k: round(v, 2) for k, v in speed.items()},
        "speed_ratio_to_dlib": {k: round(v / speed["dlib_native"], 2) for k, v in speed.items()},
    }
    for name, emb, raw in (("dlib-resnet", emb_native, raw_native), ("dlib-resnet-torch", emb_torch, raw_torch)):
        scores = np.sum(emb[i1] * emb[i2], axis=1)
        cv = kfold_accuracy(scores, labels, n_folds=10)
        dist = np.linalg.norm(raw[i1] - raw[i2], axis=1)
        result[name] = {"acc_10fold_cosine": round(cv.accuracy, 4), "std": round(cv.accuracy_std, 4),
                        "acc_dlib_rule_raw_dist_lt_0.6": round(float(np.mean((dist < 0.6) == labels)), 4)}
        result[name + "_decisions"] = (dist < 0.6).tolist()
    result["identical_dlib_rule_decisions"] = result.pop("dlib-resnet_decisions") == result.pop(
        "dlib-resnet-torch_decisions")
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
