"""insightface verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``), loaded safely.

A ``.bin`` is a pickle of ``(bins, issame_list)``: ``bins`` holds two encoded JPEGs per pair, ``issame_list``
one bool per pair (list or numpy bool array). Pickles can run code when loaded, so by default we use an
unpickler that can only build what such a file holds: lists, tuples, bytes and bools (pickle opcodes, no
callables), bytes written by protocol-2 pickles (``_codecs.encode(str, "latin1")``), and numpy bool /
integer / float arrays and scalars (``_reconstruct``/``_frombuffer``/``scalar``, ``ndarray``, ``dtype`` under
``numpy._core`` or the numpy<2 ``numpy.core`` name). Anything else raises UnsafeLoadError.

Every allocation is bounded by the file's own length: the opcode stream is walked first (without
building anything) so that no length field can claim more bytes than the file holds, and every callable
the unpickler may call checks the size it would allocate: at most the file's length each, and four
times it all together. A 99-byte file cannot allocate gigabytes, with or without ``allow_unsafe_pickle``.
"""
from __future__ import annotations

import importlib
import io
import os
import pickle
import pickletools
from pathlib import Path

import numpy as np

from ..errors import OccbenchError, UnsafeLoadError
from .lfw import Pair

N_FOLDS = 10  # insightface verification uses KFold(10, shuffle=False)

_NUMPY_GLOBALS = {
    ("multiarray", "_reconstruct"),
    ("multiarray", "scalar"),
    ("numeric", "_frombuffer"),
}
_ARRAY_KINDS = "biuf"  # bool, int, uint, float: what an issame array or an image byte array can be


class BinSetFormatError(OccbenchError):
    """The pickle loaded but is not a ``(bins, issame_list)`` verification set."""


class _BoundedArray(np.ndarray):
    """What ``_reconstruct`` builds while unpickling: ``__setstate__`` checks the size first."""

    def __setstate__(self, state):
        shape, dtype = (state[1], state[2]) if len(state) == 5 else (state[0], state[1])
        _UNPICKLER_BUDGET.take(_array_bytes(shape, dtype), "a numpy array")
        super().__setstate__(state)


def _array_bytes(shape, dtype) -> int:
    dt = _checked_dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise BinSetFormatError(f"invalid array shape {shape!r} in a .bin pickle")
    n = dt.itemsize
    for d in shape:
        n *= d
    return n


def _checked_dtype(dtype) -> np.dtype:
    dt = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
    if dt.kind not in _ARRAY_KINDS or dt.hasobject or dt.fields is not None or dt.subdtype is not None:
        raise UnsafeLoadError(f"refusing a numpy array of dtype {dt} in a .bin pickle: a verification .bin "
                              "holds only bool / integer / float arrays")
    return dt


class _Budget:
    """What the callables of one unpickling may allocate: each object at most the file's length, all
    together at most ``TOTAL`` times it (a protocol-2 numpy array is built twice: bytes, then array)."""

    TOTAL = 4

    def __init__(self):
        self.left = 0
        self.size = 0

    def reset(self, size: int) -> None:
        self.size = size
        self.left = self.TOTAL * size

    def take(self, n: int, what: str) -> None:
        if n > self.size or n > self.left:
            raise BinSetFormatError(f"the pickle asks for {what} of {n:,} bytes, more than its own "
                                    f"{self.size:,} bytes can hold: not a verification .bin")
        self.left -= n


