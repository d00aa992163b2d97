"""1:N identification: streamed top-k search, rank of the mate / CMC, open-set TPIR@FPIR.

Similarity is the dot product of float32 embeddings (cosine similarity for L2-normalised inputs).
Orderings are total and deterministic: higher score first, and among equal scores the lower gallery
index first (what a stable descending argsort of the dense similarity row gives).
Ranks are 1-based and count ties *against* the probe: a mate tied with a non-mate is ranked after it,
rank = 1 + #{non-mated gallery entries with score >= best mate score}.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, NamedTuple

import math

import numpy as np
import torch

from ..errors import ConfigError
from .verification import strict_operating_point

__all__ = [
    "TopK",
    "topk_search",
    "rank_of_mate",
    "mate_ranks",
    "MateRanks",
    "cmc",
    "cmc_from_ranks",
    "CMCResult",
    "OpenSetPoint",
    "tpir_at_fpir",
    "tpir_at_fpir_from_scores",
]

# Default blocks: the score block is probe_block x gallery_block float32 (128 MiB CPU, 1 GiB CUDA).
_DEFAULT_BLOCKS = {"cpu": (2048, 16384), "cuda": (4096, 65536)}
_AMBIGUOUS_ROW_CHUNK = 256  # rows re-sorted at once when a top-k boundary falls inside a tie
_CHUNK = 64  # columns per chunk whose maxima are ranked before the exact top-k (see _block_topk)


class TopK(NamedTuple):
    """scores: (P, k) float32, descending per row; indices: (P, k) int64 gallery rows.
    When k > gallery size the tail is padded with score -inf and index -1."""

    scores: np.ndarray
    indices: np.ndarray


# --------------------------------------------------------------------------- streamed top-k search


def _resolve_device(device) -> torch.device:
    if isinstance(device, torch.device):
        dev = device
    elif str(device).lower() == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(str(device))
        except RuntimeError as e:
            raise ConfigError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda[:N]'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was requested but CUDA is not available; use 'cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {device!r}: use 'auto', 'cpu' or 'cuda[:N]'")
    return dev


def _shape(x, name: str) -> tuple[int, int]:
    shape = tuple(x.shape)
    if len(shape) != 2:
        raise ConfigError(f"{name} must be a 2-D (N, D) embedding array, got shape {shape}")
    return shape


def _rows(x, a: int, b: int, dev: torch.device) -> torch.Tensor:
    """Rows a:b of a numpy array / memmap / torch tensor as a float32 contiguous tensor on dev."""
    if isinstance(x, torch.Tensor):
        return x[a:b].to(device=dev, dtype=torch.float32).contiguous()
    if (type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable
            and dev.type == "cpu"):
        return torch.from_numpy(x[a:b])  # in memory already: a view, read only here, never written
    # copy: reads a memmap block into memory once and never aliases the caller's (maybe read-only) array
    blk = torch.from_numpy(np.array(x[a:b], dtype=np.float32, order="C", copy=True))
    return blk if dev.type == "cpu" else blk.to(dev)


def check_finite_rows(x, name: str, offset: int = 0) -> None:
    """Raise ConfigError naming the first row of ``x`` (a torch tensor or a numpy array, rows
    ``offset..``) that holds a NaN or inf. The one finiteness check of every search backend."""
    if isinstance(x, torch.Tensor):
        ok = torch.isfinite(x).all(dim=1)
        if bool(ok.all()):
            return
        row = int(torch.nonzero(~ok)[0, 0])
    else:
        ok = np.isfinite(x).all(axis=1)
        if ok.all():
            return
        row = int(np.argmin(ok))
    raise ConfigError(f"{name} row {offset + row} has a NaN or inf value; re-embed or drop it")


def _order_ties_by_index(v: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder each row of a small (values, indices) selection to (value desc, index asc)."""
    o = torch.argsort(i, dim=1)
    v, i = v.gather(1, o), i.gather(1, o)
    o = torch.sort(v, dim=1, descending=True, stable=True).indices
    return v.gather(1, o), i.gather(1, o)


