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

``mask_fraction`` / ``true_mask`` / ``true_pattern`` are that definition, written plainly (the
reference). ``truth_cells`` / ``truth_for_image`` compute the same values, bit for bit (tested), faster:
one warp serves mask and pattern, the mask is warped as uint8 0/16 so that OpenCV's integer-factor
``INTER_AREA`` returns exact per-pixel sample counts, a mask with no occluded pixel skips the warp,
and the pattern labels of a whole set come from its (B, K, K) cell counts in one vectorised IoU over
all patterns (``labels_from_cell_counts``). ``truth_cells_multi`` does the masks of several image sets
of one image (same alignment) together, still bit for bit: their occupancies are packed one bit per
mask into one uint8 image, so one warp (the same call, matrix and canvas as ``truth_cells``; nearest
copies whole bytes) serves up to 8 masks, and each bit's samples are counted per crop pixel with
integer byte arithmetic instead of ``INTER_AREA``.
"""
from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from ..synth.patterns import IOU_EPS, cell_edges, enumerate_patterns, match_pattern

DEFAULT_TAU = 0.5
SAMPLES_PER_CROP_PIXEL = 4


def _canvas_transform(m: np.ndarray, crop_hw, grid_hw, samples: int) -> tuple[np.ndarray, int, int]:
    """M composed with crop -> canvas scaling (pixel centres preserved); canvas = grid x (sy, sx)."""
    s, sy, sx = _canvas_scaling(int(crop_hw[0]), int(crop_hw[1]), int(grid_hw[0]), int(grid_hw[1]), samples)
    m3 = np.empty((3, 3))
    m3[:2] = m
    m3[2] = (0.0, 0.0, 1.0)
    return (s @ m3)[:2], sy, sx


@lru_cache(maxsize=32)
def _canvas_scaling(ch: int, cw: int, gh: int, gw: int, samples: int) -> tuple[np.ndarray, int, int]:
    """The crop -> canvas scaling matrix (3x3, read-only) and the samples per grid cell (sy, sx)."""
    sy = max(1, math.ceil(samples * ch / gh))
    sx = max(1, math.ceil(samples * cw / gw))
    fy, fx = gh * sy / ch, gw * sx / cw  # canvas samples per crop pixel
    s = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])
    s.flags.writeable = False
    return s, sy, sx


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

    Equal, bit for bit, to ``true_mask`` + ``true_pattern`` (the separate-warp reference; tested)."""
    tm, cells = truth_cells(mask, m, crop_hw, grid_hw, k, tau)
    return tm, (-1 if cells is None else int(labels_from_cell_counts(cells[None], k, crop_hw)[0]))


