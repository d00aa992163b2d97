"""Attribute label readers, attribute metrics (against scikit-learn), and an end-to-end attribute check."""
from __future__ import annotations

import numpy as np
import pytest

from occbench.errors import ConfigError
from occbench.io.attributes import (lfw_key, match_attributes, read_attributes, read_attributes_csv,
                                    read_celeba_attributes, read_lfw_attributes)
from occbench.metrics.attributes import (attribute_metrics, average_precision, compare_variants, flat_table,
                                         metrics_by_part)
from attribute_faces import aligned_lfw, dress, template

# ------------------------------------------------------------------------------------------ readers


def _tree(tmp_path, names=("a.jpg", "b.jpg", "sub/c.jpg")):
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"x")
    return tmp_path


def test_attributes_csv_reads_unknowns(tmp_path):
    root = _tree(tmp_path)
    p = tmp_path / "attributes.csv"
    p.write_text("path,Smiling,Eyeglasses\na.jpg,1,0\nb.jpg,-1,\nsub/c.jpg,0,1\n")
    t = read_attributes_csv(p, root=root)
    assert t.keys == ["a.jpg", "b.jpg", "sub/c.jpg"] and t.names == ["Smiling", "Eyeglasses"]
    assert t.labels.tolist() == [[1, 0], [-1, -1], [0, 1]]
    assert t.select(["sub/c.jpg", "a.jpg"]).tolist() == [[0, 1], [1, 0]]
    with pytest.raises(ConfigError, match="no attribute labels"):
        t.select(["zzz.jpg"])
    assert read_attributes(p, root=root).labels.tolist() == t.labels.tolist()


@pytest.mark.parametrize("body,msg", [
    ("a.jpg,1,0\nnope.jpg,1,1\n", r"row 3: unknown path 'nope.jpg'"),
    ("a.jpg,1,0\nb.jpg,2,1\n", r"row 3: Smiling='2' is not binary"),
    ("a.jpg,1,0\nb.jpg,yes,1\n", r"row 3: Smiling='yes' is not binary"),
    ("a.jpg,1,0\nb.jpg,1,1\na.jpg,0,0\n", r"row 4: path 'a.jpg' is listed twice \(first in row 2\)"),
    ("a.jpg,1\n", r"row 2: 2 fields"),
    ("../a.jpg,1,0\n", r"escapes"),
])
def test_attributes_csv_bad_rows(tmp_path, body, msg):
    root = _tree(tmp_path)
    p = tmp_path / "attributes.csv"
    p.write_text("path,Smiling,Eyeglasses\n" + body)
    with pytest.raises(Exception, match=msg):
        read_attributes_csv(p, root=root)


def test_attributes_csv_known_set_and_header(tmp_path):
    p = tmp_path / "attributes.csv"
    p.write_text("path,Smiling\nx.jpg,1\n")
    assert read_attributes_csv(p, known={"x.jpg"}).labels.tolist() == [[1]]
    with pytest.raises(ConfigError, match="row 2: unknown path"):
        read_attributes_csv(p, known={"y.jpg"})
    p.write_text("file,Smiling\nx.jpg,1\n")
    with pytest.raises(ConfigError, match="row 1 must be the header"):
        read_attributes_csv(p)
    p.write_text("path,Smiling,Smiling\nx.jpg,1,1\n")
    with pytest.raises(ConfigError, match="appears twice"):
        read_attributes_csv(p)


def test_celeba_layout(tmp_path):
    p = tmp_path / "list_attr_celeba.txt"
    p.write_text("2\n5_o_Clock_Shadow Arched_Eyebrows Smiling \n000001.jpg -1  1  1\n000002.jpg -1 -1 -1\n")
    t = read_celeba_attributes(p)
    assert t.names == ["5_o_Clock_Shadow", "Arched_Eyebrows", "Smiling"]
    assert t.labels.tolist() == [[0, 1, 1], [0, 0, 0]] and t.keys == ["000001.jpg", "000002.jpg"]
    assert read_attributes(p).keys == t.keys
    p.write_text("3\nA B\n1.jpg 1 -1\n2.jpg 1 1\n")
    with pytest.raises(ConfigError, match="announces 3 images, the file lists 2"):
        read_celeba_attributes(p)
    p.write_text("1\nA B\n1.jpg 1 0\n")
    with pytest.raises(ConfigError, match=r"line 3: value '0' is not \+1/-1"):
        read_celeba_attributes(p)


