"""The shared torch wrapper: any ``nn.Module`` / ScriptModule + ``Preprocess`` -> ``Recognizer``.

Handles device selection, precision (autocast), flip-test and batching. Crops go to the device as
uint8 and are normalised there; the batch stays on the device until the final embeddings.
"""
from __future__ import annotations

import contextlib
import hashlib

import numpy as np
import torch

from ..errors import ConfigError
from ..face.geometry import FaceLandmarks
from .base import Preprocess, template_alignment
from .outputs import ModelOutputs, NoteOnce, OutputSpec, as_output_spec, parse_outputs
from .registry import compose_fingerprint, validate_preprocess

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda when available else cpu; "cuda" without a GPU is a ConfigError."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"invalid device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
    return dev


def autocast_context(device: torch.device, precision: str):
    """torch.autocast for fp16/bf16 on CUDA (and on CPU where this torch supports the dtype)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    try:
        ctx = torch.autocast(device.type, dtype=dtype)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"precision {precision} is not supported on {device.type} by this torch: {e}") from None
    if not getattr(ctx, "_enabled", True):  # torch warns and disables autocast for unsupported dtypes on a device
        raise ConfigError(f"precision {precision} is not supported on {device.type} by this torch; use fp32")
    return ctx


def state_dict_sha256(module: torch.nn.Module) -> str:
    """Hash of all state-dict tensors (name, dtype, shape, bytes) in sorted key order."""
    h = hashlib.sha256()
    for key, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class TorchRecognizer:
    """A torch module as a Recognizer.

    ``weights_hash``: sha256 of the weight file when the module came from one; otherwise the
    state-dict hash is computed here. ``max_batch`` bounds one forward pass (flip-test doubles it).
    ``outputs``: what the module returns besides the embedding (``outputs.OutputSpec``; None: the
    embedding only, or a tuple's first item, or a dict's "embedding").
    """

    def __init__(self, module: torch.nn.Module, preprocess: Preprocess, *, name: str,
                 device: str | torch.device = "auto", precision: str = "fp32",
                 weights_hash: str | None = None, max_batch: int = 256, outputs: OutputSpec | dict | None = None):
        self.name = name
        self.outputs = as_output_spec(outputs, f"{name} outputs")
        self._note = NoteOnce()
        self.preprocess = validate_preprocess(preprocess)
        self.device = resolve_device(device)
        self.precision = precision
        autocast_context(self.device, precision)  # validate now, not at the first batch
        self.module = module.to(self.device).eval()
        self.max_batch = int(max_batch)
        self._weights_hash = weights_hash or state_dict_sha256(module)
        self._dim: int | None = None
        pp = self.preprocess
        shape = (1, 3, 1, 1) if pp.layout == "NCHW" else (1, 1, 1, 3)
        order = [2, 1, 0] if pp.channel_order.upper() == "BGR" else [0, 1, 2]
        # mean/std are given in the network's channel order, i.e. after the RGB->BGR swap.
        mean = torch.tensor(np.asarray(pp.mean, np.float32)).view(shape)
        std = torch.tensor(np.asarray(pp.std, np.float32)).view(shape)
        self._mean, self._std = mean.to(self.device), std.to(self.device)
        self._channel_index = torch.tensor(order, device=self.device) if order != [0, 1, 2] else None

    def __repr__(self) -> str:
        return f"TorchRecognizer({self.name!r}, device={self.device}, precision={self.precision})"

    def alignment_transform(self, image: np.ndarray, landmarks: FaceLandmarks) -> np.ndarray | None:
        return template_alignment(self.preprocess, landmarks)

    def fingerprint(self) -> str:
        # Reduced precision changes the embeddings, so it must not share cache entries with fp32.
        extra = {} if self.precision == "fp32" else {"precision": self.precision}
        return compose_fingerprint(self._weights_hash, self.preprocess, **extra)

    # -- embedding -----------------------------------------------------------------------------

    def to_input(self, crops: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) RGB -> normalised float32 network input on the device."""
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device, non_blocking=True)
        if self._channel_index is not None:
            x = x.index_select(3, self._channel_index)
        if self.preprocess.layout == "NCHW":
            x = x.permute(0, 3, 1, 2)
        return ((x.float() - self._mean) / self._std).contiguous()

    def _with_flipped(self, x: torch.Tensor) -> torch.Tensor:
        """The batch followed by its horizontal flips when flip-test is on (else the batch itself)."""
        if not self.preprocess.flip_test:
            return x
        return torch.cat([x, x.flip(3 if self.preprocess.layout == "NCHW" else 2)])

    def forward_outputs(self, x: torch.Tensor) -> ModelOutputs:
        """Parsed outputs of one batch: raw (un-normalised) embeddings, flip-test summed when enabled;
        mask and pattern from the un-flipped half."""
        n = x.shape[0]
        x = self._with_flipped(x)
        with autocast_context(self.device, self.precision):
            raw = self.module(x)
        out = parse_outputs(raw, self.outputs, x.shape[0])
        self._note(out.notes, self.name)
        if self.preprocess.flip_test:
            e = out.embedding
            out = ModelOutputs(e[:n] + e[n:], None if out.mask is None else out.mask[:n],
                               None if out.pattern is None else out.pattern[:n], out.notes,
                               None if out.attributes is None else out.attributes[:n])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (un-normalised) float32 embeddings on the device, flip-test summed when enabled."""
        if self.outputs is not None:
            return torch.from_numpy(np.ascontiguousarray(self.forward_outputs(x).embedding, np.float32))
        n = x.shape[0]
        x = self._with_flipped(x)
        with autocast_context(self.device, self.precision):
            out = self.module(x)
        if isinstance(out, (tuple, list, dict)):  # e.g. (embedding, norm); undeclared extras are ignored
            out = parse_outputs_embedding(out, self.name, self._note)
        out = out.float().reshape(out.shape[0], -1)
        return out[:n] + out[n:] if self.preprocess.flip_test else out

    def infer(self, crops: np.ndarray) -> ModelOutputs:
        """Aligned uint8 RGB crops -> ModelOutputs with L2-normalised embeddings (and mask / pattern
        when the model declares them)."""
        crops = check_crops(crops, self.preprocess)
        if len(crops) == 0:
            return ModelOutputs(np.zeros((0, self.dim), np.float32))
        parts: list[ModelOutputs] = []
        with torch.inference_mode():
            for i in range(0, len(crops), self.max_batch):
                parts.append(self.forward_outputs(self.to_input(crops[i:i + self.max_batch])))
        emb = torch.from_numpy(np.concatenate([p.embedding for p in parts]).astype(np.float32, copy=False))
        emb = torch.nn.functional.normalize(emb, dim=1).numpy()  # as in embed(): the same bits
        self._dim = emb.shape[1]
        cat = (lambda xs: None if xs[0] is None else np.concatenate(xs))
        return ModelOutputs(emb, cat([p.mask for p in parts]), cat([p.pattern for p in parts]),
                            attributes=cat([p.attributes for p in parts]))

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = check_crops(crops, self.preprocess)
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        outs = []
        with torch.inference_mode():
            for i in range(0, len(crops), self.max_batch):
                e = self.forward(self.to_input(crops[i:i + self.max_batch]))
                outs.append(torch.nn.functional.normalize(e, dim=1).cpu())
        emb = torch.cat(outs).numpy().astype(np.float32, copy=False)
        self._dim = emb.shape[1]
        return emb

    @property
    def dim(self) -> int:
        if self._dim is None:
            h, w = self.preprocess.input_size
            self.embed(np.zeros((1, h, w, 3), np.uint8))
        return self._dim


def parse_outputs_embedding(out, name: str, note) -> torch.Tensor:
    """The embedding tensor of an undeclared tuple / dict output (first item / "embedding"), noting the rest."""
    if isinstance(out, dict):
        if "embedding" not in out:
            from .outputs import OutputMismatchError

            raise OutputMismatchError(f"{name} returned a dict without 'embedding' ({sorted(map(str, out))}) and "
                                      "declares no outputs; declare them (output_spec / metadata 'outputs')")
        extra = sorted(str(k) for k in out if k != "embedding")
        emb = out["embedding"]
    else:
        extra = [str(i) for i in range(1, len(out))]
        emb = out[0]
    if extra:
        note([f"ignored undeclared model output(s) {extra}"], name)
    return emb


def check_crops(crops: np.ndarray, pp: Preprocess) -> np.ndarray:
    crops = np.asarray(crops)
    h, w = pp.input_size
    if crops.ndim != 4 or crops.shape[1:] != (h, w, 3):
        raise ConfigError(f"expected aligned crops of shape (N, {h}, {w}, 3), got {crops.shape}; "
                          f"align with template {pp.template!r}")
    if crops.dtype != np.uint8:
        raise ConfigError(f"expected uint8 RGB crops, got dtype {crops.dtype}")
    return crops
