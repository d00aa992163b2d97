"""The synth engine: occlude every image of a source, write images, masks, labels and a manifest.

``run_synth(SynthConfig(src=..., out=...))`` is what ``occbench synth`` calls. Per input image and
*variant* it writes

- ``OUT/images/<variant>/<key>``: the occluded image, same size and format as the input
  (JPEG at ``jpeg_quality``; clean images are copied byte for byte),
- ``OUT/masks/<variant>/<key stem>.png``: uint8 mask, 255 = occluded, image size,
- one manifest row: FROM pattern label, per-cell fractions and area fraction (all measured in the
  112x112 face frame), occluder name, sampled params, scale, seed, status and reason.

Variants: default mode has one per image ("main": one occluder drawn uniformly from the list, one
scale drawn from the scale list); ``per_scale`` gives one per scale ("s1.5"), ``per_occluder`` one
per occluder ("sunglasses"), both the cross product ("sunglasses@s1.5").

Randomness: a variant's draws come from ``derive_seed(seed, key, group)`` where *group* is the
variant's occluder when fixed, else "main". Variants that differ only in scale therefore share the
occluder choice and every random parameter (a paired scale sweep). Whether an image stays clean
(``clean_ratio``) is drawn once per image from ``derive_seed(seed, key, "clean")``. Nothing depends on
the job count, the order, or which other images are in the run.

Resume: finished items are logged in ``OUT/.synth/rows.jsonl`` (with the size of every file they
wrote) after their files are in place (written to ``.<name>.part`` beside the destination, then
renamed); rerunning the same command checks those files, redoes items whose files are missing or
changed, and assembles the tables from the log, so the result is byte-identical to an uninterrupted
run. A different configuration into the same OUT is refused unless ``overwrite``.

Robustness: one process at a time writes to OUT (``fcntl.flock`` on ``OUT/.synth.lock``; a second run
fails at once naming the holder's PID, or waits with ``wait``). Every input gets rows: an unreadable,
undecodable, oversized (``max_pixels``, checked from the header before decoding) or oddly named input
is an ``error`` row with its reason, and a worker process that crashes (segfault, abort, killed) on an
image makes that image an ``error`` row: workers note the key they are on in ``OUT/.synth/inflight``,
and after a crash the keys found there are rerun one by one in fresh processes to find the culprit.
Errors writing OUTPUT (disk full, read-only, permissions, a folder in the way) stop the run with
``OutputWriteError``: they are never an input's row, and a rerun after the fix resumes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .. import __version__
from ..errors import ConfigError, DataNotFoundError, OccbenchError, OutputWriteError, RunLockedError
from ..io.atomic import output_error, sweep_temp_files
from ..io.images import decode_rgb, encode, probe, sniff_format
from ..seeding import derive_seed
from ..face.geometry import ARCFACE_112, FACE_FRAME_SIZE, face_frame_transform, warp
from ..face.parts import MeshRequiredError
from .manifest import RowLog, empty_row, rows_to_frame, to_json, write_manifest
from .patterns import IOU_EPS, cell_edges, enumerate_patterns, n_patterns
from .scales import format_scale, parse_scales

LANDMARKER_CHOICES = ("auto", "template", "mediapipe", "file")
PLACEMENTS = ("anchored", "free")
STATE_DIR = ".synth"
LOCK_FILE = "run.lock"  # in OUT/.synth, never removed: flock'ed for the whole run
WORKERS_LOCK = "workers.lock"  # in OUT/.synth: worker processes hold it shared while they work on a batch
MANAGED = ("images", "masks", STATE_DIR, "manifest.parquet", "manifest.csv", "landmarks.parquet",
           "landmarks.csv", "skipped.csv", "synth.json", "partmaps")
DEFAULT_MAX_PIXELS = 50_000_000
LAYOUT_VERSION = 2  # 2: masks/<variant>/<key>.png (was <key stem>.png), part files beside their destination
# Test hook: newline-separated keys on which a worker process calls os.abort(), as a native crash would
CRASH_HOOK_ENV = "OCCBENCH_TEST_CRASH_KEYS"
_RESUME_HINT = "Fix that and rerun the same command: finished images are kept and the run resumes"
_VARIANT_NAME = re.compile(r"^[A-Za-z0-9_.@+\-]+$")


# --------------------------------------------------------------------------------------- config


@dataclass
class SynthConfig:
    """Everything that defines a synth run. ``to_json`` / ``from_json`` round-trip it exactly.

    Fields in ``RUNTIME_FIELDS`` (out, jobs, overwrite, allow_unsafe_pickle) do not change the
    output; all others do and are recorded in synth.json and checked when a run is resumed.
    """

    src: str
    out: str
    landmarks: str = "auto"  # auto | template | mediapipe | file
    landmarks_file: str | None = None  # for landmarks="file": a landmarks table (.csv/.parquet/.json)
    occluders: tuple[str, ...] | None = None  # None: every registered occluder
    occluders_dir: str | None = None  # extra occluder definitions loaded before creating them
    placement: str = "anchored"  # anchored | free
    scales: tuple[float, ...] = (1.0,)
    per_scale: bool = False
    per_occluder: bool = False
    clean_ratio: float = 0.0  # fraction of images left clean (FROM keeps 1/3)
    bank: int = 0  # >0: each occluder draws its look from a bank of this many, built from ``seed``
    k: int = 5  # pattern grid size
    seed: int = 0
    limit: int | None = None  # first N items (after ``keys``)
    keys: tuple[str, ...] | None = None  # restrict to these source keys
    data_root: str | None = None
    jpeg_quality: int = 95
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images (width x height, from the header) are error rows
    jobs: int = 1
    overwrite: bool = False
    allow_unsafe_pickle: bool = False  # for .bin sources (pickles); off by default
    wait: bool = False  # another run holds OUT: wait for it instead of failing at once
    part_masks: bool = False  # also write partmaps/<key>.png: the face-part label map (occbench.face.parts)
    format: str = "files"  # files | rec | wds: loose files, or shards (occbench.synth.sharded)
    shard_size: int = 1000  # source images per shard (rec / wds)
    dask: str | None = None  # on Dask: "local:N" or a scheduler address (occbench.distributed)

    RUNTIME_FIELDS = ("out", "jobs", "overwrite", "allow_unsafe_pickle", "wait", "dask")

    def __post_init__(self):
        self.src = os.fspath(self.src)
        self.out = os.fspath(self.out)
        if isinstance(self.occluders, str):
            self.occluders = tuple(o.strip() for o in self.occluders.split(",") if o.strip())
        elif self.occluders is not None:
            self.occluders = tuple(str(o) for o in self.occluders)
        if isinstance(self.scales, (str, int, float, list, tuple)):
            self.scales = parse_scales(self.scales)
        if self.keys is not None:
            self.keys = tuple(dict.fromkeys(str(k) for k in self.keys))  # dedupe, keep order
        for name in ("landmarks_file", "occluders_dir", "data_root"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, os.fspath(v))

    def validate(self) -> "SynthConfig":
        if self.landmarks not in LANDMARKER_CHOICES:
            raise ConfigError(f"landmarks must be one of {', '.join(LANDMARKER_CHOICES)}, got {self.landmarks!r}")
        if self.landmarks == "file" and not self.landmarks_file:
            raise ConfigError("landmarks='file' needs landmarks_file (--landmarks-file F)")
        if self.landmarks_file and self.landmarks != "file":
            raise ConfigError(f"landmarks_file is only used with landmarks='file' (got landmarks={self.landmarks!r})")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}")
        if self.occluders is not None and not self.occluders:
            raise ConfigError("the occluder list is empty: name at least one (see `occbench synth --list-occluders`)")
        if isinstance(self.bank, bool) or int(self.bank) != self.bank or int(self.bank) < 0:
            raise ConfigError(f"bank must be an integer >= 0 (0: a fresh occluder look per image), got {self.bank!r}")
        if not 0.0 <= float(self.clean_ratio) <= 1.0:
            raise ConfigError(f"clean_ratio must be in [0, 1], got {self.clean_ratio}")
        n_patterns(self.k)  # validates K
        if self.limit is not None and int(self.limit) < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise ConfigError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if isinstance(self.max_pixels, bool) or int(self.max_pixels) != self.max_pixels or int(self.max_pixels) < 1:
            raise ConfigError(f"max_pixels must be an integer >= 1, got {self.max_pixels!r}")
        if int(self.jobs) == 0 or int(self.jobs) < -1:
            raise ConfigError(f"jobs must be >= 1 (or -1 for all cores), got {self.jobs}")
        if self.keys is not None and not self.keys:
            raise ConfigError("the key list is empty")
        if self.format not in ("files", "rec", "wds"):
            raise ConfigError(f"format must be files, rec or wds, got {self.format!r}")
        if isinstance(self.shard_size, bool) or int(self.shard_size) != self.shard_size or int(self.shard_size) < 1:
            raise ConfigError(f"shard_size must be an integer >= 1, got {self.shard_size!r}")
        if self.part_masks and self.format != "files":
            raise ConfigError("--part-masks writes partmaps/<key>.png files: use --format files (shards carry "
                              "the part_<name> fractions in the manifest only)")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for name in ("occluders", "scales", "keys"):
            if d[name] is not None:
                d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SynthConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown synth config fields: {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "SynthConfig":
        return cls.from_dict(json.loads(text))

    def recipe(self) -> dict:
        """The fields that determine the output (config minus RUNTIME_FIELDS)."""
        d = self.to_dict()
        for name in self.RUNTIME_FIELDS:
            d.pop(name)
        if d.get("format") == "files":  # a files run's recipe (and fingerprint) as before shards existed
            d.pop("format")
            d.pop("shard_size")
        if not d.get("part_masks"):  # likewise for runs without part maps
            d.pop("part_masks", None)
        return d


# ------------------------------------------------------------------------------------ variants


@dataclass(frozen=True)
class Variant:
    name: str  # folder name under images/ and masks/, manifest "variant"
    group: str  # seed group: the fixed occluder, else "main"
    occluder: str | None  # fixed occluder, or None: drawn per image
    scale: float | None  # fixed scale, or None: drawn per image


def plan_variants(occluders: tuple[str, ...], scales: tuple[float, ...], per_scale: bool,
                  per_occluder: bool) -> list[Variant]:
    from .occluders import seed_group  # every look of an occluder (hand, hand_v1) has the same seeds

    if per_occluder and per_scale:
        out = [Variant(f"{o}@s{format_scale(s)}", seed_group(o), o, s) for o in occluders for s in scales]
    elif per_occluder:
        out = [Variant(o, seed_group(o), o, None) for o in occluders]
    elif per_scale:
        out = [Variant(f"s{format_scale(s)}", "main", None, s) for s in scales]
    else:
        out = [Variant("main", "main", None, None)]
    for v in out:
        if not _VARIANT_NAME.match(v.name):
            raise ConfigError(f"variant name {v.name!r} is not a safe folder name (occluder names may use "
                              "letters, digits and _ . + -)")
    return out


# ------------------------------------------------------------------------------------- summary


@dataclass
class SynthSummary:
    out: str
    n_images: int = 0  # input images in the run
    n_rows: int = 0  # manifest rows (images x variants)
    status_counts: dict[str, int] = field(default_factory=dict)
    reason_counts: dict[str, int] = field(default_factory=dict)
    occluder_counts: dict[str, int] = field(default_factory=dict)  # rows with status ok
    variants: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # entries the scan passed over, by category
    resumed: int = 0  # images already done by an earlier, interrupted run
    redone: int = 0  # of those, images redone because their files were missing or changed
    crashed: int = 0  # images on which a worker process crashed (error rows)
    processed: int = 0  # images processed by this call
    elapsed_s: float = 0.0

    def record(self) -> dict:
        """The reproducible part (written to synth.json); every skipped path is in skipped.csv."""
        d = {k: getattr(self, k) for k in ("n_images", "n_rows", "status_counts", "reason_counts",
                                            "occluder_counts", "variants")}
        d["skipped"] = {c: {"n": len(p), "first": p[:10]} for c, p in self.skipped.items()}
        return d

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def format(self) -> str:
        rate = (f"{self.processed / self.elapsed_s:.1f} images/s" if self.processed and self.elapsed_s > 0
                else "rate n/a: nothing left to process")
        lines = [f"{self.n_images} images -> {self.n_rows} rows ({len(self.variants)} variant"
                 f"{'s' if len(self.variants) != 1 else ''}) in {self.out}"]
        if self.resumed:
            lines.append(f"  resumed: {self.resumed} images were already done")
        if self.redone:
            lines.append(f"  redone: {self.redone} logged images whose files were missing or changed")
        if self.crashed:
            lines.append(f"  crashed: a worker process crashed on {self.crashed} image"
                         f"{'s' if self.crashed != 1 else ''} (error rows)")
        lines.append(f"  processed {self.processed} images in {self.elapsed_s:.1f} s ({rate})")
        lines.append("  status: " + ", ".join(f"{s} {self.status_counts.get(s, 0)}"
                                               for s in ("ok", "clean", "noface", "error")))
        for reason, n in sorted(self.reason_counts.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  reason ({n}): {reason}")
        for category, found in self.skipped.items():
            more = f", ... ({len(found) - 3} more)" if len(found) > 3 else ""
            lines.append(f"  not scanned as images ({len(found)}): {category}: {', '.join(found[:3])}{more}")
        if self.skipped:
            lines.append(f"  (every path not scanned as an image is listed in {Path(self.out) / 'skipped.csv'})")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------- components


def occluder_options(cfg: SynthConfig) -> dict:
    """Per-run occluder options: the variation bank (seeded by the run's seed) when one is asked for."""
    return {"bank": int(cfg.bank), "bank_seed": int(cfg.seed) & (2**63 - 1)} if cfg.bank else {}


def _load_occluder_api():
    from . import occluders as occ_mod

    return occ_mod


def resolve_occluders(cfg: SynthConfig) -> tuple[str, ...]:
    """Load ``occluders_dir`` (if any) and return the occluder names of the run, validated."""
    occ = _load_occluder_api()
    extra: list[str] = []
    if cfg.occluders_dir:
        loaded = occ.load_occluder_dir(cfg.occluders_dir)
        extra = [getattr(o, "name", o) for o in (loaded or [])]
    if cfg.occluders is None:
        names = tuple(dict.fromkeys(list(occ.default_occluders()) + [str(n) for n in extra]))
    else:
        names = cfg.occluders
    if not names:
        raise ConfigError("no occluders are available")
    for n in names:
        occ.create_occluder(n)  # raises ConfigError with close matches for unknown names
    return names


def make_landmarker(cfg: SynthConfig):
    from ..face.landmarks import create_landmarker

    if cfg.landmarks == "file":
        return create_landmarker("file", path=cfg.landmarks_file)
    return create_landmarker(cfg.landmarks)


def open_run_source(cfg: SynthConfig):
    from ..io.sources import open_source

    return open_source(cfg.src, data_root=cfg.data_root, allow_unsafe_pickle=cfg.allow_unsafe_pickle)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def key_problem(key: str) -> str | None:
    """Why a source key cannot name output files (None: it can). Such an item gets an error row."""
    parts = key.split("/")
    if not key or key.startswith("/") or ".." in parts or "" in parts:
        return "the key cannot be used as an output path (absolute, empty or '..' parts)"
    if "\\" in key:
        return "the name contains a backslash (a folder separator on Windows): rename the file"
    if key.startswith("~"):
        return "the name starts with '~' (read as a home folder by shells and path tools): rename the file"
    if _CONTROL.search(key):
        return "the name contains control characters: rename the file"
    if printable_key(key) != key:
        return "the name is not valid UTF-8: rename the file"
    return None


def check_key(key: str) -> None:
    problem = key_problem(key)
    if problem:
        raise ConfigError(f"source key {printable_key(key)!r}: {problem}")


def printable_key(key: str) -> str:
    """``key`` with bytes that are not UTF-8 (kept by the OS as surrogates) written as backslash escapes."""
    try:
        key.encode("utf-8")
        return key
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def output_paths(key: str, fmt: str, variant: str) -> tuple[str, str]:
    """(image, mask) paths relative to OUT: images/<variant>/<key>, masks/<variant>/<key>.png.

    The key's folder tree is kept; a key without an extension gets the format's for its image. The
    mask keeps the key's extension (``x.jpg`` -> ``x.jpg.png``), so ``x.jpg`` and ``x.webp`` never share
    a mask."""
    name = key.rsplit("/", 1)[-1]
    if name.rfind(".") > 0:
        return f"images/{variant}/{key}", f"masks/{variant}/{key}.png"
    return f"images/{variant}/{key}.{fmt}", f"masks/{variant}/{key}.png"


# ------------------------------------------------------------------------------------- labels


class FaceFrame:
    """The image -> 112x112 face frame map of one image, computed once for all its variants.

    For a 112x112 crop whose landmarks are the ArcFace template the frame is the image itself: no warp."""

    def __init__(self, five: np.ndarray, size_hw: tuple[int, int]):
        five = np.asarray(five, np.float64)
        self.identity = tuple(size_hw) == FACE_FRAME_SIZE and np.array_equal(five, ARCFACE_112)
        if not self.identity:
            self.m = face_frame_transform(five)
            self.identity = tuple(size_hw) == FACE_FRAME_SIZE and np.allclose(self.m, _IDENTITY, atol=1e-9)

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """Occlusion mask (image size, 0/255) -> bool mask in the face frame (as mask_in_face_frame)."""
        if self.identity:
            return mask >= 128
        return warp(mask, self.m, FACE_FRAME_SIZE) >= 128


_IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@lru_cache(maxsize=16)
def _label_tables(k: int, h: int, w: int):
    """Tables for K x K labels on an H x W frame (FROM's cell edges): row and column cell membership
    (k x h, w x k; float32 matmuls give exact counts below 2**24), which cells each pattern covers
    (k*k x P), pattern and cell areas."""
    ys, xs = cell_edges(k, (h, w))
    cells = np.arange(k)
    rows = (np.searchsorted(ys, np.arange(h), side="right") - 1 == cells[:, None]).astype(np.float32)
    cols = (np.searchsorted(xs, np.arange(w), side="right")[:, None] - 1 == cells).astype(np.float32)
    y0, x0, y1, x1 = enumerate_patterns(k).T
    in_y = (cells[:, None] >= y0) & (cells[:, None] < y1)  # k x P: pattern spans cell row
    in_x = (cells[:, None] >= x0) & (cells[:, None] < x1)
    cover = (in_y[:, None, :] & in_x[None, :, :]).reshape(k * k, -1).astype(np.float64)
    pattern_area = ((ys[y1] - ys[y0]) * (xs[x1] - xs[x0])).astype(np.float64)
    cell_area = np.diff(ys)[:, None] * np.diff(xs)[None, :]
    return rows, cols, cover, pattern_area, cell_area


def occlusion_labels(mask: np.ndarray, five: np.ndarray, k: int, frame: FaceFrame | None = None) -> dict:
    """area_frac, pattern, cells (list of K*K floats) of an occlusion mask, measured in the face frame.

    Same values as ``patterns.match_pattern`` / ``patterns.cell_fractions`` on the face-frame mask
    (tested against them): per-cell counts and per-pattern intersections are exact integer-valued
    matrix products with cached tables."""
    frame = frame or FaceFrame(five, mask.shape)
    if frame.identity:  # the mask is the face frame: count over its bounding box only (zeros elsewhere)
        h, w = mask.shape
        rows, cols, cover, pattern_area, cell_area = _label_tables(k, h, w)
        x, y, bw, bh = cv2.boundingRect(mask)
        fm = mask[y:y + bh, x:x + bw] >= 128
        counts = (rows[:, y:y + bh] @ fm.astype(np.float32) @ cols[x:x + bw]).astype(np.float64)
    else:
        fm = frame.mask(mask)
        h, w = fm.shape
        rows, cols, cover, pattern_area, cell_area = _label_tables(k, h, w)
        counts = (rows @ fm.astype(np.float32) @ cols).astype(np.float64)
    total = counts.sum()
    inter = counts.reshape(-1) @ cover
    iou = inter / (pattern_area + total - inter + IOU_EPS)
    return {"area_frac": float(total / (h * w)), "pattern": int(np.argmax(iou)),
            "cells": (counts / cell_area).reshape(-1).tolist()}


# ------------------------------------------------------------------------------------- worker


class _Worker:
    """Per-process state (source, landmarker, occluders) and the per-item work."""

    def __init__(self, spec: dict, source=None, landmarker=None, journal: bool = True):
        self.cfg = SynthConfig.from_dict(spec["config"])
        self.out = Path(spec["out"])
        self.variants = [Variant(**v) for v in spec["variants"]]
        self.occ_names = tuple(spec["occluders"])
        self.source = source if source is not None else open_run_source(self.cfg)
        self.landmarker = landmarker if landmarker is not None else make_landmarker(self.cfg)
        occ = _load_occluder_api()
        if self.cfg.occluders_dir and source is None:
            occ.load_occluder_dir(self.cfg.occluders_dir)
        self.occluders = {n: occ.shared_occluder(n, **occluder_options(self.cfg)) for n in self.occ_names}
        self._zero_masks: dict[tuple[int, int], bytes] = {}
        self._out_s = os.path.join(str(self.out), "")
        self._made_dirs: set[str] = set()
        self._last_frame: tuple[tuple, FaceFrame] | None = None
        self._files: dict[str, int] = {}  # files written for the current item: rel path -> size
        self._journal = journal
        self._journal_fd: int | None = None
        self._crash_keys = frozenset(spec.get("crash_keys", ()))
        self._part_columns = True  # part_<name> fractions in the rows (OccludedDataset does not need them)
        self._sprite_store = self._make_sprite_store(spec)

    def _make_sprite_store(self, spec: dict):
        """With a bank, the run's processes share its drawn sprites (``OUT/.synth/sprites``)."""
        if self.cfg.bank <= 0 or not spec.get("fingerprint"):
            return None
        from .sprite_store import SpriteStore

        return SpriteStore.for_run(self.out, spec["fingerprint"])

    # -- files
    def _write(self, rel: str, data: bytes) -> None:
        """Atomic replace from ``.<name>.part`` beside the destination (same folder: a cheap rename).
        No fsync: resume needs atomicity against interruption (Ctrl-C, kill), which rename gives, and
        checks every logged file's size; fsync per file would dominate the cost. Only one process
        writes to OUT (the run's lock) and each destination belongs to one item, so the part name
        needs no PID. An OSError here is the output's fault: OutputWriteError stops the run."""
        dest = self._out_s + rel
        cut = dest.rfind("/")  # rel is "/"-separated (output_paths)
        parent = dest[:cut]
        part = f"{parent}/.{dest[cut + 1:]}.part"
        try:
            try:
                self._write_once(parent, part, dest, data)
            except FileNotFoundError:  # OUT was removed under a worker kept from an earlier run: make it again
                self._made_dirs.clear()
                self._write_once(parent, part, dest, data)
        except OSError as e:
            try:
                os.unlink(part)
            except OSError:
                pass
            raise output_error(e, dest, _RESUME_HINT) from None
        self._files[rel] = len(data)

    def _write_once(self, parent: str, part: str, dest: str, data: bytes) -> None:
        if parent not in self._made_dirs:
            try:
                os.mkdir(parent)  # usually only the last level is new
            except FileNotFoundError:
                os.makedirs(parent, exist_ok=True)
            except FileExistsError:
                pass
            self._made_dirs.add(parent)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(part, dest)

    def _note(self, key: str | None) -> None:
        """Record in OUT/.synth/inflight/<pid> the key this process is working on ("" when idle), so
        that a crash can be traced to its image."""
        if not self._journal:
            return
        try:
            if self._journal_fd is None:
                path = self.out / STATE_DIR / "inflight" / str(os.getpid())
                path.parent.mkdir(parents=True, exist_ok=True)
                self._journal_fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            data = key.encode("utf-8") if key else b""
            os.pwrite(self._journal_fd, data, 0)
            os.ftruncate(self._journal_fd, len(data))
        except OSError as e:
            raise output_error(e, self.out / STATE_DIR / "inflight", _RESUME_HINT) from None

    def idle(self) -> None:
        """Between batches: the journal says idle and is closed (OUT may be gone by the next batch)."""
        try:
            self._note(None)
        finally:
            if self._journal_fd is not None:
                os.close(self._journal_fd)
                self._journal_fd = None

    def process_logged(self, key: str, identity: str) -> dict:
        """``process`` with the crash journal kept and any exception but an output error as an error row."""
        self._note(key)
        if key in self._crash_keys:
            os.abort()  # test hook (CRASH_HOOK_ENV): behave as a native crash on this image would
        try:
            return self.process(key, identity)
        except OutputWriteError:
            raise
        except Exception as e:  # noqa: BLE001 - a bug or resource error on one image: its row, not the run's end
            return error_record(self.cfg, self.variants, self.occ_names, key, identity,
                                f"internal error: {_reason(e)}")

    def _zero_mask(self, h: int, w: int) -> bytes:
        if (h, w) not in self._zero_masks:
            self._zero_masks[(h, w)] = encode_mask_png(np.zeros((h, w), np.uint8))
        return self._zero_masks[(h, w)]

    # -- one input image
    def process(self, key: str, identity: str) -> dict:
        cfg = self.cfg
        base = dict(key=key, identity=identity, src=cfg.src, placement=cfg.placement, k=cfg.k)
        clean = self.cfg.clean_ratio > 0 and \
            np.random.default_rng(derive_seed(self.cfg.seed, key, "clean")).random() < self.cfg.clean_ratio
        draws = [self._draws(key, v, clean) for v in self.variants]

        def all_rows(status: str, reason: str, **extra) -> list[dict]:
            return [empty_row(**base, variant=v.name, status=status, reason=reason, occluder=d["occluder"],
                              scale=d["scale"], seed=d["seed"], **extra)
                    for v, d in zip(self.variants, draws)]

        self._files = {}
        try:
            data = self.source.read_bytes(key)
        except Exception as e:  # noqa: BLE001 - OSError, a corrupt record...: recorded, never fatal
            return {"key": key, "rows": all_rows("error", _reason(e)), "landmarks": None}
        fmt = sniff_format(data) or ""
        info = probe(data)
        if info is not None and info.pixels > cfg.max_pixels:  # refused before decoding allocates it
            return {"key": key, "rows": all_rows("error", _too_large(info.width, info.height, cfg.max_pixels),
                                                 width=info.width, height=info.height, fmt=fmt),
                    "landmarks": None}
        try:
            image = decode_rgb(data)
        except Exception as e:  # noqa: BLE001 - ImageDecodeError, or a decoder crash on one file
            return {"key": key, "rows": all_rows("error", _reason(e), fmt=fmt), "landmarks": None}
        h, w = image.shape[:2]
        size = dict(width=w, height=h, fmt=fmt)
        if h * w > cfg.max_pixels:  # a header the probe could not read
            return {"key": key, "rows": all_rows("error", _too_large(w, h, cfg.max_pixels), **size),
                    "landmarks": None}
        conversion = info.conversion() if info is not None else ""
        try:
            lm = self.landmarker.detect(image, key=key)
        except Exception as e:  # noqa: BLE001
            return {"key": key, "rows": all_rows("error", f"landmarks failed: {_reason(e)}", **size),
                    "landmarks": None}
        from ..face.landmarks import landmarks_to_row

        lm_row = landmarks_to_row(key, lm)
        if lm.landmarks is None:
            return {"key": key, "rows": all_rows(lm.status or "noface", lm.reason, **size), "landmarks": lm_row}
        image.flags.writeable = False  # occluders are transforms: they return new arrays
        frame = self._frame(lm.landmarks.five, (h, w))
        # the part map (a raster of the dense mesh for wild faces) only feeds the part columns / part maps
        parts, part_path = self._part_map(key, lm.landmarks, (h, w)) if self._part_columns else (None, "")
        rows = []
        for v, d in zip(self.variants, draws):
            row = empty_row(**base, **size, variant=v.name, seed=d["seed"], landmarks=lm.landmarks.source,
                            part_map=part_path)
            try:
                row.update(self._render(key, fmt, data, image, lm.landmarks, frame, v, d, parts))
            except OutputWriteError:
                raise
            except MeshRequiredError as e:  # a mesh-fitted occluder on a 5-point face: explained, never guessed
                row.update(status="noface", reason=str(e), occluder=d["occluder"], scale=d["scale"])
            except Exception as e:  # noqa: BLE001 - one failing variant is recorded, not fatal
                row.update(status="error", reason=_reason(e), occluder=d["occluder"], scale=d["scale"])
            if row["status"] == "ok" and conversion:
                row["conversion"] = conversion
            rows.append(row)
        return {"key": key, "rows": rows, "landmarks": lm_row, "files": dict(self._files)}

    def _part_map(self, key: str, landmarks, size_hw: tuple[int, int]):
        """(PartMap, partmaps/ path or ""): the face-part label map, written with ``part_masks``."""
        from ..face.parts import encode_part_map, face_part_map

        if landmarks.dense is None:  # 5 points only: template crops repeat the same map (or noface)
            ck = (np.asarray(landmarks.five).tobytes(), landmarks.source, landmarks.method, size_hw)
            last = getattr(self, "_last_parts", None)
            pm = last[1] if last is not None and last[0] == ck else face_part_map(landmarks, size_hw)
            self._last_parts = (ck, pm)
        else:
            pm = face_part_map(landmarks, size_hw)
        if not (self.cfg.part_masks and pm.ok):
            return pm, ""
        rel = f"partmaps/{key}.png"
        self._write(rel, encode_part_map(pm.labels))
        return pm, rel

    def _frame(self, five: np.ndarray, size_hw: tuple[int, int]) -> FaceFrame:
        """FaceFrame, reused while the landmarks and size repeat (aligned crops: always)."""
        key = (np.asarray(five, np.float64).tobytes(), size_hw)
        if self._last_frame is None or self._last_frame[0] != key:
            self._last_frame = (key, FaceFrame(five, size_hw))
        return self._last_frame[1]

    def _draws(self, key: str, v: Variant, clean: bool) -> dict:
        cfg = self.cfg
        seed = derive_seed(cfg.seed, key, v.group)
        if clean:  # nothing is drawn for a clean image
            return {"clean": True, "seed": seed, "rng": None, "occluder": "none", "scale": float("nan")}
        rng = np.random.default_rng(seed)
        oi = int(rng.integers(len(self.occ_names)))  # always drawn, so every variant of a group
        si = int(rng.integers(len(cfg.scales)))  # hands the occluder the same RNG state
        occ = v.occluder or self.occ_names[oi]
        scale = float(v.scale if v.scale is not None else cfg.scales[si])
        return {"clean": False, "seed": seed, "rng": rng, "occluder": occ, "scale": scale}

    def _render(self, key, fmt, data, image, landmarks, frame: FaceFrame, v: Variant, d: dict, parts) -> dict:
        from ..face.parts import part_row

        cfg = self.cfg
        h, w = image.shape[:2]
        image_rel, mask_rel = output_paths(key, fmt, v.name)
        if d["clean"]:
            self._write(image_rel, data)
            self._write(mask_rel, self._zero_mask(h, w))
            return dict(image=image_rel, mask=mask_rel, status="clean", occluder="none", scale=float("nan"),
                        area_frac=0.0, pattern=0, cells=cells_json([0.0] * (cfg.k * cfg.k)), params="{}",
                        **(part_row(np.zeros((h, w), np.uint8), parts) if self._part_columns else {}))
        occ = self.occluders[d["occluder"]]
        occ.sprite_store = self._sprite_store  # instances are shared per process: this run's, for this call
        try:
            res = occ(image, landmarks, rng=d["rng"], scale=d["scale"], placement=cfg.placement)
        finally:
            occ.sprite_store = None
        out_img = np.asarray(res.image)
        mask = np.asarray(res.mask)
        if out_img.shape != image.shape or out_img.dtype != np.uint8:
            raise OccbenchError(f"occluder {d['occluder']!r} returned an image of shape {out_img.shape} "
                                f"{out_img.dtype}, expected {image.shape} uint8")
        if mask.shape != (h, w):
            raise OccbenchError(f"occluder {d['occluder']!r} returned a mask of shape {mask.shape}, "
                                f"expected {(h, w)}")
        mask = np.where(mask >= 128, 255, 0).astype(np.uint8) if mask.dtype != np.uint8 else mask
        labels = occlusion_labels(mask, landmarks.five, cfg.k, frame)
        self._write(image_rel, self._encode_image(out_img, fmt))
        self._write(mask_rel, self._encode_mask(mask))
        return dict(image=image_rel, mask=mask_rel, status="ok", occluder=d["occluder"], scale=d["scale"],
                    area_frac=labels["area_frac"], pattern=labels["pattern"], cells=cells_json(labels["cells"]),
                    params=self._params_json(res.params),
                    **(_part_row(mask, parts) if self._part_columns else {}))

    # -- encodings (a capture worker for training keeps arrays where decoding would give them back)
    def _encode_image(self, image: np.ndarray, fmt: str) -> bytes:
        return encode(image, fmt or "png", jpeg_quality=self.cfg.jpeg_quality)

    def _encode_mask(self, mask: np.ndarray) -> bytes:
        return encode_mask_png(mask)

    def _params_json(self, params: dict) -> str:
        return to_json(params)


class _PartCounts:
    """Per part map: its labels as indices and the pixel count of every part (computed once)."""

    def __init__(self, labels: np.ndarray, parts):
        self.n = len(parts.parts) + 1
        self.lab = np.ascontiguousarray(labels).astype(np.intp)
        self.total = np.bincount(self.lab.ravel(), minlength=self.n)[:self.n]
        by_id = {p.name: p.id for p in parts.parts}
        self.parts = [(f"part_{p.name}", p.id) for p in parts.parts]
        self.groups = [(f"part_{g}", [by_id[m] for m in members]) for g, members in parts.groups.items()]
        self.group_totals = [int(self.total[ids].sum()) for _, ids in self.groups]


_PART_COUNTS: dict[int, tuple[Any, _PartCounts]] = {}


def _part_row(mask: np.ndarray, pm) -> dict:
    """``face.parts.part_row(mask, pm)`` with the same values, faster: part totals are computed once
    per part map and occluded pixels counted over the mask's bounding box only."""
    if not pm.ok:
        return {"part_reason": pm.reason}
    hit = _PART_COUNTS.get(id(pm))
    if hit is None or hit[0] is not pm:
        from ..face.parts import load_parts

        if len(_PART_COUNTS) > 8:
            _PART_COUNTS.clear()
        hit = _PART_COUNTS[id(pm)] = (pm, _PartCounts(pm.labels, load_parts()))
    pc = hit[1]
    if mask.shape != pc.lab.shape:
        from ..face.parts import part_row

        return part_row(mask, pm)  # raises the shape error
    x, y, w, h = cv2.boundingRect(mask)
    lab = pc.lab[y:y + h, x:x + w]
    covered = np.bincount(lab[mask[y:y + h, x:x + w] >= 128], minlength=pc.n)[:pc.n]
    total = pc.total
    out = {name: float(covered[i] / total[i]) if total[i] else float("nan") for name, i in pc.parts}
    for (name, ids), t in zip(pc.groups, pc.group_totals):
        out[name] = float(covered[ids].sum() / t) if t else float("nan")
    return out


_float_repr = lru_cache(maxsize=1 << 15)(float.__repr__)  # cell fractions take few distinct values


def cells_json(cells: list[float]) -> str:
    """``to_json`` of a list of finite floats (as JSON writes them: repr), with the reprs cached."""
    return "[" + ",".join(map(_float_repr, cells)) + "]"


def _too_large(w: int, h: int, limit: int) -> str:
    return (f"image is {w}x{h} ({w * h / 1e6:.1f} MP), above the {limit / 1e6:g} MP limit "
            "(raise it with --max-pixels if you have the memory)")


def _reason(e: BaseException) -> str:
    if isinstance(e, OccbenchError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def encode_mask_png(mask: np.ndarray) -> bytes:
    """uint8 HxW -> 8-bit grayscale PNG (filter 0, zlib level 1). Several times faster than cv2 for
    the small, flat masks written here, and any PNG reader returns the same uint8 array."""
    h, w = mask.shape
    raw = np.zeros((h, w + 1), np.uint8)  # a 0 filter byte per row, then the pixels
    raw[:, 1:] = mask

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1)) + chunk(b"IEND", b""))


