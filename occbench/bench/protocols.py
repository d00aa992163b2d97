"""Benchmark protocols: metadata in YAML, one engine (mteb / lm-eval style).

A protocol is a YAML file in ``protocols/`` (or any path). ``include:`` (a file or a list of files,
relative to the including file, else a built-in base such as ``_lfw.yaml``) pulls in base configs that are deep-merged underneath (the including
file wins; lists are replaced, not concatenated). Files whose name starts with ``_`` are bases only and
are not listed as protocols.

Keys (see protocols/README.md for the full reference):

- ``name``, ``kind`` (verification | identification | all-to-all | attributes), ``description``, ``version``
- ``data``: ``format`` (lfw-pairs | pairs-csv | bin | lfw-identification | gallery-probe) and the
  root-relative files it needs (``images``, ``pairs``, ``bin``, ``gallery``, ``probe``; a list gives
  alternatives tried in order), ``folds`` (``file``: the pairs' own fold ids; or an int: contiguous folds)
- ``landmarks``: ``method`` (mediapipe | template | auto | file) + options, computed on the clean image
- ``occlusion`` (optional): occluders, scales, headline scale/placement, modes (N-O, O-O) and
  breakdowns; expanded into explicit variants by :meth:`Protocol.variants`
- ``metrics``: ``far`` targets (verification), ``fpir`` targets and ``max_rank`` (identification)
- ``main_score``: ``{variant, metric}``, the headline number of the protocol

``protocol_hash`` = sha256 of the resolved protocol content and of the identity of its data files
(the sha256 of pairs / list / .bin files, or of the sorted image-key list for folder-built sets).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, DataNotFoundError
from ..io import yamlio
from ..paths import resource_dir, safe_join

KINDS = ("verification", "identification", "all-to-all", "attributes")
FORMATS = {
    "lfw-pairs": "verification",
    "calfw-pairs": "verification",
    "pairs-csv": "verification",
    "bin": "verification",
    "lfw-identification": "identification",
    "gallery-probe": "identification",
    "identity-folders": "all-to-all",
    # face attributes: an image folder + a label file read as published (occbench.io.attributes)
    "attributes-csv": "attributes",
    "celeba-attributes": "attributes",
    "lfw-attributes": "attributes",
}
ATTRIBUTE_LAYOUTS = {"attributes-csv": "csv", "celeba-attributes": "celeba", "lfw-attributes": "lfw"}
LANDMARK_METHODS = ("mediapipe", "template", "auto", "file", "aligned")
# N-O: second image / probes occluded; O-O: both images; mask-unmasked: every image the masked list
# marks unmasked gets the occluder, real-masked images stay as published (mfr2-synth)
MODES = {"verification": ("N-O", "O-O", "mask-unmasked"), "identification": ("N-O",), "all-to-all": ("N-O",),
         "attributes": ("occluded",)}  # attributes: single images, each clean or occluded
PLACEMENTS = ("anchored", "free")
BREAKDOWNS = ("scale", "occluder", "placement")
VERIFICATION_METRICS = ("accuracy", "accuracy_std", "auc", "eer")
IDENTIFICATION_METRICS = ("rank1", "rank5")

TOP_KEYS = {"include", "name", "kind", "description", "version", "data", "landmarks", "occlusion", "metrics",
            "main_score", "about", "crop"}  # crop: bench.crops (absent = each model's own crop)
# ext: the image extension named in messages (any extension found on disk is read)
DATA_KEYS = {"format", "images", "pairs", "bin", "gallery", "probe", "folds", "min_images", "masked_list", "ext",
             "attributes"}
OCCLUSION_KEYS = {"occluders", "scales", "headline", "modes", "breakdown", "seed", "k", "jpeg_quality"}
SHOW_ORDER = ("name", "kind", "version", "description", "about", "data", "landmarks", "occlusion", "metrics",
              "main_score")
FILE_FIELDS = ("pairs", "bin", "gallery", "probe", "masked_list", "attributes")  # data files CLI flags can replace
MASKED_LIST_FORMATS = ("lfw-pairs", "calfw-pairs", "pairs-csv", "identity-folders")  # accept --masked-list
_PROBE_ROOT = Path("/occbench-data-root/x")  # a stand-in root for checking relative paths early

DEFAULTS: dict[str, Any] = {
    "version": 1,
    "description": "",
    "landmarks": {"method": "auto"},
    "metrics": {"far": [1e-2, 1e-3, 1e-4], "fpir": [1e-2, 1e-1], "max_rank": 20},
}
ALL_TO_ALL_FAR = [1e-4, 1e-5, 1e-6]  # the MFR track's operating points (default far of all-to-all)
OCCLUSION_DEFAULTS: dict[str, Any] = {
    "seed": 0, "k": 5, "jpeg_quality": 95, "scales": [2.0],
    "headline": {"placement": "anchored"}, "breakdown": [],
}


# ------------------------------------------------------------------------------- variants


def scale_tag(s: float) -> str:
    """Scale as written in variant names: 2 -> '2.0', 1.5 -> '1.5', 1.25 -> '1.25'."""
    t = f"{float(s):g}"
    return t if any(c in t for c in ".e") else t + ".0"


@dataclass(frozen=True)
class SynthRun:
    """One ``run_synth`` call of a protocol; its synth variants are named by the synth pipeline."""

    name: str
    placement: str
    scales: tuple[float, ...]
    per_scale: bool
    per_occluder: bool

    def synth_variant(self, occluder: str | None, scale: float) -> str:
        from ..synth.scales import format_scale

        if self.per_occluder and self.per_scale:
            return f"{occluder}@s{format_scale(scale)}"
        if self.per_occluder:
            return str(occluder)
        if self.per_scale:
            return f"s{format_scale(scale)}"
        return "main"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scales"] = list(self.scales)
        return d


@dataclass(frozen=True)
class VariantSpec:
    """One evaluated condition. ``mode``: clean | N-O (first image / probe occluded... see README) | O-O."""

    name: str
    mode: str
    group: str  # clean | headline | scale | occluder | placement
    description: str
    run: str | None = None  # SynthRun.name (None: clean)
    synth_variant: str | None = None
    occluder: str | None = None  # None: one occluder drawn per image from the protocol's list
    scale: float | None = None
    placement: str | None = None

    @property
    def occluded(self) -> bool:
        return self.mode != "clean"

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------- protocol


@dataclass
class Protocol:
    """A resolved, validated protocol. ``raw`` is JSON-able; ``overrides`` holds user-given data files
    (``--pairs`` etc., absolute paths) which replace the protocol's root-relative candidates."""

    raw: dict
    path: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)

    name = property(lambda self: self.raw["name"])
    kind = property(lambda self: self.raw["kind"])
    version = property(lambda self: self.raw["version"])
    description = property(lambda self: self.raw["description"])
    data = property(lambda self: self.raw["data"])
    landmarks = property(lambda self: self.raw["landmarks"])
    occlusion = property(lambda self: self.raw.get("occlusion"))
    metrics = property(lambda self: self.raw["metrics"])
    main_score = property(lambda self: self.raw["main_score"])
    crop = property(lambda self: self.raw.get("crop", "model"))  # bench.crops.CROPS

    @property
    def seed(self) -> int:
        return int(self.occlusion["seed"]) if self.occlusion else 0

    def with_overrides(self, **files: str | os.PathLike | None) -> "Protocol":
        """Replace data files with user paths (``pairs=``, ``bin=``, ``gallery=``, ``probe=``)."""
        over = dict(self.overrides)
        for k, v in files.items():
            if v is None:
                continue
            if k not in FILE_FIELDS:
                raise ConfigError(f"unknown data override {k!r}; known: {', '.join(FILE_FIELDS)}")
            if k == "masked_list":
                if self.data["format"] not in MASKED_LIST_FORMATS:
                    raise ConfigError(f"protocol {self.name!r} (data format {self.data['format']}) takes no "
                                      f"masked list; formats that do: {', '.join(MASKED_LIST_FORMATS)}")
            elif k not in _format_files(self.data["format"]):
                raise ConfigError(f"protocol {self.name!r} (data format {self.data['format']}) does not read a "
                                  f"{k} file; it reads: {', '.join(_format_files(self.data['format']))}")
            p = Path(v).expanduser()
            if not p.is_file():
                raise DataNotFoundError(f"--{k} {v}: no such file")
            over[k] = str(p.resolve())
        return Protocol(copy.deepcopy(self.raw), self.path, over)

    def synth_runs(self) -> list[SynthRun]:
        occ = self.occlusion
        if not occ:
            return []
        head = occ["headline"]
        runs = [SynthRun("sweep", head["placement"], tuple(occ["scales"]), True, False)]
        bd = occ["breakdown"]
        if "occluder" in bd:
            runs.append(SynthRun("by-occluder", head["placement"], (head["scale"],), True, True))
        for pl in _placements(bd):
            if pl != head["placement"]:
                runs.append(SynthRun(f"placement-{pl}", pl, (head["scale"],), True, False))
        return runs

    def variants(self) -> list[VariantSpec]:
        """Explicit variants, in report order: clean, then per mode the headline and its breakdowns."""
        out = [VariantSpec("clean", "clean", "clean", "both images clean" if self.kind == "verification"
                           else "images clean (as published)" if self.kind == "attributes"
                           else "gallery and probes clean (as published)")]
        occ = self.occlusion
        if not occ:
            return out
        head = occ["headline"]
        hs, hp = head["scale"], head["placement"]
        runs = {r.name: r for r in self.synth_runs()}
        sweep = runs["sweep"]
        for mode in occ["modes"]:
            who = _who(mode, self.kind)
            out.append(VariantSpec(
                mode, mode, "headline", f"{who} occluded, s={scale_tag(hs)}, {hp}, one occluder per image "
                f"drawn from the protocol's list", "sweep", sweep.synth_variant(None, hs), None, hs, hp))
            if "scale" in occ["breakdown"]:
                for s in occ["scales"]:
                    if s == hs:
                        continue  # that is the headline variant itself
                    out.append(VariantSpec(
                        f"{mode}@s{scale_tag(s)}", mode, "scale", f"{who} occluded, s={scale_tag(s)}, {hp}, "
                        "same occluder draws as the headline", "sweep", sweep.synth_variant(None, s), None, s, hp))
            if "occluder" in occ["breakdown"]:
                r = runs["by-occluder"]
                for o in occ["occluders"]:
                    out.append(VariantSpec(
                        f"{mode}/{o}@s{scale_tag(hs)}", mode, "occluder", f"{who} occluded by {o}, "
                        f"s={scale_tag(hs)}, {hp}", r.name, r.synth_variant(o, hs), o, hs, hp))
            for pl in _placements(occ["breakdown"]):
                if pl == hp:
                    continue
                r = runs[f"placement-{pl}"]
                out.append(VariantSpec(
                    f"{mode}/{pl}@s{scale_tag(hs)}", mode, "placement", f"{who} occluded, s={scale_tag(hs)}, "
                    f"{pl} placement (FROM-style: centre uniform over the face frame)" if pl == "free" else
                    f"{who} occluded, s={scale_tag(hs)}, {pl} placement", r.name, r.synth_variant(None, hs),
                    None, hs, pl))
        return out

    def variant(self, name: str) -> VariantSpec:
        for v in self.variants():
            if v.name == name:
                return v
        raise ConfigError(f"protocol {self.name!r} has no variant {name!r}; variants: "
                          f"{', '.join(v.name for v in self.variants())}")

    def resolved(self) -> dict:
        """The resolved protocol with its expanded variants and synth runs (what ``--show`` prints)."""
        raw = copy.deepcopy(self.raw)
        d = {k: raw.pop(k) for k in SHOW_ORDER if k in raw}
        d.update(raw)
        if self.overrides:
            d["data_overrides"] = dict(self.overrides)
        d["variants"] = [v.to_dict() for v in self.variants()]
        d["synth_runs"] = [r.to_dict() for r in self.synth_runs()]
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.resolved(), sort_keys=False, default_flow_style=False, width=110)

    def expects(self, root: str = "DATA") -> str:
        """Where the data is expected, for error messages."""
        d = self.data
        fmt = d["format"]
        parts = []
        images = " or ".join(f"{root}/{i}" for i in _as_list(d["images"]))
        if fmt in ("lfw-pairs", "lfw-identification"):
            ext = d.get("ext", "jpg")
            layout = f"<Name>/<Name>_NNNN.{ext}"
            parts.append(" or ".join(f"{root}/{_join(i, layout)}" for i in _as_list(d["images"])))
        elif fmt == "calfw-pairs":
            parts.append(f"images under {images}")
        elif fmt == "identity-folders":
            parts.append(" or ".join(f"{root}/{_join(i, '<identity>/<image>')}" for i in _as_list(d["images"])))
        elif fmt in ATTRIBUTE_LAYOUTS:
            parts.append("images under " + " or ".join(root if i in (".", "") else f"{root}/{i}"
                                                       for i in _as_list(d["images"])))
        elif fmt in ("pairs-csv", "gallery-probe"):
            parts.append(f"images under {root}/{d['images']}".rstrip("/.") if d["images"] not in (".", "")
                         else f"images under {root}")
        for f in _format_files(fmt):
            cands = _as_list(d.get(f))
            if cands:
                parts.append(" or ".join(f"{root}/{c}" for c in cands))
        flags = ["--data-root"] + [f"--{f}" for f in _format_files(fmt)]
        about = f"{self.raw['about']} " if self.raw.get("about") else ""
        return (f"{about}{self.name} expects {' and '.join(parts) or 'its data files'}; "
                f"pass {' or '.join(flags)}")


