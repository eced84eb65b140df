"""simulate(): recording, stop rules, errors that keep data, reproducibility, no recompilation, CLI."""

import json
import shutil
import threading
import time

import jax
import numpy as np
import pytest
import xarray as xr

import meanfield as mf
from meanfield import cli
from meanfield import runner as sim


def small_luo(**kw):
    cfg = mf.presets.luo_1d(gamma=1.0, width=kw.pop("width", 40), t_max=kw.pop("t_max", 5.0),
                            n_saves=kw.pop("n_saves", 30))
    return cfg.replace(**kw) if kw else cfg


def test_dataset_schema_and_provenance():
    cfg = small_luo()
    ds = mf.simulate(cfg, progress=False)
    assert ds.t.values[0] == 0 and np.all(np.diff(ds.t.values) > 0)
    assert ds.t.values[-1] == pytest.approx(5.0)
    assert ds.f_train.dims == ("t", "sample") and ds.f_eval.sizes["eval_point"] == 201
    assert ds.snapshot_w.dims == ("t_snapshot", "neuron", "component")
    assert list(ds.component.values) == ["w1", "b"]
    assert ds.snapshot_w.dtype == np.float32  # float32 by default
    for name in ("loss", "f_train", "f_eval", "t"):
        assert "units" in ds[name].attrs and "long_name" in ds[name].attrs
    for key in ("meanfield_version", "jax_version", "jaxlib_version", "backend", "precision",
                "seed", "config"):
        assert key in ds.attrs
    assert mf.SimulationConfig.from_json(ds.attrs["config"]).to_json() == cfg.to_json()
    # f_train is the network at the training inputs (checked from the final snapshot)
    a, w = ds.snapshot_a.values[-1], ds.snapshot_w.values[-1]
    x = np.c_[ds.x_train.values, np.ones(4)]
    f = np.maximum(x @ w.T, 0) @ a / a.size
    np.testing.assert_allclose(ds.f_train.values[-1], f, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ds.loss.values[-1], 0.5 * np.mean((f - ds.y_train.values) ** 2),
                               rtol=1e-3)


def test_same_config_same_numbers():
    cfg = small_luo()
    a, b = mf.simulate(cfg, progress=False), mf.simulate(cfg, progress=False)
    xr.testing.assert_equal(a.drop_attrs(), b.drop_attrs())
    c = mf.simulate(cfg.replace(seed=1), progress=False)
    assert not np.array_equal(a.f_eval.values, c.f_eval.values)


def test_loss_tolerance_stops_the_run(capsys):
    cfg = mf.presets.luo_1d(gamma=0.5, width=200, n_saves=30)
    ds = mf.simulate(cfg, progress=True)
    assert ds.attrs["stop_reason"] == "loss_tol"
    assert float(ds.loss[-1]) <= cfg.loss_tol < float(ds.loss[-2])
    # the progress bar ends where the run stopped, not short of the saves it did not need
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "100%" in last and f"{ds.sizes['t']}/{ds.sizes['t']}" in last, last
    assert ds.sizes["t"] < cfg.save.n


def test_no_recompilation_for_width_seed_step_or_tolerance():
    mf.simulate(small_luo(width=98), progress=False)
    before = sim.TRACE_COUNT["run_chunk"]
    mf.simulate(small_luo(width=100, seed=3), progress=False)  # same padded shape (104)
    mf.simulate(small_luo(width=100, **{"solver.rtol": 1e-5}), progress=False)
    assert sim.TRACE_COUNT["run_chunk"] == before
    euler = small_luo(width=100, solver=mf.Solver(kind="euler", dt=1e-2))
    mf.simulate(euler, progress=False)
    after_euler = sim.TRACE_COUNT["run_chunk"]
    mf.simulate(euler.replace(solver=mf.Solver(kind="euler", dt=5e-3), seed=2), progress=False)
    assert sim.TRACE_COUNT["run_chunk"] == after_euler


