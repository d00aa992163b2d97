"""Headwear seen from the front: a baseball cap (crown + curved visor) or a wide-brim hat.

s = 1: the shapes from the YAML, shifted down by a sampled ``drop`` (face-frame y; larger = pulled
lower, towards the eyes). Anchor: the brim centre (``anchor`` + drop); scaling is about it.
"""
from __future__ import annotations

import numpy as np

from . import functional as F
from .base import (FAMILIES, Occluder, Part, choose_colour, pick, smooth, solid, tone, uniform, v_number, v_palette,
                   v_point, v_points, v_range, v_weights)
from .style import soft_line


def _soft_shadow(edge: np.ndarray, depth: float, strength: float, steps: int = 4) -> list[Part]:
    """A shadow fading out below a brim edge (stacked bands; peak opacity ~``strength``)."""
    if strength <= 0:
        return []
    a = 1.0 - (1.0 - strength) ** (1.0 / steps)
    return [Part([np.vstack([edge - [0.0, 2.0], (edge + [0.0, depth * k / steps])[::-1]])], solid([20, 16, 14]),
                 alpha=a) for k in range(1, steps + 1)]


def _lower_edge(shape: np.ndarray) -> np.ndarray:
    """The points of ``shape`` below its median y, left to right (where a brim casts its shadow)."""
    low = shape[shape[:, 1] > np.median(shape[:, 1])]
    return low[np.argsort(low[:, 0])]


def _cap_shapes(cfg: dict, v: dict):
    """(drop offset, colour, visor colour, crown, visor, crown top) of a sampled cap."""
    d = np.array([0.0, v["drop"]])
    rgb = v["colour"]["rgb"]
    vis_rgb = v["visor_colour"]["rgb"] if v["visor_colour"] else rgb
    crown = smooth(np.asarray(cfg["crown"]) + d)
    visor = smooth(np.asarray(cfg["visor"]) + d)
    return d, rgb, vis_rgb, crown, visor, crown[np.argmin(crown[:, 1])]


@FAMILIES.register("cap")
class Cap(Occluder):
    """Baseball cap: panelled crown, button, visor whose lower edge reaches the brows/eyes."""

    STROKE_MIN_AS_FLOOR = True  # build uses stroke_min only as max(width, stroke_min)
    family = "cap"
    SCHEMA = {"crown": v_points(4), "visor": v_points(4), "anchor": v_point, "drop": v_range(-40.0, 40.0),
              "colours": v_palette, "visor_shadow": v_number(0.0, 1.0), "shading": v_number(0.0, 0.8)}

    def sample(self, rng):
        return {"colour": choose_colour(rng, self.cfg["colours"]),
                "visor_colour": choose_colour(rng, self.cfg["colours"]) if rng.random() < 0.3 else None,
                "drop": uniform(rng, self.cfg["drop"])}

    def build(self, v, stroke_min):
        cfg = self.cfg
        d, rgb, vis_rgb, crown, visor, top = _cap_shapes(cfg, v)
        cyl = {"kind": "cylinder", "cx": 56.0, "rx": 60.0, "k": cfg["shading"]}
        parts = []
        # soft shadow the visor casts on the face just below it
        parts += _soft_shadow(_lower_edge(visor), 8.0, cfg["visor_shadow"])
        parts.append(Part([crown], solid(rgb), shade={"kind": "product", "parts": [
            cyl, {"kind": "vgrad", "y0": float(top[1]), "y1": float(crown[:, 1].max()), "a": 1.1, "b": 0.9}]}))
        base_y = float(np.percentile(crown[:, 1], 90))
        for x in (30.0, 82.0):
            seam = smooth([[top[0], top[1] + 2], [(top[0] + x) / 2, (top[1] + base_y) / 2 - 2], [x, base_y]],
                          closed=False)
            parts.append(Part([F.ribbon(seam, max(1.0, stroke_min))], solid(tone(rgb, 0.65)), 0.55, clip=[crown]))
        parts.append(Part([F.ellipse(top[0], top[1] + 3.5, 4.0, 2.6)], solid(tone(rgb, 0.85))))
        parts.append(Part([visor], solid(tone(vis_rgb, 0.92)), shade={"kind": "vgrad", "y0": float(visor[:, 1].min()),
                                                                       "y1": float(visor[:, 1].max()), "a": 0.8,
                                                                       "b": 1.05}))
        parts.append(Part([visor], solid(tone(vis_rgb, 0.6)), 0.5, holes=[F.offset_closed(visor, -max(1.4, stroke_min))]))
        anchor = np.asarray(cfg["anchor"]) + d
        return parts, tuple(anchor), tuple(anchor - [0.0, 12.0])


