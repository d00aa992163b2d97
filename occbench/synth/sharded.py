"""Sharded synth output (``--format rec|wds``): the same engine, shards instead of loose files.

The run's items (source images, in the deterministic order of a ``files`` run) are cut into
contiguous blocks of ``shard_size``; shard ``i`` holds every sample (image x variant) of block ``i``
and is rendered by one task with the synth worker, whose file writes are captured in memory
(:class:`_CaptureWorker`), then written whole (:func:`occbench.io.shards.write_shard`). A shard's
bytes depend only on its items and the configuration, so the shards and their list are identical
for any ``--jobs``, order, or Dask cluster size. Resume is per shard: a shard whose files match its
``.done.json`` (sizes and SHA-256) is kept, any other is redone. Bad inputs give the same error rows
as a ``files`` run (in the manifest; they have no record in a shard).

Manifest ``image`` / ``mask`` columns point into the shards: ``shards/rec-00003.rec#17`` (record 17
of that shard; its mask is the ``mask_png`` of row 17 of ``rec-00003.parquet``) or
``shards/wds-00003.tar#000000042-00.jpg``.

Crash isolation, as in a ``files`` run: a shard task notes the key it is rendering in
``OUT/.synth/inflight-shards/<shard>``. When a worker process dies (segfault, abort, killed: a joblib
``TerminatedWorkerError``, a Dask ``KilledWorker``, or the main process itself at ``--jobs 1``, found
on the rerun), each key those journals name is rendered alone in a fresh interpreter; one that crashes
there becomes an error row (``the worker process crashed on this image (...)``) and its shard is
redone without it. Unfinished shards are redone; finished ones are kept.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import ConfigError, DataNotFoundError, OccbenchError, OutputWriteError
from ..io import shards as sh
from ..io.atomic import output_error, sweep_temp_files
from . import pipeline as pl

SHARD_OUTPUTS = (sh.SHARD_DIR, sh.INDEX_FILE, "train.rec", "train.idx", "property", "train.parquet")


class _CaptureWorker(pl._Worker):
    """The synth worker with file writes captured in memory (rel path -> bytes) instead of written."""

    def __init__(self, spec: dict, source=None, landmarker=None):
        super().__init__(spec, source=source, landmarker=landmarker, journal=False)
        self.captured: dict[str, bytes] = {}

    def _write(self, rel: str, data: bytes) -> None:
        self.captured[rel] = data
        self._files[rel] = len(data)

    def render(self, key: str, identity: str) -> dict:
        """The item's record (as ``process``) with ``captured`` holding its encoded outputs."""
        self.captured = {}
        if key in self._crash_keys:
            os.abort()  # test hook (pl.CRASH_HOOK_ENV): behave as a native crash on this image would
        try:
            return self.process(key, identity)
        except OutputWriteError:
            raise
        except Exception as e:  # noqa: BLE001 - one image's failure is its error rows, as in a files run
            return pl.error_record(self.cfg, self.variants, self.occ_names, key, identity,
                                   f"internal error: {pl._reason(e)}")


class _ArrayWorker(_CaptureWorker):
    """The capture worker for on-the-fly training (:class:`occbench.torch.OccludedDataset`): where
    decoding an output would give back the very array, ``captured`` holds the array instead of its
    encoding (the mask, and the image when it is written losslessly as PNG); a JPEG image is still
    encoded, as synth writes it, so the dataset decodes the pixels synth writes. ``params`` stays a
    dict and the ``part_<name>`` fractions are not computed."""

    _LOSSLESS = ("png",)

    def __init__(self, spec: dict, source=None, landmarker=None):
        super().__init__(spec, source=source, landmarker=landmarker)
        self._part_columns = False

    def _make_sprite_store(self, spec: dict):
        return None  # no OUT: each DataLoader worker keeps its bank in memory

    def _encode_image(self, image, fmt: str):
        return image if (fmt or "png") in self._LOSSLESS else super()._encode_image(image, fmt)

    def _encode_mask(self, mask):
        return mask

    def _zero_mask(self, h: int, w: int):
        return np.zeros((h, w), np.uint8)

    def _params_json(self, params: dict):
        return params


JOURNAL_DIR = "inflight-shards"  # in OUT/.synth: per running shard, the key being rendered


class _Journal:
    """``OUT/.synth/inflight-shards/<shard>``: the key a shard task is rendering ("" between images).
    Removed when the task ends normally; left behind when its process dies, naming the suspect."""

    def __init__(self, out: Path, name: str):
        self.path = out / pl.STATE_DIR / JOURNAL_DIR / name
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        except OSError as e:
            raise output_error(e, self.path, pl._RESUME_HINT) from None

    def note(self, key: str) -> None:
        data = key.encode("utf-8", "surrogateescape")
        try:
            os.pwrite(self.fd, data, 0)
            os.ftruncate(self.fd, len(data))
        except OSError as e:
            raise output_error(e, self.path, pl._RESUME_HINT) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)
        try:
            os.unlink(self.path)
        except OSError:
            pass