def test_run_program_is_compiled_ahead_in_a_thread_and_the_loop_reuses_it():
    # every trace, lowering or compilation of run_chunk, with the thread that did it; the
    # width pads to 208 particles, a shape no other test of this module compiles
    events = []

    def record(name, duration, **kw):
        if "run_chunk" in str(kw.get("fun_name", "")):
            events.append((name.rsplit("/", 1)[-1], threading.current_thread().name))

    jax.monitoring.register_event_duration_secs_listener(record)
    try:
        before = sim.TRACE_COUNT["run_chunk"]
        ds = mf.simulate(small_luo(width=202, t_max=1.0), progress=False)
    finally:
        jax.monitoring.unregister_event_duration_listener(record)
    assert sim.TRACE_COUNT["run_chunk"] == before + 1
    kinds = {kind for kind, _ in events}
    assert {"jaxpr_trace_duration", "jaxpr_to_mlir_module_duration"} <= kinds, events
    # the loop's call neither traced, lowered nor compiled again
    assert {thread for _, thread in events} == {"meanfield-compile-ahead"}, events
    assert ds.attrs["stop_reason"] == "t_max"


def test_no_compile_thread_outlives_its_run(tmp_path, monkeypatch):
    """Resuming a finished store returns before the loop: the compile-ahead thread it started
    is joined anyway, so it never traces beside the next run."""
    cfg = small_luo(width=30, t_max=0.5, n_saves=5)
    out = str(tmp_path / "run.zarr")
    mf.simulate(cfg, progress=False, out=out)

    class SlowCompile:  # the thread's compilation, slowed down (the loop never calls it here)
        def lower(self, *args):
            time.sleep(1.0)
            raise RuntimeError("not compiled")

    monkeypatch.setattr(sim, "run_chunk", SlowCompile())
    resumed = mf.simulate(cfg, progress=False, out=out, resume=True)
    assert resumed.attrs["stop_reason"] == "t_max"
    assert not [t for t in threading.enumerate() if t.name == "meanfield-compile-ahead"]


def test_divergence_stops_with_clear_error_and_keeps_records():
    data = mf.TrainingData(x=[[0.5], [1.0]], y=[1e10, -1e10])
    cfg = mf.SimulationConfig(model=mf.ModelSpec(width=10, init=mf.InitialLaw(sigma_a=1.0,
                                                                               sigma_w=1.0)),
                              data=data, solver=mf.Solver(kind="euler", dt=1.0), t_max=100.0,
                              save=mf.SaveAt(t=tuple(range(1, 101))))
    with pytest.raises(mf.DivergenceError, match="diverged") as info:
        mf.simulate(cfg, progress=False)
    ds = info.value.dataset
    assert ds.attrs["stop_reason"] == "diverged"
    assert list(ds.t.values) == [0.0, 1.0] and np.all(np.isfinite(ds.loss.values))


def test_ctrl_c_keeps_everything_recorded(monkeypatch):
    real = sim.run_chunk
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    full = mf.simulate(small_luo(n_saves=100), progress=False)
    monkeypatch.setattr(sim, "run_chunk", interrupted)
    with pytest.raises(mf.RunInterrupted) as info:
        mf.simulate(small_luo(n_saves=100), progress=False)
    ds = info.value.dataset
    assert ds.attrs["stop_reason"] == "interrupted"
    k = ds.sizes["t"]
    assert 2 <= k < full.sizes["t"]
    np.testing.assert_array_equal(ds.f_eval.values, full.f_eval.values[:k])
    assert isinstance(info.value, KeyboardInterrupt)


