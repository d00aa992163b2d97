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
that cannot be written is skipped (the run's own writes report a full disk)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

STORE_DIR = "sprites"
_NPY_HEADER_MAX = 256  # an .npy v1 header of a 3-d uint8 array is 128 bytes


class SpriteStore:
    """``load`` / ``save`` premultiplied RGBA uint8 sprites under ``root`` (atomic writes)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._ready = False

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
        except OSError:
            try:
                os.unlink(part)
            except OSError:
                pass
