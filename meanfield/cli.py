"""Command line: ``meanfield run PRESET ...``, ``meanfield presets``, ``meanfield plot RUN``,
``meanfield verify RUN`` and ``meanfield validate STUDY``; ``--debug`` (any command) shows the
traceback of an error instead of its one-line message.

Commands from other packages (``validate``, from ``meanfield.validation``) are plugins: each
entry point of the group ``meanfield.commands`` is a ``register(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import errno
import gc
import os
import re
import signal
import sys
import warnings
from importlib import metadata

COMMANDS_GROUP = "meanfield.commands"  # entry points: name = "module:register"

DESCRIPTION = """Two-layer ReLU networks as interacting particles: run a preset, inspect and plot
its store, compute its infinite-width limit and compare the two, run the validation studies.
Every command has --help with examples; --debug shows the traceback of an error."""

EPILOG = """examples:
  meanfield run wang_ma                       # Wang & Ma four phases, m = 100
  meanfield run luo_1d --set gamma=1.75 --width 4000
  meanfield run wang_ma --set solver.rtol=1e-4 --out runs/tight.zarr
"""

# the examples each command's --help ends with (run's are the top level's)
EXAMPLES = {
    "run": EPILOG,
    "verify": """examples:
  meanfield verify runs/wang_ma-m100-s0.zarr               # sizes and checksums
  meanfield verify runs/wang_ma-m100-s0.zarr --sizes-only  # sizes only (fast)
""",
    "presets": """examples:
  meanfield presets                           # names, arguments and their defaults
""",
    "plot": """examples:
  meanfield plot runs/wang_ma-m100-s0.zarr    # into runs/wang_ma-m100-s0_plots/
  meanfield plot runs/wang_ma-m100-s0.zarr --out figures/
""",
    "limit": """examples:
  meanfield limit wang_ma                     # Wang & Ma's reduced model
  meanfield limit luo_1d --set gamma=0.5 --width 256 --kind kernel
  meanfield limit luo_1d --kind mean_field_reference --option 'levels=(256, 1024)'
""",
    "compare": """examples:
  meanfield compare runs/wang_ma-m100-s0.zarr runs/wang_ma-limit-wang_ma.zarr
  meanfield compare runs/wang_ma-m100-s0.zarr runs/wang_ma-limit-wang_ma.zarr --out gap.nc
""",
    "export": """examples:
  meanfield export runs/wang_ma-m100-s0.zarr wang_ma.nc
