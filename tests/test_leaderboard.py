"""Leaderboard: built only from result JSON files; CSV rows model x protocol x variant + markdown."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from occbench.bench.evaluate import evaluate
from occbench.bench.leaderboard import COLUMNS, build_leaderboard, write_leaderboard
from occbench.bench.protocols import load_protocol
from occbench.errors import DataNotFoundError
from test_evaluate import TinyRecognizer, make_faces, make_pairs_set


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("lb")
    data = base / "data"
    pairs = make_pairs_set(data)
    ver = load_protocol("pairs").with_overrides(pairs=pairs)
    ids = make_faces(base / "gp", n_ids=5, per_id=3, seed=3)
    (base / "gp" / "g.csv").write_text("path,identity\n" + "".join(f"{v[0]},{k}\n" for k, v in sorted(ids.items())[:4]))
    (base / "gp" / "p.csv").write_text("path,identity\n" + "".join(f"{x},{k}\n" for k, v in sorted(ids.items())
                                                                   for x in v[1:]))
    ident = load_protocol("gallery-probe").with_overrides(gallery=base / "gp" / "g.csv", probe=base / "gp" / "p.csv")
    res = base / "results"
    for seed in (0, 1):
        name = f"tiny{seed}"
        evaluate(ver, TinyRecognizer(seed=seed), data_root=data, out_dir=res / name, cache_dir=base / "cache",
                 progress=False, plots=False, model_info={"name": name})
        evaluate(ident, TinyRecognizer(seed=seed), data_root=base / "gp", out_dir=res / name,
                 cache_dir=base / "cache", progress=False, plots=False, model_info={"name": name})
    (res / "notes.json").write_text(json.dumps({"hello": 1}))  # not a results file: reported, skipped
    return res


def test_rows_come_from_the_json_files(results_dir, tmp_path):
    lb = build_leaderboard(results_dir)
    assert len(lb.files) == 4 and [f for f, _ in lb.skipped] == ["notes.json"]
    assert len(lb.rows) == 4  # 2 models x 2 protocols x 1 variant (clean)
    csv, md = write_leaderboard(lb, tmp_path / "leaderboard.csv")
    df = pd.read_csv(csv)
    assert list(df.columns) == list(COLUMNS)
    for _, row in df.iterrows():
        d = json.loads((results_dir / row["file"]).read_text())
        m = d["variants"][row["variant"]]["metrics"]
        assert row["model"] == d["model"]["name"] and row["protocol_hash"] == d["protocol"]["hash"]
        assert row["model_fingerprint"] == d["model"]["fingerprint"]
        assert row["occbench_version"] == d["occbench_version"]
        key = "accuracy" if row["protocol"] == "pairs" else "rank1"
        # rates in percent, the unit in the column name
        assert row[f"{key}_pct"] == pytest.approx(100 * m[key]) and row["main_value_pct"] == pytest.approx(100 * m[key])
        assert bool(row["is_main"])
        assert row["fte_rate_pct"] == pytest.approx(100 * m["fte_rate"]) and row["schema_version"] == 2
    # within a protocol/variant, the better model comes first
    for _, g in df.groupby(["protocol", "variant"], sort=False):
        assert list(g["main_value_pct"]) == sorted(g["main_value_pct"], reverse=True)
    text = md.read_text()
    assert md.name == "leaderboard.md" and "## Main scores" in text and "## pairs" in text and "## gallery-probe" in text
    assert "| tiny0 | clean **(main)** |" in text and "notes.json" in text and "FTE %" in text


def test_occluded_variants_in_report_order(tmp_path):
    from test_evaluate import occ_protocol_file

    data = tmp_path / "data"
    pairs = make_pairs_set(data, n_ids=4, per_id=3)
    prot = load_protocol(occ_protocol_file(tmp_path)).with_overrides(pairs=pairs)
    evaluate(prot, TinyRecognizer(), data_root=data, out_dir=tmp_path / "res" / "m", cache_dir=tmp_path / "c",
             progress=False, plots=False, variants=["N-O", "O-O"])
    lb = build_leaderboard(tmp_path / "res")
    assert [r["variant"] for r in lb.rows] == ["clean", "N-O", "O-O"]
    assert [r["is_main"] for r in lb.rows] == [False, True, False]


def test_no_results_is_an_error(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataNotFoundError, match="no occbench results files"):
        build_leaderboard(tmp_path)
