"""Sources: folder trees (tiny generated + real LFW), named datasets, path safety, LFW pairs."""
from __future__ import annotations

import os
import pickle
from collections import Counter

import numpy as np
import pytest

from occbench.errors import ConfigError, DataNotFoundError, UnsafePathError
from occbench.io.images import decode_rgb, encode
from occbench.io.recordio import write_face_set
from occbench.io.sources import (
    DATASETS,
    RecordIOSource,
    SourceItem,
    TreeSource,
    lfw_key,
    open_source,
    read_lfw_pairs,
)


def _img(fmt: str, seed: int = 0) -> bytes:
    return encode(np.random.default_rng(seed).integers(0, 255, (6, 6, 3), dtype=np.uint8), fmt)


def _tree(root, files: dict[str, bytes]):
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def test_identity_tree(tmp_path):
    files = {
        "bob/b2.PNG": _img("png", 1),
        "bob/b1.jpeg": _img("jpg", 2),
        "alice/a.jpg": _img("jpg", 3),
        "alice/notes.txt": b"not an image",
        "alice/.hidden.jpg": _img("jpg", 4),
        ".cache/x.jpg": _img("jpg", 5),
        "carol/sub/c.bmp": _img("bmp", 6),
    }
    src = open_source(_tree(tmp_path / "ds", files))
    assert isinstance(src, TreeSource) and src.kind == "tree" and src.name == "ds"
    assert src.items() == [
        SourceItem("alice/a.jpg", "alice", "jpg"),
        SourceItem("bob/b1.jpeg", "bob", "jpg"),
        SourceItem("bob/b2.PNG", "bob", "png"),
        SourceItem("carol/sub/c.bmp", "carol/sub", "bmp"),
    ]
    assert src.read_bytes("bob/b2.PNG") == files["bob/b2.PNG"]
    assert decode_rgb(src.read_bytes(src.items()[3])).shape == (6, 6, 3)
    d = src.describe()
    assert (d["kind"], d["n_items"], d["n_identities"], d["skipped_links"]) == ("tree", 4, 3, 0)
    clone = pickle.loads(pickle.dumps(src))
    assert clone._items is None and clone.items() == src.items()


def test_flat_folder_and_lfw_wrapper(tmp_path):
    flat = open_source(_tree(tmp_path / "flat", {"z.png": _img("png"), "a.webp": b"RIFF....WEBP"}))
    assert flat.kind == "flat" and [(i.key, i.identity, i.fmt) for i in flat.items()] == [
        ("a.webp", "", "webp"), ("z.png", "", "png")]
    wrap = _tree(tmp_path / "wrap", {"lfw/Ann_Lee/Ann_Lee_0001.jpg": _img("jpg"),
                                     "lfw/Ann_Lee/Ann_Lee_0002.jpg": _img("jpg", 1),
                                     "pairs.txt": b"1\t1\n"})
    src = open_source(wrap)
    assert src.root == (wrap / "lfw").resolve() and src.kind == "lfw"
    assert [i.key for i in src.items()] == ["Ann_Lee/Ann_Lee_0001.jpg", "Ann_Lee/Ann_Lee_0002.jpg"]


def test_empty_folder_and_bad_files(tmp_path):
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="no images"):
        open_source(tmp_path / "empty")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ConfigError, match=".rec or an insightface .bin"):
        open_source(tmp_path / "a.txt")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlinks_never_leave_root(tmp_path):
    outside = _tree(tmp_path / "outside", {"secret.jpg": _img("jpg")})
    root = _tree(tmp_path / "ds", {"a/in.jpg": _img("jpg", 1)})
    (root / "a" / "escape.jpg").symlink_to(outside / "secret.jpg")
    (root / "a" / "alias.jpg").symlink_to(root / "a" / "in.jpg")
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    src = open_source(root)
    assert [i.key for i in src.items()] == ["a/alias.jpg", "a/in.jpg"]
    assert src.describe()["skipped_links"] == 2
    for bad in ("a/escape.jpg", "linked_dir/secret.jpg", "../outside/secret.jpg", str(outside / "secret.jpg")):
        with pytest.raises(UnsafePathError):
            src.read_bytes(bad)


def test_named_dataset_missing_says_what_to_download(tmp_path, monkeypatch):
    monkeypatch.delenv("OCCBENCH_DATA", raising=False)
    with pytest.raises(DataNotFoundError, match="--data-root") as e:
        open_source("casia")
    assert "faces_webface_112x112" in str(e.value)
    with pytest.raises(DataNotFoundError) as e:
        open_source("casia", data_root=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "casia") in msg and "train.rec + train.idx" in msg and "faces_webface_112x112" in msg
    monkeypatch.setenv("OCCBENCH_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError, match=r"lfw/<Name>/<Name>_NNNN\.jpg"):
        open_source("lfw")
    with pytest.raises(DataNotFoundError, match="Did you mean: casia"):
        open_source("casio")


def test_named_dataset_found_under_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("OCCBENCH_DATA", str(tmp_path))
    (tmp_path / "casia").mkdir()  # an empty candidate folder is skipped, the next layout is used
    write_face_set(tmp_path / "faces_webface_112x112" / "train.rec", [(0, _img("jpg")), (1, _img("jpg", 1))])
    src = open_source("casia")
    assert isinstance(src, RecordIOSource) and src.name == "casia" and len(src.items()) == 2
    _tree(tmp_path / "lfw", {"Ann_Lee/Ann_Lee_0001.jpg": _img("jpg")})
    lfw = open_source("lfw")
    assert lfw.name == "lfw" and lfw.kind == "lfw" and lfw.describe()["n_items"] == 1
    assert set(DATASETS.names()) >= {"casia", "ms1m", "lfw", "webface260m", "lfw-bin"}


def test_paths_relative_to_data_root_cannot_escape(tmp_path, monkeypatch):
    data = _tree(tmp_path / "data", {"sets/mine/x/a.jpg": _img("jpg")})
    _tree(tmp_path / "outside", {"x/b.jpg": _img("jpg")})
    elsewhere = tmp_path / "deep" / "cwd"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)  # relative specs do not exist here, so they resolve under the data root
    assert [i.key for i in open_source("sets/mine", data_root=data).items()] == ["x/a.jpg"]
    with pytest.raises(UnsafePathError):
        open_source("../outside", data_root=data)
    with pytest.raises(DataNotFoundError, match="not an existing path"):
        open_source("sets/nope", data_root=data)


