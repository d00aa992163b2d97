"""Dense face-mesh points beside a landmarks table: ``X.csv`` / ``X.parquet`` -> ``X.mesh.npz``.

A landmarks table holds 5 points per image; the 468 MediaPipe mesh points (what face parts are made
from, ``occbench.face.parts``) travel in a sidecar so that a table read back by the ``file``
landmarker still has them. The sidecar is an uncompressed ``.npz`` with two arrays:

- ``keys``: (N,) unicode, the image keys (unique, sorted);
- ``points``: (N, P, 2) float64, image pixel coordinates (P = 468 for MediaPipe meshes).

Bytes are a pure function of the content (fixed zip timestamps), so an unchanged mesh keeps a synth
run's fingerprint. Reading never unpickles, and refuses a member whose declared size is more than
the file holds (no allocation beyond the file size).
"""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataNotFoundError

MESH_SUFFIX = ".mesh.npz"
_MEMBERS = ("keys.npy", "points.npy")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def mesh_path_for(table: str | os.PathLike) -> Path:
    """The sidecar of a landmarks table: ``dir/landmarks.csv`` -> ``dir/landmarks.mesh.npz``."""
    p = Path(table)
    return p.with_name(p.stem + MESH_SUFFIX)


def mesh_bytes(meshes: dict[str, np.ndarray]) -> bytes:
    """The sidecar's bytes for ``{key: (P, 2) points}`` (every mesh the same P; keys sorted)."""
    keys = sorted(meshes)
    shapes = {np.shape(meshes[k]) for k in keys}
    if len(shapes) > 1:
        raise ConfigError(f"meshes must all have the same shape, got {sorted(shapes)}")
    pts = np.stack([np.asarray(meshes[k], np.float64) for k in keys]) if keys else np.zeros((0, 0, 2))
    if pts.ndim != 3 or pts.shape[2] != 2:
        raise ConfigError(f"meshes must be (P, 2) point arrays, got {pts.shape[1:]}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in zip(_MEMBERS, (np.array(keys, dtype=str), pts)):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def write_mesh_table(meshes: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write the sidecar atomically (unchanged bytes are not rewritten)."""
    from ..io.atomic import atomic_write_bytes

    data = mesh_bytes(meshes)
    p = Path(path)
    if not (p.is_file() and p.stat().st_size == len(data) and p.read_bytes() == data):
        atomic_write_bytes(p, data)


def read_mesh_table(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{key: (P, 2) float64}`` from a sidecar, checked (ConfigError naming the file otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"mesh file not found: {path}")
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
            names = sorted(zf.namelist())
            if names != sorted(_MEMBERS):
                raise ConfigError(f"mesh file {path} must hold exactly {', '.join(_MEMBERS)}, has {names}")
            arrays = {}
            for name in _MEMBERS:
                info = zf.getinfo(name)
                if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
                    raise ConfigError(f"mesh file {path}: member {name} must be stored uncompressed")
                with zf.open(info) as fh:
                    arrays[name] = _read_member(fh, info.file_size, path, name)
    except zipfile.BadZipFile as e:
        raise ConfigError(f"mesh file {path} is not a .npz (zip) file: {e}") from None
    keys, pts = arrays["keys.npy"], arrays["points.npy"]
    if keys.ndim != 1 or keys.dtype.kind != "U":
        raise ConfigError(f"mesh file {path}: keys must be a 1-D string array")
    if pts.ndim != 3 or pts.shape[0] != keys.shape[0] or pts.shape[2] != 2 or pts.dtype.kind != "f":
        raise ConfigError(f"mesh file {path}: points must be (N, P, 2) floats for N = {keys.shape[0]} keys, "
                          f"got {pts.shape} {pts.dtype}")
    if len(set(keys.tolist())) != len(keys):
        raise ConfigError(f"mesh file {path} lists a key twice")
    if not np.isfinite(pts).all():
        raise ConfigError(f"mesh file {path} holds non-finite coordinates")
    pts = pts.astype(np.float64, copy=False)
    return {str(k): pts[i] for i, k in enumerate(keys.tolist())}


def _read_member(fh, member_size: int, path: Path, name: str) -> np.ndarray:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"unsupported .npy format version {version}")
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
    except ValueError as e:
        raise ConfigError(f"mesh file {path}: member {name} is not a .npy array: {e}") from None
    if dtype.hasobject:
        raise ConfigError(f"mesh file {path}: member {name} holds Python objects (refused: never unpickled)")
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if n < 0 or n * dtype.itemsize > member_size:
        raise ConfigError(f"mesh file {path}: member {name} declares {shape} {dtype}, more than it holds")
    data = fh.read(n * dtype.itemsize)
    if len(data) != n * dtype.itemsize:
        raise ConfigError(f"mesh file {path}: member {name} is truncated")
    arr = np.frombuffer(data, dtype=dtype, count=n)
    return arr.reshape(shape, order="F" if fortran else "C")
