"""The benchmark engine on tiny generated 112x112 data (fast) and on real LFW (slow).

The tiny recognizer is a fixed random projection of 16x16 grey block means: no learning, but it
separates the generated identities, so metrics are meaningful and every number can be recomputed.
Other test modules import ``TinyRecognizer``, ``tiny_recognizer`` and ``make_pairs_set`` from here.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from occbench.bench.data import limit_task, load_task
from occbench.bench.evaluate import evaluate
from occbench.bench.protocols import load_protocol
from occbench.bench.results import load_results, reproducible_view
from occbench.errors import DataNotFoundError, UnsafePathError
from occbench.io.images import encode
from occbench.recognizers.base import Preprocess, l2_normalize, template_alignment
from occbench.face.geometry import ARCFACE_112, FaceLandmarks

# --------------------------------------------------------------------------- test recognizer + data


class TinyRecognizer:
    """Embedding = L2-normalised random projection of the crop's 16x16 grey block means (zero-mean)."""

    def __init__(self, dim: int = 32, seed: int = 0):
        self.name = f"tiny{seed}"
        self.preprocess = Preprocess()
        self.w = np.random.default_rng(seed).standard_normal((256, dim)).astype(np.float32)
        self.calls = 0

    def alignment_transform(self, image, landmarks):
        return template_alignment(self.preprocess, landmarks)

    def embed(self, crops):
        self.calls += 1
        x = np.asarray(crops, np.float32).mean(-1)
        x = x.reshape(len(x), 16, 7, 16, 7).mean((2, 4)).reshape(len(x), 256)
        x -= x.mean(1, keepdims=True)
        return l2_normalize(x @ self.w)

    def fingerprint(self):
        return hashlib.sha256(self.w.tobytes() + repr(self.preprocess.to_dict()).encode()).hexdigest()[:16]


def tiny_recognizer(seed: int = 0):
    """Python factory for ``--model test_evaluate:tiny_recognizer``."""
    return TinyRecognizer(seed=seed)


def tiny_recognizer_b():
    return TinyRecognizer(seed=1)


def make_faces(root: Path, n_ids: int = 6, per_id: int = 4, seed: int = 0) -> dict[str, list[str]]:
    """Generated 112x112 'faces' (an identity = a smooth random pattern, + per-image noise), as PNG
    files root/idNN/J.png. Returns identity -> keys."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {}
    for i in range(n_ids):
        base = cv2.resize(rng.uniform(0, 255, (6, 6, 3)).astype(np.float32), (112, 112),
                          interpolation=cv2.INTER_CUBIC)
        ident = f"id{i:02d}"
        (root / ident).mkdir(parents=True, exist_ok=True)
        for j in range(per_id):
            img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
            (root / ident / f"{j}.png").write_bytes(encode(img, "png"))
            out.setdefault(ident, []).append(f"{ident}/{j}.png")
    return out


def make_pairs_set(root: Path, n_ids: int = 6, per_id: int = 4, seed: int = 0, n_folds: int = 4) -> Path:
    """Faces + pairs.csv (path1,path2,same,fold): every genuine pair and as many impostor pairs,
    interleaved, folds round-robin. Returns the CSV path."""
    ids = make_faces(root, n_ids, per_id, seed)
    names = sorted(ids)
    gen = [(a, b) for n in names for i, a in enumerate(ids[n]) for b in ids[n][i + 1:]]
    rng = np.random.default_rng(seed + 1)
    imp = []
    while len(imp) < len(gen):
        a, b = rng.choice(len(names), 2, replace=False)
        imp.append((ids[names[a]][rng.integers(per_id)], ids[names[b]][rng.integers(per_id)]))
    rows = [r for g, m in zip(gen, imp) for r in ((*g, 1), (*m, 0))]
    lines = ["path1,path2,same,fold"] + [f"{a},{b},{s},{i // 2 % n_folds + 1}" for i, (a, b, s) in enumerate(rows)]
    path = root / "pairs.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


OCC_YAML = """
include: pairs.yaml
name: {name}
description: generated faces with fast occluders
landmarks: {{method: template}}
occlusion:
  occluders: [block_solid, rgba_phone]
  scales: [1.0, 2.0]
  headline: {{scale: 2.0, placement: anchored}}
  modes: [N-O, O-O]
  breakdown: [scale, occluder, "placement:free"]