""",
}


class UsageError(ValueError):
    """A command line that cannot be run as typed (exit status 2)."""


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set takes KEY=VALUE, got {item!r}")
        out[key.strip()] = _parse_value(value.strip())
    return out


SIMULATE_ARGUMENTS = ("checkpoint_seconds",)  # --set keys passed to simulate(), not the config


# config fields a preset argument (or the flag of that name) also sets
ARGUMENT_FIELDS = {"width": ("model.width",), "rtol": ("solver.rtol",), "n_saves": ("save.n",)}


def build_config(preset: str, *, width=None, seed=None, t_max=None, sets=()):
    """Preset config with CLI overrides: preset arguments first, then dotted config fields."""
    from meanfield import presets
    from meanfield.config import SimulationConfig, changed_fields
    from meanfield.particles._validate import closest

    overrides = _parse_sets(list(sets))
    allowed = presets.arguments(preset)
    kwargs = {k: v for k, v in (("width", width), ("seed", seed), ("t_max", t_max)) if v is not None}
    typed = {item.partition("=")[0].strip(): f"--set {item.strip()}" for item in sets}
    given = {name: f"--{name.replace('_', '-')} {value:g}" for name, value in kwargs.items()}
    given.update({name: typed[name] for name in overrides if name in allowed and name not in given})
    for name, spelled in given.items():  # one value per setting: two spellings never race
        for key in (name, *ARGUMENT_FIELDS.get(name, ())):
            if key in overrides and typed[key] != spelled:
                raise UsageError(f"{spelled} and {typed[key]} both set {name}: give one of them")
    kwargs.update({k: v for k, v in overrides.items() if k in allowed})
    fields = {k: v for k, v in overrides.items() if k not in allowed}
    checked = [name for name in given if name in allowed and name not in ARGUMENT_FIELDS]
    try:  # the build below reports what is wrong with the arguments as given
        as_given = presets.get(preset, **kwargs).to_dict() if checked and fields else None
    except ValueError:
        as_given = None
    for name in checked if as_given is not None else ():  # kappa sets model.init.scale too
        spelled = given[name]
        # the fields that move with the argument: against the preset without it, and
        # against other values of it (it may be given at its default)
        others = [{k: v for k, v in kwargs.items() if k != name}]
        others += [dict(kwargs, **{name: probe}) for probe in _other_values(kwargs[name])]
        set_by = set()
        for other in others:
            try:  # another value may not validate (kappa with t_max)
                set_by.update(changed_fields(as_given, presets.get(preset, **other).to_dict()))
            except ValueError:
                pass
        for key in sorted(set_by):
            clash = [f for f in fields if f == key or f.startswith(key + ".")]
            if clash:
                raise UsageError(f"{spelled} and {typed[clash[0]]} both set {key}: give one of "
                                 "them")
    known = set(allowed) | {f.name for f in dataclasses.fields(SimulationConfig)}
    for key in fields:
        if key.partition(".")[0] not in known:
            raise UsageError(f"--set {key}: unknown preset argument or config field"
                             f"{closest(key, sorted(known))}; preset arguments: "
                             f"{', '.join(allowed)}; config fields: "
                             f"{', '.join(sorted(known - set(allowed)))}; run options: "
                             f"{', '.join(SIMULATE_ARGUMENTS)}")
    config = presets.get(preset, **kwargs)
    for key in fields:
        group = getattr(config, key, None)
        if dataclasses.is_dataclass(group):  # e.g. --set solver=euler
            names = [f.name for f in dataclasses.fields(group)]
            raise UsageError(f"--set {key}: {key} is a group of config fields; set one of them "
                             f"(--set {key}.{names[0]}=...): {', '.join(names)}")
    return config.replace(**fields) if fields else config


def _other_values(value) -> list:
    """Values of a preset argument other than ``value``, to find the fields it sets."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1]
    if isinstance(value, float):
        return [2.0 * value, 0.5 * value] if value else [1.0, -1.0]
    if value is None or isinstance(value, str):  # precision
        from meanfield.config import PRECISIONS

        return [p for p in PRECISIONS if p != value]
    return []


def _argument_label(preset: str, *, t_max=None, sets=()) -> str:
    """``-NAMEVALUE`` for each preset argument given (``--t-max``, ``--set NAME=VALUE``) with
    a value other than the preset's default, in the preset's order (width and seed are in the
    default store names already): runs of other preset arguments get other default stores,
    runs of the same config the same one. Characters other than letters, digits and ``.+-``
    become ``_``."""
    from meanfield import presets

    defaults = presets.defaults(preset)
    given = {key: value for key, value in _parse_sets(list(sets)).items() if key in defaults}
    if t_max is not None:
        given["t_max"] = t_max
    return "".join(_label_part(name, given[name]) for name, default in defaults.items()
                   if name in given and name not in ("width", "seed") and given[name] != default)


def _option_label(kind: str, options: dict) -> str:
    """``-NAMEVALUE`` for each limit solver option given a value other than its default, in
    the solver's order: limits of other options get other default stores."""
    from meanfield.limits.api import option_defaults, options_set

    given = options_set(kind, options)
    return "".join(_label_part(name, given[name]) for name in option_defaults(kind)
                   if name in given)


LABEL_VALUE_CHARS = 24  # a longer value (a list of save times) is named by a hash of it


def _label_part(name: str, value) -> str:
    """``-NAMEVALUE`` of a store name; characters other than letters, digits and ``.+-``
    become ``_``; a value longer than ``LABEL_VALUE_CHARS`` becomes the first 8 hex digits of
    its SHA-256 (file names have at most 255 bytes)."""
    import hashlib

    def text(v):
        if isinstance(v, (tuple, list)):
            return "_".join(text(item) for item in v)
        return format(v, "g") if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)

    shown = text(value)
    if len(shown) > LABEL_VALUE_CHARS:
        shown = hashlib.sha256(shown.encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9.+-]", "_", f"-{name}{shown}")


