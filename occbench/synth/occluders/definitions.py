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

Looks are versioned. An entry may say ``look: N`` (default 1): the plain name is the newest look and
``<name>_v<N>`` (``versioned``) names that look for good. Frozen looks live in files with the top-level
key ``frozen_look: N`` (``looks-v<N>-*.yaml``; never edited, registered as ``<name>_v<N>``, opt-in,
skipped by ``load_definitions``); a top-level entry whose look is frozen must
equal the frozen definition, so a look cannot drift without a new look number. Protocols name
frozen looks, so their numbers stay reproducible while ``occbench synth`` gets the newest looks.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ...errors import ConfigError
from ...io import yamlio
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
    base: str = ""  # the plain name this is a look of ("" = itself); its seed group (``seed_group``)
    look: int = 1  # look number (``<base>_v<look>`` pins it)

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


def versioned(name: str, look: int) -> str:
    """The pinned name of look ``look`` of occluder ``name``: ``hand``, 1 -> ``hand_v1``."""
    return f"{name}_v{int(look)}"


def seed_group(name: str) -> str:
    """The name whose random streams an occluder uses: every look of ``hand`` (``hand``, ``hand_v1``,
    ``hand_v2``) draws from the same per-image seeds, so pinning a look never changes the draws."""
    fac = OCCLUDERS.get(name) if name in OCCLUDERS else None
    return (getattr(fac, "base", "") or name) if fac is not None else name


def same_look(a: OccluderFactory, b: OccluderFactory) -> bool:
    """Same drawing: family, category and parameters (not the name, source or look bookkeeping)."""
    return (a.family, a.category, a.config) == (b.family, b.category, b.config)


def register_look(fac: OccluderFactory) -> None:
    """Register the pinned alias ``<name>_v<look>`` of a newest-look factory (opt-in). If that look is
    frozen already (a ``frozen_look`` file), the two definitions must be equal."""
    alias = dataclasses.replace(fac, name=versioned(fac.name, fac.look), in_default=False, base=fac.name)
    if alias.name in OCCLUDERS:
        old = OCCLUDERS.get(alias.name)
        if not same_look(old, alias):
            raise ConfigError(f"{fac.source}: occluder {fac.name!r} differs from its frozen look {fac.look} "
                              f"({getattr(old, 'source', '?')}): a changed look needs a new 'look' number")
        return
    OCCLUDERS.add(alias.name, alias)


def load_frozen_looks(folder: Path) -> list[str]:
    """Register the entries of ``folder``/*.yaml files that say ``frozen_look: N`` as ``<name>_v<N>``
    (opt-in). Returns the names, sorted."""
    names = []
    for path, name, spec in _entries(folder, frozen=True):
        look = spec.pop("_frozen_look")
        spec.pop("look", None)
        fac = _factory(path, versioned(name, look), spec, in_default=False, base=name, look=look)
        register_factory(fac)
        names.append(fac.name)
    return sorted(names)


def read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yamlio.safe_load(fh)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict) or "occluders" not in doc:
        raise ConfigError(f"{path}: expected a mapping with an 'occluders' key")
    return doc


def _entries(folder: Path, frozen: bool = False):
    """(path, name, spec copy) of every entry of ``folder``/*.yaml files that are (``frozen``) or are not
    frozen looks, with the file's ``default`` flag as ``_in_default`` (and ``_frozen_look``)."""
    for path in sorted(Path(folder).glob("*.yaml")):
        doc = read_yaml(path)
        look = doc.get("frozen_look")
        if (look is not None) != frozen:
            continue
        if frozen and (isinstance(look, bool) or not isinstance(look, int) or look < 1):
            raise ConfigError(f"{path}: 'frozen_look' must be an integer >= 1, got {look!r}")
        entries = doc["occluders"]
        in_default = doc.get("default", True)
        if not isinstance(in_default, bool):
            raise ConfigError(f"{path}: 'default' must be true or false")
        if not isinstance(entries, dict):
            raise ConfigError(f"{path}: 'occluders' must map names to definitions")
        for name, spec in entries.items():
            if not isinstance(spec, dict) or "family" not in spec or "category" not in spec:
                raise ConfigError(f"{path}: occluder {name!r} needs 'family' and 'category'")
            yield path, str(name), {**spec, "_in_default": in_default, **({"_frozen_look": look} if frozen else {})}


def _factory(path: Path, name: str, spec: dict, **kw) -> OccluderFactory:
    spec = dict(spec)
    in_default = spec.pop("_in_default")
    fam, cat = spec.pop("family"), spec.pop("category")
    FAMILIES.get(fam)  # unknown family -> ConfigError with close matches
    kw.setdefault("in_default", in_default)
    fac = OccluderFactory(name, fam, cat, spec, source=str(path), **kw)
    try:
        fac()  # validate now, so a bad edit fails at import with the file named
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return fac


def load_definitions(folder: Path) -> list[str]:
    """Register every entry of ``folder``/*.yaml (not sub-folders) under its plain name, and its look
    under ``<name>_v<look>`` (see the module docstring). Returns the plain names, sorted."""
    names = []
    for path, name, spec in _entries(folder):
        look = spec.pop("look", 1)
        if isinstance(look, bool) or not isinstance(look, int) or look < 1:
            raise ConfigError(f"{path}: occluder {name!r}: look must be an integer >= 1, got {look!r}")
        fac = _factory(path, name, spec, base=name, look=look)
        register_factory(fac)
        register_look(fac)
        names.append(name)
    return sorted(names)
