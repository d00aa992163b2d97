"""Training-ready shards: insightface RecordIO and WebDataset tar, written deterministically.

A *sample* is one occluded (or clean) image with its mask and labels (:class:`ShardSample`).
A shard is written whole and atomically, then described by a ``<name>.done.json`` holding the size
and SHA-256 of each of its files: a shard is either complete and verified, or redone.

``rec`` shards (``shards/rec-00000.rec/.idx/.parquet``): RecordIO records ``0..n-1`` whose payload
is an ``IRHeader`` (flag 0, label = class id, id = record) + the image bytes (mxnet ``recordio.pack``);
the Parquet holds one row per record: key, identity, label, variant, status, the mask as PNG bytes
(``mask_png``), the K×K pattern, cell fractions, area, occluder, scale, seed and params.
:func:`assemble_rec` concatenates the shards behind an insightface header record into
``train.rec`` / ``train.idx`` / ``property`` (records ``1..N``; what arcface_torch's
``MXFaceDataset`` and ``occbench synth --src`` read) and ``train.parquet`` (same rows, keyed by record).

``wds`` shards (``shards/wds-00000.tar``): per sample ``<skey>.<ext>`` (the image, ``jpg`` for JPEG),
``<skey>.mask.png`` and ``<skey>.json``, where ``skey`` is the dot-free sample key
``<item index:09d>-<variant index:02d>``. Written with the stdlib ``tarfile`` in ustar format with
fixed mtime/uid/gid/uname/gname/mode, members in sample order, so equal samples give equal bytes;
any WebDataset reader (``webdataset.WebDataset(urls)``) reads them. ``shards.json`` lists the shards.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError, DataNotFoundError, OccbenchError
from .atomic import atomic_open, atomic_write_bytes, atomic_write_json
from .recordio import MAGIC, IRHeader, RecordIOReader, frame, pack
from .sources import Source, SourceItem

FORMATS = ("files", "rec", "wds")
SHARD_DIR = "shards"
INDEX_FILE = "shards.json"
_TAR_MTIME = 946684800  # 2000-01-01: fixed, so a shard's bytes never depend on when it was written
_COPY_CHUNK = 1 << 22

META_FIELDS = ("key", "identity", "label", "variant", "status", "occluder", "scale", "seed", "pattern",
               "area_frac", "cells", "params")


@dataclass
class ShardSample:
    """One image of a shard: ``image`` and ``mask`` are encoded bytes (the mask a PNG, 255 = occluded);
    ``meta`` holds the labels (``META_FIELDS``; ``cells`` and ``params`` as JSON text)."""

    skey: str  # dot-free sample key, unique in the run
    label: int
    image: bytes
    image_ext: str  # jpg, png, webp, ...
    mask: bytes
    meta: dict = field(default_factory=dict)


def sample_key(item_index: int, variant_index: int) -> str:
    return f"{int(item_index):09d}-{int(variant_index):02d}"


def shard_name(fmt: str, index: int) -> str:
    return f"{fmt}-{int(index):05d}"


def shard_files(fmt: str, name: str) -> tuple[str, ...]:
    if fmt == "rec":
        return (f"{name}.rec", f"{name}.idx", f"{name}.parquet")
    if fmt == "wds":
        return (f"{name}.tar",)
    raise ConfigError(f"unknown shard format {fmt!r}: use one of rec, wds")


# ------------------------------------------------------------------------------------ writers


_META_TYPES = {"record": "int64", "sample_key": "string", "key": "string", "identity": "string", "label": "int64",
               "variant": "string", "status": "string", "occluder": "string", "scale": "float64", "seed": "int64",
               "pattern": "int64", "area_frac": "float64", "cells": "string", "params": "string", "mask_png": "binary"}


def _meta_table(samples: list[ShardSample]):
    """The labels table of a shard as a pyarrow Table (one row per record, fixed schema)."""
    import pyarrow as pa

    def col(f, kind):
        vals = [s.meta.get(f) for s in samples]
        if kind == "string":
            return ["" if v is None else str(v) for v in vals]
        if kind == "int64":
            return [0 if v is None else int(v) for v in vals]
        return [float("nan") if v is None else float(v) for v in vals]

    cols = {"record": list(range(len(samples))), "sample_key": [s.skey for s in samples]}
    for f, kind in _META_TYPES.items():
        if f not in cols and f not in ("label", "mask_png"):
            cols[f] = col(f, kind)
    cols["label"] = [int(s.label) for s in samples]
    cols["mask_png"] = [bytes(s.mask) for s in samples]
    schema = pa.schema([(f, getattr(pa, k)()) for f, k in _META_TYPES.items()])
    return pa.table({f: cols[f] for f in _META_TYPES}, schema=schema)


def _write_parquet(table, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(None), buf, compression="zstd")
    atomic_write_bytes(path, buf.getvalue())


def write_rec_shard(folder: str | os.PathLike, name: str, samples: list[ShardSample]) -> None:
    """``name.rec`` + ``name.idx`` (records 0..n-1) + ``name.parquet`` (labels and masks by record)."""
    folder = Path(folder)
    with atomic_open(folder / f"{name}.rec") as rec, atomic_open(folder / f"{name}.idx") as idx:
        pos = 0
        for i, s in enumerate(samples):
            data = frame(pack(IRHeader(0, float(s.label), i, 0), s.image))
            rec.write(data)
            idx.write(f"{i}\t{pos}\n".encode("ascii"))
            pos += len(data)
    _write_parquet(_meta_table(samples), folder / f"{name}.parquet")


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = _TAR_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    tar.addfile(info, io.BytesIO(data))


def sample_json(s: ShardSample) -> bytes:
    meta = {f: s.meta.get(f) for f in META_FIELDS}
    meta["label"] = int(s.label)
    for f in ("cells", "params"):  # stored as JSON text in the manifest; nested here
        if isinstance(meta[f], str) and meta[f]:
            meta[f] = json.loads(meta[f])
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=True).encode("utf-8")


def write_wds_shard(folder: str | os.PathLike, name: str, samples: list[ShardSample]) -> None:
    """``name.tar``: ``<skey>.<ext>``, ``<skey>.mask.png``, ``<skey>.json`` per sample, deterministic bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for s in samples:
            if "." in s.skey or "/" in s.skey:
                raise ConfigError(f"sample key {s.skey!r} must hold no '.' or '/' (WebDataset splits names at dots)")
            _tar_member(tar, f"{s.skey}.{s.image_ext}", s.image)
            _tar_member(tar, f"{s.skey}.mask.png", s.mask)
            _tar_member(tar, f"{s.skey}.json", sample_json(s))
    atomic_write_bytes(Path(folder) / f"{name}.tar", buf.getvalue())


