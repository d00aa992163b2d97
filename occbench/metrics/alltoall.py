"""MFR-style all-to-all verification: every probe against every gallery image, TAR@FAR at low FAR.

The MFR (ICCV 2021 masked face recognition) track scores every masked probe against every unmasked
gallery image: a pair is genuine when both show the same identity, an impostor otherwise. At
10k x 10k that is 10^8 scores, so neither the score matrix nor the impostor list is ever formed.

Definition (the strict TAR@FAR of :func:`occbench.metrics.verification.strict_operating_point`,
accept a pair when ``score >= threshold``, the real FAR never exceeds the target):
with ``N_imp`` impostor pairs, at most ``c = max{c : c / N_imp <= target}`` impostors may be
accepted. Let ``v`` be the ``(c+1)``-th highest impostor score (``-inf`` if ``c >= N_imp``).
Accepting exactly the scores ``> v`` is the lowest threshold that keeps FAR <= target (tied
impostors go together), so

    TAR = #{genuine > v} / N_gen,   FAR = #{impostor > v} / N_imp,
    threshold = min({+inf} U {scores > v})   (the lowest candidate above v).

Only the top ``c + 1 = floor(target * N_imp) + 1`` impostor scores are needed. They are kept exactly
by a streamed top-k: per score block only entries strictly above the current k-th best (``tau``) are
collected; once more than ``2k`` are held they are cut back to the top k. Entries equal to ``tau``
cannot change the top-k *values*, so dropping them keeps the result exact, ties included. Genuine
scores (a few per probe) are all kept.

Refusal: a FAR target below ``1 / N_imp`` cannot be measured (no non-zero FAR <= target exists);
it is reported ``measurable=False`` with the number of impostors it needs, ``ceil(1 / target)``.

Failure to enrol (the NIST FRVT / IJB rule): an image without an embedding (``probe_ok`` /
``gallery_ok`` False) gets the lowest possible score, ``-inf``: its genuine pairs count as false
rejects and its impostor pairs as true rejects; both stay in ``N_gen`` / ``N_imp``.

Self pairs: with ``probe_keys`` / ``gallery_keys``, a probe whose source image is also in the gallery
(e.g. an occluded copy of a gallery image, ``lfw-occ-all``) is not paired with that image; such
pairs are counted in ``n_excluded_self`` and in neither class.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable

import numpy as np
import torch

from ..errors import ConfigError
from .identification import _resolve_device, _shape

__all__ = ["AllToAllPoint", "AllToAllResult", "all_to_all_tar_at_far", "impostors_needed", "DEFAULT_FARS"]

DEFAULT_FARS = (1e-4, 1e-5, 1e-6)
_DEFAULT_BLOCKS = {"cpu": (1024, 16384), "cuda": (8192, 65536)}
_CHUNK = 1 << 18  # entries compared at a time on CPU


def impostors_needed(target: float) -> int:
    """Smallest impostor count ``n`` with ``1 / n <= target`` (a non-zero FAR <= target is measurable)."""
    n = max(1, math.ceil(1.0 / target))
    while n > 1 and 1.0 / (n - 1) <= target:
        n -= 1
    while 1.0 / n > target:
        n += 1
    return n


def _max_accepted(target: float, n_imp: int) -> int:
    """Largest c with c / n_imp <= target, compared by float division like the dense reference."""
    c = min(n_imp, max(0, int(math.floor(target * n_imp))))
    while c < n_imp and (c + 1) / n_imp <= target:
        c += 1
    while c > 0 and c / n_imp > target:
        c -= 1
    return c


@dataclass(frozen=True)
class AllToAllPoint:
    """One strict operating point. Unmeasurable targets have ``tar``/``far``/``threshold`` None and a ``note``."""

    far_target: float
    measurable: bool
    tar: float | None
    far: float | None
    threshold: float | None
    n_accepted_impostors: int | None
    impostors_needed: int
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AllToAllResult:
    """Counts and operating points of :func:`all_to_all_tar_at_far`.

    ``genuine_scores`` (every genuine pair, -inf for failures to enrol) and ``top_impostor_scores``
    (the highest impostor scores kept, descending) are left out of :meth:`to_dict`."""

    n_probes: int
    n_gallery: int
    n_genuine: int
    n_impostor: int
    n_excluded_self: int
    n_fte_probes: int
    n_fte_gallery: int
    points: tuple[AllToAllPoint, ...]
    genuine_scores: np.ndarray = field(repr=False, compare=False)
    top_impostor_scores: np.ndarray = field(repr=False, compare=False)

    def point(self, far_target: float) -> AllToAllPoint:
        for p in self.points:
            if p.far_target == float(far_target):
                return p
        raise ConfigError(f"FAR {far_target} was not evaluated; evaluated: {[p.far_target for p in self.points]}")

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("n_probes", "n_gallery", "n_genuine", "n_impostor",
                                           "n_excluded_self", "n_fte_probes", "n_fte_gallery")}
        d["points"] = [p.to_dict() for p in self.points]
        return d


def _labels_array(x, n: int, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or a.size != n:
        raise ConfigError(f"{name} must be 1-D with one label per row ({n}), got shape {a.shape}")
    return a.astype(str) if a.dtype == object else a


def _ok_array(x, n: int, name: str) -> np.ndarray:
    if x is None:
        return np.ones(n, bool)
    a = np.asarray(x, bool)
    if a.shape != (n,):
        raise ConfigError(f"{name} must be a bool array of length {n}, got shape {a.shape}")
    return a


def _targets(far) -> list[float]:
    ts = [far] if np.ndim(far) == 0 else list(far)
    out = []
    for t in ts:
        t = float(t)
        if not (np.isfinite(t) and 0 < t < 1):
            raise ConfigError(f"FAR targets must be in (0, 1), got {t}")
        out.append(t)
    if not out:
        raise ConfigError("give at least one FAR target")
    return out


def all_to_all_tar_at_far(probes, probe_labels, gallery, gallery_labels,
                          far: float | Iterable[float] = DEFAULT_FARS, *, probe_ok=None, gallery_ok=None,
                          probe_keys=None, gallery_keys=None, probe_block: int | None = None,
                          gallery_block: int | None = None, device="cpu") -> AllToAllResult:
    """Strict TAR@FAR of every probe against every gallery image, streamed (see the module docstring).

    probes (P, D), gallery (G, D): embeddings (numpy / torch, used as float32; scores are dot
    products, cosine for L2-normalised rows). Rows whose ``*_ok`` is False are failures to enrol
    (their values are ignored, NaN allowed); the others must be finite. Labels: one identity per row.
    Peak memory: one probe_block x gallery_block float32 block plus O(P + G + genuine pairs + k).

    >>> g = np.eye(3, dtype=np.float32)
    >>> p = np.array([[1, 0, 0], [0, .9, .1]], np.float32)
    >>> r = all_to_all_tar_at_far(p, ["a", "b"], g, ["a", "b", "c"], far=[0.25, 1e-3])
    >>> r.n_genuine, r.n_impostor, r.point(0.25).tar, r.point(0.25).far, r.point(1e-3).measurable
    (2, 4, 1.0, 0.25, False)
    """
    n_p, d_p = _shape(probes, "probes")
    n_g, d_g = _shape(gallery, "gallery")
    if d_p != d_g:
        raise ConfigError(f"probes have dimension {d_p} but gallery has {d_g}; embed both with one model")
    if n_p == 0 or n_g == 0:
        raise ConfigError(f"all-to-all needs probes and gallery images; got {n_p} probes, {n_g} gallery")
    targets = _targets(far)
    p_lab = _labels_array(probe_labels, n_p, "probe_labels")
    g_lab = _labels_array(gallery_labels, n_g, "gallery_labels")
    p_ok = _ok_array(probe_ok, n_p, "probe_ok")
    g_ok = _ok_array(gallery_ok, n_g, "gallery_ok")
    dev = _resolve_device(device)
    pb_def, gb_def = _DEFAULT_BLOCKS[dev.type]
    pb, gb = int(probe_block or pb_def), int(gallery_block or gb_def)
    if pb < 1 or gb < 1:
        raise ConfigError(f"block sizes must be >= 1, got probe_block={pb}, gallery_block={gb}")

    # identities as integer codes; probes and gallery sorted by identity, so each probe's genuine
    # gallery columns form one contiguous range [g_start, g_end) and probes of one identity one row run
    ids, codes = np.unique(np.concatenate([g_lab, p_lab]), return_inverse=True)
    g_code, p_code = codes[:n_g], codes[n_g:]
    g_order = np.argsort(g_code, kind="stable")
    p_order = np.argsort(p_code, kind="stable")
    g_sorted = g_code[g_order]
    p_sorted = p_code[p_order]
    g_start = np.searchsorted(g_sorted, p_sorted, "left")
    g_end = np.searchsorted(g_sorted, p_sorted, "right")

    # self pairs: probe i made from gallery image j (same key) -> sorted gallery column, else -1
    self_col = np.full(n_p, -1, np.int64)
    if probe_keys is not None or gallery_keys is not None:
        if probe_keys is None or gallery_keys is None:
            raise ConfigError("give both probe_keys and gallery_keys (or neither)")
        pk = _labels_array(probe_keys, n_p, "probe_keys")[p_order]
        gk = _labels_array(gallery_keys, n_g, "gallery_keys")
        col_of = {str(k): c for c, k in enumerate(gk[g_order])}
        if len(col_of) != n_g:
            raise ConfigError("gallery_keys must be unique")
        for i, k in enumerate(pk):
            c = col_of.get(str(k))
            if c is not None:
                if not g_start[i] <= c < g_end[i]:
                    raise ConfigError(f"image {k!r} is a probe and a gallery image with different identities")
                self_col[i] = c
    n_self = int((self_col >= 0).sum())
    n_gen = int((g_end - g_start).sum()) - n_self
    n_imp = n_p * n_g - int((g_end - g_start).sum())

    p_ok_s, g_ok_s = p_ok[p_order], g_ok[g_order]
    k_need = {t: _max_accepted(t, n_imp) + 1 for t in targets if n_imp and 1.0 / n_imp <= t}
    k = max(k_need.values(), default=0)
    genuine: list[np.ndarray] = []
    kept = np.empty(0, np.float32)
    tau = -math.inf

    with torch.inference_mode():
        p_all = _rows_sorted(probes, p_order, p_ok_s, dev, "probes")
        fte_cols = torch.from_numpy(np.flatnonzero(~g_ok_s)).to(dev)
        buf = torch.empty(min(pb, n_p) * min(gb, n_g), dtype=torch.float32, device=dev)
        for g0 in range(0, n_g, gb):
            g1 = min(g0 + gb, n_g)
            g_t = _rows_sorted(gallery, g_order[g0:g1], g_ok_s[g0:g1], dev, "gallery", g0).T
            blk_fte = fte_cols[(fte_cols >= g0) & (fte_cols < g1)] - g0
            for p0 in range(0, n_p, pb):
                p1 = min(p0 + pb, n_p)
                sim = buf[: (p1 - p0) * (g1 - g0)].view(p1 - p0, g1 - g0)
                torch.mm(p_all[p0:p1], g_t, out=sim)
                if blk_fte.numel():
                    sim.index_fill_(1, blk_fte, -math.inf)
                fte_rows = np.flatnonzero(~p_ok_s[p0:p1])
                if fte_rows.size:
                    sim[torch.from_numpy(fte_rows).to(dev)] = -math.inf
                genuine.append(_take_genuine(sim, p0, p1, g0, g1, g_start, g_end, self_col, dev))
                if k == 0:
                    continue
                if tau == -math.inf:
                    tau = _sampled_floor(sim, k)
                cand = _above(sim, tau)
                if cand.size:
                    kept = np.concatenate([kept, cand])
                    if kept.size > 2 * k:
                        kept = np.partition(kept, kept.size - k)[kept.size - k:]
                        tau = float(kept.min())
    gen = np.concatenate(genuine) if genuine else np.empty(0, np.float32)
    top = np.sort(kept)[::-1][:k] if k else np.empty(0, np.float32)
    points = tuple(_point(t, n_imp, n_gen, gen, top, k_need.get(t), tau) for t in targets)
    return AllToAllResult(n_p, n_g, n_gen, n_imp, n_self, int((~p_ok).sum()), int((~g_ok).sum()), points,
                          gen, top)


def _rows_sorted(x, order: np.ndarray, ok: np.ndarray, dev, name: str, offset: int = 0) -> torch.Tensor:
    """x[order] as a float32 tensor on dev; failed rows zeroed (their scores are overwritten), others
    checked finite."""
    if isinstance(x, torch.Tensor):
        t = x[torch.from_numpy(order)].to(device=dev, dtype=torch.float32)
    else:
        t = torch.from_numpy(np.asarray(np.asarray(x)[order], np.float32)).to(dev)
    t = t.contiguous()
    bad_ok = torch.from_numpy(~ok).to(dev)
    if bool(bad_ok.any()):
        t[bad_ok] = 0.0
    if t.device.type == "cpu":
        fin = np.isfinite(t.numpy()).all(axis=1)  # numpy's isfinite is several times faster on CPU
    else:
        fin = torch.isfinite(t).all(1).cpu().numpy()
    if not fin.all():
        row = int(order[int(np.flatnonzero(~fin)[0])])
        raise ConfigError(f"{name} row {row} has a NaN or inf value but is marked enrolled; re-embed it or "
                          "mark it as a failure to enrol")
    return t


def _take_genuine(sim: torch.Tensor, p0, p1, g0, g1, g_start, g_end, self_col, dev) -> np.ndarray:
    """The genuine scores of the block (self pairs left out); their entries are then set to -inf."""
    c0 = np.clip(g_start[p0:p1], g0, g1)
    c1 = np.clip(g_end[p0:p1], g0, g1)
    n = c1 - c0
    if not n.sum():
        return np.empty(0, np.float32)
    rows = np.repeat(np.arange(p1 - p0), n)
    cols = np.repeat(c0 - g0, n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
    r_t, c_t = torch.from_numpy(rows).to(dev), torch.from_numpy(cols).to(dev)
    vals = sim[r_t, c_t].cpu().numpy()
    sim[r_t, c_t] = -math.inf
    return vals[cols + g0 != self_col[p0:p1][rows]]


def _above(sim: torch.Tensor, tau: float) -> np.ndarray:
    """Entries of sim strictly above tau (numpy's masked select is several times faster than torch's on
    CPU; row chunks keep the comparison mask in cache)."""
    if sim.device.type != "cpu":
        return sim[sim > tau].cpu().numpy()
    a = sim.numpy()
    step = max(1, _CHUNK // max(a.shape[1], 1))
    parts = [c[c > tau] for c in (a[r:r + step] for r in range(0, a.shape[0], step))]
    return np.concatenate(parts) if parts else np.empty(0, np.float32)


def _sampled_floor(sim: torch.Tensor, k: int) -> float:
    """A value with at least k block entries >= it (the k-th largest of a strided sample), else -inf.

    Any subset's k-th largest is <= the block's k-th largest, so entries not above it cannot be among
    the block's top k beyond ties with it (see the module docstring: the floor ``tau``)."""
    flat = sim.view(-1)
    step = max(1, flat.numel() // (8 * k))
    sample = flat[::step]
    if sample.numel() < k:
        return -math.inf
    v = float(torch.topk(sample, k, sorted=False).values.min())
    return v if v > -math.inf else -math.inf


def _point(t: float, n_imp: int, n_gen: int, gen: np.ndarray, top: np.ndarray, k: int | None,
           floor: float) -> AllToAllPoint:
    need = impostors_needed(t)
    if k is None:
        return AllToAllPoint(t, False, None, None, None, None, need,
                             f"n/a: only {n_imp:,} impostor pairs, so FAR {t:g} cannot be measured (needs ≥ {need:,})")
    if n_gen == 0:
        return AllToAllPoint(t, False, None, None, None, None, need, "n/a: no genuine pairs")
    # the (c+1)-th highest impostor score: every impostor above the floor is kept, and at least k
    # impostors are >= the floor (-inf when fewer than k finite impostors were seen)
    v = float(top[k - 1]) if top.size >= k else floor
    acc_imp = top[top > v]
    acc_gen = gen[gen > v]
    cands = np.concatenate([acc_imp, acc_gen])
    threshold = float(cands.min()) if cands.size else math.inf
    return AllToAllPoint(t, True, float(acc_gen.size / n_gen), float(acc_imp.size / n_imp), threshold,
                         int(acc_imp.size), need)
