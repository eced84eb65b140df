"""infinite_width dispatch: which limit applies, and clear errors when none does."""

import pytest

import meanfield as mf
from meanfield.cli import main
from meanfield.limits.api import applicable_limits, check_options, infinite_width


def test_regimes_pick_their_limit():
    assert applicable_limits(mf.presets.wang_ma())["wang_ma"] == "applies"
    assert applicable_limits(mf.presets.luo_1d(gamma=0.5))["kernel"] == "applies"
    balanced = mf.presets.luo_1d().replace(
        model=mf.ModelSpec(width=100, init=mf.InitialLaw(kind="balanced", scale=1.0)))
    assert applicable_limits(balanced)["mean_field"] == "applies"


def test_condensed_regime_says_why():
    with pytest.raises(ValueError, match="condensed regime.*no fixed-time limit"):
        infinite_width(mf.presets.luo_1d(gamma=1.75))
    with pytest.raises(ValueError, match="kind="):
        infinite_width(mf.presets.luo_1d(gamma=0.5), kind="ntk")
    with pytest.raises(ValueError, match=r"kind='kernal' is not allowed; .*did you mean 'kernel'"):
        infinite_width(mf.presets.luo_1d(gamma=0.5), kind="kernal")
    with pytest.raises(ValueError, match="mean_field limit does not apply"):
        infinite_width(mf.presets.wang_ma(), kind="mean_field")


def test_critical_gaussian_falls_back_to_the_quadrature_reference():
    reasons = applicable_limits(mf.presets.luo_1d(gamma=1.0))
    assert reasons["kernel"] != "applies" and reasons["mean_field_reference"] == "applies"
    assert "m-independent" in applicable_limits(mf.presets.luo_1d(gamma=0.5))["mean_field_reference"]


def test_margin_loss_without_asi_has_a_kernel_limit():
    import numpy as np

    config = mf.presets.luo_1d(gamma=0.5, width=1000).replace(
        data=mf.TrainingData(x=[[-0.5], [-0.1], [0.1], [0.5]], y=[1.0, -1.0, -1.0, 1.0],
                             x_eval=np.linspace(-1, 1, 21)[:, None]),
        loss_tol=None, **{"model.loss": "exponential",
                          "model.init": mf.InitialLaw(kind="gaussian", asi=False)})
    assert applicable_limits(config)["kernel"] == "applies"
    limit = infinite_width(config, t=[0.01, 0.1], samples=16)
    assert limit.attrs["limit"] == "kernel" and limit.attrs["mc_samples"] == 16
    assert limit.attrs["initial_function"] == "gaussian process: Monte Carlo"
    assert limit.f_eval_var.shape == (3, 21) and limit.accuracy.dims == ("t",)


@pytest.mark.parametrize("kind, typo, match", [
    ("kernel", "sample", r"option 'sample' is not one of the kernel limit's options \(did you "
                         r"mean 'samples'\?\): t, part, samples, seed"),
    ("wang_ma", "rho_pls", r"\(did you mean 'rho_plus'\?\)"),
])
def test_a_mistyped_limit_option_names_the_options(kind, typo, match):
    config = mf.presets.wang_ma() if kind == "wang_ma" else mf.presets.luo_1d(gamma=0.5, width=500)
    with pytest.raises(ValueError, match=match):  # before any compute: a TypeError otherwise
        infinite_width(config, kind=kind, **{typo: 3})


@pytest.mark.parametrize("kind, options, match", [
    ("kernel", {"samples": "abc"}, r"samples='abc' is not allowed; it must be an integer >= 2"),
    ("kernel", {"part": "k2"}, r"part='k2' is not allowed; choose one of \('both', 'k1', 'k0'\)"),
    ("kernel", {"t": [1.0, float("inf"), 2.0]}, r"t=.* \(the last may be inf\)"),
    ("mean_field", {"cfl": 0.7}, r"cfl=0.7 must be in \(0, 1/2\]"),
    ("mean_field", {"t": [0.0, float("nan")]}, r"t=.* strictly increasing finite times >= 0"),
    ("mean_field_reference", {"levels": (256, 1000)}, r"powers of two"),
    ("wang_ma", {"rho_plus": 2}, r"rho_plus=2 is not allowed; it must be a fraction"),
    ("wang_ma", {"t": [2.0, 1.0]}, r"t=\[2.0, 1.0\] is not allowed"),
    ("mean_field", {"t": []}, r"t=\[\] is not allowed; it must be one or more"),
    ("kernel", {"t": []}, r"t=\[\] is not allowed; it must be one or more"),
])
def test_a_limit_option_value_is_checked_before_any_compute_and_any_store(
        kind, options, match, tmp_path, capsys):
    """check_options (what infinite_width and meanfield limit call first) refuses the values
    each solver refuses; on the command line before the store at --out is looked at (it was
    reported as a store of other options, with advice to overwrite it)."""
    check_options(kind, {"t": [0.0, 1.0]})  # a good value passes
    with pytest.raises(ValueError, match=match):
        check_options(kind, options)
    if kind == "kernel" and "t" not in options:  # values the command line can spell
        out = tmp_path / "limit.zarr"
        out.mkdir()  # anything at --out: the option is refused before it is read
        (out / "notes.txt").write_text("mine")
        argv = ["limit", "luo_1d", "--set", "gamma=0.5", "--width", "256", "--out", str(out)]
        argv += [f"--option={key}={value!r}" for key, value in options.items()]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "holds something else" not in err and "not allowed" in err, err


@pytest.mark.parametrize("kind", ["wang_ma", "mean_field", "mean_field_reference", "kernel"])
def test_each_option_check_takes_its_solvers_options_and_defaults(kind):
    """check_options calls the kind's option check with the options the solver takes: the two
    signatures (names, keyword-only or not, defaults) must not drift apart."""
    import inspect

    from meanfield.limits import api

    solver = list(inspect.signature(api._solver(kind)).parameters.values())[1:]  # the config
    check = list(inspect.signature(api._solver(kind, check=True)).parameters.values())
    assert [(p.name, p.default) for p in check] == [(p.name, p.default) for p in solver]


def test_a_store_of_an_earlier_version_with_a_default_option_is_the_same_limit(tmp_path, capsys):
    """Stores once recorded options given at their default values (rho_plus=None); the same
    command finds them, as the store of the same limit."""
    from meanfield.io import open_run, save_run

    out = str(tmp_path / "limit.zarr")
    limit = infinite_width(mf.presets.wang_ma(), t=[0.5, 1.0])
    save_run(limit.assign_attrs(limit_options='{"rho_plus": null, "t": [0.5, 1.0]}'), out)
    argv = ["limit", "wang_ma", "--out", out, "--option", "t=[0.5, 1.0]"]
    assert main(argv + ["--option", "rho_plus=None"]) == 0 and main(argv) == 0
    assert capsys.readouterr().out.count("already computed") == 2
    assert open_run(out).attrs["limit_options"] == '{"rho_plus": null, "t": [0.5, 1.0]}'
