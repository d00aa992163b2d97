"""FAISS backends for :func:`occbench.search.search` (optional extra ``occbench[faiss]``).

``faiss``: exact ``IndexFlatIP``. FAISS orders equal scores arbitrarily, so it is asked for k+1
results: rows whose (k+1)-th score is strictly below the k-th have a unique top-k set and are only
re-ordered (score desc, gallery index asc); rows with a tie across the boundary are redone with
the exact torch search. The results then equal :func:`~occbench.metrics.topk_search`'s up to float
rounding (FAISS and torch may sum a dot product in a different order, so near-ties can swap).
``faiss-ivf`` / ``faiss-hnsw``: approximate; ties are ordered the same way within the returned list.
A GPU index is used when faiss was built with GPU support and the device is CUDA.
"""
from __future__ import annotations

import time

import numpy as np

from ..errors import ConfigError
from ..metrics.identification import TopK, _resolve_device, _shape, check_finite_rows, topk_search

_ADD_CHUNK = 65536  # gallery rows converted, checked and added at a time (bounds the extra copy)


def import_faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError("the faiss search backends need faiss: pip install 'occbench[faiss]' "
                          "(faiss-cpu), or faiss-gpu for CUDA") from e
    return faiss


def _as_f32(x, name: str, offset: int = 0) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float32)
    check_finite_rows(a, name, offset)
    return a


def _order_ties(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row sorted by (score desc, index asc); -1 padding gets score -inf and goes last."""
    scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
    key_ids = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    o = np.lexsort((key_ids, -scores.astype(np.float64)), axis=1)
    return np.take_along_axis(scores, o, 1), np.take_along_axis(ids, o, 1).astype(np.int64)


def _build(faiss, backend: str, d: int, n_g: int, gallery, seed: int, nlist, nprobe, hnsw_m, ef_search,
           ef_construction, k: int) -> tuple[object, dict]:
    if backend == "faiss":
        return faiss.IndexFlatIP(d), {}
    if backend == "faiss-ivf":
        nl = int(nlist) if nlist else int(min(max(1, 4 * np.sqrt(n_g)), max(1, n_g // 39)))
        if not 1 <= nl <= n_g:
            raise ConfigError(f"nlist must be in [1, {n_g}] (the gallery size), got {nlist}")
        npr = int(nprobe) if nprobe else min(nl, 16)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nl, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(seed)  # k-means initialisation
        n_train = min(n_g, max(39 * nl, 50_000), 256 * nl)
        rows = np.sort(np.random.default_rng(seed).choice(n_g, size=n_train, replace=False))
        index.train(_as_f32(np.asarray(gallery[rows]), "gallery"))
        index.nprobe = npr
        return index, {"nlist": nl, "nprobe": npr, "train_rows": int(n_train)}
    m = int(hnsw_m)
    if m < 2:
        raise ConfigError(f"hnsw_m must be >= 2, got {hnsw_m}")
    index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = int(ef_construction)
    ef = int(ef_search) if ef_search else max(64, 2 * k)
    index.hnsw.efSearch = ef
    return index, {"hnsw_m": m, "ef_search": ef, "ef_construction": int(ef_construction)}


def faiss_search(probes, gallery, k: int, backend: str, *, device="auto", seed: int = 0, nlist=None,
                 nprobe=None, hnsw_m: int = 32, ef_search=None, ef_construction: int = 40):
    from . import SearchResult

    faiss = import_faiss()
    n_p, d = _shape(probes, "probes")
    n_g, d_g = _shape(gallery, "gallery")
    if d != d_g:
        raise ConfigError(f"probes have dimension {d} but gallery has {d_g}; embed both with one model")
    if n_g == 0:
        raise ConfigError("the gallery is empty")
    dev = _resolve_device(device)
    t = time.perf_counter()
    index, params = _build(faiss, backend, d, n_g, gallery, seed, nlist, nprobe, hnsw_m, ef_search,
                           ef_construction, k)
    gpu = dev.type == "cuda" and hasattr(faiss, "StandardGpuResources") and backend != "faiss-hnsw"
    if gpu:  # pragma: no cover - needs faiss-gpu and CUDA
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, dev.index or 0, index)
        if backend == "faiss-ivf":
            index.nprobe = params["nprobe"]
    params["faiss_device"] = f"cuda:{dev.index or 0}" if gpu else "cpu"
    if dev.type == "cuda" and not gpu:
        params["faiss_device_note"] = ("faiss has no GPU support here (faiss-cpu) or the index type has no "
                                       "GPU version: searched on the CPU")
    if isinstance(gallery, np.ndarray) and gallery.dtype == np.float32 and gallery.flags.c_contiguous:
        for a in range(0, n_g, _ADD_CHUNK):  # checked in chunks (bounded temporaries), added in one call:
            check_finite_rows(gallery[a:a + _ADD_CHUNK], "gallery", a)  # FAISS's storage then grows once
        index.add(gallery)  # (adding 4 chunks of a 250k x 512 gallery cost +0.35 s of regrowth copies)
    else:
        for a in range(0, n_g, _ADD_CHUNK):  # converted chunk by chunk: one chunk's float32 copy at a time
            index.add(_as_f32(gallery[a:a + _ADD_CHUNK], "gallery", a))
    build_s = time.perf_counter() - t

    t = time.perf_counter()
    q = _as_f32(probes, "probes")
    exact = backend == "faiss"
    kq = k + 1 if exact and n_g > k else k
    scores, ids = index.search(q, kq)
    scores, ids = _order_ties(scores, ids)
    if exact and kq > k:
        tied = np.flatnonzero(scores[:, k] == scores[:, k - 1])
        scores, ids = scores[:, :k].copy(), ids[:, :k].copy()
        if tied.size:  # a tie across the k-th place: the exact search picks the lower gallery rows
            fix = topk_search(q[tied], gallery, k, device=dev)
            scores[tied], ids[tied] = fix.scores, fix.indices
        params["boundary_ties_redone"] = int(tied.size)
    search_s = time.perf_counter() - t
    return SearchResult(TopK(scores, ids), backend, exact, params["faiss_device"], k, params,
                        build_s=build_s, search_s=search_s)
