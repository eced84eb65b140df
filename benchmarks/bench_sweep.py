"""Sweep throughput (runs per minute) in this process against two Dask workers on localhost.

A fixed small ``luo_1d`` grid (width x seed x gamma) runs as a whole, as a user runs it: each
whole run is a fresh subprocess (``--single MODE``) that starts Python, (for Dask) starts a
``LocalCluster`` of one-thread workers, compiles (once per width and process) and streams every
point into a new sweep store. Modes:

* ``serial``: ``run_sweep(sweep, out)`` (``Serial()``, one point after another);
* ``dask2``: ``run_sweep(sweep, out, executor=DaskCluster(workers=2))``.

The parent repeats each mode, takes the median wall time of the whole runs, and prints one
JSON document: per mode the wall times, runs per minute (points / median wall time), the
summed point times (compilation included once per width and worker), the throughput ratio
dask2 / serial, whether the two stores are identical (every variable but wall times), and the
machine (cores, load average before and after: on a shared machine the ratio is the figure to
read, not the absolute rates).

Usage::

    python benchmarks/bench_sweep.py [--quick] [--repeats N] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

MODES = ("serial", "dask2")
GRID = {"width": (500, 1000), "seed": (0, 1, 2, 3), "gamma": (0.5, 1.75)}
QUICK_GRID = {"width": (200,), "seed": (0, 1, 2, 3), "gamma": (0.5, 1.75)}
SUBPROCESS_TIMEOUT = 3600.0


def make_sweep(quick: bool):
    from meanfield.validation.sweep import Summary, Sweep

    return Sweep(preset="luo_1d", axes=QUICK_GRID if quick else GRID, fixed={"n_saves": 40},
                 summary=Summary(density_times=0), name="bench-sweep")


def single(mode: str, out: str, quick: bool) -> dict:
    """One whole sweep in this (fresh) process; its record."""
    from meanfield.validation.executors import DaskCluster, Serial
    from meanfield.validation.sweep import run_sweep

    sweep = make_sweep(quick)
    executor = Serial() if mode == "serial" else DaskCluster(workers=2)
    started = time.perf_counter()
    ds = run_sweep(sweep, out, overwrite=True, progress=False, executor=executor)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "points": int(sweep.size),
            "point_seconds_summed": float(ds.wall_time.sum()),
            "converged": int((ds.stop_reason == "loss_tol").sum())}


def same_store(a: str, b: str) -> bool:
    import numpy as np

    from meanfield.validation.sweep import open_sweep

    x, y = open_sweep(a).load(), open_sweep(b).load()
    return all(np.array_equal(x[n].values, y[n].values, equal_nan=x[n].dtype.kind == "f")
               for n in x.data_vars if n != "wall_time")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one width, 8 points")
    parser.add_argument("--repeats", type=int, default=3, help="whole runs per mode (median)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--single", nargs=2, metavar=("MODE", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.single:
        print(json.dumps(single(args.single[0], args.single[1], args.quick)))
        return {}
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats} is not allowed; it must be >= 1")
    results = {"benchmark": "sweep throughput", "date": datetime.datetime.now(
        datetime.timezone.utc).isoformat(), "machine": {
        "cores": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "load_average_before": os.getloadavg()},
        "grid": QUICK_GRID if args.quick else GRID, "repeats": args.repeats, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for mode in MODES:  # alternate, so load drifts hit both modes alike
                out = os.path.join(tmp, f"{mode}.zarr")
                cmd = [sys.executable, os.path.abspath(__file__), "--single", mode, out]
                if args.quick:
                    cmd.append("--quick")
                started = time.perf_counter()
                run = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                     stdin=subprocess.DEVNULL, timeout=SUBPROCESS_TIMEOUT)
                record = json.loads(run.stdout.strip().splitlines()[-1])
                record["process_wall_s"] = time.perf_counter() - started
                record["load_average"] = os.getloadavg()[0]
                results["modes"].setdefault(mode, {"runs": []})["runs"].append(record)
        results["identical_stores"] = same_store(os.path.join(tmp, "serial.zarr"),
                                                 os.path.join(tmp, "dask2.zarr"))
    for mode, entry in results["modes"].items():
        walls = [r["process_wall_s"] for r in entry["runs"]]
        entry["median_wall_s"] = statistics.median(walls)
        entry["runs_per_minute"] = 60.0 * entry["runs"][0]["points"] / entry["median_wall_s"]
    serial, dask2 = (results["modes"][m]["runs_per_minute"] for m in MODES)
    results["throughput_ratio_dask2_over_serial"] = dask2 / serial
    results["machine"]["load_average_after"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    print(text)
    return results


if __name__ == "__main__":
    main()
