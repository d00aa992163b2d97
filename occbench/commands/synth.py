"""CLI: synth, patterns, preview. Thin: parse, call the library, report."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import ConfigError

_CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _scales_option(ctx, param, value):
    from ..synth.scales import parse_scales

    try:
        return parse_scales(value)
    except ConfigError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None


def _names_option(ctx, param, value):
    if value is None:
        return None
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if not names:
        raise click.BadParameter("give at least one name, e.g. surgical_mask,sunglasses", ctx=ctx, param=param)
    return names


def _check_jobs(ctx, param, value):
    if value == 0 or value < -1:
        raise click.BadParameter(f"{value} is not a worker count: use N >= 1, or -1 for all cores", ctx=ctx,
                                 param=param)
    return value


def _read_keys(path: Path) -> tuple[str, ...]:
    keys = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    keys = [k for k in keys if k and not k.startswith("#")]
    if not keys:
        raise click.BadParameter(f"{path} lists no keys", param_hint="--keys-file")
    return tuple(keys)


@click.command(context_settings=_CTX)
@click.option("--src", required=True, metavar="SRC",
              help="Images to occlude: a folder (<identity>/<image> or flat), a RecordIO .rec / folder with "
                   "train.rec, an insightface .bin, or a named dataset (casia, lfw, ...) under --data-root.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (new or empty; rerun the same command into it to resume).")
@click.option("--landmarks", type=click.Choice(["auto", "template", "mediapipe", "file"]), default=None,
              help="Where the 5 face points come from. auto: template for 112x112 / 112x96 crops, MediaPipe "
                   "otherwise.  [default: auto, or file with --landmarks-file]")
@click.option("--landmarks-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Landmarks table (.csv/.parquet/.json), e.g. OUT/landmarks.parquet of an earlier run.")
@click.option("--occluders", callback=_names_option, metavar="NAME,...",
              help="Comma-separated occluder names to draw from. [default: all; see --list-occluders]")
@click.option("--occluders-dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Folder of your own RGBA occluders (PNGs + occluders.yaml; see occluders/README.md).")
@click.option("--placement", type=click.Choice(["anchored", "free"]), default="anchored", show_default=True,
              help="anchored: fit to the landmarks; free: centre uniform over the face frame (FROM).")
@click.option("--scales", default="1.0", show_default=True, callback=_scales_option, metavar="SPEC",
              help="Occluder scales: start:step:stop (inclusive, e.g. 1.0:0.5:5) or a list (1,1.5,2).")
@click.option("--bank", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Draw each occluder's look (colours, shape, texture) from a fixed bank of N per occluder, built "
                   "from --seed; placement, scale, fit jitter and relighting stay per image. Cached drawings make "
                   "large runs several times faster. 0: a fresh look for every image.")
@click.option("--per-scale", is_flag=True, help="One output per scale (OccLFW-style) instead of one random scale.")
@click.option("--per-occluder", is_flag=True, help="One output per occluder instead of one random occluder.")
@click.option("--clean-ratio", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Fraction of images left clean (FROM's OccWebFace keeps 1/3).")
@click.option("--k", "k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Pattern grid size K (FROM patterns, measured in the 112x112 face frame).")
@click.option("--seed", type=int, default=0, show_default=True, help="Global seed; per-image seeds derive from it.")
@click.option("--jobs", "-j", type=int, default=1, show_default=True, callback=_check_jobs,
              help="Worker processes (-1: all cores).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N images (in key order).")
@click.option("--keys-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Only the source keys listed in this file, one per line.")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="Quality of JPEG outputs (inputs that are JPEG stay JPEG).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=50_000_000, show_default=True, metavar="N",
              help="Images larger than N pixels (width x height, read from the header before decoding) become "
                   "error rows instead of being decoded.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path),
              help="Folder holding named datasets [default: $OCCBENCH_DATA].")
@click.option("--overwrite", is_flag=True, help="Replace an earlier run with a different configuration in --out.")
@click.option("--wait", is_flag=True,
              help="If another run is writing to --out, wait for it to finish (then resume) instead of failing.")
@click.option("--allow-unsafe-pickle", is_flag=True,
              help="Allow loading insightface .bin sources (pickles: only for files you trust).")
@click.option("--format", "fmt", type=click.Choice(["files", "rec", "wds"]), default="files", show_default=True,
              help="files: images/ + masks/ trees; rec: insightface train.rec/.idx/property + Parquet labels; "
                   "wds: WebDataset tar shards.")
@click.option("--shard-size", type=click.IntRange(min=1), default=1000, show_default=True, metavar="N",
              help="Source images per shard (rec / wds); shards are the unit of resume and of Dask tasks.")
@click.option("--dask", "dask", metavar="local:N|ADDRESS",
              help="Run on Dask: local:N starts N worker processes; tcp://host:8786 uses a running scheduler "
                   "(SOURCE and OUT must be on a file system every worker sees). Tasks are shards (rec / wds) "
                   "or batches of images (files).")
@click.option("--part-masks", is_flag=True,
              help="Also write OUT/partmaps/<key>.png: the face-part label map (uint8 ids, legend in synth.json; "
                   "faces with a mesh or template crops). The part_<name> fractions are always in the manifest.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--list-occluders", is_flag=True, is_eager=True, expose_value=False,
              callback=lambda ctx, p, v: _list_occluders(ctx) if v else None,
              help="List the available occluders and exit.")
def synth(src, out, landmarks, landmarks_file, occluders, occluders_dir, placement, scales, bank, per_scale,
          per_occluder, clean_ratio, k, seed, jobs, limit, keys_file, jpeg_quality, max_pixels, data_root, overwrite,
          wait, allow_unsafe_pickle, fmt, shard_size, dask, part_masks, no_progress):
    """Synthesize occluded faces: images, masks, FROM pattern labels and a manifest.

    By default each image gets one occluder drawn from --occluders at one scale drawn from --scales
    (variant "main"); --per-scale / --per-occluder make one output per scale / occluder (both: every
    pair). Results do not depend on --jobs, and an interrupted run resumes when rerun unchanged.
    Every input gets a row: unreadable, oversized or oddly named images, and images a worker
    crashed on, are error rows with the reason. One run at a time writes to OUT.

    \b
    Writes OUT/images/<variant>/<key>, OUT/masks/<variant>/<key>.png, OUT/manifest.parquet (+ .csv),
    OUT/landmarks.parquet (+ .csv), OUT/skipped.csv (entries not taken as images) and OUT/synth.json
    (config, seed, version, summary).

    \b
    Examples:
      occbench synth --src ../shared/realdata/lfw-guesswho/lfw --out occlfw --limit 50
      occbench synth --src lfw --data-root ~/data --out occlfw --per-scale --scales 1.0:0.5:2 -j 4
      occbench synth --src casia --out occwebface --placement free --clean-ratio 0.333 --bank 256 -j 8
      occbench synth --src aligned/ --out occ --occluders surgical_mask,sunglasses --per-occluder
      occbench synth --src lfw --out occparts --limit 100 --part-masks      # + partmaps/, part_<name> columns
      occbench synth --src lfw --out occ2 --landmarks-file occlfw/landmarks.parquet
      occbench synth --src casia --out occweb-rec --format rec --shard-size 1000 --bank 64 -j 8
      occbench synth --src ms1m --out occ-ms1m --format wds --dask tcp://scheduler:8786 --bank 64
    """
    from ..synth.pipeline import SynthConfig, run_synth

    if landmarks_file is not None and landmarks not in (None, "file"):
        raise click.UsageError(f"--landmarks-file needs --landmarks file (got --landmarks {landmarks})")
    if landmarks == "file" and landmarks_file is None:
        raise click.UsageError("--landmarks file needs --landmarks-file F")
    landmarks = landmarks or ("file" if landmarks_file is not None else "auto")
    cfg = SynthConfig(
        src=src, out=str(out), landmarks=landmarks, landmarks_file=str(landmarks_file) if landmarks_file else None,
        occluders=occluders, occluders_dir=str(occluders_dir) if occluders_dir else None, placement=placement,
        scales=scales, bank=bank, per_scale=per_scale, per_occluder=per_occluder, clean_ratio=clean_ratio, k=k,
        seed=seed, limit=limit, keys=_read_keys(keys_file) if keys_file else None,
        data_root=str(data_root) if data_root else None, jpeg_quality=jpeg_quality, max_pixels=max_pixels,
        jobs=jobs, overwrite=overwrite, allow_unsafe_pickle=allow_unsafe_pickle, wait=wait,
        format=fmt, shard_size=shard_size, dask=dask, part_masks=part_masks)
    try:
        summary = run_synth(cfg, progress=not no_progress)
    except KeyboardInterrupt:
        click.echo("\nInterrupted. Finished images are saved: rerun the same command to resume.", err=True)
        raise click.exceptions.Exit(130) from None
    click.echo(summary.format())
    click.echo(f"manifest: {Path(summary.out) / 'manifest.parquet'} (+ manifest.csv)")


def _list_occluders(ctx):
    from ..synth import occluders as occ

    default = set(occ.default_occluders())
    for name in occ.list_occluders():
        o = occ.create_occluder(name)
        opt_in = "" if name in default else "\topt-in (only when named)"
        click.echo(f"{name}\t{getattr(o, 'category', '')}{opt_in}")
    ctx.exit(0)


@click.command(context_settings=_CTX)
@click.option("--k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="Grid size K.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV file to write [default: print to stdout].")
def patterns(k, out):
    """List FROM's K x K occlusion patterns: pattern, y0, x0, y1, x1 (grid cells, half-open).

    Pattern 0 is the clean pattern (0,0,0,0,0); K=5 gives 226 patterns, K=4 gives 101.

    \b
    Examples:
      occbench patterns --k 5 --out patterns.csv
      occbench patterns --k 4 | head
    """
    from ..synth.patterns import pattern_table

    df = pattern_table(k)
    if out is None:
        sys.stdout.write(df.to_csv(index=False, lineterminator="\n"))
        return
    from ..io.atomic import atomic_write_table

    if out.suffix.lower() != ".csv":
        raise click.BadParameter("the pattern table is written as CSV: use a .csv file name", param_hint="--out")
    atomic_write_table(df, out)
    click.echo(f"wrote {len(df)} patterns (K={k}) to {out}")


@click.command(context_settings=_CTX)
@click.argument("run_dir", metavar="OUT", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--out", "-o", "dest", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG to write [default: OUT/preview.png].")
@click.option("--n", "n", type=click.IntRange(min=1, max=1000), default=24, show_default=True,
              help="Number of samples.")
@click.option("--variant", help="Only rows of this variant (e.g. s1.5, sunglasses@s2).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the (deterministic) sample.")
@click.option("--parts", is_flag=True, help="Add a 4th tile: the face-part map (runs made with --part-masks).")
def preview(run_dir, dest, n, variant, seed, parts):
    """Contact sheet of a synth run: original | occluded | red mask overlay, captioned with
    occluder, scale, occluded area (face frame) and pattern.

    \b
    Examples:
      occbench preview occlfw
      occbench preview occlfw --out sheet.png --n 12 --variant s1.5
      occbench preview occlfw --parts
    """
    from ..synth.preview import write_preview

    if dest is not None and dest.suffix.lower() != ".png":
        raise click.BadParameter("the contact sheet is a PNG: use a .png file name", param_hint="--out")
    path = write_preview(run_dir, dest, n=n, variant=variant, seed=seed, parts=parts)
    click.echo(f"wrote {path}")


COMMANDS = [synth, patterns, preview]
