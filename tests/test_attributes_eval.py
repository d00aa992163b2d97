"""Protocol kind ``attributes`` end to end through the CLI, with a model trained here on labels occbench
derives itself: generated faces wearing occbench's surgical mask and/or sunglasses, the worn occluder
types as attributes. Also the attribute output declaration for every loader, and bad inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from occbench.cli import cli
from occbench.errors import ConfigError
from occbench.recognizers.outputs import OutputMismatchError, OutputSpec, parse_outputs
from attribute_faces import aligned_lfw, dress
from synthetic_faces import synthetic_face

ATTRS = ["wears_mask", "wears_sunglasses", "smiling"]  # "smiling": declared by the model, not labelled
N_TRAIN, N_EVAL = 120, 64
UNKNOWN_ROWS = (3, 10, 17)  # eval rows whose wears_sunglasses label is unknown (-1 / empty)


class AttrNet(torch.nn.Module):
    """16x16 average-pooled pixels -> linear: the embedding is the pooled image, the attributes N x 3 logits."""

    def __init__(self):
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool2d(16)
        self.head = torch.nn.Linear(16 * 16 * 3, len(ATTRS))

    def forward(self, x):
        f = self.pool(x).flatten(1)
        return {"embedding": f, "attributes": self.head(f)}


def attr_model(weights: str):
    """The plug-in (``-m test_attributes_eval:attr_model --arch-opt weights=W``)."""
    m = AttrNet()
    m.load_state_dict(torch.load(weights))
    m.output_spec = {"embedding": "embedding", "attributes": ATTRS}
    return m


def plain_model():
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())


def _faces(n: int, offset: int):
    """(crops, labels (n, 2): wears_mask, wears_sunglasses) of generated 112x112 faces."""
    crops, labels = [], []
    for i in range(offset, offset + n):
        img, wm, ws = dress(synthetic_face(112, seed=i)[0], i, "attr-test")
        crops.append(img)
        labels.append((int(wm), int(ws)))
    return np.stack(crops), np.array(labels, np.float32)


def _train(crops, labels) -> AttrNet:
    torch.manual_seed(0)
    net = AttrNet()
    x = (torch.tensor(crops, dtype=torch.float32).permute(0, 3, 1, 2) - 127.5) / 127.5  # Preprocess() defaults
    y = torch.tensor(labels)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(400):  # plain gradient descent on the two labelled columns
            net.zero_grad()
            logits = net(x)["attributes"][:, :2]
            torch.nn.functional.binary_cross_entropy_with_logits(logits, y).backward()
            with torch.no_grad():
                for p in net.parameters():
                    if p.grad is not None:
                        p -= 0.5 * p.grad
    finally:
        torch.set_num_threads(threads)
    return net


@pytest.fixture(scope="module")
def attr_data(tmp_path_factory):
    from occbench.io.images import encode

    base = tmp_path_factory.mktemp("attr")
    net = _train(*_faces(N_TRAIN, 0))
    weights = base / "attr_net.pt"
    torch.save(net.state_dict(), weights)
    crops, labels = _faces(N_EVAL, 10_000)
    data = base / "data"
    lines = ["path,wears_mask,Wears Sunglasses,Male"]  # names match ignoring case, spaces and '_'
    for i, (crop, (wm, ws)) in enumerate(zip(crops, labels.astype(int))):
        key = f"id{i % 8}/face_{i:03d}.png"
        (data / key).parent.mkdir(parents=True, exist_ok=True)
        (data / key).write_bytes(encode(crop, "png"))
        sg = ("-1" if i % 2 else "") if i in UNKNOWN_ROWS else str(ws)
        lines.append(f"{key},{wm},{sg},{i % 2}")
    (data / "attributes.csv").write_text("\n".join(lines) + "\n")
    prot = base / "attr-test.yaml"  # the built-in protocol with two occluders (a fast test)
    prot.write_text("include: attributes.yaml\nname: attr-test\nocclusion:\n  occluders: [scarf, rgba_sleep_mask]\n")
    return {"base": base, "data": data, "weights": weights, "protocol": prot, "labels": labels}


def _eval_args(d, out, *extra):
    return ["eval", "-m", "test_attributes_eval:attr_model", "--arch-opt", f"weights={d['weights']}",
            "-p", str(d["protocol"]), "--data-root", str(d["data"]), "--out", str(out),
            "--cache-dir", str(d["base"] / "cache"), "--no-progress", "--device", "cpu", *extra]


def test_attributes_end_to_end_cli(attr_data, tmp_path):
    d = attr_data
    out = tmp_path / "results"
    r = CliRunner().invoke(cli, _eval_args(d, out, "--save-scores"))
    assert r.exit_code == 0, r.output
    # matching: the unlabelled model attribute and the unpredicted label are reported, not dropped
    assert "model attributes without labels (not scored): smiling" in r.output
    assert "labelled attributes the model does not predict: Male" in r.output
    res = json.loads((out / "test_attributes_eval-attr_model" / "attr-test.json").read_text())
    info = res["attributes"]
    assert info["matched"] == [{"model": "wears_mask", "label": "wears_mask"},
                               {"model": "wears_sunglasses", "label": "Wears Sunglasses"}]
    assert info["model_only"] == ["smiling"] and info["label_only"] == ["Male"]
    assert res["variant_order"] == ["clean", "occluded", "occluded/scarf@s1.0", "occluded/rgba_sleep_mask@s1.0"]
    clean = res["variants"]["clean"]
    per = clean["attributes"]["per_attribute"]
    assert per["Wears Sunglasses"]["n_unknown"] == len(UNKNOWN_ROWS)
    assert per["Wears Sunglasses"]["n"] == N_EVAL - len(UNKNOWN_ROWS) and per["wears_mask"]["n_unknown"] == 0
    # sensible clean metrics: the model sees what is worn
    assert per["wears_mask"]["balanced_accuracy"] > 0.9 and per["Wears Sunglasses"]["balanced_accuracy"] > 0.9
    assert per["wears_mask"]["ap"] > 0.9 and clean["metrics"]["attr_balanced_accuracy"] > 0.9
    assert clean["n_images"] == N_EVAL and clean["n_fte"] == 0 and clean["metrics"]["fte_rate"] == 0.0
    # an attribute killed by its occluder: a scarf hides the mask, a sleep mask hides the sunglasses
    scarf = res["variants"]["occluded/scarf@s1.0"]["attribute_drop"]["per_attribute"]
    sleep = res["variants"]["occluded/rgba_sleep_mask@s1.0"]["attribute_drop"]["per_attribute"]
    assert scarf["wears_mask"]["balanced_accuracy"] < -0.2
    assert scarf["Wears Sunglasses"]["balanced_accuracy"] > -0.1
    assert sleep["Wears Sunglasses"]["balanced_accuracy"] < -0.2
    assert sleep["wears_mask"]["balanced_accuracy"] > -0.1
    # by part covered (template crops: the mean mesh gives every image its part fractions)
    mg = info["by_part"]["parts"]["mouth_group"]
    assert mg["n_unknown"] == 0 and mg["n_covered"] >= N_EVAL // 2
    assert (mg["covered"]["per_attribute"]["wears_mask"]["balanced_accuracy"]
            < mg["uncovered"]["per_attribute"]["wears_mask"]["balanced_accuracy"] - 0.1)
    eg = res["variants"]["occluded/rgba_sleep_mask@s1.0"]["attributes_by_part"]["parts"]["eye_group"]
    assert eg["n_covered"] > N_EVAL // 2
    # the console table, the metric registry, the plot, the scores
    assert "balanced accuracy per attribute" in r.output and "by part covered" in r.output
    assert {"attr_accuracy", "attr_balanced_accuracy", "attr_ap"} <= set(res["metric_info"])
    assert res["main_score"]["metric"] == "attr_balanced_accuracy"
    assert res["main_score"]["value"] == res["variants"]["occluded"]["metrics"]["attr_balanced_accuracy"]
    assert "attr-test.attr_drop.png" in res["files"]["plots"]
    assert (out / "test_attributes_eval-attr_model" / "attr-test.attr_drop.png").stat().st_size > 5000
    import pandas as pd

    sc = pd.read_parquet(out / "test_attributes_eval-attr_model" / "attr-test.scores" / "clean.parquet")
    assert len(sc) == N_EVAL and {"wears_mask_label", "wears_mask_logit"} <= set(sc.columns)
    # leaderboard rows for attribute runs
    r2 = CliRunner().invoke(cli, ["leaderboard", str(out), "-o", str(tmp_path / "lb.csv")])
    assert r2.exit_code == 0, r2.output
    lb = pd.read_csv(tmp_path / "lb.csv")
    row = lb[(lb.variant == "clean")].iloc[0]
    assert row["attr_balanced_accuracy_pct"] == pytest.approx(100 * clean["metrics"]["attr_balanced_accuracy"])
    assert row["n"] == N_EVAL
    assert "attr bal acc" in (tmp_path / "lb.md").read_text()
    # a rerun reads the attribute logits from the cache: the same results
    r3 = CliRunner().invoke(cli, _eval_args(d, out))
    assert r3.exit_code == 0, r3.output
    again = json.loads((out / "test_attributes_eval-attr_model" / "attr-test.json").read_text())
    assert again["cache"]["attribute_hits"] == again["cache"]["attribute_sets"] == 4
    assert again["variants"] == res["variants"]


@pytest.mark.parametrize("body,msg", [
    ("id0/face_000.png,1,0\nid0/nope.png,1,1\n", "row 3: unknown path 'id0/nope.png'"),
    ("id0/face_000.png,1,0\nid1/face_001.png,2,1\n", "row 3: wears_mask='2' is not binary"),
    ("id0/face_000.png,1,0\nid0/face_000.png,0,0\n", r"row 3: path 'id0/face_000.png' is listed twice"),
])
def test_bad_attribute_files_are_row_numbered_errors(attr_data, tmp_path, body, msg):
    bad = tmp_path / "attributes.csv"
    bad.write_text("path,wears_mask,wears_sunglasses\n" + body)
    r = CliRunner().invoke(cli, _eval_args(attr_data, tmp_path / "out", "--attributes", str(bad)))
    assert r.exit_code == 1 and msg in r.output and "Traceback" not in r.output, r.output


def test_models_without_attributes_or_matching_names_are_refused(attr_data, tmp_path):
    d = attr_data
    args = _eval_args(d, tmp_path / "out")
    args[2] = "test_attributes_eval:plain_model"
    del args[3:5]  # no weights
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "declares no attribute output" in r.output, r.output
    other = tmp_path / "attributes.csv"
    other.write_text("path,Bald\nid0/face_000.png,1\n")
    r = CliRunner().invoke(cli, _eval_args(d, tmp_path / "out", "--attributes", str(other)))
    assert r.exit_code == 1 and "none of the model's attributes" in r.output and "Bald" in r.output, r.output


def test_attributes_flag_only_for_attribute_protocols(attr_data, tmp_path):
    r = CliRunner().invoke(cli, ["eval", "-m", "x", "-p", "lfw", "--attributes",
                                 str(attr_data["data"] / "attributes.csv"), "--data-root", str(tmp_path)])
    assert r.exit_code != 0 and "does not read a attributes file" in r.output, r.output


# ------------------------------------------------------------------------- the output declaration


def test_attribute_output_declaration_and_parsing():
    spec = OutputSpec.from_dict({"embedding": "emb", "attributes": ["a", "b"]})
    assert spec.has_attributes and not spec.has_occlusion and spec.attributes.names == ("a", "b")
    assert OutputSpec.from_dict(spec.to_dict()) == spec
    out = parse_outputs({"emb": np.ones((3, 4)), "attributes": np.zeros((3, 2))}, spec, 3)
    assert out.attributes.shape == (3, 2) and out.attributes.dtype == np.float32
    p = OutputSpec.from_dict({"attributes": {"names": ["a"], "scale": "probabilities"}})
    got = parse_outputs({"embedding": np.ones((2, 4)), "attributes": np.array([[0.5], [0.9]])}, p, 2).attributes
    np.testing.assert_allclose(got[:, 0], [0.0, np.log(9.0)], rtol=1e-5)  # probabilities -> logits
    with pytest.raises(OutputMismatchError, match="3 columns but the model declares 2"):
        parse_outputs({"emb": np.ones((3, 4)), "attributes": np.zeros((3, 3))}, spec, 3)
    with pytest.raises(OutputMismatchError, match="single tensor"):
        parse_outputs(np.ones((3, 4)), spec, 3)
    for bad, why in (({"attributes": []}, "non-empty"), ({"attributes": ["a", "a"]}, "declared twice"),
                     ({"attributes": {"names": ["a"], "scale": "odds"}}, "scale")):
        with pytest.raises(ConfigError, match=why):
            OutputSpec.from_dict(bad)


def _declared_net():
    net = AttrNet()
    net.output_spec = {"embedding": "embedding", "attributes": ATTRS}  # declared on the module, as archs do
    return net


def test_attribute_outputs_through_every_loader(tmp_path, monkeypatch):
    """TorchScript, ONNX, state dict + arch (and the factory, end to end above) all return the logits."""
    from occbench.recognizers import Preprocess, create_recognizer, save_torchscript
    from occbench.recognizers.archs import ARCHS
    from occbench.recognizers.onnx import export_onnx

    torch.manual_seed(0)
    net = _declared_net().eval()
    crops = np.random.default_rng(0).integers(0, 255, (5, 112, 112, 3), dtype=np.uint8)
    x = (torch.tensor(crops, dtype=torch.float32).permute(0, 3, 1, 2) - 127.5) / 127.5
    want = net(x)["attributes"].detach().numpy()
    ts = save_torchscript(net, tmp_path / "a.pt", Preprocess(), "attr")
    ox = export_onnx(net, tmp_path / "a.onnx", Preprocess(), "attr")
    torch.save(net.state_dict(), tmp_path / "a.pth")
    monkeypatch.setitem(ARCHS._items, "test-attr-net", _declared_net)
    for path, arch in ((ts, None), (ox, None), (tmp_path / "a.pth", "test-attr-net")):
        rec = create_recognizer(str(path), arch=arch, device="cpu")
        assert rec.outputs.attributes.names == tuple(ATTRS)
        np.testing.assert_allclose(rec.infer(crops).attributes, want, rtol=1e-4, atol=1e-4)
    flip = create_recognizer(str(ts), device="cpu", preprocess_overrides={"flip_test": True})
    np.testing.assert_allclose(flip.infer(crops).attributes, want, rtol=1e-4, atol=1e-4)  # un-flipped half


def test_unknown_part_coverage_is_counted_with_its_reason(attr_data, tmp_path):
    """5-point landmarks from a file: no face mesh, so no part map; every occluded image's coverage is
    unknown, counted with the manifest's reason, and the metrics are still there."""
    from occbench.face.geometry import ARCFACE_112

    d = attr_data
    keys = [ln.split(",")[0] for ln in (d["data"] / "attributes.csv").read_text().splitlines()[1:]]
    (d["data"] / "five.json").write_text(json.dumps({k: ARCFACE_112.tolist() for k in keys}))
    prot = tmp_path / "attr-five.yaml"
    prot.write_text("include: attributes.yaml\nname: attr-five\nlandmarks: {method: file, path: five.json}\n"
                    "occlusion:\n  occluders: [scarf]\n  breakdown: []\n")
    args = _eval_args(d, tmp_path / "out", "--limit", "12", "--no-plots")
    args[args.index("-p") + 1] = str(prot)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "test_attributes_eval-attr_model" / "attr-five.json").read_text())
    assert res["protocol"]["subset"] == {"limit": 12, "n_selected": 12}
    mg = res["variants"]["occluded"]["attributes_by_part"]["parts"]["mouth_group"]
    assert mg["n_covered"] == mg["n_uncovered"] == 0 and mg["n_unknown"] == 12
    (reason, n), = mg["reasons"].items()
    assert n == 12 and "no face-mesh points" in reason
    assert "part coverage unknown for some images, e.g. 12: no face-mesh points" in r.output
    assert res["variants"]["occluded"]["metrics"]["attr_accuracy"] is not None


