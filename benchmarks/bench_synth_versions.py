"""Synth throughput of two occbench versions on the same aligned LFW crops, each run in a fresh process.

    python benchmarks/bench_synth_versions.py --old 64616cd            # 0.1.0 vs the working tree
    python benchmarks/bench_synth_versions.py --old v0.1 --n 600 --repeat 3 --bank 64

The old revision is checked out with `git worktree` into a temporary folder (removed afterwards). Both
versions synthesize the same 600 aligned 112x112 crops (every occluder, scales 1:0.5:2, --jobs 1),
alternating old/new, a new seed per repeat; the best of the repeats is shown. Imports are not timed.
With --bank the new version also runs with that bank, twice in one process (the second run is warm).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

RUN = """
import json, sys, time
from pathlib import Path
from occbench.synth.pipeline import SynthConfig, run_synth
import pandas, pyarrow.parquet  # noqa: F401  (imports are not throughput)
keys, src, out, kw, times = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5])
keys = tuple(Path(keys).read_text().split())
for i in range(times):
    cfg = SynthConfig(src=src, out=f"{out}-{i}", keys=keys, landmarks="template", scales="1:0.5:2", jobs=1, **kw)
    t = time.perf_counter()
    run_synth(cfg, progress=False)
    print(time.perf_counter() - t)
"""


def run(repo: Path, keys: Path, src: Path, out: Path, kw: dict, times: int = 1) -> list[float]:
    res = subprocess.run([sys.executable, "-c", RUN, str(keys), str(src), str(out), json.dumps(kw), str(times)],
                         cwd=repo, env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"}, capture_output=True,
                         text=True)
    if res.returncode:
        sys.exit(f"synth failed in {repo}:\n{res.stderr[-2000:]}")
    return [float(x) for x in res.stdout.split()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="git revision to compare against")
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bank", type=int, default=0, help="also time the working tree with this bank (0: skip)")
    args = ap.parse_args(argv)
    import bench_synth as B
    from occbench.io.sources import open_source

    lfw = B.REALDATA / "lfw-guesswho" / "lfw"
    if not lfw.is_dir():
        print(f"real LFW not found at {lfw}", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="bench_versions_"))
    old = tmp / "old"
    try:
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(old), args.old], cwd=REPO, check=True)
        keys = [it.key for it in open_source(str(lfw)).items()]
        aligned = B.build_aligned(lfw, B.spread(keys, args.n), tmp / "aligned")
        (tmp / "keys.txt").write_text("\n".join(aligned))
        times: dict[str, list[float]] = {"old": [], "new": []}
        for r in range(args.repeat):
            for name, repo in (("old", old), ("new", REPO)):
                times[name] += run(repo, tmp / "keys.txt", tmp / "aligned", tmp / f"{name}{r}", {"seed": r})
        if args.bank:
            times[f"new --bank {args.bank}, warm"] = run(REPO, tmp / "keys.txt", tmp / "aligned", tmp / "bank",
                                                         {"bank": args.bank}, times=2)[1:]
        n = len(aligned)
        for name, ts in times.items():
            print(f"{name:24s} best {n / min(ts):7.1f} img/s   runs {[round(n / t, 1) for t in ts]}")
        print(f"new / old ({args.old}): {min(times['old']) / min(times['new']):.2f}x")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
