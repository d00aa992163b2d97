"""``dlib-resnet``: dlib's own face recognizer (ResNet-29 metric net, 128-D, 99.38% on LFW per its author),
run by dlib itself, with dlib's own alignment. Optional extra: ``pip install 'occbench[dlib]'``.

Alignment (``DlibAligner``): HOG frontal face detector (upsampled once by default, so the ~100 px faces
of 250x250 LFW are found) + the 5-point shape predictor, then dlib's face chip (150x150, padding 0.25).
``face_chip_transform`` is the chip geometry of dlib's ``get_face_chip_details`` + ``extract_image_chip``
(dlib/image_transforms/interpolation.h) as a 2x3 image->chip matrix:

1. fit a similarity (least squares) from dlib's 5-point mean face, placed in the chip as
   ``(padding + p) / (1 + 2 padding) * size``, to the detected points;
2. turn it into dlib's ``chip_details``: angle and scale of the similarity, and a rectangle centred on
   the image of the chip centre ``(size/2, size/2)`` whose corners are ``size*scale - 1`` apart
   (``centered_drect`` subtracts one);
3. map chip pixel (0,0), (size-1,0), (0,size-1) to the rectangle corners rotated about its centre.

Sampled with bilinear interpolation *truncated* to uint8 this reproduces ``dlib.get_face_chip`` exactly
(identical pixels on LFW);
``cv2.warpAffine`` rounds instead, so crops made with ``occbench.face.geometry.warp`` differ by at most
1 grey level (mean ~0.5). (dlib also pre-shrinks through an image pyramid when the chip is more than
2x smaller than the face, i.e. faces over ~300 px; the matrix is the same, the sampling then differs.)

When the HOG detector misses the face the landmarks point at (or finds none), the 5-point predictor
runs on a box derived from those landmarks (``FALLBACK_BOX``); ``DlibAligner.counts`` records how
often each path was taken ("hog", "fallback", "failed").

Embeddings: ``compute_face_descriptor`` on the chips (batch API, no jitter), L2-normalised. Raw dlib
descriptors have norms of about 1.3-1.6 and dlib's own rule is "same person if the *raw* Euclidean
distance < 0.6"; after normalisation cosine similarity is monotone in the distance between the
*normalised* vectors (d^2 = 2 - 2 cos), not exactly in dlib's raw distance, so thresholds are chosen
on cosine like for every other recognizer.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter

import numpy as np

from ..face.geometry import (FaceLandmarks, apply_affine, estimate_similarity, face_frame_transform,
                              invert_affine)
from .base import Preprocess, l2_normalize
from .dlib_models import import_dlib, recognition_model_path, shape_predictor_path
from .registry import RECOGNIZERS, compose_fingerprint, file_sha256

NAME = "dlib-resnet"
TEMPLATE = "dlib150"  # occbench.face.geometry: the generic template closest to dlib's chip
CHIP_SIZE = 150
CHIP_PADDING = 0.25

# dlib's 5-point mean face (get_face_chip_details), in units of the unpadded face square. Order of
# shape_predictor_5_face_landmarks: image-right eye outer and inner corner, image-left eye outer and
# inner corner, bottom of the nose.
DLIB_MEAN_FACE_5 = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                             [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                             [0.4901123135679, 0.6277975316475]])

# The HOG detector's box (left, top, right, bottom) in the 112x112 ArcFace face frame of MediaPipe's
# 5 points: the median over 298 LFW images where both found the face (every 12th of the sorted
# lfw/*/*.jpg, estimate_fallback_box_and_template; per side std ~6-8 px as HOG boxes come in coarse
# scale steps). Used to run the 5-point predictor when HOG misses.
FALLBACK_BOX = (9.7, 23.2, 96.3, 113.0)


def face_chip_transform(parts: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """2x3 image -> chip matrix of dlib's ``get_face_chip_details(det, size, padding)`` for the 5 predictor
    points ``parts`` (5, 2); see the module docstring."""
    chip_pts = (padding + DLIB_MEAN_FACE_5) / (2 * padding + 1) * size
    sim = estimate_similarity(chip_pts, np.asarray(parts, np.float64).reshape(5, 2))  # chip -> image
    vx = sim[:, 0]  # image of the chip's unit x vector
    angle, scale = np.arctan2(vx[1], vx[0]), np.hypot(vx[0], vx[1])
    centre = sim[:, :2] @ np.array([size / 2.0, size / 2.0]) + sim[:, 2]
    half = (size * scale - 1.0) / 2.0
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    tl, tr, bl = (rot @ np.array(v) + centre for v in ([-half, -half], [half, -half], [-half, half]))
    chip_to_image = np.column_stack([(tr - tl) / (size - 1), (bl - tl) / (size - 1), tl])
    return invert_affine(chip_to_image)


def fallback_box(landmarks: FaceLandmarks) -> tuple[int, int, int, int]:
    """A HOG-like (left, top, right, bottom) box from 5 ArcFace-order points (``FALLBACK_BOX``)."""
    l, t, r, b = FALLBACK_BOX
    corners = np.array([[l, t], [r, t], [l, b], [r, b]])
    pts = apply_affine(invert_affine(face_frame_transform(landmarks.five)), corners)
    lo, hi = pts.min(0), pts.max(0)
    return int(round(lo[0])), int(round(lo[1])), int(round(hi[0])), int(round(hi[1]))


def alignment_description(upsample: int = 1, size: int = CHIP_SIZE, padding: float = CHIP_PADDING,
                          predictor: str = "shape_predictor_5_face_landmarks.dat") -> dict:
    return {"detector": "dlib HOG frontal_face_detector", "upsample": int(upsample), "predictor": predictor,
            "chip_size": int(size), "padding": float(padding), "fallback_box": list(FALLBACK_BOX)}


def dlib_weights_hash(dat_path: str | os.PathLike, backend: str, upsample: int = 1,
                      predictor_path: str | os.PathLike | None = None) -> str:
    """Hash of (descriptor weights, 5-point predictor weights, alignment settings, backend) for the
    fingerprints of ``dlib-resnet`` ("dlib") and ``dlib-resnet-torch`` ("torch"). The backend is part
    of it so the two never share cached embeddings (which is what comparing them needs)."""
    predictor = file_sha256(shape_predictor_path(predictor_path))
    payload = json.dumps({"weights": file_sha256(dat_path), "predictor": predictor,
                          "alignment": alignment_description(upsample), "backend": backend}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class DlibAligner:
    """dlib's alignment as a 2x3 image -> 150x150 chip matrix (see the module docstring)."""

    def __init__(self, upsample: int = 1, size: int = CHIP_SIZE, padding: float = CHIP_PADDING,
                 predictor_path: str | os.PathLike | None = None):
        self.upsample = int(upsample)
        self.size = int(size)
        self.padding = float(padding)
        self.predictor_path = shape_predictor_path(predictor_path)
        self.counts: Counter = Counter()  # "hog" | "fallback" | "failed"
        self.last_source: str | None = None
        self._dlib = import_dlib()
        self._detector = self._predictor = None

    def __getstate__(self):  # dlib objects do not pickle; rebuild them where used
        return {k: v for k, v in self.__dict__.items() if k not in ("_dlib", "_detector", "_predictor")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._dlib = import_dlib()
        self._detector = self._predictor = None

    def describe(self) -> dict:
        return alignment_description(self.upsample, self.size, self.padding, self.predictor_path.name)

    def _models(self):
        if self._detector is None:
            self._detector = self._dlib.get_frontal_face_detector()
            self._predictor = self._dlib.shape_predictor(str(self.predictor_path))
        return self._detector, self._predictor

    def detect_box(self, image: np.ndarray, landmarks: FaceLandmarks | None):
        """The HOG box of the face the landmarks point at (their centroid inside it, nearest centre),
        or None."""
        detector, _ = self._models()
        boxes = list(detector(np.ascontiguousarray(image), self.upsample))
        if landmarks is None:
            return max(boxes, key=lambda r: r.area()) if boxes else None
        cx, cy = landmarks.five.mean(0)
        inside = [r for r in boxes if r.left() <= cx <= r.right() and r.top() <= cy <= r.bottom()]
        if not inside:
            return None
        return min(inside, key=lambda r: (r.dcenter().x - cx) ** 2 + (r.dcenter().y - cy) ** 2)

    def parts(self, image: np.ndarray, landmarks: FaceLandmarks | None) -> tuple[np.ndarray | None, str]:
        """(5 predictor points, source) with source "hog" | "fallback" | "failed"."""
        image = np.ascontiguousarray(image)
        box, source = self.detect_box(image, landmarks), "hog"
        if box is None:
            if landmarks is None or not np.all(np.isfinite(landmarks.five)):
                return None, "failed"
            box, source = self._dlib.rectangle(*fallback_box(landmarks)), "fallback"
        _, predictor = self._models()
        shape = predictor(image, box)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float64), source

    def transform(self, image: np.ndarray, landmarks: FaceLandmarks | None) -> np.ndarray | None:
        parts, source = self.parts(image, landmarks)
        self.counts[source] += 1
        self.last_source = source
        return None if parts is None else face_chip_transform(parts, self.size, self.padding)


