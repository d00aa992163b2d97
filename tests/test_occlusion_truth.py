"""Ground truth in the model frame against a brute-force reference (per output cell, count the
occluded source pixels that land in it)."""
from __future__ import annotations

import numpy as np
import pytest

from occbench.bench.occlusion_truth import mask_fraction, true_mask, true_pattern, truth_for_image
from occbench.face.geometry import ARCFACE_112, ARCFACE_112x96, estimate_similarity, mask_in_face_frame
from occbench.synth.patterns import match_pattern


def brute_force_fraction(mask: np.ndarray, m: np.ndarray, crop_hw, grid_hw) -> np.ndarray:
    """Map every source pixel centre by M; per output cell, occluded / all source pixels landing there."""
    h, w = mask.shape
    ys, xs = np.mgrid[0:h, 0:w]
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], axis=1) @ np.asarray(m, float).T
    ch, cw = crop_hw
    gh, gw = grid_hw
    gi = np.floor((pts[:, 1] + 0.5) * gh / ch).astype(int)
    gj = np.floor((pts[:, 0] + 0.5) * gw / cw).astype(int)
    inside = (gi >= 0) & (gi < gh) & (gj >= 0) & (gj < gw)
    cell = gi[inside] * gw + gj[inside]
    occ = mask.ravel()[inside] >= 128
    total = np.bincount(cell, minlength=gh * gw)
    hit = np.bincount(cell, weights=occ, minlength=gh * gw)
    return (hit / np.maximum(total, 1)).reshape(gh, gw), total.reshape(gh, gw)