@pytest.mark.parametrize("out", [False, True], ids=["in memory", "store"])
def test_ctrl_c_before_the_first_record_gives_an_empty_dataset(monkeypatch, tmp_path, out):
    """Ctrl-C while the first chunk compiles: no record yet, still a clean RunInterrupted."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sim, "run_chunk", interrupted)
    path = str(tmp_path / "run.zarr") if out else None
    with pytest.raises(mf.RunInterrupted) as info:
        mf.simulate(small_luo(n_saves=10), progress=False, out=path)
    ds = info.value.dataset
    assert ds.attrs["stop_reason"] == "interrupted" and ds.sizes["t"] == 0
    assert np.all(np.isnan(ds.phase_time.values))


def test_ctrl_c_whose_result_cannot_be_built_is_still_a_clean_interrupt(monkeypatch, tmp_path,
                                                                         capsys):
    """A Ctrl-C in the middle of a first import leaves a half-imported module, and building the
    partial result then fails (a NameError inside the module): the run still ends as an
    interrupt (KeyboardInterrupt; the CLI's exit 130), never an internal error, and the store
    keeps its last commit."""
    from meanfield import cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    def half_imported(*args, **kwargs):
        raise NameError("name 'functoolz' is not defined")

    monkeypatch.setattr(sim, "run_chunk", interrupted)
    monkeypatch.setattr(sim, "_result", half_imported)
    path = tmp_path / "run.zarr"
    with pytest.raises(KeyboardInterrupt):
        mf.simulate(small_luo(n_saves=10), progress=False, out=str(path))
    assert not path.exists()  # created, never written: removed, nothing to resume
    assert cli.main(["run", "luo_1d", "--width", "20", "--t-max", "5", "--out", str(path),
                     "--no-progress", "--no-plots"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "internal error" not in err


def test_only_the_command_process_freezes_what_it_imported(monkeypatch, tmp_path):
    """``meanfield run`` and ``meanfield plot`` in their own process import with the garbage
    collector paused and then freeze (``run`` again before its figures), leaving the collector
    enabled; ``main`` called from a program never touches the program's collector."""
    import gc

    frozen = []  # the collector's state at each freeze; nothing is really frozen here
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(gc.isenabled()))
    monkeypatch.setattr(cli, "_OWN_PROCESS", False)  # restored after the console call below
    run = ["run", "luo_1d", "--width", "20", "--t-max", "5", "--no-progress", "--out"]
    assert cli.main([*run, str(tmp_path / "a.zarr")]) == 0
    assert frozen == [] and gc.isenabled()

    seen = []
    with monkeypatch.context() as console:
        console.setattr(cli, "main", lambda: seen.append(cli._OWN_PROCESS) or 0)
        console.setattr(cli.signal, "signal", lambda *args: None)  # keep pytest's Ctrl-C
        with pytest.raises(SystemExit) as leaving:
            cli.console_main()
    assert leaving.value.code == 0 and seen == [True]  # the command's own process

    cli._OWN_PROCESS = True  # as if this process were the command (as console_main left it)
    assert cli.main([*run, str(tmp_path / "b.zarr")]) == 0
    assert frozen == [False, False] and gc.isenabled()  # after the imports, before the figures
    assert cli.main(["plot", str(tmp_path / "b.zarr"), "--out", str(tmp_path / "figures")]) == 0
    assert frozen == [False, False, False] and gc.isenabled()


@pytest.mark.parametrize("chunk", [1, 2])
def test_ctrl_c_before_a_chunk_is_committed_then_resume_equals_the_uninterrupted_run(
        chunk, monkeypatch, tmp_path):
    """Ctrl-C after a chunk has been computed and its end snapshot taken, before its commit:
    the interrupted run stores that chunk's records and snapshot beside the state before it, so
    the resumed run computes the chunk again; it must not keep its records or snapshot twice."""
    cfg = mf.presets.luo_1d(width=20, t_max=5.0, n_saves=20, precision="float64")
    reference = mf.simulate(cfg, progress=False).drop_attrs()
    agree, calls = sim.agree, []

    def interrupt_at_the_commit_of_chunk(flag):
        calls.append(flag)
        if len(calls) == chunk + 1:
            raise KeyboardInterrupt
        return agree(flag)

    monkeypatch.setattr(sim, "agree", interrupt_at_the_commit_of_chunk)
    out = str(tmp_path / "run.zarr")
    with pytest.raises(mf.RunInterrupted):
        mf.simulate(cfg, progress=False, out=out, checkpoint_seconds=0)
    monkeypatch.setattr(sim, "agree", agree)
    stored = mf.open_run(out)
    assert stored.sizes["t_snapshot"] >= 2  # the interrupted chunk's end snapshot is kept
    resumed = mf.simulate(cfg, progress=False, out=out, resume=True, checkpoint_seconds=0)
    xr.testing.assert_identical(resumed.load().drop_attrs(), reference)


