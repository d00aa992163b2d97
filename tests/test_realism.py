"""occbench realism: splits, the classifier machinery, the CLI on a small slice of the shared real data."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from occbench.cli import cli
from occbench.errors import ConfigError
from occbench.realism import RealismConfig, operating_point, score_row, split_of, train_classifier


def test_splits_are_fixed_and_proportional():
    ids = [f"person_{i}" for i in range(4000)]
    a = [split_of(0, "lfw", i) for i in ids]
    assert a == [split_of(0, "lfw", i) for i in ids]  # pure function of (seed, key)
    frac = {s: a.count(s) / len(a) for s in ("train", "val", "test")}
    assert abs(frac["train"] - 0.60) < 0.03 and abs(frac["val"] - 0.15) < 0.03
    real = [split_of(0, "real", f"{i:04d}.jpg") for i in range(4000)]
    assert abs(real.count("test") / 4000 - 0.40) < 0.03
    assert [split_of(1, "lfw", i) for i in ids] != a  # the seed changes the split


def _toy(n, rng):
    """Faces-like toy crops: positives have a dark lower half (a 'mask')."""
    x = rng.integers(120, 200, (n, 24, 24, 3)).astype(np.uint8)
    y = (np.arange(n) % 2).astype(np.float32)
    x[y == 1, 12:] //= 3
    return x, y


def test_classifier_learns_and_threshold_is_strict():
    import torch

    rng = np.random.default_rng(0)
    cfg = RealismConfig(crop=24, epochs=2, batch_size=32, threads=1)
    x, y = _toy(128, rng)
    model = train_classifier(x, y, cfg, "toy")
    xv, yv = _toy(200, rng)
    thr = operating_point(model, xv[yv == 1], xv[yv == 0], 0.05)
    xt, yt = _toy(200, rng)
    row = score_row(model, thr, xt[yt == 1], xt[yt == 0])
    assert row["auc"] > 0.95 and row["recall"] > 0.8 and row["fpr"] <= 0.1
    # labels unrelated to the images (no dark half anywhere): test AUC near chance
    xn = rng.integers(120, 200, (200, 24, 24, 3)).astype(np.uint8)
    r2 = score_row(model, thr, xn[:100], xn[100:])
    assert 0.35 < r2["auc"] < 0.65
    # same seed and tag -> the same weights
    again = train_classifier(x, y, cfg, "toy")
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown occluder"):
        RealismConfig(occluders=("surgical_mask", "nope")).validate()
    with pytest.raises(ConfigError, match="also a tested occluder"):
        RealismConfig(occluders=("sunglasses",), control="sunglasses").validate()


@pytest.mark.slow  # ~15 s alone (230 images meshed and occluded, 3 small CNNs)
def test_cli_realism_small_slice(lfw_images, rwmfd_root, tmp_path):
    out = tmp_path / "r.json"
    args = ["realism", "--occluders", "surgical_mask,n95", "--no-per-occluder", "--lfw", str(lfw_images),
            "--real", str(rwmfd_root), "--lfw-limit", "160", "--real-limit", "70", "--epochs", "1", "-q",
            "--out", str(out)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "| TSTR | surgical_mask+n95 |" in res.output and "| TRTR |" in res.output and "(control)" in res.output
    data = json.loads(out.read_text())
    rows = {(r["row"], r["occluder"]): r for r in data["rows"]}
    assert set(rows) == {("TSTR", "surgical_mask+n95"), ("TSTS", "surgical_mask+n95"),
                         ("TRTS", "surgical_mask+n95"), ("TRTR", "-"), ("TSTR (control)", "sunglasses"),
                         ("TSTS (control)", "sunglasses"), ("TRTS (control)", "sunglasses")}
    for r in data["rows"]:
        assert 0.0 <= r["auc"] <= 1.0 and 0.0 <= r["recall"] <= 1.0 and r["n_pos"] > 0 and r["n_neg"] > 0
    # TSTR and TSTS share model, threshold and negatives
    tstr, tsts = rows[("TSTR", "surgical_mask+n95")], rows[("TSTS", "surgical_mask+n95")]
    assert tstr["threshold"] == tsts["threshold"] and tstr["fpr"] == tsts["fpr"] and tstr["n_neg"] == tsts["n_neg"]
    c = data["counts"]
    assert c["lfw_images"] == 160 and c["real_images"] == 70
    assert sum(c["real_faces"].values()) + c["noface"]["real"] == 70
    assert len(data["noface"]) == c["noface"]["lfw"] + c["noface"]["real"]
    assert data["config"]["seed"] == 0 and data["version"]


def test_cli_realism_errors(tmp_path):
    r = CliRunner().invoke(cli, ["realism", "--occluders", "surgical_mask,bogus", "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 1 and "unknown occluder(s) bogus" in r.output
    r = CliRunner().invoke(cli, ["realism", "--occluders", ","])
    assert r.exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(cli, ["realism", "--lfw", str(empty), "--real", str(empty),
                                 "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 1 and "no images found" in r.output
