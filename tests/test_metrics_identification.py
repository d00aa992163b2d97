"""1:N search and identification metrics against dense / brute-force references."""
from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from occbench.errors import ConfigError
from occbench.metrics import identification as I
from occbench.metrics import (
    cmc,
    cmc_from_ranks,
    mate_ranks,
    rank_of_mate,
    topk_search,
    tpir_at_fpir,
    tpir_at_fpir_from_scores,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny blocks: intra-op threads only add sync overhead on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _int_embeddings(rng, n, d, distinct=None):
    """Small-integer float32 vectors: every dot product is exact, so ties are exact ties.
    With ``distinct`` the rows are drawn from that many templates (duplicate rows -> tied scores)."""
    if distinct is None:
        return rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    base = rng.integers(-2, 3, size=(distinct, d)).astype(np.float32)
    return base[rng.integers(0, distinct, size=n)]


def dense_topk(probes, gallery, k):
    """Reference: dense float64 similarity, stable argsort of -sim (ties -> lower gallery index)."""
    sim = probes.astype(np.float64) @ gallery.astype(np.float64).T
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sim, order, axis=1), order


# ---------------------------------------------------------------- topk_search


@pytest.mark.parametrize("probe_block,gallery_block", [(37, 1), (1, 301), (3, 7), (16, 50), (1000, 100000)])
def test_topk_matches_dense_random(probe_block, gallery_block):
    rng = np.random.default_rng(0)
    p, g = _unit(rng, 37, 16), _unit(rng, 301, 16)
    r = topk_search(p, g, k=10, probe_block=probe_block, gallery_block=gallery_block, device="cpu")
    ref_s, ref_i = dense_topk(p, g, 10)
    assert r.scores.dtype == np.float32 and r.indices.dtype == np.int64 and r.scores.shape == (37, 10)
    np.testing.assert_array_equal(r.indices, ref_i)
    np.testing.assert_allclose(r.scores, ref_s, atol=1e-5)


@pytest.mark.parametrize("k", [1, 4, 9, 23])
@pytest.mark.parametrize("probe_block,gallery_block", [(1, 1), (3, 7), (5, 4), (64, 64)])
def test_topk_exact_ties_lower_index_first(k, probe_block, gallery_block):
    rng = np.random.default_rng(k)
    p = _int_embeddings(rng, 11, 6)
    g = _int_embeddings(rng, 23, 6, distinct=5)  # ~5 distinct scores per probe over 23 entries
    r = topk_search(p, g, k=k, probe_block=probe_block, gallery_block=gallery_block, device="cpu")
    ref_s, ref_i = dense_topk(p, g, k)
    np.testing.assert_array_equal(r.indices, ref_i)
    np.testing.assert_array_equal(r.scores, ref_s)


def test_topk_all_same_scores_and_k_larger_than_gallery():
    g = np.tile(np.float32([[0.6, 0.8]]), (5, 1))
    p = np.float32([[1, 0], [0, 1]])
    r = topk_search(p, g, k=8, gallery_block=2, device="cpu")
    assert r.indices.tolist() == [[0, 1, 2, 3, 4, -1, -1, -1]] * 2
    assert np.all(np.isneginf(r.scores[:, 5:]))
    np.testing.assert_allclose(r.scores[:, :5], [[0.6] * 5, [0.8] * 5])
    r3 = topk_search(p, g, k=3, gallery_block=2, device="cpu")
    assert r3.indices.tolist() == [[0, 1, 2]] * 2


def test_topk_accepts_memmap_torch_and_float64(tmp_path):
    rng = np.random.default_rng(1)
    p, g = _unit(rng, 20, 8), _unit(rng, 90, 8)
    ref = topk_search(p, g, k=5, device="cpu")
    mm = np.lib.format.open_memmap(tmp_path / "g.npy", mode="w+", dtype=np.float32, shape=g.shape)
    mm[:] = g
    mm.flush()
    ro = np.load(tmp_path / "g.npy", mmap_mode="r")
    for probes, gallery in [(p, ro), (torch.from_numpy(p), torch.from_numpy(g)), (p.astype(np.float64), g)]:
        r = topk_search(probes, gallery, k=5, probe_block=6, gallery_block=13, device="cpu")
        np.testing.assert_array_equal(r.indices, ref.indices)
        np.testing.assert_allclose(r.scores, ref.scores, atol=1e-6)
    assert isinstance(r, tuple) and len(r) == 2  # unpacks as (scores, indices)


