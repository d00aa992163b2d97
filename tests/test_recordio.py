"""RecordIO: read files built byte-by-byte from the documented layout, write/read round trips, corruption."""
from __future__ import annotations

import pickle
import random
import struct

import numpy as np
import pytest

from occbench.io.images import ImageDecodeError, encode
from occbench.io.recordio import (
    IRHeader,
    CorruptRecordError,
    RecordIOError,
    RecordIOReader,
    RecordIOWriter,
    frame,
    pack,
    unpack,
    write_face_set,
)
from occbench.io.sources import RecordIOSource, open_source

MAGIC = 0xCED7230A
MAGIC_B = struct.pack("<I", MAGIC)


# -- an independent encoder of the documented layout (dmlc-core recordio + mxnet IRHeader) --------------


def phys(cflag: int, data: bytes) -> bytes:
    return struct.pack("<II", MAGIC, (cflag << 29) | len(data)) + data + b"\0" * (-len(data) % 4)


def ref_frame(payload: bytes) -> bytes:
    """dmlc-core WriteRecord, word by word: split at every 4-aligned magic, dropping it."""
    parts, start = [], 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i : i + 4] == MAGIC_B:
            parts.append(payload[start:i])
            start = i + 4
    parts.append(payload[start:])
    if len(parts) == 1:
        return phys(0, parts[0])
    return b"".join(phys(1 if j == 0 else 3 if j == len(parts) - 1 else 2, p) for j, p in enumerate(parts))


def ir(label, img: bytes = b"", id1: int = 0, id2: int = 0) -> bytes:
    if isinstance(label, (list, tuple)):
        return struct.pack("<IfQQ", len(label), 0.0, id1, id2) + struct.pack(f"<{len(label)}f", *label) + img
    return struct.pack("<IfQQ", 0, label, id1, id2) + img


def tiny_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), "jpg")


@pytest.fixture()
def handmade(tmp_path):
    """A 7-record insightface set written in shuffled physical order, with a payload split at two magics."""
    imgs = {i: tiny_jpeg(i) for i in (1, 2, 3)}
    # record 4: magic at payload offsets 28 and 36 (4-aligned -> split), and at 42 (unaligned -> kept)
    img4 = b"\xff\xd8\xff\xe0" + MAGIC_B + b"xyz!" + MAGIC_B + b"ab" + MAGIC_B + b"tail\xff\xd9"
    payloads = {
        0: ir([5.0, 7.0]),  # header: identities are records 5..6, images 1..4
        1: ir(0.0, imgs[1], 1),
        2: ir(0.0, imgs[2], 2),
        3: ir([1.0, 0.25, 9.0], imgs[3], 3),  # flag 3 label array; class = label[0]
        4: ir(1.0, img4, 4),
        5: ir([1.0, 3.0]),  # identity 0 -> images [1, 3)
        6: ir([3.0, 5.0]),
    }
    p4 = payloads[4]
    assert p4[28:32] == MAGIC_B and p4[36:40] == MAGIC_B and p4[42:46] == MAGIC_B
    framed = {k: phys(0, v) for k, v in payloads.items()}
    framed[4] = phys(1, p4[:28]) + phys(2, p4[32:36]) + phys(3, p4[40:])
    order = [3, 0, 6, 4, 1, 5, 2]
    rec, idx, pos = bytearray(), [], 0
    for k in order:
        idx.append(f"{k}\t{len(rec)}\n")
        rec += framed[k]
    (tmp_path / "train.rec").write_bytes(bytes(rec))
    (tmp_path / "train.idx").write_text("".join(idx))
    return tmp_path, payloads, framed, order, img4, imgs


def test_reads_handmade_layout_exactly(handmade):
    root, payloads, framed, order, img4, imgs = handmade
    r = RecordIOReader(root / "train.rec", root / "train.idx")
    assert r.keys() == order and len(r) == 7
    for k, v in payloads.items():
        assert r.read_record(k) == v
    head, data = unpack(r.read_record(4))
    assert data == img4 and head.flag == 0 and head.label == 1.0 and head.id == 4
    head, data = r.read(3)
    assert head.flag == 3 and data == imgs[3]
    np.testing.assert_array_equal(head.label, np.float32([1.0, 0.25, 9.0]))
    head, data = r.read(0)
    assert head.flag == 2 and data == b"" and list(head.label) == [5.0, 7.0]


