"""Occlusion ground truth in the *model's* frame (issue 10 §2).

Three frames are involved:

- **image frame**: the synthesized mask PNG (255 = occluded), same size as the occluded image;
- **face frame** (the manifest's ``area_frac``, ``cells``, ``pattern``): the canonical 112x112
  ArcFace frame, reached by ``face_frame_transform(five)`` from the synth landmarks, mask warped
  bilinearly and thresholded at 128;
- **model frame** (here): the recognizer's own aligned crop, reached by the *same* 2x3 matrix M
  (``recognizer.alignment_transform`` on the clean image) that produced the crop the model saw,
  then reduced to the model's output grid (h, w).

The two differ whenever the recognizer's crop is not the arcface 112x112 template on the synth
landmarks: a 112x96 crop (shifted 8 px, pattern cells 19-20 px wide instead of 22-23), dlib's
150x150 chip (another scale and its own detector alignment), any other template. For an arcface112
recognizer on the same landmarks the frames coincide and labels agree up to resampling.

**Mask**: for every output cell, the fraction of its area that is occluded, measured by warping the
mask with M into a canvas ~4x finer than the crop (nearest neighbour: each canvas sample takes the
source pixel it falls in; outside the image counts as visible) and averaging each cell's samples
(area averaging). The cell is occluded when that fraction >= tau (default 0.5, recorded in results).
**Pattern**: the same warp at the crop's own resolution (grid = crop size), thresholded at 0.5 per
pixel, then FROM's IoU rule (``synth.patterns.match_pattern``) on the crop's K x K grid.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from ..synth.patterns import match_pattern

DEFAULT_TAU = 0.5
SAMPLES_PER_CROP_PIXEL = 4


def _canvas_transform(m: np.ndarray, crop_hw, grid_hw, samples: int) -> tuple[np.ndarray, int, int]:
    """M composed with crop -> canvas scaling (pixel centres preserved); canvas = grid x (sy, sx)."""
    ch, cw = crop_hw
    gh, gw = grid_hw
    sy = max(1, math.ceil(samples * ch / gh))
    sx = max(1, math.ceil(samples * cw / gw))
    fy, fx = gh * sy / ch, gw * sx / cw  # canvas samples per crop pixel
    s = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])
    return (s @ np.vstack([np.asarray(m, np.float64), [0, 0, 1]]))[:2], sy, sx


def mask_fraction(mask: np.ndarray, m: np.ndarray, crop_hw: tuple[int, int], grid_hw: tuple[int, int],
                  samples: int = SAMPLES_PER_CROP_PIXEL) -> np.ndarray:
    """(h, w) float32 occluded fraction of each output cell of the model's crop.

    ``mask``: image-frame occlusion mask, (H, W) uint8 (>= 128 occluded) or bool; ``m``: 2x3 image ->
    crop matrix; ``crop_hw``: the crop size; ``grid_hw``: the model's mask output size."""
    mk = np.asarray(mask)
    if mk.ndim == 3:
        mk = mk[..., 0]
    occ = (mk >= 128) if mk.dtype != bool else mk
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    mc, sy, sx = _canvas_transform(m, crop_hw, (gh, gw), samples)
    canvas = cv2.warpAffine(occ.astype(np.uint8), mc, (gw * sx, gh * sy), flags=cv2.INTER_NEAREST,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.resize(canvas.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)  # exact box means


def true_mask(mask: np.ndarray, m: np.ndarray, crop_hw, grid_hw, tau: float = DEFAULT_TAU) -> np.ndarray:
    """(h, w) bool: cells whose occluded fraction is >= tau."""
    return mask_fraction(mask, m, crop_hw, grid_hw) >= tau


def true_pattern(mask: np.ndarray, m: np.ndarray, crop_hw, k: int) -> int:
    """FROM's pattern label of the occlusion in the model's crop frame (0 = clean)."""
    crop_mask = mask_fraction(mask, m, crop_hw, crop_hw) >= 0.5
    return match_pattern(crop_mask, k)


def truth_for_image(mask: np.ndarray | None, m: np.ndarray, crop_hw, grid_hw, k: int | None,
                    tau: float = DEFAULT_TAU) -> tuple[np.ndarray, int]:
    """(true mask (h, w) bool, pattern label) for one image; ``mask=None`` is a clean image.

    When the grid divides the crop (14x14 of 112x112, 14x12 of 112x96, the crop itself), one warp at
    the crop's resolution serves both: the grid's canvas is then the very same canvas."""
    if mask is None:
        return np.zeros(tuple(grid_hw), bool), 0
    ch, cw = int(crop_hw[0]), int(crop_hw[1])
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    if k is None:
        return true_mask(mask, m, crop_hw, grid_hw, tau), -1
    s = SAMPLES_PER_CROP_PIXEL
    if ch % gh or cw % gw:
        return true_mask(mask, m, crop_hw, grid_hw, tau), true_pattern(mask, m, crop_hw, k)
    mk = np.asarray(mask)
    occ = (mk[..., 0] if mk.ndim == 3 else mk)
    occ = occ if occ.dtype == bool else occ >= 128
    mc, _, _ = _canvas_transform(m, crop_hw, crop_hw, s)
    canvas = cv2.warpAffine(occ.astype(np.uint8), mc, (cw * s, ch * s), flags=cv2.INTER_NEAREST,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    # box means by INTER_AREA (exact for these integer factors; far faster than numpy's strided mean)
    crop_frac = cv2.resize(canvas.astype(np.float32), (cw, ch), interpolation=cv2.INTER_AREA)
    # equal blocks: the mean of the crop pixels' means is the grid cell's mean (exact: dyadic fractions)
    grid_frac = crop_frac if (gh, gw) == (ch, cw) else cv2.resize(crop_frac, (gw, gh), interpolation=cv2.INTER_AREA)
    return grid_frac >= tau, match_pattern(crop_frac >= 0.5, k)
