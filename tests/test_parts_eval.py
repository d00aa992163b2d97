"""Which part matters, in eval: the per-variant ``parts`` split (1:1 and 1:N) against brute-force counts,
the one-group-at-a-time protocol (``lfw-occ-parts``, ``part_group`` blocks), figure and leaderboard."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from occbench.bench.evaluate import evaluate
from occbench.bench.protocols import load_protocol, validate_protocol
from occbench.bench.parts import (MIN_ITEMS, check_part_blocks, leaderboard_values, rank1_hits,
                                  verification_parts)
from occbench.errors import ConfigError
from occbench.face.parts import load_parts

from test_evaluate import TinyRecognizer, make_faces, make_pairs_set

NAMES = load_parts().names + list(load_parts().groups)


def _occ_set(keys, rng, fail=()):
    rows = {}
    for k in keys:
        if k in fail:
            rows[k] = {"status": "error", "reason": "x"}
        else:
            rows[k] = {"status": "ok", **{f"part_{n}": (np.nan if rng.random() < 0.1 else float(rng.random()))
                                          for n in NAMES}}
    return SimpleNamespace(rows=rows)


@pytest.mark.parametrize("mode", ["N-O", "O-O"])
def test_verification_split_brute_force(mode):
    rng = np.random.default_rng(3)
    keys = [f"k{i}" for i in range(120)]
    occ = _occ_set(keys, rng, fail={"k7"})
    n = 400
    k1 = list(rng.choice(keys, n))
    k2 = list(rng.choice(keys, n))
    correct = (rng.random(n) < 0.8).astype(float)
    clean = (rng.random(n) < 0.95).astype(float)
    block = verification_parts(occ, mode, k1, k2, correct, clean)

    def frac(k, part):
        r = occ.rows[k]
        return r.get(f"part_{part}", math.nan) if r["status"] == "ok" else math.nan

    for part in ("nose", "eye_group", "cheek_l"):
        cov, unc, unm = [], [], 0
        for i in range(n):
            f2 = frac(k2[i], part)
            if mode == "N-O":
                state = None if math.isnan(f2) else f2 >= 0.5
            else:
                f1 = frac(k1[i], part)
                known = [f for f in (f1, f2) if not math.isnan(f)]
                state = True if any(f >= 0.5 for f in known) else (False if len(known) == 2 else None)
            if state is None:
                unm += 1
            else:
                (cov if state else unc).append(i)
        g = block["parts"][part]
        assert (g["n_covered"], g["n_uncovered"], g["n_unmeasured"]) == (len(cov), len(unc), unm)
        assert g["accuracy_covered"] == pytest.approx(correct[cov].mean())
        assert g["accuracy_uncovered"] == pytest.approx(correct[unc].mean())
        assert g["pp_lost_vs_clean"] == pytest.approx(100 * (clean[cov].mean() - correct[cov].mean()))
    assert block["metric"] == "accuracy" and block["min_items"] == MIN_ITEMS


def test_rank1_hits_follow_the_failure_rule():
    ok = np.array([True, False, True, True])
    mate = SimpleNamespace(ranks=np.array([1.0, np.inf, 2.0]))  # scored probes only, in order
    assert rank1_hits(4, ok, mate).tolist() == [1.0, 0.0, 0.0, 0.0]  # a failed probe misses
    assert rank1_hits(2, np.array([False, False]), None).tolist() == [0.0, 0.0]


PARTS_YAML = """
include: pairs.yaml
name: {name}
description: generated faces, one part group covered at a time
landmarks: {{method: template}}
occlusion:
  occluders: [part_eye_group, part_mouth_group]
  scales: [1.0]
  headline: {{scale: 1.0, placement: {placement}}}
  modes: [N-O, O-O]
  breakdown: [occluder]
