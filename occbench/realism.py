"""Realism score for occluders: train on synthetic, test on real (TSTR), and the reverse (TRTS).

The question: does a classifier that learnt "the lower face is covered by a mask" from occbench's
synthetic masks recognise real masked faces, and does one that learnt it from real masked faces
recognise occbench's? Data (both in ``../shared/realdata``): real unmasked faces from LFW, real masked
faces from RWMFD. Every face is meshed by MediaPipe, aligned to the ArcFace 112x112 template by its 5
points and downsampled to ``crop`` x ``crop`` px, so both sources reach the classifier the same way.

Splits (fixed by ``seed``, independent of order and subset): LFW by identity (train/val/test ~60/15/25
of identities), RWMFD by file (50/10/40 of files; it has no identity labels, so a person photographed
twice can fall on both sides). Rows (each a small CNN, same recipe):

- ``TSTR``  train: clean LFW (negatives) vs the same LFW faces with an occbench occluder (positives);
            test: held-out clean LFW (negatives) vs real RWMFD masked faces (positives).
- ``TSTS``  the same model on held-out synthetic positives: the ceiling TSTR is compared with. The
            two rows share model, threshold and negatives; only the positives differ.
- ``TRTS``  train: clean LFW vs real RWMFD; test: held-out clean LFW vs the same faces with occbench's
            occluder. Both test classes are LFW photos, so the LFW/RWMFD photo style cannot help here.
- ``TRTR``  the real-trained model on held-out real data: its ceiling (it can use photo style).
- control: TSTR with a non-mask occluder (default sunglasses): what a detector of *another* synthetic
  occlusion scores on real masks, i.e. how much of TSTR is "something differs from clean LFW".

Reported per row: ROC AUC, and recall and FPR on the test set at the threshold fixed on the training
side's validation split (strict FPR <= ``fpr_target`` on validation negatives).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import __version__
from .errors import ConfigError, DataNotFoundError
from .face.geometry import align
from .metrics.verification import roc_auc, strict_operating_point
from .paths import REPO_ROOT
from .seeding import derive_seed, rng_for
from .synth.occluders.definitions import seed_group

REALDATA = REPO_ROOT.parent / "shared" / "realdata"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LFW_SPLIT = (0.60, 0.75)  # identity hash < 0.60 train, < 0.75 val, else test
REAL_SPLIT = (0.50, 0.60)  # file hash: train / val / test
SPLITS = ("train", "val", "test")


@dataclass
class RealismConfig:
    occluders: tuple[str, ...] = ("surgical_mask", "n95", "cloth_mask")
    lfw: str | None = None  # folder with <Name>/<Name>_NNNN.jpg (or with lfw/ inside)
    real: str | None = None  # folder of real masked faces (any depth)
    control: str | None = "sunglasses"  # a non-mask occluder as a control row; None: no control
    seed: int = 0
    crop: int = 48
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    scale: float = 1.0
    fpr_target: float = 0.05
    lfw_limit: int | None = None  # only the first N LFW images (sorted keys): for quick checks
    real_limit: int | None = None
    per_occluder: bool = True  # also one TSTR/TSTS model per occluder (else only the pooled one)
    landmarker: str = "mediapipe"
    threads: int = 1  # torch threads: results are byte-stable for a fixed thread count

    def validate(self) -> "RealismConfig":
        from .synth.occluders import list_occluders

        self.occluders = tuple(dict.fromkeys(self.occluders))
        known = set(list_occluders())
        names = list(self.occluders) + ([self.control] if self.control else [])
        bad = [n for n in names if n not in known]
        if not self.occluders or bad:
            raise ConfigError(f"unknown occluder(s) {', '.join(bad) or '(none given)'}; known: "
                              f"{', '.join(sorted(known))}")
        if self.control in self.occluders:
            raise ConfigError(f"the control occluder {self.control!r} is also a tested occluder: pick another "
                              "control (a non-mask occluder, e.g. sunglasses) or none")
        if not 16 <= int(self.crop) <= 112:
            raise ConfigError(f"crop must be 16..112 px, got {self.crop}")
        if not 0.0 < float(self.fpr_target) < 1.0:
            raise ConfigError(f"fpr_target must be in (0, 1), got {self.fpr_target}")
        if int(self.epochs) < 1 or int(self.batch_size) < 2:
            raise ConfigError("epochs must be >= 1 and batch_size >= 2")
        return self


@dataclass
class RealismResult:
    config: dict
    rows: list[dict]
    counts: dict
    noface: list[dict]
    timing_s: dict
    version: str = __version__
    notes: list[str] = field(default_factory=list)
    units: dict = field(default_factory=lambda: {
        "auc": "fraction (ROC AUC, test split)", "recall": "fraction of test positives scoring >= threshold",
        "fpr": "fraction of test negatives scoring >= threshold", "threshold": "classifier logit",
        "timing_s": "seconds"})

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        head = ("| row | occluder | train on | test positives | AUC | recall @ val thr | test FPR | n pos / neg |\n"
                "|---|---|---|---|---:|---:|---:|---:|")
        lines = [head]
        for r in self.rows:
            lines.append(f"| {r['row']} | {r['occluder']} | {r['train']} | {r['test_positives']} | "
                         f"{_pct(r['auc'])} | {_pct(r['recall'])} | {_pct(r['fpr'])} | {r['n_pos']} / {r['n_neg']} |")
        return "\n".join(lines)


def _pct(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f}%"


def _unit(seed: int, *parts) -> float:
    return derive_seed(seed, *parts) / float(1 << 63)


def split_of(seed: int, kind: str, key: str) -> str:
    """'train' | 'val' | 'test' for an LFW identity (kind 'lfw') or a real file (kind 'real')."""
    a, b = LFW_SPLIT if kind == "lfw" else REAL_SPLIT
    u = _unit(seed, "realism-split", kind, key)
    return "train" if u < a else "val" if u < b else "test"


def _images(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def resolve_roots(cfg: RealismConfig) -> tuple[Path, Path]:
    lfw = Path(cfg.lfw) if cfg.lfw else REALDATA / "lfw-guesswho" / "lfw"
    if (lfw / "lfw").is_dir():
        lfw = lfw / "lfw"
    real = Path(cfg.real) if cfg.real else REALDATA / "rwmfd-masked" / "RWMFD_part_1"
    for what, p, hint in (("LFW", lfw, "--lfw"), ("real masked-face", real, "--real")):
        if not p.is_dir():
            raise DataNotFoundError(f"{what} folder not found: {p} (pass {hint} DIR; the shared copy lives in "
                                    f"../shared/realdata beside the checkout)")
    return lfw, real


# ------------------------------------------------------------------------------------- data


class _Faces:
    """Aligned, downsampled crops by split: clean LFW, LFW + each occluder, real masked."""

    def __init__(self):
        self.clean = {s: [] for s in SPLITS}
        self.occluded: dict[str, dict[str, list]] = {}
        self.real = {s: [] for s in SPLITS}
        self.pick = {s: [] for s in SPLITS}  # index into occluders, per clean LFW crop

    def arr(self, lst) -> np.ndarray:
        return np.stack(lst) if lst else np.zeros((0, 1, 1, 3), np.uint8)


def _crop(image: np.ndarray, five: np.ndarray, size: int) -> np.ndarray:
    c, _ = align(image, five)
    return cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA)


def collect_faces(cfg: RealismConfig, lfw: Path, real: Path, progress: bool = True):
    """Mesh, occlude and crop every image once. Returns (_Faces, noface rows, counts)."""
    from tqdm import tqdm

    from .face.landmarks import create_landmarker
    from .io.images import read_rgb
    from .synth.occluders import create_occluder

    names = list(cfg.occluders) + ([cfg.control] if cfg.control else [])
    occs = {n: create_occluder(n) for n in names}
    lfw_keys = _images(lfw)[: cfg.lfw_limit]
    real_keys = _images(real)[: cfg.real_limit]
    if not lfw_keys or not real_keys:
        raise DataNotFoundError(f"no images found under {lfw if not lfw_keys else real}")
    faces = _Faces()
    faces.occluded = {n: {s: [] for s in SPLITS} for n in names}
    noface: list[dict] = []
    methods: dict[str, int] = {}  # how the real faces were found (mesh / detection fallback)
    bar = tqdm(total=len(lfw_keys) + len(real_keys), desc="realism: faces", unit="img", disable=not progress)
    with create_landmarker(cfg.landmarker) as lm:
        for key in lfw_keys:
            identity = key.split("/")[0] if "/" in key else Path(key).stem
            split = split_of(cfg.seed, "lfw", identity)
            img = read_rgb(lfw / key)
            r = lm.detect(img, key)
            bar.update(1)
            if not r.ok:
                noface.append({"source": "lfw", "key": key, "reason": r.reason})
                continue
            faces.clean[split].append(_crop(img, r.landmarks.five, cfg.crop))
            faces.pick[split].append(int(rng_for(cfg.seed, "realism-pick", key).integers(len(cfg.occluders))))
            for n, occ in occs.items():
                res = occ(img, r.landmarks, rng=rng_for(cfg.seed, "realism", key, seed_group(n)), scale=cfg.scale,
                          placement="anchored")
                faces.occluded[n][split].append(_crop(res.image, r.landmarks.five, cfg.crop))
        for key in real_keys:
            split = split_of(cfg.seed, "real", key)
            img = read_rgb(real / key)
            r = lm.detect(img, key)
            bar.update(1)
            if not r.ok:
                noface.append({"source": "real", "key": key, "reason": r.reason})
                continue
            faces.real[split].append(_crop(img, r.landmarks.five, cfg.crop))
            how = r.landmarks.method or r.landmarks.source
            methods[how] = methods.get(how, 0) + 1
    bar.close()
    counts = {"lfw_images": len(lfw_keys), "real_images": len(real_keys),
              "lfw_faces": {s: len(faces.clean[s]) for s in SPLITS},
              "real_faces": {s: len(faces.real[s]) for s in SPLITS},
              "noface": {"lfw": sum(r["source"] == "lfw" for r in noface),
                         "real": sum(r["source"] == "real" for r in noface)},
              "real_landmark_method": dict(sorted(methods.items()))}
    for kind, d in (("LFW", counts["lfw_faces"]), ("real", counts["real_faces"])):
        empty = [s for s in SPLITS if d[s] == 0]
        if empty:
            raise DataNotFoundError(f"no {kind} face in the {', '.join(empty)} split(s): use more images "
                                    f"(counts {d})")
    return faces, noface, counts


# ---------------------------------------------------------------------------------- classifier


def _net(width: int = 16):
    import torch.nn as nn

    def block(a, b, stride=1, pool=True):
        layers = [nn.Conv2d(a, b, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
        return layers + ([nn.MaxPool2d(2)] if pool else [])

    w = width
    return nn.Sequential(*block(3, w, stride=2, pool=False), *block(w, 2 * w), *block(2 * w, 4 * w),
                         *block(4 * w, 4 * w, pool=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4 * w, 1))


def _to_tensor(x: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def train_classifier(x: np.ndarray, y: np.ndarray, cfg: RealismConfig, tag: str):
    """A small CNN: uint8 (N, S, S, 3) crops, labels 0/1 -> torch model (eval mode). Seeded by tag."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(int(cfg.threads))  # small tensors: more threads only spin on a busy machine
    try:
        return _train(x, y, cfg, tag)
    finally:
        torch.set_num_threads(prev)


