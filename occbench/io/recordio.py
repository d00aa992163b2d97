"""MXNet/insightface RecordIO (``train.rec`` + ``train.idx``) read and write, without mxnet.

Framing (dmlc-core ``recordio.h``), little-endian: each physical record is
``uint32 magic 0xced7230a | uint32 lrec | data | zero pad to 4 bytes`` with ``lrec = cflag << 29 | len``.
A logical record whose data holds the magic at a 4-byte-aligned position is split there: the magic is
dropped and the pieces are written with cflag 1 (first), 2 (middle), 3 (last); a reader re-inserts the
magic between pieces. cflag 0 is an unsplit record. The ``.idx`` file has ``key<TAB>offset`` lines.

A payload starts with an ``IRHeader`` (``IfQQ``: flag, label, id, id2 = 24 bytes). When ``flag > 0`` the label
is ``flag`` float32 values following the header, then the image bytes (mxnet ``recordio.pack/unpack``).
insightface sets put a header record at key 0 (``flag > 0``, label ``[id_start, id_end]``, no image), images at
keys ``1 .. id_start-1`` and one header per identity at keys ``id_start .. id_end-1`` (label ``[first, end)``).
"""
from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections import namedtuple
from numbers import Number
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import DataNotFoundError, OccbenchError
from .atomic import atomic_open
from .images import ImageDecodeError

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_FRAME = struct.Struct("<II")
_LEN_MASK = (1 << 29) - 1
MAX_RECORD = 1 << 29  # dmlc-core refuses records of 2**29 bytes or more

IRHeader = namedtuple("IRHeader", ["flag", "label", "id", "id2"])
_IR = struct.Struct("<IfQQ")
IR_SIZE = _IR.size  # 24


class RecordIOError(OccbenchError):
    """A RecordIO set that cannot be used at all (missing or malformed .idx, missing .rec)."""


class CorruptRecordError(RecordIOError, ImageDecodeError):
    """One record is unreadable (bad magic, truncated, offset past EOF); the rest of the set is fine."""


# ---------------------------------------------------------------- payload (IRHeader) ---


def pack(header: IRHeader, data: bytes = b"") -> bytes:
    """Payload for ``header`` + ``data``, as mxnet ``recordio.pack``: a non-scalar label sets ``flag``."""
    if isinstance(header.label, Number):
        head = _IR.pack(0, float(header.label), int(header.id), int(header.id2))
        return head + bytes(data)
    label = np.ascontiguousarray(header.label, dtype="<f4").ravel()
    head = _IR.pack(label.size, 0.0, int(header.id), int(header.id2))
    return head + label.tobytes() + bytes(data)


def unpack(record: bytes) -> tuple[IRHeader, bytes]:
    """Split a payload into ``(IRHeader, data)``; ``label`` is a float32 array when ``flag > 0``."""
    if len(record) < IR_SIZE:
        raise CorruptRecordError(f"record of {len(record)} bytes is shorter than its {IR_SIZE}-byte header")
    flag, label, id1, id2 = _IR.unpack_from(record)
    rest = record[IR_SIZE:]
    if flag > 0:
        if 4 * flag > len(rest):
            raise CorruptRecordError(f"record header says {flag} labels but only {len(rest)} bytes follow")
        label = np.frombuffer(rest, dtype="<f4", count=flag).astype(np.float32)
        rest = rest[4 * flag :]
    return IRHeader(flag, label, id1, id2), bytes(rest)


def label_of(header: IRHeader) -> float:
    """The class label of an image record (first value of an array label)."""
    return float(header.label[0]) if header.flag > 0 else float(header.label)


# ---------------------------------------------------------------- framing ---


def frame(payload: bytes) -> bytes:
    """Encode one logical record into physical records, splitting at aligned magic words."""
    payload = bytes(payload)
    n = len(payload)
    if n >= MAX_RECORD:
        raise OccbenchError(f"RecordIO records must be smaller than 2**29 bytes (got {n})")
    out = bytearray()
    start = 0
    i = payload.find(_MAGIC_BYTES)
    while i != -1:
        if i % 4:  # only 4-byte-aligned occurrences split the record
            i = payload.find(_MAGIC_BYTES, i + 1)
            continue
        out += _FRAME.pack(MAGIC, (1 if start == 0 else 2) << 29 | (i - start))
        out += payload[start:i]  # i - start is a multiple of 4: no padding
        start = i + 4
        i = payload.find(_MAGIC_BYTES, start)
    out += _FRAME.pack(MAGIC, (3 if start else 0) << 29 | (n - start))
    out += payload[start:]
    out += b"\0" * (-n % 4)
    return bytes(out)


