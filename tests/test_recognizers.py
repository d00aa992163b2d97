"""Recognizer loaders, architectures and the create_recognizer dispatch.

A tiny seeded IResNet (iresnet18 layout at width 8) is saved as TorchScript, state dict, ONNX and
behind a Python factory; every loader must reproduce the reference forward pass computed here
directly from the module.
"""
from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from occbench.errors import ConfigError, DataNotFoundError, UnsafeLoadError
from occbench.recognizers import (RECOGNIZERS, Preprocess, Recognizer, create_recognizer, detect_file_type,
                                  list_recognizers, register_file_type)
from occbench.recognizers.archs import ARCHS, IResNet, create_arch, list_archs
from occbench.recognizers.onnx import export_onnx
from occbench.recognizers.statedict import strip_prefixes
from occbench.recognizers.torch_backend import TorchRecognizer, resolve_device, state_dict_sha256
from occbench.recognizers.torchscript import read_torchscript_metadata, save_torchscript

TINY = dict(width=8, num_features=32)
# Approximate 5-point landmarks of the (roughly centred) 250x250 LFW images; good enough to align.
LFW_FIVE = np.array([[106, 113], [145, 112], [126, 138], [110, 158], [142, 158]], float)


def tiny_model(seed: int = 0) -> IResNet:
    """Seeded tiny iresnet18 with non-trivial BN statistics and PReLU slopes (so loading matters)."""
    torch.manual_seed(seed)
    m = create_arch("iresnet18", **TINY)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                n = mod.num_features  # small shifts: large ones collapse all embeddings together
                mod.running_mean.copy_(torch.randn(n, generator=g) * 0.01)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                mod.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
                mod.bias.copy_(torch.randn(n, generator=g) * 0.01)
            elif isinstance(mod, torch.nn.PReLU):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) * 0.5)
    return m.eval()


