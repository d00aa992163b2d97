"""Proof on real faces: a real pretrained recognizer (dlib's ResNet, 99.38% published on LFW) on real
LFW, clean vs occluded, in one command.

    python examples/lfw_occlusion_proof.py                      # full run (3,000 pairs)
    python examples/lfw_occlusion_proof.py --limit-pairs 60     # quick check (what the test runs)

Steps (all through the public CLI, so the numbers are exactly what `occbench eval` gives):
  1. clean LFW (leave-one-fold-out over the 5 real folds) with dlib's native net (`dlib-resnet`,
     optional with --native) and with its torch port (`dlib-resnet-torch`);
  2. `lfw-occ`: N-O and O-O, per scale 1.0/1.5/2.0, per occluder type, and FROM-style free placement;
  3. `lfw-occ-id`: 1:N identification with occluded probes;
  4. leaderboard CSV + markdown built from the result JSON files; plots sit beside each JSON.
Needs `pip install 'occbench[dlib]'` and ../shared/realdata/lfw-guesswho (or --data-root).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "realdata" / "lfw-guesswho"


def occbench(*args: str) -> None:
    from occbench.cli import cli

    print("$ occbench " + " ".join(args), flush=True)
    try:
        cli.main(list(args), prog_name="occbench", standalone_mode=False)
    except Exception as e:  # surface CLI errors as a failed run
        sys.exit(f"occbench {args[0]} failed: {e}")


TYPES = ["surgical_mask", "n95", "sunglasses", "eyeglasses", "scarf", "hand", "cap", "rgba_phone", "block_solid", "free"]


def headline_table(model_dir: Path) -> str:
    """The README's table, straight from the result JSON files."""
    import json

    def variants(proto):
        return json.loads((model_dir / f"{proto}.json").read_text())["variants"]

    occ, ident = variants("lfw-occ"), variants("lfw-occ-id")
    pct = lambda x: f"{100 * x:.2f}"  # noqa: E731
    get = lambda vs, name, m: pct(vs[name]["metrics"][m]) if name in vs else "–"  # noqa: E731
    rows = [("clean", "clean", "clean")]
    rows += [(f"all types, s={s}", f"N-O@s{s}", f"O-O@s{s}") for s in ("1.0", "1.5")]
    rows += [("all types, s=2.0 (headline)", "N-O", "O-O")]
    rows += [(f"{t} s=2.0" if t != "free" else "free placement (FROM Alg. 1) s=2.0", f"N-O/{t}@s2.0", f"O-O/{t}@s2.0")
             for t in TYPES]
    out = ["| condition | N-O acc | O-O acc | N-O rank-1 (1:N) |", "|---|---:|---:|---:|"]
    for name, a, b in rows:
        out.append(f"| {name} | {get(occ, a, 'accuracy')} | {get(occ, b, 'accuracy')} | {get(ident, a, 'rank1')} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "lfw-proof")
    ap.add_argument("--cache-dir", type=Path, default=REPO / ".occbench_cache")
    ap.add_argument("--model", default="dlib-resnet-torch", help="recognizer for every protocol")
    ap.add_argument("--native", action="store_true", help="also score clean LFW with dlib's own (slow) net")
    ap.add_argument("--limit-pairs", type=int, default=None, help="quick run on N pairs / ~N probes")
    ap.add_argument("--occ-limit-pairs", type=int, default=None,
                    help="limit only the occluded protocols (clean LFW stays at --limit-pairs)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if not (a.data_root / "lfw").is_dir():
        sys.exit(f"LFW not found under {a.data_root}: pass --data-root (folder holding lfw/ and the pairs file)")

    common = ["--data-root", str(a.data_root), "--out", str(a.out), "--cache-dir", str(a.cache_dir),
              "--workers", str(a.workers), "--device", a.device, "--save-scores"]
    if a.no_progress:
        common.append("--no-progress")
    clean = common + (["--limit-pairs", str(a.limit_pairs)] if a.limit_pairs else [])
    occ_limit = a.occ_limit_pairs or a.limit_pairs
    occ = common + (["--limit-pairs", str(occ_limit)] if occ_limit else [])
    models = ["dlib-resnet", a.model] if a.native else [a.model]
    for m in models:
        occbench("eval", "-m", m, "-p", "lfw", *clean)
    occbench("eval", "-m", a.model, "-p", "lfw-occ", *occ)
    occbench("eval", "-m", a.model, "-p", "lfw-occ-id", *occ)
    occbench("leaderboard", str(a.out), "-o", str(a.out / "leaderboard.csv"))
    table = headline_table(a.out / a.model)
    (a.out / "proof_table.md").write_text(table)
    print(f"\nresults, plots and leaderboard under {a.out}")
    print(table)
    print((a.out / "leaderboard.md").read_text() if (a.out / "leaderboard.md").exists() else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
