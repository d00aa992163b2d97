"""TorchScript recognizers: save with embedded preprocessing metadata, load into a TorchRecognizer.

``torch.jit.load`` rebuilds the graph from code + tensors and does not unpickle arbitrary Python
classes, so it is allowed without ``--allow-unsafe-pickle``.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import torch

from ..errors import ConfigError
from ..io.atomic import atomic_write_bytes
from .base import Preprocess
from .registry import (METADATA_FILE, decode_metadata, decode_outputs, encode_metadata, file_sha256,
                       resolve_preprocess)
from .torch_backend import TorchRecognizer


@contextlib.contextmanager
def _quiet_jit():
    """torch >= 2.10 marks torch.jit deprecated; users cannot act on that warning, so hide it here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        yield


def example_input(preprocess: Preprocess, batch: int = 2) -> torch.Tensor:
    h, w = preprocess.input_size
    shape = (batch, 3, h, w) if preprocess.layout == "NCHW" else (batch, h, w, 3)
    return torch.zeros(shape)


def to_script_module(module: torch.nn.Module, preprocess: Preprocess, method: str = "trace") -> torch.jit.ScriptModule:
    """Trace (default; works for any static-graph module) or script ``module`` in eval mode."""
    if isinstance(module, torch.jit.ScriptModule):
        return module
    module = module.eval()
    if method == "script":
        with _quiet_jit():
            return torch.jit.script(module)
    if method != "trace":
        raise ConfigError(f"method must be 'trace' or 'script', got {method!r}")
    with torch.inference_mode(False), torch.no_grad(), _quiet_jit():
        # strict=False lets a module return a dict (embedding + occlusion outputs)
        return torch.jit.trace(module, example_input(preprocess).to(_module_device(module)), check_trace=False,
                               strict=getattr(module, "output_spec", None) is None)


def _module_device(module: torch.nn.Module) -> torch.device:
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def save_torchscript(module: torch.nn.Module, path: str | os.PathLike, preprocess: Preprocess, name: str,
                     *, method: str = "trace", outputs=None) -> Path:
    """Write ``module`` as TorchScript with ``occbench.json`` (name + preprocess [+ outputs declaration,
    default: the module's ``output_spec`` attribute]) embedded; atomic."""
    meta = encode_metadata(preprocess, name, outputs if outputs is not None else getattr(module, "output_spec", None))
    scripted = to_script_module(module, preprocess, method)
    buf = io.BytesIO()
    with _quiet_jit():
        torch.jit.save(scripted, buf, _extra_files={METADATA_FILE: meta})
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def read_torchscript_metadata(path: str | os.PathLike) -> tuple[Preprocess | None, str | None]:
    extra = {METADATA_FILE: ""}
    with _quiet_jit():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return decode_metadata(extra[METADATA_FILE], str(path))


def load_torchscript(path: str | os.PathLike, *, arch: str | None = None, device: str = "auto",
                     precision: str = "fp32", preprocess_overrides: dict | None = None,
                     **_ignored) -> TorchRecognizer:
    if arch:
        raise ConfigError(f"{path} is a TorchScript model; --arch applies only to state-dict files")
    extra = {METADATA_FILE: ""}
    try:
        with _quiet_jit():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as e:
        raise ConfigError(f"{path}: cannot load TorchScript model: {e}") from None
    embedded, name = decode_metadata(extra[METADATA_FILE], str(path))
    pp = resolve_preprocess(embedded, preprocess_overrides)
    return TorchRecognizer(module, pp, name=name or Path(path).stem, device=device, precision=precision,
                           weights_hash=file_sha256(path), outputs=decode_outputs(extra[METADATA_FILE], str(path)))
