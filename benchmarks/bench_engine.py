"""Throughput and peak memory of the particle engine against a naive dense-JAX baseline.

Measures neuron-sample pairs per second (m * n / seconds per training step) of

* ``engine_euler``: ``meanfield.particles.Euler`` steps (fused ``euler_pass``), K steps per jitted
  ``lax.fori_loop``;
* ``engine_euler_baseline``: the same Euler steps with the previous ``euler_pass`` formulation
  (``baseline_euler_pass`` below: pre-activations as a dot with a width-D contraction, the
  output pass as an (n, chunk) matrix-vector product), so one run reports the kernel speed-up;
  with ``--baseline-src DIR``, instead the Euler steps of another version of the whole package
  (its kernels, chunking and integrator), measured by that version's own copy of this script;
* ``engine_adaptive``: ``meanfield.particles.AdaptiveFlow`` steps (two motion passes per step), same;
* ``naive``: the usual research script: ``jax.jit`` of ``jax.grad`` of the dense n x m loss
  plus the update ``theta - lr * m * grad``, called once per step from a Python loop;

on random data (n samples in d dimensions with bias, float32, squared loss). Every
(method, width) runs in a fresh subprocess (``--single METHOD M``) so that
``ru_maxrss`` is that run's peak resident memory. The parent prints one JSON document with
the records, the engine/naive ratios and whether the performance targets hold. With
``--rounds R`` the whole (width, method) sweep is repeated R times, interleaved, and each ratio
uses the best throughput of every (method, width) (robust to a load that varies during the run);
the Euler speed-up over its baseline is also given as the median over the rounds of the ratio
within a round (the two measured one after the other, under about the same load).
``--cores N`` runs every measurement on the first N usable CPUs only; the Euler steps' rate of
multiply-adds (``multiply_adds_per_pair``) is reported as a fraction of the peak of the CPUs
used (``engine_euler_fma_peak_fraction``: ``FMA_UNITS_PER_CORE`` units of the widest vector
width at the clock /proc/cpuinfo reports). ``--cores 1 --widths 4000`` (one chunk) measures
how close one chunk comes to what one core's multiply-add units allow.

Usage::

    python benchmarks/bench_engine.py [--quick] [--out FILE] [--chunk N] [--input-dim d]
        [--methods engine_euler,engine_euler_baseline] [--widths 10000,1000000,10000000]
        [--rounds R] [--baseline-src DIR] [--cores N]

``--baseline-src DIR`` holds another version laid out as installed, with its benchmarks::

    git archive COMMIT meanfield particles validation benchmarks | tar -x -C DIR
    mv DIR/particles DIR/validation DIR/meanfield/

The targets are stated for the default d = 3 (D = 4); with ``--input-dim`` above 3 the engine's
pre-activations are a dot, like the baseline's, so ``engine_euler_baseline`` no longer measures
the multiply-add formulation.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

METHODS = ("engine_euler", "engine_euler_baseline", "engine_adaptive", "naive")
ENGINE_METHODS = ("engine_euler", "engine_adaptive")
FULL_WIDTHS = (10**3, 10**4, 10**5, 2**17, 10**6, 10**7)
QUICK_WIDTHS = (10**3, 10**4, 10**5)
N_SAMPLES, INPUT_DIM = 100, 3
EULER_DT = 1e-2
SEED = 0
# Dense n x m float32 buffers the naive jitted grad step keeps alive at its peak (~2.2 measured
# at m = 10^6 on XLA:CPU: Z and relu(Z) or its cotangent), rounded up for the guard.
NAIVE_LIVE_MATRICES = 3
MEMORY_HEADROOM = 0.8  # fraction of MemAvailable a guarded run may use
SUBPROCESS_TIMEOUT = 1800.0

TARGET_NAIVE_RATIO = 2.0
TARGET_NAIVE_WIDTHS = (10**5, 10**6)
TARGET_SCALING = 0.7
TARGET_SCALING_WIDTHS = (10**4, 10**7)
TARGET_MEMORY_MIB = 4096.0
TARGET_MEMORY_WIDTH = 10**7
TARGET_EULER_SPEEDUP = 2.0  # engine_euler over engine_euler_baseline
TARGET_EULER_SPEEDUP_WIDTHS = (10**4, 10**6, 10**7)
# Fused multiply-add units per core assumed for the FMA roofline (two on x86 cores since
# Haswell / Zen): the multiply-adds per pair over the CPU's peak rate
FMA_UNITS_PER_CORE = 2


# ----------------------------------------------------------------------------- one measurement

def make_data(n: int, d: int, seed: int):
    """Random inputs x ~ N(0, I_d) and smooth labels y = sin(x . v), float32 host arrays."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    v = rng.standard_normal(d).astype(np.float32)
    return x, np.sin(x @ v).astype(np.float32)