def reference_embed(module: torch.nn.Module, crops: np.ndarray, pp: Preprocess = Preprocess()) -> np.ndarray:
    """Independent path: numpy normalisation (Preprocess.normalize), plain forward, numpy L2 norm."""
    with torch.no_grad():
        out = module(torch.from_numpy(pp.normalize(crops))).numpy()
        if pp.flip_test:
            out = out + module(torch.from_numpy(pp.normalize(crops[:, :, ::-1]))).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def pair_scores(e: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(len(e), 1)
    return np.sum(e[i] * e[j], axis=1)


@pytest.fixture(scope="module")
def crops(request) -> np.ndarray:
    """Six real LFW faces (three identities x two images), aligned to arcface112; random without data."""
    try:
        root: Path = request.getfixturevalue("lfw_images")
    except pytest.skip.Exception:
        return np.random.default_rng(0).integers(0, 256, (6, 112, 112, 3), dtype=np.uint8)
    from occbench.io.images import read_rgb
    from occbench.face.geometry import align

    people = [d for d in sorted(root.iterdir()) if len(list(d.glob("*.jpg"))) >= 2][:3]
    files = [f for d in people for f in sorted(d.glob("*.jpg"))[:2]]
    return np.stack([align(read_rgb(f), LFW_FIVE, "arcface112")[0] for f in files])


FACTORY_SRC = """
import torch
from occbench.recognizers.archs import create_arch
from occbench.recognizers.base import Preprocess

def build(weights, flip=False):
    m = create_arch("iresnet18", width=8, num_features=32)
    m.load_state_dict(torch.load(weights, weights_only=True))
    return m, {"flip_test": flip}

def build_with_attr(weights):
    m, _ = build(weights)
    m.preprocess = Preprocess(flip_test=True)
    return m

class Ready:
    name = "ready"
    preprocess = Preprocess()
    def alignment_transform(self, image, landmarks): return None
    def embed(self, crops): return crops.reshape(len(crops), -1)[:, :4].astype("float32")
    def fingerprint(self): return "ready"

def build_ready():
    return Ready()

def build_bad():
    return 42
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The tiny model and its files in every format, plus an importable factory module."""
    d = tmp_path_factory.mktemp("models")
    m = tiny_model()
    pp = Preprocess()
    save_torchscript(m, d / "tiny.ts", pp, "tiny")
    export_onnx(m, d / "tiny.onnx", pp, "tiny")
    torch.save(m.state_dict(), d / "tiny.pth")
    torch.save(m, d / "full.pth")
    mod_name = f"occbench_tiny_factory_{os.getpid()}"
    (d / f"{mod_name}.py").write_text(textwrap.dedent(FACTORY_SRC))
    sys.path.insert(0, str(d))
    yield {"dir": d, "module": m, "factory": mod_name}
    sys.path.remove(str(d))
    sys.modules.pop(mod_name, None)


def load(models, kind: str, **kw) -> Recognizer:
    d = models["dir"]
    if kind == "torchscript":
        return create_recognizer(str(d / "tiny.ts"), **kw)
    if kind == "onnx":
        return create_recognizer(str(d / "tiny.onnx"), **kw)
    if kind == "statedict":
        return create_recognizer(str(d / "tiny.pth"), arch="iresnet18", factory_kwargs=TINY, **kw)
    if kind == "factory":
        return create_recognizer(f"{models['factory']}:build", factory_kwargs={"weights": str(d / "tiny.pth")}, **kw)
    raise AssertionError(kind)


LOADERS = ["torchscript", "statedict", "onnx", "factory"]


# ---------------------------------------------------------------------------------------------
# Loaders agree with each other and with the reference forward pass


@pytest.mark.parametrize("kind", LOADERS)
def test_loader_matches_reference_embeddings_and_scores(models, crops, kind):
    ref = reference_embed(models["module"], crops)
    rec = load(models, kind, device="cpu")
    assert isinstance(rec, Recognizer)
    emb = rec.embed(crops)
    assert emb.dtype == np.float32 and emb.shape == (len(crops), 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb, ref, atol=1e-4)
    np.testing.assert_allclose(pair_scores(emb), pair_scores(ref), atol=1e-4)
    # The scores must discriminate, or agreement would be vacuous.
    assert np.ptp(pair_scores(ref)) > 0.05


def test_embed_batches_independent_of_chunking(models, crops):
    rec = load(models, "torchscript", device="cpu")
    whole = rec.embed(crops)
    rec.max_batch = 4  # forces two forward passes
    np.testing.assert_allclose(rec.embed(crops), whole, atol=1e-6)
    assert rec.embed(crops[:0]).shape == (0, 32)


def test_embed_rejects_wrong_crops(models, crops):
    rec = load(models, "torchscript", device="cpu")
    with pytest.raises(ConfigError, match=r"\(N, 112, 112, 3\)"):
        rec.embed(crops[:, :96])
    with pytest.raises(ConfigError, match="uint8"):
        rec.embed(crops.astype(np.float32))


def test_file_type_detected_by_content_not_extension(models, tmp_path):
    d = models["dir"]
    for src, want in (("tiny.ts", "torchscript"), ("tiny.pth", "torch-pickle"), ("full.pth", "torch-pickle"),
                      ("tiny.onnx", "onnx")):
        renamed = tmp_path / f"{src}.model"
        renamed.write_bytes((d / src).read_bytes())
        assert detect_file_type(renamed).name == want, src
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"GIF89a not a model")
    with pytest.raises(ConfigError, match="not a model file"):
        detect_file_type(junk)
    # A renamed TorchScript file still loads and embeds like the original.
    e1 = create_recognizer(str(tmp_path / "tiny.ts.model"), device="cpu").embed(np.zeros((1, 112, 112, 3), np.uint8))
    e2 = load(models, "torchscript", device="cpu").embed(np.zeros((1, 112, 112, 3), np.uint8))
    np.testing.assert_array_equal(e1, e2)


# ---------------------------------------------------------------------------------------------
# Preprocessing metadata


def test_metadata_roundtrip_torchscript_and_onnx(tmp_path, crops):
    m = tiny_model(3)
    pp = Preprocess(channel_order="BGR", mean=(90.0, 100.0, 110.0), std=(50.0, 60.0, 70.0), flip_test=True)
    save_torchscript(m, tmp_path / "a.pt", pp, "my-net")
    export_onnx(m, tmp_path / "a.onnx", pp, "my-net")
    assert read_torchscript_metadata(tmp_path / "a.pt") == (pp, "my-net")
    ref = reference_embed(m, crops, pp)
    for f in ("a.pt", "a.onnx"):
        rec = create_recognizer(str(tmp_path / f), device="cpu")
        assert rec.preprocess == pp and rec.name == "my-net"
        np.testing.assert_allclose(rec.embed(crops), ref, atol=1e-4)


