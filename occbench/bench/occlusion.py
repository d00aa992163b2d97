"""Scoring a recognizer's occlusion estimates (issue 10): predictions per image set, ground truth in
the model frame (``occlusion_truth``), the per-variant ``occlusion.estimate`` block of the results,
the link to recognition, and the contact sheet / plots.

Flow inside the engine:

1. extraction collects ``SetPredictions`` (mask P(occluded) (N, h, w), pattern scores (N, P)) beside
   the embeddings when the recognizer declares occlusion outputs (``recognizer.outputs``); they are
   cached beside the embeddings (``prediction_cache_keys``);
2. ``set_truth`` builds the truth of an image set: for an occluded set each image's mask PNG is
   warped with the image's alignment M into the model's output grid (area fraction >= tau); the clean
   set is all-visible with pattern 0. The occluded sets share their images and alignments, so
   ``sets_truth`` does them together: one warp per image carries up to 8 sets' masks (same values);
3. ``score_set`` gives the block (mask and pattern metrics, breakdowns by occluder / scale / area)
   and per-image arrays; ``link_to_recognition`` splits verification accuracy by estimate quality.

Reference ``oracle`` recognizers declare ``source: "truth"``: their prediction is the truth built
in step 2 (they never receive it as input). ``blind`` is an ordinary model that says "all clean".
"""
from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from ..errors import UnsafePathError
from ..metrics import occlusion as M
from .occlusion_truth import DEFAULT_TAU, labels_from_cell_counts, truth_cells, truth_cells_multi

log = logging.getLogger(__name__)

AREA_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0001)  # occluded face-frame share, manifest's area_frac


_SCORING = True  # private switch: False runs every model as one without occlusion outputs (the overhead benchmark)


def output_spec(recognizer):
    """The recognizer's ``OutputSpec`` when it declares occlusion outputs, else None."""
    spec = getattr(recognizer, "outputs", None)
    return spec if _SCORING and spec is not None and getattr(spec, "has_occlusion", False) else None


@dataclass
class SetPredictions:
    """A recognizer's occlusion outputs over one image set (rows as the set's keys; NaN rows where the
    image has no output)."""

    mask: np.ndarray | None  # (N, h, w) float32 P(occluded)
    pattern: np.ndarray | None  # (N, P) float32 class scores

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in (("mask", self.mask), ("pattern", self.pattern)) if v is not None}


class OutputCollector:
    """Filled batch by batch during extraction: ``add(rows, ModelOutputs)``."""

    def __init__(self, n: int):
        self.n = n
        self.mask: np.ndarray | None = None
        self.pattern: np.ndarray | None = None

    def add(self, rows: np.ndarray, out) -> None:
        if out.mask is not None:
            if self.mask is None:
                self.mask = np.full((self.n, *out.mask.shape[1:]), np.nan, np.float32)
            self.mask[rows] = out.mask
        if out.pattern is not None:
            if self.pattern is None:
                self.pattern = np.full((self.n, out.pattern.shape[1]), np.nan, np.float32)
            self.pattern[rows] = out.pattern

    def predictions(self, rows: list[int] | np.ndarray | None = None, n: int | None = None) -> SetPredictions:
        """The collected outputs, optionally scattered into ``n`` rows at ``rows``."""
        if rows is None:
            return SetPredictions(self.mask, self.pattern)
        rows = np.asarray(rows, np.int64)

        def scatter(a):
            if a is None:
                return None
            out = np.full((n, *a.shape[1:]), np.nan, np.float32)
            out[rows] = a
            return out

        return SetPredictions(scatter(self.mask), scatter(self.pattern))


# ----------------------------------------------------------------------------------- cache


def prediction_cache_key(embedding_key, spec) -> tuple[str, str, str]:
    """Cache key of a set's predictions: the embedding entry's key plus a digest of the declaration
    (the parsed outputs depend on it: logits vs probabilities, which value means occluded)."""
    import hashlib

    d = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return (embedding_key.fingerprint, embedding_key.protocol, f"{embedding_key.variant}-occl-{d}")


def put_predictions(cache, key, pred: SetPredictions) -> None:
    for name, arr in pred.to_arrays().items():
        cache.put((key[0], key[1], f"{key[2]}-{name}"), arr, {"output": name})
    cache.put((key[0], key[1], f"{key[2]}-index"), np.zeros(0, np.float32),
              {"outputs": sorted(pred.to_arrays())})