def _default_out(config, label: str = "") -> str:
    """``runs/NAME[LABEL]-mWIDTH-sSEED[-SOLVER].zarr`` (``_argument_label``)."""
    from meanfield.store import check_store_label

    check_store_label(config.name)
    solver = "" if config.solver.kind == "adaptive" else f"-{config.solver.kind}"
    return os.path.join("runs", f"{config.name}{label}-m{config.model.width}-s{config.seed}"
                                f"{solver}.zarr")


def _check_out(out: str) -> None:
    """Refuse, before any compute, an output path that cannot be written."""
    from meanfield.store import check_store_path

    check_store_path(out)
    name = os.path.basename(os.path.normpath(out))
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.isdir(parent):  # missing folders are created: the first existing one
        parent = os.path.dirname(parent)
    limit = os.pathconf(parent, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    if len(os.fsencode(name)) + 32 > limit:  # + room for the overwrite sibling's suffix
        raise ValueError(f"--out name is {len(name)} characters long; the file system allows "
                         f"{limit - 32} here")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "the folder is not writable", parent)


def _existing_store(path: str, config) -> str:
    """What an existing ``--out`` holds (see ``meanfield.store.store_status``), with
    ``other`` for a run of another config."""
    from meanfield.store import store_status, stored_attrs

    status = store_status(path)
    attrs = stored_attrs(path)
    stored = attrs.get("config")
    if status in ("finished", "unfinished", "first_save") and stored not in (None,
                                                                            config.to_json()):
        return "other"
    if status == "finished" and str(attrs.get("kind", "")).startswith("limit:"):
        return "limit"  # the limit of this config (``meanfield limit``), not a run of it
    return status


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


# set by ``console_main``: this process is the ``meanfield`` command and ends with it
_OWN_PROCESS = False