def baseline_euler_pass(problem, particles, residual, dt):
    """The previous ``meanfield.particles.kernels.euler_pass`` formulation (speed baseline only).

    Per neuron g = where(w @ x.T > 0, R, 0) @ x (the pre-activations a dot with a width-D
    contraction, a separate (chunk, n) buffer), and the output pass as relu(x @ w).T stacked
    (n, chunk) times a. Same chunking and chunk-ordered sums as the engine's.
    """
    import jax
    import jax.numpy as jnp

    from meanfield.particles.kernels import Particles, scan_chunks

    def velocity(a, w):
        g = jnp.where(w @ problem.x.T > 0, residual, 0) @ problem.x
        da = -jnp.dot(w, g) if problem.trainable else jnp.zeros_like(a)
        return da, -a * g

    def fn(chunk):
        da, dw = jax.vmap(velocity)(chunk.a, chunk.w)
        new = Particles(a=chunk.a + dt * da, w=chunk.w + dt * dw)
        activations = jax.vmap(lambda w: jax.nn.relu(problem.x @ w), out_axes=1)(new.w)
        return new, activations @ new.a

    new, total = scan_chunks(fn, particles, problem.n_chunks,
                             jnp.zeros(problem.x.shape[0], problem.x.dtype))
    return new, total * problem.inv_width


