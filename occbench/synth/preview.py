"""Contact sheets of a synth run: original | occluded | mask overlay, with a caption per sample."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError, DataNotFoundError
from ..io.atomic import atomic_write_bytes
from ..io.images import decode_rgb, encode
from ..paths import safe_join
from .manifest import read_manifest

TILE = 128  # pixels per image tile
CAPTION_H = 16
GAP = 4
TRIPLETS_PER_ROW = 4
OVERLAY_RGB = np.array([255, 0, 0], np.float32)


def sample_rows(df, n: int, variant: str | None = None, seed: int = 0):
    """A deterministic sample of ``n`` rows with images (ok rows first, then clean), in manifest order."""
    if variant is not None:
        if variant not in set(df["variant"]):
            known = ", ".join(sorted(set(df["variant"])))
            raise ConfigError(f"no variant {variant!r} in this run; variants: {known}")
        df = df[df["variant"] == variant]
    ok = df[df["status"] == "ok"]
    pool = ok if len(ok) >= n else df[df["status"].isin(["ok", "clean"])]
    if pool.empty:
        raise DataNotFoundError("no occluded images to preview (every row is noface or error)")
    if len(pool) > n:
        idx = np.sort(np.random.default_rng(seed).choice(len(pool), size=n, replace=False))
        pool = pool.iloc[idx]
    return pool


def _fit(img: np.ndarray, size: int = TILE) -> np.ndarray:
    """Letterbox an RGB image into a size x size tile."""
    h, w = img.shape[:2]
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    r = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    tile = np.full((size, size, 3), 24, np.uint8)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    tile[y0:y0 + nh, x0:x0 + nw] = r
    return tile


def overlay(image: np.ndarray, mask: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """Tint occluded pixels (mask >= 128) red."""
    out = image.astype(np.float32)
    m = (mask >= 128)[..., None]
    out = np.where(m, out * (1 - strength) + OVERLAY_RGB * strength, out)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _placeholder(text: str) -> np.ndarray:
    tile = np.full((TILE, TILE, 3), 60, np.uint8)
    cv2.putText(tile, text, (6, TILE // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (220, 220, 220), 1, cv2.LINE_AA)
    return tile


def _caption(row) -> str:
    if row["status"] == "clean":
        return f"clean  {row['key'].rsplit('/', 1)[-1][:40]}"
    area = row["area_frac"] * 100 if row["area_frac"] == row["area_frac"] else float("nan")
    return f"{row['occluder']}  s{row['scale']:g}  {area:.0f}%  p{int(row['pattern'])}"


def contact_sheet(out: str | os.PathLike, n: int = 24, variant: str | None = None, seed: int = 0,
                  per_row: int = TRIPLETS_PER_ROW, parts: bool = False) -> np.ndarray:
    """RGB contact sheet of ``n`` sampled rows of the run in ``out`` (``parts``: + the part-map tile)."""
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    out = Path(out)
    df = read_manifest(out)
    if parts:
        _require_part_maps(out)
    rows = sample_rows(df, n, variant, seed)
    source = _open_source_of(out)
    cells = []
    for _, row in rows.iterrows():
        occ = decode_rgb(safe_join(out, row["image"]).read_bytes())
        mask = cv2.imdecode(np.frombuffer(safe_join(out, row["mask"]).read_bytes(), np.uint8),
                            cv2.IMREAD_GRAYSCALE)
        orig = None
        if source is not None:
            try:
                orig = decode_rgb(source.read_bytes(row["key"]))
            except Exception:  # noqa: BLE001 - the preview still shows the outputs
                orig = None
        if orig is not None and orig.shape[:2] == mask.shape:
            tiles = [_fit(orig), _fit(occ), _fit(overlay(orig, mask))]  # the tint shows what is hidden
        else:
            tiles = [_placeholder("source n/a"), _fit(occ), _fit(overlay(occ, mask))]
        if parts:
            tiles.append(_part_tile(out, row, occ))
        sep = np.full((TILE, 2, 3), 255, np.uint8)
        triplet = np.concatenate([t for tile in tiles for t in (tile, sep)][:-1], axis=1)
        cap = np.full((CAPTION_H, triplet.shape[1], 3), 255, np.uint8)
        cv2.putText(cap, _caption(row)[:60], (3, CAPTION_H - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1,
                    cv2.LINE_AA)
        cells.append(np.concatenate([triplet, cap], axis=0))
    ch, cw = cells[0].shape[:2]
    per_row = max(1, min(per_row, len(cells)))
    n_rows = -(-len(cells) // per_row)
    sheet = np.full((n_rows * (ch + GAP) + GAP, per_row * (cw + GAP) + GAP, 3), 200, np.uint8)
    for i, c in enumerate(cells):
        r, col = divmod(i, per_row)
        y, x = GAP + r * (ch + GAP), GAP + col * (cw + GAP)
        sheet[y:y + ch, x:x + cw] = c
    return sheet


def _require_part_maps(out: Path) -> None:
    """--parts on a run made without --part-masks would only show placeholders: say how to get maps."""
    meta = out / "synth.json"
    try:
        made_with = json.loads(meta.read_text()).get("config", {}).get("part_masks")
    except (OSError, ValueError):
        return  # no readable synth.json: show what the manifest has
    if not made_with:
        raise ConfigError(f"{out} was synthesized without --part-masks, so it has no part maps to show: "
                          "drop --parts, or rerun `occbench synth` with --part-masks into a new --out")


def _part_tile(out: Path, row, occ: np.ndarray) -> np.ndarray:
    """The face-part map coloured over the occluded image (a placeholder where the run has none)."""
    from ..face.parts import colourise

    rel = row.get("part_map", "") if hasattr(row, "get") else ""
    if not isinstance(rel, str) or not rel:
        return _placeholder("no part map")
    labels = cv2.imdecode(np.frombuffer(safe_join(out, rel).read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
    if labels is None or labels.shape != occ.shape[:2]:
        return _placeholder("part map n/a")
    blend = np.where((labels > 0)[..., None], 0.45 * occ + 0.55 * colourise(labels), occ)
    return _fit(np.clip(blend + 0.5, 0, 255).astype(np.uint8))


def write_preview(out: str | os.PathLike, dest: str | os.PathLike | None = None, n: int = 24,
                  variant: str | None = None, seed: int = 0, parts: bool = False) -> Path:
    """Write the contact sheet PNG (default OUT/preview.png) and return its path."""
    sheet = contact_sheet(out, n=n, variant=variant, seed=seed, parts=parts)
    dest = Path(dest) if dest is not None else Path(out) / "preview.png"
    atomic_write_bytes(dest, encode(sheet, "png"))
    return dest


def _open_source_of(out: Path):
    """The run's source (from synth.json), or None when it cannot be opened any more."""
    from .pipeline import SynthConfig, load_run_config, open_run_source

    try:
        run = load_run_config(out)
    except Exception:  # noqa: BLE001 - originals are optional in a preview
        return None
    cfg = SynthConfig.from_dict({**run["config"], "out": str(out)})
    root = (run.get("source") or {}).get("root")
    # as given (named dataset, relative path), else the resolved root recorded at synth time
    for attempt in (cfg, SynthConfig.from_dict({**cfg.to_dict(), "src": root}) if root else None):
        if attempt is None:
            continue
        try:
            return open_run_source(attempt)
        except Exception:  # noqa: BLE001
            continue
    return None