_UNPICKLER_BUDGET = _Budget()


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: a str, latin-1."""
    if not isinstance(obj, str) or str(encoding).replace("_", "-").lower() not in ("latin1", "latin-1"):
        raise UnsafeLoadError("refusing _codecs.encode other than str -> latin-1 bytes in a .bin pickle")
    _UNPICKLER_BUDGET.take(len(obj), "bytes")
    return obj.encode("latin-1", errors)


def _reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise UnsafeLoadError(f"refusing to build {subtype!r} in a .bin pickle")
    _UNPICKLER_BUDGET.take(_array_bytes(shape, dtype), "a numpy array")
    return np.ndarray.__new__(_BoundedArray, shape, dtype)


def _frombuffer(buf, dtype, shape, order):
    _checked_dtype(dtype)
    _UNPICKLER_BUDGET.take(len(memoryview(buf).cast("B")), "a numpy array")
    return _numpy_core("numeric")._frombuffer(buf, dtype, shape, order)


def _scalar(dtype, obj=None):
    dt = _checked_dtype(dtype)
    _UNPICKLER_BUDGET.take(dt.itemsize, "a numpy scalar")
    return _numpy_core("multiarray").scalar(dt, obj) if obj is not None else _numpy_core("multiarray").scalar(dt)


def _dtype(spec, align=False, copy=False):
    return _checked_dtype(np.dtype(spec, align, copy))


_NUMPY_SAFE = {("multiarray", "_reconstruct"): _reconstruct, ("multiarray", "scalar"): _scalar,
               ("numeric", "_frombuffer"): _frombuffer}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler restricted to what a verification ``.bin`` holds, each allocation bounded by the file."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _codecs_encode
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return _dtype
        for prefix in ("numpy._core.", "numpy.core."):
            if module.startswith(prefix) and (module[len(prefix):], name) in _NUMPY_SAFE:
                return _NUMPY_SAFE[(module[len(prefix):], name)]
        raise UnsafeLoadError(
            f"refusing to unpickle {module}.{name}: a verification .bin only holds bytes, lists and numpy "
            "arrays, so this file may run code or allocate without bound when loaded. Only if you trust its source, load it with "
            "allow_unsafe_pickle=True (CLI: --allow-unsafe-pickle)."
        )


def _numpy_core(sub: str):
    """``numpy._core.<sub>`` (numpy>=2), falling back to ``numpy.core.<sub>`` (numpy 1.x)."""
    try:
        return importlib.import_module(f"numpy._core.{sub}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{sub}")


def _bytes_like(kind):
    """``bytearray`` / ``bytes`` for the opted-in unpickler: a size argument is checked against the budget."""
    def make(*args):
        if args and isinstance(args[0], int):
            _UNPICKLER_BUDGET.take(args[0], kind.__name__)
        return kind(*args)
    return make


class OptedInUnpickler(SafeUnpickler):
    """``allow_unsafe_pickle``: any global may load (the user trusts the file), but the allocators a
    .bin-shaped pickle would use stay bounded by the file's length."""

    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except UnsafeLoadError:
            if module in ("builtins", "__builtin__") and name in ("bytearray", "bytes"):
                return _bytes_like(bytearray if name == "bytearray" else bytes)
            return pickle.Unpickler.find_class(self, module, name)


def check_opcodes(data: bytes) -> None:
    """Walk the opcode stream without building anything: refuses data that is not a pickle, and any
    length field claiming more bytes than the data holds (which ``pickle`` would allocate first)."""
    try:
        for _ in pickletools.genops(io.BytesIO(data)):
            pass
    except Exception as e:  # noqa: BLE001 - ValueError for a bad stream, others for garbage
        raise BinSetFormatError(f"not a pickle, or a damaged one ({type(e).__name__}: {e})") from None


def safe_loads(data: bytes, allow_unsafe_pickle: bool = False):
    """Unpickle ``data`` with ``SafeUnpickler`` (``OptedInUnpickler`` with ``allow_unsafe_pickle``),
    every allocation they make bounded by ``len(data)``."""
    check_opcodes(data)
    _UNPICKLER_BUDGET.reset(len(data))
    try:
        cls = OptedInUnpickler if allow_unsafe_pickle else SafeUnpickler
        return cls(io.BytesIO(data), encoding="bytes").load()
    finally:
        _UNPICKLER_BUDGET.reset(0)


