"""The ``occbench`` command line: a thin click group.

Commands live in ``occbench/commands/<area>.py``; each module exports ``COMMANDS`` (a list of click
commands). Commands parse options, call one library function and report. Any ``OccbenchError`` raised
by the library becomes a ``click.ClickException`` ("Error: ..." and exit 1) here, in one place.
"""
from __future__ import annotations

import importlib

import click

from . import __version__
from .errors import OccbenchError

COMMAND_MODULES = ("synth", "eval", "dlib", "realism")


class OccbenchGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OccbenchError as e:
            raise click.ClickException(str(e)) from e


@click.group(cls=OccbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="occbench")
def cli() -> None:
    """occbench: synthesize occluded faces and benchmark face recognizers on them.

    \b
    Examples:
      occbench synth --src ../shared/realdata/lfw-guesswho/lfw --out occlfw --limit 50
      occbench patterns --k 5 --out patterns.csv
      occbench eval --model backbone.pth --arch iresnet50 --protocol lfw-occ
      occbench leaderboard results -o leaderboard.csv
    """


for _name in COMMAND_MODULES:
    _mod = importlib.import_module(f"occbench.commands.{_name}")
    for _cmd in _mod.COMMANDS:
        cli.add_command(_cmd)


def main() -> None:  # console-script entry point
    cli(prog_name="occbench")
