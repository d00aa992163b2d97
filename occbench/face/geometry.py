"""Face geometry shared by synthesis and evaluation: 5-point templates, similarity transforms, warps.

Conventions (used everywhere in occbench):
- Images are RGB uint8 arrays of shape (H, W, 3); points are float (x, y) pixel coordinates.
- The 5 landmarks are in ArcFace/insightface order: [left eye, right eye, nose tip, left mouth
  corner, right mouth corner], where "left" means image-left (the subject's right).
- The *face frame* is the canonical 112x112 ArcFace crop. Occlusion labels (area fraction,
  K x K cell fractions, pattern) are measured in that frame, so they mean the same thing for wild
  images and for pre-aligned crops (for which the face frame is the image itself).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

# insightface arcface_torch reference points for a 112x112 crop.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
# The 112x96 (SphereFace/CosFace/FROM) crop is the same template shifted 8 px left.
ARCFACE_112x96 = ARCFACE_112 - np.array([8.0, 0.0])

FACE_FRAME_SIZE = (112, 112)  # (H, W)


@dataclass(frozen=True)
class Template:
    """Reference 5 points for an aligned crop of ``size`` = (H, W)."""

    name: str
    points: np.ndarray
    size: tuple[int, int]


TEMPLATES: dict[str, Template] = {
    "arcface112": Template("arcface112", ARCFACE_112, (112, 112)),
    "arcface112x96": Template("arcface112x96", ARCFACE_112x96, (112, 96)),
}


def register_template(t: Template) -> Template:
    TEMPLATES[t.name] = t
    return t


# dlib's 150x150 face chip (get_face_chip_details, padding 0.25; the dlib-resnet input) in ArcFace order:
# where MediaPipe's 5 points land in dlib's own chip, mean over 298 LFW images (every 12th of the sorted
# lfw/*/*.jpg; occbench.recognizers.dlib_native.estimate_fallback_box_and_template). Spread: eyes ~1.8 px,
# nose 7/4.5 px (MediaPipe's nose tip vs dlib's nose base), mouth ~5 px. Lets exported dlib models run
# with the generic template alignment.
DLIB_150 = np.array([[47.22, 45.77], [100.58, 45.93], [74.23, 81.31], [50.73, 103.87], [97.17, 103.94]])
register_template(Template("dlib150", DLIB_150, (150, 150)))


def get_template(name: str) -> Template:
    """A template by name; dashes and underscores are ignored (``arcface-112`` = ``arcface112``)."""
    from ..errors import ConfigError

    key = str(name).replace("-", "").replace("_", "").lower()
    if key in TEMPLATES:
        return TEMPLATES[key]
    raise ConfigError(f"unknown alignment template {name!r}; known: "
                      f"{', '.join(template_label(t) for t in TEMPLATES)}")


def template_label(name: str) -> str:
    """``arcface112x96`` -> ``arcface-112x96`` (the spelling used in protocols)."""
    i = next((j for j, c in enumerate(name) if c.isdigit()), len(name))
    return f"{name[:i]}-{name[i:]}" if i < len(name) else name


def template_for_size(h: int, w: int) -> Template | None:
    """The template of a pre-aligned crop of this size, or None if the size is not a known one."""
    for t in TEMPLATES.values():
        if t.size == (h, w) and t.name.startswith("arcface"):
            return t
    return None


@dataclass
class FaceLandmarks:
    """Landmarks of one face in image pixel coordinates."""

    five: np.ndarray  # (5, 2) float, ArcFace order
    source: str = "unknown"  # "template" | "mediapipe" | "mediapipe-detection/<pass>" | "file" | ...
    dense: np.ndarray | None = None  # optional (N, 2) dense points (mediapipe: 468 mesh points)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # detector-specific point sets
    score: float | None = None
    method: str = ""  # step of the landmark chain that found them: mesh | detection | template | file

    def __post_init__(self):
        self.five = np.asarray(self.five, dtype=np.float64).reshape(5, 2)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst (Umeyama).

    Returns a 2x3 float64 matrix M with dst ~= M @ [x, y, 1].
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    r = u @ np.diag(d) @ vt
    var_s = (s_c**2).sum() / len(src)
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def invert_affine(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    return pts @ np.asarray(m, np.float64)[:, :2].T + np.asarray(m, np.float64)[:, 2]


def face_frame_transform(five: np.ndarray) -> np.ndarray:
    """2x3 matrix mapping image coordinates to the canonical 112x112 face frame."""
    return estimate_similarity(five, ARCFACE_112)


def warp(image: np.ndarray, m: np.ndarray, size_hw: tuple[int, int], *, nearest: bool = False,
         border_value=0) -> np.ndarray:
    """Warp ``image`` by the 2x3 matrix ``m`` (source -> destination) into an (H, W) canvas."""
    h, w = size_hw
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpAffine(image, np.asarray(m, np.float64), (w, h), flags=flags,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)


def align(image: np.ndarray, five: np.ndarray, template: str | Template = "arcface112") -> tuple[np.ndarray, np.ndarray]:
    """Align a face to a named template. Returns (crop, M) with M mapping image -> crop."""
    t = TEMPLATES[template] if isinstance(template, str) else template
    m = estimate_similarity(five, t.points)
    return warp(image, m, t.size), m


def mask_in_face_frame(mask: np.ndarray, five: np.ndarray) -> np.ndarray:
    """Warp an occlusion mask (uint8 0/255, image size) into the 112x112 face frame (uint8 0/255)."""
    m = face_frame_transform(five)
    out = warp(mask, m, FACE_FRAME_SIZE)
    return np.where(out >= 128, 255, 0).astype(np.uint8)
