"""Occluders: albumentations-style transforms that draw a face occluder and its mask.

    occ = create_occluder("surgical_mask")
    res = occ(image, landmarks, rng=rng_for(seed, key), scale=1.0, placement="anchored")
    res.image, res.mask, res.params

Definitions (geometry in the 112x112 face frame, colours, ranges) live in the top-level
``occluders/*.yaml``; user RGBA images are added with ``load_occluder_dir``. See occluders/README.md.
"""
from __future__ import annotations

import json

from ...errors import ConfigError
from ...paths import resource_dir
from . import blocks, glasses, hand, hats, masks, part_blocks, rgba, scarf  # noqa: F401  (registers families)
from .base import (ALPHA_OCCLUDED, CATEGORIES, FAMILIES, MIN_SIDE_PX, PLACEMENTS, OcclusionResult, Occluder,
                   Part)
from .definitions import (OCCLUDERS, OccluderFactory, load_definitions, load_frozen_looks, register_factory,
                          register_look, same_look, seed_group, versioned)
from .rgba import FRAME_POINTS, read_asset_dir

__all__ = ["OCCLUDERS", "FAMILIES", "CATEGORIES", "PLACEMENTS", "ALPHA_OCCLUDED", "MIN_SIDE_PX", "FRAME_POINTS",
           "Occluder", "OcclusionResult", "Part", "OccluderFactory", "create_occluder", "shared_occluder",
           "list_occluders", "default_occluders", "load_occluder_dir", "seed_group", "versioned"]


def create_occluder(name: str, **overrides) -> Occluder:
    """Build a registered occluder; ``overrides`` replace top-level definition keys (validated)."""
    return OCCLUDERS.get(name)(**overrides)


_SHARED: dict[str, Occluder] = {}


def shared_occluder(name: str, **overrides) -> Occluder:
    """``create_occluder``, but one instance per definition per process, so that its caches (geometry,
    sprites, bank) serve every run and worker batch in the process. Caches never change results."""
    occ = create_occluder(name, **overrides)
    key = json.dumps([type(occ).__name__, occ.describe()], sort_keys=True, default=str)
    if key not in _SHARED:
        if len(_SHARED) >= 256:
            _SHARED.pop(next(iter(_SHARED)))
        _SHARED[key] = occ
    return _SHARED[key]


def list_occluders(pattern: str = "*") -> list[str]:
    return OCCLUDERS.names(pattern)


def default_occluders() -> list[str]:
    """The occluders a run draws from when it names none: every registered one except opt-in families
    (YAML files with ``default: false``, e.g. the fixed face-frame regions of FROM's region test)."""
    return [n for n in OCCLUDERS.names("*") if getattr(OCCLUDERS.get(n), "in_default", True)]


def load_occluder_dir(path) -> list[str]:
    """Register the RGBA images listed in ``path``/occluders.yaml; returns their names.

    Each image is loaded and its anchor validated now (ConfigError / DataNotFoundError naming the
    entry). Loading the same folder again is a no-op; a name clash with a different definition is
    an error. See occluders/README.md for the metadata format.
    """
    facs = []
    for e in read_asset_dir(path):
        fac = OccluderFactory(e["name"], "rgba", e["category"], e["config"], source=e["source"])
        try:
            fac()
        except ConfigError as err:
            raise ConfigError(f"{e['source']}: {err}") from None
        old = OCCLUDERS.get(fac.name) if fac.name in OCCLUDERS else None
        if old is not None and not same_look(old, fac):
            raise ConfigError(f"{e['source']}: occluder name {fac.name!r} is already defined by "
                              f"{getattr(old, 'source', '?')}: choose another name")
        facs.append((fac, old is not None))
    for fac, known in facs:  # all checked first: a bad entry registers nothing
        if not known:  # the same definition again (also the built-in set): nothing to do
            register_factory(fac)
    return [f.name for f, _ in facs]


def _load_builtin_assets(folder) -> None:
    """The project-made RGBA set is look 1 of its names: each is registered as ``<name>_v1`` and, unless
    a top-level definition gives that name a newer look, under its plain name too."""
    for e in read_asset_dir(folder):
        fac = OccluderFactory(e["name"], "rgba", e["category"], e["config"], source=e["source"], base=e["name"])
        fac()
        if fac.name not in OCCLUDERS:
            register_factory(fac)
            register_look(fac)
        else:  # superseded by a newer look: keep look 1 pinned
            register_factory(OccluderFactory(versioned(fac.name, 1), "rgba", e["category"], e["config"],
                                             source=e["source"], in_default=False, base=fac.name))


_RESOURCES = resource_dir("occluders")
load_frozen_looks(_RESOURCES)
load_definitions(_RESOURCES)
if (_RESOURCES / "assets" / "occluders.yaml").is_file():
    _load_builtin_assets(_RESOURCES / "assets")
