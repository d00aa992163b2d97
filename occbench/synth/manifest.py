"""The synth output manifest: columns, the resumable row log, and table I/O.

A synth run writes one row per (input image, variant). While it runs, every finished input image
appends one JSON line ``{"key": ..., "rows": [...], "landmarks": {...} | null}`` to
``OUT/.synth/rows.jsonl`` (after its images and masks are in place). The final ``manifest.parquet`` /
``manifest.csv`` are assembled from that log in the planned order, so an interrupted run that is
resumed ends with the very same tables as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import DataNotFoundError
from ..io.atomic import _json_default, atomic_write_table, output_error

STATUSES = ("ok", "clean", "noface", "error")

# name -> dtype kind ("str" | "float" | "int"); order is the column order of the tables.
COLUMNS: dict[str, str] = {
    "key": "str",  # source item key (relative path for folders, "rec/<i>" for RecordIO, "<i>" for .bin)
    "identity": "str",  # identity label from the source ("" when unknown)
    "variant": "str",  # "main" | "s1.5" | "<occluder>" | "<occluder>@s1.5"
    "src": "str",  # the --src spec of the run (the key locates the image in it)
    "image": "str",  # output image, relative to OUT ("" for noface/error)
    "mask": "str",  # output mask PNG (uint8, 255 = occluded), relative to OUT ("" for noface/error)
    "status": "str",  # ok | clean | noface | error
    "reason": "str",  # why noface/error ("" otherwise)
    "occluder": "str",  # occluder name; "none" for clean rows
    "placement": "str",  # anchored | free
    "scale": "float",  # occluder scale (NaN for clean rows)
    "seed": "int",  # seed of this row's random draws: derive_seed(seed, key, group)
    "area_frac": "float",  # occluded fraction of the 112x112 face frame (NaN for noface/error)
    "pattern": "int",  # FROM K x K pattern label in the face frame (0 = clean; -1 for noface/error)
    "k": "int",  # pattern grid size K
    "cells": "str",  # JSON list of the K*K per-cell occluded fractions (row-major, face frame)
    "params": "str",  # JSON of the occluder's sampled parameters
    "landmarks": "str",  # landmark source used (template | mediapipe | file ...)
    "width": "int",  # image width (0 when undecodable)
    "height": "int",  # image height
    "fmt": "str",  # encoded format of input and output (jpg | png | ...)
    "conversion": "str",  # what decoding the input dropped for this row's image ("alpha channel dropped", ...)
}

# face parts (occbench/face/parts.yaml): part_map path, part_reason, part_<name> occluded fractions
from ..face.parts import manifest_columns as _part_columns  # noqa: E402

COLUMNS.update(_part_columns())

MANIFEST_COLUMNS = tuple(COLUMNS)


_DEFAULTS = {c: ("" if t == "str" else (math.nan if t == "float" else 0)) for c, t in COLUMNS.items()}
_DEFAULTS["pattern"] = -1


def empty_row(**values) -> dict:
    """A manifest row with neutral defaults, updated with ``values``."""
    if not values.keys() <= COLUMNS.keys():
        raise KeyError(f"unknown manifest columns: {sorted(set(values) - set(COLUMNS))}")
    row = _DEFAULTS.copy()
    row.update(values)
    return row


def rows_to_frame(rows: Iterable[dict]):
    """Manifest rows -> DataFrame with the fixed column order and dtypes."""
    import pandas as pd

    rows = list(rows)
    cols = {c: [r.get(c, _DEFAULTS[c]) for r in rows] for c in MANIFEST_COLUMNS}  # by column: faster than by row
    df = pd.DataFrame(cols, columns=list(MANIFEST_COLUMNS))
    for c, t in COLUMNS.items():
        if t == "int":
            df[c] = df[c].astype(np.int64)
        elif t == "float":
            df[c] = df[c].astype(np.float64)
        else:
            df[c] = df[c].astype(str)
    return df


def write_manifest(df, out: str | os.PathLike) -> None:
    out = Path(out)
    atomic_write_table(df, out / "manifest.parquet")
    atomic_write_table(df, out / "manifest.csv")


def read_manifest(path: str | os.PathLike):
    """Read a synth manifest from OUT (the folder), manifest.parquet or manifest.csv."""
    import pandas as pd

    p = Path(path)
    if p.is_dir():
        p = p / "manifest.parquet" if (p / "manifest.parquet").is_file() else p / "manifest.csv"
    if not p.is_file():
        raise DataNotFoundError(f"no synth manifest at {path} (expected OUT/manifest.parquet or .csv "
                                "written by `occbench synth`)")
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    dtypes = {c: str for c, t in COLUMNS.items() if t == "str"}
    return pd.read_csv(p, dtype=dtypes, keep_default_na=False,
                       na_values={c: ["", "nan", "NaN"] for c, t in COLUMNS.items() if t == "float"})


class RowLog:
    """Append-only JSON-lines log of finished items (one line per input image).

    A line is written with a single ``write`` and flushed, after that item's files are in place.
    A kill can at worst leave a partial last line: ``open`` trims it, so that item is redone.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fh = None
        self.records: dict[str, dict] = {}  # what the log holds: ``load()``, then every ``append``

    def load(self) -> dict[str, dict]:
        """Records by key (a later line for the same key wins); trims a partial last line."""
        self.records = {}
        if not self.path.is_file():
            return {}
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):  # partial line from an interrupted write
            with open(self.path, "r+b") as fh:
                fh.truncate(end)
            data = data[:end]
        recs = self.records
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a damaged line: its item is simply redone
            if isinstance(rec, dict) and "key" in rec and "rows" in rec:
                recs[rec["key"]] = rec
        return dict(recs)

    def append(self, records: Iterable[dict]) -> None:
        """Log records and keep them in ``records`` (their values equal what the log reads back)."""
        records = list(records)
        if not records:
            return
        lines = [_LOG_ENCODER.encode(r) for r in records]
        try:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "ab")
            self._fh.write(("\n".join(lines) + "\n").encode("utf-8"))
            self._fh.flush()
        except OSError as e:
            self._abandon()
            raise output_error(e, self.path, "Fix that and rerun the same command to resume") from e
        self.records.update((r["key"], r) for r in records)

    def _abandon(self) -> None:
        """Drop a handle whose buffered write failed (a partial line is trimmed by the next ``load``)."""
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError as e:
                self._fh = None
                raise output_error(e, self.path, "Fix that and rerun the same command to resume") from e
            self._fh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_LOG_ENCODER = json.JSONEncoder(sort_keys=True, allow_nan=True, default=_json_default)
_COMPACT_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_json_default)


def to_json(obj) -> str:
    """Compact, key-sorted JSON used for the ``params`` / ``cells`` columns."""
    return _COMPACT_ENCODER.encode(obj)
