"""Where the points of a sweep run: in this process, in a local process pool, or on a Dask cluster.

An executor is a small frozen object; ``meanfield.validation.sweep.run_sweep(...,
executor=...)`` hands it the pending points and writes each result into the one sweep store as
it arrives (only the calling process writes the store: workers return summaries, never stores).

=====================================  ====================================================
``Serial()`` (default)                  one point after another in this process, exactly as
                                        ``run_sweep`` always ran them
``LocalProcesses(workers=N)``           N worker processes of this machine (standard library
                                        ``concurrent.futures``, ``spawn`` start method: JAX is
                                        not fork-safe); no extra dependency
``DaskCluster(workers=N)``              a ``dask.distributed.LocalCluster`` of N one-thread
                                        worker processes, started and closed by the sweep
``DaskCluster(address="tcp://h:8786")`` the workers of a running Dask cluster (its scheduler
                                        address); start workers with ``--nthreads 1`` (JAX
                                        uses the cores of a process itself) and without
                                        Dask's MALLOC_TRIM_THRESHOLD_ (``warn_slow_malloc``)
=====================================  ====================================================

Why Dask (and not Ray) for clusters: the users of sweep stores work with xarray and zarr,
whose parallel stack is Dask (``xr.open_zarr(...).chunk``, ``dask.array``); the same
scheduler, dashboard and deployment tools (``dask-jobqueue`` for SLURM/PBS,
``dask-kubernetes``, ``dask-cloudprovider``) then serve both the sweep and its analysis, and
``distributed`` alone brings worker-loss handling (tasks of a dead worker are rescheduled,
``distributed.scheduler.allowed-failures`` bounds it) without a separate runtime.

A study that runs several sweeps enters the executor once (``with executor: ...``): a
``DaskCluster`` then connects (starts its local cluster) once for all of them, and its workers
keep their compiled programs from one sweep to the next.

Every executor yields ``(position, result)`` pairs in completion order. Points run one per
task, submitted in the sweep's run order (groups of equal compiled shape, cheapest first;
Dask priorities keep that order): a worker process keeps the programs it compiled, so it
compiles each shape at most once, a kill loses only the points in flight, and finished points
stream into the store. A point whose worker dies is run again (Dask reschedules it; the
process pool is restarted and the points without a result are resubmitted); a result already
received is never recomputed (its Dask future is released at once).

Programs that use a process executor must guard their entry point with
``if __name__ == "__main__":`` (``spawn`` re-imports the main module in each worker).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from meanfield.particles._validate import check_bool, check_int, named_arguments

LOG = logging.getLogger(__name__)
DEFAULT_RESTARTS = 3  # process-pool breakages tolerated in one sweep, like Dask's allowed-failures

# Dask's nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536, so that freed memory goes
# back to the system at once. Any such glibc variable also fixes the threshold above which
# malloc maps fresh pages from the system (128 KiB) instead of letting it grow with the
# program's buffers: XLA:CPU's buffers are then mapped, zero-filled and unmapped at every step,
# and the full luo-diagram grid ran 2.8x slower on two Dask workers
# (``benchmarks/bench_diagram.py --malloc-trim``). The local cluster's workers are started
# without it (None unsets a Dask environment setting).
UNSET_WORKER_ENVIRON = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
# glibc variables that freeze its mmap threshold (mallopt(3)); a worker that has one is slow
MALLOC_ENVIRON = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                  "MALLOC_MMAP_MAX_")
DASK_MALLOC_FIX = ("Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 by default: start the workers "
                   "with the Dask setting distributed.nanny.pre-spawn-environ."
                   "MALLOC_TRIM_THRESHOLD_: null (a YAML file in the workers' Dask config "
                   "directory) or with dask worker --no-nanny")
INHERITED_MALLOC_FIX = ("The workers inherit it from this process: unset it before Python "
                        "starts (a Dask LocalCluster started in this process with Dask's "
                        "default settings sets MALLOC_TRIM_THRESHOLD_ here too)")


def pin_to_cores(index: int, workers: int) -> frozenset[int]:
    """Restrict this process, every thread of it, to worker ``index``'s share of the cores.

    With ``workers`` local workers on C usable cores (C >= workers), worker i gets cores
    [i C / workers, (i + 1) C / workers) of them. XLA:CPU sizes its thread pools by the cores
    a process may use, so each worker then computes on its own cores instead of every
    worker's threads competing for all of them (``benchmarks/bench_workers.py`` measures the
    gain). Nothing is changed with more workers than cores, or where the platform has no
    affinity.

    A point's results are the same bits on any number of cores: the engine's sums over
    particles go chunk by chunk in chunk order, and per neuron first within a chunk, never
    as one flat reduction that XLA:CPU could split over its threads (tests/test_cores.py).

    Returns:
        The cores this process may use afterwards.
    """
    if not hasattr(os, "sched_setaffinity"):
        return frozenset(range(os.cpu_count() or 1))
    cores = sorted(os.sched_getaffinity(0))
    if workers <= len(cores):
        index %= workers
        share = set(cores[index * len(cores) // workers:(index + 1) * len(cores) // workers])
        # threads started later inherit their creator's cores
        for thread in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else [0]:
            try:
                os.sched_setaffinity(int(thread), share)
            except OSError:  # a thread that ended meanwhile
                pass
    return frozenset(os.sched_getaffinity(0))


def _pin_pool_worker(counter, workers: int) -> None:
    """``ProcessPoolExecutor`` initializer: the n-th worker started takes share n."""
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    pin_to_cores(index, workers)


@named_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class Serial:
    """Run the points one after another in the calling process (today's ``run_sweep``)."""

    in_process = True

    def __enter__(self) -> "Serial":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def describe(self) -> str:
        return "serial"

    def map_unordered(self, fn: Callable, calls: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        """``(k, fn(*calls[k]))`` for k = 0, 1, ... in order."""
        for position, call in enumerate(calls):
            yield position, fn(*call)


@named_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class LocalProcesses:
    """A pool of worker processes on this machine (``concurrent.futures.ProcessPoolExecutor``
    with the ``spawn`` start method).

    Attributes:
        workers: number of worker processes (>= 1).
        restarts: how often a pool broken by a dead worker is restarted (its points without a
            result resubmitted) before the sweep fails.
        pin_cores: give each worker its own share of the cores (``pin_to_cores``): faster
            when the workers fill the machine, and the same results; False lets every
            worker use every core (e.g. beside other work that is pinned to some cores).
    """

    workers: int = 2
    restarts: int = DEFAULT_RESTARTS
    pin_cores: bool = True
    in_process = False

    def __post_init__(self):
        object.__setattr__(self, "workers", check_int("workers", self.workers, minimum=1))
        object.__setattr__(self, "restarts", check_int("restarts", self.restarts, minimum=0))
        check_bool("pin_cores", self.pin_cores)

    def __enter__(self) -> "LocalProcesses":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def describe(self) -> str:
        return f"local processes ({self.workers} workers)"

    def map_unordered(self, fn: Callable, calls: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        """``(k, fn(*calls[k]))`` pairs in completion order."""
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        if calls:  # the workers inherit this process's environment
            inherited = malloc_environ()
            warn_slow_malloc({f"worker {k}": inherited for k in range(self.workers)},
                             INHERITED_MALLOC_FIX)
        remaining = set(range(len(calls)))
        breakages = 0
        while remaining:
            context = multiprocessing.get_context("spawn")
            pin = ({"initializer": _pin_pool_worker,
                    "initargs": (context.Value("i", 0), self.workers)} if self.pin_cores else {})
            pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context, **pin)
            try:
                pending = {pool.submit(fn, *calls[k]): k for k in sorted(remaining)}
                broken = False
                while pending and not broken:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        position = pending.pop(future)
                        try:
                            result = future.result()
                        except BrokenProcessPool:
                            broken = True
                            continue
                        remaining.discard(position)
                        yield position, result
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
            if broken:
                breakages += 1
                if breakages > self.restarts:
                    raise RuntimeError(
                        f"a worker process died {breakages} times (restarts={self.restarts}); "
                        f"{len(remaining)} points have no result")
                LOG.warning("a worker process died: restarting the pool and resubmitting the %d "
                            "points without a result", len(remaining))


@named_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class DaskCluster:
    """The workers of a Dask distributed cluster.

    Attributes:
        address: scheduler address of a running cluster (e.g. ``"tcp://10.0.0.5:8786"``);
            None starts a ``LocalCluster`` of ``workers`` one-thread worker processes for the
            sweep and closes it afterwards.
        workers: worker processes of the local cluster (default: the number of cores); must
            be None with an ``address`` (the cluster has its own workers).
        timeout: seconds to wait for the connection to the scheduler.
        pin_cores: give each worker of the local cluster its own share of the cores
            (``pin_to_cores``); the workers of a running cluster are left as they are.

    The local cluster's workers start without Dask's MALLOC_TRIM_THRESHOLD_ (also when a Dask
    config sets it: ``UNSET_WORKER_ENVIRON``); workers that still have such a variable (a
    running cluster's, or inherited from this process) are named in a warning.
    """

    address: str | None = None
    workers: int | None = None
    timeout: float = 30.0
    pin_cores: bool = True
    in_process = False
    # the client (and local cluster) of an open ``with`` block
    _session: dict = dataclasses.field(default_factory=dict, init=False, repr=False,
                                       compare=False)

    def __post_init__(self):
        if self.address is not None and (not isinstance(self.address, str) or not self.address):
            raise ValueError(f"address={self.address!r} is not allowed; give a scheduler address "
                             "such as 'tcp://127.0.0.1:8786', or None for a local cluster")
        if self.workers is not None:
            if self.address is not None:
                raise ValueError(f"workers={self.workers!r} is not allowed with "
                                 f"address={self.address!r}: a running cluster has its own "
                                 "workers (give one or the other)")
            object.__setattr__(self, "workers", check_int("workers", self.workers, minimum=1))
        if (not isinstance(self.timeout, (int, float)) or isinstance(self.timeout, bool)
                or not self.timeout > 0):
            raise ValueError(f"timeout={self.timeout!r} is not allowed; it must be a number of "
                             "seconds > 0")
        check_bool("pin_cores", self.pin_cores)
        _require_distributed()

    def describe(self) -> str:
        if self.address is not None:
            return f"dask cluster at {self.address}"
        return f"dask local cluster ({self.workers or os.cpu_count()} workers)"

    def __enter__(self) -> "DaskCluster":
        """Connect (start the local cluster) once for every sweep run inside the block, so its
        workers keep their compiled programs from one sweep to the next."""
        if not self._session:
            self._session.update(self._connect())
        return self

    def __exit__(self, *exc) -> None:
        session = dict(self._session)
        self._session.clear()
        if session:
            _close(**session)

    def _connect(self) -> dict:
        import dask
        from distributed import Client, LocalCluster

        # set_as_default=False: xarray / dask computations of the caller (loading the store
        # it wrote, on its own file system) stay on its local scheduler
        if self.address is not None:
            client = Client(self.address, timeout=self.timeout, set_as_default=False)
            warn_slow_malloc(worker_malloc_environs(client), DASK_MALLOC_FIX)
            return {"client": client, "cluster": None}
        workers = self.workers or os.cpu_count()
        with dask.config.set({UNSET_WORKER_ENVIRON: None}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0")
        client = Client(cluster, timeout=self.timeout, set_as_default=False)
        warn_slow_malloc(worker_malloc_environs(client), INHERITED_MALLOC_FIX)
        if self.pin_cores:
            from distributed import WorkerPlugin

            class PinToCores(WorkerPlugin):  # pickled by value: defined where distributed is
                def setup(self, worker):
                    pin_to_cores(int(worker.name), workers)

            client.register_plugin(PinToCores(), name="meanfield-pin-to-cores")
        return {"client": client, "cluster": cluster}

    def map_unordered(self, fn: Callable, calls: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        """``(k, fn(*calls[k]))`` pairs in completion order; one task per call, submitted with
        decreasing priority so the workers take them in order. Outside a ``with`` block the
        connection (local cluster) is opened and closed here."""
        if not calls:
            return
        from distributed import as_completed

        own = not self._session
        session = self._connect() if own else self._session
        client = session["client"]
        try:
            token = uuid.uuid4().hex[:12]  # keys unique on a long-lived cluster
            futures = [client.submit(fn, *call, key=f"{getattr(fn, '__name__', 'point')}-{k}-"
                                     f"{token}", priority=-k, pure=False)
                       for k, call in enumerate(calls)]
            positions = {future.key: k for k, future in enumerate(futures)}
            results = as_completed(futures, with_results=True, loop=client.loop)
            del futures  # as_completed drops each future once done: nothing keeps a result
            try:
                for future, result in results:
                    position = positions[future.key]
                    future.release()  # a finished point must not be recomputed if its worker dies
                    del future
                    yield position, result
            finally:
                client.cancel(list(results.futures))
        finally:
            if own:
                _close(**session)


def malloc_environ() -> dict[str, str]:
    """This process's glibc variables that freeze malloc's mmap threshold (``MALLOC_ENVIRON``;
    none where the C library is not glibc, which does not read them)."""
    import platform

    if platform.libc_ver()[0] != "glibc":
        return {}
    return {name: os.environ[name] for name in MALLOC_ENVIRON if name in os.environ}


def worker_malloc_environs(client) -> dict[str, dict[str, str]]:
    """{worker address: its ``malloc_environ()``} of a Dask cluster's workers; a worker that
    cannot run it (e.g. without meanfield) is left out: its points fail with their own
    error. The check only advises: if the cluster cannot be asked at all, it is skipped."""
    try:
        results = client.run(malloc_environ, on_error="return")
    except Exception as exc:  # never fail a sweep over advice
        LOG.warning("could not read the workers' malloc settings: %s: %s", type(exc).__name__,
                    exc)
        return {}
    return {worker: env for worker, env in results.items() if isinstance(env, dict)}


def warn_slow_malloc(environments: dict[str, dict[str, str]], fix: str) -> None:
    """Warn if workers run with a ``MALLOC_ENVIRON`` variable (their steps are then several
    times slower, see ``UNSET_WORKER_ENVIRON``).

    Args:
        environments: {worker: its ``malloc_environ()``}.
        fix: how to start the workers without it (the end of the message).
    """
    found = {worker: env for worker, env in environments.items() if env}
    if found:
        names = ", ".join(sorted({name for env in found.values() for name in env}))
        warnings.warn(
            f"{len(found)} of the {len(environments)} workers run with {names} set: glibc "
            "then maps and unmaps XLA's buffers at every step, and the points run several "
            f"times slower (with the same results). {fix}", RuntimeWarning, stacklevel=4)


def _close(client, cluster) -> None:
    """Close a client and its local cluster; every result is in by then, so a slow shutdown
    (workers killed after the nanny's timeout) is logged, not raised."""
    try:
        client.close()
        if cluster is not None:
            cluster.close()
    except (TimeoutError, OSError) as exc:
        LOG.warning("closing the Dask cluster: %s: %s", type(exc).__name__, exc)


Executor = Serial | LocalProcesses | DaskCluster
EXECUTORS = (Serial, LocalProcesses, DaskCluster)


def _require_distributed() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ImportError("DaskCluster needs dask.distributed: pip install "
                          "'meanfield-relu[distributed]'") from None


def check_executor(executor) -> Executor:
    """``executor`` itself if it is one of ``EXECUTORS`` (None: ``Serial()``)."""
    if executor is None:
        return Serial()
    if not isinstance(executor, EXECUTORS):
        raise ValueError(f"executor={executor!r} is not allowed; pass Serial(), "
                         "LocalProcesses(workers=N) or DaskCluster(address=None, workers=N) from "
                         "meanfield.validation.executors")
    return executor


def executor_from_options(scheduler: str | None = None, workers: int | None = None) -> Executor:
    """The executor of the command-line options ``--scheduler ADDRESS`` / ``--workers N``.

    Neither: ``Serial()``; ``--scheduler``: that Dask cluster; ``--workers N`` alone: a Dask
    ``LocalCluster`` of N workers.
    """
    if scheduler is not None and workers is not None:
        raise ValueError("--workers is not allowed with --scheduler: a running cluster has its "
                         "own workers (give one or the other)")
    if scheduler is not None:
        return DaskCluster(address=scheduler)
    if workers is None:
        return Serial()
    check_int("--workers", workers, minimum=1)
    return DaskCluster(workers=workers)