@FAMILIES.register("hat")
class Hat(Occluder):
    """Wide-brim hat (fedora / sun hat): crown with a band, brim as a flat ellipse across the forehead."""

    STROKE_MIN_AS_FLOOR = True  # build uses stroke_min only as max(width, stroke_min)
    family = "hat"
    SCHEMA = {"crown": v_points(4), "brim": v_points(4), "band": v_range(0.0, 30.0), "anchor": v_point,
              "drop": v_range(-40.0, 40.0), "colours": v_palette, "band_colours": v_palette,
              "shadow": v_number(0.0, 1.0), "shading": v_number(0.0, 0.8), "styles": v_weights(("banded", "plain"))}

    def sample(self, rng):
        return {"colour": choose_colour(rng, self.cfg["colours"]),
                "band_colour": choose_colour(rng, self.cfg["band_colours"]),
                "style": pick(rng, self.cfg["styles"]), "drop": uniform(rng, self.cfg["drop"])}

    def build(self, v, stroke_min):
        cfg = self.cfg
        d = np.array([0.0, v["drop"]])
        rgb = v["colour"]["rgb"]
        crown = smooth(np.asarray(cfg["crown"]) + d)
        brim = smooth(np.asarray(cfg["brim"]) + d)
        cyl = {"kind": "cylinder", "cx": 56.0, "rx": 70.0, "k": cfg["shading"]}
        parts = _soft_shadow(_lower_edge(brim), 10.0, cfg["shadow"]) + [Part([crown], solid(rgb), shade=cyl)]
        if v["style"] == "banded":
            y0 = float(crown[:, 1].max()) - cfg["band"][1]
            y1 = float(crown[:, 1].max()) - cfg["band"][0]
            band = np.array([[-20.0, y0], [132.0, y0], [132.0, y1], [-20.0, y1]])
            parts.append(Part([band], solid(v["band_colour"]["rgb"]), clip=[crown], shade=cyl))
        parts.append(Part([brim], solid(tone(rgb, 0.95)), shade={"kind": "vgrad", "y0": float(brim[:, 1].min()),
                                                                 "y1": float(brim[:, 1].max()), "a": 1.1, "b": 0.8}))
        parts.append(Part([brim], solid(tone(rgb, 0.65)), 0.45, holes=[F.offset_closed(brim, -max(1.2, stroke_min))]))
        anchor = np.asarray(cfg["anchor"]) + d
        return parts, tuple(anchor), tuple(anchor - [0.0, 14.0])


