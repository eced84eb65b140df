"""Writing and reading a run store: seconds and chunk files, by how often the run commits.

Each repetition is a fresh process (``--worker``) that compiles a run of the preset in memory
first, then times ``simulate(..., out=STORE, checkpoint_seconds=S)`` (the run itself is the same
in every case; the difference is the store) and ``open_run(STORE).load()``, and counts the files
of the store. ``checkpoint_seconds=0`` commits after every compiled chunk, as a long run or a run
on a busy machine does; the default commits once for a run this short.

Prints JSON with, per case, the medians over the repetitions, all the values and the machine
load (1-minute load average before and after each case, and the CPU count).
``--baseline-src DIR`` times another version of the package (its ``meanfield`` directory in DIR,
laid out as installed: ``bench_engine.baseline_env``) in the same run, process by process in
turn, and adds the ratios baseline / current.

    python benchmarks/bench_store.py [--preset NAME] [--repeat N] [--baseline-src DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench_engine import baseline_env, emit

CHECKPOINT_SECONDS = {"commit_every_chunk": 0.0, "default": 5.0}


def worker(preset: str, store: str, checkpoint_seconds: float) -> dict:
    import meanfield as mf

    config = mf.presets.get(preset)
    mf.simulate(config, progress=False)  # compile (or load) every program first
    shutil.rmtree(store, ignore_errors=True)
    start = time.perf_counter()
    mf.simulate(config, progress=False, out=store, checkpoint_seconds=checkpoint_seconds)
    write = time.perf_counter() - start
    start = time.perf_counter()
    mf.open_run(store).load()
    read = time.perf_counter() - start
    files = sum(len(names) for _, _, names in os.walk(store))
    return {"run_and_write_s": write, "open_and_load_s": read, "files": files}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="wang_ma")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per case")
    parser.add_argument("--baseline-src", help="a directory holding another version of the "
                        "meanfield package (e.g. git archive COMMIT meanfield | tar -x -C DIR)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.worker:
        preset, store, seconds = args.worker
        print(json.dumps(worker(preset, store, float(seconds))))
        return {}
    results = {"meta": {"preset": args.preset, "repeat": args.repeat, "cpus": os.cpu_count(),
                        "python": platform.python_version(), "platform": platform.platform(),
                        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
               "cases": {}}
    envs = {"current": dict(os.environ)}
    if args.baseline_src:
        envs["baseline"] = baseline_env(args.baseline_src, dict(os.environ))
        results["meta"]["baseline_src"] = os.path.abspath(args.baseline_src)
    with tempfile.TemporaryDirectory() as tmp:
        for label, env in envs.items():  # one cache per version: its own programs
            env["MEANFIELD_COMPILATION_CACHE"] = os.path.join(tmp, f"cache-{label}")
        for case, seconds in CHECKPOINT_SECONDS.items():
            load_before = os.getloadavg()[0]
            runs = {label: [] for label in envs}
            for _ in range(args.repeat):
                for label, env in envs.items():  # interleaved: the same load for both
                    out = subprocess.run(
                        [sys.executable, __file__, "--worker", args.preset,
                         os.path.join(tmp, f"{label}.zarr"), str(seconds)],
                        check=True, capture_output=True, text=True, env=env, cwd=tmp)
                    runs[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
            record = {"checkpoint_seconds": seconds, "load_before": load_before,
                      "load_after": os.getloadavg()[0]}
            for label, values in runs.items():
                record[label] = {key: statistics.median(v[key] for v in values)
                                 for key in values[0]}
                record[label]["all"] = values
            if args.baseline_src:
                record["ratios_baseline_over_current"] = {
                    key: record["baseline"][key] / record["current"][key]
                    for key in ("run_and_write_s", "open_and_load_s", "files")}
            results["cases"][case] = record
    emit(results, args.out)
    return results


if __name__ == "__main__":
    main()
