"""Small drawing helpers of the look-2 occluders: colour jitter and soft shading made of parts.

Shading here is built from translucent parts (stacked bands), so it needs nothing beyond the shared
rasteriser: a soft inner rim gives a surface depth, soft lines give folds and seams.
"""
from __future__ import annotations

import colorsys

import numpy as np

from . import functional as F
from .base import Part, solid, v_dict, v_number

TINT_SCHEMA = v_dict({"hue": v_number(0.0, 180.0), "sat": v_number(0.0, 1.0), "val": v_number(0.0, 1.0)})


def tint(rng: np.random.Generator, spec: dict) -> list[float]:
    """Sampled jitter [hue degrees, saturation factor, value factor] within ``spec`` (TINT_SCHEMA)."""
    u = rng.uniform(-1.0, 1.0, 3)
    return [float(u[0] * spec["hue"]), float(1.0 + u[1] * spec["sat"]), float(1.0 + u[2] * spec["val"])]


def apply_tint(rgb, t) -> list[float]:
    """``rgb`` with hue rotated by t[0] degrees and saturation / value scaled by t[1] / t[2]."""
    h, s, v = colorsys.rgb_to_hsv(*(min(max(float(c), 0.0), 255.0) / 255.0 for c in rgb))
    h = (h + t[0] / 360.0) % 1.0
    s, v = min(max(s * t[1], 0.0), 1.0), min(max(v * t[2], 0.0), 1.0)
    return [round(255.0 * c, 3) for c in colorsys.hsv_to_rgb(h, s, v)]


def soft_rim(outline: np.ndarray, depth: float, rgb, strength: float, steps: int = 3, clip=None) -> list[Part]:
    """An inner shadow: ``steps`` nested bands inside ``outline``, darkest at the edge (peak opacity
    ~``strength``), fading over ``depth`` model units."""
    if strength <= 0 or depth <= 0:
        return []
    a = 1.0 - (1.0 - strength) ** (1.0 / steps)
    return [Part([outline], solid(rgb), alpha=a, holes=[F.offset_closed(outline, -depth * k / steps)],
                 clip=[clip] if clip is not None else []) for k in range(1, steps + 1)]


def soft_line(curve: np.ndarray, width: float, rgb, alpha: float, clip=None, steps: int = 3) -> list[Part]:
    """A line with soft sides: ``steps`` ribbons of growing width whose opacities add up to ~``alpha``
    in the middle."""
    a = 1.0 - (1.0 - alpha) ** (1.0 / steps)
    return [Part([F.ribbon(curve, width * k / steps)], solid(rgb), alpha=a, clip=[clip] if clip is not None else [])
            for k in range(1, steps + 1)]


def soft_spot(cx: float, cy: float, rx: float, ry: float, rgb, alpha: float, clip=None, steps: int = 3) -> list[Part]:
    """A soft ellipse (highlight or shadow): nested ellipses, most opaque in the centre."""
    a = 1.0 - (1.0 - alpha) ** (1.0 / steps)
    return [Part([F.ellipse(cx, cy, rx * k / steps, ry * k / steps)], solid(rgb), alpha=a,
                 clip=[clip] if clip is not None else []) for k in range(1, steps + 1)]


def dashed(curve: np.ndarray, dash: int, width: float, rgb, alpha: float, clip=None) -> list[Part]:
    """Stitches: every other run of ``dash`` points of ``curve`` as a short ribbon."""
    out = []
    for i in range(0, len(curve) - 1, 2 * dash):
        seg = curve[i:i + dash + 1]
        if len(seg) >= 2:
            out.append(Part([F.ribbon(seg, width)], solid(rgb), alpha=alpha, clip=[clip] if clip is not None else []))
    return out
