"""Which face part matters, in eval: per-variant splits by part coverage and the one-group-at-a-time
protocol (``lfw-occ-parts``).

1. ``parts`` block of every occluded 1:1 and 1:N variant: accuracy (1:1, pairs decided at their fold's
   threshold) or rank-1 (1:N, mated probes) split by whether each face part and group is >= 50 %
   covered (``occbench.metrics.regions.accuracy_by_part``). Coverage is the synth manifest's
   ``part_<name>`` of the occluded image (N-O, 1:N probe) or of the pair (O-O: either image covers it,
   ``pair_fractions``). A side with fewer than ``MIN_ITEMS`` pairs / probes is n/a with the reason.
   Faces without a mesh have no part map: their items are ``n_unmeasured``, never guessed.
2. ``part_group`` block of the variants of a part-block occluder (``occluders/parts.yaml``): the
   group covered, accuracy against clean on the same pairs (pp lost), and the mean coverage of every
   part in that variant, which shows how isolated the group's block is.
3. Figures (``<prefix>.parts.png``): a face diagram per mode coloured by the pp lost when that part is
   covered: from the ``part_group`` blocks where the protocol has them (each group on its own), else
   from the headline variants' ``parts`` blocks (pp lost against clean on the covered pairs).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import ConfigError

MIN_ITEMS = 20  # pairs / probes on a side below which its accuracy is n/a
PART_BLOCK = "part_block"
COVERED = 0.5


def _families(names) -> dict[str, str]:
    from ..synth.occluders import OCCLUDERS

    return {n: getattr(OCCLUDERS.get(n), "family", "") for n in names if n in OCCLUDERS}


def check_part_blocks(occ: dict, where: str) -> None:
    """Protocol check: part blocks are fitted to the face, so a protocol naming one places anchored."""
    fam = _families(occ.get("occluders") or [])
    blocks = [n for n, f in fam.items() if f == PART_BLOCK]
    if not blocks:
        return
    free = occ["headline"].get("placement") == "free" or "placement:free" in occ.get("breakdown", [])
    if free:
        raise ConfigError(f"{where}: occluders {', '.join(blocks)} are fitted to face parts: their placement must "
                          "be anchored (no free headline, no placement:free breakdown)")


def _names(parts=None) -> list[str]:
    from ..face.parts import load_parts

    ps = parts or load_parts()
    return ps.names + list(ps.groups)


def image_fractions(occ_set, keys: list[str], names: list[str] | None = None) -> dict[str, np.ndarray]:
    """``{part: (len(keys),) occluded fraction}`` from the synth manifest rows (NaN where unmeasured:
    no part map, or the image failed)."""
    names = names or _names()
    out = {n: np.full(len(keys), np.nan) for n in names}
    for i, k in enumerate(keys):
        r = occ_set.rows.get(k)
        if r is None or r.get("status") != "ok":
            continue
        for n in names:
            v = r.get(f"part_{n}")
            if v is not None:
                try:
                    out[n][i] = float(v)
                except (TypeError, ValueError):
                    pass
    return out


def _block(correct, fractions, clean_correct, mode: str, item: str, metric: str, coverage: dict) -> dict:
    from ..metrics.regions import accuracy_by_part

    split = accuracy_by_part(correct, fractions, COVERED, MIN_ITEMS, clean_correct, item=item)
    who = {"N-O": "the occluded image", "O-O": "either image of the pair (both occluded)",
           "probe": "the occluded probe"}[mode]
    return {"what": f"{metric} of the {item} split by whether each face part (and group) is >= 50 % covered in "
                    f"{who}; pp_lost = uncovered - covered; pp_lost_vs_clean = clean - occluded on the covered "
                    f"{item}; n/a when a side has fewer than {MIN_ITEMS} {item}; unmeasured: no part map (a face "
                    "without mesh points) or a failed image",
            "metric": metric, "threshold": COVERED, "min_items": MIN_ITEMS, "parts": split,
            "mean_coverage": coverage}


def _mean_coverage(fr: dict[str, np.ndarray]) -> dict[str, float | None]:
    return {n: (float(np.nanmean(f)) if np.isfinite(f).any() else None) for n, f in fr.items()}


def verification_parts(occ_set, mode: str, k1: list[str], k2: list[str], correct: np.ndarray,
                       clean_correct: np.ndarray | None) -> dict:
    """The ``parts`` block of a 1:1 variant (``correct``: per pair, decided at the fold threshold, failures
    to enrol included as decided "different"; ``clean_correct``: the same pairs clean)."""
    from ..metrics.regions import pair_fractions

    names = _names()
    f2 = image_fractions(occ_set, k2, names)
    if mode == "O-O":
        f1 = image_fractions(occ_set, k1, names)
        fr = {n: pair_fractions(f1[n], f2[n], COVERED) for n in names}
        coverage = _mean_coverage({n: np.concatenate([f1[n], f2[n]]) for n in names})
    else:
        fr, coverage = f2, _mean_coverage(f2)
    ok = np.isfinite(correct)
    cc = None if clean_correct is None else clean_correct
    if cc is not None:
        ok &= np.isfinite(cc)
    fr = {n: np.where(ok, f, np.nan) for n, f in fr.items()}  # a pair without an outcome is unmeasured
    c = np.where(ok, correct, 0.0)
    cc = None if cc is None else np.where(ok, cc, 0.0)
    return _block(c, fr, cc, mode, "pairs", "accuracy", coverage)


def rank1_hits(n: int, probe_ok: np.ndarray, mate) -> np.ndarray:
    """Per probe 1.0 when its mate is at rank 1 (ties against), else 0.0 (failures, lost mates, misses)."""
    hits = np.zeros(n)
    if mate is not None:
        hits[np.flatnonzero(probe_ok)] = (np.asarray(mate.ranks, np.float64) == 1.0).astype(np.float64)
    return hits


def identification_parts(res, v, sets, p_keys: list[str], mated: np.ndarray, pok: np.ndarray, m: dict,
                         clean_res=None) -> None:
    """Add the ``parts`` block to a 1:N variant's result (the hook in ``bench.identify``): rank-1 of the
    mated probes split by part coverage of the occluded probe. The clean variant keeps its per-probe hits
    (not written to the JSON) for the pp lost against clean."""
    hits = rank1_hits(len(p_keys), pok, m.get("mate"))
    if not v.occluded:
        res.__dict__["_rank1_hits"] = hits
        return
    occ = sets[(v.run, v.synth_variant)]
    names = _names()
    fr = image_fractions(occ, p_keys, names)
    sel = np.asarray(mated, bool)
    clean_hits = getattr(clean_res, "_rank1_hits", None) if clean_res is not None else None
    res.add_block("parts", _block(hits[sel], {n: f[sel] for n, f in fr.items()},
                                  None if clean_hits is None else clean_hits[sel], "probe", "mated probes",
                                  "rank1", _mean_coverage(fr)))


# ----------------------------------------------------------------------------------- part groups


def part_groups(protocol, variant_results: dict) -> None:
    """Add the ``part_group`` block to every variant whose occluder is a part block: the group covered,
    the main metric against clean on the same pairs / probes (pp lost) and the mean coverage per part."""
    occ = protocol.occlusion or {}
    fam = _families(occ.get("occluders") or [])
    clean = variant_results.get("clean")
    metric = "accuracy" if protocol.kind == "verification" else "rank1"
    if clean is None:
        return
    from ..synth.occluders import create_occluder

    for vr in variant_results.values():
        name = (vr.spec or {}).get("occluder")
        if not name or fam.get(name) != PART_BLOCK:
            continue
        acc, base = vr.metrics.get(metric), clean.metrics.get(metric)
        cover = (vr.blocks.get("parts") or {}).get("mean_coverage") or {}
        group = create_occluder(name).cfg["group"]
        vr.add_block("part_group", {
            "what": f"one face-part group covered by a neutral block fitted to it (occluder {name}); pp_lost = "
                    f"clean {metric} - this variant's {metric}, same pairs / probes; mean_coverage: mean occluded "
                    "fraction of every part over the occluded images (how isolated the block is)",
            "group": group, "occluder": name, "metric": metric, "value": acc, "clean": base,
            "pp_lost": None if acc is None or base is None else 100.0 * (base - acc),
            "mean_coverage": cover})


def group_table(variant_results: dict) -> list[dict]:
    """Rows {mode, group, value, clean, pp_lost, coverage of the group} of the part_group blocks."""
    rows = []
    for vr in variant_results.values():
        pg = vr.blocks.get("part_group")
        if pg:
            rows.append({"variant": vr.name, "mode": vr.spec.get("mode"), "group": pg["group"],
                         "value": pg["value"], "clean": pg["clean"], "pp_lost": pg["pp_lost"],
                         "own_coverage": (pg.get("mean_coverage") or {}).get(pg["group"])})
    return rows


# ----------------------------------------------------------------------------------- figures


def diagram_panels(results) -> dict[str, dict[str, float | None]]:
    """{panel title: {part or group: pp lost}} for the results' face diagrams (empty: nothing to draw)."""
    panels: dict[str, dict] = {}
    for vr in results.variants.values():
        pg = vr.blocks.get("part_group")
        if pg and pg.get("pp_lost") is not None:
            panels.setdefault(f"{vr.spec.get('mode')}: one group covered", {})[pg["group"]] = pg["pp_lost"]
    if panels:
        return panels
    for vr in results.variants.values():
        block = vr.blocks.get("parts")
        if vr.spec.get("group") != "headline" or not block:
            continue
        from ..face.parts import load_parts

        names = load_parts().names  # parts only: each colour is that part's own figure
        vals = {n: block["parts"][n].get("pp_lost_vs_clean") for n in names if n in block["parts"]}
        if any(x is not None for x in vals.values()):
            panels[f"{vr.name}: pairs with the part covered" if block["metric"] == "accuracy"
                   else f"{vr.name}: probes with the part covered"] = vals
    return panels


