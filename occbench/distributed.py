"""Dask distributed execution of sharded synth runs (optional extra ``occbench[dask]``).

``--dask local:N`` starts a ``distributed.LocalCluster`` of N single-threaded worker processes;
``--dask tcp://host:8786`` connects to a running scheduler (dask-jobqueue on SLURM, the Dask
Kubernetes operator, ``dask scheduler`` + ``dask worker`` by hand). Each shard is one task, submitted
with ``retries``: a task whose worker dies (killed, OOM, preempted) is rerun on another worker, and
since a shard is written whole and atomically from its items alone, the output is the same bytes
as a single-machine run. Workers read the source and write the shards themselves, so SOURCE and OUT
must be paths every worker sees (a shared file system).
"""
from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import threading
from pathlib import Path
from typing import Callable, NamedTuple
from urllib.parse import urlparse

from .errors import ConfigError, OccbenchError

DEFAULT_RETRIES = 3
_CALLS = itertools.count()  # task keys stay unique when one session runs several batches
_LOCAL_ONLY_PREFIXES = ("/tmp", "/var/tmp", "/dev/shm", "/run/user")


class WorkerDied(OccbenchError):
    """A task's worker process died on every try (Dask's ``KilledWorker``): the task itself kills it."""


class DaskTarget(NamedTuple):
    kind: str  # "local" | "remote"
    n_workers: int  # local only
    address: str  # remote only


def parse_dask(spec: str) -> DaskTarget:
    """``local:N`` or a scheduler address (``tcp://host:port``, ``tls://…``, or ``host:port``)."""
    s = str(spec).strip()
    if s.startswith("local"):
        _, _, n = s.partition(":")
        try:
            k = int(n) if n else (os.cpu_count() or 1)
        except ValueError:
            k = 0
        if k < 1:
            raise ConfigError(f"--dask {spec!r}: use local:N with N >= 1 worker processes, or a scheduler "
                              "address such as tcp://scheduler:8786")
        return DaskTarget("local", k, "")
    if "://" not in s:
        s = f"tcp://{s}"
    u = urlparse(s)
    if not u.hostname or not u.port:
        raise ConfigError(f"--dask {spec!r}: give a scheduler address such as tcp://scheduler:8786, or local:N")
    return DaskTarget("remote", 0, s)


