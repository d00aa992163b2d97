"""Shared by the shard tests: what a synth run left in OUT, for byte-identity checks."""
from __future__ import annotations

from pathlib import Path


def output_files(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` (relative POSIX path -> bytes), without the run's ``.synth`` bookkeeping."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".synth" not in p.relative_to(out).parts}
