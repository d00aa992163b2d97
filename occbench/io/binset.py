"""insightface verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``), loaded safely.

A ``.bin`` is a pickle of ``(bins, issame_list)``: ``bins`` holds two encoded JPEGs per pair, ``issame_list``
one bool per pair (list or numpy bool array). Pickles can run code when loaded, so by default we use an
unpickler that can only build those objects: plain builtin containers/scalars, bytes (``_codecs.encode`` for
protocol-2 pickles) and numpy arrays/scalars (``_reconstruct``/``_frombuffer``/``scalar``, ``ndarray``, ``dtype``
under ``numpy._core`` or the numpy<2 ``numpy.core`` name). Anything else raises UnsafeLoadError.
"""
from __future__ import annotations

import importlib
import io
import os
import pickle
from pathlib import Path

import numpy as np

from ..errors import OccbenchError, UnsafeLoadError
from .lfw import Pair

N_FOLDS = 10  # insightface verification uses KFold(10, shuffle=False)

_SAFE_BUILTINS = frozenset(
    {"bool", "int", "float", "complex", "str", "bytes", "bytearray", "list", "tuple", "dict", "set",
     "frozenset", "slice", "range"}
)
_NUMPY_GLOBALS = {
    ("multiarray", "_reconstruct"),
    ("multiarray", "scalar"),
    ("numeric", "_frombuffer"),
}


class BinSetFormatError(OccbenchError):
    """The pickle loaded but is not a ``(bins, issame_list)`` verification set."""


class SafeUnpickler(pickle.Unpickler):
    """Unpickler restricted to the globals a verification ``.bin`` needs."""

    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return getattr(importlib.import_module("builtins"), name)
        if (module, name) == ("_codecs", "encode"):
            return importlib.import_module("_codecs").encode
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        for prefix in ("numpy._core.", "numpy.core."):
            if module.startswith(prefix) and (module[len(prefix):], name) in _NUMPY_GLOBALS:
                return getattr(_numpy_core(module[len(prefix):]), name)
        raise UnsafeLoadError(
            f"refusing to unpickle {module}.{name}: a verification .bin only needs bytes, lists and numpy "
            "arrays, so this file may run code when loaded. Only if you trust its source, load it with "
            "allow_unsafe_pickle=True (CLI: --allow-unsafe-pickle)."
        )


def _numpy_core(sub: str):
    """``numpy._core.<sub>`` (numpy>=2), falling back to ``numpy.core.<sub>`` (numpy 1.x)."""
    try:
        return importlib.import_module(f"numpy._core.{sub}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{sub}")


def safe_loads(data: bytes):
    return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()


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
        if allow_unsafe_pickle:
            obj = pickle.loads(data, encoding="bytes")
        else:
            obj = safe_loads(data)
    except UnsafeLoadError as e:
        raise UnsafeLoadError(f"{path}: {e}") from None
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
