"""FROM's K x K proximate-occlusion patterns and the IoU matching of an occlusion mask to a pattern.

FROM = Qiu et al., "End2End Occluded Face Recognition by Masking Corrupted Features", TPAMI 2021,
code github.com/haibo-qiu/FROM. This module reproduces the semantics of ``lib/core/utils.py``
(functions ``get_grids``, ``cal_IoU`` and ``cal_similarity_label``) as they stand at commit
6a53cc3d; the implementation here is our own and vectorised.

What FROM does (and we do the same):

- **Cell boundaries.** ``get_grids(H, W, N)`` takes x boundaries ``np.linspace(0, W, N + 1, dtype=int)``
  and y boundaries ``np.linspace(0, H, N + 1, dtype=int)``: i*W/N rounded *down* (numpy floors
  linspace for integer dtypes; that equals the exact floor(i*W/N) for every N <= 13, W <= 2048, and
  we make the same call so rarer cases agree too), last boundary exactly W/H. The cells therefore
  tile the whole image and may differ in size by one pixel (112x96, K=5: x = 0,19,38,57,76,96;
  y = 0,22,44,67,89,112).
  FROM calls it with ``img_size=(112, 96)`` (H, W) and ``pattern`` = K (config default 4, ``start.sh``
  uses 5).
- **Enumeration.** The (K+1)^2 grid vertices are listed row-major (y outer, x inner). For every start
  vertex, then every end vertex (both in that order), the pair forms a pattern iff
  ``end.y > start.y and end.x > start.x``; the pattern is the half-open pixel rectangle
  ``[start.y:end.y, start.x:end.x]``. A zero mask is prepended as pattern 0 (clean), so
  N = (K(K+1)/2)^2 + 1 (101 for K=4, 226 for K=5). ``train.py`` sets NUM_MASK = len(get_grids(...)).
- **IoU at pixel level.** ``cal_IoU(grid, mask) = sum(grid*mask) / (sum(clip(grid+mask, 0, 1)) + 1e-10)``
  on 0/1 float arrays of the image size. ``cal_similarity_label`` scores every pattern (including the
  clean one) and returns ``np.argmax`` -> ties go to the lowest pattern index. The 1e-10 in the
  denominator also decides exact-ratio ties (e.g. 1/2 vs 2/4) in favour of the larger union; we
  compute the very same float64 expression from exact integer counts, so labels agree bit for bit.
- **All-clean mask.** Every IoU is 0/(union+1e-10) = 0, argmax -> 0 (clean). Any non-empty mask
  overlaps the full-image pattern, so it never gets label 0. (FROM's training loop also assigns 0 to
  images it leaves unoccluded, ``dataset.py`` ``get_data``.)
- Not reproduced because it concerns mask *generation*, not matching: FROM's
  ``occluded_image_ratio`` clips the box end to W-1/H-1, so its masks never cover the last row/column.

Masks are given in the frame they are measured in (occbench: the 112x112 face frame); the cell
grid is laid over the mask's own H x W. Mask inputs: bool, or numeric 0/255 (occluded = value >= 128),
or numeric in [0, 1] (occluded = value >= 0.5).

Matching does not build pixel masks: patterns are unions of whole cells, so the intersection with a
pattern is a sum of per-cell occluded-pixel counts (2-D prefix sums) and
union = area(pattern) + occluded - intersection, all exact integers.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import ConfigError

IOU_EPS = 1e-10  # FROM's cal_IoU denominator epsilon


def n_patterns(k: int) -> int:
    """(K(K+1)/2)^2 + 1."""
    _check_k(k)
    return (k * (k + 1) // 2) ** 2 + 1


def _check_k(k) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"pattern grid size K must be a positive integer, got {k!r}")
    return int(k)


@lru_cache(maxsize=None)
def _patterns(k: int) -> np.ndarray:
    v = np.arange(k + 1)
    vy, vx = np.repeat(v, k + 1), np.tile(v, k + 1)  # vertices, row-major
    valid = (vy[None, :] > vy[:, None]) & (vx[None, :] > vx[:, None])  # [start, end]
    s, e = np.nonzero(valid)  # row-major over (start, end): start first, then end
    rects = np.stack([vy[s], vx[s], vy[e], vx[e]], axis=1)
    out = np.vstack([np.zeros((1, 4), np.int64), rects]).astype(np.int64)
    out.setflags(write=False)
    return out


def enumerate_patterns(k: int) -> np.ndarray:
    """All patterns of a K x K grid as an (N, 4) int array of ``[y0, x0, y1, x1]`` in cell units
    (half-open). Row 0 is ``[0, 0, 0, 0]`` (clean). Order: FROM's (start vertex row-major, then end
    vertex row-major)."""
    return _patterns(_check_k(k)).copy()


def cell_edges(k: int, size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel boundaries (ys, xs), each of length K+1, with FROM's convention (floor of i*H/K)."""
    k = _check_k(k)
    h, w = int(size_hw[0]), int(size_hw[1])
    if min(h, w) < k:
        raise ConfigError(f"image of size {h}x{w} is too small for a {k}x{k} pattern grid")
    ys = np.linspace(0, h, k + 1, dtype=int)
    xs = np.linspace(0, w, k + 1, dtype=int)
    return ys.astype(np.int64), xs.astype(np.int64)


