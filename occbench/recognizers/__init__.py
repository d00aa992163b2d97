"""Face recognizers: one constructor (``create_recognizer``) over registered names, TorchScript,
state dicts + built-in archs, ONNX and Python factories; batched extraction with an on-disk cache."""
from .base import Preprocess, Recognizer, l2_normalize, template_alignment
from .factory import create_recognizer, load_python_factory
from .registry import RECOGNIZERS, detect_file_type, list_recognizers, register_file_type

__all__ = [
    "Preprocess", "Recognizer", "l2_normalize", "template_alignment", "create_recognizer",
    "load_python_factory", "RECOGNIZERS", "detect_file_type", "list_recognizers", "register_file_type",
    "save_torchscript", "export_onnx", "create_arch", "list_archs",
]


def __getattr__(name: str):
    """Torch/onnx-heavy helpers are imported on first use, keeping ``import occbench`` light."""
    if name == "save_torchscript":
        from .torchscript import save_torchscript
        return save_torchscript
    if name == "export_onnx":
        from .onnx import export_onnx
        return export_onnx
    if name in ("create_arch", "list_archs"):
        from . import archs
        return getattr(archs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
