"""Protocol-level crop switch (``crop:`` in a protocol): run any recognizer on FROM's 112x96 crop.

``crop: model`` (the default, also when the key is absent): each recognizer aligns faces its own way
(its preprocess template, or its own detector for dlib).

``crop: arcface-112x96``: FROM's setting (Qiu et al., TPAMI 2021: LFW aligned to the 112x96 template,
the network sees 112x96 pixels). The five landmarks are aligned to the ArcFace 112x96 template
(``face.geometry.ARCFACE_112x96``, the 112x112 template shifted 8 px left). What the model receives:

- a model whose input is 112x96: that crop as it is (its own template alignment, if it uses arcface112x96);
- any other model: the 112x96 crop padded with black to 112x112 (8 px each side, i.e. placed where it
  lies in the ArcFace 112x112 frame), then resized to the model's input. For a 112x112 ArcFace model
  this is its usual crop with the 8 outer columns on each side black: the face is where the model
  expects it and it sees exactly the pixels FROM's crop holds. FROM itself never runs a 112x112 model
  (its networks take 112x96), so it has no rule for this; padding, not stretching, keeps the face
  geometry of the template. For models trained on another alignment (dlib's 150x150 chip) the face
  then sits at the ArcFace scale, not the one the model was trained on: a second difference.

Occlusion estimates are scored in the frame the model saw (the ground truth is warped with the same
matrix). The switch is a wrapper around the recognizer: a new alignment, the black band applied to
the crops before the model, and ``+crop-arcface-112x96`` in the fingerprint (separate cache entries).
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..face.geometry import ARCFACE_112x96, estimate_similarity

CROPS = ("model", "arcface-112x96")
FROM_CROP_HW = (112, 96)
PAD_X = 8  # the 112x96 crop sits at x = 8..103 of the ArcFace 112x112 frame


def apply_crop(recognizer, crop: str | None):
    """The recognizer as the protocol's ``crop`` makes it see faces (``model``/None: unchanged)."""
    if crop in (None, "model"):
        return recognizer
    if crop == "arcface-112x96":
        return CropSwitch(recognizer, crop)
    raise ConfigError(f"unknown crop {crop!r}; known: {', '.join(CROPS)}")


def crop_geometry(input_hw) -> tuple[np.ndarray, np.ndarray | None]:
    """(3x3 matrix from the 112x96 crop to the model's input, (W,) bool columns to keep or None = all)."""
    h, w = int(input_hw[0]), int(input_hw[1])
    if (h, w) == FROM_CROP_HW:
        return np.eye(3), None
    pad = np.array([[1.0, 0, PAD_X], [0, 1.0, 0], [0, 0, 1.0]])
    # 112x112 -> (h, w), pixel centres preserved: x' = (x + 0.5) * w / 112 - 0.5
    fx, fy = w / 112.0, h / 112.0
    scale = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1.0]])
    # FROM's window, pixel edges [7.5, 103.5) of the 112 frame, in model pixels; keep columns centred inside
    lo, hi = PAD_X * fx - 0.5, (PAD_X + FROM_CROP_HW[1]) * fx - 0.5
    x = np.arange(w)
    return scale @ pad, (x >= lo) & (x < hi)


class CropSwitch:
    """A recognizer seen through a protocol's ``crop`` (everything else is delegated)."""

    def __init__(self, inner, crop: str):
        self._inner = inner
        self.crop = crop
        self._post, self._keep = crop_geometry(inner.preprocess.input_size)
        if hasattr(inner, "infer"):
            self.infer = lambda crops: inner.infer(self.blank(crops))

    def __getattr__(self, name):
        if name == "_inner":  # not set yet (copy / unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    def alignment_transform(self, image, landmarks) -> np.ndarray:
        five = getattr(landmarks, "five", landmarks)
        m = np.vstack([estimate_similarity(np.asarray(five, np.float64), ARCFACE_112x96), [0, 0, 1]])
        return (self._post @ m)[:2]

    def fingerprint(self) -> str:
        return f"{self._inner.fingerprint()}+crop-{self.crop}"

    def blank(self, crops: np.ndarray) -> np.ndarray:
        """Crops with the columns outside FROM's window set to black (a copy; the input is untouched)."""
        if self._keep is None or self._keep.all():
            return crops
        out = np.array(crops, copy=True)
        out[:, :, ~self._keep] = 0
        return out

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return self._inner.embed(self.blank(crops))