_WORKER_CACHE: dict[str, _Worker] = {}


def _workers_lock(out: str | os.PathLike, exclusive: bool) -> int:
    """flock ``OUT/.synth/workers.lock``: shared by a worker process while it works on a batch, exclusive
    (briefly) by a run as it starts, which so waits for worker processes left working by a run that
    was killed (they finish their batch, then exit). Returns the fd; closing it releases the lock."""
    import fcntl

    path = os.path.join(os.fspath(out), STATE_DIR, WORKERS_LOCK)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise output_error(e, path, _RESUME_HINT) from None
    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    return fd


def _run_batch(spec: dict, batch: list[tuple[str, str]]) -> list[dict]:
    """joblib / Dask task: process a batch of (key, identity) in a worker process (state built once)."""
    lease = _workers_lock(spec["out"], exclusive=False)
    try:
        w = _WORKER_CACHE.get(spec["fingerprint"])
        if w is None or w.out != Path(spec["out"]):
            _WORKER_CACHE.clear()
            w = _WORKER_CACHE[spec["fingerprint"]] = _Worker(spec)
        try:
            return [w.process_logged(k, ident) for k, ident in batch]
        finally:
            w.idle()
    finally:
        os.close(lease)


def _isolated_main() -> None:
    """Entry point of the fresh interpreter ``_run_isolated`` starts: (spec, key, identity) pickled on
    stdin, ("ok", record) or ("output", message) pickled to the file descriptor in argv[1]. With
    ``spec["capture"]`` (shard runs) the item is rendered in memory and nothing is written."""
    import pickle
    import sys

    spec, key, identity = pickle.loads(sys.stdin.buffer.read())
    lease = _workers_lock(spec["out"], exclusive=False)
    try:
        try:
            if spec.get("capture"):  # shard runs: outputs captured in memory, nothing written to OUT
                from .sharded import _CaptureWorker

                result = ("ok", _CaptureWorker(spec).render(key, identity))
            else:
                result = ("ok", _Worker(spec, journal=False).process_logged(key, identity))
        except OutputWriteError as e:
            result = ("output", str(e))
    finally:
        os.close(lease)
    with os.fdopen(int(sys.argv[1]), "wb") as fh:
        fh.write(pickle.dumps(result))


