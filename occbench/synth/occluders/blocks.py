"""Random rectangular blocks (the classic synthetic occlusion): solid colour, noise, or a texture.

s = 1: a rectangle of area ``size``^2 (face-frame px) with aspect ratio w/h drawn log-uniformly from
``aspect``, axis-aligned in the face frame. Anchored: centred on a face region drawn from
``regions``; free: centred uniformly over the face frame (FROM). Anchor = the block centre.
"""
from __future__ import annotations

import math

import numpy as np

from ...errors import ConfigError
from .base import (FAMILIES, TEXTURE_KINDS, Occluder, Part, pick, new_seed, sample_texture, v_number, v_palette,
                   v_point, v_range, v_weights)


def _regions(name, key, val):
    if not isinstance(val, dict) or not val:
        raise ConfigError(f"occluder {name!r}: {key} must map region names to {{center, weight}}")
    out = {}
    for k, r in val.items():
        if not isinstance(r, dict) or set(r) != {"center", "weight"}:
            raise ConfigError(f"occluder {name!r}: {key}.{k} needs exactly 'center' and 'weight'")
        out[k] = {"center": v_point(name, f"{key}.{k}.center", r["center"]),
                  "weight": v_number(0.0)(name, f"{key}.{k}.weight", r["weight"])}
    if sum(r["weight"] for r in out.values()) <= 0:
        raise ConfigError(f"occluder {name!r}: {key} needs a region with weight > 0")
    return out


class _Block(Occluder):
    STROKE_MIN_AS_FLOOR = True  # build uses stroke_min only as max(width, stroke_min)
    SCHEMA = {"size": v_number(1.0, 500.0), "aspect": v_range(0.05, 20.0), "regions": _regions}

    def sample_fill(self, rng) -> dict:
        raise NotImplementedError

    def sample(self, rng):
        lo, hi = self.cfg["aspect"]
        aspect = math.exp(rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
        region = pick(rng, {k: r["weight"] for k, r in self.cfg["regions"].items()})
        return {"aspect": float(aspect), "region": region, "fill": self.sample_fill(rng)}

    def build(self, v, stroke_min):
        size = self.cfg["size"]
        w, h = size * math.sqrt(v["aspect"]), size / math.sqrt(v["aspect"])
        cx, cy = self.cfg["regions"][v["region"]]["center"]
        rect = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2], [cx + w / 2, cy + h / 2],
                         [cx - w / 2, cy + h / 2]])
        return [Part([rect], v["fill"])], (cx, cy), (cx, cy)


@FAMILIES.register("block_solid")
class SolidBlock(_Block):
    """One flat colour: uniformly random RGB (``random_colour`` probability) or from ``colours``."""

    family = "block_solid"
    SCHEMA = {**_Block.SCHEMA, "colours": v_palette, "random_colour": v_number(0.0, 1.0)}

    def sample_fill(self, rng):
        if rng.random() < self.cfg["random_colour"]:
            rgb = [float(c) for c in rng.integers(0, 256, size=3)]
        else:
            names = list(self.cfg["colours"])
            rgb = [float(c) for c in self.cfg["colours"][names[int(rng.integers(len(names)))]]]
        return {"kind": "solid", "rgb": rgb}


@FAMILIES.register("block_noise")
class NoiseBlock(_Block):
    """Uniform RGB noise, one random colour per ``cell`` x ``cell`` face-frame px."""

    family = "block_noise"
    SCHEMA = {**_Block.SCHEMA, "cell": v_number(0.05, 50.0)}

    def sample_fill(self, rng):
        return {"kind": "noise", "seed": new_seed(rng), "cell": self.cfg["cell"]}


@FAMILIES.register("block_texture")
class TextureBlock(_Block):
    """A procedural texture (stripes, checks, plaid, dots, fabric, knit) in random palette colours."""

    family = "block_texture"
    SCHEMA = {**_Block.SCHEMA, "colours": v_palette, "textures": v_weights(TEXTURE_KINDS),
              "texture_period": v_range(0.5, 60.0)}

    def sample_fill(self, rng):
        return sample_texture(rng, self.cfg["textures"], self.cfg["colours"], self.cfg["texture_period"],
                              angles=[0.0, 30.0, 45.0, 90.0, 135.0])
