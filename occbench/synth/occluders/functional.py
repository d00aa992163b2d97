"""Pure drawing operations for occluders: no state, no hidden randomness.

Everything that looks random (fabric noise, block noise) is a deterministic function of an
integer ``seed`` that the caller sampled in ``get_params``; the same arguments always give the
same bytes. Conventions: points are float (x, y); pixel (i, j) covers [x-0.5, x+0.5] around its
integer centre (OpenCV convention); colours are RGB floats in 0..255; coverage/alpha in 0..1.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

_SUBPIX_BITS = 4  # cv2 fixed-point shift for polygon vertices (1/16 px)

# ----------------------------------------------------------------------------- curves


def catmull_rom(points, *, closed: bool = True, samples: int = 8) -> np.ndarray:
    """A smooth curve through ``points`` (uniform Catmull-Rom), (N, 2) float64."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    n = len(p)
    if n < 3:
        return p.copy()
    if closed:
        ext = np.vstack([p[-1:], p, p[:2]])
        segs = n
    else:
        ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
        segs = n - 1
    p0, p1, p2, p3 = (ext[k:k + segs][:, None, :] for k in range(4))
    t = (np.arange(samples, dtype=np.float64) / samples)[None, :, None]
    t2, t3 = t * t, t * t * t
    out = 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                 + (-p0 + 3 * p1 - 3 * p2 + p3) * t3)
    out = out.reshape(-1, 2)
    return out if closed else np.vstack([out, p[-1:]])


def ellipse(cx: float, cy: float, rx: float, ry: float, angle_deg: float = 0.0, n: int = 48,
            start_deg: float = 0.0, end_deg: float = 360.0) -> np.ndarray:
    """Points on an ellipse (or an arc of it), (n, 2)."""
    closed = abs((end_deg - start_deg) % 360.0) < 1e-9
    t = np.deg2rad(np.linspace(start_deg, end_deg, n, endpoint=not closed))
    x, y = rx * np.cos(t), ry * np.sin(t)
    a = np.deg2rad(angle_deg)
    ca, sa = np.cos(a), np.sin(a)
    return np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], axis=1)


