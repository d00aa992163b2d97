"""The fast YAML loader reads every shipped file exactly as yaml.safe_load does."""
from pathlib import Path

import pytest
import yaml

from occbench.io import yamlio

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted([*REPO.glob("occluders/*.yaml"), *REPO.glob("protocols/*.yaml"), *REPO.glob("occbench/**/*.yaml")])


def typed(doc):
    """The document with every scalar's type made visible (1 vs 1.0 vs True vs '1')."""
    if isinstance(doc, dict):
        return {typed(k): typed(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [typed(v) for v in doc]
    return (type(doc).__name__, repr(doc))


def test_shipped_files_are_found():
    assert len(SHIPPED) >= 20


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(REPO).as_posix())
def test_same_document_as_pure_python_safe_load(path):
    text = path.read_text(encoding="utf-8")
    assert typed(yamlio.safe_load(text)) == typed(yaml.safe_load(text))


def test_tricky_scalars_and_errors():
    text = "a: 1\nb: 1.0\nc: yes\nd: '1'\ne: 1e-3\nf: .inf\ng: null\nh: 0x1F\ni: 2026-12-01\nj: [1, {k: ~}]\n"
    assert typed(yamlio.safe_load(text)) == typed(yaml.safe_load(text))
    with pytest.raises(yaml.YAMLError):
        yamlio.safe_load("a: [1, 2\nb: 3")
    with pytest.raises(yaml.YAMLError):  # still a safe loader: no Python objects
        yamlio.safe_load("!!python/object/apply:os.system ['true']")
