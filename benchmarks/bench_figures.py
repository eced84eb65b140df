"""Time of each figure ``meanfield.plot.save_all`` writes, build and savefig apart.

Each repetition is a fresh process (``--worker``) that imports matplotlib, reads a stored run into
memory as ``meanfield plot`` does, and calls ``save_all`` once (``fresh``: the first figures of a
process pay the font and mathtext caches and xarray's import of dask) and then ``--warm`` more
times (``warm``: later figures of the same process). ``Figure.savefig`` is wrapped with a clock, so
the times are those of ``save_all`` itself: a figure's build time runs from the end of the previous
savefig (or the call) to the start of its own savefig. The whole command ``meanfield plot STORE``
is timed too, in fresh processes.

Stores: ``--wang-ma`` and ``--luo`` name stored runs; without them the runs are made first
(``meanfield run wang_ma`` / ``meanfield run luo_1d`` with ``--no-plots``, about a minute).

Prints JSON with, per store, the medians over the repetitions of every time, all the values,
and the machine load (1-minute load average before and after each case, and the CPU count).
``--baseline-src DIR`` times another version of the package (its ``meanfield`` directory in DIR,
laid out as installed: ``bench_engine.baseline_env``) in the same run, process by process in
turn, and adds the ratios baseline / current.

    python benchmarks/bench_figures.py [--repeat N] [--warm N] [--wang-ma STORE] [--luo STORE]
        [--baseline-src DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from bench_engine import emit

PRESETS = {"wang_ma": ["wang_ma"], "luo_1d": ["luo_1d"]}


def clocked_save_all(ds, out_dir: str) -> dict:
    """{png name: {"build_s", "savefig_s"}} of one ``save_all(ds, out_dir)`` call."""
    from matplotlib.figure import Figure

    from meanfield.plot import save_all

    marks = []
    original = Figure.savefig

    def savefig(fig, fname, *args, **kwargs):
        start = time.perf_counter()
        original(fig, fname, *args, **kwargs)
        marks.append((os.path.basename(os.fspath(fname)), start, time.perf_counter()))

    Figure.savefig = savefig
    try:
        begin = time.perf_counter()
        save_all(ds, out_dir)
        end = time.perf_counter()
    finally:
        Figure.savefig = original
    out, previous = {}, begin
    for name, start, stop in marks:
        out[name] = {"build_s": start - previous, "savefig_s": stop - start}
        previous = stop
    out["total_s"] = end - begin
    return out


def worker(store: str, warm: int) -> dict:
    """One fresh process: import, open, and ``1 + warm`` calls of ``save_all``."""
    import warnings

    start = time.perf_counter()
    import matplotlib.figure  # noqa: F401  (imported here to be timed apart)
    from matplotlib.backends import backend_agg  # noqa: F401
    imported_mpl = time.perf_counter()
    from meanfield import io
    import meanfield.plot  # noqa: F401
    imported = time.perf_counter()
    # as `meanfield plot` reads it (load_run; commits before it: open_run(...).load())
    ds = io.load_run(store) if hasattr(io, "load_run") else io.open_run(store).load()
    loaded = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = clocked_save_all(ds, tmp)
        warm_runs = [clocked_save_all(ds, tmp) for _ in range(warm)]
    return {"import_matplotlib_s": imported_mpl - start, "import_meanfield_s": imported - imported_mpl,
            "open_load_s": loaded - imported, "fresh": fresh, "warm": warm_runs}


def medians(runs: list[dict]) -> dict:
    """Per-key median of a list of equally shaped nested dicts of numbers."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: medians([r[k] for r in runs]) for k in first}
    return statistics.median(runs)


def summary(runs: list[dict], walls: list[float]) -> dict:
    """Medians of the worker records and of the ``meanfield plot`` wall times, and all values."""
    warm_runs = [w for r in runs for w in r["warm"]]
    return {"import_matplotlib_s": medians([r["import_matplotlib_s"] for r in runs]),
            "import_meanfield_s": medians([r["import_meanfield_s"] for r in runs]),
            "open_load_s": medians([r["open_load_s"] for r in runs]),
            "fresh": medians([r["fresh"] for r in runs]),
            "warm": medians(warm_runs) if warm_runs else None,
            "meanfield_plot_cli_s": statistics.median(walls),
            "all": {"runs": runs, "meanfield_plot_cli_s": walls}}


