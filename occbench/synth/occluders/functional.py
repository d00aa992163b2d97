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


def part_coverage(shape_hw, polys, holes, clip, origin, ss: int = 4) -> np.ndarray | None:
    """Anti-aliased coverage (float32 0..1) of union(polys) minus union(holes), within union(clip)
    if given, on a canvas whose pixel (0, 0) is at ``origin``; None where nothing is covered.

    Polygons are filled on a ``ss``-times finer grid (ss a power of 2) and box-averaged by repeated
    halving, so coverage is exact to 1/ss^2 of a pixel."""
    h, w = shape_hw
    if h <= 0 or w <= 0:
        return None
    canvas = _fine_fill(np.zeros((h * ss, w * ss), np.uint8), polys, origin, ss, 255)
    _fine_fill(canvas, holes, origin, ss, 0)
    if clip:
        canvas = cv2.bitwise_and(canvas, _fine_fill(np.zeros_like(canvas), clip, origin, ss, 255))
    while canvas.shape[0] > h:
        canvas = cv2.resize(canvas, (canvas.shape[1] // 2, canvas.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if not canvas.any():
        return None
    return canvas.astype(np.float32) * np.float32(1.0 / 255.0)


def _fine_fill(canvas: np.ndarray, polys, origin, ss: int, value: int) -> np.ndarray:
    """Fill each polygon (canvas coords: image coords - origin) on the ss-times finer ``canvas``."""
    ox, oy = origin
    for poly in polys:
        p = np.asarray(poly, np.float64).reshape(-1, 2)
        if len(p) < 3 or not np.all(np.isfinite(p)):
            continue
        q = np.clip((p - (ox - 0.5, oy - 0.5)) * ss - 0.5, -1e5, 1e5)  # fine pixel centres
        cv2.fillPoly(canvas, [np.round(q * (1 << _SUBPIX_BITS)).astype(np.int32)], value, cv2.LINE_8,
                     shift=_SUBPIX_BITS)
    return canvas


def over_premultiplied(dst_prem: np.ndarray, dst_a: np.ndarray, src_prem: np.ndarray, a: np.ndarray) -> None:
    """In place: paint a premultiplied layer (src_prem, a) over (dst_prem, dst_a)."""
    keep = np.float32(1.0) - a
    dst_prem[...] = cv2.multiply(dst_prem, cv2.merge([keep, keep, keep])) + src_prem
    dst_a *= keep
    dst_a += a


def pack_premultiplied(prem: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Premultiplied rgb (0..255) + alpha (0..1) floats -> premultiplied RGBA uint8 (a sprite)."""
    a255 = cv2.min(cv2.max(alpha, 0.0), 1.0) * np.float32(255.0)
    rgb = cv2.min(cv2.max(prem, 0.0), cv2.merge([a255, a255, a255]))  # straight colour <= 255
    r, g, b = cv2.split(rgb)
    return cv2.convertScaleAbs(cv2.merge([r, g, b, a255]))  # round to nearest (values are >= 0)


def unpremultiply(prem: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight colours of a premultiplied layer (0 where alpha is 0)."""
    safe = np.where(alpha > 0, alpha, np.float32(1.0)).astype(np.float32)
    return np.clip(prem / safe[..., None], 0, 255).astype(np.float32)


def blend_premultiplied(image: np.ndarray, roi, prem: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """A copy of ``image`` with a premultiplied layer over the ROI: out = image * (1 - alpha) + prem."""
    out = image.copy()
    x0, y0, x1, y1 = roi
    if x1 <= x0 or y1 <= y0:
        return out
    keep = np.float32(1.0) - alpha
    mixed = cv2.multiply(image[y0:y1, x0:x1], cv2.merge([keep, keep, keep]), dtype=cv2.CV_32F)
    out[y0:y1, x0:x1] = cv2.add(mixed, prem, dtype=cv2.CV_8U)  # rounds to nearest and saturates
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


def _separable(i: np.ndarray, j: np.ndarray) -> bool:
    """i a row (1, W) and j a column (H, 1): coordinates of a canvas aligned with the model axes."""
    return i.ndim == 2 and j.ndim == 2 and i.shape[0] == 1 and j.shape[1] == 1


def _lattice_rows(i: np.ndarray, j: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For separable (i, j): hash2 of the lattice points i0..imax+1 x j0..jmax+1 only, as
    (a, b, row index): a[r, x] = hash2(i[x], j0 + r), b[r, x] = hash2(i[x] + 1, j0 + r)."""
    i0, j0 = int(i.min()), int(j.min())
    grid = hash2(np.arange(i0, int(i.max()) + 2)[None, :], np.arange(j0, int(j.max()) + 2)[:, None], seed)
    ix = (i - i0).ravel()
    return grid[:, ix], grid[:, ix + 1], (j - j0).ravel()


def value_noise(u: np.ndarray, v: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """Smooth lattice noise in [0, 1) with feature size ``cell`` (model units)."""
    x, y = u / cell, v / cell
    i, j = np.floor(x), np.floor(y)
    fx, fy = (x - i).astype(np.float32), (y - j).astype(np.float32)
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    i, j = i.astype(np.int64), j.astype(np.int64)
    if _separable(i, j):  # interpolate along x on the lattice rows, then gather whole rows
        a, b, iy = _lattice_rows(i, j, seed)
        rows = a + (b - a) * fx
        r0, r1 = rows[iy], rows[iy + 1]
        return r0 + (r1 - r0) * fy
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
    i, j = np.floor(u / cell).astype(np.int64), np.floor(v / cell).astype(np.int64)
    if _separable(i, j):
        a, _, iy = _lattice_rows(i, j, seed)
        return a[iy]
    return hash2(i, j, seed)


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
    """c0 * (1 - t) + c1 * t per channel: colours (3,) or (H, W, 3), t (H, W) -> (H, W, 3) float32."""
    t = np.asarray(t, np.float32)
    c0, c1 = np.asarray(c0, np.float32), np.asarray(c1, np.float32)
    if c0.ndim == 1 and c1.ndim == 1:
        s = np.float32(1.0) - t
        return cv2.merge([s * c0[k] + t * c1[k] for k in range(3)])
    return c0 * (1 - t[..., None]) + c1 * t[..., None]


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
        out = np.empty(np.broadcast_shapes(np.shape(u), np.shape(v)) + (3,), np.float32)
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
    """Low-frequency luminance of the face under the occluder, relative to its alpha-weighted mean,
    clipped to [0.55, 1.35], ** strength.

    Lets an occluder pick up the scene's light fall-off (shadowed side of the face stays darker).
    The blur runs on a Gaussian pyramid level about sigma/2 times smaller (only low frequencies
    survive it anyway) and is brought back to the ROI size."""
    h, w = alpha.shape
    sigma = max(float(sigma), 0.5)
    lum = cv2.cvtColor(np.ascontiguousarray(image_roi), cv2.COLOR_RGB2GRAY)
    while sigma >= 4.0 and min(lum.shape) >= 4:  # each level halves the size (and the blur still to do)
        lum, sigma = cv2.pyrDown(lum), sigma / 2.0
    blur = cv2.GaussianBlur(lum.astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    if blur.shape != (h, w):
        blur = cv2.resize(blur, (w, h), interpolation=cv2.INTER_LINEAR)
    wsum = float(alpha.sum())
    if wsum <= 1e-6:
        return np.ones((h, w), np.float32)
    mean = float(np.dot(blur.ravel(), alpha.ravel()) / wsum)
    ratio = cv2.max(cv2.min(cv2.multiply(blur + np.float32(8.0), 1.0 / (mean + 8.0)), 1.35), 0.55)
    return cv2.pow(ratio, float(strength))