def _run_isolated(spec: dict, cfg: SynthConfig, variants, occ_names, key: str, identity: str) -> tuple[dict, bool]:
    """Process one image in a fresh interpreter. Returns (record, crashed): a process that dies on it
    (signal, abort, exit) makes the image an error row instead of ending the run."""
    import pickle
    import subprocess
    import sys

    r, w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-c", "from occbench.synth.pipeline import _isolated_main; "
                                 "_isolated_main()", str(w)], stdin=subprocess.PIPE, pass_fds=(w,))
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as fh:
        try:
            proc.stdin.write(pickle.dumps((spec, key, identity)))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        data = fh.read()
    code = proc.wait()
    if code == 0 and data:
        kind, value = pickle.loads(data)  # from our own child process
        if kind == "output":
            raise OutputWriteError(value)
        return value, False
    how = f"signal {signal.Signals(-code).name}" if code < 0 and -code in signal.Signals._value2member_map_ \
        else f"exit code {code}"
    reason = f"the worker process crashed on this image ({how})"
    return error_record(cfg, variants, occ_names, key, identity, reason), True


# ---------------------------------------------------------------------------------- the run


def _fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _is_within(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


class OutLock:
    """Exclusive ``fcntl.flock`` on ``OUT/.synth/run.lock`` for a whole run; it holds the holder's PID.

    A second run into the same OUT fails at once with the holder's PID (``wait``: blocks until it is
    released). The kernel drops the lock when the process ends, however it ends."""

    def __init__(self, out: Path, wait: bool = False, on_wait=None):
        import fcntl

        self.path = out / STATE_DIR / LOCK_FILE
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise output_error(e, out if not out.is_dir() else self.path, "Choose a writable --out") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            if not wait:
                os.close(self.fd)
                raise RunLockedError(
                    f"another `occbench synth` run (PID {holder}) is writing to {out}: wait for it to finish "
                    "(or pass --wait to wait for it), or choose another --out") from None
            if on_wait is not None:
                on_wait(f"waiting for the `occbench synth` run with PID {holder} to finish writing to {out} ...")
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            self.release()
            raise output_error(e, self.path, "Choose a writable --out") from None

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)  # no PID left behind
            except OSError:
                pass
            os.close(self.fd)  # releases the flock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _check_out_is_ours(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir() and not (out / STATE_DIR).is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty and was not written by `occbench synth`; "
                          "choose a new or empty folder")


