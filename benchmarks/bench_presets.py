"""End-to-end wall time of the presets, as a new user sees it (fresh process, compilation included).

Prints JSON: for each preset run, the wall time of ``meanfield run ... --no-plots`` (simulation,
streaming store, phases) in a fresh subprocess,
the integrator steps, and, in the same run, the wall time of ``python -c "import meanfield"``
as the baseline cost of starting Python and importing JAX.

    python benchmarks/bench_presets.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

RUNS = {
    "wang_ma": ["wang_ma"],
    "luo_1d_condensed_m4000": ["luo_1d", "--set", "gamma=1.75", "--width", "4000"],
}


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start, out.stdout


def steps_from_summary(text: str) -> int | None:
    for line in text.splitlines():
        if line.startswith("stopped"):
            for token in line.split():
                if token.startswith("steps="):
                    return int(token.split("=")[1])
    return None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="wang_ma only, one repetition")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else args.repeat
    runs = {"wang_ma": RUNS["wang_ma"]} if args.quick else RUNS
    baseline, _ = timed([sys.executable, "-c", "import meanfield, jax; jax.numpy.zeros(1)"])
    results = {"import_baseline_s": baseline, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cli_args in runs.items():
            times, steps = [], None
            for i in range(repeat):
                out = os.path.join(tmp, f"{name}-{i}.zarr")
                cmd = [sys.executable, "-m", "meanfield.cli", "run", *cli_args, "--out", out,
                       "--no-progress", "--no-plots"]
                wall, text = timed(cmd)
                times.append(wall)
                steps = steps_from_summary(text)
            results["runs"][name] = {"wall_s": min(times), "wall_s_all": times, "steps": steps,
                                     "wall_minus_import_s": min(times) - baseline}
    results["targets"] = {"wang_ma_under_10s": results["runs"]["wang_ma"]["wall_s"] < 10.0,
                          "wang_ma_under_20000_steps": (results["runs"]["wang_ma"]["steps"] or 0)
                          < 20_000}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return results


if __name__ == "__main__":
    main()
