"""Protocol data -> a task: the pairs (1:1) or gallery/probe lists (1:N) and where every image is.

Every path read from a protocol or a list file goes through ``safe_join`` / ``resolve_under`` (no
escaping the root).
Images listed but absent are kept in the task and recorded in ``missing`` (never dropped here); the
engine scores what involves them as failures-to-enrol.
"""
from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .. import paths
from ..paths import resolve_under
from ..errors import ConfigError, DataNotFoundError
from ..io.binset import fold_of
from ..io.lfw import Pair, read_lfw_pairs, read_two_line_pairs
from ..recognizers.registry import file_sha256
from .protocols import Protocol, _as_list

TRUE = {"1", "true", "yes", "same", "y", "t"}
FALSE = {"0", "false", "no", "diff", "different", "n", "f"}


@dataclass
class Task:
    """What to evaluate. Keys are image ids: relative posix paths under ``images_root`` (folders) or
    ``"0".."N-1"`` (.bin sets)."""

    protocol: Protocol
    kind: str
    synth_src: str  # what run_synth opens (images folder or .bin file)
    images_root: Path | None = None
    binset: object | None = None  # occbench.io.binset.BinSet for .bin protocols
    pairs: list[Pair] = field(default_factory=list)
    # 1:N and all-to-all: (key, identity); all-to-all scores every probe against every gallery image
    gallery: list[tuple[str, str]] = field(default_factory=list)
    probes: list[tuple[str, str]] = field(default_factory=list)
    identity: dict = field(default_factory=dict)  # data files' content identity (for protocol_hash)
    missing: dict[str, str] = field(default_factory=dict)  # key -> reason (listed but not found)
    allow_unsafe_pickle: bool = False
    subset: dict | None = None  # how --limit shrank the task
    root: Path | None = None  # the data root the protocol's relative paths were resolved under
    resolved: dict[str, Path] = field(default_factory=dict)  # key -> checked image path (folders)
    masked: dict[str, bool] | None = None  # --masked-list: key -> wears a real mask (None: no list)

    def keys(self) -> list[str]:
        """Every image the task uses, each once, sorted."""
        if self.kind == "verification":
            ks = {k for p in self.pairs for k in (p.key1, p.key2)}
        else:
            ks = {k for k, _ in self.gallery} | {k for k, _ in self.probes}
        return sorted(ks)

    def probe_keys(self) -> list[str]:
        """Images that get occluded: every image of a verification task, the probes of a 1:N task."""
        if self.kind == "verification":
            return self.keys()
        return sorted({k for k, _ in self.probes})

    def image_source(self, key: str):
        """A path (folders) or the encoded bytes (.bin) of a clean image, for AlignedCropDataset."""
        if self.binset is not None:
            return self.binset.read_bytes(key)
        p = self.resolved.get(key)
        return p if p is not None else paths.safe_join(self.images_root, key)

    def read_bytes(self, key: str) -> bytes:
        src = self.image_source(key)
        if isinstance(src, bytes):
            return src
        with open(src, "rb") as fh:
            return fh.read()

    def counts(self) -> dict:
        if self.kind == "verification":
            n_same = sum(p.same for p in self.pairs)
            return {"n_pairs": len(self.pairs), "n_genuine": n_same, "n_impostor": len(self.pairs) - n_same,
                    "n_images": len(self.keys()), "n_missing_images": len(self.missing)}
        out = {"n_gallery": len(self.gallery), "n_probes": len(self.probes), "n_images": len(self.keys()),
               "n_missing_images": len(self.missing)}
        if self.kind == "all-to-all":
            out.update(all_to_all_counts(self.probes, self.gallery))
        return out


# ----------------------------------------------------------------------------------- locate


def _data_root(protocol: Protocol, explicit, fallback: Path | None) -> Path:
    try:
        root = paths.data_root(explicit, required=fallback is None)
    except DataNotFoundError as e:
        raise DataNotFoundError(f"{e}. {protocol.expects()}") from None
    return root if root is not None else fallback


