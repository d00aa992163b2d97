"""1:N search backends behind one function: exact torch search (the default), FAISS exact
(``IndexFlatIP``) and FAISS approximate (``faiss-ivf``, ``faiss-hnsw``).

Every backend returns a :class:`SearchResult`: the top-k lists in the order of
:func:`occbench.metrics.topk_search` (score descending, ties -> lower gallery index), plus what the
results JSON must record. Approximate backends measure their recall@k against exact search on a
seeded sample of probes, so an approximate number is never mistaken for an exact one.

>>> import numpy as np
>>> g = np.eye(4, dtype=np.float32)
>>> r = search(np.array([[0.6, 0.8, 0, 0]], np.float32), g, k=2)
>>> r.topk.indices.tolist(), r.exact, r.recall_at_k
([[1, 0]], True, None)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..metrics.identification import TopK, _resolve_device, topk_search
from .merge import merge_topk
from .distractors import (
    SweepPoint,
    SweepResult,
    distractor_sweep,
    plot_distractor_sweep,
    run_distractor_sweep,
    segment_max_scores,
)

__all__ = [
    "BACKENDS", "SearchResult", "search", "search_parts", "merge_topk", "recall_at_k",
    "SweepPoint", "SweepResult", "distractor_sweep", "plot_distractor_sweep", "run_distractor_sweep",
    "segment_max_scores",
]

BACKENDS = ("torch", "faiss", "faiss-ivf", "faiss-hnsw")
EXACT_BACKENDS = ("torch", "faiss")


@dataclass(frozen=True)
class SearchResult:
    """Top-k lists plus their provenance. ``recall_at_k`` is None for exact backends; for
    approximate ones it is the mean over ``recall_sample`` probes of |approx top-k ∩ exact top-k| / k."""

    topk: TopK
    backend: str
    exact: bool
    device: str
    k: int
    params: dict = field(default_factory=dict)
    recall_at_k: float | None = None
    recall_sample: int = 0
    build_s: float = 0.0
    search_s: float = 0.0
    recall_s: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready description (no arrays): store it beside the metrics it produced."""
        return {
            "backend": self.backend, "exact": self.exact, "device": self.device, "k": self.k,
            "params": dict(self.params),
            "recall_at_k": self.recall_at_k, "recall_sample_probes": self.recall_sample,
            "build_s": round(self.build_s, 3), "search_s": round(self.search_s, 3),
            "recall_s": round(self.recall_s, 3),
        }


def recall_at_k(approx_ids, exact_ids) -> float:
    """Mean over probes of |approx ∩ exact| / #exact, ignoring -1 padding (sets of gallery rows).

    >>> recall_at_k([[1, 2], [3, 4]], [[2, 1], [3, 5]])
    0.75
    """
    a, e = np.asarray(approx_ids), np.asarray(exact_ids)
    if a.ndim != 2 or a.shape[0] != e.shape[0]:
        raise ConfigError(f"approx_ids and exact_ids must be (P, k) arrays with one row per probe: {a.shape} vs {e.shape}")
    if a.shape[0] == 0:
        raise ConfigError("recall@k needs at least one probe")
    per = []
    for ra, re_ in zip(a, e):
        truth = set(int(x) for x in re_ if x >= 0)
        if truth:
            per.append(len(truth.intersection(int(x) for x in ra if x >= 0)) / len(truth))
    return float(np.mean(per)) if per else float("nan")


def search(probes, gallery, k: int, backend: str = "torch", *, device="auto", recall_sample: int = 1000,
           seed: int = 0, probe_block: int | None = None, gallery_block: int | None = None,
           nlist: int | None = None, nprobe: int | None = None, hnsw_m: int = 32,
           ef_search: int | None = None, ef_construction: int = 40) -> SearchResult:
    """Top-k gallery rows of every probe by dot product with the chosen backend.

    backend: ``torch`` (streamed exact search, :func:`~occbench.metrics.topk_search`), ``faiss``
    (exact ``IndexFlatIP``; a GPU index when faiss has GPU support and the device is CUDA),
    ``faiss-ivf`` (``IndexIVFFlat``, ``nlist`` lists trained on a seeded sample, ``nprobe`` visited)
    or ``faiss-hnsw`` (``IndexHNSWFlat``, ``hnsw_m`` links, ``ef_search``). Approximate backends
    compute recall@k on ``recall_sample`` seeded probes against exact torch search.
    """
    return search_parts(probes, [gallery], k, backend, device=device, recall_sample=recall_sample, seed=seed,
                        probe_block=probe_block, gallery_block=gallery_block, nlist=nlist, nprobe=nprobe,
                        hnsw_m=hnsw_m, ef_search=ef_search, ef_construction=ef_construction)


def search_parts(probes, parts, k: int, backend: str = "torch", *, device="auto", recall_sample: int = 1000,
                 seed: int = 0, probe_block: int | None = None, gallery_block: int | None = None,
                 **index_opts) -> SearchResult:
    """:func:`search` over a gallery made of consecutive ``parts`` (e.g. the enrolled gallery, then
    distractors) without concatenating them: each part is searched on its own and the top-k lists
    are merged (:func:`~occbench.search.merge.merge_topk`), which gives the search of the
    concatenation (gallery rows numbered across the parts). Empty parts are skipped. For an
    approximate backend, recall@k is measured on the merged lists against exact search of all parts.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown search backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}")
    k = int(k)
    offsets = np.cumsum([0] + [len(p) for p in parts])[:-1].tolist()
    used = [(p, o) for p, o in zip(parts, offsets) if len(p)]
    if not used:
        raise ConfigError("the gallery is empty")
    if backend == "torch":
        dev = _resolve_device(device)
        t = time.perf_counter()
        tops = [topk_search(probes, p, k, probe_block=probe_block, gallery_block=gallery_block, device=dev)
                for p, _ in used]
        top = merge_topk(tops, [o for _, o in used], k)
        return SearchResult(top, "torch", True, str(dev), k,
                            {"probe_block": probe_block, "gallery_block": gallery_block},
                            search_s=time.perf_counter() - t)
    from . import faiss_backend

    results = [faiss_backend.faiss_search(probes, p, k, backend, device=device, seed=seed, **index_opts)
               for p, _ in used]
    first = results[0]
    params = dict(first.params) if len(results) == 1 else {"parts": [r.params for r in results]}
    top = merge_topk([r.topk for r in results], [o for _, o in used], k)
    build_s, search_s = sum(r.build_s for r in results), sum(r.search_s for r in results)
    if first.exact:
        return SearchResult(top, first.backend, True, first.device, k, params, build_s=build_s, search_s=search_s)
    n_p = top.indices.shape[0]
    n = min(int(recall_sample), n_p)
    if n < 1:
        raise ConfigError(f"recall_sample must be >= 1 for an approximate search, got {recall_sample}")
    t = time.perf_counter()
    sample = np.sort(np.random.default_rng(seed).choice(n_p, size=n, replace=False))
    q = np.asarray(probes)[sample]
    exact = merge_topk([topk_search(q, p, k, device=device) for p, _ in used], [o for _, o in used], k)
    rec = recall_at_k(top.indices[sample], exact.indices)
    return SearchResult(top, first.backend, False, first.device, k, params, rec, n, build_s, search_s,
                        time.perf_counter() - t)
