"""Sunglasses and eyeglasses: two lenses centred on the eyes, rims, bridge and temple arms.

s = 1: lens shapes from the YAML, centred ``lens_offset`` from each ArcFace eye point; the
image-right lens mirrors the image-left one about the eyes' midline. Anchor: the midpoint of the
two eyes (scaling about it). Sunglass lenses are opaque or dark-tinted (alpha >= ``lens_alpha``
low bound, >= 0.5, so counted as occluded); eyeglass lenses are see-through (alpha < 0.5), so
only the frame counts as occluded.
"""
from __future__ import annotations

import numpy as np

from ...errors import ConfigError
from ...face.geometry import ARCFACE_112
from . import functional as F
from .base import (FAMILIES, Occluder, Part, choose_colour, pick, smooth, solid, tone, uniform, v_dict, v_number,
                   v_palette, v_point, v_points, v_range, v_weights)

LEFT_EYE = ARCFACE_112[0]
RIGHT_EYE = ARCFACE_112[1]
MID_X = float((LEFT_EYE[0] + RIGHT_EYE[0]) / 2)
MID_Y = float((LEFT_EYE[1] + RIGHT_EYE[1]) / 2)


def _lens_schema(name, key, val):
    return v_dict({"points": v_points(4), "bridge_y": v_number(-40, 40), "temple_y": v_number(-40, 40)})(name, key, val)


class _Glasses(Occluder):
    STROKE_MIN_AS_FLOOR = True  # build uses stroke_min only as max(width, stroke_min)
    SCHEMA = {
        "styles": v_weights(),
        "shapes": lambda n, k, val: {s: _lens_schema(n, f"{k}.{s}", spec) for s, spec in _mapping(n, k, val).items()},
        "lens_offset": v_point,  # lens centre relative to the eye point (image-left lens)
        "frame_width": v_range(0.2, 10.0),
        "temple_to_x": v_number(-60.0, 60.0),  # where the image-left temple arm ends (frame x)
        "frame_colours": v_palette,
        "lens_colours": v_palette,
        "lens_alpha": v_range(0.0, 1.0),
        "highlight": v_number(0.0, 1.0),  # opacity of a specular streak on the lenses
    }

    def check_config(self):
        missing = [s for s in self.cfg["styles"] if s not in self.cfg["shapes"]]
        if missing:
            raise ConfigError(f"occluder {self.name!r}: styles {missing} have no entry in shapes")

    def sample(self, rng):
        return {"style": pick(rng, self.cfg["styles"]),
                "frame": choose_colour(rng, self.cfg["frame_colours"]),
                "lens": choose_colour(rng, self.cfg["lens_colours"]),
                "lens_alpha": uniform(rng, self.cfg["lens_alpha"]),
                "frame_width": uniform(rng, self.cfg["frame_width"])}

    def build(self, v, stroke_min):
        cfg = self.cfg
        shape = cfg["shapes"][v["style"]]
        fw = max(v["frame_width"], stroke_min)
        c = LEFT_EYE + np.asarray(cfg["lens_offset"])
        lens_l = smooth(np.asarray(shape["points"]) + c, samples=10)
        lens_r = F.mirror_x(lens_l, MID_X)[::-1]
        frame_rgb = v["frame"]["rgb"]
        lens_rgb = v["lens"]["rgb"]
        parts: list[Part] = []
        # temple arms, drawn first (behind the rims)
        ty = c[1] + shape["temple_y"]
        outer_x = float(lens_l[:, 0].min())
        arm = np.array([[outer_x + 2.0, ty], [(outer_x + cfg["temple_to_x"]) / 2, ty + 0.5], [cfg["temple_to_x"], ty + 2.5]])
        for pts in (arm, F.mirror_x(arm, MID_X)):
            parts.append(Part([F.ribbon(pts, max(fw * 1.1, stroke_min))], solid(tone(frame_rgb, 0.85))))
        for lens in (lens_l, lens_r):
            cy = float(lens[:, 1].mean())
            parts.append(Part([lens], solid(lens_rgb), alpha=v["lens_alpha"],
                              shade={"kind": "vgrad", "y0": cy - 10, "y1": cy + 10, "a": 0.8, "b": 1.15}))
            if cfg["highlight"] > 0:
                x0, x1 = float(lens[:, 0].min()), float(lens[:, 0].max())
                y0, y1 = float(lens[:, 1].min()), float(lens[:, 1].max())
                streak = np.array([[x0 + 0.55 * (x1 - x0), y0], [x0 + 0.75 * (x1 - x0), y0],
                                   [x0 + 0.35 * (x1 - x0), y1], [x0 + 0.15 * (x1 - x0), y1]])
                parts.append(Part([streak], solid([255, 255, 255]), alpha=cfg["highlight"], clip=[lens]))
            parts.append(Part([F.offset_closed(lens, fw / 2)], solid(frame_rgb), holes=[F.offset_closed(lens, -fw / 2)],
                              shade={"kind": "vgrad", "y0": cy - 12, "y1": cy + 12, "a": 1.15, "b": 0.8}))
        # bridge between the inner top corners of the lenses
        by = c[1] + shape["bridge_y"]
        inner_x = float(lens_l[:, 0].max())
        bridge = smooth([[inner_x - 1.0, by], [MID_X, by - 2.0], [2 * MID_X - inner_x + 1.0, by]], closed=False)
        parts.append(Part([F.ribbon(bridge, max(fw * 1.1, stroke_min))], solid(frame_rgb)))
        core = (MID_X, float(bridge[len(bridge) // 2, 1]))
        return parts, (MID_X, MID_Y), core


def _mapping(name, key, val):
    if not isinstance(val, dict) or not val:
        raise ConfigError(f"occluder {name!r}: {key} must be a non-empty mapping")
    return val


@FAMILIES.register("sunglasses")
class Sunglasses(_Glasses):
    family = "sunglasses"

    def check_config(self):
        super().check_config()
        if self.cfg["lens_alpha"][0] < 0.5:
            raise ConfigError(f"occluder {self.name!r}: sunglass lens_alpha must be >= 0.5 (occluded); "
                              "use the eyeglasses family for see-through lenses")


@FAMILIES.register("eyeglasses")
class Eyeglasses(_Glasses):
    family = "eyeglasses"

    def check_config(self):
        super().check_config()
        if self.cfg["lens_alpha"][1] >= 0.5:
            raise ConfigError(f"occluder {self.name!r}: eyeglass lens_alpha must stay < 0.5 so only the frame "
                              "counts as occluded (alpha >= 0.5 -> occluded)")
