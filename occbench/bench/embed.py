"""Embeddings for the engine, cached: the on-disk embedding cache, the per-image-content alignment
memo, the clean-image alignments and the embedding of one image set.

- ``EmbeddingCache``: ``root/<fingerprint>/<protocol>/<variant>.npy`` + ``.json`` sidecar, both
  written atomically; a half-written or tampered entry reads as a miss.
- ``AlignmentMemo``: per recognizer, image-content digest (sha256 of the image bytes and its five
  points) -> 2x3 alignment, so protocols over the same images run the face detector once.
- ``compute_alignments``: ``recognizer.alignment_transform`` on every clean image (cached per protocol).
- ``embed_set``: one image set (clean, or one occluded variant) -> ``EmbSet``, through the pure
  batched extraction of ``occbench.recognizers.extract``.

Failures are data: an image without an embedding has a NaN row, ``ok=False``, a reason and the
stage that failed (missing, landmarks, alignment, occlusion, embedding).
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
from typing import Callable

import numpy as np

from .. import __version__
from ..io.atomic import atomic_open, atomic_write_json
from ..paths import safe_join
from .protocols import VariantSpec, canonical_json

log = logging.getLogger(__name__)

CACHE_ENV = "OCCBENCH_CACHE"
DEFAULT_CACHE = ".occbench_cache"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


# ----------------------------------------------------------------------------------- cache


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


def _array_sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


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


class AlignmentMemo:
    """Per-recognizer table image-content digest -> 2x3 alignment, kept in the embedding cache as one
    structured array (no pickle). Saving merges with what another run may have added meanwhile."""

    DTYPE = np.dtype([("digest", "u1", (32,)), ("m", "<f8", (2, 3))])

    def __init__(self, cache: EmbeddingCache, fingerprint: str):
        self.cache, self.key = cache, CacheKey(fingerprint, "alignments", "by-content")
        self.table = self._load()
        self.new: dict[bytes, np.ndarray] = {}

    def _load(self) -> dict[bytes, np.ndarray]:
        hit = self.cache.get(self.key)
        if hit is None or hit[0].dtype != self.DTYPE:
            return {}
        return {r["digest"].tobytes(): np.array(r["m"]) for r in hit[0]}

    @staticmethod
    def digest(data: bytes, five) -> bytes:
        pts = getattr(five, "five", five)  # FaceLandmarks or (5, 2) points
        return hashlib.sha256(data + np.ascontiguousarray(pts, np.float64).tobytes()).digest()

    def get(self, data: bytes, five) -> np.ndarray | None:
        d = self.digest(data, five)
        return self.new.get(d, self.table.get(d))

    def add(self, data: bytes, five, m) -> None:
        self.new[self.digest(data, five)] = np.asarray(m, np.float64)

    def save(self) -> None:
        if not self.new:
            return
        table = {**self._load(), **self.new}
        arr = np.empty(len(table), self.DTYPE)
        for i, (d, m) in enumerate(sorted(table.items())):
            arr[i] = (np.frombuffer(d, np.uint8), m)
        self.cache.put(self.key, arr, {"entries": len(arr)})
        self.table, self.new = table, {}


# ----------------------------------------------------------------------------------- image sets


@dataclass
class EmbSet:
    """Embeddings of one image set (clean or one occluded variant) over a list of keys."""

    name: str
    index: dict[str, int]
    emb: np.ndarray  # (N, D) float32, NaN rows where not ok
    ok: np.ndarray  # (N,) bool
    reasons: list[str]
    stages: list[str]  # stage of the failure ("" when ok)
    cached: bool
    occl: object = None  # bench.occlusion.SetPredictions of models with occlusion outputs

    def get(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        idx = np.array([self.index[k] for k in keys], np.int64)
        return self.emb[idx], self.ok[idx], [self.reasons[i] for i in idx]

    def stage_of(self, keys: list[str]) -> list[str]:
        return [self.stages[self.index[k]] for k in keys]


def set_name(v: VariantSpec) -> str:
    """Embedding-set name of an occluded variant (one set per synth run x synth variant)."""
    return f"{v.run}/{v.synth_variant}"


def variant_set(v: VariantSpec, emb_sets: dict[str, EmbSet]) -> EmbSet:
    """The set a probe-side variant reads: the clean set in mode ``clean``, else the variant's occluded set."""
    return emb_sets["clean"] if v.mode == "clean" else emb_sets[set_name(v)]


def keys_and_ids(items: list[tuple[str, str]], dtype=str) -> tuple[list[str], np.ndarray]:
    """``[(key, identity), ...]`` (``task.probes``, ``task.gallery``) -> (keys, identity array)."""
    return [k for k, _ in items], np.array([i for _, i in items], dtype=dtype)


@dataclass
class Alignments:
    """Image->crop matrices of the clean images (NaN where none), with why each failed."""

    ms: np.ndarray  # (N, 2, 3) float64
    reasons: list[str]
    stages: list[str]
    cached: bool


Tick = Callable[[int], None]


def _noop(n: int) -> None:
    return None