@contextlib.contextmanager
def frozen_imports():
    """Import with the garbage collector paused, then freeze what exists (``gc.freeze``): in
    the ``meanfield`` command's own process only.

    The imports of jax, xarray, zarr and matplotlib leave some 300 000 objects that live as long
    as the process; frozen, the collector's full passes (during the run and at exit) no longer
    walk them, and objects made later are collected as before. ``main`` called from a program (a
    notebook, the tests) leaves that program's collector alone: there a frozen object would
    never be collected.
    """
    if not _OWN_PROCESS:
        yield
        return
    enabled = gc.isenabled()
    try:
        gc.disable()
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def cmd_run(args) -> int:
    with frozen_imports():
        from meanfield.io import open_run
        from meanfield.errors import RunError, RunInterrupted, raise_if_interrupted
        from meanfield.runner import simulate
        from meanfield.store import store_status

    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other: --resume continues the "
                         "run in --out, --overwrite replaces it")
    sets = list(args.set or ())
    run_kwargs = {}
    for key, value in _parse_sets(sets).items():
        if key in SIMULATE_ARGUMENTS:
            run_kwargs[key] = value
            sets = [item for item in sets if item.partition("=")[0].strip() != key]
    if args.checkpoint_seconds is not None:
        if "checkpoint_seconds" in run_kwargs:
            raise UsageError(f"--checkpoint-seconds {args.checkpoint_seconds:g} and --set "
                             f"checkpoint_seconds={run_kwargs['checkpoint_seconds']!r} both set "
                             "checkpoint_seconds: give one of them")
        run_kwargs["checkpoint_seconds"] = args.checkpoint_seconds
    try:
        config = build_config(args.preset, width=args.width, seed=args.seed, t_max=args.t_max,
                              sets=sets)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"invalid configuration: {exc}") from None
    out = args.out or _default_out(config, _argument_label(args.preset, t_max=args.t_max,
                                                          sets=sets))
    kind = _existing_store(out, config)
    if not (kind == "finished" and not (args.resume or args.overwrite)):  # else nothing to write
        _check_out(out)
    # a store created but never written is continued, unless replaced
    resume = args.resume or (kind == "empty" and not args.overwrite)
    replacing = args.overwrite and kind not in ("absent", "empty")
    if replacing:
        from meanfield.store import check_replaceable

        check_replaceable(out)
    if kind == "limit" and not args.overwrite:  # --resume included: there is no run to resume
        raise UsageError(f"{out} holds the infinite-width limit of this config, not a run: "
                         "choose another --out, or pass --overwrite to replace it")
    if kind in ("empty", "first_save", "unfinished"):
        from meanfield.store import StoreLocked, check_no_live_writer

        try:
            check_no_live_writer(out)
        except StoreLocked as exc:  # a command line that cannot run as typed: status 2
            raise UsageError(str(exc)) from None
    if kind not in ("absent", "empty") and not (args.resume or args.overwrite):
        if kind == "finished":
            return _report_finished(open_run(out, dask=False), out, plots=not args.no_plots)
        hint = {"unfinished": "holds an unfinished run of this config: pass --resume to "
                              "continue it (or --overwrite to start again)",
                "first_save": "holds a run of this config stopped during its first save: pass "
                              "--resume to continue it",
                "other": "holds a run of another config ({changes}): choose another "
                         "--out, or pass --overwrite to replace it",
                "foreign": "is not a meanfield run store (or holds files a store never "
                           "writes): choose another --out"}[kind]
        if kind == "other":
            from meanfield.store import config_changes, stored_attrs

            hint = hint.format(changes=config_changes(stored_attrs(out).get("config"),
                                                      config.to_json()))
            if not args.out:  # replacing would lose a run the user may want
                hint += (" (the default name tells runs apart by preset, its arguments, width, "
                         "seed and solver only: --out keeps both)")
        raise UsageError(f"{out} {hint}")
    if args.resume and kind == "absent":
        print(f"meanfield: nothing to resume at {out}; starting a new run", file=sys.stderr)
    progress = False if args.no_progress else None
    if args.devices is not None:
        from meanfield.sharding import resolve_mesh

        try:
            resolve_mesh(args.devices)
        except ValueError as exc:
            print(f"meanfield: --devices: {exc}", file=sys.stderr)
            return 2
    figure_imports = None
    if not args.no_plots:
        from meanfield.plot import import_figure_modules_in_background

        figure_imports = import_figure_modules_in_background()
    try:
        with warnings.catch_warnings():  # said below, with the run's summary
            warnings.filterwarnings("ignore", message="run stopped at", category=RuntimeWarning)
            ds = simulate(config, progress=progress, out=out, resume=resume,
                          overwrite=args.overwrite, devices=args.devices, **run_kwargs)
    except OSError as exc:  # a full disk, an unwritable folder: the old store of an overwrite
        if not replacing:   # stays, the new run is gone (not resumable)
            raise
        print(f"meanfield: {_os_message(exc).partition(':')[0]}; {out} is unchanged: the "
              "--overwrite run was discarded", file=sys.stderr)
        return 1
    except (RunError, RunInterrupted) as exc:
        if isinstance(exc, RunInterrupted) and replacing:
            print(f"meanfield: {out} is unchanged: the interrupted --overwrite run was "
                  "discarded", file=sys.stderr)
        elif store_status(out) not in ("absent", "empty"):
            print(f"meanfield: everything recorded so far is in {out}"
                  + (" (continue with --resume)" if isinstance(exc, RunInterrupted) else ""),
                  file=sys.stderr)
        else:
            print("meanfield: stopped before the first chunk finished; nothing was written",
                  file=sys.stderr)
        if isinstance(exc, RunInterrupted):
            print("meanfield: interrupted", file=sys.stderr)
            return 130
        print(f"meanfield: {exc}", file=sys.stderr)
        return 1
    ds = open_run(out, dask=False)  # read once per variable used: snapshots only for figures
    if args.overwrite:  # the replaced run's figures do not describe this one
        from meanfield.plot import remove_figures

        remove_figures(_default_plot_dir(out))
    print(_summary(ds, out))
    failed = _said_if_stopped_early(ds)  # a run that could no longer change is no success
    if not args.no_plots:
        with frozen_imports():  # and the run's objects: they live until the process ends
            figure_imports.join()
        raise_if_interrupted()
        _save_figures(ds, out)
    raise_if_interrupted()
    return 1 if failed else 0


def _said_if_stopped_early(ds) -> bool:
    """Whether the run ``ds`` stopped early (``meanfield.stops``), said on stderr if so."""
    from meanfield.stops import STOP_REASONS

    reason = STOP_REASONS.get(ds.attrs.get("stop_reason"))
    if reason:
        print(f"meanfield: the run stopped early: {reason}", file=sys.stderr)
    return bool(reason)


