"""Recognizers with occlusion outputs: declarations, parsing, every loader, bad outputs."""
from __future__ import annotations

import json
import os
import sys
import textwrap

import numpy as np
import pytest
import torch

from occbench.errors import ConfigError
from occbench.recognizers import Preprocess, create_recognizer, export_onnx, save_torchscript
from occbench.recognizers.archs import create_arch
from occbench.recognizers.outputs import (MaskSpec, OutputMismatchError, OutputSpec, PatternSpec, as_output_spec,
                                          parse_outputs)

SPEC = OutputSpec(mask=MaskSpec("mask", "logits", 1), pattern=PatternSpec("pattern", 5, "logits"))


def _logits(n, h=7, w=6, p=226, seed=0):
    g = np.random.default_rng(seed)
    return {"embedding": g.normal(size=(n, 8)).astype(np.float32), "mask": g.normal(size=(n, 1, h, w)).astype(np.float32),
            "pattern": g.normal(size=(n, p)).astype(np.float32)}


# ------------------------------------------------------------------------------------- parsing


def test_parse_dict_tuple_and_tensor():
    raw = _logits(3)
    out = parse_outputs(raw, SPEC, 3)
    np.testing.assert_allclose(out.mask, 1 / (1 + np.exp(-raw["mask"][:, 0])), rtol=1e-6)
    np.testing.assert_allclose(out.pattern.sum(1), 1, rtol=1e-5)
    assert out.pattern.argmax(1).tolist() == raw["pattern"].argmax(1).tolist()
    tup = OutputSpec(embedding=0, mask=MaskSpec(1, "probabilities", 0), pattern=PatternSpec(2, 5, "probabilities"))
    probs = 1 / (1 + np.exp(-raw["mask"]))
    out2 = parse_outputs((torch.from_numpy(raw["embedding"]), torch.from_numpy(probs[:, 0]), raw["pattern"] ** 2), tup, 3)
    np.testing.assert_allclose(out2.mask, 1 - probs[:, 0], rtol=1e-6)  # occluded = 0: high means visible
    assert out2.embedding.shape == (3, 8)
    plain = parse_outputs(torch.ones(3, 4), None, 3)
    assert plain.mask is None and plain.pattern is None and plain.embedding.shape == (3, 4)
    first = parse_outputs((torch.ones(3, 4), torch.zeros(3)), None, 3)  # undeclared tuple: embedding first
    assert first.embedding.shape == (3, 4) and first.notes


def test_mask_shape_mismatch_names_expected_and_actual():
    raw = _logits(3)
    raw["mask"] = np.zeros((3, 2, 7, 6), np.float32)
    with pytest.raises(OutputMismatchError, match=r"N x 1 x h x w or N x h x w with N=3, got \(3, 2, 7, 6\)"):
        parse_outputs(raw, SPEC, 3)
    raw["mask"] = np.zeros((2, 7, 6), np.float32)
    with pytest.raises(OutputMismatchError, match=r"got \(2, 7, 6\)"):
        parse_outputs(raw, SPEC, 3)


def test_wrong_pattern_count_names_p_for_k():
    raw = _logits(2, p=101)
    with pytest.raises(OutputMismatchError, match=r"P=101 classes, but K=5 needs P=\(K\(K\+1\)/2\)\^2\+1=226"):
        parse_outputs(raw, SPEC, 2)
    spec4 = OutputSpec(pattern=PatternSpec("pattern", 4))
    assert parse_outputs(raw, spec4, 2).pattern.shape == (2, 101)


def test_declared_missing_is_error_and_undeclared_extra_is_noted():
    raw = _logits(2)
    del raw["pattern"]
    with pytest.raises(OutputMismatchError, match=r"declares a pattern output 'pattern' but returned only"):
        parse_outputs(raw, SPEC, 2)
    with pytest.raises(OutputMismatchError, match="single tensor"):
        parse_outputs(torch.zeros(2, 8), SPEC, 2)
    extra = {**_logits(2), "features": np.zeros((2, 3))}
    out = parse_outputs(extra, SPEC, 2)
    assert out.notes == ["ignored undeclared model output(s) ['features']"]