main_score: {{variant: N-O, metric: accuracy}}
"""


def test_part_blocks_need_anchored_placement(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(PARTS_YAML.format(name="bad", placement="free"))
    with pytest.raises(ConfigError, match="fitted to face parts"):
        load_protocol(p)
    with pytest.raises(ConfigError, match="anchored"):
        check_part_blocks({"occluders": ["part_nose_group", "surgical_mask"], "headline": {"placement": "anchored"},
                           "breakdown": ["placement:free"]}, "x")
    check_part_blocks({"occluders": ["surgical_mask"], "headline": {"placement": "free"}, "breakdown": []}, "x")


def test_lfw_occ_parts_protocol():
    prot = load_protocol("lfw-occ-parts")
    names = [v.name for v in prot.variants()]
    groups = ["eye_group", "nose_group", "mouth_group", "cheek_group", "forehead"]
    assert len(names) == 1 + 2 * (1 + len(groups)) and prot.main_score == {"variant": "N-O", "metric": "accuracy"}
    from occbench.synth.occluders import create_occluder

    assert [create_occluder(o).cfg["group"] for o in prot.occlusion["occluders"]] == groups
    assert prot.occlusion["scales"] == [1.0] and prot.occlusion["headline"]["placement"] == "anchored"
    validate_protocol(prot.raw)


@pytest.fixture(scope="module")
def parts_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("parts")
    data = base / "data"
    pairs = make_pairs_set(data)
    p = base / "gen-parts.yaml"
    p.write_text(PARTS_YAML.format(name="gen-parts", placement="anchored"))
    prot = load_protocol(p).with_overrides(pairs=pairs)
    res = evaluate(prot, TinyRecognizer(), data_root=data, out_dir=base / "r", cache_dir=base / "c",
                   save_scores=True, progress=False)
    return res, base


def test_part_group_blocks_and_split_on_generated_faces(parts_run):
    """Template crops use the mean mesh: every pair's occluded image has its group covered, nothing else."""
    res, base = parts_run
    v = res["variants"]
    clean = v["clean"]["metrics"]["accuracy"]
    for mode in ("N-O", "O-O"):
        for occ, group, other in (("part_eye_group", "eye_group", "mouth_group"),
                                  ("part_mouth_group", "mouth_group", "eye_group")):
            var = v[f"{mode}/{occ}@s1.0"]
            pg = var["part_group"]
            assert (pg["group"], pg["occluder"], pg["clean"]) == (group, occ, clean)
            assert pg["pp_lost"] == pytest.approx(100 * (clean - var["metrics"]["accuracy"]))
            assert pg["mean_coverage"][group] > 0.95 and pg["mean_coverage"][other] < 0.05
            split = var["parts"]["parts"]
            n = var["n_pairs"]
            assert split[group]["n_covered"] == n and split[other]["n_uncovered"] == n
            assert split[group]["accuracy_covered"] == pytest.approx(var["metrics"]["accuracy"])
            assert split[group]["na"] == "n/a (0 uncovered pairs)" and split[group]["pp_lost"] is None
            assert split[group]["pp_lost_vs_clean"] == pytest.approx(pg["pp_lost"])
    # the headline draws one group per image: both groups are covered on some pairs, and every pair is
    # counted once per part (covered + uncovered + unmeasured = all pairs)
    head = v["N-O"]["parts"]["parts"]
    for g in ("eye_group", "mouth_group"):
        assert head[g]["n_covered"] > 0 and head[g]["n_uncovered"] > 0
        assert head[g]["n_covered"] + head[g]["n_uncovered"] + head[g]["n_unmeasured"] == v["N-O"]["n_pairs"]
    assert "part_group" not in v["N-O"]  # the headline mixes groups
    assert "gen-parts.parts.png" in res["files"]["plots"]
    png = (base / "r" / "gen-parts.parts.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_leaderboard_has_the_part_columns(parts_run):
    from occbench.bench.leaderboard import build_leaderboard, write_leaderboard

    _, base = parts_run
    lb = build_leaderboard(base / "r")
    csv, md = write_leaderboard(lb, base / "lb.csv")
    df = pd.read_csv(csv)
    row = df[df["variant"] == "N-O/part_mouth_group@s1.0"].iloc[0]
    assert row["part_group"] == "mouth_group" and np.isfinite(row["part_group_pp_lost"])
    assert row["covered_mouth_group_pct"] == pytest.approx(row["accuracy_pct"])
    assert "which face part matters" in md.read_text()
    empty = leaderboard_values(SimpleNamespace(blocks={}))
    assert all(x is None for x in empty.values())


def test_identification_split_rank1(tmp_path, monkeypatch):
    """1:N: rank-1 of the mated probes by part covered; the split adds up to the variant's rank-1."""
    data = tmp_path / "data"
    ids = make_faces(data, n_ids=8, per_id=4)
    names = sorted(ids)
    (data / "gallery.csv").write_text("path,identity\n" + "".join(f"{ids[n][0]},{n}\n" for n in names[:6]))
    probes = [(k, n) for n in names[:6] for k in ids[n][1:]] + [(k, n) for n in names[6:] for k in ids[n]]
    (data / "probe.csv").write_text("path,identity\n" + "".join(f"{k},{n}\n" for k, n in probes))
    p = tmp_path / "gp.yaml"
    p.write_text("include: gallery-probe.yaml\nname: gp-parts\nlandmarks: {method: template}\n"
                 "occlusion: {occluders: [part_eye_group, part_mouth_group], scales: [1.0], modes: [N-O],\n"
                 "            headline: {scale: 1.0, placement: anchored}, breakdown: [occluder]}\n"
                 "main_score: {variant: N-O, metric: rank1}\n")
    prot = load_protocol(p).with_overrides(gallery=data / "gallery.csv", probe=data / "probe.csv")

    def run():
        return evaluate(prot, TinyRecognizer(), data_root=data, out_dir=tmp_path / "r", cache_dir=tmp_path / "c",
                        progress=False, plots=False)["variants"]

    monkeypatch.setattr("occbench.bench.parts.MIN_ITEMS", 1)  # 18 mated probes: let every side count here
    v = run()
    for name in ("N-O", "N-O/part_eye_group@s1.0", "N-O/part_mouth_group@s1.0"):
        block = v[name]["parts"]
        assert block["metric"] == "rank1"
        for part in ("eye_group", "mouth_group", "nose"):
            g = block["parts"][part]
            assert g["n_covered"] + g["n_uncovered"] + g["n_unmeasured"] == v[name]["n_mated"] == 18
            assert g["n_unmeasured"] == 0
            total = sum(n * (a or 0.0) for n, a in ((g["n_covered"], g["accuracy_covered"]),
                                                    (g["n_uncovered"], g["accuracy_uncovered"])))
            assert total / 18 == pytest.approx(v[name]["metrics"]["rank1"])
    head = v["N-O"]["parts"]["parts"]
    assert head["eye_group"]["n_covered"] + head["mouth_group"]["n_covered"] == 18  # one group per probe
    pg = v["N-O/part_mouth_group@s1.0"]["part_group"]
    assert pg["metric"] == "rank1" and pg["pp_lost"] == pytest.approx(
        100 * (v["clean"]["metrics"]["rank1"] - v["N-O/part_mouth_group@s1.0"]["metrics"]["rank1"]))
    # with the default minimum, 18 mated probes are too few: n/a with the reason, never a number
    monkeypatch.undo()
    eye = run()["N-O/part_eye_group@s1.0"]["parts"]["parts"]["eye_group"]
    assert eye["n_covered"] == 18 < MIN_ITEMS and eye["accuracy_covered"] is None
    assert eye["na"] == f"n/a (18 covered mated probes, fewer than {MIN_ITEMS}; 0 uncovered mated probes)"