main_score: {{variant: N-O, metric: accuracy}}
"""


def occ_protocol_file(folder: Path, name: str = "gen-occ") -> Path:
    p = folder / f"{name}.yaml"
    p.write_text(OCC_YAML.format(name=name))
    return p


def kfold_reference(scores, labels, folds) -> float:
    """Leave-one-fold-out accuracy, brute force: every midpoint threshold, lowest best one."""
    accs = []
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        s = np.sort(np.unique(scores[tr]))
        cands = np.concatenate([[-np.inf], (s[:-1] + s[1:]) / 2, [np.inf]])
        train_acc = [np.mean((scores[tr] >= t) == labels[tr]) for t in cands]
        t = cands[int(np.argmax(train_acc))]
        accs.append(np.mean((scores[te] >= t) == labels[te]))
    return float(np.mean(accs))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gen_run(tmp_path_factory):
    """One occluded evaluation of the generated set, with scores saved (shared by several tests)."""
    base = tmp_path_factory.mktemp("gen")
    data = base / "data"
    pairs = make_pairs_set(data)
    prot = load_protocol(occ_protocol_file(base)).with_overrides(pairs=pairs)
    rec = TinyRecognizer()
    res = evaluate(prot, rec, data_root=data, out_dir=base / "results" / "tiny", cache_dir=base / "cache",
                   save_scores=True, progress=False, plots=False)
    return {"base": base, "data": data, "pairs": pairs, "protocol": prot, "res": res, "rec": rec,
            "json": base / "results" / "tiny" / "gen-occ.json"}


# --------------------------------------------------------------------------- tests


def test_contract_keys_and_variants(gen_run):
    res = load_results(gen_run["json"])
    for k in ("schema_version", "occbench_version", "protocol", "model", "variants", "timing", "created", "seed",
              "environment"):
        assert k in res
    assert set(res["protocol"]) >= {"name", "version", "hash"}
    assert set(res["model"]) >= {"name", "spec", "arch", "fingerprint", "preprocess"}
    assert res["variant_order"] == [v.name for v in gen_run["protocol"].variants()] == list(gen_run["res"]["variants"])
    assert set(res["variants"]) == set(res["variant_order"])
    assert {"clean", "N-O", "O-O", "N-O@s1.0", "N-O/block_solid@s2.0", "O-O/free@s2.0"} <= set(res["variants"])
    for v in res["variants"].values():
        assert set(v["metrics"]) >= {"accuracy", "accuracy_std", "tar_at_far_1e-3", "eer", "auc"}
        assert v["n_pairs"] == 72 and v["n_fte"] == 0
    assert res["main_score"]["value"] == res["variants"]["N-O"]["metrics"]["accuracy"]
    assert res["model"]["fingerprint"] == gen_run["rec"].fingerprint()


def test_metrics_recomputed_from_scores_with_sklearn(gen_run):
    from sklearn.metrics import roc_auc_score, roc_curve

    res = json.loads(gen_run["json"].read_text())
    sdir = gen_run["json"].parent / "gen-occ.scores"
    for name, entry in res["variants"].items():
        df = pd.read_parquet(sdir / f"{name.replace('/', '__')}.parquet")
        # every pair counts (failures to enrol at score_used = the lowest score); none fail here
        assert (df["status"] == "ok").all() and (df["score_used"] == df["score"]).all()
        s, y, f = df["score_used"].to_numpy(), df["same"].to_numpy(bool), df["fold"].to_numpy()
        m = entry["metrics"]
        assert m["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        fnr = 1 - tpr
        i = int(np.argmax(fnr - fpr <= 0))
        assert fpr[i - 1] <= m["eer"] <= fpr[i] + 1e-12
        assert m["accuracy"] == pytest.approx(kfold_reference(s, y, f), abs=1e-12)
        # TAR@FAR=1e-3 with 36 impostors cannot be measured: no value, but the FAR = 0 point is kept
        assert m["tar_at_far_1e-3"] is None
        op = entry["operating_points"]["tar_at_far_1e-3"]
        assert not op["reachable"] and op["needs_impostors"] == 1000 and op["far"] == 0
        assert op["tar"] == pytest.approx(np.mean(s[y] > s[~y].max()))
        assert m["fte_rate"] == 0 and entry["enrolled_only"]["metrics"]["accuracy"] == m["accuracy"]


def test_occlusion_semantics_recomputed_by_hand(gen_run):
    """N-O score = clean first image vs occluded second image, aligned by the clean landmarks."""
    from occbench.io.images import read_rgb
    from occbench.face.geometry import warp
    from occbench.synth.manifest import read_manifest

    res, rec, data = gen_run["res"], gen_run["rec"], gen_run["data"]
    cache_runs = gen_run["base"] / "cache" / "runs"
    manifest = read_manifest(next(cache_runs.glob("*/*/sweep")))
    m = template_alignment(rec.preprocess, FaceLandmarks(ARCFACE_112))

    def emb(img):
        return rec.embed(warp(img, m, (112, 112))[None])[0].astype(np.float64)

    sdir = gen_run["json"].parent / "gen-occ.scores"
    no = pd.read_parquet(sdir / "N-O.parquet")
    oo = pd.read_parquet(sdir / "O-O.parquet")
    occ = manifest[manifest["variant"] == "s2"].set_index("key")
    out = next(cache_runs.glob("*/*/sweep"))
    for i in (0, 1, 7):
        k1, k2 = no.loc[i, "key1"], no.loc[i, "key2"]
        o1, o2 = read_rgb(out / occ.loc[k1, "image"]), read_rgb(out / occ.loc[k2, "image"])
        assert no.loc[i, "score"] == pytest.approx(emb(read_rgb(data / k1)) @ emb(o2), abs=1e-5)
        assert oo.loc[i, "score"] == pytest.approx(emb(o1) @ emb(o2), abs=1e-5)
        assert no.loc[i, "area_frac2"] == pytest.approx(occ.loc[k2, "area_frac"])
    # every image has its own occlusion draw (independent seeds), and occlusion hurts
    assert occ["seed"].nunique() == len(occ)
    v = res["variants"]
    assert v["O-O"]["metrics"]["auc"] < v["clean"]["metrics"]["auc"]
    assert v["N-O"]["occlusion"]["area"]["mean_area_frac"] > 0.05


def test_area_and_cell_analysis_consistent(gen_run):
    res = gen_run["res"]
    no = res["variants"]["N-O"]
    bins = no["occlusion"]["area"]["bins"]
    assert sum(b["n"] for b in bins) == no["n_scored"]
    cells = no["occlusion"]["cells"]
    k = gen_run["protocol"].occlusion["k"]
    assert len(cells["drop"]) == k and len(cells["drop"][0]) == k
    sdir = gen_run["json"].parent / "gen-occ.scores"
    df = pd.read_parquet(sdir / "N-O.parquet")
    clean = pd.read_parquet(sdir / "clean.parquet")
    th_o = {int(f): t for f, t in no["thresholds"]["per_fold"].items()}
    th_c = {int(f): t for f, t in res["variants"]["clean"]["thresholds"]["per_fold"].items()}
    corr_o = (df["score"] >= df["fold"].map(th_o)) == df["same"]
    corr_c = (clean["score"] >= clean["fold"].map(th_c)) == clean["same"]
    # the densest cell: recompute its drop from the per-pair cell fractions in the manifest
    from occbench.synth.manifest import read_manifest

    man = read_manifest(next((gen_run["base"] / "cache" / "runs").glob("*/*/sweep")))
    man = man[man["variant"] == "s2"].set_index("key")
    frac = np.stack([json.loads(man.loc[k, "cells"]) for k in df["key2"]])
    n = np.array(cells["n"]).ravel()
    c = int(np.argmax(n))
    sel = frac[:, c] >= 0.5
    assert sel.sum() == n[c]
    assert cells["drop"][c // k][c % k] == pytest.approx(corr_o[sel].mean() - corr_c[sel].mean())


def test_second_run_hits_caches_and_reproduces(gen_run):
    base = gen_run["base"]
    before = {p.name: p.read_bytes() for p in (gen_run["json"].parent / "gen-occ.scores").glob("*.parquet")}
    rec = TinyRecognizer()
    res2 = evaluate(gen_run["protocol"], rec, data_root=gen_run["data"], out_dir=base / "results" / "tiny",
                    cache_dir=base / "cache", save_scores=True, progress=False, plots=False)
    assert rec.calls == 0  # every embedding came from the cache
    assert res2["cache"]["embedding_hits"] == res2["cache"]["embedding_sets"]
    assert res2["cache"]["alignment_hit"] and res2["cache"]["landmarks_computed"] == 0
    assert reproducible_view(res2) == reproducible_view(json.loads(gen_run["json"].read_text()))
    after = {p.name: p.read_bytes() for p in (gen_run["json"].parent / "gen-occ.scores").glob("*.parquet")}
    assert after == before


def test_missing_and_corrupt_images_are_reported_not_dropped(tmp_path):
    data = tmp_path / "data"
    pairs = make_pairs_set(data, n_ids=4, per_id=3)
    lines = pairs.read_text().splitlines()
    lines.append("id00/0.png,id00/99.png,1,1")  # listed, not on disk
    pairs.write_text("\n".join(lines) + "\n")
    (data / "id01" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # corrupt
    prot = load_protocol("pairs").with_overrides(pairs=pairs)
    res = evaluate(prot, TinyRecognizer(), data_root=data, out_dir=tmp_path / "r", cache_dir=tmp_path / "c",
                   save_scores=True, progress=False, plots=False)
    fails = {f["key"]: f for f in res["failures"]["images"]}
    assert fails["id00/99.png"]["stage"] == "missing"
    assert fails["id01/1.png"]["stage"] == "landmarks" and "corrupt" in fails["id01/1.png"]["reason"]
    rows = pd.read_parquet(tmp_path / "r" / "pairs.scores" / "clean.parquet")
    bad = rows["key1"].isin(fails) | rows["key2"].isin(fails)
    v = res["variants"]["clean"]
    assert v["n_pairs"] == len(rows) and v["n_fte"] == int(bad.sum()) > 1
    assert v["n_scored"] == v["n_pairs"] - v["n_fte"]
    assert (rows.loc[bad, "status"] == "fte").all() and rows.loc[bad, "score"].isna().all()
    assert res["counts"]["n_missing_images"] == 1


def test_path_escape_in_pairs_file_refused(tmp_path):
    data = tmp_path / "data"
    make_faces(data, 2, 2)
    (tmp_path / "secret.png").write_bytes(b"x")
    pf = data / "pairs.csv"
    pf.write_text("path1,path2,same\nid00/0.png,../secret.png,0\n")
    with pytest.raises(UnsafePathError):
        load_task(load_protocol("pairs").with_overrides(pairs=pf), data)
    link = data / "id00" / "out.png"
    link.symlink_to(tmp_path / "secret.png")
    pf.write_text("path1,path2,same\nid00/0.png,id00/out.png,0\n")
    with pytest.raises(UnsafePathError):
        load_task(load_protocol("pairs").with_overrides(pairs=pf), data)


def test_missing_data_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("OCCBENCH_DATA", raising=False)
    with pytest.raises(DataNotFoundError, match=r"lfw-occ expects DATA/lfw/<Name>/<Name>_NNNN\.jpg and "
                                                r"DATA/pairs\.txt.*--data-root or --pairs"):
        load_task(load_protocol("lfw-occ"))
    with pytest.raises(DataNotFoundError, match=r"image folder .*lfw not found.*lfw-occ expects"):
        load_task(load_protocol("lfw-occ"), tmp_path)
    (tmp_path / "lfw").mkdir()
    with pytest.raises(DataNotFoundError, match=r"no pairs file found .*pairs_view2_folds01-05\.txt"):
        load_task(load_protocol("lfw-occ"), tmp_path)
    with pytest.raises(DataNotFoundError, match="needs --bin FILE"):
        load_task(load_protocol("bin"), tmp_path)


def test_limit_keeps_folds_and_classes(lfw_root):
    full = load_task(load_protocol("lfw"), lfw_root)
    assert len(full.pairs) == 3000 and {p.fold for p in full.pairs} == {1, 2, 3, 4, 5}
    assert not full.missing
    sub = limit_task(load_task(load_protocol("lfw"), lfw_root), 40)
    groups = {(p.fold, p.same) for p in sub.pairs}
    assert len(sub.pairs) == 40 and len(groups) == 10
    assert sub.pairs == [p for p in full.pairs if p in set(sub.pairs)]  # file order kept


def test_lfw_identification_split(lfw_root):
    t = load_task(load_protocol("lfw-occ-id"), lfw_root)
    # 746 identities with >= 2 images (README of the data), 3,811 images, 2,086 identities
    assert len(t.gallery) == 746
    assert len(t.gallery) + len(t.probes) == 3811
    g = dict((i, k) for k, i in t.gallery)
    assert all(g[i] == min(k for k, j in t.gallery + t.probes if j == i) for i in g)
    nonmated = [k for k, i in t.probes if i not in g]
    assert len({k.split("/")[0] for k in nonmated}) == 2086 - 746


def test_identification_on_generated_set(tmp_path):
    data = tmp_path / "data"
    ids = make_faces(data, n_ids=8, per_id=3)
    names = sorted(ids)
    enrolled = names[:6]
    (data / "gallery.csv").write_text("path,identity\n" + "".join(f"{ids[n][0]},{n}\n" for n in enrolled))
    probes = [(k, n) for n in enrolled for k in ids[n][1:]] + [(k, n) for n in names[6:] for k in ids[n]]
    (data / "probe.csv").write_text("path,identity\n" + "".join(f"{k},{n}\n" for k, n in probes))
    prot = load_protocol("gallery-probe").with_overrides(gallery=data / "gallery.csv", probe=data / "probe.csv")
    res = evaluate(prot, TinyRecognizer(), data_root=data, out_dir=tmp_path / "r", cache_dir=tmp_path / "c",
                   save_scores=True, progress=False, plots=False)
    v = res["variants"]["clean"]
    assert (v["n_probes"], v["n_mated"], v["n_nonmated"], v["n_gallery"]) == (18, 12, 6, 6)
    top = pd.read_parquet(tmp_path / "r" / "gallery-probe.scores" / "clean.parquet")
    mated = top[top["mated"]]
    first = mated[mated["rank"] == 1].set_index("probe")
    second = mated[mated["rank"] == 2].set_index("probe")
    hit = (first["gallery_identity"] == first["probe_identity"]) & (first["score"] > second["score"])
    assert v["metrics"]["rank1"] == pytest.approx(hit.mean())
    assert v["metrics"]["rank5"] == pytest.approx((mated.groupby("probe")["mate_rank"].first() <= 5).mean())
    assert len(v["cmc"]) == 6 and v["cmc"][-1] == 1.0  # whole gallery listed: every mate found by rank 6
    # no failure to enrol: the rule changes nothing, all-probe figures equal the enrolled-only ones
    assert {k: x for k, x in v["metrics"].items() if k != "fte_rate"} == v["enrolled_only"]["metrics"]
    assert v["cmc"] == v["enrolled_only"]["cmc"] and v["metrics"]["fte_rate"] == 0
    # 6 non-mated probes cannot measure FPIR 1e-1: no value, the FPIR = 0 point kept with the count needed
    assert v["metrics"]["tpir_at_fpir_1e-1"] is None
    op = v["operating_points"]["tpir_at_fpir_1e-1"]
    assert not op["reachable"] and op["needs_nonmated"] == 10 and op["fpir"] == 0 and 0 <= op["tpir"] <= 1


def test_insightface_bin_protocol(tmp_path):
    """A .bin verification set: pre-aligned crops, template landmarks, 10 contiguous folds, occluded."""
    import pickle

    data = tmp_path / "data"
    ids = make_faces(data, n_ids=5, per_id=2, seed=5)
    names = sorted(ids)
    bins, same = [], []
    for i, n in enumerate(names):
        for a, b, s in ((ids[n][0], ids[n][1], True), (ids[n][0], ids[names[(i + 1) % 5]][1], False)):
            bins += [(data / a).read_bytes(), (data / b).read_bytes()]
            same.append(s)
    binf = tmp_path / "set.bin"
    binf.write_bytes(pickle.dumps((bins, same), protocol=4))
    (tmp_path / "b.yaml").write_text(
        "include: _bin.yaml\nname: b-occ\ndescription: t\ndata: {bin: null}\n"
        "occlusion: {occluders: [block_solid], scales: [2.0], modes: [N-O]}\n"
        "main_score: {variant: N-O, metric: accuracy}\n")
    prot = load_protocol(tmp_path / "b.yaml").with_overrides(bin=binf)
    res = evaluate(prot, TinyRecognizer(), out_dir=tmp_path / "r", cache_dir=tmp_path / "c", save_scores=True,
                   progress=False, plots=False)
    assert res["protocol"]["data"]["bin"]["name"] == "set.bin" and res["failures"]["n_images"] == 0
    assert res["protocol"]["landmarks"]["name"] == "template"
    df = pd.read_parquet(tmp_path / "r" / "b-occ.scores" / "N-O.parquet")
    assert list(df["fold"]) == list(range(1, 11)) and list(df["key1"]) == [str(2 * i) for i in range(10)]
    assert res["variants"]["clean"]["metrics"]["auc"] == 1.0  # same-identity crops differ only by noise
    assert (df["area_frac2"] > 0).all()


@pytest.mark.slow
def test_fresh_cache_and_workers_reproduce(gen_run, tmp_path):
    """A cold cache and 2 workers (landmarks, synth, data loading) give the very same results."""
    res = evaluate(gen_run["protocol"], TinyRecognizer(), data_root=gen_run["data"], out_dir=tmp_path / "tiny",
                   cache_dir=tmp_path / "cache", save_scores=True, progress=False, plots=False, num_workers=2)
    assert res["cache"]["embedding_hits"] == 0
    assert reproducible_view(res) == reproducible_view(json.loads(gen_run["json"].read_text()))
    old = gen_run["json"].parent / "gen-occ.scores"
    for p in (tmp_path / "tiny" / "gen-occ.scores").glob("*.parquet"):
        assert p.read_bytes() == (old / p.name).read_bytes()


@pytest.mark.slow
def test_lfw_occ_real_subset(lfw_root, tmp_path):
    """The full lfw-occ protocol (all occluders and breakdowns) on 40 real LFW pairs."""
    res = evaluate(load_protocol("lfw-occ"), TinyRecognizer(), data_root=lfw_root, out_dir=tmp_path / "r",
                   cache_dir=tmp_path / "c", limit_pairs=40, progress=False, num_workers=2)
    v = res["variants"]
    assert len(v) == 1 + 2 * (1 + 2 + 9 + 1)
    assert all(e["n_pairs"] == 40 for e in v.values())
    assert v["N-O"]["occlusion"]["area"]["mean_area_frac"] > 0.1
    assert res["synth"]["by-occluder"]["status_counts"].get("ok", 0) > 0


def test_one_overall_progress_bar(gen_run, tmp_path, capsys):
    """One bar for the whole run (stage and image set named, ETA), not one per stage and image set."""
    from occbench.bench.evaluate import EvalConfig, run_eval

    run_eval(EvalConfig(model=TinyRecognizer(), protocol=gen_run["protocol"], data_root=gen_run["data"], out=None,
                        cache_dir=tmp_path / "c", plots=False), progress=True)
    err = capsys.readouterr().err
    frames = [f for f in err.replace("\n", "\r").split("\r") if f.strip()]
    assert frames and all(f.startswith("eval gen-occ") for f in frames), set(f[:30] for f in frames)
    assert any("] N-O/block_solid@s2.0: embed" in f or ": embed" in f for f in frames)
    import re

    done, total = map(int, re.search(r"(\d+)/(\d+)", frames[-1]).groups())
    assert done == total > 0 and "100%" in frames[-1] and "<" in frames[-1]  # elapsed<remaining
    assert not any(f.startswith(("landmarks", "synth", "embed", "align")) for f in frames)


def test_clean_embeddings_shared_between_protocols_on_the_same_images(gen_run, tmp_path):
    """lfw and lfw-occ use the same clean images: the second protocol reuses the clean embeddings."""
    from occbench.bench.evaluate import EvalConfig, run_eval

    (tmp_path / "gen-clean.yaml").write_text("include: pairs.yaml\nname: gen-clean\ndescription: clean only\n"
                                             "landmarks: {method: template}\n")
    rec = TinyRecognizer()
    res = run_eval(EvalConfig(model=rec, protocol=tmp_path / "gen-clean.yaml", pairs=gen_run["pairs"],
                              data_root=gen_run["data"], out=None, cache_dir=gen_run["base"] / "cache", plots=False),
                   progress=False)
    assert res.protocol["hash"] != gen_run["res"]["protocol"]["hash"]
    assert res.cache["embedding_hits"] == 1 and rec.calls == 0  # nothing embedded again
    assert res.variant("clean").metrics == gen_run["res"]["variants"]["clean"]["metrics"]


def test_landmarks_and_occluded_sets_on_dask_reproduce(gen_run, tmp_path, monkeypatch):
    """``--dask local:2``: landmarks and the occluded sets made by Dask workers; the very same results."""
    pytest.importorskip("distributed", reason="dask distributed is an optional extra (occbench[dask])")
    from occbench import distributed

    ran = []
    real = distributed.run_on_dask

    def counting(spec, fn, shared, tasks, **kw):
        ran.append(fn.__name__)
        return real(spec, fn, shared, tasks, **kw)

    monkeypatch.setattr(distributed, "run_on_dask", counting)
    res = evaluate(gen_run["protocol"], TinyRecognizer(), data_root=gen_run["data"], out_dir=tmp_path / "tiny",
                   cache_dir=tmp_path / "cache", save_scores=True, progress=False, plots=False, dask="local:2")
    assert {"_detect_task", "_run_batch"} <= set(ran)  # both stages went through Dask
    assert res["cache"]["embedding_hits"] == 0
    assert reproducible_view(res) == reproducible_view(json.loads(gen_run["json"].read_text()))
    old = gen_run["json"].parent / "gen-occ.scores"
    for p in (tmp_path / "tiny" / "gen-occ.scores").glob("*.parquet"):
        assert p.read_bytes() == (old / p.name).read_bytes()
