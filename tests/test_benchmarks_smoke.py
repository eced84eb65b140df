"""Smoke test of benchmarks/bench_engine.py: the quick run completes and prints its JSON schema.

Timings are never asserted here (they depend on the machine and its load). The default run
measures the smallest quick width only (every method in its own subprocess, the ratios and
targets built from them); the whole ``--quick`` command is the ``slow`` test.
"""

import importlib.util
import json
import pathlib
import subprocess
import sys
import warnings

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_engine.py"
METHODS = {"engine_euler", "engine_euler_baseline", "engine_adaptive", "naive"}
RECORD_KEYS = {"method", "m", "status", "seconds_per_step", "pairs_per_second",
               "cpu_seconds_per_step", "pairs_per_cpu_second", "peak_rss_mib"}


def check_report(report: dict, quick: bool) -> None:
    assert set(report) == {"meta", "results", "ratios", "targets"}
    assert report["meta"]["quick"] is quick
    widths = report["meta"]["widths"]
    assert {(r["method"], r["m"]) for r in report["results"]} == {
        (method, m) for method in METHODS for m in widths}
    for record in report["results"]:
        assert record["status"] == "ok", record
        assert RECORD_KEYS <= set(record)
    assert set(report["ratios"]["engine_over_naive"]) == {"engine_euler", "engine_adaptive"}
    for key in ("euler_over_baseline", "euler_over_baseline_cpu_time",
                "euler_over_baseline_median_of_rounds"):
        assert set(report["ratios"][key]) == {str(m) for m in widths}
    for target in report["targets"].values():
        assert {"value", "threshold", "holds"} <= set(target)


def test_bench_engine_smallest_quick_width_prints_json(tmp_path, monkeypatch, capsys):
    bench = load_bench("bench_engine")
    monkeypatch.setattr(bench, "QUICK_WIDTHS", bench.QUICK_WIDTHS[:1])
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--out", str(out)])
    report = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == report
    assert report["meta"]["widths"] == [bench.QUICK_WIDTHS[0]]
    check_report(report, quick=True)


@pytest.mark.slow
def test_bench_engine_quick_prints_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, check=True)
    report = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == report
    check_report(report, quick=True)


def meanfield_imports(path: pathlib.Path) -> list[tuple[str, str, int]]:
    """(module, name, line) of every ``from meanfield... import name`` in a script, also the
    imports inside functions (the benchmarks import in their measuring subprocesses)."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "meanfield":
            found += [(node.module, alias.name, node.lineno) for alias in node.names]
    return found


def test_every_benchmark_imports_names_that_exist():
    """A renamed library function must not leave a benchmark that fails only when it is run."""
    scripts = sorted(SCRIPT.parent.glob("bench_*.py"))
    assert len(scripts) >= 5
    missing = []
    for script in scripts:
        for module, name, line in meanfield_imports(script):
            if not hasattr(importlib.import_module(module), name):
                try:  # a submodule imported by name
                    importlib.import_module(f"{module}.{name}")
                except ImportError:
                    missing.append(f"{script.name}:{line}: {module}.{name}")
    assert not missing, missing


def load_bench(name: str):
    """The benchmark script ``benchmarks/NAME.py`` as a module."""
    if str(SCRIPT.parent) not in sys.path:  # as when run as a script: its siblings import
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location(name, SCRIPT.parent / f"{name}.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_figures_clocks_every_png_of_save_all(tmp_path):
    import meanfield as mf

    bench = load_bench("bench_figures")
    ds = mf.simulate(mf.presets.wang_ma(width=20, t_max=50.0, n_saves=40), progress=False)
    with warnings.catch_warnings():  # no note of luo_scatter.png: not a figure of 20-D inputs
        warnings.simplefilter("error")
        times = bench.clocked_save_all(ds, str(tmp_path))
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["density.png", "rays.png", "training_curves.png"]
    assert sorted(set(times) - {"total_s"}) == written
    parts = sum(t["build_s"] + t["savefig_s"] for name, t in times.items() if name != "total_s")
    assert all(t["savefig_s"] > 0 for name, t in times.items() if name != "total_s")
    assert 0 < parts <= times["total_s"]


def test_bench_figures_medians_and_ratios():
    bench = load_bench("bench_figures")
    runs = [{"a": {"build_s": b, "savefig_s": 2 * b}, "total_s": 3 * b} for b in (1.0, 5.0, 2.0)]
    assert bench.medians(runs) == {"a": {"build_s": 2.0, "savefig_s": 4.0}, "total_s": 6.0}
    keys = ("meanfield_plot_cli_s", "open_load_s", "import_matplotlib_s", "import_meanfield_s")
    before = {**{k: 4.0 for k in keys}, "fresh": {"a": {"build_s": 1.0, "savefig_s": 3.0},
                                                  "total_s": 4.0}, "warm": None}
    after = {**{k: 2.0 for k in keys}, "fresh": {"a": {"build_s": 0.5, "savefig_s": 0.5},
                                                 "total_s": 1.0}, "warm": None}
    ratios = bench.ratios(before, after)
    assert ratios["fresh"] == {"a": 4.0, "total_s": 4.0}
    assert ratios["meanfield_plot_cli_s"] == 2.0 and "warm" not in ratios


def test_paired_median_ratio_pairs_the_rounds():
    """The Euler speed-up per round is the ratio within that round; rounds measuring only one
    of the two, or a failed measurement, are left out."""
    bench = load_bench("bench_engine")
    record = lambda method, r, pairs, status="ok": {
        "method": method, "m": 10, "round": r, "status": status, "pairs_per_second": pairs}
    records = [record("engine_euler", 0, 4.0), record("engine_euler_baseline", 0, 1.0),
               record("engine_euler", 1, 3.0), record("engine_euler_baseline", 1, 3.0),
               record("engine_euler", 2, 6.0), record("engine_euler_baseline", 2, 3.0),
               record("engine_euler", 3, 9.0),
               record("engine_euler", 4, 1.0), record("engine_euler_baseline", 4, 1.0, "error")]
    # rounds 0..2: ratios 4, 1, 2 -> median 2 (the best-of ratio would be 9 / 3 = 3)
    assert bench.paired_median_ratio(records, "engine_euler", "engine_euler_baseline", 10) == 2.0
    assert bench.paired_median_ratio(records, "engine_euler", "engine_euler_baseline", 11) is None


def test_fma_peak_fraction_is_the_multiply_add_rate_over_the_cpu_peak(monkeypatch):
    bench = load_bench("bench_engine")
    monkeypatch.setattr(bench, "cpu_peak", lambda: (2000.0, 16))
    records = [{"method": "engine_euler", "m": 10, "round": r, "status": "ok", "cores": 1,
                "D": 4, "pairs_per_second": pairs} for r, pairs in enumerate((1e9, 2e9, 4e9))]
    # 13 multiply-adds per pair at D = 4; peak 1 core x 2 units x 16 lanes x 2e9 Hz = 64e9/s
    assert bench.multiply_adds_per_pair(4) == 13
    assert bench.fma_peak_fraction(records, 10) == pytest.approx(2e9 * 13 / 64e9)
    assert bench.fma_peak_fraction(records, 11) is None
