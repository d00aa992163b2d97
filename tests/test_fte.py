"""Failure to enrol (issue 9 §1, NIST FRVT / IJB rule): failed images count against the model in every
metric; the enrolled-only figures are reported beside, labelled. Expected values computed by hand."""
from __future__ import annotations

import pandas as pd
import pytest

from occbench.bench.evaluate import EvalConfig, run_eval
from occbench.bench.protocols import load_protocol
from occbench.bench.results import EvalResult
from occbench.metrics import best_accuracy_threshold, kfold_accuracy
from test_evaluate import TinyRecognizer, make_faces

CORRUPT = b"\x89PNG\r\n\x1a\n broken"


def _verification_set(root):
    make_faces(root, n_ids=4, per_id=3, seed=7)
    (root / "id00" / "2.png").write_bytes(CORRUPT)  # fails to enrol (no landmarks: undecodable)
    (root / "id03" / "2.png").write_bytes(CORRUPT)
    rows = [  # path1, path2, same, fold
        ("id00/0.png", "id00/2.png", 1, 1),  # genuine with a failed image -> false reject
        ("id01/0.png", "id01/1.png", 1, 1),
        ("id00/0.png", "id01/0.png", 0, 1),
        ("id02/0.png", "id03/0.png", 0, 1),
        ("id03/2.png", "id02/1.png", 0, 2),  # impostor with a failed image -> true reject
        ("id02/0.png", "id02/1.png", 1, 2),
        ("id03/0.png", "id03/1.png", 1, 2),
        ("id01/1.png", "id02/2.png", 0, 2),
    ]
    pf = root / "pairs.csv"
    pf.write_text("path1,path2,same,fold\n" + "".join(f"{a},{b},{s},{f}\n" for a, b, s, f in rows))
    return pf


def test_verification_counts_failures_as_errors(tmp_path):
    data = tmp_path / "data"
    pf = _verification_set(data)
    res = run_eval(EvalConfig(model=TinyRecognizer(), protocol="pairs", pairs=pf, data_root=data,
                              out=tmp_path / "r", cache_dir=tmp_path / "c", save_scores=True, plots=False),
                   progress=False)
    v = res.variant("clean")
    enrolled = v.blocks["enrolled_only"]
    # precondition: the tiny model separates the 6 enrolled pairs perfectly
    assert enrolled["metrics"]["accuracy"] == 1.0 and enrolled["metrics"]["auc"] == 1.0
    assert enrolled["n_pairs"] == 6
    # by hand: fold 1 = 3/4 (the failed genuine pair is rejected), fold 2 = 4/4 (failed impostor rejected)
    assert v.metrics["accuracy"] == pytest.approx((3 / 4 + 4 / 4) / 2)
    assert v.metrics["accuracy_std"] == pytest.approx(0.125)
    assert v.thresholds["fold_accuracies"] == {"1": 0.75, "2": 1.0}
    # AUC over all 16 genuine x impostor pairings: 3 real genuines beat all 4 impostors (12), the two
    # failed pairs tie at the lowest score (0.5), the failed genuine loses to the 3 real impostors
    assert v.metrics["auc"] == pytest.approx(12.5 / 16)
    assert v.metrics["fte_rate"] == 0.25
    c = v.counts
    assert (c["n_pairs"], c["n_fte"], c["n_genuine_fte"], c["n_impostor_fte"]) == (8, 2, 1, 1)
    assert res.schema_version == 2 and res.failure_policy["rule"] == "nist-frvt"
    df = pd.read_parquet(res.path.parent / "pairs.scores" / "clean.parquet")
    low = df.loc[df["status"] == "fte", "score_used"]
    assert len(low) == 2 and (low == -2.0).all() and df.loc[df["status"] == "fte", "score"].isna().all()
    # the metrics agree with scikit-learn on the scores every metric used
    from sklearn.metrics import roc_auc_score

    assert v.metrics["auc"] == pytest.approx(roc_auc_score(df["same"], df["score_used"]))


def test_kfold_never_accepts_a_failure_to_enrol():
    """Without the floor, accepting everything (-inf) wins on a genuine-heavy fold and would accept the
    failed genuine pairs; with it, scores at the floor are always rejected."""
    scores = [-2.0, -2.0, 0.1, 0.2, 0.9, -2.0, 0.3, 0.8]
    labels = [1, 1, 1, 0, 1, 1, 1, 1]
    assert best_accuracy_threshold(scores[:5], labels[:5])[0] == float("-inf")
    t, acc = best_accuracy_threshold(scores[:5], labels[:5], floor=-2.0)
    assert t == pytest.approx(-0.95) and acc == pytest.approx(2 / 5)  # accepts 0.1, 0.2, 0.9; rejects both failures
    r = kfold_accuracy(scores, labels, folds=[1, 1, 1, 1, 1, 2, 2, 2], floor=-2.0)
    assert all(th > -2.0 for th in r.thresholds)
    assert r.fold_accuracies[1] == pytest.approx(2 / 3)  # the failed genuine in fold 2 is a false reject