def _find_file(protocol: Protocol, root: Path, field_name: str) -> Path:
    if field_name in protocol.overrides:
        return Path(protocol.overrides[field_name])
    cands = _as_list(protocol.data.get(field_name))
    if not cands:
        hint = ("an insightface verification .bin such as lfw.bin, cfp_fp.bin or agedb_30.bin"
                if protocol.data.get("format") == "bin" else protocol.expects(str(root)))  # a .bin is all it needs
        raise DataNotFoundError(f"protocol {protocol.name!r} needs --{field_name} FILE: {hint}")
    for rel in cands:
        p = paths.safe_join(root, rel)
        if p.is_file():
            return p
    tried = ", ".join(str(Path(root) / c) for c in cands)  # as typed (no resolved symlinks), like expects()
    raise DataNotFoundError(f"no {field_name} file found (looked for {tried}). {protocol.expects(str(root))}")


def _images_dir(protocol: Protocol, root: Path) -> Path:
    cands = _as_list(protocol.data["images"])  # a list = alternatives, the first folder found wins
    for rel in cands:
        d = paths.safe_join(root, rel)
        if d.is_dir():
            return d
    tried = [str(Path(root) / c) for c in cands]  # as typed, like expects()
    what = f"image folder {tried[0]} not found" if len(tried) == 1 else \
        f"no image folder found (looked for {', '.join(tried)})"
    raise DataNotFoundError(f"{what}. {protocol.expects(str(root))}")


def _file_identity(p: Path) -> dict:
    return {"name": p.name, "sha256": file_sha256(p)}


def load_task(protocol: Protocol, data_root: str | os.PathLike | None = None,
              allow_unsafe_pickle: bool = False, limit: int | None = None) -> Task:
    """Find the protocol's data and build its task (``limit``: see :func:`limit_task`), with every
    listed image checked (:func:`check_images`). Raises DataNotFoundError saying what is expected where."""
    fmt = protocol.data["format"]
    user_file = next((Path(protocol.overrides[f]) for f in ("pairs", "gallery", "bin") if f in protocol.overrides),
                     None)
    # user lists (--pairs / --gallery) default their image root to the list's folder; a .bin needs no root
    fallback = user_file.parent if user_file is not None else None
    root = _data_root(protocol, data_root, fallback)
    if fmt == "lfw-pairs":
        task = _lfw_pairs(protocol, root)
    elif fmt == "pairs-csv":
        task = _pairs_csv(protocol, root)
    elif fmt == "bin":
        task = _bin(protocol, root, allow_unsafe_pickle)
    elif fmt == "lfw-identification":
        task = _lfw_identification(protocol, root)
    elif fmt == "gallery-probe":
        task = _gallery_probe(protocol, root)
    elif fmt == "calfw-pairs":
        task = _calfw_pairs(protocol, root)
    elif fmt == "identity-folders":
        task = _identity_folders(protocol, root)
    else:  # validated earlier; defensive
        raise ConfigError(f"unsupported data format {fmt!r}")
    task.root = root
    if task.images_root is not None and ("masked_list" in protocol.overrides or protocol.data.get("masked_list")):
        _attach_masked_list(protocol, root, task)
    elif "mask-unmasked" in ((protocol.occlusion or {}).get("modes") or ()):
        raise ConfigError(f"protocol {protocol.name} masks the images a masked list marks unmasked: pass "
                          "--masked-list masked.csv (columns path,masked; one row per image)")
    return check_images(limit_task(task, limit))


def check_images(task: Task) -> Task:
    """Resolve every image path under the image root (refusing escapes, symlinks included) and
    record the images that are listed but not there."""
    if task.binset is not None:
        return task
    root = os.path.realpath(task.images_root)
    task.resolved, task.missing = {}, {}
    for key in task.keys():
        real = resolve_under(root, key)
        if not real.is_file():
            task.missing[key] = f"image file not found: {real}"
        task.resolved[key] = real
    return task


