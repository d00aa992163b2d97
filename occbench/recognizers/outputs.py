"""Occlusion outputs of a recognizer: the declaration (``OutputSpec``) and the parser that turns a
model's raw forward output into ``ModelOutputs(embedding, mask, pattern)``.

A model may return a tensor (the embedding), a tuple, or a dict. It declares in its metadata what
it returns (``OutputSpec``, stored under ``"outputs"`` in the occbench metadata of TorchScript and
ONNX files, or as an ``output_spec`` attribute of a module / factory / arch):

``{"embedding": "embedding",                                  # dict key, tuple index or ONNX output name
   "mask": {"key": "mask", "scale": "logits", "occluded": 1},  # N x 1 x h x w or N x h x w, crop frame
   "pattern": {"key": "pattern", "scale": "logits", "k": 5, "order": "FROM"},  # N x P
   "attributes": ["Smiling", "Eyeglasses"]}``  # N x A face-attribute scores, output "attributes"

- ``scale``: "logits" (sigmoid / softmax applied here) or "probabilities".
- ``occluded``: the mask value that means "occluded": 1 (high = occluded, a segmentation) or 0
  (high = visible, e.g. FROM's feature mask, which multiplies features by ~0 where occluded).
- ``k`` and ``order``: pattern classes are FROM's K x K patterns in FROM's order
  (``occbench.synth.patterns.enumerate_patterns``), P = (K(K+1)/2)^2 + 1.
- ``attributes``: the attribute names, in the order of the model's N x A output (a list; or
  ``{"key": ..., "names": [...], "scale": "logits" | "probabilities"}``). Parsed to logits (N, A)
  float32 (probabilities p -> log(p / (1 - p))), so "present" is ``logit >= 0`` either way.

The parsed mask is always P(occluded) in [0, 1], shape (N, h, w), float32; the parsed pattern is
(N, P) float32 class scores (probabilities). NaN values are kept: scoring counts such images and
leaves them out of the averages.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError

log = logging.getLogger(__name__)

SCALES = ("logits", "probabilities")
PATTERN_ORDERS = ("FROM",)


class OutputMismatchError(ConfigError):
    """A model's outputs do not match its declaration."""


@dataclass(frozen=True)
class MaskSpec:
    key: str | int = "mask"
    scale: str = "logits"
    occluded: int = 1  # mask value meaning "occluded" (1: high = occluded; 0: high = visible)
    source: str = "model"  # "model", or "truth" for the oracle reference (scored from the ground truth)


@dataclass(frozen=True)
class PatternSpec:
    key: str | int = "pattern"
    k: int = 5
    scale: str = "logits"
    order: str = "FROM"
    source: str = "model"

    @property
    def n_classes(self) -> int:
        from ..synth.patterns import n_patterns

        return n_patterns(self.k)


@dataclass(frozen=True)
class AttributesSpec:
    """Face-attribute scores: N x A, one column per name (matched by name to a label file's columns)."""

    names: tuple[str, ...] = ()
    key: str | int = "attributes"
    scale: str = "logits"

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))