def _split_lrec(lrec: int) -> tuple[int, int]:
    return lrec >> 29, lrec & _LEN_MASK


# ---------------------------------------------------------------- reader ---


def default_idx_path(rec_path: str | os.PathLike) -> Path:
    return Path(rec_path).with_suffix(".idx")


class RecordIOReader:
    """Random access to an indexed RecordIO file. Picklable by path; each process opens its own handle.

    ``idx_path`` defaults to the ``.idx`` beside the ``.rec``; ``idx_path=False`` (or a missing default index)
    builds the index by scanning the ``.rec`` (keys 0, 1, ...).
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None | bool = None):
        self.rec_path = Path(rec_path)
        if not self.rec_path.is_file():
            raise DataNotFoundError(f"RecordIO file {self.rec_path} not found")
        if idx_path is None:
            cand = default_idx_path(self.rec_path)
            idx_path = cand if cand.is_file() else False
        self.idx_path = Path(idx_path) if idx_path else None
        self._size = self.rec_path.stat().st_size
        if self.idx_path is not None:
            self._keys, self._offsets = _read_idx(self.idx_path)
        else:
            self._keys, self._offsets = _scan_offsets(self.rec_path)
        self._pos = {k: i for i, k in enumerate(self._keys)}
        self._fh = None
        self._pid = None
        self._lock = threading.Lock()

    # pickling: by path only; the worker reopens lazily
    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_fh=None, _pid=None, _lock=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def keys(self) -> list[int]:
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._pos

    def offset(self, key: int) -> int:
        try:
            return self._offsets[self._pos[key]]
        except KeyError:
            raise CorruptRecordError(f"key {key!r} is not in the index of {self.rec_path}") from None

    def close(self) -> None:
        if self._fh is not None and self._pid == os.getpid():
            self._fh.close()
        self._fh = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _pread(self, n: int, offset: int) -> bytes:
        if self._fh is None or self._pid != os.getpid():  # lazily, once per process
            with self._lock:
                if self._fh is None or self._pid != os.getpid():
                    self._fh = open(self.rec_path, "rb", buffering=0)
                    self._pid = os.getpid()
        if hasattr(os, "pread"):  # no shared file position: safe across threads and forks
            return os.pread(self._fh.fileno(), n, offset)
        with self._lock:
            self._fh.seek(offset)
            return self._fh.read(n)

    def read_record(self, key: int, limit: int | None = None) -> bytes:
        """The logical record (payload) at ``key``. With ``limit``, an unsplit record is cut to that many bytes."""
        return self.read_at(self.offset(key), limit=limit, key=key)

    read_idx = read_record  # mxnet name

    def read_at(self, offset: int, limit: int | None = None, key: object = None) -> bytes:
        where = f"record {key} at offset {offset} of {self.rec_path}" if key is not None else (
            f"record at offset {offset} of {self.rec_path}")
        parts: list[bytes] = []
        pos = offset
        while True:
            head = self._pread(_FRAME.size, pos)
            if len(head) < _FRAME.size:
                if not parts and pos >= self._size:
                    raise CorruptRecordError(f"{where}: offset is past the end of the file ({self._size} bytes)")
                raise CorruptRecordError(f"{where}: file truncated in a record header")
            magic, lrec = _FRAME.unpack(head)
            if magic != MAGIC:
                raise CorruptRecordError(f"{where}: bad magic 0x{magic:08x} at byte {pos} (not a RecordIO record)")
            cflag, length = _split_lrec(lrec)
            expected = (0, 1) if not parts else (2, 3)
            if cflag not in expected:
                raise CorruptRecordError(
                    f"{where}: continuation flag {cflag} where {' or '.join(map(str, expected))} was expected")
            want = min(length, limit) if (limit is not None and cflag == 0) else length
            present = self._size - pos - _FRAME.size
            if want > present:  # checked before reading: pread would allocate the claimed length first
                raise CorruptRecordError(f"{where}: file truncated ({max(present, 0)} of {length} data bytes present)")
            body = self._pread(want, pos + _FRAME.size)
            if len(body) < want:
                raise CorruptRecordError(
                    f"{where}: file truncated ({len(body)} of {length} data bytes present)")
            parts.append(body)
            if cflag in (0, 3):
                return b"".join(parts)
            parts.append(_MAGIC_BYTES)
            pos += _FRAME.size + length + (-length % 4)

    def read(self, key: int) -> tuple[IRHeader, bytes]:
        return unpack(self.read_record(key))

    unpack = staticmethod(unpack)

    def read_header(self, key: int) -> tuple[IRHeader, bytes]:
        """``(IRHeader, first bytes of data)`` reading only the start of an unsplit record (cheap scans)."""
        limit = IR_SIZE + 64
        rec = self.read_record(key, limit=limit)
        flag = _IR.unpack_from(rec)[0] if len(rec) >= IR_SIZE else 0
        if len(rec) == limit and IR_SIZE + 4 * flag + 16 > limit:  # long label array cut short: read it all
            rec = self.read_record(key)
        return unpack(rec)


def _read_idx(path: Path) -> tuple[list[int], list[int]]:
    keys: list[int] = []
    offsets: list[int] = []
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise RecordIOError(f"index {path} is not a text RecordIO index (key<TAB>offset lines)") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            key, off = int(fields[0]), int(fields[1])
        except (ValueError, IndexError):
            raise RecordIOError(f"index {path} line {lineno}: expected 'key<TAB>offset', got {line!r}") from None
        if off < 0 or off % 4:
            raise RecordIOError(f"index {path} line {lineno}: offset {off} is not a valid record position")
        keys.append(key)
        offsets.append(off)
    if len(set(keys)) != len(keys):
        raise RecordIOError(f"index {path} has duplicate keys")
    return keys, offsets


def _scan_offsets(rec_path: Path) -> tuple[list[int], list[int]]:
    """Offsets of the logical records of a .rec without an index (sequential keys)."""
    offsets: list[int] = []
    size = rec_path.stat().st_size
    with open(rec_path, "rb") as fh:
        pos = 0
        while pos < size:
            fh.seek(pos)
            head = fh.read(_FRAME.size)
            if len(head) < _FRAME.size or _FRAME.unpack(head)[0] != MAGIC:
                raise RecordIOError(f"{rec_path}: no RecordIO record at byte {pos} while scanning (corrupt "
                                    "file); provide its .idx to read the intact records")
            cflag, length = _split_lrec(_FRAME.unpack(head)[1])
            if cflag in (0, 1):
                offsets.append(pos)
            pos += _FRAME.size + length + (-length % 4)
    return list(range(len(offsets))), offsets


# ---------------------------------------------------------------- writer ---


class RecordIOWriter:
    """Write an indexed RecordIO pair atomically (files appear on ``close``; on error nothing is left).

    >>> with RecordIOWriter("train.rec") as w:          # doctest: +SKIP
    ...     w.write(pack(IRHeader(0, 3.0, 1, 0), jpeg_bytes), key=1)
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else default_idx_path(self.rec_path)
        self._stack = contextlib.ExitStack()
        self._rec = self._stack.enter_context(atomic_open(self.rec_path, "wb"))
        self._idx = self._stack.enter_context(atomic_open(self.idx_path, "wb"))
        self._pos = 0
        self._keys: set[int] = set()
        self._next = 0

    def write(self, payload: bytes, key: int | None = None) -> int:
        """Append one record under ``key`` (default: previous key + 1); returns the key."""
        key = self._next if key is None else int(key)
        if key in self._keys:
            raise OccbenchError(f"duplicate RecordIO key {key}")
        data = frame(payload)
        self._rec.write(data)
        self._idx.write(f"{key}\t{self._pos}\n".encode("ascii"))
        self._pos += len(data)
        self._keys.add(key)
        self._next = key + 1
        return key

    def write_idx(self, key: int, payload: bytes) -> None:  # mxnet name
        self.write(payload, key)

    def close(self) -> None:
        self._stack.close()

    def abort(self) -> None:
        """Discard everything written (temp files removed)."""
        err = OccbenchError("RecordIO write aborted")
        self._stack.__exit__(type(err), err, None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return self._stack.__exit__(exc_type, exc, tb)


def write_face_set(rec_path: str | os.PathLike, samples: Iterable[tuple[int, bytes]]) -> dict:
    """Write ``(label, encoded_image)`` samples as an insightface training set (header record 0,
    images grouped by label, one header record per identity). Returns counts."""
    by_label: dict[int, list[bytes]] = {}
    for label, data in samples:
        by_label.setdefault(int(label), []).append(bytes(data))
    labels = sorted(by_label)
    n_img = sum(len(v) for v in by_label.values())
    id_start = n_img + 1
    with RecordIOWriter(rec_path) as w:
        w.write(pack(IRHeader(0, [float(id_start), float(id_start + len(labels))], 0, 0)), key=0)
        spans = []
        key = 1
        for label in labels:
            first = key
            for data in by_label[label]:
                w.write(pack(IRHeader(0, float(label), key, 0), data), key=key)
                key += 1
            spans.append((first, key))
        for i, (first, end) in enumerate(spans):
            w.write(pack(IRHeader(0, [float(first), float(end)], 0, 0)), key=id_start + i)
    return {"images": n_img, "identities": len(labels)}