def _prepare_out(out: Path, lock: dict, overwrite: bool) -> None:
    """With OUT locked: check that it holds a run of the same configuration (resume), or clear it;
    sweep what an interrupted run left (temp files of atomic writes, the 0.2 temp folder)."""
    lock_path = out / STATE_DIR / "lock.json"
    if any(p.name != STATE_DIR for p in out.iterdir()) or \
            any(p.name not in (LOCK_FILE, WORKERS_LOCK) for p in (out / STATE_DIR).iterdir()):
        old = json.loads(lock_path.read_text()) if lock_path.is_file() else None
        started = old is not None or (out / STATE_DIR / "rows.jsonl").exists()  # else: killed while starting
        if started and (old is None or old.get("fingerprint") != lock["fingerprint"]):
            if not overwrite:
                diff = _describe_diff(old, lock)
                same_options = old is not None and old.get("recipe") == lock.get("recipe")
                todo = ("The same options now make a different run (occbench or its occluder / landmark "
                        "definitions changed since): pass --overwrite to redo it" if same_options else
                        "Rerun with the same options to resume it, pass --overwrite to replace it")
                raise ConfigError(f"--out {out} holds a synth run with a different configuration ({diff}). "
                                  f"{todo}, or choose another --out")
            for name in MANAGED:
                p = out / name
                if name == STATE_DIR:  # everything but the locks
                    for q in p.iterdir():
                        if q.name not in (LOCK_FILE, WORKERS_LOCK):
                            shutil.rmtree(q) if q.is_dir() and not q.is_symlink() else q.unlink()
                elif p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
    (out / STATE_DIR).mkdir(exist_ok=True)
    shutil.rmtree(out / STATE_DIR / "tmp", ignore_errors=True)  # occbench 0.2 wrote its part files there
    sweep_temp_files(out)
    sweep_temp_files(out / STATE_DIR)
    from .sprite_store import SpriteStore

    SpriteStore.sweep(out)
    if not lock_path.is_file() or json.loads(lock_path.read_text()) != lock:
        from ..io.atomic import atomic_write_json

        atomic_write_json(lock_path, lock)