def test_lfw_attribute_layout(tmp_path):
    p = tmp_path / "lfw_attributes.txt"
    p.write_text("# LFW attribute values, v0.1\n#\tperson\timagenum\tMale\tBlack Hair\tSmiling\n"
                 "Aaron Eckhart\t1\t1.568\t-0.5\t0.0\nAbel Pacheco\t4\t-2.1\t0.3\t2.5\n")
    t = read_lfw_attributes(p)
    assert t.keys == ["Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0004.jpg"]
    assert t.names == ["Male", "Black Hair", "Smiling"]
    assert t.labels.tolist() == [[1, 0, 0], [0, 1, 1]]  # binarised at 0 (0.0 -> 0)
    assert read_attributes(p).keys == t.keys
    assert lfw_key("Jean Chretien", 12) == "Jean_Chretien/Jean_Chretien_0012.jpg"
    p.write_text("#\tperson\timagenum\tMale\nA B\t1\t0.5\nA B\t1\t0.7\n")
    with pytest.raises(ConfigError, match="line 3: A B 1 is listed twice"):
        read_lfw_attributes(p)


def test_match_by_name():
    pairs, model_only, data_only = match_attributes(["smiling", "Black_Hair", "Eyeglasses", "Wearing_Mask"],
                                                    ["Male", "Black Hair", "Smiling", "Eyeglasses"])
    assert pairs == [(0, 2, "Smiling"), (1, 1, "Black Hair"), (2, 3, "Eyeglasses")]
    assert model_only == ["Wearing_Mask"] and data_only == ["Male"]


# ------------------------------------------------------------------------------------------ metrics


def test_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, average_precision_score, balanced_accuracy_score

    rng = np.random.default_rng(0)
    n, a = 300, 5
    y = rng.integers(0, 2, (n, a)).astype(np.int8)
    y[rng.random((n, a)) < 0.15] = -1
    y[:, 4] = np.where(y[:, 4] >= 0, 0, -1)  # no positive: AP and balanced accuracy undefined
    s = np.round(rng.normal(size=(n, a)) + 1.2 * (y == 1), 1)  # rounded: many ties
    names = [f"a{j}" for j in range(a)]
    res = attribute_metrics(y, s, names, threshold=0.3)
    for j, name in enumerate(names):
        k = y[:, j] >= 0
        yt, st = y[k, j], s[k, j]
        m = res["per_attribute"][name]
        assert m["n"] == k.sum() and m["n_pos"] == yt.sum()
        assert m["accuracy"] == pytest.approx(accuracy_score(yt, st >= 0.3))
        if 0 < yt.sum() < len(yt):
            assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(yt, st >= 0.3))
            assert m["ap"] == pytest.approx(average_precision_score(yt, st))
        else:
            assert m["balanced_accuracy"] is None and m["ap"] is None
    assert res["mean"]["ap_n_attributes"] == 4
    assert res["mean"]["ap"] == pytest.approx(np.mean([res["per_attribute"][f"a{j}"]["ap"] for j in range(4)]))
    assert average_precision([0, 0], [0.1, 0.2]) is None
    with pytest.raises(ConfigError, match="1, 0 or -1"):
        attribute_metrics([[2]], [[0.0]], ["x"])
    with pytest.raises(ConfigError, match="finite"):
        attribute_metrics([[1]], [[np.nan]], ["x"])


def test_compare_and_by_part():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    clean = attribute_metrics(y, np.where(y == 1, 2.0, -2.0), ["m", "g"])
    occ_scores = np.array([[2.0, -2.0], [2.0, 2.0], [-2.0, 2.0], [2.0, -2.0]])  # "m" wrong on 3 of 4
    occ = attribute_metrics(y, occ_scores, ["m", "g"])
    d = compare_variants({"clean": clean, "scarf": occ})
    assert d["scarf"]["per_attribute"]["m"]["accuracy"] == pytest.approx(-0.75)
    assert d["scarf"]["per_attribute"]["g"]["accuracy"] == 0.0
    with pytest.raises(ConfigError, match="no reference"):
        compare_variants({"scarf": occ})
    bp = metrics_by_part(y, occ_scores, ["m", "g"], {"mouth": np.array([True, True, True, None], dtype=object)})
    assert bp["mouth"]["n_covered"] == 3 and bp["mouth"]["n_uncovered"] == 0
    assert bp["mouth"]["covered"]["per_attribute"]["m"]["accuracy"] == pytest.approx(1 / 3)
    assert bp["mouth"]["uncovered"]["per_attribute"]["m"]["accuracy"] is None  # no image: n/a
    rows = flat_table({"clean": clean})
    assert rows[-1]["attribute"] == "mean" and rows[0]["accuracy_pct"] == 100.0


# ---------------------------------------------------------------------------------- end to end


