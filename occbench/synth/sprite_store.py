"""Bank sprites drawn once per run, shared by its processes: ``OUT/.synth/sprites/<fingerprint>/``.

With ``--bank N`` every process of a run (joblib workers, Dask workers, a resumed run) needs the same
N looks per occluder, and drawing a look costs 1–40 ms (cloth masks, hands). In memory each process
would draw them all again; here the first process to need a sprite draws it and saves it, the others
load it (~50 µs). A sprite is a pure function of (look, level), so a loaded sprite is the very array
the process would have drawn: outputs are byte-identical with or without the store (tested).

Only sprites of bank looks whose drawing does not depend on the image are stored (a hand's skin
matched to the face is not). The folder is named by the run's fingerprint (occbench version, recipe,
occluder definitions), so a sprite from another configuration is never read; ``--overwrite`` clears
it with the rest of ``OUT/.synth``. It is a cache: a file that cannot be read is drawn again, and one
that cannot be written is skipped (the run's own writes report a full disk).

Its size is capped (``OCCBENCH_SPRITE_STORE_MB``, default 1024; 0 turns the store off): past the cap
no sprite is saved and processes draw what is not stored, as without the store. Each process rescans
the folder after every 32 MB it writes, so N processes overshoot the cap by at most N x 32 MB."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

STORE_DIR = "sprites"
LIMIT_ENV = "OCCBENCH_SPRITE_STORE_MB"
DEFAULT_LIMIT_MB = 1024
_NPY_HEADER_MAX = 256  # an .npy v1 header of a 3-d uint8 array is 128 bytes
_RESCAN_BYTES = 32 << 20  # a process rescans the store's size after writing this much


def store_limit_bytes() -> int:
    """The cap from ``OCCBENCH_SPRITE_STORE_MB`` (MB; 0 = no store); the default when unset or not a
    non-negative number."""
    raw = os.environ.get(LIMIT_ENV, "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_LIMIT_MB
    except ValueError:
        mb = DEFAULT_LIMIT_MB
    if not mb >= 0:  # negative or NaN
        mb = DEFAULT_LIMIT_MB
    return int(min(mb, 1 << 40) * (1 << 20))


def _folder_bytes(folder: Path) -> int:
    try:
        with os.scandir(folder) as it:
            return sum(e.stat(follow_symlinks=False).st_size for e in it if e.is_file(follow_symlinks=False))
    except OSError:
        return 0


class SpriteStore:
    """``load`` / ``save`` premultiplied RGBA uint8 sprites under ``root`` (atomic writes)."""

    def __init__(self, root: str | os.PathLike, limit_bytes: int | None = None):
        self.root = Path(root)
        self.limit_bytes = store_limit_bytes() if limit_bytes is None else int(limit_bytes)
        self._ready = False
        self._used: int | None = None  # the folder's size at the last scan + what this process wrote since
        self._since_scan = 0

    def _has_room(self, nbytes: int) -> bool:
        if self._used is None or self._since_scan >= _RESCAN_BYTES:
            self._used, self._since_scan = _folder_bytes(self.root), 0
        return self._used + nbytes <= self.limit_bytes

    @classmethod
    def for_run(cls, out: str | os.PathLike, fingerprint: str) -> "SpriteStore":
        return cls(Path(out) / ".synth" / STORE_DIR / fingerprint[:32])

    @staticmethod
    def sweep(out: str | os.PathLike) -> None:
        """Remove the temp files of sprite writes a killed run left (run start, with OUT locked)."""
        from ..io.atomic import sweep_temp_files

        root = Path(out) / ".synth" / STORE_DIR
        if root.is_dir():
            for d in root.iterdir():
                if d.is_dir() and not d.is_symlink():
                    sweep_temp_files(d)

    def path(self, definition: str, vkey: str, level: float, stroke_min: float, grid: tuple[int, ...]) -> Path:
        key = json.dumps([definition, vkey, repr(float(level)), repr(float(stroke_min)), list(grid)])
        return self.root / (hashlib.sha256(key.encode()).hexdigest()[:40] + ".npy")

    def load(self, path: Path, shape: tuple[int, int, int]) -> np.ndarray | None:
        """The stored sprite, or None (absent, truncated, another shape: the caller draws it)."""
        try:
            size = path.stat().st_size
            if size > int(np.prod(shape)) + _NPY_HEADER_MAX:  # bounded by what the sprite can need
                return None
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if arr.dtype != np.uint8 or arr.shape != tuple(shape):
            return None
        return arr

    def save(self, path: Path, sprite: np.ndarray) -> None:
        """Write beside the destination, then rename (a reader sees the whole file or none)."""
        nbytes = int(sprite.nbytes) + 128  # the .npy header
        if not self._has_room(nbytes):
            return
        part = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # swept by sweep() if killed mid-write
        try:
            if not self._ready:
                for d in (self.root.parent, self.root):  # never recreate a removed OUT/.synth
                    try:
                        d.mkdir()
                    except FileExistsError:
                        pass
                self._ready = True
            with open(part, "wb") as fh:
                np.save(fh, np.ascontiguousarray(sprite), allow_pickle=False)
            os.replace(part, path)
            self._used += nbytes
            self._since_scan += nbytes
        except OSError:
            try:
                os.unlink(part)
            except OSError:
                pass
