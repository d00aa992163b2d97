"""LFW ``pairs.txt`` reader (View 2 / DevTest layouts).

Format: a header ``n_folds<TAB>n_per_class`` (or a single ``n_per_class`` for the one-fold Dev files), then per
fold ``n_per_class`` matched lines ``Name<TAB>i<TAB>j`` followed by ``n_per_class`` mismatched lines
``Name1<TAB>i<TAB>Name2<TAB>j``. Image numbers map to ``Name/Name_NNNN.jpg`` (4-digit zero padding).
"""
from __future__ import annotations

import os
import re
from typing import NamedTuple

from ..errors import ConfigError

_NAME = re.compile(r"^[^/\\\0]+$")


class Pair(NamedTuple):
    key1: str
    key2: str
    same: bool
    fold: int  # 1-based


def lfw_key(name: str, number: int | str, ext: str = "jpg") -> str:
    """``("Aaron_Peirsol", 1) -> "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"``."""
    return f"{name}/{name}_{int(number):04d}.{ext}"


def read_lfw_pairs(path: str | os.PathLike) -> list[Pair]:
    """Parse an LFW pairs file into ``Pair(key1, key2, same, fold)`` in file order."""
    with open(path, encoding="utf-8") as fh:
        lines = [ln.strip() for ln in fh if ln.strip()]
    if not lines:
        raise ConfigError(f"LFW pairs file {path} is empty")
    head = lines[0].split()
    try:
        n_folds, per_class = (1, int(head[0])) if len(head) == 1 else (int(head[0]), int(head[1]))
    except (ValueError, IndexError):
        raise ConfigError(f"{path}: first line must be 'n_folds<TAB>n_pairs_per_class', got {lines[0]!r}") from None
    body = lines[1:]
    if n_folds < 1 or per_class < 1 or len(body) != 2 * n_folds * per_class:
        raise ConfigError(f"{path}: header promises {n_folds} folds x 2 x {per_class} pairs = "
                          f"{2 * n_folds * per_class} lines, found {len(body)}")
    pairs: list[Pair] = []
    for i, line in enumerate(body):
        fold, pos = divmod(i, 2 * per_class)
        want_same = pos < per_class
        f = line.split()
        if want_same and len(f) == 3:
            n1, a, n2, b = f[0], f[1], f[0], f[2]
        elif not want_same and len(f) == 4:
            n1, a, n2, b = f
        else:
            kind = "matched 'Name i j'" if want_same else "mismatched 'Name1 i Name2 j'"
            raise ConfigError(f"{path} line {i + 2}: expected a {kind} pair, got {line!r}")
        for n in (n1, n2):
            if not _NAME.match(n) or n in (".", ".."):
                raise ConfigError(f"{path} line {i + 2}: invalid person name {n!r}")
        try:
            pairs.append(Pair(lfw_key(n1, a), lfw_key(n2, b), want_same, fold + 1))
        except ValueError:
            raise ConfigError(f"{path} line {i + 2}: image numbers must be integers, got {line!r}") from None
    return pairs
