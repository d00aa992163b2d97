"""Reference recognizers that prove the occlusion-scoring plumbing (issue 10 §5).

- ``oracle``: its mask and pattern *are* the ground truth (declared with ``source: "truth"``; the
  scorer, which computes the ground truth in the model frame anyway, uses it as the prediction; the
  oracle never sees the labels through its input). Occluded-class IoU = 1, pattern top-1 = 1.
- ``blind``: says "all clean" (mask P(occluded) = 0 everywhere, pattern = class 0). Occluded-class
  IoU = 0; pattern top-1 = the share of images whose true pattern is 0 (clean).
- ``examples-tiny-model``: the ``tiny-occ`` CNN trained by ``examples/tiny_occlusion_model.py``,
  read from ``$OCCBENCH_TINY_MODEL`` or ``results/tiny-occlusion/tiny_occlusion.pt``.

Oracle and blind embed with a fixed pixel descriptor (16x16 grey thumbnail, mean/std normalised):
their verification figures are those of that descriptor, a weak but honest baseline.
Options (``factory_kwargs``): ``k`` (pattern grid, default 5), ``grid`` (mask h, w; default crop/8).
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataNotFoundError
from ..face.geometry import FaceLandmarks
from .base import Preprocess, l2_normalize, template_alignment
from .outputs import MaskSpec, ModelOutputs, OutputSpec, PatternSpec
from .registry import RECOGNIZERS, compose_fingerprint, resolve_preprocess
from .torch_backend import check_crops

TINY_MODEL_ENV = "OCCBENCH_TINY_MODEL"
TINY_MODEL_DEFAULT = Path("results/tiny-occlusion/tiny_occlusion.pt")


class _PixelReference:
    kind = "reference"

    def __init__(self, name: str, outputs: OutputSpec, preprocess: Preprocess, grid: tuple[int, int]):
        self.name = name
        self.preprocess = preprocess
        self.outputs = outputs
        self.grid = (int(grid[0]), int(grid[1]))

    def alignment_transform(self, image: np.ndarray, landmarks: FaceLandmarks) -> np.ndarray | None:
        return template_alignment(self.preprocess, landmarks)

    def fingerprint(self) -> str:
        return compose_fingerprint(f"{self.name}-pixel16-v1", self.preprocess, outputs=self.outputs.to_dict(),
                                   grid=list(self.grid))

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = check_crops(crops, self.preprocess)
        if len(crops) == 0:
            return np.zeros((0, 256), np.float32)
        grey = crops.astype(np.float32).mean(axis=3)
        thumbs = np.stack([cv2.resize(g, (16, 16), interpolation=cv2.INTER_AREA) for g in grey]).reshape(len(crops), -1)
        thumbs = (thumbs - thumbs.mean(1, keepdims=True)) / (thumbs.std(1, keepdims=True) + 1e-6)
        return l2_normalize(thumbs)

    def infer(self, crops: np.ndarray) -> ModelOutputs:
        return ModelOutputs(self.embed(crops))


class OracleRecognizer(_PixelReference):
    """Mask and pattern from the ground truth (see the module docstring)."""


class BlindRecognizer(_PixelReference):
    def infer(self, crops: np.ndarray) -> ModelOutputs:
        emb = self.embed(crops)
        n = len(emb)
        pattern = np.zeros((n, self.outputs.pattern.n_classes), np.float32)
        pattern[:, 0] = 1.0
        return ModelOutputs(emb, np.zeros((n, *self.grid), np.float32), pattern)


def _reference(cls, name: str, truth: bool, *, preprocess_overrides: dict | None = None,
               factory_kwargs: dict | None = None, **_ignored):
    opts = dict(factory_kwargs or {})
    pp = resolve_preprocess(None, preprocess_overrides)
    k = int(opts.pop("k", 5))
    h, w = pp.input_size
    grid = tuple(opts.pop("grid", (h // 8, w // 8)))
    if opts:
        from ..errors import ConfigError

        raise ConfigError(f"{name}: unknown option(s) {sorted(opts)}; valid: k, grid")
    src = "truth" if truth else "model"
    outputs = OutputSpec(mask=MaskSpec("mask", "probabilities", 1, src), pattern=PatternSpec("pattern", k, "probabilities", "FROM", src))
    return cls(name, outputs, pp, grid)


@RECOGNIZERS.register("oracle")
def create_oracle(spec: str = "oracle", **opts) -> OracleRecognizer:
    return _reference(OracleRecognizer, "oracle", True, **opts)


@RECOGNIZERS.register("blind")
def create_blind(spec: str = "blind", **opts) -> BlindRecognizer:
    return _reference(BlindRecognizer, "blind", False, **opts)


def tiny_model_path() -> Path:
    return Path(os.environ.get(TINY_MODEL_ENV) or TINY_MODEL_DEFAULT)


@RECOGNIZERS.register("examples-tiny-model")
def create_examples_tiny_model(spec: str = "examples-tiny-model", **opts):
    from .torchscript import load_torchscript

    path = tiny_model_path()
    if not path.is_file():
        raise DataNotFoundError(f"examples-tiny-model: no trained model at {path}. Train it with "
                                "`python examples/tiny_occlusion_model.py` (a few minutes on CPU), or set "
                                f"{TINY_MODEL_ENV} to its .pt file")
    opts.pop("arch", None)
    rec = load_torchscript(path, **opts)
    rec.name = "examples-tiny-model"
    return rec