def test_defaults_and_overrides_without_metadata(models):
    rec = load(models, "statedict", device="cpu")
    assert rec.preprocess == Preprocess()  # arcface112 defaults: RGB, (x-127.5)/127.5
    rec = load(models, "statedict", device="cpu", preprocess_overrides={"flip_test": True, "mean": [0, 0, 0]})
    assert rec.preprocess.flip_test and rec.preprocess.mean == (0, 0, 0)
    with pytest.raises(ConfigError, match="unknown preprocess key"):
        load(models, "statedict", preprocess_overrides={"flip": True})
    with pytest.raises(ConfigError, match="template"):
        load(models, "statedict", preprocess_overrides={"input_size": [112, 96]})


def test_onnx_without_metadata_uses_defaults(models, tmp_path):
    import onnx

    model = onnx.load(str(models["dir"] / "tiny.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "plain.onnx"))
    rec = create_recognizer(str(tmp_path / "plain.onnx"), device="cpu")
    assert rec.preprocess == Preprocess() and rec.name == "plain"


# ---------------------------------------------------------------------------------------------
# Safe loading


def test_pickled_module_refused_without_flag_and_loaded_with_it(models, crops):
    path = str(models["dir"] / "full.pth")
    with pytest.raises(UnsafeLoadError, match="--allow-unsafe-pickle") as exc:
        create_recognizer(path)
    assert "IResNet" in str(exc.value)  # says what it refused
    rec = create_recognizer(path, allow_unsafe_pickle=True, device="cpu")
    np.testing.assert_allclose(rec.embed(crops), reference_embed(models["module"], crops), atol=1e-5)


class _Evil:
    """Unpickling this runs code (writes a marker file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("fmt", ["torch-zip", "torch-legacy", "plain-pickle"])
def test_malicious_pickle_never_executes(tmp_path, fmt):
    import pickle

    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    payload = {"conv1.weight": torch.zeros(1), "x": _Evil(str(marker))}
    if fmt == "plain-pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=(fmt == "torch-zip"))
    for kw in ({}, {"arch": "iresnet18"}):
        with pytest.raises(UnsafeLoadError, match="--allow-unsafe-pickle"):
            create_recognizer(str(path), **kw)
    assert not marker.exists()


def test_state_dict_prefixes_and_nesting_are_stripped(models, crops, tmp_path):
    sd = models["module"].state_dict()
    torch.save({"epoch": 3, "state_dict": {f"module.backbone.{k}": v for k, v in sd.items()}}, tmp_path / "ddp.pth")
    rec = create_recognizer(str(tmp_path / "ddp.pth"), arch="iresnet18", factory_kwargs=TINY, device="cpu")
    np.testing.assert_allclose(rec.embed(crops), reference_embed(models["module"], crops), atol=1e-5)
    # Only a prefix that every key shares is stripped.
    mixed = strip_prefixes({"backbone.a": 1, "head.b": 2})
    assert mixed == {"backbone.a": 1, "head.b": 2}
    assert strip_prefixes({"module.a": 1, "module.b": 2}) == {"a": 1, "b": 2}


def test_strict_loading_lists_missing_unexpected_and_shape_errors(models, tmp_path):
    sd = dict(models["module"].state_dict())
    del sd["layer2.0.conv1.weight"]
    sd["head.kernel"] = torch.zeros(3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ConfigError) as exc:
        create_recognizer(str(tmp_path / "bad.pth"), arch="iresnet18", factory_kwargs=TINY)
    msg = str(exc.value)
    assert "missing keys (1): layer2.0.conv1.weight" in msg and "unexpected keys (1): head.kernel" in msg
    with pytest.raises(ConfigError, match=r"shape mismatches .*fc\.weight"):
        create_recognizer(str(models["dir"] / "tiny.pth"), arch="iresnet18", factory_kwargs={"width": 8})
    with pytest.raises(ConfigError, match="missing keys"):  # deeper arch: layer1.2 ... absent from the file
        create_recognizer(str(models["dir"] / "tiny.pth"), arch="iresnet34", factory_kwargs=TINY)
    with pytest.raises(ConfigError, match="--arch"):
        create_recognizer(str(models["dir"] / "tiny.pth"))


def test_arch_rejected_for_self_describing_formats(models):
    for f in ("tiny.ts", "tiny.onnx"):
        with pytest.raises(ConfigError, match="--arch applies only"):
            create_recognizer(str(models["dir"] / f), arch="iresnet18")


# ---------------------------------------------------------------------------------------------
# Flip test, precision, device


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_flip_test_sums_mirrored_embeddings(models, crops, kind):
    rec = load(models, kind, device="cpu", preprocess_overrides={"flip_test": True})
    expected = reference_embed(models["module"], crops, Preprocess(flip_test=True))
    emb = rec.embed(crops)
    np.testing.assert_allclose(emb, expected, atol=1e-4)
    plain = load(models, kind, device="cpu").embed(crops)
    assert np.abs(emb - plain).max() > 1e-3  # flipping changes the result


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_on_cpu(models, crops, precision):
    ref = reference_embed(models["module"], crops)
    try:
        rec = load(models, "torchscript", device="cpu", precision=precision)
    except ConfigError as e:  # this torch has no CPU autocast for the dtype: must say so clearly
        assert precision in str(e) and "not supported" in str(e)
        pytest.skip(str(e))
    emb = rec.embed(crops)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cos = np.sum(emb * ref, axis=1)
    assert cos.min() > 0.99
    assert np.abs(emb - ref).max() > 0  # autocast really ran in reduced precision


def test_bad_precision_and_onnx_precision(models):
    with pytest.raises(ConfigError, match="precision must be one of"):
        load(models, "torchscript", precision="fp8")
    with pytest.raises(ConfigError, match="ONNX"):
        load(models, "onnx", precision="fp16")


def test_device_resolution(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="invalid device"):
        resolve_device("gpu0")


def test_device_auto_loads_on_cpu_without_cuda(models):
    if torch.cuda.is_available():
        pytest.skip("CUDA present; auto picks it")
    rec = load(models, "statedict")
    assert rec.device == torch.device("cpu")
    assert next(rec.module.parameters()).device.type == "cpu"


# ---------------------------------------------------------------------------------------------
# Fingerprints


def test_fingerprint_tracks_weights_and_preprocess(models, tmp_path):
    a = load(models, "statedict").fingerprint()
    assert a == load(models, "statedict").fingerprint() and len(a) == 16
    assert load(models, "statedict", preprocess_overrides={"flip_test": True}).fingerprint() != a
    assert load(models, "statedict", precision="bf16").fingerprint() != a
    other = tiny_model(seed=7)
    torch.save(other.state_dict(), tmp_path / "other.pth")
    b = create_recognizer(str(tmp_path / "other.pth"), arch="iresnet18", factory_kwargs=TINY).fingerprint()
    assert b != a
    # In-memory modules: hash of state-dict tensors, identical for identical weights.
    f1 = load(models, "factory").fingerprint()
    assert f1 == TorchRecognizer(tiny_model(), Preprocess(), name="x").fingerprint()
    assert state_dict_sha256(tiny_model()) != state_dict_sha256(other)


# ---------------------------------------------------------------------------------------------
# Dispatch: registered names and Python factories


def test_registered_name_dispatch_passes_options():
    seen = {}

    def make(spec, **opts):
        seen.update(opts, spec=spec)
        return TorchRecognizer(tiny_model(), Preprocess(), name=spec, device=opts["device"])

    RECOGNIZERS.add("test-tiny-registered", make)
    try:
        assert "test-tiny-registered" in list_recognizers()
        rec = create_recognizer("test-tiny-registered", device="cpu", precision="fp32", factory_kwargs={"k": 1})
        assert rec.name == "test-tiny-registered"
        assert seen["spec"] == "test-tiny-registered" and seen["factory_kwargs"] == {"k": 1}
        assert set(seen) >= {"arch", "device", "precision", "allow_unsafe_pickle", "preprocess_overrides"}
        with pytest.raises(DataNotFoundError, match="Did you mean: test-tiny-registered"):
            create_recognizer("test-tiny-registerd")
    finally:
        RECOGNIZERS._items.pop("test-tiny-registered")


def test_plugin_file_type_dispatch(tmp_path):
    from occbench.recognizers.registry import FILE_TYPES

    seen = {}

    def load_fn(path, **opts):
        seen.update(opts, path=path)
        return TorchRecognizer(tiny_model(), Preprocess(), name="from-file", device="cpu")

    ft = register_file_type("test-magic", lambda p, head: head.startswith(b"TESTMAGIC"), load_fn, first=True)
    try:
        (tmp_path / "m.bin").write_bytes(b"TESTMAGIC rest")
        rec = create_recognizer(str(tmp_path / "m.bin"), preprocess_overrides={"flip_test": True})
        assert rec.name == "from-file" and seen["path"] == tmp_path / "m.bin"
        assert seen["preprocess_overrides"] == {"flip_test": True}
        with pytest.raises(ValueError, match="already registered"):
            register_file_type("test-magic", ft.sniff, ft.load)
    finally:
        FILE_TYPES.remove(ft)


def test_python_factory_variants(models, crops):
    name, w = models["factory"], {"weights": str(models["dir"] / "tiny.pth")}
    flip = create_recognizer(f"{name}:build", factory_kwargs={**w, "flip": True}, device="cpu")
    assert flip.preprocess.flip_test
    attr = create_recognizer(f"{name}:build_with_attr", factory_kwargs=w, device="cpu")
    assert attr.preprocess.flip_test
    np.testing.assert_allclose(attr.embed(crops), flip.embed(crops), atol=1e-6)
    ready = create_recognizer(f"{name}:build_ready")
    assert ready.name == "ready" and ready.fingerprint() == "ready"
    with pytest.raises(ConfigError, match="returned int"):
        create_recognizer(f"{name}:build_bad")
    with pytest.raises(ConfigError, match="has no attribute"):
        create_recognizer(f"{name}:nope")
    with pytest.raises(ConfigError, match="cannot import"):
        create_recognizer("occbench_no_such_module_xyz:build")
    with pytest.raises(ConfigError, match="rejected arguments"):
        create_recognizer(f"{name}:build", factory_kwargs={"bogus": 1})


def test_unknown_model_message():
    with pytest.raises(DataNotFoundError, match="not a registered recognizer, an existing model file"):
        create_recognizer("/no/such/model.onnx")


# ---------------------------------------------------------------------------------------------
# Architectures

PUBLISHED_DEPTHS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 14, 3], 100: [3, 13, 30, 3],
                    200: [6, 26, 60, 6]}


def expected_iresnet_layout(layers, num_features=512) -> dict[str, tuple]:
    """arcface_torch iresnet state-dict keys and shapes, written out from the published layout."""
    keys: dict[str, tuple] = {}

    def bn(p, c):
        keys.update({f"{p}.weight": (c,), f"{p}.bias": (c,), f"{p}.running_mean": (c,),
                     f"{p}.running_var": (c,), f"{p}.num_batches_tracked": ()})

    keys["conv1.weight"] = (64, 3, 3, 3)
    bn("bn1", 64)
    keys["prelu.weight"] = (64,)
    cin = 64
    for stage, (n, c) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
        for b in range(n):
            p = f"layer{stage}.{b}"
            bn(f"{p}.bn1", cin)
            keys[f"{p}.conv1.weight"] = (c, cin, 3, 3)
            bn(f"{p}.bn2", c)
            keys[f"{p}.prelu.weight"] = (c,)
            keys[f"{p}.conv2.weight"] = (c, c, 3, 3)
            bn(f"{p}.bn3", c)
            if b == 0:  # every stage starts with a stride-2 block and a 1x1 projection shortcut
                keys[f"{p}.downsample.0.weight"] = (c, cin, 1, 1)
                bn(f"{p}.downsample.1", c)
            cin = c
    bn("bn2", 512)
    keys["fc.weight"] = (num_features, 512 * 7 * 7)
    keys["fc.bias"] = (num_features,)
    bn("features", num_features)
    return keys


def expected_mbf_layout(blocks=(1, 4, 6, 2), scale=2, num_features=512) -> dict[str, tuple]:
    """arcface_torch mobilefacenet keys: ConvBlock = conv/BN/PReLU, LinearBlock = conv/BN, GDC head."""
    keys: dict[str, tuple] = {}

    def bn(p, c):
        keys.update({f"{p}.weight": (c,), f"{p}.bias": (c,), f"{p}.running_mean": (c,),
                     f"{p}.running_var": (c,), f"{p}.num_batches_tracked": ()})

    def conv(p, cin, cout, k, groups=1, act=True):
        keys[f"{p}.layers.0.weight"] = (cout, cin // groups, k, k)
        bn(f"{p}.layers.1", cout)
        if act:
            keys[f"{p}.layers.2.weight"] = (cout,)

    def depthwise(p, cin, cout, g):
        conv(f"{p}.layers.0", cin, g, 1)
        conv(f"{p}.layers.1", g, g, 3, groups=g)
        conv(f"{p}.layers.2", g, cout, 1, act=False)

    def residual(p, c, n, g):
        for i in range(n):
            depthwise(f"{p}.layers.{i}", c, c, g)

    c1, c2 = 64 * scale, 128 * scale
    conv("layers.0", 3, c1, 3)
    if blocks[0] == 1:
        conv("layers.1", c1, c1, 3, groups=64)
    else:
        residual("layers.1", c1, blocks[0], 128)
    depthwise("layers.2", c1, c1, 128)
    residual("layers.3", c1, blocks[1], 128)
    depthwise("layers.4", c1, c2, 256)
    residual("layers.5", c2, blocks[2], 256)
    depthwise("layers.6", c2, c2, 512)
    residual("layers.7", c2, blocks[3], 256)
    conv("conv_sep", c2, 512, 1)
    conv("features.layers.0", 512, 512, 7, groups=512, act=False)
    keys["features.layers.2.weight"] = (num_features, 512)
    bn("features.layers.3", num_features)
    return keys


def _layout(name: str, **kw) -> dict[str, tuple]:
    with torch.device("meta"):
        m = create_arch(name, **kw)
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


@pytest.mark.parametrize("depth", sorted(PUBLISHED_DEPTHS))
def test_iresnet_state_dict_matches_arcface_torch_layout(depth):
    assert _layout(f"iresnet{depth}") == expected_iresnet_layout(PUBLISHED_DEPTHS[depth])
    assert _layout(f"r{depth}", num_features=256) == expected_iresnet_layout(PUBLISHED_DEPTHS[depth], 256)


@pytest.mark.parametrize("name,blocks,scale", [("mobilefacenet", (1, 4, 6, 2), 2),
                                               ("mobilefacenet_large", (2, 8, 12, 4), 4)])
def test_mobilefacenet_state_dict_layout(name, blocks, scale):
    assert _layout(name) == expected_mbf_layout(blocks, scale)
    assert _layout(name, num_features=128) == expected_mbf_layout(blocks, scale, 128)


def test_real_forward_mobilefacenet():
    torch.manual_seed(0)
    with torch.inference_mode():
        out = create_arch("mobilefacenet", num_features=128).eval()(torch.randn(2, 3, 112, 112))
    assert out.shape == (2, 128) and torch.isfinite(out).all()


OCCLUSION_ARCHS = {"tiny-occ"}  # dict outputs (embedding + mask + pattern): tests/test_model_outputs.py


def _unique_archs() -> list[str]:
    seen, names = set(), []
    for n in list_archs():
        if n in OCCLUSION_ARCHS:
            continue
        fn = ARCHS.get(n)
        key = (getattr(fn, "func", fn), getattr(fn, "args", ()), tuple(sorted(getattr(fn, "keywords", {}).items())))
        if key not in seen:
            seen.add(key)
            names.append(n)
    return names


DEEP = {"iresnet100", "iresnet200"}  # meta-device dispatch of ~1000 ops takes seconds: slow tier


def test_registry_has_the_builtin_archs_once_each():
    assert {"iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200", "mobilefacenet",
            "mobilefacenet_large", "r50", "mbf"} <= set(list_archs())
    assert len(_unique_archs()) == 7
    assert OCCLUSION_ARCHS <= set(list_archs())


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in DEEP else n
                                  for n in _unique_archs()])
def test_registry_walk_arch_builds_and_outputs_n_by_d(name):
    with torch.device("meta"):  # shape inference only: no memory, no FLOPs
        out = create_arch(name).eval()(torch.empty(3, 3, 112, 112))
    assert tuple(out.shape) == (3, 512)


@pytest.mark.slow
@pytest.mark.parametrize("name", _unique_archs())
def test_every_arch_real_forward(name):
    torch.manual_seed(0)
    m = create_arch(name).eval()
    for mod in m.modules():  # the reference N(0, 0.1) conv init overflows deep nets in eval mode
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="linear")
    with torch.inference_mode():
        out = m(torch.randn(2, 3, 112, 112))
    assert out.shape == (2, 512) and torch.isfinite(out).all()


def test_create_arch_errors():
    with pytest.raises(ConfigError, match="Did you mean"):
        create_arch("iresnet51")
    with pytest.raises(ConfigError, match="cannot build arch"):
        create_arch("iresnet18", bogus=1)


# ---------------------------------------------------------------------------------------------
# Corrupt model files (issue 8): one-line errors that say what was expected, never tracebacks


def _corrupt_files(tmp_path: Path) -> dict[str, Path]:
    import io
    import pickle

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    buf = io.BytesIO()
    torch.save({"a": torch.zeros(8)}, buf)
    zipped = buf.getvalue()
    buf = io.BytesIO()
    torch.save({"a": torch.zeros(8)}, buf, _use_new_zipfile_serialization=False)
    legacy = buf.getvalue()
    files = {
        "random": b"\x13" + noise,  # no known signature at all
        "random-pickle-head": b"\x80\x02" + noise,  # looks like pickle protocol 2, then garbage
        "pickle-protocol-74": b"\x80\x4a" + noise,
        "truncated-zip": zipped[: len(zipped) // 2],
        "truncated-legacy": legacy[:40],
        "plain-pickle-no-magic": pickle.dumps({"a": 1}, protocol=2),
    }
    out = {}
    for name, data in files.items():
        (tmp_path / f"{name}.pt").write_bytes(data)
        out[name] = tmp_path / f"{name}.pt"
    return out


@pytest.mark.parametrize("unsafe", [False, True])
def test_corrupt_model_files_give_one_line_errors(tmp_path, unsafe):
    for name, path in _corrupt_files(tmp_path).items():
        with pytest.raises(ConfigError) as exc:  # a ConfigError, not RuntimeError/ValueError/IndexError
            create_recognizer(str(path), arch="iresnet18", allow_unsafe_pickle=unsafe)
        msg = str(exc.value)
        assert "\n" not in msg, (name, msg)
        assert "pickled Python objects" not in msg, (name, msg)
        assert str(path) in msg, (name, msg)


def test_random_bytes_are_not_a_model_file_and_say_what_was_expected(tmp_path):
    files = _corrupt_files(tmp_path)
    for name in ("random", "random-pickle-head", "pickle-protocol-74", "truncated-zip"):
        with pytest.raises(ConfigError) as exc:
            create_recognizer(str(files[name]), arch="iresnet18")
        msg = str(exc.value)
        assert "not a model file" in msg, (name, msg)
        for expected in ("TorchScript", "state dict", "ONNX"):
            assert expected in msg, (name, msg)


def test_real_pickles_still_refused_as_unsafe(tmp_path):
    """A well-formed pickle with objects keeps the UnsafeLoadError (the fix must not weaken it)."""
    torch.save(torch.nn.Linear(2, 2), tmp_path / "lin.pt")
    with pytest.raises(UnsafeLoadError, match="torch.nn.modules.linear.Linear"):
        create_recognizer(str(tmp_path / "lin.pt"))


def test_cli_reports_corrupt_model_as_one_error_line(tmp_path):
    from click.testing import CliRunner

    from occbench.cli import cli

    import cv2

    path = _corrupt_files(tmp_path)["random-pickle-head"]
    for name in ("a.png", "b.png"):  # valid data, so that the model is what fails
        cv2.imwrite(str(tmp_path / name), np.full((112, 112, 3), 128, np.uint8))
    (tmp_path / "pairs.csv").write_text("path1,path2,same\na.png,b.png,1\n")
    r = CliRunner().invoke(cli, ["eval", "-m", str(path), "--arch", "iresnet18", "--allow-unsafe-pickle",
                                 "-p", "pairs", "--pairs", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "res"),
                                 "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("Error:") and "not a model file" in lines[-1], r.output
