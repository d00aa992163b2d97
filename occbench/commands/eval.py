"""CLI: eval, protocols, leaderboard. Thin: parse, build an ``EvalConfig``, call ``run_eval``, report.

Nothing heavy (torch, mediapipe) is imported before the paths have been checked."""
from __future__ import annotations

from pathlib import Path

import click

_CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command("eval", context_settings=_CTX)
@click.option("--model", "-m", required=True, metavar="MODEL",
              help="A registered recognizer name (e.g. dlib-resnet), a model file (TorchScript, state dict "
                   "with --arch, ONNX) or a Python factory pkg.module:fn.")
@click.option("--arch", metavar="ARCH", help="Architecture for a plain state dict (e.g. iresnet50).")
@click.option("--arch-opt", "arch_opts", metavar="KEY=VALUE", multiple=True,
              help="Keyword argument for the architecture (state dict + --arch) or the Python factory, e.g. "
                   "--arch-opt num_features=256; repeatable.")
@click.option("--protocol", "-p", required=True, metavar="NAME|FILE",
              help="Protocol name (see `occbench protocols`) or a protocol .yaml file.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path),
              help="Folder holding the protocol's data [default: $OCCBENCH_DATA; for --pairs / --gallery: "
                   "the list's folder].")
@click.option("--pairs", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Pairs file replacing the protocol's (LFW pairs.txt format, or CSV path1,path2,same[,fold]).")
@click.option("--gallery", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Gallery list CSV (path,identity) for gallery-probe protocols.")
@click.option("--probe", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Probe list CSV (path,identity) for gallery-probe protocols.")
@click.option("--bin", "bin_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="insightface verification .bin (lfw.bin, cfp_fp.bin, agedb_30.bin) for bin protocols.")
@click.option("--masked-list", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="CSV path,masked saying which images wear a real mask (mfr2, mfr2-synth): results then break "
                   "down by pair type.")
@click.option("--attributes", "attributes_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Attribute labels replacing the protocol's (attributes protocols): attributes.csv "
                   "(path,<attr>,...; 1/0, -1 or empty = unknown), CelebA list_attr_celeba.txt or LFW "
                   "lfw_attributes.txt, as the protocol's data format says.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Results folder; writes OUT/<model-name>/<protocol>.json.")
@click.option("--model-name", metavar="NAME", help="Name of the model in results [default: from --model].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the model and the 1:N search run (auto: CUDA when available).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
              help="Inference precision (autocast) for torch models.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Crops per forward pass.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Data-loading workers for extraction, and processes for landmarks / occlusion.")
@click.option("--limit", "--limit-pairs", "limit", type=click.IntRange(min=1), metavar="N",
              help="Quick run: N pairs (1:1, stratified by fold and label) or about N probes (1:N, half "
                   "mated; attributes: N images, evenly spaced). --limit-pairs is the old name.")
@click.option("--folds", type=click.IntRange(min=2), metavar="N",
              help="1:1 protocols: N contiguous cross-validation folds instead of the protocol's (e.g. for a "
                   "pairs file without a fold column, or with one fold).")
@click.option("--variants", metavar="NAME,...", help="Only these variants (clean is always included).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Landmarks, occluded images and embeddings cache [default: $OCCBENCH_CACHE or .occbench_cache].")
@click.option("--save-scores", is_flag=True,
              help="Also write every pair score (1:N: probe x top-k) as Parquet beside the JSON.")
@click.option("--allow-unsafe-pickle", is_flag=True,
              help="Allow pickled inputs (.bin sets, full-pickle checkpoints): only for files you trust.")
@click.option("--no-plots", is_flag=True, help="Do not write plots.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--search", "search", type=click.Choice(["torch", "faiss", "faiss-ivf", "faiss-hnsw"]), default="torch",
              show_default=True,
              help="1:N search: torch (exact, streamed), faiss (exact IndexFlatIP; GPU index with CUDA and "
                   "faiss-gpu), faiss-ivf / faiss-hnsw (APPROXIMATE: recall@k against exact search on a seeded "
                   "probe sample goes into the results). faiss needs pip install 'occbench[faiss]'.")
@click.option("--distractors", type=click.Path(dir_okay=False, exists=True, path_type=Path), metavar="LIST.csv",
              help="1:N: CSV path[,identity] of distractor images added to the gallery (MegaFace style); paths "
                   "relative to --data-root (default: the list's folder). Embeddings are cached per model and list.")
@click.option("--dask", "dask", metavar="local:N|ADDRESS",
              help="Find landmarks and make occluded images on Dask (large custom protocols): local:N starts N "
                   "worker processes, tcp://host:8786 uses a running scheduler; the data and --cache-dir must be "
                   "on a file system every worker sees. Results are the same as without it.")
@click.option("--distractor-sweep", metavar="N,N,...",
              help="1:N with --distractors: rank-1 and TPIR@FPIR with the first N distractors, for each N "
                   "(e.g. 10,100,1000); JSON block, CSV and plot against gallery size.")
def eval_cmd(model, arch, arch_opts, protocol, data_root, pairs, gallery, probe, bin_file, masked_list, out,
             model_name, device, precision, batch_size, workers, limit, folds, variants, cache_dir, save_scores,
             allow_unsafe_pickle, no_plots, no_progress, search, distractors, dask, distractor_sweep, attributes_file):
    """Evaluate a face recognizer on a benchmark protocol.

    \b
    Examples:
      occbench eval -m dlib-resnet-torch -p lfw --data-root ../shared/realdata/lfw-guesswho --limit 300
      occbench eval --model dlib-resnet --protocol lfw-occ --data-root ../shared/realdata/lfw-guesswho
      occbench eval -m backbone.pth --arch iresnet50 --arch-opt num_features=512 -p lfw-occ --save-scores
      occbench eval -m model.onnx -p bin --bin faces_emore/agedb_30.bin --allow-unsafe-pickle
      occbench eval -m dlib-resnet-torch -p lfw-occ-id --data-root ../shared/realdata/lfw-guesswho --search faiss
      occbench eval -m dlib-resnet-torch -p gallery-probe --gallery g.csv --probe p.csv --distractors d.csv --distractor-sweep 10,100,1000
      occbench eval -m attr_model.pt -p attributes --data-root my_faces   # my_faces/attributes.csv
      occbench eval -m dlib-resnet-torch -p my_protocol.yaml --dask tcp://scheduler:8786 --cache-dir /shared/cache
    """
    from ..bench.config import EvalConfig, OptionError, parse_arch_opts
    from ..bench.evaluate import run_eval

    try:
        cfg = EvalConfig(model=model, protocol=protocol, arch=arch, arch_opts=parse_arch_opts(arch_opts),
                         data_root=data_root, pairs=pairs, gallery=gallery, probe=probe, bin=bin_file,
                         masked_list=masked_list, attributes=attributes_file, out=out,
                         model_name=model_name, device=device, precision=precision, batch_size=batch_size,
                         workers=workers, limit=limit, folds=folds, variants=variants, cache_dir=cache_dir,
                         save_scores=save_scores,
                         plots=not no_plots, allow_unsafe_pickle=allow_unsafe_pickle, search=search,
                         distractors=distractors, distractor_sweep=distractor_sweep, dask=dask)
        res = run_eval(cfg, progress=not no_progress)
    except OptionError as e:  # an option that does not apply: a usage error, with the help hint
        raise click.UsageError(str(e)) from e
    click.echo(summary(res))
    click.echo(f"wrote {res.path}")


# ----------------------------------------------------------------------------------- console summary

NA = "n/a"


def _fmt_metric(name: str, value) -> str:
    from ..metrics.names import metric

    return NA if value is None else metric(name).format(value)


def _cell(v, name: str) -> str:
    from ..bench.results import metric_value

    return _fmt_metric(name, metric_value(v, name)[0])


def unmeasurable(v, name: str) -> str | None:
    """Why a metric of variant ``v`` has no value (e.g. 'needs ≥ 1,000 impostors'), or None."""
    from ..bench.results import metric_value

    return metric_value(v, name)[1]


_HINTS = (
    ("need at least 2 distinct folds", "use --folds 10 (10 contiguous folds), or give the pairs file a fold "
                                       "column with 2 or more folds"),
    ("exceeds the number of pairs", "use fewer folds or more pairs"),
    ("needs both genuine and impostor", "the pairs (after --limit) must include both same and different pairs"),
    ("no mated probes", "the gallery must enrol some probe identities"),
    ("non-mated probes, so FPIR", "add non-mated probes (identities absent from the gallery)"),
    ("impostor pairs, so FAR", "more impostor pairs: a larger --limit or none"),
)
# without --limit a larger --limit cannot help: say what can
_UNLIMITED_HINTS = {"impostor pairs, so FAR": "a set with more impostor pairs; the note says how many this FAR "
                                              "needs"}


def _hint(note: str, limited: bool = True) -> str:
    for needle, hint in _HINTS:
        if needle in note:
            if not limited and needle in _UNLIMITED_HINTS:
                hint = _UNLIMITED_HINTS[needle]
            return f" (hint: {hint})"
    return ""


def summary(res) -> str:
    """The console report of an ``EvalResult``: headline, one row per variant (percent), counts, every
    note with a hint, and timing."""
    from ..metrics.names import IDENTIFICATION, metric

    if res.kind == "attributes":  # face attributes: per-attribute tables (bench.attributes_report)
        from ..bench.attributes_report import summary_text

        return summary_text(res)
    main = res.main_score
    verification = res.kind == "verification"
    vs = list(res.variants.values())
    if verification:
        cols = ("accuracy", "tar_at_far_1e-3", "eer", "auc")
    elif res.kind == "all-to-all":
        cols = tuple(dict.fromkeys(k for v in vs for k in v.metrics if k.startswith("tar_at_far_")))
    else:
        cols = IDENTIFICATION[:3]
    head_v = res.variants.get(main.get("variant"))
    main_txt = _fmt_metric(main["metric"], main.get("value"))
    if main.get("value") is None and head_v is not None:
        why = unmeasurable(head_v, main["metric"]) or (head_v.notes[0] if head_v.notes else "not measurable")
        main_txt = f"{NA} ({why})"
    lines = [f"{res.model['name']} on {res.protocol['name']} (hash {res.protocol['hash']}): "
             f"{main['variant']} {main['metric']} = {main_txt}"]
    if res.kind == "all-to-all" and vs:
        c = vs[0].counts
        lines.append(f"all-to-all: {c.get('n_probes', 0):,} probes x {c.get('n_gallery', 0):,} gallery images "
                     f"({c.get('n_fte', 0)} probes and {c.get('n_gallery_fte', 0)} gallery images failed to enrol): "
                     f"{c.get('n_genuine', 0):,} genuine and {c.get('n_impostor', 0):,} impostor pairs "
                     f"({c.get('n_excluded_self', 0):,} self pairs left out)")
    elif not verification and vs:
        c = vs[0].counts
        lines.append(f"gallery: {c.get('n_gallery', 0):,} images enrolled ({c.get('n_gallery_fte', 0)} failed to "
                     f"enrol); probes: {c.get('n_probes', 0):,} ({c.get('n_mated', 0):,} mated, "
                     f"{c.get('n_nonmated', 0):,} non-mated; {c.get('n_fte', 0)} clean probes failed to enrol)")
        lines += _search_lines(res, vs)
    width = max([len(v.name) for v in vs] + [7]) + 2
    cw = [max(len(metric(c).label), 6) + 2 for c in cols]
    has_rate = any("fte_rate" in v.metrics for v in vs)
    tail = f"{'n':>7}{'fte':>6}" + (f"{'FTE %':>8}" if has_rate else "")
    lines.append(f"{'variant':<{width}}" + "".join(f"{metric(c).label:>{w}}" for c, w in zip(cols, cw)) + tail)
    missing: dict[str, list[str]] = {}
    for v in vs:
        cells = []
        for c in cols:
            why = unmeasurable(v, c)
            if why and why.startswith("needs"):
                missing.setdefault(f"{metric(c).label} = {NA} ({why})", []).append(v.name)
            cells.append(("~" if _approximate(v) else "") + _cell(v, c))
        row = f"{v.name:<{width}}" + "".join(f"{t:>{w}}" for t, w in zip(cells, cw)) + f"{v.n:>7}{v.n_fte:>6}"
        if has_rate:
            row += f"{_fmt_metric('fte_rate', v.metrics.get('fte_rate')):>8}"
        est = (v.blocks.get("occlusion") or {}).get("estimate")
        if est:  # models with mask / pattern outputs: their occlusion estimate beside the accuracy
            from ..bench.occlusion import summary_text

            row += f"  {summary_text(est)}"
        lines.append(row)
    lines.append("rates in percent" + ("; FTE pairs/probes count as failures in every metric (see "
                                       "failure_policy; enrolled_only in the JSON has the rest)" if has_rate else ""))
    for text, names in missing.items():
        lines.append(f"{text} in: {_name_list(names)}")
    notes: dict[str, list[str]] = {}
    for v in vs:
        for note in v.notes:
            notes.setdefault(note, []).append(v.name)
    subset = res.protocol.get("subset") or {}
    limited = bool(subset.get("limit", subset.get("limit_pairs")))
    for note, names in notes.items():
        lines.append(f"note [{_name_list(names)}]: {note}{_hint(note, limited)}")
    for v in vs:  # --masked-list: accuracy by pair type (masked-unmasked, masked-masked, unmasked-unmasked)
        pt = v.blocks.get("pair_types")
        if pt:
            parts = [f"{t} {d['n_pairs']:,} pairs " + (_fmt_metric("accuracy", d["accuracy"]) if d.get("accuracy")
                                                      is not None else NA)
                     for t, d in pt.items() if t != "all"]
            lines.append(f"pair types [{v.name}] (accuracy %): " + ", ".join(parts))
    f = res.failures
    if f.get("n_images"):
        stages = ", ".join(f"{k} {n}" for k, n in f["by_stage"].items())
        lines.append(f"{f['n_images']} images failed to enrol ({stages}); "
                     + (res.failure_policy.get("summary", "") if isinstance(res.failure_policy, dict)
                        else str(res.failure_policy or "")) + " (failures in the JSON lists them)")
    lm = _landmark_methods(res)
    if lm:
        lines.append("landmarks by method (clean images): " + lm)
    t = res.timing
    lines.append("time: " + ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in t.items()))
    return "\n".join(lines)


def _approximate(v) -> bool:
    return (v.blocks.get("search") or {}).get("exact") is False


def _search_lines(res, vs) -> list[str]:
    """Distractors, approximate search (its measured recall) and the distractor sweep, for the console."""
    out = []
    c = vs[0].counts
    if c.get("n_distractors") is not None:
        d = res.protocol.get("distractors") or {}
        out.append(f"distractors: {c['n_distractors']:,} added to the gallery ({d.get('n_listed', 0):,} listed; "
                   f"{d.get('n_failed', 0)} failed to enrol and are left out, listed under protocol.distractors)")
    approx = [v for v in vs if _approximate(v)]
    if approx:
        b = approx[0].blocks["search"]
        rec = ", ".join(f"{v.name} {v.blocks['search']['recall_at_k']:.4f}" for v in approx
                        if v.blocks["search"].get("recall_at_k") is not None)
        out.append(f"~ APPROXIMATE search ({b['backend']}): recall@{b['k']} against exact search on "
                   f"{b['recall_sample_probes']:,} seeded probes: {rec}; rates marked ~ are approximate")
    for v in vs:
        sw = v.blocks.get("distractor_sweep")
        if sw and sw.get("points"):
            from ..bench.distractors import first_reachable

            j = first_reachable(sw)  # TPIR only at a target the non-mated probes can measure
            t = sw["fpir_targets"][j] if j is not None else None
            pts = "; ".join(f"{p['n_distractors']:,}: {100 * p['rank1']:.2f}"
                            + (f" / {100 * p['tpir'][j]:.2f}" if t is not None else "") for p in sw["points"])
            out.append(f"distractor sweep [{v.name}] (distractors: rank-1 %" + (f" / TPIR@FPIR={t:g} %" if t is not None
                                                                              else "") + f"): {pts}")
    return out


def _landmark_methods(res) -> str:
    v = res.variants.get("clean")
    block = v.blocks.get("landmark_methods") if v is not None else None
    if not block or not block.get("counts"):
        return ""
    return ", ".join(f"{k} {n}" for k, n in block["counts"].items())


def _name_list(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


# ----------------------------------------------------------------------------------- protocols, leaderboard


@click.command("protocols", context_settings=_CTX)
@click.option("--show", metavar="NAME|FILE", help="Print one protocol, resolved (includes merged, variants expanded).")
def protocols_cmd(show):
    """List the benchmark protocols (name, kind, main score, description).

    \b
    Examples:
      occbench protocols
      occbench protocols --show lfw-occ
      occbench protocols --show my-protocol.yaml
    """
    from ..bench.protocols import list_protocols, load_protocol

    if show:
        click.echo(load_protocol(show).to_yaml(), nl=False)
        return
    prots = list_protocols()
    w = max(len(p.name) for p in prots) + 2
    scores = [f"{p.main_score['variant']} {p.main_score['metric']}" for p in prots]
    m = max(len(t) for t in scores + ["main score"]) + 2
    click.echo(f"{'name':<{w}}{'kind':<16}{'main score':<{m}}description")
    for p, ms in zip(prots, scores):
        click.echo(f"{p.name:<{w}}{p.kind:<16}{ms:<{m}}{p.description}")


@click.command("leaderboard", context_settings=_CTX)
@click.argument("results_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=Path("leaderboard.csv"),
              show_default=True, help="CSV to write; the markdown table goes beside it (.md).")
def leaderboard_cmd(results_dir, output):
    """Build a leaderboard (CSV + markdown) from the result JSON files under RESULTS_DIR.

    The CSV has one row per model x protocol x variant; rates are in percent (columns *_pct), and a
    number that could not be measured is an empty cell (the markdown says why).

    \b
    Examples:
      occbench leaderboard results
      occbench leaderboard results/lfw-proof -o lb/leaderboard.csv
    """
    from ..bench.leaderboard import build_leaderboard, write_leaderboard

    lb = build_leaderboard(results_dir)
    csv_path, md = write_leaderboard(lb, output)
    click.echo(f"{len(lb.rows)} rows from {len(lb.files)} results files -> {csv_path}, {md}")
    for f, why in lb.skipped:
        click.echo(f"skipped {f}: {why}", err=True)


COMMANDS = [eval_cmd, protocols_cmd, leaderboard_cmd]