def _train(x: np.ndarray, y: np.ndarray, cfg: RealismConfig, tag: str):
    import torch
    import torch.nn.functional as F

    seed = derive_seed(cfg.seed, "realism-train", tag)
    torch.manual_seed(seed % (1 << 62))
    gen = torch.Generator().manual_seed(seed % (1 << 62))
    model = _net()
    opt = _Adam(list(model.parameters()), weight_decay=1e-4)
    xt, yt = _to_tensor(x), torch.from_numpy(np.asarray(y, np.float32))
    n_pos = float(yt.sum())
    pos_weight = torch.tensor([(len(yt) - n_pos) / max(n_pos, 1.0)])
    steps = cfg.epochs * math.ceil(len(yt) / cfg.batch_size)
    model.train()
    step = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(yt), generator=gen)
        for i in range(0, len(yt), cfg.batch_size):
            idx = order[i: i + cfg.batch_size]
            step += 1
            if len(idx) < 2:
                continue
            xb = _augment(xt[idx], gen)
            loss = F.binary_cross_entropy_with_logits(model(xb).squeeze(1), yt[idx], pos_weight=pos_weight)
            model.zero_grad(set_to_none=True)
            loss.backward()
            opt.step(_one_cycle(step, steps, cfg.lr))
    return model.eval()