def _scene(seed: int, size: int = 900):
    """A high-resolution image-frame mask (random ellipses and a rotated box) and a face whose
    landmarks map it to a 112-px crop at ~1/7 scale with some rotation."""
    import cv2

    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(3):
        c = tuple(int(v) for v in rng.integers(250, 650, 2))
        axes = tuple(int(v) for v in rng.integers(40, 200, 2))
        cv2.ellipse(mask, c, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    box = cv2.boxPoints(((450.0, 560.0), (400.0, 120.0), float(rng.uniform(-30, 30)))).astype(np.int32)
    cv2.fillPoly(mask, [box], 255)
    angle = np.deg2rad(rng.uniform(-15, 15))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    five = (ARCFACE_112 - 56) @ rot.T * 7.0 + 450 + rng.uniform(-20, 20, 2)
    return mask, five


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("template,crop_hw,grid_hw", [
    (ARCFACE_112, (112, 112), (14, 14)), (ARCFACE_112, (112, 112), (7, 7)),
    (ARCFACE_112x96, (112, 96), (14, 12)), (ARCFACE_112, (112, 112), (10, 9))])
def test_mask_fraction_matches_brute_force(seed, template, crop_hw, grid_hw):
    mask, five = _scene(seed)
    m = estimate_similarity(five, template)
    frac = mask_fraction(mask, m, crop_hw, grid_hw)
    ref, total = brute_force_fraction(mask, m, crop_hw, grid_hw)
    assert total.min() > 200  # every cell receives many source pixels: the reference is exact enough
    assert np.abs(frac - ref).max() < 0.05
    assert np.abs(frac - ref).mean() < 0.01
    # thresholded at tau: they agree on every cell not within a hair of tau
    for tau in (0.25, 0.5, 0.75):
        clear = np.abs(ref - tau) > 0.05
        np.testing.assert_array_equal((frac >= tau)[clear], (ref >= tau)[clear])
        np.testing.assert_array_equal(true_mask(mask, m, crop_hw, grid_hw, tau), frac >= tau)


@pytest.mark.parametrize("seed", range(3))
def test_pattern_in_crop_frame_matches_brute_force(seed):
    mask, five = _scene(seed)
    for template, crop_hw in ((ARCFACE_112, (112, 112)), (ARCFACE_112x96, (112, 96))):
        m = estimate_similarity(five, template)
        ref, _ = brute_force_fraction(mask, m, crop_hw, crop_hw)
        assert true_pattern(mask, m, crop_hw, 5) == match_pattern(ref >= 0.5, 5)


def test_model_frame_equals_face_frame_for_arcface112_and_differs_for_112x96():
    """For an arcface112 crop on the synth landmarks, the crop-frame pattern is the manifest's
    face-frame label; a 112x96 crop lays its cells elsewhere (document, not a bug)."""
    agree96 = []
    for seed in range(6):
        mask, five = _scene(seed)
        m112 = estimate_similarity(five, ARCFACE_112)
        face = match_pattern(mask_in_face_frame(mask, five), 5)
        assert true_pattern(mask, m112, (112, 112), 5) == face
        agree96.append(true_pattern(mask, estimate_similarity(five, ARCFACE_112x96), (112, 96), 5) == face)
    assert not all(agree96)


def test_clean_image_and_outside_the_image():
    tm, p = truth_for_image(None, np.eye(2, 3), (112, 112), (14, 14), 5)
    assert not tm.any() and tm.shape == (14, 14) and p == 0
    full = np.full((50, 50), 255, np.uint8)  # the crop extends beyond this small image: outside = visible
    m = np.array([[1.0, 0, 31], [0, 1.0, 31]])  # image occupies crop pixels 31..80
    frac = mask_fraction(full, m, (112, 112), (14, 14))
    assert frac[7, 7] == 1.0 and frac[0, 0] == 0.0
    assert 0.0 < frac[3, 7] < 1.0  # a cell straddling the image border is partly occluded


@pytest.mark.parametrize("grid_hw,crop_hw,template", [((14, 14), (112, 112), ARCFACE_112), ((7, 6), (112, 96), ARCFACE_112x96),
                                                      ((112, 112), (112, 112), ARCFACE_112), ((10, 9), (112, 112), ARCFACE_112)])
def test_truth_for_image_one_warp_equals_separate_warps(grid_hw, crop_hw, template):
    for seed in range(3):
        mask, five = _scene(seed)
        m = estimate_similarity(five, template)
        for tau in (0.3, 0.5):
            tm, label = truth_for_image(mask, m, crop_hw, grid_hw, 5, tau)
            np.testing.assert_array_equal(tm, true_mask(mask, m, crop_hw, grid_hw, tau))
            assert label == true_pattern(mask, m, crop_hw, 5)


# --------------------------------------------------------------- the fast path equals the reference


def _random_case(seed: int):
    """A random image-frame mask (grey levels around the 128 threshold, blobs, thin lines, speckle) and
    a random similarity (scale 0.3-3 crop px per image px, any rotation, shifted partly off the image)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = rng.integers(40, 400, 2)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(0, 4)):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(1, w // 2 + 2)), int(rng.integers(1, h // 2 + 2)))
        cv2.ellipse(mask, c, axes, float(rng.uniform(0, 180)), 0, 360, int(rng.choice([127, 128, 200, 255])), -1)
    if rng.random() < 0.5:
        mask[rng.random((h, w)) < 0.02] = 255  # speckle: single pixels
    if rng.random() < 0.3:
        cv2.line(mask, (0, int(rng.integers(0, h))), (w - 1, int(rng.integers(0, h))), 255, 1)
    scale = float(np.exp(rng.uniform(np.log(0.3), np.log(3.0))))
    a = rng.uniform(-np.pi, np.pi)
    m = np.array([[scale * np.cos(a), -scale * np.sin(a), 0.0], [scale * np.sin(a), scale * np.cos(a), 0.0]])
    centre = np.array([w, h]) * rng.uniform(0.2, 0.8, 2)
    m[:, 2] = np.array([56.0, 56.0]) + rng.uniform(-40, 40, 2) - m[:, :2] @ centre
    return mask, m


@pytest.mark.parametrize("crop_hw,grid_hw", [((112, 112), (14, 14)), ((112, 96), (14, 12)), ((112, 96), (7, 6)),
                                             ((112, 112), (112, 112)), ((112, 112), (10, 9))])
def test_fast_truth_bit_identical_to_reference_on_random_masks(crop_hw, grid_hw):
    for seed in range(25):
        mask, m = _random_case(seed)
        for tau in (0.25, 0.5, 0.9):
            tm, label = truth_for_image(mask, m, crop_hw, grid_hw, 5, tau)
            np.testing.assert_array_equal(tm, true_mask(mask, m, crop_hw, grid_hw, tau), err_msg=f"seed {seed}")
            assert label == true_pattern(mask, m, crop_hw, 5), seed
        for k in (3, 4):
            assert truth_for_image(mask, m, crop_hw, grid_hw, k)[1] == true_pattern(mask, m, crop_hw, k)
        # other mask encodings: bool, 3 channels
        occ = mask >= 128
        assert truth_for_image(occ, m, crop_hw, grid_hw, 5)[1] == true_pattern(mask, m, crop_hw, 5)
        np.testing.assert_array_equal(truth_for_image(np.dstack([mask] * 3), m, crop_hw, grid_hw, 5)[0],
                                      true_mask(mask, m, crop_hw, grid_hw))


def test_integer_factor_inter_area_counts_exactly():
    """The fast path's premise: uint8 INTER_AREA at factor 4 of a 0/16 canvas is the 4x4 sample count."""
    import cv2

    rng = np.random.default_rng(0)
    for ch, cw in ((112, 112), (112, 96), (56, 48)):
        for p in (0.01, 0.5, 0.99):
            canvas = (rng.random((ch * 4, cw * 4)) < p).astype(np.uint8) * 16
            got = cv2.resize(canvas, (cw, ch), interpolation=cv2.INTER_AREA)
            want = (canvas // 16).reshape(ch, 4, cw, 4).sum((1, 3))
            np.testing.assert_array_equal(got, want)


def test_labels_from_cell_counts_equal_match_pattern_ties_included():
    from occbench.bench.occlusion_truth import _cell_counts, labels_from_cell_counts
    from occbench.synth.patterns import cell_edges, match_patterns

    rng = np.random.default_rng(1)
    masks = [np.zeros((112, 96), bool), np.ones((112, 96), bool)]
    ys, xs = cell_edges(5, (112, 96))
    for _ in range(60):  # unions of whole cells (exact IoU ties between patterns), and random pixels
        cells = rng.random((5, 5)) < rng.uniform(0.1, 0.9)
        m = np.zeros((112, 96), bool)
        for i, j in zip(*np.nonzero(cells)):
            m[ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = True
        masks.append(m)
        masks.append(rng.random((112, 96)) < rng.uniform(0.01, 0.6))
    masks = np.stack(masks)
    counts = np.stack([_cell_counts(m, 5) for m in masks])
    np.testing.assert_array_equal(labels_from_cell_counts(counts, 5, (112, 96)), match_patterns(masks, 5))


def test_set_truth_equals_the_reference_per_image(tmp_path):
    import cv2

    from occbench.bench.occlusion import set_truth

    ms, srcs, refs = [], [], []
    for seed in range(12):
        mask, m = _random_case(100 + seed)
        p = tmp_path / f"{seed}.png"
        cv2.imwrite(str(p), mask)
        ms.append(m)
        srcs.append(str(p))
        refs.append((true_mask(mask, m, (112, 112), (14, 14)), true_pattern(mask, m, (112, 112), 5)))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    ms += [np.eye(2, 3), np.eye(2, 3), np.full((2, 3), np.nan)]
    srcs += ["clean", str(tmp_path / "bad.png"), str(tmp_path / "0.png")]
    for threads in (1, 3):
        t = set_truth(np.array(ms), srcs, (112, 112), (14, 14), 5, threads=threads)
        for i, (tm, label) in enumerate(refs):
            np.testing.assert_array_equal(t.mask[i], tm)
            assert t.pattern[i] == label and t.known[i]
        assert t.known[12] and t.pattern[12] == 0 and not t.mask[12].any()  # clean
        assert not t.known[13] and "not a decodable mask" in t.reasons[13]  # unreadable: counted, no truth
        assert not t.known[14] and t.pattern[14] == -1  # no alignment


# --------------------------------------------------------------- several sets of one image, one warp


@pytest.mark.parametrize("crop_hw,grid_hw", [((112, 112), (14, 14)), ((112, 96), (14, 12)), ((112, 96), (7, 6)),
                                             ((112, 112), (56, 28)), ((112, 112), (112, 112)), ((112, 112), (16, 16)),
                                             ((112, 112), (10, 9))])
def test_truth_cells_multi_bit_identical_to_truth_cells(crop_hw, grid_hw):
    """Masks of several sets of one image, packed one bit each into one warp (up to 8 per warp, so
    11 masks take two), equal ``truth_cells`` mask by mask: grey levels around 128, bool and 3-channel
    masks, a clean (all-zero) mask among occluded ones, a mask of another size, and None."""
    from occbench.bench.occlusion_truth import truth_cells, truth_cells_multi

    for seed in range(8):
        base, m = _random_case(200 + seed)
        h, w = base.shape
        masks = [_random_case(300 + 11 * seed + j)[0] for j in range(11)]
        masks = [np.ascontiguousarray(np.resize(mk, (h, w))) for mk in masks]  # the image's size
        masks[1] = np.zeros((h, w), np.uint8)
        masks[2] = masks[2] >= 128
        masks[3] = np.dstack([masks[3]] * 3)
        masks += [None, _random_case(400 + seed)[0], base]
        for tau in (0.0, 0.3, 0.5, 1.0):
            got = truth_cells_multi(masks, m, crop_hw, grid_hw, 5, tau)
            for j, mk in enumerate(masks):
                tm, cells = truth_cells(mk, m, crop_hw, grid_hw, 5, tau)
                np.testing.assert_array_equal(got[j][0], tm, err_msg=f"seed {seed} mask {j}")
                np.testing.assert_array_equal(got[j][1], cells, err_msg=f"seed {seed} mask {j}")
        assert all(c is None for _, c in truth_cells_multi(masks[:3], m, crop_hw, grid_hw, None))
    far = np.array([[1.0, 0.0, 500.0], [0.0, 1.0, 500.0]])  # every occluded pixel lands off the crop
    for (tm, cells), mk in zip(truth_cells_multi(masks[:4], far, crop_hw, grid_hw, 5), masks[:4]):
        np.testing.assert_array_equal(tm, truth_cells(mk, far, crop_hw, grid_hw, 5)[0])
        np.testing.assert_array_equal(cells, truth_cells(mk, far, crop_hw, grid_hw, 5)[1])


def test_bit_counts_count_each_bit_of_the_4x4_samples():
    from occbench.bench.occlusion_truth import _bit_counts

    rng = np.random.default_rng(3)
    for p in (0.0, 0.03, 0.5, 1.0):
        planes = (rng.random((8, 64, 96)) < p).astype(np.uint8)
        canvas = np.zeros((64, 96), np.uint8)
        for t in range(8):
            canvas |= planes[t] << t
        quads = canvas.view(np.uint32).reshape(16, 4, 24)
        for n in (1, 3, 8):
            np.testing.assert_array_equal(_bit_counts(quads, n), planes[:n].reshape(n, 16, 4, 24, 4).sum((2, 4)))


def test_sets_truth_equals_set_truth_per_set(tmp_path):
    """Three sets over the same images, computed together, equal each set computed alone; a missing or
    unreadable mask in one set leaves the others' truth of that image intact."""
    import cv2

    from occbench.bench.occlusion import set_truth, sets_truth

    ms, sources = [], [[], [], []]
    for i in range(10):
        _, m = _random_case(500 + i)
        ms.append(m)
        for j in range(3):
            p = tmp_path / f"{j}-{i}.png"
            cv2.imwrite(str(p), _random_case(600 + 10 * j + i)[0][:40, :50])
            sources[j].append(str(p))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    sources[0][3], sources[1][3], sources[2][5] = str(tmp_path / "bad.png"), "clean", None
    ms = np.array(ms)
    for threads in (1, 2):
        together = sets_truth(ms, sources, (112, 112), (14, 14), 5, threads=threads)
        for j in range(3):
            alone = set_truth(ms, sources[j], (112, 112), (14, 14), 5, threads=1)
            np.testing.assert_array_equal(together[j].mask, alone.mask)
            np.testing.assert_array_equal(together[j].pattern, alone.pattern)
            np.testing.assert_array_equal(together[j].known, alone.known)
            assert together[j].reasons == alone.reasons
    assert not together[0].known[3] and together[1].known[3] and together[2].known[3]
    assert not together[2].known[5] and together[0].known[5]


def test_plain_grey_png_reads_synth_masks_and_leaves_other_pngs_to_cv2():
    import cv2

    from occbench.bench.occlusion import _plain_grey_png
    from occbench.synth.pipeline import encode_mask_png

    for seed in range(6):
        mask = _random_case(700 + seed)[0]
        data = encode_mask_png(mask)
        np.testing.assert_array_equal(_plain_grey_png(data), mask)
        np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE), mask)
        # a flipped byte in the pixel data (CRC), a truncated file: not read here
        bad = bytearray(data)
        bad[45] ^= 1
        assert _plain_grey_png(bytes(bad)) is None
        assert _plain_grey_png(data[:-20]) is None
    # written by cv2 (filtered rows, other layout): not read here, or read identically
    mask = _random_case(800)[0]
    ok, buf = cv2.imencode(".png", mask)
    got = _plain_grey_png(buf.tobytes())
    assert got is None or np.array_equal(got, mask)
    assert _plain_grey_png(cv2.imencode(".png", np.dstack([mask] * 3))[1].tobytes()) is None  # colour
