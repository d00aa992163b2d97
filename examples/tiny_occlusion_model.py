"""Train ``tiny-occ``, a small CNN that predicts where a face is occluded (14x14 mask + FROM's K=5
pattern), on crops synthesized from LFW; it backs the registered recognizer ``examples-tiny-model``.

    python examples/tiny_occlusion_model.py                   # ~2,400 train crops, 4 min of training
    python examples/tiny_occlusion_model.py --minutes 1 --images 600 --out /tmp/tiny.pt
    occbench eval -m examples-tiny-model -p lfw-occ --limit 300

Data: LFW images (``../shared/realdata/lfw-guesswho/lfw``), split by identity (sha256 of the name):
4 in 5 identities train, the rest are held out and scored at the end. ``occbench synth`` occludes
them twice (anchored at scales 1.0-2.0 and FROM's free placement, 20% clean), with MediaPipe
landmarks; each image is aligned to the arcface 112x112 template and its mask is brought into the
model frame exactly as the benchmark does (``occbench.bench.occlusion_truth``). The model learns the
mask (BCE) and the pattern (cross-entropy); its embedding is not trained for identity.

Writes a TorchScript file with the preprocessing and the output declaration embedded (default
``results/tiny-occlusion/tiny_occlusion.pt``, the path ``examples-tiny-model`` reads; override with
``--out`` and ``$OCCBENCH_TINY_MODEL``) and ``<out>.json`` with the held-out scores. Note: the
lfw-occ protocol uses these same LFW images (with other occlusion draws), so its mask figures for
this model are not a held-out estimate; the held-out figures are in the JSON.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("OCCBENCH_REALDATA", REPO.parent / "shared" / "realdata"))
LFW = REALDATA / "lfw-guesswho" / "lfw"
GRID = (14, 14)
K = 5


def split_keys(root: Path, n_images: int, holdout_share: float = 0.2) -> tuple[list[str], list[str]]:
    """(train keys, held-out keys) from LFW, split by identity; evenly spread over the sorted list."""
    keys = sorted(str(p.relative_to(root)) for p in root.glob("*/*.jpg"))
    held = [k for k in keys if int(hashlib.sha256(k.split("/")[0].encode()).hexdigest(), 16) % 100 < holdout_share * 100]
    held_set = set(held)
    train = [k for k in keys if k not in held_set]
    n_hold = max(1, int(n_images * holdout_share / (1 - holdout_share)))
    pick = (lambda ks, n: ks[::max(1, len(ks) // n)][:n])
    return pick(train, n_images), pick(held, n_hold)


def synthesize(keys: list[str], work: Path, seed: int, jobs: int, progress: bool) -> list[Path]:
    """Two synth runs over ``keys`` (anchored and free placement); returns their folders."""
    from occbench.synth.pipeline import SynthConfig, run_synth

    a = work / "anchored"
    run_synth(SynthConfig(src=str(LFW), out=str(a), landmarks="mediapipe", scales=(1.0, 1.5, 2.0), clean_ratio=0.2,
                          k=K, seed=seed, keys=tuple(keys), jobs=jobs, bank=32), progress=progress)
    f = work / "free"
    run_synth(SynthConfig(src=str(LFW), out=str(f), landmarks="file", landmarks_file=str(a / "landmarks.parquet"),
                          placement="free", scales=(1.0, 1.5, 2.0), clean_ratio=0.2, k=K, seed=seed + 1,
                          keys=tuple(keys), jobs=jobs, bank=32), progress=progress)
    return [a, f]


def load_examples(runs: list[Path], keys: set[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crops uint8 (N,112,112,3), true masks float32 (N,14,14), pattern labels int64 (N,)) in the model frame."""
    import pandas as pd

    from occbench.bench.occlusion_truth import truth_for_image
    from occbench.face.geometry import FaceLandmarks, warp
    from occbench.face.landmarks import COORD_COLUMNS
    from occbench.io.images import read_rgb
    from occbench.recognizers.base import Preprocess, template_alignment
    from occbench.synth.manifest import read_manifest

    pp = Preprocess()
    crops, masks, labels = [], [], []
    for run in runs:
        lms = pd.read_parquet(run / "landmarks.parquet").set_index("key")
        for r in read_manifest(run).to_dict("records"):
            if r["key"] not in keys or r["status"] not in ("ok", "clean") or r["key"] not in lms.index:
                continue
            five = lms.loc[r["key"], list(COORD_COLUMNS)].to_numpy(np.float64).reshape(5, 2)
            m = template_alignment(pp, FaceLandmarks(five))
            img = read_rgb(run / r["image"])
            mask = read_rgb(run / r["mask"])[..., 0] if r["status"] == "ok" else None
            tm, label = truth_for_image(mask, m, pp.input_size, GRID, K)
            crops.append(warp(img, m, pp.input_size))
            masks.append(tm.astype(np.float32))
            labels.append(label)
    return np.stack(crops), np.stack(masks), np.asarray(labels, np.int64)


