"""Pictures of occlusion estimates: the best / worst contact sheet (input crop, true mask, predicted
mask), mask IoU against occluded area, and the 10 most confused pattern pairs.

Every number drawn here is also in the results JSON (``variants.<v>.occlusion.estimate``)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..io.atomic import atomic_write_bytes


def _overlay(crop: np.ndarray, mask: np.ndarray, colour) -> np.ndarray:
    """The crop with ``mask`` (h, w) in [0, 1] upsampled (nearest) and blended in ``colour``."""
    h, w = crop.shape[:2]
    m = cv2.resize(np.nan_to_num(mask.astype(np.float32)), (w, h), interpolation=cv2.INTER_NEAREST)[..., None]
    return (crop * (1 - 0.55 * m) + np.asarray(colour, np.float32) * 0.55 * m).astype(np.uint8)


def contact_sheet(path: Path, crops: np.ndarray, true_masks: np.ndarray, pred_masks: np.ndarray,
                  labels: list[str], title: str) -> Path:
    """Rows of [input crop | true mask (green) | predicted mask (red)] with a caption per row; PNG, atomic."""
    rows = []
    for crop, tm, pm, text in zip(crops, true_masks, pred_masks, labels):
        row = np.concatenate([crop, _overlay(crop, tm, (0, 200, 0)), _overlay(crop, pm, (230, 0, 0))], axis=1)
        band = np.full((16, row.shape[1], 3), 255, np.uint8)
        cv2.putText(band, text[:48], (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.concatenate([band, row], axis=0))
    if not rows:
        raise ValueError("contact sheet needs at least one crop")
    cols = 2
    while len(rows) % cols:
        rows.append(np.full_like(rows[0], 255))
    grid = np.concatenate([np.concatenate(rows[i:i + cols], axis=1) for i in range(0, len(rows), cols)], axis=0)
    head = np.full((22, grid.shape[1], 3), 255, np.uint8)
    cv2.putText(head, title[:110], (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
    img = np.concatenate([head, grid], axis=0)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    atomic_write_bytes(path, buf.tobytes())
    return Path(path)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_iou_vs_area(series: dict[str, list[dict]], path: Path, title: str) -> Path:
    """Mean per-image mask IoU per occluded-area bin, one line per variant (``by_area`` blocks)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, bins in series.items():
        xs = [(b["area_lo"] + b["area_hi"]) / 2 for b in bins if b["mask_iou_mean"] is not None]
        ys = [b["mask_iou_mean"] for b in bins if b["mask_iou_mean"] is not None]
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel("occluded share of the face frame (manifest area_frac, bin centre)")
    ax.set_ylabel("mask IoU of the occluded class (mean per image)")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_confused_patterns(confused: list[dict], k: int, path: Path, title: str) -> Path:
    """The most confused (true -> predicted) pattern pairs: each drawn as its two K x K rectangles
    (true green, predicted red) with the count."""
    from matplotlib.patches import Rectangle

    from ..synth.patterns import enumerate_patterns

    plt = _plt()
    rects = enumerate_patterns(k)
    n = max(len(confused), 1)
    fig, axes = plt.subplots(1, n, figsize=(1.5 * n + 0.4, 2.1), squeeze=False)
    for ax, c in zip(axes[0], confused):
        ax.set_xlim(0, k)
        ax.set_ylim(k, 0)
        ax.set_aspect("equal")
        ax.set_xticks(range(k + 1))
        ax.set_yticks(range(k + 1))
        ax.tick_params(labelbottom=False, labelleft=False, length=0)
        ax.grid(True, alpha=0.4)
        for lab, colour, fill in ((c["true"], "tab:green", 0.35), (c["pred"], "tab:red", 0.0)):
            y0, x0, y1, x1 = rects[lab]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor=colour, alpha=fill or 1.0,
                                   fill=bool(fill), edgecolor=colour, linewidth=2))
        ax.set_title(f"{c['true']}→{c['pred']}  n={c['count']}", fontsize=7)
    fig.suptitle(f"{title}: most confused patterns (green true, red predicted; 0 = clean)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def make_occlusion_plots(results, occ: dict | None, prefix: Path) -> tuple[list[Path], list[dict]]:
    """The occlusion-estimate pictures of a run (``curves["occlusion"]`` from ``bench.occlusion.attach``):
    ``<prefix>.occl_sheet.png``, ``<prefix>.occl_iou_area.png``, ``<prefix>.occl_confused.png``."""
    made: list[Path] = []
    skipped: list[dict] = []
    if not occ:
        return made, skipped
    title = f"{results.model['name']} on {results.protocol['name']}"
    sheet = occ.get("sheet")
    if sheet:
        made.append(contact_sheet(Path(f"{prefix}.occl_sheet.png"), sheet["crops"], sheet["true"], sheet["pred"],
                                  sheet["labels"], f"{title}, {sheet['set']}: best / worst mask IoU "
                                                   "(input | truth green | predicted red)"))
    if occ.get("iou_area"):
        made.append(plot_iou_vs_area(occ["iou_area"], Path(f"{prefix}.occl_iou_area.png"), title))
    conf = occ.get("confused")
    if conf and conf[1] and occ.get("k"):
        made.append(plot_confused_patterns(conf[1], occ["k"], Path(f"{prefix}.occl_confused.png"), f"{title}, {conf[0]}"))
    elif conf:
        skipped.append({"plot": "occl_confused", "why": "no confused pattern pair (every pattern right)"})
    for sk in skipped:
        Path(f"{prefix}.{sk['plot']}.png").unlink(missing_ok=True)
    return made, skipped


def region_boxes(names: list[str]) -> dict[str, tuple[float, float, float, float]]:
    """Face-frame rectangles (x0, y0, x1, y1) of fixed-region occluders (``occluders/regions.yaml``):
    block occluders with a single region and a fixed aspect."""
    import math

    from ..synth.occluders import create_occluder

    out = {}
    for n in names:
        cfg = create_occluder(n).cfg
        regions = cfg.get("regions") or {}
        lo, hi = cfg.get("aspect", (1.0, 1.0))
        if len(regions) != 1 or lo != hi:
            continue
        (cx, cy), = [r["center"] for r in regions.values()]
        w, h = cfg["size"] * math.sqrt(lo), cfg["size"] / math.sqrt(lo)
        out[n] = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    return out


def plot_region_accuracy(results, path: Path, metric_name: str = "accuracy") -> Path | None:
    """FROM's fixed-region test as a face-frame picture: each region's rectangle (one panel per region,
    on the 112x112 face frame with the 5 template points) coloured by its variant's accuracy, with the
    drop from clean. None when the results have no fixed-region variants."""
    from ..face.geometry import ARCFACE_112

    rows = [(v.name, v.spec.get("occluder"), v.metrics.get(metric_name)) for v in results.variants.values()
            if v.spec.get("group") == "occluder" and str(v.spec.get("occluder", "")).startswith("region_")]
    boxes = region_boxes([r[1] for r in rows])
    rows = [r for r in rows if r[1] in boxes and r[2] is not None]
    if not rows:
        return None
    clean = results.variants.get("clean")
    base = clean.metrics.get(metric_name) if clean is not None else None
    plt = _plt()
    from matplotlib.patches import Rectangle

    cmap = plt.get_cmap("RdYlGn")
    accs = [r[2] for r in rows]
    lo, hi = min(accs + ([base] if base is not None else [])), max(accs + ([base] if base is not None else []))
    norm = plt.Normalize(vmin=lo - 1e-9, vmax=hi + 1e-9)
    cols = min(6, len(rows))
    nrow = -(-len(rows) // cols)
    fig, axes = plt.subplots(nrow, cols, figsize=(1.9 * cols, 2.15 * nrow + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (vname, occ, acc) in zip(axes.ravel(), rows):
        x0, y0, x1, y1 = boxes[occ]
        ax.add_patch(Rectangle((0, 0), 112, 112, facecolor="whitesmoke", edgecolor="grey"))
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor=cmap(norm(acc)), edgecolor="black"))
        ax.plot(ARCFACE_112[:, 0], ARCFACE_112[:, 1], "k.", markersize=3)
        ax.set_xlim(0, 112)
        ax.set_ylim(112, 0)
        ax.set_aspect("equal")
        drop = f" ({100 * (acc - base):+.1f})" if base is not None else ""
        ax.set_title(f"{occ.removeprefix('region_')}\n{100 * acc:.1f}%{drop}", fontsize=8)
    head = f"clean {100 * base:.1f}%" if base is not None else ""
    fig.suptitle(f"{results.model['name']} on {results.protocol['name']}: {metric_name} with one face-frame "
                 f"region covered (change from clean in points); {head}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def extra_plots(results, curves: dict, prefix: Path) -> tuple[list[Path], list[dict]]:
    """The plots of this module that apply to a run (hook for ``bench.plots.make_plots``): occlusion
    estimates (models with outputs) and the fixed-region picture (``from-regions``, any model)."""
    made, skipped = make_occlusion_plots(results, curves.get("occlusion"), prefix)
    p = plot_region_accuracy(results, Path(f"{prefix}.regions.png"))
    if p is not None:
        made.append(p)
    return made, skipped
