"""Tiny generated "faces" with known ArcFace-template landmarks, for tests and the demo's fallback.

A face is a skin-toned ellipse with dark eyes, a nose and a mouth drawn exactly at the five ArcFace
points, on a noisy background, so landmark-dependent code has ground truth. Not meant to fool a
face detector (MediaPipe usually finds no face in them).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


def face_points(size: int = 112) -> np.ndarray:
    """Five points of a synthetic face on a size x size canvas: the 112 template itself for 112, the
    template scaled 1.3x and centred (LFW-like framing) for larger canvases."""
    if size == 112:
        return ARCFACE_112.copy()
    s = 1.3 * size / 250.0
    centre = np.array([size / 2.0, size * 0.52])
    return (ARCFACE_112 - np.array([56.0, 72.0])) * s + centre


def synthetic_face(size: int = 112, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 image size x size, five points) of a deterministic synthetic face."""
    rng = np.random.default_rng(seed)
    five = face_points(size)
    bg = rng.integers(40, 200, 3)
    img = np.clip(bg + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    eye_d = float(np.linalg.norm(five[1] - five[0]))
    centre = five.mean(0)
    skin = tuple(int(c) for c in rng.integers([150, 100, 80], [240, 190, 160]))
    axes = (int(eye_d * 1.25), int(eye_d * 1.7))
    cv2.ellipse(img, tuple(int(v) for v in centre), axes, 0, 0, 360, skin, -1, cv2.LINE_AA)
    r = max(2, int(eye_d * 0.12))
    for p in five[:2]:
        cv2.circle(img, tuple(int(round(v)) for v in p), r, (30, 30, 30), -1, cv2.LINE_AA)
    n = five[2]
    tri = np.array([n + [0, -eye_d * 0.35], n + [-eye_d * 0.15, 0], n + [eye_d * 0.15, 0]], np.int32)
    cv2.fillConvexPoly(img, tri, tuple(int(c * 0.8) for c in skin), cv2.LINE_AA)
    cv2.line(img, tuple(int(round(v)) for v in five[3]), tuple(int(round(v)) for v in five[4]),
             (120, 30, 40), max(1, r // 2), cv2.LINE_AA)
    return img, five


def write_faces(root: str | Path, n: int, size: int = 112, fmt: str = "jpg", ids: int = 3,
                seed: int = 0) -> list[str]:
    """Write ``n`` synthetic faces as root/id<j>/face_<i>.<fmt>; returns the keys (sorted)."""
    root = Path(root)
    keys = []
    for i in range(n):
        img, _ = synthetic_face(size, seed=seed * 100_003 + i)
        key = f"id{i % ids}/face_{i:04d}.{fmt}"
        p = root / key
        p.parent.mkdir(parents=True, exist_ok=True)
        ext = ".jpg" if fmt == "jpg" else "." + fmt
        ok, buf = cv2.imencode(ext, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        assert ok
        p.write_bytes(buf.tobytes())
        keys.append(key)
    return sorted(keys)
