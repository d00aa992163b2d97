"""Generated stand-ins for data sets that are not in ../shared, written in their published layouts.

* MFR2 (MaskTheFace): ``mfr2/<Name>/<Name>_NNNN.png`` 160x160 + ``mfr2/pairs.txt`` (LFW-style lines,
  space separated, no header) + a ``masked.csv`` (path,masked) as a user would write it.
* CALFW: ``aligned images/<Name>_NNNN.jpg`` (flat) + ``pairs_CALFW.txt`` (two lines per pair,
  ``<file> <token>``, positives with fold tokens 1..F first, then negatives with token 0).
* CPLFW: ``images/<Name>_N.jpg`` (no zero padding) + ``pairs_CPLFW.txt`` (same two-line format).

Faces come from real LFW identity folders when given (so MediaPipe finds them), else from
``synthetic_faces`` (the protocols' template fallback then aligns them).
"""
from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np

from synthetic_faces import synthetic_face


def people(n_ids: int, per_id: int, size: int, lfw_images: Path | None = None) -> dict[str, list[np.ndarray]]:
    """{Name: [RGB size x size images]}: LFW people with >= per_id images (centre crop), else synthetic."""
    out: dict[str, list[np.ndarray]] = {}
    if lfw_images is not None:
        for d in sorted(p for p in Path(lfw_images).iterdir() if p.is_dir()):
            files = sorted(d.glob("*.jpg"))
            if len(files) >= per_id:
                imgs = []
                for f in files[:per_id]:
                    bgr = cv2.imread(str(f))
                    h, w = bgr.shape[:2]
                    c = min(h, w) * 3 // 4  # LFW 250x250 -> the central 187 px, resized
                    crop = bgr[(h - c) // 2:(h + c) // 2, (w - c) // 2:(w + c) // 2]
                    imgs.append(cv2.cvtColor(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA),
                                             cv2.COLOR_BGR2RGB))
                out[d.name] = imgs
            if len(out) == n_ids:
                return out
    for i in range(len(out), n_ids):
        out[f"Person_{i:02d}"] = [synthetic_face(size, seed=i * 100 + j)[0] for j in range(per_id)]
    return out


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(buf.tobytes())


def pair_plan(names: list[str], per_id: int, n_pairs: int, seed: int = 0) -> list[tuple[str, int, str, int]]:
    """Half genuine (Name, i, Name, j), half impostor pairs, 1-based image numbers, shuffled (seeded)."""
    rng = np.random.default_rng(seed)
    gen = [(n, i, n, j) for n in names for i, j in itertools.combinations(range(1, per_id + 1), 2)]
    imp = [(a, i, b, j) for a, b in itertools.combinations(names, 2)
           for i, j in itertools.product(range(1, per_id + 1), repeat=2)]
    k = n_pairs // 2
    g = [gen[i] for i in rng.choice(len(gen), min(k, len(gen)), replace=False)]
    m = [imp[i] for i in rng.choice(len(imp), n_pairs - len(g), replace=False)]
    plan = g + m
    return [plan[i] for i in rng.permutation(len(plan))]


def write_mfr2(root: Path, faces: dict[str, list[np.ndarray]], n_pairs: int = 40) -> dict:
    """MFR2 layout under root/mfr2; every second image of a person is 'masked' in masked.csv."""
    base = Path(root) / "mfr2"
    masked = {}
    for name, imgs in faces.items():
        for i, img in enumerate(imgs, 1):
            key = f"{name}/{name}_{i:04d}.png"
            _write(base / key, cv2.resize(img, (160, 160)))
            masked[key] = i % 2 == 0
    plan = pair_plan(list(faces), len(next(iter(faces.values()))), n_pairs)
    lines = [f"{a} {i} {j}" if a == b else f"{a} {i} {b} {j}" for a, i, b, j in plan]
    (base / "pairs.txt").write_text("\n".join(lines) + "\n")
    (Path(root) / "masked.csv").write_text("path,masked\n" + "".join(f"{k},{int(v)}\n" for k, v in masked.items()))
    return {"plan": plan, "masked": masked, "dir": base}


def write_calfw(root: Path, faces: dict[str, list[np.ndarray]], n_pairs: int = 40, style: str = "calfw",
                n_folds: int = 10) -> dict:
    """CALFW (or CPLFW with style='cplfw') layout under root; returns the plan as file-name pairs."""
    root = Path(root)
    folder = root / ("aligned images" if style == "calfw" else "images")

    def fname(name: str, i: int) -> str:
        return f"{name}_{i:04d}.jpg" if style == "calfw" else f"{name}_{i}.jpg"

    for name, imgs in faces.items():
        for i, img in enumerate(imgs, 1):
            _write(folder / fname(name, i), img)
    plan = pair_plan(list(faces), len(next(iter(faces.values()))), n_pairs)
    pos = [p for p in plan if p[0] == p[2]]
    neg = [p for p in plan if p[0] != p[2]]
    lines, pairs = [], []
    for k, (a, i, b, j) in enumerate(pos):  # positives first, fold tokens 1..n_folds in blocks
        tok = 1 + k * n_folds // len(pos)
        lines += [f"{fname(a, i)} {tok}", f"{fname(b, j)} {tok}"]
        pairs.append((fname(a, i), fname(b, j), True, tok))
    for a, i, b, j in neg:
        lines += [f"{fname(a, i)} 0", f"{fname(b, j)} 0"]
        pairs.append((fname(a, i), fname(b, j), False, None))
    (root / f"pairs_{style.upper()}.txt").write_text("\n".join(lines) + "\n")
    return {"pairs": pairs, "dir": folder}


def write_bin(path: Path, faces: dict[str, list[np.ndarray]], n_pairs: int = 20) -> list[bool]:
    """An insightface-style verification .bin (pickled (list of encoded 112x112 crops, issame list)),
    e.g. a calfw.bin / cplfw.bin stand-in; returns issame."""
    import pickle

    plan = pair_plan(list(faces), len(next(iter(faces.values()))), n_pairs)
    bins, same = [], []
    for a, i, b, j in plan:
        for name, k in ((a, i), (b, j)):
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(cv2.resize(faces[name][k - 1], (112, 112)), cv2.COLOR_RGB2BGR))
            bins.append(buf.tobytes())
        same.append(a == b)
    Path(path).write_bytes(pickle.dumps((bins, same), protocol=4))
    return same
