"""All-to-all streamed TAR@FAR against a dense brute-force reference (exact, ties included)."""
from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

from occbench.errors import ConfigError
from occbench.metrics import alltoall as A
from occbench.metrics.alltoall import all_to_all_tar_at_far, impostors_needed
from occbench.metrics.verification import strict_operating_point


@pytest.fixture(autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _int_set(rng, n, d, n_ids, distinct=None):
    """Small-integer float32 embeddings: every dot product is exact, so ties are real ties."""
    if distinct is None:
        x = rng.integers(-2, 3, size=(n, d))
    else:
        x = rng.integers(-2, 3, size=(distinct, d))[rng.integers(0, distinct, n)]
    return x.astype(np.float32), rng.integers(0, n_ids, n).astype(str)


def _dense(p, pl, g, gl, p_ok=None, g_ok=None, pk=None, gk=None, fte=-1e30):
    s = (p.astype(np.float64) @ g.astype(np.float64).T)
    if p_ok is not None:
        s[~p_ok] = fte
    if g_ok is not None:
        s[:, ~g_ok] = fte
    same = pl[:, None] == gl[None, :]
    valid = np.ones_like(same)
    if pk is not None:
        valid &= pk[:, None] != gk[None, :]
    return s[same & valid], s[~same]


FARS = [1e-1, 3e-2, 1e-2, 2e-3, 1e-3, 1.7e-4, 1e-4]


@pytest.mark.parametrize("seed,distinct,blocks", [(0, None, (7, 13)), (1, 6, (5, 9)), (2, 3, (64, 64)),
                                                  (3, 40, (1, 1000)), (4, None, (1000, 3))])
def test_streamed_equals_dense_reference_exactly(seed, distinct, blocks):
    rng = np.random.default_rng(seed)
    p, pl = _int_set(rng, 83, 6, 9, distinct)
    g, gl = _int_set(rng, 121, 6, 11, distinct)
    r = all_to_all_tar_at_far(p, pl, g, gl, FARS, probe_block=blocks[0], gallery_block=blocks[1])
    pos, neg = _dense(p, pl, g, gl)
    assert (r.n_genuine, r.n_impostor) == (pos.size, neg.size)
    assert sorted(r.genuine_scores.tolist()) == sorted(pos.tolist())
    for t in FARS:
        got = r.point(t)
        if 1.0 / neg.size > t:
            assert not got.measurable and got.tar is None
            assert f"{impostors_needed(t):,}" in got.note and f"only {neg.size:,} impostor" in got.note
            continue
        ref = strict_operating_point(pos, neg, t)
        assert got.measurable
        assert (got.tar, got.far, got.threshold) == (ref.tar, ref.far, ref.threshold), t
        assert got.n_accepted_impostors == round(ref.far * neg.size)


def test_ties_at_the_boundary_are_rejected_together():
    # impostor scores 3, 2, 2, 2, 1 (x N): at c = 2 the third-highest (2) is tied with higher-ranked ones
    g = np.eye(4, dtype=np.float32)
    p = np.array([[3, 0, 0, 0], [0, 2, 0, 0], [0, 2, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 2.5]],
                 np.float32)
    pl = np.array(["x", "y", "y", "y", "y", "w"])
    gl = np.array(["a", "b", "c", "w"])
    r = all_to_all_tar_at_far(p, pl, g, gl, [2 / 23, 4 / 23], probe_block=2, gallery_block=3)
    pos, neg = _dense(p, pl, g, gl)
    for t in (2 / 23, 4 / 23):
        ref = strict_operating_point(pos, neg, t)
        got = r.point(t)
        assert (got.tar, got.far, got.threshold) == (ref.tar, ref.far, ref.threshold)
    assert r.point(2 / 23).far == 1 / 23  # only the 3 is accepted: the three 2s go together


def test_failures_to_enrol_get_the_lowest_score():
    rng = np.random.default_rng(5)
    p, pl = _int_set(rng, 60, 5, 6)
    g, gl = _int_set(rng, 70, 5, 7)
    p_ok = rng.random(60) > 0.2
    g_ok = rng.random(70) > 0.2
    p[~p_ok] = np.nan  # ignored: failed rows have no embedding
    r = all_to_all_tar_at_far(p, pl, g, gl, [0.05, 1e-2, 1e-3], probe_ok=p_ok, gallery_ok=g_ok, probe_block=8,
                              gallery_block=16)
    pos, neg = _dense(np.nan_to_num(p), pl, g, gl, p_ok, g_ok)
    assert (r.n_genuine, r.n_impostor, r.n_fte_probes, r.n_fte_gallery) == (
        pos.size, neg.size, int((~p_ok).sum()), int((~g_ok).sum()))
    for t in (0.05, 1e-2, 1e-3):
        ref = strict_operating_point(pos, neg, t)
        got = r.point(t)
        assert (got.tar, got.far, got.threshold) == (ref.tar, ref.far, ref.threshold)
    # a failure is never accepted, even when every finite impostor is
    r_all = all_to_all_tar_at_far(p, pl, g, gl, [0.999], probe_ok=p_ok, gallery_ok=g_ok)
    n_finite_gen = int(np.sum(pos > -1e29))
    assert r_all.point(0.999).tar == n_finite_gen / pos.size < 1.0


def test_self_pairs_are_excluded():
    rng = np.random.default_rng(7)
    g, gl = _int_set(rng, 40, 4, 8)
    gk = np.array([f"img{i}" for i in range(40)])
    p = g + rng.integers(-1, 2, size=g.shape).astype(np.float32)  # "occluded" copies of the gallery
    r = all_to_all_tar_at_far(p, gl, g, gl, [0.1, 0.01], probe_keys=gk, gallery_keys=gk, probe_block=7,
                              gallery_block=9)
    pos, neg = _dense(p, gl, g, gl, pk=gk, gk=gk)
    assert r.n_excluded_self == 40 and r.n_genuine == pos.size
    for t in (0.1, 0.01):
        ref = strict_operating_point(pos, neg, t)
        assert (r.point(t).tar, r.point(t).far) == (ref.tar, ref.far)
    with pytest.raises(ConfigError, match="different identities"):
        all_to_all_tar_at_far(p, np.roll(gl, 1), g, gl, 0.1, probe_keys=gk, gallery_keys=gk)


def test_float_embeddings_match_dense_on_the_same_scores():
    # random unit vectors: the reference sorts the very float32 scores the stream produced (one block)
    rng = np.random.default_rng(11)
    p = rng.normal(size=(200, 32)).astype(np.float32)
    g = rng.normal(size=(300, 32)).astype(np.float32)
    pl, gl = rng.integers(0, 30, 200), rng.integers(0, 30, 300)
    r = all_to_all_tar_at_far(p, pl, g, gl, [1e-2, 1e-3, 1e-4], probe_block=200, gallery_block=300)
    s = (torch.from_numpy(p) @ torch.from_numpy(g).T).numpy().astype(np.float64)
    same = pl[:, None] == gl[None, :]
    for t in (1e-2, 1e-3, 1e-4):
        ref = strict_operating_point(s[same], s[~same], t)
        assert (r.point(t).tar, r.point(t).far, r.point(t).threshold) == (ref.tar, ref.far, ref.threshold)


def test_impostors_needed_and_refusal():
    assert impostors_needed(1e-4) == 10_000 and impostors_needed(1e-6) == 1_000_000
    assert impostors_needed(0.3) == 4  # 1/4 <= 0.3 < 1/3
    g = np.eye(3, dtype=np.float32)
    r = all_to_all_tar_at_far(g, ["a", "b", "c"], g, ["a", "b", "c"], [1e-4, 0.5])
    pt = r.point(1e-4)
    assert not pt.measurable and pt.impostors_needed == 10_000
    assert pt.note == "n/a: only 6 impostor pairs, so FAR 0.0001 cannot be measured (needs ≥ 10,000)"
    # qa-h: worded like the 1:1 note, so `occbench eval` adds its hint (a larger --limit) here too
    from occbench.commands.eval import _hint

    assert "a larger --limit" in _hint(pt.note)
    assert r.point(0.5).measurable and r.to_dict()["points"][0]["measurable"] is False


def test_input_checks():
    g = np.eye(3, dtype=np.float32)
    with pytest.raises(ConfigError, match="dimension"):
        all_to_all_tar_at_far(np.ones((2, 4), np.float32), [1, 2], g, [1, 2, 3])
    with pytest.raises(ConfigError, match="FAR targets"):
        all_to_all_tar_at_far(g, [1, 2, 3], g, [1, 2, 3], [0.0])
    bad = g.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ConfigError, match="row 1 has a NaN"):
        all_to_all_tar_at_far(bad, [1, 2, 3], g, [1, 2, 3], 0.5)
    with pytest.raises(ConfigError, match="one label per row"):
        all_to_all_tar_at_far(g, [1, 2], g, [1, 2, 3])


def test_doctest():
    assert doctest.testmod(A, raise_on_error=True).failed == 0


@pytest.mark.parametrize("distinct", [2, 3])
def test_heavy_ties_in_one_block_use_the_sampled_floor(distinct):
    # few distinct scores and one block: the floor from the block sample is itself the (c+1)-th score
    rng = np.random.default_rng(distinct)
    p, pl = _int_set(rng, 90, 4, 5, distinct)
    g, gl = _int_set(rng, 110, 4, 6, distinct)
    fars = [0.3, 0.1, 0.05, 1e-2, 1e-3]
    r = all_to_all_tar_at_far(p, pl, g, gl, fars, probe_block=90, gallery_block=110)
    pos, neg = _dense(p, pl, g, gl)
    for t in fars:
        ref = strict_operating_point(pos, neg, t)
        assert (r.point(t).tar, r.point(t).far, r.point(t).threshold) == (ref.tar, ref.far, ref.threshold)