def store_case(store: str, repeat: int, warm: int, envs: dict[str, dict]) -> dict:
    """{variant: summary} for each environment of ``envs``, their processes interleaved so that
    every variant sees the same machine load."""
    load_before = os.getloadavg()[0]
    runs = {name: [] for name in envs}
    walls = {name: [] for name in envs}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            for name, env in envs.items():
                # cwd outside any source tree: `python -m` puts the cwd first on sys.path
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--worker", store, "--warm",
                     str(warm)], check=True, capture_output=True, text=True, env=env, cwd=tmp)
                runs[name].append(json.loads(out.stdout))
                begin = time.perf_counter()
                subprocess.run([sys.executable, "-m", "meanfield.cli", "plot", store, "--out",
                                os.path.join(tmp, "plots")], check=True, capture_output=True,
                               env=env, cwd=tmp)
                walls[name].append(time.perf_counter() - begin)
    load = {"load_before": load_before, "load_after": os.getloadavg()[0]}
    return {name: {**summary(runs[name], walls[name]), **load} for name in envs}


def ratios(before: dict, after: dict) -> dict:
    """before / after of every median time (figures: build + savefig)."""
    def total(x):
        return x["build_s"] + x["savefig_s"] if isinstance(x, dict) else x

    out = {key: before[key] / after[key] for key in
           ("meanfield_plot_cli_s", "open_load_s", "import_matplotlib_s", "import_meanfield_s")}
    for mode in ("fresh", "warm"):
        if after[mode]:
            out[mode] = {name: total(before[mode][name]) / total(x)
                         for name, x in after[mode].items()}
    return out


def make_store(preset: str, path: str, env: dict) -> str:
    subprocess.run([sys.executable, "-m", "meanfield.cli", "run", *PRESETS[preset], "--out", path,
                    "--no-plots", "--no-progress", "--overwrite"], check=True,
                   capture_output=True, env=env)
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per store")
    parser.add_argument("--warm", type=int, default=3, help="save_all calls after the first")
    parser.add_argument("--wang-ma", help="stored wang_ma run (default: made first)")
    parser.add_argument("--luo", help="stored luo_1d run (default: made first)")
    parser.add_argument("--baseline-src", help="a directory holding another version of the "
                        "meanfield package (e.g. git archive COMMIT meanfield | tar -x -C DIR), "
                        "timed in the same run, interleaved: 'baseline' and 'ratios' in the output")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.warm)))
        return {}
    results = {"meta": {"repeat": args.repeat, "warm": args.warm, "cpus": os.cpu_count(),
                        "python": platform.python_version(), "platform": platform.platform(),
                        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
               "stores": {}}
    env = {**os.environ, "MPLBACKEND": "Agg"}
    envs = {"current": env}
    if args.baseline_src:
        path = os.pathsep.join(p for p in (os.path.abspath(args.baseline_src),
                                           env.get("PYTHONPATH")) if p)
        envs["baseline"] = {**env, "PYTHONPATH": path}  # its meanfield shadows the installed one
        results["meta"]["baseline_src"] = os.path.abspath(args.baseline_src)
        results["baseline"], results["ratios"] = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        stores = {"wang_ma": args.wang_ma, "luo_1d": args.luo}
        for preset, store in stores.items():
            store = os.path.abspath(store or make_store(preset, os.path.join(tmp, f"{preset}.zarr"),
                                                        env))  # the processes run in tmp
            results["meta"][f"{preset}_store"] = store
            case = store_case(store, args.repeat, args.warm, envs)
            results["stores"][preset] = case["current"]
            if args.baseline_src:
                results["baseline"][preset] = case["baseline"]
                results["ratios"][preset] = ratios(case["baseline"], case["current"])
    emit(results, args.out)
    return results


if __name__ == "__main__":
    main()
