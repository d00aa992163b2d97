"""Reports of an ``attributes`` run: the console summary and the per-attribute drop heatmap.

Both read an ``EvalResult`` only (its ``attributes*`` blocks and the top-level ``attributes`` summary),
so they work on a results file as well as on a fresh run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

NA = "n/a"
SHOWN_PARTS = ("eye_group", "nose_group", "mouth_group", "cheek_group", "forehead")  # console; the JSON has all


def _pct(v) -> str:
    return NA if v is None else f"{100.0 * v:.2f}"


def _pp(v) -> str:
    return NA if v is None else f"{100.0 * v:+.1f}"


def _info(res) -> dict:
    return res.extra.get("attributes") or {}


def _names(res) -> list[str]:
    return [m["label"] for m in _info(res).get("matched", [])]


def summary_text(res) -> str:
    """Console report: headline, attribute matching, one row per variant (means), per-attribute balanced
    accuracy (clean, then the change per occluded variant), the part breakdown, failures, timing."""
    from ..metrics.names import ATTRIBUTES, metric

    info = _info(res)
    main = res.main_score
    val = main.get("value")
    head = f"{_pct(val)}" if val is not None else f"{NA} (no attribute defines it)"
    lines = [f"{res.model['name']} on {res.protocol['name']} (hash {res.protocol['hash']}): "
             f"{main['variant']} {main['metric']} = {head}"]
    names = _names(res)
    lf = info.get("label_file") or {}
    lines.append(f"attributes: {len(names)} of the model's {len(info.get('model_attributes', []))} matched to "
                 f"{lf.get('file', 'the labels')} ({', '.join(names)})")
    if info.get("model_only"):
        lines.append(f"model attributes without labels (not scored): {', '.join(info['model_only'])}")
    if info.get("label_only"):
        lines.append(f"labelled attributes the model does not predict: {', '.join(info['label_only'])}")
    if lf.get("n_labels_without_image"):
        lines.append(f"{lf['n_labels_without_image']:,} labelled images are not in the image folder (not "
                     f"evaluated), e.g. {', '.join(lf.get('labels_without_image_examples', [])[:3])}")
    vs = list(res.variants.values())
    width = max([len(v.name) for v in vs] + [7]) + 2
    labels = [metric(m).label for m in ATTRIBUTES]
    lines.append(f"{'variant':<{width}}" + "".join(f"{t:>14}" for t in labels) + f"{'n':>7}{'fte':>6}")
    for v in vs:
        lines.append(f"{v.name:<{width}}" + "".join(f"{_pct(v.metrics.get(m)):>14}" for m in ATTRIBUTES)
                     + f"{v.counts.get('n_images', 0):>7}{v.counts.get('n_fte', 0):>6}")
    lines.append("rates in percent; means over the matched attributes; failures count as wrong answers "
                 "(failure_policy; attributes_enrolled_only in the JSON has the rest)")
    lines += _per_attribute(res, names)
    lines += _by_part(info.get("by_part"), names)
    for v in vs:
        for note in v.notes:
            lines.append(f"note [{v.name}]: {note}")
    f = res.failures or {}
    if f.get("n_images"):
        stages = ", ".join(f"{k} {n}" for k, n in f["by_stage"].items())
        lines.append(f"{f['n_images']} images have no prediction ({stages}); they count as wrong answers "
                     "(failures in the JSON lists them)")
    lm = (res.variants.get("clean").blocks.get("landmark_methods") or {}) if "clean" in res.variants else {}
    if lm.get("counts"):
        lines.append("landmarks by method (clean images): " + ", ".join(f"{k} {n}" for k, n in lm["counts"].items()))
    lines.append("time: " + ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in res.timing.items()))
    return "\n".join(lines)


def _per_attribute(res, names: list[str]) -> list[str]:
    clean = res.variants.get("clean")
    if clean is None or not names:
        return []
    occ = [v for v in res.variants.values() if v.name != "clean"]
    aw = max(len(n) for n in names + ["attribute"]) + 2
    heads = [v.name.replace("occluded/", "", 1) for v in occ]  # columns: occluded/scarf@s1.0 -> scarf@s1.0
    cols = [max(len(h), 7) + 2 for h in heads]
    out = ["balanced accuracy per attribute (%): clean, then the change in pp under each occluded variant "
           "(occluded/<occluder>@<scale> shown as <occluder>@<scale>)",
           f"{'attribute':<{aw}}{'n':>7}{'unknown':>9}{'clean':>8}" + "".join(f"{h:>{w}}" for h, w in zip(heads, cols))]
    per = clean.blocks["attributes"]["per_attribute"]
    for a in names:
        p = per[a]
        row = f"{a:<{aw}}{p['n']:>7}{p.get('n_unknown', 0):>9}{_pct(p['balanced_accuracy']):>8}"
        for v, w in zip(occ, cols):
            d = (v.blocks.get("attribute_drop") or {}).get("per_attribute", {}).get(a, {})
            row += f"{_pp(d.get('balanced_accuracy')):>{w}}"
        out.append(row)
    return out


def _by_part(block: dict | None, names: list[str]) -> list[str]:
    if not block or not names:
        return []
    parts = block["parts"]
    shown = [p for p in SHOWN_PARTS if p in parts]
    aw = max(len(n) for n in names) + 2
    out = [f"by part covered (>= {block['covered_at']:.0%} occluded), pooled over the occluded image sets: balanced "
           "accuracy covered - uncovered in pp (n covered / uncovered / unknown)",
           f"{'part':<14}{'n cov/unc/unk':>20}" + "".join(f"{a:>{aw}}" for a in names)]
    for p in shown:
        d = parts[p]
        cnt = f"{d['n_covered']}/{d['n_uncovered']}/{d['n_unknown']}"
        row = f"{p:<14}{cnt:>20}"
        for a in names:
            c = d["covered"]["per_attribute"][a]["balanced_accuracy"]
            u = d["uncovered"]["per_attribute"][a]["balanced_accuracy"]
            row += f"{_pp(None if c is None or u is None else c - u):>{aw}}"
        out.append(row)
    unk = {r: n for p in shown for r, n in parts[p]["reasons"].items()}
    if unk:
        top = max(unk, key=unk.get)
        out.append(f"part coverage unknown for some images, e.g. {unk[top]:,}: {top}")
    return out


# ----------------------------------------------------------------------------------- plot


def drop_curves(res) -> dict:
    """Plot data: balanced-accuracy change (pp) per attribute x occluded variant, and covered - uncovered
    per attribute x part group (pooled)."""
    names = _names(res)
    occ = [v for v in res.variants.values() if v.name != "clean" and v.blocks.get("attribute_drop")]
    if not names or not occ:
        return {"attr_drop": None}
    grid = [[_val(v.blocks["attribute_drop"]["per_attribute"].get(a, {}).get("balanced_accuracy")) for v in occ]
            for a in names]
    part_grid, parts = None, []
    bp = _info(res).get("by_part")
    if bp:
        parts = [p for p in bp["parts"] if p.endswith("_group")] or list(bp["parts"])
        part_grid = []
        for a in names:
            row = []
            for p in parts:
                d = bp["parts"][p]
                c = d["covered"]["per_attribute"][a]["balanced_accuracy"]
                u = d["uncovered"]["per_attribute"][a]["balanced_accuracy"]
                row.append(_val(None if c is None or u is None else c - u))
            part_grid.append(row)
    return {"attr_drop": {"attributes": names, "variants": [v.name for v in occ], "drop_pp": grid,
                          "parts": parts, "part_pp": part_grid}}


def _val(v) -> float:
    return float("nan") if v is None else 100.0 * float(v)


def plot_attribute_drop(data: dict, path: Path, title: str) -> Path | None:
    """Heatmap(s): attributes x occluded variants (change of balanced accuracy vs clean, pp) and, when the
    part breakdown exists, attributes x part groups (covered - uncovered, pp). Red = the occlusion hurts."""
    from .plots import _plt, _save

    grid = np.array(data["drop_pp"], float)
    if not np.isfinite(grid).any():
        return None
    panels = [(grid, data["variants"], "change vs clean (pp), per variant")]
    if data.get("part_pp") and np.isfinite(np.array(data["part_pp"], float)).any():
        panels.append((np.array(data["part_pp"], float), data["parts"], "covered - uncovered (pp), per part"))
    plt = _plt()
    n_attr = len(data["attributes"])
    widths = [max(2.5, 0.6 * g.shape[1] + 1.0) for g, _, _ in panels]
    label_h = 0.07 * max(len(c) for _, cols, _ in panels for c in cols)  # rotated column labels
    fig, axes = plt.subplots(1, len(panels), figsize=(sum(widths) + 0.1 * max(map(len, data["attributes"])) + 2.0,
                                                      0.4 * n_attr + 1.6 + label_h),
                             gridspec_kw={"width_ratios": widths}, squeeze=False, constrained_layout=True)
    lim = max(float(np.nanmax(np.abs(np.concatenate([g.ravel() for g, _, _ in panels])))), 1.0)
    for k, (ax, (g, cols, sub)) in enumerate(zip(axes[0], panels)):
        im = ax.imshow(np.ma.masked_invalid(g), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(n_attr), data["attributes"] if k == 0 else [""] * n_attr, fontsize=7)
        ax.set_title(sub, fontsize=8)
        if g.size <= 200:
            for (i, j), v in np.ndenumerate(g):
                ax.text(j, i, "n/a" if not np.isfinite(v) else f"{v:+.0f}", ha="center", va="center", fontsize=6,
                        color="white" if np.isfinite(v) and abs(v) > 0.6 * lim else "black")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="balanced accuracy, pp")
    fig.suptitle(f"{title}: which occlusion hurts which attribute", fontsize=9)
    return _save(plt, fig, path)