def test_writer_framing_matches_layout(handmade):
    _, payloads, framed, *_ = handmade
    for k, v in payloads.items():
        assert frame(v) == framed[k]
    assert frame(ir(0.0, MAGIC_B)) == phys(1, ir(0.0)) + phys(3, b"")  # magic as the last word
    header = IRHeader(0, [1.0, 0.25, 9.0], 3, 0)
    assert pack(header, b"img") == ir([1.0, 0.25, 9.0], b"img", 3)
    assert pack(IRHeader(0, 2.0, 7, 1), b"img") == ir(2.0, b"img", 7, 1)


def test_source_on_handmade_set(handmade):
    root, payloads, framed, order, img4, imgs = handmade
    src = open_source(root)
    assert isinstance(src, RecordIOSource) and src.header == (5, 7)
    items = src.items()
    assert [it.key for it in items] == ["rec/1", "rec/2", "rec/3", "rec/4"]
    assert [it.identity for it in items] == ["0", "0", "1", "1"]
    assert [it.fmt for it in items] == ["jpg"] * 4
    assert src.read_bytes(items[2]) == imgs[3] and src.read_bytes("rec/4") == img4
    d = src.describe()
    assert d["n_items"] == 4 and d["n_identities"] == 2 and d["n_records"] == 7 and d["n_identity_records"] == 2
    assert open_source(root / "train.rec").items() == items


def test_random_round_trip_and_scan_without_idx(tmp_path):
    rnd = random.Random(0)
    payloads = {}
    with RecordIOWriter(tmp_path / "x.rec") as w:
        for k in range(40):
            body = bytearray(rnd.randbytes(rnd.randrange(0, 90)))
            for _ in range(rnd.randrange(0, 4)):  # plant magics at aligned and unaligned spots
                if len(body) >= 4:
                    at = rnd.randrange(0, len(body) - 3)
                    body[at : at + 4] = MAGIC_B
            payloads[k] = bytes(body)
            w.write(payloads[k])
    assert sum(frame(v) != phys(0, v) for v in payloads.values()) >= 5  # several records were split
    assert all(frame(v) == ref_frame(v) for v in payloads.values())
    r = RecordIOReader(tmp_path / "x.rec")
    assert r.keys() == list(range(40))
    assert all(r.read_record(k) == v for k, v in payloads.items())
    (tmp_path / "x.idx").unlink()
    scanned = RecordIOReader(tmp_path / "x.rec")
    assert scanned.idx_path is None and all(scanned.read_record(k) == v for k, v in payloads.items())


def test_face_set_round_trip_and_pickling(tmp_path):
    samples = [(7, tiny_jpeg(1)), (3, tiny_jpeg(2)), (7, tiny_jpeg(3)), (3, tiny_jpeg(4)), (5, tiny_jpeg(5))]
    assert write_face_set(tmp_path / "train.rec", samples) == {"images": 5, "identities": 3}
    src = open_source(tmp_path)
    items = src.items()
    assert [it.identity for it in items] == ["3", "3", "5", "7", "7"]
    got = sorted((int(it.identity), src.read_bytes(it)) for it in items)
    assert got == sorted(samples)
    r = src.reader
    for (a, b), k in zip([(1, 3), (3, 4), (4, 6)], range(6, 9)):
        assert list(r.read(k)[0].label) == [a, b]
    clone = pickle.loads(pickle.dumps(src))
    assert clone.reader._fh is None and clone.read_bytes(items[4]) == src.read_bytes(items[4])


def test_read_from_worker_processes(tmp_path):
    from joblib import Parallel, delayed

    write_face_set(tmp_path / "train.rec", [(i % 3, tiny_jpeg(i)) for i in range(12)])
    src = open_source(tmp_path / "train.rec")
    src.read_bytes("rec/1")  # parent holds an open handle; workers must not share its position
    keys = [it.key for it in src.items()]
    got = Parallel(n_jobs=2, backend="multiprocessing")(delayed(src.read_bytes)(k) for k in keys)
    assert got == [src.read_bytes(k) for k in keys]


