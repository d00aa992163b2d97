"""1:N search backends (torch exact, FAISS exact / approximate), recall@k, and distractor sweeps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from occbench.errors import ConfigError
from occbench.metrics import rank_of_mate, topk_search, tpir_at_fpir
from occbench.metrics.identification import _block_topk
from occbench.search import (
    distractor_sweep,
    plot_distractor_sweep,
    recall_at_k,
    run_distractor_sweep,
    search,
    segment_max_scores,
)


def _dense_topk(p, g, k):
    sim = np.asarray(p, np.float64) @ np.asarray(g, np.float64).T
    o = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return o


def _tied(seed, n_p, n_g, d=6, levels=(-1, 0, 1)):
    """Small-integer vectors: every dot product is exact in float32, so ties are real ties."""
    rng = np.random.default_rng(seed)
    return (rng.choice(levels, (n_p, d)).astype(np.float32), rng.choice(levels, (n_g, d)).astype(np.float32))


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_block_topk_chunked_matches_stable_sort_with_heavy_ties(chunk):
    g = torch.Generator().manual_seed(chunk)
    for _ in range(60):
        p, n = int(torch.randint(1, 12, (1,), generator=g)), int(torch.randint(1, 2500, (1,), generator=g))
        kk = min(int(torch.randint(1, 12, (1,), generator=g)), n)
        sim = torch.randint(0, int(torch.randint(2, 40, (1,), generator=g)), (p, n), generator=g).float()
        rows, v, i = _block_topk(sim, kk, chunk=chunk)
        ref = torch.sort(sim, dim=1, descending=True, stable=True)
        assert rows.tolist() == list(range(p))
        assert torch.equal(i, ref.indices[:, :kk]) and torch.equal(v, ref.values[:, :kk])


def test_block_topk_floor_skips_rows_that_cannot_change():
    sim = torch.tensor([[5.0] * 300, list(range(300))]).float()
    rows, v, i = _block_topk(sim, 3, floor=torch.tensor([5.0, 10.0]), chunk=8)
    # row 0: nothing above its floor (a 5.0 would tie with a running entry of a lower index and lose)
    assert rows.tolist() == [1] and i.tolist() == [[299, 298, 297]]


@pytest.mark.parametrize("seed", range(6))
def test_topk_search_ties_across_blocks_match_dense_argsort(seed):
    p, g = _tied(seed, 37, 3000)
    k = 1 + seed * 3
    r = topk_search(p, g, k, probe_block=16, gallery_block=700)
    assert (r.indices == _dense_topk(p, g, k)).all()


def test_topk_search_reports_a_nan_gallery_row_in_a_chunked_block():
    g = np.random.default_rng(0).standard_normal((5000, 8)).astype(np.float32)
    g[4321, 3] = np.nan
    with pytest.raises(ConfigError, match="gallery row 4321"):
        topk_search(g[:4], g, 5, gallery_block=4096)


def test_topk_search_overflow_is_an_error_not_a_wrong_answer():
    g = np.full((3000, 4), 3e19, np.float32)
    with pytest.raises(ConfigError, match="overflow"):
        topk_search(g[:2], g, 3)


def test_recall_at_k_by_hand():
    assert recall_at_k([[1, 2, 3]], [[3, 2, 1]]) == 1.0
    assert recall_at_k([[1, 2, -1], [7, 8, 9]], [[1, 5, -1], [9, 1, 2]]) == pytest.approx((1 / 2 + 1 / 3) / 2)
    with pytest.raises(ConfigError):
        recall_at_k(np.zeros((0, 2)), np.zeros((0, 2)))


def test_search_rejects_unknown_backend():
    with pytest.raises(ConfigError, match="faiss-ivf"):
        search(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32), 1, backend="annoy")


faiss = pytest.importorskip("faiss", reason="faiss is an optional extra (occbench[faiss])")


@pytest.mark.parametrize("seed", range(5))
def test_faiss_exact_equals_torch_exact_with_ties(seed):
    p, g = _tied(seed, 50, 2500)
    k = 4 + seed
    f = search(p, g, k, backend="faiss", device="cpu")
    t = search(p, g, k, backend="torch", device="cpu")
    assert f.exact and f.recall_at_k is None
    assert (f.topk.indices == t.topk.indices).all()
    assert np.array_equal(f.topk.scores, t.topk.scores)
    assert f.params["boundary_ties_redone"] > 0  # the data do tie across the k-th place


def test_faiss_exact_equals_torch_on_random_embeddings_and_pads_small_galleries():
    rng = np.random.default_rng(3)
    g = rng.standard_normal((4000, 32)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    p = g[:100] + 0.1 * rng.standard_normal((100, 32)).astype(np.float32)
    f, t = search(p, g, 10, backend="faiss"), search(p, g, 10, backend="torch")
    assert (f.topk.indices == t.topk.indices).all()
    np.testing.assert_allclose(f.topk.scores, t.topk.scores, atol=1e-5)
    small = search(p[:3], g[:4], 6, backend="faiss")
    assert (small.topk.indices[:, 4:] == -1).all() and np.isneginf(small.topk.scores[:, 4:]).all()
    assert (small.topk.indices[:, :4] == topk_search(p[:3], g[:4], 6).indices[:, :4]).all()


def test_faiss_rejects_nan_like_torch():
    g = np.ones((10, 4), np.float32)
    g[7, 0] = np.inf
    with pytest.raises(ConfigError, match="gallery row 7"):
        search(g[:2], g, 3, backend="faiss")


@pytest.mark.parametrize("backend,params", [("faiss-ivf", {"nlist": 16, "nprobe": 1}),
                                            ("faiss-hnsw", {"hnsw_m": 4, "ef_search": 10})])
def test_approximate_search_reports_recall_against_exact_on_a_sample(backend, params):
    rng = np.random.default_rng(1)
    g = rng.standard_normal((3000, 16)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    p = rng.standard_normal((400, 16)).astype(np.float32)
    r = search(p, g, 10, backend=backend, recall_sample=150, seed=5, **params)
    assert not r.exact and r.recall_sample == 150
    # recompute recall on the same seeded sample independently
    sample = np.sort(np.random.default_rng(5).choice(400, size=150, replace=False))
    exact = _dense_topk(p[sample], g, 10)
    want = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(r.topk.indices[sample], exact)])
    assert r.recall_at_k == pytest.approx(want)
    assert 0 < r.recall_at_k < 1  # a deliberately weak index: recall is measured, not assumed
    d = r.to_dict()
    assert d["exact"] is False and d["recall_at_k"] == r.recall_at_k and d["backend"] == backend
    # within the returned list, ties and order follow (score desc, index asc)
    s = r.topk.scores
    assert (np.diff(s, axis=1) <= 0).all()


# --------------------------------------------------------------------------- distractor sweep


def _sweep_data(seed=0):
    rng = np.random.default_rng(seed)
    d = 5
    levels = np.array([-1, 0, 1, 2], np.float32)
    gallery = rng.choice(levels, (20, d))
    labels_g = np.arange(20)
    probes = rng.choice(levels, (60, d))
    labels_p = np.concatenate([rng.integers(0, 20, 45), 100 + np.arange(15)])  # 15 non-mated
    probes[:45] = gallery[labels_p[:45]] + rng.choice([0, 0, 1], (45, d))
    distractors = rng.choice(levels, (300, d))
    return probes.astype(np.float32), gallery.astype(np.float32), labels_p, labels_g, distractors.astype(np.float32)


def test_segment_max_scores_by_brute_force():
    p, _, _, _, dis = _sweep_data()
    sizes = [0, 1, 7, 100, 300]
    got = segment_max_scores(p, dis, sizes, gallery_block=64, probe_block=16)
    sim = p @ dis.T
    for j, n in enumerate(sizes):
        want = sim[:, :n].max(axis=1) if n else np.full(len(p), -np.inf)
        np.testing.assert_array_equal(got[:, j], want.astype(np.float32))


def test_distractor_sweep_equals_full_search_at_every_size():
    p, g, lp, lg, dis = _sweep_data(1)
    sizes = [0, 10, 50, 300]
    res = run_distractor_sweep(p, g, lp, lg, dis, sizes, fpir=[0.1, 0.5])
    assert [pt.n_distractors for pt in res.points] == sizes and res.n_nonmated == 15
    for pt, n in zip(res.points, sizes):
        full = np.concatenate([g, dis[:n]])
        full_labels = np.concatenate([lg, np.full(n, -1)])  # distractors never match
        sim = p @ full.T
        mated = np.isin(lp, lg)
        ranks = rank_of_mate(sim[mated], lp[mated], full_labels)
        assert pt.rank1 == pytest.approx(np.mean(ranks == 1))
        top = topk_search(p, full, min(5, len(full)))
        ops = tpir_at_fpir(top.scores, top.indices, lp, full_labels, [0.1, 0.5], rank=1)
        assert pt.tpir == pytest.approx(tuple(o.tpir for o in ops))
        assert pt.threshold == pytest.approx(tuple(o.threshold for o in ops))
    assert res.points[0].rank1 >= res.points[-1].rank1  # distractors only ever take hits away


def test_distractor_sweep_checks_inputs_and_plots(tmp_path):
    p, g, lp, lg, dis = _sweep_data(2)
    with pytest.raises(ConfigError, match=r"\[0, 300\]"):
        run_distractor_sweep(p, g, lp, lg, dis, [10, 301])
    top = topk_search(p, g, 1)
    with pytest.raises(ConfigError, match="k >= 2"):
        distractor_sweep(top.scores, top.indices, lp, lg, np.zeros((60, 1)), [0])
    res = run_distractor_sweep(p, g, lp, lg, dis, [0, 30, 300], fpir=0.1)
    out = plot_distractor_sweep(res, tmp_path / "sweep.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    df = res.to_frame()
    assert list(df.columns) == ["n_distractors", "gallery_size", "rank1_rate", "tpir_at_fpir_0.1"]
    assert df.gallery_size.tolist() == [20, 50, 320]


@pytest.mark.parametrize("seed", range(4))
def test_block_topk_with_floors_merges_like_a_stable_sort(seed):
    """Rows with few chunks above their floor take the values of those chunks only (the sparse path),
    the others the chosen-chunk path: merged into a running top-k, both equal a dense stable sort."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(40):
        p, n, k = int(torch.randint(1, 30, (1,), generator=g)), int(torch.randint(200, 3000, (1,), generator=g)), \
            int(torch.randint(1, 12, (1,), generator=g))
        hi = int(torch.randint(3, 60, (1,), generator=g))
        lo = int(torch.randint(0, hi, (1,), generator=g))  # high floors: few chunks above them
        run = torch.randint(lo, hi + 1, (p, k), generator=g).float().sort(dim=1, descending=True).values
        sim = torch.randint(0, hi, (p, n), generator=g).float()
        rows, v, i = _block_topk(sim, min(k, n), floor=run[:, -1], chunk=int(torch.randint(1, 80, (1,), generator=g)))
        # the running entries come first (lower gallery indices): merge as topk_search does
        got_v, got_i = run.clone(), torch.arange(k).expand(p, k).clone()
        if rows.numel():
            cv = torch.cat([run[rows], v], 1)
            ci = torch.cat([torch.arange(k).expand(rows.numel(), k), i + k], 1)
            o = torch.sort(cv, dim=1, descending=True, stable=True).indices[:, :k]
            got_v[rows], got_i[rows] = cv.gather(1, o), ci.gather(1, o)
        dense = torch.cat([run, sim], 1)
        ref = torch.sort(dense, dim=1, descending=True, stable=True)
        assert torch.equal(got_i, ref.indices[:, :k]) and torch.equal(got_v, ref.values[:, :k])
        assert rows.tolist() == sorted(rows.tolist())