def get_predictions(cache, key) -> SetPredictions | None:
    idx = cache.get((key[0], key[1], f"{key[2]}-index"))
    if idx is None:
        return None
    arrays = {}
    for name in idx[1].get("outputs", []):
        hit = cache.get((key[0], key[1], f"{key[2]}-{name}"))
        if hit is None:
            return None
        arrays[name] = hit[0]
    return SetPredictions(arrays.get("mask"), arrays.get("pattern"))


# ----------------------------------------------------------------------------------- truth


@dataclass
class SetTruth:
    mask: np.ndarray  # (N, h, w) bool, in the model's output grid
    pattern: np.ndarray  # (N,) int64 FROM label in the crop frame (-1: unknown)
    known: np.ndarray  # (N,) bool: truth available (image aligned, mask readable)
    reasons: list[str]


def set_truth(ms: np.ndarray, mask_sources: list, crop_hw, grid_hw, k: int | None, tau: float = DEFAULT_TAU,
              threads: int | None = None) -> SetTruth:
    """Truth of one image set. ``ms[i]``: the image's 2x3 alignment (NaN: none); ``mask_sources[i]``:
    the image-frame mask PNG path, ``"clean"`` for a clean image, or None (unknown). See ``sets_truth``."""
    return sets_truth(ms, [mask_sources], crop_hw, grid_hw, k, tau, threads)[0]