def _lfw_pairs(protocol: Protocol, root: Path) -> Task:
    images = _images_dir(protocol, root)
    pf = _find_file(protocol, root, "pairs")
    pairs = read_lfw_pairs(pf, images_dir=images)
    folds = protocol.data["folds"]
    if folds not in ("file", "auto"):
        ids = fold_of(len(pairs), folds)
        pairs = [Pair(p.key1, p.key2, p.same, f) for p, f in zip(pairs, ids)]
    task = Task(protocol, "verification", str(images), images_root=images, pairs=pairs,
                identity={"pairs": _file_identity(pf), "layout": "lfw"})
    return task


def _calfw_pairs(protocol: Protocol, root: Path) -> Task:
    images = _images_dir(protocol, root)
    pf = _find_file(protocol, root, "pairs")
    pairs = [Pair(_norm_rel(p.key1, str(pf)), _norm_rel(p.key2, str(pf)), p.same, p.fold)
             for p in read_two_line_pairs(pf)]
    folds = protocol.data["folds"]
    if folds not in ("file", "auto"):
        ids = fold_of(len(pairs), folds)
        pairs = [Pair(p.key1, p.key2, p.same, f) for p, f in zip(pairs, ids)]
    return Task(protocol, "verification", str(images), images_root=images, pairs=pairs,
                identity={"pairs": _file_identity(pf), "layout": "calfw"})


def read_masked_list(path: Path) -> dict[str, bool]:
    """A per-image list ``path,masked`` (header required; masked 1/0, true/false, yes/no) -> {key: masked}."""
    rows = _read_csv(path, ("path", "masked"))
    out: dict[str, bool] = {}
    for i, r in enumerate(rows):
        where = f"{path} row {i + 2}"
        key = _norm_rel(r["path"], where)
        if key in out:
            raise ConfigError(f"{where}: {key} is listed twice")
        t = r["masked"].strip().lower()
        if t not in TRUE | FALSE:
            raise ConfigError(f"{where}: 'masked' must be 1/0 (or true/false), got {r['masked']!r}")
        out[key] = t in TRUE
    if not out:
        raise ConfigError(f"{path} lists no images")
    return out


def _attach_masked_list(protocol: Protocol, root: Path, task: Task) -> None:
    """Read --masked-list / data.masked_list; every image of the task must be listed."""
    mf = _find_file(protocol, root, "masked_list")
    masked = read_masked_list(mf)
    missing = [k for k in task.keys() if k not in masked]
    if missing:
        raise ConfigError(f"{mf} does not say whether {len(missing)} image(s) of {protocol.name} are masked, "
                          f"e.g. {', '.join(missing[:3])}; list every image (path,masked)")
    task.masked = {k: masked[k] for k in task.keys()}
    task.identity["masked_list"] = _file_identity(mf)
    if task.kind == "all-to-all":  # MFR style: masked probes against the unmasked gallery
        task.probes = [(k, i) for k, i in task.probes if task.masked[k]]
        task.gallery = [(k, i) for k, i in task.gallery if not task.masked[k]]
        if not task.probes or not task.gallery:
            raise ConfigError(f"{mf}: all-to-all needs masked probes and unmasked gallery images; got "
                              f"{len(task.probes)} masked, {len(task.gallery)} unmasked")


def _identity_folders(protocol: Protocol, root: Path) -> Task:
    """All-to-all over ``images/<identity>/<image>``: every image is a gallery image and a probe (self
    pairs excluded by the metric); with a masked list, masked images are the probes, unmasked the gallery."""
    images = _images_dir(protocol, root)
    keys = _list_images(images)
    if not keys:
        raise DataNotFoundError(f"no images under {images}. {protocol.expects(str(root))}")
    ident = [(k, PurePosixPath(k).parent.as_posix()) for k in sorted(keys)]
    flat = [k for k, i in ident if i == "."]
    if flat:
        raise ConfigError(f"{images}: all-to-all needs one folder per identity; {len(flat)} image(s) lie directly "
                          f"in the image folder, e.g. {flat[0]}")
    digest = hashlib.sha256("\n".join(k for k, _ in ident).encode()).hexdigest()
    return Task(protocol, "all-to-all", str(images), images_root=images, gallery=list(ident), probes=list(ident),
                identity={"images": {"n": len(ident), "keys_sha256": digest}, "layout": "identity-folders"})


