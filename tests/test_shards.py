"""Sharded synth output (--format rec|wds): byte-identity, read-back, resume per shard, bad inputs."""
from __future__ import annotations

import json
import struct
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from occbench.io import shards as sh
from occbench.io.sources import RecordIOSource, open_source
from occbench.synth.occluders import list_occluders
from occbench.synth.pipeline import SynthConfig, run_synth
from occbench.synth.sharded import label_map, run_synth_sharded
from synthetic_faces import write_faces
from run_outputs import output_files


def read_rec_independently(rec: Path) -> list[tuple[float, bytes]]:
    """A RecordIO reader written from the format description, sharing no code with occbench:
    frames of <magic, lrec>, payload = IRHeader <IfQQ> (+ flag float labels) + image."""
    data, pos, out = rec.read_bytes(), 0, []
    while pos < len(data):
        magic, lrec = struct.unpack_from("<II", data, pos)
        assert magic == 0xCED7230A and lrec >> 29 == 0  # our writer never splits image records
        n = lrec & ((1 << 29) - 1)
        payload = data[pos + 8:pos + 8 + n]
        pos += 8 + n + (-n % 4)
        flag, label, _, _ = struct.unpack_from("<IfQQ", payload)
        body = payload[24 + 4 * flag:]
        out.append((label if flag == 0 else None, body))
    return out


def _faces(root: Path) -> Path:
    src = root / "src"
    write_faces(src, 10, 112, "jpg")
    write_faces(src / "png", 2, 112, "png", seed=1)
    (src / "zz").mkdir()
    (src / "zz" / "broken.jpg").write_bytes(b"not an image")
    return src


