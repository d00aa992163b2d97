"""Face-attribute label files -> one table: keys, attribute names, labels (N x A int8: 1, 0, -1 = unknown).

Three layouts, each read as published:

- ``attributes.csv`` (occbench's own): header ``path,<attr1>,<attr2>,...``; values 1 / 0; -1 or empty =
  unknown. An unknown path (not under ``root`` / not in ``known``), a value other than 1, 0, -1 or
  empty, or a duplicate path is an error naming the row (header = row 1); nothing is dropped silently.
- CelebA ``list_attr_celeba.txt``: line 1 the image count, line 2 the 40 attribute names, then
  ``<file> <+-1> * 40`` whitespace-separated; +1 -> 1, -1 -> 0.
- LFW attributes (Kumar et al., ``lfw_attributes.txt``): tab-separated; a comment line, then the header
  ``#<TAB>person<TAB>imagenum<TAB><attr>...`` and rows ``<person name with spaces><TAB><n><TAB><score>...``.
  Scores are real-valued classifier outputs: binarised at 0 (> 0 -> 1, <= 0 -> 0). The key is LFW's
  path ``<Person_Name>/<Person_Name>_<nnnn>.jpg``.
"""
from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataNotFoundError

UNKNOWN = -1


@dataclass
class AttributeTable:
    keys: list[str]
    names: list[str]
    labels: np.ndarray  # (N, A) int8: 1, 0, -1 (unknown)
    source: str = ""

    def __post_init__(self):
        self.labels = np.asarray(self.labels, np.int8).reshape(len(self.keys), len(self.names))

    def index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.keys)}

    def select(self, keys: list[str]) -> np.ndarray:
        """Labels of ``keys`` in that order (ConfigError naming the first key not in the table)."""
        idx = self.index()
        missing = [k for k in keys if k not in idx]
        if missing:
            raise ConfigError(f"{len(missing)} image(s) have no attribute labels in {self.source}, e.g. {missing[0]!r}")
        return self.labels[[idx[k] for k in keys]]


def _check_names(names: list[str], where: str) -> list[str]:
    names = [n.strip() for n in names]
    if not names or any(not n for n in names):
        raise ConfigError(f"{where}: the header needs at least one attribute name and no empty names")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{where}: attribute {dup[0]!r} appears twice in the header")
    return names


def read_attributes_csv(path: str | os.PathLike, root: str | os.PathLike | None = None,
                        known: set[str] | None = None) -> AttributeTable:
    """occbench ``attributes.csv``. ``root``: paths must name files under it; ``known``: or be in this set."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"attributes file not found: {path}")
    from ..paths import safe_join

    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if not rows or not rows[0] or rows[0][0].strip() != "path":
        got = rows[0] if rows else "nothing"
        raise ConfigError(f"{path}: row 1 must be the header path,<attribute>,... (got {got})")
    names = _check_names(rows[0][1:], str(path))
    keys, labels, seen = [], [], {}
    for rno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(names) + 1:
            raise ConfigError(f"{path} row {rno}: {len(row)} fields, the header has {len(names) + 1}")
        key = row[0].strip()
        if not key:
            raise ConfigError(f"{path} row {rno}: empty path")
        if key in seen:
            raise ConfigError(f"{path} row {rno}: path {key!r} is listed twice (first in row {seen[key]})")
        if known is not None and key not in known:
            raise ConfigError(f"{path} row {rno}: unknown path {key!r} (not among the protocol's images)")
        if root is not None and not safe_join(root, key).is_file():
            raise ConfigError(f"{path} row {rno}: unknown path {key!r} (no such file under {root})")
        vals = []
        for name, cell in zip(names, row[1:]):
            c = cell.strip()
            if c in ("", "-1"):
                vals.append(UNKNOWN)
            elif c in ("0", "1"):
                vals.append(int(c))
            else:
                raise ConfigError(f"{path} row {rno}: {name}={cell!r} is not binary (use 1, 0, or -1 / empty "
                                  "for unknown)")
        seen[key] = rno
        keys.append(key)
        labels.append(vals)
    return AttributeTable(keys, names, np.array(labels, np.int8).reshape(-1, len(names)), str(path))


def read_celeba_attributes(path: str | os.PathLike) -> AttributeTable:
    """CelebA ``list_attr_celeba.txt`` (count line, names line, ``file +-1 ...`` rows)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"CelebA attribute file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise ConfigError(f"{path}: line 1 must be the image count, line 2 the attribute names (CelebA layout)")
    count = int(lines[0].strip())
    names = _check_names(lines[1].split(), str(path))
    keys, labels, seen = [], [], {}
    for lno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise ConfigError(f"{path} line {lno}: {len(parts)} fields, expected a file name and {len(names)} values")
        key = parts[0]
        if key in seen:
            raise ConfigError(f"{path} line {lno}: {key!r} is listed twice (first on line {seen[key]})")
        bad = next((v for v in parts[1:] if v not in ("1", "-1")), None)
        if bad is not None:
            raise ConfigError(f"{path} line {lno}: value {bad!r} is not +1/-1")
        seen[key] = lno
        keys.append(key)
        labels.append([1 if v == "1" else 0 for v in parts[1:]])
    if len(keys) != count:
        raise ConfigError(f"{path}: line 1 announces {count} images, the file lists {len(keys)}")
    return AttributeTable(keys, names, np.array(labels, np.int8).reshape(-1, len(names)), str(path))


