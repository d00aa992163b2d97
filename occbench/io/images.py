"""Image decode/encode. The library works on RGB uint8 HxWx3 arrays throughout."""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import OccbenchError


class ImageDecodeError(OccbenchError):
    """Bytes that are not a decodable image (corrupt, truncated, empty)."""


# OpenCV >= 4.10 decodes straight to RGB (the same pixels as BGR + cvtColor, one pass less)
_IMREAD = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)
_SIGNATURES = {b"\xff\xd8\xff": "jpg", b"\x89PNG": "png", b"BM": "bmp", b"RIFF": "webp"}


def sniff_format(data: bytes) -> str | None:
    for sig, fmt in _SIGNATURES.items():
        if data.startswith(sig):
            return fmt
    return None


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode encoded bytes to RGB uint8. Truncated JPEGs (missing EOI) are rejected, not half-decoded."""
    if not data:
        raise ImageDecodeError("empty file")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageDecodeError("not a recognised image format")
    if fmt == "jpg" and b"\xff\xd9" not in data[-64:]:
        raise ImageDecodeError("truncated JPEG (no end-of-image marker)")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), _IMREAD)
    if arr is None:
        raise ImageDecodeError(f"corrupt {fmt} data")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB) if _IMREAD == cv2.IMREAD_COLOR else arr


def encode(image_rgb: np.ndarray, fmt: str = "png", jpeg_quality: int = 95) -> bytes:
    """Encode RGB (HxWx3) or grayscale (HxW) uint8. Deterministic for a given input."""
    fmt = fmt.lower().lstrip(".")
    img = image_rgb if image_rgb.ndim == 2 else cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    if fmt in ("jpg", "jpeg"):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    elif fmt == "png":
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, buf = cv2.imencode("." + fmt, img)
    if not ok:
        raise OccbenchError(f"could not encode image as {fmt}")
    return buf.tobytes()


def read_rgb(path) -> np.ndarray:
    with open(path, "rb") as fh:
        return decode_rgb(fh.read())