def sets_truth(ms: np.ndarray, sources: list[list], crop_hw, grid_hw, k: int | None, tau: float = DEFAULT_TAU,
               threads: int | None = None) -> list[SetTruth]:
    """Truth of several image sets over the same images: ``sources[j][i]`` is image i's mask in set j
    (as ``set_truth``'s ``mask_sources``), all aligned by ``ms[i]``. Equal, set by set, to computing each
    set alone.

    Per image: decode its masks, then one warp for up to 8 of them, exact per-pixel sample counts and
    FROM's cell counts (``truth_cells_multi``); the pattern labels of each set then come from one
    vectorised match over all patterns. Images are done in ``threads`` threads, one contiguous span each
    (at most one per 64 masks; OpenCV's own thread pool is held at one thread meanwhile); results do not
    depend on it. Default: one thread: the work per image is many short steps that hold the GIL, and
    on 2 cores 2 threads took as much wall time as one and ~45 % more CPU (1,341 masks, ~0.28 s)."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    n_sets = len(sources)
    n = len(sources[0]) if n_sets else 0
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    mask = [np.zeros((n, gh, gw), bool) for _ in range(n_sets)]
    cells = [np.zeros((n, k, k), np.int64) for _ in range(n_sets)] if k is not None else None
    known = [np.zeros(n, bool) for _ in range(n_sets)]
    reasons = [[""] * n for _ in range(n_sets)]

    aligned = np.isfinite(np.asarray(ms, np.float64).reshape(n, -1)).all(1) if n else np.zeros(0, bool)

    def put(j: int, i: int, tc) -> None:
        mask[j][i], c = tc
        if cells is not None:
            cells[j][i] = c
        known[j][i] = True

    def one(i: int) -> None:
        todo, masks = [], []
        for j in range(n_sets):
            src = sources[j][i]
            if src is None or not aligned[i]:
                reasons[j][i] = "no occlusion label or no alignment"
            elif src == "clean":
                known[j][i] = True
            else:
                try:
                    masks.append(_read_mask(src))
                    todo.append(j)
                except Exception as e:  # noqa: BLE001 - an unreadable mask is a row without truth, counted
                    reasons[j][i] = f"{type(e).__name__}: {e}"
        if not todo:
            return
        try:
            for j, tc in zip(todo, truth_cells_multi(masks, ms[i], crop_hw, (gh, gw), k, tau)):
                put(j, i, tc)
        except Exception:  # noqa: BLE001 - find which mask it was, one by one
            for j, mk in zip(todo, masks):
                try:
                    put(j, i, truth_cells(mk, ms[i], crop_hw, (gh, gw), k, tau))
                except Exception as e:  # noqa: BLE001
                    reasons[j][i] = f"{type(e).__name__}: {e}"

    def span(lo_hi: tuple[int, int]) -> None:
        for i in range(*lo_hi):
            one(i)

    n_masks = sum(1 for srcs in sources for src in srcs if src is not None and src != "clean")
    threads = max(1, min(threads or 1, n_masks // 64))
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        if threads == 1:
            span((0, n))
        else:  # one contiguous span per thread (a future per image cost more CPU than it saved)
            edges = np.linspace(0, n, threads + 1).astype(int)
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(span, zip(edges[:-1], edges[1:])))
    finally:
        cv2.setNumThreads(cv_threads)
    out = []
    for j in range(n_sets):
        pattern = np.full(n, -1, np.int64)
        if cells is not None and known[j].any():
            pattern[known[j]] = labels_from_cell_counts(cells[j][known[j]], k, crop_hw)
        out.append(SetTruth(mask[j], pattern, known[j], reasons[j]))
    return out


def _read_mask(path) -> np.ndarray:
    """A synth mask PNG (uint8, 255 = occluded) as a 2-D array; a symbolic link is refused (its folders
    were checked by ``MaskPaths``)."""
    import cv2

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    m = _plain_grey_png(data)
    if m is None:
        m = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise ValueError(f"{path}: not a decodable mask image")
    return m


def _plain_grey_png(data: bytes) -> np.ndarray | None:
    """The pixels of a PNG as synth writes masks (8-bit grey, not interlaced, only IHDR, IDAT, IEND
    chunks, every row with filter 0) by zlib alone, ~25 % cheaper than ``cv2.imdecode``; the same array
    (PNG is lossless). CRCs and the zlib stream are checked; any other PNG gives None (cv2 decodes it)."""
    import zlib

    if len(data) < 57 or not data.startswith(_PNG_GREY8):
        return None
    w, h, depth, color, comp, filt, interlace = _IHDR.unpack_from(data, 16)
    if (depth, color, comp, filt, interlace) != (8, 0, 0, 0, 0) or not 0 < w * h <= 1 << 26:
        return None
    view, pos, idat = memoryview(data), 8, []
    while pos + 12 <= len(data):
        length, kind = _CHUNK.unpack_from(data, pos)
        end = pos + 12 + length
        if end > len(data) or zlib.crc32(view[pos + 4:end - 4]) != int.from_bytes(view[end - 4:end], "big"):
            return None
        if kind == b"IEND":
            break
        if kind == b"IDAT":
            idat.append(view[pos + 8:end - 4])
        elif pos != 8:  # IHDR first, then only IDAT
            return None
        pos = end
    else:
        return None
    stream, size = (idat[0] if len(idat) == 1 else b"".join(idat)), h * (w + 1)
    try:  # deflate expands at most ~1032x: a stream under 64 KiB inflates to under 66 MiB in one call
        if len(stream) <= 1 << 16:
            raw = zlib.decompress(stream, bufsize=size)
        else:
            d = zlib.decompressobj()
            raw = d.decompress(stream, size + 1)
            if not d.eof or d.unused_data:
                return None
    except zlib.error:  # also a truncated stream
        return None
    if len(raw) != size or end != len(data) or raw[::w + 1].count(0) != h:
        return None  # another size, data after IEND, or a filtered row: cv2's
    return np.frombuffer(raw, np.uint8).reshape(h, w + 1)[:, 1:].copy()


_PNG_GREY8 = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"
_IHDR = struct.Struct(">IIBBBBB")
_CHUNK = struct.Struct(">I4s")


class MaskPaths:
    """Mask paths of one synth output, checked like ``paths.resolve_under`` but at a cost per folder,
    not per file: the root is resolved once, each relative path is checked lexically (no absolute path,
    '..' or '~'), and each folder below the root once (a symbolic link is refused: it could lead out).
    The file itself is opened without following links (``_read_mask``). ``realpath`` per file cost
    ~20 ``lstat`` calls each, most of the occlusion-scoring time on a loaded machine."""

    def __init__(self, root):
        self.root = os.path.realpath(root)
        self._dirs: set[str] = set()
        self._folders: dict[str, str] = {}  # checked folder part of a plain relative path -> its path

    def __call__(self, rel: str) -> str:
        rel = str(rel)
        head, _, name = rel.rpartition("/")
        folder = self._folders.get(head) if head else None
        if folder is not None and name not in ("", ".", ".."):  # a folder already checked, a plain name
            return os.path.join(folder, name)
        parts = rel.split("/")
        plain = not (rel.startswith(("/", "~")) or "" in parts or "." in parts or ".." in parts)
        if not plain:
            p = PurePosixPath(rel)  # refuse, or normalise an unusual spelling ("a//b", "./a")
            if not p.parts or p.is_absolute() or ".." in p.parts or rel.startswith("~"):
                raise UnsafePathError(f"path {rel!r} escapes its root {self.root}")
            parts = list(p.parts)  # else: equal to PurePosixPath(rel).parts, without its cost
        cur = self.root
        for part in parts[:-1]:
            cur = os.path.join(cur, part)
            if cur not in self._dirs:
                if os.path.islink(cur):
                    raise UnsafePathError(f"path {rel!r} under {self.root}: {part!r} is a symbolic link")
                self._dirs.add(cur)
        if plain and head:
            self._folders[head] = cur
        return os.path.join(cur, parts[-1])


def truth_predictions(truth: SetTruth, spec, n_classes: int | None) -> SetPredictions:
    """The oracle's prediction: the truth itself (for outputs declared with source "truth")."""
    mask = truth.mask.astype(np.float32) if spec.mask is not None and spec.mask.source == "truth" else None
    pattern = None
    if spec.pattern is not None and spec.pattern.source == "truth":
        pattern = np.zeros((len(truth.pattern), n_classes), np.float32)
        ok = truth.pattern >= 0
        pattern[np.flatnonzero(ok), truth.pattern[ok]] = 1.0
    if mask is not None:
        mask[~truth.known] = np.nan
    if pattern is not None:
        pattern[~truth.known] = np.nan
    return SetPredictions(mask, pattern)


