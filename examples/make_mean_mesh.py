"""Build occbench/face/mean_mesh_arcface112.csv: MediaPipe's 468 face-mesh points, averaged in the
canonical 112x112 ArcFace face frame over real LFW faces.

Each image is meshed with occbench's ``mediapipe`` landmarker; its 468 points are mapped into the face
frame by the least-squares similarity that takes the face's 5 points (derived from the mesh) onto the
ArcFace template (``face_frame_transform``), then averaged point by point. Pre-aligned crops have no mesh
of their own: occbench.face.parts fits this mean mesh to their template points instead.

    .venv/bin/python examples/make_mean_mesh.py            # every 4th LFW image (~950 faces), ~1 min
    .venv/bin/python examples/make_mean_mesh.py --every 1 --out /tmp/mesh.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from occbench.face.geometry import apply_affine, face_frame_transform  # noqa: E402
from occbench.face.landmarks import create_landmarker  # noqa: E402
from occbench.io.images import read_rgb  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", default=str(REPO.parent / "shared" / "realdata" / "lfw-guesswho" / "lfw"))
    ap.add_argument("--every", type=int, default=4, help="use every N-th image of the sorted list")
    ap.add_argument("--out", default=str(REPO / "occbench" / "face" / "mean_mesh_arcface112.csv"))
    a = ap.parse_args(argv)
    paths = sorted(Path(a.lfw).glob("*/*.jpg"))[:: a.every]
    if not paths:
        print(f"no LFW images under {a.lfw}", file=sys.stderr)
        return 1
    meshes, missed = [], 0
    with create_landmarker("mediapipe") as lm:
        for p in paths:
            r = lm.detect(read_rgb(p))
            if not r.ok or r.landmarks.dense is None:
                missed += 1
                continue
            m = face_frame_transform(r.landmarks.five)
            meshes.append(apply_affine(m, r.landmarks.dense))
    arr = np.stack(meshes)
    mean, std = arr.mean(0), arr.std(0)
    lines = ["index,x,y"] + [f"{i},{x:.4f},{y:.4f}" for i, (x, y) in enumerate(mean)]
    Path(a.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(meshes)} faces ({missed} without a mesh) from {len(paths)} images -> {a.out}; "
          f"per-point std median {np.median(np.linalg.norm(std, axis=1)):.2f} px, "
          f"max {np.linalg.norm(std, axis=1).max():.2f} px (112x112 frame)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
