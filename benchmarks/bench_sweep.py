"""Sweep throughput (runs per minute) of the ``luo-slopes`` study: in this process, on a local
process pool of two workers, and on two Dask workers on localhost.

The study's whole grid (``meanfield validate luo-slopes``: the paper sweep, 3 gammas x 5 widths
x 3 seeds, and the families sweep, 5 widths x 3 families x 6 gammas; 135 ``luo_1d`` points at
m = 1000..40000) runs as a user runs it: each whole run is a fresh subprocess (``--single MODE
DIR``) that starts Python, (for the pools) starts the workers, compiles (once per width and
process) and streams every point into new sweep stores under ``DIR/sweeps/``, then writes the
report. Modes (``meanfield.validation.executors``):

* ``serial``: ``Serial()``, one point after another (``meanfield validate luo-slopes``);
* ``local2``: ``LocalProcesses(workers=2)`` (``--workers 2`` without Dask installed);
* ``dask2``: ``DaskCluster(workers=2)`` (``--workers 2``).

The parent repeats each mode, takes the median wall time of the whole runs, and prints one
JSON document: per mode the wall times, runs per minute (points / median wall time), the
summed point times (compilation included once per width and worker), the throughput ratios to
serial, whether every mode's stores equal the serial ones (every variable but wall times) and
its report.md the serial one (but its wall-time section), and
the machine (cores, load average before and after: on a shared machine the ratios are the
figures to read, not the absolute rates). ``--quick`` runs the quick study (m = 256, 1024);
``--modes`` picks the modes (``serial`` always runs: the ratios and comparisons need it).

Usage::

    python benchmarks/bench_sweep.py [--quick] [--repeats N] [--out FILE] [--modes serial,dask2]
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

from bench_engine import emit, variables_that_differ

STUDY = "luo-slopes"
MODES = ("serial", "local2", "dask2")
SUBPROCESS_TIMEOUT = 3 * 3600.0


def make_executor(mode: str):
    from meanfield.validation.executors import DaskCluster, LocalProcesses, Serial

    return {"serial": Serial, "local2": lambda: LocalProcesses(workers=2),
            "dask2": lambda: DaskCluster(workers=2)}[mode]()


def stores(out_dir: str) -> dict[str, str]:
    """The sweep stores a study run wrote: {name: path}."""
    folder = pathlib.Path(out_dir, "sweeps")
    return {p.stem: str(p) for p in sorted(folder.glob("*.zarr"))}


def single(mode: str, out_dir: str, quick: bool) -> dict:
    """One whole study run in this (fresh) process; its record."""
    from meanfield.validation.studies import run_study
    from meanfield.validation.sweep import open_sweep

    started = time.perf_counter()
    report, _ = run_study(STUDY, out_dir, quick=quick, executor=make_executor(mode))
    wall = time.perf_counter() - started
    sweeps = [open_sweep(path).load() for path in stores(out_dir).values()]
    return {"wall_s": wall, "points": sum(int(ds.wall_time.size) for ds in sweeps),
            "point_seconds_summed": sum(float(ds.wall_time.sum()) for ds in sweeps),
            "converged": sum(int((ds.stop_reason == "loss_tol").sum()) for ds in sweeps),
            "study_passed": bool(report.passed)}


def same_stores(a: str, b: str) -> bool:
    """Every sweep store of study run ``a`` equals ``b``'s in every variable but wall times."""
    from meanfield.validation.sweep import open_sweep

    paths_a, paths_b = stores(a), stores(b)
    return sorted(paths_a) == sorted(paths_b) and not any(
        variables_that_differ(open_sweep(paths_b[name]).load(), open_sweep(paths_a[name]).load())
        for name in paths_a)


def report_without_wall_times(out_dir: str) -> str:
    """The study's report.md without its wall-time section and generation time, with its
    directory as ``OUT`` (the only parts that may differ between executors)."""
    text = pathlib.Path(out_dir, "report.md").read_text().replace(out_dir, "OUT")
    head, _, rest = text.partition("## Wall time")
    _, _, tail = rest.partition("\n## ")
    text = head + ("## " + tail if tail else "")
    return "\n".join(line for line in text.splitlines() if not line.startswith("_Generated "))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick study (m = 256, 1024)")
    parser.add_argument("--repeats", type=int, default=1, help="whole runs per mode (median)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated modes from {', '.join(MODES)} (serial is "
                             "always included)")
    parser.add_argument("--single", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.single:
        print(json.dumps(single(args.single[0], args.single[1], args.quick)))
        return {}
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats} is not allowed; it must be >= 1")
    chosen = {m for m in args.modes.split(",") if m}
    if not chosen or chosen - set(MODES):
        parser.error(f"--modes={args.modes!r} is not allowed; give a comma-separated "
                     f"non-empty subset of {', '.join(MODES)}")
    modes = tuple(m for m in MODES if m in chosen | {"serial"})
    results = {"benchmark": "sweep throughput", "date": datetime.datetime.now(
        datetime.timezone.utc).isoformat(), "machine": {
        "cores": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "load_average_before": os.getloadavg()},
        "study": STUDY + (" --quick" if args.quick else ""), "repeats": args.repeats,
        "modes": {}}
    command = ["python", "benchmarks/bench_sweep.py"] + list(sys.argv[1:] if argv is None
                                                             else argv)
    results["command"] = " ".join(command)
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for mode in modes:  # alternate, so load drifts hit every mode alike
                out = os.path.join(tmp, mode)
                cmd = [sys.executable, os.path.abspath(__file__), "--single", mode, out]
                if args.quick:
                    cmd.append("--quick")
                started = time.perf_counter()
                run = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                     stdin=subprocess.DEVNULL, timeout=SUBPROCESS_TIMEOUT)
                record = json.loads(run.stdout.strip().splitlines()[-1])
                record["process_wall_s"] = time.perf_counter() - started
                record["load_average"] = os.getloadavg()[0]
                print(json.dumps({"mode": mode, **record}), file=sys.stderr, flush=True)
                results["modes"].setdefault(mode, {"runs": []})["runs"].append(record)
        results["identical_stores"] = {
            mode: same_stores(os.path.join(tmp, "serial"), os.path.join(tmp, mode))
            for mode in modes[1:]}
        results["identical_reports_but_wall_times"] = {
            mode: report_without_wall_times(os.path.join(tmp, "serial")) ==
            report_without_wall_times(os.path.join(tmp, mode)) for mode in modes[1:]}
    for mode, entry in results["modes"].items():
        walls = [r["process_wall_s"] for r in entry["runs"]]
        entry["median_wall_s"] = statistics.median(walls)
        entry["runs_per_minute"] = 60.0 * entry["runs"][0]["points"] / entry["median_wall_s"]
    serial = results["modes"]["serial"]["runs_per_minute"]
    results["throughput_ratio_over_serial"] = {
        mode: results["modes"][mode]["runs_per_minute"] / serial for mode in modes[1:]}
    results["machine"]["load_average_after"] = os.getloadavg()
    emit(results, args.out)
    return results


if __name__ == "__main__":
    main()