def _one_cycle(step: int, total: int, peak: float) -> float:
    """Learning rate: linear warm-up over the first 30 % of steps, then cosine down to peak/1000."""
    warm = max(1, int(0.3 * total))
    if step <= warm:
        return peak * (0.04 + 0.96 * step / warm)
    t = (step - warm) / max(1, total - warm)
    return peak * (1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


class _Adam:
    """Adam with decoupled weight decay (AdamW), written out: ``torch.optim`` imports torch._dynamo on
    first use, which costs 5-20 s of start-up on a busy 2-core machine, longer than the training."""

    def __init__(self, params, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        import torch

        self.params, self.betas, self.eps, self.wd, self.t = params, betas, eps, weight_decay, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def step(self, lr: float) -> None:
        import torch

        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v):
                if p.grad is None:
                    continue
                g = p.grad
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                if self.wd:
                    p.mul_(1 - lr * self.wd)
                p.addcdiv_(m / c1, (v / c2).sqrt_().add_(self.eps), value=-lr)


def _augment(xb, gen):
    """Horizontal flip, +-3 px shift, brightness/contrast jitter (all from ``gen``)."""
    import torch

    n, _, s, _ = xb.shape
    flip = torch.rand(n, generator=gen) < 0.5
    xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
    pad = 3
    padded = torch.nn.functional.pad(xb, (pad, pad, pad, pad), mode="replicate")
    dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=gen))
    xb = padded[:, :, dy: dy + s, dx: dx + s]
    gain = 1.0 + 0.4 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    bias = 0.3 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    return (xb * gain + bias).clamp_(-1.0, 1.0)


