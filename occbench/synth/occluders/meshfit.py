"""Fit an occluder to the face mesh: a smooth image-space warp on top of the 5-point similarity.

The 5-point fit places the occluder as if the face were frontal: on a turned face a mask then hangs
past the far cheek. When the landmarks carry MediaPipe's 468-point mesh (``FaceLandmarks.dense``),
``MeshFit`` occluders add a thin-plate-spline warp that takes where the 5-point fit puts the mean
mesh (``occbench.face.parts.mean_mesh``, in the face frame) onto where the mesh really is, at the
points of the lower face (jaw contour, nose, mouth, cheeks). A frontal face gets a near-identity
warp; a ¾-turned face gets a mask whose outline follows the mesh contour (narrower on the far side,
wrapping round the near cheek). Without a mesh, or with free placement, nothing changes.

The warp is stored in the params (``params["mesh_warp"]``: control points in image px), so
``apply`` / ``apply_to_mask`` replay it without the landmarks.
"""
from __future__ import annotations

import json
import math

import cv2
import numpy as np

from ...face import geometry
from . import functional as F

# Lower face and its frame: jaw contour (ear to ear through the chin), nose line, nostrils, mouth,
# outer eye corners, temples (MediaPipe face-mesh indices). No cheek points: on a turned face the far
# cheek projects beyond the far jaw contour, and crossing control points would fold the warp.
CONTROL = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454,
           168, 6, 197, 195, 5, 4, 1, 98, 327, 61, 291, 0, 17, 33, 263, 127, 356)
SMOOTH = 1e-2  # TPS regularisation (relative to the squared face size): mesh noise is not followed
MAX_RESIDUAL = 0.25  # image px: a warp that cannot be inverted to this (a folded mesh) is not used
ITERATIONS, DAMPING = 40, 0.7
GRID = 6  # the dense map is evaluated every GRID px and interpolated (it is smooth)


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distances between the rows of a (n, 2) and b (m, 2), (n, m), never negative."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def _kernel(r2: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        k = 0.5 * r2 * np.log(r2)
    return np.nan_to_num(k, nan=0.0, posinf=0.0, neginf=0.0)


class TPS:
    """Thin-plate spline R^2 -> R^2 through (src -> dst) with regularisation ``lam`` (scale-free)."""

    def __init__(self, src, dst, lam: float = SMOOTH):
        src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
        self.c = src.mean(0)
        self.s = float(np.sqrt(((src - self.c) ** 2).sum(1).mean())) or 1.0
        p = (src - self.c) / self.s
        n = len(p)
        k = _kernel(_sqdist(p, p)) + lam * np.eye(n)
        a = np.hstack([np.ones((n, 1)), p])
        m = np.zeros((n + 3, n + 3))
        m[:n, :n], m[:n, n:], m[n:, :n] = k, a, a.T
        rhs = np.zeros((n + 3, 2))
        rhs[:n] = dst
        self.p, self.w = p, np.linalg.solve(m, rhs)

    def __call__(self, pts) -> np.ndarray:
        q = (np.asarray(pts, np.float64).reshape(-1, 2) - self.c) / self.s
        k = _kernel(_sqdist(q, self.p))
        n = len(self.p)
        return k @ self.w[:n] + self.w[n] + q @ self.w[n + 1:]


def mesh_warp(landmarks, five: np.ndarray) -> dict | None:
    """{"src", "dst"}: image-px control points (5-point fit of the mean mesh -> the real mesh), or None
    when the landmarks have no 468-point mesh."""
    dense = getattr(landmarks, "dense", None)
    if dense is None:
        return None
    dense = np.asarray(dense, np.float64)
    if dense.shape != (468, 2) or not np.all(np.isfinite(dense)):
        return None
    from ...face.parts import mean_mesh

    idx = list(CONTROL)
    to_image = geometry.invert_affine(geometry.face_frame_transform(np.asarray(five, np.float64)))
    src = F.transform(to_image, mean_mesh()[idx]).round(3)
    dst = dense[idx].round(3)
    # a usable warp is invertible over the lower face (a folded mesh is not)
    lo, hi = dst.min(0), dst.max(0)
    g = np.stack(np.meshgrid(np.linspace(lo[0], hi[0], 9), np.linspace(lo[1], hi[1], 9)), -1).reshape(-1, 2)
    fwd = TPS(src, dst)
    if not np.abs(fwd(_invert(fwd, g)) - g).max() <= MAX_RESIDUAL:
        return None
    return {"src": src.tolist(), "dst": dst.tolist()}


def forward(warp: dict, pts) -> np.ndarray:
    return TPS(warp["src"], warp["dst"])(pts)


def _invert(fwd: TPS, pts) -> np.ndarray:
    """Points s with fwd(s) = pts (damped fixed-point iteration from s = pts)."""
    target = np.asarray(pts, np.float64).reshape(-1, 2)
    s = 2.0 * target - fwd(target)  # first-order guess: undo the displacement found at the target
    for _ in range(ITERATIONS):
        r = target - fwd(s)
        s += DAMPING * r
        if np.abs(r).max() < 1e-3:
            break
    return s


