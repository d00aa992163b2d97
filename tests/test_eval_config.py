"""EvalConfig: round trip, validation, and the cheap path checks done before any heavy import."""
from __future__ import annotations

import pytest

from occbench.bench.config import EvalConfig, parse_arch_opts
from occbench.errors import ConfigError, DataNotFoundError


def test_round_trip_and_validation(tmp_path):
    cfg = EvalConfig(model="dlib-resnet-torch", protocol="lfw-occ", data_root=tmp_path, limit=300, folds=10,
                     variants="N-O, O-O", arch_opts={"num_features": 512}, out=tmp_path / "r")
    assert cfg.variants == ("N-O", "O-O") and cfg.data_root == str(tmp_path)
    assert EvalConfig.from_json(cfg.to_json()) == cfg
    for bad in ({"limit": 0}, {"folds": 1}, {"batch_size": 0}, {"device": "tpu"}, {"precision": "fp8"}):
        with pytest.raises(ConfigError):
            EvalConfig(model="m", protocol="p", **bad).validate()
    with pytest.raises(ConfigError, match="unknown eval config fields: colour"):
        EvalConfig.from_dict({"model": "m", "protocol": "p", "colour": 1})


def test_check_paths(tmp_path):
    with pytest.raises(DataNotFoundError, match="model file .*nope.pth not found"):
        EvalConfig(model=str(tmp_path / "nope.pth"), protocol="lfw").check_paths()
    with pytest.raises(DataNotFoundError, match="data root .* is not a folder"):
        EvalConfig(model="dlib-resnet", protocol="lfw", data_root=tmp_path / "absent").check_paths()
    with pytest.raises(DataNotFoundError, match="--masked-list file"):
        EvalConfig(model="dlib-resnet", protocol="mfr2", masked_list=tmp_path / "m.csv").check_paths()
    EvalConfig(model="pkg.module:fn", protocol="lfw").check_paths()  # a factory is not a file
    EvalConfig(model="dlib-resnet-torch", protocol="lfw", data_root=tmp_path).check_paths()


def test_parse_arch_opts():
    assert parse_arch_opts(["num_features=512", "dropout=0.1", "fp16=true", "name=r50", "empty="]) == {
        "num_features": 512, "dropout": 0.1, "fp16": True, "name": "r50", "empty": ""}
    for bad in ("noequals", "1x=2", "=3"):
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            parse_arch_opts([bad])
