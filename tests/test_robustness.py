"""Attacks on the public API and the command line: every invalid or extreme input ends in a
clear error naming the parameter as the user typed it, before any compute; every command line
ends in a message and an exit status, never a traceback."""

import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import meanfield as mf
from meanfield import cli, presets
from meanfield.plot import check_figure_folder
from meanfield.config import Observe, SaveAt
from meanfield.particles.model import TrainingData

HUGE = st.integers(min_value=2**63, max_value=2**80)
JUNK = st.one_of(st.text(max_size=4), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
NOT_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


def bad_int(lo, hi=2**31 - 1, none_ok=False):
    """Values an integer parameter from lo to hi must refuse."""
    out = st.one_of(st.integers(max_value=lo - 1), st.integers(min_value=hi + 1), HUGE,
                    st.floats(allow_nan=True), st.booleans(), JUNK)
    return out if none_ok else st.one_of(out, st.none())


def bad_positive(zero_ok=False, none_ok=False):
    """Values a positive (or nonnegative) real parameter must refuse."""
    negative = st.floats(max_value=-1e-300) if zero_ok else st.floats(max_value=0.0)
    out = st.one_of(negative, NOT_FINITE, st.booleans(), JUNK)
    return out if none_ok else st.one_of(out, st.none())


def bad_choice(allowed, none_allowed=False):
    bad = [st.text(max_size=8).filter(lambda v: v not in allowed), st.integers()]
    return st.one_of(*bad, *([] if none_allowed else [st.none()]))


# (call with one keyword, keyword, name expected in the message, invalid values)
luo = presets.luo_1d
wang = presets.wang_ma
base = presets.luo_1d(width=20)
TARGETS = [
    (wang, "width", "width", bad_int(1)),
    (wang, "seed", "seed", bad_int(0, 2**63 - 1)),
    (wang, "kappa", "kappa", bad_positive()),
    (wang, "p", "p", bad_int(1)),
    (wang, "d", "d", bad_int(2)),
    (wang, "t_max", "t_max", bad_positive()),
    (wang, "rtol", "rtol", bad_positive()),
    (wang, "n_saves", "n_saves", bad_int(1, 10_000_000)),
    # a preset's precision=None is its per-backend default (meanfield.presets.PRECISION)
    (wang, "precision", "precision", bad_choice(("float32", "float64"), none_allowed=True)),
    (wang, "noisy", "noisy", st.one_of(st.integers(), JUNK, st.none())),
    (luo, "gamma", "gamma", st.one_of(NOT_FINITE, st.booleans(), JUNK, st.none())),
    (luo, "gamma_prime", "gamma_prime", st.one_of(NOT_FINITE, st.booleans(), JUNK)),
    (luo, "mse_tol", "mse_tol", bad_positive()),
    (luo, "width", "width", st.one_of(bad_int(1), st.integers(0, 10**6).map(lambda v: 2 * v + 1))),
    (luo, "seed", "seed", bad_int(0, 2**63 - 1)),
    (luo, "n_saves", "n_saves", bad_int(1, 10_000_000)),
    (SaveAt, "n", "save.n", bad_int(1, 10_000_000)),
    (SaveAt, "t_min", "save.t_min", bad_positive(none_ok=True)),
    (SaveAt, "t", "save.t", st.one_of(st.lists(st.floats(max_value=0), min_size=1, max_size=3),
                                      st.lists(NOT_FINITE, min_size=1, max_size=2),
                                      st.text(min_size=1, max_size=3), st.just([]),
                                      st.just([2.0, 1.0]))),
    (SaveAt, "snapshots", "save.snapshots", st.one_of(st.integers(max_value=-1), HUGE,
                                                      st.text(min_size=1, max_size=3),
                                                      st.lists(NOT_FINITE, min_size=1, max_size=2),
                                                      st.booleans())),
    (Observe, "n_angle_bins", "observe.n_angle_bins", bad_int(4, 100_000)),
    (Observe, "n_cosine_bins", "observe.n_cosine_bins", bad_int(2, 100_000)),
    (Observe, "peak_delta", "observe.peak_delta", bad_positive(zero_ok=True)),
    (Observe, "peaks", "observe.peaks", bad_int(1, 120)),
    (Observe, "plane", "observe.plane", st.one_of(st.integers(), st.text(min_size=1, max_size=3),
                                                  st.lists(st.floats(), min_size=3, max_size=3),
                                                  st.just(((1.0, 0.0), (0.0,))))),
    (Observe, "references", "observe.references",
     st.one_of(st.integers(), st.just([("a", "x")]), st.just([(1, (1.0,))]),
               st.just([("zero", (0.0, 0.0))]), st.just([("a", (1.0,)), ("a", (1.0,))]))),
    (base.replace, "t_max", "t_max", bad_positive()),
    (base.replace, "loss_tol", "loss_tol", bad_positive(none_ok=True)),
    (base.replace, "seed", "seed", bad_int(0, 2**63 - 1)),
    (base.replace, "max_steps", "max_steps", bad_int(1)),
    (base.replace, "chunk_size", "chunk_size", bad_int(1, none_ok=True)),
    (base.replace, "precision", "precision", bad_choice(("float32", "float64"))),
    (base.replace, "name", "name", st.one_of(st.integers(), st.none(), st.lists(st.text()))),
    (lambda **kw: base.replace(**{f"model.{k}": v for k, v in kw.items()}), "width",
     "model.width", bad_int(1)),
    (lambda **kw: base.replace(**{f"solver.{k}": v for k, v in kw.items()}), "rtol",
     "solver.rtol", bad_positive()),
    (lambda **kw: TrainingData(y=[1.0, 2.0], **kw), "x", "data.x",
     st.one_of(st.just([[1.0], [1.0, 2.0]]), st.just(["abc", "d"]), st.just([]),
               st.just([[math.nan], [1.0]]), st.none())),
    (lambda **kw: TrainingData(x=[[1.0], [2.0]], **kw), "y", "data.y",
     st.one_of(st.just(["a", "b"]), st.just([1.0]), st.just([[1.0, 2.0]]),
               st.just([math.inf, 1.0]))),
    (lambda **kw: TrainingData(x=[[1.0], [2.0]], y=[1.0, 1.0], **kw), "weights", "data.weights",
     st.one_of(st.just([0.7, 0.7]), st.just([-1.0, 2.0]), st.just("ab"), st.just([1.0]))),
    (lambda **kw: TrainingData(x=[[1.0], [2.0]], y=[1.0, 1.0], **kw), "name", "data.name",
     st.one_of(st.integers(), st.lists(st.integers(), max_size=1))),
    (lambda **kw: mf.simulate(base, progress=False, **kw), "checkpoint_seconds",
     "checkpoint_seconds", bad_positive(zero_ok=True)),
    (lambda **kw: mf.simulate(progress=False, **kw), "config", "config",
     st.one_of(st.integers(), st.none(), JUNK, st.just({"t_max": 1.0}))),
    (lambda **kw: mf.simulate(base, **kw), "progress", "progress",
     st.one_of(st.integers(), JUNK, st.just("yes"))),
    (lambda **kw: mf.simulate(base, progress=False, **kw), "out", "out",
     st.one_of(st.integers(), st.floats(), st.lists(st.text(), min_size=1, max_size=2))),
    (lambda **kw: mf.simulate(base, progress=False, out="never-written.zarr", **kw), "resume",
     "resume", st.one_of(st.integers(), st.none(), JUNK)),
    (lambda **kw: mf.simulate(base, progress=False, out="never-written.zarr", **kw), "overwrite",
     "overwrite", st.one_of(st.integers(), st.none(), JUNK)),
]
EXAMPLES = 10  # per target: len(TARGETS) * 10 >= 300 inputs
tried = {"n": 0}


@pytest.mark.parametrize("call, keyword, name, values", TARGETS,
                         ids=[f"{i}-{t[2]}" for i, t in enumerate(TARGETS)])
def test_invalid_input_is_a_clear_error_naming_the_parameter(call, keyword, name, values):
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(value=values)
    def attack(value):
        tried["n"] += 1
        with pytest.raises((ValueError, TypeError)) as info:
            call(**{keyword: value})
        message = str(info.value)
        assert name in message, message
        assert "Traceback" not in message and len(message) < 1000

    attack()


def test_the_suite_tries_at_least_300_inputs():
    assert len(TARGETS) * EXAMPLES >= 300


@pytest.mark.parametrize("value", [2**31 - 1, 2**63 - 1, np.int64(7), np.uint8(3)])
def test_extreme_but_valid_integers_are_accepted(value):
    config = base.replace(seed=value)
    assert config.seed == int(value) and type(config.seed) is int
    assert base.replace(max_steps=2**31 - 1).max_steps == 2**31 - 1


def test_unknown_names_suggest_the_closest():
    with pytest.raises(ValueError, match="did you mean 'kappa'"):
        presets.get("wang_ma", kapa=0.1)
    with pytest.raises(ValueError, match="did you mean 'wang_ma'"):
        presets.get("wangma")
    with pytest.raises(ValueError, match="did you mean 'rtol'"):
        base.replace(**{"solver.rtl": 1e-3})


# ------------------------------------------------------------------------ command lines

RUN = ["run", "luo_1d", "--no-progress", "--no-plots"]
BAD_SETS = ["kappa=-1", "mse_tol=0", "mse_tol=abc", "gamma=nan", "gamma=inf", "width=7",
            "width=-2", "width=2**70", f"width={2**70}", f"seed={2**63}", "seed=-1",
            "seed=1.5", "n_saves=0", f"n_saves={2**40}", "precision=float16", "precision=1",
            "t_max=0", "t_max=-1", "t_max=inf", "rtol=0", "loss_tol=-1", f"max_steps={2**31}",
            "max_steps=0", "chunk_size=0", "save.n=0", "save.t=[]", "save.t=[2, 1]",
            "save.snapshots=-1", "observe.plane=5", "observe.peaks=0", "observe.references=5",
            "observe.n_angle_bins=3", "solver.kind=rk4", "solver.rtol=0", "solver.rtl=1",
            "model.width=0", "model.loss=hinge", "model.init.kind=uniform", "t_max.x=1",
            "nonsense=1", "gama=1", "novalue", "=3", "checkpoint_seconds=-1",
            "checkpoint_seconds=abc", "name=5", "data.x=abc", "solver=euler", "save=3"]
BAD_LINES = ([RUN + ["--set", item] for item in BAD_SETS] + [
    ["run", "wangma"], ["run", "luo"], ["run"], [], ["bogus"], ["run", "luo_1d", "--width", "x"],
    ["run", "luo_1d", "--width", "-4", "--no-progress"],
    ["run", "luo_1d", "--seed", str(2**64), "--no-progress"],
    ["run", "luo_1d", "--t-max", "nan", "--no-progress"],
    ["run", "luo_1d", "--resume", "--overwrite"], ["run", "luo_1d", "--out", "x" * 300],
    ["run", "luo_1d", "--out", ".", "--overwrite"], ["run", "luo_1d", "--out", "/", "--overwrite"],
    ["verify", "/nonexistent/run.zarr"], ["plot", "/nonexistent/run.zarr"],
    ["export", "/nonexistent/run.zarr", "x.nc"], ["run", "luo_1d", "--checkpoint-seconds", "x"],
])


def test_every_command_help_ends_with_examples(capsys):
    """The top level says every command has --help with examples: each command's does, and
    each example parses as a command line of that command."""
    import shlex

    commands = cli.make_parser()._subparsers._group_actions[0].choices
    for name, parser in commands.items():
        help_text = parser.format_help()
        assert "\nexamples:\n" in help_text, name
        for line in help_text.split("\nexamples:\n")[1].splitlines():
            if line.strip().startswith("meanfield "):
                argv = shlex.split(line.split("  #")[0])[1:]
                assert argv[0] == name, line
                cli.make_parser().parse_args(argv)  # raises SystemExit on a bad example


def test_messages_say_how_to_go_on(capsys, tmp_path):
    assert cli.main(RUN + ["--set", "solver=euler"]) == 2
    assert ("solver is a group of config fields; set one of them (--set solver.kind=...)"
            in capsys.readouterr().err)
    assert cli.main(RUN + ["--set", "nonsense=1"]) == 2
    assert "run options: checkpoint_seconds" in capsys.readouterr().err
    # a preset argument and a config field it sets, given together (kappa sets the init scale)
    assert cli.main(["run", "wang_ma", "--no-progress", "--no-plots", "--set", "kappa=0.05",
                     "--set", "model.init.scale=0.1"]) == 2
    assert ("--set kappa=0.05 and --set model.init.scale=0.1 both set model.init.scale"
            in capsys.readouterr().err)
    # ...at its default value too (0.1): the field would win, and kappa's save.t_min stay
    with pytest.raises(cli.UsageError, match=r"--set kappa=0.1 and --set model.init.scale=0.2 "
                                             r"both set model.init.scale"):
        cli.build_config("wang_ma", sets=["kappa=0.1", "model.init.scale=0.2"])
    with pytest.raises(cli.UsageError, match="both set model.parametrisation.gamma_prime"):
        cli.build_config("luo_1d", sets=["gamma_prime=0.0",  # a float default of 0
                                         "model.parametrisation.gamma_prime=0.5"])
    # a field the argument does not set is no clash, whatever the argument's value
    for kappa in ("0.1", "0.05"):
        config = cli.build_config("wang_ma", sets=[f"kappa={kappa}", "solver.rtol=1e-4"])
        assert (config.model.init.scale, config.solver.rtol) == (float(kappa), 1e-4)
    # ...but a preset that would not validate without the argument is no clash
    config = cli.build_config("wang_ma", t_max=1e-5, sets=["kappa=0.001", "solver.rtol=1e-4"])
    assert (config.model.init.scale, config.solver.rtol) == (0.001, 1e-4)
    # a nested field is named by the path the user typed, not by its class
    assert cli.main(RUN + ["--set", "model.init.kind=uniform"]) == 2
    assert "model.init.kind='uniform' is not allowed" in capsys.readouterr().err
    # the hint for a mistyped optimiser is an optimiser, not another optax function (chain)
    assert cli.main(RUN + ["--set", "solver.kind=optax", "--set", "solver.dt=0.1",
                           "--set", "solver.optimizer=chian"]) == 2
    err = capsys.readouterr().err
    assert "solver.optimizer='chian' is not an optax optimiser name" in err, err
    assert "chain" not in err.replace("chian", "")
    (tmp_path / "figures").write_text("mine")
    assert cli.main(["plot", "/nonexistent/run.zarr", "--out", str(tmp_path / "figures")]) == 2
    assert "is a file; give a folder for the figures" in capsys.readouterr().err
    # figures inside a store would make it foreign (no longer replaceable): refused
    store = tmp_path / "run.zarr"
    store.mkdir()
    (store / ".zgroup").write_text("{}")
    for inside in (store, store / "figures"):
        assert cli.main(["plot", "/nonexistent/run.zarr", "--out", str(inside)]) == 2
        assert (f"--out {inside} is inside the store {store}: figures go beside a store, not "
                "into it" in capsys.readouterr().err)
        with pytest.raises(ValueError, match="out_dir .* is inside the store"):
            check_figure_folder(inside)
    assert not (store / "figures").exists()
    check_figure_folder(tmp_path / "plain")  # a folder beside it is fine
    (tmp_path / "link").symlink_to(store / "figures", target_is_directory=True)
    with pytest.raises(ValueError, match="is inside the store"):  # also through a link
        check_figure_folder(tmp_path / "link")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a meanfield run store") as info:
        mf.simulate(presets.luo_1d(width=20, t_max=1.0), out=str(tmp_path / "folder"),
                    progress=False)
    assert "overwrite" not in str(info.value)
    assert (tmp_path / "folder" / "notes.txt").read_text() == "mine"


def test_at_least_50_bad_command_lines():
    assert len(BAD_LINES) >= 50


@pytest.mark.parametrize("argv", BAD_LINES, ids=[" ".join(a)[:60] for a in BAD_LINES])
def test_bad_command_line_ends_in_a_message(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status = cli.main(argv)
    captured = capsys.readouterr()
    assert status in (1, 2), (status, captured)
    assert "Traceback" not in captured.err
    assert captured.err.strip(), "no message"
    assert os.listdir(tmp_path) == [], "a refused command wrote something"


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(ValueError, match="kappa"):
        cli.main(RUN + ["--set", "kappa=-1", "--debug"])


def test_help_is_not_an_error(capsys):
    assert cli.main(["--help"]) == 0
    assert "verify" in capsys.readouterr().out


@pytest.mark.parametrize("argv, status, text", [
    (["run", "wangma"], 2, "did you mean 'wang_ma'"),
    (["run", "luo_1d", "--set", f"max_steps={2**31}", "--no-progress"], 2, "max_steps"),
])
def test_installed_command_ends_in_a_message(argv, status, text):
    proc = subprocess.run([sys.executable, "-c", "from meanfield.cli import console_main; "
                           "console_main()", *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == status and text in proc.stderr and "Traceback" not in proc.stderr


def test_warnings_are_one_line_messages_but_not_under_debug(capsys, monkeypatch):
    def noted(args):
        warnings.warn("rays.png skipped: the dataset has no particle snapshots", stacklevel=2)
        warnings.warn("meanfield: compilation cache disabled", stacklevel=2)
        return 0

    monkeypatch.setattr(cli, "cmd_presets", noted)
    assert cli.main(["presets"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == ["meanfield: rays.png skipped: the dataset has no particle "
                                "snapshots", "meanfield: compilation cache disabled"]
    seen = []
    monkeypatch.setattr(cli, "cmd_presets", lambda args: seen.append(warnings.showwarning) or 0)
    assert cli.main(["presets", "--debug"]) == 0 and seen[0] is not cli._show_warning
