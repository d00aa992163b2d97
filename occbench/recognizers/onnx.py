"""ONNX recognizers through onnxruntime, with preprocessing carried in ``metadata_props["occbench"]``."""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io.atomic import atomic_write_bytes
from ..face.geometry import FaceLandmarks, template_for_size
from .base import Preprocess, l2_normalize, template_alignment
from .registry import (METADATA_KEY, compose_fingerprint, decode_metadata, encode_metadata, file_sha256,
                       resolve_preprocess)
from .torch_backend import check_crops

INPUT_NAME, OUTPUT_NAME = "input", "embedding"


def export_onnx(module, path: str | os.PathLike, preprocess: Preprocess, name: str, *, opset: int = 17) -> Path:
    """Export a torch module (dynamic batch) with name + preprocess embedded as metadata; atomic."""
    import onnx
    import torch

    from .torchscript import example_input

    meta = encode_metadata(preprocess, name)
    module = module.eval()
    x = example_input(preprocess)
    p = next(iter(module.parameters()), None)
    if p is not None:
        x = x.to(p.device)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter warns that it is legacy
        torch.onnx.export(module, (x,), buf, dynamo=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}}, opset_version=opset)
    model = onnx.load_model_from_string(buf.getvalue())
    set_onnx_metadata(model, meta)
    atomic_write_bytes(path, model.SerializeToString())
    return Path(path)


def set_onnx_metadata(model, meta_json: str) -> None:
    """Put ``meta_json`` under the "occbench" key of an onnx.ModelProto (replacing any old value)."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta_json


def onnx_providers(device: str) -> list[str]:
    import onnxruntime as ort

    avail = ort.get_available_providers()
    cuda = "CUDAExecutionProvider" in avail
    if device == "auto":
        return (["CUDAExecutionProvider"] if cuda else []) + ["CPUExecutionProvider"]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if not cuda:
            raise ConfigError(f"device {device!r} requested but onnxruntime has no CUDAExecutionProvider "
                              "(install onnxruntime-gpu) ; use --device cpu or auto")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ConfigError(f"ONNX models run on auto, cpu or cuda; got device {device!r}")


class OnnxRecognizer:
    def __init__(self, path: str | os.PathLike, *, device: str = "auto", precision: str = "fp32",
                 preprocess_overrides: dict | None = None, max_batch: int = 256):
        import onnxruntime as ort

        if precision != "fp32":
            raise ConfigError(f"precision {precision!r} applies to torch models; an ONNX model runs in the "
                              "precision it was exported with (use fp32)")
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(self.path), providers=onnx_providers(str(device)))
        except Exception as e:  # onnxruntime raises its own exception types
            raise ConfigError(f"{self.path}: onnxruntime cannot load this model: {e}") from None
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
        meta = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        embedded, name = decode_metadata(meta, str(self.path))
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        self._input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self._fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        if embedded is None:
            embedded = _preprocess_from_shape(inp.shape)
        self.preprocess = resolve_preprocess(embedded, preprocess_overrides)
        _check_shape(inp.shape, self.preprocess, self.path)
        self.name = name or self.path.stem
        self.max_batch = self._fixed_batch or int(max_batch)
        self._weights_hash = file_sha256(self.path)

    def __repr__(self) -> str:
        return f"OnnxRecognizer({self.name!r}, device={self.device})"

    def alignment_transform(self, image: np.ndarray, landmarks: FaceLandmarks) -> np.ndarray | None:
        return template_alignment(self.preprocess, landmarks)

    def fingerprint(self) -> str:
        return compose_fingerprint(self._weights_hash, self.preprocess)

    def _run(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if self._fixed_batch and n != self._fixed_batch:  # pad to the model's fixed batch size
            x = np.concatenate([x, np.zeros((self._fixed_batch - n, *x.shape[1:]), x.dtype)])
        out = self.session.run(None, {self._input_name: x.astype(self._input_dtype, copy=False)})[0]
        return np.asarray(out, np.float32).reshape(len(x), -1)[:n]

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = check_crops(crops, self.preprocess)
        pp = self.preprocess
        outs = []
        step = max(self.max_batch // 2 if pp.flip_test and not self._fixed_batch else self.max_batch, 1)
        for i in range(0, len(crops), step):
            x = pp.normalize(crops[i:i + step])
            if pp.flip_test:
                flipped = np.ascontiguousarray(np.flip(x, axis=3 if pp.layout == "NCHW" else 2))
                if self._fixed_batch:
                    e = self._run(x) + self._run(flipped)
                else:
                    both = self._run(np.concatenate([x, flipped]))
                    e = both[:len(x)] + both[len(x):]
            else:
                e = self._run(x)
            outs.append(l2_normalize(e))
        if not outs:
            return np.zeros((0, self._run(pp.normalize(np.zeros((1, *pp.input_size, 3), np.uint8))).shape[1]),
                            np.float32)
        return np.concatenate(outs)


def _preprocess_from_shape(shape) -> Preprocess | None:
    """Without metadata: arcface defaults, adapted to a fixed (H, W) input such as 112x96."""
    if len(shape) != 4:
        return None
    if shape[1] == 3 and all(isinstance(s, int) for s in shape[2:]):
        layout, (h, w) = "NCHW", shape[2:]
    elif shape[3] == 3 and all(isinstance(s, int) for s in shape[1:3]):
        layout, (h, w) = "NHWC", shape[1:3]
    else:
        return None
    t = template_for_size(h, w)
    return Preprocess(input_size=(h, w), template=t.name, layout=layout) if t else None


def _check_shape(shape, pp: Preprocess, path: Path) -> None:
    if len(shape) != 4:
        raise ConfigError(f"{path}: expected a 4-D image input, got shape {shape}")
    h, w = pp.input_size
    want = [3, h, w] if pp.layout == "NCHW" else [h, w, 3]
    for got, exp in zip(shape[1:], want):
        if isinstance(got, int) and got > 0 and got != exp:
            raise ConfigError(f"{path}: model input shape {shape} does not fit preprocess "
                              f"{pp.layout} input_size {pp.input_size}; fix preprocess overrides")


def load_onnx(path: str | os.PathLike, *, arch: str | None = None, device: str = "auto", precision: str = "fp32",
              preprocess_overrides: dict | None = None, **_ignored) -> OnnxRecognizer:
    if arch:
        raise ConfigError(f"{path} is an ONNX model; --arch applies only to state-dict files")
    return OnnxRecognizer(path, device=device, precision=precision, preprocess_overrides=preprocess_overrides)
