"""The occluder transform: sample params once, then draw the same layer on image and mask.

Coordinates
-----------
Every built-in occluder is modelled in *model coordinates* = the canonical 112x112 ArcFace face
frame (``occbench.face.geometry.ARCFACE_112``) at scale s=1, anchored placement. ``get_params``
composes a 2x3 ``model_to_image`` similarity:

    image = F^-1( dest + R(theta) * (s * j) * (p - anchor) )

where F = ``face_frame_transform(five)`` (image -> frame), ``anchor`` is the occluder's anchor point
(model coords), ``dest`` is where the anchor goes in the face frame, s the requested scale, and
``j``/``theta`` a small sampled fit jitter (anchored placement only).

Drawing: the layer is rasterised once in model coordinates as a premultiplied RGBA *sprite* at
``level`` px per model unit, the smallest power of sqrt(2) at or above the image's own px per unit
(so the final warp only ever shrinks, by at most 1/sqrt(2)), then warped into the image with one
bilinear ``cv2.warpAffine``. Sprites are a pure function of (variation, level), cached per occluder:
the same bytes whatever the order or the process. Image-dependent steps (relighting, a hand's skin
matched to the face) come after the cache or are part of its key.

Variation bank: with ``bank: N > 0`` the random choices (``sample``) come from a fixed bank of N
variations per occluder, built from ``bank_seed`` (the pipeline passes the run's seed); each image
draws one index. Placement, scale, fit jitter and relighting stay per image. N = 0 samples fresh
choices for every image (most variety, slowest: nothing is reused).

Placement
---------
* ``anchored``: dest = anchor + jitter shift (the occluder's natural fit on this face).
* ``free`` (FROM, Qiu et al., Algorithm 1): the anchor is the centre of the occluder's bounding box,
  and dest is drawn uniformly over the face frame [0, 112) x [0, 112); no rotation or fit jitter.

Guarantees: s > 0 and finite (ConfigError otherwise); the similarity is isotropic (no aspect
change at any s); the occluder's smaller bounding-box side is at least ``MIN_SIDE_PX`` image
pixels (s is raised to meet this and ``scale_applied`` records it); and the occluder is translated
by the smallest shift that brings its *core point* (a point that is always opaque) inside the
image, so the visible mask is never empty.

Masks: a pixel is occluded where the layer's alpha >= 0.5 (``ALPHA_OCCLUDED``). See-through parts
(eyeglass lenses, alpha < 0.5) change the image but are not counted as occluded.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import cv2
import numpy as np

from ...errors import ConfigError
from ...registry import Registry
from ...seeding import rng_for
from ...face import geometry
from . import functional as F

ALPHA_OCCLUDED = 0.5
MIN_SIDE_PX = 4.0
MIN_STROKE_PX = 1.5
LEVEL_STEP = math.sqrt(2.0)  # sprite resolutions are powers of sqrt(2) px per model unit
SPRITE_MAX_PX = 1 << 21  # a bigger layer is drawn only where it lands in the image, and not cached
SPRITE_CACHE_BYTES = 48 << 20  # per occluder instance (least recently used sprites are dropped)
BANK_MAX = 1_000_000
CATEGORIES = ("mask", "respirator", "glasses", "sunglasses", "scarf", "hand", "hat", "block", "rgba")
PLACEMENTS = ("anchored", "free")

FAMILIES: Registry = Registry("occluder family")


@dataclass
class OcclusionResult:
    image: np.ndarray  # occluded RGB uint8, same shape as input
    mask: np.ndarray  # uint8 HxW, 255 = occluded (union with the input mask if one was given)
    params: dict  # JSON-serialisable; with the occluder's describe() enough to replay exactly
    alpha: np.ndarray | None = None  # float32 HxW layer opacity 0..1 (extension)


@dataclass
class Part:
    """One painted piece of an occluder, in model coordinates.

    Coverage = union(polys) minus union(holes); painted with ``fill`` (a functional.texture_rgb
    spec) times ``shade`` (a functional.shade_factor spec) at opacity ``alpha``.
    """

    polys: list
    fill: dict
    alpha: float = 1.0
    holes: list = field(default_factory=list)
    shade: dict | None = None
    clip: list = field(default_factory=list)  # if given, coverage is intersected with union(clip)


# ----------------------------------------------------------------------------- config validation


def _fail(name: str, key: str, msg: str) -> ConfigError:
    return ConfigError(f"occluder {name!r}: {key} {msg}")


def v_number(lo: float | None = None, hi: float | None = None, integer: bool = False) -> Callable:
    def check(name, key, val):
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
            raise _fail(name, key, f"must be a number, got {val!r}")
        if integer and int(val) != val:
            raise _fail(name, key, f"must be an integer, got {val!r}")
        if lo is not None and val < lo or hi is not None and val > hi:
            raise _fail(name, key, f"must be in [{lo}, {hi}], got {val!r}")
        return int(val) if integer else float(val)

    return check


def v_range(lo: float | None = None, hi: float | None = None, integer: bool = False) -> Callable:
    """A [low, high] pair to sample uniformly from (low <= high)."""
    num = v_number(lo, hi, integer)

    def check(name, key, val):
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            val = [val, val]
        if not isinstance(val, (list, tuple)) or len(val) != 2:
            raise _fail(name, key, f"must be a [low, high] pair, got {val!r}")
        a, b = num(name, key, val[0]), num(name, key, val[1])
        if a > b:
            raise _fail(name, key, f"low must be <= high, got {val!r}")
        return [a, b]

    return check


def v_bool(name, key, val):
    if not isinstance(val, bool):
        raise _fail(name, key, f"must be true or false, got {val!r}")
    return val


def v_point(name, key, val):
    if not isinstance(val, (list, tuple)) or len(val) != 2:
        raise _fail(name, key, f"must be an [x, y] point, got {val!r}")
    return [v_number()(name, key, val[0]), v_number()(name, key, val[1])]


def v_points(min_n: int = 3) -> Callable:
    def check(name, key, val):
        if not isinstance(val, (list, tuple)) or len(val) < min_n:
            raise _fail(name, key, f"must be a list of at least {min_n} [x, y] points")
        return [v_point(name, key, p) for p in val]

    return check


def v_colour(name, key, val):
    if (not isinstance(val, (list, tuple)) or len(val) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in val)):
        raise _fail(name, key, f"must be an [R, G, B] colour with integers 0..255, got {val!r}")
    return [int(c) for c in val]


def v_palette(name, key, val):
    """A mapping colour-name -> [R, G, B] (non-empty)."""
    if not isinstance(val, dict) or not val:
        raise _fail(name, key, "must be a non-empty mapping of colour name -> [R, G, B]")
    return {str(k): v_colour(name, f"{key}.{k}", c) for k, c in val.items()}


def v_weights(choices: tuple[str, ...] | None = None) -> Callable:
    """A mapping option -> non-negative weight, at least one positive (options from ``choices``)."""

    def check(name, key, val):
        if not isinstance(val, dict) or not val:
            raise _fail(name, key, "must be a non-empty mapping of option -> weight")
        out = {}
        for k, w in val.items():
            if choices is not None and k not in choices:
                hint = difflib.get_close_matches(str(k), choices, n=1)
                raise _fail(name, key, f"has unknown option {k!r}"
                            + (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; options: {', '.join(choices)}")
            out[str(k)] = v_number(0.0)(name, f"{key}.{k}", w)
        if sum(out.values()) <= 0:
            raise _fail(name, key, "needs at least one positive weight")
        return out

    return check


def v_dict(schema: dict[str, Callable]) -> Callable:
    def check(name, key, val):
        if not isinstance(val, dict):
            raise _fail(name, key, f"must be a mapping, got {val!r}")
        return validate_config(name, val, schema, prefix=key + ".")

    return check


def v_any(name, key, val):
    json.dumps(val)
    return copy.deepcopy(val)


def validate_config(name: str, cfg: dict, schema: dict[str, Callable], prefix: str = "") -> dict:
    out = {}
    for k, val in cfg.items():
        if k not in schema:
            hint = difflib.get_close_matches(k, list(schema), n=1)
            raise ConfigError(f"occluder {name!r}: unknown parameter {prefix}{k!r}"
                              + (f" (did you mean {prefix}{hint[0]!r}?)" if hint else "")
                              + f"; accepted: {', '.join(sorted(schema))}")
        out[k] = schema[k](name, prefix + k, val)
    missing = [k for k in schema if k not in out]
    if missing:
        raise ConfigError(f"occluder {name!r}: missing parameter(s) {', '.join(prefix + m for m in missing)}")
    return out


JITTER_SCHEMA = {"shift": v_number(0.0, 20.0), "angle": v_number(0.0, 45.0), "size": v_number(0.0, 0.5)}


# ----------------------------------------------------------------------------- sampling helpers


def pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    w = np.asarray([weights[k] for k in keys], np.float64)
    return keys[int(rng.choice(len(keys), p=w / w.sum()))]


def uniform(rng: np.random.Generator, rng_pair) -> float:
    return float(rng.uniform(rng_pair[0], rng_pair[1])) if rng_pair[1] > rng_pair[0] else float(rng_pair[0])


def randint(rng: np.random.Generator, rng_pair) -> int:
    return int(rng.integers(int(rng_pair[0]), int(rng_pair[1]) + 1))


def new_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays (recursively) to plain Python for json."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _similarity(scale: float, angle_deg: float, src, dst) -> np.ndarray:
    """2x3: p -> dst + R(angle) * scale * (p - src)."""
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    sx, sy = float(src[0]), float(src[1])
    return np.array([[c, -s, float(dst[0]) - (c * sx - s * sy)], [s, c, float(dst[1]) - (s * sx + c * sy)]])


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2x3 for x -> a(b(x))."""
    (a0, a1, a2), (a3, a4, a5) = np.asarray(a, np.float64).tolist()
    (b0, b1, b2), (b3, b4, b5) = np.asarray(b, np.float64).tolist()
    return np.array([[a0 * b0 + a1 * b3, a0 * b1 + a1 * b4, a0 * b2 + a1 * b5 + a2],
                     [a3 * b0 + a4 * b3, a3 * b1 + a4 * b4, a3 * b2 + a4 * b5 + a5]])


