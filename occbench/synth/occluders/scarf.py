"""Scarf pulled up over the lower face, to a sampled height, with folds and a textile pattern.

s = 1: the scarf's top edge passes through (56, ``top``) with ``top`` sampled from ``top_range``
(face-frame y: 58 = nose bridge, 84 = just above the mouth), sagging by ``sag`` towards the sides;
it spans ``x_extent`` and hangs down to ``bottom`` (below the chin, over the neck).
Anchor: the mouth centre (scaling about it).
"""
from __future__ import annotations

import numpy as np

from . import functional as F
from .base import (FAMILIES, TEXTURE_KINDS, Occluder, Part, sample_texture, smooth, solid, tone, uniform,
                   v_number, v_palette, v_point, v_range, v_weights)
from .style import TINT_SCHEMA, apply_tint, soft_line, tint


@FAMILIES.register("scarf")
class Scarf(Occluder):
    STROKE_MIN_AS_FLOOR = True  # build uses stroke_min only as max(width, stroke_min)
    family = "scarf"
    SCHEMA = {"top_range": v_range(0.0, 112.0), "sag": v_range(0.0, 40.0), "x_extent": v_range(-100.0, 212.0),
              "bottom": v_number(60.0, 400.0), "folds": v_range(0, 6, integer=True), "anchor": v_point,
              "colours": v_palette, "textures": v_weights(TEXTURE_KINDS), "texture_period": v_range(0.5, 60.0),
              "shading": v_number(0.0, 0.8)}

    def sample(self, rng):
        cfg = self.cfg
        return {"top": uniform(rng, cfg["top_range"]), "sag": uniform(rng, cfg["sag"]),
                "tilt": float(rng.uniform(-3.0, 3.0)),
                "folds": int(rng.integers(cfg["folds"][0], cfg["folds"][1] + 1)),
                "fold_seed": [float(x) for x in rng.uniform(-1, 1, size=8)],
                "texture": sample_texture(rng, cfg["textures"], cfg["colours"], cfg["texture_period"],
                                          angles=[0.0, 0.0, 90.0, 45.0])}

    def _top_edge(self, v, offset=0.0):
        x0, x1 = self.cfg["x_extent"]
        xs = np.linspace(x0, x1, 13)
        t = (xs - 56.0) / 56.0
        ys = v["top"] + offset + v["sag"] * t**2 + v["tilt"] * t
        ys = ys + 1.2 * np.asarray(v["fold_seed"] * 2)[: len(xs)] * (np.abs(t) > 0.2)
        return smooth(np.stack([xs, ys], 1), closed=False, samples=6)

    def build(self, v, stroke_min):
        cfg = self.cfg
        tex = v["texture"]
        main = tex["colors"][0]
        top = self._top_edge(v)
        x0, x1 = cfg["x_extent"]
        bottom = cfg["bottom"]
        # sides bulge a little over the jaw, then drape down to the neck with rounded corners
        yl, yr = float(top[0, 1]), float(top[-1, 1])
        lower = smooth([[x1, yr], [x1 + 3.0, yr + 22.0], [x1 - 2.0, bottom - 10.0], [x1 - 14.0, bottom],
                        [56.0, bottom + 3.0], [x0 + 14.0, bottom], [x0 + 2.0, bottom - 10.0], [x0 - 3.0, yl + 22.0],
                        [x0, yl]], closed=False, samples=6)
        body = np.vstack([top, lower[1:-1]])
        shade = {"kind": "product", "parts": [
            {"kind": "cylinder", "cx": 56.0, "rx": 70.0, "k": cfg["shading"]},
            {"kind": "vgrad", "y0": v["top"], "y1": v["top"] + 40.0, "a": 1.05, "b": 0.88}]}
        parts = [Part([body], tex, shade=shade)]
        # rolled top hem: a lighter band just under the edge, with a shadow line below it
        hem = np.vstack([top, self._top_edge(v, 4.0)[::-1]])
        parts.append(Part([hem], solid(tone(main, 1.15)), alpha=0.35))
        parts.append(Part([F.ribbon(self._top_edge(v, 4.5), max(1.4, stroke_min))], solid(tone(main, 0.55)), 0.45))
        for k in range(v["folds"]):
            off = 10.0 + 9.0 * k
            fold = self._top_edge(v, off)
            fold[:, 1] += 3.0 * np.sin(fold[:, 0] / 17.0 + k)
            parts.append(Part([F.ribbon(fold, max(2.0, stroke_min))], solid(tone(main, 0.6)), 0.35, clip=[body]))
        return parts, tuple(cfg["anchor"]), (56.0, v["top"] + 12.0)


