"""Sweeps on executors (meanfield.validation.executors): a two-worker localhost Dask cluster and a
local process pool write the store of the serial sweep (every variable but wall times), also
when a worker is SIGKILLed mid-sweep (its point is rescheduled, no finished point is
recomputed); a float32 point does not depend on JAX's process-wide x64 flag; bad input."""

import logging
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter

import jax
import numpy as np
import pytest
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin

from meanfield import schema
from meanfield.store import read_progress
from meanfield.validation import executors as ex
from meanfield.validation import run_study
from meanfield.validation.executors import (DaskCluster, LocalProcesses, Serial, check_executor,
                                            executor_from_options)
from meanfield.validation import sweep as sweep_module
from meanfield.validation.sweep import (Summary, Sweep, WorkerVersionError, build_configs,
                                        run_order, run_point, run_point_in_worker, run_sweep)

# float64 and float32 points in one sweep: a worker runs both, in either order
TINY = Sweep(axes={"precision": ("float64", "float32"), "seed": (0, 1, 2, 3),
                   "gamma": (0.5, 1.75)},
             fixed={"width": 40, "n_saves": 40}, summary=Summary(density_times=3, particles=4),
             name="tiny")
KILL_TIMEOUT_S = 3600.0  # a bound only: the watcher stops when the sweep is complete


@pytest.fixture(scope="module")
def serial():
    return run_sweep(TINY, progress=False)


