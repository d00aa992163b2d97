"""Path safety and data-root resolution."""
from __future__ import annotations

import os
import sys
from pathlib import Path, PurePosixPath

from .errors import DataNotFoundError, UnsafePathError

DATA_ENV = "OCCBENCH_DATA"
REPO_ROOT = Path(__file__).resolve().parents[1]


def safe_join(root: str | os.PathLike, rel: str | os.PathLike) -> Path:
    """Join ``rel`` under ``root``; refuse absolute paths and anything resolving outside root."""
    root_p = Path(root).resolve()
    rel_s = os.fspath(rel)
    if os.path.isabs(rel_s) or rel_s.startswith("~"):
        raise UnsafePathError(f"path {rel_s!r} must be relative to {root_p}")
    out = (root_p / rel_s).resolve()
    if out != root_p and root_p not in out.parents:
        raise UnsafePathError(f"path {rel_s!r} escapes its root {root_p}")
    return out


def resolve_under(root_real: str, rel: str) -> Path:
    """``safe_join`` for many paths under one already-resolved root (``os.path.realpath``), stricter:
    refuses absolute paths, any '..' part, '~' and symlinks leading outside the root."""
    p = PurePosixPath(rel)
    real = os.path.realpath(os.path.join(root_real, rel))
    if p.is_absolute() or ".." in p.parts or str(rel).startswith("~") or not real.startswith(root_real + os.sep):
        raise UnsafePathError(f"path {rel!r} escapes its root {root_real}")
    return Path(real)


def data_root(explicit: str | os.PathLike | None = None, *, required: bool = True) -> Path | None:
    """--data-root, else $OCCBENCH_DATA. Raises a helpful error when required and unset/missing."""
    val = explicit if explicit is not None else os.environ.get(DATA_ENV)
    if not val:
        if required:
            raise DataNotFoundError(
                f"no data root: pass --data-root DIR or set {DATA_ENV}=DIR "
                "(the folder that holds your datasets, e.g. DIR/lfw, DIR/casia)"
            )
        return None
    p = Path(val).expanduser()
    if not p.is_dir():
        raise DataNotFoundError(f"data root {p} does not exist or is not a directory")
    return p


def resource_dir(name: str) -> Path:
    """Built-in resource folders shipped at the repo top level (``occluders``, ``protocols``).

    Works from a source checkout / editable install; a wheel installs them as data files under
    <prefix>/share/occbench/ (see setup.cfg [options.data_files]).
    """
    for cand in (REPO_ROOT / name, Path(sys.prefix) / "share" / "occbench" / name):
        if cand.is_dir():
            return cand
    raise DataNotFoundError(f"built-in resource folder {name!r} not found (broken install?)")