def _report_finished(ds, out: str, *, plots: bool) -> int:
    """``meanfield run`` of a config whose run ``ds`` is stored, finished, at ``out``: its
    summary, and the exit status and figures of the command that made it. A run stopped early
    (``meanfield.stops``) fails again and draws its missing figures; a run that ended in an
    error (divergence, step budget) fails again and draws none, as it did; a figure that
    cannot be written is a note (the run itself is complete)."""
    from meanfield.stops import COMPLETED_REASONS

    print(_summary(ds, out) + "\n(already complete; --overwrite recomputes it)")
    reason = ds.attrs.get("stop_reason")
    failed = _said_if_stopped_early(ds)
    if not failed and reason not in COMPLETED_REASONS:
        print(f"meanfield: the run ended with {reason}", file=sys.stderr)
        return 1
    missing = _missing_figures(ds, out) if plots else []
    if missing:  # e.g. a Ctrl-C while they were drawn, or a first run with --no-plots
        try:
            _save_figures(ds, out, missing)
        except OSError as exc:
            print(f"meanfield: figures not written: {_os_message(exc)}", file=sys.stderr)
    return 1 if failed else 0


def _missing_figures(ds, out: str) -> list[str]:
    """The figures ``meanfield run`` draws for the run ``ds`` stored at ``out`` that are absent."""
    from meanfield.plot import figure_names

    folder = _default_plot_dir(out)
    return [name for name in figure_names(ds) if not os.path.exists(os.path.join(folder, name))]


def _save_figures(ds, out: str, names=None) -> None:
    """Draw the figures of the run ``ds`` stored at ``out`` beside it (``names``: only these)
    and say where."""
    from meanfield.plot import check_figure_folder, save_all

    folder = _default_plot_dir(out)
    try:  # e.g. a run stored inside another store: the run stands, its figures cannot
        check_figure_folder(folder, "the figure folder")
    except ValueError as exc:
        print(f"meanfield: figures not written: {exc}", file=sys.stderr)
        return
    plots = save_all(ds.load(), folder, names=names)
    print(f"plots      {os.path.dirname(plots[0]) if plots else '-'}  "
          f"({', '.join(os.path.basename(p) for p in plots)})")


def cmd_verify(args) -> int:
    from meanfield.store import committed_files, read_progress, store_status, verify_store

    if store_status(args.run) == "absent":
        raise FileNotFoundError(f"no store at {args.run}")
    verify_store(args.run, hashes=not args.sizes_only)
    progress = read_progress(args.run) or {}
    files = len(committed_files(args.run, progress))
    state = "finished" if progress.get("finished", True) else "unfinished (resumable)"
    records = (f", {progress['records']} records" if "records" in progress
               else f", {len(progress['done'])} finished points" if "done" in progress else "")
    print(f"ok         {args.run}: {files} chunk files match their "
          f"{'sizes' if args.sizes_only else 'sizes and checksums'}{records}, {state}")
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
    with frozen_imports():
        import meanfield.store  # noqa: F401 (zarr, for load_run)
        from meanfield.io import load_run
        from meanfield.plot import check_figure_folder, import_figure_modules, save_all

        import_figure_modules()

    if args.out and os.path.lexists(args.out) and not os.path.isdir(args.out):
        print(f"meanfield: --out {args.out} is a file; give a folder for the figures",
              file=sys.stderr)
        return 2
    try:
        if args.out:
            check_figure_folder(args.out, "--out")
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always")
            paths = save_all(load_run(args.run), args.out or _default_plot_dir(args.run))
    except (FileNotFoundError, ValueError) as exc:
        print(f"meanfield: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    for note in notes:
        print(f"meanfield: {note.message}", file=sys.stderr)
    return 0


def cmd_limit(args) -> int:
    from meanfield.io import open_run, save_run
    from meanfield.limits.api import (check_options, infinite_width, is_limit_of,
                                      limit_differences, resolve_kind, store_name)
    from meanfield.errors import RunError

    try:
        config = build_config(args.preset, width=args.width, seed=args.seed, t_max=args.t_max,
                              sets=args.set or ())
        kind = resolve_kind(config, args.kind)
        options = _parse_sets(list(args.option or ()))
        check_options(kind, options)  # a mistyped option is no store clash
    except (ValueError, TypeError) as exc:
        print(f"meanfield: {exc}", file=sys.stderr)
        return 2
    out = args.out or os.path.join("runs", store_name(
        config, kind, _argument_label(args.preset, t_max=args.t_max, sets=args.set or ())
        + _option_label(kind, options)))
    if os.path.exists(out) and not args.overwrite:
        try:
            stored = open_run(out)
            same = is_limit_of(stored, config, kind, options)
            differs = "" if same else f" ({limit_differences(stored, config, kind, options)})"
        except Exception:  # unreadable store: never overwrite silently
            same, differs = False, ""
        if not same:
            print(f"meanfield: {out} exists and holds something else (not the {kind} limit of "
                  f"this config and --option's{differs}); choose another --out or pass "
                  "--overwrite", file=sys.stderr)
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
    from meanfield.io import check_new_file, export_netcdf, load_run
    from meanfield.limits.compare import compare

    try:
        if args.out:
            check_new_file(args.out, args.overwrite)
        result = compare(load_run(args.run), load_run(args.limit))
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"meanfield: {exc}", file=sys.stderr)
        return 2
    for name in result.data_vars:
        value = result[name].isel(t=-1)
        shown = value.sel(sign="all") if "sign" in value.dims else value
        print(f"{name:18s} at t={float(result.t[-1]):.4g}: {float(shown):.6g}")
    for item in filter(None, result.attrs["not_computed"].split("; ")):
        print(f"not computed  {item}")
    if args.out:
        try:
            export_netcdf(result, args.out, overwrite=args.overwrite)
        except FileExistsError as exc:
            print(f"meanfield: {exc}", file=sys.stderr)
            return 2
        print(f"saved      {args.out}")
    return 0