def pattern_boxes(k: int, size_hw: tuple[int, int]) -> np.ndarray:
    """(N, 4) pixel boxes ``[y0, x0, y1, x1]`` (half-open) of every pattern; row 0 is empty."""
    ys, xs = cell_edges(k, size_hw)
    p = _patterns(_check_k(k))
    return np.stack([ys[p[:, 0]], xs[p[:, 1]], ys[p[:, 2]], xs[p[:, 3]]], axis=1)


@lru_cache(maxsize=32)
def _pattern_masks(k: int, h: int, w: int) -> np.ndarray:
    boxes = pattern_boxes(k, (h, w))
    yy = np.arange(h)[None, :, None]
    xx = np.arange(w)[None, None, :]
    b = boxes[:, :, None, None]
    masks = (yy >= b[:, 0]) & (yy < b[:, 2]) & (xx >= b[:, 1]) & (xx < b[:, 3])
    masks.setflags(write=False)
    return masks


def pattern_masks(k: int, size_hw: tuple[int, int]) -> np.ndarray:
    """(N, H, W) bool pixel masks of every pattern (cached, read-only)."""
    return _pattern_masks(_check_k(k), int(size_hw[0]), int(size_hw[1]))


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """Occlusion mask -> bool. bool as is; numeric with max <= 1: >= 0.5; otherwise 0/255: >= 128."""
    m = np.asarray(mask)
    if m.dtype == bool:
        return m
    if m.dtype.kind not in "uif":
        raise ConfigError(f"occlusion mask must be bool or numeric, got dtype {m.dtype}")
    if m.size and m.max() <= 1:
        return m >= 0.5
    return m >= 128


def _cell_counts(occ: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Occluded-pixel counts per cell for (..., H, W) bool masks -> (..., k, k) int64, plus edges."""
    ys, xs = cell_edges(k, occ.shape[-2:])
    per_row = np.add.reduceat(occ, ys[:-1], axis=-2, dtype=np.int64)
    counts = np.add.reduceat(per_row, xs[:-1], axis=-1, dtype=np.int64)
    return counts, ys, xs


def _check_mask2d(mask) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim != 2:
        raise ConfigError(f"occlusion mask must be a 2-D (H, W) array, got shape {m.shape}")
    return m


def cell_fractions(mask: np.ndarray, k: int) -> np.ndarray:
    """(K, K) occluded fraction of every grid cell (cells tile the mask with FROM's boundaries)."""
    occ = binarize_mask(_check_mask2d(mask))
    counts, ys, xs = _cell_counts(occ, _check_k(k))
    area = np.diff(ys)[:, None] * np.diff(xs)[None, :]
    return counts / area


def pattern_ious(mask_or_masks: np.ndarray, k: int) -> np.ndarray:
    """FROM's IoU of mask(s) with every pattern: (N,) for an (H, W) mask, (B, N) for (B, H, W)."""
    m = np.asarray(mask_or_masks)
    if m.ndim not in (2, 3):
        raise ConfigError(f"occlusion mask(s) must be (H, W) or (B, H, W), got shape {m.shape}")
    k = _check_k(k)
    occ = binarize_mask(m)
    counts, ys, xs = _cell_counts(occ, k)
    # 2-D prefix sums over cells: S[..., i, j] = occluded pixels in cells [0:i, 0:j]
    s = np.zeros(counts.shape[:-2] + (k + 1, k + 1), np.int64)
    s[..., 1:, 1:] = counts.cumsum(-2).cumsum(-1)
    p = _patterns(k)
    y0, x0, y1, x1 = p.T
    inter = s[..., y1, x1] - s[..., y0, x1] - s[..., y1, x0] + s[..., y0, x0]
    area = (ys[y1] - ys[y0]) * (xs[x1] - xs[x0])
    total = s[..., k:k + 1, k]  # occluded pixels in the whole mask, shape (..., 1)
    union = area + total - inter
    return inter.astype(np.float64) / (union.astype(np.float64) + IOU_EPS)


def match_pattern(mask: np.ndarray, k: int) -> int:
    """FROM's label of one occlusion mask: argmax IoU over all patterns (first on ties; empty -> 0)."""
    return int(np.argmax(pattern_ious(_check_mask2d(mask), k)))


def match_patterns(masks: np.ndarray, k: int) -> np.ndarray:
    """Batched :func:`match_pattern` for (B, H, W) masks -> (B,) int64."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ConfigError(f"masks must be (B, H, W), got shape {masks.shape}")
    return np.argmax(pattern_ious(masks, k), axis=-1).astype(np.int64)


def pattern_table(k: int, size_hw: tuple[int, int] | None = None):
    """DataFrame of all patterns: pattern, y0, x0, y1, x1 (cell units); with ``size_hw`` also the
    pixel box py0, px0, py1, px1 for that image size."""
    import pandas as pd

    p = enumerate_patterns(k)
    df = pd.DataFrame({"pattern": np.arange(len(p)), "y0": p[:, 0], "x0": p[:, 1],
                       "y1": p[:, 2], "x1": p[:, 3]})
    if size_hw is not None:
        b = pattern_boxes(k, size_hw)
        for i, c in enumerate(("py0", "px0", "py1", "px1")):
            df[c] = b[:, i]
    return df
