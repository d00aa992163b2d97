"""Result plots (matplotlib, Agg backend): ROC per variant, CMC (1:N), accuracy vs occluded area,
and the K x K map of the verification drop by occluded face-frame cell.

``make_plots(results, curves, prefix)`` writes ``<prefix>.<kind>.png`` and returns the paths written
and the plots skipped with why (a plot with no data is not drawn). Plots are for people; every number
in them is also in the results JSON or the scores Parquet.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

GROUP_STYLE = {"clean": ("black", "-", 2.2), "headline": ("tab:blue", "-", 2.2), "scale": (None, "--", 1.2),
               "occluder": (None, ":", 1.2), "placement": (None, "-.", 1.4)}
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
MIN_CELL_PAIRS = 5  # a K x K cell is coloured only when at least this many pairs cover it


def _curve_styles(names: list[str], specs: list[dict], cmap) -> list[tuple]:
    """(colour, linestyle, linewidth) per curve: clean black, the headline thick blue, every other
    curve its own colour from a qualitative map (blue left out), cycling line styles so neighbours
    differ twice."""
    out, j = [], 0
    for name, spec in zip(names, specs):
        group = spec.get("group")
        if group in ("clean", "headline"):
            colour, ls, lw = GROUP_STYLE[group]
        else:
            colour = cmap(1 + j % (cmap.N - 1))  # tab10 without its blue, which is the headline's
            ls, lw = LINESTYLES[j % len(LINESTYLES)], 1.3
            j += 1
        out.append((colour, ls, lw))
    return out


def _bold_headline(ax, specs: dict) -> None:
    leg = ax.get_legend()
    if leg is None:
        return
    for text in leg.get_texts():
        if specs.get(text.get_text(), {}).get("group") == "headline":
            text.set_fontweight("bold")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _style(ax, title: str, legend_loc: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc=legend_loc)


def _save(plt, fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_roc(curves: dict, path: Path, title: str, modes: list[str]) -> Path:
    """One panel per occlusion mode (clean as the reference in each); FAR on a log axis. Each curve
    has its own colour (qualitative map) and line style; the headline variant is bold in the legend."""
    plt = _plt()
    panels = modes or ["clean"]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 5.2), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, mode in zip(axes[0], panels):
        names = [n for n, (_, _, spec) in curves.items() if spec["mode"] in ("clean", mode)]
        specs = [curves[n][2] for n in names]
        for name, (colour, ls, lw) in zip(names, _curve_styles(names, specs, cmap)):
            far, tar, spec = curves[name]
            m = far > 0
            ax.plot(far[m], tar[m], linestyle=ls, lw=lw, color=colour, label=name)
        ax.set_xscale("log")
        left = max(1e-4, min((c[0][c[0] > 0].min() for c in curves.values() if (c[0] > 0).any()), default=1e-4))
        ax.set_xlim(left=min(left, 0.1), right=1.0)  # a curve with FAR only at 1.0 must not collapse the axis
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false accept rate")
        ax.set_ylabel("true accept rate")
        _style(ax, f"{title}: {mode}" if mode != "clean" else title, "lower right")
        _bold_headline(ax, dict(zip(names, specs)))
    fig.subplots_adjust(left=0.07 if len(panels) > 1 else 0.11, right=0.98, bottom=0.11, top=0.92, wspace=0.18)
    return _save(plt, fig, path)


def plot_cmc(curves: dict, path: Path, title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    cmap = plt.get_cmap("tab10")
    names = list(curves)
    specs = [curves[n][1] for n in names]
    for name, (colour, ls, lw) in zip(names, _curve_styles(names, specs, cmap)):
        curve = curves[name][0]
        r = np.arange(1, len(curve) + 1)
        ax.plot(r, curve, linestyle=ls, marker="o", ms=3, lw=lw, color=colour, label=name)
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate (mated probes)")
    ax.set_ylim(0, 1.01)
    _style(ax, title, "lower right")
    _bold_headline(ax, dict(zip(names, specs)))
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.11, top=0.92)
    return _save(plt, fig, path)


def plot_area(areas: dict, path: Path, title: str) -> Path:
    """Accuracy per occluded-area bin for the headline and placement variants; clean on the same pairs dashed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 4.8))
    cmap = plt.get_cmap("tab10")
    for i, (name, a) in enumerate(areas.items()):
        bins = a["bins"]
        x = np.array([(b["lo"] + b["hi"]) / 2 for b in bins])
        acc = np.array([np.nan if b["accuracy"] is None else b["accuracy"] for b in bins])
        n = [b["n"] for b in bins]
        c = cmap(i % 10)
        ax.plot(x, acc, "-o", color=c, label=f"{name}")
        if "clean_accuracy" in bins[0]:
            cl = np.array([np.nan if b.get("clean_accuracy") is None else b["clean_accuracy"] for b in bins])
            ax.plot(x, cl, "--", color=c, alpha=0.6, label=f"{name}: clean, same pairs")
        for xi, yi, ni in zip(x, acc, n):
            if ni and np.isfinite(yi):
                ax.annotate(str(ni), (xi, yi), textcoords="offset points", xytext=(0, 5), fontsize=6,
                            ha="center", color=c)
    edges = sorted({b["lo"] for a in areas.values() for b in a["bins"]} | {b["hi"] for a in areas.values()
                                                                            for b in a["bins"]})
    ax.set_xticks(edges)
    ax.set_xlabel("occluded fraction of the face frame (bin; numbers = pairs)")
    ax.set_ylabel("verification accuracy")
    ax.set_ylim(0, 1.02)
    _style(ax, title, "best")
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.11, top=0.92)
    return _save(plt, fig, path)


