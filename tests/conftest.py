"""Shared fixtures. Real data lives in ../shared/realdata beside the checkout; tests skip without it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("OCCBENCH_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    """The LFW View 2 folds 1-5 folder (has lfw/<Name>/<Name>_NNNN.jpg and pairs_view2_folds01-05.txt)."""
    p = REALDATA / "lfw-guesswho"
    if not (p / "lfw").is_dir():
        pytest.skip(f"real LFW data not found at {p}")
    return p


@pytest.fixture(scope="session")
def lfw_images(lfw_root) -> Path:
    return lfw_root / "lfw"


@pytest.fixture(scope="session")
def lfw_pairs(lfw_root) -> Path:
    return lfw_root / "pairs_view2_folds01-05.txt"


@pytest.fixture(scope="session")
def rwmfd_root() -> Path:
    p = REALDATA / "rwmfd-masked" / "RWMFD_part_1"
    if not p.is_dir():
        pytest.skip(f"real masked-face data not found at {p}")
    return p