@dataclass(frozen=True)
class OutputSpec:
    """What a recognizer returns besides the embedding (see the module docstring)."""

    embedding: str | int = "embedding"
    mask: MaskSpec | None = None
    pattern: PatternSpec | None = None
    attributes: AttributesSpec | None = None

    @property
    def has_occlusion(self) -> bool:
        return self.mask is not None or self.pattern is not None

    @property
    def has_attributes(self) -> bool:
        return self.attributes is not None

    def keys(self) -> list[str | int]:
        return [self.embedding] + [s.key for s in (self.mask, self.pattern, self.attributes) if s is not None]

    def to_dict(self) -> dict:
        d: dict = {"embedding": self.embedding}
        if self.mask is not None:
            d["mask"] = {"key": self.mask.key, "scale": self.mask.scale, "occluded": self.mask.occluded,
                         "source": self.mask.source}
        if self.pattern is not None:
            d["pattern"] = {"key": self.pattern.key, "k": self.pattern.k, "scale": self.pattern.scale,
                            "order": self.pattern.order, "source": self.pattern.source}
        if self.attributes is not None:
            d["attributes"] = {"key": self.attributes.key, "names": list(self.attributes.names),
                               "scale": self.attributes.scale}
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "outputs") -> "OutputSpec":
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: the outputs declaration must be a dict, got {type(d).__name__}")
        unknown = sorted(set(d) - {"embedding", "mask", "pattern", "attributes"})
        if unknown:
            raise ConfigError(f"{source}: unknown output(s) {unknown}; declare embedding, mask, pattern, attributes")
        mask = _sub(MaskSpec, d.get("mask"), f"{source}.mask")
        pattern = _sub(PatternSpec, d.get("pattern"), f"{source}.pattern")
        attrs = d.get("attributes")
        if isinstance(attrs, (list, tuple)):  # the short form: just the names
            attrs = {"names": attrs}
        attrs = _sub(AttributesSpec, attrs, f"{source}.attributes")
        spec = cls(embedding=d.get("embedding", "embedding"), mask=mask, pattern=pattern, attributes=attrs)
        return validate_spec(spec, source)


