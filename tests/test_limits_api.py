"""infinite_width dispatch: which limit applies, and clear errors when none does."""

import pytest

import meanfield as mf
from meanfield.limits.api import applicable_limits, infinite_width


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
