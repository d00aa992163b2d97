"""`occbench eval --search / --distractors / --distractor-sweep` on generated 1:N sets (tiny model)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from occbench.cli import cli
from occbench.metrics.identification import TopK, check_finite_rows, topk_search
from occbench.search import merge_topk, search_parts

MODEL = "test_evaluate:tiny_recognizer"


# ----------------------------------------------------------------------------------- library pieces


def test_merge_topk_equals_search_of_the_concatenation_with_ties():
    rng = np.random.default_rng(0)
    levels = np.array([-1.0, 0.0, 1.0], np.float32)
    p = levels[rng.integers(0, 3, (40, 4))]
    a, b = levels[rng.integers(0, 3, (7, 4))], levels[rng.integers(0, 3, (30, 4))]
    for k in (1, 3, 10, 40):
        whole = topk_search(p, np.concatenate([a, b]), k, device="cpu")
        got = merge_topk([topk_search(p, a, k, device="cpu"), topk_search(p, b, k, device="cpu")], [0, 7], k)
        np.testing.assert_array_equal(got.indices, whole.indices)
        np.testing.assert_array_equal(got.scores, whole.scores)
    one = merge_topk([TopK(np.array([[0.5]], np.float32), np.array([[0]]))], [0], 3)  # padded like topk_search
    assert one.indices.tolist() == [[0, -1, -1]] and np.isneginf(one.scores[0, 1:]).all()


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_search_parts_equals_one_search(backend):
    pytest.importorskip("faiss") if backend == "faiss" else None
    rng = np.random.default_rng(1)
    g = rng.standard_normal((300, 16)).astype(np.float32)
    p = rng.standard_normal((25, 16)).astype(np.float32)
    whole = topk_search(p, g, 5, device="cpu")
    r = search_parts(p, [g[:40], g[40:40], g[40:]], 5, backend, device="cpu")
    assert r.exact and r.recall_at_k is None
    np.testing.assert_array_equal(r.topk.indices, whole.indices)


def test_one_finiteness_check_for_numpy_and_torch():
    import torch

    from occbench.errors import ConfigError
    from occbench.search import faiss_backend

    x = np.ones((5, 3), np.float32)
    check_finite_rows(x, "gallery")
    check_finite_rows(torch.from_numpy(x), "gallery")
    x[3, 1] = np.nan
    for arr in (x, torch.from_numpy(x)):
        with pytest.raises(ConfigError, match="gallery row 13 has a NaN"):
            check_finite_rows(arr, "gallery", offset=10)
    with pytest.raises(ConfigError, match="probes row 3 has a NaN"):  # the FAISS backend uses the same check
        faiss_backend._as_f32(x, "probes")


def test_config_backends_match_the_search_module():
    from occbench.bench.config import SEARCH_BACKENDS, OptionError, parse_sweep
    from occbench.search import BACKENDS

    assert SEARCH_BACKENDS == BACKENDS
    assert parse_sweep("1000, 10,100,10") == (10, 100, 1000)
    for bad in ("10,x", "-1", ","):
        with pytest.raises(OptionError):
            parse_sweep(bad)


# ----------------------------------------------------------------------------------- generated 1:N set


@pytest.fixture(scope="module")
def idset(tmp_path_factory):
    """9 identities x 3 images: 5 enrolled (gallery = first image), 10 mated + 12 non-mated probes, one
    probe undecodable (a failure to enrol); 34 distractors (+1 undecodable, +1 missing) alternating
    unrelated faces and copies of the probes (which outrank the mates), so rank-1 falls
    as distractors are added."""
    from test_evaluate import make_faces

    base = tmp_path_factory.mktemp("search")
    ids = make_faces(base, n_ids=9, per_id=3, seed=5)
    names = sorted(ids)
    (base / "g.csv").write_text("path,identity\n" + "".join(f"{ids[n][0]},{n}\n" for n in names[:5]))
    probes = [(k, n) for n in names[:5] for k in ids[n][1:]] + [(k, n) for n in names[5:] for k in ids[n]]
    (base / "bad").mkdir()
    (base / "bad" / "probe.png").write_bytes(b"not an image")
    probes.append(("bad/probe.png", names[0]))
    (base / "p.csv").write_text("path,identity\n" + "".join(f"{k},{n}\n" for k, n in probes))
    dis = make_faces(base / "distr", n_ids=4, per_id=3, seed=11)
    alike = []
    for k, _ in probes[:-1]:  # copies of the probes (not of gallery images: exact ties with a mate would be
        dst = base / "distr" / "look" / k  # decided by the last bit of BLAS rounding, which depends on block shapes)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((base / k).read_bytes())
        alike.append(f"distr/look/{k}")
    unrelated = [f"distr/{k}" for n in sorted(dis) for k in dis[n]]
    dkeys = [k for pair in zip(unrelated, alike) for k in pair] + alike[len(unrelated):]
    (base / "distr" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    listed = dkeys[:5] + ["distr/broken.jpg", "distr/missing.png"] + dkeys[5:]
    (base / "d.csv").write_text("path,identity\n" + "".join(f"{k},someone\n" for k in listed))
    return {"base": base, "listed": listed, "n_ok": len(dkeys)}


def _eval(base, *args, out="r", cache="cache"):
    return CliRunner().invoke(cli, ["eval", "-m", MODEL, "-p", "gallery-probe", "--gallery", str(base / "g.csv"),
                                    "--probe", str(base / "p.csv"), "--data-root", str(base),
                                    "--cache-dir", str(base / cache), "--out", str(base / out),
                                    "--no-progress", "--device", "cpu", *args])


def _json(base, out="r", stem="gallery-probe") -> dict:
    return json.loads((base / out / "test_evaluate-tiny_recognizer" / f"{stem}.json").read_text())


SIZES = (0, 3, 10, 22, 34)


@pytest.fixture(scope="module")
def sweep_run(idset):
    base = idset["base"]
    r = _eval(base, "--distractors", str(base / "d.csv"), "--distractor-sweep", ",".join(map(str, SIZES)),
              out="sweep")
    return r, _json(base, "sweep", "gallery-probe+distractors-d")


def test_sweep_run_writes_block_csv_and_plot(idset, sweep_run):
    r, d = sweep_run
    assert r.exit_code == 0, r.output
    base = idset["base"]
    dist = d["protocol"]["distractors"]
    assert (dist["n_listed"], dist["n_enrolled"], dist["n_failed"]) == (36, 34, 2)
    assert {f["key"] for f in dist["failed"]} == {"distr/broken.jpg", "distr/missing.png"}
    assert all(f["reason"] for f in dist["failed"])
    v = d["variants"]["clean"]
    assert v["n_distractors"] == 34 and v["n_gallery"] == 5 and v["n_fte"] == 1
    sw = v["distractor_sweep"]
    assert [p["n_distractors"] for p in sw["points"]] == list(SIZES)
    assert [p["gallery_size"] for p in sw["points"]] == [5 + n for n in SIZES]
    out = base / "sweep" / "test_evaluate-tiny_recognizer"
    csv = pd.read_csv(out / "gallery-probe+distractors-d.distractor_sweep.csv")
    assert list(csv.columns[:4]) == ["variant", "n_distractors", "gallery_size_images", "rank1_pct"]
    assert "tpir_at_fpir_1e-1_pct" in csv.columns and "threshold_at_fpir_1e-1_score" in csv.columns
    assert csv["rank1_pct"].tolist() == pytest.approx([100 * p["rank1"] for p in sw["points"]])
    assert (out / "gallery-probe+distractors-d.distractor_sweep.png").stat().st_size > 5_000
    assert "gallery-probe+distractors-d.distractor_sweep.csv" in d["files"]["tables"]
    assert "distractors: 34 added to the gallery (36 listed; 2 failed to enrol" in r.output
    assert csv["tpir_at_fpir_1e-2_pct"].isna().all() and csv["tpir_at_fpir_1e-1_pct"].notna().all()
    assert "distractor sweep [clean] (distractors: rank-1 % / TPIR@FPIR=0.1 %)" in r.output


def test_sweep_equals_a_full_search_with_the_first_n_distractors(idset, sweep_run):
    """Each sweep point = an eval whose gallery holds exactly the first N enrolled distractors."""
    base = idset["base"]
    _, d = sweep_run
    sw = d["variants"]["clean"]["distractor_sweep"]
    enrolled = [k for k in idset["listed"] if k not in ("distr/broken.jpg", "distr/missing.png")]
    for p in sw["points"]:
        n = p["n_distractors"]
        if n == 0:
            r = _eval(base, out="plain")
            full = _json(base, "plain")["variants"]["clean"]
        else:
            lst = base / f"d{n}.csv"
            lst.write_text("".join(f"{k}\n" for k in enrolled[:n]))  # no header: allowed
            r = _eval(base, "--distractors", str(lst), out=f"n{n}")
            full = _json(base, f"n{n}", f"gallery-probe+distractors-d{n}")["variants"]["clean"]
            assert full["n_distractors"] == n
        assert r.exit_code == 0, r.output
        assert p["rank1"] == full["metrics"]["rank1"], n
        for t, tpir, fpir in zip(sw["fpir_targets"], p["tpir"], p["fpir"]):
            op = next(o for key, o in full["operating_points"].items() if abs(float(key.rsplit("_", 1)[1]) - t) < 1e-12)
            assert (tpir, fpir) == (op["tpir"], op["fpir"]), (n, t)
        assert p["reachable"] == [False, True]  # 12 non-mated probes: FPIR 1e-2 cannot be measured, 1e-1 can
    # the last size holds every enrolled distractor: the sweep run's own metrics; look-alikes cost rank-1
    last = d["variants"]["clean"]
    assert sw["points"][-1]["rank1"] == last["metrics"]["rank1"]
    r1 = [p["rank1"] for p in sw["points"]]
    assert r1 == sorted(r1, reverse=True) and r1[0] > r1[2] > r1[-1]
    assert last["metrics"]["tpir_at_fpir_1e-1"] == sw["points"][-1]["tpir"][1]  # 12 non-mated: reachable


def test_distractor_options_on_a_1to1_protocol_are_a_usage_error(idset, tmp_path):
    from test_evaluate import make_pairs_set

    pf = make_pairs_set(tmp_path, n_ids=3, per_id=2)
    r = CliRunner().invoke(cli, ["eval", "-m", MODEL, "-p", "pairs", "--pairs", str(pf), "--no-progress",
                                 "--distractors", str(idset["base"] / "d.csv"), "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "--distractors applies to 1:N identification protocols" in r.output
    r = CliRunner().invoke(cli, ["eval", "-m", MODEL, "-p", "pairs", "--pairs", str(pf), "--no-progress",
                                 "--search", "faiss", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "pairs is verification" in r.output


def test_sweep_larger_than_the_list_is_refused_saying_how_many(idset):
    base = idset["base"]
    r = _eval(base, "--distractors", str(base / "d.csv"), "--distractor-sweep", "10,100", out="big")
    assert r.exit_code == 2 and "lists 36 distractors" in r.output and "100" in r.output
    r = _eval(base, "--distractor-sweep", "10", out="big")
    assert r.exit_code == 2 and "needs --distractors" in r.output
    r = _eval(base, "--distractors", str(base / "d.csv"), "--distractor-sweep", "35", out="big")  # 36 listed, 34 ok
    assert r.exit_code == 2 and "34 of the 36 listed distractors enrolled" in r.output


def test_distractor_paths_may_not_escape_the_root(idset, tmp_path):
    base = idset["base"]
    bad = tmp_path / "esc.csv"
    bad.write_text("path\n../outside.png\n")
    r = _eval(base, "--distractors", str(bad), out="esc")
    assert r.exit_code == 1 and "without '..'" in r.output


def test_distractor_embeddings_are_cached_across_runs(idset, tmp_path):
    from occbench.bench.config import EvalConfig
    from occbench.bench.evaluate import run_eval
    from occbench.bench.protocols import load_protocol
    from test_evaluate import TinyRecognizer

    base = idset["base"]
    cache = tmp_path / "cache"
    prot = load_protocol("gallery-probe").with_overrides(gallery=base / "g.csv", probe=base / "p.csv")

    def run(probe=None, **kw):
        rec = TinyRecognizer()
        p = prot if probe is None else load_protocol("gallery-probe").with_overrides(gallery=base / "g.csv",
                                                                                   probe=probe)
        res = run_eval(EvalConfig(model=rec, protocol=p, data_root=base, out=None, cache_dir=cache, device="cpu",
                                  distractors=base / "d.csv", **kw), progress=False)
        return rec.calls, res

    calls1, r1 = run()
    assert calls1 > 0 and r1.cache["distractors_hit"] is False
    calls2, r2 = run(distractor_sweep="5,34")
    assert calls2 == 0 and r2.cache["distractors_hit"] is True  # nothing extracted again
    assert r2.variants["clean"].metrics == r1.variants["clean"].metrics
    # another probe list (another protocol run, probes re-embedded): the distractors still come from the cache
    other = tmp_path / "p2.csv"
    other.write_text("\n".join((base / "p.csv").read_text().splitlines()[:8]) + "\n")
    calls3, r3 = run(probe=other)
    assert r3.cache["distractors_hit"] is True and calls3 > 0
    # a distractor file that changed (mtime) is noticed: the distractor set is embedded again
    f = base / idset["listed"][0]
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        _, r4 = run()
        assert r4.cache["distractors_hit"] is False
    finally:
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_faiss_exact_gives_the_torch_numbers(idset, sweep_run):
    pytest.importorskip("faiss")
    base = idset["base"]
    r = _eval(base, "--distractors", str(base / "d.csv"), "--search", "faiss", out="faiss")
    assert r.exit_code == 0, r.output
    d = _json(base, "faiss", "gallery-probe+distractors-d")
    v = d["variants"]["clean"]
    assert v["search"]["backend"] == "faiss" and v["search"]["exact"] is True and "~" not in r.output
    ref = sweep_run[1]["variants"]["clean"]
    assert v["metrics"] == ref["metrics"] and v["cmc"] == ref["cmc"]


def test_approximate_search_reports_recall_and_is_marked(idset):
    pytest.importorskip("faiss")
    base = idset["base"]
    r = _eval(base, "--distractors", str(base / "d.csv"), "--search", "faiss-hnsw", out="hnsw")
    assert r.exit_code == 0, r.output
    s = _json(base, "hnsw", "gallery-probe+distractors-d")["variants"]["clean"]["search"]
    assert s["exact"] is False and s["backend"] == "faiss-hnsw"
    assert 0.0 <= s["recall_at_k"] <= 1.0 and s["recall_sample_probes"] == 22  # every enrolled probe (< 1,000)
    assert "APPROXIMATE" in s["what"]
    assert "~ APPROXIMATE search (faiss-hnsw): recall@" in r.output and " ~" in r.output


def test_leaderboard_says_which_search_and_how_many_distractors(idset, sweep_run):
    pytest.importorskip("faiss")
    from occbench.bench.leaderboard import build_leaderboard

    base = idset["base"]
    if not (base / "hnsw").is_dir():  # run alone (-k): make the approximate run here
        assert _eval(base, "--distractors", str(base / "d.csv"), "--search", "faiss-hnsw", out="hnsw").exit_code == 0
    approx = build_leaderboard(base / "hnsw").rows[0]
    assert approx["search"] == "faiss-hnsw" and 0 <= approx["search_recall_at_k"] <= 1
    assert approx["n_distractors"] == 34
    exact = build_leaderboard(base / "sweep").rows[0]
    assert exact["search"] == "torch" and exact["search_recall_at_k"] is None


def test_distractor_run_does_not_overwrite_the_plain_run(idset):
    """Same OUT: the plain run and a --distractors run keep separate results files."""
    base = idset["base"]
    assert _eval(base, out="both").exit_code == 0
    plain = _json(base, "both")
    r = _eval(base, "--distractors", str(base / "d.csv"), out="both")
    assert r.exit_code == 0, r.output
    with_d = _json(base, "both", "gallery-probe+distractors-d")
    assert _json(base, "both") == plain  # untouched
    assert "distractors" not in plain["protocol"] and with_d["protocol"]["distractors"]["n_enrolled"] == idset["n_ok"]
