"""A hand held over the face: palm, four fingers, thumb and wrist, in a sampled skin tone and pose.

The hand is modelled in its own coordinates (palm centre at the origin, fingers pointing up, units
= face-frame pixels); a pose (from ``poses``) places the palm centre at a face-frame point, rotates
it and may mirror it. s = 1: the hand at the definition's size (palm ~``palm_width`` frame px wide,
adult hand vs a ~80 px wide face). Anchor: the pose's palm-centre point (scaling about it).
"""
from __future__ import annotations

import math

import numpy as np

from ...errors import ConfigError
from ...face import geometry
from . import functional as F
from .base import (FAMILIES, Occluder, Part, choose_colour, new_seed, pick, smooth, solid, tone, toward, uniform, v_dict,
                   v_number, v_palette, v_point, v_points, v_range)
from .style import TINT_SCHEMA, apply_tint, tint


def _poses(name, key, val):
    if not isinstance(val, dict) or not val:
        raise ConfigError(f"occluder {name!r}: {key} must map pose names to definitions")
    schema = {"weight": v_number(0.0), "center": v_point, "angle": v_range(-360.0, 360.0),
              "mirror": v_number(0.0, 1.0)}
    out = {k: v_dict(schema)(name, f"{key}.{k}", p) for k, p in val.items()}
    if sum(p["weight"] for p in out.values()) <= 0:
        raise ConfigError(f"occluder {name!r}: {key} needs a pose with weight > 0")
    return out


def _fingers(name, key, val):
    if not isinstance(val, list) or not val:
        raise ConfigError(f"occluder {name!r}: {key} must be a list of fingers")
    schema = {"base": v_point, "length": v_number(1.0, 200.0), "width": v_number(1.0, 60.0),
              "angle": v_number(-180.0, 180.0)}
    return [v_dict(schema)(name, f"{key}[{i}]", f) for i, f in enumerate(val)]