def test_published_layouts_read_what_is_on_disk(tmp_path):
    from occbench.bench.attributes import load_attribute_task
    from occbench.bench.protocols import load_protocol

    (tmp_path / "img_align_celeba").mkdir()
    for n in ("000001.jpg", "000003.jpg"):
        (tmp_path / "img_align_celeba" / n).write_bytes(b"x")
    (tmp_path / "list_attr_celeba.txt").write_text(
        "3\nSmiling Eyeglasses\n000001.jpg 1 -1\n000002.jpg -1 -1\n000003.jpg -1 1\n")
    task, table, info = load_attribute_task(load_protocol("celeba-attr"), tmp_path)
    assert task.keys() == ["000001.jpg", "000003.jpg"] and table.names == ["Smiling", "Eyeglasses"]
    assert info["n_labels_without_image"] == 1 and info["labels_without_image_examples"] == ["000002.jpg"]
    assert table.select(task.keys()).tolist() == [[1, 0], [0, 1]]
    (tmp_path / "lfw" / "Ann_Lee").mkdir(parents=True)
    (tmp_path / "lfw" / "Ann_Lee" / "Ann_Lee_0002.jpg").write_bytes(b"x")
    (tmp_path / "lfw_attributes.txt").write_text("# LFW attributes\n#\tperson\timagenum\tMale\n"
                                                 "Ann Lee\t2\t-0.5\nBob Ray\t1\t1.2\n")
    task, table, info = load_attribute_task(load_protocol("lfw-attr"), tmp_path)
    assert task.keys() == ["Ann_Lee/Ann_Lee_0002.jpg"] and info["n_labels_without_image"] == 1
    task, _, _ = load_attribute_task(load_protocol("celeba-attr"), tmp_path, limit=1)
    assert task.keys() == ["000001.jpg"] and task.subset == {"limit": 1, "n_selected": 1}
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="expects images under"):
        load_attribute_task(load_protocol("attributes"), tmp_path / "empty")


