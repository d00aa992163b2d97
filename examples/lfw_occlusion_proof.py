"""Proof on real faces: a real pretrained recognizer (dlib's ResNet, 99.38% published on LFW) on real
LFW, clean vs occluded, in one command.

    python examples/lfw_occlusion_proof.py                      # full run (3,000 pairs)
    python examples/lfw_occlusion_proof.py --limit 60           # quick check (what the test runs)

Steps (each one ``run_eval(EvalConfig(...))``, the very call behind `occbench eval`):
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


def evaluate(model: str, protocol: str, a, limit: int | None):
    """One ``occbench eval`` run through the library; prints its console summary."""
    from occbench.bench.evaluate import EvalConfig, run_eval
    from occbench.commands.eval import summary
    from occbench.errors import OccbenchError

    print(f"$ occbench eval -m {model} -p {protocol}" + (f" --limit {limit}" if limit else ""), flush=True)
    cfg = EvalConfig(model=model, protocol=protocol, data_root=a.data_root, out=a.out, cache_dir=a.cache_dir,
                     workers=a.workers, device=a.device, save_scores=True, limit=limit)
    try:
        res = run_eval(cfg, progress=not a.no_progress)
    except OccbenchError as e:  # surface library errors as a failed run
        sys.exit(f"occbench eval -p {protocol} failed: {e}")
    print(summary(res), flush=True)
    return res


# occluder types as the protocol pins them (look 1: occbench 0.3.0's looks; occluders/README.md, "Looks")
TYPES = ["surgical_mask_v1", "n95_v1", "sunglasses_v1", "eyeglasses_v1", "scarf_v1", "hand_v1", "cap_v1",
         "rgba_phone_v1", "block_solid_v1", "free"]


def headline_table(model_dir: Path, enrolled_only: bool = False) -> str:
    """The README's table, straight from the result files (through ``EvalResult``). Default: every
    pair / probe counts, failures to enrol as errors (the headline rule); ``enrolled_only``: the
    metrics on enrolled pairs / probes only (results schema 2 on)."""
    from occbench.bench.results import EvalResult

    def variants(proto):
        return EvalResult.load(model_dir / f"{proto}.json").variants

    def value(v, m):
        if enrolled_only:
            block = v.blocks.get("enrolled_only")
            return block["metrics"].get(m) if block else None
        return v.metrics.get(m)

    occ, ident = variants("lfw-occ"), variants("lfw-occ-id")

    def get(vs, name, m):
        x = value(vs[name], m) if name in vs else None
        return "–" if x is None else f"{100 * x:.2f}"

    rows = [("clean", "clean", "clean")]
    rows += [(f"all types, s={s}", f"N-O@s{s}", f"O-O@s{s}") for s in ("1.0", "1.5")]
    rows += [("all types, s=2.0 (headline)", "N-O", "O-O")]
    rows += [(f"{t.removesuffix('_v1')} s=2.0" if t != "free" else "free placement (FROM Alg. 1) s=2.0",
              f"N-O/{t}@s2.0", f"O-O/{t}@s2.0") for t in TYPES]
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
    ap.add_argument("--limit", "--limit-pairs", dest="limit", type=int, default=None,
                    help="quick run on N pairs / ~N probes")
    ap.add_argument("--occ-limit", "--occ-limit-pairs", dest="occ_limit", type=int, default=None,
                    help="limit only the occluded protocols (clean LFW stays at --limit)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if not (a.data_root / "lfw").is_dir():
        sys.exit(f"LFW not found under {a.data_root}: pass --data-root (folder holding lfw/ and the pairs file)")

    from occbench.bench.leaderboard import build_leaderboard, write_leaderboard

    occ_limit = a.occ_limit or a.limit
    models = ["dlib-resnet", a.model] if a.native else [a.model]
    for m in models:
        evaluate(m, "lfw", a, a.limit)
    evaluate(a.model, "lfw-occ", a, occ_limit)
    evaluate(a.model, "lfw-occ-id", a, occ_limit)
    lb = build_leaderboard(a.out)
    csv, md = write_leaderboard(lb, a.out / "leaderboard.csv")
    print(f"$ occbench leaderboard {a.out} -o {csv}\n{len(lb.rows)} rows from {len(lb.files)} results files")
    table = headline_table(a.out / a.model)
    enrolled = headline_table(a.out / a.model, enrolled_only=True)
    (a.out / "proof_table.md").write_text(
        "Every pair / probe counts; a failure to enrol is an error (results schema 2):\n\n" + table
        + "\nOn enrolled pairs / probes only:\n\n" + enrolled)
    print(f"\nresults, plots and leaderboard under {a.out}")
    print(table)
    print("enrolled pairs / probes only:")
    print(enrolled)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
