"""Command line: ``meanfield run PRESET ...``, ``meanfield presets``, ``meanfield plot RUN`` and
``meanfield validate STUDY``.

Commands from other packages (``validate``, from ``meanfield.validation``) are plugins: each
entry point of the group ``meanfield.commands`` is a ``register(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import warnings
from importlib import metadata

COMMANDS_GROUP = "meanfield.commands"  # entry points: name = "module:register"

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
    if ds.sizes.get("t", 0):
        from meanfield.condensation import format_table, phase_summary

        lines.append("per phase  (alive fraction, effective directions, peak mass: phase start->end;"
                     " peaks at the phase end: angle, mass share, nearest reference)")
        lines.extend("  " + row for row in format_table(phase_summary(ds)).splitlines())
    lines.append(f"wall time  {ds.attrs['wall_time_s']:.2f} s  (jax {ds.attrs['jax_version']}, "
                 f"{ds.attrs['backend']})")
    if out:
        lines.append(f"saved      {out}")
    return "\n".join(lines)


def cmd_run(args) -> int:
    from meanfield.io import open_run
    from meanfield.errors import RunError, RunInterrupted
    from meanfield.runner import simulate
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
    try:
        ds = simulate(config, progress=progress, out=out, resume=args.resume,
                      overwrite=args.overwrite)
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
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always")
            paths = save_all(open_run(args.run).load(), args.out or _default_plot_dir(args.run))
    except (FileNotFoundError, ValueError) as exc:
        print(f"meanfield: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, FileNotFoundError) else 2
    for path in paths:
        print(path)
    for note in notes:
        print(f"meanfield: {note.message}", file=sys.stderr)
    return 0


def cmd_limit(args) -> int:
    from meanfield.io import open_run, save_run
    from meanfield.limits.api import infinite_width, is_limit_of, resolve_kind, store_name
    from meanfield.errors import RunError

    try:
        config = build_config(args.preset, width=args.width, seed=args.seed, t_max=args.t_max,
                              sets=args.set or ())
        kind = resolve_kind(config, args.kind)
        options = _parse_sets(list(args.option or ()))
    except (ValueError, TypeError) as exc:
        print(f"meanfield: {exc}", file=sys.stderr)
        return 2
    out = args.out or os.path.join("runs", store_name(config, kind))
    if os.path.exists(out) and not args.overwrite:
        try:
            same = is_limit_of(open_run(out), config, kind, options)
        except Exception:  # unreadable store: never overwrite silently
            same = False
        if not same:
            print(f"meanfield: {out} exists and holds something else (not the {kind} limit of "
                  "this config and --option's); choose another --out or pass --overwrite",
                  file=sys.stderr)
            return 2
        print(f"limit      {kind}  already computed\nsaved      {out}  (--overwrite recomputes it)")
        return 0
    try:
        limit = infinite_width(config, kind=kind, **options)
    except (ValueError, TypeError) as exc:
        print(f"meanfield: {exc}", file=sys.stderr)
        return 2
    except RunError as exc:
        print(f"meanfield: {exc}", file=sys.stderr)
        return 1
    save_run(limit, out, overwrite=args.overwrite)
    print(f"limit      {kind}  ({len(limit.t)} times, final loss "
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
        print(f"{name:18s} at t={float(result.t[-1]):.4g}: {float(shown):.6g}")
    for item in filter(None, result.attrs["not_computed"].split("; ")):
        print(f"not computed  {item}")
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
    run.set_defaults(func=cmd_run)
    presets = sub.add_parser("presets", help="list the presets and their arguments")
    presets.set_defaults(func=cmd_presets)
    plot = sub.add_parser("plot", help="write the figures (PNG) of a run store")
    plot.add_argument("run", help="run store (zarr directory)")
    plot.add_argument("--out", help="output directory (default: RUN with .zarr replaced by _plots)")
    plot.set_defaults(func=cmd_plot)
    from meanfield.schema import LIMIT_KINDS

    limit = sub.add_parser("limit", help="compute the infinite-width limit of a preset config")
    _add_config_arguments(limit)
    limit.add_argument("--kind", default="auto",
                       help=f"auto (the first that applies) or one of {', '.join(LIMIT_KINDS)}")
    limit.add_argument("--out", help="zarr directory (default runs/PRESET-limit-KIND.zarr; "
                                     "runs/PRESET-mM-sS-limit-KIND.zarr for the kinds that "
                                     "depend on width and seed: mean_field, kernel)")
    limit.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="option of the limit solver, e.g. n_cells=512 (mean_field), "
                            "samples=64 (kernel), 'levels=(256, 1024)' (mean_field_reference); "
                            "repeatable")
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
    for command in metadata.entry_points(group=COMMANDS_GROUP):
        command.load()(sub)  # plugin commands, e.g. `validate` from meanfield.validation
    return parser


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