def test_probabilities_out_of_range_and_nan_kept():
    raw = _logits(2)
    spec = OutputSpec(mask=MaskSpec("mask", "probabilities"))
    with pytest.raises(OutputMismatchError, match="declare scale 'logits'"):
        parse_outputs(raw, spec, 2)
    raw["mask"] = np.full((2, 1, 3, 3), np.nan, np.float32)
    out = parse_outputs(raw, spec, 2)
    assert np.isnan(out.mask).all()  # counted by the scorer, not here


def test_declaration_validation():
    for bad, match in (({"mask": {"scale": "softmax"}}, "scale"), ({"mask": {"occluded": 255}}, "occluded"),
                       ({"pattern": {"k": 0}}, "positive integer"), ({"pattern": {"order": "raster"}}, "order"),
                       ({"heatmap": {}}, "unknown output"), ({"mask": {"key": "m", "bogus": 1}}, "bogus")):
        with pytest.raises(ConfigError, match=match):
            as_output_spec(bad)
    rt = as_output_spec(json.loads(json.dumps(SPEC.to_dict())))
    assert rt == SPEC


# ------------------------------------------------------------------------------------- loaders


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = create_arch("tiny-occ", width=4, num_features=16).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="module")
def crops():
    return np.random.default_rng(0).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)


def _reference(module, crops):
    x = torch.from_numpy(Preprocess().normalize(crops))
    with torch.no_grad():
        raw = module(x)
    return parse_outputs(raw, module.output_spec, len(crops))


FACTORY = """
import torch
from occbench.recognizers.archs import create_arch

def build(weights):
    m = create_arch("tiny-occ", width=4, num_features=16)
    m.load_state_dict(torch.load(weights, weights_only=True))
    return m
"""


@pytest.mark.parametrize("kind", ["torchscript", "onnx", "statedict", "factory"])
def test_every_loader_returns_the_declared_outputs(tiny, crops, tmp_path, kind):
    if kind == "torchscript":
        save_torchscript(tiny, tmp_path / "t.pt", Preprocess(), "tiny-occ")
        rec = create_recognizer(str(tmp_path / "t.pt"), device="cpu")
    elif kind == "onnx":
        export_onnx(tiny, tmp_path / "t.onnx", Preprocess(), "tiny-occ")
        rec = create_recognizer(str(tmp_path / "t.onnx"), device="cpu")
    else:
        torch.save(tiny.state_dict(), tmp_path / "t.pth")
        if kind == "statedict":
            rec = create_recognizer(str(tmp_path / "t.pth"), arch="tiny-occ", device="cpu",
                                    factory_kwargs={"width": 4, "num_features": 16})
        else:
            mod = f"occbench_tinyocc_factory_{os.getpid()}"
            (tmp_path / f"{mod}.py").write_text(textwrap.dedent(FACTORY))
            sys.path.insert(0, str(tmp_path))
            try:
                rec = create_recognizer(f"{mod}:build", factory_kwargs={"weights": str(tmp_path / "t.pth")}, device="cpu")
            finally:
                sys.path.remove(str(tmp_path))
    assert rec.outputs == tiny.output_spec
    out = rec.infer(crops)
    ref = _reference(tiny, crops)
    assert out.mask.shape == (5, 14, 14) and out.pattern.shape == (5, 226)
    np.testing.assert_allclose(out.mask, ref.mask, atol=1e-4)
    np.testing.assert_allclose(out.pattern, ref.pattern, atol=1e-4)
    e = ref.embedding / np.linalg.norm(ref.embedding, axis=1, keepdims=True)
    np.testing.assert_allclose(out.embedding, e, atol=1e-4)
    np.testing.assert_allclose(rec.embed(crops), out.embedding, atol=1e-6)  # embed() is infer()'s embedding


