"""torch.save checkpoints: state dicts (+ ``--arch``) safely; full pickled modules only on opt-in.

State dicts are read with ``torch.load(weights_only=True)``, whose unpickler only rebuilds tensors
and plain containers. Anything else (a pickled ``nn.Module``, arbitrary objects) raises
``UnsafeLoadError`` unless ``allow_unsafe_pickle=True`` — in which case the file can run code.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import ConfigError, UnsafeLoadError
from .archs import create_arch, list_archs
from .registry import as_preprocess, file_sha256, not_a_model_file, resolve_preprocess
from .torch_backend import TorchRecognizer

# Prefixes that training wrappers put in front of backbone keys (DDP, arcface_torch wrappers).
STRIP_PREFIXES = ("module.", "backbone.", "model.")
# Containers under which checkpoints commonly nest the weights.
NESTED_KEYS = ("state_dict", "model", "backbone", "net")
# Buffers that older checkpoints may lack and that do not affect inference.
OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def torch_load(path: str | os.PathLike, *, allow_unsafe_pickle: bool = False):
    """torch.load on CPU, weights-only unless the caller opted in to full unpickling.

    A file that is not a well-formed torch checkpoint is a ConfigError (one line), with or without
    the opt-in: corruption is reported as such, never as a torch/pickle traceback."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 74": the error below says it
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            corrupt = _corruption(e)
            if corrupt:
                raise ConfigError(not_a_model_file(path, corrupt)) from None
            if not allow_unsafe_pickle:
                raise UnsafeLoadError(
                    f"{path} contains pickled Python objects, not just tensors (e.g. a whole nn.Module); "
                    "loading it could run arbitrary code. Save a state dict or TorchScript instead, or pass "
                    f"--allow-unsafe-pickle (allow_unsafe_pickle=True) only if you trust this file. "
                    f"({_refusal_reason(e)})") from None
        except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/EOFError/ValueError/IndexError...
            raise ConfigError(not_a_model_file(path, f"not a readable torch checkpoint: {_first_line(e)}")) from None
        try:
            return torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign pickle, reported in one line
            raise ConfigError(f"{path}: cannot unpickle this checkpoint ({_first_line(e)}); the file is "
                              "damaged, or its classes are not importable here") from None


def _refusal_reason(e: Exception) -> str:
    """The informative part of torch's weights-only refusal (which global was refused)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text) or re.search(r"unsupported GLOBAL (\S+)", text)
    if m:
        return f"refused global {m.group(1)}"
    m = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
    return m.group(1)[:200] if m else type(e).__name__


def _first_line(e: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def _corruption(e: Exception) -> str | None:
    """Why a weights-only refusal means "not a pickle" (an opcode that does not exist), else None."""
    import pickletools

    m = re.search(r"Unsupported operand (\d+)", str(e))
    if m and chr(int(m.group(1))) not in {op.code for op in pickletools.opcodes}:
        return f"byte {int(m.group(1))} is not a pickle opcode; damaged or not a checkpoint"
    return None


def extract_state_dict(obj) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint (possibly nested), with wrapper prefixes stripped."""
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        inner = next((obj[k] for k in NESTED_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            raise ConfigError("checkpoint is a dict but holds no state dict (expected tensor values, or one "
                              f"of the keys {NESTED_KEYS}); found keys: {sorted(map(str, obj))[:10]}")
        obj = inner
    if not isinstance(obj, Mapping):
        raise ConfigError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    return strip_prefixes(dict(obj))


def _is_tensor_dict(d: Mapping) -> bool:
    return len(d) > 0 and all(isinstance(v, torch.Tensor) for v in d.values())


def strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a wrapper prefix while *every* key carries it (e.g. "module.backbone.conv1.weight")."""
    changed = True
    while changed and sd:
        changed = False
        for p in STRIP_PREFIXES:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


def load_state_dict_strict(module: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict=True) with an error that lists missing / unexpected / mis-shaped keys."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{source} does not match the architecture:"]
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if keys:
                more = f" ... (+{len(keys) - 8} more)" if len(keys) > 8 else ""
                parts.append(f"  {label} ({len(keys)}): {', '.join(keys[:8])}{more}")
        parts.append("Check --arch (and arch options, e.g. --arch-opt num_features=256).")
        raise ConfigError("\n".join(parts))
    module.load_state_dict(sd, strict=False)  # only optional buffers can be absent here


def load_torch_checkpoint(path: str | os.PathLike, *, arch: str | None = None, device: str = "auto",
                          precision: str = "fp32", allow_unsafe_pickle: bool = False,
                          preprocess_overrides: dict | None = None, factory_kwargs: dict | None = None,
                          **_ignored) -> TorchRecognizer:
    obj = torch_load(path, allow_unsafe_pickle=allow_unsafe_pickle)
    embedded = as_preprocess(getattr(obj, "preprocess", None), f"{path}: module.preprocess") \
        if isinstance(obj, torch.nn.Module) else None
    pp = resolve_preprocess(embedded, preprocess_overrides)
    if isinstance(obj, torch.nn.Module):  # only reachable with allow_unsafe_pickle=True
        if arch:
            raise ConfigError(f"{path} holds a whole pickled module; drop --arch")
        module = obj
    else:
        if not arch:
            raise ConfigError(f"{path} is a state dict: pass --arch NAME (one of: {', '.join(list_archs())})")
        module = create_arch(arch, **(factory_kwargs or {}))
        load_state_dict_strict(module, extract_state_dict(obj), str(path))
    return TorchRecognizer(module, pp, name=f"{arch}:{Path(path).stem}" if arch else Path(path).stem,
                           device=device, precision=precision, weights_hash=file_sha256(path),
                           outputs=getattr(module, "output_spec", None))
