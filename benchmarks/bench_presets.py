"""Time to first result, as a new user sees it: every command in a fresh process.

Prints JSON with, for each case, the wall times of N fresh processes and their median:

* ``python_startup``: ``python -c pass`` (the interpreter and its site packages, for reference);
* ``import``: ``python -c "import meanfield"``;
* ``wang_ma_cold``: ``meanfield run wang_ma`` (simulation, store, phases and the figures) with an
  empty compilation cache (a new cache directory per repetition);
* ``wang_ma_warm``: the same command with the cache filled by one earlier run;
* ``wang_ma_warm_no_plots``: the same with ``--no-plots`` (the figures' share);
* ``stack_import``: ``python -c "import jax, xarray, zarr, matplotlib.pyplot"``, the libraries
  a run with a store and figures imports: a floor under any warm ``meanfield run``;
* ``jax_first_program``: importing jax and running one jitted ``x + 1`` (cache off): the floor
  of any process that computes with jax;
* ``luo_1d_condensed_m4000_warm``: ``meanfield run luo_1d --set gamma=1.75 --width 4000``, warm
  (skipped with ``--quick``).

The machine load (1-minute load average before and after each case, and the CPU count) is recorded
beside the times: on a shared machine the ratios within one run are the figures to compare.
``--baseline-src DIR`` also times the cold and warm ``wang_ma`` runs of another version of the
package (its ``meanfield`` directory in DIR, laid out as installed: ``bench_engine.baseline_env``),
the two versions' processes in turn, and adds the ratios baseline / current.

    python benchmarks/bench_presets.py [--quick] [--repeat N] [--baseline-src DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from bench_engine import baseline_env, emit

CACHE_ENV = "MEANFIELD_COMPILATION_CACHE"  # meanfield.compilation.ENV_VAR (not imported: timing)
WANG_MA = ["wang_ma"]
LUO = ["luo_1d", "--set", "gamma=1.75", "--width", "4000"]
TARGETS_S = {"import": 0.6, "wang_ma_cold": 5.0, "wang_ma_warm": 2.0}


def package_versions() -> dict:
    """Versions of the libraries a run imports: their import costs differ between releases."""
    names = ("jax", "jaxlib", "ml_dtypes", "numpy", "xarray", "zarr", "matplotlib")
    return {name: importlib.metadata.version(name) for name in names}


def timed(cmd: list[str], env: dict, cwd: str) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=cwd,
                         stdin=subprocess.DEVNULL)
    return time.perf_counter() - start, out.stdout


def steps_from_summary(text: str) -> int | None:
    for line in text.splitlines():
        if line.startswith("stopped"):
            for token in line.split():
                if token.startswith("steps="):
                    return int(token.split("=")[1])
    return None


def run_cmd(preset_args: list[str], out: str) -> list[str]:
    return [sys.executable, "-m", "meanfield.cli", "run", *preset_args, "--out", out,
            "--no-progress", "--overwrite"]


def case(name: str, repeat: int, make) -> dict:
    """``make(i) -> (cmd, env, cwd)`` for repetition i; median of the wall times."""
    return interleaved(repeat, {name: make})[name]


def interleaved(repeat: int, makes: dict) -> dict:
    """Records of several cases ``{name: make}`` measured in turn, repetition by repetition."""
    load_before = os.getloadavg()[0]
    walls = {name: [] for name in makes}
    steps = dict.fromkeys(makes)
    for i in range(repeat):
        for name, make in makes.items():
            wall, text = timed(*make(i))
            walls[name].append(wall)
            steps[name] = steps_from_summary(text) or steps[name]
    records = {}
    for name in makes:
        record = {"median_s": statistics.median(walls[name]), "wall_s_all": walls[name],
                  "load_before": load_before, "load_after": os.getloadavg()[0]}
        if steps[name] is not None:
            record["steps"] = steps[name]
        if name in TARGETS_S:
            record["target_s"] = TARGETS_S[name]
            record["holds"] = record["median_s"] <= TARGETS_S[name]
        records[name] = record
    return records


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="wang_ma only, one repetition")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline-src", help="a directory holding another version of the "
                        "meanfield package to time beside this one")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else args.repeat
    results = {"meta": {"repeat": repeat, "quick": args.quick, "cpus": os.cpu_count(),
                        "python": platform.python_version(), "platform": platform.platform(),
                        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "versions": package_versions()},
               "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        base_env = {**os.environ, "MPLBACKEND": "Agg"}
        cases = results["cases"]
        envs = {"": base_env}
        if args.baseline_src:
            envs["baseline_"] = baseline_env(args.baseline_src, base_env)
            results["meta"]["baseline_src"] = os.path.abspath(args.baseline_src)
        cases["python_startup"] = case("python_startup", repeat, lambda i: (
            [sys.executable, "-c", "pass"], base_env, tmp))
        cases["import"] = case("import", repeat, lambda i: (
            [sys.executable, "-c", "import meanfield"], base_env, tmp))
        cases.update(interleaved(repeat, {
            f"{prefix}wang_ma_cold": lambda i, prefix=prefix, env=env: (
                run_cmd(WANG_MA, os.path.join(tmp, f"{prefix}cold.zarr")),
                {**env, CACHE_ENV: os.path.join(tmp, f"{prefix}cold-cache-{i}")}, tmp)
            for prefix, env in envs.items()}))
        warm_envs = {prefix: {**env, CACHE_ENV: os.path.join(tmp, f"{prefix}warm-cache")}
                     for prefix, env in envs.items()}
        warm_env = warm_envs[""]
        for prefix, env in warm_envs.items():  # fill the caches
            timed(run_cmd(WANG_MA, os.path.join(tmp, f"{prefix}warm.zarr")), env, tmp)
        cases.update(interleaved(repeat, {
            f"{prefix}wang_ma_warm": lambda i, prefix=prefix, env=env: (
                run_cmd(WANG_MA, os.path.join(tmp, f"{prefix}warm.zarr")), env, tmp)
            for prefix, env in warm_envs.items()}))
        cases["wang_ma_warm_no_plots"] = case("wang_ma_warm_no_plots", repeat, lambda i: (
            run_cmd(WANG_MA, os.path.join(tmp, "warm.zarr")) + ["--no-plots"], warm_env, tmp))
        cases["stack_import"] = case("stack_import", repeat, lambda i: (
            [sys.executable, "-c", "import jax, xarray, zarr, matplotlib.pyplot"], base_env, tmp))
        cases["jax_first_program"] = case("jax_first_program", repeat, lambda i: (
            [sys.executable, "-c", "import jax; jax.jit(lambda x: x + 1)(1.0).block_until_ready()"],
            {**base_env, "JAX_ENABLE_COMPILATION_CACHE": "false"}, tmp))
        if not args.quick:
            timed(run_cmd(LUO, os.path.join(tmp, "luo.zarr")), warm_env, tmp)
            cases["luo_1d_condensed_m4000_warm"] = case("luo", repeat, lambda i: (
                run_cmd(LUO, os.path.join(tmp, "luo.zarr")), warm_env, tmp))
    cold, warm = cases["wang_ma_cold"]["median_s"], cases["wang_ma_warm"]["median_s"]
    results["ratios"] = {"wang_ma_cold_over_warm": cold / warm,
                         "wang_ma_warm_over_import": warm / cases["import"]["median_s"],
                         "wang_ma_warm_over_stack_import": warm / cases["stack_import"]["median_s"]}
    if args.baseline_src:
        for kind in ("cold", "warm"):
            results["ratios"][f"wang_ma_{kind}_baseline_over_current"] = (
                cases[f"baseline_wang_ma_{kind}"]["median_s"] / cases[f"wang_ma_{kind}"]["median_s"])
    emit(results, args.out)
    return results


if __name__ == "__main__":
    main()
