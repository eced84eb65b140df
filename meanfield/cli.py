"""Command line: ``meanfield run PRESET ...``, ``meanfield presets``, ``meanfield plot RUN`` and
``meanfield validate STUDY``."""

from __future__ import annotations

import argparse
import ast
import os
import sys

EPILOG = """examples:
  meanfield run wang_ma                       # Wang & Ma four phases, m = 100
  meanfield run luo_1d --set gamma=1.75 --width 4000
  meanfield run wang_ma --set solver.rtol=1e-4 --out runs/tight.zarr
"""


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"meanfield: --set takes key=value, got {item!r}")
        out[key.strip()] = _parse_value(value.strip())
    return out


def build_config(preset: str, *, width=None, seed=None, t_max=None, sets=()):
    """Preset config with CLI overrides: preset arguments first, then dotted config fields."""
    from meanfield import presets

    overrides = _parse_sets(list(sets))
    allowed = presets.arguments(preset)
    kwargs = {k: v for k, v in (("width", width), ("seed", seed), ("t_max", t_max)) if v is not None}
    kwargs.update({k: v for k, v in overrides.items() if k in allowed})
    config = presets.get(preset, **kwargs)
    fields = {k: v for k, v in overrides.items() if k not in allowed}
    return config.replace(**fields) if fields else config


def _default_out(config) -> str:
    solver = "" if config.solver.kind == "adaptive" else f"-{config.solver.kind}"
    return os.path.join("runs", f"{config.name}-m{config.model.width}-s{config.seed}{solver}.zarr")


def _existing_store(path: str, config) -> str:
    """What an existing ``--out`` holds: ``finished`` (this config), ``unfinished`` (this
    config: resumable) or ``other``; unreadable stores are an error (never overwritten)."""
    from meanfield.store import read_progress

    try:
        from meanfield.io import open_run

        same = open_run(path).attrs.get("config") == config.to_json()
        progress = read_progress(path)
    except Exception as exc:  # unreadable store: never overwrite silently
        raise SystemExit(f"meanfield: {path} exists and is not a readable run store ({exc}); "
                         "choose another --out or pass --overwrite") from None
    if not same:
        return "other"
    return "finished" if progress is None or progress["finished"] else "unfinished"


def _summary(ds, out: str | None) -> str:
    last = ds.isel(t=-1)
    lines = [
        f"run        {ds.attrs['preset']}  width={ds.attrs['width']}  seed={ds.attrs['seed']}  "
        f"precision={ds.attrs['precision']}  solver={ds.attrs['solver']}",
        f"stopped    t={float(last.t):.6g}  ({ds.attrs['stop_reason']})  "
        f"steps={int(last.n_steps)}  rejected={int(last.n_rejected)}",
        f"loss       {float(ds.loss[0]):.6g} -> {float(last.loss):.6g}",
    ]
    if "accuracy" in ds:
        lines.append(f"accuracy   {float(ds.accuracy[0]):.3f} -> {float(last.accuracy):.3f}")
    if "phase" in ds:
        from meanfield.phases import boundaries

        starts = boundaries(ds.phase)
        lines.append("phases     " + "; ".join(f"{name} from t={t0:.4g}" for name, t0 in starts.items()))
    lines.append(f"wall time  {ds.attrs['wall_time_s']:.2f} s  (jax {ds.attrs['jax_version']}, "
                 f"{ds.attrs['backend']})")
    if out:
        lines.append(f"saved      {out}")
    return "\n".join(lines)


