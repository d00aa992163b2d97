"""FROM's K x K patterns: count, order, validity, and IoU matching against a brute-force reference."""
from __future__ import annotations

import numpy as np
import pytest

from occbench.errors import ConfigError
from occbench.synth import patterns as P

SIZES = [(112, 112), (112, 96), (100, 77), (37, 53)]


def _reference_grids(h, w, k):
    """FROM-style reference: vertex list row-major, start x end loop, pixel rectangles (clean first)."""
    xs = [i * w // k for i in range(k + 1)]
    ys = [i * h // k for i in range(k + 1)]
    verts = [(y, x) for y in ys for x in xs]
    grids = [np.zeros((h, w))]
    for s in verts:
        for e in verts:
            if e[0] > s[0] and e[1] > s[1]:
                g = np.zeros((h, w))
                g[s[0]:e[0], s[1]:e[1]] = 1.0
                grids.append(g)
    return grids


def _reference_label(grids, mask01):
    scores = [np.sum(g * mask01) / (np.sum(np.clip(g + mask01, 0, 1)) + 1e-10) for g in grids]
    return int(np.argmax(scores))


def _blob_mask(rng, h, w):
    yy, xx = np.mgrid[:h, :w]
    m = np.zeros((h, w), bool)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(3, h / 2), rng.uniform(3, w / 2)
        m |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    if rng.random() < 0.3:  # some rectangles too
        y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
        m[y0:rng.integers(y0 + 1, h + 1), x0:rng.integers(x0 + 1, w + 1)] = True
    return m


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_counts(k):
    assert len(P.enumerate_patterns(k)) == (k * (k + 1) // 2) ** 2 + 1 == P.n_patterns(k)


def test_known_counts():
    assert len(P.enumerate_patterns(4)) == 101
    assert len(P.enumerate_patterns(5)) == 226


def test_k3_order_by_hand():
    expected_head = [
        [0, 0, 0, 0],  # clean
        # start vertex (0,0); end vertices row-major
        [0, 0, 1, 1], [0, 0, 1, 2], [0, 0, 1, 3],
        [0, 0, 2, 1], [0, 0, 2, 2], [0, 0, 2, 3],
        [0, 0, 3, 1], [0, 0, 3, 2], [0, 0, 3, 3],
        # start (0,1)
        [0, 1, 1, 2], [0, 1, 1, 3], [0, 1, 2, 2], [0, 1, 2, 3], [0, 1, 3, 2], [0, 1, 3, 3],
        # start (0,2)
        [0, 2, 1, 3], [0, 2, 2, 3], [0, 2, 3, 3],
        # start (0,3) has none; start (1,0)
        [1, 0, 2, 1], [1, 0, 2, 2], [1, 0, 2, 3], [1, 0, 3, 1], [1, 0, 3, 2], [1, 0, 3, 3],
    ]
    p = P.enumerate_patterns(3)
    np.testing.assert_array_equal(p[: len(expected_head)], expected_head)
    np.testing.assert_array_equal(p[-1], [2, 2, 3, 3])
    assert p.dtype.kind == "i"


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_rectangles_valid_unique_and_ordered(k):
    p = P.enumerate_patterns(k)
    np.testing.assert_array_equal(p[0], [0, 0, 0, 0])
    r = p[1:]
    assert ((r[:, 0] < r[:, 2]) & (r[:, 1] < r[:, 3])).all()
    assert ((r >= 0) & (r <= k)).all()
    assert len({tuple(x) for x in p}) == len(p)
    # start vertex row-major, then end vertex row-major
    start = r[:, 0] * (k + 1) + r[:, 1]
    end = r[:, 2] * (k + 1) + r[:, 3]
    order = np.lexsort((end, start))
    np.testing.assert_array_equal(order, np.arange(len(r)))


def test_enumerate_returns_a_copy():
    p = P.enumerate_patterns(3)
    p[1] = 99
    assert P.enumerate_patterns(3)[1, 0] == 0


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_pattern_masks_match_reference_and_self_match(k, size):
    masks = P.pattern_masks(k, size)
    ref = np.stack(_reference_grids(*size, k)).astype(bool)
    np.testing.assert_array_equal(masks, ref)
    assert not masks.flags.writeable
    # every pattern's own pixel region matches that pattern (bool and 0/255 inputs)
    labels = P.match_patterns(masks, k)
    np.testing.assert_array_equal(labels, np.arange(len(masks)))
    for p in (1, len(masks) // 2, len(masks) - 1):
        assert P.match_pattern(masks[p].astype(np.uint8) * 255, k) == p


def test_from_boundaries_112x96():
    ys, xs = P.cell_edges(5, (112, 96))
    np.testing.assert_array_equal(ys, [0, 22, 44, 67, 89, 112])
    np.testing.assert_array_equal(xs, [0, 19, 38, 57, 76, 96])


@pytest.mark.parametrize("size", [(112, 112), (112, 96)])
def test_clean_mask_is_pattern_0(size):
    for k in (3, 4, 5, 6):
        assert P.match_pattern(np.zeros(size, np.uint8), k) == 0
        assert P.match_pattern(np.zeros(size, bool), k) == 0


def test_any_occlusion_is_not_clean():
    m = np.zeros((112, 112), bool)
    m[111, 111] = True
    assert P.match_pattern(m, 4) != 0


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_vectorised_matcher_agrees_with_bruteforce(k):
    rng = np.random.default_rng(1000 + k)
    for size in [(112, 112), (112, 96), (64, 50)]:
        grids = _reference_grids(*size, k)
        masks = np.stack([_blob_mask(rng, *size) for _ in range(12)])
        # exact-tie cases: union of two equal patterns side by side / half a cell pair
        ys, xs = P.cell_edges(k, size)
        tie = np.zeros(size, bool)
        tie[ys[0]:ys[1], xs[0]:xs[2]] = True
        masks = np.concatenate([masks, tie[None], np.zeros((1,) + size, bool)])
        got = P.match_patterns(masks, k)
        want = [_reference_label(grids, m.astype(np.float64)) for m in masks]
        np.testing.assert_array_equal(got, want)
        assert [P.match_pattern(m, k) for m in masks] == list(got)
        # IoUs themselves agree
        ious = P.pattern_ious(masks[0], k)
        ref = [np.sum(g * masks[0]) / (np.sum(np.clip(g + masks[0], 0, 1)) + 1e-10) for g in grids]
        np.testing.assert_allclose(ious, ref, rtol=0, atol=1e-12)


def test_exact_ratio_tie_goes_to_larger_union_like_from():
    # cells (0,0) and (1,1) of a 112x112 K=4 grid (28 px cells): IoU 1/2 with [0,0,1,1], [1,1,2,2]
    # and [0,0,2,2]; FROM's +1e-10 in the denominator makes the larger union win.
    m = np.zeros((112, 112), bool)
    m[0:28, 0:28] = m[28:56, 28:56] = True
    p = P.enumerate_patterns(4)
    label = P.match_pattern(m, 4)
    np.testing.assert_array_equal(p[label], [0, 0, 2, 2])
    assert label == _reference_label(_reference_grids(112, 112, 4), m.astype(float))
    ious = P.pattern_ious(m, 4)
    small = int(np.flatnonzero((p == [0, 0, 1, 1]).all(1))[0])
    assert ious[small] < ious[label] and np.isclose(ious[small], 0.5) and np.isclose(ious[label], 0.5)


def test_cell_fractions():
    m = np.zeros((112, 96), np.uint8)
    ys, xs = P.cell_edges(4, (112, 96))
    m[ys[1]:ys[2], xs[0]:xs[2]] = 255  # two full cells
    m[ys[3], xs[3]:xs[4]] = 255  # one row of the bottom-right cell
    f = P.cell_fractions(m, 4)
    assert f.shape == (4, 4)
    want = np.zeros((4, 4))
    want[1, 0:2] = 1.0
    want[3, 3] = 1.0 / (ys[4] - ys[3])
    np.testing.assert_allclose(f, want)
    # bool input, and fractions weighted by cell area give the occluded total
    f2 = P.cell_fractions(m > 0, 4)
    np.testing.assert_allclose(f2, f)
    area = np.diff(ys)[:, None] * np.diff(xs)[None, :]
    assert np.isclose((f * area).sum(), (m > 0).sum())


def test_binarize_conventions():
    assert P.binarize_mask(np.array([[0, 127, 128, 255]], np.uint8)).tolist() == [[False, False, True, True]]
    assert P.binarize_mask(np.array([[0, 1]], np.int64)).tolist() == [[False, True]]
    assert P.binarize_mask(np.array([[0.2, 0.7]])).tolist() == [[False, True]]


def test_pattern_table():
    df = P.pattern_table(4)
    assert list(df.columns) == ["pattern", "y0", "x0", "y1", "x1"]
    assert len(df) == 101 and df["pattern"].tolist() == list(range(101))
    np.testing.assert_array_equal(df[["y0", "x0", "y1", "x1"]].to_numpy(), P.enumerate_patterns(4))
    dfp = P.pattern_table(4, (112, 96))
    np.testing.assert_array_equal(dfp[["py0", "px0", "py1", "px1"]].to_numpy(), P.pattern_boxes(4, (112, 96)))


@pytest.mark.parametrize("bad", [0, -1, 2.5, "4", True])
def test_bad_k(bad):
    with pytest.raises(ConfigError):
        P.enumerate_patterns(bad)


def test_bad_masks():
    with pytest.raises(ConfigError):
        P.match_pattern(np.zeros((2, 3, 4)), 3)
    with pytest.raises(ConfigError):
        P.match_pattern(np.zeros((3, 3)), 4)  # smaller than the grid
