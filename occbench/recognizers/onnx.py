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
from .outputs import ModelOutputs, NoteOnce, parse_outputs
from .registry import (METADATA_KEY, compose_fingerprint, decode_metadata, decode_outputs, encode_metadata,
                       file_sha256, resolve_preprocess)
from .torch_backend import check_crops

INPUT_NAME, OUTPUT_NAME = "input", "embedding"


def export_onnx(module, path: str | os.PathLike, preprocess: Preprocess, name: str, *, opset: int = 17,
                outputs=None) -> Path:
    """Export a torch module (dynamic batch) with name + preprocess embedded as metadata; atomic.

    ``outputs`` (default: the module's ``output_spec`` attribute) declares occlusion outputs: the ONNX
    graph then has the named outputs embedding / mask / pattern, and the declaration is stored
    (keyed by those names) in the metadata."""
    import onnx
    import torch

    from .outputs import as_output_spec
    from .torchscript import example_input

    spec = as_output_spec(outputs if outputs is not None else getattr(module, "output_spec", None))
    names = [OUTPUT_NAME]
    if spec is not None:
        names = ["embedding"] + [k for k, s in (("mask", spec.mask), ("pattern", spec.pattern),
                                                 ("attributes", spec.attributes)) if s is not None]
        module = _NamedOutputs(module, spec)
        spec = _renamed(spec)
    meta = encode_metadata(preprocess, name, spec)
    module = module.eval()
    x = example_input(preprocess)
    p = next(iter(module.parameters()), None)
    if p is not None:
        x = x.to(p.device)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter warns that it is legacy
        torch.onnx.export(module, (x,), buf, dynamo=False, input_names=[INPUT_NAME], output_names=names,
                          dynamic_axes={INPUT_NAME: {0: "N"}, **{n: {0: "N"} for n in names}}, opset_version=opset)
    model = onnx.load_model_from_string(buf.getvalue())
    set_onnx_metadata(model, meta)
    atomic_write_bytes(path, model.SerializeToString())
    return Path(path)


def _renamed(spec):
    """The declaration with the ONNX output names as keys."""
    from dataclasses import replace

    return replace(spec, embedding="embedding",
                   mask=None if spec.mask is None else replace(spec.mask, key="mask"),
                   pattern=None if spec.pattern is None else replace(spec.pattern, key="pattern"),
                   attributes=None if spec.attributes is None else replace(spec.attributes, key="attributes"))


def _NamedOutputs(module, spec):
    """Wrap ``module`` so that it returns (embedding[, mask][, pattern]) as a tuple, for export."""
    import torch

    from .outputs import _select

    class Named(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, x):
            raw = self.inner(x)
            return tuple(_select(raw, k, "declared") for k in spec.keys())

    return Named()


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
        self.outputs = decode_outputs(meta, str(self.path))
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._note = NoteOnce()
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

    def _run_all(self, x: np.ndarray) -> ModelOutputs:
        n = len(x)
        if self._fixed_batch and n != self._fixed_batch:  # pad to the model's fixed batch size
            x = np.concatenate([x, np.zeros((self._fixed_batch - n, *x.shape[1:]), x.dtype)])
        if self.outputs is None:  # the first output is the embedding, as before
            out = self.session.run(self._output_names[:1], {self._input_name: x.astype(self._input_dtype, copy=False)})[0]
            return ModelOutputs(np.asarray(out, np.float32).reshape(len(x), -1)[:n])
        raw = self.session.run(None, {self._input_name: x.astype(self._input_dtype, copy=False)})
        parsed = parse_outputs({k: np.asarray(v)[:n] for k, v in zip(self._output_names, raw)}, self.outputs, n)
        self._note(parsed.notes, self.name)
        return parsed

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self._run_all(x).embedding

    def infer(self, crops: np.ndarray) -> ModelOutputs:
        """Embeddings (L2-normalised) and, when declared, mask and pattern (un-flipped input)."""
        if self.outputs is None or not (self.outputs.has_occlusion or self.outputs.has_attributes):
            return ModelOutputs(self.embed(crops))
        crops = check_crops(crops, self.preprocess)
        pp = self.preprocess
        parts = []
        step = max(self.max_batch, 1)
        for i in range(0, len(crops), step):
            x = pp.normalize(crops[i:i + step])
            out = self._run_all(x)
            if pp.flip_test:
                out.embedding = out.embedding + self._run(_flipped(x, pp))
            out.embedding = l2_normalize(out.embedding)
            parts.append(out)
        if not parts:
            return ModelOutputs(self.embed(crops))
        cat = (lambda xs: None if xs[0] is None else np.concatenate(xs))
        return ModelOutputs(np.concatenate([p.embedding for p in parts]), cat([p.mask for p in parts]),
                            cat([p.pattern for p in parts]), attributes=cat([p.attributes for p in parts]))

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = check_crops(crops, self.preprocess)
        pp = self.preprocess
        outs = []
        step = max(self.max_batch // 2 if pp.flip_test and not self._fixed_batch else self.max_batch, 1)
        for i in range(0, len(crops), step):
            x = pp.normalize(crops[i:i + step])
            if pp.flip_test:
                flipped = _flipped(x, pp)
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


def _flipped(x: np.ndarray, pp) -> np.ndarray:
    """The batch's horizontal flips (the width axis follows the declared layout)."""
    return np.ascontiguousarray(np.flip(x, axis=3 if pp.layout == "NCHW" else 2))