def train(crops: np.ndarray, masks: np.ndarray, labels: np.ndarray, *, minutes: float, seed: int = 0,
          batch: int = 64, progress: bool = True):
    """Adam on BCE(mask) + CE(pattern) until ``minutes`` of wall time have passed (at least one epoch)."""
    import torch

    from occbench.recognizers.archs import create_arch
    from occbench.recognizers.base import Preprocess

    torch.manual_seed(seed)
    model = create_arch("tiny-occ")
    x_all = torch.from_numpy(Preprocess().normalize(crops))
    m_all = torch.from_numpy(masks)[:, None]
    y_all = torch.from_numpy(labels)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    t0, epoch = time.perf_counter(), 0
    while True:
        model.train()
        order = torch.randperm(len(x_all), generator=g)
        total = 0.0
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            out = model(x_all[idx])
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(out["mask"], m_all[idx])
                    + 0.5 * torch.nn.functional.cross_entropy(out["pattern"], y_all[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        epoch += 1
        elapsed = time.perf_counter() - t0
        if progress:
            print(f"epoch {epoch}: loss {total / len(x_all):.4f} ({elapsed:.0f} s)", flush=True)
        if elapsed >= minutes * 60:
            break
    return model.eval(), {"epochs": epoch, "train_seconds": round(time.perf_counter() - t0, 1)}


def score(model, crops: np.ndarray, masks: np.ndarray, labels: np.ndarray) -> dict:
    """Held-out mask and pattern metrics of ``model`` beside the blind ("all clean") bound."""
    import torch

    from occbench.metrics.occlusion import mask_metrics, pattern_topk
    from occbench.recognizers.base import Preprocess
    from occbench.recognizers.outputs import parse_outputs

    with torch.no_grad():
        out = parse_outputs(model(torch.from_numpy(Preprocess().normalize(crops))), model.output_spec, len(crops))
    m = mask_metrics(out.mask, masks > 0.5)
    blind = mask_metrics(np.zeros_like(masks), masks > 0.5)
    return {"n": int(len(crops)), "mask_iou": m["iou_occluded"], "mask_ap": m["ap"], "pixel_accuracy": m["pixel_accuracy"],
            "blind_mask_iou": blind["iou_occluded"], "blind_pixel_accuracy": blind["pixel_accuracy"],
            **{f"pattern_{k}": v for k, v in pattern_topk(out.pattern, labels).items()},
            "blind_pattern_top1": float((labels == 0).mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "results" / "tiny-occlusion" / "tiny_occlusion.pt"))
    ap.add_argument("--work", default=None, help="synth folder (default: beside --out)")
    ap.add_argument("--images", type=int, default=1200, help="training LFW images (each is occluded twice)")
    ap.add_argument("--minutes", type=float, default=4.0, help="training wall time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    if not LFW.is_dir():
        print(f"LFW not found at {LFW}; set OCCBENCH_REALDATA", file=sys.stderr)
        return 1
    import torch

    from occbench.recognizers.base import Preprocess
    from occbench.recognizers.torchscript import save_torchscript

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    out = Path(args.out)
    work = Path(args.work) if args.work else out.parent / "synth"
    train_keys, held_keys = split_keys(LFW, args.images)
    t0 = time.perf_counter()
    runs = synthesize(train_keys + held_keys, work, args.seed, args.jobs, progress=True)
    t_synth = time.perf_counter() - t0
    xs, ms, ys = load_examples(runs, set(train_keys))
    xh, mh, yh = load_examples(runs, set(held_keys))
    print(f"{len(xs)} training crops, {len(xh)} held-out crops (synth + alignment {time.perf_counter() - t0:.0f} s)")
    model, info = train(xs, ms, ys, minutes=args.minutes, seed=args.seed)
    report = {"held_out": score(model, xh, mh, yh), "train": {**info, "n_crops": int(len(xs)), "images": args.images,
              "seed": args.seed, "synth_seconds": round(t_synth, 1)}, "grid": list(GRID), "k": K}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_torchscript(model, out, Preprocess(), "examples-tiny-model")
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    h = report["held_out"]
    print(f"held-out ({h['n']} crops): mask IoU {h['mask_iou']:.3f} (blind {h['blind_mask_iou']:.3f}), "
          f"pattern top-1 {h['pattern_top1']:.3f} / top-5 {h['pattern_top5']:.3f} (blind top-1 {h['blind_pattern_top1']:.3f})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