def test_topk_never_forms_more_than_one_block(monkeypatch):
    rng = np.random.default_rng(2)
    p, g = _unit(rng, 50, 8), _unit(rng, 1000, 8)
    shapes = []
    real_mm = torch.mm

    def spy(a, b, *args, **kw):
        shapes.append((a.shape[0], b.shape[1]))
        return real_mm(a, b, *args, **kw)

    monkeypatch.setattr(torch, "mm", spy)
    r = topk_search(p, g, k=3, probe_block=16, gallery_block=128, device="cpu")
    assert shapes and max(a for a, _ in shapes) <= 16 and max(b for _, b in shapes) <= 128
    assert sum(a * b for a, b in shapes) == 50 * 1000  # every pair scored exactly once
    np.testing.assert_array_equal(r.indices, dense_topk(p, g, 3)[1])


def test_topk_streaming_equals_all_at_once():
    rng = np.random.default_rng(3)
    p, g = _unit(rng, 64, 32), _unit(rng, 2000, 32)
    whole = topk_search(p, g, k=7, probe_block=64, gallery_block=2000, device="cpu")
    streamed = topk_search(p, g, k=7, probe_block=9, gallery_block=333, device="cpu")
    np.testing.assert_array_equal(streamed.indices, whole.indices)
    np.testing.assert_allclose(streamed.scores, whole.scores, atol=1e-6)


def test_topk_input_errors():
    p, g = np.zeros((2, 4), np.float32), np.eye(4, dtype=np.float32)
    with pytest.raises(ConfigError, match="dimension"):
        topk_search(p, np.zeros((3, 5), np.float32), k=1)
    with pytest.raises(ConfigError, match="k must be"):
        topk_search(p, g, k=0)
    with pytest.raises(ConfigError, match="empty"):
        topk_search(p, np.zeros((0, 4), np.float32), k=1)
    with pytest.raises(ConfigError, match="2-D"):
        topk_search(np.zeros(4, np.float32), g, k=1)
    bad = g.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ConfigError, match="gallery row 2"):
        topk_search(p, bad, k=1, gallery_block=2, device="cpu")
    with pytest.raises(ConfigError, match="device"):
        topk_search(p, g, k=1, device="tpu")
    with pytest.raises(ConfigError, match="block"):
        topk_search(p, g, k=1, probe_block=-1, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_topk_cuda_requested_without_cuda():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        topk_search(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32), k=1, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_topk_cuda_matches_cpu():
    rng = np.random.default_rng(4)
    p, g = _int_embeddings(rng, 40, 8), _int_embeddings(rng, 700, 8, distinct=30)
    a = topk_search(p, g, k=12, probe_block=7, gallery_block=97, device="cpu")
    b = topk_search(p, g, k=12, probe_block=7, gallery_block=97, device="cuda")
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)


# ---------------------------------------------------------------- ranks / CMC


def naive_rank(sim_row, probe_label, gallery_labels):
    mate_scores = [s for s, l in zip(sim_row, gallery_labels) if l == probe_label]
    if not mate_scores:
        return np.nan
    m = max(mate_scores)
    return 1 + sum(1 for s, l in zip(sim_row, gallery_labels) if l != probe_label and s >= m)


def _id_problem(seed, n_probe=60, n_gal=80, n_ids=25, d=5, distinct=12):
    rng = np.random.default_rng(seed)
    gl = rng.integers(0, n_ids, size=n_gal)
    pl = rng.integers(0, n_ids + 5, size=n_probe)  # ids >= n_ids (and missing ones) are non-mated
    return _int_embeddings(rng, n_probe, d), _int_embeddings(rng, n_gal, d, distinct), pl, gl


@pytest.mark.parametrize("seed", range(3))
def test_rank_of_mate_matches_naive(seed):
    p, g, pl, gl = _id_problem(seed)
    sim = p.astype(np.float64) @ g.T
    ranks = rank_of_mate(sim, pl, gl)
    ref = np.array([naive_rank(sim[i], pl[i], gl) for i in range(len(pl))])
    np.testing.assert_array_equal(ranks, ref)  # NaN == NaN under assert_array_equal
    assert np.isnan(ranks).any() and (ranks > 1).any()


