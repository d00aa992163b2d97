"""Results files: ``RESULTS/<model-name>/<protocol>.json`` (+ scores Parquet and plots beside it).

Schema (version 1; extend, never break). Top-level keys:

- ``schema_version``, ``occbench_version``, ``created`` (UTC ISO time), ``seed``
- ``protocol``: name, version, hash, kind, description, data identity, subset (--limit-pairs), ...
- ``model``: name, spec, arch, fingerprint, preprocess, precision
- ``main_score``: {variant, metric, value}
- ``variants``: variant name -> {"metrics": {snake_case names: accuracy, accuracy_std, auc, eer,
  tar_at_far_1e-3, ... | rank1, rank5, tpir_at_fpir_1e-2, ...}, "n_pairs" | "n_probes", "n_scored",
  "n_fte", "spec", ...}
- ``counts``, ``failures`` (every image without an embedding, with stage and reason), ``synth``,
  ``cache``, ``timing``, ``environment``, ``files`` (scores and plots, relative to the JSON's folder)

Run-dependent keys (``VOLATILE_KEYS``: created, timing, environment, cache) are isolated at the top
level; everything else is a deterministic function of the inputs, seed and version:
``reproducible_view`` drops the volatile keys, and scores Parquet files are byte-identical across runs.
"""
from __future__ import annotations

import json
import os
import platform
import re
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..errors import ConfigError, DataNotFoundError
from ..io.atomic import atomic_write_json, atomic_write_table

SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema_version", "occbench_version", "protocol", "model", "variants", "timing", "created",
                 "seed", "environment")
VOLATILE_KEYS = ("created", "timing", "environment", "cache")
_SAFE = re.compile(r"[^A-Za-z0-9_.@+\-]+")


def safe_name(name: str) -> str:
    """A file-name-safe form of a model / protocol name."""
    s = _SAFE.sub("_", str(name)).strip("._")
    return s or "model"


def variant_filename(variant: str) -> str:
    """'N-O/surgical_mask@s2.0' -> 'N-O__surgical_mask@s2.0'."""
    return safe_name(variant.replace("/", "__"))


def result_path(results_dir: str | os.PathLike, model_name: str, protocol_name: str) -> Path:
    return Path(results_dir) / safe_name(model_name) / f"{safe_name(protocol_name)}.json"


def default_model_name(spec: str, recognizer=None) -> str:
    """Registered name as is; a file -> its stem; pkg.mod:fn -> 'pkg.mod-fn'."""
    p = Path(str(spec))
    if p.suffix and (p.is_file() or os.sep in str(spec) or "/" in str(spec)):
        return safe_name(p.stem)
    return safe_name(str(spec).replace(":", "-"))


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def model_block(recognizer, info: dict | None) -> dict:
    info = dict(info or {})
    pp = getattr(recognizer, "preprocess", None)
    return {
        "name": info.get("name") or safe_name(getattr(recognizer, "name", "model")),
        "spec": info.get("spec"),
        "arch": info.get("arch"),
        "precision": info.get("precision"),
        "fingerprint": recognizer.fingerprint(),
        "preprocess": pp.to_dict() if pp is not None else None,
    }


def environment(info: dict | None, recognizer=None) -> dict:
    import numpy as np

    requested = (info or {}).get("device")
    actual = getattr(recognizer, "device", None)
    env = {"python": platform.python_version(), "platform": platform.platform(), "numpy": np.__version__,
           "device": str(actual) if actual is not None else (requested or "cpu"), "requested_device": requested}
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda_available"] = bool(torch.cuda.is_available())
        if str(env["device"]).startswith("cuda") and torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        env["torch"] = None
    return env


def reproducible_view(results: dict) -> dict:
    """The results without the run-dependent keys: equal for equal inputs, seed and version."""
    return {k: v for k, v in results.items() if k not in VOLATILE_KEYS}


def _clean_floats(obj):
    """NaN / inf -> None, so the JSON is strict (json.dumps would write NaN)."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_floats(v) for v in obj]
    try:
        import numpy as np

        if isinstance(obj, np.floating):
            return _clean_floats(float(obj))
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.bool_):
            return bool(obj)
    except ImportError:  # pragma: no cover
        pass
    return obj


def write_outputs(results: dict, out_dir: Path, score_tables: dict | None, curves: dict | None) -> Path:
    """Write scores (optional), plots (optional), then the JSON last (atomically). Returns the JSON path."""
    name = safe_name(results["protocol"]["name"])
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[str]] = {"scores": [], "plots": []}
    if score_tables:
        sdir = out_dir / f"{name}.scores"
        sdir.mkdir(exist_ok=True)
        wanted = {f"{variant_filename(v)}.parquet": df for v, df in score_tables.items()}
        for stale in sdir.glob("*.parquet"):
            if stale.name not in wanted:
                stale.unlink()
        for fn, df in wanted.items():
            atomic_write_table(df, sdir / fn)
            files["scores"].append(f"{name}.scores/{fn}")
    if curves:
        from .plots import make_plots

        files["plots"] = [p.name for p in make_plots(results, curves, out_dir / name)]
    results["files"] = files
    results.update(_clean_floats({k: results[k] for k in results}))
    path = out_dir / f"{name}.json"
    atomic_write_json(path, results)
    return path


def validate_results(d: dict, where: str = "results") -> dict:
    """Check the contract keys of a results dict (as loaded from JSON)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise ConfigError(f"{where}: not an occbench results file (missing {', '.join(missing)})")
    if not isinstance(d["schema_version"], int) or d["schema_version"] > SCHEMA_VERSION:
        raise ConfigError(f"{where}: schema_version {d['schema_version']!r} is newer than this occbench "
                          f"({__version__}, schema {SCHEMA_VERSION}); upgrade occbench")
    for k in ("name", "version", "hash"):
        if k not in d["protocol"]:
            raise ConfigError(f"{where}: protocol.{k} missing")
    for k in ("name", "fingerprint"):
        if k not in d["model"]:
            raise ConfigError(f"{where}: model.{k} missing")
    if not isinstance(d["variants"], dict):
        raise ConfigError(f"{where}: variants must be a mapping")
    for v, entry in d["variants"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("metrics"), dict):
            raise ConfigError(f"{where}: variant {v!r} has no metrics mapping")
    return d


def load_results(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"results file {p} not found")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{p} is not valid JSON: {e}") from None
    return validate_results(d, str(p))
