"""YAML reading with libyaml's C parser when PyYAML was built with it: the same documents as
``yaml.safe_load`` (a test checks every shipped file), ~10x faster. Loading the occluder library at
import cost ~0.3 s of pure-Python parsing in every process (the CLI, each joblib / Dask worker)."""
from __future__ import annotations

import yaml

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(stream):
    """``yaml.safe_load`` through the fastest safe loader available."""
    return yaml.load(stream, Loader=LOADER)  # noqa: S506 - a SafeLoader (C or Python)