class DlibRecognizer:
    """dlib's ResNet descriptor run by dlib (CPU), implementing ``occbench.recognizers.base.Recognizer``."""

    def __init__(self, *, dat_path: str | os.PathLike | None = None, upsample: int = 1,
                 aligner: DlibAligner | None = None, batch_size: int = 64):
        self.name = NAME
        self.dat_path = recognition_model_path(dat_path)
        self.aligner = aligner or DlibAligner(upsample=upsample)
        self.batch_size = int(batch_size)
        self._dlib = import_dlib()
        self._model = None
        # dlib's input_rgb_image: (pixel - mean) / 256, RGB; means as stored in the .dat.
        self.preprocess = Preprocess(input_size=(CHIP_SIZE, CHIP_SIZE), channel_order="RGB",
                                     mean=(122.78199768066406, 117.0009994506836, 104.2979965209961),
                                     std=(256.0, 256.0, 256.0), template=TEMPLATE, flip_test=False)
        self._weights_hash: str | None = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_dlib", "_model")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._dlib = import_dlib()
        self._model = None

    def __repr__(self) -> str:
        return f"DlibRecognizer({self.dat_path.name!r}, upsample={self.aligner.upsample})"

    @property
    def model(self):
        if self._model is None:
            self._model = self._dlib.face_recognition_model_v1(str(self.dat_path))
        return self._model

    def alignment_transform(self, image: np.ndarray, landmarks: FaceLandmarks) -> np.ndarray | None:
        return self.aligner.transform(image, landmarks)

    def raw_descriptors(self, crops: np.ndarray) -> np.ndarray:
        """dlib's un-normalised descriptors (N, 128) of 150x150 uint8 RGB chips."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3) or crops.dtype != np.uint8:
            from ..errors import ConfigError

            raise ConfigError(f"dlib-resnet expects uint8 RGB chips (N, 150, 150, 3), got {crops.shape} "
                              f"{crops.dtype}; align with alignment_transform (dlib's face chip)")
        out = np.zeros((len(crops), 128), np.float32)
        for i in range(0, len(crops), self.batch_size):
            batch = [np.ascontiguousarray(c) for c in crops[i:i + self.batch_size]]
            out[i:i + len(batch)] = np.asarray(self.model.compute_face_descriptor(batch, 0), np.float32)
        return out

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return l2_normalize(self.raw_descriptors(crops))

    def fingerprint(self) -> str:
        if self._weights_hash is None:
            self._weights_hash = dlib_weights_hash(self.dat_path, "dlib", self.aligner.upsample,
                                                   self.aligner.predictor_path)
        return compose_fingerprint(self._weights_hash, self.preprocess)


@RECOGNIZERS.register(NAME)
def create_dlib_resnet(spec: str = NAME, *, dat_path: str | os.PathLike | None = None, upsample: int = 1,
                       **_ignored) -> DlibRecognizer:
    return DlibRecognizer(dat_path=dat_path, upsample=upsample)


def estimate_fallback_box_and_template(images, landmarker, aligner: DlibAligner | None = None) -> dict:
    """Estimate ``FALLBACK_BOX`` and the ``dlib150`` template from real images.

    For every image where both MediaPipe (``landmarker.detect``) and the HOG detector find the face:
    the HOG box in the ArcFace face frame of the 5 points, and where the 5 points land in dlib's chip.
    Returns medians (the box: HOG boxes come in coarse pyramid steps), means and standard deviations."""
    aligner = aligner or DlibAligner()
    boxes, chip_points = [], []
    for image in images:
        res = landmarker.detect(image)
        if not res.ok:
            continue
        box = aligner.detect_box(image, res.landmarks)
        if box is None:
            continue
        corners = np.array([[box.left(), box.top()], [box.right(), box.bottom()]], np.float64)
        boxes.append(apply_affine(face_frame_transform(res.landmarks.five), corners).reshape(-1))
        parts, _ = aligner.parts(image, res.landmarks)
        chip_points.append(apply_affine(face_chip_transform(parts), res.landmarks.five))
    boxes, chip_points = np.array(boxes), np.array(chip_points)
    return {"n": len(boxes), "box_median": np.median(boxes, 0), "box_mean": boxes.mean(0),
            "box_std": boxes.std(0), "template_mean": chip_points.mean(0), "template_std": chip_points.std(0)}