class Transitions(SchedulerPlugin):
    """Every task state transition the scheduler makes, as (key, start, finish)."""

    name = "test-transitions"

    def __init__(self):
        self.log = []

    def transition(self, key, start, finish, *args, **kwargs):
        self.log.append((key, start, finish))

    def count(self, finish: str) -> dict:
        out = {}
        for key, _, f in self.log:
            if f == finish:
                out[key] = out.get(key, 0) + 1
        return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two one-thread worker processes on localhost (scheduler in this process). The workers
    share a JAX compilation cache, so the worker restarted after a kill loads its programs."""
    cache = str(tmp_path_factory.mktemp("jax-cache"))
    env = {"JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    import dask

    with dask.config.set({ex.UNSET_WORKER_ENVIRON: None}):  # as DaskCluster starts its own
        local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                             dashboard_address=":0", env=env)
    with local, Client(local, set_as_default=False) as client:
        plugin = Transitions()
        local.scheduler.add_plugin(plugin)
        yield local, client, plugin


def assert_same_store(got, want):
    assert set(got.data_vars) == set(want.data_vars)
    for name in want.data_vars:
        if name != "wall_time":
            np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)
    for name in want.coords:
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)
    assert got.attrs["compile_groups"] == want.attrs["compile_groups"]
    assert bool(got.done.all())


def kill_after_first_result(path: str, pick) -> dict:
    """Start a thread that, once the store at ``path`` has a finished point (and unfinished
    ones), SIGKILLs the worker process whose pid ``pick()`` names (polled until it names one).
    Returns the dict the thread fills: the pid, the points finished then and their wall times."""
    record = {}

    def watch():
        deadline = time.time() + KILL_TIMEOUT_S
        while time.time() < deadline:
            done = (read_progress(path) or {}).get("done", [])
            if len(done) >= TINY.size:
                return
            pid = pick() if done else None
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                record.update(pid=pid, done=set(done), wall=read_wall(path))
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    record["thread"] = thread
    return record


def read_wall(path):
    import zarr

    return zarr.open_group(path, mode="r")["wall_time"][...].reshape(-1)


# ----------------------------------------------------------------------------- Dask

@pytest.mark.slow
def test_two_dask_workers_write_the_serial_store(serial, cluster, tmp_path):
    local, client, plugin = cluster
    path = str(tmp_path / "dask.zarr")
    executor = DaskCluster(address=local.scheduler_address)
    with executor:  # one connection for both sweeps
        got = run_sweep(TINY, path, progress=False, executor=executor)
        assert_same_store(got, serial)
        assert got.attrs["points_run_last_session"] == TINY.size
        assert got.attrs["executor"] == f"dask cluster at {local.scheduler_address}"
        assert len(set(client.run(os.getpid).values())) == 2  # two worker processes
        # resumed, nothing is left to run: no task is submitted
        before = len(plugin.log)
        again = run_sweep(TINY, path, progress=False, executor=executor)
        assert again.attrs["points_run_last_session"] == 0 and len(plugin.log) == before


@pytest.mark.slow
def test_dask_worker_killed_mid_sweep(serial, cluster, tmp_path):
    local, client, plugin = cluster
    client.wait_for_workers(2)
    path = str(tmp_path / "killed.zarr")
    pids = client.run(os.getpid)

    def busy():  # the pid of a worker running a point now
        return next((pids[w] for w, keys in client.processing().items() if keys and w in pids),
                    None)

    start = len(plugin.log)
    record = kill_after_first_result(path, busy)
    got = run_sweep(TINY, path, progress=False,
                    executor=DaskCluster(address=local.scheduler_address))
    record["thread"].join()
    assert "pid" in record, "the kill should land mid-sweep"
    assert len(record["done"]) < TINY.size
    assert_same_store(got, serial)
    # scheduler's view: task k is the k-th point of the run order (key NAME-k-TOKEN)
    order = [index for group in run_order(TINY, build_configs(TINY)) for index in group]
    flat = {}
    started, completed = Counter(), Counter()
    log = plugin.log[start:]
    ours = {key for key, _, finish in log if finish == "processing"}  # this sweep's tasks
    for key, _, finish in log:
        if key in ours:
            flat[key] = int(np.ravel_multi_index(order[int(key.split("-")[-2])], TINY.shape))
            started[key] += finish == "processing"
            completed[key] += finish == "memory"
    assert len(flat) == TINY.size
    assert max(started.values()) == 2, "the killed worker's point is rescheduled"
    # a point finished before the kill never runs again; only the killed worker's point (its
    # run, or its result not yet received) is computed twice
    assert all(completed[key] == 1 for key in flat if flat[key] in record["done"])
    assert sum(completed.values()) <= TINY.size + 1
    # the points finished before the kill keep their values (they are never rerun)
    wall = got.wall_time.values.reshape(-1)
    for flat in record["done"]:
        assert wall[flat] == record["wall"][flat]


# ----------------------------------------------------------------------------- process pool

@pytest.mark.slow
def test_local_processes_with_a_worker_killed_mid_sweep(serial, tmp_path, caplog):
    path = str(tmp_path / "pool.zarr")

    def pool_worker():  # a worker process of the pool (a child of this process, not Dask's)
        return next((p.pid for p in multiprocessing.active_children()
                     if p.name.startswith("SpawnProcess")), None)

    record = kill_after_first_result(path, pool_worker)
    with caplog.at_level(logging.WARNING, logger=ex.__name__):
        got = run_sweep(TINY, path, progress=False, executor=LocalProcesses(workers=2))
    record["thread"].join()
    assert "pid" in record and len(record["done"]) < TINY.size
    assert "restarting the pool" in caplog.text
    assert_same_store(got, serial)
    wall = got.wall_time.values.reshape(-1)
    for flat in record["done"]:
        assert wall[flat] == record["wall"][flat]


# ----------------------------------------------------------------------------- precision

@pytest.mark.slow
def test_a_float32_point_does_not_depend_on_the_process_x64_flag(serial):
    f32, f64 = (TINY.config(precision=p, seed=1, gamma=1.75) for p in ("float32", "float64"))
    on = run_point(f32, TINY.summary)
    try:
        own = schema.numeric_versions()
        off = run_point_in_worker(f32, TINY.summary, False, own)
        assert not jax.config.jax_enable_x64
        run_point_in_worker(f64, TINY.summary, False, own)
        assert jax.config.jax_enable_x64  # a float64 point switches it on, as in the caller
        after = run_point_in_worker(f32, TINY.summary, False, own)
    finally:
        jax.config.update("jax_enable_x64", True)  # the test session's setting (conftest)
    want = serial.sel(precision="float32", seed=1, gamma=1.75)
    for values in (on, off, after):
        for name, value in values.items():
            if name != "wall_time":
                np.testing.assert_array_equal(value, want[name].values, err_msg=name)


# ----------------------------------------------------------------------------- versions

def other_versions(**changed) -> dict:
    return {**schema.numeric_versions(), **changed}


def test_a_worker_with_other_versions_refuses_its_points_before_any_compute(monkeypatch):
    calls = []
    monkeypatch.setattr(sweep_module, "run_point", lambda *args: calls.append(args) or {})
    config = TINY.config(precision="float32", seed=0, gamma=0.5)
    jax_version = schema.numeric_versions()["jax_version"]
    with pytest.raises(WorkerVersionError,
                       match=rf"runs jax {re.escape(jax_version)} \(the sweep: 0\.0\.1\)"):
        run_point_in_worker(config, TINY.summary, True, other_versions(jax_version="0.0.1"))
    with pytest.raises(WorkerVersionError, match=r"meanfield .* \(the sweep: 9\.9\); backend cpu "
                                                 r"\(the sweep: tpu\)"):
        run_point_in_worker(config, TINY.summary, True,
                            other_versions(meanfield_version="9.9", backend="tpu"))
    assert calls == []
    run_point_in_worker(config, TINY.summary, True, schema.numeric_versions())
    assert len(calls) == 1


def _report_jax_version(version):
    """Make this (worker) process report ``version`` as its jax version (None: its own)."""
    import meanfield.schema as worker_schema

    own = getattr(worker_schema, "_own_versions", None) or worker_schema._versions
    worker_schema._own_versions = own
    worker_schema._versions = own if version is None else (
        lambda: {**own(), "jax_version": version})


@pytest.mark.slow
def test_dask_workers_with_other_versions_stop_the_sweep_and_write_nothing(cluster, tmp_path):
    local, client, _ = cluster
    path = str(tmp_path / "versions.zarr")
    client.run(_report_jax_version, "0.0.1")
    try:
        with pytest.raises(WorkerVersionError, match=r"runs jax 0\.0\.1 \(the sweep: "):
            run_sweep(TINY, path, progress=False,
                      executor=DaskCluster(address=local.scheduler_address))
    finally:
        client.run(_report_jax_version, None)
    assert read_progress(path)["done"] == []


# ----------------------------------------------------------------------------- worker cores

TWO_CORES = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs CPU affinity and two usable cores")


def _pid_and_cores(seconds: float) -> tuple[int, tuple[int, ...]]:
    """A point's stand-in: which worker ran it and on which cores (a pause lets both take some)."""
    time.sleep(seconds)
    return os.getpid(), tuple(sorted(os.sched_getaffinity(0)))


