"""Bank sprites shared by a run's processes (OUT/.synth/sprites): same bytes with or without the store."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from occbench.distributed import tune_worker_malloc
from occbench.synth import pipeline as pl
from occbench.synth.occluders import base as occ_base
from occbench.synth.occluders import _SHARED
from occbench.synth.pipeline import SynthConfig, run_synth
from occbench.synth.sprite_store import SpriteStore
from run_outputs import output_files
from synthetic_faces import write_faces

OCCLUDERS = ("cloth_mask", "sunglasses", "hand")  # hand: skin matched to the face, never stored


def _forget_in_memory_caches():
    """As a fresh process: no drawn sprite, no cached worker."""
    _SHARED.clear()
    pl._WORKER_CACHE.clear()


def _run(src: Path, out: Path, bank: int = 8, jobs: int = 1):
    _forget_in_memory_caches()
    run_synth(SynthConfig(src=str(src), out=str(out), occluders=OCCLUDERS, bank=bank, seed=3, jobs=jobs,
                          overwrite=True), progress=False)
    return output_files(out)


def _stored(out: Path) -> list[Path]:
    return sorted((out / ".synth" / "sprites").rglob("*.npy"))


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    write_faces(root / "src", 12, 112, "jpg")
    return root / "src"


def test_a_run_from_stored_sprites_is_byte_identical_and_draws_no_bank_sprite(src, tmp_path, monkeypatch):
    first = _run(src, tmp_path / "out")
    stored = _stored(tmp_path / "out")
    assert stored, "a bank run stores its sprites"
    drawn = []
    real = occ_base.Occluder.draw_sprite

    def counting(self, *a, **kw):
        drawn.append(self.name)
        return real(self, *a, **kw)

    monkeypatch.setattr(occ_base.Occluder, "draw_sprite", counting)
    again = _run(src, tmp_path / "out")  # same OUT, same fingerprint: every bank sprite comes from the store
    assert again == first
    assert "cloth_mask" not in drawn and "sunglasses" not in drawn
    assert set(drawn) <= {"hand"}  # drawn from the face's own skin tone: not a bank look


def test_corrupt_or_foreign_sprite_files_are_drawn_again(src, tmp_path):
    first = _run(src, tmp_path / "out")
    stored = _stored(tmp_path / "out")
    stored[0].write_bytes(b"\x93NUMPY garbage")
    np.save(stored[1], np.zeros((3, 3, 4), np.uint8))  # a valid array of the wrong shape
    stored[2].write_bytes(stored[2].read_bytes() + b"\0" * (1 << 20))  # larger than the sprite can need
    assert _run(src, tmp_path / "out") == first


def test_jobs_2_share_the_store_and_match_jobs_1(src, tmp_path):
    one = _run(src, tmp_path / "one")
    two = _run(src, tmp_path / "two", jobs=2)
    assert one == two
    assert {p.name for p in _stored(tmp_path / "one")} == {p.name for p in _stored(tmp_path / "two")}


def test_no_store_without_a_bank(src, tmp_path):
    _run(src, tmp_path / "out", bank=0)
    assert not (tmp_path / "out" / ".synth" / "sprites").exists()


def test_store_never_recreates_a_removed_out(tmp_path):
    store = SpriteStore.for_run(tmp_path / "gone", "f" * 64)
    path = store.path("d", "{}", 1.0, 0.1, (0, 0, 2, 2))
    store.save(path, np.zeros((2, 2, 4), np.uint8))  # OUT/.synth does not exist: skipped, not created
    assert not (tmp_path / "gone").exists()
    (tmp_path / "gone" / ".synth").mkdir(parents=True)
    store.save(path, np.full((2, 2, 4), 7, np.uint8))
    assert store.load(path, (2, 2, 4)).tolist() == np.full((2, 2, 4), 7, np.uint8).tolist()
    assert store.load(path, (2, 3, 4)) is None
    assert not list(path.parent.glob(".*.tmp"))


def test_tune_worker_malloc_is_idempotent():
    assert tune_worker_malloc() in (True, False)
    assert tune_worker_malloc() == tune_worker_malloc()


def test_an_overwrite_with_another_configuration_drops_the_old_sprites(src, tmp_path):
    _run(src, tmp_path / "out", bank=8)
    old = {p.parent.name for p in _stored(tmp_path / "out")}
    _run(src, tmp_path / "out", bank=4)
    new = {p.parent.name for p in _stored(tmp_path / "out")}
    assert new and not (old & new)
    shutil.rmtree(tmp_path / "out")


def test_temp_files_of_a_killed_sprite_write_are_swept_at_the_next_run(src, tmp_path):
    first = _run(src, tmp_path / "out")
    stored = _stored(tmp_path / "out")
    leftover = stored[0].with_name(f".{stored[0].name}.99999.tmp")
    leftover.write_bytes(b"half a sprite")
    assert _run(src, tmp_path / "out") == first
    assert not leftover.exists()


def test_the_store_stops_saving_at_its_cap(tmp_path):
    (tmp_path / ".synth").mkdir()
    sprite = np.full((32, 32, 4), 9, np.uint8)  # 4,096 bytes + header
    store = SpriteStore(tmp_path / ".synth" / "sprites", limit_bytes=3 * (sprite.nbytes + 128))
    paths = [store.path("d", f'{{"i": {i}}}', 1.0, 0.1, (0, 0, 32, 32)) for i in range(5)]
    for p in paths:
        store.save(p, sprite)
    assert [p.exists() for p in paths] == [True, True, True, False, False]
    assert store.load(paths[0], sprite.shape).tolist() == sprite.tolist()
    again = SpriteStore(store.root, limit_bytes=3 * (sprite.nbytes + 128))  # another process: scans the folder
    again.save(paths[4], sprite)
    assert not paths[4].exists()


def test_the_cap_comes_from_the_environment(monkeypatch):
    from occbench.synth.sprite_store import DEFAULT_LIMIT_MB, LIMIT_ENV, store_limit_bytes

    monkeypatch.delenv(LIMIT_ENV, raising=False)
    assert store_limit_bytes() == DEFAULT_LIMIT_MB << 20
    monkeypatch.setenv(LIMIT_ENV, "0.5")
    assert store_limit_bytes() == 1 << 19
    for bad in ("-1", "nan", "lots"):
        monkeypatch.setenv(LIMIT_ENV, bad)
        assert store_limit_bytes() == DEFAULT_LIMIT_MB << 20


def test_a_run_with_the_store_off_is_byte_identical(src, tmp_path, monkeypatch):
    from occbench.synth.sprite_store import LIMIT_ENV

    first = _run(src, tmp_path / "on")
    monkeypatch.setenv(LIMIT_ENV, "0")
    assert _run(src, tmp_path / "off") == first
    assert not _stored(tmp_path / "off")
