"""Atomic file writes: write to a temp file in the same folder, fsync, then os.replace.

An OSError while writing becomes ``OutputWriteError`` with one line that says what to fix
(``output_error``); temp files are named ``.<name>.<random>.tmp`` (swept by ``sweep_temp_files``).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from ..errors import OutputWriteError

_UMASK = os.umask(0)
os.umask(_UMASK)


_HINTS = {
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "the disk quota is exceeded: free some space or raise the quota",
    errno.EROFS: "the file system is read-only: make it writable or choose another output folder",
    errno.EACCES: "permission denied: make the output folder writable for this user",
    errno.EPERM: "operation not permitted: make the output folder writable for this user",
    errno.EISDIR: "a folder is in the way at this path: remove or rename it",
    errno.ENOTDIR: "a file is in the way of a folder on this path: remove or rename it",
    errno.EEXIST: "a file or folder is in the way at this path: remove or rename it",
    errno.EFBIG: "the file is larger than the file system or the file-size limit (ulimit -f) allows",
    errno.ENAMETOOLONG: "the path is too long for the file system",
}


def output_error(e: OSError, path: str | os.PathLike, then: str = "") -> OutputWriteError:
    """An OSError met while writing ``path`` as one actionable line."""
    hint = _HINTS.get(e.errno) or (os.strerror(e.errno) if e.errno else f"{type(e).__name__}: {e}")
    return OutputWriteError(f"cannot write {os.fspath(path)}: {hint}" + (f". {then}" if then else ""))


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(e, OSError):
            raise output_error(e, path) from e
        raise


def sweep_temp_files(folder: str | os.PathLike) -> int:
    """Remove ``atomic_open`` leftovers (``.<name>.*.tmp``) of an interrupted write in ``folder``."""
    n = 0
    with contextlib.suppress(FileNotFoundError):
        for e in os.scandir(folder):
            if e.name.startswith(".") and e.name.endswith(".tmp") and e.is_file(follow_symlinks=False):
                os.unlink(e.path)
                n += 1
    return n


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: object):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def atomic_write_table(df, path: str | os.PathLike) -> None:
    """Write a pandas DataFrame as .parquet or .csv (by suffix), atomically."""
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        if path.suffix == ".parquet":
            df.to_parquet(fh, index=False)
        elif path.suffix == ".csv":
            fh.write(df.to_csv(index=False, lineterminator="\n").encode("utf-8"))
        else:
            raise ValueError(f"unsupported table format: {path.suffix}")