def test_identification_counts_failed_probes_and_lost_gallery_as_misses(tmp_path):
    data = tmp_path / "data"
    ids = make_faces(data, n_ids=5, per_id=3, seed=3)
    (data / "id01" / "0.png").write_bytes(CORRUPT)  # gallery image of id01 fails: id01 is not searchable
    (data / "id02" / "1.png").write_bytes(CORRUPT)  # a mated probe fails
    (data / "id04" / "2.png").write_bytes(CORRUPT)  # a non-mated probe fails
    gallery = [(ids[n][0], n) for n in ("id00", "id01", "id02", "id03")]
    probes = [(k, n) for n in ("id00", "id01", "id02", "id03") for k in ids[n][1:]] + [(k, "id04") for k in ids["id04"]]
    (data / "g.csv").write_text("path,identity\n" + "".join(f"{k},{n}\n" for k, n in gallery))
    (data / "p.csv").write_text("path,identity\n" + "".join(f"{k},{n}\n" for k, n in probes))
    res = run_eval(EvalConfig(model=TinyRecognizer(), protocol="gallery-probe", gallery=data / "g.csv",
                              probe=data / "p.csv", data_root=data, out=None, cache_dir=tmp_path / "c",
                              plots=False, device="cpu"), progress=False)
    v = res.variant("clean")
    enrolled = v.blocks["enrolled_only"]
    assert enrolled["metrics"]["rank1"] == 1.0 and enrolled["n_mated"] == 5  # precondition, as before the rule
    # by hand: 8 mated probes; id01's two (gallery lost) and id02/1.png (failed) miss -> 5 / 8
    assert v.metrics["rank1"] == pytest.approx(5 / 8)
    assert v.cmc[-1] == pytest.approx(5 / 8)  # misses at every rank
    c = v.counts
    assert (c["n_probes"], c["n_mated"], c["n_nonmated"], c["n_fte"]) == (11, 8, 3, 2)
    assert (c["n_mated_fte"], c["n_nonmated_fte"], c["n_mated_gallery_lost"]) == (1, 1, 2)
    assert (c["n_gallery"], c["n_gallery_fte"], c["n_gallery_identities"]) == (3, 1, 3)
    assert v.metrics["fte_rate"] == pytest.approx(2 / 11)


def test_results_round_trip_and_old_schema_loads(tmp_path):
    data = tmp_path / "data"
    pf = _verification_set(data)
    res = run_eval(EvalConfig(model=TinyRecognizer(), protocol=load_protocol("pairs"), pairs=pf, data_root=data,
                              out=tmp_path / "r", cache_dir=tmp_path / "c", plots=False), progress=False)
    text = res.path.read_text()
    back = EvalResult.from_json(text)
    assert back.to_json() == EvalResult.from_json(back.to_json()).to_json()
    assert back.to_dict() == res.to_dict()
    assert list(back.variants) == list(res.variants) and back.variant("clean").blocks["enrolled_only"]
    # a schema-1 file (no enrolled_only, fte_rate, failure_policy as text) still loads
    import json

    old = json.loads(text)
    old["schema_version"] = 1
    old["failure_policy"] = "failures to enrol are excluded from the metrics and counted per variant (n_fte)"
    for e in old["variants"].values():
        e.pop("enrolled_only")
        e["metrics"].pop("fte_rate")
    v1 = EvalResult.from_dict(old)
    assert v1.schema_version == 1 and "enrolled_only" not in v1.variant("clean").blocks


ALL_YAML = """
name: gen-all
kind: all-to-all
description: generated identity folders, every probe against every gallery image
data: {format: identity-folders, images: faces}
landmarks: {method: template}
metrics: {far: [0.1, 0.01, 0.0001]}
occlusion: {occluders: [block_solid], scales: [2.0], modes: [N-O]}
main_score: {variant: N-O, metric: tar_at_far_1e-1}
"""


def test_all_to_all_kind_counts_impostors_and_refuses_unsupported_far(tmp_path):
    from click.testing import CliRunner

    from occbench.cli import cli

    make_faces(tmp_path / "faces", n_ids=6, per_id=4, seed=5)
    (tmp_path / "faces" / "id05" / "3.png").write_bytes(CORRUPT)
    (tmp_path / "gen-all.yaml").write_text(ALL_YAML)
    r = CliRunner().invoke(cli, ["eval", "-m", "test_evaluate:tiny_recognizer", "-p", str(tmp_path / "gen-all.yaml"),
                                 "--data-root", str(tmp_path), "--out", str(tmp_path / "r"), "--cache-dir",
                                 str(tmp_path / "c"), "--no-progress", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "TAR@FAR=1e-4 = n/a (needs ≥ 10,000 impostors) in: clean, N-O" in r.output
    res = EvalResult.load(tmp_path / "r" / "test_evaluate-tiny_recognizer" / "gen-all.json")
    for v in res.variants.values():
        # 24 images, all probes and all gallery: 24 x 24 pairs, 6 x 4 x 4 same-identity, 24 self pairs
        assert (v.counts["n_genuine"], v.counts["n_impostor"], v.counts["n_excluded_self"]) == (72, 480, 24)
        assert v.metrics["tar_at_far_1e-4"] is None
        assert v.operating_points["tar_at_far_1e-4"]["needs_impostors"] == 10000
        assert v.operating_points["tar_at_far_1e-2"]["reachable"] and v.metrics["tar_at_far_1e-2"] is not None
        assert v.counts["n_fte"] == 1 and v.counts["n_gallery_fte"] == 1
        # the failed image's 3 + 3 genuine pairs are false rejects: TAR <= 66 / 72
        assert v.metrics["tar_at_far_1e-1"] <= 66 / 72
        e = v.blocks["enrolled_only"]
        # enrolled only: 23 images, 5 x 4 x 4 + 3 x 3 = 89 same-identity pairs, 23 of them self pairs
        assert (e["n_genuine"], e["n_impostor"]) == (89 - 23, 23 * 23 - 89)
    assert res.variant("clean").blocks["landmark_methods"]["counts"] == {"template": 23, "none": 1}
