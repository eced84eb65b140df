"""Wall time, CPU seconds and peak memory of the test suite, cold and then warm.

Runs ``pytest`` (the default run: the ``addopts`` of pyproject.toml, two xdist workers) as a
user runs it, in a fresh subprocess, with pytest's cache directory (which holds the session's
persistent compilation cache, see tests/conftest.py) in a new temporary directory: the first
run is cold (nothing compiled yet, as from a fresh clone or in CI), the next ``--warm`` runs
read the programs the first one compiled. While a run goes, the resident memory of its whole
process tree (pytest, its workers and the subprocesses the tests start) is sampled every 0.2 s.

Prints one JSON document: per run the wall seconds, the CPU seconds (user + sys of the tree,
children included), the peak RSS of the largest single process (what ``/usr/bin/time -v``
reports) and of the sampled tree, pytest's summary line, and the load average before and after
(on a shared machine, CPU seconds are the figure least disturbed by other processes).

Usage::

    python benchmarks/bench_tests.py [--warm N] [--out FILE] [-- PYTEST_ARGS...]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

from bench_engine import emit

REPO = pathlib.Path(__file__).resolve().parent.parent


def tree_rss_bytes(root: int) -> int:
    """Summed resident memory of ``root`` and its descendants (Linux /proc; 0 if gone)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)  # fields[1]: parent pid
        rss[pid] = int(fields[21]) * resource.getpagesize()  # fields[21]: rss in pages
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


# runs the command given after it and prints its process tree's peak single-process RSS (KiB)
# and CPU seconds: a fresh parent per run, so a warm run's figures are its own
RUSAGE = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print("BENCH_RUSAGE", usage.ru_maxrss, usage.ru_utime + usage.ru_stime, flush=True)
sys.exit(code)
"""


def run_once(pytest_args: list[str], cache_dir: str) -> dict:
    """One whole ``pytest`` process with the given cache directory."""
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([sys.executable, "-c", RUSAGE, sys.executable, "-m", "pytest",
                                 "-q", "-o", f"cache_dir={cache_dir}", *pytest_args],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
        peak_tree = 0
        while proc.poll() is None:
            peak_tree = max(peak_tree, tree_rss_bytes(proc.pid))
            time.sleep(0.2)
        wall = time.perf_counter() - start
        log.seek(0)
        lines = log.read().splitlines()
    _, max_rss_kib, cpu_s = next(line for line in reversed(lines)
                                 if line.startswith("BENCH_RUSAGE")).split()
    summary = [line for line in lines if " in " in line and ("passed" in line or "failed" in line)]
    return {"returncode": proc.returncode, "wall_s": round(wall, 1), "cpu_s": round(float(cpu_s), 1),
            "peak_rss_largest_process_gb": round(int(max_rss_kib) / 1024**2, 2),
            "peak_rss_tree_gb": round(peak_tree / 1024**3, 2),
            "summary": summary[-1] if summary else "\n".join(lines[-30:]),
            "failed": [line for line in lines if line.startswith(("FAILED", "ERROR"))],
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm", type=int, default=1, help="warm runs after the cold one")
    parser.add_argument("--out")
    parser.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench-tests-cache-") as cache_dir:
        for index in range(1 + args.warm):
            label = "cold" if index == 0 else f"warm{index}"
            runs[label] = run_once(args.pytest_args, cache_dir)
            print(json.dumps({label: runs[label]}), file=sys.stderr, flush=True)
    results = {"meta": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "pytest_args": args.pytest_args,
                        "started": started},
               "runs": runs}
    emit(results, args.out)
    return results


if __name__ == "__main__":
    main()