@FAMILIES.register("scarf_v2")
class Scarf2(Scarf):
    """Look 2: the top edge is draped, not straight: pulled up over the nose (a rounded peak), falling
    along the cheeks to the jaw line at the sides, a little asymmetric, with soft diagonal folds
    hanging from the nose."""

    family = "scarf_v2"
    SCHEMA = {**Scarf.SCHEMA, "drape": v_range(0.0, 60.0), "tint": TINT_SCHEMA}

    def sample(self, rng):
        v = super().sample(rng)
        cfg = self.cfg
        t = tint(rng, cfg["tint"])
        v["texture"]["colors"] = [apply_tint(c, t) for c in v["texture"]["colors"]]
        u = rng.uniform(-1.0, 1.0, 3)
        v.update(drape=uniform(rng, cfg["drape"]), peak_x=float(56.0 + 3.0 * u[0]),
                 lean=[float(1.0 + 0.2 * u[1]), float(1.0 - 0.2 * u[1])], waves=float(u[2]))
        return v

    def _top_edge(self, v, offset=0.0):
        x0, x1 = self.cfg["x_extent"]
        # the tent over the nose fades when the scarf only reaches the mouth
        drape = v["drape"] * float(np.clip(1.0 - (v["top"] - 58.0) / 40.0, 0.35, 1.0))
        px = v["peak_x"]
        pts = []
        for side, lean, xend in ((-1, v["lean"][0], x0), (1, v["lean"][1], x1)):
            span = abs(xend - px)
            for f, rise in ((1.0, 1.0), (0.72, 0.78), (0.5, 0.5), (0.3, 0.2), (0.12, 0.04)):
                pts.append([px + side * f * span, rise * drape * lean + v["sag"] * f * f])
        pts.append([px, 0.0])
        pts = np.array(sorted(pts, key=lambda p: p[0]))
        pts[:, 1] += v["top"] + offset + v["tilt"] * (pts[:, 0] - 56.0) / 56.0
        pts[:, 1] += 1.0 * np.sin(pts[:, 0] / 9.0 + 3.0 * v["waves"]) * (np.abs(pts[:, 0] - px) > 12)
        return smooth(pts, closed=False, samples=8)

    def build(self, v, stroke_min):
        parts, anchor, core = super().build(v, stroke_min)
        main = v["texture"]["colors"][0]
        body = parts[0].polys[0]
        top = v["top"]
        extra = []
        for side in (-1, 1):  # folds hanging from the nose, down and out
            for k, (dx, dy) in enumerate(((16.0, 26.0), (30.0, 40.0))):
                px = v["peak_x"]
                c = smooth([[px + side * (5.0 + 3 * k), top + 5.0], [px + side * (dx * 0.5 + 4), top + dy * 0.45],
                            [px + side * dx, top + dy]], closed=False)
                extra += soft_line(c, max(4.0, stroke_min), tone(main, 0.55), 0.25, clip=body)
                extra += soft_line(c - [side * 2.4, 0.0], max(2.6, stroke_min), tone(main, 1.25), 0.15, clip=body)
        return parts[:1] + extra + parts[1:], anchor, core
