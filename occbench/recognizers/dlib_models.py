"""Locate dlib and the pretrained ``.dat`` files of the optional ``occbench[dlib]`` extra.

The weights ship in the PyPI package ``face-recognition-models``; nothing is downloaded. That package
imports ``pkg_resources`` (gone from recent setuptools), so its ``models/`` folder is found with
``importlib.util.find_spec`` without importing it.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from ..errors import DataNotFoundError, OccbenchError

INSTALL_HINT = "pip install 'occbench[dlib]'"
RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"


class DlibMissingError(OccbenchError):
    """dlib (or the package with its pretrained models) is not installed."""


def import_dlib() -> ModuleType:
    """``import dlib`` lazily, with an install hint instead of a bare ImportError."""
    try:
        return importlib.import_module("dlib")
    except ImportError as e:
        raise DlibMissingError(f"dlib is not installed ({e}); install the extra: {INSTALL_HINT}") from e


def models_dir() -> Path:
    """The ``models/`` folder of the installed ``face_recognition_models`` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DlibMissingError(
            f"the package 'face_recognition_models' (dlib's pretrained weights) is not installed; {INSTALL_HINT}")
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "models"
        if d.is_dir():
            return d
    raise DlibMissingError(f"face_recognition_models is installed but has no models/ folder; reinstall: {INSTALL_HINT}")


def model_path(name: str, explicit: str | Path | None = None) -> Path:
    """Path of a dlib ``.dat`` file: ``explicit`` if given, else ``name`` in the installed package."""
    p = Path(explicit) if explicit is not None else models_dir() / name
    if not p.is_file():
        raise DataNotFoundError(f"dlib model file not found: {p}")
    return p


def recognition_model_path(explicit: str | Path | None = None) -> Path:
    return model_path(RECOGNITION_MODEL, explicit)


def shape_predictor_path(explicit: str | Path | None = None) -> Path:
    return model_path(SHAPE_PREDICTOR_5, explicit)