def test_metadata_declaration_mismatch_is_a_clear_error(tiny, crops, tmp_path):
    """A file that declares K=4 but whose head has 226 classes fails at inference, naming both."""
    save_torchscript(tiny, tmp_path / "t.pt", Preprocess(), "tiny-occ",
                     outputs=OutputSpec(mask=MaskSpec(), pattern=PatternSpec("pattern", 4)))
    rec = create_recognizer(str(tmp_path / "t.pt"), device="cpu")
    with pytest.raises(OutputMismatchError, match="P=226 classes, but K=4 needs P=.*=101"):
        rec.infer(crops)
    save_torchscript(tiny, tmp_path / "m.pt", Preprocess(), "tiny-occ",
                     outputs=OutputSpec(mask=MaskSpec("segmentation")))
    with pytest.raises(OutputMismatchError, match="'segmentation' but returned only"):
        create_recognizer(str(tmp_path / "m.pt"), device="cpu").infer(crops)


def test_flip_test_keeps_unflipped_mask(tiny, crops, tmp_path):
    save_torchscript(tiny, tmp_path / "t.pt", Preprocess(), "tiny-occ")
    plain = create_recognizer(str(tmp_path / "t.pt"), device="cpu").infer(crops)
    flip = create_recognizer(str(tmp_path / "t.pt"), device="cpu", preprocess_overrides={"flip_test": True}).infer(crops)
    np.testing.assert_allclose(flip.mask, plain.mask, atol=1e-5)
    assert not np.allclose(flip.embedding, plain.embedding)


def test_reference_models_oracle_and_blind(crops):
    oracle = create_recognizer("oracle")
    blind = create_recognizer("blind")
    assert oracle.outputs.mask.source == "truth" and oracle.outputs.pattern.source == "truth"
    assert oracle.infer(crops).mask is None  # scored from the ground truth by the engine
    b = blind.infer(crops)
    assert b.mask.shape == (5, 14, 14) and not b.mask.any() and (b.pattern.argmax(1) == 0).all()
    assert oracle.fingerprint() != blind.fingerprint()
    np.testing.assert_allclose(np.linalg.norm(b.embedding, axis=1), 1, rtol=1e-5)
    b96 = create_recognizer("blind", preprocess_overrides={"input_size": (112, 96), "template": "arcface112x96"})
    assert b96.infer(crops[:, :, :96]).mask.shape == (5, 14, 12)


def test_examples_tiny_model_missing_says_how_to_train(tmp_path, monkeypatch):
    from occbench.errors import DataNotFoundError

    monkeypatch.setenv("OCCBENCH_TINY_MODEL", str(tmp_path / "absent.pt"))
    with pytest.raises(DataNotFoundError, match="examples/tiny_occlusion_model.py"):
        create_recognizer("examples-tiny-model")


class _TupleNet(torch.nn.Module):
    def forward(self, x):
        e = x.mean(dim=(2, 3)) + torch.arange(3.0)
        return e, e.norm(dim=1)


class _DictNet(torch.nn.Module):
    def forward(self, x):
        return {"features": x.mean(dim=(2, 3))}


def test_undeclared_tuple_keeps_first_and_dict_needs_embedding(crops, caplog):
    from occbench.recognizers.torch_backend import TorchRecognizer

    rec = TorchRecognizer(_TupleNet(), Preprocess(), name="tuple", device="cpu")
    e = rec.embed(crops)
    ref = Preprocess().normalize(crops).mean(axis=(2, 3)) + np.arange(3.0)
    np.testing.assert_allclose(e, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-6)
    assert "ignored undeclared model output(s) ['1']" in caplog.text
    with pytest.raises(OutputMismatchError, match="without 'embedding'"):
        TorchRecognizer(_DictNet(), Preprocess(), name="dict", device="cpu").embed(crops)