def _cores_of_workers(executor) -> dict[int, tuple[int, ...]]:
    with executor:
        return dict(result for _, result in executor.map_unordered(_pid_and_cores,
                                                                   [(0.3,)] * 6))


def _assert_own_shares(seen: dict, workers: int) -> None:
    cores = len(os.sched_getaffinity(0))
    assert all(len(share) == cores // workers for share in seen.values()), seen
    shares = [set(share) for share in seen.values()]
    assert all(a.isdisjoint(b) for i, a in enumerate(shares) for b in shares[i + 1:]), seen


@TWO_CORES
def test_pin_to_cores_splits_the_usable_cores():
    """Worker i of n gets the i-th n-th of the usable cores; more workers than cores: all."""
    cores = sorted(os.sched_getaffinity(0))
    code = ("import os, sys; from meanfield.validation.executors import pin_to_cores; "
            "print(sorted(pin_to_cores(int(sys.argv[1]), int(sys.argv[2]))), "
            "sorted(os.sched_getaffinity(0)))")

    def run(index, workers):
        out = subprocess.run([sys.executable, "-c", code, str(index), str(workers)],
                             capture_output=True, text=True, check=True).stdout
        return out.strip()

    half = len(cores) // 2
    assert run(1, 2) == f"{cores[half:]} {cores[half:]}"
    assert run(0, 2) == f"{cores[:half]} {cores[:half]}"
    assert run(0, len(cores) + 1) == f"{cores} {cores}"


@TWO_CORES
@pytest.mark.parametrize("pin", [True, False])
def test_local_process_workers_compute_on_their_own_cores(pin):
    """XLA:CPU sizes its thread pools by a process's cores: pinned workers do not compete
    for each other's (two side by side: 1.5x faster; pinned is the default); unpinned, every
    worker may use every core."""
    seen = _cores_of_workers(LocalProcesses(workers=2, pin_cores=pin))
    if pin:
        _assert_own_shares(seen, 2)
    else:
        assert set(seen.values()) == {tuple(sorted(os.sched_getaffinity(0)))}


@pytest.mark.slow
@TWO_CORES
def test_local_dask_workers_compute_on_their_own_cores():
    _assert_own_shares(_cores_of_workers(DaskCluster(workers=2, pin_cores=True)), 2)


# ----------------------------------------------------------------------------- worker malloc

def _malloc_variables() -> dict[str, str]:
    """A point's stand-in: the glibc malloc variables of the worker that ran it."""
    return ex.malloc_environ()


def _without_malloc_variables(monkeypatch) -> None:
    for name in ex.MALLOC_ENVIRON:
        monkeypatch.delenv(name, raising=False)


def test_local_dask_workers_start_without_dasks_malloc_trim_threshold(monkeypatch):
    """Dask's nanny gives its workers MALLOC_TRIM_THRESHOLD_=65536 (and sets it in the process
    that starts them), which froze glibc's mmap threshold: the luo-diagram grid ran 2.8x
    slower on two Dask workers. The local cluster's workers start without it, with no
    warning, and the caller's environment and Dask config are left as they were."""
    import dask

    _without_malloc_variables(monkeypatch)
    with dask.config.set({ex.UNSET_WORKER_ENVIRON: 65536}), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with DaskCluster(workers=1, pin_cores=False) as executor:
            seen = [env for _, env in executor.map_unordered(_malloc_variables, [()] * 2)]
        assert dask.config.get(ex.UNSET_WORKER_ENVIRON) == 65536  # only the start unset it
    assert seen == [{}, {}]
    assert ex.malloc_environ() == {}


def test_workers_with_a_malloc_variable_are_warned_about(monkeypatch):
    """A variable this process has reaches the local Dask workers and the pool's workers,
    and the workers of a running cluster may have it: each case is named in a warning that
    says how to start them without it (the points still run)."""
    _without_malloc_variables(monkeypatch)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    inherited = r"1 of the 1 workers run with MALLOC_TRIM_THRESHOLD_ set.*inherit it"
    with pytest.warns(RuntimeWarning, match=inherited):
        local = DaskCluster(workers=1, pin_cores=False).__enter__()
    try:
        with pytest.warns(RuntimeWarning, match=r"1 of the 1 workers run with "
                                                r"MALLOC_TRIM_THRESHOLD_ set.*pre-spawn-environ"):
            with DaskCluster(address=local._session["cluster"].scheduler_address) as running:
                assert [env for _, env in running.map_unordered(_malloc_variables, [()])] \
                    == [{"MALLOC_TRIM_THRESHOLD_": "65536"}]
    finally:
        local.__exit__(None, None, None)
    with pytest.warns(RuntimeWarning, match=inherited):
        assert [pid for _, pid in LocalProcesses(workers=1).map_unordered(os.getpid, [()])]


class _Client:
    """``client.run`` of ``worker_malloc_environs`` on workers with given results."""

    def __init__(self, results: dict):
        self.results = results

    def run(self, fn, on_error):
        assert fn is ex.malloc_environ and on_error == "return"
        if isinstance(self.results, Exception):
            raise self.results
        return self.results


def test_malloc_warning_counts_the_workers_and_skips_those_that_cannot_answer(monkeypatch):
    _without_malloc_variables(monkeypatch)
    monkeypatch.setenv("MALLOC_TOP_PAD_", "0")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    assert ex.malloc_environ() == {"MALLOC_TOP_PAD_": "0", "MALLOC_TRIM_THRESHOLD_": "65536"}
    environments = ex.worker_malloc_environs(_Client({
        "tcp://a:1": {"MALLOC_TOP_PAD_": "0"}, "tcp://b:1": {}, "tcp://c:1": {},
        "tcp://d:1": ModuleNotFoundError("No module named 'meanfield'")}))
    assert set(environments) == {"tcp://a:1", "tcp://b:1", "tcp://c:1"}
    assert ex.worker_malloc_environs(_Client(OSError("Timed out trying to connect"))) == {}
    with pytest.warns(RuntimeWarning, match=r"^1 of the 3 workers run with MALLOC_TOP_PAD_ set"):
        ex.warn_slow_malloc(environments, ex.DASK_MALLOC_FIX)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ex.warn_slow_malloc({"tcp://a:1": {}, "tcp://b:1": {}}, ex.DASK_MALLOC_FIX)
        ex.warn_slow_malloc({}, ex.DASK_MALLOC_FIX)
        list(LocalProcesses(workers=2).map_unordered(os.getpid, []))  # no points, no warning


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("make, match", [
    (lambda: LocalProcesses(workers=0), "workers=0 is not allowed"),
    (lambda: LocalProcesses(workers=2.5), "workers=2.5 is not allowed"),
    (lambda: LocalProcesses(restarts=-1), "restarts=-1 is not allowed"),
    (lambda: DaskCluster(workers=0), "workers=0 is not allowed"),
    (lambda: DaskCluster(address="tcp://127.0.0.1:8786", workers=2), "own workers"),
    (lambda: DaskCluster(address=""), "address='' is not allowed"),
    (lambda: DaskCluster(timeout=0), "timeout=0 is not allowed"),
    (lambda: LocalProcesses(pin_cores=1), "pin_cores=1 is not allowed"),
    (lambda: DaskCluster(pin_cores="yes"), "pin_cores='yes' is not allowed"),
    (lambda: check_executor("dask"), "executor='dask' is not allowed"),
    (lambda: executor_from_options("tcp://127.0.0.1:8786", 2), "--workers is not allowed"),
    (lambda: executor_from_options(None, 0), "--workers=0 is not allowed"),
    (lambda: run_sweep(TINY, executor=4), "executor=4 is not allowed"),
    (lambda: run_study("barbu", executor=DaskCluster(workers=2)), "study 'barbu' runs no sweep"),
])
def test_bad_executors_raise_before_any_run(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_executor_from_options():
    assert executor_from_options() == Serial()
    assert executor_from_options(workers=3) == DaskCluster(workers=3)
    assert executor_from_options("tcp://h:8786") == DaskCluster(address="tcp://h:8786")
    assert check_executor(None) == Serial()


# ----------------------------------------------------------------------------- acceptance

@pytest.mark.slow
def test_luo_slopes_quick_on_two_dask_workers_with_one_killed(cluster, tmp_path):
    """The luo-slopes quick study on two Dask workers, one SIGKILLed after the first finished
    point, writes the sweep stores of the serial study (every variable but wall times)."""
    from meanfield.validation.sweep import open_sweep

    local, client, plugin = cluster
    client.wait_for_workers(2)
    pids = client.run(os.getpid)

    def busy():
        return next((pids[w] for w, keys in client.processing().items() if keys and w in pids),
                    None)

    started = time.perf_counter()
    run_study("luo-slopes", str(tmp_path / "serial"), quick=True)
    serial_s = time.perf_counter() - started
    start = len(plugin.log)
    record = kill_after_first_result(str(tmp_path / "dask" / "sweeps" / "luo-slopes-paper.zarr"),
                                     busy)
    started = time.perf_counter()
    run_study("luo-slopes", str(tmp_path / "dask"), quick=True,
              executor=DaskCluster(address=local.scheduler_address))
    dask_s = time.perf_counter() - started
    record["thread"].join()
    assert "pid" in record, "the kill should land mid-sweep"
    for name in ("luo-slopes-paper", "luo-slopes-families"):
        got, want = (open_sweep(tmp_path / d / "sweeps" / f"{name}.zarr").load()
                     for d in ("dask", "serial"))
        assert_same_store(got, want)
    log = plugin.log[start:]
    ours = {key for key, _, finish in log if finish == "processing"}
    completed = Counter(key for key, _, finish in log if finish == "memory" and key in ours)
    assert sum(completed.values()) <= len(completed) + 1  # only the killed worker's point reruns
    print(f"luo-slopes quick: serial {serial_s:.0f} s, two Dask workers with one killed "
          f"{dask_s:.0f} s; killed pid {record['pid']} after {len(record['done'])} points")


def test_validate_command_line_options_fail_before_any_run(capsys):
    from meanfield.cli import main

    assert main(["validate", "barbu", "--workers", "2"]) == 2
    assert "study 'barbu' runs no sweep" in capsys.readouterr().err
    assert main(["validate", "luo-slopes", "--workers", "2", "--scheduler", "tcp://h:1"]) == 2
    assert "--workers is not allowed with --scheduler" in capsys.readouterr().err
