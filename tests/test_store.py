"""Streaming store: kill -9 mid-run, resume, and get the uninterrupted result (bitwise, float64)."""

import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import xarray as xr

import meanfield as mf
from meanfield import cli
from meanfield.io import load_run
from meanfield.store import StoreError, read_progress

SCRIPT = """
import meanfield as mf
from meanfield import cli
cfg = mf.presets.wang_ma(width=300, t_max=1500.0, n_saves=600)
mf.simulate(cfg, progress=False, out={out!r}, checkpoint_seconds=0)
"""


def config():
    return mf.presets.wang_ma(width=300, t_max=1500.0, n_saves=600)


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    out = str(tmp_path / "run.zarr")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT.format(out=out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600  # import and compilation on a busy machine
    while time.time() < deadline:
        progress = read_progress(out) if os.path.exists(out) else None
        if progress and progress["chunks_done"] >= 4:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    progress = read_progress(out)
    assert progress is not None and not progress["finished"], "the run finished before the kill"
    partial = mf.open_run(out)  # readable as it is, committed chunks only
    assert partial.sizes["t"] == progress["records"] > 0
    numpy = mf.open_run(out, dask=False)  # the same committed records, without dask
    assert partial.chunks and not numpy.chunks
    xr.testing.assert_identical(numpy.load(), partial.load())
    resumed = mf.simulate(config(), progress=False, out=out, resume=True, checkpoint_seconds=0)
    reference = mf.simulate(config(), progress=False)
    data = lambda ds: ds.load().drop_attrs()
    xr.testing.assert_identical(data(resumed), data(reference))  # bitwise: float64 on CPU
    assert resumed.attrs["stop_reason"] == "t_max"
    assert mf.simulate(config(), progress=False, out=out, resume=True).sizes == resumed.sizes


def test_store_of_another_config_is_never_overwritten(tmp_path, capsys):
    out = str(tmp_path / "run.zarr")
    small = mf.presets.wang_ma(width=20, t_max=5.0, n_saves=20)
    mf.simulate(small, progress=False, out=out)
    with pytest.raises(FileExistsError, match="holds a finished run; pass resume=True .* to "
                                              "return it"):
        mf.simulate(small, progress=False, out=out)
    with pytest.raises(StoreError, match=r"another config \(seed \(stored 0, given 1\)\)"):
        mf.simulate(small.replace(seed=1), progress=False, out=out, resume=True)
    assert mf.open_run(out).attrs["seed"] == 0
    # the command line names what differs too
    assert cli.main(["run", "wang_ma", "--width", "20", "--set", "t_max=6.0", "--set",
                     "n_saves=20", "--out", out, "--no-progress"]) == 2
    assert "t_max (stored 5.0, given 6.0)" in capsys.readouterr().err


def test_corrupt_store_gives_clear_error(tmp_path):
    out = tmp_path / "run.zarr"
    out.mkdir()
    (out / "garbage").write_text("not a store")
    with pytest.raises(StoreError, match="not a readable meanfield run store"):
        mf.simulate(mf.presets.wang_ma(width=20, t_max=5.0), progress=False, out=str(out),
                    resume=True)
    assert (out / "garbage").exists()


def test_a_path_without_a_store_is_never_verified_ok(tmp_path, capsys):
    mine = tmp_path / "mydata"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile.zarr").write_text("x")
    for path, message in ((mine, "is not a store: it holds no zarr group"),
                          (tmp_path / "empty", "is an empty directory, not a store"),
                          (tmp_path / "afile.zarr", "is a file, not a store")):
        assert cli.main(["verify", str(path)]) == 2
        assert message in capsys.readouterr().err
        assert cli.main(["plot", str(path)]) == 2
        assert message in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"
    run = mf.simulate(mf.presets.luo_1d(width=20, t_max=1.0, n_saves=5), progress=False)
    for zarr_format in (2, 3):  # a run saved with xarray itself is a store
        path = str(tmp_path / f"v{zarr_format}.zarr")
        with warnings.catch_warnings():  # zarr 3 on the string coordinates: not ours
            warnings.simplefilter("ignore")
            run.to_zarr(path, zarr_format=zarr_format)
        np.testing.assert_array_equal(load_run(path).loss.values, run.loss.values)


def test_a_chunk_damaged_at_its_size_is_a_store_error_naming_verify(tmp_path, capsys):
    out = str(tmp_path / "run.zarr")
    mf.simulate(mf.presets.luo_1d(width=20, t_max=2.0, n_saves=10), progress=False, out=out)
    chunk = os.path.join(out, "loss", "0")
    damaged = bytearray(open(chunk, "rb").read())
    damaged[4:6] = bytes(b ^ 0xFF for b in damaged[4:6])  # the codec header; same size
    open(chunk, "wb").write(bytes(damaged))
    assert cli.main(["plot", out, "--out", str(tmp_path / "plots")]) == 1
    assert f"meanfield verify {out}` names the damaged" in capsys.readouterr().err
    assert cli.main(["verify", out]) == 1
    assert "variable 'loss'" in capsys.readouterr().err


def test_streamed_store_opens_with_plain_xarray(tmp_path):
    out = str(tmp_path / "run.zarr")
    mem = mf.simulate(mf.presets.luo_1d(width=40, t_max=5.0, n_saves=40), progress=False)
    mf.simulate(mf.presets.luo_1d(width=40, t_max=5.0, n_saves=40), progress=False, out=out)
    ds = xr.open_zarr(out)
    for name in ds.variables:
        ds[name].load()
        if name in ("loss", "f_train", "f_eval", "t", "snapshot_w"):
            assert ds[name].attrs["units"]
    np.testing.assert_array_equal(ds.f_eval.values, mem.f_eval.values)
    assert cli.main(["export", out, str(tmp_path / "run.nc")]) == 0
    exported = xr.open_dataset(tmp_path / "run.nc")
    np.testing.assert_array_equal(exported.f_eval.values, mem.f_eval.values)
    assert exported.attrs["config"] == ds.attrs["config"]


def test_chunk_files_depend_on_the_config_not_on_when_the_run_commits(tmp_path):
    """A run that commits after every compiled chunk (as a cold run's first commit comes after
    a few records) writes the same chunk files as one that commits once at the end: each
    appended array in files of ``append_chunk_length`` items, not of the first commit's."""
    import json
    import pathlib

    from meanfield.store import CHUNK_BYTES, append_chunk_length

    assert append_chunk_length(201, 8) == 201
    assert append_chunk_length(201, CHUNK_BYTES // 2) == 2
    assert append_chunk_length(5, 4 * CHUNK_BYTES) == 1
    config = mf.presets.luo_1d(width=40, t_max=20.0, n_saves=60)
    layouts, data = [], []
    for seconds in (0.0, 1e9):
        out = tmp_path / f"every_{seconds:g}.zarr"
        ds = mf.simulate(config, progress=False, out=str(out), checkpoint_seconds=seconds)
        chunks = {p.parent.name: json.loads(p.read_text())["chunks"]
                  for p in out.glob("*/.zarray")}
        files = sorted(str(p.relative_to(out)) for p in out.glob("*/*") if p.name[0].isdigit())
        layouts.append((chunks, files))
        data.append(ds.load().drop_attrs())
        assert read_progress(str(out))["chunks_done"] > 2
    assert layouts[0] == layouts[1]
    xr.testing.assert_identical(*data)
    chunks, files = layouts[0]
    assert chunks["loss"] == [data[0].sizes["t"]]  # the whole run in one file
    assert [f for f in files if f.startswith("loss/")] == ["loss/0"]


def test_ctrl_c_inside_a_store_write_is_delivered_when_the_write_ends():
    from meanfield.store import deferred_interrupt

    before = signal.getsignal(signal.SIGINT)
    if before is not signal.default_int_handler:
        pytest.skip("this process does not turn SIGINT into KeyboardInterrupt")
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # Python runs the (holding) handler here
            finished.append(True)
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is before
    with deferred_interrupt():  # no signal: nothing raised
        pass
