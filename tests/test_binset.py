"""insightface .bin verification sets: safe loading, pairs/folds, refusal of code-running pickles."""
from __future__ import annotations

import collections
import os
import pickle

import numpy as np
import pytest
from sklearn.model_selection import KFold

from occbench.errors import UnsafeLoadError
from occbench.io.binset import BinSetFormatError, fold_of, load_binset
from occbench.io.images import encode
from occbench.io.sources import BinSource, open_source


def _bins(n_pairs: int) -> list[bytes]:
    rng = np.random.default_rng(n_pairs)
    return [encode(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), "jpg" if i % 3 else "png")
            for i in range(2 * n_pairs)]


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("as_numpy", [False, True])
def test_loads_list_and_numpy_issame_safely(tmp_path, protocol, as_numpy):
    bins = _bins(13)
    issame = [i % 2 == 0 for i in range(13)]
    payload = (bins, np.array(issame) if as_numpy else issame)
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    bs = load_binset(path)
    assert bs.issame == issame and len(bs) == 26 and bs.keys()[:3] == ["0", "1", "2"]
    assert [(p.key1, p.key2, p.same) for p in bs.pairs] == [(str(2 * i), str(2 * i + 1), s)
                                                           for i, s in enumerate(issame)]
    assert all(bs.read_bytes(str(i)) == b for i, b in enumerate(bins))


def test_numpy1_global_names_and_uint8_image_arrays(tmp_path):
    bins = [np.frombuffer(b, np.uint8) for b in _bins(2)]
    data = pickle.dumps((bins, np.array([True, False])), protocol=2)
    assert b"numpy._core.multiarray" in data
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")  # as numpy<2 writes it
    (tmp_path / "old.bin").write_bytes(old)
    bs = load_binset(tmp_path / "old.bin")
    assert bs.issame == [True, False] and bs.read_bytes(3) == bins[3].tobytes()


@pytest.mark.parametrize("n", [6000, 7001, 25, 10])
def test_folds_match_sklearn_kfold(n):
    expected = np.empty(n, int)
    for f, (_, test) in enumerate(KFold(10, shuffle=False).split(np.zeros(n))):
        expected[test] = f + 1
    assert fold_of(n) == expected.tolist()


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("make", [lambda m: _RunsCode(m), lambda m: _Eval()])
def test_code_running_pickle_is_refused_and_never_runs(tmp_path, make):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps((_bins(1), [True], make(marker))))
    with pytest.raises(UnsafeLoadError, match="allow_unsafe_pickle=True") as e:
        load_binset(path)
    assert str(path) in str(e.value)
    with pytest.raises(UnsafeLoadError):
        open_source(path)
    assert not marker.exists()


def test_explicit_flag_enables_plain_pickle(tmp_path):
    path = tmp_path / "deque.bin"
    path.write_bytes(pickle.dumps((_bins(2), collections.deque([True, False]))))
    with pytest.raises(UnsafeLoadError, match="collections.deque"):
        load_binset(path)
    assert load_binset(path, allow_unsafe_pickle=True).issame == [True, False]


@pytest.mark.parametrize("obj, match", [
    ((["x"], [True]), "image 0"),
    ((_bins(2), [True]), "exactly 2 per pair"),
    ((_bins(1), ["yes"]), "booleans"),
    ([1, 2, 3], "expected a pickled"),
])
def test_wrong_structure_is_reported(tmp_path, obj, match):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(BinSetFormatError, match=match):
        load_binset(path)


def test_truncated_bin_is_reported(tmp_path):
    path = tmp_path / "cut.bin"
    path.write_bytes(pickle.dumps((_bins(3), [True] * 3))[:-40])
    with pytest.raises(BinSetFormatError, match="not a readable"):
        load_binset(path)


def test_bin_as_source_pickles_by_path(tmp_path):
    bins = _bins(12)
    path = tmp_path / "cfp_fp.bin"
    path.write_bytes(pickle.dumps((bins, [True] * 6 + [False] * 6)))
    src = open_source(path)
    assert isinstance(src, BinSource) and src.name == "cfp_fp"
    items = src.items()
    assert [i.key for i in items] == [str(i) for i in range(24)]
    assert [i.fmt for i in items] == ["jpg" if i % 3 else "png" for i in range(24)]
    assert [p.fold for p in src.pairs] == [1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # KFold(10) sizes for 12
    d = src.describe()
    assert (d["kind"], d["n_items"], d["n_pairs"], d["n_same"]) == ("binset", 24, 12, 6)
    blob = pickle.dumps(src)
    assert len(blob) < sum(map(len, bins))  # by path, not by content
    assert pickle.loads(blob).read_bytes(items[5]) == bins[5]


class _Alloc:
    """Pickles as ``callable(*args)``: allocation bombs of a few dozen bytes."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _bomb_files(tmp_path):
    import struct

    yield "bytearray", pickle.dumps(_Alloc(bytearray, 3 * 10**9), protocol=2)  # 0.2: allowed, 3 GB
    yield "list-range", pickle.dumps(_Alloc(list, range(10**10)), protocol=2)  # 0.2: allowed, 80 GB
    yield "bytes", pickle.dumps(_Alloc(bytes, 3 * 10**9), protocol=2)
    yield "binbytes8", b"\x80\x05\x8e" + struct.pack("<Q", 3 * 10**9) + b"abc."  # a length field, no data
    arr = pickle.dumps(np.zeros(2, np.uint8), protocol=2)
    huge = b"\x8a\x05" + (3 * 10**9).to_bytes(5, "little", signed=True)  # LONG1 3e9
    yield "ndarray-shape", arr.replace(b"K\x00\x85", huge + b"\x85", 1)  # _reconstruct(ndarray, (3e9,), ...)


@pytest.mark.parametrize("flag", [False, True])
def test_a_tiny_bin_cannot_allocate_gigabytes(tmp_path, flag):
    """0.2: a 99-byte `(bytearray, (3*10**9,))` passed the restricted unpickler and allocated GBs."""
    import time

    for name, data in _bomb_files(tmp_path):
        assert len(data) < 256, name
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        if not flag and name in ("bytearray", "list-range", "bytes"):
            expected = UnsafeLoadError  # not what a .bin holds
        elif flag and name == "list-range":
            continue  # opted in to any pickle: a lazy range is beyond what can be bounded here
        else:
            expected = BinSetFormatError
        t0 = time.perf_counter()
        with pytest.raises(expected) as e:
            load_binset(path, allow_unsafe_pickle=flag)
        assert time.perf_counter() - t0 < 1.0, name
        if expected is BinSetFormatError:
            assert "bytes" in str(e.value) and "MemoryError" not in str(e.value), (name, str(e.value))


def test_bomb_bin_as_a_synth_source_is_a_clean_error(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(pickle.dumps(_Alloc(bytearray, 3 * 10**9), protocol=2))
    with pytest.raises(UnsafeLoadError, match="bytearray"):
        open_source(path)


def test_opted_in_loader_still_loads_real_bins_and_other_pickles(tmp_path):
    bins = _bins(3)
    path = tmp_path / "ok.bin"
    path.write_bytes(pickle.dumps((bins, [True, False, True]), protocol=4))
    assert load_binset(path, allow_unsafe_pickle=True).read_bytes(5) == bins[5]
    path.write_bytes(pickle.dumps(([bytearray(b) for b in bins], collections.deque([True, False, True])), protocol=2))
    with pytest.raises(UnsafeLoadError):
        load_binset(path)
    assert load_binset(path, allow_unsafe_pickle=True).issame == [True, False, True]
