"""Image sources: one way to enumerate and read the images of a dataset, whatever its storage.

``open_source(spec)`` accepts a folder of identity folders (``root/<identity>/<image>``, LFW included), a flat
folder of images, an insightface RecordIO set (``.rec`` with its ``.idx``, or a folder holding
``train.rec`` + ``train.idx``), an insightface verification ``.bin``, or a named dataset resolved under the data
root (``--data-root`` / ``$OCCBENCH_DATA``): see ``DATASETS``.

Item keys are stable ids used for seeds and resume: the relative posix path for folders
(``"Name/Name_0001.jpg"``), ``"rec/<idx>"`` for RecordIO, ``"<i>"`` for ``.bin`` sets.
"""
from __future__ import annotations

import difflib
import errno
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import ConfigError, DataNotFoundError
from ..registry import Registry
from .binset import BinSet, load_binset
from .images import sniff_format
from .lfw import Pair, lfw_key, read_lfw_pairs
from .recordio import CorruptRecordError, RecordIOReader, label_of, unpack

__all__ = [
    "DATASETS", "IMAGE_EXTS", "BinSource", "NamedDataset", "Pair", "RecordIOSource", "Source", "SourceItem",
    "TreeSource", "lfw_key", "open_path", "open_source", "read_lfw_pairs",
]

IMAGE_EXTS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".bmp": "bmp", ".webp": "webp"}
# image files a scan reports as unusable (one error row each) instead of passing over them
UNSUPPORTED_EXTS = frozenset({".gif", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".jp2"})
_PROBE_BYTES = 1 << 22  # enough of a GIF to count its frames
_LFW_KEY = re.compile(r"^([^/]+)/\1_\d{4}\.(?i:jpe?g)$")


@dataclass(frozen=True)
class SourceItem:
    key: str  # stable unique id (see module docstring)
    identity: str  # identity folder / RecordIO label; "" when unknown
    fmt: str  # encoded format: "jpg" | "png" | "bmp" | "webp"


class Source(ABC):
    """A dataset of encoded images. Picklable (workers reopen files lazily; the item list is not shipped)."""

    kind: str = "source"

    def __init__(self, root: Path, name: str | None = None):
        self.root = Path(root)
        self.name = name or self.root.name
        self._items: list[SourceItem] | None = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_items"] = None
        return state

    def items(self) -> list[SourceItem]:
        """All items, in a deterministic order (by key; RecordIO by record number)."""
        if self._items is None:
            self._items = self._scan()
        return list(self._items)

    def __len__(self) -> int:
        return len(self.items())

    @abstractmethod
    def _scan(self) -> list[SourceItem]: ...

    @abstractmethod
    def read_bytes(self, item: SourceItem | str) -> bytes:
        """Raw encoded bytes of an item (or key). Raises OSError / OccbenchError when unreadable."""

    def unusable(self) -> dict[str, str]:
        """Keys of entries that look like images but cannot be used, with the reason (one row each)."""
        return {}

    def skipped(self) -> dict[str, list[str]]:
        """Entries the scan passed over, by category (relative paths)."""
        return {}

    def describe(self) -> dict:
        items = self.items()
        return {
            "kind": self.kind,
            "name": self.name,
            "root": str(self.root),
            "n_items": len(items),
            "n_identities": len({it.identity for it in items if it.identity}),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, name={self.name!r})"


def _key(item: SourceItem | str) -> str:
    return item.key if isinstance(item, SourceItem) else str(item)


def _read_all(fd: int) -> bytes:
    """Read an open file to its end and close it (no file object: cheaper for many small images)."""
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- folders ---


