"""Faults: a corpus of bad inputs, worker crashes, kills, concurrent runs and output-side failures.

Nothing crashes the run, nothing finished is lost: every input entry is a manifest row or listed in
skipped.csv, and every fault ends in output byte-identical to a clean run. No root needed: full disks
and read-only folders are simulated with monkeypatched writes and RLIMIT_FSIZE.
"""
from __future__ import annotations

import errno
import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from occbench.cli import cli
from occbench.errors import OutputWriteError, RunLockedError
from occbench.synth import pipeline
from occbench.synth.manifest import read_manifest
from occbench.synth.pipeline import CRASH_HOOK_ENV, OutLock, SynthConfig, run_synth
from cli_subprocess import cli_env, crash_then_rerun
from synthetic_faces import synthetic_face, write_faces

OCC = ("surgical_mask", "sunglasses")


def tree_bytes(out: Path) -> dict[str, bytes]:
    """Every output file (not the internal .synth state) by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".synth" not in p.relative_to(out).parts}


def _cfg(src, out, **kw) -> SynthConfig:
    kw.setdefault("occluders", OCC)
    kw.setdefault("landmarks", "template")
    return SynthConfig(src=str(src), out=str(out), **kw)


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header says w x h (30000 x 30000: 900 MP) with one tiny IDAT: never decoded."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _gif(frames: int) -> bytes:
    from PIL import Image

    imgs = [Image.new("RGB", (16, 16), (80 * i, 40, 200 - 50 * i)) for i in range(frames)]
    buf = io.BytesIO()
    imgs[0].save(buf, "GIF", save_all=frames > 1, append_images=imgs[1:])
    return buf.getvalue()


# key -> what its row's reason says (None: an ok row)
ROWS = {
    "a/good_0.jpg": None,
    "a/good_1.jpg": None,
    "trailing/extra.jpg": None,  # bytes after the JPEG end-of-image marker (0.2 called it truncated)
    "dup/x.jpg": None,  # x.jpg and x.webp shared one mask file in 0.2
    "dup/x.webp": None,
    "conv/rgba.png": None,
    "conv/deep.png": None,
    "trunc/cut.jpg": "truncated JPEG",
    "trunc/empty.jpg": "empty file",
    "trunc/text.jpg": "not a recognised image format",
    "huge/big.png": "30000x30000 (900.0 MP), above the 50 MP limit",
    "anim/moving.gif": "animated GIF (3 frames) is not supported",
    "anim/still.gif": "GIF is not supported",
    "links/outside.jpg": "symlink to a file outside the source",
    "links/dangling.jpg": "dangling symlink",
    "special/pipe.jpg": "not a regular file",
    "odd/back\\slash.jpg": "backslash",
    "~tilde.jpg": "starts with '~'",
    "odd/ctrl\x01.jpg": "control characters",
    "odd/latin\\xff.jpg": "not valid UTF-8",  # the printable form of the name's raw byte 0xff
    "named.png/inner.jpg": None,  # inside a folder named like an image
}
# skipped.csv category -> paths
SKIPPED = {
    "empty folder": ["empty.jpg"],
    "folder named like an image (scanned as a folder)": ["empty.jpg", "named.png"],
    "hidden entry": [".hidden.jpg"],
    "not an image file (extension)": ["notes.txt"],
    "symlinked folder (not followed)": ["linked_dir"],
}
CONVERSIONS = {"conv/rgba.png": "alpha channel dropped", "conv/deep.png": "16-bit -> 8-bit"}


def bad_corpus(root: Path, outside: Path) -> Path:
    """Every kind of bad input seen in the field, beside good 112x112 crops (template landmarks)."""
    face, _ = synthetic_face(112, seed=5)
    jpg = cv2.imencode(".jpg", face[..., ::-1])[1].tobytes()

    def put(rel, data):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    for i in range(2):
        put(f"a/good_{i}.jpg", cv2.imencode(".jpg", synthetic_face(112, seed=i)[0][..., ::-1])[1].tobytes())
    put("trailing/extra.jpg", jpg + b"\x00" * 100 + b"camera maker notes after EOI")
    put("dup/x.jpg", jpg)
    put("dup/x.webp", cv2.imencode(".webp", face[..., ::-1])[1].tobytes())
    put("conv/rgba.png", cv2.imencode(".png", np.dstack([face[..., ::-1], np.full((112, 112), 200, np.uint8)]))[1].tobytes())
    put("conv/deep.png", cv2.imencode(".png", face[..., ::-1].astype(np.uint16) * 257)[1].tobytes())
    put("trunc/cut.jpg", jpg[: len(jpg) // 2])
    put("trunc/empty.jpg", b"")
    put("trunc/text.jpg", b"not an image\n")
    put("huge/big.png", _png_header_only(30000, 30000))
    put("anim/moving.gif", _gif(3))
    put("anim/still.gif", _gif(1))
    put("odd/back\\slash.jpg", jpg)
    put("~tilde.jpg", jpg)
    put("odd/ctrl\x01.jpg", jpg)
    with open(os.path.join(os.fsencode(root), b"odd", b"latin\xff.jpg"), "wb") as fh:
        fh.write(jpg)
    put("notes.txt", b"a sidecar file")
    put(".hidden.jpg", jpg)
    (root / "empty.jpg").mkdir()
    put("named.png/inner.jpg", jpg)  # a folder named like an image: scanned, and listed
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.jpg").write_bytes(jpg)
    (root / "links").mkdir()
    (root / "links" / "outside.jpg").symlink_to(outside / "secret.jpg")
    (root / "links" / "dangling.jpg").symlink_to(root / "links" / "gone.jpg")
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    (root / "special").mkdir()
    os.mkfifo(root / "special" / "pipe.jpg")  # reading it would block for ever
    return root


def _entries(root: Path) -> set[str]:
    """Every entry under root that is not a folder with contents, as printable relative paths."""
    out = set()
    for folder, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(folder, root)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))
                             or not os.listdir(os.path.join(folder, d))]:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            out.add(pipeline.printable_key(rel))
    return out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX file types")
@pytest.mark.parametrize("jobs", [1, 2])
def test_every_bad_input_is_a_row_or_listed_and_the_run_finishes(tmp_path, jobs):
    src = bad_corpus(tmp_path / "src", tmp_path / "outside")
    out = tmp_path / "out"
    s = run_synth(_cfg(src, out, jobs=jobs), progress=False)
    df = read_manifest(out).set_index("key")
    assert set(df.index) == set(ROWS) and s.n_images == len(ROWS)
    for key, reason in ROWS.items():
        row = df.loc[key]
        if reason is None:
            assert row["status"] == "ok", (key, row["reason"])
            assert (out / row["image"]).is_file() and (out / row["mask"]).is_file()
        else:
            assert row["status"] == "error" and reason in row["reason"], (key, row["reason"])
            assert row["image"] == "" and "/tmp" not in row["reason"] and ".part" not in row["reason"]
    assert df.loc["huge/big.png", ["width", "height"]].tolist() == [30000, 30000]
    assert df.loc["dup/x.jpg", "mask"] != df.loc["dup/x.webp", "mask"]
    assert {k: df.loc[k, "conversion"] for k in CONVERSIONS} == CONVERSIONS
    assert (df.drop(list(CONVERSIONS))["conversion"] == "").all()
    skipped = pd.read_csv(out / "skipped.csv", keep_default_na=False)
    listed = {c: sorted(g["path"]) for c, g in skipped.groupby("category")}
    assert listed == SKIPPED and s.skipped == SKIPPED
    # every entry of the source is a row or a listed path: nothing without a trace
    accounted = set(df.index) | set(skipped["path"])
    assert _entries(src) <= accounted, _entries(src) - accounted
    assert "hidden entry" in s.format() and "skipped.csv" in s.format()


def test_max_pixels_is_checked_before_decoding(tmp_path, monkeypatch):
    write_faces(tmp_path / "src", 3, 112, "jpg")
    calls = []
    real = pipeline.decode_rgb
    monkeypatch.setattr(pipeline, "decode_rgb", lambda data: calls.append(1) or real(data))
    s = run_synth(_cfg(tmp_path / "src", tmp_path / "o", max_pixels=112 * 112 - 1), progress=False)
    assert s.status_counts == {"error": 3} and not calls
    assert list(s.reason_counts) == ["image is 112x112 (0.0 MP), above the 0.012543 MP limit "
                                     "(raise it with --max-pixels if you have the memory)"]
    s = run_synth(_cfg(tmp_path / "src", tmp_path / "o2", max_pixels=112 * 112), progress=False)
    assert s.status_counts == {"ok": 3}


def _faces(root: Path, n: int = 12) -> Path:
    write_faces(root, n, 112, "jpg")
    return root


def test_a_worker_that_crashes_becomes_an_error_row(tmp_path, monkeypatch):
    """A hard crash (os.abort via the test hook) in a joblib worker: the images it was on are rerun
    one by one in fresh processes; the culprit is an error row, everything else is as in a clean run."""
    src = _faces(tmp_path / "src")
    clean = tmp_path / "clean"
    run_synth(_cfg(src, clean, jobs=2), progress=False)
    bad_key = "id1/face_0004.jpg"
    monkeypatch.setenv(CRASH_HOOK_ENV, bad_key)
    out = tmp_path / "out"
    s = run_synth(_cfg(src, out, jobs=2), progress=False)
    assert s.crashed == 1 and s.status_counts["error"] == 1
    df = read_manifest(out).set_index("key")
    assert df.loc[bad_key, "reason"] == "the worker process crashed on this image (signal SIGABRT)"
    a, b = tree_bytes(clean), tree_bytes(out)
    culprit = {f"images/main/{bad_key}", f"masks/main/{bad_key}.png"}
    tables = ("manifest", "synth", "landmarks")  # compared as rows below
    assert {k: v for k, v in a.items() if k not in culprit and not k.startswith(tables)} == \
        {k: v for k, v in b.items() if not k.startswith(tables)}
    ref = read_manifest(clean).set_index("key").drop(bad_key)
    pd.testing.assert_frame_equal(df.drop(bad_key), ref)


def test_a_python_exception_in_a_worker_is_an_error_row(tmp_path, monkeypatch):
    src = _faces(tmp_path / "src", 4)
    import occbench.face.landmarks as lm_mod

    real = lm_mod.landmarks_to_row

    def buggy(key, lm):
        if key == "id1/face_0001.jpg":
            raise RecursionError("a bug in one code path")
        return real(key, lm)

    monkeypatch.setattr(lm_mod, "landmarks_to_row", buggy)
    s = run_synth(_cfg(src, tmp_path / "o"), progress=False)
    assert s.status_counts == {"error": 1, "ok": 3}
    assert list(s.reason_counts) == ["internal error: RecursionError: a bug in one code path"]


def _cli_cmd(src, out, *extra) -> list[str]:
    return [sys.executable, "-c", "from occbench.cli import main; main()", "synth", "--src", str(src), "--out",
            str(out), "--landmarks", "template", "--occluders", ",".join(OCC), "--scales", "1,2", "--per-scale",
            "--no-progress", *extra]


def test_a_crash_at_jobs_1_is_isolated_on_the_rerun(tmp_path):
    """At -j 1 the work runs in the main process: a hard crash ends that process, and the rerun
    finds the image in the crash journal, runs it in a fresh process and records it as an error row."""
    src = _faces(tmp_path / "src", 6)
    bad_key = "id2/face_0002.jpg"
    out = tmp_path / "out"
    crash_then_rerun(_cli_cmd(src, out), bad_key)
    df = read_manifest(out)
    assert set(df.loc[df["status"] == "error", "key"]) == {bad_key}


@pytest.mark.slow
def test_kill_and_resume_loop_is_byte_identical(tmp_path):
    """kill -9 at random moments (jobs 1 and 2 alternately) until the run finishes: every output
    file equals a clean run's, byte for byte, and no part or temp file is left."""
    src = _faces(tmp_path / "src", 60)
    clean, out = tmp_path / "clean", tmp_path / "out"
    subprocess.run(_cli_cmd(src, clean), env=cli_env(), check=True, capture_output=True)
    rng = np.random.default_rng(0)
    log = out / ".synth" / "rows.jsonl"
    kills = 0
    for attempt in range(12):
        proc = subprocess.Popen(_cli_cmd(src, out, "-j", str(1 + attempt % 2)), env=cli_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = log.stat().st_size if log.exists() else 0
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if log.exists() and log.stat().st_size > before:  # it made progress: kill it soon
                time.sleep(float(rng.uniform(0.0, 0.3)))
                break
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
            kills += 1
        if proc.wait() == 0:
            break
    assert kills >= 3
    final = subprocess.run(_cli_cmd(src, out), env=cli_env(), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert tree_bytes(out) == tree_bytes(clean)
    assert not [p for p in out.rglob("*") if p.name.endswith((".part", ".tmp"))]


def test_two_runs_into_one_out(tmp_path):
    """A second run into an OUT that a running one holds (with --overwrite, which in 0.2 deleted the
    first run's finished files): it fails at once naming the holder's PID and deletes nothing; the
    first finishes; the result equals a clean run. With --wait a run waits, then resumes the finished
    run (nothing redone)."""
    src = _faces(tmp_path / "src", 80)
    clean, out = tmp_path / "clean", tmp_path / "out"
    run_synth(_cfg(src, clean, scales="1,2", per_scale=True), progress=False)
    a = subprocess.Popen(_cli_cmd(src, out), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / ".synth" / "rows.jsonl"
    while a.poll() is None and not log.exists():  # a holds the lock and has started writing
        time.sleep(0.005)
    runner = CliRunner()
    b = runner.invoke(cli, _cli_cmd(src, out, "--overwrite", "--scales", "1")[3:])
    assert a.poll() is None, "the first run finished too early for the race"
    assert b.exit_code == 1 and f"(PID {a.pid}) is writing to {out}" in b.output, b.output
    c = runner.invoke(cli, _cli_cmd(src, out, "--wait")[3:])
    assert a.wait() == 0 and c.exit_code == 0, c.output
    assert "processed 0 images" in c.output
    assert tree_bytes(out) == tree_bytes(clean)


def test_lock_names_the_holder_in_process(tmp_path):
    src = _faces(tmp_path / "src", 2)
    out = tmp_path / "o"
    with OutLock(out):
        with pytest.raises(RunLockedError, match=f"PID {os.getpid()}"):
            run_synth(_cfg(src, out), progress=False)
    assert run_synth(_cfg(src, out), progress=False).status_counts == {"ok": 2}


@pytest.mark.parametrize("err, hint", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"),
                                       (errno.EACCES, "permission denied"), (errno.EDQUOT, "quota")])
def test_output_errors_stop_the_run_with_one_line_and_a_rerun_resumes(tmp_path, monkeypatch, err, hint):
    src = _faces(tmp_path / "src", 6)
    clean, out = tmp_path / "clean", tmp_path / "out"
    run_synth(_cfg(src, clean), progress=False)
    real_open, n = os.open, {"files": 0}

    def failing_open(path, flags, *a):
        if str(path).endswith(".part"):
            n["files"] += 1
            if n["files"] > 5:
                raise OSError(err, os.strerror(err), path)
        return real_open(path, flags, *a)

    monkeypatch.setattr(pipeline.os, "open", failing_open)
    res = CliRunner().invoke(cli, ["synth", "--src", str(src), "--out", str(out), "--landmarks", "template",
                                   "--occluders", ",".join(OCC), "--no-progress"])
    assert res.exit_code == 1 and res.exception is not None
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot write ") and hint in lines[0], res.output
    assert "rerun the same command" in lines[0] and ".part" not in lines[0]
    monkeypatch.setattr(pipeline.os, "open", real_open)
    s = run_synth(_cfg(src, out), progress=False)
    assert s.status_counts == {"ok": 6} and tree_bytes(out) == tree_bytes(clean)


def test_row_log_write_errors_are_clean_messages(tmp_path, monkeypatch):
    """0.2 gave `OSError: [Errno 28]` tracebacks from RowLog.append."""
    src = _faces(tmp_path / "src", 4)
    from occbench.synth import manifest

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(manifest, "open", no_space, raising=False)
    with pytest.raises(OutputWriteError, match=r"rows.jsonl: the disk is full"):
        run_synth(_cfg(src, tmp_path / "o"), progress=False)


def test_file_size_limit_is_an_error_line_not_a_traceback(tmp_path):
    """A real failing write (RLIMIT_FSIZE: EFBIG), no root needed."""
    src = _faces(tmp_path / "src", 4)
    code = ("import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500)); "
            "from occbench.cli import main; main()")
    cmd = _cli_cmd(src, tmp_path / "o")
    cmd[2] = code
    res = subprocess.run(cmd, env=cli_env(PYTHONDONTWRITEBYTECODE="1"), capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("Error: cannot write ") and "file-size limit" in res.stderr


def test_a_folder_in_the_way_stops_the_run_and_is_redone_once_removed(tmp_path):
    """0.2 logged `error | IsADirectoryError: … .synth/tmp/<pid>.part` and never redid that image."""
    src = _faces(tmp_path / "src", 6)
    clean, out = tmp_path / "clean", tmp_path / "out"
    run_synth(_cfg(src, clean), progress=False)
    run_synth(_cfg(src, out), progress=False)
    blocker = out / "images" / "main" / "id1" / "face_0001.jpg"
    blocker.unlink()
    blocker.mkdir()  # the resume redoes the missing file, and meets the folder
    with pytest.raises(OutputWriteError, match="id1/face_0001.jpg: a folder is in the way"):
        run_synth(_cfg(src, out), progress=False)
    blocker.rmdir()
    s = run_synth(_cfg(src, out), progress=False)
    assert s.status_counts == {"ok": 6} and tree_bytes(out) == tree_bytes(clean)


def test_resume_verifies_logged_files_and_sweeps_leftovers(tmp_path):
    src = _faces(tmp_path / "src", 6)
    clean, out = tmp_path / "clean", tmp_path / "out"
    run_synth(_cfg(src, clean), progress=False)
    run_synth(_cfg(src, out), progress=False)
    (out / "images" / "main" / "id0" / "face_0000.jpg").unlink()  # lost (e.g. by a concurrent --overwrite)
    with open(out / "masks" / "main" / "id1" / "face_0001.jpg.png", "r+b") as fh:
        fh.truncate(10)  # damaged
    leftovers = [out / ".manifest.csv.x1y2.tmp", out / ".synth" / ".lock.json.ab.tmp",
                 out / "images" / "main" / "id2" / ".face_0002.jpg.part"]
    for p in leftovers:
        p.write_bytes(b"half")
    (out / ".synth" / "tmp").mkdir()  # 0.2's part folder
    s = run_synth(_cfg(src, out), progress=False)
    assert s.redone == 2 and s.processed == 2 and s.resumed == 4
    assert "redone: 2 logged images" in s.format()
    assert tree_bytes(out) == tree_bytes(clean)
    assert not any(p.exists() for p in leftovers) and not (out / ".synth" / "tmp").exists()


def test_ctrl_c_says_that_rerunning_resumes(tmp_path, monkeypatch):
    src = _faces(tmp_path / "src", 2)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_synth", interrupted)
    res = CliRunner().invoke(cli, ["synth", "--src", str(src), "--out", str(tmp_path / "o"), "--no-progress"])
    assert res.exit_code == 130
    assert "rerun the same command to resume" in res.output and "Aborted!" not in res.output
