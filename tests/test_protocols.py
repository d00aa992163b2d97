"""Protocols: every built-in YAML loads and validates, include/merge rules, variant expansion, hashing."""
from __future__ import annotations

import pytest
import yaml

from occbench.bench.protocols import (
    deep_merge,
    far_key,
    list_protocols,
    load_protocol,
    protocol_files,
    protocol_hash,
    scale_tag,
)
from occbench.errors import ConfigError, DataNotFoundError, UnsafePathError


def test_every_builtin_protocol_loads_and_validates():
    prots = list_protocols()
    assert [p.name for p in prots] == sorted(f.stem for f in protocol_files())  # file name = protocol name
    assert {"lfw", "lfw-occ", "lfw-occ-id", "bin", "pairs", "gallery-probe"} <= {p.name for p in prots}
    for p in prots:
        assert p.description and p.kind in ("verification", "identification", "all-to-all", "attributes")
        names = [v.name for v in p.variants()]
        assert names[0] == "clean" and len(set(names)) == len(names)
        assert p.main_score["variant"] in names
        shown = yaml.safe_load(p.to_yaml())
        assert shown["name"] == p.name and [v["name"] for v in shown["variants"]] == names
        assert len(protocol_hash(p, {"x": 1})) == 16


def test_occluders_named_by_protocols_exist():
    from occbench.synth.occluders import create_occluder

    for p in list_protocols():
        for name in (p.occlusion or {}).get("occluders", []):
            create_occluder(name)  # raises ConfigError for an unknown name


def test_lfw_occ_variants_and_synth_names_match_the_pipeline():
    from occbench.synth.pipeline import plan_variants

    p = load_protocol("lfw-occ")
    v = {x.name: x for x in p.variants()}
    assert p.main_score == {"variant": "N-O", "metric": "accuracy"}
    assert v["N-O"].scale == 2.0 and v["N-O"].placement == "anchored" and v["N-O"].occluder is None
    assert {"N-O@s1.0", "N-O@s1.5", "O-O@s1.0", "N-O/free@s2.0", "O-O/free@s2.0"} <= set(v)
    for occ in p.occlusion["occluders"]:
        assert v[f"N-O/{occ}@s2.0"].occluder == occ and v[f"O-O/{occ}@s2.0"].mode == "O-O"
    assert len(v) == 1 + 2 * (1 + 2 + len(p.occlusion["occluders"]) + 1)
    runs = {r.name: r for r in p.synth_runs()}
    occs = tuple(p.occlusion["occluders"])
    for spec in v.values():
        if spec.run is None:
            continue
        r = runs[spec.run]
        planned = [x.name for x in plan_variants(occs, r.scales, r.per_scale, r.per_occluder)]
        assert spec.synth_variant in planned
    assert runs["placement-free"].placement == "free"


def test_identification_protocol():
    p = load_protocol("lfw-occ-id")
    assert p.kind == "identification" and p.occlusion["modes"] == ["N-O"]
    assert not any(v.mode == "O-O" for v in p.variants())
    assert p.metrics == {"fpir": [0.01, 0.1], "max_rank": 20}
    assert p.main_score == {"variant": "N-O", "metric": "rank1"}


def test_include_deep_merges_and_replaces_lists(tmp_path):
    (tmp_path / "_base.yaml").write_text(
        "kind: verification\ndata: {format: pairs-csv, images: imgs, pairs: [a.csv, b.csv]}\n"
        "landmarks: {method: template}\nmetrics: {far: [0.01, 0.001]}\n")
    (tmp_path / "child.yaml").write_text(
        "include: _base.yaml\nname: child\ndata: {pairs: c.csv}\nmetrics: {far: [0.1]}\n"
        "main_score: {variant: clean, metric: tar_at_far_1e-1}\n")
    p = load_protocol(tmp_path / "child.yaml")
    assert p.data["images"] == "imgs" and p.data["pairs"] == "c.csv"  # nested mapping merged, value replaced
    assert p.metrics["far"] == [0.1]  # list replaced, not concatenated
    assert deep_merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}}
    # a user file can include the built-in bases by name
    (tmp_path / "mine.yaml").write_text("include: [_lfw.yaml, _occlusion.yaml]\nname: mine\n"
                                        "main_score: {variant: O-O, metric: auc}\n")
    assert load_protocol(tmp_path / "mine.yaml").data["format"] == "lfw-pairs"


