"""Merging top-k lists of consecutive gallery parts (a gallery, then distractors) into the top-k of
their concatenation, in the order of :func:`occbench.metrics.topk_search`."""
from __future__ import annotations

import numpy as np

from ..metrics.identification import TopK


def merge_topk(parts: list[TopK], offsets: list[int], k: int) -> TopK:
    """Top-k of the concatenated gallery from each part's own top-k (rows of part j are
    ``offsets[j] + row``). Each part is ordered (score desc, row asc), so a stable sort of the parts
    laid side by side in gallery order keeps lower gallery rows first among equal scores: the result
    equals a search over the concatenated gallery. -1 padding stays -1 with score -inf, last.

    >>> a = TopK(np.array([[0.9, 0.5]], np.float32), np.array([[1, 0]]))
    >>> b = TopK(np.array([[0.9, 0.7]], np.float32), np.array([[0, 2]]))
    >>> merge_topk([a, b], [0, 2], 3).indices.tolist()
    [[1, 2, 4]]
    """
    if len(parts) == 1 and offsets[0] == 0 and parts[0].scores.shape[1] == k:
        return parts[0]
    scores = np.concatenate([np.where(p.indices < 0, -np.inf, p.scores).astype(np.float32) for p in parts], axis=1)
    ids = np.concatenate([np.where(p.indices < 0, -1, p.indices + off).astype(np.int64)
                          for p, off in zip(parts, offsets)], axis=1)
    # stable on the negated score: equal scores keep part order, then row order inside a part;
    # padding (-inf) sorts last whatever its place
    o = np.argsort(-scores.astype(np.float64), axis=1, kind="stable")[:, :k]
    s, i = np.take_along_axis(scores, o, 1), np.take_along_axis(ids, o, 1)
    if s.shape[1] < k:  # fewer entries than k in all parts together
        pad = k - s.shape[1]
        s = np.concatenate([s, np.full((s.shape[0], pad), -np.inf, np.float32)], axis=1)
        i = np.concatenate([i, np.full((i.shape[0], pad), -1, np.int64)], axis=1)
    return TopK(np.ascontiguousarray(s), np.ascontiguousarray(i))