def resolve_landmarks(landmarks, image_shape) -> np.ndarray:
    """Five points from FaceLandmarks / (5, 2) array / None (= the template of a pre-aligned crop)."""
    if landmarks is None:
        t = geometry.template_for_size(int(image_shape[0]), int(image_shape[1]))
        if t is None:
            raise ConfigError(f"no landmarks given and a {image_shape[0]}x{image_shape[1]} image is not a "
                              "known pre-aligned crop size: pass FaceLandmarks for this face")
        return np.asarray(t.points, np.float64)
    five = landmarks.five if isinstance(landmarks, geometry.FaceLandmarks) else landmarks
    five = np.asarray(five, np.float64).reshape(5, 2)
    if not np.all(np.isfinite(five)):
        raise ConfigError("landmarks contain NaN/inf")
    return five


def check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(scale)) or float(scale) <= 0:
        raise ConfigError(f"scale must be a finite number > 0 (1 = natural fit), got {scale!r}")
    return float(scale)


def check_placement(placement) -> str:
    if placement not in PLACEMENTS:
        hint = difflib.get_close_matches(str(placement), PLACEMENTS, n=1)
        raise ConfigError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return placement


class _StrokeProbe(float):
    """A stroke_min of 0.0 that records every number it is compared with (the widths of
    ``max(width, stroke_min)``)."""

    def __new__(cls):
        probe = super().__new__(cls, 0.0)
        probe.seen = []
        return probe

    def _record(self, other, op):
        self.seen.append(float(other))
        return op(float(self), other)

    def __gt__(self, other):
        return self._record(other, float.__gt__)

    def __ge__(self, other):
        return self._record(other, float.__ge__)

    def __lt__(self, other):
        return self._record(other, float.__lt__)

    def __le__(self, other):
        return self._record(other, float.__le__)

    __hash__ = float.__hash__


