"""The fallback steps of the ``mediapipe`` landmarker, for images where the face mesh finds no face
(masks, profiles, small faces): BlazeFace detection passes, the face mesh re-run on crops around the
detections (``mesh-crop``), the detection's own keypoints (``detection``), and BlazePose's person (``pose``).
The chain, its order and its rules are described in :mod:`occbench.face.landmarks`; the models all ship
inside the mediapipe wheel. :class:`FallbackSteps` is mixed into
:class:`occbench.face.landmarks.MediapipeLandmarker`, which owns the graphs and the process check
(``_fresh``); every constant here is reported by :meth:`FallbackSteps.fallback_params` (the ``detection``,
``mesh_crop`` and ``pose`` blocks of ``describe()``)."""
from __future__ import annotations

import math

import numpy as np

from .geometry import ARCFACE_112
from .mediapipe_common import _filtered_native_stderr, choose_face, mesh_to_five

# mouth-corner distance / eye distance of the ArcFace template (detection_to_five)
DETECTION_MOUTH_RATIO = float((ARCFACE_112[4, 0] - ARCFACE_112[3, 0]) / (ARCFACE_112[1, 0] - ARCFACE_112[0, 0]))
DETECTION_PAD = 0.25  # black border of the padded passes, fraction of the long side
# (name, BlazeFace model: 1 full range / 0 short range, padded?) tried in order, the first face found wins
DETECTION_PASSES = (("full-padded", 1, True), ("short", 0, False), ("full", 1, False), ("short-padded", 0, True))
DETECTION_TILES = ((2, 0.6), (3, 0.45))  # (n x n tiles, tile side / image side) of the last pass, "tiles"
DETECTION_TILES_MIN_SCORE = 0.62  # tiles see small faces but also face-like texture: a higher bar
# mesh-crop: the face mesh re-run on a square crop around a detection (side = f x the box's long side,
# resampled to MESH_CROP_SIZE px); kept when its eyes lie within MESH_CROP_EYE_TOL x the eye distance
# of the detection's eyes (two models agree on the same face)
MESH_CROP_SCALES = (1.5, 2.0, 3.0)
MESH_CROP_SIZE = 256
MESH_CROP_EYE_TOL = 0.35
MESH_CROP_MIN_CONFIDENCE = 0.3  # the crop mesh's own face-detection bar; the eye check does the rejecting
MESH_CROP_MAX_FACES = 32  # detected faces (IoU clusters, best score first) tried per image
MESH_CROP_TRIES = 3  # detections per face cluster tried
CLUSTER_IOU = 0.4  # detections of the same face from different passes / tiles overlap at least this much
MIN_EYE_DISTANCE = 4.0  # original-image pixels: a face whose eyes are closer cannot be aligned (no landmarks)
# pose: BlazePose (full model, shipped in the wheel) face keypoints: 0 nose, 2 / 5 the subject's left / right
# eye centre, 9 / 10 the subject's left / right mouth corner -> ArcFace order (image-left first)
POSE_FIVE = (5, 2, 0, 10, 9)
POSE_MIN_VISIBILITY = 0.5  # BlazePose's own visibility of both eyes and both mouth corners
POSE_AGREE_TOL = 0.5  # x the detection's eye distance: pose and detection see the same face
# a plausible face in the frame of its eye line (units of the eye distance, "down" = away from the eyes):
POSE_MOUTH_DOWN = (0.4, 2.5)  # the mouth centre lies this far below the eye line
POSE_MOUTH_SIDE = 0.75  # and at most this far to the side of the eyes' midpoint; the nose lies between
POSE_CROP_SCALES = (2.0, 3.0, 4.0)  # crops around pose's face for BlazeFace, x the span of its 11 face points
POSE_CROP_SIZE = 192  # px, the full-range model's input size
POSE_CROP_CENTRE = 0.75  # x the span: a crop's detection must have its eyes this close to pose's face centre
POSE_MAX_ROLL = 60.0  # degrees: BlazePose names the eyes by body side, so an upside-down "face" is a false one