def read_journals(out: Path) -> list[str]:
    """Keys the shard journals name (a process died rendering them), cleared once read."""
    return pl.drain_journal(out / pl.STATE_DIR / JOURNAL_DIR, "surrogateescape")


_CAPTURE_CACHE: dict[str, _CaptureWorker] = {}


def capture_worker(spec: dict, source=None, landmarker=None) -> _CaptureWorker:
    """One capture worker per process and run configuration (state built once)."""
    if source is not None:
        return _CaptureWorker(spec, source=source, landmarker=landmarker)
    key = f"{spec['fingerprint']}:{spec.get('crash_keys')}"  # the test hook's keys are no part of the recipe
    w = _CAPTURE_CACHE.get(key)
    if w is None:
        _CAPTURE_CACHE.clear()
        w = _CAPTURE_CACHE[key] = _CaptureWorker(spec)
    return w


def label_map(identities) -> dict[str, int]:
    """identity -> class id: the identities' own integers when all are integers (RecordIO labels),
    else their index in sorted order; "" (no identity) -> -1."""
    ids = sorted({i for i in identities if i != ""})
    try:
        m = {i: int(float(i)) for i in ids}
        if all(float(i) == m[i] and m[i] >= 0 for i in ids):
            return m | {"": -1}
    except ValueError:
        pass
    return {i: n for n, i in enumerate(ids)} | {"": -1}


def render_shard(spec: dict, task: dict, source=None, landmarker=None) -> dict:
    """Render and write one shard; returns its done record (with the manifest records of its items).
    Runs in the main process, a joblib worker or a Dask worker; the shard folder must be visible."""
    fmt, name, first = task["format"], task["name"], task["first_item"]
    w = capture_worker(spec, source, landmarker)
    samples, records = [], []
    with _Journal(Path(spec["out"]), name) as journal:
        for j, (key, identity) in enumerate(task["items"]):
            if key in task["pre_errors"]:
                rec = pl.error_record(w.cfg, w.variants, w.occ_names, key, identity, task["pre_errors"][key])
            else:
                journal.note(key)
                rec = w.render(key, identity)
            records.append(_add_samples(rec, task, first + j, identity, w.captured, samples))
        journal.note("")
    return _write(spec, task, samples, records)


def _add_samples(rec: dict, task: dict, item_index: int, identity: str, captured: dict, samples: list) -> dict:
    """The item's manifest record pointing into the shard; its samples appended to ``samples``."""
    fmt, name = task["format"], task["name"]
    rec = dict(rec)
    rec.pop("files", None)
    for vi, row in enumerate(rec["rows"]):
        if row["status"] not in ("ok", "clean"):
            continue
        skey = sh.sample_key(item_index, vi)
        ext = sh.image_ext(row.get("fmt") or "png")
        s = sh.ShardSample(skey, task["labels"][identity], captured[row["image"]], ext, captured[row["mask"]],
                           {f: row.get(f) for f in sh.META_FIELDS if f != "label"} | {"identity": identity})
        if fmt == "rec":
            row["image"] = f"{sh.SHARD_DIR}/{name}.rec#{len(samples)}"
            row["mask"] = f"{sh.SHARD_DIR}/{name}.parquet#{len(samples)}"
        else:
            row["image"] = f"{sh.SHARD_DIR}/{name}.tar#{skey}.{ext}"
            row["mask"] = f"{sh.SHARD_DIR}/{name}.tar#{skey}.mask.png"
        samples.append(s)
    return rec


def _write(spec: dict, task: dict, samples: list, records: list) -> dict:
    fmt, name, first = task["format"], task["name"], task["first_item"]
    hw = next(((r["height"], r["width"]) for rec in records for r in rec["rows"] if r["status"] in ("ok", "clean")),
              None)
    folder = Path(spec["out"]) / sh.SHARD_DIR
    try:
        return sh.write_shard(fmt, folder, name, samples,
                              {"first_item": first, "n_items": len(task["items"]), "records": records,
                               "image_hw": hw, "fingerprint": spec["fingerprint"]})
    except OSError as e:
        raise output_error(e, folder / name, pl._RESUME_HINT) from None


def _run_task(spec: dict, task: dict) -> dict:
    """joblib / Dask entry point: the process-level worker cache makes repeated tasks cheap."""
    from ..distributed import tune_worker_malloc

    tune_worker_malloc()  # for joblib workers too (on Dask run_on_dask does it); see there
    done = render_shard(spec, task)
    return {"name": done["name"], "n_items": done["n_items"]}


