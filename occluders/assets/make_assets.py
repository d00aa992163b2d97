"""Generate the project-made RGBA occluder assets in this folder (and their occluders.yaml).

    python occluders/assets/make_assets.py

Everything is drawn procedurally with occbench.synth.occluders.functional (no external images), so
re-running gives byte-identical PNGs for the same OpenCV. The anchors written to occluders.yaml are
the asset-pixel positions of the points each drawing was built around.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from occbench.io.atomic import atomic_write_bytes, atomic_write_text
from occbench.synth.occluders import functional as F

HERE = Path(__file__).resolve().parent


class Canvas:
    def __init__(self, w: int, h: int):
        self.h, self.w = h, w
        self.prem = np.zeros((h, w, 3), np.float32)  # premultiplied colour
        self.a = np.zeros((h, w), np.float32)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        self.u, self.v = xs, ys

    def paint(self, polys, colour, alpha=1.0, holes=(), shade=None, clip=()):
        cov = F.part_coverage((self.h, self.w), polys, list(holes), list(clip), (0.0, 0.0))
        if cov is None:
            return
        col = colour if isinstance(colour, np.ndarray) and colour.ndim == 3 else \
            np.broadcast_to(np.asarray(colour, np.float32), (self.h, self.w, 3))
        if shade is not None:
            col = col * np.asarray(shade, np.float32)[..., None]
        a = cov * np.float32(alpha)
        F.over_premultiplied(self.prem, self.a, (col * a[..., None]).astype(np.float32), a)

    def png(self) -> bytes:
        rgb = F.unpremultiply(self.prem, self.a)
        rgba = np.dstack([np.clip(np.rint(rgb), 0, 255), np.clip(np.rint(self.a * 255), 0, 255)])
        rgba = rgba.astype(np.uint8)
        rgba[rgba[..., 3] == 0, :3] = 0
        bgra = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)
        ok, buf = cv2.imencode(".png", bgra, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        assert ok
        return buf.tobytes()


def cylinder(c: Canvas, x0: float, x1: float, k: float = 0.45) -> np.ndarray:
    t = (c.u - (x0 + x1) / 2) / ((x1 - x0) / 2)
    return np.clip(1.05 - k * t * t + 0.12 * np.clip(-t, 0, 1) * (1 - np.abs(t)), 0.4, 1.2)


def mug() -> tuple[bytes, dict]:
    """A ceramic mug with a handle and a coloured band, seen from the side, held at the mouth."""
    c = Canvas(150, 132)
    body = np.vstack([F.ellipse(60, 18, 50, 9, start_deg=180, end_deg=360, n=30),
                      F.ellipse(60, 118, 46, 9, start_deg=0, end_deg=180, n=30)])
    handle_out = F.ellipse(112, 64, 30, 34)
    handle_in = F.ellipse(112, 64, 18, 22)
    red, cream = [196, 52, 48], [238, 232, 220]
    c.paint([handle_out], cream, holes=[handle_in], shade=np.clip(1.0 - 0.004 * np.abs(c.v - 64), 0.7, 1))
    c.paint([body], cream, shade=cylinder(c, 10, 110))
    band = np.array([[0, 58], [150, 58], [150, 78], [0, 78]], float)
    c.paint([band], red, clip=[body], shade=cylinder(c, 10, 110))
    c.paint([F.ellipse(60, 18, 50, 9)], [150, 144, 136])
    c.paint([F.ellipse(60, 19.5, 45, 7)], [70, 42, 28])  # coffee
    c.paint([F.ribbon(F.ellipse(60, 18, 50, 9), 2.0)], [250, 248, 242], alpha=0.9)
    meta = {"file": "mug.png", "name": "rgba_mug", "category": "rgba",
            "anchor": {"kind": "center", "target": "mouth_center", "point": [60.0, 70.0], "width": 62.0},
            "relight": 0.25}
    return c.png(), meta


def phone() -> tuple[bytes, dict]:
    """A smartphone held up against the cheek: dark body, glossy screen, camera notch."""
    c = Canvas(84, 160)
    body = F.catmull_rom(np.array([[10, 2], [74, 2], [82, 10], [82, 150], [74, 158], [10, 158], [2, 150], [2, 10]],
                                  float), samples=6)
    c.paint([body], [28, 30, 34])
    screen = np.array([[7, 10], [77, 10], [77, 150], [7, 150]], float)
    grad = F.texture_rgb({"kind": "gradient", "colors": [[40, 70, 120], [150, 90, 140]],
                          "axis_from": [7, 10], "axis_to": [77, 150]}, c.u, c.v, 1.0)
    c.paint([screen], grad)
    glare = np.array([[40, 10], [77, 10], [77, 40], [7, 120], [7, 90]], float)
    c.paint([glare], [255, 255, 255], alpha=0.12, clip=[screen])
    c.paint([F.ellipse(42, 6, 7, 2.2)], [8, 8, 10])
    c.paint([F.ribbon(body, 1.6)], [120, 122, 128], alpha=0.8)
    meta = {"file": "phone.png", "name": "rgba_phone", "category": "rgba",
            "anchor": {"kind": "center", "target": "left_cheek", "point": [42.0, 92.0], "width": 34.0},
            "relight": 0.1}
    return c.png(), meta


def sport_mask() -> tuple[bytes, dict]:
    """A two-tone sports face mask (anchored by nose-bridge and chin points: 2-point similarity)."""
    c = Canvas(176, 140)
    nose, chin = (88.0, 10.0), (88.0, 128.0)
    outline = F.catmull_rom(np.array([[88, 10], [118, 13], [150, 22], [170, 34], [168, 64], [152, 98],
                                      [124, 120], [88, 129], [52, 120], [24, 98], [8, 64], [6, 34], [26, 22],
                                      [58, 13]], float), samples=10)
    dark, light = [40, 44, 52], [220, 80, 40]
    c.paint([outline], dark, shade=cylinder(c, 6, 170, 0.35))
    for side in (1, -1):
        panel = np.array([[88 + side * 46, 0], [88 + side * 90, 0], [88 + side * 90, 140], [88 + side * 52, 140],
                          [88 + side * 40, 70]], float)
        c.paint([panel], light, clip=[outline], shade=cylinder(c, 6, 170, 0.35))
    vent = F.ellipse(88, 76, 16, 11)
    c.paint([vent], [70, 74, 82])
    for k in range(-2, 3):
        c.paint([F.ribbon(np.array([[76.0, 76 + 4 * k], [100.0, 76 + 4 * k]]), 1.6)], [20, 22, 26])
    c.paint([outline], [15, 15, 18], alpha=0.6, holes=[F.offset_closed(outline, -2.5)])
    meta = {"file": "sport_mask.png", "name": "rgba_sport_mask", "category": "mask",
            "anchor": {"kind": "lower_face", "points": {"nose_bridge": list(nose), "chin": list(chin)}},
            "relight": 0.3}
    return c.png(), meta


def sleep_mask() -> tuple[bytes, dict]:
    """A padded eye (sleep) mask over both eyes (anchored by the two eye points)."""
    c = Canvas(180, 72)
    le, re = (52.0, 38.0), (128.0, 38.0)
    outline = F.catmull_rom(np.array([[90, 14], [130, 4], [166, 12], [178, 36], [166, 58], [130, 64], [104, 58],
                                      [90, 46], [76, 58], [50, 64], [14, 58], [2, 36], [14, 12], [50, 4]], float),
                            samples=10)
    tex = F.texture_rgb({"kind": "fabric", "colors": [[70, 40, 110], [100, 64, 140]], "cell": 6.0, "seed": 7},
                        c.u, c.v, 1.0)
    c.paint([outline], tex, shade=np.clip(1.08 - 0.35 * ((c.v - 34) / 34) ** 2, 0.6, 1.1))
    c.paint([outline], [230, 210, 240], alpha=0.7, holes=[F.offset_closed(outline, -2.4)])
    for e in (le, re):
        c.paint([F.ellipse(e[0], e[1] + 2, 20, 11)], [255, 255, 255], alpha=0.08)
    meta = {"file": "sleep_mask.png", "name": "rgba_sleep_mask", "category": "rgba",
            "anchor": {"kind": "eyes", "points": {"left_eye": list(le), "right_eye": list(re)}},
            "relight": 0.3}
    return c.png(), meta


def main() -> None:
    entries = []
    for make in (mug, phone, sport_mask, sleep_mask):
        data, meta = make()
        atomic_write_bytes(HERE / meta["file"], data)
        entries.append(meta)
    header = ("# Project-made RGBA occluders, generated by make_assets.py (edit that script, then re-run it).\n"
              "# Anchor points are in each PNG's own pixel coordinates; see occluders/README.md.\n")
    atomic_write_text(HERE / "occluders.yaml", header + yaml.safe_dump({"occluders": entries}, sort_keys=False))
    total = sum((HERE / e["file"]).stat().st_size for e in entries)
    print(f"wrote {len(entries)} assets, {total / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
