"""The engine's embedding cache and alignment memo (``occbench.bench.embed``)."""
from __future__ import annotations

import json

import numpy as np

from occbench.bench.embed import AlignmentMemo, CacheKey, EmbeddingCache


def test_cache_roundtrip_and_keys(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    key = CacheKey("abc123", "proto9", "mask/surgical v2")
    assert cache.get(key) is None and key not in cache
    emb = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    emb[2] = np.nan
    cache.put(key, emb, {"model": "tiny", "n_failed": 1})
    got, meta = cache.get(("abc123", "proto9", "mask/surgical v2"))  # tuples work as keys too
    np.testing.assert_array_equal(got, emb)
    assert got.dtype == np.float32 and meta == {"model": "tiny", "n_failed": 1}
    # Keys are isolated from each other and files stay inside the root.
    assert cache.get(CacheKey("abc123", "proto9", "clean")) is None
    assert cache.get(CacheKey("abc124", "proto9", "mask/surgical v2")) is None
    npy, side = cache.paths(key)
    root = (tmp_path / "cache").resolve()
    assert root in npy.parents and npy.parent == side.parent
    sidecar = json.loads(side.read_text())
    assert sidecar["key"]["variant"] == "mask/surgical v2" and sidecar["shape"] == [5, 8]
    assert not list(root.rglob("*.tmp"))  # atomic writes leave no temp files


def test_cache_keys_cannot_escape_root(tmp_path):
    cache = EmbeddingCache(tmp_path / "c")
    for key in (CacheKey("..", "..", "../../evil"), CacheKey("/abs", "a", "b"), CacheKey("a", "b", "..")):
        npy, _ = cache.paths(key)
        assert (tmp_path / "c").resolve() in npy.parents
        cache.put(key, np.zeros((1, 2), np.float32))
        assert cache.get(key) is not None
    assert not (tmp_path / "evil.npy").exists()


def test_cache_corrupt_or_mismatched_entries_are_misses(tmp_path):
    cache = EmbeddingCache(tmp_path)
    key = CacheKey("f", "p", "v")
    emb = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.put(key, emb)
    npy, side = cache.paths(key)
    data = bytearray(npy.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # flip the last value
    npy.write_bytes(bytes(data))
    assert cache.get(key) is None
    cache.put(key, emb)
    npy.write_bytes(b"garbage")
    assert cache.get(key) is None
    cache.put(key, emb)
    side.unlink()  # sidecar is the commit marker
    assert cache.get(key) is None
    cache.put(key, emb * 2)  # overwrite
    np.testing.assert_array_equal(cache.get(key)[0], emb * 2)


def test_alignment_memo_round_trips_and_merges(tmp_path):
    cache = EmbeddingCache(tmp_path)
    five = np.arange(10, dtype=np.float64).reshape(5, 2)
    a = AlignmentMemo(cache, "fp1")
    assert a.get(b"img-a", five) is None
    a.add(b"img-a", five, np.eye(2, 3))
    b = AlignmentMemo(cache, "fp1")  # another run, started before a saved
    b.add(b"img-b", five, 2 * np.eye(2, 3))
    a.save()
    b.save()  # merges a's entry instead of dropping it
    c = AlignmentMemo(cache, "fp1")
    assert np.array_equal(c.get(b"img-a", five), np.eye(2, 3))
    assert np.array_equal(c.get(b"img-b", five), 2 * np.eye(2, 3))
    assert c.get(b"img-a", five + 1) is None  # other landmarks: another entry
    assert AlignmentMemo(cache, "fp2").get(b"img-a", five) is None  # per recognizer