def sweep_part_files(out: Path) -> int:
    """Remove ``.<name>.part`` files an interrupted run left beside its outputs."""
    n = 0
    for top in ("images", "masks"):
        for folder, _, files in os.walk(out / top):
            for name in files:
                if name.startswith(".") and name.endswith(".part"):
                    os.unlink(os.path.join(folder, name))
                    n += 1
    return n


def _verify_done(out: Path, done: dict[str, dict]) -> list[str]:
    """Keys of logged items whose files are missing or have another size than logged."""
    bad = []
    prefix = os.path.join(str(out), "")
    for key, rec in done.items():
        for rel, size in (rec.get("files") or {}).items():
            try:
                ok = os.stat(prefix + rel).st_size == size
            except OSError:
                ok = False
            if not ok:
                bad.append(key)
                break
    return bad


def _describe_diff(old: dict | None, new: dict) -> str:
    if old is None:
        return "no lock file"
    diffs = []
    for section in ("recipe",):
        a, b = old.get(section, {}), new.get(section, {})
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                va, vb = (_short(a.get(k)), _short(b.get(k)))
                diffs.append(f"{k}: {va} -> {vb}")
    if old.get("version") != new.get("version"):
        diffs.append(f"occbench version: {old.get('version')} -> {new.get('version')}")
    if old.get("layout") != new.get("layout"):
        diffs.append(f"output layout: {old.get('layout', 1)} -> {new.get('layout')}")
    a, b = (list(old.get("occluders") or []), list(new.get("occluders") or []))  # names (list or dict keys)
    if old.get("occluders") != new.get("occluders"):
        gone, added = [n for n in a if n not in b], [n for n in b if n not in a]
        names = lambda ns: ", ".join(ns[:4]) + (f" (+{len(ns) - 4} more)" if len(ns) > 4 else "")  # noqa: E731
        diffs.append("; ".join(x for x in (f"occluders no longer drawn: {names(gone)}" if gone else "",
                                            f"occluders added: {names(added)}" if added else "") if x)
                     or "occluder definitions changed")
    if old.get("landmarker") != new.get("landmarker"):
        diffs.append("landmarker settings changed")
    if not diffs:
        diffs.append("occluder or landmarker definitions changed")
    return "; ".join(diffs[:5])