def _who(mode: str, kind: str) -> str:
    if kind in ("identification", "all-to-all"):
        return "probes"
    if kind == "attributes":
        return "every image"
    return {"N-O": "second image of each pair", "O-O": "both images",
            "mask-unmasked": "every image the masked list marks unmasked"}[mode]


def _placements(breakdown: list) -> list[str]:
    return [b.split(":", 1)[1] for b in breakdown if b.startswith("placement:")]


def _join(a: str, b: str) -> str:
    return b if a in (".", "") else f"{a.rstrip('/')}/{b}"


def _as_list(v) -> list:
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _format_files(fmt: str) -> tuple[str, ...]:
    return {"lfw-pairs": ("pairs",), "calfw-pairs": ("pairs",), "pairs-csv": ("pairs",), "bin": ("bin",),
            "lfw-identification": (), "gallery-probe": ("gallery", "probe"), "identity-folders": (),
            **{f: ("attributes",) for f in ATTRIBUTE_LAYOUTS}}[fmt]


# ------------------------------------------------------------------------------- loading


def protocols_dir() -> Path:
    return resource_dir("protocols")


def _read_yaml(path: Path) -> dict:
    try:
        data = yamlio.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"protocol file {path} is not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a protocol file: protocols are UTF-8 YAML text (see protocols/README.md)"
                          ) from None
    except OSError as e:
        raise DataNotFoundError(f"cannot read protocol file {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a protocol file: it must be a YAML mapping (name, kind, data, ...; see "
                          f"protocols/README.md), got {type(data).__name__}")
    return data


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: nested mappings merge, everything else (lists too) is replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_includes(path: str | os.PathLike, _stack: tuple[Path, ...] = ()) -> dict:
    """Read a protocol YAML with its ``include:`` chain merged (bases first, the file itself last)."""
    path = Path(path).resolve()
    if path in _stack:
        chain = " -> ".join(p.name for p in _stack + (path,))
        raise ConfigError(f"protocol include cycle: {chain}")
    data = _read_yaml(path)
    merged: dict = {}
    for inc in _as_list(data.pop("include", None)):
        if not isinstance(inc, str):
            raise ConfigError(f"{path}: include entries must be file names, got {inc!r}")
        # relative to the including file's folder (never escaping it), else a built-in base
        inc_path = safe_join(path.parent, inc)
        if not inc_path.is_file():
            inc_path = safe_join(protocols_dir(), inc)
        if not inc_path.is_file():
            raise DataNotFoundError(f"{path}: included file {inc!r} not found in {path.parent} "
                                    f"nor among the built-in protocols ({protocols_dir()})")
        merged = deep_merge(merged, resolve_includes(inc_path, _stack + (path,)))
    return deep_merge(merged, data)