def test_include_escape_and_cycle_refused(tmp_path):
    (tmp_path / "x.yaml").write_text("name: x\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "p.yaml").write_text("include: ../x.yaml\nname: p\n")
    with pytest.raises(UnsafePathError):
        load_protocol(sub / "p.yaml")
    (tmp_path / "a.yaml").write_text("include: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("include: a.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_protocol(tmp_path / "a.yaml")


@pytest.mark.parametrize("patch, message", [
    ("bogus: 1", "unknown keys bogus"),
    ("kind: clustering", "kind must be one of"),
    ("main_score: {variant: N-X, metric: accuracy}", "main_score variant 'N-X'"),
    ("main_score: {variant: clean, metric: rank1}", "main_score metric 'rank1'"),
    ("metrics: {far: [1e-3]}", r"metrics.far must be a non-empty list"),  # YAML reads 1e-3 as a string
    ("data: {format: gallery-probe}", "is for identification"),
    ("data: {format: pairs-csv, images: ../up}", "escapes"),
    ("occlusion: {occluders: [], scales: [2.0]}", "non-empty list of occluder names"),
    ("occlusion: {occluders: [hand], breakdown: [colour]}", "breakdown entries"),
    ("occlusion: {occluders: [hand], scales: [1.0], headline: {scale: 2.0, placement: anchored}}", "not in scales"),
])
def test_invalid_protocols_rejected(tmp_path, patch, message):
    base = yaml.safe_load("name: t\nkind: verification\ndata: {format: lfw-pairs, images: lfw, pairs: pairs.txt}\n"
                          "main_score: {variant: clean, metric: accuracy}\n")
    base.update(yaml.safe_load(patch))
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(base))
    with pytest.raises((ConfigError, UnsafePathError), match=message):
        load_protocol(f)


def test_unknown_protocol_suggests():
    with pytest.raises(ConfigError, match="Did you mean: lfw-occ"):
        load_protocol("lfw-ocd")
    with pytest.raises(DataNotFoundError):
        load_protocol("nowhere/p.yaml")


def test_names_of_metrics_and_scales():
    assert far_key("tar_at_far", 1e-3) == "tar_at_far_1e-3"
    assert far_key("tar_at_far", 0.01) == "tar_at_far_1e-2"
    assert far_key("tpir_at_fpir", 0.1) == "tpir_at_fpir_1e-1"
    assert far_key("tar_at_far", 2.5e-4) == "tar_at_far_2.5e-4"
    assert [scale_tag(s) for s in (1, 1.5, 2.0, 1.25)] == ["1.0", "1.5", "2.0", "1.25"]


def test_protocol_hash_tracks_content_and_data(tmp_path):
    p = load_protocol("lfw-occ")
    ident = {"pairs": {"name": "pairs.txt", "sha256": "ab"}}
    h = protocol_hash(p, ident)
    assert h == protocol_hash(load_protocol("lfw-occ"), dict(ident))
    assert h != protocol_hash(p, {"pairs": {"name": "pairs.txt", "sha256": "cd"}})
    q = load_protocol("lfw-occ")
    q.raw["occlusion"]["seed"] = 1
    assert h != protocol_hash(q, ident)
    # overrides record user paths but the hash only sees content identity
    f1, f2 = tmp_path / "a" / "pairs.csv", tmp_path / "b" / "pairs.csv"
    for f in (f1, f2):
        f.parent.mkdir()
        f.write_text("path1,path2,same\n")
    a, b = load_protocol("pairs").with_overrides(pairs=f1), load_protocol("pairs").with_overrides(pairs=f2)
    assert a.overrides != b.overrides and protocol_hash(a, ident) == protocol_hash(b, ident)


def test_overrides_are_checked(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("x")
    with pytest.raises(ConfigError, match="does not read a pairs file"):
        load_protocol("bin").with_overrides(pairs=f)
    with pytest.raises(DataNotFoundError, match="no such file"):
        load_protocol("pairs").with_overrides(pairs=tmp_path / "missing.csv")
    assert load_protocol("lfw").expects() == ("lfw expects DATA/lfw/<Name>/<Name>_NNNN.jpg and DATA/pairs.txt or "
                                              "DATA/pairs_view2_folds01-05.txt or DATA/lfw/pairs.txt; "
                                              "pass --data-root or --pairs")


def test_a_file_that_is_not_a_protocol_is_one_clear_error(tmp_path):
    # qa-h: `occbench protocols --show photo.jpg` (or `eval -p x.bin`) ended in a UnicodeDecodeError traceback
    from click.testing import CliRunner

    from occbench.cli import cli

    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x87\x99")
    (tmp_path / "pairs.csv").write_text("path1,path2,same\n")
    for f, want in (("photo.jpg", "protocols are UTF-8 YAML text"), ("pairs.csv", "must be a YAML mapping"),
                    (".", "is a folder")):
        res = CliRunner().invoke(cli, ["protocols", "--show", str(tmp_path / f)])
        assert res.exit_code == 1 and want in res.output and "Traceback" not in res.output, res.output
        assert res.output.count("\n") == 1 and res.output.startswith("Error: ")