def cached_truth(cache, set_id: str, keys: list[str], ms: np.ndarray, srcs: list, crop_hw, grid_hw, k, tau) -> SetTruth:
    """``set_truth`` through the embedding cache (entry "truth-<digest>" under the pseudo-fingerprint
    "occlusion-truth"); None cache: computed."""
    return cached_truths(cache, [set_id], keys, ms, [srcs], crop_hw, grid_hw, k, tau)[0]


def cached_truths(cache, set_ids: list[str], keys: list[str], ms: np.ndarray, sources: list[list], crop_hw, grid_hw,
                  k, tau) -> list[SetTruth]:
    """``cached_truth`` of several sets over the same keys and alignments (``sources[j]``: set j's mask
    sources): the sets not in the cache are computed together (``sets_truth``), each cached alone."""
    import hashlib

    out: list = [None] * len(set_ids)
    ckeys: list = [None] * len(set_ids)
    if cache is not None:
        digest = hashlib.sha256(np.ascontiguousarray(ms, np.float64).tobytes()).hexdigest()
        gh, gw = int(grid_hw[0]), int(grid_hw[1])
        for j, (set_id, srcs) in enumerate(zip(set_ids, sources)):
            payload = json.dumps([set_id, keys, srcs, digest, list(crop_hw), [gh, gw], k, tau, TRUTH_VERSION])
            ckeys[j] = ("occlusion-truth", "sets", f"truth-{hashlib.sha256(payload.encode()).hexdigest()[:20]}")
            hit = cache.get(ckeys[j])
            if hit is not None:
                arr, meta = hit
                mask = np.unpackbits(arr, axis=1, count=gh * gw).astype(bool).reshape(len(keys), gh, gw)
                out[j] = SetTruth(mask, np.asarray(meta["pattern"], np.int64), np.asarray(meta["known"], bool),
                                  meta["reasons"])
    todo = [j for j in range(len(set_ids)) if out[j] is None]
    if todo:
        for j, t in zip(todo, sets_truth(ms, [sources[j] for j in todo], crop_hw, grid_hw, k, tau)):
            out[j] = t
            if cache is not None:
                cache.put(ckeys[j], np.packbits(t.mask.reshape(len(keys), -1), axis=1),
                          {"pattern": t.pattern.tolist(), "known": t.known.tolist(), "reasons": t.reasons})
    return out


TRUTH_VERSION = 1  # bump when the ground-truth computation changes


# ----------------------------------------------------------------------------------- scoring