class TreeSource(Source):
    """Images under a folder; identity = the image's folder relative to root ("" for images at the root).

    Symlinks are followed only when they stay inside root. Every entry the scan sees is accounted for:
    an image file is an item; an image-named entry that cannot be used (a symlink leading outside root
    or nowhere, a special file, a GIF/TIFF...) is in ``unusable()`` (key -> reason, one manifest row
    each); everything else that is not scanned as an image (hidden entries, other files, linked or
    unreadable folders...) is in ``skipped()`` by category, with its relative path.
    ``kind`` is "lfw" when every key is ``Name/Name_NNNN.jpg``, "flat" when all images sit at the root.
    """

    kind = "tree"

    def __init__(self, root: Path, name: str | None = None):
        super().__init__(Path(root).resolve(), name)
        self.skipped_links = 0
        self._unusable: dict[str, str] = {}
        self._skipped: dict[str, list[str]] = {}

    def unusable(self) -> dict[str, str]:
        self.items()
        return dict(self._unusable)

    def skipped(self) -> dict[str, list[str]]:
        self.items()
        return {k: list(v) for k, v in self._skipped.items()}

    def _scan(self) -> list[SourceItem]:
        root = self.root
        root_s = str(root)
        out: list[SourceItem] = []
        unusable: dict[str, str] = {}
        skipped: dict[str, list[str]] = {}

        def skip(category: str, rel: str) -> None:
            skipped.setdefault(category, []).append(rel)

        todo = [("", root_s)]  # (relative folder, path); scandir entries need no stat per file
        while todo:
            rel_dir, path = todo.pop()
            try:
                entries = list(os.scandir(path))
            except OSError as e:
                skip(f"unreadable folder ({os.strerror(e.errno) if e.errno else type(e).__name__})", rel_dir or ".")
                continue
            if not entries and rel_dir:
                skip("empty folder", rel_dir)
            for e in entries:
                name = e.name
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if name.startswith("."):
                    skip("hidden entry", rel)
                    continue
                ext = os.path.splitext(name)[1].lower()
                try:
                    is_dir = e.is_dir()  # follows links, so a linked folder is seen (and counted) as one
                except OSError:
                    is_dir = False
                if is_dir:
                    if e.is_symlink():
                        skip("symlinked folder (not followed)", rel)
                    else:
                        if ext in IMAGE_EXTS or ext in UNSUPPORTED_EXTS:
                            skip("folder named like an image (scanned as a folder)", rel)
                        todo.append((rel, e.path))
                    continue
                fmt = IMAGE_EXTS.get(ext)
                if fmt is None and ext not in UNSUPPORTED_EXTS:
                    skip("not an image file (extension)", rel)
                    continue
                problem = _entry_problem(e, root, root_s)
                if problem is None and fmt is None:
                    problem = _unsupported(e.path, ext)
                if problem is not None:
                    unusable[rel] = problem
                    continue
                out.append(SourceItem(rel, rel_dir, fmt))
        out.sort(key=lambda it: it.key)
        self._unusable = dict(sorted(unusable.items()))
        self._skipped = {k: sorted(v) for k, v in sorted(skipped.items())}
        self.skipped_links = sum(1 for r in unusable.values() if "symlink" in r) + \
            len(skipped.get("symlinked folder (not followed)", []))
        if out and all(not it.identity for it in out):
            self.kind = "flat"
        elif out and all(_LFW_KEY.match(it.key) for it in out):
            self.kind = "lfw"
        return out

    def read_bytes(self, item: SourceItem | str) -> bytes:
        key = _key(item)
        if self._items is not None:
            if self.__dict__.get("_known") is None:  # keys the scan vetted (no escaping links)
                self._known = (os.path.join(str(self.root), ""), frozenset(it.key for it in self._items))
            prefix, known = self._known
            if key in known:  # skip resolving the path again; a link swapped in since the scan is refused
                try:
                    fd = os.open(prefix + key, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
                except OSError as e:
                    if e.errno != errno.ELOOP:
                        raise
                else:
                    return _read_all(fd)
        with open(paths.safe_join(self.root, key), "rb") as fh:
            return fh.read()

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_known", None)
        state["_unusable"], state["_skipped"] = {}, {}  # the scan's report stays in the main process
        return state

    def describe(self) -> dict:
        d = super().describe()
        d["skipped_links"] = self.skipped_links
        d["n_unusable"] = len(self._unusable)
        d["n_skipped"] = sum(len(v) for v in self._skipped.values())
        return d


def _entry_problem(e: os.DirEntry, root: Path, root_s: str) -> str | None:
    """Why an image-named folder entry cannot be read as an image of the source (None: it can)."""
    try:
        if e.is_symlink():
            try:
                real = Path(e.path).resolve(strict=True)
            except FileNotFoundError:
                return "dangling symlink (its target does not exist)"
            except (RuntimeError, OSError):
                return "symlink loop"
            if root not in real.parents:
                return "symlink to a file outside the source (not followed)"
            if not real.is_file():
                return "symlink to something that is not a regular file"
            return None
        if not e.is_file(follow_symlinks=False):
            return "not a regular file (a pipe, socket or device)"
    except OSError as err:
        return f"unreadable entry ({os.strerror(err.errno) if err.errno else type(err).__name__})"
    return None


def _unsupported(path: str, ext: str) -> str:
    from .images import probe, unsupported_reason

    try:
        with open(path, "rb") as fh:
            head = fh.read(_PROBE_BYTES)
    except OSError as e:
        return f"unreadable file ({os.strerror(e.errno) if e.errno else type(e).__name__})"
    info = probe(head)
    reason = unsupported_reason(info) if info is not None else None
    return reason or f"{ext.lstrip('.').upper()} images are not supported: convert it to PNG or JPEG"


# ---------------------------------------------------------------- RecordIO ---


def _label_str(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


class RecordIOSource(Source):
    """An insightface RecordIO set. With a header record 0 (``flag > 0``, no image, label
    ``[id_start, id_end]``) the images are records ``1 .. id_start-1`` (as insightface ``MXFaceDataset``);
    otherwise every indexed record is an image. Identity = the image record's label."""

    kind = "recordio"

    def __init__(self, rec_path: Path, idx_path: Path | None = None, name: str | None = None):
        rec_path = Path(rec_path).resolve()
        self.reader = RecordIOReader(rec_path, idx_path)
        super().__init__(rec_path.parent, name or (rec_path.parent.name if rec_path.stem == "train"
                                                   else rec_path.stem))
        self.header: tuple[int, int] | None = None
        self.header_error: str | None = None
        if 0 in self.reader:
            try:
                head, data = self.reader.read(0)
                if head.flag >= 2 and not data:
                    self.header = (int(head.label[0]), int(head.label[1]))
            except CorruptRecordError as e:  # treat as a header-less set; record 0 fails on read
                self.header_error = str(e)
        self.unreadable_at_scan = 0

    def image_indices(self) -> list[int]:
        if self.header is not None:
            return list(range(1, self.header[0]))
        return sorted(self.reader.keys())

    def _scan(self) -> list[SourceItem]:
        out = []
        bad = 0
        for i in self.image_indices():
            try:
                head, prefix = self.reader.read_header(i)
                out.append(SourceItem(f"rec/{i}", _label_str(label_of(head)), sniff_format(prefix) or "jpg"))
            except (CorruptRecordError, OSError):  # kept: reading it later reports the reason
                bad += 1
                out.append(SourceItem(f"rec/{i}", "", "jpg"))
        self.unreadable_at_scan = bad
        return out

    def read_bytes(self, item: SourceItem | str) -> bytes:
        key = _key(item)
        prefix, _, num = key.partition("/")
        if prefix != "rec" or not num.isdigit():
            raise ConfigError(f"{key!r} is not a RecordIO item key (expected 'rec/<index>')")
        _, data = unpack(self.reader.read_record(int(num)))
        if not data:
            raise CorruptRecordError(f"record {num} of {self.reader.rec_path} holds no image data")
        return data

    def describe(self) -> dict:
        d = super().describe()
        d.update(
            rec=str(self.reader.rec_path),
            idx=str(self.reader.idx_path) if self.reader.idx_path else None,
            n_records=len(self.reader),
            header=list(self.header) if self.header else None,
            unreadable_at_scan=self.unreadable_at_scan,
        )
        if self.header:
            d["n_identity_records"] = self.header[1] - self.header[0]
        return d


# ---------------------------------------------------------------- .bin ---


class BinSource(Source):
    """An insightface verification ``.bin`` as a source; ``pairs`` gives ``Pair(key1, key2, same, fold)``."""

    kind = "binset"

    def __init__(self, path: Path, name: str | None = None, allow_unsafe_pickle: bool = False):
        path = Path(path).resolve()
        super().__init__(path.parent, name or path.stem)
        self.path = path
        self.binset: BinSet = load_binset(path, allow_unsafe_pickle=allow_unsafe_pickle)

    @property
    def pairs(self) -> list[Pair]:
        return self.binset.pairs

    def _scan(self) -> list[SourceItem]:
        return [SourceItem(k, "", sniff_format(self.binset.read_bytes(k)[:8]) or "jpg")
                for k in self.binset.keys()]

    def read_bytes(self, item: SourceItem | str) -> bytes:
        return self.binset.read_bytes(_key(item))

    def describe(self) -> dict:
        d = super().describe()
        d.update(path=str(self.path), n_pairs=len(self.pairs), n_same=sum(p.same for p in self.pairs))
        return d


# ---------------------------------------------------------------- named datasets ---


@dataclass(frozen=True)
class NamedDataset:
    title: str
    layouts: tuple[str, ...]  # candidate paths under the data root, tried in order
    download: str  # what to get and where to put it


DATASETS: Registry[NamedDataset] = Registry("dataset")

_INSIGHTFACE = "from the insightface dataset zoo (github.com/deepinsight/insightface/tree/master/recognition/_datasets_)"
for _name, _ds in {
    "casia": NamedDataset(
        "CASIA-WebFace", ("casia", "faces_webface_112x112", "casia/faces_webface_112x112", "CASIA-WebFace"),
        f"put train.rec + train.idx of insightface faces_webface_112x112 {_INSIGHTFACE} in $OCCBENCH_DATA/casia/ "
        "(or an aligned image tree at $OCCBENCH_DATA/casia/<identity>/<image>)"),
    "ms1m": NamedDataset(
        "MS1M-ArcFace / MS1M-RetinaFace",
        ("ms1m", "faces_emore", "ms1m-retinaface-t1", "ms1m/faces_emore", "ms1m/ms1m-retinaface-t1"),
        f"put train.rec + train.idx of insightface faces_emore (MS1M-ArcFace) or ms1m-retinaface-t1 {_INSIGHTFACE} "
        "in $OCCBENCH_DATA/ms1m/"),
    "glint360k": NamedDataset(
        "Glint360K", ("glint360k", "glint360k/glint360k"),
        f"put train.rec + train.idx of Glint360K {_INSIGHTFACE} in $OCCBENCH_DATA/glint360k/"),
    "webface260m": NamedDataset(
        "WebFace260M / WebFace42M", ("webface260m", "WebFace260M", "webface42m", "WebFace42M"),
        "request WebFace260M at face-benchmark.org, then put the aligned image tree (or a train.rec + train.idx) "
        "in $OCCBENCH_DATA/webface260m/"),
    "lfw": NamedDataset(
        "Labeled Faces in the Wild", ("lfw",),
        "download lfw.tgz (vis-www.cs.umass.edu/lfw) and extract it so that images are at "
        "$OCCBENCH_DATA/lfw/<Name>/<Name>_NNNN.jpg"),
    "lfw-bin": NamedDataset(
        "LFW insightface verification set", ("lfw.bin", "faces_emore/lfw.bin", "ms1m/lfw.bin", "casia/lfw.bin",
                                              "faces_webface_112x112/lfw.bin"),
        f"copy lfw.bin from an insightface training set (e.g. faces_emore) {_INSIGHTFACE} to $OCCBENCH_DATA/lfw.bin"),
    "cfp-fp": NamedDataset(
        "CFP-FP insightface verification set", ("cfp_fp.bin", "faces_emore/cfp_fp.bin", "ms1m/cfp_fp.bin",
                                                 "casia/cfp_fp.bin", "faces_webface_112x112/cfp_fp.bin"),
        f"copy cfp_fp.bin from an insightface training set {_INSIGHTFACE} to $OCCBENCH_DATA/cfp_fp.bin"),
    "agedb-30": NamedDataset(
        "AgeDB-30 insightface verification set", ("agedb_30.bin", "faces_emore/agedb_30.bin",
                                                  "ms1m/agedb_30.bin", "casia/agedb_30.bin",
                                                  "faces_webface_112x112/agedb_30.bin"),
        f"copy agedb_30.bin from an insightface training set {_INSIGHTFACE} to $OCCBENCH_DATA/agedb_30.bin"),
    "rwmfd": NamedDataset(
        "Real-World Masked Face Dataset", ("rwmfd", "RWMFD_part_1", "rwmfd/RWMFD_part_1"),
        "download RWMFD (github.com/X-zhangyang/Real-World-Masked-Face-Dataset) and extract RWMFD_part_1 to "
        "$OCCBENCH_DATA/rwmfd/ (images at rwmfd/<NNNN>/*.jpg)"),
}.items():
    DATASETS.add(_name, _ds)


def _is_bare_name(spec: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9_\-]+", spec))


def open_source(spec: str | os.PathLike, data_root: str | os.PathLike | None = None, *,
                allow_unsafe_pickle: bool = False) -> Source:
    """Open a dataset by path or by name.

    A bare registered name (``casia``, ``lfw``, ...) is resolved under the data root; otherwise ``spec`` is a
    path, tried as given, then relative to the data root (never escaping it).
    """
    spec_s = os.fspath(spec)
    if _is_bare_name(spec_s) and spec_s in DATASETS:
        return _open_named(spec_s, data_root, allow_unsafe_pickle)
    p = Path(spec_s).expanduser()
    if p.exists():
        return open_path(p, allow_unsafe_pickle=allow_unsafe_pickle)
    root = paths.data_root(data_root, required=False)
    if root is not None and not p.is_absolute():
        cand = paths.safe_join(root, spec_s)
        if cand.exists():
            return open_path(cand, name=spec_s, allow_unsafe_pickle=allow_unsafe_pickle)
    where = f" (nor under the data root {root})" if root is not None else ""
    close = difflib.get_close_matches(spec_s, DATASETS.names(), n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise DataNotFoundError(
        f"source {spec_s!r} is not an existing path{where} nor a named dataset.{hint} "
        f"Named datasets: {', '.join(DATASETS.names())}"
    )


def _open_named(name: str, data_root, allow_unsafe_pickle: bool) -> Source:
    ds = DATASETS.get(name)
    try:
        root = paths.data_root(data_root)
    except DataNotFoundError as e:
        raise DataNotFoundError(f"{e}. For {name!r} ({ds.title}): {ds.download}") from None
    for rel in ds.layouts:
        cand = paths.safe_join(root, rel)
        if cand.exists():
            try:
                return open_path(cand, name=name, allow_unsafe_pickle=allow_unsafe_pickle)
            except DataNotFoundError:
                continue  # an empty/unrelated folder: try the next layout
    tried = ", ".join(str(root / rel) for rel in ds.layouts)
    raise DataNotFoundError(
        f"named dataset {name!r} ({ds.title}) not found under data root {root}; looked for: {tried}. "
        f"To get it: {ds.download.replace('$OCCBENCH_DATA', str(root))}"
    )


def open_path(p: Path, name: str | None = None, *, allow_unsafe_pickle: bool = False) -> Source:
    """Open a dataset from a path: a ``.rec``/``.idx``/``.bin`` file or a folder (auto-detected)."""
    p = Path(p)
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".rec":
            return RecordIOSource(p, name=name)
        if suffix == ".idx":
            return RecordIOSource(p.with_suffix(".rec"), p, name=name)
        if suffix == ".bin":
            return BinSource(p, name=name, allow_unsafe_pickle=allow_unsafe_pickle)
        raise ConfigError(f"{p}: a source file must be a RecordIO .rec or an insightface .bin; "
                          "for images give their folder")
    if not p.is_dir():
        raise DataNotFoundError(f"{p} does not exist")
    if (p / "train.rec").is_file():
        return RecordIOSource(p / "train.rec", name=name or p.name)
    if (p / "shards.json").is_file():  # a sharded synth output (rec ones have train.rec, above)
        from .shards import WdsSource

        return WdsSource(p, name=name)
    root = p
    if (p / "lfw").is_dir() and _only_lfw_inside(p):
        root = p / "lfw"
    src = TreeSource(root, name=name)
    if not src.items():
        raise DataNotFoundError(
            f"no images ({', '.join(sorted(set(IMAGE_EXTS.values())))}) under {root}; expected "
            "<root>/<identity>/<image>, a flat folder of images, or train.rec + train.idx")
    return src


def _only_lfw_inside(p: Path) -> bool:
    """``p`` wraps an LFW tree: ``p/lfw`` is its only visible subfolder and no images sit directly in ``p``."""
    for entry in os.scandir(p):
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False) and entry.name != "lfw":
            return False
        if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTS:
            return False
    return True