def _block_topk_rows(sim: torch.Tensor, kk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-kk per row of sim under (value desc, column asc), by torch.topk.

    torch.topk breaks ties arbitrarily, so it is asked for kk+1 values: where the (kk+1)-th value is
    strictly below the kk-th, the selected set is unique and only its order needs fixing; rows where
    they are equal (a tie across the boundary) are redone with a stable sort of the whole row.
    """
    n = sim.shape[1]
    if kk >= n:
        v, i = torch.sort(sim, dim=1, descending=True, stable=True)
        return v, i
    v, i = torch.topk(sim, kk + 1, dim=1, largest=True, sorted=True)
    ambiguous = torch.nonzero(v[:, kk] == v[:, kk - 1]).squeeze(1)
    v, i = _order_ties_by_index(v[:, :kk], i[:, :kk])
    for c in range(0, ambiguous.numel(), _AMBIGUOUS_ROW_CHUNK):
        rows = ambiguous[c:c + _AMBIGUOUS_ROW_CHUNK]
        sv, si = torch.sort(sim[rows], dim=1, descending=True, stable=True)
        v[rows], i[rows] = sv[:, :kk], si[:, :kk]
    return v, i


class _NonFiniteScores(Exception):
    """A score block holds NaN/inf: a non-finite input row (reported by check_finite_rows) or an overflow."""


def _block_topk(sim: torch.Tensor, kk: int, floor: torch.Tensor | None = None,
                chunk: int = _CHUNK) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact top-kk per row of sim under (value desc, column asc), reading sim about once.

    Returns ``(rows, values, columns)`` for the rows that may change a running top-k whose k-th
    score is ``floor`` (one value per row; ``None``: every row). Only values > floor can enter it:
    a value equal to the floor ties with a running entry of a lower gallery index and loses.

    The row is cut into chunks of ``chunk`` columns and only the chunk maxima are ranked (one
    streaming amax over the block, a fraction of torch.topk's cost). Rows whose chunk maxima are all
    <= floor are skipped. If the kk-th largest chunk maximum c_kk is strictly above the (kk+1)-th,
    the kk chosen chunks hold >= kk values >= c_kk, above every value of the other chunks, so the
    row's top-kk lies inside them and is taken from those kk*chunk values, gathered in column order
    (ties keep column order). Rows with a tie between chunk maxima at that boundary fall back to
    :func:`_block_topk_rows` on the whole row.
    """
    p, n = sim.shape
    m = -(-n // chunk)
    if kk >= n or m <= 2 * (kk + 1):
        v, i = _block_topk_rows(sim, kk)
        return torch.arange(p, device=sim.device), v, i
    full = n - n % chunk
    cmax = sim[:, :full].view(p, full // chunk, chunk).amax(dim=2)
    if full < n:
        cmax = torch.cat([cmax, sim[:, full:].amax(dim=1, keepdim=True)], dim=1)
    rowmax = cmax.amax(dim=1)
    if not math.isfinite(float(rowmax.sum())) and not bool(torch.isfinite(rowmax).all()):
        raise _NonFiniteScores  # amax propagates NaN; the sum of finite maxima may overflow, hence recheck
    rows = None
    if floor is not None:
        active = rowmax > floor
        n_active = int(active.sum())
        if n_active == 0:
            return sim.new_empty((0,), dtype=torch.int64), sim.new_empty((0, kk)), sim.new_empty((0, kk), dtype=torch.int64)
        if n_active < p:
            rows = torch.nonzero(active).squeeze(1)
            cmax = cmax[rows]
    if rows is None:
        rows = torch.arange(p, device=sim.device)
    r = rows.numel()
    cv, ci = torch.topk(cmax, kk + 1, dim=1, largest=True, sorted=True)
    ambiguous = torch.nonzero(cv[:, kk] == cv[:, kk - 1]).squeeze(1)
    chosen = torch.sort(ci[:, :kk], dim=1).values  # column order, so ties keep column order
    if full < n:  # pad the short last chunk with -inf columns, which can never be chosen
        sim = torch.nn.functional.pad(sim, (0, m * chunk - n), value=-torch.inf)
    flat = (rows.unsqueeze(1) * m + chosen).view(-1)
    vals = sim.view(p * m, chunk).index_select(0, flat).view(r, kk * chunk)
    v, pos = _block_topk_rows(vals, kk)
    i = chosen.gather(1, pos // chunk) * chunk + pos % chunk
    for c in range(0, ambiguous.numel(), _AMBIGUOUS_ROW_CHUNK):
        sel = ambiguous[c:c + _AMBIGUOUS_ROW_CHUNK]
        v[sel], i[sel] = _block_topk_rows(sim[rows[sel], :n], kk)
    return rows, v, i


def topk_search(probes, gallery, k: int, probe_block: int | None = None, gallery_block: int | None = None,
                device="auto") -> TopK:
    """Top-k gallery matches of every probe by dot product, streamed in blocks.

    For each gallery block G_b (rows g0:g1, loaded lazily, so a numpy memmap is read once) and each
    probe block P_a: S = P_a @ G_b^T (torch matmul on ``device``), the block's exact top-k is merged
    with the running top-k of P_a (stable sort of the concatenated 2k candidates). Peak extra memory
    is about one probe_block x gallery_block float32 score block (plus the probes, resident on the
    device, one gallery block and torch.topk's temporaries); a dense P x G matrix is never formed.

    Order: score descending, ties -> lower gallery index first (a stable argsort of -S_dense).
    Scores are the float32 GEMM results; BLAS may round a dot product differently for other
    block shapes, so near-ties can swap between block sizes (exact ties never do).

    probes: (P, D), gallery: (G, D); numpy arrays, memmaps or torch tensors (any float dtype, used
    as float32); must be finite (checked per block). k >= 1; if k > G the result is padded with
    score -inf / index -1. device: "auto" (CUDA when available, else CPU), "cpu", "cuda[:N]".
    Blocks default to 2048 x 16384 on CPU, 4096 x 65536 on CUDA.

    >>> g = np.eye(4, dtype=np.float32)
    >>> r = topk_search(np.array([[0.6, 0.8, 0, 0]], np.float32), g, k=2)
    >>> r.indices.tolist(), r.scores.astype(float).round(2).tolist()
    ([[1, 0]], [[0.8, 0.6]])
    """
    n_p, d_p = _shape(probes, "probes")
    n_g, d_g = _shape(gallery, "gallery")
    if d_p != d_g:
        raise ConfigError(f"probes have dimension {d_p} but gallery has {d_g}; embed both with one model")
    if n_g == 0:
        raise ConfigError("the gallery is empty")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}")
    k = int(k)
    dev = _resolve_device(device)
    pb_default, gb_default = _DEFAULT_BLOCKS[dev.type]
    pb = int(probe_block or pb_default)
    gb = int(gallery_block or gb_default)
    if pb < 1 or gb < 1:
        raise ConfigError(f"block sizes must be >= 1, got probe_block={pb}, gallery_block={gb}")

    with torch.inference_mode():
        p_all = _rows(probes, 0, n_p, dev)
        check_finite_rows(p_all, "probes", 0)
        best_s = torch.full((n_p, k), -torch.inf, dtype=torch.float32, device=dev)
        best_i = torch.full((n_p, k), -1, dtype=torch.int64, device=dev)
        buf = torch.empty(min(pb, max(n_p, 1)) * min(gb, n_g), dtype=torch.float32, device=dev)
        for g0 in range(0, n_g, gb):
            g1 = min(g0 + gb, n_g)
            g_blk = _rows(gallery, g0, g1, dev)
            checked = False
            g_t = g_blk.T
            kk = min(k, g1 - g0)
            for p0 in range(0, n_p, pb):
                p1 = min(p0 + pb, n_p)
                sim = buf[: (p1 - p0) * (g1 - g0)].view(p1 - p0, g1 - g0)
                torch.mm(p_all[p0:p1], g_t, out=sim)
                if not checked and -(-(g1 - g0) // _CHUNK) <= 2 * (kk + 1):
                    check_finite_rows(g_blk, "gallery", g0)  # small block: no chunk maxima to check
                    checked = True
                try:
                    rows, v, i = _block_topk(sim, kk, floor=best_s[p0:p1, k - 1])
                except _NonFiniteScores:
                    # the chunk maxima saw a NaN/inf: name the bad gallery row, else it was an overflow
                    check_finite_rows(g_blk, "gallery", g0)
                    raise ConfigError(f"scores against gallery rows {g0}:{g1} overflow float32; "
                                      "L2-normalise the embeddings") from None
                if rows.numel() == 0:
                    continue
                # all rows: a slice (no index copies); else the changed rows only
                rows = slice(p0, p1) if rows.numel() == p1 - p0 else rows + p0
                # running entries all have lower gallery indices, so a stable sort keeps them first on ties
                cat_v = torch.cat([best_s[rows], v], dim=1)
                cat_i = torch.cat([best_i[rows], i + g0], dim=1)
                o = torch.sort(cat_v, dim=1, descending=True, stable=True).indices[:, :k]
                best_s[rows] = cat_v.gather(1, o)
                best_i[rows] = cat_i.gather(1, o)
        return TopK(best_s.cpu().numpy(), best_i.cpu().numpy())


# --------------------------------------------------------------------------- ranks and CMC


def _labels(x, name: str, n: int | None = None) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or (n is not None and a.size != n):
        want = f"({n},)" if n is not None else "1-D"
        raise ConfigError(f"{name} must have shape {want}, got {a.shape}")
    return a


def rank_of_mate(sim_matrix, probe_labels, gallery_labels) -> np.ndarray:
    """Dense rank of each probe's best mate (small problems: builds P x G masks).

    rank_p = 1 + #{g : label_g != label_p and sim[p, g] >= max_{g': label_g' == label_p} sim[p, g']}
    (ties against the probe). Returns float64 ranks; NaN for probes with no mate in the gallery.

    >>> rank_of_mate([[0.9, 0.5, 0.9], [0.1, 0.2, 0.3]], ["a", "b"], ["a", "b", "c"]).tolist()
    [2.0, 2.0]
    """
    sim = np.asarray(sim_matrix, dtype=np.float64)
    if sim.ndim != 2:
        raise ConfigError(f"sim_matrix must be 2-D (probes x gallery), got shape {sim.shape}")
    pl = _labels(probe_labels, "probe_labels", sim.shape[0])
    gl = _labels(gallery_labels, "gallery_labels", sim.shape[1])
    if not np.all(np.isfinite(sim)):
        raise ConfigError("sim_matrix must be finite")
    mated = gl[None, :] == pl[:, None]
    best = np.where(mated, sim, -np.inf).max(axis=1, initial=-np.inf)
    ranks = 1.0 + np.sum(~mated & (sim >= best[:, None]), axis=1)
    return np.where(mated.any(axis=1), ranks, np.nan)


class MateRanks(NamedTuple):
    """Per-probe outcome of a top-k search (see :func:`mate_ranks`)."""

    ranks: np.ndarray  # float64: rank (ties against), inf if not certified within top-k, NaN if no mate
    mate_scores: np.ndarray  # float64: best mate's score, NaN when the mate is not in the top-k
    has_mate: np.ndarray  # bool: the probe's label occurs in the gallery
    uncertain: np.ndarray  # bool: mate in the list but tied with the k-th score of a truncated list


def mate_ranks(topk_scores, topk_ids, probe_labels, gallery_labels) -> MateRanks:
    """Rank (ties against the probe) of each probe's best mate from top-k lists.

    With the list sorted by score and m = the best mate's score:
    rank = 1 + #{listed non-mates with score >= m}. This is exact when every gallery entry scoring
    >= m is listed: always if m > the k-th score, or if the list holds the whole gallery. When m
    equals the k-th score of a truncated list, unlisted non-mates may tie with it; the rank is then
    not certified and set to inf (a miss, against the probe) and flagged in ``uncertain``.
    Mate not in the list: rank = inf. Probe label absent from the gallery: rank = NaN.
    """
    s = np.asarray(topk_scores, dtype=np.float64)
    ids = np.asarray(topk_ids)
    if s.ndim != 2 or s.shape != ids.shape:
        raise ConfigError(f"topk_scores and topk_ids must be (P, k) arrays of one shape: {s.shape} vs {ids.shape}")
    n_p, k = s.shape
    pl = _labels(probe_labels, "probe_labels", n_p)
    gl = _labels(gallery_labels, "gallery_labels")
    if k == 0 or gl.size == 0:
        raise ConfigError(f"need top-k lists with k >= 1 over a non-empty gallery, got k={k}, {gl.size} gallery labels")
    if not np.issubdtype(ids.dtype, np.integer) or (ids.size and (ids.min() < -1 or ids.max() >= gl.size)):
        raise ConfigError(f"topk_ids must be integer gallery rows in [0, {gl.size}) or -1 padding")
    valid = ids >= 0
    mated = valid & (gl[np.where(valid, ids, 0)] == pl[:, None])
    in_list = mated.any(axis=1)
    first = np.argmax(mated, axis=1)
    mate_scores = np.where(in_list, s[np.arange(n_p), first], np.nan)
    with np.errstate(invalid="ignore"):
        ge = valid & ~mated & (s >= mate_scores[:, None])
    uncertain = in_list & (gl.size > k) & (mate_scores == s[:, -1])
    ranks = np.where(in_list & ~uncertain, 1.0 + ge.sum(axis=1), np.inf)
    has_mate = np.isin(pl, gl)
    ranks = np.where(has_mate, ranks, np.nan)
    return MateRanks(ranks, mate_scores, has_mate, uncertain)


def _max_certifiable_rank(k: int, n_gallery: int) -> int:
    return k if n_gallery <= k else k - 1


def cmc_from_ranks(ranks, max_rank: int) -> np.ndarray:
    """CMC curve: curve[r - 1] = #{probes with rank <= r} / #{probes with a finite-or-inf rank}.

    NaN ranks (probes without a mate in the gallery) are left out of the denominator.

    >>> cmc_from_ranks([1, 2, np.inf, np.nan], 3).round(3).tolist()
    [0.333, 0.667, 0.667]
    """
    r = np.asarray(ranks, dtype=np.float64).ravel()
    r = r[~np.isnan(r)]
    if r.size == 0:
        raise ConfigError("no probe has a mate in the gallery: the CMC is undefined")
    if int(max_rank) < 1:
        raise ConfigError(f"max_rank must be >= 1, got {max_rank}")
    return np.array([np.mean(r <= q) for q in range(1, int(max_rank) + 1)])


@dataclass(frozen=True)
class CMCResult:
    """curve[r-1] = rank-r identification rate over mated probes (probes whose label is in the gallery).

    n_nonmated probes (label absent from the gallery) are excluded; n_uncertain mated probes whose
    rank could not be certified from the top-k (see :func:`mate_ranks`) count as misses.
    """

    curve: tuple[float, ...]
    max_rank: int
    n_mated: int
    n_nonmated: int
    n_uncertain: int

    def rate(self, rank: int) -> float:
        if not 1 <= rank <= self.max_rank:
            raise ConfigError(f"rank must be in [1, {self.max_rank}], got {rank}")
        return self.curve[rank - 1]

    def to_dict(self) -> dict:
        return asdict(self)


def cmc(topk_scores, topk_ids, probe_labels, gallery_labels, max_rank: int | None = None) -> CMCResult:
    """Closed-set CMC from top-k search results (e.g. :func:`topk_search`), ties against the probe.

    curve[r-1] = #{mated probes with rank <= r} / #{mated probes}, for r = 1..max_rank.
    Rank-1 accuracy is ``result.curve[0]``. Certifying rank r needs the (r+1)-th score (to see ties
    beyond the list), so max_rank <= k - 1 unless the lists hold the whole gallery (then <= k);
    the default is that largest allowed value. Search with k = max_rank + 1.

    Probe "b" ties with non-mate "c" and is ranked after it:

    >>> r = cmc([[0.9, 0.5, 0.1], [0.7, 0.7, 0.2]], [[0, 1, 2], [2, 1, 0]], ["a", "b"], ["a", "b", "c"])
    >>> r.curve, r.n_uncertain
    ((0.5, 1.0, 1.0), 0)
    """
    m = mate_ranks(topk_scores, topk_ids, probe_labels, gallery_labels)
    top = _max_certifiable_rank(np.shape(topk_scores)[1], np.size(gallery_labels))
    max_rank = top if max_rank is None else int(max_rank)
    if not 1 <= max_rank <= top:
        raise ConfigError(f"max_rank must be in [1, {top}] for top-k lists of k={np.shape(topk_scores)[1]} "
                          f"(certifying rank r needs k >= r + 1): search with a larger k, got {max_rank}")
    curve = cmc_from_ranks(m.ranks, max_rank)
    return CMCResult(
        curve=tuple(float(c) for c in curve),
        max_rank=max_rank,
        n_mated=int(m.has_mate.sum()),
        n_nonmated=int((~m.has_mate).sum()),
        n_uncertain=int((m.uncertain & m.has_mate).sum()),
    )


# --------------------------------------------------------------------------- open-set TPIR @ FPIR


@dataclass(frozen=True)
class OpenSetPoint:
    """One open-set operating point (see :func:`tpir_at_fpir`)."""

    tpir: float
    fpir: float  # achieved, <= fpir_target
    threshold: float  # accept a candidate when score >= threshold
    fpir_target: float
    reachable: bool  # False when 0 < fpir_target < 1 / n_nonmated (FPIR = 0 point returned)
    rank: int
    n_mated: int
    n_nonmated: int
    n_uncertain: int = 0  # mated probes whose rank could not be certified (counted as misses)

    def to_dict(self) -> dict:
        return asdict(self)


def tpir_at_fpir_from_scores(mated_ranks, mated_scores, nonmated_top1_scores, fpir, rank: int = 1,
                             n_uncertain: int = 0):
    """Open-set TPIR@FPIR from per-probe quantities (for protocols with separate searches, e.g. IJB-C
    mated probes against one gallery and non-mated probes against the other).

    Threshold (strict, as :func:`~occbench.metrics.verification.tar_at_far`): the lowest t with
    FPIR(t) = #{non-mated probes with top-1 score >= t} / n_nonmated <= fpir.
    TPIR(t) = #{mated probes with mate rank <= ``rank`` and mate score >= t} / n_mated.
    mated_ranks: ranks with ties against the probe (inf = not found); mated_scores: the best mate's
    score (ignored where rank > ``rank``); n_uncertain is only recorded in the result.
    A sequence of fpir targets returns a list.
    """
    r = np.asarray(mated_ranks, dtype=np.float64).ravel()
    ms = np.asarray(mated_scores, dtype=np.float64).ravel()
    nm = np.asarray(nonmated_top1_scores, dtype=np.float64).ravel()
    if r.shape != ms.shape:
        raise ConfigError(f"mated_ranks and mated_scores differ in length: {r.size} vs {ms.size}")
    if np.isnan(r).any():
        raise ConfigError("mated_ranks has NaN: pass only probes whose identity is in the gallery")
    if r.size == 0 or nm.size == 0:
        raise ConfigError(f"open-set evaluation needs mated and non-mated probes; got {r.size} and {nm.size}")
    if int(rank) < 1:
        raise ConfigError(f"rank must be >= 1, got {rank}")
    hit = r <= int(rank)
    targets = [fpir] if np.ndim(fpir) == 0 else list(fpir)
    out = []
    for t in targets:
        op = strict_operating_point(ms[hit], nm, t, n_pos=r.size)
        out.append(OpenSetPoint(tpir=op.tar, fpir=op.far, threshold=op.threshold, fpir_target=op.far_target,
                                reachable=op.reachable, rank=int(rank), n_mated=r.size, n_nonmated=nm.size,
                                n_uncertain=int(n_uncertain)))
    return out[0] if np.ndim(fpir) == 0 else out


def tpir_at_fpir(topk_scores, topk_ids, probe_labels, gallery_labels, fpir: float | Iterable[float],
                 rank: int = 1) -> OpenSetPoint | list[OpenSetPoint]:
    """Open-set identification rate at a false-positive identification rate (corrected IJB-C style).

    Probes whose label is in the gallery are mated, the others non-mated. Non-mated probes set the
    threshold from their top-1 score: t = lowest threshold with
    #{non-mated: top1 >= t} / n_nonmated <= fpir (never above; tied scores are kept together).
    TPIR = #{mated: mate rank <= ``rank`` (ties against) and mate score >= t} / n_mated.
    As for :func:`cmc`, ``rank`` must be <= k - 1 unless the lists hold the whole gallery.
    If 0 < fpir < 1 / n_nonmated the FPIR = 0 point is returned with reachable=False.

    >>> p = tpir_at_fpir([[0.9, 0.1], [0.6, 0.2], [0.8, 0.3], [0.5, 0.4]], [[0, 1], [1, 0], [0, 1], [1, 0]],
    ...                  ["a", "b", "x", "y"], ["a", "b"], fpir=0.5)
    >>> p.tpir, p.fpir, p.threshold
    (1.0, 0.5, 0.6)
    """
    m = mate_ranks(topk_scores, topk_ids, probe_labels, gallery_labels)
    top = _max_certifiable_rank(np.shape(topk_scores)[1], np.size(gallery_labels))
    if not 1 <= int(rank) <= top:
        raise ConfigError(f"rank must be in [1, {top}] for top-k lists of k={np.shape(topk_scores)[1]} "
                          f"(certifying rank r needs k >= r + 1): search with a larger k, got {rank}")
    top1 = np.asarray(topk_scores, dtype=np.float64)[:, 0]
    return tpir_at_fpir_from_scores(m.ranks[m.has_mate], m.mate_scores[m.has_mate], top1[~m.has_mate],
                                    fpir, rank, n_uncertain=int((m.uncertain & m.has_mate).sum()))