def predict(model, x: np.ndarray, batch: int = 512) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(model(_to_tensor(x[i: i + batch])).squeeze(1).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def operating_point(model, val_pos: np.ndarray, val_neg: np.ndarray, fpr_target: float) -> float:
    """Threshold (accept score >= t) with strict FPR <= target on the validation negatives."""
    return strict_operating_point(predict(model, val_pos), predict(model, val_neg), fpr_target).threshold


def score_row(model, threshold: float, pos: np.ndarray, neg: np.ndarray) -> dict:
    sp, sn = predict(model, pos), predict(model, neg)
    y = np.r_[np.ones(len(sp)), np.zeros(len(sn))]
    return {"auc": roc_auc(np.r_[sp, sn], y), "recall": float(np.mean(sp >= threshold)),
            "fpr": float(np.mean(sn >= threshold)), "threshold": float(threshold),
            "n_pos": int(len(sp)), "n_neg": int(len(sn))}


# ---------------------------------------------------------------------------------------- run


def _synthetic(faces: _Faces, name: str, split: str, occluders: tuple[str, ...]) -> np.ndarray:
    if name != "pooled":
        return faces.arr(faces.occluded[name][split])
    return faces.arr([faces.occluded[occluders[k]][split][i] for i, k in enumerate(faces.pick[split])])


def run_realism(cfg: RealismConfig | None = None, *, progress: bool = True, **overrides) -> RealismResult:
    """Measure TSTR / TSTS / TRTS / TRTR (see the module docstring) and return the table."""
    import torch

    cfg = RealismConfig(**{**asdict(cfg or RealismConfig()), **overrides}).validate()
    lfw, real = resolve_roots(cfg)
    t0 = time.perf_counter()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg.threads))
    try:
        faces, noface, counts = collect_faces(cfg, lfw, real, progress)
        t_data = time.perf_counter() - t0
        rows = _experiments(cfg, faces, progress)
    finally:
        torch.set_num_threads(prev_threads)
    t_all = time.perf_counter() - t0
    notes = [
        "LFW is split by identity; RWMFD has no identity labels and is split by file (seeded hash of the "
        "path), so one person may appear in both its train and test splits.",
        f"threshold: strict FPR <= {cfg.fpr_target:g} on the training side's validation negatives; recall and "
        "FPR are then measured on the test split at that threshold.",
        "TSTS and TSTR share model, threshold and negatives (held-out clean LFW): only the positives differ.",
    ]
    return RealismResult(config={**asdict(cfg), "lfw": str(lfw), "real": str(real)}, rows=rows, counts=counts,
                         noface=noface, timing_s={"faces": round(t_data, 1), "total": round(t_all, 1)}, notes=notes)