def cmd_run(args) -> int:
    from meanfield.io import open_run
    from meanfield.runner import RunError, RunInterrupted, simulate
    from meanfield.store import StoreError

    try:
        config = build_config(args.preset, width=args.width, seed=args.seed, t_max=args.t_max,
                              sets=args.set or ())
    except (ValueError, TypeError) as exc:
        print(f"meanfield: invalid configuration: {exc}", file=sys.stderr)
        return 2
    out = args.out or _default_out(config)
    if os.path.exists(out) and not (args.resume or args.overwrite):
        kind = _existing_store(out, config)
        if kind == "finished":
            print(_summary(open_run(out), out) + "\n(already complete; --overwrite recomputes it)")
            return 0
        hint = ("holds an unfinished run of this config: pass --resume to continue it"
                if kind == "unfinished" else "holds a run of another config")
        print(f"meanfield: {out} {hint}, or choose another --out, or pass --overwrite",
              file=sys.stderr)
        return 2
    progress = False if args.no_progress else None
    if args.devices is not None:
        from meanfield.sharding import resolve_mesh

        try:
            resolve_mesh(args.devices)
        except ValueError as exc:
            print(f"meanfield: --devices: {exc}", file=sys.stderr)
            return 2
    try:
        ds = simulate(config, progress=progress, out=out, resume=args.resume,
                      overwrite=args.overwrite, devices=args.devices)
    except StoreError as exc:
        print(f"meanfield: {exc}", file=sys.stderr)
        return 2
    except (RunError, RunInterrupted) as exc:
        if os.path.exists(out):
            print(f"meanfield: everything recorded so far is in {out}"
                  + (" (continue with --resume)" if isinstance(exc, RunInterrupted) else ""),
                  file=sys.stderr)
        else:
            print("meanfield: stopped before the first chunk finished; nothing was written",
                  file=sys.stderr)
        if isinstance(exc, RunInterrupted):
            return 130
        print(f"meanfield: {exc}", file=sys.stderr)
        return 1
    print(_summary(ds, out))
    if not args.no_plots:
        from meanfield.plot import save_all

        plots = save_all(ds.load(), _default_plot_dir(out))
        print(f"plots      {os.path.dirname(plots[0]) if plots else '-'}  "
              f"({', '.join(os.path.basename(p) for p in plots)})")
    return 0


def cmd_presets(args) -> int:
    from meanfield import presets

    for name, fn in presets.PRESETS.items():
        doc = (fn.__doc__ or "").strip().splitlines()[0]
        print(f"{name:10s} {doc}\n{'':10s} arguments: {', '.join(presets.arguments(name))}")
    return 0


def _default_plot_dir(run: str) -> str:
    run = run.rstrip("/\\") or run
    return (run[:-len(".zarr")] if run.endswith(".zarr") else run) + "_plots"


def cmd_plot(args) -> int:
    from meanfield.io import open_run
    from meanfield.plot import save_all

    try:
        ds = open_run(args.run)
    except FileNotFoundError as exc:
        print(f"meanfield: {exc}", file=sys.stderr)
        return 1
    for path in save_all(ds.load(), args.out or _default_plot_dir(args.run)):
        print(path)
    return 0


def cmd_limit(args) -> int:
    from meanfield.io import save_run
    from meanfield.limits.api import infinite_width

    try:
        config = build_config(args.preset, width=args.width, seed=args.seed, t_max=args.t_max,
                              sets=args.set or ())
        limit = infinite_width(config, kind=args.kind)
    except (ValueError, TypeError) as exc:
        print(f"meanfield: {exc}", file=sys.stderr)
        return 2
    out = args.out or _default_out(config).replace(".zarr", f"-limit-{limit.attrs['limit']}.zarr")
    save_run(limit, out, overwrite=args.overwrite)
    print(f"limit      {limit.attrs['limit']}  ({len(limit.t)} times, final loss "
          f"{float(limit.loss[-1]):.6g})\nsaved      {out}")
    return 0


def cmd_compare(args) -> int:
    from meanfield.io import open_run
    from meanfield.limits.compare import compare

    try:
        result = compare(open_run(args.run).load(), open_run(args.limit).load())
    except (FileNotFoundError, ValueError) as exc:
        print(f"meanfield: {exc}", file=sys.stderr)
        return 2
    for name in result.data_vars:
        value = result[name].isel(t=-1)
        shown = value.sel(sign="all") if "sign" in value.dims else value
        print(f"{name:16s} at t={float(result.t[-1]):.4g}: {float(shown):.6g}")
    if args.out:
        result.to_netcdf(args.out)
        print(f"saved      {args.out}")
    return 0


