"""Batched embedding extraction (decode + warp in DataLoader workers). The on-disk embedding cache
and the alignment memo live in ``occbench.bench.embed``.

Failures are data, not exceptions: an unreadable or corrupt image yields ``ok=False`` and a reason,
and its embedding row is NaN so that accidental use cannot go unnoticed.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Sequence, Union

import numpy as np

from ..errors import ConfigError
from ..io.images import decode_rgb
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
                       num_workers: int = 0, progress: bool = True,
                       on_batch: Callable[[int], None] | None = None,
                       collector=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Embed every item: (emb float32 (N, D) with NaN rows where not ok, ok bool (N,), reasons).
    ``on_batch(n)`` is called after each batch of n items (e.g. to drive an outer progress bar).
    ``collector`` (``bench.occlusion.OutputCollector``): also collect the model's occlusion outputs."""
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
                if collector is None:
                    e = recognizer.embed(crops[good])
                else:  # the same forward pass also yields mask / pattern
                    from .outputs import infer_outputs

                    out = infer_outputs(recognizer, crops[good])
                    e = out.embedding
                    collector.add(idx[good], out)
                if emb is None:
                    emb = np.full((n, e.shape[1]), np.nan, np.float32)
                emb[idx[good]] = e
            bar.update(len(idx))
            if on_batch is not None:
                on_batch(len(idx))
    if emb is None:  # nothing decodable: still return the right width
        h, w = want
        dim = recognizer.embed(np.zeros((1, h, w, 3), np.uint8)).shape[1]
        emb = np.full((n, dim), np.nan, np.float32)
    n_bad = int((~ok).sum())
    if n_bad:
        log.warning("%d of %d images could not be embedded (see reasons)", n_bad, n)
    return emb, ok, reasons
