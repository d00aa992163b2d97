"""Pairs files of the LFW family: LFW's ``pairs.txt`` (and MFR2's), and CALFW / CPLFW's two-line lists.

LFW style (:func:`read_lfw_pairs`). Lines are split on any run of tabs or spaces. An optional header
``n_folds n_per_class`` (or a single ``n_per_class``, the one-fold Dev files) promises per fold
``n_per_class`` matched lines ``Name i j`` followed by ``n_per_class`` mismatched lines
``Name1 i Name2 j``; without a header (MFR2's ``pairs.txt``: 848 lines, space separated) every line is
read by its token count (3 = matched, 4 = mismatched) and all pairs get fold 1 (a protocol then sets
``folds: N``). Image numbers map to ``Name/Name_NNNN.<ext>`` (4-digit zero padding); with
``images_dir`` the extension is the one found on disk (any image extension; two files that differ
only by extension are refused as ambiguous), without it ``.jpg``.

CALFW / CPLFW (:func:`read_two_line_pairs`), as published (``pairs_CALFW.txt``, ``pairs_CPLFW.txt``):
no header, two consecutive lines per pair, each ``<file name> <token>`` with the same token on both
lines; token 0 = different people, tokens 1..10 = same person and the pair's fold. The published files
list the 3,000 positive pairs (300 per fold, in fold order) and then the 3,000 negative pairs, whose
fold is not written down; negatives get folds by position (the i-th of N negatives goes to fold
``1 + i * n_folds // N``, i.e. 300 per fold in file order). File names are image paths relative to
the image folder (``aligned images/`` or ``images/``, flat).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

from ..errors import ConfigError

_NAME = re.compile(r"^[^/\\\0]+$")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class Pair(NamedTuple):
    key1: str
    key2: str
    same: bool
    fold: int  # 1-based


def lfw_key(name: str, number: int | str, ext: str = "jpg") -> str:
    """``("Aaron_Peirsol", 1) -> "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"``."""
    return f"{name}/{name}_{int(number):04d}.{ext}"


class _Extensions:
    """Finds the on-disk extension of ``Name/Name_NNNN.*`` (one folder listing per person)."""

    def __init__(self, images_dir: str | os.PathLike | None):
        self.root = Path(images_dir) if images_dir is not None else None
        self._dirs: dict[str, dict[str, list[str]]] = {}

    def key(self, name: str, number: int, where: str) -> str:
        if self.root is None:
            return lfw_key(name, number)
        stems = self._dirs.get(name)
        if stems is None:
            stems = {}
            d = self.root / name
            if d.is_dir():
                for p in d.iterdir():
                    if p.suffix.lower() in IMAGE_EXTS:
                        stems.setdefault(p.stem, []).append(p.name)
            self._dirs[name] = stems
        stem = f"{name}_{int(number):04d}"
        found = sorted(stems.get(stem, []))
        if len(found) > 1:
            raise ConfigError(f"{where}: image {name}/{stem} is ambiguous: {', '.join(found)} are all in "
                              f"{self.root / name}; keep one of them")
        return f"{name}/{found[0]}" if found else lfw_key(name, number)  # absent: reported as missing later


def _is_int(tok: str) -> bool:
    return tok.isdigit()


def _text_lines(path: str | os.PathLike, what: str) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-blank lines of a UTF-8 pairs file; ``what`` names an empty one."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [(i + 1, ln.strip()) for i, ln in enumerate(fh) if ln.strip()]
    except UnicodeDecodeError as e:
        raise ConfigError(f"pairs file {path} is not UTF-8 text: {e}") from None
    if not lines:
        raise ConfigError(f"{what} {path} is empty")
    return lines


def read_lfw_pairs(path: str | os.PathLike, images_dir: str | os.PathLike | None = None) -> list[Pair]:
    """Parse an LFW-style pairs file into ``Pair(key1, key2, same, fold)`` in file order (see module docs)."""
    lines = _text_lines(path, "LFW pairs file")
    exts = _Extensions(images_dir)
    head = lines[0][1].split()
    if len(head) in (1, 2):
        if not all(_is_int(t) for t in head):
            raise ConfigError(f"{path}: first line must be a header 'n_folds n_pairs_per_class' or a pair "
                              f"'Name i j' / 'Name1 i Name2 j', got {lines[0][1]!r}")
        n_folds, per_class = (1, int(head[0])) if len(head) == 1 else (int(head[0]), int(head[1]))
        body = lines[1:]
        if n_folds < 1 or per_class < 1 or len(body) != 2 * n_folds * per_class:
            raise ConfigError(f"{path}: header promises {n_folds} folds x 2 x {per_class} pairs = "
                              f"{2 * n_folds * per_class} lines, found {len(body)}")
        want = [divmod(i, 2 * per_class) for i in range(len(body))]
        expected = [(fold + 1, pos < per_class) for fold, pos in want]
    else:
        body = lines
        expected = [(1, None)] * len(body)  # headerless: matched/mismatched by token count, one fold
    pairs: list[Pair] = []
    for (lineno, line), (fold, want_same) in zip(body, expected):
        f = line.split()
        same = {3: True, 4: False}.get(len(f))
        if same is None or (want_same is not None and same != want_same):
            kind = ("a matched 'Name i j'" if want_same else "a mismatched 'Name1 i Name2 j'") \
                if want_same is not None else "'Name i j' or 'Name1 i Name2 j'"
            raise ConfigError(f"{path} line {lineno}: expected {kind} pair, got {line!r}")
        n1, a, n2, b = (f[0], f[1], f[0], f[2]) if same else tuple(f)
        for n in (n1, n2):
            if not _NAME.match(n) or n in (".", ".."):
                raise ConfigError(f"{path} line {lineno}: invalid person name {n!r}")
        if not (_is_int(a) and _is_int(b)):
            raise ConfigError(f"{path} line {lineno}: image numbers must be integers, got {line!r}")
        where = f"{path} line {lineno}"
        pairs.append(Pair(exts.key(n1, int(a), where), exts.key(n2, int(b), where), same, fold))
    return pairs


def read_two_line_pairs(path: str | os.PathLike, n_folds: int = 10) -> list[Pair]:
    """Parse a CALFW / CPLFW pairs file (two ``<file> <token>`` lines per pair; see module docs)."""
    lines = [(lineno, ln.split()) for lineno, ln in _text_lines(path, "pairs file")]
    if len(lines) % 2:
        raise ConfigError(f"{path}: {len(lines)} lines; CALFW/CPLFW pairs files have two lines per pair "
                          "('<image> <label>' each)")
    raw = []
    for (l1, a), (l2, b) in zip(lines[0::2], lines[1::2]):
        for lineno, tok in ((l1, a), (l2, b)):
            if len(tok) != 2 or not _is_int(tok[1]):
                raise ConfigError(f"{path} line {lineno}: expected '<image file> <label>', got {' '.join(tok)!r}")
            if tok[0].startswith(("/", "\\")) or ".." in re.split(r"[/\\]", tok[0]):
                raise ConfigError(f"{path} line {lineno}: image {tok[0]!r} must be a path relative to the "
                                  "image folder, without '..'")
        if a[1] != b[1]:
            raise ConfigError(f"{path} lines {l1}-{l2}: the two lines of a pair carry different labels "
                              f"({a[1]} and {b[1]})")
        raw.append((a[0].replace("\\", "/"), b[0].replace("\\", "/"), int(a[1])))
    negatives = [i for i, r in enumerate(raw) if r[2] == 0]
    neg_fold = {i: 1 + j * n_folds // len(negatives) for j, i in enumerate(negatives)}
    pairs = []
    for i, (k1, k2, tok) in enumerate(raw):
        if tok == 0:
            pairs.append(Pair(k1, k2, False, neg_fold[i]))
        elif 1 <= tok <= n_folds:
            pairs.append(Pair(k1, k2, True, tok))
        else:
            raise ConfigError(f"{path} pair {i + 1}: label {tok} is neither 0 (different) nor a fold 1..{n_folds}")
    return pairs