def _cfg(src, out, **kw):
    kw.setdefault("occluders", tuple(list_occluders()[:3]))
    kw.setdefault("seed", 7)
    kw.setdefault("clean_ratio", 0.25)
    return SynthConfig(src=str(src), out=str(out), **kw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    src = _faces(root)
    files = root / "files"
    run_synth(_cfg(src, files), progress=False)
    outs = {}
    for fmt in ("rec", "wds"):
        for jobs in (1, 2):
            outs[fmt, jobs] = root / f"{fmt}{jobs}"
            run_synth_sharded(_cfg(src, outs[fmt, jobs], jobs=jobs), fmt, 4, progress=False)
    return src, files, outs


@pytest.mark.parametrize("fmt", ["rec", "wds"])
def test_shards_and_list_are_identical_for_any_jobs(runs, fmt):
    _, _, outs = runs
    a, b = output_files(outs[fmt, 1]), output_files(outs[fmt, 2])
    assert a == b
    index = json.loads(a[sh.INDEX_FILE])
    assert [s["name"] for s in index["shards"]] == [f"{fmt}-0000{i}" for i in range(4)]  # 13 items / 4


def _files_run_samples(files: Path):
    m = pd.read_parquet(files / "manifest.parquet")
    good = m[m.status.isin(["ok", "clean"])]
    return m, good


def test_rec_reads_back_byte_for_byte_with_labels(runs):
    src, files, outs = runs
    out = outs["rec", 1]
    m, good = _files_run_samples(files)
    recs = read_rec_independently(out / "train.rec")
    assert recs[0][0] is None and not recs[0][1]  # header record 0
    images = [body for _, body in recs[1:]]
    assert images == [(files / p).read_bytes() for p in good.image]  # every image once, same engine
    labels = label_map(m.identity)
    assert [lab for lab, _ in recs[1:]] == [float(labels[i]) for i in good.identity]
    assert (out / "property").read_text() == f"{len(set(m.identity))},112,112\n"  # every identity of the run
    # occbench's own source reads it back too: same bytes, identities = labels
    s = open_source(out)
    assert isinstance(s, RecordIOSource) and len(s) == len(good)
    assert [s.read_bytes(it) for it in s.items()] == images
    t = pd.read_parquet(out / "train.parquet")
    assert t.record.tolist() == list(range(1, len(good) + 1))
    assert t.key.tolist() == good.key.tolist() and t.pattern.tolist() == good.pattern.tolist()
    assert [bytes(b) for b in t.mask_png] == [(files / p).read_bytes() for p in good["mask"]]
    # the manifest keeps the error row of the broken image, as a files run does
    ms = pd.read_parquet(out / "manifest.parquet")
    cols = ["key", "status", "reason", "pattern", "area_frac", "cells", "params", "occluder"]
    pd.testing.assert_frame_equal(ms[cols], m[cols])
    assert (ms.status == "error").sum() == 1


def test_wds_members_and_read_back(runs):
    _, files, outs = runs
    out = outs["wds", 1]
    _, good = _files_run_samples(files)
    got = []
    for shard in sorted((out / sh.SHARD_DIR).glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (946684800, 0, 0, "", "", 0o644)
        got.extend(sh.iter_wds(shard))
    assert len(got) == len(good)
    for sample, (_, row) in zip(got, good.iterrows()):
        assert "." not in sample["__key__"]
        assert sample["jpg" if row.image.endswith(".jpg") else "png"] == (files / row.image).read_bytes()
        assert sample["mask.png"] == (files / row["mask"]).read_bytes()
        meta = json.loads(sample["json"])
        assert meta["key"] == row.key and meta["pattern"] == row.pattern and meta["cells"] == json.loads(row.cells)
    src = sh.WdsSource(out)
    assert [it.key for it in src.items()] == good.key.tolist()
    assert [src.read_bytes(it) for it in src.items()] == [(files / p).read_bytes() for p in good.image]
    # any occbench source feeds the on-the-fly dataset, shards too (opened by path)
    from occbench.io.images import decode_rgb
    from occbench.torch import OccludedDataset

    ds = OccludedDataset(str(out), landmarks="template", clean_ratio=1.0)
    assert ds.keys == good.key.tolist()
    assert (ds[0][0].permute(1, 2, 0).numpy() == decode_rgb((files / good.image.iloc[0]).read_bytes())).all()


def test_resume_redoes_only_broken_shards(runs, tmp_path):
    src, _, outs = runs
    out = tmp_path / "rec"
    cfg = _cfg(src, out)
    run_synth_sharded(cfg, "rec", 4, progress=False)
    shard = out / sh.SHARD_DIR / "rec-00001.rec"
    raw = bytearray(shard.read_bytes())
    raw[100] ^= 0xFF
    shard.write_bytes(bytes(raw))  # same size, other content: caught by the SHA-256
    (out / sh.SHARD_DIR / "rec-00002.done.json").unlink()  # killed before its done record
    (out / sh.SHARD_DIR / ".rec-00003.parquet.k1ll3d.tmp").write_bytes(b"PAR1")  # killed mid-write
    (out / ".train.rec.k1ll3d.tmp").write_bytes(b"x")
    s = run_synth_sharded(cfg, "rec", 4, progress=False)
    assert s.resumed == 13 - 8 and s.processed == 8
    assert output_files(out) == output_files(outs["rec", 1])


def test_a_changed_shard_size_is_refused_unless_overwrite(runs, tmp_path):
    from occbench.errors import OccbenchError

    src, _, outs = runs
    out = tmp_path / "wds"
    run_synth_sharded(_cfg(src, out), "wds", 5, progress=False)
    with pytest.raises(OccbenchError, match="(?i)output|shard"):
        run_synth_sharded(_cfg(src, out), "wds", 4, progress=False)
    run_synth_sharded(_cfg(src, out, overwrite=True), "wds", 4, progress=False)
    assert output_files(out) == output_files(outs["wds", 1])


def test_label_map():
    assert label_map(["3", "10", "3"]) == {"3": 3, "10": 10, "": -1}
    assert label_map(["bob", "amy"]) == {"amy": 0, "bob": 1, "": -1}
    assert label_map(["1.5", "2"])["1.5"] == 0


def test_shard_writers_are_deterministic_and_verified(tmp_path):
    s = [sh.ShardSample(sh.sample_key(i, 0), i % 2, bytes([i]) * 10, "jpg", b"\x89PNG" + bytes([i]),
                        {"key": f"a/{i}.jpg", "cells": "[0.5]", "params": "{}"}) for i in range(3)]
    d1 = sh.write_shard("wds", tmp_path / "a", "wds-00000", s)
    d2 = sh.write_shard("wds", tmp_path / "b", "wds-00000", s)
    assert d1 == d2 and sh.verified_shard(tmp_path / "a", "wds-00000") == d1
    (tmp_path / "a" / "wds-00000.tar").write_bytes(b"x")
    assert sh.verified_shard(tmp_path / "a", "wds-00000") is None
    with pytest.raises(Exception, match="dot"):
        sh.write_wds_shard(tmp_path, "bad", [sh.ShardSample("a.b", 0, b"", "jpg", b"")])
    sh.write_shard("rec", tmp_path / "r", "rec-00000", s)
    shard = sh.RecShard(tmp_path / "r", "rec-00000")
    assert len(shard) == 3 and shard.read(2)[1] == bytes([2]) * 10 and shard.read(1)[0].label == 1.0
    assert np.array_equal(shard.meta.record, [0, 1, 2])


def test_cli_format_wds_then_its_shards_as_src(runs, tmp_path):
    from click.testing import CliRunner

    from occbench.cli import cli as main

    src, _, outs = runs
    occ = ",".join(list_occluders()[:3])
    out = tmp_path / "wds"
    args = ["synth", "--src", str(src), "--out", str(out), "--occluders", occ, "--seed", "7", "--clean-ratio", "0.25",
            "--format", "wds", "--shard-size", "4", "--no-progress"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert output_files(out) == output_files(outs["wds", 1])  # the CLI gives the library's bytes
    # a prior run's shards as --src: occlude the occluded set again
    again = tmp_path / "again"
    r = CliRunner().invoke(main, ["synth", "--src", str(out), "--out", str(again), "--occluders", occ,
                                  "--landmarks", "template", "--no-progress"])
    assert r.exit_code == 0, r.output
    m = pd.read_parquet(again / "manifest.parquet")
    assert len(m) == 12 and set(m.status) <= {"ok", "clean"}
    r = CliRunner().invoke(main, ["synth", "--src", str(src), "--out", str(tmp_path / "x"), "--dask", "local:0"])
    assert r.exit_code != 0 and "local:N with N >= 1" in r.output


def test_temp_files_of_a_worker_that_died_mid_shard_are_not_left_in_the_output(runs, tmp_path, monkeypatch):
    """A worker killed while writing leaves `.x.tmp` in shards/; once its shard is redone elsewhere the run
    must end with exactly the files of an uninterrupted run (the Dask kill test found this)."""
    from occbench.synth import sharded

    src, _, outs = runs
    real = sharded.render_shard

    def render_beside_a_dead_worker(spec, task, *a, **kw):
        folder = Path(spec["out"]) / "shards"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f".{task['name']}.rec.deadbeef.tmp").write_bytes(b"half a shard")  # the dead worker's leftover
        return real(spec, task, *a, **kw)

    monkeypatch.setattr(sharded, "render_shard", render_beside_a_dead_worker)
    out = tmp_path / "rec"
    run_synth_sharded(_cfg(src, out, jobs=1), "rec", 4, progress=False)
    assert output_files(out) == output_files(outs["rec", 1])
