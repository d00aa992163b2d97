"""Occluder definitions as data: occluders/*.yaml entries -> registered factories.

Each YAML file at the top of the ``occluders`` resource folder holds::

    occluders:
      <name>:
        family: <a registered family, e.g. surgical_mask>
        category: <mask|respirator|glasses|sunglasses|scarf|hand|hat|block|rgba>
        <family parameters...>
    default: false   # optional, top level: these occluders are opt-in (named with --occluders or by a
                     # protocol), never drawn by a run that does not name its occluders

``create_occluder(name, **overrides)`` builds the family with the YAML parameters, each top-level
key replaced by an override of the same name (no deep merge: pass a full ``jitter`` mapping).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ...errors import ConfigError
from ...registry import Registry
from .base import FAMILIES, Occluder

OCCLUDERS: Registry = Registry("occluder")


@dataclass(eq=True)
class OccluderFactory:
    """What OCCLUDERS holds: calling it builds the occluder (validated at construction)."""

    name: str
    family: str
    category: str
    config: dict = field(default_factory=dict)
    source: str = ""
    in_default: bool = True  # drawn by runs that do not name their occluders

    def __call__(self, **overrides) -> Occluder:
        cfg = copy.deepcopy(self.config)
        category = overrides.pop("category", self.category)
        cfg.update(copy.deepcopy(overrides))
        return FAMILIES.get(self.family)(self.name, category, **cfg)


def register_factory(fac: OccluderFactory) -> None:
    """Register a factory; re-registering an identical definition is a no-op, a different one an error."""
    if fac.name in OCCLUDERS:
        old = OCCLUDERS.get(fac.name)
        if old == fac:
            return
        raise ConfigError(f"occluder name {fac.name!r} from {fac.source} is already defined "
                          f"(by {getattr(old, 'source', '?')}): choose another name")
    OCCLUDERS.add(fac.name, fac)


def read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict) or "occluders" not in doc:
        raise ConfigError(f"{path}: expected a mapping with an 'occluders' key")
    return doc


def load_definitions(folder: Path) -> list[str]:
    """Register every entry of ``folder``/*.yaml (not sub-folders). Returns the names, sorted."""
    names = []
    for path in sorted(Path(folder).glob("*.yaml")):
        doc = read_yaml(path)
        entries = doc["occluders"]
        in_default = doc.get("default", True)
        if not isinstance(in_default, bool):
            raise ConfigError(f"{path}: 'default' must be true or false")
        if not isinstance(entries, dict):
            raise ConfigError(f"{path}: 'occluders' must map names to definitions")
        for name, spec in entries.items():
            if not isinstance(spec, dict) or "family" not in spec or "category" not in spec:
                raise ConfigError(f"{path}: occluder {name!r} needs 'family' and 'category'")
            spec = dict(spec)
            fam, cat = spec.pop("family"), spec.pop("category")
            FAMILIES.get(fam)  # unknown family -> ConfigError with close matches
            fac = OccluderFactory(str(name), fam, cat, spec, source=str(path), in_default=in_default)
            try:
                fac()  # validate now, so a bad edit fails at import with the file named
            except ConfigError as e:
                raise ConfigError(f"{path}: {e}") from None
            register_factory(fac)
            names.append(str(name))
    return sorted(names)