def engine_runner(method: str, width: int, chunk_size: int | None, x, y):
    """(run(state, k) -> state, initial state, layout info) for an engine integrator."""
    import jax
    import jax.numpy as jnp

    import meanfield as mf
    from meanfield.setup import prepare

    if method == "engine_euler_baseline":
        # This subprocess measures only the baseline: its Euler integrator runs the old pass.
        import meanfield.particles.integrators as integrators
        integrators.euler_pass = baseline_euler_pass
    solver = (mf.Solver(kind="euler", dt=EULER_DT) if method.startswith("engine_euler")
              else mf.Solver(kind="adaptive"))
    config = mf.SimulationConfig(model=mf.ModelSpec(width=width), data=mf.TrainingData(x=x, y=y),
                                 solver=solver, chunk_size=chunk_size, seed=SEED)
    problem, particles, _, dtype = prepare(config)
    integrator = solver.build().with_dtype(dtype)
    t_target = jnp.asarray(jnp.inf, dtype)

    def run(problem, integrator, state, k):
        body = lambda _, s: integrator.step(problem, s, t_target)
        return jax.lax.fori_loop(0, k, body, state)

    run_jit = jax.jit(run)
    state = integrator.init(problem, particles)
    n_chunks = problem.n_chunks
    layout = {"m_pad": int(particles.a.shape[0]), "n_chunks": n_chunks,
              "chunk": int(particles.a.shape[0]) // n_chunks}
    return (lambda s, k: run_jit(problem, integrator, s, k)), state, layout


def naive_runner(width: int, x, y):
    """(run(theta, k) -> theta, initial theta): jitted dense grad step in a Python loop."""
    import jax
    import jax.numpy as jnp

    xb = jnp.asarray(np.concatenate([x, np.ones((x.shape[0], 1), np.float32)], axis=1))
    yb = jnp.asarray(y)
    key_a, key_w = jax.random.split(jax.random.key(SEED))
    theta = (jax.random.normal(key_a, (width,), jnp.float32),
             jax.random.normal(key_w, (width, xb.shape[1]), jnp.float32))

    def loss(theta):
        a, w = theta
        f = jax.nn.relu(xb @ w.T) @ a / width
        return jnp.mean(0.5 * (f - yb) ** 2)

    @jax.jit
    def step(theta):
        grad = jax.grad(loss)(theta)
        return jax.tree.map(lambda p, g: p - EULER_DT * width * g, theta, grad)

    def run(theta, k):
        for _ in range(k):
            theta = step(theta)
        return theta

    return run, theta, {"m_pad": width}


def timed(run, state, k: int):
    """(new state, wall seconds, CPU seconds of this process) of ``run(state, k)`` up to
    block_until_ready."""
    import jax

    start, cpu_start = time.perf_counter(), time.process_time()
    state = jax.block_until_ready(run(state, k))
    return state, time.perf_counter() - start, time.process_time() - cpu_start


def seconds_per_step(run, state, min_seconds: float, repeats: int):
    """Best seconds per step over up to ``repeats`` timings of K steps, K * step >= min_seconds.

    The first call (k = 1) compiles and warms up; the second times one step, picks K and counts
    as a timing when K = 1. Timings stop early once they used ``repeats * min_seconds`` (a
    single slow step, e.g. the adaptive integrator at 10^7, is then timed once). The CPU time
    (all threads of this process) is less sensitive than the wall time to other processes
    competing for the cores.
    Returns (wall seconds per step, CPU seconds per step, K, final state).
    """
    state, _, _ = timed(run, state, 1)
    state, one, one_cpu = timed(run, state, 1)
    k = max(1, math.ceil(min_seconds / max(one, 1e-9)))
    timings, cpu_timings, spent = ([one], [one_cpu], one) if k == 1 else ([], [], 0.0)
    while len(timings) < repeats and spent < repeats * min_seconds:
        state, seconds, cpu_seconds = timed(run, state, k)
        timings.append(seconds / k)
        cpu_timings.append(cpu_seconds / k)
        spent += seconds
    return min(timings), min(cpu_timings), k, state


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(method: str, width: int, args) -> dict:
    """Run one (method, width) measurement in this process and return its record."""
    baseline, load = peak_rss_mib(), os.getloadavg()[0]
    x, y = make_data(N_SAMPLES, args.input_dim, SEED)
    if method == "naive":
        run, state, layout = naive_runner(width, x, y)
    else:
        run, state, layout = engine_runner(method, width, args.chunk, x, y)
    seconds, cpu_seconds, k, state = seconds_per_step(run, state, args.min_seconds,
                                                      args.repeats)
    record = {"method": method, "m": width, "status": "ok", **layout,
              "steps_per_timing": k, "seconds_per_step": seconds,
              "pairs_per_second": width * N_SAMPLES / seconds,
              "cpu_seconds_per_step": cpu_seconds,
              "pairs_per_cpu_second": width * N_SAMPLES / cpu_seconds,
              "peak_rss_mib": peak_rss_mib(), "baseline_rss_mib": baseline,
              "load_1min_at_start": load}
    if method != "naive":
        record.update(n_steps=int(state.n_steps), n_rejected=int(state.n_rejected),
                      integrator_status=int(state.status), t=float(state.t))
    return record


# ----------------------------------------------------------------------------- driver

def mem_available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, or None where it does not exist."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def skip_reason(method: str, width: int) -> str | None:
    """Why the naive baseline cannot run at this width (memory guard), else None."""
    if method != "naive":
        return None
    needed = NAIVE_LIVE_MATRICES * N_SAMPLES * width * 4
    available = mem_available_bytes()
    if available is not None and needed > MEMORY_HEADROOM * available:
        return (f"needs ~{needed / 2**30:.1f} GiB ({NAIVE_LIVE_MATRICES} dense n x m float32 "
                f"buffers), above {MEMORY_HEADROOM:.0%} of the "
                f"{available / 2**30:.1f} GiB available")
    return None


def run_subprocess(method: str, width: int, args) -> dict:
    """Measure (method, width) in a fresh interpreter; failures become status records."""
    reason = skip_reason(method, width)
    if reason is not None:
        return {"method": method, "m": width, "status": "skipped", "reason": reason}
    script, env, measured = os.path.abspath(__file__), None, method
    if method == "engine_euler_baseline" and args.baseline_src:
        # the other version's own script measures its own Euler steps
        script = os.path.join(os.path.abspath(args.baseline_src), "benchmarks", "bench_engine.py")
        env, measured = baseline_env(args.baseline_src, dict(os.environ)), "engine_euler"
    cmd = [sys.executable, script, "--single", measured, str(width),
           "--min-seconds", str(args.min_seconds), "--repeats", str(args.repeats)]
    if args.chunk is not None:
        cmd += ["--chunk", str(args.chunk)]
    if args.input_dim != INPUT_DIM:  # older copies of this script have no --input-dim
        cmd += ["--input-dim", str(args.input_dim)]
    pin = None
    if args.cores is not None:  # this version's and an older one's script alike
        cpus = usable_cpus()[:args.cores]
        pin = lambda: os.sched_setaffinity(0, cpus)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
                              env=env, preexec_fn=pin)
    except subprocess.TimeoutExpired:
        return {"method": method, "m": width, "status": "failed",
                "reason": f"timeout after {SUBPROCESS_TIMEOUT:.0f} s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"method": method, "m": width, "status": "failed",
                "reason": f"exit code {proc.returncode}: " + " | ".join(tail)}
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    record.update(cores=args.cores or len(usable_cpus()), D=args.input_dim + 1)
    if measured != method:
        record.update(method=method, baseline_src=os.path.abspath(args.baseline_src))
    return record