def cmd_export(args) -> int:
    from meanfield.io import export_netcdf

    try:
        print(export_netcdf(args.run, args.out))
    except FileNotFoundError as exc:
        print(f"meanfield: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_validate(args) -> int:
    import meanfield.validation as validation  # lazy: validation depends on meanfield, never the reverse

    if args.list or not args.study:
        pad = max(map(len, validation.STUDIES))
        for name, (_, description) in validation.STUDIES.items():
            print(f"{name:{pad}s}  {description}")
        return 0 if args.list else 2
    try:
        report, path = validation.run_study(args.study, args.out, quick=args.quick)
    except ValueError as exc:
        print(f"meanfield: {exc}", file=sys.stderr)
        return 2
    failed = [c for c in report.checks if c.required and not c.passed]
    print(f"report     {path}  ({'PASS' if report.passed else 'FAIL'}: "
          f"{len(failed)} failing checks)")
    return 0 if report.passed else 1


def _add_config_arguments(parser) -> None:
    """PRESET and the overrides that ``build_config`` understands."""
    parser.add_argument("preset", help="preset name (see `meanfield presets`)")
    parser.add_argument("--width", type=int, help="number of neurons m")
    parser.add_argument("--seed", type=int, help="PRNG seed of the initial particles")
    parser.add_argument("--t-max", type=float, dest="t_max", help="final gradient-flow time")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="preset argument (e.g. gamma=1.75) or dotted config field "
                             "(e.g. solver.rtol=1e-4); repeatable")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meanfield", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a preset and write its dataset (zarr)",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_arguments(run)
    run.add_argument("--out", help="zarr directory (default runs/PRESET-mM-sS.zarr)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing store")
    run.add_argument("--no-plots", action="store_true", help="do not write the PNG figures")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run in --out from its last checkpoint")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("--devices", type=int, metavar="N",
                     help="split the particles over the first N devices (default: one; on "
                          "CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N)")
    run.set_defaults(func=cmd_run)
    presets = sub.add_parser("presets", help="list the presets and their arguments")
    presets.set_defaults(func=cmd_presets)
    plot = sub.add_parser("plot", help="write the figures (PNG) of a run store")
    plot.add_argument("run", help="run store (zarr directory)")
    plot.add_argument("--out", help="output directory (default: RUN with .zarr replaced by _plots)")
    plot.set_defaults(func=cmd_plot)
    limit = sub.add_parser("limit", help="compute the infinite-width limit of a preset config")
    _add_config_arguments(limit)
    limit.add_argument("--kind", default="auto", help="auto, wang_ma, mean_field or kernel")
    limit.add_argument("--out", help="zarr directory (default runs/PRESET-mM-sS-limit-KIND.zarr)")
    limit.add_argument("--overwrite", action="store_true")
    limit.set_defaults(func=cmd_limit)
    comp = sub.add_parser("compare", help="distances between a run and a limit over t")
    comp.add_argument("run", help="run store")
    comp.add_argument("limit", help="limit store")
    comp.add_argument("--out", help="netCDF file for the distances")
    comp.set_defaults(func=cmd_compare)
    export = sub.add_parser("export", help="write a run store to a netCDF file")
    export.add_argument("run", help="run store (zarr directory)")
    export.add_argument("out", help="netCDF file to write, e.g. run.nc")
    export.set_defaults(func=cmd_export)
    val = sub.add_parser("validate", help="run a validation study and write its report.md")
    val.add_argument("study", nargs="?", help="study name (see --list)")
    val.add_argument("--list", action="store_true", help="list the studies")
    val.add_argument("--quick", action="store_true", help="small, fast version (smoke test)")
    val.add_argument("--out", help="report directory (default validation/reports/STUDY)")
    val.set_defaults(func=cmd_validate)
    return parser


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