def compute_alignments(recognizer, task, keys: list[str], lms, cache: EmbeddingCache, phash: str,
                       tick: Tick = _noop) -> Alignments:
    """``recognizer.alignment_transform`` on each clean image (its landmarks from ``lms``).

    Besides the per-protocol entry, successful alignments are memoised per image content (sha256 of
    the image bytes and its five points) for this recognizer, so other protocols on the same images
    (lfw, lfw-occ, lfw-occ-id) reuse them instead of running a face detector again."""
    from ..io.images import decode_rgb

    digest = hashlib.sha256((canonical_json(keys) + lms.inputs_digest()).encode()).hexdigest()[:16]
    key = CacheKey(recognizer.fingerprint(), phash, f"align-{digest}")
    hit = cache.get(key)
    if hit is not None:
        arr, meta = hit
        tick(len(keys))
        return Alignments(arr, meta["reasons"], meta["stages"], True)
    memo = AlignmentMemo(cache, recognizer.fingerprint())
    n = len(keys)
    ms = np.full((n, 2, 3), np.nan)
    reasons, stages = [""] * n, [""] * n
    for i, k in enumerate(keys):
        tick(1)
        if k in task.missing:
            reasons[i], stages[i] = task.missing[k], "missing"
            continue
        five = lms.five(k)
        if five is None:
            reasons[i], stages[i] = lms.failure(k), "landmarks"
            continue
        m = None
        try:
            data = task.read_bytes(k)
            m = memo.get(data, five)
            if m is None:
                m = recognizer.alignment_transform(decode_rgb(data), five)
                if m is not None:
                    memo.add(data, five, m)
        except Exception as e:  # noqa: BLE001 - recorded per image
            m, reasons[i] = None, f"{type(e).__name__}: {e}"
        if m is None:
            reasons[i] = reasons[i] or f"recognizer {recognizer.name} could not align this face"
            stages[i] = "alignment"
            continue
        ms[i] = np.asarray(m, np.float64)
    memo.save()
    cache.put(key, ms, {"reasons": reasons, "stages": stages})
    return Alignments(ms, reasons, stages, False)


def occluded_inputs(occ, keys: list[str], rows, al: Alignments) -> tuple[list, list[str], list[str]]:
    """(sources, reasons, stages) of ``keys`` in the occluded set ``occ``; ``rows[j]`` is the row of
    ``keys[j]`` in ``al``. An image without a clean alignment keeps the clean image's failure."""
    srcs, reasons, stages = [], [], []
    for k, i in zip(keys, rows):
        if al.stages[i]:  # no clean alignment: the failure is the clean image's
            src, why, stage = None, al.reasons[i], al.stages[i]
        else:
            why = occ.failure(k)
            src, stage = (occ.image_path(k), "") if why is None else (None, "occlusion")
        srcs.append(src)
        reasons.append(why or "")
        stages.append(stage)
    return srcs, reasons, stages


def embed_set(name: str, recognizer, keys: list[str], sources: list, pre_reasons: list[str],
              pre_stages: list[str], ms: np.ndarray, cache: EmbeddingCache, phash: str, inputs_id: str,
              batch_size: int, num_workers: int, tick: Tick = _noop) -> EmbSet:
    """Embed ``sources[i]`` (path | bytes | None) aligned by ``ms[i]``; None/NaN M -> failure as given."""
    from ..recognizers.extract import AlignedCropDataset, extract_embeddings

    digest = hashlib.sha256(canonical_json([keys, inputs_id, hashlib.sha256(ms.tobytes()).hexdigest()])
                            .encode()).hexdigest()[:16]
    key = CacheKey(recognizer.fingerprint(), phash, f"{name}-{digest}")
    index = {k: i for i, k in enumerate(keys)}
    hit = cache.get(key)
    from . import occlusion as occl

    spec = occl.output_spec(recognizer)
    pkey = occl.prediction_cache_key(key, spec) if spec is not None else None
    preds = occl.get_predictions(cache, pkey) if pkey is not None and hit is not None else None
    if hit is not None and (spec is None or preds is not None):
        emb, meta = hit
        tick(len(keys))
        return EmbSet(name, index, emb, np.asarray(meta["ok"], bool), meta["reasons"], meta["stages"], True, preds)
    n = len(keys)
    reasons, stages = list(pre_reasons), list(pre_stages)
    valid = [i for i in range(n) if sources[i] is not None and np.isfinite(ms[i]).all()]
    tick(n - len(valid))
    ok = np.zeros(n, bool)
    items = [(sources[i], ms[i]) for i in valid]
    ds = AlignedCropDataset(items, tuple(recognizer.preprocess.input_size))
    if items:
        collector = occl.OutputCollector(len(items)) if spec is not None else None
        e, good, why = extract_embeddings(recognizer, ds, batch_size=batch_size, num_workers=num_workers,
                                          progress=False, on_batch=tick, collector=collector)
        if collector is not None:
            preds = collector.predictions(rows=valid, n=n)
        emb = np.full((n, e.shape[1]), np.nan, np.float32)
        for j, i in enumerate(valid):
            if good[j]:
                emb[i] = e[j]
                ok[i] = True
            else:
                reasons[i], stages[i] = why[j], "embedding"
    else:
        h, w = recognizer.preprocess.input_size
        emb = np.full((n, recognizer.embed(np.zeros((1, h, w, 3), np.uint8)).shape[1]), np.nan, np.float32)
    if spec is not None:
        preds = preds or occl.SetPredictions(None, None)
        occl.put_predictions(cache, pkey, preds)
    cache.put(key, emb, {"ok": ok.tolist(), "reasons": reasons, "stages": stages, "set": name, "n": n})
    return EmbSet(name, index, emb, ok, reasons, stages, False, preds)
