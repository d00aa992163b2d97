"""A face diagram coloured by a value per part (e.g. the pp of accuracy lost when that part is covered)."""
from __future__ import annotations

import io
import math
import os

import numpy as np

from .geometry import ARCFACE_112, FaceLandmarks
from .parts import PartSet, face_part_map, load_parts


def part_values_image(values: dict[str, float | None], scale: int = 4,
                      parts: PartSet | None = None, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(float image with NaN where no value, uint8 label map) on the mean face at (112 + 2 margin)*scale
    px (the ArcFace frame with ``margin`` frame px around it: the cheeks reach past the 112 crop).

    A part takes its own value, else the value of the first group (in file order) that holds it."""
    parts = parts or load_parts()
    side = int(round((112 + 2 * margin) * scale))
    labels = face_part_map(FaceLandmarks((ARCFACE_112 + margin) * scale, source="template"), (side, side),
                           parts).labels
    img = np.full(labels.shape, np.nan)
    for p in parts.parts:
        v = values.get(p.name)
        if v is None:
            v = next((values[g] for g, m in parts.groups.items() if p.name in m and values.get(g) is not None), None)
        if v is not None and math.isfinite(v):
            img[labels == p.id] = float(v)
    return img, labels


def _draw_panel(ax, img: np.ndarray, labels: np.ndarray, parts: PartSet, cmap: str, vmin: float, vmax: float,
                dark_from_zero: bool = True):
    """The face, its parts coloured and labelled; a label is white on a dark colour (far from 0 when
    ``dark_from_zero``, else far from ``vmin``)."""
    ax.imshow(np.where(labels > 0, 0.85, 1.0), cmap="gray", vmin=0, vmax=1)
    im = ax.imshow(np.ma.masked_invalid(img), cmap=cmap, vmin=vmin, vmax=vmax)
    for p in parts.parts:
        ys, xs = np.nonzero(labels == p.id)
        if not len(xs):
            continue
        v = img[ys[0], xs[0]]
        txt = "n/a" if not math.isfinite(v) else f"{v:.1f}"
        if dark_from_zero:
            dark = math.isfinite(v) and abs(v) > 0.6 * max(abs(vmin), abs(vmax))
        else:
            dark = math.isfinite(v) and (v - vmin) > 0.6 * (vmax - vmin)
        ax.text(float(xs.mean()), float(ys.mean()), txt, ha="center", va="center", fontsize=7,
                color="white" if dark else "black")
    ax.set_axis_off()
    return im


def part_diagrams(panels: dict[str, dict[str, float | None]], path: str | os.PathLike | None = None,
                  title: str = "accuracy lost when the part is covered (pp)", parts: PartSet | None = None) -> bytes:
    """PNG bytes of one face diagram per panel ({panel title: {part or group: value}}), side by side on
    one colour scale (a diverging one, centred on 0, when a value is negative); also written atomically
    to ``path`` if given. Parts without a value are light grey and labelled n/a."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("part_diagrams needs at least one panel")
    parts = parts or load_parts()
    drawn = {t: part_values_image(v, 4, parts, margin=14.0) for t, v in panels.items()}
    finite = np.concatenate([img[np.isfinite(img)] for img, _ in drawn.values()])
    if finite.size and finite.min() < 0:
        lim = max(float(np.abs(finite).max()), 1e-9)
        cmap, vmin, vmax = "RdBu_r", -lim, lim
    else:
        cmap, vmin, vmax = "Reds", 0.0, (max(float(finite.max()), 1e-9) if finite.size else 1.0)
    n = len(drawn)
    fig = Figure(figsize=(3.6 * n + 0.8, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
    im = None
    for ax, (t, (img, labels)) in zip(axes, drawn.items()):
        im = _draw_panel(ax, img, labels, parts, cmap, vmin, vmax)
        ax.set_title(t, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.colorbar(im, ax=axes, fraction=0.046 / n, pad=0.04)
    return _png(fig, path)


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
    finite = img[np.isfinite(img)]
    vmax = max(float(np.abs(finite).max()), 1e-9) if finite.size else 1.0
    vmin = min(0.0, float(finite.min())) if finite.size else 0.0
    im = _draw_panel(ax, img, labels, parts, cmap, vmin, vmax, dark_from_zero=False)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _png(fig, path)


def _png(fig, path: str | os.PathLike | None) -> bytes:
    """The figure as PNG bytes (no software stamp: same bytes every run), also written atomically to ``path``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    data = buf.getvalue()
    if path is not None:
        from ..io.atomic import atomic_write_bytes

        atomic_write_bytes(path, data)
    return data
