"""Face masks: surgical (pleated), respirators (KN95 / N95 cup), cloth (procedural textiles).

s = 1: the outline from the YAML definition, which in the 112x112 face frame runs from the nose
bridge (just below the eyes) to under the chin and across both cheeks. Anchor: the centroid of the
nose tip and the two mouth corners (``anchor``); scaling is about that point.
"""
from __future__ import annotations

import numpy as np

from . import functional as F
from .base import (FAMILIES, TEXTURE_KINDS, Occluder, Part, choose_colour, pick, sample_texture, smooth, solid,
                   tone, v_number, v_palette, v_point, v_points, v_range, v_weights)

_SHAPE_SCHEMA = {
    "outline": v_points(4),
    "anchor": v_point,
    "core": v_point,
    "loops": v_number(0.0, 1.0),  # probability of drawing ear loops
    "loop_width": v_number(0.1, 10.0),
    "loop_upper": v_points(2),  # image-left ear loop strands (mirrored for the right side)
    "loop_lower": v_points(2),
    "shading": v_number(0.0, 0.8),  # cylindrical darkening towards the sides
}


def _loops(cfg: dict, rgb, width: float) -> list[Part]:
    cx = 56.0
    parts = []
    for key in ("loop_upper", "loop_lower"):
        strand = smooth(cfg[key], closed=False)
        for pts in (strand, F.mirror_x(strand, cx)):
            parts.append(Part([F.ribbon(pts, width)], solid(rgb), alpha=0.95))
    return parts


def _rim(outline: np.ndarray, width: float, rgb, alpha: float) -> Part:
    return Part([outline], solid(rgb), alpha=alpha, holes=[F.offset_closed(outline, -width)])


def _cylinder(cfg) -> dict:
    return {"kind": "product", "parts": [
        {"kind": "cylinder", "cx": 56.0, "rx": 46.0, "k": cfg["shading"]},
        {"kind": "vgrad", "y0": 60.0, "y1": 118.0, "a": 1.03, "b": 0.9},
    ]}


@FAMILIES.register("surgical_mask")
class SurgicalMask(Occluder):
    """Pleated disposable mask: coloured body, hem, 2-4 pleats, optional ear loops."""

    STROKE_MIN_AS_FLOOR = True  # build uses stroke_min only as max(width, stroke_min)
    family = "surgical_mask"
    SCHEMA = {**_SHAPE_SCHEMA, "colours": v_palette, "pleats": v_range(0, 6, integer=True),
              "pleat_band": v_range(0.0, 140.0), "hem_width": v_number(0.0, 10.0)}

    def sample(self, rng):
        return {"colour": choose_colour(rng, self.cfg["colours"]),
                "pleats": int(rng.integers(self.cfg["pleats"][0], self.cfg["pleats"][1] + 1)),
                "loops": bool(rng.random() < self.cfg["loops"])}

    def build(self, v, stroke_min):
        cfg = self.cfg
        rgb = v["colour"]["rgb"]
        outline = smooth(cfg["outline"])
        parts = [Part([outline], solid(rgb), shade=_cylinder(cfg))]
        hem = max(cfg["hem_width"], stroke_min)
        parts.append(_rim(outline, hem, tone(rgb, 0.86), 0.6))
        y0, y1 = cfg["pleat_band"]
        n = v["pleats"]
        for k in range(n):
            y = y0 + (y1 - y0) * (k + 0.5) / max(n, 1)
            xs = np.linspace(0.0, 112.0, 15)
            curve = np.stack([xs, y + 2.0 * ((xs - 56.0) / 56.0) ** 2], axis=1)
            w = max(1.6, stroke_min)
            parts.append(Part([F.ribbon(curve, w)], solid(tone(rgb, 0.68)), alpha=0.55, clip=[outline]))
            parts.append(Part([F.ribbon(curve - [0.0, w], w)], solid(tone(rgb, 1.12)), alpha=0.45, clip=[outline]))
        if v["loops"]:
            parts += _loops(cfg, tone(rgb, 1.05), max(cfg["loop_width"], stroke_min))
        return parts, tuple(cfg["anchor"]), tuple(cfg["core"])