def truth_cells(mask: np.ndarray | None, m: np.ndarray, crop_hw, grid_hw, k: int | None,
                tau: float = DEFAULT_TAU) -> tuple[np.ndarray, np.ndarray | None]:
    """(true mask (h, w) bool, (K, K) int64 occluded-pixel counts of FROM's cells in the crop, or None
    without K). The pattern label follows from the counts (``labels_from_cell_counts``), batched over
    a whole image set.

    Fast path, when the grid divides the crop (14x14 of 112x112, 14x12 of 112x96, the crop itself): one
    warp of the mask, pre-scaled to 0/16, onto the crop's 4x4-per-pixel canvas; ``INTER_AREA`` on
    uint8 with the integer factor 4 sums each 4x4 block exactly (16 * n / 16 = n occluded samples per
    crop pixel, 0..16). The same samples as the reference, so the same fractions. A mask without one
    occluded pixel is clean without a warp."""
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    if mask is None:
        return np.zeros((gh, gw), bool), (None if k is None else np.zeros((k, k), np.int64))
    ch, cw = int(crop_hw[0]), int(crop_hw[1])
    s = SAMPLES_PER_CROP_PIXEL
    if ch % gh or cw % gw:
        tm = true_mask(mask, m, crop_hw, grid_hw, tau)
        if k is None:
            return tm, None
        return tm, _cell_counts(mask_fraction(mask, m, crop_hw, crop_hw) >= 0.5, k)
    occ16 = _occupancy(mask, s * s)
    if not cv2.countNonZero(occ16):
        return np.zeros((gh, gw), bool), (None if k is None else np.zeros((k, k), np.int64))
    mc, _, _ = _canvas_transform(m, crop_hw, crop_hw, s)
    canvas = cv2.warpAffine(occ16, mc, (cw * s, ch * s), flags=cv2.INTER_NEAREST,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    counts = cv2.resize(canvas, (cw, ch), interpolation=cv2.INTER_AREA)  # occluded samples per crop pixel
    # the reference's crop fractions, exactly (n / 16 is exact in float32); the grid as the reference does it
    crop_frac = np.multiply(counts, np.float32(1.0 / (s * s)), dtype=np.float32)
    grid_frac = crop_frac if (gh, gw) == (ch, cw) else cv2.resize(crop_frac, (gw, gh), interpolation=cv2.INTER_AREA)
    return grid_frac >= tau, (None if k is None else _cell_counts(counts >= (s * s + 1) // 2, k))


def truth_cells_multi(masks: list, m: np.ndarray, crop_hw, grid_hw, k: int | None,
                      tau: float = DEFAULT_TAU) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """``truth_cells`` of several image-frame masks of one image (the same alignment ``m``; None = clean),
    bit for bit (tested), with one warp per 8 masks of the same size: mask t sets bit t of a uint8
    image, which is warped onto the crop's 4x4-per-pixel canvas exactly as ``truth_cells`` warps one
    mask; bit t of a canvas sample is then mask t's sample, and its count per crop pixel (0..16) is
    summed with byte arithmetic. Falls back to ``truth_cells`` per mask off its fast path."""
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    ch, cw = int(crop_hw[0]), int(crop_hw[1])
    s = SAMPLES_PER_CROP_PIXEL
    out: list = [None] * len(masks)
    shapes: dict = {}
    for i, mk in enumerate(masks):
        if mk is None:
            out[i] = truth_cells(None, m, crop_hw, grid_hw, k, tau)
        else:
            shapes.setdefault(np.shape(mk)[:2], []).append(i)
    if ch % gh or cw % gw or s != 4:
        for idx in shapes.values():
            for i in idx:
                out[i] = truth_cells(masks[i], m, crop_hw, grid_hw, k, tau)
        return out
    mc = None
    for idx in shapes.values():
        live = []  # (mask index, its occupancy as bit t = its place in its group of 8)
        for i in idx:
            occ = _occupancy(masks[i], 1 << (len(live) % 8))
            if cv2.countNonZero(occ):
                live.append((i, occ))
            else:  # clean, as truth_cells says without a warp
                out[i] = truth_cells(None, m, crop_hw, grid_hw, k, tau)
        for lo in range(0, len(live), 8):
            chunk = [i for i, _ in live[lo:lo + 8]]
            packed = live[lo][1]
            for _, occ in live[lo + 1:lo + 8]:
                cv2.bitwise_or(packed, occ, dst=packed)
            x, y, w, h = cv2.boundingRect(packed)
            if mc is None:
                mc, _, _ = _canvas_transform(m, crop_hw, crop_hw, s)
            canvas = cv2.warpAffine(packed, mc, (cw * s, ch * s), flags=cv2.INTER_NEAREST,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            # samples can be occluded only near the bounding box's image: count there, the rest is 0
            i0, i1, j0, j1 = _canvas_box(mc, (x, y, w, h), ch, cw, s)
            quads = canvas.view(np.uint32).reshape(ch, s, cw)[i0:i1, :, j0:j1]  # a pixel row's 4 samples
            counts = np.zeros((len(chunk), ch, cw), np.uint8)
            counts[:, i0:i1, j0:j1] = _bit_counts(quads, len(chunk))
            for i, tc in zip(chunk, _truths_from_counts(counts, crop_hw, (gh, gw), k, tau)):
                out[i] = tc
    return out


def _canvas_box(mc: np.ndarray, rect, ch: int, cw: int, s: int) -> tuple[int, int, int, int]:
    """Crop pixels [i0, i1) x [j0, j1) holding every canvas sample that can fall in the source pixels
    of ``rect`` (x, y, w, h): the rectangle's pixel squares mapped by ``mc``, one crop pixel wider."""
    x, y, w, h = rect
    (a, b, c), (d, e, f) = mc.tolist()
    corners = [(px, py) for px in (x - 0.5, x + w - 0.5) for py in (y - 0.5, y + h - 0.5)]
    cx = [a * px + b * py + c for px, py in corners]
    cy = [d * px + e * py + f for px, py in corners]
    j0, j1 = max(0, math.floor(min(cx) / s) - 1), min(cw, math.ceil(max(cx) / s) + 2)
    i0, i1 = max(0, math.floor(min(cy) / s) - 1), min(ch, math.ceil(max(cy) / s) + 2)
    return i0, max(i0, i1), j0, max(j0, j1)


def _bit_counts(quads: np.ndarray, nbits: int) -> np.ndarray:
    """(nbits, h, w) uint8: per crop pixel, how many of its 4x4 canvas samples have bit t set, for
    t < nbits. ``quads``: (h, 4, w) uint32, each holding one pixel's 4 samples of one canvas row (one
    byte each)."""
    b = (quads[None] >> _SHIFTS[:nbits]) & np.uint32(0x01010101)  # per byte: that sample's bit t
    rows = b[:, :, 0] + b[:, :, 1]  # per byte: set samples in that column of the pixel (<= 4, no carry)
    rows += b[:, :, 2]
    rows += b[:, :, 3]
    return ((rows * np.uint32(0x01010101)) >> np.uint32(24)).astype(np.uint8)  # top byte: the 4 columns' sum


_SHIFTS = np.arange(8, dtype=np.uint32).reshape(8, 1, 1, 1)


def _truths_from_counts(counts: np.ndarray, crop_hw, grid_hw, k: int | None, tau: float) -> list:
    """``truth_cells``' tail for B masks at once: (true mask, cell counts) of each from its occluded
    samples per crop pixel (B, ch, cw), 0..16. The grid is averaged per mask as ``truth_cells`` does
    (``INTER_AREA`` on the stacked crops: each output cell sees only its own block, as the grid divides
    the crop)."""
    s = SAMPLES_PER_CROP_PIXEL
    b, ch, cw = counts.shape
    crop_frac = np.multiply(counts, np.float32(1.0 / (s * s)), dtype=np.float32)
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    if (gh, gw) == (ch, cw):
        grid_frac = crop_frac
    else:
        grid_frac = cv2.resize(crop_frac.reshape(b * ch, cw), (gw, b * gh), interpolation=cv2.INTER_AREA)
    tm = (grid_frac >= tau).reshape(b, gh, gw)
    if k is None:
        return [(tm[t], None) for t in range(b)]
    rows, cols = _cell_sums(k, ch, cw)  # cell sums as 0/1 matrix products: exact (counts < 2^24)
    cells = (rows @ (counts >= (s * s + 1) // 2).astype(np.float32) @ cols).astype(np.int64)
    return [(tm[t], cells[t]) for t in range(b)]


@lru_cache(maxsize=32)
def _cell_sums(k: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, h) and (w, K) float32 0/1 matrices: ``rows @ crop @ cols`` sums each of FROM's cells."""
    ys, xs = _edges(k, h, w)
    rows, cols = np.zeros((k, h), np.float32), np.zeros((w, k), np.float32)
    for i in range(k):
        rows[i, ys[i]:ys[i + 1]] = 1.0
        cols[xs[i]:xs[i + 1], i] = 1.0
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


def _occupancy(mask: np.ndarray, value: int) -> np.ndarray:
    """uint8 (H, W): ``value`` where the image-frame mask is occluded (>= 128, or True), else 0."""
    mk = np.asarray(mask)
    if mk.ndim == 3:
        mk = mk[..., 0]
    if mk.dtype == np.uint8:
        return cv2.threshold(mk, 127, value, cv2.THRESH_BINARY)[1]  # > 127 == >= 128
    occ = mk if mk.dtype == bool else mk >= 128
    return occ.astype(np.uint8) * np.uint8(value)


def _cell_counts(crop_occ: np.ndarray, k: int) -> np.ndarray:
    """(K, K) int64 occluded pixels of each of FROM's cells (``cell_edges``) of a crop-sized bool map."""
    ys, xs = _edges(k, *crop_occ.shape)
    rows = np.add.reduceat(crop_occ, ys[:-1], axis=0, dtype=np.int64)
    return np.add.reduceat(rows, xs[:-1], axis=1, dtype=np.int64)


def labels_from_cell_counts(counts: np.ndarray, k: int, crop_hw) -> np.ndarray:
    """FROM's labels of B masks given their (B, K, K) cell counts: every one of the (K(K+1)/2)^2 + 1
    patterns at once, with ``synth.patterns.pattern_ious``' exact integer counts and float64 IoU
    expression (so ``argmax`` equals ``match_pattern`` on the masks, ties included)."""
    counts = np.asarray(counts, np.int64)
    ys, xs = cell_edges(k, crop_hw)
    b = counts.shape[0]
    cs = np.zeros((b, k + 1, k + 1), np.int64)
    cs[:, 1:, 1:] = counts.cumsum(1).cumsum(2)
    p = _pattern_rects(k)
    y0, x0, y1, x1 = p.T
    inter = cs[:, y1, x1] - cs[:, y0, x1] - cs[:, y1, x0] + cs[:, y0, x0]
    area = (ys[y1] - ys[y0]) * (xs[x1] - xs[x0])
    union = area + cs[:, k:k + 1, k] - inter
    return np.argmax(inter.astype(np.float64) / (union.astype(np.float64) + IOU_EPS), axis=1).astype(np.int64)


@lru_cache(maxsize=32)
def _edges(k: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """``cell_edges`` memoised (asked once per image)."""
    ys, xs = cell_edges(k, (h, w))
    ys.flags.writeable = xs.flags.writeable = False
    return ys, xs


@lru_cache(maxsize=8)
def _pattern_rects(k: int) -> np.ndarray:
    return enumerate_patterns(k)