@FAMILIES.register("hand")
class Hand(Occluder):
    STROKE_MIN_AS_FLOOR = True  # build uses stroke_min only as max(width, stroke_min)
    family = "hand"
    SCHEMA = {"skin_tones": v_palette, "palm": v_points(4), "fingers": _fingers, "thumb": v_dict(
        {"base": v_point, "tip": v_point, "width": v_number(1.0, 60.0)}), "wrist": v_dict(
        {"width": v_number(1.0, 100.0), "length": v_number(1.0, 300.0)}), "poses": _poses,
        "finger_curl": v_range(0.0, 30.0), "shading": v_number(0.0, 0.8), "match_skin": v_number(0.0, 1.0),
        "skin_probe": v_points(1)}

    def sample(self, rng):
        cfg = self.cfg
        pose_name = pick(rng, {k: p["weight"] for k, p in cfg["poses"].items()})
        pose = cfg["poses"][pose_name]
        skin = choose_colour(rng, cfg["skin_tones"])
        skin["match_face"] = bool(rng.random() < cfg["match_skin"])
        return {"skin": skin, "pose": pose_name, "skin_seed": new_seed(rng),
                "angle": uniform(rng, pose["angle"]), "mirror": bool(rng.random() < pose["mirror"]),
                "spread": [float(x) for x in rng.uniform(-4.0, 4.0, size=len(cfg["fingers"]))],
                "curl": uniform(rng, cfg["finger_curl"])}

    def resolve_vars(self, v, params, image):
        """With skin.match_face, paint the hand in the face's own skin tone: the median colour of
        small patches at ``skin_probe`` face-frame points (palette tone if the image is not given)."""
        if not v["skin"].get("match_face") or image is None:
            return v
        m = geometry.invert_affine(geometry.face_frame_transform(np.asarray(params["landmarks_five"])))
        h, w = image.shape[:2]
        r = max(1, int(round(2.5 * params["px_per_unit"])))
        patches = []
        for x, y in F.transform(m, self.cfg["skin_probe"]):
            xi, yi = int(round(x)), int(round(y))
            if 0 <= xi < w and 0 <= yi < h:
                patches.append(image[max(yi - r, 0):yi + r + 1, max(xi - r, 0):xi + r + 1].reshape(-1, 3))
        if not patches:
            return v
        med = np.median(np.vstack(patches).astype(np.float64), axis=0)
        out = dict(v)
        out["skin"] = {**v["skin"], "rgb": [float(c) for c in med]}
        return out

    def build(self, v, stroke_min):
        cfg = self.cfg
        skin = v["skin"]["rgb"]
        pose = cfg["poses"][v["pose"]]
        a = math.radians(v["angle"])
        r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        sx = -1.0 if v["mirror"] else 1.0
        center = np.asarray(pose["center"], np.float64)

        def place(pts):
            p = np.asarray(pts, np.float64).reshape(-1, 2) * (sx, 1.0)
            return p @ r.T + center

        shade = {"kind": "cylinder", "cx": float(center[0]), "rx": 60.0, "k": cfg["shading"]}
        edge = tone(skin, 0.72)
        parts: list[Part] = []
        w = cfg["wrist"]
        wrist = F.capsule([0.0, 20.0], [0.0, 20.0 + w["length"]], w["width"])
        palm = smooth(cfg["palm"])
        skin_fill = {"kind": "mottle", "colors": [tone(skin, 1.03), tone(skin, 0.9)], "cell": 10.0,
                     "seed": v["skin_seed"]}
        parts.append(Part([place(wrist), place(palm)], skin_fill, shade=shade))
        t = cfg["thumb"]
        thumb = F.capsule(t["base"], t["tip"], t["width"])
        fingers = []
        for f, spread in zip(cfg["fingers"], v["spread"]):
            ang = math.radians(f["angle"] + spread)
            base = np.asarray(f["base"], np.float64)
            length = f["length"] * (1.0 - v["curl"] / 100.0)
            tip = base + length * np.array([math.sin(ang), -math.cos(ang)])
            fingers.append((F.capsule(base, tip, f["width"]), tip, ang, f["width"]))
        # fingers (outer first so neighbours overlap naturally), each with a darker outline
        for cap, tip, ang, fw in fingers + [(thumb, np.asarray(t["tip"]), 0.0, t["width"])]:
            poly = place(cap)
            parts.append(Part([poly], skin_fill, shade=shade))
            parts.append(Part([poly], solid(edge), alpha=0.55, holes=[place(F.offset_closed(cap, -max(0.9, stroke_min)))]))
        for cap, tip, ang, fw in fingers:
            nail_c = tip - 0.28 * fw * np.array([math.sin(ang), -math.cos(ang)])
            nail = F.ellipse(nail_c[0], nail_c[1], fw * 0.26, fw * 0.34, math.degrees(ang))
            parts.append(Part([place(nail)], solid(toward(skin, [250, 220, 214], 0.35)), alpha=0.35))
        # knuckle creases across the fingers' bases
        xs = [float(np.asarray(f["base"])[0]) for f in cfg["fingers"]]
        crease = np.array([[min(xs) - 3, cfg["fingers"][0]["base"][1] - 9.0],
                           [max(xs) + 3, cfg["fingers"][-1]["base"][1] - 9.0]])
        parts.append(Part([place(F.ribbon(crease, max(1.0, stroke_min)))], solid(edge), alpha=0.25,
                          clip=[place(c) for c, *_ in fingers]))
        return parts, tuple(center), tuple(center)


@FAMILIES.register("hand_v2")
class Hand2(Hand):
    """Look 2: a realistic range of skin tones with a per-image jitter (the face's own tone less often),
    and poses that enter from the bottom, the left or the right (``flip`` mirrors a pose about the
    face's midline, so every side pose also enters from the other side)."""

    family = "hand_v2"
    SCHEMA = {**Hand.SCHEMA, "tint": TINT_SCHEMA, "flip": v_number(0.0, 1.0)}

    def sample(self, rng):
        v = super().sample(rng)
        v["skin"]["rgb"] = apply_tint(v["skin"]["rgb"], tint(rng, self.cfg["tint"]))
        v["flip"] = bool(rng.random() < self.cfg["flip"])
        return v

    def build(self, v, stroke_min):
        parts, anchor, core = super().build(v, stroke_min)
        if not v["flip"]:
            return parts, anchor, core
        flip = {}  # shared polygons (a part's clip is another part's body) stay shared

        def m(p):
            if id(p) not in flip:
                flip[id(p)] = F.mirror_x(p, 56.0)
            return flip[id(p)]

        out = [Part([m(p) for p in q.polys], q.fill, q.alpha, [m(p) for p in q.holes], _flip_shade(q.shade),
                    [m(p) for p in q.clip]) for q in parts]
        return out, (112.0 - anchor[0], anchor[1]), (112.0 - core[0], core[1])


def _flip_shade(shade):
    if not shade or shade.get("kind") != "cylinder":
        return shade
    return {**shade, "cx": 112.0 - shade["cx"]}
