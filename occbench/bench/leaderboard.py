"""Leaderboards built only from result JSON files (scoring and publishing stay separate).

``build_leaderboard(results_dir)`` reads every ``*.json`` under the folder that is an occbench results
file (through ``EvalResult.from_json``; others are reported as skipped, never silently ignored) and
returns one row per model x protocol x variant. ``write_leaderboard(rows, "leaderboard.csv")`` writes
the CSV and a markdown rendering beside it (``leaderboard.md``): a summary of each protocol's main
score per model, then one table per protocol.

Units: rates are in percent everywhere here; CSV columns say so (``accuracy_pct``). A metric a
variant could not measure (e.g. TAR@FAR=1e-3 with fewer than 1,000 impostors) is an empty CSV cell;
the markdown prints ``n/a (why)``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataNotFoundError, OccbenchError
from ..io.atomic import atomic_write_table, atomic_write_text
from ..metrics.names import ATTRIBUTES, IDENTIFICATION, VERIFICATION, metric, pct_column
from .occlusion import LEADERBOARD_COLUMNS as OCCLUSION_COLUMNS, leaderboard_values
from .parts import leaderboard_columns as part_columns, leaderboard_values as part_values
from .results import EvalResult, metric_value

VERIFICATION_COLUMNS = VERIFICATION
IDENTIFICATION_COLUMNS = IDENTIFICATION
METRIC_COLUMNS = (VERIFICATION_COLUMNS + ("tar_at_far_1e-4",) + IDENTIFICATION_COLUMNS + ("fte_rate",)
                  + ATTRIBUTES)  # attributes protocols: means over the matched attributes
COLUMNS = (("model", "protocol", "variant", "is_main", "main_metric", "main_value_pct")
           + tuple(pct_column(c) for c in METRIC_COLUMNS) + OCCLUSION_COLUMNS + part_columns()
           + ("n", "n_fte", "limit", "search", "search_recall_at_k", "n_distractors", "occbench_version", "schema_version", "protocol_version", "protocol_hash",
              "model_fingerprint", "file"))


@dataclass
class Leaderboard:
    rows: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # results files read
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)


def _pct(name: str, value):
    return None if value is None else metric(name).percent(value)


def _rows_of(res: EvalResult, rel: str) -> list[dict]:
    main = res.main_score or {}
    prot = res.protocol
    subset = prot.get("subset") or {}
    out = []
    order = list(res.variants)
    for v in res.variants.values():
        mname = main.get("metric")
        vals, why = {}, {}
        for c in METRIC_COLUMNS:
            val, reason = metric_value(v, c)
            if c == "fte_rate" and val is None and reason == "not measured" and v.n:
                val, reason = (v.n_fte or 0) / v.n, None  # schema 1: the rate from the counts
            vals[pct_column(c)] = _pct(c, val)
            if reason and (c in v.metrics or c in v.operating_points):
                why[pct_column(c)] = reason
        main_val = metric_value(v, mname)[0] if mname else None
        row = {"model": res.model["name"], "protocol": prot["name"], "variant": v.name,
               "is_main": v.name == main.get("variant"), "main_metric": mname,
               "main_value_pct": _pct(mname, main_val) if mname else None, **vals, **leaderboard_values(v), **part_values(v),
               "n": v.n, "n_fte": v.n_fte, "limit": subset.get("limit", subset.get("limit_pairs")),
               # 1:N: the search backend (approximate ones with their measured recall) and distractors added
               "search": (v.blocks.get("search") or {}).get("backend", "torch" if res.kind == "identification"
                                                             else None),
               "search_recall_at_k": (v.blocks.get("search") or {}).get("recall_at_k"),
               "n_distractors": v.counts.get("n_distractors"),
               "occbench_version": res.occbench_version, "schema_version": res.schema_version,
               "protocol_version": prot["version"], "protocol_hash": prot["hash"],
               "model_fingerprint": res.model["fingerprint"], "file": rel, "_order": order.index(v.name),
               "_why": why}
        out.append(row)
    return out


def build_leaderboard(results_dir: str | os.PathLike) -> Leaderboard:
    root = Path(results_dir)
    if not root.is_dir():
        raise DataNotFoundError(f"results folder {root} not found (the --out folder of `occbench eval`)")
    lb = Leaderboard()
    for p in sorted(root.rglob("*.json")):
        rel = p.relative_to(root).as_posix()
        try:
            text = p.read_text(encoding="utf-8")
            json.loads(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            lb.skipped.append((rel, f"unreadable JSON: {e}"))
            continue
        try:
            res = EvalResult.from_json(text, rel)
        except OccbenchError as e:
            lb.skipped.append((rel, str(e)))
            continue
        lb.files.append(rel)
        lb.rows.extend(_rows_of(res, rel))
    if not lb.files:
        why = f" ({len(lb.skipped)} JSON files skipped: {lb.skipped[0][1]})" if lb.skipped else ""
        raise DataNotFoundError(f"no occbench results files under {root}{why}")

    def sort_key(r):
        v = r["main_value_pct"]
        return (r["protocol"], r["_order"], -(v if isinstance(v, (int, float)) and not _nan(v) else -math.inf),
                r["model"], r["file"])

    lb.rows.sort(key=sort_key)
    for r in lb.rows:
        r.pop("_order")
    return lb


OCC_LABELS = {"mask_iou_pct": "mask IoU", "pattern_top1_pct": "pattern top-1"}  # empty for models without


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _fmt(v, why: str | None = None) -> str:
    """Percent values with two decimals; unmeasured as 'n/a (why)', absent as an en dash."""
    if v is None or _nan(v):
        return f"n/a ({why})" if why else "–"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def to_markdown(lb: Leaderboard) -> str:
    rows = lb.rows
    lines = ["# occbench leaderboard", "",
             f"Built from {len(lb.files)} results file(s). Rates in percent. FTE: failure-to-enrol rate "
             "(failed pairs / probes count as errors in every metric from results schema 2 on). "
             "Rows are ordered by protocol, variant, then main score.", ""]
    mains = [r for r in rows if r["is_main"]]
    if mains:
        lines += ["## Main scores", "", "| protocol | variant | metric | model | score | n | n_fte | FTE % | version |",
                  "|---|---|---|---|---:|---:|---:|---:|---|"]
        for r in mains:
            note = f" (limit {r['limit']})" if r["limit"] else ""
            lines.append(f"| {r['protocol']} | {r['variant']} | {r['main_metric']} | {r['model']}{note} | "
                         f"{_fmt(r['main_value_pct'], r['_why'].get(pct_column(r['main_metric'])))} | {r['n']} | "
                         f"{r['n_fte']} | {_fmt(r['fte_rate_pct'])} | {r['occbench_version']} |")
        lines.append("")
    for prot in dict.fromkeys(r["protocol"] for r in rows):
        prow = [r for r in rows if r["protocol"] == prot]
        cols = [c for c in METRIC_COLUMNS if c != "fte_rate"
                and any(r[pct_column(c)] is not None or pct_column(c) in r["_why"] for r in prow)]
        cols.append("fte_rate")
        occ = [c for c in ("mask_iou_pct", "pattern_top1_pct") if any(r.get(c) is not None for r in prow)]
        lines += [f"## {prot}", "", f"protocol hash(es): {', '.join(sorted({r['protocol_hash'] for r in prow}))}", "",
                  "| model | variant | " + " | ".join(metric(c).label for c in cols)
                  + "".join(f" | {OCC_LABELS[c]}" for c in occ) + " | n | n_fte |",
                  "|---|---|" + "---:|" * (len(cols) + len(occ) + 2)]
        for r in prow:
            mark = " **(main)**" if r["is_main"] else ""
            note = f" (limit {r['limit']})" if r["limit"] else ""
            vals = [_fmt(r[pct_column(c)], r["_why"].get(pct_column(c))) for c in cols] + [_fmt(r.get(c)) for c in occ]
            lines.append(f"| {r['model']}{note} | {r['variant']}{mark} | " + " | ".join(vals)
                         + f" | {r['n']} | {r['n_fte']} |")
        lines.append("")
    from .parts import markdown_lines  # which face part matters (lfw-occ-parts)

    lines += markdown_lines(rows)
    if lb.skipped:
        lines += ["## Skipped files", ""] + [f"- `{f}`: {why}" for f, why in lb.skipped] + [""]
    return "\n".join(lines)


def write_leaderboard(lb: Leaderboard, csv_path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``csv_path`` and the markdown beside it (same stem, ``.md``); returns both paths."""
    import pandas as pd

    csv_path = Path(csv_path)
    if csv_path.suffix.lower() != ".csv":
        raise ConfigError(f"leaderboard output must be a .csv file, got {csv_path.name}")
    df = pd.DataFrame(lb.rows, columns=list(COLUMNS))
    atomic_write_table(df, csv_path)
    md = csv_path.with_suffix(".md")
    atomic_write_text(md, to_markdown(lb))
    return csv_path, md