@pytest.mark.parametrize("seed", range(3))
def test_topk_search_many_blocks_random_and_tied(seed):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((20000, 8)).astype(np.float32)
    g[rng.integers(0, 20000, 3000)] = g[rng.integers(0, 20000, 3000)]  # exact duplicates: ties everywhere
    p = rng.standard_normal((50, 8)).astype(np.float32)
    for k in (1, 5, 21):
        r = topk_search(p, g, k, probe_block=16, gallery_block=1500)
        assert (r.indices == _dense_topk(p, g, k)).all()


@pytest.mark.parametrize("layout", ["float32", "float64", "strided"])
def test_faiss_gallery_in_any_layout_gives_the_same_result_and_names_a_bad_row(layout, monkeypatch):
    """A float32 C-contiguous gallery is checked chunk by chunk and added in one call; any other layout is
    converted and added chunk by chunk. Same results, same error, whatever the path."""
    from occbench.search import faiss_backend

    monkeypatch.setattr(faiss_backend, "_ADD_CHUNK", 64)  # several chunks
    rng = np.random.default_rng(3)
    g32 = rng.standard_normal((500, 16)).astype(np.float32)
    p = g32[:20] + 0.05 * rng.standard_normal((20, 16)).astype(np.float32)
    g = {"float32": g32, "float64": g32.astype(np.float64),
         "strided": np.repeat(g32, 2, axis=1)[:, ::2]}[layout]
    assert np.array_equal(np.asarray(g, np.float32), g32) and (layout != "strided" or not g.flags.c_contiguous)
    ref = search(p, g32, 7, backend="torch")
    got = search(p, g, 7, backend="faiss")
    assert (got.topk.indices == ref.topk.indices).all()
    bad = np.array(g, copy=True) if layout != "strided" else np.repeat(g32, 2, axis=1)[:, ::2]
    bad[300, 5] = np.nan  # in the fifth chunk
    with pytest.raises(ConfigError, match="gallery row 300"):
        search(p, bad, 7, backend="faiss")