def cmd_export(args) -> int:
    from meanfield.io import export_netcdf

    try:
        print(export_netcdf(args.run, args.out, overwrite=args.overwrite))
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"meanfield: {exc}", file=sys.stderr)
        return 2
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


def _command_of(argv: list[str]) -> str | None:
    """The subcommand a command line names (its first positional argument), or None."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``meanfield`` parser; the plugin commands (entry points of ``COMMANDS_GROUP``) are
    loaded unless ``command`` is one of the built-in commands, which never need them."""
    parser = argparse.ArgumentParser(prog="meanfield", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    def add_command(name: str, help: str):
        return sub.add_parser(name, help=help, epilog=EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    run = add_command("run", "run a preset and write its dataset (zarr)")
    _add_config_arguments(run)
    run.add_argument("--out", help="zarr directory (default runs/PRESET-mM-sS.zarr, with each "
                     "preset argument given a non-default value after PRESET, e.g. "
                     "runs/luo_1d-gamma1.75-m1000-s0.zarr)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing store")
    run.add_argument("--no-plots", action="store_true", help="do not write the PNG figures")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run in --out from its last checkpoint")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("--checkpoint-seconds", type=float, dest="checkpoint_seconds",
                     help="commit records and a resumable checkpoint at least this often "
                          "(default 5; also --set checkpoint_seconds=...)")
    run.add_argument("--devices", type=int, metavar="N",
                     help="split the particles over the first N devices (default: one; on "
                          "CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N)")
    run.set_defaults(func=cmd_run)
    verify = add_command("verify", "check a run or sweep store against its checksums")
    verify.add_argument("run", help="run or sweep store (zarr directory)")
    verify.add_argument("--sizes-only", action="store_true",
                        help="check the chunk files' sizes only (fast; opening a run does this)")
    verify.set_defaults(func=cmd_verify)
    presets = add_command("presets", "list the presets and their arguments")
    presets.set_defaults(func=cmd_presets)
    plot = add_command("plot", "write the figures (PNG) of a run store")
    plot.add_argument("run", help="run store (zarr directory)")
    plot.add_argument("--out", help="output directory (default: RUN with .zarr replaced by _plots)")
    plot.set_defaults(func=cmd_plot)
    from meanfield.schema import LIMIT_KINDS

    limit = add_command("limit", "compute the infinite-width limit of a preset config")
    _add_config_arguments(limit)
    limit.add_argument("--kind", default="auto",
                       help=f"auto (the first that applies) or one of {', '.join(LIMIT_KINDS)}")
    limit.add_argument("--out", help="zarr directory (default runs/PRESET-limit-KIND.zarr; "
                                     "runs/PRESET-mM-sS-limit-KIND.zarr for the kinds that "
                                     "depend on width and seed: mean_field, kernel; each "
                                     "preset argument, then each --option, given a "
                                     "non-default value follows PRESET, as for run)")
    limit.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="option of the limit solver, e.g. n_cells=512 (mean_field), "
                            "samples=64 (kernel), 'levels=(256, 1024)' (mean_field_reference); "
                            "repeatable")
    limit.add_argument("--overwrite", action="store_true", help="replace an existing store")
    limit.set_defaults(func=cmd_limit)
    comp = add_command("compare", "distances between a run and a limit over t")
    comp.add_argument("run", help="run store")
    comp.add_argument("limit", help="limit store")
    comp.add_argument("--out", help="netCDF file for the distances")
    comp.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    comp.set_defaults(func=cmd_compare)
    export = add_command("export", "write a run store to a netCDF file")
    export.add_argument("run", help="run store (zarr directory)")
    export.add_argument("out", help="netCDF file to write, e.g. run.nc")
    export.add_argument("--overwrite", action="store_true", help="replace an existing file")
    export.set_defaults(func=cmd_export)
    if command not in sub.choices:
        for plugin in metadata.entry_points(group=COMMANDS_GROUP):
            plugin.load()(sub)  # plugin commands, e.g. `validate` from meanfield.validation
    return parser


