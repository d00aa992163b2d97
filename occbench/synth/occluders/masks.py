"""Face masks: surgical (pleated), respirators (KN95 / N95 cup), cloth (procedural textiles).

s = 1: the outline from the YAML definition, which in the 112x112 face frame runs from the nose
bridge (just below the eyes) to under the chin and across both cheeks. Anchor: the centroid of the
nose tip and the two mouth corners (``anchor``); scaling is about that point.
"""
from __future__ import annotations

import numpy as np

from . import functional as F
from .base import (FAMILIES, TEXTURE_KINDS, Occluder, Part, choose_colour, new_seed, pick, sample_texture, smooth,
                   solid, tone, v_bool, v_number, v_palette, v_point, v_points, v_range, v_weights)
from .meshfit import MeshFit
from .style import TINT_SCHEMA, apply_tint, dashed, soft_line, soft_rim, soft_spot, tint

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


# ----------------------------------------------------------------------------- look 2
# Look 2 of the masks: more shading (soft rim, pleat and fold shadows, nose wire, highlights), colour
# jitter, and -- when the landmarks carry the 468-point mesh -- a fit that follows the face's yaw
# (meshfit.MeshFit). Look 1 (the classes above) is frozen: protocols pin it as <name>_v1.

_LOOK2_SCHEMA = {"mesh_fit": v_bool, "tint": TINT_SCHEMA}


def _soft_pleats(outline, y0: float, y1: float, n: int, rgb, stroke_min: float) -> list[Part]:
    parts = []
    for k in range(n):
        y = y0 + (y1 - y0) * (k + 0.5) / max(n, 1)
        xs = np.linspace(0.0, 112.0, 15)
        curve = np.stack([xs, y + 2.0 * ((xs - 56.0) / 56.0) ** 2], axis=1)
        parts += soft_line(curve + [0.0, 2.2], max(5.0, stroke_min), tone(rgb, 0.55), 0.32, clip=outline)
        parts += soft_line(curve - [0.0, 1.2], max(3.0, stroke_min), tone(rgb, 1.25), 0.3, clip=outline)
        parts.append(Part([F.ribbon(curve, max(0.8, stroke_min))], solid(tone(rgb, 0.6)), alpha=0.45, clip=[outline]))
    return parts


def _nose_wire(outline, rgb, stroke_min: float) -> list[Part]:
    top = outline[outline[:, 1] < np.percentile(outline[:, 1], 35)]
    top = top[(top[:, 0] > 38) & (top[:, 0] < 74)]
    top = top[np.argsort(top[:, 0])] + [0.0, 3.2]
    if len(top) < 2:
        return []
    return (soft_line(top, max(3.2, stroke_min), tone(rgb, 1.2), 0.45, clip=outline)
            + [Part([F.ribbon(top + [0.0, 1.6], max(0.8, stroke_min))], solid(tone(rgb, 0.62)), 0.4, clip=[outline])])


def _depth(outline, rgb) -> list[Part]:
    """Soft inner rim + a highlight where the mask stands off the nose and a shadow under the chin."""
    return (soft_rim(outline, 7.0, tone(rgb, 0.55), 0.35)
            + soft_spot(56.0, 74.0, 22.0, 10.0, [255, 255, 255], 0.1, clip=outline, steps=6)
            + soft_spot(56.0, 114.0, 30.0, 8.0, tone(rgb, 0.45), 0.25, clip=outline, steps=6))


@FAMILIES.register("surgical_mask_v2")
class SurgicalMask2(MeshFit, SurgicalMask):
    """Look 2: soft pleat shadows, bonded side edges, nose wire, depth shading, colour jitter, mesh fit."""

    family = "surgical_mask_v2"
    SCHEMA = {**SurgicalMask.SCHEMA, **_LOOK2_SCHEMA, "nose_wire": v_number(0.0, 1.0)}

    def sample(self, rng):
        v = super().sample(rng)
        v["colour"]["rgb"] = apply_tint(v["colour"]["rgb"], tint(rng, self.cfg["tint"]))
        v["wire"] = bool(rng.random() < self.cfg["nose_wire"])
        return v

    def build(self, v, stroke_min):
        cfg = self.cfg
        rgb = v["colour"]["rgb"]
        outline = smooth(cfg["outline"])
        parts = [Part([outline], solid(rgb), shade=_cylinder(cfg))]
        parts += _depth(outline, rgb)
        for x in (17.0, 95.0):  # bonded side edges
            edge = np.array([[x, 50.0], [x, 120.0]])
            parts.append(Part([F.ribbon(edge, max(6.0, stroke_min))], solid(tone(rgb, 0.93)), 0.5, clip=[outline]))
            parts.append(Part([F.ribbon(edge + [3.0 if x < 56 else -3.0, 0.0], max(0.7, stroke_min))],
                              solid(tone(rgb, 0.7)), 0.35, clip=[outline]))
        y0, y1 = cfg["pleat_band"]
        parts += _soft_pleats(outline, y0, y1, v["pleats"], rgb, stroke_min)
        if v["wire"]:
            parts += _nose_wire(outline, rgb, stroke_min)
        parts.append(_rim(outline, max(cfg["hem_width"], stroke_min), tone(rgb, 0.82), 0.6))
        if v["loops"]:
            parts += _loops(cfg, tone(rgb, 1.05), max(cfg["loop_width"], stroke_min))
        return parts, tuple(cfg["anchor"]), tuple(cfg["core"])