def fold_of(n: int, k: int = N_FOLDS) -> list[int]:
    """1-based contiguous fold of each of ``n`` items, sized as sklearn ``KFold(k)`` (first n % k folds +1)."""
    if n < k:
        return [1] * n if n else []
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    return [f + 1 for f, s in enumerate(sizes) for _ in range(s)]


class BinSet:
    """A loaded verification set: ``pairs`` of image keys ``"0", "1", ...`` and their encoded bytes.

    Picklable: when loaded from a file it pickles by path (workers reload lazily) instead of by content.
    """

    def __init__(self, bins: list[bytes], issame: list[bool], path: Path | None = None,
                 allow_unsafe_pickle: bool = False):
        self.path = path
        self.allow_unsafe_pickle = allow_unsafe_pickle
        self._bins: list[bytes] | None = bins
        self.issame = list(issame)
        folds = fold_of(len(self.issame))
        self.pairs: list[Pair] = [
            Pair(str(2 * i), str(2 * i + 1), same, folds[i]) for i, same in enumerate(self.issame)
        ]

    @property
    def bins(self) -> list[bytes]:
        if self._bins is None:
            self._bins = load_binset(self.path, self.allow_unsafe_pickle)._bins
        return self._bins

    def __getstate__(self):
        state = self.__dict__.copy()
        if self.path is not None:
            state["_bins"] = None
        return state

    def keys(self) -> list[str]:
        return [str(i) for i in range(2 * len(self.issame))]

    def __len__(self) -> int:
        return 2 * len(self.issame)

    def read_bytes(self, key: str | int) -> bytes:
        try:
            i = int(key)
            if i < 0:
                raise IndexError
            return self.bins[i]
        except (ValueError, IndexError):
            raise BinSetFormatError(f"no image {key!r} in {self.path or 'this .bin set'} "
                                    f"(keys are 0..{len(self) - 1})") from None


def load_binset(path: str | os.PathLike, allow_unsafe_pickle: bool = False) -> BinSet:
    """Load an insightface ``.bin`` verification set; plain ``pickle`` only with ``allow_unsafe_pickle``."""
    path = Path(path)
    data = path.read_bytes()
    try:
        obj = safe_loads(data, allow_unsafe_pickle)
    except UnsafeLoadError as e:
        raise UnsafeLoadError(f"{path}: {e}") from None
    except BinSetFormatError as e:
        raise BinSetFormatError(f"{path} is not a readable insightface .bin pickle: {e}") from None
    except Exception as e:  # truncated / not a pickle
        raise BinSetFormatError(f"{path} is not a readable insightface .bin pickle ({type(e).__name__}: {e})") from None
    bins, issame = _validate(obj, path)
    return BinSet(bins, issame, path=path, allow_unsafe_pickle=allow_unsafe_pickle)


def _validate(obj, path) -> tuple[list[bytes], list[bool]]:
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise BinSetFormatError(f"{path}: expected a pickled (bins, issame_list) pair, got {type(obj).__name__}")
    raw_bins, raw_same = obj
    issame_arr = np.asarray(raw_same)
    boolish = issame_arr.dtype == bool or (issame_arr.dtype.kind in "iu" and np.isin(issame_arr, (0, 1)).all())
    if issame_arr.ndim != 1 or not boolish:
        raise BinSetFormatError(f"{path}: issame_list must be a flat list of booleans")
    issame = [bool(x) for x in issame_arr]
    bins: list[bytes] = []
    for i, b in enumerate(raw_bins):
        if isinstance(b, np.ndarray) and b.dtype == np.uint8:
            b = b.tobytes()
        if not isinstance(b, (bytes, bytearray)):
            raise BinSetFormatError(f"{path}: image {i} is a {type(b).__name__}, expected encoded image bytes")
        bins.append(bytes(b))
    if len(bins) != 2 * len(issame):
        raise BinSetFormatError(f"{path}: {len(bins)} images for {len(issame)} pairs (need exactly 2 per pair)")
    return bins, issame
