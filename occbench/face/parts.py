"""Semantic face parts (eyes, brows, nose, mouth, chin, cheeks, forehead) and MGMTN-style groups.

The parts are data: ``parts.yaml`` lists, for each part, MediaPipe face-mesh point indices and how the
region is closed (``polygon`` in the given order, or convex ``hull``). From a face's 468 mesh points
they are rasterised into a uint8 *part label map* (face-parsing style: 0 = no part, ids 1.. in file
order, later parts painted over earlier ones, so each pixel has at most one part).

Which mesh:
- landmarks with 468 dense points (the ``mediapipe`` landmarker): the face's own mesh;
- pre-aligned crops (landmarks from the ``template`` landmarker): the canonical mean mesh
  (``mean_mesh_arcface112.csv``, MediaPipe meshes of 953 LFW faces averaged in the ArcFace 112x112
  frame; ``examples/make_mean_mesh.py``) placed by the similarity that takes the ArcFace template onto
  the crop's 5 points;
- anything else (5 points from a file, a detector without a mesh): ``noface`` with the reason. A part map
  is never guessed from 5 points unless asked for (``mean_mesh="any"``).

    parts = load_parts()
    pm = face_part_map(landmarks, image.shape[:2])      # PartMap(status, reason, labels, source)
    fr = part_fractions(mask, pm.labels, parts)         # {"eye_l": 0.93, ..., "eye_group": 0.71, ...}
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError, DataNotFoundError, OccbenchError
from .geometry import ARCFACE_112, FaceLandmarks, apply_affine, estimate_similarity

PARTS_YAML = Path(__file__).with_name("parts.yaml")
MEAN_MESH_CSV = Path(__file__).with_name("mean_mesh_arcface112.csv")
N_MESH = 468
CLOSURES = ("polygon", "hull")
MEAN_MESH_USE = ("template", "any", "never")
STATUS_OK, STATUS_NOFACE = "ok", "noface"
_SHIFT = 4  # cv2.fillPoly sub-pixel bits: vertices at 1/16 px


@dataclass(frozen=True)
class PartDef:
    name: str
    id: int
    closure: str
    points: tuple[int, ...]


@dataclass(frozen=True)
class PartSet:
    """The parts (ids 1..n) and the groups (name -> member part names) of one parts file."""

    parts: tuple[PartDef, ...]
    groups: dict
    source: str = ""

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parts]

    def legend(self) -> dict[int, str]:
        """Label-map id -> name (0 = "none")."""
        return {0: "none", **{p.id: p.name for p in self.parts}}

    def describe(self) -> dict:
        """JSON-able: legend, groups and the definition, for synth.json / results."""
        return {"legend": {str(k): v for k, v in self.legend().items()},
                "groups": {k: list(v) for k, v in self.groups.items()},
                "parts": [{"name": p.name, "id": p.id, "closure": p.closure, "points": list(p.points)}
                          for p in self.parts],
                "source": self.source}


def _check_parts(data, where: str) -> PartSet:
    if not isinstance(data, dict) or not isinstance(data.get("parts"), list) or not data["parts"]:
        raise ConfigError(f"{where}: needs a non-empty 'parts:' list")
    parts, seen = [], set()
    for i, p in enumerate(data["parts"], 1):
        if not isinstance(p, dict):
            raise ConfigError(f"{where}: part {i} must be a mapping with name, closure, points")
        name, closure, pts = p.get("name"), p.get("closure"), p.get("points")
        if not isinstance(name, str) or not name.isidentifier() or name in seen or name == "none":
            raise ConfigError(f"{where}: part {i} needs a unique identifier-like name (got {name!r})")
        if closure not in CLOSURES:
            raise ConfigError(f"{where}: part {name!r}: closure must be one of {', '.join(CLOSURES)}, got {closure!r}")
        if (not isinstance(pts, list) or len(pts) < 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < N_MESH for v in pts)):
            raise ConfigError(f"{where}: part {name!r}: points must be >= 3 mesh indices in 0..{N_MESH - 1}")
        if len(set(pts)) != len(pts):
            raise ConfigError(f"{where}: part {name!r} lists a point twice")
        seen.add(name)
        parts.append(PartDef(name, i, closure, tuple(pts)))
    if len(parts) > 255:
        raise ConfigError(f"{where}: at most 255 parts fit a uint8 label map, got {len(parts)}")
    groups = data.get("groups") or {}
    if not isinstance(groups, dict):
        raise ConfigError(f"{where}: 'groups:' must map group name -> list of part names")
    out_groups = {}
    for g, members in groups.items():
        if not isinstance(g, str) or g in seen or not isinstance(members, list) or not members:
            raise ConfigError(f"{where}: group {g!r} must be a new name mapping to a list of part names")
        bad = [m for m in members if m not in seen]
        if bad:
            raise ConfigError(f"{where}: group {g!r} names unknown part(s) {', '.join(map(str, bad))}")
        out_groups[g] = tuple(members)
    return PartSet(tuple(parts), out_groups, where)


def load_parts(path: str | Path | None = None) -> PartSet:
    """The parts file (default: the built-in ``occbench/face/parts.yaml``), validated."""
    if path is None:
        return _default_parts()
    return _read_parts(Path(path))


def _read_parts(path: Path) -> PartSet:
    import yaml

    from ..io import yamlio

    if not path.is_file():
        raise DataNotFoundError(f"parts file not found: {path}")
    try:
        data = yamlio.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"parts file {path} is not valid YAML: {e}") from None
    return _check_parts(data, str(path))


@functools.lru_cache(maxsize=1)
def _default_parts() -> PartSet:
    ps = _read_parts(PARTS_YAML)
    return PartSet(ps.parts, ps.groups, "occbench/face/parts.yaml")


@functools.lru_cache(maxsize=1)
def mean_mesh() -> np.ndarray:
    """(468, 2) float64: the canonical mean MediaPipe mesh in the ArcFace 112x112 frame."""
    arr = np.loadtxt(MEAN_MESH_CSV, delimiter=",", skiprows=1, dtype=np.float64)
    if arr.shape != (N_MESH, 3) or not np.array_equal(arr[:, 0], np.arange(N_MESH)):
        raise ConfigError(f"{MEAN_MESH_CSV} must hold rows index,x,y for indices 0..{N_MESH - 1}")
    out = arr[:, 1:].copy()
    out.setflags(write=False)
    return out


def fit_mean_mesh(five: np.ndarray) -> np.ndarray:
    """The mean mesh placed on a face by the similarity taking the ArcFace template onto ``five``."""
    return apply_affine(estimate_similarity(ARCFACE_112, np.asarray(five, np.float64)), mean_mesh())


def mesh_for(landmarks: FaceLandmarks | None, mean_mesh_use: str = "template") -> tuple[np.ndarray | None, str, str]:
    """(468x2 mesh or None, source "mesh" / "mean_mesh", reason when None).

    ``mean_mesh_use``: "template" (default) fits the mean mesh only to template landmarks (pre-aligned
    crops); "any" to any 5 points (an approximation, opt-in); "never" uses only a face's own mesh.
    """
    if mean_mesh_use not in MEAN_MESH_USE:
        raise ConfigError(f"mean_mesh_use must be one of {', '.join(MEAN_MESH_USE)}, got {mean_mesh_use!r}")
    if landmarks is None:
        return None, "", "no landmarks for this face: no part map"
    dense = landmarks.dense
    if dense is not None and np.shape(dense)[0] >= N_MESH:
        mesh = np.asarray(dense, np.float64)[:N_MESH]
        if np.isfinite(mesh).all():
            return mesh, "mesh", ""
    is_template = landmarks.source == "template" or getattr(landmarks, "method", "") == "template"
    if mean_mesh_use == "any" or (mean_mesh_use == "template" and is_template):
        return fit_mean_mesh(landmarks.five), "mean_mesh", ""
    return None, "", (f"no face-mesh points for this face (landmarks from {landmarks.source!r} are 5 points): "
                      "part maps need the mediapipe landmarker, or a pre-aligned crop with template landmarks")


def part_outlines(mesh: np.ndarray, parts: PartSet | None = None) -> dict[str, np.ndarray]:
    """Closed outline (K, 2) of every part for this mesh (hull parts: the hull's vertices)."""
    parts = parts or load_parts()
    mesh = np.asarray(mesh, np.float64)
    out = {}
    for p in parts.parts:
        pts = mesh[list(p.points)]
        if p.closure == "hull":
            pts = pts[cv2.convexHull(pts.astype(np.float32), returnPoints=False).ravel()]
        out[p.name] = pts
    return out


def rasterise_parts(mesh: np.ndarray, size_hw: tuple[int, int], parts: PartSet | None = None) -> np.ndarray:
    """uint8 (H, W) label map: 0 = none, part ids painted in file order (later over earlier)."""
    parts = parts or load_parts()
    h, w = int(size_hw[0]), int(size_hw[1])
    labels = np.zeros((h, w), np.uint8)
    scale = float(1 << _SHIFT)
    for p in parts.parts:
        poly = part_outlines(mesh, PartSet((p,), {}))[p.name]
        # pixel centres at integer coordinates (cv2's convention); far-off vertices clipped (no overflow)
        big = 4.0 * max(h, w, 1)
        fixed = np.round(np.clip(poly, -big, big) * scale).astype(np.int32)
        cv2.fillPoly(labels, [fixed.reshape(-1, 1, 2)], int(p.id), lineType=cv2.LINE_8, shift=_SHIFT)
    return labels


@dataclass
class PartMap:
    status: str  # "ok" | "noface"
    reason: str
    labels: np.ndarray | None  # uint8 (H, W) or None
    source: str = ""  # "mesh" | "mean_mesh"

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


def face_part_map(landmarks: FaceLandmarks | None, size_hw: tuple[int, int], parts: PartSet | None = None,
                  mean_mesh_use: str = "template") -> PartMap:
    """Part label map of one face, or ``noface`` with the reason (never a guessed map)."""
    mesh, source, reason = mesh_for(landmarks, mean_mesh_use)
    if mesh is None:
        return PartMap(STATUS_NOFACE, reason, None)
    return PartMap(STATUS_OK, "", rasterise_parts(mesh, size_hw, parts), source)


def part_fractions(mask: np.ndarray, labels: np.ndarray, parts: PartSet | None = None,
                   groups: bool = True) -> dict[str, float]:
    """Occluded fraction of every part (and group): occluded pixels / pixels of that part in ``labels``.

    ``mask``: uint8 occlusion mask, occluded where >= 128 (occbench masks are 0/255) or a bool array.
    A part with no pixel in the map (e.g. outside the image) gets NaN: its coverage is unmeasurable.
    """
    parts = parts or load_parts()
    labels = np.asarray(labels)
    mask = np.asarray(mask)
    if mask.shape != labels.shape:
        raise ConfigError(f"mask {mask.shape} and part map {labels.shape} must have the same size")
    occ = mask if mask.dtype == bool else mask >= 128
    n = len(parts.parts) + 1
    lab = labels.ravel().astype(np.intp)
    total = np.bincount(lab, minlength=n)[:n]
    covered = np.bincount(lab[occ.ravel()], minlength=n)[:n]
    by_id = {p.name: p.id for p in parts.parts}
    out = {}
    for p in parts.parts:
        out[p.name] = float(covered[p.id] / total[p.id]) if total[p.id] else float("nan")
    if groups:
        for g, members in parts.groups.items():
            ids = [by_id[m] for m in members]
            t = int(total[ids].sum())
            out[g] = float(covered[ids].sum() / t) if t else float("nan")
    return out


def parts_covered(fractions: dict[str, float], threshold: float = 0.5) -> dict[str, bool | None]:
    """Part -> covered (fraction >= threshold); None where the fraction is NaN (unmeasurable)."""
    return {k: (None if not np.isfinite(v) else bool(v >= threshold)) for k, v in fractions.items()}


# A fixed palette for previews: id -> RGB (0 = none is black).
_PALETTE = np.array([[0, 0, 0], [230, 200, 120], [120, 200, 230], [90, 160, 220], [200, 140, 220],
                     [240, 150, 60], [220, 40, 60], [110, 80, 40], [150, 110, 60], [40, 200, 80],
                     [20, 150, 60]], np.uint8)


def colourise(labels: np.ndarray) -> np.ndarray:
    """RGB uint8 rendering of a label map (fixed palette; ids past the palette cycle through it)."""
    lab = np.asarray(labels).astype(np.intp)
    idx = np.where(lab == 0, 0, (lab - 1) % (len(_PALETTE) - 1) + 1)
    return _PALETTE[idx]


def palette() -> dict[int, tuple[int, int, int]]:
    return {i: tuple(int(c) for c in _PALETTE[i]) for i in range(len(_PALETTE))}


# ------------------------------------------------------------------- one part group at a time


class MeshRequiredError(OccbenchError):
    """A face without mesh points where parts are needed (5-point landmarks): never guessed."""


def group_members(group: str, parts: PartSet | None = None) -> tuple[str, ...]:
    """The part names of a group, or ``(group,)`` for a single part (ConfigError when unknown)."""
    parts = parts or load_parts()
    members = parts.groups.get(group, (group,) if group in parts.names else None)
    if members is None:
        raise ConfigError(f"unknown part or group {group!r}; known: {', '.join(parts.names + list(parts.groups))}")
    return tuple(members)


def hull_of(mesh: np.ndarray, members, parts: PartSet | None = None) -> np.ndarray:
    """Convex hull (K, 2) of every point of the outlines of ``members`` (part names) on this mesh."""
    outlines = part_outlines(mesh, parts)
    pts = np.vstack([outlines[m] for m in members])
    return pts[cv2.convexHull(pts.astype(np.float32), returnPoints=False).ravel()]


def group_outline(mesh: np.ndarray, group: str, parts: PartSet | None = None) -> np.ndarray:
    """Convex hull (K, 2) of every point of a group's (or a single part's) outlines on this mesh."""
    return hull_of(mesh, group_members(group, parts), parts)


def polygons_mask(polygons, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) mask, 255 inside any of the polygons (vertices at 1/16 px, as the part map)."""
    h, w = int(size_hw[0]), int(size_hw[1])
    mask = np.zeros((h, w), np.uint8)
    big = 4.0 * max(h, w, 1)
    for poly in polygons:
        fixed = np.round(np.clip(np.asarray(poly, np.float64), -big, big) * float(1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(mask, [fixed.reshape(-1, 1, 2)], 255, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask


def grown(poly: np.ndarray, factor: float) -> np.ndarray:
    """The polygon scaled by ``factor`` about its vertices' centroid (1 = unchanged)."""
    poly = np.asarray(poly, np.float64)
    if factor == 1.0:
        return poly
    c = poly.mean(0)
    return c + (poly - c) * float(factor)


def occlude_group(image: np.ndarray, mesh: np.ndarray, group: str, colour=(128, 128, 128), pad: float = 0.0,
                  parts: PartSet | None = None, hulls=None) -> tuple[np.ndarray, np.ndarray]:
    """A neutral block fitted to one part group's hull: returns (occluded image, uint8 mask 255 =
    occluded). ``pad`` grows each hull about its centroid (0.1 = +10 %). ``hulls`` (lists of part
    names) splits the block into one hull per list (e.g. one per eye); default: one hull of the group.
    The ``part_block`` occluders (``occluders/parts.yaml``, protocol ``lfw-occ-parts``) draw these."""
    polys = [hull_of(mesh, m, parts) for m in hulls] if hulls else [group_outline(mesh, group, parts)]
    mask = polygons_mask([grown(p, 1.0 + float(pad)) for p in polys], image.shape[:2])
    out = image.copy()
    out[mask > 0] = np.asarray(colour, np.uint8)
    return out, mask


def part_columns(fractions: dict[str, float]) -> dict[str, float]:
    """Manifest columns ``part_<name>`` (parts and groups) from :func:`part_fractions`."""
    return {f"part_{k}": float(v) for k, v in fractions.items()}


def encode_part_map(labels: np.ndarray) -> bytes:
    """Lossless single-channel PNG of a uint8 label map (deterministic bytes)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(labels, np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:  # pragma: no cover - cv2 encodes any uint8 2-D array
        raise ConfigError("could not encode the part map as PNG")
    return buf.tobytes()


def manifest_columns(parts: PartSet | None = None) -> dict[str, str]:
    """Synth manifest columns for parts (name -> dtype kind): the part map's path, why there is none,
    and ``part_<name>`` for every part and group (occluded fraction; NaN without a part map)."""
    parts = parts or load_parts()
    return {"part_map": "str", "part_reason": "str",
            **{f"part_{n}": "float" for n in parts.names + list(parts.groups)}}


def part_row(mask: np.ndarray, pm: PartMap, parts: PartSet | None = None) -> dict:
    """The part columns of one manifest row (fractions stay NaN and the reason is set for noface)."""
    if not pm.ok:
        return {"part_reason": pm.reason}
    return part_columns(part_fractions(mask, pm.labels, parts))