def detection_to_five(keypoints: np.ndarray) -> np.ndarray:
    """BlazeFace's 6 keypoints (pixels; right eye, left eye, nose tip, mouth centre, 2 ear tragions)
    -> 5 ArcFace-order points. Mouth corners: mouth centre -/+ DETECTION_MOUTH_RATIO / 2 x (left eye -
    right eye), i.e. on the line through the mouth centre parallel to the eye line (see module docs)."""
    k = np.asarray(keypoints, np.float64).reshape(-1, 2)
    e0, e1, nose, mouth = k[0], k[1], k[2], k[3]
    half = 0.5 * DETECTION_MOUTH_RATIO * (e1 - e0)
    return np.stack([e0, e1, nose, mouth - half, mouth + half])


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes given as [[x0, y0], [x1, y1]]."""
    lo, hi = np.maximum(a[0], b[0]), np.minimum(a[1], b[1])
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    union = float(np.prod(a[1] - a[0]) + np.prod(b[1] - b[0])) - inter
    return inter / union if union > 0 else 0.0


def _support(cands: list, pts: np.ndarray) -> int:
    """How many kinds of detection pass (full range, short range, tiles; a padded pass is the same kind as
    its unpadded one) found a face overlapping ``pts``'s box by IoU > CLUSTER_IOU, among ``cands``
    [(pass, points, score)]: 1 = a lone detection."""
    return len({c[0].replace("-padded", "") for c in cands if _box_iou(c[1][6:], pts[6:]) > CLUSTER_IOU})


def _eyes_agree(five: np.ndarray, keypoints: np.ndarray, tol: float = MESH_CROP_EYE_TOL) -> bool:
    """Both eyes of ``five`` within ``tol`` x the detection's eye distance of the detection's eyes."""
    ed = float(np.linalg.norm(keypoints[1] - keypoints[0]))
    return ed > 0 and float(np.linalg.norm(five[:2] - keypoints[:2], axis=1).max()) <= tol * ed


def pose_to_five(points: np.ndarray) -> np.ndarray:
    """BlazePose's first 11 keypoints (pixels) -> 5 ArcFace-order points (eye centres, nose, mouth corners)."""
    return np.asarray(points, np.float64)[list(POSE_FIVE)].copy()


def plausible_face(five: np.ndarray, max_roll: float = POSE_MAX_ROLL) -> bool:
    """Eyes, nose and mouth arranged like a face: the eye line (image-left eye to image-right eye) within
    ``max_roll`` degrees of horizontal, and in its frame the mouth centre POSE_MOUTH_DOWN eye distances
    below it and at most POSE_MOUTH_SIDE to the side, the nose in between."""
    f = np.asarray(five, np.float64)
    u = f[1] - f[0]
    ed = float(np.linalg.norm(u))
    if not ed > 0 or abs(math.degrees(math.atan2(u[1], u[0]))) > max_roll:
        return False
    u = u / ed
    down = np.array([-u[1], u[0]])  # image y points down: the eye line turned +90 degrees
    mid, mouth = (f[0] + f[1]) / 2, (f[3] + f[4]) / 2
    m_down, m_side, n_down = (mouth - mid) @ down / ed, (mouth - mid) @ u / ed, (f[2] - mid) @ down / ed
    return bool(POSE_MOUTH_DOWN[0] <= m_down <= POSE_MOUTH_DOWN[1] and abs(m_side) <= POSE_MOUTH_SIDE
                and 0.0 <= n_down <= m_down)


