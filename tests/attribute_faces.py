"""Faces labelled by what occbench put on them (attribute tests): a seeded coin per key decides whether
a face wears occbench's surgical mask and / or sunglasses."""
from __future__ import annotations

from functools import lru_cache

import numpy as np


def template():
    """The ArcFace 112 template landmarks (aligned crops are in this frame)."""
    from occbench.face.geometry import ARCFACE_112, FaceLandmarks

    return FaceLandmarks(ARCFACE_112.copy(), source="template")


@lru_cache(maxsize=None)
def _occluders():
    from occbench.synth.occluders import create_occluder

    return create_occluder("surgical_mask"), create_occluder("sunglasses")


def dress(crop: np.ndarray, key, salt: str) -> tuple[np.ndarray, bool, bool]:
    """(crop, wears_mask, wears_sunglasses): each occluder drawn on the aligned ``crop`` with probability
    1/2 by ``rng_for(0, salt, key)``; their pixels seeded by ``key``."""
    from occbench.seeding import rng_for

    mask, glasses = _occluders()
    tl = template()
    rng = rng_for(0, salt, key)
    wm, ws = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    if wm:
        crop = mask(crop, tl, rng=rng_for(1, key)).image
    if ws:
        crop = glasses(crop, tl, rng=rng_for(2, key)).image
    return crop, wm, ws


def aligned_lfw(files):
    """(file, aligned 112 x 112 crop) of each image file mediapipe finds a face in, in order."""
    from occbench.face.geometry import align
    from occbench.face.landmarks import create_landmarker
    from occbench.io.images import read_rgb

    with create_landmarker("mediapipe") as lm:
        for f in files:
            r = lm.detect(read_rgb(f))
            if not r.ok:
                continue
            crop, _ = align(read_rgb(f), r.landmarks.five)
            yield f, crop