def validate_protocol(raw: dict, where: str = "protocol") -> dict:
    """Check a merged protocol mapping and fill defaults. Returns a new, JSON-able dict."""
    d = deep_merge(DEFAULTS, raw)
    if raw.get("kind") == "all-to-all" and "far" not in (raw.get("metrics") or {}):
        d["metrics"]["far"] = list(ALL_TO_ALL_FAR)
    unknown = set(d) - TOP_KEYS - {"include"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(TOP_KEYS))}")
    d.pop("include", None)
    for key in ("name", "kind", "data", "main_score"):
        if key not in d:
            raise ConfigError(f"{where}: missing required key {key!r}")
    name = d["name"]
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"{where}: name must be a non-empty string of letters, digits, '-', '_', '.'; got {name!r}")
    if d["kind"] not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, got {d['kind']!r}")
    if not isinstance(d["version"], int) or d["version"] < 1:
        raise ConfigError(f"{where}: version must be a positive integer, got {d['version']!r}")
    if not isinstance(d["description"], str):
        raise ConfigError(f"{where}: description must be a string")
    if not isinstance(d.get("about", ""), str):
        raise ConfigError(f"{where}: about must be a string (what the data set is, shown when it is missing)")
    if "about" in d:
        d["about"] = " ".join(d["about"].split())
    d["description"] = " ".join(d["description"].split())
    _validate_data(d, where)
    _validate_landmarks(d, where)
    _validate_metrics(d, where)
    if "crop" in d:  # not defaulted: protocols without it keep their hash
        from .crops import CROPS

        if d["crop"] not in CROPS:
            raise ConfigError(f"{where}: crop must be one of {', '.join(CROPS)}, got {d['crop']!r}")
    if d.get("occlusion") is not None:
        d["occlusion"] = _validate_occlusion(d["occlusion"], d["kind"], where)
    else:
        d.pop("occlusion", None)
    proto = Protocol(d)
    names = [v.name for v in proto.variants()]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: variant names collide: {names}")
    ms = d["main_score"]
    if not (isinstance(ms, dict) and set(ms) == {"variant", "metric"}):
        raise ConfigError(f"{where}: main_score must be {{variant: NAME, metric: NAME}}, got {ms!r}")
    if ms["variant"] not in names:
        raise ConfigError(f"{where}: main_score variant {ms['variant']!r} is not one of {', '.join(names)}")
    allowed = metric_names(d)
    if ms["metric"] not in allowed:
        raise ConfigError(f"{where}: main_score metric {ms['metric']!r} is not one of {', '.join(allowed)}")
    return d


