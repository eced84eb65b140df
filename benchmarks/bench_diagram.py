"""Wall time of the full luo-diagram grid on local workers, and its store against the report's.

The grid of ``meanfield validate luo-diagram`` (11 gammas x 9 gamma' x 5 widths, m = 1000 ..
40000: 495 ``luo_1d`` runs, float32, adaptive flow) runs as that command runs it with
``--workers N``: ``phase_diagram.diagram_sweep`` of ``luo.diagram_grid``, streamed by
``run_sweep`` into a new sweep store by a local ``DaskCluster`` (``--executor dask``, the
command's) or ``LocalProcesses`` (``--executor local``). Each whole run is a fresh subprocess
(Python start, worker start, one compilation per width and worker, the points).

``--malloc-trim`` starts the workers with MALLOC_TRIM_THRESHOLD_=65536, as Dask's nanny
starts its workers by default (``meanfield.validation.executors.UNSET_WORKER_ENVIRON``): the
grid as it ran before the local cluster unset it.

Prints one JSON document: the wall times and their median, the summed point times per width
(``wall_time`` of the store: compilation included once per width and worker), the machine
load before and after, and whether every variable of each store but the wall times equals the
committed report's ``validation/reports/luo-diagram/luo-diagram.nc`` bitwise, with the
measured boundary (its zero crossings of S_w) beside the report's.

Usage::

    python benchmarks/bench_diagram.py [--executor dask|local] [--workers N] [--repeats R]
        [--malloc-trim] [--out FILE]
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

REPORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "validation",
                      "reports", "luo-diagram", "luo-diagram.nc")
SUBPROCESS_TIMEOUT = 3 * 3600.0


def single(executor: str, workers: int, malloc_trim: bool, path: str) -> dict:
    """One whole grid in this (fresh) process, streamed into ``path``; its record."""
    if malloc_trim:  # the workers inherit it from this process
        os.environ["MALLOC_TRIM_THRESHOLD_"] = "65536"
    from meanfield.validation import phase_diagram as pdg
    from meanfield.validation.executors import DaskCluster, LocalProcesses
    from meanfield.validation.studies import luo
    from meanfield.validation.sweep import run_sweep

    gammas, gamma_primes, widths = luo.diagram_grid(False)
    sweep = pdg.diagram_sweep(gammas=gammas, gamma_primes=gamma_primes, widths=widths,
                              particles=luo.KEPT_NEURONS, n_saves=luo.N_SAVES,
                              name="luo-diagram")
    kind = {"local": LocalProcesses, "dask": DaskCluster}[executor]
    started = time.perf_counter()
    ds = run_sweep(sweep, path, progress=False, executor=kind(workers=workers))
    wall = time.perf_counter() - started
    per_width = ds.wall_time.sum([d for d in ds.wall_time.dims if d != "width"])
    return {"wall_s": wall, "points": int(ds.stop_reason.size),
            "point_seconds_per_width": {str(int(w)): float(s) for w, s in
                                        zip(per_width.width.values, per_width.values)}}


def compare_with_report(path: str) -> dict:
    """Whether every variable of the store at ``path`` but wall times equals the report's,
    and the boundaries of both."""
    import xarray as xr

    from meanfield.validation import phase_diagram as pdg
    from meanfield.validation.sweep import open_sweep

    got = open_sweep(path).load()
    want = xr.open_dataset(REPORT).load()
    differ = variables_that_differ(got, want)

    def boundary(ds):
        return [round(float(v), 6) for v in
                pdg.measured_boundary(pdg.slope_map(ds)).boundary.values]

    return {"identical_to_report": not differ, "variables_that_differ": differ,
            "boundary": boundary(got), "report_boundary": boundary(want)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executor", choices=("dask", "local"), default="dask")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="whole runs (median)")
    parser.add_argument("--malloc-trim", action="store_true",
                        help="start the workers with MALLOC_TRIM_THRESHOLD_=65536")
    parser.add_argument("--out", help="also write the JSON document to this file")
    parser.add_argument("--single", metavar="PATH", help="internal: one whole grid")
    args = parser.parse_args(argv)
    if args.single:
        print(json.dumps(single(args.executor, args.workers, args.malloc_trim, args.single)))
        return {}
    if args.repeats < 1 or args.workers < 1:
        parser.error("--repeats and --workers must be positive integers")
    results = header("luo-diagram grid on local workers", "bench_diagram.py", argv)
    results.update(executor=args.executor, workers=args.workers, malloc_trim=args.malloc_trim,
                   runs=[])
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            path = os.path.join(tmp, f"grid-{repeat}.zarr")
            command = [sys.executable, os.path.abspath(__file__), "--single", path,
                       "--executor", args.executor, "--workers", str(args.workers)]
            started = time.perf_counter()
            run = subprocess.run(command + (["--malloc-trim"] if args.malloc_trim else []),
                                 check=True, capture_output=True, text=True,
                                 stdin=subprocess.DEVNULL, timeout=SUBPROCESS_TIMEOUT)
            record = json.loads(run.stdout.strip().splitlines()[-1])
            record.update(process_wall_s=time.perf_counter() - started,
                          load_average_after=os.getloadavg(), **compare_with_report(path))
            print(json.dumps(record), file=sys.stderr, flush=True)
            results["runs"].append(record)
    results["median_wall_s"] = statistics.median(r["wall_s"] for r in results["runs"])
    results["median_process_wall_s"] = statistics.median(
        r["process_wall_s"] for r in results["runs"])
    results["machine"]["load_average_after"] = os.getloadavg()
    emit(results, args.out)
    return results


if __name__ == "__main__":
    main()
