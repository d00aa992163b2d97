"""A face diagram coloured by a value per part (e.g. the pp of accuracy lost when that part is covered)."""
from __future__ import annotations

import io
import math
import os

import numpy as np

from .geometry import ARCFACE_112, FaceLandmarks
from .parts import PartSet, face_part_map, load_parts


def part_values_image(values: dict[str, float | None], scale: int = 4,
                      parts: PartSet | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(float image with NaN where no value, uint8 label map) on the mean face at 112*scale px.

    A part takes its own value, else the value of the first group (in file order) that holds it."""
    parts = parts or load_parts()
    labels = face_part_map(FaceLandmarks(ARCFACE_112 * scale, source="template"), (112 * scale, 112 * scale),
                           parts).labels
    img = np.full(labels.shape, np.nan)
    for p in parts.parts:
        v = values.get(p.name)
        if v is None:
            v = next((values[g] for g, m in parts.groups.items() if p.name in m and values.get(g) is not None), None)
        if v is not None and math.isfinite(v):
            img[labels == p.id] = float(v)
    return img, labels


def part_diagram(values: dict[str, float | None], path: str | os.PathLike | None = None,
                 title: str = "accuracy lost when the part is covered (pp)", cmap: str = "Reds",
                 parts: PartSet | None = None) -> bytes:
    """PNG bytes of the diagram (also written atomically to ``path`` if given). Parts without a value
    are drawn light grey and labelled n/a."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    parts = parts or load_parts()
    img, labels = part_values_image(values, 4, parts)
    fig = Figure(figsize=(4.6, 4.4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    ax.imshow(np.where(labels > 0, 0.85, 1.0), cmap="gray", vmin=0, vmax=1)
    finite = img[np.isfinite(img)]
    vmax = max(float(np.abs(finite).max()), 1e-9) if finite.size else 1.0
    vmin = min(0.0, float(finite.min())) if finite.size else 0.0
    im = ax.imshow(np.ma.masked_invalid(img), cmap=cmap, vmin=vmin, vmax=vmax)
    for p in parts.parts:
        ys, xs = np.nonzero(labels == p.id)
        if not len(xs):
            continue
        v = img[ys[0], xs[0]]
        txt = "n/a" if not math.isfinite(v) else f"{v:.1f}"
        dark = math.isfinite(v) and (v - vmin) > 0.6 * (vmax - vmin)
        ax.text(float(xs.mean()), float(ys.mean()), txt, ha="center", va="center", fontsize=7,
                color="white" if dark else "black")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    data = buf.getvalue()
    if path is not None:
        from ..io.atomic import atomic_write_bytes

        atomic_write_bytes(path, data)
    return data
