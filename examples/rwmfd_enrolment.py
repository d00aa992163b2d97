"""Enrolment on real masked faces: how many RWMFD images get landmarks, and from which step of the chain.

Runs occbench's ``mediapipe`` landmarker (face mesh; where it finds no face, BlazeFace detection in
its full / short / tiles passes, each detected face checked by re-running the mesh on a crop around
it; where that leaves no face or a detection only one kind of pass found, BlazePose's person and
BlazeFace on crops around its face) on every image of ``../shared/realdata/rwmfd-masked`` (real photos
of masked faces, no identities), then writes:

* ``OUT/landmarks.csv``: the landmarks table (one row per image: points, status, reason, source,
  method), the same table ``occbench synth`` / ``eval`` write;
* ``OUT/enrolment.json``: counts per method and per detection pass, and the enrolment rate;
* ``OUT/alignments.png`` (or ``--sheet FILE``): a contact sheet of ``--sample`` images aligned to the
  112x112 ArcFace crop, each labelled with its method (M mesh, C mesh-crop, D detection, P pose; then
  the detection pass: f full / full-padded, s short / short-padded, t tiles, p crops around pose's
  face; "x" = judged wrong by eye, with ``--judged``); the green dots are the found 5 points after
  the warp, the red crosses the template's, so a good alignment shows them on top of each other and
  on the eyes, nose and mouth.

    python examples/rwmfd_enrolment.py                       # -> results/rwmfd-enrolment/
    python examples/rwmfd_enrolment.py --sample 48 --sheet docs/rwmfd-alignments.png \
        --judged tests/rwmfd_judged_alignments.csv    # + how many alignments were judged right by eye

``--keys 0002/0050.jpg,0002/0075.jpg`` (or a file of keys, one per line) runs only those images and puts
every one that enrolled on the sheet; ``--sheet-only not-right`` (with ``--judged``) puts only the
alignments not judged right on the sheet, ``--sheet-only unjudged`` only those no judged alignment
matches (new ones, to judge by eye). ``--sample 0`` writes no sheet.

``--judged`` takes alignments judged by eye (``key, eye0_x_px, eye0_y_px, eye1_x_px, eye1_y_px,
correct``, optionally ``judge``: who judged it): a found alignment matches a judged one when both eyes lie
within 0.3 eye distances (where several rows match, the last one in the file wins: a re-judgement is a new
row), and the summary counts, per method, the alignments judged right, wrong, or not judged.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "realdata" / "rwmfd-masked" / "RWMFD_part_1"


def contact_sheet(items: list[tuple[str, np.ndarray, np.ndarray, str]], cols: int, out: Path) -> None:
    """items: (label, rgb image, five points, method) -> a grid of 112x112 aligned crops with labels."""
    from occbench.face.geometry import ARCFACE_112, align, apply_affine

    tile_h = 112 + 14
    rows = -(-len(items) // cols)
    sheet = np.full((rows * tile_h, cols * 112, 3), 255, np.uint8)
    for i, (label, img, five, method) in enumerate(items):
        crop, m = align(img, five, "arcface112")
        crop = np.ascontiguousarray(crop)
        for x, y in ARCFACE_112:
            cv2.drawMarker(crop, (int(round(x)), int(round(y))), (255, 0, 0), cv2.MARKER_CROSS, 6, 1)
        for x, y in apply_affine(m, five):
            cv2.circle(crop, (int(round(x)), int(round(y))), 2, (0, 200, 0), -1)
        r, c = divmod(i, cols)
        sheet[r * tile_h:r * tile_h + 112, c * 112:(c + 1) * 112] = crop
        cv2.putText(sheet, f"{method} {label}"[:22], (c * 112 + 2, r * tile_h + 123), cv2.FONT_HERSHEY_PLAIN, 0.75,
                    (0, 0, 0), 1, cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    # a 256-colour palette keeps a 48-face sheet under 500 KB (for docs/) with no visible loss at this size
    Image.fromarray(sheet).quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def judge(rows: list[dict], judged_csv: Path) -> tuple[dict, dict]:
    """Found alignments of ``rows`` against the judged ones: ({method: {correct, wrong, unjudged}},
    {key: True (judged right) / False (judged wrong)})."""
    import pandas as pd

    judged = pd.read_csv(judged_csv, dtype={"key": str})
    by_key = {k: g[["eye0_x_px", "eye0_y_px", "eye1_x_px", "eye1_y_px", "correct"]].to_numpy(float)
              for k, g in judged.groupby("key")}
    out: dict = {}
    verdict: dict = {}
    for r in rows:
        if r["status"] != "ok":
            continue
        eyes = np.array([[r["x0"], r["y0"]], [r["x1"], r["y1"]]])
        tol = 0.3 * float(np.linalg.norm(eyes[1] - eyes[0]))
        hit = [j[4] for j in by_key.get(r["key"], []) if np.linalg.norm(j[:4].reshape(2, 2) - eyes, axis=1).max() < tol]
        c = out.setdefault(r["method"], {"correct": 0, "wrong": 0, "unjudged": []})
        if not hit:
            c["unjudged"].append(r["key"])
        else:  # the latest matching row wins: a re-judged alignment gets a new row below the old one
            c["correct" if hit[-1] else "wrong"] += 1
            verdict[r["key"]] = bool(hit[-1])
    return out, verdict


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help="folder of images (searched recursively)")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "rwmfd-enrolment")
    ap.add_argument("--sample", type=int, default=48, help="images on the contact sheet")
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--sheet", type=Path, default=None, help="contact sheet path (default OUT/alignments.png)")
    ap.add_argument("--no-fallback", action="store_true", help="face mesh only (the 0.2 behaviour)")
    ap.add_argument("--judged", type=Path, default=None,
                    help="CSV of alignments judged by eye: count the right / wrong ones per method")
    ap.add_argument("--keys", default=None,
                    help="only these images (comma-separated keys such as 0002/0050.jpg, or a file of keys one per "
                         "line); the sheet then shows every one of them that enrolled")
    ap.add_argument("--sheet-only", choices=("not-right", "unjudged"), default=None,
                    help="the sheet shows only the enrolled images not judged right (needs --judged), or only "
                         "those with no matching judged alignment (new alignments to judge by eye)")
    a = ap.parse_args(argv)

    from occbench.face.landmarks import create_landmarker, landmarks_to_row, write_landmarks_table
    from occbench.io.images import read_rgb

    files = sorted(p for p in a.src.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if a.sheet_only and not a.judged:
        ap.error("--sheet-only needs --judged")
    if a.keys:
        wanted = _keys(a.keys)
        files = [p for p in files if p.relative_to(a.src).as_posix() in wanted]
        missing = sorted(wanted - {p.relative_to(a.src).as_posix() for p in files})
        if missing:
            ap.error(f"--keys: {len(missing)} key(s) not under {a.src}, e.g. {', '.join(missing[:3])}")
    if not files:
        print(f"no images under {a.src} (RWMFD is expected in ../shared/realdata/rwmfd-masked)", file=sys.stderr)
        return 1
    lmk = create_landmarker("mediapipe", detection_fallback=not a.no_fallback)
    rows, found = [], []
    t0 = time.perf_counter()
    for p in files:
        key = p.relative_to(a.src).as_posix()
        img = read_rgb(p)
        res = lmk.detect(img, key=key)
        rows.append(landmarks_to_row(key, res))
        if res.ok:
            found.append((key, img, res.landmarks.five, res.landmarks.method, res.landmarks.source))
    lmk.close()
    dt = time.perf_counter() - t0
    a.out.mkdir(parents=True, exist_ok=True)
    write_landmarks_table(rows, a.out / "landmarks.csv")
    by_method = Counter(r["method"] or "none" for r in rows)
    by_source = Counter(r["source"] or "none" for r in rows)
    n = len(rows)
    summary = {"images": n, "enrolled": len(found), "enrolment_rate": len(found) / n,
               "by_method": dict(by_method), "by_source": dict(by_source), "seconds": round(dt, 1),
               "landmarker": create_landmarker("mediapipe", detection_fallback=not a.no_fallback).describe(),
               "src": str(a.src)}
    verdict = {}
    if a.judged:
        counts, verdict = judge(rows, a.judged)
        summary["judged"] = {"file": str(a.judged), **counts}
    (a.out / "enrolment.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{n} images, {len(found)} enrolled ({100 * len(found) / n:.1f} %) in {dt:.0f} s")
    if a.judged:
        j = summary["judged"]
        right = sum(v["correct"] for k, v in j.items() if k != "file")
        wrong = sum(v["wrong"] for k, v in j.items() if k != "file")
        unjudged = sum(len(v["unjudged"]) for k, v in j.items() if k != "file")
        print(f"  judged by eye: {right} right ({100 * right / n:.1f} %), {wrong} wrong, {unjudged} not judged; "
              + ", ".join(f"{k} {v['correct']}/{v['wrong']}/{len(v['unjudged'])}" for k, v in j.items() if k != "file")
              + " (right/wrong/not judged)")
    for k, v in sorted(by_source.items(), key=lambda kv: -kv[1]):
        print(f"  {k:32s} {v:4d}  ({100 * v / n:.1f} %)")
    # the sheet: half fallback images (mesh-crop and detection: what needs checking), half mesh ones,
    # each spread evenly over the sorted keys
    det = [f for f in found if f[3] != "mesh"]
    mesh = [f for f in found if f[3] == "mesh"]
    n_det = min(len(det), a.sample - min(len(mesh), a.sample // 2))
    spread = lambda xs, k: [xs[int(i * len(xs) / k)] for i in range(k)] if k else []  # noqa: E731
    pick = spread(det, n_det) + spread(mesh, min(len(mesh), a.sample - n_det))
    if a.keys or a.sheet_only:  # every image asked for (or every one of the kind asked for), in key order
        pick = [f for f in found if a.sheet_only is None or (a.sheet_only == "not-right" and not verdict.get(f[0]))
                or (a.sheet_only == "unjudged" and f[0] not in verdict)]
    label = {"mesh": "M", "mesh-crop": "C", "detection": "D", "pose": "P"}
    items = [(k.split("/")[-2] + "/" + k.split("/")[-1][:4] if "/" in k else k, img, five,
              ("x " if verdict.get(k) is False else "")  # judged wrong by eye
              + label.get(m, m) + (src.split("/")[-1][0] if m not in ("mesh", "pose") else ""))
             for k, img, five, m, src in pick]
    sheet = a.sheet or a.out / "alignments.png"
    if not items:  # --sample 0, or nothing of the kind asked for: no sheet
        print(f"wrote {a.out / 'landmarks.csv'}, {a.out / 'enrolment.json'} (no contact sheet: no image to show)")
        return 0
    contact_sheet(items, a.cols, sheet)
    print(f"wrote {a.out / 'landmarks.csv'}, {a.out / 'enrolment.json'}, {sheet} "
          f"(M = mesh, C = mesh-crop, D = detection, P = pose; f/s/t/p = full / short / tiles / pose-crop pass)")
    return 0


def _keys(spec: str) -> set[str]:
    """--keys: comma-separated keys, or a file of keys one per line."""
    p = Path(spec)
    text = p.read_text() if p.is_file() else spec.replace(",", "\n")
    return {k.strip() for k in text.splitlines() if k.strip()}


if __name__ == "__main__":
    sys.exit(main())
