"""Leaderboards built only from result JSON files (scoring and publishing stay separate).

``build_leaderboard(results_dir)`` reads every ``*.json`` under the folder that is an occbench results
file (others are reported as skipped, never silently ignored) and returns one row per
model x protocol x variant. ``write_leaderboard(rows, "leaderboard.csv")`` writes the CSV and a
markdown rendering beside it (``leaderboard.md``): a summary of each protocol's main score per
model, then one table per protocol.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataNotFoundError, OccbenchError
from ..io.atomic import atomic_write_table, atomic_write_text
from .results import validate_results

VERIFICATION_COLUMNS = ("accuracy", "accuracy_std", "tar_at_far_1e-3", "eer", "auc")
IDENTIFICATION_COLUMNS = ("rank1", "rank5", "tpir_at_fpir_1e-2", "tpir_at_fpir_1e-1")
METRIC_COLUMNS = VERIFICATION_COLUMNS + IDENTIFICATION_COLUMNS
COLUMNS = (("model", "protocol", "variant", "is_main", "main_metric", "main_value") + METRIC_COLUMNS
           + ("n", "n_fte", "limit_pairs", "occbench_version", "protocol_version", "protocol_hash",
              "model_fingerprint", "file"))


@dataclass
class Leaderboard:
    rows: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # results files read
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)


def _rows_of(d: dict, rel: str) -> list[dict]:
    main = d.get("main_score") or {}
    prot = d["protocol"]
    subset = prot.get("subset") or {}
    out = []
    order = [v for v in d.get("variant_order", []) if v in d["variants"]]
    order += [v for v in d["variants"] if v not in order]
    for v in order:
        entry = d["variants"][v]
        m = entry["metrics"]
        metric = main.get("metric")
        row = {"model": d["model"]["name"], "protocol": prot["name"], "variant": v,
               "is_main": v == main.get("variant"), "main_metric": metric, "main_value": m.get(metric),
               **{c: m.get(c) for c in METRIC_COLUMNS},
               "n": entry.get("n_pairs", entry.get("n_probes")), "n_fte": entry.get("n_fte"),
               "limit_pairs": subset.get("limit_pairs"), "occbench_version": d["occbench_version"],
               "protocol_version": prot["version"], "protocol_hash": prot["hash"],
               "model_fingerprint": d["model"]["fingerprint"], "file": rel, "_order": order.index(v)}
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
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            lb.skipped.append((rel, f"unreadable JSON: {e}"))
            continue
        try:
            validate_results(d, rel)
        except OccbenchError as e:
            lb.skipped.append((rel, str(e)))
            continue
        lb.files.append(rel)
        lb.rows.extend(_rows_of(d, rel))
    if not lb.files:
        why = f" ({len(lb.skipped)} JSON files skipped: {lb.skipped[0][1]})" if lb.skipped else ""
        raise DataNotFoundError(f"no occbench results files under {root}{why}")

    def sort_key(r):
        v = r["main_value"]
        return (r["protocol"], r["_order"], -(v if isinstance(v, (int, float)) and not _nan(v) else -math.inf),
                r["model"], r["file"])

    lb.rows.sort(key=sort_key)
    for r in lb.rows:
        r.pop("_order")
    return lb


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _fmt(v) -> str:
    """Rates as percent with two decimals; missing as an en dash."""
    if v is None or _nan(v):
        return "–"
    if isinstance(v, float):
        return f"{100 * v:.2f}"
    return str(v)


def to_markdown(lb: Leaderboard) -> str:
    rows = lb.rows
    lines = ["# occbench leaderboard", "",
             f"Built from {len(lb.files)} results file(s). Rates in percent. "
             "Rows are ordered by protocol, variant, then main score.", ""]
    mains = [r for r in rows if r["is_main"]]
    if mains:
        lines += ["## Main scores", "", "| protocol | variant | metric | model | score | n | n_fte | version |",
                  "|---|---|---|---|---:|---:|---:|---|"]
        for r in mains:
            note = f" (limit {r['limit_pairs']})" if r["limit_pairs"] else ""
            lines.append(f"| {r['protocol']} | {r['variant']} | {r['main_metric']} | {r['model']}{note} | "
                         f"{_fmt(r['main_value'])} | {r['n']} | {r['n_fte']} | {r['occbench_version']} |")
        lines.append("")
    for prot in dict.fromkeys(r["protocol"] for r in rows):
        prow = [r for r in rows if r["protocol"] == prot]
        cols = [c for c in METRIC_COLUMNS if any(r[c] is not None and not _nan(r[c]) for r in prow)]
        lines += [f"## {prot}", "", f"protocol hash(es): {', '.join(sorted({r['protocol_hash'] for r in prow}))}", "",
                  "| model | variant | " + " | ".join(cols) + " | n | n_fte |",
                  "|---|---|" + "---:|" * (len(cols) + 2)]
        for r in prow:
            mark = " **(main)**" if r["is_main"] else ""
            note = f" (limit {r['limit_pairs']})" if r["limit_pairs"] else ""
            vals = [_fmt(r[c]) for c in cols]
            lines.append(f"| {r['model']}{note} | {r['variant']}{mark} | " + " | ".join(vals)
                         + f" | {r['n']} | {r['n_fte']} |")
        lines.append("")
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
