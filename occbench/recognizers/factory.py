"""``create_recognizer``: the one public constructor for every kind of recognizer.

``model`` is, in the order tried:
1. a registered name (``list_recognizers()``, e.g. "dlib-resnet" from a plug-in);
2. an existing file: TorchScript, torch state dict / checkpoint (needs ``arch``), ONNX, or a
   plug-in file type (see ``registry.register_file_type``);
3. ``pkg.module:fn``: a Python factory called as ``fn(**factory_kwargs)`` returning a Recognizer, an
   ``nn.Module``, or ``(nn.Module, preprocess)``; a module without a second value may carry its
   preprocessing as a ``preprocess`` attribute (on the module or on ``fn``), as Preprocess or dict,
   and its occlusion outputs (``outputs.OutputSpec`` or dict) as an ``output_spec`` attribute.
"""
from __future__ import annotations

import difflib
import importlib
import re
from pathlib import Path

from ..errors import ConfigError, DataNotFoundError
from .base import Recognizer
from .registry import (RECOGNIZERS, as_preprocess, detect_file_type, load_plugins, plugin_errors,
                       resolve_preprocess)

FACTORY_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def create_recognizer(model: str, *, arch: str | None = None, device: str = "auto", precision: str = "fp32",
                      allow_unsafe_pickle: bool = False, preprocess_overrides: dict | None = None,
                      factory_kwargs: dict | None = None) -> Recognizer:
    opts = dict(arch=arch, device=device, precision=precision, allow_unsafe_pickle=allow_unsafe_pickle,
                preprocess_overrides=preprocess_overrides, factory_kwargs=factory_kwargs)
    model = str(model)
    load_plugins()
    if model in RECOGNIZERS:
        return RECOGNIZERS.get(model)(model, **opts)
    path = Path(model).expanduser()
    if path.is_file():
        return detect_file_type(path).load(path, **opts)
    if FACTORY_SPEC.match(model):
        return load_python_factory(model, **opts)
    raise DataNotFoundError(_not_found_message(model))


def _not_found_message(model: str) -> str:
    names = RECOGNIZERS.names()
    close = difflib.get_close_matches(model, names, n=3)
    msg = [f"model {model!r} is not a registered recognizer, an existing model file, or pkg.module:fn."]
    if close:
        msg.append(f"Did you mean: {', '.join(close)}?")
    msg.append(f"Registered: {', '.join(names) or '(none)'}.")
    broken = plugin_errors()
    if broken:
        msg.append("Plug-ins that failed to import: " + "; ".join(f"{k} ({v})" for k, v in broken.items()))
    return " ".join(msg)


def load_python_factory(spec: str, *, arch: str | None = None, device: str = "auto", precision: str = "fp32",
                        preprocess_overrides: dict | None = None, factory_kwargs: dict | None = None,
                        **_ignored) -> Recognizer:
    import torch

    from .torch_backend import TorchRecognizer

    if arch:
        raise ConfigError(f"--arch does not apply to a Python factory ({spec}); pass its options with "
                          "--arch-opt KEY=VALUE (factory_kwargs)")
    fn = resolve_callable(spec)
    try:
        out = fn(**(factory_kwargs or {}))
    except TypeError as e:
        raise ConfigError(f"factory {spec} rejected arguments {factory_kwargs or {}}: {e}") from None
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.nn.Module):
        module, embedded = out
    elif isinstance(out, torch.nn.Module):
        module, embedded = out, getattr(out, "preprocess", None) or getattr(fn, "preprocess", None)
    elif isinstance(out, Recognizer):
        if preprocess_overrides:
            raise ConfigError(f"factory {spec} returned a ready Recognizer; its preprocessing cannot be "
                              "overridden from outside")
        return out
    else:
        raise ConfigError(f"factory {spec} returned {type(out).__name__}; expected a torch.nn.Module, "
                          "(module, preprocess) or a Recognizer")
    pp = resolve_preprocess(as_preprocess(embedded, f"{spec} preprocess"), preprocess_overrides)
    outputs = getattr(module, "output_spec", None) or getattr(fn, "output_spec", None)
    return TorchRecognizer(module, pp, name=spec, device=device, precision=precision, outputs=outputs)


def resolve_callable(spec: str):
    mod_name, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"cannot import module {mod_name!r} for factory {spec}: {e}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{mod_name} has no attribute {attr!r} (factory {spec})") from None
    if not callable(obj):
        raise ConfigError(f"factory {spec} is not callable")
    return obj