def write_shard(fmt: str, folder: str | os.PathLike, name: str, samples: list[ShardSample], extra: dict | None = None) -> dict:
    """Write one shard, then its ``<name>.done.json`` (file sizes and SHA-256 + ``extra``); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "rec":
        write_rec_shard(folder, name, samples)
    elif fmt == "wds":
        write_wds_shard(folder, name, samples)
    else:
        raise ConfigError(f"unknown shard format {fmt!r}: use one of rec, wds")
    done = {"name": name, "format": fmt, "n_samples": len(samples),
            "files": {f: file_digest(folder / f) for f in shard_files(fmt, name)}}
    done.update(extra or {})
    atomic_write_bytes(folder / f"{name}.done.json",
                       json.dumps(done, sort_keys=True, separators=(",", ":"), default=_json_default).encode("utf-8"))
    return done


def _json_default(o):
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def file_digest(path: Path) -> dict:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_COPY_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return {"bytes": n, "sha256": h.hexdigest()}


def verified_shard(folder: str | os.PathLike, name: str, digest: bool = True) -> dict | None:
    """The shard's done record if it exists and every file has its recorded size and SHA-256; else None
    (the shard must be redone). ``digest=False`` checks the sizes only (for shards just written, or
    verified in full earlier in the same run)."""
    folder = Path(folder)
    try:
        done = json.loads((folder / f"{name}.done.json").read_text())
        for f, d in done["files"].items():
            if (folder / f).stat().st_size != d["bytes"] or \
                    digest and file_digest(folder / f)["sha256"] != d["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return done


# ---------------------------------------------------------------------------- assembly and index


def write_index(out: str | os.PathLike, fmt: str, shard_size: int, dones: list[dict], extra: dict | None = None) -> dict:
    """``OUT/shards.json``: the shard list in order with sample counts, sizes and SHA-256."""
    index = {"format": fmt, "shard_size": int(shard_size), "n_samples": sum(d["n_samples"] for d in dones),
             "shards": [{"name": d["name"], "n_samples": d["n_samples"], "first_item": d.get("first_item"),
                         "n_items": d.get("n_items"),
                         "files": {f"{SHARD_DIR}/{f}": v for f, v in d["files"].items()}} for d in dones]}
    index.update(extra or {})
    atomic_write_json(Path(out) / INDEX_FILE, index)
    return index


def assemble_rec(out: str | os.PathLike, dones: list[dict], num_classes: int, image_hw: tuple[int, int]) -> int:
    """Concatenate rec shards into ``OUT/train.rec`` + ``train.idx`` (header record 0, images 1..N),
    ``property`` (``num_classes,H,W``) and ``train.parquet`` (shard rows, ``record`` = 1..N).
    Returns N. RecordIO records are self-framed, so a shard's bytes are copied unchanged."""
    import pyarrow as pa
    import pyarrow.compute  # noqa: F401 - pa.compute
    import pyarrow.parquet as pq

    out = Path(out)
    folder = out / SHARD_DIR
    n = sum(d["n_samples"] for d in dones)
    head = frame(pack(IRHeader(0, [float(n + 1), float(n + 1)], 0, 0)))
    frames = []
    with atomic_open(out / "train.rec") as rec, atomic_open(out / "train.idx") as idx:
        rec.write(head)
        idx.write(f"0\t0\n".encode("ascii"))
        base, key = len(head), 1
        for d in dones:
            name = d["name"]
            offsets = [int(line.split(b"\t")[1]) for line in (folder / f"{name}.idx").read_bytes().splitlines()]
            idx.write("".join(f"{key + i}\t{base + o}\n" for i, o in enumerate(offsets)).encode("ascii"))
            with open(folder / f"{name}.rec", "rb") as fh:
                while chunk := fh.read(_COPY_CHUNK):
                    rec.write(chunk)
            base += d["files"][f"{name}.rec"]["bytes"]
            t = pq.read_table(folder / f"{name}.parquet")
            t = t.set_column(0, "record", pa.compute.add(t.column("record"), key))
            frames.append(t)
            key += len(offsets)
    from .atomic import atomic_write_text

    atomic_write_text(out / "property", f"{int(num_classes)},{int(image_hw[0])},{int(image_hw[1])}\n")
    _write_parquet(pa.concat_tables(frames) if frames else _meta_table([]), out / "train.parquet")
    return n