def test_ties_count_against_the_probe():
    sim = np.array([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1]])
    assert rank_of_mate(sim, ["a", "b"], ["a", "b", "c"]).tolist() == [2.0, 2.0]
    r = topk_search(np.float32([[1, 0]]), np.float32([[1, 0], [1, 0], [0, 1]]), k=3)
    # the mate (row 0) comes first in the search order but ranks after the tied non-mate
    assert r.indices.tolist() == [[0, 1, 2]]
    assert mate_ranks(r.scores, r.indices, ["a"], ["a", "b", "c"]).ranks.tolist() == [2.0]


@pytest.mark.parametrize("seed,k", [(0, 81), (1, 6), (2, 3)])
def test_topk_ranks_and_cmc_match_dense(seed, k):
    p, g, pl, gl = _id_problem(seed)
    sim = p.astype(np.float64) @ g.T
    dense = rank_of_mate(sim, pl, gl)
    top = topk_search(p, g, k=k, probe_block=13, gallery_block=17, device="cpu")
    m = mate_ranks(top.scores, top.indices, pl, gl)
    max_rank = k if k >= len(gl) else k - 1
    mated = ~np.isnan(dense)
    np.testing.assert_array_equal(m.has_mate, mated)
    # certified ranks agree with the dense ones; everything else is a miss beyond max_rank or flagged
    fin = np.isfinite(m.ranks)
    np.testing.assert_array_equal(m.ranks[fin], dense[fin])
    assert np.all((dense[mated & ~fin] > max_rank) | m.uncertain[mated & ~fin])
    res = cmc(top.scores, top.indices, pl, gl)
    assert res.max_rank == max_rank and res.n_mated == mated.sum() and res.n_nonmated == (~mated).sum()
    ref_curve = [np.mean(dense[mated] <= r) for r in range(1, max_rank + 1)]
    if res.n_uncertain == 0:
        assert res.curve == pytest.approx(ref_curve)
    else:  # uncertain probes are counted as misses: never above the dense answer
        assert np.all(np.array(res.curve) <= np.array(ref_curve) + 1e-12)
    np.testing.assert_allclose(cmc_from_ranks(dense, max_rank), ref_curve)


def test_uncertain_rank_when_mate_ties_the_last_listed_score():
    # gallery: a non-mate 0.9, the mate 0.5, two more non-mates at 0.5 -> dense rank (ties against) = 4
    g = np.float32([[0.9, 0], [0.5, 0], [0.5, 0], [0.5, 0]])
    gl = np.array(["x", "a", "y", "z"])
    p = np.float32([[1, 0], [0, 1]])  # second probe "q" is non-mated
    top = topk_search(p, g, k=2)  # lists [x, a]: the unlisted y, z tie with the mate
    m = mate_ranks(top.scores[:1], top.indices[:1], ["a"], gl)
    assert m.uncertain.tolist() == [True] and m.ranks.tolist() == [np.inf]
    assert cmc(top.scores[:1], top.indices[:1], ["a"], gl).n_uncertain == 1
    pt = tpir_at_fpir(top.scores, top.indices, ["a", "q"], gl, 0.5)
    assert pt.n_uncertain == 1 and pt.tpir == 0.0
    full = topk_search(p[:1], g, k=4)
    assert mate_ranks(full.scores, full.indices, ["a"], gl).ranks.tolist() == [4.0]
    assert rank_of_mate(p[:1] @ g.T, ["a"], gl).tolist() == [4.0]


def test_cmc_argument_checks():
    s, i = np.float32([[0.9, 0.5]]), np.int64([[0, 1]])
    with pytest.raises(ConfigError, match="k >= r \\+ 1"):
        cmc(s, i, ["a"], ["a", "b", "c"], max_rank=2)
    assert cmc(s, i, ["a"], ["a", "b"], max_rank=2).curve == (1.0, 1.0)  # whole gallery listed
    with pytest.raises(ConfigError, match="no probe has a mate"):
        cmc(s, i, ["q"], ["a", "b", "c"])
    with pytest.raises(ConfigError, match="gallery rows"):
        cmc(s, np.int64([[0, 7]]), ["a"], ["a", "b", "c"])
    with pytest.raises(ConfigError, match="rank must be in"):
        cmc(s, i, ["a"], ["a", "b", "c"]).rate(2)
    with pytest.raises(ConfigError, match="k >= 1"):
        mate_ranks(np.zeros((1, 0)), np.zeros((1, 0), np.int64), ["a"], ["a"])
    with pytest.raises(ConfigError, match="k must be"):
        topk_search(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32), k="2")


