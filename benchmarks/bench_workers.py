"""Sweep workers on their own cores against workers sharing every core, and against workers
started with Dask's MALLOC_TRIM_THRESHOLD_.

Two local workers run one sweep of luo_1d points at the widths where a sweep spends its time
(the luo-diagram grid's m = 20000 and 40000; 3 gammas x 2 gamma' rows, 12 points), in three
modes: ``pinned`` (``pin_cores=True``: each worker on its own share of the cores, the
default), ``shared`` (``pin_cores=False``: both on every core) and ``malloc-trim`` (pinned,
the workers started with MALLOC_TRIM_THRESHOLD_=65536 as Dask's nanny starts them by default;
``meanfield.validation.executors.UNSET_WORKER_ENVIRON``). Each whole run is a fresh
subprocess (Python start, worker start, compilation once per width and worker, the points);
the modes alternate, so load drifts hit all alike. Prints one JSON document: per mode the wall
times and their median, the ratios shared / pinned and malloc-trim / pinned, whether every
store equals the first pinned one (every variable but wall times; a run depends neither on its
number of cores nor on malloc, so they must), and the machine load.

Usage::

    python benchmarks/bench_workers.py [--executor local|dask] [--repeats N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench_engine import emit, header, variables_that_differ

GAMMAS = (0.8, 1.0, 1.2)
GAMMA_PRIMES = (0.0, -0.2)
WIDTHS = (20000, 40000)
MODES = ("pinned", "shared", "malloc-trim")


def single(executor: str, mode: str, path: str) -> dict:
    """One whole sweep in this (fresh) process; its record."""
    from meanfield.validation import phase_diagram as pdg
    from meanfield.validation.executors import DaskCluster, LocalProcesses
    from meanfield.validation.sweep import run_sweep

    sweep = pdg.diagram_sweep(gammas=GAMMAS, gamma_primes=GAMMA_PRIMES, widths=WIDTHS,
                              name="bench-workers")
    kind = {"local": LocalProcesses, "dask": DaskCluster}[executor]
    if mode == "malloc-trim":  # the workers inherit it from this process
        os.environ["MALLOC_TRIM_THRESHOLD_"] = "65536"
    started = time.perf_counter()
    ds = run_sweep(sweep, path, progress=False,
                   executor=kind(workers=2, pin_cores=mode != "shared"))
    return {"wall_s": time.perf_counter() - started, "points": int(ds.stop_reason.size),
            "converged": int((ds.stop_reason == "loss_tol").sum())}


def same_store(a: str, b: str) -> bool:
    from meanfield.validation.sweep import open_sweep

    return not variables_that_differ(open_sweep(a).load(), open_sweep(b).load())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executor", choices=("local", "dask"), default="local")
    parser.add_argument("--repeats", type=int, default=3, help="whole runs per mode (median)")
    parser.add_argument("--out", help="also write the JSON document to this file")
    parser.add_argument("--single", nargs=3, metavar=("EXECUTOR", "MODE", "PATH"),
                        help="internal: one whole sweep, one JSON line")
    args = parser.parse_args(argv)
    if args.single:
        print(json.dumps(single(*args.single)))
        return {}
    if args.repeats < 1:
        parser.error(f"--repeats must be a positive integer, got {args.repeats}")
    results = header("sweep workers on own cores vs shared", "bench_workers.py", argv)
    results.update(sweep={"gammas": GAMMAS, "gamma_primes": GAMMA_PRIMES, "widths": WIDTHS},
                   executor=args.executor, modes={})
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for mode in MODES:
                path = os.path.join(tmp, f"{mode}-{repeat}.zarr")
                started = time.perf_counter()
                run = subprocess.run([sys.executable, os.path.abspath(__file__), "--single",
                                      args.executor, mode, path], check=True,
                                     capture_output=True, text=True, stdin=subprocess.DEVNULL)
                record = json.loads(run.stdout.strip().splitlines()[-1])
                record.update(process_wall_s=time.perf_counter() - started,
                              load_average=os.getloadavg()[0])
                print(json.dumps({"mode": mode, **record}), file=sys.stderr, flush=True)
                results["modes"].setdefault(mode, {"runs": []})["runs"].append(record)
        results["identical_stores"] = all(
            same_store(os.path.join(tmp, "pinned-0.zarr"), os.path.join(tmp, f"{mode}-{r}.zarr"))
            for mode in MODES for r in range(args.repeats))
    for entry in results["modes"].values():
        entry["median_process_wall_s"] = statistics.median(
            r["process_wall_s"] for r in entry["runs"])
    pinned = results["modes"]["pinned"]["median_process_wall_s"]
    results["shared_over_pinned"] = results["modes"]["shared"]["median_process_wall_s"] / pinned
    results["malloc_trim_over_pinned"] = (results["modes"]["malloc-trim"]["median_process_wall_s"]
                                          / pinned)
    results["machine"]["load_average_after"] = os.getloadavg()
    emit(results, args.out)
    return results


if __name__ == "__main__":
    main()