def metric_names(d: dict) -> list[str]:
    m = d["metrics"]
    if d["kind"] == "all-to-all":
        return [far_key("tar_at_far", f) for f in m["far"]]
    if d["kind"] == "attributes":
        from ..metrics.names import ATTRIBUTES

        return list(ATTRIBUTES)
    if d["kind"] == "verification":
        return list(VERIFICATION_METRICS) + [far_key("tar_at_far", f) for f in m["far"]]
    return list(IDENTIFICATION_METRICS) + [far_key("tpir_at_fpir", f) for f in m["fpir"]]


def far_key(prefix: str, value: float) -> str:
    """``far_key("tar_at_far", 0.001) -> "tar_at_far_1e-3"``."""
    mant, _, exp = f"{float(value):e}".partition("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{prefix}_{mant}e{int(exp)}"


def _validate_data(d: dict, where: str) -> None:
    data = d["data"]
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: data must be a mapping")
    unknown = set(data) - DATA_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown data keys {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(DATA_KEYS))}")
    fmt = data.get("format")
    if fmt not in FORMATS:
        raise ConfigError(f"{where}: data.format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if FORMATS[fmt] != d["kind"]:
        raise ConfigError(f"{where}: data.format {fmt} is for {FORMATS[fmt]} protocols, but kind is {d['kind']}")
    data.setdefault("images", ".")
    for f in ("images",) + FILE_FIELDS:
        for rel in _as_list(data.get(f)):
            if not isinstance(rel, str) or not rel:
                raise ConfigError(f"{where}: data.{f} entries must be non-empty relative paths, got {rel!r}")
            safe_join(_PROBE_ROOT, rel)  # refuses absolute paths and '..' escapes up front
    ml = data.get("masked_list")
    if ml is not None and fmt not in MASKED_LIST_FORMATS:
        raise ConfigError(f"{where}: data.masked_list is only read by formats {', '.join(MASKED_LIST_FORMATS)}")
    if d["kind"] in ("identification", "all-to-all"):
        data.pop("folds", None)
        return _validate_identification_data(data, fmt, where)
    if d["kind"] == "attributes":
        data.pop("folds", None)
        if not _as_list(data.get("attributes")):
            raise ConfigError(f"{where}: data.attributes must name the attribute label file (root-relative; a list "
                              "gives alternatives)")
        return
    folds = data.setdefault("folds", "auto" if fmt == "pairs-csv" else "file")
    if not (folds in ("file", "auto") or (isinstance(folds, int) and not isinstance(folds, bool) and folds >= 2)):
        raise ConfigError(f"{where}: data.folds must be 'file', 'auto' or an integer >= 2, got {folds!r}")


def _validate_identification_data(data: dict, fmt: str, where: str) -> None:
    if fmt == "lfw-identification":
        mi = data.setdefault("min_images", 2)
        if not isinstance(mi, int) or isinstance(mi, bool) or mi < 2:
            raise ConfigError(f"{where}: data.min_images must be an integer >= 2, got {mi!r}")


def _validate_landmarks(d: dict, where: str) -> None:
    lm = d["landmarks"]
    if not isinstance(lm, dict) or lm.get("method") not in LANDMARK_METHODS:
        raise ConfigError(f"{where}: landmarks.method must be one of {', '.join(LANDMARK_METHODS)}, got {lm!r}")
    if lm["method"] == "file" and not isinstance(lm.get("path"), str):
        raise ConfigError(f"{where}: landmarks method 'file' needs path: (a landmarks table under the data root)")
    if lm["method"] == "aligned":
        from ..face.geometry import get_template

        try:
            get_template(lm.setdefault("template", "arcface-112"))
        except ConfigError as e:
            raise ConfigError(f"{where}: landmarks.template: {e}") from None


def _validate_metrics(d: dict, where: str) -> None:
    m = d["metrics"]
    for key in ("far", "fpir"):
        vals = m.get(key)
        if not (isinstance(vals, list) and vals and all(isinstance(v, (int, float)) and 0 < v < 1 for v in vals)):
            raise ConfigError(f"{where}: metrics.{key} must be a non-empty list of rates in (0, 1), got {vals!r}")
        m[key] = [float(v) for v in vals]
    mr = m.get("max_rank")
    if not isinstance(mr, int) or mr < 1:
        raise ConfigError(f"{where}: metrics.max_rank must be an integer >= 1, got {mr!r}")
    unknown = set(m) - {"far", "fpir", "max_rank"}
    if unknown:
        raise ConfigError(f"{where}: unknown metrics keys {', '.join(sorted(unknown))}")
    keep = ("fpir", "max_rank") if d["kind"] == "identification" else () if d["kind"] == "attributes" else ("far",)
    d["metrics"] = {k: m[k] for k in keep}


def _validate_occlusion(occ: Any, kind: str, where: str) -> dict:
    if not isinstance(occ, dict):
        raise ConfigError(f"{where}: occlusion must be a mapping (or null for a clean-only protocol)")
    o = deep_merge(OCCLUSION_DEFAULTS, occ)
    unknown = set(o) - OCCLUSION_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown occlusion keys {', '.join(sorted(unknown))}; "
                          f"allowed: {', '.join(sorted(OCCLUSION_KEYS))}")
    occs = o.get("occluders")
    if not (isinstance(occs, list) and occs and all(isinstance(x, str) and x for x in occs)):
        raise ConfigError(f"{where}: occlusion.occluders must be a non-empty list of occluder names")
    if len(set(occs)) != len(occs):
        raise ConfigError(f"{where}: occlusion.occluders lists a name twice")
    try:
        from ..synth.scales import parse_scales

        o["scales"] = [float(s) for s in parse_scales(o["scales"])]
    except ConfigError as e:
        raise ConfigError(f"{where}: occlusion.scales: {e}") from None
    head = o["headline"]
    if not isinstance(head, dict) or set(head) - {"scale", "placement"}:
        raise ConfigError(f"{where}: occlusion.headline must be {{scale: S, placement: anchored|free}}")
    head.setdefault("scale", o["scales"][-1])
    head["scale"] = float(head["scale"])
    if head["scale"] not in o["scales"]:
        raise ConfigError(f"{where}: occlusion.headline.scale {head['scale']} is not in scales {o['scales']}")
    if head.get("placement") not in PLACEMENTS:
        raise ConfigError(f"{where}: occlusion.headline.placement must be one of {', '.join(PLACEMENTS)}")
    modes = o.setdefault("modes", list(MODES[kind]))
    if not (isinstance(modes, list) and modes and all(m in MODES[kind] for m in modes)) or len(set(modes)) != len(modes):
        raise ConfigError(f"{where}: occlusion.modes for {kind} must be a list from {', '.join(MODES[kind])}, got {modes!r}")
    bd = o["breakdown"]
    if not isinstance(bd, list):
        raise ConfigError(f"{where}: occlusion.breakdown must be a list")
    for b in bd:
        ok = b in ("scale", "occluder") or (isinstance(b, str) and b.startswith("placement:")
                                              and b.split(":", 1)[1] in PLACEMENTS)
        if not ok:
            raise ConfigError(f"{where}: occlusion.breakdown entries are scale, occluder, "
                              f"placement:anchored or placement:free; got {b!r}")
    for key, lo, hi in (("seed", 0, None), ("k", 1, 16), ("jpeg_quality", 1, 100)):
        v = o[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
            raise ConfigError(f"{where}: occlusion.{key} must be an integer in [{lo}, {hi or 'inf'}], got {v!r}")
    from .parts import check_part_blocks  # blocks fitted to face parts (lfw-occ-parts): anchored only

    check_part_blocks(o, where)
    return o


def _from_file(path: Path) -> Protocol:
    return Protocol(validate_protocol(resolve_includes(path), where=f"protocol {path.name}"), str(path))


def protocol_files() -> list[Path]:
    """Built-in protocol files (bases, whose names start with '_', excluded), sorted by name."""
    return sorted(p for p in protocols_dir().glob("*.yaml") if not p.name.startswith("_"))


def list_protocols() -> list[Protocol]:
    """Every built-in protocol, loaded and validated (the registry walk)."""
    out = [_from_file(p) for p in protocol_files()]
    seen: dict[str, str] = {}
    for p in out:
        if p.name in seen:
            raise ConfigError(f"protocol name {p.name!r} is defined twice ({seen[p.name]} and {p.path})")
        seen[p.name] = str(p.path)
    return sorted(out, key=lambda p: p.name)


def load_protocol(name_or_path: str | os.PathLike) -> Protocol:
    """A built-in protocol by name, or a protocol YAML file by path."""
    s = os.fspath(name_or_path)
    p = Path(s).expanduser()
    if s.endswith((".yaml", ".yml")) or os.sep in s or "/" in s:
        if p.is_dir():
            raise ConfigError(f"protocol file {s} is a folder: pass a protocol .yaml file or a protocol name")
        if not p.is_file():
            raise DataNotFoundError(f"protocol file {s} not found")
        return _from_file(p)
    for f in protocol_files():
        if f.stem == s:
            prot = _from_file(f)
            if prot.name == s:
                return prot
    by_name = {p.name: p for p in list_protocols()}
    if s in by_name:
        return by_name[s]
    import difflib

    close = difflib.get_close_matches(s, list(by_name), n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown protocol {s!r}.{hint} Known: {', '.join(sorted(by_name))} "
                      "(or pass the path of a protocol .yaml file)")


# ------------------------------------------------------------------------------- hashing


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def protocol_hash(protocol: Protocol, data_identity: dict) -> str:
    """16 hex chars identifying what a result measured: protocol content + data identity.

    ``data_identity`` maps each data input to a content hash (see ``data.DataTask.identity``); user
    paths are not part of it, so the same files give the same hash on any machine.
    """
    payload = {"protocol": protocol.raw, "data": data_identity}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]