def _calls_of_at_most(attempts, monkeypatch):
    """Make every run_chunk call of simulate take at most ``attempts`` step attempts; returns
    the list of (done, paused) of the calls."""
    real, calls = sim.run_chunk, []

    def counted(*args):
        out = real(*args)
        calls.append((bool(out[1]), bool(out[2])))
        return out

    monkeypatch.setattr(sim, "FIRST_CALL_ATTEMPTS", attempts)
    monkeypatch.setattr(sim, "next_call_attempts", lambda *args: attempts)
    monkeypatch.setattr(sim, "run_chunk", counted)
    return calls


@pytest.mark.parametrize("solver", [None, mf.Solver(kind="euler", dt=0.05)],
                         ids=["adaptive", "euler"])
def test_calls_paused_by_their_step_budget_give_the_run_of_one_call_per_chunk(solver,
                                                                           monkeypatch):
    """A compiled call hands back to the host after its step budget (Ctrl-C, progress) and the
    next call continues from there: the same steps, records and final state, bit for bit."""
    cfg = small_luo(precision="float64", **({"solver": solver} if solver else {}))
    reference = mf.simulate(cfg, progress=False).drop_attrs()
    calls = _calls_of_at_most(3, monkeypatch)
    paused = mf.simulate(cfg, progress=False).drop_attrs()
    xr.testing.assert_identical(paused, reference)
    assert sum(p for _, p in calls) > 10 and not calls[-1][1]  # paused often, not at the end
    steps = int(reference.n_steps[-1]) + int(reference.n_rejected[-1])
    assert len(calls) >= steps / 3


def test_ctrl_c_between_paused_calls_then_resume_equals_the_uninterrupted_run(monkeypatch,
                                                                           tmp_path):
    """Ctrl-C in the middle of a chunk (between two calls of its step budget): the store keeps
    its last commit and the records so far; the resumed run computes the chunk again."""
    cfg = small_luo(precision="float64", n_saves=20)
    reference = mf.simulate(cfg, progress=False).drop_attrs()
    calls = _calls_of_at_most(2, monkeypatch)
    counted = sim.run_chunk

    def interrupted(*args):
        if len(calls) == 25:
            raise KeyboardInterrupt
        return counted(*args)

    monkeypatch.setattr(sim, "run_chunk", interrupted)
    out = str(tmp_path / "run.zarr")
    with pytest.raises(mf.RunInterrupted) as info:
        mf.simulate(cfg, progress=False, out=out, checkpoint_seconds=0)
    assert calls[-1][1]  # the call before the Ctrl-C paused inside a chunk
    k = info.value.dataset.sizes["t"]
    assert 0 < k < reference.sizes["t"]
    monkeypatch.undo()
    resumed = mf.simulate(cfg, progress=False, out=out, resume=True, checkpoint_seconds=0)
    xr.testing.assert_identical(resumed.load().drop_attrs(), reference)


def test_a_call_that_keeps_no_record_adds_nothing_to_the_recorder():
    """A call paused before its first target keeps no record; it must not leave an empty
    array per variable behind (a long run pauses twice a second)."""
    recorder = sim._Recorder(small_luo())
    kept = recorder.add({"t": np.array([1.0, 2.0]), "loss": np.array([0.5, 0.4]),
                         "valid": np.array([False, False])})
    assert kept == 0 and recorder.records == {} and not recorder.has_pending
    assert recorder.add({"t": np.array([1.0, 2.0]), "loss": np.array([0.5, 0.4]),
                         "valid": np.array([True, False])}) == 1
    assert [len(v) for v in recorder.records.values()] == [1, 1]