# ---------------------------------------------------------------- open-set TPIR @ FPIR


def naive_tpir(sim, pl, gl, fpir, rank):
    mated = [i for i in range(len(pl)) if pl[i] in set(gl.tolist())]
    non = [i for i in range(len(pl)) if i not in mated]
    top1 = [max(sim[i]) for i in non]
    ranks = {i: naive_rank(sim[i], pl[i], gl) for i in mated}
    mate = {i: max(s for s, l in zip(sim[i], gl) if l == pl[i]) for i in mated}
    best = None
    for t in [np.inf] + sorted(set(sim.ravel().tolist())):
        fp = sum(1 for s in top1 if s >= t) / len(non)
        tp = sum(1 for i in mated if ranks[i] <= rank and mate[i] >= t) / len(mated)
        if fp <= fpir and (best is None or tp > best[0]):
            best = (tp, fp)
    return best


@pytest.mark.parametrize("seed,rank", [(0, 1), (1, 1), (2, 3)])
def test_tpir_at_fpir_matches_brute_force(seed, rank):
    p, g, pl, gl = _id_problem(seed)
    sim = p.astype(np.float64) @ g.T
    top = topk_search(p, g, k=rank + 1, probe_block=11, gallery_block=9, device="cpu")
    targets = [0.0, 0.01, 0.1, 0.25, 0.5, 1.0]
    points = tpir_at_fpir(top.scores, top.indices, pl, gl, targets, rank=rank)
    n_non = int((~np.isin(pl, gl)).sum())
    for t, pt in zip(targets, points):
        ref_tp, _ = naive_tpir(sim, pl, gl, t, rank)
        assert pt.tpir == pytest.approx(ref_tp) and pt.fpir <= t
        assert pt.n_nonmated == n_non and pt.rank == rank
        assert pt.reachable == (t == 0 or t >= 1 / n_non)


def test_tpir_strict_threshold_with_ties_and_unreachable():
    # non-mated top-1 scores 0.8, 0.8, 0.2 tie at the top: FPIR 1/3 would need splitting the tie
    top1_non = [0.8, 0.8, 0.2]
    pt = tpir_at_fpir_from_scores([1, 1, 2, np.inf], [0.9, 0.8, 0.95, np.nan], top1_non, 0.4)
    assert (pt.fpir, pt.threshold, pt.tpir) == (0.0, 0.9, 0.25)  # 0.95 is rank 2: not counted
    pt = tpir_at_fpir_from_scores([1, 1, 2, np.inf], [0.9, 0.8, 0.95, np.nan], top1_non, 2 / 3)
    assert (pt.fpir, pt.tpir) == (2 / 3, 0.5)
    pt = tpir_at_fpir_from_scores([1, 1, 2, np.inf], [0.9, 0.8, 0.95, np.nan], top1_non, 0.5, rank=2)
    assert pt.tpir == 0.5  # rank-2 hit 0.95 counted; 0.8 is not accepted (would give FPIR 2/3)
    pt = tpir_at_fpir_from_scores([1], [0.9], top1_non, 0.1)
    assert not pt.reachable and pt.fpir == 0.0 and pt.tpir == 1.0
    with pytest.raises(ConfigError, match="NaN"):
        tpir_at_fpir_from_scores([np.nan], [0.9], top1_non, 0.1)
    with pytest.raises(ConfigError, match="mated and non-mated"):
        tpir_at_fpir_from_scores([1], [0.9], [], 0.1)


def test_tpir_at_fpir_rank_needs_longer_lists():
    s, i = np.float32([[0.9], [0.4]]), np.int64([[0], [1]])
    with pytest.raises(ConfigError, match="larger k"):
        tpir_at_fpir(s, i, ["a", "q"], ["a", "b"], 0.1)


def test_docstring_examples():
    assert doctest.testmod(I, raise_on_error=False).failed == 0