@dataclass
class SetScore:
    block: dict  # the results block
    iou: np.ndarray  # (N,) per-image IoU of the occluded class (NaN: not scored / undefined)
    pattern_correct: np.ndarray  # (N,) 1/0 top-1 correct (NaN: not scored)


def score_set(pred: SetPredictions, truth: SetTruth, ok: np.ndarray, rows: list[dict] | None, spec,
              tau: float = DEFAULT_TAU, clean: bool = False) -> SetScore:
    """Metrics of one image set. ``ok``: images with outputs; ``rows``: their manifest rows (occluder,
    scale, area_frac) for the breakdowns (None for the clean set)."""
    n = len(ok)
    use = np.asarray(ok, bool) & truth.known
    iou = np.full(n, np.nan)
    correct = np.full(n, np.nan)
    block: dict = {"frame": "model crop", "tau": tau, "n_images": int(use.sum()),
                   "n_without_truth": int((np.asarray(ok, bool) & ~truth.known).sum()), "notes": []}
    if pred.mask is not None:
        pm, tm = pred.mask[use], truth.mask[use]
        if pm.shape[1:] != tm.shape[1:]:
            raise ValueError(f"internal: prediction grid {pm.shape[1:]} vs truth grid {tm.shape[1:]}")
        block["grid"] = list(pm.shape[1:])
        nan = M.nan_images(pm)
        if clean:
            block["false_occlusion"] = M.false_occlusion_rate(pm)
        block["mask"] = _round(M.mask_metrics(pm, tm))
        block["notes"] += block["mask"].pop("notes")
        vals = np.full(int(use.sum()), np.nan)
        vals[~nan] = M.per_image_iou(pm[~nan] >= 0.5, tm[~nan])
        iou[use] = vals
    if pred.pattern is not None and spec.pattern is not None:
        ps, tl = pred.pattern[use], truth.pattern[use]
        finite = np.isfinite(ps).all(1)
        top = M.pattern_topk(ps, tl)
        predicted = np.argmax(np.where(np.isfinite(ps), ps, -np.inf), axis=1)
        k = spec.pattern.k
        block["pattern"] = {
            "k": k, **{kk: _r(v) for kk, v in top.items()},
            "cell_agreement": _r(float(M.cell_agreement(predicted[finite], tl[finite], k).mean())) if finite.any() else None,
            "clean_share": _r(float((tl[finite] == 0).mean())) if finite.any() else None,
            "n_images": int(finite.sum()), "n_nan": int((~finite).sum()),
            "most_confused": M.most_confused(tl[finite], predicted[finite], ps.shape[1], 10)}
        if (~finite).any():
            block["notes"].append(f"{int((~finite).sum())} image(s) with NaN pattern scores are left out")
        c = np.full(int(use.sum()), np.nan)
        c[finite] = (predicted[finite] == tl[finite]).astype(float)
        correct[use] = c
    if rows is not None:
        block.update(_breakdowns(rows, use, iou, correct))
    return SetScore(block, iou, correct)


def _breakdowns(rows: list[dict], use: np.ndarray, iou: np.ndarray, correct: np.ndarray) -> dict:
    """Per occluder, per scale and per occluded-area bin: mean per-image IoU, pattern top-1, n."""
    occluder = np.array([str(r.get("occluder", "")) if r else "" for r in rows], dtype=object)
    scale = np.array([float(r.get("scale", np.nan)) if r else np.nan for r in rows])
    area = np.array([float(r.get("area_frac", np.nan)) if r else np.nan for r in rows])

    def summary(sel):
        s = sel & use
        vi, vc = iou[s], correct[s]
        return {"n": int(s.sum()),
                "mask_iou_mean": _r(float(np.nanmean(vi))) if np.isfinite(vi).any() else None,
                "pattern_top1": _r(float(np.nanmean(vc))) if np.isfinite(vc).any() else None}

    out = {"by_occluder": {o: summary(occluder == o) for o in sorted(set(occluder[use])) if o},
           "by_scale": {f"{s:g}": summary(scale == s) for s in sorted(set(scale[use & np.isfinite(scale)]))},
           "by_area": []}
    for lo, hi in zip(AREA_BINS[:-1], AREA_BINS[1:]):
        sel = (area >= lo) & (area < hi)
        if (sel & use).any():
            out["by_area"].append({"area_lo": lo, "area_hi": min(hi, 1.0), **summary(sel)})
    return out


