"""Batched embedding extraction (decode + warp in DataLoader workers) and an on-disk embedding cache.

Failures are data, not exceptions: an unreadable or corrupt image yields ``ok=False`` and a reason,
and its embedding row is NaN so that accidental use cannot go unnoticed.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np

from .. import __version__
from ..errors import ConfigError
from ..io.atomic import atomic_open, atomic_write_json
from ..io.images import decode_rgb
from ..paths import safe_join
from ..face.geometry import warp
from .base import Recognizer

log = logging.getLogger(__name__)

# An image source: a path, raw encoded bytes, or a picklable zero-argument callable returning bytes
# (e.g. functools.partial(read_member, archive, name)) so it can run in DataLoader workers.
ImageSource = Union[str, os.PathLike, bytes, Callable[[], bytes]]


def _read_source(src: ImageSource) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    if isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as fh:
            return fh.read()
    if callable(src):
        return src()
    raise TypeError(f"image source must be a path, bytes or a callable returning bytes, got {type(src).__name__}")


class AlignedCropDataset:
    """Items ``(source, M)`` with M the 2x3 image->crop matrix; yields aligned uint8 RGB crops.

    ``__getitem__`` returns ``(index, crop, ok, reason)``; a failed item has a black crop, ok=False
    and a reason such as "FileNotFoundError: ..." or "ImageDecodeError: truncated JPEG ...".
    Works as a torch map-style dataset (use ``collate_crops`` as collate_fn) with any num_workers.
    """

    def __init__(self, items: Sequence[tuple[ImageSource, np.ndarray]], size_hw: tuple[int, int]):
        self.items = list(items)
        self.size_hw = (int(size_hw[0]), int(size_hw[1]))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray, bool, str]:
        src, m = self.items[index]
        try:
            m = np.asarray(m, np.float64)
            if m.shape != (2, 3) or not np.isfinite(m).all():
                raise ValueError(f"alignment matrix must be a finite 2x3 array, got shape {m.shape}")
            crop = warp(decode_rgb(_read_source(src)), m, self.size_hw)
            return index, crop, True, ""
        except Exception as e:  # reported per item, never fatal for the batch
            return index, np.zeros((*self.size_hw, 3), np.uint8), False, f"{type(e).__name__}: {e}"


def collate_crops(batch):
    """List of dataset items -> (indices int64 (B,), crops uint8 (B,H,W,3), ok bool (B,), reasons list)."""
    idx, crops, ok, reasons = zip(*batch)
    return np.asarray(idx, np.int64), np.stack(crops), np.asarray(ok, bool), list(reasons)


def iter_batches(dataset: AlignedCropDataset, batch_size: int = 128, num_workers: int = 0):
    """Yield collated batches in dataset order (torch DataLoader; workers decode and warp)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_crops, prefetch_factor=4 if num_workers > 0 else None,
                        persistent_workers=False)
    yield from loader


def extract_embeddings(recognizer: Recognizer, dataset: AlignedCropDataset, batch_size: int = 128,
                       num_workers: int = 0, progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Embed every item: (emb float32 (N, D) with NaN rows where not ok, ok bool (N,), reasons)."""
    want = tuple(recognizer.preprocess.input_size)
    if dataset.size_hw != want:
        raise ConfigError(f"dataset crops are {dataset.size_hw} but recognizer {recognizer.name} wants {want}")
    n = len(dataset)
    ok = np.zeros(n, bool)
    reasons = [""] * n
    emb: np.ndarray | None = None
    from tqdm.auto import tqdm

    with tqdm(total=n, desc=f"embed {recognizer.name}", unit="img", disable=not progress) as bar:
        for idx, crops, good, why in iter_batches(dataset, batch_size, num_workers):
            for i, r in zip(idx, why):
                reasons[i] = r
            ok[idx] = good
            if good.any():
                e = recognizer.embed(crops[good])
                if emb is None:
                    emb = np.full((n, e.shape[1]), np.nan, np.float32)
                emb[idx[good]] = e
            bar.update(len(idx))
    if emb is None:  # nothing decodable: still return the right width
        h, w = want
        dim = recognizer.embed(np.zeros((1, h, w, 3), np.uint8)).shape[1]
        emb = np.full((n, dim), np.nan, np.float32)
    n_bad = int((~ok).sum())
    if n_bad:
        log.warning("%d of %d images could not be embedded (see reasons)", n_bad, n)
    return emb, ok, reasons


# ---------------------------------------------------------------------------------------------
# Embedding cache

@dataclass(frozen=True)
class CacheKey:
    fingerprint: str  # recognizer.fingerprint()
    protocol: str  # hash of the protocol / item list
    variant: str  # e.g. "clean" or an occlusion variant name

    def parts(self) -> tuple[str, str, str]:
        return _slug(self.fingerprint), _slug(self.protocol), _slug(self.variant)


def _slug(s: str) -> str:
    """A file-name-safe form; non-trivial strings get a short hash so distinct keys never collide."""
    s = str(s)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("._")[:80] or "_"
    if safe == s:
        return s
    return f"{safe}-{hashlib.sha256(s.encode()).hexdigest()[:10]}"


class EmbeddingCache:
    """``root/<fingerprint>/<protocol>/<variant>.npy`` + ``.json`` sidecar, both written atomically.

    The sidecar is written last and records the key, shape, dtype and a sha256 of the array, so a
    half-written or tampered entry reads as a miss (and is recomputed), never as wrong embeddings.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @staticmethod
    def _key(key) -> CacheKey:
        return key if isinstance(key, CacheKey) else CacheKey(*key)

    def paths(self, key) -> tuple[Path, Path]:
        f, p, v = self._key(key).parts()
        base = safe_join(self.root, f"{f}/{p}/{v}")
        return base.with_name(base.name + ".npy"), base.with_name(base.name + ".json")

    def put(self, key, emb: np.ndarray, meta: dict | None = None) -> Path:
        key = self._key(key)
        arr = np.ascontiguousarray(emb)
        npy, side = self.paths(key)
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        with atomic_open(npy, "wb") as fh:
            fh.write(buf.getvalue())
        atomic_write_json(side, {
            "key": {"fingerprint": key.fingerprint, "protocol": key.protocol, "variant": key.variant},
            "shape": list(arr.shape), "dtype": str(arr.dtype), "sha256": _array_sha256(arr),
            "occbench_version": __version__, "meta": meta or {},
        })
        return npy

    def get(self, key) -> tuple[np.ndarray, dict] | None:
        """(embeddings, meta) or None when absent or invalid."""
        key = self._key(key)
        npy, side = self.paths(key)
        if not (npy.is_file() and side.is_file()):
            return None
        try:
            info = json.loads(side.read_text("utf-8"))
            arr = np.load(npy, allow_pickle=False)
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable cache entry %s: %s", npy, e)
            return None
        expect_key = {"fingerprint": key.fingerprint, "protocol": key.protocol, "variant": key.variant}
        if (info.get("key") != expect_key or list(arr.shape) != info.get("shape")
                or str(arr.dtype) != info.get("dtype") or _array_sha256(arr) != info.get("sha256")):
            log.warning("ignoring stale or corrupt cache entry %s", npy)
            return None
        return arr, info.get("meta", {})

    def __contains__(self, key) -> bool:
        return self.get(key) is not None


def _array_sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
