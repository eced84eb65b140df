"""What each preset needs in precision: float32 against float64 runs of the same config.

* ``wang_ma`` (arXiv 2305.12467) for several seeds and initial scales kappa: the survivor
  set (neurons active on some input at the end), the phase boundaries of
  ``meanfield.phases.wang_ma_phases`` (escape time = end of phase III, f(x_-) crossing 0),
  the final loss and the adaptive step counts;
* ``luo_1d`` (arXiv 2007.07497) at one or several (gamma, gamma') cells (``--cells``; the
  word ``diagram`` for gamma in {0.6, 1.0, 1.4, 1.75} x gamma' in {-0.2, 0, 0.2}): final RD of
  w per width, the slope of log RD against log m, the time to the loss tolerance and the stop
  reasons; whether the float32 slope stays within the luo-diagram's boundary tolerance
  (``meanfield.validation.studies.luo.BOUNDARY_TOL``) of the float64 one.

The float32 run starts from the float64 run's initial particles (rounded to float32): the
two precisions draw different normals from the same key, so separately drawn runs would
compare two initial conditions, not two precisions.

Prints one JSON document (machine load recorded). Usage::

    python benchmarks/bench_precision.py [--quick] [--out FILE] [--presets wang_ma,luo_1d]
        [--cells 1.75:0,1.0:-0.2 | --cells diagram]
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
PRESETS = ("wang_ma", "luo_1d")
DEFAULT_CELLS = ((1.75, 0.0),)
DIAGRAM_CELLS = tuple((g, gp) for g in (0.6, 1.0, 1.4, 1.75) for gp in (-0.2, 0.0, 0.2))


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
    from meanfield.validation.studies.luo import BOUNDARY_TOL

    start = time.perf_counter()
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
    out["boundary_tol"] = BOUNDARY_TOL
    out["slope_within_boundary_tol"] = bool(out["slope_diff"] <= BOUNDARY_TOL)
    out["same_stop_reasons"] = ([r["stop_reason"] for r in out["runs"]["float32"]["rows"]] ==
                                [r["stop_reason"] for r in out["runs"]["float64"]["rows"]])
    out["seconds_all"] = time.perf_counter() - start
    return out


def parse_cells(text: str) -> tuple[tuple[float, float], ...]:
    """``diagram`` or comma-separated ``gamma:gamma_prime`` pairs, e.g. ``1.75:0,0.6:-0.2``."""
    if text == "diagram":
        return DIAGRAM_CELLS
    try:
        cells = tuple((float(g), float(gp)) for g, gp in
                      (item.split(":") for item in text.split(",") if item))
    except ValueError:
        cells = ()
    if not cells:
        raise argparse.ArgumentTypeError(
            f"--cells={text!r} is not allowed; give 'diagram' or comma-separated "
            "gamma:gamma_prime pairs such as 1.75:0,0.6:-0.2")
    return cells


def parse_presets(text: str) -> tuple[str, ...]:
    """Comma-separated non-empty subset of ``PRESETS``."""
    chosen = tuple(p for p in text.split(",") if p)
    if not chosen or set(chosen) - set(PRESETS):
        raise argparse.ArgumentTypeError(
            f"--presets={text!r} is not allowed; give a comma-separated non-empty subset of "
            f"{', '.join(PRESETS)}")
    return chosen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, short runs")
    parser.add_argument("--out", help="also write the JSON document to this file")
    parser.add_argument("--presets", type=parse_presets, default=PRESETS,
                        help=f"comma-separated presets to compare (default {','.join(PRESETS)})")
    parser.add_argument("--cells", type=parse_cells, default=DEFAULT_CELLS,
                        help="luo_1d (gamma, gamma') cells: 'diagram' or gamma:gamma_prime "
                             "pairs, comma-separated (default 1.75:0)")
    args = parser.parse_args(argv)
    import jax

    load_at_start = list(os.getloadavg())
    seeds, kappas = ((0,), (0.1,)) if args.quick else ((0,), (0.1, 0.01))
    t_max = 200.0 if args.quick else 1500.0
    widths = (100, 400) if args.quick else (250, 1000)
    jobs = []
    if "wang_ma" in args.presets:
        jobs += [(wang_ma_row, (seed, kappa, t_max)) for kappa in kappas for seed in seeds]
    if "luo_1d" in args.presets:
        jobs += [(luo_rows, (gamma, gamma_prime, widths, 0)) for gamma, gamma_prime in args.cells]
    rows = []
    for fn, arguments in jobs:
        rows.append(fn(*arguments))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress
    report = {"meta": {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                       "host": platform.node(), "cpu_count": os.cpu_count(),
                       "jax": jax.__version__, "backend": jax.default_backend(),
                       "quick": args.quick, "presets": list(args.presets),
                       "cells": [list(cell) for cell in args.cells],
                       "load_average_at_start": load_at_start,
                       "load_average_at_end": list(os.getloadavg())},
              "results": rows}
    emit(report, args.out)


if __name__ == "__main__":
    main()
