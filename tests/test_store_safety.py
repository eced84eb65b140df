"""Stores that survive misuse: overwrite deletes only this library's stores, one writer at a
time, a damaged chunk is an error naming the variable and records, a full disk or a run killed
during its first save leaves a store that resumes to the uninterrupted result."""

import errno
import gc
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

import meanfield as mf
from meanfield import cli, store
from meanfield.store import StoreCorrupt, StoreError, StoreLocked, read_progress


def small(seed=0):
    """One compiled shape for the whole module (only the seed varies)."""
    return mf.presets.luo_1d(width=20, t_max=5.0, n_saves=20, seed=seed)


def data(ds):
    return ds.load().drop_attrs()


@pytest.fixture(scope="module")
def reference():
    return mf.simulate(small(), progress=False)


@pytest.fixture
def finished(tmp_path, reference, monkeypatch):
    """A finished store with a chunk file per record of each appended array (as a store of a
    long run holds many files), committed after every compiled chunk."""
    monkeypatch.setattr(store, "CHUNK_BYTES", 1)
    out = str(tmp_path / "run.zarr")
    mf.simulate(small(), progress=False, out=out, checkpoint_seconds=0)
    return out


def test_overwrite_refuses_cwd_parents_and_non_stores(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    for out in (".", str(tmp_path), os.path.expanduser("~"), "/"):
        assert cli.main(["run", "luo_1d", "--width", "20", "--out", out, "--overwrite",
                         "--no-plots", "--no-progress"]) == 2
        assert "refusing" in capsys.readouterr().err
    mydata = work / "mydata"
    mydata.mkdir()
    (mydata / "notes.txt").write_text("mine")
    assert cli.main(["run", "luo_1d", "--out", "mydata", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not a meanfield run store" in err and "--overwrite" not in err
    assert cli.main(["run", "luo_1d", "--out", "mydata", "--overwrite", "--no-progress"]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert (work / "notes.txt").read_text() == "mine" == (mydata / "notes.txt").read_text()


def test_overwrite_refuses_a_store_holding_a_foreign_file(finished):
    with open(os.path.join(finished, "loss", "my_notes.txt"), "w") as fh:
        fh.write("mine")
    with pytest.raises(StoreError, match="my_notes.txt"):
        mf.simulate(small(1), progress=False, out=finished, overwrite=True)
    assert os.path.exists(os.path.join(finished, "loss", "my_notes.txt"))
    assert mf.open_run(finished).attrs["seed"] == 0


def test_overwrite_is_written_beside_and_swapped_in(finished, monkeypatch, reference):
    # a crash in the middle of the new run leaves the old store as it was
    from meanfield.store import RunStore

    def crash(self, *args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(RunStore, "finish", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        mf.simulate(small(1), progress=False, out=finished, overwrite=True, checkpoint_seconds=0)
    monkeypatch.undo()
    gc.collect()  # the crashed writer's locks go with it
    xr.testing.assert_identical(data(mf.open_run(finished)).drop_vars("phase"),
                                data(reference).drop_vars("phase"))
    new = mf.simulate(small(1), progress=False, out=finished, overwrite=True)
    assert mf.open_run(finished).attrs["seed"] == 1 == new.attrs["seed"]
    parent = os.path.dirname(finished)
    assert sorted(os.listdir(parent)) == ["run.zarr"]  # the stale new store was cleaned up


def test_ctrl_c_during_an_overwrite_leaves_the_old_store_and_keeps_the_run_in_memory(
        finished, monkeypatch, reference, capsys):
    from meanfield import runner

    real, calls = runner.run_chunk, {"n": 0}

    def interrupted_at_the_third_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] % 3 == 0:  # two chunks committed beside the old store
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "run_chunk", interrupted_at_the_third_chunk)
    with pytest.raises(mf.RunInterrupted) as info:
        mf.simulate(small(1), progress=False, out=finished, overwrite=True, checkpoint_seconds=0)
    partial = info.value.dataset
    assert partial.attrs["seed"] == 1 and 2 <= partial.sizes["t"] < reference.sizes["t"]
    xr.testing.assert_identical(data(mf.open_run(finished)), data(reference))
    argv = ["run", "luo_1d", "--width", "20", "--t-max", "5", "--set", "n_saves=20", "--seed",
            "1", "--out", finished, "--overwrite", "--no-progress", "--no-plots",
            "--checkpoint-seconds", "0"]
    assert cli.main(argv) == 130
    assert "is unchanged: the interrupted --overwrite run was discarded" in capsys.readouterr().err
    assert store.store_status(finished) == "finished"
    xr.testing.assert_identical(data(mf.open_run(finished)), data(reference))
    assert sorted(os.listdir(os.path.dirname(finished))) == ["run.zarr"]  # nothing beside it


def test_every_way_out_of_an_overwrite_leaves_the_old_store_and_nothing_beside_it(
        finished, monkeypatch, reference, capsys):
    from meanfield import condensation, runner

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", self.path)

    kept = []  # the exceptions, with their frames (a REPL keeps the last traceback)
    for target, name, replacement in ((runner, "run_chunk", interrupt),  # before any commit
                                      (condensation, "phase_variables", interrupt),  # at the end
                                      (store.RunStore, "_write_state", full_disk)):
        with monkeypatch.context() as patch:
            patch.setattr(target, name, replacement)
            with pytest.raises((KeyboardInterrupt, OSError)) as info:
                mf.simulate(small(1), progress=False, out=finished, overwrite=True,
                            checkpoint_seconds=0)
            kept.append(info)
        assert sorted(os.listdir(os.path.dirname(finished))) == ["run.zarr"], name
        xr.testing.assert_identical(data(mf.open_run(finished)), data(reference))
    with monkeypatch.context() as patch:
        patch.setattr(store.RunStore, "_write_state", full_disk)
        assert cli.main(["run", "luo_1d", "--width", "20", "--t-max", "5", "--set", "n_saves=20",
                         "--seed", "1", "--out", finished, "--overwrite", "--no-progress",
                         "--no-plots"]) == 1
    err = capsys.readouterr().err
    assert "no space left" in err and "is unchanged: the --overwrite run was discarded" in err
    assert "--resume" not in err
    new = mf.simulate(small(1), progress=False, out=finished, overwrite=True)  # no lock left
    assert new.attrs["seed"] == 1


def test_second_writer_is_refused_with_the_holders_pid(finished):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from meanfield.store import WriterLock; "
         f"lock = WriterLock({finished!r}); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLocked, match=f"pid {holder.pid}"):
            mf.simulate(small(1), progress=False, out=finished, overwrite=True)
        assert cli.main(["run", "luo_1d", "--width", "20", "--t-max", "5", "--set",
                         "n_saves=20", "--out", finished, "--overwrite", "--no-progress"]) == 1
    finally:
        holder.kill()
        holder.wait()
    # the OS released the lock of the killed holder: writing works again
    mf.simulate(small(1), progress=False, out=finished, overwrite=True)


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_damaged_chunk_is_an_error_naming_variable_and_records(finished, damage, capsys):
    chunk = os.path.join(finished, "loss", "7")
    if damage == "delete":
        os.remove(chunk)
    else:
        with open(chunk, "r+b") as fh:
            fh.truncate(3)
    with pytest.raises(StoreCorrupt, match=r"variable 'loss' records t\[7:8\]"):
        mf.open_run(finished)
    assert cli.main(["verify", finished]) == 1
    assert "'loss' records t[7:8]" in capsys.readouterr().err
    argv = ["run", "luo_1d", "--width", "20", "--t-max", "5", "--set", "n_saves=20", "--out",
            finished, "--no-progress", "--no-plots"]
    assert cli.main(argv) == 1  # no longer reported as complete
    assert "damaged" in capsys.readouterr().err
    assert cli.main(argv + ["--overwrite"]) == 0  # the store is ours: recomputed
    assert cli.main(["verify", finished]) == 0


def test_corrupt_bytes_are_found_by_verify(finished, capsys):
    assert cli.main(["verify", finished]) == 0
    assert "checksums" in capsys.readouterr().out
    chunk = os.path.join(finished, "f_train", "3.0")
    raw = bytearray(open(chunk, "rb").read())
    raw[-1] ^= 0xFF
    open(chunk, "wb").write(bytes(raw))
    mf.open_run(finished)  # sizes only: opening stays cheap
    with pytest.raises(StoreCorrupt, match=r"'f_train' records t\[3:4\].*checksum"):
        store.verify_store(finished, hashes=True)


def test_killed_during_first_save_is_resumable(tmp_path, reference, capsys):
    out = str(tmp_path / "run.zarr")
    mf.simulate(small(), progress=False, out=out)
    # what a kill between the first data write and its commit leaves: data, no commit record
    os.remove(os.path.join(out, store.PROGRESS))
    os.remove(os.path.join(out, ".zmetadata"))
    assert store.store_status(out) == "first_save"
    with pytest.raises(StoreError, match="--resume"):
        mf.open_run(out)
    argv = ["run", "luo_1d", "--width", "20", "--t-max", "5", "--set", "n_saves=20", "--out",
            out, "--no-progress", "--no-plots"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" not in err
    assert cli.main(argv + ["--resume"]) == 0
    xr.testing.assert_identical(data(mf.open_run(out)), data(reference))


def test_full_disk_after_the_first_metadata_is_a_first_save(tmp_path, reference):
    """A disk that fills after the consolidated metadata but before the attributes and the
    commit record leaves a store of this library, resumable from the start (not foreign)."""
    out = str(tmp_path / "run.zarr")
    mf.simulate(small(), progress=False, out=out)
    os.remove(os.path.join(out, store.PROGRESS))
    with open(os.path.join(out, ".zattrs"), "w") as fh:
        fh.write("{")  # cut short by the full disk
    assert store.store_status(out) == "first_save"
    os.remove(os.path.join(out, store.LOCK))  # not written by this library: never taken over
    assert store.store_status(out) == "foreign"
    open(os.path.join(out, store.LOCK), "w").close()
    assert cli.main(["run", "luo_1d", "--width", "20", "--t-max", "5", "--set", "n_saves=20",
                     "--out", out, "--no-progress", "--no-plots", "--resume"]) == 0
    xr.testing.assert_identical(data(mf.open_run(out)), data(reference))


def test_a_store_before_its_first_commit_names_its_live_writer(tmp_path, capsys):
    out = str(tmp_path / "run.zarr")
    os.makedirs(out)
    open(os.path.join(out, store.LOCK), "w").close()
    writer = subprocess.Popen(  # holds the writer lock, as a run before its first commit does
        [sys.executable, "-c", "import sys, time; from meanfield.store import WriterLock; "
         "lock = WriterLock(sys.argv[1]); print('locked', flush=True); time.sleep(120)", out],
        stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "locked"
        live = f"being written by another process \\(pid {writer.pid}\\)"
        with pytest.raises(StoreError, match=live + ".*no committed records"):
            mf.open_run(out)
        with pytest.raises(StoreLocked, match=live):
            mf.simulate(small(), progress=False, out=out)
        assert cli.main(["run", "luo_1d", "--width", "20", "--t-max", "5", "--set",
                         "n_saves=20", "--out", out, "--no-progress", "--no-plots"]) == 2
        assert f"being written by another process (pid {writer.pid})" in capsys.readouterr().err
    finally:
        writer.kill()
        writer.wait()
    # the writer killed before its first commit: its writer file stays, naming a dead pid; and
    # a writer file naming a live process that holds no lock (a reused pid) is stale as well
    for pid in (writer.pid, os.getppid()):
        with open(os.path.join(out, store.WRITER), "w") as fh:
            json.dump({"pid": pid}, fh)
        assert store.live_writer(out) is None
        with pytest.raises(StoreError, match="stopped during its first save.*--resume"):
            mf.open_run(out)


def test_store_created_but_never_written_is_no_obstacle(tmp_path, reference):
    out = str(tmp_path / "run.zarr")
    os.makedirs(out)
    open(os.path.join(out, store.LOCK), "w").close()  # a run killed before its first save
    assert store.store_status(out) == "empty"
    assert cli.main(["run", "luo_1d", "--width", "20", "--t-max", "5", "--set", "n_saves=20",
                     "--out", out, "--no-progress", "--no-plots"]) == 0
    xr.testing.assert_identical(data(mf.open_run(out)), data(reference))
    shutil.rmtree(out)
    os.makedirs(out)
    open(os.path.join(out, store.LOCK), "w").close()
    assert cli.main(["run", "luo_1d", "--width", "20", "--t-max", "5", "--set", "n_saves=20",
                     "--out", out, "--no-progress", "--no-plots", "--overwrite"]) == 0
    xr.testing.assert_identical(data(mf.open_run(out)), data(reference))


def test_resume_and_overwrite_are_refused_where_they_would_be_ignored(tmp_path):
    out = str(tmp_path / "run.zarr")
    for flags, message in (({"resume": True}, "resume=True needs out="),
                           ({"overwrite": True}, "overwrite=True needs out="),
                           ({"resume": True, "overwrite": True, "out": out},
                            "exclude each other")):
        with pytest.raises(ValueError, match=message):
            mf.simulate(small(), progress=False, **flags)
    assert not os.path.exists(out)


def full_disk_at_third_checkpoint():
    """A ``RunStore._write_state`` that fails with ENOSPC at its third call (two chunks
    committed)."""
    real = store.RunStore._write_state
    calls = {"n": 0}

    def full_disk(self, slot, state):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", self.path)
        return real(self, slot, state)

    return full_disk


def test_full_disk_stops_cleanly_and_resumes_bitwise(tmp_path, monkeypatch, reference, capsys):
    out = str(tmp_path / "run.zarr")
    monkeypatch.setattr(store.RunStore, "_write_state", full_disk_at_third_checkpoint())
    argv = ["run", "luo_1d", "--width", "20", "--t-max", "5", "--set", "n_saves=20", "--out",
            out, "--no-progress", "--no-plots", "--set", "checkpoint_seconds=0"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "no space left" in err and "--resume" in err and "Traceback" not in err
    progress = read_progress(out)
    assert progress["chunks_done"] == 2 and not progress["finished"]
    monkeypatch.undo()
    assert cli.main(argv + ["--resume"]) == 0
    xr.testing.assert_identical(data(mf.open_run(out)), data(reference))


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs mounted at tmp_path/fs (root only), unmounted afterwards."""
    mount = tmp_path / "fs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def remount(mount, options):
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)


def test_full_tmpfs_stops_cleanly_and_resumes_once_space_is_freed(tmpfs, reference, capsys):
    out = str(tmpfs / "run.zarr")
    argv = ["run", "luo_1d", "--width", "20", "--t-max", "5", "--set", "n_saves=20", "--out",
            out, "--no-progress", "--no-plots", "--checkpoint-seconds", "0"]
    remount(tmpfs, "size=320k")  # room for the first saves, not for all
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "no space left" in err and "--resume" in err and "Traceback" not in err
    status = store.store_status(out)
    assert status in ("empty", "first_save", "unfinished"), status
    remount(tmpfs, "size=16m")  # space freed
    assert cli.main(argv + ["--resume"]) == 0
    xr.testing.assert_identical(data(mf.open_run(out)), data(reference))


def test_read_only_target_is_a_message(tmpfs, reference, capsys):
    remount(tmpfs, "size=16m")
    out = str(tmpfs / "run.zarr")
    argv = ["run", "luo_1d", "--width", "20", "--t-max", "5", "--set", "n_saves=20", "--out",
            out, "--no-progress", "--no-plots"]
    assert cli.main(argv) == 0
    remount(tmpfs, "ro")
    assert cli.main(argv) == 0  # a finished run is reported: nothing to write
    assert "already complete" in capsys.readouterr().out
    for extra in (["--overwrite"], ["--resume"]):
        assert cli.main(argv + extra) in (0, 1)
        assert "Traceback" not in capsys.readouterr().err
    assert cli.main(argv + ["--overwrite"]) == 1
    assert "cannot write" in capsys.readouterr().err
    assert cli.main(["run", "luo_1d", "--out", str(tmpfs / "new.zarr"), "--no-progress"]) == 1
    assert "cannot write" in capsys.readouterr().err
    xr.testing.assert_identical(data(mf.open_run(out)), data(reference))


def test_save_run_is_checksummed_and_never_replaces_a_foreign_directory(tmp_path, reference):
    out = tmp_path / "saved.zarr"
    mf.save_run(reference, out)
    assert read_progress(str(out))["one_piece"]
    xr.testing.assert_identical(data(mf.open_run(out)), data(reference))
    os.remove(out / "loss" / "0")  # written in one piece: one chunk
    with pytest.raises(StoreCorrupt, match=r"'loss' records t\[0:21\]"):
        mf.open_run(out)
    mf.save_run(reference, out, overwrite=True)  # ours: replaced
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("mine")
    with pytest.raises(StoreError, match="refusing"):
        mf.save_run(reference, other, overwrite=True)
    assert (other / "a.txt").exists()


def test_manifest_names_every_committed_chunk(finished):
    progress = read_progress(finished)
    files = progress["files"]
    assert len([f for f in files if f.startswith("loss" + os.sep)]) == progress["records"]
    for rel, (size, crc, _) in files.items():
        assert os.path.getsize(os.path.join(finished, rel)) == size
    assert not any(f.startswith("_progress") for f in files)
    assert json.loads(json.dumps(progress)) == progress
    assert np.all(np.isfinite(mf.open_run(finished).loss.values))


def test_a_store_is_not_resumed_with_other_versions(tmp_path, monkeypatch, files_under,
                                                    reference):
    from meanfield import schema

    out = str(tmp_path / "run.zarr")
    with monkeypatch.context() as patch:
        patch.setattr(store.RunStore, "_write_state", full_disk_at_third_checkpoint())
        with pytest.raises(OSError):
            mf.simulate(small(), progress=False, out=out, checkpoint_seconds=0)
    assert not read_progress(out)["finished"]
    before = files_under(out)
    stored = mf.open_run(out).attrs["jax_version"]
    other = {**schema.versions(), "jax_version": "0.0.1"}
    with monkeypatch.context() as patch:
        patch.setattr(schema, "_versions", lambda: other)
        with pytest.raises(StoreError, match=rf"jax {stored} \(this process: 0.0.1\).*mix"):
            mf.simulate(small(), progress=False, out=out, resume=True)
        assert files_under(out) == before  # refused before anything was written
    ds = mf.simulate(small(), progress=False, out=out, resume=True)
    xr.testing.assert_identical(data(ds), data(reference))
    with monkeypatch.context() as patch:  # a finished store is only read
        patch.setattr(schema, "_versions", lambda: other)
        finished = mf.simulate(small(), progress=False, out=out, resume=True)
    xr.testing.assert_identical(data(finished), data(reference))


def test_netcdf_exports_never_replace_a_file_unasked_nor_leave_a_partial_one(
        tmp_path, reference, monkeypatch, capsys):
    """``export`` and ``compare --out`` refuse an existing file without --overwrite (and a
    directory always); with it, a write that fails (a full disk) keeps the old file whole."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    for argv in (["export", "x.zarr", str(tmp_path)], ["export", "x.zarr", str(notes)],
                 ["compare", "a.zarr", "b.zarr", "--out", str(tmp_path), "--overwrite"],
                 ["compare", "a.zarr", "b.zarr", "--out", str(notes)]):
        assert cli.main(argv) == 2  # refused before the (missing) stores are read
        err = capsys.readouterr().err
        assert ("is a directory" in err or "exists; choose another" in err), (argv, err)
    out = str(tmp_path / "run.zarr")
    mf.save_run(reference, out)
    assert cli.main(["export", out, str(notes)]) == 2
    assert "exists" in capsys.readouterr().err and notes.read_text() == "my notes"
    missing = tmp_path / "no_such_folder" / "run.nc"  # named as given, no temporary name
    assert cli.main(["export", out, str(missing)]) == 2
    assert (f"meanfield: {missing}: the folder {missing.parent} does not exist; create it or "
            "choose another path") in capsys.readouterr().err
    with pytest.raises(FileExistsError, match="overwrite=True"):
        mf.export_netcdf(reference, notes)

    def full_disk(self, path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", full_disk)
    with pytest.raises(OSError, match="No space"):
        mf.export_netcdf(reference, notes, overwrite=True)
    assert notes.read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "run.zarr"]
    monkeypatch.undo()
    assert cli.main(["export", out, str(notes), "--overwrite"]) == 0
    np.testing.assert_array_equal(xr.open_dataset(notes).loss.values, reference.loss.values)


def test_overwrite_removes_the_replaced_runs_figures_and_keeps_the_users_files(tmp_path,
                                                                            capsys):
    out = str(tmp_path / "run.zarr")
    plots = tmp_path / "run_plots"
    base = ["run", "luo_1d", "--width", "20", "--t-max", "5", "--set", "n_saves=20",
            "--out", out, "--no-progress"]
    assert cli.main(base) == 0
    assert sorted(p.name for p in plots.iterdir()) == ["density.png", "luo_scatter.png",
                                                       "rays.png", "training_curves.png"]
    assert cli.main(base[:5] + ["6"] + base[6:] + ["--overwrite", "--no-plots"]) == 0
    assert not plots.exists()  # figures of the replaced run: gone with it
    assert cli.main(base + ["--overwrite"]) == 0
    (plots / "my_notes.txt").write_text("mine")
    assert cli.main(base[:5] + ["6"] + base[6:] + ["--overwrite", "--no-plots"]) == 0
    assert [p.name for p in plots.iterdir()] == ["my_notes.txt"]


def test_a_resumed_run_counts_the_wall_time_of_its_earlier_sessions(tmp_path, monkeypatch):
    from meanfield import runner

    real, calls = runner.run_chunk, {"n": 0}

    def interrupted_at_the_third_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = str(tmp_path / "run.zarr")
    monkeypatch.setattr(runner, "run_chunk", interrupted_at_the_third_chunk)
    with pytest.raises(mf.RunInterrupted):
        mf.simulate(small(), progress=False, out=out, checkpoint_seconds=0)
    monkeypatch.undo()
    with store.quiet_zarr():  # as if the first session had computed for 1000 s
        import zarr

        zarr.open_group(out, mode="r+", zarr_format=2).attrs["wall_time_s"] = 1000.0
    resumed = mf.simulate(small(), progress=False, out=out, resume=True)
    assert 1000.0 < resumed.attrs["wall_time_s"] < 1000.0 + 300
