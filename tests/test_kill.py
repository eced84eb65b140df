"""SIGKILL a run at random moments (compilation, first save, between saves, final save): the
store always opens or says to resume, and resuming gives the uninterrupted result bitwise."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import xarray as xr

import meanfield as mf
from meanfield.store import StoreError, read_progress, store_status

SCRIPT = """
import sys
import meanfield as mf
cfg = mf.presets.luo_1d(width=20, t_max=5.0, n_saves=20, precision="float64")
mf.simulate(cfg, progress=False, out=sys.argv[1], resume=True, checkpoint_seconds=0)
"""
MOMENTS = ("compilation", "first save", "between saves", "final save")


def config(n_saves: int = 20):
    return mf.presets.luo_1d(width=20, t_max=5.0, n_saves=n_saves, precision="float64")


@pytest.fixture(scope="module")
def reference():
    return mf.simulate(config(), progress=False).load().drop_attrs()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Subprocesses share a persistent compilation cache: only the first one compiles."""
    cache = str(tmp_path_factory.mktemp("jax-cache"))
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


@pytest.fixture(scope="module")
def timing(env, tmp_path_factory):
    """Seconds until the store appears and until the run ends, uninterrupted (cache warm)."""
    out = str(tmp_path_factory.mktemp("calibrate") / "run.zarr")
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, out], env=env)
    while store_status(out) == "absent" and proc.poll() is None:
        time.sleep(0.005)
    appear = time.time() - start  # cold cache: the later kills at "compilation" spread wider
    assert proc.wait(timeout=600) == 0
    return appear, time.time() - start, read_progress(out)["chunks_done"]


def kill_at(moment: str, out: str, env, timing, rng) -> None:
    appear, _, chunks = timing
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, out], env=env)
    try:
        if moment == "compilation":
            time.sleep(rng.uniform(0.1, 0.95) * appear)
        elif moment == "first save":
            while store_status(out) == "absent" and proc.poll() is None:
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.05))
        else:
            target = rng.randint(1, max(1, chunks - 2)) if moment == "between saves" else chunks - 1
            while proc.poll() is None:
                progress = read_progress(out) if os.path.exists(out) else None
                if progress and progress["chunks_done"] >= target:
                    break
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.02))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def check_kills(n: int, tmp_path, env, timing, reference, seed: int) -> dict:
    rng = random.Random(seed)
    seen = {}
    for i in range(n):
        moment = MOMENTS[i % len(MOMENTS)]
        out = str(tmp_path / f"run{i}.zarr")
        kill_at(moment, out, env, timing, rng)
        status = store_status(out)
        assert status != "foreign", (moment, status)
        committed = (read_progress(out) or {}).get("records", 0)
        if status in ("finished", "unfinished"):
            assert mf.open_run(out).sizes["t"] == committed  # opens, committed records only
        elif status != "absent":
            with pytest.raises(StoreError, match="--resume"):
                mf.open_run(out)
        resumed = mf.simulate(config(), progress=False, out=out, resume=True,
                              checkpoint_seconds=0)
        xr.testing.assert_identical(resumed.load().drop_attrs(), reference)  # bitwise
        seen[moment, status] = seen.get((moment, status), 0) + 1
    return seen


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bitwise(tmp_path, env, timing, reference):
    check_kills(4, tmp_path, env, timing, reference, seed=0)


@pytest.mark.slow
def test_twenty_sigkills_then_resume_is_bitwise(tmp_path, env, timing, reference):
    seen = check_kills(20, tmp_path, env, timing, reference, seed=1)
    print("kills by (moment, store state):", seen, "timing:", timing)


CLI = ("from meanfield.cli import console_main; console_main()")
# 25 chunks of saves, each committed: a Ctrl-C after the first commit lands well before the end
CTRL_C_SAVES = 400
CLI_ARGS = ["run", "luo_1d", "--width", "20", "--t-max", "5", "--set", f"n_saves={CTRL_C_SAVES}",
            "--set", "precision='float64'", "--no-progress", "--no-plots",
            "--checkpoint-seconds", "0"]


@pytest.fixture(scope="module")
def ctrl_c_reference():
    return mf.simulate(config(CTRL_C_SAVES), progress=False).load().drop_attrs()


@pytest.mark.parametrize("moment", ["compilation", "between saves"])
def test_ctrl_c_at_any_moment_is_a_clean_exit_130(moment, tmp_path, env, timing,
                                                  ctrl_c_reference):
    out = str(tmp_path / "run.zarr")
    proc = subprocess.Popen([sys.executable, "-c", CLI, *CLI_ARGS, "--out", out], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if moment == "compilation":  # a quarter of a cold start: this warm command is still starting
        time.sleep(0.25 * timing[0])
    else:
        while proc.poll() is None and not (read_progress(out) or {}).get("chunks_done"):
            time.sleep(0.001)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, (proc.returncode, err)
    assert "interrupted" in err and "Traceback" not in err
    resumed = mf.simulate(config(CTRL_C_SAVES), progress=False, out=out, resume=True,
                          checkpoint_seconds=0)
    xr.testing.assert_identical(resumed.load().drop_attrs(), ctrl_c_reference)