def test_the_step_budget_of_a_call_follows_the_pace_of_the_last():
    assert sim.next_call_attempts(64, 64, 0.5 * 64 / 1000) == 256  # at most 4x the last
    assert sim.next_call_attempts(4096, 4096, 4096 / 1000) == 500  # 0.5 s at 1000 steps/s
    assert sim.next_call_attempts(64, 64, 100.0) == 16  # a first call that compiled
    assert sim.next_call_attempts(64, 0, 0.1) == 64  # nothing timed
    assert sim.next_call_attempts(2**30, 2**30, 1e-9) == np.iinfo(np.int32).max


def test_step_budget_error():
    with pytest.raises(mf.StepBudgetError, match="max_steps=5"):
        mf.simulate(small_luo(max_steps=5), progress=False)


def test_optax_sgd_equals_euler():
    euler = mf.simulate(small_luo(solver=mf.Solver(kind="euler", dt=1e-2), precision="float64"),
                        progress=False)
    sgd = mf.simulate(small_luo(solver=mf.Solver(kind="optax", dt=1e-2, optimizer="sgd",
                                                 optimizer_kwargs={"learning_rate": 1e-2}),
                                precision="float64"), progress=False)
    np.testing.assert_allclose(sgd.f_eval.values, euler.f_eval.values, rtol=1e-10, atol=1e-12)
    adam = mf.simulate(small_luo(solver=mf.Solver(kind="optax", dt=1e-2, optimizer="adam",
                                                  optimizer_kwargs={"learning_rate": 1e-2})),
                       progress=False)
    assert float(adam.loss[-1]) < float(adam.loss[0])


def test_frozen_marks_never_change():
    ds = mf.simulate(mf.presets.wang_ma(width=20, t_max=10.0, n_saves=20), progress=False)
    assert np.all(ds.snapshot_a.values == ds.snapshot_a.values[0])


def test_cli_run_writes_an_openable_store(tmp_path, capsys):
    out = tmp_path / "run.zarr"
    argv = ["run", "wang_ma", "--width", "20", "--t-max", "5", "--set", "kappa=0.05",
            "--set", "solver.rtol=1e-4", "--out", str(out), "--no-progress"]
    assert cli.main(argv + ["--resume"]) == 0  # nothing there yet: a new run, and it says so
    captured = capsys.readouterr()
    assert "saved" in captured.out and f"nothing to resume at {out}" in captured.err
    ds = xr.open_zarr(out)
    cfg = json.loads(ds.attrs["config"])
    assert cfg["model"]["width"] == 20 and cfg["solver"]["rtol"] == 1e-4
    assert cfg["model"]["init"]["scale"] == 0.05
    for name in ds.data_vars:
        ds[name].load()
    assert ds.loss.attrs["units"] == "1"
    assert cli.main(argv) == 0  # the same finished config: reported, not recomputed
    printed = capsys.readouterr().out
    assert "already complete" in printed and "plots" not in printed
    plots = tmp_path / "run_plots"
    drawn = {p.name: p.stat().st_mtime_ns for p in plots.iterdir()}
    (plots / "density.png").unlink()  # e.g. a Ctrl-C while the figures were drawn
    assert cli.main(argv) == 0  # reported, and the missing figure drawn, only it
    printed = capsys.readouterr().out
    assert "already complete" in printed and "(density.png)" in printed
    now = {p.name: p.stat().st_mtime_ns for p in plots.iterdir()}
    assert set(now) == set(drawn) and all(now[k] == drawn[k] for k in drawn if k != "density.png")
    shutil.rmtree(plots)
    plots.write_text("")  # a figure folder that cannot be made: the run is complete all the same
    assert cli.main(argv) == 0
    assert "figures not written" in capsys.readouterr().err
    outer = tmp_path / "outer.zarr"  # a run stored inside another store: its figures cannot be
    outer.mkdir()
    (outer / ".zgroup").write_text("{}")
    inner = argv[:argv.index("--out")] + ["--out", str(outer / "inner.zarr"), "--no-progress"]
    assert cli.main(inner) == 0
    assert (f"figures not written: the figure folder {outer / 'inner_plots'} is inside the "
            f"store {outer}" in capsys.readouterr().err)
    budget = tmp_path / "budget.zarr"  # a run that ended in an error fails again, no figures
    failed = argv[:-3] + ["--out", str(budget), "--no-progress", "--set", "max_steps=3"]
    assert cli.main(failed) == 1 and cli.main(failed) == 1
    assert "ended with max_steps" in capsys.readouterr().err
    assert not (tmp_path / "budget_plots").exists()
    other = ["run", "wang_ma", "--width", "20", "--t-max", "5", "--seed", "4", "--out",
             str(out), "--no-progress"]
    assert cli.main(other) == 2
    assert "another config" in capsys.readouterr().err
    assert cli.main(other + ["--resume"]) == 2
    assert "another config" in capsys.readouterr().err
    assert json.loads(xr.open_zarr(out).attrs["config"])["seed"] == 0


