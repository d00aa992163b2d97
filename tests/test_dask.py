"""Sharded synth on Dask distributed: same bytes as one machine, a killed worker's shard is retried."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from occbench.distributed import DaskTarget, check_shared_out, parse_dask
from occbench.errors import ConfigError

distributed = pytest.importorskip("distributed", reason="dask distributed is an optional extra (occbench[dask])")


def test_parse_dask():
    assert parse_dask("local:3") == DaskTarget("local", 3, "")
    assert parse_dask("tcp://sched:8786") == DaskTarget("remote", 0, "tcp://sched:8786")
    assert parse_dask("sched:8786").address == "tcp://sched:8786"
    for bad in ("local:0", "local:x", "tcp://nohost", "sched"):
        with pytest.raises(ConfigError):
            parse_dask(bad)


def test_local_only_out_is_refused_with_a_remote_scheduler(tmp_path):
    with pytest.raises(ConfigError, match="every worker mounts"):
        check_shared_out("/tmp/x", parse_dask("tcp://192.0.2.10:8786"))  # TEST-NET: never this machine
    check_shared_out("/tmp/x", parse_dask("tcp://127.0.0.1:8786"))  # same machine: fine
    check_shared_out("/tmp/x", parse_dask("local:2"))
    check_shared_out("/srv/shared/out", parse_dask("tcp://192.0.2.10:8786"))  # cannot tell: trusted


@pytest.mark.slow
def test_dask_local_cluster_with_a_killed_worker_is_byte_identical(tmp_path, monkeypatch):
    from occbench import distributed as occ_dist
    from occbench.synth.occluders import list_occluders
    from occbench.synth.pipeline import SynthConfig
    from occbench.synth.sharded import run_synth_sharded
    from synthetic_faces import write_faces
    from run_outputs import output_files

    src = tmp_path / "src"
    write_faces(src, 32, 112, "jpg")
    occ = tuple(list_occluders()[:3])

    def cfg(out, **kw):
        return SynthConfig(src=str(src), out=str(out), occluders=occ, seed=2, clean_ratio=0.2, **kw)

    run_synth_sharded(cfg(tmp_path / "one"), "rec", 2, progress=False)

    killed = []
    real_client = occ_dist._client

    def client_with_a_killer(target):
        client, cluster = real_client(target)

        def kill_a_busy_worker():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not killed:
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:  # mid-run: a worker is rendering a shard (16 shards, so some are always left)
                    pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                time.sleep(0.05)

        threading.Thread(target=kill_a_busy_worker, daemon=True).start()
        return client, cluster

    monkeypatch.setattr(occ_dist, "_client", client_with_a_killer)
    s = run_synth_sharded(cfg(tmp_path / "dask"), "rec", 2, dask="local:2", progress=False)
    assert killed, "no worker was killed: the test did not exercise a retry"
    assert s.processed == 32
    assert output_files(tmp_path / "dask") == output_files(tmp_path / "one")


def test_a_local_cluster_leaves_the_callers_environment_as_it_was():
    """distributed's nannies put MALLOC_TRIM_THRESHOLD_, OMP_NUM_THREADS=1, PYTHONHASHSEED ... into the
    parent's os.environ and keep them: every later child (a --jobs 1 run, DataLoader workers) inherited them."""
    import operator
    import os

    pytest.importorskip("distributed")
    from occbench.distributed import run_on_dask

    before = dict(os.environ)
    assert run_on_dask("local:1", operator.add, 10, [1, 2]) == [11, 12]
    assert dict(os.environ) == before


def test_a_session_runs_several_batches_and_closes_in_the_background():
    import operator

    from occbench.distributed import DaskSession, run_on_dask

    before = dict(os.environ)
    session = DaskSession("local:1").start()  # the cluster starts in a thread; this one goes on
    assert session.target == DaskTarget("local", 1, "")
    assert run_on_dask(session, operator.add, 10, [1, 2]) == [11, 12]
    assert run_on_dask(session, operator.mul, 3, [1, 2, 5]) == [3, 6, 15]  # same cluster, new task keys
    assert dict(os.environ) == before  # undone as soon as the cluster was up
    session.close(wait=False)
    session.join()
    assert dict(os.environ) == before
    assert not [t for t in threading.enumerate() if t.name.startswith("occbench-dask")]


def test_a_failing_run_closes_the_cluster_it_started(tmp_path):
    from occbench.errors import DataNotFoundError
    from occbench.synth.pipeline import SynthConfig
    from occbench.synth.sharded import run_synth_sharded

    before = dict(os.environ)
    with pytest.raises((ConfigError, DataNotFoundError)):
        run_synth_sharded(SynthConfig(src=str(tmp_path / "missing"), out=str(tmp_path / "out")), "rec", 4,
                          dask="local:1", progress=False)
    assert dict(os.environ) == before
    assert not [t for t in threading.enumerate() if t.name.startswith("occbench-dask")]


def _fail(_shared, task):
    from occbench.errors import OccbenchError

    raise OccbenchError(f"task {task} failed")


def test_a_failed_batch_closes_its_cluster_before_the_session_goes_on():
    """A failed batch's other tasks may still be running: the cluster goes with it (as when every batch had
    its own), and the next batch gets a new one, so no stray task can write during a retry."""
    import operator

    from occbench.distributed import DaskSession, run_on_dask
    from occbench.errors import OccbenchError

    before = dict(os.environ)
    with DaskSession("local:1") as session:
        first = session.client().scheduler.address
        with pytest.raises(OccbenchError, match="failed"):
            run_on_dask(session, _fail, None, [1, 2])
        assert session._pair is None  # closed, not left running
        assert run_on_dask(session, operator.add, 1, [1]) == [2]
        assert session.client().scheduler.address != first
    assert dict(os.environ) == before


def test_files_format_on_dask_is_byte_identical(tmp_path, monkeypatch):
    from occbench import distributed
    from occbench.synth.pipeline import SynthConfig, run_synth
    from synthetic_faces import write_faces
    from run_outputs import output_files

    src = tmp_path / "src"
    write_faces(src, 24, 112, "jpg")
    occ = ("block_solid", "rgba_phone", "sunglasses")  # built in: Dask workers know only those (and plug-ins)

    def cfg(out, **kw):
        return SynthConfig(src=str(src), out=str(out), occluders=occ, seed=5, clean_ratio=0.2, **kw)

    ran = []
    real = distributed.run_on_dask

    def counting(spec, fn, shared, tasks, **kw):
        ran.append(len(tasks))
        return real(spec, fn, shared, tasks, **kw)

    one = run_synth(cfg(tmp_path / "one"), progress=False)
    monkeypatch.setattr(distributed, "run_on_dask", counting)
    two = run_synth(cfg(tmp_path / "dask", dask="local:2"), progress=False)
    assert sum(ran) == 24  # one-image batches here (24 images): every image went through Dask
    assert two.processed == one.processed == 24
    assert output_files(tmp_path / "dask") == output_files(tmp_path / "one")