def successful(records: list[dict], method: str, width: int) -> list[dict]:
    """The successful records of (method, width), one per round."""
    return [r for r in records if r["method"] == method and r["m"] == width
            and r["status"] == "ok"]


def throughput(records: list[dict], method: str, width: int,
               key: str = "pairs_per_second") -> float | None:
    """Best pairs per (wall or, with key="pairs_per_cpu_second", CPU) second over the
    successful (method, width) records that have it (older copies of this script, run by
    ``--baseline-src``, record no CPU time), else None."""
    values = [r[key] for r in successful(records, method, width) if key in r]
    return max(values) if values else None


def paired_median_ratio(records: list[dict], method: str, baseline: str,
                        width: int) -> float | None:
    """Median over the rounds measuring both of ``method``'s pairs per second over
    ``baseline``'s in the same round (the two ran one after the other), else None."""
    by_round = lambda name: {r.get("round", 0): r["pairs_per_second"]
                             for r in successful(records, name, width)}
    num, den = by_round(method), by_round(baseline)
    values = [num[k] / den[k] for k in num if k in den]
    return statistics.median(values) if values else None


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (all of them where the OS cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cpu_peak():
    """(MHz, float32 lanes of the widest vector unit) of this CPU from /proc/cpuinfo, or
    (None, None) where it cannot be read: a nominal peak (the clock read after the runs; CPUs
    that split wide multiply-adds into halves, e.g. Zen 4 for 512 bits, reach half of it)."""
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:
        return None, None
    mhz = [float(v) for v in re.findall(r"^cpu MHz\s*:\s*([0-9.]+)", text, re.M)]
    flag_lines = re.findall(r"^flags\s*:(.*)$", text, re.M)
    flags = set(flag_lines[0].split()) if flag_lines else set()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    return (max(mhz) if mhz else None), lanes


def multiply_adds_per_pair(dim: int) -> int:
    """Multiply-adds of an Euler step per neuron-sample pair at D = ``dim`` inputs with the
    bias: the pre-activation w . x_j (D), the field's share R_j x_j (D), the new
    pre-activation (D) and the output a relu(z) (1)."""
    return 3 * dim + 1


def fma_peak_fraction(records: list[dict], width: int) -> float | None:
    """Median over the rounds of ``engine_euler``'s multiply-adds per second at ``width`` over
    the peak of the CPUs it ran on (``FMA_UNITS_PER_CORE`` units of the widest vector width at
    the reported clock), else None."""
    mhz, lanes = cpu_peak()
    values = [r["pairs_per_second"] * multiply_adds_per_pair(r["D"])
              / (r["cores"] * FMA_UNITS_PER_CORE * lanes * mhz * 1e6)
              for r in successful(records, "engine_euler", width) if "cores" in r]
    return statistics.median(values) if values and mhz else None


def peak_memory(records: list[dict], method: str, width: int) -> float | None:
    """Largest peak RSS (MiB) over the successful (method, width) records, else None."""
    ok = successful(records, method, width)
    return max(r["peak_rss_mib"] for r in ok) if ok else None


def ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None else num / den


def summarise(records: list[dict], widths) -> tuple[dict, dict]:
    """Ratios and target verdicts (holds = None when a needed width was not measured)."""
    naive_ratio = {method: {str(m): ratio(throughput(records, method, m),
                                          throughput(records, "naive", m)) for m in widths}
                   for method in ENGINE_METHODS}
    euler_ratio = lambda m: naive_ratio["engine_euler"].get(str(m))
    small, large = TARGET_SCALING_WIDTHS
    scaling = {method: ratio(throughput(records, method, large),
                             throughput(records, method, small)) for method in ENGINE_METHODS}
    speedup = {str(m): ratio(throughput(records, "engine_euler", m),
                             throughput(records, "engine_euler_baseline", m)) for m in widths}
    cpu_speedup = {str(m): ratio(throughput(records, "engine_euler", m, "pairs_per_cpu_second"),
                                 throughput(records, "engine_euler_baseline", m,
                                            "pairs_per_cpu_second")) for m in widths}
    paired = {str(m): paired_median_ratio(records, "engine_euler", "engine_euler_baseline", m)
              for m in widths}
    roofline = {str(m): fma_peak_fraction(records, m) for m in widths}
    ratios = {"engine_over_naive": naive_ratio,
              f"engine_{large:.0e}_over_{small:.0e}".replace("+0", ""): scaling,
              "euler_over_baseline": speedup, "euler_over_baseline_cpu_time": cpu_speedup,
              "euler_over_baseline_median_of_rounds": paired,
              "engine_euler_fma_peak_fraction": roofline}

    def verdict(value, threshold, passes):
        return {"value": value, "threshold": threshold,
                "holds": None if value is None else bool(passes(value))}

    targets = {
        f"euler_over_naive_at_{m:.0e}".replace("+0", ""): verdict(
            euler_ratio(m), TARGET_NAIVE_RATIO,
            lambda v: v >= TARGET_NAIVE_RATIO)
        for m in TARGET_NAIVE_WIDTHS}
    targets.update({
        f"euler_over_baseline_at_{m:.0e}".replace("+0", ""): verdict(
            speedup.get(str(m)), TARGET_EULER_SPEEDUP, lambda v: v >= TARGET_EULER_SPEEDUP)
        for m in TARGET_EULER_SPEEDUP_WIDTHS})
    targets.update({
        f"euler_over_baseline_median_of_rounds_at_{m:.0e}".replace("+0", ""): verdict(
            paired.get(str(m)), TARGET_EULER_SPEEDUP, lambda v: v >= TARGET_EULER_SPEEDUP)
        for m in TARGET_EULER_SPEEDUP_WIDTHS})
    targets["euler_scaling"] = verdict(scaling["engine_euler"], TARGET_SCALING,
                                       lambda v: v >= TARGET_SCALING)
    targets["euler_peak_mib_at_1e7"] = verdict(
        peak_memory(records, "engine_euler", TARGET_MEMORY_WIDTH), TARGET_MEMORY_MIB,
        lambda v: v < TARGET_MEMORY_MIB)
    return ratios, targets


def metadata(args, widths) -> dict:
    import jax

    import meanfield.particles.kernels as kernels

    mhz, lanes = cpu_peak()

    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": platform.node(), "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "jax": jax.__version__,
            "backend": jax.default_backend(), "n": N_SAMPLES, "d": args.input_dim,
            "D": args.input_dim + 1, "dtype": "float32", "loss": "squared", "euler_dt": EULER_DT,
            "chunk_size": kernels.DEFAULT_CHUNK if args.chunk is None else args.chunk,
            "widths": list(widths), "methods": list(args.methods), "quick": args.quick,
            "min_seconds": args.min_seconds, "repeats": args.repeats, "rounds": args.rounds,
            "baseline_src": args.baseline_src and os.path.abspath(args.baseline_src),
            "cores": args.cores, "cpu_mhz": mhz, "float32_lanes": lanes,
            "fma_units_per_core_assumed": FMA_UNITS_PER_CORE}