@FAMILIES.register("respirator")
class Respirator(Occluder):
    """KN95 (folded, centre seam, heat-sealed rim) or N95 cup with straps, nose clip, optional valve."""

    STROKE_MIN_AS_FLOOR = True  # build uses stroke_min only as max(width, stroke_min)
    family = "respirator"
    SCHEMA = {**_SHAPE_SCHEMA, "colours": v_palette, "strap_colours": v_palette,
              "styles": v_weights(("kn95", "cup")), "cup_outline": v_points(4), "valve": v_number(0.0, 1.0),
              "valve_center": v_point, "valve_radius": v_number(1.0, 30.0),
              "strap_upper": v_points(2), "strap_lower": v_points(2)}

    def sample(self, rng):
        return {"style": pick(rng, self.cfg["styles"]),
                "colour": choose_colour(rng, self.cfg["colours"]),
                "strap": choose_colour(rng, self.cfg["strap_colours"]),
                "valve": bool(rng.random() < self.cfg["valve"]),
                "valve_side": int(rng.choice([-1, 1])),
                "loops": bool(rng.random() < self.cfg["loops"])}

    def build(self, v, stroke_min):
        cfg = self.cfg
        rgb = v["colour"]["rgb"]
        parts: list[Part] = []
        if v["style"] == "kn95":
            outline = smooth(cfg["outline"])
            parts.append(Part([outline], solid(rgb), shade={"kind": "product", "parts": [
                _cylinder(cfg), {"kind": "split", "cx": 56.0, "left": 0.93, "right": 1.0}]}))
            parts.append(_rim(outline, max(2.6, stroke_min), tone(rgb, 0.88), 0.7))
            seam = np.array([[56.0, 50.0], [56.0, 125.0]])
            parts.append(Part([F.ribbon(seam, max(1.2, stroke_min))], solid(tone(rgb, 0.72)), 0.6, clip=[outline]))
            if v["loops"]:
                parts += _loops(cfg, tone(rgb, 1.02), max(cfg["loop_width"], stroke_min))
        else:
            outline = smooth(cfg["cup_outline"])
            for key in ("strap_upper", "strap_lower"):
                strand = smooth(cfg[key], closed=False)
                for pts in (strand, F.mirror_x(strand, 56.0)):
                    parts.append(Part([F.ribbon(pts, max(2.2, stroke_min))], solid(v["strap"]["rgb"])))
            parts.append(Part([outline], solid(rgb), shade=_cylinder(cfg)))
            parts.append(_rim(outline, max(2.0, stroke_min), tone(rgb, 0.85), 0.6))
            clip = smooth([[42, 61], [56, 58.5], [70, 61]], closed=False)
            parts.append(Part([F.ribbon(clip + [0, 3.0], max(2.4, stroke_min))], solid([176, 180, 186]), 0.95))
        if v["valve"]:
            cx, cy = cfg["valve_center"]
            cx = 56.0 + v["valve_side"] * (cx - 56.0)
            r = cfg["valve_radius"]
            body = F.ellipse(cx, cy, r, r * 0.92)
            vc = tone(rgb, 0.8) if np.mean(rgb) > 120 else tone([200, 200, 200], 0.9)
            parts.append(Part([body], solid(vc), shade={"kind": "vgrad", "y0": cy - r, "y1": cy + r, "a": 1.1,
                                                        "b": 0.8}))
            for k in range(3):
                slot = np.array([[cx - r * 0.55, cy - r * 0.35 + k * r * 0.35], [cx + r * 0.55, cy - r * 0.35 + k * r * 0.35]])
                parts.append(Part([F.ribbon(slot, max(r * 0.12, stroke_min))], solid(tone(vc, 0.6)), 0.8))
        return parts, tuple(cfg["anchor"]), tuple(cfg["core"])


@FAMILIES.register("cloth_mask")
class ClothMask(Occluder):
    """Fitted fabric mask with a centre seam and a procedural textile (stripes/checks/dots/plaid/fabric)."""

    STROKE_MIN_AS_FLOOR = True  # build uses stroke_min only as max(width, stroke_min)
    family = "cloth_mask"
    SCHEMA = {**_SHAPE_SCHEMA, "colours": v_palette, "textures": v_weights(TEXTURE_KINDS),
              "texture_period": v_range(0.5, 60.0)}

    def sample(self, rng):
        return {"texture": sample_texture(rng, self.cfg["textures"], self.cfg["colours"],
                                          self.cfg["texture_period"], angles=[0.0, 0.0, 45.0, 90.0]),
                "loops": bool(rng.random() < self.cfg["loops"])}

    def build(self, v, stroke_min):
        cfg = self.cfg
        tex = v["texture"]
        main = tex["colors"][0]
        outline = smooth(cfg["outline"])
        parts = [Part([outline], tex, shade=_cylinder(cfg)),
                 _rim(outline, max(2.2, stroke_min), tone(main, 0.7), 0.45)]
        seam = smooth([[56.0, 52.0], [55.0, 80.0], [56.0, 125.0]], closed=False)
        parts.append(Part([F.ribbon(seam, max(1.0, stroke_min))], solid(tone(main, 0.55)), 0.5, clip=[outline]))
        if v["loops"]:
            parts += _loops(cfg, tone(main, 0.8), max(cfg["loop_width"], stroke_min))
        return parts, tuple(cfg["anchor"]), tuple(cfg["core"])