# ------------------------------------------------------------------------------------------ readers


def read_index(out: str | os.PathLike) -> dict:
    p = Path(out) / INDEX_FILE
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise DataNotFoundError(f"{p} not found: not a sharded occbench synth output (run with --format rec|wds)") from None
    except ValueError as e:
        raise OccbenchError(f"{p} is not valid JSON ({e}); rerun the synth command to rewrite it") from None


def iter_wds(tar_path: str | os.PathLike) -> Iterator[dict]:
    """Samples of a WebDataset tar in order: {"__key__", "<ext>": bytes, ...} (grouped by sample key)."""
    cur: dict | None = None
    with tarfile.open(tar_path, mode="r:") as tar:
        for m in tar:
            if not m.isfile():
                continue
            base = m.name.rsplit("/", 1)[-1]
            skey, _, ext = base.partition(".")
            data = tar.extractfile(m).read()
            if cur is None or cur["__key__"] != skey:
                if cur is not None:
                    yield cur
                cur = {"__key__": skey}
            cur[ext] = data
    if cur is not None:
        yield cur


def wds_members(tar_path: str | os.PathLike) -> dict[str, dict[str, tuple[int, int]]]:
    """{sample key: {ext: (data offset, size)}} of a tar, for random access by pread."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    with tarfile.open(tar_path, mode="r:") as tar:
        for m in tar:
            if m.isfile():
                skey, _, ext = m.name.rsplit("/", 1)[-1].partition(".")
                out.setdefault(skey, {})[ext] = (m.offset_data, m.size)
    return out


class RecShard:
    """One rec shard: image bytes, label and the Parquet row of record ``i``."""

    def __init__(self, folder: str | os.PathLike, name: str):
        import pandas as pd

        folder = Path(folder)
        self.reader = RecordIOReader(folder / f"{name}.rec", folder / f"{name}.idx")
        self.meta = pd.read_parquet(folder / f"{name}.parquet")

    def __len__(self) -> int:
        return len(self.meta)

    def read(self, i: int) -> tuple[IRHeader, bytes]:
        return self.reader.read(int(i))


class WdsSource(Source):
    """A sharded wds synth output as an occbench source (``occbench synth --src OUT``).

    Items in shard order; key = the original key, prefixed ``<variant>/`` when the run had other
    variants than ``main``; identity = the recorded identity. Bytes are read by offset (pread)."""

    kind = "wds-shards"

    def __init__(self, out: str | os.PathLike, name: str | None = None):
        super().__init__(Path(out).resolve(), name)
        self._where: dict[str, tuple[str, int, int]] = {}
        self.index = read_index(self.root)
        if self.index.get("format") != "wds":
            raise ConfigError(f"{self.root} holds {self.index.get('format')!r} shards; for rec use its train.rec")

    def __getstate__(self):
        state = super().__getstate__()
        state["_where"] = {}
        return state

    def _scan(self):
        metas = []
        for sh in self.index["shards"]:
            rel = next(iter(sh["files"]))
            path = self.root / rel
            members = wds_members(path)
            with open(path, "rb") as fh:
                for skey, exts in members.items():
                    img_ext = next(e for e in exts if e not in ("json", "mask.png"))
                    off, size = exts["json"]
                    fh.seek(off)
                    meta = json.loads(fh.read(size))
                    metas.append((meta, rel, exts[img_ext], img_ext))
        multi = any(m["variant"] != "main" for m, *_ in metas)
        items = []
        for meta, rel, (off, size), ext in metas:
            key = f"{meta['variant']}/{meta['key']}" if multi else meta["key"]
            if key in self._where:
                raise OccbenchError(f"{self.root}: key {key!r} occurs twice in the shards; rewrite them")
            self._where[key] = (rel, off, size)
            items.append(SourceItem(key, str(meta.get("identity") or ""), ext))
        return items

    def read_bytes(self, item) -> bytes:
        key = item if isinstance(item, str) else item.key
        if not self._where:
            self.items()
        try:
            rel, off, size = self._where[key]
        except KeyError:
            raise DataNotFoundError(f"{key!r} is not a sample of {self.root}") from None
        fd = os.open(self.root / rel, os.O_RDONLY)
        try:
            data = os.pread(fd, size, off)
        finally:
            os.close(fd)
        if len(data) != size:
            raise OccbenchError(f"{self.root / rel} is truncated at sample {key!r}; rerun the synth command")
        return data

    def describe(self) -> dict:
        return super().describe() | {"n_shards": len(self.index["shards"])}


def image_ext(fmt: str) -> str:
    f = (fmt or "png").lower()
    return "jpg" if f in ("jpeg", "jpg") else f


__all__ = [
    "FORMATS", "SHARD_DIR", "INDEX_FILE", "META_FIELDS", "ShardSample", "sample_key", "shard_name", "shard_files",
    "write_rec_shard", "write_wds_shard", "write_shard", "verified_shard", "file_digest", "write_index",
    "assemble_rec", "read_index", "iter_wds", "wds_members", "RecShard", "WdsSource", "image_ext", "MAGIC",
]
