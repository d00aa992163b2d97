"""Issue 11 "done means": a 20,000-image --format rec run on --dask local:2, killed once and resumed,
read back with OccludedDataset and an independent RecordIO reader, byte-identical to --jobs 1.

Slow (minutes). OCCBENCH_SCALE_N sets the image count (default 20000) for a quicker check.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from occbench.io.recordio import IRHeader, RecordIOWriter, pack
from run_outputs import output_files
from test_shards import read_rec_independently

N = int(os.environ.get("OCCBENCH_SCALE_N", "20000"))
SHARD = max(1, N // 40)


def _aligned_crops(lfw: Path, dest: Path) -> list[tuple[str, bytes]]:
    """(identity, 112x112 JPEG) for every LFW image MediaPipe finds a face in."""
    from occbench.face.geometry import align
    from occbench.face.landmarks import create_landmarker
    from occbench.io.images import encode, read_rgb

    lm = create_landmarker("mediapipe")
    out = []
    for p in sorted(lfw.rglob("*.jpg"))[: max(N, 50)]:
        res = lm.detect(read_rgb(p), key=p.name)
        if res.landmarks is not None:
            crop, _ = align(read_rgb(p), res.landmarks.five)
            out.append((p.parent.name, encode(crop, "jpg", 95)))
    lm.close()
    return out


def _run_cmd(src: Path, out: Path, dask: str | None, jobs: int = 1) -> list[str]:
    code = ("from occbench.synth.pipeline import SynthConfig; from occbench.synth.sharded import run_synth_sharded; "
            f"run_synth_sharded(SynthConfig(src={str(src)!r}, out={str(out)!r}, landmarks='template', "
            f"scales=(1.0, 1.5, 2.0), clean_ratio=0.25, bank=16, seed=11, jobs={jobs}), 'rec', {SHARD}, "
            f"dask={dask!r}, progress=False)")
    return [sys.executable, "-c", code]


@pytest.mark.slow
def test_20k_rec_on_dask_killed_and_resumed(lfw_images, tmp_path):
    crops = _aligned_crops(lfw_images, tmp_path)
    names = sorted({c[0] for c in crops})
    label_of = {n: i for i, n in enumerate(names)}
    src = tmp_path / "src" / "train.rec"
    src.parent.mkdir()
    # N images from the LFW crops by repeating them: every record its own key (rec/<i>), so its own seed
    with RecordIOWriter(src) as w:
        w.write(pack(IRHeader(0, [float(N + 1), float(N + 1)], 0, 0)), key=0)
        for i in range(N):
            name, data = crops[i % len(crops)]
            w.write(pack(IRHeader(0, float(label_of[name]), i + 1, 0), data), key=i + 1)

    one = tmp_path / "one"
    subprocess.run(_run_cmd(src, one, None), check=True)

    out = tmp_path / "dask"
    proc = subprocess.Popen(_run_cmd(src, out, "local:2"), start_new_session=True)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "shards").glob("*.done.json"))) >= 8:
            os.killpg(proc.pid, signal.SIGKILL)  # the client, the cluster and its workers, mid-run
            break
        time.sleep(0.2)
    proc.wait()
    assert not (out / "train.rec").exists(), "the run finished before it could be killed"
    subprocess.run(_run_cmd(src, out, "local:2"), check=True)  # resume

    assert output_files(out) == output_files(one)
    recs = read_rec_independently(out / "train.rec")[1:]
    m = pd.read_parquet(out / "train.parquet")
    assert len(recs) == len(m) == N  # every image once (no face-less crops among aligned LFW)
    assert sorted(m.key) == sorted(f"rec/{i + 1}" for i in range(N))
    want = {f"rec/{i + 1}": label_of[crops[i % len(crops)][0]] for i in range(N)}
    assert [lab for lab, _ in recs] == [float(want[k]) for k in m.key]

    from occbench.torch import OccludedDataset

    ds = OccludedDataset(str(out), landmarks="template", clean_ratio=1.0)
    assert len(ds) == N and ds.labels == [want[k] for k in m.key]
    image, label, mask, pattern = ds[N - 1]
    assert label == want[m.key.iloc[N - 1]] and pattern == 0 and int(mask.max()) == 0