def _os_message(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return (f"no space left on the device{where}: everything committed before is kept; "
                "free some space and continue with --resume")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write{where}: {exc.strerror}; choose a writable output path"
    if exc.errno == errno.ENAMETOOLONG:
        return f"file name too long{where}: choose a shorter --out"
    return f"{exc.strerror or exc}{where}"


def _error_message(exc: Exception) -> tuple[str, int]:
    """The message and exit status of an error that ends a command."""
    from meanfield.store import StoreCorrupt, StoreError, StoreLocked

    if isinstance(exc, (StoreLocked, StoreCorrupt)):
        return str(exc), 1
    if isinstance(exc, (UsageError, StoreError, FileExistsError, ValueError, TypeError)):
        return str(exc), 2
    if isinstance(exc, FileNotFoundError) and not exc.filename:  # an input path as typed
        return str(exc), 2
    if isinstance(exc, OSError):
        return _os_message(exc), 1
    return (f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
            "traceback)"), 1


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one ``meanfield: ...`` line (the source line is for --debug)."""
    text = str(message)
    print(text if text.startswith("meanfield: ") else f"meanfield: {text}",
          file=sys.stderr if file is None else file)


def main(argv=None) -> int:
    """Run one command; every failure ends in a one-line message (exit status 2 for a command
    line that cannot run as typed, 1 for a failed run, 130 for Ctrl-C), and so does every
    warning; ``--debug`` shows tracebacks and warnings' source lines instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _show_warning
        return _main(argv, debug)


def _main(argv: list[str], debug: bool) -> int:
    try:
        args = make_parser(_command_of(argv)).parse_args(argv)
        return args.func(args)
    except SystemExit as exc:  # argparse: usage printed (status 2) or --help (status 0)
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        if debug:
            raise
        print("meanfield: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        message, status = _error_message(exc)
        print(f"meanfield: {message}", file=sys.stderr)
        return status


def console_main() -> None:
    """Entry point of the ``meanfield`` command: ``main`` with a Ctrl-C that never crashes.

    A second Ctrl-C while the first is being handled (the store committing) is ignored, and
    the process leaves with ``os._exit`` so that no XLA thread still compiling can crash the
    interpreter's shutdown. ``run`` and ``plot`` freeze what they import (``frozen_imports``).
    """
    global _OWN_PROCESS

    def interrupt(signum, frame):
        from meanfield.errors import mark_interrupted

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        mark_interrupted()  # in case Python swallows the exception (errors.raise_if_interrupted)
        raise KeyboardInterrupt

    previous_hook = sys.unraisablehook

    def unraisable(hook_args):  # the Ctrl-C swallowed in a gc callback: raised again later
        if not isinstance(hook_args.exc_value, KeyboardInterrupt):
            previous_hook(hook_args)

    signal.signal(signal.SIGINT, interrupt)
    sys.unraisablehook = unraisable
    _OWN_PROCESS = True
    try:
        status = main()
    except KeyboardInterrupt:  # --debug: the traceback is printed, the exit stays clean
        import traceback

        traceback.print_exc()
        status = 130
    sys.stdout.flush()
    sys.stderr.flush()
    if status == 130:
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    console_main()