def _experiments(cfg: RealismConfig, faces: _Faces, progress: bool) -> list[dict]:
    from tqdm import tqdm

    clean = {s: faces.arr(faces.clean[s]) for s in SPLITS}
    realp = {s: faces.arr(faces.real[s]) for s in SPLITS}
    synth_names = ["pooled"] + (list(cfg.occluders) if cfg.per_occluder and len(cfg.occluders) > 1 else [])
    if len(cfg.occluders) == 1:
        synth_names = [cfg.occluders[0]]
    runs = synth_names + ([cfg.control] if cfg.control else [])
    bar = tqdm(total=len(runs) + 1, desc="realism: training", unit="model", disable=not progress)
    label = {n: ("+".join(cfg.occluders) if n == "pooled" else n) for n in runs}
    rows = []

    def add(row: str, occluder: str, train: str, test_positives: str, model, thr, positives) -> None:
        rows.append({"row": row, "occluder": occluder, "train": train, "test_positives": test_positives,
                     **score_row(model, thr, positives, clean["test"])})

    for n in runs:
        tr_pos = _synthetic(faces, n, "train", cfg.occluders)
        model = train_classifier(np.concatenate([clean["train"], tr_pos]),
                                 np.r_[np.zeros(len(clean["train"])), np.ones(len(tr_pos))], cfg, f"synthetic-{n}")
        thr = operating_point(model, _synthetic(faces, n, "val", cfg.occluders), clean["val"], cfg.fpr_target)
        train, tag = f"LFW clean vs LFW+{label[n]}", " (control)" if n == cfg.control else ""
        add("TSTR" + tag, label[n], train, "RWMFD real masks", model, thr, realp["test"])
        add("TSTS" + tag, label[n], train, f"LFW+{label[n]} held out", model, thr,
            _synthetic(faces, n, "test", cfg.occluders))
        bar.update(1)
    model = train_classifier(np.concatenate([clean["train"], realp["train"]]),
                             np.r_[np.zeros(len(clean["train"])), np.ones(len(realp["train"]))], cfg, "real")
    thr = operating_point(model, realp["val"], clean["val"], cfg.fpr_target)
    real = "LFW clean vs RWMFD real masks"
    trts = [("TRTS", n, label[n]) for n in synth_names] + ([("TRTS (control)", cfg.control, cfg.control)]
                                                           if cfg.control else [])
    for row, n, shown in trts:
        add(row, shown, real, f"LFW+{shown} held out", model, thr, _synthetic(faces, n, "test", cfg.occluders))
    add("TRTR", "-", real, "RWMFD real masks held out", model, thr, realp["test"])
    bar.update(1)
    bar.close()
    order = {"TSTR": 0, "TSTS": 1, "TRTS": 2, "TRTR": 3, "TSTR (control)": 4, "TSTS (control)": 5,
             "TRTS (control)": 6}
    return sorted(rows, key=lambda r: order[r["row"]])


def write_result(result: RealismResult, path: str | Path) -> None:
    from .io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(result.to_dict(), indent=2, sort_keys=False, allow_nan=False,
                                       default=_nan_free) + "\n")


def _nan_free(o):
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