def link_to_recognition(correct_pairs: np.ndarray, quality_pairs: np.ndarray, pattern_ok_pairs: np.ndarray) -> dict:
    """Verification accuracy by estimate quality: mask-IoU tertiles, and pattern correct vs wrong."""
    out: dict = {"mask_iou_tertiles": M.accuracy_by_quality(correct_pairs, quality_pairs, 3)}
    c = np.asarray(correct_pairs, float)
    p = np.asarray(pattern_ok_pairs, float)
    both = np.isfinite(c) & np.isfinite(p)
    out["by_pattern"] = {name: {"n_pairs": int((both & (p == v)).sum()),
                                "accuracy": _r(float(c[both & (p == v)].mean())) if (both & (p == v)).any() else None}
                         for name, v in (("correct", 1.0), ("wrong", 0.0))}
    return out


def pair_quality(iou1: np.ndarray | None, iou2: np.ndarray, pat1: np.ndarray | None, pat2: np.ndarray):
    """Per pair: N-O -> the occluded (second) image's IoU / pattern correctness; O-O -> the mean IoU of
    the two images and "both patterns correct"."""
    if iou1 is None:
        return iou2, pat2
    return (iou1 + iou2) / 2.0, np.where(np.isfinite(pat1) & np.isfinite(pat2), pat1 * pat2, np.nan)


def _r(v):
    return None if v is None else round(float(v), 6)


def _round(d: dict) -> dict:
    return {k: (_r(v) if isinstance(v, float) else v) for k, v in d.items()}


# ----------------------------------------------------------------------------------- summary line


def summary_text(block: dict | None) -> str:
    """'mask IoU 0.512, pattern top-1 0.301' for the console; '' without estimates."""
    if not block:
        return ""
    parts = []
    m = block.get("mask")
    if m and not block.get("false_occlusion"):  # on clean images the occluded-class IoU means nothing
        parts.append(f"mask IoU {m['iou_occluded']:.3f}" if m.get("iou_occluded") is not None else "mask IoU n/a")
    f = block.get("false_occlusion")
    if f and f.get("pixel_rate") is not None:
        parts.append(f"false-occlusion {100 * f['pixel_rate']:.1f}% px")
    p = block.get("pattern")
    if p:
        parts.append(f"pattern top-1 {p['top1']:.3f}" if p.get("top1") is not None else "pattern top-1 n/a")
    return ", ".join(parts)


# ----------------------------------------------------------------------------------- engine glue


@dataclass
class OcclusionRun:
    """Scores of every image set of a run: set name -> SetScore, plus the keys of each set."""

    spec: object  # the recognizer's OutputSpec
    sets: dict  # set name -> SetScore
    keys: dict  # set name -> list of keys (row order of the SetScore arrays)
    sheet: dict | None = None  # contact-sheet material of the headline set
    tau: float = DEFAULT_TAU