def inverse_map(warp: dict, roi, origin) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y) float32 for cv2.remap: for each pixel of ``roi`` [x0, y0, x1, y1] (image px), the
    position it comes from before the warp, relative to ``origin`` (x, y)."""
    x0, y0, x1, y1 = roi
    w, h = x1 - x0, y1 - y0
    gw, gh = max(2, math.ceil(w / GRID) + 1), max(2, math.ceil(h / GRID) + 1)
    gx = np.linspace(x0, x0 + (gw - 1) * GRID, gw)
    gy = np.linspace(y0, y0 + (gh - 1) * GRID, gh)
    xx, yy = np.meshgrid(gx, gy)
    back = _invert(TPS(warp["src"], warp["dst"]), np.stack([xx.ravel(), yy.ravel()], 1)).reshape(gh, gw, 2)
    back = (back - np.asarray(origin, np.float64)).astype(np.float32)
    # grid node j sits at pixel j * GRID: resize with align-corners semantics
    sx = np.arange(w, dtype=np.float32) / GRID
    sy = np.arange(h, dtype=np.float32) / GRID
    mx, my = np.meshgrid(sx, sy)
    mx, my = mx.astype(np.float32), my.astype(np.float32)
    out_x = cv2.remap(np.ascontiguousarray(back[..., 0]), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out_y = cv2.remap(np.ascontiguousarray(back[..., 1]), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out_x, out_y


class MeshFit:
    """Mixin for anchored occluders modelled on the lower face (masks): follow the mesh when present.

    Must come before the family class in the bases. Adds the warp to the params in ``get_params`` and
    applies it in ``layer``; relighting is done after the warp, on the final position."""

    def get_params(self, rng, image_shape, landmarks, scale=1.0, placement="anchored"):
        params = super().get_params(rng, image_shape, landmarks, scale, placement)
        params["mesh_warp"] = None
        if placement != "anchored" or not self.cfg.get("mesh_fit", False):
            return params
        warp = mesh_warp(landmarks, np.asarray(params["landmarks_five"]))
        if warp is None:
            return params
        h, w = params["image_size"]
        m = np.asarray(params["model_to_image"], np.float64)
        v = params["vars"]
        hull = self._extent(v, float(params["stroke_min"]), json.dumps(v, sort_keys=True))[0]
        edge = _densify(F.transform(m, hull))
        pts = forward(warp, edge)
        (bx0, by0), (bx1, by1) = pts.min(0).tolist(), pts.max(0).tolist()
        pad = 2 + 0.02 * max(bx1 - bx0, by1 - by0)
        params["mesh_warp"] = warp
        params["src_box"] = params["bbox_image"]
        params["bbox_image"] = [bx0, by0, bx1, by1]
        params["roi"] = [max(math.floor(bx0 - pad), 0), max(math.floor(by0 - pad), 0),
                         min(math.ceil(bx1 + pad), w), min(math.ceil(by1 + pad), h)]
        return params

    def layer(self, params, image):
        warp = params.get("mesh_warp")
        if not warp:
            return super().layer(params, image)
        x0, y0, x1, y1 = params["roi"]
        if x1 <= x0 or y1 <= y0:
            return super().layer(params, image)
        map_x, map_y = inverse_map(warp, (x0, y0, x1, y1), (0.0, 0.0))
        sx0, sy0 = math.floor(float(map_x.min())) - 2, math.floor(float(map_y.min())) - 2
        sx1, sy1 = math.ceil(float(map_x.max())) + 3, math.ceil(float(map_y.max())) + 3
        bx0, by0, bx1, by1 = params["src_box"]  # nothing is drawn outside the unwarped layer's box
        sx0, sy0 = max(sx0, math.floor(bx0) - 2), max(sy0, math.floor(by0) - 2)
        sx1, sy1 = min(sx1, math.ceil(bx1) + 3), min(sy1, math.ceil(by1) + 3)
        if sx1 <= sx0 or sy1 <= sy0:
            hw = (y1 - y0, x1 - x0)
            return [x0, y0, x1, y1], np.zeros(hw + (3,), np.float32), np.zeros(hw, np.float32)
        _, prem, alpha = self._unwarped_layer(dict(params, roi=[sx0, sy0, sx1, sy1]))
        rgba = cv2.merge([prem[..., 0], prem[..., 1], prem[..., 2], alpha])
        out = cv2.remap(rgba, map_x - sx0, map_y - sy0, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                        borderValue=(0, 0, 0, 0))
        prem, alpha = np.ascontiguousarray(out[..., :3]), np.ascontiguousarray(out[..., 3])
        strength = self.cfg["relight"]
        if strength > 0 and image is not None:
            sigma = 0.12 * (params["bbox_image"][2] - params["bbox_image"][0])
            f = F.relight_factor(image[y0:y1, x0:x1], alpha, strength, sigma)
            prem = np.minimum(prem * f[..., None], alpha[..., None] * 255.0).astype(np.float32)
        return [x0, y0, x1, y1], prem, alpha

    def _unwarped_layer(self, params):
        """The similarity-placed layer over params['roi'] (any box, even partly outside the image),
        without relighting."""
        return super().layer(params, None)


def _densify(poly: np.ndarray, step: int = 6) -> np.ndarray:
    """The closed polygon with ``step`` - 1 extra points on each edge (a warped hull bends)."""
    p = np.asarray(poly, np.float64)
    q = np.roll(p, -1, axis=0)
    t = np.arange(step)[None, :, None] / step
    return (p[:, None, :] + (q - p)[:, None, :] * t).reshape(-1, 2)
