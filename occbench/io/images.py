"""Image decode/encode. The library works on RGB uint8 HxWx3 arrays throughout.

``probe(data)`` reads format, size, alpha and bit depth from the header without decoding, so a
caller can refuse an image too large to decode before it allocates anything.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import OccbenchError


class ImageDecodeError(OccbenchError):
    """Bytes that are not a decodable image (corrupt, truncated, empty, unsupported)."""


# OpenCV >= 4.10 decodes straight to RGB (the same pixels as BGR + cvtColor, one pass less)
_IMREAD = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)
_SIGNATURES = {b"\xff\xd8\xff": "jpg", b"\x89PNG": "png", b"BM": "bmp", b"RIFF": "webp"}
_OTHER_SIGNATURES = {b"GIF87a": "gif", b"GIF89a": "gif", b"II*\x00": "tiff", b"MM\x00*": "tiff"}


def sniff_format(data: bytes) -> str | None:
    for sig, fmt in _SIGNATURES.items():
        if data.startswith(sig):
            return fmt
    return None


@dataclass(frozen=True)
class ImageInfo:
    """What an image header says. ``width``/``height`` are 0 when the header does not give them."""

    fmt: str  # jpg | png | bmp | webp (decodable) or gif | tiff (recognised, not supported)
    width: int = 0
    height: int = 0
    alpha: bool = False  # the image has an alpha channel (dropped by decode_rgb)
    bit_depth: int = 8  # bits per channel (decode_rgb gives 8)
    frames: int = 1  # >1: animated

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def conversion(self) -> str:
        """What ``decode_rgb`` loses of this image ("" when nothing)."""
        notes = []
        if self.alpha:
            notes.append("alpha channel dropped")
        if self.bit_depth > 8:
            notes.append(f"{self.bit_depth}-bit -> 8-bit")
        return "; ".join(notes)


def probe(data: bytes) -> ImageInfo | None:
    """Format and size from the header (None: not a recognised image). Never decodes pixels."""
    fmt = sniff_format(data)
    if fmt is None:
        for sig, other in _OTHER_SIGNATURES.items():
            if data.startswith(sig):
                return _probe_gif(data) if other == "gif" else ImageInfo(other)
        return None
    try:
        return {"jpg": _probe_jpeg, "png": _probe_png, "bmp": _probe_bmp, "webp": _probe_webp}[fmt](data)
    except (struct.error, IndexError):
        return ImageInfo(fmt)  # a header cut short: the decoder gives the verdict


def _probe_png(data: bytes) -> ImageInfo:
    w, h, depth, color = struct.unpack(">IIBB", data[16:26])
    alpha = color in (4, 6)
    pos = 8
    while not alpha and pos + 8 <= len(data):  # a tRNS chunk before IDAT also means transparency
        n, tag = struct.unpack(">I4s", data[pos:pos + 8])
        if tag in (b"IDAT", b"IEND"):
            break
        alpha = tag == b"tRNS"
        pos += 12 + n
    return ImageInfo("png", w, h, alpha, depth)


# SOF markers: C0-C3, C5-C7, C9-CB, CD-CF (C4 = DHT, C8 = JPG, CC = DAC are not frames)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _probe_jpeg(data: bytes) -> ImageInfo:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        n = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker in _SOF:
            depth, h, w = struct.unpack(">BHH", data[pos + 4:pos + 9])
            return ImageInfo("jpg", w, h, False, depth)
        if marker == 0xDA:  # start of scan before any frame header
            break
        pos += 2 + n
    return ImageInfo("jpg")


def _probe_bmp(data: bytes) -> ImageInfo:
    w, h = struct.unpack("<ii", data[18:26])
    bpp = struct.unpack("<H", data[28:30])[0]
    return ImageInfo("bmp", abs(w), abs(h), bpp == 32, 8)


def _probe_webp(data: bytes) -> ImageInfo:
    if data[8:12] != b"WEBP":
        return ImageInfo("webp")
    chunk = data[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return ImageInfo("webp", w & 0x3FFF, h & 0x3FFF)
    if chunk == b"VP8L":
        bits = struct.unpack("<I", data[21:25])[0]
        return ImageInfo("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1))
    if chunk == b"VP8X":
        flags = data[20]
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return ImageInfo("webp", w, h, bool(flags & 0x10), 8, 2 if flags & 0x02 else 1)
    return ImageInfo("webp")


def _probe_gif(data: bytes) -> ImageInfo:
    """GIF size and frame count (image descriptors), walking the block structure."""
    try:
        w, h, flags = struct.unpack("<HHB", data[6:11])
        pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
        frames = 0
        while pos < len(data):
            tag = data[pos]
            if tag == 0x3B:  # trailer
                break
            if tag == 0x2C:  # image descriptor (+ local colour table), LZW code size, sub-blocks
                frames += 1
                lflags = data[pos + 9]
                pos += 10 + (3 << ((lflags & 7) + 1) if lflags & 0x80 else 0) + 1
            elif tag == 0x21:  # extension: label, sub-blocks
                pos += 2
            else:
                break
            while pos < len(data) and data[pos]:  # data sub-blocks up to the 0 terminator
                pos += data[pos] + 1
            pos += 1
        return ImageInfo("gif", w, h, False, 8, max(frames, 1))
    except (struct.error, IndexError):
        return ImageInfo("gif")


_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # a marker in entropy-coded data (not stuffing/RST)


def jpeg_is_complete(data: bytes) -> bool:
    """True when the JPEG's marker structure reaches its end-of-image marker, wherever that lies:
    bytes after EOI are ignored, as every decoder ignores them. False when the data ends first
    (libjpeg's "Premature end of JPEG file"; OpenCV then returns a grey-padded image)."""
    n = len(data)
    pos = 2
    while pos + 2 <= n:
        if data[pos] != 0xFF:
            return False  # lost sync: not a marker where one must be
        marker = data[pos + 1]
        if marker == 0xD9:
            return True
        if marker == 0xFF:
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers
            pos += 2
            continue
        if pos + 4 > n:
            return False
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker == 0xDA:  # scan data runs to the next real marker
            m = _JPEG_MARKER.search(data, pos)
            if m is None:
                return False
            pos = m.start()
    return False


def unsupported_reason(info: ImageInfo) -> str | None:
    """Why an image we recognise cannot be used ("animated GIF (12 frames) ..."), or None."""
    if info.fmt in ("gif", "tiff"):
        kind = f"animated GIF ({info.frames} frames)" if info.fmt == "gif" and info.frames > 1 else info.fmt.upper()
        return f"{kind} is not supported: convert it to PNG or JPEG"
    if info.frames > 1:
        return f"animated {info.fmt.upper()} ({info.frames}+ frames) is not supported: use a single-frame image"
    return None


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode encoded bytes to RGB uint8. Truncated JPEGs (data ends before the end-of-image
    marker) are rejected, not half-decoded; bytes after the marker are ignored."""
    if not data:
        raise ImageDecodeError("empty file")
    fmt = sniff_format(data)
    if fmt is None:
        info = probe(data)
        if info is not None and unsupported_reason(info):
            raise ImageDecodeError(unsupported_reason(info))
        raise ImageDecodeError("not a recognised image format")
    if fmt == "jpg" and not jpeg_is_complete(data):
        raise ImageDecodeError("truncated JPEG (data ends before the end-of-image marker)")
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
