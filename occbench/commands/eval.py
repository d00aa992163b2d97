"""CLI: eval, protocols, leaderboard. Thin: parse, call the library, report."""
from __future__ import annotations

from pathlib import Path

import click

_CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _fmt(v) -> str:
    return "-" if v is None else (f"{100 * v:.2f}" if isinstance(v, float) else str(v))


@click.command("eval", context_settings=_CTX)
@click.option("--model", "-m", required=True, metavar="MODEL",
              help="A registered recognizer name (e.g. dlib-resnet), a model file (TorchScript, state dict "
                   "with --arch, ONNX) or a Python factory pkg.module:fn.")
@click.option("--arch", metavar="ARCH", help="Architecture for a plain state dict (e.g. iresnet50).")
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
@click.option("--limit-pairs", type=click.IntRange(min=1), metavar="N",
              help="Quick run on N pairs (stratified by fold and label; 1:N: about N probes).")
@click.option("--variants", metavar="NAME,...", help="Only these variants (clean is always included).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Landmarks, occluded images and embeddings cache [default: $OCCBENCH_CACHE or .occbench_cache].")
@click.option("--save-scores", is_flag=True,
              help="Also write every pair score (1:N: probe x top-k) as Parquet beside the JSON.")
@click.option("--allow-unsafe-pickle", is_flag=True,
              help="Allow pickled inputs (.bin sets, full-pickle checkpoints): only for files you trust.")
@click.option("--no-plots", is_flag=True, help="Do not write plots.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def eval_cmd(model, arch, protocol, data_root, pairs, gallery, probe, bin_file, out, model_name, device, precision,
             batch_size, workers, limit_pairs, variants, cache_dir, save_scores, allow_unsafe_pickle, no_plots,
             no_progress):
    """Evaluate a face recognizer on a benchmark protocol.

    \b
    Examples:
      occbench eval --model dlib-resnet --protocol lfw-occ --data-root ../shared/realdata/lfw-guesswho
      occbench eval -m backbone.pth --arch iresnet50 -p lfw-occ --save-scores
      occbench eval -m model.onnx -p bin --bin faces_emore/agedb_30.bin --allow-unsafe-pickle
    """
    from ..bench.evaluate import evaluate
    from ..bench.protocols import load_protocol
    from ..bench.results import default_model_name, result_path
    from ..recognizers import create_recognizer

    prot = load_protocol(protocol).with_overrides(pairs=pairs, gallery=gallery, probe=probe, bin=bin_file)
    wanted = [v.strip() for v in variants.split(",") if v.strip()] if variants else None
    rec = create_recognizer(model, arch=arch, device=device, precision=precision,
                            allow_unsafe_pickle=allow_unsafe_pickle)
    name = model_name or default_model_name(model, rec)
    path = result_path(out, name, prot.name)
    info = {"name": name, "spec": str(model), "arch": arch, "precision": precision, "device": device}
    res = evaluate(prot, rec, data_root=data_root, out_dir=path.parent, cache_dir=cache_dir, batch_size=batch_size,
                   num_workers=workers, save_scores=save_scores, limit_pairs=limit_pairs, progress=not no_progress,
                   model_info=info, plots=not no_plots, allow_unsafe_pickle=allow_unsafe_pickle,
                   device=device, variants=wanted)
    click.echo(_summary(res))
    click.echo(f"wrote {path}")


def _summary(res: dict) -> str:
    main = res["main_score"]
    kind = res["protocol"]["kind"]
    cols = ("accuracy", "tar_at_far_1e-3", "eer", "auc") if kind == "verification" else (
        "rank1", "rank5", "tpir_at_fpir_1e-2")
    n_key = "n_pairs" if kind == "verification" else "n_probes"
    width = max(len(v) for v in res["variants"]) + 2
    cw = [max(len(c), 6) + 2 for c in cols]  # "100.00" is 6 wide; keep a gap
    lines = [f"{res['model']['name']} on {res['protocol']['name']} (hash {res['protocol']['hash']}): "
             f"{main['variant']} {main['metric']} = {_fmt(main['value'])}",
             f"{'variant':<{width}}" + "".join(f"{c:>{w}}" for c, w in zip(cols, cw)) + f"{'n':>7}{'fte':>6}"]
    for v, e in res["variants"].items():
        lines.append(f"{v:<{width}}" + "".join(f"{_fmt(e['metrics'].get(c)):>{w}}" for c, w in zip(cols, cw))
                     + f"{e[n_key]:>7}{e['n_fte']:>6}")
    f = res["failures"]
    if f["n_images"]:
        stages = ", ".join(f"{k} {n}" for k, n in f["by_stage"].items())
        lines.append(f"{f['n_images']} images failed ({stages}); their pairs/probes are excluded and counted "
                     "(see failures in the JSON)")
    t = res["timing"]
    lines.append("time: " + ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in t.items()))
    return "\n".join(lines)


@click.command("protocols", context_settings=_CTX)
@click.option("--show", metavar="NAME|FILE", help="Print one protocol, resolved (includes merged, variants expanded).")
def protocols_cmd(show):
    """List the benchmark protocols (name, kind, main score, description)."""
    from ..bench.protocols import list_protocols, load_protocol

    if show:
        click.echo(load_protocol(show).to_yaml(), nl=False)
        return
    prots = list_protocols()
    w = max(len(p.name) for p in prots) + 2
    click.echo(f"{'name':<{w}}{'kind':<16}{'main score':<22}description")
    for p in prots:
        ms = f"{p.main_score['variant']} {p.main_score['metric']}"
        click.echo(f"{p.name:<{w}}{p.kind:<16}{ms:<22}{p.description}")


@click.command("leaderboard", context_settings=_CTX)
@click.argument("results_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=Path("leaderboard.csv"),
              show_default=True, help="CSV to write; the markdown table goes beside it (.md).")
def leaderboard_cmd(results_dir, output):
    """Build a leaderboard (CSV + markdown) from the result JSON files under RESULTS_DIR."""
    from ..bench.leaderboard import build_leaderboard, write_leaderboard

    lb = build_leaderboard(results_dir)
    csv_path, md = write_leaderboard(lb, output)
    click.echo(f"{len(lb.rows)} rows from {len(lb.files)} results files -> {csv_path}, {md}")
    for f, why in lb.skipped:
        click.echo(f"skipped {f}: {why}", err=True)


COMMANDS = [eval_cmd, protocols_cmd, leaderboard_cmd]
