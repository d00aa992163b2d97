"""Running the occbench CLI in a child process (crash tests): its environment, and a run the crash
hook aborts followed by the rerun that isolates the image."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from occbench.synth.pipeline import CRASH_HOOK_ENV

REPO = Path(__file__).resolve().parents[1]


def cli_env(**extra) -> dict:
    """This environment with the checkout first on PYTHONPATH (the child imports the crash hook), plus ``extra``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def crash_then_rerun(cmd: list[str], key: str) -> subprocess.CompletedProcess:
    """Run ``cmd`` with the crash hook on ``key``: the first run must abort, the rerun must finish and
    report the one crashed image. Returns the rerun."""
    first = subprocess.run(cmd, env=cli_env(**{CRASH_HOOK_ENV: key}), capture_output=True)
    assert first.returncode == -signal.SIGABRT
    again = subprocess.run(cmd, env=cli_env(**{CRASH_HOOK_ENV: key}), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "crashed: a worker process crashed on 1 image (error rows)" in again.stdout
    return again