def _short(v: Any) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 60 else s[:57] + "..."


def _select_items(source, cfg: SynthConfig) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(key, identity) pairs of the run in source order, and the reasons of those that cannot be
    processed: requested keys missing from the source, entries the scan found unusable, keys that
    cannot name an output file. Each of those gets an error row."""
    items = [(it.key, it.identity or "") for it in source.items()]
    unusable = source.unusable()
    if unusable:  # tree sources: merge in key order
        items = sorted(items + [(k, k.rpartition("/")[0]) for k in unusable], key=lambda p: p[0])
    errors: dict[str, str] = dict(unusable)
    if cfg.keys is not None:
        wanted = set(cfg.keys)
        have = {k for k, _ in items}
        missing = [k for k in cfg.keys if k not in have]
        items = [p for p in items if p[0] in wanted] + [(k, "") for k in missing]
        errors.update((k, "key not found in the source") for k in missing)
    if cfg.limit is not None:
        items = items[: int(cfg.limit)]
    for key, _ in items:
        problem = key_problem(key)
        if problem and key not in errors:
            errors[key] = problem
    kept = {k for k, _ in items}
    return items, {k: r for k, r in errors.items() if k in kept}


def run_synth(cfg: SynthConfig | None = None, *, progress: bool = True, **overrides) -> SynthSummary:
    """Run (or resume) a synth job. ``run_synth(SynthConfig(...))`` or ``run_synth(src=..., out=..., ...)``;
    keyword overrides replace fields of ``cfg``."""
    t0 = time.perf_counter()
    if cfg is None:
        cfg = SynthConfig(**overrides)
    elif overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    cfg.validate()
    if cfg.format != "files":
        from .sharded import run_synth_sharded

        return run_synth_sharded(cfg, cfg.format, int(cfg.shard_size), dask=cfg.dask, progress=progress)
    out = Path(cfg.out).expanduser()
    if cfg.dask:
        from ..distributed import check_shared_out, parse_dask

        check_shared_out(out, parse_dask(cfg.dask))

    source = open_run_source(cfg)
    root = getattr(source, "root", None)
    if root is not None and source.kind not in ("recordio", "binset") and _is_within(out, Path(root)):
        raise ConfigError(f"--out {out} lies inside the source folder {root}; choose a folder outside it")
    occ_names = resolve_occluders(cfg)
    occ_api = _load_occluder_api()
    occ_desc = {n: occ_api.create_occluder(n, **occluder_options(cfg)).describe() for n in occ_names}
    landmarker = make_landmarker(cfg)
    lm_desc = landmarker.describe()
    variants = plan_variants(occ_names, cfg.scales, cfg.per_scale, cfg.per_occluder)
    pairs, pre_errors = _select_items(source, cfg)
    if not pairs:
        raise DataNotFoundError(f"no images to process in {cfg.src}")

    recipe = cfg.recipe()
    lock = {"version": __version__, "layout": LAYOUT_VERSION, "recipe": recipe, "occluders": occ_desc,
            "landmarker": lm_desc, "variants": [dataclasses.asdict(v) for v in variants]}
    lock["fingerprint"] = _fingerprint(lock)
    _check_out_is_ours(out)
    import sys

    with OutLock(out, wait=cfg.wait, on_wait=(lambda msg: print(msg, file=sys.stderr)) if progress else None):
        os.close(_workers_lock(out, exclusive=True))  # workers of a killed run have finished their batch
        try:
            _prepare_out(out, lock, cfg.overwrite)
            log = RowLog(out / STATE_DIR / "rows.jsonl")
            done = log.load()
            redo = set(_verify_done(out, done)) if done else set()
            sweep_part_files(out)
        except OSError as e:
            raise output_error(e, out, _RESUME_HINT) from None
        todo = [(k, i) for k, i in pairs if k not in done or k in redo]
        resumed = len(pairs) - len(todo)
        spec = {"config": cfg.to_dict(), "out": str(out), "variants": [dataclasses.asdict(v) for v in variants],
                "occluders": list(occ_names), "fingerprint": lock["fingerprint"]}
        if os.environ.get(CRASH_HOOK_ENV):  # test hook: read here, so every worker process sees it
            spec["crash_keys"] = sorted(filter(None, os.environ[CRASH_HOOK_ENV].split("\n")))

        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), initial=resumed, unit="img", desc="synth", disable=not progress,
                   dynamic_ncols=True, leave=False)
        run = _Run(spec, cfg, variants, occ_names, out, log, bar)
        try:
            with log:
                early = [(k, i) for k, i in todo if k in pre_errors]
                if early:
                    log.append(error_record(cfg, variants, occ_names, k, i, pre_errors[k]) for k, i in early)
                    bar.update(len(early))
                todo = [(k, i) for k, i in todo if k not in pre_errors]
                run.isolate_suspects(todo)  # images a crashed earlier run was working on
                todo = [(k, i) for k, i in todo if k not in run.handled]
                run.execute(todo, source, landmarker)
        finally:
            bar.close()
            landmarker.close()

        try:
            summary = _finish(cfg, out, pairs, log.records, variants, source, occ_desc, lm_desc, lock)
        except OSError as e:
            raise output_error(e, out, _RESUME_HINT) from None
    summary.resumed = resumed
    summary.redone = len(redo)
    summary.crashed = run.crashed
    summary.processed = len(pairs) - resumed
    summary.elapsed_s = time.perf_counter() - t0
    return summary


def error_record(cfg, variants, occ_names, key: str, identity: str, reason: str) -> dict:
    """The log record of an item that produced nothing: one error row per variant."""
    shown = printable_key(key)
    rows = [empty_row(key=shown, identity=printable_key(identity), src=cfg.src, variant=v.name, status="error",
                      reason=reason, placement=cfg.placement, k=cfg.k, occluder=v.occluder or "",
                      scale=v.scale if v.scale is not None else float("nan"),
                      seed=derive_seed(cfg.seed, shown, v.group))
            for v in variants]
    return {"key": key, "rows": rows, "landmarks": None}


def drain_journal(folder: Path, errors: str) -> list[str]:
    """Keys the journal files in ``folder`` name (one file per image a process was on), each file removed
    once read; a file that cannot be read or removed is skipped. ``errors``: how undecodable bytes decode."""
    keys = []
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            try:
                key = p.read_bytes().decode("utf-8", errors)
                p.unlink()
            except OSError:
                continue
            if key:
                keys.append(key)
    return keys


def _n_jobs(jobs: int) -> int:
    return (os.cpu_count() or 1) if jobs == -1 else int(jobs)


class _Run:
    """Executes the items of a run: in this process (-j 1), in joblib workers or on Dask (--dask), logging
    every finished item, and turning a worker process that crashes into error rows for the images it was on."""

    def __init__(self, spec, cfg: SynthConfig, variants, occ_names, out: Path, log: RowLog, bar):
        self.spec, self.cfg, self.variants, self.occ_names = spec, cfg, variants, occ_names
        self.inflight = out / STATE_DIR / "inflight"
        self.log, self.bar = log, bar
        self.crashed = 0
        self.handled: set[str] = set()  # keys processed by this call (a redone key is logged anew)

    def _log(self, recs: list[dict]) -> None:
        self.log.append(recs)
        self.handled.update(r["key"] for r in recs)
        self.bar.update(len(recs))

    def _suspects(self) -> list[str]:
        """Keys the crash journal names (a process died on them), cleared once read."""
        return drain_journal(self.inflight, "replace")

    def isolate_suspects(self, todo: list[tuple[str, str]], suspects: list[str] | None = None) -> None:
        """Process each suspect of ``todo`` (default: those the crash journal names) in a fresh process."""
        identity = dict(todo)
        for key in self._suspects() if suspects is None else suspects:
            if key in identity and key not in self.handled:
                rec, crashed = _run_isolated(self.spec, self.cfg, self.variants, self.occ_names, key, identity[key])
                self.crashed += crashed
                self._log([rec])

    def execute(self, todo: list[tuple[str, str]], source, landmarker) -> None:
        if not todo:
            return
        jobs = _n_jobs(self.cfg.jobs)
        if not self.cfg.dask and (jobs == 1 or len(todo) == 1):
            self._in_process(todo, source, landmarker)
            return
        from concurrent.futures.process import BrokenProcessPool

        from joblib.externals.loky.process_executor import TerminatedWorkerError

        from ..distributed import DaskSession, WorkerDied

        with (DaskSession(self.cfg.dask) if self.cfg.dask else contextlib.nullcontext()) as session:
            while todo:
                try:
                    self._on_dask(todo, session) if session is not None else self._parallel(todo, jobs)
                    return
                except (TerminatedWorkerError, BrokenProcessPool, WorkerDied):
                    pass  # a worker died: find the image it was on, then carry on with the rest
                except BaseException:  # Ctrl-C, an output error: workers were stopped, none crashed
                    self._suspects()
                    raise
                suspects = [k for k in self._suspects() if k not in self.handled]
                if not suspects:
                    raise OccbenchError("a worker process died while no image was being processed (out of "
                                        "memory?); rerun the same command to resume, or use fewer --jobs")
                self.isolate_suspects(todo, suspects)
                todo = [(k, i) for k, i in todo if k not in self.handled]

    def _in_process(self, todo, source, landmarker) -> None:
        worker = _Worker(self.spec, source=source, landmarker=landmarker)
        pending: list[dict] = []  # logged in small groups; finished items are logged even on Ctrl-C
        last = time.monotonic()
        try:
            for key, ident in todo:
                pending.append(worker.process_logged(key, ident))
                if len(pending) >= 32 or time.monotonic() - last > 1.0:
                    self._log(pending)
                    pending, last = [], time.monotonic()
        finally:
            try:
                self._log(pending)
            finally:
                worker.idle()  # a clean stop (even Ctrl-C) leaves no suspect behind

    def _on_dask(self, todo, session) -> None:
        from ..distributed import run_on_dask

        # batches of at most 256 images, at least 64 of them when there are enough: load balance, progress
        size = max(1, min(256, -(-len(todo) // 64)))
        batches = [todo[i:i + size] for i in range(0, len(todo), size)]
        run_on_dask(session, _run_batch, self.spec, batches, on_done=self._log)

    def _parallel(self, todo, jobs: int) -> None:
        from joblib import Parallel, delayed

        # batches amortise task overhead; several per worker keep the load balanced and progress moving
        size = max(1, min(256, -(-len(todo) // (jobs * 8))))
        batches = [todo[i:i + size] for i in range(0, len(todo), size)]
        with Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered") as par:
            for recs in par(delayed(_run_batch)(self.spec, b) for b in batches):
                self._log(recs)


def _finish(cfg, out: Path, pairs, records: dict, variants, source, occ_desc, lm_desc, lock) -> SynthSummary:
    from ..io.atomic import atomic_write_json, atomic_write_table
    from ..face.landmarks import write_landmarks_table

    rows, lm_rows = [], []
    for key, _ in pairs:
        rec = records.get(key)
        if rec is None:
            raise OccbenchError(f"internal error: no record for {printable_key(key)!r} after the run; rerun to resume")
        rows.extend(rec["rows"])
        if rec.get("landmarks") is not None:
            lm_rows.append(rec["landmarks"])
    df = rows_to_frame(rows)
    write_manifest(df, out)
    write_landmarks_table(lm_rows, out / "landmarks.parquet", out / "landmarks.csv")
    skipped = source.skipped()
    import pandas as pd

    atomic_write_table(pd.DataFrame([(c, printable_key(p)) for c, found in skipped.items() for p in found],
                                    columns=["category", "path"]), out / "skipped.csv")

    summary = SynthSummary(out=str(out), n_images=len(pairs), n_rows=len(df), variants=[v.name for v in variants])
    summary.status_counts = {s: int(n) for s, n in sorted(Counter(df["status"]).items())}
    bad = df[df["status"].isin(["noface", "error"])]
    summary.reason_counts = {r: int(n) for r, n in sorted(Counter(bad["reason"]).items())}
    ok = df[df["status"] == "ok"]
    summary.occluder_counts = {o: int(n) for o, n in sorted(Counter(ok["occluder"]).items())}
    summary.skipped = {c: [printable_key(p) for p in found] for c, found in skipped.items()}

    atomic_write_json(out / "synth.json", {
        "occbench_version": __version__,
        "seed": cfg.seed,
        "config": cfg.recipe(),
        "fingerprint": lock["fingerprint"],
        "source": source.describe(),
        "landmarker": lm_desc,
        "occluders": occ_desc,
        "variants": lock["variants"],
        "parts": _parts_record(cfg),
        "layout": {"image": "images/<variant>/<key>", "mask": "masks/<variant>/<key>.png",
                   "manifest": ["manifest.parquet", "manifest.csv"],
                   "landmarks": ["landmarks.parquet", "landmarks.csv"],
                   "skipped": "skipped.csv (category, path): entries the scan did not take as images",
                   "mask_values": "uint8, 255 = occluded", "labels_frame": "112x112 ArcFace face frame",
                   "version": LAYOUT_VERSION},
        "summary": summary.record(),
    })
    return summary


def _parts_record(cfg: SynthConfig) -> dict:
    """synth.json "parts": the legend, groups and definition of the part columns / part maps."""
    from ..face.parts import load_parts

    return {**load_parts().describe(), "part_map": "partmaps/<key>.png (uint8 part ids, 0 = none)"
            if cfg.part_masks else "not written (--part-masks)",
            "fractions": "part_<name>: occluded pixels / pixels of the part in the image's part map; NaN and "
                         "part_reason when the face has no mesh (5-point landmarks)"}


def load_run_config(out: str | os.PathLike) -> dict:
    """synth.json of a finished run."""
    p = Path(out) / "synth.json"
    if not p.is_file():
        raise DataNotFoundError(f"{p} not found: is {out} the --out folder of a finished `occbench synth` run?")
    return json.loads(p.read_text())