def run_synth_sharded(cfg: pl.SynthConfig, fmt: str, shard_size: int, *, dask: str | None = None,
                      progress: bool = True) -> pl.SynthSummary:
    """Run (or resume) a synth job writing ``fmt`` shards of ``shard_size`` source items each.
    ``dask``: None (local, ``cfg.jobs`` processes), ``local:N`` or a scheduler address."""
    t0 = time.perf_counter()
    if fmt not in ("rec", "wds"):
        raise ConfigError(f"--format must be files, rec or wds, got {fmt!r}")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ConfigError(f"--shard-size must be an integer >= 1, got {shard_size!r}")
    cfg = dataclasses.replace(cfg, format=fmt, shard_size=shard_size)  # recorded in synth.json and the lock
    cfg.validate()
    out = Path(cfg.out).expanduser()
    session = None
    if dask:
        from ..distributed import DaskSession, check_shared_out, parse_dask

        check_shared_out(out, parse_dask(dask))
        session = DaskSession(dask)
        if session.target.kind == "local":
            session.start()  # the cluster starts while this process sets the run up
    # closed here on an error; after a run, the close begun while the run was assembled is waited for
    with contextlib.closing(session) if session is not None else contextlib.nullcontext():
        summary = _run_sharded(cfg, fmt, shard_size, out, session, progress)
    summary.elapsed_s = time.perf_counter() - t0
    return summary


def _run_sharded(cfg: pl.SynthConfig, fmt: str, shard_size: int, out: Path, session, progress: bool) -> pl.SynthSummary:
    source = pl.open_run_source(cfg)
    root = getattr(source, "root", None)
    if root is not None and source.kind not in ("recordio", "binset") and pl._is_within(out, Path(root)):
        raise ConfigError(f"--out {out} lies inside the source folder {root}; choose a folder outside it")
    occ_names = pl.resolve_occluders(cfg)
    occ_api = pl._load_occluder_api()
    occ_desc = {n: occ_api.create_occluder(n, **pl.occluder_options(cfg)).describe() for n in occ_names}
    landmarker = pl.make_landmarker(cfg)
    lm_desc = landmarker.describe()
    variants = pl.plan_variants(occ_names, cfg.scales, cfg.per_scale, cfg.per_occluder)
    pairs, pre_errors = pl._select_items(source, cfg)
    if not pairs:
        raise DataNotFoundError(f"no images to process in {cfg.src}")
    lock = {"version": __version__, "layout": pl.LAYOUT_VERSION, "recipe": cfg.recipe(), "occluders": occ_desc,
            "landmarker": lm_desc, "variants": [dataclasses.asdict(v) for v in variants],
            "output": {"format": fmt, "shard_size": shard_size}}
    lock["fingerprint"] = pl._fingerprint(lock)
    pl._check_out_is_ours(out)
    with pl.OutLock(out, wait=cfg.wait):
        try:
            if cfg.overwrite:
                for name in SHARD_OUTPUTS:
                    p = out / name
                    shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            pl._prepare_out(out, lock, cfg.overwrite)
            (out / sh.SHARD_DIR).mkdir(parents=True, exist_ok=True)
            # temp files of writes a killed run left (its workers are gone: the run lock is ours)
            sweep_temp_files(out / sh.SHARD_DIR)
            sweep_temp_files(out)
        except OSError as e:
            raise output_error(e, out, pl._RESUME_HINT) from None
        labels = label_map(i for _, i in pairs)
        spec = {"config": cfg.to_dict(), "out": str(out), "variants": [dataclasses.asdict(v) for v in variants],
                "occluders": list(occ_names), "fingerprint": lock["fingerprint"]}
        if os.environ.get(pl.CRASH_HOOK_ENV):  # test hook: read here, so every worker process sees it
            spec["crash_keys"] = sorted(filter(None, os.environ[pl.CRASH_HOOK_ENV].split("\n")))
        tasks = []
        for n, a in enumerate(range(0, len(pairs), shard_size)):
            block = pairs[a:a + shard_size]
            tasks.append({"format": fmt, "name": sh.shard_name(fmt, n), "first_item": a, "items": block,
                          "labels": {i: labels[i] for _, i in block},
                          "pre_errors": {k: pre_errors[k] for k, _ in block if k in pre_errors}})
        folder = out / sh.SHARD_DIR
        todo = [t for t in tasks if not _kept(folder, t["name"], lock["fingerprint"])]
        resumed = len(pairs) - sum(len(t["items"]) for t in todo)
        crashed = _isolate_suspects(spec, cfg, variants, occ_names, todo)  # a crashed earlier run's images

        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), initial=resumed, unit="img", desc="synth", disable=not progress,
                   dynamic_ncols=True, leave=False)
        worker_died = _worker_died_types()
        try:
            while True:
                try:
                    _execute(spec, cfg, todo, session, source, landmarker, bar)
                    break
                except worker_died as e:
                    died = e  # a worker process died: find the image it was on, redo unfinished shards
                except BaseException:  # Ctrl-C, an output error: nothing crashed, forget what was in flight
                    read_journals(out)
                    raise
                todo = [t for t in todo if not _kept(folder, t["name"], lock["fingerprint"])]
                found = _isolate_suspects(spec, cfg, variants, occ_names, todo)
                if not found:
                    raise OccbenchError(f"a worker process died ({pl._reason(died)}) but none of the images "
                                        "it was on crashes alone (out of memory?); rerun the same command to "
                                        "resume (finished shards are kept), or use fewer --jobs") from None
                crashed += found
                bar.n = len(pairs) - sum(len(t["items"]) for t in todo)
                bar.refresh()
        finally:
            bar.close()
            landmarker.close()
        if session is not None:
            session.close(wait=False)  # every shard is written: shut the cluster down meanwhile

        try:
            # every task has finished: temp files still in shards/ are those of workers that died mid-shard
            # (their shards were redone elsewhere), so the output holds exactly what a one-process run writes
            sweep_temp_files(folder)
            dones = []
            for t in tasks:  # kept shards were hashed as the run started, the others were just written
                d = sh.verified_shard(folder, t["name"], digest=False)
                if d is None:
                    raise OccbenchError(f"shard {t['name']} failed verification after the run; rerun to redo it")
                dones.append(d)
            records = {rec["key"]: rec for d in dones for rec in d["records"]}
            summary = pl._finish(cfg, out, pairs, records, variants, source, occ_desc, lm_desc, lock)
            index_extra = {"version": __version__, "fingerprint": lock["fingerprint"]}
            if fmt == "rec":
                hw = next((tuple(d["image_hw"]) for d in dones if d.get("image_hw")), (112, 112))
                n_cls = max([v for v in labels.values()] + [-1]) + 1
                sh.assemble_rec(out, dones, n_cls, hw)
            sh.write_index(out, fmt, shard_size, [{k: v for k, v in d.items() if k != "records"} for d in dones],
                           index_extra)
        except OSError as e:
            raise output_error(e, out, pl._RESUME_HINT) from None
    summary.resumed = resumed
    summary.crashed = crashed
    summary.processed = len(pairs) - resumed
    return summary


