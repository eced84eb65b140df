"""What each preset needs in precision: float32 against float64 runs of the same config.

* ``wang_ma`` (arXiv 2305.12467) for several seeds and initial scales kappa: the survivor
  set (neurons active on some input at the end), the phase boundaries of
  ``meanfield.phases.wang_ma_phases`` (escape time = end of phase III, f(x_-) crossing 0),
  the final loss and the adaptive step counts;
* ``luo_1d`` (arXiv 2007.07497) at one (gamma, gamma'): final RD of w per width and the slope
  of log RD against log m, and the time to the loss tolerance.

The float32 run starts from the float64 run's initial particles (rounded to float32): the
two precisions draw different normals from the same key, so separately drawn runs would
compare two initial conditions, not two precisions.

Prints one JSON document (machine load recorded). Usage::

    python benchmarks/bench_precision.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

import numpy as np

from bench_engine import emit

PRECISIONS = ("float64", "float32")


def survivors(ds) -> list[int]:
    """Neurons active (w . x > 0) on some training input at the last snapshot."""
    w = ds.snapshot_w.values[-1]
    return [int(k) for k in np.flatnonzero((w @ ds.x_unique.values.T > 0).any(axis=1))]


def run_pair(config) -> dict:
    """{precision: Dataset} of ``config`` in float64, then in float32 from the same initial
    particles (the float64 run's first snapshot)."""
    import meanfield as mf
    import meanfield.particles as pt

    out = {"float64": mf.simulate(config.replace(precision="float64"), progress=False)}
    first = out["float64"].isel(t_snapshot=0)
    initial = pt.Particles(a=first.snapshot_a.values, w=first.snapshot_w.values)
    out["float32"] = mf.simulate(config.replace(precision="float32"), progress=False,
                                 initial=initial)
    return out


def wang_ma_row(seed: int, kappa: float, t_max: float) -> dict:
    from meanfield import presets
    from meanfield.phases import boundaries

    runs = {}
    start = time.perf_counter()
    pair = run_pair(presets.get("wang_ma", seed=seed, kappa=kappa, t_max=t_max))
    for precision, ds in pair.items():
        runs[precision] = {
            "survivors": survivors(ds), "phase_starts": boundaries(ds.phase),
            "final_loss": float(ds.loss.values[-1]), "n_steps": int(ds.n_steps.values[-1]),
            "n_rejected": int(ds.n_rejected.values[-1])}
    runs["seconds_both"] = time.perf_counter() - start
    hi, lo = runs["float64"], runs["float32"]
    common = set(hi["phase_starts"]) & set(lo["phase_starts"])
    return {"preset": "wang_ma", "seed": seed, "kappa": kappa, "t_max": t_max, "runs": runs,
            "same_survivors": hi["survivors"] == lo["survivors"],
            "same_phases": set(hi["phase_starts"]) == set(lo["phase_starts"]),
            "phase_start_rel_diff": {k: abs(lo["phase_starts"][k] / hi["phase_starts"][k] - 1)
                                     for k in common if hi["phase_starts"][k] > 0},
            "final_loss_rel_diff": abs(lo["final_loss"] / hi["final_loss"] - 1)}


def luo_rows(gamma: float, gamma_prime: float, widths, seed: int) -> dict:
    from meanfield import presets

    out = {"preset": "luo_1d", "gamma": gamma, "gamma_prime": gamma_prime, "seed": seed,
           "widths": list(widths), "runs": {}}
    pairs = [run_pair(presets.get("luo_1d", gamma=gamma, gamma_prime=gamma_prime, width=width,
                                  seed=seed)) for width in widths]
    for precision in PRECISIONS:
        rows = []
        for width, pair in zip(widths, pairs):
            ds = pair[precision]
            rows.append({"width": width, "rd_w_end": float(ds.rd_w.values[-1]),
                         "t_end": float(ds.t.values[-1]), "stop_reason": ds.attrs["stop_reason"],
                         "final_loss": float(ds.loss.values[-1]),
                         "n_steps": int(ds.n_steps.values[-1])})
        slope = np.polyfit(np.log(widths), np.log([r["rd_w_end"] for r in rows]), 1)[0]
        out["runs"][precision] = {"rows": rows, "slope": float(slope)}
    out["slope_diff"] = abs(out["runs"]["float32"]["slope"] - out["runs"]["float64"]["slope"])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, short runs")
    parser.add_argument("--out", help="also write the JSON document to this file")
    args = parser.parse_args(argv)
    import jax

    load_at_start = list(os.getloadavg())
    seeds, kappas = ((0,), (0.1,)) if args.quick else ((0,), (0.1, 0.01))
    t_max = 200.0 if args.quick else 1500.0
    widths = (100, 400) if args.quick else (250, 1000)
    jobs = [(wang_ma_row, (seed, kappa, t_max)) for kappa in kappas for seed in seeds]
    jobs.append((luo_rows, (1.75, 0.0, widths, 0)))
    rows = []
    for fn, arguments in jobs:
        rows.append(fn(*arguments))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress
    report = {"meta": {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                       "host": platform.node(), "cpu_count": os.cpu_count(),
                       "jax": jax.__version__, "backend": jax.default_backend(),
                       "quick": args.quick, "load_average_at_start": load_at_start,
                       "load_average_at_end": list(os.getloadavg())},
              "results": rows}
    emit(report, args.out)


if __name__ == "__main__":
    main()