def all_to_all_counts(probes: list[tuple[str, str]], gallery: list[tuple[str, str]]) -> dict:
    """Genuine / impostor pair counts of an all-to-all task (self pairs, same key, excluded)."""
    per_id = Counter(i for _, i in gallery)
    gal_keys = {k for k, _ in gallery}
    n_self = sum(1 for k, _ in probes if k in gal_keys)
    n_same = sum(per_id[i] for _, i in probes)
    return {"n_genuine": n_same - n_self, "n_impostor": len(probes) * len(gallery) - n_same,
            "n_excluded_self": n_self}


def _norm_rel(path_text: str, where: str) -> str:
    s = path_text.strip().replace("\\", "/")
    if not s:
        raise ConfigError(f"{where}: empty image path")
    p = PurePosixPath(s)
    if p.is_absolute() or ".." in p.parts or s.startswith("~"):
        from ..errors import UnsafePathError

        raise UnsafePathError(f"{where}: image path {path_text!r} must be relative to the data root, "
                              "without '..'")
    return p.as_posix()


def _parse_same(v: str, where: str) -> bool:
    t = v.strip().lower()
    if t in TRUE:
        return True
    if t in FALSE:
        return False
    raise ConfigError(f"{where}: 'same' must be 1/0 (or true/false), got {v!r}")


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in required if c not in cols]
            if missing:
                raise ConfigError(f"{path}: needs a header row with columns {', '.join(required)} "
                                  f"(missing {', '.join(missing)}; found {', '.join(cols) or 'nothing'})")
            return [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text: {e}") from None


def _pairs_csv(protocol: Protocol, root: Path) -> Task:
    pf = _find_file(protocol, root, "pairs")
    images = _images_dir(protocol, root)
    rows = _read_csv(pf, ("path1", "path2", "same"))
    if not rows:
        raise ConfigError(f"{pf} lists no pairs")
    pairs = []
    folds = protocol.data["folds"]
    has_fold = "fold" in rows[0]
    if folds == "file" and not has_fold:
        raise ConfigError(f"{pf}: protocol {protocol.name} takes folds from the file, but it has no 'fold' column")
    use_file_folds = folds == "file" or (folds == "auto" and has_fold)
    ids = None if use_file_folds else fold_of(len(rows), 10 if folds == "auto" else folds)
    for i, r in enumerate(rows):
        where = f"{pf} row {i + 2}"
        k1, k2 = _norm_rel(r["path1"], where), _norm_rel(r["path2"], where)
        if use_file_folds:
            try:
                fold = int(r["fold"])
            except ValueError:
                raise ConfigError(f"{where}: fold must be an integer, got {r['fold']!r}") from None
        else:
            fold = ids[i]
        pairs.append(Pair(k1, k2, _parse_same(r["same"], where), fold))
    task = Task(protocol, "verification", str(images), images_root=images, pairs=pairs,
                identity={"pairs": _file_identity(pf), "layout": "pairs-csv"})
    return task


def _bin(protocol: Protocol, root: Path | None, allow_unsafe_pickle: bool) -> Task:
    from ..io.binset import load_binset

    bf = _find_file(protocol, root, "bin")
    bs = load_binset(bf, allow_unsafe_pickle=allow_unsafe_pickle)
    pairs = bs.pairs
    folds = protocol.data["folds"]
    if folds not in ("file", "auto"):
        ids = fold_of(len(pairs), folds)
        pairs = [Pair(p.key1, p.key2, p.same, f) for p, f in zip(pairs, ids)]
    return Task(protocol, "verification", str(bf), binset=bs, pairs=pairs, identity={"bin": _file_identity(bf)},
                allow_unsafe_pickle=allow_unsafe_pickle)


def _list_images(images: Path) -> list[str]:
    from ..io.sources import TreeSource

    return [it.key for it in TreeSource(images).items()]


def _lfw_identification(protocol: Protocol, root: Path) -> Task:
    images = _images_dir(protocol, root)
    keys = _list_images(images)
    if not keys:
        raise DataNotFoundError(f"no images under {images}. {protocol.expects(str(root))}")
    by_id: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        ident = PurePosixPath(k).parent.as_posix()
        by_id["" if ident == "." else ident].append(k)
    gallery, probes = [], []
    for ident in sorted(by_id):
        ks = sorted(by_id[ident])
        if len(ks) >= protocol.data["min_images"]:
            gallery.append((ks[0], ident))
            probes.extend((k, ident) for k in ks[1:])
        else:
            probes.extend((k, ident) for k in ks)  # identity not enrolled: non-mated probes
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()
    return Task(protocol, "identification", str(images), images_root=images, gallery=gallery, probes=probes,
                identity={"images": {"n": len(keys), "keys_sha256": digest}, "layout": "lfw"})


def _gallery_probe(protocol: Protocol, root: Path) -> Task:
    gf = _find_file(protocol, root, "gallery")
    pf = _find_file(protocol, root, "probe")
    images = _images_dir(protocol, root)
    lists = []
    for f in (gf, pf):
        rows = _read_csv(f, ("path", "identity"))
        lists.append([(_norm_rel(r["path"], f"{f} row {i + 2}"), r["identity"].strip()) for i, r in enumerate(rows)])
    gallery, probes = lists
    if not gallery or not probes:
        raise ConfigError(f"gallery ({gf}) and probe ({pf}) lists must both be non-empty")
    task = Task(protocol, "identification", str(images), images_root=images, gallery=gallery, probes=probes,
                identity={"gallery": _file_identity(gf), "probe": _file_identity(pf), "layout": "gallery-probe"})
    return task


# ----------------------------------------------------------------------------------- subsets


def limit_task(task: Task, limit: int | None) -> Task:
    """A deterministic subset for quick runs (``--limit N``; ``--limit-pairs`` is its old name).

    Verification: N pairs taken round-robin over the (fold, genuine/impostor) groups in file order, so
    every fold and both classes stay represented. Identification: about N probes, half mated (whole
    identities, sorted by name) and half non-mated; the gallery keeps the selected mated identities.
    """
    if limit is None:
        return task
    limit = int(limit)
    if limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if task.kind == "all-to-all":  # whole identities, sorted by name, until about N probes
        per_id = Counter(i for _, i in task.probes)
        keep: set[str] = set()
        n = 0
        for ident in sorted(per_id):
            if n >= limit:
                break
            keep.add(ident)
            n += per_id[ident]
        task.probes = [(k, i) for k, i in task.probes if i in keep]
        task.gallery = [(k, i) for k, i in task.gallery if i in keep]
        task.subset = {"limit": limit, "n_selected": len(task.probes)}
        return task
    if task.kind == "verification":
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(task.pairs):
            groups.setdefault((p.fold, p.same), []).append(i)
        chosen: list[int] = []
        queues = [list(reversed(v)) for v in groups.values()]
        while len(chosen) < min(limit, len(task.pairs)):
            for q in queues:
                if q and len(chosen) < limit:
                    chosen.append(q.pop())
        sel = sorted(chosen)
        task.pairs = [task.pairs[i] for i in sel]
        task.subset = {"limit": limit, "n_selected": len(sel)}
    else:
        gal_ids = {ident for _, ident in task.gallery}
        mated = [(k, i) for k, i in task.probes if i in gal_ids]
        nonmated = [(k, i) for k, i in task.probes if i not in gal_ids]
        want_mated = (limit + 1) // 2
        keep_ids: list[str] = []
        n = 0
        for ident in sorted({i for _, i in mated}):
            if n >= want_mated:
                break
            keep_ids.append(ident)
            n += sum(1 for _, i in mated if i == ident)
        keep = set(keep_ids)
        task.gallery = [(k, i) for k, i in task.gallery if i in keep]
        task.probes = [(k, i) for k, i in task.probes if i in keep] + nonmated[: max(limit - n, 0)]
        task.subset = {"limit": limit, "n_selected": len(task.probes)}
    return task
