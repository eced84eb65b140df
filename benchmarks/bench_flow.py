"""Speed of the adaptive flow: its motion kernel against the previous kernel, and its step
against an Euler step of the same width.

Two kernels, each measured in fresh subprocesses (``--single KERNEL CASE``):

* ``new``: ``meanfield.particles.flow.move_particles`` (fast step for every particle, the few particles
  with a face event or sliding redone in blocks), as ``meanfield.particles.integrators`` uses it;
* ``reference``: the previous kernel, ``move_particle_reference`` (``tests/reference_kernels.py``) vmapped over
  sub-chunks of >= 500 particles with every per-particle diagnostic stacked (the previous
  ``motion_pass``), patched into ``meanfield.particles.integrators`` for the step and run timings.

Cases (float32 unless said):

* ``pass``/``step`` cases: seconds per adaptive motion pass (``integrators.motion_pass``: new
  positions, f and per-particle diagnostics) and per integrator step (two passes and the step
  control), on a mid-run state (the same for both kernels): Luo 1-D data (gamma = 1,
  gamma' = 0) at m in {1e3, 1e4, 4e4}; Wang & Ma's preset (m = 100, float64); random data
  with n = 100 inputs in d = 3 (``bench_engine.make_data``) at m = 1e4.
* ``run`` cases: wall seconds of ``mf.simulate`` (``n_saves=50``) of luo_1d at gamma = 1,
  gamma' = 0 (m in {1e3, 1e4, 4e4}) and gamma' = -0.4 (m = 4e4), and of the Wang & Ma preset;
  compilation excluded (a first run to t_max = 1e-3 compiles the same program; the record says
  whether the timed runs recompiled).

* ``ratio`` cases (new kernel only): at m in {1e4, 1e5, 1e6} on the random data (n = 100,
  d = 3, float32, ``bench_engine.make_data``), seconds per *accepted* ``AdaptiveFlow`` step
  (timed steps over the accepted ones among them, from a state after a few warm-up steps)
  and per ``Euler`` step (dt = ``bench_engine.EULER_DT``), both in the same process, and
  their ratio (target: at most 4).

``--profile M`` instead prints where the time of an adaptive step goes at width M on the
random data: XLA:CPU's profiler trace of accepted steps from the mid-run state, summed per
compiled operation (a fusion, a dot, a reduction), each named with the JAX operation it was
compiled from (its ``op_name``), as microseconds per step and shares of the traced operation
time (the profiler slows every operation down; the shares are the figures to read).

Timings are the minimum over repeats of wall time (``*_s``) and of process CPU time
(``*_cpu_s``, less sensitive to other processes on a shared machine). The parent prints one
JSON document: records, new/reference ratios and the targets (full Luo runs at m = 4e4 at
least 2.5x faster; an accepted adaptive step at most 4x an Euler step).

Usage::

    python benchmarks/bench_flow.py [--quick] [--out FILE] [--repeats N]
    python benchmarks/bench_flow.py --profile 100000 [--out FILE]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import glob
import gzip
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

KERNELS = ("reference", "new")
PASS_CASES = {
    "luo_m1000": {"data": "luo", "m": 1000},
    "luo_m10000": {"data": "luo", "m": 10000},
    "luo_m40000": {"data": "luo", "m": 40000},
    "wang_ma": {"data": "wang_ma", "m": 100},
    "random_n100_m10000": {"data": "random", "m": 10000},
}
RUN_CASES = {
    "run_luo_g1_gp0_m1000": {"data": "luo", "m": 1000, "gamma_prime": 0.0},
    "run_luo_g1_gp0_m10000": {"data": "luo", "m": 10000, "gamma_prime": 0.0},
    "run_luo_g1_gp0_m40000": {"data": "luo", "m": 40000, "gamma_prime": 0.0},
    "run_luo_g1_gpm0.4_m40000": {"data": "luo", "m": 40000, "gamma_prime": -0.4},
    "run_wang_ma": {"data": "wang_ma", "m": 100},
}
RATIO_CASES = {f"ratio_random_m{m}": {"data": "random", "m": m} for m in (10**4, 10**5, 10**6)}
QUICK = ("luo_m1000", "wang_ma", "run_luo_g1_gp0_m1000", "ratio_random_m10000")
TARGET_RUNS = ("run_luo_g1_gp0_m40000", "run_luo_g1_gpm0.4_m40000")
TARGET_SPEEDUP = 2.5
TARGET_ADAPTIVE_OVER_EULER = 4.0
WARM_STEPS = {"luo": 150, "wang_ma": 100, "random": 10}  # steps to the mid-run state
MIN_SECONDS = 0.3  # minimum wall time of one step timing
SUBPROCESS_TIMEOUT = 1800.0
SEED = 0
PROFILE_STEPS = 20  # adaptive steps traced by --profile


# ----------------------------------------------------------------------------- one kernel

def reference_motion_pass(problem, particles, residual, h, band_eps, mass_floor):
    """The previous ``integrators.motion_pass``: ``move_particle_reference`` vmapped over
    sub-chunks of >= 500 particles, per-particle diagnostics stacked."""
    import jax
    import jax.numpy as jnp

    from meanfield.particles.kernels import Particles, scan_chunks

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "tests"))
    from reference_kernels import move_particle_reference

    x = problem.x
    xx = jnp.sum(x * x, axis=1)
    kernel = jax.vmap(move_particle_reference, in_axes=(0, 0) + (None,) * 7)
    chunk = particles.a.shape[0] // problem.n_chunks
    split = next(f for f in (8, 4, 2, 1) if chunk % f == 0 and chunk // f >= 500 or f == 1)

    def fn(part):
        a, w, contrib, tau2, g, amp = kernel(part.a, part.w, x, xx, residual, h, band_eps,
                                             mass_floor, problem.trainable)
        return (Particles(a=a, w=w), tau2, g, amp), contrib.sum(0)

    (new, tau2, g, amp), total = scan_chunks(fn, particles, problem.n_chunks * split,
                                             jnp.zeros(x.shape[0], x.dtype))
    return new, total * problem.inv_width, {"tau2": tau2, "g": g, "amplitude": amp}


def use_reference_kernel():
    """Patch the previous kernel into ``meanfield.particles.integrators`` (this process only)."""
    import jax.numpy as jnp

    import meanfield.particles.integrators as integrators
    from meanfield.particles.flow import Motion

    def move(problem, particles, residual, h, band_eps, mass_floor, outputs, event_block=None):
        del outputs, event_block  # the previous kernel moves every particle the one way
        new, f, diag = reference_motion_pass(problem, particles, residual, h, band_eps,
                                             mass_floor)
        return Motion(total=f / problem.inv_width, a=new.a, w=new.w,
                      tau2_min=jnp.min(diag["tau2"]), g_max=jnp.max(diag["g"]),
                      amplitude_sum=jnp.sum(diag["amplitude"]), **diag)

    integrators.motion_pass = reference_motion_pass
    integrators._move = move


# ----------------------------------------------------------------------------- one measurement

def config_of(case: dict):
    """The SimulationConfig of a case (luo_1d or wang_ma; random data has none)."""
    import meanfield as mf

    if case["data"] == "wang_ma":
        return mf.presets.wang_ma(width=case["m"], seed=SEED)
    return mf.presets.luo_1d(gamma=1.0, gamma_prime=case.get("gamma_prime", 0.0),
                             width=case["m"], seed=SEED, n_saves=50)


def problem_of(case: dict):
    """(problem, initial particles, adaptive integrator with the run's dtype) of a pass case."""
    import meanfield as mf
    from meanfield.setup import prepare

    if case["data"] != "random":
        config = config_of(case)
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from bench_engine import INPUT_DIM, make_data

        x, y = make_data(100, INPUT_DIM, SEED)
        config = mf.SimulationConfig(model=mf.ModelSpec(width=case["m"]),
                                     data=mf.TrainingData(x=x, y=y), seed=SEED)
    problem, particles, _, dtype = prepare(config)
    return problem, particles, config.solver.build().with_dtype(dtype)


def best_of(fn, repeats: int) -> tuple[float, float]:
    """(min wall seconds, min process CPU seconds) of ``fn()`` over ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        cpu, start = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def measure_pass(kernel: str, case: dict, repeats: int) -> dict:
    """Seconds per motion pass and per step on a mid-run state (same state for both kernels)."""
    import jax
    import jax.numpy as jnp

    import meanfield.particles as pt
    import meanfield.particles.integrators as integrators

    problem, particles, flow = problem_of(case)
    t_end = jnp.asarray(jnp.inf, problem.x.dtype)
    steps = jax.jit(lambda s, k: jax.lax.fori_loop(
        0, k, lambda _, s: flow.step(problem, s, t_end), s), static_argnums=1)
    state = jax.jit(flow.init)(problem, particles)
    state = jax.block_until_ready(steps(state, WARM_STEPS[case["data"]]))  # new kernel
    if kernel == "reference":
        use_reference_kernel()
    h = jnp.minimum(state.h, state.h_face)
    residual = pt.residuals(problem, state.f)

    def one_pass(i):  # the marks vary by 1e-7 with i: no work is hoisted out of the loop
        particles = pt.Particles(a=state.particles.a * (1 - 1e-7 * (i % 2)),
                                 w=state.particles.w)
        new, f, diag = integrators.motion_pass(problem, particles, residual, h,
                                               flow.band_eps, state.mass_floor)
        # Every output is used (none is dead code): one reduction each.
        return (f + jnp.sum(new.a) + jnp.sum(new.w) + jnp.min(diag["tau2"])
                + jnp.max(diag["g"]) + jnp.sum(diag["amplitude"]))

    def passes(k):
        return jax.lax.fori_loop(0, k, lambda i, acc: acc + one_pass(i), jnp.zeros_like(state.f))

    def steps_from(s, k):
        return jax.lax.fori_loop(0, k, lambda _, s: flow.step(problem, s, t_end), s)

    pass_s, pass_cpu, pass_k = per_call(jax.jit(passes, static_argnums=0), (), repeats)
    step_s, step_cpu, step_k = per_call(jax.jit(steps_from, static_argnums=1), (state,),
                                        repeats)
    return {"pass_s": pass_s, "pass_cpu_s": pass_cpu, "passes_per_timing": pass_k,
            "step_s": step_s, "step_cpu_s": step_cpu, "steps_per_timing": step_k,
            "t": float(state.t), "h": float(h), "m_pad": int(particles.a.shape[0]),
            "n": int(problem.x.shape[0]), "D": int(problem.x.shape[1]),
            "dtype": str(problem.x.dtype)}


def per_call(fn, args, repeats: int) -> tuple[float, float, int]:
    """(wall s, CPU s) per iteration of ``fn(*args, k)`` (k iterations in one call, k chosen
    so that a call lasts >= MIN_SECONDS; best of ``repeats`` calls), and k."""
    import jax

    jax.block_until_ready(fn(*args, 1))
    start = time.perf_counter()
    jax.block_until_ready(fn(*args, 1))
    k = max(2, int(MIN_SECONDS / max(time.perf_counter() - start, 1e-6)))
    jax.block_until_ready(fn(*args, k))  # compiles for k
    wall, cpu = best_of(lambda: jax.block_until_ready(fn(*args, k)), repeats)
    return wall / k, cpu / k, k


def measure_run(kernel: str, case: dict, repeats: int) -> dict:
    """Wall seconds of a full simulate (compilation excluded)."""
    import meanfield as mf
    from meanfield import runner

    if kernel == "reference":
        use_reference_kernel()
    config = config_of(case)
    start = time.perf_counter()
    mf.simulate(config.replace(t_max=1e-3), progress=False)
    compile_s = time.perf_counter() - start
    traces = runner.TRACE_COUNT["run_chunk"]
    result = {}

    def run():
        result["ds"] = mf.simulate(config, progress=False)

    run_s, run_cpu = best_of(run, repeats)
    ds = result["ds"]
    return {"run_s": run_s, "run_cpu_s": run_cpu, "first_run_s": compile_s,
            "recompiled": runner.TRACE_COUNT["run_chunk"] > traces,
            "n_steps": int(ds.n_steps[-1]), "n_rejected": int(ds.n_rejected[-1]),
            "loss": float(ds.loss[-1]), "stop_reason": ds.attrs.get("stop_reason"),
            "precision": config.precision}


def measure_ratio(case: dict, repeats: int) -> dict:
    """Seconds per accepted adaptive step and per Euler step at one width, same process."""
    import jax
    import jax.numpy as jnp

    import meanfield as mf
    from meanfield.setup import prepare

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_engine import EULER_DT, INPUT_DIM, N_SAMPLES, make_data

    x, y = make_data(N_SAMPLES, INPUT_DIM, SEED)
    record = {"m": case["m"], "n": N_SAMPLES, "d": INPUT_DIM}
    for label, solver in (("euler", mf.Solver(kind="euler", dt=EULER_DT)),
                          ("adaptive", mf.Solver(kind="adaptive"))):
        config = mf.SimulationConfig(model=mf.ModelSpec(width=case["m"]),
                                     data=mf.TrainingData(x=x, y=y), solver=solver, seed=SEED)
        problem, particles, _, dtype = prepare(config)
        integrator = solver.build().with_dtype(dtype)
        t_end = jnp.asarray(jnp.inf, dtype)
        steps = jax.jit(lambda s, k, integrator=integrator, problem=problem: jax.lax.fori_loop(
            0, k, lambda _, s: integrator.step(problem, s, t_end), s), static_argnums=1)
        state = jax.block_until_ready(steps(jax.jit(integrator.init)(problem, particles),
                                            WARM_STEPS["random"]))
        wall, cpu, k = per_call(steps, (state,), repeats)
        after = steps(state, k)  # the timed calls all start from ``state``: same steps
        accepted = int(after.n_steps - state.n_steps)
        record.update({f"{label}_step_s": wall, f"{label}_step_cpu_s": cpu,
                       f"{label}_steps_per_timing": k, f"{label}_accepted": accepted,
                       f"{label}_status": int(after.status)})
        if accepted:
            record[f"{label}_accepted_step_s"] = wall * k / accepted
            record[f"{label}_accepted_step_cpu_s"] = cpu * k / accepted
    record["dtype"] = str(problem.x.dtype)
    record["m_pad"] = int(particles.a.shape[0])
    record["adaptive_over_euler"] = (record.get("adaptive_accepted_step_s", math.inf)
                                     / record["euler_step_s"])
    record["adaptive_over_euler_cpu"] = (record.get("adaptive_accepted_step_cpu_s", math.inf)
                                         / record["euler_step_cpu_s"])
    return record


def compiled_operations(compiled_text: str) -> dict[str, str]:
    """{HLO instruction name: the JAX operation it was compiled from and its source line,
    "op_name (file.py:line function)"} of a compiled program's text (instructions without
    metadata: their opcode)."""
    tables: dict[str, dict[int, str]] = {}
    section = None
    for line in compiled_text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            section, tables[line] = line, {}
        elif section and re.match(r"\d+ ", line):
            key, value = line.split(" ", 1)
            tables[section][int(key)] = value
        else:
            section = None

    def field(text, name):
        return int(re.search(name + r"=(\d+)", text).group(1))

    def source(frame: int) -> str:
        try:
            location = tables["FileLocations"][field(tables["StackFrames"][frame],
                                                     "file_location_id")]
            path = tables["FileNames"][field(location, "file_name_id")].strip('"')
            function = tables["FunctionNames"][field(location, "function_name_id")].strip('"')
            return f" ({os.path.basename(path)}:{field(location, 'line')} {function})"
        except (KeyError, AttributeError):
            return ""

    ops = {}
    for line in compiled_text.splitlines():
        match = re.match(r"\s*(?:ROOT )?%(\S+) = \S+ (\S+?)\(", line)
        if match:
            op_name = re.search(r'op_name="([^"]+)"', line)
            frame = re.search(r"stack_frame_id=(\d+)", line)
            ops[match.group(1)] = ((op_name.group(1).rsplit("/", 1)[-1] if op_name
                                    else match.group(2))
                                   + (source(int(frame.group(1))) if frame else ""))
    return ops


def measure_profile(m: int, steps: int = PROFILE_STEPS) -> dict:
    """Per compiled operation, the time of an accepted adaptive step (``--profile``)."""
    import jax
    import jax.numpy as jnp

    problem, particles, flow = problem_of({"data": "random", "m": m})
    t_end = jnp.asarray(jnp.inf, problem.x.dtype)
    warm = jax.jit(lambda s, k: jax.lax.fori_loop(
        0, k, lambda _, s: flow.step(problem, s, t_end), s), static_argnums=1)
    state = jax.block_until_ready(warm(jax.jit(flow.init)(problem, particles),
                                       WARM_STEPS["random"]))
    step = jax.jit(lambda s: flow.step(problem, s, t_end))
    ops = compiled_operations(step.lower(state).compile().as_text())
    jax.block_until_ready(step(state))
    totals, counts = collections.Counter(), collections.Counter()
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory):
            current, start = state, time.perf_counter()
            for _ in range(steps):
                current = jax.block_until_ready(step(current))
            wall = time.perf_counter() - start
        trace_file = glob.glob(os.path.join(directory, "**", "*.trace.json.gz"),
                               recursive=True)[0]
        with gzip.open(trace_file) as fh:
            for event in json.load(fh)["traceEvents"]:
                if event.get("ph") == "X" and event.get("name") in ops:
                    totals[event["name"]] += event.get("dur", 0.0)
                    counts[event["name"]] += 1
    accepted = int(current.n_steps - state.n_steps)
    traced = sum(totals.values())
    rows = [{"operation": name, "jax_op": ops[name], "us_per_step": us / steps,
             "calls_per_step": counts[name] / steps, "share": us / traced}
            for name, us in totals.most_common()]
    return {"m": m, "m_pad": int(particles.a.shape[0]), "n": int(problem.x.shape[0]),
            "D": int(problem.x.shape[1]), "dtype": str(problem.x.dtype), "steps": steps,
            "accepted": accepted, "profiled_wall_s_per_step": wall / steps,
            "traced_operation_us_per_step": traced / steps, "operations": rows}


def measure(kernel: str, name: str, repeats: int) -> dict:
    case = {**PASS_CASES, **RUN_CASES, **RATIO_CASES}[name]
    record = {"kernel": kernel, "case": name, "m": case["m"], "data": case["data"],
              "status": "ok", "load_1min_at_start": os.getloadavg()[0]}
    if name in RUN_CASES:
        record.update(gamma_prime=case.get("gamma_prime"), **measure_run(kernel, case, repeats))
    elif name in RATIO_CASES:
        record.update(measure_ratio(case, repeats))
    else:
        record.update(measure_pass(kernel, case, repeats))
    return record


# ----------------------------------------------------------------------------- driver

def run_subprocess(kernel: str, name: str, repeats: int) -> dict:
    """Measure (kernel, case) in a fresh interpreter; failures become status records."""
    cmd = [sys.executable, os.path.abspath(__file__), "--single", kernel, name,
           "--repeats", str(repeats)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"kernel": kernel, "case": name, "status": "failed",
                "reason": f"timeout after {SUBPROCESS_TIMEOUT:.0f} s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"kernel": kernel, "case": name, "status": "failed",
                "reason": f"exit code {proc.returncode}: " + " | ".join(tail)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratios(records: list[dict]) -> dict:
    """new/reference ratios of every timing field, per case (None where a record failed)."""
    by = {(r["kernel"], r["case"]): r for r in records if r["status"] == "ok"}
    out = {}
    for name in dict.fromkeys(r["case"] for r in records if r["case"] not in RATIO_CASES):
        new, ref = by.get(("new", name)), by.get(("reference", name))
        fields = [f for f in ("pass_s", "pass_cpu_s", "step_s", "step_cpu_s", "run_s",
                              "run_cpu_s") if new and ref and f in new and f in ref]
        out[name] = {f: new[f] / ref[f] for f in fields} if fields else None
    return out


def targets(ratio: dict, records: list[dict]) -> dict:
    """Full Luo runs at m = 4e4 at least TARGET_SPEEDUP times faster (wall and CPU time); an
    accepted adaptive step at most TARGET_ADAPTIVE_OVER_EULER Euler steps (wall and CPU)."""
    out = {}
    for r in records:
        if r["case"] not in RATIO_CASES:
            continue
        for field in ("adaptive_over_euler", "adaptive_over_euler_cpu"):
            value = r.get(field) if r["status"] == "ok" else None
            out[f"{r['case']}_{field}"] = {
                "value": value, "threshold": TARGET_ADAPTIVE_OVER_EULER,
                "holds": None if value is None else value <= TARGET_ADAPTIVE_OVER_EULER}
    for name in TARGET_RUNS:
        r = ratio.get(name)
        for field in ("run_s", "run_cpu_s"):
            speedup = None if not r else 1.0 / r[field]
            out[f"{name}_{field}_speedup"] = {
                "value": speedup, "threshold": TARGET_SPEEDUP,
                "holds": None if speedup is None else speedup >= TARGET_SPEEDUP}
    return out


def metadata(args) -> dict:
    import jax

    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": platform.node(), "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "jax": jax.__version__,
            "backend": jax.default_backend(), "quick": args.quick, "repeats": args.repeats,
            "kernels": list(KERNELS), "target_speedup": TARGET_SPEEDUP,
            "target_adaptive_over_euler": TARGET_ADAPTIVE_OVER_EULER,
            "quick_cases": list(QUICK)}


def run_all(args) -> dict:
    names = QUICK if args.quick else (*PASS_CASES, *RUN_CASES, *RATIO_CASES)
    load_at_start = list(os.getloadavg())
    records = []
    for name in names:
        # interleaved: both kernels see the same machine load; ratio cases time the new
        # kernel's step against Euler's
        for kernel in (("new",) if name in RATIO_CASES else KERNELS):
            record = run_subprocess(kernel, name, args.repeats)
            print(json.dumps(record), file=sys.stderr, flush=True)
            records.append(record)
    ratio = ratios(records)
    meta = metadata(args)
    meta.update(load_average_at_start=load_at_start, load_average_at_end=list(os.getloadavg()))
    return {"meta": meta, "results": records, "ratios_new_over_reference": ratio,
            "targets": targets(ratio, records)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"cases {', '.join(QUICK)} only (smoke test)")
    parser.add_argument("--out", help="also write the JSON document to this file")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timings per measurement, best kept (default 3, quick 1)")
    parser.add_argument("--profile", type=int, metavar="M",
                        help="print where an adaptive step's time goes at width M (random data)")
    parser.add_argument("--single", nargs=2, metavar=("KERNEL", "CASE"),
                        help="internal: measure one (kernel, case) and print one JSON line")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        parser.error(f"--repeats must be a positive integer, got {args.repeats}")
    if args.profile is not None and args.profile < 1:
        parser.error(f"--profile M must be a positive width, got {args.profile}")
    if args.single is not None:
        kernel, name = args.single
        if kernel not in KERNELS:
            parser.error(f"--single KERNEL must be one of {KERNELS}, got {kernel!r}")
        cases = {**PASS_CASES, **RUN_CASES, **RATIO_CASES}
        if name not in cases:
            parser.error(f"--single CASE must be one of {sorted(cases)}, got {name!r}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.single is not None:
        print(json.dumps(measure(*args.single, args.repeats)), flush=True)
        return
    if args.profile is not None:
        document = {"meta": {**metadata(args), "load_average": list(os.getloadavg())},
                    "profile": measure_profile(args.profile)}
    else:
        document = run_all(args)
    text = json.dumps(document, indent=2)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
