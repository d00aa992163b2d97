"""Real vs synthetic masks: is occbench's synthetic mask a fair stand-in for a real one?

With a masked list (``--masked-list masked.csv``, columns ``path,masked``) it runs ``mfr2`` (real masks,
images as published) and ``mfr2-synth`` (synthetic masks on the images the list marks unmasked, at
s = 0.8, 1.0, 1.2) on the same pairs, and writes the table of real-mask accuracy against
synthetic-mask accuracy per pair type, with the scale at which synthetic-masked unmasked-unmasked pairs
meet the real masked-masked accuracy (``occbench.bench.masked``).

Without a list it compares ``mfr2``'s accuracy (real masks, pairs as published) with LFW pairs whose
second image wears a synthetic mask (surgical / N95 / cloth) at the same three scales. The identities
and pairs differ, so that comparison only says whether the two are in the same range.

    python examples/mfr2_real_vs_synthetic.py -m dlib-resnet-torch --data-root ~/data --masked-list masked.csv
    python examples/mfr2_real_vs_synthetic.py -m dlib-resnet-torch --data-root ~/data \\
        --lfw-root ../shared/realdata/lfw-guesswho
Writes OUT/real_vs_synthetic.md and .json (default OUT: results/mfr2-real-vs-synthetic).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCALES = (0.8, 1.0, 1.2)
LFW_SWEEP = """include: [lfw.yaml, _mask.yaml]
name: lfw-mask-sweep
description: LFW pairs, the second image masked (surgical_mask, n95, cloth_mask) at s = 0.8, 1.0, 1.2.
occlusion: {scales: [0.8, 1.0, 1.2], headline: {scale: 1.0, placement: anchored}, breakdown: [scale]}
main_score: {variant: N-O, metric: accuracy}
"""


def _variant(scale: float, mode: str) -> str:
    return mode if scale == 1.0 else f"{mode}@s{scale:g}"


def with_list(run, args, out: Path) -> str:
    from occbench.bench.masked import real_vs_synthetic, table_markdown

    real = run("mfr2", args.data_root, masked_list=args.masked_list)
    synth = run("mfr2-synth", args.data_root, masked_list=args.masked_list)
    by_scale = {s: synth["variants"][_variant(s, "mask-unmasked")]["pair_types"] for s in SCALES}
    table = real_vs_synthetic(real["variants"]["clean"]["pair_types"], by_scale)
    (out / "real_vs_synthetic.json").write_text(json.dumps(table, indent=2) + "\n")
    return ("MFR2, same identities and pairs: real masks (as published) vs synthetic masks on the images "
            "the list marks unmasked (accuracy %)\n\n" + table_markdown(table))


def without_list(run, args, out: Path) -> str:
    from occbench.bench.masked import meeting_scale

    if args.lfw_root is None:
        raise SystemExit("without --masked-list, give --lfw-root (LFW with its pairs file) for the comparison")
    real = run("mfr2", args.data_root)["variants"]["clean"]["metrics"]["accuracy"]
    proto = out / "lfw-mask-sweep.yaml"
    proto.write_text(LFW_SWEEP)
    lfw = run(str(proto), args.lfw_root)
    synth = [lfw["variants"][_variant(s, "N-O")]["metrics"]["accuracy"] for s in SCALES]
    meet = meeting_scale(SCALES, synth, real)
    table = {"mfr2_real_accuracy": real, "lfw_synthetic_accuracy": dict(zip(map(str, SCALES), synth)),
             "meeting_scale": meet, "note": "different identities and pairs (MFR2: 53 public figures; LFW pairs)"}
    (out / "real_vs_synthetic.json").write_text(json.dumps(table, indent=2) + "\n")
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}"  # noqa: E731
    return "\n".join([
        "No masked list: MFR2 (real masks, pairs as published) against LFW pairs with a synthetic mask on the "
        "second image. **The identities and pairs differ**: read this as 'same range or not', not as a "
        "paired comparison (give --masked-list for that).", "",
        "| set | " + " | ".join(f"s={s:.1f}" for s in SCALES) + " |", "|---|" + "---:|" * len(SCALES),
        "| MFR2, real masks | " + " | ".join(pct(real) for _ in SCALES) + " |",
        "| LFW, synthetic mask on the second image | " + " | ".join(pct(a) for a in synth) + " |", "",
        "Scale at which they meet: " + (f"s = {meet:.2f}" if meet is not None else
                                         "n/a: equal at several scales" if synth.count(real) > 1 else
                                         f"none within {SCALES[0]:g}-{SCALES[-1]:g}")])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", required=True, help="recognizer spec, as for occbench eval")
    ap.add_argument("--arch", default=None)
    ap.add_argument("--data-root", required=True, help="holds mfr2/ (or is the mfr2 folder)")
    ap.add_argument("--masked-list", default=None, help="path,masked CSV over MFR2's images")
    ap.add_argument("--lfw-root", default=None, help="LFW data root, for the comparison without a list")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "mfr2-real-vs-synthetic")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--limit", type=int, default=None, help="quick run: N pairs per protocol")
    a = ap.parse_args(argv)

    from occbench.bench.evaluate import run_eval

    a.out.mkdir(parents=True, exist_ok=True)

    def run(protocol, data_root, masked_list=None) -> dict:
        res = run_eval(model=a.model, arch=a.arch, protocol=protocol, data_root=str(data_root),
                       masked_list=masked_list, out=str(a.out), device=a.device, cache_dir=a.cache_dir,
                       limit=a.limit, plots=False, progress=False)
        return res.to_dict()

    text = with_list(run, a, a.out) if a.masked_list else without_list(run, a, a.out)
    (a.out / "real_vs_synthetic.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