def test_real_lfw_tree(lfw_root, lfw_images, lfw_pairs):
    src = open_source(lfw_root)  # the folder holding lfw/ is detected
    items = src.items()
    assert src.root == lfw_images.resolve() and src.kind == "lfw"
    assert len(items) == 3811 and len({i.identity for i in items}) == 2086
    assert [i.key for i in items] == sorted(i.key for i in items)
    assert items == open_source(lfw_images).items()  # deterministic
    assert all(i.key == lfw_key(i.identity, i.key[-8:-4]) and i.fmt == "jpg" for i in items)
    keys = {i.key for i in items}
    assert all(p.key1 in keys and p.key2 in keys for p in read_lfw_pairs(lfw_pairs))
    assert decode_rgb(src.read_bytes(items[0])).shape == (250, 250, 3)


def test_real_lfw_pairs(lfw_pairs):
    pairs = read_lfw_pairs(lfw_pairs)
    assert len(pairs) == 3000 and sum(p.same for p in pairs) == 1500
    assert Counter(p.fold for p in pairs) == {f: 600 for f in range(1, 6)}
    assert Counter((p.fold, p.same) for p in pairs) == {(f, s): 300 for f in range(1, 6) for s in (True, False)}
    first = lfw_pairs.read_text().splitlines()[1].split("\t")
    assert pairs[0] == (lfw_key(first[0], first[1]), lfw_key(first[0], first[2]), True, 1)
    assert all(p.key1.split("/")[0] == p.key2.split("/")[0] for p in pairs if p.same)
    assert all(p.key1.split("/")[0] != p.key2.split("/")[0] for p in pairs if not p.same)


def test_pairs_parser_layouts_and_errors(tmp_path):
    f = tmp_path / "pairs.txt"
    f.write_text("2\t1\nA\t1\t12\nB\t3\tC\t4\nD\t2\t3\nE\t1\tF\t100\n")
    assert read_lfw_pairs(f) == [
        ("A/A_0001.jpg", "A/A_0012.jpg", True, 1), ("B/B_0003.jpg", "C/C_0004.jpg", False, 1),
        ("D/D_0002.jpg", "D/D_0003.jpg", True, 2), ("E/E_0001.jpg", "F/F_0100.jpg", False, 2)]
    f.write_text("1\nA\t1\t2\nB\t1\tC\t1\n")  # pairsDevTest-style single-number header
    assert [p.fold for p in read_lfw_pairs(f)] == [1, 1]
    for text, match in [("2\t1\nA\t1\t2\n", "found 1"), ("1\t1\nA\t1\tB\t2\nA\t1\t2\n", "line 2"),
                        ("1\t1\n..\t1\t2\nB\t1\tC\t1\n", "invalid person name"), ("x\ty\n", "first line")]:
        f.write_text(text)
        with pytest.raises(ConfigError, match=match):
            read_lfw_pairs(f)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_scan_accounts_for_every_entry(tmp_path):
    """0.2 passed over links, GIFs and folders named like images without a trace (a count at most)."""
    outside = _tree(tmp_path / "outside", {"secret.jpg": _img("jpg")})
    root = _tree(tmp_path / "ds", {"a/in.jpg": _img("jpg", 1), "a/anim.gif": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
                                   "a/readme.txt": b"x", "b.png/c.jpg": _img("jpg", 2), ".DS_Store": b""})
    (root / "a" / "escape.jpg").symlink_to(outside / "secret.jpg")
    (root / "a" / "gone.jpg").symlink_to(root / "nowhere.jpg")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "empty").mkdir()
    src = open_source(root)
    assert [i.key for i in src.items()] == ["a/in.jpg", "b.png/c.jpg"]
    assert src.unusable() == {"a/anim.gif": "GIF is not supported: convert it to PNG or JPEG",
                              "a/escape.jpg": "symlink to a file outside the source (not followed)",
                              "a/gone.jpg": "dangling symlink (its target does not exist)"}
    assert src.skipped() == {"empty folder": ["empty"],
                             "folder named like an image (scanned as a folder)": ["b.png"],
                             "hidden entry": [".DS_Store"], "not an image file (extension)": ["a/readme.txt"],
                             "symlinked folder (not followed)": ["linked"]}
    assert src.describe()["skipped_links"] == 3
