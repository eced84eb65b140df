"""One run across two processes (``jax.distributed`` on localhost, gloo CPU collectives, one
device each): its store equals the one-process run, and after a SIGKILL of one process the
resumed run's store equals the uninterrupted one.

The processes are this file run as a script: ``CASE PROCESS_ID PORT OUT [resume]``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

N_PROCESSES = 2
# short: the two-process run; long: enough compiled chunks to be killed in the middle
CASES = {"short": ("wang_ma", {"t_max": 100.0, "n_saves": 40}),
         "long": ("wang_ma", {"t_max": 1500.0, "n_saves": 200})}


def config_of(case: str):
    from meanfield import presets

    preset, arguments = CASES[case]
    return presets.get(preset, **arguments)


def child(case: str, process_id: int, port: int, out: str, resume: bool) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=N_PROCESSES,
                               process_id=process_id, initialization_timeout=120)
    import meanfield as mf

    ds = mf.simulate(config_of(case), progress=False, out=out, resume=resume,
                     devices=jax.device_count(), checkpoint_seconds=0.0)
    print(json.dumps({"process": process_id, "devices": jax.device_count(),
                      "n_steps": int(ds.n_steps.values[-1])}), flush=True)
    jax.distributed.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def launch(case: str, out, resume: bool = False) -> list[subprocess.Popen]:
    port = free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return [subprocess.Popen([sys.executable, __file__, case, str(i), str(port), str(out)]
                             + (["resume"] if resume else []), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(N_PROCESSES)]


def finish(procs, timeout: float = 900) -> list[dict]:
    reports = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, stderr[-3000:]
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    return reports


def assert_same_run(path, reference) -> None:
    from test_sharding import differences

    from meanfield.io import open_run

    diffs = differences(open_run(str(path)), reference)
    assert diffs.pop("dims_equal")
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= 1.0, (worst, diffs[worst])


def reference(case: str):
    import meanfield as mf

    return mf.simulate(config_of(case), progress=False)


def test_two_process_run_equals_one_process_run(tmp_path):
    reports = finish(launch("short", tmp_path / "run.zarr"))
    assert [r["devices"] for r in reports] == [N_PROCESSES] * N_PROCESSES
    assert_same_run(tmp_path / "run.zarr", reference("short"))


@pytest.mark.slow
def test_resume_after_sigkill_of_one_process_equals_uninterrupted(tmp_path):
    from meanfield.store import read_progress

    out = tmp_path / "run.zarr"
    procs = launch("long", out)
    deadline = time.time() + 600
    while time.time() < deadline:
        progress = read_progress(str(out)) if out.exists() else None
        if progress and progress["chunks_done"] >= 2:
            break
        time.sleep(0.2)
    assert progress and not progress["finished"], "the run ended before it could be killed"
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    try:  # the survivor blocks in a collective or stops on the lost peer
        procs[0].wait(timeout=20)
    except subprocess.TimeoutExpired:
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
    assert not read_progress(str(out))["finished"]
    finish(launch("long", out, resume=True))
    assert read_progress(str(out))["finished"]
    assert_same_run(out, reference("long"))


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:] == ["resume"])