def part_plots(results, prefix: Path) -> tuple[list[Path], list[dict]]:
    """Write ``<prefix>.parts.png`` when the results hold part figures; ([paths], [skipped with why])."""
    has = any(v.blocks.get("parts") or v.blocks.get("part_group") for v in results.variants.values())
    if not has:
        return [], []
    panels = diagram_panels(results)
    if not panels:
        return [], [{"plot": "parts", "why": f"no part covered in {MIN_ITEMS} or more scored pairs / probes"}]
    from ..face.diagram import part_diagrams

    metric = "rank-1" if any((v.blocks.get("parts") or {}).get("metric") == "rank1"
                             for v in results.variants.values()) else "accuracy"
    path = Path(f"{prefix}.parts.png")
    part_diagrams(panels, path, title=f"{results.model['name']} on {results.protocol['name']}: {metric} lost "
                                      "when the part is covered (pp, against clean)")
    return [path], []


def fmt_pp(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.2f}"


# ----------------------------------------------------------------------------------- leaderboard


def leaderboard_columns() -> tuple[str, ...]:
    """CSV columns (percent / pp, named with their unit): the part group a part-block variant covers
    and its pp lost against clean; per part group, the main metric of the covered pairs / probes and
    its pp lost against clean on the same items (empty where n/a)."""
    from ..face.parts import load_parts

    per_group = tuple(c for g in load_parts().groups for c in (f"covered_{g}_pct", f"covered_{g}_pp_lost"))
    return ("part_group", "part_group_pp_lost") + per_group