def lfw_key(person: str, imagenum: int) -> str:
    """LFW path of ``person`` (spaces or underscores) image ``imagenum`` (1-based)."""
    name = re.sub(r"\s+", "_", person.strip())
    return f"{name}/{name}_{int(imagenum):04d}.jpg"


def read_lfw_attributes(path: str | os.PathLike) -> AttributeTable:
    """Kumar et al.'s LFW attribute file: real-valued scores binarised at 0; keys are LFW paths."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"LFW attribute file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    hdr = next((i for i, ln in enumerate(lines) if ln.startswith("#") and "person" in ln.split("\t")), None)
    if hdr is None:
        raise ConfigError(f"{path}: no header line '#<TAB>person<TAB>imagenum<TAB>...' (LFW attribute layout)")
    head = lines[hdr].split("\t")
    if head[1:3] != ["person", "imagenum"]:
        raise ConfigError(f"{path} line {hdr + 1}: header must start '#, person, imagenum' (tab-separated)")
    names = _check_names(head[3:], str(path))
    keys, labels, seen = [], [], {}
    for lno, line in enumerate(lines[hdr + 1:], start=hdr + 2):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != len(names) + 2:
            raise ConfigError(f"{path} line {lno}: {len(parts)} tab-separated fields, expected {len(names) + 2}")
        try:
            num = int(parts[1])
            vals = [float(v) for v in parts[2:]]
        except ValueError:
            raise ConfigError(f"{path} line {lno}: imagenum must be an integer and scores numbers") from None
        if num < 1 or not all(math.isfinite(v) for v in vals):
            raise ConfigError(f"{path} line {lno}: imagenum must be >= 1 and scores finite")
        key = lfw_key(parts[0], num)
        if key in seen:
            raise ConfigError(f"{path} line {lno}: {parts[0]} {num} is listed twice (first on line {seen[key]})")
        seen[key] = lno
        keys.append(key)
        labels.append([1 if v > 0 else 0 for v in vals])
    return AttributeTable(keys, names, np.array(labels, np.int8).reshape(-1, len(names)), str(path))


def read_attributes(path: str | os.PathLike, root: str | os.PathLike | None = None,
                    known: set[str] | None = None) -> AttributeTable:
    """Any of the three layouts, told apart by content: CSV header ``path,``, a CelebA count line, or LFW's."""
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"attributes file not found: {p}")
    with open(p, encoding="utf-8-sig") as fh:
        first = fh.readline()
    if first.startswith("path,") or first.strip() == "path":
        return read_attributes_csv(p, root, known)
    if first.strip().isdigit():
        return read_celeba_attributes(p)
    if first.startswith("#"):
        return read_lfw_attributes(p)
    raise ConfigError(f"{p}: not a known attribute layout (attributes.csv with a 'path,...' header, CelebA "
                      "list_attr_celeba.txt, or LFW's lfw_attributes.txt)")


def normalise_name(name: str) -> str:
    """'Black Hair' / 'Black_Hair' / 'black-hair' -> 'black_hair' (how attribute names are matched)."""
    return re.sub(r"[\s\-_]+", "_", name.strip()).lower()


def match_attributes(model_names: list[str],
                     data_names: list[str]) -> tuple[list[tuple[int, int, str]], list[str], list[str]]:
    """Match a model's attributes to a label file's by normalised name.

    Returns (pairs (model column, data column, data name), model-only names, data-only names).
    """
    data_by = {}
    for j, n in enumerate(data_names):
        data_by.setdefault(normalise_name(n), (j, n))
    pairs, model_only = [], []
    used = set()
    for i, n in enumerate(model_names):
        hit = data_by.get(normalise_name(n))
        if hit is None or hit[0] in used:
            model_only.append(n)
        else:
            used.add(hit[0])
            pairs.append((i, hit[0], hit[1]))
    data_only = [n for j, n in enumerate(data_names) if j not in used]
    return pairs, model_only, data_only
