"""MediaPipe pieces shared by the landmark chain's steps: the face-mesh points that make the 5 ArcFace-order
points, the face choice among several candidates, and the filter for the native code's start-up log lines
(see :mod:`occbench.face.landmarks`)."""
from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile

import numpy as np

# MediaPipe face-mesh indices (mediapipe.solutions.face_mesh_connections). "RIGHT" is the subject's
# right eye, which is image-left, i.e. ArcFace point 0.
MP_RIGHT_EYE = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246)
MP_LEFT_EYE = (249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)
MP_NOSE_TIP = 1
MP_MOUTH_LEFT = 61  # image-left outer lip corner
MP_MOUTH_RIGHT = 291

_NATIVE_NOISE = re.compile(
    r"Created TensorFlow Lite XNNPACK delegate"
    r"|All log messages before absl::InitializeLog\(\) is called"
    r"|inference_feedback_manager\.cc.*Feedback manager requires a model with a single signature"
    r"|landmark_projection_calculator\.cc.*Using NORM_RECT without IMAGE_DIMENSIONS"
)


@contextlib.contextmanager
def _filtered_native_stderr():
    """Capture fd 2, then re-emit every line except MediaPipe's known start-up noise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode("utf-8", "replace").splitlines()
                    if ln.strip() and not _NATIVE_NOISE.search(ln)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


def mesh_to_five(dense: np.ndarray) -> np.ndarray:
    """468 MediaPipe mesh points (pixels) -> 5 ArcFace-order points."""
    d = np.asarray(dense, np.float64)
    return np.stack([d[list(MP_RIGHT_EYE)].mean(0), d[list(MP_LEFT_EYE)].mean(0),
                     d[MP_NOSE_TIP], d[MP_MOUTH_LEFT], d[MP_MOUTH_RIGHT]])


def choose_face(candidates: list[np.ndarray], size_hw: tuple[int, int]) -> int:
    """Index of the face to keep: min (distance of bbox centre to image centre) / face size."""
    h, w = size_hw
    centre = np.array([w / 2.0, h / 2.0])
    best, best_key = 0, None
    for i, pts in enumerate(candidates):
        lo, hi = pts.min(0), pts.max(0)
        size = math.sqrt(max(float(np.prod(hi - lo)), 1e-12))
        k = (float(np.linalg.norm((lo + hi) / 2 - centre)) / size, -size)
        if best_key is None or k < best_key:
            best, best_key = i, k
    return best
