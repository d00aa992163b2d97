"""User RGBA images as occluders, placed by anchor points given in the image's own pixels.

A folder holds PNGs (RGBA; RGB is taken as fully opaque, as in FROM) and ``occluders.yaml``::

    occluders:
      - file: cup.png            # relative to the folder (must not escape it)
        name: rgba_cup           # optional, default: file stem
        category: rgba           # one of occbench CATEGORIES
        anchor:
          kind: center           # center | lower_face | eyes | mouth | points
          target: mouth_center   # (center) a face-frame point name, see FRAME_POINTS
          point: [80, 100]       # (center) asset pixel placed on the target
          width: 60              # (center) asset width in face-frame px at s = 1
          points: {nose_bridge: [96, 8], chin: [96, 150]}   # (other kinds) asset px of named points

Anchor kinds: ``lower_face`` needs nose_bridge + chin; ``eyes`` needs left_eye + right_eye;
``mouth`` needs mouth_left + mouth_right; ``points`` takes any >= 2 FRAME_POINTS. Two or more
points fix a similarity (rotation, uniform scale, shift; least squares) asset -> face frame; never
an anisotropic stretch. s = 1: that fit; s scales about the mean of the target points.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ...errors import ConfigError, DataNotFoundError
from ...paths import safe_join
from ...face import geometry
from . import functional as F
from .base import CATEGORIES, FAMILIES, Occluder, Part, new_seed, pick, uniform, v_number, v_range, v_weights
from .style import TINT_SCHEMA, tint

_A = geometry.ARCFACE_112
FRAME_POINTS: dict[str, tuple[float, float]] = {
    "left_eye": tuple(_A[0]), "right_eye": tuple(_A[1]), "nose": tuple(_A[2]),
    "mouth_left": tuple(_A[3]), "mouth_right": tuple(_A[4]),
    "eyes_center": tuple((_A[0] + _A[1]) / 2), "mouth_center": tuple((_A[3] + _A[4]) / 2),
    "nose_bridge": (56.0, 58.5), "chin": (56.0, 117.0), "forehead": (56.0, 28.0),
    "left_cheek": (28.0, 80.0), "right_cheek": (84.0, 80.0),
}
KIND_POINTS = {"lower_face": ("nose_bridge", "chin"), "eyes": ("left_eye", "right_eye"),
               "mouth": ("mouth_left", "mouth_right")}
METADATA_FILES = ("occluders.yaml", "occluders.yml")
DEFAULT_JITTER = {"shift": 1.0, "angle": 2.0, "size": 0.03}


@lru_cache(maxsize=64)
def _load_rgba(path: str, mtime: float) -> np.ndarray:
    arr = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ConfigError(f"{path}: not a readable image")
    if arr.ndim == 2:
        arr = cv2.cvtColor(arr, cv2.COLOR_GRAY2BGRA)
    elif arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2BGRA)
    if arr.dtype == np.uint16:
        arr = (arr / 257.0).round().astype(np.uint8)
    rgba = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    if not (rgba[..., 3] >= 128).any():
        raise ConfigError(f"{path}: the alpha channel is empty (nothing would be drawn)")
    rgba.setflags(write=False)
    return rgba


def _pt(name, key, val) -> list[float]:
    if (not isinstance(val, (list, tuple)) or len(val) != 2
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and np.isfinite(c) for c in val)):
        raise ConfigError(f"occluder {name!r}: {key} must be an [x, y] point in asset pixels, got {val!r}")
    return [float(val[0]), float(val[1])]


def _check_anchor(name: str, anchor) -> dict:
    if not isinstance(anchor, dict) or "kind" not in anchor:
        raise ConfigError(f"occluder {name!r}: anchor must be a mapping with a 'kind' "
                          f"(center, {', '.join(KIND_POINTS)}, points)")
    kind = anchor["kind"]
    if kind == "center":
        extra = set(anchor) - {"kind", "target", "point", "width"}
        if extra or not {"target", "point", "width"} <= set(anchor):
            raise ConfigError(f"occluder {name!r}: a 'center' anchor needs exactly target, point, width")
        if anchor["target"] not in FRAME_POINTS:
            raise ConfigError(f"occluder {name!r}: anchor target {anchor['target']!r} unknown; "
                              f"use one of {', '.join(FRAME_POINTS)}")
        return {"kind": kind, "target": anchor["target"], "point": _pt(name, "anchor.point", anchor["point"]),
                "width": v_number(0.5, 2000.0)(name, "anchor.width", anchor["width"])}
    if kind not in KIND_POINTS and kind != "points":
        raise ConfigError(f"occluder {name!r}: anchor kind {kind!r} unknown; "
                          f"use center, {', '.join(KIND_POINTS)} or points")
    if set(anchor) != {"kind", "points"} or not isinstance(anchor["points"], dict):
        raise ConfigError(f"occluder {name!r}: a {kind!r} anchor needs exactly 'points' (name -> [x, y])")
    pts = anchor["points"]
    need = KIND_POINTS.get(kind)
    if need is not None and set(pts) != set(need):
        raise ConfigError(f"occluder {name!r}: a {kind!r} anchor needs points {', '.join(need)}, got {sorted(pts)}")
    unknown = [k for k in pts if k not in FRAME_POINTS]
    if unknown:
        raise ConfigError(f"occluder {name!r}: unknown anchor point(s) {unknown}; use {', '.join(FRAME_POINTS)}")
    if len(pts) < 2:
        raise ConfigError(f"occluder {name!r}: a 'points' anchor needs at least 2 points")
    return {"kind": kind, "points": {k: _pt(name, f"anchor.points.{k}", p) for k, p in pts.items()}}


@FAMILIES.register("rgba")
class RGBAOccluder(Occluder):
    """An RGBA image placed on the face by its anchor points (see module docstring)."""

    family = "rgba"
    SCHEMA = {"path": lambda n, k, v: _check_path(n, v), "anchor": lambda n, k, v: _check_anchor(n, v)}

    def check_config(self):
        self._rgba = _load_rgba(self.cfg["path"], os.path.getmtime(self.cfg["path"]))
        a = self.cfg["anchor"]
        if a["kind"] == "center":
            src = np.array([a["point"]])
            w = self._rgba.shape[1]
            s = a["width"] / w
            dst = np.array(FRAME_POINTS[a["target"]])
            self._asset_to_model = np.array([[s, 0, dst[0] - s * src[0, 0]], [0, s, dst[1] - s * src[0, 1]]])
            self._anchor = tuple(dst)
        else:
            names = list(a["points"])
            src = np.array([a["points"][k] for k in names])
            dst = np.array([FRAME_POINTS[k] for k in names])
            if np.ptp(src, axis=0).max() < 1e-6:
                raise ConfigError(f"occluder {self.name!r}: anchor points coincide")
            self._asset_to_model = geometry.estimate_similarity(src, dst)
            self._anchor = tuple(dst.mean(0))
        alpha = self._rgba[..., 3]
        ys, xs = np.nonzero(alpha >= 128)
        d = (xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2  # opaque pixel nearest the opaque centroid
        k = int(np.argmin(d))
        self._core = tuple(F.transform(self._asset_to_model, [[xs[k], ys[k]]])[0])

    def describe(self):
        d = super().describe()
        d["asset_sha256"] = _sha256(self.cfg["path"])
        return d

    def sample(self, rng):
        return {}

    def build(self, v, stroke_min):
        h, w = self._rgba.shape[:2]
        rect = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
        return [Part([F.transform(self._asset_to_model, rect)], {"kind": "solid", "rgb": [0, 0, 0]})], \
            self._anchor, self._core

    def sprite(self, v, params, roi):
        """The asset itself (premultiplied), box-shrunk by an integer factor when it is shown at less
        than half its resolution, so the bilinear warp never skips asset pixels."""
        level = float(params["level"])
        hit = self._sprites.get(level)
        if hit is not None:
            return hit
        a = self._rgba[..., 3].astype(np.float32) / np.float32(255.0)
        prem = F.pack_premultiplied(self._rgba[..., :3] * a[..., None], a)
        self._sprites[level] = _shrunk(prem, self._asset_to_model.copy(), level)
        return self._sprites[level]


def _shrunk(prem: np.ndarray, to_model: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """(sprite, sprite px -> model): the premultiplied asset box-shrunk by an integer factor when it is
    shown at less than half its resolution, so the bilinear warp never skips asset pixels."""
    scale = level * float(np.sqrt(abs(np.linalg.det(to_model[:, :2]))))  # asset px -> sprite px
    if scale < 0.5:
        k = max(1, int(np.floor(1.0 / scale)))
        h, w = prem.shape[:2]
        nh, nw = max(1, int(round(h / k))), max(1, int(round(w / k)))
        prem = cv2.resize(prem, (nw, nh), interpolation=cv2.INTER_AREA)
        sx, sy = w / nw, h / nh
        pre = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]], np.float64)
        to_model = np.hstack([to_model[:, :2] @ pre[:, :2], (to_model[:, :2] @ pre[:, 2] + to_model[:, 2])[:, None]])
    return prem, to_model


def _check_path(name, val) -> str:
    p = Path(str(val))
    if not p.is_file():
        raise DataNotFoundError(f"occluder {name!r}: image file {p} not found")
    return str(p.resolve())


@lru_cache(maxsize=64)
def _sha256_cached(path: str, mtime: float) -> str:
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _sha256(path: str) -> str:
    return _sha256_cached(path, os.path.getmtime(path))


def read_asset_dir(folder) -> list[dict]:
    """Parse ``folder``/occluders.yaml -> [{name, category, source, config}] (configs checked on build)."""
    from .definitions import read_yaml

    folder = Path(folder)
    if not folder.is_dir():
        raise DataNotFoundError(f"occluder folder {folder} does not exist")
    meta = next((folder / n for n in METADATA_FILES if (folder / n).is_file()), None)
    if meta is None:
        raise DataNotFoundError(f"{folder} has no occluders.yaml: list each image with file, category and anchor "
                                "(see occluders/README.md, 'Your own RGBA occluders')")
    entries = read_yaml(meta)["occluders"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{meta}: 'occluders' must be a non-empty list of entries")
    out, seen = [], set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "file" not in e:
            raise ConfigError(f"{meta}: entry {i} needs at least 'file', 'category' and 'anchor'")
        unknown = set(e) - {"file", "name", "category", "anchor", "jitter", "relight"}
        if unknown:
            raise ConfigError(f"{meta}: entry {i} has unknown key(s) {sorted(unknown)}")
        path = safe_join(folder, e["file"])
        name = str(e.get("name") or Path(e["file"]).stem)
        if name in seen:
            raise ConfigError(f"{meta}: name {name!r} is used twice")
        seen.add(name)
        cat = e.get("category", "rgba")
        if cat not in CATEGORIES:
            raise ConfigError(f"{meta}: {name}: category must be one of {', '.join(CATEGORIES)}, got {cat!r}")
        if "anchor" not in e:
            raise ConfigError(f"{meta}: {name}: missing 'anchor'")
        out.append({"name": name, "category": cat, "source": str(meta),
                    "config": {"path": str(path), "anchor": e["anchor"],
                               "jitter": e.get("jitter", dict(DEFAULT_JITTER)), "relight": e.get("relight", 0.2)}})
    return out


def _check_builtin_path(name, key, val) -> str:
    """An asset path; a relative one is taken inside the built-in ``occluders`` folder."""
    from ...paths import resource_dir

    p = Path(str(val))
    if not p.is_absolute():
        p = safe_join(resource_dir("occluders"), str(val))
    return _check_path(name, p)


@FAMILIES.register("rgba_look")
class RGBALook(RGBAOccluder):
    """An RGBA asset with look variety per image: hue / saturation / value jitter, a woven-in pattern
    (dots, stripes, checks, fabric or none) and a size jitter about the anchor."""

    family = "rgba_look"
    SCHEMA = {"path": _check_builtin_path, "anchor": lambda n, k, v: _check_anchor(n, v), "tint": TINT_SCHEMA,
              "patterns": v_weights(("plain", "dots", "stripes", "checks", "fabric")),
              "pattern_period": v_range(1.0, 200.0), "size": v_range(0.3, 3.0)}

    def sample(self, rng):
        cfg = self.cfg
        return {"tint": tint(rng, cfg["tint"]), "pattern": pick(rng, cfg["patterns"]),
                "period": uniform(rng, cfg["pattern_period"]), "angle": float(rng.choice([0.0, 45.0, 90.0, 135.0])),
                "light": bool(rng.random() < 0.5), "seed": new_seed(rng), "size": uniform(rng, cfg["size"])}

    def _fit(self, v) -> np.ndarray:
        """asset px -> model, scaled by the look's size about the anchor."""
        s = float(v.get("size", 1.0))
        ax, ay = self._anchor
        m = self._asset_to_model.copy()
        m[:, :2] *= s
        m[:, 2] = (m[:, 2] - (ax, ay)) * s + (ax, ay)
        return m

    def build(self, v, stroke_min):
        h, w = self._rgba.shape[:2]
        rect = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
        core = np.asarray(self._core) - self._anchor
        core = tuple(np.asarray(self._anchor) + core * float(v.get("size", 1.0)))
        return [Part([F.transform(self._fit(v), rect)], {"kind": "solid", "rgb": [0, 0, 0]})], self._anchor, core

    def recoloured(self, v) -> np.ndarray:
        """The asset's RGBA with this look's colours (float32 straight RGB, alpha 0..1)."""
        rgba = self._rgba
        hsv = cv2.cvtColor(rgba[..., :3].astype(np.float32) / np.float32(255.0), cv2.COLOR_RGB2HSV)
        t = v["tint"]
        hsv[..., 0] = (hsv[..., 0] + t[0]) % 360.0
        hsv[..., 1] = np.clip(hsv[..., 1] * t[1], 0.0, 1.0)
        hsv[..., 2] = np.clip(hsv[..., 2] * t[2], 0.0, 1.0)
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * np.float32(255.0)
        if v["pattern"] != "plain":
            h, w = rgb.shape[:2]
            u = np.arange(w, dtype=np.float64)[None, :]
            vv = np.arange(h, dtype=np.float64)[:, None]
            p, a = v["period"], v["angle"]
            if v["pattern"] == "dots":
                m = F.dots(u, vv, p, 0.22, 1.0)
            elif v["pattern"] == "stripes":
                m = F.stripes(u, vv, p, a, 0.4, 1.0)
            elif v["pattern"] == "checks":
                m = F.checks(u, vv, p, a, 1.0)
            else:
                m = F.fbm(u, vv, p, int(v["seed"]), 3)
            m = np.broadcast_to(np.asarray(m, np.float32), (h, w))
            target = np.float32(1.45) if v["light"] else np.float32(0.55)
            rgb = rgb * (1.0 + (target - 1.0) * 0.8 * m)[..., None]
        return np.clip(rgb, 0, 255), rgba[..., 3].astype(np.float32) / np.float32(255.0)

    def sprite(self, v, params, roi):
        level = float(params["level"])
        key = (json.dumps(v, sort_keys=True), level)
        hit = self._sprites.get(key)
        if hit is not None:
            return hit
        rgb, a = self.recoloured(v)
        if len(self._sprites) >= 64:
            self._sprites.popitem(last=False)
        self._sprites[key] = _shrunk(F.pack_premultiplied(rgb * a[..., None], a), self._fit(v), level)
        return self._sprites[key]
