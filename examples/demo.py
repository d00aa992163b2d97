"""occbench in one minute: occlude 24 real LFW faces and write a manifest and a contact sheet.

    python examples/demo.py                 # writes demo_out/
    python examples/demo.py --out /tmp/demo

Uses ../shared/realdata/lfw-guesswho/lfw beside the checkout (or $OCCBENCH_REALDATA/lfw-guesswho/lfw).
Without it, the demo falls back to generated synthetic 112x112 "faces" and says so.
The same run from the command line:

    occbench synth --src ../shared/realdata/lfw-guesswho/lfw --out demo_out --keys-file keys.txt \
        --scales 1:0.5:2 --clean-ratio 0.1
    occbench preview demo_out
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("OCCBENCH_REALDATA", REPO.parent / "shared" / "realdata"))
N_IMAGES = 24


def pick_keys(source, n: int) -> list[str]:
    """n keys spread evenly over the (sorted) source, so many identities show up."""
    keys = [it.key for it in source.items()]
    step = max(1, len(keys) // n)
    return keys[::step][:n]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "demo_out"), help="output folder (default: demo_out/)")
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args(argv)

    from occbench.io.sources import open_source
    from occbench.synth.pipeline import SynthConfig, run_synth
    from occbench.synth.preview import write_preview

    lfw = REALDATA / "lfw-guesswho" / "lfw"
    if lfw.is_dir():
        src = str(lfw)
        keys = pick_keys(open_source(src), N_IMAGES)
        print(f"demo: {len(keys)} real LFW images from {lfw}")
    else:
        sys.path.insert(0, str(REPO / "tests"))
        from synthetic_faces import write_faces

        src = str(Path(args.out).with_name(Path(args.out).name + "_faces"))
        keys = write_faces(src, N_IMAGES, 112, "jpg")
        print(f"demo: real LFW not found at {lfw}; using {N_IMAGES} generated synthetic faces in {src}")

    t0 = time.perf_counter()
    cfg = SynthConfig(src=src, out=args.out, keys=tuple(keys), placement="anchored", scales="1:0.5:2",
                      clean_ratio=0.1, seed=0, jobs=args.jobs)
    summary = run_synth(cfg, progress=False)
    sheet = write_preview(args.out, n=N_IMAGES)
    print(summary.format())
    print(f"manifest:      {Path(args.out) / 'manifest.parquet'} (+ manifest.csv)")
    print(f"contact sheet: {sheet}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