@FAMILIES.register("cap_v2")
class Cap2(Cap):
    """Look 2: reads as a baseball cap: a low dome crown fitted to the head (six panels: the front seam
    and two side seams meet at the button, eyelets), a crescent visor narrower than the crown with its
    underside and rows of stitching, an optional front patch and two-tone front panels."""

    family = "cap_v2"
    SCHEMA = {**Cap.SCHEMA, "logo": v_number(0.0, 1.0), "two_tone": v_number(0.0, 1.0),
              "stitch_rows": v_range(0, 6, integer=True)}

    def sample(self, rng):
        v = super().sample(rng)
        cfg = self.cfg
        v["front_colour"] = choose_colour(rng, cfg["colours"]) if rng.random() < cfg["two_tone"] else None
        v["logo"] = choose_colour(rng, cfg["colours"]) if rng.random() < cfg["logo"] else None
        v["logo_shape"] = pick(rng, {"oval": 1.0, "patch": 1.0})
        v["stitch_rows"] = int(rng.integers(cfg["stitch_rows"][0], cfg["stitch_rows"][1] + 1))
        return v

    def build(self, v, stroke_min):
        cfg = self.cfg
        d, rgb, vis_rgb, crown, visor, top = _cap_shapes(cfg, v)
        base_y = float(np.percentile(crown[:, 1], 90))
        cyl = {"kind": "cylinder", "cx": 56.0, "rx": 56.0, "k": cfg["shading"]}
        dome = {"kind": "product", "parts": [cyl, {"kind": "vgrad", "y0": float(top[1]), "y1": base_y, "a": 1.12,
                                                   "b": 0.92}]}
        parts = []
        parts += _soft_shadow(_lower_edge(visor), 14.0, cfg["visor_shadow"], steps=6)
        parts.append(Part([crown], solid(rgb), shade=dome))
        seam_l = smooth([[top[0] - 1, top[1] + 2], [34.0, 8.0 + d[1]], [22.0, base_y]], closed=False)
        seam_r = F.mirror_x(seam_l, 56.0)
        if v["front_colour"]:  # front panels between the side seams
            front = np.vstack([seam_l, np.array([[40.0, base_y + 1], [72.0, base_y + 1]]), seam_r[::-1]])
            parts.append(Part([front], solid(v["front_colour"]["rgb"]), clip=[crown], shade=dome))
        for seam in (seam_l, seam_r, np.array([[56.0, top[1] + 2], [56.0, base_y]])):
            parts += soft_line(seam, max(2.4, stroke_min), tone(rgb, 0.55), 0.35, clip=crown)
            parts.append(Part([F.ribbon(seam, max(0.7, stroke_min))], solid(tone(rgb, 0.5)), 0.6, clip=[crown]))
        for ex in (36.0, 76.0):  # eyelets
            parts.append(Part([F.ellipse(ex, 6.0 + d[1], 1.6, 1.2)], solid(tone(rgb, 0.35)), 0.9))
        if v["logo"]:
            lc = v["logo"]["rgb"] if v["logo"]["rgb"] != list(rgb) else tone(rgb, 1.6 if np.mean(rgb) < 128 else 0.4)
            cy = (top[1] + base_y) / 2 + 3.0
            shape = F.ellipse(56.0, cy, 11.0, 6.5) if v["logo_shape"] == "oval" else \
                smooth([[45, cy - 6], [67, cy - 6], [67.5, cy + 6], [44.5, cy + 6]])
            parts.append(Part([shape], solid(lc), shade=dome))
            parts.append(Part([F.ribbon(np.array([[49.0, cy], [63.0, cy]]), max(2.0, stroke_min))],
                              solid(tone(lc, 0.45)), 0.7))
        parts.append(Part([F.ellipse(top[0], top[1] + 2.5, 3.6, 2.2)], solid(tone(rgb, 0.8))))  # button
        # visor: top surface, then the darker underside along its front edge, then stitching rows
        parts.append(Part([visor], solid(tone(vis_rgb, 0.95)), shade={"kind": "vgrad", "y0": float(visor[:, 1].min()),
                                                                       "y1": float(visor[:, 1].max()), "a": 1.08,
                                                                       "b": 0.85}))
        under = F.offset_closed(visor, 0.0)
        lower = under[under[:, 1] > np.percentile(under[:, 1], 45)]
        lower = lower[np.argsort(lower[:, 0])]
        parts += soft_line(lower - [0.0, 2.0], max(8.0, stroke_min), tone(vis_rgb, 0.4), 0.65, clip=visor)
        for k in range(v["stitch_rows"]):
            row = lower - [0.0, 5.0 + 2.2 * k]
            parts.append(Part([F.ribbon(row, max(0.5, stroke_min))], solid(tone(vis_rgb, 0.6)), 0.45, clip=[visor]))
        rim = F.offset_closed(visor, -max(1.2, stroke_min))
        parts.append(Part([visor], solid(tone(vis_rgb, 0.55)), 0.5, holes=[rim]))
        anchor = np.asarray(cfg["anchor"]) + d
        return parts, tuple(anchor), tuple(anchor - [0.0, 14.0])
