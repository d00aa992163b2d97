"""Recognizer plug-in points: named factories, model-file types, and the shared loader helpers.

Registering a named recognizer (e.g. in ``occbench/recognizers/dlib_resnet.py``)::

    from occbench.recognizers.registry import RECOGNIZERS

    @RECOGNIZERS.register("dlib-resnet")
    def _dlib_resnet(spec: str, **opts) -> Recognizer: ...

``opts`` are the keyword arguments of ``create_recognizer`` (arch, device, precision,
allow_unsafe_pickle, preprocess_overrides, factory_kwargs); ignore the ones that do not apply.
Modules in the ``occbench.recognizers`` package that are not core loaders, and entry points in the
group ``occbench.recognizers``, are imported on first use, so registering is all a plug-in does.

Registering a model-file type: ``register_file_type(name, sniff, load)`` where
``sniff(path, head: bytes) -> bool`` and ``load(path, **opts) -> Recognizer``.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import pickle
import pkgutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from ..registry import Registry
from ..face.geometry import TEMPLATES
from .base import Preprocess

log = logging.getLogger(__name__)

RECOGNIZERS: Registry = Registry("recognizer")

# ---------------------------------------------------------------------------------------------
# Embedded preprocessing metadata (TorchScript extra file / ONNX metadata_props)

METADATA_KEY = "occbench"  # ONNX metadata_props key
METADATA_FILE = "occbench.json"  # TorchScript _extra_files name
METADATA_FORMAT = "occbench-recognizer/1"


def encode_metadata(preprocess: Preprocess, name: str, outputs=None) -> str:
    """The metadata JSON; ``outputs`` (an ``outputs.OutputSpec`` or its dict) declares occlusion outputs."""
    validate_preprocess(preprocess)
    d = {"format": METADATA_FORMAT, "name": name, "preprocess": preprocess.to_dict()}
    if outputs is not None:
        from .outputs import as_output_spec

        d["outputs"] = as_output_spec(outputs, f"{name} outputs").to_dict()
    return json.dumps(d, sort_keys=True)


def decode_outputs(text: str | bytes | None, source: str):
    """The ``outputs.OutputSpec`` declared in embedded metadata, or None."""
    if not text:
        return None
    from .outputs import as_output_spec

    try:
        d = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{source}: invalid embedded occbench metadata ({e})") from None
    return as_output_spec(d.get("outputs"), f"{source}: outputs") if isinstance(d, dict) else None


def decode_metadata(text: str | bytes | None, source: str) -> tuple[Preprocess | None, str | None]:
    """(preprocess, name) from embedded metadata; (None, None) when there is none."""
    if not text:
        return None, None
    try:
        d = json.loads(text)
        pp = Preprocess.from_dict(d["preprocess"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{source}: invalid embedded occbench metadata ({e}); re-export the model "
                          "with save_torchscript/export_onnx or pass preprocess overrides") from None
    validate_preprocess(pp)
    return pp, d.get("name")


def validate_preprocess(pp: Preprocess) -> Preprocess:
    if pp.channel_order.upper() not in ("RGB", "BGR"):
        raise ConfigError(f"preprocess channel_order must be RGB or BGR, got {pp.channel_order!r}")
    if pp.layout not in ("NCHW", "NHWC"):
        raise ConfigError(f"preprocess layout must be NCHW or NHWC, got {pp.layout!r}")
    if len(pp.input_size) != 2 or len(pp.mean) != 3 or len(pp.std) != 3:
        raise ConfigError("preprocess input_size needs (H, W); mean and std need 3 values each")
    if any(s == 0 for s in pp.std):
        raise ConfigError("preprocess std must be non-zero")
    t = TEMPLATES.get(pp.template)
    if t is None:
        raise ConfigError(f"unknown alignment template {pp.template!r}; known: {sorted(TEMPLATES)}")
    if tuple(t.size) != tuple(pp.input_size):
        raise ConfigError(f"template {pp.template} is {t.size} but input_size is {tuple(pp.input_size)}; "
                          "set both consistently")
    return pp


def as_preprocess(value, source: str = "preprocess") -> Preprocess | None:
    """None, a Preprocess, or its dict form -> Preprocess | None."""
    if value is None or isinstance(value, Preprocess):
        return value
    if isinstance(value, dict):
        return Preprocess.from_dict(value)
    raise ConfigError(f"{source} must be a Preprocess or a dict, got {type(value).__name__}")


def resolve_preprocess(embedded: Preprocess | None, overrides: dict | None) -> Preprocess:
    """Embedded metadata (else arcface 112x112 defaults) with user overrides applied on top."""
    pp = embedded or Preprocess()
    if overrides:
        merged = {**pp.to_dict(), **overrides}
        pp = Preprocess.from_dict(merged)
    return validate_preprocess(pp)


# ---------------------------------------------------------------------------------------------
# Fingerprints

def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def compose_fingerprint(weights_hash: str, preprocess: Preprocess, length: int = 16, **extra) -> str:
    """Short hex of (weights hash, preprocess dict[, extra settings that change embeddings]): the
    embedding-cache key of a recognizer."""
    payload = json.dumps({"weights": weights_hash, "preprocess": preprocess.to_dict(), **extra}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


# ---------------------------------------------------------------------------------------------
# Model-file types

@dataclass(frozen=True)
class FileType:
    name: str
    sniff: Callable[[Path, bytes], bool]
    load: Callable[..., object]


FILE_TYPES: list[FileType] = []


def register_file_type(name: str, sniff: Callable[[Path, bytes], bool], load: Callable[..., object],
                       *, first: bool = False) -> FileType:
    """Add a model-file type; ``first=True`` tries it before the built-in ones."""
    if any(ft.name == name for ft in FILE_TYPES):
        raise ValueError(f"model file type {name!r} is already registered")
    ft = FileType(name, sniff, load)
    if first:
        FILE_TYPES.insert(0, ft)
    else:
        FILE_TYPES.append(ft)
    return ft


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def is_torchscript(path: Path, head: bytes) -> bool:
    """TorchScript archives are zips holding ``<root>/constants.pkl`` and ``<root>/code/``."""
    if not head.startswith(b"PK"):
        return False
    names = _zip_names(path)
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def is_torch_pickle(path: Path, head: bytes) -> bool:
    """torch.save output: a zip with ``<root>/data.pkl`` (new format) or a raw pickle (legacy)."""
    if head.startswith(b"PK"):
        return any(n.endswith("/data.pkl") for n in _zip_names(path))
    # PROTO opcode with a protocol pickle knows (2..5); anything else is not a pickle at all
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL


def is_onnx(path: Path, head: bytes) -> bool:
    if path.suffix.lower() == ".onnx":
        return True
    if head[:1] != b"\x08":  # ModelProto field 1 (ir_version, varint) comes first
        return False
    try:
        import onnx

        onnx.load_model(str(path), load_external_data=False)
        return True
    except Exception:
        return False


def _lazy(module: str, fn: str) -> Callable[..., object]:
    """A loader that imports its module on first call (keeps onnxruntime etc. off the import path)."""

    def load(path, **opts):
        return getattr(importlib.import_module(f"{__package__}.{module}"), fn)(path, **opts)

    load.__qualname__ = f"{module}.{fn}"
    return load


# Order matters: TorchScript archives also hold data.pkl, so they are tried before torch pickles.
register_file_type("torchscript", is_torchscript, _lazy("torchscript", "load_torchscript"))
register_file_type("torch-pickle", is_torch_pickle, _lazy("statedict", "load_torch_checkpoint"))
register_file_type("onnx", is_onnx, _lazy("onnx", "load_onnx"))


def detect_file_type(path: str | os.PathLike) -> FileType:
    p = Path(path)
    with open(p, "rb") as fh:
        head = fh.read(64)
    for ft in FILE_TYPES:
        if ft.sniff(p, head):
            return ft
    why = "a damaged or truncated zip archive" if head.startswith(b"PK") else \
        f"unknown content, first bytes {head[:8].hex(' ')}"
    raise ConfigError(not_a_model_file(p, why))


def not_a_model_file(path, why: str) -> str:
    """The one-line message for a file that is none of the model-file types."""
    others = [ft.name for ft in FILE_TYPES if ft.name not in ("torchscript", "torch-pickle", "onnx")]
    extra = f", or a plug-in type ({', '.join(others)})" if others else ""
    return (f"{path}: not a model file ({why}). Expected a TorchScript archive (torch.jit.save), a torch "
            f"state dict or checkpoint (.pt/.pth, with --arch), or an ONNX model{extra}")


# ---------------------------------------------------------------------------------------------
# Plug-in discovery

CORE_MODULES = frozenset({"base", "registry", "torch_backend", "torchscript", "statedict", "onnx",
                          "factory", "extract", "archs", "outputs"})
ENTRY_POINT_GROUP = "occbench.recognizers"
_plugin_state: dict[str, str | None] = {}  # module -> None (loaded) | error message


def load_plugins() -> dict[str, str | None]:
    """Import recognizer plug-ins once: sibling non-core modules, then entry points.

    A plug-in that fails to import (e.g. its optional dependency is missing) is recorded, not fatal;
    ``plugin_errors()`` returns the reasons for error messages."""
    if _plugin_state:
        return _plugin_state
    _plugin_state["__scanned__"] = None
    pkg = importlib.import_module(__package__)
    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name in CORE_MODULES or mod.name.startswith("_"):
            continue
        _import_plugin(f"{__package__}.{mod.name}", lambda n=f"{__package__}.{mod.name}": importlib.import_module(n))
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            _import_plugin(f"entry point {ep.name}", ep.load)
    except Exception as e:  # broken metadata must not break loading the built-ins
        _plugin_state["entry points"] = f"{type(e).__name__}: {e}"
    return _plugin_state


def _import_plugin(label: str, load: Callable[[], object]) -> None:
    try:
        load()
        _plugin_state[label] = None
    except Exception as e:
        _plugin_state[label] = f"{type(e).__name__}: {e}"
        log.debug("recognizer plug-in %s failed to import: %s", label, e)


def plugin_errors() -> dict[str, str]:
    return {k: v for k, v in load_plugins().items() if v}


def list_recognizers(pattern: str = "*") -> list[str]:
    load_plugins()
    return RECOGNIZERS.names(pattern)