@pytest.mark.parametrize("change,msg", [
    ({"data": {"format": "attributes-csv", "images": "."}}, "data.attributes must name"),
    ({"occlusion": {"occluders": ["scarf"], "modes": ["N-O"]}}, "occlusion.modes for attributes"),
    ({"main_score": {"variant": "occluded", "metric": "accuracy"}}, "is not one of attr_accuracy"),
    ({"data": {"format": "lfw-pairs", "images": ".", "attributes": "a.csv"}}, "is for verification protocols"),
])
def test_attribute_protocol_validation(change, msg):
    import copy

    from occbench.bench.protocols import load_protocol, validate_protocol

    raw = copy.deepcopy(load_protocol("attributes").raw)
    raw.update(change)
    with pytest.raises(ConfigError, match=msg):
        validate_protocol(raw)


@pytest.mark.slow  # ~1-2 min: 240 real LFW faces meshed, aligned, dressed, then the shipped protocol on 120
def test_attributes_protocol_on_real_lfw_crops(lfw_images, tmp_path):
    """The shipped ``attributes`` protocol (all its occluders) on aligned LFW crops that wear occbench's
    surgical mask and / or sunglasses; the model is trained here on other identities."""
    from occbench.io.images import encode
    from occbench.seeding import derive_seed

    train, test = ([], []), []
    data = tmp_path / "data"
    lines = ["path,wears_mask,wears_sunglasses"]
    for f, crop in aligned_lfw(sorted(lfw_images.glob("*/*.jpg"))[::15][:240]):
        key = f"{f.parent.name}/{f.stem}.png"
        crop, wm, ws = dress(crop, key, "attr-lfw")
        if derive_seed(0, "split", f.parent.name) % 2:  # split by identity
            train[0].append(crop)
            train[1].append((int(wm), int(ws)))
        else:
            (data / f.parent.name).mkdir(parents=True, exist_ok=True)
            (data / key).write_bytes(encode(crop, "png"))
            lines.append(f"{key},{int(wm)},{int(ws)}")
            test.append(key)
    (data / "attributes.csv").write_text("\n".join(lines) + "\n")
    assert len(train[0]) > 60 and len(test) > 60
    net = _train(np.stack(train[0]), np.array(train[1], np.float32))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "results"
    r = CliRunner().invoke(cli, ["eval", "-m", "test_attributes_eval:attr_model", "--arch-opt",
                                 f"weights={tmp_path / 'w.pt'}", "-p", "attributes", "--data-root", str(data),
                                 "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    print(r.output)  # the measured table (docs/notes/attributes.md quotes it)
    res = json.loads((out / "test_attributes_eval-attr_model" / "attributes.json").read_text())
    per = res["variants"]["clean"]["attributes"]["per_attribute"]
    assert per["wears_mask"]["balanced_accuracy"] > 0.85 and per["wears_sunglasses"]["balanced_accuracy"] > 0.85
    drop = {v: res["variants"][f"occluded/{v}_v1@s1.0"]["attribute_drop"]["per_attribute"]
            for v in ("scarf", "rgba_sleep_mask", "cap")}
    assert drop["scarf"]["wears_mask"]["balanced_accuracy"] < -0.15
    assert drop["rgba_sleep_mask"]["wears_sunglasses"]["balanced_accuracy"] < -0.15
    assert drop["scarf"]["wears_sunglasses"]["balanced_accuracy"] > -0.1
    eg = res["attributes"]["by_part"]["parts"]["eye_group"]
    assert eg["n_unknown"] == 0 and eg["n_covered"] > 0
    assert (eg["covered"]["per_attribute"]["wears_sunglasses"]["balanced_accuracy"]
            < eg["uncovered"]["per_attribute"]["wears_sunglasses"]["balanced_accuracy"])