def test_truncated_and_bad_records_fail_one_by_one(handmade):
    root, payloads, framed, order, *_ = handmade
    rec = (root / "train.rec").read_bytes()
    (root / "train.rec").write_bytes(rec[:-6])  # cut into the image of the last record (key 2)
    r = RecordIOReader(root / "train.rec", root / "train.idx")
    with pytest.raises(CorruptRecordError, match="truncated"):
        r.read_record(2)
    assert r.read_record(5) == payloads[5]  # the rest still reads
    src = open_source(root)
    assert src.items()[1].identity == "0"  # its header is intact: the scan still labels it
    with pytest.raises(ImageDecodeError):  # pipelines that record decode failures catch it too
        src.read_bytes("rec/2")

    (root / "train.rec").write_bytes(rec[: len(rec) - len(framed[2]) + 12])  # cut into its IRHeader
    src = open_source(root)
    items = src.items()  # the unreadable image is kept (and will fail with a reason), not dropped
    assert [it.key for it in items] == ["rec/1", "rec/2", "rec/3", "rec/4"] and items[1].identity == ""
    assert src.describe()["unreadable_at_scan"] == 1
    with pytest.raises(CorruptRecordError, match="record 2 at offset"):
        src.read_bytes(items[1])

    first_len = len(framed[order[0]])
    bad_idx = f"3\t4\n4\t{len(rec) + 64}\n0\t{first_len + len(framed[0])}\n"
    (root / "train.idx").write_text(bad_idx)
    r = RecordIOReader(root / "train.rec", root / "train.idx")
    with pytest.raises(CorruptRecordError, match="bad magic"):
        r.read_record(3)
    with pytest.raises(CorruptRecordError, match="past the end"):
        r.read_record(4)
    off6 = first_len + len(framed[0])
    assert r.offset(0) == off6  # key 0 now points at record 6, a proper record
    with pytest.raises(CorruptRecordError, match="not in the index"):
        r.read_record(99)


def test_offset_into_split_record_is_refused(handmade):
    root, payloads, framed, order, *_ = handmade
    off4 = sum(len(framed[k]) for k in order[: order.index(4)])
    (root / "train.idx").write_text(f"4\t{off4 + len(phys(1, payloads[4][:28]))}\n")
    with pytest.raises(CorruptRecordError, match="continuation flag 2"):
        RecordIOReader(root / "train.rec", root / "train.idx").read_record(4)


@pytest.mark.parametrize("idx_text, match", [("0\tx\n", "line 1"), ("0\t0\n0\t8\n", "duplicate"),
                                              ("0\t3\n", "not a valid record position")])
def test_malformed_index(tmp_path, idx_text, match):
    (tmp_path / "a.rec").write_bytes(phys(0, b"abcd"))
    (tmp_path / "a.idx").write_text(idx_text)
    with pytest.raises(RecordIOError, match=match):
        RecordIOReader(tmp_path / "a.rec")


def test_writer_is_atomic_and_refuses_duplicates(tmp_path):
    with pytest.raises(Exception, match="duplicate"):
        with RecordIOWriter(tmp_path / "d.rec") as w:
            w.write(b"a", key=1)
            w.write(b"b", key=1)
    assert list(tmp_path.iterdir()) == []
    w = RecordIOWriter(tmp_path / "e.rec")
    w.write(b"abc")
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_unpack_rejects_short_payloads():
    with pytest.raises(CorruptRecordError, match="shorter"):
        unpack(b"\0" * 10)
    with pytest.raises(CorruptRecordError, match="labels"):
        unpack(struct.pack("<IfQQ", 5, 0.0, 0, 0) + b"\0" * 8)


def test_a_record_claiming_more_bytes_than_the_file_holds_is_refused_before_reading(tmp_path, monkeypatch):
    """A 12-byte .rec whose header claims a 500 MB record: refused without asking pread for 500 MB."""
    import occbench.io.recordio as rio

    rec = tmp_path / "lie.rec"
    rec.write_bytes(MAGIC_B + struct.pack("<I", 500 * 2**20) + b"\xff\xd8\xff\xe0")
    asked = []
    real = rio.os.pread
    monkeypatch.setattr(rio.os, "pread", lambda fd, n, off: asked.append(n) or real(fd, n, off))
    reader = RecordIOReader(rec, idx_path=False)
    with pytest.raises(CorruptRecordError, match=r"truncated \(4 of 524288000 data bytes present\)"):
        reader.read_record(0)
    assert max(asked) <= rec.stat().st_size
