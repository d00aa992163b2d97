"""Crash isolation in shard mode (--format rec|wds, --dask): a worker process that dies on one image
costs that image one error row, never a lost or failed shard (as in a files run)."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest

from occbench.synth.manifest import read_manifest
from occbench.synth.pipeline import CRASH_HOOK_ENV, SynthConfig
from occbench.synth.sharded import JOURNAL_DIR, run_synth_sharded
from cli_subprocess import crash_then_rerun
from synthetic_faces import write_faces
from run_outputs import output_files

OCC = ("surgical_mask", "sunglasses")
BAD = "id1/face_0004.jpg"  # in shard rec-00001
REASON = "the worker process crashed on this image (signal SIGABRT)"


def _cfg(src, out, **kw) -> SynthConfig:
    return SynthConfig(src=str(src), out=str(out), landmarks="template", occluders=OCC, seed=3, **kw)


@pytest.fixture(scope="module")
def crashed_run(tmp_path_factory):
    """12 faces in shards of 4, --jobs 2, the test hook aborting the worker on BAD."""
    root = tmp_path_factory.mktemp("shard-crash")
    src = root / "src"
    write_faces(src, 12, 112, "jpg")
    clean = root / "clean"
    run_synth_sharded(_cfg(src, clean, jobs=2), "rec", 4, progress=False)
    out = root / "crash"
    mp = pytest.MonkeyPatch()
    mp.setenv(CRASH_HOOK_ENV, BAD)
    try:
        summary = run_synth_sharded(_cfg(src, out, jobs=2), "rec", 4, progress=False)
    finally:
        mp.undo()
    return src, clean, out, summary


def test_a_worker_crash_in_a_shard_is_one_error_row(crashed_run):
    _, clean, out, s = crashed_run
    assert s.crashed == 1 and s.status_counts == {"error": 1, "ok": 11} and s.reason_counts == {REASON: 1}
    df = read_manifest(out).set_index("key")
    assert df.loc[BAD, "status"] == "error" and df.loc[BAD, "reason"] == REASON
    ref = read_manifest(clean).set_index("key")
    cols = [c for c in df.columns if c not in ("image", "mask")]
    others = [k for k in ref.index if k != BAD]
    pd.testing.assert_frame_equal(df.loc[others, cols], ref.loc[others, cols])
    a, b = output_files(clean), output_files(out)
    # shards without the culprit are byte-identical to a run without the crash; nothing is left in flight
    for name in ("rec-00000", "rec-00002"):
        assert {k: v for k, v in a.items() if name in k} == {k: v for k, v in b.items() if name in k}
    assert a["shards/rec-00001.rec"] != b["shards/rec-00001.rec"]
    assert not any((out / ".synth" / JOURNAL_DIR).iterdir())


def _cli(src, out, *extra) -> list[str]:
    return [sys.executable, "-c", "from occbench.cli import main; main()", "synth", "--src", str(src), "--out",
            str(out), "--landmarks", "template", "--occluders", ",".join(OCC), "--seed", "3", "--format", "rec",
            "--shard-size", "4", "--no-progress", *extra]


def test_a_crash_at_jobs_1_is_isolated_on_the_rerun_and_matches_jobs_2(crashed_run, tmp_path):
    """--jobs 1 renders in the main process: the crash ends it; the rerun finds the image in the shard
    journal, renders it alone in a fresh process, records the error row, and the output equals the
    --jobs 2 run's byte for byte."""
    src, _, ref, _ = crashed_run
    out = tmp_path / "j1"
    crash_then_rerun(_cli(src, out), BAD)
    a, b = output_files(ref), output_files(out)
    tables = ("manifest", "synth.json", "landmarks")  # hold the run's paths and config: compared as rows
    assert {k: v for k, v in a.items() if not k.startswith(tables)} == \
        {k: v for k, v in b.items() if not k.startswith(tables)}
    cols = lambda df: df[[c for c in df.columns if c != "src"]]  # noqa: E731
    pd.testing.assert_frame_equal(cols(read_manifest(out)), cols(read_manifest(ref)))


def test_a_worker_death_no_image_explains_is_one_clear_error(crashed_run, tmp_path, monkeypatch):
    """A worker that dies while no image crashes alone (out of memory, killed) stops the run with one
    line saying to rerun, and the rerun resumes."""
    from occbench.errors import OccbenchError
    from occbench.synth import sharded

    src = crashed_run[0]
    real = sharded._run_task
    monkeypatch.setattr(sharded, "_run_task", lambda spec, task: os.kill(os.getpid(), signal.SIGKILL)
                        if task["name"] == "rec-00001" else real(spec, task))
    out = tmp_path / "oom"
    with pytest.raises(OccbenchError, match="none of the images it was on crashes alone"):
        run_synth_sharded(_cfg(src, out, jobs=2), "rec", 4, progress=False)
    monkeypatch.setattr(sharded, "_run_task", real)
    s = run_synth_sharded(_cfg(src, out, jobs=2), "rec", 4, progress=False)
    assert s.status_counts == {"ok": 12} and s.crashed == 0 and s.resumed >= 0


@pytest.mark.slow
def test_a_crash_on_dask_is_one_error_row_and_matches_jobs_2(crashed_run, tmp_path, monkeypatch):
    """On Dask the task that kills its worker every time ends as KilledWorker: the image it was on is
    found, rendered alone, recorded as an error row, and the output equals the --jobs 2 run's."""
    pytest.importorskip("distributed")
    src, _, ref, _ = crashed_run
    monkeypatch.setenv(CRASH_HOOK_ENV, BAD)
    out = tmp_path / "dask"
    s = run_synth_sharded(_cfg(src, out), "rec", 4, dask="local:2", progress=False)
    assert s.crashed == 1 and s.reason_counts == {REASON: 1}
    a, b = output_files(ref), output_files(out)
    tables = ("manifest", "synth.json", "landmarks")
    assert {k: v for k, v in a.items() if not k.startswith(tables)} == \
        {k: v for k, v in b.items() if not k.startswith(tables)}


@pytest.mark.slow
def test_a_crash_on_dask_in_a_files_run_is_one_error_row_and_matches_jobs_2(crashed_run, tmp_path, monkeypatch):
    """--format files on Dask: the batch that kills its worker every time is found through the crash
    journal, its image rendered alone and recorded as one error row, the rest as in a --jobs 2 run."""
    pytest.importorskip("distributed")
    from occbench.synth.pipeline import run_synth

    src = crashed_run[0]
    monkeypatch.setenv(CRASH_HOOK_ENV, BAD)
    ref = run_synth(_cfg(src, tmp_path / "jobs2", jobs=2), progress=False)
    s = run_synth(_cfg(src, tmp_path / "dask", dask="local:2"), progress=False)
    assert s.crashed == ref.crashed == 1 and s.reason_counts == ref.reason_counts == {REASON: 1}
    assert s.status_counts == ref.status_counts == {"error": 1, "ok": 11}
    assert output_files(tmp_path / "dask") == output_files(tmp_path / "jobs2")