def run_all(args) -> dict:
    """Every (method, width) in its own subprocess, then ratios and targets."""
    widths = args.widths or (QUICK_WIDTHS if args.quick else FULL_WIDTHS)
    load_at_start = list(os.getloadavg())
    records = []
    for round_index in range(args.rounds):
        for width in widths:
            for method in args.methods:
                record = {**run_subprocess(method, width, args), "round": round_index}
                print(json.dumps(record), file=sys.stderr, flush=True)
                records.append(record)
    ratios, targets = summarise(records, widths)
    # Metadata imports jax: only after the children ran, since a child's ru_maxrss starts at
    # the RSS of the parent it was forked from.
    meta = metadata(args, widths)
    meta.update(load_average_at_start=load_at_start, load_average_at_end=list(os.getloadavg()))
    return {"meta": meta, "results": records, "ratios": ratios,
            "targets": targets}


def header(benchmark: str, script: str, argv) -> dict:
    """The start of a whole-run benchmark's JSON document: its name, the date, the command
    (``python benchmarks/SCRIPT`` and ``argv``, None: this process's arguments) and the machine
    (usable cores, platform, Python, the load average before the runs)."""
    return {"benchmark": benchmark,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "command": " ".join(["python", f"benchmarks/{script}"]
                                + list(sys.argv[1:] if argv is None else argv)),
            "machine": {"cores": len(usable_cpus()),
                        "platform": platform.platform(),
                        "python": platform.python_version(),
                        "load_average_before": os.getloadavg()}}


