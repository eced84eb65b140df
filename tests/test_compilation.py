"""Persistent compilation cache (meanfield.compilation) and the light ``import meanfield``."""

import json
import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meanfield import compilation

# a small run in a fresh process; prints the run's numbers, jax's persistent-cache events and
# whether optax was imported (only optax runs need it)
RUN = """
import json, sys
import jax.monitoring
import meanfield as mf
events = []
jax.monitoring.register_event_listener(
    lambda name, **kw: events.append(name.rsplit("/", 1)[-1]) if "compilation_cache" in name else None)
ds = mf.simulate(mf.presets.wang_ma(width=8, t_max=1.0), progress=False)
print(json.dumps({"hits": events.count("cache_hits"), "misses": events.count("cache_misses"),
                  "loss": ds.loss.values.tolist(), "dir": mf.compilation.enable_compilation_cache(),
                  "optax": "optax" in sys.modules}))
"""


def start_fresh(cache: str) -> subprocess.Popen:
    env = {**os.environ, compilation.ENV_VAR: cache}
    return subprocess.Popen([sys.executable, "-c", RUN], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    return json.loads(out.splitlines()[-1])


def entries(path) -> list:
    return sorted(p for p in path.rglob("*-cache") if p.is_file())


def test_concurrent_processes_share_the_cache_and_a_later_one_reads_it(tmp_path):
    both = [start_fresh(str(tmp_path)) for _ in range(2)]  # two cold processes at once
    first, other = (result(proc) for proc in both)
    assert first["dir"].startswith(str(tmp_path)) and f"jax-{jax.__version__}-" in first["dir"]
    assert first["misses"] > 0 and other["loss"] == first["loss"]
    assert not first["optax"]  # an adaptive run leaves optax unimported
    written = entries(tmp_path)
    assert any(path.name.startswith("jit_run_chunk-") for path in written)
    # every program written is read (programs that compile faster than
    # compilation.MIN_COMPILE_SECONDS are not written and compile again)
    second = result(start_fresh(str(tmp_path)))
    assert second["hits"] == len(written)
    assert second["loss"] == first["loss"]


def test_cache_switch_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(compilation.ENV_VAR, "off")
    assert compilation.compilation_cache_base() is None
    monkeypatch.setenv(compilation.ENV_VAR, str(tmp_path / "env"))
    assert compilation.compilation_cache_base() == str(tmp_path / "env")
    monkeypatch.delenv(compilation.ENV_VAR)
    assert "meanfield" in compilation.compilation_cache_base()  # per-user default (not touched)
    monkeypatch.setenv(compilation.ENV_VAR, str(tmp_path / "env"))
    try:
        compilation.set_compilation_cache(False)
        assert compilation.compilation_cache_base() is None
        assert compilation.enable_compilation_cache() is None
        compilation.set_compilation_cache(tmp_path / "api")
        assert compilation.enable_compilation_cache().startswith(str(tmp_path / "api"))
        assert jax.config.jax_compilation_cache_dir.startswith(str(tmp_path / "api"))
    finally:
        compilation.set_compilation_cache(None)
    assert compilation.enable_compilation_cache().startswith(str(tmp_path / "env"))
    with pytest.raises(ValueError, match="set_compilation_cache"):
        compilation.set_compilation_cache(3)


def test_corrupt_entry_in_process_warns_and_recompiles(tmp_path, monkeypatch):
    monkeypatch.setattr(compilation, "MIN_COMPILE_SECONDS", 0.0)
    try:
        compilation.set_compilation_cache(tmp_path)
        compilation.enable_compilation_cache()
        f = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) * 3.0))
        x = jnp.arange(7.0)
        expected = np.asarray(f(x))
        written = entries(tmp_path)
        assert written
        for path in written:
            path.write_bytes(path.read_bytes()[:10])  # a write cut short
        jax.clear_caches()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again = np.asarray(f(x))
        assert any("persistent compilation cache" in str(w.message) for w in caught)
        np.testing.assert_array_equal(again, expected)
    finally:
        compilation.set_compilation_cache(None)


def test_import_meanfield_loads_no_heavy_module():
    heavy = ["jax", "jaxlib", "xarray", "zarr", "scipy", "matplotlib", "optax", "pandas",
             "meanfield.limits", "meanfield.validation", "meanfield.runner"]
    code = ("import sys, meanfield; "
            f"print([m for m in {heavy!r} if m in sys.modules]); "
            "assert {'simulate', 'presets', 'SimulationConfig', 'compare'} <= set(dir(meanfield))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def test_lazy_names_resolve():
    import meanfield as mf

    for name in mf.__all__:
        assert getattr(mf, name) is not None
    assert mf.simulate.__module__ == "meanfield.runner"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mf.nope