def plot_cells(cells: dict, path: Path, title: str, min_n: int = MIN_CELL_PAIRS) -> Path:
    """One K x K heatmap per variant: accuracy change (percentage points) when the cell is occluded.
    Cells covered by fewer than ``min_n`` pairs are printed but not coloured."""
    plt = _plt()
    names = list(cells)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.4), squeeze=False)
    drops = [np.array([[np.nan if v is None else v for v in row] for row in cells[n]["drop"]], float) * 100
             for n in names]
    shown = [np.where(np.array(cells[n]["n"]) >= min_n, d, np.nan) for n, d in zip(names, drops)]
    lim = max([np.nanmax(np.abs(d)) for d in shown if np.isfinite(d).any()] + [1.0])
    im = None
    for ax, name, d, d_shown in zip(axes[0], names, drops, shown):
        k = d.shape[0]
        im = ax.imshow(d_shown, cmap="RdBu", vmin=-lim, vmax=lim)
        n = np.array(cells[name]["n"])
        for r in range(k):
            for c in range(k):
                txt = "-" if not np.isfinite(d[r, c]) else f"{d[r, c]:+.1f}"
                ax.text(c, r, f"{txt}\nn={n[r, c]}", ha="center", va="center", fontsize=6)
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xlabel("cell column")
        ax.set_ylabel("cell row")
        ax.set_title(name, fontsize=9)
    fig.suptitle(f"{title}: accuracy change (pp) when a face-frame cell is occluded "
                 f"(uncoloured: < {min_n} pairs)", fontsize=10)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="percentage points vs clean, same pairs")
    return _save(plt, fig, path)


def _has_area_data(a: dict) -> bool:
    return any(b["n"] and b["accuracy"] is not None for b in a["bins"])


def _has_cell_data(c: dict, min_n: int = MIN_CELL_PAIRS) -> bool:
    return any(n >= min_n and d is not None for nrow, drow in zip(c["n"], c["drop"]) for n, d in zip(nrow, drow))


def make_plots(results, curves: dict, prefix: Path) -> tuple[list[Path], list[dict]]:
    """Write the plots that apply to the results (an ``EvalResult``); ``prefix`` is e.g.
    RESULTS/model/lfw-occ. Returns (paths written, [{"plot", "why"}] for plots skipped for lack of data)."""
    out: list[Path] = []
    skipped: list[dict] = []
    title = f"{results.model['name']} on {results.protocol['name']}"
    occ = results.protocol.get("occlusion") or {}
    modes = list(occ.get("modes", [])) if occ else []
    spec = {n: v.spec for n, v in results.variants.items()}
    if curves.get("roc"):
        out.append(plot_roc(curves["roc"], Path(f"{prefix}.roc.png"), title, modes))
    if curves.get("cmc"):
        out.append(plot_cmc(curves["cmc"], Path(f"{prefix}.cmc.png"), title))
    if curves.get("area"):
        keep = {n: a for n, a in curves["area"].items() if spec[n]["group"] in ("headline", "placement")}
        keep = {n: a for n, a in (keep or curves["area"]).items() if _has_area_data(a)}
        if keep:
            out.append(plot_area(keep, Path(f"{prefix}.area.png"), title))
        else:
            skipped.append({"plot": "area", "why": "no scored occluded pair in any area bin"})
    if curves.get("cells"):
        keep = {n: c for n, c in curves["cells"].items() if spec[n]["group"] == "headline"}
        keep = {n: c for n, c in (keep or curves["cells"]).items() if _has_cell_data(c)}
        if keep:
            out.append(plot_cells(keep, Path(f"{prefix}.cells.png"), title))
        else:
            skipped.append({"plot": "cells", "why": f"no face-frame cell is covered by {MIN_CELL_PAIRS} or more "
                                                    "scored pairs"})
    if "attr_drop" in curves:  # attributes protocols: which occlusion hurts which attribute
        from .attributes_report import plot_attribute_drop

        p = curves["attr_drop"] and plot_attribute_drop(curves["attr_drop"], Path(f"{prefix}.attr_drop.png"), title)
        if p:
            out.append(p)
        else:
            skipped.append({"plot": "attr_drop", "why": "no attribute has a balanced accuracy change to show"})
    sweeps = {n: v.blocks["distractor_sweep"] for n, v in results.variants.items()
              if (v.blocks.get("distractor_sweep") or {}).get("points")}
    if sweeps:  # --distractor-sweep: rank-1 / TPIR against the number of distractors (clean + headline; all in the CSV)
        from .distractors import plot_sweeps

        sweeps = {n: b for n, b in sweeps.items() if spec[n].get("group") in ("clean", "headline")} or sweeps

        out.append(plot_sweeps(sweeps, Path(f"{prefix}.distractor_sweep.png"), title))
    from .parts import part_plots  # which face part matters: pp lost per part on a face diagram

    made, why = part_plots(results, prefix)
    out += made
    skipped += why
    from .occlusion_plots import extra_plots  # occlusion estimates (sheet, IoU vs area, patterns); regions

    made, why = extra_plots(results, curves, prefix)
    out += made
    skipped += why
    for sk in skipped:  # a plot from an earlier run of the same protocol would mislead
        Path(f"{prefix}.{sk['plot']}.png").unlink(missing_ok=True)
    return out, skipped
