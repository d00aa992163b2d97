"""Landmarks of the clean images and the occluded probe sets of a protocol, via ``run_synth``.

1. ``clean_landmarks``: the protocol's landmarker runs once per clean image; results are cached on
   disk per (landmarker configuration, data source), with each image file's size and mtime so that a
   changed file is redone. A per-run table of exactly the task's keys is written beside the synth
   outputs; both alignment (engine) and occlusion (synth) read that one table. Faces found with a
   mesh keep their 468 points in a sidecar beside the cache and the table (``landmarks.mesh.npz``,
   ``occbench.face.mesh_table``): synth's file landmarker reads it back, so occluded probes get their
   face-part fractions (``part_<name>``) and part-fitted occluders; occluders that place by the 5 points
   draw exactly the pixels they drew without it.
2. ``synthesize``: one ``run_synth`` call per ``SynthRun`` of the protocol, with ``landmarks="file"``
   and ``keys=`` the task's probe images, into ``CACHE/runs/<protocol hash>/<keys digest>/<run>``.
   Synth's own resume makes a repeated call cheap; its outputs do not depend on the other keys in
   the run, so a subset (``--limit``) gets exactly the images a full run would.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__, paths
from ..distributed import DaskSession
from ..errors import OccbenchError
from ..paths import resolve_under
from ..face.geometry import FaceLandmarks
from .data import Task
from .protocols import Protocol, SynthRun, canonical_json

LANDMARK_TABLE = "landmarks.csv"
MESH_METHODS = ("mesh", "mesh-crop")  # landmark-chain steps whose faces have a mesh
CHECKPOINT = 512  # landmark rows computed between cache saves


def keys_digest(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------- landmarks


def _landmarker_spec(protocol: Protocol, root: Path | None) -> tuple[str, dict]:
    lm = dict(protocol.landmarks)
    method = lm.pop("method")
    if method == "file":
        lm["path"] = str(paths.safe_join(root, lm["path"]))
    return method, lm


def _stamp(task: Task, key: str) -> str:
    """Size and mtime of a clean image file ('' for .bin members, whose identity is the .bin hash)."""
    if task.binset is not None:
        return ""
    try:
        st = os.stat(task.image_source(key))
    except (OSError, OccbenchError):
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


_WORKER_LANDMARKERS: dict[str, object] = {}


def _detect_batch(method: str, opts: dict, items: list[tuple[str, object]]) -> list[dict]:
    """Landmark rows for [(key, path | bytes)], with read/decode failures as status 'error' rows."""
    from ..io.images import decode_rgb
    from ..face.landmarks import LandmarkResult, create_landmarker, landmarks_to_row

    cfg = canonical_json([method, opts])
    lmk = _WORKER_LANDMARKERS.get(cfg)
    if lmk is None:
        lmk = _WORKER_LANDMARKERS[cfg] = create_landmarker(method, **opts)
    rows = []
    for key, src in items:
        try:
            data = src if isinstance(src, bytes) else Path(src).read_bytes()
            res = lmk.detect(decode_rgb(data), key=key)
        except Exception as e:  # noqa: BLE001 - recorded per image
            res = LandmarkResult(None, "error", str(e) if isinstance(e, OccbenchError) else f"{type(e).__name__}: {e}")
        row = landmarks_to_row(key, res)
        row["_mesh"] = _mesh_of(res)
        rows.append(row)
    return rows


def _detect_task(spec: tuple[str, dict], items: list[tuple[str, object]]) -> list[dict]:
    """Dask task (``run_on_dask``'s ``fn(shared, task)``): ``_detect_batch`` of (method, opts)."""
    return _detect_batch(spec[0], spec[1], items)


def _mesh_of(res) -> np.ndarray | None:
    """The face's 468 mesh points (float64), or None when the landmarks have no mesh."""
    from ..face.parts import N_MESH

    dense = res.landmarks.dense if res.landmarks is not None else None
    if dense is None or np.shape(dense)[0] < N_MESH:
        return None
    return np.asarray(dense, np.float64)[:N_MESH]


@dataclass
class CleanLandmarks:
    rows: dict[str, dict]  # key -> landmarks table row (status ok / noface / error)
    table: Path  # the per-run table (CSV) of exactly these keys (mesh sidecar beside it when any face has one)
    describe: dict  # landmarker description
    computed: int  # rows computed by this call (0: all from cache)
    seconds: float
    stamps: dict[str, str]  # key -> size:mtime of the clean image file ('' for .bin members)

    meshes: dict[str, np.ndarray] | None = None  # key -> (468, 2) mesh points, faces found with a mesh

    def inputs_digest(self) -> str:
        """Identity of the clean inputs: the landmarks table and every image file's size and mtime
        (not the mesh sidecar: the clean images' alignment and embeddings use the 5 points only)."""
        h = hashlib.sha256(self.table.read_bytes())
        h.update(canonical_json(sorted(self.stamps.items())).encode())
        return h.hexdigest()[:16]

    def five(self, key: str) -> FaceLandmarks | None:
        r = self.rows.get(key)
        if r is None or r["status"] != "ok":
            return None
        pts = np.array([r[f"{a}{i}"] for i in range(5) for a in "xy"], np.float64).reshape(5, 2)
        return FaceLandmarks(pts, source=r["source"] or "file")

    def failure(self, key: str) -> str | None:
        return _row_failure(self.rows.get(key), "landmarks", missing="no landmarks")


def clean_landmarks(task: Task, keys: list[str], cache_dir: Path, run_dir: Path, data_root: Path | None,
                    jobs: int = 1, progress: bool = True, tick=None, dask: str | None = None) -> CleanLandmarks:
    """Landmarks of the clean images ``keys`` (cached), and the per-run table at ``run_dir/landmarks.csv``.
    ``tick(n)``, when given, is called as rows are done (an outer progress bar; no own bar then).
    ``dask`` (``local:N`` or a scheduler address): detect on Dask workers, one cluster for the whole call."""
    import pandas as pd

    from ..io.atomic import atomic_write_bytes, atomic_write_table
    from ..face.landmarks import TABLE_COLUMNS, create_landmarker
    from ..face.mesh_table import mesh_path_for, read_mesh_table, write_mesh_table

    t0 = time.perf_counter()
    method, opts = _landmarker_spec(task.protocol, data_root)
    lmk = create_landmarker(method, **opts)
    desc = lmk.describe()
    lmk.close()
    source_id = task.identity.get("bin") if task.binset is not None else str(Path(task.synth_src).resolve())
    cache_id = hashlib.sha256(canonical_json({"landmarker": desc, "source": source_id,
                                              "version": __version__}).encode()).hexdigest()[:16]
    cache_file = cache_dir / "landmarks" / f"{cache_id}.parquet"
    mesh_file = mesh_path_for(cache_file)
    cached: dict[str, dict] = {}
    meshes: dict[str, np.ndarray] = {}
    if cache_file.is_file():
        try:
            cached = {r["key"]: r for r in pd.read_parquet(cache_file).to_dict("records")}
        except Exception:  # noqa: BLE001 - a damaged cache is recomputed
            cached = {}
    if mesh_file.is_file():
        try:
            meshes = read_mesh_table(mesh_file)
        except Exception:  # noqa: BLE001 - likewise: the faces with a mesh are redone
            meshes = {}
    stamps = {k: _stamp(task, k) for k in keys}
    # a face found with a mesh but cached without it (a cache written before meshes were kept) is redone
    todo = [k for k in keys if k not in cached or cached[k].get("stamp") != stamps[k]
            or (method != "file" and cached[k].get("status") == "ok" and cached[k].get("method") in MESH_METHODS
                and k not in meshes)]
    if tick is not None:
        tick(len(keys) - len(todo))
        progress = False
    if todo:
        from tqdm.auto import tqdm

        from ..face.landmarks import LandmarkResult, landmarks_to_row

        bar = tqdm(total=len(todo), desc="landmarks", unit="img", disable=not progress, leave=False)
        with (DaskSession(dask) if dask else contextlib.nullcontext()) as session:  # one cluster for all chunks
            for c in range(0, len(todo), CHECKPOINT):  # the cache is saved per chunk: an interrupted run resumes
                items, rows_new = [], []
                for k in todo[c:c + CHECKPOINT]:
                    if k in task.missing:
                        rows_new.append(landmarks_to_row(k, LandmarkResult(None, "error", task.missing[k])))
                    else:
                        try:
                            items.append((k, task.image_source(k)))
                        except Exception as e:  # noqa: BLE001
                            rows_new.append(landmarks_to_row(k, LandmarkResult(None, "error", str(e))))
                rows_new += _run_detection(method, opts, items, jobs, session)
                for r in rows_new:
                    r["stamp"] = stamps[r["key"]]
                    mesh = r.pop("_mesh", None)
                    if mesh is None:
                        meshes.pop(r["key"], None)
                    else:
                        meshes[r["key"]] = mesh
                    cached[r["key"]] = r
                df = pd.DataFrame(sorted(cached.values(), key=lambda r: r["key"]),
                                  columns=list(TABLE_COLUMNS) + ["stamp"])
                atomic_write_table(df, cache_file)
                write_mesh_table(meshes, mesh_file)
                bar.update(len(rows_new))
                if tick is not None:
                    tick(len(rows_new))
        bar.close()
    rows = {k: {c: cached[k][c] for c in TABLE_COLUMNS} for k in keys}
    table = run_dir / LANDMARK_TABLE
    text = pd.DataFrame([rows[k] for k in sorted(keys)], columns=list(TABLE_COLUMNS)).to_csv(
        index=False, lineterminator="\n").encode()
    if not table.is_file() or table.read_bytes() != text:  # unchanged content keeps synth's fingerprint
        atomic_write_bytes(table, text)
    run_meshes = {k: meshes[k] for k in keys if k in meshes and rows[k]["status"] == "ok"}
    run_mesh = mesh_path_for(table)
    if run_meshes:
        write_mesh_table(run_meshes, run_mesh)  # unchanged bytes are not rewritten
    elif run_mesh.is_file():
        run_mesh.unlink()
    return CleanLandmarks(rows, table, desc, len(todo), time.perf_counter() - t0, stamps, run_meshes)


def _run_detection(method: str, opts: dict, items: list, jobs: int, session=None) -> list[dict]:
    if not items:
        return []
    if session is not None:  # Dask: batches as tasks, rows back in item order
        from ..distributed import run_on_dask

        size = max(16, -(-len(items) // 64))
        batches = [items[i:i + size] for i in range(0, len(items), size)]
        return [r for rows in run_on_dask(session, _detect_task, (method, opts), batches) for r in rows]
    jobs = (os.cpu_count() or 1) if jobs == -1 else max(int(jobs), 1)
    if jobs == 1 or len(items) < 64:
        return _detect_batch(method, opts, items)
    from joblib import Parallel, delayed

    size = max(16, -(-len(items) // (jobs * 4)))
    batches = [items[i:i + size] for i in range(0, len(items), size)]
    out: list[dict] = []
    with Parallel(n_jobs=jobs, backend="loky", return_as="generator") as par:
        for rows in par(delayed(_detect_batch)(method, opts, b) for b in batches):
            out += rows
    return out


# ----------------------------------------------------------------------------------- synth


@dataclass
class OccludedSet:
    """One synth variant of one run: per key the occluded image and its labels."""

    run: str
    synth_variant: str
    out: Path  # the synth run's folder
    rows: dict[str, dict]  # key -> manifest row (status, reason, image, mask, occluder, scale, area_frac, cells...)
    fingerprint: str  # the synth run's fingerprint (configuration, occluders, landmarks file)

    def image_path(self, key: str) -> Path | None:
        r = self.rows.get(key)
        if r is None or r["status"] != "ok" or not r["image"]:
            return None
        return resolve_under(self._root, r["image"])

    def __post_init__(self):
        self._root = os.path.realpath(self.out)

    def failure(self, key: str) -> str | None:
        return _row_failure(self.rows.get(key), "occlusion", missing="not in the synth manifest")

    def area(self, key: str) -> float:
        r = self.rows.get(key)
        return float(r["area_frac"]) if r is not None and r["status"] == "ok" else float("nan")

    def cells(self, key: str, k: int) -> np.ndarray:
        r = self.rows.get(key)
        if r is None or r["status"] != "ok":
            return np.full(k * k, np.nan)
        return np.asarray(json.loads(r["cells"]), np.float64)


def synth_config(protocol: Protocol, task: Task, run: SynthRun, keys: list[str], landmarks_table: Path,
                 out: Path, jobs: int, dask: str | None = None):
    from ..synth.pipeline import SynthConfig

    occ = protocol.occlusion
    return SynthConfig(
        src=task.synth_src, out=str(out), landmarks="file", landmarks_file=str(landmarks_table),
        occluders=tuple(occ["occluders"]), placement=run.placement, scales=tuple(run.scales),
        per_scale=run.per_scale, per_occluder=run.per_occluder, clean_ratio=0.0, k=occ["k"], seed=occ["seed"],
        keys=tuple(keys), jpeg_quality=occ["jpeg_quality"], jobs=jobs, overwrite=True,
        allow_unsafe_pickle=task.allow_unsafe_pickle, dask=dask)


def run_images(protocol: Protocol, run: SynthRun, n_keys: int) -> int:
    """Images a synth run writes for ``n_keys`` inputs (inputs x its variants), for progress totals."""
    n_occ = len(protocol.occlusion["occluders"]) if run.per_occluder else 1
    return n_keys * n_occ * (len(run.scales) if run.per_scale else 1)


def synthesize(protocol: Protocol, task: Task, keys: list[str], landmarks_table: Path, run_dir: Path,
               jobs: int = 1, progress: bool = True, runs: set[str] | None = None, tick=None, stage=None,
               dask: str | None = None) -> tuple[dict[tuple[str, str], OccludedSet], dict]:
    """Run (or resume) the synth runs of the protocol (all, or those named in ``runs``) on ``keys``
    (``dask``: on Dask, as ``occbench synth --dask``).
    With ``tick`` (an outer progress bar) synth's own bar is off and ``tick(run_images(...))`` is
    called after each run; ``stage(name)`` is called before each run.

    Returns ({(run, synth_variant): OccludedSet}, info) where info records per run its folder,
    fingerprint, status counts and seconds.
    """
    from ..synth.manifest import read_manifest
    from ..synth.pipeline import load_run_config, run_synth

    sets: dict[tuple[str, str], OccludedSet] = {}
    info: dict = {}
    for run in protocol.synth_runs():
        if runs is not None and run.name not in runs:
            continue
        out = run_dir / run.name
        t0 = time.perf_counter()
        if stage is not None:
            stage(f"occlude ({run.name})")
        summary = run_synth(synth_config(protocol, task, run, keys, landmarks_table, out, jobs, dask),
                            progress=progress and tick is None)
        if tick is not None:
            tick(run_images(protocol, run, len(keys)))
        fp = load_run_config(out)["fingerprint"]
        df = read_manifest(out)
        by_variant: dict[str, dict[str, dict]] = {}
        for r in df.to_dict("records"):
            by_variant.setdefault(r["variant"], {})[r["key"]] = r
        for v, rows in by_variant.items():
            sets[(run.name, v)] = OccludedSet(run.name, v, out, rows, fp)
        info[run.name] = {"out": str(out), "fingerprint": fp, "variants": sorted(by_variant),
                          "status_counts": summary.status_counts, "resumed": summary.resumed,
                          "processed": summary.processed, "seconds": round(time.perf_counter() - t0, 3)}
    return sets, info


def _row_failure(row: dict | None, stage: str, *, missing: str) -> str | None:
    """None for an ok row, else the reason a landmarks/synth row cannot be used."""
    if row is None:
        return missing
    if row["status"] == "ok":
        return None
    return f"{stage} {row['status']}: {row['reason']}" if row["reason"] else f"{stage} {row['status']}"
