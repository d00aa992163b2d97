"""``EvalConfig``: everything that defines an evaluation run (the eval twin of ``SynthConfig``).

``run_eval(EvalConfig(...))`` (``occbench.bench.evaluate``) turns it into an ``EvalResult``; the CLI
and the examples build one and call ``run_eval``. ``to_dict`` / ``from_dict`` round-trip it; the
results JSON records it under ``config``.

``model`` and ``protocol`` are usually specs (a registered name, a file, ``pkg.module:fn``; a protocol
name or YAML file), but library callers may pass a ready recognizer object or ``Protocol``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "fp16", "bf16")
SEARCH_BACKENDS = ("torch", "faiss", "faiss-ivf", "faiss-hnsw")  # = occbench.search.BACKENDS (no torch import here)


@dataclass
class EvalConfig:
    model: object  # spec string, or a recognizer object (embed / alignment_transform / fingerprint)
    protocol: object  # protocol name, YAML path, or a bench.protocols.Protocol
    arch: str | None = None  # architecture of a plain state dict
    arch_opts: dict = field(default_factory=dict)  # arch / factory keyword arguments (--arch-opt K=V)
    data_root: str | None = None
    pairs: str | None = None  # data overrides (protocol.with_overrides)
    gallery: str | None = None
    probe: str | None = None
    bin: str | None = None
    masked_list: str | None = None  # path,masked CSV (mfr2 / mfr2-synth: real masks, pair types)
    attributes: str | None = None  # attribute label file replacing the protocol's (kind: attributes)
    out: str | None = "results"  # results folder: OUT/<model-name>/<protocol>.json; None: write nothing
    model_name: str | None = None  # name in results [default: from the model spec]
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 128
    workers: int = 0
    limit: int | None = None  # quick run: N pairs (1:1) / about N probes (1:N)
    folds: int | None = None  # 1:1: N contiguous cross-validation folds instead of the protocol's
    variants: tuple[str, ...] | None = None  # only these variants (clean always included)
    cache_dir: str | None = None
    save_scores: bool = False
    plots: bool = True
    allow_unsafe_pickle: bool = False
    search: str = "torch"  # 1:N search backend: torch (exact) | faiss (exact) | faiss-ivf | faiss-hnsw (approximate)
    recall_sample: int = 1000  # approximate search: probes (seeded sample) checked against exact search
    distractors: str | None = None  # 1:N: CSV path[,identity] of distractor images added to the gallery
    distractor_sweep: tuple[int, ...] | None = None  # 1:N: distractor counts for rank-1 / TPIR vs gallery size
    dask: str | None = None  # landmarks and occluded sets on Dask: "local:N" or a scheduler address

    def __post_init__(self):
        for name in ("data_root", "pairs", "gallery", "probe", "bin", "masked_list", "out", "cache_dir", "distractors",
                     "attributes"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, os.fspath(v))
        if isinstance(self.variants, str):
            self.variants = tuple(v.strip() for v in self.variants.split(",") if v.strip())
        elif self.variants is not None:
            self.variants = tuple(str(v) for v in self.variants)
        self.arch_opts = dict(self.arch_opts or {})
        if self.distractor_sweep is not None:
            self.distractor_sweep = parse_sweep(self.distractor_sweep)

    def validate(self) -> "EvalConfig":
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if int(self.batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if int(self.workers) < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.limit is not None and int(self.limit) < 1:
            raise ConfigError(f"limit must be >= 1 (--limit N), got {self.limit}")
        if self.folds is not None and (isinstance(self.folds, bool) or int(self.folds) < 2):
            raise ConfigError(f"folds must be an integer >= 2 (--folds N), got {self.folds!r}")
        if self.variants is not None and not self.variants:
            raise ConfigError("the variant list is empty")
        if self.search not in SEARCH_BACKENDS:
            raise OptionError(f"--search must be one of {', '.join(SEARCH_BACKENDS)}, got {self.search!r}")
        if int(self.recall_sample) < 1:
            raise OptionError(f"recall_sample must be >= 1, got {self.recall_sample}")
        if self.dask is not None:
            from ..distributed import parse_dask

            parse_dask(self.dask)  # ConfigError naming the accepted forms
        if self.distractor_sweep is not None and self.distractors is None:
            raise OptionError("--distractor-sweep needs --distractors list.csv (the images to add to the gallery)")
        return self

    def check_paths(self) -> None:
        """Cheap checks of every path the run needs, before any heavy import (torch, mediapipe):
        a missing model file, data root or list file is reported at once."""
        from ..errors import DataNotFoundError

        for name in ("pairs", "gallery", "probe", "bin", "masked_list", "distractors", "attributes"):
            v = getattr(self, name)
            if v is not None and not Path(v).expanduser().is_file():
                raise DataNotFoundError(f"--{name.replace('_', '-')} file {v} not found")
        if self.data_root is not None and not Path(self.data_root).expanduser().is_dir():
            raise DataNotFoundError(f"data root {self.data_root} is not a folder (--data-root)")
        spec = self.model
        if isinstance(spec, (str, os.PathLike)) and _looks_like_file(str(spec)):
            p = Path(spec).expanduser()
            if not p.is_file():
                raise DataNotFoundError(f"model file {spec} not found"
                                        + (" (it is a folder)" if p.is_dir() else ""))

    def model_spec(self) -> str:
        return self.model if isinstance(self.model, str) else os.fspath(self.model) \
            if isinstance(self.model, os.PathLike) else f"<{type(self.model).__name__} object>"

    def protocol_spec(self) -> str:
        p = self.protocol
        if isinstance(p, (str, os.PathLike)):
            return os.fspath(p)
        return getattr(p, "name", repr(p))

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["model"] = self.model_spec()
        d["protocol"] = self.protocol_spec()
        if d["variants"] is not None:
            d["variants"] = list(d["variants"])
        if d["distractor_sweep"] is not None:
            d["distractor_sweep"] = list(d["distractor_sweep"])
        d["arch_opts"] = dict(self.arch_opts)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EvalConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown eval config fields: {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "EvalConfig":
        return cls.from_dict(json.loads(text))


_MODEL_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".onnx", ".bin", ".dat", ".ckpt", ".safetensors", ".zip", ".tar")


def _looks_like_file(spec: str) -> bool:
    """A model spec that names a file (a path or a model-file suffix), not a registered name or pkg.mod:fn."""
    if ":" in spec and not os.path.splitdrive(spec)[0]:
        return False  # pkg.module:fn
    return "/" in spec or os.sep in spec or spec.lower().endswith(_MODEL_SUFFIXES)


class OptionError(ConfigError):
    """An option value that does not apply (or not to this protocol): the CLI reports it as a usage error."""


def parse_sweep(value) -> tuple[int, ...]:
    """'10,100,1000' (or a sequence) -> (10, 100, 1000): distinct integers >= 0, ascending."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = set()
    for it in items:
        t = str(it).strip().replace("_", "")
        if not t:
            continue
        try:
            n = int(t)
        except ValueError:
            raise OptionError(f"--distractor-sweep takes distractor counts like 10,100,1000; {it!r} is not "
                              "an integer") from None
        if n < 0:
            raise OptionError(f"--distractor-sweep counts must be >= 0, got {n}")
        out.add(n)
    if not out:
        raise OptionError("--distractor-sweep needs at least one distractor count, e.g. 10,100,1000")
    return tuple(sorted(out))


def parse_arch_opts(items) -> dict:
    """['num_features=512', 'dropout=0.1', 'fp16=true'] -> {'num_features': 512, 'dropout': 0.1, 'fp16': True}
    (values read as YAML scalars)."""
    import yaml

    from ..io import yamlio

    out: dict = {}
    for it in items or ():
        key, sep, val = str(it).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"arch option {it!r} must be KEY=VALUE with KEY a Python identifier")
        try:
            v = yamlio.safe_load(val) if val.strip() else ""
        except yaml.YAMLError:
            v = val
        if isinstance(v, (dict, list)) or v is None and val.strip():
            v = val  # only scalars; anything else stays the literal text
        out[key] = v
    return out