def leaderboard_values(v) -> dict:
    """The :func:`leaderboard_columns` of one ``VariantResult`` (None where absent or n/a)."""
    from ..face.parts import load_parts

    out = dict.fromkeys(leaderboard_columns())
    pg = v.blocks.get("part_group") or {}
    out["part_group"], out["part_group_pp_lost"] = pg.get("group"), pg.get("pp_lost")
    split = (v.blocks.get("parts") or {}).get("parts") or {}
    for g in load_parts().groups:
        row = split.get(g) or {}
        acc = row.get("accuracy_covered")
        out[f"covered_{g}_pct"] = None if acc is None else 100.0 * acc
        out[f"covered_{g}_pp_lost"] = row.get("pp_lost_vs_clean")
    return out


def markdown_lines(rows: list[dict]) -> list[str]:
    """A leaderboard markdown section per protocol with part-block variants: the pp lost per group."""
    lines: list[str] = []
    for prot in dict.fromkeys(r["protocol"] for r in rows if r.get("part_group")):
        prow = [r for r in rows if r["protocol"] == prot and r.get("part_group")]
        lines += [f"## {prot}: which face part matters", "",
                  f"One part group covered at a time; pp lost = clean {prow[0]['main_metric']} - the variant's, "
                  "on the same pairs / probes.", "", "| model | variant | part group | pp lost |",
                  "|---|---|---|---:|"]
        for r in prow:
            note = f" (limit {r['limit']})" if r.get("limit") else ""
            pp = fmt_pp(r["part_group_pp_lost"])
            lines.append(f"| {r['model']}{note} | {r['variant']} | {r['part_group']} | {pp} |")
        lines.append("")
    return lines