def test_default_stores_are_named_by_the_preset_arguments_given(tmp_path, monkeypatch, capsys):
    label = cli._argument_label
    assert label("luo_1d", sets=["gamma=1.75", "width=4000", "solver.rtol=1e-4"]) == "-gamma1.75"
    assert label("luo_1d", t_max=1e6, sets=["gamma=1.0", "seed=3"]) == ""  # the defaults
    assert label("wang_ma", t_max=20.0, sets=["precision='float32'", "kappa=0.05"]) \
        == "-kappa0.05-t_max20-precisionfloat32"  # in the preset's order
    monkeypatch.chdir(tmp_path)
    base = ["run", "wang_ma", "--width", "20", "--t-max", "5", "--no-progress", "--no-plots"]
    for kappa in ("0.05", "0.08"):  # two runs that differ in a preset argument: two stores
        assert cli.main(base + ["--set", f"kappa={kappa}"]) == 0
        assert f"runs/wang_ma-kappa{kappa}-t_max5-m20-s0.zarr" in capsys.readouterr().out
    assert cli.main(["limit", "wang_ma", "--t-max", "5"]) == 0
    assert "runs/wang_ma-t_max5-limit-wang_ma.zarr" in capsys.readouterr().out
    # a config field is not in the name: the clash says how to keep both runs
    assert cli.main(base + ["--set", "kappa=0.05", "--set", "solver.rtol=1e-4"]) == 2
    assert "another config (solver.rtol" in (err := capsys.readouterr().err)
    assert "--out keeps both" in err