@FAMILIES.register("respirator_v2")
class Respirator2(MeshFit, Respirator):
    """Look 2: depth shading (soft rim, dome highlight, shadowed lower half), colour jitter, mesh fit."""

    family = "respirator_v2"
    SCHEMA = {**Respirator.SCHEMA, **_LOOK2_SCHEMA}

    def sample(self, rng):
        v = super().sample(rng)
        v["colour"]["rgb"] = apply_tint(v["colour"]["rgb"], tint(rng, self.cfg["tint"]))
        return v

    def build(self, v, stroke_min):
        parts, anchor, core = super().build(v, stroke_min)
        cfg = self.cfg
        rgb = v["colour"]["rgb"]
        outline = smooth(cfg["outline"] if v["style"] == "kn95" else cfg["cup_outline"])
        body = 1 if v["style"] == "kn95" else 5  # the body part (after the four straps of a cup)
        shading = (soft_rim(outline, 8.0, tone(rgb, 0.5), 0.4)
                   + soft_spot(48.0 if v["style"] == "cup" else 42.0, 76.0, 20.0, 14.0, [255, 255, 255],
                               0.14 if np.mean(rgb) > 110 else 0.06, clip=outline, steps=6)
                   + soft_spot(56.0, 112.0, 34.0, 10.0, tone(rgb, 0.45), 0.3, clip=outline, steps=6))
        if v["style"] == "kn95":  # the fold: light side and shadow side of the centre crease
            shading += soft_line(np.array([[58.5, 56.0], [58.5, 120.0]]), max(5.0, stroke_min), tone(rgb, 0.6), 0.25,
                                 clip=outline)
        return parts[:body] + shading + parts[body:], anchor, core


@FAMILIES.register("cloth_mask_v2")
class ClothMask2(MeshFit, ClothMask):
    """Look 2: textile with a visible weave and colour jitter, fitted (centre seam) or pleated, soft
    wrinkles and depth shading, stitched hem, ear loops / head ties / none."""

    family = "cloth_mask_v2"
    SCHEMA = {**ClothMask.SCHEMA, **_LOOK2_SCHEMA, "styles": v_weights(("fitted", "pleated")),
              "pleated_outline": v_points(4), "straps": v_weights(("loops", "ties", "none")),
              "tie_upper": v_points(2), "tie_lower": v_points(2), "weave": v_number(0.0, 1.0)}

    def sample(self, rng):
        cfg = self.cfg
        tex = sample_texture(rng, cfg["textures"], cfg["colours"], cfg["texture_period"],
                             angles=[0.0, 0.0, 45.0, 90.0, 30.0])
        t = tint(rng, cfg["tint"])
        tex["colors"] = [apply_tint(c, t) for c in tex["colors"]]
        return {"texture": tex, "style": pick(rng, cfg["styles"]), "straps": pick(rng, cfg["straps"]),
                "strap_contrast": bool(rng.random() < 0.3),
                "wrinkles": [[float(a), float(b), float(c)] for a, b, c in rng.uniform(-1.0, 1.0, (3, 3))],
                "weave_seed": new_seed(rng)}

    def build(self, v, stroke_min):
        cfg = self.cfg
        tex = v["texture"]
        main = tex["colors"][0]
        outline = smooth(cfg["outline"] if v["style"] == "fitted" else cfg["pleated_outline"])
        parts = [Part([outline], tex, shade=_cylinder(cfg))]
        if cfg["weave"] > 0:
            parts.append(Part([outline], {"kind": "fabric", "colors": [tone(main, 0.7), tone(main, 1.3)], "cell": 1.1,
                                          "seed": v["weave_seed"]}, alpha=cfg["weave"]))
        for k, (dy, amp, ph) in enumerate(v["wrinkles"]):  # soft horizontal wrinkles
            xs = np.linspace(8.0, 104.0, 17)
            y = 76.0 + 12.0 * k + 3.0 * dy
            curve = np.stack([xs, y + 2.5 * amp * np.sin(xs / 14.0 + 3.0 * ph) + 3.0 * ((xs - 56) / 56) ** 2], 1)
            parts += soft_line(curve, max(4.5, stroke_min), tone(main, 0.55), 0.22, clip=outline)
            parts += soft_line(curve - [0.0, 2.6], max(3.0, stroke_min), tone(main, 1.3), 0.14, clip=outline)
        if v["style"] == "fitted":
            seam = smooth([[56.0, 52.0], [55.0, 80.0], [56.0, 125.0]], closed=False)
            parts += soft_line(seam + [1.8, 0.0], max(4.0, stroke_min), tone(main, 0.5), 0.3, clip=outline)
            parts.append(Part([F.ribbon(seam, max(1.0, stroke_min))], solid(tone(main, 0.5)), 0.55, clip=[outline]))
        else:
            parts += _soft_pleats(outline, 72.0, 102.0, 3, main, stroke_min)
        parts += _depth(outline, main)
        stitches = F.offset_closed(outline, -2.6)
        parts += dashed(stitches, 2, max(0.7, stroke_min), tone(main, 1.35 if np.mean(main) < 110 else 0.6), 0.55,
                        clip=outline)
        parts.append(_rim(outline, max(2.0, stroke_min), tone(main, 0.65), 0.5))
        contrast = [235, 235, 232] if np.mean(main) < 128 else [40, 40, 44]
        strap = contrast if v["strap_contrast"] else tone(main, 0.8)
        if v["straps"] == "loops":
            parts += _loops(cfg, strap, max(cfg["loop_width"] * 1.4, stroke_min))
        elif v["straps"] == "ties":
            for key in ("tie_upper", "tie_lower"):
                band = smooth(cfg[key], closed=False)
                for pts in (band, F.mirror_x(band, 56.0)):
                    parts.append(Part([F.ribbon(pts, max(5.0, stroke_min))], {**tex, "colors": list(tex["colors"])},
                                      shade={"kind": "cylinder", "cx": 56.0, "rx": 60.0, "k": 0.35}))
        return parts, tuple(cfg["anchor"]), tuple(cfg["core"])
