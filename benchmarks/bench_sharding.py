"""Particle-axis sharding: bytes communicated per step and strong / weak scaling over devices.

For P = 1, 2, 4, 8 forced host devices (``--xla_force_host_platform_device_count``) and the
Euler and adaptive steps (``meanfield.particles.euler`` / ``adaptive_flow``) on random data
(n samples in d dimensions with bias, float32, squared loss, as ``bench_engine.py``):

* ``bytes``: the collectives of one compiled step, read from the optimised HLO (result sizes
  of every all-reduce / all-gather / reduce-scatter / all-to-all / collective-permute);
* strong scaling: seconds per step at a fixed width m, ratio to P = 1;
* weak scaling: seconds per step at m * P / max P (fixed particles per device), ratio to P = 1;
  both as wall-time and as CPU-time ratios (the CPU time of all threads of the measuring
  process is less distorted than the wall time when other processes load the cores);
* ``mode="gspmd"``: the same step with the particles only annotated as sharded (device_put
  with ``NamedSharding``) and no particle mesh in the trace context, so XLA partitions the
  chunk scans itself: the alternative to the per-shard passes, for comparison at max P;
* ``--big``: one Euler step at m = 10^8, n = 100, d = 3, float32 on 8 devices, peak RSS.

Every measurement runs in a fresh subprocess (``--single``), so ``ru_maxrss`` is its own.
Forced host devices share the machine's cores: the wall-time ratios measure the overhead of
sharding (collectives, per-device dispatch), not the speed-up of P real accelerators.

Usage::

    python benchmarks/bench_sharding.py [--quick] [--out FILE] [--width M] [--big] [--no-gspmd]
        [--methods euler,adaptive]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import subprocess
import sys

from bench_engine import (
    EULER_DT,
    INPUT_DIM,
    N_SAMPLES,
    SEED,
    emit,
    make_data,
    peak_rss_mib,
    seconds_per_step,
)

DEVICES = (1, 2, 4, 8)
METHODS = ("euler", "adaptive")
FULL_WIDTH, QUICK_WIDTH, BIG_WIDTH = 10**6, 10**4, 10**8
SUBPROCESS_TIMEOUT = 3600.0
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all",
               "collective-permute")
_ITEM_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
               "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}
_OP = re.compile(r"=\s*(.*?)\s+(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
_ARRAY = re.compile(r"\b(" + "|".join(_ITEM_BYTES) + r")\[([0-9,]*)\]")


def collectives(hlo_text: str) -> list[dict]:
    """Every collective of an optimised HLO module: kind, result shapes and bytes.

    The result of an all-reduce has the operand's size; asynchronous pairs are counted once
    (at ``-start``; ``-done`` lines do not match).
    """
    ops = []
    for line in hlo_text.splitlines():
        match = _OP.search(line)
        if not match:
            continue
        shapes = [(dtype, [int(v) for v in dims.split(",") if v])
                  for dtype, dims in _ARRAY.findall(match.group(1))]
        size = sum(_ITEM_BYTES[dtype] * _prod(dims) for dtype, dims in shapes)
        ops.append({"kind": match.group(2),
                    "shapes": [f"{dtype}{dims}" for dtype, dims in shapes], "bytes": size})
    return ops


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


# ----------------------------------------------------------------------------- one measurement

def step_setup(method: str, width: int, devices: int, mode: str):
    """(problem, params, state, integrator, mesh) of one step at ``width`` on ``devices``."""
    import jax
    import jax.numpy as jnp

    import meanfield.particles as pt
    from meanfield.sharding import place, resolve_mesh

    mesh = resolve_mesh(devices)
    x, y = make_data(N_SAMPLES, INPUT_DIM, SEED)
    spec = pt.ModelSpec(width=width)
    data = pt.TrainingData(x=x, y=y)
    n_chunks, chunk = pt.chunk_layout(width, None, devices)
    x_unique, inverse = data.unique_inputs(spec.bias)
    problem = pt.make_problem(x_unique=x_unique, inverse=inverse, y=data.y,
                              weights=data.weights, width=width, loss=spec.loss,
                              trainable=spec.trainable_output, n_chunks=n_chunks,
                              dtype=jnp.float32)
    solver = pt.Euler(dt=EULER_DT) if method == "euler" else pt.AdaptiveFlow()
    integrator = solver.with_dtype(jnp.float32)
    with traced_on(mesh, mode):
        particles = pt.init_particles(jax.random.key(SEED), spec, data.input_dim,
                                      m_pad=n_chunks * chunk, dtype=jnp.float32)
        particles = place(particles, mesh, n_chunks * chunk)
        state = jax.jit(lambda i, p, q: i.init(p, q))(integrator, problem, particles)
    return problem, integrator, place(state, mesh, n_chunks * chunk), integrator, mesh


def traced_on(mesh, mode: str):
    """The trace context of a mode: the particle mesh for per-shard passes, none for gspmd."""
    from meanfield.sharding import scope

    return scope(mesh) if mode == "shard_map" else contextlib.nullcontext()


def measure(method: str, width: int, devices: int, mode: str, args) -> dict:
    """One (method, width, devices, mode) measurement in this process."""
    import jax

    baseline, load = peak_rss_mib(), os.getloadavg()[0]
    problem, params, state, integrator, mesh = step_setup(method, width, devices, mode)
    t_target = jax.numpy.float32(jax.numpy.inf)

    def run(problem, params, state, k):  # params: the integrator object (traced leaves)
        body = lambda _, s: params.step(problem, s, t_target)
        return jax.lax.fori_loop(0, k, body, state)

    with traced_on(mesh, mode):
        one_step = jax.jit(lambda p, q, s: q.step(p, s, t_target))
        ops = collectives(one_step.lower(problem, params, state).compile().as_text())
        run_jit = jax.jit(run)
        seconds, cpu_seconds, k, state = seconds_per_step(lambda s, k: run_jit(problem, params, s, k), state,
                                             args.min_seconds, args.repeats)
    shardings = {str(leaf.sharding.spec) for leaf in jax.tree.leaves(state.particles)}
    return {"method": method, "m": width, "devices": devices, "mode": mode, "status": "ok",
            "m_pad": int(state.particles.a.shape[0]), "n_chunks": problem.n_chunks,
            "seconds_per_step": seconds, "cpu_seconds_per_step": cpu_seconds,
            "steps_per_timing": k,
            "bytes_per_step": sum(op["bytes"] for op in ops),
            "collectives": ops, "particle_sharding": sorted(shardings),
            "n_steps": int(state.n_steps), "n_rejected": int(state.n_rejected),
            "integrator_status": int(state.status),
            "peak_rss_mib": peak_rss_mib(), "baseline_rss_mib": baseline,
            "load_1min_at_start": load}


# ----------------------------------------------------------------------------- driver

def run_subprocess(method: str, width: int, devices: int, mode: str, args) -> dict:
    """Measure in a fresh interpreter with ``max(DEVICES)`` forced host devices."""
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                                      f" --xla_force_host_platform_device_count={max(DEVICES)}"))
    cmd = [sys.executable, os.path.abspath(__file__), "--single", method, str(width),
           str(devices), mode, "--min-seconds", str(args.min_seconds),
           "--repeats", str(args.repeats)]
    key = {"method": method, "m": width, "devices": devices, "mode": mode}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
                              env=env)
    except subprocess.TimeoutExpired:
        return {**key, "status": "failed", "reason": f"timeout after {SUBPROCESS_TIMEOUT:.0f} s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {**key, "status": "failed",
                "reason": f"exit code {proc.returncode}: " + " | ".join(tail)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plan(args) -> list[tuple[str, int, int, str]]:
    """(method, width, devices, mode) of every measurement."""
    if args.big:
        return [("euler", BIG_WIDTH, max(DEVICES), "shard_map")]
    width = args.width or (QUICK_WIDTH if args.quick else FULL_WIDTH)
    top = max(DEVICES)
    jobs = []
    for method in args.methods:
        for p in DEVICES:
            jobs.append((method, width, p, "shard_map"))  # strong
            if p < top:
                jobs.append((method, width * p // top, p, "shard_map"))  # weak
        if not args.no_gspmd:
            jobs.append((method, width, top, "gspmd"))
    return jobs


def scaling(records: list[dict], width: int, methods=METHODS,
            key: str = "seconds_per_step") -> dict:
    """Per-step time ratios to one device: strong (fixed m) and weak (fixed m / P); ``key``
    picks wall (``seconds_per_step``) or CPU time (``cpu_seconds_per_step``)."""
    top = max(DEVICES)
    time_of = {(r["method"], r["m"], r["devices"], r["mode"]): r.get(key)
               for r in records if r["status"] == "ok"}
    out = {}
    for method in methods:
        strong_base = time_of.get((method, width, 1, "shard_map"))
        weak_base = time_of.get((method, width // top, 1, "shard_map"))
        out[method] = {
            "strong": {p: _ratio(time_of.get((method, width, p, "shard_map")), strong_base)
                       for p in DEVICES},
            "weak": {p: _ratio(time_of.get((method, width * p // top, p, "shard_map")),
                               weak_base) for p in DEVICES},
            "gspmd_over_shard_map": _ratio(time_of.get((method, width, top, "gspmd")),
                                           time_of.get((method, width, top, "shard_map")))}
    return out


def _ratio(num, den):
    return None if num is None or den is None else num / den


def run_all(args) -> dict:
    load_at_start = list(os.getloadavg())
    records = []
    for job in plan(args):
        record = run_subprocess(*job, args)
        print(json.dumps({k: v for k, v in record.items() if k != "collectives"}),
              file=sys.stderr, flush=True)
        records.append(record)
    import jax

    width = BIG_WIDTH if args.big else args.width or (QUICK_WIDTH if args.quick else FULL_WIDTH)
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": platform.node(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "jax": jax.__version__,
            "n": N_SAMPLES, "d": INPUT_DIM, "dtype": "float32", "euler_dt": EULER_DT,
            "width": width, "devices": list(DEVICES), "methods": list(args.methods),
            "quick": args.quick, "big": args.big,
            "min_seconds": args.min_seconds, "repeats": args.repeats,
            "load_average_at_start": load_at_start, "load_average_at_end": list(os.getloadavg())}
    report = {"meta": meta, "results": records}
    if not args.big:
        report["ratios"] = scaling(records, width, args.methods)
        report["cpu_time_ratios"] = scaling(records, width, args.methods,
                                            key="cpu_seconds_per_step")
    return report


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"m = {QUICK_WIDTH} (smoke test)")
    parser.add_argument("--width", type=int, default=None, help="strong-scaling width")
    parser.add_argument("--big", action="store_true",
                        help=f"only one Euler step at m = {BIG_WIDTH:.0e} on 8 devices")
    parser.add_argument("--out", help="also write the JSON document to this file")
    parser.add_argument("--min-seconds", type=float, default=None,
                        help="minimum wall time of one timing (default 1, quick 0.05)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timings per measurement, best kept (default 3, quick 1)")
    parser.add_argument("--no-gspmd", action="store_true",
                        help="skip the annotation-only (gspmd) comparison at 8 devices")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated steps to measure, from {', '.join(METHODS)}")
    parser.add_argument("--single", nargs=4, metavar=("METHOD", "M", "DEVICES", "MODE"),
                        help="internal: one measurement, printed as one JSON line")
    args = parser.parse_args(argv)
    args.methods = tuple(m for m in args.methods.split(",") if m)
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown or not args.methods:
        parser.error(f"--methods={','.join(args.methods)!r} is not allowed; it must be a "
                     f"comma-separated non-empty subset of {', '.join(METHODS)}")
    if args.min_seconds is None:
        args.min_seconds = 0.05 if args.quick or args.big else 1.0
    if args.repeats is None:
        args.repeats = 1 if args.quick or args.big else 3
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.single is not None:
        method, width, devices, mode = args.single
        print(json.dumps(measure(method, int(width), int(devices), mode, args)), flush=True)
        return
    emit(run_all(args), args.out)


if __name__ == "__main__":
    main()