# ----------------------------------------------------------------------------- the transform


class Occluder:
    """Base transform. Subclasses set ``family``/``SCHEMA`` and implement ``sample`` and ``build``.

    * ``sample(rng) -> dict``: the family's random choices (colours, style, texture seeds). JSON-able.
    * ``build(v, stroke_min) -> (parts, anchor, core)``: model-space geometry for those choices;
      ``stroke_min`` is the thinnest stroke (model units) that is still ``MIN_STROKE_PX`` on screen.
    Everything else (placement, scale, min size, clamping, rasterising, compositing) is shared.
    """

    family: ClassVar[str] = ""
    SCHEMA: ClassVar[dict[str, Callable]] = {}
    # True when ``build`` uses stroke_min only as ``max(width, stroke_min)`` with widths >= 0 (see _built)
    STROKE_MIN_AS_FLOOR: ClassVar[bool] = False
    COMMON_SCHEMA: ClassVar[dict[str, Callable]] = {
        "jitter": v_dict(JITTER_SCHEMA),
        "relight": v_number(0.0, 1.0),
        "bank": v_number(0, BANK_MAX, integer=True),
        "bank_seed": v_number(0, 2**63 - 1, integer=True),
    }
    DEFAULTS: ClassVar[dict[str, Any]] = {"bank": 0, "bank_seed": 0}

    def __init__(self, name: str, category: str, **cfg):
        if category not in CATEGORIES:
            raise ConfigError(f"occluder {name!r}: category must be one of {', '.join(CATEGORIES)}, got {category!r}")
        self.name = name
        self.category = category
        self.cfg = validate_config(name, {**self.DEFAULTS, **cfg}, {**self.COMMON_SCHEMA, **self.SCHEMA})
        self._bank: dict[int, tuple[dict, str]] = {}
        self._sprites: OrderedDict = OrderedDict()
        self._sprite_bytes = 0
        self.sprite_store = None  # a run's SpriteStore (set by the synth worker): bank sprites shared by processes
        self.check_config()

    # -- subclass hooks
    def check_config(self) -> None:
        """Cross-field validation (raise ConfigError)."""

    def sample(self, rng: np.random.Generator) -> dict:
        raise NotImplementedError

    def build(self, v: dict, stroke_min: float) -> tuple[list[Part], tuple[float, float], tuple[float, float]]:
        raise NotImplementedError

    def _built(self, v: dict, stroke_min: float, vkey: str | None = None):
        """``build`` memoised on (v, stroke_min): get_params and render reuse one geometry.

        With ``STROKE_MIN_AS_FLOOR`` the stroke_min=0 build records the widths its ``max(width,
        stroke_min)`` calls saw; a later stroke_min no larger than all of them gives the very same
        geometry, so that build is reused instead of run again."""
        vkey = vkey if vkey is not None else json.dumps(v, sort_keys=True)
        key = (vkey, float(stroke_min))
        cache = self.__dict__.setdefault("_build_cache", {})
        if key not in cache:
            floors = self.__dict__.setdefault("_build_floor", {})
            zero = (vkey, 0.0)
            if self.STROKE_MIN_AS_FLOOR and key != zero and zero in cache and stroke_min <= floors.get(zero, -1.0):
                built = cache[zero]
            elif self.STROKE_MIN_AS_FLOOR and key == zero:
                probe = _StrokeProbe()
                built = self.build(v, probe)
                floors[zero] = min(probe.seen, default=math.inf)
            else:
                built = self.build(v, stroke_min)
            if len(cache) >= 512:
                old = next(iter(cache))
                cache.pop(old)
                floors.pop(old, None)
                self.__dict__.get("_hulls", {}).pop(old, None)
            cache[key] = built
        return cache[key]

    def _extent(self, v: dict, stroke_min: float, vkey: str) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """(convex hull of every vertex, bbox) of the geometry, memoised with it: under any affine map
        the hull's image has the same bounding box as all the polygons'."""
        parts = self._built(v, stroke_min, vkey)[0]
        hulls = self.__dict__.setdefault("_hulls", {})
        key = (vkey, float(stroke_min))
        if key not in hulls:
            pts = np.vstack([np.asarray(p, np.float64).reshape(-1, 2) for part in parts for p in part.polys])
            if len(pts) > 16:  # the hull's vertices, taken from the float64 points
                pts = pts[np.sort(cv2.convexHull(pts.astype(np.float32), returnPoints=False).ravel())]
            bbox = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
            hulls[key] = (pts, bbox)
        return hulls[key]

    # -- public API
    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, category={self.category!r})"

    def describe(self) -> dict:
        return jsonable({"name": self.name, "family": self.family, "category": self.category,
                         "config": copy.deepcopy(self.cfg)})

    def __call__(self, image: np.ndarray, landmarks=None, *, rng: np.random.Generator, scale: float = 1.0,
                 placement: str = "anchored", mask: np.ndarray | None = None) -> OcclusionResult:
        image = _check_image(image)
        params = self.get_params(rng, image.shape, landmarks, scale, placement)
        roi, prem, alpha = self.layer(params, image)
        out = F.blend_premultiplied(image, roi, prem, alpha)
        full_alpha = np.zeros(image.shape[:2], np.float32)
        x0, y0, x1, y1 = roi
        full_alpha[y0:y1, x0:x1] = alpha
        return OcclusionResult(out, self._mask_from_alpha(mask, full_alpha), params, full_alpha)

    def variation(self, rng: np.random.Generator) -> tuple[dict, str, int | None]:
        """(choices, their canonical JSON, bank index): fresh from ``sample`` or drawn from the bank."""
        n = self.cfg["bank"]
        if n <= 0:
            v = jsonable(self.sample(rng))
            return v, json.dumps(v, sort_keys=True), None
        i = int(rng.integers(n))
        if i not in self._bank:  # bank entry i is a pure function of (bank_seed, name, i)
            v = jsonable(self.sample(rng_for(self.cfg["bank_seed"], self.name, "bank", i)))
            self._bank[i] = (v, json.dumps(v, sort_keys=True))
        v, vkey = self._bank[i]
        return json.loads(vkey), vkey, i

    def get_params(self, rng: np.random.Generator, image_shape, landmarks, scale: float = 1.0,
                   placement: str = "anchored") -> dict:
        """Sample everything random for one image. The only method that uses ``rng``."""
        if not isinstance(rng, np.random.Generator):
            raise ConfigError("rng must be a numpy.random.Generator (e.g. occbench.seeding.rng_for(seed, key))")
        scale = check_scale(scale)
        placement = check_placement(placement)
        h, w = int(image_shape[0]), int(image_shape[1])
        five = resolve_landmarks(landmarks, image_shape)
        frame_to_image = _frame_to_image(five)
        (fa, fb, _), (fc, fd, _) = frame_to_image.tolist()
        px_per_unit = math.sqrt(abs(fa * fd - fb * fc))
        if not px_per_unit > 0:
            raise ConfigError("degenerate landmarks (all points coincide)")

        v, vkey, bank_index = self.variation(rng)
        jit = self.cfg["jitter"]
        u = rng.random(6)  # one call: fit jitter (4) and the free-placement centre (2)
        j_shift = (2.0 * u[:2] - 1.0) * jit["shift"]
        j_angle = float((2.0 * u[2] - 1.0) * jit["angle"])
        j_size = float(1.0 + (2.0 * u[3] - 1.0) * jit["size"])
        center_frame = u[4:] * 112.0  # FROM: centre uniform over the (face-frame) image

        _, anchor, core = self._built(v, 0.0, vkey)
        x0, y0, x1, y1 = self._extent(v, 0.0, vkey)[1]
        base_w, base_h = x1 - x0, y1 - y0
        if placement == "anchored":
            src = (float(anchor[0]), float(anchor[1]))
            dest = (src[0] + float(j_shift[0]), src[1] + float(j_shift[1]))
            angle, size = j_angle, j_size
        else:  # FROM: no fit jitter, the bbox centre goes to the sampled centre
            src, dest = ((x0 + x1) / 2, (y0 + y1) / 2), (float(center_frame[0]), float(center_frame[1]))
            angle, size, j_shift = 0.0, 1.0, np.zeros(2)
        s_applied = scale
        min_side = min(base_w, base_h) * scale * size * px_per_unit
        if min_side < MIN_SIDE_PX:
            s_applied = MIN_SIDE_PX / (min(base_w, base_h) * size * px_per_unit)
        m = _compose(frame_to_image, _similarity(s_applied * size, angle, src, dest))
        # keep the always-opaque core point inside the image (smallest translation)
        (ma, mb, mc), (md, me, mf) = m.tolist()
        cx, cy = ma * core[0] + mb * core[1] + mc, md * core[0] + me * core[1] + mf
        shift = [min(max(cx, 0.0), w - 1.0) - cx, min(max(cy, 0.0), h - 1.0) - cy]
        m[0, 2] += shift[0]
        m[1, 2] += shift[1]

        level = sprite_level(px_per_unit * s_applied * size)
        stroke_min = MIN_STROKE_PX * LEVEL_STEP / level  # >= MIN_STROKE_PX image px, as level/sqrt2 < px/unit
        hull = self._extent(v, stroke_min, vkey)[0]
        pts = F.transform(m, hull)
        (bx0, by0), (bx1, by1) = pts.min(0).tolist(), pts.max(0).tolist()
        roi = [max(math.floor(bx0) - 1, 0), max(math.floor(by0) - 1, 0),
               min(math.ceil(bx1) + 2, w), min(math.ceil(by1) + 2, h)]
        ml = m.tolist()
        return {
            "name": self.name, "family": self.family, "category": self.category,
            "placement": placement, "scale": scale, "scale_applied": s_applied,
            "image_size": [h, w], "landmarks_five": five.tolist(), "px_per_unit": px_per_unit,
            "level": level, "stroke_min": stroke_min,
            "fit": {"shift": j_shift.tolist(), "angle": angle, "size": size},
            "center_frame": center_frame.tolist() if placement == "free" else None,
            "anchor_model": list(src),
            "anchor_image": [ml[0][0] * src[0] + ml[0][1] * src[1] + ml[0][2],
                             ml[1][0] * src[0] + ml[1][1] * src[1] + ml[1][2]],
            "clamp_shift": shift, "model_to_image": ml, "bbox_image": [bx0, by0, bx1, by1],
            "roi": roi, "bank_index": bank_index, "vars": v,
        }

    def layer(self, params: dict, image: np.ndarray | None) -> tuple[list[int], np.ndarray, np.ndarray]:
        """The layer described by params over its ROI: (roi, premultiplied rgb float32 hxwx3 in 0..255,
        alpha float32 hxw in 0..1). Alpha never depends on ``image``; colours do only through
        ``resolve_vars`` and relighting (both skipped when None)."""
        x0, y0, x1, y1 = params["roi"]
        h_img, w_img = params["image_size"]
        if image is not None and tuple(image.shape[:2]) != (h_img, w_img):
            raise ConfigError(f"params were sampled for a {h_img}x{w_img} image, got {image.shape[:2]}")
        hw = (max(y1 - y0, 0), max(x1 - x0, 0))
        if hw[0] == 0 or hw[1] == 0:
            return [x0, y0, x1, y1], np.zeros(hw + (3,), np.float32), np.zeros(hw, np.float32)
        m = np.asarray(params["model_to_image"], np.float64)
        v = self.resolve_vars(params["vars"], params, image)
        sprite, sprite_to_model = self.sprite(v, params, (x0, y0, x1, y1))
        a = _compose(m, sprite_to_model)
        a[:, 2] -= (x0, y0)
        warped = cv2.warpAffine(sprite, a, (hw[1], hw[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=(0, 0, 0, 0))
        alpha8 = cv2.extractChannel(warped, 3)
        alpha = alpha8.astype(np.float32) * np.float32(1.0 / 255.0)
        prem8 = cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB)
        strength = self.cfg["relight"]
        if strength > 0 and image is not None:
            sigma = 0.12 * (params["bbox_image"][2] - params["bbox_image"][0])
            f = F.relight_factor(image[y0:y1, x0:x1], alpha, strength, sigma)
            a255 = alpha8.astype(np.float32)
            prem = cv2.min(cv2.multiply(prem8, cv2.merge([f, f, f]), dtype=cv2.CV_32F),
                           cv2.merge([a255, a255, a255]))  # keep straight colours within 0..255
        else:
            prem = prem8.astype(np.float32)
        return [x0, y0, x1, y1], prem, alpha

    def render(self, params: dict, image: np.ndarray | None) -> tuple[list[int], np.ndarray, np.ndarray]:
        """As ``layer`` but with straight (not premultiplied) colours: (roi, rgb, alpha)."""
        roi, prem, alpha = self.layer(params, image)
        return roi, F.unpremultiply(prem, alpha), alpha

    def sprite(self, v: dict, params: dict, roi) -> tuple[np.ndarray, np.ndarray]:
        """(premultiplied RGBA uint8 sprite, 2x3 sprite px -> model) for choices ``v`` at ``params['level']``.

        The sprite grid is fixed by the level (pixel (i, j) is centred on model point ((j + gx) / level,
        (i + gy) / level)), so a window of it equals the same window of the whole sprite."""
        level, stroke_min = float(params["level"]), float(params["stroke_min"])
        vkey = json.dumps(v, sort_keys=True)
        key = (vkey, level)
        hit = self._sprites.get(key)
        if hit is not None:
            self._sprites.move_to_end(key)
            return hit
        bx0, by0, bx1, by1 = self._extent(v, stroke_min, vkey)[1]
        gx0, gy0 = math.floor(bx0 * level) - 2, math.floor(by0 * level) - 2
        gx1, gy1 = math.ceil(bx1 * level) + 3, math.ceil(by1 * level) + 3
        cache = (gx1 - gx0) * (gy1 - gy0) <= SPRITE_MAX_PX
        if not cache:  # only the part of the grid that lands in the ROI
            to_model = geometry.invert_affine(np.asarray(params["model_to_image"], np.float64))
            x0, y0, x1, y1 = roi
            uv = F.transform(to_model, [[x0 - 1, y0 - 1], [x1, y0 - 1], [x0 - 1, y1], [x1, y1]]) * level
            gx0, gy0 = max(gx0, math.floor(uv[:, 0].min()) - 2), max(gy0, math.floor(uv[:, 1].min()) - 2)
            gx1, gy1 = min(gx1, math.ceil(uv[:, 0].max()) + 3), min(gy1, math.ceil(uv[:, 1].max()) + 3)
            gx1, gy1 = max(gx1, gx0 + 1), max(gy1, gy0 + 1)
        model_to_sprite = np.array([[level, 0.0, -gx0], [0.0, level, -gy0]])
        store = self.sprite_store if cache and params.get("bank_index") is not None else None
        if store is not None and json.dumps(params["vars"], sort_keys=True) != vkey:
            store = None  # drawn from image-dependent values (resolve_vars): not one of the bank's looks
        rgba = None
        if store is not None:
            spath = store.path(self.definition_digest(), vkey, level, stroke_min, (gx0, gy0, gx1, gy1))
            rgba = store.load(spath, (gy1 - gy0, gx1 - gx0, 4))
        if rgba is None:
            rgba = self.draw_sprite(v, stroke_min, model_to_sprite, (gy1 - gy0, gx1 - gx0), vkey)
            if store is not None:
                store.save(spath, rgba)
        out = (rgba, geometry.invert_affine(model_to_sprite))
        if cache:
            self._sprites[key] = out
            self._sprite_bytes += rgba.nbytes
            while self._sprite_bytes > SPRITE_CACHE_BYTES and len(self._sprites) > 1:
                _, (old, _) = self._sprites.popitem(last=False)
                self._sprite_bytes -= old.nbytes
        return out

    def definition_digest(self) -> str:
        """SHA-256 of the definition (``describe()``): names what this instance draws, across processes."""
        d = self.__dict__.get("_definition_digest")
        if d is None:
            d = self._definition_digest = hashlib.sha256(
                json.dumps([type(self).__name__, self.describe()], sort_keys=True, default=str).encode()).hexdigest()
        return d

    def resolve_vars(self, v: dict, params: dict, image: np.ndarray | None) -> dict:
        """Hook: derive image-dependent drawing values (deterministic; e.g. a skin tone matched to
        the face). Must not change alpha, which has to be the same with image=None."""
        return v

    def draw_sprite(self, v: dict, stroke_min: float, m: np.ndarray, shape_hw: tuple[int, int],
                    vkey: str | None = None) -> np.ndarray:
        """Rasterise the parts (model -> sprite px ``m``) into a premultiplied RGBA uint8 array.

        Parts are painted in order with the 'over' operator on premultiplied colours; each part's
        coverage (its polygons, minus holes, within its clip) is exact to 1/16 px (4x4 supersampling)."""
        parts, _, _ = self._built(v, stroke_min, vkey)
        h, w = shape_hw
        prem = np.zeros((h, w, 3), np.float32)
        alpha = np.zeros((h, w), np.float32)
        minv = geometry.invert_affine(m)
        pixel = 1.0 / float(math.sqrt(abs(np.linalg.det(m[:, :2]))))  # model units per sprite px
        mapped: dict[int, np.ndarray] = {}  # parts share polygons (outline as body and clip): map once
        textures: dict[int, np.ndarray | None] = {}

        def to_px(polys):
            out = []
            for p in polys:
                if id(p) not in mapped:
                    mapped[id(p)] = F.transform(m, p)
                out.append(mapped[id(p)])
            return out

        for part in parts:
            polys = to_px(part.polys)
            win = F.window(polys, (0.0, 0.0), (h, w))
            if win is None:
                continue
            wx0, wy0, wx1, wy1 = win
            cov = F.part_coverage((wy1 - wy0, wx1 - wx0), polys, to_px(part.holes), to_px(part.clip), (wx0, wy0))
            if cov is None:
                continue
            a = cov * np.float32(part.alpha) if part.alpha != 1.0 else cov
            solid_fill = part.fill.get("kind") == "solid"
            if solid_fill and not part.shade:  # a flat colour: premultiply per channel, no model coordinates
                r, g, b = (float(c) for c in part.fill["rgb"])
                col_a = cv2.merge([a * np.float32(r), a * np.float32(g), a * np.float32(b)])
            else:
                u, vv = _model_coords(minv, (0.0, 0.0), wx0, wy0, wx1, wy1)
                if solid_fill:
                    col = F.texture_rgb(part.fill, u, vv, pixel)
                else:  # textures shared by several parts (a hand's skin) are evaluated once over the sprite
                    if id(part.fill) not in textures:
                        shared = sum(1 for q in parts if q.fill is part.fill) > 1
                        textures[id(part.fill)] = F.texture_rgb(part.fill, *_model_coords(minv, (0.0, 0.0), 0, 0, w, h),
                                                                pixel) if shared else None
                    full = textures[id(part.fill)]
                    col = full[wy0:wy1, wx0:wx1] if full is not None else F.texture_rgb(part.fill, u, vv, pixel)
                shade = F.shade_factor(part.shade, u, vv)
                wa = (a * shade).astype(np.float32) if isinstance(shade, np.ndarray) else a * np.float32(shade)
                col = np.ascontiguousarray(np.broadcast_to(col, wa.shape + (3,)), np.float32)
                col_a = cv2.multiply(col, cv2.merge([wa, wa, wa]))
            F.over_premultiplied(prem[wy0:wy1, wx0:wx1], alpha[wy0:wy1, wx0:wx1], col_a, a)
        return F.pack_premultiplied(prem, alpha)

    def apply(self, image: np.ndarray, params: dict) -> np.ndarray:
        image = _check_image(image)
        roi, prem, alpha = self.layer(params, image)
        return F.blend_premultiplied(image, roi, prem, alpha)

    def apply_to_mask(self, mask: np.ndarray, params: dict) -> np.ndarray:
        h, w = params["image_size"]
        if mask is not None and mask.shape[:2] != (h, w):
            raise ConfigError(f"mask shape {mask.shape[:2]} does not match the image size {(h, w)}")
        roi, _, alpha = self.layer(params, None)
        full = np.zeros((h, w), np.float32)
        x0, y0, x1, y1 = roi
        full[y0:y1, x0:x1] = alpha
        return self._mask_from_alpha(mask, full)

    @staticmethod
    def _mask_from_alpha(mask, alpha) -> np.ndarray:
        out = (alpha >= ALPHA_OCCLUDED).view(np.uint8) * np.uint8(255)
        if mask is not None:
            if mask.shape[:2] != alpha.shape:
                raise ConfigError(f"mask shape {mask.shape[:2]} does not match the image size {alpha.shape}")
            out[np.asarray(mask).reshape(alpha.shape) > 0] = 255
        return out


def _model_coords(minv: np.ndarray, origin, x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    """Model coordinates (u, v), float64, of the canvas pixels [x0, x1) x [y0, y1). When the canvas
    is aligned with the model axes (sprites) u is one row (1, W) and v one column (H, 1): every
    texture broadcasts them, and lattice noise is hashed on the lattice points only."""
    xs = (np.arange(x0, x1, dtype=np.float64) + origin[0])[None, :]
    ys = (np.arange(y0, y1, dtype=np.float64) + origin[1])[:, None]
    if minv[0, 1] == 0.0 and minv[1, 0] == 0.0:
        return minv[0, 0] * xs + minv[0, 2], minv[1, 1] * ys + minv[1, 2]
    u = minv[0, 0] * xs + minv[0, 1] * ys + minv[0, 2]
    v = minv[1, 0] * xs + minv[1, 1] * ys + minv[1, 2]
    return u, v


def sprite_level(px_per_unit: float) -> float:
    """Sprite resolution for a layer shown at ``px_per_unit`` image px per model unit: the smallest
    power of sqrt(2) at or above it (the warp into the image then shrinks by a factor in (0.71, 1])."""
    k = math.ceil(2.0 * math.log2(px_per_unit) - 1e-9)
    return float(2.0 ** (k / 2.0))


_FRAME_CACHE: OrderedDict = OrderedDict()


def _frame_to_image(five: np.ndarray) -> np.ndarray:
    """face frame -> image 2x3 of five points (memoised: every variant of an image asks for it)."""
    key = five.tobytes()
    m = _FRAME_CACHE.get(key)
    if m is None:
        m = _FRAME_CACHE[key] = geometry.invert_affine(geometry.face_frame_transform(five))
        if len(_FRAME_CACHE) > 64:
            _FRAME_CACHE.popitem(last=False)
    return m.copy()


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ConfigError(f"image must be an RGB uint8 array of shape (H, W, 3), got {image.dtype} {image.shape}")
    return image


def choose_colour(rng: np.random.Generator, palette: dict[str, list[int]]) -> dict:
    """A uniformly chosen palette entry as {"name": ..., "rgb": [...]}."""
    names = list(palette)
    k = names[int(rng.integers(len(names)))]
    return {"name": k, "rgb": list(palette[k])}


def tone(rgb, factor: float) -> list[float]:
    """Colour scaled by ``factor`` (darker < 1 < lighter), clipped to 0..255."""
    return [float(min(255.0, max(0.0, c * factor))) for c in rgb]


def toward(rgb, target, t: float) -> list[float]:
    return [float(a + (b - a) * t) for a, b in zip(rgb, target)]


def solid(rgb) -> dict:
    return {"kind": "solid", "rgb": [float(c) for c in rgb]}


def smooth(points, closed: bool = True, samples: int = 8) -> np.ndarray:
    return F.catmull_rom(np.asarray(points, np.float64), closed=closed, samples=samples)


TEXTURE_KINDS = ("solid", "stripes", "checks", "plaid", "dots", "fabric", "knit")


def sample_texture(rng: np.random.Generator, weights: dict[str, float], palette: dict[str, list[int]],
                   period: list[float], angles: list[float] | None = None) -> dict:
    """Sample a procedural textile (a functional.texture_rgb spec) with distinct palette colours."""
    kind = pick(rng, weights)
    names = list(palette)
    order = [names[i] for i in rng.permutation(len(names))]
    cols = [list(map(float, palette[n])) for n in (order * 3)[:3]]
    p = uniform(rng, period)
    angle = float(angles[int(rng.integers(len(angles)))]) if angles else 0.0
    seed = new_seed(rng)
    spec: dict = {"kind": kind, "colour_names": (order * 3)[:3]}
    if kind == "solid":
        spec.update(kind="fabric", colors=[cols[0], tone(cols[0], 0.9)], cell=p, seed=seed)
    elif kind == "stripes":
        spec.update(colors=cols[:2], period=p, angle=angle, duty=0.5)
    elif kind == "checks":
        spec.update(colors=cols[:2], period=p, angle=angle)
    elif kind == "plaid":
        spec.update(colors=cols[:3], period=2 * p, angle=angle)
    elif kind == "dots":
        spec.update(colors=cols[:2], period=p, radius=0.22)
    elif kind == "fabric":
        spec.update(colors=[cols[0], toward(cols[0], cols[1], 0.35)], cell=p, seed=seed)
    elif kind == "knit":
        spec.update(colors=[tone(cols[0], 0.8), cols[0]], period=max(2.0, p / 2.5), seed=seed)
    spec["texture"] = kind
    return spec