def _worker_died_types() -> tuple[type, ...]:
    from concurrent.futures.process import BrokenProcessPool

    from joblib.externals.loky.process_executor import TerminatedWorkerError

    from ..distributed import WorkerDied

    return (TerminatedWorkerError, BrokenProcessPool, WorkerDied)



def _execute(spec: dict, cfg: pl.SynthConfig, todo: list[dict], session, source, landmarker, bar) -> None:
    """Render the shards of ``todo``: on Dask (``session``), in joblib worker processes, or here (--jobs 1)."""
    if session is not None:
        from ..distributed import run_on_dask

        run_on_dask(session, _run_task, spec, todo, on_done=lambda r: bar.update(r["n_items"]))
    elif pl._n_jobs(cfg.jobs) == 1 or len(todo) <= 1:
        for t in todo:
            bar.update(render_shard(spec, t, source, landmarker)["n_items"])
    else:
        from joblib import Parallel, delayed

        with Parallel(n_jobs=pl._n_jobs(cfg.jobs), backend="loky", return_as="generator_unordered") as par:
            for r in par(delayed(_run_task)(spec, t) for t in todo):
                bar.update(r["n_items"])


def _isolate_suspects(spec: dict, cfg: pl.SynthConfig, variants, occ_names, todo: list[dict]) -> int:
    """Render each key the shard journals name alone in a fresh interpreter; one whose process crashes
    becomes an error row of its shard (``pre_errors``). Returns how many crashed."""
    where = {key: (t, identity) for t in todo for key, identity in t["items"]}
    found = 0
    for key in dict.fromkeys(read_journals(Path(spec["out"]))):
        if key not in where or key in where[key][0]["pre_errors"]:
            continue
        t, identity = where[key]
        rec, died = pl._run_isolated(spec | {"capture": True}, cfg, variants, occ_names, key, identity)
        if died:
            t["pre_errors"][key] = rec["rows"][0]["reason"]
            found += 1
    return found


def _kept(folder: Path, name: str, fingerprint: str) -> bool:
    d = sh.verified_shard(folder, name)
    return d is not None and d.get("fingerprint") == fingerprint
