"""The recognizer interface. Every loader (TorchScript, state dict + arch, ONNX, Python factory,
dlib) produces an object satisfying ``Recognizer``; evaluation code uses nothing else.

A recognizer declares its preprocessing as plain data (``Preprocess``, like timm's pretrained cfg),
and the shared helpers here turn aligned uint8 RGB crops into network input from it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..face.geometry import TEMPLATES, FaceLandmarks, estimate_similarity


@dataclass(frozen=True)
class Preprocess:
    """How aligned crops become network input.

    input_size: (H, W) of the aligned crop, e.g. (112, 112), (112, 96), (150, 150).
    channel_order: "RGB" or "BGR" order the network expects.
    mean, std: per-channel, in 0..255 pixel units, applied as (x - mean) / std (in channel_order).
    template: name of the alignment template in ``occbench.face.geometry.TEMPLATES``.
    flip_test: embed(x) + embed(hflip(x)), then L2-normalise.
    layout: "NCHW" (torch) or "NHWC".
    """

    input_size: tuple[int, int] = (112, 112)
    channel_order: str = "RGB"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    template: str = "arcface112"
    flip_test: bool = False
    layout: str = "NCHW"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        """Inverse of ``to_dict`` (JSON lists become tuples); unknown keys are a ConfigError."""
        from dataclasses import fields

        from ..errors import ConfigError

        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown preprocess key(s) {unknown}; valid keys: {sorted(names)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)

    def normalize(self, crops: np.ndarray) -> np.ndarray:
        """uint8 RGB (N, H, W, 3) -> float32 network input in ``layout``."""
        x = np.asarray(crops)
        if self.channel_order.upper() == "BGR":
            x = x[..., ::-1]
        x = (x.astype(np.float32) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)


@runtime_checkable
class Recognizer(Protocol):
    name: str
    preprocess: Preprocess

    def alignment_transform(self, image: np.ndarray, landmarks: FaceLandmarks) -> np.ndarray | None:
        """2x3 matrix mapping *clean* image coordinates to the aligned crop (None: cannot align).

        Evaluation computes it once on the clean image and applies it to every occluded variant of
        that image, so occlusion never changes the alignment."""

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """Aligned uint8 RGB crops (N, H, W, 3) -> float32 (N, D) L2-normalised embeddings."""

    def fingerprint(self) -> str:
        """A stable hash of weights + preprocessing, used as the embedding-cache key and in results."""

    # Optional (models with occlusion outputs, see ``occbench.recognizers.outputs``):
    #   outputs: OutputSpec | None          what the model returns besides the embedding
    #   infer(crops) -> ModelOutputs        embeddings (L2-normalised) + mask P(occluded) + pattern scores


def template_alignment(preprocess: Preprocess, landmarks: FaceLandmarks) -> np.ndarray:
    """Default alignment: least-squares similarity from the 5 landmarks to the template points."""
    t = TEMPLATES[preprocess.template]
    if t.size != tuple(preprocess.input_size):
        raise ValueError(f"template {t.name} is {t.size}, preprocess wants {preprocess.input_size}")
    return estimate_similarity(landmarks.five, t.points)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)