@pytest.mark.slow  # ~15 s alone: 200 real faces meshed, occluded and written
def test_attributes_end_to_end_on_lfw(lfw_images, tmp_path):
    """Labels occbench derives itself (which occluders it drew) -> attributes.csv -> a small model trained
    here -> N x A logits -> metrics on clean and occluded variants, broken down by the part covered."""
    import torch

    from occbench.face.parts import face_part_map, part_fractions
    from occbench.io.images import encode
    from occbench.seeding import rng_for
    from occbench.synth.occluders import create_occluder

    files = sorted(lfw_images.glob("*/*.jpg"))[::19][:200]
    tl = template()
    occ = {n: create_occluder(n) for n in ("scarf", "rgba_sleep_mask")}
    lines, crops, ids = ["path,wears_mask,wears_sunglasses"], {}, {}
    for f, crop in aligned_lfw(files):
        key = f"{f.parent.name}/{f.name}"
        crop, wm, ws = dress(crop, key, "e2e")
        (tmp_path / f.parent.name).mkdir(exist_ok=True)
        (tmp_path / key).write_bytes(encode(crop, "png"))
        lines.append(f"{key},{int(wm)},{int(ws)}")
        crops[key], ids[key] = crop, f.parent.name
    (tmp_path / "attributes.csv").write_text("\n".join(lines) + "\n")
    table = read_attributes(tmp_path / "attributes.csv", root=tmp_path)
    keys = table.keys
    train = [k for k in keys if hash_unit(ids[k]) < 0.5]
    test = [k for k in keys if hash_unit(ids[k]) >= 0.5]
    assert len(train) > 60 and len(test) > 60

    def feats(imgs):  # 16x16 RGB, in [-1, 1]
        import cv2

        return torch.tensor(np.stack([cv2.resize(i, (16, 16), interpolation=cv2.INTER_AREA) for i in imgs]),
                            dtype=torch.float32).reshape(len(imgs), -1) / 127.5 - 1

    torch.manual_seed(0)
    model = torch.nn.Linear(16 * 16 * 3, 2)  # the plug-in: N x A logits, declared attribute names
    model_names = ["Wears_Mask", "wears sunglasses"]
    x, y = feats([crops[k] for k in train]), torch.tensor(table.select(train), dtype=torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(600):  # plain gradient descent (torch.optim's first use imports torch._dynamo: slow)
            model.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
    finally:
        torch.set_num_threads(threads)

    pairs, model_only, data_only = match_attributes(model_names, table.names)
    assert [p[2] for p in pairs] == ["wears_mask", "wears_sunglasses"] and not model_only and not data_only
    labels = table.select(test)[:, [p[1] for p in pairs]]
    pm = face_part_map(tl, (112, 112))
    results, covered = {}, {"mouth_group": [], "eye_group": []}
    all_labels, all_scores = [], []
    for variant in ("clean", "scarf", "rgba_sleep_mask"):
        imgs = []
        for k in test:
            if variant == "clean":
                imgs.append(crops[k])
                mask = np.zeros((112, 112), np.uint8)
            else:
                res = occ[variant](crops[k], tl, rng=rng_for(3, k, variant))
                imgs.append(res.image)
                mask = res.mask
            fr = part_fractions(mask, pm.labels)
            for g in covered:
                covered[g].append(fr[g] >= 0.5)
        with torch.no_grad():
            logits = model(feats(imgs)).numpy()[:, [p[0] for p in pairs]]
        results[variant] = attribute_metrics(labels, logits, ["wears_mask", "wears_sunglasses"])
        all_labels.append(labels)
        all_scores.append(logits)
    clean = results["clean"]["per_attribute"]
    assert clean["wears_mask"]["balanced_accuracy"] > 0.9 and clean["wears_sunglasses"]["balanced_accuracy"] > 0.9
    delta = compare_variants(results)
    # a scarf over the lower face hides the mask but not the sunglasses; an eye mask the reverse
    assert delta["scarf"]["per_attribute"]["wears_mask"]["balanced_accuracy"] < -0.2
    assert delta["scarf"]["per_attribute"]["wears_sunglasses"]["balanced_accuracy"] > -0.1
    assert delta["rgba_sleep_mask"]["per_attribute"]["wears_sunglasses"]["balanced_accuracy"] < -0.2
    by_part = metrics_by_part(np.concatenate(all_labels), np.concatenate(all_scores),
                              ["wears_mask", "wears_sunglasses"], {g: np.array(v) for g, v in covered.items()})
    mg = by_part["mouth_group"]
    assert mg["n_covered"] >= len(test) * 0.8  # the scarf variant covers the mouth group
    assert (mg["covered"]["per_attribute"]["wears_mask"]["balanced_accuracy"]
            < mg["uncovered"]["per_attribute"]["wears_mask"]["balanced_accuracy"] - 0.1)


def hash_unit(s: str) -> float:
    from occbench.seeding import derive_seed

    return derive_seed(0, "split", s) / float(1 << 63)