def capsule(p0, p1, width: float, n_cap: int = 10) -> np.ndarray:
    """A stadium (segment p0-p1 with round ends of diameter ``width``) as a polygon."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    d = p1 - p0
    ang = np.degrees(np.arctan2(d[1], d[0]))
    r = width / 2.0
    a = ellipse(p1[0], p1[1], r, r, 0.0, n_cap, ang - 90.0, ang + 90.0)
    b = ellipse(p0[0], p0[1], r, r, 0.0, n_cap, ang + 90.0, ang + 270.0)
    return np.vstack([a, b])


def signed_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def normals(points: np.ndarray, *, closed: bool) -> np.ndarray:
    """Unit normals (rotated tangents) of a polyline."""
    p = np.asarray(points, np.float64)
    t = np.empty_like(p)
    if closed:
        t[1:-1] = p[2:] - p[:-2]
        t[0] = p[1] - p[-1]
        t[-1] = p[0] - p[-2]
    else:
        t[1:-1] = p[2:] - p[:-2]
        t[0] = p[1] - p[0]
        t[-1] = p[-1] - p[-2]
    ln = np.linalg.norm(t, axis=1, keepdims=True)
    t = t / np.maximum(ln, 1e-12)
    return np.stack([-t[:, 1], t[:, 0]], axis=1)


def offset_closed(poly: np.ndarray, dist: float) -> np.ndarray:
    """Offset a closed, smooth, roughly convex curve outward by ``dist`` (inward if negative)."""
    p = np.asarray(poly, np.float64)
    nrm = normals(p, closed=True)
    if signed_area(p) > 0:  # y-down image coords: positive area = clockwise on screen
        nrm = -nrm
    return p + dist * nrm


def ribbon(points, width: float) -> np.ndarray:
    """An open polyline thickened to ``width`` as a polygon (butt ends)."""
    p = np.asarray(points, np.float64)
    nrm = normals(p, closed=False) * (width / 2.0)
    return np.vstack([p + nrm, (p - nrm)[::-1]])


def transform(m: np.ndarray, pts) -> np.ndarray:
    m = np.asarray(m, np.float64)
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    return pts @ m[:, :2].T + m[:, 2]


def mirror_x(pts, cx: float) -> np.ndarray:
    p = np.array(pts, np.float64).reshape(-1, 2)
    p[:, 0] = 2 * cx - p[:, 0]
    return p


# ----------------------------------------------------------------------------- rasterising


def supersampling(roi_hw: tuple[int, int]) -> int:
    """Supersampling factor used for coverage: 4 for face-sized regions, less for huge ones."""
    area = roi_hw[0] * roi_hw[1]
    return 4 if area <= 700_000 else (2 if area <= 4_000_000 else 1)


def window(polys, origin, shape_hw) -> tuple[int, int, int, int] | None:
    """Canvas-pixel box (x0, y0, x1, y1) that holds the polygons, clipped to the canvas; None if outside."""
    pts = np.vstack([np.asarray(p, np.float64).reshape(-1, 2) for p in polys]) - origin
    h, w = shape_hw
    (lx, ly), (hx, hy) = pts.min(0), pts.max(0)
    x0 = max(math.floor(lx) - 1, 0)
    y0 = max(math.floor(ly) - 1, 0)
    x1 = min(math.ceil(hx) + 2, w)
    y1 = min(math.ceil(hy) + 2, h)
    return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1, y1)


def polygon_coverage(shape_hw: tuple[int, int], polys, origin=(0.0, 0.0), ss: int | None = None) -> np.ndarray:
    """Anti-aliased area coverage (float32 0..1, ``shape_hw``) of the union of polygons.

    ``polys`` are in image coordinates; ``origin`` is the image coordinate of canvas pixel (0, 0).
    Coverage is exact to 1/ss^2 (each polygon filled on an ss-times finer grid, then box-averaged).
    """
    h, w = shape_hw
    out = np.zeros((h, w), np.float32)
    if h <= 0 or w <= 0:
        return out
    f = ss or supersampling(shape_hw)
    ox, oy = origin
    for poly in polys:
        p = np.asarray(poly, np.float64).reshape(-1, 2) - (ox, oy)
        if len(p) < 3 or not np.all(np.isfinite(p)):
            continue
        (lx, ly), (hx, hy) = p.min(0), p.max(0)
        x0 = max(math.floor(lx) - 1, 0)
        y0 = max(math.floor(ly) - 1, 0)
        x1 = min(math.ceil(hx) + 2, w)
        y1 = min(math.ceil(hy) + 2, h)
        if x1 <= x0 or y1 <= y0:
            continue
        # image coord x -> fine-grid coord (x + 0.5) * f - 0.5 (fine pixel centres)
        q = (p - (x0, y0) + 0.5) * f - 0.5
        canvas = np.zeros(((y1 - y0) * f, (x1 - x0) * f), np.uint8)
        q = np.clip(q, -1e5, 1e5)
        cv2.fillPoly(canvas, [np.round(q * (1 << _SUBPIX_BITS)).astype(np.int32)], 255, cv2.LINE_8,
                     shift=_SUBPIX_BITS)
        if f > 1:
            small = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA).astype(np.float32)
        else:
            small = canvas.astype(np.float32)
        small *= np.float32(1.0 / 255.0)
        np.maximum(out[y0:y1, x0:x1], small, out=out[y0:y1, x0:x1])
    return out


def composite_over(dst_rgb: np.ndarray, dst_a: np.ndarray, rgb, a: np.ndarray) -> None:
    """In place: paint (rgb, a) over (dst_rgb, dst_a) (non-premultiplied 'over')."""
    keep = dst_a * (1.0 - a)  # the destination's remaining weight
    new_a = a + keep
    num = np.asarray(rgb, np.float32) * a[..., None]
    num += dst_rgb * keep[..., None]
    ok = new_a > 1e-6
    np.divide(num, np.where(ok, new_a, np.float32(1.0))[..., None], out=num)
    np.copyto(dst_rgb, num, where=ok[..., None])
    dst_a[...] = new_a


def blend_into(image: np.ndarray, roi, rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """A copy of ``image`` with the layer (rgb, alpha) over the ROI (x0, y0, x1, y1)."""
    out = image.copy()
    x0, y0, x1, y1 = roi
    if x1 <= x0 or y1 <= y0:
        return out
    base = out[y0:y1, x0:x1].astype(np.float32)
    a = alpha[..., None]
    mixed = base * (1.0 - a) + rgb * a
    changed = alpha > 0
    region = out[y0:y1, x0:x1]
    region[changed] = np.clip(np.rint(mixed[changed]), 0, 255).astype(np.uint8)
    return out


# ----------------------------------------------------------------------------- procedural textures


def hash2(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic integer hash of lattice coordinates -> float in [0, 1)."""
    with np.errstate(over="ignore"):
        x = (np.asarray(i, np.int64).astype(np.uint32) * np.uint32(0x8DA6B343)
             ^ np.asarray(j, np.int64).astype(np.uint32) * np.uint32(0xD8163841)
             ^ np.uint32(seed & 0xFFFFFFFF) * np.uint32(0xCB1AB31F))
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x7FEB352D)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x846CA68B)
        x ^= x >> np.uint32(16)
    return (x >> np.uint32(8)).astype(np.float32) / np.float32(1 << 24)


