"""Part blocks: a neutral block fitted to one face-part group on the face's own mesh (``lfw-occ-parts``).

Unlike the other families, nothing is drawn in the 112x112 face frame: the block is the union of the
convex hulls of the part outlines listed in ``hulls`` (``occbench/face/parts.yaml``), on the face's
468 mesh points, so that it covers that group and as little else as a convex block can. s scales
each hull about its centroid (s = 1: the hull itself). Nothing is random: the same face gives the
same block (``rng`` is accepted and not used).

Which mesh (``occbench.face.parts.mesh_for``): the face's own (MediaPipe landmarks, or a landmarks
table with its ``.mesh.npz`` sidecar), or the mean mesh fitted to template landmarks of a pre-aligned
crop. A face with 5 points only raises :class:`~occbench.face.parts.MeshRequiredError`: synth records
the image with that reason and eval counts it as a failure to enrol; a block is never guessed.
Placement ``free`` does not apply (the block belongs to the part) and is refused.
"""
from __future__ import annotations

import numpy as np

from ...errors import ConfigError
from ...face import geometry
FITS = ("hull", "outline")  # a convex hull per list of parts, or the parts' own closed outlines


from .base import (FAMILIES, OcclusionResult, Occluder, _check_image, _fail, check_placement,
                   check_scale, jsonable, v_colour, v_number)


def _hulls(name, key, val):
    if (not isinstance(val, list) or not val
            or not all(isinstance(h, list) and h and all(isinstance(p, str) for p in h) for h in val)):
        raise _fail(name, key, f"must be a non-empty list of non-empty lists of part names, got {val!r}")
    return [list(h) for h in val]


def _fit(name, key, val):
    if val not in FITS:
        raise _fail(name, key, f"must be one of {', '.join(FITS)}, got {val!r}")
    return val


def _group(name, key, val):
    if not isinstance(val, str) or not val:
        raise _fail(name, key, f"must be a part or group name of occbench/face/parts.yaml, got {val!r}")
    return val


@FAMILIES.register("part_block")
class PartBlock(Occluder):
    """``group``: the part group covered (a group or a single part of parts.yaml); ``hulls``: the part
    lists whose convex hulls make the block (together exactly the group's parts); ``colour``: RGB;
    ``fit``: ``hull`` (default), or ``outline``: the parts' own outlines instead of hulls (a concave
    part such as the forehead, whose hull would fill the brows' arch)."""

    family = "part_block"
    COMMON_SCHEMA = {"bank": v_number(0, 1_000_000, integer=True),  # accepted (synth --bank); nothing to bank
                     "bank_seed": v_number(0, 2**63 - 1, integer=True)}
    DEFAULTS = {"bank": 0, "bank_seed": 0, "fit": "hull"}
    SCHEMA = {"group": _group, "hulls": _hulls, "colour": v_colour, "fit": _fit}

    def check_config(self) -> None:
        from ...face.parts import group_members, load_parts

        parts = load_parts()
        members = group_members(self.cfg["group"], parts)
        listed = [p for h in self.cfg["hulls"] for p in h]
        unknown = [p for p in listed if p not in parts.names]
        if unknown:
            raise ConfigError(f"occluder {self.name!r}: hulls name unknown part(s) {', '.join(unknown)}")
        if sorted(set(listed)) != sorted(members) or len(set(listed)) != len(listed):
            raise ConfigError(f"occluder {self.name!r}: hulls must list each part of {self.cfg['group']!r} "
                              f"({', '.join(members)}) exactly once, got {listed}")

    def get_params(self, rng, image_shape, landmarks, scale: float = 1.0, placement: str = "anchored") -> dict:
        from ...face.parts import MeshRequiredError, grown, hull_of, mesh_for, part_outlines

        scale = check_scale(scale)
        if check_placement(placement) != "anchored":
            raise ConfigError(f"occluder {self.name!r} is fitted to the face's parts: placement must be anchored")
        h, w = int(image_shape[0]), int(image_shape[1])
        if landmarks is None:
            t = geometry.template_for_size(h, w)
            landmarks = geometry.FaceLandmarks(t.points, source="template") if t is not None else None
        elif not isinstance(landmarks, geometry.FaceLandmarks):
            landmarks = geometry.FaceLandmarks(np.asarray(landmarks, np.float64).reshape(5, 2), source="points")
        mesh, source, reason = mesh_for(landmarks, "template")
        if mesh is None:
            raise MeshRequiredError(f"{reason}; the {self.name} block is fitted to the face mesh and never "
                                    "guessed from 5 points")
        if self.cfg["fit"] == "hull":
            polys = [grown(hull_of(mesh, members), scale) for members in self.cfg["hulls"]]
        else:
            outlines = part_outlines(mesh)
            polys = [grown(outlines[p], scale) for members in self.cfg["hulls"] for p in members]
        return jsonable({"name": self.name, "family": self.family, "category": self.category,
                         "group": self.cfg["group"], "placement": placement, "scale": scale,
                         "image_size": [h, w], "mesh_source": source, "colour": self.cfg["colour"],
                         "polygons": [p.tolist() for p in polys]})

    def _mask(self, params: dict) -> np.ndarray:
        from ...face.parts import polygons_mask

        return polygons_mask([np.asarray(p, np.float64) for p in params["polygons"]], params["image_size"])

    def __call__(self, image: np.ndarray, landmarks=None, *, rng: np.random.Generator, scale: float = 1.0,
                 placement: str = "anchored", mask: np.ndarray | None = None) -> OcclusionResult:
        image = _check_image(image)
        params = self.get_params(rng, image.shape, landmarks, scale, placement)
        block = self._mask(params)
        alpha = (block > 0).astype(np.float32)
        return OcclusionResult(self.apply(image, params), self._mask_from_alpha(mask, alpha), params, alpha)

    def apply(self, image: np.ndarray, params: dict) -> np.ndarray:
        image = _check_image(image)
        if tuple(image.shape[:2]) != tuple(params["image_size"]):
            raise ConfigError(f"params were sampled for a {params['image_size']} image, got {image.shape[:2]}")
        out = image.copy()
        out[self._mask(params) > 0] = np.asarray(params["colour"], np.uint8)
        return out

    def apply_to_mask(self, mask: np.ndarray, params: dict) -> np.ndarray:
        alpha = (self._mask(params) > 0).astype(np.float32)
        if mask is not None and mask.shape[:2] != alpha.shape:
            raise ConfigError(f"mask shape {mask.shape[:2]} does not match the image size {alpha.shape}")
        return self._mask_from_alpha(mask, alpha)