def _sub(kind, value, source: str):
    if value is None:
        return None
    if isinstance(value, kind):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{source} must be a dict, got {type(value).__name__}")
    from dataclasses import fields

    names = {f.name for f in fields(kind)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; valid: {sorted(names)}")
    return kind(**value)


def validate_spec(spec: OutputSpec, source: str = "outputs") -> OutputSpec:
    keys = spec.keys()
    if len(set(map(str, keys))) != len(keys):
        raise ConfigError(f"{source}: outputs must have distinct keys, got {keys}")
    for name, s in (("mask", spec.mask), ("pattern", spec.pattern)):
        if s is None:
            continue
        if s.scale not in SCALES:
            raise ConfigError(f"{source}: {name} scale must be one of {SCALES}, got {s.scale!r}")
        if s.source not in ("model", "truth"):
            raise ConfigError(f"{source}: {name} source must be 'model' or 'truth', got {s.source!r}")
    if spec.mask is not None and spec.mask.occluded not in (0, 1):
        raise ConfigError(f"{source}: mask 'occluded' must be 1 (high = occluded) or 0 (high = visible), "
                          f"got {spec.mask.occluded!r}")
    if spec.pattern is not None:
        if spec.pattern.order not in PATTERN_ORDERS:
            raise ConfigError(f"{source}: pattern order must be one of {PATTERN_ORDERS}, got {spec.pattern.order!r}")
        spec.pattern.n_classes  # validates K
    a = spec.attributes
    if a is not None:
        if a.scale not in SCALES:
            raise ConfigError(f"{source}: attributes scale must be one of {SCALES}, got {a.scale!r}")
        if not a.names or any(not n.strip() for n in a.names):
            raise ConfigError(f"{source}: attributes must name every column of the N x A output (a non-empty "
                              f"list of non-empty names), got {list(a.names)}")
        if len(set(a.names)) != len(a.names):
            dup = sorted({n for n in a.names if a.names.count(n) > 1})
            raise ConfigError(f"{source}: attribute {dup[0]!r} is declared twice")
    return spec


def as_output_spec(value, source: str = "outputs") -> OutputSpec | None:
    """None, an OutputSpec, or its dict form -> OutputSpec | None."""
    if value is None or isinstance(value, OutputSpec):
        return value if value is None else validate_spec(value, source)
    return OutputSpec.from_dict(value, source)


@dataclass
class ModelOutputs:
    """Parsed outputs of one batch: embedding (N, D) raw (not normalised) float32; mask (N, h, w)
    P(occluded) float32 or None; pattern (N, P) class probabilities float32 or None; attributes
    (N, A) logits float32 or None."""

    embedding: np.ndarray
    mask: np.ndarray | None = None
    pattern: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    attributes: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# Parsing


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        return x.detach().float().cpu().numpy()
    return np.asarray(x, np.float32)


def _select(raw, key, what: str):
    """The declared output ``key`` of a dict/tuple output; an OutputMismatchError when absent."""
    if isinstance(raw, dict):
        if key not in raw:
            raise OutputMismatchError(f"the model declares a {what} output {key!r} but returned only "
                                      f"{sorted(map(str, raw))}")
        return raw[key]
    if isinstance(raw, (tuple, list)):
        if not isinstance(key, int):
            raise OutputMismatchError(f"the model returned a tuple of {len(raw)} but declares its {what} "
                                      f"output by name {key!r}; declare tuple outputs by index")
        if not -len(raw) <= key < len(raw):
            raise OutputMismatchError(f"the model declares its {what} output at index {key} but returned a "
                                      f"tuple of {len(raw)}")
        return raw[key]
    raise OutputMismatchError(f"the model declares a {what} output {key!r} but returned a single tensor")


def parse_outputs(raw, spec: OutputSpec | None, n: int) -> ModelOutputs:
    """Raw forward output (tensor | tuple | list | dict; torch or numpy) -> ModelOutputs for a batch of n.

    Without a declaration: a tensor is the embedding, a tuple's first item is, a dict's
    ``"embedding"`` is; other outputs are ignored with a note."""
    notes: list[str] = []
    if spec is None:
        spec = OutputSpec(embedding=0 if isinstance(raw, (tuple, list)) else "embedding")
        if not isinstance(raw, (tuple, list, dict)):
            return ModelOutputs(_embedding(raw, n))
    if isinstance(raw, (tuple, list, dict)):
        declared = {str(k) for k in spec.keys()}
        names = [str(k) for k in (raw if isinstance(raw, dict) else range(len(raw)))]
        extra = [k for k in names if k not in declared]
        if extra:
            notes.append(f"ignored undeclared model output(s) {extra}")
        emb = _embedding(_select(raw, spec.embedding, "embedding"), n)
    else:
        if spec.has_occlusion:
            _select(raw, spec.mask.key if spec.mask else spec.pattern.key,
                    "mask" if spec.mask else "pattern")  # raises: a single tensor cannot hold them
        if spec.attributes is not None:
            _select(raw, spec.attributes.key, "attributes")  # raises likewise
        emb = _embedding(raw, n)
    mask = pattern = attrs = None
    if spec.mask is not None and spec.mask.source == "model":
        mask = parse_mask(_select(raw, spec.mask.key, "mask"), spec.mask, n)
    if spec.pattern is not None and spec.pattern.source == "model":
        pattern = parse_pattern(_select(raw, spec.pattern.key, "pattern"), spec.pattern, n)
    if spec.attributes is not None:
        attrs = parse_attributes(_select(raw, spec.attributes.key, "attributes"), spec.attributes, n)
    return ModelOutputs(emb, mask, pattern, notes, attrs)


def _embedding(x, n: int) -> np.ndarray:
    a = _to_numpy(x)
    if a.ndim < 1 or a.shape[0] != n:
        raise OutputMismatchError(f"embedding output: expected shape (N={n}, D), got {tuple(a.shape)}")
    return a.reshape(n, -1)


def parse_mask(x, spec: MaskSpec, n: int) -> np.ndarray:
    """(N, 1, h, w) or (N, h, w) logits/probabilities -> (N, h, w) float32 P(occluded)."""
    a = _to_numpy(x)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3 or a.shape[0] != n or min(a.shape[1:], default=0) < 1:
        raise OutputMismatchError(f"mask output: expected N x 1 x h x w or N x h x w with N={n}, "
                                  f"got {tuple(np.shape(x))}")
    a = a.astype(np.float32, copy=False)
    if spec.scale == "logits":
        with np.errstate(over="ignore"):
            a = 1.0 / (1.0 + np.exp(-a))
    else:
        _check_probabilities(a, "mask")
    if spec.occluded == 0:
        a = 1.0 - a
    return np.ascontiguousarray(a, np.float32)


def _check_rows(a: np.ndarray, n: int, what: str, columns: str) -> None:
    """``a`` must be a 2-D array with one row per image (``columns`` names the expected width)."""
    if a.ndim != 2 or a.shape[0] != n:
        raise OutputMismatchError(f"{what} output: expected shape (N={n}, {columns}), got {tuple(a.shape)}")


def _check_probabilities(a: np.ndarray, what: str) -> None:
    """Values declared as probabilities must lie in [0, 1] (NaN allowed, 1e-3 slack)."""
    if np.nanmin(a, initial=0.0) < -1e-3 or np.nanmax(a, initial=1.0) > 1 + 1e-3:
        raise OutputMismatchError(f"{what} output is declared as probabilities but holds values in "
                                  f"[{np.nanmin(a):.3g}, {np.nanmax(a):.3g}]; declare scale 'logits'")


def parse_pattern(x, spec: PatternSpec, n: int) -> np.ndarray:
    """(N, P) logits/probabilities -> (N, P) float32 probabilities; P must be (K(K+1)/2)^2 + 1."""
    a = _to_numpy(x)
    p = spec.n_classes
    _check_rows(a, n, "pattern", f"P={p}")
    if a.shape[1] != p:
        raise OutputMismatchError(f"pattern output has P={a.shape[1]} classes, but K={spec.k} needs "
                                  f"P=(K(K+1)/2)^2+1={p}; fix the declared K or the model's head")
    a = a.astype(np.float64)
    if spec.scale == "logits":
        a = a - np.max(a, axis=1, keepdims=True)
        a = np.exp(a)
        a /= a.sum(axis=1, keepdims=True)
    return a.astype(np.float32)


def parse_attributes(x, spec: AttributesSpec, n: int) -> np.ndarray:
    """(N, A) logits or probabilities -> (N, A) float32 logits; A must be the number of declared names."""
    a = _to_numpy(x)
    want = len(spec.names)
    if a.ndim == 1 and want == 1 and a.shape[0] == n:
        a = a[:, None]
    _check_rows(a, n, "attributes", f"A={want}")
    if a.shape[1] != want:
        raise OutputMismatchError(f"attributes output has {a.shape[1]} columns but the model declares {want} "
                                  f"attribute names; declare one name per column")
    a = a.astype(np.float64)
    if spec.scale == "probabilities":
        _check_probabilities(a, "attributes")
        p = np.clip(a, 1e-7, 1 - 1e-7)
        a = np.log(p) - np.log1p(-p)
    return a.astype(np.float32)


class NoteOnce:
    """Logs each distinct note once per recognizer (an undeclared output would repeat per batch)."""

    def __init__(self):
        self.seen: set[str] = set()

    def __call__(self, notes: list[str], name: str) -> None:
        for note in notes:
            if note not in self.seen:
                self.seen.add(note)
                log.warning("%s: %s", name, note)


def declares_occlusion(recognizer) -> bool:
    spec = getattr(recognizer, "outputs", None)
    return spec is not None and spec.has_occlusion


def declares_attributes(recognizer) -> bool:
    spec = getattr(recognizer, "outputs", None)
    return spec is not None and getattr(spec, "attributes", None) is not None


def infer_outputs(recognizer, crops) -> ModelOutputs:
    """``recognizer.infer(crops)`` when it declares occlusion or attribute outputs, else its embeddings alone."""
    if (declares_occlusion(recognizer) or declares_attributes(recognizer)) and hasattr(recognizer, "infer"):
        return recognizer.infer(crops)
    return ModelOutputs(recognizer.embed(crops))