def _is_local_host(host: str) -> bool:
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    mine = {"127.0.0.1", "::1"}
    try:
        mine |= {ai[4][0] for ai in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        pass
    return all(ipaddress.ip_address(a.split("%")[0]).is_loopback or a in mine for a in addrs)


def check_shared_out(out: str | os.PathLike, target: DaskTarget) -> None:
    """Refuse an OUT that remote workers cannot see: a machine-local folder (/tmp, /dev/shm, ...)
    with a scheduler on another host. Other paths are trusted to be shared (we cannot tell)."""
    if target.kind != "remote":
        return
    host = urlparse(target.address).hostname or ""
    if _is_local_host(host):
        return
    p = str(Path(out).expanduser().resolve())
    for prefix in _LOCAL_ONLY_PREFIXES:
        if p == prefix or p.startswith(prefix + "/"):
            raise ConfigError(f"--out {p} is on this machine only ({prefix}), but the Dask scheduler {target.address} "
                              "is on another host: workers write the shards themselves, so give an OUT on a file "
                              "system every worker mounts (NFS, Lustre, a shared volume)")


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
_MALLOC_TUNED = False


def tune_worker_malloc() -> bool:
    """Undo, in this process, the ``MALLOC_TRIM_THRESHOLD_=65536`` a Dask nanny sets for its worker.

    Setting that variable also freezes glibc's mmap threshold at 128 KiB, so every array above it
    (sprite buffers, float layers) is a fresh mmap, zero-filled page by page and unmapped on free:
    the synth engine then spends ~1.7x the time (``benchmarks/bench_shards.py --n 2000 --malloc``).
    Here arrays up to 16 MiB come from the heap again, and the heap is trimmed above 64 MiB free.
    Called by every Dask task (``run_on_dask``) and by shard tasks in joblib workers; a no-op (False)
    where libc has no ``mallopt``."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, 16 << 20)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20))
    except (OSError, AttributeError):
        ok = False
    _MALLOC_TUNED = ok
    return ok


def _client(target: DaskTarget):
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError("--dask needs dask distributed: pip install 'occbench[dask]'") from e
    if target.kind == "local":
        cluster = LocalCluster(n_workers=target.n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        return Client(cluster), cluster
    try:
        return Client(target.address, timeout="30s"), None
    except OSError as e:
        raise ConfigError(f"cannot reach the Dask scheduler at {target.address}: {e}") from None


class DaskSession:
    """The Dask client of one run. ``start()`` connects (``local:N``: starts the cluster) in a background
    thread, so that it overlaps the caller's own set-up; ``client()`` waits for it; ``close()`` shuts it
    down and restores the caller's environment, in the background with ``wait=False`` (``join()`` waits).

    A LocalCluster's nannies set variables for their workers in this process's ``os.environ``
    (``MALLOC_TRIM_THRESHOLD_``, ``OMP_NUM_THREADS=1`` ...); they are undone as soon as the cluster is up,
    and again on close (a nanny that restarted a worker set them again)."""

    def __init__(self, spec: str | DaskTarget):
        self.target = spec if isinstance(spec, DaskTarget) else parse_dask(spec)
        self._environ = dict(os.environ)
        self._pair: tuple | None = None
        self._error: BaseException | None = None
        self._starter: threading.Thread | None = None
        self._closer: threading.Thread | None = None

    def start(self) -> "DaskSession":
        def connect():
            try:
                self._pair = _client(self.target)
            except BaseException as e:  # re-raised by client()
                self._error = e
            finally:  # the workers are up (or failed to start): they have what the nannies set here
                _restore_environ(self._environ)

        self._starter = threading.Thread(target=connect, name="occbench-dask-start", daemon=True)
        self._starter.start()
        return self

    def client(self):
        if self._starter is None:
            self.start()
        self._starter.join()
        if self._error is not None:
            raise self._error
        return self._pair[0]

    def close(self, wait: bool = True) -> None:
        if self._starter is None or self._closer is not None:
            self.join()
            return
        self._starter.join()

        def shut():
            try:
                if self._pair is not None:
                    client, cluster = self._pair
                    client.close()
                    if cluster is not None:
                        cluster.close()
            finally:
                _restore_environ(self._environ)

        self._closer = threading.Thread(target=shut, name="occbench-dask-close", daemon=True)
        self._closer.start()
        if wait:
            self.join()

    def join(self) -> None:
        if self._closer is not None:
            self._closer.join()

    def reset(self) -> None:
        """Close now; the next ``client()`` connects (starts a cluster) anew. After a failed batch: its
        tasks still running die with the cluster (local) or lose their client (remote), as they did when
        every batch had a cluster of its own, so none of them can still be writing during a retry."""
        self.close(wait=True)
        self._pair, self._error, self._starter, self._closer = None, None, None, None

    def __enter__(self) -> "DaskSession":
        return self.start() if self._starter is None else self

    def __exit__(self, *exc) -> None:
        self.close(wait=True)


def run_on_dask(spec: str | DaskTarget | DaskSession, fn: Callable, shared, tasks: list, *,
                retries: int = DEFAULT_RETRIES, on_done: Callable | None = None,
                on_client: Callable | None = None) -> list:
    """Run ``fn(shared, task)`` for every task on Dask; returns the results in task order.

    ``spec``: a ``DaskSession`` (kept open: the caller closes it; reset when a batch fails), or
    ``local:N`` / an address / a ``DaskTarget`` (a session for this call only). ``shared`` is scattered
    once to every worker. Tasks get ``retries`` retries (a worker that dies mid-task has its task rerun
    elsewhere); ``on_done(result)`` is called in completion order (progress). ``on_client(client)`` is
    called once the cluster is up (tests use it to kill a worker)."""
    if not tasks:
        return []
    if isinstance(spec, DaskSession):
        try:
            return _run_tasks(spec.client(), fn, shared, tasks, retries, on_done, on_client)
        except BaseException:
            spec.reset()
            raise
    with DaskSession(spec) as session:
        return _run_tasks(session.client(), fn, shared, tasks, retries, on_done, on_client)


def _run_tasks(client, fn: Callable, shared, tasks: list, retries: int, on_done, on_client) -> list:
    from distributed import as_completed

    if on_client is not None:
        on_client(client)
    shared_f = client.scatter([shared], broadcast=True)[0]  # a list: a dict would be scattered per key
    tag = f"{os.getpid()}-{id(tasks)}-{next(_CALLS)}"
    futures = [client.submit(_on_worker, fn, shared_f, t, key=f"occbench-task-{i}-{tag}", retries=retries,
                             pure=False) for i, t in enumerate(tasks)]
    index = {f.key: i for i, f in enumerate(futures)}
    results: list = [None] * len(tasks)
    for fut in as_completed(futures):
        try:
            r = fut.result()
        except OccbenchError:
            raise
        except Exception as e:  # KilledWorker after too many deaths, a bug on a worker, ...
            # KilledWorker: the task's worker died on every try; with client-side retries such a task
            # can also come back cancelled ("already forgotten") once its workers are gone
            if {c.__name__ for c in type(e).__mro__} & {"KilledWorker", "CancelledError"}:
                raise WorkerDied(f"a Dask task did not finish: its worker process died ({type(e).__name__}: "
                                 f"{e}); rerun the same command to resume: finished shards are kept") from e
            raise OccbenchError(f"a Dask task failed ({type(e).__name__}: {e}); rerun the same command to "
                                "resume: finished shards are kept") from e
        results[index[fut.key]] = r
        if on_done is not None:
            on_done(r)
    return results


def _on_worker(fn: Callable, shared, task):
    """Every Dask task runs through here: the nanny's malloc setting undone in the worker first."""
    tune_worker_malloc()
    return fn(shared, task)


def _restore_environ(saved: dict) -> None:
    """Undo what starting a LocalCluster leaves in ``os.environ``: its nannies set the variables their
    workers should inherit (``MALLOC_TRIM_THRESHOLD_``, ``OMP_NUM_THREADS=1``, ``PYTHONHASHSEED`` ...)
    in this process and keep them, so every later child of the caller (a ``--jobs 1`` run, DataLoader or
    joblib workers) would inherit them: one thread for torch's ops, and ~1.5x slower synth."""
    for k in [k for k in os.environ if k not in saved]:
        del os.environ[k]
    for k, v in saved.items():
        if os.environ.get(k) != v:
            os.environ[k] = v
