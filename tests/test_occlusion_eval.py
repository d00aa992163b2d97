"""End to end: occlusion estimates through the engine, results JSON, console, plots, leaderboard, cache."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from occbench.bench.evaluate import evaluate
from occbench.bench.protocols import load_protocol
from occbench.cli import cli
from occbench.recognizers import Preprocess, create_recognizer, save_torchscript
from occbench.recognizers.archs import create_arch
from test_evaluate import TinyRecognizer, make_pairs_set, occ_protocol_file


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    base = tmp_path_factory.mktemp("occl")
    data = base / "data"
    pairs = make_pairs_set(data)
    prot = load_protocol(occ_protocol_file(base)).with_overrides(pairs=pairs)
    return {"base": base, "data": data, "pairs": pairs, "protocol": prot, "yaml": base / "gen-occ.yaml"}


def _run(gen, rec, name, plots=False):
    return evaluate(gen["protocol"], rec, data_root=gen["data"], out_dir=gen["base"] / "results" / name,
                    cache_dir=gen["base"] / "cache", progress=False, plots=plots, model_info={"name": name})


def _estimate(res, variant):
    return res["variants"][variant]["occlusion"]["estimate"]


def test_oracle_bounds_through_the_engine(gen):
    res = _run(gen, create_recognizer("oracle"), "oracle", plots=True)
    for v in ("N-O", "O-O", "N-O@s1.0", "N-O/free@s2.0"):
        e = _estimate(res, v)
        assert e["mask"]["iou_occluded"] == 1.0 and e["pattern"]["top1"] == 1.0, v
        assert e["frame"] == "model crop" and e["tau"] == 0.5 and e["grid"] == [14, 14]
    clean = _estimate(res, "clean")
    assert clean["false_occlusion"]["pixel_rate"] == 0.0 and clean["pattern"]["top1"] == 1.0
    link = res["variants"]["N-O"]["occlusion"]["recognition_by_estimate"]
    assert link["by_pattern"]["wrong"]["n_pairs"] == 0
    assert sum(t["n_pairs"] for t in link["mask_iou_tertiles"]) > 0
    assert {"area", "cells"} <= set(res["variants"]["N-O"]["occlusion"])  # the engine's own blocks stay
    plots = res["files"]["plots"]
    assert {"gen-occ.occl_sheet.png", "gen-occ.occl_iou_area.png"} <= set(plots)


def test_blind_bounds_and_model_without_outputs(gen):
    res = _run(gen, create_recognizer("blind"), "blind")
    e = _estimate(res, "N-O")
    assert e["mask"]["iou_occluded"] == 0.0
    assert e["pattern"]["top1"] == e["pattern"]["clean_share"] == 0.0  # every probe is occluded
    assert _estimate(res, "clean")["pattern"]["top1"] == 1.0
    plain = _run(gen, TinyRecognizer(), "plain")
    assert "estimate" not in plain["variants"]["N-O"].get("occlusion", {})


def test_learned_model_file_cli_leaderboard_and_cache(gen, tmp_path):
    torch.manual_seed(0)
    m = create_arch("tiny-occ", width=4, num_features=16).eval()
    path = tmp_path / "tiny_occ.pt"
    save_torchscript(m, path, Preprocess(), "tiny-occ")
    out = gen["base"] / "results"
    args = ["eval", "-m", str(path), "-p", str(gen["yaml"]), "--pairs", str(gen["pairs"]), "--data-root",
            str(gen["data"]), "--out", str(out), "--cache-dir", str(gen["base"] / "cache"), "--no-progress",
            "--no-plots"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    row = next(ln for ln in r.output.splitlines() if ln.startswith("N-O "))
    assert "mask IoU" in row and "pattern top-1" in row
    first = json.loads((out / "tiny_occ" / "gen-occ.json").read_text())
    r2 = CliRunner().invoke(cli, args)  # embeddings and predictions from the cache: the same estimates
    assert r2.exit_code == 0, r2.output
    second = json.loads((out / "tiny_occ" / "gen-occ.json").read_text())
    assert second["cache"]["embedding_hits"] == second["cache"]["embedding_sets"]
    assert _estimate(second, "N-O") == _estimate(first, "N-O")
    _run(gen, TinyRecognizer(), "plain")
    r3 = CliRunner().invoke(cli, ["leaderboard", str(out), "-o", str(tmp_path / "lb.csv")])
    assert r3.exit_code == 0, r3.output
    import pandas as pd

    lb = pd.read_csv(tmp_path / "lb.csv")
    main = lb[lb.variant == "N-O"].set_index("model")
    assert main.loc["plain", ["mask_iou_pct", "pattern_top1_pct"]].isna().all()  # no outputs: empty
    assert np.isfinite(main.loc["tiny_occ", "mask_iou_pct"]) and main.loc["tiny_occ", "mask_iou_pct"] >= 0
    md = (tmp_path / "lb.md").read_text()
    assert "mask IoU" in md and "pattern top-1" in md


class NaNMasks(torch.nn.Module):
    """Returns NaN masks for the first image of every batch: counted, not averaged in."""

    output_spec = {"mask": {"key": "mask", "scale": "probabilities", "occluded": 1}}

    def forward(self, x):
        n = x.shape[0]
        mask = torch.zeros(n, 1, 14, 14)
        mask[0] = float("nan")
        return {"embedding": x.mean(dim=(2, 3)) + torch.arange(3.0), "mask": mask}


def nan_factory():
    return NaNMasks()


def test_nan_masks_are_counted(gen):
    rec = create_recognizer("test_occlusion_eval:nan_factory", device="cpu")
    res = _run(gen, rec, "nan")
    e = _estimate(res, "N-O")
    assert e["mask"]["n_nan"] >= 1 and any("NaN" in n for n in e["notes"])
    assert e["mask"]["n_images"] + e["mask"]["n_nan"] == e["n_images"]
    assert "pattern" not in e