def test_cli_rejects_bad_values(capsys):
    assert cli.main(["run", "wang_ma", "--set", "kappa=-1", "--no-progress"]) == 2
    assert "kappa=-1" in capsys.readouterr().err  # the preset argument, as typed
    for flag, key in ((["--width", "100"], "width=200"), (["--width", "100"], "model.width=200"),
                      (["--seed", "1"], "seed=2"), (["--t-max", "5"], "t_max=6")):
        assert cli.main(["run", "wang_ma", *flag, "--set", key, "--no-progress"]) == 2
        err = capsys.readouterr().err  # a flag and a --set of one setting: neither wins silently
        assert f"{flag[0]} {flag[1]} and --set {key} both set" in err, err  # as typed
    assert cli.main(["run", "wang_ma", "--set", "rtol=1e-4", "--set", "solver.rtol=1e-5",
                     "--no-progress"]) == 2  # a preset argument and the config field it sets
    assert "--set rtol=1e-4 and --set solver.rtol=1e-5 both set rtol" in capsys.readouterr().err
    assert cli.main(["run", "wang_ma", "--checkpoint-seconds", "3", "--set",
                     "checkpoint_seconds=60", "--no-progress"]) == 2
    assert "--checkpoint-seconds 3 and --set checkpoint_seconds=60" in capsys.readouterr().err
    assert cli.main(["run", "luo_1d", "--set", "solver.rtl=1", "--no-progress"]) == 2
    assert "solver.rtl" in capsys.readouterr().err
    assert cli.main(["run", "wang_ma", "--set", "novalue", "--no-progress"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


class _ArgumentsTaken(Exception):
    """Raised by the stand-in ``run_chunk`` once it has the loop's arguments."""


def _run_chunk_arguments(config, monkeypatch) -> tuple:
    """The arguments ``simulate(config)`` passes to ``run_chunk`` (nothing is compiled)."""
    taken = []

    class TakeArguments:
        def lower(self, *args):  # the compile-ahead thread: nothing to compile here
            raise RuntimeError("not compiled")

        def __call__(self, *args):
            taken.append(args)
            raise _ArgumentsTaken

    monkeypatch.setattr(sim, "run_chunk", TakeArguments())
    with pytest.raises(_ArgumentsTaken):
        mf.simulate(config, progress=False)
    monkeypatch.undo()
    return taken[0]


def _equations(jaxpr):
    """Every equation of ``jaxpr`` and of the jaxprs nested in it (loops, branches, calls)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


@pytest.mark.parametrize("case", ["luo_adaptive", "wang_ma_adaptive", "wang_ma_euler",
                                  "wang_ma_heun", "wang_ma_adam"])
def test_every_float_product_of_a_run_asks_for_full_precision(case, monkeypatch):
    """On TPU and GPU a matrix product at JAX's default precision multiplies float32 in
    bfloat16 or TF32: every float dot of the run program (integrator steps, observables) asks
    for HIGHEST. Wang & Ma (D = 21) takes the dot path of the pre-activations, Luo (D = 2) the
    multiply-adds; the programs are traced, not compiled."""
    solvers = {"adaptive": mf.Solver(kind="adaptive"), "euler": mf.Solver(kind="euler", dt=0.1),
               "heun": mf.Solver(kind="heun", dt=0.1),
               "adam": mf.Solver(kind="optax", optimizer="adam", dt=0.1,
                                 optimizer_kwargs={"learning_rate": 0.01})}
    preset, solver = case.split("_", 1) if case.startswith("luo") else case.rsplit("_", 1)
    config = (small_luo() if preset == "luo" else mf.presets.wang_ma()).replace(
        solver=solvers[solver], precision="float32")
    jaxpr = jax.make_jaxpr(sim.run_chunk)(*_run_chunk_arguments(config, monkeypatch)).jaxpr
    dots = [e for e in _equations(jaxpr) if e.primitive.name == "dot_general"]
    floats = [e for e in dots if np.issubdtype(e.invars[0].aval.dtype, np.floating)]
    assert len(floats) >= 3  # the velocity or motion, the output and an observable
    highest = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
    assert [e.params["precision"] for e in floats] == [highest] * len(floats)


def test_a_run_from_custom_particles_repeats_bitwise_from_its_dataset():
    """docs/getting-started: the first snapshot of a run from initial particles of one's own
    holds them, so mf.run_config(ds) with those particles repeats the run bit for bit."""
    from meanfield.particles import Particles

    config = mf.presets.luo_1d(width=24, t_max=2.0, n_saves=10)
    rng = np.random.default_rng(1)
    start = Particles(a=0.1 * rng.standard_normal(24), w=0.1 * rng.standard_normal((24, 2)))
    ds = mf.simulate(config, initial=start, progress=False)
    assert ds.attrs["initial"] == "custom" and float(ds.t_snapshot[0]) == 0.0
    first = ds.isel(t_snapshot=0)
    np.testing.assert_array_equal(first.snapshot_a.values, start.a.astype(np.float32))
    again = mf.simulate(mf.run_config(ds), progress=False, initial=Particles(
        a=first.snapshot_a.values, w=first.snapshot_w.values))
    for name in ds.data_vars:
        if name in again and "wall" not in name:
            xr.testing.assert_identical(ds[name], again[name])