def variables_that_differ(got, want) -> list[str]:
    """Data variables of the Dataset ``want`` that ``got`` lacks or holds other values of
    (bitwise, NaN equal to NaN), wall times aside: a run's numbers do not depend on where or
    how fast it ran."""
    import numpy as np

    return [name for name in want.data_vars if name != "wall_time" and not (
        name in got and np.array_equal(got[name].values, want[name].values,
                                       equal_nan=want[name].dtype.kind == "f"))]


def emit(report: dict, out: str | None) -> None:
    """Print the JSON document ``report`` and, with ``out``, also write it there."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as fh:
            fh.write(text + "\n")


def baseline_env(src: str, env: dict) -> dict:
    """``env`` with ``src`` first on PYTHONPATH, so that a process imports the ``meanfield``
    package in ``src/meanfield`` (another version) with its subpackages, laid out as installed
    (this script's ``--baseline-src`` also runs ``DIR/benchmarks/bench_engine.py``: add
    ``benchmarks`` to the archive)::

        git archive COMMIT meanfield particles validation | tar -x -C DIR
        mv DIR/particles DIR/validation DIR/meanfield/

    Raises:
        SystemExit: ``src`` holds no ``meanfield`` package (the baseline would silently be the
            current version), or one without ``particles`` or ``validation`` (its imports of
            them would fail: the package's own folder is searched, not the installed tree).
    """
    src = os.path.abspath(src)
    for part in ("__init__.py", os.path.join("particles", "__init__.py"),
                 os.path.join("validation", "__init__.py")):
        if not os.path.isfile(os.path.join(src, "meanfield", part)):
            raise SystemExit(f"--baseline-src {src}: no {os.path.join(src, 'meanfield', part)};"
                             " lay the package out as installed (bench_engine.baseline_env)")
    path = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": path}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="widths up to 1e5 and short timings (CI smoke test)")
    parser.add_argument("--out", help="also write the JSON document to this file")
    parser.add_argument("--chunk", type=int, default=None,
                        help="engine chunk size (default meanfield.particles.kernels.DEFAULT_CHUNK)")
    parser.add_argument("--input-dim", type=int, default=INPUT_DIM,
                        help=f"input dimension d (D = d + 1 with the bias; default {INPUT_DIM})")
    parser.add_argument("--min-seconds", type=float, default=None,
                        help="minimum wall time of one timing (default 1, quick 0.05)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timings per measurement, best kept (default 3, quick 1)")
    parser.add_argument("--methods", type=lambda v: v.split(","), default=list(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (default all)")
    parser.add_argument("--widths", type=lambda v: [int(w) for w in v.split(",")],
                        default=None, help="comma-separated widths (default the full or "
                        "quick list)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the whole sweep this many times, interleaved; ratios use "
                        "the best throughput of each (method, width) (default 1)")
    parser.add_argument("--baseline-src", default=None,
                        help="engine_euler_baseline runs the Euler steps of the package version "
                        "in this folder (laid out as installed, with its benchmarks/) instead "
                        "of the previous euler_pass formulation")
    parser.add_argument("--cores", type=int, default=None,
                        help="run every measurement on this many CPUs only (the first usable "
                        "ones; default all); with 1, one chunk's throughput against the CPU's "
                        "peak multiply-add rate (roofline)")
    parser.add_argument("--single", nargs=2, metavar=("METHOD", "M"),
                        help="internal: measure one (method, width) and print one JSON line")
    args = parser.parse_args(argv)
    if args.min_seconds is None:
        args.min_seconds = 0.05 if args.quick else 1.0
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.single is not None and args.single[0] not in METHODS:
        parser.error(f"--single METHOD must be one of {METHODS}")
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods {','.join(unknown)} not allowed: choose from {','.join(METHODS)}")
    if args.rounds < 1:
        parser.error(f"--rounds must be a positive integer, got {args.rounds}")
    usable = len(usable_cpus())
    if args.cores is not None and not hasattr(os, "sched_setaffinity"):
        parser.error("--cores needs os.sched_setaffinity (Linux)")
    if args.cores is not None and not 1 <= args.cores <= usable:
        parser.error(f"--cores must be between 1 and the {usable} usable CPUs, got {args.cores}")
    if args.input_dim < 1:
        parser.error(f"--input-dim must be a positive integer, got {args.input_dim}")
    if args.baseline_src is not None:
        script = os.path.join(args.baseline_src, "benchmarks", "bench_engine.py")
        if not os.path.isfile(script):
            parser.error(f"--baseline-src {args.baseline_src}: no {script}")
        baseline_env(args.baseline_src, {})  # the package's layout, checked before any run
    if args.widths is not None and min(args.widths) < 1:
        parser.error(f"--widths must be positive integers, got {args.widths}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.single is not None:
        method, width = args.single[0], int(args.single[1])
        print(json.dumps(measure(method, width, args)), flush=True)
        return
    emit(run_all(args), args.out)


if __name__ == "__main__":
    main()