def score_sets(recognizer, emb_sets: dict, occluded: dict, set_specs: list, ms: np.ndarray, keys: list[str],
               pkeys: list[str], k: int | None, tau: float = DEFAULT_TAU, headline_set: str | None = None,
               cache=None, sheet: bool = True) -> OcclusionRun:
    """Score the occlusion estimates of every embedded image set.

    With ``cache`` (the EmbeddingCache) the truth of a set is kept per (set, alignments, grid, K, tau),
    so other models with the same crop reuse it. ``sheet``: gather the contact-sheet crops (only
    drawn with plots).

    ``emb_sets``: name -> EmbSet (with ``.occl`` SetPredictions); ``occluded``: (run, synth variant) ->
    OccludedSet; ``set_specs``: one VariantSpec per occluded set; ``ms``: alignments of ``keys``."""
    spec = output_spec(recognizer)
    pp = recognizer.preprocess
    crop_hw = tuple(pp.input_size)
    n_classes = spec.pattern.n_classes if spec.pattern is not None else None
    k_eff = spec.pattern.k if spec.pattern is not None else k
    key_index = {kk: i for i, kk in enumerate(keys)}
    run = OcclusionRun(spec, {}, {}, None, tau)
    todo = [("clean", keys, ms, ["clean"] * len(keys), None, "clean")]
    p_idx = np.array([key_index[kk] for kk in pkeys], np.int64)
    for v in set_specs:
        name = f"{v.run}/{v.synth_variant}"
        occ = occluded[(v.run, v.synth_variant)]
        srcs, rows = [], []
        under = MaskPaths(occ.out)
        for kk in pkeys:
            r = occ.rows.get(kk)
            rows.append(r)
            if r is None or r["status"] not in ("ok", "clean"):
                srcs.append(None)
            elif r["status"] == "clean" or not r.get("mask"):
                srcs.append("clean")
            else:
                srcs.append(under(r["mask"]))
        todo.append((name, pkeys, ms[p_idx], srcs, rows, f"{occ.fingerprint}/{name}"))
    default_grid = tuple(getattr(recognizer, "grid", (crop_hw[0] // 8, crop_hw[1] // 8)))
    preds = {name: getattr(emb_sets[name], "occl", None) or SetPredictions(None, None) for name, *_ in todo}
    grids = {name: tuple(p.mask.shape[1:]) if p.mask is not None else default_grid for name, p in preds.items()}
    # the occluded sets share their images and alignments: their truths are computed together, per grid
    truths = {"clean": cached_truth(cache, "clean", keys, ms, todo[0][3], crop_hw, grids["clean"], k_eff, tau)}
    for grid in dict.fromkeys(grids[t[0]] for t in todo[1:]):
        group = [t for t in todo[1:] if grids[t[0]] == grid]
        for t, truth in zip(group, cached_truths(cache, [t[5] for t in group], pkeys, ms[p_idx], [t[3] for t in group],
                                                 crop_hw, grid, k_eff, tau)):
            truths[t[0]] = truth
    for name, set_keys, set_ms, srcs, rows, set_id in todo:
        es = emb_sets[name]
        pred, truth = preds[name], truths[name]
        if (spec.mask is not None and spec.mask.source == "truth") or (spec.pattern is not None and spec.pattern.source == "truth"):
            tp = truth_predictions(truth, spec, n_classes)
            pred = SetPredictions(tp.mask if tp.mask is not None else pred.mask,
                                  tp.pattern if tp.pattern is not None else pred.pattern)
        ok = np.array([es.ok[es.index[kk]] for kk in set_keys], bool)
        run.sets[name] = score_set(pred, truth, ok, rows, spec, tau, clean=(name == "clean"))
        run.sets[name].block["notes"] += sorted(getattr(getattr(recognizer, "_note", None), "seen", ()))
        run.keys[name] = set_keys
        if sheet and name == headline_set and pred.mask is not None:
            run.sheet = _sheet_material(name, set_keys, set_ms, rows, occluded, set_specs, pred, truth,
                                        run.sets[name].iou, ok, crop_hw)
    return run


def _sheet_material(name, set_keys, set_ms, rows, occluded, set_specs, pred, truth, iou, ok, crop_hw, n: int = 6):
    """The ``n`` best and ``n`` worst scored images of a set (by per-image IoU): crops, masks, captions."""
    from ..face.geometry import warp
    from ..io.images import decode_rgb
    from ..paths import resolve_under

    v = next(v for v in set_specs if f"{v.run}/{v.synth_variant}" == name)
    occ = occluded[(v.run, v.synth_variant)]
    scored = np.flatnonzero(np.isfinite(iou) & ok)
    if scored.size == 0:
        return None
    order = scored[np.argsort(-iou[scored], kind="stable")]
    pick = list(order[:n]) + [i for i in order[::-1][:n] if i not in set(order[:n])]
    crops, tm, pm, labels = [], [], [], []
    for i in pick:
        r = rows[i]
        try:
            img = decode_rgb(resolve_under(os.path.realpath(occ.out), r["image"]).read_bytes())
        except Exception:  # noqa: BLE001 - a sheet without this image
            continue
        crops.append(warp(img, set_ms[i], crop_hw))
        tm.append(truth.mask[i])
        pm.append(pred.mask[i])
        labels.append(f"IoU {iou[i]:.2f} {r.get('occluder', '')} {set_keys[i].split('/')[-1]}")
    if not crops:
        return None
    return {"set": name, "crops": np.stack(crops), "true": np.stack(tm), "pred": np.stack(pm), "labels": labels}


def attach(variant_results: dict, specs: list, run: OcclusionRun, task, score_tables: dict, curves: dict) -> None:
    """Add ``occlusion.estimate`` (and ``occlusion.recognition_by_estimate`` for 1:1 occluded variants) to
    every variant; put plot material into ``curves["occlusion"]``."""
    confused_done = False
    plotted: set[str] = set()
    for v in specs:
        res = variant_results.get(v.name)
        if res is None:
            continue
        name = "clean" if not v.occluded else f"{v.run}/{v.synth_variant}"
        s = run.sets.get(name)
        if s is None:
            continue
        block = {"estimate": {"set": name, **s.block}}
        if v.occluded and task.kind == "verification" and v.name in score_tables:
            block["recognition_by_estimate"] = _recognition_link(res, score_tables[v.name], run, name, v.mode)
        res.add_block("occlusion", block)
        occ_curves = curves.setdefault("occlusion", {"iou_area": {}, "confused": None, "sheet": run.sheet,
                                                     "k": run.spec.pattern.k if run.spec.pattern else None})
        if (v.occluded and s.block.get("by_area") and s.block.get("mask") and v.group in ("headline", "placement")
                and name not in plotted):  # N-O and O-O share an image set: one line per set
            occ_curves["iou_area"][f"{v.name} images"] = s.block["by_area"]
            plotted.add(name)
        if v.occluded and v.group == "headline" and not confused_done and s.block.get("pattern"):
            occ_curves["confused"] = (v.name, s.block["pattern"]["most_confused"])
            confused_done = True


def _recognition_link(res, table, run: OcclusionRun, set_name_: str, mode: str) -> dict:
    """Verification accuracy split by the estimate quality of the pair's occluded image(s)."""
    thr = (res.thresholds or {}).get("per_fold") or {}
    if not thr:
        return {"note": "no k-fold thresholds: accuracy by estimate quality not measurable"}
    s = run.sets[set_name_]
    index = {kk: i for i, kk in enumerate(run.keys[set_name_])}
    scores = table["score"].to_numpy(np.float64)
    same = table["same"].to_numpy(bool)
    t = np.array([thr.get(str(f), np.nan) for f in table["fold"].to_numpy()], np.float64)
    correct = np.where(np.isfinite(scores) & np.isfinite(t), ((scores >= t) == same).astype(float), np.nan)
    i2 = np.array([index.get(kk, -1) for kk in table["key2"]], np.int64)
    pick = (lambda arr, ii: np.where(ii >= 0, arr[np.maximum(ii, 0)], np.nan))
    iou2, pat2 = pick(s.iou, i2), pick(s.pattern_correct, i2)
    if mode == "O-O":
        i1 = np.array([index.get(kk, -1) for kk in table["key1"]], np.int64)
        q, p = pair_quality(pick(s.iou, i1), iou2, pick(s.pattern_correct, i1), pat2)
    else:
        q, p = pair_quality(None, iou2, None, pat2)
    return link_to_recognition(correct, q, p)


# ----------------------------------------------------------------------------------- leaderboard

LEADERBOARD_COLUMNS = ("mask_iou_pct", "mask_miou_pct", "mask_ap_pct", "false_occlusion_pct", "pattern_top1_pct",
                       "pattern_top5_pct", "pattern_cell_agreement_pct")


def leaderboard_values(variant) -> dict:
    """The occlusion-estimate columns of one leaderboard row (percent; None = not measured, e.g. a
    model without mask / pattern outputs). ``variant``: a VariantResult."""
    est = ((getattr(variant, "blocks", None) or {}).get("occlusion") or {}).get("estimate") or {}
    m, p, f = est.get("mask") or {}, est.get("pattern") or {}, est.get("false_occlusion") or {}
    pct = (lambda x: None if x is None else round(100.0 * float(x), 4))
    return {"mask_iou_pct": None if f else pct(m.get("iou_occluded")), "mask_miou_pct": pct(m.get("miou")),
            "mask_ap_pct": None if f else pct(m.get("ap")), "false_occlusion_pct": pct(f.get("pixel_rate")),
            "pattern_top1_pct": pct(p.get("top1")), "pattern_top5_pct": pct(p.get("top5")),
            "pattern_cell_agreement_pct": pct(p.get("cell_agreement"))}
