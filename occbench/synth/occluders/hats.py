"""Headwear seen from the front: a baseball cap (crown + curved visor) or a wide-brim hat.

s = 1: the shapes from the YAML, shifted down by a sampled ``drop`` (face-frame y; larger = pulled
lower, towards the eyes). Anchor: the brim centre (``anchor`` + drop); scaling is about it.
"""
from __future__ import annotations

import numpy as np

from . import functional as F
from .base import (FAMILIES, Occluder, Part, choose_colour, pick, smooth, solid, tone, uniform, v_number, v_palette,
                   v_point, v_points, v_range, v_weights)


def _soft_shadow(edge: np.ndarray, depth: float, strength: float, steps: int = 4) -> list[Part]:
    """A shadow fading out below a brim edge (stacked bands; peak opacity ~``strength``)."""
    if strength <= 0:
        return []
    a = 1.0 - (1.0 - strength) ** (1.0 / steps)
    return [Part([np.vstack([edge - [0.0, 2.0], (edge + [0.0, depth * k / steps])[::-1]])], solid([20, 16, 14]),
                 alpha=a) for k in range(1, steps + 1)]


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
        d = np.array([0.0, v["drop"]])
        rgb = v["colour"]["rgb"]
        vis_rgb = v["visor_colour"]["rgb"] if v["visor_colour"] else rgb
        crown = smooth(np.asarray(cfg["crown"]) + d)
        visor = smooth(np.asarray(cfg["visor"]) + d)
        top = crown[np.argmin(crown[:, 1])]
        cyl = {"kind": "cylinder", "cx": 56.0, "rx": 60.0, "k": cfg["shading"]}
        parts = []
        # soft shadow the visor casts on the face just below it
        vb = visor[visor[:, 1] > np.median(visor[:, 1])]
        vb = vb[np.argsort(vb[:, 0])]
        parts += _soft_shadow(vb, 8.0, cfg["visor_shadow"])
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
        bb = brim[brim[:, 1] > np.median(brim[:, 1])]
        bb = bb[np.argsort(bb[:, 0])]
        parts = _soft_shadow(bb, 10.0, cfg["shadow"]) + [Part([crown], solid(rgb), shade=cyl)]
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
