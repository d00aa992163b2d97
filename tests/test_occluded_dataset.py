"""occbench.torch.OccludedDataset: same pixels as synth, deterministic for any num_workers, epochs."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from occbench.io.images import decode_rgb
from occbench.synth.occluders import list_occluders
from occbench.synth.pipeline import run_synth
from occbench.torch import OccludedDataset, epoch_seed
from synthetic_faces import write_faces


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "src"
    write_faces(root, 9, 112, "jpg")
    write_faces(root / "png", 2, 112, "png", seed=4)
    return root


def _ds(src, **kw):
    kw.setdefault("occluders", tuple(list_occluders()[:4]))
    return OccludedDataset(str(src), seed=kw.pop("seed", 5), scales=(1.0, 1.5), clean_ratio=0.3, **kw)


@pytest.mark.parametrize("epoch", [0, 2])
def test_items_are_the_pixels_synth_writes(src, tmp_path, epoch):
    ds = _ds(src, return_params=True)
    ds.set_epoch(epoch)
    out = tmp_path / "synth"
    run_synth(ds.synth_config(str(out)), progress=False)
    m = pd.read_parquet(out / "manifest.parquet").set_index("key")
    assert len(ds) == len(m) == 11
    for i in range(len(ds)):
        image, label, mask, pattern, params = ds[i]
        row = m.loc[ds.keys[i]]
        assert params["status"] == row.status and pattern == row.pattern
        assert params["params"] == row.params and params["cells"] == row.cells
        assert image.dtype == mask.dtype == torch.uint8
        assert np.array_equal(image.permute(1, 2, 0).numpy(), decode_rgb((out / row.image).read_bytes()))
        want = cv2.imread(str(out / row["mask"]), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(mask.numpy(), want)
        assert label == ds.class_ids[row.identity]
    assert {m.loc[k].status for k in ds.keys} >= {"ok", "clean"}


def _collect(ds, workers, order=None):
    dl = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=workers, shuffle=False,
                                     sampler=order, multiprocessing_context="fork" if workers else None)
    return [(b[0].clone(), b[2].clone(), b[3].clone()) for b in dl]


def test_deterministic_for_any_num_workers_and_order(src):
    ds = _ds(src, bank=4)
    a = _collect(ds, 0)
    b = _collect(ds, 2)
    for x, y in zip(a, b):
        assert all(torch.equal(p, q) for p, q in zip(x, y))
    rev = list(reversed(range(len(ds))))
    c = _collect(ds, 0, rev)
    flat_a = torch.cat([x[0] for x in a])
    flat_c = torch.cat([x[0] for x in c])
    assert torch.equal(flat_c, flat_a[rev])


def test_set_epoch_gives_a_fresh_draw(src):
    ds = _ds(src)
    e0 = [ds[i][0] for i in range(len(ds))]
    ds.set_epoch(1)
    e1 = [ds[i][0] for i in range(len(ds))]
    assert any(not torch.equal(x, y) for x, y in zip(e0, e1))
    ds.set_epoch(0)
    assert all(torch.equal(x, ds[i][0]) for i, x in enumerate(e0))
    assert epoch_seed(5, 0) == 5 and epoch_seed(5, 1) != epoch_seed(5, 2)


@pytest.mark.slow
def test_train_on_the_fly_example_runs(capsys):
    import runpy
    from pathlib import Path

    ex = Path(__file__).resolve().parents[1] / "examples" / "train_on_the_fly.py"
    mod = runpy.run_path(str(ex), run_name="train_on_the_fly")
    assert mod["main"](["--synthetic", "12", "--steps", "3", "--workers", "1"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "loss" in ln]
    assert len(lines) == 3
