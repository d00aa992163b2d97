"""AlignedCropDataset / extract_embeddings (the cache tests are in test_embed.py)."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from occbench.errors import ConfigError
from occbench.io.images import encode, read_rgb
from occbench.recognizers.archs import create_arch
from occbench.recognizers.base import Preprocess
from occbench.recognizers.extract import AlignedCropDataset, collate_crops, extract_embeddings
from occbench.recognizers.torch_backend import TorchRecognizer
from occbench.face.geometry import ARCFACE_112, estimate_similarity, warp

LFW_FIVE = np.array([[106, 113], [145, 112], [126, 138], [110, 158], [142, 158]], float)


def read_bytes(path) -> bytes:  # module-level so DataLoader workers can pickle partial(read_bytes, p)
    with open(path, "rb") as fh:
        return fh.read()


@pytest.fixture(scope="module")
def recognizer():
    torch.manual_seed(0)
    return TorchRecognizer(create_arch("iresnet18", width=8, num_features=16), Preprocess(), name="tiny",
                           device="cpu")


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """Six generated 160x140 JPEG/PNG images with smooth structure, plus their image->crop matrices."""
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:160, 0:140]
    out = []
    for i in range(6):
        img = np.stack([(xx * (i + 1) + yy * c * 3) % 256 for c in range(3)], -1).astype(np.uint8)
        img = np.clip(img.astype(int) + rng.integers(0, 40, img.shape), 0, 255).astype(np.uint8)
        p = d / f"img{i}.{'png' if i % 2 else 'jpg'}"
        p.write_bytes(encode(img, p.suffix[1:]))
        five = ARCFACE_112 + np.array([10 + i, 20 + 2 * i])
        out.append((p, estimate_similarity(five, ARCFACE_112)))
    return out


def _items_with_failures(image_files, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    data = image_files[0][0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    m = image_files[0][1]
    return [
        (image_files[0][0], m),
        (tmp_path / "missing.jpg", m),  # 1: missing file
        (functools.partial(read_bytes, image_files[1][0]), image_files[1][1]),  # bytes-callable
        (truncated, m),  # 3: corrupt
        (image_files[2][0].read_bytes(), image_files[2][1]),  # raw bytes
        (image_files[3][0], np.full((2, 3), np.nan)),  # 5: unusable alignment
        *image_files[4:],
    ]


def test_dataset_crops_match_direct_warp_and_report_failures(image_files, tmp_path):
    ds = AlignedCropDataset(_items_with_failures(image_files, tmp_path), (112, 112))
    idx, crop, ok, reason = ds[0]
    assert (idx, ok, reason) == (0, True, "")
    np.testing.assert_array_equal(crop, warp(read_rgb(image_files[0][0]), image_files[0][1], (112, 112)))
    assert crop.dtype == np.uint8 and crop.shape == (112, 112, 3)
    _, crop2, ok2, _ = ds[2]
    np.testing.assert_array_equal(crop2, warp(read_rgb(image_files[1][0]), image_files[1][1], (112, 112)))
    _, crop_missing, ok_m, why_m = ds[1]
    assert not ok_m and why_m.startswith("FileNotFoundError") and not crop_missing.any()
    _, _, ok_t, why_t = ds[3]
    assert not ok_t and "ImageDecodeError" in why_t and "truncated" in why_t
    _, _, ok_n, why_n = ds[5]
    assert not ok_n and "2x3" in why_n
    idxs, crops, oks, reasons = collate_crops([ds[i] for i in range(4)])
    assert crops.shape == (4, 112, 112, 3) and oks.tolist() == [True, False, True, False]
    assert idxs.tolist() == [0, 1, 2, 3] and len(reasons) == 4


def test_extract_workers_identical_and_failures_kept(recognizer, image_files, tmp_path):
    ds = AlignedCropDataset(_items_with_failures(image_files, tmp_path), (112, 112))
    e0, ok0, r0 = extract_embeddings(recognizer, ds, batch_size=3, num_workers=0, progress=False)
    e2, ok2, r2 = extract_embeddings(recognizer, ds, batch_size=3, num_workers=2, progress=False)
    np.testing.assert_array_equal(e0, e2)  # NaN rows compare equal too
    assert ok0.tolist() == ok2.tolist() == [True, False, True, False, True, False, True, True]
    assert r0 == r2 and r0[1].startswith("FileNotFoundError") and "truncated" in r0[3]
    assert e0.shape == (8, 16) and e0.dtype == np.float32
    assert np.isnan(e0[~ok0]).all() and np.isfinite(e0[ok0]).all()
    # Good rows equal a direct embed of the same crops (batching does not change results).
    direct = recognizer.embed(np.stack([ds[i][1] for i in np.flatnonzero(ok0)]))
    np.testing.assert_allclose(e0[ok0], direct, atol=1e-5)  # other batch shapes: last-bit differences


def test_extract_all_failed_and_size_mismatch(recognizer, tmp_path):
    ds = AlignedCropDataset([(tmp_path / "nope.jpg", np.eye(2, 3))] * 2, (112, 112))
    emb, ok, reasons = extract_embeddings(recognizer, ds, progress=False)
    assert emb.shape == (2, 16) and np.isnan(emb).all() and not ok.any() and all(reasons)
    with pytest.raises(ConfigError, match=r"\(112, 96\)"):
        extract_embeddings(recognizer, AlignedCropDataset([], (112, 96)), progress=False)


def test_extract_real_lfw_faces(recognizer, lfw_images):
    files = sorted(lfw_images.glob("A*/*.jpg"))[:10]
    items = [(f, estimate_similarity(LFW_FIVE, ARCFACE_112)) for f in files]
    emb, ok, reasons = extract_embeddings(recognizer, AlignedCropDataset(items, (112, 112)), batch_size=4,
                                          progress=False)
    assert ok.all() and reasons == [""] * len(files)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert len(np.unique(emb.round(5), axis=0)) == len(files)  # distinct faces, distinct embeddings
