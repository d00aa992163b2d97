"""MegaFace-style distractor sweeps: rank-1 and open-set TPIR against gallery size, from one pass.

The gallery (enrolled identities) is searched once (top-k, k >= 2) and the distractor set once,
keeping per probe only the best distractor score inside each segment ``[N_{j-1}, N_j)`` of the
requested sizes; a running maximum then gives the best score among the first N distractors for
every N. Distractor subsets are nested prefixes of the distractor list (list order defines them).

For a sweep point with the first N distractors added to the gallery (ties against the probe):

* a mated probe is a rank-1 hit iff its mate is rank 1 in the gallery and its mate score is
  strictly above the best of the first N distractor scores;
* a non-mated probe's top-1 score is max(gallery top-1, best of the first N distractor scores);
* TPIR@FPIR then follows :func:`~occbench.metrics.tpir_at_fpir_from_scores` at rank 1.

This is exact (the same numbers as a full top-k search over gallery + N distractors) for every N
from one pass over the distractors.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..metrics.identification import (
    _DEFAULT_BLOCKS,
    check_finite_rows,
    _resolve_device,
    _rows,
    _shape,
    mate_ranks,
    topk_search,
    tpir_at_fpir_from_scores,
)


def _sizes(sizes: Iterable[int], n_distractors: int) -> list[int]:
    out = sorted({int(s) for s in sizes})
    if not out:
        raise ConfigError("give at least one distractor count for the sweep")
    if out[0] < 0 or out[-1] > n_distractors:
        raise ConfigError(f"distractor counts must be in [0, {n_distractors}] (the distractor set size), got {out}")
    return out


def segment_max_scores(probes, distractors, sizes: Sequence[int], device="auto",
                       probe_block: int | None = None, gallery_block: int | None = None) -> np.ndarray:
    """(P, len(sizes)) float32: column j = each probe's best score among distractors[:sizes[j]]
    (-inf for size 0). Sizes must be sorted ascending. Streamed in blocks like topk_search."""
    n_p, d = _shape(probes, "probes")
    n_d, d2 = _shape(distractors, "distractors")
    if d != d2:
        raise ConfigError(f"probes have dimension {d} but distractors have {d2}; embed both with one model")
    sizes = list(sizes)
    if sizes != sorted(sizes) or (sizes and (sizes[0] < 0 or sizes[-1] > n_d)):
        raise ConfigError(f"sizes must be ascending in [0, {n_d}], got {sizes}")
    dev = _resolve_device(device)
    pb = int(probe_block or _DEFAULT_BLOCKS[dev.type][0])
    gb = int(gallery_block or _DEFAULT_BLOCKS[dev.type][1])
    top = sizes[-1] if sizes else 0
    seg = np.searchsorted(np.asarray(sizes), np.arange(top), side="right")  # distractor row -> first size covering it
    with torch.inference_mode():
        p_all = _rows(probes, 0, n_p, dev)
        check_finite_rows(p_all, "probes", 0)
        seg_max = torch.full((n_p, len(sizes)), -torch.inf, dtype=torch.float32, device=dev)
        for g0 in range(0, top, gb):
            g1 = min(g0 + gb, top)
            g_blk = _rows(distractors, g0, g1, dev)
            check_finite_rows(g_blk, "distractors", g0)
            bounds = np.flatnonzero(np.diff(seg[g0:g1])) + 1
            cuts = [0, *bounds.tolist(), g1 - g0]
            for p0 in range(0, n_p, pb):
                sim = p_all[p0:p0 + pb] @ g_blk.T
                for a, b in zip(cuts[:-1], cuts[1:]):
                    j = int(seg[g0 + a])
                    seg_max[p0:p0 + pb, j] = torch.maximum(seg_max[p0:p0 + pb, j], sim[:, a:b].amax(dim=1))
        out = torch.cummax(seg_max, dim=1).values if len(sizes) else seg_max
        return out.cpu().numpy()


@dataclass(frozen=True)
class SweepPoint:
    n_distractors: int
    gallery_size: int  # enrolled gallery entries + n_distractors
    rank1: float  # over mated probes (ties against the probe)
    tpir: tuple[float, ...]  # at each fpir target, rank 1
    fpir: tuple[float, ...]  # achieved FPIR at each target
    threshold: tuple[float, ...]
    reachable: tuple[bool, ...] = ()  # False: too few non-mated probes for the target (the FPIR = 0 point)


@dataclass(frozen=True)
class SweepResult:
    points: tuple[SweepPoint, ...]
    fpir_targets: tuple[float, ...]
    n_mated: int
    n_nonmated: int

    def to_dict(self) -> dict:
        return {"fpir_targets": list(self.fpir_targets), "n_mated": self.n_mated, "n_nonmated": self.n_nonmated,
                "points": [asdict(p) for p in self.points]}

    def to_frame(self):
        import pandas as pd

        rows = []
        for p in self.points:
            row = {"n_distractors": p.n_distractors, "gallery_size": p.gallery_size, "rank1_rate": p.rank1}
            for t, v, ok in zip(self.fpir_targets, p.tpir, p.reachable or (True,) * len(p.tpir)):
                row[f"tpir_at_fpir_{t:g}"] = v if ok else float("nan")
            rows.append(row)
        return pd.DataFrame(rows)


def distractor_sweep(topk_scores, topk_ids, probe_labels, gallery_labels, seg_max, sizes: Sequence[int],
                     fpir: float | Iterable[float] = (1e-3, 1e-2, 1e-1), mated=None,
                     nonmated_floor: float | None = None) -> SweepResult:
    """Rank-1 and TPIR@FPIR (rank 1) for each distractor count in ``sizes`` (ascending).

    topk_scores/topk_ids: the gallery search (k >= 2 unless the lists hold the whole gallery);
    seg_max: :func:`segment_max_scores` of the same probes for the same sizes.
    Open-set TPIR needs non-mated probes; with none, ``tpir`` is empty.

    Failure to enrol (as the eval's 1:N metrics): ``mated`` (bool per probe, default: the label is in
    the gallery) marks the probes meant to be mated; one without a gallery mate, or a failed probe
    (a row of -inf scores / -1 ids), misses at every size. ``nonmated_floor`` replaces a non-finite
    top-1 score of a non-mated probe (a failed probe), so it never raises a false positive.
    """
    sizes = list(sizes)
    s = np.asarray(topk_scores, dtype=np.float64)
    dmax = np.asarray(seg_max, dtype=np.float64)
    n_gal = int(np.size(gallery_labels))
    if s.ndim != 2 or (s.shape[1] < 2 and n_gal > s.shape[1]):
        raise ConfigError("the gallery search must keep k >= 2 results (rank 1 is certified by the 2nd score)")
    if dmax.shape != (s.shape[0], len(sizes)):
        raise ConfigError(f"seg_max must be (probes, sizes) = ({s.shape[0]}, {len(sizes)}), got {dmax.shape}")
    m = mate_ranks(topk_scores, topk_ids, probe_labels, gallery_labels)
    mated = m.has_mate if mated is None else np.asarray(mated, bool)
    if mated.shape != m.has_mate.shape:
        raise ConfigError(f"mated must have one value per probe ({m.has_mate.size}), got shape {mated.shape}")
    if not mated.any():
        raise ConfigError("no probe has a mate in the gallery: rank-1 is undefined")
    targets = (float(fpir),) if np.ndim(fpir) == 0 else tuple(float(f) for f in fpir)
    nonmated = ~mated
    points = []
    for j, n in enumerate(sizes):
        hit = mated & (m.ranks == 1) & (m.mate_scores > dmax[:, j])
        rank1 = float(hit[mated].mean())
        tp, fp, th, ok = (), (), (), ()
        if nonmated.any() and targets:
            ranks = np.where(hit, 1.0, np.inf)[mated]
            nm_top1 = np.maximum(s[nonmated, 0], dmax[nonmated, j])
            if nonmated_floor is not None:
                nm_top1 = np.where(np.isfinite(nm_top1), nm_top1, float(nonmated_floor))
            ops = tpir_at_fpir_from_scores(ranks, m.mate_scores[mated], nm_top1, list(targets), rank=1)
            tp = tuple(o.tpir for o in ops)
            fp = tuple(o.fpir for o in ops)
            th = tuple(o.threshold for o in ops)
            ok = tuple(bool(o.reachable) for o in ops)
        points.append(SweepPoint(int(n), n_gal + int(n), rank1, tp, fp, th, ok))
    return SweepResult(tuple(points), targets if nonmated.any() else (), int(mated.sum()), int(nonmated.sum()))


def run_distractor_sweep(probes, gallery, probe_labels, gallery_labels, distractors, sizes: Iterable[int],
                         fpir: float | Iterable[float] = (1e-3, 1e-2, 1e-1), device="auto") -> SweepResult:
    """One gallery search (k=2) + one pass over the distractors, then :func:`distractor_sweep`."""
    n_d = _shape(distractors, "distractors")[0]
    sz = _sizes(sizes, n_d)
    top = topk_search(probes, gallery, 2, device=device)
    seg = segment_max_scores(probes, distractors, sz, device=device)
    return distractor_sweep(top.scores, top.indices, probe_labels, gallery_labels, seg, sz, fpir)


def plot_distractor_sweep(result: SweepResult, path: str | Path, title: str | None = None) -> Path:
    """Rank-1 and TPIR@FPIR (%) against gallery size (log x axis), MegaFace-style; writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io.atomic import atomic_write_bytes

    pts = result.points
    x = [max(p.gallery_size, 1) for p in pts]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(x, [100 * p.rank1 for p in pts], "o-", label="rank-1")
    for i, t in enumerate(result.fpir_targets):
        if all(p.reachable[i] for p in pts if p.reachable):
            ax.plot(x, [100 * p.tpir[i] for p in pts], "s--", label=f"TPIR @ FPIR={t:g}")
    ax.set_xscale("log")
    ax.set_xlabel("gallery size (enrolled + distractors)")
    ax.set_ylabel("identification rate (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title or "identification vs gallery size")
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