def value_noise(u: np.ndarray, v: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """Smooth lattice noise in [0, 1) with feature size ``cell`` (model units)."""
    x, y = u / cell, v / cell
    i, j = np.floor(x), np.floor(y)
    fx, fy = (x - i).astype(np.float32), (y - j).astype(np.float32)
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    i, j = i.astype(np.int64), j.astype(np.int64)
    a, b = hash2(i, j, seed), hash2(i + 1, j, seed)
    c, d = hash2(i, j + 1, seed), hash2(i + 1, j + 1, seed)
    return (a + (b - a) * fx) + ((c + (d - c) * fx) - (a + (b - a) * fx)) * fy


def fbm(u, v, cell: float, seed: int, octaves: int = 3) -> np.ndarray:
    tot, amp, norm = 0.0, 1.0, 0.0
    for k in range(octaves):
        tot = tot + amp * value_noise(u, v, cell / (2**k), seed + 7919 * k)
        norm += amp
        amp *= 0.5
    return tot / norm


def cell_noise(u, v, cell: float, seed: int) -> np.ndarray:
    """Blocky per-cell noise in [0, 1) (no interpolation)."""
    return hash2(np.floor(u / cell).astype(np.int64), np.floor(v / cell).astype(np.int64), seed)


def _soft_step(x: np.ndarray, edge: float, width: float) -> np.ndarray:
    return np.clip((x - edge) / max(width, 1e-6) + 0.5, 0.0, 1.0).astype(np.float32)


def stripes(u, v, period: float, angle_deg: float, duty: float, pixel: float) -> np.ndarray:
    """1 on the stripe, 0 off it; edges anti-aliased over ``pixel`` model units."""
    a = np.deg2rad(angle_deg)
    t = (u * np.cos(a) + v * np.sin(a)) / period
    f = t - np.floor(t)
    w = pixel / period
    return _soft_step(f, 0.0, w) * (1.0 - _soft_step(f, duty, w))


def checks(u, v, period: float, angle_deg: float, pixel: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    ru = u * np.cos(a) + v * np.sin(a)
    rv = -u * np.sin(a) + v * np.cos(a)
    s1 = stripes(ru, 0 * ru, period, 0.0, 0.5, pixel)
    s2 = stripes(rv, 0 * rv, period, 0.0, 0.5, pixel)
    return s1 * (1 - s2) + s2 * (1 - s1)


def dots(u, v, period: float, radius_frac: float, pixel: float) -> np.ndarray:
    """Staggered polka dots."""
    row = np.floor(v / period)
    uu = u + (row % 2) * period / 2
    fx = uu / period - np.floor(uu / period) - 0.5
    fy = v / period - row - 0.5
    d = np.sqrt(fx * fx + fy * fy) * period
    return 1.0 - _soft_step(d, radius_frac * period, pixel)


def mix(c0, c1, t: np.ndarray) -> np.ndarray:
    c0 = np.asarray(c0, np.float32)
    c1 = np.asarray(c1, np.float32)
    t = np.asarray(t, np.float32)[..., None]
    return c0 * (1 - t) + c1 * t


def texture_rgb(spec: dict, u: np.ndarray, v: np.ndarray, pixel: float) -> np.ndarray:
    """Evaluate a fill spec at model coordinates (u, v) -> (H, W, 3) float32.

    Kinds: solid{rgb}; stripes{colors[2], period, angle, duty}; checks{colors[2], period, angle};
    plaid{colors[3], period, angle}; dots{colors[2], period, radius}; fabric{colors[2], cell, seed};
    mottle{colors[2], cell, seed} (smooth blotches, e.g. skin);
    knit{colors[2], period, seed}; noise{seed, cell} (random RGB per cell, FROM-style random block);
    gradient{colors[2], axis_from, axis_to}.
    """
    kind = spec["kind"]
    if kind == "solid":
        out = np.empty(u.shape + (3,), np.float32)
        out[...] = np.asarray(spec["rgb"], np.float32)
        return out
    cols = spec.get("colors")
    if kind == "stripes":
        t = stripes(u, v, spec["period"], spec.get("angle", 0.0), spec.get("duty", 0.5), pixel)
        return mix(cols[0], cols[1], t)
    if kind == "checks":
        return mix(cols[0], cols[1], checks(u, v, spec["period"], spec.get("angle", 0.0), pixel))
    if kind == "plaid":
        p = spec["period"]
        a = spec.get("angle", 0.0)
        s1 = stripes(u, v, p, a, 0.35, pixel)
        s2 = stripes(u, v, p, a + 90.0, 0.35, pixel)
        thin = stripes(u + p / 2, v + p / 2, p, a, 0.08, pixel) + stripes(u + p / 2, v + p / 2, p, a + 90, 0.08, pixel)
        base = mix(cols[0], cols[1], 0.5 * (s1 + s2))
        return mix(base, cols[2], np.clip(thin, 0, 1) * 0.8)
    if kind == "dots":
        return mix(cols[0], cols[1], dots(u, v, spec["period"], spec.get("radius", 0.25), pixel))
    if kind == "fabric":
        seed = int(spec["seed"])
        n = fbm(u, v, spec.get("cell", 6.0), seed, 3)
        weave = 0.5 + 0.5 * np.sin(u * 2.2) * np.sin(v * 2.2)
        t = np.clip(0.75 * n + 0.25 * weave, 0, 1)
        return mix(cols[0], cols[1], t)
    if kind == "mottle":
        n = fbm(u, v, spec.get("cell", 8.0), int(spec["seed"]), 3)
        return mix(cols[0], cols[1], n)
    if kind == "knit":
        seed = int(spec["seed"])
        p = spec.get("period", 3.0)
        rib = 0.5 + 0.5 * np.cos(2 * np.pi * u / p)
        n = fbm(u, v, 5.0, seed, 2)
        return mix(cols[0], cols[1], np.clip(0.6 * rib + 0.4 * n, 0, 1))
    if kind == "noise":
        seed = int(spec["seed"])
        cell = spec.get("cell", 1.0)
        r = cell_noise(u, v, cell, seed)
        g = cell_noise(u, v, cell, seed + 1)
        b = cell_noise(u, v, cell, seed + 2)
        return np.stack([r, g, b], axis=-1) * np.float32(255.0)
    if kind == "gradient":
        a0 = np.asarray(spec["axis_from"], np.float64)
        a1 = np.asarray(spec["axis_to"], np.float64)
        d = a1 - a0
        t = ((u - a0[0]) * d[0] + (v - a0[1]) * d[1]) / max(float(d @ d), 1e-9)
        return mix(cols[0], cols[1], np.clip(t, 0, 1))
    raise ValueError(f"unknown texture kind {kind!r}")


def shade_factor(spec: dict | None, u: np.ndarray, v: np.ndarray) -> np.ndarray | float:
    """Multiplicative shading in model coordinates.

    cylinder{cx, rx, k}: 1 - k * ((u - cx) / rx)^2 (a surface wrapping round the face);
    vgrad{y0, y1, a, b}: a at v=y0 to b at v=y1, clamped; split{cx, left, right}: two flat tones.
    """
    if not spec:
        return 1.0
    kind = spec["kind"]
    if kind == "cylinder":
        x = (u - spec["cx"]) / spec["rx"]
        return np.clip(1.0 - spec["k"] * x * x, 0.3, 1.2).astype(np.float32)
    if kind == "vgrad":
        t = np.clip((v - spec["y0"]) / (spec["y1"] - spec["y0"]), 0, 1)
        return (spec["a"] + (spec["b"] - spec["a"]) * t).astype(np.float32)
    if kind == "split":
        return np.where(u < spec["cx"], spec["left"], spec["right"]).astype(np.float32)
    if kind == "product":
        f = 1.0
        for s in spec["parts"]:
            f = f * shade_factor(s, u, v)
        return f
    raise ValueError(f"unknown shading kind {kind!r}")


def relight_factor(image_roi: np.ndarray, alpha: np.ndarray, strength: float, sigma: float) -> np.ndarray:
    """Low-frequency luminance of the face under the occluder, relative to its mean, ** strength.

    Lets an occluder pick up the scene's light fall-off (shadowed side of the face stays darker).
    """
    lum = image_roi.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    sigma = max(float(sigma), 0.5)
    blur = cv2.GaussianBlur(lum, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    wsum = float(alpha.sum())
    if wsum <= 1e-6:
        return np.ones_like(alpha)
    mean = float((blur * alpha).sum() / wsum)
    ratio = (blur + 8.0) / (mean + 8.0)
    return np.clip(ratio, 0.55, 1.35) ** np.float32(strength)


def warp_rgba(rgba: np.ndarray, m: np.ndarray, roi) -> tuple[np.ndarray, np.ndarray]:
    """Warp an RGBA asset by ``m`` (asset px -> image px) into the ROI; returns (rgb, alpha) floats.

    Premultiplied interpolation (no dark fringes); heavy shrinking first box-filters the asset.
    """
    x0, y0, x1, y1 = roi
    m = np.asarray(m, np.float64).copy()
    src = rgba.astype(np.float32)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:
        k = max(1, int(np.floor(1.0 / scale)))
        h, w = src.shape[:2]
        nh, nw = max(1, int(round(h / k))), max(1, int(round(w / k)))
        src = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_AREA)
        sx, sy = w / nw, h / nh
        pre = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]], np.float64)
        m = np.hstack([m[:, :2] @ pre[:, :2], (m[:, :2] @ pre[:, 2] + m[:, 2])[:, None]])
    a = src[..., 3:4] / 255.0
    prem = np.concatenate([src[..., :3] * a, a], axis=2)
    m[:, 2] -= (x0, y0)
    out = cv2.warpAffine(prem, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    alpha = np.clip(out[..., 3], 0.0, 1.0)
    rgb = out[..., :3] / np.maximum(alpha, 1e-6)[..., None]
    return np.clip(rgb, 0, 255).astype(np.float32), alpha.astype(np.float32)