class FallbackSteps:
    """Detection, mesh-crop and pose steps (methods of :class:`~occbench.face.landmarks.MediapipeLandmarker`)."""

    def fallback_params(self) -> dict:
        """The fallback steps' settings (every constant above), for ``describe()``."""
        return {
            "detection": {"passes": [n for n, _, _ in DETECTION_PASSES] + ["tiles"], "pad": DETECTION_PAD,
                          "tiles": [f"{n}x{n}@{f:g}" for n, f in DETECTION_TILES],
                          "tiles_min_score": DETECTION_TILES_MIN_SCORE,
                          "mouth_ratio": round(DETECTION_MOUTH_RATIO, 6), "cluster_iou": CLUSTER_IOU,
                          "min_eye_distance_px": MIN_EYE_DISTANCE},
            "mesh_crop": {"scales": list(MESH_CROP_SCALES), "size_px": MESH_CROP_SIZE,
                          "eye_tolerance": MESH_CROP_EYE_TOL, "min_confidence": MESH_CROP_MIN_CONFIDENCE,
                          "max_faces": MESH_CROP_MAX_FACES, "tries_per_face": MESH_CROP_TRIES},
            "pose": {"model": "BlazePose full (model_complexity 1)", "points": list(POSE_FIVE),
                     "when": "no face, or a detection found by one kind of pass",
                     "min_visibility": POSE_MIN_VISIBILITY,
                     "agree_tolerance": POSE_AGREE_TOL, "mouth_down": list(POSE_MOUTH_DOWN),
                     "mouth_side": POSE_MOUTH_SIDE, "max_roll_deg": POSE_MAX_ROLL,
                     "crop_scales": list(POSE_CROP_SCALES), "crop_size_px": POSE_CROP_SIZE,
                     "crop_centre": POSE_CROP_CENTRE},
        }

    def _detect_faces(self, image: np.ndarray, model: int) -> list[tuple[np.ndarray, float]]:
        """BlazeFace (model 0: short range, 1: full range) -> [(6 keypoints + 4 box corners in pixels, score)]."""
        self._fresh()
        det = self._detectors.get(model)
        img = np.ascontiguousarray(image)
        if det is None:
            from mediapipe.python.solutions import face_detection

            with _filtered_native_stderr():
                det = self._detectors[model] = face_detection.FaceDetection(
                    min_detection_confidence=self.min_detection_confidence, model_selection=model)
                res = det.process(img)
        else:
            res = det.process(img)
        h, w = image.shape[:2]
        out = []
        for d in res.detections or ():
            ld = d.location_data
            kp = np.array([[p.x, p.y] for p in ld.relative_keypoints], np.float64)[:6]
            b = ld.relative_bounding_box
            box = np.array([[b.xmin, b.ymin], [b.xmin + b.width, b.ymin + b.height]], np.float64)
            if kp.shape != (6, 2):
                continue
            out.append((np.vstack([kp, box]) * [w, h], float(d.score[0]) if d.score else math.nan))
        return out

    def _detection_candidates(self, image: np.ndarray) -> list[tuple[str, np.ndarray, float]]:
        """Every face of every detection pass: [(pass name, 6 keypoints + 2 box corners in pixels, score)]
        in pass order (``DETECTION_PASSES``, then ``tiles``: scores >= DETECTION_TILES_MIN_SCORE only)."""
        import cv2

        h, w = image.shape[:2]
        p = int(round(DETECTION_PAD * max(h, w)))
        padded = cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_CONSTANT, value=(0, 0, 0)) if p else image
        out = []
        for name, model, pad in DETECTION_PASSES:
            src = padded if pad else image
            out += [(name, pts - (p if pad else 0), sc) for pts, sc in self._detect_faces(src, model)]
        for n, frac in DETECTION_TILES:
            th, tw = max(1, int(h * frac)), max(1, int(w * frac))
            for y0 in np.linspace(0, h - th, n).astype(int):
                for x0 in np.linspace(0, w - tw, n).astype(int):
                    tile = image[y0:y0 + th, x0:x0 + tw]
                    for model in (1, 0):
                        out += [("tiles", pts + [x0, y0], sc) for pts, sc in self._detect_faces(tile, model)
                                if sc >= DETECTION_TILES_MIN_SCORE]
        return out

    def _crop_mesh(self, image: np.ndarray, box: np.ndarray, scale: float) -> np.ndarray | None:
        """Face mesh (468 points, image pixels) on the square crop of side ``scale`` x the box's long side
        around the box centre, resampled to MESH_CROP_SIZE px (black outside the image); None if no face."""
        import cv2

        self._fresh()
        (x0, y0), (x1, y1) = box
        k = MESH_CROP_SIZE / (scale * max(x1 - x0, y1 - y0, 1e-6))
        t = np.array([MESH_CROP_SIZE / 2 - k * (x0 + x1) / 2, MESH_CROP_SIZE / 2 - k * (y0 + y1) / 2])
        m = np.array([[k, 0, t[0]], [0, k, t[1]]])
        crop = cv2.warpAffine(image, m, (MESH_CROP_SIZE, MESH_CROP_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        crop = np.ascontiguousarray(crop)
        if self._crop_mesh_graph is None:
            from mediapipe.python.solutions import face_mesh

            with _filtered_native_stderr():  # graph start logs on the first call
                self._crop_mesh_graph = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                           refine_landmarks=False,
                                                           min_detection_confidence=MESH_CROP_MIN_CONFIDENCE)
                res = self._crop_mesh_graph.process(crop)
        else:
            res = self._crop_mesh_graph.process(crop)
        if not res.multi_face_landmarks:
            return None
        d = np.array([[q.x, q.y] for q in res.multi_face_landmarks[0].landmark], np.float64)[:468]
        return (d * MESH_CROP_SIZE - t) / k

    def _fallback(self, image: np.ndarray,
                  back_scale: float = 1.0) -> tuple[str, np.ndarray, float, np.ndarray | None, int] | None:
        """Where the mesh finds no face: (pass, detection points, score, dense mesh or None, support) or None;
        support = how many kinds of pass found the kept face (:func:`_support`).

        1. ``mesh-crop``: detections are grouped into faces (boxes overlapping by IoU > CLUSTER_IOU, best
           score first); for each face, the mesh is re-run on crops around its best detections
           (:meth:`_crop_mesh`) and kept if its eyes agree with the detection's. Among the faces so
           confirmed, those seen by the earliest pass win, then :func:`choose_face`.
        2. ``detection``: otherwise the first pass with a face, as before, then :func:`choose_face`.
        Faces whose eyes are less than MIN_EYE_DISTANCE original pixels apart (``back_scale``: original
        pixels per pixel of ``image``) are never kept."""
        cands = [c for c in self._detection_candidates(image)
                 if np.linalg.norm(c[1][1] - c[1][0]) * back_scale >= MIN_EYE_DISTANCE]
        if not cands:
            return None
        faces: list[list[int]] = []
        for i in sorted(range(len(cands)), key=lambda i: -cands[i][2]):
            for f in faces:
                if _box_iou(cands[f[0]][1][6:], cands[i][1][6:]) > CLUSTER_IOU:
                    f.append(i)
                    break
            else:
                faces.append([i])
        confirmed = []  # (face's earliest pass rank, detection index, dense)
        rank = {name: r for r, (name, _, _) in enumerate(DETECTION_PASSES + (("tiles", 0, False),))}
        for f in faces[:MESH_CROP_MAX_FACES]:
            hit = None
            for i in f[:MESH_CROP_TRIES]:
                kp = cands[i][1]
                for scale in MESH_CROP_SCALES:
                    dense = self._crop_mesh(image, kp[6:], scale)
                    if dense is not None and _eyes_agree(mesh_to_five(dense), kp):
                        hit = (i, dense)
                        break
                if hit:
                    break
            if hit:
                confirmed.append((min(rank[cands[j][0]] for j in f), *hit))
        if confirmed:
            first = min(c[0] for c in confirmed)
            confirmed = [c for c in confirmed if c[0] == first]
            _, i, dense = confirmed[choose_face([mesh_to_five(c[2]) for c in confirmed], image.shape[:2])]
            return cands[i][0], cands[i][1], cands[i][2], dense, _support(cands, cands[i][1])
        for name in rank:  # pass order
            found = [c for c in cands if c[0] == name]
            if found:
                name, pts, score = found[choose_face([c[1] for c in found], image.shape[:2])]
                return name, pts, score, None, _support(cands, pts)
        return None

    def _pose_points(self, image: np.ndarray) -> np.ndarray | None:
        """BlazePose's 11 face keypoints of its one person (x, y in ``image`` pixels, visibility), or None."""
        self._fresh()
        img = np.ascontiguousarray(image)
        if self._pose is None:
            from mediapipe.python.solutions import pose

            with _filtered_native_stderr():  # graph start logs on the first call
                self._pose = pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=False,
                                       min_detection_confidence=self.min_detection_confidence)
                res = self._pose.process(img)
        else:
            res = self._pose.process(img)
        if not res.pose_landmarks:
            return None
        h, w = image.shape[:2]
        return np.array([[q.x * w, q.y * h, q.visibility] for q in res.pose_landmarks.landmark][:11], np.float64)

    def _pose_step(self, image: np.ndarray, back_scale: float = 1.0):
        """The face of BlazePose's person: (method, 5 points, score, dense mesh or None, detection points or
        None) in ``image`` pixels, or None. Pose places the face; its own points are coarse, so first
        BlazeFace (both models) runs on square crops around it (POSE_CROP_SCALES x the span of pose's 11 face
        points, resampled to POSE_CROP_SIZE px) and the best detection centred on pose's face is checked with
        the crop mesh (method ``mesh-crop``, pass ``pose``). Else pose's own 5 points (method ``pose``, score =
        min visibility), else that detection (method ``detection``, pass ``pose``). Every answer must have
        all of pose's eyes and mouth corners visible (POSE_MIN_VISIBILITY), eyes >= MIN_EYE_DISTANCE original
        pixels apart, and be arranged like a face (:func:`plausible_face`)."""
        import cv2

        pts = self._pose_points(image)
        if pts is None or float(pts[list(POSE_FIVE), 2][[0, 1, 3, 4]].min()) < POSE_MIN_VISIBILITY:
            return None
        xy, vis = pts[:, :2], float(pts[list(POSE_FIVE), 2][[0, 1, 3, 4]].min())
        centre, span = xy.mean(0), max(float(np.ptp(xy, axis=0).max()), 1.0)
        big_enough = lambda f: np.linalg.norm(f[1] - f[0]) * back_scale >= MIN_EYE_DISTANCE  # noqa: E731
        det = None
        for f in POSE_CROP_SCALES:
            k = POSE_CROP_SIZE / max(f * span, 16.0)
            t = POSE_CROP_SIZE / 2 - k * centre
            crop = cv2.warpAffine(image, np.array([[k, 0, t[0]], [0, k, t[1]]]), (POSE_CROP_SIZE, POSE_CROP_SIZE),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            found = [((d - t) / k, sc) for model in (0, 1) for d, sc in self._detect_faces(crop, model)]
            found = [(d, sc) for d, sc in found if np.linalg.norm(d[:2].mean(0) - centre) <= POSE_CROP_CENTRE * span
                     and big_enough(d[:2]) and plausible_face(detection_to_five(d[:6]))]
            if found:
                det = max(found, key=lambda x: x[1])
                break
        if det is not None:
            for scale in MESH_CROP_SCALES:
                dense = self._crop_mesh(image, det[0][6:], scale)
                if dense is not None and _eyes_agree(mesh_to_five(dense), det[0]):
                    return "mesh-crop", mesh_to_five(dense), det[1], dense, det[0]
        five = pose_to_five(xy)
        if big_enough(five) and plausible_face(five):
            return "pose", five, vis, None, None
        if det is not None:
            return "detection", detection_to_five(det[0][:6]), det[1], None, det[0]
        return None
