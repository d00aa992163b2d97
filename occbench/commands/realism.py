"""CLI: realism (TSTR / TRTS score of the mask occluders on real masked faces). Thin: parse, call, report."""
from __future__ import annotations

from pathlib import Path

import click

_CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _names(ctx, param, value):
    names = tuple(dict.fromkeys(v.strip() for v in (value or "").split(",") if v.strip()))
    if not names:
        raise click.BadParameter("give at least one occluder name, e.g. surgical_mask,n95", ctx=ctx, param=param)
    return names


@click.command(context_settings=_CTX)
@click.option("--occluders", default="surgical_mask,n95,cloth_mask", show_default=True, callback=_names,
              metavar="NAME,...", help="Mask occluders to score (pooled, and one model each).")
@click.option("--control", default="sunglasses", show_default=True, metavar="NAME|none",
              help="A non-mask occluder scored the same way, as a control row ('none': skip).")
@click.option("--lfw", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="LFW folder (<Name>/<Name>_NNNN.jpg). [default: ../shared/realdata/lfw-guesswho/lfw]")
@click.option("--real", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Real masked faces. [default: ../shared/realdata/rwmfd-masked/RWMFD_part_1]")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=Path("realism.json"),
              show_default=True, help="JSON result (config, splits, every row, the images where no face was found).")
@click.option("--seed", type=int, default=0, show_default=True, help="Splits, occluder draws and training.")
@click.option("--epochs", type=click.IntRange(min=1), default=8, show_default=True,
              help="Training passes over the training split of each model.")
@click.option("--crop", type=click.IntRange(16, 112), default=48, show_default=True,
              help="Classifier input size (aligned 112x112 face, downsampled).")
@click.option("--scale", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Occluder scale (anchored; 1 = natural fit).")
@click.option("--fpr", "fpr_target", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Threshold: strict FPR on the training side's validation negatives.")
@click.option("--no-per-occluder", is_flag=True, help="Only the pooled model (faster).")
@click.option("--lfw-limit", type=click.IntRange(min=1), help="Only the first N LFW images (quick checks).")
@click.option("--real-limit", type=click.IntRange(min=1), help="Only the first N real images (quick checks).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch CPU threads.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def realism(occluders, control, lfw, real, out, seed, epochs, crop, scale, fpr_target, no_per_occluder, lfw_limit,
            real_limit, threads, quiet):
    """How realistic are the mask occluders? Train on synthetic, test on real (TSTR), and the reverse.

    A small CNN learns "lower face covered by a mask" from clean LFW faces vs the same faces with
    occbench's masks, and is tested on real masked faces (RWMFD) vs held-out clean LFW (TSTR); one
    trained on real masks is tested on occbench's (TRTS). TSTS / TRTR rows give each model's score on
    its own kind of data, the control row a non-mask occluder. LFW splits by identity, RWMFD by file.

    \b
    Examples:
      occbench realism --occluders surgical_mask,n95,cloth_mask
      occbench realism --occluders surgical_mask --control none --out surgical.json
      occbench realism --lfw-limit 300 --real-limit 120 --epochs 2      # a 1-minute smoke run
    """
    from ..realism import RealismConfig, run_realism, write_result

    cfg = RealismConfig(occluders=occluders, control=None if control.lower() == "none" else control,
                        lfw=str(lfw) if lfw else None, real=str(real) if real else None, seed=seed, epochs=epochs,
                        crop=crop, scale=scale, fpr_target=fpr_target, per_occluder=not no_per_occluder,
                        lfw_limit=lfw_limit, real_limit=real_limit, threads=threads)
    result = run_realism(cfg, progress=not quiet)
    write_result(result, out)
    c = result.counts
    click.echo(result.format())
    click.echo(f"faces: LFW {sum(c['lfw_faces'].values())} of {c['lfw_images']} (train/val/test "
               f"{c['lfw_faces']['train']}/{c['lfw_faces']['val']}/{c['lfw_faces']['test']}), real "
               f"{sum(c['real_faces'].values())} of {c['real_images']} (no face found: {c['noface']['real']}); "
               f"{result.timing_s['total']:.0f} s")
    click.echo(f"wrote {out}")


COMMANDS = [realism]
